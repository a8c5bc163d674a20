"""Lennard-Jones dynamics: backend agreement, NVE conservation, NVT temperature, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ckernel
from ckernel import lj
from tests.support.kernels import both_backends, every_kernel, every_variant, running, simd

NVE = {"n_cells": 5, "density": 0.8, "temperature": 1.0, "rc": 2.5, "potential": "shifted"}


@every_variant
@pytest.mark.parametrize("potential", ["truncated", "shifted", "force_shifted"])
def test_forces_agree_between_backends(potential: str, variant: str) -> None:
    rng = np.random.default_rng(11)
    for n_cells, density in ((4, 0.8), (6, 0.5), (2, 1.0)):
        positions, box = lj.fcc_lattice(n_cells, density)
        positions = positions + rng.uniform(-0.2, 0.2, positions.shape)
        rc = min(2.5, box / 2)
        f_np, u_np, w_np = lj.forces(positions, box, rc, potential, backend="numpy")
        with simd(variant):
            f_cy, u_cy, w_cy = lj.forces(positions, box, rc, potential, backend="cython")
        scale = np.abs(f_np).max()
        assert np.abs(f_cy - f_np).max() <= 1e-10 * scale
        assert u_cy == pytest.approx(u_np, rel=1e-10)
        assert w_cy == pytest.approx(w_np, rel=1e-10)


@every_variant
def test_forces_agree_on_uniformly_random_positions(variant: str) -> None:
    """No lattice at all: close pairs give forces spanning many orders of magnitude."""
    rng = np.random.default_rng(12)
    for n, box in ((300, 8.0), (40, 5.2)):
        positions = rng.uniform(0.0, box, (n, 3))
        f_np, u_np, w_np = lj.forces(positions, box, 2.5, "shifted", backend="numpy")
        with simd(variant):
            f_cy, u_cy, w_cy = lj.forces(positions, box, 2.5, "shifted", backend="cython")
        assert np.abs(f_cy - f_np).max() <= 1e-10 * np.abs(f_np).max()
        assert u_cy == pytest.approx(u_np, rel=1e-10)
        assert w_cy == pytest.approx(w_np, rel=1e-10)


def test_forces_are_minus_the_energy_gradient() -> None:
    positions, box = lj.fcc_lattice(3, 0.8)
    positions = positions + np.random.default_rng(5).uniform(-0.1, 0.1, positions.shape)
    f, _, _ = lj.forces(positions, box, 2.5, "force_shifted")
    h = 1e-6
    for atom, axis in ((0, 0), (17, 1), (63, 2)):
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(lj.energy_virial(plus, box, 2.5, "force_shifted")[0]
                    - lj.energy_virial(minus, box, 2.5, "force_shifted")[0]) / (2 * h)
        assert f[atom, axis] == pytest.approx(numeric, rel=1e-6, abs=1e-6)


@every_variant
@pytest.mark.parametrize("ensemble", ["nve", "nvt"])
def test_short_trajectories_agree_between_backends(ensemble: str, variant: str) -> None:
    params = {**NVE, "n_cells": 4, "steps": 60, "sample_every": 5, "ensemble": ensemble}
    a = ckernel.simulate("lj", params, 3, backend="numpy")
    with simd(variant):
        b = ckernel.simulate("lj", params, 3, backend="cython")
    for name, values in a["observables"].items():
        np.testing.assert_allclose(b["observables"][name], values, rtol=1e-9, atol=1e-12)


@every_kernel
def test_nve_momentum_and_drift(kernel: str) -> None:
    with running(kernel) as backend:
        result = ckernel.simulate("lj", {**NVE, "dt": 0.005, "steps": 2000,
                                         "sample_every": 10}, 1, backend=backend)
    summary = result["summary"]
    assert summary["max_momentum"] < 1e-10
    assert abs(summary["energy_drift"]) < 1e-4
    # The shifted potential and the fcc start at T = 1 melt into the liquid.
    assert 0.5 < summary["mean_temperature"] < 1.0


@both_backends
def test_nve_energy_fluctuation_scales_as_dt_squared(backend: str) -> None:
    """Same start, same time span; halving dt must cut the fluctuation about fourfold."""
    coarse = ckernel.simulate("lj", {**NVE, "dt": 0.005, "steps": 200, "sample_every": 1}, 2,
                              backend=backend)
    fine = ckernel.simulate("lj", {**NVE, "dt": 0.0025, "steps": 400, "sample_every": 2}, 2,
                            backend=backend)
    ratio = coarse["summary"]["energy_fluctuation"] / fine["summary"]["energy_fluctuation"]
    assert 3.0 < ratio < 5.0


def test_rebuild_every_k_steps_matches_displacement_check() -> None:
    """A list rebuilt every 5 steps with a generous skin gives the same trajectory."""
    params = {**NVE, "n_cells": 4, "steps": 100, "sample_every": 10, "skin": 0.6}
    checked = ckernel.simulate("lj", params, 4, backend="cython")
    fixed = ckernel.simulate("lj", {**params, "rebuild_every": 5}, 4, backend="cython")
    assert fixed["metadata"]["neighbour_rebuilds"] == 21
    assert checked["metadata"]["neighbour_rebuilds"] < 21
    assert fixed["metadata"]["dangerous_rebuilds"] == checked["metadata"]["dangerous_rebuilds"] == 0
    np.testing.assert_allclose(fixed["observables"]["total_energy"],
                               checked["observables"]["total_energy"], rtol=1e-10)


@both_backends
def test_nvt_langevin_holds_the_temperature(backend: str) -> None:
    result = ckernel.simulate("lj", {**NVE, "n_cells": 4, "ensemble": "nvt", "temperature": 1.5,
                                     "gamma": 5.0, "steps": 1500, "sample_every": 5}, 8,
                              backend=backend)
    temperatures = np.array(result["observables"]["temperature"][60:])
    assert temperatures.mean() == pytest.approx(1.5, abs=0.05)


def test_truncated_run_reports_tail_corrections() -> None:
    result = ckernel.simulate("lj", {**NVE, "potential": "truncated", "steps": 10}, 1)
    summary = result["summary"]
    n, box = summary["n_atoms"], summary["box"]
    assert summary["energy_tail"] == pytest.approx(lj.tail_correction(int(n), box, 2.5) / n)
    assert summary["pressure_tail"] == pytest.approx(lj.tail_pressure(int(n), box, 2.5))
    assert summary["pressure_tail"] < 0.0
    shifted = ckernel.simulate("lj", {**NVE, "steps": 10}, 1)["summary"]
    assert shifted["energy_tail"] == 0.0


def test_start_is_at_the_requested_temperature_with_zero_momentum() -> None:
    result = ckernel.simulate("lj", {**NVE, "temperature": 1.234, "steps": 1}, 9)
    assert result["observables"]["temperature"][0] == pytest.approx(1.234, rel=1e-12)
    record, _, _ = ckernel.run("lj", {**NVE, "steps": 1}, 9)
    assert np.abs(record.state["velocities"].sum(axis=0)).max() < 1e-12


@both_backends
def test_overlapping_atoms_raise_simulation_error(backend: str) -> None:
    positions = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]
    with pytest.raises(ckernel.SimulationError, match=r"lj: .*step 0"):
        ckernel.simulate("lj", {"positions": positions, "box": 6.0, "steps": 10}, 1,
                         backend=backend)


@both_backends
def test_explosive_time_step_raises_simulation_error(backend: str) -> None:
    """Atoms 0.3 apart fly off at huge speed; the run must stop with an error, not NaN."""
    positions = [[1.0, 1.0, 1.0], [1.3, 1.0, 1.0], [3.0, 3.0, 3.0], [4.0, 4.0, 4.5]]
    with pytest.raises(ckernel.SimulationError, match="blew up"):
        ckernel.simulate("lj", {"positions": positions, "box": 6.0, "steps": 200, "dt": 0.05,
                                "rc": 2.5, "potential": "truncated"}, 1, backend=backend)


def test_results_are_bit_identical_whatever_the_thread_count() -> None:
    """Runs the same simulations in fresh interpreters with 1 and 2 OpenMP threads (the
    kernels are serial by design; this guards that choice)."""
    script = (
        "import json, ckernel\n"
        "out = [ckernel.simulate('lj', {'n_cells': 4, 'steps': 50, 'ensemble': 'nvt'}, 5),\n"
        "       ckernel.simulate('nbody', {'n_bodies': 300, 'steps': 20}, 5)]\n"
        "print(json.dumps([[r['observables'], r['summary'], r['metadata']['threads']]\n"
        "                  for r in out]))\n"
    )
    outputs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, check=True, timeout=120)
        outputs.append(json.loads(done.stdout))
    one, two = outputs
    assert [r[2] for r in one] == [r[2] for r in two] == [1, 1]
    assert [r[:2] for r in one] == [r[:2] for r in two]


@both_backends
def test_rebuilds_scheduled_too_rarely_are_counted_as_dangerous(backend: str) -> None:
    """Hot atoms and a thin skin: a list rebuilt every 50 steps goes stale between rebuilds,
    and every late rebuild is counted (LAMMPS's "Dangerous builds")."""
    params = {**NVE, "n_cells": 4, "temperature": 2.0, "steps": 200, "sample_every": 50,
              "skin": 0.1, "rebuild_every": 50}
    late = ckernel.simulate("lj", params, 5, backend=backend)["metadata"]
    assert (late["neighbour_rebuilds"], late["dangerous_rebuilds"]) == (5, 4)
    often = ckernel.simulate("lj", {**params, "skin": 0.6, "rebuild_every": 2}, 5,
                             backend=backend)["metadata"]
    assert often["dangerous_rebuilds"] == 0
