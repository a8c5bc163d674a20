"""Errors raised by the kernels' public API."""

from __future__ import annotations


class CkernelError(Exception):
    """Base of every error raised by ckernel."""


class ParamError(CkernelError, ValueError):
    """Invalid kind or parameters; the message names the field, the value and what is allowed."""


class SimulationError(CkernelError, RuntimeError):
    """A simulation became non-finite (blew up) or failed on purpose; the message says where."""
