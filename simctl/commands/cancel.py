"""``simctl cancel``: cancel a run and stop its running tasks."""

from __future__ import annotations

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger, run_argument
from simctl.config import Settings


@click.command()
@run_argument()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def cancel(settings: Settings, run_id: str, as_json: bool) -> None:
    """Cancel a run: pending tasks are dropped, running ones are stopped on their workers.

    RUN is a run id, a unique prefix of one, or `last` (the newest run).
    """
    from simctl import runner
    from simctl.display import emit_json

    ledger = open_ledger(settings)
    run_id = ledger.resolve_run(run_id)
    outcome = runner.cancel(settings, ledger, run_id)
    before = outcome.before
    if as_json:
        emit_json(
            {
                "run_id": run_id,
                "state": outcome.after.state,
                "was": before.state,
                "cancelled": outcome.cancelled,
                "stopped": outcome.stopped,
            }
        )
    elif before.state != "active":
        click.echo(f"run {run_id} had already finished ({before.state}); nothing to cancel")
    else:
        click.echo(
            f"cancelled run {run_id}: {before.pending} pending tasks dropped, "
            f"{outcome.stopped} running tasks told to stop"
        )
    if outcome.broker_error is not None:
        raise outcome.broker_error
