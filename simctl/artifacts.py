"""A run's artifacts for people and scripts: each task's files with the sweep point the task
ran, one file copied out of the store with its SHA-256 checked, every file exported into a
folder per task, and the files a deleted run leaves behind.

``simctl artifacts``, ``simctl results --artifacts``, ``simctl delete`` and :mod:`simctl.api`
use it. The ledger says which task has which file (name, size, SHA-256); the bytes are in the
:class:`~simctl.store.ArtifactStore` beside it.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from simctl.aggregate import aggregate, swept
from simctl.errors import InputError, LedgerError
from simctl.ledger import Artifact, Ledger
from simctl.results import csv_text, param_text, task_table
from simctl.store import ArtifactStore
from simproto.transfer import RESUME_BLOCK_BYTES, hash_file

INDEX_FILE = "index.csv"
"""The file of an export that maps each folder to its task, params and summary."""

INDEX_FIXED = ("folder", "task_id", "index", "kind", "replica")
"""The first columns of :data:`INDEX_FILE`; ``param.<name>`` and ``summary.<name>`` follow."""

MIN_INDEX_DIGITS = 4
"""A folder's task index is zero-padded to at least this many digits (to the digits of the
largest index when more), so folders sort in task order."""

MAX_VALUE_CHARS = 40
"""Longest param value in a folder name (the index in front keeps cut names apart)."""

MAX_FOLDER_CHARS = 200
"""Longest folder name (file systems allow 255 bytes)."""

SHORT_SHA = 12
"""Hex digits of a SHA-256 in tables."""

CONFLICTS_SHOWN = 3
"""Paths named in the error about files that differ from the run's."""

READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class ArtifactUnavailable(LedgerError):
    """The store lacks a file the ledger lists for a task, or its bytes no longer match their
    size and SHA-256 (changed by hand, or corrupted on disk)."""


@dataclass(frozen=True)
class TaskPoint:
    """Where a task sits in its run's sweep, for people: its values of the params that vary
    across the run, and which replica of that point it is."""

    task_id: str
    index: int
    kind: str
    point: dict[str, Any]
    """The task's values of the swept params (those that differ between the run's points)."""
    replica: int | None
    """1 for the point's first task, 2 for the next...; None when the point has one task."""

    def label(self) -> str:
        """``temperature=1.2 density=0.8 r2`` (``-`` when nothing varies and nothing repeats)."""
        words = [f"{name}={param_text(value)}" for name, value in self.point.items()]
        if self.replica is not None:
            words.append(f"r{self.replica}")
        return " ".join(words) or "-"

    def folder(self, digits: int, with_kind: bool) -> str:
        """The task's folder in an export: ``0007_temperature=1.2_density=0.8_r1`` (the kind
        after the index ``with_kind``, when the run has several). Characters a file name
        should not hold become ``_``."""
        parts = [f"{self.index:0{digits}d}", *([self.kind] if with_kind else [])]
        parts += [f"{name}={_file_safe(param_text(value))[:MAX_VALUE_CHARS]}"
                  for name, value in self.point.items()]
        if self.replica is not None:
            parts.append(f"r{self.replica}")
        return "_".join(parts)[:MAX_FOLDER_CHARS]


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".+-=," else "_" for c in text)


def task_points(rows: Iterable[Mapping[str, Any]]) -> dict[str, TaskPoint]:
    """Task id -> its :class:`TaskPoint`, for task rows of one run
    (:meth:`~simctl.ledger.Ledger.task_rows`)."""
    rows = list(rows)
    points = aggregate(rows)
    axes = swept(points)
    indexes = {r["task_id"]: r["index"] for r in rows}
    found = {}
    for p in points:
        values = {name: p.params[name] for name in axes if name in p.params}
        for replica, task_id in enumerate(p.tasks, start=1):
            found[task_id] = TaskPoint(task_id, indexes[task_id], p.kind, values,
                                       replica if len(p.tasks) > 1 else None)
    return found


def resolve_task(run_id: str, spec: str, task_ids: Collection[str]) -> str:
    """The id of the task ``spec`` names in a run: its full id, or its index in the run
    (``3`` for ``RUN.3``); InputError when the run has no such task."""
    for candidate in (spec, f"{run_id}.{spec}"):
        if candidate in task_ids:
            return candidate
    raise InputError(f"run {run_id} has no task {spec!r}: give its index (as in 3) or its "
                     f"id (as in {run_id}.3)")


@dataclass(frozen=True)
class StoredFile:
    """One artifact with its task's place in the sweep and the store file holding it."""

    artifact: Artifact
    task: TaskPoint
    path: Path

    def missing(self) -> str:
        """What to say when the store lacks the file."""
        a = self.artifact
        return f"the store has no copy of {a.task_id} {a.name} (expected at {self.path})"

    def to_json(self) -> dict[str, Any]:
        return {**self.artifact.to_json(), "index": self.task.index, "kind": self.task.kind,
                "point": self.task.point, "replica": self.task.replica, "path": str(self.path)}


def stored_files(ledger: Ledger, store: ArtifactStore, run_id: str,
                 task: str | None = None) -> list[StoredFile]:
    """The artifacts of a run (or of its task ``task``: full id or index), by task index and
    name. Two reads: call it inside :meth:`~simctl.ledger.Ledger.snapshot`."""
    points = task_points(ledger.task_rows(run_id))
    task_id = None if task is None else resolve_task(run_id, task, points)
    found = ledger.artifacts(run_id, task_id)
    return [StoredFile(a, points[a.task_id], store.path(a.sha256)) for a in found]


def find_file(files: Iterable[StoredFile], name: str) -> StoredFile:
    """The file called ``name`` among one task's ``files``; InputError naming those it has."""
    files = list(files)
    for f in files:
        if f.artifact.name == name:
            return f
    names = ", ".join(f.artifact.name for f in files) or "none"
    raise InputError(f"no artifact {name!r}: this task has {names}")


def copy_verified(source: StoredFile, sink: IO[bytes]) -> None:
    """Write the stored bytes of ``source`` into ``sink``, checking their size and SHA-256 as
    they go; ArtifactUnavailable (after the bytes are written: the caller discards them) when
    the store's file is missing or does not match."""
    a = source.artifact
    digest = hashlib.sha256()
    size = 0
    try:
        with source.path.open("rb") as f:
            while block := f.read(RESUME_BLOCK_BYTES):
                digest.update(block)
                size += len(block)
                sink.write(block)
    except FileNotFoundError as e:
        raise ArtifactUnavailable(source.missing()) from e
    if size != a.size or digest.hexdigest() != a.sha256:
        raise ArtifactUnavailable(
            f"the store's copy of {a.task_id} {a.name} ({source.path}) is corrupt: "
            f"{size} bytes with SHA-256 {digest.hexdigest()}, the ledger has {a.size} bytes "
            f"with {a.sha256}")


def _part(target: Path) -> Path:
    """The temporary file beside ``target`` that becomes it by an atomic rename."""
    return target.with_name(f".{target.name}.{os.getpid()}.part")


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` that becomes ``target`` when the block ends without
    an error, and is removed otherwise."""
    part = _part(target)
    try:
        yield part
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def save_file(source: StoredFile, target: Path, force: bool = False) -> None:
    """Copy a stored file to ``target`` (a new file; any file with ``force``), checked
    against its SHA-256; nothing is left at ``target`` if the check fails."""
    if (target.exists() or target.is_symlink()) and not force:
        raise InputError(f"{target} exists: give --force to overwrite it, or -o another path")
    with _writing(target), _replacing(target) as part, part.open("wb") as sink:
        copy_verified(source, sink)


@contextlib.contextmanager
def _writing(where: Path) -> Iterator[None]:
    """OSError from writing ``where`` (a file, or a folder and what is in it) as an
    InputError: a folder that does not exist, no permission, a full disk."""
    try:
        yield
    except OSError as e:
        raise InputError(f"cannot write {where}: {e.strerror or e}") from e


# ------------------------------------------------------------------------------ export


@dataclass
class Export:
    """What an export did: task folders, and files linked from the store, copied (the
    folder is on another file system), found already there, replaced (``force``)."""

    folders: int = 0
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    replaced: int = 0

    def text(self, dest: Path) -> str:
        files = self.linked + self.copied + self.unchanged
        return (f"exported {files} artifact{'s' if files != 1 else ''} of {self.folders} "
                f"task{'s' if self.folders != 1 else ''} to {dest} ({self.linked} linked, "
                f"{self.copied} copied, {self.unchanged} already there, {self.replaced} "
                "replaced)")


def _same_content(path: Path, source: StoredFile) -> bool:
    if not path.is_file():
        return False
    with contextlib.suppress(OSError):
        if os.path.samefile(path, source.path):
            return True
    a = source.artifact
    return path.stat().st_size == a.size and hash_file(path) == (a.size, a.sha256)


def _index_text(rows: list[dict[str, Any]], points: Mapping[str, TaskPoint],
                folders: Mapping[str, str]) -> str:
    exported = [{**r, "folder": folders[r["task_id"]],
                 "replica": points[r["task_id"]].replica}
                for r in rows if r["task_id"] in folders]
    return csv_text(*task_table(exported, fixed=INDEX_FIXED))


def _index_of_run(path: Path, run_id: str) -> bool:
    """Whether the index file at ``path`` lists only tasks of ``run_id`` (an earlier export
    of the run, rewritten as the run goes on)."""
    try:
        listed = [row.get("task_id") or "" for row in csv.DictReader(
            io.StringIO(path.read_text()))]
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return all(task_id.startswith(f"{run_id}.") for task_id in listed)


def export(ledger: Ledger, store: ArtifactStore, run_id: str, dest: Path, *,
           kinds: Collection[str] | None = None, force: bool = False) -> Export:
    """Put every artifact of a run (of its tasks of ``kinds``; None: all) into ``dest``: a
    folder per task named by :meth:`TaskPoint.folder`, the task's files in it under their
    names, and :data:`INDEX_FILE`.

    A file is a hard link to the store's (made read-only: editing it would change the
    store's) when ``dest`` is on the store's file system, else a copy checked against its
    SHA-256. A file already there with the same content is kept, so exporting again adds
    only what is new. Before anything is written: ArtifactUnavailable if the store lacks a
    file, InputError if files in ``dest`` differ from the run's (unless ``force``: they are
    replaced).
    """
    with ledger.snapshot():
        rows = ledger.task_rows(run_id)
        found = ledger.artifacts(run_id)
    points = task_points(rows)
    wanted = {r["task_id"] for r in rows if kinds is None or r["kind"] in kinds}
    digits = max(MIN_INDEX_DIGITS, len(str(max((r["index"] for r in rows), default=0))))
    with_kind = len({p.kind for p in points.values()}) > 1
    folders = {task_id: points[task_id].folder(digits, with_kind)
               for task_id in wanted if any(a.task_id == task_id for a in found)}
    plan = [(StoredFile(a, points[a.task_id], store.path(a.sha256)),
             dest / folders[a.task_id] / a.name) for a in found if a.task_id in folders]

    missing = [f.missing() for f, _ in plan if not f.path.is_file()]
    if missing:
        raise ArtifactUnavailable(f"{missing[0]}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    index = dest / INDEX_FILE
    index_text = _index_text(rows, points, folders)
    same = {target for f, target in plan if _same_content(target, f)}
    conflicts = [target for _, target in plan
                 if target not in same and (target.exists() or target.is_symlink())]
    if index.exists() and not _index_of_run(index, run_id):
        conflicts.append(index)
    if conflicts and not force:
        shown = ", ".join(str(p) for p in conflicts[:CONFLICTS_SHOWN])
        more = f" and {len(conflicts) - CONFLICTS_SHOWN} more" if len(
            conflicts) > CONFLICTS_SHOWN else ""
        raise InputError(f"{len(conflicts)} file{'s' if len(conflicts) != 1 else ''} in "
                         f"{dest} differ from run {run_id}'s: {shown}{more}; give --force "
                         "to replace them, or export into another folder")

    done = Export(folders=len(folders), replaced=sum(p != index for p in conflicts))
    with _writing(dest):
        for source, target in plan:
            if target in same:
                done.unchanged += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if _link(source, target):
                done.linked += 1
            else:
                save_file(source, target, force=True)
                done.copied += 1
        dest.mkdir(parents=True, exist_ok=True)
        with _replacing(index) as part:
            part.write_text(index_text)
    return done


LINK_REFUSED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
"""Why a hard link may fail where a copy works: another file system, one without hard links
(some network and FAT file systems), or too many links to one file."""


def _link(source: StoredFile, target: Path) -> bool:
    """Hard-link the store's file to ``target``; False when the file system refuses it."""
    part = _part(target)
    part.unlink(missing_ok=True)  # left by an earlier export that was killed
    try:
        os.link(source.path, part)
    except OSError as e:
        if e.errno in LINK_REFUSED:
            return False
        raise
    try:
        # The link is the store's own file: written to, it would corrupt the store.
        os.chmod(part, READ_ONLY)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return True


# ------------------------------------------------------------------------------ delete


@dataclass(frozen=True)
class Deletion:
    """A run to delete and what goes with it."""

    run_id: str
    files: int
    """Artifact rows of the run."""
    bytes: int
    """Their bytes (each task's files counted)."""
    freed: int
    """Bytes of the files no other run has: what the store gives back."""


def deletion(ledger: Ledger, run_id: str) -> Deletion:
    """What deleting ``run_id`` removes (before it is done, for the question asked)."""
    with ledger.snapshot():
        own = ledger.artifacts(run_id)
        only_here = ledger.digests_only_in(run_id)
    store = ArtifactStore.beside(ledger.path)
    freed = sum(store.path(sha).stat().st_size for sha in only_here if store.has(sha))
    return Deletion(run_id, len(own), sum(a.size for a in own), freed)
