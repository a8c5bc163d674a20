"""The dispatcher: the MQTT side of serving a ledger's runs (decisions: simctl.scheduler).

One dispatcher serves a ledger at a time (:class:`DispatcherLock`, an fcntl lock beside the
ledger). The MQTT connection is pumped from the dispatcher's own loop (no network thread);
paho callbacks only append to the inbox; :meth:`Dispatcher.step` drains the inbox, hands it
to :meth:`Scheduler.decide` (which writes every state change of the pass to the ledger in
one transaction), and only then publishes what the pass decided (assignments, acks,
progress) and acknowledges (PUBACK) the messages it took, so the broker re-delivers anything
received but not yet stored. See docs/cli.md, "Dispatch", and docs/architecture.md.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt

from simctl.ledger import Ledger
from simctl.mqtt import Pump, client_id, open_client
from simctl.scheduler import (
    Connected,
    Decisions,
    Disconnected,
    Inbound,
    Scheduler,
)
from simproto.allocator import keep_large_buffers
from simproto.connection import ConnectionSettings, exchange
from simproto.protocol import Ack, Channel, Message, RunProgress

SESSION_EXPIRY_S = 7 * 24 * 3600
"""The dispatcher's MQTT session outlives it by a week: results sent meanwhile wait for it."""

IDLE_WAIT_S = 0.05
"""Longest wait for a message when there is nothing to do (bounds timer latency)."""

CLOSE_FLUSH_S = 2.0
"""Longest wait, when the dispatcher stops, for the broker to confirm the last publishes."""

PACKETS_PER_PASS = 1000
"""Most extra socket reads in one pass before its transaction is committed."""

ACK_EVERY_S = 0.05
"""Acks are gathered this long (or up to ACK_BATCH): a worker frees its slot without waiting
for the ack, so batching them costs no throughput and saves packets on every side."""

ACK_BATCH = 500
"""Most results one Ack message names."""


def _settled(info: mqtt.MQTTMessageInfo) -> bool:
    """Confirmed by the broker, or refused by paho (published while disconnected: an ack the
    worker never got is sent again when its result comes back)."""
    return info.rc != mqtt.MQTT_ERR_SUCCESS or info.is_published()


class DispatcherLock:
    """The lock file beside a ledger that makes its dispatcher unique (fcntl, dies with us)."""

    def __init__(self, store: Path) -> None:
        self.path = Path(f"{store}.lock")
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held for the dispatcher's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class Dispatcher:
    """Serves every active run of one ledger until told to stop."""

    def __init__(
        self,
        ledger: Ledger,
        settings: ConnectionSettings,
        broker: tuple[str, str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.topics = settings.topics
        # broker: (id, prefix, address), from simctl.runner.broker_identity.
        self.scheduler = Scheduler(ledger, self.topics, broker)
        self.inbox: list[Inbound] = []
        self.client: mqtt.Client | None = None
        self._unconfirmed: list[mqtt.MQTTMessageInfo] = []
        """Acks and progress published and not yet known to be confirmed by the broker."""
        self._acks: dict[str, list[list[Any]]] = {}
        self._ack_count = 0
        self._acks_since = 0.0
        self._connection_number = 0
        """Counts connects and disconnects: a message id only means something on the
        connection it came by, so a PUBACK is sent only if that connection is still up."""
        self._inbox_number = 0
        """The connection number when the current inbox was started."""
        self._worker_topics: dict[tuple[str, Channel], str] = {}

    # --------------------------------------------------------------- lifecycle

    pump: Pump

    def connect(self) -> None:
        """Open the persistent session; queued results of an earlier dispatcher arrive now."""
        keep_large_buffers()  # it pulls 256 KiB chunks of artifacts: see simproto.allocator
        subs = [
            (self.topics.all_workers(c), 1)
            for c in (Channel.STATUS, Channel.HEARTBEAT, Channel.RESULT, Channel.EVENT)
        ] + [(self.topics.all_workers(c), 0) for c in (Channel.CHUNK, Channel.FETCH)]
        self.client = open_client(
            self.settings,
            client_id(self.settings, f"dispatcher-{self.ledger.ledger_id[:16]}"),
            subs,
            lambda msg: self.inbox.append(msg),  # self.inbox is swapped every pass
            session_expiry_s=SESSION_EXPIRY_S,
            resume_session=True,
            on_connected=lambda: self._connection_event(Connected()),
            on_disconnected=lambda: self._connection_event(Disconnected()),
            threaded=False,
            manual_ack=True,
        )
        self.pump = Pump(self.client, on_lost=lambda: self._connection_event(Disconnected()))

    def _connection_event(self, event: Connected | Disconnected) -> None:
        self._connection_number += 1
        self.inbox.append(event)

    def close(self) -> None:
        if self.client is not None:
            if not self.pump.down:
                # Wait until the broker has confirmed (PUBACK) the last acks and the final
                # progress: written to the socket is not enough, since a broker stopped right
                # after would drop what it had not read, and the agents would send those
                # results again to the next dispatcher.
                deadline = time.monotonic() + CLOSE_FLUSH_S
                while (
                    self.client.want_write()
                    or not all(map(_settled, self._unconfirmed))
                ) and time.monotonic() < deadline:
                    exchange(self.client, 0.01)
                self.client.disconnect()
                exchange(self.client, 0.01)
            self.client = None

    def serve(
        self, until: Callable[[Dispatcher], bool], tick: Callable[[], None] | None = None
    ) -> None:
        """Dispatch until ``until(self)`` is true; ``tick`` runs after every pass."""
        if self.client is None:
            self.connect()
        with self.ledger.checkpoints_in_background():
            self.publish(self.scheduler.decide([], time.monotonic()))
            while not until(self):
                self.step()
                if tick is not None:
                    tick()
        now = time.monotonic()
        self.flush(now, force=True)
        self._publish_progress(self.scheduler.due_progress(now, force=True))

    def step(self) -> None:
        """One pass: take messages, let the scheduler decide (one ledger commit), publish."""
        self.pump.pump(0.0 if self.inbox else IDLE_WAIT_S)
        # Read what else is already waiting, so one transaction covers it all.
        for _ in range(PACKETS_PER_PASS):
            before = len(self.inbox)
            if self.pump.down:
                break
            self.pump.pump(0.0)
            if len(self.inbox) == before:
                break
        items, self.inbox = self.inbox, []
        number, self._inbox_number = self._inbox_number, self._connection_number
        received: list[tuple[int, int]] = []  # (connection number, message id) to PUBACK
        for item in items:
            if not isinstance(item, mqtt.MQTTMessage):
                number += 1
            elif item.qos > 0:
                received.append((number, item.mid))
        now = time.monotonic()
        if items or self.scheduler.has_work(now):
            self.publish(self.scheduler.decide(items, now))
        self.flush(now)
        assert self.client is not None
        for connection, mid in received:
            if connection == self._connection_number:
                self.client.ack(mid, 1)
        self._publish_progress(self.scheduler.due_progress(now))

    def publish(self, decided: Decisions) -> None:
        """Send a committed pass's assignments at once; gather its acks (see flush)."""
        assert self.client is not None
        for worker_id, assignment in decided.assignments:
            self.client.publish(self.topic(worker_id, Channel.ASSIGN), assignment.encode(),
                                qos=1)
        for worker_id, item in decided.acks:
            self._acks.setdefault(worker_id, []).append(item)
            self._ack_count += 1
        for worker_id, channel, payload in decided.transfers:
            # QoS 0: a lost request or chunk is asked for again, never queued in the broker.
            self.client.publish(self.topic(worker_id, channel), payload, qos=0)
        if decided.unreferenced:  # committed: nothing names these objects any more
            self.scheduler.transfers.store.remove(decided.unreferenced)
        self._publish_progress(decided.progress)

    def flush(self, now: float, force: bool = False) -> None:
        """Publish the gathered acks, every ACK_EVERY_S or ACK_BATCH of them (or now)."""
        assert self.client is not None
        if not self._acks:
            self._acks_since = now
            return
        if not force and now - self._acks_since < ACK_EVERY_S and self._ack_count < ACK_BATCH:
            return
        for worker_id, items in self._acks.items():
            for i in range(0, len(items), ACK_BATCH):
                self._send(self.topic(worker_id, Channel.CONTROL),
                           Ack(results=items[i : i + ACK_BATCH]))
        self._acks.clear()
        self._ack_count = 0
        self._acks_since = now

    def _publish_progress(self, progress: list[RunProgress]) -> None:
        for message in progress:
            self._send(self.topics.run_progress(message.run_id), message, retain=True)

    def _send(self, topic: str, message: Message, retain: bool = False) -> None:
        """Publish at QoS 1 and remember it until the broker confirms it (see close)."""
        if self.client is None:
            return
        self._unconfirmed = [info for info in self._unconfirmed if not _settled(info)]
        self._unconfirmed.append(
            self.client.publish(topic, message.encode(), qos=1, retain=retain)
        )

    def topic(self, worker_id: str, channel: Channel) -> str:
        """A worker's topic (built and checked once per worker)."""
        key = (worker_id, channel)
        topic = self._worker_topics.get(key)
        if topic is None:
            topic = self._worker_topics[key] = self.topics.worker(worker_id, channel)
        return topic
