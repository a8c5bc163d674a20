"""Output helpers: tables (tabulate), JSON, durations, and the run progress bar."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

import click

from simctl.ledger import RunInfo

BAR_WIDTH = 30
"""Characters of the progress bar on a terminal."""

TTY_REFRESH_S = 0.2
"""Smallest interval between two redraws of the progress bar on a terminal."""

PLAIN_REFRESH_S = 2.0
"""Smallest interval between two progress lines when output is not a terminal."""


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain text table."""
    from tabulate import tabulate  # not needed for --json output, and slow to import

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def emit_json(obj: Any, lines: bool = False) -> None:
    """Print one JSON document on stdout (on one line with ``lines``, for JSON Lines streams)."""
    click.echo(json.dumps(obj, indent=None if lines else 2, default=str))


def duration(seconds: float | None) -> str:
    """``1:02:03`` or ``2:03`` or ``4.2s``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def when(epoch: float | None) -> str:
    """Local time of an epoch timestamp."""
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def ago(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return f"{duration(max(0.0, time.time() - epoch))} ago"


class ProgressBar:
    """done/total, running, failed and ETA of one run, on stderr.

    On a terminal one line is redrawn in place; otherwise a plain line is printed at most
    every few seconds (and whenever the run finishes), so logs stay readable.
    """

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._last_line = ""
        self._start_done: int | None = None
        self._start = time.monotonic()

    def update(self, run: RunInfo, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        force = force or run.state != "active"
        if not force and now - self._last < (TTY_REFRESH_S if self.tty else PLAIN_REFRESH_S):
            return
        self._last = now
        if self._start_done is None:
            self._start_done = run.done + run.failed + run.cancelled
        line = self.line(run, now)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        elif line != self._last_line:
            self.stream.write(line + "\n")
        self._last_line = line
        self.stream.flush()

    def line(self, run: RunInfo, now: float) -> str:
        finished = run.done + run.failed + run.cancelled
        total = max(run.total, 1)
        eta = "-"
        rate_done = finished - (self._start_done or 0)
        elapsed = now - self._start
        if rate_done > 0 and finished < run.total:
            eta = duration((run.total - finished) * elapsed / rate_done)
        elif finished >= run.total:
            eta = "0.0s"
        text = (
            f"{run.run_id} {finished}/{run.total} finished, {run.done} done, "
            f"{run.running} running, {run.failed} failed, ETA {eta}"
        )
        if self.tty:
            filled = int(BAR_WIDTH * finished / total)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " + text
        return text

    def close(self) -> None:
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
            self._last_line = ""
