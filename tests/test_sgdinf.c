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

#include "backend.h"
#include "estimators/stats.h"
#include "models/hvp.h"
#include "models/mlp.h"
#include "pipelines/attrib.h"
#include "pipelines/sgdinf.h"
#include "store/store.h"
#include "testutil.h"

// Trains an MLP of widths w (L layers) on data:/train by SGD; returns the run's path.
static const char *train_run(const char *name, const char *data, int L, const int *w, infl_activation act,
                             infl_loss loss, double momentum, int epochs, int batch, double lr, int every) {
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
    o.checkpoint_every = every;
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
    const char *run = train_run("run.h5", data, 2, w, INFL_ACT_TANH, INFL_LOSS_SOFTMAX_CE, 0.9, 3, 16, 0.1, 7);
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

    // shards of 40 rows (the last short) on a seeded subset (lds's models): the walk seeks
    // into every segment (sgd_scores: 5 steps each) and still meets every checkpoint exactly
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(0, data, "train");
    o.nlayers = 2;
    memcpy(o.widths, w, sizeof w);
    o.epochs = 3;
    o.batch = 16;
    o.shard_rows = 40;
    o.subset_fraction = 0.7;
    o.subset_seed = 3;
    o.subset_draw = 1;
    o.checkpoint_every = 3;
    o.force = 1;
    const char *sub = tu_path("sub.h5");
    cr_assert_eq(infl_train(ctx, &o, sub, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    fin = final_weights(ctx, sub, &P);
    rep = malloc(P * sizeof(float));
    cr_assert_eq(infl_sgd_counterfactual(ctx, sub, NULL, 0, 1.0, rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(memcmp(fin, rep, P * sizeof(float)), 0, "the replay of a subset in shards differs");
    int M;
    int64_t N;
    infl_status st;
    float *S = sgd_scores(ctx, sub, tu_ref(1, data, "test[0:2]"), 0, 0, &M, &N, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    // rows outside the subset were in no batch: score 0
    int zeros = 0;
    for (int64_t i = 0; i < N; i++) zeros += S[i] == 0 && S[N + i] == 0;
    cr_assert(zeros > 10 && zeros < 45, "%d rows with no score of 90 (a 70%% subset)", zeros);
    free(S);
    free(fin);
    free(rep);
    infl_ctx_free(ctx);
}

// ---- the linear model with the squared loss: exact ----

static void linear_exact(double momentum) {
    const char *data = tu_path("reg.h5");
    tu_make_blobs(data, 40, 3, 0, 5);  // real targets y [N, 1]
    const int w[] = {3, 1};
    const char *run = train_run("lin.h5", data, 1, w, INFL_ACT_RELU, INFL_LOSS_MSE, momentum, 3, 8, 0.05, 7);
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

// ---- a small MLP against counterfactual training ----

// act (N, M): each query's change of loss when training row z is weighted by `weight`
// (0: left out), or with eps > 0 the central difference in z's weight around the run,
// −dL_q/dw_z (per unit of weight removed); for rows z < nz.
static void changes(infl_ctx *ctx, const char *run, const char *query, int M, int64_t nz, double eps, double *act) {
    size_t P;
    float *fin = final_weights(ctx, run, &P), *wz = malloc(P * sizeof(float));
    double *base = malloc((size_t)M * sizeof(double)), *loss = malloc((size_t)M * sizeof(double));
    cr_assert_eq(infl_sgd_query_losses(ctx, run, fin, query, base), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int64_t z = 0; z < nz; z++) {
        cr_assert_eq(infl_sgd_counterfactual(ctx, run, &z, 1, eps > 0 ? 1 - eps : 0.0, wz), INFL_OK, "%s",
                     infl_ctx_error(ctx));
        cr_assert_eq(infl_sgd_query_losses(ctx, run, wz, query, loss), INFL_OK);
        for (int q = 0; q < M; q++) act[(size_t)z * M + q] = loss[q] - base[q];
        if (eps > 0) {
            cr_assert_eq(infl_sgd_counterfactual(ctx, run, &z, 1, 1 + eps, wz), INFL_OK);
            cr_assert_eq(infl_sgd_query_losses(ctx, run, wz, query, loss), INFL_OK);
            for (int q = 0; q < M; q++) act[(size_t)z * M + q] = (act[(size_t)z * M + q] + base[q] - loss[q]) / (2 * eps);
        }
    }
    free(fin);
    free(wz);
    free(base);
    free(loss);
}

// Pearson over the (z, query) pairs z < nz of score/n against act, and the share of
// pairs with the same sign.
static void agreement(const float *S, int M, int64_t N, int64_t nz, const double *act, double *pearson, double *sign) {
    double *pred = malloc((size_t)nz * M * sizeof(double));
    int agree = 0;
    for (int64_t z = 0; z < nz; z++)
        for (int q = 0; q < M; q++) {
            size_t i = (size_t)z * M + q;
            pred[i] = S[(size_t)q * N + z] / (double)N;
            agree += (pred[i] > 0) == (act[i] > 0);
        }
    *pearson = stats_pearson(pred, act, (int64_t)nz * M);
    *sign = (double)agree / ((double)nz * M);
    free(pred);
}

Test(sgdinf, mlp_against_counterfactual_training) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 160, 16, 3, 7);
    const int w[] = {16, 8, 3};
    // 160 steps of SGD with momentum 0.9, checkpoints every 40
    const char *run = train_run("mlp.h5", data, 2, w, INFL_ACT_TANH, INFL_LOSS_SOFTMAX_CE, 0.9, 16, 16, 0.05, 40);
    infl_ctx *ctx = tu_ctx();
    const char *query = tu_ref(1, data, "test[0:6]");
    int M;
    int64_t N;
    infl_status st;
    float *S[3];
    for (int v = 0; v < 3; v++) {  // replay (exact Hessian), replay (Gauss-Newton), checkpoints only
        S[v] = sgd_scores(ctx, run, query, v == 2, v == 1, &M, &N, &st);
        cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    }
    // the derivative in z's weight (central difference, eps 1e-3): what SGD-influence computes
    const int64_t nd = 16;
    double *der = malloc((size_t)nd * M * sizeof(double)), *act = malloc((size_t)N * M * sizeof(double));
    changes(ctx, run, query, M, nd, 1e-3, der);
    double rd, sd;
    agreement(S[0], M, N, nd, der, &rd, &sd);
    cr_expect_gt(rd, 0.998, "against the derivative in z's weight: pearson %.5f", rd);
    // every z left out
    changes(ctx, run, query, M, N, 0, act);
    double r[3], sg[3];
    for (int v = 0; v < 3; v++) agreement(S[v], M, N, N, act, &r[v], &sg[v]);
    cr_log_info("mlp 16-8-3, %lld z x %d queries: derivative pearson %.5f; removal: replay pearson %.3f sign %.3f, "
                "ggn %.3f %.3f, checkpoints %.3f %.3f",
                (long long)N, M, rd, r[0], sg[0], r[1], sg[1], r[2], sg[2]);
    // measured: derivative 0.99989; removal 0.939 and 0.974 (replay), 0.904 (ggn), 0.748 (checkpoints)
    cr_expect_gt(r[0], 0.85, "replay: pearson %.3f", r[0]);
    cr_expect_gt(sg[0], 0.9, "replay: sign agreement %.3f", sg[0]);
    cr_expect_gt(r[1], 0.75, "replay, Gauss-Newton: pearson %.3f", r[1]);
    cr_expect_gt(r[2], 0.5, "checkpoints only: pearson %.3f", r[2]);
    for (int v = 0; v < 3; v++) free(S[v]);
    free(der);
    free(act);
    infl_ctx_free(ctx);
}

// ---- bad input ----

static void delete_root_attr(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    cr_assert_geq(H5Adelete(f, name), 0);
    H5Fclose(f);
}

Test(sgdinf, runs_that_cannot_be_replayed) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 60, 5, 3, 3);
    infl_ctx *ctx = tu_ctx();
    const char *query = tu_ref(1, data, "test[0:2]");
    int M;
    int64_t N;
    infl_status st;
    // a convex model trained by Newton: no SGD trajectory
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(0, data, "train");
    o.nlayers = 1;
    o.widths[0] = 5;
    o.widths[1] = 3;
    o.force = 1;
    const char *newton = tu_path("newton.h5");
    cr_assert_eq(infl_train(ctx, &o, newton, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    free(sgd_scores(ctx, newton, query, 0, 0, &M, &N, &st));
    cr_assert_eq(st, INFL_E_UNSUPPORTED);
    cr_assert(strstr(infl_ctx_error(ctx), "newton") && strstr(infl_ctx_error(ctx), "--optimizer sgd"), "%s",
              infl_ctx_error(ctx));

    // a run without its recorded training options (an older infl)
    const int w[] = {5, 4, 3};
    const char *run = train_run("run.h5", data, 2, w, INFL_ACT_TANH, INFL_LOSS_SOFTMAX_CE, 0.9, 2, 10, 0.1, 5);
    const char *old = tu_path("old.h5");
    size_t n;
    char *bytes = tu_read_file(run, &n);
    tu_write_file(old, bytes, n);
    free(bytes);
    delete_root_attr(old, "train_batch");
    free(sgd_scores(ctx, old, query, 0, 0, &M, &N, &st));
    cr_assert_eq(st, INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "train_batch") && strstr(infl_ctx_error(ctx), "train it again"), "%s",
              infl_ctx_error(ctx));

    // the data changed since training: the replay does not reproduce the checkpoints; the
    // checkpoints variant needs no replay
    tu_make_blobs(data, 60, 5, 3, 4);
    free(sgd_scores(ctx, run, query, 0, 0, &M, &N, &st));
    cr_assert_eq(st, INFL_E_NUMERIC);
    cr_assert(strstr(infl_ctx_error(ctx), "does not reproduce checkpoint 000005") &&
                  strstr(infl_ctx_error(ctx), "it was trained on cpu") &&
                  strstr(infl_ctx_error(ctx), "--sgd-variant checkpoints"),
              "%s", infl_ctx_error(ctx));
    free(sgd_scores(ctx, run, query, 1, 0, &M, &N, &st));
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// ---- the CLI, and the scores as other commands read them ----

Test(sgdinf, cli_rank_compare_lds) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 60, 5, 3, 3);
    const int w[] = {5, 4, 3};
    const char *run = train_run("run.h5", data, 2, w, INFL_ACT_TANH, INFL_LOSS_SOFTMAX_CE, 0.9, 3, 10, 0.05, 6);
    const char *q = tu_ref(1, data, "test[0:3]");
    char a[1100], b[1100], st[1100];
    snprintf(a, sizeof a, "%s", tu_path("sgd.h5"));
    snprintf(b, sizeof b, "%s", tu_path("tracin.h5"));
    snprintf(st, sizeof st, "%s", tu_path("lds.h5"));
    const char *rank[] = {"infl", "rank", "--run", run, "--query", q, "--method", "sgd-influence", "--top", "2",
                          "-o", a, "--save-scores", "--backend", "cpu", NULL};
    cr_assert_eq(tu_cli(rank), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "sgd-influence: 18 steps replayed") && strstr(tu_out(), "relative 0"), "%s", tu_out());
    const char *tracin[] = {"infl", "rank", "--run", run, "--query", q, "--top", "2", "-o", b, "--save-scores",
                            "--backend", "cpu", NULL};
    cr_assert_eq(tu_cli(tracin), 0, "%s", tu_err());
    const char *cmp[] = {"infl", "compare", a, b, NULL};
    cr_assert_eq(tu_cli(cmp), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "sgd-influence"), "%s", tu_out());
    const char *lds[] = {"infl", "lds", "--run", run, "--query", q, "--state", st, "--models", "3", a, b, NULL};
    cr_assert_eq(tu_cli(lds), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "sgd-influence"), "%s", tu_out());
    const char *ckpt[] = {"infl", "rank", "--run", run, "--query", q, "--method", "sgd-influence", "--sgd-variant",
                          "checkpoints", "--backend", "cpu", NULL};
    cr_assert_eq(tu_cli(ckpt), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "nearest checkpoint"), "%s", tu_out());
    // usage errors
    const char *bad1[] = {"infl", "rank", "--run", run, "--query", q, "--method", "sgd-influence", "--sgd-variant",
                          "sometimes", NULL};
    cr_assert_eq(tu_cli(bad1), 2);
    const char *bad2[] = {"infl", "rank", "--run", run, "--query", q, "--sgd-segment", "4", NULL};
    cr_assert_eq(tu_cli(bad2), 2);
    cr_assert(strstr(tu_err(), "go with --method sgd-influence"), "%s", tu_err());
    const char *self[] = {"infl", "self", "--run", run, "--method", "sgd-influence", "--backend", "cpu", NULL};
    cr_assert_eq(tu_cli(self), 1);
    cr_assert(strstr(tu_err(), "self-influence by sgd-influence"), "%s", tu_err());
}

// ---- minibatch HVPs ----

Test(sgdinf, batch_hvp_equals_the_split_operator_on_the_same_rows) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 40, 6, 3, 9);
    infl_ctx *ctx = tu_ctx();
    const infl_mlp_spec spec = {.L = 2, .widths = {6, 5, 3}, .act = INFL_ACT_TANH, .loss = INFL_LOSS_SOFTMAX_CE,
                                .wd = 0.01};
    size_t P = infl_mlp_nparams(&spec);
    float *hp = malloc(P * sizeof(float)), *hv = malloc(2 * P * sizeof(float));
    float *a = malloc(2 * P * sizeof(float)), *b = malloc(2 * P * sizeof(float));
    infl_mlp_init(&spec, 3, 0, hp);
    uint64_t s = 5;
    for (size_t i = 0; i < 2 * P; i++) hv[i] = (float)(2 * tu_uniform(&s) - 1);
    float *W = tu_upload(ctx, hp, P * sizeof(float)), *V = tu_upload(ctx, hv, 2 * P * sizeof(float)), *HV;
    cr_assert_eq(infl_be_alloc_f(ctx, &HV, 2 * P, "hv"), INFL_OK);
    infl_split *sp = tu_open_split(ctx, tu_ref(0, data, "train"));
    float x[12 * 6];
    int32_t y[12];
    cr_assert_eq(store_split_read(ctx, sp, 7, 12, x, y, NULL), INFL_OK);
    float *dX = tu_upload(ctx, x, sizeof x);
    int32_t *dy = tu_upload(ctx, y, sizeof y);
    for (int kind = 0; kind < 2; kind++) {
        infl_hvp *rows = NULL, *batch = NULL;
        cr_assert_eq(infl_hvp_create(ctx, &spec, W, sp, 0, (infl_hessian)kind, 0, 1024, &rows), INFL_OK);
        cr_assert_eq(infl_hvp_apply_rows(ctx, rows, 7, 12, V, HV, 2), INFL_OK);
        cr_assert_eq(ctx->be->download(ctx, a, HV, 2 * P * sizeof(float)), INFL_OK);
        cr_assert_eq(infl_hvp_create(ctx, &spec, NULL, NULL, 16, (infl_hessian)kind, 0, 0, &batch), INFL_OK);
        cr_assert_eq(infl_hvp_apply_batch(ctx, batch, W, dX, dy, NULL, 12, V, HV, 2), INFL_OK, "%s",
                     infl_ctx_error(ctx));
        cr_assert_eq(ctx->be->download(ctx, b, HV, 2 * P * sizeof(float)), INFL_OK);
        for (size_t i = 0; i < 2 * P; i++)
            cr_assert_float_eq(a[i], b[i], 1e-5 * (1 + fabsf(a[i])), "kind %d, entry %zu: %g vs %g", kind, i, a[i], b[i]);
        // the split's operator takes batches too; a batch operator has no rows of its own
        cr_assert_eq(infl_hvp_apply_batch(ctx, rows, W, dX, dy, NULL, 12, V, HV, 2), INFL_OK);
        cr_assert_eq(infl_hvp_apply(ctx, batch, V, HV, 2), INFL_E_ARG);
        cr_assert_eq(infl_hvp_apply_batch(ctx, batch, W, dX, dy, NULL, 17, V, HV, 2), INFL_E_ARG);
        infl_hvp_free(ctx, rows);
        infl_hvp_free(ctx, batch);
    }
    store_split_close(sp);
    infl_be_free(ctx, W);
    infl_be_free(ctx, V);
    infl_be_free(ctx, HV);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    free(hp);
    free(hv);
    free(a);
    free(b);
    infl_ctx_free(ctx);
}
