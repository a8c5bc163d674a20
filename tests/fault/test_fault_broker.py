"""The broker stopped mid-run (SIGTERM saves its database, SIGKILL loses the last second)
and started again on the same port with the same persistence: the run completes. And after
a restart that keeps every session, nothing simctl or an agent acted on comes back."""

from __future__ import annotations

import signal
import time

import pytest

from simctl.local_broker import LocalBroker
from tests.support.procs import Cluster, assert_run_complete, sleep_tasks
from tests.support.waiting import wait_for

BROKER_DOWN_S = 1.5
"""How long the broker stays away: running tasks finish meanwhile, so their results must be
kept by the agents and delivered after the restart, and clients go through reconnect backoff."""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_broker_restarted_mid_run_completes(cluster: Cluster, broker: LocalBroker,
                                            sig: signal.Signals) -> None:
    cluster.start_agents({"w1": 1, "w2": 1, "w3": 1})
    tasks = cluster.task_file(f"broker-{sig.name.lower()}", sleep_tasks(9, 0.6))
    run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")

    def mid_run() -> bool:
        run.check_alive()
        busy = any(cluster.watcher.running(w) for w in ("w1", "w2", "w3"))
        return busy and len(cluster.watcher.results) >= 2

    wait_for(mid_run, 30, what="two results stored and tasks running")
    broker.stop(sig)
    time.sleep(BROKER_DOWN_S)
    broker.start()

    assert run.wait(60) == 0, run.describe()
    summary = run.json()
    rows = cluster.results(summary["run_id"])
    assert_run_complete(summary, rows, 9)
    for agent in cluster.agents.values():
        agent.check_alive()


def test_nothing_acted_on_is_delivered_again_after_a_restart(cluster: Cluster,
                                                             broker: LocalBroker) -> None:
    # simctl and the agents send the PUBACK of a QoS 1 message themselves, after acting on
    # it. One they forgot would stay in their persistent session, and the restarted broker
    # would deliver it again: a result counted as a duplicate, an assignment run twice.
    cluster.start_agents({"w1": 1, "w2": 1})
    before = cluster.task_file("before-restart", sleep_tasks(10, 0.0))
    first = cluster.simctl_json("run", str(before), "--json", "--quiet", timeout=60)
    assert (first["done"], first["duplicates"]) == (10, 0), first

    broker.stop(signal.SIGTERM)  # saves every session with what it still holds
    broker.start()

    # Another seed: the same tasks with the first file's seed would be reused, not run.
    after = cluster.task_file("after-restart", sleep_tasks(4, 0.0), seed=7)
    second = cluster.simctl_json("run", str(after), "--json", "--quiet", timeout=60)
    assert (second["done"], second["duplicates"]) == (4, 0), second
    runs = {run["run_id"]: run for run in cluster.simctl_json("status", "--json")["runs"]}
    assert runs[first["run_id"]]["duplicates"] == 0, runs[first["run_id"]]

    def executed() -> float:
        return sum(cluster.metrics(w)["worker_agent_tasks_done_total"] for w in ("w1", "w2"))

    wait_for(lambda: executed() >= 14, 5, what="the agents' metrics counting 14 tasks")
    time.sleep(0.5)  # time for a task delivered again to run
    assert executed() == 14
    assert all(cluster.metrics(w)["worker_agent_tasks_rejected_total"] == 0 for w in ("w1", "w2"))
