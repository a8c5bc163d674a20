"""The command line of the peers benchmark: ``python -m benchmarks.peers``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.peers.common import (
    CELERY,
    DEFAULT_OUTPUT,
    DEFAULT_PLOT,
    QUICK_OUTPUT,
    QUICK_PLOT,
    REPO,
    SWEEP_KIND,
    SWEEP_PARAMS,
    SYSTEMS,
    THIS,
    WORKERS,
    BenchError,
    Sweep,
    entry_point,
    find_tool,
)
from benchmarks.peers.report import machine, plot, summarise, table, versions
from benchmarks.peers.run import Plan, run_benchmarks


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
        prog="python -m benchmarks.peers",
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
        print(f"benchmarks.peers: {e}", file=sys.stderr)
        return 2
    rows = summarise(plan, measured)
    report = {
        "command": " ".join(["python3", "-m", "benchmarks.peers", *(argv or sys.argv[1:])]),
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
