"""Pieces every simulation driver shares: the run record, sampling with blow-up checks,
progress reporting and the summary statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

import simkind
from ckernel import extxyz
from ckernel.errors import ParamError, SimulationError
from simkind.extxyz import FINAL_CONFIGURATION, INIT_INPUT, TRAJECTORY, read_last_header

PROGRESS_CALLS = 100
"""progress(fraction) is called at most this many times (plus once at the end)."""
SEM_BLOCKS = 10
"""Batch-means blocks for standard errors (correlated samples need blocks, not sqrt(n))."""


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
    ``save_final``), through ``context``. ``Files()`` reads and writes nothing; the driver
    sets ``box`` (lj) and ``masses`` (nbody) for the frames. Writing only reads the driver's
    arrays, so it cannot change the dynamics."""

    def __init__(self, context: simkind.Context | None = None, every: int = 0,
                 save_final: bool = False,
                 start: extxyz.Configuration | None = None) -> None:
        self.context = context
        self.every = every
        self.save_final = save_final
        self.start = start
        self.box: float | None = None
        self.masses: np.ndarray | None = None
        self._trajectory: TextIO | None = None

    @classmethod
    def of_task(cls, kind: simkind.Kind, params: dict[str, Any],
                context: simkind.Context | None) -> Files:
        """The files of a task of ``kind``: written only where ``context`` collects them;
        the start read from its ``init`` input, if any, once the kind's init check passed."""
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
                   collected and params["save_final"], start)

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
