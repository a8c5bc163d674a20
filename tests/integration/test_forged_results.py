"""Forged results from a second, real worker credential under the deployed broker security.

worker2 logs in with its own credentials and its own (bound) client id, as a compromised or
buggy VM would, and publishes results on the only result topic it may write: for a task
worker1 holds, for a task never assigned, for a task already done. None is stored; the run
completes with worker1's true results. Its attempt to publish as worker1 is dropped by the
broker (the deployed roles let it write only its own topics).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import simproto as p
from simproto.connection import connect, make_client
from tests.support import procs
from tests.support.deployed_broker import DeployedBroker
from tests.support.procs import Proc
from tests.support.waiting import wait_for

TASKS = 6
SECONDS = 0.4


def simctl_json(db: DeployedBroker, store: Path, tmp_path: Path, *args: str) -> Any:
    done = Proc(f"simctl-{args[0]}-{time.monotonic_ns()}",
                [*procs.simctl_command(), *db.simctl_args(), "--store", str(store), *args,
                 "--json"], tmp_path, procs.private_env(tmp_path), separate_stdout=True)
    assert done.wait(60) == 0, done.describe()
    return done.json()


def test_forged_results_of_another_worker_are_never_stored(deployed_broker: DeployedBroker,
                                                           tmp_path: Path) -> None:
    db = deployed_broker
    env = procs.private_env(tmp_path)
    store = tmp_path / "ledger.sqlite"
    agent = Proc("agent-worker1", [sys.executable, "-m", "worker_agent",
                                   *db.agent_args("worker1"), "--slots", "1", "--http-port",
                                   "0", "--heartbeat", "0.2", "--keepalive", "1"],
                 tmp_path, env)
    forger = make_client(db.settings("worker2"), str(db.credentials["worker2"].client_id))
    connected: list[bool] = []
    forger.on_connect = lambda _c, _u, _f, reason, _p: connected.append(not reason.is_failure)
    connect(forger, db.settings("worker2"))
    forger.loop_start()
    try:
        wait_for(lambda: connected == [True], 10, what="worker2's credential connected")
        taskfile = tmp_path / "forged.yaml"
        taskfile.write_text(f"name: forged\nseed: 3\nmax_attempts: 1\ntasks:\n  - kind: sleep\n"
                            f"    params: {{seconds: {SECONDS}}}\n    replicas: {TASKS}\n")

        def worker1_online() -> bool:
            agent.check_alive()
            workers = simctl_json(db, store, tmp_path, "status")["workers"]
            return any(w["worker_id"] == "worker1" and w["state"] == "online" for w in workers)

        wait_for(worker1_online, procs.AGENT_START_TIMEOUT_S, interval=0.2,
                 what="worker1 online")
        run = Proc("simctl-run", [*procs.simctl_command(), *db.simctl_args(), "--store",
                                  str(store), "--log-level", "info", "run", str(taskfile),
                                  "--json", "--quiet"], tmp_path, env, separate_stdout=True)
        run_id = str(wait_for(lambda: run.check_alive() or next(
            (r["run_id"] for r in simctl_json(db, store, tmp_path, "status")["runs"]), None),
            30, interval=0.2, what="the run stored"))

        def task_states() -> dict[str, dict[str, Any]]:
            doc = simctl_json(db, store, tmp_path, "status", run_id)
            return {t["task_id"]: t for t in doc["tasks"]}

        held = str(wait_for(lambda: next((t for t, row in task_states().items()
                                          if row["state"] == "assigned"), None), 30,
                            interval=0.1, what="worker1 holding a task"))
        never = f"{run_id}.{TASKS - 1}"  # the last one: still pending for a while
        assert task_states()[never]["state"] == "pending"

        def forge(task_id: str, worker: str = "worker2", attempt: int = 1) -> None:
            forged = p.Result(worker, "forged-session", run_id, task_id, attempt, "done",
                              time.time(), time.time(), summary={"seconds": 999.0})
            info = forger.publish(db.settings("worker2").topics.worker(worker, p.Channel.RESULT),
                                  forged.encode(), qos=1)
            info.wait_for_publish(5)

        forge(held)
        forge(never)
        done = str(wait_for(lambda: next((t for t, row in task_states().items()
                                          if row["state"] == "done"), None), 30,
                            interval=0.1, what="a task done"))
        forge(done)
        # worker1's topic is not worker2's to write: the broker refuses the publish and
        # closes worker2's connection, so nothing reaches simctl.
        impostor = p.Result("worker1", "forged-session", run_id, held, 1, "done", time.time(),
                            time.time(), summary={"seconds": 999.0})
        forger.publish(db.settings("worker2").topics.worker("worker1", p.Channel.RESULT),
                       impostor.encode(), qos=1)
        wait_for(lambda: not forger.is_connected(), 10, what="the impostor disconnected")
        assert run.wait(60) == 0, run.describe()
    finally:
        forger.loop_stop()
        forger.disconnect()
        agent.kill()

    results = simctl_json(db, store, tmp_path, "results", run_id, "--format", "json")
    rows = {r["task_id"]: r for r in results["tasks"]}
    assert len(rows) == TASKS
    assert {(r["state"], r["worker_id"]) for r in rows.values()} == {("done", "worker1")}
    assert {r["summary"]["seconds"] for r in rows.values()} == {SECONDS}
    status = simctl_json(db, store, tmp_path, "status")
    refused = status["rejected"]["not assigned to the sender"]
    assert refused["count"] == 3, status["rejected"]  # the three that reached simctl
    assert "worker2" in refused["last"]
    assert status["runs"][0]["duplicates"] == 0

