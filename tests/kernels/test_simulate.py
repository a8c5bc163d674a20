"""The public API: result shape, progress, seeds, backends, the sleep kind, import fallbacks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import ckernel
from tests.support.kernels import both_backends

SMALL: dict[str, dict[str, Any]] = {
    "lj": {"n_cells": 3, "steps": 30, "sample_every": 10},
    "nbody": {"n_bodies": 64, "steps": 30, "sample_every": 10},
    "brownian": {"n_particles": 50, "steps": 30, "sample_every": 10},
    "sleep": {"seconds": 0.05},
}


def test_kinds_are_the_documented_ones() -> None:
    assert ckernel.KINDS == ("lj", "nbody", "brownian", "sleep")


@both_backends
@pytest.mark.parametrize("kind", sorted(SMALL))
def test_result_is_json_with_the_documented_keys(kind: str, backend: str) -> None:
    result = ckernel.simulate(kind, SMALL[kind], 12, backend=backend)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert set(result) == {"kind", "params", "seed", "artifacts", "observables", "summary",
                           "metadata"}
    assert result["artifacts"] == []  # no artifact folder: nothing written
    assert result["params"] == ckernel.validate(kind, SMALL[kind])
    assert result["seed"] == 12
    times = result["observables"]["t"]
    for values in result["observables"].values():
        assert len(values) == len(times)
        assert all(type(x) is float and math.isfinite(x) for x in values)
    assert all(type(x) is float for x in result["summary"].values())
    meta = result["metadata"]
    for key in ("package_version", "numpy_version", "backend", "elapsed_s", "atom_steps_per_s",
                "threads"):
        assert key in meta
    assert meta["backend"] == ("python" if kind == "sleep" else backend)


@pytest.mark.parametrize("kind", ["lj", "nbody", "brownian"])
def test_same_seed_same_result_other_seed_other_result(kind: str) -> None:
    a = ckernel.simulate(kind, SMALL[kind], 5)
    b = ckernel.simulate(kind, SMALL[kind], 5)
    c = ckernel.simulate(kind, SMALL[kind], 6)
    assert (a["observables"], a["summary"]) == (b["observables"], b["summary"])
    assert a["observables"] != c["observables"]


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_progress_is_called_at_most_about_100_times(kind: str) -> None:
    params = {**SMALL[kind], "steps": 1234} if kind != "sleep" else SMALL[kind]
    seen: list[float] = []
    ckernel.simulate(kind, params, 1, progress=seen.append)
    assert 1 <= len(seen) <= 101
    assert seen == sorted(seen)
    assert seen[-1] == 1.0


def test_sleep_fails_on_purpose() -> None:
    with pytest.raises(ckernel.SimulationError, match="on purpose"):
        ckernel.simulate("sleep", {"seconds": 0.0, "fail": True}, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_bad_seed_is_a_param_error(seed: object) -> None:
    with pytest.raises(ckernel.ParamError, match="seed"):
        ckernel.simulate("sleep", {}, seed)  # type: ignore[arg-type]


def test_unknown_backend_is_a_param_error() -> None:
    with pytest.raises(ckernel.ParamError, match="backend = 'fortran'"):
        ckernel.simulate("lj", SMALL["lj"], 0, backend="fortran")


BLOCK_EXTENSION = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'ckernel._kernels':\n"
    "            raise ImportError('blocked for the test')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-W", "always", "-c", code],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_without_the_extension_ckernel_runs_on_numpy_with_a_warning() -> None:
    done = run_python(BLOCK_EXTENSION + "import ckernel\n"
                      "r = ckernel.simulate('lj', {'n_cells': 3, 'steps': 5}, 1)\n"
                      "print(r['metadata']['backend'])\n"
                      "ckernel.simulate('lj', {'n_cells': 3, 'steps': 5}, 1, backend='cython')\n",
                      CKERNEL_REQUIRE_EXT="0")
    assert "compiled extension not available" in done.stderr
    assert done.stdout.strip() == "numpy"
    assert "ParamError: backend = 'cython'" in done.stderr


def test_required_extension_missing_is_an_import_error_where_simulations_run() -> None:
    done = run_python(BLOCK_EXTENSION + "import ckernel\n"
                      "print(ckernel.validate('lj', {'n_cells': 3})['n_cells'])\n"
                      "ckernel.simulate('lj', {'n_cells': 3, 'steps': 5}, 1)\n",
                      CKERNEL_REQUIRE_EXT="1")
    assert done.stdout.strip() == "3", "validation needs no extension"
    assert done.returncode != 0
    assert "ImportError: ckernel: the compiled extension" in done.stderr


@pytest.mark.parametrize("kind,params,names", [
    ("lj", {"n_cells": 3, "steps": 200, "sample_every": 5},
     ("potential_energy", "kinetic_energy", "total_energy", "temperature", "pressure")),
    ("nbody", {"n_bodies": 64, "steps": 200, "sample_every": 5}, ("virial_ratio",)),
    ("brownian", {"n_particles": 50, "trap_k": 1.0, "steps": 200, "sample_every": 5},
     ("x2", "temperature")),
])
def test_equilibration_steps_are_left_out_of_the_summary(kind: str, params: dict[str, Any],
                                                         names: tuple[str, ...]) -> None:
    from ckernel._run import sem

    whole = ckernel.simulate(kind, params, 3)
    cut = ckernel.simulate(kind, {**params, "equilibration_steps": 52}, 3)
    assert cut["observables"] == whole["observables"], "the observables keep every sample"
    t = np.array(cut["observables"]["t"])
    kept = t >= 52 * cut["params"]["dt"]
    assert kept.sum() == 30  # samples at steps 55, 60, ..., 200
    for name in names:
        values = np.array(cut["observables"][name])
        assert whole["summary"][f"mean_{name}"] == pytest.approx(values.mean(), rel=1e-12)
        assert cut["summary"][f"mean_{name}"] == pytest.approx(values[kept].mean(), rel=1e-12)
        assert cut["summary"][f"sem_{name}"] == pytest.approx(sem(values[kept]), rel=1e-12)
        assert cut["summary"][f"mean_{name}"] != whole["summary"][f"mean_{name}"]
