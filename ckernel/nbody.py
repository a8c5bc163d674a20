"""Gravitational N-body: direct summation with Plummer softening, kick-drift-kick leapfrog.

:func:`plummer_sphere` draws the initial conditions; :func:`run` is the driver behind
``ckernel.simulate("nbody", ...)``. Equations and parameters are in ``docs/kernels.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ckernel._backend import Kernels
from ckernel._run import Files, Progress, Run, Samples, State, mean_and_sem, require_finite

OBSERVABLES = ("kinetic_energy", "potential_energy", "total_energy", "relative_energy_error",
               "angular_momentum", "virial_ratio")
PLUMMER_MAX_RADIUS = 10.0
"""Radii beyond this many scale radii are redrawn (the Plummer model has infinite extent)."""


def _isotropic(rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
    z = rng.uniform(-1.0, 1.0, len(lengths))
    phi = rng.uniform(0.0, 2.0 * math.pi, len(lengths))
    s = np.sqrt(1.0 - z * z)
    return lengths[:, None] * np.column_stack((s * np.cos(phi), s * np.sin(phi), z))


def plummer_sphere(n: int, rng: np.random.Generator,
                   G: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-mass Plummer sphere in N-body units (M = 1, E = -1/4 for G = 1), at rest at the
    origin (Aarseth, Henon and Wielen 1974). Returns masses, positions, velocities."""
    radius = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        r = 1.0 / np.sqrt(rng.uniform(0.0, 1.0, len(todo)) ** (-2.0 / 3.0) - 1.0)
        ok = r <= PLUMMER_MAX_RADIUS
        radius[todo[ok]] = r[ok]
        todo = todo[~ok]
    # Speed as a fraction q of the local escape speed: von Neumann rejection on
    # g(q) = q^2 (1 - q^2)^(7/2), whose maximum is below 0.1.
    q = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        x4, x5 = rng.uniform(0.0, 1.0, len(todo)), rng.uniform(0.0, 0.1, len(todo))
        ok = x5 < x4 * x4 * (1.0 - x4 * x4) ** 3.5
        q[todo[ok]] = x4[ok]
        todo = todo[~ok]
    speed = q * math.sqrt(2.0) * (1.0 + radius * radius) ** -0.25
    positions = _isotropic(rng, radius) * (3.0 * math.pi / 16.0)
    velocities = _isotropic(rng, speed) * math.sqrt(16.0 / (3.0 * math.pi) * G)
    positions -= positions.mean(axis=0)
    velocities -= velocities.mean(axis=0)
    return np.full(n, 1.0 / n), positions, velocities


def run(params: dict[str, Any], seed: int, progress: Callable[[float], None] | None,
        kernels: Kernels, files: Files | None = None) -> Run:
    """Integrate validated ``params`` with kick-drift-kick leapfrog (checkpoints may be
    taken after any step)."""
    p = params
    files = files or Files()  # a direct call writes nothing
    G, eps, dt, steps = p["G"], p["softening"], p["dt"], p["steps"]
    if (start := files.start) is not None:
        x = start.positions.copy()
        n = len(x)
        # Without masses, equal ones of total mass 1 (as the Plummer sphere's); without
        # velocities, at rest.
        m = start.masses.copy() if start.masses is not None else np.full(n, 1.0 / n)
        v = start.velocities.copy() if start.velocities is not None else np.zeros((n, 3))
    elif p["bodies"] is None:
        m, x, v = plummer_sphere(p["n_bodies"], np.random.default_rng(seed), G)
    else:
        m = np.array([b["mass"] for b in p["bodies"]])
        x = np.array([b["position"] for b in p["bodies"]])
        v = np.array([b["velocity"] for b in p["bodies"]])
    n = len(m)
    files.masses = m
    origin = x.copy()
    a = np.empty_like(x)
    samples = Samples("nbody", (*OBSERVABLES, "lx", "ly", "lz"))
    state = State({"masses": m, "positions": x, "velocities": v, "accelerations": a,
                   "origin": origin}, samples, numbers={"energy_scale": float})
    resumed, numbers = files.resume(state, steps)
    if resumed:
        scale = numbers["energy_scale"]
    else:
        u = kernels.gravity(x, m, G, eps, a)
        scale = 0.0

    def sample(step: int) -> None:
        nonlocal scale
        kinetic = 0.5 * float(m @ np.sum(v * v, axis=1))
        total = kinetic + u
        if step == 0:
            # Relative to |E0|; a (rare) zero-energy start is measured against K0 + |U0|.
            scale = abs(total) if total != 0.0 else kinetic + abs(u)
        e0 = total if step == 0 else samples.series["total_energy"][0]
        lx, ly, lz = (m[:, None] * np.cross(x, v)).sum(axis=0)
        samples.add(step, step * dt, kinetic_energy=kinetic, potential_energy=u,
                    total_energy=total, relative_energy_error=(total - e0) / scale,
                    angular_momentum=math.sqrt(lx * lx + ly * ly + lz * lz),
                    virial_ratio=2.0 * kinetic / abs(u) if u != 0.0 else 0.0,
                    lx=lx, ly=ly, lz=lz)

    if not resumed:
        sample(0)
        if files.due(0):
            files.frame(0, 0.0, x, v)
    tick = Progress(progress, steps)
    loop_started = time.perf_counter()  # the step loop alone, as metadata loop_s
    for step in range(resumed + 1, steps + 1):
        kernels.kick(v, a, 0.5 * dt)
        kernels.drift(x, v, dt)
        # The potential energy only on sampled steps: nothing else reads it.
        sampled = step % p["sample_every"] == 0
        u = kernels.gravity(x, m, G, eps, a, sampled)
        kernels.kick(v, a, 0.5 * dt)
        if sampled:
            sample(step)
        if files.due(step):
            files.frame(step, step * dt, x, v)
        tick(step)
        if step < steps and files.checkpoint_due():
            files.checkpoint(step, state, energy_scale=scale)
    loop_s = time.perf_counter() - loop_started
    require_finite("nbody", "positions", x, steps, steps * dt)
    require_finite("nbody", "velocities", v, steps, steps * dt)
    files.final(steps, steps * dt, x, v)

    error = samples.array("relative_energy_error")
    angular = np.column_stack([samples.array(name) for name in ("lx", "ly", "lz")])
    summary = {
        "n_bodies": float(n),
        "energy_initial": samples.series["total_energy"][0],
        "energy_final": samples.series["total_energy"][-1],
        "max_relative_energy_error": float(np.abs(error).max()),
        "final_relative_energy_error": float(error[-1]),
        "angular_momentum_initial": samples.series["angular_momentum"][0],
        "max_angular_momentum_change": float(np.linalg.norm(angular - angular[0], axis=1).max()),
        "return_distance": float(np.linalg.norm(x - origin, axis=1).max()),
    }
    mean_and_sem(summary, samples, "virial_ratio", from_step=p["equilibration_steps"])
    observables = {name: samples.series[name] for name in ("t", *OBSERVABLES)}
    return Run(observables, summary, {"masses": m, "positions": x, "velocities": v},
               atom_steps=n * (steps - resumed), metadata={"loop_s": loop_s})
