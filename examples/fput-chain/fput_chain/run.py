"""The run function of the kind ``chain``: initial condition, integration in chunks,
observables and the frequency measurement.

Equations are in ``fput_chain/reference.py``; the step loop is the compiled
``fput_chain._chain.verlet``. Given (params, seed), every number is bit-identical on re-run:
the loop is serial and its chunks are fixed by the params alone.

Checkpoints (``docs/writing-a-kind.md``, "Checkpoints"): the run can restart exactly at
every chunk boundary, so that is where it saves one when the context says one is due, and a
run resumed from one ends bit for bit where a straight run ends: the chunks that follow are
the same (their lengths depend on the step alone), and so are the sums over them.

Frequencies (alpha = beta = 0 only). Velocity Verlet's positions obey
u(n+1) = 2 u(n) - u(n-1) + dt^2 F(u(n)) / m, so every normal-mode coordinate of a harmonic
chain obeys Q(n+1) + Q(n-1) = (2 - omega^2 dt^2) Q(n) exactly. Over all steps,

    c = sum_n Q(n) (Q(n+1) + Q(n-1)) / (2 sum_n Q(n)^2) = 1 - omega^2 dt^2 / 2,

so omega = sqrt(2 (1 - c)) / dt is the physical frequency, without the integrator's
O(dt^2) phase error (that error is in cos(omega~ dt) = c, omega~ the numerical frequency).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import numpy as np

from fput_chain import _chain, reference
from simkind import CheckpointError, Context, Output, SimulationError

CHUNK_STEPS = 1024
"""Most steps per call of the compiled loop: bounds the buffer of mode coordinates
(CHUNK_STEPS x 2 modes_recorded doubles) and how late a blow-up is noticed."""

BACKEND = "cython"
"""The integrator that computes the numbers (there is no other)."""

PACKAGE = "particle-sim-fput-chain"
"""The distribution providing the kind: the kind has no version of its own, so its
version is this package's."""


def checkpoint_compat(params: dict[str, Any], seed: int) -> dict[str, str]:
    """What the numbers depend on besides a checkpoint's state: a checkpoint made under
    other values (another version of this code or of numpy, another task) is not resumed
    from, as the run could not end bit for bit where a straight run ends. The params go in
    by their digest; the seed too, though ``init: mode`` draws nothing from it (a
    checkpoint is of one task, and a file may be mixed up)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return {"kind": "chain", "kind_version": metadata.version(PACKAGE), "backend": BACKEND,
            "numpy_version": np.__version__, "seed": str(seed), "params": digest[:16]}


def check_array(state: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> None:
    """CheckpointError unless ``state[name]`` is a float64 array of ``shape``, all finite:
    the compiled loop trusts what it is handed, so a damaged or forged checkpoint must be
    refused before it gets there."""
    found = state.get(name)
    if not isinstance(found, np.ndarray):
        raise CheckpointError(f"{name} is missing" if found is None
                              else f"{name} is a {type(found).__name__}, not an array")
    if found.dtype != np.float64 or found.shape != shape:
        raise CheckpointError(f"{name} is {found.dtype} {found.shape}, this run has "
                              f"float64 {shape}")
    if not np.isfinite(found).all():
        raise CheckpointError(f"{name} holds numbers that are not finite")


def initial_state(params: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Displacements and velocities at t = 0.

    ``random``: u_j ~ amplitude N(0, 1) and v_j ~ amplitude sqrt(k/m) N(0, 1) from
    ``numpy.random.default_rng(seed)``, then the means removed (the ring's centre of mass
    at rest at its origin, so mode 0 holds no energy). ``mode``: the standing wave
    u_j = amplitude cos(2 pi q j / N) at rest, q = ``mode`` (the seed is not used).
    """
    n, amplitude = params["n_particles"], params["amplitude"]
    if params["init"] == "mode":
        u = amplitude * np.cos(2.0 * np.pi * params["mode"] * np.arange(n) / n)
        return u, np.zeros(n)
    rng = np.random.default_rng(seed)
    u = amplitude * rng.standard_normal(n)
    v = amplitude * math.sqrt(params["k"] / params["mass"]) * rng.standard_normal(n)
    return u - u.mean(), v - v.mean()


class FrequencyMeter:
    """Accumulates c = sum Q(n) (Q(n+1) + Q(n-1)) / (2 sum Q(n)^2) per mode coordinate over
    every step, chunk by chunk (the module docstring says why it gives omega exactly)."""

    def __init__(self, first: np.ndarray) -> None:
        self.tail = first[None, :].copy()
        """The last two coordinates seen (one at the start): centres of the next chunk."""
        self.squares = np.zeros_like(first)
        self.crossed = np.zeros_like(first)

    def add(self, chunk: np.ndarray) -> None:
        """Take the coordinates after each step of one chunk (rows in step order)."""
        series = np.concatenate([self.tail, chunk])
        centre = series[1:-1]
        self.squares += np.sum(centre * centre, axis=0)
        self.crossed += np.sum(centre * (series[:-2] + series[2:]), axis=0)
        self.tail = series[-2:].copy()

    def saved(self) -> dict[str, np.ndarray]:
        """The accumulators, as checkpoint entries."""
        return {"meter_tail": self.tail, "meter_squares": self.squares,
                "meter_crossed": self.crossed}

    def check(self, state: Mapping[str, Any]) -> None:
        """CheckpointError unless ``state`` holds accumulators of this meter's coordinates,
        as :meth:`saved` gives them after a chunk (two coordinates in the tail)."""
        rows = len(self.squares)
        check_array(state, "meter_tail", (2, rows))
        check_array(state, "meter_squares", (rows,))
        check_array(state, "meter_crossed", (rows,))

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take the accumulators of a checkpoint that passed :meth:`check`."""
        self.tail = state["meter_tail"]
        self.squares = state["meter_squares"]
        self.crossed = state["meter_crossed"]

    def omegas(self, dt: float) -> np.ndarray:
        """omega per mode, from the cos and sin coordinates together (rows 0..M-1 and
        M..2M-1 of the basis): both obey the same recurrence."""
        m = len(self.squares) // 2
        squares = self.squares[:m] + self.squares[m:]
        crossed = self.crossed[:m] + self.crossed[m:]
        cosine = crossed / (2.0 * squares)
        return np.sqrt(2.0 * (1.0 - cosine)) / dt


def run(params: dict[str, Any], seed: int, context: Context) -> Output:
    """Integrate validated ``params`` with velocity Verlet; see the module docstring. Goes
    on from the checkpoint ``context`` was given if it fits this run (else from step 0,
    ``context.resume_note`` saying why), and saves one at a chunk boundary when
    ``context.checkpoint_due()``; ``simkind.Preempted`` from a save passes through."""
    p = params
    n, k, alpha, beta, mass = p["n_particles"], p["k"], p["alpha"], p["beta"], p["mass"]
    dt, steps, every = p["dt"], p["steps"], p["sample_every"]
    modes = np.arange(1, p["modes_recorded"] + 1)
    harmonic = alpha == 0.0 and beta == 0.0
    # Modes a harmonic chain never excites hold only rounding noise, whose "frequency"
    # means nothing: with init = mode only that mode is measured.
    measured = modes if p["init"] == "random" else modes[modes == p["mode"]]
    measuring = harmonic and len(measured) > 0 and steps >= 2  # c needs Q(n-1), Q(n), Q(n+1)

    u, v = initial_state(p, seed)
    basis = reference.mode_basis(n, measured) if measuring else np.empty((0, n))
    coordinates = np.empty((CHUNK_STEPS, len(basis)))
    meter: FrequencyMeter | None = None
    if measuring:
        first = np.empty(len(basis))
        _chain.project(basis, u, first)
        meter = FrequencyMeter(first)

    series: dict[str, list[float]] = {"t": [], "kinetic_energy": [], "potential_energy": [],
                                      "total_energy": []}
    series.update({f"mode_energy_{q}": [] for q in modes})

    def sample(step: int) -> None:
        kinetic = reference.kinetic_energy(v, mass)
        potential = reference.potential_energy(u, k, alpha, beta)
        series["t"].append(step * dt)
        series["kinetic_energy"].append(kinetic)
        series["potential_energy"].append(potential)
        series["total_energy"].append(kinetic + potential)
        for q, energy in zip(modes, reference.mode_energies(u, v, k, mass, modes), strict=True):
            series[f"mode_energy_{q}"].append(float(energy))

    def saved() -> dict[str, Any]:
        """The state at a chunk boundary: everything the rest of the run reads. The series
        all have one length: they travel as the rows of one array, in their order here."""
        state = {"u": u, "v": v, "samples": np.array(list(series.values()))}
        if meter is not None:
            state.update(meter.saved())
        return state

    def fits(step: int, state: dict[str, Any]) -> None:
        """CheckpointError unless ``state`` is what :func:`saved` gives at ``step`` of this
        run. Chunks end at every multiple of ``every`` and every CHUNK_STEPS steps after
        one (the loop's ``chunk``), and the last chunk's end is not saved."""
        if not (0 < step < steps and step % every % CHUNK_STEPS == 0):
            raise CheckpointError(f"step {step} is not a chunk boundary before this run's "
                                  f"last step, {steps}")
        check_array(state, "u", (n,))
        check_array(state, "v", (n,))
        check_array(state, "samples", (len(series), step // every + 1))
        if meter is not None:
            meter.check(state)

    compat = checkpoint_compat(p, seed)
    step = 0
    restored = context.restore_checkpoint(compat, check=fits)
    if restored is None:
        sample(0)
    else:
        step, state = restored
        u[...], v[...] = state["u"], state["v"]
        for name, values in zip(series, state["samples"], strict=True):
            series[name] = values.tolist()
        if meter is not None:
            meter.restore(state)
    # The forces are not state: the loop's last evaluation computed them from u with this
    # same function, so they come back bit for bit from the saved u.
    f = np.empty(n)
    _chain.forces(u, k, alpha, beta, f)
    while step < steps:
        chunk = min(CHUNK_STEPS, every - step % every, steps - step)
        out = coordinates[:chunk]
        _chain.verlet(u, v, f, dt, k, alpha, beta, mass, basis, out)
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            raise SimulationError(
                f"chain: non-finite positions or velocities between steps {step} and "
                f"{step + chunk} (t = {step * dt:g} .. {(step + chunk) * dt:g}): the chain "
                "blew up; lower dt or amplitude (a cubic alpha term is unbounded below)")
        if meter is not None:
            meter.add(out)
        step += chunk
        if step % every == 0:
            sample(step)
        context.progress(step / steps)
        if step < steps and context.checkpoint_due():
            context.save_checkpoint(step, saved(), compat)

    total = np.array(series["total_energy"])
    if total[0] == 0.0:
        raise SimulationError("chain: the initial total energy is exactly 0, so no relative "
                              "energy error is defined")
    summary = {
        "energy_mean": float(total.mean()),
        "energy_drift": float((total[-1] - total[0]) / abs(total[0])),
        "energy_error_max": float(np.max(np.abs(total - total[0])) / abs(total[0])),
    }
    if meter is not None:
        omegas = meter.omegas(dt)
        exact = reference.normal_mode_frequencies(n, k, mass, measured)
        summary.update({f"omega_{q}": float(w) for q, w in zip(measured, omegas, strict=True)})
        summary["omega_max_rel_error"] = float(np.max(np.abs(omegas - exact) / exact))
    return Output(
        observables=series,
        summary=summary,
        metadata={"backend": BACKEND, "n_particles": n, "steps": steps,
                  "samples": len(series["t"]), "harmonic": harmonic,
                  "frequencies_measured": [int(q) for q in measured] if measuring else [],
                  "numpy_version": np.__version__},
    )
