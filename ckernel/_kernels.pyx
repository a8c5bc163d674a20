"""Compiled twins of the functions in ``ckernel/reference.py`` (same names, same arguments).

The drivers validate everything; these functions trust their inputs (shapes, contiguity,
positions wrapped into [0, box), finite values). Directives (boundscheck, wraparound,
cdivision, ...) are set in ``setup.py``.

Determinism: every sum is taken in an order fixed by the data, never by the thread count.
The Lennard-Jones force loop runs serially over a half neighbour list (Newton's third law
halves the work, which beats a threaded full list on the one-thread workers); the N-body
force is a full O(N^2) sum per body, so its rows run in parallel with OpenMP while each row
is summed in index order and the energy is reduced serially afterwards.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport floor, sqrt

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int ckernel_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int ckernel_max_threads(void) { return 1; }
    #endif
    """
    int ckernel_max_threads() nogil

cdef enum:  # potential codes, as in reference.py
    TRUNCATED = 0
    SHIFTED = 1
    FORCE_SHIFTED = 2


def max_threads():
    """OpenMP threads a parallel region would use (1 when built without OpenMP)."""
    return ckernel_max_threads()


cdef inline double minimum_image(double d, double box, double half) noexcept nogil:
    # Both atoms lie in [0, box), so one shift is always enough.
    if d > half:
        return d - box
    if d < -half:
        return d + box
    return d


# ---------------------------------------------------------------- Lennard-Jones

def lj_neighbours(const double[:, ::1] pos, double box, double rlist):
    """Half neighbour list (i < j, minimum-image distance < rlist) as CSR arrays (start, nbr).

    Atoms are sorted into n^3 cells of side >= rlist by a counting sort; each atom scans its
    own and the adjacent cells, or every distinct cell when n < 3 (small boxes).
    """
    cdef Py_ssize_t n = pos.shape[0]
    cdef int n_side = max(1, <int>(box / rlist))
    cdef int n_cells = n_side * n_side * n_side
    cell_np = np.empty(n, dtype=np.intc)
    first_np = np.zeros(n_cells + 1, dtype=np.intc)
    sorted_np = np.empty(n, dtype=np.intc)
    cdef int[::1] cell = cell_np
    cdef int[::1] first = first_np
    cdef int[::1] by_cell = sorted_np
    cdef int[::1] fill = np.zeros(n_cells, dtype=np.intc)
    cdef int shifts[3]
    cdef int n_shifts = 3 if n_side >= 3 else n_side
    cdef Py_ssize_t i, k
    cdef int a, c
    cdef double scale = n_side / box
    shifts[0] = 0
    shifts[1] = 1
    shifts[2] = n_side - 1  # -1 modulo n_side
    with nogil:
        for i in range(n):
            c = 0
            for a in range(3):
                k = <Py_ssize_t>(pos[i, a] * scale)
                # Clamped so that no position (exactly box after rounding, or garbage from
                # a blown-up run) can ever index outside the cell arrays.
                if k >= n_side:
                    k = n_side - 1
                elif k < 0:
                    k = 0
                c = c * n_side + <int>k
            cell[i] = c
            first[c + 1] += 1
        for c in range(n_cells):
            first[c + 1] += first[c]
        for i in range(n):
            c = cell[i]
            by_cell[first[c] + fill[c]] = <int>i
            fill[c] += 1

    start_np = np.empty(n + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] start = start_np
    # A dense liquid has about rho * 4/3 pi rlist^3 / 2 partners per atom; guess 25 % more
    # and redo the pass once with the exact size if that was too few.
    cdef Py_ssize_t capacity = <Py_ssize_t>(1.25 * n * (n / box**3) * 2.1 * rlist**3) + 16 * n
    cdef Py_ssize_t total
    while True:
        nbr_np = np.empty(capacity, dtype=np.intc)
        total = _fill_neighbours(pos, box, rlist, n_side, shifts, n_shifts, cell, first,
                                 by_cell, start, nbr_np, capacity)
        if total <= capacity:
            return start_np, nbr_np[:total]
        capacity = total


cdef Py_ssize_t _fill_neighbours(const double[:, ::1] pos, double box, double rlist, int n_side,
                                 int* shifts, int n_shifts, const int[::1] cell,
                                 const int[::1] first, const int[::1] by_cell,
                                 Py_ssize_t[::1] start, int[::1] nbr,
                                 Py_ssize_t capacity) noexcept nogil:
    """Write each atom's partners j > i into nbr; return the count (which may exceed capacity)."""
    cdef Py_ssize_t n = pos.shape[0]
    cdef Py_ssize_t i, k = 0
    cdef int j, idx, sx, sy, sz, cx, cy, cz, other
    cdef double half = 0.5 * box, rl2 = rlist * rlist
    cdef double xi, yi, zi, dx, dy, dz
    for i in range(n):
        start[i] = k
        cz = cell[i] % n_side
        cy = (cell[i] // n_side) % n_side
        cx = cell[i] // (n_side * n_side)
        xi = pos[i, 0]
        yi = pos[i, 1]
        zi = pos[i, 2]
        for sx in range(n_shifts):
            for sy in range(n_shifts):
                for sz in range(n_shifts):
                    other = (((cx + shifts[sx]) % n_side) * n_side
                             + (cy + shifts[sy]) % n_side) * n_side + (cz + shifts[sz]) % n_side
                    for idx in range(first[other], first[other + 1]):
                        j = by_cell[idx]
                        if j <= i:
                            continue
                        dx = minimum_image(pos[j, 0] - xi, box, half)
                        dy = minimum_image(pos[j, 1] - yi, box, half)
                        dz = minimum_image(pos[j, 2] - zi, box, half)
                        if dx * dx + dy * dy + dz * dz < rl2:
                            if k < capacity:
                                nbr[k] = j
                            k += 1
    start[n] = k
    return k


def lj_forces(const double[:, ::1] pos, double box, tuple pairs, double rc, int potential,
              double[:, ::1] forces):
    """Fill ``forces``; return the pair energy U and the virial W = sum_pairs r_ij . f_ij."""
    cdef const Py_ssize_t[::1] start = pairs[0]
    cdef const int[::1] nbr = pairs[1]
    cdef double u = 0.0, w = 0.0
    with nogil:
        _lj_forces(pos, box, start, nbr, rc, potential, forces, &u, &w)
    return u, w


cdef void _lj_forces(const double[:, ::1] pos, double box, const Py_ssize_t[::1] start,
                     const int[::1] nbr, double rc, int potential, double[:, ::1] f,
                     double* u_out, double* w_out) noexcept nogil:
    cdef Py_ssize_t n = pos.shape[0]
    cdef Py_ssize_t i, k
    cdef int j
    cdef double half = 0.5 * box, rc2 = rc * rc
    cdef double inv_rc6 = 1.0 / (rc2 * rc2 * rc2)
    cdef double shift = 0.0, f_rc = 0.0
    cdef double xi, yi, zi, dx, dy, dz, r2, r, inv_r2, inv_r6, f_over_r, u_ij
    cdef double fxi, fyi, fzi, u = 0.0, w = 0.0
    if potential != TRUNCATED:
        shift = 4.0 * inv_rc6 * (inv_rc6 - 1.0)
    if potential == FORCE_SHIFTED:
        f_rc = 24.0 * inv_rc6 * (2.0 * inv_rc6 - 1.0) / rc
    for i in range(n):
        f[i, 0] = 0.0
        f[i, 1] = 0.0
        f[i, 2] = 0.0
    for i in range(n):
        xi = pos[i, 0]
        yi = pos[i, 1]
        zi = pos[i, 2]
        fxi = 0.0
        fyi = 0.0
        fzi = 0.0
        for k in range(start[i], start[i + 1]):
            j = nbr[k]
            dx = minimum_image(xi - pos[j, 0], box, half)
            dy = minimum_image(yi - pos[j, 1], box, half)
            dz = minimum_image(zi - pos[j, 2], box, half)
            r2 = dx * dx + dy * dy + dz * dz
            if r2 < rc2:
                inv_r2 = 1.0 / r2
                inv_r6 = inv_r2 * inv_r2 * inv_r2
                u_ij = 4.0 * inv_r6 * (inv_r6 - 1.0) - shift
                f_over_r = 24.0 * inv_r6 * (2.0 * inv_r6 - 1.0) * inv_r2
                if potential == FORCE_SHIFTED:
                    r = sqrt(r2)
                    u_ij = u_ij + (r - rc) * f_rc
                    f_over_r = f_over_r - f_rc / r
                u += u_ij
                w += f_over_r * r2
                fxi += f_over_r * dx
                fyi += f_over_r * dy
                fzi += f_over_r * dz
                f[j, 0] -= f_over_r * dx
                f[j, 1] -= f_over_r * dy
                f[j, 2] -= f_over_r * dz
        f[i, 0] += fxi
        f[i, 1] += fyi
        f[i, 2] += fzi
    u_out[0] = u
    w_out[0] = w


def max_displacement2(const double[:, ::1] pos, const double[:, ::1] ref, double box):
    """Largest squared minimum-image displacement of any atom since ``ref``."""
    cdef Py_ssize_t i
    cdef double half = 0.5 * box, dx, dy, dz, d2, largest = 0.0
    with nogil:
        for i in range(pos.shape[0]):
            dx = minimum_image(pos[i, 0] - ref[i, 0], box, half)
            dy = minimum_image(pos[i, 1] - ref[i, 1], box, half)
            dz = minimum_image(pos[i, 2] - ref[i, 2], box, half)
            d2 = dx * dx + dy * dy + dz * dz
            if d2 != d2:  # NaN: report it, as numpy's max does
                largest = d2
                break
            if d2 > largest:
                largest = d2
    return largest


# ---------------------------------------------------------------- integrator pieces

def kick(double[:, ::1] v, const double[:, ::1] f, double h):
    """v <- v + h f."""
    cdef Py_ssize_t i
    cdef int a
    with nogil:
        for i in range(v.shape[0]):
            for a in range(3):
                v[i, a] = v[i, a] + h * f[i, a]


def drift(double[:, ::1] x, const double[:, ::1] v, double h):
    """x <- x + h v."""
    kick(x, v, h)


def wrap(double[:, ::1] x, double box):
    """Put every coordinate back into [0, box)."""
    cdef Py_ssize_t i
    cdef int a
    with nogil:
        for i in range(x.shape[0]):
            for a in range(3):
                x[i, a] = x[i, a] - box * floor(x[i, a] / box)


def ornstein_uhlenbeck(double[:, ::1] v, double c1, double c2, const double[:, ::1] noise):
    """The exact O step of BAOAB: v <- c1 v + c2 xi."""
    cdef Py_ssize_t i
    cdef int a
    with nogil:
        for i in range(v.shape[0]):
            for a in range(3):
                v[i, a] = v[i, a] * c1 + c2 * noise[i, a]


# ---------------------------------------------------------------- Brownian particles

def baoab_harmonic(double[:, ::1] x, double[:, ::1] v, double k_over_m, double dt, double c1,
                   double c2, const double[:, ::1] noise):
    """One BAOAB step for independent particles in the trap F = -k x (k = 0: free)."""
    cdef Py_ssize_t i
    cdef int a
    cdef double xa, va, half_dt = 0.5 * dt, half_kick = 0.5 * dt * k_over_m
    with nogil:
        for i in range(x.shape[0]):
            for a in range(3):
                xa = x[i, a]
                va = v[i, a] - half_kick * xa
                xa = xa + half_dt * va
                va = va * c1 + c2 * noise[i, a]
                xa = xa + half_dt * va
                v[i, a] = va - half_kick * xa
                x[i, a] = xa


def euler_maruyama_harmonic(double[:, ::1] x, double k_mobility_dt, double sigma,
                            const double[:, ::1] noise):
    """Overdamped step x <- x - k mu dt x + sigma xi."""
    cdef Py_ssize_t i
    cdef int a
    with nogil:
        for i in range(x.shape[0]):
            for a in range(3):
                x[i, a] = (x[i, a] - k_mobility_dt * x[i, a]) + sigma * noise[i, a]


# ---------------------------------------------------------------- gravity

def gravity(const double[:, ::1] pos, const double[::1] mass, double G, double eps,
            double[:, ::1] acc):
    """Fill ``acc`` with the softened accelerations; return the potential energy U."""
    cdef Py_ssize_t n = pos.shape[0]
    cdef Py_ssize_t i
    # Coordinates as three contiguous arrays: the inner loop then streams memory.
    cdef const double[::1] xs = np.ascontiguousarray(pos[:, 0])
    cdef const double[::1] ys = np.ascontiguousarray(pos[:, 1])
    cdef const double[::1] zs = np.ascontiguousarray(pos[:, 2])
    cdef double[::1] phi = np.empty(n)
    cdef double potential = 0.0
    with nogil:
        for i in prange(n, schedule="static"):
            _gravity_row(i, xs, ys, zs, mass, eps * eps, G, acc, phi)
        for i in range(n):
            potential -= 0.5 * G * mass[i] * phi[i]
    return potential


cdef void _gravity_row(Py_ssize_t i, const double[::1] xs, const double[::1] ys,
                       const double[::1] zs, const double[::1] mass, double eps2, double G,
                       double[:, ::1] acc, double[::1] phi) noexcept nogil:
    """Body i's acceleration and potential sum_j m_j / r_ij, summed over j in index order."""
    cdef Py_ssize_t j, side
    cdef Py_ssize_t lo[2]
    cdef Py_ssize_t hi[2]
    cdef double xi = xs[i], yi = ys[i], zi = zs[i]
    cdef double ax = 0.0, ay = 0.0, az = 0.0, p = 0.0
    cdef double dx, dy, dz, inv_r, m_inv_r3
    # Two ranges skip the self term without a branch in the loop.
    lo[0], hi[0], lo[1], hi[1] = 0, i, i + 1, xs.shape[0]
    for side in range(2):
        for j in range(lo[side], hi[side]):
            dx = xs[j] - xi
            dy = ys[j] - yi
            dz = zs[j] - zi
            inv_r = 1.0 / sqrt(dx * dx + dy * dy + dz * dz + eps2)
            m_inv_r3 = mass[j] * inv_r * inv_r * inv_r
            ax += m_inv_r3 * dx
            ay += m_inv_r3 * dy
            az += m_inv_r3 * dz
            p += mass[j] * inv_r
    acc[i, 0] = G * ax
    acc[i, 1] = G * ay
    acc[i, 2] = G * az
    phi[i] = p
