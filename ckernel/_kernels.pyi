"""Types of the compiled kernels (``_kernels.pyx``), for mypy and editors.

The functions are the twins of ``ckernel/reference.py`` (the :class:`ckernel._backend.Kernels`
protocol) plus the SIMD variant switch. ``tests/kernels/test_typing.py`` runs mypy's
stubtest against the built extension, so this file cannot drift from it.
"""

import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.float64]

SIMD_VARIANTS: tuple[str, ...]

def simd_available() -> tuple[str, ...]: ...
def simd_variant() -> str: ...
def use_simd(name: str) -> str: ...
def lj_neighbours(
    pos: _Floats, box: float, rlist: float
) -> tuple[
    npt.NDArray[np.intp],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int8],
    _Floats,
]: ...
def _stencil(reach: int, side: float, rlist: float) -> tuple[npt.NDArray[np.intc], int]: ...
def lj_forces(
    pos: _Floats,
    box: float,
    pairs: tuple[np.ndarray, ...],
    rc: float,
    potential: int,
    forces: _Floats,
    energy: bool = True,
) -> tuple[float, float]: ...
def max_displacement2(pos: _Floats, ref: _Floats, box: float) -> float: ...
def kick(v: _Floats, f: _Floats, h: float) -> None: ...
def drift(x: _Floats, v: _Floats, h: float) -> None: ...
def wrap(x: _Floats, box: float) -> None: ...
def ornstein_uhlenbeck(v: _Floats, c1: float, c2: float, noise: _Floats) -> None: ...
def baoab_harmonic(
    x: _Floats, v: _Floats, k_over_m: float, dt: float, c1: float, c2: float, noise: _Floats
) -> None: ...
def euler_maruyama_harmonic(
    x: _Floats, k_mobility_dt: float, sigma: float, noise: _Floats
) -> None: ...
def gravity(
    pos: _Floats, mass: _Floats, G: float, eps: float, acc: _Floats, energy: bool = True
) -> float: ...
