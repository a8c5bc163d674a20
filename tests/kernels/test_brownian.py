"""Brownian particles: Maxwell-Boltzmann velocities, free diffusion, harmonic trap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import ckernel
from tests.support.kernels import both_backends

BATH = {"temperature": 1.5, "gamma": 2.0, "mass": 1.5}


@both_backends
def test_velocities_follow_maxwell_boltzmann(backend: str) -> None:
    record, _, params = ckernel.run("brownian", {**BATH, "n_particles": 3000, "dt": 0.05,
                                                 "steps": 400, "sample_every": 50}, 2,
                                    backend=backend)
    sigma = np.sqrt(params["temperature"] / params["mass"])
    components = record.state["velocities"].ravel() / sigma
    assert stats.kstest(components, "norm").pvalue > 0.01
    speeds = np.linalg.norm(record.state["velocities"], axis=1) / sigma
    assert stats.kstest(speeds, stats.maxwell.cdf).pvalue > 0.01


@both_backends
@pytest.mark.parametrize("overdamped", [False, True])
def test_free_diffusion_coefficient(overdamped: bool, backend: str) -> None:
    summary = ckernel.simulate("brownian", {**BATH, "n_particles": 4000, "dt": 0.02,
                                            "steps": 2500, "sample_every": 25,
                                            "overdamped": overdamped}, 3,
                               backend=backend)["summary"]
    expected = BATH["temperature"] / (BATH["mass"] * BATH["gamma"])
    assert summary["diffusion_expected"] == pytest.approx(expected)
    assert summary["diffusion_coefficient"] == pytest.approx(expected, rel=0.05)


@both_backends
@pytest.mark.parametrize("overdamped", [False, True])
def test_trap_equipartition(overdamped: bool, backend: str) -> None:
    summary = ckernel.simulate("brownian", {**BATH, "n_particles": 2000, "trap_k": 4.0,
                                            "dt": 0.02, "steps": 1000, "sample_every": 10,
                                            "overdamped": overdamped}, 4,
                               backend=backend)["summary"]
    assert summary["x2_expected"] == pytest.approx(1.5 / 4.0)
    assert summary["mean_x2"] == pytest.approx(1.5 / 4.0, rel=0.03)
    if not overdamped:
        assert summary["mean_temperature"] == pytest.approx(1.5, rel=0.03)


def test_backends_agree_to_round_off() -> None:
    params = {**BATH, "n_particles": 200, "trap_k": 1.0, "dt": 0.05, "steps": 200}
    a = ckernel.simulate("brownian", params, 6, backend="numpy")
    b = ckernel.simulate("brownian", params, 6, backend="cython")
    for name, values in a["observables"].items():
        np.testing.assert_allclose(b["observables"][name], values, rtol=1e-12)
