"""docs/kernels.md cannot drift from the code: its parameter tables and rules are what
``ckernel.params_doc`` generates from the specs, the ranges it states are the ones ``validate``
enforces where the specs' numbers do not say so by themselves, and its example error messages
are the real ones."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

import ckernel
from ckernel import params_doc
from ckernel.params import MAX_BODIES, SPECS

DOC = Path(__file__).resolve().parents[2] / "docs" / "kernels.md"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_the_parameter_tables_are_generated_from_the_specs() -> None:
    text = DOC.read_text(encoding="utf-8")
    current = params_doc.rewrite(text)
    diff = "".join(difflib.unified_diff(text.splitlines(True), current.splitlines(True),
                                        "docs/kernels.md", "generated from the specs"))
    assert current == text, ("the parameter tables of docs/kernels.md differ from "
                             "ckernel/params.py; run python -m ckernel.params_doc "
                             f"docs/kernels.md\n{diff}")


def test_the_check_option_fails_on_a_stale_doc(tmp_path: Path) -> None:
    stale = tmp_path / "kernels.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("| `n_cells` | 5 |",
                                                             "| `n_cells` | 6 |"))
    assert params_doc.main(["--check", str(stale)]) == 1
    assert params_doc.main([str(stale)]) == 0
    assert params_doc.main(["--check", str(stale)]) == 0


def test_every_parameter_has_a_row() -> None:
    tables = params_doc.markdown()
    for kind, spec in SPECS.items():
        for name in spec:
            assert f"| `{name}` |" in params_doc.table(kind), (kind, name)
    assert tables.count("#### `") == len(SPECS)


def _bodies(n: int) -> list[dict[str, object]]:
    return [{"mass": 1.0, "position": [float(i), 0.0, 0.0], "velocity": [0.0, 0.0, 0.0]}
            for i in range(n)]


@pytest.mark.parametrize("count,allowed", [(1, False), (2, True), (MAX_BODIES, True),
                                           (MAX_BODIES + 1, False)])
def test_the_bodies_range_in_the_table_is_the_validated_one(count: int, allowed: bool) -> None:
    assert f"a list of 2 to {MAX_BODIES} " in SPECS["nbody"]["bodies"].allowed()
    params = {"bodies": _bodies(count), "steps": 1}
    if allowed:
        assert ckernel.validate("nbody", params)["n_bodies"] == count
    else:
        with pytest.raises(ckernel.ParamError, match=f"2 to {MAX_BODIES} bodies"):
            ckernel.validate("nbody", params)


@pytest.mark.parametrize("name", ["n_cells", "density"])
def test_the_lattice_parameters_are_refused_with_positions(name: str) -> None:
    assert SPECS["lj"][name].doc.endswith("not with positions")
    with pytest.raises(ckernel.ParamError, match=f"lj.{name}: not allowed with lj.positions"):
        ckernel.validate("lj", {"positions": [[0, 0, 0], [1, 1, 1]], "box": 6, name: 1})


@pytest.mark.parametrize("kind,params", [("lj", {"dt": 0.2}), ("lj", {"n_cells": 2})])
def test_the_example_errors_of_the_doc_are_the_real_ones(kind: str, params: dict[str, object],
                                                         ) -> None:
    with pytest.raises(ckernel.ParamError) as error:
        ckernel.validate(kind, params)
    assert f"`{error.value}`" in _one_line(DOC.read_text(encoding="utf-8"))
