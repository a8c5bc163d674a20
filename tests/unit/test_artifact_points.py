"""Where a task sits in its run's sweep, as ``simctl artifacts`` shows it and an export names
its folder: the params that vary, the replica when a point repeats, the kind when the run
has several; and naming a task by its id or index."""

from __future__ import annotations

from typing import Any

import pytest

from simctl.artifacts import TaskPoint, resolve_task, task_points
from simctl.errors import InputError

RUN = "20260101-000000-abcdef"


def rows(*tasks: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Task rows of one run: (kind, params) per task, in index order."""
    return [{"task_id": f"{RUN}.{i}", "index": i, "kind": kind, "params": params,
             "state": "done", "summary": {}} for i, (kind, params) in enumerate(tasks)]


def test_swept_params_and_replicas_name_the_folder() -> None:
    points = task_points(rows(
        ("lj", {"temperature": 1.2, "density": 0.8, "steps": 100}),
        ("lj", {"temperature": 1.2, "density": 0.8, "steps": 100}),
        ("lj", {"temperature": 2.0, "density": 0.8, "steps": 100}),
        ("lj", {"temperature": 2.0, "density": 0.9, "steps": 100}),
    ))
    second = points[f"{RUN}.1"]
    assert second == TaskPoint(f"{RUN}.1", 1, "lj", {"temperature": 1.2, "density": 0.8}, 2)
    assert second.label() == "temperature=1.2 density=0.8 r2"
    assert second.folder(4, with_kind=False) == "0001_temperature=1.2_density=0.8_r2"
    assert points[f"{RUN}.3"].replica is None
    assert points[f"{RUN}.3"].folder(5, with_kind=True) == "00003_lj_temperature=2_density=0.9"


def test_nothing_varies_and_nothing_repeats() -> None:
    only = task_points(rows(("sleep", {"seconds": 1.0})))[f"{RUN}.0"]
    assert only.label() == "-"
    assert only.folder(4, with_kind=False) == "0000"


def test_folder_names_hold_no_separators_and_stay_short() -> None:
    points = task_points(rows(("k", {"path": "a/b c", "xs": [1, 2]}),
                              ("k", {"path": "x" * 300, "xs": [3]})))
    first = points[f"{RUN}.0"].folder(4, with_kind=False)
    assert first == "0000_path=a_b_c_xs=_1,2_"
    long = points[f"{RUN}.1"].folder(4, with_kind=False)
    assert "/" not in long and len(long) <= 200
    assert long.startswith("0001_path=" + "x" * 40 + "_xs=")


def test_points_of_different_kinds_are_apart() -> None:
    points = task_points(rows(("sleep", {"seconds": 1.0}), ("lj", {"seconds": 1.0})))
    assert points[f"{RUN}.0"].replica is None and points[f"{RUN}.1"].replica is None
    assert points[f"{RUN}.1"].folder(4, with_kind=True) == "0001_lj"


def test_a_task_is_named_by_its_id_or_its_index() -> None:
    ids = {f"{RUN}.0", f"{RUN}.12"}
    assert resolve_task(RUN, "12", ids) == f"{RUN}.12"
    assert resolve_task(RUN, f"{RUN}.0", ids) == f"{RUN}.0"
    with pytest.raises(InputError, match=f"run {RUN} has no task '3'"):
        resolve_task(RUN, "3", ids)
    with pytest.raises(InputError, match="has no task"):
        resolve_task(RUN, "other.0", ids)
