"""The sending end of a pulled transfer as a Chunk, for tests that play the sender."""

from __future__ import annotations

from pathlib import Path

from simproto.protocol import Chunk, ChunkRequest
from simproto.transfer import chunk_payload


def serve_chunk(path: Path | None, size: int, request: ChunkRequest,
                refusal: str = "not held here") -> Chunk:
    """:func:`simproto.transfer.chunk_payload` decoded, as the receiver gets it."""
    return Chunk.decode(bytes(chunk_payload(path, size, request, refusal)[0]))
