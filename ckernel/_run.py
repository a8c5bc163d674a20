"""Pieces every simulation driver shares: the run record, sampling with blow-up checks,
progress reporting, the summary statistics, and the files a driver reads and writes (its
start, trajectory, final configuration and checkpoints)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import simkind
from ckernel import extxyz
from ckernel.errors import ParamError, SimulationError
from simkind.checkpoint import CheckpointError
from simkind.extxyz import FINAL_CONFIGURATION, INIT_INPUT, TRAJECTORY, read_last_header

PROGRESS_CALLS = 100
"""progress(fraction) is called at most this many times (plus once at the end)."""
SEM_BLOCKS = 10
"""Batch-means blocks for standard errors (correlated samples need blocks, not sqrt(n))."""
RNG_ENTRY = "rng"
"""The checkpoint entry holding the state of a driver's random generator."""
TRAJECTORY_ENTRY = "trajectory"
"""The checkpoint entry holding the bytes of ``trajectory.xyz`` up to the checkpoint's step."""


@dataclass
class Run:
    """What a driver hands back to ``ckernel.simulate``; ``state`` holds the final arrays."""

    observables: dict[str, list[float]]
    summary: dict[str, float]
    state: dict[str, np.ndarray]
    atom_steps: int
    metadata: dict[str, Any] = field(default_factory=dict)


class Progress:
    """Calls ``callback(step / steps)`` about every 1 % of the steps, and at the last step."""

    def __init__(self, callback: Callable[[float], None] | None, steps: int) -> None:
        self.callback = callback
        self.steps = steps
        self.every = max(1, math.ceil(steps / PROGRESS_CALLS))

    def __call__(self, step: int) -> None:
        if self.callback is not None and (step % self.every == 0 or step == self.steps):
            self.callback(step / self.steps)


class Samples:
    """Time series of named observables; every value is checked to be finite on entry."""

    def __init__(self, kind: str, names: tuple[str, ...]) -> None:
        self.kind = kind
        self.series: dict[str, list[float]] = {name: [] for name in ("t", *names)}
        self.steps: list[int] = []

    def add(self, step: int, t: float, **values: float) -> None:
        for name, value in values.items():
            if not math.isfinite(value):
                raise blow_up(self.kind, f"the {name.replace('_', ' ')} became {value}", step, t)
        self.steps.append(step)
        self.series["t"].append(float(t))
        for name, value in values.items():
            self.series[name].append(float(value))

    def array(self, name: str, from_step: int = 0) -> np.ndarray:
        """The series of ``name``; with ``from_step``, only the samples taken from that step on."""
        values = np.asarray(self.series[name])
        return values[np.asarray(self.steps) >= from_step] if from_step > 0 else values

    def saved(self) -> dict[str, np.ndarray]:
        """The samples as checkpoint entries: ``sample_steps`` and ``samples_<name>``."""
        return {"sample_steps": np.array(self.steps, dtype=np.int64),
                **{f"samples_{name}": np.array(values, dtype=np.float64)
                   for name, values in self.series.items()}}

    def check(self, saved: Mapping[str, Any]) -> None:
        """CheckpointError unless ``saved`` holds these series, as many finite samples each
        as sample steps (at least one: step 0's)."""
        steps = entry(saved, "sample_steps", np.int64, (None,))
        if not len(steps):
            raise CheckpointError("sample_steps is empty (step 0 is always sampled)")
        for name in self.series:
            entry(saved, f"samples_{name}", np.float64, steps.shape)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take the samples of a checkpoint that passed :meth:`check`."""
        self.steps = saved["sample_steps"].tolist()
        self.series = {name: saved[f"samples_{name}"].tolist() for name in self.series}


@dataclass
class State:
    """A driver's whole state between two steps, as its checkpoints hold it: ``arrays`` by
    name (the driver's own, which its steps update in place, so a resume fills them in
    place), its ``samples``, its random generator ``rng`` (None: it draws nothing after the
    start) and the types of the ``numbers`` it keeps in plain variables (counters, scales),
    given to :meth:`Files.checkpoint` and handed back by :meth:`Files.resume`. ``check``
    refuses, with CheckpointError, a state that passes the shared checks (names, shapes,
    dtypes, finite numbers) but that the driver still cannot go on from."""

    arrays: dict[str, np.ndarray]
    samples: Samples
    rng: np.random.Generator | None = None
    numbers: dict[str, type] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], None] | None = None


def entry(saved: Mapping[str, Any], name: str, dtype: type,
          shape: tuple[int | None, ...]) -> np.ndarray:
    """The array ``name`` of a checkpoint's state, of ``dtype`` and ``shape`` (None: any
    length), all finite if floating-point; CheckpointError saying what it is instead."""
    found = saved.get(name)
    if not isinstance(found, np.ndarray):
        raise CheckpointError(f"{name} is missing" if found is None
                              else f"{name} is a {type(found).__name__}, not an array")
    sizes = ["any" if n is None else str(n) for n in shape]
    wanted = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
    if found.dtype != dtype or found.ndim != len(shape) or any(
            n is not None and n != m for n, m in zip(shape, found.shape, strict=True)):
        raise CheckpointError(f"{name} is {found.dtype} {found.shape}, this run has "
                              f"{np.dtype(dtype)} {wanted}")
    if found.dtype.kind == "f" and not np.isfinite(found).all():
        raise CheckpointError(f"{name} holds numbers that are not finite")
    return found


def blow_up(kind: str, what: str, step: int, t: float) -> SimulationError:
    """The error for a simulation that went non-finite, saying where."""
    return SimulationError(f"{kind}: {what} at step {step} (t = {t:.6g}): the simulation blew "
                           "up; reduce dt or check the initial configuration")


def require_finite(kind: str, name: str, array: np.ndarray, step: int, t: float) -> None:
    """Raise SimulationError if any entry of ``array`` is not finite."""
    if not np.isfinite(array).all():
        raise blow_up(kind, f"non-finite {name}", step, t)


def sem(values: np.ndarray) -> float:
    """Standard error of the mean by batch means over SEM_BLOCKS blocks (plain std/sqrt(n)
    below 2 * SEM_BLOCKS samples); the leading remainder is dropped to make equal blocks."""
    n = len(values)
    if n < 2:
        return 0.0
    if n < 2 * SEM_BLOCKS:
        return float(np.std(values, ddof=1) / math.sqrt(n))
    size = n // SEM_BLOCKS
    blocks = values[n - size * SEM_BLOCKS:].reshape(SEM_BLOCKS, size).mean(axis=1)
    return float(np.std(blocks, ddof=1) / math.sqrt(SEM_BLOCKS))


def slope(t: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y(t) (0 with fewer than two samples)."""
    if len(t) < 2:
        return 0.0
    tc = t - t.mean()
    return float((tc @ (y - y.mean())) / (tc @ tc))


def mean_and_sem(summary: dict[str, float], samples: Samples, *names: str,
                 from_step: int = 0) -> None:
    """Add ``mean_<name>`` and ``sem_<name>`` to ``summary`` for each observable, over the
    samples taken from step ``from_step`` on (the end of the equilibration)."""
    for name in names:
        values = samples.array(name, from_step)
        summary[f"mean_{name}"] = float(values.mean())
        summary[f"sem_{name}"] = sem(values)


class Files:
    """The files a driver reads and writes: the configuration it starts from (``start``),
    frames of ``trajectory.xyz`` every ``every`` steps (0: none) and ``final.xyz`` (when
    ``save_final``), through ``context``; and its checkpoints, made under ``compat`` (what
    the numbers depend on besides the state: a checkpoint made under another is not resumed
    from). ``Files()`` reads and writes nothing; the driver sets ``box`` (lj) and ``masses``
    (nbody) for the frames. Writing only reads the driver's arrays, so it cannot change the
    dynamics."""

    def __init__(self, context: simkind.Context | None = None, every: int = 0,
                 save_final: bool = False, start: extxyz.Configuration | None = None,
                 compat: Mapping[str, str] | None = None) -> None:
        self.context = context
        self.every = every
        self.save_final = save_final
        self.start = start
        self.compat = dict(compat or {})
        self.box: float | None = None
        self.masses: np.ndarray | None = None
        self._trajectory: TextIO | None = None

    @classmethod
    def of_task(cls, kind: simkind.Kind, params: dict[str, Any],
                context: simkind.Context | None,
                compat: Mapping[str, str] | None = None) -> Files:
        """The files of a task of ``kind``: written only where ``context`` collects them;
        the start read from its ``init`` input, if any, once the kind's init check passed;
        checkpoints made under ``compat``."""
        collected = context is not None and context.wants_artifacts
        start = None
        path = None if context is None else context.inputs.get(INIT_INPUT)
        if path is not None:
            header = read_last_header(path)  # its errors name the file and the line
            if kind.init is None:
                raise ParamError(f"{kind.name}: this kind cannot start from a configuration")
            try:
                kind.init(params, header)
            except ParamError as e:
                raise ParamError(f"{path}: {e}") from None
            start = extxyz.read_configuration(path, header)
        return cls(context, params["trajectory_every"] if collected else 0,
                   collected and params["save_final"], start, compat)

    def due(self, step: int) -> bool:
        """Whether step ``step`` gets a trajectory frame."""
        return self.every > 0 and step % self.every == 0

    def frame(self, step: int, t: float, positions: np.ndarray,
              velocities: np.ndarray | None) -> None:
        """Append the frame of ``step`` to the trajectory."""
        assert self.context is not None
        if self._trajectory is None:
            self._trajectory = extxyz.open_text(self.context.artifact(TRAJECTORY))
        extxyz.write_frame(self._trajectory, positions, step=step, time=t, box=self.box,
                           velocities=velocities, masses=self.masses)

    def final(self, step: int, t: float, positions: np.ndarray,
              velocities: np.ndarray | None) -> None:
        """Write ``final.xyz`` (when ``save_final``) and close the trajectory."""
        self.close()
        if self.save_final:
            assert self.context is not None
            with extxyz.open_text(self.context.artifact(FINAL_CONFIGURATION)) as f:
                extxyz.write_frame(f, positions, step=step, time=t, box=self.box,
                                   velocities=velocities, masses=self.masses)

    def close(self) -> None:
        """Close the trajectory (also when the run failed)."""
        if self._trajectory is not None:
            self._trajectory.close()
            self._trajectory = None

    def checkpoint_due(self) -> bool:
        """Whether to save a checkpoint now (cheap: asked wherever a driver can restart)."""
        return self.context is not None and self.context.checkpoint_due()

    def checkpoint(self, step: int, state: State, **numbers: int | float) -> None:
        """Save ``state`` at the end of ``step``, with ``numbers`` (the values of
        ``state.numbers``) and the trajectory written so far. Raises simkind.Preempted after
        saving when the worker asked the task to stop."""
        assert self.context is not None
        entries: dict[str, Any] = {**state.arrays, **state.samples.saved(), **numbers,
                                   TRAJECTORY_ENTRY: self._trajectory_so_far()}
        if state.rng is not None:
            entries[RNG_ENTRY] = state.rng.bit_generator.state
        self.context.save_checkpoint(step, entries, self.compat)

    def resume(self, state: State, steps: int) -> tuple[int, dict[str, Any]]:
        """The step to go on from, and the ``numbers`` given to :meth:`checkpoint`, when the
        task came with a checkpoint that fits ``state``, which it then fills in place (with
        the trajectory up to that step written back); (0, {}) to start from the beginning:
        no checkpoint, or one the context refused (``on_resume`` says why)."""
        if self.context is None:
            return 0, {}
        restored = self.context.restore_checkpoint(
            self.compat, functools.partial(self._check, state, steps))
        if restored is None:
            return 0, {}
        step, saved = restored
        for name, array in state.arrays.items():
            array[...] = saved[name]
        state.samples.restore(saved)
        if state.rng is not None:
            state.rng.bit_generator.state = saved[RNG_ENTRY]
        if self.every:
            path = self.context.artifact(TRAJECTORY)
            with path.open("wb") as f:
                saved[TRAJECTORY_ENTRY].tofile(f)
            self._trajectory = extxyz.open_text(path, append=True)
        return step, {name: saved[name] for name in state.numbers}

    def _check(self, state: State, steps: int, step: int, saved: dict[str, Any]) -> None:
        """CheckpointError unless ``saved`` (of ``step``) fits ``state`` and this run."""
        if not 0 < step < steps:
            raise CheckpointError(f"this run's checkpoints are of steps 1 to {steps - 1}")
        for name, array in state.arrays.items():
            entry(saved, name, array.dtype.type, array.shape)
        state.samples.check(saved)
        if state.rng is not None:
            generator = type(state.rng.bit_generator)
            if not isinstance(saved.get(RNG_ENTRY), dict):
                raise CheckpointError(f"{RNG_ENTRY} (the random generator's state) is missing")
            try:
                generator().state = saved[RNG_ENTRY]  # a scratch generator's: it may fail
            except (KeyError, OverflowError, TypeError, ValueError) as e:
                raise CheckpointError(f"{RNG_ENTRY} is not a {generator.__name__} state: "
                                      f"{e}") from None
        for name, kind in state.numbers.items():
            value = saved.get(name)
            if not isinstance(value, int | float) or not math.isfinite(value) \
                    or type(value) is not kind:  # not a bool for an int, nor an int for a float
                raise CheckpointError(f"{name} = {value!r:.40} is not a finite "
                                      f"{kind.__name__}")
        # A trajectory is written from step 0 on, so a run that writes one resumes only
        # from a checkpoint that holds one.
        if self.every and not len(entry(saved, TRAJECTORY_ENTRY, np.uint8, (None,))):
            raise CheckpointError(f"{TRAJECTORY_ENTRY} is empty: this run writes one")
        if state.check is not None:
            state.check(saved)

    def _trajectory_so_far(self) -> np.ndarray:
        """The bytes of the trajectory written so far (none without one)."""
        if self._trajectory is None:
            return np.zeros(0, dtype=np.uint8)
        self._trajectory.flush()
        # Mapped, not read: the checkpoint copies it in blocks, however long it is.
        return np.memmap(Path(self._trajectory.name), dtype=np.uint8, mode="r")
