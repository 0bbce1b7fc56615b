/*
 * ekfac.c — fitting EK-FAC factors (`infl fit`) and applying them (ekfac.h).
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

#include "backend.h"
#include "models/mlp.h"
#include "models/train.h"
#include "sched/reader.h"
#include "sched/stage.h"
#include "store/store.h"
#include "ekfac.h"

static const char *strategy_name(infl_strategy s) {
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

infl_status ekfac_check_shape(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_mlp_spec *spec) {
    int same = f->L == spec->L;
    for (int l = 0; same && l <= spec->L; l++) same = f->widths[l] == spec->widths[l];
    if (!same) {
        char fw[256] = "", mw[256] = "";
        for (int l = 0; l <= f->L; l++) snprintf(fw + strlen(fw), sizeof fw - strlen(fw), "%s%d", l ? "," : "", f->widths[l]);
        for (int l = 0; l <= spec->L; l++)
            snprintf(mw + strlen(mw), sizeof mw - strlen(mw), "%s%d", l ? "," : "", spec->widths[l]);
        return infl_seterr(ctx, INFL_E_SHAPE, "%s: factors fitted for layers %s, but the run's model has layers %s",
                           fpath, fw, mw);
    }
    return INFL_OK;
}

infl_status ekfac_pre_create(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_mlp_spec *spec,
                             infl_method method, double damping, int damping_auto, ekfac_pre **out) {
    *out = NULL;
    FORWARD_IF_ERROR(ekfac_check_shape(ctx, f, fpath, spec));
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
    p->L = spec->L;
    p->identity = strcmp(f->strategy, "diagonal") == 0 || strcmp(f->strategy, "identity") == 0;
    for (int l = 0; l <= spec->L; l++) p->widths[l] = spec->widths[l];
    infl_status rc = INFL_OK;
    double *lam = NULL;
    for (int l = 0; l < spec->L; l++) {
        int din = spec->widths[l], ni = din + 1, dout = spec->widths[l + 1];
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
            lam[i] = 1.0 / (lam[i] + spec->wd + p->damping[l]);
            lo = fmin(lo, 1.0 / lam[i]);
        }
        GOTO_IF(ctx, !(lo > 0) || !isfinite(lo), INFL_E_NUMERIC,
                "%s: layer %d: the factors are singular (smallest eigenvalue + weight decay + damping = %g); "
                "give --damping > 0%s",
                fpath, l, lo, damping_auto ? " (auto damping is 0 here: mean(Λ) = 0)" : "");
        CHECK(upload_d2f(ctx, &p->inv[l], lam, nl, "inverse eigenvalues"));
        CHECK(upload_d2f(ctx, &p->RA[l], f->A_vecs[l], (size_t)ni * ni, "eigenvectors of A"));
        CHECK(upload_d2f(ctx, &p->RS[l], f->S_vecs[l], (size_t)dout * dout, "eigenvectors of S"));
        for (int k = 0; k < ni; k++) lam[k] = f->A_vecs[l][(size_t)k * ni + din];
        CHECK(upload_d2f(ctx, &p->RAlast[l], lam, (size_t)ni, "eigenvectors of A"));
    }
    free(lam);
    *out = p;
    return INFL_OK;
done:
    free(lam);
    ekfac_pre_free(ctx, p);
    return rc;
}

// The factors in identity bases: DQ = Δ (b, d_out), AQ = Ã = [A | 1] (b, d_in+1).
static infl_status identity_factors(infl_ctx *ctx, const float *Delta, const float *A, int b, int din, int dout,
                                    float *DQ, float *AQ) {
    const infl_backend *be = ctx->be;
    FORWARD_IF_ERROR(be->copy(ctx, DQ, Delta, (size_t)b * dout * sizeof(float)));
    FORWARD_IF_ERROR(be->fill(ctx, AQ, 1.0f, (size_t)b * (din + 1)));
    return be->copy_2d(ctx, AQ, din + 1, A, din, b, din);
}

infl_status ekfac_rotate(infl_ctx *ctx, const ekfac_pre *p, int l, const float *Delta, const float *A, int b,
                         float *DQ, float *AQ) {
    const infl_backend *be = ctx->be;
    int din = p->widths[l], ni = din + 1, dout = p->widths[l + 1];
    if (p->identity) return identity_factors(ctx, Delta, A, b, din, dout, DQ, AQ);
    // DQ = Δ Q_S = Δ RSᵀ; AQ = Ã Q_A = A RA[:, :din]ᵀ + 1 RA[:, din]ᵀ
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, b, dout, dout, 1.0f, Delta, dout, p->RS[l], dout, 0.0f, DQ, dout));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, b, ni, din, 1.0f, A, din, p->RA[l], ni, 0.0f, AQ, ni));
    return be->add_row(ctx, AQ, p->RAlast[l], b, ni);
}

// Largest d_out · (d_in+1) over the layers.
static size_t max_layer_block(const int *widths, int L) {
    size_t m = 0;
    for (int l = 0; l < L; l++) {
        size_t v = (size_t)widths[l + 1] * (widths[l] + 1);
        m = v > m ? v : m;
    }
    return m;
}

// Gathers query q's layer-l gradient from the flat layout into W̃ (d_out, d_in+1).
static infl_status gather(infl_ctx *ctx, const infl_mlp_spec *spec, int l, const float *g, float *Wt) {
    int din = spec->widths[l], ni = din + 1, dout = spec->widths[l + 1];
    FORWARD_IF_ERROR(ctx->be->copy_2d(ctx, Wt, ni, g + infl_mlp_woff(spec, l), din, dout, din));
    return ctx->be->copy_2d(ctx, Wt + din, ni, g + infl_mlp_boff(spec, l), 1, dout, 1);
}

static infl_status scatter(infl_ctx *ctx, const infl_mlp_spec *spec, int l, const float *Wt, float *g) {
    int din = spec->widths[l], ni = din + 1, dout = spec->widths[l + 1];
    FORWARD_IF_ERROR(ctx->be->copy_2d(ctx, g + infl_mlp_woff(spec, l), din, Wt, ni, dout, din));
    return ctx->be->copy_2d(ctx, g + infl_mlp_boff(spec, l), 1, Wt + din, ni, dout, 1);
}

infl_status ekfac_precondition(infl_ctx *ctx, ekfac_pre *p, const infl_mlp_spec *spec, const float *G, float *V,
                               int M) {
    const infl_backend *be = ctx->be;
    size_t P = infl_mlp_nparams(spec), blk = max_layer_block(p->widths, p->L);
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
        int m = q0 + mc <= M ? mc : M - q0;
        for (int l = 0; l < p->L; l++) {
            int ni = p->widths[l] + 1, dout = p->widths[l + 1];
            size_t nl = (size_t)dout * ni;
            for (int q = 0; q < m; q++) FORWARD_IF_ERROR(gather(ctx, spec, l, G + (size_t)(q0 + q) * P, p->T1 + q * nl));
            if (p->identity) {  // identity bases: V = G ⊘ (Λ + wd + λ)
                for (int q = 0; q < m; q++) {
                    FORWARD_IF_ERROR(be->mul(ctx, p->T1 + q * nl, p->T1 + q * nl, p->inv[l], nl));
                    FORWARD_IF_ERROR(scatter(ctx, spec, l, p->T1 + q * nl, V + (size_t)(q0 + q) * P));
                }
                continue;
            }
            // T2 = W̃ Q_A (all queries in one GEMM); T1_q = Q_Sᵀ T2_q ⊘ (Λ + wd + λ)
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, m * dout, ni, ni, 1.0f, p->T1, ni, p->RA[l], ni, 0.0f,
                                       p->T2, ni));
            for (int q = 0; q < m; q++) {
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, dout, ni, dout, 1.0f, p->RS[l], dout, p->T2 + q * nl,
                                           ni, 0.0f, p->T1 + q * nl, ni));
                FORWARD_IF_ERROR(be->mul(ctx, p->T1 + q * nl, p->T1 + q * nl, p->inv[l], nl));
                // back: T2_q = Q_S T1_q
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, ni, dout, 1.0f, p->RS[l], dout, p->T1 + q * nl,
                                           ni, 0.0f, p->T2 + q * nl, ni));
            }
            // T1 = T2 Q_Aᵀ
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, m * dout, ni, ni, 1.0f, p->T2, ni, p->RA[l], ni, 0.0f,
                                       p->T1, ni));
            for (int q = 0; q < m; q++)
                FORWARD_IF_ERROR(scatter(ctx, spec, l, p->T1 + q * nl, V + (size_t)(q0 + q) * P));
        }
    }
    return INFL_OK;
}

infl_status ekfac_lowrank(infl_ctx *ctx, const infl_mlp_spec *spec, const float *V, int M, int r, float **LF,
                          float **RF, int *rl, double *energy) {
    const infl_backend *be = ctx->be;
    size_t P = infl_mlp_nparams(spec);
    int L = spec->L, maxg = 0;
    for (int l = 0; l < L; l++) {
        int din = spec->widths[l], ni = din + 1, dout = spec->widths[l + 1];
        int g = dout <= ni ? dout : ni;
        maxg = g > maxg ? g : maxg;
        LF[l] = RF[l] = NULL;
    }
    size_t blk = max_layer_block(spec->widths, L);
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
        int din = spec->widths[l], ni = din + 1, dout = spec->widths[l + 1];
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
            CHECK(gather(ctx, spec, l, V + (size_t)q * P, Vq));
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

// ---- fitting ----

infl_fit_options infl_fit_options_default(void) {
    infl_fit_options o;
    memset(&o, 0, sizeof o);
    o.strategy = INFL_STRATEGY_EKFAC;
    o.samples = 1;
    o.shard_mb = 64;
    return o;
}

typedef struct {
    infl_ctx *ctx;
    const infl_fit_options *o;
    const infl_mlp_spec *spec;
    infl_split *split;
    int64_t N, D, Kt;
    int B;
    int draws;                      // labels per example (1 for the empirical Fisher)
    float *W;                       // checkpoint weights (backend)
    infl_mlp_work *work;
    infl_stage st;                  // double-buffered sub-batches (stage.h)
    float *X, *byf;                 // the current sub-batch: rows, targets (sampled or data)
    int32_t *by;                    // labels (sampled or data)
    float *accA[INFL_MAX_LAYERS];   // (ni, ni) pass 1; rows < din and row din (column sums)
    float *accS[INFL_MAX_LAYERS];   // (dout, dout)
    float *accL[INFL_MAX_LAYERS];   // (dout, ni) pass 2
    float *DQ, *AQ;                 // (B, max dout), (B, max ni)
    float *hbuf;                    // host (max block)
    double flops;
    double wait;
} fitter;

static uint64_t draw_seed(uint64_t seed, int draw) { return seed ^ ((uint64_t)draw * 0x9E3779B97F4A7C15ull); }

// Forward (draw 0 only) and backward of b rows uploaded in X (their first row is
// `index0` within the split), at sampled or data labels.
static infl_status fit_factors(fitter *F, int b, int64_t index0, int draw) {
    infl_ctx *ctx = F->ctx;
    const infl_mlp_spec *s = F->spec;
    if (draw == 0) {
        FORWARD_IF_ERROR(infl_mlp_forward(ctx, F->W, F->X, b, F->work));
        F->flops += infl_mlp_fb_flops(s, b) / 2;
    }
    if (!F->o->fisher_empirical)
        FORWARD_IF_ERROR(ctx->be->sample_labels(ctx, s->loss, F->work->Z[s->L - 1], b, s->widths[s->L],
                                                draw_seed(F->o->seed, draw), index0, F->by, F->byf));
    FORWARD_IF_ERROR(infl_mlp_backward(ctx, F->W, F->by, F->byf, F->work, NULL, 1.0f));
    F->flops += infl_mlp_fb_flops(s, b) / 2;
    return INFL_OK;
}

// Adds the device accumulators into the host sums (float64) and clears them.
static infl_status flush(fitter *F, int pass, double **hA, double **hS, double **hL) {
    infl_ctx *ctx = F->ctx;
    const infl_mlp_spec *s = F->spec;
    for (int l = 0; l < s->L; l++) {
        size_t ni = (size_t)s->widths[l] + 1, no = (size_t)s->widths[l + 1];
        float *acc[2] = {pass == 1 ? F->accA[l] : F->accL[l], pass == 1 ? F->accS[l] : NULL};
        double *dst[2] = {pass == 1 ? hA[l] : hL[l], pass == 1 ? hS[l] : NULL};
        size_t n[2] = {pass == 1 ? ni * ni : no * ni, no * no};
        for (int i = 0; i < 2; i++) {
            if (!acc[i]) continue;
            FORWARD_IF_ERROR(ctx->be->download(ctx, F->hbuf, acc[i], n[i] * sizeof(float)));
            for (size_t j = 0; j < n[i]; j++) dst[i][j] += F->hbuf[j];
            FORWARD_IF_ERROR(ctx->be->fill(ctx, acc[i], 0.0f, n[i]));
        }
    }
    return INFL_OK;
}

// One streamed pass over the split: pass 1 accumulates A and S, pass 2 Λ with the
// rotation p (identity bases for diagonal: p NULL means Q = I).
static infl_status fit_pass(fitter *F, int pass, const ekfac_pre *p, double **hA, double **hS, double **hL) {
    infl_ctx *ctx = F->ctx;
    const infl_backend *be = ctx->be;
    const infl_mlp_spec *s = F->spec;
    const int64_t begin = store_split_info(F->split)->begin;
    int64_t S = F->o->shard_rows > 0 ? (F->o->shard_rows < F->N ? F->o->shard_rows : F->N)
                                     : infl_shard_rows(F->N, F->D, F->Kt, F->o->shard_mb > 0 ? F->o->shard_mb : 64, F->B);
    infl_reader *rd = NULL;
    infl_status rc = INFL_OK;
    // shard buffers in the backend's host memory (pinned on CUDA)
    CHECK(infl_reader_start(ctx, F->split, S, 2, 0, -1, infl_be_host_alloc_hook, infl_be_host_free_hook, ctx, &rd));
    int64_t done_rows = 0;
    const int labels = F->o->fisher_empirical;  // else sampled on the backend into F->by / F->byf
    for (;;) {
        infl_shard *sh;
        CHECK(infl_reader_next(ctx, rd, &sh));
        if (sh->n == 0) break;
        // sub-batches double-buffered: the upload of the next one overlaps the work on
        // this one; nothing waits on the host until flush's downloads, once a shard
        CHECK(infl_stage_begin(ctx, &F->st, sh, labels));
        for (;;) {
            int64_t r0;
            int b, cur;
            CHECK(infl_stage_next(ctx, &F->st, &r0, &b, &cur));
            if (b == 0) break;
            F->X = F->st.x[cur];
            F->by = F->st.y[cur];
            F->byf = F->st.yf[cur];
            for (int draw = 0; draw < F->draws; draw++) {
                CHECK(fit_factors(F, b, begin + sh->row0 + r0, draw));
                for (int l = 0; l < s->L; l++) {
                    int din = s->widths[l], ni = din + 1, dout = s->widths[l + 1];
                    const float *Dl, *Al;
                    infl_mlp_factors(F->work, l, &Dl, &Al);
                    if (pass == 1) {
                        // S += ΔᵀΔ / draws; A[:din, :din] += AᵀA; A[din, :din] += 1ᵀA (once)
                        CHECK(be->sgemm(ctx, INFL_T, INFL_N, dout, dout, b, 1.0f / F->draws, Dl, dout, Dl, dout, 1.0f,
                                        F->accS[l], dout));
                        F->flops += 2.0 * b * (double)dout * dout;
                        if (draw == 0) {
                            CHECK(be->sgemm(ctx, INFL_T, INFL_N, din, din, b, 1.0f, Al, din, Al, din, 1.0f, F->accA[l],
                                            ni));
                            CHECK(be->col_sum(ctx, F->accA[l] + (size_t)din * ni, Al, b, din, 1.0f, 1.0f));
                            F->flops += 2.0 * b * (double)din * din + (double)b * din;
                        }
                    } else {
                        float *DQ = F->DQ, *AQ = F->AQ;
                        if (p) {
                            CHECK(ekfac_rotate(ctx, p, l, Dl, Al, b, DQ, AQ));
                            F->flops += 2.0 * b * ((double)dout * dout + (double)din * ni);
                        } else {
                            CHECK(identity_factors(ctx, Dl, Al, b, din, dout, DQ, AQ));
                        }
                        CHECK(be->mul(ctx, DQ, DQ, DQ, (size_t)b * dout));
                        CHECK(be->mul(ctx, AQ, AQ, AQ, (size_t)b * ni));
                        CHECK(be->sgemm(ctx, INFL_T, INFL_N, dout, ni, b, 1.0f / F->draws, DQ, dout, AQ, ni, 1.0f,
                                        F->accL[l], ni));
                        F->flops += 2.0 * b * (double)dout * ni + (double)b * (dout + ni);
                    }
                }
            }
        }
        CHECK(flush(F, pass, hA, hS, hL));
        done_rows += sh->n;
        infl_reader_release(rd, sh);
        infl_progress(ctx, pass == 1 ? "fit: covariances" : "fit: eigenvalue correction", (uint64_t)done_rows,
                      (uint64_t)F->N, strategy_name(F->o->strategy));
    }
    double read_s = 0, wait_s = 0;
    infl_reader_stats(rd, &read_s, &wait_s);
    F->wait += wait_s;
done:
    infl_reader_stop(rd);
    return rc;
}

// Symmetrises C (n, n) in place, scales by 1/N, eigendecomposes on the backend:
// C becomes the eigenvectors (rows), vals the eigenvalues ascending.
static infl_status eig(infl_ctx *ctx, double *C, double *vals, int n, double N, const char *what, int layer) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) {
            double v = 0.5 * (C[(size_t)i * n + j] + C[(size_t)j * n + i]) / N;
            C[(size_t)i * n + j] = C[(size_t)j * n + i] = v;
        }
    for (int i = 0; i < n; i++) C[(size_t)i * n + i] /= N;
    for (size_t i = 0; i < (size_t)n * n; i++)
        RETURN_IF(ctx, !isfinite(C[i]), INFL_E_NUMERIC,
                  "layer %d: the covariance %s has a non-finite entry: the checkpoint may have diverged", layer, what);
    double *dA = NULL, *dw = NULL;
    infl_status rc = INFL_OK;
    CHECK(ctx->be->alloc(ctx, (size_t)n * n * sizeof(double), (void **)&dA));
    CHECK(ctx->be->alloc(ctx, (size_t)n * sizeof(double), (void **)&dw));
    CHECK(ctx->be->upload(ctx, dA, C, (size_t)n * n * sizeof(double)));
    rc = ctx->be->syevd(ctx, dA, dw, n);
    if (rc < 0) {
        infl_errprefix(ctx, "layer %d, covariance %s (%d x %d)", layer, what, n, n);
        goto done;
    }
    CHECK(ctx->be->download(ctx, C, dA, (size_t)n * n * sizeof(double)));
    CHECK(ctx->be->download(ctx, vals, dw, (size_t)n * sizeof(double)));
    for (int i = 0; i < n; i++)
        GOTO_IF(ctx, !isfinite(vals[i]), INFL_E_NUMERIC, "layer %d: an eigenvalue of %s is not finite", layer, what);
done:
    infl_be_free(ctx, dA);
    infl_be_free(ctx, dw);
    return rc;
}

static void set_identity(double *Q, int n) {
    memset(Q, 0, (size_t)n * n * sizeof(double));
    for (int i = 0; i < n; i++) Q[(size_t)i * n + i] = 1.0;
}

static void fitter_free(fitter *F) {
    infl_ctx *ctx = F->ctx;
    for (int l = 0; l < INFL_MAX_LAYERS; l++) {
        infl_be_free(ctx, F->accA[l]);
        infl_be_free(ctx, F->accS[l]);
        infl_be_free(ctx, F->accL[l]);
    }
    infl_be_free(ctx, F->W);
    infl_stage_free(ctx, &F->st);
    infl_be_free(ctx, F->DQ);
    infl_be_free(ctx, F->AQ);
    infl_mlp_work_free(ctx, F->work);
    free(F->hbuf);
    store_split_close(F->split);
}

infl_status infl_fit(infl_ctx *ctx, const infl_fit_options *o, const char *out_path, infl_fit_report *rep) {
    RETURN_IF(ctx, !o || !o->run || !*o->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "no output file given (-o factors.h5)");
    RETURN_IF(ctx, (unsigned)o->strategy > INFL_STRATEGY_IDENTITY, INFL_E_ARG,
              "--strategy: expected ekfac, kfac, diagonal or identity");
    RETURN_IF(ctx, o->shard_rows < 0, INFL_E_ARG, "--shard: expected a number of rows >= 1");
    RETURN_IF(ctx, o->samples < 0 || o->samples > 1000, INFL_E_ARG, "--samples: expected 1 to 1000 labels per example");
    RETURN_IF(ctx, o->fisher_empirical && o->samples > 1, INFL_E_ARG,
              "--samples draws labels for the true Fisher; the empirical Fisher uses the data's one label");
    {
        char tmp[4200];  // refuse an existing output before the work
        FORWARD_IF_ERROR(infl_out_begin(ctx, out_path, o->force, tmp, sizeof tmp));
    }
    infl_fit_report r;
    memset(&r, 0, sizeof r);
    fitter F;
    memset(&F, 0, sizeof F);
    F.ctx = ctx;
    F.o = o;
    F.draws = o->samples > 1 ? o->samples : 1;
    infl_run *run = NULL;
    infl_factors *f = NULL;
    ekfac_pre *pre = NULL;
    float *hp = NULL;
    infl_status rc = INFL_OK;
    const infl_backend *be = ctx->be;

    CHECK(store_run_open(ctx, o->run, &run));
    F.spec = store_run_spec(run);
    const infl_mlp_spec *s = F.spec;
    int ck;
    CHECK(store_run_find(ctx, run, o->checkpoint, &ck));
    size_t P = infl_mlp_nparams(s);
    hp = infl_malloc(ctx, P * sizeof(float), "the parameters");
    GOTO_NOMEM_IF(!hp);
    CHECK(store_run_load(ctx, run, ck, hp));
    CHECK(infl_be_alloc_f(ctx, &F.W, P, "checkpoint weights"));
    CHECK(be->upload(ctx, F.W, hp, P * sizeof(float)));
    CHECK(infl_factors_alloc(ctx, s->L, s->widths, &f));
    snprintf(f->strategy, sizeof f->strategy, "%s", strategy_name(o->strategy));
    snprintf(f->fisher, sizeof f->fisher, "%s", o->fisher_empirical ? "empirical" : "true");
    snprintf(f->run, sizeof f->run, "%s", o->run);
    snprintf(f->checkpoint, sizeof f->checkpoint, "%s", store_run_checkpoint(run, ck)->name);
    f->step = store_run_checkpoint(run, ck)->step;
    f->weights_hash = infl_weights_hash(hp, P);
    f->seed = o->seed;
    f->samples = o->fisher_empirical ? 1 : (o->samples > 1 ? o->samples : 1);

    const char *data = o->data && *o->data ? o->data : store_run_data(run);
    GOTO_IF(ctx, !data || !*data, INFL_E_ARG, "%s: the run names no training data; give --data FILE:/split", o->run);
    snprintf(f->data, sizeof f->data, "%s", data);
    if (o->strategy == INFL_STRATEGY_IDENTITY) {
        for (int l = 0; l < s->L; l++) {
            int ni = s->widths[l] + 1, no = s->widths[l + 1];
            set_identity(f->A_vecs[l], ni);
            set_identity(f->S_vecs[l], no);
            for (int i = 0; i < ni; i++) f->A_vals[l][i] = 1;
            for (int i = 0; i < no; i++) f->S_vals[l][i] = 1;
            for (size_t i = 0; i < (size_t)ni * no; i++) f->lambda[l][i] = 1;
        }
        CHECK(store_factors_write(ctx, out_path, o->force, f));
        goto finish;
    }
    infl_dataref ref;
    CHECK(infl_dataref_parse(ctx, data, &ref));
    CHECK(store_split_open(ctx, &ref, &F.split));
    CHECK(infl_check_data_for_model(ctx, F.split, s));
    const infl_split_info *si = store_split_info(F.split);
    F.N = si->n;
    F.D = si->d;
    F.Kt = si->y_kind == INFL_Y_REAL ? si->k : 0;
    f->examples = F.N;
    r.examples = F.N;
    // sub-batches of 1024 rows, at most --shard rows (which batches the rows the same:
    // a shard is then one sub-batch either way)
    F.B = o->shard_rows > 0 && o->shard_rows < 1024 ? (int)o->shard_rows : 1024;
    CHECK(infl_mlp_work_create(ctx, s, F.B, &F.work));
    // targets: the data's (empirical Fisher) or sampled from the model (K wide)
    CHECK(infl_stage_alloc(ctx, &F.st, F.split, s, F.B, F.D, F.Kt,
                           F.Kt > s->widths[s->L] ? F.Kt : s->widths[s->L]));
    int maxo = 0, maxi = 0;
    size_t maxblk = 0;
    for (int l = 0; l < s->L; l++) {
        int ni = s->widths[l] + 1, no = s->widths[l + 1];
        maxo = no > maxo ? no : maxo;
        maxi = ni > maxi ? ni : maxi;
        size_t m = (size_t)ni * ni;
        m = (size_t)no * no > m ? (size_t)no * no : m;
        m = (size_t)no * ni > m ? (size_t)no * ni : m;
        maxblk = m > maxblk ? m : maxblk;
    }
    F.hbuf = infl_malloc(ctx, maxblk * sizeof(float), "factor accumulators");
    GOTO_NOMEM_IF(!F.hbuf);

    double t0 = infl_now();
    if (o->strategy != INFL_STRATEGY_DIAGONAL) {
        for (int l = 0; l < s->L; l++) {
            size_t ni = (size_t)s->widths[l] + 1, no = (size_t)s->widths[l + 1];
            CHECK(infl_be_alloc_f(ctx, &F.accA[l], ni * ni, "the covariance A"));
            CHECK(infl_be_alloc_f(ctx, &F.accS[l], no * no, "the covariance S"));
            CHECK(be->fill(ctx, F.accA[l], 0.0f, ni * ni));
            CHECK(be->fill(ctx, F.accS[l], 0.0f, no * no));
        }
        CHECK(fit_pass(&F, 1, NULL, f->A_vecs, f->S_vecs, NULL));
        for (int l = 0; l < s->L; l++) {
            // the bias column of A mirrors its row; the corner counts the rows
            int din = s->widths[l], ni = din + 1;
            double *A = f->A_vecs[l];
            for (int i = 0; i < din; i++) A[(size_t)i * ni + din] = A[(size_t)din * ni + i];
            A[(size_t)din * ni + din] = (double)F.N;
            infl_be_free(ctx, F.accA[l]);
            infl_be_free(ctx, F.accS[l]);
            F.accA[l] = F.accS[l] = NULL;
        }
        r.seconds_cov = infl_now() - t0;
        r.flops_cov = F.flops;
        double t1 = infl_now();
        for (int l = 0; l < s->L; l++) {
            int ni = s->widths[l] + 1, no = s->widths[l + 1];
            CHECK(eig(ctx, f->A_vecs[l], f->A_vals[l], ni, (double)F.N, "A", l));
            CHECK(eig(ctx, f->S_vecs[l], f->S_vals[l], no, (double)F.N, "S", l));
        }
        r.seconds_eig = infl_now() - t1;
    } else {
        for (int l = 0; l < s->L; l++) {
            int ni = s->widths[l] + 1, no = s->widths[l + 1];
            set_identity(f->A_vecs[l], ni);
            set_identity(f->S_vecs[l], no);
        }
    }
    if (o->strategy == INFL_STRATEGY_KFAC) {
        for (int l = 0; l < s->L; l++) {
            int ni = s->widths[l] + 1, no = s->widths[l + 1];
            for (int i = 0; i < no; i++)
                for (int j = 0; j < ni; j++) f->lambda[l][(size_t)i * ni + j] = f->S_vals[l][i] * f->A_vals[l][j];
        }
    } else {
        // pass 2: Λ in the eigenbases (identity for diagonal)
        double t2 = infl_now(), f0 = F.flops;
        if (o->strategy == INFL_STRATEGY_EKFAC) {
            // the rotation only (no damping used): a temporary preconditioner over the bases
            for (int l = 0; l < s->L; l++) {
                size_t n = (size_t)s->widths[l + 1] * (s->widths[l] + 1);
                for (size_t i = 0; i < n; i++) f->lambda[l][i] = 1;
            }
            snprintf(f->strategy, sizeof f->strategy, "ekfac");
            CHECK(ekfac_pre_create(ctx, f, out_path, s, INFL_METHOD_EKFAC, 1.0, 0, &pre));
        }
        CHECK(infl_be_alloc_f(ctx, &F.DQ, (size_t)F.B * maxo, "rotated factors"));
        CHECK(infl_be_alloc_f(ctx, &F.AQ, (size_t)F.B * maxi, "rotated factors"));
        for (int l = 0; l < s->L; l++) {
            size_t n = (size_t)s->widths[l + 1] * (s->widths[l] + 1);
            memset(f->lambda[l], 0, n * sizeof(double));
            CHECK(infl_be_alloc_f(ctx, &F.accL[l], n, "the eigenvalue correction"));
            CHECK(be->fill(ctx, F.accL[l], 0.0f, n));
        }
        CHECK(fit_pass(&F, 2, pre, NULL, NULL, f->lambda));
        for (int l = 0; l < s->L; l++) {
            int ni = s->widths[l] + 1, no = s->widths[l + 1];
            size_t n = (size_t)no * ni;
            for (size_t i = 0; i < n; i++) f->lambda[l][i] /= (double)F.N;
            if (o->strategy == INFL_STRATEGY_DIAGONAL) {
                // for the record: the marginal sums as "eigenvalues" of the identity bases
                for (int i = 0; i < no; i++) f->S_vals[l][i] = 1;
                for (int j = 0; j < ni; j++) f->A_vals[l][j] = 1;
            }
        }
        r.seconds_lambda = infl_now() - t2;
        r.flops_lambda = F.flops - f0;
    }
    for (int l = 0; l < s->L; l++) {
        size_t n = (size_t)s->widths[l + 1] * (s->widths[l] + 1);
        for (size_t i = 0; i < n; i++)
            GOTO_IF(ctx, !isfinite(f->lambda[l][i]), INFL_E_NUMERIC,
                    "layer %d: eigenvalue correction entry %zu is not finite: the checkpoint may have diverged", l,
                    i);
    }
    r.seconds_wait = F.wait;
    CHECK(store_factors_write(ctx, out_path, o->force, f));
finish:
    if (rep) *rep = r;
done:
    ekfac_pre_free(ctx, pre);
    free(hp);
    infl_factors_free(f);
    fitter_free(&F);
    store_run_close(run);
    return rc;
}
