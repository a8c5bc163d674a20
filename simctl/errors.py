"""Every error simctl reports, in one rooted hierarchy; each class carries its exit code.

Exit codes (documented in docs/cli.md): 0 success, 1 some tasks failed or were cancelled
(or another operational failure), 2 invalid input, 3 timeout, 4 broker unreachable or no
worker answering, 5 the ledger cannot be written (disk full, I/O error).
"""

from __future__ import annotations

from pathlib import Path


class SimctlError(Exception):
    """Base of every error simctl reports; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(SimctlError):
    """Invalid input: arguments, options, a task file or a run id."""

    exit_code = 2


class TaskFileError(InputError):
    """A task file is not valid; the message names the file, the line and the field."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


class UnknownRun(InputError):
    """No run with this id is in the ledger."""


class ConfigError(InputError):
    """The configuration file or a configured value is invalid."""


class BrokerError(SimctlError):
    """The broker or the workers behind it cannot be reached."""

    exit_code = 4


class ConnectionFailed(BrokerError):
    """The broker refused the connection or did not answer in time."""


class NoBrokerConfigured(BrokerError):
    """No broker was given and no local broker (``simctl local up``) is running."""


class NoWorkers(BrokerError):
    """No worker answered."""


class RunTimeout(SimctlError):
    """The run did not finish within ``--timeout``; it stays resumable."""

    exit_code = 3


class TasksFailed(SimctlError):
    """The run finished but some tasks failed or were cancelled."""

    exit_code = 1


class LedgerError(SimctlError):
    """The ledger cannot be opened or is not a simctl ledger."""


class LedgerWriteError(LedgerError):
    """A write to the ledger failed (disk full, I/O error): the transaction was rolled back,
    nothing was acknowledged or sent for it, and ``simctl run --resume`` continues once the
    cause is fixed."""

    exit_code = 5


class RunActive(InputError):
    """An operation that needs a finished run (delete) was asked of an active one."""


class BrokerChanged(InputError):
    """A run is resumed against another broker (or topic prefix) than it was submitted to."""


class LocalClusterError(SimctlError):
    """The local broker or local worker agents could not be started or stopped."""
