"""Regenerate the pictures of docs/analysis.md: the example sweep's default plots.

Runs the example sweep (``configs/tasks.yaml``, about a minute) on a private local cluster
(``simctl local up`` with its own ``SIMCTL_LOCAL_DIR`` and XDG folders in a temporary
folder, so neither a running local cluster nor a user's settings are touched), then
``simctl plot RUN``, which writes every default plot of the run's kinds as
``docs/img/analysis-<kind>-<plot>.png``, and stops the cluster::

    .venv/bin/python scripts/analysis_figures.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

MAX_IMAGE_BYTES = 150_000
"""Largest picture this script lets into docs/ (the repository keeps every version)."""


def simctl(env: dict[str, str], *args: str) -> Any:
    """Run one simctl command with this interpreter; its stdout parsed as JSON."""
    done = subprocess.run([sys.executable, "-m", "simctl", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"simctl {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=Path, default=ROOT / "configs" / "tasks.yaml",
                        help="task file to run [default: configs/tasks.yaml]")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                        help="folder for the pictures [default: docs/img]")
    parser.add_argument("--workers", type=int, default=2, help="local workers [default: 2]")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="analysis-figures-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCTL_", "WORKER_"))}
        env["SIMCTL_LOCAL_DIR"] = str(Path(tmp) / "local")
        for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            env[var] = str(Path(tmp) / var.lower())
        env["MPLBACKEND"] = "Agg"
        simctl(env, "local", "up", "--workers", str(args.workers), "--json")
        try:
            run = simctl(env, "run", str(args.tasks), "--json", "--quiet")
            print(f"run {run['run_id']}: {run['done']} of {run['tasks']} tasks done",
                  file=sys.stderr)
            drawn = simctl(env, "plot", run["run_id"], "-o", str(args.out / "analysis.png"),
                           "--json")
        finally:
            simctl(env, "local", "down", "--json")
    too_big = []
    for file in drawn["files"]:
        size = Path(file).stat().st_size
        print(f"wrote {Path(file).relative_to(ROOT) if Path(file).is_relative_to(ROOT) else file}"
              f" ({size // 1000} KB)")
        if size > MAX_IMAGE_BYTES:
            too_big.append(file)
    for reason in drawn["skipped"]:
        print(f"left out: {reason}", file=sys.stderr)
    if too_big:
        print(f"larger than {MAX_IMAGE_BYTES // 1000} KB: {', '.join(too_big)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
