"""``simctl status``: workers and runs at a glance, or the tasks of one run."""

from __future__ import annotations

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger
from simctl.config import Settings
from simctl.errors import SimctlError


@click.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def status(settings: Settings, run_id: str | None, as_json: bool) -> None:
    """Workers and runs at a glance; with RUN_ID, one row per task of that run."""
    from simctl import monitoring
    from simctl.display import (
        emit_json,
        run_row,
        runs_table,
        table,
        waiting_notes,
        workers_table,
    )

    ledger = open_ledger(settings)
    if run_id is not None:
        info = ledger.run(run_id)
        tasks = ledger.task_states(run_id)
        if as_json:
            emit_json({"run": info.to_json(), "tasks": tasks})
            return
        click.echo(runs_table([run_row(info)]) + "\n")
        click.echo(
            table(
                [
                    [
                        t["task_id"],
                        t["kind"],
                        t["state"],
                        t["worker_id"] or "-",
                        t["attempts"],
                        t["error"] or "",
                    ]
                    for t in tasks
                ],
                ["task", "kind", "state", "worker", "attempts", "failure"],
            )
        )
        return
    runs = ledger.runs()
    broker_error: SimctlError | None = None
    try:
        workers = monitoring.workers(settings)
    except SimctlError as e:
        workers, broker_error = [], e
    rejected = ledger.rejections()
    waits = {r.run_id: monitoring.waiting(ledger, r.run_id, workers) for r in runs
             if r.state == "active" and broker_error is None}
    if as_json:
        emit_json({"workers": workers, "rejected": rejected,
                   "runs": [{**r.to_json(), "waiting": waits.get(r.run_id, {})} for r in runs]})
    else:
        click.echo(workers_table(workers) if workers else "no workers known")
        click.echo()
        rows = [{**run_row(r), "waiting": waits.get(r.run_id, {})} for r in runs]
        click.echo(runs_table(rows) if runs else f"no runs in {settings.store}")
        for note in waiting_notes(rows):
            click.echo(note)
        if rejected:
            counts = ", ".join(f"{reason} {r['count']}" for reason, r in rejected.items())
            click.echo(f"\nmessages refused by the dispatcher: {counts} (details: --json)")
    if broker_error is not None:
        raise broker_error
