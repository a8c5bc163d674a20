"""``simctl results --aggregate``, ``--metadata``, ``--format parquet`` and ``simctl.api`` on a
real sweep (a real Mosquitto and real worker agents), each checked against the per-task
results of ``simctl results --json``; and the API reading while a dispatcher writes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
import pyarrow.parquet as pq  # noqa: E402 - after the skip

from simctl import api  # noqa: E402
from tests.support.procs import Cluster, assert_run_complete, sleep_tasks  # noqa: E402

SWEEP: list[dict[str, Any]] = [
    {"kind": "brownian", "params": {"steps": 40, "sample_every": 10},
     "sweep": {"n_particles": [8, 16]}, "replicas": 3},
    {"kind": "sleep", "params": {"seconds": 0.05}},
]
SWEEP_TASKS = 7
TOLERANCE = 1e-12


def expected_points(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sweep points computed here (numpy) from the per-task JSON."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        groups.setdefault(json.dumps([t["kind"], t["params"]], sort_keys=True), []).append(t)
    points = []
    for members in groups.values():
        done = [t for t in members if t["state"] == "done"]
        summary = {}
        for name in done[0]["summary"]:
            values = np.array([t["summary"][name] for t in done], dtype=float)
            sem = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else None
            summary[name] = {"n": len(values), "mean": float(values.mean()), "sem": sem}
        points.append({"kind": members[0]["kind"], "params": members[0]["params"],
                       "tasks": [t["task_id"] for t in members], "done": len(done),
                       "summary": summary})
    return points


def assert_close(got: float | None, want: float | None) -> None:
    if want is None:
        assert got is None or (isinstance(got, float) and math.isnan(got)), got
    else:
        assert got is not None and abs(got - want) <= TOLERANCE * max(1.0, abs(want)), (got, want)


def fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def clean(value: Any) -> Any:
    """A DataFrame or Parquet cell as the JSON would have it (NaN and NA are null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def test_aggregates_parquet_and_api_agree_with_the_per_task_results(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    summary = cluster.simctl_json("run", str(cluster.task_file("sweep", SWEEP)), "--json")
    run_id = summary["run_id"]
    doc = cluster.simctl_json("results", run_id, "--json", "--observables")
    tasks = doc["tasks"]
    assert_run_complete(summary, {t["task_id"]: t for t in tasks}, SWEEP_TASKS)
    want = expected_points(tasks)
    assert [len(p["tasks"]) for p in want] == [3, 3, 1]

    # Per-task metadata: in --json always, in csv with --metadata.
    meta = tasks[0]["metadata"]
    assert meta and meta["package"] == tasks[0]["package"], meta
    rows = list(csv.DictReader(io.StringIO(
        cluster.simctl("results", run_id, "--format", "csv", "--metadata").stdout)))
    assert {f"meta.{name}" for name in meta} <= set(rows[0])
    for name, value in meta.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        assert rows[0][f"meta.{name}"] == text
    plain = cluster.simctl("results", run_id, "--format", "csv").stdout
    assert "meta." not in plain.splitlines()[0]

    # --aggregate --json: the points, checked against the values computed here.
    points = cluster.simctl_json("results", run_id, "--aggregate", "--json")
    assert points["run_id"] == run_id
    assert len(points["points"]) == len(want)
    for got, exp in zip(points["points"], want, strict=True):
        assert (got["kind"], got["params"], got["tasks"], got["done"], got["failed"]) == (
            exp["kind"], exp["params"], exp["tasks"], exp["done"], 0)
        assert set(got["summary"]) == set(exp["summary"])
        for name, s in exp["summary"].items():
            assert got["summary"][name]["n"] == s["n"]
            assert_close(got["summary"][name]["mean"], s["mean"])
            assert_close(got["summary"][name]["sem"], s["sem"])

    # csv: one row per point, param.X and summary.Y.mean|sem|n.
    agg_rows = list(csv.DictReader(io.StringIO(
        cluster.simctl("results", run_id, "--aggregate", "--format", "csv").stdout)))
    assert len(agg_rows) == len(want)
    for row, exp in zip(agg_rows, want, strict=True):
        assert (row["kind"], int(row["total"]), int(row["done"])) == (
            exp["kind"], len(exp["tasks"]), exp["done"])
        for name, value in exp["params"].items():
            assert row[f"param.{name}"] == str(value)
        for name, s in exp["summary"].items():
            assert int(row[f"summary.{name}.n"]) == s["n"]
            assert_close(float(row[f"summary.{name}.mean"]), s["mean"])
            sem = row[f"summary.{name}.sem"]
            assert_close(float(sem) if sem else None, s["sem"])

    # The table: one row per point, the swept param, done/total, mean ± sem.
    text = cluster.simctl("results", run_id, "--aggregate").stdout
    lines = text.splitlines()
    assert "n_particles" in lines[0] and "mean ± sem" in lines[0]
    assert len(lines) == 2 + len(want)
    assert "3/3" in lines[2] and "16" in lines[3]
    assert "sleep" in lines[4] and "1/1" in lines[4] and "± n/a" in lines[4]
    only = cluster.simctl("results", run_id, "--aggregate", "--kind", "sleep").stdout
    assert "brownian" not in only and "sleep" in only

    # Parquet, read back with pyarrow: the same values as the JSON.
    out = cluster.workdir / "results.parquet"
    done = cluster.simctl("results", run_id, "--format", "parquet", "-o", str(out),
                          "--metadata")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert pa.types.is_list(table.schema.field("obs.t").type)
    assert table.schema.field("obs.t").type.value_type == pa.float64()
    for got, task in zip(table.to_pylist(), tasks, strict=True):
        assert (got["task_id"], got["seed"], got["state"]) == (
            task["task_id"], task["seed"], task["state"])
        for name, value in task["params"].items():
            assert got[f"param.{name}"] == value
        for name, value in task["summary"].items():
            assert got[f"summary.{name}"] == value
        for name, series in task["observables"].items():
            assert got[f"obs.{name}"] == series
        assert got["meta.package"] == task["metadata"]["package"]
    agg_out = cluster.workdir / "points.parquet"
    done = cluster.simctl("results", run_id, "--aggregate", "--format", "parquet",
                          "-o", str(agg_out))
    assert done.returncode == 0, done.stderr
    for got, point in zip(pq.read_table(agg_out).to_pylist(), points["points"], strict=True):
        assert (got["kind"], got["total"], got["done"]) == (
            point["kind"], len(point["tasks"]), point["done"])
        for name, value in point["params"].items():
            assert got[f"param.{name}"] == value
        for name, s in point["summary"].items():
            assert [got[f"summary.{name}.{f}"] for f in ("mean", "sem", "n")] == [
                s["mean"], s["sem"], s["n"]]
    refused = cluster.simctl("results", run_id, "--format", "parquet")
    assert refused.returncode == 2 and "-o FILE" in refused.stderr

    # The API: read-only (the ledger file unchanged), the same values as the JSON.
    before = fingerprint(cluster.ledger)
    frame = api.load_results(run_id[:12], store=cluster.ledger)  # a prefix, as the CLI takes
    assert list(frame["task_id"]) == [t["task_id"] for t in tasks]
    for got, task in zip(frame.to_dict("records"), tasks, strict=True):
        for column in api.TASK_COLUMNS:
            assert clean(got[column]) == task[column], column
        for name, value in task["params"].items():
            assert clean(got[f"param.{name}"]) == value
        for name, value in task["summary"].items():
            assert clean(got[f"summary.{name}"]) == value
        for name, value in task["metadata"].items():
            assert clean(got[f"meta.{name}"]) == (
                value if not isinstance(value, dict | list)
                else json.dumps(value, separators=(",", ":")))
    aggregates = api.load_aggregates("last", store=cluster.ledger)
    assert len(aggregates) == len(points["points"])
    for got, point in zip(aggregates.to_dict("records"), points["points"], strict=True):
        assert got["kind"] == point["kind"] and got["total"] == len(point["tasks"])
        for name, s in point["summary"].items():
            assert got[f"summary.{name}.n"] == s["n"]
            assert_close(clean(got[f"summary.{name}.mean"]), s["mean"])
            assert_close(clean(got[f"summary.{name}.sem"]), s["sem"])
    observables = api.load_observables(run_id, store=cluster.ledger)
    assert list(observables.columns) == ["task_id", "name", "i", "value"]
    for task in tasks:
        mine = observables[observables["task_id"] == task["task_id"]]
        for name, series in task["observables"].items():
            assert mine[mine["name"] == name].sort_values("i")["value"].tolist() == series
    one = api.load_observables(run_id, store=cluster.ledger, task="1")
    assert set(one["task_id"]) == {f"{run_id}.1"}
    assert fingerprint(cluster.ledger) == before

    # store=None resolves the ledger as simctl does without global options.
    os_env = {**cluster.env(), "SIMCTL_STORE": str(cluster.ledger)}
    probe = ("import sys; from simctl.api import load_results; "
             "print(len(load_results(sys.argv[1])))")
    out_text = subprocess.run([sys.executable, "-c", probe, run_id], env=os_env, text=True,
                              capture_output=True, check=True).stdout
    assert out_text.strip() == str(SWEEP_TASKS)


def test_the_api_reads_while_a_dispatcher_writes(cluster: Cluster) -> None:
    """WAL: a reader never blocks the dispatcher nor is blocked by it, and each read is one
    consistent snapshot (a done task has its summary)."""
    cluster.start_agents({"w1": 1, "w2": 1})
    run = cluster.start_simctl("run", "run", str(cluster.task_file("busy", sleep_tasks(10, 0.2))),
                               "--json", "--quiet")
    run_id = cluster.run_id_of("busy")
    seen = []
    while run.alive:
        frame = api.load_results(run_id, store=cluster.ledger)
        done = frame[frame["state"] == "done"]
        assert done["summary.seconds"].notna().all()
        seen.append(len(done))
    assert run.wait(60) == 0, run.describe()
    assert len(seen) > 1 and seen == sorted(seen), seen  # read during the run, never back
    assert len(api.load_results(run_id, store=cluster.ledger)) == 10
    assert (api.load_results(run_id, store=cluster.ledger)["state"] == "done").all()
    assert os.path.exists(cluster.ledger)
