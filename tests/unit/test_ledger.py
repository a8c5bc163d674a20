"""The SQLite ledger: runs and tasks stored together, first result wins, attempts recorded."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from simctl.errors import LedgerError, UnknownRun
from simctl.ledger import Ledger
from simctl.taskfile import parse_text
from simproto.protocol import Result

SWEEP = "name: t\nseed: 7\nmax_attempts: 2\ntasks:\n  - kind: sleep\n    replicas: 3\n"


def make(tmp_path: Path) -> tuple[Ledger, str]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = ledger.create_run(parse_text(SWEEP, Path("t.yaml")))
    return ledger, run_id


def result(run_id: str, task_id: str, attempt: int = 1, state: str = "done",
           worker: str = "w1", **extra: object) -> Result:
    now = time.time()
    return Result(worker_id=worker, session="s1", run_id=run_id, task_id=task_id,
                  attempt=attempt, state=state, started_at=now - 1, finished_at=now,
                  summary={"seconds": 0.5}, observables={"t": [0.0, 0.5]}, **extra)  # type: ignore[arg-type]


def test_run_and_tasks_are_stored_with_seeds(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    info = ledger.run(run_id)
    assert (info.name, info.total, info.state, info.pending, info.max_attempts) == (
        "t", 3, "active", 3, 2)
    rows = ledger.task_rows(run_id)
    assert [r["task_id"] for r in rows] == [f"{run_id}.{i}" for i in range(3)]
    assert [r["seed"] for r in rows] == [t.seed for t in parse_text(SWEEP, Path("t")).tasks]
    assert ledger.active_run_ids() == [run_id]
    assert [r.run_id for r in ledger.runs()] == [run_id]


def test_first_result_wins_and_later_ones_are_refused(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    task = f"{run_id}.0"
    with ledger.batch():
        ledger.assign(task, 1, "w1", "s1", time.time())
        assert ledger.store_result(result(run_id, task), "done")
    with ledger.batch():
        assert not ledger.store_result(result(run_id, task, worker="w2"), "done")
    row = ledger.task_rows(run_id)[0]
    assert (row["state"], row["worker_id"], row["summary"]) == ("done", "w1", {"seconds": 0.5})
    assert row["started_at"] is not None and row["assigned_at"] is not None
    assert ledger.observables(run_id) == {task: {"t": [0.0, 0.5]}}
    assert ledger.attempts(task)[0]["outcome"] == "done"


def test_release_refund_and_give_up(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    task = f"{run_id}.1"
    now = time.time()
    with ledger.batch():
        ledger.assign(task, 1, "w1", "s1", now)
        ledger.release(task, 1, "rejected", "no free slot", refund=True, fail=False, now=now)
    row = ledger.task_rows(run_id)[1]
    assert (row["state"], row["attempts"], row["tries"]) == ("pending", 1, 0)
    with ledger.batch():
        ledger.assign(task, 2, "w2", "s2", now)
        ledger.release(task, 2, "lost", "worker w2 went offline", refund=False, fail=True,
                       now=now)
    row = ledger.task_rows(run_id)[1]
    assert (row["state"], row["attempts"], row["error"]) == ("failed", 2, "worker w2 went offline")
    assert [a["outcome"] for a in ledger.attempts(task)] == ["rejected", "lost"]


def test_finish_run_and_duplicates(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    with ledger.batch(), pytest.raises(LedgerError, match="unfinished"):
        ledger.finish_run(run_id)
    with ledger.batch():
        for i in range(3):
            ledger.store_result(result(run_id, f"{run_id}.{i}"), "done")
        ledger.add_duplicates(run_id, 2)
        assert ledger.finish_run(run_id) == "done"
    info = ledger.run(run_id)
    assert (info.state, info.done, info.duplicates) == ("done", 3, 2)
    assert info.finished_at is not None
    assert ledger.active_run_ids() == []


def test_cancel_marks_unfinished_tasks_and_reports_running_ones(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    with ledger.batch():
        ledger.assign(f"{run_id}.0", 1, "w1", "s1", time.time())
        ledger.store_result(result(run_id, f"{run_id}.2"), "done")
    assert ledger.cancel_run(run_id) == [(f"{run_id}.0", "w1")]
    states = [r["state"] for r in ledger.task_rows(run_id)]
    assert states == ["cancelled", "cancelled", "done"]
    assert ledger.run(run_id).state == "cancelled"


def test_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    with pytest.raises(RuntimeError), ledger.batch():
        ledger.assign(f"{run_id}.0", 1, "w1", "s1", time.time())
        raise RuntimeError("crash between write and commit")
    assert ledger.task_rows(run_id)[0]["state"] == "pending"


def test_unknown_run_and_foreign_file(tmp_path: Path) -> None:
    ledger, _ = make(tmp_path)
    with pytest.raises(UnknownRun) as info:
        ledger.run("nope")
    assert info.value.exit_code == 2
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(LedgerError, match="schema 99"):
        Ledger(other)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(garbage)


def test_wal_mode_and_second_reader(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader = Ledger(ledger.path)
    with ledger.batch():
        ledger.assign(f"{run_id}.0", 1, "w1", "s1", time.time())
        # Uncommitted: the other connection still sees the task pending.
        assert reader.run(run_id).pending == 3
    assert reader.run(run_id).running == 1
    spec = json.loads(ledger.db.execute("SELECT spec FROM runs").fetchone()[0])
    assert spec["text"] == SWEEP
