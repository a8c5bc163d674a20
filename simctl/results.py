"""Rendering a run's results, per task or per sweep point, as a table, CSV, JSON or Parquet.

The flat tables (:func:`task_table`, :func:`point_table`) are what the CSV, the Parquet
file and :mod:`simctl.api`'s DataFrames are made of, so the three always agree.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection
from typing import Any

from simctl.aggregate import Point, aggregate, swept
from simctl.errors import InputError
from simctl.ledger import FINISHED, Ledger, RunInfo, TaskState

ANALYSIS_EXTRA = "pip install 'particle-sim[analysis]'"
"""How to install what Parquet output and :mod:`simctl.api` need (pandas, pyarrow,
matplotlib)."""

FAILURES_SHOWN = 10
"""Failed tasks listed under a run's summary (all are in ``simctl status RUN``)."""

CSV_FIXED = ("task_id", "kind", "kind_version", "state", "seed", "worker_id", "attempts",
             "elapsed_s", "reused_from")
"""The first CSV columns; ``param.<name>`` and ``summary.<name>`` follow."""

SUMMARY_WIDTH = 80
"""Widest summary cell of the table format unless ``--wide`` (CSV and JSON carry every
value)."""

JSON_FIELDS = (
    "task_id",
    "kind",
    "kind_version",
    "package",
    "package_version",
    "image",
    "params",
    "seed",
    "state",
    "summary",
    "worker_id",
    "attempts",
    "tries",
    "lost",
    "elapsed_s",
    "error",
    "assigned_at",
    "started_at",
    "finished_at",
    "reused_from",
    "metadata",
)
"""The fields of each task in ``--format json``."""

POINT_FIXED = ("kind", "total", "done", "failed")
"""The first columns of a sweep point in CSV and Parquet (``total``: its tasks, replicas
included); ``param.<name>`` and ``summary.<name>.mean|sem|n`` follow."""

STAT_FIELDS = ("mean", "sem", "n")
"""The columns of one summary value of a sweep point, in order."""


def _names(rows: list[dict[str, Any]], key: str) -> list[str]:
    """Every name under ``key`` across rows, in order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        for name in r[key]:
            seen.setdefault(name, None)
    return list(seen)


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value


def _flat(value: Any) -> Any:
    """A value fit for one column: nested values (lists, dicts) as JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


def task_table(
    rows: list[dict[str, Any]], metadata: bool = False, fixed: tuple[str, ...] = CSV_FIXED
) -> tuple[list[str], list[dict[str, Any]]]:
    """Task rows (of :meth:`Ledger.task_rows`) as (columns, one flat dict per task): the
    ``fixed`` fields, ``param.<name>``, ``summary.<name>`` and, with ``metadata``,
    ``meta.<name>`` (names in order of first appearance; a value a task lacks is None;
    nested values as JSON text)."""
    params, summary = _names(rows, "params"), _names(rows, "summary")
    meta = _names(rows, "metadata") if metadata else []
    columns = [*fixed, *(f"param.{p}" for p in params), *(f"summary.{s}" for s in summary),
               *(f"meta.{m}" for m in meta)]
    flat = []
    for r in rows:
        cells = {c: _flat(r[c]) for c in fixed}
        cells.update({f"param.{p}": _flat(r["params"].get(p)) for p in params})
        cells.update({f"summary.{s}": _flat(r["summary"].get(s)) for s in summary})
        cells.update({f"meta.{m}": _flat(r["metadata"].get(m)) for m in meta})
        flat.append(cells)
    return columns, flat


def point_table(points: list[Point]) -> tuple[list[str], list[dict[str, Any]]]:
    """Sweep points as (columns, one flat dict per point): :data:`POINT_FIXED`,
    ``param.<name>``, then ``summary.<name>.mean``, ``.sem`` and ``.n`` per summary value
    (None where a point lacks it; ``sem`` None with a single replica)."""
    params: dict[str, None] = {}
    summary: dict[str, None] = {}
    for p in points:
        params.update(dict.fromkeys(p.params))
        summary.update(dict.fromkeys(p.summary))
    columns = [*POINT_FIXED, *(f"param.{p}" for p in params),
               *(f"summary.{s}.{f}" for s in summary for f in STAT_FIELDS)]
    flat = []
    for p in points:
        cells: dict[str, Any] = {"kind": p.kind, "total": len(p.tasks), "done": p.done,
                                 "failed": p.failed}
        cells.update({f"param.{name}": _flat(p.params.get(name)) for name in params})
        for name in summary:
            st = p.summary.get(name)
            cells.update({f"summary.{name}.{f}": getattr(st, f) if st else None
                          for f in STAT_FIELDS})
        flat.append(cells)
    return columns, flat


def csv_text(columns: list[str], flat: list[dict[str, Any]]) -> str:
    """A flat table (of :func:`task_table` or :func:`point_table`) as CSV text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for cells in flat:
        writer.writerow([_cell(cells[c]) for c in columns])
    return buf.getvalue()


def _rows(ledger: Ledger, run_id: str, kinds: Collection[str] | None) -> list[dict[str, Any]]:
    rows = ledger.task_rows(run_id)
    return rows if kinds is None else [r for r in rows if r["kind"] in kinds]


def _check_options(fmt: str, observables: bool, aggregated: bool, metadata: bool) -> None:
    """InputError for options that do not go together."""
    if observables and aggregated:
        raise InputError("--observables goes with the results of tasks, not --aggregate")
    if observables and fmt != "json":
        raise InputError(f"--observables goes with --format json (a {fmt} has no room for "
                         "series); use --format json --observables")
    if metadata and aggregated:
        raise InputError("--metadata is per task: it does not go with --aggregate")
    if metadata and fmt == "table":
        raise InputError("--metadata goes with --format csv or parquet (--format json always "
                         "has each task's metadata)")


def render(
    ledger: Ledger,
    run_id: str,
    fmt: str,
    observables: bool = False,
    kinds: Collection[str] | None = None,
    wide: bool = False,
    aggregated: bool = False,
    metadata: bool = False,
) -> str:
    """The results of ``run_id`` in ``fmt`` (table, csv or json): the tasks of ``kinds``
    (None: all; the CSV's columns are those of the tasks shown), or with ``aggregated``
    their sweep points. ``observables`` (every series) goes with json of tasks only,
    ``metadata`` (``meta.<name>`` columns) with csv of tasks (json always has it):
    InputError otherwise.
    ``wide``: whole summaries in the table."""
    _check_options(fmt, observables, aggregated, metadata)
    with ledger.snapshot():  # the observables of the very tasks listed
        rows = _rows(ledger, run_id, kinds)
        series = ledger.observables(run_id) if observables else {}
    if aggregated:
        return _render_points(run_id, aggregate(rows), fmt, wide)
    if fmt == "json":
        tasks = [{k: r[k] for k in JSON_FIELDS} for r in rows]
        if observables:
            for t in tasks:
                t["observables"] = series.get(t["task_id"], {})
        return json.dumps({"run_id": run_id, "tasks": tasks}, indent=2) + "\n"
    if fmt == "csv":
        return csv_text(*task_table(rows, metadata))
    from simctl.display import table

    return (
        table(
            [
                [
                    r["task_id"],
                    r["kind"],
                    r["state"] + (" (reused)" if r["reused_from"] else ""),
                    r["seed"],
                    r["worker_id"] or "-",
                    r["attempts"],
                    "-" if r["elapsed_s"] is None else f"{r['elapsed_s']:.3f}",
                    _cut(" ".join(f"{k}={v:.6g}" for k, v in r["summary"].items()), wide)
                    or (r["error"] or ""),
                ]
                for r in rows
            ],
            ["task", "kind", "state", "seed", "worker", "attempts", "elapsed_s", "summary / error"],
        )
        + "\n"
    )


def _cut(text: str, wide: bool) -> str:
    """A summary cell of a table: cut at :data:`SUMMARY_WIDTH` unless ``wide``."""
    if wide or len(text) <= SUMMARY_WIDTH:
        return text
    return text[: SUMMARY_WIDTH - 3] + "..."


def param_text(value: Any) -> str:
    """A param's value in a table cell or a folder name: floats to 6 significant digits,
    nested values as JSON, None as ``-``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(_cell(value)) if value is not None else "-"


def _render_points(run_id: str, points: list[Point], fmt: str, wide: bool) -> str:
    if fmt == "json":
        return json.dumps({"run_id": run_id, "points": [p.to_json() for p in points]},
                          indent=2) + "\n"
    if fmt == "csv":
        return csv_text(*point_table(points))
    from simctl.display import table

    axes = swept(points)

    def summary_text(p: Point) -> str:
        return " ".join(
            f"{name}={s.mean:.6g} ± {'n/a' if s.sem is None else f'{s.sem:.2g}'}"
            for name, s in p.summary.items()
        )

    return table(
        [[p.kind, *(param_text(p.params.get(a)) for a in axes), f"{p.done}/{len(p.tasks)}",
          _cut(summary_text(p), wide)] for p in points],
        ["kind", *axes, "n", "summary (mean ± sem)"],
    ) + "\n"


def _pyarrow(what: str) -> Any:
    """pyarrow, or InputError (exit 2) naming the extra that brings it."""
    try:
        import pyarrow
    except ImportError as e:
        raise InputError(f"{what} needs the analysis extra: {ANALYSIS_EXTRA}") from e
    return pyarrow


def _arrow_column(pa: Any, values: list[Any]) -> Any:
    """One column; a param or summary whose values pyarrow cannot type together (an int
    in one task, a string in another) becomes text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def parquet_table(
    ledger: Ledger,
    run_id: str,
    kinds: Collection[str] | None = None,
    aggregated: bool = False,
    metadata: bool = False,
) -> Any:
    """The results of ``run_id`` as a ``pyarrow.Table``: the CSV's columns (tasks, or with
    ``aggregated`` sweep points) and, for tasks, every observable as a ``list<double>``
    column ``obs.<name>`` (null where a task has none). InputError if pyarrow is missing."""
    pa = _pyarrow("--format parquet")
    _check_options("parquet", False, aggregated, metadata)
    with ledger.snapshot():
        rows = _rows(ledger, run_id, kinds)
        series = {} if aggregated else ledger.observables(run_id)
    columns, flat = point_table(aggregate(rows)) if aggregated else task_table(rows, metadata)
    arrays = {c: _arrow_column(pa, [cells[c] for cells in flat]) for c in columns}
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(series.get(r["task_id"], {})))
    for name in names:
        arrays[f"obs.{name}"] = pa.array(
            [series.get(r["task_id"], {}).get(name) for r in rows], pa.list_(pa.float64()))
    return pa.table(arrays)


def write_parquet(table: Any, path: Any) -> None:
    """Write a ``pyarrow.Table`` to ``path``."""
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def run_summary(ledger: Ledger, info: RunInfo) -> str:
    """The end-of-run text: a table per kind, one line for the run, the first failures."""
    from simctl.display import duration, table

    rows = ledger.task_rows(info.run_id)
    per_kind: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = per_kind.setdefault(
            r["kind"], {"tasks": 0, "done": 0, "failed": 0, "cancelled": 0, "elapsed": []}
        )
        k["tasks"] += 1
        if r["state"] in FINISHED:
            k[r["state"]] += 1
        if r["state"] == TaskState.DONE.value and r["elapsed_s"] is not None:
            k["elapsed"].append(r["elapsed_s"])
    lines = [
        table(
            [
                [
                    kind,
                    k["tasks"],
                    k["done"],
                    k["failed"],
                    k["cancelled"],
                    f"{sum(k['elapsed']) / len(k['elapsed']):.3f}" if k["elapsed"] else "-",
                ]
                for kind, k in per_kind.items()
            ],
            ["kind", "tasks", "done", "failed", "cancelled", "mean elapsed_s"],
        ),
        "",
        f"run {info.run_id} ({info.name}): {info.state}, {info.done}/{info.total} done"
        + (f" ({info.reused} reused)" if info.reused else "")
        + f", {info.failed} failed, {info.cancelled} cancelled, {info.duplicates} duplicates,"
        f" {duration(info.elapsed_s)}",
    ]
    failed = [r for r in rows if r["state"] in (TaskState.FAILED.value, TaskState.CANCELLED.value)]
    lines += [f"  {r['task_id']} {r['state']}: {r['error']}" for r in failed[:FAILURES_SHOWN]]
    if len(failed) > FAILURES_SHOWN:
        lines.append(f"  ... and {len(failed) - FAILURES_SHOWN} more "
                     f"(simctl status {info.run_id} --state failed,cancelled --limit 0)")
    if info.failed:
        lines.append(f"retry the failed tasks: simctl retry {info.run_id}")
    lines.append(f"results: simctl results {info.run_id}")
    return "\n".join(lines)
