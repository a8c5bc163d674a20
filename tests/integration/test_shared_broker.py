"""Several ledgers on one broker and one set of workers, as when two people share a cluster.

Each ledger has its own dispatcher client id (from the ledger's id) and persistent session,
so neither takes the other's session over; each sees the other's results, refuses them as
results of unknown tasks, and lets the other store them.
"""

from __future__ import annotations

from simctl.local_broker import LocalBroker
from tests.support.procs import Cluster, assert_run_complete, sleep_tasks


def test_two_ledgers_share_one_broker_and_its_workers(cluster: Cluster,
                                                      broker: LocalBroker) -> None:
    cluster.start_agents({"w1": 2, "w2": 2})
    store_b = cluster.workdir / "ledger-b.sqlite"
    runs = {}
    for name, store in (("ledger-a", None), ("ledger-b", store_b)):
        # max_attempts 1: an attempt burnt by the other ledger's assignments would fail a task.
        tasks = cluster.task_file(name, sleep_tasks(40, 0.05), max_attempts=1)
        runs[name] = (cluster.start_simctl(name, "run", str(tasks), "--json", "--quiet",
                                           store=store), store)
    for name, (run, store) in runs.items():
        assert run.wait(120) == 0, run.describe()
        summary = run.json()
        rows = cluster.results(summary["run_id"], store=store)
        assert_run_complete(summary, rows, 40)
        assert {r["tries"] for r in rows.values()} == {1}, name
        status = cluster.simctl_json("status", "--json", store=store)
        assert [r["run_id"] for r in status["runs"]] == [summary["run_id"]], status["runs"]
        assert "not assigned to the sender" not in status["rejected"], status["rejected"]
    assert "already connected" not in broker.log_path.read_text(), "a session was taken over"
    monitor = cluster.simctl_json("monitor", "--count", "1", "--json")
    assert monitor["runs"] == [], monitor  # no phantom active run from either ledger
