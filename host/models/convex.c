/*
 * convex.c — the float64 optimiser for models without a hidden layer (softmax,
 * logistic or linear regression): Newton-CG with exact Hessian-vector products and a
 * backtracking line search. Leave-one-out retraining needs the true optimum (a
 * gradient norm of 1e-6 or better), which float32 SGD cannot reach, so this path
 * runs in double on the host with OpenBLAS, streaming the split in shards (a split
 * that fits in one shard is read once and kept). The rows may come from a reader of the
 * caller's instead of the split's x: representer points refit a network's last layer
 * on the features its earlier layers make of the rows.
 *
 * Model: z = W x + b, W (K, D), b (K); R(w) = (1/n) Σ_{i ∉ excluded} ℓ(z_i, y_i)
 * + wd/2 |w|², n the rows of the split (excluded rows keep the others' weight 1/n). Hessian-vector product for v = (V, v_b):
 *   r_i = V x_i + v_b,  s_i = H_out(z_i) r_i,  Hv = (1/n) Σ_i [s_i x_iᵀ | s_i] + wd v
 * with H_out = diag(p) − p pᵀ (softmax), σ(1−σ) (sigmoid), I (mse).
 *
 * The same Newton loop also fits rows the caller holds in memory (infl_convex_fit_rows:
 * Data Shapley's utility, thousands of small fits that must not touch HDF5).
 *
 * Optionally (o->precondition) the CG is preconditioned by the Hessian's diagonal blocks
 * at the start, one per output k (block Jacobi): B_k = (1/n) Σ_i H_out(z_i)_kk x̃_i x̃_iᵀ
 * + wd I ((D+1, D+1), Cholesky-factored), exact for one output (sigmoid) and for mse;
 * for softmax with the logits' shift invariance handled apart (precond_apply). Where the
 * features are correlated and wd is small (a network's last layer: representer points)
 * the plain CG needs hundreds of steps per Newton iteration; this takes about ten
 * (Fashion-MNIST's 784-256-128-10 at λ = 5e-5: 54 CG steps in all, not 404). (K-FAC's
 * mean H_out ⊗ mean x̃ x̃ᵀ was tried first and is worse than none here: a trained
 * classifier's curvature comes from its few uncertain rows, whose features the mean over
 * all rows does not represent.)
 */
#include <cblas.h>
#include <inttypes.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "train.h"

typedef struct {
    infl_ctx *ctx;
    infl_split *split;
    const infl_mlp_spec *spec;
    int64_t n, S, nshards;
    int D, K;
    const int64_t *exclude;
    int64_t nexclude;
    const infl_train_options *subset;  // rows outside get weight 0; n_eff counts the rows kept
    const infl_convex_options *o;      // its read_rows, when given, replaces the split's x
    double n_eff;
    // one shard in double
    float *fx, *fyf;
    int32_t *y;
    double *x, *yf, *wrow;  // x (S, D), yf (S, K), wrow (S): 1 or 0 (excluded)
    double *Z, *G;          // (S, K)
    int64_t loaded;         // shard index held in x, or -1
    int serial;             // infl_blas_serial_begin's, for cvx_close
    int borrowed;           // x, y, yf are the caller's resident rows (infl_convex_fit_rows): one shard, never read
    // the block-Jacobi preconditioner (o->precondition): per output k the Cholesky factor of B_k
    double *Bk;             // (K, D+1, D+1), lower, column-major
    double *T;              // (2 (D+1)) scratch
    // a split of one shard: the curvature (curvature_rows) at the iterate Pw, kept between products
    double *P, *Pw;         // (S, K), (nparams)
    int P_valid;
} cvx;

// Loads shard s into c->x (double), c->y / c->yf and the row weights.
static infl_status load_shard(cvx *c, int64_t s, int64_t *len_out) {
    int64_t row0 = s * c->S, len = row0 + c->S <= c->n ? c->S : c->n - row0;
    *len_out = len;
    if (c->loaded == s) return INFL_OK;
    const infl_split_info *in = store_split_info(c->split);
    if (c->o->read_rows)
        FORWARD_IF_ERROR(c->o->read_rows(c->ctx, c->o->read_user, row0, len, c->fx, c->y, c->fyf));
    else
        FORWARD_IF_ERROR(store_split_read(c->ctx, c->split, row0, len, c->fx, c->y, c->fyf));
    if (c->y) {
        int hi = c->spec->loss == INFL_LOSS_SIGMOID_CE ? 2 : c->K;
        for (int64_t i = 0; i < len; i++)
            RETURN_IF(c->ctx, c->y[i] < 0 || c->y[i] >= hi, INFL_E_VALUE,
                      "%s: row %" PRId64 ": label %d is out of range for a model with %d classes",
                      store_split_ref(c->split), in->begin + row0 + i, (int)c->y[i], hi);
    }
    for (int64_t i = 0; i < len * c->D; i++) c->x[i] = c->fx[i];
    if (c->fyf)
        for (int64_t i = 0; i < len * c->K; i++) c->yf[i] = c->fyf[i];
    for (int64_t i = 0; i < len; i++) c->wrow[i] = c->subset ? infl_subset_keeps(c->subset, in->begin + row0 + i) : 1.0;
    // excluded rows in this shard (exclude is sorted)
    for (int64_t e = 0; e < c->nexclude; e++)
        if (c->exclude[e] >= row0 && c->exclude[e] < row0 + len) c->wrow[c->exclude[e] - row0] = 0.0;
    c->loaded = s;
    return INFL_OK;
}

// Z (len, K) = X Wᵀ + b for the loaded shard and parameters w (spec.h layout).
static void logits(cvx *c, const double *w, const double *vb_or_b, int64_t len, double *Z) {
    const double *W = w;  // (K, D)
    for (int64_t i = 0; i < len; i++) memcpy(Z + i * c->K, vb_or_b, (size_t)c->K * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)len, c->K, c->D, 1.0, c->x, c->D, W, c->D, 1.0, Z,
                c->K);
}

// Accumulates into out (nparams) += scale · Σ_i wrow_i [G_i x_iᵀ | G_i].
static void accumulate(cvx *c, const double *G, int64_t len, double scale, double *out) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->K, c->D, (int)len, scale, G, c->K, c->x, c->D, 1.0, out,
                c->D);
    double *ob = out + (size_t)c->K * c->D;
    for (int64_t i = 0; i < len; i++)
        for (int j = 0; j < c->K; j++) ob[j] += scale * G[i * c->K + j];
}

// Per-row loss and gradient dℓ/dz into G (weighted by wrow); returns Σ wrow ℓ.
static double loss_rows(cvx *c, const double *Z, int64_t len, double *G) {
    double total = 0;
    int K = c->K;
    for (int64_t i = 0; i < len; i++) {
        const double *z = Z + i * K;
        double *g = G + i * K, wr = c->wrow[i], l = 0;
        switch (c->spec->loss) {
        case INFL_LOSS_SOFTMAX_CE: {
            double m = z[0];
            for (int j = 1; j < K; j++) m = z[j] > m ? z[j] : m;
            double s = 0;
            for (int j = 0; j < K; j++) s += exp(z[j] - m);
            double lse = m + log(s);
            for (int j = 0; j < K; j++) g[j] = wr * (exp(z[j] - lse) - (j == c->y[i] ? 1.0 : 0.0));
            l = lse - z[c->y[i]];
            break;
        }
        case INFL_LOSS_SIGMOID_CE: {
            double zz = z[0], yy = c->y[i];
            l = (zz > 0 ? zz : 0) + log1p(exp(-fabs(zz))) - yy * zz;
            g[0] = wr * (1.0 / (1.0 + exp(-zz)) - yy);
            break;
        }
        case INFL_LOSS_MSE:
            for (int j = 0; j < K; j++) {
                double dd = z[j] - c->yf[i * K + j];
                l += 0.5 * dd * dd;
                g[j] = wr * dd;
            }
            break;
        }
        total += wr * l;
    }
    return total;
}

static double dotv(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// f = R(w), g = ∇R(w): one pass over the data.
static infl_status fg(cvx *c, const double *w, double *f, double *g) {
    size_t np = infl_mlp_nparams(c->spec);
    memset(g, 0, np * sizeof(double));
    double total = 0;
    for (int64_t s = 0; s < c->nshards; s++) {
        RETURN_IF_CANCELLED(c->ctx);
        int64_t len;
        FORWARD_IF_ERROR(load_shard(c, s, &len));
        logits(c, w, w + (size_t)c->K * c->D, len, c->Z);
        total += loss_rows(c, c->Z, len, c->G);
        accumulate(c, c->G, len, 1.0 / c->n_eff, g);
    }
    for (size_t i = 0; i < np; i++) g[i] += c->spec->wd * w[i];
    *f = total / c->n_eff + 0.5 * c->spec->wd * dotv(w, w, np);
    return INFL_OK;
}

// Z (len, K) := the output curvature's parameters at the logits in Z, row by row: p = softmax(z)
// (softmax_ce), σ(z)(1 − σ(z)) (sigmoid_ce); mse needs none.
static void curvature_rows(cvx *c, int64_t len, double *Z) {
    int K = c->K;
    for (int64_t i = 0; i < len; i++) {
        double *z = Z + i * K;
        if (c->spec->loss == INFL_LOSS_SOFTMAX_CE) {
            double m = z[0], sum = 0;
            for (int j = 1; j < K; j++) m = z[j] > m ? z[j] : m;
            for (int j = 0; j < K; j++) sum += (z[j] = exp(z[j] - m));
            for (int j = 0; j < K; j++) z[j] /= sum;
        } else if (c->spec->loss == INFL_LOSS_SIGMOID_CE) {
            double p = 1.0 / (1.0 + exp(-z[0]));
            z[0] = p * (1.0 - p);
        }
    }
}

// H_out(z)_kl from a row p of curvature_rows: p_k (δ_kl − p_l) (softmax), σ(1−σ) (sigmoid), δ_kl (mse).
static inline double curvature_kl(const cvx *c, const double *p, int k, int l) {
    return c->spec->loss == INFL_LOSS_SOFTMAX_CE ? p[k] * ((k == l) - p[l])
           : c->spec->loss == INFL_LOSS_SIGMOID_CE ? p[0]
                                                   : (double)(k == l);
}

// hv = H(w) v: one pass. The curvature at w is recomputed per shard, except that a split of
// one shard keeps it for the w it was computed at (the CG's products all share one w).
static infl_status hvp(cvx *c, const double *w, const double *v, double *hv) {
    size_t np = infl_mlp_nparams(c->spec);
    int K = c->K;
    memset(hv, 0, np * sizeof(double));
    const int keep = c->nshards == 1;
    if (keep && !c->P) {
        c->P = infl_malloc(c->ctx, (size_t)c->S * K * sizeof(double), "the curvature at the Newton iterate");
        c->Pw = infl_malloc(c->ctx, np * sizeof(double), "the Newton iterate");
        if (!c->P || !c->Pw) return INFL_E_NOMEM;
    }
    for (int64_t s = 0; s < c->nshards; s++) {
        RETURN_IF_CANCELLED(c->ctx);
        int64_t len;
        FORWARD_IF_ERROR(load_shard(c, s, &len));
        double *P = keep ? c->P : c->Z;
        if (!(keep && c->P_valid && memcmp(c->Pw, w, np * sizeof(double)) == 0)) {
            logits(c, w, w + (size_t)K * c->D, len, P);  // z_i, then its curvature
            curvature_rows(c, len, P);
            if (keep) {
                memcpy(c->Pw, w, np * sizeof(double));
                c->P_valid = 1;
            }
        }
        logits(c, v, v + (size_t)K * c->D, len, c->G);  // r_i = V x_i + v_b
        for (int64_t i = 0; i < len; i++) {
            const double *p = P + i * K;
            double *r = c->G + i * K, wr = c->wrow[i];
            switch (c->spec->loss) {
            case INFL_LOSS_SOFTMAX_CE: {
                double pr = 0;
                for (int j = 0; j < K; j++) pr += p[j] * r[j];
                for (int j = 0; j < K; j++) r[j] = wr * p[j] * (r[j] - pr);
                break;
            }
            case INFL_LOSS_SIGMOID_CE:
                r[0] *= wr * p[0];
                break;
            case INFL_LOSS_MSE:
                for (int j = 0; j < K; j++) r[j] *= wr;
                break;
            }
        }
        accumulate(c, c->G, len, 1.0 / c->n_eff, hv);
    }
    for (size_t i = 0; i < np; i++) hv[i] += c->spec->wd * v[i];
    return INFL_OK;
}

// The preconditioner at w: per output k, B_k = (1/n) Σ_i wrow_i H_out(z_i)_kk x̃_i x̃_iᵀ + wd I, in
// chunks of rows (x̃ and its weighted copy), then Cholesky (LAPACK dpotrf).
static infl_status precond_build(cvx *c, const double *w) {
    const int K = c->K, D = c->D, D1 = D + 1, C = 2048;
    infl_status rc = INFL_OK;
    double *xt = infl_malloc(c->ctx, (size_t)C * D1 * sizeof(double), "rows with their constant 1");
    double *cx = infl_malloc(c->ctx, (size_t)C * D1 * sizeof(double), "weighted rows");
    double *h = infl_malloc(c->ctx, (size_t)C * K * sizeof(double), "curvatures");
    c->Bk = infl_calloc(c->ctx, (size_t)K * D1 * D1, sizeof(double), "the preconditioner");
    c->T = infl_malloc(c->ctx, 2 * (size_t)D1 * sizeof(double), "the preconditioner");
    GOTO_NOMEM_IF(!xt || !cx || !h || !c->Bk || !c->T);
    for (int64_t s = 0; s < c->nshards; s++) {
        RETURN_IF_CANCELLED(c->ctx);
        int64_t len;
        CHECK(load_shard(c, s, &len));
        logits(c, w, w + (size_t)K * D, len, c->Z);
        curvature_rows(c, len, c->Z);
        for (int64_t i0 = 0; i0 < len; i0 += C) {
            int n = (int)(len - i0 < C ? len - i0 : C);
            for (int i = 0; i < n; i++) {
                const double *p = c->Z + (i0 + i) * K;
                double *hi = h + (size_t)i * K, wr = c->wrow[i0 + i];
                for (int k = 0; k < K; k++) hi[k] = wr * curvature_kl(c, p, k, k);
                memcpy(xt + (size_t)i * D1, c->x + (i0 + i) * D, (size_t)D * sizeof(double));
                xt[(size_t)i * D1 + D] = 1.0;
            }
            for (int k = 0; k < K; k++) {
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < D1; j++) cx[(size_t)i * D1 + j] = h[(size_t)i * K + k] * xt[(size_t)i * D1 + j];
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D1, D1, n, 1.0 / c->n_eff, xt, D1, cx, D1, 1.0,
                            c->Bk + (size_t)k * D1 * D1, D1);
            }
        }
    }
    for (int k = 0; k < K; k++) {
        double *B = c->Bk + (size_t)k * D1 * D1;
        for (int j = 0; j < D1; j++) B[(size_t)j * D1 + j] += c->spec->wd;
        lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', D1, B, D1);
        GOTO_IF(c->ctx, info != 0, INFL_E_NUMERIC, "the preconditioner's block %d is not positive definite (dpotrf %d)",
                k, (int)info);
    }
done:
    free(xt);
    free(cx);
    free(h);
    return rc;
}

// z = P(r) (nparams, spec.h layout: W (K, D) row-major, then b (K)): per output k, the block
// [r_k | r_b,k] solved with B_k's factor. For softmax_ce first the part of r shared by every
// class, 1 ⊗ m with m = mean_k r̃_k: the logits' shift invariance (H_out 1 = 0) makes those
// directions eigenvectors of H with eigenvalue wd exactly, which the blocks would take for
// stiff ones; P is wd⁻¹ there and the blocks' inverse projected off them elsewhere.
static void precond_apply(cvx *c, const double *r, double *z) {
    const int K = c->K, D = c->D, D1 = D + 1;
    const int shift = c->spec->loss == INFL_LOSS_SOFTMAX_CE;
    double *t = c->T, *m = c->T + D1;
    // m (D1) = mean over k of the rows r̃_k = [r_k | r_b,k]
    for (int j = 0; j < D1; j++) m[j] = 0;
    for (int k = 0; shift && k < K; k++) {
        for (int j = 0; j < D; j++) m[j] += r[(size_t)k * D + j] / K;
        m[D] += r[(size_t)K * D + k] / K;
    }
    for (int k = 0; k < K; k++) {
        const double *L = c->Bk + (size_t)k * D1 * D1;
        for (int j = 0; j < D; j++) t[j] = r[(size_t)k * D + j] - m[j];
        t[D] = r[(size_t)K * D + k] - m[D];
        cblas_dtrsv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, D1, L, D1, t, 1);
        cblas_dtrsv(CblasColMajor, CblasLower, CblasTrans, CblasNonUnit, D1, L, D1, t, 1);
        memcpy(z + (size_t)k * D, t, (size_t)D * sizeof(double));
        z[(size_t)K * D + k] = t[D];
    }
    if (!shift) return;
    // z = Π⊥ z + (1 ⊗ m) / wd, Π⊥ removing z's own mean over k
    double *mz = t;
    for (int j = 0; j < D1; j++) mz[j] = 0;
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < D; j++) mz[j] += z[(size_t)k * D + j] / K;
        mz[D] += z[(size_t)K * D + k] / K;
    }
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < D; j++) z[(size_t)k * D + j] += m[j] / c->spec->wd - mz[j];
        z[(size_t)K * D + k] += m[D] / c->spec->wd - mz[D];
    }
}

// Sets up c for a split (shards of o->shard_rows) and allocates its shard buffers.
static infl_status cvx_open(cvx *c, infl_ctx *ctx, infl_split *split, const infl_mlp_spec *spec,
                            const infl_convex_options *o) {
    const infl_split_info *in = store_split_info(split);
    *c = (cvx){.ctx = ctx, .split = split, .spec = spec, .n = in->n, .D = spec->widths[0], .K = spec->widths[1],
               .loaded = -1, .n_eff = (double)in->n, .serial = infl_blas_serial_begin(ctx), .o = o};
    c->S = o->shard_rows > 0 && o->shard_rows < c->n ? o->shard_rows : c->n;
    c->nshards = (c->n + c->S - 1) / c->S;
    size_t S = (size_t)c->S;
    c->fx = infl_malloc(ctx, S * c->D * sizeof(float), "a shard");
    c->x = infl_malloc(ctx, S * c->D * sizeof(double), "a shard in double");
    c->wrow = infl_malloc(ctx, S * sizeof(double), "row weights");
    c->Z = infl_malloc(ctx, S * c->K * sizeof(double), "logits");
    c->G = infl_malloc(ctx, S * c->K * sizeof(double), "logit gradients");
    if (!c->fx || !c->x || !c->wrow || !c->Z || !c->G) return INFL_E_NOMEM;
    if (in->y_kind == INFL_Y_REAL) {
        c->fyf = infl_malloc(ctx, S * c->K * sizeof(float), "targets");
        c->yf = infl_malloc(ctx, S * c->K * sizeof(double), "targets in double");
        if (!c->fyf || !c->yf) return INFL_E_NOMEM;
    } else {
        c->y = infl_malloc(ctx, S * sizeof(int32_t), "labels");
        if (!c->y) return INFL_E_NOMEM;
    }
    return INFL_OK;
}

static void cvx_close(cvx *c) {
    infl_blas_serial_end(c->ctx, c->serial);
    free(c->fx);
    free(c->wrow);
    free(c->Z);
    free(c->G);
    free(c->fyf);
    if (!c->borrowed) {
        free(c->x);
        free(c->yf);
        free(c->y);
    }
    free(c->Bk);
    free(c->T);
    free(c->P);
    free(c->Pw);
}

static infl_status newton(cvx *c, const infl_convex_options *o, double *w, infl_convex_report *rep);

infl_status infl_convex_fit(infl_ctx *ctx, infl_split *split, const infl_mlp_spec *spec, const int64_t *exclude,
                            int64_t nexclude, const infl_convex_options *o, double *w, infl_convex_report *rep) {
    RETURN_IF(ctx, spec->L != 1, INFL_E_ARG, "the convex optimiser takes models with one layer, not %d", spec->L);
    RETURN_IF(ctx, !(spec->wd > 0), INFL_E_ARG, "the convex optimiser needs weight decay > 0");
    cvx c;
    infl_status rc = cvx_open(&c, ctx, split, spec, o);
    c.exclude = exclude;
    c.nexclude = nexclude;
    if (rc == INFL_OK && o->subset && infl_subset_active(o->subset)) {
        c.subset = o->subset;
        int64_t kept = 0, b0 = store_split_info(split)->begin;
        for (int64_t i = 0; i < c.n; i++) kept += infl_subset_keeps(o->subset, b0 + i);
        c.n_eff = (double)kept;
        if (kept == 0) rc = infl_seterr(ctx, INFL_E_ARG, "the training subset is empty (fraction %g of %" PRId64 " rows)",
                                        o->subset->subset_fraction, c.n);
    }
    // The rows kept keep their weight 1/n: removing z is up-weighting it by −1/n, the
    // perturbation influence functions predict (renormalising by n − 1 would also
    // shift the balance with the weight decay, moving every query loss a little).
    if (rc == INFL_OK && nexclude >= c.n)
        rc = infl_seterr(ctx, INFL_E_ARG, "no training rows left after excluding %" PRId64, nexclude);
    if (rc == INFL_OK) rc = newton(&c, o, w, rep);
    cvx_close(&c);
    return rc;
}

infl_status infl_convex_fit_rows(infl_ctx *ctx, const infl_convex_rows *rows, const infl_mlp_spec *spec,
                                 const infl_convex_options *o, double *w, infl_convex_report *rep) {
    RETURN_IF(ctx, spec->L != 1, INFL_E_ARG, "the convex optimiser takes models with one layer, not %d", spec->L);
    RETURN_IF(ctx, !(spec->wd > 0), INFL_E_ARG, "the convex optimiser needs weight decay > 0");
    RETURN_IF(ctx, rows->n < 1, INFL_E_ARG, "the convex optimiser needs at least one row");
    RETURN_IF(ctx, spec->loss == INFL_LOSS_MSE ? !rows->yf : !rows->y, INFL_E_ARG,
              "the convex optimiser's rows have no %s", spec->loss == INFL_LOSS_MSE ? "targets" : "labels");
    const int D = spec->widths[0], K = spec->widths[1];
    size_t n = (size_t)rows->n;
    cvx c = {.ctx = ctx, .spec = spec, .n = rows->n, .S = rows->n, .nshards = 1, .D = D, .K = K, .loaded = 0,
             .n_eff = (double)rows->n, .borrowed = 1, .x = (double *)rows->x, .y = (int32_t *)rows->y,
             .yf = (double *)rows->yf};
    c.wrow = infl_malloc(ctx, n * sizeof(double), "row weights");
    c.Z = infl_malloc(ctx, n * K * sizeof(double), "logits");
    c.G = infl_malloc(ctx, n * K * sizeof(double), "logit gradients");
    infl_status rc = c.wrow && c.Z && c.G ? INFL_OK : INFL_E_NOMEM;
    int hi = spec->loss == INFL_LOSS_SIGMOID_CE ? 2 : K;
    for (size_t i = 0; rc == INFL_OK && i < n; i++) {
        c.wrow[i] = 1.0;
        if (rows->y && (rows->y[i] < 0 || rows->y[i] >= hi))
            rc = infl_seterr(ctx, INFL_E_VALUE, "row %zu: label %d is out of range for a model with %d classes", i,
                             (int)rows->y[i], hi);
    }
    if (rc == INFL_OK) rc = newton(&c, o, w, rep);
    cvx_close(&c);
    return rc;
}

// Newton-CG (or chord steps with o->chol) from w to |∇R| <= o->tol on the rows of c.
static infl_status newton(cvx *c, const infl_convex_options *o, double *w, infl_convex_report *rep) {
    infl_ctx *ctx = c->ctx;
    const infl_mlp_spec *spec = c->spec;
    infl_status rc = INFL_OK;
    size_t np = infl_mlp_nparams(spec);
    double *g = NULL, *p = NULL, *r = NULL, *d = NULL, *hd = NULL, *wt = NULL, *gt = NULL, *zr = NULL;
    g = infl_malloc(ctx, np * sizeof(double), "the gradient");
    p = infl_malloc(ctx, np * sizeof(double), "the Newton step");
    r = infl_malloc(ctx, np * sizeof(double), "CG residual");
    d = infl_malloc(ctx, np * sizeof(double), "CG direction");
    hd = infl_malloc(ctx, np * sizeof(double), "CG product");
    wt = infl_malloc(ctx, np * sizeof(double), "trial point");
    gt = infl_malloc(ctx, np * sizeof(double), "trial gradient");
    zr = infl_malloc(ctx, np * sizeof(double), "preconditioned residual");
    GOTO_NOMEM_IF(!g || !p || !r || !d || !hd || !wt || !gt || !zr);
    int pre = o->precondition && !o->chol;
    if (pre) CHECK(precond_build(c, w));

    double f, gn;
    int it = 0, cg_total = 0;
    CHECK(fg(c, w, &f, g));
    gn = sqrt(dotv(g, g, np));
    while (gn > o->tol) {
        GOTO_IF(ctx, it >= o->max_iters, INFL_E_NUMERIC,
                "Newton did not reach |grad| <= %g in %d iterations (|grad| = %.3g); raise --max-iters or --tol",
                o->tol, o->max_iters, gn);
        if (o->chol) {
            // chord step: p = −H₀⁻¹ g with the given factor
            // (two triangular solves; dpotrs would re-check and re-pack the whole factor)
            for (size_t i = 0; i < np; i++) p[i] = -g[i];
            cblas_dtrsv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, (int)np, o->chol, (int)np, p, 1);
            cblas_dtrsv(CblasColMajor, CblasLower, CblasTrans, CblasNonUnit, (int)np, o->chol, (int)np, p, 1);
        }
        // else CG on H p = −g to relative residual eta (Eisenstat–Walker: superlinear near the optimum),
        // preconditioned by P ≈ H⁻¹ when asked (z = P r; without, z = r)
        double eta = fmin(0.5, sqrt(gn));
        if (!o->chol) {
            for (size_t i = 0; i < np; i++) {
                p[i] = 0;
                r[i] = -g[i];
            }
            if (pre) precond_apply(c, r, zr);
            else memcpy(zr, r, np * sizeof(double));
            memcpy(d, zr, np * sizeof(double));
        }
        double rz = o->chol ? 0 : dotv(r, zr, np), rr = o->chol ? 0 : dotv(r, r, np);
        for (int j = 0; !o->chol && j < 500 && sqrt(rr) > eta * gn; j++) {
            CHECK(hvp(c, w, d, hd));
            cg_total++;
            double dhd = dotv(d, hd, np);
            GOTO_IF(ctx, !(dhd > 0), INFL_E_NUMERIC, "the Hessian is not positive definite (d'Hd = %g)", dhd);
            double alpha = rz / dhd;
            for (size_t i = 0; i < np; i++) {
                p[i] += alpha * d[i];
                r[i] -= alpha * hd[i];
            }
            if (pre) precond_apply(c, r, zr);
            else memcpy(zr, r, np * sizeof(double));
            double rz2 = dotv(r, zr, np);
            for (size_t i = 0; i < np; i++) d[i] = zr[i] + (rz2 / rz) * d[i];
            rz = rz2;
            rr = dotv(r, r, np);
        }
        // Backtracking: accept sufficient decrease of f, or (where f no longer resolves
        // the change) a smaller gradient at no larger f.
        double gp = dotv(g, p, np), t = 1, ft = 0, gnt = 0;
        int accepted = 0;
        for (int ls = 0; ls < 40 && !accepted; ls++, t *= 0.5) {
            for (size_t i = 0; i < np; i++) wt[i] = w[i] + t * p[i];
            CHECK(fg(c, wt, &ft, gt));
            gnt = sqrt(dotv(gt, gt, np));
            accepted = ft <= f + 1e-4 * t * gp || (ft <= f + 1e-12 * fabs(f) && gnt < gn);
        }
        GOTO_IF(ctx, !accepted, INFL_E_NUMERIC, "Newton line search failed at |grad| = %.3g", gn);
        memcpy(w, wt, np * sizeof(double));
        memcpy(g, gt, np * sizeof(double));
        f = ft;
        gn = gnt;
        it++;
        char info[96];
        snprintf(info, sizeof info, "objective %.8f  |grad| %.2e", f, gn);
        infl_progress(ctx, "newton", (uint64_t)it, (uint64_t)o->max_iters, info);
    }
    if (rep) {
        rep->iters = it;
        rep->cg_iters = cg_total;
        rep->objective = f;
        rep->grad_norm = gn;
    }
done:
    free(g);
    free(p);
    free(r);
    free(d);
    free(hd);
    free(wt);
    free(gt);
    free(zr);
    return rc;
}

infl_status infl_convex_hessian(infl_ctx *ctx, infl_split *split, const infl_mlp_spec *spec,
                                const infl_convex_options *o, const double *w, double *H) {
    RETURN_IF(ctx, spec->L != 1, INFL_E_ARG, "the convex Hessian takes models with one layer, not %d", spec->L);
    cvx c;
    infl_status rc = cvx_open(&c, ctx, split, spec, o);
    const int D1 = c.D + 1, K = c.K;
    const size_t np = infl_mlp_nparams(spec), S = (size_t)c.S;
    double *xt = NULL, *cx = NULL, *blk = NULL;
    CHECK(rc);
    xt = infl_malloc(ctx, S * D1 * sizeof(double), "rows with their constant 1");
    cx = infl_malloc(ctx, S * D1 * sizeof(double), "weighted rows");
    blk = infl_malloc(ctx, (size_t)D1 * D1 * sizeof(double), "a Hessian block");
    GOTO_NOMEM_IF(!xt || !cx || !blk);
    // Parameter index of (class k, input j): W row-major (K, D), then b (K) for j = D.
#define PIDX(k, j) ((j) < c.D ? (size_t)(k) * c.D + (size_t)(j) : (size_t)K * c.D + (size_t)(k))
    memset(H, 0, np * np * sizeof(double));
    for (int64_t s = 0; s < c.nshards; s++) {
        int64_t len;
        CHECK(load_shard(&c, s, &len));
        logits(&c, w, w + (size_t)K * c.D, len, c.Z);
        curvature_rows(&c, len, c.Z);  // probabilities (softmax) or σ(1−σ) (sigmoid) per row in Z
        for (int64_t i = 0; i < len; i++) {
            for (int j = 0; j < c.D; j++) xt[i * D1 + j] = c.x[i * c.D + j];
            xt[i * D1 + c.D] = 1.0;
        }
        // block (k, l) += (1/n) X̃ᵀ diag(h_kl) X̃ with h_kl = p_k δ_kl − p_k p_l (softmax)
        for (int k = 0; k < K; k++)
            for (int l = k; l < K; l++) {
                if (spec->loss == INFL_LOSS_MSE && l != k) continue;
                for (int64_t i = 0; i < len; i++) {
                    double h = curvature_kl(&c, c.Z + i * K, k, l);
                    for (int j = 0; j < D1; j++) cx[i * D1 + j] = h * xt[i * D1 + j];
                }
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D1, D1, (int)len, 1.0 / c.n_eff, xt, D1, cx, D1,
                            0.0, blk, D1);
                for (int a = 0; a < D1; a++)
                    for (int b2 = 0; b2 < D1; b2++) {
                        double v = blk[(size_t)a * D1 + b2];
                        H[PIDX(k, a) * np + PIDX(l, b2)] += v;
                        if (l != k) H[PIDX(l, b2) * np + PIDX(k, a)] += v;
                    }
            }
        infl_progress(ctx, "hessian", (uint64_t)(s + 1), (uint64_t)c.nshards, NULL);
    }
#undef PIDX
    for (size_t i = 0; i < np; i++) H[i * np + i] += spec->wd;
done:
    cvx_close(&c);
    free(xt);
    free(cx);
    free(blk);
    return rc;
}
