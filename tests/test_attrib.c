/*
 * test_attrib.c — the attribution pipelines against the truth:
 *  - every method's full score matrix against a naive float64 reference that forms
 *    per-example gradients and, for influence functions, the explicit Hessian (by
 *    central differences of the reference gradient) and solves with it;
 *  - the streamed top-k against a full sort, for shard sizes that do and do not
 *    divide N;
 *  - leave-one-out retraining of a logistic regression on 7×7 Fashion-MNIST
 *    (Pearson ≥ 0.95 for the direct and the CG solver);
 *  - mislabel detection by TracIn self-influence (≥ twice the random share of flipped
 *    labels in the top 10%);
 *  - bad input: mismatched widths, --top > N, a diverged checkpoint.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pipelines/attrib.h"
#include "models/train.h"
#include "testutil.h"

// A small trained MLP with several checkpoints, on blobs.
static void make_run(const char *data, const char *run, infl_activation act, int L, const int *w, double wd) {
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(3, data, "train");
    o.nlayers = L;
    for (int l = 0; l <= L; l++) o.widths[l] = w[l];
    o.activation = act;
    o.epochs = 3;
    o.batch = 16;
    o.lr = 0.05;
    o.weight_decay = wd;
    o.checkpoint_every = 5;
    o.optimizer = INFL_OPT_SGD;
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// Rows of a split in double.
static double *read_rows(infl_ctx *ctx, const char *r, int64_t *n, int d, int32_t **y) {
    infl_split *s = tu_open_split(ctx, r);
    *n = store_split_info(s)->n;
    float *xf = malloc(sizeof(float) * (size_t)*n * d);
    *y = malloc(sizeof(int32_t) * (size_t)*n);
    cr_assert_eq(store_split_read(ctx, s, 0, *n, xf, *y, NULL), INFL_OK);
    double *x = malloc(sizeof(double) * (size_t)*n * d);
    for (int64_t i = 0; i < *n * d; i++) x[i] = xf[i];
    free(xf);
    store_split_close(s);
    return x;
}

// Mean gradient of R over the rows (loss only) plus wd·w.
static void ref_grad_R(const infl_mlp_spec *s, const double *w, const double *x, const int32_t *y, int64_t n,
                       double *g) {
    size_t P = infl_mlp_nparams(s);
    memset(g, 0, P * sizeof(double));
    for (int64_t i = 0; i < n; i++) tu_ref_example(s, w, x + i * s->widths[0], y[i], NULL, g, NULL);
    for (size_t j = 0; j < P; j++) g[j] = g[j] / n + s->wd * w[j];
}

// The naive reference score matrix (M, N) of a method.
static double *reference(const char *data, const char *run, const infl_rank_options *o, int M, int64_t *Nout,
                         const char *qsplit) {
    infl_ctx *ctx = tu_ctx();
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
    const infl_mlp_spec *s = &store_run_spec(r)->mlp;
    size_t P = infl_mlp_nparams(s);
    int d = s->widths[0];
    int64_t N, Mq;
    int32_t *y, *yq;
    double *x = read_rows(ctx, tu_ref(0, data, "train"), &N, d, &y);
    double *xq = read_rows(ctx, tu_ref(1, data, qsplit), &Mq, d, &yq);
    *Nout = N;
    double *S = calloc((size_t)M * N, sizeof(double));
    double *gz = malloc(sizeof(double) * P * N), *gq = malloc(sizeof(double) * P * M), *w = malloc(sizeof(double) * P);
    float *wf = malloc(sizeof(float) * P);
    int n = store_run_ncheckpoints(r);
    for (int c = 0; c < n; c++) {
        int use = o->method == INFL_METHOD_TRACIN;
        if (!use) {
            int fi;
            store_run_find(ctx, r, o->checkpoint, &fi);
            use = fi == c;
        }
        if (!use) continue;
        double wc = o->method == INFL_METHOD_TRACIN ? store_run_checkpoint(r, c)->lr : 1.0;
        cr_assert_eq(store_run_load(ctx, r, c, wf), INFL_OK);
        for (size_t j = 0; j < P; j++) w[j] = wf[j];
        memset(gz, 0, sizeof(double) * P * N);
        memset(gq, 0, sizeof(double) * P * M);
        for (int64_t i = 0; i < N; i++) tu_ref_example(s, w, x + i * d, y[i], NULL, gz + i * P, NULL);
        for (int q = 0; q < M; q++) tu_ref_example(s, w, xq + q * d, yq[q], NULL, gq + q * P, NULL);
        if (o->method == INFL_METHOD_IF) {
            // explicit H by central differences of the reference gradient, then (H + λI) v = g_q
            double *H = malloc(sizeof(double) * P * P), *gp = malloc(sizeof(double) * P),
                   *gm = malloc(sizeof(double) * P), *wp = malloc(sizeof(double) * P);
            for (size_t j = 0; j < P; j++) {
                memcpy(wp, w, P * sizeof(double));
                wp[j] = w[j] + 1e-5;
                ref_grad_R(s, wp, x, y, N, gp);
                wp[j] = w[j] - 1e-5;
                ref_grad_R(s, wp, x, y, N, gm);
                for (size_t i = 0; i < P; i++) H[i * P + j] = (gp[i] - gm[i]) / 2e-5;
            }
            for (size_t i = 0; i < P; i++)
                for (size_t j = 0; j < i; j++) H[i * P + j] = H[j * P + i] = 0.5 * (H[i * P + j] + H[j * P + i]);
            for (size_t i = 0; i < P; i++) H[i * P + i] += o->damping;
            lapack_int *piv = malloc(sizeof(lapack_int) * P);
            // solve for all queries: B (P, M) column-major = gqᵀ
            double *B = malloc(sizeof(double) * P * M);
            for (int q = 0; q < M; q++)
                for (size_t j = 0; j < P; j++) B[q * P + j] = gq[q * P + j];
            cr_assert_eq(LAPACKE_dgesv(LAPACK_COL_MAJOR, (lapack_int)P, M, H, (lapack_int)P, piv, B, (lapack_int)P), 0);
            memcpy(gq, B, sizeof(double) * P * M);
            free(B);
            free(piv);
            free(H);
            free(gp);
            free(gm);
            free(wp);
        }
        for (int q = 0; q < M; q++)
            for (int64_t i = 0; i < N; i++) {
                double dot = 0, nq = 0, nz = 0;
                for (size_t j = 0; j < P; j++) {
                    dot += gq[q * P + j] * gz[i * P + j];
                    nq += gq[q * P + j] * gq[q * P + j];
                    nz += gz[i * P + j] * gz[i * P + j];
                }
                S[q * N + i] += wc * (o->method == INFL_METHOD_GRADCOS ? dot / sqrt(nq * nz) : dot);
            }
    }
    free(x);
    free(xq);
    free(y);
    free(yq);
    free(gz);
    free(gq);
    free(w);
    free(wf);
    store_run_close(r);
    infl_ctx_free(ctx);
    return S;
}

typedef struct {
    infl_method method;
    infl_activation act;
    int solver;
    int hessian;
    double tol;
} mcase;

static const mcase cases[] = {
    {INFL_METHOD_GRADDOT, INFL_ACT_TANH, 0, 0, 1e-4},  {INFL_METHOD_GRADCOS, INFL_ACT_GELU, 0, 0, 1e-4},
    {INFL_METHOD_TRACIN, INFL_ACT_RELU, 0, 0, 1e-4},   {INFL_METHOD_TRACIN, INFL_ACT_TANH, 0, 0, 1e-4},
    {INFL_METHOD_IF, INFL_ACT_TANH, 0, 0, 2e-3},       {INFL_METHOD_IF, INFL_ACT_GELU, 1, 0, 2e-3},
};

ParameterizedTestParameters(attrib, scores_match_naive_reference) {
    return cr_make_param_array(mcase, (void *)cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(const mcase *mc, attrib, scores_match_naive_reference) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 90, 5, 3, 21);
    const int w[] = {5, 6, 3};
    make_run(data, run, mc->act, 2, w, 1e-2);
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.train = tu_ref(0, data, "train");
    o.query = tu_ref(1, data, "test[0:4]");
    o.method = mc->method;
    o.solver = mc->solver;
    o.hessian = mc->hessian;
    o.damping = mc->method == INFL_METHOD_IF ? 1.0 : 0.05;  // exact Hessians of small tanh/gelu nets are indefinite
    o.cg_tol = 1e-9;
    o.cg_iters = 500;
    o.top = 5;
    o.shard_rows = 37;  // does not divide 90
    infl_ctx *ctx = tu_ctx();
    attrib_full f = {.N = 90};
    f.S = calloc(4 * 90, sizeof(float));
    infl_rank_result *res;
    cr_assert_eq(attrib_rank(ctx, &o, attrib_keep_full, &f, &res), INFL_OK, "%s", infl_ctx_error(ctx));
    int64_t N;
    double *R = reference(data, run, &o, 4, &N, "test");
    cr_assert_eq(N, 90);
    double num = 0, den = 0;
    for (int i = 0; i < 4 * 90; i++) {
        num += (f.S[i] - R[i]) * (f.S[i] - R[i]);
        den += R[i] * R[i];
    }
    double e = sqrt(num / den);
    cr_assert(e < mc->tol, "method %d: relative error %g against the naive reference", mc->method, e);
    // the top-k is the full sort of the scores (ties by index)
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < res->k; j++) {
            int64_t t = res->top_index[q * 5 + j], b = res->bottom_index[q * 5 + j];
            int above = 0, below = 0;
            for (int i = 0; i < 90; i++) {
                float s = f.S[q * 90 + i];
                above += s > f.S[q * 90 + t] || (s == f.S[q * 90 + t] && i < t);
                below += s < f.S[q * 90 + b] || (s == f.S[q * 90 + b] && i < b);
            }
            cr_assert_eq(above, j, "query %d: top %d is not the %d-th largest", q, j, j);
            cr_assert_eq(below, j);
            cr_assert_float_eq(res->top_score[q * 5 + j], f.S[q * 90 + t], 0);
        }
    free(R);
    free(f.S);
    infl_rank_result_free(res);
    infl_ctx_free(ctx);
}

// Self-influence against the diagonal of the naive reference with the train rows as queries.
Test(attrib, self_influence_matches_reference) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 60, 5, 3, 8);
    const int w[] = {5, 6, 3};
    make_run(data, run, INFL_ACT_TANH, 2, w, 1e-2);
    infl_ctx *ctx = tu_ctx();
    const infl_method methods[] = {INFL_METHOD_GRADDOT, INFL_METHOD_TRACIN, INFL_METHOD_IF};
    for (int m = 0; m < 3; m++) {
        infl_rank_options o = infl_rank_options_default();
        o.run = run;
        o.method = methods[m];
        o.solver = 0;
        o.damping = 1.0;
        o.shard_rows = 17;
        infl_self_result *r;
        cr_assert_eq(infl_self(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
        int64_t N;
        double *R = reference(data, run, &o, 60, &N, "train");
        cr_assert_eq(r->N, 60);
        double num = 0, den = 0;
        for (int i = 0; i < 60; i++) {
            num += (r->self[i] - R[i * 60 + i]) * (r->self[i] - R[i * 60 + i]);
            den += R[i * 60 + i] * R[i * 60 + i];
        }
        cr_assert(sqrt(num / den) < 2e-3, "method %d: self-influence relative error %g", m, sqrt(num / den));
        free(R);
        infl_self_result_free(r);
    }
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.method = INFL_METHOD_IF;
    o.solver = 1;
    infl_self_result *r;
    cr_assert_eq(infl_self(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "direct") != NULL);
    infl_ctx_free(ctx);
}

// The same rankings whatever the shard size.
Test(attrib, shard_size_does_not_change_results) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 200, 6, 4, 3);
    const int w[] = {6, 8, 4};
    make_run(data, run, INFL_ACT_RELU, 2, w, 1e-3);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test[3:9]");
    o.top = 7;
    infl_rank_result *a, *b;
    o.shard_rows = 200;
    cr_assert_eq(infl_rank(ctx, &o, &a), INFL_OK, "%s", infl_ctx_error(ctx));
    o.shard_rows = 13;
    cr_assert_eq(infl_rank(ctx, &o, &b), INFL_OK);
    cr_assert_eq(a->k, 7);
    cr_assert_eq(a->query_begin, 3);
    cr_assert(memcmp(a->top_index, b->top_index, 6 * 7 * sizeof(int64_t)) == 0);
    cr_assert(memcmp(a->bottom_index, b->bottom_index, 6 * 7 * sizeof(int64_t)) == 0);
    for (int i = 0; i < 42; i++) cr_assert_float_eq(a->top_score[i], b->top_score[i], 1e-6 * fabsf(a->top_score[i]));
    infl_rank_result_free(a);
    infl_rank_result_free(b);
    infl_ctx_free(ctx);
}

// More queries than rows in a scoring sub-batch (1024): the query state is sized by M.
Test(attrib, more_queries_than_a_sub_batch) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 1100, 4, 3, 5);
    const int w[] = {4, 5, 3};
    make_run(data, run, INFL_ACT_TANH, 2, w, 1e-3);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.method = INFL_METHOD_GRADCOS;
    o.top = 3;
    o.query = tu_ref(1, data, "train[0:1100]");
    infl_rank_result *a, *b;
    cr_assert_eq(infl_rank(ctx, &o, &a), INFL_OK, "%s", infl_ctx_error(ctx));
    o.query = tu_ref(1, data, "train[1090:1100]");
    cr_assert_eq(infl_rank(ctx, &o, &b), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(a->M, 1100);
    for (int i = 0; i < 10 * 3; i++) {
        cr_assert_eq(a->top_index[1090 * 3 + i], b->top_index[i]);
        cr_assert_float_eq(a->top_score[1090 * 3 + i], b->top_score[i], 1e-5);
    }
    infl_rank_result_free(a);
    infl_rank_result_free(b);
    infl_ctx_free(ctx);
}

// Leave-one-out on an L2-regularised logistic regression over 7×7 Fashion-MNIST.
Test(attrib, leave_one_out_logistic_regression, .timeout = 300) {
    if (!tu_have_fmnist()) cr_skip_test("dataset-fashion-mnist is not installed");
    infl_ctx *ctx = tu_ctx();
    const char *data = tu_path("fm.h5"), *run = tu_path("lr.h5");
    tu_import_fm7(data, 400, 0, 0);
    infl_train_options to = infl_train_options_default();
    to.data = tu_ref(0, data, "train");
    to.nlayers = 1;
    to.widths[0] = 49;
    to.widths[1] = 10;
    to.weight_decay = 1e-3;
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int solver = 0; solver < 2; solver++) {
        infl_rank_options o = infl_rank_options_default();
        o.run = run;
        o.query = tu_ref(1, data, "test[0:2]");
        o.solver = solver;
        o.damping = 0;
        o.cg_tol = 1e-8;
        o.cg_iters = 1000;
        infl_loo_options lo = infl_loo_options_default();
        lo.remove_top = lo.remove_bottom = lo.remove_random = 8;
        infl_loo_result *r;
        cr_assert_eq(infl_loo(ctx, &o, &lo, &r), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert_eq(r->n, 48);
        cr_assert(r->pearson >= 0.95, "solver %d: Pearson %g", solver, r->pearson);
        cr_assert(r->spearman >= 0.8, "solver %d: Spearman %g", solver, r->spearman);
        infl_loo_result_free(r);
    }
    infl_ctx_free(ctx);
}

// TracIn self-influence finds flipped labels.
Test(attrib, self_influence_finds_flipped_labels, .timeout = 300) {
    if (!tu_have_fmnist()) cr_skip_test("dataset-fashion-mnist is not installed");
    infl_ctx *ctx = tu_ctx();
    const char *data = tu_path("fm.h5"), *run = tu_path("mlp.h5");
    tu_import_fm7(data, 3000, 0.1, 5);
    infl_train_options to = infl_train_options_default();
    to.data = tu_ref(0, data, "train");
    to.nlayers = 2;
    to.widths[0] = 49;
    to.widths[1] = 32;
    to.widths[2] = 10;
    to.epochs = 5;
    to.batch = 64;
    to.lr = 0.05;
    to.checkpoint_every = 40;
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    infl_self_result *r;
    cr_assert_eq(infl_self(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(r->has_flipped);
    cr_assert(r->flipped > 200 && r->flipped < 400, "%ld flipped", (long)r->flipped);
    cr_assert(r->recall[1] >= 0.2, "recall in the top 10%%: %g (random: 0.1)", r->recall[1]);
    cr_assert(r->recall[0] <= r->recall[1] && r->recall[1] <= r->recall[2]);
    // the order is by decreasing self-influence
    for (int64_t i = 1; i < r->N; i++) cr_assert(r->self[r->order[i - 1]] >= r->self[r->order[i]]);
    infl_self_result_free(r);
    infl_ctx_free(ctx);
}

Test(attrib, bad_inputs_are_refused) {
    const char *data = tu_path("d.h5"), *other = tu_path("o.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 50, 4, 2, 1);
    tu_make_blobs(other, 20, 5, 2, 2);
    const int w[] = {4, 5, 2};
    make_run(data, run, INFL_ACT_RELU, 2, w, 1e-3);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(1, other, "test");
    infl_rank_result *r = NULL;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "5 features") != NULL, "%s", infl_ctx_error(ctx));
    o.query = tu_ref(1, data, "test[0:3]");
    o.top = 51;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "--top") != NULL, "%s", infl_ctx_error(ctx));
    o.top = 5;
    o.checkpoints = "000005,nosuch";
    cr_assert_neq(infl_rank(ctx, &o, &r), INFL_OK);
    cr_assert(strstr(infl_ctx_error(ctx), "nosuch") != NULL, "%s", infl_ctx_error(ctx));
    // a list that names no checkpoint at all is refused, not ranked with zero scores
    o.checkpoints = ",";
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "--checkpoints") != NULL, "%s", infl_ctx_error(ctx));
    infl_self_result *sr = NULL;
    cr_assert_eq(infl_self(ctx, &o, &sr), INFL_E_ARG);
    o.checkpoints = NULL;

    // A diverged checkpoint: finite but enormous weights overflow the logits.
    infl_mlp_spec s = {.L = 2, .widths = {4, 5, 2}, .act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE, .wd = 0};
    size_t P = infl_mlp_nparams(&s);
    float *p = malloc(P * sizeof(float));
    for (size_t i = 0; i < P; i++) p[i] = 3e37f;
    infl_runw *rw;
    const char *bad = tu_path("diverged.h5");
    cr_assert_eq(store_run_create(ctx, bad, 1, TU_MS(s), tu_ref(2, data, "train"), "sgd", 1, &rw), INFL_OK);
    cr_assert_eq(store_run_add_checkpoint(ctx, rw, 10, 1.0, 0.1, NAN, p), INFL_OK);
    cr_assert_eq(store_run_commit(ctx, rw), INFL_OK);
    o.run = bad;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_NUMERIC);
    cr_assert(strstr(infl_ctx_error(ctx), "diverged") != NULL, "%s", infl_ctx_error(ctx));
    // a run trained by Newton has no learning rate for TracIn
    const int lw[] = {4, 2};
    infl_train_options to = infl_train_options_default();
    to.data = tu_ref(2, data, "train");
    to.nlayers = 1;
    memcpy(to.widths, lw, sizeof lw);
    to.weight_decay = 1e-2;
    cr_assert_eq(infl_train(ctx, &to, tu_path("cvx.h5"), NULL), INFL_OK);
    o.run = tu_path("cvx.h5");
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "lr") != NULL, "%s", infl_ctx_error(ctx));
    // leave-one-out needs a convex model
    o.run = run;
    infl_loo_options lo = infl_loo_options_default();
    infl_loo_result *lr;
    cr_assert_eq(infl_loo(ctx, &o, &lo, &lr), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "convex") != NULL, "%s", infl_ctx_error(ctx));
    free(p);
    infl_ctx_free(ctx);
}

// Self-influence by influence functions factorises the Hessian: a model beyond the
// direct solver's limit is refused before any pass over the data, cleanly (it once
// overflowed the per-example gradient buffers of models above 16,384 parameters).
Test(attrib, self_if_beyond_the_direct_limit_is_refused) {
    char data[1100], run[1100];
    snprintf(data, sizeof data, "%s", tu_path("wide.h5"));
    snprintf(run, sizeof run, "%s", tu_path("wide-run.h5"));
    tu_make_blobs(data, 64, 200, 10, 3);
    const int w[] = {200, 80, 10};  // 16,890 parameters
    make_run(data, run, INFL_ACT_RELU, 2, w, 1e-3);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.method = INFL_METHOD_IF;
    o.solver = 0;
    infl_self_result *r = NULL;
    cr_assert_eq(infl_self(ctx, &o, &r), INFL_E_UNSUPPORTED);
    cr_assert(strstr(infl_ctx_error(ctx), "16890") && strstr(infl_ctx_error(ctx), "limit"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}
