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

// ghost over token rows (examples of T_i rows): R (M, rz) += w E_Q ((Δ_Q Δ_Zᵀ) ∘ (A_Q A_Zᵀ + β)),
// the queries' rq token rows summed per query by the indicator EQ (M, rq) (score_seg_indicator,
// on the backend); EQ NULL when every query has one row (rq = M). R's column j is train token
// row j's term: summed over a document's rows (R E_Zᵀ) it is the ghost dot product of the
// documents' gradients Σ_t δ_t ã_tᵀ. T1, T2 (rq, rz) scratch.
infl_status score_ghost_rows_layer(infl_ctx *ctx, float *R, float *T1, float *T2, const infl_linear *ly,
                                   const float *qD, const float *qA, const float *EQ, int M, int rq, const float *Dz,
                                   const float *Az, int rz, float w);
// ghost (T = 1): T1, T2 (M, b) scratch.
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

// The ghost form over token rows: 2 rq rz (d_in + d_out) + 3 rq rz, and the sum over the
// queries' rows 2 M rq rz when they have several.
static inline double score_ghost_rows_flops(const infl_linear *ly, int M, double rq, double rz) {
    return 2.0 * rq * rz * (ly->d_in + ly->d_out) + 3.0 * rq * rz + (rq > M ? 2.0 * M * rq * rz : 0.0);
}
// Forming per-document gradients from `rows` token rows: 2 rows d_out (d_in + β).
static inline double score_doc_grads_flops(const infl_linear *ly, double rows) {
    return 2.0 * rows * ly->d_out * (ly->d_in + ly->bias);
}

// Per-example squared gradient norms of layer l's factors, |∇ℓ_i|² = |δ_i|² (|a_i|² + β)
// (T = 1), times wgt, added into host out (b). rn (2b) backend and h1, h2 (b) host scratch.
infl_status score_sqnorms_layer(infl_ctx *ctx, double *out, float *rn, float *h1, float *h2, const infl_linear *ly,
                                const float *D, const float *A, int b, double wgt);

// Per-document gradients of one layer: example i (rows [off[i], off[i+1]) of D (rows,
// d_out) and A (rows, d_in)) gets G_i = [vec(Δ_iᵀ A_i) | Σ_t δ_t] (the layer space's
// block: d_out·d_in row-major, then the bias's d_out when the layer has one) at
// G + (i − i0)·ldg, for i in [i0, i0 + n). Examples of one row each (T = 1) take the
// outer products [δ ⊗ a, δ] in one call when tmp is given (outer_rows into tmp
// (n, d_out (d_in + 1)), then copied); else one GEMM (and a column sum) each.
infl_status score_doc_grads_layer(infl_ctx *ctx, float *G, size_t ldg, float *tmp, const infl_linear *ly,
                                  const float *D, const float *A, const int *off, int i0, int n);
// Host E (n, rows) with E[i, r − off[i0]] = 1 for example i0 + i's rows r: the indicator
// whose GEMM sums token-row terms per example.
void score_seg_indicator(float *E, const int *off, int n, int i0);

// Full per-example gradients G (b, lsize) in the model's layer space from the factors
// of the last backward in w (score_doc_grads_layer per layer; examples of T_i rows).
// tmp holds (b, score_grad_tmp_cols(m)).
infl_status score_full_grads(infl_ctx *ctx, float *G, float *tmp, const infl_model *m, const infl_model_work *w,
                             int b);
size_t score_grad_tmp_cols(const infl_model *m);

#endif
