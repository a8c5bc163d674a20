"""Plain-numpy reference kernels: the readable twin of ``_kernels.pyx``.

Each function here has a compiled twin with the same name and arguments in
``ckernel._kernels``; the drivers (``lj.py``, ``nbody.py``, ``brownian.py``) call whichever
backend was chosen. The algorithms are deliberately different where bugs hide (the
reference builds a half pair list with vectorised cell bookkeeping and accumulates forces
with ``bincount``; the compiled kernel walks cells and atoms in loops), so that agreement
tests mean something. Inputs are trusted: the drivers validate them.

Reduced units throughout: epsilon = sigma = 1 and unit mass for Lennard-Jones.
"""

from __future__ import annotations

import itertools

import numpy as np

TRUNCATED, SHIFTED, FORCE_SHIFTED = 0, 1, 2
"""Potential codes shared with the compiled kernels."""

_NBODY_BLOCK = 256
"""Rows of the N x N broadcast evaluated at once, so memory stays O(block * N)."""


# ---------------------------------------------------------------- Lennard-Jones

def lj_pair(r2: np.ndarray, rc: float, potential: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair energy u and f/r (force magnitude over distance) for squared distances r2 < rc^2.

    u(r) = 4 (r^-12 - r^-6), f(r) = -u'(r) = 24 (2 r^-12 - r^-6) / r.
    shifted: u - u(rc); force_shifted: u - u(rc) - (r - rc) u'(rc), f - f(rc).
    """
    inv_r6 = 1.0 / r2**3
    u = 4.0 * inv_r6 * (inv_r6 - 1.0)
    f_over_r = 24.0 * inv_r6 * (2.0 * inv_r6 - 1.0) / r2
    if potential != TRUNCATED:
        inv_rc6 = rc**-6
        u = u - 4.0 * inv_rc6 * (inv_rc6 - 1.0)
    if potential == FORCE_SHIFTED:
        f_rc = 24.0 * inv_rc6 * (2.0 * inv_rc6 - 1.0) / rc
        r = np.sqrt(r2)
        u = u + (r - rc) * f_rc
        f_over_r = f_over_r - f_rc / r
    return u, f_over_r


def lj_neighbours(pos: np.ndarray, box: float, rlist: float) -> tuple[np.ndarray, np.ndarray]:
    """Half neighbour list (i < j, minimum-image distance < rlist) from a cell list.

    Atoms are binned into n^3 cells of side >= rlist; each atom looks at its own and the
    adjacent cells. With fewer than three cells per side the adjacent cells repeat, so
    the set of distinct neighbour-cell shifts is used (n = 1 or 2 then covers all pairs).
    """
    n_atoms = len(pos)
    n_side = max(1, int(box / rlist))
    cell3 = np.floor(pos / box * n_side).astype(np.int64) % n_side
    cell = (cell3[:, 0] * n_side + cell3[:, 1]) * n_side + cell3[:, 2]
    order = np.argsort(cell, kind="stable")
    counts = np.bincount(cell, minlength=n_side**3)
    first = np.cumsum(counts) - counts
    shifts = sorted({s % n_side for s in (-1, 0, 1)})
    atoms = np.arange(n_atoms)
    pairs_i, pairs_j = [], []
    for shift in itertools.product(shifts, repeat=3):
        other3 = (cell3 + shift) % n_side
        other = (other3[:, 0] * n_side + other3[:, 1]) * n_side + other3[:, 2]
        take = counts[other]
        i = np.repeat(atoms, take)
        rank = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        j = order[np.repeat(first[other], take) + rank]
        keep = i < j
        i, j = i[keep], j[keep]
        d = pos[j] - pos[i]
        d -= box * np.round(d / box)
        close = np.einsum("ij,ij->i", d, d) < rlist * rlist
        pairs_i.append(i[close])
        pairs_j.append(j[close])
    return np.concatenate(pairs_i), np.concatenate(pairs_j)


def lj_forces(pos: np.ndarray, box: float, pairs: tuple[np.ndarray, ...], rc: float,
              potential: int, forces: np.ndarray, energy: bool = True) -> tuple[float, float]:
    """Fill ``forces``; return the pair energy U and the virial W = sum_pairs r_ij . f_ij.

    ``pairs`` is this module's :func:`lj_neighbours` list (i, j); the type is the backends'
    common opaque one (``ckernel._backend.NeighbourList``).

    ``energy`` is accepted for symmetry with the compiled kernel, which skips U and W when
    it is false; here they cost little next to the gathers and are always computed.
    """
    i, j = pairs
    d = pos[i] - pos[j]
    d -= box * np.round(d / box)
    r2 = np.einsum("ij,ij->i", d, d)
    inside = r2 < rc * rc
    i, j, d, r2 = i[inside], j[inside], d[inside], r2[inside]
    with np.errstate(all="ignore"):  # overlapping atoms give inf; the drivers report it
        u, f_over_r = lj_pair(r2, rc, potential)
        f_ij = f_over_r[:, None] * d  # force on i from j
        n_atoms = len(pos)
        for axis in range(3):
            forces[:, axis] = (np.bincount(i, f_ij[:, axis], n_atoms)
                               - np.bincount(j, f_ij[:, axis], n_atoms))
        return float(u.sum()), float((f_over_r * r2).sum())


def max_displacement2(pos: np.ndarray, ref: np.ndarray, box: float) -> float:
    """Largest squared minimum-image displacement of any atom since ``ref``."""
    d = pos - ref
    d -= box * np.round(d / box)
    return float(np.einsum("ij,ij->i", d, d).max())


# ---------------------------------------------------------------- integrator pieces

def kick(v: np.ndarray, f: np.ndarray, h: float) -> None:
    """v <- v + h f (h already holds dt/m or dt/2m)."""
    v += h * f


def drift(x: np.ndarray, v: np.ndarray, h: float) -> None:
    """x <- x + h v."""
    x += h * v


def wrap(x: np.ndarray, box: float) -> None:
    """Put every coordinate back into [0, box)."""
    x -= box * np.floor(x / box)


def ornstein_uhlenbeck(v: np.ndarray, c1: float, c2: float, noise: np.ndarray) -> None:
    """Exact O step of BAOAB: v <- c1 v + c2 xi; c1 = exp(-gamma dt), c2 = sqrt((1-c1^2) kT/m)."""
    v *= c1
    v += c2 * noise


# ---------------------------------------------------------------- Brownian particles

def baoab_harmonic(x: np.ndarray, v: np.ndarray, k_over_m: float, dt: float, c1: float,
                   c2: float, noise: np.ndarray) -> None:
    """One BAOAB step for independent particles in the trap F = -k x (k = 0: free)."""
    v -= 0.5 * dt * k_over_m * x
    x += 0.5 * dt * v
    v *= c1
    v += c2 * noise
    x += 0.5 * dt * v
    v -= 0.5 * dt * k_over_m * x


def euler_maruyama_harmonic(x: np.ndarray, k_mobility_dt: float, sigma: float,
                            noise: np.ndarray) -> None:
    """Overdamped step x <- x - k mu dt x + sqrt(2 kT mu dt) xi, with mobility mu = 1/(m gamma)."""
    x -= k_mobility_dt * x
    x += sigma * noise


# ---------------------------------------------------------------- gravity

def gravity(pos: np.ndarray, mass: np.ndarray, G: float, eps: float,
            acc: np.ndarray, energy: bool = True) -> float:
    """Fill ``acc`` with a_i = G sum_j m_j (r_j - r_i) / (|r_ij|^2 + eps^2)^(3/2); return U.

    U = -G sum_{i<j} m_i m_j / sqrt(|r_ij|^2 + eps^2). The N x N broadcast is evaluated in
    blocks of rows to bound memory; the self term is removed by zeroing the diagonal.
    ``energy`` is accepted for symmetry with the compiled kernel, which skips U (and returns
    0.0) when it is false; here U costs one matrix-vector product and is always returned.
    """
    n = len(pos)
    potential = 0.0
    for start in range(0, n, _NBODY_BLOCK):
        rows = slice(start, min(start + _NBODY_BLOCK, n))
        d = pos[None, :, :] - pos[rows, None, :]
        r2 = np.einsum("ijk,ijk->ij", d, d) + eps * eps
        with np.errstate(divide="ignore"):
            inv_r = 1.0 / np.sqrt(r2)
        inv_r[np.arange(rows.stop - start), np.arange(start, rows.stop)] = 0.0
        acc[rows] = G * np.einsum("ij,ijk->ik", mass[None, :] * inv_r**3, d)
        potential -= 0.5 * G * float(mass[rows] @ (inv_r @ mass))
    return potential
