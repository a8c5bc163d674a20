"""The built-in kinds' run functions (the ``run`` targets of the kinds in
:mod:`ckernel.params`), and :func:`run` / :func:`simulate` for calling them directly.

Each run function takes the validated params, the seed, the task's
:class:`simkind.Context` and the backend ("auto": the compiled kernels when built), and
returns a :class:`simkind.Output`. The worker reaches them only through the kind registry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import simkind
from ckernel import _backend, brownian, lj, nbody
from ckernel._run import PROGRESS_CALLS, Files, Run
from ckernel.errors import ParamError, SimulationError
from ckernel.params import BUILT_IN, validate
from simkind.checkpoint import CHECKPOINT_INPUT
from simkind.extxyz import INIT_INPUT

_DRIVERS = {"lj": lj.run, "nbody": nbody.run, "brownian": brownian.run}


SLEEP_ARTIFACT = "data.bin"
"""The file the sleep kind writes with ``artifact_bytes``."""

SLEEP_BLOCK_BYTES = 1 << 20
"""The sleep kind's file is made and written in blocks of this size."""


def sleep_artifact_bytes(seed: int, size: int) -> Iterator[bytes]:
    """The bytes of the sleep kind's ``data.bin``, in blocks: pseudo-random from the seed
    (incompressible, like a trajectory; the same for the same seed and size)."""
    rng = np.random.default_rng(seed)
    for start in range(0, size, SLEEP_BLOCK_BYTES):
        yield rng.bytes(min(SLEEP_BLOCK_BYTES, size - start))


def _sleep(params: dict[str, Any], seed: int, progress: Callable[[float], None] | None,
           context: simkind.Context | None) -> Run:
    """The diagnostic kind: wait ``seconds`` in slices (reporting progress), maybe fail,
    maybe write ``artifact_bytes`` of ``data.bin``."""
    seconds = params["seconds"]
    slices = PROGRESS_CALLS if seconds > 0.0 else 1
    started = time.monotonic()
    for i in range(1, slices + 1):
        # time.sleep(0) still yields the CPU (over a millisecond on a busy machine).
        if (delay := started + seconds * i / slices - time.monotonic()) > 0.0:
            time.sleep(delay)
        if progress is not None:
            progress(i / slices)
    if params["fail"]:
        raise SimulationError("sleep: failed on purpose (fail: true)")
    if params["artifact_bytes"] and context is not None and context.wants_artifacts:
        with context.artifact(SLEEP_ARTIFACT).open("wb") as f:
            for block in sleep_artifact_bytes(seed, params["artifact_bytes"]):
                f.write(block)
    return Run({"t": [0.0, seconds]}, {"seconds": seconds}, {}, atom_steps=0)


def run(kind: str, params: dict[str, Any], seed: int,
        progress: Callable[[float], None] | None = None,
        backend: str = "auto") -> tuple[Run, str, dict[str, Any]]:
    """Validate and run one built-in simulation; return the raw run record (with the final
    state arrays), the backend used and the validated params."""
    params = validate(kind, params)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamError(f"seed = {seed!r}: must be a non-negative int")
    record, name = _run_validated(kind, params, seed, progress, backend)
    return record, name, params


def checkpoint_compat(kind: str, backend: str, params: dict[str, Any],
                      seed: int) -> dict[str, str]:
    """What a built-in kind's numbers depend on besides the state a checkpoint holds: a
    checkpoint made under other values is not resumed from (the task starts again from
    step 0), as it could not end bit for bit where an uninterrupted run ends. The params go
    in by their digest."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return {"kind": kind, "backend": backend,
            "simd_variant": _backend.simd_variant(kind, backend),
            "numpy_version": np.__version__, "seed": str(seed), "params": digest[:16]}


def _run_validated(kind: str, params: dict[str, Any], seed: int,
                   progress: Callable[[float], None] | None, backend: str,
                   context: simkind.Context | None = None) -> tuple[Run, str]:
    name, kernels = _backend.select(backend)
    if kind == "sleep":
        return _sleep(params, seed, progress, context), "python"
    # The compat digests the params: only for a run that saves or resumes checkpoints.
    compat = None
    if context is not None and (context.checkpoint_dir is not None
                                or CHECKPOINT_INPUT in context.inputs):
        compat = checkpoint_compat(kind, name, params, seed)
    files = Files.of_task(BUILT_IN[kind], params, context, compat)
    try:
        return _DRIVERS[kind](params, seed, progress, kernels, files), name
    finally:
        files.close()


def _output(kind: str, params: dict[str, Any], seed: int, context: simkind.Context,
            backend: str = "auto") -> simkind.Output:
    # simkind.execute has validated the params and the seed: not again, per task.
    started = time.perf_counter()
    record, backend_used = _run_validated(kind, params, seed, context.progress, backend,
                                          context)
    elapsed = time.perf_counter() - started
    return simkind.Output(record.observables, record.summary, {
        "numpy_version": np.__version__,
        "backend": backend_used,
        "threads": _backend.THREADS,
        "simd_variant": _backend.simd_variant(kind, backend_used),
        "atom_steps": record.atom_steps,
        "atom_steps_per_s": record.atom_steps / elapsed if elapsed > 0.0 else 0.0,
        **record.metadata,
    })


lj_kind = functools.partial(_output, "lj")
nbody_kind = functools.partial(_output, "nbody")
brownian_kind = functools.partial(_output, "brownian")
sleep_kind = functools.partial(_output, "sleep")


def simulate(kind: str, params: dict[str, Any], seed: int,
             progress: Callable[[float], None] | None = None,
             backend: str = "auto", artifact_dir: Path | str | None = None,
             inputs: Mapping[str, Path | str] | None = None,
             checkpoint_dir: Path | str | None = None, checkpoint_every_s: float = 0.0,
             resume_from: Path | str | None = None) -> dict[str, Any]:
    """Run one built-in simulation through the kind registry and return its
    JSON-serialisable result, as a worker does (see :func:`simkind.execute`); ``backend``
    picks the kernels. ``artifact_dir``: the folder to write the task's files to
    (``trajectory.xyz``, ``final.xyz``; None: none are written), listed in the result's
    ``artifacts``; ``inputs``: the files it starts from (``{"init": path}``: an extended XYZ
    configuration).

    Checkpoints (lj, nbody, brownian): with ``checkpoint_dir``, one is saved there every
    ``checkpoint_every_s`` seconds (``checkpoint-STEP.npz``, the older one removed);
    ``resume_from`` names a checkpoint of this task (same kind, params, seed, backend and
    SIMD variant) to go on from, giving the result of an uninterrupted run bit for bit
    (metadata ``resumed_from_step``). A checkpoint that does not fit is not resumed from:
    the run starts from step 0 and the metadata's ``resume_note`` says why.

    Raises ParamError for bad input, SimulationError when the simulation blows up."""
    if kind not in BUILT_IN:
        validate(kind, params)  # the error naming the built-in kinds
    _backend.select(backend)  # an unknown backend name is refused before anything runs
    given = dict(inputs or {})
    if unknown := sorted(set(given) - {INIT_INPUT}):
        raise ParamError(f"{kind}: unknown input {unknown[0]!r}: the only input is "
                         f"{INIT_INPUT!r} (a configuration to start from)")
    if given and BUILT_IN[kind].init is None:
        raise ParamError(f"{kind}: this kind cannot start from a configuration (it takes no "
                         f"{INIT_INPUT})")
    if isinstance(checkpoint_every_s, bool) or not isinstance(checkpoint_every_s, int | float) \
            or not (math.isfinite(checkpoint_every_s) and checkpoint_every_s >= 0.0):
        raise ParamError(f"checkpoint_every_s = {checkpoint_every_s!r}: must be a number "
                         ">= 0 (0: no periodic checkpoints)")
    if resume_from is not None:
        given[CHECKPOINT_INPUT] = resume_from
    context = simkind.Context(report=progress, artifact_dir=artifact_dir,
                              inputs={name: Path(path) for name, path in given.items()},
                              checkpoint_every_s=float(checkpoint_every_s),
                              checkpoint_dir=checkpoint_dir)
    loaded = simkind.installed().get(kind)
    return simkind.execute(loaded, params, seed, context,
                           function=functools.partial(_output, kind, backend=backend))
