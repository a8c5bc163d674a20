"""Compiled twins of the functions in ``ckernel/reference.py`` (same names, same arguments).

The drivers validate everything; these functions trust their inputs (shapes, contiguity,
positions wrapped into [0, box), finite values). Directives (boundscheck, wraparound,
cdivision, ...) are set in ``setup.py``.

Determinism: every kernel is serial and sums in an order fixed by the data, so a seed gives
bit-identical results whatever OMP_NUM_THREADS says. Both force kernels use Newton's third
law over half the pairs (a half neighbour list for Lennard-Jones, pairs j > i for gravity):
on the one-thread workers that halves the work, which beats any threaded full sum.
"""

import numpy as np

from libc.math cimport floor, sqrt

cdef enum:  # potential codes, as in reference.py
    TRUNCATED = 0
    SHIFTED = 1
    FORCE_SHIFTED = 2


cdef inline double minimum_image(double d, double box, double half) noexcept nogil:
    # Both atoms lie in [0, box), so one shift is always enough.
    if d > half:
        return d - box
    if d < -half:
        return d + box
    return d


cdef inline int wrapped(int c, int n_side) noexcept nogil:
    # The image shift of a neighbour cell at coordinate c (-1 .. n_side) of an n_side grid.
    if c < 0:
        return 1
    if c >= n_side:
        return -1
    return 0


cdef inline int image_shift(double d, double half) noexcept nogil:
    # -1, 0 or 1: the box multiple that minimum_image(d) adds.
    if d > half:
        return -1
    if d < -half:
        return 1
    return 0


# ---------------------------------------------------------------- Lennard-Jones

def lj_neighbours(const double[:, ::1] pos, double box, double rlist):
    """Half neighbour list (i < j, minimum-image distance < rlist) as CSR arrays
    (start, nbr, image): the partners of i are nbr[start[i]:start[i+1]], and image holds
    the periodic image of each pair (code (sx+1)*9 + (sy+1)*3 + (sz+1), s in {-1, 0, 1}).

    Positions must lie in [0, box). Atoms are sorted into n^3 cells of side >= rlist by a
    counting sort; each atom scans its own and the adjacent cells, or every distinct cell
    when n < 3 (small boxes). Storing the image lets the force loop skip the minimum-image
    branches until the next rebuild, so positions must not be wrapped in between (the
    driver wraps them just before each rebuild, as LAMMPS does).
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
    # Cell offsets per axis: -1, 0, 1, or the distinct ones (0, or 0 and 1) below 3 cells.
    shifts[0] = 0
    shifts[1] = 1
    shifts[2] = -1
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
        image_np = np.empty(capacity, dtype=np.int8)
        total = _fill_neighbours(pos, box, rlist, n_side, shifts, n_shifts, cell, first,
                                 by_cell, start, nbr_np, image_np, capacity)
        if total <= capacity:
            return start_np, nbr_np[:total], image_np[:total]
        capacity = total


cdef Py_ssize_t _fill_neighbours(const double[:, ::1] pos, double box, double rlist, int n_side,
                                 int* shifts, int n_shifts, const int[::1] cell,
                                 const int[::1] first, const int[::1] by_cell,
                                 Py_ssize_t[::1] start, int[::1] nbr, signed char[::1] image,
                                 Py_ssize_t capacity) noexcept nogil:
    """Write each atom's partners j > i into nbr; return the count (which may exceed capacity).

    With three or more cells per side, the periodic image of a pair follows from whether
    the neighbour cell wrapped around the box, the same for all its atoms; with fewer, two
    shifts can reach one cell, so each pair takes its minimum image instead.
    """
    cdef Py_ssize_t n = pos.shape[0]
    cdef Py_ssize_t i, k = 0
    cdef int j, idx, sx, sy, sz, cx, cy, cz, ox, oy, oz, other, ix, iy, iz
    cdef bint per_pair = n_side < 3
    cdef double half = 0.5 * box, rl2 = rlist * rlist
    cdef double xi, yi, zi, dx, dy, dz, bx, by, bz
    for i in range(n):
        start[i] = k
        cz = cell[i] % n_side
        cy = (cell[i] // n_side) % n_side
        cx = cell[i] // (n_side * n_side)
        xi = pos[i, 0]
        yi = pos[i, 1]
        zi = pos[i, 2]
        for sx in range(n_shifts):
            ox = cx + shifts[sx]
            ix = wrapped(ox, n_side)
            for sy in range(n_shifts):
                oy = cy + shifts[sy]
                iy = wrapped(oy, n_side)
                for sz in range(n_shifts):
                    oz = cz + shifts[sz]
                    iz = wrapped(oz, n_side)
                    other = (((ox + n_side) % n_side) * n_side
                             + (oy + n_side) % n_side) * n_side + (oz + n_side) % n_side
                    bx = ix * box
                    by = iy * box
                    bz = iz * box
                    # Atoms of a cell are in increasing index order: walking it backwards,
                    # the first j <= i ends the partners j > i.
                    for idx in range(first[other + 1] - 1, first[other] - 1, -1):
                        j = by_cell[idx]
                        if j <= i:
                            break
                        if per_pair:
                            ix = image_shift(xi - pos[j, 0], half)
                            iy = image_shift(yi - pos[j, 1], half)
                            iz = image_shift(zi - pos[j, 2], half)
                            bx = ix * box
                            by = iy * box
                            bz = iz * box
                        dx = xi - pos[j, 0] + bx
                        dy = yi - pos[j, 1] + by
                        dz = zi - pos[j, 2] + bz
                        if dx * dx + dy * dy + dz * dz < rl2:
                            if k < capacity:
                                nbr[k] = j
                                image[k] = <signed char>(9 * ix + 3 * iy + iz + 13)
                            k += 1
    start[n] = k
    return k


def lj_forces(const double[:, ::1] pos, double box, tuple pairs, double rc, int potential,
              double[:, ::1] forces, bint energy=True):
    """Fill ``forces``; return the pair energy U and the virial W = sum_pairs r_ij . f_ij
    (both 0.0 when ``energy`` is false: steps that are not sampled skip that work)."""
    cdef const Py_ssize_t[::1] start = pairs[0]
    cdef const int[::1] nbr = pairs[1]
    cdef const signed char[::1] image = pairs[2]
    cdef double u = 0.0, w = 0.0
    cdef double shift[27][3]
    cdef int code
    for code in range(27):
        shift[code][0] = box * (code // 9 - 1)
        shift[code][1] = box * ((code // 3) % 3 - 1)
        shift[code][2] = box * (code % 3 - 1)
    with nogil:
        _lj_forces(pos, start, nbr, image, shift, rc, potential, forces, energy, &u, &w)
    return u, w


cdef void _lj_forces(const double[:, ::1] pos, const Py_ssize_t[::1] start,
                     const int[::1] nbr, const signed char[::1] image, double[27][3] shift,
                     double rc, int potential, double[:, ::1] f, bint energy,
                     double* u_out, double* w_out) noexcept nogil:
    cdef Py_ssize_t n = pos.shape[0]
    cdef Py_ssize_t i, k
    cdef int j, c
    cdef double rc2 = rc * rc
    cdef double inv_rc6 = 1.0 / (rc2 * rc2 * rc2)
    cdef double u_rc = 0.0, f_rc = 0.0
    cdef double xi, yi, zi, dx, dy, dz, r2, r, inv_r2, inv_r6, f_over_r, u_ij
    cdef double fxi, fyi, fzi, u = 0.0, w = 0.0
    if potential != TRUNCATED:
        u_rc = 4.0 * inv_rc6 * (inv_rc6 - 1.0)
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
            c = image[k]
            dx = xi - pos[j, 0] + shift[c][0]
            dy = yi - pos[j, 1] + shift[c][1]
            dz = zi - pos[j, 2] + shift[c][2]
            r2 = dx * dx + dy * dy + dz * dz
            if r2 < rc2:
                inv_r2 = 1.0 / r2
                inv_r6 = inv_r2 * inv_r2 * inv_r2
                f_over_r = 24.0 * inv_r6 * (2.0 * inv_r6 - 1.0) * inv_r2
                if potential == FORCE_SHIFTED:
                    r = sqrt(r2)
                    f_over_r = f_over_r - f_rc / r
                if energy:
                    u_ij = 4.0 * inv_r6 * (inv_r6 - 1.0) - u_rc
                    if potential == FORCE_SHIFTED:
                        u_ij = u_ij + (r - rc) * f_rc
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
    # Coordinates as three contiguous arrays: the inner loops then stream memory.
    cdef const double[::1] xs = np.ascontiguousarray(pos[:, 0])
    cdef const double[::1] ys = np.ascontiguousarray(pos[:, 1])
    cdef const double[::1] zs = np.ascontiguousarray(pos[:, 2])
    cdef double[::1] ax = np.zeros(n)
    cdef double[::1] ay = np.zeros(n)
    cdef double[::1] az = np.zeros(n)
    cdef double potential = 0.0
    with nogil:
        for i in range(n):
            potential += _gravity_row(i, xs, ys, zs, mass, eps * eps, ax, ay, az)
        for i in range(n):
            acc[i, 0] = G * ax[i]
            acc[i, 1] = G * ay[i]
            acc[i, 2] = G * az[i]
    return -G * potential


cdef enum:
    GRAVITY_BLOCK = 64  # partners per block: small enough for the stack and L1


cdef double _gravity_row(Py_ssize_t i, const double[::1] xs, const double[::1] ys,
                         const double[::1] zs, const double[::1] mass, double eps2,
                         double[::1] ax, double[::1] ay, double[::1] az) noexcept nogil:
    """Pairs (i, j > i): add to i's and j's accelerations (without G); return
    m_i sum_j m_j / r_ij.

    Each block of partners takes three passes: separations and 1/r (vectorised, sqrt
    included, with -fno-math-errno), the reaction on every j (vectorised: the j are
    distinct), then i's own sums in index order.
    """
    cdef Py_ssize_t l, m, j0 = i + 1, n = xs.shape[0]
    cdef double xi = xs[i], yi = ys[i], zi = zs[i], mi = mass[i]
    cdef double dx[GRAVITY_BLOCK]
    cdef double dy[GRAVITY_BLOCK]
    cdef double dz[GRAVITY_BLOCK]
    cdef double inv_r[GRAVITY_BLOCK]
    cdef double inv_r3[GRAVITY_BLOCK]
    cdef double sx = 0.0, sy = 0.0, sz = 0.0, p = 0.0
    while j0 < n:
        m = min(<Py_ssize_t>GRAVITY_BLOCK, n - j0)
        for l in range(m):
            dx[l] = xs[j0 + l] - xi
            dy[l] = ys[j0 + l] - yi
            dz[l] = zs[j0 + l] - zi
            inv_r[l] = 1.0 / sqrt(dx[l] * dx[l] + dy[l] * dy[l] + dz[l] * dz[l] + eps2)
            inv_r3[l] = inv_r[l] * inv_r[l] * inv_r[l]
        for l in range(m):
            ax[j0 + l] -= mi * inv_r3[l] * dx[l]
            ay[j0 + l] -= mi * inv_r3[l] * dy[l]
            az[j0 + l] -= mi * inv_r3[l] * dz[l]
        for l in range(m):
            sx += mass[j0 + l] * inv_r3[l] * dx[l]
            sy += mass[j0 + l] * inv_r3[l] * dy[l]
            sz += mass[j0 + l] * inv_r3[l] * dz[l]
            p += mass[j0 + l] * inv_r[l]
        j0 += m
    ax[i] += sx
    ay[i] += sy
    az[i] += sz
    return mi * p
