"""Output helpers: tables (tabulate), JSON, durations, the rows and tables of workers and runs
(one builder each, for ``status`` and ``monitor``), and the run progress bar."""

from __future__ import annotations

import json
import os
import shutil
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


def stream_width(stream: IO[str], env: Mapping[str, str]) -> int:
    """Columns of the terminal ``stream`` writes to: ``$COLUMNS`` if set, else the terminal's
    own size, else :func:`shutil.get_terminal_size`'s answer (80 when nothing is known)."""
    columns = env.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in "..." when cut."""
    if len(text) <= width:
        return text
    return text[: width - 3] + "..." if width > 3 else text[:width]


class ProgressBar:
    """done/total, running, failed and ETA of one run, on stderr.

    On a terminal one line is redrawn in place (``\\r``, then the clear-line sequence unless
    ``NO_COLOR`` is set, when spaces blank what is left of the previous line); the line always
    fits the terminal's width, so it never wraps: the bar shrinks first, then the text (the note
    of what the run waits for, then the counts' wording). Otherwise, and on a ``TERM=dumb``
    terminal, a plain line is printed at most every few seconds (and whenever the run
    finishes), so logs stay readable; no escape sequence is ever written to either.

    The ETA comes from the rate at which tasks finish, measured between the first and the
    latest finish the bar saw (not from the start, which includes the wait for the first
    task), and counts down from the latest finish; "-" until two finishes were seen.
    """

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True,
                 env: Mapping[str, str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.env = os.environ if env is None else env
        term = self.env.get("TERM", "")
        self.terminal = self.stream.isatty()
        """Whether the stream is a terminal (lines then fit its width)."""
        self.tty = self.terminal and term != "dumb"
        """Whether the line is redrawn in place."""
        self.escapes = self.tty and "NO_COLOR" not in self.env
        """Whether ANSI sequences may be written (https://no-color.org, and not TERM=dumb)."""
        self._last = 0.0
        self._last_line = ""
        self._seen: int | None = None
        """Finished tasks at the previous observation."""
        self._first: tuple[float, int] | None = None
        """(time, finished) of the first finish seen."""
        self._latest: tuple[float, int] | None = None
        """(time, finished) of the latest finish seen."""

    def update(self, run: RunInfo, waiting: Mapping[str, int] | None = None,
               force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        force = force or run.state != "active"
        if not force and now - self._last < (TTY_REFRESH_S if self.tty else PLAIN_REFRESH_S):
            return
        self._last = now
        width = stream_width(self.stream, self.env) - 1 if self.terminal else None
        # One column short of the width: a line that fills the last column leaves some
        # terminals' cursor on the next line, so the next \r would not come back to it.
        line = self.line(run, now, waiting or {}, width)
        if self.tty:
            blank = ""
            if not self.escapes:
                blank = " " * max(0, min(len(self._last_line), width or 0) - len(line))
            self.stream.write(("\r\x1b[2K" if self.escapes else "\r") + line + blank)
        elif line != self._last_line:
            self.stream.write(line + "\n")
        self._last_line = line
        self.stream.flush()

    def eta(self, run: RunInfo, now: float) -> str:
        """Time left for ``run`` at ``now``, from the finishes seen by :meth:`observe`."""
        finished = run.done + run.failed + run.cancelled
        if finished >= run.total:
            return "0.0s"
        if self._first is None or self._latest is None or self._latest[1] <= self._first[1]:
            return "-"
        (t0, f0), (t1, f1) = self._first, self._latest
        left = run.total - finished
        rate = (f1 - f0) / max(t1 - t0, 1e-9)
        eta = left / rate - (now - t1)
        if eta <= 0:
            # Overdue: finishing has slowed down since the latest finish; count the time
            # since then into the rate instead of showing 0 while tasks remain.
            eta = left * (now - t0) / (f1 - f0)
        return duration(eta)

    def observe(self, finished: int, now: float) -> None:
        """Note how many tasks of the run have finished at ``now``."""
        if self._seen is not None and finished > self._seen:
            self._latest = (now, finished)
            if self._first is None:
                self._first = self._latest
        self._seen = finished

    def line(self, run: RunInfo, now: float, waiting: Mapping[str, int] | None = None,
             width: int | None = None) -> str:
        """The progress line of ``run`` at ``now`` (monotonic seconds), at most ``width``
        characters (None: no limit), with the bar when the line is redrawn in place."""
        finished = run.done + run.failed + run.cancelled
        self.observe(finished, now)
        eta = self.eta(run, now)
        texts = [
            f"{run.run_id} {finished}/{run.total} finished, {run.done} done, "
            f"{run.running} running, {run.failed} failed, ETA {eta}",
            f"{run.run_id} {finished}/{run.total} {run.running} run {run.failed} fail ETA {eta}",
            f"{finished}/{run.total} ETA {eta}",
        ]
        note = waiting_text(waiting) if waiting else ""
        fraction = finished / max(run.total, 1)
        if width is None:
            text = texts[0] + (f"; {note}" if note else "")
            return f"{bar(fraction, BAR_WIDTH)} {text}" if self.tty else text
        return fit(texts, note, fraction if self.tty else None, width)

    def close(self) -> None:
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
            self._last_line = ""


MIN_BAR_WIDTH = 10
"""Fewest characters of the bar before the text is shortened instead."""

MIN_NOTE = 20
"""Fewest characters of a shortened note of what a run waits for (less says nothing)."""


def bar(fraction: float, width: int) -> str:
    """``[####......]`` with ``width`` characters between the brackets."""
    filled = min(width, int(width * fraction))
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def fit(texts: Sequence[str], note: str, fraction: float | None, width: int) -> str:
    """The most a line of ``width`` characters can say: the bar (if ``fraction`` is given)
    as wide as it can be, down to :data:`MIN_BAR_WIDTH`, then the first of ``texts``
    (longest first) that fits, followed by ``note`` shortened to the room left; without the
    bar when even the shortest text does not fit beside it; cut to ``width`` at the last."""
    bars = [True, False] if fraction is not None else [False]
    for with_bar in bars:
        room = width - (MIN_BAR_WIDTH + 3 if with_bar else 0)  # "[", "]" and a space
        for text in texts:
            if len(text) > room:
                continue
            if note and len(text) + 2 + len(note) > room:
                if room - len(text) - 2 >= MIN_NOTE:
                    text += "; " + shorten(note, room - len(text) - 2)
                elif text != texts[-1]:
                    continue  # a shorter text leaves room for the note
            elif note:
                text += "; " + note
            if not with_bar or fraction is None:
                return text
            bar_width = min(BAR_WIDTH, width - len(text) - 3)
            return f"{bar(fraction, bar_width)} {text}"
    return shorten(texts[-1], width)
