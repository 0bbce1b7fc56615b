/*
 * convex.c — the float64 optimiser for models without a hidden layer (softmax,
 * logistic or linear regression): Newton-CG with exact Hessian-vector products and a
 * backtracking line search. Leave-one-out retraining needs the true optimum (a
 * gradient norm of 1e-6 or better), which float32 SGD cannot reach, so this path
 * runs in double on the host with OpenBLAS, streaming the split in shards (a split
 * that fits in one shard is read once and kept).
 *
 * Model: z = W x + b, W (K, D), b (K); R(w) = (1/n) Σ_{i ∉ excluded} ℓ(z_i, y_i)
 * + wd/2 |w|², n the rows of the split (excluded rows keep the others' weight 1/n). Hessian-vector product for v = (V, v_b):
 *   r_i = V x_i + v_b,  s_i = H_out(z_i) r_i,  Hv = (1/n) Σ_i [s_i x_iᵀ | s_i] + wd v
 * with H_out = diag(p) − p pᵀ (softmax), σ(1−σ) (sigmoid), I (mse).
 */
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    double n_eff;
    // one shard in double
    float *fx, *fyf;
    int32_t *y;
    double *x, *yf, *wrow;  // x (S, D), yf (S, K), wrow (S): 1 or 0 (excluded)
    double *Z, *G;          // (S, K)
    int64_t loaded;         // shard index held in x, or -1
} cvx;

// Loads shard s into c->x (double), c->y / c->yf and the row weights.
static infl_status load_shard(cvx *c, int64_t s, int64_t *len_out) {
    int64_t row0 = s * c->S, len = row0 + c->S <= c->n ? c->S : c->n - row0;
    *len_out = len;
    if (c->loaded == s) return INFL_OK;
    const infl_split_info *in = store_split_info(c->split);
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

// hv = H(w) v: one pass (logits of w recomputed per shard).
static infl_status hvp(cvx *c, const double *w, const double *v, double *hv) {
    size_t np = infl_mlp_nparams(c->spec);
    int K = c->K;
    memset(hv, 0, np * sizeof(double));
    for (int64_t s = 0; s < c->nshards; s++) {
        RETURN_IF_CANCELLED(c->ctx);
        int64_t len;
        FORWARD_IF_ERROR(load_shard(c, s, &len));
        logits(c, w, w + (size_t)K * c->D, len, c->Z);  // z_i
        logits(c, v, v + (size_t)K * c->D, len, c->G);  // r_i = V x_i + v_b
        for (int64_t i = 0; i < len; i++) {
            double *z = c->Z + i * K, *r = c->G + i * K, wr = c->wrow[i];
            switch (c->spec->loss) {
            case INFL_LOSS_SOFTMAX_CE: {
                double m = z[0];
                for (int j = 1; j < K; j++) m = z[j] > m ? z[j] : m;
                double sum = 0;
                for (int j = 0; j < K; j++) sum += (z[j] = exp(z[j] - m));
                double pr = 0;
                for (int j = 0; j < K; j++) pr += (z[j] /= sum) * r[j];
                for (int j = 0; j < K; j++) r[j] = wr * z[j] * (r[j] - pr);
                break;
            }
            case INFL_LOSS_SIGMOID_CE: {
                double p = 1.0 / (1.0 + exp(-z[0]));
                r[0] *= wr * p * (1.0 - p);
                break;
            }
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

// Sets up c for a split (shards of o->shard_rows) and allocates its shard buffers.
static infl_status cvx_open(cvx *c, infl_ctx *ctx, infl_split *split, const infl_mlp_spec *spec,
                            const infl_convex_options *o) {
    const infl_split_info *in = store_split_info(split);
    *c = (cvx){.ctx = ctx, .split = split, .spec = spec, .n = in->n, .D = spec->widths[0], .K = spec->widths[1],
               .loaded = -1, .n_eff = (double)in->n};
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
    free(c->fx);
    free(c->x);
    free(c->wrow);
    free(c->Z);
    free(c->G);
    free(c->fyf);
    free(c->yf);
    free(c->y);
}

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
    size_t np = infl_mlp_nparams(spec);
    double *g = NULL, *p = NULL, *r = NULL, *d = NULL, *hd = NULL, *wt = NULL, *gt = NULL;
    CHECK(rc);
    GOTO_IF(ctx, nexclude >= c.n, INFL_E_ARG, "no training rows left after excluding %" PRId64, nexclude);
    g = infl_malloc(ctx, np * sizeof(double), "the gradient");
    p = infl_malloc(ctx, np * sizeof(double), "the Newton step");
    r = infl_malloc(ctx, np * sizeof(double), "CG residual");
    d = infl_malloc(ctx, np * sizeof(double), "CG direction");
    hd = infl_malloc(ctx, np * sizeof(double), "CG product");
    wt = infl_malloc(ctx, np * sizeof(double), "trial point");
    gt = infl_malloc(ctx, np * sizeof(double), "trial gradient");
    GOTO_NOMEM_IF(!g || !p || !r || !d || !hd || !wt || !gt);

    double f, gn;
    int it = 0, cg_total = 0;
    CHECK(fg(&c, w, &f, g));
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
        // else CG on H p = −g to relative residual eta (Eisenstat–Walker: superlinear near the optimum)
        double eta = fmin(0.5, sqrt(gn));
        if (!o->chol)
            for (size_t i = 0; i < np; i++) {
                p[i] = 0;
                r[i] = -g[i];
                d[i] = r[i];
            }
        double rr = o->chol ? 0 : dotv(r, r, np);
        for (int j = 0; !o->chol && j < 500 && sqrt(rr) > eta * gn; j++) {
            CHECK(hvp(&c, w, d, hd));
            cg_total++;
            double dhd = dotv(d, hd, np);
            GOTO_IF(ctx, !(dhd > 0), INFL_E_NUMERIC, "the Hessian is not positive definite (d'Hd = %g)", dhd);
            double alpha = rr / dhd;
            for (size_t i = 0; i < np; i++) {
                p[i] += alpha * d[i];
                r[i] -= alpha * hd[i];
            }
            double rr2 = dotv(r, r, np);
            for (size_t i = 0; i < np; i++) d[i] = r[i] + (rr2 / rr) * d[i];
            rr = rr2;
        }
        // Backtracking: accept sufficient decrease of f, or (where f no longer resolves
        // the change) a smaller gradient at no larger f.
        double gp = dotv(g, p, np), t = 1, ft = 0, gnt = 0;
        int accepted = 0;
        for (int ls = 0; ls < 40 && !accepted; ls++, t *= 0.5) {
            for (size_t i = 0; i < np; i++) wt[i] = w[i] + t * p[i];
            CHECK(fg(&c, wt, &ft, gt));
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
    cvx_close(&c);
    free(g);
    free(p);
    free(r);
    free(d);
    free(hd);
    free(wt);
    free(gt);
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
        // probabilities (softmax) or σ(1−σ) (sigmoid) per row in Z
        for (int64_t i = 0; i < len; i++) {
            double *z = c.Z + i * K;
            if (spec->loss == INFL_LOSS_SOFTMAX_CE) {
                double m = z[0], sum = 0;
                for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
                for (int k = 0; k < K; k++) sum += (z[k] = exp(z[k] - m));
                for (int k = 0; k < K; k++) z[k] /= sum;
            } else if (spec->loss == INFL_LOSS_SIGMOID_CE) {
                double p = 1.0 / (1.0 + exp(-z[0]));
                z[0] = p * (1 - p);
            }
            for (int j = 0; j < c.D; j++) xt[i * D1 + j] = c.x[i * c.D + j];
            xt[i * D1 + c.D] = 1.0;
        }
        // block (k, l) += (1/n) X̃ᵀ diag(h_kl) X̃ with h_kl = p_k δ_kl − p_k p_l (softmax)
        for (int k = 0; k < K; k++)
            for (int l = k; l < K; l++) {
                if (spec->loss == INFL_LOSS_MSE && l != k) continue;
                for (int64_t i = 0; i < len; i++) {
                    const double *pz = c.Z + i * K;
                    double h = spec->loss == INFL_LOSS_SOFTMAX_CE ? pz[k] * ((k == l) - pz[l])
                               : spec->loss == INFL_LOSS_SIGMOID_CE ? pz[0]
                                                                      : 1.0;
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
