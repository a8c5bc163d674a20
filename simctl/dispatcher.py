"""The dispatcher: assigns pending tasks to workers, tracks leases, stores results.

One dispatcher serves a ledger at a time (:class:`DispatcherLock`, an fcntl lock beside the
ledger). The MQTT connection is pumped from the dispatcher's own loop (no network thread);
paho callbacks only append to the inbox; :meth:`Dispatcher.step` drains the inbox, writes
every state change of one pass to the ledger in one transaction, and only then publishes
what the pass decided (assignments, acks) and acknowledges (PUBACK) the messages it took, so
the broker re-delivers anything received but not yet stored. See docs/cli.md, "Dispatch".
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt

from simctl.errors import LedgerWriteError
from simctl.ledger import FINISHED, Ledger, LiveTask, TaskState
from simctl.mqtt import Pump, client_id, open_client, payload_of
from simproto.connection import ConnectionSettings, exchange
from simproto.protocol import (
    Ack,
    Assignment,
    Channel,
    DecodeError,
    Event,
    EventKind,
    Heartbeat,
    Result,
    ResultState,
    RunProgress,
    VersionMismatch,
    WorkerState,
    WorkerStatus,
)
from simproto.ratelimit import RateLimit

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
"""The dispatcher's MQTT session outlives it by a week: results sent meanwhile wait for it."""

MISSED_HEARTBEATS = 3
"""A lease expires after this many heartbeat intervals without a heartbeat listing the task."""

NOT_LISTED_GRACE = 2
"""Heartbeats of the same session that may omit a fresh assignment (it may be in flight)."""

RESULT_OVERDUE_HEARTBEATS = 10
"""Heartbeats that may report a task finished before its result must have arrived."""

RESUMED_LEASE_S = 10.0
"""Lease of a task found assigned in the ledger whose worker has not been heard from yet."""

REJECTION_BACKOFF_S = 0.2
"""After a worker rejects an assignment, it gets no new one for this long, or until a status
of it that arrives later reports a free slot (with several ledgers sharing the workers,
each dispatcher's count of free slots is optimistic; the agent's status, sent at most every
50 ms while its running tasks change, corrects it sooner)."""

IDLE_WAIT_S = 0.05
"""Longest wait for a message when there is nothing to do (bounds timer latency)."""

CLOSE_FLUSH_S = 2.0
"""Longest wait, when the dispatcher stops, for queued packets to reach the socket."""

PACKETS_PER_PASS = 1000
"""Most extra socket reads in one pass before its transaction is committed."""

LEASE_CHECK_S = 0.1
"""How often expired leases are looked for."""

RUNS_REFRESH_S = 0.5
"""How often the ledger is polled for new or cancelled runs."""

ACK_EVERY_S = 0.05
"""Acks are gathered this long (or up to ACK_BATCH): a worker frees its slot without waiting
for the ack, so batching them costs no throughput and saves packets on every side."""

ACK_BATCH = 500
"""Most results one Ack message names."""

NO_WORKER_WARNING_S = 10.0
"""Pending work with no online worker for this long is worth a warning (with what is known)."""

PROGRESS_EVERY_S = 0.5
"""Smallest interval between two retained RunProgress messages of one run."""

REJECTIONS_LOGGED_PER_S = 10.0
"""Refused messages logged one by one per second (all are counted in the ledger)."""

PROGRESS_KEEPALIVE_S = 10.0
"""An active run's progress is published at least this often, changed or not: a retained
"active" progress older than a few of these belongs to a dispatcher that is gone."""

MAX_HEARTBEAT_S = 300.0
"""Largest heartbeat interval a worker's status is believed for (bounds its leases)."""


class Rejection(str, Enum):
    """Why a message was refused and dropped (``simctl status --json`` counts each)."""

    MALFORMED = "malformed"
    """Not a valid message of its topic (or of this protocol version)."""
    UNPROCESSABLE = "could not be processed"
    """Valid, but handling it raised: logged with the traceback, rolled back, dropped."""
    UNKNOWN_TASK = "unknown task"
    """A result for a task this ledger does not have (another ledger on the same broker)."""
    NOT_ASSIGNED = "not assigned to the sender"
    """A result whose attempt was never assigned, or assigned to another worker or session."""
    WRONG_RUN = "names another run"
    """A result naming a run its task does not belong to."""
    STALE = "stale session"
    """A status or heartbeat of a session the worker id has since replaced."""


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


@dataclass
class Lease:
    """One assigned attempt, renewed by heartbeats that list it."""

    task: LiveTask
    attempt: int
    tries: int
    lost: int
    worker_id: str
    session: str
    assigned_at: float
    renewed_at: float
    finished_seen_at: float | None = None
    """When a heartbeat first reported this task finished (progress 1) with no result here."""


@dataclass
class WorkerView:
    """What the dispatcher knows of one worker (from its status and heartbeats)."""

    worker_id: str
    state: str = "unknown"
    session: str | None = None
    started_at: float = 0.0
    slots: int = 0
    heartbeat_s: float = 2.0
    blocked_until: float = 0.0
    heard_at: float = float("-inf")
    """When a live message of the worker last arrived (not a retained copy)."""
    leases: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    """Sessions this worker id had before the current one (their messages are stale)."""

    @property
    def lease_timeout(self) -> float:
        if self.session is None:
            return RESUMED_LEASE_S
        return MISSED_HEARTBEATS * self.heartbeat_s

    def free(self, now: float) -> int:
        """Slots to fill: only while the worker is online and heard from within a lease, so
        a worker whose Last Will was lost (a broker node crashed) gets nothing new."""
        if (
            self.state != WorkerState.ONLINE.value
            or now < self.blocked_until
            or now - self.heard_at > self.lease_timeout
        ):
            return 0
        return self.slots - len(self.leases)


@dataclass
class RunView:
    """An active run in memory: its pending tasks (in order) and counts."""

    run_id: str
    name: str
    max_attempts: int
    max_lost: int
    total: int
    pending: dict[str, LiveTask]
    queue: deque[str]
    assigned: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    dirty: bool = True
    published_at: float = 0.0

    @property
    def live(self) -> int:
        return len(self.pending) + self.assigned


class Dispatcher:
    """Serves every active run of one ledger until told to stop."""

    def __init__(
        self, ledger: Ledger, settings: ConnectionSettings, broker_id: str | None = None
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.broker_id = broker_id
        """The identity of the broker connected to; runs submitted to another are not served."""
        self._refused_runs: set[str] = set()
        self._reload = False
        self._incompatible: set[tuple[str, str]] = set()
        self._rejection_logs = RateLimit(REJECTIONS_LOGGED_PER_S, int(REJECTIONS_LOGGED_PER_S))
        self.topics = settings.topics
        self.inbox: list[mqtt.MQTTMessage | str] = []
        self.workers: dict[str, WorkerView] = {}
        self.leases: dict[str, Lease] = {}
        self.runs: dict[str, RunView] = {}
        self.finished_runs: dict[str, str] = {}
        self.connected = False
        self._outbox: list[tuple[str, bytes]] = []
        self._unconfirmed: list[mqtt.MQTTMessageInfo] = []
        """Acks and progress published and not yet known to be confirmed by the broker."""
        self._acks: dict[str, list[list[Any]]] = {}
        self._ack_count = 0
        self._acks_since = 0.0
        self._next_lease_check = 0.0
        self._idle_since = time.monotonic()
        self._next_refresh = 0.0
        self.client: mqtt.Client | None = None
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
        subs = [
            (self.topics.all_workers(c), 1)
            for c in (Channel.STATUS, Channel.HEARTBEAT, Channel.RESULT, Channel.EVENT)
        ]
        self.client = open_client(
            self.settings,
            client_id(self.settings, f"dispatcher-{self.ledger.ledger_id[:16]}"),
            subs,
            lambda msg: self.inbox.append(msg),  # self.inbox is swapped every pass
            session_expiry_s=SESSION_EXPIRY_S,
            resume_session=True,
            on_connected=lambda: self._connection_event("connected"),
            on_disconnected=lambda: self._connection_event("disconnected"),
            threaded=False,
            manual_ack=True,
        )
        self.pump = Pump(self.client, on_lost=lambda: self._connection_event("disconnected"))

    def _connection_event(self, event: str) -> None:
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
        self.refresh_runs(time.monotonic())
        while not until(self):
            self.step()
            if tick is not None:
                tick()
        self.flush(time.monotonic(), force=True)
        self.publish_progress(time.monotonic(), force=True)

    def step(self) -> None:
        """One pass: take messages, expire leases, pick up runs, assign; commit; publish."""
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
        now = time.monotonic()
        timers_due = now >= self._next_lease_check or now >= self._next_refresh
        if items or timers_due or self._assignable(now):
            with self.ledger.batch():
                for item in items:
                    if isinstance(item, str):
                        number += 1
                    elif item.qos > 0:
                        received.append((number, item.mid))
                    self.handle_safely(item, now)
                if self._reload:
                    self.reload(now)
                if now >= self._next_lease_check:
                    self._next_lease_check = now + LEASE_CHECK_S
                    self.expire_leases(now)
                if now >= self._next_refresh:
                    self._next_refresh = now + RUNS_REFRESH_S
                    self.refresh_runs(now)
                self.assign(now)
                self.finish_runs()
        self.flush(now)
        assert self.client is not None
        for connection, mid in received:
            if connection == self._connection_number:
                self.client.ack(mid, 1)
        self.publish_progress(now)

    def flush(self, now: float, force: bool = False) -> None:
        """Publish what committed passes decided: assignments at once, acks gathered."""
        assert self.client is not None
        for topic, payload in self._outbox:
            self.client.publish(topic, payload, qos=1)
        self._outbox.clear()
        if not self._acks:
            self._acks_since = now
            return
        if not force and now - self._acks_since < ACK_EVERY_S and self._ack_count < ACK_BATCH:
            return
        self._unconfirmed = [info for info in self._unconfirmed if not _settled(info)]
        for worker_id, items in self._acks.items():
            for i in range(0, len(items), ACK_BATCH):
                self._unconfirmed.append(
                    self.client.publish(
                        self.topic(worker_id, Channel.CONTROL),
                        Ack(results=items[i : i + ACK_BATCH]).encode(),
                        qos=1,
                    )
                )
        self._acks.clear()
        self._ack_count = 0
        self._acks_since = now

    # ------------------------------------------------------------------ runs

    def refresh_runs(self, now: float) -> None:
        """Load runs that became active; drop runs cancelled (or finished) behind our back."""
        active = self.ledger.active_run_ids()
        for run_id in active:
            if run_id not in self.runs and run_id not in self._refused_runs:
                self.load_run(run_id, now)
        for run_id in [r for r in self.runs if r not in active]:
            self.drop_run(run_id)

    def reload(self, now: float) -> None:
        """Rebuild what is in memory from the ledger (after a handler failed half-way)."""
        self._reload = False
        for worker in self.workers.values():
            worker.leases.clear()
        self.leases.clear()
        self.runs.clear()
        self.refresh_runs(now)

    def _serves(self, run_id: str) -> bool:
        """Whether a run belongs to this broker and prefix (runs from before the ledger
        recorded it adopt the current one)."""
        info = self.ledger.run(run_id)
        if self.broker_id is None:
            return True
        mine = (self.broker_id, self.settings.topic_prefix, str(self.settings.broker))
        if info.broker_id is None:
            self.ledger.set_run_broker(run_id, mine)
            return True
        if (info.broker_id, info.topic_prefix) == mine[:2]:
            return True
        self._refused_runs.add(run_id)
        log.warning(
            "not serving run %s: it was submitted to broker %s (id %s, prefix %s), this is "
            "%s (id %s, prefix %s); resume it with `simctl run --resume %s --broker-changed` "
            "if the broker was replaced",
            run_id, info.broker, info.broker_id, info.topic_prefix,
            mine[2], mine[0], mine[1], run_id,
        )
        return False

    def load_run(self, run_id: str, now: float) -> None:
        if not self._serves(run_id):
            return
        info = self.ledger.run(run_id)
        view = RunView(
            run_id,
            info.name,
            info.max_attempts,
            info.max_lost,
            info.total,
            {},
            deque(),
            finished={s: info.counts.get(s, 0) for s in ("done", "failed", "cancelled")},
        )
        for task in self.ledger.live_tasks(run_id):
            if task.worker_id is None:
                view.pending[task.task_id] = task
                view.queue.append(task.task_id)
                continue
            # Assigned by an earlier dispatcher: keep the lease until the worker says otherwise.
            worker = self.worker(task.worker_id)
            self.leases[task.task_id] = Lease(
                task,
                task.attempt,
                task.tries,
                task.lost,
                task.worker_id,
                task.session or "",
                now,
                now,
            )
            worker.leases.add(task.task_id)
            view.assigned += 1
        self.runs[run_id] = view
        log.info("serving run %s (%d unfinished of %d)", run_id, view.live, view.total)

    def drop_run(self, run_id: str) -> None:
        view = self.runs.pop(run_id)
        for task_id in [t for t, lease in self.leases.items() if lease.task.run_id == run_id]:
            lease = self.leases.pop(task_id)
            self.worker(lease.worker_id).leases.discard(task_id)
        state = self.finished_runs[run_id] = self.ledger.run_state(run_id)
        self._publish_run(view, time.monotonic(), state)

    def finish_runs(self) -> None:
        for view in [v for v in self.runs.values() if v.live == 0]:
            state = self.ledger.finish_run(view.run_id)
            self.runs.pop(view.run_id)
            self.finished_runs[view.run_id] = state
            self._publish_run(view, time.monotonic(), state)
            log.info("run %s finished: %s", view.run_id, state)

    # ------------------------------------------------------------- messages

    def worker(self, worker_id: str) -> WorkerView:
        view = self.workers.get(worker_id)
        if view is None:
            view = self.workers[worker_id] = WorkerView(worker_id)
        return view

    def handle_safely(self, item: mqtt.MQTTMessage | str, now: float) -> None:
        """Handle one message; if that fails, undo its writes, count it and go on.

        A message that cannot be processed is dropped, never left to be re-delivered: it is
        acknowledged with the rest of the pass. Only a ledger write failure stops the pass.
        """
        try:
            with self.ledger.savepoint():
                self.handle(item, now)
        except LedgerWriteError:
            raise
        except Exception as e:
            assert isinstance(item, mqtt.MQTTMessage)
            log.exception("a message on %s could not be processed; dropped", item.topic)
            self.reject(Rejection.UNPROCESSABLE, f"{item.topic}: {type(e).__name__}: {e}", now)
            self._reload = True  # memory may be half-updated: rebuild it from the ledger

    def reject(self, reason: Rejection, detail: str, now: float, *, quiet: bool = False) -> None:
        """Count a refused message in the ledger (and log it unless ``quiet``)."""
        self.ledger.add_rejection(reason.value, detail, time.time())
        if quiet:
            log.debug("rejected (%s): %s", reason.value, detail)
        elif self._rejection_logs.allow():
            unlogged = self._rejection_logs.take_suppressed()
            more = f" ({unlogged} more since the last; all in `simctl status`)" if unlogged else ""
            log.warning("rejected (%s): %.300s%s", reason.value, detail, more)

    def handle(self, item: mqtt.MQTTMessage | str, now: float) -> None:
        if item == "connected":
            self.connected = True
            # Nobody could renew leases while we were away: start their clocks again.
            for lease in self.leases.values():
                lease.renewed_at = now
            return
        if item == "disconnected":
            self.connected = False
            return
        assert isinstance(item, mqtt.MQTTMessage)
        try:
            worker_id, channel = self.topics.parse_worker_topic(item.topic)
            if channel is Channel.STATUS:
                if item.payload:
                    status = WorkerStatus.decode(payload_of(item))
                    self.on_status(self._check(status, worker_id), now, live=not item.retain)
            elif channel is Channel.HEARTBEAT:
                self.on_heartbeat(self._check(Heartbeat.decode(payload_of(item)), worker_id), now)
            elif channel is Channel.RESULT:
                self.on_result(self._check(Result.decode(payload_of(item)), worker_id), now)
            elif channel is Channel.EVENT:
                self.on_event(self._check(Event.decode(payload_of(item)), worker_id), now)
        except VersionMismatch as e:
            self._incompatible_peer(item.topic, e, now)
        except DecodeError as e:
            self.reject(Rejection.MALFORMED, f"{item.topic}: {e}", now)

    def _incompatible_peer(self, topic: str, error: VersionMismatch, now: float) -> None:
        """A worker of another release: say so once per worker and version, clearly."""
        key = (topic.rsplit("/", 1)[0], repr(error.peer_version)[:40])
        self.reject(Rejection.MALFORMED, f"{topic}: {error}", now, quiet=key in self._incompatible)
        if key not in self._incompatible:
            self._incompatible.add(key)
            log.error("%s: %s; it gets no tasks from this simctl", key[0], error)

    @staticmethod
    def _check(msg: Any, worker_id: str) -> Any:
        if msg.worker_id != worker_id:
            raise DecodeError(f"message of worker {msg.worker_id!r} on the topic of {worker_id!r}")
        return msg

    def _stale(self, worker: WorkerView, session: str, started_at: float | None) -> bool:
        """Whether a message of ``session`` comes from an agent this worker id has replaced
        (a frozen or cut-off agent coming back, or its late Last Will)."""
        if session in worker.retired:
            return True
        return (
            started_at is not None
            and worker.session is not None
            and session != worker.session
            and started_at < worker.started_at
        )

    def _retire(self, worker: WorkerView, session: str) -> None:
        if worker.session is not None and worker.session != session:
            worker.retired.add(worker.session)
        worker.session = session

    def on_status(self, status: WorkerStatus, now: float, live: bool = True) -> None:
        worker = self.worker(status.worker_id)
        if self._stale(worker, status.session, status.started_at):
            self.reject(
                Rejection.STALE,
                f"status {status.state} of {status.worker_id} session {status.session}, "
                f"replaced by session {worker.session}",
                now,
                quiet=True,
            )
            return
        if status.state != worker.state or status.session != worker.session:
            log.info(
                "worker %s: %s, %d slots, session %s",
                status.worker_id,
                status.state,
                status.slots,
                status.session,
            )
        if status.state == WorkerState.OFFLINE.value:
            self.lose_all(worker, f"worker {worker.worker_id} went offline", now)
        else:
            self.lose_all(
                worker, f"worker {worker.worker_id} restarted", now, keep_session=status.session
            )
        worker.state = status.state
        if status.free_slots > 0:
            worker.blocked_until = 0.0
        self._retire(worker, status.session)
        worker.started_at = status.started_at
        worker.slots = max(0, status.slots)
        worker.heartbeat_s = min(MAX_HEARTBEAT_S, max(0.05, status.heartbeat_s))
        if live:
            worker.heard_at = now
        else:
            # A retained copy speaks for when it was published, not for now.
            worker.heard_at = max(worker.heard_at, now - max(0.0, time.time() - status.ts))

    def on_heartbeat(self, hb: Heartbeat, now: float) -> None:
        worker = self.worker(hb.worker_id)
        if self._stale(worker, hb.session, None):
            self.reject(
                Rejection.STALE,
                f"heartbeat of {hb.worker_id} session {hb.session}, replaced by {worker.session}",
                now,
                quiet=True,
            )
            return
        if worker.session is not None and hb.session != worker.session:
            self.lose_all(
                worker, f"worker {worker.worker_id} restarted", now, keep_session=hb.session
            )
            self._retire(worker, hb.session)
        worker.heard_at = now
        for task_id in list(worker.leases):
            lease = self.leases[task_id]
            if task_id in hb.progress:
                lease.renewed_at = now
                self._check_overdue(lease, hb.progress[task_id], worker, now)
            elif (
                lease.session == hb.session
                and now - lease.assigned_at > NOT_LISTED_GRACE * worker.heartbeat_s
            ):
                self.lose(lease, f"worker {worker.worker_id} no longer holds the task", now)

    def _check_overdue(self, lease: Lease, progress: float, worker: WorkerView, now: float) -> None:
        """A result the worker holds but never reached us (lost while we were resubscribing
        after a broker restart, say) would renew the lease forever: give up on it."""
        if progress < 1.0:
            lease.finished_seen_at = None
        elif lease.finished_seen_at is None:
            lease.finished_seen_at = now
        elif now - lease.finished_seen_at > RESULT_OVERDUE_HEARTBEATS * worker.heartbeat_s:
            self.lose(
                lease,
                f"worker {worker.worker_id} reports the task finished but its result never arrived",
                now,
            )

    def on_event(self, event: Event, now: float) -> None:
        if event.kind == EventKind.REJECTED.value and event.task_id is not None:
            lease = self.leases.get(event.task_id)
            if lease and lease.worker_id == event.worker_id and lease.attempt == event.attempt:
                self.worker(event.worker_id).blocked_until = now + REJECTION_BACKOFF_S
                self.release(
                    lease,
                    "rejected",
                    f"rejected by {event.worker_id}: {event.detail}",
                    now,
                    refund=True,
                )
            return
        log.warning(
            "worker %s reports an error (%s): %.300s", event.worker_id, event.topic, event.detail
        )

    def on_result(self, result: Result, now: float) -> None:
        """Store a result if it comes from the worker and session its attempt was assigned
        to and the task is unfinished; the first conclusive one wins (any attempt)."""
        lease = self.leases.get(result.task_id)
        current = lease is not None and (lease.attempt, lease.worker_id, lease.session) == (
            result.attempt,
            result.worker_id,
            result.session,
        )
        who = f"{result.task_id} attempt {result.attempt} from {result.worker_id}"
        if lease is not None and current:
            task_run, task_state = lease.task.run_id, TaskState.ASSIGNED.value
        else:
            known = self.ledger.assigned_attempt(result.task_id, result.attempt)
            if known is None:
                # Expected when several ledgers share a broker: the other one stores it.
                self.reject(Rejection.UNKNOWN_TASK, f"result of {who}", now, quiet=True)
                return
            task_run, task_state, assigned_worker, assigned_session = known
            if (assigned_worker, assigned_session) != (result.worker_id, result.session):
                self.reject(
                    Rejection.NOT_ASSIGNED,
                    f"result of {who} session {result.session}: that attempt was "
                    + (
                        f"assigned to {assigned_worker} session {assigned_session}"
                        if assigned_worker
                        else "never assigned"
                    ),
                    now,
                )
                return
        if result.run_id != task_run:
            self.reject(Rejection.WRONG_RUN, f"result of {who} names run {result.run_id}", now)
            return
        if task_state in FINISHED:
            self.duplicate(result, now)
            return
        run = self.runs.get(task_run)
        if run is None:
            if task_run in self.finished_runs or task_run in self._refused_runs:
                return  # finished meanwhile, or served by another broker: not ours to store
            self.load_run(task_run, now)  # became active after our last look at the ledger
            self.on_result(result, now)
            return
        if result.handed_back or (result.retryable and result.state != ResultState.DONE.value):
            if current:
                assert lease is not None
                outcome = "lost" if result.handed_back else result.state
                self.release(
                    lease, outcome, result.error or "failed", now, refund=False,
                    lost=result.handed_back,
                )
            else:
                self.ledger.record_attempt_end(result, result.state)
            self.ack(result)
            return
        state = {
            ResultState.DONE.value: TaskState.DONE.value,
            ResultState.CANCELLED.value: TaskState.CANCELLED.value,
        }.get(result.state, TaskState.FAILED.value)
        if not self.ledger.store_result(result, state):
            self.duplicate(result, now)
            return
        if lease is not None:
            self.leases.pop(result.task_id)
            self.worker(lease.worker_id).leases.discard(result.task_id)
            run.assigned -= 1
        else:
            run.pending.pop(result.task_id, None)
        run.finished[state] = run.finished.get(state, 0) + 1
        run.dirty = True
        self.ack(result)

    def duplicate(self, result: Result, now: float) -> None:
        self.ledger.record_attempt_end(result, "duplicate")
        self.ledger.add_duplicates(result.run_id, 1)
        self.ack(result)

    def ack(self, result: Result) -> None:
        """Acknowledge a result (sent after the pass that stored it is committed)."""
        self._acks.setdefault(result.worker_id, []).append([result.task_id, result.attempt])
        self._ack_count += 1

    # --------------------------------------------------------------- leases

    def lose_all(
        self, worker: WorkerView, reason: str, now: float, keep_session: str | None = None
    ) -> None:
        """Every lease of ``worker`` (except those of ``keep_session``) goes back to pending."""
        for task_id in list(worker.leases):
            lease = self.leases[task_id]
            if keep_session is None or lease.session != keep_session:
                self.lose(lease, reason, now)

    def lose(self, lease: Lease, reason: str, now: float) -> None:
        """The worker went away with the task: the attempt does not count, the loss does."""
        log.info("task %s attempt %d lost: %s", lease.task.task_id, lease.attempt, reason)
        self.release(lease, "lost", reason, now, refund=False, lost=True)

    def release(
        self,
        lease: Lease,
        outcome: str,
        detail: str,
        now: float,
        *,
        refund: bool,
        lost: bool = False,
    ) -> None:
        """End an attempt without a winning result: back to pending, or failed when out of
        tries (a failure inside the task) or of workers (``lost``, against ``max_lost``)."""
        task = lease.task
        run = self.runs[task.run_id]
        self.leases.pop(task.task_id)
        self.worker(lease.worker_id).leases.discard(task.task_id)
        run.assigned -= 1
        run.dirty = True
        refund = refund or lost
        tries = lease.tries - 1 if refund else lease.tries
        lost_count = lease.lost + 1 if lost else lease.lost
        fail = tries >= run.max_attempts or lost_count >= run.max_lost
        if lost_count >= run.max_lost:
            detail = f"lost {lost_count} workers; last: {detail}"
        elif fail:
            detail = f"gave up after {tries} attempts; last: {detail}"
        self.ledger.release(
            task.task_id,
            lease.attempt,
            outcome,
            detail,
            refund=refund,
            lost=lost,
            fail=fail,
            now=time.time(),
        )
        if fail:
            run.finished["failed"] = run.finished.get("failed", 0) + 1
            return
        run.pending[task.task_id] = LiveTask(
            task.task_id,
            task.run_id,
            task.kind,
            task.params,
            task.seed,
            lease.attempt,
            tries,
            lost_count,
            None,
            None,
        )
        # First in line again: it has waited longest, and a late result of the lost attempt
        # then meets the new attempt early rather than at the end of the run.
        run.queue.appendleft(task.task_id)

    def expire_leases(self, now: float) -> None:
        if not self.connected:
            return
        for lease in list(self.leases.values()):
            worker = self.worker(lease.worker_id)
            if now - lease.renewed_at > worker.lease_timeout:
                self.lose(
                    lease,
                    f"no heartbeat from worker {worker.worker_id} listing the task "
                    f"for {now - lease.renewed_at:.1f} s",
                    now,
                )

    # -------------------------------------------------------------- assignment

    def _assignable(self, now: float) -> bool:
        """Whether a pending task and a free slot both exist (else a pass has nothing to do)."""
        return any(r.pending for r in self.runs.values()) and any(
            w.free(now) > 0 for w in self.workers.values()
        )

    def topic(self, worker_id: str, channel: Channel) -> str:
        """A worker's topic (built and checked once per worker)."""
        key = (worker_id, channel)
        topic = self._worker_topics.get(key)
        if topic is None:
            topic = self._worker_topics[key] = self.topics.worker(worker_id, channel)
        return topic

    def assign(self, now: float) -> None:
        """Fill the free slots of online workers, round-robin over workers and runs."""
        if not self.connected:
            return
        runs = [r for r in self.runs.values() if r.pending]
        workers = [w for w in self.workers.values() if w.free(now) > 0]
        if runs and not any(w.state == WorkerState.ONLINE.value for w in self.workers.values()):
            if now - self._idle_since > NO_WORKER_WARNING_S:
                known = ", ".join(f"{w.worker_id}={w.state}" for w in self.workers.values())
                log.warning(
                    "tasks are pending but no worker is online (known: %s)", known or "none"
                )
                self._idle_since = now
        else:
            self._idle_since = now
        wall = time.time()
        turn = 0
        while runs and workers:
            for worker in list(workers):
                run = runs[turn % len(runs)]
                turn += 1
                task = self._next_pending(run)
                if task is None:
                    runs.remove(run)
                    if not runs:
                        return
                    continue
                self._assign_one(run, task, worker, now, wall)
                if worker.free(now) <= 0:
                    workers.remove(worker)
                if not run.pending:
                    runs.remove(run)
                    if not runs:
                        return

    @staticmethod
    def _next_pending(run: RunView) -> LiveTask | None:
        while run.queue:
            task = run.pending.pop(run.queue.popleft(), None)
            if task is not None:
                return task
        return None

    def _assign_one(
        self, run: RunView, task: LiveTask, worker: WorkerView, now: float, wall: float
    ) -> None:
        attempt = task.attempt + 1
        assert worker.session is not None
        self.ledger.assign(task.task_id, attempt, worker.worker_id, worker.session, wall)
        self.leases[task.task_id] = Lease(
            task, attempt, task.tries + 1, task.lost, worker.worker_id, worker.session, now, now
        )
        worker.leases.add(task.task_id)
        run.assigned += 1
        run.dirty = True
        message = Assignment(
            run_id=task.run_id,
            task_id=task.task_id,
            attempt=attempt,
            kind=task.kind,
            params=json.loads(task.params),
            seed=task.seed,
            assigned_at=wall,
        )
        self._outbox.append(
            (self.topic(worker.worker_id, Channel.ASSIGN), message.encode())
        )

    # -------------------------------------------------------------- progress

    def publish_progress(self, now: float, force: bool = False) -> None:
        for view in self.runs.values():
            due = force or now - view.published_at >= PROGRESS_EVERY_S
            if (view.dirty and due) or now - view.published_at >= PROGRESS_KEEPALIVE_S:
                self._publish_run(view, now)

    def _publish_run(self, view: RunView, now: float, state: str = "active") -> None:
        if self.client is None:
            return
        message = RunProgress(
            run_id=view.run_id,
            name=view.name,
            state=state,
            total=view.total,
            done=view.finished.get("done", 0),
            failed=view.finished.get("failed", 0),
            running=view.assigned,
            pending=len(view.pending),
            updated_at=time.time(),
        )
        self._unconfirmed.append(
            self.client.publish(
                self.topics.run_progress(view.run_id), message.encode(), qos=1, retain=True
            )
        )
        view.dirty = False
        view.published_at = now
