"""Sweep points: a run's tasks grouped by kind and params (the replicas of a point
together), with the count, mean and standard error of each summary value.

Pure Python (no numpy, no pandas): ``simctl results --aggregate``, the plots and
``simctl.api`` all use it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simctl.ledger import TaskState


@dataclass(frozen=True)
class Stat:
    """One summary value over the done replicas of a point: ``sem`` is the standard error
    of the mean (sample standard deviation / sqrt(n)), None with a single replica."""

    n: int
    mean: float
    sem: float | None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "sem": self.sem}


@dataclass(frozen=True)
class Point:
    """One sweep point: a kind and its validated params, the tasks that ran it."""

    kind: str
    params: dict[str, Any]
    tasks: list[str]
    """Every task of the point (its replicas), in the run's order."""
    done: int
    failed: int
    summary: dict[str, Stat] = field(default_factory=dict)
    """Summary name -> statistics over the done tasks (names in order of first appearance)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "tasks": self.tasks,
                "done": self.done, "failed": self.failed,
                "summary": {name: s.to_json() for name, s in self.summary.items()}}


def stat(values: list[float]) -> Stat:
    """Count, mean and standard error of ``values`` (at least one)."""
    n = len(values)
    mean = math.fsum(values) / n
    sem = statistics.stdev(values) / math.sqrt(n) if n > 1 else None
    return Stat(n, mean, sem)


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Group task rows (of :meth:`simctl.ledger.Ledger.task_rows`) into sweep points, in
    order of each point's first task. Only done tasks count in the statistics."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        key = json.dumps({"kind": row["kind"], "params": row["params"]}, sort_keys=True)
        groups.setdefault(key, []).append(row)
    points = []
    for members in groups.values():
        done = [r for r in members if r["state"] == TaskState.DONE.value]
        names: dict[str, None] = {}
        for r in done:
            names.update(dict.fromkeys(r["summary"]))
        summary = {name: stat([float(r["summary"][name]) for r in done if name in r["summary"]])
                   for name in names}
        points.append(Point(members[0]["kind"], dict(members[0]["params"]),
                            [r["task_id"] for r in members], len(done),
                            sum(r["state"] == TaskState.FAILED.value for r in members), summary))
    return points


def swept(points: Iterable[Point]) -> list[str]:
    """The params that differ between points of the same kind (the sweep's axes), in the
    order the params are declared."""
    by_kind: dict[str, list[Point]] = {}
    for p in points:
        by_kind.setdefault(p.kind, []).append(p)
    names: dict[str, None] = {}
    for same in by_kind.values():
        for name in same[0].params:
            values = {json.dumps(p.params.get(name), sort_keys=True) for p in same}
            if len(values) > 1:
                names[name] = None
    return list(names)
