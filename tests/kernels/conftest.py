"""Shared helpers for the kernel tests: backends and the NIST reference configurations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NIST_DIR = Path(__file__).resolve().parent.parent / "data" / "nist-lj"

BACKENDS = ("numpy", "cython")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both backends."""
    return request.param


def load_xyz(name: str) -> tuple[np.ndarray, float]:
    """Positions and box side of one NIST configuration file."""
    lines = (NIST_DIR / name).read_text().splitlines()
    n = int(lines[0])
    box = float(lines[1].split()[1])
    positions = np.array([[float(v) for v in line.split()[1:4]] for line in lines[2:2 + n]])
    assert positions.shape == (n, 3)
    return positions, box
