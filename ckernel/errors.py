"""Errors raised by the kernels' public API: the kind contract's own (``simkind``), so the
runtime treats the built-in kinds' errors like any plugin's."""

from __future__ import annotations

from simkind.errors import KindError as CkernelError
from simkind.errors import ParamError, SimulationError

__all__ = ["CkernelError", "ParamError", "SimulationError"]
