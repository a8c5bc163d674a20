"""Naming runs (prefix, ``last``, shell completion), ``status RUN`` filters, ``results``
options, ``retry`` and ``workers``: against a real ledger, and for what needs them a real
Mosquitto and real worker agents."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from simctl.cli import cli
from simctl.ledger import Ledger
from simctl.mqtt import Observer
from simctl.taskfile import parse_text
from simproto.connection import BrokerAddress, ConnectionSettings
from simproto.protocol import Channel, WorkerStatus
from simproto.protocol import Result as TaskResult
from tests.support.procs import Cluster
from tests.support.waiting import wait_for

MIXED = ("name: mixed\nseed: 3\nmax_attempts: 2\ntasks:\n"
         "  - kind: sleep\n    params: {seconds: 0.01}\n    replicas: 26\n"
         "  - kind: brownian\n    params: {n_particles: 8, steps: 20, sample_every: 10}\n"
         "    replicas: 4\n")
"""30 tasks of two kinds: 26 sleeps, then 4 brownian."""


def invoke(store: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    """simctl in-process on ``store``, with no broker and none of the caller's settings."""
    full_env: dict[str, str | None] = {"SIMCTL_CONFIG": None, "SIMCTL_BROKER": None,
                                       "SIMCTL_STORE": None, **(env or {})}
    result = CliRunner().invoke(cli, ["--store", str(store), *args], env=full_env,
                                catch_exceptions=False)
    assert result.exit_code == code, (
        f"simctl {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def finish(ledger: Ledger, run_id: str, failed: set[int], summary: dict[str, float]) -> None:
    """Store a result for every task of a run (failed ones for ``failed``) and finish it."""
    now = time.time()
    with ledger.batch():
        for row in ledger.task_rows(run_id):
            bad = row["index"] in failed
            ledger.assign(row["task_id"], 1, "w1", "s1", now)
            ledger.store_result(
                TaskResult(worker_id="w1", session="s1", run_id=run_id, task_id=row["task_id"],
                           attempt=1, state="failed" if bad else "done", started_at=now - 1,
                           finished_at=now, summary={} if bad else summary,
                           observables={"t": [0.0, 1.0]}, error="boom" if bad else None),
                "failed" if bad else "done")
        ledger.finish_run(run_id)


def ledger_with_runs(tmp_path: Path) -> tuple[Path, str, str]:
    """A ledger with two finished runs of MIXED: the first all done, the second (newest)
    with 3 failed tasks; long summaries."""
    store = tmp_path / "ledger.sqlite"
    ledger = Ledger(store)
    summary = {f"long_summary_name_{i}": 1.0 / (i + 1) for i in range(8)}
    first = ledger.create_run(parse_text(MIXED, Path("mixed.yaml")), reuse=False)
    finish(ledger, first, set(), summary)
    second = ledger.create_run(parse_text(MIXED, Path("mixed.yaml")), reuse=False)
    finish(ledger, second, {5, 17, 28}, summary)
    ledger.close()
    return store, first, second


# ----------------------------------------------------------------- no broker needed


def test_runs_are_named_by_prefix_or_last_everywhere(tmp_path: Path) -> None:
    store, first, second = ledger_with_runs(tmp_path)
    short = next(second[:n] for n in range(1, len(second)) if not first.startswith(second[:n]))
    assert json.loads(invoke(store, "status", "last", "--json").stdout)["run"]["run_id"] == second
    assert json.loads(invoke(store, "status", short, "--json").stdout)["run"]["run_id"] == second
    assert json.loads(invoke(store, "results", short, "--json").stdout)["run_id"] == second
    cancelled = json.loads(invoke(store, "cancel", "last", "--json").stdout)
    assert (cancelled["run_id"], cancelled["was"]) == (second, "failed")

    ambiguous = invoke(store, "results", first[:4], code=2)  # the year: both runs
    assert "ambiguous" in ambiguous.stderr
    assert first in ambiguous.stderr and second in ambiguous.stderr
    assert "no run 'zzz'" in invoke(store, "status", "zzz", code=2).stderr
    empty = tmp_path / "empty.sqlite"
    assert "no runs" in invoke(empty, "status", "last", code=2).stderr
    assert "no runs" in invoke(empty, "retry", "last", code=2).stderr


def test_status_of_a_big_run_shows_20_rows_failed_first(tmp_path: Path) -> None:
    store, _first, run_id = ledger_with_runs(tmp_path)
    text = invoke(store, "status", run_id).stdout
    task_lines = [line for line in text.splitlines() if line.startswith(f"{run_id}.")]
    assert len(task_lines) == 20
    assert [line.split()[0] for line in task_lines[:3]] == [
        f"{run_id}.5", f"{run_id}.17", f"{run_id}.28"]
    assert all("failed" in line for line in task_lines[:3])
    assert "10 more: --limit" in text and "--state" in text

    failed = invoke(store, "status", run_id, "--state", "failed").stdout
    assert len([ln for ln in failed.splitlines() if ln.startswith(f"{run_id}.")]) == 3
    assert "more:" not in failed
    every = invoke(store, "status", run_id, "--limit", "0").stdout
    assert len([ln for ln in every.splitlines() if ln.startswith(f"{run_id}.")]) == 30
    two = invoke(store, "status", run_id, "--state", "failed,done", "--limit", "2").stdout
    assert "28 more" in two

    # JSON: every task in index order by default; --state and --limit apply too.
    doc = json.loads(invoke(store, "status", run_id, "--json").stdout)
    assert [t["task_id"] for t in doc["tasks"]] == [f"{run_id}.{i}" for i in range(30)]
    doc = json.loads(invoke(store, "status", run_id, "--json", "--state", "failed",
                            "--state", "cancelled", "--limit", "2").stdout)
    assert [t["task_id"] for t in doc["tasks"]] == [f"{run_id}.5", f"{run_id}.17"]

    assert "not a task state" in invoke(store, "status", run_id, "--state", "lost",
                                        code=2).stderr
    assert "go with a RUN" in invoke(store, "status", "--limit", "3", code=2).stderr


def test_results_kind_wide_and_observables_only_with_json(tmp_path: Path) -> None:
    store, run_id, _ = ledger_with_runs(tmp_path)
    for fmt in ("csv", "table"):
        refused = invoke(store, "results", run_id, "--format", fmt, "--observables", code=2)
        assert "--format json" in refused.stderr and refused.stdout == ""

    everything = list(csv.reader(io.StringIO(invoke(store, "results", run_id, "--format",
                                                    "csv").stdout)))
    brownian = list(csv.DictReader(io.StringIO(invoke(
        store, "results", run_id, "--format", "csv", "--kind", "brownian").stdout)))
    assert len(everything) == 31 and len(brownian) == 4
    assert {r["kind"] for r in brownian} == {"brownian"}
    assert "param.seconds" in everything[0] and "param.seconds" not in brownian[0]
    doc = json.loads(invoke(store, "results", run_id, "--json", "--observables", "--kind",
                            "sleep", "--kind", "brownian").stdout)
    assert len(doc["tasks"]) == 30 and doc["tasks"][0]["observables"] == {"t": [0.0, 1.0]}
    table = invoke(store, "results", run_id, "--kind", "sleep").stdout
    assert "brownian" not in table and "..." in table and "long_summary_name_7" not in table
    wide = invoke(store, "results", run_id, "--kind", "sleep", "--wide").stdout
    assert "long_summary_name_7=0.125" in wide and "..." not in wide


def complete(store: Path, *words: str, env: dict[str, str] | None = None) -> Result:
    """What ``simctl --store STORE WORDS<TAB>`` completes to in bash (the last word is the
    incomplete one)."""
    line = ["simctl", "--store", str(store), *words]
    return CliRunner().invoke(
        cli, [], prog_name="simctl", catch_exceptions=False,
        env={"_SIMCTL_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(line),
             "COMP_CWORD": str(len(line) - 1), "SIMCTL_CONFIG": None, **(env or {})})


def test_shell_completion_of_run_ids(tmp_path: Path) -> None:
    store, first, second = ledger_with_runs(tmp_path)
    for words in (("status", first[:4]), ("results", ""), ("retry", first[:8]),
                  ("cancel", first[:2]), ("run", "--resume", first[:4])):
        result = complete(store, *words)
        assert result.exit_code == 0 and result.stderr == ""
        values = [line.split(",", 1)[1] for line in result.stdout.splitlines()]
        assert values[:2] == [second, first], (words, result.stdout)  # newest first
    assert "plain,last" in complete(store, "status", "l").stdout
    assert complete(store, "results", "zz").stdout.strip() == ""

    # No ledger, or a broken config file: nothing completed, nothing printed, nothing made.
    missing = tmp_path / "none" / "ledger.sqlite"
    for result in (complete(missing, "status", ""),
                   complete(store, "status", "", env={"SIMCTL_CONFIG": str(tmp_path / "nope")})):
        assert result.exit_code == 0 and result.stderr == ""
        assert [ln for ln in result.stdout.splitlines() if ln not in ("", "plain,last")] == []
    assert not missing.parent.exists()


# ------------------------------------------------------------ broker and workers


def test_retry_reruns_failed_tasks_in_the_same_run_served_by_the_active_dispatcher(
        cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    mixed = cluster.task_file("mixed", [
        {"kind": "sleep", "params": {"seconds": 0.05}, "replicas": 3},
        {"kind": "sleep", "params": {"fail": True}},
    ], max_attempts=2)
    summary = cluster.simctl_json("run", str(mixed), "--json", codes=(1,))
    run_id = summary["run_id"]
    before = cluster.results(run_id)
    failed = f"{run_id}.3"
    # A kernel's own failure is not worth another attempt: it failed at its first.
    assert before[failed]["state"] == "failed" and before[failed]["attempts"] == 1

    # A detached run keeps a background dispatcher (holding the ledger) busy: the retried
    # run must be picked up by it while `retry` follows.
    slow = cluster.task_file("slow", [{"kind": "sleep", "params": {"seconds": 1.5},
                                       "replicas": 2}])
    cluster.simctl("run", str(slow), "--detach")
    active = cluster.simctl("retry", "last")  # slow is the newest run, and still active
    assert active.returncode == 2 and "still active" in active.stderr
    doc = cluster.simctl_json("retry", run_id[:-2], "--json", codes=(1,), timeout=90)
    assert (doc["run_id"], doc["retried"], doc["state"], doc["failed"], doc["done"]) == (
        run_id, 1, "failed", 1, 3)

    after = cluster.results(run_id)
    assert after[failed]["attempts"] == 2 and after[failed]["tries"] == 1
    assert after[failed]["seed"] == before[failed]["seed"]
    for task_id in (f"{run_id}.0", f"{run_id}.1", f"{run_id}.2"):  # done ones: not recomputed
        assert after[task_id]["finished_at"] == before[task_id]["finished_at"]
        assert after[task_id]["attempts"] == 1
    ledger = Ledger(cluster.ledger)
    assert [a["attempt"] for a in ledger.attempts(failed)] == [1, 2]
    assert all(a["outcome"] == "failed" for a in ledger.attempts(failed))
    slow_id = cluster.run_id_of("slow")
    wait_for(lambda: ledger.run(slow_id).state == "done", 60, interval=0.2,
             what="the detached run done")
    # Nothing failed in a done run: nothing to retry, exit 0.
    nothing = cluster.simctl_json("retry", slow_id, "--json")
    assert (nothing["retried"], nothing["state"]) == (0, "done")


def publish_status(cluster: Cluster, status: WorkerStatus) -> None:
    settings = ConnectionSettings(BrokerAddress.parse(cluster.broker_address),
                                  topic_prefix=cluster.prefix)
    with Observer(settings) as obs:
        obs.publish(settings.topics.worker(status.worker_id, Channel.STATUS), status.encode(),
                    retain=True)


def workers_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    doc = cluster.simctl_json("workers", *args, "--json")
    assert isinstance(doc, dict)
    return doc


def test_workers_last_seen_forget_and_stale_ones_hidden(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    cluster.agents["w2"].signal(15)  # a warm stop: its last status says offline
    assert cluster.agents["w2"].wait(20) == 0
    wait_for(lambda: not cluster.watcher.online("w2"), 20, what="w2 offline")
    stopped_at = time.time()
    day_ago = time.time() - 2 * 86400
    publish_status(cluster, WorkerStatus(worker_id="w9", state="offline", session="old",
                                         ts=day_ago, host="gone"))
    time.sleep(1.5)

    doc = workers_json(cluster)
    rows = {w["worker_id"]: w for w in doc["workers"]}
    assert set(rows) == {"w1", "w2"} and doc["hidden"] == 1
    assert rows["w2"]["state"] == "offline"
    # Last seen is when w2 said it went offline, not when we received that retained copy.
    assert rows["w2"]["last_seen"] <= stopped_at + 0.5
    assert time.time() - rows["w2"]["last_seen"] >= 1.5
    assert rows["w1"]["last_seen"] == rows["w1"]["status_at"]
    assert {w["worker_id"] for w in workers_json(cluster, "--all")["workers"]} == {
        "w1", "w2", "w9"}
    every = {w["worker_id"]: w for w in workers_json(cluster, "--all")["workers"]}
    assert every["w9"]["last_seen"] == day_ago

    status = cluster.simctl("status")
    assert "1 offline worker not heard from for a day hidden (--all" in status.stdout
    assert "w9" not in status.stdout and "w2" in status.stdout
    assert "w9" in cluster.simctl("status", "--all").stdout
    status_doc = cluster.simctl_json("status", "--json")
    assert status_doc["hidden_workers"] == 1

    refused = cluster.simctl("workers", "forget", "w1")
    assert refused.returncode == 2 and "w1 is online, not offline" in refused.stderr
    unknown = cluster.simctl("workers", "forget", "w7")
    assert unknown.returncode == 2 and "no worker 'w7'" in unknown.stderr
    forgot = cluster.simctl_json("workers", "forget", "w2", "--json")
    assert forgot["forgotten"] is True and forgot["worker_id"] == "w2"
    assert "forgot worker w9" in cluster.simctl("workers", "forget", "w9").stdout
    doc = workers_json(cluster, "--all")
    assert [w["worker_id"] for w in doc["workers"]] == ["w1"] and doc["hidden"] == 0
    assert "w2" not in cluster.simctl("status").stdout
    assert "hidden_workers" not in cluster.simctl_json("status", "--json")
