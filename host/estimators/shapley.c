/*
 * shapley.c — Data Shapley's estimators on rows in memory (see shapley.h): the two
 * utility models, TMC's and G-Shapley's permutations, exact enumeration and the
 * KNN-Shapley recursion.
 */
#include "shapley.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

size_t shap_nparams(const shap_problem *p) {
    if (p->mlp) return (size_t)p->hidden * p->D + p->hidden + (size_t)p->K * p->hidden + p->K;
    return (size_t)p->K * p->D + p->K;
}

infl_status shap_work_create(infl_ctx *ctx, const shap_problem *p, shap_work *w) {
    memset(w, 0, sizeof *w);
    size_t P = shap_nparams(p), V = (size_t)p->V, n = (size_t)p->n, h = p->mlp ? (size_t)p->hidden : 0;
    w->w = infl_malloc(ctx, P * sizeof(double), "the utility model");
    w->Z = infl_malloc(ctx, V * p->K * sizeof(double), "validation logits");
    w->H = h ? infl_malloc(ctx, V * h * sizeof(double), "validation hidden activations") : NULL;
    w->sx = infl_malloc(ctx, n * p->D * sizeof(double), "a subset's rows");
    w->sy = infl_malloc(ctx, n * sizeof(int32_t), "a subset's labels");
    w->tmp = infl_malloc(ctx, (2 * h + p->K) * sizeof(double), "scratch");
    w->idx = infl_malloc(ctx, n * sizeof(int64_t), "a subset's rows");
    if (!w->w || !w->Z || (h && !w->H) || !w->sx || !w->sy || !w->tmp || !w->idx) {
        shap_work_free(w);
        return INFL_E_NOMEM;
    }
    return INFL_OK;
}

void shap_work_free(shap_work *w) {
    free(w->w);
    free(w->Z);
    free(w->H);
    free(w->sx);
    free(w->sy);
    free(w->tmp);
    free(w->idx);
    memset(w, 0, sizeof *w);
}

void shap_model_init(const shap_problem *p, double *w) {
    size_t P = shap_nparams(p);
    memset(w, 0, P * sizeof(double));
    if (!p->mlp) return;
    const int D = p->D, H = p->hidden, K = p->K;
    double s0 = 1.0 / sqrt((double)D), s1 = 1.0 / sqrt((double)H);
    for (size_t i = 0; i < (size_t)H * D; i++) w[i] = s0 * infl_rng_normal(p->seed, INFL_RNG_INIT, i, 0);
    double *W1 = w + (size_t)H * D + H;
    for (size_t i = 0; i < (size_t)K * H; i++)
        W1[i] = s1 * infl_rng_normal(p->seed, INFL_RNG_INIT, (size_t)H * D + H + i, 0);
}

// ---- the models ----

// Z (m, K) = logits of rows X (m, D) under w; the MLP's hidden activations go to Hs (m, hidden).
static void forward_rows(const shap_problem *p, const double *w, const double *X, int64_t m, double *Hs, double *Z) {
    const int D = p->D, K = p->K, Hd = p->hidden;
    const double *W = w, *b;
    const double *in = X;
    int din = D;
    if (p->mlp) {
        const double *b0 = w + (size_t)Hd * D;
        for (int64_t i = 0; i < m; i++) memcpy(Hs + i * Hd, b0, (size_t)Hd * sizeof(double));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, Hd, D, 1.0, X, D, w, D, 1.0, Hs, Hd);
        for (int64_t i = 0; i < m * Hd; i++) Hs[i] = tanh(Hs[i]);
        W = b0 + Hd;
        in = Hs;
        din = Hd;
    }
    b = W + (size_t)K * din;
    for (int64_t i = 0; i < m; i++) memcpy(Z + i * K, b, (size_t)K * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, K, din, 1.0, in, din, W, din, 1.0, Z, K);
}

double shap_utility(const shap_problem *p, shap_work *wk, const double *w) {
    const int K = p->K;
    forward_rows(p, w, p->vx, p->V, wk->H, wk->Z);
    double total = 0;
    for (int64_t i = 0; i < p->V; i++) {
        const double *z = wk->Z + i * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[best]) best = k;
        if (!p->utility_loss) {
            total += best == p->vy[i];
            continue;
        }
        double s = 0;
        for (int k = 0; k < K; k++) s += exp(z[k] - z[best]);
        total -= z[best] + log(s) - z[p->vy[i]];
    }
    return total / (double)p->V;
}

void shap_sgd_step(const shap_problem *p, shap_work *wk, double *w, int64_t i) {
    const int D = p->D, K = p->K, Hd = p->mlp ? p->hidden : 0;
    const double *x = p->x + i * D;
    const int y = p->y[i];
    double *h = wk->tmp, *dh = wk->tmp + Hd, *g = wk->tmp + 2 * Hd;
    const double lr = p->lr, decay = 1.0 - p->lr * p->wd;
    // forward: h = tanh(W0 x + b0) (MLP), z = W h + b into g
    const double *in = x;
    int din = D;
    double *W = w;
    if (p->mlp) {
        const double *W0 = w, *b0 = w + (size_t)Hd * D;
        for (int j = 0; j < Hd; j++) {
            double t = b0[j];
            for (int d = 0; d < D; d++) t += W0[(size_t)j * D + d] * x[d];
            h[j] = tanh(t);
        }
        W = w + (size_t)Hd * D + Hd;
        in = h;
        din = Hd;
    }
    double *b = W + (size_t)K * din, m = -INFINITY;
    for (int k = 0; k < K; k++) {
        double t = b[k];
        for (int d = 0; d < din; d++) t += W[(size_t)k * din + d] * in[d];
        g[k] = t;
        m = t > m ? t : m;
    }
    // dℓ/dz = softmax(z) − e_y
    double s = 0;
    for (int k = 0; k < K; k++) s += (g[k] = exp(g[k] - m));
    for (int k = 0; k < K; k++) g[k] = g[k] / s - (k == y);
    if (p->mlp) {  // dℓ/dh through W1 (before W1 moves), times tanh' = 1 − h²
        for (int j = 0; j < Hd; j++) {
            double t = 0;
            for (int k = 0; k < K; k++) t += W[(size_t)k * Hd + j] * g[k];
            dh[j] = t * (1.0 - h[j] * h[j]);
        }
    }
    for (int k = 0; k < K; k++) {
        for (int d = 0; d < din; d++) W[(size_t)k * din + d] = decay * W[(size_t)k * din + d] - lr * g[k] * in[d];
        b[k] = decay * b[k] - lr * g[k];
    }
    if (p->mlp) {
        double *W0 = w, *b0 = w + (size_t)Hd * D;
        for (int j = 0; j < Hd; j++) {
            for (int d = 0; d < D; d++) W0[(size_t)j * D + d] = decay * W0[(size_t)j * D + d] - lr * dh[j] * x[d];
            b0[j] = decay * b0[j] - lr * dh[j];
        }
    }
}

infl_status shap_fit(infl_ctx *ctx, const shap_problem *p, shap_work *wk, int64_t m) {
    if (m == 0) {
        shap_model_init(p, wk->w);
        return INFL_OK;
    }
    if (!p->mlp) {
        infl_mlp_spec spec = {.L = 1, .widths = {p->D, p->K}, .loss = INFL_LOSS_SOFTMAX_CE, .wd = p->wd};
        infl_convex_rows rows = {.n = m, .x = wk->sx, .y = wk->sy};
        return infl_convex_fit_rows(ctx, &rows, &spec, &p->fit, wk->w, NULL);
    }
    // the MLP: epochs of per-example SGD over the subset's rows, in an order keyed by
    // (seed, epoch) over the positions (so a subset's fit does not depend on the thread)
    shap_problem q = *p;
    q.x = wk->sx;
    q.y = wk->sy;
    for (int e = 0; e < p->epochs; e++) {
        RETURN_IF_CANCELLED(ctx);
        uint64_t off = infl_rng_below(p->seed, INFL_RNG_SHUFFLE, (uint64_t)e, (uint32_t)m, (uint64_t)m);
        for (int64_t j = 0; j < m; j++) shap_sgd_step(&q, wk, wk->w, (j + (int64_t)off) % m);
    }
    for (size_t i = 0, P = shap_nparams(p); i < P; i++)
        RETURN_IF(ctx, !isfinite(wk->w[i]), INFL_E_NUMERIC,
                  "the MLP's SGD diverged on a subset of %lld rows (lr %g): lower --lr", (long long)m, p->lr);
    return INFL_OK;
}

infl_status shap_problem_finish(infl_ctx *ctx, shap_problem *p, shap_work *wk) {
    shap_model_init(p, wk->w);
    p->u_empty = shap_utility(p, wk, wk->w);
    memcpy(wk->sx, p->x, (size_t)p->n * p->D * sizeof(double));
    memcpy(wk->sy, p->y, (size_t)p->n * sizeof(int32_t));
    FORWARD_IF_ERROR(shap_fit(ctx, p, wk, p->n));
    p->u_all = shap_utility(p, wk, wk->w);
    return INFL_OK;
}

// ---- permutations ----

// Whether a permutation's walk truncates after this prefix's utility v: `within` counts
// the prefixes in a row within the tolerance of U(N).
static int truncates(const shap_problem *p, double v, int *within) {
    if (!(p->tolerance > 0)) return 0;
    *within = fabs(p->u_all - v) <= p->tolerance * fabs(p->u_all) ? *within + 1 : 0;
    return *within >= SHAP_PATIENCE;
}

// One permutation's walk: TMC's fit of each prefix, or G-Shapley's one SGD step.
static infl_status walk(infl_ctx *ctx, const shap_problem *p, shap_work *wk, const int64_t *perm, int gshapley,
                        double *delta, int64_t *fits) {
    const int D = p->D;
    shap_model_init(p, wk->w);
    double prev = p->u_empty;
    int within = 0, done = 0;
    for (int64_t j = 0; j < p->n; j++) {
        int64_t i = perm[j];
        if (done) {
            delta[i] = 0;
            continue;
        }
        if (gshapley) {
            shap_sgd_step(p, wk, wk->w, i);
        } else if (p->mlp) {
            // the MLP's fit depends on its rows' order and its start: U(S) is a function of the set only
            // when the prefix is fitted from the untrained model in index order
            int64_t at = j;
            while (at > 0 && wk->idx[at - 1] > i) {
                wk->idx[at] = wk->idx[at - 1];
                at--;
            }
            wk->idx[at] = i;
            for (int64_t k = 0; k <= j; k++) {
                memcpy(wk->sx + k * D, p->x + wk->idx[k] * D, (size_t)D * sizeof(double));
                wk->sy[k] = p->y[wk->idx[k]];
            }
            shap_model_init(p, wk->w);
        } else {  // the convex model's optimum is unique: warm start from the previous prefix's
            memcpy(wk->sx + j * D, p->x + i * D, (size_t)D * sizeof(double));
            wk->sy[j] = p->y[i];
        }
        if (!gshapley) FORWARD_IF_ERROR(shap_fit(ctx, p, wk, j + 1));
        (*fits)++;
        double v = shap_utility(p, wk, wk->w);
        RETURN_IF(ctx, !isfinite(v), INFL_E_NUMERIC, "the utility is not finite at step %lld (lr %g): lower --lr",
                  (long long)j, p->lr);
        delta[i] = v - prev;
        prev = v;
        done = truncates(p, v, &within);
    }
    return INFL_OK;
}

infl_status shap_tmc_perm(infl_ctx *ctx, const shap_problem *p, shap_work *wk, const int64_t *perm, double *delta,
                          int64_t *fits) {
    return walk(ctx, p, wk, perm, 0, delta, fits);
}

infl_status shap_gshapley_perm(infl_ctx *ctx, const shap_problem *p, shap_work *wk, const int64_t *perm,
                               double *delta, int64_t *fits) {
    return walk(ctx, p, wk, perm, 1, delta, fits);
}

// ---- exact ----

infl_status shap_subset_utility(infl_ctx *ctx, const shap_problem *p, shap_work *wk, uint32_t mask, double *u) {
    const int D = p->D;
    int64_t m = 0;
    for (int64_t i = 0; i < p->n; i++)
        if (mask >> i & 1u) {
            memcpy(wk->sx + m * D, p->x + i * D, (size_t)D * sizeof(double));
            wk->sy[m++] = p->y[i];
        }
    shap_model_init(p, wk->w);
    FORWARD_IF_ERROR(shap_fit(ctx, p, wk, m));
    *u = shap_utility(p, wk, wk->w);
    return INFL_OK;
}

void shap_exact_values(double *phi, const double *U, int n) {
    // c[s] = s! (n − s − 1)! / n!, by lgamma (n ≤ 16: exact to round-off)
    double c[SHAP_EXACT_MAX + 1];
    for (int s = 0; s < n; s++) c[s] = exp(lgamma(s + 1.0) + lgamma((double)(n - s)) - lgamma(n + 1.0));
    for (int i = 0; i < n; i++) {
        double t = 0;
        for (uint32_t mask = 0; mask < (1u << n); mask++) {
            if (mask >> i & 1u) continue;
            t += c[__builtin_popcount(mask)] * (U[mask | 1u << i] - U[mask]);
        }
        phi[i] = t;
    }
}

// ---- KNN-Shapley ----

void shap_knn_recursion(double *s, const uint8_t *match, int64_t N, int K) {
    if (N < 1) return;
    // the farthest point counts among the K nearest of S ∪ {it} when |S| < K: a share
    // min(K, N) / N of the subset sizes (Jia et al. state N ≥ K, where this is 1/N)
    s[N - 1] = (double)match[N - 1] / (double)K * (double)(N < K ? N : K) / (double)N;
    for (int64_t r = N - 2; r >= 0; r--) {
        double i = (double)(r + 1);  // 1-based rank
        double kk = i < K ? i : (double)K;
        s[r] = s[r + 1] + ((double)match[r] - (double)match[r + 1]) / (double)K * kk / i;
    }
}
