"""Checkpoints in simkind: the file codec (exact round trip, no unpickling, atomic writes,
every malformed file refused naming it) and the Context's part (when one is due, saving
and removing the older one, the stop request, resuming or refusing, the result's metadata)."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import simkind
from simkind import CHECKPOINT_INPUT, CheckpointError, Context, Kind, Output, Preempted
from simkind.checkpoint import META, read_state, write_state
from simkind.kind import ARTIFACT_NAME_RE
from simkind.registry import LoadedKind

COMPAT = {"backend": "cython", "simd_variant": "avx2"}


def test_a_state_of_arrays_and_json_values_round_trips_exactly(tmp_path: Path) -> None:
    arrays = {
        "awkward": np.array([-0.0, 5e-324, 1.7976931348623157e308, np.nan, -np.inf, 0.1]),
        "single": np.linspace(0, 1, 7, dtype=np.float32),
        "counts": np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
        "bytes": np.frombuffer(b"\x00\xffX\n", dtype=np.uint8),
        "flags": np.array([[True, False], [False, True]]),
        "waves": np.array([1 + 2j, -0.5j]),
        "columns": np.asfortranarray(np.arange(12, dtype=np.int8).reshape(3, 4)),
        "scalar": np.array(2.5),
        "none": np.zeros((0, 3)),
    }
    values = {"big": 2**127 + 3, "negative": -(2**100), "ratio": 0.1, "tiny": 1e-310,
              "nested": {"a": [1, {"b": None, "c": [True, False]}], "ü": "naïve ✓"},
              "empty": {}, "nothing": None, "word": ""}
    path = tmp_path / "state.npz"
    write_state(path, 4200, {**arrays, **values}, COMPAT)
    step, state, compat = read_state(path)
    assert (step, compat) == (4200, COMPAT)
    assert set(state) == set(arrays) | set(values)
    for name, array in arrays.items():
        assert state[name].dtype == array.dtype and state[name].shape == array.shape, name
        assert state[name].tobytes() == array.tobytes(), name  # bit for bit, NaN included
    assert {name: state[name] for name in values} == values
    assert type(state["big"]) is int and type(state["ratio"]) is float


def test_a_random_generator_goes_on_with_the_same_numbers_after_a_round_trip(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(2026)
    rng.standard_normal(1001)  # somewhere in the stream, a cached half-word included
    rng.integers(0, 10, dtype=np.uint32)
    write_state(tmp_path / "rng.npz", 1, {"rng": rng.bit_generator.state}, {})
    _, state, _ = read_state(tmp_path / "rng.npz")
    assert state["rng"]["state"]["state"] > 2**64  # PCG64's 128-bit integers, exactly
    again = np.random.default_rng()
    again.bit_generator.state = state["rng"]
    assert again.standard_normal(50).tobytes() == rng.standard_normal(50).tobytes()


class OpensAFile:
    """Unpickling one creates the file ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_neither_written_nor_ever_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    hostile = np.array([OpensAFile(marker)], dtype=object)
    with pytest.raises(TypeError, match="evil: an array of Python objects"):
        write_state(tmp_path / "refused.npz", 1, {"evil": hostile}, {})
    assert not (tmp_path / "refused.npz").exists()

    archive = tmp_path / "archive.npz"  # an archive with a pickled member, as np.savez allows
    meta = json.dumps({"format": 1, "step": 1, "compat": {}, "values": {}}).encode()
    np.savez(archive, evil=hostile, **{META: np.frombuffer(meta, dtype=np.uint8)})
    plain = tmp_path / "plain.npz"  # a bare pickle under a checkpoint's name
    plain.write_bytes(pickle.dumps(OpensAFile(marker)))
    for path, reason in ((archive, "Object arrays cannot be loaded"),
                         (plain, r"not an \.npz archive")):
        with pytest.raises(CheckpointError, match=f"{path}: not a checkpoint: .*{reason}"):
            read_state(path)
    assert not marker.exists()


def archive_with(path: Path, meta: Any, **arrays: np.ndarray) -> Path:
    """An .npz of ``arrays`` whose META member holds ``meta`` (bytes as they are, else
    JSON)."""
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    np.savez(path, **arrays, **{META: np.frombuffer(text, dtype=np.uint8)})
    return path


def good(**changes: Any) -> dict[str, Any]:
    """A valid META document with ``changes``."""
    return {"format": 1, "step": 3, "compat": {}, "values": {}, **changes}


def holding(data: bytes) -> Any:
    """Makes a file of ``data``."""
    return lambda p: (p.write_bytes(data), p)[1]


def plain_npz(path: Path) -> Path:
    """An .npz archive without the checkpoint's JSON document."""
    np.savez(path, x=np.zeros(2))
    return path


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: p, r"not a checkpoint: FileNotFoundError"),
    (holding(b""), r"not an \.npz archive"),
    (holding(b"\x93NUMPY garbage"), r"not an \.npz archive"),
    (holding(b"PK\x03\x04 truncated"), r"not a checkpoint: BadZipFile"),
    (plain_npz, r"no _checkpoint entry of JSON text"),
    (lambda p: archive_with(p, b"{not json"), r"not a checkpoint: JSONDecodeError"),
    (lambda p: archive_with(p, b"\xff\xfe"), r"not a checkpoint: UnicodeDecodeError"),
    (lambda p: archive_with(p, [1, 2]), r"entry is not a JSON object"),
    (lambda p: archive_with(p, good(format=2)), r"format 2, this version reads format 1"),
    (lambda p: archive_with(p, good(step=-1)), r"step -1 is not an integer >= 0"),
    (lambda p: archive_with(p, good(step=True)), r"step True is not an integer >= 0"),
    (lambda p: archive_with(p, good(compat={"backend": 1})), r"compat .* is not a mapping"),
    (lambda p: archive_with(p, good(values={"x": 1}), x=np.zeros(1)),
     r"values are not a mapping apart from the arrays"),
])
def test_a_malformed_file_raises_checkpoint_error_naming_it(make: Any, reason: str,
                                                            tmp_path: Path) -> None:
    path = make(tmp_path / "checkpoint-3.npz")
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}/checkpoint-3\.npz: .*{reason}"):
        read_state(path)
    assert issubclass(CheckpointError, ValueError)


def test_a_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    write_state(whole, 9, {"x": np.arange(5000.0)}, {})
    cut = tmp_path / "cut.npz"
    for size in (100, whole.stat().st_size // 2, whole.stat().st_size - 30):
        cut.write_bytes(whole.read_bytes()[:size])
        with pytest.raises(CheckpointError, match=f"{cut}: not a checkpoint"):
            read_state(cut)


def test_writing_is_atomic_and_leaves_no_temporary_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.npz"
    write_state(path, 1, {"x": np.zeros(3)}, {})
    renames: list[tuple[str, str]] = []
    replace = os.replace

    def recorded(source: str, target: str) -> None:
        renames.append((source, target))
        replace(source, target)

    monkeypatch.setattr(os, "replace", recorded)
    write_state(path, 2, {"x": np.ones(3)}, {})
    [(source, target)] = renames
    assert Path(source).parent == tmp_path and target == path  # renamed within the folder
    assert read_state(path)[0] == 2 and os.listdir(tmp_path) == ["checkpoint.npz"]

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_state(path, 3, {"x": np.full(3, 2.0)}, {})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_state(path, 3, {"x": {1, 2}}, {})
    assert read_state(path)[0] == 2 and os.listdir(tmp_path) == ["checkpoint.npz"]


@pytest.mark.parametrize(("state", "error", "message"), [
    ({"bad name": 1}, ValueError, "state name 'bad name'"),
    ({META: 1}, ValueError, "state name '_checkpoint'"),
    ({"when": object()}, TypeError, "Object of type object is not JSON serializable"),
])
def test_a_state_that_is_not_arrays_and_json_is_refused(state: dict[str, Any],
                                                        error: type[Exception], message: str,
                                                        tmp_path: Path) -> None:
    with pytest.raises(error, match=message):
        write_state(tmp_path / "x.npz", 1, state, {})
    assert list(tmp_path.iterdir()) == []


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(simkind.kind, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def test_a_checkpoint_is_due_every_interval_from_the_last_save(clock: Clock,
                                                              tmp_path: Path) -> None:
    context = Context(checkpoint_dir=tmp_path, checkpoint_every_s=10.0)
    assert context.wants_checkpoints
    clock.now += 9.999
    assert not context.checkpoint_due()
    clock.now += 0.001
    assert context.checkpoint_due()
    clock.now += 2.0  # saved 12 s after the start: the next one is due 10 s after that
    context.save_checkpoint(5, {"x": np.zeros(1)})
    clock.now += 9.9
    assert not context.checkpoint_due()
    clock.now += 0.1
    assert context.checkpoint_due()


def test_no_checkpoint_is_due_without_a_folder_or_without_an_interval_or_stop(
        clock: Clock, tmp_path: Path) -> None:
    no_folder = Context(checkpoint_every_s=1.0)
    no_interval = Context(checkpoint_dir=tmp_path)
    clock.now += 1e6
    for context in (no_folder, no_interval):
        assert not context.wants_checkpoints and not context.checkpoint_due()
    no_folder.request_checkpoint_stop()  # nowhere to save it: the run goes on to its end
    assert not no_folder.wants_checkpoints and not no_folder.checkpoint_due()
    no_interval.request_checkpoint_stop()
    assert no_interval.wants_checkpoints and no_interval.checkpoint_due()
    with pytest.raises(RuntimeError, match="checkpoint_dir is None"):
        no_folder.save_checkpoint(1, {})


def test_a_save_replaces_the_older_checkpoint_and_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "made" / "here"
    saved: list[tuple[int, Path]] = []
    context = Context(checkpoint_dir=folder, on_checkpoint=lambda s, p: saved.append((s, p)))
    first = context.save_checkpoint(100, {"x": np.zeros(2)}, COMPAT)
    assert first == folder / "checkpoint-100.npz" and ARTIFACT_NAME_RE.match(first.name)
    (folder / "notes.txt").write_text("not a checkpoint: left alone")
    (folder / "checkpoint-7.npz").write_bytes(b"a stale one")
    second = context.save_checkpoint(200, {"x": np.ones(2)}, COMPAT)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-200.npz", "notes.txt"]
    assert saved == [(100, first), (200, second)]
    assert read_state(second)[0] == 200 and read_state(second)[2] == COMPAT


def test_a_stop_request_saves_then_raises_preempted(tmp_path: Path) -> None:
    saved: list[int] = []
    context = Context(checkpoint_dir=tmp_path, checkpoint_every_s=300.0,
                      on_checkpoint=lambda s, p: saved.append(s))
    assert not context.checkpoint_due()
    context.request_checkpoint_stop()
    assert context.checkpoint_due()
    with pytest.raises(Preempted) as stopped:
        context.save_checkpoint(42, {"x": np.arange(3.0)})
    assert (stopped.value.step, stopped.value.path) == (42, tmp_path / "checkpoint-42.npz")
    assert saved == [42] and read_state(stopped.value.path)[0] == 42


def resuming(path: Path) -> tuple[Context, list[tuple[int, str]]]:
    """A context given the checkpoint ``path``, and the on_resume calls it makes."""
    calls: list[tuple[int, str]] = []
    context = Context(inputs={CHECKPOINT_INPUT: path},
                      on_resume=lambda step, note: calls.append((step, note)))
    return context, calls


def test_restore_gives_the_state_of_a_checkpoint_made_under_the_same_compat(
        tmp_path: Path) -> None:
    calls: list[tuple[int, str]] = []
    fresh = Context(on_resume=lambda step, note: calls.append((step, note)))
    assert fresh.restore_checkpoint(COMPAT) is None and calls == []  # nothing given
    write_state(tmp_path / "c.npz", 4200, {"x": np.arange(3.0), "n": 7}, COMPAT)
    context, calls = resuming(tmp_path / "c.npz")
    restored = context.restore_checkpoint(dict(COMPAT))
    assert restored is not None
    step, state = restored
    assert step == 4200 and state["n"] == 7 and state["x"].tolist() == [0.0, 1.0, 2.0]
    assert calls == [(4200, "")] and (context.resumed_step, context.resume_note) == (4200, "")


def test_a_checkpoint_made_under_another_compat_is_refused_saying_what_differs(
        tmp_path: Path) -> None:
    made = {"backend": "compiled", "simd_variant": "avx2", "seed": "7"}
    write_state(tmp_path / "c.npz", 4200, {"x": np.zeros(1)}, made)
    context, calls = resuming(tmp_path / "c.npz")
    assert context.restore_checkpoint({"backend": "python", "seed": "7"}) is None
    note = ("checkpoint of step 4200 made with backend compiled, simd_variant avx2; this "
            "worker runs backend python, no simd_variant: started from step 0")
    assert calls == [(0, note)] and (context.resumed_step, context.resume_note) == (0, note)


def test_an_unreadable_or_unfitting_checkpoint_is_refused_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"no checkpoint")
    context, calls = resuming(tmp_path / "bad.npz")
    assert context.restore_checkpoint() is None
    assert calls == [(0, f"checkpoint unreadable: {tmp_path}/bad.npz: not a checkpoint: not "
                         "an .npz archive (a zip file): started from step 0")]

    write_state(tmp_path / "c.npz", 8, {"x": np.zeros(2)}, {})

    def needs_y(step: int, state: dict[str, Any]) -> None:
        state["y"]

    def needs_three(step: int, state: dict[str, Any]) -> None:
        if state["x"].shape != (3,):
            raise CheckpointError(f"x has shape {state['x'].shape}, this run needs (3,)")

    for check, reason in ((needs_y, "no 'y'"), (needs_three, "x has shape (2,), this run "
                                                               "needs (3,)")):
        context, calls = resuming(tmp_path / "c.npz")
        assert context.restore_checkpoint(check=check) is None
        assert calls == [(0, f"checkpoint of step 8 does not fit: {reason}: started from "
                             "step 0")]


TOY = Kind("toy", "resumes from a checkpoint", {}, "tests.unit.test_simkind_checkpoint:toy")


def toy(params: dict[str, Any], seed: int, context: Context) -> Output:
    restored = context.restore_checkpoint({"kind": "toy"})
    return Output({"x": [0.0 if restored is None else float(restored[1]["x"])]})


def test_the_result_says_from_which_step_it_resumed_or_why_not(tmp_path: Path) -> None:
    loaded = LoadedKind(TOY, "1", "lab-kinds", "1", "toy = tests.unit:toy")
    write_state(tmp_path / "ok.npz", 30, {"x": 2.0}, {"kind": "toy"})
    write_state(tmp_path / "other.npz", 30, {"x": 2.0}, {"kind": "lj"})
    results = [simkind.execute(loaded, {}, 1, Context(inputs=inputs), function=toy)
               for inputs in ({}, {CHECKPOINT_INPUT: tmp_path / "ok.npz"},
                              {CHECKPOINT_INPUT: tmp_path / "other.npz"})]
    plain, resumed, refused = (r["metadata"] for r in results)
    assert "resumed_from_step" not in plain and "resume_note" not in plain
    assert resumed["resumed_from_step"] == 30 and "resume_note" not in resumed
    assert results[1]["observables"] == {"x": [2.0]}
    assert "resumed_from_step" not in refused
    assert refused["resume_note"] == ("checkpoint of step 30 made with kind lj; this worker "
                                      "runs kind toy: started from step 0")


def test_checkpoint_files_are_plain_zip_archives_of_npy_members(tmp_path: Path) -> None:
    # The format other tools read: an uncompressed .npz, as np.savez writes.
    write_state(tmp_path / "c.npz", 5, {"positions": np.zeros((4, 3)), "n": 1}, {"k": "v"})
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
        assert sorted(archive.namelist()) == [f"{META}.npy", "positions.npy"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    with np.load(tmp_path / "c.npz", allow_pickle=False) as loaded:
        assert json.loads(loaded[META].tobytes()) == {
            "format": 1, "step": 5, "compat": {"k": "v"}, "values": {"n": 1}}
