"""ckernel.validate: defaults, ranges, size bounds, and errors that name the field."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ckernel
from ckernel.params import MAX_SAMPLES, SPECS


@pytest.mark.parametrize("kind", ckernel.KINDS)
def test_defaults_are_filled_and_validation_is_idempotent(kind: str) -> None:
    params = ckernel.validate(kind, {})
    assert set(params) == set(SPECS[kind])
    assert ckernel.validate(kind, params) == params


@pytest.mark.parametrize("kind,params,message", [
    ("md", {}, "unknown kind 'md'"),
    ("lj", [], "must be a mapping"),
    ("lj", {"n_cell": 4}, "unknown parameter 'n_cell'"),
    ("lj", {"dt": "0.005"}, r"lj.dt = '0.005': must be a number in \(0, 0.05\]"),
    ("lj", {"dt": 0.0}, r"lj.dt = 0.0 out of range: must be a number in \(0, 0.05\]"),
    ("lj", {"steps": 2.5}, r"lj.steps = 2.5: must be an integer in \[1, 1e\+08\]"),
    ("lj", {"steps": True}, "lj.steps = true"),
    ("lj", {"n_cells": 41}, r"lj.n_cells = 41 out of range: must be an integer in \[1, 40\]"),
    ("lj", {"density": float("nan")}, r"lj.density = \.nan out of range"),
    ("lj", {"potential": "cut"}, "lj.potential = 'cut': must be one of truncated, shifted"),
    ("lj", {"ensemble": "npt"}, "lj.ensemble = 'npt'"),
    ("lj", {"n_cells": 2}, r"lj.rc = 2.5 out of range: must be at most half the box"),
    ("lj", {"box": 5.0}, "lj.box: only allowed together with lj.positions"),
    ("lj", {"positions": [[0, 0, 0], [1, 1, 1]]}, "lj.box: required with lj.positions"),
    ("lj", {"positions": [[0, 0, 0], [1, 1]], "box": 6}, r"lj.positions\[1\] = \[1, 1\]"),
    ("lj", {"positions": [[0, 0, 0], [1, 1, 1]], "box": 6, "n_cells": 3}, "lj.n_cells: not"),
    ("lj", {"positions": [[0, 0, 0], [1, 1, 1]], "box": 6, "velocities": [[0, 0, 0]]},
     "lj.velocities: 1 rows"),
    ("lj", {"steps": 100_000, "sample_every": 1}, f"at most {MAX_SAMPLES} are allowed"),
    ("lj", {"n_cells": 40, "rc": 6.0, "skin": 2.0}, "neighbour pairs, above the bound"),
    ("lj", {"equilibration_steps": -1}, r"lj.equilibration_steps = -1 out of range"),
    ("lj", {"steps": 100, "sample_every": 40, "equilibration_steps": 81},
     r"lj.equilibration_steps = 81 leaves none of the samples \(taken every 40 of 100 steps\)"),
    ("nbody", {"steps": 100, "equilibration_steps": 101}, "leaves none of the samples"),
    ("brownian", {"steps": 100, "equilibration_steps": 500}, "leaves none of the samples"),
    ("nbody", {"n_bodies": 20_001}, r"nbody.n_bodies = 20001 out of range"),
    ("nbody", {"G": 0}, r"nbody.G = 0.0 out of range: must be a number in \(0, 1e\+06\]"),
    ("nbody", {"bodies": [{"mass": 1, "position": [0, 0, 0], "velocity": [0, 0, 0]}]},
     "nbody.bodies: must be a list of 2 to 20000 bodies, got 1"),
    ("nbody", {"bodies": [{"mass": -1, "position": [0, 0, 0], "velocity": [0, 0, 0]}] * 2},
     r"nbody.bodies\[0\].mass = -1.0 out of range"),
    ("nbody", {"bodies": [{"mass": 1, "position": [0, 0, 0], "velocity": [0, 0]}] * 2},
     r"nbody.bodies\[0\].velocity = \[0, 0\]"),
    ("brownian", {"n_particles": 0}, "brownian.n_particles = 0 out of range"),
    ("brownian", {"overdamped": 1}, "brownian.overdamped = 1: must be true or false"),
    ("brownian", {"trap_k": 100.0, "dt": 0.5}, r"brownian.dt = 0.5 out of range: .*2 sqrt"),
    ("brownian", {"trap_k": 100.0, "overdamped": True, "dt": 0.05},
     "must be below 2 m gamma / trap_k = 0.02"),
    ("sleep", {"seconds": -1}, r"sleep.seconds = -1.0 out of range"),
    ("sleep", {"fail": "yes"}, "sleep.fail = 'yes': must be true or false"),
])
def test_bad_parameters_name_the_field(kind: str, params: object, message: str) -> None:
    with pytest.raises(ckernel.ParamError, match=message):
        ckernel.validate(kind, params)  # type: ignore[arg-type]


def test_param_error_is_a_value_error() -> None:
    assert issubclass(ckernel.ParamError, ValueError)


def test_explicit_positions_mode() -> None:
    params = ckernel.validate("lj", {"positions": [[0, 0, 0], [1, 1, 1]], "box": 6})
    assert params["n_cells"] is None and params["density"] is None
    assert params["positions"] == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


def test_validate_works_without_the_compiled_extension() -> None:
    """simctl validates task files on machines that never built the extension."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ckernel._kernels':\n"
            "            raise ImportError('not built')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import ckernel\n"
            "print(ckernel.validate('lj', {'n_cells': 4})['rc'])\n")
    env = {**os.environ, "CKERNEL_REQUIRE_EXT": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.stdout.strip() == "2.5", done.stderr
