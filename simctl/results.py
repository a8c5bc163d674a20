"""Rendering a run's results as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection
from typing import Any

from simctl.errors import InputError
from simctl.ledger import FINISHED, Ledger, RunInfo, TaskState

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
)
"""The fields of each task in ``--format json``."""


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


def render(
    ledger: Ledger,
    run_id: str,
    fmt: str,
    observables: bool = False,
    kinds: Collection[str] | None = None,
    wide: bool = False,
) -> str:
    """The results of ``run_id`` in ``fmt`` (table, csv or json): the tasks of ``kinds``
    (None: all; the CSV's columns are those of the tasks shown). ``observables`` (every
    series) goes with json only: InputError otherwise. ``wide``: whole summaries in the
    table."""
    if observables and fmt != "json":
        raise InputError(f"--observables goes with --format json (a {fmt} has no room for "
                         "series); use --format json --observables")
    rows = ledger.task_rows(run_id)
    if kinds is not None:
        rows = [r for r in rows if r["kind"] in kinds]
    if fmt == "json":
        tasks = [{k: r[k] for k in JSON_FIELDS} for r in rows]
        if observables:
            series = ledger.observables(run_id)
            for t in tasks:
                t["observables"] = series.get(t["task_id"], {})
        return json.dumps({"run_id": run_id, "tasks": tasks}, indent=2) + "\n"
    params, summary = _names(rows, "params"), _names(rows, "summary")
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            [*CSV_FIXED, *(f"param.{p}" for p in params), *(f"summary.{s}" for s in summary)]
        )
        for r in rows:
            writer.writerow(
                [
                    *(_cell(r[c]) for c in CSV_FIXED),
                    *(_cell(r["params"].get(p)) for p in params),
                    *(_cell(r["summary"].get(s)) for s in summary),
                ]
            )
        return buf.getvalue()
    from simctl.display import table

    def summary_text(s: dict[str, float]) -> str:
        text = " ".join(f"{k}={v:.6g}" for k, v in s.items())
        if wide or len(text) <= SUMMARY_WIDTH:
            return text
        return text[: SUMMARY_WIDTH - 3] + "..."

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
                    summary_text(r["summary"]) or (r["error"] or ""),
                ]
                for r in rows
            ],
            ["task", "kind", "state", "seed", "worker", "attempts", "elapsed_s", "summary / error"],
        )
        + "\n"
    )


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
        f"run {info.run_id} ({info.name}): {info.state}, {info.done}/{info.total} done, "
        f"{info.failed} failed, {info.cancelled} cancelled, {info.duplicates} duplicates, "
        f"{duration(info.elapsed_s)}",
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
