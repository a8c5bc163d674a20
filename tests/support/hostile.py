"""A seeded, structure-aware generator of hostile payloads for every message of the protocol.

Each payload starts from a valid message of the type the topic carries and is then bent the
way an attacker or a broken peer would: fields swapped for values of other types, numbers
beyond 64 bits or beyond the JSON integer-digits limit, ``1e999``, NaN, deep nesting, lone
surrogates, other runs' and tasks' ids, missing and extra fields, another type tag or
protocol version, truncated or non-UTF-8 bytes, and JSON that is not an object. Payloads are
raw bytes (``1e999`` and 5,000-digit integers cannot come out of ``json.dumps``). The same
seed gives the same payloads, so a failure is replayed from the seed a test prints.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from simproto import protocol as p

if TYPE_CHECKING:
    from simctl.scheduler import Scheduler

RAW_ODD_VALUES = (
    "null", "true", "false", "0", "-1", "2", "9223372036854775807", "9223372036854775808",
    "1180591620717411303424", "1e999", "-1e999", "NaN", "Infinity", "-0.0", "1e-400",
    "4" * 5000, '""', '"\\ud800"', '"\\u0000"', '"' + "x" * 70_000 + '"', "[]", "{}",
    '[["t", 1]]', '{"a": "b"}', '{"f64": "AAAAAAAAAAA="}', '{"f64": "!!"}',
    '{"f64": "AAAAAAAA+H8="}', "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
    '"online"', '"offline"', '"done"', '"failed"', '"rejected"', '"w1"', '"s1"',
    '"../../x"', '"sim/#"',
)
"""JSON texts (not Python values) a field may be replaced with."""


def valid_messages(run_id: str, task_ids: list[str], worker_id: str = "w1"
                   ) -> dict[str, Callable[[random.Random], p.Message]]:
    """Makers of a valid message per type tag, with ids a receiver may actually know."""

    def task(rng: random.Random) -> str:
        return rng.choice(task_ids)

    return {
        "status": lambda rng: p.WorkerStatus(worker_id, "online", "s1", 1.0, slots=1,
                                             free_slots=1, running=[task(rng)]),
        "heartbeat": lambda rng: p.Heartbeat(worker_id, "s1", 1, 1.0, 1, {task(rng): 0.5}),
        "result": lambda rng: p.Result(worker_id, "s1", run_id, task(rng), rng.choice([1, 2]),
                                       "done", 1.0, 2.0, {"x": 1.0}, {"t": [0.0, 1.0]}),
        "event": lambda rng: p.Event(worker_id, rng.choice(["error", "rejected"]), "d", 1.0,
                                     task_id=task(rng), attempt=1),
        "assign": lambda rng: p.Assignment(run_id, task(rng), 1, "sleep",
                                           {"seconds": 0.01}, 7, 1.0),
        "cancel": lambda rng: p.Cancel([task(rng)]),
        "ack": lambda rng: p.Ack([[task(rng), 1]]),
        "drain": lambda rng: p.Drain(exit_when_idle=False),
        "ping": lambda rng: p.Ping(1.0, "x"),
        "pong": lambda rng: p.Pong(worker_id, "online", "s1", 1.0, 1, 1, "0"),
        "run_progress": lambda rng: p.RunProgress(run_id, "n", "active", 2, 1, 0, 1, 0, 1.0),
        "broker_identity": lambda rng: p.BrokerIdentity("b1", 1.0),
    }


def _raw_object(fields: dict[str, str]) -> bytes:
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode()


def mutate(message: p.Message, rng: random.Random) -> bytes:
    """One hostile variant of ``message`` (sometimes the message itself, unchanged)."""
    fields = {k: json.dumps(v) for k, v in json.loads(message.encode()).items()}
    how = rng.random()
    if how < 0.55:  # change one to three fields, the envelope included
        for name in rng.sample(sorted(fields), min(len(fields), rng.choice([1, 1, 2, 3]))):
            fields[name] = rng.choice(RAW_ODD_VALUES)
    elif how < 0.65:
        for name in rng.sample(sorted(fields), rng.randint(1, len(fields))):
            del fields[name]
    elif how < 0.72:
        fields[rng.choice(["extra", "__class__", "v2", ""])] = rng.choice(RAW_ODD_VALUES)
    elif how < 0.78:
        fields["type"] = json.dumps(rng.choice(["status", "result", "ack", "x", ""]))
    elif how < 0.82:
        v = p.PROTOCOL_VERSION  # any version but this one, or this one misspelt
        fields["v"] = rng.choice([str(v - 1), str(v + 1), f'"{v}"', f"{v}.0", "null"])
    elif how < 0.92:
        raw = _raw_object(fields)
        cut = rng.randrange(len(raw) + 1)
        return raw[:cut] if rng.random() < 0.5 else raw[:cut] + bytes([rng.randrange(128, 256)])
    elif how < 0.97:
        return rng.choice(RAW_ODD_VALUES).encode()
    return _raw_object(fields)


def payloads(kind: str, count: int, seed: int, run_id: str = "run-1",
             task_ids: list[str] | None = None, worker_id: str = "w1",
             without: frozenset[str] = frozenset()) -> Iterator[bytes]:
    """``count`` hostile payloads for a topic that carries messages of type ``kind``; the
    types in ``without`` never appear (commands whose valid form is meant to be obeyed)."""
    rng = random.Random(f"{seed}-{kind}")
    make = valid_messages(run_id, task_ids or ["run-1.0", "run-1.1"], worker_id)
    others = sorted(set(make) - without)
    for _ in range(count):
        # Mostly the topic's own type; now and then another type on it.
        chosen = kind if rng.random() < 0.85 else rng.choice(others)
        yield mutate(make[chosen](rng), rng)


def feed(d: Scheduler, msg: mqtt.MQTTMessage) -> None:
    """One dispatcher pass over one raw message, as the dispatcher makes it."""
    d.decide([msg], time.monotonic())


WORKER_CHANNEL_OF = {p.WorkerStatus: p.Channel.STATUS, p.Heartbeat: p.Channel.HEARTBEAT,
                     p.Result: p.Channel.RESULT, p.Event: p.Channel.EVENT}
"""The worker channel each worker-to-simctl message travels on."""


def wire(topics: p.Topics, message: p.Message) -> mqtt.MQTTMessage:
    """``message`` as the dispatcher receives it: on its worker's topic, encoded."""
    channel = WORKER_CHANNEL_OF[type(message)]
    msg = mqtt.MQTTMessage(topic=topics.worker(message.worker_id, channel).encode())  # type: ignore[attr-defined]
    msg.payload = message.encode()
    return msg


def describe(seed: int) -> str:
    """The line a test prints so that a failure can be replayed."""
    return f"hostile payloads from seed {seed} (tests/support/hostile.py)"


__all__ = ["RAW_ODD_VALUES", "describe", "feed", "mutate", "payloads", "valid_messages",
           "wire"]
