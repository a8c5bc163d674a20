"""What a simulation kind declares (:class:`Kind`), what its run function is handed
(:class:`Context`) and what it gives back (:class:`Output`).

A kind is declared in a module that imports only pure Python (this package and the
standard library): simctl imports it on the main PC to validate task files, without numpy
or a compiled extension. Its run function is named by ``run`` (``"module:function"``) and
imported only where tasks run, in the worker's task processes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simkind import fields
from simkind.checkpoint import CHECKPOINT_INPUT, CheckpointError, Preempted, read_state, write_state
from simkind.errors import ParamError
from simkind.extxyz import Frame, read_last_header
from simkind.fields import Spec

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
"""Kind names: lower-case letters, digits and ``_``, starting with a letter, at most 32."""

RUN_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

PLOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Plot names (they become part of file names): letters, digits, ``_``, ``.``, ``-``."""


@dataclass(frozen=True)
class Plot:
    """One default plot of a kind (what ``simctl plot RUN`` draws without axes).

    Either ``y``, a summary value, drawn over the sweep points (the mean of the replicas,
    their standard error as error bars), or ``observable``, a series drawn against time
    (every replica, their mean and a band of one standard error). For a ``y`` plot ``x``
    names a parameter or another summary value (None: the first parameter the run sweeps);
    for an ``observable`` plot it names another observable (None: ``t``). ``diagonal``
    draws the line y = x, for a measured value against its expected one. ``name`` is the
    plot's part of the file name (default: ``y`` or ``observable``).
    """

    y: str | None = None
    observable: str | None = None
    x: str | None = None
    title: str = ""
    diagonal: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        problems = []
        if (self.y is None) == (self.observable is None):
            problems.append("give exactly one of y (a summary value) and observable")
        for attr in ("y", "observable", "x"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{attr} {value!r} must be a non-empty name or None")
        if not isinstance(self.title, str):
            problems.append(f"title {self.title!r} must be a string")
        if not isinstance(self.diagonal, bool):
            problems.append(f"diagonal {self.diagonal!r} must be true or false")
        if self.diagonal and self.observable is not None:
            problems.append("diagonal is for y plots only")
        if not isinstance(self.name, str) or (self.name and not PLOT_NAME_RE.match(self.name)):
            problems.append(f"name {self.name!r} must match {PLOT_NAME_RE.pattern}")
        if problems:
            raise ValueError("malformed plot: " + "; ".join(problems))

    @property
    def key(self) -> str:
        """The plot's name: ``name``, else ``y`` or ``observable``."""
        return self.name or str(self.y or self.observable)


@dataclass(frozen=True)
class Kind:
    """One simulation kind: its name, parameters and how to run it.

    ``version`` is the kind's own version (results computed with one version are reused
    only for that version); left out, it is the version of the package that provides it.
    ``check(params, given)`` applies the cross-field rules to validated ``params`` (it may
    fill in derived values) and raises :class:`ParamError`; ``given`` holds what the task
    file set. Validation must accept its own output: the worker validates the stored,
    already validated params again, where every field with a value counts as given.
    ``rules`` says those rules in words for the docs. ``cost(params)`` estimates a task's
    relative cost (1.0 is a typical task; used for scheduling).

    ``units`` gives the unit of each summary value and observable by name (the parameters'
    units are their fields'); ``plots`` are the kind's default plots, drawn by
    ``simctl plot RUN`` (see :class:`Plot`).

    ``init(params, frame)``, when given, says the kind can start from a configuration (a
    task's ``init``: an extended XYZ file, or another task's ``final.xyz``): it checks that
    the configuration's last frame (:class:`simkind.extxyz.Frame`, its header) fits the
    validated ``params`` and raises :class:`ParamError` if not. The run function then finds
    the file in ``context.inputs["init"]``. None: the kind takes no ``init``.
    """

    name: str
    description: str
    params: Spec
    run: str
    version: str | None = None
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    rules: str = ""
    cost: Callable[[dict[str, Any]], float] | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    plots: tuple[Plot, ...] = ()
    init: Callable[[dict[str, Any], Frame], None] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.init is not None and not callable(self.init):
            problems.append("init must be a function (params, frame) or None")
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            problems.append(f"name {self.name!r} must match {NAME_RE.pattern}")
        if not isinstance(self.description, str) or not self.description.strip():
            problems.append("description must be a non-empty line")
        if not isinstance(self.run, str) or not RUN_TARGET_RE.match(self.run):
            problems.append(f"run {self.run!r} must be 'module:function'")
        if self.version is not None and (not isinstance(self.version, str)
                                         or not self.version.strip()):
            problems.append(f"version {self.version!r} must be a non-empty string or None")
        if not isinstance(self.params, Mapping) or not all(
                isinstance(k, str) and isinstance(v, fields.Field)
                for k, v in self.params.items()):
            problems.append("params must map parameter names to simkind.Field")
        if not isinstance(self.units, Mapping) or not all(
                isinstance(k, str) and k and isinstance(v, str)
                for k, v in self.units.items()):
            problems.append("units must map summary and observable names to unit strings")
        if not isinstance(self.plots, tuple) or not all(
                isinstance(p, Plot) for p in self.plots):
            problems.append("plots must be a tuple of simkind.Plot")
        else:
            keys = [p.key for p in self.plots]
            if repeated := sorted({k for k in keys if keys.count(k) > 1}):
                problems.append(f"plots: names repeated ({', '.join(repeated)}); give "
                                "each plot its own name")
        if problems:
            raise ValueError("malformed kind: " + "; ".join(problems))

    def validate(self, params: Any) -> dict[str, Any]:
        """``params`` with defaults filled in and every rule checked, or ParamError."""
        out = fields.validate(self.name, self.params, params)
        if self.check is not None:
            self.check(out, {k: v for k, v in params.items() if v is not None})
        return out

    def check_init(self, params: dict[str, Any], path: Path) -> Frame:
        """Check that the configuration in ``path`` fits validated ``params`` (see ``init``);
        its last frame's header, or ParamError naming the file."""
        frame = read_last_header(path)
        self.fit_init(params, frame)
        return frame

    def fit_init(self, params: dict[str, Any], frame: Frame) -> None:
        """Check that a configuration, by its last frame's header (read once for the many
        tasks that start from one file), fits validated ``params``; ParamError if not."""
        if self.init is None:
            raise ParamError(f"{self.name}: this kind cannot start from a configuration "
                             "(it takes no init)")
        self.init(params, frame)

    def unit(self, name: str) -> str:
        """The unit of a summary value or observable (``""``: none declared), else of the
        parameter of that name (a summary may echo a parameter, as ``lj``'s ``box``)."""
        if name in self.units:
            return self.units[name]
        field = self.params.get(name) if isinstance(self.params, Mapping) else None
        return field.unit if field is not None else ""

    def estimate_cost(self, params: dict[str, Any]) -> float:
        """The relative cost of validated ``params`` (1.0 when the kind gives no estimate)."""
        if self.cost is None:
            return 1.0
        cost = self.cost(params)
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not (
                math.isfinite(cost) and cost >= 0.0):
            raise ParamError(f"{self.name}: cost estimate {cost!r} is not a finite number >= 0")
        return float(cost)


ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""Artifact names: a plain file name (no folders), at most 128 characters (as the protocol's)."""


class _Folder:
    """A folder field of :class:`Context`: kept as given (a ``Path`` or its text) and made a
    ``Path`` when first read, which is recorded. A ``Path`` took some 20 us to build per task
    with the caches cold, as a task process's are between two short tasks, and most tasks
    never look at their folders. A run that never read its artifact folder (nor called
    :meth:`Context.artifact`) cannot have written a file there, so the folder is not looked
    for once the run returns: a task that makes no file costs no file-system call either."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.value, self.read = f"_{name}", f"_{name}_read"

    def __get__(self, context: Context | None, owner: type | None = None) -> Path | None:
        if context is None:
            return None  # the field's default, as the dataclass asks for it
        state = context.__dict__
        folder = state[self.value]
        if isinstance(folder, str):
            folder = state[self.value] = Path(folder)
        state[self.read] = True
        return folder

    def __set__(self, context: Context, folder: Path | str | None) -> None:
        context.__dict__[self.value] = folder
        context.__dict__[self.read] = False

    def given(self, context: Context) -> Path | str | None:
        """The folder as given, without reading it (no Path made, not marked as looked at)."""
        return context.__dict__[self.value]

    def was_read(self, context: Context) -> bool:
        return context.__dict__[self.read]


_ARTIFACT_DIR = _Folder()
"""Behind :attr:`Context.artifact_dir` (its methods tell what the run did with it)."""


@dataclass
class Context:
    """What a run function is handed besides its params and seed.

    ``progress(fraction)`` reports how far the task is (0 to 1; calls are cheap and may be
    made every step: the task process forwards at most one every 50 ms).

    ``artifact(name)`` is the path to write the task's file ``name`` to (trajectories,
    configurations, anything): every file in ``artifact_dir`` when the run function returns
    is an artifact of the task, brought back to the main PC exactly once with its result.
    ``artifact_dir`` is None where nothing collects files (a direct call of the run
    function); ``wants_artifacts`` tells. Both folders may be given as text: each reads as a
    ``Path``, made on first use. ``inputs`` maps input names to the files the task
    was given (``init``: the configuration a chained task starts from; ``checkpoint``: the
    checkpoint a resumed attempt starts from).

    Checkpoints (a kind opts in; see ``docs/writing-a-kind.md``): the run function calls
    :meth:`restore_checkpoint` at its start and, at points where it can restart exactly,
    asks :meth:`checkpoint_due` and then calls :meth:`save_checkpoint` with its whole state.
    They are written to ``checkpoint_dir`` (None: none are), every ``checkpoint_every_s``
    seconds (0: only when the worker asks the task to stop, :meth:`request_checkpoint_stop`).
    ``on_checkpoint(step, path)`` is called after each save, ``on_resume(step, note)`` once
    by :meth:`restore_checkpoint` when a checkpoint was given: the step resumed from, or 0
    and why the checkpoint was refused (``resumed_step`` and ``resume_note`` keep them).
    """

    task_id: str = ""
    report: Callable[[float], None] | None = None
    artifact_dir: _Folder = _ARTIFACT_DIR
    inputs: Mapping[str, Path] = field(default_factory=dict)
    checkpoint_every_s: float = 0.0
    checkpoint_dir: _Folder = _Folder()
    on_checkpoint: Callable[[int, Path], None] | None = None
    on_resume: Callable[[int, str], None] | None = None
    resumed_step: int = field(default=0, init=False)
    """The step the run resumed from (0: it started from the beginning)."""
    resume_note: str = field(default="", init=False)
    """Why a given checkpoint was not resumed from ("" when it was, or none was given)."""
    _stop_requested: bool = field(default=False, init=False, repr=False)
    _last_checkpoint: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._last_checkpoint = time.monotonic()  # the first interval counts from here

    def progress(self, fraction: float) -> None:
        """Report that the task is ``fraction`` (0 to 1) done."""
        if self.report is not None:
            self.report(min(1.0, max(0.0, float(fraction))))

    @property
    def wants_artifacts(self) -> bool:
        """Whether files written through :meth:`artifact` are collected."""
        return _ARTIFACT_DIR.given(self) is not None  # asking is not looking in it

    def folder_written(self) -> Path | None:
        """The artifact folder if the run may have written to it (it read
        :attr:`artifact_dir` or called :meth:`artifact`), else None."""
        return self.artifact_dir if _ARTIFACT_DIR.was_read(self) else None

    def artifact(self, name: str) -> Path:
        """Where to write the artifact ``name`` (a plain file name); SimulationError-free:
        raises ValueError for a bad name and RuntimeError when nothing collects files."""
        if not isinstance(name, str) or not ARTIFACT_NAME_RE.match(name):
            raise ValueError(f"artifact name {name!r} must match {ARTIFACT_NAME_RE.pattern}")
        if self.artifact_dir is None:
            raise RuntimeError("this run collects no artifacts (context.artifact_dir is None)")
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        return self.artifact_dir / name

    def request_checkpoint_stop(self) -> None:
        """Ask the run to save a checkpoint at its next save point and stop there
        (:meth:`save_checkpoint` raises :class:`Preempted`). Only sets a flag: safe in a
        signal handler."""
        self._stop_requested = True

    @property
    def wants_checkpoints(self) -> bool:
        """Whether :meth:`checkpoint_due` can ever be true: a checkpoint folder, and an
        interval or a stop request."""
        return self.checkpoint_dir is not None and (self.checkpoint_every_s > 0.0
                                                    or self._stop_requested)

    def checkpoint_due(self) -> bool:
        """Whether to save a checkpoint now: a stop was requested, or ``checkpoint_every_s``
        have passed since the last one (or since the context was made). Cheap enough to ask
        at every save point."""
        if self.checkpoint_dir is None:
            return False
        return self._stop_requested or 0.0 < self.checkpoint_every_s <= (
            time.monotonic() - self._last_checkpoint)

    def save_checkpoint(self, step: int, state: Mapping[str, Any],
                        compat: Mapping[str, str] | None = None) -> Path:
        """Write ``state`` (name -> numpy array or JSON value: everything the run needs to
        go on from the end of ``step`` exactly) to ``checkpoint_dir/checkpoint-STEP.npz``
        and remove the folder's older checkpoints; ``compat`` says what else the numbers
        depend on (backend, versions, ...), see :meth:`restore_checkpoint`. Calls
        ``on_checkpoint``, then raises :class:`Preempted` if a stop was requested; returns
        the file's path otherwise."""
        if self.checkpoint_dir is None:
            raise RuntimeError("this run takes no checkpoints (context.checkpoint_dir is None)")
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"checkpoint-{step}.npz"
        write_state(path, step, state, compat or {})
        for older in self.checkpoint_dir.glob("checkpoint-*.npz"):
            if older != path:
                older.unlink(missing_ok=True)
        self._last_checkpoint = time.monotonic()
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, path)
        if self._stop_requested:
            raise Preempted(step, path)
        return path

    def restore_checkpoint(self, compat: Mapping[str, str] | None = None,
                           check: Callable[[int, dict[str, Any]], None] | None = None
                           ) -> tuple[int, dict[str, Any]] | None:
        """The (step, state) of the checkpoint in ``inputs["checkpoint"]``, to go on from;
        None when there is none, or when it is refused and the run starts from step 0: it
        cannot be read, it was made under another ``compat`` (backend, SIMD variant,
        versions, ...: the numbers would differ), or ``check(step, state)`` raised (a
        CheckpointError, or a KeyError, TypeError or ValueError: the state does not fit
        this run). Calls ``on_resume(step, "")``, or ``on_resume(0, note)`` with why."""
        path = self.inputs.get(CHECKPOINT_INPUT)
        if path is None:
            return None
        wanted = dict(compat or {})
        try:
            step, state, made = read_state(path)
        except CheckpointError as e:
            return self._resumed(0, f"checkpoint unreadable: {e}")
        if made != wanted:
            differ = sorted(k for k in {*made, *wanted} if made.get(k) != wanted.get(k))
            return self._resumed(0, f"checkpoint of step {step} made with "
                                    f"{_settings(made, differ)}; this worker runs "
                                    f"{_settings(wanted, differ)}")
        if check is not None:
            try:
                check(step, state)
            except (KeyError, TypeError, ValueError) as e:
                reason = f"no {e}" if isinstance(e, KeyError) else str(e)
                return self._resumed(0, f"checkpoint of step {step} does not fit: {reason}")
        return self._resumed(step, "", state)

    def _resumed(self, step: int, refusal: str, state: dict[str, Any] | None = None
                 ) -> tuple[int, dict[str, Any]] | None:
        """Record and report the step resumed from (0, with the refusal, for none)."""
        self.resumed_step = step
        self.resume_note = f"{refusal}: started from step 0" if refusal else ""
        if self.on_resume is not None:
            self.on_resume(step, self.resume_note)
        return None if state is None else (step, state)


def _settings(compat: Mapping[str, str], names: Sequence[str]) -> str:
    """``names`` of ``compat`` in words: "backend cython, simd_variant avx2"."""
    return ", ".join(f"{name} {compat[name]}" if name in compat else f"no {name}"
                     for name in names)


@dataclass(frozen=True)
class Output:
    """What a run function returns: ``observables`` (name -> series of floats; ``t`` by
    convention the sample times), ``summary`` (name -> float) and ``metadata`` (name ->
    JSON value: whatever says how the numbers were computed)."""

    observables: Mapping[str, Sequence[float]] = field(default_factory=dict)
    summary: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
