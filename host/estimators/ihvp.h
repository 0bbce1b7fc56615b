/*
 * ihvp.h — inverse-Hessian-vector solvers: X = (H + λI)⁻¹ G for a batch of vectors,
 * on top of the Hessian-vector operator (hvp.h). Influence functions precondition
 * the query gradients with one of these once; scores against training shards are then
 * GEMMs (DESIGN.md "iHVP solvers").
 *
 *   direct  assemble H (P × P) in float64 on the host from HVPs of unit vectors,
 *           Cholesky (LAPACKE dpotrf/dpotrs); for P up to ~10⁴.
 *   cg      conjugate gradient on H + λI, the nv systems advanced together (one
 *           batched HVP per iteration).
 *   lissa   the stochastic Neumann recursion of Agarwal et al. / Koh & Liang with
 *           minibatch HVPs, scale, depth and repeats.
 */
#ifndef INFL_IHVP_H
#define INFL_IHVP_H

#include <stddef.h>
#include <stdint.h>

#include "models/hvp.h"

typedef enum { INFL_SOLVER_DIRECT = 0, INFL_SOLVER_CG = 1, INFL_SOLVER_LISSA = 2 } infl_solver;

typedef struct {
    infl_solver solver;        // default INFL_SOLVER_CG
    double damping;            // λ: solve (H + λI) x = g (H already holds wd·I); default 0.01.
                               // Negative values are accepted (and usually fail as not PD).
    int cg_iters;              // most CG iterations; default 100
    double cg_tol;             // stop at |r| / |g| <= cg_tol (recursive residual); default 1e-6
    int lissa_depth;           // recursion steps per repeat; default 1000
    double lissa_scale;        // must exceed the largest eigenvalue of H + λI; default 10
    int lissa_repeats;         // independent recursions averaged; default 1
    int64_t lissa_batch;       // rows per minibatch HVP (clamped to the rows); default 256
    uint64_t seed;             // minibatch positions; default 0
    size_t direct_max_params;  // direct refuses larger P; default 12000
    int check_residual;        // measure the true residual for the report (one more HVP of
                               // all nv vectors); default 1
} infl_ihvp_options;

// Returns the defaults documented above.
infl_ihvp_options infl_ihvp_options_default(void);

typedef struct {
    int iters;                // CG iterations (the most any vector took); LiSSA depth × repeats; direct: 0
    double max_rel_residual;  // worst |G_i − (H + λI) X_i| / |G_i| over the vectors, from one
                              // full HVP of the result (0 for a zero G_i)
    double seconds;           // wall time of the solve
} infl_ihvp_report;

// X (nv, P) = (H + λI)⁻¹ G (nv, P), backend memory, row-major (X must not overlap G);
// o NULL: the defaults; rep may be NULL; nv = 0 does nothing. Errors: INFL_E_ARG for
// invalid options; INFL_E_UNSUPPORTED when direct is asked for more than
// direct_max_params parameters; INFL_E_NUMERIC when H + λI is not positive definite
// (direct, cg) or LiSSA diverges; INFL_E_INTERRUPTED when cancelled. Progress: "hessian" (direct, columns done of P), "cg" (iterations),
// "lissa" (steps done of depth × repeats).
infl_status infl_ihvp_solve(infl_ctx *ctx, infl_hvp *op, const infl_ihvp_options *o, const float *G, float *X, int nv,
                            infl_ihvp_report *rep);

#endif
