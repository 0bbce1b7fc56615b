/*
 * attrib.h — what the attribution pipelines share (rank.c, self.c, loo.c): an open
 * run with the checkpoints a method uses resident on the backend, the train split,
 * the queries' state, and the per-sub-batch scoring buffers.
 */
#ifndef INFL_ATTRIB_H
#define INFL_ATTRIB_H

#include "models/mlp.h"
#include "sched/reader.h"
#include "sched/stage.h"
#include "store/store.h"
#include "estimators/ekfac.h"
#include "models/hvp.h"

typedef struct {
    infl_ctx *ctx;
    const infl_rank_options *o;
    infl_run *run;
    const infl_mlp_spec *spec;
    size_t P;   // parameters
    int L;      // layers
    int nck;    // checkpoints used
    int *ck;    // (nck) their indices in the run
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
    float *V;          // (M, P) preconditioned query gradients for if and ekfac
    // ekfac, kfac, diagonal
    infl_factors *fac;
    ekfac_pre *pre;
    int lowrank;                     // --query-rank given: score by the rank-r factors
    int rl[INFL_MAX_LAYERS];         // rank kept per layer
    float *LF[INFL_MAX_LAYERS];      // (d_out, M rl) left factors of the preconditioned queries
    float *RF[INFL_MAX_LAYERS];      // (d_in+1, M rl) right factors
    float *X1, *X2;                  // (B, M max rl) low-rank score blocks
    double energy;
    // scoring buffers for sub-batches of B train rows
    int B;
    infl_mlp_work *work;
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
// Opens the run, picks checkpoints, opens the train split (and the queries when
// need_query), uploads the checkpoints' weights. On failure everything is closed.
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
infl_status attrib_factors(infl_ctx *ctx, attrib *a, int c, const float *X, const int32_t *y, const float *yf,
                           int b, infl_mlp_work *work);
infl_status attrib_sqnorms(infl_ctx *ctx, attrib *a, infl_mlp_work *work, int b, double wgt, double *out,
                           int accumulate);
// Parameters of the largest layer, d_out (d_in + 1).
size_t attrib_max_layer_params(const attrib *a);
// Per-example gradients (b, P) in the flat layout; tmp holds (b, max P_l).
infl_status attrib_full_grads(infl_ctx *ctx, attrib *a, infl_mlp_work *work, int b, float *G, float *tmp);
// X (nv, P) = (H + λI)⁻¹ G at the method's checkpoint; *op is created on first use
// and may be reused by the caller (free with infl_hvp_free; the direct solver keeps
// its factorisation on it). check: measure the true residual (one more HVP).
infl_status attrib_solve(infl_ctx *ctx, attrib *a, const float *G, float *X, int nv, int check, infl_hvp **op);

// One layer's score block, the three ways rank scores (DESIGN.md), on the backend:
//  ghost     S (M, b) += w (Δ_Q Δ_Zᵀ) ∘ (A_Q A_Zᵀ + 1)       (tracin, graddot, gradcos; T1, T2 (M, b) scratch)
//  contract  S (M, b) += rowdot(Δ_Z V_q,W, A_Z) + Δ_Z v_q,b  (if, ekfac: V_q,W (d_out, d_in) at Vw + q·ldv,
//            v_q,b at Vb + q·ldv; Gz (b, d_in) scratch)
//  lowrank   S (b, M) += Σ_k (Δ_Z LF_q)_k (Ã_Z RF_q)_k       (--query-rank; LF (d_out, M r), RF (d_in+1, M r);
//            X1, X2 (b, M r) scratch)
// Δ_Z (b, d_out), A_Z (b, d_in): the train sub-batch's factors of the layer.
infl_status score_ghost_layer(infl_ctx *ctx, const float *qD, const float *qA, const float *Dz, const float *Az,
                              int M, int b, int din, int dout, float w, float *S, float *T1, float *T2);
infl_status score_contract_layer(infl_ctx *ctx, const float *Vw, const float *Vb, size_t ldv, const float *Dz,
                                 const float *Az, int M, int b, int din, int dout, float *S, float *Gz);
infl_status score_lowrank_layer(infl_ctx *ctx, const float *LF, const float *RF, int r, const float *Dz,
                                const float *Az, int M, int b, int din, int dout, float *S, float *X1, float *X2);

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
