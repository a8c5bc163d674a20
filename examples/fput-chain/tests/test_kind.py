"""The kind's contract: found through its entry point, validation errors that name the
field, the value and the range, and a spec module that imports without numpy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import simkind
from simkind import ParamError


def test_the_entry_point_installs_the_kind(chain: simkind.LoadedKind) -> None:
    registry = simkind.discover()
    assert "chain" in registry.names()
    assert not [e for e in registry.errors if e.package == "particle-sim-fput-chain"]
    assert chain.package == "particle-sim-fput-chain"
    assert chain.version == chain.package_version == "1.0.0"  # no own version: the package's
    assert chain.entry_point == "chain = fput_chain.kind:CHAIN"


@pytest.mark.parametrize("given", [{}, {"n_particles": 10, "init": "mode", "mode": 5},
                                   {"mode": 3, "alpha": 0.25}])
def test_validation_fills_defaults_and_is_idempotent(chain: simkind.LoadedKind,
                                                     given: dict[str, object]) -> None:
    # The worker validates the stored params again, with every field then given.
    params = chain.kind.validate(given)
    assert set(params) == set(chain.kind.params)
    assert chain.kind.validate(params) == params
    assert chain.kind.estimate_cost(params) > 0.0


@pytest.mark.parametrize(("params", "message"), [
    ({"n_particles": 3}, r"chain\.n_particles = 3 out of range: must be an integer in "
                         r"\[4, 100000\]"),
    ({"k": 0.0}, r"chain\.k = 0\.0 out of range: must be a number in \(0, 1e\+06\]"),
    ({"init": "chaos"}, r"chain\.init = 'chaos': must be one of random, mode"),
    ({"steps": 2.5}, r"chain\.steps = 2\.5: must be an integer in \[1, 1e\+08\]"),
    ({"colour": "red"}, r"chain: unknown parameter 'colour'"),
    # Cross-field rules: each names the field, its value and the limit it breaks.
    ({"dt": 0.6, "k": 4.0}, r"chain\.dt = 0\.6 out of range: must be below the stability "
                            r"limit sqrt\(mass / k\) = 0\.5"),
    ({"steps": 100_000, "sample_every": 5}, r"chain\.sample_every = 5 gives 20001 samples "
                                            r"for steps = 100000; at most 10001 .* use "
                                            r"sample_every >= 10"),
    ({"n_particles": 10, "init": "mode", "mode": 6},
     r"chain\.mode = 6 out of range: must be at most n_particles / 2 = 5"),
    ({"n_particles": 10, "modes_recorded": 6},
     r"chain\.modes_recorded = 6 out of range: must be at most n_particles / 2 = 5"),
])
def test_validation_errors_name_field_value_and_range(chain: simkind.LoadedKind,
                                                      params: dict[str, object],
                                                      message: str) -> None:
    with pytest.raises(ParamError, match=message):
        chain.kind.validate(params)


def test_the_spec_module_imports_without_numpy() -> None:
    # What simctl does on the main PC: validate with the spec only. numpy is made
    # unimportable before anything else is imported.
    script = ("import sys, json; sys.modules['numpy'] = None\n"
              "from fput_chain.kind import CHAIN\n"
              "params = CHAIN.validate({'n_particles': 64, 'init': 'mode', 'mode': 2})\n"
              "print(json.dumps({'params': params, 'compiled': 'fput_chain._chain' in "
              "sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["params"]["n_particles"] == 64 and not out["compiled"]
