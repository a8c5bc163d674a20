"""Compiled twins of ``forces``, ``project`` and ``verlet`` in ``fput_chain/reference.py``
(same names, same arguments, same operations in the same order).

The driver (``fput_chain/run.py``) validates everything; these functions trust their
inputs: contiguous float64 arrays of one length N >= 2, ``basis`` of shape (rows, N) and
``projections`` of shape (steps, rows). Directives are set in ``setup.py``.

Element-wise the loops do exactly what the numpy reference does, so positions and
velocities agree bit for bit; only :func:`project` sums its N products one by one where the
reference calls a matrix product, so the mode coordinates agree to rounding.
"""


cdef inline double bond_force(double r, double k, double alpha, double beta) noexcept nogil:
    # V'(r) = k r + alpha r^2 + beta r^3 in the reference's Horner order.
    return r * (k + r * (alpha + r * beta))


cdef void chain_forces(const double[::1] u, double k, double alpha, double beta,
                       double[::1] f) noexcept nogil:
    cdef Py_ssize_t n = u.shape[0]
    cdef Py_ssize_t j
    # Bond N-1 closes the ring; it pulls on particle 0 (as bond j-1) and on N-1 (as bond j).
    cdef double closing = bond_force(u[0] - u[n - 1], k, alpha, beta)
    cdef double previous = closing
    cdef double current
    for j in range(n - 1):
        current = bond_force(u[j + 1] - u[j], k, alpha, beta)
        f[j] = current - previous
        previous = current
    f[n - 1] = closing - previous


cdef void chain_project(const double[:, ::1] basis, const double[::1] u,
                        double[::1] out) noexcept nogil:
    cdef Py_ssize_t row, j
    cdef double total
    for row in range(basis.shape[0]):
        total = 0.0
        for j in range(u.shape[0]):
            total = total + basis[row, j] * u[j]
        out[row] = total


def forces(const double[::1] u, double k, double alpha, double beta, double[::1] f):
    """Write F_j = V'(r_j) - V'(r_{j-1}) into ``f``."""
    with nogil:
        chain_forces(u, k, alpha, beta, f)


def project(const double[:, ::1] basis, const double[::1] u, double[::1] out):
    """Write the mode coordinates ``basis @ u`` into ``out``."""
    with nogil:
        chain_project(basis, u, out)


def verlet(double[::1] u, double[::1] v, double[::1] f, double dt, double k, double alpha,
           double beta, double mass, const double[:, ::1] basis, double[:, ::1] projections):
    """Advance (u, v) by ``projections.shape[0]`` velocity-Verlet steps, in place.

    ``f`` holds the forces at ``u`` on entry and on return. After step s, the mode
    coordinates ``basis @ u`` are written to ``projections[s]`` (``basis`` may have no rows).
    """
    cdef Py_ssize_t n = u.shape[0]
    cdef Py_ssize_t step, j
    cdef double half_kick = 0.5 * dt / mass
    with nogil:
        for step in range(projections.shape[0]):
            for j in range(n):
                v[j] = v[j] + half_kick * f[j]
                u[j] = u[j] + dt * v[j]
            chain_forces(u, k, alpha, beta, f)
            for j in range(n):
                v[j] = v[j] + half_kick * f[j]
            chain_project(basis, u, projections[step])
