/*
 * ekfac.c — applying EK-FAC factors (ekfac.h); the fit that makes them is
 * pipelines/fit.c, whose method is summarised here:
 *
 * Fit, per layer l with per-example factors δ (d_out) and ã = [a; 1] (d_in+1):
 *   pass 1   A = (1/N) Σ ã ãᵀ = (1/N) [AᵀA, Aᵀ1; 1ᵀA, N]   and   S = (1/N) Σ δ δᵀ
 *            (one GEMM each per sub-batch, accumulated in float over a shard on the
 *            backend and in float64 across shards on the host)
 *   eig      symmetrise (C + Cᵀ)/2 and eigendecompose in float64 (backend syevd)
 *   pass 2   Λ = (1/N) (Δ Q_S)^∘2ᵀ (Ã Q_A)^∘2, one GEMM of squares per sub-batch
 * δ is the gradient of the loss at labels drawn from the model (true Fisher; the
 * backend's sample_labels, keyed by seed and example index so a shard size or a
 * backend never changes them; with `samples` > 1 each example draws that many labels,
 * draw d under the key seed ⊕ d·0x9E3779B97F4A7C15, and S and Λ average over them) or
 * at the data's labels (empirical Fisher).
 * Strategies: kfac stops after the eigendecomposition (Λ = λ_S ⊗ λ_A); diagonal
 * skips pass 1 (identity bases, so pass 2 gives the Fisher's diagonal); identity
 * needs no data (Λ = 1).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ekfac.h"

const char *ekfac_strategy_name(infl_strategy s) {
    switch (s) {
    case INFL_STRATEGY_EKFAC: return "ekfac";
    case INFL_STRATEGY_KFAC: return "kfac";
    case INFL_STRATEGY_DIAGONAL: return "diagonal";
    case INFL_STRATEGY_IDENTITY: return "identity";
    }
    return "?";
}

// ---- applying the factors ----

void ekfac_pre_free(infl_ctx *ctx, ekfac_pre *p) {
    if (!p) return;
    for (int l = 0; l < p->L; l++) {
        infl_be_free(ctx, p->RA[l]);
        infl_be_free(ctx, p->RAlast[l]);
        infl_be_free(ctx, p->RS[l]);
        infl_be_free(ctx, p->inv[l]);
    }
    infl_be_free(ctx, p->T1);
    infl_be_free(ctx, p->T2);
    free(p);
}

static infl_status upload_d2f(infl_ctx *ctx, float **dst, const double *src, size_t n, const char *what) {
    float *h = infl_malloc(ctx, n * sizeof(float), what);
    if (!h) return INFL_E_NOMEM;
    for (size_t i = 0; i < n; i++) h[i] = (float)src[i];
    infl_status rc = infl_be_alloc_f(ctx, dst, n, what);
    if (rc == INFL_OK) rc = ctx->be->upload(ctx, *dst, h, n * sizeof(float));
    free(h);
    return rc;
}

// The layers as text: an MLP's width chain "784,256,10" when they form one (every
// layer with a bias, each one's input the previous one's output), else
// "name d_in->d_out, ...".
static void layers_str(const infl_linear *ly, int L, char *buf, size_t size) {
    int chain = 1;
    for (int l = 0; l < L; l++) chain &= ly[l].bias && (l == 0 || ly[l].d_in == ly[l - 1].d_out);
    size_t at = 0;
    buf[0] = 0;
    for (int l = 0; l <= L && at < size; l++) {
        if (chain)
            at += (size_t)snprintf(buf + at, size - at, "%s%d", l ? "," : "", l < L ? ly[l].d_in : ly[L - 1].d_out);
        else if (l < L)
            at += (size_t)snprintf(buf + at, size - at, "%s%s %d->%d", l ? ", " : "", ly[l].name, ly[l].d_in,
                                   ly[l].d_out);
    }
}

infl_status ekfac_check_shape(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_model *m) {
    int same = f->L == m->nlayers;
    for (int l = 0; same && l < f->L; l++) {
        const infl_linear *a = &f->layer[l], *b = &m->layer[l];
        same = a->d_in == b->d_in && a->d_out == b->d_out && a->bias == b->bias && strcmp(a->name, b->name) == 0;
    }
    if (!same) {
        char fw[1024], mw[1024];
        layers_str(f->layer, f->L, fw, sizeof fw);
        layers_str(m->layer, m->nlayers, mw, sizeof mw);
        return infl_seterr(ctx, INFL_E_SHAPE, "%s: factors fitted for layers %s, but the run's %s model has layers %s",
                           fpath, fw, infl_model_kind_of(m), mw);
    }
    return INFL_OK;
}

infl_status ekfac_pre_create(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_model *m,
                             infl_method method, double damping, int damping_auto, ekfac_pre **out) {
    *out = NULL;
    FORWARD_IF_ERROR(ekfac_check_shape(ctx, f, fpath, m));
    // the method's strategy
    const char *want = method == INFL_METHOD_EKFAC ? "ekfac" : method == INFL_METHOD_KFAC ? "kfac" : "diagonal";
    // identity factors (Λ = 1, no curvature) serve every method: grad-dot, damped
    int ok = strcmp(f->strategy, want) == 0 || strcmp(f->strategy, "identity") == 0 ||
             (method == INFL_METHOD_KFAC && strcmp(f->strategy, "ekfac") == 0);
    RETURN_IF(ctx, !ok, INFL_E_ARG,
              "%s: factors fitted with --strategy %s; --method %s needs factors fitted with --strategy %s%s", fpath,
              f->strategy, want, want, method == INFL_METHOD_KFAC ? " (or ekfac)" : "");
    RETURN_IF(ctx, !damping_auto && (!(damping >= 0) || !isfinite(damping)), INFL_E_ARG,
              "--damping: expected auto or a value >= 0");

    ekfac_pre *p = infl_calloc(ctx, 1, sizeof *p, "the preconditioner");
    if (!p) return INFL_E_NOMEM;
    p->L = m->nlayers;
    p->identity = strcmp(f->strategy, "diagonal") == 0 || strcmp(f->strategy, "identity") == 0;
    for (int l = 0; l < p->L; l++) p->layer[l] = m->layer[l];
    infl_status rc = INFL_OK;
    double *lam = NULL;
    for (int l = 0; l < p->L; l++) {
        const infl_linear *ly = &p->layer[l];
        int din = ly->d_in, ni = infl_linear_ni(ly), dout = ly->d_out;
        size_t nl = (size_t)dout * ni;
        free(lam);
        lam = infl_malloc(ctx, nl * sizeof(double), "eigenvalues");
        GOTO_NOMEM_IF(!lam);
        double mean = 0;
        for (int i = 0; i < dout; i++)
            for (int j = 0; j < ni; j++) {
                double v = method == INFL_METHOD_KFAC ? f->S_vals[l][i] * f->A_vals[l][j] : f->lambda[l][(size_t)i * ni + j];
                // PSD in exact arithmetic: a rounding-negative eigenvalue counts as 0
                lam[(size_t)i * ni + j] = v > 0 ? v : 0;
                mean += lam[(size_t)i * ni + j];
            }
        mean /= (double)nl;
        p->mean_lambda[l] = mean;
        p->damping[l] = damping_auto ? 0.1 * mean : damping;
        double lo = INFINITY;
        for (size_t i = 0; i < nl; i++) {
            lam[i] = 1.0 / (lam[i] + m->wd + p->damping[l]);
            lo = fmin(lo, 1.0 / lam[i]);
        }
        GOTO_IF(ctx, !(lo > 0) || !isfinite(lo), INFL_E_NUMERIC,
                "%s: layer %d (%s): the factors are singular (smallest eigenvalue + weight decay + damping = %g); "
                "give --damping > 0%s",
                fpath, l, ly->name, lo, damping_auto ? " (auto damping is 0 here: mean(Λ) = 0)" : "");
        CHECK(upload_d2f(ctx, &p->inv[l], lam, nl, "inverse eigenvalues"));
        CHECK(upload_d2f(ctx, &p->RA[l], f->A_vecs[l], (size_t)ni * ni, "eigenvectors of A"));
        CHECK(upload_d2f(ctx, &p->RS[l], f->S_vecs[l], (size_t)dout * dout, "eigenvectors of S"));
        if (ly->bias) {
            for (int k = 0; k < ni; k++) lam[k] = f->A_vecs[l][(size_t)k * ni + din];
            CHECK(upload_d2f(ctx, &p->RAlast[l], lam, (size_t)ni, "eigenvectors of A"));
        }
    }
    free(lam);
    *out = p;
    return INFL_OK;
done:
    free(lam);
    ekfac_pre_free(ctx, p);
    return rc;
}

infl_status ekfac_identity_factors(infl_ctx *ctx, float *DQ, float *AQ, const infl_linear *ly, const float *Delta,
                                   const float *A, int b) {
    const infl_backend *be = ctx->be;
    int din = ly->d_in, ni = infl_linear_ni(ly);
    // DQ = Δ (b, d_out); AQ = Ã = [A | 1] or A (b, ni)
    FORWARD_IF_ERROR(be->copy(ctx, DQ, Delta, (size_t)b * ly->d_out * sizeof(float)));
    if (ly->bias) FORWARD_IF_ERROR(be->fill(ctx, AQ, 1.0f, (size_t)b * ni));
    return be->copy_2d(ctx, AQ, ni, A, din, b, din);
}

infl_status ekfac_rotate(infl_ctx *ctx, float *DQ, float *AQ, const ekfac_pre *p, int l, const float *Delta,
                         const float *A, int b) {
    const infl_backend *be = ctx->be;
    const infl_linear *ly = &p->layer[l];
    int din = ly->d_in, ni = infl_linear_ni(ly), dout = ly->d_out;
    if (p->identity) return ekfac_identity_factors(ctx, DQ, AQ, ly, Delta, A, b);
    // DQ = Δ Q_S = Δ RSᵀ; AQ = Ã Q_A = A RA[:, :din]ᵀ (+ 1 RA[:, din]ᵀ with a bias)
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, b, dout, dout, 1.0f, Delta, dout, p->RS[l], dout, 0.0f, DQ, dout));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, b, ni, din, 1.0f, A, din, p->RA[l], ni, 0.0f, AQ, ni));
    return ly->bias ? be->add_row(ctx, AQ, p->RAlast[l], b, ni) : INFL_OK;
}

// Gathers query q's layer-l gradient from the layer space ([W | b] at g) into W̃
// (d_out, ni), the bias (if any) its last column.
static infl_status gather(infl_ctx *ctx, const infl_linear *ly, const float *g, float *Wt) {
    int din = ly->d_in, ni = infl_linear_ni(ly), dout = ly->d_out;
    FORWARD_IF_ERROR(ctx->be->copy_2d(ctx, Wt, ni, g, din, dout, din));
    return ly->bias ? ctx->be->copy_2d(ctx, Wt + din, ni, g + (size_t)dout * din, 1, dout, 1) : INFL_OK;
}

static infl_status scatter(infl_ctx *ctx, const infl_linear *ly, const float *Wt, float *g) {
    int din = ly->d_in, ni = infl_linear_ni(ly), dout = ly->d_out;
    FORWARD_IF_ERROR(ctx->be->copy_2d(ctx, g, din, Wt, ni, dout, din));
    return ly->bias ? ctx->be->copy_2d(ctx, g + (size_t)dout * din, 1, Wt + din, ni, dout, 1) : INFL_OK;
}

infl_status ekfac_precondition(infl_ctx *ctx, float *V, ekfac_pre *p, const infl_model *m, const float *G, int M) {
    const infl_backend *be = ctx->be;
    size_t P = m->lsize, blk = infl_model_max_layer_size(m);
    // queries per chunk: scratch of at most 16 Mi floats each (or one query)
    int mc = (int)((16u << 20) / blk);
    mc = mc < 1 ? 1 : mc > M ? M : mc;
    if (p->scratch_rows < mc) {
        infl_be_free(ctx, p->T1);
        infl_be_free(ctx, p->T2);
        p->T1 = p->T2 = NULL;
        p->scratch_rows = 0;
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &p->T1, (size_t)mc * blk, "preconditioning scratch"));
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &p->T2, (size_t)mc * blk, "preconditioning scratch"));
        p->scratch_rows = mc;
    }
    for (int q0 = 0; q0 < M; q0 += mc) {
        int mq = q0 + mc <= M ? mc : M - q0;
        for (int l = 0; l < p->L; l++) {
            const infl_linear *ly = &p->layer[l];
            int ni = infl_linear_ni(ly), dout = ly->d_out;
            size_t nl = (size_t)dout * ni, off = m->loff[l];
            for (int q = 0; q < mq; q++)
                FORWARD_IF_ERROR(gather(ctx, ly, G + (size_t)(q0 + q) * P + off, p->T1 + q * nl));
            if (p->identity) {  // identity bases: V = G ⊘ (Λ + wd + λ)
                for (int q = 0; q < mq; q++) {
                    FORWARD_IF_ERROR(be->mul(ctx, p->T1 + q * nl, p->T1 + q * nl, p->inv[l], nl));
                    FORWARD_IF_ERROR(scatter(ctx, ly, p->T1 + q * nl, V + (size_t)(q0 + q) * P + off));
                }
                continue;
            }
            // T2 = W̃ Q_A (all queries in one GEMM); T1_q = Q_Sᵀ T2_q ⊘ (Λ + wd + λ)
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, mq * dout, ni, ni, 1.0f, p->T1, ni, p->RA[l], ni, 0.0f,
                                       p->T2, ni));
            for (int q = 0; q < mq; q++) {
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, dout, ni, dout, 1.0f, p->RS[l], dout, p->T2 + q * nl,
                                           ni, 0.0f, p->T1 + q * nl, ni));
                FORWARD_IF_ERROR(be->mul(ctx, p->T1 + q * nl, p->T1 + q * nl, p->inv[l], nl));
                // back: T2_q = Q_S T1_q
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, ni, dout, 1.0f, p->RS[l], dout, p->T1 + q * nl,
                                           ni, 0.0f, p->T2 + q * nl, ni));
            }
            // T1 = T2 Q_Aᵀ
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, mq * dout, ni, ni, 1.0f, p->T2, ni, p->RA[l], ni, 0.0f,
                                       p->T1, ni));
            for (int q = 0; q < mq; q++)
                FORWARD_IF_ERROR(scatter(ctx, ly, p->T1 + q * nl, V + (size_t)(q0 + q) * P + off));
        }
    }
    return INFL_OK;
}

infl_status ekfac_lowrank(infl_ctx *ctx, float **LF, float **RF, int *rl, double *energy, const infl_model *m,
                          const float *V, int M, int r) {
    const infl_backend *be = ctx->be;
    size_t P = m->lsize;
    int L = m->nlayers, maxg = 0;
    for (int l = 0; l < L; l++) {
        int ni = infl_linear_ni(&m->layer[l]), dout = m->layer[l].d_out;
        int g = dout <= ni ? dout : ni;
        maxg = g > maxg ? g : maxg;
        LF[l] = RF[l] = NULL;
    }
    size_t blk = infl_model_max_layer_size(m);
    float *Vq = NULL, *gram = NULL, *U = NULL, *hg = NULL, *hU = NULL;
    double *dg = NULL, *hd = NULL, *w = NULL, *hw = NULL;
    infl_status rc = INFL_OK;
    CHECK(infl_be_alloc_f(ctx, &Vq, blk, "a query matrix"));
    CHECK(infl_be_alloc_f(ctx, &gram, (size_t)maxg * maxg, "a Gram matrix"));
    CHECK(infl_be_alloc_f(ctx, &U, (size_t)maxg * maxg, "singular vectors"));
    CHECK(be->alloc(ctx, (size_t)maxg * maxg * sizeof(double), (void **)&dg));
    CHECK(be->alloc(ctx, (size_t)maxg * sizeof(double), (void **)&w));
    hg = infl_malloc(ctx, (size_t)maxg * maxg * sizeof(float), "a Gram matrix");
    hU = infl_malloc(ctx, (size_t)maxg * maxg * sizeof(float), "singular vectors");
    hd = infl_malloc(ctx, (size_t)maxg * maxg * sizeof(double), "a Gram matrix");
    hw = infl_malloc(ctx, (size_t)maxg * sizeof(double), "singular values");
    GOTO_NOMEM_IF(!hg || !hU || !hd || !hw);
    double esum = 0;
    for (int l = 0; l < L; l++) {
        const infl_linear *ly = &m->layer[l];
        int ni = infl_linear_ni(ly), dout = ly->d_out;
        int left = dout <= ni, g = left ? dout : ni;
        int k = r < g ? r : g;
        rl[l] = k;
        int ld = M * k;
        const char *hint = "a lower --query-rank, or fewer queries (--query FILE:/split[begin:end])";
        CHECK(infl_be_alloc_hint(ctx, (void **)&LF[l], (size_t)dout * ld * sizeof(float), "low-rank query factors",
                                 hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&RF[l], (size_t)ni * ld * sizeof(float), "low-rank query factors",
                                 hint));
        for (int q = 0; q < M; q++) {
            CHECK(gather(ctx, ly, V + (size_t)q * P + m->loff[l], Vq));
            // the smaller Gram matrix: V Vᵀ (left singular vectors) or Vᵀ V (right)
            if (left)
                CHECK(be->sgemm(ctx, INFL_N, INFL_T, g, g, ni, 1.0f, Vq, ni, Vq, ni, 0.0f, gram, g));
            else
                CHECK(be->sgemm(ctx, INFL_T, INFL_N, g, g, dout, 1.0f, Vq, ni, Vq, ni, 0.0f, gram, g));
            CHECK(be->download(ctx, hg, gram, (size_t)g * g * sizeof(float)));
            for (size_t i = 0; i < (size_t)g * g; i++) hd[i] = hg[i];
            double tot = 0, kept = 0;  // |V|²_F = trace of the Gram matrix
            for (int i = 0; i < g; i++) tot += hd[(size_t)i * g + i];
            CHECK(be->upload(ctx, dg, hd, (size_t)g * g * sizeof(double)));
            // the top-k eigenpairs: by syevd_top when the backend has it (k < g), else all
            // of them; either way the eigenvector of the j-th largest lands in row `top(j)`
            int partial = be->syevd_top && k < g;
            if (partial)
                CHECK(be->syevd_top(ctx, dg, w, g, k));
            else
                CHECK(be->syevd(ctx, dg, w, g));
            int nrows = partial ? k : g;
            CHECK(be->download(ctx, hd, dg, (size_t)nrows * g * sizeof(double)));
            CHECK(be->download(ctx, hw, w, (size_t)nrows * sizeof(double)));
            for (int i = 0; i < k; i++) kept += hw[nrows - 1 - i] > 0 ? hw[nrows - 1 - i] : 0;
            esum += tot > 0 ? (kept < tot ? kept / tot : 1.0) : 1.0;
            // U (g, k): the top-k eigenvectors as columns (eigenvalues ascending: rows nrows-1, nrows-2, ...)
            for (int i = 0; i < g; i++)
                for (int j = 0; j < k; j++) hU[(size_t)i * k + j] = (float)hd[(size_t)(nrows - 1 - j) * g + i];
            CHECK(be->upload(ctx, U, hU, (size_t)g * k * sizeof(float)));
            if (left) {
                // LF_q = U; RF_q = Vᵀ U
                CHECK(be->copy_2d(ctx, LF[l] + (size_t)q * k, ld, U, k, dout, k));
                CHECK(be->sgemm(ctx, INFL_T, INFL_N, ni, k, dout, 1.0f, Vq, ni, U, k, 0.0f, RF[l] + (size_t)q * k, ld));
            } else {
                // RF_q = W; LF_q = V W
                CHECK(be->copy_2d(ctx, RF[l] + (size_t)q * k, ld, U, k, ni, k));
                CHECK(be->sgemm(ctx, INFL_N, INFL_N, dout, k, ni, 1.0f, Vq, ni, U, k, 0.0f, LF[l] + (size_t)q * k, ld));
            }
        }
    }
    *energy = esum / ((double)M * L);
done:
    if (rc < 0)
        for (int l = 0; l < L; l++) {
            infl_be_free(ctx, LF[l]);
            infl_be_free(ctx, RF[l]);
            LF[l] = RF[l] = NULL;
        }
    infl_be_free(ctx, Vq);
    infl_be_free(ctx, gram);
    infl_be_free(ctx, U);
    infl_be_free(ctx, dg);
    infl_be_free(ctx, w);
    free(hg);
    free(hU);
    free(hd);
    free(hw);
    return rc;
}

