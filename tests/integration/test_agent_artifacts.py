"""The agent's files: artifacts kept in its spool and served to pulls, input files fetched.

A real agent process and a real Mosquitto; the test plays simctl's side of the transfers
with a :class:`FakeDispatcher` that also watches the agent's ``chunk`` and ``fetch`` topics
and can serve input files the way simctl does (:func:`tests.support.chunks.serve_chunk`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import simproto as p
from ckernel.drivers import sleep_artifact_bytes
from simctl.local_broker import LocalBroker
from simproto.transfer import MAX_RESTARTS
from tests.integration.test_agent import FakeDispatcher, metrics_with, start, wait_result
from tests.support.chunks import serve_chunk
from tests.support.procs import Cluster
from tests.support.waiting import wait_for

SEED = 7
"""The seed of every assignment here (FakeDispatcher's): data.bin's bytes follow from it."""


class TransferSide(FakeDispatcher):
    """simctl's side of the transfers: pulls artifacts, serves inputs (see the module)."""

    def __init__(self, address: str, prefix: str) -> None:
        self.chunks: list[p.Chunk] = []
        self.fetch_requests: list[p.ChunkRequest] = []
        self.serving: dict[str, Path] = {}
        """sha256 -> the file served for it (bytes may differ from the hash: corruption)."""
        self.corrupt = False
        self._transfer_lock = threading.Lock()
        super().__init__(address, prefix)

    def _on_connect(self, client: mqtt.Client, u: Any, f: Any, reason: Any, props: Any) -> None:
        super()._on_connect(client, u, f, reason, props)
        if not reason.is_failure:
            client.subscribe([(self.topics.all_workers(p.Channel.CHUNK), 0),
                              (self.topics.all_workers(p.Channel.FETCH), 0)])

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        worker, channel = self.topics.parse_worker_topic(msg.topic) \
            if "/workers/" in msg.topic else (None, None)
        if channel is p.Channel.CHUNK:
            with self._transfer_lock:
                self.chunks.append(p.Chunk.decode(bytes(msg.payload)))
        elif channel is p.Channel.FETCH:
            request = p.ChunkRequest.decode(bytes(msg.payload))
            with self._transfer_lock:
                self.fetch_requests.append(request)
            assert worker is not None
            self.serve(worker, request)
        else:
            super()._on_message(c, u, msg)

    def serve(self, worker: str, request: p.ChunkRequest) -> None:
        path = self.serving.get(request.sha256)
        if path is None:
            return  # not served (yet): the agent asks again after its timeout
        chunk = serve_chunk(path, path.stat().st_size, request)
        if self.corrupt and chunk.data:
            chunk = p.Chunk(chunk.sha256, chunk.offset, chunk.size,
                            bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:])
        self.client.publish(self.topics.worker(worker, p.Channel.DOWNLOAD), chunk.encode(), qos=0)

    def requested(self, sha256: str) -> list[p.ChunkRequest]:
        with self._transfer_lock:
            return [r for r in self.fetch_requests if r.sha256 == sha256]

    def pull(self, sha256: str, offset: int, length: int) -> p.Chunk:
        """Ask the agent for a chunk of an artifact; its answer."""
        with self._transfer_lock:
            seen = len(self.chunks)
        self.send(p.Channel.PULL, p.ChunkRequest(sha256, offset, length))

        def answer() -> p.Chunk | None:
            with self._transfer_lock:
                return next((c for c in self.chunks[seen:]
                             if (c.sha256, c.offset) == (sha256, offset)), None)

        chunk = wait_for(answer, 5, what=f"chunk {sha256[:12]}@{offset}")
        assert isinstance(chunk, p.Chunk)
        return chunk


    def __enter__(self) -> TransferSide:
        wait_for(self.client.is_connected, 10, what="test simctl side connected")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@pytest.fixture
def side(broker: LocalBroker, topic_prefix: str) -> Iterator[TransferSide]:
    with TransferSide(broker.address, topic_prefix) as instance:
        yield instance


def assign(side: TransferSide, task_id: str, *, inputs: tuple[p.FileRef, ...] = (),
           max_artifact_bytes: int | None = None, **params: Any) -> p.Assignment:
    assignment = p.Assignment("run-1", task_id, 1, "sleep", params, SEED, time.time(),
                              inputs=[ref.to_json() for ref in inputs],
                              max_artifact_bytes=max_artifact_bytes)
    side.send(p.Channel.ASSIGN, assignment)
    return assignment


def sleep_data(size: int) -> bytes:
    return b"".join(sleep_artifact_bytes(SEED, size))


def file_ref(path: Path, name: str = "init") -> p.FileRef:
    data = path.read_bytes()
    return p.FileRef(name, len(data), hashlib.sha256(data).hexdigest())


def metric(side: TransferSide, name: str, value: int) -> None:
    metrics_with(side, f'worker_agent_{name}{{worker_id="w1"}} {value}')


# ====================================================================== tests


def test_artifacts_are_listed_served_by_pulls_and_deleted_after_the_ack(
        cluster: Cluster, side: TransferSide, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    start(cluster, side, "w1", 1, "--spool", str(spool))
    size = 600_000  # three chunks, the last one short
    data = sleep_data(size)
    sha = hashlib.sha256(data).hexdigest()
    assign(side, "t1", seconds=0, artifact_bytes=size)
    result = wait_result(side, "t1")
    assert result.state == "done"
    assert result.artifacts == [{"name": "data.bin", "size": size, "sha256": sha}]
    assert (spool / "attempts/t1-1/data.bin").read_bytes() == data
    metric(side, "spool_bytes", size)

    pulled = b""
    while len(pulled) < size:
        chunk = side.pull(sha, len(pulled), p.MAX_CHUNK_BYTES)
        assert (chunk.error, chunk.size, chunk.offset) == (None, size, len(pulled))
        pulled += chunk.data
    assert pulled == data
    metric(side, "artifact_bytes_served_total", size)

    unknown = "ab" * 32
    refused = side.pull(unknown, 0, 1000)
    assert (refused.error, refused.data) == ("worker w1 holds no file abababababab", b"")
    assert side.pull(sha, size + 1, 10).error == f"offset {size + 1} is past the end " \
        f"({size} bytes)"

    side.ack(result)
    wait_for(lambda: not (spool / "attempts/t1-1").exists(), 5, what="t1's folder removed")
    metric(side, "spool_bytes", 0)
    gone = side.pull(sha, 0, 1000)
    assert gone.error == f"worker w1 holds no file {sha[:12]}"

    # Nothing is kept of a task that writes nothing, or of one that fails.
    assign(side, "plain", seconds=0)
    assert wait_result(side, "plain").artifacts == []
    assign(side, "broken", seconds=0, artifact_bytes=1000, fail=True)
    assert wait_result(side, "broken").state == "failed"
    # Removed in the agent's next sweep of finished attempts (about every second).
    wait_for(lambda: sorted(os.listdir(spool / "attempts")) == [], 5,
             what="the failed attempt's folder removed")


def test_task_limit_and_spool_bound(cluster: Cluster, side: TransferSide,
                                    tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    start(cluster, side, "w1", 1, "--spool", str(spool), "--spool-max-bytes", "1kB")

    # Over the task's own limit: never retried (every attempt writes the same files).
    assign(side, "big", seconds=0, artifact_bytes=2000, max_artifact_bytes=1500)
    big = wait_result(side, "big")
    assert (big.state, big.retryable, big.artifacts) == ("failed", False, [])
    assert big.error == ("artifacts take 2.0 KiB (data.bin 2.0 KiB), over the task limit of "
                         "1.5 KiB (artifact_limits.task in the task file)")
    assert not (spool / "attempts/big-1").exists()

    # Within the limit but not within the spool: retryable (the spool empties as simctl
    # fetches), with the spool's state in the reason.
    assign(side, "first", seconds=0, artifact_bytes=600)
    first = wait_result(side, "first")
    assert first.state == "done" and first.artifacts[0]["size"] == 600
    assign(side, "second", seconds=0, artifact_bytes=600)
    second = wait_result(side, "second")
    assert (second.state, second.retryable) == ("failed", True)
    assert second.error is not None and second.error.startswith(
        "spool full: this attempt's artifacts take 600 B (data.bin 600 B), and "
        f"{spool} holds 600 B of its 1000 B (the artifacts of 1 results simctl has not "
        "fetched yet: 600 B; inputs: 0 B); raise --spool-max-bytes")
    assert not (spool / "attempts/second-1").exists()

    # A full spool takes no assignment: rejected, so it costs no attempt.
    assign(side, "fills", seconds=0, artifact_bytes=400)
    assert wait_result(side, "fills").state == "done"
    assign(side, "refused", seconds=0)
    event = wait_for(lambda: side.events(p.EventKind.REJECTED), 5, what="rejection")[0]
    assert event.task_id == "refused"
    assert event.detail.startswith(f"spool full: {spool} holds 1000 B of its 1000 B")
    assert "raise --spool-max-bytes" in event.detail
    assert side.results("refused") == []

    side.ack(first, wait_result(side, "fills"))
    metric(side, "spool_bytes", 0)
    assign(side, "after", seconds=0, artifact_bytes=900)
    assert wait_result(side, "after").state == "done"
    metric(side, "spool_max_bytes", 1000)


def test_inputs_are_fetched_once_into_the_cache_and_stale_attempts_removed_at_start(
        cluster: Cluster, side: TransferSide, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # Left by an earlier agent process: an attempt folder (its result went with that
    # session) and a cached input (still good).
    (spool / "attempts/old-3").mkdir(parents=True)
    (spool / "attempts/old-3/data.bin").write_bytes(b"x" * 100)
    cached = tmp_path / "cached.xyz"
    cached.write_bytes(b"1\ncached\nAr 0 0 0\n")
    cached_ref = file_ref(cached)
    (spool / "inputs").mkdir()
    (spool / "inputs" / cached_ref.sha256).write_bytes(cached.read_bytes())

    agent = start(cluster, side, "w1", 3, "--spool", str(spool))
    assert not (spool / "attempts/old-3").exists()
    assert "removed 1 attempt folders an earlier agent process left" in agent.log()

    wanted = tmp_path / "wanted.xyz"
    wanted.write_bytes(os.urandom(600_000))
    ref = file_ref(wanted)
    assign(side, "a", inputs=(ref,), seconds=0)
    assign(side, "b", inputs=(ref,), seconds=0)
    # Both hold a slot while the file is missing (their leases are renewed) ...
    wait_for(lambda: (s := side.status()) and sorted(s.running) == ["a", "b"]
             and s.free_slots == 1, 5, what="a and b holding slots")
    beat = wait_for(lambda: (b := side.last_heartbeat()) and "a" in b.progress and b, 5,
                    what="heartbeat listing a")
    assert beat.progress["a"] == 0.0 and beat.progress["b"] == 0.0
    # ... and share one download: one request per chunk (3), the window's worth at once.
    requests = wait_for(lambda: len(r := side.requested(ref.sha256)) >= 3 and r, 5,
                        what="fetch requests")
    assert sorted({r.offset for r in requests}) == [0, p.MAX_CHUNK_BYTES, 2 * p.MAX_CHUNK_BYTES]

    # An assignment whose input is cached runs at once, fetching nothing.
    assign(side, "c", inputs=(cached_ref,), seconds=0)
    assert wait_result(side, "c").state == "done"

    side.serving[ref.sha256] = wanted  # the re-asked requests (after 3 s) are answered
    assert wait_result(side, "a", timeout=20).state == "done"
    assert wait_result(side, "b").state == "done"
    assert (spool / "inputs" / ref.sha256).read_bytes() == wanted.read_bytes()
    assert not (spool / "inputs" / f"{ref.sha256}.part").exists()
    assert side.requested(cached_ref.sha256) == []
    metric(side, "input_bytes_fetched_total", ref.size)

    # Now cached: the next task with it fetches nothing more.
    asked = len(side.requested(ref.sha256))
    assign(side, "d", inputs=(ref,), seconds=0)
    assert wait_result(side, "d").state == "done"
    assert len(side.requested(ref.sha256)) == asked


def test_corrupt_inputs_fail_retryably_and_a_fetch_can_be_cancelled_or_handed_back(
        cluster: Cluster, side: TransferSide, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    agent = start(cluster, side, "w1", 2, "--spool", str(spool), "--grace", "1")
    corrupt = tmp_path / "corrupt.xyz"
    corrupt.write_bytes(os.urandom(1000))
    ref = file_ref(corrupt)
    side.serving[ref.sha256] = corrupt
    side.corrupt = True
    assign(side, "bad", inputs=(ref,), seconds=0)
    bad = wait_result(side, "bad")
    assert (bad.state, bad.retryable) == ("failed", True)
    assert bad.error == (f"input init: file {ref.sha256[:12]} (1000 bytes) failed its SHA-256 "
                         f"check {MAX_RESTARTS} times; given up")
    assert len(side.requested(ref.sha256)) == MAX_RESTARTS  # started over each time
    assert not (spool / "inputs" / ref.sha256).exists()
    assert not (spool / "inputs" / f"{ref.sha256}.part").exists()

    never = p.FileRef("init", 5000, "cd" * 32)  # simctl never answers
    assign(side, "cancelled", inputs=(never,), seconds=0)
    wait_for(lambda: side.requested(never.sha256), 5, what="fetch requests")
    side.send(p.Channel.CONTROL, p.Cancel(["cancelled"]))
    cancelled = wait_result(side, "cancelled")
    assert (cancelled.state, cancelled.retryable) == ("cancelled", False)
    wait_for(lambda: (s := side.status()) and s.running == [] and s.free_slots == 2, 5,
             what="the slot free again")

    assign(side, "stopped", inputs=(never,), seconds=0)
    wait_for(lambda: (s := side.status()) and s.running == ["stopped"], 5, what="fetching")
    agent.signal(signal.SIGTERM)
    assert agent.wait(15) == 0, agent.describe()
    stopped = wait_result(side, "stopped")
    assert (stopped.state, stopped.handed_back, stopped.error) == \
        ("failed", True, "handed back: agent stopping")


def test_malformed_transfer_messages_are_counted_and_do_not_stall_the_agent(
        cluster: Cluster, side: TransferSide, tmp_path: Path) -> None:
    agent = start(cluster, side, "w1", 1, "--spool", str(tmp_path / "spool"))
    pull = side.topics.worker("w1", p.Channel.PULL)
    download = side.topics.worker("w1", p.Channel.DOWNLOAD)
    request = json.loads(p.ChunkRequest("ab" * 32, 0, 10).encode())
    bad = [
        (pull, b"\xff garbage"),
        (pull, json.dumps({**request, "sha256": "../../etc/passwd"}).encode()),
        (pull, json.dumps({**request, "length": p.MAX_CHUNK_BYTES + 1}).encode()),
        (pull, json.dumps({**request, "offset": -1}).encode()),
        (pull, p.Chunk("ab" * 32, 0, 3, b"abc").encode()),  # a chunk is no request
        (download, b"no header line at all"),
        (download, b'{"v": 4, "type": "chunk"}\n'),
        (download, json.dumps({**request, "type": "chunk"}).encode() + b"\n"),
    ]
    repeats = 20
    for _ in range(repeats):
        for topic, payload in bad:
            side.client.publish(topic, payload, qos=0)
    # A well-formed chunk of a file nobody fetches is not an error: a late duplicate.
    side.client.publish(download, p.Chunk("ab" * 32, 0, 3, b"abc").encode(), qos=0)
    metric(side, "invalid_messages_total", repeats * len(bad))
    errors = wait_for(lambda: side.events(p.EventKind.ERROR), 5, what="error events")
    assert len(errors) < repeats * len(bad)  # reported within the rate, all counted
    assert {e.topic for e in errors} <= {pull, download}

    size = 300_000
    assign(side, "after", seconds=0, artifact_bytes=size)
    result = wait_result(side, "after")
    sha = result.artifacts[0]["sha256"]
    assert side.pull(sha, 0, p.MAX_CHUNK_BYTES).data == sleep_data(size)[:p.MAX_CHUNK_BYTES]
    agent.check_alive()


def test_a_drain_to_exit_hands_a_running_task_back_with_its_checkpoint(
        cluster: Cluster, side: TransferSide) -> None:
    """A drain with exit_when_idle (simctl's way to retire a worker) stops a task that saves
    checkpoints at once: its heartbeats listed its checkpoints while it ran; the hand-back
    result's one artifact is the checkpoint of the step it stopped at, served to pulls with
    its hash; the agent stays until the result is acknowledged, then exits 0."""
    agent = start(cluster, side)
    params = {"n_cells": 5, "steps": 1_000_000, "sample_every": 1_000}  # far longer than this test
    side.send(p.Channel.ASSIGN, p.Assignment("run-1", "long", 1, "lj", params, SEED,
                                             time.time(), checkpoint_every_s=0.2))

    def listed() -> p.CheckpointRef | None:
        beat = side.last_heartbeat()
        return beat.checkpoint_refs.get("long") if beat is not None else None

    first = wait_for(listed, 30, what="a checkpoint listed in a heartbeat")
    assert isinstance(first, p.CheckpointRef) and first.step > 0
    side.send(p.Channel.CONTROL, p.Drain(exit_when_idle=True))
    back = wait_result(side, "long", timeout=30)
    assert (back.state, back.handed_back, back.retryable) == ("failed", True, True)
    [ref] = back.artifact_refs
    step = back.metadata["checkpoint_step"]
    assert step >= first.step and ref.name == f"checkpoint-{step}.npz"
    assert back.error == f"handed back at step {step}: agent stopping"
    data = bytearray()
    while len(data) < ref.size:
        chunk = side.pull(ref.sha256, len(data), p.MAX_CHUNK_BYTES)
        assert chunk.error is None, chunk.error
        data += chunk.data
    assert hashlib.sha256(data).hexdigest() == ref.sha256
    time.sleep(1.0)
    assert agent.alive  # waiting for simctl to take the checkpoint
    side.ack(back)
    assert agent.wait(20) == 0, agent.describe()
