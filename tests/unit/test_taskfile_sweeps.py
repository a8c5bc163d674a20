"""Task files: zipped sweeps, ranges, YAML 1.2 floats, every error at once, cross-field
errors of a sweep combination, standard input and the stored path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import simctl.taskfile as taskfile
from simctl.errors import InputError, TaskFileError
from simctl.taskfile import (
    MAX_ERRORS,
    TaskFileErrors,
    load,
    parse_text,
    range_values,
    taskfile_argument,
)


def parse(text: str) -> taskfile.TaskFile:
    return parse_text(text, Path("sweep.yaml"))


def errors_of(text: str) -> TaskFileErrors:
    with pytest.raises(TaskFileErrors) as info:
        parse(text)
    assert info.value.exit_code == 2
    return info.value


def test_yaml_1_2_floats_with_an_exponent_are_numbers() -> None:
    tf = parse("tasks:\n  - kind: lj\n    params: {dt: 1e-3, temperature: 1.0e0}\n"
               "  - kind: sleep\n    params: {seconds: .5E1}\n")
    assert tf.tasks[0].params["dt"] == 0.001
    assert tf.tasks[0].params["temperature"] == 1.0
    assert tf.tasks[1].params["seconds"] == 5.0
    # integers, strings and the YAML 1.1 floats stay what they were
    tf = parse("name: 1e3x\ntasks:\n  - kind: lj\n    params: {steps: 1000, dt: 1.0e-3}\n")
    assert tf.name == "1e3x" and tf.tasks[0].params["steps"] == 1000


def test_zip_varies_together_outside_the_sweep_keys_replicas_innermost() -> None:
    tf = parse("seed: 1\ntasks:\n  - kind: brownian\n    params: {n_particles: 10, steps: 10}\n"
               "    zip: {temperature: [1.0, 2.0], gamma: [0.5, 4.0]}\n"
               "    sweep: {mass: [1.0, 3.0]}\n    replicas: 2\n")
    got = [(t.params["temperature"], t.params["gamma"], t.params["mass"]) for t in tf.tasks]
    assert got == [(1.0, 0.5, 1.0)] * 2 + [(1.0, 0.5, 3.0)] * 2 + [(2.0, 4.0, 1.0)] * 2 + [
        (2.0, 4.0, 3.0)] * 2
    assert len({t.seed for t in tf.tasks}) == 8


def test_ranges_give_the_lists_a_person_would_write_and_the_same_seeds() -> None:
    as_range = parse("seed: 3\ntasks:\n  - kind: sleep\n"
                     "    sweep: {seconds: {linspace: [0.8, 1.6, 9]}}\n")
    as_list = parse("seed: 3\ntasks:\n  - kind: sleep\n"
                    "    sweep: {seconds: [0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]}\n")
    assert [t.params for t in as_range.tasks] == [t.params for t in as_list.tasks]
    assert [t.seed for t in as_range.tasks] == [t.seed for t in as_list.tasks]
    assert range_values("logspace", [-2, 1, 4]) == [0.01, 0.1, 1.0, 10.0]
    assert range_values("geomspace", [0.01, 10, 4]) == [0.01, 0.1, 1.0, 10.0]
    assert range_values("range", [1, 10, 3]) == [1, 4, 7]
    assert range_values("range", [3, 0, -1]) == [3, 2, 1]
    assert range_values("linspace", [2.5, 7, 1]) == [2.5]
    tf = parse("tasks:\n  - kind: lj\n    params: {steps: 100, sample_every: 10}\n"
               "    sweep: {n_cells: {range: [3, 6]}}\n")
    assert [t.params["n_cells"] for t in tf.tasks] == [3, 4, 5]


@pytest.mark.parametrize(("start", "stop", "n"), [(0.8, 1.6, 9), (-1.0, 3.0, 7), (0, 1, 1000),
                                                  (1e-3, 2e-2, 13)])
def test_linspace_matches_numpy_to_its_rounding(start: float, stop: float, n: int) -> None:
    ours = range_values("linspace", [start, stop, n])
    theirs = np.linspace(start, stop, n)
    assert ours[0] == start and ours[-1] == stop and len(ours) == n
    assert np.allclose(ours, theirs, rtol=1e-11, atol=0)
    assert ours == [float(f"{v:.12g}") for v in theirs[:1]] + [
        float(f"{v:.12g}") for v in theirs[1:-1]] + [stop]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("tasks:\n  - kind: sleep\n    sweep:\n      seconds: {linspace: [1, 2]}\n", 4,
         "tasks[0].sweep.seconds", "linspace: needs 3 items, got 2: {linspace: [start, stop, n]}"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {range: [0.5, 2]}}\n", 3,
         "tasks[0].sweep.seconds", "integers"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {range: [5, 2]}}\n", 3,
         "tasks[0].sweep.seconds", "is empty"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {arange: [1, 2, 3]}}\n", 3,
         "tasks[0].sweep.seconds", "unknown range 'arange': allowed {linspace:"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {geomspace: [0, 2, 3]}}\n", 3,
         "tasks[0].sweep.seconds", "non-zero"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {logspace: [1, 400, 3]}}\n", 3,
         "tasks[0].sweep.seconds", "overflows"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {linspace: [1, 2, 0]}}\n", 3,
         "tasks[0].sweep.seconds", "n must be an integer"),
        ("tasks:\n  - kind: sleep\n    sweep:\n      seconds: {linspace: [-1, 1, 3]}\n", 4,
         "tasks[0].sweep.seconds[0]", "sleep.seconds = -1.0 out of range"),
        ("tasks:\n  - kind: brownian\n    zip:\n      gamma: [1, 2]\n      mass: [1]\n", 3,
         "tasks[0].zip", "must be as long (gamma: 2, mass: 1)"),
        ("tasks:\n  - kind: sleep\n    zip: {seconds: [1]}\n    sweep: {seconds: [2]}\n", 4,
         "tasks[0].sweep.seconds", "also under zip (line 3)"),
        ("tasks:\n  - kind: sleep\n    zip: {seconds: [1, -2]}\n", 3, "tasks[0].zip.seconds[1]",
         "out of range"),
        ("tasks:\n  - kind: sleep\n    sweep: {seconds: {linspace: [0, 1, 1000001]}}\n", 3,
         "tasks[0]", "expands to 1000001 combinations, beyond 1000000 tasks"),
    ],
)
def test_range_and_zip_errors_name_file_line_field_and_forms(text: str, line: int, field: str,
                                                             words: str) -> None:
    err = errors_of(text)
    assert (err.line, err.field) == (line, field), str(err)
    assert words in str(err)


def test_the_task_count_is_bounded_before_ranges_are_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taskfile, "MAX_TASKS", 1000)
    made: list[str] = []
    real = taskfile.range_values
    monkeypatch.setattr(taskfile, "range_values",
                        lambda form, args: made.append(form) or real(form, args))
    err = errors_of("tasks:\n  - kind: sleep\n    sweep:\n      seconds: {linspace: [0, 1, 100]}\n"
                    "      fail: [true, false]\n    zip: {}\n  - kind: sleep\n"
                    "    sweep: {seconds: {linspace: [0, 1, 100]}, fail: [true, false, true,"
                    " false, true, false, true, false, true, false, true]}\n")
    assert "1100 combinations, beyond 1000 tasks" in str(err)
    assert err.field == "tasks[1]" and err.line == 8
    assert made == ["linspace"]  # the second entry's values were never made


def test_every_error_of_a_file_is_reported_at_once() -> None:
    err = errors_of("seed: -1\ncolour: red\ntasks:\n  - kind: sleep\n    params: {seconds: -1}\n"
                    "  - kind: warp\n  - kind: sleep\n    sweep: {seconds: [1, -2, -3]}\n")
    assert [(p.line, p.field) for p in err.problems] == [
        (2, "colour"), (1, "seed"), (5, "tasks[0].params.seconds"), (6, "tasks[1].kind"),
        (8, "tasks[2].sweep.seconds[1]"), (8, "tasks[2].sweep.seconds[2]")]
    lines = str(err).splitlines()
    assert lines[0] == "sweep.yaml: 6 errors:"
    assert lines[1] == "sweep.yaml:2: colour: unknown key 'colour'; allowed: " + ", ".join(
        taskfile.TOP_KEYS)
    assert lines[5].startswith("sweep.yaml:8: tasks[2].sweep.seconds[1]: sleep.seconds = -2.0 ")
    assert (err.line, err.field) == (2, "colour")  # the first's


def test_a_base_error_met_by_every_combination_is_reported_once() -> None:
    err = errors_of("tasks:\n  - kind: sleep\n    params: {fail: maybe}\n"
                    "    sweep: {seconds: [1, 2, 3]}\n")
    assert [(p.line, p.field) for p in err.problems] == [(3, "tasks[0].params.fail")]
    assert "sleep.fail = 'maybe': must be true or false" in str(err)


def test_errors_beyond_the_limit_are_counted() -> None:
    values = ", ".join(str(-v) for v in range(1, 31))
    err = errors_of(f"tasks:\n  - kind: sleep\n    sweep: {{seconds: [{values}]}}\n")
    assert len(err.problems) == MAX_ERRORS and err.more == 10
    lines = str(err).splitlines()
    assert lines[0] == "sweep.yaml: 30 errors (the first 20):"
    assert lines[-1] == "... and 10 more errors"


def test_a_cross_field_error_in_a_sweep_names_the_combination_and_its_line() -> None:
    # rc is not swept: the line of the first swept key's value in the combination
    text = ("tasks:\n  - kind: lj\n    params:\n      n_cells: 2\n"
            "    sweep:\n      density:\n        - 0.1\n        - 0.5\n"
            "      temperature: [1.2]\n")
    err = errors_of(text)
    assert [(p.line, p.field) for p in err.problems] == [
        (8, "tasks[0] combination density=0.5, temperature=1.2")]
    assert "lj.rc = 2.5 out of range: must be at most half the box" in str(err)
    # a rule the swept value is named in: its line
    err = errors_of("tasks:\n  - kind: brownian\n    params: {trap_k: 100.0}\n"
                    "    sweep:\n      gamma: [1.0, 2.0]\n      dt: [0.1, 0.5]\n")
    assert {(p.line, p.field) for p in err.problems} == {
        (6, "tasks[0] combination gamma=1.0, dt=0.5"),
        (6, "tasks[0] combination gamma=2.0, dt=0.5")}
    # the base params break the rule by themselves: named once, where they are set
    err = errors_of("tasks:\n  - kind: lj\n    params: {box: 3.0}\n"
                    "    sweep: {temperature: [1.0, 2.0]}\n")
    assert [(p.line, p.field) for p in err.problems] == [(3, "tasks[0].params.box")]


def test_messages_spell_values_as_yaml() -> None:
    err = errors_of("tasks:\n  - kind: lj\n    params: {steps: true, density: .nan, "
                    "ensemble: null, potential: cut}\n")
    text = str(err)
    assert "lj.steps = true: must be an integer" in text
    assert "lj.density = .nan out of range" in text
    assert "lj.potential = 'cut': must be one of" in text
    assert "True" not in text
    assert "must be an integer, got true" in str(errors_of(
        "tasks:\n  - kind: sleep\n    replicas: yes\n"))


def test_standard_input_is_named_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("tasks:\n  - kind: sleep\n"))
    tf = load("-")
    assert (str(tf.path), tf.name, len(tf.tasks)) == ("<stdin>", "stdin", 1)
    monkeypatch.setattr("sys.stdin", io.StringIO("tasks:\n  - kind: warp\n"))
    with pytest.raises(TaskFileError, match=r"^<stdin>:2: tasks\[0\].kind: unknown kind"):
        load("-")


def test_the_stored_path_is_absolute_and_errors_name_the_given_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.yaml").write_text("tasks:\n  - kind: sleep\n")
    assert load("t.yaml").path == tmp_path.resolve() / "t.yaml"
    Path("bad.yaml").write_text("tasks:\n  - kind: warp\n")
    with pytest.raises(TaskFileError, match=r"^bad.yaml:2: "):
        load("bad.yaml")


def test_without_an_argument_the_default_file_must_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = Path("configs/tasks.yaml")
    with pytest.raises(InputError) as info:
        taskfile_argument(None, default, "run")
    assert str(info.value) == ("no task file given and ./configs/tasks.yaml does not exist: "
                               "simctl run TASKFILE")
    assert info.value.exit_code == 2
    assert taskfile_argument(Path("x.yaml"), default, "run") == Path("x.yaml")
    default.parent.mkdir()
    default.write_text("tasks:\n  - kind: sleep\n")
    assert taskfile_argument(None, default, "validate") == default
