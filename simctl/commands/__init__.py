"""The simctl commands, one module per command or command group.

:mod:`simctl.cli` imports a module here only when its command is used or listed by
``--help``, so a module imports click and light simctl modules at its top and everything
else (numpy, paho, sqlite, the ledger, the dispatcher) inside its command. Each command
parses, calls one library function and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from simctl.config import Settings
    from simctl.dispatcher import Dispatcher, DispatcherLock
    from simctl.ledger import Ledger, RunInfo

DEFAULT_TASKFILE = Path("configs/tasks.yaml")
"""The task file ``simctl run`` and ``simctl validate`` use when none is named."""

INTERRUPTED_EXIT_CODE = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""

F = TypeVar("F", bound=Callable[..., Any])


def seconds_option(
    *names: str,
    help: str,
    minimum: float = 0,
    above: bool = False,
    default: float | None = None,
) -> Callable[[F], F]:
    """An option taking SECONDS: at least ``minimum`` (more than it with ``above``); its
    default, if it has one, is shown in the help."""
    return click.option(
        *names,
        type=click.FloatRange(min=minimum, min_open=above),
        default=default,
        show_default=default is not None,
        metavar="SECONDS",
        help=help,
    )


def exit_with(code: int) -> NoReturn:
    """Leave the command with ``code`` (no message)."""
    raise click.exceptions.Exit(code)


def open_ledger(settings: Settings) -> Ledger:
    from simctl.ledger import Ledger

    return Ledger(settings.store)


def detach_run(settings: Settings, ledger: Ledger, run_id: str, as_json: bool,
               extra: dict[str, Any]) -> None:
    """Hand a stored run to a background dispatcher and say how to follow it (or print
    the run's JSON with ``extra`` and ``"detached": true``)."""
    from simctl import runner
    from simctl.display import emit_json

    runner.spawn_background_dispatcher(settings, run_id)
    if as_json:
        emit_json({**ledger.run(run_id).to_json(), **extra, "detached": True})
        return
    click.echo(run_id)
    click.echo(f"dispatching in the background; follow with `simctl status {run_id}` "
               f"or `simctl run --resume {run_id}`", err=True)


def follow_run(settings: Settings, ledger: Ledger, run_id: str, *, timeout: float | None,
               quiet: bool, held: tuple[DispatcherLock, Dispatcher] | None = None) -> RunInfo:
    """Dispatch or follow a run to its end with a progress bar; on Ctrl-C say how to go
    on (the run stays in the ledger) and exit 130."""
    from simctl import runner
    from simctl.display import ProgressBar

    bar = ProgressBar(enabled=not quiet)
    try:
        return runner.follow(settings, ledger, run_id, timeout=timeout, on_update=bar.update,
                             held=held)
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"\ninterrupted: run {run_id} is kept in the ledger; continue it with "
                   f"`simctl run --resume {run_id}` or stop it with `simctl cancel {run_id}`",
                   err=True)
        exit_with(INTERRUPTED_EXIT_CODE)
    finally:
        bar.close()


def report_run(ledger: Ledger, info: RunInfo, as_json: bool, extra: dict[str, Any]) -> None:
    """A finished run's JSON (with ``extra``) or its summary; exit 1 unless every task
    is done."""
    from simctl.display import emit_json
    from simctl.errors import TasksFailed
    from simctl.results import run_summary

    if as_json:
        emit_json({**info.to_json(), **extra})
    else:
        click.echo(run_summary(ledger, info))
    if info.state != "done":
        exit_with(TasksFailed.exit_code)


def complete_run(ctx: click.Context, _param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
    """Shell completion of a RUN: the ledger's run ids (newest first) and ``last``.

    The settings come from the global options typed so far, the environment and the config
    file, as for the command itself. Completion never fails and never prints: anything
    wrong (no ledger, a bad config file) completes nothing.
    """
    from click.shell_completion import CompletionItem

    try:
        from simctl.config import Settings
        from simctl.ledger import LAST_RUN, complete_run_ids

        given = dict(ctx.find_root().params)
        settings = Settings.resolve(given, given.pop("config_file", None))
        items = [CompletionItem(run_id, help=about)
                 for run_id, about in complete_run_ids(settings.store, incomplete)]
        if LAST_RUN.startswith(incomplete):
            items.append(CompletionItem(LAST_RUN, help="the newest run"))
        return items
    except Exception:
        return []


def run_argument(required: bool = True) -> Callable[[F], F]:
    """The RUN argument (passed as ``run_id``, not yet resolved: see
    :meth:`simctl.ledger.Ledger.resolve_run`)."""
    return click.argument("run_id", metavar="RUN", required=required,
                          shell_complete=complete_run)
