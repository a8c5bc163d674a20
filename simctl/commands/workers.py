"""``simctl workers``: the workers the broker knows of; ``simctl workers forget ID`` removes
an offline one (its retained status)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from simctl.cli import pass_settings
from simctl.config import Settings
from simctl.errors import InputError

if TYPE_CHECKING:
    from simctl.display import Row

STALE_OFFLINE_S = 24 * 3600.0
"""An offline worker whose last status is older than this is hidden unless ``--all``."""


def observed_workers(settings: Settings) -> list[Row]:
    """The workers' rows from their retained statuses on the broker (raises BrokerError)."""
    from simctl.display import worker_rows
    from simctl.monitoring import STATUS_SYNC_S
    from simctl.mqtt import Observer

    with Observer(settings.connection()) as obs:
        obs.sync(STATUS_SYNC_S)
        statuses, _heard, _ = obs.snapshot()
    # This observer hears no heartbeats: what it heard are retained statuses, whose arrival
    # says nothing of their worker, and statuses published while it listened, whose ts is
    # now. So each status's own ts is when its worker was last seen.
    return worker_rows(statuses, {})


def hide_stale(rows: list[Row], now: float | None = None) -> tuple[list[Row], int]:
    """The rows without offline workers whose last status is older than STALE_OFFLINE_S,
    and how many were left out."""
    from simproto.protocol import WorkerState

    now = time.time() if now is None else now
    kept = [w for w in rows if w["state"] != WorkerState.OFFLINE.value
            or now - w["status_at"] <= STALE_OFFLINE_S]
    return kept, len(rows) - len(kept)


@click.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True,
              help="Also the offline workers not heard from for a day.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_context
def workers(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """The workers known to the broker (from their retained statuses): state, busy slots,
    running tasks, host, last seen. Offline workers not heard from for a day are hidden
    unless --all; `simctl workers forget ID` removes one for good."""
    if ctx.invoked_subcommand is not None:
        return
    from simctl.display import emit_json, workers_table

    rows = observed_workers(ctx.ensure_object(Settings))
    shown, hidden = (rows, 0) if show_all else hide_stale(rows)
    if as_json:
        emit_json({"workers": shown, "hidden": hidden})
        return
    click.echo(workers_table(shown) if shown else "no workers known")
    if hidden:
        click.echo(f"{hidden} offline worker{'s' if hidden != 1 else ''} not heard from for a "
                   "day hidden (--all shows them)")


@workers.command()
@click.argument("worker_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def forget(settings: Settings, worker_id: str, as_json: bool) -> None:
    """Remove an offline worker: clear its retained status, so status and monitor no longer
    list it. An online or draining worker is refused (stop its agent first). A forgotten
    worker that starts again announces itself as usual."""
    from simctl.display import emit_json, when
    from simctl.monitoring import STATUS_SYNC_S
    from simctl.mqtt import Observer
    from simproto.protocol import Channel, WorkerState

    conn = settings.connection()
    with Observer(conn) as obs:
        obs.sync(STATUS_SYNC_S)
        status = obs.snapshot()[0].get(worker_id)
        if status is None:
            raise InputError(f"no worker {worker_id!r} on the broker {conn.broker} (topic "
                             f"prefix {conn.topic_prefix}); `simctl workers --all` lists them")
        if status.state != WorkerState.OFFLINE.value:
            raise InputError(f"worker {worker_id} is {status.state}, not offline: only an "
                             "offline worker can be forgotten (stop its agent first)")
        obs.publish(conn.topics.worker(worker_id, Channel.STATUS), b"", retain=True)
    if as_json:
        emit_json({"worker_id": worker_id, "forgotten": True, "last_seen": status.ts})
    else:
        click.echo(f"forgot worker {worker_id} (offline, last seen {when(status.ts)})")
