"""Checkpoints under faults, with real agents, a real Mosquitto and a real ``simctl run``: a
worker killed with SIGKILL at about 60 % of a task, and a worker stopped warm (SIGTERM, as a
redeploy does) half-way. The task completes on another worker from the checkpoint, computing
only the remaining steps, and its observables and summary are bit for bit those of
``ckernel.simulate`` run straight through with the same seed on the same backend."""

from __future__ import annotations

import signal
from typing import Any

import pytest

import ckernel
from ckernel import _backend
from simctl.ledger import Ledger
from simctl.store import ArtifactStore
from tests.support.procs import Cluster, Proc
from tests.support.waiting import wait_for

CHECKPOINT_EVERY_S = 0.2
"""Often, so that a checkpoint near 60 % exists whatever the machine's speed."""

TASKS: dict[str, dict[str, Any]] = {
    # Each runs about 5 s (lj 7 s: its resumed part is watched in simctl status) on one core.
    "lj": {"n_cells": 6, "steps": 30_000, "ensemble": "nvt", "sample_every": 50,
           "trajectory_every": 2_000},
    "nbody": {"n_bodies": 256, "steps": 70_000, "sample_every": 100},
    "brownian": {"n_particles": 1_000, "steps": 120_000, "sample_every": 100},
}


def start_run(cluster: Cluster, kind: str) -> tuple[Proc, str, str]:
    """Start ``simctl run`` of one task of ``kind``; the process, run id and task id."""
    path = cluster.task_file(f"resume-{kind}", [{"kind": kind, "params": TASKS[kind]}],
                             checkpoint_every_s=CHECKPOINT_EVERY_S)
    run = cluster.start_simctl("simctl-run", "run", str(path), "--json", "--quiet")
    run_id = cluster.run_id_of(f"resume-{kind}")
    return run, run_id, f"{run_id}.0"


def stored_step(cluster: Cluster, run: Proc, run_id: str) -> int:
    """The step of the task's stored checkpoint (0: none yet)."""
    run.check_alive()
    ledger = Ledger(cluster.ledger, read_only=True)
    try:
        return max((c.step for c in ledger.checkpoints(run_id).values()), default=0)
    finally:
        ledger.close()


def assert_resumed_bit_identical(cluster: Cluster, run: Proc, run_id: str, task_id: str,
                                 kind: str, from_step: int) -> None:
    """The run completed; its one task's result equals a straight run's exactly, and its
    last attempt started from the checkpoint of ``from_step`` or a later one."""
    assert run.wait(120) == 0, run.describe()
    ledger = Ledger(cluster.ledger, read_only=True)
    [row] = ledger.task_rows(run_id)
    attempts = ledger.attempts(task_id)
    observables = ledger.observables(run_id)[task_id]
    stored = {a.name: a.sha256 for a in ledger.artifacts(run_id)}
    ledger.close()
    assert row["state"] == "done", row
    assert [a["outcome"] for a in attempts] == ["lost", "done"], attempts
    start = attempts[-1]["start_step"]
    assert start is not None and from_step <= start < TASKS[kind]["steps"], attempts
    assert row["metadata"]["resumed_from_step"] == start
    straight = ckernel.simulate(kind, TASKS[kind], row["seed"],
                                backend=row["metadata"]["backend"],
                                artifact_dir=cluster.workdir / f"straight-{kind}")
    assert row["summary"] == straight["summary"]  # ==: bit for bit, not approximately
    assert observables == straight["observables"]
    # The files too: the final configuration, and the whole trajectory (the frames before
    # the checkpoint travelled in it).
    assert stored == {a["name"]: a["sha256"] for a in straight["artifacts"]}
    # A done task's checkpoint is forgotten, and every checkpoint's object is gone from the
    # store: what is left are the task's artifacts.
    ledger = Ledger(cluster.ledger, read_only=True)
    assert ledger.checkpoints(run_id) == {}
    ledger.close()
    objects = ArtifactStore.beside(cluster.ledger).root / "objects"
    assert {path.name for path in objects.rglob("*") if path.is_file()} == set(stored.values())


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_a_worker_killed_at_60_percent_resumes_from_its_checkpoint_bit_identical(
        cluster: Cluster, kind: str) -> None:
    steps = TASKS[kind]["steps"]
    cluster.start_agents({"w1": 1})
    run, run_id, task_id = start_run(cluster, kind)
    if kind == "lj":  # simctl status shows how far the running task is
        def under_way() -> float | None:
            [task] = cluster.simctl_json("status", run_id, "--json")["tasks"]
            shown = task["progress"] if task["state"] == "assigned" else None
            return shown if shown is not None and shown >= 0.25 else None

        assert wait_for(under_way, 60, interval=0.1, what="progress in simctl status") < 1.0
    def past_55_percent() -> int:
        stored = stored_step(cluster, run, run_id)
        return stored if stored >= 0.55 * steps else 0

    step = wait_for(past_55_percent, 120, interval=0.05, what="a checkpoint past 55 %")
    assert step < steps  # caught before the end
    cluster.agents["w1"].signal(signal.SIGKILL)  # the agent, its task and its spool's files
    cluster.start_agents({"w2": 1})
    if kind == "lj":
        def resumed() -> dict[str, Any] | None:
            [task] = cluster.simctl_json("status", run_id, "--json")["tasks"]
            return task if task["state"] == "assigned" and task["resumed_at_step"] else None

        shown = wait_for(resumed, 60, interval=0.1, what="the resumed step in simctl status")
        assert shown["resumed_at_step"] >= step  # type: ignore[index]
        text = cluster.simctl("status", run_id).stdout
        assert f"resumed at step {shown['resumed_at_step']}" in text, text  # type: ignore[index]
    assert_resumed_bit_identical(cluster, run, run_id, task_id, kind, step)


def test_a_warm_stop_hands_the_task_back_with_a_checkpoint(cluster: Cluster) -> None:
    """SIGTERM (a redeploy, docker stop): the running task saves a checkpoint at once and
    is handed back with it; the agent exits when simctl has it, long before the task would
    have ended, and the next worker goes on from there."""
    kind = "lj"
    steps = TASKS[kind]["steps"]
    cluster.start_agents({"w1": 1})
    run, run_id, task_id = start_run(cluster, kind)
    wait_for(lambda: stored_step(cluster, run, run_id) >= 0.3 * steps, 120, interval=0.05,
             what="the task under way")
    agent = cluster.agents["w1"]
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0, agent.describe()
    handed = stored_step(cluster, run, run_id)
    assert 0.3 * steps <= handed < steps
    assert f"handed back with its checkpoint of step {handed}" in agent.log(), agent.log()
    cluster.start_agents({"w2": 1})
    assert_resumed_bit_identical(cluster, run, run_id, task_id, kind, handed)


def test_a_resume_on_another_kernel_variant_starts_from_step_0_and_says_so(
        cluster: Cluster) -> None:
    """A checkpoint made with one SIMD variant is not resumed by a worker with another (the
    numbers would differ in the last bits): that attempt starts from step 0, the result says
    why, and it is the straight run's result on that worker's variant."""
    kind = "lj"
    steps = TASKS[kind]["steps"]
    here = _backend.simd_variant(kind, "cython")
    assert here != "portable", "this machine's compiled kernels have one SIMD variant only"
    cluster.start_agent("w1", 1, env={_backend.SIMD_ENV: "portable"})
    cluster.wait_online(["w1"])
    run, run_id, task_id = start_run(cluster, kind)
    wait_for(lambda: stored_step(cluster, run, run_id) >= 0.3 * steps, 120, interval=0.05,
             what="a checkpoint")
    cluster.agents["w1"].signal(signal.SIGKILL)
    cluster.start_agents({"w2": 1})  # the default variant, as this test process has
    assert run.wait(120) == 0, run.describe()
    ledger = Ledger(cluster.ledger, read_only=True)
    [row] = ledger.task_rows(run_id)
    attempts = ledger.attempts(task_id)
    ledger.close()
    assert [a["outcome"] for a in attempts] == ["lost", "done"], attempts
    assert attempts[-1]["start_step"] is None  # computed from the start
    metadata = row["metadata"]
    assert "resumed_from_step" not in metadata and metadata["simd_variant"] == here
    assert "simd_variant portable" in metadata["resume_note"], metadata["resume_note"]
    assert metadata["resume_note"].endswith("started from step 0")
    straight = ckernel.simulate(kind, TASKS[kind], row["seed"])
    assert row["summary"] == straight["summary"]
