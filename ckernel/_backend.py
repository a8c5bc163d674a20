"""Choice between the compiled kernels and the numpy reference.

The compiled extension is optional at import time: without it ckernel runs on the numpy
reference and warns once. ``CKERNEL_REQUIRE_EXT=1`` (set in CI and in the worker image)
turns a missing extension into an ImportError, so a broken build cannot pass silently.

The compiled Lennard-Jones and gravity loops come in SIMD variants (portable, avx2,
avx512) that give bit-identical results; the widest the CPU has runs unless
``CKERNEL_SIMD`` names another (``auto`` is the default). Each result's metadata says which
one ran (``simd_variant``).

:class:`Kernels` is what the drivers call on a backend; mypy checks the numpy reference and
the compiled module (typed by ``_kernels.pyi``) against it.
"""

from __future__ import annotations

import os
import warnings
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ckernel import reference
from ckernel.errors import ParamError

BACKENDS = ("auto", "cython", "numpy")
THREADS = 1
"""Threads a simulation uses: the kernels are serial by design (see ``_kernels.pyx``)."""

Floats = npt.NDArray[np.float64]
"""A float64 array: positions, velocities, forces (C-contiguous (N, 3)), masses (N,)."""

NeighbourList = tuple[np.ndarray, ...]
"""A backend's Lennard-Jones neighbour list: opaque to the drivers, made by that backend's
``lj_neighbours`` and read only by its ``lj_forces``."""


class Kernels(Protocol):
    """What the drivers (``lj.py``, ``nbody.py``, ``brownian.py``) call on a backend: the
    functions both ``ckernel.reference`` and the compiled ``ckernel._kernels`` provide, with
    the same names and arguments. mypy checks both modules against it (below). Inputs are
    trusted (the drivers validate them); arrays are float64 and C-contiguous, and the
    functions returning None update their first argument in place."""

    def lj_neighbours(self, pos: Floats, box: float, rlist: float) -> NeighbourList:
        """Half list of the pairs closer than ``rlist`` (positions wrapped into [0, box))."""
        ...

    def lj_forces(self, pos: Floats, box: float, pairs: NeighbourList, rc: float,
                  potential: int, forces: Floats, energy: bool = True) -> tuple[float, float]:
        """Fill ``forces``; return the pair energy U and the virial W (the compiled twin
        returns 0.0, 0.0 when ``energy`` is false)."""
        ...

    def max_displacement2(self, pos: Floats, ref: Floats, box: float) -> float:
        """Largest squared minimum-image displacement since ``ref``."""
        ...

    def kick(self, v: Floats, f: Floats, h: float) -> None:
        """v <- v + h f."""
        ...

    def drift(self, x: Floats, v: Floats, h: float) -> None:
        """x <- x + h v."""
        ...

    def wrap(self, x: Floats, box: float) -> None:
        """Every coordinate back into [0, box)."""
        ...

    def ornstein_uhlenbeck(self, v: Floats, c1: float, c2: float, noise: Floats) -> None:
        """The O step of BAOAB: v <- c1 v + c2 noise."""
        ...

    def baoab_harmonic(self, x: Floats, v: Floats, k_over_m: float, dt: float, c1: float,
                       c2: float, noise: Floats) -> None:
        """One BAOAB step of independent particles in the trap F = -k x."""
        ...

    def euler_maruyama_harmonic(self, x: Floats, k_mobility_dt: float, sigma: float,
                                noise: Floats) -> None:
        """One overdamped step x <- x - k mu dt x + sigma noise."""
        ...

    def gravity(self, pos: Floats, mass: Floats, G: float, eps: float, acc: Floats,
                energy: bool = True) -> float:
        """Fill ``acc`` with the softened accelerations; return the potential energy U (the
        compiled twin returns 0.0 when ``energy`` is false)."""
        ...


class CompiledKernels(Kernels, Protocol):
    """The compiled backend: the kernels plus the switch between SIMD variants."""

    @property
    def SIMD_VARIANTS(self) -> tuple[str, ...]:
        """Every variant name this build knows, most portable first."""
        ...

    def simd_available(self) -> tuple[str, ...]:
        """The variants this CPU and build can run, most portable first."""
        ...

    def simd_variant(self) -> str:
        """The variant the Lennard-Jones and gravity loops use now."""
        ...

    def use_simd(self, name: str) -> str:
        """Use variant ``name`` ("auto": the widest available); ValueError if unavailable."""
        ...


numpy_kernels: Kernels = reference
"""The numpy reference backend (the assignment makes mypy check it against the protocol)."""

compiled: CompiledKernels | None
try:
    from ckernel import _kernels

    compiled = _kernels
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


def select(backend: str) -> tuple[str, Kernels]:
    """Return (name, kernel module) for ``backend`` ("auto", "cython" or "numpy")."""
    if backend not in BACKENDS:
        raise ParamError(f"backend = {backend!r}: must be one of {', '.join(BACKENDS)}")
    if backend == "numpy" or (backend == "auto" and compiled is None):
        return "numpy", numpy_kernels
    if compiled is None:
        raise ParamError("backend = 'cython': the compiled extension ckernel._kernels is not "
                         "built; use backend 'numpy' or 'auto', or rebuild the package")
    return "cython", compiled
