"""Validated particle-simulation kernels: Lennard-Jones MD, gravitational N-body, Langevin.

Public API: :data:`KINDS`, :func:`validate`, :func:`simulate`, :func:`run`,
:class:`ParamError`, :class:`SimulationError`, and the helpers in :mod:`ckernel.lj`. See
``docs/kernels.md``. The kinds are ``simkind`` plugins (:mod:`ckernel.params`); importing
this package (and validating) needs neither numpy nor the compiled extension, which
:func:`simulate` and :func:`run` load on first use.
"""

from __future__ import annotations

from typing import Any

from ckernel.errors import CkernelError, ParamError, SimulationError
from ckernel.params import KINDS, validate

__all__ = ["KINDS", "CkernelError", "ParamError", "SimulationError", "run", "simulate",
           "validate"]


def __getattr__(name: str) -> Any:
    # The drivers import numpy and the extension: only where simulations run.
    if name in ("simulate", "run"):
        from ckernel import drivers

        return getattr(drivers, name)
    raise AttributeError(f"module 'ckernel' has no attribute {name!r}")
