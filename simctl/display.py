"""Output helpers: tables (tabulate), JSON, durations, the rows and tables of workers and runs
(one builder each, for ``status`` and ``monitor``), and the run progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from simctl.ledger import RunInfo
    from simproto.protocol import RunProgress, WorkerStatus

Row = dict[str, Any]

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


def worker_rows(statuses: Mapping[str, WorkerStatus], heard: Mapping[str, float]) -> list[Row]:
    """One row per worker, by id, from their statuses and when each was last heard live
    (the workers of ``simctl status --json``).

    ``last_seen`` is the later of the status's own ``ts`` (when the worker published it) and
    ``heard``, which must hold only the arrival of live messages (heartbeats, statuses
    published while listening): a retained copy arrives whenever one subscribes, long after
    its worker may have gone.
    """
    return [
        {
            "worker_id": s.worker_id,
            "state": s.state,
            "host": s.host,
            "version": s.version,
            "slots": s.slots,
            "busy_slots": max(0, s.slots - s.free_slots),
            "free_slots": s.free_slots,
            "running": list(s.running),
            "last_seen": max(s.ts, heard.get(s.worker_id, s.ts)),
            "status_at": s.ts,
            "http_port": s.http_port,
            "kinds": dict(s.kinds),
            "image": s.image,
        }
        for s in sorted(statuses.values(), key=lambda s: s.worker_id)
    ]


def waiting_text(waiting: Mapping[str, int]) -> str:
    """What a run waits for, in words: "3 tasks wait: no online worker has kind chain 1.0"."""
    return "; ".join(f"{n} task{'s' if n != 1 else ''} wait: no online worker has kind {need}"
                     for need, n in sorted(waiting.items()))


def waiting_notes(runs: Sequence[Row]) -> list[str]:
    """One line per run row that waits for a kind no online worker has."""
    return [f"run {r['run_id']}: {waiting_text(r['waiting'])}" for r in runs if r.get("waiting")]


def run_row(info: RunInfo) -> Row:
    """A run of the ledger as the run tables show it."""
    return {
        "run_id": info.run_id,
        "name": info.name,
        "state": info.state,
        "total": info.total,
        "done": info.done,
        "failed": info.failed,
        "running": info.running,
        "pending": info.pending,
        "created_at": info.created_at,
        "elapsed_s": info.elapsed_s,
    }


def progress_row(progress: RunProgress) -> Row:
    """A run known only from its retained progress (another ledger's): when it started and
    how long it has taken are not known."""
    return {
        "run_id": progress.run_id,
        "name": progress.name,
        "state": progress.state,
        "total": progress.total,
        "done": progress.done,
        "failed": progress.failed,
        "running": progress.running,
        "pending": progress.pending,
        "created_at": None,
        "elapsed_s": None,
    }


WORKER_CELLS: dict[str, Callable[[Row], Any]] = {
    "worker": lambda w: w["worker_id"],
    "state": lambda w: w["state"],
    "busy": lambda w: f"{w['busy_slots']}/{w['slots']}",
    "running": lambda w: len(w["running"]),
    "host": lambda w: w["host"],
    "last seen": lambda w: ago(w["last_seen"]),
}
"""The columns a worker table can have, from a row of :func:`worker_rows`."""

RUN_CELLS: dict[str, Callable[[Row], Any]] = {
    "run": lambda r: r["run_id"],
    "name": lambda r: r["name"],
    "state": lambda r: r["state"],
    "done": lambda r: f"{r['done']}/{r['total']}",
    "failed": lambda r: r["failed"],
    "running": lambda r: r["running"],
    "pending": lambda r: r["pending"],
    "started": lambda r: when(r["created_at"]),
    "elapsed": lambda r: duration(r["elapsed_s"]),
}
"""The columns a run table can have, from a row of :func:`run_row` or :func:`progress_row`."""


def rows_table(
    rows: list[Row], cells: Mapping[str, Callable[[Row], Any]], columns: Sequence[str]
) -> str:
    """A table of ``rows`` with ``columns``, each cell made by ``cells[column]``."""
    return table([[cells[c](r) for c in columns] for r in rows], list(columns))


def workers_table(
    rows: list[Row],
    columns: Sequence[str] = ("worker", "state", "busy", "running", "host", "last seen"),
) -> str:
    return rows_table(rows, WORKER_CELLS, columns)


def runs_table(
    rows: list[Row],
    columns: Sequence[str] = (
        "run",
        "name",
        "state",
        "done",
        "failed",
        "running",
        "started",
        "elapsed",
    ),
) -> str:
    return rows_table(rows, RUN_CELLS, columns)


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

    def update(self, run: RunInfo, waiting: Mapping[str, int] | None = None,
               force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        force = force or run.state != "active"
        if not force and now - self._last < (TTY_REFRESH_S if self.tty else PLAIN_REFRESH_S):
            return
        self._last = now
        if self._start_done is None:
            self._start_done = run.done + run.failed + run.cancelled
        line = self.line(run, now, waiting or {})
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        elif line != self._last_line:
            self.stream.write(line + "\n")
        self._last_line = line
        self.stream.flush()

    def line(self, run: RunInfo, now: float, waiting: Mapping[str, int] | None = None) -> str:
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
        if waiting:
            text += "; " + waiting_text(waiting)
        if self.tty:
            filled = int(BAR_WIDTH * finished / total)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " + text
        return text

    def close(self) -> None:
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
            self._last_line = ""
