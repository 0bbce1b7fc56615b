/*
 * test_train.c — the trainer: SGD lowers the loss and is deterministic for a seed,
 * checkpoints carry step/epoch/lr, shards of any size work, divergence and
 * interruption leave no output, and the convex Newton optimiser reaches its
 * gradient-norm target (checked by an independent float64 gradient here), also with
 * rows left out.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/train.h"
#include "store/store.h"
#include "testutil.h"

static infl_train_options opts_for(const char *data, int L, const int *w) {
    infl_train_options o = infl_train_options_default();
    o.data = data;
    o.nlayers = L;
    for (int l = 0; l <= L; l++) o.widths[l] = w[l];
    o.epochs = 4;
    o.batch = 32;
    o.lr = 0.05;
    o.checkpoint_every = 10;
    return o;
}

static char g_ref[2048];
static const char *ref(const char *file, const char *split) {
    snprintf(g_ref, sizeof g_ref, "%s:/%s", file, split);
    return g_ref;
}

static float *load_ckpt(const char *run, int i, size_t *np, int *count) {
    infl_ctx *ctx = tu_ctx();
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    *np = infl_spec_nparams(store_run_spec(r));
    *count = store_run_ncheckpoints(r);
    if (i < 0) i = *count - 1;
    float *p = malloc(*np * sizeof(float));
    cr_assert_eq(store_run_load(ctx, r, i, p), INFL_OK);
    store_run_close(r);
    infl_ctx_free(ctx);
    return p;
}

static int no_tmp_files(void) {
    DIR *d = opendir(tu_tmpdir());
    struct dirent *e;
    int ok = 1;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) ok = 0;
    closedir(d);
    return ok;
}

Test(train, sgd_lowers_loss_and_writes_checkpoints) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 600, 10, 4, 1);
    const int w[] = {10, 16, 4};
    infl_train_options o = opts_for(ref(data, "train"), 2, w);
    o.schedule = INFL_SCHED_COSINE;
    infl_ctx *ctx = tu_ctx();
    infl_train_report rep;
    const char *run = tu_path("run.h5");
    cr_assert_eq(infl_train(ctx, &o, run, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    // 600 rows in one shard, batches of 32: 19 steps an epoch, 76 in all
    cr_assert_eq(rep.steps, 76);
    cr_assert_eq(rep.checkpoints, 8);  // steps 10..70 and the final 76

    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
    cr_assert_eq(store_run_ncheckpoints(r), 8);
    const infl_ckpt_info *c0 = store_run_checkpoint(r, 0), *cl = store_run_checkpoint(r, 7);
    cr_assert_eq(c0->step, 10);
    cr_assert_str_eq(c0->name, "000010");
    cr_assert_eq(cl->step, 76);
    cr_assert_float_eq(cl->epoch, 4.0, 1e-9);
    // lr is the mean of the cosine schedule over the interval's steps
    double m0 = 0, ml = 0;
    for (int s = 0; s < 10; s++) m0 += 0.05 * 0.5 * (1 + cos(M_PI * s / 76.0)) / 10;
    for (int s = 70; s < 76; s++) ml += 0.05 * 0.5 * (1 + cos(M_PI * s / 76.0)) / 6;
    cr_assert_float_eq(c0->lr, m0, 1e-9);
    cr_assert_float_eq(cl->lr, ml, 1e-9);
    int fi;
    cr_assert_eq(store_run_find(ctx, r, "final", &fi), INFL_OK);
    cr_assert_eq(fi, 7);
    store_run_close(r);

    infl_eval_result first, last;
    cr_assert_eq(infl_eval(ctx, run, "000010", ref(data, "test"), &first), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_eval(ctx, run, NULL, ref(data, "test"), &last), INFL_OK);
    cr_assert_eq(last.n, 300);
    cr_assert(last.loss < first.loss, "loss did not decrease: %g -> %g", first.loss, last.loss);
    cr_assert(last.accuracy > 0.8, "test accuracy %g", last.accuracy);
    infl_ctx_free(ctx);
}

Test(train, same_seed_same_checkpoints) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 300, 6, 3, 2);
    const int w[] = {6, 8, 3};
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = opts_for(ref(data, "train"), 2, w);
    o.shard_rows = 70;  // several shards, the last one short
    cr_assert_eq(infl_train(ctx, &o, tu_path("a.h5"), NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_train(ctx, &o, tu_path("b.h5"), NULL), INFL_OK);
    o.seed = 2;
    cr_assert_eq(infl_train(ctx, &o, tu_path("c.h5"), NULL), INFL_OK);
    size_t np;
    int na, nb, nc;
    for (int i = 0; i < 3; i++) {
        float *a = load_ckpt(tu_path("a.h5"), i, &np, &na);
        float *b = load_ckpt(tu_path("b.h5"), i, &np, &nb);
        cr_assert_eq(na, nb);
        cr_assert(memcmp(a, b, np * sizeof(float)) == 0, "checkpoint %d differs between identical runs", i);
        free(a);
        free(b);
    }
    float *a = load_ckpt(tu_path("a.h5"), -1, &np, &na);
    float *c = load_ckpt(tu_path("c.h5"), -1, &np, &nc);
    cr_assert(memcmp(a, c, np * sizeof(float)) != 0);
    free(a);
    free(c);
    infl_ctx_free(ctx);
}

// The epoch attribute is the share of rows seen, also when the short last shard is
// visited before others: strictly increasing, and a whole number at each epoch's end.
Test(train, checkpoint_epoch_counts_rows_seen) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 10, 4, 2, 3);
    const int w[] = {4, 5, 2};
    infl_ctx *ctx = tu_ctx();
    for (uint64_t seed = 1; seed <= 6; seed++) {
        infl_train_options o = opts_for(ref(data, "train"), 2, w);
        o.shard_rows = 4;  // shards of 4, 4 and 2 rows, visited in a random order
        o.batch = 4;       // one step per shard: 3 steps an epoch
        o.epochs = 3;
        o.checkpoint_every = 1;
        o.seed = seed;
        const char *run = tu_path("epochs.h5");
        o.force = 1;
        cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
        infl_run *r;
        cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
        cr_assert_eq(store_run_ncheckpoints(r), 9);
        double prev = 0;
        for (int i = 0; i < 9; i++) {
            double e = store_run_checkpoint(r, i)->epoch;
            cr_assert(e > prev, "seed %d: checkpoint %d has epoch %g after %g", (int)seed, i, e, prev);
            if (i % 3 == 2) cr_assert_float_eq(e, i / 3 + 1, 1e-9, "seed %d: epoch %g at an epoch's end", (int)seed, e);
            prev = e;
        }
        store_run_close(r);
    }
    infl_ctx_free(ctx);
}

Test(train, sigmoid_and_mse_losses_train) {
    const char *d2 = tu_path("bin.h5"), *dr = tu_path("reg.h5");
    tu_make_blobs(d2, 400, 5, 2, 3);
    tu_make_blobs(dr, 400, 5, 0, 4);
    infl_ctx *ctx = tu_ctx();
    const int wb[] = {5, 8, 1};
    infl_train_options o = opts_for(ref(d2, "train"), 2, wb);
    o.loss = INFL_LOSS_SIGMOID_CE;
    o.activation = INFL_ACT_TANH;
    cr_assert_eq(infl_train(ctx, &o, tu_path("rb.h5"), NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_eval_result e0, e1;
    cr_assert_eq(infl_eval(ctx, tu_path("rb.h5"), "000010", ref(d2, "test"), &e0), INFL_OK);
    cr_assert_eq(infl_eval(ctx, tu_path("rb.h5"), NULL, ref(d2, "test"), &e1), INFL_OK);
    cr_assert(e1.loss < e0.loss);
    cr_assert(e1.accuracy > 0.8, "accuracy %g", e1.accuracy);

    const int wr[] = {5, 8, 1};
    o = opts_for(ref(dr, "train"), 2, wr);
    o.loss = INFL_LOSS_MSE;
    o.activation = INFL_ACT_GELU;
    o.lr = 0.02;
    cr_assert_eq(infl_train(ctx, &o, tu_path("rr.h5"), NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_eval(ctx, tu_path("rr.h5"), "000010", ref(dr, "test"), &e0), INFL_OK);
    cr_assert_eq(infl_eval(ctx, tu_path("rr.h5"), NULL, ref(dr, "test"), &e1), INFL_OK);
    cr_assert(e1.loss < e0.loss, "%g -> %g", e0.loss, e1.loss);
    cr_assert(isnan(e1.accuracy));
    infl_ctx_free(ctx);
}

Test(train, divergence_and_interruption_leave_no_output) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 200, 6, 3, 5);
    const int w[] = {6, 8, 3};
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = opts_for(ref(data, "train"), 2, w);
    o.lr = 1e30;
    const char *out = tu_path("run.h5");
    infl_status st = infl_train(ctx, &o, out, NULL);
    cr_assert_eq(st, INFL_E_NUMERIC, "%s", infl_status_name(st));
    cr_assert(strstr(infl_ctx_error(ctx), "diverged") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert(!tu_exists(out));
    cr_assert(no_tmp_files());

    volatile int cancel = 1;
    infl_ctx_set_cancel(ctx, &cancel);
    o.lr = 0.05;
    cr_assert_eq(infl_train(ctx, &o, out, NULL), INFL_E_INTERRUPTED);
    cr_assert(!tu_exists(out));
    cr_assert(no_tmp_files());
    infl_ctx_free(ctx);
}

Test(train, bad_inputs_are_refused) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 100, 6, 4, 6);
    infl_ctx *ctx = tu_ctx();
    const int wide[] = {7, 4};
    infl_train_options o = opts_for(ref(data, "train"), 1, wide);
    cr_assert_eq(infl_train(ctx, &o, tu_path("r.h5"), NULL), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "6 features") != NULL, "%s", infl_ctx_error(ctx));
    const int few[] = {6, 5, 3};  // 4 classes, 3 outputs
    o = opts_for(ref(data, "train"), 2, few);
    cr_assert_eq(infl_train(ctx, &o, tu_path("r.h5"), NULL), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "4 classes") != NULL, "%s", infl_ctx_error(ctx));
    const int ok[] = {6, 5, 4};
    o = opts_for(ref(data, "train"), 2, ok);
    o.loss = INFL_LOSS_MSE;
    cr_assert_eq(infl_train(ctx, &o, tu_path("r.h5"), NULL), INFL_E_SHAPE);
    o = opts_for(ref(data, "train"), 2, ok);
    o.epochs = 0;
    cr_assert_eq(infl_train(ctx, &o, tu_path("r.h5"), NULL), INFL_E_ARG);
    o = opts_for(ref(data, "nosuchsplit"), 2, ok);
    cr_assert_neq(infl_train(ctx, &o, tu_path("r.h5"), NULL), INFL_OK);
    cr_assert(strstr(infl_ctx_error(ctx), "nosuchsplit") != NULL, "%s", infl_ctx_error(ctx));
    // an existing output is kept without force
    tu_write_file(tu_path("keep.h5"), "mine", 4);
    o = opts_for(ref(data, "train"), 2, ok);
    cr_assert_eq(infl_train(ctx, &o, tu_path("keep.h5"), NULL), INFL_E_EXISTS);
    char *s = tu_read_file(tu_path("keep.h5"), NULL);
    cr_assert_str_eq(s, "mine");
    free(s);
    infl_ctx_free(ctx);
}

// ---- the convex optimiser ----

// Independent float64 gradient of R for softmax regression on the split's rows
// (skipping `skip` rows), in plain loops.
static double softmax_reg_gradnorm(infl_ctx *ctx, const char *data, int D, int K, double wd, const double *w,
                                   const int64_t *skip, int nskip) {
    infl_split *sp = tu_open_split(ctx, data);
    int64_t n = store_split_info(sp)->n;
    float *x = malloc(sizeof(float) * (size_t)n * D);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    cr_assert_eq(store_split_read(ctx, sp, 0, n, x, y, NULL), INFL_OK);
    size_t np = (size_t)K * (D + 1);
    // removed rows keep the others at weight 1/n (convex.c)
    double *g = calloc(np, sizeof(double)), z[16], neff = (double)n;
    for (int64_t i = 0; i < n; i++) {
        int skipped = 0;
        for (int s = 0; s < nskip; s++) skipped |= skip[s] == i;
        if (skipped) continue;
        double m = -1e300, sum = 0;
        for (int k = 0; k < K; k++) {
            z[k] = w[K * D + k];
            for (int j = 0; j < D; j++) z[k] += w[k * D + j] * x[i * D + j];
            m = fmax(m, z[k]);
        }
        for (int k = 0; k < K; k++) sum += exp(z[k] - m);
        for (int k = 0; k < K; k++) {
            double gk = exp(z[k] - m) / sum - (k == y[i]);
            for (int j = 0; j < D; j++) g[k * D + j] += gk * x[i * D + j] / neff;
            g[K * D + k] += gk / neff;
        }
    }
    double nn = 0;
    for (size_t i = 0; i < np; i++) nn += (g[i] + wd * w[i]) * (g[i] + wd * w[i]);
    free(g);
    free(x);
    free(y);
    store_split_close(sp);
    return sqrt(nn);
}

Test(train, newton_reaches_the_optimum) {
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 500, 8, 3, 7);
    infl_ctx *ctx = tu_ctx();
    const int w[] = {8, 3};
    infl_train_options o = opts_for(ref(data, "train"), 1, w);
    o.weight_decay = 1e-3;
    infl_train_report rep;
    cr_assert_eq(infl_train(ctx, &o, tu_path("cvx.h5"), &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(rep.grad_norm <= 1e-8, "grad norm %g", rep.grad_norm);
    cr_assert(rep.steps >= 3 && rep.steps < 50);

    // Directly, in double, with an independent gradient; sharded and with rows left out.
    infl_mlp_spec spec = {.L = 1, .widths = {8, 3}, .act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE, .wd = 1e-3};
    infl_split *sp = tu_open_split(ctx, ref(data, "train"));
    infl_convex_options co = {.tol = 1e-9, .max_iters = 50, .shard_rows = 77};
    double *wv = calloc(27, sizeof(double));
    infl_convex_report cr;
    int64_t skip[] = {3, 100, 499};
    cr_assert_eq(infl_convex_fit(ctx, sp, &spec, skip, 3, &co, wv, &cr), INFL_OK, "%s", infl_ctx_error(ctx));
    store_split_close(sp);
    cr_assert(cr.grad_norm <= 1e-9);
    double gn = softmax_reg_gradnorm(ctx, ref(data, "train"), 8, 3, 1e-3, wv, skip, 3);
    cr_assert(gn <= 1e-8, "independent gradient norm %g", gn);
    // the same optimum is not optimal once the rows are put back
    double gall = softmax_reg_gradnorm(ctx, ref(data, "train"), 8, 3, 1e-3, wv, NULL, 0);
    cr_assert(gall > 1e-6, "leaving rows out changed nothing (%g)", gall);
    free(wv);

    o.weight_decay = 0;
    cr_assert_eq(infl_train(ctx, &o, tu_path("cvx0.h5"), NULL), INFL_E_ARG);
    infl_ctx_free(ctx);
}
