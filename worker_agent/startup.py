"""The agent's start-up checks, before it takes its client id.

Both open a short connection of their own: one under a probe identity, to refuse a worker id
that a live agent holds; one under the agent's client id, to end the session a previous
agent process left behind.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simproto.connection import connect, id_check_identity, is_permanent_refusal, make_client
from simproto.protocol import Channel, DecodeError, Ping, Pong, WorkerStatus
from worker_agent.config import AgentConfig
from worker_agent.errors import BrokerRefused, WorkerIdInUse

log = logging.getLogger("worker_agent")

SESSION_WIPE_TIMEOUT_S = 5.0
"""How long discarding the previous process's session may take at start-up."""

BROKER_WAIT_LOG_S = 10.0
"""While the broker is unreachable at start-up, how often to say so."""


def discard_old_session(config: AgentConfig) -> bool:
    """End the session a previous agent process left under this client id.

    Assignments queued there were given up by the dispatcher when the new session
    appeared; running them would only make duplicates. A clean-start connection with no
    session expiry discards that session; the real connection can then resume (create)
    its session. Connecting clean in the real connection instead would do the same, but
    Mosquitto 2.0 does not save a session begun with clean start to its persistence
    file, so the first broker restart would lose it. Returns whether this worked (if
    not, the real connection starts clean).
    """
    connected = threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            connected.set()

    client = make_client(config.connection, config.client_id)
    client.on_connect = on_connect
    try:
        connect(client, config.connection)  # clean start, session ends at disconnect
        client.loop_start()
        return connected.wait(SESSION_WIPE_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()

def check_worker_id(config: AgentConfig, stopping: Callable[[], bool]) -> bool:
    """Refuse to start if a live agent answers a ping under this worker id.

    Only a live answer counts: a retained status left by a killed agent does not. The
    retained status is read only to name the other agent's host in the message.
    Returns False if ``stopping()`` became true while waiting for the broker.
    """
    cfg, t = config, config.topics
    reply_topic = t.replies(cfg.worker_id)
    status_topic = t.worker(cfg.worker_id, Channel.STATUS)
    token = uuid.uuid4().bytes
    subscribed = threading.Event()
    answers: queue.SimpleQueue[Pong] = queue.SimpleQueue()
    hosts: list[str] = []
    probe_settings, probe_id = id_check_identity(cfg.connection, cfg.client_id)
    client = make_client(probe_settings, probe_id)

    refused: list[str] = []

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            if is_permanent_refusal(reason):
                refused.append(str(reason))
        else:
            c.subscribe([(reply_topic, 0), (status_topic, 0)])

    def on_subscribe(c: mqtt.Client, _u: Any, _mid: Any, _codes: Any, _p: Any) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = token
        c.publish(t.ping, Ping(time.time(), probe_id).encode(), qos=0, properties=props)
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(DecodeError):
            if msg.topic == status_topic:
                hosts.append(WorkerStatus.decode(bytes(msg.payload)).host)
            elif getattr(msg.properties, "CorrelationData", None) == token:
                pong = Pong.decode(bytes(msg.payload))
                if pong.worker_id == cfg.worker_id:
                    answers.put(pong)

    client.on_connect, client.on_subscribe, client.on_message = (
        on_connect, on_subscribe, on_message)
    connect(client, cfg.connection)
    client.loop_start()
    try:
        waited = 0.0
        while not subscribed.wait(0.1):
            if stopping():
                return False
            if refused:
                raise BrokerRefused(
                    f"the broker {cfg.connection.broker} refused worker {cfg.worker_id}'s "
                    f"start-up check: {refused[0]}; check its user name, password file and "
                    "the broker's configuration")
            waited += 0.1
            if waited >= BROKER_WAIT_LOG_S:
                waited = 0.0
                log.warning("broker %s not reachable yet; retrying", cfg.connection.broker)
        try:
            pong = answers.get(timeout=max(1.0, 3 * cfg.heartbeat_s))
        except queue.Empty:
            return True
        host = hosts[-1] if hosts and hosts[-1] else "unknown"
        raise WorkerIdInUse(
            f"worker id {cfg.worker_id} is already in use by a live agent on host {host} "
            f"(session {pong.session}); choose another --worker-id or stop that agent"
        )
    finally:
        client.disconnect()
        client.loop_stop()
