"""Process harness for the runtime's fault and end-to-end tests (and benchmarks/dispatch.py).

Everything here is real: worker agents and simctl run as subprocesses of this interpreter
against a real Mosquitto, and a :class:`Watcher` is a plain MQTT client that decodes the
traffic with :mod:`simproto` so a test can see, for instance, which task a worker is running
before it kills that worker. :class:`Cluster` owns every process it starts and kills them
all on :meth:`Cluster.close` (also when a test fails), printing the tail of every log;
pytest shows that output for failed tests only. The ``cluster`` fixture
(:mod:`tests.support.fixtures`) gives a test one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

import simproto as p
from simproto.connection import BrokerAddress, ConnectionSettings, connect, make_client
from tests.support.waiting import wait_for

SIMCTL_TIMEOUT_S = 120.0
"""Upper bound for one blocking simctl command; a hang fails the test instead of the suite."""

AGENT_START_TIMEOUT_S = 20.0
"""How long agents may take to announce themselves (start-up id check, imports, 2 busy cores)."""

LOG_TAIL_CHARS = 6000
"""How much of each process log is printed at teardown."""

TEST_HEARTBEAT_S = 0.2
"""Heartbeat interval of test agents: leases expire after 3 of these."""

TEST_KEEPALIVE_S = 1
"""MQTT keepalive of test agents, so the broker fires a frozen agent's Last Will in ~1.5 s."""


def agent_http_get(status: p.WorkerStatus | None, path: str) -> bytes:
    """GET ``path`` of a local agent's HTTP endpoint, at the port its status reports."""
    if status is None or not status.http_port:
        raise AssertionError(f"the agent reported no HTTP port in its status: {status}")
    url = f"http://127.0.0.1:{status.http_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def private_env(workdir: Path) -> dict[str, str]:
    """This environment without the runtime's own variables, and private XDG folders.

    Everything the runtime needs comes from flags, so a developer's SIMCTL_* settings or
    config file can never point a test at their real broker or ledger.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCTL_", "WORKER_"))}
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(workdir / "xdg" / var.lower())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def simctl_command() -> list[str]:
    """simctl run by this interpreter (the console script may belong to another one)."""
    return [sys.executable, "-c", "import sys; from simctl.cli import main; sys.exit(main())"]


def agent_command() -> list[str]:
    """worker-agent run by this interpreter."""
    return [sys.executable, "-m", "worker_agent"]


class Proc:
    """One subprocess in its own process group, with its output in files."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str],
                 separate_stdout: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = workdir / f"{name}.log"
        self.out_path = workdir / f"{name}.out" if separate_stdout else self.log_path
        with contextlib.ExitStack() as files:
            log = files.enter_context(open(self.log_path, "wb"))
            out = files.enter_context(open(self.out_path, "wb")) if separate_stdout else log
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                # Own group: signals reach the agent and its task children together, as when
                # a machine dies or freezes, and teardown can kill the whole tree.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (the agent and its task children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit; on timeout kill the group and fail with the log."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f} s\n{self.describe()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the group (resuming it first in case it is frozen) and reap the leader."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json(self) -> Any:
        """The JSON object the process printed on stdout (fails with the log otherwise)."""
        text = self.stdout()
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise AssertionError(f"{self.name} printed no JSON ({e})\n{self.describe()}") from e

    def check_alive(self) -> None:
        if not self.alive:
            raise AssertionError(
                f"{self.name} exited with code {self.popen.returncode}\n{self.describe()}"
            )

    def describe(self) -> str:
        text = f"--- {self.name} (pid {self.pid}): {' '.join(self.argv)}\n"
        if self.out_path != self.log_path:
            text += f"stdout: {self.stdout()[-LOG_TAIL_CHARS:]}\n"
        return text + f"log tail:\n{self.log()[-LOG_TAIL_CHARS:]}"


class Watcher:
    """An MQTT client recording every worker status, result and event of one cluster.

    It subscribes like any other client (no shared subscription, no effect on delivery to
    simctl), reconnects after a broker restart, and keeps what it saw for assertions.
    """

    def __init__(self, address: str, prefix: str, watch_results: bool = True) -> None:
        settings = ConnectionSettings(BrokerAddress.parse(address), prefix, keepalive_s=5)
        self.channels = [p.Channel.STATUS, p.Channel.EVENT]
        if watch_results:
            self.channels.append(p.Channel.RESULT)
        self.topics = settings.topics
        self._lock = threading.Lock()
        self.statuses: dict[str, p.WorkerStatus] = {}
        self.status_log: list[tuple[float, p.WorkerStatus]] = []
        """Every status seen, with the time it arrived (time.time())."""
        self.max_running: dict[str, int] = {}
        self.results: list[p.Result] = []
        self.events: list[p.Event] = []
        self.undecodable: list[str] = []
        self.client = make_client(settings, f"watcher-{uuid.uuid4().hex[:12]}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        connect(self.client, settings)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(self.topics.all_workers(ch), 1) for ch in self.channels])

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            decoded = p.decode_worker(self.topics, msg.topic, bytes(msg.payload)).message
        except p.DecodeError as e:
            with self._lock:
                self.undecodable.append(f"{msg.topic}: {e}")
            return
        with self._lock:
            match decoded:
                case p.WorkerStatus() as status:
                    self.statuses[status.worker_id] = status
                    self.status_log.append((time.time(), status))
                    self.max_running[status.worker_id] = max(
                        self.max_running.get(status.worker_id, 0), len(status.running))
                case p.Result() as result:
                    self.results.append(result)
                case p.Event() as event:
                    self.events.append(event)

    def status(self, worker_id: str) -> p.WorkerStatus | None:
        with self._lock:
            return self.statuses.get(worker_id)

    def running(self, worker_id: str) -> list[str]:
        """Task ids the worker's latest status lists as running (empty if unknown/offline)."""
        status = self.status(worker_id)
        if status is None or status.state == p.WorkerState.OFFLINE.value:
            return []
        return list(status.running)

    def online(self, worker_id: str) -> bool:
        status = self.status(worker_id)
        return status is not None and status.state == p.WorkerState.ONLINE.value

    def results_of(self, task_id: str) -> list[p.Result]:
        with self._lock:
            return [r for r in self.results if r.task_id == task_id]

    def executions(self, task_id: str) -> set[tuple[str, int, float]]:
        """Distinct executions of a task seen on the wire: (worker, attempt, started_at).

        A re-sent unacknowledged result repeats one execution; a task that really ran
        twice shows two.
        """
        return {(r.worker_id, r.attempt, r.started_at) for r in self.results_of(task_id)}

    def describe(self) -> str:
        """What was seen on the wire, for the log of a failed test."""
        with self._lock:
            lines = [f"watcher: {len(self.results)} results, {len(self.events)} events"]
            lines += [f"  status {s.worker_id}: {s.state}, running {s.running}"
                      for s in self.statuses.values()]
            lines += [f"  result {r.task_id} attempt {r.attempt} from {r.worker_id}: {r.state}"
                      f" started {r.started_at:.3f}" for r in self.results]
            lines += [f"  event {e.worker_id} {e.kind} {e.task_id}: {e.detail}"
                      for e in self.events]
        return "\n".join(lines)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Cluster:
    """Agents, simctl processes, a ledger and a watcher around one broker and topic prefix."""

    def __init__(self, broker_address: str, prefix: str, workdir: Path,
                 watch_results: bool = True) -> None:
        self.broker_address = broker_address
        self.prefix = prefix
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ledger = workdir / "ledger.sqlite"
        self.procs: list[Proc] = []
        self.agents: dict[str, Proc] = {}
        self.slots: dict[str, int] = {}
        self.extra_env: dict[str, str] = {}
        """Set for every process started from now on (a plugin on PYTHONPATH, say)."""
        self.watcher = Watcher(broker_address, prefix, watch_results)

    # ------------------------------------------------------------------ processes

    def env(self) -> dict[str, str]:
        """See :func:`private_env`; with :attr:`extra_env`."""
        return {**private_env(self.workdir), **self.extra_env}

    def _spawn(self, name: str, argv: list[str], separate_stdout: bool = False,
               env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.workdir, {**self.env(), **(env or {})}, separate_stdout)
        self.procs.append(proc)
        return proc

    def start_agent(self, worker_id: str, slots: int = 1, *extra: str,
                    heartbeat: float = TEST_HEARTBEAT_S,
                    keepalive: int = TEST_KEEPALIVE_S, env: dict[str, str] | None = None) -> Proc:
        """Start ``worker-agent`` (does not wait; see :meth:`wait_online`); ``env`` adds to
        or overrides its environment."""
        argv = [*agent_command(), "--broker", self.broker_address, "--topic-prefix", self.prefix,
                "--worker-id", worker_id, "--slots", str(slots), "--heartbeat", str(heartbeat),
                "--keepalive", str(keepalive), "--http-port", "0", *extra]
        proc = self._spawn(f"agent-{worker_id}-{len(self.procs)}", argv, env=env)
        self.agents[worker_id] = proc
        self.slots[worker_id] = slots
        return proc

    def start_agents(self, slots: dict[str, int], **options: Any) -> None:
        """Start agents (worker id -> slots) together and wait until all are online.

        ``options`` go to :meth:`start_agent` (heartbeat, keepalive).
        """
        for worker_id, n in slots.items():
            self.start_agent(worker_id, n, **options)
        self.wait_online(slots)

    def wait_online(self, worker_ids: Iterable[str]) -> None:
        ids = list(worker_ids)

        def all_online() -> bool:
            for worker_id in ids:
                self.agents[worker_id].check_alive()
            return all(self.watcher.online(w) for w in ids)

        wait_for(all_online, AGENT_START_TIMEOUT_S, what=f"agents {ids} online")

    def http_get(self, worker_id: str, path: str) -> bytes:
        """GET ``path`` of an agent's HTTP endpoint (see :func:`agent_http_get`)."""
        return agent_http_get(self.watcher.status(worker_id), path)

    def http_ping(self, worker_id: str) -> dict[str, Any]:
        """An agent's ``GET /ping``."""
        return dict(json.loads(self.http_get(worker_id, "/ping")))

    def metrics(self, worker_id: str) -> dict[str, float]:
        """An agent's ``GET /metrics`` as metric name -> value (summed over its labels)."""
        values: dict[str, float] = {}
        for line in self.http_get(worker_id, "/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                name_and_labels, value = line.rsplit(" ", 1)
                name = name_and_labels.split("{", 1)[0]
                values[name] = values.get(name, 0.0) + float(value)
        return values

    def simctl_argv(self, *args: str, store: Path | None = None) -> list[str]:
        """simctl on this cluster's broker and prefix, with this cluster's ledger or ``store``."""
        # Info level: a failing test's log shows what the dispatcher saw and decided.
        return [*simctl_command(), "--broker", self.broker_address, "--topic-prefix",
                self.prefix, "--store", str(store or self.ledger), "--log-level", "info", *args]

    def simctl(self, *args: str, timeout: float = SIMCTL_TIMEOUT_S,
               store: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run one simctl command to completion."""
        argv = self.simctl_argv(*args, store=store)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=self.env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"simctl {' '.join(args)} did not finish within {timeout:.0f} s\n"
                f"stdout: {e.stdout!r:.2000}\nstderr: {e.stderr!r:.3000}"
            ) from None

    def simctl_json(self, *args: str, codes: tuple[int, ...] = (0,),
                    timeout: float = SIMCTL_TIMEOUT_S, store: Path | None = None) -> Any:
        """Run a simctl command whose stdout is one JSON document; check its exit code."""
        done = self.simctl(*args, timeout=timeout, store=store)
        detail = f"simctl {' '.join(args)} exited {done.returncode}\nstdout: " \
                 f"{done.stdout[-LOG_TAIL_CHARS:]}\nstderr: {done.stderr[-LOG_TAIL_CHARS:]}"
        if done.returncode not in codes:
            raise AssertionError(f"expected exit code in {codes}: {detail}")
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"stdout is not one JSON document ({e}): {detail}") from e

    def start_simctl(self, name: str, *args: str, store: Path | None = None) -> Proc:
        """Start a long simctl command (``run``) in the background; stdout kept apart."""
        return self._spawn(name, self.simctl_argv(*args, store=store), separate_stdout=True)

    # ---------------------------------------------------------------- runs and results

    def task_file(self, name: str, tasks: list[dict[str, Any]], *, seed: int = 20261127,
                  max_attempts: int = 3, defaults: dict[str, Any] | None = None,
                  checkpoint_every_s: float | None = None) -> Path:
        """Write a task file in the documented form and return its path."""
        doc: dict[str, Any] = {"name": name, "seed": seed, "max_attempts": max_attempts}
        if checkpoint_every_s is not None:
            doc["checkpoint_every_s"] = checkpoint_every_s
        if defaults:
            doc["defaults"] = defaults
        doc["tasks"] = tasks
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def results(self, run_id: str, *extra: str,
                store: Path | None = None) -> dict[str, dict[str, Any]]:
        """``simctl results RUN --format json`` as task id -> row (fails on repeated ids)."""
        doc = self.simctl_json("results", run_id, "--format", "json", *extra, store=store)
        assert doc["run_id"] == run_id, doc
        rows: dict[str, dict[str, Any]] = {}
        for row in doc["tasks"]:
            assert row["task_id"] not in rows, f"task {row['task_id']} listed twice: {doc}"
            rows[row["task_id"]] = row
        return rows

    def run_id_of(self, name: str) -> str:
        """The id of the run named ``name``, from ``simctl status --json`` (waits for it)."""
        def find() -> str | None:
            doc = self.simctl_json("status", "--json")
            for run in doc["runs"]:
                if run.get("name") == name:
                    return str(run.get("run_id") or run.get("id"))
            return None

        return str(wait_for(find, 30, interval=0.2, what=f"run {name!r} in simctl status"))

    def done_tasks(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Rows of the run's tasks that the ledger has as done."""
        return {t: row for t, row in self.results(run_id).items() if row["state"] == "done"}

    # -------------------------------------------------------------------- teardown

    def close(self, show_logs: bool = True) -> None:
        """Kill every process started here, then print their logs (pytest shows them on
        failure only)."""
        for proc in self.procs:
            proc.kill()
        self.kill_background_dispatchers()
        self.watcher.close()
        if not show_logs:
            return
        for proc in self.procs:
            print(proc.describe())
        for log in self.workdir.glob("*.dispatcher.log"):
            print(f"--- {log.name} tail:\n{log.read_text(errors='replace')[-LOG_TAIL_CHARS:]}")
        print(self.watcher.describe())
        if self.watcher.undecodable:
            print("undecodable messages seen:", *self.watcher.undecodable[:20], sep="\n  ")

    def kill_background_dispatchers(self) -> None:
        """Kill dispatchers simctl started in the background for this cluster's ledger.

        simctl detaches them into their own session (``run --detach``, or a foreground run
        handing over other active runs), so they escape the process groups killed above;
        they are found by the ledger path on their command line, unique to this cluster.
        """
        me = str(os.getpid())
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue  # the process is gone
            pid = cmdline.parent.name
            if pid != me and str(self.ledger).encode() in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def sleep_tasks(replicas: int, seconds: float) -> list[dict[str, Any]]:
    """The task-file entries of ``replicas`` identical ``sleep`` tasks."""
    return [{"kind": "sleep", "params": {"seconds": seconds}, "replicas": replicas}]


def assert_run_complete(summary: dict[str, Any], rows: dict[str, dict[str, Any]],
                        total: int) -> None:
    """A run's ``--json`` summary and its results say: all ``total`` tasks done, once each."""
    assert (summary["tasks"], summary["done"], summary["failed"]) == (total, total, 0), summary
    assert len(rows) == total, sorted(rows)
    not_done = {t: (r["state"], r.get("error")) for t, r in rows.items() if r["state"] != "done"}
    assert not not_done, f"tasks not done: {not_done}"
