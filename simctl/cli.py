"""The ``simctl`` command line: the root group, its global options and the error handling.

Each command lives in its own module under :mod:`simctl.commands` and is imported only when
it is asked for (or when ``--help`` lists it), so ``simctl --help`` answers at once; command
modules import heavy modules (numpy, ckernel, paho, sqlite) inside the command. Exit codes:
see :mod:`simctl.errors`.
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
from simctl.errors import SimctlError

COMMANDS = {
    "run": "simctl.commands.run.run",
    "validate": "simctl.commands.validate.validate",
    "kinds": "simctl.commands.kinds.kinds",
    "ping": "simctl.commands.ping.ping",
    "status": "simctl.commands.status.status",
    "monitor": "simctl.commands.monitor.monitor",
    "results": "simctl.commands.results.results",
    "cancel": "simctl.commands.cancel.cancel",
    "retry": "simctl.commands.retry.retry",
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


class SimctlGroup(LazyGroup):
    """A click group that turns every SimctlError into its message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SimctlError as e:
            click.echo(f"simctl: error: {e}", err=True)
            ctx.exit(e.exit_code)


def _print_version(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from simproto.protocol import PROTOCOL_VERSION, package_version

    click.echo(f"simctl {package_version()} (protocol {PROTOCOL_VERSION})")
    ctx.exit()


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
@_path_option("--store", "The run ledger (SQLite) [default: ~/.local/share/simctl/ledger.sqlite].")
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
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_version(ctx, value),
    help="Show the version (and the protocol version) and exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    """Run particle-simulation sweeps on worker agents over MQTT.

    Global options go before the command: simctl --broker HOST:1883 run tasks.yaml.
    Each also comes from a SIMCTL_* environment variable or the config file; a flag beats
    the environment, which beats the file. Exit codes: 0 success, 1 tasks failed or were
    cancelled, 2 invalid input, 3 timeout, 4 broker unreachable or no worker answering,
    5 the ledger cannot be written.
    """
    settings = Settings.resolve(given, config_file)
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = settings


def main() -> None:
    """Entry point of the ``simctl`` command."""
    cli(prog_name="simctl")
