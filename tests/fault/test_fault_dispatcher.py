"""The dispatcher (``simctl run``) killed with SIGKILL mid-run, then ``simctl run --resume``."""

from __future__ import annotations

import signal

import procs
from conftest import wait_for
from procs import Cluster, assert_run_complete, sleep_tasks

cluster = procs.cluster


def test_dispatcher_killed_then_resumed_runs_nothing_twice(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    tasks = cluster.task_file("resume", sleep_tasks(16, 0.5))
    run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")

    def busy() -> bool:
        run.check_alive()
        return bool(cluster.watcher.running("w1") or cluster.watcher.running("w2"))

    # Watch the wire first (cheap), then confirm in the ledger that results are stored.
    wait_for(lambda: busy() and len(cluster.watcher.results) >= 2, 30,
             what="two results published while tasks run")
    run_id = cluster.run_id_of("resume")
    wait_for(lambda: busy() and cluster.done_tasks(run_id), 30, interval=0.1,
             what="a task done in the ledger while others run")
    run.signal(signal.SIGKILL)
    run.wait(10)
    done_before = cluster.done_tasks(run_id)  # the ledger as the dead dispatcher left it

    # The tasks that were running finish while no dispatcher listens: their results must
    # wait in simctl's persistent session (and in the agents) until the resume.
    wait_for(lambda: not (cluster.watcher.running("w1") or cluster.watcher.running("w2")),
             30, what="the agents idle after the dispatcher died")
    finished_while_dead = {r.task_id for r in cluster.watcher.results} - set(done_before)
    assert finished_while_dead, "no task finished while the dispatcher was dead"

    summary = cluster.simctl_json("run", "--resume", run_id, "--json", "--quiet", timeout=90)
    assert summary["run_id"] == run_id, summary
    rows = cluster.results(run_id)
    assert_run_complete(summary, rows, 16)
    for task_id, before in done_before.items():
        after = rows[task_id]
        assert after["attempts"] == before["attempts"] == 1, (before, after)
        assert after["worker_id"] == before["worker_id"], (before, after)
        # The stored result is the one from before the kill, not a recomputation.
        for stamp in ("started_at", "finished_at"):
            assert before.get(stamp) is not None, f"results JSON lacks {stamp}: {before}"
            assert after[stamp] == before[stamp], (stamp, before, after)
    # Nothing ran twice: neither what was done before the kill nor what finished meanwhile.
    for task_id in rows:
        assert len(cluster.watcher.executions(task_id)) == 1, \
            (task_id, sorted(cluster.watcher.executions(task_id)))
    for task_id in finished_while_dead:
        assert rows[task_id]["attempts"] == 1, rows[task_id]
