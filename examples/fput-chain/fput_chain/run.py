"""The run function of the kind ``chain``: initial condition, integration in chunks,
observables and the frequency measurement.

Equations are in ``fput_chain/reference.py``; the step loop is the compiled
``fput_chain._chain.verlet``. Given (params, seed), every number is bit-identical on re-run:
the loop is serial and its chunks are fixed by the params alone.

Frequencies (alpha = beta = 0 only). Velocity Verlet's positions obey
u(n+1) = 2 u(n) - u(n-1) + dt^2 F(u(n)) / m, so every normal-mode coordinate of a harmonic
chain obeys Q(n+1) + Q(n-1) = (2 - omega^2 dt^2) Q(n) exactly. Over all steps,

    c = sum_n Q(n) (Q(n+1) + Q(n-1)) / (2 sum_n Q(n)^2) = 1 - omega^2 dt^2 / 2,

so omega = sqrt(2 (1 - c)) / dt is the physical frequency, without the integrator's
O(dt^2) phase error (that error is in cos(omega~ dt) = c, omega~ the numerical frequency).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fput_chain import _chain, reference
from simkind import Context, Output, SimulationError

CHUNK_STEPS = 1024
"""Most steps per call of the compiled loop: bounds the buffer of mode coordinates
(CHUNK_STEPS x 2 modes_recorded doubles) and how late a blow-up is noticed."""


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

    def omegas(self, dt: float) -> np.ndarray:
        """omega per mode, from the cos and sin coordinates together (rows 0..M-1 and
        M..2M-1 of the basis): both obey the same recurrence."""
        m = len(self.squares) // 2
        squares = self.squares[:m] + self.squares[m:]
        crossed = self.crossed[:m] + self.crossed[m:]
        cosine = crossed / (2.0 * squares)
        return np.sqrt(2.0 * (1.0 - cosine)) / dt


def run(params: dict[str, Any], seed: int, context: Context) -> Output:
    """Integrate validated ``params`` with velocity Verlet; see the module docstring."""
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
    f = np.empty(n)
    _chain.forces(u, k, alpha, beta, f)
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

    sample(0)
    step = 0
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
        metadata={"backend": "cython", "n_particles": n, "steps": steps,
                  "samples": len(series["t"]), "harmonic": harmonic,
                  "frequencies_measured": [int(q) for q in measured] if measuring else [],
                  "numpy_version": np.__version__},
    )
