"""``simctl status``: workers and runs at a glance, or the tasks of one run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from simctl.cli import pass_settings
from simctl.commands import open_ledger, run_argument
from simctl.config import Settings
from simctl.errors import InputError, SimctlError

if TYPE_CHECKING:

    from simctl.ledger import Ledger

F = TypeVar("F", bound=Callable[..., Any])

TASKS_SHOWN = 20
"""Task rows ``simctl status RUN`` prints by default (``--limit``; JSON has every task)."""

def task_states_option(values: tuple[str, ...]) -> list[str] | None:
    """``--state`` values (repeated, or comma lists) as task states; None if none given."""
    from simctl.ledger import TaskState

    states = [s.strip() for v in values for s in v.split(",") if s.strip()]
    known = [s.value for s in TaskState]
    for s in states:
        if s not in known:
            raise InputError(f"--state {s!r}: not a task state; use {', '.join(known)}")
    return list(dict.fromkeys(states)) or None


@click.command()
@run_argument(required=False)
@click.option("--state", "states", multiple=True, metavar="STATE[,STATE]",
              help="With RUN: only tasks in these states (pending, assigned, done, failed, "
              "cancelled); repeat or separate with commas.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help=f"With RUN: at most N tasks, 0 for all [default: {TASKS_SHOWN} in text, "
              "all with --json].")
@click.option("--all", "show_all", is_flag=True,
              help="Also the offline workers not heard from for a day.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def status(settings: Settings, run_id: str | None, states: tuple[str, ...], limit: int | None,
           show_all: bool, as_json: bool) -> None:
    """Workers and runs at a glance; with RUN, that run and its tasks (the failed first).

    RUN is a run id, a unique prefix of one, or `last` (the newest run).
    """
    from simctl import monitoring
    from simctl.commands.workers import hide_stale, observed_workers
    from simctl.display import (
        emit_json,
        run_row,
        runs_table,
        waiting_notes,
        workers_table,
    )

    ledger = open_ledger(settings)
    if run_id is not None:
        _run_status(ledger, ledger.resolve_run(run_id), task_states_option(states), limit,
                    as_json)
        return
    if states or limit is not None:
        raise InputError("--state and --limit go with a RUN")
    runs = ledger.runs()
    broker_error: SimctlError | None = None
    try:
        workers = observed_workers(settings)
    except SimctlError as e:
        workers, broker_error = [], e
    shown, hidden = (workers, 0) if show_all else hide_stale(workers)
    rejected = ledger.rejections()
    waits = {r.run_id: monitoring.waiting(ledger, r.run_id, workers) for r in runs
             if r.state == "active" and broker_error is None}
    if as_json:
        # hidden_workers only when some are: the document's shape is older than the hiding.
        emit_json({"workers": shown, **({"hidden_workers": hidden} if hidden else {}),
                   "rejected": rejected,
                   "runs": [{**r.to_json(), "waiting": waits.get(r.run_id, {})} for r in runs]})
    else:
        click.echo(workers_table(shown) if shown else "no workers known")
        if hidden:
            click.echo(f"{hidden} offline worker{'s' if hidden != 1 else ''} not heard from "
                       "for a day hidden (--all shows them; `simctl workers forget ID` "
                       "removes one)")
        click.echo()
        rows = [{**run_row(r), "waiting": waits.get(r.run_id, {})} for r in runs]
        click.echo(runs_table(rows) if runs else f"no runs in {settings.store}")
        for note in waiting_notes(rows):
            click.echo(note)
        if rejected:
            counts = ", ".join(f"{reason} {r['count']}" for reason, r in rejected.items())
            click.echo(f"\nmessages refused by the dispatcher: {counts} (details: --json)")
    if broker_error is not None:
        raise broker_error


def _run_status(ledger: Ledger, run_id: str, states: list[str] | None, limit: int | None,
                as_json: bool) -> None:
    """One run and its tasks: in text the failed first and at most TASKS_SHOWN by default;
    in JSON every task (in index order) unless ``--state``/``--limit`` say otherwise."""
    from simctl.display import emit_json, run_row, runs_table, table

    info = ledger.run(run_id)
    if limit is None and not as_json:
        limit = TASKS_SHOWN
    tasks = ledger.task_states(run_id, states, limit or None, failed_first=not as_json)
    if as_json:
        emit_json({"run": info.to_json(), "tasks": tasks})
        return
    matched = info.total if states is None else sum(info.counts.get(s, 0) for s in states)
    click.echo(runs_table([run_row(info)]) + "\n")
    click.echo(
        table(
            [
                [t["task_id"], t["kind"], t["state"], t["worker_id"] or "-", t["attempts"],
                 f"{t['progress']:.0%}" if t["progress"] is not None else "", _note(t)]
                for t in tasks
            ],
            ["task", "kind", "state", "worker", "attempts", "progress", "note"],
        )
        if tasks else "no tasks" + (f" in state {', '.join(states)}" if states else "")
    )
    if matched > len(tasks):
        click.echo(f"{matched - len(tasks)} more: --limit N (0 for all) or --state STATE")


def _note(task: dict[str, Any]) -> str:
    """What the text view says of a task besides its state: why it failed, or where its
    running attempt resumed."""
    if task["resumed_at_step"]:
        return f"resumed at step {task['resumed_at_step']}"
    return task["error"] or ""
