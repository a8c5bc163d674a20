"""Dask distributed: a scheduler and two single-threaded worker processes."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.peers.common import (
    START_TIMEOUT_S,
    WORKERS,
    RunOutcome,
    Sweep,
    stop_all,
    wait_until,
    worker_env,
)
from benchmarks.peers.execution import counted_simulate, noop
from simctl.background import spawn_detached
from simctl.local_broker import free_port, port_open


class DaskSystem:
    """A client of a Dask scheduler with two single-threaded workers."""

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
