"""The agent's spool: the files of its attempts until simctl has them, and its inputs cache.

Layout under the spool folder (``--spool``)::

    attempts/<task_id>-<attempt>/   the artifact folder of one attempt (the task's Context)
    attempts/<task_id>-<attempt>.checkpoints/
                                    its latest checkpoint, while it runs (simctl pulls it)
    inputs/<sha256>                 an input file, named by its content (verified on arrival)
    inputs/<sha256>.part            an input file being received (resumed after a restart)

Everything is bounded by ``--spool-max-bytes``: the artifacts of results simctl has not yet
acknowledged, the cached inputs and the inputs being received. Cached inputs no task uses are
dropped, least recently used first, when room is needed; artifacts never are (they are the
only copy until simctl stores them). A running attempt's checkpoint folder is not counted: it
holds one file per slot, replaced as the task goes. An attempt's folders are removed once
it is done with (failed, cancelled, its result stored), in batches about every second.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from simproto.protocol import FileRef
from simproto.sizes import format_size

_SHA256_NAME_RE = re.compile(r"^[0-9a-f]{64}$")

PART_SUFFIX = ".part"
"""Suffix of an input file still being received."""

CHECKPOINTS_SUFFIX = ".checkpoints"
"""Suffix of an attempt's checkpoint folder, beside its artifact folder."""

Key = tuple[str, int]
"""(task id, attempt)."""


@dataclass(frozen=True)
class HeldFile:
    """An artifact of an unacknowledged result, where it can be served from."""

    path: Path
    size: int


class Spool:
    """The spool folder and its accounting (see the module docstring)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.attempts = root / "attempts"
        self._attempts_path = str(self.attempts)
        self.inputs = root / "inputs"
        self._held: dict[Key, tuple[FileRef, ...]] = {}
        self._by_sha: dict[str, list[HeldFile]] = {}
        self.held_bytes = 0
        """Bytes of the artifacts of unacknowledged results."""
        self._cached: OrderedDict[str, int] = OrderedDict()
        """File name in inputs/ -> size, least recently used first (parts included)."""
        self._receiving: dict[str, int] = {}
        """sha256 -> size of every input being received (its room is taken at the start)."""
        self._discarded: set[str] = set()
        """Folder names (without the checkpoints suffix) of attempts to remove at the next
        :meth:`sweep`."""

    # ------------------------------------------------------------------ start-up

    def open(self) -> int:
        """Create the folders; remove the attempt folders an earlier agent process left (their
        results went with its session) and take stock of the inputs cache. Returns how many
        attempt folders were removed; OSError if the folder cannot be used."""
        self.attempts.mkdir(parents=True, exist_ok=True)
        self.inputs.mkdir(parents=True, exist_ok=True)
        stale = list(self.attempts.iterdir())
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        entries = []
        for path in self.inputs.iterdir():
            name = path.name.removesuffix(PART_SUFFIX)
            if not _SHA256_NAME_RE.match(name) or not path.is_file() or path.is_symlink():
                continue  # not the agent's: left alone, not counted
            stat = path.stat()
            entries.append((stat.st_mtime, path.name, stat.st_size))
        for _, name, size in sorted(entries):
            self._cached[name] = size
        return len(stale)

    # ------------------------------------------------------------------ accounting

    @property
    def cached_bytes(self) -> int:
        """Bytes of the inputs cache (complete files and resumable parts)."""
        return sum(self._cached.values())

    @property
    def used_bytes(self) -> int:
        return self.held_bytes + self.cached_bytes + sum(self._receiving.values())

    @property
    def held_results(self) -> int:
        return len(self._held)

    def fits(self, needed: int) -> bool:
        """Whether ``needed`` more bytes fit as it is (nothing dropped)."""
        return self.used_bytes + needed <= self.max_bytes

    def make_room(self, needed: int, in_use: Collection[str]) -> bool:
        """Drop cached inputs (least recently used first, none in ``in_use``, a set of
        sha256) until ``needed`` more bytes fit; whether they do."""
        for name in list(self._cached):
            if self.used_bytes + needed <= self.max_bytes:
                break
            if name.removesuffix(PART_SUFFIX) in in_use:
                continue
            self._drop_cached(name)
        return self.used_bytes + needed <= self.max_bytes

    def describe_use(self) -> str:
        """``/spool holds 19.9 GiB of its 20.0 GiB (the artifacts of 12 results simctl has not
        fetched yet: 19.5 GiB; inputs: 0.4 GiB)``."""
        return (f"{self.root} holds {format_size(self.used_bytes)} of its "
                f"{format_size(self.max_bytes)} (the artifacts of {len(self._held)} results "
                f"simctl has not fetched yet: {format_size(self.held_bytes)}; inputs: "
                f"{format_size(self.cached_bytes + sum(self._receiving.values()))})")

    # -------------------------------------------------------------------- attempts

    def attempt_folder(self, key: Key) -> str:
        """The artifact folder of an attempt, as text (created by the task when it writes a
        file)."""
        return f"{self._attempts_path}/{_folder_name(key)}"  # os.path.join took longer

    def checkpoint_folder(self, key: Key) -> str:
        """The folder an attempt saves its checkpoints in, as text (beside its artifact
        folder: a checkpoint is not an artifact of the task)."""
        return self.attempt_folder(key) + CHECKPOINTS_SUFFIX

    def attempt_dir(self, key: Key) -> Path:
        """:meth:`attempt_folder` as a Path."""
        return Path(self.attempt_folder(key))

    def remove_attempt(self, key: Key) -> None:
        """Remove an attempt's files and checkpoints now (files it reported that cannot be
        kept: their room is wanted at once)."""
        for path in (self.attempt_folder(key), self.checkpoint_folder(key)):
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)

    def discard_attempt(self, key: Key) -> None:
        """Have an attempt's files and checkpoints removed (it failed, was cancelled, or its
        result is stored) by the next :meth:`sweep`. Most attempts write none: looking for
        them at once took two system calls a task, at hundreds of tasks a second."""
        self._discarded.add(_folder_name(key))

    def sweep(self, keep: Collection[Key] = ()) -> None:
        """Remove the folders of the attempts discarded since the last sweep, with one
        listing of the attempts folder for them all. ``keep``: attempts running again (a
        re-delivered assignment of a discarded attempt), whose folders stay."""
        if not self._discarded:
            return
        discarded = self._discarded - {_folder_name(key) for key in keep}
        self._discarded = set()
        with contextlib.suppress(OSError), os.scandir(self._attempts_path) as entries:
            for entry in entries:
                if entry.name.removesuffix(CHECKPOINTS_SUFFIX) not in discarded:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def hold(self, key: Key, artifacts: tuple[FileRef, ...]) -> None:
        """Keep an attempt's artifacts, to be served, until :meth:`release`."""
        folder = self.attempt_dir(key)
        self._held[key] = artifacts
        for ref in artifacts:
            self._by_sha.setdefault(ref.sha256, []).append(HeldFile(folder / ref.name, ref.size))
            self.held_bytes += ref.size

    def release(self, key: Key) -> None:
        """simctl has the attempt's result (and so its artifacts): delete them."""
        if key not in self._held:
            return  # it had no files (those of a failed attempt went at once)
        folder = self.attempt_dir(key)
        for ref in self._held.pop(key, ()):
            self.held_bytes -= ref.size
            files = [f for f in self._by_sha.get(ref.sha256, []) if f.path.parent != folder]
            if files:
                self._by_sha[ref.sha256] = files
            else:
                self._by_sha.pop(ref.sha256, None)
        self.discard_attempt(key)

    def artifact(self, sha256: str) -> HeldFile | None:
        """A held artifact with this content, or None."""
        files = self._by_sha.get(sha256)
        return files[0] if files else None

    # ---------------------------------------------------------------------- inputs

    def cached_input(self, ref: FileRef) -> Path | None:
        """The cached file of an input (it is used now: most recently used), or None."""
        size = self._cached.get(ref.sha256)
        if size is None:
            return None
        path = self.inputs / ref.sha256
        if size != ref.size or not path.is_file():
            self._drop_cached(ref.sha256)  # removed by hand, or not what it claims
            return None
        self._cached.move_to_end(ref.sha256)
        with contextlib.suppress(OSError):
            os.utime(path)  # the order survives a restart (start-up sorts by mtime)
        return path

    def start_receiving(self, ref: FileRef) -> Path:
        """Take room for an input about to be received; the path of its part file."""
        self._cached.pop(ref.sha256 + PART_SUFFIX, None)  # now counted in full
        self._receiving[ref.sha256] = ref.size
        return self.inputs / (ref.sha256 + PART_SUFFIX)

    def received(self, sha256: str) -> Path:
        """The part file is complete and verified: move it into the cache; its path."""
        size = self._receiving.pop(sha256)
        path = self.inputs / sha256
        os.replace(self.inputs / (sha256 + PART_SUFFIX), path)
        self._cached[sha256] = size
        return path

    def stop_receiving(self, sha256: str) -> None:
        """No task waits for this input any more: what is on disk of it stays, as a part to
        resume (or to drop when room is needed)."""
        self._receiving.pop(sha256, None)
        name = sha256 + PART_SUFFIX
        with contextlib.suppress(OSError):
            self._cached[name] = (self.inputs / name).stat().st_size

    def _drop_cached(self, name: str) -> None:
        self._cached.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            (self.inputs / name).unlink()


def _folder_name(key: Key) -> str:
    """An attempt's artifact folder name in attempts/ (its checkpoint folder adds
    ``CHECKPOINTS_SUFFIX``)."""
    task_id, attempt = key
    return f"{task_id}-{attempt}"
