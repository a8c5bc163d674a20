"""The worker agent as a real subprocess against a real Mosquitto, with a test client as simctl.

:class:`FakeDispatcher` is a plain MQTT client (built with :mod:`simproto`) that plays the
dispatcher's part of the runtime contract: it assigns, cancels, acknowledges and pings, and
records everything the agents publish. Agents run with a 0.2 s heartbeat (tests/support/procs.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import simctl.local_broker
import simkind
import simproto as p
from simctl.local_broker import LocalBroker, free_port
from simproto.connection import BrokerAddress, ConnectionSettings, connect, make_client
from tests.support import hostile, procs
from tests.support.procs import Cluster, Proc
from tests.support.waiting import WaitTimeout, wait_for

WATCHED = (p.Channel.STATUS, p.Channel.HEARTBEAT, p.Channel.RESULT, p.Channel.EVENT)
"""The channels a worker publishes on, which the test dispatcher subscribes to."""


class FakeDispatcher:
    """simctl's side of the protocol, by hand: publishes what a test says, records the rest."""

    def __init__(self, address: str, prefix: str, tls_ca: Path | None = None) -> None:
        self.settings = ConnectionSettings(BrokerAddress.parse(address), prefix, keepalive_s=5,
                                           tls_ca=tls_ca)
        self.topics = self.settings.topics
        self.client_id = f"test-dispatcher-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self.seen: list[tuple[str, p.Channel, Any]] = []
        self.pongs: list[tuple[p.Pong, bytes | None]] = []
        self.arrivals: list[tuple[float, p.Result]] = []
        self.client = make_client(self.settings, self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        # Persistent like the real dispatcher, so results sent while it reconnects after a
        # broker restart wait for it in the broker. Resumed from the first connect like the
        # dispatcher's: Mosquitto 2.0 does not save a session begun with clean start.
        connect(self.client, self.settings, session_expiry_s=600, resume_session=True)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(self.topics.all_workers(ch), 1) for ch in WATCHED]
                             + [(self.topics.replies(self.client_id), 0)])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.replies(self.client_id):
            correlation = getattr(msg.properties, "CorrelationData", None)
            with self._lock:
                self.pongs.append((p.Pong.decode(bytes(msg.payload)), correlation))
            return
        message = p.decode_worker(self.topics, msg.topic, bytes(msg.payload))  # errors fail
        worker, channel, decoded = message.worker_id, message.channel, message.message
        with self._lock:
            self.seen.append((worker, channel, decoded))
            if isinstance(decoded, p.Result):
                self.arrivals.append((time.monotonic(), decoded))

    def of(self, channel: p.Channel, worker: str = "w1") -> list[Any]:
        with self._lock:
            return [m for w, ch, m in self.seen if w == worker and ch is channel]

    def status(self, worker: str = "w1") -> p.WorkerStatus | None:
        statuses = self.of(p.Channel.STATUS, worker)
        return statuses[-1] if statuses else None

    def results(self, task_id: str, worker: str = "w1") -> list[p.Result]:
        return [r for r in self.of(p.Channel.RESULT, worker) if r.task_id == task_id]

    def events(self, kind: p.EventKind, worker: str = "w1") -> list[p.Event]:
        return [e for e in self.of(p.Channel.EVENT, worker) if e.kind == kind.value]

    def last_heartbeat(self, worker: str = "w1") -> p.Heartbeat | None:
        beats = self.of(p.Channel.HEARTBEAT, worker)
        return beats[-1] if beats else None

    def heartbeat_after(self, when: float, worker: str = "w1") -> p.Heartbeat | None:
        """The latest heartbeat sent after ``when`` (epoch seconds), once there is one."""
        beat = self.last_heartbeat(worker)
        return beat if beat is not None and beat.ts > when else None

    # ------------------------------------------------------------------ sending

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        self.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(5)

    def send(self, channel: p.Channel, message: p.Message, worker: str = "w1") -> None:
        self.publish(self.topics.worker(worker, channel), message.encode())

    def assign(self, task_id: str, worker: str = "w1", attempt: int = 1, kind: str = "sleep",
               **params: Any) -> p.Assignment:
        assignment = p.Assignment("run-1", task_id, attempt, kind, params, 7, time.time())
        self.send(p.Channel.ASSIGN, assignment, worker)
        return assignment

    def ack(self, *results: p.Result, worker: str = "w1") -> None:
        self.send(p.Channel.CONTROL, p.Ack([[r.task_id, r.attempt] for r in results]), worker)

    def ping(self) -> bytes:
        """Send a Ping asking for answers on this client's replies topic; the correlation."""
        correlation = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topics.replies(self.client_id)
        props.CorrelationData = correlation
        self.publish(self.topics.ping, p.Ping(time.time(), self.client_id).encode(), props)
        return correlation

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def dispatcher(broker: LocalBroker, topic_prefix: str) -> Iterator[FakeDispatcher]:
    instance = FakeDispatcher(broker.address, topic_prefix)
    try:
        wait_for(instance.client.is_connected, 10, what="test dispatcher connected")
        yield instance
    finally:
        instance.close()


def start(cluster: Cluster, dispatcher: FakeDispatcher, worker: str = "w1", slots: int = 1,
          *extra: str) -> Proc:
    """Start an agent and wait until its own online status arrives (not an older one)."""
    before = dispatcher.status(worker)
    agent = cluster.start_agent(worker, slots, *extra)

    def online() -> bool:
        agent.check_alive()
        status = dispatcher.status(worker)
        return (status is not None and status.state == "online"
                and (before is None or status.session != before.session))

    wait_for(online, procs.AGENT_START_TIMEOUT_S, what=f"{worker} online")
    return agent


def http_get(dispatcher: FakeDispatcher, path: str, worker: str = "w1") -> bytes:
    return procs.agent_http_get(dispatcher.status(worker), path)


def metrics_with(dispatcher: FakeDispatcher, line: str) -> str:
    """GET /metrics until it contains ``line`` (the snapshot may lag briefly); the text."""
    text = wait_for(lambda: line in (t := http_get(dispatcher, "/metrics").decode()) and t, 5,
                    interval=0.05, what=f"/metrics showing {line}")
    return str(text)


def child_pid(dispatcher: FakeDispatcher, worker: str = "w1", slot: int = 0) -> int | None:
    """The pid of a slot's child, from the agent's GET /ping."""
    children = json.loads(http_get(dispatcher, "/ping", worker))["children"]
    return next((c["pid"] for c in children if c["slot"] == slot), None)


def resent_after(dispatcher: FakeDispatcher, task_id: str) -> float:
    """Seconds between the first two copies of a task's result, as received."""
    times = [t for t, r in dispatcher.arrivals if r.task_id == task_id]
    return times[1] - times[0]


def wait_result(dispatcher: FakeDispatcher, task_id: str, count: int = 1,
                timeout: float = 15) -> p.Result:
    results = wait_for(lambda: (r := dispatcher.results(task_id)) and len(r) >= count and r,
                       timeout, what=f"{count} result(s) of {task_id}")
    return results[-1]


# ====================================================================== tests


def test_status_result_ack_heartbeat_ping_and_http(cluster: Cluster,
                                                   dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 2)
    status = dispatcher.status()
    assert status is not None
    assert (status.slots, status.free_slots, status.running, status.heartbeat_s) == (2, 2, [], 0.2)
    assert status.http_port and status.session and status.host and status.version
    assert f"http listening on {status.http_port}" in agent.log()

    # Ping with MQTT v5 response topic and correlation data.
    correlation = dispatcher.ping()
    pong, _ = wait_for(lambda: next((x for x in dispatcher.pongs if x[1] == correlation),
                                         None), 5, what="pong")
    assert (pong.worker_id, pong.state, pong.slots, pong.session) == \
        ("w1", "online", 2, status.session)

    # A task: running in the status and with progress in heartbeats, then a result.
    sent = dispatcher.assign("t1", seconds=1.0)
    wait_for(lambda: (s := dispatcher.status()) and s.running == ["t1"], 5, what="t1 running")
    # The kernel's progress reaches the heartbeats while it runs.
    wait_for(lambda: (b := dispatcher.last_heartbeat()) and 0 < b.progress.get("t1", 0) < 1, 5,
             what="heartbeat with partial progress of t1")
    running = json.loads(http_get(dispatcher, "/ping"))
    assert running["status"] == "online" and running["worker_id"] == "w1"
    assert running["current_task"] == "t1" and running["running_tasks"] == ["t1"]
    assert running["timestamp"].endswith("+00:00")
    dispatcher.assign("t1", seconds=1.0)  # the same (task, attempt) again: ignored

    result = wait_result(dispatcher, "t1")
    assert (result.state, result.run_id, result.attempt, result.session) == \
        ("done", sent.run_id, 1, status.session)
    assert result.summary["seconds"] == 1.0 and result.observables
    assert sent.assigned_at <= result.started_at <= result.finished_at
    assert result.finished_at - result.started_at >= 1.0

    # Unacknowledged: every heartbeat still lists it (done = 1.0); acknowledged: forgotten.
    wait_for(lambda: (b := dispatcher.heartbeat_after(result.finished_at + 0.1))
             and b.progress.get("t1") == 1.0, 5, what="heartbeat holding the unacked t1")
    dispatcher.ack(result)
    acked_at = time.time()
    beat = wait_for(lambda: (b := dispatcher.heartbeat_after(acked_at + 0.3)) and b, 5,
                    what="heartbeat after the ack")
    assert beat.progress == {} and beat.free_slots == 2
    assert len({r.started_at for r in dispatcher.results("t1")}) == 1, "t1 ran twice"

    # Failures: bad parameters (not retryable, nothing runs) and a kernel that raises.
    dispatcher.assign("t-bad", seconds=-1)
    bad = wait_result(dispatcher, "t-bad")
    assert (bad.state, bad.retryable) == ("failed", False) and "seconds" in (bad.error or "")
    dispatcher.assign("t-fail", seconds=0, fail=True)
    failed = wait_result(dispatcher, "t-fail")
    assert (failed.state, failed.retryable) == ("failed", False)
    assert "on purpose" in (failed.error or "")

    # The HTTP snapshot may lag the loop by up to 0.1 s.
    metrics = metrics_with(dispatcher, 'worker_agent_tasks_failed_total{worker_id="w1"} 2')
    assert 'worker_agent_tasks_done_total{worker_id="w1"} 1' in metrics
    assert 'worker_agent_slots{worker_id="w1"} 2' in metrics
    assert "# TYPE worker_agent_slots_busy gauge" in metrics
    agent.check_alive()


def test_rejects_beyond_free_slots_and_cancels(cluster: Cluster,
                                               dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 1)
    first_pid = wait_for(lambda: child_pid(dispatcher), 10, what="child pid")
    dispatcher.assign("long", seconds=60)
    wait_for(lambda: (s := dispatcher.status()) and s.running == ["long"], 5, what="running")

    dispatcher.assign("extra", attempt=2, seconds=0)
    event = wait_for(lambda: dispatcher.events(p.EventKind.REJECTED), 5, what="rejection")[0]
    assert (event.task_id, event.attempt) == ("extra", 2)
    assert "no free slot" in event.detail
    assert dispatcher.results("extra") == []

    dispatcher.send(p.Channel.CONTROL, p.Cancel(["long"]))
    cancelled = wait_result(dispatcher, "long")
    assert (cancelled.state, cancelled.retryable) == ("cancelled", False)
    # The child running it was terminated and replaced by a fresh one.
    new_pid = wait_for(lambda: (pid := child_pid(dispatcher)) != first_pid and pid, 15,
                       what="replacement child")
    assert new_pid != first_pid
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    dispatcher.assign("after", seconds=0)
    assert wait_result(dispatcher, "after").state == "done"

    # Drain with exit_when_idle: no new tasks, then offline and exit 0 once idle.
    dispatcher.send(p.Channel.CONTROL, p.Drain(exit_when_idle=True))
    assert agent.wait(15) == 0, agent.describe()
    wait_for(lambda: (s := dispatcher.status()) and s.state == "offline", 5, what="offline")


def test_child_killed_mid_task_is_a_failed_attempt(cluster: Cluster,
                                                   dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 1)
    dispatcher.assign("victim", seconds=60)
    wait_for(lambda: (s := dispatcher.status()) and s.running == ["victim"], 5, what="running")
    pid = wait_for(lambda: child_pid(dispatcher), 10, what="child pid")
    os.kill(pid, signal.SIGKILL)

    result = wait_result(dispatcher, "victim")
    assert (result.state, result.retryable) == ("failed", True)
    assert result.error == "worker process died: killed by signal 9 (SIGKILL)"
    agent.check_alive()
    wait_for(lambda: (new := child_pid(dispatcher)) and new != pid, 15, what="new child")
    dispatcher.assign("next", seconds=0)
    assert wait_result(dispatcher, "next").state == "done"
    metrics_with(dispatcher, 'worker_agent_child_restarts_total{worker_id="w1"} 1')


def test_unacked_result_is_resent_after_broker_restart(cluster: Cluster, broker: LocalBroker,
                                                       dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 1)
    dispatcher.assign("t1", seconds=0)
    first = wait_result(dispatcher, "t1")
    # Not acknowledged: sent again after a while even without a reconnect (the copy may
    # have gone nowhere if the broker lost the dispatcher's session).
    resent = wait_result(dispatcher, "t1", count=2, timeout=15)
    assert resent.started_at == first.started_at
    assert resent_after(dispatcher, "t1") >= 4.5

    broker.stop()
    broker.start()
    # The agent reconnects with backoff and re-sends the result it still holds.
    again = wait_result(dispatcher, "t1", count=3, timeout=20)
    assert (again.started_at, again.session) == (first.started_at, first.session)
    # Its MQTT session outlived the restart (QoS 1 messages for it would have waited).
    assert "(session resumed)" in agent.log(), agent.describe()
    dispatcher.ack(again)
    acked_at = time.time()
    wait_for(lambda: (b := dispatcher.heartbeat_after(acked_at + 0.3)) and b.progress == {}, 10,
             what="heartbeat without t1 after the ack")
    # Still taking work after the restart (it re-subscribed).
    dispatcher.assign("t2", seconds=0)
    assert wait_result(dispatcher, "t2").state == "done"
    agent.check_alive()


def test_sigterm_finishes_within_grace_hands_back_the_rest_and_exits_0(
        cluster: Cluster, dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 2, "--grace", "2")
    dispatcher.assign("short", seconds=0.8)
    dispatcher.assign("long", seconds=60)
    wait_for(lambda: (s := dispatcher.status()) and len(s.running) == 2, 5, what="both running")

    stopped_at = time.monotonic()
    agent.signal(signal.SIGTERM)  # the whole group, children included, as systemd would
    wait_for(lambda: (s := dispatcher.status()) and s.state == "draining", 5, what="draining")
    dispatcher.assign("late", seconds=0)
    rejected = wait_for(lambda: dispatcher.events(p.EventKind.REJECTED), 5, what="rejection")
    assert rejected[0].task_id == "late" and "draining" in rejected[0].detail

    assert agent.wait(15) == 0, agent.describe()
    assert time.monotonic() - stopped_at < 10
    assert wait_result(dispatcher, "short").state == "done"
    long = wait_result(dispatcher, "long")
    assert (long.state, long.retryable, long.error) == \
        ("failed", True, "handed back: agent stopping")
    wait_for(lambda: (s := dispatcher.status()) and s.state == "offline", 5, what="offline")


def test_second_sigterm_stops_at_once(cluster: Cluster, dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 1, "--grace", "60")
    dispatcher.assign("long", seconds=60)
    wait_for(lambda: (s := dispatcher.status()) and s.running == ["long"], 5, what="running")
    agent.signal(signal.SIGTERM)
    wait_for(lambda: (s := dispatcher.status()) and s.state == "draining", 5, what="draining")
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0, agent.describe()
    assert wait_result(dispatcher, "long").error == "handed back: agent stopping"
    wait_for(lambda: (s := dispatcher.status()) and s.state == "offline", 5, what="offline")


def test_duplicate_worker_id_refused_but_stale_status_does_not_block(
        cluster: Cluster, dispatcher: FakeDispatcher) -> None:
    first = start(cluster, dispatcher, "w1", 1)
    second = cluster.start_agent("w1", 1)
    assert second.wait(20) == 2, second.describe()
    assert "worker id w1 is already in use by a live agent on host" in second.log()
    first.check_alive()

    # A retained "online" status left by an agent that died without a Last Will reaching
    # anyone (say, the broker lost it): only a live answer to the ping may block a start.
    stale = p.WorkerStatus("w2", "online", "dead-session", time.time() - 60, host="gone",
                           slots=1, free_slots=1, kinds=simkind.installed().versions())
    dispatcher.client.publish(dispatcher.topics.worker("w2", p.Channel.STATUS), stale.encode(),
                              qos=1, retain=True).wait_for_publish(5)
    start(cluster, dispatcher, "w2", 1)  # waits for a status of a new session

    # Killed outright: the broker publishes its Last Will (offline, same session) ...
    alive = dispatcher.status("w1")
    assert alive is not None and alive.state == "online"
    first.kill()
    will = wait_for(lambda: (s := dispatcher.status("w1")) and s.state == "offline" and s, 10,
                    what="w1's Last Will")
    assert will.session == alive.session
    # ... and its id can be taken again at once.
    start(cluster, dispatcher, "w1", 1)


def test_malformed_messages_get_error_events_and_the_agent_stays_up(
        cluster: Cluster, dispatcher: FakeDispatcher) -> None:
    agent = start(cluster, dispatcher, "w1", 1)
    t = dispatcher.topics
    assign, control = t.worker("w1", p.Channel.ASSIGN), t.worker("w1", p.Channel.CONTROL)
    replies = t.replies("w1")
    valid_assign = json.loads(p.Assignment("r", "x", 1, "sleep", {}, 1, 0.0).encode())
    cases: list[tuple[str, bytes, str]] = [
        # (topic, payload, what the error detail must say)
        (assign, os.urandom(64) + b"\xff", "not JSON"),
        (assign, b"[1, 2]", "not a JSON object"),
        (assign, json.dumps({**valid_assign, "v": 99}).encode(), "protocol version 99"),
        (assign, json.dumps({"v": p.PROTOCOL_VERSION, "type": "assign"}).encode(), "missing"),
        (assign, json.dumps({**valid_assign, "attempt": "one"}).encode(), "attempt"),
        (assign, json.dumps({**valid_assign, "task_id": "../etc"}).encode(), "task id"),
        (assign, json.dumps({**valid_assign, "type": "ack"}).encode(), "expected"),
        (assign, b"{" + b" " * (p.MAX_CONTROL_BYTES + 10) + b"}", "exceeds"),
        (control, os.urandom(32) + b"\xff", "not JSON"),
        (control, json.dumps({"v": p.PROTOCOL_VERSION, "type": "reboot"}).encode(), "unknown"),
        (control, json.dumps({"v": p.PROTOCOL_VERSION, "type": "ack",
                              "results": [["t", "x"]]}).encode(), "ack items"),
        (control, json.dumps({"v": 0, "type": "cancel", "task_ids": []}).encode(),
         "protocol version 0"),
        (t.ping, b"\x00\x01garbage", "not JSON"),
        (t.ping, p.Ping(time.time()).encode(), "response topic"),  # no response topic
        (replies, b"not a pong", "not JSON"),
    ]
    for topic, payload, _ in cases:
        dispatcher.publish(topic, payload)

    def errors() -> list[p.Event] | None:
        found = dispatcher.events(p.EventKind.ERROR)
        return found if len(found) >= len(cases) else None

    events = wait_for(errors, 20, what=f"{len(cases)} error events")
    assert len(events) == len(cases)
    for (topic, _, expected), event in zip(cases, events, strict=True):
        assert event.topic == topic, (event, expected)
        assert expected in event.detail, (expected, event.detail)
        assert len(event.detail) <= 1100  # never the whole hostile payload
    # By its case, not by "99" in the text: a random payload's error can name byte 0x99.
    mismatch = next(e for (_, _, expected), e in zip(cases, events, strict=True)
                    if expected == "protocol version 99")
    assert "upgrade simctl and the worker agents" in mismatch.detail

    # Out-of-range parameters decode fine: they fail the task, not the agent.
    dispatcher.assign("huge", n_cells=10**9, kind="lj")
    dispatcher.assign("too-long", seconds=1e300)
    for task_id in ("huge", "too-long"):
        bad = wait_result(dispatcher, task_id)
        assert (bad.state, bad.retryable) == ("failed", False), bad
    dispatcher.assign("fine", seconds=0)
    assert wait_result(dispatcher, "fine").state == "done"
    agent.check_alive()
    metrics_with(dispatcher, 'worker_agent_invalid_messages_total{worker_id="w1"} 15')


def test_ten_thousand_hostile_messages_per_topic_leave_the_agent_serving(
        cluster: Cluster, dispatcher: FakeDispatcher) -> None:
    """Structure-aware hostile payloads (tests/support/hostile.py) on every topic the agent takes
    orders from: its assignments, control and ping topics (its own status topic is writable
    by its own credential alone; a newer agent's status there makes it leave, see
    test_frozen_agent_replaced_under_its_id_exits). It neither crashes nor stalls, counts
    what it refused, and then runs a task as usual."""
    seed = 20261202
    print(hostile.describe(seed))
    agent = start(cluster, dispatcher, "w1", 1)
    t = dispatcher.topics
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = t.replies(dispatcher.client_id)
    props.CorrelationData = b"fuzz"
    flood = [(t.worker("w1", p.Channel.ASSIGN), "assign", None),
             (t.worker("w1", p.Channel.CONTROL), "ack", None),
             (t.ping, "ping", props),
             (t.replies("w1"), "pong", None)]
    started = time.monotonic()
    for topic, kind, properties in flood:
        # A well-formed drain with exit_when_idle is an order to leave (only simctl may send
        # it): obeying it is right, so the flood holds none.
        for payload in hostile.payloads(kind, 10_000, seed, task_ids=["f.0", "f.1"],
                                        without=frozenset({"drain"})):
            dispatcher.client.publish(topic, payload, qos=0, properties=properties)
    # A ping is answered only once everything before it was handled. Pings and pongs travel
    # at QoS 0 (a lost one is asked again, as simctl's id check does), so ask every 5 s: the
    # test is that the agent answers at all, not that no QoS 0 message was ever lost.
    asked: set[bytes] = set()
    next_ping = 0.0

    def answered() -> bool:
        nonlocal next_ping
        agent.check_alive()
        if time.monotonic() >= next_ping:
            asked.add(dispatcher.ping())
            next_ping = time.monotonic() + 5
        return any(c in asked for _, c in dispatcher.pongs)

    try:
        wait_for(answered, 60, what="the agent answering a ping after the flood")
    except WaitTimeout as e:
        raise WaitTimeout(f"{e} ({len(asked)} asked, {len(dispatcher.pongs)} pongs received "
                          f"in all, test client connected: {dispatcher.client.is_connected()})"
                          ) from None
    assert time.monotonic() - started < 60
    dispatcher.assign("after-the-flood", seconds=0)
    assert wait_result(dispatcher, "after-the-flood", timeout=30).state == "done"
    invalid = int(metrics_with(dispatcher, "worker_agent_invalid_messages_total")
                  .split('worker_agent_invalid_messages_total{worker_id="w1"} ')[1].split()[0])
    assert invalid > 15_000, invalid
    agent.check_alive()


def test_settings_precedence_flag_env_config_default(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from click.testing import CliRunner

    from worker_agent.cli import main

    config = tmp_path / "agent.yaml"
    config.write_text("slots: 3\nworker-id: from-file\nheartbeat: 0.5\ngrace: 7\n")
    env = {"WORKER_SLOTS": "2", "WORKER_HEARTBEAT": "0.7", "WORKER_ID": None,
           "SIMCTL_BROKER": "mqtt://broker.example:1999"}
    out = CliRunner().invoke(main, ["--config", str(config), "--slots", "1", "--print-config"],
                             env=env)
    assert out.exit_code == 0, out.output
    resolved = json.loads(out.output)
    assert resolved["slots"] == 1  # flag over env over file
    assert resolved["heartbeat"] == 0.7  # env over file
    assert resolved["worker_id"] == "from-file" and resolved["grace"] == 7  # file over default
    assert resolved["keepalive"] == 10 and resolved["topic_prefix"] == "sim"  # defaults
    assert resolved["broker"] == "mqtt://broker.example:1999"
    assert resolved["client_id"] == "sim-worker-from-file"

    bad = CliRunner().invoke(main, ["--heartbeat", "0.1", "--print-config"], env=env)
    assert bad.exit_code == 2
    assert "--heartbeat must be at least 0.2 s, got 0.1" in caplog.text
    unknown = tmp_path / "typo.yaml"
    unknown.write_text("slot: 2\n")
    typo = CliRunner().invoke(main, ["--config", str(unknown), "--print-config"], env=env)
    assert typo.exit_code == 2 and "unknown setting 'slot'" in typo.output


def test_child_exits_are_described() -> None:
    from worker_agent.pool import describe_exit

    assert describe_exit(-signal.SIGKILL) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "exit code 3"


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    files = {name: folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr",
                                              "server.crt", "san.cnf")}
    files["san.cnf"].write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca.key"], "-out",
         files["ca.crt"], "-days", "1", "-subj", "/CN=particle-sim test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["server.key"], "-out",
         files["server.csr"], "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", files["server.csr"], "-CA", files["ca.crt"], "-CAkey",
         files["ca.key"], "-CAcreateserial", "-out", files["server.crt"], "-days", "1",
         "-extfile", files["san.cnf"]],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return files


def broker_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str) -> LocalBroker:
    """A started local broker whose generated configuration ends with ``settings``."""
    plain = simctl.local_broker.render_local_config
    monkeypatch.setattr(simctl.local_broker, "render_local_config",
                        lambda *a, **k: plain(*a, **k) + settings)
    broker = LocalBroker(tmp_path / "broker", free_port())
    broker.state_dir.mkdir()
    broker.start()
    return broker


def test_agent_over_tls_survives_a_broker_restart(tmp_path: Path, topic_prefix: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls_files(tmp_path)
    broker = broker_with(tmp_path, monkeypatch, f"cafile {tls['ca.crt']}\n"
                         f"certfile {tls['server.crt']}\nkeyfile {tls['server.key']}\n")
    address = f"mqtts://127.0.0.1:{broker.port}"
    dispatcher = FakeDispatcher(address, topic_prefix, tls_ca=tls["ca.crt"])
    agent = Proc("agent-tls", [*procs.agent_command(), "--broker", address, "--tls-ca",
                               str(tls["ca.crt"]), "--topic-prefix", topic_prefix,
                               "--worker-id", "w1", "--slots", "1", "--http-port", "0",
                               "--heartbeat", "0.2", "--keepalive", "1"],
                 tmp_path, dict(os.environ))
    try:
        wait_for(lambda: (s := dispatcher.status()) and s.state == "online", 20,
                 what="agent online over TLS")
        dispatcher.assign("t1", seconds=0)
        dispatcher.ack(wait_result(dispatcher, "t1"))
        broker.stop()
        broker.start()
        wait_for(dispatcher.client.is_connected, 20, what="test dispatcher reconnected")
        dispatcher.assign("t2", seconds=0)  # waits in the agent's session if it is not back yet
        assert wait_result(dispatcher, "t2", timeout=20).state == "done"
        assert "(session resumed)" in agent.log(), agent.describe()
    finally:
        agent.kill()
        dispatcher.close()
        broker.stop()


def test_refused_credentials_exit_3_instead_of_retrying(tmp_path: Path, topic_prefix: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that refuses the agent's credentials will refuse them again: the agent
    says so and exits with its documented code instead of retrying for ever (here its
    start-up id check meets the refusal; the main connection handles it the same way)."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "w1", "right"], check=True,
                   capture_output=True)
    broker = broker_with(tmp_path, monkeypatch,
                         f"allow_anonymous false\npassword_file {passwd}\n")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("wrong\n")
    try:
        for name, credentials in (("no-credentials", []),
                                  ("wrong-password", ["--username", "w1", "--password-file",
                                                      str(wrong)])):
            agent = Proc(f"agent-{name}", [*procs.agent_command(), "--broker", broker.address,
                                           "--topic-prefix", topic_prefix, "--worker-id", "w1",
                                           "--http-port", "0", *credentials],
                         tmp_path, dict(os.environ))
            try:
                assert agent.wait(20) == 3, agent.describe()
            finally:
                agent.kill()
            assert "refused worker w1" in agent.log(), agent.describe()
            assert "Traceback" not in agent.log(), agent.describe()
    finally:
        broker.stop()
