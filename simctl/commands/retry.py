"""``simctl retry``: run a finished run's failed tasks again, in the same run."""

from __future__ import annotations

import click

from simctl.cli import pass_settings
from simctl.commands import (
    detach_run,
    follow_run,
    open_ledger,
    report_run,
    run_argument,
    seconds_option,
)
from simctl.config import Settings


@click.command()
@run_argument()
@click.option("--cancelled", is_flag=True, help="Also retry the cancelled tasks.")
@click.option(
    "--detach", is_flag=True, help="Return once the tasks are pending; dispatch in the background."
)
@seconds_option(
    "--timeout",
    above=True,
    help="Give up following after this long (the run stays resumable); exit 3.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@pass_settings
def retry(
    settings: Settings,
    run_id: str,
    cancelled: bool,
    detach: bool,
    timeout: float | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Put the failed tasks of a finished run back to pending and dispatch them again.

    The tasks keep their seeds and the run its id; each gets max_attempts fresh attempts,
    numbered after its earlier ones (which stay in the ledger). Reused results are never
    retried. Then the run is followed to its end like `simctl run --resume`, or dispatched
    in the background with --detach.

    RUN is a run id, a unique prefix of one, or `last` (the newest run).
    """
    from simctl import runner
    from simctl.display import emit_json

    ledger = open_ledger(settings)
    run_id = ledger.resolve_run(run_id)
    retried = runner.retry(ledger, run_id, settings.connection(), cancelled=cancelled)
    what = "failed or cancelled" if cancelled else "failed"
    if not retried:
        info = ledger.run(run_id)
        if as_json:
            emit_json({**info.to_json(), "retried": 0})
        else:
            click.echo(f"run {run_id} ({info.state}) has no {what} tasks; nothing to retry")
        return
    if not as_json:
        click.echo(f"run {run_id}: {retried} {what} tasks pending again", err=True)
    if detach:
        detach_run(settings, ledger, run_id, as_json, {"retried": retried})
        return
    info = follow_run(settings, ledger, run_id, timeout=timeout, quiet=quiet)
    report_run(ledger, info, as_json, {"retried": retried})
