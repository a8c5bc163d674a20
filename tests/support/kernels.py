"""Shared helpers for the kernel tests: both backends, every SIMD variant, and the NIST
reference configurations. Imports pytest (the parametrize marks): for tests only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ckernel import _backend

NIST_DIR = Path(__file__).resolve().parent.parent / "data" / "nist-lj"

BACKENDS = ("numpy", "cython")

both_backends = pytest.mark.parametrize("backend", BACKENDS)
"""Runs the decorated test (which takes a ``backend`` argument) on each backend."""

SIMD_VARIANTS: tuple[str, ...] = (tuple(_backend.compiled.simd_available())
                                  if _backend.compiled is not None else ())
"""The compiled SIMD variants this machine can run (portable first)."""

every_variant = pytest.mark.parametrize("variant", SIMD_VARIANTS)
"""Runs the decorated test (which takes a ``variant`` argument) once per SIMD variant."""

KERNELS = ("numpy", *(f"cython-{variant}" for variant in SIMD_VARIANTS))

every_kernel = pytest.mark.parametrize("kernel", KERNELS)
"""Runs the decorated test (which takes a ``kernel`` argument) on the numpy backend and on
the compiled one with each SIMD variant forced; the test runs under ``with
running(kernel) as backend``."""


@contextmanager
def simd(variant: str) -> Iterator[None]:
    """Force the compiled kernels onto ``variant`` inside the block, then restore."""
    compiled = _backend.compiled
    assert compiled is not None
    before = compiled.simd_variant()
    compiled.use_simd(variant)
    try:
        yield
    finally:
        compiled.use_simd(before)


@contextmanager
def running(kernel: str) -> Iterator[str]:
    """For a ``kernel`` of :data:`KERNELS`: the backend name to pass to ckernel, with the
    SIMD variant forced inside the block for "cython-<variant>"."""
    backend, _, variant = kernel.partition("-")
    if not variant:
        yield backend
        return
    with simd(variant):
        yield backend


def load_xyz(name: str) -> tuple[np.ndarray, float]:
    """Positions and box side of one NIST configuration file."""
    lines = (NIST_DIR / name).read_text().splitlines()
    n = int(lines[0])
    box = float(lines[1].split()[1])
    positions = np.array([[float(v) for v in line.split()[1:4]] for line in lines[2:2 + n]])
    assert positions.shape == (n, 3)
    return positions, box
