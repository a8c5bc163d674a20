"""The agent's task children: one long-lived process per slot, replaced when it dies.

Children start with the multiprocessing "spawn" context (a fresh interpreter: no copy of
the agent's MQTT threads or sockets) and with one BLAS/OpenMP thread each, so N slots use
N cores. Nothing is forked per task: a task is one message down a child's pipe.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from simproto.protocol import Assignment, CheckpointRef, FileRef, ResultState
from worker_agent.child import (
    Checkpointed,
    Done,
    Failed,
    HandedBack,
    Progress,
    Ready,
    Reply,
    Resumed,
    Run,
    Stop,
    child_main,
    receive,
    send,
)

log = logging.getLogger(__name__)

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to 1 for the children: one slot is one core, and oversubscribed BLAS threads are slower."""

JOIN_TIMEOUT_S = 2.0
"""How long a stopping or killed child may take to exit before it is SIGKILLed / abandoned."""

RESPAWN_DELAY_S = 1.0
"""Pause before replacing a child that died before it was ready (a broken install would
otherwise respawn in a tight loop)."""


@dataclass
class Job:
    """One attempt of one task while it is on a slot (or fetching its inputs for one)."""

    assignment: Assignment
    params: dict[str, Any]
    """The assignment's params as its kind validated them (defaults filled in): what the
    task process runs, without checking them again."""
    folder: str
    """Its attempt's artifact folder in the spool, as text: every task needs it so, for the
    pipe, and few as a ``Path`` (:attr:`artifact_dir`)."""
    inputs: dict[str, Path] = field(default_factory=dict)
    """Input name -> its file in the spool's cache."""
    checkpoint_folder: str | None = None
    """Where the task saves its checkpoints, as text (None: it saves none)."""
    progress: float = 0.0
    checkpoint: CheckpointRef | None = None
    """The latest checkpoint the task saved (its file is :attr:`checkpoint_path`)."""
    resumed_step: int = 0
    """The step the attempt resumed from (0: from the start)."""

    @property
    def key(self) -> tuple[str, int]:
        return (self.assignment.task_id, self.assignment.attempt)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.folder)

    @property
    def checkpoint_path(self) -> Path | None:
        """The file of the latest checkpoint (the task saves them in ``checkpoint_folder``)."""
        if self.checkpoint is None or self.checkpoint_folder is None:
            return None
        return Path(self.checkpoint_folder, self.checkpoint.file.name)


@dataclass(frozen=True)
class Outcome:
    """How a job left its slot."""

    job: Job
    state: ResultState
    started_at: float
    finished_at: float
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = False
    handed_back: bool = False
    """Stopped on request at a checkpoint (``job.checkpoint``), not finished."""


@dataclass
class Slot:
    """One child process and the job it runs (if any)."""

    index: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    pid: int | None = None
    ready: bool = False
    job: Job | None = None
    job_sent: bool = False
    job_started_at: float | None = None
    respawn_at: float | None = None
    restarts: int = 0


def describe_exit(exitcode: int | None) -> str:
    """'killed by signal 9 (SIGKILL)' or 'exit code 3'."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


class ChildPool:
    """A fixed number of slots, each served by a long-lived child process."""

    def __init__(self, size: int, selector: selectors.BaseSelector) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.slots = [Slot(i) for i in range(size)]
        self.changed = False
        """Set when a child started, became ready or died; the caller resets it."""
        self._selector = selector
        """The owner's selector: the pool registers each child's pipe and sentinel in it with
        the data (slot, "message" | "exit"); the owner waits on it and hands those events to
        :meth:`handle`."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every child (returns at once; see :meth:`wait_ready`)."""
        for var in THREAD_ENV_VARS:
            # Spawned children inherit this environment before they import numpy.
            os.environ[var] = "1"
        for slot in self.slots:
            self._spawn(slot)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every child has imported the kernels; False on timeout."""
        deadline = time.monotonic() + timeout
        while not all(s.ready for s in self.slots):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(min(remaining, 0.5))
        return True

    def close(self) -> None:
        """Stop every child (asked politely, then SIGKILL) and reap it."""
        for slot in self.slots:
            if slot.conn is not None and slot.process is not None and slot.process.is_alive():
                try:
                    send(slot.conn, Stop())
                except OSError:
                    slot.process.kill()
        for slot in self.slots:
            self._reap(slot)

    def _spawn(self, slot: Slot) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=child_main, args=(child,), name=f"worker-slot-{slot.index}", daemon=True
        )
        process.start()
        child.close()
        slot.process, slot.conn, slot.pid, slot.ready = process, parent, None, False
        slot.respawn_at = None
        self.changed = True
        self._selector.register(parent.fileno(), selectors.EVENT_READ, (slot, "message"))
        self._selector.register(process.sentinel, selectors.EVENT_READ, (slot, "exit"))
        log.debug("slot %d: child process %d starting", slot.index, process.pid)

    def _reap(self, slot: Slot) -> None:
        process = slot.process
        if process is not None:
            self._selector.unregister(process.sentinel)
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(JOIN_TIMEOUT_S)
            if not process.is_alive():
                process.close()
        if slot.conn is not None:
            self._selector.unregister(slot.conn.fileno())
            slot.conn.close()
        slot.process, slot.conn, slot.pid, slot.ready = None, None, None, False

    # ------------------------------------------------------------------------ jobs

    @property
    def free(self) -> int:
        return sum(1 for s in self.slots if s.job is None)

    def jobs(self) -> list[Job]:
        return [s.job for s in self.slots if s.job is not None]

    def find(self, task_id: str) -> Slot | None:
        for slot in self.slots:
            if slot.job is not None and slot.job.assignment.task_id == task_id:
                return slot
        return None

    def submit(self, job: Job) -> None:
        """Put a job on a free slot (the caller checked :attr:`free`)."""
        slot = next(s for s in self.slots if s.job is None)
        slot.job = job
        slot.job_sent = False
        slot.job_started_at = None
        if slot.ready:
            self._send_job(slot)

    def _send_job(self, slot: Slot) -> None:
        assert slot.job is not None and slot.conn is not None
        job = slot.job
        a = job.assignment
        slot.job_started_at = time.time()
        slot.job_sent = True
        with contextlib.suppress(OSError):  # a dead child's sentinel reports it on the next poll
            send(slot.conn, Run(a.task_id, a.kind, job.params, a.seed, job.folder,
                                {name: str(path) for name, path in job.inputs.items()},
                                a.checkpoint_every_s, job.checkpoint_folder))

    def request_checkpoint_stop(self, slot: Slot) -> None:
        """Ask the slot's task to save a checkpoint at its next save point and stop there
        (a kind that saves none keeps running)."""
        if slot.pid is not None and slot.job_sent:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGUSR1)

    def kill(self, slot: Slot, reason: str) -> tuple[Job, float]:
        """Terminate the slot's child (cancel, hand back), start a fresh one.

        Returns the job it ran and when that job started.
        """
        assert slot.job is not None
        job, started_at = slot.job, slot.job_started_at or time.time()
        log.info("slot %d: killing child %s running %s (%s)", slot.index, slot.pid,
                 job.assignment.task_id, reason)
        if slot.process is not None:
            slot.process.kill()
        self._reap(slot)
        slot.restarts += 1
        slot.job = None
        self._spawn(slot)
        return job, started_at

    # --------------------------------------------------------------------- polling

    def respawn(self, now: float) -> float | None:
        """Start children whose restart delay is over; the time of the next one due."""
        due = None
        for slot in self.slots:
            if slot.process is None and slot.respawn_at is not None:
                if slot.respawn_at <= now:
                    self._spawn(slot)
                else:
                    due = slot.respawn_at if due is None else min(due, slot.respawn_at)
        return due

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` on the selector for the children alone (at start-up,
        before the owner's loop runs); the owner's own fds stay ready for its next wait."""
        due = self.respawn(time.monotonic())
        if due is not None:
            timeout = min(timeout, due - time.monotonic())
        return self.handle([key.data for key, _ in self._selector.select(max(0.0, timeout))])

    def handle(self, events: list[Any]) -> list[Outcome]:
        """Act on the selector's events of the children (others are ignored): messages and
        deaths. Returns the jobs that ended (finished, failed, or lost with their child)."""
        events = [event for event in events if isinstance(event[0], Slot)]
        if not events:
            return []
        if len(events) > 1:
            events.sort(key=lambda event: event[1] == "exit")  # a last message precedes death
        outcomes: list[Outcome] = []
        for slot, what in events:
            if what == "message":
                # One message per wake-up; the level-triggered selector reports the rest.
                self._receive(slot, outcomes)
            elif slot.process is not None:
                while slot.conn is not None and slot.conn.poll(0):
                    if not self._receive(slot, outcomes):
                        break
                lost = self._replace_dead(slot)
                if lost is not None:
                    outcomes.append(lost)
        return outcomes

    def _receive(self, slot: Slot, outcomes: list[Outcome]) -> bool:
        """Handle one message of the slot's child; False when its pipe is closed."""
        assert slot.conn is not None
        try:
            message = receive(slot.conn)
        except (EOFError, OSError):
            return False  # the child is gone; its sentinel gets it replaced
        outcome = self._handle(slot, message)
        if outcome is not None:
            outcomes.append(outcome)
        return True

    def _handle(self, slot: Slot, message: Reply) -> Outcome | None:
        if isinstance(message, Ready):
            slot.ready, slot.pid = True, message.pid
            self.changed = True
            log.info("slot %d: child process %d ready", slot.index, slot.pid)
            if slot.job is not None and not slot.job_sent:
                self._send_job(slot)
            return None
        job = slot.job
        if job is None or job.assignment.task_id != message.task_id:
            return None  # a late message about a job this slot no longer holds
        match message:
            case Progress(fraction=fraction):
                job.progress = fraction
                return None
            case Checkpointed(step=step, path=path, size=size, sha256=sha256):
                job.checkpoint = CheckpointRef(step, FileRef(path.name, size, sha256))
                return None
            case Resumed(step=step, note=note):
                job.resumed_step = step
                log.info("%s attempt %d %s", *job.key,
                         f"resumed at step {step}" if step else f"started from step 0: {note}")
                return None
            case HandedBack(started_at=started_at, finished_at=finished_at):
                slot.job = None
                assert job.checkpoint is not None  # the child sends this only after one
                return Outcome(job, ResultState.FAILED, started_at, finished_at,
                               error=f"handed back at step {job.checkpoint.step}: agent "
                                     "stopping", retryable=True, handed_back=True)
            case Done(started_at=started_at, finished_at=finished_at, payload=payload):
                slot.job = None
                job.progress = 1.0
                return Outcome(job, ResultState.DONE, started_at, finished_at, payload)
            case Failed(started_at=started_at, finished_at=finished_at, error=error,
                        retryable=retryable):
                slot.job = None
                return Outcome(job, ResultState.FAILED, started_at, finished_at, error=error,
                               retryable=retryable)
        return None

    def _replace_dead(self, slot: Slot) -> Outcome | None:
        assert slot.process is not None
        slot.process.join(JOIN_TIMEOUT_S)
        how = describe_exit(slot.process.exitcode)
        was_ready = slot.ready
        job = slot.job
        lost = f"; {job.assignment.task_id} attempt {job.assignment.attempt} fails" if job else ""
        log.warning("slot %d: child process %s died: %s%s", slot.index, slot.process.pid, how,
                    lost)
        self._reap(slot)
        slot.restarts += 1
        outcome = None
        if slot.job is not None:
            now = time.time()
            outcome = Outcome(slot.job, ResultState.FAILED, slot.job_started_at or now, now,
                              error=f"worker process died: {how}", retryable=True)
            slot.job = None
        if was_ready:
            self._spawn(slot)
        else:
            slot.respawn_at = time.monotonic() + RESPAWN_DELAY_S
        return outcome
