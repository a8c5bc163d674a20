"""The dispatcher (``simctl run``) killed with SIGKILL mid-run, then ``simctl run --resume``."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import simproto as p
from simctl.errors import LedgerWriteError
from tests.support import hostile
from tests.support.procs import Cluster, assert_run_complete, sleep_tasks
from tests.support.waiting import wait_for


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


def test_poison_held_for_simctl_and_retained_never_stops_it(cluster: Cluster) -> None:
    """Hostile messages queued in the dead dispatcher's persistent session (so they arrive
    at `--resume`) and hostile retained statuses, run progress and broker identity: the
    resumed run completes, status, ping and monitor work, and what was queued is not
    delivered again to the next dispatcher (it was acknowledged and dropped)."""
    seed = 20261203
    print(hostile.describe(seed))
    cluster.start_agents({"w1": 1, "w2": 1})
    tasks = cluster.task_file("poison", sleep_tasks(8, 0.3))
    run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")
    wait_for(lambda: run.check_alive() or len(cluster.watcher.results) >= 1, 30,
             what="a result published")
    run_id = cluster.run_id_of("poison")
    run.signal(signal.SIGKILL)
    run.wait(10)

    t = cluster.watcher.topics
    client = cluster.watcher.client
    task_ids = [f"{run_id}.{i}" for i in range(8)]
    last = None
    for channel in (p.Channel.HEARTBEAT, p.Channel.RESULT, p.Channel.EVENT, p.Channel.STATUS):
        for payload in hostile.payloads(channel.value, 1500, seed, run_id, task_ids, "w1"):
            last = client.publish(t.worker("w1", channel), payload, qos=1)
    # The payload that stopped `simctl run` for good before: a 5,000-digit JSON integer.
    last = client.publish(t.worker("w2", p.Channel.HEARTBEAT),
                          b'{"v":4,"type":"heartbeat","worker_id":"w2","session":"s","seq":'
                          + b"4" * 5000 + b',"ts":1,"free_slots":0}', qos=1)
    for i, payload in enumerate(hostile.payloads("status", 40, seed)):
        client.publish(t.worker(f"evil{i}", p.Channel.STATUS), payload, qos=1, retain=True)
    for i, payload in enumerate(hostile.payloads("run_progress", 40, seed)):
        client.publish(t.run_progress(f"evil{i}"), payload, qos=1, retain=True)
    last = client.publish(t.broker_identity, b'{"v":4,"type":"broker_identity","broker_id":'
                          + b"4" * 5000 + b"}", qos=1, retain=True)
    assert last is not None
    last.wait_for_publish(30)

    summary = cluster.simctl_json("run", "--resume", run_id, "--json", "--quiet",
                                  "--broker-changed", timeout=120)
    assert_run_complete(summary, cluster.results(run_id), 8)
    status = cluster.simctl_json("status", "--json")
    refused = status["rejected"]["malformed"]["count"]
    assert refused > 3000, status["rejected"]
    assert "could not be processed" not in status["rejected"], status["rejected"]
    assert cluster.simctl("ping", "--timeout", "1").returncode == 0
    assert cluster.simctl("monitor", "--count", "1").returncode == 0

    again = cluster.task_file("after", sleep_tasks(2, 0.01))
    cluster.simctl_json("run", str(again), "--json", "--quiet")
    refused_again = cluster.simctl_json("status", "--json")["rejected"]["malformed"]["count"]
    assert refused_again - refused < 100, (refused, refused_again)  # retained ones only


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root only, as CI runs): a file system that really fills up. Room for
    the ledger and its write-ahead log (which grows to 4 MB before SQLite checkpoints it),
    so it is the test's filler, not the first tasks, that fills it."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                   check=True, capture_output=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_ledger_disk_full_stops_cleanly_and_resume_completes(cluster: Cluster,
                                                             small_disk: Path) -> None:
    """The ledger's disk fills mid-run: simctl stops with exit 5 and a message naming the
    ledger and the cause, nothing stored is lost or doubled, and once space is freed
    `--resume` completes the run."""
    cluster.ledger = small_disk / "ledger.sqlite"
    cluster.start_agents({"w1": 1, "w2": 1})
    tasks = cluster.task_file("disk-full", sleep_tasks(30, 0.1))
    run = cluster.start_simctl("simctl-run", "run", str(tasks), "--json", "--quiet")
    run_id = cluster.run_id_of("disk-full")
    wait_for(lambda: run.check_alive() or len(cluster.done_tasks(run_id)) >= 3, 30,
             interval=0.1, what="three tasks done")
    filler = small_disk / "filler"
    # Unbuffered, and the suppression outermost: a buffered file's close would flush what
    # the full disk refused and raise again, outside the suppression.
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(bytes(65536))
    assert run.wait(30) == LedgerWriteError.exit_code, run.describe()
    assert f"cannot write the ledger {cluster.ledger}" in run.log(), run.describe()
    assert "full" in run.log()
    assert "Traceback" not in run.log(), run.describe()

    filler.unlink()
    summary = cluster.simctl_json("run", "--resume", run_id, "--json", "--quiet", timeout=90)
    rows = cluster.results(run_id)
    assert_run_complete(summary, rows, 30)
    for task_id in rows:
        assert len(cluster.watcher.executions(task_id)) == 1, task_id
