"""The ledger's results as pandas DataFrames, for notebooks and scripts.

::

    from simctl.api import load_results, load_aggregates, load_observables

    df = load_results("last")            # one row per task
    points = load_aggregates("last")     # one row per sweep point: mean, sem, n
    obs = load_observables("last")       # long format: task_id, name, i, value
    files = artifacts("last")            # the tasks' files: one dict each, with its path

Every function opens the ledger read-only (never created, migrated or written; a
dispatcher may be writing it meanwhile) and reads one consistent snapshot of it. RUN is
what the command line accepts: a full run id, a unique prefix of one, or ``last``.
``store=None`` is the ledger simctl uses without global options (``$SIMCTL_STORE``, the
config file, else the local cluster's or the default one). The columns are those of
``simctl results --format csv`` (``--metadata``) and ``--aggregate --format csv``.

The DataFrames need the ``analysis`` extra (``pip install 'particle-sim[analysis]'``);
:func:`artifacts` and :func:`artifact_path` do not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from simctl.results import ANALYSIS_EXTRA, JSON_FIELDS

if TYPE_CHECKING:
    import pandas

    from simctl.artifacts import StoredFile
    from simctl.ledger import Ledger

__all__ = ["TASK_COLUMNS", "artifact_path", "artifacts", "load_aggregates", "load_observables",
           "load_results", "resolve_store"]

TASK_COLUMNS = tuple(f for f in JSON_FIELDS if f not in ("params", "summary", "metadata"))
"""The first columns of :func:`load_results` (the fields of ``simctl results --json``);
``param.<name>``, ``summary.<name>`` and ``meta.<name>`` follow."""

T = TypeVar("T")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:
        raise ImportError(f"simctl.api needs the analysis extra: {ANALYSIS_EXTRA}") from e
    return pandas


def resolve_store(store: str | os.PathLike[str] | None = None) -> Path:
    """The ledger file: ``store`` if given, else what simctl would use without global
    options (``$SIMCTL_STORE``; the config file's ``store``; the local cluster's ledger
    when no broker is configured; else ``$XDG_DATA_HOME/simctl/ledger.sqlite``)."""
    if store is not None:
        return Path(store).expanduser()
    from simctl.config import Settings

    given = {key: os.environ.get(f"SIMCTL_{key.upper()}") for key in ("store", "broker")}
    return Settings.resolve(given, None).store


@contextmanager
def _reading(store: str | os.PathLike[str] | None) -> Iterator[Ledger]:
    from simctl.ledger import Ledger

    ledger = Ledger(resolve_store(store), read_only=True)
    try:
        with ledger.snapshot():
            yield ledger
    finally:
        ledger.close()


def _frame(columns: list[str], flat: list[dict[str, Any]]) -> pandas.DataFrame:
    return _pandas().DataFrame(flat, columns=columns)


def _read(run_id: str, store: str | os.PathLike[str] | None,
          read: Callable[[Ledger, str], T]) -> T:
    _pandas()  # the missing extra is said before anything is read
    with _reading(store) as ledger:
        return read(ledger, ledger.resolve_run(run_id))


def load_results(run_id: str, store: str | os.PathLike[str] | None = None) -> pandas.DataFrame:
    """One row per task of the run, in task order: :data:`TASK_COLUMNS` (task_id, kind,
    kind_version, package, ..., state, seed, worker_id, attempts, elapsed_s, reused_from,
    ...), then ``param.<name>``, ``summary.<name>`` and ``meta.<name>`` (the result's
    metadata: backend, elapsed, ...). Unfinished tasks have empty (NaN/None) summaries;
    nested values (lists, dicts) are JSON text."""
    from simctl.results import task_table

    return _read(run_id, store, lambda ledger, rid: _frame(
        *task_table(ledger.task_rows(rid), metadata=True, fixed=TASK_COLUMNS)))


def load_aggregates(run_id: str, store: str | os.PathLike[str] | None = None
                    ) -> pandas.DataFrame:
    """One row per sweep point (the replicas of a kind and params together), in order of
    each point's first task: kind, total (tasks), done, failed, ``param.<name>``, then
    ``summary.<name>.mean``, ``.sem`` (NaN with a single done replica) and ``.n`` (the
    done replicas that have the value). Only done tasks count."""
    from simctl.aggregate import aggregate
    from simctl.results import point_table

    return _read(run_id, store, lambda ledger, rid: _frame(
        *point_table(aggregate(ledger.task_rows(rid)))))


def load_observables(run_id: str, store: str | os.PathLike[str] | None = None,
                     task: str | None = None) -> pandas.DataFrame:
    """Every observable series of the run's stored results in long format: one row per
    sample, columns ``task_id``, ``name``, ``i`` (the sample's index in its series) and
    ``value`` (float), in task order. ``task``: only that task (its full id, or its index
    in the run as in ``RUN.3``: ``"3"``)."""
    pd = _pandas()

    def read(ledger: Ledger, rid: str) -> pandas.DataFrame:
        order = {r["task_id"]: r["index"] for r in ledger.task_rows(rid)}
        wanted = None if task is None else (task if task in order else f"{rid}.{task}")
        if wanted is not None and wanted not in order:
            raise KeyError(f"run {rid} has no task {task!r}")
        series = ledger.observables(rid)
        records = [(task_id, name, i, value)
                   for task_id in sorted(series, key=order.__getitem__)
                   if wanted is None or task_id == wanted
                   for name, values in series[task_id].items()
                   for i, value in enumerate(values)]
        frame = pd.DataFrame.from_records(records, columns=["task_id", "name", "i", "value"])
        return frame.astype({"i": "int64", "value": "float64"})

    return _read(run_id, store, read)


def _stored_files(run_id: str, store: str | os.PathLike[str] | None,
                  task: str | int | None) -> list[StoredFile]:
    from simctl.artifacts import stored_files
    from simctl.store import ArtifactStore

    with _reading(store) as ledger:
        return stored_files(ledger, ArtifactStore.beside(ledger.path),
                            ledger.resolve_run(run_id), None if task is None else str(task))


def artifacts(run_id: str, store: str | os.PathLike[str] | None = None,
              task: str | int | None = None) -> list[dict[str, Any]]:
    """Every artifact of the run (``task``: of that task only, its full id or its index,
    ``3`` or ``"3"``), by task index and name: one dict per file with ``task_id``, ``name``,
    ``size``, ``sha256``, ``index``, ``kind``, ``point`` (the task's values of the params
    that vary across the run), ``replica`` (None when its point has one task) and ``path`` (a
    :class:`~pathlib.Path`: the file in the store; read it, never write it)."""
    return [{**f.to_json(), "path": f.path} for f in _stored_files(run_id, store, task)]


def artifact_path(run_id: str, task: str | int, name: str,
                  store: str | os.PathLike[str] | None = None) -> Path:
    """The file in the store of the artifact ``name`` of ``task`` (its full id or its
    index): read it in place, never write it. InputError (a
    :class:`~simctl.errors.SimctlError`) when the task or file is unknown,
    :class:`~simctl.artifacts.ArtifactUnavailable` when the store lacks the file."""
    from simctl.artifacts import ArtifactUnavailable, find_file

    found = find_file(_stored_files(run_id, store, task), name)
    if not found.path.is_file():
        raise ArtifactUnavailable(found.missing())
    return found.path
