"""The plan of a benchmark session and its measurements, systems taking turns."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.peers.celery_redis import CelerySystem
from benchmarks.peers.common import (
    CELERY,
    START_TIMEOUT_S,
    SYSTEMS,
    THIS,
    WORKERS,
    Sweep,
    System,
    worker_env,
)
from benchmarks.peers.dask_distributed import DaskSystem
from benchmarks.peers.execution import ExecutionLog, Killer
from benchmarks.peers.ours import ThisSystem


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
