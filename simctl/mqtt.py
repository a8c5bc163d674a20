"""simctl's MQTT plumbing: opening a client, and a short-lived observer for ping/status/monitor.

paho callbacks here only decode and store or enqueue; nothing waits inside a callback.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simctl.errors import ConnectionFailed
from simproto.connection import (
    ConnectionSettings,
    Redial,
    connect,
    exchange,
    make_client,
)
from simproto.protocol import (
    BrokerIdentity,
    Channel,
    DecodeError,
    Heartbeat,
    Ping,
    Pong,
    RunProgress,
    WorkerStatus,
    decode_worker,
)
from simproto.ratelimit import RateLimit

log = logging.getLogger(__name__)

REPORTS_PER_S = 10.0
"""Malformed messages an observer logs one by one per second (retained garbage under many
worker ids must not bury the output of `simctl status`)."""

CONNECT_TIMEOUT_S = 5.0
"""How long simctl waits for the broker's CONNACK before reporting it unreachable."""


def client_id(settings: ConnectionSettings, role: str) -> str:
    """A client id of this cluster: prefix (with '/' as '_'), 'simctl', role."""
    return f"{settings.topic_prefix.replace('/', '_')}-simctl-{role}"


def open_client(
    settings: ConnectionSettings,
    cid: str,
    subscriptions: Iterable[tuple[str, int]],
    on_message: Callable[[mqtt.MQTTMessage], None],
    *,
    session_expiry_s: int = 0,
    resume_session: bool = False,
    on_connected: Callable[[], None] | None = None,
    on_disconnected: Callable[[], None] | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    threaded: bool = True,
    manual_ack: bool = False,
) -> mqtt.Client:
    """Connect, subscribe in on_connect (so reconnects re-subscribe) and start the loop.

    With ``threaded=False`` no network thread is started: the caller pumps the connection
    with :func:`exchange` (see :class:`Pump`). Raises ConnectionFailed when the broker
    refuses or does not answer within ``timeout``. With ``manual_ack`` the caller sends the
    PUBACK of every QoS 1 message itself (``client.ack``).
    """
    subs = list(subscriptions)
    connected = threading.Event()
    refused: list[str] = []
    try:
        client = make_client(settings, cid, manual_ack=manual_ack)
    except ValueError as e:
        raise ConnectionFailed(str(e)) from e

    def handle_connect(c: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("the broker at %s refused %s: %s", settings.broker, cid, reason)
            refused.append(str(reason))
            connected.set()
            return
        log.info(
            "connected to %s as %s (session present: %s)",
            settings.broker,
            cid,
            flags.session_present,
        )
        if subs:
            c.subscribe(subs)
        if on_connected is not None:
            on_connected()
        connected.set()

    def handle_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        log.info("disconnected from the broker: %s", reason)
        if on_disconnected is not None:
            on_disconnected()

    client.on_connect = handle_connect
    client.on_disconnect = handle_disconnect
    client.on_message = lambda _c, _u, msg: on_message(msg)
    try:
        connect(
            client,
            settings,
            session_expiry_s=session_expiry_s,
            resume_session=resume_session,
            asynchronous=False,
        )
    except (OSError, ValueError) as e:
        raise ConnectionFailed(f"cannot reach the broker at {settings.broker}: {e}") from e
    if threaded:
        client.loop_start()
        connected.wait(timeout)
    else:
        deadline = time.monotonic() + timeout
        while not connected.is_set() and time.monotonic() < deadline:
            if exchange(client, 0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
    if not connected.is_set() or refused:
        if threaded:
            client.loop_stop()
        client.disconnect()
        why = f"refused: {refused[0]}" if refused else f"no answer within {timeout:g} s"
        raise ConnectionFailed(f"cannot connect to the broker at {settings.broker}: {why}")
    return client


class Pump:
    """Drives an unthreaded paho client from the caller's loop, reconnecting with backoff.

    Used by the dispatcher: received messages are handled and the next assignment is
    written to the socket in the same thread, without a hand-off to paho's network thread
    and back (two thread wake-ups per message, which dominate latency on a busy machine).
    """

    def __init__(self, client: mqtt.Client, on_lost: Callable[[], None]) -> None:
        self.client = client
        self.on_lost = on_lost
        self.down = False
        self._redial = Redial()

    def pump(self, wait: float) -> None:
        """Exchange packets for up to ``wait`` seconds (returns early when one arrived)."""
        if self.down:
            self._reconnect(wait)
            return
        rc = exchange(self.client, wait)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.info("connection to the broker lost (%s); reconnecting", rc)
            self.down = True
            self._redial.lost(time.monotonic(), delay=0.0)  # the first try at once
            self.on_lost()

    def _reconnect(self, wait: float) -> None:
        now = time.monotonic()
        if not self._redial.due(now):
            time.sleep(min(wait, max(0.0, (self._redial.at or now) - now)))
            return
        log.info("reconnecting to the broker")
        error = self._redial.attempt(self.client.reconnect, now)
        if error is not None:
            log.info("broker still unreachable (%s); next try in %.1f s", error,
                     (self._redial.at or now) - now)
            return
        self.down = False
        self._redial.connected()


def payload_of(msg: mqtt.MQTTMessage) -> bytes:
    """paho types payloads as bytes or bytearray; decoding takes either."""
    return msg.payload  # type: ignore[return-value]


@dataclass
class PongReply:
    """One worker's answer to a ping."""

    pong: Pong
    rtt_ms: float


class Observer:
    """A clean, short-lived connection that watches worker statuses (and optionally more).

    ``sync()`` returns once every retained message of the subscriptions has arrived: it
    publishes a marker to this client's own reply topic and waits for it to come back, which
    the broker delivers after the retained messages queued before it.
    """

    def __init__(
        self, settings: ConnectionSettings, *, heartbeats: bool = False, progress: bool = False
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.cid = client_id(settings, "obs-" + uuid.uuid4().hex[:8])
        self.reply_topic = self.topics.replies(self.cid)
        self.statuses: dict[str, WorkerStatus] = {}
        self.heard: dict[str, float] = {}
        self.progress: dict[str, RunProgress] = {}
        self.identity: BrokerIdentity | None = None
        self.pongs: dict[str, PongReply] = {}
        self._ping_sent: dict[bytes, float] = {}
        self._markers: set[bytes] = set()
        self._reports = RateLimit(REPORTS_PER_S, int(REPORTS_PER_S))
        self._cond = threading.Condition()
        subs = [
            (self.topics.all_workers(Channel.STATUS), 1),
            (self.reply_topic, 1),
            (self.topics.broker_identity, 1),
        ]
        if heartbeats:
            subs.append((self.topics.all_workers(Channel.HEARTBEAT), 0))
        if progress:
            subs.append((self.topics.all_run_progress, 1))
        self.client = open_client(settings, self.cid, subs, self._on_message)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            if msg.topic == self.reply_topic:
                self._on_reply(msg, now)
                return
            if msg.topic == self.topics.broker_identity:
                identity = BrokerIdentity.decode(payload_of(msg)) if msg.payload else None
                with self._cond:
                    self.identity = identity
                return
            if msg.topic.startswith(f"{self.topics.prefix}/runs/"):
                rp = RunProgress.decode(payload_of(msg))
                with self._cond:
                    self.progress[rp.run_id] = rp
                return
            decoded = decode_worker(self.topics, msg.topic, payload_of(msg))
            worker_id = decoded.worker_id
            with self._cond:
                match decoded.message:
                    case None:
                        self.statuses.pop(worker_id, None)  # retained status cleared
                    case WorkerStatus() as status:
                        self.statuses[worker_id] = status
                        # A retained copy speaks for when it was published, not for now.
                        seen = min(now, status.ts) if msg.retain else now
                        self.heard[worker_id] = max(self.heard.get(worker_id, 0.0), seen)
                    case Heartbeat():
                        self.heard[worker_id] = now
                self._cond.notify_all()
        except DecodeError as e:
            if self._reports.allow():
                log.warning("ignoring a malformed message on %s: %.300s", msg.topic, e)
        except Exception:
            # An exception here would end paho's network thread: the observer would go deaf.
            log.exception("ignoring a message on %s that could not be processed", msg.topic)

    def _on_reply(self, msg: mqtt.MQTTMessage, now: float) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        with self._cond:
            if msg.payload == b"" and corr in self._markers:
                self._markers.discard(corr)
            elif corr in self._ping_sent:
                pong = Pong.decode(payload_of(msg))
                self.pongs[pong.worker_id] = PongReply(pong, (now - self._ping_sent[corr]) * 1000)
            self._cond.notify_all()

    def sync(self, timeout: float = 1.0) -> None:
        """Wait (at most ``timeout``) until the retained messages have arrived."""
        marker = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = marker
        with self._cond:
            self._markers.add(marker)
        self.client.publish(self.reply_topic, b"", qos=1, properties=props)
        with self._cond:
            self._cond.wait_for(lambda: marker not in self._markers, timeout)

    def ping(self, timeout: float) -> dict[str, PongReply]:
        """Ping every worker; return the answers that arrive within ``timeout``.

        Returns early once every worker whose retained status is online or draining answered.
        """
        self.sync(min(timeout, 1.0))
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        with self._cond:
            self._ping_sent[corr] = time.time()
        self.client.publish(
            self.topics.ping,
            Ping(sent_at=time.time(), sender=self.cid).encode(),
            qos=0,
            properties=props,
        )
        deadline = time.monotonic() + timeout

        def all_answered() -> bool:
            live = {w for w, s in self.statuses.items() if s.state != "offline"}
            return bool(self.pongs) and live <= set(self.pongs)

        with self._cond:
            while not all_answered():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if all_answered():
                # Give a worker whose status has not arrived yet a brief chance to answer.
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            return dict(self.pongs)

    def broker_id(self) -> str:
        """The identity of the broker (under this prefix); made and kept retained if the
        broker has none yet. Two simctl making one at once agree on whichever was kept."""
        self.sync(CONNECT_TIMEOUT_S)
        if self.identity is None:
            made = BrokerIdentity(broker_id=uuid.uuid4().hex, created_at=time.time())
            info = self.client.publish(
                self.topics.broker_identity, made.encode(), qos=1, retain=True
            )
            info.wait_for_publish(CONNECT_TIMEOUT_S)
            # Our subscription delivers every identity published, in the broker's order: after
            # the sync, the last one delivered is the one the broker kept.
            self.sync(CONNECT_TIMEOUT_S)
        with self._cond:
            return (self.identity or made).broker_id

    def snapshot(self) -> tuple[dict[str, WorkerStatus], dict[str, float], dict[str, RunProgress]]:
        with self._cond:
            return dict(self.statuses), dict(self.heard), dict(self.progress)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until the broker has it (outside any callback)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(CONNECT_TIMEOUT_S)
