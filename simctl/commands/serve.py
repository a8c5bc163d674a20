"""``simctl _serve`` (hidden): the background dispatcher."""

from __future__ import annotations

import click

from simctl.cli import pass_settings
from simctl.commands import exit_with, open_ledger
from simctl.config import Settings


@click.command("_serve", hidden=True)
@click.argument("run_id", required=False)
@pass_settings
def serve(settings: Settings, run_id: str | None) -> None:
    """Background dispatcher (started by run --detach and by a finishing foreground run)."""
    from simctl import runner

    if run_id is None:
        exit_with(runner.serve_all(settings))
    runner.follow(settings, open_ledger(settings), run_id, timeout=None,
                  on_update=lambda _info, _waiting: None)
