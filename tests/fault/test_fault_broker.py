"""The broker stopped mid-run (SIGTERM saves its database, SIGKILL loses the last second)
and started again on the same port with the same persistence: the run completes."""

from __future__ import annotations

import signal
import time

import procs
import pytest
from conftest import wait_for
from procs import Cluster, assert_run_complete, sleep_tasks

from simctl.local_broker import LocalBroker

BROKER_DOWN_S = 1.5
"""How long the broker stays away: running tasks finish meanwhile, so their results must be
kept by the agents and delivered after the restart, and clients go through reconnect backoff."""

cluster = procs.cluster


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
