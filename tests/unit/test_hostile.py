"""Hostile payloads against every decoder and every dispatcher handler, in process.

The same generator drives a real agent over a real broker (tests/integration/test_agent.py)
and a real simctl at --resume (tests/fault/test_fault_dispatcher.py); here the decoders and
the dispatcher's handlers take 10,000 payloads each in a few seconds, with nothing in
between to blur a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import simkind
from simctl.ledger import Ledger
from simctl.scheduler import Connected, Scheduler
from simctl.taskfile import parse_text
from simproto import protocol as p
from tests.support import hostile

SEED = 20261201
PER_HANDLER = 10_000

DECODERS: dict[str, tuple[str, Callable[[bytes], Any]]] = {
    "status": ("status", p.WorkerStatus.decode),
    "heartbeat": ("heartbeat", p.Heartbeat.decode),
    "result": ("result", p.Result.decode),
    "event": ("event", p.Event.decode),
    "assign": ("assign", p.Assignment.decode),
    "control": ("ack", p.decode_control),
    "ping": ("ping", p.Ping.decode),
    "pong": ("pong", p.Pong.decode),
    "run_progress": ("run_progress", p.RunProgress.decode),
    "broker_identity": ("broker_identity", p.BrokerIdentity.decode),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoding_raises_nothing_but_decode_error(name: str) -> None:
    print(hostile.describe(SEED))
    kind, decode = DECODERS[name]
    accepted = refused = 0
    for payload in hostile.payloads(kind, PER_HANDLER, SEED):
        try:
            decode(payload)
            accepted += 1
        except p.DecodeError:
            refused += 1
    # Both sides of the check were exercised: some variants stay valid, most do not.
    assert accepted > 100 and refused > 5000, (accepted, refused)


def test_every_decode_entry_point_is_guarded() -> None:
    """The contract rests on one guard (only_decode_errors) around each entry point, not on
    every parser catching the right exceptions: a new entry point must be wrapped too."""
    entry_points = [p.decode_control, p.decode_worker,
                    *(cls.decode for cls in (p.WorkerStatus, p.Result, p.BrokerIdentity))]
    for decode in entry_points:
        assert getattr(decode, "__wrapped__", None) is not None, decode
    assert isinstance(p.WorkerMessage, type)  # a message type, not a wrapped function


def test_the_integer_digits_limit_is_a_decode_error() -> None:
    """The case that stopped `simctl run` for good: JSON the json module refuses with a
    ValueError that is not a JSONDecodeError."""
    payload = b'{"v":4,"type":"heartbeat","worker_id":"w1","session":"s","seq":' + b"4" * 5000
    with pytest.raises(p.DecodeError, match="not JSON"):
        p.Heartbeat.decode(payload + b',"ts":1,"free_slots":0}')


def dispatcher(tmp_path: Path, n: int) -> tuple[Scheduler, str]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    text = f"name: h\nseed: 1\ntasks:\n  - kind: sleep\n    replicas: {n}\n"
    run_id = ledger.create_run(parse_text(text, Path("h.yaml")))
    d = Scheduler(ledger, p.Topics("h"))
    d.decide([Connected()], time.monotonic())
    return d, run_id


def test_dispatcher_handlers_survive_hostile_messages(tmp_path: Path) -> None:
    """10,000 hostile messages per worker channel (retained ones among the statuses), fed
    to the dispatcher as it handles them in a pass: none raises, and the run then completes
    normally with the true results."""
    print(hostile.describe(SEED))
    d, run_id = dispatcher(tmp_path, n=4)
    tasks = [f"{run_id}.{i}" for i in range(4)]
    started = time.monotonic()
    for channel in (p.Channel.STATUS, p.Channel.HEARTBEAT, p.Channel.RESULT, p.Channel.EVENT):
        for i, payload in enumerate(hostile.payloads(channel.value, PER_HANDLER, SEED, run_id,
                                                     tasks, worker_id="w1")):
            msg = mqtt.MQTTMessage(topic=d.topics.worker("w1", channel).encode())
            msg.payload = payload
            msg.retain = channel is p.Channel.STATUS and i % 3 == 0
            hostile.feed(d, msg)
    assert time.monotonic() - started < 60
    rejected = d.ledger.rejections()
    assert rejected["malformed"]["count"] > 20_000, rejected
    assert "could not be processed" not in rejected, rejected["could not be processed"]

    # Whatever the fuzz did to the tasks, the honest worker finishes what is left.
    honest = p.WorkerStatus("w2", "online", "honest", time.time(), slots=4, free_slots=4,
                            heartbeat_s=0.2, started_at=time.time(),
                            kinds=simkind.installed().versions())
    for _ in range(20):
        with d.ledger.batch():  # what the fuzzed worker holds, whatever its session, is lost
            for lease in [x for x in d.leases.values() if x.worker_id == "w1"]:
                d.lose(lease, "fuzzed worker dropped", time.monotonic())
        done = [hostile.wire(d.topics, p.Result("w2", "honest", run_id, lease.task.task_id,
                                                lease.attempt, "done", 1.0, 2.0))
                for lease in d.leases.values() if lease.worker_id == "w2"]
        d.decide([hostile.wire(d.topics, honest), *done], time.monotonic())
        if run_id in d.finished_runs:
            break
    info = d.ledger.run(run_id)
    assert info.done + info.failed == 4, info
