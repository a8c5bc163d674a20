"""simctl validate and run with a task file: standard input, every error (text and --json),
the seed of a file without one, '1 task', and the default file when none is named. No broker
is needed: these stop before (or do not need) one."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from simctl.cli import cli

TWO_ERRORS = "tasks:\n  - kind: warp\n  - kind: sleep\n    params: {seconds: -1}\n"


def simctl(tmp_path: Path, *args: str, code: int, stdin: str | None = None) -> Result:
    env: dict[str, str | None] = {k: None for k in os.environ
                                  if k.startswith(("SIMCTL_", "XDG_"))}
    env.update(SIMCTL_LOCAL_DIR=str(tmp_path / "local"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "ledger.sqlite"), *args],
                                input=stdin, env=env, catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def test_validate_reads_standard_input_and_says_the_seed_is_drawn_per_run(
        tmp_path: Path) -> None:
    out = simctl(tmp_path, "validate", "-", code=0, stdin="tasks:\n  - kind: sleep\n").stdout
    version = metadata.version("particle-sim")
    assert out.splitlines() == [
        f"<stdin>: valid, 1 task (sleep {version}: 1)",
        "name stdin, seed random (the file sets none; each run draws its own and stores it), "
        "max_attempts 3"]
    doc = json.loads(simctl(tmp_path, "validate", "-", "--json", code=0,
                            stdin="tasks:\n  - kind: sleep\n").stdout)
    assert doc["seed"] is None and doc["taskfile"] == "<stdin>"


def test_validate_lists_every_error_in_text_and_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO_ERRORS)
    err = simctl(tmp_path, "validate", str(bad), code=2).stderr
    assert err.splitlines() == [
        f"simctl: error: {bad}: 2 errors:",
        f"{bad}:2: tasks[0].kind: unknown kind 'warp': installed kinds are "
        + err.split("installed kinds are ")[1].splitlines()[0],
        f"{bad}:4: tasks[1].params.seconds: sleep.seconds = -1.0 out of range: must be a "
        "number in [0, 86400]"]
    result = simctl(tmp_path, "validate", str(bad), "--json", code=2)
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and doc["more_errors"] == 0
    assert [(e["line"], e["field"]) for e in doc["errors"]] == [
        (2, "tasks[0].kind"), (4, "tasks[1].params.seconds")]
    assert doc["errors"][1]["message"].startswith("sleep.seconds = -1.0 out of range")
    assert not (tmp_path / "ledger.sqlite").exists()


def test_run_reads_standard_input_and_checks_it_before_the_broker(tmp_path: Path) -> None:
    err = simctl(tmp_path, "--broker", "127.0.0.1:1", "run", "-", code=2,
                 stdin=TWO_ERRORS).stderr
    assert "simctl: error: <stdin>: 2 errors:" in err and "<stdin>:4: tasks[1]" in err
    assert not (tmp_path / "ledger.sqlite").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_without_a_file_the_default_must_exist_here(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    command: str) -> None:
    monkeypatch.chdir(tmp_path)
    err = simctl(tmp_path, command, code=2).stderr
    assert err == ("simctl: error: no task file given and ./configs/tasks.yaml does not exist: "
                   f"simctl {command} TASKFILE\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tasks.yaml").write_text("seed: 4\ntasks:\n  - kind: sleep\n")
    if command == "validate":
        out = simctl(tmp_path, "validate", code=0).stdout
        assert out.startswith("configs/tasks.yaml: valid, 1 task ")
        assert "seed 4," in out
