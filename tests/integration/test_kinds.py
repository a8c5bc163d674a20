"""Kinds as plugins, end to end: a plugin installed on one worker only runs there, a task no
online worker can run waits and says why, results record what computed them, identical
tasks are reused, an upgrade is revalidated, and a broken plugin breaks nothing else.

The plugin is a real distribution (a package and its ``.dist-info`` with an entry point)
in a folder put on ``PYTHONPATH`` of simctl and of one agent: importlib.metadata finds it
exactly as it finds a pip-installed one.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.support.procs import Cluster
from tests.support.waiting import wait_for

PLUGIN = '''\
"""A tiny lab kind for the tests: scales a number, reports progress."""
from simkind import Field, Kind, Output, ParamError


def check(params, given):
    if params["x"] > 10 * params["scale"]:
        raise ParamError("echo.x out of range: must be at most 10 * scale")


ECHO = Kind("echo", "scale a number (a test plugin)",
            {"x": Field("float", 1.0, "the number", 0.0, 1000.0),
             "scale": Field("float", 2.0, "the factor", 0.0, 100.0, low_open=True)},
            "labkind:run", version="{version}", check=check)
BROKEN = 1


def run(params, seed, context):
    context.progress(0.5)
    return Output({{"t": [0.0, 1.0]}}, {{"y": params["x"] * params["scale"],
                                        "seed_mod": seed % 1000}})
'''


def install_plugin(site: Path, version: str) -> None:
    """Write (or overwrite) the ``labkind`` distribution at ``version`` into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    for old in site.glob("labkind-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    (site / "labkind.py").write_text(PLUGIN.replace("{version}", version)
                                     .replace("{{", "{").replace("}}", "}"))
    info = site / f"labkind-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: labkind\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [particle_sim.kinds]
        echo = labkind:ECHO
        ghost = labkind_missing:KIND
        """))


def echo_file(cluster: Cluster, name: str, xs: list[float]) -> Path:
    return cluster.task_file(name, [{"kind": "echo", "sweep": {"x": xs}},
                                    {"kind": "sleep", "params": {"seconds": 0.01},
                                     "replicas": 2}])


def test_a_plugin_on_one_worker_runs_only_there_and_tasks_wait_for_it(cluster: Cluster,
                                                                     tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "1.0")
    cluster.extra_env = {"PYTHONPATH": str(site)}  # simctl has the plugin
    # `simctl kinds` lists it; the broken entry point is reported, naming its package.
    listed = cluster.simctl_json("kinds", "--json")
    assert {"name": "echo", "version": "1.0", "package": "labkind"}.items() <= {
        **next(k for k in listed["kinds"] if k["name"] == "echo")}.items()
    assert {"lj", "nbody", "brownian", "sleep"} <= {k["name"] for k in listed["kinds"]}
    [broken] = listed["errors"]
    assert broken["package"] == "labkind" and "ModuleNotFoundError" in broken["error"]
    ghost = cluster.task_file("ghost", [{"kind": "ghost"}])
    done = cluster.simctl("validate", str(ghost))
    assert done.returncode == 2
    assert "unknown kind 'ghost'" in done.stderr and "package labkind declares it" in done.stderr

    # Only a worker without the plugin: the echo tasks wait, and status says for what.
    cluster.start_agent("plain", 2, env={"PYTHONPATH": ""})
    cluster.wait_online(["plain"])
    assert "echo" not in cluster.watcher.status("plain").kinds
    first = echo_file(cluster, "first", [1.0, 2.0, 3.0])
    assert cluster.simctl("run", str(first), "--timeout", "4", "-q").returncode == 3
    run_id = cluster.run_id_of("first")
    status = cluster.simctl_json("status", "--json")
    [row] = [r for r in status["runs"] if r["run_id"] == run_id]
    assert (row["done"], row["pending"], row["waiting"]) == (2, 3, {"echo 1.0": 3})
    text = cluster.simctl("status").stdout
    assert f"run {run_id}: 3 tasks wait: no online worker has kind echo 1.0" in text

    # A worker with the plugin comes: the echo tasks run there and only there.
    cluster.start_agent("lab", 1, env={"PYTHONPATH": str(site)})
    cluster.wait_online(["lab"])
    assert cluster.watcher.status("lab").kinds["echo"] == "1.0"
    cluster.simctl_json("run", "--resume", run_id, "--json", "-q")
    tasks = json.loads(cluster.simctl("results", run_id, "--format", "json").stdout)["tasks"]
    echo = [t for t in tasks if t["kind"] == "echo"]
    assert [t["summary"]["y"] for t in echo] == [2.0, 4.0, 6.0]
    assert {t["worker_id"] for t in echo} == {"lab"}
    assert {(t["kind_version"], t["package"], t["package_version"]) for t in echo} == {
        ("1.0", "labkind", "1.0")}
    assert {t["package"] for t in tasks if t["kind"] == "sleep"} == {"particle-sim"}

    # The same file again: nothing runs, every result is reused; two new points run alone.
    again = cluster.simctl_json("run", str(first), "--json", "-q")
    assert (again["done"], again["reused"], again["tasks"]) == (5, 5, 5)
    reused = json.loads(cluster.simctl("results", again["run_id"], "--format",
                                       "json").stdout)["tasks"]
    assert {t["reused_from"] for t in reused} == {t["task_id"] for t in tasks}
    wider = echo_file(cluster, "wider", [0.5, 1.0, 2.0, 3.0, 4.0])
    more = cluster.simctl_json("run", str(wider), "--json", "-q")
    rows = json.loads(cluster.simctl("results", more["run_id"], "--format",
                                     "json").stdout)["tasks"]
    ran = sorted(t["params"]["x"] for t in rows if t["kind"] == "echo" and not t["reused_from"])
    assert ran == [0.5, 4.0]
    fresh = cluster.simctl_json("run", str(first), "--no-reuse", "--json", "-q")
    rows = json.loads(cluster.simctl("results", fresh["run_id"], "--format",
                                     "json").stdout)["tasks"]
    assert not any(t["reused_from"] for t in rows) and (fresh["done"], fresh["reused"]) == (5, 0)


def test_after_an_upgrade_pending_tasks_wait_for_their_version_until_revalidated(
        cluster: Cluster, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "1.0")
    cluster.extra_env = {"PYTHONPATH": str(site)}
    tasks = cluster.task_file("old", [{"kind": "echo", "sweep": {"x": [1.0, 2.0]}}])
    stored = cluster.simctl_json("run", str(tasks), "--detach", "--json")  # no worker yet
    run_id = stored["run_id"]
    cluster.kill_background_dispatchers()
    install_plugin(site, "1.1")  # the upgrade, here and on the worker
    cluster.start_agent("lab", 1)
    cluster.wait_online(["lab"])
    assert cluster.watcher.status("lab").kinds["echo"] == "1.1"
    waited = cluster.simctl("run", "--resume", run_id, "--timeout", "3", "-q")
    assert waited.returncode == 3
    assert ("2 pending tasks were validated with echo 1.0, installed here is 1.1"
            in waited.stderr), waited.stderr
    status = cluster.simctl_json("status", "--json")
    assert next(r for r in status["runs"] if r["run_id"] == run_id)["waiting"] == {"echo 1.0": 2}
    done = cluster.simctl_json("run", "--resume", run_id, "--revalidate", "--json", "-q")
    assert done["state"] == "done"
    rows = json.loads(cluster.simctl("results", run_id, "--format", "json").stdout)["tasks"]
    assert {t["kind_version"] for t in rows} == {"1.1"}


def test_a_failing_plugin_task_fails_alone(cluster: Cluster, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "1.0")
    cluster.extra_env = {"PYTHONPATH": str(site)}
    bad = cluster.task_file("bad", [{"kind": "echo", "params": {"x": 50.0, "scale": 1.0}}])
    done = cluster.simctl("validate", str(bad))
    assert done.returncode == 2 and "echo.x out of range: must be at most 10 * scale" in (
        done.stderr)
    cluster.start_agent("lab", 1)
    cluster.wait_online(["lab"])
    # A plugin whose run module breaks after validation: the task fails, the agent stays.
    (site / "labkind.py").write_text((site / "labkind.py").read_text().replace(
        "context.progress(0.5)", "raise RuntimeError('lab code broke')"))
    cluster.agents["lab"].kill()
    cluster.start_agent("lab", 1)
    cluster.wait_online(["lab"])
    ok = cluster.task_file("ok", [{"kind": "echo"}, {"kind": "sleep"}], max_attempts=2)
    summary = cluster.simctl_json("run", str(ok), "--json", "-q", codes=(1,))
    assert (summary["done"], summary["failed"]) == (1, 1)
    rows = json.loads(cluster.simctl("results", summary["run_id"], "--format",
                                     "json").stdout)["tasks"]
    echo = next(t for t in rows if t["kind"] == "echo")
    assert "RuntimeError: lab code broke" in echo["error"] and echo["attempts"] == 2
    wait_for(lambda: cluster.agents["lab"].alive, 5, what="the agent alive")
