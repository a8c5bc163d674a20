"""``simctl delete``: remove a finished run from the ledger, with the files only it has."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger, run_argument
from simctl.config import Settings

if TYPE_CHECKING:
    pass


@click.command()
@run_argument()
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@pass_settings
def delete(settings: Settings, run_id: str, yes: bool, as_json: bool) -> None:
    """Delete a run: its tasks, attempts, results and artifacts.

    Asks first (--yes does not), saying what goes: the run's tasks, its artifacts and the
    bytes the store gives back (files another run also has stay). An active run is refused:
    cancel it first. RUN is a run id, a unique prefix of one, or `last` (the newest run).
    """
    from simctl.artifacts import deletion
    from simctl.display import emit_json
    from simctl.ledger import RunState
    from simctl.store import ArtifactStore
    from simproto.sizes import format_size

    ledger = open_ledger(settings)
    run_id = ledger.resolve_run(run_id)
    info = ledger.run(run_id)
    if info.state == RunState.ACTIVE.value:
        ledger.delete_run(run_id)  # refuses (RunActive), saying how to stop it: before asking
    plan = deletion(ledger, run_id)
    if not yes:
        click.echo(
            f"run {run_id} ({info.name}): {info.state}, {info.total} tasks "
            f"({info.done} done, {info.failed} failed); {plan.files} artifacts, "
            f"{format_size(plan.bytes)}; {format_size(plan.freed)} freed in the store",
            err=True)
        if not click.confirm("delete it?", default=False, err=True):
            if as_json:
                emit_json({"run_id": run_id, "deleted": False})
            else:
                click.echo(f"kept run {run_id}", err=True)
            return
    digests = ledger.delete_run(run_id)
    # After the ledger's commit: a file is gone from the store only once nothing names it.
    freed = ArtifactStore.beside(settings.store).remove(digests)
    if as_json:
        emit_json({"run_id": run_id, "name": info.name, "deleted": True, "tasks": info.total,
                   "artifacts": plan.files, "artifact_bytes": plan.bytes,
                   "removed": sorted(digests), "bytes_freed": freed})
    else:
        click.echo(f"deleted run {run_id} ({info.name}): {info.total} tasks, {plan.files} "
                   f"artifacts; {len(digests)} files removed from the store, "
                   f"{format_size(freed)} freed")

