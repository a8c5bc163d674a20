"""Kernel benchmarks: figures and ratios measured side by side in one run.

1. The standard Lennard-Jones benchmark (LAMMPS ``bench/in.lj``): fcc 20^3 cells = 32,000
   atoms, density 0.8442, T = 1.44, rc = 2.5 truncated, skin 0.3, list rebuilt every 20
   steps, dt = 0.005, 100 NVE steps; on the Cython and numpy backends and, when Debian's
   ``lammps`` package is installed (``lmp``), on LAMMPS with the same input.
2. The all-pairs N-body force (acceleration and potential) for N = 2048, both backends.
3. Peak resident memory of the 32,000-atom Cython run, in a fresh interpreter.

Timings on a shared machine are noisy, so every comparison is a ratio of runs interleaved in
this one process (best of ``--repeats``), and both wall-clock and CPU time are reported: on a
busy machine a one-thread kernel's CPU time is the fairer measure (LAMMPS's CPU time is its
loop time times its reported "% CPU use"). Everything runs on one thread (ckernel is serial;
OMP_NUM_THREADS=1 for numpy's BLAS and LAMMPS). The targets are checked on CPU-time figures.
Usage: ``python benchmarks/kernels.py [--repeats 3] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LJ_BENCH = {"n_cells": 20, "density": 0.8442, "temperature": 1.44, "rc": 2.5,
            "potential": "truncated", "skin": 0.3, "rebuild_every": 20, "dt": 0.005,
            "steps": 100, "sample_every": 100, "ensemble": "nve"}
"""ckernel parameters equal to LAMMPS's bench/in.lj."""

LAMMPS_INPUT = """\
units           lj
atom_style      atomic
lattice         fcc 0.8442
region          box block 0 20 0 20 0 20
create_box      1 box
create_atoms    1 box
mass            1 1.0
velocity        all create 1.44 87287 loop geom
pair_style      lj/cut 2.5
pair_coeff      1 1 1.0 1.0 2.5
neighbor        0.3 bin
neigh_modify    delay 0 every 20 check no
fix             1 all nve
run             100
"""
"""LAMMPS's bench/in.lj (3-d Lennard-Jones melt)."""

NBODY_N = 2048
TARGETS = {"lj_cython_over_numpy": 6.0, "lj_cython_over_lammps": 0.6,
           "nbody_cython_over_numpy": 10.0, "lj_cython_atom_steps_per_cpu_s": 1.0e6,
           "lj_cython_peak_rss_mb": 200.0}
"""The issue's performance targets (a ratio or figure at least this, memory at most this)."""


def lammps_binary() -> str | None:
    """Debian installs LAMMPS as ``lmp``; other builds call it ``lmp_serial`` or ``lmp_mpi``."""
    for name in ("lmp", "lmp_serial", "lmp_mpi"):
        if path := shutil.which(name):
            return path
    return None


def run_lammps(binary: str) -> dict[str, float]:
    """Run bench/in.lj once; return its loop time, atom-steps/s and step-0 pair energy."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "in.lj").write_text(LAMMPS_INPUT)
        done = subprocess.run([binary, "-in", "in.lj", "-log", "none"], cwd=tmp,
                              capture_output=True, text=True, timeout=600, check=True)
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on 1 procs for 100 steps with 32000 atoms",
                     done.stdout)
    cpu = re.search(r"([0-9.]+)% CPU use", done.stdout)
    first = re.search(r"^\s+0\s+\S+\s+(\S+)", done.stdout, re.MULTILINE)
    if loop is None or first is None or cpu is None:
        raise RuntimeError(f"unexpected LAMMPS output:\n{done.stdout[-2000:]}")
    seconds = float(loop.group(1))
    cpu_seconds = seconds * float(cpu.group(1)) / 100.0
    return {"seconds": seconds, "cpu_seconds": cpu_seconds,
            "atom_steps_per_s": 32000 * 100 / seconds,
            "atom_steps_per_cpu_s": 32000 * 100 / cpu_seconds,
            "e_pair_step0": float(first.group(1))}


def run_ckernel(backend: str) -> dict[str, float]:
    """One benchmark run through the public API (setup included in the time, conservatively)."""
    import ckernel

    started = time.process_time()
    result = ckernel.simulate("lj", LJ_BENCH, 87287, backend=backend)
    cpu_seconds = time.process_time() - started
    meta = result["metadata"]
    return {"seconds": meta["elapsed_s"], "cpu_seconds": cpu_seconds,
            "atom_steps_per_s": meta["atom_steps_per_s"],
            "atom_steps_per_cpu_s": meta["atom_steps"] / cpu_seconds,
            "e_pair_step0": result["observables"]["potential_energy"][0]}


def time_gravity(backend: str, repeats: int) -> tuple[float, float]:
    """Best (wall, CPU) time of one all-pairs force + potential evaluation, N = NBODY_N."""
    import numpy as np

    from ckernel import _backend, nbody

    _, kernels = _backend.select(backend)
    masses, positions, _ = nbody.plummer_sphere(NBODY_N, np.random.default_rng(1))
    acc = np.empty_like(positions)
    wall = cpu = float("inf")
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        kernels.gravity(positions, masses, 1.0, 0.01, acc)
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - cpu_started)
    return wall, cpu


def peak_rss_mb(code: str) -> float:
    """Peak resident memory (MB) of a fresh interpreter running ``code``.

    Read from VmHWM: getrusage's ru_maxrss would carry over the high-water mark of the
    forked copy of this (larger) process across exec.
    """
    probe = ("\nfrom pathlib import Path\n"
             "print([l.split()[1] for l in Path('/proc/self/status').read_text().splitlines()"
             " if l.startswith('VmHWM')][0])")
    done = subprocess.run([sys.executable, "-c", code + probe],
                          capture_output=True, text=True, timeout=600, check=True)
    return int(done.stdout.split()[-1]) / 1024.0


def fastest(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the highest CPU-time throughput."""
    return max(runs, key=lambda r: r["atom_steps_per_cpu_s"])


def measure(repeats: int, with_numpy: bool, with_lammps: bool) -> dict[str, Any]:
    import ckernel  # noqa: F401  (fail early if the package is broken)
    from ckernel import _backend

    figures: dict[str, Any] = {"threads": _backend.THREADS, "lj_atoms": 32000,
                               "lj_steps": LJ_BENCH["steps"], "nbody_n": NBODY_N}
    binary = lammps_binary() if with_lammps else None
    figures["lammps"] = binary
    cython_runs, lammps_runs = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        cython_runs.append(run_ckernel("cython"))
        if binary:
            lammps_runs.append(run_lammps(binary))
    best = fastest(cython_runs)
    figures.update({f"lj_cython_{key}": value for key, value in best.items()})
    if lammps_runs:
        lbest = fastest(lammps_runs)
        figures.update({f"lj_lammps_{key}": value for key, value in lbest.items()})
        figures["lj_cython_over_lammps_wall"] = (best["atom_steps_per_s"]
                                                 / lbest["atom_steps_per_s"])
        figures["lj_cython_over_lammps"] = (best["atom_steps_per_cpu_s"]
                                            / lbest["atom_steps_per_cpu_s"])
    if with_numpy:
        numpy_run = run_ckernel("numpy")
        cython_again = fastest([best, run_ckernel("cython")])  # right next to the numpy run
        figures.update({f"lj_numpy_{key}": value for key, value in numpy_run.items()})
        figures["lj_cython_over_numpy_wall"] = (cython_again["atom_steps_per_s"]
                                                / numpy_run["atom_steps_per_s"])
        figures["lj_cython_over_numpy"] = (cython_again["atom_steps_per_cpu_s"]
                                           / numpy_run["atom_steps_per_cpu_s"])
    cy_wall, cy_cpu = time_gravity("cython", 3 * repeats)
    np_wall, np_cpu = time_gravity("numpy", repeats)
    figures.update({"nbody_cython_force_s": cy_wall, "nbody_cython_force_cpu_s": cy_cpu,
                    "nbody_numpy_force_s": np_wall, "nbody_numpy_force_cpu_s": np_cpu,
                    "nbody_cython_over_numpy_wall": np_wall / cy_wall,
                    "nbody_cython_over_numpy": np_cpu / cy_cpu})
    figures["lj_cython_peak_rss_mb"] = peak_rss_mb(
        f"import ckernel\nckernel.simulate('lj', {LJ_BENCH!r}, 1, backend='cython')")
    figures["python_numpy_ckernel_baseline_rss_mb"] = peak_rss_mb("import ckernel")
    return figures


def report(figures: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [(name, f"{value:.4g}" if isinstance(value, float) else value)
            for name, value in figures.items()]
    checks: list[tuple[str, str, str, str]] = []
    for name, target in TARGETS.items():
        at_most = name.endswith("_mb")
        wanted = f"{'<=' if at_most else '>='} {target:g}"
        if name not in figures:
            checks.append((name, "not measured", wanted, ""))
            continue
        ok = figures[name] <= target if at_most else figures[name] >= target
        checks.append((name, f"{figures[name]:.4g}", wanted, "yes" if ok else "NO"))
    return (tabulate(rows, headers=["figure", "value"]) + "\n\n"
            + tabulate(checks, headers=["target", "measured", "wanted", "met"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repetitions; the best of each is kept (default 3)")
    parser.add_argument("--no-numpy", action="store_true",
                        help="skip the slow numpy-backend LJ run (about 30 s)")
    parser.add_argument("--no-lammps", action="store_true", help="do not run LAMMPS")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    # ckernel is serial; this keeps numpy's BLAS (and LAMMPS) on one thread as well.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    figures = measure(args.repeats, not args.no_numpy, not args.no_lammps)
    figures["max_rss_this_process_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
