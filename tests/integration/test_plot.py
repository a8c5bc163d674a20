"""simctl plot on a real run (a real Mosquitto and worker agents): the figures' lines and
error bars are the aggregate's means and standard errors, the files are real pictures, every
built-in kind's default plots are drawn, and bad names exit 2 with the available ones."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np

from ckernel.params import BUILT_IN
from simctl.aggregate import aggregate
from simctl.ledger import Ledger
from simctl.plots import figure, observable_chart, summary_chart
from tests.support.procs import Cluster

SWEEP: list[dict[str, Any]] = [
    {"kind": "brownian", "params": {"n_particles": 64, "steps": 400, "sample_every": 40},
     "sweep": {"gamma": [0.5, 1.0, 2.0], "trap_k": [0.0, 1.0]}, "replicas": 2},
    {"kind": "lj", "params": {"n_cells": 3, "steps": 100, "sample_every": 20,
                              "ensemble": "nvt"},
     "sweep": {"temperature": [0.9, 1.2]}, "replicas": 2},
    {"kind": "nbody", "params": {"n_bodies": 16, "steps": 100, "sample_every": 20},
     "sweep": {"softening": [0.02, 0.05]}, "replicas": 3},
]
TOL = 1e-12



def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def test_plots_of_a_real_run(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents({"w1": 1, "w2": 1})
    summary = cluster.simctl_json("run", str(cluster.task_file("plots", SWEEP)), "--json")
    run_id = summary["run_id"]
    assert summary["done"] == summary["tasks"] == 22, summary
    ledger = Ledger(cluster.ledger)
    points = aggregate(ledger.task_rows(run_id))

    # Lines and error bars are the aggregate's mean and standard error, point by point.
    chart = summary_chart(points, "mean_temperature", kind=BUILT_IN["lj"], only_kind="lj")
    fig = figure(chart)
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "series:0"]
    (bars,) = [c for c in ax.collections if c.get_gid() == "sem:0"]
    lj = sorted((p for p in points if p.kind == "lj"), key=lambda p: p.params["temperature"])
    expected = [(p.params["temperature"], p.summary["mean_temperature"].mean) for p in lj]
    assert all(close(a, c) and close(b, d) for (a, b), (c, d)
               in zip(line.get_xydata().tolist(), expected, strict=True))  # type: ignore[union-attr]
    for segment, p in zip(bars.get_segments(), lj, strict=True):  # type: ignore[attr-defined]
        s = p.summary["mean_temperature"]
        assert s.sem is not None and s.n == 2
        (x0, low), (x1, high) = segment
        assert close(x0, p.params["temperature"]) and close(x1, x0)
        assert close(low, s.mean - s.sem) and close(high, s.mean + s.sem)
    assert ax.get_xlabel() == "temperature [epsilon / k_B]"
    assert ax.get_ylabel() == "mean_temperature [epsilon / k_B]"

    # The observable: each replica as stored, their mean.
    observables = ledger.observables(run_id)
    series = observable_chart(points, observables, "relative_energy_error", only_kind="nbody")
    ax = figure(series).axes[0]
    for i, p in enumerate(s for s in points if s.kind == "nbody"):
        (mean,) = [ln for ln in ax.lines if ln.get_gid() == f"series:{i}"]
        stored = np.array([observables[t]["relative_energy_error"] for t in p.tasks])
        assert np.allclose(mean.get_ydata(), stored.mean(axis=0), rtol=TOL, atol=TOL)
        replicas = [ln for ln in ax.lines if ln.get_gid() in {f"replica:{t}" for t in p.tasks}]
        assert len(replicas) == 3

    # simctl plot itself: --y with --group-by, saved as a real picture.
    png = tmp_path / "d.png"
    doc = cluster.simctl_json("plot", run_id, "--y", "mean_x2", "--x", "gamma",
                              "--group-by", "trap_k", "-o", str(png), "--json")
    assert doc["files"] == [str(png)]
    (plotted,) = doc["plots"]
    trapped = sorted((p for p in points if "mean_x2" in p.summary),
                     key=lambda p: p.params["gamma"])
    assert [s["label"] for s in plotted["series"]] == ["trap_k = 1.0"]
    assert plotted["series"][0]["y"] == [p.summary["mean_x2"].mean for p in trapped]
    assert plotted["series"][0]["sem"] == [p.summary["mean_x2"].sem for p in trapped]
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] >= 480 and pixels.shape[1] >= 640, pixels.shape
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 1

    # The default plots of every built-in kind in the run.
    doc = cluster.simctl_json("plot", run_id, "-o", str(tmp_path / "all.png"), "--json")
    names = {p["name"] for p in doc["plots"]}
    assert names == {"brownian-msd", "brownian-diffusion_coefficient", "brownian-mean_x2",
                     "lj-mean_total_energy", "lj-mean_pressure", "lj-mean_temperature",
                     "nbody-max_relative_energy_error", "nbody-relative_energy_error"}
    for file in doc["files"]:
        assert Path(file).stat().st_size > 10_000, file
    msd = next(p for p in doc["plots"] if p["name"] == "brownian-msd")
    assert msd["x"] == {"name": "t", "unit": "time"} and len(msd["series"]) == 6

    # Unknown names: exit 2, with what there is.
    done = cluster.simctl("plot", run_id, "--y", "nope", "--kind", "lj",
                          "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2, done
    assert "no summary value 'nope' in this run: available are box, density," in done.stderr
    done = cluster.simctl("plot", run_id, "--observable", "nope", "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "msd" in done.stderr and "virial_ratio" in done.stderr, done
    done = cluster.simctl("plot", run_id, "--y", "mean_pressure", "--x", "nope",
                          "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "parameters are box, density, dt" in done.stderr, done
    assert not (tmp_path / "x.png").exists()
