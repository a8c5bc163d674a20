"""Worker faults mid-run: an agent killed with SIGKILL, and one frozen with SIGSTOP.

Signals go to the agent's whole process group (agent and task children), as when a machine
dies or freezes. The test agents run with a 0.2 s heartbeat and a 1 s MQTT keepalive, so the
dispatcher notices within about a second.
"""

from __future__ import annotations

import signal
import time

from simctl.local_broker import LocalBroker
from tests.support import procs
from tests.support.blackhole import BlackholeProxy
from tests.support.procs import Cluster, Proc, assert_run_complete, sleep_tasks
from tests.support.waiting import wait_for


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


def test_frozen_agent_replaced_under_its_id_exits(cluster: Cluster) -> None:
    """An agent frozen while a replacement with its worker id starts leaves the id to the
    newer agent within seconds of waking (exit 4, saying why) instead of kicking it off the
    broker and being kicked back for ever."""
    old = cluster.start_agent("w1", 1)
    cluster.wait_online(["w1"])
    old_status = cluster.watcher.status("w1")
    assert old_status is not None
    old.signal(signal.SIGSTOP)
    new = cluster.start_agent("w1", 1)  # its id check gets no answer from the frozen one

    def replaced() -> bool:
        new.check_alive()
        status = cluster.watcher.status("w1")
        return status is not None and status.state == "online" and \
            status.session != old_status.session

    wait_for(replaced, procs.AGENT_START_TIMEOUT_S, what="the replacement online")
    woke = time.monotonic()
    old.signal(signal.SIGCONT)
    assert old.wait(10) == 4, old.describe()
    assert time.monotonic() - woke < 5, f"exited {time.monotonic() - woke:.1f} s after waking"
    assert "now belongs to a newer agent" in old.log(), old.describe()

    time.sleep(1.0)  # would be a takeover loop: both kicking each other every half second
    new.check_alive()
    status = cluster.watcher.status("w1")
    assert status is not None and status.state == "online", status
    assert status.session != old_status.session
    tasks = cluster.task_file("after-replacement", sleep_tasks(3, 0.05))
    summary = cluster.simctl_json("run", str(tasks), "--json", "--quiet")
    assert_run_complete(summary, cluster.results(summary["run_id"]), 3)
    assert "now belongs to a newer agent" not in new.log()


def test_silent_worker_without_last_will_costs_no_attempt(cluster: Cluster,
                                                          broker: LocalBroker) -> None:
    """A worker cut off behind a proxy that keeps its broker connection alive (so the broker
    never fires its Last Will, as a crashed broker node would not): the dispatcher stops
    giving it tasks once it is not heard from, its task moves on without using an attempt
    (max_attempts 1), and once the network heals the worker is back within 10 s."""
    proxy = BlackholeProxy(broker.host, broker.port)
    try:
        cluster.start_agent("w1", 1, "--broker", proxy.address)
        cluster.start_agent("w2", 1)
        cluster.wait_online(["w1", "w2"])
        tasks = cluster.task_file("blackhole", sleep_tasks(8, 0.6), max_attempts=1)
        run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")
        victim = wait_until_running(cluster, "w1", run)
        silent_from = time.time()
        proxy.blackhole()
        time.sleep(4.0)  # leases of 3 x 0.2 s heartbeats expire many times over
        silent_until = time.time()
        proxy.heal()

        def back() -> bool:
            return any(at > silent_until and s.worker_id == "w1" and s.state == "online"
                       for at, s in cluster.watcher.status_log)

        wait_for(back, 10, what="w1 back online within 10 s of the network healing")
        assert run.wait(60) == 0, run.describe()
    finally:
        proxy.close()
    offline_while_silent = [s for at, s in cluster.watcher.status_log
                            if s.worker_id == "w1" and s.state == "offline"
                            and silent_from < at < silent_until]
    assert not offline_while_silent, "the broker fired the Last Will: not the case under test"
    summary = run.json()
    rows = cluster.results(summary["run_id"])
    assert_run_complete(summary, rows, 8)  # max_attempts 1: a burnt attempt would fail it
    assert rows[victim]["lost"] >= 1, rows[victim]
