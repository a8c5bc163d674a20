"""``simctl ping``: who answers, with the round-trip time."""

from __future__ import annotations

import click

from simctl.cli import pass_settings
from simctl.commands import seconds_option
from simctl.config import Settings
from simctl.errors import NoWorkers


@click.command()
@seconds_option("--timeout", above=True, default=2.0, help="How long to wait for answers.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def ping(settings: Settings, timeout: float, as_json: bool) -> None:
    """Ping every worker and show who answers, with the round-trip time."""
    from simctl.display import emit_json, table
    from simctl.mqtt import Observer

    with Observer(settings.connection()) as obs:
        pongs = obs.ping(timeout)
    workers = [
        {
            "worker_id": w,
            "rtt_ms": round(p.rtt_ms, 2),
            "state": p.pong.state,
            "slots": p.pong.slots,
            "free_slots": p.pong.free_slots,
            "version": p.pong.version,
        }
        for w, p in sorted(pongs.items())
    ]
    if as_json:
        emit_json({"workers": workers})
    elif workers:
        click.echo(
            table(
                [list(w.values()) for w in workers],
                ["worker", "rtt_ms", "state", "slots", "free", "version"],
            )
        )
    if not workers:
        raise NoWorkers(f"no worker answered within {timeout:g} s")
