"""How simctl and the worker agents reach the broker: address, credentials, TLS, sessions.

Both sides build their paho client here, so the MQTT version, callback API, reconnect
backoff and session handling are decided once.
"""

from __future__ import annotations

import random
import re
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simproto.protocol import DEFAULT_TOPIC_PREFIX, Topics

DEFAULT_PORT = 1883
"""Plain MQTT port used when an address names none."""

DEFAULT_TLS_PORT = 8883
"""MQTT over TLS port used for ``mqtts://`` addresses that name none."""

RECONNECT_MIN_DELAY_S = 0.5
"""Ceiling of the first reconnect delay after the broker goes away; doubles on each failure."""

RECONNECT_MAX_DELAY_S = 5
"""Ceiling of the reconnect backoff: after a partition heals, a client is back within this
(plus the connect itself), however long the partition lasted."""

PERMANENT_REFUSALS = frozenset({
    0x84,  # unsupported protocol version
    0x85,  # client identifier not valid
    0x86,  # bad user name or password
    0x87,  # not authorized
    0x8A,  # banned
    0x8C,  # bad authentication method
})
"""CONNACK reason codes that trying again cannot change: the client must give up and say so
(the others, such as server unavailable or busy, are worth another try)."""

DEFAULT_KEEPALIVE_S = 10
"""MQTT keepalive; the broker fires the Last Will about 1.5 keepalives after silence."""

_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s]+)(?::(?P<port>\d{1,5}))?$")
_PORT_RE = re.compile(r"^(?:mqtts?://)?(?:\[[^\]]*\]|[^:/\[\]\s]+):(?P<port>[^/]*)/?$")
"""An address with a port part (of any text), to tell a bad port from a bad address."""


class Backoff:
    """Capped exponential backoff with full jitter (a delay drawn from [0, ceiling), the
    ceiling doubling from ``first`` up to ``cap``): clients cut off together do not all come
    back at the same instant, and none waits longer than ``cap``."""

    def __init__(self, first: float = RECONNECT_MIN_DELAY_S,
                 cap: float = RECONNECT_MAX_DELAY_S) -> None:
        self.first = first
        self.cap = cap
        self._ceiling = first

    def next_delay(self) -> float:
        """The delay before the next attempt; the one after may be up to twice as long."""
        delay = random.uniform(0.0, self._ceiling)
        self._ceiling = min(self.cap, 2 * self._ceiling)
        return delay

    def reset(self) -> None:
        """Connected: the next outage starts from ``first`` again."""
        self._ceiling = self.first


class Redial:
    """When to try the broker again after losing it, for both sides: a :class:`Backoff`
    and the time of the next attempt."""

    def __init__(self) -> None:
        self._backoff = Backoff()
        self.at: float | None = None
        """Monotonic time of the next attempt; None while none is scheduled."""

    def lost(self, now: float, delay: float | None = None) -> float:
        """The connection went away (or an attempt failed): schedule the next attempt after
        ``delay`` (default: the backoff's next); returns the delay."""
        delay = self._backoff.next_delay() if delay is None else delay
        self.at = now + delay
        return delay

    def due(self, now: float) -> bool:
        """Whether a scheduled attempt's time has come."""
        return self.at is not None and now >= self.at

    def attempt(self, open_connection: Callable[[], object], now: float) -> Exception | None:
        """Try ``open_connection`` now; on an OSError or ValueError schedule the next try
        and return the error (None: the connection is being opened)."""
        self.at = None
        try:
            open_connection()
        except (OSError, ValueError) as e:
            self.lost(now)
            return e
        return None

    def connected(self) -> None:
        """The broker accepted us: the next outage starts the backoff from the start."""
        self._backoff.reset()
        self.at = None


def is_permanent_refusal(reason: object) -> bool:
    """Whether a CONNACK reason (paho ReasonCode) is one that retrying cannot cure."""
    return getattr(reason, "value", None) in PERMANENT_REFUSALS


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens. Parsed from ``HOST``, ``HOST:PORT``, ``mqtt://`` or ``mqtts://``."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        """Parse an address; raises ValueError naming the accepted forms."""
        text = text.strip()
        forms = "HOST, HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT"
        port_text = _PORT_RE.match(text)
        if port_text is not None and not (port_text["port"].isdigit()
                                          and 0 < int(port_text["port"]) < 65536):
            # urlsplit's "Port could not be cast to integer value" and a silent default for
            # port 0 are both worse than saying what a port must be.
            raise ValueError("the port must be a number from 1 to 65535")
        if "://" in text:
            parts = urlsplit(text)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in (
                "",
                "/",
            ):
                raise ValueError(f"invalid broker address {text!r}: use {forms}")
            tls = parts.scheme == "mqtts"
            try:
                port = parts.port
            except ValueError as e:
                raise ValueError(f"invalid broker address {text!r}: {e}") from e
            return cls(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls)
        match = _HOST_PORT_RE.match(text)
        if not match:
            raise ValueError(f"invalid broker address {text!r}: use {forms}")
        port = int(match["port"]) if match["port"] else DEFAULT_PORT
        return cls(match["host"].strip("[]"), port, False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open an MQTT connection to one cluster."""

    broker: BrokerAddress
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    username: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive_s: int = DEFAULT_KEEPALIVE_S

    @property
    def topics(self) -> Topics:
        """The topic tree under this cluster's prefix."""
        return Topics(self.topic_prefix)

    @property
    def uses_tls(self) -> bool:
        """TLS is on for ``mqtts://`` addresses or when a CA is given."""
        return self.broker.tls or self.tls_ca is not None

    def read_password(self) -> str | None:
        """The password from ``password_file`` (first line), or None without one."""
        if self.password_file is None:
            return None
        try:
            lines = Path(self.password_file).read_text().splitlines()
        except OSError as e:
            raise ValueError(f"cannot read password file {self.password_file}: {e}") from e
        if not lines or not lines[0]:
            raise ValueError(f"password file {self.password_file} is empty")
        return lines[0]


def make_client(
    settings: ConnectionSettings,
    client_id: str,
    *,
    will: tuple[str, bytes] | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client (MQTT v5, callback API 2) with credentials, TLS, backoff and Last Will.

    ``will`` is (topic, payload), published retained at QoS 1 when the client vanishes.
    With ``manual_ack`` the caller acknowledges every QoS 1 message itself
    (``client.ack(mid, 1)``), once it has acted on it.
    Call :func:`connect` afterwards, then ``loop_start()``.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)  # type: ignore[arg-type]
    if settings.username:
        client.username_pw_set(settings.username, settings.read_password())
    if settings.uses_tls:
        client.tls_set(
            ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
            certfile=str(settings.tls_cert) if settings.tls_cert else None,
            keyfile=str(settings.tls_key) if settings.tls_key else None,
        )
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.on_socket_open = _no_delay
    return client


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """Turn Nagle's algorithm off: with it, each small MQTT packet waits ~40 ms for the
    peer's delayed ACK, capping a request/response exchange at ~25 per second."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(
    client: mqtt.Client,
    settings: ConnectionSettings,
    *,
    session_expiry_s: int = 0,
    resume_session: bool = False,
    asynchronous: bool = True,
) -> None:
    """Open the connection; ``session_expiry_s > 0`` asks for a persistent session.

    paho sends no session expiry unless asked, and the session would then end at
    disconnect. With a persistent session, QoS 1 messages queued by the broker while this
    client was away are delivered when it comes back. ``resume_session`` resumes (or
    creates) the session on every connect, including the first; a client that must not
    inherit a predecessor's session ends it first with a short clean connection (the worker
    agent does), because Mosquitto 2.0 does not persist a session begun with clean start.
    Without ``resume_session`` the first connect starts clean and reconnects resume.
    """
    properties = Properties(PacketTypes.CONNECT)
    if session_expiry_s > 0:
        properties.SessionExpiryInterval = session_expiry_s
        clean_start: bool | Literal[3] = (
            False if resume_session else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        )
    else:
        clean_start = True
    do_connect = client.connect_async if asynchronous else client.connect
    do_connect(
        settings.broker.host,
        settings.broker.port,
        keepalive=settings.keepalive_s,
        clean_start=clean_start,
        properties=properties,
    )


def exchange(client: mqtt.Client, wait: float) -> mqtt.MQTTErrorCode:
    """Wait up to ``wait`` for the socket, then read, write and do keepalive bookkeeping.

    For clients pumped by their owner's loop (simctl's dispatcher, the agent at exit).
    ``client.loop()`` would do the same, but it opens a socket pair that every publish then
    writes a byte to, and that wakes the next ``loop()`` at once: one more system call per
    message and one more pass of the dispatcher for nothing, as publishes are written at once
    by an unthreaded client anyway.
    """
    sock = client.socket()
    if sock is None:
        return mqtt.MQTT_ERR_NO_CONN
    # TLS may hold decrypted bytes that select() cannot see.
    readable = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
    if not readable:
        try:
            ready, _, _ = select.select([sock], [sock] if client.want_write() else [], [], wait)
        except (OSError, ValueError):
            return mqtt.MQTT_ERR_CONN_LOST  # closed under us (disconnect)
        readable = bool(ready)
    rc = client.loop_read() if readable else mqtt.MQTT_ERR_SUCCESS
    if rc != mqtt.MQTT_ERR_SUCCESS or client.socket() is None:
        return rc or mqtt.MQTT_ERR_CONN_LOST
    if client.want_write():
        rc = client.loop_write()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return rc
    return client.loop_misc()


def id_check_identity(
    settings: ConnectionSettings, client_id: str
) -> tuple[ConnectionSettings, str]:
    """The settings and client id of an agent's start-up id check (``client_id``: the agent's).

    The broker binds each credential to one client id, so the probe, which runs beside a
    possibly live agent of the same id, has its own: user ``<user>.idcheck`` (same password)
    and client id ``<client_id>-idcheck``, shortened with a hash to fit an id's 64 characters.
    """
    from dataclasses import replace
    from hashlib import sha256

    from simproto.protocol import MAX_ID_LENGTH

    probe_id = f"{client_id}-idcheck"
    if len(probe_id) > MAX_ID_LENGTH:
        probe_id = f"{client_id[:47]}-{sha256(client_id.encode()).hexdigest()[:8]}-idcheck"
    user = f"{settings.username}.idcheck" if settings.username else None
    return replace(settings, username=user), probe_id
