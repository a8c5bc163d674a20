"""Choice between the compiled kernels and the numpy reference.

The compiled extension is optional at import time: without it ckernel runs on the numpy
reference and warns once. ``CKERNEL_REQUIRE_EXT=1`` (set in CI and in the worker image)
turns a missing extension into an ImportError, so a broken build cannot pass silently.

The compiled Lennard-Jones and gravity loops come in SIMD variants (portable, avx2,
avx512) that give bit-identical results; the widest the CPU has runs unless
``CKERNEL_SIMD`` names another (``auto`` is the default). Each result's metadata says which
one ran (``simd_variant``).
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from ckernel import reference
from ckernel.errors import ParamError

BACKENDS = ("auto", "cython", "numpy")
THREADS = 1
"""Threads a simulation uses: the kernels are serial by design (see ``_kernels.pyx``)."""

compiled: ModuleType | None
try:
    compiled = importlib.import_module("ckernel._kernels")
except ImportError as error:
    if os.environ.get("CKERNEL_REQUIRE_EXT") == "1":
        raise ImportError(f"ckernel: the compiled extension ckernel._kernels is required "
                          f"(CKERNEL_REQUIRE_EXT=1) but cannot be imported: {error}") from error
    warnings.warn(f"ckernel: compiled extension not available ({error}); running on the "
                  "numpy reference backend, which is much slower", RuntimeWarning,
                  stacklevel=2)
    compiled = None

SIMD_ENV = "CKERNEL_SIMD"
"""Environment variable naming the SIMD variant to use (auto, portable, avx2, avx512)."""

if compiled is not None and (wanted := os.environ.get(SIMD_ENV, "auto")) != "auto":
    try:
        compiled.use_simd(wanted)
    except ValueError as error:
        raise ImportError(f"ckernel: {SIMD_ENV}={wanted}: {error}") from error


def simd_variant(kind: str, backend: str) -> str:
    """The SIMD variant a ``kind`` run on ``backend`` uses: the compiled variant for the
    dispatched pair loops (lj, nbody), "portable" for the other compiled loops (built for
    the baseline instruction set), "none" for numpy and sleep."""
    if backend != "cython" or compiled is None:
        return "none"
    return str(compiled.simd_variant()) if kind in ("lj", "nbody") else "portable"


def select(backend: str) -> tuple[str, ModuleType]:
    """Return (name, kernel module) for ``backend`` ("auto", "cython" or "numpy")."""
    if backend not in BACKENDS:
        raise ParamError(f"backend = {backend!r}: must be one of {', '.join(BACKENDS)}")
    if backend == "numpy" or (backend == "auto" and compiled is None):
        return "numpy", reference
    if compiled is None:
        raise ParamError("backend = 'cython': the compiled extension ckernel._kernels is not "
                         "built; use backend 'numpy' or 'auto', or rebuild the package")
    return "cython", compiled
