"""The dispatcher's file transfers: pulling the artifacts of done results from their
workers into the store, and serving the workers the input files of their tasks.

A done result that lists artifacts not yet in the store is *staged* (kept in the ledger, its
task still assigned, its worker's lease still renewed by the heartbeats that list it) while
:class:`Transfers` pulls each missing file from that worker by chunks
(``simproto.transfer``: a credit window of a few chunks, re-asked after a timeout, resumed
from its partial file after a restart). Once every file of a staged result is in the store,
the scheduler stores the result and the task is done; until then the worker keeps the files
(it forgets them when the result is acknowledged). A running attempt's latest checkpoint,
listed in its worker's heartbeats, is pulled the same way (:meth:`Transfers.pull_checkpoint`),
a newer one replacing an older one's pull. The scheduler owns one of these and
calls it within its pass; nothing here publishes: what to send is collected for the
dispatcher (:attr:`Transfers.outbox`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from simctl.store import ArtifactStore
from simproto.protocol import Channel, CheckpointRef, Chunk, ChunkRequest, FileRef, Result
from simproto.sizes import describe_files, format_size
from simproto.transfer import Download, TransferError, chunk_payload

log = logging.getLogger("simctl.dispatcher")


@dataclass
class Staged:
    """A done result waiting for its artifacts: the digests still missing from the store."""

    result: Result
    missing: set[str]
    staged_at: float
    """Monotonic time it was staged (for the log line once its files are stored)."""
    pulled_bytes: int
    """Bytes of the files it was missing when staged."""

    @property
    def worker_id(self) -> str:
        return self.result.worker_id


@dataclass
class Failure:
    """A staged result whose artifacts cannot be had: its attempt ends with ``error``."""

    result: Result
    error: str


@dataclass(frozen=True)
class CheckpointPull:
    """The pull of a running attempt's checkpoint."""

    task_id: str
    attempt: int
    checkpoint: CheckpointRef


@dataclass
class Received:
    """What one chunk completed: staged results whose files are all stored now, those whose
    file cannot be had, and checkpoints now in the store."""

    stored: list[Staged] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    checkpoints: list[CheckpointPull] = field(default_factory=list)


@dataclass
class Transfers:
    """Every pull in progress and every input served (see the module docstring)."""

    store: ArtifactStore
    staged: dict[str, Staged] = field(default_factory=dict)
    """Task id -> its staged result."""
    downloads: dict[str, Download] = field(default_factory=dict)
    """Digest -> the pull of that file (one per file: its partial file is named by it)."""
    source: dict[str, str] = field(default_factory=dict)
    """Digest -> the worker it is pulled from (any worker whose staged result lists it: the
    bytes are the same by their hash)."""
    checkpoint_pulls: dict[str, CheckpointPull] = field(default_factory=dict)
    """Digest -> the running attempt whose checkpoint that file is (one per task)."""
    outbox: list[tuple[str, Channel, bytes | bytearray]] = field(default_factory=list)
    """What to publish after this pass: (worker id, channel, encoded message)."""

    # ----------------------------------------------------------------- staging

    def stage(self, result: Result, now: float) -> bool:
        """Start pulling a done result's missing artifacts; False when none is missing (the
        result can be stored at once). A result already staged is left as it is."""
        if result.task_id in self.staged:
            return True
        missing = {ref.sha256: ref for ref in result.artifact_refs
                   if not self.store.has(ref.sha256)}
        if not missing:
            return False
        size = sum(ref.size for ref in missing.values())
        self.staged[result.task_id] = Staged(result, set(missing), now, size)
        log.info("task %s: pulling %s from %s (%s)", result.task_id,
                 describe_files(missing.values()), result.worker_id, format_size(size))
        for sha256, ref in missing.items():
            if sha256 not in self.downloads:  # else pulled already, for another result
                self._open(ref, result.worker_id, now)
        return True

    def pull_checkpoint(self, task_id: str, attempt: int, worker_id: str,
                        checkpoint: CheckpointRef, now: float) -> bool:
        """Start pulling a running attempt's checkpoint (unless it is being pulled); True
        when the store has it already. The pull of an older checkpoint of the task stops:
        its worker has deleted that file."""
        sha256 = checkpoint.file.sha256
        if self.store.has(sha256):
            return True
        if sha256 in self.checkpoint_pulls:
            return False
        self._drop_checkpoint_pulls({task_id})
        self.checkpoint_pulls[sha256] = CheckpointPull(task_id, attempt, checkpoint)
        if sha256 not in self.downloads:
            self._open(checkpoint.file, worker_id, now)
        return False

    def is_staged(self, task_id: str) -> bool:
        return task_id in self.staged

    def pending_bytes(self, run_id: str) -> int:
        """Bytes of the staged results of a run (not stored yet, but promised)."""
        return sum(ref.size for s in self.staged.values() if s.result.run_id == run_id
                   for ref in s.result.artifact_refs)

    def drop(self, task_ids: Iterable[str]) -> None:
        """Stop pulling for these tasks (their attempts ended otherwise); partial files stay
        for a later attempt that makes the same bytes."""
        task_ids = set(task_ids)
        for task_id in task_ids:
            staged = self.staged.pop(task_id, None)
            if staged is not None:
                self._release(staged.missing)
        self._drop_checkpoint_pulls(task_ids)

    def clear(self) -> None:
        """Forget everything (the scheduler rebuilds its state from the ledger)."""
        self.drop(list(self.staged) + [p.task_id for p in self.checkpoint_pulls.values()])

    # ---------------------------------------------------------------- traffic

    def on_chunk(self, worker_id: str, chunk: Chunk, now: float) -> Received:
        """Take a chunk of one of ``worker_id``'s files; what it completed (see
        :class:`Received`). A chunk nobody asked for is ignored."""
        sha256 = chunk.sha256
        received = Received()
        download = self.downloads.get(sha256)
        if download is None or self.source.get(sha256) != worker_id:
            return received
        try:
            complete = download.take(chunk)
        except TransferError as e:
            received.failed = self._fail(sha256, f"{e} (from {worker_id})", now)
            return received
        except OSError as e:
            raise self.store.write_error(e, f"cannot write artifact {sha256}") from e
        if not complete:
            self._ask(sha256, now)
            return received
        self.store.commit(download)
        del self.downloads[sha256], self.source[sha256]
        if (pull := self.checkpoint_pulls.pop(sha256, None)) is not None:
            received.checkpoints.append(pull)
        for task_id, staged in list(self.staged.items()):
            staged.missing.discard(sha256)
            if not staged.missing:
                received.stored.append(self.staged.pop(task_id))
                took = max(now - staged.staged_at, 1e-9)
                log.info("task %s: its files are stored (%s pulled in %.2f s, %.0f MB/s)",
                         task_id, format_size(staged.pulled_bytes), took,
                         staged.pulled_bytes / took / 1e6)
        return received

    def serve_input(self, worker_id: str, request: ChunkRequest,
                    inputs: Iterable[FileRef]) -> None:
        """Answer a worker's request for a chunk of one of ``inputs`` (the input files of the
        tasks it holds now); anything else is refused."""
        ref = next((r for r in inputs if r.sha256 == request.sha256), None)
        path = self.store.path(ref.sha256) if ref is not None else None
        if path is not None and not path.is_file():
            path = None
        refusal = (f"no task of {worker_id} has input {request.sha256[:12]}" if ref is None
                   else f"input {request.sha256[:12]} is missing from the store")
        payload, _ = chunk_payload(path, ref.size if ref is not None else 0, request, refusal)
        self.outbox.append((worker_id, Channel.DOWNLOAD, payload))

    def due(self, now: float) -> None:
        """Ask again for chunks whose requests went unanswered too long."""
        for sha256 in self.downloads:
            self._ask(sha256, now)

    def connection_lost(self) -> None:
        """Requests in flight may be lost with the connection: ask again once it is back."""
        for download in self.downloads.values():
            download.forget_requests()

    def take_outbox(self) -> list[tuple[str, Channel, bytes | bytearray]]:
        out, self.outbox = self.outbox, []
        return out

    # ----------------------------------------------------------------- helpers

    def _open(self, ref: FileRef, worker_id: str, now: float) -> None:
        """Start (or resume, from its partial file) the pull of ``ref`` from ``worker_id``."""
        download = self.downloads[ref.sha256] = self.store.download(ref)
        self.source[ref.sha256] = worker_id
        try:
            download.open()
        except OSError as e:
            raise self.store.write_error(e, f"cannot open the transfer of {ref.sha256}") from e
        if download.stored_bytes:
            log.info("resuming the pull of %s (%s) from %s at byte %d", ref.name,
                     ref.sha256[:12], worker_id, download.stored_bytes)
        self._ask(ref.sha256, now)

    def _ask(self, sha256: str, now: float) -> None:
        worker_id = self.source[sha256]
        for request in self.downloads[sha256].requests(now):
            self.outbox.append((worker_id, Channel.PULL, request.encode()))

    def _fail(self, sha256: str, error: str, now: float) -> list[Failure]:
        """A file that cannot be had from its worker: every staged result of that worker
        listing it fails (others may still have it from their own workers)."""
        worker_id = self.source[sha256]
        if (pull := self.checkpoint_pulls.pop(sha256, None)) is not None:
            # Most often superseded: the worker saved a newer one and deleted this file.
            log.debug("task %s: checkpoint of step %d not pulled: %s", pull.task_id,
                      pull.checkpoint.step, error)
        failed = [Failure(s.result, error) for s in self.staged.values()
                  if s.worker_id == worker_id and sha256 in s.missing]
        self.downloads[sha256].discard()  # its bytes failed: nothing of them is kept
        del self.downloads[sha256], self.source[sha256]
        self.drop(f.result.task_id for f in failed)
        other = next((s for s in self.staged.values() if sha256 in s.missing), None)
        if other is not None:  # another worker's result lists the same file: from there
            self._open(next(r for r in other.result.artifact_refs if r.sha256 == sha256),
                       other.worker_id, now)
        return failed

    def _drop_checkpoint_pulls(self, task_ids: set[str]) -> None:
        """Stop pulling the checkpoints of these tasks."""
        if not self.checkpoint_pulls:
            return  # most passes: no task saves checkpoints, or none is being pulled
        dropped = {sha256 for sha256, pull in self.checkpoint_pulls.items()
                   if pull.task_id in task_ids}
        for sha256 in dropped:
            del self.checkpoint_pulls[sha256]
        self._release(dropped)

    def _release(self, digests: set[str]) -> None:
        """Close the pulls no staged result or checkpoint needs any more; a pull whose
        worker no longer has a staged result listing the file moves to another worker that
        has one."""
        for sha256 in digests:
            if sha256 in self.checkpoint_pulls:
                continue
            worker_id = self.source.get(sha256)
            holders = {s.worker_id for s in self.staged.values() if sha256 in s.missing}
            if worker_id is None or worker_id in holders:
                continue
            if holders:
                self.source[sha256] = min(holders)
                self.downloads[sha256].forget_requests()
            else:
                self.downloads.pop(sha256).close()
                del self.source[sha256]
