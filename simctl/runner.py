"""Running a run: store it, then dispatch it here or follow the dispatcher that has the ledger.

Whoever holds the ledger's lock dispatches every active run of the ledger. A ``simctl run``
that finds the lock taken stores its run and follows it in the ledger; if the dispatcher
goes away meanwhile, the follower takes the lock over. A foreground dispatcher whose own
run has finished while other runs are still active hands them to a background dispatcher.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import simkind
from simctl import chains
from simctl.background import spawn_detached
from simctl.config import Settings
from simctl.dispatcher import Dispatcher, DispatcherLock
from simctl.errors import BrokerChanged, BrokerError, InputError, RunTimeout
from simctl.ledger import Ledger, RunInfo, RunState
from simctl.mqtt import Observer
from simctl.store import ArtifactStore
from simctl.taskfile import reuse_key
from simproto.protocol import Cancel, Channel, RunProgress

if TYPE_CHECKING:
    from simctl.taskfile import TaskFile
    from simproto.connection import ConnectionSettings

log = logging.getLogger(__name__)

FOLLOW_POLL_S = 0.25
"""How often a follower looks at the ledger (and at the lock)."""


def dispatcher_log(store: Path) -> Path:
    """Where a background dispatcher writes its log: beside the ledger."""
    return Path(f"{store}.dispatcher.log")


def spawn_background_dispatcher(
    settings: Settings, run_id: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``simctl _serve [RUN_ID]`` detached from this terminal.

    With a run id it follows that run (dispatching once it can take the lock); without, it
    serves every active run until none is left.
    """
    path = dispatcher_log(settings.store)
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "simctl", *settings.global_args(), "_serve"]
    return spawn_detached([*argv, run_id] if run_id else argv, path)


def broker_identity(conn: ConnectionSettings) -> tuple[str, str, str]:
    """(broker id, topic prefix, address) of the broker behind ``conn``, as runs record it
    (the id is made on first contact; raises ConnectionFailed)."""
    with Observer(conn) as obs:
        return (obs.broker_id(), conn.topic_prefix, str(conn.broker))


def check_broker(
    ledger: Ledger, info: RunInfo, conn: ConnectionSettings, *, changed: bool
) -> None:
    """Refuse to resume a run against another broker or topic prefix than it was submitted
    to (its results are not there) unless the user says the broker changed; then, or for a
    run from before the ledger recorded it, the run moves to this broker."""
    here = broker_identity(conn)
    broker_id = here[0]
    if info.broker_id is not None and (info.broker_id, info.topic_prefix) != here[:2]:
        if not changed:
            raise BrokerChanged(
                f"run {info.run_id} was submitted to broker {info.broker} (id {info.broker_id},"
                f" topic prefix {info.topic_prefix}), but {here[2]} is broker id {broker_id}"
                f" with topic prefix {here[1]}: results sent meanwhile are on the other one."
                f" Point simctl at that broker (--broker, --topic-prefix), or, if it was"
                f" replaced, say so: simctl run --resume {info.run_id} --broker-changed"
            )
        log.warning("run %s moves from broker %s to %s", info.run_id, info.broker_id, broker_id)
    ledger.set_run_broker(info.run_id, here)


def version_changes(ledger: Ledger, run_id: str,
                    kinds: simkind.Registry) -> dict[tuple[str, str | None, str], int]:
    """Pending tasks of a run validated with another version of their kind than the one
    installed here: (kind, their version, installed version) -> count. Tasks whose kind is
    not installed here, or whose version was not recorded, are not counted."""
    changes: dict[tuple[str, str | None, str], int] = {}
    for task in ledger.pending_tasks(run_id):
        kind, version = task.kind, task.kind_version
        installed = kinds.kinds.get(kind)
        if installed is not None and version is not None and version != installed.version:
            key = (kind, version, installed.version)
            changes[key] = changes.get(key, 0) + 1
    return changes


def revalidate(ledger: Ledger, run_id: str, kinds: simkind.Registry) -> int:
    """Validate a run's pending tasks again with the kinds installed here and record those
    versions (params get the new defaults; seeds stay). Nothing changes if one fails:
    InputError names the task. Returns how many tasks were validated anew."""
    updates = []
    for task in ledger.pending_tasks(run_id):
        try:
            installed = kinds.get(task.kind)
            validated = installed.kind.validate(task.params)
        except simkind.ParamError as e:
            raise InputError(f"--revalidate: task {task.task_id}: {e}; nothing was "
                             "changed") from e
        key = None if task.init_from is not None else reuse_key(
            task.kind, installed.version, validated, task.seed, task.input_digests)
        updates.append((task.task_id, validated, installed.version, key))
    ledger.revalidate(updates)
    return len(updates)


def submit(
    settings: Settings,
    conn: ConnectionSettings,
    ledger: Ledger,
    taskfile: TaskFile,
    *,
    dispatch_here: bool,
    reuse: bool = True,
) -> tuple[str, tuple[DispatcherLock, Dispatcher] | None]:
    """Store a run once the broker is known to answer; returns its id.

    With ``dispatch_here``, also takes the ledger's lock if it is free and connects this
    process's dispatcher (returned with the lock, for :func:`follow`). Nothing is stored when
    the broker cannot be reached. ``reuse``: tasks done before are not run again.
    """
    held = None
    broker = broker_identity(conn)
    # Before anything is stored: an init that does not resolve is the task file's error.
    starts = chains.resolve(taskfile, ledger, ArtifactStore.beside(ledger.path), copy=True)
    if dispatch_here:
        lock = DispatcherLock(settings.store)
        if lock.acquire():
            dispatcher = Dispatcher(ledger, conn, broker)
            try:
                dispatcher.connect()
            except BaseException:
                lock.release()
                raise
            held = (lock, dispatcher)
    return ledger.create_run(taskfile, broker, reuse=reuse, starts=starts), held


def retry(ledger: Ledger, run_id: str, conn: ConnectionSettings, *, cancelled: bool) -> int:
    """Put a finished run's failed tasks (and with ``cancelled`` its cancelled ones) back to
    pending, same seeds, fresh attempts; returns how many. The run must be on the broker
    behind ``conn`` (BrokerChanged otherwise: nothing is changed). Once it is active again a
    dispatcher picks it up (the one holding the ledger looks for active runs every
    ``RUNS_REFRESH_S``); :func:`follow` it or start one in the background."""
    check_broker(ledger, ledger.run(run_id), conn, changed=False)
    return ledger.retry_run(run_id, cancelled=cancelled)


def finished(ledger: Ledger, run_id: str) -> bool:
    return ledger.run_state(run_id) != RunState.ACTIVE.value


def follow(
    settings: Settings,
    ledger: Ledger,
    run_id: str,
    *,
    timeout: float | None,
    on_update: Callable[[RunInfo, dict[str, int]], None],
    held: tuple[DispatcherLock, Dispatcher] | None = None,
) -> RunInfo:
    """Until ``run_id`` finishes: dispatch if we hold (or can take) the lock, else follow.

    ``held`` is a lock this process holds with its connected dispatcher. ``on_update`` gets
    the run and what it waits for (pending tasks no online worker can run, by "kind
    version", as this process's dispatcher sees it). Raises RunTimeout after ``timeout``
    seconds, leaving the run resumable.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    lock, dispatcher = held if held else (DispatcherLock(settings.store), None)
    served = False
    last_poll = 0.0

    def poll() -> None:
        nonlocal last_poll
        now = time.monotonic()
        if now - last_poll >= FOLLOW_POLL_S:
            last_poll = now
            waiting = dispatcher.scheduler.waiting(run_id) if dispatcher is not None else {}
            on_update(ledger.run(run_id), waiting)

    def timed_out() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    try:
        while not finished(ledger, run_id):
            if timed_out():
                raise RunTimeout(_timeout_message(ledger.run(run_id), timeout))
            if dispatcher is None and lock.acquire():
                conn = settings.connection()
                dispatcher = Dispatcher(ledger, conn, broker_identity(conn))
            if dispatcher is not None:
                served = True
                dispatcher.serve(
                    until=lambda d: run_id in d.scheduler.finished_runs or timed_out(),
                    tick=poll,
                )
                continue
            poll()
            time.sleep(FOLLOW_POLL_S)
    finally:
        if dispatcher is not None:
            dispatcher.close()
            lock.release()
    info = ledger.run(run_id)
    on_update(info, {})
    if served and ledger.active_run_ids():
        log.info("handing the remaining active runs to a background dispatcher")
        spawn_background_dispatcher(settings)
    return info


def serve_all(settings: Settings) -> int:
    """The background dispatcher: serve every active run, exit when none is left."""
    lock = DispatcherLock(settings.store)
    if not lock.acquire():
        log.info("another dispatcher holds %s; nothing to do", lock.path)
        return 0
    ledger = Ledger(settings.store)
    try:
        conn = settings.connection()
        dispatcher = Dispatcher(ledger, conn, broker_identity(conn))
        try:
            dispatcher.serve(until=lambda d: not d.scheduler.runs)
        finally:
            dispatcher.close()
    finally:
        lock.release()
        ledger.close()
    return 0


@dataclass(frozen=True)
class Cancellation:
    """What :func:`cancel` did to a run."""

    before: RunInfo
    """The run as it was: nothing was cancelled unless it was active."""
    after: RunInfo
    stopped: int
    """Running tasks whose workers were told to stop."""
    broker_error: BrokerError | None
    """Why the workers could not be told (the run is cancelled in the ledger all the same)."""

    @property
    def cancelled(self) -> int:
        """Tasks cancelled: the pending and the running ones of an active run."""
        was = self.before
        return was.pending + was.running if was.state == RunState.ACTIVE.value else 0


def cancel(settings: Settings, ledger: Ledger, run_id: str) -> Cancellation:
    """Cancel a run in the ledger; if it was active, tell the workers running its tasks to
    stop them and publish its final retained progress.

    The progress says cancelled at once, with or without a dispatcher to publish it, so
    ``simctl monitor`` of another ledger shows no phantom active run.
    """
    before = ledger.run(run_id)
    stopped = ledger.cancel_run(run_id)
    told, broker_error = 0, None
    if before.state == RunState.ACTIVE.value:
        by_worker: dict[str, list[str]] = {}
        for task_id, worker_id in stopped:
            by_worker.setdefault(worker_id, []).append(task_id)
        after = ledger.run(run_id)
        try:
            conn = settings.connection()
            with Observer(conn) as obs:
                for worker_id, task_ids in by_worker.items():
                    obs.publish(
                        conn.topics.worker(worker_id, Channel.CONTROL),
                        Cancel(task_ids=task_ids).encode(),
                    )
                    told += len(task_ids)
                final = RunProgress(
                    run_id=run_id,
                    name=after.name,
                    state=after.state,
                    total=after.total,
                    done=after.done,
                    failed=after.failed,
                    running=0,
                    pending=0,
                    updated_at=time.time(),
                )
                obs.publish(conn.topics.run_progress(run_id), final.encode(), retain=True)
        except BrokerError as e:
            broker_error = e
    return Cancellation(before, ledger.run(run_id), told, broker_error)


def _timeout_message(info: RunInfo, timeout: float | None) -> str:
    unfinished = info.pending + info.running
    return (
        f"run {info.run_id} did not finish within {timeout:g} s ({unfinished} of {info.total} "
        f"tasks unfinished); continue it with `simctl run --resume {info.run_id}` or stop it "
        f"with `simctl cancel {info.run_id}`"
    )
