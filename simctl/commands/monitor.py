"""``simctl monitor``: a live view of workers, active runs and throughput."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from simctl.cli import pass_settings
from simctl.commands import seconds_option
from simctl.config import Settings

if TYPE_CHECKING:
    from simctl.monitoring import Screen

WORKER_COLUMNS = ("worker", "state", "busy", "last seen")
RUN_COLUMNS = ("run", "name", "done", "failed", "running", "pending", "elapsed")


@click.command()
@seconds_option("--interval", minimum=0.1, default=5.0, help="Refresh interval.")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Stop after N refreshes (default: run until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per refresh, one per line.")
@pass_settings
def monitor(settings: Settings, interval: float, count: int | None, as_json: bool) -> None:
    """A live view of workers, active runs and throughput; Ctrl-C leaves (exit code 0).

    It stays up while the broker is away (killed, restarted, `simctl local down`): the screen
    says since when it is unreachable, the ledger's runs are still shown, and it reconnects
    when the broker is back.
    """
    from simctl.display import emit_json
    from simctl.monitoring import screens

    # The screen is cleared only on a terminal that can, and no escape is sent under NO_COLOR.
    tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ
    # Once, at the start: `simctl local down` takes the local broker's address out of the
    # local state, and the monitor must outlive that.
    where = f"broker {settings.connection().broker}  prefix {settings.prefix}"
    shown = screens(settings, interval, count)
    try:
        for screen in shown:
            if as_json:
                emit_json(screen.to_json(), lines=True)
            else:
                _print(where, screen, tty)
    except KeyboardInterrupt:
        pass
    finally:
        shown.close()


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _print(where: str, screen: Screen, tty: bool) -> None:
    from simctl.display import runs_table, waiting_notes, workers_table

    if tty:
        click.echo("\x1b[2J\x1b[H", nl=False)
    click.echo(f"simctl monitor  {_clock(screen.time)}  {where}")
    if screen.broker is not None and not screen.broker.connected:
        click.echo(f"broker unreachable since {_clock(screen.broker.since)} (retrying)")
    workers, runs, rate = screen.workers, screen.runs, screen.throughput_per_s
    click.echo(workers_table(workers, WORKER_COLUMNS) if workers else "no workers known")
    click.echo()
    click.echo(runs_table(runs, RUN_COLUMNS) if runs else "no active runs")
    for note in waiting_notes(runs):
        click.echo(note)
    click.echo(f"\nthroughput: {'-' if rate is None else f'{rate:.1f} tasks/s'}")
    if not tty:
        click.echo("")
