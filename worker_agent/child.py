"""The task child: a long-lived process that runs one kernel call at a time for one slot.

It talks to the agent over one pipe (both ends are this project's own processes, so the
pipe carries pickled frozen dataclasses of this module, each pickled as its class and field
values, through :func:`send` and :func:`receive`; nothing from the network reaches it
unchecked). Requests: :class:`Run` and
:class:`Stop`. Replies: :class:`Ready`, :class:`Progress`, :class:`Checkpointed`,
:class:`Resumed`, :class:`Done`, :class:`Failed` and :class:`HandedBack`. SIGUSR1 asks the
running task to save a checkpoint at its next save point and stop there (a warm stop of the
agent hands the task back with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import simkind
from simkind.registry import run_function
from simproto.transfer import hash_file

PROGRESS_INTERVAL_S = 0.05
"""Least time between two progress messages of one task (kernels may report per step)."""

_PR_SET_PDEATHSIG = 1


class PipeMessage:
    """Pickles as its class and its field values, in order. Pickle's default for a
    dataclass (an empty object, then its attribute dictionary) took three times as long, and
    every task sends two messages on the pipe."""

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # A frozen dataclass's __init__ sets every field, in order, and nothing else.
        return (type(self), tuple(self.__dict__.values()))


@dataclass(frozen=True)
class Run(PipeMessage):
    """Agent -> child: run one kernel call with ``params`` as the kind validated them (in the
    agent, which fails a task with bad params itself); the task writes its files into
    ``artifact_dir`` (its attempt's folder in the spool) and reads its input files from
    ``inputs``. Paths travel as text: a pickled ``Path`` is rebuilt from its parts, several
    times slower."""

    task_id: str
    kind: str
    params: dict[str, Any]
    seed: int
    artifact_dir: str
    inputs: dict[str, str]
    checkpoint_every_s: float = 0.0
    checkpoint_dir: str | None = None
    """Where the task saves its checkpoints (None: it saves none)."""


@dataclass(frozen=True)
class Stop(PipeMessage):
    """Agent -> child: exit."""


@dataclass(frozen=True)
class Ready(PipeMessage):
    """Child -> agent: the kernels are imported; send tasks."""

    pid: int


@dataclass(frozen=True)
class Progress(PipeMessage):
    """Child -> agent: how far the running task is, in [0, 1)."""

    task_id: str
    fraction: float


@dataclass(frozen=True)
class Checkpointed(PipeMessage):
    """Child -> agent: the running task saved a checkpoint of ``step`` in ``path`` (hashed
    here, off the agent's loop); the checkpoint before it is gone."""

    task_id: str
    step: int
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Resumed(PipeMessage):
    """Child -> agent: the task was given a checkpoint and started from ``step`` (0 when it
    could not use it; ``note`` says why)."""

    task_id: str
    step: int
    note: str


@dataclass(frozen=True)
class HandedBack(PipeMessage):
    """Child -> agent: asked to stop (SIGUSR1), the task saved a checkpoint and stopped
    there: the one the :class:`Checkpointed` just before this message named."""

    task_id: str
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class Done(PipeMessage):
    """Child -> agent: the task finished; ``payload`` holds summary, observables, metadata
    and artifacts (the manifest of the files it left in its artifact folder)."""

    task_id: str
    started_at: float
    finished_at: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Failed(PipeMessage):
    """Child -> agent: the task failed; ``retryable`` is false when another attempt would
    fail the same way."""

    task_id: str
    started_at: float
    finished_at: float
    error: str
    retryable: bool


Reply = Ready | Progress | Checkpointed | Resumed | Done | Failed | HandedBack
"""What a child sends the agent."""


def send(conn: Connection, message: PipeMessage) -> None:
    """Send one message down the pipe. The plain pickler: the one ``Connection.send`` uses
    (multiprocessing's, for file descriptors and sockets, which never travel here) copies
    the table of reducers for every message, and every task sends two."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> Any:
    """The next message of the pipe (EOFError or OSError once the other end is gone)."""
    return pickle.loads(conn.recv_bytes())


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the agent dies, so no orphan keeps computing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def child_main(conn: Connection) -> None:
    """Serve run requests until told to stop or the agent goes away."""
    # Signals for the whole process group (Ctrl-C, systemd or a test stopping the agent's
    # group) are the agent's business: it decides between a warm and a cold stop and ends
    # its children itself (a "stop" request, or SIGKILL to cancel).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _on_checkpoint_stop)
    _die_with_parent()
    kinds = _load_kinds()  # before "ready", so the first task pays no import
    send(conn, Ready(os.getpid()))
    while True:
        try:
            request = receive(conn)
        except (EOFError, OSError):
            return  # the agent is gone
        match request:
            case Run():
                send(conn, _run(conn, kinds, request))
            case _:
                return  # Stop


_running: simkind.Context | None = None
"""The context of the task running now (what SIGUSR1 asks to save and stop)."""


def _on_checkpoint_stop(_signum: int, _frame: Any) -> None:
    if _running is not None:
        _running.request_checkpoint_stop()


def _load_kinds() -> simkind.Registry:
    """The installed kinds, with every run function imported. A kind whose run module
    fails to import is left for its tasks to fail with that error (retryable: another
    worker may have it working); the other kinds are unaffected."""
    kinds = simkind.installed()
    for loaded in kinds.kinds.values():
        with contextlib.suppress(Exception):
            run_function(loaded.kind.run)
    return kinds


def _run(conn: Connection, kinds: simkind.Registry, request: Run) -> Done | Failed | HandedBack:
    global _running
    task_id = request.task_id
    # The first report waits one interval, and the end is not reported: "done" says it. A
    # short task then costs one message each way, which matters at hundreds per second.
    last_sent = time.monotonic()

    def progress(fraction: float) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent >= PROGRESS_INTERVAL_S and fraction < 1.0:
            last_sent = now
            send(conn, Progress(task_id, max(float(fraction), 0.0)))

    saved = False

    def checkpointed(step: int, path: Path) -> None:
        nonlocal saved
        send(conn, Checkpointed(task_id, step, path, *hash_file(path)))
        saved = True

    def resumed(step: int, note: str) -> None:
        send(conn, Resumed(task_id, step, note))

    started_at = time.time()
    context = simkind.Context(task_id, progress, artifact_dir=request.artifact_dir,
                              inputs={name: Path(path) for name, path in request.inputs.items()},
                              checkpoint_every_s=request.checkpoint_every_s,
                              checkpoint_dir=request.checkpoint_dir,
                              on_checkpoint=checkpointed, on_resume=resumed)
    _running = context
    try:
        output = simkind.execute(kinds.get(request.kind), request.params, request.seed, context,
                                 validated=True)
    except simkind.Preempted:
        if saved:
            return HandedBack(task_id, started_at, time.time())
        # A kind's own mistake: Preempted without a checkpoint saved through the context.
        return Failed(task_id, started_at, time.time(), "Preempted raised with no checkpoint "
                      "saved (only Context.save_checkpoint may raise it)", True)
    except (simkind.ParamError, simkind.SimulationError) as e:
        # Deterministic for these parameters and this seed: another attempt fails the same way.
        return Failed(task_id, started_at, time.time(), str(e), False)
    except Exception as e:
        return Failed(task_id, started_at, time.time(), f"{type(e).__name__}: {e}", True)
    finally:
        _running = None
    payload = {name: output[name]
               for name in ("summary", "observables", "metadata", "artifacts")}
    return Done(task_id, started_at, time.time(), payload)
