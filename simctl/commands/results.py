"""``simctl results``: a run's results as a table, CSV or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger
from simctl.config import Settings


@click.command()
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--observables", is_flag=True, help="With JSON: include every observable series.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file instead of stdout.",
)
@pass_settings
def results(
    settings: Settings, run_id: str, fmt: str, as_json: bool, observables: bool, output: Path | None
) -> None:
    """Results of a run (also while it is in progress)."""
    from simctl.results import render

    text = render(open_ledger(settings), run_id, "json" if as_json else fmt, observables)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
