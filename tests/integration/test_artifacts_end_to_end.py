"""Artifacts end to end: real agents, a real Mosquitto, simctl runs. Trajectories and final
configurations come back to the main PC once, byte for byte what the kernel wrote, readable
by ASE; tasks start from other tasks' final configurations, within a run and across runs."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np

import ckernel
from simctl.ledger import Ledger
from simctl.store import ArtifactStore
from tests.support.procs import Cluster

LJ = {"n_cells": 3, "density": 0.8, "temperature": 1.0, "steps": 40, "sample_every": 10,
      "trajectory_every": 10}


def stored(cluster: Cluster, run_id: str) -> dict[str, dict[str, Path]]:
    """task id -> artifact name -> the stored file."""
    ledger = Ledger(cluster.ledger)
    store = ArtifactStore.beside(cluster.ledger)
    files: dict[str, dict[str, Path]] = {}
    for a in ledger.artifacts(run_id):
        files.setdefault(a.task_id, {})[a.name] = store.path(a.sha256)
    ledger.close()
    return files


def test_trajectories_come_back_once_as_the_kernel_wrote_them_and_ase_reads_them(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    sweep = cluster.task_file("traj", [{"kind": "lj", "params": LJ,
                                         "sweep": {"temperature": [0.9, 1.1]}}])
    summary = cluster.simctl_json("run", str(sweep), "--json")
    run_id = summary["run_id"]
    assert summary["done"] == 2
    files = stored(cluster, run_id)
    rows = cluster.results(run_id)
    assert set(files) == set(rows)
    for task_id, row in rows.items():
        assert set(files[task_id]) == {"trajectory.xyz", "final.xyz"}
        # The same task run here, straight through: the worker's files are these bytes.
        local = tmp_path / task_id
        ckernel.simulate("lj", row["params"], row["seed"], artifact_dir=local)
        for name, path in files[task_id].items():
            assert path.read_bytes() == (local / name).read_bytes(), name
        frames = ase.io.read(files[task_id]["trajectory.xyz"], index=":")
        assert len(frames) == LJ["steps"] // LJ["trajectory_every"] + 1
        steps = range(0, LJ["steps"] + 1, LJ["trajectory_every"])
        for frame, step in list(zip(frames, steps, strict=True))[1:]:
            # Each frame is the state of a run stopped at that step.
            short = tmp_path / f"{task_id}-{step}"
            ckernel.simulate("lj", {**row["params"], "steps": step, "trajectory_every": 0},
                             row["seed"], artifact_dir=short)
            final = ase.io.read(short / "final.xyz")
            np.testing.assert_allclose(frame.positions, final.positions, rtol=0, atol=1e-12)
    ledger = Ledger(cluster.ledger)
    attempts = [a for t in rows for a in ledger.attempts(t)]
    assert [a["outcome"] for a in attempts] == ["done", "done"]  # nothing ran twice


def test_tasks_start_from_final_configurations_within_a_run_and_across_runs(
        cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    chain = cluster.task_file("chain", [
        {"name": "equil", "kind": "lj", "params": {**LJ, "trajectory_every": 0},
         "sweep": {"temperature": [0.9, 1.1]}},
        {"kind": "lj", "params": {**LJ, "steps": 20}, "init": {"from": "equil"},
         "sweep": {"temperature": [0.9, 1.1]}},
    ])
    run_id = cluster.simctl_json("run", str(chain), "--json")["run_id"]
    files = stored(cluster, run_id)
    for source, produce in ((f"{run_id}.0", f"{run_id}.2"), (f"{run_id}.1", f"{run_id}.3")):
        start = ase.io.read(files[produce]["trajectory.xyz"], index=0)
        equilibrated = ase.io.read(files[source]["final.xyz"])
        np.testing.assert_array_equal(start.positions, equilibrated.positions)
        np.testing.assert_array_equal(start.arrays["vel"], equilibrated.arrays["vel"])
    later = cluster.task_file("later", [{"kind": "lj", "params": {**LJ, "steps": 10},
                                         "init": {"from": f"{run_id}.3"}}])
    again = cluster.simctl_json("run", str(later), "--json")
    assert again["done"] == 1
    [names] = stored(cluster, again["run_id"]).values()
    start = ase.io.read(names["trajectory.xyz"], index=0)
    np.testing.assert_array_equal(start.positions,
                                  ase.io.read(files[f"{run_id}.3"]["final.xyz"]).positions)
    assert "valid, 1 task" in cluster.simctl("validate", str(later)).stdout
    # From a file given by path (relative to the task file): copied into the store once.
    start_file = cluster.workdir / "start.xyz"
    start_file.write_bytes(files[f"{run_id}.1"]["final.xyz"].read_bytes())
    from_file = cluster.task_file("from-file", [{"kind": "lj", "params": {**LJ, "steps": 10},
                                                 "init": "start.xyz", "replicas": 2}])
    by_path = cluster.simctl_json("run", str(from_file), "--json")
    assert by_path["done"] == 2
    for names in stored(cluster, by_path["run_id"]).values():
        np.testing.assert_array_equal(ase.io.read(names["trajectory.xyz"], index=0).positions,
                                      ase.io.read(start_file).positions)
    start_file.write_text(start_file.read_text().replace("Lattice=", "Lattice=\"1 2 3\" X="))
    misfit = cluster.simctl("validate", str(from_file))
    assert misfit.returncode == 2 and "tasks[0].init:" in misfit.stderr, misfit.stderr
    missing = cluster.task_file("missing", [{"kind": "lj", "params": LJ,
                                             "init": {"from": f"{run_id}.9"}}])
    for command in ("validate", "run"):  # validate reads the ledger as run will, stores nothing
        refused = cluster.simctl(command, str(missing))
        assert refused.returncode == 2, (command, refused.stderr)
        assert f"tasks[0].init: from: {run_id}.9: no such task in this ledger" in \
            refused.stderr, (command, refused.stderr)
