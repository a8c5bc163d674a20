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

import simkind
from simctl.ledger import Ledger
from simctl.scheduler import LEASE_CHECK_S, Connected, Decisions, Scheduler
from simctl.taskfile import parse_text
from simproto.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    Channel,
    DecodeError,
    Event,
    Heartbeat,
    Message,
    Result,
    Topics,
    WorkerStatus,
)
from tests.support import hostile

KINDS = simkind.installed().versions()
"""What the test workers advertise: every kind installed here, at its version."""


def make(tmp_path: Path, n: int = 3, max_attempts: int = 2,
         max_lost: int = 5) -> tuple[Scheduler, str]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    text = f"name: d\nseed: 1\nmax_attempts: {max_attempts}\nmax_lost: {max_lost}\n" \
           f"tasks:\n  - kind: sleep\n    replicas: {n}\n"
    run_id = ledger.create_run(parse_text(text, Path("d.yaml")))
    d = Scheduler(ledger, Topics("t"))
    d.decide([Connected()], tick())
    return d, run_id


_clock = [0.0]


def tick() -> float:
    """The time of the next pass: now, and at least one lease check after the last pass."""
    _clock[0] = max(time.monotonic(), _clock[0] + LEASE_CHECK_S)
    return _clock[0]


def status(worker: str, session: str = "s1", state: str = "online", slots: int = 1,
           hb: float = 0.2) -> WorkerStatus:
    return WorkerStatus(worker_id=worker, state=state, session=session, ts=time.time(),
                        slots=slots, free_slots=slots, heartbeat_s=hb, kinds=KINDS)


def result(d: Scheduler, task_id: str, worker: str, state: str = "done",
           retryable: bool = True, session: str = "s1", attempt: int | None = None,
           handed_back: bool = False) -> Result:
    lease = d.leases.get(task_id)
    if attempt is None:
        attempt = lease.attempt if lease else 1
    now = time.time()
    return Result(worker_id=worker, session=session, run_id=task_id.rsplit(".", 1)[0],
                  task_id=task_id, attempt=attempt, state=state, started_at=now,
                  finished_at=now, summary={"seconds": 0.0}, retryable=retryable,
                  error=None if state == "done" else "boom", handed_back=handed_back)


def decide(d: Scheduler, *messages: Message) -> Decisions:
    """One dispatcher pass over ``messages``, as they arrive over the wire."""
    return d.decide([hostile.wire(d.topics, m) for m in messages], tick())


def pass_(d: Scheduler, *messages: Message) -> list[Assignment]:
    """One dispatcher pass over ``messages``; the assignments it decided."""
    return [assignment for _, assignment in decide(d, *messages).assignments]


def states(d: Scheduler, run_id: str) -> list[str]:
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
    nxt = decide(d, result(d, f"{run_id}.0", "w1"))
    assert [a.task_id for _, a in nxt.assignments] == [f"{run_id}.1"]
    assert nxt.acks == [("w1", [f"{run_id}.0", 1])]


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


def test_a_later_status_with_a_free_slot_ends_the_rejection_backoff(tmp_path: Path) -> None:
    """With another ledger's dispatcher filling the same worker, rejections are frequent; a
    status that reports a free slot afterwards makes the worker assignable at once."""
    d, _ = make(tmp_path, n=2)
    [a] = pass_(d, status("w1"))
    rejected = Event(worker_id="w1", kind="rejected", detail="no free slot", ts=time.time(),
                     task_id=a.task_id, attempt=a.attempt)
    assert pass_(d, rejected) == []  # blocked for REJECTION_BACKOFF_S
    [again] = pass_(d, status("w1"))  # free_slots 1: the other ledger's task has finished
    assert again.task_id in (a.task_id, f"{a.task_id[:-1]}1")


@pytest.mark.parametrize("how", ["offline", "new-session", "silence", "not-listed",
                                 "handed-back"])
def test_lost_worker_returns_the_task_without_using_an_attempt(tmp_path: Path,
                                                                how: str) -> None:
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
    elif how == "not-listed":
        lease.assigned_at -= 1.0
        pass_(d, Heartbeat(worker_id="w1", session="s1", seq=1, ts=time.time(), free_slots=1,
                           progress={}))
    else:
        pass_(d, result(d, a.task_id, "w1", state="failed", handed_back=True))
    row = d.ledger.task_rows(run_id)[0]
    if how == "offline":  # no online worker left: it waits
        assert (row["state"], row["tries"], row["lost"]) == ("pending", 0, 1)
    else:  # w1 (still or again online) gets it back in the same pass, as attempt 2
        assert (row["state"], row["attempts"], row["tries"], row["lost"]) == (
            "assigned", 2, 1, 1)
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


def test_lost_workers_are_capped_by_max_lost(tmp_path: Path) -> None:
    """A task that kills every agent it lands on (out of memory, say) fails after max_lost
    losses, however many attempts it has left."""
    d, run_id = make(tmp_path, n=1, max_attempts=1, max_lost=3)
    for session in ("s1", "s2", "s3"):
        pass_(d, status("w1", session=session))
    pass_(d, status("w1", state="offline", session="s3"))
    row = d.ledger.task_rows(run_id)[0]
    assert (row["state"], row["lost"], row["tries"]) == ("failed", 3, 0)
    assert row["error"].startswith("lost 3 workers; last: worker w1 went offline")
    assert d.ledger.run(run_id).state == "failed"


def test_silent_worker_gets_no_new_task(tmp_path: Path) -> None:
    """Liveness does not rest on the Last Will: a worker whose status still says online but
    that has not been heard from for a lease gets nothing, and its lost task burns no try."""
    d, run_id = make(tmp_path, n=2, max_attempts=1)
    assert len(pass_(d, status("w1", slots=2))) == 2
    d.workers["w1"].heard_at -= 1.0  # silent for 5 heartbeats of 0.2 s; no Will arrived
    for lease in d.leases.values():
        lease.renewed_at -= 1.0
    assert pass_(d) == []
    assert states(d, run_id) == ["pending", "pending"]
    assert [r["tries"] for r in d.ledger.task_rows(run_id)] == [0, 0]
    [c, e] = pass_(d, Heartbeat(worker_id="w1", session="s1", seq=2, ts=time.time(),
                                free_slots=2, progress={}))  # heard again: assignable again
    assert {c.attempt, e.attempt} == {2}


def test_retained_status_counts_as_heard_when_it_was_published(tmp_path: Path) -> None:
    d, _ = make(tmp_path, n=1)
    now = time.monotonic()
    old = WorkerStatus(worker_id="w1", state="online", session="s1", ts=time.time() - 60,
                       slots=1, free_slots=1, heartbeat_s=0.2, kinds=KINDS)
    with d.ledger.batch():
        d.on_status(old, now, live=False)
    assert d.workers["w1"].free(now) == 0  # a minute-old copy: not heard from
    with d.ledger.batch():
        d.on_status(status("w1"), now, live=False)
    assert d.workers["w1"].free(now) == 1


def test_status_of_a_replaced_session_is_stale(tmp_path: Path) -> None:
    """A frozen agent's late Last Will (or its status after it comes back) names an older
    session than its replacement's: it takes nothing from the replacement."""
    d, run_id = make(tmp_path, n=1)
    old = WorkerStatus(worker_id="w1", state="online", session="old", ts=time.time(),
                       slots=1, free_slots=1, heartbeat_s=0.2, started_at=100.0, kinds=KINDS)
    new = WorkerStatus(worker_id="w1", state="online", session="new", ts=time.time(),
                       slots=1, free_slots=1, heartbeat_s=0.2, started_at=200.0, kinds=KINDS)
    pass_(d, old)
    [a] = pass_(d, new)  # replaced: w1's task now runs under the new session
    will = WorkerStatus(worker_id="w1", state="offline", session="old", ts=time.time(),
                        started_at=100.0)
    beat = Heartbeat(worker_id="w1", session="old", seq=9, ts=time.time(), free_slots=1)
    assert pass_(d, will, beat) == []
    assert (d.workers["w1"].state, d.leases[a.task_id].session) == ("online", "new")
    assert d.ledger.rejections()["stale session"]["count"] == 2
    assert states(d, run_id) == ["assigned"]


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
    d.decide([msg], tick())
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
        hostile.feed(d, msg)
    assert handled > 500 and refused > 500, (handled, refused)
    assert "could not be processed" not in d.ledger.rejections()


def test_results_not_assigned_to_the_sender_are_rejected(tmp_path: Path) -> None:
    """Only the worker and session the attempts table names for an attempt can store its
    result: forged results (w2 for w1's task, for a task never assigned, for a done task, or
    w1 under another session) are counted as rejected, and the true result still wins."""
    d, run_id = make(tmp_path, n=3)
    [a] = pass_(d, status("w1"))
    never = next(t for t in (f"{run_id}.1", f"{run_id}.2") if t != a.task_id)
    pass_(d, status("w2", slots=0))
    forged = [
        result(d, a.task_id, "w2"),
        result(d, never, "w2", attempt=1),
        result(d, a.task_id, "w1", session="s-forged"),
        result(d, a.task_id, "w1", attempt=7),
    ]
    assert pass_(d, *forged) == []
    assert states(d, run_id).count("done") == 0
    rejected = d.ledger.rejections()["not assigned to the sender"]
    assert rejected["count"] == 4, rejected
    pass_(d, result(d, a.task_id, "w1"))
    pass_(d, result(d, a.task_id, "w2"))  # after it is done, still not a duplicate: refused
    info = d.ledger.run(run_id)
    assert (info.done, info.duplicates) == (1, 0)
    assert d.ledger.task_rows(run_id)[[r["task_id"] for r in d.ledger.task_rows(run_id)]
                                       .index(a.task_id)]["worker_id"] == "w1"
    assert d.ledger.rejections()["not assigned to the sender"]["count"] == 5


def test_result_of_another_ledger_is_counted_quietly(tmp_path: Path) -> None:
    d, _ = make(tmp_path, n=1)
    pass_(d, status("w1"))
    other = Result(worker_id="w1", session="s1", run_id="20990101-000000-abcdef",
                   task_id="20990101-000000-abcdef.0", attempt=1, state="done",
                   started_at=0.0, finished_at=1.0)
    decided = decide(d, other)
    assert decided.assignments == [] and d.ledger.rejections()["unknown task"]["count"] == 1
    assert decided.acks == []  # the other ledger's dispatcher acknowledges it, not this one


def test_a_handler_that_raises_is_rolled_back_counted_and_passed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The last line of defence: whatever a handler raises on one message, that message's
    writes are undone, it is counted, memory is rebuilt from the ledger, and the rest of the
    pass goes on (a raise would come back at every --resume: simctl acknowledges a message
    only after its pass)."""
    d, run_id = make(tmp_path, n=2)
    pass_(d, status("w1", slots=2))
    assert len(d.leases) == 2

    def broken(event: Event, now: float) -> None:
        d.ledger.add_duplicates(run_id, 1000)  # a write that must be undone
        raise RuntimeError("handler bug")

    monkeypatch.setattr(d, "on_event", broken)
    bad = hostile.wire(d.topics, Event(worker_id="w1", kind="error", detail="x", ts=1.0))
    d.decide([bad, hostile.wire(d.topics, result(d, f"{run_id}.0", "w1"))], tick())
    assert d.ledger.run(run_id).duplicates == 0
    assert d.ledger.rejections()["could not be processed"]["count"] == 1
    assert states(d, run_id) == ["done", "assigned"]
    assert list(d.leases) == [f"{run_id}.1"]  # rebuilt from the ledger
