"""The read-only ledger (never created, migrated or written), the messages naming the analysis
extra when pandas or pyarrow is missing, and the options of ``simctl results`` that do not go
together. No broker: the ledger holds a run whose tasks are pending."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from simctl.cli import cli
from simctl.errors import LedgerError
from simctl.ledger import Ledger
from simctl.taskfile import load

DATA = Path(__file__).resolve().parents[1] / "data/ledgers"
TASKS = "name: t\nseed: 1\ntasks:\n  - kind: sleep\n    sweep: {seconds: [0, 1]}\n    replicas: 2\n"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A ledger with one run of 4 pending tasks."""
    taskfile = tmp_path / "t.yaml"
    taskfile.write_text(TASKS)
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    ledger.create_run(load(taskfile))
    ledger.close()
    return path


def fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_only_ledger_reads_and_never_writes(store: Path) -> None:
    before = fingerprint(store)
    ledger = Ledger(store, read_only=True)
    run_id = ledger.resolve_run("last")
    assert len(ledger.task_rows(run_id)) == 4
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ledger.db.execute("DELETE FROM tasks")
    ledger.close()
    assert fingerprint(store) == before


def test_read_only_ledger_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "ledger.sqlite"
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(missing, read_only=True)
    assert not missing.parent.exists()


def test_read_only_ledger_of_an_older_schema_says_how_to_migrate(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    shutil.copy(DATA / "schema-v2.sqlite", old)
    before = fingerprint(old)
    with pytest.raises(LedgerError, match="run any simctl command on it once to migrate"):
        Ledger(old, read_only=True)
    assert fingerprint(old) == before
    Ledger(old).close()  # what the message says: a read-write open migrates it
    Ledger(old, read_only=True).close()


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60)


def test_parquet_without_pyarrow_names_the_extra(store: Path, tmp_path: Path) -> None:
    done = python("import sys; sys.modules['pyarrow'] = None; from simctl.cli import main; "
                  "sys.exit(main())", "--store", str(store), "results", "last", "--format",
                  "parquet", "-o", str(tmp_path / "r.parquet"))
    assert done.returncode == 2, done.stderr
    assert ("--format parquet needs the analysis extra: pip install 'particle-sim[analysis]'"
            in done.stderr)
    assert not (tmp_path / "r.parquet").exists()


def test_api_without_pandas_names_the_extra(store: Path) -> None:
    done = python("import sys; sys.modules['pandas'] = None; from simctl.api import "
                  "load_results; load_results('last', sys.argv[1])", str(store))
    assert done.returncode == 1
    assert "ImportError: simctl.api needs the analysis extra: " \
           "pip install 'particle-sim[analysis]'" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aggregate", "--observables", "--json"], "not --aggregate"),
        (["--aggregate", "--metadata", "--format", "csv"], "does not go with --aggregate"),
        (["--metadata"], "--metadata goes with --format csv or parquet"),
        (["--format", "parquet"], "give -o FILE"),
    ],
)
def test_options_that_do_not_go_together_exit_2(store: Path, args: list[str],
                                                 message: str) -> None:
    result = CliRunner().invoke(cli, ["--store", str(store), "results", "last", *args],
                                env={"SIMCTL_STORE": None})
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_aggregate_of_an_unfinished_run_has_points_without_values(store: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", str(store), "results", "last", "--aggregate"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["kind", "seconds", "n"]
    assert [line.split()[:3] for line in lines[2:]] == [["sleep", "0", "0/2"],
                                                       ["sleep", "1", "0/2"]]
