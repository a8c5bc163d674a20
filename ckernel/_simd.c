/* Inner loops of the Lennard-Jones and gravity kernels, one copy per instruction set.
 *
 * Each loop body below is written once, as an always-inline function of plain C that gcc
 * vectorises by itself, and compiled into up to three variants: the portable one (the
 * baseline ISA of the build: SSE2 on x86-64, whatever the target has elsewhere), and on
 * x86 with GCC or Clang an AVX2 and an AVX-512 one (function-level target attributes, so
 * no -march flag is needed and the library still runs on any x86-64). _kernels.pyx picks
 * the best one the CPU has, or the one it is told to use.
 *
 * Bit-identical results across variants: the build uses -ffp-contract=off (no fused
 * multiply-adds), and every loop either works element by element (the same operations on
 * each pair whatever the vector width) or sums into eight fixed accumulators, lane q taking
 * elements q, q + 8, q + 16, ... and the eight summed in one fixed tree at the end. The
 * lane structure is explicit in the source, so a 2-, 4- or 8-wide machine (or a scalar
 * one) performs exactly the same additions in the same order. Scatters into other atoms'
 * forces happen in one scalar loop, in list order.
 */
#include "_simd.h"

#include <math.h>
#include <string.h>

/* The AVX2 and AVX-512 variants need x86 and GCC or Clang's target attribute; elsewhere (or
 * with -DCK_PORTABLE_ONLY, which also checks that path on x86) only the portable one exists. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CK_PORTABLE_ONLY)
#define CK_X86 1
#else
#define CK_X86 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CK_INLINE static inline __attribute__((always_inline))
#else
#define CK_INLINE static inline
#endif

#define CK_LANES 8

int ck_variant_available(int variant)
{
    switch (variant) {
    case CK_PORTABLE:
        return 1;
#if CK_X86
    case CK_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case CK_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
               && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512cd");
#endif
    default:
        return 0;
    }
}

const char *ck_variant_name(int variant)
{
    switch (variant) {
    case CK_PORTABLE:
        return "portable";
    case CK_AVX2:
        return "avx2";
    case CK_AVX512:
        return "avx512";
    default:
        return "unknown";
    }
}

/* x if keep is 1, +0.0 if it is 0: a bit mask rather than a conditional, because gcc will
 * not if-convert "keep ? x : 0.0" around a division without AVX-512's masked operations
 * (the division might raise a floating-point flag it would not otherwise raise). */
CK_INLINE double masked(double x, int keep)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits &= (uint64_t)0 - (uint64_t)keep;
    memcpy(&x, &bits, sizeof bits);
    return x;
}

CK_INLINE double tree8(const double *a)
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* ------------------------------------------------------------------ neighbour list */

/* Scan the candidates j in [j0, j1) of entry e: keep those closer than rlist that are not an
 * image of e's own atom. Distances are computed a block at a time (contiguous coordinates:
 * the candidates of a cell column are adjacent in the cell-sorted order) and the kept ones
 * written with a branch-free compress. *counting switches to counting only when the next
 * block might not fit. */
CK_INLINE ptrdiff_t scan_range(ptrdiff_t j0, ptrdiff_t j1, double xi, double yi, double zi,
                               int32_t idi, const double *restrict xs,
                               const double *restrict ys, const double *restrict zs,
                               const int32_t *restrict id, double rl2, ptrdiff_t k,
                               ptrdiff_t capacity, int *counting, int32_t *restrict nbr)
{
    int keep[CK_BLOCK];
    for (ptrdiff_t b = j0; b < j1; b += CK_BLOCK) {
        ptrdiff_t m = j1 - b < CK_BLOCK ? j1 - b : CK_BLOCK;
        for (ptrdiff_t l = 0; l < m; l++) {
            double dx = xi - xs[b + l];
            double dy = yi - ys[b + l];
            double dz = zi - zs[b + l];
            double r2 = dx * dx + dy * dy + dz * dz;
            keep[l] = (r2 < rl2) & (id[b + l] != idi);
        }
        if (!*counting && k + m > capacity)
            *counting = 1;
        if (*counting) {
            for (ptrdiff_t l = 0; l < m; l++)
                k += keep[l];
        } else {
            for (ptrdiff_t l = 0; l < m; l++) {
                nbr[k] = (int32_t)(b + l);
                k += keep[l];
            }
        }
    }
    return k;
}

CK_INLINE ptrdiff_t pairs_body(ptrdiff_t n_ext, const double *restrict xs,
                               const double *restrict ys, const double *restrict zs,
                               const int32_t *restrict id, const int32_t *restrict cell_first,
                               int grid, int reach, int n_side, const int *columns,
                               int n_columns, int own_reach, double rlist, ptrdiff_t capacity,
                               int32_t *restrict nbr, ptrdiff_t *restrict start)
{
    ptrdiff_t k = 0;
    int counting = 0;
    double rl2 = rlist * rlist;
    ptrdiff_t n_cells = (ptrdiff_t)grid * grid * grid;
    for (ptrdiff_t c = 0; c < n_cells; c++) {
        int cx = (int)(c / ((ptrdiff_t)grid * grid));
        int cy = (int)((c / grid) % grid);
        int cz = (int)(c % grid);
        int interior = cx >= reach && cx < reach + n_side && cy >= reach
                       && cy < reach + n_side && cz >= reach && cz < reach + n_side;
        for (ptrdiff_t e = cell_first[c]; e < cell_first[c + 1]; e++) {
            start[e] = k;
            if (!interior)
                continue;  /* images only receive forces, through their partners' rows */
            double xi = xs[e], yi = ys[e], zi = zs[e];
            int32_t idi = id[e];
            /* The cells above e's in z (and e's own cell after e) are one contiguous run. */
            k = scan_range(e + 1, cell_first[c + own_reach + 1], xi, yi, zi, idi, xs, ys, zs,
                           id, rl2, k, capacity, &counting, nbr);
            for (int s = 0; s < n_columns; s++) {
                ptrdiff_t c2 = c + ((ptrdiff_t)columns[3 * s] * grid + columns[3 * s + 1]) * grid;
                int rz = columns[3 * s + 2];
                k = scan_range(cell_first[c2 - rz], cell_first[c2 + rz + 1], xi, yi, zi, idi,
                               xs, ys, zs, id, rl2, k, capacity, &counting, nbr);
            }
        }
    }
    start[n_ext] = k;
    return k;
}

/* ------------------------------------------------------------------ Lennard-Jones forces */

CK_INLINE void lj_body(const ck_lj_list *list, const double *restrict pos, ptrdiff_t n,
                       double box, double rc, double u_rc, double f_rc, int force_shifted,
                       int energy, double *restrict work, double *restrict forces,
                       double *u_out, double *w_out)
{
    ptrdiff_t ne = list->n_ext;
    const ptrdiff_t *restrict start = list->start;
    const int32_t *restrict nbr = list->nbr;
    const int32_t *restrict id = list->id;
    const int8_t *restrict shift = list->shift;
    double *restrict xs = work;
    double *restrict ys = work + ne;
    double *restrict zs = work + 2 * ne;
    double *restrict fx = work + 3 * ne;
    double *restrict fy = work + 4 * ne;
    double *restrict fz = work + 5 * ne;
    double rc2 = rc * rc, u = 0.0, w = 0.0;
    double tx[CK_BLOCK], ty[CK_BLOCK], tz[CK_BLOCK], tu[CK_BLOCK], tw[CK_BLOCK];

    for (ptrdiff_t e = 0; e < ne; e++) {
        ptrdiff_t a = id[e];
        xs[e] = pos[3 * a] + box * shift[3 * e];
        ys[e] = pos[3 * a + 1] + box * shift[3 * e + 1];
        zs[e] = pos[3 * a + 2] + box * shift[3 * e + 2];
        fx[e] = 0.0;
        fy[e] = 0.0;
        fz[e] = 0.0;
    }
    for (ptrdiff_t e = 0; e < ne; e++) {
        ptrdiff_t k0 = start[e], k1 = start[e + 1];
        if (k0 == k1)
            continue;
        double xi = xs[e], yi = ys[e], zi = zs[e];
        double sx[CK_LANES] = {0}, sy[CK_LANES] = {0}, sz[CK_LANES] = {0};
        for (ptrdiff_t b = k0; b < k1; b += CK_BLOCK) {
            ptrdiff_t m = k1 - b < CK_BLOCK ? k1 - b : CK_BLOCK;
            ptrdiff_t mp = (m + CK_LANES - 1) & ~(ptrdiff_t)(CK_LANES - 1);
            /* Every listed pair, with the cutoff as a mask rather than a branch (about a
             * quarter of the pairs of a liquid fail it, unpredictably); the entries past the
             * row's end up to a multiple of 8 are read and masked too. */
            for (ptrdiff_t l = 0; l < mp; l++) {
                ptrdiff_t j = nbr[b + l];
                double dx = xi - xs[j];
                double dy = yi - ys[j];
                double dz = zi - zs[j];
                double r2 = dx * dx + dy * dy + dz * dz;
                double inv_r2 = 1.0 / r2;
                double inv_r6 = inv_r2 * inv_r2 * inv_r2;
                double f_over_r = 24.0 * inv_r6 * (2.0 * inv_r6 - 1.0) * inv_r2;
                double r = 0.0;
                if (force_shifted) {
                    r = sqrt(r2);
                    f_over_r = f_over_r - f_rc / r;
                }
                int inside = (r2 < rc2) & (l < m);
                f_over_r = masked(f_over_r, inside);
                tx[l] = f_over_r * dx;
                ty[l] = f_over_r * dy;
                tz[l] = f_over_r * dz;
                if (energy) {
                    double u_ij = 4.0 * inv_r6 * (inv_r6 - 1.0) - u_rc;
                    if (force_shifted)
                        u_ij = u_ij + (r - rc) * f_rc;
                    tu[l] = masked(u_ij, inside);
                    tw[l] = f_over_r * r2;
                }
            }
            for (ptrdiff_t l0 = 0; l0 < mp; l0 += CK_LANES) {
                for (int q = 0; q < CK_LANES; q++) {
                    sx[q] += tx[l0 + q];
                    sy[q] += ty[l0 + q];
                    sz[q] += tz[l0 + q];
                }
            }
            for (ptrdiff_t l = 0; l < m; l++) {
                ptrdiff_t j = nbr[b + l];
                fx[j] -= tx[l];
                fy[j] -= ty[l];
                fz[j] -= tz[l];
            }
            if (energy) {
                for (ptrdiff_t l = 0; l < m; l++) {
                    u += tu[l];
                    w += tw[l];
                }
            }
        }
        fx[e] += tree8(sx);
        fy[e] += tree8(sy);
        fz[e] += tree8(sz);
    }
    /* Images hand their forces back to their atoms, in entry order. */
    for (ptrdiff_t a = 0; a < 3 * n; a++)
        forces[a] = 0.0;
    for (ptrdiff_t e = 0; e < ne; e++) {
        ptrdiff_t a = id[e];
        forces[3 * a] += fx[e];
        forces[3 * a + 1] += fy[e];
        forces[3 * a + 2] += fz[e];
    }
    *u_out = u;
    *w_out = w;
}

CK_INLINE void lj_dispatch(const ck_lj_list *list, const double *pos, ptrdiff_t n, double box,
                           double rc, int potential, int energy, double *work, double *forces,
                           double *u, double *w)
{
    double rc2 = rc * rc;
    double inv_rc6 = 1.0 / (rc2 * rc2 * rc2);
    double u_rc = potential != 0 ? 4.0 * inv_rc6 * (inv_rc6 - 1.0) : 0.0;
    double f_rc = 24.0 * inv_rc6 * (2.0 * inv_rc6 - 1.0) / rc;
    /* Constant flags, so that each combination is its own loop without tests in it. */
    if (potential == 2) {
        if (energy)
            lj_body(list, pos, n, box, rc, u_rc, f_rc, 1, 1, work, forces, u, w);
        else
            lj_body(list, pos, n, box, rc, u_rc, f_rc, 1, 0, work, forces, u, w);
    } else {
        if (energy)
            lj_body(list, pos, n, box, rc, u_rc, 0.0, 0, 1, work, forces, u, w);
        else
            lj_body(list, pos, n, box, rc, u_rc, 0.0, 0, 0, work, forces, u, w);
    }
}

/* ------------------------------------------------------------------ gravity */

/* Pairs (i, j > i) a block at a time: separations and 1/r^3 for the block (element-wise),
 * the reaction on every j (element-wise: the j of a block are distinct), then i's own sums
 * in eight fixed lanes, lane q taking the partners i + 1 + q, i + 9 + q, ... (block sizes are
 * multiples of 8). The coordinate and mass arrays hold CK_PAD entries past n (mass 0). The
 * portable variant runs this form. */
CK_INLINE double gravity_blocked(ptrdiff_t n, const double *restrict xs, const double *restrict ys,
                              const double *restrict zs, const double *restrict mass,
                              double eps2, int energy, double *restrict ax,
                              double *restrict ay, double *restrict az)
{
    double dx[CK_BLOCK], dy[CK_BLOCK], dz[CK_BLOCK], inv_r3[CK_BLOCK], inv_r[CK_BLOCK];
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double xi = xs[i], yi = ys[i], zi = zs[i], mi = mass[i];
        double sx[CK_LANES] = {0}, sy[CK_LANES] = {0}, sz[CK_LANES] = {0};
        double sp[CK_LANES] = {0};
        for (ptrdiff_t j0 = i + 1; j0 < n; j0 += CK_BLOCK) {
            ptrdiff_t m = n - j0 < CK_BLOCK ? n - j0 : CK_BLOCK;
            ptrdiff_t mp = (m + CK_LANES - 1) & ~(ptrdiff_t)(CK_LANES - 1);
            for (ptrdiff_t l = 0; l < mp; l++) {
                dx[l] = xs[j0 + l] - xi;
                dy[l] = ys[j0 + l] - yi;
                dz[l] = zs[j0 + l] - zi;
                double r2 = dx[l] * dx[l] + dy[l] * dy[l] + dz[l] * dz[l] + eps2;
                double s = sqrt(r2);
                double q3 = 1.0 / (r2 * s);
                /* Padding entries (past n) may sit on top of i: masked to exactly 0. */
                inv_r3[l] = l < m ? q3 : 0.0;
                if (energy)
                    inv_r[l] = l < m ? r2 * q3 : 0.0;
            }
            for (ptrdiff_t l = 0; l < m; l++) {
                ax[j0 + l] -= mi * inv_r3[l] * dx[l];
                ay[j0 + l] -= mi * inv_r3[l] * dy[l];
                az[j0 + l] -= mi * inv_r3[l] * dz[l];
            }
            for (ptrdiff_t l0 = 0; l0 < mp; l0 += CK_LANES) {
                for (int q = 0; q < CK_LANES; q++) {
                    ptrdiff_t l = l0 + q;
                    double mj = mass[j0 + l];
                    sx[q] += mj * inv_r3[l] * dx[l];
                    sy[q] += mj * inv_r3[l] * dy[l];
                    sz[q] += mj * inv_r3[l] * dz[l];
                    if (energy)
                        sp[q] += mj * inv_r[l];
                }
            }
        }
        ax[i] += tree8(sx);
        ay[i] += tree8(sy);
        az[i] += tree8(sz);
        if (energy)
            total += mi * tree8(sp);
    }
    return total;
}

/* Pairs (i, j > i), eight partners at a time: separations and 1/r^3 (element-wise), the
 * reaction on each j (element-wise: the eight j are distinct) and i's own sums in eight
 * fixed lanes, lane q taking the partners i + 1 + q, i + 9 + q, ...: the same operations in
 * the same order as gravity_blocked, in one pass. gcc vectorises this form with AVX2 and
 * AVX-512 (each step of eight is two or one vectors), which run it; with SSE2 it does not,
 * and the portable variant runs the blocked form. The coordinate, mass
 * and acceleration arrays hold CK_PAD entries past n (mass 0, receiving nothing). */
CK_INLINE double gravity_fused(ptrdiff_t n, const double *restrict xs, const double *restrict ys,
                              const double *restrict zs, const double *restrict mass,
                              double eps2, int energy, double *restrict ax,
                              double *restrict ay, double *restrict az)
{
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double xi = xs[i], yi = ys[i], zi = zs[i], mi = mass[i];
        double sx[CK_LANES] = {0}, sy[CK_LANES] = {0}, sz[CK_LANES] = {0};
        double sp[CK_LANES] = {0};
        ptrdiff_t m = n - (i + 1);
        for (ptrdiff_t l0 = 0; l0 < m; l0 += CK_LANES) {
            for (int q = 0; q < CK_LANES; q++) {
                ptrdiff_t j = i + 1 + l0 + q;
                double dx = xs[j] - xi;
                double dy = ys[j] - yi;
                double dz = zs[j] - zi;
                double r2 = dx * dx + dy * dy + dz * dz + eps2;
                double s = sqrt(r2);
                double q3 = 1.0 / (r2 * s);
                /* Padding entries (past n) may sit on top of i: masked to exactly 0. */
                double inv_r3 = masked(q3, l0 + q < m);
                double mj = mass[j];
                ax[j] -= mi * inv_r3 * dx;
                ay[j] -= mi * inv_r3 * dy;
                az[j] -= mi * inv_r3 * dz;
                sx[q] += mj * inv_r3 * dx;
                sy[q] += mj * inv_r3 * dy;
                sz[q] += mj * inv_r3 * dz;
                if (energy)
                    sp[q] += mj * masked(r2 * q3, l0 + q < m);
            }
        }
        ax[i] += tree8(sx);
        ay[i] += tree8(sy);
        az[i] += tree8(sz);
        if (energy)
            total += mi * tree8(sp);
    }
    return total;
}

CK_INLINE double gravity_dispatch(ptrdiff_t n, const double *xs, const double *ys,
                                  const double *zs, const double *mass, double eps2,
                                  int energy, int fused, double *ax, double *ay, double *az)
{
    if (fused) {
        if (energy)
            return gravity_fused(n, xs, ys, zs, mass, eps2, 1, ax, ay, az);
        return gravity_fused(n, xs, ys, zs, mass, eps2, 0, ax, ay, az);
    }
    if (energy)
        return gravity_blocked(n, xs, ys, zs, mass, eps2, 1, ax, ay, az);
    return gravity_blocked(n, xs, ys, zs, mass, eps2, 0, ax, ay, az);
}

/* ------------------------------------------------------------------ the variants */

#define CK_VARIANT(suffix, attributes, fused)                                                    \
    attributes static ptrdiff_t pairs_##suffix(                                              \
        ptrdiff_t n_ext, const double *xs, const double *ys, const double *zs,               \
        const int32_t *id, const int32_t *cell_first, int grid, int reach, int n_side,       \
        const int *columns, int n_columns, int own_reach, double rlist, ptrdiff_t capacity,  \
        int32_t *nbr, ptrdiff_t *start)                                                      \
    {                                                                                        \
        return pairs_body(n_ext, xs, ys, zs, id, cell_first, grid, reach, n_side, columns,   \
                          n_columns, own_reach, rlist, capacity, nbr, start);                \
    }                                                                                        \
    attributes static void lj_##suffix(const ck_lj_list *list, const double *pos,            \
                                       ptrdiff_t n, double box, double rc, int potential,    \
                                       int energy, double *work, double *forces, double *u,  \
                                       double *w)                                            \
    {                                                                                        \
        lj_dispatch(list, pos, n, box, rc, potential, energy, work, forces, u, w);           \
    }                                                                                        \
    attributes static double gravity_##suffix(ptrdiff_t n, const double *xs,                 \
                                              const double *ys, const double *zs,            \
                                              const double *mass, double eps2, int energy,   \
                                              double *ax, double *ay, double *az)            \
    {                                                                                        \
        return gravity_dispatch(n, xs, ys, zs, mass, eps2, energy, fused, ax, ay, az);      \
    }

CK_VARIANT(portable, , 0)
#if CK_X86
CK_VARIANT(avx2, __attribute__((target("avx2"))), 1)
CK_VARIANT(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512cd,"
                                          "prefer-vector-width=512"))), 1)
#endif

ptrdiff_t ck_lj_pairs(int variant, ptrdiff_t n_ext, const double *xs, const double *ys,
                      const double *zs, const int32_t *id, const int32_t *cell_first, int grid,
                      int reach, int n_side, const int *columns, int n_columns, int own_reach,
                      double rlist, ptrdiff_t capacity, int32_t *nbr, ptrdiff_t *start)
{
#if CK_X86
    if (variant == CK_AVX512)
        return pairs_avx512(n_ext, xs, ys, zs, id, cell_first, grid, reach, n_side, columns,
                            n_columns, own_reach, rlist, capacity, nbr, start);
    if (variant == CK_AVX2)
        return pairs_avx2(n_ext, xs, ys, zs, id, cell_first, grid, reach, n_side, columns,
                          n_columns, own_reach, rlist, capacity, nbr, start);
#endif
    (void)variant;
    return pairs_portable(n_ext, xs, ys, zs, id, cell_first, grid, reach, n_side, columns,
                          n_columns, own_reach, rlist, capacity, nbr, start);
}

void ck_lj_forces(int variant, const ck_lj_list *list, const double *pos, ptrdiff_t n,
                  double box, double rc, int potential, int energy, double *work,
                  double *forces, double *u, double *w)
{
#if CK_X86
    if (variant == CK_AVX512) {
        lj_avx512(list, pos, n, box, rc, potential, energy, work, forces, u, w);
        return;
    }
    if (variant == CK_AVX2) {
        lj_avx2(list, pos, n, box, rc, potential, energy, work, forces, u, w);
        return;
    }
#endif
    (void)variant;
    lj_portable(list, pos, n, box, rc, potential, energy, work, forces, u, w);
}

double ck_gravity(int variant, ptrdiff_t n, const double *xs, const double *ys,
                  const double *zs, const double *mass, double eps2, int energy, double *ax,
                  double *ay, double *az)
{
#if CK_X86
    if (variant == CK_AVX512)
        return gravity_avx512(n, xs, ys, zs, mass, eps2, energy, ax, ay, az);
    if (variant == CK_AVX2)
        return gravity_avx2(n, xs, ys, zs, mass, eps2, energy, ax, ay, az);
#endif
    (void)variant;
    return gravity_portable(n, xs, ys, zs, mass, eps2, energy, ax, ay, az);
}
