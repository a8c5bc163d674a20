"""Extended XYZ frames with numpy: the writer of the built-in kinds' trajectories and final
configurations, and the reader of the configuration a task starts from (its ``init``).

A frame is the atom count, a comment line such as ``Lattice="L 0 0 0 L 0 0 0 L"
Properties=species:S:1:pos:R:3:vel:R:3 Step=100 Time=0.5 pbc="T T T"`` and a line per atom
(``X x y z vx vy vz``). Numbers are written as Python's ``repr`` (the shortest text that reads
back as the same float64), so a reader gets the very numbers of the run. The species is ASE's
dummy element ``X``: the units are reduced, no element is meant. The header of the last frame
is parsed by :func:`simkind.extxyz.read_last_header`, the same reader simctl checks an
``init`` with, so both agree on what the file holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ckernel.params import COLUMNS, configuration_columns
from simkind.errors import ParamError
from simkind.extxyz import Frame, read_last_header

SPECIES = "X"
"""ASE's dummy element (atomic number 0, mass 1), which ase.io.read accepts."""

BLOCK_ATOMS = 1 << 16
"""Atom lines are formatted this many at a time (one string operation per block, bounded
memory for a million particles)."""

TAIL_BYTES_PER_ATOM = 160
"""First guess of the bytes an atom line takes, when reading the last frame from the end."""


def write_frame(handle: TextIO, positions: np.ndarray, *, step: int, time: float,
                box: float | None = None, velocities: np.ndarray | None = None,
                masses: np.ndarray | None = None) -> None:
    """Write one frame: a cubic periodic ``box`` (None: open boundaries, no Lattice), the
    ``positions`` and, when given, ``velocities`` and ``masses``."""
    columns, properties = [positions], ["species:S:1", "pos:R:3"]
    if velocities is not None:
        columns.append(velocities)
        properties.append("vel:R:3")
    if masses is not None:
        columns.append(masses[:, None])
        properties.append("masses:R:1")
    table = np.column_stack(columns)
    header = []
    if box is not None:
        side = repr(float(box))  # a numpy float's repr would be "np.float64(...)"
        header.append(f'Lattice="{side} 0 0 0 {side} 0 0 0 {side}"')
    header += [f"Properties={':'.join(properties)}", f"Step={int(step)}",
               f"Time={float(time)!r}",
               'pbc="T T T"' if box is not None else 'pbc="F F F"']
    handle.write(f"{len(table)}\n{' '.join(header)}\n")
    # One %-format per block: the loop over atoms runs in C; %r is repr, shortest round-trip.
    line = SPECIES + " %r" * table.shape[1] + "\n"
    for start in range(0, len(table), BLOCK_ATOMS):
        block = table[start:start + BLOCK_ATOMS]
        handle.write((line * len(block)) % tuple(block.ravel().tolist()))


@dataclass(frozen=True)
class Configuration:
    """The last frame of an extended XYZ file: its header and the columns the kinds read."""

    header: Frame
    positions: np.ndarray
    velocities: np.ndarray | None
    masses: np.ndarray | None


def read_configuration(path: Path | str, header: Frame | None = None) -> Configuration:
    """The last frame of the extended XYZ file ``path``: positions, and velocities (``vel``)
    and masses (``masses``) when it has them. ``header`` is the frame's header if already
    read (:func:`simkind.extxyz.read_last_header`, which checks the whole file's layout).
    ParamError naming the file and the line when numbers are missing, not finite, or a mass
    is not positive."""
    path = Path(path)
    if header is None:
        header = read_last_header(path)
    offsets = configuration_columns(header)
    names = sorted(offsets, key=offsets.__getitem__)
    columns = [offsets[name] + i for name in names for i in range(COLUMNS[name])]
    lines, first_line = _last_lines(path, header.n_atoms)
    try:
        table = np.loadtxt(lines, usecols=columns, dtype=np.float64, ndmin=2, comments=None)
    except ValueError as e:
        raise ParamError(f"{path}: the atom lines of the last frame (from line {first_line()}) "
                         f"do not hold numbers where Properties says: {e}") from None
    if table.shape != (header.n_atoms, len(columns)):
        raise ParamError(f"{path}: the last frame holds {len(table)} atom lines, its header "
                         f"says {header.n_atoms}")
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        raise ParamError(f"{path}:{first_line() + int(np.argmax(bad))}: an atom's numbers are "
                         "not all finite")
    found, at = {}, 0
    for name in names:
        found[name] = np.ascontiguousarray(table[:, at:at + COLUMNS[name]])
        at += COLUMNS[name]
    masses = found["masses"][:, 0] if "masses" in found else None
    if masses is not None and not (masses > 0.0).all():
        raise ParamError(f"{path}:{first_line() + int(np.argmax(~(masses > 0.0)))}: masses "
                         "must be > 0")
    return Configuration(header, found["pos"], found.get("vel"), masses)


def _last_lines(path: Path, count: int) -> tuple[list[str], Callable[[], int]]:
    """The last ``count`` lines of ``path`` that hold anything (a frame may be followed by
    blank lines), read from the end; and a function giving the line number of the first of
    them (counted only when asked: for an error message)."""
    size = path.stat().st_size
    chunk = min(size, TAIL_BYTES_PER_ATOM * (count + 2))
    with path.open("rb") as f:
        while True:
            f.seek(size - chunk)
            data = f.read(chunk)
            if chunk < size:
                data = data[data.find(b"\n") + 1:]  # from a line's start (and a whole character)
            # The newlines of text mode, as simkind's header reader sees them.
            text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode("utf-8").rstrip()
            if text.count("\n") >= count or chunk == size:
                break
            chunk = min(size, 2 * chunk)
    parts = text.rsplit("\n", count)
    if len(parts) <= count:  # the file is shorter than its header says (changed since read)
        return parts, lambda: 1
    skipped, head_lines = size - len(data), parts[0].count("\n") + 1

    def first_line() -> int:
        newlines = 0
        with path.open("rb") as f:
            for _ in range(0, skipped, 1 << 24):
                block = f.read(min(1 << 24, skipped - f.tell()))
                newlines += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
        return newlines + head_lines + 1

    return parts[1:], first_line


def open_text(path: Path, append: bool = False) -> TextIO:
    """A file to write frames to: ASCII, "\\n" line ends on every platform, a large buffer;
    with ``append``, after what the file holds (a trajectory resumed from a checkpoint)."""
    return open(path, "a" if append else "w", encoding="ascii", newline="\n",
                buffering=1 << 20)
