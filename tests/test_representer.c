/*
 * test_representer.c — representer points (estimators/representer.h) against float64
 * references on tiny MLPs trained on blobs:
 *  - the fine-tuned last layer is a stationary point of (1/n) Σ ℓ_i + λ |W̃|² (its
 *    gradient, recomputed here in float64 from the model's features, is tiny), also
 *    when the features do not fit one shard and are recomputed at every pass;
 *  - the decomposition Σ_i α_i f̃_iᵀ f̃_t reproduces the fine-tuned logits of held-out rows
 *    to 1e-5 relative;
 *  - infl rank's full score matrix and infl self's values equal a naive float64
 *    reference (features by a plain forward pass, α from the fine-tuned layer), for
 *    softmax and sigmoid heads, a hidden layer or none, the predicted or the true class;
 *    each query's scores add up to its fine-tuned logit; the fit statistics;
 *  - bad input: a model without a logits layer (a gpt), mse, λ < 0, no weight decay to
 *    take λ from, and the command line's misuse of the options.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "estimators/representer.h"
#include "estimators/stats.h"
#include "models/train.h"
#include "store/store.h"
#include "testutil.h"

// A small MLP trained by SGD on blobs (tanh; softmax or sigmoid head, weight decay wd).
typedef struct {
    infl_loss loss;
    double wd;
} head;

static void tweak(infl_train_options *o, void *u) {
    const head *h = u;
    o->activation = INFL_ACT_TANH;
    o->loss = h->loss;
    o->weight_decay = h->wd;
    o->epochs = 3;
    o->batch = 16;
    o->lr = 0.05;
}

static void make_run(const char *data, const char *run, int L, const int *w, infl_loss loss, double wd) {
    head h = {loss, wd};
    tu_train_mlp(data, run, L, w, tweak, &h);
}

// The run's model and final weights on the backend, and a fine-tune of its last layer.
typedef struct {
    infl_ctx *ctx;
    infl_run *run;
    infl_model *m;
    float *hp, *dp;   // parameters, host and backend
    infl_split *train;
    repr_layer r;
} fixture;

static void fixture_open(fixture *f, const char *data, const char *run, double lambda, int64_t shard_rows) {
    f->ctx = tu_ctx();
    cr_assert_eq(store_run_open(f->ctx, run, &f->run), INFL_OK, "%s", infl_ctx_error(f->ctx));
    cr_assert_eq(infl_model_create(f->ctx, store_run_spec(f->run), 0, &f->m), INFL_OK);
    f->hp = malloc(f->m->nparams * sizeof(float));
    int ci;
    cr_assert_eq(store_run_find(f->ctx, f->run, "final", &ci), INFL_OK);
    cr_assert_eq(store_run_load(f->ctx, f->run, ci, f->hp), INFL_OK);
    f->dp = tu_upload(f->ctx, f->hp, f->m->nparams * sizeof(float));
    f->train = tu_open_split(f->ctx, tu_ref(0, data, "train"));
    cr_assert_eq(repr_fit(f->ctx, &f->r, f->m, f->dp, f->train, lambda, shard_rows, 64, 16), INFL_OK, "%s",
                 infl_ctx_error(f->ctx));
}

static void fixture_close(fixture *f) {
    repr_free(f->ctx, &f->r);
    store_split_close(f->train);
    infl_be_free(f->ctx, f->dp);
    free(f->hp);
    infl_model_free(f->m);
    store_run_close(f->run);
    infl_ctx_free(f->ctx);
}

// The logits layer's inputs of a split's rows through the model (the seam, float32), in double; y (n) labels.
static double *seam_features(fixture *f, const char *ref, int64_t *n, int32_t **y) {
    infl_split *s = tu_open_split(f->ctx, ref);
    const infl_split_info *in = store_split_info(s);
    *n = in->n;
    int d = f->r.d;
    float *x = malloc(sizeof(float) * (size_t)in->n * in->d), *a = malloc(sizeof(float) * (size_t)in->n * d);
    *y = malloc(sizeof(int32_t) * (size_t)in->n);
    cr_assert_eq(store_split_read(f->ctx, s, 0, in->n, x, *y, NULL), INFL_OK);
    float *dx = tu_upload(f->ctx, x, sizeof(float) * (size_t)in->n * in->d);
    int32_t *dy = tu_upload(f->ctx, *y, sizeof(int32_t) * (size_t)in->n);
    infl_model_work *w;
    cr_assert_eq(infl_model_work_create(f->ctx, f->m, (int)in->n, &w), INFL_OK);
    infl_batch bt = {.b = (int)in->n, .x = dx, .y = dy};
    cr_assert_eq(infl_model_factors(f->ctx, f->m, f->dp, &bt, w), INFL_OK);
    cr_assert_eq(f->ctx->be->download(f->ctx, a, w->A[f->r.l], sizeof(float) * (size_t)in->n * d), INFL_OK);
    double *F = malloc(sizeof(double) * (size_t)in->n * d);
    for (int64_t i = 0; i < in->n * d; i++) F[i] = a[i];
    infl_model_work_free(f->ctx, f->m, w);
    infl_be_free(f->ctx, dx);
    infl_be_free(f->ctx, dy);
    free(x);
    free(a);
    store_split_close(s);
    return F;
}

// The same features by a plain float64 forward pass of the run's weights (tanh MLP).
static double *naive_features(fixture *f, const char *ref, int64_t *n, int32_t **y) {
    const infl_mlp_spec *s = &f->m->spec.mlp;
    infl_ctx *ctx = f->ctx;
    infl_split *sp = tu_open_split(ctx, ref);
    const infl_split_info *in = store_split_info(sp);
    *n = in->n;
    float *x = malloc(sizeof(float) * (size_t)in->n * in->d);
    *y = malloc(sizeof(int32_t) * (size_t)in->n);
    cr_assert_eq(store_split_read(ctx, sp, 0, in->n, x, *y, NULL), INFL_OK);
    int d = f->r.d;
    double *F = malloc(sizeof(double) * (size_t)in->n * d), a[64], b[64];
    for (int64_t i = 0; i < in->n; i++) {
        for (int j = 0; j < s->widths[0]; j++) a[j] = x[i * in->d + j];
        for (int l = 0; l < s->L - 1; l++) {
            const float *W = f->hp + infl_mlp_woff(s, l), *bb = f->hp + infl_mlp_boff(s, l);
            for (int o = 0; o < s->widths[l + 1]; o++) {
                double z = bb[o];
                for (int j = 0; j < s->widths[l]; j++) z += (double)W[o * s->widths[l] + j] * a[j];
                b[o] = tu_ref_act(s->act, z);
            }
            memcpy(a, b, sizeof(double) * (size_t)s->widths[l + 1]);
        }
        memcpy(F + i * d, a, sizeof(double) * (size_t)d);
    }
    free(x);
    store_split_close(sp);
    return F;
}

// z (K) = W̃ [f; 1]; g (K) = ∂ℓ/∂z at label y (softmax or sigmoid); returns the predicted class.
static int ref_logits(const repr_layer *r, const double *W, const double *f, int y, double *z, double *g) {
    int K = r->K, d = r->d;
    for (int k = 0; k < K; k++) {
        z[k] = W[K * d + k];
        for (int j = 0; j < d; j++) z[k] += W[k * d + j] * f[j];
    }
    if (r->m->out_loss == INFL_LOSS_SIGMOID_CE) {
        if (g) g[0] = 1.0 / (1.0 + exp(-z[0])) - y;
        return z[0] > 0;
    }
    double m = z[0], s = 0;
    int arg = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > m) m = z[k], arg = k;
    for (int k = 0; k < K; k++) s += exp(z[k] - m);
    for (int k = 0; g && k < K; k++) g[k] = exp(z[k] - m) / s - (k == y);
    return arg;
}

// α (n, K) = −g_i / (2λn) at the fine-tuned layer for features F (n, d) and labels y.
static double *ref_alpha(const repr_layer *r, const double *F, const int32_t *y, int64_t n) {
    double *al = malloc(sizeof(double) * (size_t)n * r->K), z[16];
    for (int64_t i = 0; i < n; i++) {
        ref_logits(r, r->W, F + i * r->d, y[i], z, al + i * r->K);
        for (int k = 0; k < r->K; k++) al[i * r->K + k] *= -1.0 / (r->wd * (double)n);
    }
    return al;
}

static double kern(const double *a, const double *b, int d) {
    double s = 1.0;
    for (int j = 0; j < d; j++) s += a[j] * b[j];
    return s;
}

// ---- the fine-tune and the decomposition ----

static void check_decomposition(int64_t shard_rows) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 90, 5, 3, 4);
    const int w[] = {5, 7, 3};
    make_run(data, run, 2, w, INFL_LOSS_SOFTMAX_CE, 1e-2);
    fixture f = {0};
    const double lambda = 0.02;  // not the run's wd / 2: the fine-tune has to move
    fixture_open(&f, data, run, lambda, shard_rows);
    const repr_layer *r = &f.r;
    int K = r->K, d = r->d;
    cr_assert_eq(d, 7);
    cr_assert_eq(K, 3);
    cr_assert_eq(r->n, 90);
    int64_t n, nt;
    int32_t *y, *yt;
    double *F = seam_features(&f, tu_ref(0, data, "train"), &n, &y);
    double *Ft = seam_features(&f, tu_ref(0, data, "test"), &nt, &yt);
    // the model's features are a plain forward pass's
    int64_t n2;
    int32_t *y2;
    double *Fn = naive_features(&f, tu_ref(0, data, "train"), &n2, &y2);
    for (int64_t i = 0; i < n * d; i++) cr_assert(fabs(F[i] - Fn[i]) < 1e-5, "feature %ld: %g vs %g", (long)i, F[i], Fn[i]);
    // stationary: ∇R = (1/n) Σ g_i f̃_iᵀ + 2λ W̃, in float64
    size_t np = (size_t)K * d + K;
    double *gR = calloc(np, sizeof(double)), z[16], g[16], moved = 0;
    for (int64_t i = 0; i < n; i++) {
        ref_logits(r, r->W, F + i * d, y[i], z, g);
        for (int k = 0; k < K; k++) {
            for (int j = 0; j < d; j++) gR[k * d + j] += g[k] * F[i * d + j] / n;
            gR[K * d + k] += g[k] / n;
        }
    }
    double gn = 0;
    for (size_t p = 0; p < np; p++) {
        gR[p] += r->wd * r->W[p];
        gn += gR[p] * gR[p];
        moved = fmax(moved, fabs(r->W[p] - r->W0[p]));
    }
    gn = sqrt(gn);
    cr_assert(gn < 1e-9, "|grad R| = %g at the fine-tuned layer", gn);
    cr_assert(fabs(gn - r->fit.grad_norm) < 1e-10, "reported |grad| %g, recomputed %g", r->fit.grad_norm, gn);
    cr_assert(moved > 1e-3, "the fine-tune did not move the layer (%g)", moved);
    cr_assert(r->fit.iters >= 1 && r->fit.decomposition_bound == r->fit.grad_norm / r->wd);
    // Σ_i α_i f̃_iᵀ f̃_t = W̃ f̃_t for held-out rows t, every class
    double *al = ref_alpha(r, F, y, n), worst = 0, scale = 0;
    for (int64_t t = 0; t < nt; t++) {
        ref_logits(r, r->W, Ft + t * d, 0, z, NULL);
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += al[i * K + k] * kern(F + i * d, Ft + t * d, d);
            worst = fmax(worst, fabs(s - z[k]));
            scale = fmax(scale, fabs(z[k]));
        }
    }
    cr_assert(worst <= 1e-5 * scale, "decomposition: max error %g against logits up to %g", worst, scale);
    free(F);
    free(Ft);
    free(Fn);
    free(y);
    free(yt);
    free(y2);
    free(gR);
    free(al);
    fixture_close(&f);
}

Test(representer, finetune_is_stationary_and_decomposes_the_logits) { check_decomposition(0); }
Test(representer, features_recomputed_shard_by_shard_give_the_same_layer) { check_decomposition(23); }

// ---- the pipelines against the reference ----

typedef struct {
    const char *name;
    int L;
    int w[3];
    infl_loss loss;
    int k;            // classes of the blobs
    int cls;          // representer_class: 0 predicted, 1 true, 2 loss
    int64_t shard;
    double lambda;    // 0: the run's wd / 2
} rcase;

static const rcase cases[] = {
    {"softmax, hidden layer, predicted class", 2, {5, 6, 3}, INFL_LOSS_SOFTMAX_CE, 3, 0, 0, 0},
    {"softmax, hidden layer, true class, shards of 13", 2, {5, 6, 3}, INFL_LOSS_SOFTMAX_CE, 3, 1, 13, 0.01},
    {"sigmoid head, true class", 2, {4, 5, 1}, INFL_LOSS_SIGMOID_CE, 2, 1, 0, 0.02},
    {"sigmoid head, predicted class", 2, {4, 5, 1}, INFL_LOSS_SIGMOID_CE, 2, 0, 0, 0},
    {"no hidden layer (the features are the rows)", 1, {5, 4}, INFL_LOSS_SOFTMAX_CE, 4, 1, 0, 0},
    {"softmax, the loss (every class by -dl/dlogit)", 2, {5, 6, 3}, INFL_LOSS_SOFTMAX_CE, 3, 2, 0, 0},
    {"sigmoid head, the loss", 2, {4, 5, 1}, INFL_LOSS_SIGMOID_CE, 2, 2, 0, 0.02},
};

Test(representer, rank_and_self_match_the_reference) {
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const rcase *cs = &cases[c];
        const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *out = tu_path("s.h5");
        tu_make_blobs(data, 70, cs->w[0], cs->k, 11 + c);
        make_run(data, run, cs->L, cs->w, cs->loss, 1e-2);
        fixture f = {0};
        double lambda = cs->lambda > 0 ? cs->lambda : 1e-2 / 2;
        fixture_open(&f, data, run, lambda, 0);
        const repr_layer *r = &f.r;
        int K = r->K, d = r->d;
        int64_t n, M;
        int32_t *y, *yq;
        double *F = naive_features(&f, tu_ref(0, data, "train"), &n, &y);
        double *Fq = naive_features(&f, tu_ref(0, data, "test"), &M, &yq);
        double *al = ref_alpha(r, F, y, n), z[16], z0[16];

        infl_rank_options o = infl_rank_options_default();
        o.run = run;
        o.query = tu_ref(1, data, "test");
        o.method = INFL_METHOD_REPRESENTER;
        o.representer_lambda = cs->lambda;
        o.representer_class = cs->cls;
        o.shard_rows = cs->shard;
        o.top = 3;
        o.output = out;
        o.save_scores = 1;
        o.force = 1;
        infl_rank_result *res;
        cr_assert_eq(infl_rank(f.ctx, &o, &res), INFL_OK, "%s: %s", cs->name, infl_ctx_error(f.ctx));
        cr_assert_eq(res->M, M);
        cr_assert(fabs(res->representer.lambda - lambda) < 1e-15, "%s: λ %g", cs->name, res->representer.lambda);
        infl_scr *sc;
        cr_assert_eq(store_scores_open(f.ctx, out, &sc), INFL_OK, "%s", infl_ctx_error(f.ctx));
        cr_assert_str_eq(store_scores_attr(sc, "method"), "representer");
        float *row = malloc(sizeof(float) * (size_t)n);
        stats_corr corr = {0};
        int64_t right0 = 0, right1 = 0;
        for (int64_t i = 0; i < n; i++) {
            int p1 = ref_logits(r, r->W, F + i * d, 0, z, NULL), p0 = ref_logits(r, r->W0, F + i * d, 0, z0, NULL);
            for (int k = 0; k < K; k++) stats_corr_add(&corr, z0[k], z[k]);
            right0 += p0 == y[i];
            right1 += p1 == y[i];
        }
        for (int q = 0; q < M; q++) {
            // the query's weights over the classes: ±e_c for a class, −∂ℓ_q/∂Φ_q for the loss
            double e[16] = {0}, gq[16], want_logit = 0;
            int pred = ref_logits(r, r->W, Fq + q * d, yq[q], z, gq);
            int cl = cs->cls ? yq[q] : pred;
            if (cs->cls == 2)
                for (int k = 0; k < K; k++) e[k] = -gq[k];
            else
                e[cs->loss == INFL_LOSS_SIGMOID_CE ? 0 : cl] = cs->loss == INFL_LOSS_SIGMOID_CE && cl == 0 ? -1.0 : 1.0;
            for (int k = 0; k < K; k++) want_logit += e[k] * z[k];
            cr_assert_eq(res->query_class[q], cl, "%s: query %d scored for class %d, expected %d", cs->name, q,
                         res->query_class[q], cl);
            cr_assert(fabs(res->query_logit[q] - want_logit) <= 1e-5 * (1 + fabs(want_logit)),
                      "%s: query %d logit %g vs %g", cs->name, q, res->query_logit[q], want_logit);
            cr_assert_eq(store_scores_read_row(f.ctx, sc, q, row), INFL_OK);
            double err = 0, mag = 0, sum = 0, abssum = 0, best = -INFINITY;
            for (int64_t i = 0; i < n; i++) {
                double want = 0;
                for (int k = 0; k < K; k++) want += e[k] * al[i * K + k];
                want *= kern(F + i * d, Fq + q * d, d);
                err = fmax(err, fabs(row[i] - want));
                mag = fmax(mag, fabs(want));
                sum += row[i];
                abssum += fabs(row[i]);
                best = fmax(best, row[i]);
            }
            cr_assert(err <= 1e-4 * mag, "%s: query %d: scores differ from the reference by %g (max %g)", cs->name, q,
                      err, mag);
            // the scores add up to the fine-tuned logit of the class (the loss: −∂ℓ_q/∂Φ_q · Φ_q)
            cr_assert(fabs(sum - res->query_logit[q]) <= 1e-5 * abssum + 1e-6, "%s: query %d: sum %g, logit %g",
                      cs->name, q, sum, res->query_logit[q]);
            cr_assert_eq(res->top_score[q * o.top], (float)best);
        }
        cr_assert(fabs(res->representer.train_pearson - stats_corr_pearson(&corr)) < 1e-5, "%s: Pearson %g vs %g",
                  cs->name, res->representer.train_pearson, stats_corr_pearson(&corr));
        cr_assert(fabs(res->representer.train_acc_before - (double)right0 / n) < 1.5 / n);
        cr_assert(fabs(res->representer.train_acc_after - (double)right1 / n) < 1.5 / n);
        cr_assert(res->representer.query_acc_after >= 0 && res->representer.query_acc_after <= 1);
        store_scores_close(sc);
        infl_rank_result_free(res);

        // self: α_{i,y_i} (|f_i|² + 1)
        o.output = NULL;
        o.save_scores = 0;
        infl_self_result *sr;
        cr_assert_eq(infl_self(f.ctx, &o, &sr), INFL_OK, "%s: %s", cs->name, infl_ctx_error(f.ctx));
        double err = 0, mag = 0;
        for (int64_t i = 0; i < n; i++) {
            int cl = y[i], col = cs->loss == INFL_LOSS_SIGMOID_CE ? 0 : cl;
            double sign = cs->loss == INFL_LOSS_SIGMOID_CE && cl == 0 ? -1.0 : 1.0;
            double want = sign * al[i * K + col] * kern(F + i * d, F + i * d, d);
            cr_assert(want >= 0, "%s: a row's part of its own label's logit is >= 0", cs->name);
            err = fmax(err, fabs(sr->self[i] - want));
            mag = fmax(mag, fabs(want));
        }
        cr_assert(err <= 1e-4 * mag, "%s: self differs from the reference by %g (max %g)", cs->name, err, mag);
        cr_assert(fabs(sr->representer.train_pearson - stats_corr_pearson(&corr)) < 1e-5);
        infl_self_result_free(sr);
        free(row);
        free(F);
        free(Fq);
        free(al);
        free(y);
        free(yq);
        fixture_close(&f);
    }
}

// ---- bad input ----

Test(representer, bad_input_is_refused_clearly) {
    infl_ctx *ctx = tu_ctx();
    // a gpt: its output head is tied to the token embedding, not a layer to fine-tune
    infl_model_spec gs = {.kind = INFL_MODEL_GPT,
                          .gpt = {.n_layer = 1, .n_head = 2, .dim = 8, .context = 8, .vocab = 257, .eot = 256, .wd = 0.1}};
    infl_model *g;
    double lam;
    cr_assert_eq(infl_model_create(ctx, &gs, 0, &g), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(repr_check(ctx, g, "gpt.h5", 0.1, &lam), INFL_E_UNSUPPORTED);
    cr_assert(strstr(infl_ctx_error(ctx), "last layer") && strstr(infl_ctx_error(ctx), "gpt.h5"), "%s",
              infl_ctx_error(ctx));
    infl_model_free(g);
    // an mse mlp: no classes
    infl_model_spec ms = {.kind = INFL_MODEL_MLP, .mlp = {.L = 2, .widths = {3, 4, 2}, .loss = INFL_LOSS_MSE, .wd = 1e-3}};
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, &ms, 0, &m), INFL_OK);
    cr_assert_eq(repr_check(ctx, m, "mse.h5", 0.1, &lam), INFL_E_UNSUPPORTED);
    cr_assert(strstr(infl_ctx_error(ctx), "mse"), "%s", infl_ctx_error(ctx));
    infl_model_free(m);
    // λ < 0; λ from a run without weight decay
    ms.mlp.loss = INFL_LOSS_SOFTMAX_CE;
    ms.mlp.wd = 0;
    cr_assert_eq(infl_model_create(ctx, &ms, 0, &m), INFL_OK);
    cr_assert_eq(repr_check(ctx, m, "r.h5", -1, &lam), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "λ > 0"), "%s", infl_ctx_error(ctx));
    cr_assert_eq(repr_check(ctx, m, "r.h5", 0, &lam), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "--representer-lambda"), "%s", infl_ctx_error(ctx));
    cr_assert_eq(repr_check(ctx, m, "r.h5", 0.25, &lam), INFL_OK);
    cr_assert_eq(lam, 0.25);
    infl_model_free(m);

    // through the API and the command line, on a real run
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *sa = tu_path("a.h5"), *sb = tu_path("b.h5");
    tu_make_blobs(data, 40, 4, 3, 2);
    const int w[] = {4, 5, 3};
    make_run(data, run, 2, w, INFL_LOSS_SOFTMAX_CE, 1e-2);
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test");
    o.method = INFL_METHOD_REPRESENTER;
    o.representer_class = 3;
    infl_rank_result *res;
    cr_assert_eq(infl_rank(ctx, &o, &res), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "--representer-class"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);

    const char *q = tu_ref(1, data, "test[0:4]");
    const char *bad[][16] = {
        {"infl", "rank", "--run", run, "--query", q, "--method", "representer", "--representer-lambda", "0", NULL},
        {"infl", "rank", "--run", run, "--query", q, "--method", "representer", "--representer-lambda", "-1", NULL},
        {"infl", "rank", "--run", run, "--query", q, "--method", "representer", "--representer-class", "best", NULL},
        {"infl", "rank", "--run", run, "--query", q, "--method", "graddot", "--representer-lambda", "0.1", NULL},
        {"infl", "self", "--run", run, "--method", "representer", "--representer-class", "true", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tu_cli(bad[i]), 2, "case %zu: %s", i, tu_err());
    // a good call: the table names the class and its logit; compare takes the scores
    const char *good[] = {"infl", "rank", "--run", run, "--query", q, "--method", "representer",
                          "--representer-class", "true", "-o", sa, "--save-scores", NULL};
    cr_assert_eq(tu_cli(good), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "excitatory") && strstr(tu_out(), "inhibitory") && strstr(tu_out(), "fine-tuned logit"),
              "%s", tu_out());
    cr_assert(strstr(tu_out(), "Pearson"), "%s", tu_out());
    const char *other[] = {"infl", "rank", "--run", run, "--query", q, "--method", "graddot", "-o", sb, "--save-scores",
                           NULL};
    cr_assert_eq(tu_cli(other), 0, "%s", tu_err());
    const char *cmp[] = {"infl", "compare", sa, sb, NULL};
    cr_assert_eq(tu_cli(cmp), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "representer"), "%s", tu_out());
}
