"""Compiled twins of the functions in ``ckernel/reference.py`` (same names, same arguments).

The drivers validate everything; these functions trust their inputs (shapes, contiguity,
positions wrapped into [0, box), finite values). Directives (boundscheck, wraparound,
cdivision, ...) are set in ``setup.py``.

The pair loops of Lennard-Jones and gravity are C (``_simd.c``), compiled once per
instruction set (portable, AVX2, AVX-512) and chosen at run time: :func:`simd_variant`
names the one in use, :func:`use_simd` picks another. All variants give bit-identical
results (see ``_simd.c``).

Determinism: every kernel is serial and sums in an order fixed by the data, so a seed gives
bit-identical results whatever OMP_NUM_THREADS says and whichever SIMD variant runs. Both
force kernels use Newton's third law over half the pairs (a half neighbour list for
Lennard-Jones, pairs j > i for gravity): on the one-thread workers that halves the work,
which beats any threaded full sum.
"""

import numpy as np

from libc.math cimport floor
from libc.stdint cimport int8_t, int32_t


cdef extern from "_simd.h" nogil:
    enum:
        CK_PORTABLE
        CK_AVX2
        CK_AVX512
        CK_N_VARIANTS
        CK_PAD
    ctypedef struct ck_lj_list:
        Py_ssize_t n_ext
        const Py_ssize_t *start
        const int32_t *nbr
        const int32_t *id
        const int8_t *shift
    int ck_variant_available(int variant)
    const char *ck_variant_name(int variant)
    Py_ssize_t ck_lj_pairs(int variant, Py_ssize_t n_ext, const double *xs, const double *ys,
                           const double *zs, const int32_t *id, const int32_t *cell_first,
                           int grid, int reach, int n_side, const int *columns, int n_columns,
                           int own_reach, double rlist, Py_ssize_t capacity, int32_t *nbr,
                           Py_ssize_t *start)
    void ck_lj_forces(int variant, const ck_lj_list *list, const double *pos, Py_ssize_t n,
                      double box, double rc, int potential, int energy, double *work,
                      double *forces, double *u, double *w)
    double ck_gravity(int variant, Py_ssize_t n, const double *xs, const double *ys,
                      const double *zs, const double *mass, double eps2, int energy,
                      double *ax, double *ay, double *az)


cdef inline double minimum_image(double d, double box, double half) noexcept nogil:
    # Both atoms lie in [0, box), so one shift is always enough.
    if d > half:
        return d - box
    if d < -half:
        return d + box
    return d


# ---------------------------------------------------------------- SIMD variants

SIMD_VARIANTS = tuple(ck_variant_name(_v).decode() for _v in range(CK_N_VARIANTS))
"""Every variant name, from the most portable to the widest."""

cdef int _variant = CK_PORTABLE
for _v in range(CK_N_VARIANTS):
    if ck_variant_available(_v):
        _variant = _v


def simd_available():
    """The variants this CPU (and this build) can run, most portable first."""
    cdef int v
    return tuple([SIMD_VARIANTS[v] for v in range(CK_N_VARIANTS) if ck_variant_available(v)])


def simd_variant():
    """The name of the variant the Lennard-Jones and gravity loops use now."""
    return SIMD_VARIANTS[_variant]


def use_simd(str name):
    """Use variant ``name`` ("auto": the widest available) from now on; return its name.
    ValueError if this CPU or build cannot run it."""
    global _variant
    available = simd_available()
    if name == "auto":
        name = available[len(available) - 1]
    if name not in available:
        raise ValueError(f"SIMD variant {name!r} is not available here (available: "
                         f"{', '.join(available)}; known: {', '.join(SIMD_VARIANTS)})")
    _variant = SIMD_VARIANTS.index(name)
    return name


# ---------------------------------------------------------------- Lennard-Jones

def lj_neighbours(const double[:, ::1] pos, double box, double rlist):
    """Half neighbour list of the pairs closer than rlist, over the atoms and their periodic
    images, as an opaque tuple for :func:`lj_forces`.

    Positions must lie in [0, box). The box is cut into n^3 cells of side >= rlist / 2
    (n >= 1, and n^3 at most about 2 N) and surrounded by `reach` layers of image cells, so that every pair within
    rlist is at most `reach` cells apart on each axis. The list holds "extended" entries:
    each atom once, plus a copy ("ghost") of every atom whose image falls in an image cell,
    all sorted by cell (neighbouring atoms are then close in memory). Each atom's row holds
    its partners in the upper half of the stencil (LAMMPS's half/bin/newton scheme), atoms
    or ghosts, so each pair at each of its images is listed once; ghosts have empty rows
    and hand their forces back to their atoms. The image of every entry is stored, so the
    force loop needs no minimum-image test and positions must not be wrapped until the next
    rebuild (the driver wraps them just before each rebuild, as LAMMPS does).
    """
    cdef Py_ssize_t n = pos.shape[0]
    # A dilute system would get far more cells than atoms (two atoms in a box of 1,000:
    # 700^3 cells); larger cells stay correct (the reach adapts), so at most about 2 N.
    cdef int n_side = max(1, min(<int>(2.0 * box / rlist), <int>((2.0 * n) ** (1.0 / 3.0))))
    cdef double side = box / n_side
    cdef int reach = <int>(rlist / side) + 1
    cdef int grid = n_side + 2 * reach
    # Image shifts per axis reach ceil(reach / n_side) boxes (one, unless the box is tiny).
    cdef int max_shift = (reach + n_side - 1) // n_side
    cdef Py_ssize_t n_cells = <Py_ssize_t>grid * grid * grid
    cdef int[:, ::1] home = np.empty((n, 3), dtype=np.intc)
    cdef int32_t[::1] first = np.zeros(n_cells + 1, dtype=np.int32)
    cdef Py_ssize_t i, k, c, e, n_ext
    cdef int a, g, sx, sy, sz, lo, hi
    cdef double scale = n_side / box
    # Per atom and axis, the shifts whose image cell lies on the grid: lo .. hi.
    cdef int[:, :, ::1] shifts = np.empty((n, 3, 2), dtype=np.intc)
    with nogil:
        for i in range(n):
            for a in range(3):
                k = <Py_ssize_t>(pos[i, a] * scale)
                # Clamped so that no position (exactly box after rounding, or garbage from
                # a blown-up run) can ever index outside the grid.
                if k >= n_side:
                    k = n_side - 1
                elif k < 0:
                    k = 0
                home[i, a] = <int>k + reach
                lo = -max_shift
                while home[i, a] + lo * n_side < 0:
                    lo += 1
                hi = max_shift
                while home[i, a] + hi * n_side >= grid:
                    hi -= 1
                shifts[i, a, 0] = lo
                shifts[i, a, 1] = hi
            for sx in range(shifts[i, 0, 0], shifts[i, 0, 1] + 1):
                for sy in range(shifts[i, 1, 0], shifts[i, 1, 1] + 1):
                    for sz in range(shifts[i, 2, 0], shifts[i, 2, 1] + 1):
                        c = _cell(home, i, sx, sy, sz, n_side, grid)
                        first[c + 1] += 1
        for c in range(n_cells):
            first[c + 1] += first[c]
    n_ext = first[n_cells]

    ids_np = np.empty(n_ext, dtype=np.int32)
    shift_np = np.empty((n_ext, 3), dtype=np.int8)
    ext_np = np.empty((3, n_ext + CK_PAD))
    cdef int32_t[::1] ids = ids_np
    cdef int8_t[:, ::1] shift = shift_np
    cdef double[:, ::1] ext = ext_np
    cdef int32_t[::1] fill = first[:n_cells].copy()
    with nogil:
        # Atom by atom into a counting sort: within a cell, entries keep atom order.
        for i in range(n):
            for sx in range(shifts[i, 0, 0], shifts[i, 0, 1] + 1):
                for sy in range(shifts[i, 1, 0], shifts[i, 1, 1] + 1):
                    for sz in range(shifts[i, 2, 0], shifts[i, 2, 1] + 1):
                        c = _cell(home, i, sx, sy, sz, n_side, grid)
                        e = fill[c]
                        fill[c] += 1
                        ids[e] = <int32_t>i
                        shift[e, 0] = <int8_t>sx
                        shift[e, 1] = <int8_t>sy
                        shift[e, 2] = <int8_t>sz
                        ext[0, e] = pos[i, 0] + box * sx
                        ext[1, e] = pos[i, 1] + box * sy
                        ext[2, e] = pos[i, 2] + box * sz

    columns_np, own = _stencil(reach, side, rlist)
    cdef int[::1] columns = columns_np
    cdef int own_reach = own
    start_np = np.empty(n_ext + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] start = start_np
    # A dense liquid has about rho * (2/3) pi rlist^3 partners per atom; guess 20 % more
    # and redo the pass once with the exact size if that was too few.
    cdef Py_ssize_t capacity = <Py_ssize_t>(1.2 * n * (n / box**3) * 2.1 * rlist**3) + 16 * n
    cdef Py_ssize_t total
    cdef int32_t[::1] nbr
    while True:
        nbr_np = np.empty(capacity + CK_PAD, dtype=np.int32)
        nbr = nbr_np
        with nogil:
            total = ck_lj_pairs(_variant, n_ext, &ext[0, 0], &ext[1, 0], &ext[2, 0], &ids[0],
                                &first[0], grid, reach, n_side, &columns[0],
                                <int>(columns.shape[0] // 3), own_reach, rlist, capacity,
                                &nbr[0], &start[0])
        if total <= capacity:
            break
        capacity = total
    # The force loop reads (and masks) up to CK_PAD entries past a row: make them valid.
    nbr_np[total:total + CK_PAD] = 0
    work = np.empty(6 * n_ext)
    return start_np, nbr_np[:total + CK_PAD].copy(), ids_np, shift_np, work


cdef inline Py_ssize_t _cell(int[:, ::1] home, Py_ssize_t i, int sx, int sy, int sz,
                             int n_side, int grid) noexcept nogil:
    return ((<Py_ssize_t>(home[i, 0] + sx * n_side) * grid + home[i, 1] + sy * n_side) * grid
            + home[i, 2] + sz * n_side)


def _stencil(int reach, double side, double rlist):
    """The upper half of the cell stencil as columns (ox, oy, rz): the cells (ox, oy, -rz ..
    rz) from a cell, for ox > 0 or ox = 0 < oy; and rz of the column (0, 0), which is
    scanned from the atom itself up. Cells whose nearest points are rlist or more apart
    are left out (with a margin for round-off)."""
    limit = rlist * rlist * (1.0 + 1e-9)

    def gap2(ox, oy, oz):
        return sum((max(abs(o) - 1, 0) * side) ** 2 for o in (ox, oy, oz))

    def rz_of(ox, oy):
        return max(oz for oz in range(reach + 1) if gap2(ox, oy, oz) < limit)

    columns = [(ox, oy, rz_of(ox, oy))
               for ox in range(0, reach + 1) for oy in range(-reach, reach + 1)
               if (ox > 0 or oy > 0) and gap2(ox, oy, 0) < limit]
    return np.array(columns, dtype=np.intc).reshape(-1), rz_of(0, 0)


def lj_forces(const double[:, ::1] pos, double box, tuple pairs, double rc, int potential,
              double[:, ::1] forces, bint energy=True):
    """Fill ``forces``; return the pair energy U and the virial W = sum_pairs r_ij . f_ij
    (both 0.0 when ``energy`` is false: steps that are not sampled skip that work)."""
    cdef const Py_ssize_t[::1] start = pairs[0]
    cdef const int32_t[::1] nbr = pairs[1]
    cdef const int32_t[::1] ids = pairs[2]
    cdef const int8_t[:, ::1] shift = pairs[3]
    cdef double[::1] work = pairs[4]
    cdef ck_lj_list lst
    cdef double u = 0.0, w = 0.0
    lst.n_ext = ids.shape[0]
    lst.start = &start[0]
    lst.nbr = &nbr[0]
    lst.id = &ids[0]
    lst.shift = &shift[0, 0]
    with nogil:
        ck_lj_forces(_variant, &lst, &pos[0, 0], pos.shape[0], box, rc, potential, energy,
                     &work[0], &forces[0, 0], &u, &w)
    return u, w


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
            double[:, ::1] acc, bint energy=True):
    """Fill ``acc`` with the softened accelerations; return the potential energy U (0.0 when
    ``energy`` is false: steps that are not sampled skip that work)."""
    cdef Py_ssize_t n = pos.shape[0]
    cdef Py_ssize_t i
    # Coordinates as three contiguous arrays (the inner loops then stream memory), padded
    # with CK_PAD zero-mass entries that the blocked loop reads and masks.
    coords = np.zeros((4, n + CK_PAD))
    coords[0, :n] = pos[:, 0]
    coords[1, :n] = pos[:, 1]
    coords[2, :n] = pos[:, 2]
    coords[3, :n] = mass
    cdef const double[:, ::1] c = coords
    cdef double[:, ::1] a = np.zeros((3, n + CK_PAD))
    cdef double potential = 0.0
    with nogil:
        potential = ck_gravity(_variant, n, &c[0, 0], &c[1, 0], &c[2, 0], &c[3, 0], eps * eps,
                               energy, &a[0, 0], &a[1, 0], &a[2, 0])
        for i in range(n):
            acc[i, 0] = G * a[0, i]
            acc[i, 1] = G * a[1, i]
            acc[i, 2] = G * a[2, i]
    return -G * potential if energy else 0.0
