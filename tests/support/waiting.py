"""Polling until a condition holds, for tests and benchmarks alike (no pytest here)."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(AssertionError):
    """A condition did not hold in time; an assertion error, so a test fails on it."""


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy, and return that; raise
    :class:`WaitTimeout` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)
