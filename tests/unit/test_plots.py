"""Charts and figures of sweep points (simctl.plots), from task rows made here; the figures
from a real run are in tests/integration/test_plot.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ckernel.params import BUILT_IN
from simctl.aggregate import aggregate
from simctl.errors import InputError
from simctl.plots import (
    ANALYSIS_EXTRA,
    Chart,
    default_charts,
    figure,
    observable_chart,
    output_paths,
    summary_chart,
)
from tests.support.procs import private_env, simctl_command

if TYPE_CHECKING:
    from matplotlib.figure import Figure

def row(task: str, params: dict[str, object], summary: dict[str, float],
        kind: str = "brownian", state: str = "done") -> dict[str, object]:
    return {"task_id": task, "kind": kind, "params": params, "summary": summary,
            "state": state}


def free(task: str, gamma: float, d: float) -> dict[str, object]:
    return row(task, {"gamma": gamma, "trap_k": 0.0},
               {"diffusion_coefficient": d, "diffusion_expected": 1.0 / gamma})


ROWS = [
    free("r.0", 0.5, 1.9), free("r.1", 0.5, 2.1), free("r.2", 1.0, 1.0),
    free("r.3", 2.0, 0.4), free("r.4", 2.0, 0.6),
    row("r.5", {"gamma": 0.5, "trap_k": 1.0}, {"mean_x2": 1.1, "x2_expected": 1.0}),
    row("r.6", {"gamma": 1.0, "trap_k": 1.0}, {"mean_x2": 0.9, "x2_expected": 1.0}),
]


def lines(fig: Figure, prefix: str) -> list[list[list[float]]]:
    ax = fig.axes[0]
    return [line.get_xydata().tolist() for line in ax.lines  # type: ignore[union-attr]
            if str(line.get_gid()).startswith(prefix)]


def test_one_line_per_other_swept_value_and_no_bar_for_one_replica() -> None:
    points = aggregate(ROWS)
    chart = summary_chart(points, "diffusion_coefficient", kind=BUILT_IN["brownian"])
    assert (chart.x.label, chart.y.label) == ("gamma [1 / time]",
                                              "diffusion_coefficient [length^2 / time]")
    # Only the free points have the value, and only gamma varies among them: one line.
    (series,) = chart.series
    assert series.x == [0.5, 1.0, 2.0] and series.n == [2, 1, 2]
    assert series.sem[1] is None
    fig = figure(chart)
    assert lines(fig, "series:") == [[[0.5, 2.0], [1.0, 1.0], [2.0, 0.5]]]
    (bars,) = [c for c in fig.axes[0].collections if c.get_gid() == "sem:0"]
    assert len(bars.get_segments()) == 2  # type: ignore[attr-defined]

    grouped = summary_chart(points, "mean_x2", "gamma", group_by="trap_k")
    assert [s.label for s in grouped.series] == ["trap_k = 1.0"]


def test_a_summary_value_against_another_is_not_joined_and_gets_the_diagonal() -> None:
    chart = summary_chart(aggregate(ROWS), "mean_x2", "x2_expected", diagonal=True)
    assert chart.style == "points" and [s.x for s in chart.series] == [[1.0, 1.0]]
    fig = figure(chart)
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "series:0"]
    assert line.get_linestyle() == "None"
    assert any(ln.get_gid() == "diagonal" for ln in fig.axes[0].lines)


@pytest.mark.parametrize(("y", "x", "group_by", "message"), [
    ("nope", None, None, "no summary value 'nope' in this run: available are "
                         "diffusion_coefficient, diffusion_expected, mean_x2, x2_expected"),
    ("mean_x2", "nope", None, "no parameter or summary value 'nope' for the x axis: "
                              "parameters are gamma, trap_k"),
    ("mean_x2", None, "nope", "no parameter 'nope' to group by: parameters are gamma, trap_k"),
])
def test_an_unknown_name_is_refused_with_the_available_ones(
        y: str, x: str | None, group_by: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        summary_chart(aggregate(ROWS), y, x, group_by=group_by)
    assert e.value.exit_code == 2


def test_nothing_swept_asks_for_an_x_axis() -> None:
    with pytest.raises(InputError, match="sweeps no parameter of brownian"):
        summary_chart(aggregate(ROWS[:2]), "diffusion_coefficient")


def test_several_kinds_with_the_name_ask_for_one() -> None:
    rows = [row("a.0", {"temperature": 1.0}, {"mean_temperature": 1.0}, kind="lj"),
            row("a.1", {"temperature": 1.0}, {"mean_temperature": 1.0})]
    with pytest.raises(InputError, match=r"several kinds .*lj, brownian.*--kind"):
        summary_chart(aggregate(rows), "mean_temperature")


def test_an_observable_chart_has_each_replica_their_mean_and_band() -> None:
    points = aggregate(ROWS[:2])
    observables = {"r.0": {"t": [0.0, 1.0, 2.0], "msd": [0.0, 1.0, 4.0]},
                   "r.1": {"t": [0.0, 1.0, 2.0], "msd": [0.0, 3.0, 6.0]}}
    chart = observable_chart(points, observables, "msd", kind=BUILT_IN["brownian"])
    (series,) = chart.series
    assert (series.x, series.y) == ([0.0, 1.0, 2.0], [0.0, 2.0, 5.0])
    assert series.sem == [0.0, 1.0, 1.0]
    assert (chart.x.label, chart.y.label) == ("t [time]", "msd [length^2]")
    fig = figure(chart)
    assert lines(fig, "replica:") == [[[0, 0], [1, 1], [2, 4]], [[0, 0], [1, 3], [2, 6]]]
    assert lines(fig, "series:") == [[[0, 0], [1, 2], [2, 5]]]
    assert [c.get_gid() for c in fig.axes[0].collections] == ["band:0"]
    with pytest.raises(InputError, match="no observable 'nope' in this run: available are "
                                         "msd, t"):
        observable_chart(points, observables, "nope")
    one = observable_chart(points, observables, "msd", task="r.1")
    assert [r.task for r in one.series[0].replicas] == ["r.1"] and one.series[0].sem == [None] * 3


def test_default_plots_leave_out_what_the_run_lacks() -> None:
    charts, skipped = default_charts(aggregate(ROWS), {}, {"brownian": BUILT_IN["brownian"]})
    assert [c.name for c in charts] == ["brownian-diffusion_coefficient", "brownian-mean_x2"]
    assert len(skipped) == 1 and skipped[0].startswith("brownian msd: no observable 'msd'")


def test_output_paths() -> None:
    charts = [Chart(name, "lj", "", *(2 * [None]), "lines", [])  # type: ignore[arg-type]
              for name in ("lj-a", "lj-b")]
    assert output_paths(charts, "RUN", None) == [Path("RUN-lj-a.png"), Path("RUN-lj-b.png")]
    assert output_paths(charts[:1], "RUN", Path("out/f.svg")) == [Path("out/f.svg")]
    assert output_paths(charts, "RUN", Path("out/f.pdf")) == [Path("out/f-lj-a.pdf"),
                                                             Path("out/f-lj-b.pdf")]


def test_without_matplotlib_the_analysis_extra_is_named(tmp_path: Path) -> None:
    argv = simctl_command()
    argv[2] = "import sys; sys.modules['matplotlib'] = None; " + argv[2]
    done = subprocess.run([*argv, "--store", str(tmp_path / "ledger.sqlite"), "plot", "last"],
                          capture_output=True, text=True, env=private_env(tmp_path),
                          timeout=60)
    assert done.returncode == 2, done
    assert ANALYSIS_EXTRA in done.stderr
    assert sys.modules.get("matplotlib") is not None  # this process still has it
