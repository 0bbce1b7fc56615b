/*
 * projgen.h — the random projections of a gradient index (DESIGN.md "Projection"):
 * every entry of a projection matrix is a pure function of (seed, matrix, row,
 * column) through the counter-based generator (core/rng.h), written once for host
 * and device (INFL_HD), so the matrix never needs storing: any block of it is
 * generated where it is used, the same for every shard size and on every backend.
 *
 * A projection P (k, n) maps a vector of n layer-space entries to k. Entries:
 *   rademacher  ±1/√k, one bit of a Philox word each (128 entries per counter);
 *   gaussian    N(0, 1)/√k by Box-Muller in double (4 entries per counter; the CPU and
 *               CUDA round the same double to float, so they agree to a float ulp);
 * so that E[PᵀP] = I. `mat` names the matrix (one per layer, or two per layer for the
 * Kronecker projection): the counter's index is (mat, column), its draw the row group.
 */
#ifndef INFL_PROJGEN_H
#define INFL_PROJGEN_H

#include "core/rng.h"

enum { INFL_RNG_PROJECT = 9 };  // the counter stream of projections (rng.h's list goes to 8)

typedef enum { INFL_PROJ_GAUSSIAN_ = 0, INFL_PROJ_RADEMACHER_ = 1 } infl_projgen_kind;

// Gaussian rows 4 g + 2 pair and 4 g + 2 pair + 1 (e[0], e[1]) of a column from its counter's
// words w of draw g: one Box-Muller pair (cos, sin), in double.
static inline INFL_HD void infl_proj_gauss_pair(const infl_rng4 *w, int pair, float e[2]) {
    double u1 = ((double)w->v[2 * pair] + 1.0) * 0x1.0p-32;  // (0, 1]
    double u2 = (double)w->v[2 * pair + 1] * 0x1.0p-32;      // [0, 1)
    double r = sqrt(-2.0 * log(u1)), t = 6.283185307179586 * u2;
    e[0] = (float)(r * cos(t));
    e[1] = (float)(r * sin(t));
}

// Entry (row j, column c) of projection matrix `mat`, before the 1/√k scale.
static inline INFL_HD float infl_proj_entry(int kind, uint64_t seed, uint32_t mat, uint64_t c, uint32_t j) {
    uint64_t index = ((uint64_t)mat << 40) | c;
    if (kind == INFL_PROJ_RADEMACHER_) {
        infl_rng4 w = infl_rng_words(seed, INFL_RNG_PROJECT, index, j >> 7);
        uint32_t bit = (w.v[(j >> 5) & 3] >> (j & 31)) & 1u;
        return bit ? 1.0f : -1.0f;
    }
    infl_rng4 w = infl_rng_words(seed, INFL_RNG_PROJECT, index, j >> 2);
    float e[2];
    infl_proj_gauss_pair(&w, (j >> 1) & 1, e);
    return e[j & 1];
}

#endif
