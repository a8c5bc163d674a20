"""A token bucket that bounds how often something may happen, for both sides of the protocol.

A flood of hostile messages must not turn into a flood of log lines or of error events (the
agent's outgoing queue is bounded, and results share it): each refused message is still
counted, but only so many a second are reported one by one.
"""

from __future__ import annotations

import time


class RateLimit:
    """At most ``burst`` events at once, refilled at ``per_s`` a second; counts the rest."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.suppressed = 0
        """Events refused since the last one allowed (the allowed one may report them)."""

    def allow(self) -> bool:
        """Whether one more event may happen now."""
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def unreported(self) -> str:
        """For the report an allowed event makes: `` (N more since the last report)`` if
        events were refused since the last one, else ``""``; counting starts again."""
        count, self.suppressed = self.suppressed, 0
        return f" ({count} more since the last report)" if count else ""
