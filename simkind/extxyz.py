"""The header of an extended XYZ file, read in pure Python (no numpy): what simctl needs to
check, before anything is sent, that a configuration fits a kind (``Kind.init``).

Extended XYZ, as LAMMPS's ``dump xyz``, ASE, OVITO and VMD know it: per frame a line with
the atom count, a comment line of ``key=value`` pairs (``Lattice="ax ay az bx by bz cx cy
cz"``, ``Properties=species:S:1:pos:R:3:vel:R:3``, ``Step=...``), then one line per atom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simkind.errors import ParamError

FINAL_CONFIGURATION = "final.xyz"
"""The artifact a kind writes its last configuration to; ``init: {from: TASK}`` takes it."""

TRAJECTORY = "trajectory.xyz"
"""The artifact the built-in kinds write their frames to (``trajectory_every``)."""

INIT_INPUT = "init"
"""The input name of the configuration a chained task starts from (``Context.inputs``)."""

_PAIR_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_\-]*)=("[^"]*"|\S+)')


@dataclass(frozen=True)
class Frame:
    """One frame's header: atom count, cell, per-atom columns and the other key=values."""

    n_atoms: int
    lattice: tuple[float, ...] | None
    """The cell vectors a, b, c in a row (9 numbers), or None when the frame gives none."""
    properties: tuple[tuple[str, str, int], ...]
    """Per-atom columns: (name, type S/R/I/L, count), e.g. ("pos", "R", 3)."""
    info: dict[str, str] = field(default_factory=dict)
    """The comment line's other key=value pairs, as text."""
    step: int | None = None

    def has(self, name: str) -> bool:
        """Whether atoms carry the column ``name`` (``pos``, ``vel``, ``masses``, ...)."""
        return any(p[0] == name for p in self.properties)

    @property
    def cubic_box(self) -> float | None:
        """The edge of a cubic cell (``Lattice="L 0 0 0 L 0 0 0 L"``), else None."""
        lat = self.lattice
        if lat is None or any(lat[i] != 0.0 for i in (1, 2, 3, 5, 6, 7)):
            return None
        return lat[0] if lat[0] == lat[4] == lat[8] and lat[0] > 0.0 else None


def _fail(path: Path, line: int, what: str) -> ParamError:
    return ParamError(f"{path}:{line}: {what} (expected extended XYZ: a line with the atom "
                      "count, a comment line of key=value pairs with Properties=..., then a "
                      "line per atom)")


def parse_comment(path: Path, line_no: int, text: str, n_atoms: int) -> Frame:
    """The Frame of one comment line."""
    pairs = {key: value.strip('"') for key, value in _PAIR_RE.findall(text)}
    properties: list[tuple[str, str, int]] = []
    spec = pairs.pop("Properties", "species:S:1:pos:R:3")
    parts = spec.split(":")
    if len(parts) % 3:
        raise _fail(path, line_no, f"Properties={spec!r} is not name:type:count triples")
    for i in range(0, len(parts), 3):
        name, kind, count = parts[i : i + 3]
        if kind not in ("S", "R", "I", "L") or not count.isdigit() or int(count) < 1:
            raise _fail(path, line_no, f"Properties: bad column {name}:{kind}:{count}")
        properties.append((name, kind, int(count)))
    if not any(p[0] == "pos" for p in properties):
        raise _fail(path, line_no, "Properties has no pos column")
    lattice = None
    if "Lattice" in pairs:
        try:
            values = tuple(float(v) for v in pairs.pop("Lattice").split())
        except ValueError:
            values = ()
        if len(values) != 9:
            raise _fail(path, line_no, "Lattice must hold 9 numbers")
        lattice = values
    step: int | None = None
    if "Step" in pairs and pairs["Step"].lstrip("-").isdigit():
        step = int(pairs["Step"])
    return Frame(n_atoms, lattice, tuple(properties), pairs, step)


def read_last_header(path: Path | str) -> Frame:
    """The header of the last frame of an extended XYZ file (a configuration to start from
    is its last frame); ParamError naming the file and line when it is not one."""
    path = Path(path)
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as e:
        raise ParamError(f"{path}: cannot read: {e.strerror or e}") from e
    frame: Frame | None = None
    line_no = 0
    with handle:
        try:
            while True:
                count_line = handle.readline()
                line_no += 1
                if not count_line:
                    break
                if not count_line.strip():
                    continue  # blank lines between frames
                try:
                    n_atoms = int(count_line.strip())
                except ValueError:
                    raise _fail(path, line_no, f"{count_line.strip()[:40]!r} is not an atom "
                                "count") from None
                if n_atoms < 1:
                    raise _fail(path, line_no, "the atom count must be at least 1")
                comment = handle.readline()
                line_no += 1
                frame = parse_comment(path, line_no, comment, n_atoms)
                width = sum(p[2] for p in frame.properties)
                for _ in range(n_atoms):
                    atom = handle.readline()
                    line_no += 1
                    if not atom:
                        raise _fail(path, line_no, f"the frame ends before its {n_atoms} atoms")
                    if len(atom.split()) != width:
                        raise _fail(path, line_no, f"an atom line has {len(atom.split())} "
                                    f"columns, Properties gives {width}")
        except UnicodeDecodeError as e:
            raise _fail(path, line_no, f"not text: {e}") from None
    if frame is None:
        raise _fail(path, 1, "the file holds no frame")
    return frame


def describe(frame: Frame) -> dict[str, Any]:
    """A frame header as plain JSON (for messages and ``simctl validate``)."""
    return {"n_atoms": frame.n_atoms, "lattice": list(frame.lattice or ()),
            "properties": [":".join((n, k, str(c))) for n, k, c in frame.properties],
            "step": frame.step}
