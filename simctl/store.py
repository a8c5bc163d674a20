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
import hashlib
import os
from pathlib import Path

from simctl.errors import InputError, LedgerWriteError
from simproto.protocol import FileRef, check_sha256
from simproto.transfer import Download

OBJECTS = "objects"
PARTIAL = "partial"

COPY_BLOCK_BYTES = 1 << 20
"""A local file is copied into the store in blocks of this size, hashed on the way."""


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

    def add_file(self, source: Path, ref: FileRef) -> None:
        """Copy a local file into the store (an ``init`` configuration given by path), hashed
        as it is copied: InputError if it is no longer the file ``ref`` was made from (it
        changed after the task file was checked)."""
        target = self.path(ref.sha256)
        if target.is_file():
            return
        part = self.root / PARTIAL / f"{ref.sha256}.copy"
        digest, size = hashlib.sha256(), 0
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as src, part.open("wb") as dst:
                while block := src.read(COPY_BLOCK_BYTES):
                    digest.update(block)
                    size += len(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            if (size, digest.hexdigest()) != (ref.size, ref.sha256):
                raise InputError(f"{source} changed after the task file was checked "
                                 f"({size} bytes now, {ref.size} then): run again")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
        except OSError as e:
            raise self.write_error(e, f"cannot copy {source} into the store") from e
        finally:
            with contextlib.suppress(OSError):
                part.unlink()

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

