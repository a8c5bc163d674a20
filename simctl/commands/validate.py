"""``simctl validate``: check a task file and count its tasks."""

from __future__ import annotations

from pathlib import Path

import click

from simctl.commands import DEFAULT_TASKFILE


@click.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def validate(taskfile: Path | None, as_json: bool) -> None:
    """Check a task file and count its tasks; nothing is stored or sent."""
    from simctl import taskfile as tf_mod
    from simctl.display import emit_json

    tf = tf_mod.load(taskfile or DEFAULT_TASKFILE)
    if as_json:
        emit_json(
            {
                "taskfile": str(tf.path),
                "valid": True,
                "name": tf.name,
                "tasks": len(tf.tasks),
                "kinds": tf.kinds(),
                "kind_versions": tf.kind_versions(),
                "seed": tf.seed,
                "max_attempts": tf.max_attempts,
            }
        )
        return
    versions = tf.kind_versions()
    kinds = ", ".join(f"{k} {versions[k]}: {n}" for k, n in tf.kinds().items())
    seed = tf.seed if tf.seed_given else f"{tf.seed} (random: the file sets none)"
    click.echo(f"{tf.path}: valid, {len(tf.tasks)} tasks ({kinds})")
    click.echo(f"name {tf.name}, seed {seed}, max_attempts {tf.max_attempts}")
