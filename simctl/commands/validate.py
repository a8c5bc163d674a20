"""``simctl validate``: check a task file and count its tasks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from simctl.cli import pass_settings
from simctl.commands import DEFAULT_TASKFILE, exit_with

if TYPE_CHECKING:
    from simctl.config import Settings
    from simctl.taskfile import TaskFile


@click.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def validate(settings: Settings, taskfile: Path | None, as_json: bool) -> None:
    """Check a task file (- reads standard input; default configs/tasks.yaml) and count its
    tasks; nothing is stored or sent. A task that starts from a task of an earlier run
    (init: {from: RUN_ID.INDEX}) is checked against the ledger, read only."""
    from simctl import taskfile as tf_mod
    from simctl.display import emit_json
    from simctl.errors import TaskFileError

    path = tf_mod.taskfile_argument(taskfile, DEFAULT_TASKFILE, "validate")
    try:
        tf = tf_mod.load(path)
        _check_inits(settings, tf)
    except TaskFileError as e:
        if not as_json:
            raise
        problems = e.to_json() if isinstance(e, tf_mod.TaskFileErrors) else [
            {"line": e.line, "field": e.field, "message": str(e)}]
        emit_json({"taskfile": e.path, "valid": False, "errors": problems,
                   "more_errors": getattr(e, "more", 0)})
        exit_with(e.exit_code)
    if as_json:
        emit_json(
            {
                "taskfile": str(tf.path),
                "valid": True,
                "name": tf.name,
                "tasks": len(tf.tasks),
                "kinds": tf.kinds(),
                "kind_versions": tf.kind_versions(),
                "seed": tf.seed if tf.seed_given else None,
                "max_attempts": tf.max_attempts,
            }
        )
        return
    versions = tf.kind_versions()
    kinds = ", ".join(f"{k} {versions[k]}: {n}" for k, n in tf.kinds().items())
    seed = (str(tf.seed) if tf.seed_given
            else "random (the file sets none; each run draws its own and stores it)")
    shown = tf_mod.STDIN_NAME if str(path) == tf_mod.STDIN else path
    click.echo(f"{shown}: valid, {tf_mod.count_of(len(tf.tasks), 'task')} ({kinds})")
    click.echo(f"name {tf.name}, seed {seed}, max_attempts {tf.max_attempts}")


def _check_inits(settings: Settings, tf: TaskFile) -> None:
    """Resolve every init as ``simctl run`` will (TaskFileErrors if one does not), without
    copying anything; the ledger is opened read-only, and only if a task names a task of an
    earlier run (validate never creates a ledger)."""
    from simctl import chains
    from simctl.ledger import Ledger
    from simctl.store import ArtifactStore
    from simctl.taskfile import InitTask

    needs_ledger = any(isinstance(t.init, InitTask) for t in tf.tasks)
    ledger = Ledger(settings.store, read_only=True) \
        if needs_ledger and settings.store.is_file() else None
    try:
        chains.resolve(tf, ledger, ArtifactStore.beside(settings.store), copy=False)
    finally:
        if ledger is not None:
            ledger.close()
