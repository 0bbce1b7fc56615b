/*
 * attrib.h — what the attribution pipelines share (rank.c, self.c, loo.c, bench.c): an
 * open run as a model of the seam (models/model.h) with the checkpoints a method uses
 * resident on the backend, the train split, the queries' state, and the per-sub-batch
 * scoring buffers. Nothing here knows an architecture: layers, their shapes and the
 * layer space come from the model.
 */
#ifndef INFL_ATTRIB_H
#define INFL_ATTRIB_H

#include "estimators/ekfac.h"
#include "estimators/score.h"
#include "models/model.h"
#include "sched/reader.h"
#include "sched/stage.h"
#include "store/store.h"

typedef struct {
    infl_ctx *ctx;
    const infl_rank_options *o;
    infl_run *run;
    infl_model *m;   // the run's model, through the seam
    size_t P;        // parameters of the flat vector
    int L;           // attributed layers
    int nck;         // checkpoints used
    int *ck;         // (nck) their indices in the run
    double *weight;  // (nck) lr for tracin, 1 otherwise
    float **Wd;      // (nck) weights on the backend
    infl_split *train, *query;
    int64_t N;       // train rows
    int64_t D;       // features
    int64_t Kt;      // real-target width (0: class labels)
    int M;           // queries
    // query state
    float **qD, **qA;  // (nck * L) factors Δ_Q (M, d_out) and A_Q (M, d_in)
    double *qinv;      // (M) 1/|∇L_q| for gradcos
    float *V;          // (M, lsize) preconditioned query gradients in the layer space (if, ekfac)
    // ekfac, kfac, diagonal
    infl_factors *fac;
    ekfac_pre *pre;
    int lowrank;                     // --query-rank given: score by the rank-r factors
    int rl[INFL_MAX_LINEAR];         // rank kept per layer
    float *LF[INFL_MAX_LINEAR];      // (d_out, M rl) left factors of the preconditioned queries
    float *RF[INFL_MAX_LINEAR];      // (d_in + bias, M rl) right factors
    float *X1, *X2;                  // (B, M max rl) low-rank score blocks
    double energy;
    // scoring buffers for sub-batches of B train rows
    int B;
    infl_model_work *work;
    infl_stage st;        // double-buffered train sub-batches (x, labels or targets)
    float *Sd, *T1, *T2;  // (M, B); T1, T2 for the ghost dot product only
    float *Gz;            // (B, max d_in) contraction block (if)
    float *rn;            // (2 max(B, M)) row norms
    float *hrow, *hrow2;  // (max(B, M)) host
    double flops;
} attrib;

const char *infl_method_name(infl_method m);
// Methods scored by contraction with preconditioned queries: if, ekfac, kfac, diagonal.
static inline int attrib_contracts(infl_method m) { return m == INFL_METHOD_IF || m >= INFL_METHOD_EKFAC; }
static inline int attrib_is_ekfac(infl_method m) { return m >= INFL_METHOD_EKFAC; }
// Opens the run and its model, picks checkpoints, opens the train split (and the
// queries when need_query), uploads the checkpoints' weights. On failure everything
// is closed.
infl_status attrib_open(infl_ctx *ctx, attrib *a, const infl_rank_options *o, int need_query);
void attrib_close(attrib *a);
// Scoring buffers for M queries (M = 0: none), with the contraction block of
// influence-function scoring when `influence`. Sub-batches of a->B rows (1024 unless
// set before; at most --shard rows, which does not change how rows are batched: a
// shard is then one sub-batch either way).
infl_status attrib_alloc_scoring(infl_ctx *ctx, attrib *a, int M, int influence);
int64_t attrib_shard_rows(const attrib *a);
// infl_reader_start on the train split with shards of S rows in the backend's host
// memory (pinned on CUDA).
infl_status attrib_reader_start(infl_ctx *ctx, attrib *a, int64_t S, infl_reader **rd);
// Forward and backward of a batch at checkpoint c: per-example factors in work.
infl_status attrib_factors(infl_ctx *ctx, attrib *a, int c, const infl_batch *bt, infl_model_work *work);
// Per-example squared gradient norms of the last backward (host out (b)), times wgt,
// added when accumulate.
infl_status attrib_sqnorms(infl_ctx *ctx, attrib *a, infl_model_work *work, int b, double wgt, double *out,
                           int accumulate);
// X (nv, P) = (H + λI)⁻¹ G at the method's checkpoint; *op is created on first use
// and may be reused by the caller (free with infl_hvp_free; the direct solver keeps
// its factorisation on it). check: measure the true residual (one more HVP).
// INFL_E_UNSUPPORTED for a model without Hessian-vector products.
infl_status attrib_solve(infl_ctx *ctx, attrib *a, const float *G, float *X, int nv, int check, infl_hvp **op);

// Writes the attributes of a scores file: method, inputs, checkpoints, and the
// method's parameters (for ekfac the damping and mean eigenvalue per layer).
infl_status attrib_write_attrs(infl_ctx *ctx, infl_scw *w, const infl_rank_options *o, const attrib *a);

// Receives each shard's score block (M, n) with leading dimension ld; col0 is the
// shard's first row within the split's range.
typedef infl_status (*attrib_block_fn)(infl_ctx *ctx, void *user, const float *scores, int M, int n, int ld,
                                       int64_t col0);
// A block callback that copies each shard's block into the full matrix S (M, N).
typedef struct {
    float *S;
    int64_t N;
} attrib_full;
infl_status attrib_keep_full(infl_ctx *ctx, void *user, const float *scores, int M, int n, int ld, int64_t col0);

// infl_rank with an optional block callback.
infl_status attrib_rank(infl_ctx *ctx, const infl_rank_options *o, attrib_block_fn block, void *user,
                        infl_rank_result **out);

#endif
