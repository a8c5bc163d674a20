"""Dispatch throughput of this checkout against another one, alternated in one session.

A change to the runtime must not cost throughput; on a shared, noisy machine only a ratio
measured side by side means anything. This runs ``benchmarks/dispatch.py`` (one throughput
run each, no memory run; as ``python -m benchmarks.dispatch`` in a checkout whose
``benchmarks`` is a package, as a script in older ones) in this checkout and in ``--base``
(another checkout, for example a ``git worktree`` of the parent commit, with its own
``.venv``), alternating, ``--rounds`` times, and prints each figure and the ratio of the
medians (this / base) of the target's measure: tasks per second from the run submitted to
the last result stored. Beside it, the CPU time of each run's whole process tree (broker,
agents, their task processes, simctl; interpreter start-ups included) per task: on a shared
machine it moves less with the neighbours' load than the throughput does.

    git worktree add /tmp/base HEAD~1 && (cd /tmp/base && python3 -m venv .venv \\
        && .venv/bin/pip install -e '.[test]')
    python -m benchmarks.dispatch_ab --base /tmp/base [--rounds 3] [--tasks 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parents[1]


def python_of(checkout: Path) -> str:
    """The checkout's own interpreter (its .venv), else this one."""
    candidate = checkout / ".venv/bin/python"
    return str(candidate) if candidate.exists() else sys.executable


def dispatch_command(checkout: Path) -> list[str]:
    """How the checkout runs its dispatch benchmark: as a module of the ``benchmarks``
    package, or (checkouts from before ``tests/support``) as a script."""
    if (checkout / "benchmarks/__init__.py").exists():
        return [python_of(checkout), "-m", "benchmarks.dispatch"]
    return [python_of(checkout), "benchmarks/dispatch.py"]


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process's finished descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(checkout: Path, tasks: int) -> tuple[float, float]:
    """Tasks per second (run submitted to last result stored) of one dispatch.py run, and
    the CPU milliseconds its process tree spent per task."""
    cpu_before = tree_cpu_s()
    done = subprocess.run(
        [*dispatch_command(checkout), "--tasks", str(tasks), "--repeat", "1",
         "--big-tasks", "0", "--json"],
        cwd=checkout, capture_output=True, text=True, timeout=900, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"dispatch.py failed in {checkout}:\n{done.stderr[-3000:]}")
    cpu_ms = (tree_cpu_s() - cpu_before) * 1000 / tasks
    summary = json.loads(done.stdout)["small"]["summary"]
    return tasks / (summary["finished_at"] - summary["created_at"]), cpu_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternated")
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tasks < 1:
        parser.error("--rounds and --tasks must be >= 1")
    rates: dict[str, list[float]] = {"this": [], "base": []}
    cpu: dict[str, list[float]] = {"this": [], "base": []}
    for round_number in range(args.rounds):
        # Alternate which goes first, so a trend in the machine's load favours neither.
        order = ("this", "base") if round_number % 2 == 0 else ("base", "this")
        for side in order:
            rate, cpu_ms = one_run(HERE if side == "this" else args.base, args.tasks)
            rates[side].append(rate)
            cpu[side].append(cpu_ms)
            print(f"round {round_number + 1} {side}: {rate:.0f} tasks/s, {cpu_ms:.2f} ms CPU"
                  " per task", file=sys.stderr)
    medians = {side: statistics.median(values) for side, values in rates.items()}
    ratio = medians["this"] / medians["base"]
    cpu_medians = {side: statistics.median(values) for side, values in cpu.items()}
    cpu_ratio = cpu_medians["this"] / cpu_medians["base"]
    if args.json:
        print(json.dumps({"rates": rates, "medians": medians, "ratio": ratio,
                          "cpu_ms_per_task": cpu, "cpu_medians": cpu_medians,
                          "cpu_ratio": cpu_ratio}, indent=2))
        return 0
    print(tabulate([[side, *(f"{v:.0f}" for v in values), f"{medians[side]:.0f}"]
                    for side, values in rates.items()],
                   headers=["checkout", *(f"run {i + 1}" for i in range(args.rounds)),
                            "median"]))
    print(f"\nthis / base (medians, tasks/s submitted -> last stored): {ratio:.3f}")
    print(f"CPU per task, median: this {cpu_medians['this']:.2f} ms, base "
          f"{cpu_medians['base']:.2f} ms (this / base {cpu_ratio:.3f}; lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
