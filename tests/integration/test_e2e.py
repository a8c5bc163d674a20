"""End to end: a sweep over every kind on a local broker with three agents, checked against
``ckernel.simulate`` called here with each task's stored seed; and two runs submitted at once
sharing the workers without any worker holding more tasks than its slots."""

from __future__ import annotations

import time
from typing import Any

import ckernel
from tests.support.procs import Cluster, assert_run_complete, sleep_tasks

# Precedence defaults < params < sweep is exercised end to end: steps come from the
# defaults, temperature from the sweep over the params' value.
DEFAULTS = {"lj": {"steps": 200, "sample_every": 20, "temperature": 2.0}}
SWEEP: list[dict[str, Any]] = [
    {"kind": "lj", "params": {"n_cells": 3, "density": 0.8, "temperature": 1.0, "rc": 2.5},
     "sweep": {"temperature": [0.9, 1.2]}},
    {"kind": "nbody", "params": {"n_bodies": 16, "steps": 200, "sample_every": 20}, "replicas": 2},
    {"kind": "brownian", "params": {"n_particles": 64, "steps": 400, "sample_every": 40},
     "replicas": 2},
    {"kind": "sleep", "params": {"seconds": 0.2}, "replicas": 3},
]
SWEEP_TASKS = 9


def floats(series: dict[str, list[float]]) -> dict[str, list[float]]:
    return {name: [float(x) for x in values] for name, values in series.items()}


def test_example_sweep_results_equal_direct_simulation(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1, "w3": 1})
    tasks = cluster.task_file("e2e-sweep", SWEEP, defaults=DEFAULTS)

    summary = cluster.simctl_json("run", str(tasks), "--json", timeout=120)
    rows = cluster.results(summary["run_id"], "--observables")
    assert_run_complete(summary, rows, SWEEP_TASKS)
    assert summary["duplicates"] == 0, summary
    assert sorted(r["kind"] for r in rows.values()) == sorted(
        [*["lj"] * 2, *["nbody"] * 2, *["brownian"] * 2, *["sleep"] * 3])
    assert len({r["seed"] for r in rows.values()}) == SWEEP_TASKS, "seeds must differ per task"
    assert {r["worker_id"] for r in rows.values()} == {"w1", "w2", "w3"}
    assert all(r["attempts"] == 1 for r in rows.values()), rows
    lj = sorted((r["params"]["temperature"], r["params"]["steps"])
                for r in rows.values() if r["kind"] == "lj")
    assert lj == [(0.9, 200), (1.2, 200)], lj

    for task_id, row in rows.items():
        expected = ckernel.simulate(row["kind"], row["params"], row["seed"])
        assert row["summary"] == expected["summary"], task_id
        assert floats(row["observables"]) == floats(expected["observables"]), task_id


def test_two_runs_at_once_are_both_served_within_slots(cluster: Cluster) -> None:
    slots = {"w1": 1, "w2": 2}
    cluster.start_agents(slots)
    first = cluster.task_file("first", sleep_tasks(6, 0.3))
    second = cluster.task_file("second", sleep_tasks(6, 0.3))
    runs = [cluster.start_simctl(f"simctl-run-{n}", "run", str(f), "--json", "--quiet")
            for n, f in (("first", first), ("second", second))]

    # Sample every agent's own view (HTTP /ping) during the runs; the watcher also keeps the
    # largest running set each agent ever announced in its status.
    peak = dict.fromkeys(slots, 0)
    deadline = time.monotonic() + 90
    while any(run.alive for run in runs):
        assert time.monotonic() < deadline, "runs did not finish within 90 s"
        for worker_id in slots:
            running = cluster.http_ping(worker_id)["running_tasks"]
            peak[worker_id] = max(peak[worker_id], len(running))
        time.sleep(0.02)

    summaries = []
    for run in runs:
        assert run.wait(5) == 0, run.describe()
        summaries.append(run.json())
    assert summaries[0]["run_id"] != summaries[1]["run_id"]
    for summary in summaries:
        assert_run_complete(summary, cluster.results(summary["run_id"]), 6)
    for worker_id, n in slots.items():
        assert peak[worker_id] <= n, (worker_id, peak)
        assert cluster.watcher.max_running[worker_id] <= n, cluster.watcher.max_running
    # The bound is not vacuous: the two-slot agent did run two tasks at once.
    assert cluster.watcher.max_running["w2"] == 2, cluster.watcher.max_running
