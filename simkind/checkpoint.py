"""Checkpoints: a task's whole state at a step from which it can go on exactly, so that a
task whose worker died, or was stopped, resumes on its next attempt and ends with the result
an uninterrupted run gives (bit for bit, on the same backend).

A checkpoint file is a numpy ``.npz`` archive, uncompressed, in the layout ``np.savez``
writes: one ``NAME.npy`` member per array of the state, and the member :data:`META`, the
UTF-8 bytes of a JSON document holding the format version, the step, the ``compat``
mapping (what the numbers depend on besides the state: backend, SIMD variant, numpy
version, ...) and the state's other values (dicts, lists, strings, booleans, None, floats and
integers of any size, such as a numpy bit generator's ``state``). It is read with
``allow_pickle=False`` always: checkpoints travel between machines, and unpickling one runs
whatever code it names.

numpy is imported inside :func:`write_state` and :func:`read_state` only: simkind is
imported on the main PC, which may have no numpy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simkind.errors import KindError

CHECKPOINT_INPUT = "checkpoint"
"""The input name under which a resumed attempt's checkpoint file arrives (``Context.inputs``)."""

FORMAT_VERSION = 1
"""The layout of the JSON document in :data:`META`; another version is refused."""

META = "_checkpoint"
"""The archive member holding the JSON document. State names start with a letter, so no
array of the state can take its place."""

ZIP_MAGIC = b"PK\x03\x04"
"""How a zip file, so an .npz archive, starts."""

STATE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
"""Names of a state's entries: they become member names of the archive."""


class CheckpointError(KindError, ValueError):
    """A checkpoint file that cannot be read as one (damaged, truncated, of another format,
    holding pickled objects), or a state that does not fit the run; names the file."""


class Preempted(Exception):
    """Raised by ``Context.save_checkpoint`` after saving, when the worker asked the task
    to stop (a warm stop): the task is handed back, to resume from ``path`` (of ``step``).
    A run function lets it propagate."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"stopped on request after the checkpoint of step {step} ({path})")
        self.step = step
        self.path = path


def write_state(path: Path, step: int, state: Mapping[str, Any],
                compat: Mapping[str, str]) -> None:
    """Write the checkpoint ``path``: ``state`` (name -> numpy array or JSON value) at
    ``step``, made under ``compat``. Atomic: the archive is written to a temporary file in
    the same folder, flushed to disk and renamed over ``path``, so a reader (or a crash)
    sees the old file or the new one, never half of one. TypeError or ValueError, naming
    the entry, for a state that is not arrays and JSON values."""
    import numpy as np

    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step {step!r}: must be an integer >= 0")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in compat.items()):
        raise TypeError(f"checkpoint compat {dict(compat)!r}: must map strings to strings")
    arrays: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name, value in state.items():
        if not isinstance(name, str) or not STATE_NAME_RE.match(name):
            raise ValueError(f"checkpoint state name {name!r}: must match "
                             f"{STATE_NAME_RE.pattern}")
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"checkpoint state {name}: an array of Python objects "
                                "cannot be saved without pickling")
            arrays[name] = value
        else:
            values[name] = value
    try:
        document = json.dumps({"format": FORMAT_VERSION, "step": step, "compat": dict(compat),
                               "values": values})
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint state: {e} (values other than numpy arrays must be "
                        "JSON: dicts, lists, str, int, float, bool, None)") from None
    arrays[META] = np.frombuffer(document.encode("utf-8"), dtype=np.uint8)
    folder = path.parent
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            # np.savez's archive, written member by member with pickling refused on this
            # side too (np.savez takes the names as keywords, where "file" would clash).
            with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, array in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry of a renamed file to disk (a crash may otherwise lose it)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_state(path: Path) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The step, state and compat of the checkpoint ``path``, as :func:`write_state` was
    given them (arrays come back as arrays, JSON values as Python values); CheckpointError
    naming the file for anything that is not such a checkpoint."""
    import numpy as np

    try:
        with path.open("rb") as file:
            if file.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                raise CheckpointError("not an .npz archive (a zip file)")
        with np.load(path, allow_pickle=False) as loaded:
            members = {name: loaded[name] for name in loaded.files}
        if strays := sorted(name for name, v in members.items() if not isinstance(v, np.ndarray)):
            raise CheckpointError(f"member {strays[0]!r} is not a numpy array")
        raw = members.pop(META, None)
        if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError(f"no {META} entry of JSON text")
        document = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(document, dict):
            raise CheckpointError(f"its {META} entry is not a JSON object")
    except Exception as e:  # a damaged archive raises whatever the zip, npy or JSON reader does
        raise CheckpointError(f"{path}: not a checkpoint: {_reason(e)}") from None
    if document.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {document.get('format')!r}, this "
                              f"version reads format {FORMAT_VERSION}")
    step, compat, values = (document.get(key) for key in ("step", "compat", "values"))
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: checkpoint step {step!r} is not an integer >= 0")
    if not isinstance(compat, dict) or not all(isinstance(v, str) for v in compat.values()):
        raise CheckpointError(f"{path}: checkpoint compat {compat!r} is not a mapping of "
                              "strings")
    if not isinstance(values, dict) or set(values) & set(members):
        raise CheckpointError(f"{path}: checkpoint values are not a mapping apart from the "
                              "arrays")
    return step, {**values, **members}, compat


def _reason(error: Exception) -> str:
    """What went wrong, for the message: the reader's exception and its text."""
    if isinstance(error, CheckpointError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
