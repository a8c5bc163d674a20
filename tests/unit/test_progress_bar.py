"""The run progress line: it fits the terminal (a real pseudo-terminal of 80 columns), redraws
in place only on a terminal that can, writes no escape sequence under NO_COLOR or TERM=dumb,
and its ETA comes from the rate of finishing (a fake clock: ``line(run, now)``)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios
from collections.abc import Iterator
from dataclasses import replace
from typing import IO

import pytest

from simctl.display import ProgressBar, fit
from simctl.ledger import RunInfo

LONG_RUN_ID = "20261202-101112-sweep-of-the-chain-with-a-long-name"
WAITING = {"chain 1.0": 3, "lj 0.1": 12}
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(finished: int, total: int = 26, running: int = 3, state: str = "active") -> RunInfo:
    pending = max(0, total - finished - running)
    return RunInfo(
        run_id=LONG_RUN_ID, name="sweep", seed=1, max_attempts=3, taskfile="t.yaml",
        total=total, state=state, created_at=0.0, finished_at=None, duplicates=0, max_lost=0,
        broker_id=None, topic_prefix=None, broker=None,
        counts={"done": finished, "assigned": min(running, total - finished),
                "pending": pending},
    )


@pytest.fixture
def terminal() -> Iterator[tuple[IO[str], int]]:
    """A real pseudo-terminal of 80 columns: the stream the bar writes to, and the master
    side's descriptor, to read what the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def drain(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0)[0]:
        chunks.append(os.read(master, 65536))
    return b"".join(chunks).decode()


def draw_a_run(stream: IO[str], master: int, env: dict[str, str]) -> str:
    """Every state of a run drawn by a bar on ``stream``; what the terminal received."""
    bar = ProgressBar(stream, env=env)
    received = []
    for finished in range(27):
        bar.update(run(finished, state="done" if finished == 26 else "active"),
                   waiting=WAITING if finished < 20 else None, force=True)
        received.append(drain(master))
    bar.close()
    received.append(drain(master))
    return "".join(received)


def screen_lines(output: str) -> list[str]:
    """What each redraw or line left on the screen: the text between carriage returns and
    newlines, escape sequences removed."""
    return [part for part in re.split(r"[\r\n]", ESCAPE.sub("", output)) if part]


def test_the_line_fits_an_80_column_terminal_and_is_redrawn_in_place(terminal) -> None:
    stream, master = terminal
    output = draw_a_run(stream, master, {"TERM": "xterm-256color"})
    lines = screen_lines(output)
    assert len(lines) == 27
    assert max(len(line) for line in lines) < 80
    assert output.count("\x1b[2K") == 27  # each redraw clears the line it rewrites
    assert output.count("\n") == 1  # the line ends once, at close
    assert lines[0].startswith("[") and "wait: no online worker" in lines[0]
    assert lines[-1].startswith("[" + "#" * 10)


def test_no_color_redraws_with_spaces_instead_of_escape_sequences(terminal) -> None:
    stream, master = terminal
    output = draw_a_run(stream, master, {"TERM": "xterm", "NO_COLOR": "1"})
    assert "\x1b" not in output
    redraws = [part for part in output.split("\r") if part.strip()]
    assert len(redraws) == 27 and max(len(r.rstrip("\n")) for r in redraws) < 80
    # A shorter line blanks what the longer one before it left on the screen.
    assert len(redraws[20].rstrip()) < len(redraws[19]) == len(redraws[20])


def test_a_dumb_terminal_gets_plain_lines_that_fit(terminal) -> None:
    stream, master = terminal
    output = draw_a_run(stream, master, {"TERM": "dumb"})
    assert "\x1b" not in output
    lines = output.replace("\r\n", "\n").splitlines()
    assert "\r" not in output.replace("\r\n", "")  # the pty turns \n into \r\n, nothing else
    assert len(lines) == 27 and max(len(line) for line in lines) < 80
    assert not lines[0].startswith("[")


def test_the_terminal_width_is_read_at_each_redraw(terminal) -> None:
    stream, master = terminal
    bar = ProgressBar(stream, env={"TERM": "xterm"})
    bar.update(run(3), WAITING, force=True)
    fcntl.ioctl(stream.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    bar.update(run(4), WAITING, force=True)
    first, second = screen_lines(drain(master))
    assert 40 <= len(first) < 80 and len(second) < 40


@pytest.mark.parametrize("waiting", [None, WAITING])
def test_fit_never_exceeds_the_width(waiting: dict[str, int] | None) -> None:
    bar = ProgressBar(io.StringIO(), env={})
    bar.tty = True  # draw the bar as on a terminal
    for width in range(1, 220):
        line = bar.line(run(7), 0.0, waiting, width)
        assert len(line) <= width, (width, line)
    wide = bar.line(run(7), 0.0, waiting, 400)
    assert wide.startswith("[" + "#" * 8 + "." * 22 + "] " + LONG_RUN_ID)
    assert ("; 3 tasks wait: no online worker has kind chain 1.0" in wide) == bool(waiting)


def test_fit_shrinks_the_bar_before_the_text_and_shortens_the_note() -> None:
    texts = ["run 3/26 finished, ETA 1:00", "3/26 ETA 1:00"]
    assert fit(texts, "", 0.5, 60) == "[" + "#" * 15 + "." * 15 + "] " + texts[0]
    assert fit(texts, "", 0.5, 45) == "[" + "#" * 7 + "." * 8 + "] " + texts[0]
    assert fit(texts, "", 0.5, 30) == "[" + "#" * 7 + "." * 7 + "] " + texts[1]
    note = "3 tasks wait: no online worker has kind chain 1.0"
    line = fit(texts, note, 0.5, 79)
    assert len(line) == 79 and line.endswith("...") and "; 3 tasks wait: no online" in line


def times(bar: ProgressBar, steps: list[tuple[float, int]], total: int = 26) -> list[str]:
    """The ETA shown at each (now, finished) step."""
    etas = []
    for now, finished in steps:
        etas.append(bar.line(run(finished, total), now).rsplit("ETA ", 1)[1])
    return etas


def test_eta_waits_for_two_finishes_and_ignores_the_wait_for_the_first() -> None:
    bar = ProgressBar(io.StringIO(), env={})
    # 60 s before the first task finishes (workers starting, tasks waiting), then one
    # finish every 10 s: 24 left at 1 per 10 s is 4:00, whatever the wait before.
    assert times(bar, [(0.0, 0), (30.0, 0), (60.0, 1)]) == ["-", "-", "-"]
    assert times(bar, [(70.0, 2)]) == ["4:00"]


def test_eta_counts_down_between_finishes_instead_of_climbing() -> None:
    bar = ProgressBar(io.StringIO(), env={})
    times(bar, [(0.0, 0), (10.0, 3), (40.0, 6)])  # 3 tasks per 30 s
    assert times(bar, [(40.0, 6), (50.0, 6), (60.0, 6)]) == ["3:20", "3:10", "3:00"]
    assert times(bar, [(70.0, 9)]) == ["2:50"]  # on schedule: 17 left at 1 per 10 s
    # Overdue (nothing finished for 5 minutes): the slower rate, never 0 while tasks remain.
    assert times(bar, [(370.0, 9)]) == ["17:00"]  # 17 left at 6 per 360 s


def test_eta_of_a_resumed_run_starts_from_what_was_finished() -> None:
    bar = ProgressBar(io.StringIO(), env={})
    assert times(bar, [(0.0, 20), (5.0, 21)]) == ["-", "-"]  # 20 were done before: not a rate
    assert times(bar, [(10.0, 22), (20.0, 26)]) == ["20.0s", "0.0s"]


def test_a_finished_run_shows_no_time_left() -> None:
    bar = ProgressBar(io.StringIO(), env={})
    done = replace(run(26), state="done")
    assert bar.line(done, 0.0).endswith("ETA 0.0s")
