"""The agent's spool (worker_agent.spool): accounting and removal, on a real folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from simproto.protocol import FileRef
from worker_agent.spool import Spool


def _input(spool: Spool, data: bytes) -> FileRef:
    """Put a file into the inputs cache as a finished transfer does."""
    ref = FileRef("init", len(data), hashlib.sha256(data).hexdigest())
    spool.start_receiving(ref).write_bytes(data)
    spool.received(ref.sha256)
    return ref


def test_start_up_clears_attempts_and_keeps_the_inputs_cache_in_lru_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    spool.open()
    old, new = _input(spool, b"a" * 300), _input(spool, b"b" * 300)
    os.utime(spool.inputs / old.sha256, (1, 1))  # used long ago
    (spool.attempts / "t-1").mkdir()
    (spool.attempts / "t-1" / "data.bin").write_bytes(b"x")
    (spool.inputs / "notes.txt").write_text("not the agent's")

    again = Spool(tmp_path, 1000)
    assert again.open() == 1
    assert list(again.attempts.iterdir()) == []
    assert again.used_bytes == 600  # notes.txt is not counted
    # 500 more bytes: the least recently used input goes, the other stays.
    assert again.make_room(500, in_use=set())
    assert again.cached_input(old) is None and again.cached_input(new) is not None
    assert (tmp_path / "inputs/notes.txt").exists()


def test_held_artifacts_are_never_dropped_for_room(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    spool.open()
    used = _input(spool, b"c" * 400)
    folder = spool.attempt_dir(("t", 1))
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"d" * 500)
    artifact = FileRef("data.bin", 500, hashlib.sha256(b"d" * 500).hexdigest())
    spool.hold(("t", 1), (artifact,))
    assert not spool.make_room(200, in_use={used.sha256})  # the input is in use
    assert spool.cached_input(used) is not None
    held = spool.artifact(artifact.sha256)
    assert held is not None and held.path == folder / "data.bin" and held.size == 500
    spool.release(("t", 1))
    assert spool.artifact(artifact.sha256) is None and folder.exists()  # until the sweep
    spool.sweep()
    assert not folder.exists()
    assert spool.make_room(200, in_use={used.sha256}) and spool.used_bytes == 400


def test_a_sweep_removes_only_discarded_attempts_not_kept_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    spool.open()
    keys = [("a", 1), ("b", 1), ("c", 2), ("d", 1)]
    for key in keys:
        folder = Path(spool.attempt_folder(key))
        folder.mkdir()
        (folder / "x.bin").write_bytes(b"x")
        Path(spool.checkpoint_folder(key)).mkdir()
    stray = tmp_path / "attempts/e-1"
    stray.symlink_to(tmp_path / "inputs")  # a link: unlinked, what it names untouched
    for key in [("a", 1), ("b", 1), ("e", 1), ("never-ran", 1)]:
        spool.discard_attempt(key)
    spool.sweep(keep=[("b", 1)])  # b runs again (a re-delivered assignment)
    left = sorted(p.name for p in (tmp_path / "attempts").iterdir())
    assert left == ["b-1", "b-1.checkpoints", "c-2", "c-2.checkpoints", "d-1",
                    "d-1.checkpoints"]
    assert (tmp_path / "inputs").is_dir()
    spool.sweep()  # nothing discarded since: b stays until discarded again
    assert (tmp_path / "attempts/b-1").exists()
    spool.discard_attempt(("b", 1))
    spool.sweep()
    assert not (tmp_path / "attempts/b-1").exists()
    assert not (tmp_path / "attempts/b-1.checkpoints").exists()
