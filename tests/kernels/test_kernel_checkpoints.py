"""Checkpoints of the built-in kinds, on the real kernels of both backends: a run resumed
from a checkpoint in its middle gives the straight run's result bit for bit (observables,
summary, trajectory.xyz and final.xyz), taking checkpoints changes nothing, a stop request
ends the run with a checkpoint to resume from, and a checkpoint that does not fit (another
backend, a damaged or forged file) is refused: the run starts from step 0, says why, and
still gives the same result."""

from __future__ import annotations

import functools
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckernel
import simkind
from ckernel import drivers
from ckernel.brownian import CHECKPOINT_CHECK_STEPS
from simkind import CHECKPOINT_INPUT, FINAL_CONFIGURATION, TRAJECTORY, Context, Preempted
from simkind.checkpoint import read_state, write_state
from tests.support.kernels import both_backends

SEED = 11
COMPILED = "cython"
"""The backend of the tests that need only one: the one the workers run."""
EVERY_POINT = 1e-9
"""A checkpoint interval that makes every point where a kind can save one a save."""

# lj: a 256-atom box (6.8 sigma), large enough that the list is rebuilt on displacement
# (nve) or on schedule (nvt, every 6 steps) rather than every step; the rest small.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lj-nve": ("lj", {"n_cells": 4, "steps": 60, "sample_every": 5, "trajectory_every": 10,
                      "equilibration_steps": 20}),
    "lj-nvt": ("lj", {"n_cells": 4, "steps": 60, "sample_every": 4, "trajectory_every": 8,
                      "ensemble": "nvt", "rebuild_every": 6}),
    "nbody": ("nbody", {"n_bodies": 32, "steps": 40, "sample_every": 5,
                        "trajectory_every": 10}),
    "brownian": ("brownian", {"n_particles": 40, "steps": 320, "sample_every": 16,
                              "trajectory_every": 64}),
    "brownian-overdamped": ("brownian", {"n_particles": 40, "steps": 320, "sample_every": 16,
                                         "trajectory_every": 32, "overdamped": True,
                                         "trap_k": 1.0}),
}


def execute(case: str, backend: str, context: Context) -> dict[str, Any]:
    """One task of ``case`` through the kind registry with ``context``, as a worker runs
    it, on ``backend``."""
    kind, params = CASES[case]
    run = functools.partial(getattr(drivers, f"{kind}_kind"), backend=backend)
    return simkind.execute(simkind.installed().get(kind), params, SEED, context, function=run)


def assert_same_result(result: dict[str, Any], straight: dict[str, Any]) -> None:
    """Exactly the straight run's numbers and files (the manifest holds their SHA-256)."""
    assert result["observables"] == straight["observables"]
    assert result["summary"] == straight["summary"]
    assert result["artifacts"] == straight["artifacts"]
    assert {a["name"] for a in result["artifacts"]} == {TRAJECTORY, FINAL_CONFIGURATION}
    for name in ("neighbour_rebuilds", "dangerous_rebuilds"):
        assert result["metadata"].get(name) == straight["metadata"].get(name)


@dataclass
class Made:
    """A straight run of a case, and a run that saved a checkpoint wherever it could."""

    straight: dict[str, Any]
    straight_dir: Path
    checkpointing: dict[str, Any]
    folder: Path
    """The checkpointing run's checkpoint folder (its latest checkpoint only)."""
    kept: dict[int, Path]
    """A copy of every checkpoint it saved, by step."""

    def middle(self, steps: int) -> tuple[int, Path]:
        """The checkpoint nearest 60 % of the run."""
        step = min(self.kept, key=lambda s: abs(s - 0.6 * steps))
        return step, self.kept[step]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Made]:
    """``made(case, backend)``: the two runs of a case, run once per module."""

    @functools.cache
    def make(case: str, backend: str) -> Made:
        root = tmp_path_factory.mktemp(f"{case}-{backend}")
        straight = execute(case, backend, Context(artifact_dir=root / "straight"))
        kept: dict[int, Path] = {}

        def keep(step: int, path: Path) -> None:
            kept[step] = Path(shutil.copy(path, root / f"kept-{step}.npz"))

        checkpointing = execute(case, backend, Context(
            artifact_dir=root / "checkpointing", checkpoint_dir=root / "checkpoints",
            checkpoint_every_s=EVERY_POINT, on_checkpoint=keep))
        return Made(straight, root / "straight", checkpointing, root / "checkpoints", kept)

    return make


def resume(case: str, backend: str, checkpoint: Path,
           folder: Path) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """The result of ``case`` given ``checkpoint``, in a fresh artifact folder, and the
    context's on_resume calls."""
    calls: list[tuple[int, str]] = []
    context = Context(artifact_dir=folder, inputs={CHECKPOINT_INPUT: checkpoint},
                      on_resume=lambda step, note: calls.append((step, note)))
    return execute(case, backend, context), calls


@both_backends
@pytest.mark.parametrize("case", CASES)
def test_a_run_resumed_from_its_middle_is_bit_identical_to_a_straight_run(
        case: str, backend: str, made: Callable[[str, str], Made], tmp_path: Path) -> None:
    runs = made(case, backend)
    # Saving at every point it can changes nothing, and keeps only the latest checkpoint.
    assert_same_result(runs.checkpointing, runs.straight)
    assert [p.name for p in runs.folder.iterdir()] == [f"checkpoint-{max(runs.kept)}.npz"]
    steps = CASES[case][1]["steps"]
    step, checkpoint = runs.middle(steps)
    assert 0.4 * steps <= step <= 0.8 * steps
    resumed, calls = resume(case, backend, checkpoint, tmp_path)
    assert_same_result(resumed, runs.straight)
    for name in (TRAJECTORY, FINAL_CONFIGURATION):
        assert (tmp_path / name).read_bytes() == (runs.straight_dir / name).read_bytes()
    assert resumed["metadata"]["resumed_from_step"] == step and calls == [(step, "")]
    assert "resume_note" not in resumed["metadata"]
    assert resumed["metadata"]["atom_steps"] * steps == (
        runs.straight["metadata"]["atom_steps"] * (steps - step))  # this attempt's work


@pytest.mark.parametrize("case", ["lj-nve", "lj-nvt", "nbody", "brownian"])
def test_checkpoints_are_saved_where_the_kind_can_restart_exactly(
        case: str, made: Callable[[str, str], Made]) -> None:
    runs = made(case, COMPILED)
    steps = CASES[case][1]["steps"]
    saved = sorted(runs.kept)
    if case == "lj-nve":  # at displacement rebuilds: all but step 0's, and maybe the last's
        rebuilds = runs.straight["metadata"]["neighbour_rebuilds"]
        assert len(saved) in (rebuilds - 1, rebuilds - 2) and len(saved) >= 3
    elif case == "lj-nvt":  # at the scheduled rebuilds
        assert saved == list(range(6, steps, 6))
    elif case == "nbody":  # after any step but the last
        assert saved == list(range(1, steps))
    else:  # the clock is asked every CHECKPOINT_CHECK_STEPS steps only
        assert saved == list(range(CHECKPOINT_CHECK_STEPS, steps, CHECKPOINT_CHECK_STEPS))


@pytest.mark.parametrize("case", ["lj-nvt", "nbody", "brownian"])
@both_backends
def test_a_checkpoint_made_under_other_settings_is_refused_and_the_run_starts_over(
        case: str, backend: str, made: Callable[[str, str], Made], tmp_path: Path) -> None:
    runs = made(case, backend)
    step, checkpoint = runs.middle(CASES[case][1]["steps"])
    _, state, compat = read_state(checkpoint)
    assert compat["backend"] == backend and compat["numpy_version"] == np.__version__
    write_state(tmp_path / "other.npz", step, state,
                {**compat, "backend": "python", "numpy_version": "1.26.4"})
    resumed, calls = resume(case, backend, tmp_path / "other.npz", tmp_path / "out")
    note = (f"checkpoint of step {step} made with backend python, numpy_version 1.26.4; "
            f"this worker runs backend {backend}, numpy_version {np.__version__}: started "
            "from step 0")
    assert calls == [(0, note)] and resumed["metadata"]["resume_note"] == note
    assert "resumed_from_step" not in resumed["metadata"]
    assert_same_result(resumed, runs.straight)


def replaced(**entries: Any) -> Callable[[dict[str, Any], int], tuple[dict[str, Any], int]]:
    """A damage: the state with ``entries`` replaced (None: removed)."""
    def damage(state: dict[str, Any], step: int) -> tuple[dict[str, Any], int]:
        changed = {**state, **entries}
        return {k: v for k, v in changed.items() if v is not None}, step
    return damage


def changed(name: str, change: Callable[[np.ndarray], np.ndarray]
            ) -> Callable[[dict[str, Any], int], tuple[dict[str, Any], int]]:
    """A damage: the array ``name`` changed by ``change``."""
    return lambda state, step: ({**state, name: change(state[name].copy())}, step)


def nan_at_first(array: np.ndarray) -> np.ndarray:
    array.flat[0] = math.nan
    return array


def outside(array: np.ndarray) -> np.ndarray:
    array[3, 1] = -0.25
    return array


@pytest.mark.parametrize(("damage", "reason"), [
    (changed("positions", lambda a: a[1:]),
     r"positions is float64 \(255, 3\), this run has float64 \(256, 3\)"),
    (replaced(velocities=None), r"velocities is missing"),
    (changed("forces", lambda a: a.astype(np.float32)), r"forces is float32 \(256, 3\)"),
    (changed("velocities", nan_at_first), r"velocities holds numbers that are not finite"),
    (changed("positions", outside), r"positions lie outside the box \[0, 6\.8399"),
    (changed("samples_pressure", lambda a: a[:-1]), r"samples_pressure is float64 \(\d+,\)"),
    (replaced(sample_steps=np.zeros(0, dtype=np.int64)), r"sample_steps is empty"),
    (replaced(rng={"bit_generator": "MT19937", "state": {"key": [], "pos": 0}}),
     r"rng is not a PCG64 state"),
    (replaced(rng=None), r"rng \(the random generator's state\) is missing"),
    (replaced(neighbour_rebuilds="many"), r"neighbour_rebuilds = 'many' is not a finite int"),
    (replaced(trajectory=np.zeros(0, dtype=np.uint8)), r"trajectory is empty"),
    (lambda state, step: (state, 60), r"this run's checkpoints are of steps 1 to 59"),
], ids=["short", "no-velocities", "float32", "nan", "outside-box", "short-samples",
        "no-samples", "other-generator", "no-generator", "counter", "no-trajectory",
        "last-step"])
def test_a_checkpoint_that_does_not_fit_the_run_is_refused(
        damage: Callable[[dict[str, Any], int], tuple[dict[str, Any], int]], reason: str,
        made: Callable[[str, str], Made], tmp_path: Path) -> None:
    runs = made("lj-nvt", COMPILED)
    step, checkpoint = runs.middle(60)
    state, compat = read_state(checkpoint)[1:]
    forged, forged_step = damage(state, step)
    write_state(tmp_path / "forged.npz", forged_step, forged, compat)
    resumed, [(at, note)] = resume("lj-nvt", COMPILED, tmp_path / "forged.npz",
                                   tmp_path / "out")
    assert at == 0
    assert note.startswith(f"checkpoint of step {forged_step} does not fit: ")
    assert note.endswith(": started from step 0")
    assert re.search(reason, note), note
    assert_same_result(resumed, runs.straight)


@pytest.mark.parametrize("case", ["nbody", "brownian-overdamped"])
def test_a_checkpoint_of_another_size_or_a_damaged_file_is_refused(
        case: str, made: Callable[[str, str], Made], tmp_path: Path) -> None:
    runs = made(case, COMPILED)
    step, checkpoint = runs.middle(CASES[case][1]["steps"])
    _, state, compat = read_state(checkpoint)
    write_state(tmp_path / "small.npz", step, {**state, "start": np.zeros((3, 3)),
                                               "masses": np.ones(3)}, compat)
    data = checkpoint.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(len(data)))
    notes = {}
    for name in ("small", "cut", "noise"):
        resumed, [(at, notes[name])] = resume(case, COMPILED, tmp_path / f"{name}.npz",
                                              tmp_path / name)
        assert at == 0
        assert_same_result(resumed, runs.straight)
    wrong = "masses is float64 (3,), this run has float64 (32,)" if case == "nbody" else \
        "start is float64 (3, 3), this run has float64 (40, 3)"
    assert notes["small"] == (f"checkpoint of step {step} does not fit: {wrong}: started from "
                              "step 0")
    assert notes["cut"].startswith(f"checkpoint unreadable: {tmp_path}/cut.npz: not a "
                                   "checkpoint: BadZipFile")
    assert notes["noise"] == (f"checkpoint unreadable: {tmp_path}/noise.npz: not a checkpoint: "
                              "not an .npz archive (a zip file): started from step 0")


@pytest.mark.parametrize("case", ["lj-nve", "nbody", "brownian"])
@both_backends
def test_a_stop_request_ends_the_run_with_a_checkpoint_to_resume_from(
        case: str, backend: str, made: Callable[[str, str], Made], tmp_path: Path) -> None:
    steps = CASES[case][1]["steps"]
    context = Context(artifact_dir=tmp_path / "stopped", checkpoint_dir=tmp_path / "ck")

    def report(fraction: float) -> None:  # as the worker's signal handler would, half-way
        if fraction >= 0.5:
            context.request_checkpoint_stop()

    context.report = report
    with pytest.raises(Preempted) as stopped:
        execute(case, backend, context)
    step = stopped.value.step
    assert steps / 2 <= step < steps
    assert list((tmp_path / "ck").iterdir()) == [stopped.value.path]
    assert stopped.value.path.name == f"checkpoint-{step}.npz"
    resumed, calls = resume(case, backend, stopped.value.path, tmp_path / "resumed")
    assert calls == [(step, "")]
    assert_same_result(resumed, made(case, backend).straight)


def test_simulate_saves_checkpoints_and_resumes_from_one(tmp_path: Path) -> None:
    params = CASES["nbody"][1]
    straight = ckernel.simulate("nbody", params, SEED)
    checkpointing = ckernel.simulate("nbody", params, SEED, checkpoint_dir=tmp_path,
                                     checkpoint_every_s=EVERY_POINT)
    last = tmp_path / f"checkpoint-{params['steps'] - 1}.npz"
    assert list(tmp_path.iterdir()) == [last]
    resumed = ckernel.simulate("nbody", params, SEED, resume_from=last)
    for result in (checkpointing, resumed):
        assert (result["observables"], result["summary"]) == (straight["observables"],
                                                              straight["summary"])
    assert resumed["metadata"]["resumed_from_step"] == params["steps"] - 1
    refused = ckernel.simulate("nbody", params, SEED + 1, resume_from=last)
    assert refused["metadata"]["resume_note"].endswith(
        f"made with seed {SEED}; this worker runs seed {SEED + 1}: started from step 0")
    for bad in (-1.0, math.nan, math.inf, True, "300"):
        with pytest.raises(ckernel.ParamError, match=r"checkpoint_every_s = .*: must be a "
                                                     r"number >= 0"):
            ckernel.simulate("nbody", params, SEED, checkpoint_every_s=bad)  # type: ignore[arg-type]
