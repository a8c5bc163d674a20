"""What simctl and worker-agent print alike: one error style (``PROG: error: MESSAGE``,
with the usage line and the help hint for usage errors) and one ``--version`` line."""

from __future__ import annotations

import platform
import sys
from typing import Any

import click

from simproto.protocol import PROTOCOL_VERSION, package_version


def version_text(prog: str) -> str:
    """``PROG VERSION (particle-sim VERSION, protocol N, Python X.Y.Z)``."""
    version = package_version()
    return (f"{prog} {version} (particle-sim {version}, protocol {PROTOCOL_VERSION}, "
            f"Python {platform.python_version()})")


def version_option(prog: str) -> Any:
    """An eager ``--version`` flag printing :func:`version_text`."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(version_text(prog))
            ctx.exit()

    return click.option("--version", is_flag=True, expose_value=False, is_eager=True,
                        callback=show, help="Show the version (and the protocol and Python "
                        "versions) and exit.")


def show_error(prog: str, message: str, ctx: click.Context | None = None) -> None:
    """Print ``PROG: error: MESSAGE``; with the context of a usage error, also the usage
    line and the hint where help is."""
    click.echo(f"{prog}: error: {message}", err=True)
    if ctx is not None:
        click.echo(ctx.get_usage(), err=True)
        names = ctx.help_option_names
        help_flag = "--help" if "--help" in names or not names else names[0]
        click.echo(f"Try '{ctx.command_path} {help_flag}' for help.", err=True)


class ErrorStyle(click.Command):
    """A command (or, mixed in before click.Group, a group) whose click errors are printed
    in the program's style (:func:`show_error`) before it exits with their code.
    ``usage_message`` may reword a usage error (simctl explains misplaced global options)."""

    prog = "particle-sim"

    def usage_message(self, error: click.UsageError, args: list[str]) -> str:
        return error.format_message()

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        prog_name = prog_name or self.prog  # also under `python -m ...`
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            show_error(self.prog, self.usage_message(e, argv), e.ctx)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            show_error(self.prog, e.format_message())
            sys.exit(e.exit_code)
        except click.Abort:
            show_error(self.prog, "aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
