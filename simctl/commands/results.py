"""``simctl results``: a run's results, per task or per sweep point, as a table, CSV, JSON or
Parquet."""

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
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format (parquet: with -o FILE; needs the analysis extra).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--aggregate", "aggregated", is_flag=True,
              help="One row per sweep point (replicas together): count, mean and standard "
                   "error of each summary value.")
@click.option("--observables", is_flag=True,
              help="Include every observable series (with --format json only).")
@click.option("--metadata", is_flag=True,
              help="CSV and Parquet: a meta.<name> column per metadata value of the results.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only the tasks of this kind (repeatable); a CSV gets only their columns.")
@click.option("--wide", is_flag=True, help="Table: whole summaries, not cut at 80 characters.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file instead of stdout.",
)
@click.option("--artifacts", "artifacts_dir", type=click.Path(path_type=Path, file_okay=False),
              metavar="DIR", help="Also export the tasks' files into DIR: a folder per task "
              "named by its sweep point, and index.csv.")
@click.option("--force", is_flag=True,
              help="With --artifacts: replace files in DIR that differ from the run's.")
@pass_settings
def results(
    settings: Settings,
    run_id: str,
    fmt: str,
    as_json: bool,
    aggregated: bool,
    observables: bool,
    metadata: bool,
    kinds: tuple[str, ...],
    wide: bool,
    output: Path | None,
    artifacts_dir: Path | None,
    force: bool,
) -> None:
    """Results of a run (also while it is in progress), per task or per sweep point.

    RUN is a run id, a unique prefix of one, or `last` (the newest run). With --artifacts,
    the files of the tasks shown are exported first (again: only what is new); a file in DIR
    that differs from the run's is an error unless --force.
    """
    fmt = "json" if as_json else fmt
    if force and artifacts_dir is None:
        raise click.UsageError("--force goes with --artifacts DIR")
    if artifacts_dir is not None:
        _export(settings, run_id, artifacts_dir, kinds, force)
    if fmt == "parquet":
        from simctl.results import parquet_table, write_parquet

        if output is None:
            raise click.UsageError("--format parquet writes a binary file: give -o FILE")
        ledger = open_ledger(settings)
        table = parquet_table(ledger, ledger.resolve_run(run_id), kinds or None, aggregated,
                              metadata)
        write_parquet(table, output)
        click.echo(f"wrote {output}", err=True)
        return
    from simctl.results import render

    ledger = open_ledger(settings)
    text = render(ledger, ledger.resolve_run(run_id), fmt, observables, kinds=kinds or None,
                  wide=wide, aggregated=aggregated, metadata=metadata)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


def _export(settings: Settings, run_id: str, dest: Path, kinds: tuple[str, ...],
            force: bool) -> None:
    from simctl.artifacts import export
    from simctl.store import ArtifactStore

    ledger = open_ledger(settings)
    done = export(ledger, ArtifactStore.beside(settings.store), ledger.resolve_run(run_id),
                  dest, kinds=kinds or None, force=force)
    click.echo(done.text(dest), err=True)
