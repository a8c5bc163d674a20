"""The kind ``chain``: its parameters, cross-field rules and cost, in pure Python.

simctl imports this module on the main PC to validate task files, where neither numpy nor
the compiled integrator need be installed: it imports only the standard library and
``simkind``. The run function (``fput_chain.run:run``) is imported only where tasks run.
"""

from __future__ import annotations

import math
from typing import Any

from simkind import Field, Kind, ParamError, Plot

MAX_PARTICLES = 100_000
"""Largest chain; bounds a task's memory (a few arrays of N doubles)."""
MAX_STEPS = 100_000_000
"""Most time steps in one task."""
MAX_SAMPLES = 10_001
"""Most samples per observable (steps // sample_every + 1); bounds the result's size."""
MAX_MODES_RECORDED = 32
"""Most mode energies recorded; with alpha = beta = 0 each costs 2 N operations per step."""

PARAMS = {
    "n_particles": Field("int", 32, "particles on the ring (N)", 4, MAX_PARTICLES),
    "k": Field("float", 1.0, "harmonic spring constant", 0.0, 1e6, low_open=True,
               unit="energy/length^2"),
    "alpha": Field("float", 0.0, "cubic coefficient of the bond potential", -1e3, 1e3,
                   unit="energy/length^3"),
    "beta": Field("float", 0.0, "quartic coefficient of the bond potential", 0.0, 1e6,
                  unit="energy/length^4"),
    "mass": Field("float", 1.0, "mass of every particle (m)", 0.0, 1e6, low_open=True,
                  unit="mass"),
    "dt": Field("float", 0.05, "time step (velocity Verlet)", 0.0, 1e3, low_open=True,
                unit="time"),
    "steps": Field("int", 10_000, "number of time steps", 1, MAX_STEPS),
    "sample_every": Field("int", 10, "steps between samples of the observables", 1, MAX_STEPS),
    "init": Field("choice", "random", "initial condition: random displacements and "
                  "velocities from the seed, or one standing normal mode at rest",
                  choices=("random", "mode")),
    "mode": Field("int", 1, "the normal mode q excited by init = mode", 1, MAX_PARTICLES // 2),
    "amplitude": Field("float", 0.1, "displacement scale: the standard deviation of u_j "
                       "(random) or the mode's amplitude (mode)", 0.0, 100.0, low_open=True,
                       unit="length"),
    "modes_recorded": Field("int", 4, "normal modes q = 1 .. this whose energies are "
                            "recorded (and, when alpha = beta = 0, frequencies measured)",
                            0, MAX_MODES_RECORDED),
}

RULES = (f"`steps // sample_every + 1` at most {MAX_SAMPLES:,} samples; `dt` below the "
         "harmonic stability limit 2 / omega_max = sqrt(`mass` / `k`) (a large amplitude "
         "with `alpha` or `beta` stiffens the chain further: a run that blows up fails with "
         "SimulationError); `mode` and `modes_recorded` at most `n_particles` / 2 (`mode` is "
         "checked, and ignored, with `init: random` too).")


def check(params: dict[str, Any], given: dict[str, Any]) -> None:
    """The cross-field rules of :data:`RULES`; ParamError names the field and the limit.

    They read only the validated ``params``, never ``given``: execution validates the
    already validated params again, where every field counts as given."""
    p = params
    samples = p["steps"] // p["sample_every"] + 1
    if samples > MAX_SAMPLES:
        least = math.ceil(p["steps"] / (MAX_SAMPLES - 1))
        raise ParamError(f"chain.sample_every = {p['sample_every']} gives {samples} samples "
                         f"for steps = {p['steps']}; at most {MAX_SAMPLES} are allowed: use "
                         f"sample_every >= {least}")
    stability = math.sqrt(p["mass"] / p["k"])
    if not p["dt"] < stability:
        raise ParamError(f"chain.dt = {p['dt']!r} out of range: must be below the stability "
                         f"limit sqrt(mass / k) = {stability:g} (mass = {p['mass']:g}, "
                         f"k = {p['k']:g})")
    half = p["n_particles"] // 2
    for name in ("mode", "modes_recorded"):
        if p[name] > half:
            raise ParamError(f"chain.{name} = {p[name]} out of range: must be at most "
                             f"n_particles / 2 = {half}")


def cost(params: dict[str, Any]) -> float:
    """Relative cost: N steps / 1e7, more for a harmonic chain, whose mode projections
    (2 N modes_recorded multiply-adds per step, for the frequencies) dominate the step:
    32 modes made a step about 20 times dearer on the machine it was measured on."""
    harmonic = params["alpha"] == 0.0 and params["beta"] == 0.0
    projections = 0.6 * params["modes_recorded"] if harmonic else 0.0
    return params["n_particles"] * params["steps"] * (1.0 + projections) / 1e7


UNITS = {
    "t": "time",
    **{name: "energy" for name in ("kinetic_energy", "potential_energy", "total_energy",
                                   "energy_mean")},
    **{f"mode_energy_{q}": "energy" for q in range(1, MAX_MODES_RECORDED + 1)},
    **{f"omega_{q}": "1/time" for q in range(1, MAX_MODES_RECORDED + 1)},
}
"""Units of the summary values and observables (``energy_drift``, ``energy_error_max`` and
``omega_max_rel_error`` are relative: no unit)."""

PLOTS = (
    Plot(y="energy_error_max", title="Largest relative energy error"),
    Plot(observable="mode_energy_1", title="Energy in mode 1 (the FPUT recurrence)"),
    Plot(observable="total_energy", title="Total energy"),
)
"""What ``simctl plot RUN`` draws for a run of chains."""

CHAIN = Kind(
    name="chain",
    description="Fermi-Pasta-Ulam-Tsingou chain on a ring: energies and normal modes",
    params=PARAMS,
    run="fput_chain.run:run",
    check=check,
    rules=RULES,
    cost=cost,
    units=UNITS,
    plots=PLOTS,
)
"""The kind, as the entry point ``chain = "fput_chain.kind:CHAIN"`` names it."""
