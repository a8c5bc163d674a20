"""Lennard-Jones molecular dynamics in a periodic cubic box (reduced units).

Public helpers: :func:`fcc_lattice`, :func:`energy_virial`, :func:`forces`,
:func:`tail_correction`, :func:`tail_pressure`. :func:`run` is the driver behind
``ckernel.simulate("lj", ...)``; equations and parameters are in ``docs/kernels.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ckernel import _backend
from ckernel._backend import Kernels
from ckernel._run import (
    Files,
    Progress,
    Run,
    Samples,
    State,
    blow_up,
    mean_and_sem,
    require_finite,
    slope,
)
from ckernel.errors import ParamError
from ckernel.reference import FORCE_SHIFTED, SHIFTED, TRUNCATED
from simkind.checkpoint import CheckpointError

POTENTIAL_CODES = {"truncated": TRUNCATED, "shifted": SHIFTED, "force_shifted": FORCE_SHIFTED}
OBSERVABLES = ("potential_energy", "kinetic_energy", "total_energy", "temperature", "pressure")
"""Sampled every sample_every steps; energies are per particle."""


def fcc_lattice(n_cells: int, density: float) -> tuple[np.ndarray, float]:
    """Face-centred cubic lattice of ``n_cells``^3 unit cells (N = 4 n^3) at ``density``.

    Returns (positions of shape (N, 3) in [0, box), box side).
    """
    if n_cells < 1 or density <= 0.0:
        raise ParamError(f"fcc_lattice: need n_cells >= 1 and density > 0, got "
                         f"{n_cells!r}, {density!r}")
    a = (4.0 / density) ** (1.0 / 3.0)
    basis = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), axis=-1)
    positions = (cells.reshape(-1, 1, 3) + basis[None, :, :]).reshape(-1, 3) * a
    return positions, n_cells * a


def _check_tail_args(n: int, box: float, rc: float) -> None:
    if n < 0 or not box > 0.0 or not rc > 0.0:
        raise ParamError(f"tail correction: need n >= 0, box > 0 and rc > 0, got "
                         f"{n!r}, {box!r}, {rc!r}")


def tail_correction(n: int, box: float, rc: float) -> float:
    """Energy tail correction (8/3) pi N rho [ rc^-9 / 3 - rc^-3 ] of the truncated potential."""
    _check_tail_args(n, box, rc)
    rho = n / box**3
    return 8.0 / 3.0 * math.pi * n * rho * (rc**-9 / 3.0 - rc**-3)


def tail_pressure(n: int, box: float, rc: float) -> float:
    """Pressure tail correction (16/3) pi rho^2 [ (2/3) rc^-9 - rc^-3 ] (truncated potential)."""
    _check_tail_args(n, box, rc)
    rho = n / box**3
    return 16.0 / 3.0 * math.pi * rho * rho * (2.0 / 3.0 * rc**-9 - rc**-3)


def _checked_configuration(positions: Any, box: float, rc: float,
                           potential: str) -> tuple[np.ndarray, int]:
    pos = np.array(positions, dtype=np.float64, order="C")
    if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) < 2:
        raise ParamError(f"positions: must have shape (N >= 2, 3), got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ParamError("positions: must all be finite")
    if not (math.isfinite(box) and box > 0.0):
        raise ParamError(f"box = {box!r}: must be a finite number > 0")
    if not 0.0 < rc <= box / 2.0:
        raise ParamError(f"rc = {rc!r}: must be in (0, box/2 = {box / 2.0:g}]")
    if potential not in POTENTIAL_CODES:
        raise ParamError(f"potential = {potential!r}: must be one of "
                         f"{', '.join(POTENTIAL_CODES)}")
    pos -= box * np.floor(pos / box)
    return pos, POTENTIAL_CODES[potential]


def forces(positions: Any, box: float, rc: float, potential: str = "truncated",
           backend: str = "auto") -> tuple[np.ndarray, float, float]:
    """Forces (N, 3), pair energy U and virial W = sum over pairs of r_ij . f_ij."""
    pos, code = _checked_configuration(positions, box, rc, potential)
    _, kernels = _backend.select(backend)
    f = np.empty_like(pos)
    u, w = kernels.lj_forces(pos, box, kernels.lj_neighbours(pos, box, rc), rc, code, f)
    return f, u, w


def energy_virial(positions: Any, box: float, rc: float, potential: str = "truncated",
                  backend: str = "auto") -> tuple[float, float]:
    """Pair energy U and virial W = sum over pairs of r_ij . f_ij (not divided by 3)."""
    _, u, w = forces(positions, box, rc, potential, backend)
    return u, w


def run(params: dict[str, Any], seed: int, progress: Callable[[float], None] | None,
        kernels: Kernels, files: Files | None = None) -> Run:
    """Integrate validated ``params``: velocity Verlet (nve) or Langevin BAOAB (nvt).
    Checkpoints are taken at neighbour-list rebuilds (see :meth:`Files.checkpoint`)."""
    p = params
    files = files or Files()  # a direct call writes nothing
    rng = np.random.default_rng(seed)
    start = files.start
    given_v = p["velocities"]
    if start is not None:
        x, given_v = start.positions.copy(), start.velocities
        box = float(start.header.cubic_box or 0.0)  # the init check requires a cubic box
    elif p["positions"] is None:
        x, box = fcc_lattice(p["n_cells"], p["density"])
    else:
        x, box = np.array(p["positions"], dtype=np.float64), float(p["box"])
    files.box = box
    n = len(x)
    nvt = p["ensemble"] == "nvt"
    # Langevin exchanges momentum with the bath, so only NVE loses the 3 centre-of-mass dofs.
    dof = 3 * n if nvt else 3 * n - 3
    if given_v is not None:
        v = np.array(given_v, dtype=np.float64)
    else:
        v = rng.standard_normal((n, 3))
        v -= v.mean(axis=0)
        v *= math.sqrt(p["temperature"] * dof / float(np.sum(v * v)))

    dt, rc, steps = p["dt"], p["rc"], p["steps"]
    code = POTENTIAL_CODES[p["potential"]]
    rlist = rc + p["skin"]
    half_skin2 = (0.5 * p["skin"]) ** 2
    c1 = math.exp(-p["gamma"] * dt)
    c2 = math.sqrt((1.0 - c1 * c1) * p["temperature"])
    volume = box**3

    # When the box is under two list radii, a pair can switch periodic images between
    # rebuilds; rebuilding every step keeps the minimum image exact there.
    forced = box < 2.0 * rlist
    rebuild_every = 1 if forced else p["rebuild_every"]
    # A fixed interval trusts the user; a scheduled rebuild that finds an atom moved more
    # than skin/2 came too late (pairs may have been missed): count it, as LAMMPS's
    # "dangerous builds", so the result says so.
    check_late = bool(rebuild_every) and not forced
    late_rebuilds = 0

    def build(step: int) -> Any:
        # Positions are wrapped only here: the compiled list stores each pair's periodic
        # image, which stays valid while atoms move continuously until the next rebuild.
        require_finite("lj", "positions", x, step, step * dt)
        kernels.wrap(x, box)
        return kernels.lj_neighbours(x, box, rlist)

    f = np.empty_like(x)
    samples = Samples("lj", (*OBSERVABLES, "momentum"))

    def in_box(saved: Mapping[str, Any]) -> None:
        # Where checkpoints are taken, the positions were just wrapped (into [0, box]: the
        # wrap may round up to the edge); the list is built from them as they are.
        if not ((saved["positions"] >= 0.0) & (saved["positions"] <= box)).all():
            raise CheckpointError(f"positions lie outside the box [0, {box!r}]")

    state = State({"positions": x, "velocities": v, "forces": f}, samples, rng,
                  {"neighbour_rebuilds": int, "dangerous_rebuilds": int}, in_box)
    resumed, numbers = files.resume(state, steps)
    if resumed:
        rebuilds, late_rebuilds = numbers["neighbour_rebuilds"], numbers["dangerous_rebuilds"]
        # The list of the checkpoint's step again, from the positions it was built from: not
        # through build(), whose second wrap can move an atom at the box's edge by an ulp.
        pairs = kernels.lj_neighbours(x, box, rlist)
    else:
        pairs = build(0)
        rebuilds = 1
        u, w = kernels.lj_forces(x, box, pairs, rc, code, f)
    reference = x.copy()

    def sample(step: int) -> None:
        speed2 = np.einsum("ij,ij->i", v, v)
        kinetic = 0.5 * float(speed2.sum())
        # An atom crossing half the box in one step makes the minimum image meaningless:
        # the energies stay finite but the trajectory is garbage.
        if math.sqrt(speed2.max()) * dt > 0.5 * box:
            raise blow_up("lj", f"an atom moves {math.sqrt(speed2.max()) * dt:.3g} per step, "
                          f"more than half the box ({0.5 * box:.3g})", step, step * dt)
        samples.add(step, step * dt, potential_energy=u / n, kinetic_energy=kinetic / n,
                    total_energy=(u + kinetic) / n, temperature=2.0 * kinetic / dof,
                    pressure=(2.0 * kinetic + w) / (3.0 * volume),
                    momentum=float(np.linalg.norm(v.sum(axis=0))))

    def record(step: int) -> None:
        # Frames hold positions wrapped into the box, as final.xyz does (the driver's own
        # stay unwrapped between rebuilds); a copy, so the dynamics do not see it.
        wrapped = x.copy()
        kernels.wrap(wrapped, box)
        files.frame(step, step * dt, wrapped, v)

    if not resumed:
        sample(0)
        if files.due(0):
            record(0)
    tick = Progress(progress, steps)
    noise = np.empty((n, 3))  # refilled in place: the same numbers as a fresh array each step
    # The loop alone is timed too (metadata loop_s), like LAMMPS's "Loop time", which
    # leaves out the set-up (lattice, velocities, first neighbour list and forces).
    loop_started = time.perf_counter()
    for step in range(resumed + 1, steps + 1):
        kernels.kick(v, f, 0.5 * dt)
        if nvt:
            kernels.drift(x, v, 0.5 * dt)
            kernels.ornstein_uhlenbeck(v, c1, c2, rng.standard_normal(out=noise))
            kernels.drift(x, v, 0.5 * dt)
        else:
            kernels.drift(x, v, dt)
        # "not <=" so that a NaN displacement also rebuilds, where the blow-up is reported.
        if rebuild_every:
            rebuild = step % rebuild_every == 0
            if rebuild and check_late and kernels.max_displacement2(x, reference, box) > half_skin2:
                late_rebuilds += 1
        else:
            rebuild = not kernels.max_displacement2(x, reference, box) <= half_skin2
        if rebuild:
            pairs = build(step)
            reference[:] = x
            rebuilds += 1
        sampled = step % p["sample_every"] == 0
        u, w = kernels.lj_forces(x, box, pairs, rc, code, f, sampled)
        kernels.kick(v, f, 0.5 * dt)
        if sampled:
            sample(step)
        if files.due(step):
            record(step)
        tick(step)
        # Only after a rebuild can a resumed run rebuild the same list (from the positions
        # alone); checkpoints therefore neither move a rebuild nor change a number.
        if rebuild and step < steps and files.checkpoint_due():
            files.checkpoint(step, state, neighbour_rebuilds=rebuilds,
                             dangerous_rebuilds=late_rebuilds)
    loop_s = time.perf_counter() - loop_started
    require_finite("lj", "positions", x, steps, steps * dt)
    require_finite("lj", "velocities", v, steps, steps * dt)
    kernels.wrap(x, box)
    files.final(steps, steps * dt, x, v)

    summary: dict[str, float] = {"n_atoms": float(n), "box": box, "density": n / volume}
    settled = p["equilibration_steps"]
    mean_and_sem(summary, samples, *OBSERVABLES, from_step=settled)
    t, total = samples.array("t", settled), samples.array("total_energy", settled)
    summary["energy_drift"] = slope(t, total)
    summary["energy_fluctuation"] = float(total.std())
    summary["max_momentum"] = float(samples.array("momentum").max())
    truncated = p["potential"] == "truncated"
    summary["energy_tail"] = tail_correction(n, box, rc) / n if truncated else 0.0
    summary["pressure_tail"] = tail_pressure(n, box, rc) if truncated else 0.0
    observables = {name: samples.series[name] for name in ("t", *OBSERVABLES)}
    return Run(observables, summary, {"positions": x, "velocities": v, "box": np.array(box)},
               atom_steps=n * (steps - resumed),
               metadata={"neighbour_rebuilds": rebuilds, "dangerous_rebuilds": late_rebuilds,
                         "loop_s": loop_s})
