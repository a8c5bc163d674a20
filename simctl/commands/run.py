"""``simctl run``: submit a task file (or resume a run), dispatch it and show its progress."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from simctl.cli import pass_settings
from simctl.commands import (
    DEFAULT_TASKFILE,
    complete_run,
    detach_run,
    follow_run,
    open_ledger,
    report_run,
    seconds_option,
)
from simctl.config import Settings
from simctl.errors import InputError

if TYPE_CHECKING:
    from simctl.ledger import Ledger


@click.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option(
    "--detach", is_flag=True, help="Return once the run is stored; dispatch in the background."
)
@click.option("--resume", metavar="RUN", shell_complete=complete_run,
              help="Continue a run whose dispatcher died (a run id, a unique prefix of one, "
              "or `last`).")
@click.option(
    "--broker-changed",
    is_flag=True,
    help="With --resume: the run's broker was replaced; continue it on this one.",
)
@click.option(
    "--revalidate",
    is_flag=True,
    help="With --resume: validate the pending tasks again with the kinds installed here and "
    "run them with those versions (after an upgrade).",
)
@click.option(
    "--no-reuse",
    is_flag=True,
    help="Run every task, even one identical to a task done before (same kind, version, "
    "params and seed).",
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
    revalidate: bool,
    no_reuse: bool,
    timeout: float | None,
    quiet: bool,
) -> None:
    """Submit a task file (- reads standard input; default configs/tasks.yaml), dispatch it,
    and show its progress.

    If another simctl already dispatches for this ledger, the run is added and followed.
    """
    from simctl import runner
    from simctl import taskfile as tf_mod

    if resume and taskfile:
        raise InputError("give either a task file or --resume RUN_ID, not both")
    for flag, given in (("--broker-changed", broker_changed), ("--revalidate", revalidate)):
        if given and not resume:
            raise InputError(f"{flag} goes with --resume RUN_ID")
    if no_reuse and resume:
        raise InputError("--no-reuse goes with a task file: a resumed run's tasks are stored")
    if not resume:  # which file, before anything else is looked at
        taskfile = tf_mod.taskfile_argument(taskfile, DEFAULT_TASKFILE, "run")
    conn = settings.connection()
    held = None
    if resume:
        ledger = open_ledger(settings)
        run_id = ledger.resolve_run(resume)
        runner.check_broker(ledger, ledger.run(run_id), conn, changed=broker_changed)
        _check_versions(ledger, run_id, revalidate, quiet=as_json)
    else:
        # checked before the ledger is touched
        assert taskfile is not None
        tf = tf_mod.load(taskfile)
        ledger = open_ledger(settings)
        run_id, held = runner.submit(settings, conn, ledger, tf, dispatch_here=not detach,
                                     reuse=not no_reuse)
        if not as_json:
            reused = ledger.run(run_id).reused
            click.echo(
                f"run {run_id}: {tf_mod.count_of(len(tf.tasks), 'task')} from {tf.path} "
                f"(ledger {settings.store})"
                + (f"; {reused} done before, reused (--no-reuse to run them)" if reused else ""),
                err=True,
            )
    extra = {"store": str(settings.store)}
    if detach:
        detach_run(settings, ledger, run_id, as_json, extra)
        return
    info = follow_run(settings, ledger, run_id, timeout=timeout, quiet=quiet, held=held)
    report_run(ledger, info, as_json, extra)


def _check_versions(ledger: Ledger, run_id: str, revalidate: bool, quiet: bool) -> None:
    """Say which pending tasks were validated with another version of their kind than the
    installed one; with ``revalidate``, move them to the installed version."""
    import simkind
    from simctl import runner

    kinds = simkind.installed()
    if revalidate:
        n = runner.revalidate(ledger, run_id, kinds)
        if not quiet:
            click.echo(f"run {run_id}: {n} pending tasks validated again with the kinds "
                       "installed here", err=True)
        return
    for (kind, old, new), n in sorted(runner.version_changes(ledger, run_id, kinds).items()):
        click.echo(f"warning: run {run_id}: {n} pending tasks were validated with {kind} "
                   f"{old}, installed here is {new}: they run only on workers with {kind} "
                   f"{old} (--revalidate to run them with {new})", err=True)
