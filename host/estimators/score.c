/*
 * score.c — the score kernels of one layer (score.h): the ghost dot product, the
 * contraction with preconditioned queries, and the low-rank contraction, as GEMMs,
 * Hadamard products and row dots through the backend table.
 */
#include "score.h"

#include <string.h>

infl_status score_ghost_rows_layer(infl_ctx *ctx, float *R, float *T1, float *T2, const infl_linear *ly,
                                   const float *qD, const float *qA, const float *EQ, int M, int rq, const float *Dz,
                                   const float *Az, int rz, float w) {
    const infl_backend *be = ctx->be;
    int din = ly->d_in, dout = ly->d_out;
    // T1 = Δ_Q Δ_Zᵀ; T2 = A_Q A_Zᵀ + β; T1 ∘= T2 (rq, rz)
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, rq, rz, dout, 1.0f, qD, dout, Dz, dout, 0.0f, T1, rz));
    if (ly->bias) FORWARD_IF_ERROR(be->fill(ctx, T2, 1.0f, (size_t)rq * rz));
    FORWARD_IF_ERROR(
        be->sgemm(ctx, INFL_N, INFL_T, rq, rz, din, 1.0f, qA, din, Az, din, ly->bias ? 1.0f : 0.0f, T2, rz));
    FORWARD_IF_ERROR(be->mul(ctx, T1, T1, T2, (size_t)rq * rz));
    // R += w T1, or summed over each query's token rows: R += w E_Q T1
    if (!EQ) return be->axpby(ctx, R, T1, w, 1.0f, (size_t)M * rz);
    return be->sgemm(ctx, INFL_N, INFL_N, M, rz, rq, w, EQ, rq, T1, rz, 1.0f, R, rz);
}

infl_status score_ghost_layer(infl_ctx *ctx, float *S, float *T1, float *T2, const infl_linear *ly, const float *qD,
                              const float *qA, const float *Dz, const float *Az, int M, int b, float w) {
    return score_ghost_rows_layer(ctx, S, T1, T2, ly, qD, qA, NULL, M, M, Dz, Az, b, w);
}

infl_status score_contract_layer(infl_ctx *ctx, float *S, float *Gz, const infl_linear *ly, const float *V, size_t ldv,
                                 const float *Dz, const float *Az, int M, int b) {
    const infl_backend *be = ctx->be;
    int din = ly->d_in, dout = ly->d_out;
    // the bias: S += (v_q,b)_q Δ_Zᵀ for all queries in one GEMM
    if (ly->bias)
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, M, b, dout, 1.0f, V + (size_t)dout * din, (int)ldv, Dz, dout,
                                   1.0f, S, b));
    // the weights, per query: Gz = Δ_Z V_q,W (b, d_in); S[q, :] += rowdot(Gz, A_Z)
    for (int q = 0; q < M; q++) {
        FORWARD_IF_ERROR(
            be->sgemm(ctx, INFL_N, INFL_N, b, din, dout, 1.0f, Dz, dout, V + (size_t)q * ldv, din, 0.0f, Gz, din));
        FORWARD_IF_ERROR(be->row_dot(ctx, S + (size_t)q * b, Gz, Az, b, din, 1.0f, 1.0f));
    }
    return INFL_OK;
}

infl_status score_lowrank_layer(infl_ctx *ctx, float *S, float *X1, float *X2, const infl_linear *ly, const float *LF,
                                const float *RF, int r, const float *Dz, const float *Az, int M, int b) {
    const infl_backend *be = ctx->be;
    int din = ly->d_in, dout = ly->d_out, ld = M * r;
    // X1 = Δ_Z LF (b, M r); X2 = Ã_Z RF = A_Z RF[:din] (+ the bias row); S[i, q] += Σ_k X1 X2
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, b, ld, dout, 1.0f, Dz, dout, LF, ld, 0.0f, X1, ld));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, b, ld, din, 1.0f, Az, din, RF, ld, 0.0f, X2, ld));
    if (ly->bias) FORWARD_IF_ERROR(be->add_row(ctx, X2, RF + (size_t)din * ld, b, ld));
    return be->row_dot(ctx, S, X1, X2, b * M, r, 1.0f, 1.0f);
}

infl_status score_sqnorms_layer(infl_ctx *ctx, double *out, float *rn, float *h1, float *h2, const infl_linear *ly,
                                const float *D, const float *A, int b, double wgt) {
    const infl_backend *be = ctx->be;
    FORWARD_IF_ERROR(be->row_dot(ctx, rn, D, D, b, ly->d_out, 1.0f, 0.0f));
    FORWARD_IF_ERROR(be->row_dot(ctx, rn + b, A, A, b, ly->d_in, 1.0f, 0.0f));
    FORWARD_IF_ERROR(be->download(ctx, h1, rn, (size_t)b * sizeof(float)));
    FORWARD_IF_ERROR(be->download(ctx, h2, rn + b, (size_t)b * sizeof(float)));
    for (int i = 0; i < b; i++) out[i] += wgt * (double)h1[i] * ((double)h2[i] + (ly->bias ? 1.0 : 0.0));
    return INFL_OK;
}

size_t score_grad_tmp_cols(const infl_model *m) {
    size_t v = 0;
    for (int l = 0; l < m->nlayers; l++) {
        size_t pl = (size_t)m->layer[l].d_out * ((size_t)m->layer[l].d_in + 1);
        v = pl > v ? pl : v;
    }
    return v;
}

infl_status score_doc_grads_layer(infl_ctx *ctx, float *G, size_t ldg, float *tmp, const infl_linear *ly,
                                  const float *D, const float *A, const int *off, int i0, int n) {
    const infl_backend *be = ctx->be;
    int din = ly->d_in, dout = ly->d_out;
    size_t pl = infl_linear_size(ly);
    if (n <= 0) return INFL_OK;
    if (tmp && off[i0 + n] - off[i0] == n) {
        // one row each (T = 1): the rank-one outer products [δ ⊗ a, δ] in one call
        const float *Dr = D + (size_t)off[i0] * dout, *Ar = A + (size_t)off[i0] * din;
        FORWARD_IF_ERROR(be->outer_rows(ctx, tmp, Dr, Ar, n, dout, din));
        return be->copy_2d(ctx, G, (int)ldg, tmp, dout * (din + 1), n, (int)pl);
    }
    for (int i = 0; i < n; i++) {
        int r0 = off[i0 + i], t = off[i0 + i + 1] - r0;
        float *Gi = G + (size_t)i * ldg;
        if (t == 0) {
            FORWARD_IF_ERROR(be->fill(ctx, Gi, 0.0f, pl));
            continue;
        }
        // G_W = Δ_iᵀ A_i (d_out, d_in) row-major; G_b = Σ_t δ_t
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, din, t, 1.0f, D + (size_t)r0 * dout, dout,
                                   A + (size_t)r0 * din, din, 0.0f, Gi, din));
        if (ly->bias)
            FORWARD_IF_ERROR(be->col_sum(ctx, Gi + (size_t)dout * din, D + (size_t)r0 * dout, t, dout, 1.0f, 0.0f));
    }
    return INFL_OK;
}

infl_status score_full_grads(infl_ctx *ctx, float *G, float *tmp, const infl_model *m, const infl_model_work *w,
                             int b) {
    for (int l = 0; l < m->nlayers; l++)
        FORWARD_IF_ERROR(
            score_doc_grads_layer(ctx, G + m->loff[l], m->lsize, tmp, &m->layer[l], w->D[l], w->A[l], w->row_off, 0, b));
    return INFL_OK;
}

void score_seg_indicator(float *E, const int *off, int n, int i0) {
    int r0 = off[i0], rows = off[i0 + n] - r0;
    memset(E, 0, (size_t)n * rows * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int r = off[i0 + i]; r < off[i0 + i + 1]; r++) E[(size_t)i * rows + (r - r0)] = 1.0f;
}
