"""``simctl run``: submit a task file (or resume a run), dispatch it and show its progress."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from simctl.cli import pass_settings
from simctl.commands import (
    DEFAULT_TASKFILE,
    INTERRUPTED_EXIT_CODE,
    exit_with,
    open_ledger,
    seconds_option,
)
from simctl.config import Settings
from simctl.errors import InputError, TasksFailed

if TYPE_CHECKING:
    from simctl.ledger import Ledger, RunInfo


@click.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option(
    "--detach", is_flag=True, help="Return once the run is stored; dispatch in the background."
)
@click.option("--resume", metavar="RUN_ID", help="Continue a run whose dispatcher died.")
@click.option(
    "--broker-changed",
    is_flag=True,
    help="With --resume: the run's broker was replaced; continue it on this one.",
)
@seconds_option(
    "--timeout",
    above=True,
    help="Give up following after this long (the run stays resumable); exit 3.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@pass_settings
def run(
    settings: Settings,
    taskfile: Path | None,
    as_json: bool,
    detach: bool,
    resume: str | None,
    broker_changed: bool,
    timeout: float | None,
    quiet: bool,
) -> None:
    """Submit a task file (default configs/tasks.yaml), dispatch it, and show its progress.

    If another simctl already dispatches for this ledger, the run is added and followed.
    """
    from simctl import runner
    from simctl import taskfile as tf_mod
    from simctl.display import ProgressBar

    if resume and taskfile:
        raise InputError("give either a task file or --resume RUN_ID, not both")
    if broker_changed and not resume:
        raise InputError("--broker-changed goes with --resume RUN_ID")
    conn = settings.connection()
    held = None
    if resume:
        ledger = open_ledger(settings)
        runner.check_broker(ledger, ledger.run(resume), conn, changed=broker_changed)
        run_id = resume
    else:
        tf = tf_mod.load(taskfile or DEFAULT_TASKFILE)  # checked before the ledger is touched
        ledger = open_ledger(settings)
        run_id, held = runner.submit(settings, conn, ledger, tf, dispatch_here=not detach)
        if not as_json:
            click.echo(
                f"run {run_id}: {len(tf.tasks)} tasks from {tf.path} (ledger {settings.store})",
                err=True,
            )
    if detach:
        runner.spawn_background_dispatcher(settings, run_id)
        info = ledger.run(run_id)
        if as_json:
            from simctl.display import emit_json

            emit_json({**_run_json(info, settings), "detached": True})
        else:
            click.echo(run_id)
            click.echo(
                f"dispatching in the background; follow with `simctl status {run_id}` "
                f"or `simctl run --resume {run_id}`",
                err=True,
            )
        return
    bar = ProgressBar(enabled=not quiet)
    try:
        info = runner.follow(
            settings, ledger, run_id, timeout=timeout, on_update=bar.update, held=held
        )
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"\ninterrupted: run {run_id} is kept in the ledger; continue it with "
            f"`simctl run --resume {run_id}` or stop it with `simctl cancel {run_id}`",
            err=True,
        )
        exit_with(INTERRUPTED_EXIT_CODE)
    finally:
        bar.close()
    _report_run(settings, ledger, info, as_json)


def _run_json(info: RunInfo, settings: Settings) -> dict[str, Any]:
    return {**info.to_json(), "store": str(settings.store)}


def _report_run(settings: Settings, ledger: Ledger, info: RunInfo, as_json: bool) -> None:
    from simctl.display import emit_json
    from simctl.results import run_summary

    if as_json:
        emit_json(_run_json(info, settings))
    else:
        click.echo(run_summary(ledger, info))
    if info.state != "done":
        exit_with(TasksFailed.exit_code)
