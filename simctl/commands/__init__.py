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
    from simctl.ledger import Ledger

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
