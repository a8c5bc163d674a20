"""Gravitational N-body: Kepler orbit, figure-eight, conservation laws, backend agreement."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import ckernel
from ckernel import nbody
from tests.support.kernels import both_backends, every_kernel, every_variant, running, simd

# Relative orbit with semi-major axis 1, eccentricity 0.5, total mass 1 (G = 1), started at
# pericentre: r_p = a (1 - e), v_p = sqrt(G M (1 + e) / (a (1 - e))), period 2 pi.
ECCENTRICITY = 0.5
KEPLER_PERIOD = 2.0 * math.pi


def kepler_bodies() -> list[dict[str, object]]:
    r_p = 1.0 - ECCENTRICITY
    v_p = math.sqrt((1.0 + ECCENTRICITY) / (1.0 - ECCENTRICITY))
    return [{"mass": 0.5, "position": [r_p / 2, 0.0, 0.0], "velocity": [0.0, v_p / 2, 0.0]},
            {"mass": 0.5, "position": [-r_p / 2, 0.0, 0.0], "velocity": [0.0, -v_p / 2, 0.0]}]


def kepler(steps_per_orbit: int, orbits: int, backend: str) -> dict[str, Any]:
    return ckernel.simulate("nbody", {"bodies": kepler_bodies(), "softening": 0.0,
                                      "dt": KEPLER_PERIOD / steps_per_orbit,
                                      "steps": steps_per_orbit * orbits, "sample_every": 5},
                            0, backend=backend)


@both_backends
def test_kepler_orbit_returns_after_one_period(backend: str) -> None:
    summary = kepler(2000, 1, backend)["summary"]
    assert summary["return_distance"] < 2e-3
    # Energy: analytic E = -G m1 m2 / (2 a) = -1/8.
    assert summary["energy_initial"] == pytest.approx(-0.125, rel=1e-14)
    assert summary["max_angular_momentum_change"] < 1e-13 * summary["angular_momentum_initial"]


@every_kernel
def test_kepler_energy_error_is_bounded_and_scales_as_dt_squared(kernel: str) -> None:
    with running(kernel) as backend:
        one = kepler(1000, 1, backend)["summary"]["max_relative_energy_error"]
        ten = kepler(1000, 10, backend)["summary"]
        half_dt = kepler(2000, 1, backend)["summary"]["max_relative_energy_error"]
    # Symplectic leapfrog: the error oscillates with the orbit instead of growing.
    assert ten["max_relative_energy_error"] < 1.1 * one
    assert abs(ten["final_relative_energy_error"]) < 1e-6
    assert 3.0 < one / half_dt < 5.0


@both_backends
def test_figure_eight_returns_after_its_period(backend: str) -> None:
    """Chenciner-Montgomery three-body choreography (Simo's initial conditions)."""
    x1 = [0.97000436, -0.24308753, 0.0]
    v3 = [-0.93240737, -0.86473146, 0.0]
    bodies = [
        {"mass": 1.0, "position": x1, "velocity": [-v3[0] / 2, -v3[1] / 2, 0.0]},
        {"mass": 1.0, "position": [-x1[0], -x1[1], 0.0], "velocity": [-v3[0] / 2, -v3[1] / 2, 0.0]},
        {"mass": 1.0, "position": [0.0, 0.0, 0.0], "velocity": v3},
    ]
    steps = 4000
    summary = ckernel.simulate("nbody", {"bodies": bodies, "softening": 0.0,
                                         "dt": 6.32591398 / steps, "steps": steps,
                                         "sample_every": 40}, 0, backend=backend)["summary"]
    assert summary["return_distance"] < 1e-4
    assert summary["max_relative_energy_error"] < 1e-5


@every_variant
def test_gravity_agrees_between_backends(variant: str) -> None:
    rng = np.random.default_rng(3)
    masses, positions, _ = nbody.plummer_sphere(700, rng)
    masses = masses * rng.uniform(0.5, 1.5, len(masses))
    results = []
    for backend in ("numpy", "cython"):
        _, kernels = ckernel._backend.select(backend)
        acc = np.empty_like(positions)
        with simd(variant):
            results.append((acc, kernels.gravity(positions, masses, 1.3, 0.01, acc)))
    (a_np, u_np), (a_cy, u_cy) = results
    assert np.abs(a_cy - a_np).max() <= 1e-10 * np.abs(a_np).max()
    assert u_cy == pytest.approx(u_np, rel=1e-12)


@both_backends
def test_plummer_sphere_is_in_virial_equilibrium(backend: str) -> None:
    result = ckernel.simulate("nbody", {"n_bodies": 1000, "steps": 20, "sample_every": 10}, 4,
                              backend=backend)
    assert result["summary"]["energy_initial"] == pytest.approx(-0.25, abs=0.02)
    assert result["observables"]["virial_ratio"][0] == pytest.approx(1.0, abs=0.1)
    trajectory = ckernel.simulate("nbody", {"n_bodies": 1000, "steps": 20, "sample_every": 10},
                                  4, backend="numpy" if backend == "cython" else "cython")
    np.testing.assert_allclose(trajectory["observables"]["total_energy"],
                               result["observables"]["total_energy"], rtol=1e-11)


@both_backends
def test_collision_without_softening_raises_simulation_error(backend: str) -> None:
    bodies = [{"mass": 1.0, "position": [0.0, 0.0, 0.0], "velocity": [0.0, 0.0, 0.0]},
              {"mass": 1.0, "position": [0.0, 0.0, 0.0], "velocity": [0.0, 0.0, 0.0]}]
    with pytest.raises(ckernel.SimulationError, match=r"nbody: .*step 0"):
        ckernel.simulate("nbody", {"bodies": bodies, "softening": 0.0, "steps": 5}, 0,
                         backend=backend)
