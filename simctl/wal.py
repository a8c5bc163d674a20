"""The ledger's write-ahead-log checkpoints, taken off the dispatcher's loop.

SQLite copies its write-ahead log (WAL) into the database file, a checkpoint, from the
commit that takes the log past 1,000 pages. With ``synchronous=NORMAL`` that checkpoint also
syncs the log and then the database file to disk. The dispatcher commits once per pass, so
about every hundred passes one of them waited for two syncs: measured on the development
machines, 60 to 100 us of wall time per task on average, in the one process every worker
slot waits on for its next assignment.

While it serves, the dispatcher turns automatic checkpoints off for its own connection and
this thread takes them on a connection of its own, every ``CHECKPOINT_EVERY_S``. A PASSIVE
checkpoint blocks neither the dispatcher's writes nor any reader, and its syncs wait here.
Durability is unchanged: a commit is in the log either way, and the log is what SQLite
recovers from; a process killed mid-checkpoint leaves a log the next open completes. The
thread's connection is opened before automatic checkpoints are turned off: when it cannot
be (no file descriptor left, the ledger's folder renamed), the dispatcher keeps SQLite's own
checkpoints rather than a log that would grow for as long as it serves.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from simproto.ratelimit import RateLimit

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.1
"""Pause between two checkpoints. At the dispatcher's fastest (about a thousand passes a
second, ten pages each) SQLite's own threshold of 1,000 pages came about as often."""

FAILURES_LOGGED_PER_S = 0.2
"""A checkpoint that keeps failing (a full disk) is retried every CHECKPOINT_EVERY_S but
logged about once in five seconds, with the count of those not logged."""


class BackgroundCheckpoints:
    """Checkpoint the ledger at ``path`` from a daemon thread until :meth:`stop`."""

    def __init__(self, path: Path, timeout_s: float, every_s: float = CHECKPOINT_EVERY_S):
        self.path = path
        self.timeout_s = timeout_s
        self.every_s = every_s
        self._failure_logs = RateLimit(FAILURES_LOGGED_PER_S, 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-checkpoints",
                                        daemon=True)
        self._db: sqlite3.Connection | None = None

    def start(self) -> bool:
        """Open the thread's connection and start the thread; False (logged) when the
        connection cannot be had, and nothing was started."""
        try:  # mode=rw: a ledger gone from its path is not made again, empty
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                                 isolation_level=None, timeout=self.timeout_s,
                                 check_same_thread=False)
        except sqlite3.Error as e:
            log.warning("cannot open the ledger %s for background checkpoints (%s): its "
                        "commits checkpoint the log themselves", self.path, e)
            return False
        db.execute("PRAGMA synchronous=NORMAL")  # this connection's setting: no file access
        self._db = db
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop the thread after its current checkpoint (and one last one)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        db = self._db
        assert db is not None
        try:
            while True:
                stopping = self._stop.wait(self.every_s)
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:
                    if self._failure_logs.allow():
                        log.warning("checkpoint of the ledger %s failed (tried again every"
                                    " %.1f s): %s%s", self.path, self.every_s, e,
                                    self._failure_logs.unreported())
                if stopping:
                    return
        finally:
            db.close()
