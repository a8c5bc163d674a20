"""The run ledger: SQLite (WAL) on the main PC, the source of truth of every run.

Tables: ``meta`` (the ledger's id), ``runs`` (with the broker they were submitted to),
``tasks`` (one row per task: state, current attempt, tries consumed, workers lost, worker),
``attempts`` (one row per assignment, with how it ended), ``results`` (the winning result of
each finished task, with summary and observables) and ``rejections`` (messages refused, by
reason). Every state change
is written here before it is acted on; the dispatcher groups many changes into one
transaction (:meth:`Ledger.batch`) so throughput does not pay one commit per task. WAL with
``synchronous=NORMAL`` survives a crash of simctl (not a power cut of the main PC) without
an fsync per commit.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from simctl.errors import InputError, LedgerError, LedgerWriteError, RunActive, UnknownRun
from simproto.protocol import CheckpointRef, FileRef, Result, encode_series

if TYPE_CHECKING:
    from simctl.chains import Start
    from simctl.taskfile import TaskFile, TaskSpec

SCHEMA_VERSION = 5
"""Stored in ``PRAGMA user_version``; bumped on every schema change, each of which
:data:`_MIGRATIONS` applies in place to a ledger of the version before."""

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's transaction (cancel vs dispatcher)."""


class TaskState(str, Enum):
    """Where a task stands. pending -> assigned -> done | failed | cancelled (or pending again)."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


REUSED = "reused"
"""The key of :attr:`RunInfo.counts` counting done tasks whose result was reused."""

FINISHED = (TaskState.DONE.value, TaskState.FAILED.value, TaskState.CANCELLED.value)
"""Task states that never change again."""


class RunState(str, Enum):
    """Where a run stands: active until no task is pending or assigned."""

    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Task and run states as SQL literals, from the enums (never spelled in a query).
PENDING, ASSIGNED, DONE = (f"'{s.value}'" for s in (TaskState.PENDING, TaskState.ASSIGNED,
                                                     TaskState.DONE))
FAILED, CANCELLED = (f"'{s.value}'" for s in (TaskState.FAILED, TaskState.CANCELLED))
ACTIVE = f"'{RunState.ACTIVE.value}'"
UNFINISHED = f"({PENDING}, {ASSIGNED})"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    seed         INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    taskfile     TEXT NOT NULL,
    spec         TEXT NOT NULL,
    total        INTEGER NOT NULL,
    state        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    finished_at  REAL,
    duplicates   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    idx         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    params      TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    tries       INTEGER NOT NULL DEFAULT 0,
    worker_id   TEXT,
    session     TEXT,
    assigned_at REAL,
    finished_at REAL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS tasks_run_state ON tasks(run_id, state);
CREATE TABLE IF NOT EXISTS attempts (
    task_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT NOT NULL,
    session     TEXT NOT NULL,
    assigned_at REAL NOT NULL,
    ended_at    REAL,
    outcome     TEXT,
    detail      TEXT,
    PRIMARY KEY (task_id, attempt)
);
CREATE TABLE IF NOT EXISTS results (
    task_id     TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL NOT NULL,
    stored_at   REAL NOT NULL,
    summary     TEXT NOT NULL,
    observables TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
"""
"""Schema 1, as it was created; later versions are reached through the migrations."""

_MIGRATIONS: dict[int, str] = {
    2: """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('ledger_id', lower(hex(randomblob(16))));
ALTER TABLE runs ADD COLUMN max_lost INTEGER NOT NULL DEFAULT 5;
ALTER TABLE runs ADD COLUMN broker_id TEXT;
ALTER TABLE runs ADD COLUMN topic_prefix TEXT;
ALTER TABLE runs ADD COLUMN broker TEXT;
ALTER TABLE tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
CREATE TABLE rejections (
    reason      TEXT PRIMARY KEY,
    count       INTEGER NOT NULL,
    last_at     REAL NOT NULL,
    last_detail TEXT NOT NULL
);
""",
    3: """
ALTER TABLE tasks ADD COLUMN kind_version TEXT;
ALTER TABLE tasks ADD COLUMN reuse_key TEXT;
ALTER TABLE tasks ADD COLUMN reused_from TEXT;
CREATE INDEX tasks_reuse ON tasks(reuse_key) WHERE reuse_key IS NOT NULL;
CREATE INDEX tasks_reused ON tasks(run_id) WHERE reused_from IS NOT NULL;
""",
    4: """
CREATE TABLE artifacts (
    task_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    PRIMARY KEY (task_id, name)
);
CREATE INDEX artifacts_run ON artifacts(run_id);
CREATE INDEX artifacts_sha ON artifacts(sha256);
CREATE TABLE staged (
    task_id   TEXT PRIMARY KEY,
    attempt   INTEGER NOT NULL,
    result    BLOB NOT NULL,
    staged_at REAL NOT NULL
);
ALTER TABLE tasks ADD COLUMN inputs TEXT;
ALTER TABLE tasks ADD COLUMN init_from TEXT;
CREATE INDEX tasks_init_from ON tasks(init_from) WHERE init_from IS NOT NULL;
ALTER TABLE runs ADD COLUMN max_task_artifact_bytes INTEGER;
ALTER TABLE runs ADD COLUMN max_run_artifact_bytes INTEGER;
""",
    5: """
CREATE TABLE checkpoints (
    task_id  TEXT PRIMARY KEY,
    run_id   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    step     INTEGER NOT NULL,
    name     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    saved_at REAL NOT NULL
);
CREATE INDEX checkpoints_run ON checkpoints(run_id);
CREATE INDEX checkpoints_sha ON checkpoints(sha256);
ALTER TABLE attempts ADD COLUMN start_step INTEGER;
ALTER TABLE tasks ADD COLUMN progress REAL;
ALTER TABLE runs ADD COLUMN checkpoint_every_s REAL;
""",
}
"""Version -> the statements that turn a ledger of the version before into this one.
Version 2: the ledger's id (the dispatcher's client id derives from it), the broker a run was
submitted to, lost workers per task (``max_lost``), and rejected messages by reason.
Version 3: the kind version a task was validated with (NULL for older tasks: not recorded,
any version runs them), its reuse key (kind, version, params, seed; NULL: never reused from)
and the task a reused result was computed by.
Version 4: artifacts (each task's files by name, size and SHA-256; the bytes are in the
content-addressed store beside the ledger, simctl.store), staged results (done, waiting for
their artifacts to be pulled), a task's inputs and the task whose final configuration it
starts from, and a run's artifact limits (NULL: the defaults).
Version 5: checkpoints (the latest stored one of each unfinished task; the bytes are in the
store), the step an attempt started from (NULL: not reported, or from the start), a running
task's progress, and a run's checkpoint interval (NULL: the default)."""

LAST_RUN = "last"
"""What names the newest run wherever a run id is asked for."""

AMBIGUOUS_SHOWN = 10
"""Candidates listed when a run id prefix matches several runs."""

MAX_REJECTION_DETAIL = 500
"""Longest stored detail of a rejection (hostile input is never kept in full)."""

DEFAULT_CHECKPOINT_EVERY_S = 300.0
"""Seconds between two checkpoints of a running task unless its task file says
(``checkpoint_every_s``): a lost worker costs at most about this much of a task's work, and
saving a 256,000-atom lj state every 5 minutes costs well under 1 % (docs/benchmarks.md)."""

DEFAULT_MAX_TASK_ARTIFACT_BYTES = 4 << 30
"""Bytes one task's artifacts may take unless its task file says (``artifact_limits.task``):
a 256,000-atom lj trajectory of 100 frames with velocities is about 3.5 GB."""

DEFAULT_MAX_RUN_ARTIFACT_BYTES = 500 << 30
"""Bytes a run's artifacts may take unless its task file says (``artifact_limits.run``): a
10,000-task lj sweep with final configurations of 4,000 atoms takes about 5 GB."""


@dataclass(frozen=True)
class Artifact:
    """One file of one task, as the ledger records it (the bytes are in the store)."""

    task_id: str
    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "name": self.name, "size": self.size,
                "sha256": self.sha256}


@dataclass(frozen=True)
class RunInfo:
    """One run with its task counts."""

    run_id: str
    name: str
    seed: int
    max_attempts: int
    taskfile: str
    total: int
    state: str
    created_at: float
    finished_at: float | None
    duplicates: int
    max_lost: int
    broker_id: str | None
    topic_prefix: str | None
    broker: str | None
    counts: dict[str, int]
    max_task_artifact_bytes: int | None = None
    max_run_artifact_bytes: int | None = None
    checkpoint_every_s: float | None = None

    @property
    def checkpoint_interval(self) -> float:
        """Seconds between a task's checkpoints (the task file's, else the default; 0: none)."""
        return DEFAULT_CHECKPOINT_EVERY_S if self.checkpoint_every_s is None \
            else self.checkpoint_every_s

    @property
    def task_artifact_limit(self) -> int:
        """Bytes one task's artifacts may take (the task file's, else the default)."""
        return self.max_task_artifact_bytes or DEFAULT_MAX_TASK_ARTIFACT_BYTES

    @property
    def run_artifact_limit(self) -> int:
        """Bytes all of the run's artifacts may take (the task file's, else the default)."""
        return self.max_run_artifact_bytes or DEFAULT_MAX_RUN_ARTIFACT_BYTES

    @property
    def done(self) -> int:
        return self.counts.get(TaskState.DONE.value, 0)

    @property
    def failed(self) -> int:
        return self.counts.get(TaskState.FAILED.value, 0)

    @property
    def reused(self) -> int:
        """Done tasks whose result was computed by an earlier run (not run again)."""
        return self.counts.get(REUSED, 0)

    @property
    def cancelled(self) -> int:
        return self.counts.get(TaskState.CANCELLED.value, 0)

    @property
    def running(self) -> int:
        return self.counts.get(TaskState.ASSIGNED.value, 0)

    @property
    def pending(self) -> int:
        return self.counts.get(TaskState.PENDING.value, 0)

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at or time.time()) - self.created_at

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "state": self.state,
            "tasks": self.total,
            "done": self.done,
            "reused": self.reused,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "running": self.running,
            "pending": self.pending,
            "duplicates": self.duplicates,
            "seed": self.seed,
            "max_attempts": self.max_attempts,
            "max_lost": self.max_lost,
            "checkpoint_every_s": self.checkpoint_interval,
            "taskfile": self.taskfile,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class LiveTask(NamedTuple):
    """What the dispatcher keeps in memory of an unfinished task (a named tuple: the
    dispatcher loads every unfinished task of a run at once, and a tuple is made several
    times faster than a frozen dataclass; ``_replace`` makes a changed copy)."""

    task_id: str
    run_id: str
    kind: str
    params: str
    seed: int
    attempt: int
    tries: int
    lost: int
    worker_id: str | None
    session: str | None
    kind_version: str | None = None
    inputs: str | None = None
    """The task's input files as JSON (a list of ``{"name", "size", "sha256"}``), or None."""
    init_from: str | None = None
    """The task whose final configuration this one starts from (it waits for it)."""


@dataclass(frozen=True)
class PendingTask:
    """A pending task as stored: what validating it again needs."""

    task_id: str
    kind: str
    params: dict[str, Any]
    seed: int
    kind_version: str | None
    input_digests: tuple[str, ...]
    init_from: str | None


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 6 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def complete_run_ids(path: Path, incomplete: str) -> list[tuple[str, str]]:
    """(run id, "name state") of the runs whose id starts with ``incomplete``, newest first,
    for shell completion: opened read-only (never created, never migrated, no lock waited
    for); [] for a missing or unreadable ledger, never an error."""
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
        try:
            return [
                (str(run_id), f"{name} {state}")
                for run_id, name, state in db.execute(
                    "SELECT run_id, name, state FROM runs WHERE substr(run_id, 1, ?) = ?"
                    " ORDER BY created_at DESC, run_id DESC",
                    (len(incomplete), incomplete),
                )
            ]
        finally:
            db.close()
    except sqlite3.Error:
        return []


class Ledger:
    """One open ledger file. Not shared between threads."""

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        """Open (or create) the ledger at ``path``, bringing an older schema up to date.

        ``read_only``: open an existing ledger without ever writing to it (no file or
        folder created, no migration, no change of journal mode; SQLite opens it with
        ``mode=ro``). In WAL mode readers never block the dispatcher, nor it them. A
        missing ledger, or one of another schema version, raises LedgerError saying what
        to do. Any write raises ``sqlite3.OperationalError``.
        """
        self.path = Path(path)
        self.read_only = read_only
        try:
            if read_only:
                self.db = self._connect_read_only()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(
                    self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
                )
                self._switch_to_wal()
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if read_only:
                self._check_schema()
            else:
                self._migrate()
            self.ledger_id: str = self.db.execute(
                "SELECT value FROM meta WHERE key = 'ledger_id'"
            ).fetchone()[0]
            """Made when the ledger is created and kept with it (moving the file keeps it)."""
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"cannot open ledger {self.path}: {e}") from e

    def _switch_to_wal(self) -> None:
        """Put the ledger in WAL mode, waiting for another process doing the same: two
        simctl started at once on a new ledger both switch it, and SQLite refuses the
        second at once ("database is locked": its busy handler is not called for a lock it
        would deadlock on), so the wait is here, up to the usual busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _connect_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise LedgerError(f"no ledger at {self.path} (simctl creates it with the first run)")
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)

    def _check_schema(self) -> None:
        """A read-only ledger must have this simctl's schema: an older one is not migrated
        (that is a write), so the error says how to migrate it."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has ledger schema {version}, newer than this simctl's "
                f"{SCHEMA_VERSION}: upgrade simctl (pip install -U particle-sim) to read it"
            )
        if version < SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has ledger schema {version}, older than this simctl's "
                f"{SCHEMA_VERSION}, and it is opened read-only: run any simctl command on "
                f"it once to migrate it (simctl --store {self.path} status)"
            )

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the ledger as of its first read,
        whatever a dispatcher commits meanwhile (WAL: the dispatcher is not blocked)."""
        self.db.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _migrate(self) -> None:
        """Create a new ledger, or bring one of an older schema up to date, in place."""
        if self.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the common case takes no write lock (status beside a busy dispatcher)
        with self.batch():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path} has ledger schema {version}, newer than this simctl's "
                    f"{SCHEMA_VERSION}: upgrade simctl (pip install -U particle-sim) to use it"
                )
            if version == 0:
                self._script(_SCHEMA)
                version = 1
            while version < SCHEMA_VERSION:
                version += 1
                self._script(_MIGRATIONS[version])
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _script(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self.db.execute(statement)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One write transaction: everything inside is committed together or not at all.

        A failed write (disk full, I/O error) rolls everything back and raises
        LedgerWriteError, naming this file and the cause.
        """
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            raise LedgerWriteError(f"cannot write the ledger {self.path}: {e}") from e

    @contextmanager
    def checkpoints_in_background(self) -> Iterator[None]:
        """Inside: this connection's commits never checkpoint the log; a thread does
        (:mod:`simctl.wal`, which says why), unless its connection cannot be opened. The
        dispatcher serves inside this."""
        from simctl.wal import BackgroundCheckpoints

        checkpoints = BackgroundCheckpoints(self.path, BUSY_TIMEOUT_MS / 1000)
        if not checkpoints.start():
            yield  # SQLite's automatic checkpoints stay on (logged)
            return
        pages = self.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            yield
        finally:
            checkpoints.stop()
            self.db.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")  # as it was

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a batch: undo the writes of this block alone if it raises."""
        self.db.execute("SAVEPOINT one")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK TO one")
                self.db.execute("RELEASE one")
            raise
        self.db.execute("RELEASE one")

    # ------------------------------------------------------------------ runs

    def create_run(
        self, taskfile: TaskFile, broker: tuple[str, str, str] | None = None,
        reuse: bool = True, starts: Sequence[Start] | None = None,
    ) -> str:
        """Store a run and all its tasks in one transaction; returns the run id.

        ``broker`` is (broker id, topic prefix, address) of the broker it is submitted to.
        ``starts`` gives each task's input files and the task of this run it waits for
        (``simctl.chains.resolve``; None: no task starts from a configuration).
        With ``reuse``, a task identical to one done in an earlier run (same reuse key,
        its inputs included) is stored done at once, with a copy of that result and its
        artifacts and ``reused_from`` naming the task that computed it. A task that waits
        for another of this run is never reused (its input is not known yet).
        """
        from simctl.chains import NOTHING
        from simctl.taskfile import ReuseKeys

        run_id = new_run_id()
        spec = {"text": taskfile.text, "seed_given": taskfile.seed_given}
        starts = starts or [NOTHING] * len(taskfile.tasks)
        keys = ReuseKeys()
        last_params: tuple[dict[str, Any] | None, str] = (None, "")

        def row(t: TaskSpec, start: Start) -> tuple[Any, ...]:
            nonlocal last_params
            if t.params is not last_params[0]:  # replicas, one after another, share a dict
                last_params = (t.params, json.dumps(t.params))
            if start.inputs:
                digests = tuple(ref.sha256 for ref in start.inputs)
                inputs = json.dumps([ref.to_json() for ref in start.inputs])
            else:
                digests, inputs = (), None
            key = None if start.waits_for is not None else keys.key(
                t.kind, t.kind_version, t.params, t.seed, digests)
            waits = f"{run_id}.{start.waits_for}" if start.waits_for is not None else None
            return (f"{run_id}.{t.index}", run_id, t.index, t.kind, last_params[1],
                    t.seed, t.kind_version, key, inputs, waits)

        rows = (row(t, start) for t, start in zip(taskfile.tasks, starts, strict=True))
        with self.batch():
            self.db.execute(
                "INSERT INTO runs (run_id, name, seed, max_attempts, max_lost, taskfile, spec,"
                " total, state, created_at, broker_id, topic_prefix, broker,"
                " max_task_artifact_bytes, max_run_artifact_bytes, checkpoint_every_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    taskfile.name,
                    taskfile.seed,
                    taskfile.max_attempts,
                    taskfile.max_lost,
                    str(taskfile.path),
                    json.dumps(spec),
                    len(taskfile.tasks),
                    RunState.ACTIVE.value,
                    time.time(),
                    *(broker or (None, None, None)),
                    taskfile.max_task_artifact_bytes,
                    taskfile.max_run_artifact_bytes,
                    taskfile.checkpoint_every_s,
                ),
            )
            self.db.executemany(
                "INSERT INTO tasks (task_id, run_id, idx, kind, params, seed, kind_version,"
                f" reuse_key, inputs, init_from, state)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {PENDING})",
                rows,
            )
            if reuse:
                self._reuse(run_id)
        return run_id

    def _reuse(self, run_id: str) -> None:
        """Mark the run's tasks that were computed before done, copying those results."""
        now = time.time()
        self.db.execute(
            "UPDATE tasks SET reused_from = (SELECT COALESCE(o.reused_from, o.task_id)"
            " FROM tasks o JOIN results r ON r.task_id = o.task_id"
            f" WHERE o.reuse_key = tasks.reuse_key AND o.state = {DONE} AND o.run_id != ?"
            f" ORDER BY r.stored_at LIMIT 1), state = {DONE}, finished_at = ?"
            " WHERE run_id = ? AND EXISTS (SELECT 1 FROM tasks o"
            f" WHERE o.reuse_key = tasks.reuse_key AND o.state = {DONE} AND o.run_id != ?)",
            (run_id, now, run_id, run_id),
        )
        self.db.execute(
            "INSERT INTO results (task_id, run_id, attempt, worker_id, state, started_at,"
            " finished_at, stored_at, summary, observables, metadata, error)"
            " SELECT t.task_id, t.run_id, r.attempt, r.worker_id, r.state, r.started_at,"
            " r.finished_at, ?, r.summary, r.observables, r.metadata, r.error"
            " FROM tasks t JOIN results r ON r.task_id = t.reused_from"
            " WHERE t.run_id = ? AND t.reused_from IS NOT NULL",
            (now, run_id),
        )
        self.db.execute(
            "INSERT INTO artifacts (task_id, name, run_id, size, sha256)"
            " SELECT t.task_id, a.name, t.run_id, a.size, a.sha256"
            " FROM tasks t JOIN artifacts a ON a.task_id = t.reused_from"
            " WHERE t.run_id = ? AND t.reused_from IS NOT NULL",
            (run_id,),
        )

    def _counts(self, run_id: str | None = None) -> dict[str, dict[str, int]]:
        """Tasks per run by state, and under ``reused`` those whose result was reused.

        Both counts read indexes only (tasks_run_state, and tasks_reused holding just the
        reused tasks): followers poll this several times a second on large runs."""
        where, args = (" WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        counts: dict[str, dict[str, int]] = {}
        for rid, state, n in self.db.execute(
                f"SELECT run_id, state, count(*) FROM tasks{where} GROUP BY run_id, state",
                args):
            counts.setdefault(rid, {})[state] = n
        reused_where = f"{where} AND" if where else " WHERE"
        for rid, n in self.db.execute(
                f"SELECT run_id, count(*) FROM tasks{reused_where} reused_from IS NOT NULL"
                " GROUP BY run_id", args):
            counts.setdefault(rid, {})[REUSED] = n
        return counts

    def _run_info(self, row: tuple[Any, ...], counts: dict[str, int]) -> RunInfo:
        fields = self._RUN_COLUMNS.replace(" ", "").split(",")
        return RunInfo(**dict(zip(fields, row, strict=True)), counts=counts)

    _RUN_COLUMNS = (
        "run_id, name, seed, max_attempts, taskfile, total, state, created_at, finished_at,"
        " duplicates, max_lost, broker_id, topic_prefix, broker, max_task_artifact_bytes,"
        " max_run_artifact_bytes, checkpoint_every_s"
    )

    def run(self, run_id: str) -> RunInfo:
        """One run with counts; raises UnknownRun."""
        row = self.db.execute(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise UnknownRun(f"no run {run_id!r} in the ledger {self.path}")
        return self._run_info(row, self._counts(run_id).get(run_id, {}))

    def runs(self, active_only: bool = False) -> list[RunInfo]:
        """All runs (or the active ones), oldest first, with counts."""
        where = f" WHERE state = {ACTIVE}" if active_only else ""
        rows = self.db.execute(
            f"SELECT {self._RUN_COLUMNS} FROM runs{where} ORDER BY created_at, run_id"
        ).fetchall()
        if active_only:
            return [self.run(r[0]) for r in rows]
        counts = self._counts()
        return [self._run_info(r, counts.get(r[0], {})) for r in rows]

    def resolve_run(self, spec: str) -> str:
        """The full id of the run ``spec`` names: a full id, a unique prefix of one, or
        ``last`` (the newest run). Raises UnknownRun when none matches and InputError,
        listing the candidates, when a prefix matches several (as git and docker do)."""
        if spec == LAST_RUN:
            row = self.db.execute(
                "SELECT run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise UnknownRun(f"no runs in the ledger {self.path}, so no {LAST_RUN!r} run")
            return str(row[0])
        if spec and self.db.execute("SELECT 1 FROM runs WHERE run_id = ?", (spec,)).fetchone():
            return spec
        candidates = [r[0] for r in self.db.execute(
            "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY created_at, run_id"
            " LIMIT ?", (len(spec), spec, AMBIGUOUS_SHOWN + 1))] if spec else []
        if not candidates:
            raise UnknownRun(f"no run {spec!r} in the ledger {self.path}")
        if len(candidates) == 1:
            return str(candidates[0])
        shown = ", ".join(candidates[:AMBIGUOUS_SHOWN])
        more = " and more" if len(candidates) > AMBIGUOUS_SHOWN else ""
        raise InputError(f"run id prefix {spec!r} is ambiguous: it matches {shown}{more};"
                         " give more of the id")

    def retry_run(self, run_id: str, *, cancelled: bool = False) -> int:
        """Put the failed (with ``cancelled``, also the cancelled) tasks of a finished run
        back to pending, with their seeds, and make the run active again; returns how many.

        Each task gets fresh tries and lost-worker counts (``max_attempts``, ``max_lost``
        apply anew) while its attempt numbers go on counting, so the attempts table keeps
        every earlier attempt. The results of those tasks are removed (the attempts keep how
        each ended); reused results are never retried. Raises InputError for an active run:
        its dispatcher holds its tasks in memory.
        """
        states = f"({FAILED}, {CANCELLED})" if cancelled else f"({FAILED})"
        with self.batch():
            state = self.run_state(run_id)
            if state == RunState.ACTIVE.value:
                raise InputError(f"run {run_id} is still active: retry it once it has finished"
                                 f" (or after `simctl cancel {run_id}`)")
            picked = (f"SELECT task_id FROM tasks WHERE run_id = ? AND state IN {states}"
                      " AND reused_from IS NULL")
            self.db.execute(f"DELETE FROM results WHERE task_id IN ({picked})", (run_id,))
            n = self.db.execute(
                f"UPDATE tasks SET state = {PENDING}, tries = 0, lost = 0, worker_id = NULL,"
                " session = NULL, assigned_at = NULL, finished_at = NULL, error = NULL"
                f" WHERE task_id IN ({picked})", (run_id,),
            ).rowcount
            if n:
                self.db.execute(
                    f"UPDATE runs SET state = {ACTIVE}, finished_at = NULL WHERE run_id = ?",
                    (run_id,),
                )
        return n

    def active_run_ids(self) -> list[str]:
        """Ids of runs that still have work, oldest first (cheap; polled by the dispatcher)."""
        return [
            r[0]
            for r in self.db.execute(
                f"SELECT run_id FROM runs WHERE state = {ACTIVE} ORDER BY created_at, run_id"
            )
        ]

    def run_state(self, run_id: str) -> str:
        row = self.db.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(f"no run {run_id!r} in the ledger {self.path}")
        return str(row[0])

    def finish_run(self, run_id: str) -> str:
        """Mark an active run finished (done, failed or cancelled, from its tasks)."""
        counts = self._counts(run_id).get(run_id, {})
        if counts.get(TaskState.PENDING.value) or counts.get(TaskState.ASSIGNED.value):
            raise LedgerError(f"run {run_id} still has unfinished tasks")
        if counts.get(TaskState.FAILED.value):
            state = RunState.FAILED.value
        elif counts.get(TaskState.CANCELLED.value):
            state = RunState.CANCELLED.value
        else:
            state = RunState.DONE.value
        self.db.execute(
            f"UPDATE runs SET state = ?, finished_at = ? WHERE run_id = ? AND state = {ACTIVE}",
            (state, time.time(), run_id),
        )
        return state

    def set_run_broker(self, run_id: str, broker: tuple[str, str, str]) -> None:
        """Record (broker id, topic prefix, address) as the broker a run is served by."""
        self.db.execute(
            "UPDATE runs SET broker_id = ?, topic_prefix = ?, broker = ? WHERE run_id = ?",
            (*broker, run_id),
        )

    def add_duplicates(self, run_id: str, n: int) -> None:
        self.db.execute("UPDATE runs SET duplicates = duplicates + ? WHERE run_id = ?", (n, run_id))

    def cancel_run(self, run_id: str) -> list[tuple[str, str]]:
        """Cancel every unfinished task of a run; returns (task_id, worker_id) of assigned ones."""
        now = time.time()
        with self.batch():
            assigned = self.db.execute(
                f"SELECT task_id, worker_id FROM tasks WHERE run_id = ? AND state = {ASSIGNED}",
                (run_id,),
            ).fetchall()
            self.db.execute(
                f"UPDATE attempts SET ended_at = ?, outcome = {CANCELLED} WHERE ended_at IS NULL"
                " AND task_id IN (SELECT task_id FROM tasks WHERE run_id = ?"
                f" AND state = {ASSIGNED})",
                (now, run_id),
            )
            self.db.execute(
                f"UPDATE tasks SET state = {CANCELLED}, finished_at = ?,"
                f" error = 'cancelled by user' WHERE run_id = ? AND state IN {UNFINISHED}",
                (now, run_id),
            )
            self.db.execute(
                f"UPDATE runs SET state = {CANCELLED}, finished_at = ? WHERE run_id = ?"
                f" AND state = {ACTIVE}",
                (now, run_id),
            )
        return [(t, w) for t, w in assigned]

    # ----------------------------------------------------------------- tasks

    def live_tasks(self, run_id: str) -> list[LiveTask]:
        """Unfinished tasks of a run in index order (what the dispatcher loads)."""
        return [
            LiveTask(*row)
            for row in self.db.execute(
                "SELECT task_id, run_id, kind, params, seed, attempt, tries, lost, worker_id,"
                " session, kind_version, inputs, init_from FROM tasks"
                f" WHERE run_id = ? AND state IN {UNFINISHED} ORDER BY idx",
                (run_id,),
            )
        ]

    def pending_tasks(self, run_id: str) -> list[PendingTask]:
        """The pending tasks of a run, in order (what ``--revalidate`` checks again)."""
        return [
            PendingTask(task_id, kind, json.loads(params), seed, version,
                        tuple(ref["sha256"] for ref in json.loads(inputs or "[]")),
                        init_from)
            for task_id, kind, params, seed, version, inputs, init_from in self.db.execute(
                "SELECT task_id, kind, params, seed, kind_version, inputs, init_from FROM tasks"
                f" WHERE run_id = ? AND state = {PENDING} ORDER BY idx",
                (run_id,),
            )
        ]

    def revalidate(self, updates: list[tuple[str, dict[str, Any], str, str | None]]) -> None:
        """Store (task id, params, kind version, reuse key) of pending tasks validated anew
        against the installed kinds; tasks no longer pending are left alone."""
        with self.batch():
            self.db.executemany(
                "UPDATE tasks SET params = ?, kind_version = ?, reuse_key = ?"
                f" WHERE task_id = ? AND state = {PENDING}",
                [(json.dumps(params), version, key, task_id)
                 for task_id, params, version, key in updates],
            )

    def pending_needs(self, run_id: str) -> dict[tuple[str, str | None], int]:
        """Pending tasks of a run counted by (kind, kind version)."""
        return {
            (kind, version): n
            for kind, version, n in self.db.execute(
                "SELECT kind, kind_version, count(*) FROM tasks"
                f" WHERE run_id = ? AND state = {PENDING} GROUP BY kind, kind_version",
                (run_id,),
            )
        }

    def task_state(self, task_id: str) -> tuple[str, str] | None:
        """(run id, state) of a task, or None if the ledger has no such task."""
        row = self.db.execute(
            "SELECT run_id, state FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def assigned_attempt(
        self, task_id: str, attempt: int
    ) -> tuple[str, str, str | None, str | None] | None:
        """(run id, task state, worker id, worker session) of one attempt of a task; None
        if the ledger has no such task. Worker and session are None if that attempt was
        never assigned."""
        row = self.db.execute(
            "SELECT t.run_id, t.state, a.worker_id, a.session FROM tasks t LEFT JOIN attempts a"
            " ON a.task_id = t.task_id AND a.attempt = ? WHERE t.task_id = ?",
            (attempt, task_id),
        ).fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None

    def assign(self, task_id: str, attempt: int, worker_id: str, session: str, now: float) -> None:
        """Record an assignment (inside a batch); ``attempt`` is the new attempt number."""
        self.db.execute(
            f"UPDATE tasks SET state = {ASSIGNED}, attempt = ?, tries = tries + 1, worker_id = ?,"
            " session = ?, assigned_at = ?, progress = NULL WHERE task_id = ?",
            (attempt, worker_id, session, now, task_id),
        )
        self.db.execute(
            "INSERT OR REPLACE INTO attempts (task_id, attempt, worker_id, session, assigned_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (task_id, attempt, worker_id, session, now),
        )

    def release(
        self,
        task_id: str,
        attempt: int,
        outcome: str,
        detail: str,
        *,
        refund: bool,
        lost: bool = False,
        fail: bool,
        now: float,
    ) -> None:
        """An attempt ended without a winning result: back to pending, or failed if ``fail``.

        ``refund`` gives the try back (a rejected assignment did not run; a lost worker's
        attempt does not count either); ``lost`` counts a lost worker against ``max_lost``.
        """
        self.db.execute(
            "UPDATE attempts SET ended_at = ?, outcome = ?, detail = ? WHERE task_id = ?"
            " AND attempt = ?",
            (now, outcome, detail, task_id, attempt),
        )
        self.unstage(task_id)  # rare: not every task's path
        counts = f"tries = tries - {1 if refund else 0}, lost = lost + {1 if lost else 0}"
        if fail:
            self.db.execute(
                f"UPDATE tasks SET state = {FAILED}, finished_at = ?, error = ?, {counts}"
                f" WHERE task_id = ? AND state IN {UNFINISHED}",
                (now, detail, task_id),
            )
        else:
            self.db.execute(
                f"UPDATE tasks SET state = {PENDING}, worker_id = NULL, session = NULL, {counts},"
                f" error = ? WHERE task_id = ? AND state = {ASSIGNED}",
                (detail, task_id),
            )

    def store_result(self, result: Result, state: str) -> bool:
        """Store a winning result and finish its task; False if the task was already finished."""
        now = time.time()
        cur = self.db.execute(
            "UPDATE tasks SET state = ?, finished_at = ?, error = ?, worker_id = ?"
            f" WHERE task_id = ? AND state IN {UNFINISHED}",
            (state, now, result.error, result.worker_id, result.task_id),
        )
        self.record_attempt_end(result, "duplicate" if cur.rowcount == 0 else result.state, now)
        if cur.rowcount == 0:
            return False
        self.db.execute(
            "INSERT OR REPLACE INTO results (task_id, run_id, attempt, worker_id, state,"
            " started_at, finished_at, stored_at, summary, observables, metadata, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result.task_id,
                result.run_id,
                result.attempt,
                result.worker_id,
                result.state,
                result.started_at,
                result.finished_at,
                now,
                json.dumps(result.summary),
                json.dumps({k: encode_series(v) for k, v in result.observables.items()}),
                json.dumps(result.metadata),
                result.error,
            ),
        )
        return True

    def record_attempt_end(self, result: Result, outcome: str, now: float | None = None) -> None:
        """Note how an attempt ended (the first note wins)."""
        now = time.time() if now is None else now
        self.db.execute(
            "UPDATE attempts SET ended_at = coalesce(ended_at, ?), outcome = coalesce(outcome, ?),"
            " detail = coalesce(detail, ?) WHERE task_id = ? AND attempt = ?",
            (now, outcome, result.error, result.task_id, result.attempt),
        )

    def add_rejection(self, reason: str, detail: str, now: float) -> None:
        """Count one refused message under ``reason``, keeping the latest detail."""
        self.db.execute(
            "INSERT INTO rejections (reason, count, last_at, last_detail) VALUES (?, 1, ?, ?)"
            " ON CONFLICT(reason) DO UPDATE SET count = count + 1, last_at = excluded.last_at,"
            " last_detail = excluded.last_detail",
            (reason, now, detail[:MAX_REJECTION_DETAIL]),
        )

    def rejections(self) -> dict[str, dict[str, Any]]:
        """Refused messages by reason: count, time and detail of the latest."""
        return {
            reason: {"count": count, "last_at": last_at, "last": detail}
            for reason, count, last_at, detail in self.db.execute(
                "SELECT reason, count, last_at, last_detail FROM rejections ORDER BY reason"
            )
        }

    def task_rows(self, run_id: str) -> list[dict[str, Any]]:
        """Every task of a run with its result (if any), in index order; with what computed
        it (kind version, package and version, worker image), the result's whole
        ``metadata`` ({} until there is a result) and, for a reused result, the task that
        computed it."""
        self.run(run_id)
        cols = (
            "t.task_id, t.idx, t.kind, t.params, t.seed, t.state, t.attempt, t.tries, t.lost,"
            " t.worker_id, t.error, r.summary, r.started_at, r.finished_at, r.attempt,"
            " a.assigned_at, t.kind_version, t.reused_from, r.metadata, r.worker_id"
        )
        rows = []
        for row in self.db.execute(
            f"SELECT {cols} FROM tasks t LEFT JOIN results r ON r.task_id = t.task_id"
            " LEFT JOIN attempts a ON a.task_id = r.task_id AND a.attempt = r.attempt"
            " WHERE t.run_id = ? ORDER BY t.idx",
            (run_id,),
        ):
            (
                task_id,
                idx,
                kind,
                params,
                seed,
                state,
                attempt,
                tries,
                lost,
                worker,
                error,
                summary,
                started,
                finished,
                result_attempt,
                assigned,
                kind_version,
                reused_from,
                metadata,
                result_worker,
            ) = row
            meta = json.loads(metadata) if metadata else {}
            rows.append(
                {
                    "task_id": task_id,
                    "index": idx,
                    "kind": kind,
                    "kind_version": kind_version,
                    "params": json.loads(params),
                    "seed": seed,
                    "state": state,
                    "summary": json.loads(summary) if summary else {},
                    "worker_id": worker or result_worker,
                    "attempts": attempt,
                    "tries": tries,
                    "lost": lost,
                    "result_attempt": result_attempt,
                    "elapsed_s": round(finished - started, 6) if finished is not None else None,
                    "error": error if state != TaskState.DONE.value else None,
                    "assigned_at": assigned,
                    "started_at": started,
                    "finished_at": finished,
                    "reused_from": reused_from,
                    "package": meta.get("package"),
                    "package_version": meta.get("package_version"),
                    "image": meta.get("image"),
                    "metadata": meta,
                }
            )
        return rows

    def task_states(
        self,
        run_id: str,
        states: Collection[str] | None = None,
        limit: int | None = None,
        failed_first: bool = False,
    ) -> list[dict[str, Any]]:
        """The tasks of a run, state only (what ``simctl status RUN`` shows), in index
        order: those in ``states`` (None: all), the failed ones first with ``failed_first``,
        at most ``limit`` (None: all)."""
        self.run(run_id)
        cols = ("task_id", "kind", "state", "worker_id", "attempts", "error", "progress",
                "resumed_at_step")
        # progress and the step resumed from are of the running attempt only.
        sql = (f"SELECT t.task_id, t.kind, t.state, t.worker_id, t.attempt, t.error,"
               f" CASE WHEN t.state = {ASSIGNED} THEN coalesce(t.progress, 0.0) END,"
               f" CASE WHEN t.state = {ASSIGNED} THEN a.start_step END"
               " FROM tasks t LEFT JOIN attempts a ON a.task_id = t.task_id"
               " AND a.attempt = t.attempt WHERE t.run_id = ?")
        args: list[Any] = [run_id]
        if states is not None:
            sql += f" AND t.state IN ({', '.join('?' for _ in states)})"
            args += list(states)
        sql += f" ORDER BY {f't.state = {FAILED} DESC, ' if failed_first else ''}t.idx"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [dict(zip(cols, row, strict=True)) for row in self.db.execute(sql, args)]

    def observables(self, run_id: str) -> dict[str, dict[str, list[float]]]:
        """task_id -> observables of every stored result of a run."""
        from simproto.protocol import decode_series

        return {
            task_id: {k: decode_series(v) for k, v in json.loads(obs).items()}
            for task_id, obs in self.db.execute(
                "SELECT task_id, observables FROM results WHERE run_id = ?", (run_id,)
            )
        }

    # ------------------------------------------------------------- artifacts

    def artifacts(self, run_id: str, task_id: str | None = None) -> list[Artifact]:
        """The stored artifacts of a run (or of one of its tasks), by task index and name."""
        self.run(run_id)
        sql = ("SELECT a.task_id, a.name, a.size, a.sha256 FROM artifacts a"
               " JOIN tasks t ON t.task_id = a.task_id WHERE a.run_id = ?")
        args: list[Any] = [run_id]
        if task_id is not None:
            sql += " AND a.task_id = ?"
            args.append(task_id)
        return [Artifact(*row) for row in self.db.execute(sql + " ORDER BY t.idx, a.name",
                                                          args)]

    def add_artifacts(self, run_id: str, task_id: str, refs: Iterable[FileRef]) -> None:
        """Record a task's artifacts (inside the batch that stores its result; the bytes are
        in the store already)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO artifacts (task_id, name, run_id, size, sha256)"
            " VALUES (?, ?, ?, ?, ?)",
            [(task_id, ref.name, run_id, ref.size, ref.sha256) for ref in refs])

    def stage_result(self, result: Result) -> None:
        """Keep a done result whose artifacts are being pulled (its task stays assigned):
        a restarted dispatcher resumes the pull from here."""
        self.db.execute(
            "INSERT OR REPLACE INTO staged (task_id, attempt, result, staged_at)"
            " VALUES (?, ?, ?, ?)", (result.task_id, result.attempt, result.encode(), time.time()))

    def unstage(self, task_id: str) -> None:
        """Forget a staged result (its files are stored, or its attempt ended)."""
        self.db.execute("DELETE FROM staged WHERE task_id = ?", (task_id,))

    def staged_results(self, run_id: str) -> dict[str, Result]:
        """The staged results of a run's tasks, by task id (undecodable ones are dropped:
        their attempts end as their workers' leases do)."""
        staged = {}
        for task_id, blob in self.db.execute(
                "SELECT s.task_id, s.result FROM staged s JOIN tasks t ON t.task_id = s.task_id"
                f" WHERE t.run_id = ? AND t.state = {ASSIGNED} AND s.attempt = t.attempt",
                (run_id,)):
            with contextlib.suppress(ValueError):
                staged[task_id] = Result.decode(bytes(blob))
        return staged

    def set_inputs(self, task_id: str, refs: Iterable[FileRef]) -> None:
        """Give a waiting task its input files (its init task is done)."""
        self.db.execute("UPDATE tasks SET inputs = ? WHERE task_id = ?",
                        (json.dumps([ref.to_json() for ref in refs]), task_id))

    def fail_task(self, task_id: str, error: str, now: float) -> None:
        """Fail a pending task that cannot run (the task it starts from failed)."""
        self.db.execute(
            f"UPDATE tasks SET state = {FAILED}, error = ?, finished_at = ?"
            f" WHERE task_id = ? AND state = {PENDING}", (error, now, task_id))

    def final_configuration(self, task_id: str) -> FileRef | None:
        """The task's ``final.xyz`` as the ``init`` input of a task starting from it, or
        None when it stored none."""
        import simkind

        row = self.db.execute("SELECT size, sha256 FROM artifacts WHERE task_id = ? AND"
                              " name = ?", (task_id, simkind.FINAL_CONFIGURATION)).fetchone()
        return FileRef(simkind.INIT_INPUT, row[0], row[1]) if row else None

    def run_artifact_bytes(self, run_id: str) -> int:
        """Bytes of the artifacts stored for a run (each task's files counted)."""
        row = self.db.execute("SELECT coalesce(sum(size), 0) FROM artifacts WHERE run_id = ?",
                              (run_id,)).fetchone()
        return int(row[0])

    def referenced_digests(self, digests: Collection[str],
                           excluding_run: str | None = None) -> set[str]:
        """Which of ``digests`` an artifact or checkpoint row or a task's inputs still name
        (those of ``excluding_run`` left out). Rows are looked up by their indexes; inputs
        (few tasks have any) are read in one pass, not searched once per digest."""
        other = " AND run_id != ?" if excluding_run is not None else ""
        extra = (excluding_run,) if excluding_run is not None else ()
        found = {sha for sha in digests if any(self.db.execute(
            f"SELECT 1 FROM {table} WHERE sha256 = ?{other} LIMIT 1",
            (sha, *extra)).fetchone() for table in ("artifacts", "checkpoints"))}
        rest = set(digests) - found
        if rest:
            for (inputs,) in self.db.execute(
                    f"SELECT inputs FROM tasks WHERE inputs IS NOT NULL{other}", extra):
                found.update(rest.intersection(ref["sha256"] for ref in json.loads(inputs)))
        return found

    def run_digests(self, run_id: str) -> set[str]:
        """The files a run names: its artifacts, checkpoints and its tasks' inputs."""
        digests = {sha for table in ("artifacts", "checkpoints") for (sha,) in self.db.execute(
            f"SELECT DISTINCT sha256 FROM {table} WHERE run_id = ?", (run_id,))}
        for (inputs,) in self.db.execute(
                "SELECT inputs FROM tasks WHERE run_id = ? AND inputs IS NOT NULL", (run_id,)):
            digests.update(ref["sha256"] for ref in json.loads(inputs))
        return digests

    def digests_only_in(self, run_id: str) -> set[str]:
        """The files only this run names (what deleting it removes from the store)."""
        digests = self.run_digests(run_id)
        return digests - self.referenced_digests(digests, excluding_run=run_id)

    def delete_run(self, run_id: str) -> set[str]:
        """Remove a run that is not active, with its tasks, attempts, results and artifact
        rows, in one transaction; the digests of its files that nothing else names now (the
        caller removes those from the store, after this commits). RunActive if active."""
        info = self.run(run_id)
        if info.state == RunState.ACTIVE.value:
            raise RunActive(f"run {run_id} is active: cancel it first (simctl cancel "
                            f"{run_id}), then delete it")
        with self.batch():
            unreferenced = self.digests_only_in(run_id)
            task_ids = "SELECT task_id FROM tasks WHERE run_id = ?"
            for table in ("attempts", "staged"):
                self.db.execute(f"DELETE FROM {table} WHERE task_id IN ({task_ids})", (run_id,))
            for table in ("artifacts", "checkpoints", "results", "tasks", "runs"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        return unreferenced

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, run_id: str, task_id: str, attempt: int,
                        checkpoint: CheckpointRef) -> str | None:
        """Record the latest stored checkpoint of a task (its object is in the store); the
        digest of the one it replaces, if another (the caller removes it once unnamed)."""
        old = self.db.execute("SELECT sha256 FROM checkpoints WHERE task_id = ?",
                              (task_id,)).fetchone()
        ref = checkpoint.file
        self.db.execute(
            "INSERT OR REPLACE INTO checkpoints (task_id, run_id, attempt, step, name, size,"
            " sha256, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, run_id, attempt, checkpoint.step, ref.name, ref.size, ref.sha256,
             time.time()))
        return old[0] if old is not None and old[0] != ref.sha256 else None

    def checkpoints(self, run_id: str) -> dict[str, CheckpointRef]:
        """Task id -> the latest stored checkpoint, of a run's tasks that have one."""
        return {task_id: CheckpointRef(step, FileRef(name, size, sha256))
                for task_id, step, name, size, sha256 in self.db.execute(
                    "SELECT task_id, step, name, size, sha256 FROM checkpoints"
                    " WHERE run_id = ?", (run_id,))}

    def drop_checkpoint(self, task_id: str) -> str | None:
        """Forget a finished task's checkpoint; its digest (None: it had none)."""
        row = self.db.execute("DELETE FROM checkpoints WHERE task_id = ? RETURNING sha256",
                              (task_id,)).fetchone()
        return row[0] if row is not None else None

    def set_start_step(self, task_id: str, attempt: int, step: int) -> None:
        """Record the step an attempt resumed from."""
        self.db.execute("UPDATE attempts SET start_step = ? WHERE task_id = ? AND attempt = ?",
                        (step, task_id, attempt))

    def set_progress(self, progress: Iterable[tuple[str, float]]) -> None:
        """Record running tasks' progress fractions ((task id, fraction) pairs)."""
        self.db.executemany("UPDATE tasks SET progress = ? WHERE task_id = ?",
                            ((fraction, task_id) for task_id, fraction in progress))

    def attempts(self, task_id: str) -> list[dict[str, Any]]:
        """Every attempt of one task, in order."""
        cols = ("attempt", "worker_id", "session", "assigned_at", "ended_at", "outcome", "detail",
                "start_step")
        return [
            dict(zip(cols, row, strict=False))
            for row in self.db.execute(
                f"SELECT {', '.join(cols)} FROM attempts WHERE task_id = ? ORDER BY attempt",
                (task_id,),
            )
        ]
