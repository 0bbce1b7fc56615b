/*
 * hvp.h — Hessian-vector products of the training objective
 * R(w) = (1/n) Σ_i ℓ(z_i, w) + (wd/2)|w|² of an MLP, on the backend: the exact
 * Hessian by Pearlmutter's R-operator (forward and backward R-passes, with the φ''
 * terms) or the Gauss-Newton matrix Jᵀ H_out J (always PSD). The building block of the
 * inverse-Hessian solvers (ihvp.h) and of influence functions (DESIGN.md "The math").
 *
 * The operator streams the rows of a split in shards; the forward pass of a shard is
 * computed once per shard and shared by every vector of a call, and the per-vector
 * work is GEMMs over the shard's rows. When all rows fit in the cache they are read
 * once and kept in backend memory; a shard that is still resident from the previous
 * call also keeps its forward pass (a split of one shard is forwarded once in all).
 *
 * An operator is not thread-safe; use it from the thread of its context.
 */
#ifndef INFL_HVP_H
#define INFL_HVP_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "core/spec.h"
#include "store/store.h"

typedef enum { INFL_HESS_EXACT = 0, INFL_HESS_GGN = 1 } infl_hessian;

typedef struct infl_hvp infl_hvp;

// Creates an operator v -> H v for the model `spec` at parameters `params` (backend
// memory, infl_mlp_nparams(spec) floats, borrowed: must outlive the operator and not
// change while it lives), on the first `samples` rows of `split` (samples <= 0 or more
// than the split holds: all rows). `split` is borrowed too (rows are read from it
// during apply unless they are cached). Rows are read in shards of shard_rows
// (0: chosen so that a shard with its work buffers fits a 256 MiB budget); when all
// the rows fit in cache_mb MiB (callers pass 1024 by default; <= 0: never) they are
// read once here and kept in backend memory. Checks the data against the model
// (widths, label kinds and ranges). On success *out owns the operator.
infl_status infl_hvp_create(infl_ctx *ctx, const infl_mlp_spec *spec, const float *params, infl_split *split,
                            int64_t samples, infl_hessian kind, int64_t shard_rows, double cache_mb, infl_hvp **out);
// With split NULL: an operator on batches given to each call (infl_hvp_apply_batch),
// of up to `samples` rows, at the parameters given with them (params may be NULL
// here); infl_hvp_apply and apply_rows refuse it.
// Frees the operator and its backend buffers. Accepts NULL.
void infl_hvp_free(infl_ctx *ctx, infl_hvp *op);
// Rows the Hessian averages over.
int64_t infl_hvp_rows(const infl_hvp *op);
// Parameters P (the length of every vector).
size_t infl_hvp_nparams(const infl_hvp *op);
// Rows per shard the operator uses.
int64_t infl_hvp_shard_rows(const infl_hvp *op);
// 1 when all rows are held in backend memory.
int infl_hvp_cached(const infl_hvp *op);

// HV (nv, P) = H V for nv vectors V (nv, P), backend memory, row-major; H includes
// wd·I. HV must not overlap V. nv <= 0 does nothing. INFL_E_INTERRUPTED when the
// context's cancel flag is raised (checked once per shard).
infl_status infl_hvp_apply(infl_ctx *ctx, infl_hvp *op, const float *V, float *HV, int nv);
// The same on rows [row0, row0 + nrows) of the operator's rows only (the mean is over
// those rows, plus wd·V): the minibatch HVP of LiSSA. INFL_E_ARG when the range is
// empty or leaves [0, infl_hvp_rows).
infl_status infl_hvp_apply_rows(infl_ctx *ctx, infl_hvp *op, int64_t row0, int64_t nrows, const float *V, float *HV,
                                int nv);

// HV (nv, P) = ((1/b) Σ_rows H_row + wd·I) V at params (backend, P floats) on the b
// rows X (b, D) with labels y (b) or targets yf (b, K), all backend memory: the
// minibatch Hessian of one SGD step (sgd-influence). Any operator may take it (a
// split's forgets the shard it held); b at most the operator's shard rows.
infl_status infl_hvp_apply_batch(infl_ctx *ctx, infl_hvp *op, const float *params, const float *X, const int32_t *y,
                                 const float *yf, int b, const float *V, float *HV, int nv);

// The direct solver's Cholesky factor of H + λI (P × P, float64, host), kept on the
// operator so that later solves with the same λ skip the assembly: NULL when none is
// kept for this λ. set_factor takes ownership of L (malloc'd), replacing any other.
const double *infl_hvp_factor(const infl_hvp *op, double lambda);
void infl_hvp_set_factor(infl_hvp *op, double lambda, double *L);

#endif
