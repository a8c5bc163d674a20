"""``simctl results``: a run's results as a table, CSV or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger, run_argument
from simctl.config import Settings


@click.command()
@run_argument()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--observables", is_flag=True,
              help="Include every observable series (with --format json only).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only the tasks of this kind (repeatable); a CSV gets only their columns.")
@click.option("--wide", is_flag=True, help="Table: whole summaries, not cut at 80 characters.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file instead of stdout.",
)
@pass_settings
def results(
    settings: Settings,
    run_id: str,
    fmt: str,
    as_json: bool,
    observables: bool,
    kinds: tuple[str, ...],
    wide: bool,
    output: Path | None,
) -> None:
    """Results of a run (also while it is in progress).

    RUN is a run id, a unique prefix of one, or `last` (the newest run).
    """
    from simctl.results import render

    ledger = open_ledger(settings)
    text = render(ledger, ledger.resolve_run(run_id), "json" if as_json else fmt, observables,
                  kinds=kinds or None, wide=wide)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
