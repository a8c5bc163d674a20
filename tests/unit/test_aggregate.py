"""Sweep points: replicas grouped by kind and params, mean and standard error per summary."""

from __future__ import annotations

import math
import statistics

from simctl.aggregate import aggregate, stat, swept


def row(task: str, params: dict[str, float], summary: dict[str, float],
        state: str = "done", kind: str = "lj") -> dict[str, object]:
    return {"task_id": task, "kind": kind, "params": params, "summary": summary,
            "state": state}


def test_replicas_are_grouped_and_their_statistics_computed() -> None:
    rows = [row("r.0", {"T": 1.0, "n": 3}, {"e": 1.0, "p": 5.0}),
            row("r.1", {"T": 1.0, "n": 3}, {"e": 2.0, "p": 6.0}),
            row("r.2", {"T": 1.0, "n": 3}, {"e": 4.0}),
            row("r.3", {"T": 2.0, "n": 3}, {"e": 7.0}),
            row("r.4", {"T": 2.0, "n": 3}, {}, state="failed"),
            row("r.5", {"seconds": 1.0}, {"seconds": 1.0}, kind="sleep")]
    first, second, sleep = aggregate(rows)
    assert (first.params, first.tasks, first.done, first.failed) == (
        {"T": 1.0, "n": 3}, ["r.0", "r.1", "r.2"], 3, 0)
    assert first.summary["e"].n == 3 and math.isclose(first.summary["e"].mean, 7 / 3)
    assert math.isclose(first.summary["e"].sem, statistics.stdev([1, 2, 4]) / math.sqrt(3))
    assert first.summary["p"].n == 2  # a value missing from one replica counts where present
    assert (second.done, second.failed, second.summary["e"].sem) == (1, 1, None)
    assert sleep.kind == "sleep" and sleep.summary["seconds"].mean == 1.0
    assert swept([first, second, sleep]) == ["T"]
    assert stat([2.0]).to_json() == {"n": 1, "mean": 2.0, "sem": None}
