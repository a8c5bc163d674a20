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
