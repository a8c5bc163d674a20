"""The SQLite ledger: runs and tasks stored together, first result wins, attempts recorded."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from simctl.errors import InputError, LedgerError, UnknownRun
from simctl.ledger import SCHEMA_VERSION, Ledger, RunInfo, complete_run_ids
from simctl.taskfile import parse_text, reuse_key
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
    with pytest.raises(LedgerError,
                       match=f"schema 99, newer than this simctl.s {SCHEMA_VERSION}: upgrade"):
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


LEDGER_V1 = Path(__file__).resolve().parents[1] / "data/ledgers/schema-v1.sqlite"
"""A ledger written by simctl before schema 2 (one task done, one assigned, two pending)."""


def test_a_schema_1_ledger_migrates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    path.write_bytes(LEDGER_V1.read_bytes())
    ledger = Ledger(path)
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [info] = ledger.runs()
    assert (info.name, info.state, info.done, info.running, info.pending) == (
        "before-upgrade", "active", 1, 1, 2)
    assert (info.max_lost, info.broker_id) == (5, None)  # the broker is adopted on resume
    rows = ledger.task_rows(info.run_id)
    assert rows[0]["summary"] == {"seconds": 0.01}
    assert ledger.observables(info.run_id)[rows[0]["task_id"]] == {"t": [0.0, 0.01]}
    assert [r["lost"] for r in rows] == [0, 0, 0, 0]
    assert ledger.assigned_attempt(rows[1]["task_id"], 1) == (
        info.run_id, "assigned", "worker1", "sess-a")
    ledger_id = ledger.ledger_id
    assert len(ledger_id) == 32
    ledger.close()
    again = Ledger(path)
    assert again.ledger_id == ledger_id  # made once, kept with the file
    again.close()
    moved = tmp_path / "elsewhere.sqlite"
    path.rename(moved)
    assert Ledger(moved).ledger_id == ledger_id


LEDGER_V2 = Path(__file__).resolve().parents[1] / "data/ledgers/schema-v2.sqlite"
"""A ledger written by simctl at schema 2, before kinds were versioned (one task done, one
assigned, two pending)."""


def test_a_schema_2_ledger_migrates_in_place_and_its_tasks_run_on_any_version(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    path.write_bytes(LEDGER_V2.read_bytes())
    ledger = Ledger(path)
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [info] = ledger.runs()
    assert (info.name, info.done, info.running, info.pending) == ("before-kinds", 1, 1, 2)
    rows = ledger.task_rows(info.run_id)
    assert [(r["kind_version"], r["reused_from"]) for r in rows] == [(None, None)] * 4
    assert ledger.pending_needs(info.run_id) == {("sleep", None): 2}  # not recorded: any
    # An old done task has no reuse key: the same task submitted now is run, not reused.
    again = ledger.create_run(parse_text(
        "name: now\nseed: 11\ntasks:\n  - kind: sleep\n    params: {seconds: 0.01}\n",
        Path("now.yaml")))
    assert ledger.run(again).pending == 1


def test_a_task_done_before_is_reused_unless_told_not_to(tmp_path: Path) -> None:
    ledger, first = make(tmp_path)
    tasks = ledger.task_rows(first)
    with ledger.batch():
        ledger.assign(tasks[0]["task_id"], 1, "w1", "s1", time.time())
        assert ledger.store_result(result(first, tasks[0]["task_id"]), "done")
    wider = SWEEP.replace("replicas: 3", "replicas: 4")
    second = ledger.create_run(parse_text(wider, Path("t.yaml")))
    rows = ledger.task_rows(second)
    reused = [r for r in rows if r["reused_from"]]
    assert [r["reused_from"] for r in reused] == [tasks[0]["task_id"]]
    assert reused[0]["state"] == "done" and reused[0]["summary"] == {"seconds": 0.5}
    assert ledger.observables(second)[reused[0]["task_id"]] == {"t": [0.0, 0.5]}
    assert ledger.run(second).pending == 3
    # Reused again, it still names the task that computed it.
    third = ledger.create_run(parse_text(wider, Path("t.yaml")))
    assert [r["reused_from"] for r in ledger.task_rows(third) if r["reused_from"]] == [
        tasks[0]["task_id"]]
    fresh = ledger.create_run(parse_text(wider, Path("t.yaml")), reuse=False)
    assert ledger.run(fresh).pending == 4
    other_seed = ledger.create_run(parse_text(wider.replace("seed: 7", "seed: 8"), Path("t")))
    assert ledger.run(other_seed).pending == 4


def test_rejections_are_counted_by_reason_with_the_latest_detail(tmp_path: Path) -> None:
    ledger, _ = make(tmp_path)
    with ledger.batch():
        ledger.add_rejection("malformed", "first", 1.0)
        ledger.add_rejection("malformed", "x" * 10_000, 2.0)
        ledger.add_rejection("unknown task", "t", 3.0)
    got = ledger.rejections()
    assert got["malformed"]["count"] == 2 and got["malformed"]["last_at"] == 2.0
    assert len(got["malformed"]["last"]) == 500
    assert got["unknown task"] == {"count": 1, "last_at": 3.0, "last": "t"}


def test_a_failed_write_names_the_ledger_and_rolls_back(tmp_path: Path) -> None:
    from simctl.errors import LedgerWriteError

    ledger, run_id = make(tmp_path)
    pages = ledger.db.execute("PRAGMA page_count").fetchone()[0]
    ledger.db.execute(f"PRAGMA max_page_count={pages}")  # the file cannot grow: "disk full"
    with pytest.raises(LedgerWriteError, match=rf"cannot write the ledger {ledger.path}: .*full"):
        ledger.create_run(parse_text(SWEEP.replace("replicas: 3", "replicas: 5000"),
                                     Path("big.yaml")))
    assert [r.run_id for r in ledger.runs()] == [run_id]
    assert LedgerWriteError.exit_code == 5


def unique_prefix(run_id: str, others: list[str]) -> str:
    """The shortest prefix of ``run_id`` that no other id starts with."""
    return next(run_id[:n] for n in range(1, len(run_id) + 1)
                if not any(o.startswith(run_id[:n]) for o in others))


def test_a_run_is_named_by_its_id_a_unique_prefix_or_last(tmp_path: Path) -> None:
    ledger, first = make(tmp_path)
    second = ledger.create_run(parse_text(SWEEP, Path("t.yaml")), reuse=False)
    assert ledger.resolve_run(first) == first
    assert ledger.resolve_run(unique_prefix(first, [second])) == first
    assert ledger.resolve_run(unique_prefix(second, [first])) == second
    assert ledger.resolve_run("last") == second
    with pytest.raises(InputError, match="ambiguous") as ambiguous:
        ledger.resolve_run(first[:4])  # the year: both runs
    assert first in str(ambiguous.value) and second in str(ambiguous.value)
    assert ambiguous.value.exit_code == 2
    for spec in ("nope", "", first + "x"):
        with pytest.raises(UnknownRun):
            ledger.resolve_run(spec)
    with pytest.raises(UnknownRun, match="no runs"):
        Ledger(tmp_path / "empty.sqlite").resolve_run("last")


def test_completion_reads_run_ids_without_creating_or_migrating(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    assert complete_run_ids(ledger.path, run_id[:8]) == [(run_id, "t active")]
    assert complete_run_ids(ledger.path, "x") == []
    missing = tmp_path / "none.sqlite"
    assert complete_run_ids(missing, "") == [] and not missing.exists()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    assert complete_run_ids(garbage, "") == []


def fail_task(ledger: Ledger, run_id: str, index: int, attempts: int) -> str:
    """Fail a task after ``attempts`` failed tries, each with a failed result."""
    task = f"{run_id}.{index}"
    for attempt in range(1, attempts + 1):
        with ledger.batch():
            ledger.assign(task, attempt, "w1", "s1", time.time())
            if attempt < attempts:
                ledger.release(task, attempt, "failed", "boom", refund=False, fail=False,
                               now=time.time())
            else:
                ledger.store_result(result(run_id, task, attempt, state="failed",
                                           error="boom"), "failed")
    return task


def test_retry_puts_failed_tasks_back_with_fresh_tries_and_history_kept(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    failed = fail_task(ledger, run_id, 0, attempts=2)
    with ledger.batch():
        ledger.store_result(result(run_id, f"{run_id}.1"), "done")
        ledger.store_result(result(run_id, f"{run_id}.2"), "done")
        assert ledger.finish_run(run_id) == "failed"
    seeds = [r["seed"] for r in ledger.task_rows(run_id)]

    assert ledger.retry_run(run_id) == 1
    info = ledger.run(run_id)
    assert (info.state, info.finished_at, info.pending, info.done) == ("active", None, 1, 2)
    assert ledger.active_run_ids() == [run_id]
    row = ledger.task_rows(run_id)[0]
    assert (row["state"], row["tries"], row["lost"], row["attempts"], row["error"],
            row["worker_id"], row["summary"]) == ("pending", 0, 0, 2, None, None, {})
    assert [r["seed"] for r in ledger.task_rows(run_id)] == seeds
    assert [a["outcome"] for a in ledger.attempts(failed)] == ["failed", "failed"]
    assert [t.attempt for t in ledger.live_tasks(run_id)] == [2]  # the next one is 3

    with pytest.raises(InputError, match="still active"):
        ledger.retry_run(run_id)
    with ledger.batch():
        ledger.assign(failed, 3, "w2", "s2", time.time())
        ledger.store_result(result(run_id, failed, 3, worker="w2"), "done")
        assert ledger.finish_run(run_id) == "done"
    assert [a["attempt"] for a in ledger.attempts(failed)] == [1, 2, 3]
    assert ledger.retry_run(run_id) == 0
    assert ledger.run(run_id).state == "done"


def test_retry_of_cancelled_tasks_only_when_asked_and_never_of_reused(tmp_path: Path) -> None:
    ledger, first = make(tmp_path)
    with ledger.batch():
        for i in range(3):
            ledger.store_result(result(first, f"{first}.{i}"), "done")
        ledger.finish_run(first)
    reused = ledger.create_run(parse_text(SWEEP, Path("t.yaml")))
    assert ledger.run(reused).done == 3
    with ledger.batch():
        ledger.finish_run(reused)
    assert ledger.retry_run(reused, cancelled=True) == 0

    ledger2, run_id = make(tmp_path / "two")
    with ledger2.batch():
        ledger2.store_result(result(run_id, f"{run_id}.0"), "done")
    ledger2.cancel_run(run_id)
    assert ledger2.retry_run(run_id) == 0
    assert ledger2.run(run_id).state == "cancelled"
    assert ledger2.retry_run(run_id, cancelled=True) == 2
    assert ledger2.run(run_id).pending == 2 and ledger2.run(run_id).state == "active"


def test_task_states_filtered_limited_and_failed_first(tmp_path: Path) -> None:
    ledger, run_id = make(tmp_path)
    fail_task(ledger, run_id, 2, attempts=1)
    with ledger.batch():
        ledger.store_result(result(run_id, f"{run_id}.0"), "done")
    everything = ledger.task_states(run_id)
    assert [t["state"] for t in everything] == ["done", "pending", "failed"]
    assert [t["state"] for t in ledger.task_states(run_id, failed_first=True)] == [
        "failed", "done", "pending"]
    assert [t["task_id"] for t in ledger.task_states(run_id, ["done", "pending"])] == [
        f"{run_id}.0", f"{run_id}.1"]
    assert len(ledger.task_states(run_id, limit=2)) == 2
    assert ledger.task_states(run_id, ["cancelled"]) == []


LEDGER_V3 = Path(__file__).resolve().parents[1] / "data/ledgers/schema-v3.sqlite"
"""A ledger written by simctl at schema 3, before artifacts (one task done, one assigned,
two pending)."""


def migrated(fixture: Path, tmp_path: Path, name: str) -> tuple[Ledger, RunInfo]:
    """A copy of a committed ledger of an older schema, opened (so migrated), and its one
    run, checked to be ``name`` with one task done, one assigned and two pending."""
    path = tmp_path / "old.sqlite"
    path.write_bytes(fixture.read_bytes())
    ledger = Ledger(path)
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [info] = ledger.runs()
    assert (info.name, info.done, info.running, info.pending) == (name, 1, 1, 2)
    return ledger, info


def test_a_schema_3_ledger_migrates_in_place_with_no_artifacts(tmp_path: Path) -> None:
    ledger, info = migrated(LEDGER_V3, tmp_path, "before-artifacts")
    assert (info.max_task_artifact_bytes, info.max_run_artifact_bytes) == (None, None)
    assert info.task_artifact_limit > 0 and info.run_artifact_limit > info.task_artifact_limit
    assert ledger.artifacts(info.run_id) == [] and ledger.run_artifact_bytes(info.run_id) == 0
    live = ledger.live_tasks(info.run_id)
    assert [(t.inputs, t.init_from) for t in live] == [(None, None)] * 3
    assert ledger.task_rows(info.run_id)[0]["summary"] == {"seconds": 0.01}


LEDGER_V4 = Path(__file__).resolve().parents[1] / "data/ledgers/schema-v4.sqlite"
"""A ledger written by simctl at schema 4, before checkpoints (one task done with an
artifact, one assigned, two pending)."""


def test_a_schema_4_ledger_migrates_in_place_with_no_checkpoints(tmp_path: Path) -> None:
    ledger, info = migrated(LEDGER_V4, tmp_path, "before-checkpoints")
    assert info.checkpoint_every_s is None and info.checkpoint_interval == 300.0
    assert ledger.checkpoints(info.run_id) == {}
    [artifact] = ledger.artifacts(info.run_id)
    assert (artifact.name, artifact.size) == ("data.bin", 3)
    running = [t for t in ledger.task_states(info.run_id) if t["state"] == "assigned"]
    assert [(t["progress"], t["resumed_at_step"]) for t in running] == [(0.0, None)]
    assert ledger.attempts(running[0]["task_id"])[0]["start_step"] is None
    # The reuse keys it stored are those this version computes: its done task is reused.
    stored = ledger.db.execute(
        "SELECT kind, kind_version, params, seed, inputs, reuse_key FROM tasks").fetchall()
    assert stored and all(
        key == reuse_key(kind, version, json.loads(params), seed,
                         tuple(ref["sha256"] for ref in json.loads(inputs or "[]")))
        for kind, version, params, seed, inputs, key in stored)


def test_checkpoints_replace_each_other_and_keep_their_objects_named(tmp_path: Path) -> None:
    """The latest checkpoint of a task is kept; the one it replaces is named no more (its
    object may go), and deleting the run names none of them."""
    from simproto.protocol import CheckpointRef, FileRef

    ledger, run_id = make(tmp_path)
    task = f"{run_id}.0"
    first, second = CheckpointRef(10, FileRef("checkpoint-10.npz", 5, "d" * 64)), \
        CheckpointRef(20, FileRef("checkpoint-20.npz", 6, "e" * 64))
    with ledger.batch():
        ledger.assign(task, 1, "w1", "s1", time.time())
        assert ledger.save_checkpoint(run_id, task, 1, first) is None
        assert ledger.save_checkpoint(run_id, task, 1, first) is None  # the same again
        assert ledger.save_checkpoint(run_id, task, 1, second) == "d" * 64
        ledger.set_start_step(task, 1, 7)
        ledger.set_progress([(task, 0.25)])
    assert ledger.checkpoints(run_id) == {task: second}
    assert ledger.referenced_digests(["d" * 64, "e" * 64]) == {"e" * 64}
    [state] = [t for t in ledger.task_states(run_id) if t["task_id"] == task]
    assert (state["progress"], state["resumed_at_step"]) == (0.25, 7)
    ledger.cancel_run(run_id)
    assert "e" * 64 in ledger.delete_run(run_id)
    assert ledger.checkpoints(run_id) == {}


def test_deleting_a_run_keeps_the_files_another_run_still_names(tmp_path: Path) -> None:
    """A file stays in the store while any other run has it as an artifact or as a task's
    input (a chained task that starts from it)."""
    from simctl.chains import Start
    from simctl.ledger import RunActive
    from simproto.protocol import FileRef

    ledger = Ledger(tmp_path / "l.sqlite")
    text = "seed: 3\ntasks:\n  - kind: sleep\n"
    first = ledger.create_run(parse_text(text, Path("a.yaml")))
    shared, own = "a" * 64, "b" * 64
    with ledger.batch():
        ledger.add_artifacts(first, f"{first}.0", [FileRef("final.xyz", 10, shared),
                                                  FileRef("data.bin", 5, own)])
    second = ledger.create_run(parse_text(text.replace("3", "4"), Path("b.yaml")),
                               starts=[Start(inputs=(FileRef("init", 10, shared),))])
    with pytest.raises(RunActive, match="cancel it first"):
        ledger.delete_run(first)
    for run_id in (first, second):
        ledger.cancel_run(run_id)
    assert ledger.digests_only_in(first) == {own}
    assert ledger.delete_run(first) == {own}  # the input of the second run stays
    assert ledger.delete_run(second) == {shared}


def _in_database_file(ledger: Ledger, file: Path | None = None) -> bool:
    """Whether every page of the ledger is in its main file (``file``, where it was moved
    to; else its path), not only in the log."""
    pages = ledger.db.execute("PRAGMA page_count").fetchone()[0]
    size = ledger.db.execute("PRAGMA page_size").fetchone()[0]
    return (file or ledger.path).stat().st_size >= pages * size


def test_the_log_is_checkpointed_by_a_thread_while_the_dispatcher_serves(
        tmp_path: Path) -> None:
    """Inside checkpoints_in_background the ledger's own commits never checkpoint (their
    pages stay in the log), and the thread copies them into the database file."""
    import threading

    big = SWEEP.replace("replicas: 3", "replicas: 2000")
    alone = Ledger(tmp_path / "alone.sqlite")
    alone.db.execute("PRAGMA wal_autocheckpoint=0")  # what the dispatcher's connection gets
    alone.create_run(parse_text(big, Path("t.yaml")))
    time.sleep(0.5)
    assert not _in_database_file(alone)  # nobody checkpointed: the pages are in the log

    ledger = Ledger(tmp_path / "served.sqlite")
    with ledger.checkpoints_in_background():
        assert ledger.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        ledger.create_run(parse_text(big, Path("t.yaml")))
        deadline = time.monotonic() + 10
        while not _in_database_file(ledger) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_database_file(ledger)
    assert ledger.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert "ledger-checkpoints" not in [t.name for t in threading.enumerate()]


def test_without_a_connection_for_the_thread_commits_checkpoint_themselves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """When the thread's connection cannot be opened (here: the ledger's folder was renamed
    under the dispatcher, whose connection holds the files open), automatic checkpoints stay
    on, it is logged, and the pages still reach the database file."""
    import threading

    ledger = Ledger(tmp_path / "before" / "ledger.sqlite")
    (tmp_path / "before").rename(tmp_path / "after")
    moved = tmp_path / "after" / "ledger.sqlite"
    ledger.db.execute("PRAGMA wal_autocheckpoint=100")  # pages; SQLite's default is 1,000
    with caplog.at_level("WARNING", logger="simctl.wal"), ledger.checkpoints_in_background():
        assert ledger.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 100
        assert "ledger-checkpoints" not in [t.name for t in threading.enumerate()]
        # Over 200 pages: past the threshold, this commit checkpoints.
        ledger.create_run(parse_text(SWEEP.replace("replicas: 3", "replicas: 2000"),
                                     Path("t.yaml")))
        assert _in_database_file(ledger, moved)
    assert f"cannot open the ledger {ledger.path} for background checkpoints" in caplog.text
    assert ledger.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 100
