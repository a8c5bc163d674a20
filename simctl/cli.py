"""The ``simctl`` command line: the root group, its global options and the error handling.

Each command lives in its own module under :mod:`simctl.commands` and is imported only when
it is asked for (or when ``--help`` lists it), so ``simctl --help`` answers at once; command
modules import heavy modules (numpy, ckernel, paho, sqlite) inside the command. Exit codes:
see :mod:`simctl.errors`.

Every error, click's usage errors as well as simctl's own, is printed the same way:
``simctl: error: MESSAGE`` on stderr, followed for a usage error by the command's usage line
and where to find help.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from simctl.config import Settings
from simctl.errors import ConnectionFailed, SimctlError
from simproto.console import ErrorStyle, show_error, version_option

COMMANDS = {
    "run": "simctl.commands.run.run",
    "validate": "simctl.commands.validate.validate",
    "kinds": "simctl.commands.kinds.kinds",
    "ping": "simctl.commands.ping.ping",
    "status": "simctl.commands.status.status",
    "monitor": "simctl.commands.monitor.monitor",
    "results": "simctl.commands.results.results",
    "plot": "simctl.commands.plot.plot",
    "artifacts": "simctl.commands.artifacts.artifacts",
    "cancel": "simctl.commands.cancel.cancel",
    "retry": "simctl.commands.retry.retry",
    "delete": "simctl.commands.delete.delete",
    "workers": "simctl.commands.workers.workers",
    "local": "simctl.commands.local.local",
    "_serve": "simctl.commands.serve.serve",
}
"""Each command's name and where it is defined (``module.attribute``), loaded on first use."""

pass_settings = click.make_pass_decorator(Settings)


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (click docs, "Lazily Loading
    Subcommands")."""

    def __init__(
        self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return super().list_commands(ctx) + sorted(self.lazy_subcommands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._lazy_load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _lazy_load(self, cmd_name: str) -> click.Command:
        module_name, attribute = self.lazy_subcommands[cmd_name].rsplit(".", 1)
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command


PROG = "simctl"
"""The program name in messages."""


def _global_option_hint(
    root: click.Command, error: click.NoSuchOption, args: list[str]
) -> str | None:
    """For an option of the root group given after the command, the message that says so,
    with the command line rearranged: ``--store is a global option: put it before the
    command: simctl --store x validate f.yaml``."""
    name = error.option_name
    root_options = {opt: p for p in root.params if isinstance(p, click.Option)
                    for opt in (*p.opts, *p.secondary_opts)}
    option = root_options.get(name)
    if option is None:
        return None
    # Where the command starts: the first argument that is neither a global option nor the
    # value of one.
    start, i = len(args), 0
    while i < len(args):
        arg = args[i]
        given = root_options.get(arg.split("=", 1)[0]) if arg.startswith("-") else None
        if given is None:
            start = i
            break
        i += 1 if ("=" in arg or given.is_flag or given.count) else 2
    # The misplaced option and its value, after the command.
    moved: list[str] = []
    rest = list(args[start:])
    for j, arg in enumerate(rest):
        if arg == name or arg.startswith(name + "="):
            takes_value = not (option.is_flag or option.count) and "=" not in arg
            moved = rest[j:j + 2] if takes_value else [arg]
            del rest[j:j + len(moved)]
            break
    line = " ".join([PROG, *args[:start], *moved, *rest])
    return f"{name} is a global option: put it before the command: {line}"


class SimctlGroup(ErrorStyle, LazyGroup):
    """The root group: prints every error (click's and simctl's) as ``simctl: error: ...``
    and exits with the error's code."""

    prog = PROG

    def usage_message(self, error: click.UsageError, args: list[str]) -> str:
        hint = _global_option_hint(self, error, args) if isinstance(
            error, click.NoSuchOption) else None
        return hint or error.format_message()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SimctlError as e:
            message = str(e)
            if isinstance(e, ConnectionFailed) and isinstance(ctx.obj, Settings):
                message += f" (the address is {ctx.obj.broker_source()})"
            show_error(PROG, message)
            ctx.exit(e.exit_code)


FC = TypeVar("FC", bound=Callable[..., Any])


def _path_option(flag: str, help: str) -> Callable[[FC], FC]:
    """A global option naming a file, also read from ``SIMCTL_<FLAG>``."""
    envvar = "SIMCTL_" + flag.removeprefix("--").replace("-", "_").upper()
    return click.option(flag, envvar=envvar, type=click.Path(path_type=Path), help=help)


@click.group(
    cls=SimctlGroup,
    lazy_subcommands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--broker",
    envvar="SIMCTL_BROKER",
    metavar="ADDR",
    help="Broker: HOST, HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT "
    "[default: the local broker of `simctl local up`].",
)
@click.option("--topic-prefix", envvar="SIMCTL_TOPIC_PREFIX", help="Topic prefix [default: sim].")
@click.option("--username", envvar="SIMCTL_USERNAME", help="Broker user name.")
@_path_option("--password-file", "File whose first line is the broker password.")
@_path_option("--tls-ca", "CA certificate; turns TLS on.")
@_path_option("--tls-cert", "Client certificate for TLS.")
@_path_option("--tls-key", "Client key for TLS.")
@_path_option(
    "--store",
    "The run ledger (SQLite) [default: ledger.sqlite in the local cluster's folder when no "
    "broker is given, else ~/.local/share/simctl/ledger.sqlite].",
)
@click.option(
    "--log-level",
    envvar="SIMCTL_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level of messages on stderr [default: warning].",
)
@click.option(
    "--config",
    "config_file",
    envvar="SIMCTL_CONFIG",
    type=click.Path(path_type=Path),
    help="YAML config file [default: ~/.config/simctl/config.yaml].",
)
@version_option(PROG)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    """Run particle-simulation sweeps on worker agents over MQTT.

    Global options go before the command: simctl --broker HOST:1883 run tasks.yaml.
    Each also comes from a SIMCTL_* environment variable or the config file; a flag beats
    the environment, which beats the file. Without a broker, simctl uses the local cluster
    of `simctl local up` and keeps the ledger in its folder. Exit codes: 0 success, 1 tasks
    failed or were cancelled, 2 invalid input, 3 timeout, 4 broker unreachable or no worker
    answering, 5 the ledger cannot be written.
    """
    origins = {
        name: param.envvar
        for param in ctx.command.params
        if (name := param.name) in given and isinstance(param.envvar, str)
        and ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT
    }
    settings = Settings.resolve(given, config_file, origins)
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = settings


def main() -> None:
    """Entry point of the ``simctl`` command."""
    cli(prog_name="simctl")
