"""Artifacts under faults, with real agents, a real Mosquitto and real simctl processes: a
worker killed, the broker restarted, simctl killed during a transfer, the main PC's disk
full. Every artifact ends up stored once with its hash; a transfer resumes where it was;
the broker never holds more than a few chunks."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ckernel.drivers import sleep_artifact_bytes
from simctl.ledger import Ledger
from simctl.local_broker import LocalBroker
from simctl.store import ArtifactStore
from tests.support.procs import Cluster, Proc
from tests.support.waiting import wait_for

BIG = 200_000_000
"""Bytes of the file of the broker-memory test (the issue's 200 MB trajectory)."""

MID = 60_000_000
"""Bytes of the file of the other fault tests: big enough to be caught mid-transfer."""

BROKER_LIMIT_BYTES = 64 << 20
"""What the broker's memory and persistence file must stay under during a transfer."""


def data_task(cluster: Cluster, name: str, size: int, seed: int = 20261202) -> Path:
    return cluster.task_file(name, [{"kind": "sleep", "params": {"artifact_bytes": size}}],
                             seed=seed)


def partial_bytes(cluster: Cluster) -> int:
    """Bytes of the transfers in progress in the store (their partial files)."""
    folder = ArtifactStore.beside(cluster.ledger).root / "partial"
    return sum(p.stat().st_size for p in folder.glob("*")) if folder.is_dir() else 0


def mid_transfer(cluster: Cluster, run: Proc | None, size: int) -> None:
    """Wait until a transfer is well under way (a fifth of the file stored, not all)."""
    def under_way() -> bool:
        if run is not None:
            run.check_alive()
        return size // 5 < partial_bytes(cluster) < size
    wait_for(under_way, 60, interval=0.005, what="a transfer under way")


def assert_stored_once(cluster: Cluster, run_id: str, size: int, seed_of: dict[str, int]
                       ) -> None:
    """Every task done, its one artifact stored once, its bytes those the kernel made."""
    ledger = Ledger(cluster.ledger)
    store = ArtifactStore.beside(cluster.ledger)
    rows = {r["task_id"]: r for r in ledger.task_rows(run_id)}
    assert {r["state"] for r in rows.values()} == {"done"}, rows
    artifacts = ledger.artifacts(run_id)
    assert sorted(a.task_id for a in artifacts) == sorted(rows)  # one row per task
    for a in artifacts:
        expected = hashlib.sha256()
        for block in sleep_artifact_bytes(seed_of[a.task_id], size):
            expected.update(block)
        assert (a.name, a.size, a.sha256) == ("data.bin", size, expected.hexdigest())
        digest = hashlib.sha256()
        with store.path(a.sha256).open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        assert digest.hexdigest() == a.sha256
    assert not any((store.root / "partial").glob("*"))  # nothing left half-done
    ledger.close()


def seeds(cluster: Cluster, run_id: str) -> dict[str, int]:
    return {task_id: row["seed"] for task_id, row in cluster.results(run_id).items()}


def test_a_worker_killed_during_a_transfer_the_task_reruns_and_the_pull_resumes(
        cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1})
    run = cluster.start_simctl("simctl-run", "run", str(data_task(cluster, "killed", MID)),
                               "--json", "--quiet")
    mid_transfer(cluster, run, MID)
    cluster.agents["w1"].signal(signal.SIGKILL)  # the agent and its spool's files
    kept = partial_bytes(cluster)
    cluster.start_agents({"w2": 1})
    assert run.wait(120) == 0, run.describe()
    run_id = run.json()["run_id"]
    assert_stored_once(cluster, run_id, MID, seeds(cluster, run_id))
    [task] = Ledger(cluster.ledger).task_rows(run_id)
    outcomes = [a["outcome"] for a in Ledger(cluster.ledger).attempts(task["task_id"])]
    assert outcomes == ["lost", "done"], outcomes
    # The second attempt made the same bytes (same seed): the pull went on from the part
    # the first one had delivered, not from the first byte.
    assert "resuming the pull of data.bin" in run.log(), run.log()[-3000:]
    assert kept > 0


def test_the_broker_restarted_during_a_transfer_it_completes(cluster: Cluster,
                                                             broker: LocalBroker) -> None:
    cluster.start_agents({"w1": 1})
    run = cluster.start_simctl("simctl-run", "run", str(data_task(cluster, "broker", MID)),
                               "--json", "--quiet")
    mid_transfer(cluster, run, MID)
    broker.stop(signal.SIGKILL)
    time.sleep(1.0)
    broker.start()
    assert run.wait(120) == 0, run.describe()
    run_id = run.json()["run_id"]
    assert_stored_once(cluster, run_id, MID, seeds(cluster, run_id))


class BrokerSampler:
    """Peaks of the broker's resident memory and persistence file, sampled every 50 ms."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.rss = self.db = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            process = self.broker.process
            if process is not None and process.poll() is None:
                status = Path(f"/proc/{process.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
                self.rss = max(self.rss, kb * 1024)
            for db in self.broker.data_dir.glob("*.db"):
                self.db = max(self.db, db.stat().st_size)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_simctl_killed_during_a_200_mb_transfer_resumes_it_and_the_broker_holds_little(
        cluster: Cluster, broker: LocalBroker) -> None:
    cluster.start_agents({"w1": 1})
    sampler = BrokerSampler(broker)
    run = cluster.start_simctl("simctl-run", "run", str(data_task(cluster, "simctl", BIG)),
                               "--json", "--quiet")
    run_id = cluster.run_id_of("simctl")
    mid_transfer(cluster, run, BIG)
    run.signal(signal.SIGKILL)
    run.wait(10)
    stored_before = partial_bytes(cluster)
    time.sleep(3.0)  # simctl away: nothing may pile up in the broker meanwhile
    summary = cluster.simctl_json("run", "--resume", run_id, "--json", "--quiet", timeout=180)
    sampler.stop()
    assert summary["done"] == 1, summary
    assert_stored_once(cluster, run_id, BIG, seeds(cluster, run_id))
    [task] = Ledger(cluster.ledger).task_rows(run_id)
    assert task["attempts"] == 1  # not run again: its worker kept the file for the resume
    assert 0 < stored_before < BIG
    print(f"broker peaks: RSS {sampler.rss} bytes, database {sampler.db} bytes; "
          f"{stored_before} bytes stored before the kill")
    assert sampler.rss < BROKER_LIMIT_BYTES, f"broker RSS peaked at {sampler.rss} bytes"
    assert sampler.db < BROKER_LIMIT_BYTES, f"broker database peaked at {sampler.db} bytes"


@pytest.fixture
def small_disk(cluster: Cluster) -> Path:
    """The artifact store on a 20 MB tmpfs of its own (the main PC's disk, full)."""
    root = ArtifactStore.beside(cluster.ledger).root
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_stops_simctl_clearly_and_resume_completes_once_space_is_freed(
        cluster: Cluster, small_disk: Path) -> None:
    cluster.start_agents({"w1": 1})
    size = 30_000_000
    run = cluster.simctl("run", str(data_task(cluster, "full", size)), timeout=120)
    assert run.returncode == 5, (run.returncode, run.stderr[-2000:])
    assert "No space left on device" in run.stderr and "simctl run --resume" in run.stderr, \
        run.stderr[-2000:]
    run_id = cluster.run_id_of("full")
    ledger = Ledger(cluster.ledger)
    assert ledger.run(run_id).state == "active" and ledger.artifacts(run_id) == []
    assert not any((small_disk / "objects").rglob("*.*"))  # nothing half-stored as an object
    ledger.close()
    subprocess.run(["mount", "-o", "remount,size=80m", str(small_disk)], check=True)
    summary = cluster.simctl_json("run", "--resume", run_id, "--json", "--quiet", timeout=120)
    assert summary["done"] == 1, summary
    assert_stored_once(cluster, run_id, size, seeds(cluster, run_id))
