"""What ``simctl status`` and ``simctl monitor`` show of the workers and the active runs.

:func:`screen` is pure: from the workers' statuses, when each was last heard, the retained
progress of every run on the broker, this ledger's active runs, the previous sample and
the time, it makes one screen of ``simctl monitor``, with the throughput since the previous
one. :func:`screens` feeds it from the broker and the ledger, and goes on through a broker
outage: paho's network thread of the :class:`~simctl.mqtt.Observer` reconnects (with the
backoff of :func:`simproto.connection.make_client`) and subscribes again, while the screens say
since when the broker is unreachable and keep showing the ledger's runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simctl.display import Row, progress_row, run_row, worker_rows
from simctl.errors import UnknownRun
from simctl.ledger import Ledger, RunInfo, RunState
from simctl.mqtt import Observer
from simctl.routing import unrunnable
from simctl.scheduler import PROGRESS_KEEPALIVE_S
from simproto.protocol import WorkerState

if TYPE_CHECKING:
    from simctl.config import Settings
    from simproto.protocol import RunProgress, WorkerStatus

STALE_PROGRESS_S = 3 * PROGRESS_KEEPALIVE_S
"""A retained "active" progress older than this belongs to a dispatcher that is gone."""

STATUS_SYNC_S = 0.8
"""How long ``simctl status`` listens for the workers' retained statuses."""

MONITOR_SYNC_S = 1.0
"""How long ``simctl monitor`` listens before its first screen."""

MONITOR_WORKER_FIELDS = ("worker_id", "state", "slots", "busy_slots", "running", "last_seen")
"""The fields of a worker in ``simctl monitor --json`` (``running``: how many tasks)."""

MONITOR_RUN_FIELDS = (
    "run_id",
    "name",
    "total",
    "done",
    "failed",
    "running",
    "pending",
    "elapsed_s",
)
"""The fields of a run in ``simctl monitor --json``."""


@dataclass(frozen=True)
class Sample:
    """Finished tasks (done or failed) per run at one moment, for the throughput."""

    at: float
    finished: dict[str, int]


@dataclass(frozen=True)
class BrokerState:
    """Whether the monitor's connection to the broker is up, and since when (epoch seconds;
    for an outage, when the monitor first saw it)."""

    connected: bool
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "since": self.since}


@dataclass(frozen=True)
class Screen:
    """One screen of ``simctl monitor``."""

    time: float
    workers: list[Row]
    """Rows of :func:`simctl.display.worker_rows`."""
    runs: list[Row]
    """Active runs: this ledger's, then other ledgers' live ones (``elapsed_s`` to 0.1 s)."""
    throughput_per_s: float | None
    """Tasks finished per second since the previous sample; None on the first screen."""
    sample: Sample
    """What the next screen's throughput is measured against."""
    broker: BrokerState | None = None
    """The connection to the broker (None: not known, as in a screen made from data)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "broker": None if self.broker is None else self.broker.to_json(),
            "workers": [
                {**{k: w[k] for k in MONITOR_WORKER_FIELDS}, "running": len(w["running"])}
                for w in self.workers
            ],
            "runs": [{k: r[k] for k in MONITOR_RUN_FIELDS} for r in self.runs],
            "throughput_per_s": (
                None if self.throughput_per_s is None else round(self.throughput_per_s, 2)
            ),
        }


def is_live(progress: RunProgress, now: float) -> bool:
    """Whether a run known from its retained progress is still being dispatched: active and
    kept up by its dispatcher (a killed one leaves "active" behind)."""
    return progress.state == RunState.ACTIVE.value and now - progress.updated_at < STALE_PROGRESS_S


def waiting(ledger: Ledger, run_id: str, workers: Sequence[Row]) -> dict[str, int]:
    """Pending tasks of a ledger's run that no online worker (rows of
    :func:`simctl.display.worker_rows`) can run, by "kind version"."""
    online = [w["kinds"] for w in workers if w["state"] == WorkerState.ONLINE.value]
    return unrunnable(ledger.pending_needs(run_id), online)


def active_runs(
    ledger_runs: Sequence[RunInfo], progress: Mapping[str, RunProgress], now: float,
    waits: Mapping[str, dict[str, int]] | None = None,
) -> list[Row]:
    """This ledger's active runs (with what each waits for, from ``waits``), then the live
    runs of other ledgers on the broker (with what their dispatchers say they wait for)."""
    waits = waits or {}
    rows = [{**run_row(r), "elapsed_s": round(r.elapsed_s, 1),
             "waiting": waits.get(r.run_id, {})} for r in ledger_runs]
    ours = {r.run_id for r in ledger_runs}
    rows += [{**progress_row(p), "waiting": dict(p.waiting)} for p in progress.values()
             if p.run_id not in ours and is_live(p, now)]
    return rows


def throughput(
    runs: list[Row], previous: Sample | None, now: float, ended: Mapping[str, int] | None = None
) -> tuple[float | None, Sample]:
    """Tasks finished per second since ``previous`` (None without one), and the new sample.

    ``ended``: finished tasks (done or failed) of runs of ``previous`` that are no longer
    shown, by run id: a run that ended between the two samples counts up to its end. A run
    that appeared since ``previous`` counts from 0 when it was created after it (rows with
    ``created_at``), else from its first sample (another ledger's run, whose start is not
    known). A run that begins and ends between two samples is not seen at all.
    """
    finished = {r["run_id"]: r["done"] + r["failed"] for r in runs}
    rate = None
    if previous is not None:
        created = {r["run_id"]: r.get("created_at") for r in runs}

        def before(run_id: str, now_finished: int) -> int:
            if run_id in previous.finished:
                return previous.finished[run_id]
            at = created.get(run_id)
            return 0 if at is not None and at >= previous.at else now_finished

        delta = sum(v - before(k, v) for k, v in finished.items())
        delta += sum(v - previous.finished[k] for k, v in (ended or {}).items()
                     if k in previous.finished and k not in finished)
        rate = max(0, delta) / max(1e-9, now - previous.at)
    return rate, Sample(now, finished)


def ended_counts(
    previous: Sample | None, runs: Sequence[Row], ended_runs: Sequence[RunInfo],
    progress: Mapping[str, RunProgress],
) -> dict[str, int]:
    """Finished tasks of the runs of ``previous`` that ``runs`` no longer shows: from the
    ledger (``ended_runs``) or, for another ledger's, from their last retained progress."""
    if previous is None:
        return {}
    shown = {r["run_id"] for r in runs}
    ended = {r.run_id: r.done + r.failed for r in ended_runs}
    for run_id in previous.finished:
        if run_id not in shown and run_id not in ended and run_id in progress:
            ended[run_id] = progress[run_id].done + progress[run_id].failed
    return {k: v for k, v in ended.items() if k in previous.finished and k not in shown}


def screen(
    statuses: Mapping[str, WorkerStatus],
    heard: Mapping[str, float],
    progress: Mapping[str, RunProgress],
    ledger_runs: Sequence[RunInfo],
    previous: Sample | None,
    now: float,
    waits: Mapping[str, dict[str, int]] | None = None,
    ended_runs: Sequence[RunInfo] = (),
    broker: BrokerState | None = None,
) -> Screen:
    """One screen of ``simctl monitor`` from what the broker and the ledger say at ``now``;
    ``ended_runs``: this ledger's runs of ``previous`` that are no longer active."""
    runs = active_runs(ledger_runs, progress, now, waits)
    ended = ended_counts(previous, runs, ended_runs, progress)
    rate, sample = throughput(runs, previous, now, ended)
    return Screen(now, worker_rows(statuses, heard), runs, rate, sample, broker)


class BrokerWatch:
    """The :class:`BrokerState` of a connection from what it says at each screen."""

    def __init__(self, now: float) -> None:
        self.state = BrokerState(True, now)

    def see(self, connected: bool, now: float) -> BrokerState:
        if connected != self.state.connected:
            self.state = BrokerState(connected, now)
        return self.state


def screens(
    settings: Settings, interval: float, count: int | None
) -> Generator[Screen, None, None]:
    """Screens every ``interval`` seconds (``count`` of them, or until closed), through broker
    outages. Raises BrokerError when the broker cannot be reached at the start."""
    ledger = Ledger(settings.store)
    with Observer(settings.connection(), heartbeats=True, progress=True) as obs:
        obs.sync(MONITOR_SYNC_S)
        watch = BrokerWatch(time.time())
        previous: Sample | None = None
        n = 0
        while True:
            statuses, heard, progress = obs.snapshot()
            now = time.time()
            broker = watch.see(obs.client.is_connected(), now)
            ours = ledger.runs(active_only=True)
            rows = worker_rows(statuses, heard)
            waits = {r.run_id: waiting(ledger, r.run_id, rows) for r in ours}
            shown = screen(statuses, heard, progress, ours, previous, now, waits,
                           ended_runs=ended_ledger_runs(ledger, previous, ours), broker=broker)
            yield shown
            previous = shown.sample
            n += 1
            if count is not None and n >= count:
                return
            time.sleep(interval)


def ended_ledger_runs(
    ledger: Ledger, previous: Sample | None, active: Sequence[RunInfo]
) -> list[RunInfo]:
    """This ledger's runs of ``previous`` that are no longer among the ``active`` ones."""
    if previous is None:
        return []
    ids = {r.run_id for r in active}
    ended = []
    for run_id in previous.finished:
        if run_id in ids:
            continue
        with contextlib.suppress(UnknownRun):  # another ledger's run, or deleted
            ended.append(ledger.run(run_id))
    return ended


def workers(settings: Settings) -> list[Row]:
    """The workers' rows from their retained statuses on the broker (raises BrokerError)."""
    with Observer(settings.connection()) as obs:
        obs.sync(STATUS_SYNC_S)
        statuses, heard, _ = obs.snapshot()
    return worker_rows(statuses, heard)
