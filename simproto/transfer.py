"""Pulled file transfers: both ends of moving one file in chunks over the broker.

The receiver pulls: it asks for chunks (:class:`~simproto.protocol.ChunkRequest`) and keeps
at most :data:`WINDOW` of them outstanding per file (its credit window), so the broker never
holds more than a few chunks of a transfer, whoever is away. The sender only answers
(:func:`chunk_payload`). simctl pulls a worker's artifacts; a worker pulls its inputs from
simctl; both sides use :class:`Download` for the receiving and :func:`chunk_payload` for the
sending, so the guarantees are the same both ways:

- every byte is written at its offset into a partial file, and hashed in order;
- an unanswered request is asked again after :data:`REQUEST_TIMEOUT_S` (requests and chunks
  travel at QoS 0: a lost one costs a timeout, never a queue in the broker);
- a partial file left by an earlier process is resumed from its last whole chunk;
- the file is complete only when its size and SHA-256 match; a mismatch starts it again
  from the first byte, and is never handed on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from simproto.protocol import MAX_CHUNK_BYTES, Chunk, ChunkRequest

WINDOW = 4
"""Chunk requests outstanding per file: enough to keep the pipe full on loopback and a LAN,
few enough that a transfer holds at most 1 MiB in the broker."""

REQUEST_TIMEOUT_S = 3.0
"""A request unanswered this long is asked again (the chunk or the request was lost: a
reconnect, a broker restart, the sender busy)."""

MAX_RESTARTS = 3
"""A file whose bytes fail their SHA-256 this many times is given up (the sender's copy is
corrupt, or it lies)."""

RESUME_BLOCK_BYTES = 1 << 20
"""A partial file is re-hashed in blocks of this size when a transfer resumes."""


class TransferError(Exception):
    """The file cannot be received: the sender refused it, or its bytes kept failing their
    hash. The message says which and why."""


@dataclass
class Download:
    """Receives one file (``sha256``, ``size``) into ``part`` by pulled chunks.

    Call :meth:`requests` for what to ask for now, :meth:`take` with every chunk that
    arrives for this file; :attr:`complete` turns true when the whole file is in ``part``
    with the right hash (flushed to disk: the caller moves it where it belongs). Out-of-order
    chunks (after a re-request) are kept until the bytes before them arrive, at most a window.
    """

    sha256: str
    size: int
    part: Path
    window: int = WINDOW
    chunk_bytes: int = MAX_CHUNK_BYTES
    restarts: int = 0
    complete: bool = False
    received_bytes: int = 0
    """Bytes taken from chunks (re-sent ones included): what the transfer moved."""
    _fd: int | None = None
    _hashed_to: int = 0
    _next_offset: int = 0
    _hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    _outstanding: dict[int, float] = field(default_factory=dict)
    """Offset of every request asked and not yet answered -> when it was asked."""
    _early: dict[int, bytes] = field(default_factory=dict)
    """Chunks that arrived before the bytes in front of them."""

    # ----------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Open the partial file, resuming what an earlier process left of it: its whole
        chunks are hashed again (a torn last write is cut off and asked for again)."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        have = os.fstat(self._fd).st_size
        keep = min(have - have % self.chunk_bytes, self.size)
        os.ftruncate(self._fd, keep)
        self._hasher = hashlib.sha256()
        offset = 0
        while offset < keep:
            block = os.pread(self._fd, min(RESUME_BLOCK_BYTES, keep - offset), offset)
            if not block:
                break
            self._hasher.update(block)
            offset += len(block)
        self._hashed_to = self._next_offset = offset
        self._outstanding.clear()
        self._early.clear()
        self._finish_if_whole()

    @property
    def stored_bytes(self) -> int:
        """Bytes in order on disk so far."""
        return self._hashed_to

    def close(self) -> None:
        """Close the partial file (kept on disk for a later resume)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and remove the partial file."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()

    # ------------------------------------------------------------------- traffic

    def requests(self, now: float) -> list[ChunkRequest]:
        """What to ask for now: timed-out requests again, then new ones up to the window."""
        if self.complete:
            return []
        asks: list[ChunkRequest] = []
        for offset, asked_at in list(self._outstanding.items()):
            if now - asked_at >= REQUEST_TIMEOUT_S:
                self._outstanding[offset] = now
                asks.append(self._request(offset))
        while len(self._outstanding) < self.window and self._next_offset < self.size:
            offset = self._next_offset
            self._next_offset = min(self.size, offset + self.chunk_bytes)
            self._outstanding[offset] = now
            asks.append(self._request(offset))
        return asks

    def forget_requests(self) -> None:
        """Treat every outstanding request as lost (the connection went down): the next
        :meth:`requests` asks for them at once."""
        for offset in self._outstanding:
            self._outstanding[offset] = float("-inf")

    def take(self, chunk: Chunk) -> bool:
        """Take a chunk of this file; True when it completed the file. A chunk that was not
        asked for (a late duplicate) is ignored. Raises TransferError when the sender
        refuses the file or its bytes failed their hash too often."""
        if chunk.error is not None:
            raise TransferError(f"the sender refused file {self.sha256[:12]}: {chunk.error}")
        if self.complete or chunk.offset not in self._outstanding:
            return False
        expected = min(self.chunk_bytes, self.size - chunk.offset)
        if chunk.size != self.size or len(chunk.data) != expected:
            raise TransferError(
                f"file {self.sha256[:12]}: a chunk at {chunk.offset} says the file has "
                f"{chunk.size} bytes and carries {len(chunk.data)}; expected {self.size} and "
                f"{expected}")
        del self._outstanding[chunk.offset]
        self.received_bytes += len(chunk.data)
        assert self._fd is not None, "open() first"
        os.pwrite(self._fd, chunk.data, chunk.offset)
        if chunk.offset == self._hashed_to:
            self._advance(chunk.data)
            while self._hashed_to in self._early:
                self._advance(self._early.pop(self._hashed_to))
        elif chunk.offset > self._hashed_to:
            self._early[chunk.offset] = bytes(chunk.data)  # a view: its payload goes away
        return self._finish_if_whole()

    # ------------------------------------------------------------------ helpers

    def _request(self, offset: int) -> ChunkRequest:
        return ChunkRequest(self.sha256, offset, min(self.chunk_bytes, self.size - offset))

    def _advance(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._hashed_to += len(data)

    def _finish_if_whole(self) -> bool:
        if self._hashed_to < self.size:
            return False
        assert self._fd is not None
        if self._hasher.hexdigest() == self.sha256:
            os.fsync(self._fd)
            self.close()
            self.complete = True
            return True
        # Never handed on: start again from the first byte, a few times at most.
        self.restarts += 1
        os.ftruncate(self._fd, 0)
        self._hasher = hashlib.sha256()
        self._hashed_to = self._next_offset = 0
        self._outstanding.clear()
        self._early.clear()
        if self.restarts >= MAX_RESTARTS:
            raise TransferError(f"file {self.sha256[:12]} ({self.size} bytes) failed its "
                                f"SHA-256 check {self.restarts} times; given up")
        return False


def chunk_payload(path: Path | None, size: int, request: ChunkRequest,
                  refusal: str = "not held here") -> tuple[bytes | bytearray, int]:
    """The encoded answer to ``request`` from the file at ``path`` (``size`` bytes, as its
    reference says), and how many of the file's bytes it carries; a chunk with ``refusal``
    as its error when ``path`` is None. The bytes are read straight into the payload, after
    the header: a chunk is copied once fewer than by building a Chunk and encoding it."""
    sha256, offset = request.sha256, request.offset
    if path is None:
        return Chunk.header(sha256, offset, 0, refusal), 0
    if offset > size:
        return Chunk.header(sha256, offset, 0, f"offset {offset} is past the end ({size} "
                            "bytes)"), 0
    length = min(request.length, size - offset)
    header = Chunk.header(sha256, offset, size)
    payload = bytearray(len(header) + length)
    payload[: len(header)] = header
    try:
        with path.open("rb") as f:
            got = os.preadv(f.fileno(), [memoryview(payload)[len(header) :]], offset)
    except OSError as e:
        return Chunk.header(sha256, offset, 0, f"cannot read: {e.strerror}"), 0
    if got < length:
        return Chunk.header(sha256, offset, 0, f"the file is shorter than its stated {size} "
                            "bytes"), 0
    return payload, length


def hash_file(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in blocks (never whole into memory)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(RESUME_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
