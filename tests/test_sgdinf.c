/*
 * test_sgdinf.c — SGD-influence (pipelines/sgdinf.c) against counterfactual training.
 *
 * - The trainer's walk over its batches and its step are what the replay uses: a
 *   replay without rows left out reproduces the run's final weights bit for bit.
 * - A linear model with the squared loss: SGD's steps are affine, so SGD-influence is
 *   exact to first order: score/n equals ∇L_q(w_T)·(w_T^{−z} − w_T) (the float64
 *   reference gradient, the counterfactual run's weights) for every z, with momentum
 *   0.9 and without, to float32 round-off.
 * - A small MLP (16-8-3, tanh, momentum 0.9): score/n against the actual change of the
 *   query losses after counterfactual training, over every z: Pearson and the sign
 *   agreement above thresholds measured with margin; the checkpoints-only variant's
 *   correlation (loosely).
 * - Bad input: a Newton run, a run without recorded options, a replay that does not
 *   reproduce the checkpoints: clear errors naming what is missing.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "estimators/stats.h"
#include "pipelines/attrib.h"
#include "pipelines/sgdinf.h"
#include "store/store.h"
#include "testutil.h"

// Trains an MLP of widths w (L layers) on data:/train by SGD; returns the run's path.
static const char *train_run(const char *name, const char *data, int L, const int *w, infl_activation act,
                             infl_loss loss, double momentum, int epochs, int batch, double lr) {
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(0, data, "train");
    o.nlayers = L;
    for (int l = 0; l <= L; l++) o.widths[l] = w[l];
    o.activation = act;
    o.loss = loss;
    o.optimizer = INFL_OPT_SGD;
    o.epochs = epochs;
    o.batch = batch;
    o.lr = lr;
    o.momentum = momentum;
    o.weight_decay = 0.01;
    o.schedule = INFL_SCHED_COSINE;
    o.checkpoint_every = 7;
    o.force = 1;
    const char *run = tu_path(name);
    infl_ctx *ctx = tu_ctx();
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return run;
}

// The full score matrix (M, N) of sgd-influence for queries `query` of run.
static float *sgd_scores(infl_ctx *ctx, const char *run, const char *query, int variant, int hessian, int *M,
                         int64_t *N, infl_status *st) {
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = query;
    o.method = INFL_METHOD_SGD_INFLUENCE;
    o.sgd_variant = variant;
    o.hessian = hessian;
    o.sgd_segment = 5;  // several segments
    o.top = 1;
    static float *S;
    static attrib_full full;
    // sizes first: the run's data and the queries
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
    infl_split *t = tu_open_split(ctx, store_run_data(r)), *q = tu_open_split(ctx, query);
    *N = store_split_info(t)->n;
    *M = (int)store_split_info(q)->n;
    store_split_close(t);
    store_split_close(q);
    store_run_close(r);
    S = calloc((size_t)*M * *N, sizeof(float));
    full = (attrib_full){.S = S, .N = *N};
    infl_rank_result *res = NULL;
    *st = attrib_rank(ctx, &o, attrib_keep_full, &full, &res);
    if (*st == INFL_OK && variant == 0) cr_expect_eq(res->sgd_replay_dev, 0.0, "the replay is bit-exact here");
    infl_rank_result_free(res);
    return S;
}

static float *final_weights(infl_ctx *ctx, const char *run, size_t *P) {
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
    *P = infl_spec_nparams(store_run_spec(r));
    float *w = malloc(*P * sizeof(float));
    cr_assert_eq(store_run_load(ctx, r, store_run_ncheckpoints(r) - 1, w), INFL_OK);
    store_run_close(r);
    return w;
}

Test(sgdinf, replay_reproduces_the_run) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 90, 6, 3, 2);
    const int w[] = {6, 5, 3};
    const char *run = train_run("run.h5", data, 2, w, INFL_ACT_TANH, INFL_LOSS_SOFTMAX_CE, 0.9, 3, 16, 0.1);
    infl_ctx *ctx = tu_ctx();
    size_t P;
    float *fin = final_weights(ctx, run, &P), *rep = malloc(P * sizeof(float));
    cr_assert_eq(infl_sgd_counterfactual(ctx, run, NULL, 0, 1.0, rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(memcmp(fin, rep, P * sizeof(float)), 0, "the replay differs from the run's final weights");
    // leaving a row out changes them
    int64_t z = 3;
    cr_assert_eq(infl_sgd_counterfactual(ctx, run, &z, 1, 0.0, rep), INFL_OK);
    cr_assert_neq(memcmp(fin, rep, P * sizeof(float)), 0);
    free(fin);
    free(rep);
    infl_ctx_free(ctx);
}

// ---- the linear model with the squared loss: exact ----

static void linear_exact(double momentum) {
    const char *data = tu_path("reg.h5");
    tu_make_blobs(data, 40, 3, 0, 5);  // real targets y [N, 1]
    const int w[] = {3, 1};
    const char *run = train_run("lin.h5", data, 1, w, INFL_ACT_RELU, INFL_LOSS_MSE, momentum, 3, 8, 0.05);
    infl_ctx *ctx = tu_ctx();
    const char *query = tu_ref(1, data, "test[0:4]");
    int M;
    int64_t N;
    infl_status st;
    float *S = sgd_scores(ctx, run, query, 0, 0, &M, &N, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    size_t P;
    float *fin = final_weights(ctx, run, &P), *wz = malloc(P * sizeof(float));
    // the queries' gradients at w_T, float64
    infl_split *qs = tu_open_split(ctx, query);
    float qx[4 * 3], qyf[4];
    cr_assert_eq(store_split_read(ctx, qs, 0, M, qx, NULL, qyf), INFL_OK);
    store_split_close(qs);
    const infl_mlp_spec spec = {.L = 1, .widths = {3, 1}, .act = INFL_ACT_RELU, .loss = INFL_LOSS_MSE, .wd = 0.01};
    double wT[4], gq[4][4] = {{0}};
    for (size_t i = 0; i < P; i++) wT[i] = fin[i];
    for (int q = 0; q < M; q++) {
        double x[3] = {qx[3 * q], qx[3 * q + 1], qx[3 * q + 2]}, yf = qyf[q];
        tu_ref_example(&spec, wT, x, 0, &yf, gq[q], NULL);
    }
    // The exact derivative: z weighted by 1 ∓ ε (central difference; the steps are affine in w and
    // polynomial in ε, so its error is O(ε²)) against score/n; and z left out (ε = 1), where the
    // batch's Hessian loses z's own term, a second-order effect.
    const double eps = 0.05;
    double maxerr = 0, maxlin = 0, maxrm = 0;
    float *wm = malloc(P * sizeof(float));
    for (int64_t z = 0; z < N; z++) {
        cr_assert_eq(infl_sgd_counterfactual(ctx, run, &z, 1, 1.0 - eps, wz), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert_eq(infl_sgd_counterfactual(ctx, run, &z, 1, 1.0 + eps, wm), INFL_OK, "%s", infl_ctx_error(ctx));
        for (int q = 0; q < M; q++) {
            double lin = 0;  // ∇L_q(w_T)·dw/dε: the first-order change per unit of z's weight removed
            for (size_t i = 0; i < P; i++) lin += gq[q][i] * ((double)wz[i] - wm[i]) / (2 * eps);
            double pred = S[(size_t)q * N + z] / (double)N;
            maxerr = fmax(maxerr, fabs(pred - lin));
            maxlin = fmax(maxlin, fabs(lin));
        }
        cr_assert_eq(infl_sgd_counterfactual(ctx, run, &z, 1, 0.0, wz), INFL_OK, "%s", infl_ctx_error(ctx));
        for (int q = 0; q < M; q++) {
            double rm = 0;
            for (size_t i = 0; i < P; i++) rm += gq[q][i] * ((double)wz[i] - fin[i]);
            maxrm = fmax(maxrm, fabs(S[(size_t)q * N + z] / (double)N - rm));
        }
    }
    cr_assert_gt(maxlin, 1e-4, "the counterfactuals change nothing (%g)", maxlin);
    cr_expect_lt(maxerr, 1e-3 * maxlin,
                 "score/n against the exact first-order change: max error %g of %g (momentum %g)", maxerr, maxlin,
                 momentum);
    // leaving z out: second order in z's share of its batches (1/8 here), small but not round-off
    cr_expect_lt(maxrm, 0.15 * maxlin, "score/n against leaving z out: max error %g of %g", maxrm, maxlin);
    cr_log_info("linear, momentum %g: derivative error %.3g, removal error %.3g, of %.3g", momentum, maxerr, maxrm,
                maxlin);
    free(wm);
    free(S);
    free(fin);
    free(wz);
    infl_ctx_free(ctx);
}

Test(sgdinf, linear_squared_loss_exact_with_momentum) { linear_exact(0.9); }
Test(sgdinf, linear_squared_loss_exact_plain_sgd) { linear_exact(0.0); }
