"""Figures of a run's results: summary values over the sweep points, and observables
against time.

Two steps, so that each can be tested on its own: a *chart* (:class:`Chart`, pure data: the
series, their error bars, the axis names and units) is computed from the sweep points of
:mod:`simctl.aggregate` and the stored observables, then :func:`figure` draws it as a
matplotlib :class:`~matplotlib.figure.Figure`. Only :func:`figure` and :func:`save` need
matplotlib (the ``analysis`` extra), imported when called; figures are made without
pyplot, so no display and no global state are involved. :func:`plot_run` is what
``simctl plot`` calls.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simctl.aggregate import Point, aggregate, stat, swept
from simctl.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from simctl.ledger import Ledger
    from simkind import Kind, Plot

FIGURE_SIZE_IN = (8.0, 6.0)
"""Figure size in inches; at :data:`DPI` a PNG is 800 x 600 pixels."""

DPI = 100
"""Resolution of raster output (PNG)."""

FORMATS = (".png", ".svg", ".pdf")
"""The file types ``simctl plot -o`` writes, by suffix."""

DEFAULT_FORMAT = ".png"
"""The file type of the default output files, ``RUN-<name>.png``."""

ANALYSIS_EXTRA = "simctl plot needs the analysis extra: pip install 'particle-sim[analysis]'"
"""The error when matplotlib is not installed."""

TIME = "t"
"""The observable that holds the sample times, by convention (:class:`simkind.Output`)."""


def require_matplotlib() -> None:
    """Raise InputError naming the analysis extra unless matplotlib can be imported."""
    try:
        importlib.import_module("matplotlib")
    except ImportError as e:
        raise InputError(ANALYSIS_EXTRA) from e


@dataclass(frozen=True)
class Axis:
    """One axis: the quantity's name and unit (``""``: none); :attr:`label` is what the
    figure shows."""

    name: str
    unit: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} [{self.unit}]" if self.unit else self.name

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "unit": self.unit}


@dataclass(frozen=True)
class Replica:
    """One task's series in an observable chart."""

    task: str
    x: list[float]
    y: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "x": self.x, "y": self.y}


@dataclass(frozen=True)
class Series:
    """One line of a chart.

    In a summary chart each value is one sweep point: ``y`` the mean over its done replicas,
    ``sem`` their standard error (None for a single replica: no error bar), ``n`` how many
    there were, ``tasks`` the point's tasks. In an observable chart ``x`` and ``y`` are the
    mean series over the :attr:`replicas` (empty when their lengths differ), ``sem`` its
    standard error at each sample (None with a single replica: no band).
    """

    label: str
    x: list[float]
    y: list[float]
    sem: list[float | None]
    n: list[int] = field(default_factory=list)
    tasks: list[list[str]] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "x": self.x, "y": self.y, "sem": self.sem}
        if self.replicas:
            out["replicas"] = [r.to_json() for r in self.replicas]
        else:
            out.update(n=self.n, tasks=self.tasks)
        return out


@dataclass(frozen=True)
class Chart:
    """What one figure shows. ``style`` is ``points`` (summary values over sweep points) or
    ``series`` (observables against time); ``diagonal`` adds the line y = x."""

    name: str
    kind: str
    title: str
    x: Axis
    y: Axis
    style: str
    series: list[Series]
    diagonal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "title": self.title, "style": self.style,
                "x": self.x.to_json(), "y": self.y.to_json(), "diagonal": self.diagonal,
                "series": [s.to_json() for s in self.series]}


def _names(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _one_kind(points: Sequence[Point], what: str, kind: str | None) -> list[Point]:
    """The points of the one kind that has ``what`` (or of ``kind``)."""
    if kind is not None:
        points = [p for p in points if p.kind == kind]
    kinds = list(dict.fromkeys(p.kind for p in points))
    if len(kinds) > 1:
        raise InputError(f"{what} is a result of several kinds in this run "
                         f"({', '.join(kinds)}): choose one with --kind")
    return list(points)


def _unit(kind: Kind | None, name: str, param: bool) -> str:
    if kind is None:
        return ""
    if param:
        f = kind.params.get(name)
        return f.unit if f is not None else ""
    return kind.unit(name)


def summary_chart(points: Sequence[Point], y: str, x: str | None = None, *,
                  group_by: str | None = None, kind: Kind | None = None,
                  only_kind: str | None = None, title: str = "", diagonal: bool = False,
                  name: str | None = None) -> Chart:
    """The summary value ``y`` over the sweep points that have it: its mean over each
    point's done replicas with their standard error as error bars, one line per value of
    ``group_by`` and of every other swept parameter, in order of x.

    ``x`` names a parameter or another summary value (None: the first swept parameter);
    with a summary value as x, the points are not joined and are grouped only by
    ``group_by``. ``kind`` gives the units; ``only_kind`` keeps the points of that kind.
    Raises InputError, listing what is available, for a name the points do not have.
    """
    having = [p for p in points if y in p.summary and (only_kind is None or p.kind == only_kind)]
    if not having:
        available = {n for p in points if only_kind is None or p.kind == only_kind
                     for n in p.summary}
        raise InputError(f"no summary value {y!r} in this run: available are "
                         f"{_names(available)}")
    having = _one_kind(having, f"summary value {y!r}", None)
    params = {n for p in having for n in p.params}
    summaries = {n for p in having for n in p.summary}
    axes = swept(having)
    if x is None:
        if not axes:
            raise InputError(f"the run sweeps no parameter of {having[0].kind} (every point "
                             f"has the same params): name the x axis with --x; parameters "
                             f"are {_names(params)}")
        x = axes[0]
    x_is_param = x in params
    if not x_is_param and x not in summaries:
        raise InputError(f"no parameter or summary value {x!r} for the x axis: parameters "
                         f"are {_names(params)}; summary values are {_names(summaries)}")
    if group_by is not None and group_by not in params:
        raise InputError(f"no parameter {group_by!r} to group by: parameters are "
                         f"{_names(params)}")
    if x_is_param:
        having = [p for p in having if _number(p.params.get(x)) is not None]
        if not having:
            raise InputError(f"parameter {x!r} is not a number: it cannot be the x axis")
        keys = [n for n in ([group_by] if group_by else []) + axes if n != x]
        keys = list(dict.fromkeys(keys))
    else:
        having = [p for p in having if x in p.summary]
        keys = [group_by] if group_by else []

    groups: dict[tuple[str, ...], list[tuple[float, Point]]] = {}
    for p in having:
        xv = _number(p.params[x]) if x_is_param else p.summary[x].mean
        assert xv is not None
        key = tuple(_show(p.params.get(k)) for k in keys)
        groups.setdefault(key, []).append((xv, p))
    series = []
    for key, members in groups.items():
        members.sort(key=lambda m: m[0])
        label = ", ".join(f"{k} = {v}" for k, v in zip(keys, key, strict=True))
        series.append(Series(label, [m[0] for m in members],
                             [m[1].summary[y].mean for m in members],
                             [m[1].summary[y].sem for m in members],
                             [m[1].summary[y].n for m in members],
                             [m[1].tasks for m in members]))
    kind_name = having[0].kind
    return Chart(name=f"{kind_name}-{name or y}", kind=kind_name,
                 title=title or f"{kind_name}: {y} against {x}",
                 x=Axis(x, _unit(kind, x, x_is_param)), y=Axis(y, _unit(kind, y, False)),
                 style="points" if not x_is_param else "lines", series=series,
                 diagonal=diagonal)


def observable_chart(points: Sequence[Point], observables: Mapping[str, Mapping[str, Any]],
                     name: str, x: str | None = None, *, task: str | None = None,
                     kind: Kind | None = None, only_kind: str | None = None, title: str = "",
                     chart_name: str | None = None) -> Chart:
    """The observable ``name`` of every done task that has it (of ``task`` alone), against
    the observable ``x`` (None: ``t`` if the tasks have it, else the sample index): one
    series per sweep point, with each replica, their mean and their standard error at each
    sample (when the replicas' series have the same length).

    ``observables`` is task id -> name -> series (:meth:`simctl.ledger.Ledger.observables`).
    Raises InputError, listing what is available, for a name the tasks do not have.
    """
    if only_kind is not None:
        points = [p for p in points if p.kind == only_kind]
    if task is not None:
        points = [Point(p.kind, p.params, [task], p.done, p.failed, p.summary)
                  for p in points if task in p.tasks]
        if not points or task not in observables:
            raise InputError(f"no done task {task!r} with observables in this run")
    having = [p for p in points
              if any(name in observables.get(t, {}) for t in p.tasks)]
    if not having:
        available = {n for p in points for t in p.tasks for n in observables.get(t, {})}
        raise InputError(f"no observable {name!r} in this run: available are "
                         f"{_names(available)}")
    having = _one_kind(having, f"observable {name!r}", None)
    keys = swept(having)
    series = []
    x_name = x
    for p in having:
        replicas = []
        for t in p.tasks:
            obs = observables.get(t, {})
            if name not in obs:
                continue
            ys = [float(v) for v in obs[name]]
            if x is not None:
                if x not in obs:
                    available = {n for n in obs}
                    raise InputError(f"no observable {x!r} for the x axis: available are "
                                     f"{_names(available)}")
                xs = [float(v) for v in obs[x]]
            elif TIME in obs and name != TIME:
                xs, x_name = [float(v) for v in obs[TIME]], TIME
            else:
                xs, x_name = [float(i) for i in range(len(ys))], "sample"
            replicas.append(Replica(t, xs, ys))
        label = ", ".join(f"{k} = {_show(p.params.get(k))}" for k in keys)
        lengths = {len(r.y) for r in replicas} | {len(r.x) for r in replicas}
        if len(lengths) == 1:
            stats = [stat([r.y[i] for r in replicas]) for i in range(len(replicas[0].y))]
            series.append(Series(label, list(replicas[0].x), [s.mean for s in stats],
                                 [s.sem for s in stats], replicas=replicas))
        else:  # replicas of different lengths: no mean to draw
            series.append(Series(label, [], [], [], replicas=replicas))
    kind_name = having[0].kind
    assert x_name is not None
    return Chart(name=f"{kind_name}-{chart_name or name}", kind=kind_name,
                 title=title or f"{kind_name}: {name}", style="series",
                 x=Axis(x_name, _unit(kind, x_name, False) if x_name != "sample" else ""),
                 y=Axis(name, _unit(kind, name, False)), series=series)


def default_charts(points: Sequence[Point], observables: Mapping[str, Mapping[str, Any]],
                   kinds: Mapping[str, Kind]) -> tuple[list[Chart], list[str]]:
    """The default plots of every kind in the run (:attr:`simkind.Kind.plots`), and why
    each one left out was (a value the run lacks, nothing swept, a kind not installed)."""
    charts: list[Chart] = []
    skipped: list[str] = []
    for kind_name in dict.fromkeys(p.kind for p in points):
        kind = kinds.get(kind_name)
        if kind is None:
            skipped.append(f"{kind_name}: the kind is not installed here, so its default "
                           "plots are unknown")
            continue
        if not kind.plots:
            skipped.append(f"{kind_name}: the kind declares no default plots")
        for plot in kind.plots:
            try:
                charts.append(chart_of(plot, points, observables, kind))
            except InputError as e:
                skipped.append(f"{kind_name} {plot.key}: {e}")
    return charts, skipped


def chart_of(plot: Plot, points: Sequence[Point], observables: Mapping[str, Mapping[str, Any]],
             kind: Kind) -> Chart:
    """The chart of one of ``kind``'s default plots over the run's ``points``."""
    if plot.y is not None:
        return summary_chart(points, plot.y, plot.x, kind=kind, only_kind=kind.name,
                             title=plot.title, diagonal=plot.diagonal, name=plot.key)
    assert plot.observable is not None
    return observable_chart(points, observables, plot.observable, plot.x, kind=kind,
                            only_kind=kind.name, title=plot.title, chart_name=plot.key)


def figure(chart: Chart) -> Figure:
    """``chart`` drawn as a matplotlib Figure (:data:`FIGURE_SIZE_IN`).

    Each series' line carries the gid ``series:<i>`` (its data is the series' x and y),
    its error bars (``points`` and ``lines`` charts) the gid ``sem:<i>``, its replicas
    (``series`` charts) ``replica:<task>`` and its band ``band:<i>``; the diagonal is
    ``diagonal``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(chart.series):
        color = f"C{i % 10}"
        label = s.label or None
        if chart.style == "series":
            for r in s.replicas:
                ax.plot(r.x, r.y, color=color, linewidth=0.6, alpha=0.35,
                        gid=f"replica:{r.task}")
            if s.y:
                ax.plot(s.x, s.y, color=color, linewidth=1.8, label=label, gid=f"series:{i}")
                if len(s.replicas) > 1 and all(e is not None for e in s.sem):
                    low = [m - e for m, e in zip(s.y, s.sem, strict=True) if e is not None]
                    high = [m + e for m, e in zip(s.y, s.sem, strict=True) if e is not None]
                    ax.fill_between(s.x, low, high, color=color, alpha=0.25, linewidth=0,
                                    gid=f"band:{i}")
            continue
        ax.plot(s.x, s.y, color=color, marker="o", label=label, gid=f"series:{i}",
                linestyle="-" if chart.style == "lines" else "none")
        bars = [(xv, yv, e) for xv, yv, e in zip(s.x, s.y, s.sem, strict=True) if e is not None]
        if bars:
            bar = ax.errorbar([b[0] for b in bars], [b[1] for b in bars],
                              yerr=[b[2] for b in bars], fmt="none", ecolor=color, capsize=3)
            for artist in bar.lines[2]:
                artist.set_gid(f"sem:{i}")
    if chart.diagonal:
        ax.axline((0.0, 0.0), slope=1.0, color="0.5", linestyle="--", linewidth=1,
                  label="y = x", gid="diagonal")
    ax.set_title(chart.title)
    ax.set_xlabel(chart.x.label)
    ax.set_ylabel(chart.y.label)
    ax.grid(True, alpha=0.3)
    if any(s.label for s in chart.series) or chart.diagonal:
        ax.legend(fontsize="small")
    return fig


def save(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path``, in the format its suffix names (:data:`FORMATS`)."""
    fig.savefig(path, dpi=DPI, metadata={"Software": None} if path.suffix == ".png" else None)


def output_paths(charts: Sequence[Chart], run_id: str, output: Path | None) -> list[Path]:
    """Where each chart goes: ``output`` for a single chart; with several, ``output``'s
    name with ``-<chart name>`` added; without ``output``, ``RUN-<chart name>.png`` in the
    current folder."""
    if output is None:
        return [Path(f"{run_id}-{c.name}{DEFAULT_FORMAT}") for c in charts]
    if len(charts) == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{c.name}{output.suffix}") for c in charts]


@dataclass(frozen=True)
class Request:
    """What ``simctl plot`` was asked for: ``y`` (and ``x``, ``group_by``), ``observable``
    (and ``x``, ``task``), or neither (the default plots of the run's kinds)."""

    y: str | None = None
    x: str | None = None
    group_by: str | None = None
    observable: str | None = None
    task: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Drawn:
    """What :func:`plot_run` wrote: each chart with its file, and the default plots left
    out with the reason."""

    run_id: str
    charts: list[tuple[Chart, Path]]
    skipped: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "files": [str(p) for _, p in self.charts],
                "plots": [{**c.to_json(), "file": str(p)} for c, p in self.charts],
                "skipped": self.skipped}


def installed_kinds() -> dict[str, Kind]:
    """The installed kinds by name (for their units and default plots)."""
    import simkind

    return {name: loaded.kind for name, loaded in simkind.installed().kinds.items()}


def plot_run(ledger: Ledger, run_id: str, request: Request, output: Path | None) -> Drawn:
    """Draw what ``request`` asks of run ``run_id`` (a full id) and write the files (see
    :func:`output_paths`). Raises InputError for a name the run does not have, or when
    matplotlib is missing."""
    require_matplotlib()
    points = aggregate(ledger.task_rows(run_id))
    if request.kind is not None and not any(p.kind == request.kind for p in points):
        raise InputError(f"no tasks of kind {request.kind!r} in this run: its kinds are "
                         f"{_names(p.kind for p in points)}")
    kinds = installed_kinds()
    skipped: list[str] = []
    if request.y is not None:
        candidates = [p for p in points if request.kind is None or p.kind == request.kind]
        having = _one_kind([p for p in candidates if request.y in p.summary],
                           f"summary value {request.y!r}", None)
        kind = kinds.get(having[0].kind) if having else None
        charts = [summary_chart(candidates, request.y, request.x, group_by=request.group_by,
                                kind=kind)]
    elif request.observable is not None:
        observables = ledger.observables(run_id)
        candidates = [p for p in points if request.kind is None or p.kind == request.kind]
        having = [p for p in candidates
                  if any(request.observable in observables.get(t, {}) for t in p.tasks)]
        kind = kinds.get(having[0].kind) if having else None
        charts = [observable_chart(candidates, observables, request.observable, request.x,
                                   task=request.task, kind=kind)]
    else:
        chosen = [p for p in points if request.kind is None or p.kind == request.kind]
        wants_series = any(plot.observable is not None for p in chosen
                           if (k := kinds.get(p.kind)) is not None for plot in k.plots)
        observables = ledger.observables(run_id) if wants_series else {}
        charts, skipped = default_charts(chosen, observables, kinds)
        if not charts:
            raise InputError("no default plot applies to this run: "
                             + "; ".join(skipped or ["it has no tasks"]))
    paths = output_paths(charts, run_id, output)
    for chart, path in zip(charts, paths, strict=True):
        save(figure(chart), path)
    return Drawn(run_id, list(zip(charts, paths, strict=True)), skipped)

