"""The task child: a long-lived process that runs one kernel call at a time for one slot.

It talks to the agent over one pipe (both ends are this project's own processes, so the
pipe carries pickled frozen dataclasses of this module; nothing from the network reaches it
unchecked). Requests: :class:`Run` and :class:`Stop`. Replies: :class:`Ready`,
:class:`Progress`, :class:`Done` and :class:`Failed`.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

PROGRESS_INTERVAL_S = 0.05
"""Least time between two progress messages of one task (kernels may report per step)."""

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Run:
    """Agent -> child: run one kernel call."""

    task_id: str
    kind: str
    params: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class Stop:
    """Agent -> child: exit."""


@dataclass(frozen=True)
class Ready:
    """Child -> agent: the kernels are imported; send tasks."""

    pid: int


@dataclass(frozen=True)
class Progress:
    """Child -> agent: how far the running task is, in [0, 1)."""

    task_id: str
    fraction: float


@dataclass(frozen=True)
class Done:
    """Child -> agent: the task finished; ``payload`` holds summary, observables, metadata."""

    task_id: str
    started_at: float
    finished_at: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """Child -> agent: the task failed; ``retryable`` is false when another attempt would
    fail the same way."""

    task_id: str
    started_at: float
    finished_at: float
    error: str
    retryable: bool


Reply = Ready | Progress | Done | Failed
"""What a child sends the agent."""


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
    _die_with_parent()
    import ckernel  # loaded before "ready", so the first task pays no import

    conn.send(Ready(os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the agent is gone
        match request:
            case Run():
                conn.send(_run(conn, ckernel, request))
            case _:
                return  # Stop


def _run(conn: Connection, ckernel: Any, request: Run) -> Done | Failed:
    task_id = request.task_id
    # The first report waits one interval, and the end is not reported: "done" says it. A
    # short task then costs one message each way, which matters at hundreds per second.
    last_sent = time.monotonic()

    def progress(fraction: float) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent >= PROGRESS_INTERVAL_S and fraction < 1.0:
            last_sent = now
            conn.send(Progress(task_id, max(float(fraction), 0.0)))

    started_at = time.time()
    try:
        output = ckernel.simulate(request.kind, request.params, request.seed, progress=progress)
    except (ckernel.ParamError, ckernel.SimulationError) as e:
        # Deterministic for these parameters and this seed: another attempt fails the same way.
        return Failed(task_id, started_at, time.time(), str(e), False)
    except Exception as e:
        return Failed(task_id, started_at, time.time(), f"{type(e).__name__}: {e}", True)
    finished_at = time.time()
    try:
        payload = result_payload(output)
    except (TypeError, ValueError) as e:
        return Failed(task_id, started_at, finished_at, f"result not encodable: {e}", False)
    return Done(task_id, started_at, finished_at, payload)


def result_payload(output: dict[str, Any]) -> dict[str, Any]:
    """Turn ``ckernel.simulate``'s output into plain ``summary``/``observables``/``metadata``.

    Observables become flat lists of floats (the wire's float series); an array of more
    than one dimension is flattened in C order and its shape recorded under
    ``metadata["observable_shapes"]``.
    """
    import numpy as np

    observables: dict[str, list[float]] = {}
    shapes: dict[str, list[int]] = {}
    for name, values in (output.get("observables") or {}).items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            shapes[str(name)] = list(array.shape)
        observables[str(name)] = array.ravel().tolist()
    summary: dict[str, float] = {}
    for name, value in (output.get("summary") or {}).items():
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"summary value {name!r} is not finite: {number}")
        summary[str(name)] = number
    metadata = plain(output.get("metadata") or {})
    if shapes:
        metadata["observable_shapes"] = shapes
    return {"summary": summary, "observables": observables, "metadata": metadata}


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into JSON-ready Python objects."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; keep the information as text
    return value
