#!/usr/bin/env python3
"""particle-sim side by side with Celery (Redis broker and results) and Dask distributed.

Every system gets the same two worker processes (one per core, one task at a time each) on
this machine, runs the same workloads, and the systems take turns within each repetition so
machine noise hits all of them alike. Medians over the repetitions are reported.

Workloads:

1. overhead - N tasks that do nothing (a no-op function for the peers, the ``sleep`` kind
   with 0 s for particle-sim): tasks per second from the first submission to the last
   result available on the main side.
2. sweep - equal Lennard-Jones tasks (same parameters, different seeds), the same
   ``ckernel.simulate`` call in every system: makespan, and its ratio to the ideal (the sum
   of the task times measured alone, one after another, divided by the number of workers).
3. kill - workload 2 again, and once half of the tasks have finished, ``kill -9`` of a
   process that is running a task ("process": the Celery pool process, the Dask worker
   process, the agent's slot process) or of that worker's whole process group ("node": as
   when a worker machine or container dies). Counted: tasks lost (no result when the run
   ended), tasks that ran to completion more than once, whether the run finished in time.

particle-sim is driven only through its public CLI (``worker-agent``, ``simctl``) against a
local Mosquitto. Executions are counted the same way in every system: a wrapper around
``ckernel.simulate`` appends one line to a per-run file (O_APPEND) when a task starts and one
when it ends; for particle-sim the wrapper is installed into the agents' processes by a
``sitecustomize`` module on their PYTHONPATH, so the product's code is not changed.

Needs the ``bench`` extra (``pip install -e '.[bench]'``), Debian's ``redis-server`` and
``mosquitto``. ``--quick`` runs each workload once at a small size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from simctl.background import spawn_detached
from simctl.local_broker import LocalBroker, free_port, port_open

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH_DIR / "out" / "peers.json"
DEFAULT_PLOT = REPO / "docs" / "img" / "peers.png"
QUICK_OUTPUT = BENCH_DIR / "out" / "peers-quick.json"
QUICK_PLOT = BENCH_DIR / "out" / "peers-quick.png"
"""A smoke run must not overwrite the figures docs/benchmarks.md shows."""

WORKERS = 2
"""Worker processes per system: one per core of the reference machine."""

SWEEP_KIND = "lj"
SWEEP_PARAMS: dict[str, Any] = {
    "n_cells": 6,
    "density": 0.8,
    "temperature": 1.0,
    "steps": 2000,
}
"""The sweep task (864 atoms, 2,000 steps): one ckernel.simulate call of about 1.5 s here."""

SEED_BASE = 20261127
START_TIMEOUT_S = 60.0
"""How long a system's broker and workers may take to come up."""

THIS = "particle-sim"
CELERY = "celery"
DASK = "dask"
SYSTEMS = (THIS, CELERY, DASK)

SINGLE_THREAD_ENV = {
    # One BLAS/OpenMP thread per worker process in every system, so two processes use two cores.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class BenchError(Exception):
    """A benchmark could not run (missing tool, a system that did not start)."""


# ---------------------------------------------------------------------------------------------
# Execution counting, shared by every system


def log_execution(log_path: str, event: str, seed: int) -> None:
    """Append one ``event seed pid time`` line; O_APPEND keeps concurrent writers' lines whole."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {seed} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def counted_simulate(kind: str, params: dict[str, Any], seed: int, log_path: str) -> Any:
    """``ckernel.simulate`` with a start and an end line in the execution log."""
    import ckernel

    log_execution(log_path, "start", seed)
    result = ckernel.simulate(kind, params, seed)
    log_execution(log_path, "end", seed)
    return result


def noop(i: int) -> None:
    """The overhead task of the peers: nothing at all."""


SITECUSTOMIZE = '''\
"""Installed by benchmarks/peers.py: counts ckernel.simulate executions in particle-sim's agents."""
import os

_log = os.environ.get("PEERS_EXEC_LOG")
if _log:
    import time

    import ckernel

    _simulate = ckernel.simulate

    def _counted(kind, params, seed, *args, **kwargs):
        def line(event):
            fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{event} {seed} {os.getpid()} {time.time():.6f}\\n".encode())
            finally:
                os.close(fd)

        line("start")
        result = _simulate(kind, params, seed, *args, **kwargs)
        line("end")
        return result

    ckernel.simulate = _counted
'''


@dataclass
class ExecutionLog:
    """The start/end lines of one run, read back."""

    starts: dict[int, int] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    running_pids: list[int] = field(default_factory=list)
    busy_s: float = 0.0
    """Summed duration of the executions that ran to completion."""

    @classmethod
    def read(cls, path: Path) -> ExecutionLog:
        log = cls()
        last_event: dict[int, str] = {}
        started_at: dict[int, float] = {}
        order: list[int] = []
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue  # a line being written right now
            event, seed, pid, at = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
            counts = log.starts if event == "start" else log.ends
            counts[seed] = counts.get(seed, 0) + 1
            last_event[pid] = event
            if event == "start":
                order.append(pid)
                started_at[pid] = at
            elif pid in started_at:
                log.busy_s += at - started_at.pop(pid)
        # Processes whose latest line is a start are inside a task; latest start first.
        log.running_pids = [p for p in reversed(order) if last_event[p] == "start"]
        log.running_pids = list(dict.fromkeys(log.running_pids))
        return log

    @property
    def completed(self) -> int:
        return sum(self.ends.values())

    def ran_twice(self) -> int:
        """Tasks that ran to completion more than once."""
        return sum(1 for n in self.ends.values() if n > 1)

    def restarted(self) -> int:
        """Tasks that were started more than once (a killed attempt included)."""
        return sum(1 for n in self.starts.values() if n > 1)


class Killer(threading.Thread):
    """Once ``after_ends`` tasks have finished, waits ``delay_s`` and kill -9s a busy process."""

    POLL_S = 0.02

    def __init__(self, log_path: Path, after_ends: int, delay_s: float, mode: str) -> None:
        super().__init__(daemon=True)
        self.log_path = log_path
        self.after_ends = after_ends
        self.delay_s = delay_s
        self.mode = mode
        self.killed_pid: int | None = None
        self.killed_at: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            if ExecutionLog.read(self.log_path).completed >= self.after_ends:
                break
            time.sleep(self.POLL_S)
        else:
            return
        if self._stop_event.wait(self.delay_s):
            return
        for pid in ExecutionLog.read(self.log_path).running_pids:
            with contextlib.suppress(ProcessLookupError):
                if self.mode == "node":
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                self.killed_pid, self.killed_at = pid, time.monotonic()
                return

    def stop(self) -> None:
        self._stop_event.set()


# ---------------------------------------------------------------------------------------------
# Processes, ports, tools


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **SINGLE_THREAD_ENV, **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (extra.get("PYTHONPATH"), str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    return env


def stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left."""
    for p in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
        # Kill the whole group either way: children of a killed worker may be left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def find_tool(name: str, hint: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(f"{name} not found: {hint}")


def entry_point(name: str) -> str:
    """A console script of this project, next to the running interpreter if installed there."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return find_tool(name, "install the project: pip install -e '.[bench]'")


# ---------------------------------------------------------------------------------------------
# Workloads and results


@dataclass(frozen=True)
class Sweep:
    """``count`` equal ckernel.simulate tasks with seeds SEED_BASE, SEED_BASE + 1, ..."""

    kind: str
    params: dict[str, Any]
    count: int

    def seeds(self) -> list[int]:
        return [SEED_BASE + i for i in range(self.count)]


@dataclass
class RunOutcome:
    """What one workload run on one system produced."""

    seconds: float
    results: int
    finished: bool
    detail: dict[str, Any] = field(default_factory=dict)


class System(Protocol):
    """A running system with two worker processes."""

    def run_noop(self, count: int, timeout: float) -> RunOutcome: ...

    def run_sweep(self, sweep: Sweep, log_path: Path, timeout: float) -> RunOutcome: ...


# ---------------------------------------------------------------------------------------------
# Celery with Redis


def make_celery_app(url: str, reliable: bool) -> Any:
    """The benchmark's Celery app; ``reliable`` adds Celery's documented at-least-once settings."""
    from celery import Celery

    app = Celery("peers", broker=url, backend=url)
    if reliable:
        app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True)
    app.task(name="peers.noop")(noop)
    app.task(name="peers.simulate")(counted_simulate)
    return app


def celery_worker_main(url: str, reliable: bool, name: str) -> None:
    """Entry of a Celery worker process (started by CelerySystem): prefork pool of one."""
    app = make_celery_app(url, reliable)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            f"--hostname={name}@%h",
            "--loglevel=WARNING",
        ]
    )


@contextlib.contextmanager
def redis_server(state: Path) -> Iterator[str]:
    """A throw-away Debian redis-server on a free loopback port; yields its URL."""
    binary = find_tool(
        "redis-server",
        "the Celery benchmark needs Debian's Redis server: apt-get install -y redis-server",
    )
    port = free_port()
    proc = spawn_detached(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(state),
        ],
        state / "redis.log",
    )
    try:
        wait_until(lambda: port_open("127.0.0.1", port) or proc.poll() is not None,
                   START_TIMEOUT_S, "redis")
        if proc.poll() is not None:
            raise BenchError(f"redis-server exited; see {state / 'redis.log'}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_all([proc])


class CelerySystem:
    def __init__(self, app: Any, workers: list[subprocess.Popen[bytes]]) -> None:
        self.app = app
        self.workers = workers

    @classmethod
    @contextlib.contextmanager
    def started(cls, state: Path, reliable: bool) -> Iterator[CelerySystem]:
        with redis_server(state) as url:
            code = (
                f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import peers; "
                f"peers.celery_worker_main({url!r}, {reliable!r}, sys.argv[1])"
            )
            workers = [
                spawn_detached(
                    [sys.executable, "-c", code, f"w{i + 1}"],
                    state / f"celery-w{i + 1}.log",
                    worker_env(),
                )
                for i in range(WORKERS)
            ]
            app = make_celery_app(url, reliable)
            try:
                wait_until(
                    lambda: len(app.control.ping(timeout=0.5) or []) >= WORKERS,
                    START_TIMEOUT_S,
                    "two Celery workers",
                )
                yield cls(app, workers)
            finally:
                stop_all(workers)
                app.close()

    def _collect(self, results: Any, count: int, timeout: float) -> tuple[int, bool]:
        """Waits for every result (or the timeout); returns (successful results, all done)."""
        try:
            results.get(timeout=timeout, propagate=False)
            done = True
        except Exception:  # a timeout or a lost worker: either way the run did not finish
            done = False
        ok = sum(1 for r in results.results if r.successful())
        return ok, done and ok == count

    def run_noop(self, count: int, timeout: float) -> RunOutcome:
        from celery import group

        task = self.app.tasks["peers.noop"]
        started = time.perf_counter()
        results = group(task.s(i) for i in range(count)).apply_async()
        ok, done = self._collect(results, count, timeout)
        return RunOutcome(time.perf_counter() - started, ok, done)

    def run_sweep(self, sweep: Sweep, log_path: Path, timeout: float) -> RunOutcome:
        from celery import group

        task = self.app.tasks["peers.simulate"]
        started = time.perf_counter()
        results = group(
            task.s(sweep.kind, sweep.params, seed, str(log_path)) for seed in sweep.seeds()
        ).apply_async()
        ok, done = self._collect(results, sweep.count, timeout)
        return RunOutcome(time.perf_counter() - started, ok, done)


# ---------------------------------------------------------------------------------------------
# Dask distributed


class DaskSystem:
    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    @contextlib.contextmanager
    def started(cls, state: Path) -> Iterator[DaskSystem]:
        from distributed import Client

        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        scheduler = spawn_detached(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            state / "dask-scheduler.log",
        )
        processes = [scheduler]
        try:
            wait_until(lambda: port_open("127.0.0.1", port), START_TIMEOUT_S, "the Dask scheduler")
            for i in range(WORKERS):
                processes.append(
                    spawn_detached(
                        [
                            sys.executable,
                            "-m",
                            "distributed.cli.dask_worker",
                            address,
                            "--nworkers",
                            "1",
                            "--nthreads",
                            "1",
                            "--no-dashboard",
                            "--memory-limit",
                            "0",
                            "--name",
                            f"w{i + 1}",
                            "--local-directory",
                            str(state),
                        ],
                        state / f"dask-w{i + 1}.log",
                        worker_env(),
                    )
                )
            client = Client(address, timeout=START_TIMEOUT_S)
            try:
                client.wait_for_workers(WORKERS, timeout=START_TIMEOUT_S)
                yield cls(client)
            finally:
                client.close()
        finally:
            stop_all(processes[1:] + processes[:1])

    def _collect(self, futures: list[Any], count: int, timeout: float) -> tuple[int, bool]:
        from distributed import wait

        with contextlib.suppress(Exception):  # a timeout leaves some futures unfinished
            wait(futures, timeout=timeout)
        ok = sum(1 for f in futures if f.status == "finished")
        return ok, ok == count

    def run_noop(self, count: int, timeout: float) -> RunOutcome:
        started = time.perf_counter()
        futures = self.client.map(noop, range(count), pure=False)
        ok, done = self._collect(futures, count, timeout)
        if done:
            self.client.gather(futures)  # results on the main side, as the others deliver them
        return RunOutcome(time.perf_counter() - started, ok, done)

    def run_sweep(self, sweep: Sweep, log_path: Path, timeout: float) -> RunOutcome:
        started = time.perf_counter()
        futures = [
            self.client.submit(
                counted_simulate, sweep.kind, sweep.params, seed, str(log_path), pure=False
            )
            for seed in sweep.seeds()
        ]
        ok, done = self._collect(futures, sweep.count, timeout)
        if done:
            self.client.gather(futures)
        return RunOutcome(time.perf_counter() - started, ok, done)


# ---------------------------------------------------------------------------------------------
# particle-sim, through its CLI


class ThisSystem:
    def __init__(self, state: Path, broker: str, prefix: str) -> None:
        self.state = state
        self.broker = broker
        self.prefix = prefix
        self.ledger = state / "ledger.sqlite"
        self._runs = 0

    def simctl(self, *args: str) -> list[str]:
        return [
            entry_point("simctl"),
            "--broker",
            self.broker,
            "--topic-prefix",
            self.prefix,
            "--store",
            str(self.ledger),
            *args,
        ]

    @classmethod
    @contextlib.contextmanager
    def started(cls, state: Path, exec_log: Path) -> Iterator[ThisSystem]:
        broker = LocalBroker(state / "broker", free_port())
        broker.start()
        hook_dir = state / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        prefix = f"bench{os.getpid()}x{time.monotonic_ns() % 10**9}"
        system = cls(state, broker.address, prefix)
        agents: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(WORKERS):
                agents.append(
                    spawn_detached(
                        [
                            entry_point("worker-agent"),
                            "--broker",
                            broker.address,
                            "--topic-prefix",
                            prefix,
                            "--worker-id",
                            f"bench-w{i + 1}",
                            "--slots",
                            "1",
                            "--http-port",
                            "0",
                        ],
                        state / f"agent-w{i + 1}.log",
                        worker_env(PYTHONPATH=str(hook_dir), PEERS_EXEC_LOG=str(exec_log)),
                    )
                )
            try:
                wait_until(
                    lambda: (
                        system.online_workers() >= WORKERS
                        or any(a.poll() is not None for a in agents)
                    ),
                    START_TIMEOUT_S,
                    "two particle-sim agents to answer simctl ping",
                )
                if any(a.poll() is not None for a in agents):
                    raise BenchError("a worker-agent exited at start-up")
            except BenchError as e:
                logs = "\n".join(
                    f"--- {log.name}:\n{log.read_text()[-1500:]}"
                    for log in sorted(state.glob("agent-*.log"))
                )
                raise BenchError(f"{e}\n{logs}") from e
            yield system
        finally:
            stop_all(agents)
            broker.stop()

    def online_workers(self) -> int:
        proc = subprocess.run(
            self.simctl("ping", "--timeout", "1", "--json"),
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            return len(json.loads(proc.stdout)["workers"])
        except (ValueError, KeyError, TypeError):
            return 0

    def _run(self, tasks: dict[str, Any], timeout: float) -> RunOutcome:
        self._runs += 1
        taskfile = self.state / f"tasks-{self._runs}.json"
        # JSON is YAML: the task file is written as JSON to keep this script free of pyyaml.
        taskfile.write_text(json.dumps(tasks))
        argv = self.simctl("run", str(taskfile), "--json", "--timeout", f"{timeout:.0f}")
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout + 30, check=False
            )
        except subprocess.TimeoutExpired:
            return RunOutcome(time.perf_counter() - started, 0, False, {"error": "no exit"})
        wall = time.perf_counter() - started
        try:
            summary = json.loads(proc.stdout)
        except ValueError as e:
            raise BenchError(
                f"simctl run printed no JSON summary (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            ) from e
        count = sum(t.get("replicas", 1) for t in tasks["tasks"])
        done = int(summary.get("done", 0))
        finished = proc.returncode == 0 and done == count
        # The peers are timed from the first submission to the last result on the main side;
        # the matching span here is from the run stored in the ledger to its last result
        # stored, which excludes the CLI's own start-up (kept as wall_s for reference).
        seconds = wall
        if finished and summary.get("finished_at") and summary.get("created_at"):
            seconds = float(summary["finished_at"]) - float(summary["created_at"])
        return RunOutcome(
            seconds,
            done,
            finished,
            {
                "exit_code": proc.returncode,
                "duplicates": summary.get("duplicates"),
                "wall_s": wall,
                "run_id": summary.get("run_id"),
            },
        )

    def run_noop(self, count: int, timeout: float) -> RunOutcome:
        return self._run(
            {
                "name": "bench-overhead",
                "seed": SEED_BASE,
                "tasks": [{"kind": "sleep", "params": {"seconds": 0}, "replicas": count}],
            },
            timeout,
        )

    def run_sweep(self, sweep: Sweep, log_path: Path, timeout: float) -> RunOutcome:
        # The agents' execution log is fixed at start-up (environment); log_path is that file.
        return self._run(
            {
                "name": "bench-sweep",
                "seed": SEED_BASE,
                "tasks": [{"kind": sweep.kind, "params": sweep.params, "replicas": sweep.count}],
            },
            timeout,
        )


# ---------------------------------------------------------------------------------------------
# Orchestration


@dataclass(frozen=True)
class Config:
    system: str
    reliable: bool = False

    @property
    def label(self) -> str:
        if self.system == THIS:
            return THIS
        return f"{self.system} ({'reliable' if self.reliable else 'default'})"


@contextlib.contextmanager
def running(config: Config, root: Path, exec_log: Path) -> Iterator[System]:
    state = Path(tempfile.mkdtemp(prefix=f"{config.system}-", dir=root))
    if config.system == THIS:
        with ThisSystem.started(state, exec_log) as this:
            yield this
    elif config.system == CELERY:
        with CelerySystem.started(state, config.reliable) as celery:
            yield celery
    else:
        with DaskSystem.started(state) as dask:
            yield dask


def measure_alone(sweep: Sweep) -> list[float]:
    """Each task of the sweep timed alone, one after another, in a fresh single-thread process."""
    code = (
        "import json, sys, time, ckernel\n"
        "kind, params, seeds = json.loads(sys.argv[1])\n"
        "times = []\n"
        "for seed in seeds:\n"
        "    t = time.perf_counter(); ckernel.simulate(kind, params, seed)\n"
        "    times.append(time.perf_counter() - t)\n"
        "print(json.dumps(times))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([sweep.kind, sweep.params, sweep.seeds()])],
        capture_output=True,
        text=True,
        env=worker_env(),
        check=True,
    )
    return list(json.loads(proc.stdout))


def rotated(items: list[Any], rep: int) -> list[Any]:
    k = rep % len(items)
    return items[k:] + items[:k]


@dataclass
class Plan:
    repetitions: int
    noop_count: int
    sweep: Sweep
    kill_modes: tuple[str, ...]
    systems: tuple[str, ...] = SYSTEMS
    kill_repetitions: int = 1

    def configs(self, reliable_variants: bool) -> list[Config]:
        """The configurations to run; ``reliable_variants`` adds Celery's reliable settings."""
        out = [Config(s) for s in self.systems]
        if reliable_variants and CELERY in self.systems:
            out.insert(out.index(Config(CELERY)) + 1, Config(CELERY, reliable=True))
        return out


def warm_up(system: System, sweep: Sweep, log_path: Path) -> None:
    """Imports and child processes ready before anything is timed."""
    system.run_noop(2 * WORKERS, START_TIMEOUT_S)
    system.run_sweep(Sweep(sweep.kind, sweep.params, WORKERS), log_path, START_TIMEOUT_S)


def run_benchmarks(plan: Plan, root: Path, say: Callable[[str], None]) -> dict[str, Any]:
    raw: dict[str, list[Any]] = {}

    def record(key: str, value: Any) -> None:
        if isinstance(value, dict):
            # The machine is shared: keep its load next to every figure, to read noise by.
            value["load1"] = os.getloadavg()[0]
        raw.setdefault(key, []).append(value)

    base = plan.configs(reliable_variants=False)
    kill_configs = plan.configs(reliable_variants=True)
    for rep in range(plan.repetitions):
        for config in rotated(base, rep):
            exec_log = Path(tempfile.mkstemp(prefix="exec-", dir=root)[1])
            with running(config, root, exec_log) as system:
                warm_up(system, plan.sweep, exec_log)
                out = system.run_noop(plan.noop_count, timeout=600)
                say(
                    f"rep {rep + 1} {config.label}: overhead {plan.noop_count / out.seconds:.0f} "
                    f"tasks/s ({out.results}/{plan.noop_count} results)"
                )
                record(f"{config.label}|overhead", asdict(out))
                exec_log.write_text("")  # count only the measured sweep's executions
                out = system.run_sweep(plan.sweep, exec_log, timeout=600)
                out.detail["busy_s"] = ExecutionLog.read(exec_log).busy_s
                say(
                    f"rep {rep + 1} {config.label}: sweep makespan {out.seconds:.2f} s, "
                    f"tasks ran {out.detail['busy_s']:.2f} s in all"
                )
                record(f"{config.label}|sweep", asdict(out))
        alone = measure_alone(plan.sweep)
        say(
            f"rep {rep + 1}: tasks alone sum {sum(alone):.2f} s, ideal {sum(alone) / WORKERS:.2f} s"
        )
        record("alone", alone)

    ideal = statistics.median(sum(a) / WORKERS for a in raw["alone"])
    # Twice the slowest measured sweep: on a loaded machine the sweep takes longer than
    # the ideal, and a system that recovers must not be cut off by the timeout.
    slowest = max(r["seconds"] for key, runs in raw.items() if key.endswith("|sweep") for r in runs)
    kill_timeout = max(20.0, 3 * ideal, 2 * slowest)
    for rep in range(plan.kill_repetitions):
        for config in rotated(kill_configs, rep):
            for mode in plan.kill_modes:
                exec_log = Path(tempfile.mkstemp(prefix="exec-", dir=root)[1])
                with running(config, root, exec_log) as system:
                    warm_up(system, plan.sweep, exec_log)
                    exec_log.write_text("")
                    killer = Killer(
                        exec_log,
                        plan.sweep.count // 2,
                        0.4 * ideal * WORKERS / plan.sweep.count,
                        mode,
                    )
                    killer.start()
                    out = system.run_sweep(plan.sweep, exec_log, timeout=kill_timeout)
                    killer.stop()
                    killer.join()
                    log = ExecutionLog.read(exec_log)
                    out.detail.update(
                        killed_pid=killer.killed_pid,
                        lost=plan.sweep.count - out.results,
                        ran_twice=log.ran_twice(),
                        restarted=log.restarted(),
                        executions=log.completed,
                    )
                say(
                    f"rep {rep + 1} {config.label} kill {mode}: killed {killer.killed_pid}, "
                    f"finished {out.finished}, lost {out.detail['lost']}, "
                    f"ran twice {out.detail['ran_twice']}, {out.seconds:.1f} s"
                )
                record(f"{config.label}|kill-{mode}", asdict(out))
    return {"raw": raw, "ideal_s": ideal, "kill_timeout_s": kill_timeout}


# ---------------------------------------------------------------------------------------------
# Report


def summarise(plan: Plan, measured: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (system, workload, figure): the median over repetitions and its ratio."""
    raw = measured["raw"]
    ideal = measured["ideal_s"]
    rows: list[dict[str, Any]] = []
    labels = [c.label for c in plan.configs(reliable_variants=False)]
    kill_labels = [c.label for c in plan.configs(reliable_variants=True)]

    def add(system: str, workload: str, figure: str, values: list[float], unit: str) -> None:
        rows.append(
            {
                "system": system,
                "workload": workload,
                "figure": figure,
                "unit": unit,
                "median": statistics.median(values),
                "values": values,
            }
        )

    for label in labels:
        runs = raw[f"{label}|overhead"]
        add(label, "overhead", "tasks/s", [plan.noop_count / r["seconds"] for r in runs], "1/s")
    for label in labels:
        runs = raw[f"{label}|sweep"]
        add(label, "sweep", "makespan", [r["seconds"] for r in runs], "s")
        add(label, "sweep", "makespan / ideal", [r["seconds"] / ideal for r in runs], "")
        # Against the task time measured inside the same run: what the system itself adds,
        # whatever the machine's load did to the tasks' speed meanwhile.
        add(
            label,
            "sweep",
            "makespan / in-run ideal",
            [r["seconds"] / (r["detail"]["busy_s"] / WORKERS) for r in runs],
            "",
        )
    for mode in plan.kill_modes:
        for label in kill_labels:
            runs = raw[f"{label}|kill-{mode}"]
            workload = f"kill -9 ({mode})"
            add(label, workload, "lost", [r["detail"]["lost"] for r in runs], "tasks")
            add(label, workload, "ran twice", [r["detail"]["ran_twice"] for r in runs], "tasks")
            add(label, workload, "finished", [float(r["finished"]) for r in runs], "share of runs")
            add(
                label, workload, "time to last result or timeout", [r["seconds"] for r in runs], "s"
            )
    reference = {(r["workload"], r["figure"]): r["median"] for r in rows if r["system"] == THIS}
    for r in rows:
        ours = reference.get((r["workload"], r["figure"]))
        r["ratio"] = r["median"] / ours if ours else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"

    return tabulate(
        [
            (
                r["system"],
                r["workload"],
                f"{r['figure']}" + (f" ({r['unit']})" if r["unit"] else ""),
                fmt(r["median"]),
                fmt(r["ratio"]),
            )
            for r in rows
        ],
        headers=["system", "workload", "figure (median)", "value", "ratio to particle-sim"],
        tablefmt="github",
    )


def plot(rows: list[dict[str, Any]], ideal: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pick(workload: str, figure: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["workload"] == workload and r["figure"] == figure]

    kill_workloads = list(
        dict.fromkeys(r["workload"] for r in rows if r["workload"].startswith("kill"))
    )
    fig, axes = plt.subplots(
        1, 2 + len(kill_workloads), figsize=(5 * (2 + len(kill_workloads)), 4.2)
    )
    overhead = pick("overhead", "tasks/s")
    bars = axes[0].bar(
        [r["system"] for r in overhead], [r["median"] for r in overhead], color=["C0", "C1", "C2"]
    )
    axes[0].bar_label(bars, fmt="%.0f")
    axes[0].set_title("overhead: no-op tasks per second (higher is better)")
    sweep = pick("sweep", "makespan")
    bars = axes[1].bar(
        [r["system"] for r in sweep], [r["median"] for r in sweep], color=["C0", "C1", "C2"]
    )
    in_run = {r["system"]: r["median"] for r in pick("sweep", "makespan / in-run ideal")}
    axes[1].bar_label(
        bars,
        labels=[f"{r['median']:.1f} s\n{in_run[r['system']]:.2f} x in-run ideal" for r in sweep],
    )
    axes[1].axhline(ideal, color="k", linestyle="--", label=f"ideal {ideal:.1f} s")
    axes[1].set_title("sweep: makespan in s (lower is better)")
    axes[1].legend(loc="lower right")
    for ax, workload in zip(axes[2:], kill_workloads, strict=True):
        lost = pick(workload, "lost")
        twice = pick(workload, "ran twice")
        xs = range(len(lost))
        for shift, data, label in ((-0.2, lost, "lost"), (0.2, twice, "ran twice")):
            bars = ax.bar(
                [x + shift for x in xs], [r["median"] for r in data], width=0.4, label=label
            )
            ax.bar_label(bars, fmt="%g")
        ax.set_xticks(list(xs), [r["system"] for r in lost])
        ax.set_title(f"{workload}: tasks (lower is better)")
        ax.legend()
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.margins(y=0.2)  # room for the bar labels
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("particle-sim", "paho-mqtt", "celery", "kombu", "redis", "dask", "distributed"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    for tool, argv in (("redis-server", ["--version"]), ("mosquitto", ["-h"])):
        with contextlib.suppress(OSError, BenchError, subprocess.SubprocessError):
            text = subprocess.run(
                [find_tool(tool, ""), *argv],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            out[tool] = text.splitlines()[0].strip() if text else "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["particle-sim commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return out


def check_prerequisites(systems: tuple[str, ...]) -> None:
    missing = [
        m
        for m in ("celery", "redis", "distributed", "matplotlib", "tabulate")
        if not _importable(m)
    ]
    if missing:
        raise BenchError(f"missing Python packages {', '.join(missing)}: pip install -e '.[bench]'")
    if CELERY in systems:
        find_tool(
            "redis-server",
            "the Celery benchmark needs Debian's Redis server: apt-get install -y redis-server",
        )
    if THIS in systems:
        find_tool(
            "mosquitto", "particle-sim needs Debian's Mosquitto: apt-get install -y mosquitto"
        )
        entry_point("simctl")
        entry_point("worker-agent")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark particle-sim against Celery (Redis) and Dask distributed on "
        "this machine, side by side: overhead, a Lennard-Jones sweep, a worker killed."
    )
    parser.add_argument(
        "--quick", action="store_true", help="each workload once at a small size (a smoke run)"
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=3,
        help="repetitions per workload (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--kill-repetitions",
        type=int,
        help="repetitions of the kill workload (default: --repetitions); its figures are "
        "counts, less sensitive to noise than the timings",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"JSON results file (default {DEFAULT_OUTPUT.relative_to(REPO)}; --quick: "
        f"{QUICK_OUTPUT.relative_to(REPO)})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help=f"PNG plot (default {DEFAULT_PLOT.relative_to(REPO)}; --quick: "
        f"{QUICK_PLOT.relative_to(REPO)})",
    )
    parser.add_argument(
        "--kill-modes", default="process,node", help="comma-separated: process, node (default both)"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {', '.join(SYSTEMS)} (default all)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep every system's logs, ledgers and execution logs here (default: a "
        "temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: print the table and draw the plot of an earlier JSON results file",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the JSON results instead of the table"
    )
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT
    if args.plot is None:
        args.plot = QUICK_PLOT if args.quick else DEFAULT_PLOT
    modes = tuple(m.strip() for m in args.kill_modes.split(",") if m.strip())
    if not modes or set(modes) - {"process", "node"}:
        parser.error(f"--kill-modes: expected process and/or node, got {args.kill_modes!r}")
    systems = tuple(x.strip() for x in args.systems.split(",") if x.strip())
    if not systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems: expected some of {', '.join(SYSTEMS)}, got {args.systems!r}")
    if args.repetitions < 1 or (args.kill_repetitions is not None and args.kill_repetitions < 1):
        parser.error("--repetitions and --kill-repetitions must be at least 1")
    if args.quick:
        plan = Plan(1, 500, Sweep(SWEEP_KIND, SWEEP_PARAMS, 6), modes, systems)
    else:
        plan = Plan(
            args.repetitions,
            5000,
            Sweep(SWEEP_KIND, SWEEP_PARAMS, 24),
            modes,
            systems,
            args.kill_repetitions or args.repetitions,
        )

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.from_json is not None:
        report = json.loads(args.from_json.read_text())
        plot(report["rows"], report["ideal_makespan_s"], args.plot)
        print(table(report["rows"]))
        return 0
    try:
        check_prerequisites(systems)
        started_versions = versions()  # the code measured, before anything else changes it
        if args.state_dir is not None:
            args.state_dir.mkdir(parents=True, exist_ok=True)
            measured = run_benchmarks(plan, args.state_dir.resolve(), say)
        else:
            with tempfile.TemporaryDirectory(prefix="peers-") as root:
                measured = run_benchmarks(plan, Path(root), say)
    except BenchError as e:
        print(f"peers.py: {e}", file=sys.stderr)
        return 2
    rows = summarise(plan, measured)
    report = {
        "command": " ".join(["python3", "benchmarks/peers.py", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "repetitions": plan.repetitions,
        "kill_repetitions": plan.kill_repetitions,
        "workers": WORKERS,
        "noop_tasks": plan.noop_count,
        "sweep": asdict(plan.sweep),
        "ideal_makespan_s": measured["ideal_s"],
        "kill_timeout_s": measured["kill_timeout_s"],
        "machine": machine(),
        "versions": started_versions,
        "rows": rows,
        "raw": measured["raw"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, measured["ideal_s"], args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(rows))
        print(f"\nJSON: {args.output}\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
