"""The kind contract and registry: discovery through entry points, broken plugins left out
with an error naming the package, validation, and what a run's output becomes."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simkind
from simkind import Context, Field, Kind, Output
from simkind.registry import discover

SPEC = {"n": Field("int", 4, "how many", 1, 10), "x": Field("float", 0.5, "a number", 0.0, 1.0)}


def toy_run(params: dict[str, Any], seed: int, context: Context) -> Output:
    context.progress(0.5)
    return Output({"energy": np.array([1.0, 2.0]), "positions": np.arange(6.0).reshape(3, 2)},
                  {"steps": np.int64(10), "ok": True},
                  {"box": np.array([1.5, 1.5]), "drift": float("nan"), "seed": seed})


TOY = Kind("toy", "a kind for the tests", SPEC, f"{__name__}:toy_run", version="2.1")


class FakeDistribution(metadata.Distribution):
    """Just enough of an installed distribution for an entry point's ``dist``."""

    def __init__(self, name: str, version: str) -> None:
        self._meta = {"Name": name, "Version": version}

    def read_text(self, filename: str) -> str | None:
        if filename == "METADATA":
            return "".join(f"{k}: {v}\n" for k, v in self._meta.items())
        return None

    def locate_file(self, path: Any) -> Any:
        return path


def entry_point(name: str, value: str, package: str = "lab-kinds") -> metadata.EntryPoint:
    ep = metadata.EntryPoint(name, value, simkind.GROUP)
    return ep._for(FakeDistribution(package, "3.0"))  # type: ignore[attr-defined]


def test_the_built_in_kinds_are_registered_through_entry_points() -> None:
    kinds = simkind.installed()
    assert {"lj", "nbody", "brownian", "sleep"} <= set(kinds.names())
    lj = kinds.get("lj")
    assert lj.package == "particle-sim" and lj.entry_point == "lj = ckernel.params:LJ"
    assert lj.version == metadata.version("particle-sim")
    assert kinds.validate("sleep", {"seconds": 1})["seconds"] == 1.0


def test_a_broken_plugin_is_left_out_with_its_package_named() -> None:
    kinds = discover([
        entry_point("toy", f"{__name__}:TOY"),
        entry_point("gone", "no_such_module_here:KIND", "lab-broken"),
        entry_point("notakind", f"{__name__}:SPEC"),
        entry_point("renamed", f"{__name__}:TOY"),
    ])
    assert kinds.names() == ["toy"]
    errors = {e.entry_point: str(e) for e in kinds.errors}
    assert "package lab-broken" in errors["gone = no_such_module_here:KIND"]
    assert "ModuleNotFoundError" in errors["gone = no_such_module_here:KIND"]
    assert "not a simkind.Kind" in errors[f"notakind = {__name__}:SPEC"]
    assert "named 'renamed' but the kind 'toy'" in errors[f"renamed = {__name__}:TOY"]
    with pytest.raises(simkind.UnknownKind, match="package lab-broken declares it but failed"):
        kinds.get("gone")
    with pytest.raises(simkind.UnknownKind, match="unknown kind 'nope': installed kinds are toy"):
        kinds.get("nope")


def test_a_name_declared_by_two_packages_is_used_by_neither() -> None:
    kinds = discover([entry_point("toy", f"{__name__}:TOY", "lab-a"),
                      entry_point("toy", f"{__name__}:TOY", "lab-b")])
    assert kinds.names() == []
    assert all("declared by several packages (lab-a, lab-b)" in str(e) for e in kinds.errors)
    assert len(kinds.errors) == 2


def test_a_malformed_kind_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="name 'Bad Name' must match"):
        Kind("Bad Name", "x", SPEC, "m:f")
    with pytest.raises(ValueError, match="run 'nocolon' must be 'module:function'"):
        Kind("ok", "x", SPEC, "nocolon")
    with pytest.raises(ValueError, match=r"params must map parameter names to simkind\.Field"):
        Kind("ok", "x", {"n": 3}, "m:f")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="a choice field needs choices"):
        Field("choice", "a", "doc")


def test_validation_names_the_field_the_value_and_the_range() -> None:
    assert TOY.validate({"n": 3.0}) == {"n": 3, "x": 0.5}
    with pytest.raises(simkind.ParamError, match=r"toy.n = 11 out of range: must be an "
                                                 r"integer in \[1, 10\]"):
        TOY.validate({"n": 11})
    with pytest.raises(simkind.ParamError, match="toy: unknown parameter 'y': allowed are n, x"):
        TOY.validate({"y": 1})


def test_a_run_becomes_plain_json_with_its_provenance() -> None:
    [loaded] = discover([entry_point("toy", f"{__name__}:TOY")]).kinds.values()
    reports: list[float] = []
    out = simkind.execute(loaded, {"n": 2}, 7, Context("t1", reports.append))
    assert reports == [0.5]
    assert out["observables"] == {"energy": [1.0, 2.0],
                                  "positions": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}
    assert out["summary"] == {"steps": 10.0, "ok": 1.0}
    meta = out["metadata"]
    assert meta["observable_shapes"] == {"positions": [3, 2]}
    assert meta["box"] == [1.5, 1.5] and meta["drift"] == "nan" and meta["seed"] == 7
    assert (meta["kind"], meta["kind_version"], meta["package"], meta["package_version"]) == (
        "toy", "2.1", "lab-kinds", "3.0")
    json.dumps(out, allow_nan=False)  # what the wire needs


def writes_through_the_folder(params: dict[str, Any], seed: int, context: Context) -> Output:
    assert context.artifact_dir is not None
    context.artifact_dir.mkdir()
    (context.artifact_dir / "direct.txt").write_text("written without context.artifact")
    return Output()


def test_the_files_a_run_wrote_are_listed_however_it_reached_its_folder(tmp_path: Path) -> None:
    [loaded] = discover([entry_point("toy", f"{__name__}:TOY")]).kinds.values()
    folder = tmp_path / "attempt"
    out = simkind.execute(loaded, {}, 1, Context(artifact_dir=str(folder)),
                          function=writes_through_the_folder)
    assert [f["name"] for f in out["artifacts"]] == ["direct.txt"]

    def through_artifact(params: dict[str, Any], seed: int, context: Context) -> Output:
        context.artifact("made.txt").write_text("x")
        return Output()

    again = tmp_path / "again"
    out = simkind.execute(loaded, {}, 1, Context(artifact_dir=again), function=through_artifact)
    assert [f["name"] for f in out["artifacts"]] == ["made.txt"]
    assert Context(artifact_dir=str(again)).artifact_dir == again  # text becomes a Path


def test_a_run_that_never_looked_at_its_folder_has_it_not_listed(tmp_path: Path) -> None:
    # A run cannot write where it never looked: the folder is not even looked for, so a
    # file someone else left there (here on purpose) is not taken for the task's.
    [loaded] = discover([entry_point("toy", f"{__name__}:TOY")]).kinds.values()
    (tmp_path / "left-by-someone.txt").write_text("not the task's")
    context = Context(artifact_dir=str(tmp_path), checkpoint_dir=str(tmp_path / "ck"))
    assert context.wants_artifacts and context.folder_written() is None
    out = simkind.execute(loaded, {}, 1, context)
    assert out["artifacts"] == []


def test_a_run_that_returns_non_finite_numbers_or_no_output_fails() -> None:
    [loaded] = discover([entry_point("toy", f"{__name__}:TOY")]).kinds.values()
    with pytest.raises(simkind.SimulationError, match="summary energy is inf"):
        simkind.execute(loaded, {}, 1, function=lambda p, s, c: Output({}, {"energy": 1e400}))
    with pytest.raises(simkind.SimulationError, match=r"returned a dict, not a simkind\.Output"):
        simkind.execute(loaded, {}, 1, function=lambda p, s, c: {})
    with pytest.raises(simkind.ParamError, match=r"seed = -1: must be an integer in \[0, 2\*\*63"):
        simkind.execute(loaded, {}, -1)


def test_validation_imports_neither_numpy_nor_the_extension() -> None:
    code = ("import sys; sys.modules['numpy'] = None; sys.modules['ckernel._kernels'] = None\n"
            "import simkind\n"
            "print(simkind.installed().validate('lj', {'n_cells': 3})['n_cells'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip() == "3", done.stderr
