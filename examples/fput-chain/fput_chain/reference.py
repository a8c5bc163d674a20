"""The FPUT chain in plain numpy: the equations, the integrator's reference, the observables.

N particles of mass m on a ring; u_j is the displacement of particle j from its rest site,
v_j its velocity (j = 0 .. N-1, u_N = u_0). Bond j joins particles j and j+1 and is
stretched by r_j = u_{j+1} - u_j; its potential energy is

    V(r) = k/2 r^2 + alpha/3 r^3 + beta/4 r^4,    V'(r) = k r + alpha r^2 + beta r^3,

and the force on particle j is F_j = V'(r_j) - V'(r_{j-1}).

Normal modes (complex Fourier amplitudes, q = 0 .. N-1):

    Q_q = sum_j u_j exp(-2 pi i q j / N),    P_q = sum_j v_j exp(-2 pi i q j / N).

With alpha = beta = 0 they decouple, with angular frequencies
omega_q = 2 sqrt(k/m) |sin(pi q / N)|, and the harmonic energy is
sum_q m / (2N) (|P_q|^2 + omega_q^2 |Q_q|^2). Modes q and N-q are a degenerate pair (one
standing or travelling wave); :func:`mode_energies` gives each pair's energy as one number.

:func:`forces` and :func:`verlet` are the reference of the compiled twins in
``fput_chain/_chain.pyx`` (same names, same arguments, same operations in the same order,
so the two agree bit for bit). The other functions are the observables, used by the driver
at sample times.
"""

from __future__ import annotations

import numpy as np


def bond_force(r: np.ndarray, k: float, alpha: float, beta: float) -> np.ndarray:
    """V'(r) = k r + alpha r^2 + beta r^3, in Horner's order (the kernel uses the same)."""
    return r * (k + r * (alpha + r * beta))


def forces(u: np.ndarray, k: float, alpha: float, beta: float, f: np.ndarray) -> None:
    """Write F_j = V'(r_j) - V'(r_{j-1}) into ``f``."""
    bond = bond_force(np.roll(u, -1) - u, k, alpha, beta)
    f[:] = bond - np.roll(bond, 1)


def project(basis: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """Write the mode coordinates ``basis @ u`` into ``out`` (see :func:`mode_basis`)."""
    out[:] = basis @ u


def verlet(u: np.ndarray, v: np.ndarray, f: np.ndarray, dt: float, k: float, alpha: float,
           beta: float, mass: float, basis: np.ndarray, projections: np.ndarray) -> None:
    """Advance (u, v) by ``len(projections)`` velocity-Verlet steps, in place.

    ``f`` holds the forces at ``u`` on entry and on return. After step s, the mode
    coordinates ``basis @ u`` are written to ``projections[s]`` (``basis`` may have no rows).
    """
    half_kick = 0.5 * dt / mass
    for step in range(len(projections)):
        v += half_kick * f
        u += dt * v
        forces(u, k, alpha, beta, f)
        v += half_kick * f
        project(basis, u, projections[step])


def mode_basis(n: int, modes: np.ndarray) -> np.ndarray:
    """Rows cos(2 pi q j / N) then sin(2 pi q j / N) for each q of ``modes``: shape
    (2 len(modes), N). ``basis @ u`` gives Re Q_q and -Im Q_q of every mode."""
    phase = 2.0 * np.pi * np.outer(modes, np.arange(n)) / n
    return np.ascontiguousarray(np.vstack([np.cos(phase), np.sin(phase)]))


def normal_mode_frequencies(n: int, k: float, mass: float, modes: np.ndarray) -> np.ndarray:
    """The exact harmonic frequencies omega_q = 2 sqrt(k/m) |sin(pi q / N)|."""
    return 2.0 * np.sqrt(k / mass) * np.abs(np.sin(np.pi * modes / n))


def kinetic_energy(v: np.ndarray, mass: float) -> float:
    """m/2 sum_j v_j^2."""
    return float(0.5 * mass * np.sum(v * v))


def potential_energy(u: np.ndarray, k: float, alpha: float, beta: float) -> float:
    """sum_j V(r_j) = sum_j r_j^2 (k/2 + r_j (alpha/3 + r_j beta/4))."""
    r = np.roll(u, -1) - u
    return float(np.sum(r * r * (0.5 * k + r * (alpha / 3.0 + r * (0.25 * beta)))))


def mode_energies(u: np.ndarray, v: np.ndarray, k: float, mass: float,
                  modes: np.ndarray) -> np.ndarray:
    """Harmonic energy of each mode pair (q, N-q) for q in ``modes`` (1 <= q <= N/2):
    m/N (|P_q|^2 + omega_q^2 |Q_q|^2), halved for q = N/2, which has no partner."""
    n = len(u)
    q_amplitude = np.fft.rfft(u)[modes]
    p_amplitude = np.fft.rfft(v)[modes]
    omega = normal_mode_frequencies(n, k, mass, modes)
    pair = np.where(2 * modes == n, 0.5, 1.0)
    return pair * mass / n * (np.abs(p_amplitude) ** 2 + omega**2 * np.abs(q_amplitude) ** 2)
