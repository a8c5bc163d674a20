"""What paho's callbacks hand the agent's main loop: one small frozen dataclass per kind.

The callbacks only decode and append these to the inbox; :meth:`Agent._handle` takes them
with ``match`` (no string tags, no fields read by index).
"""

from __future__ import annotations

from dataclasses import dataclass

from simproto.protocol import (
    Ack,
    Assignment,
    Cancel,
    Chunk,
    ChunkRequest,
    Drain,
    Ping,
    WorkerStatus,
)


@dataclass(frozen=True)
class Connected:
    """The broker accepted the connection."""

    session_present: bool


@dataclass(frozen=True)
class Subscribed:
    """The broker answered this connection's subscriptions (SUBACK)."""


@dataclass(frozen=True)
class Disconnected:
    """The connection is gone (``reason`` as paho words it)."""

    reason: str


@dataclass(frozen=True)
class Refused:
    """The broker refused the connection for a reason retrying cannot cure."""

    reason: str


@dataclass(frozen=True)
class Received:
    """A valid message of the agent's topics: its orders, its own retained status, a request
    for a chunk of its artifacts, or a chunk of its inputs."""

    message: Assignment | Cancel | Ack | Drain | WorkerStatus | ChunkRequest | Chunk


@dataclass(frozen=True)
class PingRequest:
    """A ping to answer on ``response_topic`` with ``correlation``."""

    ping: Ping
    response_topic: str
    correlation: bytes | None


@dataclass(frozen=True)
class Invalid:
    """A message on ``topic`` that was refused; ``detail`` says why."""

    topic: str
    detail: str


@dataclass(frozen=True)
class Delivered:
    """A QoS 1 message was taken: PUBACK it on its connection once acted on."""

    connection: int
    mid: int


InboxItem = (Connected | Subscribed | Disconnected | Refused | Received | PingRequest | Invalid
             | Delivered)
"""Everything the agent's inbox holds."""
