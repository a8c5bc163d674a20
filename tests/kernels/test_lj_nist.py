"""Lennard-Jones energies and virials against NIST SRSW reference values and LAMMPS's
bench/in.lj step 0, on the numpy backend and every compiled SIMD variant."""

from __future__ import annotations

import numpy as np
import pytest

import ckernel
from ckernel import lj
from tests.support.kernels import every_kernel, load_xyz, running

# file: (Upair rc=3, Wpair rc=3, ULRC rc=3, Upair rc=4, ULRC rc=4, U LFS rc=3, W LFS rc=3),
# from tests/data/nist-lj/README.md (NIST's published five significant figures).
NIST = {
    "lj-1.xyz": (-4.3515e03, -5.6867e02, -1.9849e02, -4.4675e03, -8.3769e01,
                 -3.8709e03, 3.1754e02),
    "lj-2.xyz": (-6.9000e02, -5.6846e02, -2.4230e01, -7.0460e02, -1.0226e01,
                 -6.2012e02, -4.4533e02),
    "lj-3.xyz": (-1.1467e03, -1.1649e03, -4.9622e01, -1.1754e03, -2.0942e01,
                 -1.0210e03, -9.3578e02),
    "lj-4.xyz": (-1.6790e01, -4.6249e01, -5.4517e-01, -1.7060e01, -2.3008e-01,
                 -1.5001e01, -4.3096e01),
}


def published(value: float) -> float:
    """``value`` rounded to NIST's published precision (five significant figures)."""
    return float(f"{value:.4e}")


@every_kernel
@pytest.mark.parametrize("name", sorted(NIST))
def test_nist_truncated_energies_and_virial(name: str, kernel: str) -> None:
    u3, w3, _, u4, _, _, _ = NIST[name]
    positions, box = load_xyz(name)
    with running(kernel) as backend:
        u, w = lj.energy_virial(positions, box, 3.0, "truncated", backend=backend)
        assert (published(u), published(w)) == (u3, w3)
        u, _ = lj.energy_virial(positions, box, 4.0, "truncated", backend=backend)
    assert published(u) == u4


@every_kernel
@pytest.mark.parametrize("name", sorted(NIST))
def test_nist_linear_force_shifted(name: str, kernel: str) -> None:
    *_, u_lfs, w_lfs = NIST[name]
    positions, box = load_xyz(name)
    with running(kernel) as backend:
        u, w = lj.energy_virial(positions, box, 3.0, "force_shifted", backend=backend)
    assert (published(u), published(w)) == (u_lfs, w_lfs)


LAMMPS_BENCH = {"n_cells": 20, "density": 0.8442, "temperature": 1.44, "rc": 2.5,
                "potential": "truncated", "skin": 0.3, "rebuild_every": 20, "dt": 0.005,
                "steps": 1, "sample_every": 1}
"""LAMMPS's bench/in.lj (32,000 atoms), for one step."""


@every_kernel
def test_lammps_bench_step_zero(kernel: str) -> None:
    """LAMMPS's log of bench/in.lj at step 0: E_pair = -6.7733681, press = -5.0197073 (the
    pressure holds at T = 1.44 whatever the velocities, which LAMMPS draws differently)."""
    with running(kernel) as backend:
        result = ckernel.simulate("lj", LAMMPS_BENCH, 87287, backend=backend)
    observables = result["observables"]
    assert round(observables["potential_energy"][0], 7) == -6.7733681
    assert round(observables["pressure"][0], 7) == -5.0197073


@pytest.mark.parametrize("name", sorted(NIST))
def test_nist_tail_corrections(name: str) -> None:
    _, _, tail3, _, tail4, _, _ = NIST[name]
    positions, box = load_xyz(name)
    assert published(lj.tail_correction(len(positions), box, 3.0)) == tail3
    assert published(lj.tail_correction(len(positions), box, 4.0)) == tail4


def brute_force(positions: np.ndarray, box: float, rc: float) -> tuple[float, float]:
    """All pairs, minimum image, plain loops over i: a third, independent implementation."""
    u = w = 0.0
    for i in range(len(positions) - 1):
        d = positions[i] - positions[i + 1:]
        d -= box * np.round(d / box)
        r2 = (d * d).sum(axis=1)
        r2 = r2[r2 < rc * rc]
        u += float((4.0 * (r2**-6 - r2**-3)).sum())
        w += float((24.0 * (2.0 * r2**-6 - r2**-3)).sum())
    return u, w


@every_kernel
@pytest.mark.parametrize("n_cells,rc", [(1, 0.85), (2, 1.7), (3, 2.5)])
def test_small_boxes_match_all_pairs(n_cells: int, rc: float, kernel: str) -> None:
    """Boxes with one, two and three cells per side (where adjacent cells repeat)."""
    positions, box = lj.fcc_lattice(n_cells, 0.8)
    rng = np.random.default_rng(7)
    positions = positions + rng.uniform(-0.15, 0.15, positions.shape)
    with running(kernel) as backend:
        u, w = lj.energy_virial(positions, box, rc, backend=backend)
    u_ref, w_ref = brute_force(positions, box, rc)
    assert u == pytest.approx(u_ref, rel=1e-12)
    assert w == pytest.approx(w_ref, rel=1e-12)


def test_fcc_lattice_geometry() -> None:
    positions, box = lj.fcc_lattice(3, 0.8442)
    assert positions.shape == (108, 3)
    assert 108 / box**3 == pytest.approx(0.8442, rel=1e-14)
    d = positions[:, None, :] - positions[None, :, :]
    d -= box * np.round(d / box)
    r = np.sqrt((d * d).sum(axis=2))[np.triu_indices(108, 1)]
    # Every fcc site has 12 nearest neighbours at a / sqrt(2).
    a = box / 3
    assert r.min() == pytest.approx(a / np.sqrt(2.0), rel=1e-12)
    assert np.isclose(r, a / np.sqrt(2.0)).sum() == 108 * 12 // 2


@every_kernel
def test_dilute_boxes_match_all_pairs(kernel: str) -> None:
    """Few atoms in a large box: the compiled list caps its cells near the atom count."""
    rng = np.random.default_rng(8)
    for n, box in ((60, 12.0), (40, 200.0)):
        positions = rng.uniform(0.0, box, (n, 3))
        # A tight cluster, so that some pairs are within the cutoff.
        positions[: n // 2] = 0.5 * box + rng.uniform(-2.0, 2.0, (n // 2, 3))
        with running(kernel) as backend:
            u, w = lj.energy_virial(positions, box, 2.5, backend=backend)
        u_ref, w_ref = brute_force(positions, box, 2.5)
        assert u == pytest.approx(u_ref, rel=1e-12)
        assert w == pytest.approx(w_ref, rel=1e-12)


def test_two_atoms_in_the_largest_box_need_little_memory() -> None:
    """Two atoms 1.5 apart in a box of 1,000 (valid input): no cell grid of the box's size."""
    positions = [[500.0, 500.0, 500.0], [501.5, 500.0, 500.0]]
    u, _ = lj.energy_virial(positions, 1000.0, 2.5, backend="cython")
    assert u == pytest.approx(4.0 * (1.5**-12 - 1.5**-6), rel=1e-14)
