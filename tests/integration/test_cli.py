"""Every simctl command against a real Mosquitto and real worker agents: text, --json, exit codes.

simctl runs in-process through click's CliRunner (with its own environment, never
``os.environ``); worker agents are real subprocesses with 0.2 s heartbeats.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from simctl.cli import cli
from simctl.local_broker import LocalBroker, free_port
from simctl.mqtt import Observer
from simctl.taskfile import load
from simproto.connection import BrokerAddress, ConnectionSettings
from tests.support.waiting import wait_for

BAD_TASKFILE = "name: bad\ntasks:\n  - kind: sleep\n    params:\n      seconds: -2\n"


def clean_env(**extra: str) -> dict[str, str | None]:
    """The environment for one simctl call: none of the developer's SIMCTL_* settings."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("SIMCTL_", "XDG_"))}
    env.update(extra)
    return env


class Simctl:
    """simctl with one broker, topic prefix and ledger; ``__call__`` returns click's Result."""

    def __init__(self, tmp_path: Path, broker: str | None, prefix: str) -> None:
        self.store = tmp_path / "ledger.sqlite"
        self.local_dir = tmp_path / "local"
        self.base = ["--store", str(self.store), "--topic-prefix", prefix]
        if broker:
            self.base = ["--broker", broker, *self.base]
        self.env = clean_env(SIMCTL_LOCAL_DIR=str(self.local_dir),
                             XDG_CONFIG_HOME=str(tmp_path / "config"))

    def __call__(self, *args: str, code: int | None = 0) -> Result:
        result = CliRunner().invoke(cli, [*self.base, *args], env=self.env,
                                    catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (
                f"simctl {' '.join(args)} exited {result.exit_code}, expected {code}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code).stdout)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def sleep_file(tmp_path: Path, name: str, seconds: float, n: int, fail: int = 0) -> Path:
    text = f"name: {name}\nseed: 5\nmax_attempts: 2\ntasks:\n"
    text += f"  - kind: sleep\n    params: {{seconds: {seconds}}}\n    replicas: {n}\n"
    if fail:
        text += f"  - kind: sleep\n    params: {{fail: true}}\n    replicas: {fail}\n"
    return write(tmp_path, f"{name}.yaml", text)


@pytest.fixture
def simctl(tmp_path: Path, broker: LocalBroker, topic_prefix: str) -> Simctl:
    return Simctl(tmp_path, broker.address, topic_prefix)


@pytest.fixture
def agents(tmp_path: Path, broker: LocalBroker, topic_prefix: str) -> Iterator[list[str]]:
    """Two real worker agents (w1, w2), one slot each, 0.2 s heartbeats, online."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCTL_", "WORKER_"))}
    procs = []
    for worker_id in ("w1", "w2"):
        log = open(tmp_path / f"{worker_id}.log", "wb")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "worker_agent", "--broker", broker.address, "--worker-id",
             worker_id, "--slots", "1", "--topic-prefix", topic_prefix, "--heartbeat", "0.2",
             "--http-port", "0", "--grace", "2"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        ), log))
    settings = ConnectionSettings(BrokerAddress.parse(broker.address), topic_prefix=topic_prefix)
    try:
        with Observer(settings) as obs:
            wait_for(lambda: all(w in obs.snapshot()[0] and obs.snapshot()[0][w].state == "online"
                                 for w in ("w1", "w2")), 30, what="agents online")
        yield ["w1", "w2"]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


# --------------------------------------------------------------------- no broker needed


def test_help_is_there_for_every_command(tmp_path: Path) -> None:
    sim = Simctl(tmp_path, None, "p")
    out = sim("--help").stdout
    for command in ("run", "validate", "ping", "status", "monitor", "results", "cancel", "local"):
        assert command in out
    assert "_serve" not in out
    assert "simctl" in sim("--version").stdout
    for sub in ("up", "down", "status", "logs"):
        assert "Usage" in sim("local", sub, "--help").stdout


def test_validate_text_and_json(tmp_path: Path) -> None:
    sim = Simctl(tmp_path, None, "p")
    good = write(tmp_path, "good.yaml",
                 "name: g\nseed: 3\ntasks:\n  - kind: sleep\n    sweep: {seconds: [0, 1]}\n"
                 "    replicas: 3\n")
    version = metadata.version("particle-sim")  # the built-in kinds' version
    assert f"valid, 6 tasks (sleep {version}: 6)" in sim("validate", str(good)).stdout
    doc = sim.json("validate", str(good))
    assert doc == {"taskfile": str(good), "valid": True, "name": "g", "tasks": 6,
                   "kinds": {"sleep": 6}, "kind_versions": {"sleep": version}, "seed": 3,
                   "max_attempts": 3}
    assert not sim.store.exists()  # validate never touches the ledger


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("tasks: [oops\n", "bad.yaml:1"),  # the end of a 1-line file is on its line 1
        ("tasks:\n  - kind: warp\n", "bad.yaml:2: tasks[0].kind: unknown kind 'warp'"),
        ("tasks:\n  - kind: sleep\n    params: {naps: 3}\n", "bad.yaml:3: tasks[0].params.naps"),
        (BAD_TASKFILE, "bad.yaml:5: tasks[0].params.seconds"),
    ],
)
def test_bad_task_file_exits_2_naming_line_and_field(tmp_path: Path, text: str,
                                                     where: str) -> None:
    sim = Simctl(tmp_path, f"127.0.0.1:{free_port()}", "p")
    bad = write(tmp_path, "bad.yaml", text)
    for command in ("validate", "run"):
        result = sim(command, str(bad), code=2)
        assert where in result.stderr
        assert result.stdout == ""
    assert not sim.store.exists()  # nothing stored (run checks the file before anything)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    sim = Simctl(tmp_path, None, "p")
    assert "No such command" in sim("fly", code=2).stderr
    assert "invalid broker address" in sim("--broker", "mqtt://", "status", code=2).stderr
    assert "not both" in sim("--broker", "h:1", "run", "x.yaml", "--resume", "r", code=2).stderr
    sim("results", "no-such-run", code=2)


def test_unreachable_broker_exits_4_and_stores_nothing(tmp_path: Path) -> None:
    sim = Simctl(tmp_path, f"127.0.0.1:{free_port()}", "p")
    assert "cannot reach the broker" in sim("ping", code=4).stderr
    good = sleep_file(tmp_path, "g", 0, 2)
    assert "cannot reach the broker" in sim("run", str(good), code=4).stderr
    assert sim.json("status", code=4) == {"workers": [], "runs": [], "rejected": {}}


def test_resume_against_another_broker_or_prefix_is_refused_unless_told(
        tmp_path: Path, broker: LocalBroker, topic_prefix: str) -> None:
    """A run remembers the broker identity and prefix it was submitted to: resuming it on
    another broker (or prefix) would miss the results sent meanwhile, so simctl refuses
    unless told the broker changed; a new address of the same broker does not matter."""
    first = Simctl(tmp_path, broker.address, topic_prefix)
    slow = sleep_file(tmp_path, "slow", 30, 1)
    first("run", str(slow), "--timeout", "0.5", "--quiet", code=3)  # no worker: stays active
    run_id = first.json("status")["runs"][0]["run_id"]
    same_broker = Simctl(tmp_path, f"localhost:{broker.port}", topic_prefix)
    same_broker("run", "--resume", run_id, "--timeout", "0.5", "--quiet", code=3)

    other = LocalBroker(tmp_path / "other-broker", free_port())
    other.state_dir.mkdir()
    other.start()
    try:
        moved = Simctl(tmp_path, other.address, topic_prefix)
        refused = moved("run", "--resume", run_id, "--timeout", "0.5", code=2).stderr
        assert f"run {run_id} was submitted to broker" in refused, refused
        assert "--broker-changed" in refused
        other_prefix = Simctl(tmp_path, broker.address, topic_prefix + "-b")
        assert "topic prefix" in other_prefix("run", "--resume", run_id, code=2).stderr
        moved("run", "--resume", run_id, "--broker-changed", "--timeout", "0.5", "--quiet",
              code=3)
        # Now the run belongs to the other broker, and the first one is refused in turn.
        first("run", "--resume", run_id, "--timeout", "0.5", code=2)
    finally:
        other.stop()
    assert "--broker-changed goes with --resume" in first("run", "--broker-changed",
                                                          code=2).stderr


def test_no_broker_configured_points_to_local_up(tmp_path: Path) -> None:
    sim = Simctl(tmp_path, None, "p")
    assert "simctl local up" in sim("ping", code=4).stderr


def test_config_file_env_and_flag_precedence(tmp_path: Path) -> None:
    config = write(tmp_path, "config.yaml", f"store: {tmp_path / 'from-file.sqlite'}\n")
    env = clean_env(SIMCTL_CONFIG=str(config))

    def store_named(*args: str, **extra: str) -> str:
        result = CliRunner().invoke(cli, [*args, "status", "nope"], env={**env, **extra})
        assert result.exit_code == 2, result.output
        return result.stderr

    assert "from-file.sqlite" in store_named()
    assert "from-env.sqlite" in store_named(SIMCTL_STORE=str(tmp_path / "from-env.sqlite"))
    assert "from-flag.sqlite" in store_named(
        "--store", str(tmp_path / "from-flag.sqlite"),
        SIMCTL_STORE=str(tmp_path / "from-env.sqlite"),
    )
    bad = write(tmp_path, "bad-config.yaml", "colour: red\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "status"], env=clean_env())
    assert result.exit_code == 2 and "unknown setting 'colour'" in result.stderr


# ------------------------------------------------------------------------ with a broker


def test_ping_without_workers_exits_4(simctl: Simctl) -> None:
    assert "no worker answered" in simctl("ping", "--timeout", "0.5", code=4).stderr
    assert simctl.json("ping", "--timeout", "0.5", code=4) == {"workers": []}


def test_run_status_results_and_ping_with_agents(simctl: Simctl, agents: list[str],
                                                 tmp_path: Path) -> None:
    pings = simctl.json("ping")["workers"]
    assert [w["worker_id"] for w in pings] == agents
    assert set(pings[0]) == {"worker_id", "rtt_ms", "state", "slots", "free_slots", "version"}
    assert pings[0]["state"] == "online" and pings[0]["rtt_ms"] >= 0
    text = simctl("ping").stdout
    assert "w1" in text and "rtt_ms" in text

    # A run that succeeds: text output, exit 0.
    ok_file = sleep_file(tmp_path, "ok", 0.05, 4)
    out = simctl("run", str(ok_file)).stdout
    assert "sleep" in out and "done, 4/4 done, 0 failed" in out

    # A run with a failing task: exit 1; the JSON summary is the only thing on stdout.
    mixed = write(tmp_path, "mixed.yaml",
                  "name: mixed\nseed: 9\nmax_attempts: 2\ntasks:\n"
                  "  - kind: sleep\n    params: {seconds: 0.05}\n    replicas: 3\n"
                  "  - kind: sleep\n    params: {fail: true}\n"
                  "  - kind: brownian\n    params: {n_particles: 8, steps: 50, sample_every: 10}\n")
    summary = simctl.json("run", str(mixed), code=1)
    run_id = summary["run_id"]
    assert (summary["tasks"], summary["done"], summary["failed"], summary["duplicates"]) == (
        5, 4, 1, 0)
    assert summary["state"] == "failed"

    status = simctl.json("status")
    assert {w["worker_id"] for w in status["workers"]} == set(agents)
    assert all(w["state"] == "online" for w in status["workers"])
    assert [r["name"] for r in status["runs"]] == ["ok", "mixed"]
    assert status["runs"][1]["done"] == 4
    text = simctl("status").stdout
    assert "w2" in text and "mixed" in text and "4/5" in text

    per_task = simctl.json("status", run_id)
    assert per_task["run"]["run_id"] == run_id
    states = [t["state"] for t in per_task["tasks"]]
    assert states == ["done", "done", "done", "failed", "done"]
    assert "failed on purpose" in per_task["tasks"][3]["error"]
    assert "failed on purpose" in simctl("status", run_id).stdout

    # results: JSON with the exact seeds of the task file, observables on request.
    seeds = [t.seed for t in load(mixed).tasks]
    doc = simctl.json("results", run_id)
    assert doc["run_id"] == run_id
    assert [t["seed"] for t in doc["tasks"]] == seeds
    first = doc["tasks"][0]
    for key in ("task_id", "kind", "params", "seed", "state", "summary", "worker_id",
                "attempts", "elapsed_s", "error"):
        assert key in first
    assert first["worker_id"] in agents and first["attempts"] == 1
    full = json.loads(simctl("results", run_id, "--format", "json", "--observables").stdout)
    brownian = full["tasks"][4]
    import ckernel

    direct = ckernel.simulate("brownian", brownian["params"], brownian["seed"])
    assert brownian["observables"] == direct["observables"]
    assert brownian["summary"] == direct["summary"]

    rows = list(csv.DictReader(io.StringIO(simctl("results", run_id, "--format", "csv").stdout)))
    assert len(rows) == 5
    assert list(rows[0])[:9] == ["task_id", "kind", "kind_version", "state", "seed",
                                 "worker_id", "attempts", "elapsed_s", "reused_from"]
    assert rows[0]["param.seconds"] == "0.05" and "summary.seconds" in rows[0]
    assert rows[3]["state"] == "failed"

    out_file = tmp_path / "out.csv"
    simctl("results", run_id, "--format", "csv", "-o", str(out_file))
    assert out_file.read_text().startswith("task_id,kind,kind_version,state")
    assert run_id in simctl("results", run_id).stdout


def test_timeout_exits_3_then_cancel(simctl: Simctl, agents: list[str], tmp_path: Path) -> None:
    slow = sleep_file(tmp_path, "slow", 30, 4)
    result = simctl("run", str(slow), "--timeout", "1", "--json", code=3)
    assert "--resume" in result.stderr
    run_id = simctl.json("status")["runs"][0]["run_id"]
    assert simctl.json("status", run_id)["run"]["state"] == "active"
    out = simctl("cancel", run_id).stdout
    assert "cancelled run" in out and "2 running tasks told to stop" in out
    assert simctl.json("status", run_id)["run"]["state"] == "cancelled"
    # Seen from another ledger, the run's retained progress says cancelled, not active.
    elsewhere = Simctl(tmp_path / "elsewhere", simctl.base[1], simctl.base[-1])
    assert elsewhere.json("monitor", "--count", "1")["runs"] == []
    again = simctl.json("cancel", run_id)
    assert again["state"] == "cancelled" and again["stopped"] == 0

    def idle() -> bool:
        workers = simctl.json("status")["workers"]
        return all(w["busy_slots"] == 0 for w in workers)

    wait_for(idle, 20, interval=0.2, what="agents idle after cancel")


def test_detach_then_resume_follows_to_the_end(simctl: Simctl, agents: list[str],
                                               tmp_path: Path) -> None:
    tasks = sleep_file(tmp_path, "bg", 0.2, 6)
    result = simctl("run", str(tasks), "--detach")
    run_id = result.stdout.strip()
    assert run_id and "background" in result.stderr
    summary = simctl.json("run", "--resume", run_id, "--timeout", "60")
    assert (summary["run_id"], summary["done"], summary["tasks"]) == (run_id, 6, 6)
    # --resume of a finished run just reports it.
    assert simctl.json("run", "--resume", run_id)["state"] == "done"
    detached = simctl.json("run", str(tasks), "--detach")
    assert detached["detached"] is True and detached["tasks"] == 6
    wait_for(lambda: simctl.json("status", detached["run_id"])["run"]["state"] == "done", 60,
             interval=0.2, what="the detached run done")


def test_monitor_refreshes_count_times(simctl: Simctl, agents: list[str]) -> None:
    lines = simctl("monitor", "--count", "2", "--interval", "0.2", "--json").stdout
    docs = [json.loads(line) for line in lines.splitlines()]  # JSON Lines
    assert len(docs) == 2
    assert {w["worker_id"] for w in docs[0]["workers"]} == set(agents)
    assert docs[0]["throughput_per_s"] is None and docs[1]["throughput_per_s"] == 0
    text = simctl("monitor", "--count", "1", "--interval", "0.2").stdout
    assert "w1" in text and "throughput" in text


# --------------------------------------------------------------------------- local cluster


def test_local_up_run_down(tmp_path: Path, topic_prefix: str) -> None:
    """The local cluster uses generated credentials: nobody types any, and a client without
    them is refused; more workers join while the broker runs."""
    sim = Simctl(tmp_path, None, topic_prefix)
    assert sim.json("local", "status", code=4)["up"] is False
    try:
        sim("local", "up", "--workers", "2", "--heartbeat", "0.2", "--grace", "1")
        assert_local_broker_is_secured(sim.local_dir, topic_prefix)
        state = sim.json("local", "status")
        assert state["up"] is True
        names = [p["name"] for p in state["processes"]]
        assert names == ["broker", "worker1", "worker2"]
        assert all(p["running"] for p in state["processes"])
        assert state["processes"][1]["slots"] == max(1, (os.cpu_count() or 1) // 2)
        # Without --broker, simctl targets the local broker.
        summary = sim.json("run", str(sleep_file(tmp_path, "local", 0.05, 4)))
        assert summary["done"] == 4
        assert sim("local", "logs", "worker1", "-n", "5").stdout.strip()
        assert "==> broker" in sim("local", "logs").stdout
        sim("local", "logs", "nobody", code=2)
        # up again is harmless: everything is already running.
        sim("local", "up", "--workers", "2", "--heartbeat", "0.2")
        # A third worker gets its identity on the running broker (dynsec's control API).
        broker_pid = sim.json("local", "status")["processes"][0]["pid"]
        sim("local", "up", "--workers", "3", "--heartbeat", "0.2", "--grace", "1")
        assert sim.json("local", "status")["processes"][0]["pid"] == broker_pid
        pinged = {w["worker_id"] for w in sim.json("ping")["workers"]}
        assert pinged == {"worker1", "worker2", "worker3"}
    finally:
        stopped = sim.json("local", "down", "--timeout", "10")["stopped"]
    assert {s["name"] for s in stopped} == {"broker", "worker1", "worker2", "worker3"}
    assert all(s["result"] == "stopped" for s in stopped), stopped
    assert sim.json("local", "status", code=4)["up"] is False


def assert_local_broker_is_secured(local_dir: Path, prefix: str) -> None:
    """Credentials are private files; anonymous clients and stolen client ids are refused."""
    from tests.support.mqtt_probe import connect

    state = json.loads((local_dir / "state.json").read_text())
    assert state["username"] == "simctl"
    assert oct(local_dir.stat().st_mode & 0o777) == "0o700"
    for path in [*(local_dir / "credentials").iterdir(), local_dir / "dynamic-security.json"]:
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
    address = BrokerAddress.parse(state["broker"])
    worker2 = ConnectionSettings(address, topic_prefix=prefix, username="worker2",
                                 password_file=local_dir / "credentials/worker2.password")
    stem = prefix.replace("/", "_")
    for settings, client_id in ((ConnectionSettings(address, topic_prefix=prefix), "anonymous"),
                                (worker2, f"{stem}-simctl-dispatcher"),
                                (worker2, f"{stem}-worker-worker1")):
        client, rc = connect(settings, client_id)
        client.loop_stop()
        client.disconnect()
        assert str(rc) == "Not authorized", (settings.username, client_id, rc)
