"""Assignments waiting for their input files, and the downloads that bring those files.

An assignment whose inputs are not all in the spool's cache waits here (it holds a slot)
while the agent pulls the missing files from simctl: one :class:`~simproto.transfer.Download`
per file, shared by every assignment that needs it. No MQTT here: the agent sends what
:meth:`Fetcher.requests` returns and hands over every chunk that arrives.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from simproto.protocol import Chunk, ChunkRequest, FileRef
from simproto.sizes import format_size
from simproto.transfer import Download, TransferError
from worker_agent.pool import Job
from worker_agent.spool import Key, Spool

log = logging.getLogger(__name__)


@dataclass
class Fetch:
    """One assignment waiting for inputs."""

    job: Job
    refs: tuple[FileRef, ...]
    paths: dict[str, Path] = field(default_factory=dict)
    """Input name -> its file, for those that are here."""
    missing: set[str] = field(default_factory=set)
    """sha256 of the inputs still being received."""
    started_at: float = field(default_factory=time.time)
    """When it took its slot (the start of its attempt, in a result)."""


@dataclass
class Outcomes:
    """What a step of the fetcher finished: assignments ready to run, and failed ones with
    the reason (the attempt fails, retryably: another try may get the file)."""

    ready: list[Fetch] = field(default_factory=list)
    failed: list[tuple[Fetch, str]] = field(default_factory=list)


class Fetcher:
    """The assignments waiting for inputs and their downloads (see the module docstring)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.fetches: dict[Key, Fetch] = {}
        self.downloads: dict[str, Download] = {}
        self.fetched_bytes = 0
        """Bytes taken from input chunks (re-sent ones included)."""

    def jobs(self) -> list[Job]:
        return [fetch.job for fetch in self.fetches.values()]

    def find(self, task_id: str) -> Fetch | None:
        return next((f for f in self.fetches.values() if f.job.assignment.task_id == task_id),
                    None)

    def in_use(self) -> set[str]:
        """sha256 of every input an assignment here needs (kept in the cache)."""
        return {ref.sha256 for fetch in self.fetches.values() for ref in fetch.refs}

    def receiving_bytes(self, refs: list[FileRef]) -> int:
        """Bytes of ``refs`` not yet being received (the room they still need)."""
        new = {ref.sha256: ref.size for ref in refs if ref.sha256 not in self.downloads}
        return sum(new.values())

    def add(self, job: Job, refs: tuple[FileRef, ...], paths: dict[str, Path],
            missing: list[FileRef]) -> Outcomes:
        """Wait for ``missing`` (the inputs not in the cache) before ``job`` runs."""
        fetch = Fetch(job, refs, dict(paths), {ref.sha256 for ref in missing})
        self.fetches[job.key] = fetch
        outcomes = Outcomes()
        for ref in missing:
            if ref.sha256 in self.downloads:
                continue
            download = Download(ref.sha256, ref.size, self.spool.start_receiving(ref))
            self.downloads[ref.sha256] = download
            try:
                download.open()
            except OSError as e:
                self._fail(ref.sha256, f"cannot write it to the spool: {e}", outcomes)
                return outcomes  # this assignment failed: its other inputs are not wanted
            log.info("fetching input %s of %s (%s, %s)%s", ref.sha256[:12],
                     job.assignment.task_id, ref.name, format_size(ref.size),
                     f", resumed from {format_size(download.stored_bytes)}"
                     if download.stored_bytes else "")
            if download.complete:  # a part file an earlier process finished
                self._arrived(ref.sha256, outcomes)
        return outcomes

    def requests(self, now: float) -> list[ChunkRequest]:
        """Every request to send now (new ones within each window, timed-out ones again)."""
        return [request for download in self.downloads.values()
                for request in download.requests(now)]

    def forget_requests(self) -> None:
        """The connection went down: ask again at once for everything outstanding."""
        for download in self.downloads.values():
            download.forget_requests()

    def take(self, chunk: Chunk) -> Outcomes:
        """A chunk from simctl; a chunk of no current download (late, duplicate) is ignored."""
        outcomes = Outcomes()
        download = self.downloads.get(chunk.sha256)
        if download is None:
            log.debug("chunk of %s, which is not being fetched: ignored", chunk.sha256[:12])
            return outcomes
        before = download.received_bytes
        try:
            complete = download.take(chunk)
        except (TransferError, OSError) as e:
            self._fail(chunk.sha256, str(e), outcomes)
            return outcomes
        finally:
            self.fetched_bytes += download.received_bytes - before
        if complete:
            self._arrived(chunk.sha256, outcomes)
        return outcomes

    def remove(self, key: Key) -> Fetch | None:
        """Stop waiting for an assignment (cancelled, handed back); its downloads stop when
        no other assignment needs them (their part files stay, to be resumed)."""
        fetch = self.fetches.pop(key, None)
        if fetch is not None:
            for sha in fetch.missing:
                download = self.downloads.get(sha)
                if download is not None and not any(sha in other.missing
                                                    for other in self.fetches.values()):
                    del self.downloads[sha]
                    download.close()
                    self.spool.stop_receiving(sha)
        return fetch

    def remove_all(self) -> list[Fetch]:
        """Stop waiting for every assignment (the agent is stopping); the part files stay
        for the next process."""
        fetches = list(self.fetches.values())
        for fetch in fetches:
            self.remove(fetch.job.key)
        return fetches

    def _arrived(self, sha: str, outcomes: Outcomes) -> None:
        del self.downloads[sha]
        path = self.spool.received(sha)
        log.info("input %s received", sha[:12])
        for fetch in list(self.fetches.values()):
            if sha not in fetch.missing:
                continue
            fetch.missing.discard(sha)
            fetch.paths.update({ref.name: path for ref in fetch.refs if ref.sha256 == sha})
            if not fetch.missing:
                del self.fetches[fetch.job.key]
                outcomes.ready.append(fetch)

    def _fail(self, sha: str, error: str, outcomes: Outcomes) -> None:
        """The input cannot be had: every assignment waiting for it fails."""
        self.downloads.pop(sha).discard()
        self.spool.stop_receiving(sha)
        log.warning("input %s cannot be fetched: %s", sha[:12], error)
        for fetch in [f for f in self.fetches.values() if sha in f.missing]:
            fetch.missing.discard(sha)
            self.remove(fetch.job.key)
            outcomes.failed.append((fetch, f"input {_names(fetch, sha)}: {error}"))


def _names(fetch: Fetch, sha: str) -> str:
    return ", ".join(ref.name for ref in fetch.refs if ref.sha256 == sha)
