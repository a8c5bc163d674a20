"""The dispatcher's decisions about artifacts and chained tasks, fed real protocol messages
directly (no broker in between): a done result with files is stored only once every file is
pulled into the store with its hash checked; limits fail a task with the reason; a task that
starts from another's final configuration waits for it and gets its file as ``init``.

The agent's side and the wire are covered by tests/integration (real agents, Mosquitto)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from simctl.ledger import Ledger
from simctl.scheduler import Decisions, Scheduler
from simctl.taskfile import parse_text
from simproto.protocol import (
    Channel,
    Chunk,
    ChunkRequest,
    Result,
    Topics,
)
from tests.support.chunks import serve_chunk
from tests.unit.test_simctl_dispatch import Connected, decide, status, tick

TRAJECTORY = os.urandom(700_000)
FINAL = b"2\nLattice=\"9 0 0 0 9 0 0 0 9\" Properties=species:S:1:pos:R:3\nX 0 0 0\nX 1 1 1\n"


def make(tmp_path: Path, text: str) -> tuple[Scheduler, str]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = ledger.create_run(parse_text(text, tmp_path / "t.yaml"))
    d = Scheduler(ledger, Topics("t"))
    d.decide([Connected()], tick())
    return d, run_id


def files_of(tmp_path: Path, **contents: bytes) -> dict[str, tuple[Path, dict[str, object]]]:
    """Files on the 'worker' side with their references."""
    out = {}
    for name, data in contents.items():
        path = tmp_path / f"worker-{name}"
        path.write_bytes(data)
        out[name] = (path, {"name": name.replace("_", "."), "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
    return out


def done(d: Scheduler, task_id: str, worker: str, artifacts: list[dict[str, object]]) -> Result:
    lease = d.leases[task_id]
    now = time.time()
    return Result(worker, "s1", task_id.rsplit(".", 1)[0], task_id, lease.attempt, "done",
                  now, now, summary={"seconds": 0.0}, artifacts=artifacts)


def chunk_message(topics: Topics, worker: str, chunk: Chunk) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topics.worker(worker, Channel.CHUNK).encode())
    msg.payload = chunk.encode()
    return msg


def serve(d: Scheduler, decided: Decisions, files: dict[str, tuple[Path, dict[str, object]]],
          worker: str = "w1", corrupt: bool = False) -> Decisions:
    """Answer every pull request of a pass from the worker's files (as an agent does),
    until a pass asks for nothing more; the last pass's decisions."""
    by_sha = {ref["sha256"]: (path, ref) for path, ref in files.values()}
    while True:
        asks = [(w, ChunkRequest.decode(m)) for w, ch, m in decided.transfers
                if ch is Channel.PULL]
        if not asks:
            return decided
        answers = []
        for w, request in asks:
            assert w == worker
            path, ref = by_sha[request.sha256]
            chunk = serve_chunk(path, int(ref["size"]), request)  # type: ignore[arg-type]
            if corrupt:
                chunk = Chunk(chunk.sha256, chunk.offset, chunk.size,
                              bytes(b ^ 1 for b in chunk.data))
            answers.append(chunk_message(d.topics, worker, chunk))
        decided = d.decide(answers, tick())


def test_a_done_result_waits_for_its_files_then_is_stored_with_them(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, "tasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    decide(d, status("w1"))
    files = files_of(tmp_path, trajectory_xyz=TRAJECTORY, final_xyz=FINAL)
    refs = [ref for _, ref in files.values()]
    first = decide(d, done(d, task, "w1", refs))
    assert first.acks == []  # the worker keeps its files until they are stored
    asks = [m for _, ch, m in first.transfers if ch is Channel.PULL]
    assert 1 < len(asks) <= 2 * 4  # a window per file, never the whole file at once
    assert d.ledger.task_rows(run_id)[0]["state"] == "assigned"
    assert len(d.ledger.staged_results(run_id)) == 1
    # A re-sent copy of the result while the pull goes on changes nothing.
    assert decide(d, done(d, task, "w1", refs)).acks == []
    last = serve(d, first, files)
    assert d.ledger.task_rows(run_id)[0]["state"] == "done"
    assert ("w1", [task, 1]) in last.acks
    stored = d.ledger.artifacts(run_id)
    assert {(a.name, a.size) for a in stored} == {("trajectory.xyz", len(TRAJECTORY)),
                                                  ("final.xyz", len(FINAL))}
    for a in stored:
        assert d.transfers.store.path(a.sha256).read_bytes() in (TRAJECTORY, FINAL)
    assert d.ledger.staged_results(run_id) == {}


def test_corrupt_chunks_are_never_stored_and_the_attempt_is_retried(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, "max_attempts: 3\ntasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    decide(d, status("w1"))
    files = files_of(tmp_path, data_bin=TRAJECTORY)
    first = decide(d, done(d, task, "w1", [files["data_bin"][1]]))
    serve(d, first, files, corrupt=True)
    row = d.ledger.task_rows(run_id)[0]
    assert row["state"] in ("pending", "assigned") and row["attempts"] >= 1
    assert "failed its SHA-256 check" in d.ledger.attempts(task)[0]["detail"]
    assert d.ledger.artifacts(run_id) == []
    assert not any((d.transfers.store.root / "objects").rglob("*"))


def test_over_the_task_limit_the_task_fails_with_the_reason(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, "artifact_limits: {task: 100kB}\ntasks:\n  - kind: sleep\n")
    task = f"{run_id}.0"
    decide(d, status("w1"))
    assert d.leases[task].task.task_id == task
    files = files_of(tmp_path, data_bin=TRAJECTORY)
    decided = decide(d, done(d, task, "w1", [files["data_bin"][1]]))
    row = d.ledger.task_rows(run_id)[0]
    assert row["state"] == "failed"
    assert "over the task limit of 97.7 KiB (artifact_limits.task" in row["error"]
    assert ("w1", [task, 1]) in decided.acks  # the worker may drop the files
    assert [m for _, ch, m in decided.transfers if ch is Channel.PULL] == []


def test_the_default_limits_pass_a_10000_task_lj_sweep_with_final_configurations(
        tmp_path: Path) -> None:
    """docs/tasks.md: a 10,000-task lj sweep with final configurations of 4,000 atoms fits
    the default limits (the run's and each task's), with room to spare."""
    import ckernel
    from simctl.ledger import DEFAULT_MAX_RUN_ARTIFACT_BYTES, DEFAULT_MAX_TASK_ARTIFACT_BYTES

    result = ckernel.simulate("lj", {"n_cells": 10, "steps": 1}, 7, artifact_dir=tmp_path)
    [final] = result["artifacts"]
    assert final["name"] == "final.xyz" and 300_000 < final["size"] < 700_000
    assert 10_000 * final["size"] < DEFAULT_MAX_RUN_ARTIFACT_BYTES / 50
    assert final["size"] < DEFAULT_MAX_TASK_ARTIFACT_BYTES / 1000


def test_a_local_file_is_copied_into_the_store_only_as_it_was_checked(tmp_path: Path) -> None:
    """An init file given by path is hashed when the task file is checked and again as it is
    copied: a file changed in between is refused, and nothing enters the store."""
    import pytest

    from simctl.errors import InputError
    from simctl.store import ArtifactStore
    from simproto.protocol import FileRef

    store = ArtifactStore(tmp_path / "store")
    source = tmp_path / "start.xyz"
    source.write_bytes(FINAL)
    ref = FileRef("init", len(FINAL), hashlib.sha256(FINAL).hexdigest())
    source.write_bytes(FINAL + b"X 2 2 2\n")
    with pytest.raises(InputError, match="changed after the task file was checked"):
        store.add_file(source, ref)
    assert not store.has(ref.sha256) and not any(store.root.rglob("*.*"))
    source.write_bytes(FINAL)
    store.add_file(source, ref)
    assert store.path(ref.sha256).read_bytes() == FINAL
