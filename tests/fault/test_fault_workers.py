"""Worker faults mid-run: an agent killed with SIGKILL, and one frozen with SIGSTOP.

Signals go to the agent's whole process group (agent and task children), as when a machine
dies or freezes. The test agents run with a 0.2 s heartbeat and a 1 s MQTT keepalive, so the
dispatcher notices within about a second.
"""

from __future__ import annotations

import signal

import procs
from conftest import wait_for
from procs import Cluster, Proc, assert_run_complete, sleep_tasks

cluster = procs.cluster


def wait_until_running(cluster: Cluster, worker_id: str, run: Proc) -> str:
    """The id of a task ``worker_id`` is running, once it runs one."""

    def task() -> str | None:
        run.check_alive()
        running = cluster.watcher.running(worker_id)
        return running[0] if running else None

    return str(wait_for(task, 30, what=f"{worker_id} running a task"))


def test_worker_killed_mid_task_its_task_runs_again_elsewhere(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    tasks = cluster.task_file("kill9", sleep_tasks(6, 1.0))
    run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")

    victim = wait_until_running(cluster, "w1", run)
    cluster.agents["w1"].signal(signal.SIGKILL)

    assert run.wait(60) == 0, run.describe()
    summary = run.json()
    rows = cluster.results(summary["run_id"])
    assert_run_complete(summary, rows, 6)
    assert summary["duplicates"] == 0, summary
    # The killed attempt is recorded: the task needed a second attempt, on the survivor.
    assert rows[victim]["attempts"] >= 2, rows[victim]
    assert rows[victim]["worker_id"] == "w2", rows[victim]
    assert {r.worker_id for r in cluster.watcher.results_of(victim)} == {"w2"}


def test_frozen_worker_late_result_counts_as_duplicate(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    # Tasks long enough that the run is still going when the frozen agent has reconnected
    # (reconnect backoff starts at 0.5 s) and delivers its late result.
    tasks = cluster.task_file("sigstop", sleep_tasks(6, 1.2))
    run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")

    victim = wait_until_running(cluster, "w1", run)
    frozen = cluster.agents["w1"]
    frozen.signal(signal.SIGSTOP)
    try:
        def reassigned() -> bool:
            run.check_alive()
            return victim in cluster.watcher.running("w2")

        wait_for(reassigned, 30, what=f"{victim} of the frozen w1 re-assigned to w2")
    finally:
        frozen.signal(signal.SIGCONT)

    assert run.wait(60) == 0, run.describe()
    summary = run.json()
    rows = cluster.results(summary["run_id"])
    assert_run_complete(summary, rows, 6)
    # Both attempts delivered a result; the ledger kept one and counted the other.
    assert {r.worker_id for r in cluster.watcher.results_of(victim)} == {"w1", "w2"}, \
        cluster.watcher.results_of(victim)
    assert summary["duplicates"] >= 1, summary
    assert rows[victim]["attempts"] >= 2, rows[victim]
    assert frozen.alive, "the resumed agent died"
