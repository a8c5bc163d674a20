"""The worker agent: takes assignments from the broker, runs them on child processes, reports.

Threads: the main thread runs :meth:`Agent.run`, one loop that waits on the MQTT socket,
the children's pipes and process sentinels and a wake-up pipe at once, and pumps its broker
connection (:class:`~worker_agent.link.BrokerLink`) itself (no network thread: an assignment
goes from the socket to a child's pipe, and a result from a child's pipe to the socket,
without a hand-off between threads). The link's paho callbacks only decode and enqueue; the
kernels run in child processes. The HTTP thread only reads the
latest :class:`~worker_agent.http.View`.
The behaviour is the runtime contract documented in ``docs/protocol.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import simkind
from simproto.allocator import keep_large_buffers
from simproto.protocol import (
    Ack,
    Assignment,
    Cancel,
    Channel,
    Chunk,
    ChunkRequest,
    Drain,
    Event,
    EventKind,
    FileRef,
    Heartbeat,
    Message,
    Ping,
    Pong,
    Result,
    ResultState,
    WorkerState,
    WorkerStatus,
    file_refs,
    package_version,
)
from simproto.ratelimit import RateLimit
from simproto.sizes import describe_files, format_size, over_task_limit
from simproto.transfer import chunk_payload
from worker_agent.config import AgentConfig
from worker_agent.errors import (
    AgentError,
    BrokerRefused,
    ConfigError,
    Superseded,
)
from worker_agent.events import (
    Connected,
    Delivered,
    Disconnected,
    InboxItem,
    Invalid,
    PingRequest,
    Received,
    Refused,
    Subscribed,
)
from worker_agent.http import HealthServer, View
from worker_agent.inputs import Fetcher, Outcomes
from worker_agent.link import BrokerLink
from worker_agent.pool import ChildPool, Job, Outcome
from worker_agent.spool import Spool
from worker_agent.startup import check_worker_id, discard_old_session

log = logging.getLogger("worker_agent")

IMAGE_ENV = "PARTICLE_WORKER_IMAGE"
"""Environment variable naming the worker image (set by the workers role); advertised in
the status and recorded with every result."""

CHILD_START_TIMEOUT_S = 60.0
"""How long the children may take to import the kernels before the agent goes online anyway."""

FLUSH_TIMEOUT_S = 5.0
"""At exit, how long to wait for the broker to take the last results and the offline status."""

MAX_EVENT_DETAIL_CHARS = 1000
"""Error details are cut to this length (a hostile payload must not be echoed in full)."""

ERROR_REPORTS_PER_S = 10.0
"""Invalid messages reported one by one (log line and error event) per second: a flood is
counted in full (/metrics) but cannot fill the outgoing queue that results share, nor the
log."""

ERROR_REPORT_BURST = 20
"""Invalid messages reported one by one at once, before the rate above applies."""

RESEND_MIN_S = 5.0
"""An unacknowledged result is sent again after max(this, 10 heartbeats), then at doubling
intervals: re-sending only on reconnect is not enough when the broker lost the dispatcher's
session (a broker killed before it saved), as nothing would queue the re-sent copy."""

RESEND_MAX_S = 120.0
"""Ceiling of the re-send interval of an unacknowledged result."""

STATUS_MIN_INTERVAL_S = 0.05
"""Least time between two statuses that only update the running tasks: at hundreds of
tasks per second, changes within this window go out as one status (state changes go at once)."""

VIEW_MIN_INTERVAL_S = 0.1
"""The HTTP endpoint's snapshot is rebuilt at most this often (so it may lag by as much)."""

HANDOVER_TIMEOUT_S = 60.0
"""How long a stopping agent with no grace deadline (a drain to exit) waits for simctl to
pull a checkpoint it handed a task back with; a stop with a grace waits until it is up.
simctl away: the task is lost instead, and resumes from its last stored checkpoint."""

CHECKPOINT_ASK_INTERVAL_S = 1.0
"""A warm stop asks running tasks to checkpoint and stop this often until they do."""

MQTT_MISC_INTERVAL_S = 0.5
"""Longest wait between two calls of paho's keepalive bookkeeping (``loop_misc``)."""

SPOOL_SWEEP_INTERVAL_S = 1.0
"""The folders of finished attempts are removed this often, in one batch (Spool.sweep)."""


class StopMode(str, Enum):
    """How the agent is stopping, if it is."""

    WARM = "warm"
    """No new tasks; running ones get the grace period, then are handed back."""
    COLD = "cold"
    """Hand running tasks back at once."""


@dataclass
class Held:
    """A result kept until the dispatcher acknowledges it."""

    result: Result
    payload: bytes
    resend_at: float = 0.0
    """Monotonic time of the next (re-)send; 0 = not sent since the last (re)connect."""
    resend_every: float = 0.0


class Agent:
    """One worker agent process (see the module docstring)."""

    def __init__(self, config: AgentConfig) -> None:
        keep_large_buffers()  # it serves 256 KiB chunks of artifacts: see simproto.allocator
        self.config = config
        self.topics = config.topics
        self.session = uuid.uuid4().hex
        self.version = package_version()
        self.image = os.environ.get(IMAGE_ENV, "")
        self.kinds = simkind.installed()
        for error in self.kinds.errors:
            log.warning("%s", error)
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.state = WorkerState.ONLINE
        self.held: dict[tuple[str, int], Held] = {}
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self.fetcher = Fetcher(self.spool)
        """Assignments holding a slot while their input files arrive."""
        self.counters = dict.fromkeys(
            ("tasks_done", "tasks_failed", "tasks_cancelled", "tasks_rejected",
             "child_restarts", "invalid_messages", "artifact_bytes_served"), 0)
        self.connected = False
        self._error_reports = RateLimit(ERROR_REPORTS_PER_S, ERROR_REPORT_BURST)
        self.http: HealthServer | None = None
        self.link: BrokerLink | None = None
        self._inbox: deque[InboxItem] = deque()  # filled by the link's paho callbacks
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # One long-lived selector for everything the loop waits on (the MQTT socket, the
        # wake-up pipe, the children's pipes and sentinels): building one per wait costs more
        # than the wait itself at hundreds of tasks per second.
        self._selector = selectors.DefaultSelector()
        self._ready: set[str] = set()
        """Tags of the agent's own fds (wake, mqtt) that the last wait found ready."""
        self.pool = ChildPool(config.slots, self._selector)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("fd", "wake"))
        self._fatal: AgentError | None = None
        """Set when the agent must stop at once and exit with that error's code."""
        self._stop_mode: StopMode | None = None
        self._signals = 0
        self._stop_deadline: float | None = None
        self._done = False
        self._status_due: float | None = 0.0  # monotonic time the status must go out by
        self._status_sent_at = 0.0
        self._view_stale = True
        self._view_at = 0.0
        self._heartbeat_seq = 0
        self._next_heartbeat = time.monotonic()
        self._last_flush_info: mqtt.MQTTMessageInfo | None = None
        self._checkpoints_asked_at = float("-inf")
        self._swept_at = 0.0
        self._handover_until = 0.0
        """Until when a stopping agent waits for simctl to take its handed-back checkpoints."""

    # ================================================================== main loop

    def run(self) -> int:
        """Start, serve until stopped, tear down; the process exit code."""
        self._install_signal_handlers()
        try:
            if not self._start():
                return 0  # stopped by a signal while waiting for the broker
            link = self.link
            assert link is not None
            while not self._done:
                self._supervise_children()
                link.pump(readable="mqtt" in self._ready)
                self._take_messages()
                self._heartbeat()
                self._maintenance()
            if self._fatal is not None:
                raise self._fatal
            return 0
        finally:
            self._teardown()

    def _start(self) -> bool:
        self.pool.start()  # children import the kernels while the id check runs
        if not check_worker_id(self.config, stopping=lambda: self._stop_mode is not None):
            return False
        self._open_spool()  # after the id check: a live agent's attempts are not ours to remove
        try:
            self.http = HealthServer(self.config.http_port, self._view())
        except OSError as e:
            raise ConfigError(f"cannot listen on HTTP port {self.config.http_port}: {e}") from e
        self.http.start()
        log.info("http listening on %d", self.http.port)
        if not self.pool.wait_ready(CHILD_START_TIMEOUT_S):
            log.warning("task children are not ready after %.0f s; going online anyway",
                        CHILD_START_TIMEOUT_S)
        resume = discard_old_session(self.config)
        self.link = BrokerLink(self.config, self._selector, self._inbox,
                               will=self._status(WorkerState.OFFLINE).encode())
        log.info("worker %s (%d slots, session %s) connecting to %s", self.config.worker_id,
                 self.config.slots, self.session, self.config.connection.broker)
        self.link.open(resume)
        return True

    def _open_spool(self) -> None:
        spool = self.spool
        try:
            stale = spool.open()
        except OSError as e:
            raise ConfigError(f"cannot use the spool {spool.root}: {e}") from e
        if stale:
            log.info("spool %s: removed %d attempt folders an earlier agent process left (their "
                     "results went with its session; simctl runs those tasks again)",
                     spool.root, stale)
        log.info("spool %s", spool.describe_use())

    def _supervise_children(self) -> None:
        """Wait for the MQTT socket, a child message or death, a signal or the next timer;
        finish the tasks that ended."""
        now = time.monotonic()
        status_due = self._status_due if self.connected else None  # sent on (re)connect
        view_due = self._view_at + VIEW_MIN_INTERVAL_S if self._view_stale else None
        redial_at = self.link.redial_at if self.link is not None else None
        wake_at = min(t for t in (self._next_heartbeat, self._stop_deadline, status_due,
                                  view_due, redial_at, now + MQTT_MISC_INTERVAL_S)
                      if t is not None)
        timeout = max(0.0, wake_at - now)
        due = self.pool.respawn(now)
        if due is not None:
            timeout = min(timeout, max(0.0, due - now))
        events = [key.data for key, _ in self._selector.select(timeout)]
        self._ready = {tag for kind, tag in events if kind == "fd"} if events else set()
        for outcome in self.pool.handle(events):
            if outcome.handed_back:
                self._hand_back_checkpointed(outcome)
            else:
                self._finish(outcome.job, outcome.state, outcome.started_at,
                             outcome.finished_at, payload=outcome.payload, error=outcome.error,
                             retryable=outcome.retryable)

    def _hand_back_checkpointed(self, outcome: Outcome) -> None:
        """A task that stopped at a checkpoint on request: hand it back with the checkpoint
        as the result's one file, which simctl pulls before it acknowledges the result (the
        agent waits for that until its stop's grace is up)."""
        job = outcome.job
        assert job.checkpoint is not None and job.checkpoint_path is not None
        ref = job.checkpoint.file
        try:
            job.artifact_dir.mkdir(parents=True, exist_ok=True)
            os.replace(job.checkpoint_path, job.artifact_dir / ref.name)
            payload = {"artifacts": [ref.to_json()],
                       "metadata": {"checkpoint_step": job.checkpoint.step}}
            log.info("%s attempt %d handed back with its checkpoint of step %d", *job.key,
                     job.checkpoint.step)
        except OSError as e:
            log.warning("%s attempt %d: cannot keep its checkpoint (%s): handed back without",
                        *job.key, e)
            payload = {}
        # Within the stop's grace: Docker's stop timeout (the workers role) is above it.
        self._handover_until = self._stop_deadline or time.monotonic() + HANDOVER_TIMEOUT_S
        self._finish(job, outcome.state, outcome.started_at, outcome.finished_at,
                     payload=payload, error=outcome.error, retryable=True, handed_back=True)

    def _take_messages(self) -> None:
        """Act on what paho's callbacks decoded (assignments, control, pings, connects)."""
        if "wake" in self._ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
        while self._inbox:
            item = self._inbox.popleft()
            try:
                self._handle(item)
            except Exception as e:
                # Dropped, not retried: its PUBACK went out with the rest (a Delivered item).
                log.exception("error handling %s; dropped", type(item).__name__)
                self._on_invalid(None, f"internal error handling {type(item).__name__}: {e}")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = max(self._next_heartbeat + self.config.heartbeat_s, now)
        if not self.connected:
            return
        progress = {key[0]: 1.0 for key in self.held}
        progress.update({job.assignment.task_id: job.progress for job in self._jobs()})
        self._heartbeat_seq += 1
        jobs = self.pool.jobs()
        beat = Heartbeat(self.config.worker_id, self.session, self._heartbeat_seq, time.time(),
                         self._free_slots(), progress,
                         {job.assignment.task_id: job.checkpoint.to_json()
                          for job in jobs if job.checkpoint is not None},
                         {job.assignment.task_id: job.resumed_step
                          for job in jobs if job.resumed_step})
        self._publish(Channel.HEARTBEAT, beat, qos=0)
        for held in self.held.values():  # unsent (queue full) or unacknowledged for long
            if held.resend_at <= now:
                self._send_result(held)

    def _maintenance(self) -> None:
        """Advance a stop, and publish the status and the HTTP view if they changed."""
        if self._stop_mode is not None:
            deadline_passed = (self._stop_deadline is not None
                               and time.monotonic() >= self._stop_deadline)
            if self._stop_mode is StopMode.WARM and not deadline_passed:
                self._ask_for_checkpoints()
            if self._stop_mode is StopMode.COLD or deadline_passed:
                handed_back = [self.pool.kill(slot, "agent stopping")
                               for slot in self.pool.slots if slot.job is not None]
                handed_back += [(fetch.job, fetch.started_at)
                                for fetch in self.fetcher.remove_all()]
                for job, started_at in handed_back:
                    self._finish(job, ResultState.FAILED, started_at, time.time(),
                                 error="handed back: agent stopping", retryable=True,
                                 handed_back=True)
            if not self._jobs() and not self._handing_over():
                self._done = True
        now = time.monotonic()
        if now >= self._swept_at + SPOOL_SWEEP_INTERVAL_S:
            self._swept_at = now
            self.spool.sweep(keep=[job.key for job in self._jobs()])
        if self.connected and self.fetcher.downloads:
            self._send_fetch_requests()  # those that timed out
        if self._status_due is not None and self._status_due <= now and self.connected:
            self._status_due = None
            self._status_sent_at = now
            self._publish(Channel.STATUS, self._status(self.state), retain=True)
        stale = self._view_stale or self.pool.changed
        if stale and self.http is not None and now >= self._view_at + VIEW_MIN_INTERVAL_S:
            self._view_stale = self.pool.changed = False
            self._view_at = now
            self.http.view = self._view()  # replaced whole: the HTTP thread needs no lock

    def _ask_for_checkpoints(self) -> None:
        """A warm stop: ask every running task that saves checkpoints to save one and stop
        (again every second: a signal can arrive before its task process has begun it)."""
        now = time.monotonic()
        if now < self._checkpoints_asked_at + CHECKPOINT_ASK_INTERVAL_S:
            return
        self._checkpoints_asked_at = now
        for slot in self.pool.slots:
            if slot.job is not None and slot.job.checkpoint_folder is not None:
                self.pool.request_checkpoint_stop(slot)

    def _handing_over(self) -> bool:
        """Whether a task handed back with its checkpoint waits for simctl to have it."""
        return time.monotonic() < self._handover_until and any(
            held.result.handed_back and held.result.artifacts for held in self.held.values())

    def _teardown(self) -> None:
        link = self.link
        if isinstance(self._fatal, Superseded):
            # The id, its retained status and its session now belong to the newer agent.
            if link is not None:
                link.close(keep_session=True)
        elif link is not None and self.connected:
            self._flush(link)
            info = self._publish(Channel.STATUS, self._status(WorkerState.OFFLINE),
                                 retain=True)
            if info is not None:
                link.pump_until(info.is_published, FLUSH_TIMEOUT_S)
            link.close(keep_session=False)  # a clean exit: the broker may drop the session
        self.pool.close()
        self.spool.sweep()
        self._selector.close()
        if self.http is not None:
            self.http.stop()
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("worker %s stopped", self.config.worker_id)

    def _flush(self, link: BrokerLink) -> None:
        """Wait (bounded) until the broker has every result this agent published."""
        for held in self.held.values():
            if not held.resend_at:
                self._send_result(held)
        info = self._last_flush_info
        if info is not None:
            link.pump_until(info.is_published, FLUSH_TIMEOUT_S)

    # ============================================================ stopping (signals)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only live in the main thread
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        cold = self._signals > 1
        log.info("%s: %s stop", signal.Signals(signum).name, "cold" if cold else "warm")
        self.request_stop(StopMode.COLD if cold else StopMode.WARM, self.config.grace_s)

    def request_stop(self, mode: StopMode, grace_s: float | None) -> None:
        """Stop taking tasks; end when running ones finish (or ``grace_s`` is up, or at once)."""
        if self._stop_mode is None or mode is StopMode.COLD:
            self._stop_mode = mode
        if grace_s is not None:
            deadline = time.monotonic() + grace_s
            if self._stop_deadline is None or deadline < self._stop_deadline:
                self._stop_deadline = deadline
        self._set_state(WorkerState.DRAINING)
        self._wake()

    def _wake(self) -> None:
        # Full pipe: a wake-up is already pending. Closed pipe: the agent is past teardown.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # ================================================================ messages

    def _handle(self, item: InboxItem) -> None:
        match item:
            case Connected(session_present=present):
                self._on_connected(present)
            case Subscribed():
                self._on_subscribed()
            case Disconnected(reason=reason):
                self._on_disconnected(reason)
            case Received(message=Assignment() as assignment):
                self.handle_assignment(assignment)
            case Received(message=Cancel() as cancel):
                self.handle_cancel(cancel)
            case Received(message=Ack() as ack):
                self.handle_ack(ack)
            case Received(message=Drain() as drain):
                self.handle_drain(drain)
            case Received(message=WorkerStatus() as status):
                self.handle_own_status(status)
            case Received(message=ChunkRequest() as request):
                self.handle_pull(request)
            case Received(message=Chunk() as chunk):
                self.handle_download(chunk)
            case Delivered(connection=connection, mid=mid):
                self._acknowledge(connection, mid)
            case PingRequest(ping=ping, response_topic=topic, correlation=correlation):
                self.handle_ping(ping, topic, correlation)
            case Refused(reason=reason):
                self._stop_now(BrokerRefused(
                    f"the broker {self.config.connection.broker} refused worker "
                    f"{self.config.worker_id}: {reason}; check its user name, password file "
                    "and the broker's configuration (this agent exits instead of retrying "
                    "forever)"))
            case Invalid(topic=topic, detail=detail):
                self._on_invalid(topic, detail)

    def _on_disconnected(self, reason: str) -> None:
        self.connected = False
        self._view_stale = True
        for held in self.held.values():
            held.resend_at = 0.0  # re-sent on the next connect
        self.fetcher.forget_requests()  # asked again on the next connect
        assert self.link is not None
        delay = self.link.lost()
        if not self._done:
            log.warning("disconnected from the broker: %s; reconnecting in %.1f s", reason,
                        delay)

    def _on_invalid(self, topic: str | None, detail: str) -> None:
        """Count a refused message; report it (log line, error event) within the rate."""
        self.counters["invalid_messages"] += 1
        self._view_stale = True
        if self._error_reports.allow():
            more = self._error_reports.unreported()
            log.warning("invalid message on %s: %s%s", topic, detail, more)
            self._error_event(topic, detail + more)

    def _stop_now(self, error: AgentError) -> None:
        """End the agent at once (no hand-back, no result sent) and exit with ``error``."""
        if self._fatal is None:
            self._fatal = error  # worker_agent.cli logs it as it exits
        for slot in [s for s in self.pool.slots if s.job is not None]:
            self.pool.kill(slot, "agent exiting")
        self.fetcher.remove_all()
        self._done = True

    def handle_own_status(self, status: WorkerStatus) -> None:
        """The retained status under this worker id: a newer agent's means this one was
        replaced (it was frozen or cut off meanwhile), an older agent's is out of date."""
        if status.session == self.session:
            return
        if (status.started_at, status.session) > (self.started_at, self.session):
            self._stop_now(Superseded(
                f"worker id {self.config.worker_id} now belongs to a newer agent on host "
                f"{status.host or 'unknown'} (session {status.session}, started "
                f"{time.strftime('%H:%M:%S', time.localtime(status.started_at))}); this agent "
                f"(session {self.session}) was frozen or cut off and was replaced: exiting"))
        else:
            self._status_changed(urgent=True)  # an older agent's status hides ours: again

    def _on_connected(self, session_present: bool) -> None:
        self.connected = True
        assert self.link is not None
        self.link.connected()
        self._status_due = None  # once subscribed: see _on_subscribed
        log.info("connected to %s (%s)", self.config.connection.broker,
                 "session resumed" if session_present else "new session")

    def _on_subscribed(self) -> None:
        """The broker has answered our subscriptions: what it queued for our session (acks
        among it) and the retained status under our id were delivered before this answer,
        and have been handled. Only now re-send what is still unacknowledged (no needless
        duplicates), and publish our status (a newer agent's would have made us leave)."""
        for held in self.held.values():
            self._send_result(held)
        if self.held:
            log.info("re-sent %d unacknowledged results", len(self.held))
        self._send_fetch_requests()
        self._status_changed(urgent=True)

    def handle_assignment(self, a: Assignment) -> None:
        """Run an assignment, or reject it (no free slot, draining), or fail it (bad params)."""
        key = (a.task_id, a.attempt)
        if key in self.held or any(job.key == key for job in self._jobs()):
            log.debug("ignoring duplicate assignment %s attempt %d", *key)
            return
        refusal = None
        installed = self.kinds.kinds.get(a.kind)
        refs = a.input_refs
        inputs = {ref.name: path for ref in refs if (path := self.spool.cached_input(ref))}
        missing = [ref for ref in refs if ref.name not in inputs]
        if self.state is not WorkerState.ONLINE:
            refusal = f"worker {self.config.worker_id} is {self.state.value}"
        elif self._free_slots() == 0:
            refusal = f"no free slot: all {self.config.slots} slots are busy"
        elif not self._spool_room(max(1, self.fetcher.receiving_bytes(missing)), refs):
            refusal = (f"spool full: {self.spool.describe_use()}; raise --spool-max-bytes (or "
                       "let simctl fetch what it holds)")
        elif installed is None:
            refusal = f"kind {a.kind!r} is not installed on {self.config.worker_id}"
        elif a.kind_version not in (None, installed.version):
            refusal = (f"kind {a.kind} {a.kind_version} is wanted, {self.config.worker_id} has "
                       f"{installed.version}")
        if refusal:
            self.counters["tasks_rejected"] += 1
            self._view_stale = True
            log.info("rejected %s attempt %d: %s", a.task_id, a.attempt, refusal)
            self._publish(Channel.EVENT, Event(self.config.worker_id, EventKind.REJECTED.value,
                                               refusal, time.time(), task_id=a.task_id,
                                               attempt=a.attempt))
            return
        assert installed is not None
        folder = self.spool.attempt_folder(key)
        try:
            params = installed.kind.validate(a.params)
        except (simkind.ParamError, TypeError, ValueError) as e:
            now = time.time()
            self._finish(Job(a, a.params, folder), ResultState.FAILED, now, now, error=str(e),
                         retryable=False)
            return
        job = Job(a, params, folder, inputs,
                  self.spool.checkpoint_folder(key) if a.checkpoint_every_s > 0 else None)
        if missing:
            self._fetched(self.fetcher.add(job, refs, inputs, missing))
            self._send_fetch_requests()
        else:
            self.pool.submit(job)
        self._status_changed()

    def _spool_room(self, needed: int, keep: tuple[FileRef, ...] = ()) -> bool:
        """Whether ``needed`` more bytes fit in the spool, once cached inputs no task uses
        (nor ``keep``) are dropped as needed. An assignment needs at least one byte free: a
        full spool starts nothing."""
        if self.spool.fits(needed):
            return True  # the common case, per assignment: no need to know what is in use
        in_use = self.fetcher.in_use() | {ref.sha256 for job in self.pool.jobs()
                                          for ref in job.assignment.input_refs}
        return self.spool.make_room(needed, in_use | {ref.sha256 for ref in keep})

    def _fetched(self, outcomes: Outcomes) -> None:
        """Run the assignments whose inputs are all here; fail those whose inputs cannot be
        had (retryably: another attempt, or another worker, may get them)."""
        for fetch in outcomes.ready:
            fetch.job.inputs = fetch.paths
            self.pool.submit(fetch.job)
        for fetch, error in outcomes.failed:
            self._finish(fetch.job, ResultState.FAILED, fetch.started_at, time.time(),
                         error=error, retryable=True)
        if outcomes.ready:
            self._status_changed()

    def _send_fetch_requests(self) -> None:
        if not self.connected:
            return  # asked on the next connect (Download.forget_requests on disconnect)
        for request in self.fetcher.requests(time.monotonic()):
            self._publish(Channel.FETCH, request, qos=0)

    def handle_download(self, chunk: Chunk) -> None:
        """A chunk of an input: on to its download; run what it completed."""
        self._fetched(self.fetcher.take(chunk))
        self._send_fetch_requests()
        self._view_stale = True

    def handle_pull(self, request: ChunkRequest) -> None:
        """Serve a chunk of an artifact of a held result or of a running task's latest
        checkpoint (or refuse: not held here, or superseded by a newer checkpoint)."""
        held = self.spool.artifact(request.sha256)
        path, size = (held.path, held.size) if held else (None, 0)
        if held is None:
            job = next((job for job in self.pool.jobs() if job.checkpoint is not None
                        and job.checkpoint.file.sha256 == request.sha256), None)
            if job is not None and job.checkpoint is not None:
                path, size = job.checkpoint_path, job.checkpoint.file.size
        payload, served = chunk_payload(path, size, request, f"worker {self.config.worker_id} "
                                        f"holds no file {request.sha256[:12]}")
        self.counters["artifact_bytes_served"] += served
        self._view_stale = True
        if self.link is not None:
            self.link.publish(self.link.topic[Channel.CHUNK], payload, qos=0)

    def handle_cancel(self, cancel: Cancel) -> None:
        """Terminate the children running these tasks (or stop fetching their inputs);
        report them cancelled."""
        for task_id in cancel.task_ids:
            slot = self.pool.find(task_id)
            fetch = self.fetcher.find(task_id)
            if slot is not None:
                job, started_at = self.pool.kill(slot, "cancelled")
            elif fetch is not None:
                self.fetcher.remove(fetch.job.key)
                job, started_at = fetch.job, fetch.started_at
            else:
                log.debug("cancel: %s is not running here", task_id)
                continue
            self._finish(job, ResultState.CANCELLED, started_at, time.time(),
                         error="cancelled on request", retryable=False)

    def handle_ack(self, ack: Ack) -> None:
        """Forget results the dispatcher has stored, and delete their artifacts."""
        for task_id, attempt in ack.results:
            if self.held.pop((task_id, attempt), None) is not None:
                self.spool.release((task_id, attempt))
                self._view_stale = True

    def handle_drain(self, drain: Drain) -> None:
        """Take no new tasks; with ``exit_when_idle``, stop once the running ones are done."""
        log.info("drain requested%s", " (exit when idle)" if drain.exit_when_idle else "")
        if drain.exit_when_idle:
            self.request_stop(StopMode.WARM, None)
        else:
            self._set_state(WorkerState.DRAINING)

    def handle_ping(self, ping: Ping, response_topic: str, correlation: bytes | None) -> None:
        """Answer on the asker's response topic with its correlation data."""
        pong = Pong(self.config.worker_id, self.state.value, self.session, time.time(),
                    self.config.slots, self._free_slots(), self.version,
                    [job.assignment.task_id for job in self._jobs()])
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        assert self.link is not None
        self.link.publish(response_topic, pong.encode(), qos=0, properties=props)

    # ================================================================ task endings

    def _finish(self, job: Job, state: ResultState, started_at: float, finished_at: float, *,
                payload: dict[str, Any] | None = None, error: str | None = None,
                retryable: bool = False, handed_back: bool = False) -> None:
        """The one way every task ends: build the result, keep it (and its artifacts) until
        acked, send it."""
        a = job.assignment
        payload = payload or {}
        reported_files = bool(payload.get("artifacts"))
        if state is ResultState.DONE and (refusal := self._refuse_artifacts(a, payload)):
            state, error, retryable = ResultState.FAILED, *refusal
            payload = {k: v for k, v in payload.items() if k != "artifacts"}
        if self.image:
            payload = {**payload, "metadata": {**payload.get("metadata", {}), "image": self.image}}

        def result(state: ResultState, error: str | None, retryable: bool,
                   body: dict[str, Any]) -> Result:
            return Result(self.config.worker_id, self.session, a.run_id, a.task_id, a.attempt,
                          state.value, started_at, finished_at, error=error,
                          retryable=retryable, handed_back=handed_back, **body)

        try:
            message = result(state, error, retryable, payload)
            encoded = message.encode()
        except (TypeError, ValueError) as e:
            state, error = ResultState.FAILED, f"result not encodable: {e}"
            message = result(state, error, False, {})
            encoded = message.encode()
        if message.artifacts:
            self.spool.hold(message.key, message.artifact_refs)
        elif reported_files:
            self.spool.remove_attempt(message.key)  # refused files: their room back at once
        else:
            self.spool.discard_attempt(message.key)  # failed, cancelled, or no files
        counter = {ResultState.DONE: "tasks_done", ResultState.FAILED: "tasks_failed",
                   ResultState.CANCELLED: "tasks_cancelled"}[state]
        self.counters[counter] += 1
        log.debug("task %s attempt %d %s%s", a.task_id, a.attempt, state.value,
                  f": {error}" if error else "")
        held = Held(message, encoded)
        self.held[message.key] = held
        self._send_result(held)
        self._status_changed()

    def _refuse_artifacts(self, a: Assignment, payload: dict[str, Any]
                          ) -> tuple[str, bool] | None:
        """Why a finished attempt's artifacts cannot be kept, and whether another attempt
        may do better (the task's limit: no; a full spool: yes), or None."""
        if not payload.get("artifacts"):
            return None
        try:
            refs = file_refs(payload.get("artifacts", []), "artifacts")
        except ValueError as e:
            return f"the task's files cannot be reported: {e}", False
        total = sum(ref.size for ref in refs)
        over = over_task_limit(refs, a.max_artifact_bytes)
        if over is not None:
            return over, False
        if total and not self._spool_room(total):
            return (f"spool full: this attempt's artifacts take {format_size(total)} "
                    f"({describe_files(refs)}), and {self.spool.describe_use()}; raise "
                    "--spool-max-bytes"), True
        return None

    def _send_result(self, held: Held) -> None:
        if not self.connected or self.link is None:
            return
        info = self.link.publish(self.link.topic[Channel.RESULT], held.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            held.resend_at = 0.0  # the bounded queue is full: again at the next heartbeat
            return
        self._last_flush_info = info
        first = max(RESEND_MIN_S, 10 * self.config.heartbeat_s)
        held.resend_every = min(RESEND_MAX_S, 2 * held.resend_every) if held.resend_every \
            else first
        held.resend_at = time.monotonic() + held.resend_every

    def _acknowledge(self, connection_number: int, mid: int) -> None:
        """PUBACK a message once it has been acted on (an assignment is on its way to a
        child first: the acknowledgement is off the task's path)."""
        if self.link is not None:
            self.link.acknowledge(connection_number, mid)

    # ===================================================================== helpers

    def _jobs(self) -> list[Job]:
        """Every attempt holding a slot: on a child, or fetching its inputs."""
        return self.pool.jobs() + self.fetcher.jobs()

    def _free_slots(self) -> int:
        return self.pool.free - len(self.fetcher.fetches)

    def _status(self, state: WorkerState) -> WorkerStatus:
        """The retained status; with state offline it is also the Last Will."""
        return WorkerStatus(
            worker_id=self.config.worker_id, state=state.value, session=self.session,
            ts=time.time(), host=self.host, version=self.version, slots=self.config.slots,
            free_slots=self._free_slots(),
            running=[job.assignment.task_id for job in self._jobs()],
            started_at=self.started_at,
            http_port=self.http.port if self.http is not None else None,
            heartbeat_s=self.config.heartbeat_s,
            kinds=self.kinds.versions(),
            image=self.image,
        )

    def _set_state(self, state: WorkerState) -> None:
        if self.state is not state:
            log.info("state %s -> %s", self.state.value, state.value)
            self.state = state
            self._status_changed(urgent=True)

    def _status_changed(self, urgent: bool = False) -> None:
        """Schedule a status: at once for a state change, else at most every 50 ms."""
        self._view_stale = True
        due = time.monotonic() if urgent else self._status_sent_at + STATUS_MIN_INTERVAL_S
        if self._status_due is None or due < self._status_due:
            self._status_due = due

    def _view(self) -> View:
        return View(
            worker_id=self.config.worker_id, state=self.state.value,
            running=tuple(job.assignment.task_id for job in self._jobs()),
            slots=self.config.slots, connected=self.connected,
            children=tuple((s.index, s.pid, s.job.assignment.task_id if s.job else None)
                           for s in self.pool.slots),
            counters={**self.counters, "results_unacked": len(self.held),
                      "child_restarts": sum(s.restarts for s in self.pool.slots),
                      "input_bytes_fetched": self.fetcher.fetched_bytes,
                      "spool_bytes": self.spool.used_bytes,
                      "spool_max_bytes": self.spool.max_bytes},
        )

    def _publish(self, channel: Channel, message: Message, *, qos: int = 1,
                 retain: bool = False) -> mqtt.MQTTMessageInfo | None:
        if self.link is None:
            return None
        info = self.link.publish(self.link.topic[channel], message.encode(), qos=qos,
                                 retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            log.warning("outgoing queue full: %s message dropped", message.TYPE)
        return info

    def _error_event(self, topic: str | None, detail: str) -> None:
        if len(detail) > MAX_EVENT_DETAIL_CHARS:
            detail = detail[:MAX_EVENT_DETAIL_CHARS] + "..."
        self._publish(Channel.EVENT, Event(self.config.worker_id, EventKind.ERROR.value, detail,
                                           time.time(), topic=topic))
