"""The built-in kinds (lj, nbody, brownian, sleep) as :class:`simkind.Kind` s, in pure Python.

simctl validates task files with this module before anything is sent, so it imports
neither numpy nor the extension: the kinds' run functions (``ckernel.drivers``) are named,
not imported. Each kind is a table of :class:`simkind.Field` specs (type, default, range);
cross-field rules (lattice or explicit positions, cutoff against the box, stability limits,
size bounds) follow in one function per kind, and :data:`RULES` says them in words. Every
error names the field, the value and what is allowed. The kinds are registered in the
entry-point group ``particle_sim.kinds`` (pyproject.toml), like any plugin's.

The parameter tables of ``docs/kernels.md`` are generated from these specs:
``python -m ckernel.params --markdown docs/kernels.md`` rewrites them, and
``tests/kernels/test_docs_tables.py`` fails when the committed doc differs.
"""

from __future__ import annotations

import math
from typing import Any

from simkind import Field, Kind, Plot
from simkind.errors import ParamError
from simkind.extxyz import FINAL_CONFIGURATION, TRAJECTORY, Frame
from simkind.fields import number, triple, yaml_repr

KINDS: tuple[str, ...] = ("lj", "nbody", "brownian", "sleep")
"""The simulation kinds, in documentation order."""

MAX_LJ_ATOMS = 256_000
"""Largest Lennard-Jones system (n_cells = 40); bounds memory and a task's result size."""
MAX_BODIES = 20_000
"""Largest N-body system; direct summation is O(N^2) per step."""
MAX_PARTICLES = 1_000_000
"""Largest Brownian system (particles are independent; memory is the bound)."""
MAX_STEPS = 100_000_000
"""Most time steps in one task."""
MAX_SAMPLES = 10_001
"""Most samples per observable (steps // sample_every + 1); bounds the result payload."""
MAX_FRAMES = 10_001
"""Most frames in one trajectory (steps // trajectory_every + 1), as many as samples."""
MAX_SLEEP_SECONDS = 86_400.0
"""Longest diagnostic sleep."""
MAX_SLEEP_ARTIFACT_BYTES = 16 << 30
"""Largest diagnostic file the sleep kind writes (transfer tests and benchmarks)."""
MAX_NEIGHBOUR_PAIRS = 50_000_000
"""Largest expected Lennard-Jones neighbour list, N/2 * rho * 4/3 pi (rc + skin)^3 (200 MB)."""
MAX_DENSITY = 1.5
"""Highest Lennard-Jones number density (well beyond the fcc solid at T = 1)."""

POTENTIALS = ("truncated", "shifted", "force_shifted")
ENSEMBLES = ("nve", "nvt")


def _steps_fields(dt_default: float, dt_high: float, steps_default: int,
                  time_unit: str) -> dict[str, Field]:
    return {
        "dt": Field("float", dt_default, "time step", 0.0, dt_high, low_open=True,
                    unit=time_unit),
        "steps": Field("int", steps_default, "number of time steps", 1, MAX_STEPS),
        "sample_every": Field("int", 10, "steps between samples of the observables", 1, MAX_STEPS),
        "equilibration_steps": Field("int", 0, "steps at the start left out of the summary's "
                                     "means, errors and fits (the observables keep every "
                                     "sample)", 0, MAX_STEPS),
        # What a task writes, not what it simulates: left out of the seed (output=True).
        "trajectory_every": Field("int", 0, f"write a frame to {TRAJECTORY} at step 0 and "
                                  "every k steps (0: no trajectory)", 0, MAX_STEPS,
                                  output=True),
        "save_final": Field("bool", True, "write the last configuration to "
                            f"{FINAL_CONFIGURATION}", output=True),
    }


# Units: Lennard-Jones in epsilon = sigma = m = k_B = 1 (time tau = sigma sqrt(m/epsilon));
# N-body and Brownian in whatever consistent units G, masses, lengths (and kT) are given in.
SPECS: dict[str, dict[str, Field]] = {
    "lj": {
        "n_cells": Field("int", 5, "fcc unit cells per box side (N = 4 n^3); "
                         "not with positions", 1, 40),
        # "not with positions": validate refuses it there (N / V follows from them).
        "density": Field("float", 0.8, "number density N / V of the fcc start; not with "
                         "positions", 0.0, MAX_DENSITY, low_open=True, unit="sigma^-3"),
        "positions": Field("vectors", None, "explicit start positions (needs box)",
                           unit="sigma"),
        "velocities": Field("vectors", None, "explicit start velocities (needs positions)",
                            unit="sigma / tau"),
        "box": Field("float", None, "cubic box side for explicit positions", 0.0, 1000.0,
                     low_open=True, unit="sigma"),
        "temperature": Field("float", 1.0, "start temperature; thermostat target for nvt",
                             0.0, 100.0, low_open=True, unit="epsilon / k_B"),
        **_steps_fields(0.005, 0.05, 1000, "tau"),
        "rc": Field("float", 2.5, "cutoff radius (at most half the box)", 1.0, 6.0,
                    unit="sigma"),
        "potential": Field("choice", "shifted", "how the pair potential is cut at rc",
                           choices=POTENTIALS),
        "skin": Field("float", 0.3, "neighbour-list skin", 0.0, 2.0, unit="sigma"),
        "rebuild_every": Field("int", 0, "rebuild the neighbour list every k steps (0: only "
                               "when an atom moved more than skin/2)", 0, 100_000),
        "ensemble": Field("choice", "nve", "nve (velocity Verlet) or nvt (Langevin BAOAB)",
                          choices=ENSEMBLES),
        "gamma": Field("float", 1.0, "Langevin friction (nvt only)", 0.0, 1000.0,
                       low_open=True, unit="1 / tau"),
    },
    "nbody": {
        "n_bodies": Field("int", 256, "bodies in the Plummer sphere (with bodies: their "
                          "count)", 2, MAX_BODIES),
        "bodies": Field("custom", None, "explicit bodies instead of a Plummer sphere",
                        parse=lambda where, value: _bodies(where, value),
                        describe=f'a list of 2 to {MAX_BODIES} {{"mass": m > 0, '
                                 '"position": [x, y, z], "velocity": [vx, vy, vz]}'),
        "softening": Field("float", 0.05, "Plummer softening length epsilon", 0.0, 100.0,
                           unit="length"),
        "G": Field("float", 1.0, "gravitational constant", 0.0, 1e6, low_open=True,
                   unit="length^3 / (mass time^2)"),
        **_steps_fields(0.01, 10.0, 1000, "time"),
    },
    "brownian": {
        "n_particles": Field("int", 1000, "independent particles", 1, MAX_PARTICLES),
        "temperature": Field("float", 1.0, "bath temperature kT", 0.0, 1e4, low_open=True,
                             unit="energy"),
        "gamma": Field("float", 1.0, "friction coefficient", 0.0, 1e6, low_open=True,
                       unit="1 / time"),
        "mass": Field("float", 1.0, "particle mass", 0.0, 1e6, low_open=True, unit="mass"),
        "trap_k": Field("float", 0.0, "harmonic trap stiffness (0: free particles)", 0.0, 1e6,
                        unit="energy / length^2"),
        "overdamped": Field("bool", False, "Euler-Maruyama on positions only (no inertia)"),
        **_steps_fields(0.01, 100.0, 1000, "time"),
    },
    "sleep": {
        "seconds": Field("float", 0.0, "how long to wait", 0.0, MAX_SLEEP_SECONDS, unit="s"),
        "fail": Field("bool", False, "raise SimulationError after waiting"),
        "artifact_bytes": Field("int", 0, "write an artifact data.bin of this many bytes, "
                                "made from the seed (0: none)", 0, MAX_SLEEP_ARTIFACT_BYTES,
                                unit="bytes"),
    },
}
"""Parameter tables per kind: the single source for defaults, ranges and docs."""

RULES: dict[str, str] = {
    "lj": "either the lattice (`n_cells`, `density`) or `positions` + `box` (then "
          f"2 to {MAX_LJ_ATOMS:,} atoms, N/box^3 <= {MAX_DENSITY:g}, and the validated params "
          "carry `n_cells: null, density: null`); `velocities` only with `positions` and with "
          "as many rows; `rc` <= box/2; the expected neighbour list N/2 rho (4/3) pi "
          f"(rc + skin)^3 at most {MAX_NEIGHBOUR_PAIRS:,} pairs "
          f"({MAX_NEIGHBOUR_PAIRS * 4 // 1_000_000} MB of int32 indices). A task's `init` "
          "(an extended XYZ file, or another task's final.xyz) gives N, the box and maybe the "
          "velocities instead: its last frame needs a cubic "
          '`Lattice="L 0 0 0 L 0 0 0 L"` (and `pbc` "T T T" or none), `pos:R:3`, maybe '
          f"`vel:R:3` (else velocities are drawn from `temperature` and the seed), 2 to "
          f"{MAX_LJ_ATOMS:,} atoms and the same density, cutoff and neighbour-list bounds; "
          "not with `positions`. `n_cells` and `density` are then unused (but still checked "
          "as a lattice: leave them at their defaults).",
    "nbody": "with `bodies`, `n_bodies` may be left out or must equal their count (validation "
             "fills it in). An `init` configuration (last frame: `pos:R:3`, maybe `vel:R:3` "
             "and `masses:R:1`, 2 to "
             f"{MAX_BODIES:,} bodies; not with `bodies`) gives the bodies instead: without "
             "masses each body has mass 1/N (total mass 1, as the Plummer sphere), without "
             "velocities they start at rest; a Lattice is ignored (open boundaries).",
    "brownian": "in a trap (`trap_k` > 0) `dt` must be below 2 sqrt(`mass` / `trap_k`) "
                "(underdamped, BAOAB) or 2 `mass` `gamma` / `trap_k` (`overdamped`, "
                "Euler-Maruyama), beyond which the schemes diverge. An `init` configuration "
                f"(last frame: `pos:R:3`, maybe `vel:R:3`, 1 to {MAX_PARTICLES:,} particles) "
                "gives the start positions (the msd is measured from them) and, unless "
                "`overdamped`, the velocities (without `vel` they are drawn from "
                "Maxwell-Boltzmann and the seed); `n_particles` is then unused.",
    "sleep": "",
}
"""The cross-field rules of each kind (the ``_*_cross`` checks below) in words, for the docs."""

SAMPLES_RULE = (f"For every physical kind, `steps // sample_every + 1` must be at most "
                f"{MAX_SAMPLES:,} samples, which bounds a result's size (the error says which "
                "`sample_every` would do), and at least one sample must be taken at or after "
                "`equilibration_steps`. A trajectory (`trajectory_every` = k > 0) holds "
                f"`steps // k + 1` frames, at most {MAX_FRAMES:,}.")
"""The sampling rule of every physical kind (:func:`_check_samples`) in words."""


def _lj_units() -> dict[str, str]:
    per_atom = {"potential_energy": "epsilon", "kinetic_energy": "epsilon",
                "total_energy": "epsilon", "temperature": "epsilon / k_B",
                "pressure": "epsilon / sigma^3"}
    return {"t": "tau", **per_atom,
            **{f"{stat}_{name}": unit for name, unit in per_atom.items()
               for stat in ("mean", "sem")},
            "box": "sigma", "density": "sigma^-3", "energy_drift": "epsilon / tau",
            "energy_fluctuation": "epsilon", "max_momentum": "sigma / tau",
            "energy_tail": "epsilon", "pressure_tail": "epsilon / sigma^3"}


def _brownian_units() -> dict[str, str]:
    return {"t": "time", "msd": "length^2", "x2": "length^2", "temperature": "energy",
            "diffusion_coefficient": "length^2 / time", "diffusion_expected": "length^2 / time",
            "mean_x2": "length^2", "sem_x2": "length^2", "x2_expected": "length^2",
            "mean_temperature": "energy", "sem_temperature": "energy"}


# Units of the summaries and observables (the parameters' are their fields'); relative
# errors and ratios have none.
UNITS: dict[str, dict[str, str]] = {
    "lj": _lj_units(),
    "nbody": {"t": "time", "kinetic_energy": "energy", "potential_energy": "energy",
              "total_energy": "energy", "angular_momentum": "mass length^2 / time",
              "energy_initial": "energy", "energy_final": "energy",
              "angular_momentum_initial": "mass length^2 / time",
              "max_angular_momentum_change": "mass length^2 / time",
              "return_distance": "length"},
    "brownian": _brownian_units(),
    "sleep": {"t": "s", "seconds": "s"},
}
"""Summary and observable name -> unit, per kind (what the plots' axis labels show)."""

PLOTS: dict[str, tuple[Plot, ...]] = {
    "lj": (Plot(y="mean_total_energy", title="Total energy per atom"),
           Plot(y="mean_pressure", title="Pressure"),
           Plot(y="mean_temperature", title="Measured temperature")),
    "nbody": (Plot(y="max_relative_energy_error", title="Largest relative energy error"),
              Plot(observable="relative_energy_error", title="Relative energy error")),
    "brownian": (Plot(observable="msd", title="Mean squared displacement"),
                 Plot(y="diffusion_coefficient", x="diffusion_expected", diagonal=True,
                      title="Diffusion coefficient: measured against kT / (m gamma)"),
                 Plot(y="mean_x2", x="x2_expected", diagonal=True,
                      title="<x^2> in the trap: measured against kT / k")),
    "sleep": (),
}
"""The default plots of each kind (``simctl plot RUN``); a plot whose values a run lacks
(``mean_x2`` in a run of free particles) is left out."""


def validate(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` of built-in ``kind`` with defaults filled in, or raise ParamError
    naming the field (the runtime validates any installed kind through ``simkind``)."""
    if not isinstance(kind, str) or kind not in BUILT_IN:
        raise ParamError(f"unknown kind {yaml_repr(kind)}: allowed kinds are {', '.join(KINDS)}")
    return BUILT_IN[kind].validate(params)


def _bodies(where: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple) or not 2 <= len(value) <= MAX_BODIES:
        n = len(value) if isinstance(value, list | tuple) else type(value).__name__
        raise ParamError(f"{where}: must be a list of 2 to {MAX_BODIES} bodies, got {n}")
    out = []
    for i, body in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(body, dict) or set(body) != {"mass", "position", "velocity"}:
            raise ParamError(f"{here} = {yaml_repr(body)}: must be a mapping with exactly the keys "
                             "mass, position, velocity")
        mass = number(f"{here}.mass", body["mass"])
        if mass <= 0.0:
            raise ParamError(f"{here}.mass = {yaml_repr(mass)} out of range: must be > 0")
        out.append({"mass": mass, "position": triple(f"{here}.position", body["position"]),
                    "velocity": triple(f"{here}.velocity", body["velocity"])})
    return out


def _check_samples(kind: str, p: dict[str, Any]) -> None:
    steps, every, skip = p["steps"], p["sample_every"], p["equilibration_steps"]
    samples = steps // every + 1
    if samples > MAX_SAMPLES:
        least = math.ceil(steps / (MAX_SAMPLES - 1))
        raise ParamError(f"{kind}.sample_every = {every} gives {samples} samples for "
                         f"steps = {steps}; at most {MAX_SAMPLES} are allowed: "
                         f"use sample_every >= {least}")
    # Samples are taken at multiples of sample_every; those from equilibration_steps on count.
    kept = steps // every - math.ceil(skip / every) + 1
    if kept < 1:
        raise ParamError(f"{kind}.equilibration_steps = {skip} leaves none of the samples "
                         f"(taken every {every} of {steps} steps) for the summary: lower "
                         "equilibration_steps or sample_every, or raise steps")
    every = p["trajectory_every"]
    if every and steps // every + 1 > MAX_FRAMES:
        raise ParamError(f"{kind}.trajectory_every = {every} gives {steps // every + 1} frames "
                         f"for steps = {steps}; at most {MAX_FRAMES} are allowed: use "
                         f"trajectory_every >= {math.ceil(steps / (MAX_FRAMES - 1))}")


def _check_lj_system(where: str, n_atoms: int, box: float, p: dict[str, Any],
                     box_of: str = "") -> None:
    """The rules on a Lennard-Jones system of ``n_atoms`` in a cubic ``box`` (of the lattice,
    of the positions or, ``box_of`` says, of an init configuration); ``where`` names it."""
    pairs = n_atoms / 2.0 * n_atoms / box**3 * 4.0 / 3.0 * math.pi * (p["rc"] + p["skin"]) ** 3
    if pairs > MAX_NEIGHBOUR_PAIRS:
        raise ParamError(f"{where}: {n_atoms} atoms with rc + skin = {p['rc'] + p['skin']:g} "
                         f"need about {pairs:.3g} neighbour pairs, above the bound of "
                         f"{MAX_NEIGHBOUR_PAIRS:.3g}: reduce n_cells, rc or skin")
    if p["rc"] > box / 2.0:
        raise ParamError(f"lj.rc = {yaml_repr(p['rc'])} out of range: must be at most half the "
                         f"box side ({box / 2.0:.6g}){box_of} for the minimum-image "
                         "convention")


def _check_lj_atoms(where: str, n_atoms: int, box: float) -> None:
    """Atom count and density of explicit Lennard-Jones positions (``where``: their source)."""
    if not 2 <= n_atoms <= MAX_LJ_ATOMS:
        raise ParamError(f"{where}: {n_atoms} atoms, allowed 2 to {MAX_LJ_ATOMS}")
    density = n_atoms / box**3
    if density > MAX_DENSITY:
        raise ParamError(f"{where}: density N/box^3 = {density:.4g} out of range: must be at "
                         f"most {MAX_DENSITY:g}")


def _lj_cross(p: dict[str, Any], given: dict[str, Any]) -> None:
    if p["positions"] is None:
        for name in ("box", "velocities"):
            if p[name] is not None:
                raise ParamError(f"lj.{name}: only allowed together with lj.positions")
        n_atoms = 4 * p["n_cells"] ** 3
        box = (n_atoms / p["density"]) ** (1.0 / 3.0)
        p["box"] = None
    else:
        if p["box"] is None:
            raise ParamError("lj.box: required with lj.positions (a number > 0)")
        for name in ("n_cells", "density"):
            if name in given:
                raise ParamError(f"lj.{name}: not allowed with lj.positions "
                                 "(N and the density follow from positions and box)")
        n_atoms, box = len(p["positions"]), p["box"]
        _check_lj_atoms("lj.positions", n_atoms, box)
        if p["velocities"] is not None and len(p["velocities"]) != n_atoms:
            raise ParamError(f"lj.velocities: {len(p['velocities'])} rows, must match the "
                             f"{n_atoms} positions")
        # In this mode N and the density follow from positions and box.
        p["n_cells"] = None
        p["density"] = None
    _check_lj_system("lj", n_atoms, box, p)
    _check_samples("lj", p)


COLUMNS = {"pos": 3, "vel": 3, "masses": 1}
"""The per-atom columns of a configuration the built-in kinds read (real numbers, this many
each); any other column (``species``, ...) is ignored."""


def configuration_columns(frame: Frame) -> dict[str, int]:
    """Where each column of :data:`COLUMNS` that ``frame`` has starts in an atom line (``pos``
    always: the header reader requires it); ParamError when one is not real or has another
    count."""
    offsets: dict[str, int] = {}
    at = 0
    for name, kind, count in frame.properties:
        if name in COLUMNS:
            if (kind, count) != ("R", COLUMNS[name]):
                raise ParamError(f"init: Properties column {name}:{kind}:{count} must be "
                                 f"{name}:R:{COLUMNS[name]} (real numbers)")
            offsets[name] = at
        at += count
    return offsets


def _init_atoms(kind: str, frame: Frame, most: int, least: int) -> None:
    configuration_columns(frame)
    if not least <= frame.n_atoms <= most:
        raise ParamError(f"{kind}.init: the configuration has {frame.n_atoms} atoms, allowed "
                         f"{least} to {most}")


def _lj_init(p: dict[str, Any], frame: Frame) -> None:
    if p["positions"] is not None:
        raise ParamError("lj.init: not allowed with lj.positions (give one start configuration)")
    box = frame.cubic_box
    if box is None:
        raise ParamError(f"lj.init: the configuration's Lattice {list(frame.lattice or ())} is "
                         'not a cubic box: lj needs Lattice="L 0 0 0 L 0 0 0 L" with L > 0')
    if "pbc" in frame.info and frame.info["pbc"].split() != ["T", "T", "T"]:
        raise ParamError(f'lj.init: pbc="{frame.info["pbc"]}": lj is periodic in x, y and z '
                         '(pbc="T T T" or none)')
    _init_atoms("lj", frame, MAX_LJ_ATOMS, 2)
    _check_lj_atoms("lj.init", frame.n_atoms, box)
    _check_lj_system("lj.init", frame.n_atoms, box, p, " of the init configuration")


def _nbody_init(p: dict[str, Any], frame: Frame) -> None:
    if p["bodies"] is not None:
        raise ParamError("nbody.init: not allowed with nbody.bodies (give one start "
                         "configuration)")
    _init_atoms("nbody", frame, MAX_BODIES, 2)


def _brownian_init(p: dict[str, Any], frame: Frame) -> None:
    _init_atoms("brownian", frame, MAX_PARTICLES, 1)


def _nbody_cross(p: dict[str, Any], given: dict[str, Any]) -> None:
    if p["bodies"] is not None:
        if "n_bodies" in given and given["n_bodies"] != len(p["bodies"]):
            raise ParamError(f"nbody.n_bodies = {yaml_repr(given['n_bodies'])}: must match the "
                             f"{len(p['bodies'])} bodies given (or be left out)")
        p["n_bodies"] = len(p["bodies"])
    _check_samples("nbody", p)


def _brownian_cross(p: dict[str, Any], given: dict[str, Any]) -> None:
    # Both schemes are linear in a harmonic trap; beyond these time steps they diverge.
    if p["trap_k"] > 0.0:
        if p["overdamped"]:
            limit = 2.0 * p["mass"] * p["gamma"] / p["trap_k"]
            rule = "2 m gamma / trap_k"
        else:
            limit = 2.0 * math.sqrt(p["mass"] / p["trap_k"])
            rule = "2 sqrt(m / trap_k)"
        if p["dt"] >= limit:
            raise ParamError(f"brownian.dt = {yaml_repr(p['dt'])} out of range: must be below "
                             f"{rule} = {limit:.6g} for a stable integration in the trap")
    _check_samples("brownian", p)


def _lj_cost(p: dict[str, Any]) -> float:
    atoms = 4 * p["n_cells"] ** 3 if p["positions"] is None else len(p["positions"])
    return atoms * p["steps"] / 1e7  # about a second per 10^7 atom-steps


BUILT_IN: dict[str, Kind] = {
    "lj": Kind("lj", "Lennard-Jones molecular dynamics in a periodic cubic box (NVE or "
               "Langevin NVT)", SPECS["lj"], "ckernel.drivers:lj_kind", check=_lj_cross,
               rules=RULES["lj"], cost=_lj_cost, units=UNITS["lj"], plots=PLOTS["lj"],
               init=_lj_init),
    "nbody": Kind("nbody", "gravitational N-body: a softened Plummer sphere or given bodies, "
                  "leapfrog", SPECS["nbody"], "ckernel.drivers:nbody_kind", check=_nbody_cross,
                  rules=RULES["nbody"], cost=lambda p: p["n_bodies"] ** 2 * p["steps"] / 2e8,
                  units=UNITS["nbody"], plots=PLOTS["nbody"], init=_nbody_init),
    "brownian": Kind("brownian", "Langevin (BAOAB) or overdamped Brownian particles, free or "
                     "in a harmonic trap", SPECS["brownian"], "ckernel.drivers:brownian_kind",
                     check=_brownian_cross, rules=RULES["brownian"],
                     cost=lambda p: p["n_particles"] * p["steps"] / 5e7,
                     units=UNITS["brownian"], plots=PLOTS["brownian"],
                     init=_brownian_init),
    "sleep": Kind("sleep", "diagnostic: wait a given time, maybe fail (runtime tests and "
                  "benchmarks)", SPECS["sleep"], "ckernel.drivers:sleep_kind",
                  cost=lambda p: p["seconds"], units=UNITS["sleep"]),
}
"""The built-in kinds, by name; their entry points (pyproject.toml) name these objects."""

LJ, NBODY, BROWNIAN, SLEEP = (BUILT_IN[name] for name in KINDS)
