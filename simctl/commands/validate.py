"""``simctl validate``: check a task file and count its tasks."""

from __future__ import annotations

from pathlib import Path

import click

from simctl.commands import DEFAULT_TASKFILE, exit_with


@click.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def validate(taskfile: Path | None, as_json: bool) -> None:
    """Check a task file (- reads standard input; default configs/tasks.yaml) and count its
    tasks; nothing is stored or sent."""
    from simctl import taskfile as tf_mod
    from simctl.display import emit_json
    from simctl.errors import TaskFileError

    path = tf_mod.taskfile_argument(taskfile, DEFAULT_TASKFILE, "validate")
    try:
        tf = tf_mod.load(path)
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
