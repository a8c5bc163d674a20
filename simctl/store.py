"""The artifact store: every file of every task, content-addressed, beside the ledger.

``<ledger>.artifacts/objects/ab/<sha256>`` holds each distinct file once (a re-run, a reused
result or a delete never copies or loses another run's file); ``partial/<sha256>`` holds a
transfer in progress, resumed from there after a restart. A file enters ``objects`` only
whole and with its SHA-256 checked (:class:`simproto.transfer.Download`), by an atomic
rename, so the store never holds a corrupt or incomplete object. Which task has which file
is the ledger's ``artifacts`` table.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from simctl.errors import LedgerWriteError
from simproto.protocol import FileRef, check_sha256
from simproto.transfer import Download, hash_file

OBJECTS = "objects"
PARTIAL = "partial"


class StoreFull(LedgerWriteError):
    """The disk holding the store is full (or refused a write): nothing was stored, the
    transfer resumes from its partial file once space is freed (``simctl run --resume``)."""


class ArtifactStore:
    """The content-addressed files of one ledger (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def beside(cls, ledger_path: Path | str) -> ArtifactStore:
        """The store of the ledger at ``ledger_path``: ``<ledger>.artifacts``."""
        return cls(Path(f"{ledger_path}.artifacts"))

    def path(self, sha256: str) -> Path:
        """Where the object with this digest lives (whether or not it is there)."""
        check_sha256(sha256)
        return self.root / OBJECTS / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def download(self, ref: FileRef) -> Download:
        """A transfer of ``ref`` into this store, resuming its partial file if one is left."""
        return Download(ref.sha256, ref.size, self.root / PARTIAL / ref.sha256)

    def commit(self, download: Download) -> None:
        """Move a complete, verified transfer into ``objects``."""
        assert download.complete
        target = self.path(download.sha256)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(download.part, target)
        except OSError as e:
            raise self.write_error(e, f"cannot store artifact {download.sha256}") from e

    def add_file(self, source: Path) -> FileRef:
        """Copy a local file into the store (an ``init`` configuration given by path);
        its reference, named as the file."""
        size, sha256 = hash_file(source)
        target = self.path(sha256)
        if not target.is_file():
            part = self.root / PARTIAL / f"{sha256}.copy"
            try:
                part.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, part)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
            except OSError as e:
                with contextlib.suppress(OSError):
                    part.unlink()
                raise self.write_error(e, f"cannot copy {source} into the store") from e
        return FileRef(_file_name(source.name), size, sha256)

    def remove(self, digests: set[str]) -> int:
        """Delete these objects (and their partial files); the bytes freed."""
        freed = 0
        for sha256 in digests:
            for path in (self.path(sha256), self.root / PARTIAL / sha256):
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
        return freed

    def write_error(self, error: OSError, what: str) -> LedgerWriteError:
        """The error for a failed write into the store: StoreFull when the disk is full."""
        where = f"{what} in {self.root}: {error.strerror or error}"
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreFull(f"{where}; free space there, then `simctl run --resume` "
                             "continues the transfer where it stopped")
        return LedgerWriteError(where)


def _file_name(name: str) -> str:
    """A local file's name as an artifact name (characters outside the allowed set become
    ``_``), so any file may be given."""
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
    return cleaned.lstrip("._-")[:128] or "file"
