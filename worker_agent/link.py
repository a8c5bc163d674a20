"""The agent's connection to the broker: one unthreaded paho client, pumped from the agent's
loop, that reconnects with backoff and turns what arrives into inbox items.

The agent owns the selector its loop waits on; the link keeps its socket registered there
under the tag ``mqtt`` (and writable interest only while paho has bytes waiting to go).
paho calls the callbacks below from inside ``loop_read``/``loop_misc``: they decode and
append to the inbox, nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simproto.connection import (
    Redial,
    connect,
    exchange,
    is_permanent_refusal,
    make_client,
)
from simproto.protocol import (
    Assignment,
    Channel,
    Chunk,
    ChunkRequest,
    DecodeError,
    Ping,
    Pong,
    WorkerStatus,
    decode_control,
    decode_worker,
)
from worker_agent import events
from worker_agent.config import AgentConfig

log = logging.getLogger("worker_agent")

SESSION_EXPIRY_S = 3600
"""The broker keeps the agent's session (and QoS 1 messages for it) this long while it is away."""

MAX_QUEUED_MESSAGES = 10_000
"""Bound of paho's outgoing QoS 1 queue; results that do not fit are re-sent later."""

MAX_INFLIGHT_MESSAGES = 100
"""QoS 1 publishes awaiting PUBACK at once (paho's default of 20 throttles fast task streams)."""

SOCKET_TAG = ("fd", "mqtt")
"""The selector data of the link's socket: the agent's loop reads the tag ``mqtt``."""


class BrokerLink:
    """One agent's MQTT connection (see the module docstring)."""

    def __init__(self, config: AgentConfig, selector: selectors.BaseSelector,
                 inbox: deque[events.InboxItem], will: bytes) -> None:
        self.config = config
        self.topic = {channel: config.topics.worker(config.worker_id, channel)
                      for channel in Channel}
        self._assign_topic = self.topic[Channel.ASSIGN]
        self._control_topic = self.topic[Channel.CONTROL]
        self._status_topic = self.topic[Channel.STATUS]
        self._pull_topic = self.topic[Channel.PULL]
        self._download_topic = self.topic[Channel.DOWNLOAD]
        self._ping_topic = config.topics.ping
        self._replies_topic = config.topics.replies(config.worker_id)
        self._selector = selector
        self._inbox = inbox  # no wake-up needed: the loop takes the inbox after each pump
        self._socket: Any = None  # the socket registered in the selector, and its fd
        self._socket_fd = -1
        self._want_write = False
        self._redial = Redial()
        self.connection_number = 0
        """Counts connections: a message id is only meaningful on the connection it came by."""
        self._subscribe_mid: int | None = None
        client = make_client(config.connection, config.client_id,
                             will=(self._status_topic, will), manual_ack=True)
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        client.max_inflight_messages_set(MAX_INFLIGHT_MESSAGES)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    # ============================================================ connection

    def open(self, resume_session: bool) -> None:
        """Open the first connection (resuming the broker's session of this id, or not)."""
        client, settings = self.client, self.config.connection
        self._dial(lambda: connect(client, settings, session_expiry_s=SESSION_EXPIRY_S,
                                   resume_session=resume_session, asynchronous=False))

    @property
    def redial_at(self) -> float | None:
        """Monotonic time of the next connection attempt, if one is scheduled."""
        return self._redial.at

    def connected(self) -> None:
        """The broker accepted the connection: the backoff starts over."""
        self._redial.connected()

    def lost(self) -> float:
        """The connection is gone: stop watching its socket; the delay before the next try."""
        self._follow_socket()
        return self._redial.lost(time.monotonic())

    def pump(self, readable: bool) -> None:
        """paho's I/O: read (when the loop found the socket ``readable``), write, keepalive,
        and a reconnection when it is due."""
        client = self.client
        if readable and self._socket is not None:
            client.loop_read()
            # TLS may hold decrypted bytes that select() cannot see.
            while isinstance(sock := client.socket(), ssl.SSLSocket) and sock.pending():
                client.loop_read()
        self._write_and_misc()
        if self._redial.due(time.monotonic()):
            self._dial(client.reconnect)

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Run paho's I/O alone (at exit) until ``done()`` or ``timeout``, or disconnection."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            wait = max(0.0, min(0.1, deadline - time.monotonic()))
            if exchange(self.client, wait) != mqtt.MQTT_ERR_SUCCESS:
                return  # disconnected

    def close(self, *, keep_session: bool) -> None:
        """Disconnect; without ``keep_session`` the broker may drop the session at once."""
        if keep_session:
            self.client.disconnect()
            return
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)

    def _write_and_misc(self) -> None:
        client = self.client
        if client.socket() is None:
            return
        if client.want_write():
            client.loop_write()  # what did not fit into the socket buffer earlier
        client.loop_misc()  # keepalive pings; notices a dead connection
        if self._socket is None or client.socket() is not self._socket:
            return  # disconnected just now: lost() follows the change
        # Wake up for writability only while paho has bytes waiting for it.
        want_write = client.want_write()
        if want_write != self._want_write:
            self._want_write = want_write
            self._register(want_write)

    def _dial(self, attempt: Callable[[], Any]) -> None:
        """Open the TCP (and TLS) connection; on failure try again after the backoff."""
        now = time.monotonic()
        error = self._redial.attempt(attempt, now)
        if error is not None:
            log.warning("broker %s unreachable (%s); next try in %.1f s",
                        self.config.connection.broker, error, (self._redial.at or now) - now)
            return
        self._follow_socket()

    def _follow_socket(self) -> None:
        """Keep paho's current socket in the loop's selector (it changes on reconnect)."""
        sock = self.client.socket()
        if sock is self._socket:
            return
        if self._socket is not None:
            with contextlib.suppress(KeyError):  # by the old number: paho closed the socket
                self._selector.unregister(self._socket_fd)
        self._socket, self._want_write = sock, False
        if sock is not None:
            self._socket_fd = sock.fileno()
            self._register(write=False)

    def _register(self, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        try:
            self._selector.modify(self._socket_fd, events, SOCKET_TAG)
        except KeyError:
            self._selector.register(self._socket_fd, events, SOCKET_TAG)

    # ============================================================ sending

    def publish(self, topic: str, payload: bytes | bytearray, *, qos: int, retain: bool = False,
                properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain,
                                   properties=properties)

    def acknowledge(self, connection_number: int, mid: int) -> None:
        """PUBACK a message taken on connection ``connection_number``. After a reconnect the
        broker re-sends what was not acknowledged, and the message id may mean another
        message, so an acknowledgement from an earlier connection is dropped."""
        if connection_number == self.connection_number:
            self.client.ack(mid, 1)

    # ============================================================ paho callbacks

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            if is_permanent_refusal(reason):
                self._inbox.append(events.Refused(str(reason)))
            return
        self.connection_number += 1
        self._inbox.append(events.Connected(bool(flags.session_present)))
        _, self._subscribe_mid = client.subscribe([
            (self._assign_topic, 1), (self._control_topic, 1), (self._ping_topic, 0),
            (self._replies_topic, 0), (self._status_topic, 0), (self._pull_topic, 0),
            (self._download_topic, 0)])

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, _codes: Any,
                      _props: Any) -> None:
        if mid == self._subscribe_mid:
            self._inbox.append(events.Subscribed())

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.connection_number += 1
        self._inbox.append(events.Disconnected(str(reason)))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        enqueue = self._inbox.append
        try:
            if topic == self._assign_topic:
                enqueue(events.Received(Assignment.decode(payload)))
            elif topic == self._control_topic:
                enqueue(events.Received(decode_control(payload)))
            elif topic == self._pull_topic:
                enqueue(events.Received(ChunkRequest.decode(payload)))
            elif topic == self._download_topic:
                enqueue(events.Received(Chunk.decode(payload)))
            elif topic == self._ping_topic:
                ping = Ping.decode(payload)
                props = msg.properties
                response_topic = getattr(props, "ResponseTopic", None)
                if not response_topic or any(c in response_topic for c in "+#"):
                    raise DecodeError("ping without a valid MQTT v5 response topic")
                enqueue(events.PingRequest(ping, response_topic,
                                    getattr(props, "CorrelationData", None)))
            elif topic == self._replies_topic:
                Pong.decode(payload)  # our own answer to an id check: nothing to do
            elif topic == self._status_topic:
                status = decode_worker(self.config.topics, topic, payload).message
                if isinstance(status, WorkerStatus):  # None: a retained status cleared
                    enqueue(events.Received(status))
        except DecodeError as e:
            enqueue(events.Invalid(topic, str(e)))
        except Exception as e:
            enqueue(events.Invalid(topic, f"{type(e).__name__}: {e}"))
        if msg.qos > 0:
            enqueue(events.Delivered(self.connection_number, msg.mid))
