/*
 * score.h — the score kernels of one layer, the three ways infl scores a block of
 * train examples against M queries (DESIGN.md "The math"), on the backend, for
 * examples of one token row each (T = 1):
 *
 *   ghost     S (M, b) += w (Δ_Q Δ_Zᵀ) ∘ (A_Q A_Zᵀ + β)            tracin, graddot, gradcos
 *   contract  S (M, b) += rowdot(Δ_Z V_q,W, A_Z) + Δ_Z v_q,b        if, ekfac (full rank)
 *   lowrank   S (b, M) += Σ_k (Δ_Z LF_q)_k (Ã_Z RF_q)_k            ekfac --query-rank r
 *
 * with β = 1 when the layer has a bias (ã = [a; 1]) and 0 when not. Δ_Z (b, d_out) and
 * A_Z (b, d_in) are the train sub-batch's factors of the layer (models/model.h); the
 * queries' are Δ_Q (M, d_out), A_Q (M, d_in). Preconditioned query gradients live in
 * the layer space (model.h): for query q the layer's block is [V_q,W (d_out, d_in) | v_q,b
 * (d_out)] at V + q·ldv. Low-rank factors: LF (d_out, M r), RF (d_in + bias, M r), query q
 * in columns [q r, (q+1) r) (estimators/ekfac.h).
 */
#ifndef INFL_SCORE_H
#define INFL_SCORE_H

#include "models/model.h"

// ghost: T1, T2 (M, b) scratch.
infl_status score_ghost_layer(infl_ctx *ctx, float *S, float *T1, float *T2, const infl_linear *ly, const float *qD,
                              const float *qA, const float *Dz, const float *Az, int M, int b, float w);
// contract: V the layer's block of query 0, ldv floats between queries; Gz (b, d_in) scratch.
infl_status score_contract_layer(infl_ctx *ctx, float *S, float *Gz, const infl_linear *ly, const float *V, size_t ldv,
                                 const float *Dz, const float *Az, int M, int b);
// lowrank: X1, X2 (b, M r) scratch.
infl_status score_lowrank_layer(infl_ctx *ctx, float *S, float *X1, float *X2, const infl_linear *ly, const float *LF,
                                const float *RF, int r, const float *Dz, const float *Az, int M, int b);

// FLOPs of each kernel (counted from the shapes, for the benchmarks' ratios).
static inline double score_ghost_flops(const infl_linear *ly, int M, int b) {
    return 2.0 * M * b * (double)(ly->d_in + ly->d_out) + 3.0 * M * b;
}
static inline double score_contract_flops(const infl_linear *ly, int M, int b) {
    return 2.0 * M * b * (double)ly->d_out * (ly->d_in + 1 + ly->bias);
}
static inline double score_lowrank_flops(const infl_linear *ly, int M, int b, int r) {
    return 2.0 * b * (double)M * r * (ly->d_out + ly->d_in + 1 + ly->bias);
}

// Per-example squared gradient norms of layer l's factors, |∇ℓ_i|² = |δ_i|² (|a_i|² + β)
// (T = 1), times wgt, added into host out (b). rn (2b) backend and h1, h2 (b) host scratch.
infl_status score_sqnorms_layer(infl_ctx *ctx, double *out, float *rn, float *h1, float *h2, const infl_linear *ly,
                                const float *D, const float *A, int b, double wgt);

// Full per-example gradients G (b, lsize) in the model's layer space from the factors
// of the last backward in w (T = 1): per layer the outer products [δ ⊗ a, δ]
// (outer_rows), of which a layer without a bias keeps the first d_out·d_in. tmp holds
// (b, score_grad_tmp_cols(m)).
infl_status score_full_grads(infl_ctx *ctx, float *G, float *tmp, const infl_model *m, const infl_model_work *w,
                             int b);
size_t score_grad_tmp_cols(const infl_model *m);

#endif
