"""Validated particle-simulation kernels: Lennard-Jones MD, gravitational N-body, Langevin.

Public API: :data:`KINDS`, :func:`validate`, :func:`simulate`, :class:`ParamError`,
:class:`SimulationError`, and the helpers in :mod:`ckernel.lj`. See ``docs/kernels.md``.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable
from importlib import metadata as _metadata
from typing import Any

import numpy as np

from ckernel import _backend, brownian, lj, nbody
from ckernel._run import PROGRESS_CALLS, Run
from ckernel.errors import CkernelError, ParamError, SimulationError
from ckernel.params import KINDS, validate

__all__ = ["KINDS", "CkernelError", "ParamError", "SimulationError", "simulate", "validate"]

_DRIVERS = {"lj": lj.run, "nbody": nbody.run, "brownian": brownian.run}


@functools.cache  # reading the installed metadata costs about a millisecond
def _package_version() -> str:
    try:
        return _metadata.version("particle-sim")
    except _metadata.PackageNotFoundError:
        return "unknown"


def _sleep(params: dict[str, Any], progress: Callable[[float], None] | None) -> Run:
    """The diagnostic kind: wait ``seconds`` in slices (reporting progress), maybe fail."""
    seconds = params["seconds"]
    slices = PROGRESS_CALLS if seconds > 0.0 else 1
    started = time.monotonic()
    for i in range(1, slices + 1):
        # time.sleep(0) still yields the CPU (over a millisecond on a busy machine).
        if (delay := started + seconds * i / slices - time.monotonic()) > 0.0:
            time.sleep(delay)
        if progress is not None:
            progress(i / slices)
    if params["fail"]:
        raise SimulationError("sleep: failed on purpose (fail: true)")
    return Run({"t": [0.0, seconds]}, {"seconds": seconds}, {}, atom_steps=0)


def run(kind: str, params: dict[str, Any], seed: int,
        progress: Callable[[float], None] | None = None,
        backend: str = "auto") -> tuple[Run, str, dict[str, Any]]:
    """Validate and run one simulation; return the raw run record (with the final state
    arrays), the backend used and the validated params. :func:`simulate` wraps this."""
    params = validate(kind, params)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamError(f"seed = {seed!r}: must be a non-negative int")
    if kind == "sleep":
        _backend.select(backend)  # still reject an unknown backend name
        return _sleep(params, progress), "python", params
    name, kernels = _backend.select(backend)
    return _DRIVERS[kind](params, seed, progress, kernels), name, params


def simulate(kind: str, params: dict[str, Any], seed: int,
             progress: Callable[[float], None] | None = None,
             backend: str = "auto") -> dict[str, Any]:
    """Run one simulation and return its JSON-serialisable result.

    Keys: kind, params (validated, defaults filled), seed, observables (name -> list of
    floats, ``t`` the sample times), summary (name -> float) and metadata. Raises
    ParamError for bad input and SimulationError when the simulation blows up.
    """
    started = time.perf_counter()
    record, backend_used, params = run(kind, params, seed, progress, backend)
    elapsed = time.perf_counter() - started
    meta = {
        "package": "particle-sim",
        "package_version": _package_version(),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "backend": backend_used,
        "threads": _backend.THREADS,
        "simd_variant": _backend.simd_variant(kind, backend_used),
        "elapsed_s": elapsed,
        "atom_steps": record.atom_steps,
        "atom_steps_per_s": record.atom_steps / elapsed if elapsed > 0.0 else 0.0,
        **record.metadata,
    }
    return {
        "kind": kind,
        "params": params,
        "seed": seed,
        "observables": {name: [float(x) for x in values]
                        for name, values in record.observables.items()},
        "summary": {name: float(value) for name, value in record.summary.items()},
        "metadata": meta,
    }
