"""The report of a session: summary rows, the table, the plot, the machine and versions."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.peers.common import REPO, THIS, WORKERS, BenchError, find_tool
from benchmarks.peers.run import Plan


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
