/*
 * score.c — the score kernels of one layer (score.h): the ghost dot product, the
 * contraction with preconditioned queries, and the low-rank contraction, as GEMMs,
 * Hadamard products and row dots through the backend table.
 */
#include "score.h"

infl_status score_ghost_layer(infl_ctx *ctx, float *S, float *T1, float *T2, const infl_linear *ly, const float *qD,
                              const float *qA, const float *Dz, const float *Az, int M, int b, float w) {
    const infl_backend *be = ctx->be;
    int din = ly->d_in, dout = ly->d_out;
    // T1 = Δ_Q Δ_Zᵀ; T2 = A_Q A_Zᵀ + β; S += w T1 ∘ T2
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, M, b, dout, 1.0f, qD, dout, Dz, dout, 0.0f, T1, b));
    if (ly->bias) FORWARD_IF_ERROR(be->fill(ctx, T2, 1.0f, (size_t)M * b));
    FORWARD_IF_ERROR(
        be->sgemm(ctx, INFL_N, INFL_T, M, b, din, 1.0f, qA, din, Az, din, ly->bias ? 1.0f : 0.0f, T2, b));
    FORWARD_IF_ERROR(be->mul(ctx, T1, T1, T2, (size_t)M * b));
    return be->axpby(ctx, S, T1, w, 1.0f, (size_t)M * b);
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

infl_status score_full_grads(infl_ctx *ctx, float *G, float *tmp, const infl_model *m, const infl_model_work *w,
                             int b) {
    for (int l = 0; l < m->nlayers; l++) {
        const infl_linear *ly = &m->layer[l];
        int din = ly->d_in, dout = ly->d_out;
        size_t pt = (size_t)dout * (din + 1), pl = infl_linear_size(ly);
        FORWARD_IF_ERROR(ctx->be->outer_rows(ctx, tmp, w->D[l], w->A[l], b, dout, din));
        FORWARD_IF_ERROR(ctx->be->copy_2d(ctx, G + m->loff[l], (int)m->lsize, tmp, (int)pt, b, (int)pl));
    }
    return INFL_OK;
}
