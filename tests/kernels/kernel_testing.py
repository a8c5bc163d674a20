"""Shared helpers for the kernel tests: both backends and the NIST reference configurations.

Deliberately not a conftest.py: other test folders do ``from conftest import ...`` and a
second module called conftest on sys.path would shadow theirs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NIST_DIR = Path(__file__).resolve().parent.parent / "data" / "nist-lj"

BACKENDS = ("numpy", "cython")

both_backends = pytest.mark.parametrize("backend", BACKENDS)
"""Runs the decorated test (which takes a ``backend`` argument) on each backend."""


def load_xyz(name: str) -> tuple[np.ndarray, float]:
    """Positions and box side of one NIST configuration file."""
    lines = (NIST_DIR / name).read_text().splitlines()
    n = int(lines[0])
    box = float(lines[1].split()[1])
    positions = np.array([[float(v) for v in line.split()[1:4]] for line in lines[2:2 + n]])
    assert positions.shape == (n, 3)
    return positions, box
