"""Celery with a Redis broker and result backend, on two prefork workers of one process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.peers.common import (
    START_TIMEOUT_S,
    WORKERS,
    BenchError,
    RunOutcome,
    Sweep,
    find_tool,
    stop_all,
    wait_until,
    worker_env,
)
from benchmarks.peers.execution import counted_simulate, noop
from simctl.background import spawn_detached
from simctl.local_broker import free_port, port_open


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
    """A Celery app on a throw-away Redis, and its two worker processes."""

    def __init__(self, app: Any, workers: list[subprocess.Popen[bytes]]) -> None:
        self.app = app
        self.workers = workers

    @classmethod
    @contextlib.contextmanager
    def started(cls, state: Path, reliable: bool) -> Iterator[CelerySystem]:
        with redis_server(state) as url:
            workers = [
                spawn_detached(
                    [sys.executable, "-m", __name__, url, str(reliable), f"w{i + 1}"],
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


if __name__ == "__main__":
    # A worker process of CelerySystem: python -m benchmarks.peers.celery_redis URL RELIABLE NAME
    celery_worker_main(sys.argv[1], sys.argv[2] == "True", sys.argv[3])
