"""The wire protocol: round trips, and rejection of everything malformed."""

from __future__ import annotations

import json

import pytest

import simproto as p
from simproto.connection import BrokerAddress


def test_assignment_round_trip() -> None:
    msg = p.Assignment(run_id="r1", task_id="r1.0", attempt=2, kind="sleep",
                       params={"seconds": 0.5}, seed=2**40, assigned_at=1.5)
    assert p.Assignment.decode(msg.encode()) == msg


def test_result_series_are_bit_exact_and_compact() -> None:
    values = [0.1, 1 / 3, 2.0**-1074, 1e308]
    msg = p.Result(worker_id="w1", session="s", run_id="r1", task_id="r1.0", attempt=1,
                   state="done", started_at=1.0, finished_at=2.0, observables={"x": values})
    decoded = p.Result.decode(msg.encode())
    assert decoded.observables["x"] == values
    energies = [-5.0 + i / 7.0 for i in range(1000)]  # full-precision floats, as kernels give
    assert len(json.dumps(p.encode_series(energies))) < 0.7 * len(json.dumps(energies))


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 4}', "no 'type'"),
        (b'{"v": 4, "type": "status"}', "expected a 'assign'"),
        (b'{"v": 4, "type": "assign", "run_id": "r"}', "missing field 'task_id'"),
        (b'{"v": 4, "type": "assign", "run_id": "r", "task_id": "t", "attempt": "1",'
         b' "kind": "sleep", "params": {}, "seed": 1, "assigned_at": 0}', "field 'attempt'"),
        (b'{"v": 4, "type": "assign", "run_id": "../#", "task_id": "t", "attempt": 1,'
         b' "kind": "sleep", "params": {}, "seed": 1, "assigned_at": 0}', "invalid run id"),
        (b'{"v": 4, "type": "assign", "run_id": "r", "task_id": "t", "attempt": 1,'
         b' "kind": "sleep", "params": {}, "seed": -1, "assigned_at": 0}', "seed"),
        (b'{"v": 4, "type": "assign", "run_id": "r", "task_id": "t",'
         b' "attempt": 9223372036854775808, "kind": "sleep", "params": {}, "seed": 1,'
         b' "assigned_at": 0}', "field 'attempt' must be int"),
        (b'{"v": 4, "type": "assign", "run_id": "r", "task_id": "t", "attempt": 1,'
         b' "kind": "sleep", "params": {}, "seed": 1, "assigned_at": 1180591620717411303424}',
         "field 'assigned_at' must be float"),
        (b"[" * 100_000, "not JSON"),
        (b" " * (p.MAX_CONTROL_BYTES + 1), "exceeds the limit"),
    ],
)
def test_malformed_assignments_raise_decode_error(payload: bytes, message: str) -> None:
    with pytest.raises(p.DecodeError, match=message):
        p.Assignment.decode(payload)


def test_other_protocol_version_is_named() -> None:
    with pytest.raises(p.VersionMismatch, match="protocol version 7"):
        p.Assignment.decode(b'{"v": 7, "type": "assign"}')


def test_nan_is_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        p.Heartbeat(worker_id="w", session="s", seq=1, ts=float("nan"), free_slots=1).encode()
    with pytest.raises(p.DecodeError):
        p.Heartbeat.decode(b'{"v":4,"type":"heartbeat","worker_id":"w","session":"s",'
                           b'"seq":1,"ts":NaN,"free_slots":1}')


def test_control_messages_by_type() -> None:
    assert isinstance(p.decode_control(p.Cancel(task_ids=["a"]).encode()), p.Cancel)
    assert p.decode_control(p.Ack(results=[["a", 1]]).encode()) == p.Ack(results=[["a", 1]])
    with pytest.raises(p.DecodeError, match="unknown control"):
        p.decode_control(b'{"v": 4, "type": "shutdown"}')


def test_topics_are_built_and_parsed() -> None:
    topics = p.Topics("lab/sim")
    topic = topics.worker("worker1", p.Channel.RESULT)
    assert topic == "lab/sim/workers/worker1/result"
    assert topics.parse_worker_topic(topic) == ("worker1", p.Channel.RESULT)
    for bad in ("lab/sim/workers/a/b/result", "other/workers/w/status", "lab/sim/workers/w/nope"):
        with pytest.raises(p.DecodeError):
            topics.parse_worker_topic(bad)
    for bad_prefix in ("", "a/#", "/a", "a/", "a/+/b"):
        with pytest.raises(ValueError):
            p.Topics(bad_prefix)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("broker", BrokerAddress("broker", 1883, False)),
        ("10.0.0.5:1884", BrokerAddress("10.0.0.5", 1884, False)),
        ("mqtt://h:1", BrokerAddress("h", 1, False)),
        ("mqtts://h", BrokerAddress("h", 8883, True)),
        ("mqtts://[::1]:8884", BrokerAddress("::1", 8884, True)),
    ],
)
def test_broker_addresses(text: str, expected: BrokerAddress) -> None:
    assert BrokerAddress.parse(text) == expected


@pytest.mark.parametrize("text", ["", "http://h", "h:0", "h:70000", "mqtt://h/x", "a b"])
def test_bad_broker_addresses(text: str) -> None:
    with pytest.raises(ValueError, match=r"broker|the port must be a number from 1 to 65535"):
        BrokerAddress.parse(text)


def test_a_broker_identity_of_an_older_protocol_is_still_read() -> None:
    """Its form has not changed since protocol 1: an upgraded simctl keeps the broker's id
    (a new one would make the runs submitted before look like another broker's). Other
    messages of an older version, and versions that never were, are refused."""
    for version in range(1, p.PROTOCOL_VERSION + 1):
        payload = json.dumps({"v": version, "type": "broker_identity", "broker_id": "b1",
                              "created_at": 1.0}).encode()
        assert p.BrokerIdentity.decode(payload).broker_id == "b1"
    for version in (0, p.PROTOCOL_VERSION + 1, "3", 3.0, True):
        payload = json.dumps({"v": version, "type": "broker_identity", "broker_id": "b1",
                              "created_at": 1.0}).encode()
        with pytest.raises(p.VersionMismatch):
            p.BrokerIdentity.decode(payload)
    older = json.dumps({"v": p.PROTOCOL_VERSION - 1, "type": "ping", "ts": 1.0,
                        "sender": "s"}).encode()
    with pytest.raises(p.VersionMismatch):
        p.Ping.decode(older)
