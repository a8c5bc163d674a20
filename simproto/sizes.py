"""Sizes in bytes as people write and read them: ``4 GiB``, ``500MB``, ``1048576``.

One spelling everywhere a size is set (task files' ``artifact_limits``, the agent's
``--spool-max-bytes``) or shown (artifact listings, errors about limits).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from simproto.protocol import FileRef

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
         "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
"""Decimal units (kB, MB, GB, TB), binary ones (KiB, MiB, GiB, TiB), and a bare K, M, G, T
for the binary ones (as ``ls -h`` and Docker read them)."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

ALLOWED = "an integer number of bytes or a size such as 500MB, 4GiB or 2G"
"""What a size may be, for error messages."""


def parse_size(value: object) -> int:
    """Bytes of ``value`` (an int, or text with an optional unit); ValueError saying what
    is allowed otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size: use {ALLOWED}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative: use {ALLOWED}")
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS:
        raise ValueError(f"{value!r} is not a size: use {ALLOWED}")
    return int(float(match.group(1)) * UNITS[unit])


def format_size(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024.0
    unit = "KiB"
    for bigger in ("MiB", "GiB", "TiB", "PiB"):
        if value < 1024.0:
            break
        value, unit = value / 1024.0, bigger
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def describe_files(refs: Iterable[FileRef], limit: int = 3) -> str:
    """``trajectory.xyz 1.1 GiB, final.xyz 2.0 MiB, ...``: the largest files first."""
    ordered = sorted(refs, key=lambda ref: (-ref.size, ref.name))
    named = ", ".join(f"{ref.name} {format_size(ref.size)}" for ref in ordered[:limit])
    return named + (", ..." if len(ordered) > limit else "")


def over_task_limit(refs: tuple[FileRef, ...], limit: int | None) -> str | None:
    """Why a task's artifacts break its limit (``artifact_limits.task``), or None. The
    agent checks it before it keeps the files, simctl again before it pulls them."""
    total = sum(ref.size for ref in refs)
    if limit is None or total <= limit:
        return None
    return (f"artifacts take {format_size(total)} ({describe_files(refs)}), over the task "
            f"limit of {format_size(limit)} (artifact_limits.task in the task file)")
