"""Langevin (BAOAB) and overdamped (Euler-Maruyama) Brownian particles in 3-D, free or in a
harmonic trap. :func:`run` is the driver behind ``ckernel.simulate("brownian", ...)``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ckernel._backend import Kernels
from ckernel._run import Files, Progress, Run, Samples, State, mean_and_sem, require_finite, slope

FIT_START_GAMMA_TIMES = 10.0
"""The diffusion fit uses samples after this many friction times 1/gamma."""
CHECKPOINT_CHECK_STEPS = 64
"""Whether a checkpoint is due is asked every this many steps: a step of a small system
costs about as much as asking the clock."""


def run(params: dict[str, Any], seed: int, progress: Callable[[float], None] | None,
        kernels: Kernels, files: Files | None = None) -> Run:
    """Integrate validated ``params``; free particles start at the origin, trapped ones in
    the equilibrium distribution, velocities from Maxwell-Boltzmann (or positions and
    velocities from an init configuration). Checkpoints may be taken every
    CHECKPOINT_CHECK_STEPS steps."""
    p = params
    files = files or Files()  # a direct call writes nothing
    rng = np.random.default_rng(seed)
    n, kT, m, gamma, k = p["n_particles"], p["temperature"], p["mass"], p["gamma"], p["trap_k"]
    dt, steps = p["dt"], p["steps"]
    overdamped = p["overdamped"]
    given_v = None
    if (configuration := files.start) is not None:
        x, given_v = configuration.positions.copy(), configuration.velocities
        n = len(x)
    else:
        x = (rng.standard_normal((n, 3)) * math.sqrt(kT / k) if k > 0.0 else np.zeros((n, 3)))
    start = x.copy()
    if overdamped:
        v = np.zeros((0, 3))
    elif given_v is not None:
        v = given_v.copy()
    else:
        v = rng.standard_normal((n, 3)) * math.sqrt(kT / m)
    # The frames' velocities: none without inertia.
    frame_v = None if overdamped else v
    mobility = 1.0 / (m * gamma)
    c1 = math.exp(-gamma * dt)
    c2 = math.sqrt((1.0 - c1 * c1) * kT / m)
    sigma = math.sqrt(2.0 * kT * mobility * dt)
    names = ("msd", "x2") if overdamped else ("msd", "x2", "temperature")
    samples = Samples("brownian", names)

    def sample(step: int) -> None:
        d = x - start
        values = {"msd": float(np.sum(d * d)) / n, "x2": float(np.sum(x * x)) / (3 * n)}
        if not overdamped:
            values["temperature"] = m * float(np.sum(v * v)) / (3 * n)
        samples.add(step, step * dt, **values)

    state = State({"positions": x, "velocities": v, "start": start}, samples, rng)
    resumed, _ = files.resume(state, steps)
    if not resumed:
        sample(0)
        if files.due(0):
            files.frame(0, 0.0, x, frame_v)
    tick = Progress(progress, steps)
    # One noise buffer refilled in place: the same numbers as a fresh array per step, without
    # allocating (and page-faulting) 24 bytes per particle every step.
    noise = np.empty((n, 3))
    loop_started = time.perf_counter()  # the step loop alone, as metadata loop_s
    for step in range(resumed + 1, steps + 1):
        rng.standard_normal(out=noise)
        if overdamped:
            kernels.euler_maruyama_harmonic(x, k * mobility * dt, sigma, noise)
        else:
            kernels.baoab_harmonic(x, v, k / m, dt, c1, c2, noise)
        if step % p["sample_every"] == 0:
            sample(step)
        if files.due(step):
            files.frame(step, step * dt, x, frame_v)
        tick(step)
        if step % CHECKPOINT_CHECK_STEPS == 0 and step < steps and files.checkpoint_due():
            files.checkpoint(step, state)
    loop_s = time.perf_counter() - loop_started
    require_finite("brownian", "positions", x, steps, steps * dt)
    files.final(steps, steps * dt, x, frame_v)

    summary: dict[str, float] = {"n_particles": float(n)}
    settled = p["equilibration_steps"]
    if k == 0.0:
        # The long-time slope of MSD = 6 D t. The inertial (ballistic) start bends the curve
        # for t ~ 1/gamma, so the fit starts at 10/gamma (at most half-way through the run),
        # or at the end of the equilibration if that is later.
        t, msd = samples.array("t", settled), samples.array("msd", settled)
        late = t >= min(FIT_START_GAMMA_TIMES / gamma, 0.5 * t[-1])
        summary["diffusion_coefficient"] = slope(t[late], msd[late]) / 6.0
        summary["diffusion_expected"] = kT * mobility
    else:
        mean_and_sem(summary, samples, "x2", from_step=settled)
        summary["x2_expected"] = kT / k
    if not overdamped:
        mean_and_sem(summary, samples, "temperature", from_step=settled)
    return Run(dict(samples.series), summary, {"positions": x, "velocities": v},
               atom_steps=n * (steps - resumed), metadata={"loop_s": loop_s})
