"""The dispatcher's decisions: which task goes to which worker, and how each attempt ends.

:class:`Scheduler` holds what the dispatcher knows (workers, leases, runs) and the ledger;
:meth:`Scheduler.decide` takes one pass of messages and the time, writes every state change
to the ledger in one transaction, and returns what the pass decided (assignments, acks, run
progress) for the dispatcher to publish. It does no network I/O, so tests call it with
messages and read its decisions. Every end of an attempt goes through one method,
:meth:`Scheduler.end_attempt`, which decides win, retry or give up (rq's
``handle_job_success`` / ``handle_job_failure`` / ``handle_job_retry`` in one place).
See docs/cli.md, "Dispatch", and docs/architecture.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import paho.mqtt.client as mqtt

import simkind
from simctl.errors import LedgerWriteError
from simctl.ledger import FINISHED, Ledger, LiveTask, RunInfo, TaskState
from simctl.mqtt import payload_of
from simctl.routing import Need, can_run, need_of, unrunnable
from simctl.store import ArtifactStore
from simctl.transfers import CheckpointPull, Failure, Staged, Transfers
from simproto.protocol import (
    Assignment,
    Channel,
    CheckpointRef,
    Chunk,
    ChunkRequest,
    DecodeError,
    Event,
    EventKind,
    FileRef,
    Heartbeat,
    Result,
    ResultState,
    RunProgress,
    Topics,
    VersionMismatch,
    WorkerState,
    WorkerStatus,
    decode_worker,
)
from simproto.ratelimit import RateLimit
from simproto.sizes import format_size, over_task_limit

log = logging.getLogger("simctl.dispatcher")

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

LEASE_CHECK_S = 0.1
"""How often expired leases are looked for."""

RUNS_REFRESH_S = 0.5
"""How often the ledger is polled for new or cancelled runs."""

NO_WORKER_WARNING_S = 10.0
"""Pending work with no online worker for this long is worth a warning (with what is known)."""

PROGRESS_WRITE_EVERY_S = 1.0
"""Running tasks' progress reaches the ledger (``simctl status RUN``) at most this often."""

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




class Outcome(str, Enum):
    """How one attempt ended; the value is what the attempts table records."""

    DONE = "done"
    """A result says done: the task is done (if it is the first conclusive result)."""
    CANCELLED = "cancelled"
    """A result says cancelled (simctl asked): conclusive."""
    FAILED = "failed"
    """A failure another attempt would repeat (bad parameters, a blow-up): conclusive."""
    RETRYABLE = "retryable"
    """A failure worth another attempt; counts against ``max_attempts``."""
    LOST = "lost"
    """The worker went away with the task (or handed it back): counts against ``max_lost``."""
    REJECTED = "rejected"
    """The worker refused the assignment (no free slot, draining): counts against nothing."""
    DUPLICATE = "duplicate"
    """A result for a task already finished: counted, dropped."""

    @property
    def recorded(self) -> str:
        """The attempts table's word for it (a retried failure is recorded as failed)."""
        return ResultState.FAILED.value if self is Outcome.RETRYABLE else self.value

    @classmethod
    def of(cls, result: Result) -> Outcome:
        """What a result means for its attempt."""
        if result.handed_back:
            return cls.LOST
        if result.state == ResultState.DONE.value:
            return cls.DONE
        if result.state == ResultState.CANCELLED.value:
            return cls.CANCELLED
        return cls.RETRYABLE if result.retryable else cls.FAILED


CONCLUSIVE = frozenset({Outcome.DONE, Outcome.CANCELLED, Outcome.FAILED})
"""Outcomes whose result ends the task (the first one wins)."""

TASK_STATE_OF = {
    Outcome.DONE: TaskState.DONE,
    Outcome.CANCELLED: TaskState.CANCELLED,
    Outcome.FAILED: TaskState.FAILED,
}
"""The task state a conclusive outcome leaves."""


@dataclass(frozen=True)
class Connected:
    """The dispatcher's connection to the broker is up (again)."""


@dataclass(frozen=True)
class Disconnected:
    """The dispatcher's connection to the broker went down."""


Inbound = mqtt.MQTTMessage | Connected | Disconnected
"""What one pass takes: messages of the worker topics, and connection events."""


@dataclass
class Decisions:
    """What one pass decided, for the dispatcher to publish after the ledger commit."""

    assignments: list[tuple[str, Assignment]] = field(default_factory=list)
    """(worker id, assignment), in the order decided."""
    acks: list[tuple[str, list[Any]]] = field(default_factory=list)
    """(worker id, [task id, attempt]) of results stored or dropped as duplicates."""
    progress: list[RunProgress] = field(default_factory=list)
    """Run progress to publish (retained)."""
    transfers: list[tuple[str, Channel, bytes | bytearray]] = field(default_factory=list)
    """(worker id, channel, encoded message) of file transfers: requests for chunks of
    artifacts (``pull``) and chunks of inputs (``download``), QoS 0."""
    unreferenced: set[str] = field(default_factory=set)
    """Digests of store objects the ledger no longer names (replaced or finished tasks'
    checkpoints): removed once the pass is committed."""

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
    progress: float = 0.0
    progress_written: float = 0.0
    """The progress last written to the ledger."""
    start_step: int | None = None
    """The step the attempt resumed from, once its worker said (recorded in the ledger)."""


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
    kinds: dict[str, str] = field(default_factory=dict)
    """The kinds the worker advertises: name -> version."""


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
    queues: dict[Need, deque[str]] = field(default_factory=dict)
    """Pending task ids in order, by what they need (ids no longer pending are skipped)."""
    needs: dict[Need, int] = field(default_factory=dict)
    """Pending tasks counted by what they need."""
    assigned: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    waiting_for: dict[str, list[LiveTask]] = field(default_factory=dict)
    """Task id -> the pending tasks of this run that start from its final configuration
    (they are not queued until it is done)."""
    blocked: int = 0
    """Tasks in ``waiting_for``."""
    task_artifact_limit: int = 0
    run_artifact_limit: int = 0
    artifact_bytes: int = 0
    """Bytes of the artifacts stored for this run so far."""
    checkpoint_every_s: float = 0.0
    checkpoints: dict[str, CheckpointRef] = field(default_factory=dict)
    """Task id -> its latest stored checkpoint (what its next attempt resumes from)."""
    dirty: bool = True
    published_at: float = 0.0
    waited: dict[str, int] = field(default_factory=dict)
    """What the last progress said the run waits for (logged when it changes)."""

    @property
    def live(self) -> int:
        return len(self.pending) + self.assigned + self.blocked

    def wait_for(self, source: str, task: LiveTask) -> None:
        self.waiting_for.setdefault(source, []).append(task)
        self.blocked += 1

    def release_waiting(self, source: str) -> list[LiveTask]:
        """The tasks that waited for ``source`` (no longer counted as blocked)."""
        tasks = self.waiting_for.pop(source, [])
        self.blocked -= len(tasks)
        return tasks

    def enqueue(self, task: LiveTask, first: bool = False) -> None:
        self.pending[task.task_id] = task
        need = need_of(task)
        self.needs[need] = self.needs.get(need, 0) + 1
        queue = self.queues.setdefault(need, deque())
        if first:
            queue.appendleft(task.task_id)
        else:
            queue.append(task.task_id)

    def take(self, task_id: str) -> LiveTask | None:
        """Remove a task from the pending ones (None if it is not pending)."""
        task = self.pending.pop(task_id, None)
        if task is not None:
            self.needs[need_of(task)] -= 1
        return task

    def next_for(self, worker: WorkerView) -> LiveTask | None:
        """Take the first pending task ``worker`` can run, if any."""
        for need, queue in self.queues.items():
            if not can_run(worker.kinds, need):
                continue
            while queue:
                task = self.take(queue.popleft())
                if task is not None:
                    return task
        return None

    def waiting(self, workers: Iterable[WorkerView]) -> dict[str, int]:
        """Pending tasks that no online worker can run, counted by what they need."""
        return unrunnable(self.needs, (w.kinds for w in workers
                                       if w.state == WorkerState.ONLINE.value))




class Scheduler:
    """What the dispatcher knows and decides, for every active run of one ledger."""

    def __init__(self, ledger: Ledger, topics: Topics,
                 broker: tuple[str, str, str] | None = None) -> None:
        self.ledger = ledger
        self.topics = topics
        self.transfers = Transfers(ArtifactStore.beside(ledger.path))
        self.broker = broker
        """(broker id, topic prefix, address) of the broker connected to; runs submitted to
        another id or prefix are not served. None: serve every run (tests)."""
        self.workers: dict[str, WorkerView] = {}
        self.leases: dict[str, Lease] = {}
        self.runs: dict[str, RunView] = {}
        self.finished_runs: dict[str, str] = {}
        self.connected = False
        self.refused_runs: set[str] = set()
        self._decided = Decisions()
        self._reload = False
        self._incompatible: set[tuple[str, str]] = set()
        self._rejection_logs = RateLimit(REJECTIONS_LOGGED_PER_S, int(REJECTIONS_LOGGED_PER_S))
        self._next_lease_check = 0.0
        self._next_refresh = 0.0
        self._next_progress_write = 0.0
        self._idle_since = time.monotonic()

    # ------------------------------------------------------------------ one pass

    def has_work(self, now: float) -> bool:
        """Whether a pass without messages would do anything (a timer is due, or a pending
        task and a free slot both exist)."""
        return (
            now >= self._next_lease_check
            or now >= self._next_refresh
            or (any(r.pending for r in self.runs.values())
                and any(w.free(now) > 0 for w in self.workers.values()))
        )

    def decide(self, items: Iterable[Inbound], now: float) -> Decisions:
        """One pass: take the messages, expire leases, pick up runs, assign, finish runs;
        all in one ledger transaction. Returns what to publish once it is committed."""
        decided = self._decided = Decisions()
        with self.ledger.batch():
            for item in items:
                self.handle_safely(item, now)
            if self._reload:
                self.reload(now)
            if now >= self._next_lease_check:
                self._next_lease_check = now + LEASE_CHECK_S
                self.expire_leases(now)
            if now >= self._next_refresh:
                self._next_refresh = now + RUNS_REFRESH_S
                self.refresh_runs(now)
            self.transfers.due(now)
            self.assign(now)
            self.finish_runs()
            if now >= self._next_progress_write:
                self._next_progress_write = now + PROGRESS_WRITE_EVERY_S
                self.write_progress()
        decided.transfers = self.transfers.take_outbox()
        return decided

    # ------------------------------------------------------------------ runs

    def refresh_runs(self, now: float) -> None:
        """Load runs that became active; drop runs cancelled (or finished) behind our back."""
        active = self.ledger.active_run_ids()
        for run_id in active:
            if run_id not in self.runs and run_id not in self.refused_runs:
                self.load_run(run_id, now)
        for run_id in [r for r in self.runs if r not in active]:
            self.drop_run(run_id)

    def reload(self, now: float) -> None:
        """Rebuild what is in memory from the ledger (after a handler failed half-way)."""
        self._reload = False
        for worker in self.workers.values():
            worker.leases.clear()
        self.leases.clear()
        self.transfers.clear()
        self.runs.clear()
        self.refresh_runs(now)

    def _serves(self, info: RunInfo) -> bool:
        """Whether a run belongs to this broker and prefix (runs from before the ledger
        recorded it adopt the current one)."""
        mine = self.broker
        if mine is None:
            return True
        run_id = info.run_id
        if info.broker_id is None:
            self.ledger.set_run_broker(run_id, mine)
            return True
        if (info.broker_id, info.topic_prefix) == mine[:2]:
            return True
        self.refused_runs.add(run_id)
        log.warning(
            "not serving run %s: it was submitted to broker %s (id %s, prefix %s), this is "
            "%s (id %s, prefix %s); resume it with `simctl run --resume %s --broker-changed` "
            "if the broker was replaced",
            run_id, info.broker, info.broker_id, info.topic_prefix,
            mine[2], mine[0], mine[1], run_id,
        )
        return False

    def load_run(self, run_id: str, now: float) -> None:
        info = self.ledger.run(run_id)
        if not self._serves(info):
            return
        self.finished_runs.pop(run_id, None)  # active again (simctl retry)
        view = RunView(
            run_id,
            info.name,
            info.max_attempts,
            info.max_lost,
            info.total,
            {},
            finished={s: info.counts.get(s, 0) for s in ("done", "failed", "cancelled")},
            task_artifact_limit=info.task_artifact_limit,
            run_artifact_limit=info.run_artifact_limit,
            artifact_bytes=self.ledger.run_artifact_bytes(run_id),
            checkpoint_every_s=info.checkpoint_interval,
            checkpoints=self.ledger.checkpoints(run_id),
        )
        live = self.ledger.live_tasks(run_id)
        unfinished = {task.task_id for task in live}
        for task in live:
            if task.worker_id is None:
                if task.init_from is not None and task.inputs is None:
                    if task.init_from in unfinished:
                        view.wait_for(task.init_from, task)
                    else:  # its init task ended while no dispatcher served the run
                        self._start_waiting(view, task.init_from, [task], None)
                    continue
                view.enqueue(task)
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
        for result in self.ledger.staged_results(run_id).values():
            if result.task_id in self.leases:  # its pull resumes where it was
                self.transfers.stage(result, now)
        log.info("serving run %s (%d unfinished of %d)", run_id, view.live, view.total)

    def drop_run(self, run_id: str) -> None:
        view = self.runs.pop(run_id)
        dropped = [t for t, lease in self.leases.items() if lease.task.run_id == run_id]
        self.transfers.drop(dropped)
        for task_id in dropped:
            lease = self.leases.pop(task_id)
            self.worker(lease.worker_id).leases.discard(task_id)
        state = self.finished_runs[run_id] = self.ledger.run_state(run_id)
        self._decided.progress.append(self._progress(view, time.monotonic(), state))

    def finish_runs(self) -> None:
        for view in [v for v in self.runs.values() if v.live == 0]:
            state = self.ledger.finish_run(view.run_id)
            self.runs.pop(view.run_id)
            self.finished_runs[view.run_id] = state
            self._decided.progress.append(self._progress(view, time.monotonic(), state))
            log.info("run %s finished: %s", view.run_id, state)

    # ------------------------------------------------------------- messages

    def worker(self, worker_id: str) -> WorkerView:
        view = self.workers.get(worker_id)
        if view is None:
            view = self.workers[worker_id] = WorkerView(worker_id)
        return view

    def handle_safely(self, item: Inbound, now: float) -> None:
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
            more = self._rejection_logs.unreported()  # every one is counted in the ledger
            log.warning("rejected (%s): %.300s%s", reason.value, detail, more)

    def handle(self, item: Inbound, now: float) -> None:
        match item:
            case Connected():
                self.connected = True
                # Nobody could renew leases while we were away: start their clocks again.
                for lease in self.leases.values():
                    lease.renewed_at = now
            case Disconnected():
                self.connected = False
                self.transfers.connection_lost()
            case _:
                try:
                    decoded = decode_worker(self.topics, item.topic, payload_of(item))
                except VersionMismatch as e:
                    self._incompatible_peer(item.topic, e, now)
                    return
                except DecodeError as e:
                    self.reject(Rejection.MALFORMED, f"{item.topic}: {e}", now)
                    return
                match decoded.message:
                    case WorkerStatus() as status:
                        self.on_status(status, now, live=not item.retain)
                    case Heartbeat() as beat:
                        self.on_heartbeat(beat, now)
                    case Result() as result:
                        self.on_result(result, now)
                    case Event() as event:
                        self.on_event(event, now)
                    case Chunk() as chunk:
                        self.on_chunk(decoded.worker_id, chunk, now)
                    case ChunkRequest() as request if decoded.channel is Channel.FETCH:
                        self.on_fetch(decoded.worker_id, request)
                    case None:
                        pass  # a retained status cleared

    def _incompatible_peer(self, topic: str, error: VersionMismatch, now: float) -> None:
        """A worker of another release: say so once per worker and version, clearly."""
        key = (topic.rsplit("/", 1)[0], repr(error.peer_version)[:40])
        self.reject(Rejection.MALFORMED, f"{topic}: {error}", now, quiet=key in self._incompatible)
        if key not in self._incompatible:
            self._incompatible.add(key)
            log.error("%s: %s; it gets no tasks from this simctl", key[0], error)

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
        if status.kinds != worker.kinds or status.state != worker.state:
            for view in self.runs.values():
                view.dirty = True  # what waits for which kind may have changed
        worker.kinds = dict(status.kinds)
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
        checkpoints = hb.checkpoint_refs if hb.checkpoints else {}
        for task_id in list(worker.leases):
            lease = self.leases[task_id]
            if task_id in hb.progress:
                lease.renewed_at = now
                lease.progress = hb.progress[task_id]
                self._check_overdue(lease, lease.progress, worker, now)
                if task_id in checkpoints and lease.session == hb.session:
                    self._pull_checkpoint(lease, checkpoints[task_id], now)
                if lease.start_step is None and task_id in hb.resumed:
                    lease.start_step = hb.resumed[task_id]
                    self.ledger.set_start_step(task_id, lease.attempt, lease.start_step)
            elif (
                lease.session == hb.session
                and now - lease.assigned_at > NOT_LISTED_GRACE * worker.heartbeat_s
            ):
                self.lose(lease, f"worker {worker.worker_id} no longer holds the task", now)

    def _pull_checkpoint(self, lease: Lease, checkpoint: CheckpointRef, now: float) -> None:
        """A running attempt saved a checkpoint: pull it, unless it is the one stored."""
        task = lease.task
        stored = self.runs[task.run_id].checkpoints.get(task.task_id)
        if stored is not None and stored.file.sha256 == checkpoint.file.sha256:
            return
        if self.transfers.pull_checkpoint(task.task_id, lease.attempt, lease.worker_id,
                                          checkpoint, now):
            self._keep_checkpoint(CheckpointPull(task.task_id, lease.attempt, checkpoint))

    def _keep_checkpoint(self, pull: CheckpointPull) -> None:
        """A checkpoint is in the store: the task's next attempt resumes from it (if its
        attempt is still the one that saved it and the task is unfinished)."""
        lease = self.leases.get(pull.task_id)
        if lease is None or lease.attempt != pull.attempt:
            return
        run = self.runs[lease.task.run_id]
        replaced = self.ledger.save_checkpoint(run.run_id, pull.task_id, pull.attempt,
                                               pull.checkpoint)
        run.checkpoints[pull.task_id] = pull.checkpoint
        if replaced is not None:
            self._forget_object(replaced)
        log.info("task %s attempt %d: checkpoint of step %d stored", pull.task_id,
                 pull.attempt, pull.checkpoint.step)

    def _drop_checkpoint(self, run: RunView, task_id: str) -> None:
        """A task finished: its stored checkpoint is of no more use (the caller stops the
        pulls of its files, checkpoints included: ``Transfers.drop``)."""
        if run.checkpoints.pop(task_id, None) is not None:
            digest = self.ledger.drop_checkpoint(task_id)
            if digest is not None:
                self._forget_object(digest)

    def _forget_object(self, digest: str) -> None:
        """Remove a store object after this pass commits, unless the ledger names it."""
        if not self.ledger.referenced_digests([digest]):
            self._decided.unreferenced.add(digest)

    def _check_overdue(self, lease: Lease, progress: float, worker: WorkerView, now: float) -> None:
        """A result the worker holds but never reached us (lost while we were resubscribing
        after a broker restart, say) would renew the lease forever: give up on it. A result
        whose artifacts are being pulled has reached us."""
        if progress < 1.0 or self.transfers.is_staged(lease.task.task_id):
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
                self.end_attempt(event.task_id, lease.attempt, Outcome.REJECTED,
                                 f"rejected by {event.worker_id}: {event.detail}", now)
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
        if lease is not None and current:
            task_run, task_state = lease.task.run_id, TaskState.ASSIGNED.value
        else:
            known = self.ledger.assigned_attempt(result.task_id, result.attempt)
            if known is None:
                # Expected when several ledgers share a broker: the other one stores it.
                self.reject(Rejection.UNKNOWN_TASK, f"result of {_sender(result)}", now,
                            quiet=True)
                return
            task_run, task_state, assigned_worker, assigned_session = known
            if (assigned_worker, assigned_session) != (result.worker_id, result.session):
                self.reject(
                    Rejection.NOT_ASSIGNED,
                    f"result of {_sender(result)} session {result.session}: that attempt was "
                    + (
                        f"assigned to {assigned_worker} session {assigned_session}"
                        if assigned_worker
                        else "never assigned"
                    ),
                    now,
                )
                return
        if result.run_id != task_run:
            self.reject(Rejection.WRONG_RUN,
                        f"result of {_sender(result)} names run {result.run_id}", now)
            return
        if task_state in FINISHED:
            outcome = Outcome.DUPLICATE
        else:
            if task_run not in self.runs:
                if task_run in self.finished_runs or task_run in self.refused_runs:
                    return  # finished meanwhile, or another broker's run: not ours to store
                self.load_run(task_run, now)  # became active after our last look at the ledger
                if task_run not in self.runs:
                    return
            outcome = Outcome.of(result)
        self.end_attempt(result.task_id, result.attempt, outcome, result.error or "failed", now,
                         result)

    def end_attempt(self, task_id: str, attempt: int, outcome: Outcome, detail: str,
                    now: float, result: Result | None = None) -> None:
        """The one place an attempt ends: win, retry or give up.

        A conclusive result (``CONCLUSIVE``) of any authorized attempt of an unfinished task
        wins; a later one is a duplicate. The current attempt's other ends put the task back
        to pending (first in line), counting a try (``RETRYABLE``), a lost worker (``LOST``)
        or nothing (``REJECTED``); the task fails when it is out of tries or of workers. A
        non-conclusive result of an earlier attempt only records how that attempt ended.
        """
        lease = self.leases.get(task_id)
        current = lease is not None and lease.attempt == attempt
        if outcome is Outcome.DUPLICATE:
            assert result is not None
            self.ledger.record_attempt_end(result, outcome.recorded)
            self.ledger.add_duplicates(result.run_id, 1)
            self.ack(result)
        elif outcome in CONCLUSIVE:
            assert result is not None
            self._win(result, TASK_STATE_OF[outcome], lease)
        elif not current:
            if result is not None:
                self.ledger.record_attempt_end(result, outcome.recorded)
                self.ack(result)
        elif result is not None and result.handed_back and result.artifacts:
            assert lease is not None
            self._take_hand_back(result, lease)
        else:
            assert lease is not None
            self._retry_or_give_up(lease, outcome, detail)
            if result is not None:
                self.ack(result)

    def _win(self, result: Result, state: TaskState, lease: Lease | None) -> None:
        run = self.runs[result.run_id]
        refs = result.artifact_refs if state is TaskState.DONE else ()
        if refs:
            over = self._over_limit(run, result, refs)
            if over is not None:
                self._win(replace(result, state=ResultState.FAILED.value, error=over,
                                  retryable=False, artifacts=[]), TaskState.FAILED, lease)
                return
            if self.transfers.is_staged(result.task_id):
                return  # a re-sent copy while its files are pulled: the worker keeps them
            if self.transfers.stage(result, time.monotonic()):
                self.ledger.stage_result(result)
                return  # stored once its files are (see on_chunk); the lease stays
        if not self.ledger.store_result(result, state.value):
            self.end_attempt(result.task_id, result.attempt, Outcome.DUPLICATE, "", 0.0, result)
            return
        if refs:
            self.ledger.add_artifacts(result.run_id, result.task_id, refs)
            run.artifact_bytes += sum(ref.size for ref in refs)
        self._start_waiting(run, result.task_id, run.release_waiting(result.task_id),
                            result if state is TaskState.DONE else None)
        self.transfers.drop([result.task_id])  # a checkpoint of it being pulled
        self._drop_checkpoint(run, result.task_id)
        if lease is not None:
            self.leases.pop(result.task_id)
            self.worker(lease.worker_id).leases.discard(result.task_id)
            run.assigned -= 1
        else:
            run.take(result.task_id)
        run.finished[state.value] = run.finished.get(state.value, 0) + 1
        run.dirty = True
        self.ack(result)

    def _retry_or_give_up(self, lease: Lease, outcome: Outcome, detail: str) -> None:
        task = lease.task
        run = self.runs[task.run_id]
        self.leases.pop(task.task_id)
        self.worker(lease.worker_id).leases.discard(task.task_id)
        run.assigned -= 1
        run.dirty = True
        counts_a_try = outcome is Outcome.RETRYABLE
        lost = outcome is Outcome.LOST
        tries = lease.tries if counts_a_try else lease.tries - 1
        lost_count = lease.lost + 1 if lost else lease.lost
        fail = tries >= run.max_attempts or lost_count >= run.max_lost
        if lost_count >= run.max_lost:
            detail = f"lost {lost_count} workers; last: {detail}"
        elif fail:
            detail = f"gave up after {tries} attempts; last: {detail}"
        self.ledger.release(
            task.task_id,
            lease.attempt,
            outcome.recorded,
            detail,
            refund=not counts_a_try,
            lost=lost,
            fail=fail,
            now=time.time(),
        )
        self.transfers.drop([task.task_id])  # if its files were being pulled
        if fail:
            self._drop_checkpoint(run, task.task_id)
            run.finished[TaskState.FAILED.value] = run.finished.get(TaskState.FAILED.value, 0) + 1
            self._start_waiting(run, task.task_id, run.release_waiting(task.task_id), None)
            return
        # First in line again: it has waited longest, and a late result of the lost attempt
        # then meets the new attempt early rather than at the end of the run.
        run.enqueue(task._replace(attempt=lease.attempt, tries=tries, lost=lost_count,
                                  worker_id=None, session=None), first=True)

    # ------------------------------------------------------------ artifacts

    def _over_limit(self, run: RunView, result: Result, refs: tuple[FileRef, ...]) -> str | None:
        """Why a done result's artifacts may not be stored (a limit), or None."""
        over = over_task_limit(refs, run.task_artifact_limit)
        if over is not None:
            return over
        total = sum(ref.size for ref in refs)
        promised = run.artifact_bytes + self.transfers.pending_bytes(run.run_id)
        if promised + total > run.run_artifact_limit:
            return (f"artifacts take {format_size(total)}; with the run's "
                    f"{format_size(promised)} so far that is over its limit of "
                    f"{format_size(run.run_artifact_limit)} (artifact_limits.run in the task "
                    "file)")
        return None

    def on_chunk(self, worker_id: str, chunk: Chunk, now: float) -> None:
        """A chunk of a worker's artifact: results whose files are now all stored win; those
        whose file cannot be had end their attempt (retryable: another attempt makes it anew)."""
        received = self.transfers.on_chunk(worker_id, chunk, now)
        for pull in received.checkpoints:
            self._keep_checkpoint(pull)
        for staged in received.stored:
            self._store_staged(staged)
        for failure in received.failed:
            self._fail_staged(failure, now)

    def _store_staged(self, staged: Staged) -> None:
        result = staged.result
        lease = self.leases.get(result.task_id)
        if lease is None or (lease.attempt, lease.worker_id) != (result.attempt,
                                                                 result.worker_id):
            return  # its attempt ended meanwhile
        self.ledger.unstage(result.task_id)
        if result.handed_back:
            self._hand_back(result, lease)
        else:
            self._win(result, TaskState.DONE, lease)

    def _take_hand_back(self, result: Result, lease: Lease) -> None:
        """A task handed back with a checkpoint: pull it first (the worker waits for the
        acknowledgement before it exits), as the files of a done result are."""
        if self.transfers.is_staged(result.task_id):
            return  # a re-sent copy while its checkpoint is pulled
        if self.transfers.stage(result, time.monotonic()):
            self.ledger.stage_result(result)
            return
        self._hand_back(result, lease)

    def _hand_back(self, result: Result, lease: Lease) -> None:
        """A task handed back with the checkpoint it stopped at (in the store now): keep it
        for the next attempt, then put the task back like a lost one."""
        refs = result.artifact_refs
        try:  # CheckpointRef checks the step as it does in heartbeats
            checkpoint = CheckpointRef(result.metadata.get("checkpoint_step", -1), refs[0]) \
                if len(refs) == 1 else None
        except ValueError:
            checkpoint = None
        if checkpoint is not None:
            self._keep_checkpoint(CheckpointPull(result.task_id, result.attempt, checkpoint))
        self._retry_or_give_up(lease, Outcome.LOST, result.error or "handed back")
        self.ack(result)

    def _fail_staged(self, failure: Failure, now: float) -> None:
        result = failure.result
        log.warning("task %s attempt %d: its artifacts cannot be pulled: %s",
                    result.task_id, result.attempt, failure.error)
        self.end_attempt(result.task_id, result.attempt, Outcome.RETRYABLE,
                         f"artifacts not pulled: {failure.error}", now)
        self.ack(result)  # the worker may drop the files: this attempt is over

    def on_fetch(self, worker_id: str, request: ChunkRequest) -> None:
        """A worker asks for a chunk of an input of a task it holds now."""
        leases = (self.leases[task_id] for task_id in self.worker(worker_id).leases)
        inputs = (ref for lease in leases
                  for ref in _inputs_of(lease.task, self.runs[lease.task.run_id]))
        self.transfers.serve_input(worker_id, request, inputs)

    def _start_waiting(self, run: RunView, source: str, tasks: list[LiveTask],
                       result: Result | None) -> None:
        """The tasks that waited for ``source`` (its attempt just ended, or ended earlier:
        ``result`` None then, and the ledger says how): queued with its final configuration
        as their ``init``, or failed (and those waiting for them) when it has none."""
        if not tasks:
            return
        if result is not None:
            ref = next((FileRef(simkind.INIT_INPUT, r.size, r.sha256)
                        for r in result.artifact_refs
                        if r.name == simkind.FINAL_CONFIGURATION), None)
        else:
            ref = self.ledger.final_configuration(source)
        if ref is not None:
            for task in tasks:
                self.ledger.set_inputs(task.task_id, [ref])
                run.enqueue(task._replace(inputs=json.dumps([ref.to_json()])))
            run.dirty = True
            return
        state = self.ledger.task_state(source)
        why = (f"its init task {source} saved no {simkind.FINAL_CONFIGURATION}"
               if state and state[1] == TaskState.DONE.value
               else f"its init task {source} did not finish (it "
                    f"{state[1] if state else 'is gone'})")
        for task in tasks:
            self.ledger.fail_task(task.task_id, why, time.time())
            run.finished[TaskState.FAILED.value] = run.finished.get(TaskState.FAILED.value,
                                                                    0) + 1
            self._start_waiting(run, task.task_id, run.release_waiting(task.task_id), None)
        run.dirty = True

    def ack(self, result: Result) -> None:
        """Acknowledge a result (sent after the pass that stored it is committed)."""
        self._decided.acks.append((result.worker_id, [result.task_id, result.attempt]))

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
        self.end_attempt(lease.task.task_id, lease.attempt, Outcome.LOST, reason, now)

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
                # Round-robin over the runs, from the next run in turn that has a task this
                # worker can run (its kind, at the version the task was validated with).
                for offset in range(len(runs)):
                    run = runs[(turn + offset) % len(runs)]
                    task = run.next_for(worker)
                    if task is not None:
                        break
                else:
                    workers.remove(worker)  # nothing pending that it can run
                    continue
                turn += offset + 1
                self._assign_one(run, task, worker, now, wall)
                if worker.free(now) <= 0:
                    workers.remove(worker)
                if not run.pending:
                    runs.remove(run)
                    if not runs:
                        return

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
        inputs = _inputs_of(task, run)
        message = Assignment(
            run_id=task.run_id,
            task_id=task.task_id,
            attempt=attempt,
            kind=task.kind,
            params=json.loads(task.params),
            seed=task.seed,
            assigned_at=wall,
            kind_version=task.kind_version,
            inputs=[ref.to_json() for ref in inputs],
            max_artifact_bytes=run.task_artifact_limit,
            checkpoint_every_s=run.checkpoint_every_s,
        )
        self._decided.assignments.append((worker.worker_id, message))

    # -------------------------------------------------------------- progress

    def write_progress(self) -> None:
        """Record in the ledger how far each running task is (what ``simctl status RUN``
        shows), for the leases whose progress moved since the last write."""
        moved = [lease for lease in self.leases.values()
                 if lease.progress != lease.progress_written]
        for lease in moved:
            lease.progress_written = lease.progress
        if moved:
            self.ledger.set_progress((lease.task.task_id, lease.progress) for lease in moved)

    def due_progress(self, now: float, force: bool = False) -> list[RunProgress]:
        """Progress of the active runs that changed (at most every PROGRESS_EVERY_S), or
        that was not published for PROGRESS_KEEPALIVE_S; ``force``: every changed run."""
        due = []
        for view in self.runs.values():
            ready = force or now - view.published_at >= PROGRESS_EVERY_S
            if (view.dirty and ready) or now - view.published_at >= PROGRESS_KEEPALIVE_S:
                due.append(self._progress(view, now))
        return due

    def waiting(self, run_id: str) -> dict[str, int]:
        """Pending tasks of an active run that no online worker can run, by "kind version"."""
        view = self.runs.get(run_id)
        return view.waiting(self.workers.values()) if view is not None else {}

    def _progress(self, view: RunView, now: float, state: str = "active") -> RunProgress:
        view.dirty = False
        view.published_at = now
        waiting = view.waiting(self.workers.values()) if state == "active" else {}
        if waiting != view.waited:
            view.waited = waiting
            for need, count in waiting.items():
                log.warning("run %s: %d tasks wait: no online worker has kind %s",
                            view.run_id, count, need)
        return RunProgress(
            run_id=view.run_id,
            name=view.name,
            state=state,
            total=view.total,
            done=view.finished.get("done", 0),
            failed=view.finished.get("failed", 0),
            running=view.assigned,
            pending=len(view.pending),
            updated_at=time.time(),
            waiting=waiting,
        )


def _inputs_of(task: LiveTask, run: RunView) -> list[FileRef]:
    """A task's input files: its own (``init``), and the checkpoint it resumes from."""
    inputs = [FileRef.from_json(ref) for ref in json.loads(task.inputs)] if task.inputs else []
    checkpoint = run.checkpoints.get(task.task_id)
    if checkpoint is not None:
        inputs.append(FileRef(simkind.CHECKPOINT_INPUT, checkpoint.file.size,
                              checkpoint.file.sha256))
    return inputs


def _sender(result: Result) -> str:
    """Whose result it is, for a refusal (built only then: most results are stored)."""
    return f"{result.task_id} attempt {result.attempt} from {result.worker_id}"
