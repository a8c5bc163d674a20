"""Kernel benchmarks: ratios against LAMMPS, REBOUND and the memory bandwidth, measured side
by side in one run (alternated repeats, medians).

1. Lennard-Jones, LAMMPS's ``bench/in.lj``: fcc 20^3 cells = 32,000 atoms, density 0.8442,
   T = 1.44, rc = 2.5 truncated, skin 0.3, list rebuilt every 20 steps without a check,
   dt = 0.005, NVE, for 100 and for 1,000 steps; ckernel (Cython, the SIMD variant this
   CPU runs) against LAMMPS with ``lj/cut`` and with ``lj/cut/opt`` (``-sf opt``), Debian's
   ``lmp``. Set-up is excluded on both sides: LAMMPS's "Loop time" against ckernel's
   ``loop_s`` (the step loop after the lattice, velocities, first list and forces, which is
   what LAMMPS's set-up does before its loop). Ratio = LAMMPS's time / ours (above 1: ours
   is faster).
2. N-body direct summation, Plummer sphere (ckernel's initial conditions for both), softening
   0.05, dt 0.01: REBOUND's ``gravity = "basic"`` with its leapfrog against ckernel's
   kick-drift-kick (one force evaluation per step each), wall time per step of the step
   loop, N = 512, 2,048 and 8,192. Ratio = REBOUND's time / ours.
3. Brownian (BAOAB, 10^6 free particles): particle-steps per second of the whole run on
   both backends, and of the update kernel alone against its memory-bandwidth bound (bytes
   it moves per particle-step over the bandwidth of a STREAM-like in-place add measured
   here, the same read-modify-write pattern; STREAM's Copy is reported too).

Each contender runs once per repeat, in an order rotated from repeat to repeat, and the
median is kept: the machine is shared, so only ratios from one run mean anything. ckernel
and LAMMPS run on one thread (OMP_NUM_THREADS=1). ``--profile`` adds where ckernel's LJ
time goes (forces, neighbour builds, integrator) for the 1,000-step run.

``--variants`` also runs ckernel's narrower SIMD variants (what a CPU without AVX-512, or a
non-x86 one, would get). Usage: ``python benchmarks/kernels.py [--repeats 3] [--quick]
[--profile] [--variants] [--numpy] [--json]``. ``--numpy`` adds the numpy backend.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LJ_BENCH = {"n_cells": 20, "density": 0.8442, "temperature": 1.44, "rc": 2.5,
            "potential": "truncated", "skin": 0.3, "rebuild_every": 20, "dt": 0.005,
            "steps": 100, "sample_every": 100, "ensemble": "nve"}
"""ckernel parameters equal to LAMMPS's bench/in.lj (steps set per run)."""

LJ_STEPS = (100, 1000)

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
run             {steps}
"""
"""LAMMPS's bench/in.lj (3-d Lennard-Jones melt)."""

LAMMPS_STYLES = {"lj/cut": [], "lj/cut/opt": ["-sf", "opt"]}

NBODY_N = (512, 2048, 8192)
NBODY_STEPS = {512: 50, 2048: 50, 8192: 6}
NBODY_SOFTENING = 0.05
NBODY_DT = 0.01

BROWNIAN_N = 1_000_000
BROWNIAN_STEPS = 20
BAOAB_BYTES = 5 * 3 * 8
"""Bytes one BAOAB particle-step moves: x, v and the noise read, x and v written."""

TARGETS = {
    "lj_1000_over_lammps_opt": 1.3,
    "nbody_2048_rebound_over_ours": 3.0,
    "lj_ours_peak_rss_mb": 200.0,
    "lj_100_ours_over_numpy": 6.0,
    "nbody_2048_ours_over_numpy": 10.0,
}
"""The targets: each ratio at least this, memory (``_mb``) at most this. The first two are
issue 12's; the last three are earlier ones (the numpy figures only with ``--numpy``)."""


def lammps_binary() -> str | None:
    """Debian installs LAMMPS as ``lmp``; other builds call it ``lmp_serial`` or ``lmp_mpi``."""
    for name in ("lmp", "lmp_serial", "lmp_mpi"):
        if path := shutil.which(name):
            return path
    return None


def lammps_version(binary: str) -> str:
    done = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=60)
    found = re.search(r"Large-scale Atomic/Molecular Massively Parallel Simulator - (.+)",
                      done.stdout)
    return found.group(1).strip() if found else "unknown"


def run_lammps(binary: str, style: str, steps: int) -> dict[str, float]:
    """Run bench/in.lj once; return its loop time, its pair and neighbour times and the
    step-0 pair energy and pressure."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "in.lj").write_text(LAMMPS_INPUT.format(steps=steps))
        done = subprocess.run([binary, "-in", "in.lj", "-log", "none", *LAMMPS_STYLES[style]],
                              cwd=tmp, capture_output=True, text=True, timeout=900,
                              check=True)
    out = done.stdout
    loop = re.search(rf"Loop time of ([0-9.eE+-]+) on 1 procs for {steps} steps", out)
    first = re.search(r"^\s+0\s+\S+\s+(\S+)\s+\S+\s+\S+\s+(\S+)", out, re.MULTILINE)
    if loop is None or first is None:
        raise RuntimeError(f"unexpected LAMMPS output:\n{out[-2000:]}")
    figures = {"seconds": float(loop.group(1)), "e_pair_step0": float(first.group(1)),
               "pressure_step0": float(first.group(2))}
    for section in ("Pair", "Neigh", "Comm", "Modify", "Output", "Other"):
        # "Pair | min | avg | max | ...", or "Other | | avg | ..." for the remainder.
        if found := re.search(rf"^{section}\s+\|\s+\|?\s*([0-9.]+)", out, re.MULTILINE):
            figures[section.lower() + "_s"] = float(found.group(1))
    return figures


def simd_forced(variant: str | None, run: Callable[[], T]) -> T:
    """``run()`` with the compiled kernels on SIMD ``variant`` (None: as they are)."""
    from ckernel import _backend

    compiled = _backend.compiled
    if variant is None or compiled is None:
        return run()
    before = compiled.simd_variant()
    compiled.use_simd(variant)
    try:
        return run()
    finally:
        compiled.use_simd(before)


def run_ckernel_lj(steps: int, variant: str | None = None,
                   backend: str = "cython") -> dict[str, float]:
    import ckernel

    result = simd_forced(variant, lambda: ckernel.simulate(
        "lj", {**LJ_BENCH, "steps": steps, "sample_every": steps}, 87287, backend=backend))
    meta = result["metadata"]
    return {"seconds": meta["loop_s"], "with_setup_s": meta["elapsed_s"],
            "e_pair_step0": result["observables"]["potential_energy"][0],
            "pressure_step0": result["observables"]["pressure"][0]}


def nbody_start(n: int) -> tuple[Any, Any, Any]:
    import numpy as np

    from ckernel import nbody

    return nbody.plummer_sphere(n, np.random.default_rng(n))


def run_rebound(n: int) -> dict[str, float]:
    import rebound

    masses, positions, velocities = nbody_start(n)
    sim = rebound.Simulation()
    sim.G = 1.0
    sim.gravity = "basic"
    sim.integrator = "leapfrog"
    sim.softening = NBODY_SOFTENING
    sim.dt = NBODY_DT
    for m, x, v in zip(masses, positions, velocities, strict=True):
        sim.add(m=float(m), x=float(x[0]), y=float(x[1]), z=float(x[2]),
                vx=float(v[0]), vy=float(v[1]), vz=float(v[2]))
    steps = NBODY_STEPS[n]
    started = time.perf_counter()
    sim.steps(steps)
    return {"seconds": (time.perf_counter() - started) / steps}


def run_ckernel_nbody(n: int, variant: str | None = None,
                      backend: str = "cython") -> dict[str, float]:
    return simd_forced(variant, lambda: _run_ckernel_nbody(n, backend))


def _run_ckernel_nbody(n: int, backend: str) -> dict[str, float]:
    from ckernel import _backend, nbody

    steps = NBODY_STEPS[n]
    masses, positions, velocities = nbody_start(n)
    bodies = [{"mass": float(m), "position": [float(c) for c in x],
               "velocity": [float(c) for c in v]}
              for m, x, v in zip(masses, positions, velocities, strict=True)]
    params = {"bodies": bodies, "softening": NBODY_SOFTENING, "dt": NBODY_DT, "steps": steps,
              "sample_every": steps}
    from ckernel.params import validate

    _, kernels = _backend.select(backend)
    record = nbody.run(validate("nbody", params), 1, None, kernels)
    return {"seconds": record.metadata["loop_s"] / steps}


def memory_bandwidth() -> dict[str, float]:
    """Bytes per second of two STREAM-like loops on 128 MB arrays, far beyond any cache:
    Copy (b = a, 16 bytes per element counted, as STREAM does; the write-allocate read of b
    is extra traffic it does not count) and an in-place add (a += b: 24 bytes per element,
    no write-allocate), the access pattern of the BAOAB update, which reads x, v and the
    noise and writes x and v back in place."""
    import numpy as np

    a = np.ones(1 << 24)
    b = np.ones(1 << 24)
    copy, add = [], []
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(b, a)
        copy.append(time.perf_counter() - started)
        started = time.perf_counter()
        np.add(a, b, out=a)
        add.append(time.perf_counter() - started)
    return {"copy_bytes_per_s": 2 * a.nbytes / statistics.median(copy),
            "add_bytes_per_s": 3 * a.nbytes / statistics.median(add)}


def run_brownian(backend: str) -> dict[str, float]:
    import ckernel

    result = ckernel.run("brownian", {"n_particles": BROWNIAN_N, "steps": BROWNIAN_STEPS,
                                      "sample_every": BROWNIAN_STEPS}, 3, backend=backend)[0]
    return {"particle_steps_per_s": BROWNIAN_N * BROWNIAN_STEPS / result.metadata["loop_s"]}


def run_baoab_kernel(backend: str) -> dict[str, float]:
    import numpy as np

    from ckernel import _backend

    _, kernels = _backend.select(backend)
    rng = np.random.default_rng(1)
    x, v, noise = (rng.standard_normal((BROWNIAN_N, 3)) for _ in range(3))
    started = time.perf_counter()
    for _ in range(BROWNIAN_STEPS):
        kernels.baoab_harmonic(x, v, 0.0, 0.01, 0.99, 0.1, noise)
    return {"particle_steps_per_s": BROWNIAN_N * BROWNIAN_STEPS
            / (time.perf_counter() - started)}


def alternate(contenders: dict[str, Callable[[], dict[str, float]]],
              repeats: int) -> dict[str, dict[str, float]]:
    """Run every contender ``repeats`` times, rotating the order; medians of each figure."""
    names = list(contenders)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(contenders[name]())
    return {name: {key: statistics.median(run[key] for run in results)
                   for key in results[0]} for name, results in runs.items()}


class TimedKernels:
    """The compiled kernel module with every call timed, by function name."""

    def __init__(self, kernels: Any) -> None:
        self.kernels = kernels
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        function = getattr(self.kernels, name)

        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds[name] = (self.seconds.get(name, 0.0)
                                      + time.perf_counter() - started)
        return timed


def profile_lj(steps: int) -> dict[str, float]:
    """Seconds per kernel function over one ``steps``-step in.lj run (set-up included)."""
    from ckernel import _backend, lj
    from ckernel.params import validate

    _, kernels = _backend.select("cython")
    timed = TimedKernels(kernels)
    started = time.perf_counter()
    lj.run(validate("lj", {**LJ_BENCH, "steps": steps, "sample_every": steps}), 87287, None,
           timed)
    total = time.perf_counter() - started
    figures = {f"profile_{name}_s": s for name, s in sorted(timed.seconds.items())}
    figures["profile_total_s"] = total
    figures["profile_driver_s"] = total - sum(timed.seconds.values())
    return figures


def peak_rss_mb(code: str) -> float:
    """Peak resident memory (MB) of a fresh interpreter running ``code`` (VmHWM: getrusage's
    ru_maxrss would carry over the high-water mark of this larger process across exec)."""
    probe = ("\nfrom pathlib import Path\n"
             "print([l.split()[1] for l in Path('/proc/self/status').read_text().splitlines()"
             " if l.startswith('VmHWM')][0])")
    done = subprocess.run([sys.executable, "-c", code + probe],
                          capture_output=True, text=True, timeout=600, check=True)
    return int(done.stdout.split()[-1]) / 1024.0


def machine() -> dict[str, Any]:
    import numpy as np

    from ckernel import _backend
    from simproto.protocol import package_version

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and (found := re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())):
        cpu = found.group(1).strip()
    compiled = _backend.compiled
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "package_version": package_version(),
            "simd_variant": compiled.simd_variant() if compiled else "none",
            "simd_available": ",".join(compiled.simd_available()) if compiled else ""}


def measure(repeats: int, quick: bool, with_lammps: bool, with_rebound: bool,
            with_profile: bool, with_variants: bool, with_numpy: bool) -> dict[str, Any]:
    from ckernel import _backend

    figures: dict[str, Any] = machine()
    binary = lammps_binary() if with_lammps else None
    steps_list = (100,) if quick else LJ_STEPS
    # With --variants, the narrower SIMD variants also run (in.lj at the most steps, N-body
    # at 2,048), to show what a machine without AVX-512 (or a non-x86 one) would get.
    compiled = _backend.compiled
    others = (compiled.simd_available()[:-1] if with_variants and compiled else ())
    contenders: dict[str, Callable[[], dict[str, float]]] = {}
    for variant in others:
        contenders[f"lj_{steps_list[-1]}_ours_{variant}"] = functools.partial(
            run_ckernel_lj, steps_list[-1], variant)
    if with_numpy:  # slow (about 20 s a run): the 100-step run only
        contenders["lj_100_numpy"] = functools.partial(run_ckernel_lj, 100, None, "numpy")
    for steps in steps_list:
        contenders[f"lj_{steps}_ours"] = functools.partial(run_ckernel_lj, steps)
        if binary:
            for style in LAMMPS_STYLES:
                tag = style.replace("lj/cut", "lammps").replace("/", "_")
                contenders[f"lj_{steps}_{tag}"] = functools.partial(run_lammps, binary, style,
                                                                    steps)
    if binary:
        figures["lammps"] = f"{binary} ({lammps_version(binary)})"
    for name, result in alternate(contenders, repeats).items():
        figures.update({f"{name}_{key}": value for key, value in result.items()})
    if with_numpy:
        figures["lj_100_ours_over_numpy"] = (figures["lj_100_numpy_seconds"]
                                             / figures["lj_100_ours_seconds"])
    for steps in steps_list:
        ours = figures[f"lj_{steps}_ours_seconds"]
        figures[f"lj_{steps}_ours_atom_steps_per_s"] = 32000 * steps / ours
        for tag in ("lammps", "lammps_opt"):
            if f"lj_{steps}_{tag}_seconds" in figures:
                figures[f"lj_{steps}_over_{tag}"] = figures[f"lj_{steps}_{tag}_seconds"] / ours
                for variant in others:
                    if f"lj_{steps}_ours_{variant}_seconds" in figures:
                        figures[f"lj_{steps}_{variant}_over_{tag}"] = (
                            figures[f"lj_{steps}_{tag}_seconds"]
                            / figures[f"lj_{steps}_ours_{variant}_seconds"])

    try:
        import rebound
    except ImportError:
        rebound = None
    sizes = (2048,) if quick else NBODY_N
    nbody_contenders: dict[str, Callable[[], dict[str, float]]] = {}
    for variant in others:
        nbody_contenders[f"nbody_2048_ours_{variant}"] = functools.partial(
            run_ckernel_nbody, 2048, variant)
    if with_numpy:
        nbody_contenders["nbody_2048_numpy"] = functools.partial(run_ckernel_nbody, 2048,
                                                                 None, "numpy")
    for n in sizes:
        nbody_contenders[f"nbody_{n}_ours"] = functools.partial(run_ckernel_nbody, n)
        if with_rebound and rebound is not None:
            nbody_contenders[f"nbody_{n}_rebound"] = functools.partial(run_rebound, n)
    if with_rebound and rebound is not None:
        figures["rebound"] = rebound.__version__
    for name, result in alternate(nbody_contenders, repeats).items():
        figures[f"{name}_s_per_step"] = result["seconds"]
    for n in sizes:
        if f"nbody_{n}_rebound_s_per_step" in figures:
            figures[f"nbody_{n}_rebound_over_ours"] = (figures[f"nbody_{n}_rebound_s_per_step"]
                                                       / figures[f"nbody_{n}_ours_s_per_step"])
    if with_numpy:
        figures["nbody_2048_ours_over_numpy"] = (figures["nbody_2048_numpy_s_per_step"]
                                                 / figures["nbody_2048_ours_s_per_step"])
    for variant in others:
        if "nbody_2048_rebound_s_per_step" in figures:
            figures[f"nbody_2048_{variant}_rebound_over_ours"] = (
                figures["nbody_2048_rebound_s_per_step"]
                / figures[f"nbody_2048_ours_{variant}_s_per_step"])

    brownian = alternate({"brownian_cython": functools.partial(run_brownian, "cython"),
                          "brownian_numpy": functools.partial(run_brownian, "numpy"),
                          "baoab_kernel_cython": functools.partial(run_baoab_kernel, "cython"),
                          "baoab_kernel_numpy": functools.partial(run_baoab_kernel, "numpy"),
                          "memory": memory_bandwidth}, repeats)
    figures["copy_bandwidth_gb_per_s"] = brownian["memory"]["copy_bytes_per_s"] / 1e9
    figures["add_bandwidth_gb_per_s"] = brownian["memory"]["add_bytes_per_s"] / 1e9
    bandwidth = brownian["memory"]["add_bytes_per_s"]
    for name in ("brownian_cython", "brownian_numpy", "baoab_kernel_cython",
                 "baoab_kernel_numpy"):
        figures[f"{name}_particle_steps_per_s"] = brownian[name]["particle_steps_per_s"]
    figures["baoab_bandwidth_bound_particle_steps_per_s"] = bandwidth / BAOAB_BYTES
    figures["brownian_cython_over_numpy"] = (figures["brownian_cython_particle_steps_per_s"]
                                             / figures["brownian_numpy_particle_steps_per_s"])
    figures["baoab_kernel_cython_fraction_of_bound"] = (
        figures["baoab_kernel_cython_particle_steps_per_s"]
        / figures["baoab_bandwidth_bound_particle_steps_per_s"])
    figures["lj_ours_peak_rss_mb"] = peak_rss_mb(
        f"import ckernel\nckernel.simulate('lj', {LJ_BENCH!r}, 1, backend='cython')")
    if with_profile:
        figures.update(profile_lj(1000 if not quick else 100))
    return figures


def report(figures: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [(name, f"{value:.4g}" if isinstance(value, float) else value)
            for name, value in figures.items()]
    side_by_side = []
    for steps in LJ_STEPS:
        for variant in ("", "portable", "avx2"):  # "": the variant the CPU chose
            ours = f"lj_{steps}_ours_{variant}_seconds" if variant else f"lj_{steps}_ours_seconds"
            over = f"lj_{steps}_{variant}_over" if variant else f"lj_{steps}_over"
            label = f"in.lj {steps} steps, loop s" + (f", {variant}" if variant else "")
            if ours in figures:
                side_by_side.append((label, figures[ours],
                                     figures.get(f"lj_{steps}_lammps_seconds", ""),
                                     figures.get(f"lj_{steps}_lammps_opt_seconds", ""),
                                     figures.get(f"{over}_lammps", ""),
                                     figures.get(f"{over}_lammps_opt", "")))
    for variant in ("portable", "avx2"):
        if f"nbody_2048_ours_{variant}_s_per_step" in figures:
            side_by_side.append((f"N-body N=2048, s per step, {variant}",
                                 figures[f"nbody_2048_ours_{variant}_s_per_step"],
                                 figures.get("nbody_2048_rebound_s_per_step", ""), "",
                                 figures.get(f"nbody_2048_{variant}_rebound_over_ours", ""), ""))
    for n in NBODY_N:
        if f"nbody_{n}_ours_s_per_step" in figures:
            side_by_side.append((f"N-body N={n}, s per step",
                                 figures[f"nbody_{n}_ours_s_per_step"],
                                 figures.get(f"nbody_{n}_rebound_s_per_step", ""), "",
                                 figures.get(f"nbody_{n}_rebound_over_ours", ""), ""))
    checks: list[tuple[str, str, str, str]] = []
    targets = {name.replace("lj_1000", "lj_100") if "lj_1000_ours_seconds" not in figures
               else name: target for name, target in TARGETS.items()}
    for name, target in targets.items():
        at_most = name.endswith("_mb")
        wanted = f"{'<=' if at_most else '>='} {target:g}"
        if name not in figures:
            checks.append((name, "not measured", wanted, ""))
            continue
        ok = figures[name] <= target if at_most else figures[name] >= target
        checks.append((name, f"{figures[name]:.3g}", wanted, "yes" if ok else "NO"))
    return (tabulate(rows, headers=["figure", "value"]) + "\n\n"
            + f"ours: the {figures.get('simd_variant')} variant unless named\n"
            + tabulate(side_by_side, headers=["", "ours", "LAMMPS lj/cut or REBOUND",
                                              "LAMMPS lj/cut/opt", "ratio", "ratio opt"],
                       floatfmt=".4g") + "\n\n"
            + tabulate(checks, headers=["target", "measured", "wanted", "met"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternated repetitions; the median of each is kept (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="only in.lj at 100 steps and N-body at N = 2048")
    parser.add_argument("--no-lammps", action="store_true", help="do not run LAMMPS")
    parser.add_argument("--no-rebound", action="store_true", help="do not run REBOUND")
    parser.add_argument("--profile", action="store_true",
                        help="time ckernel's LJ kernels one by one over the 1,000-step run")
    parser.add_argument("--variants", action="store_true",
                        help="also run ckernel's narrower SIMD variants (in.lj, N-body 2,048)")
    parser.add_argument("--numpy", action="store_true",
                        help="also run the numpy backend (in.lj 100 steps, N-body 2,048)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    # ckernel is serial; this keeps numpy's BLAS, REBOUND and LAMMPS on one thread as well.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    figures = measure(args.repeats, args.quick, not args.no_lammps, not args.no_rebound,
                      args.profile, args.variants, args.numpy)
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
