"""Task files: expansion order, precedence, seeds, and every error path (file, line, field)."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckernel.params import LJ
from simctl.errors import TaskFileError
from simctl.taskfile import (
    DEFAULT_MAX_ATTEMPTS,
    ReuseKeys,
    load,
    parse_text,
    reuse_key,
    task_seed,
)
from simkind.fields import simulated

ISSUE_EXAMPLE = """\
name: example-sweep
seed: 20261127
max_attempts: 3
defaults:
  lj: {steps: 2000}
tasks:
  - kind: lj
    params: {n_cells: 4, density: 0.8, temperature: 1.0}
    sweep: {temperature: [0.8, 1.0, 1.2]}
    replicas: 2
  - kind: sleep
    params: {seconds: 0.5}
    replicas: 10
"""


def parse(text: str) -> object:
    return parse_text(text, Path("sweep.yaml"))


def error_of(text: str) -> TaskFileError:
    with pytest.raises(TaskFileError) as info:
        parse_text(text, Path("sweep.yaml"))
    assert info.value.exit_code == 2
    return info.value


def test_issue_example_expands_to_16_tasks_in_order() -> None:
    tf = parse_text(ISSUE_EXAMPLE, Path("sweep.yaml"))
    assert len(tf.tasks) == 16
    assert (tf.name, tf.seed, tf.max_attempts) == ("example-sweep", 20261127, 3)
    temps = [t.params["temperature"] for t in tf.tasks[:6]]
    assert temps == [0.8, 0.8, 1.0, 1.0, 1.2, 1.2]  # replicas innermost
    assert all(t.params["steps"] == 2000 for t in tf.tasks[:6])  # from defaults
    assert [t.kind for t in tf.tasks] == ["lj"] * 6 + ["sleep"] * 10
    assert [t.index for t in tf.tasks] == list(range(16))
    assert tf.kinds() == {"lj": 6, "sleep": 10}


def test_precedence_defaults_params_sweep() -> None:
    tf = parse_text(
        "seed: 1\ndefaults:\n  sleep: {seconds: 1, fail: true}\n"
        "tasks:\n  - kind: sleep\n    params: {seconds: 2}\n    sweep: {seconds: [3]}\n"
        "  - kind: sleep\n    params: {seconds: 2}\n",
        Path("p.yaml"),
    )
    assert tf.tasks[0].params == {"seconds": 3.0, "fail": True, "artifact_bytes": 0}
    assert tf.tasks[1].params == {"seconds": 2.0, "fail": True, "artifact_bytes": 0}


def test_sweep_keys_vary_in_written_order_first_slowest() -> None:
    tf = parse_text(
        "seed: 1\ntasks:\n  - kind: brownian\n    params: {n_particles: 10, steps: 10}\n"
        "    sweep: {gamma: [0.5, 2.0], temperature: [1.0, 2.0, 3.0]}\n",
        Path("s.yaml"),
    )
    pairs = [(t.params["gamma"], t.params["temperature"]) for t in tf.tasks]
    assert pairs == [(0.5, 1.0), (0.5, 2.0), (0.5, 3.0), (2.0, 1.0), (2.0, 2.0), (2.0, 3.0)]


def test_seeds_come_from_the_run_seed_and_the_task_content_and_are_reproducible() -> None:
    tf = parse_text(ISSUE_EXAMPLE, Path("sweep.yaml"))
    seeds = [t.seed for t in tf.tasks]
    assert seeds == [t.seed for t in parse_text(ISSUE_EXAMPLE, Path("again.yaml")).tasks]
    assert len(set(seeds)) == 16
    assert all(0 <= s < 2**63 for s in seeds)
    first = tf.tasks[0]
    assert first.seed == task_seed(20261127, first.kind, first.params, 0)
    # The seed's content leaves out the fields that say what to write (trajectory_every,
    # save_final): turning a trajectory on must not change the dynamics it records.
    simulated_params = simulated(LJ.params, first.params)
    assert "save_final" in first.params and "save_final" not in simulated_params
    digest = hashlib.sha256(json.dumps({"kind": first.kind, "params": simulated_params},
                                       sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    state = np.random.SeedSequence(20261127, spawn_key=(
        *(int(digest[i:i + 8], 16) for i in (0, 8, 16, 24)), 0))
    assert first.seed == int(state.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


def test_added_sweep_points_leave_the_other_tasks_seeds_alone() -> None:
    base = ("seed: 5\ntasks:\n  - kind: sleep\n    sweep: {seconds: [0.1, 0.2]}\n"
            "    replicas: 2\n")
    more = base.replace("[0.1, 0.2]", "[0.05, 0.1, 0.15, 0.2]")
    seeds = {(t.params["seconds"], t.seed) for t in parse_text(base, Path("a.yaml")).tasks}
    more_seeds = {(t.params["seconds"], t.seed) for t in parse_text(more, Path("b.yaml")).tasks}
    assert len(seeds) == 4 and seeds < more_seeds
    replicas = [t.seed for t in parse_text(base, Path("a.yaml")).tasks
                if t.params["seconds"] == 0.1]
    assert len(set(replicas)) == 2, "the replicas of a point have seeds of their own"
    assert {t.kind_version for t in parse_text(base, Path("a.yaml")).tasks} == {
        metadata.version("particle-sim")}


def test_defaults_without_seed_and_max_attempts() -> None:
    tf = parse_text("tasks:\n  - kind: sleep\n", Path("plain.yaml"))
    assert tf.name == "plain" and not tf.seed_given
    assert tf.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert tf.max_lost == 5
    assert parse_text("max_lost: 2\ntasks:\n  - kind: sleep\n", Path("p.yaml")).max_lost == 2
    assert 0 <= tf.seed < 2**63


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("tasks: [\n  {kind: sleep\n", 2, None, "invalid YAML"),  # the last line
        ("tasks:\n  - kind: sleep\n  - kind: warp\n", 3, "tasks[1].kind", "unknown kind 'warp'"),
        ("tasks:\n  - kind: sleep\n    params: {seconds: 1, colour: red}\n", 3,
         "tasks[0].params.colour", "colour"),
        ("tasks:\n  - kind: sleep\n    params:\n      seconds: -1\n", 4,
         "tasks[0].params.seconds", "out of range"),
        ("tasks:\n  - kind: sleep\n    sweep:\n      seconds: [1, 2,\n        -5]\n", 5,
         "tasks[0].sweep.seconds[2]", "out of range"),
        ("defaults:\n  sleep:\n    seconds: 100000.5\ntasks:\n  - kind: sleep\n", 3,
         "defaults.sleep.seconds", "out of range"),
        ("defaults:\n  warp: {}\ntasks:\n  - kind: sleep\n", 2, "defaults.warp", "unknown kind"),
        ("tasks:\n  - kind: sleep\n    replicas: 0\n", 3, "tasks[0].replicas", "out of range"),
        ("tasks:\n  - kind: sleep\n    replicas: two\n", 3, "tasks[0].replicas", "integer"),
        ("max_attempts: 0\ntasks:\n  - kind: sleep\n", 1, "max_attempts", "out of range"),
        ("\nmax_lost: 101\ntasks:\n  - kind: sleep\n", 2, "max_lost", "out of range"),
        ("seed: -1\ntasks:\n  - kind: sleep\n", 1, "seed", "out of range"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: []}\n", 3, "tasks[0].sweep.seconds",
         "non-empty list"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: 1}\n", 3, "tasks[0].sweep.seconds",
         "non-empty list"),
        ("tasks:\n  - kind: sleep\n    param: {seconds: 1}\n", 3, "tasks[0].param", "unknown key"),
        ("name: x\nname: y\ntasks: []\n", 2, None, "duplicate key 'name'"),
        ("colour: red\ntasks:\n  - kind: sleep\n", 1, "colour", "unknown key"),
        ("name: x\n", 1, "tasks", "missing"),
        ("tasks: []\n", 1, "tasks", "non-empty list"),
        ("tasks:\n  - sleep\n", 2, "tasks[0]", "must be a mapping"),
        ("tasks:\n  - params: {}\n", 2, "tasks[0].kind", "missing"),
        ("- 1\n- 2\n", 1, None, "must be a mapping"),
        ("tasks:\n  - kind: sleep\n    params: [1, 2]\n", 3, "tasks[0].params", "mapping"),
    ],
)
def test_errors_name_file_line_and_field(text: str, line: int, field: str | None,
                                         words: str) -> None:
    err = error_of(text)
    assert err.path == "sweep.yaml"
    assert err.line == line, str(err)
    assert err.field == field, str(err)
    assert words in str(err)
    assert str(err).startswith(f"sweep.yaml:{line}: ")


def test_wrong_type_of_parameter_names_field() -> None:
    err = error_of("tasks:\n  - kind: lj\n    params: {n_cells: 4, temperature: hot}\n")
    assert (err.line, err.field) == (3, "tasks[0].params.temperature")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="no such file"):
        load(tmp_path / "absent.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TaskFileError, match="cannot read"):
        load(binary)


def test_shipped_example_files_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    example = load(root / "tasks.yaml")
    assert set(example.kinds()) == {"lj", "nbody", "brownian", "sleep"}
    assert load(root / "quick.yaml").tasks


def test_parameters_must_fit_in_one_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    import simctl.taskfile as taskfile

    text = "tasks:\n  - kind: sleep\n  - kind: sleep\n    params: {seconds: 1.25}\n"
    # {"seconds":0.0,"fail":false,"artifact_bytes":0} is 47 bytes as JSON: allow exactly that.
    monkeypatch.setattr(taskfile, "MAX_PARAMS_BYTES", 47)
    with pytest.raises(TaskFileError) as info:
        parse_text(text, Path("sweep.yaml"))
    assert (info.value.line, info.value.field) == (3, "tasks[1].params")
    assert "take 48 bytes" in str(info.value) and "allows 47" in str(info.value)


def test_yaml_nested_too_deeply_is_an_input_error() -> None:
    depth = 5000  # beyond what the YAML loader can recurse into
    error = error_of("name: a\nseed: 1\ntasks:\n  - kind: sleep\n    params: {seconds: "
                     + "[" * depth + "]" * depth + "}\n")
    assert "invalid YAML: nested too deeply" in str(error)


def test_reuse_keys_are_the_digest_of_the_canonical_task_whatever_the_order() -> None:
    """ReuseKeys hashes what comes before the seed once for consecutive tasks of one params
    dict; every key must still be the SHA-256 of the task's canonical JSON, as stored by
    earlier versions (a different text would stop old results from being reused)."""
    def canonical(kind: str, version: str | None, params: dict[str, Any], seed: int,
                  inputs: tuple[str, ...]) -> str:
        content: dict[str, Any] = {"kind": kind, "version": version, "params": params,
                                   "seed": seed}
        if inputs:
            content["inputs"] = list(inputs)
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    shared = {"seconds": 0.5, "note": "ünïcode \"quoted\"", "nested": {"b": [1, 2.5], "a": None}}
    same_text = dict(shared)  # equal to shared, another dict
    tasks: list[tuple[str, str | None, dict[str, Any], int, tuple[str, ...]]] = [
        ("sleep", "0.1.0", shared, 1, ()),
        ("sleep", "0.1.0", shared, 2**63 - 1, ()),  # a replica: same dict, another seed
        ("sleep", None, shared, 3, ()),  # same dict, no version recorded
        ("lj", "0.1.0", shared, 3, ()),  # same dict, another kind
        ("lj", "0.1.0", shared, 3, ("a" * 64,)),  # same dict, with an input
        ("lj", "0.1.0", shared, 3, ("b" * 64, "a" * 64)),
        ("lj", "0.1.0", same_text, 0, ()),
        ("sleep", "0.1.0", {}, 4, ()),
    ]
    keys = ReuseKeys()
    for task in tasks:
        expected = canonical(*task)
        assert keys.key(*task) == expected, task
        assert reuse_key(*task) == expected, task
    assert len({keys.key(*task) for task in tasks}) == len(tasks)
