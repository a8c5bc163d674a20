"""What every system of the peers benchmark shares: settings, processes, tools, workloads."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "benchmarks"
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
