"""particle-sim, driven through its public CLI (worker-agent, simctl) on a local Mosquitto."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.peers.common import (
    SEED_BASE,
    START_TIMEOUT_S,
    WORKERS,
    BenchError,
    RunOutcome,
    Sweep,
    entry_point,
    stop_all,
    wait_until,
    worker_env,
)
from simctl.background import spawn_detached
from simctl.local_broker import LocalBroker, free_port

AGENT_HOOK_DIR = Path(__file__).resolve().parent / "agent_hook"
"""Put first on the agents' PYTHONPATH: its ``sitecustomize`` counts their executions."""


class ThisSystem:
    """particle-sim: a local Mosquitto, two worker agents, simctl on a ledger of its own."""

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
                        worker_env(PYTHONPATH=str(AGENT_HOOK_DIR), PEERS_EXEC_LOG=str(exec_log)),
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
