"""The SIMD variants of the compiled pair loops: choosing one, reporting it, and results that
are bit for bit the same whichever runs (a checkpoint may resume on another CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckernel
from ckernel import _backend, lj, nbody
from tests.support.kernels import SIMD_VARIANTS, every_variant, simd

pytestmark = pytest.mark.skipif(_backend.compiled is None, reason="needs the compiled kernels")

RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    # The in.lj settings on a smaller lattice: truncated, fixed rebuild interval.
    "lj-nve-truncated": ("lj", {"n_cells": 5, "density": 0.8442, "temperature": 1.44,
                                "potential": "truncated", "rebuild_every": 20, "steps": 200,
                                "sample_every": 10}),
    "lj-nvt-force-shifted": ("lj", {"n_cells": 4, "ensemble": "nvt", "potential":
                                    "force_shifted", "steps": 100, "sample_every": 5}),
    # Two cells per side: the list is rebuilt every step and pairs meet several images.
    "lj-small-box": ("lj", {"n_cells": 2, "density": 0.9, "rc": 1.6, "skin": 0.4,
                            "steps": 50, "sample_every": 5}),
    # 301 bodies: rows of every length modulo the eight accumulator lanes.
    "nbody-plummer": ("nbody", {"n_bodies": 301, "steps": 40, "sample_every": 4}),
}


def run_everything(kind: str, params: dict[str, Any]) -> tuple[Any, ...]:
    record, _, _ = ckernel.run(kind, params, 17, backend="cython")
    return (record.observables, record.summary,
            {name: array.tobytes() for name, array in record.state.items()})


def test_variants_are_known_and_the_widest_runs_by_default() -> None:
    compiled = _backend.compiled
    assert compiled is not None
    assert SIMD_VARIANTS[0] == "portable"
    assert set(SIMD_VARIANTS) <= set(compiled.SIMD_VARIANTS)
    if os.environ.get(_backend.SIMD_ENV, "auto") == "auto":
        assert compiled.simd_variant() == SIMD_VARIANTS[-1]


def test_an_unavailable_variant_is_refused_and_nothing_changes() -> None:
    compiled = _backend.compiled
    assert compiled is not None
    before = compiled.simd_variant()
    with pytest.raises(ValueError, match="'sse9' is not available"):
        compiled.use_simd("sse9")
    assert compiled.simd_variant() == before


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_variant_gives_bit_identical_results(name: str) -> None:
    """Observables, summary and the final positions and velocities, compared exactly."""
    kind, params = RUNS[name]
    results = {}
    for variant in SIMD_VARIANTS:
        with simd(variant):
            results[variant] = run_everything(kind, params)
    reference = results["portable"]
    for variant, result in results.items():
        assert result == reference, f"{variant} differs from portable"


def test_every_variant_gives_bit_identical_forces_on_random_positions() -> None:
    """No lattice: close pairs, forces over many orders of magnitude, all three potentials."""
    rng = np.random.default_rng(21)
    positions = rng.uniform(0.0, 9.0, (500, 3))
    masses, bodies, _ = nbody.plummer_sphere(333, rng)
    results: dict[str, list[bytes]] = {}
    for variant in SIMD_VARIANTS:
        out = []
        with simd(variant):
            for potential in lj.POTENTIAL_CODES:
                f, u, w = lj.forces(positions, 9.0, 2.5, potential, backend="cython")
                out += [f.tobytes(), np.array([u, w]).tobytes()]
            _, kernels = _backend.select("cython")
            acc = np.empty_like(bodies)
            u = kernels.gravity(bodies, masses, 1.0, 0.01, acc)
            out += [acc.tobytes(), np.array(u).tobytes()]
        results[variant] = out
    for variant, out in results.items():
        assert out == results["portable"], f"{variant} differs from portable"


@every_variant
def test_metadata_names_the_variant_that_ran(variant: str) -> None:
    with simd(variant):
        for kind in ("lj", "nbody"):
            meta = ckernel.simulate(kind, RUNS[f"{kind}-plummer" if kind == "nbody"
                                                 else "lj-small-box"][1], 1)["metadata"]
            assert meta["simd_variant"] == variant
        meta = ckernel.simulate("brownian", {"n_particles": 10, "steps": 10}, 1)["metadata"]
        assert meta["simd_variant"] == "portable"  # baseline loops, not dispatched
    numpy_meta = ckernel.simulate("nbody", {"n_bodies": 8, "steps": 2}, 1,
                                  backend="numpy")["metadata"]
    assert numpy_meta["simd_variant"] == "none"


def test_the_environment_variable_chooses_the_variant() -> None:
    script = ("import json, ckernel\n"
              "print(json.dumps(ckernel.simulate('nbody', {'n_bodies': 20, 'steps': 4}, 1)"
              "['metadata']['simd_variant']))\n")
    env = {**os.environ, _backend.SIMD_ENV: "portable"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True, timeout=120)
    assert json.loads(done.stdout) == "portable"
    env[_backend.SIMD_ENV] = "sse9"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "CKERNEL_SIMD=sse9" in done.stderr


def test_the_portable_only_build_compiles_cleanly(tmp_path: Path) -> None:
    """What a non-x86 build compiles (the AVX2 and AVX-512 variants left out), checked here
    with -DCK_PORTABLE_ONLY: C99, no warnings, no AVX symbol."""
    compiler = shutil.which(sysconfig.get_config_var("CC").split()[0]) or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    source = Path(ckernel.__file__).parent / "_simd.c"
    obj = tmp_path / "simd.o"
    done = subprocess.run([compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
                           "-ffp-contract=off", "-DCK_PORTABLE_ONLY", "-c", str(source),
                           "-o", str(obj)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True,
                             timeout=60).stdout if shutil.which("nm") else ""
    assert "avx" not in symbols
    assert "lj_portable" in symbols or not symbols
