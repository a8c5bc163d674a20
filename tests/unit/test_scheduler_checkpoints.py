"""The dispatcher's decisions about checkpoints, fed real protocol messages directly (no
broker in between): a running attempt's checkpoint, listed in its worker's heartbeats, is
pulled into the store and becomes the next attempt's ``checkpoint`` input; a newer one
replaces it; a task handed back with its checkpoint is acknowledged only once that is
stored; a finished task's checkpoint goes.

The agent's side and the kernels' resume are covered by tests/fault (real agents, Mosquitto)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from simctl.scheduler import Scheduler
from simproto.protocol import Assignment, Channel, ChunkRequest, Heartbeat, Result
from tests.unit.test_scheduler_artifacts import files_of, make, serve
from tests.unit.test_simctl_dispatch import decide, status

STATE = os.urandom(300_000)
NEWER = os.urandom(200_000)


def checkpoint_of(tmp_path: Path, step: int, data: bytes
                  ) -> tuple[dict[str, tuple[Path, dict[str, object]]], dict[str, object]]:
    """A checkpoint file on the 'worker' side, and its heartbeat entry."""
    files = files_of(tmp_path, **{f"checkpoint-{step}_npz": data})
    [(_, ref)] = files.values()
    return files, {"step": step, **ref}


def beat(d: Scheduler, worker: str, task_id: str, progress: float,
         checkpoint: dict[str, object] | None = None, resumed: int = 0) -> Heartbeat:
    return Heartbeat(worker, "s1", 1, time.time(), 0, {task_id: progress},
                     {task_id: checkpoint} if checkpoint else {},
                     {task_id: resumed} if resumed else {})


def assignments(decided: object) -> list[Assignment]:
    return [a for _, a in decided.assignments]  # type: ignore[attr-defined]


def test_a_lost_attempt_resumes_from_the_checkpoint_its_heartbeats_listed(tmp_path: Path
                                                                         ) -> None:
    d, run_id = make(tmp_path, "checkpoint_every_s: 30\ntasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    [first] = assignments(decide(d, status("w1")))
    assert first.checkpoint_every_s == 30.0 and first.inputs == []
    files, entry = checkpoint_of(tmp_path, 400, STATE)
    decided = decide(d, beat(d, "w1", task, 0.4, entry))
    serve(d, decided, files)
    [stored] = d.ledger.checkpoints(run_id).values()
    assert (stored.step, stored.file.size) == (400, len(STATE))
    assert d.transfers.store.path(stored.file.sha256).read_bytes() == STATE
    # The same checkpoint listed again is not pulled again.
    assert not [m for _, ch, m in decide(d, beat(d, "w1", task, 0.5, entry)).transfers
                if ch is Channel.PULL]
    d.write_progress()
    assert [t["progress"] for t in d.ledger.task_states(run_id)] == [0.5]

    decide(d, status("w1", state="offline"))  # the worker went away with the task
    [second] = assignments(decide(d, status("w2", session="s2")))
    [ref] = second.input_refs
    assert (ref.name, ref.size, ref.sha256) == ("checkpoint", len(STATE), stored.file.sha256)
    # The new worker fetches it from simctl like any input.
    request = ChunkRequest(ref.sha256, 0, 65536)
    d.on_fetch("w2", request)
    [(worker, channel, payload)] = d.transfers.take_outbox()
    assert (worker, channel) == ("w2", Channel.DOWNLOAD) and payload.endswith(STATE[:65536])
    decide(d, Heartbeat("w2", "s2", 1, time.time(), 0, {task: 0.45}, {}, {task: 400}))
    [attempt_1, attempt_2] = d.ledger.attempts(task)
    assert (attempt_1["outcome"], attempt_2["start_step"]) == ("lost", 400)
    [row] = d.ledger.task_states(run_id)
    assert row["resumed_at_step"] == 400


def test_a_newer_checkpoint_replaces_the_older_and_a_done_task_forgets_it(tmp_path: Path
                                                                         ) -> None:
    d, run_id = make(tmp_path, "tasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    decide(d, status("w1"))
    old_files, old = checkpoint_of(tmp_path, 100, STATE)
    serve(d, decide(d, beat(d, "w1", task, 0.2, old)), old_files)
    new_files, new = checkpoint_of(tmp_path, 200, NEWER)
    last = serve(d, decide(d, beat(d, "w1", task, 0.4, new)), new_files)
    assert [c.step for c in d.ledger.checkpoints(run_id).values()] == [200]
    assert last.unreferenced == {old["sha256"]}  # removed from the store once committed
    now = time.time()
    finished = decide(d, Result("w1", "s1", run_id, task, 1, "done", now, now,
                                summary={"seconds": 0.0}))
    assert d.ledger.checkpoints(run_id) == {}
    assert finished.unreferenced == {new["sha256"]}


def test_a_checkpoint_of_another_session_or_attempt_is_not_taken(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, "tasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    decide(d, status("w1"))
    _, entry = checkpoint_of(tmp_path, 100, STATE)
    stale = Heartbeat("w1", "s0", 1, time.time(), 0, {task: 0.2}, {task: entry})
    assert not decide(d, stale).transfers
    assert d.ledger.checkpoints(run_id) == {}


def test_a_task_handed_back_with_its_checkpoint_is_acked_once_that_is_stored(
        tmp_path: Path) -> None:
    d, run_id = make(tmp_path, "max_attempts: 1\ntasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    decide(d, status("w1"))
    files, entry = checkpoint_of(tmp_path, 300, STATE)
    ref = {k: v for k, v in entry.items() if k != "step"}
    decide(d, status("w1", state="draining"))  # a warm stop begins with this
    now = time.time()
    back = Result("w1", "s1", run_id, task, 1, "failed", now, now,
                  metadata={"checkpoint_step": 300}, error="handed back at step 300",
                  handed_back=True, artifacts=[ref])
    first = decide(d, back)
    assert first.acks == [] and d.ledger.task_rows(run_id)[0]["state"] == "assigned"
    last = serve(d, first, files)
    assert ("w1", [task, 1]) in last.acks
    [checkpoint] = d.ledger.checkpoints(run_id).values()
    assert checkpoint.step == 300
    assert hashlib.sha256(d.transfers.store.path(checkpoint.file.sha256).read_bytes()
                          ).hexdigest() == ref["sha256"]
    # Handed back like a lost worker: no try counted (max_attempts 1 still leaves one).
    row = d.ledger.task_rows(run_id)[0]
    assert (row["state"], row["tries"]) == ("pending", 0)
    [a] = d.ledger.attempts(task)
    assert a["outcome"] == "lost"
    [again] = assignments(decide(d, status("w2", session="s2")))
    assert [r.name for r in again.input_refs] == ["checkpoint"]


def test_checkpoints_off_in_the_task_file_reach_the_worker_as_zero(tmp_path: Path) -> None:
    d, _ = make(tmp_path, "checkpoint_every_s: 0\ntasks:\n  - kind: sleep\n")
    [a] = assignments(decide(d, status("w1")))
    assert a.checkpoint_every_s == 0.0
    d2, _ = make(tmp_path / "default", "tasks:\n  - kind: sleep\n")
    [b] = assignments(decide(d2, status("w1")))
    assert b.checkpoint_every_s == 300.0
