"""``simctl artifacts``: the files of a run's tasks (``artifacts RUN [TASK]``), and one of them
copied out of the store (``artifacts get RUN TASK NAME``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from simctl.cli import pass_settings
from simctl.commands import complete_run, open_ledger, run_argument
from simctl.config import Settings

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from simctl.artifacts import StoredFile
    from simctl.store import ArtifactStore

LISTING = "list"
"""The command ``simctl artifacts RUN`` runs: ``simctl artifacts list RUN``."""


class ListingGroup(click.Group):
    """A group whose first argument, when it names none of its commands, is the listing's
    (``simctl artifacts RUN`` is ``simctl artifacts list RUN``; with no arguments, the
    listing says RUN is missing). Run ids are dates, never a command's name;
    ``simctl artifacts list RUN`` lists any run."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # While completing, no arguments yet means the commands and run ids are offered.
        listing = (not ctx.resilient_parsing) if not args else (
            args[0] not in self.commands and args[0] not in ctx.help_option_names)
        if listing:
            args = [LISTING, *args]
        return super().parse_args(ctx, args)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The commands, and the run ids the listing takes in their place."""
        return [*super().shell_complete(ctx, incomplete),
                *complete_run(ctx, self.commands[LISTING].params[0], incomplete)]


def _store(settings: Settings) -> ArtifactStore:
    from simctl.store import ArtifactStore

    return ArtifactStore.beside(settings.store)


def _files(settings: Settings, run_id: str, task: str | None) -> tuple[str, list[StoredFile]]:
    from simctl.artifacts import stored_files

    ledger = open_ledger(settings)
    with ledger.snapshot():
        run_id = ledger.resolve_run(run_id)
        return run_id, stored_files(ledger, _store(settings), run_id, task)


@click.group(cls=ListingGroup, subcommand_metavar="RUN [TASK] | get RUN TASK NAME")
def artifacts() -> None:
    """The files a run's tasks wrote (trajectories, final configurations...).

    `simctl artifacts RUN [TASK]` lists them; `simctl artifacts get RUN TASK NAME` copies one
    out of the store. `simctl results RUN --artifacts DIR` exports them all.
    """


@artifacts.command(LISTING)
@run_argument()
@click.argument("task", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object (full SHA-256s "
              "and the path of each file in the store).")
@pass_settings
def list_artifacts(settings: Settings, run_id: str, task: str | None, as_json: bool) -> None:
    """List the artifacts of a run, or of its TASK: each task's sweep point, the file's name,
    size and SHA-256, and the total.

    RUN is a run id, a unique prefix of one, or `last` (the newest run). TASK is a task id
    (RUN.7) or its index in the run (7).
    """
    from simctl.artifacts import SHORT_SHA
    from simctl.display import emit_json, table
    from simproto.sizes import format_size

    run_id, files = _files(settings, run_id, task)
    total = sum(f.artifact.size for f in files)
    tasks = len({f.artifact.task_id for f in files})
    if as_json:
        emit_json({"run_id": run_id, "artifacts": [f.to_json() for f in files],
                   "files": len(files), "tasks": tasks, "bytes": total})
        return
    if not files:
        click.echo(f"{'task ' + task if task else 'run ' + run_id} has no artifacts")
        return
    click.echo(table([[f.task.index, f.task.kind, f.task.label(), f.artifact.name,
                       format_size(f.artifact.size), f.artifact.sha256[:SHORT_SHA]]
                      for f in files],
                     ["task", "kind", "point", "name", "size", "sha256"]))
    click.echo(f"{len(files)} file{'s' if len(files) != 1 else ''} of {tasks} "
               f"task{'s' if tasks != 1 else ''}, {format_size(total)}")


@artifacts.command("get")
@run_argument()
@click.argument("task")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(path_type=Path, allow_dash=True),
              help="Write here (a folder: NAME in it; -: stdout) [default: NAME in the "
                   "current folder].")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_settings
def get(settings: Settings, run_id: str, task: str, name: str, output: Path | None,
        force: bool) -> None:
    """Copy the artifact NAME of TASK out of the store, checking its SHA-256 on the way.

    RUN is a run id, a unique prefix of one, or `last`. TASK is a task id (RUN.7) or its
    index in the run (7). An existing file is never overwritten without --force; a store
    file that is missing or does not match its SHA-256 is an error (nothing is left at the
    path; with -o - the bytes already written to stdout are not the artifact).
    """
    from simctl.artifacts import copy_verified, find_file, save_file
    from simproto.sizes import format_size

    _, files = _files(settings, run_id, task)
    source = find_file(files, name)
    if output == Path("-"):
        sys.stdout.flush()
        copy_verified(source, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    target = output or Path(name)
    if target.is_dir():
        target /= name
    save_file(source, target, force)
    click.echo(f"wrote {target} ({format_size(source.artifact.size)})", err=True)

