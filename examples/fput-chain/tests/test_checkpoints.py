"""Checkpoints: a run that saves one at every chunk boundary, and a run resumed from any of
them, end bit for bit where a straight run ends; a checkpoint of another task, a damaged
one and a state that does not fit are refused (the run starts from step 0 and says why);
a stop request saves a checkpoint and raises Preempted."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simkind import CHECKPOINT_INPUT, Context, Preempted, read_state, write_state

Run = Callable[..., dict[str, Any]]

HARMONIC = {"n_particles": 16, "steps": 6000, "sample_every": 1500, "modes_recorded": 4}
"""The frequency meter runs (its accumulators are state too), and sample_every above
CHUNK_STEPS puts chunk boundaries both at samples and between them."""
HARMONIC_SAVES = [1024, 1500, 2524, 3000, 4024, 4500, 5524]

NONLINEAR = {"n_particles": 24, "alpha": 0.25, "beta": 1.0, "steps": 3000,
             "sample_every": 100}
NONLINEAR_SAVES = list(range(100, 3000, 100))


class EveryPoint(Context):
    """A context for which a checkpoint is due at every save point: checkpoint_every_s's
    clock left out, so that which points save does not depend on the machine's speed."""

    def checkpoint_due(self) -> bool:
        return self.checkpoint_dir is not None


def run_saving_everywhere(run_chain: Run, params: dict[str, Any], seed: int,
                          folder: Path) -> tuple[dict[str, Any], dict[int, Path]]:
    """The result of a run that saves at every save point, and a copy of each of its
    checkpoints by step (a save removes the checkpoint before it)."""
    kept = folder / "kept"
    kept.mkdir()
    copies: dict[int, Path] = {}

    def keep(step: int, path: Path) -> None:
        copies[step] = Path(shutil.copy(path, kept))

    context = EveryPoint(checkpoint_dir=folder / "checkpoints", on_checkpoint=keep)
    return run_chain(params, seed, context), copies


def numbers(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what may differ between attempts: the time taken and whether it
    resumed (everything else, observables and summary above all, must not)."""
    metadata = {name: value for name, value in result["metadata"].items()
                if name not in {"elapsed_s", "resumed_from_step", "resume_note"}}
    return {**result, "metadata": metadata}


def resume(run_chain: Run, params: dict[str, Any], seed: int,
           checkpoint: Path) -> tuple[dict[str, Any], Context]:
    """The result of a fresh attempt given ``checkpoint``, and its context."""
    context = Context(inputs={CHECKPOINT_INPUT: checkpoint})
    return run_chain(params, seed, context), context


@pytest.mark.parametrize(("params", "saves"), [(HARMONIC, HARMONIC_SAVES),
                                                (NONLINEAR, NONLINEAR_SAVES)],
                         ids=["harmonic", "nonlinear"])
def test_saving_everywhere_and_resuming_from_anywhere_give_the_straight_result(
        run_chain: Run, tmp_path: Path, params: dict[str, Any], saves: list[int]) -> None:
    straight = run_chain(params, seed=3)
    saving, checkpoints = run_saving_everywhere(run_chain, params, 3, tmp_path)
    assert numbers(saving) == numbers(straight)
    assert sorted(checkpoints) == saves  # every chunk boundary but the last step's
    for step, path in checkpoints.items():
        resumed, context = resume(run_chain, params, 3, path)
        assert (context.resumed_step, context.resume_note) == (step, "")
        assert resumed["metadata"]["resumed_from_step"] == step
        assert numbers(resumed) == numbers(straight), f"resumed from step {step}"


def damage(path: Path) -> Path:
    """``path`` cut in half."""
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(("seed", "params", "spoil", "note"), [
    (4, HARMONIC, None, r"checkpoint of step 1500 made with seed 3; this worker runs seed 4"),
    (3, {**HARMONIC, "dt": 0.04}, None,
     r"checkpoint of step 1500 made with params \w+; this worker runs params \w+"),
    (3, HARMONIC, damage, r"checkpoint unreadable: .*forged.npz: not a checkpoint: .*"),
], ids=["another-seed", "other-params", "damaged"])
def test_a_checkpoint_of_another_task_or_damaged_starts_from_step_0(
        run_chain: Run, tmp_path: Path, seed: int, params: dict[str, Any],
        spoil: Callable[[Path], Path] | None, note: str) -> None:
    _, checkpoints = run_saving_everywhere(run_chain, HARMONIC, 3, tmp_path)
    given = Path(shutil.copy(checkpoints[1500], tmp_path / "forged.npz"))
    resumed, context = resume(run_chain, params, seed, spoil(given) if spoil else given)
    assert re.fullmatch(f"{note}: started from step 0", context.resume_note)
    assert resumed["metadata"]["resume_note"] == context.resume_note
    assert "resumed_from_step" not in resumed["metadata"]
    assert numbers(resumed) == numbers(run_chain(params, seed))


@pytest.mark.parametrize(("forge", "reason"), [
    (lambda step, s: (step, {**s, "u": s["u"][:-1]}),
     r"u is float64 \(15,\), this run has float64 \(16,\)"),
    (lambda step, s: (step, {**s, "v": s["v"].astype(np.float32)}),
     r"v is float32 \(16,\), this run has float64 \(16,\)"),
    (lambda step, s: (step, {**s, "u": np.where(s["u"] > 0.0, np.inf, s["u"])}),
     "u holds numbers that are not finite"),
    (lambda step, s: (step, {**s, "samples": s["samples"][:, :1]}),
     r"samples is float64 \(8, 1\), this run has float64 \(8, 2\)"),
    (lambda step, s: (step, {k: a for k, a in s.items() if k != "meter_tail"}),
     "meter_tail is missing"),
    (lambda step, s: (step, {**s, "meter_crossed": s["meter_crossed"].tolist()}),
     "meter_crossed is a list, not an array"),
    (lambda step, s: (1000, s), "step 1000 is not a chunk boundary before this run's last "
                                "step, 6000"),
    (lambda step, s: (6000, s), "step 6000 is not a chunk boundary before this run's last "
                                "step, 6000"),
], ids=["short", "float32", "infinite", "samples", "missing", "list", "inside-chunk", "end"])
def test_a_state_that_does_not_fit_starts_from_step_0(
        run_chain: Run, tmp_path: Path,
        forge: Callable[[int, dict[str, Any]], tuple[int, dict[str, Any]]],
        reason: str) -> None:
    # A file made under this task's compat, as a forger (or a bug) could make it: only the
    # run's own check stands between its state and the compiled loop.
    _, checkpoints = run_saving_everywhere(run_chain, HARMONIC, 3, tmp_path)
    step, state, compat = read_state(checkpoints[1500])
    step, state = forge(step, state)
    forged = tmp_path / "forged.npz"
    write_state(forged, step, state, compat)
    resumed, context = resume(run_chain, HARMONIC, 3, forged)
    assert re.fullmatch(f"checkpoint of step {step} does not fit: {reason}: started from "
                        "step 0", context.resume_note)
    assert resumed["metadata"]["resume_note"] == context.resume_note
    assert numbers(resumed) == numbers(run_chain(HARMONIC, 3))


def test_a_stop_request_saves_raises_preempted_and_resumes_to_the_straight_result(
        run_chain: Run, tmp_path: Path) -> None:
    def stop_halfway(fraction: float) -> None:
        if fraction >= 0.5:
            context.request_checkpoint_stop()

    # No interval: a checkpoint is due only once the stop is asked for (at step 3000).
    context = Context(report=stop_halfway, checkpoint_dir=tmp_path)
    with pytest.raises(Preempted) as stopped:
        run_chain(HARMONIC, 3, context)
    assert stopped.value.step == 3000
    assert sorted(tmp_path.iterdir()) == [stopped.value.path]
    resumed, _ = resume(run_chain, HARMONIC, 3, stopped.value.path)
    assert resumed["metadata"]["resumed_from_step"] == 3000
    assert numbers(resumed) == numbers(run_chain(HARMONIC, 3))
