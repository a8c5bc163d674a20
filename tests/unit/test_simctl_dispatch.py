"""The dispatcher's decisions, fed real protocol messages directly (no broker in between).

What goes over the wire is covered by tests/integration and tests/fault; here each rule of
docs/cli.md "Dispatch" is checked on the ledger it writes.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simctl.dispatcher import Dispatcher
from simctl.ledger import Ledger
from simctl.taskfile import parse_text
from simproto.connection import BrokerAddress, ConnectionSettings
from simproto.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    Channel,
    DecodeError,
    Event,
    Heartbeat,
    Result,
    WorkerStatus,
)


def make(tmp_path: Path, n: int = 3, max_attempts: int = 2) -> tuple[Dispatcher, str]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    text = f"name: d\nseed: 1\nmax_attempts: {max_attempts}\ntasks:\n  - kind: sleep\n" \
           f"    replicas: {n}\n"
    run_id = ledger.create_run(parse_text(text, Path("d.yaml")))
    d = Dispatcher(ledger, ConnectionSettings(BrokerAddress.parse("127.0.0.1:1"), "t"))
    d.connected = True
    d.refresh_runs(time.monotonic())
    return d, run_id


def status(worker: str, session: str = "s1", state: str = "online", slots: int = 1,
           hb: float = 0.2) -> WorkerStatus:
    return WorkerStatus(worker_id=worker, state=state, session=session, ts=time.time(),
                        slots=slots, free_slots=slots, heartbeat_s=hb)


def result(d: Dispatcher, task_id: str, worker: str, state: str = "done",
           retryable: bool = True) -> Result:
    lease = d.leases.get(task_id)
    attempt = lease.attempt if lease else 1
    now = time.time()
    return Result(worker_id=worker, session="s1", run_id=task_id.rsplit(".", 1)[0],
                  task_id=task_id, attempt=attempt, state=state, started_at=now,
                  finished_at=now, summary={"seconds": 0.0}, retryable=retryable,
                  error=None if state == "done" else "boom")


def pass_(d: Dispatcher, *messages: object) -> list[Assignment]:
    """One dispatcher pass over ``messages``; returns the assignments it decided."""
    now = time.monotonic()
    with d.ledger.batch():
        for m in messages:
            handler = {WorkerStatus: d.on_status, Heartbeat: d.on_heartbeat,
                       Result: d.on_result, Event: d.on_event}[type(m)]
            handler(m, now)
        d.expire_leases(now)
        d.assign(now)
        d.finish_runs()
    out = [Assignment.decode(p) for _, p in d._outbox]
    d._outbox.clear()
    return out


def states(d: Dispatcher, run_id: str) -> list[str]:
    return [r["state"] for r in d.ledger.task_rows(run_id)]


def test_assigns_only_free_slots_of_online_workers(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=5)
    assert pass_(d, status("w1", slots=2), status("w2", state="draining"),
                 status("w3", state="offline")) != []
    assert {a.task_id for a in pass_(d)} == set()  # w1 full, others not online
    assert states(d, run_id).count("assigned") == 2
    rows = d.ledger.task_rows(run_id)
    assert {r["worker_id"] for r in rows if r["state"] == "assigned"} == {"w1"}
    assert d.topics.worker("w1", Channel.ASSIGN).endswith("/w1/assign")


def test_result_frees_the_slot_and_next_task_goes_out_in_the_same_pass(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=3)
    first = pass_(d, status("w1"))
    assert [a.task_id for a in first] == [f"{run_id}.0"]
    assert first[0].seed == d.ledger.task_rows(run_id)[0]["seed"]
    nxt = pass_(d, result(d, f"{run_id}.0", "w1"))
    assert [a.task_id for a in nxt] == [f"{run_id}.1"]
    assert d._acks == {"w1": [[f"{run_id}.0", 1]]}


def test_rejection_returns_the_task_without_using_an_attempt(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=1, max_attempts=1)
    [a] = pass_(d, status("w1"))
    pass_(d, Event(worker_id="w1", kind="rejected", detail="no free slot", ts=time.time(),
                   task_id=a.task_id, attempt=a.attempt))
    assert states(d, run_id) == ["pending"]  # and w1 is blocked briefly
    d.workers["w1"].blocked_until = 0.0
    [again] = pass_(d)
    assert again.attempt == 2  # a new attempt number, but the single try is still there
    pass_(d, result(d, again.task_id, "w1"))
    assert states(d, run_id) == ["done"]
    assert [x["outcome"] for x in d.ledger.attempts(again.task_id)] == ["rejected", "done"]


@pytest.mark.parametrize("how", ["offline", "new-session", "silence", "not-listed"])
def test_lost_lease_goes_back_to_pending_and_counts(tmp_path: Path, how: str) -> None:
    d, run_id = make(tmp_path, n=1, max_attempts=2)
    [a] = pass_(d, status("w1"))
    lease = d.leases[a.task_id]
    if how == "offline":
        pass_(d, status("w1", state="offline"))
    elif how == "new-session":
        pass_(d, status("w1", session="s2"))
    elif how == "silence":
        lease.renewed_at -= 1.0  # more than 3 heartbeats of 0.2 s
        pass_(d)
    else:
        lease.assigned_at -= 1.0
        pass_(d, Heartbeat(worker_id="w1", session="s1", seq=1, ts=time.time(), free_slots=1,
                           progress={}))
    row = d.ledger.task_rows(run_id)[0]
    if how == "offline":  # no online worker left: it waits
        assert (row["state"], row["tries"]) == ("pending", 1)
    else:  # w1 (still or again online) gets it back in the same pass, as attempt 2
        assert (row["state"], row["attempts"], row["tries"]) == ("assigned", 2, 2)
    assert d.ledger.attempts(a.task_id)[0]["outcome"] == "lost"


def test_heartbeat_listing_the_task_renews_its_lease(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=1)
    [a] = pass_(d, status("w1"))
    lease = d.leases[a.task_id]
    lease.renewed_at -= 0.5
    lease.assigned_at -= 1.0
    pass_(d, Heartbeat(worker_id="w1", session="s1", seq=1, ts=time.time(), free_slots=0,
                       progress={a.task_id: 0.5}))
    assert states(d, run_id) == ["assigned"]


def test_attempts_are_capped(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=1, max_attempts=2)
    for session in ("s1", "s2"):
        pass_(d, status("w1", session=session))
    pass_(d, status("w1", state="offline", session="s2"))
    row = d.ledger.task_rows(run_id)[0]
    assert row["state"] == "failed" and "gave up after 2 attempts" in row["error"]
    assert d.ledger.run(run_id).state == "failed"


def test_retryable_failure_retries_then_fails(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=1, max_attempts=2)
    [a] = pass_(d, status("w1"))
    [b] = pass_(d, result(d, a.task_id, "w1", state="failed", retryable=True))
    assert b.attempt == 2
    pass_(d, result(d, b.task_id, "w1", state="failed", retryable=True))
    assert states(d, run_id) == ["failed"]


def test_first_result_wins_and_late_ones_are_duplicates(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=1)
    [a] = pass_(d, status("w1"), status("w2"))
    assert d.leases[a.task_id].worker_id == "w1"
    late = result(d, a.task_id, "w1")
    # w1 vanishes; in the same pass the task moves to w2 as attempt 2.
    [b] = pass_(d, status("w1", state="offline"))
    assert (d.leases[b.task_id].worker_id, b.attempt) == ("w2", 2)
    from_w2 = result(d, b.task_id, "w2")
    pass_(d, late)  # w1's result arrives after all: it is conclusive, so it wins
    pass_(d, from_w2)  # and w2's is a duplicate
    info = d.ledger.run(run_id)
    assert (info.state, info.done, info.duplicates) == ("done", 1, 1)
    assert d.ledger.task_rows(run_id)[0]["worker_id"] == "w1"


def test_message_from_another_worker_topic_is_refused(tmp_path: Path) -> None:
    d, _ = make(tmp_path, n=1)
    msg = mqtt.MQTTMessage(topic=d.topics.worker("w2", Channel.STATUS).encode())
    msg.payload = status("w1").encode()
    with d.ledger.batch():
        d.handle(msg, time.monotonic())
    assert "w1" not in d.workers and "w2" not in d.workers


def test_result_reported_finished_but_never_received_is_given_up(tmp_path: Path) -> None:
    d, _ = make(tmp_path, n=1)
    [a] = pass_(d, status("w1"))

    def heartbeat(progress: float) -> Heartbeat:
        return Heartbeat(worker_id="w1", session="s1", seq=1, ts=time.time(), free_slots=1,
                         progress={a.task_id: progress})

    pass_(d, heartbeat(0.5), heartbeat(1.0))
    assert d.leases[a.task_id].finished_seen_at is not None
    d.leases[a.task_id].finished_seen_at -= 3.0  # more than 10 heartbeats of 0.2 s
    [again] = pass_(d, heartbeat(1.0))
    assert again.task_id == a.task_id and again.attempt == 2
    assert "result never arrived" in d.ledger.attempts(a.task_id)[0]["detail"]


def test_result_naming_another_run_is_ignored(tmp_path: Path) -> None:
    d, run_id = make(tmp_path, n=2)
    [a] = pass_(d, status("w1"))
    pending = next(t for t in (f"{run_id}.0", f"{run_id}.1") if t != a.task_id)
    for task_id, other_run in ((a.task_id, "no-such-run"), (pending, "no-such-run")):
        stray = Result(worker_id="w1", session="s1", run_id=other_run, task_id=task_id,
                       attempt=1, state="done", started_at=0.0, finished_at=1.0)
        assert pass_(d, stray) == []
    assert states(d, run_id).count("done") == 0
    assert d.ledger.run(run_id).duplicates == 0


def test_hostile_well_formed_messages_never_raise(tmp_path: Path) -> None:
    """Valid envelopes whose fields are swapped for odd values (other types, huge numbers,
    other runs' and tasks' ids): each is either refused as malformed or handled, and the
    dispatcher never raises, since a message that raised would come back after a restart
    (it is acknowledged only after its pass) and stop every dispatcher in turn."""
    d, run_id = make(tmp_path, n=5)
    tasks = [f"{run_id}.{i}" for i in range(5)]
    odd = [None, True, 0, -1, 2, 2**63, 2**70, -1e308, "", "w1", "s2", "offline", "done",
           "rejected", [], [["t", 1]], {}, {"a": "b"}, {"f64": "AAAAAAAAAAA="}, run_id, *tasks]
    rng = random.Random(20261127)

    def fields(channel: str, worker: str) -> dict[str, object]:
        task = rng.choice(tasks)
        return {
            "status": {"worker_id": worker, "state": "online", "session": "s1", "ts": 1.0,
                       "slots": 1, "free_slots": 1, "heartbeat_s": 0.2},
            "heartbeat": {"worker_id": worker, "session": "s1", "seq": 1, "ts": 1.0,
                          "free_slots": 0, "progress": {task: 1.0}},
            "result": {"worker_id": worker, "session": "s1", "run_id": run_id, "task_id": task,
                       "attempt": rng.choice([1, 2, 0, -1]), "state": "done",
                       "started_at": 1.0, "finished_at": 2.0, "summary": {"seconds": 0.0},
                       "observables": {"t": {"f64": "AAAAAAAAAAAAAAAAAAAAAA=="}}},
            "event": {"worker_id": worker, "kind": "rejected", "detail": "x", "ts": 1.0,
                      "task_id": task, "attempt": 1},
        }[channel]

    handled = refused = 0
    for _ in range(3000):
        worker, channel = rng.choice(["w1", "w2"]), rng.choice(["status", "heartbeat",
                                                                 "result", "event"])
        obj = fields(channel, worker)
        for name in rng.sample(sorted(obj), rng.choice([0, 1, 1, 2])):
            obj[name] = rng.choice(odd)
        msg = mqtt.MQTTMessage(topic=d.topics.worker(worker, Channel(channel)).encode())
        msg.payload = json.dumps({"v": PROTOCOL_VERSION, "type": channel, **obj}).encode()
        try:
            {"status": WorkerStatus, "heartbeat": Heartbeat, "result": Result,
             "event": Event}[channel].decode(msg.payload)
            handled += 1
        except DecodeError:
            refused += 1
        now = time.monotonic()
        with d.ledger.batch():
            d.handle(msg, now)
            d.expire_leases(now)
            d.assign(now)
            d.finish_runs()
        d._outbox.clear()
    assert handled > 500 and refused > 500, (handled, refused)
