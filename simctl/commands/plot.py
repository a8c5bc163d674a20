"""``simctl plot``: figures of a run's results (PNG, SVG or PDF)."""

from __future__ import annotations

from pathlib import Path

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger, run_argument
from simctl.config import Settings


def _figure_file(_ctx: click.Context, _param: click.Parameter, value: Path | None
                 ) -> Path | None:
    from simctl.plots import FORMATS

    if value is not None and value.suffix.lower() not in FORMATS:
        raise click.BadParameter(f"{value}: the file name must end in {', '.join(FORMATS)}")
    return value


@click.command()
@run_argument()
@click.option("--y", metavar="SUMMARY", help="The summary value to plot over the sweep points.")
@click.option("--x", metavar="PARAM",
              help="The x axis: a parameter or summary value (with --y; default: the first "
              "swept parameter), or an observable (with --observable; default: t).")
@click.option("--group-by", metavar="PARAM",
              help="One line per value of this parameter (with --y).")
@click.option("--observable", metavar="NAME",
              help="Plot this observable against time: replicas, their mean and a band of "
              "one standard error.")
@click.option("--task", metavar="TASK", help="Only this task's series (with --observable).")
@click.option("--kind", metavar="KIND",
              help="Only the tasks of this kind (when several kinds have the name).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              callback=_figure_file,
              help="Write here (.png, .svg or .pdf; with several plots, each gets its name "
              "added) [default: RUN-<name>.png in the current folder].")
@click.option("--json", "as_json", is_flag=True,
              help="Print what was plotted (files, series data) as JSON.")
@pass_settings
def plot(settings: Settings, run_id: str, y: str | None, x: str | None,
         group_by: str | None, observable: str | None, task: str | None, kind: str | None,
         output: Path | None, as_json: bool) -> None:
    """Plot a run's results: a summary value over the sweep points (--y, error bars: the
    standard error over the replicas), an observable against time (--observable), or,
    with neither, the default plots of the run's kinds.

    RUN is a run id, a unique prefix of one, or `last` (the newest run).
    """
    if y is not None and observable is not None:
        raise click.UsageError("give --y or --observable, not both")
    if group_by is not None and y is None:
        raise click.UsageError("--group-by goes with --y")
    if task is not None and observable is None:
        raise click.UsageError("--task goes with --observable")
    if x is not None and y is None and observable is None:
        raise click.UsageError("--x goes with --y or --observable")
    from simctl.display import emit_json
    from simctl.plots import Request, plot_run, require_matplotlib

    require_matplotlib()
    ledger = open_ledger(settings)
    drawn = plot_run(ledger, ledger.resolve_run(run_id),
                     Request(y=y, x=x, group_by=group_by, observable=observable, task=task,
                             kind=kind), output)
    if as_json:
        emit_json(drawn.to_json())
        return
    for chart, path in drawn.charts:
        click.echo(f"wrote {path} ({chart.title})")
    for reason in drawn.skipped:
        click.echo(f"left out: {reason}", err=True)
