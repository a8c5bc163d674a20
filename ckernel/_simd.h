/* Inner loops of the Lennard-Jones and gravity kernels, compiled once per instruction-set
 * variant and chosen at run time (see _simd.c). Called from _kernels.pyx, which validates
 * and allocates everything: these functions trust their arguments.
 */
#ifndef CKERNEL_SIMD_H
#define CKERNEL_SIMD_H

#include <stddef.h>
#include <stdint.h>

/* Variant codes; the names are in ck_variant_name. */
enum { CK_PORTABLE = 0, CK_AVX2 = 1, CK_AVX512 = 2, CK_N_VARIANTS = 3 };

/* Entries of a neighbour block processed at once; also the padding the pair array needs
 * after its last entry (the force loop reads, and masks, up to a multiple of 8 past a row). */
#define CK_BLOCK 64
#define CK_PAD 8

int ck_variant_available(int variant);
const char *ck_variant_name(int variant);

/* The periodic neighbour list in "extended" indices: every atom once (image shift 0) plus
 * the periodic images ("ghosts") of the atoms near the faces, all ordered by grid cell. */
typedef struct {
    ptrdiff_t n_ext;
    const ptrdiff_t *start;  /* n_ext + 1: partners of e are nbr[start[e] : start[e + 1]] */
    const int32_t *nbr;      /* extended indices, followed by CK_PAD valid indices */
    const int32_t *id;       /* the atom each entry is a copy of */
    const int8_t *shift;     /* 3 per entry: the image, in boxes */
} ck_lj_list;

/* Build the pairs (e < its partners in the half stencil, distance < rlist) into nbr (at most
 * capacity entries) and start; return the number of pairs (more than capacity: retry). */
ptrdiff_t ck_lj_pairs(int variant, ptrdiff_t n_ext, const double *xs, const double *ys,
                      const double *zs, const int32_t *id, const int32_t *cell_first, int grid,
                      int reach, int n_side, const int *columns, int n_columns, int own_reach,
                      double rlist, ptrdiff_t capacity, int32_t *nbr, ptrdiff_t *start);

/* Forces (n x 3, atom order) from positions (n x 3) through the list; *u and *w receive the
 * pair energy and virial when energy is non-zero. work holds 6 n_ext doubles. */
void ck_lj_forces(int variant, const ck_lj_list *list, const double *pos, ptrdiff_t n,
                  double box, double rc, int potential, int energy, double *work,
                  double *forces, double *u, double *w);

/* Softened accelerations (without G) of the n bodies in SoA coordinates into ax, ay, az
 * (zeroed by the caller); returns sum_i m_i sum_{j>i} m_j / r_ij when energy is non-zero. */
double ck_gravity(int variant, ptrdiff_t n, const double *xs, const double *ys,
                  const double *zs, const double *mass, double eps2, int energy, double *ax,
                  double *ay, double *az);

#endif
