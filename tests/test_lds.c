/*
 * test_lds.c — training on subsets and the linear datamodeling score:
 *  - a convex model trained on a seeded subset has the optimum of the same model
 *    trained on that subset written out as its own dataset; SGD on a subset sees
 *    only the subset's rows (steps per epoch);
 *  - on a logistic regression over 7×7 Fashion-MNIST, influence functions with the
 *    exact Hessian reach a high LDS, above grad-dot;
 *  - an interrupted run resumes: models missing from the state file are trained
 *    again, to the same outputs; a finished run trains nothing;
 *  - the sign convention, with scores built from the retrained outputs;
 *  - infl compare: identical, negated and mismatched scores files;
 *  - bad input: a scores file without /scores or for other queries, a state file
 *    of other settings, a run without training options;
 *  - a state file whose /done is not 1-D is refused, not read past the caller's array
 *    (found by fuzzing, tests/fuzz);
 *  - GPT runs: a GPT trained on a seeded subset of documents is, bit for bit, the GPT
 *    trained on that subset written out as its own documents (one shard), and sees
 *    only the subset's documents in several shards; lds on a GPT records each
 *    retrained model's loss of each query document, deterministically, and resumes;
 *    it judges the scores infl rank makes for a GPT (grad-dot, TracIn).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "models/gpt.h"
#include "models/train.h"
#include "store/store.h"
#include "testutil.h"

// The final checkpoint's parameters of a run (P of them), as float32 or float64.
static float *load_final_f(const char *run, size_t *P) {
    infl_ctx *ctx = tu_ctx();
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    *P = infl_spec_nparams(store_run_spec(r));
    float *w = malloc(sizeof(float) * *P);
    int fin;
    cr_assert_eq(store_run_find(ctx, r, NULL, &fin), INFL_OK);
    cr_assert_eq(store_run_load(ctx, r, fin, w), INFL_OK);
    store_run_close(r);
    infl_ctx_free(ctx);
    return w;
}

static double *load_final(const char *run, size_t *P) {
    float *w = load_final_f(run, P);
    double *d = malloc(sizeof(double) * *P);
    for (size_t i = 0; i < *P; i++) d[i] = w[i];
    free(w);
    return d;
}

Test(lds, convex_subset_equals_training_on_the_subset_dataset) {
    const char *data = tu_path("d.h5"), *sub = tu_path("sub.h5"), *r1 = tu_path("r1.h5"), *r2 = tu_path("r2.h5");
    tu_make_blobs(data, 80, 4, 3, 1);
    infl_ctx *ctx = tu_ctx();
    // the subset written out
    infl_split *sp = tu_open_split(ctx, tu_ref(0, data, "train"));
    float x[80 * 4], xs[80 * 4];
    int32_t y[80], ys[80];
    cr_assert_eq(store_split_read(ctx, sp, 0, 80, x, y, NULL), INFL_OK);
    store_split_close(sp);
    int m = 0;
    for (int i = 0; i < 80; i++)
        if (infl_rng_uniform(17, INFL_RNG_SUBSET, (uint64_t)i, 3) < 0.6) {
            memcpy(xs + m * 4, x + i * 4, sizeof(float) * 4);
            ys[m++] = y[i];
        }
    cr_assert(m > 30 && m < 70, "%d rows kept", m);
    infl_dsw *w;
    cr_assert_eq(store_dataset_create(ctx, sub, 1, &w), INFL_OK);
    cr_assert_eq(store_dataset_add_split(ctx, w, "train", m, 4, INFL_Y_CLASS, 1, NULL), INFL_OK);
    cr_assert_eq(store_dataset_write_rows(ctx, w, "train", 0, m, xs, ys, NULL), INFL_OK);
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK);
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(1, data, "train");
    o.nlayers = 1;
    o.widths[0] = 4;
    o.widths[1] = 3;
    o.weight_decay = 1e-2;
    o.tol = 1e-10;
    o.subset_fraction = 0.6;
    o.subset_seed = 17;
    o.subset_draw = 3;
    o.shard_rows = 13;
    o.batch = 4;
    cr_assert_eq(infl_train(ctx, &o, r1, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    o.data = tu_ref(2, sub, "train");
    o.subset_fraction = 0;
    cr_assert_eq(infl_train(ctx, &o, r2, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    size_t P;
    double *a = load_final(r1, &P), *b = load_final(r2, &P);
    for (size_t i = 0; i < P; i++) cr_assert(fabs(a[i] - b[i]) < 1e-5, "parameter %zu: %g vs %g", i, a[i], b[i]);
    free(a);
    free(b);
    // SGD: the steps count the subset's rows only (batch 4: ceil(kept / 4) per shard of 80)
    o.data = tu_ref(1, data, "train");
    o.subset_fraction = 0.6;
    o.shard_rows = 0;
    o.nlayers = 2;
    o.widths[1] = 5;
    o.widths[2] = 3;
    o.optimizer = INFL_OPT_SGD;
    o.epochs = 2;
    o.batch = 4;
    o.force = 1;
    infl_train_report rep;
    cr_assert_eq(infl_train(ctx, &o, r1, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.steps, 2 * ((m + 3) / 4), "%ld steps for %d rows", (long)rep.steps, m);
    infl_ctx_free(ctx);
}

static void write_scores(const char *path, const char *query, int M, int64_t N, const float *S) {
    infl_ctx *ctx = tu_ctx();
    infl_scw *w;
    cr_assert_eq(store_scores_create(ctx, path, 1, M, 1, N, 1, &w), INFL_OK);
    cr_assert_eq(store_scores_write_block(ctx, w, S, (int)N, (int)N, 0), INFL_OK);
    int64_t idx[64] = {0};
    float sc[64] = {0};
    cr_assert_eq(store_scores_write_topk(ctx, w, idx, sc, idx, sc), INFL_OK);
    store_scores_attr_str(ctx, w, "method", "oracle");
    store_scores_attr_str(ctx, w, "query", query);
    cr_assert_eq(store_scores_commit(ctx, w), INFL_OK);
    infl_ctx_free(ctx);
}

static infl_lds_result *run_lds(infl_lds_options *o) {
    infl_ctx *ctx = tu_ctx();
    infl_lds_result *r = NULL;
    cr_assert_eq(infl_lds(ctx, o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return r;
}

// A run to repeat: a small MLP on blobs, trained by SGD.
static void small_run(const char *data, const char *run) {
    tu_make_blobs(data, 60, 4, 3, 2);
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(0, data, "train");
    o.nlayers = 2;
    o.widths[0] = 4;
    o.widths[1] = 6;
    o.widths[2] = 3;
    o.epochs = 2;
    o.batch = 8;
    o.lr = 0.05;
    o.checkpoint_every = 0;
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(lds, resumes_and_scores_an_oracle) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *state = tu_path("lds.h5");
    small_run(data, run);
    infl_lds_options o = infl_lds_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test[0:4]");
    o.state = state;
    o.models = 6;
    o.seed = 5;
    infl_lds_result *a = run_lds(&o);
    cr_assert_eq(a->trained_now, 6);
    // mark models 1 and 4 undone, as a killed run would have left them
    hid_t f = H5Fopen(state, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "done", H5P_DEFAULT);
    int32_t done[6] = {1, 0, 1, 1, 0, 1};
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, done) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    infl_lds_result *b = run_lds(&o);
    cr_assert_eq(b->trained_now, 2);
    for (int i = 0; i < 6 * 4; i++) cr_assert_eq(a->outputs[i], b->outputs[i], "output %d differs after resuming", i);
    infl_lds_result *c = run_lds(&o);
    cr_assert_eq(c->trained_now, 0);
    // more models extend the state: only the new ones are trained, the old outputs kept
    o.models = 8;
    infl_lds_result *g = run_lds(&o);
    cr_assert_eq(g->trained_now, 2);
    for (int i = 0; i < 6 * 4; i++) cr_assert_eq(g->outputs[i], a->outputs[i]);
    infl_lds_result_free(g);
    o.models = 6;  // fewer than the state holds: refused
    infl_ctx *cx = tu_ctx();
    infl_lds_result *h = NULL;
    cr_assert_eq(infl_lds(cx, &o, &h), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(cx), "--models (smaller)"), "%s", infl_ctx_error(cx));
    infl_ctx_free(cx);
    o.state = tu_path("lds6.h5");  // the oracle below reads a state of 6 models
    const int64_t N = 60;
    const int M = 4;
    float *S = calloc((size_t)M * N, sizeof(float));
    // An oracle that has seen the models: row i's score = −(mean loss of the models
    // whose subset holds i), so −Σ_{i ∈ S_k} score carries model k's own loss with
    // weight ~1/3 per row. Its LDS must be clearly positive and its negation's exactly
    // opposite: the prediction of the loss is −Σ score.
    for (int q = 0; q < M; q++)
        for (int64_t i = 0; i < N; i++) {
            double s = 0;
            int n = 0;
            for (int k = 0; k < 6; k++)
                if (infl_rng_uniform(5, INFL_RNG_SUBSET, (uint64_t)i, (uint32_t)k) < 0.5) {
                    s += a->outputs[(size_t)k * M + q];
                    n++;
                }
            S[(size_t)q * N + i] = n ? (float)(-s / n) : 0.0f;
        }
    const char *sp = tu_path("s.h5"), *sn = tu_path("n.h5");
    write_scores(sp, o.query, M, N, S);
    for (int64_t i = 0; i < M * N; i++) S[i] = -S[i];
    write_scores(sn, o.query, M, N, S);
    const char *files[2] = {sp, sn};
    o.scores = files;
    o.nscores = 2;
    infl_lds_result *e = run_lds(&o);
    cr_assert_eq(e->trained_now, 6);  // a fresh state: the same seed retrains the same models
    for (int i = 0; i < 6 * 4; i++) cr_assert_eq(e->outputs[i], a->outputs[i]);
    cr_assert_str_eq(e->method[0], "oracle");
    cr_assert(e->lds[0] > 0.3, "oracle LDS %g", e->lds[0]);
    cr_assert(fabs(e->lds[0] + e->lds[1]) < 1e-9, "negated scores: %g vs %g", e->lds[0], e->lds[1]);
    for (int q = 0; q < M; q++) cr_assert(e->per_query[q] >= -1 && e->per_query[q] <= 1);
    free(S);
    infl_lds_result_free(a);
    infl_lds_result_free(b);
    infl_lds_result_free(c);
    infl_lds_result_free(e);
}

Test(lds, influence_functions_on_logistic_regression, .timeout = 600) {
    if (!tu_have_fmnist()) cr_skip_test("dataset-fashion-mnist is not installed");
    infl_ctx *ctx = tu_ctx();
    const char *data = tu_path("fm.h5"), *run = tu_path("lr.h5"), *state = tu_path("lds.h5");
    tu_import_fm7(data, 1000, 0, 0);
    infl_train_options to = infl_train_options_default();
    to.data = tu_ref(0, data, "train");
    to.nlayers = 1;
    to.widths[0] = 49;
    to.widths[1] = 10;
    to.weight_decay = 1e-2;
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    const char *sif = tu_path("if.h5"), *sgd = tu_path("gd.h5");
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test[0:16]");
    o.method = INFL_METHOD_IF;
    o.solver = 0;
    o.damping = 0;
    o.output = sif;
    o.save_scores = 1;
    o.force = 1;
    infl_rank_result *r;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_result_free(r);
    o.method = INFL_METHOD_GRADDOT;
    o.output = sgd;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_result_free(r);
    infl_ctx_free(ctx);
    infl_lds_options lo = infl_lds_options_default();
    lo.run = run;
    lo.query = o.query;
    lo.state = state;
    lo.models = 40;
    const char *files[2] = {sif, sgd};
    lo.scores = files;
    lo.nscores = 2;
    infl_lds_result *e = run_lds(&lo);
    cr_log_info("LDS on logistic regression (40 half subsets, 16 queries): if %.3f ± %.3f, graddot %.3f ± %.3f",
                e->lds[0], e->ci[0], e->lds[1], e->ci[1]);
    cr_assert(e->lds[0] > 0.6, "if: LDS %g", e->lds[0]);
    cr_assert(e->lds[0] > e->lds[1], "if %g vs graddot %g", e->lds[0], e->lds[1]);
    infl_lds_result_free(e);
}

Test(lds, bad_inputs_are_refused) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *state = tu_path("lds.h5");
    small_run(data, run);
    infl_lds_options o = infl_lds_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test[0:4]");
    o.state = state;
    o.models = 3;
    infl_lds_result_free(run_lds(&o));
    infl_ctx *ctx = tu_ctx();
    infl_lds_result *r = NULL;
    // another setting for the same state file
    o.fraction = 0.3;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "another --fraction"), "%s", infl_ctx_error(ctx));
    o.fraction = 0.5;
    // scores for other queries, or without /scores
    float S[3 * 60] = {0};
    const char *s3 = tu_path("s3.h5"), *top = tu_path("top.h5");
    write_scores(s3, tu_ref(2, data, "test[0:3]"), 3, 60, S);
    const char *files[1] = {s3};
    o.scores = files;
    o.nscores = 1;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "[3, 60]"), "%s", infl_ctx_error(ctx));
    infl_rank_options ro = infl_rank_options_default();
    ro.run = run;
    ro.query = o.query;
    ro.output = top;
    infl_rank_result *rr;
    cr_assert_eq(infl_rank(ctx, &ro, &rr), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_result_free(rr);
    files[0] = top;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "--save-scores"), "%s", infl_ctx_error(ctx));
    // a run without recorded training options
    const char *old = tu_path("old.h5");
    size_t n;
    char *b = tu_read_file(run, &n);
    tu_write_file(old, b, n);
    free(b);
    hid_t f = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Adelete(f, "train_epochs") >= 0);
    H5Fclose(f);
    o.run = old;
    o.nscores = 0;
    o.force = 1;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "no recorded training options"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    // the CLI
    char q[1200];
    snprintf(q, sizeof q, "%s:/test[0:4]", data);
    const char *argv[] = {"infl", "lds", "--run", run, "--query", q, "--state", state, "--models", "3", NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "LDS over 3 models"), "%s", tu_out());
    const char *bad[] = {"infl", "lds", "--run", run, "--query", q, "--state", state, "--fraction", "1.5", NULL};
    cr_assert_eq(tu_cli(bad), 2);
}

Test(lds, compare_two_scores_files) {
    const int M = 3;
    const int64_t N = 50;
    float A[3 * 50], B[3 * 50];
    uint64_t st = 3;
    for (int i = 0; i < M * N; i++) {
        A[i] = (float)tu_uniform(&st);
        B[i] = -A[i];
    }
    B[7] = 100.0f;  // query 0: one change at the top
    const char *a = tu_path("a.h5"), *b = tu_path("b.h5"), *c = tu_path("c.h5");
    write_scores(a, "x.h5:/test[0:3]", M, N, A);
    write_scores(b, "x.h5:/test[0:3]", M, N, B);
    infl_ctx *ctx = tu_ctx();
    infl_compare_result *r;
    cr_assert_eq(infl_compare(ctx, a, a, 5, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(fabs(r->mean_pearson - 1) < 1e-12 && fabs(r->mean_spearman - 1) < 1e-12);
    cr_assert_eq(r->mean_top, 1.0);
    cr_assert_eq(r->mean_bottom, 1.0);
    infl_compare_result_free(r);
    cr_assert_eq(infl_compare(ctx, a, b, 5, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(fabs(r->spearman[1] + 1) < 1e-12 && fabs(r->pearson[2] + 1) < 1e-6, "%g %g", r->spearman[1],
              r->pearson[2]);
    cr_assert_eq(r->top_overlap[1], 0.0);
    cr_assert(r->spearman[0] > -1 + 1e-6 && r->spearman[0] < -0.8, "%g", r->spearman[0]);
    infl_compare_result_free(r);
    float C[2 * 50] = {0};
    write_scores(c, "x.h5:/test[0:2]", 2, N, C);
    cr_assert_eq(infl_compare(ctx, a, c, 5, &r), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "[3, 50]") && strstr(infl_ctx_error(ctx), "[2, 50]"), "%s",
              infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    const char *argv[] = {"infl", "compare", a, b, "--top", "5", NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "mean: pearson"), "%s", tu_out());
    const char *bad[] = {"infl", "compare", a, NULL};
    cr_assert_eq(tu_cli(bad), 2);
}

// Review follow-ups: the optimizer and the run are those recorded; leftovers of a
// killed run go; --force replaces only state files; scores of other rows are refused.
Test(lds, retrains_as_recorded_and_refuses_what_does_not_match) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *state = tu_path("lds.h5");
    tu_make_blobs(data, 60, 4, 3, 3);
    infl_ctx *ctx = tu_ctx();
    infl_train_options to = infl_train_options_default();
    to.data = tu_ref(0, data, "train");
    to.nlayers = 1;
    to.widths[0] = 4;
    to.widths[1] = 3;
    to.optimizer = INFL_OPT_SGD;  // a one-layer model trained by SGD, without weight decay
    to.weight_decay = 0;
    to.epochs = 2;
    to.batch = 8;
    to.checkpoint_every = 0;
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    // a leftover of a killed run
    char left[1300];
    snprintf(left, sizeof left, "%s.model.h5.tmp.12345", state);
    tu_write_file(left, "x", 1);
    infl_lds_options o = infl_lds_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test[0:4]");
    o.state = state;
    o.models = 3;
    infl_lds_result *r = NULL;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));  // SGD, as recorded (Newton needs wd)
    infl_lds_result_free(r);
    cr_assert(!tu_exists(left), "the leftover model file was not removed");
    // the run trained again (other weights): the state file is refused
    to.seed = 9;
    to.force = 1;
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "another model or training"), "%s", infl_ctx_error(ctx));
    // --force replaces a state file, never another kind of file
    o.state = data;
    o.force = 1;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_EXISTS);
    cr_assert(strstr(infl_ctx_error(ctx), "not an lds state file"), "%s", infl_ctx_error(ctx));
    o.state = state;
    // scores of the run's training rows named by a range are accepted; of another file's, refused
    infl_rank_options ro = infl_rank_options_default();
    ro.run = run;
    ro.query = o.query;
    ro.method = INFL_METHOD_GRADDOT;
    ro.train = tu_ref(2, data, "train[0:60]");
    ro.output = tu_path("s.h5");
    ro.save_scores = 1;
    infl_rank_result *rr;
    cr_assert_eq(infl_rank(ctx, &ro, &rr), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_result_free(rr);
    const char *files[1] = {ro.output};
    o.scores = files;
    o.nscores = 1;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));  // the same rows written otherwise
    infl_lds_result_free(r);
    o.force = 0;
    const char *other = tu_path("other.h5");
    tu_make_blobs(other, 60, 4, 3, 4);  // same shapes, another file
    ro.train = tu_ref(2, other, "train");
    ro.output = tu_path("s2.h5");
    cr_assert_eq(infl_rank(ctx, &ro, &rr), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_result_free(rr);
    files[0] = ro.output;
    cr_assert_eq(infl_lds(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "training rows"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(lds, compare_ties_and_non_finite_scores) {
    const int64_t N = 6;
    float A[6] = {3, 3, 3, 1, 0, -1}, B[6] = {3, 3, 3, 1, 0, -1};
    const char *a = tu_path("a.h5"), *b = tu_path("b.h5"), *c = tu_path("c.h5");
    write_scores(a, "x.h5:/test[0:1]", 1, N, A);
    write_scores(b, "x.h5:/test[0:1]", 1, N, B);
    infl_ctx *ctx = tu_ctx();
    infl_compare_result *r;
    for (int k = 1; k <= 3; k++) {
        cr_assert_eq(infl_compare(ctx, a, b, k, &r), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert_eq(r->top_overlap[0], 1.0, "k = %d: identical files, top overlap %g", k, r->top_overlap[0]);
        cr_assert_eq(r->bottom_overlap[0], 1.0);
        infl_compare_result_free(r);
    }
    B[4] = NAN;
    write_scores(c, "x.h5:/test[0:1]", 1, N, B);
    cr_assert_eq(infl_compare(ctx, a, c, 2, &r), INFL_E_VALUE);
    cr_assert(strstr(infl_ctx_error(ctx), "row 0 column 4 is NaN"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// ---- GPT runs ----

// A documents file (bytes tokenizer) with /train of the documents i < n_train for
// which keep(i) holds (all when keep is NULL) and /test of 6: document i has 3 to 24
// tokens (some longer than a context of 16) from a small alphabet, drawn from i.
static void write_docs(const char *path, int n_train, const infl_train_options *keep) {
    infl_ctx *ctx = tu_ctx();
    infl_tokenizer t = {.kind = INFL_TOK_BYTES, .vocab = INFL_TOK_BASE_VOCAB, .eot = INFL_TOK_EOT};
    infl_dsw *w;
    cr_assert_eq(store_dataset_create(ctx, path, 1, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_set_tokenizer(ctx, w, &t), INFL_OK, "%s", infl_ctx_error(ctx));
    const char *splits[2] = {"train", "test"};
    const int count[2] = {n_train, 6};
    for (int sp = 0; sp < 2; sp++) {
        cr_assert_eq(store_dataset_add_docs_split(ctx, w, splits[sp]), INFL_OK, "%s", infl_ctx_error(ctx));
        for (int i = 0; i < count[sp]; i++) {
            if (sp == 0 && keep && !infl_subset_keeps(keep, i)) continue;
            uint64_t st = (uint64_t)(1000 * sp + i + 1);
            int32_t len = 3 + (int32_t)(tu_uniform(&st) * 22), tok[24], label = i % 3;
            for (int k = 0; k < len; k++) tok[k] = k % 4 == 3 ? ' ' : 'a' + (int32_t)((i * 3 + k * (1 + i % 4)) % 7);
            cr_assert_eq(store_dataset_append_docs(ctx, w, splits[sp], 1, &len, tok, &label), INFL_OK, "%s",
                         infl_ctx_error(ctx));
        }
    }
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// A GPT of 1 block, 2 heads, dim 16, context 16 trained for `epochs` on data.
static infl_train_options tiny_gpt(const char *data, int epochs) {
    infl_train_options o = infl_train_options_gpt_default();
    o.data = data;
    o.nlayers = 1;
    o.heads = 2;
    o.dim = 16;
    o.context = 16;
    o.epochs = epochs;
    o.batch = 4;
    o.lr = 1e-2;
    o.warmup = 2;
    o.checkpoint_every = 0;
    o.force = 1;
    return o;
}

Test(lds, gpt_subset_equals_training_on_the_subset_documents, .timeout = 300) {
    char data[1100], sub[1100], r1[1100], r2[1100];
    snprintf(data, sizeof data, "%s", tu_path("docs.h5"));
    snprintf(sub, sizeof sub, "%s", tu_path("sub.h5"));
    snprintf(r1, sizeof r1, "%s", tu_path("r1.h5"));
    snprintf(r2, sizeof r2, "%s", tu_path("r2.h5"));
    infl_train_options keep = infl_train_options_default();
    keep.subset_fraction = 0.5;
    keep.subset_seed = 17;
    keep.subset_draw = 1;
    int m = 0;
    for (int i = 0; i < 40; i++) m += infl_subset_keeps(&keep, i);
    cr_assert(m > 10 && m < 30, "%d documents kept", m);
    write_docs(data, 40, NULL);
    write_docs(sub, 40, &keep);
    infl_ctx *ctx = tu_ctx();
    // one shard: the subset read from the whole split is the subset's own split
    infl_train_options o = tiny_gpt(tu_ref(0, data, "train"), 2);
    o.subset_fraction = keep.subset_fraction;
    o.subset_seed = keep.subset_seed;
    o.subset_draw = keep.subset_draw;
    infl_train_report rep;
    cr_assert_eq(infl_train(ctx, &o, r1, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.steps, 2 * ((m + 3) / 4), "%ld steps for %d documents", (long)rep.steps, m);
    infl_train_options os = tiny_gpt(tu_ref(1, sub, "train"), 2);
    cr_assert_eq(infl_train(ctx, &os, r2, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    size_t P1, P2;
    float *a = load_final_f(r1, &P1), *b = load_final_f(r2, &P2);
    cr_assert_eq(P1, P2);
    cr_assert_eq(memcmp(a, b, P1 * sizeof(float)), 0, "the subset's training differs from the subset file's");
    free(a);
    free(b);
    // shards of 8 documents: each keeps its subset's documents (steps ceil(kept / 4) per shard)
    o.shard_rows = 8;
    int64_t steps = 0;
    for (int s0 = 0; s0 < 40; s0 += 8) {
        int kept = 0;
        for (int i = s0; i < s0 + 8; i++) kept += infl_subset_keeps(&keep, i);
        steps += (kept + 3) / 4;
    }
    cr_assert_eq(infl_train(ctx, &o, r1, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.steps, 2 * steps, "%ld steps, expected %ld", (long)rep.steps, (long)(2 * steps));
    // a subset of a range: documents are keyed by their row in the split
    o.data = tu_ref(2, data, "train[8:40]");
    o.shard_rows = 0;
    int m8 = 0;
    for (int i = 8; i < 40; i++) m8 += infl_subset_keeps(&keep, i);
    cr_assert_eq(infl_train(ctx, &o, r1, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.steps, 2 * ((m8 + 3) / 4));
    infl_ctx_free(ctx);
}

// Sets /done of a state file (a killed run leaves the models after it undone).
static void set_done(const char *state, const int32_t *done) {
    hid_t f = H5Fopen(state, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "done", H5P_DEFAULT);
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, done) >= 0);
    H5Dclose(d);
    H5Fclose(f);
}

Test(lds, gpt_records_document_losses_deterministically_and_resumes, .timeout = 300) {
    char data[1100], run[1100], sa[1100], sb[1100], rk[1100];
    snprintf(data, sizeof data, "%s", tu_path("docs.h5"));
    snprintf(run, sizeof run, "%s", tu_path("g.h5"));
    snprintf(sa, sizeof sa, "%s", tu_path("a.h5"));
    snprintf(sb, sizeof sb, "%s", tu_path("b.h5"));
    snprintf(rk, sizeof rk, "%s", tu_path("k.h5"));
    write_docs(data, 40, NULL);
    infl_ctx *ctx = tu_ctx();
    infl_train_options to = tiny_gpt(tu_ref(0, data, "train"), 1);
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    char query[1200];
    snprintf(query, sizeof query, "%s:/test[0:4]", data);
    infl_lds_options o = infl_lds_options_default();
    o.run = run;
    o.query = query;
    o.state = sa;
    o.models = 2;
    o.seed = 3;
    infl_lds_result *a = run_lds(&o);
    cr_assert_eq(a->trained_now, 2);
    cr_assert_eq(a->M, 4);
    for (int i = 0; i < 2 * 4; i++)
        cr_assert(isfinite(a->outputs[i]) && a->outputs[i] > 0, "output %d: %g", i, a->outputs[i]);
    cr_assert(memcmp(a->outputs, a->outputs + 4, 4 * sizeof(double)) != 0, "models 0 and 1 agree");
    // the truth of model 1: the loss of each query document of the GPT trained on S_1
    // (its initialisation and order seeded seed · 1000003 + k + 1, lds.c)
    infl_train_options tk = to;
    infl_split *ts = tu_open_split(ctx, tu_ref(2, data, "train"));
    // the subset of exactly round(fraction · N) documents model 1 was trained on
    tk.subset_fraction = infl_subset_cut(o.seed, 1, store_split_info(ts)->begin, store_split_info(ts)->n, o.fraction);
    store_split_close(ts);
    tk.subset_seed = o.seed;
    tk.subset_draw = 1;
    tk.seed = o.seed * 1000003ull + 2;
    cr_assert_eq(infl_train(ctx, &tk, rk, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, rk, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_split *qs = tu_open_split(ctx, query);
    double loss[4];
    int64_t tokens, truncated;
    int fin;
    cr_assert_eq(store_run_find(ctx, r, NULL, &fin), INFL_OK);
    cr_assert_eq(infl_gpt_split_losses(ctx, r, fin, qs, NULL, loss, &tokens, &truncated), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    store_split_close(qs);
    store_run_close(r);
    for (int q = 0; q < 4; q++)
        cr_assert_eq(a->outputs[4 + q], loss[q], "query %d: %g vs %g", q, a->outputs[4 + q], loss[q]);
    // another state of 3 models: the same k gives the same outputs
    o.state = sb;
    o.models = 3;
    infl_lds_result *b = run_lds(&o);
    cr_assert_eq(b->trained_now, 3);
    cr_assert_eq(memcmp(a->outputs, b->outputs, 8 * sizeof(double)), 0, "models 0 and 1 differ between states");
    // killed after model 0: the same command trains models 1 and 2 again, to the same outputs
    set_done(sb, (const int32_t[3]){1, 0, 0});
    infl_lds_result *c = run_lds(&o);
    cr_assert_eq(c->trained_now, 2);
    cr_assert_eq(memcmp(b->outputs, c->outputs, 12 * sizeof(double)), 0, "the resumed outputs differ");
    // the state of 2 models extended to 3: only model 2 is trained
    o.state = sa;
    infl_lds_result *e = run_lds(&o);
    cr_assert_eq(e->trained_now, 1);
    cr_assert_eq(memcmp(b->outputs, e->outputs, 12 * sizeof(double)), 0);
    // a margin is a class's: refused
    infl_lds_result *x = NULL;
    o.output_margin = 1;
    o.state = tu_path("m.h5");
    cr_assert_eq(infl_lds(ctx, &o, &x), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "document's loss"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    // the CLI
    const char *argv[] = {"infl",  "lds", "--run",    run, "--query", query, "--state",
                          sb,      "--models", "3", "--seed", "3",     NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "LDS over 3 models") && strstr(tu_out(), "0 model(s) trained now"), "%s", tu_out());
    infl_lds_result_free(a);
    infl_lds_result_free(b);
    infl_lds_result_free(c);
    infl_lds_result_free(e);
}

Test(lds, gpt_judges_the_scores_of_rank, .timeout = 300) {
    char data[1100], run[1100], state[1100], gd[1100], tr[1100];
    snprintf(data, sizeof data, "%s", tu_path("docs.h5"));
    snprintf(run, sizeof run, "%s", tu_path("g.h5"));
    snprintf(state, sizeof state, "%s", tu_path("lds.h5"));
    snprintf(gd, sizeof gd, "%s", tu_path("gd.h5"));
    snprintf(tr, sizeof tr, "%s", tu_path("tr.h5"));
    write_docs(data, 40, NULL);
    infl_ctx *ctx = tu_ctx();
    infl_train_options to = tiny_gpt(tu_ref(0, data, "train"), 2);
    to.checkpoint_every = 8;  // TracIn's checkpoints
    cr_assert_eq(infl_train(ctx, &to, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    char query[1200];
    snprintf(query, sizeof query, "%s:/test[0:6]", data);
    const infl_method methods[2] = {INFL_METHOD_GRADDOT, INFL_METHOD_TRACIN};
    const char *files[2] = {gd, tr};
    for (int m = 0; m < 2; m++) {
        infl_rank_options ro = infl_rank_options_default();
        ro.run = run;
        ro.query = query;
        ro.method = methods[m];
        ro.output = files[m];
        ro.save_scores = 1;
        infl_rank_result *rr;
        cr_assert_eq(infl_rank(ctx, &ro, &rr), INFL_OK, "%s", infl_ctx_error(ctx));
        infl_rank_result_free(rr);
    }
    infl_ctx_free(ctx);
    infl_lds_options o = infl_lds_options_default();
    o.run = run;
    o.query = query;
    o.state = state;
    o.models = 6;
    o.scores = files;
    o.nscores = 2;
    infl_lds_result *r = run_lds(&o);
    cr_assert_eq(r->nmethods, 2);
    cr_assert_str_eq(r->method[0], "graddot");
    cr_assert_str_eq(r->method[1], "tracin");
    for (int m = 0; m < 2; m++) {
        cr_assert_eq(r->valid[m], 6, "%s: %d valid queries", r->method[m], r->valid[m]);
        cr_assert(r->lds[m] >= -1 && r->lds[m] <= 1, "%s: LDS %g", r->method[m], r->lds[m]);
        cr_log_info("tiny gpt, 6 models, 6 queries: %s LDS %.3f ± %.3f", r->method[m], r->lds[m], r->ci[m]);
    }
    infl_lds_result_free(r);
}

// Every subset holds exactly round(fraction · n) rows, whatever the range, draw and seed.
Test(lds, subsets_are_of_one_size) {
    const int64_t ns[] = {1, 7, 100, 4001};
    const double fr[] = {0.1, 0.5, 0.77};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int draw = 0; draw < 5; draw++) {
                int64_t n = ns[a], begin = 13 * draw, kept = 0, want = llround(fr[b] * (double)n);
                want = want < 1 ? 1 : want;
                double t = infl_subset_cut(99, draw, begin, n, fr[b]);
                infl_train_options o = infl_train_options_default();
                o.subset_fraction = t;
                o.subset_seed = 99;
                o.subset_draw = draw;
                for (int64_t i = 0; i < n; i++) kept += infl_subset_keeps(&o, begin + i);
                cr_assert_eq(kept, want, "n %lld, fraction %g, draw %d: %lld rows kept", (long long)n, fr[b], draw,
                             (long long)kept);
            }
}

// Fuzzing (tests/fuzz, fuzz_lds): /done of the right length but 2-D ([models, 3]) was
// read whole into the caller's `models` flags, past their end (ASan: heap overflow).
Test(lds, state_with_2d_done_is_refused) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("state.h5");
    infl_lds_state s;
    memset(&s, 0, sizeof s);
    snprintf(s.run, sizeof s.run, "r.h5");
    snprintf(s.query, sizeof s.query, "q.h5:/test[0:2]");
    snprintf(s.fingerprint, sizeof s.fingerprint, "fp");
    s.models = 2, s.M = 2, s.epochs = 1, s.fraction = 0.5, s.seed = 3;
    double out[4] = {0, 1, 2, 3};
    int32_t done[2] = {1, 0};
    s.outputs = out, s.done = done;
    cr_assert_eq(store_lds_write(ctx, path, &s), INFL_OK, "%s", infl_ctx_error(ctx));
    // /done replaced by int32 [2, 3]
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    cr_assert(H5Ldelete(f, "done", H5P_DEFAULT) >= 0);
    hsize_t dims[2] = {2, 3};
    int32_t big[6] = {1, 1, 1, 1, 1, 1};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "done", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0 && H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, big) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
    int32_t *flags = calloc(2, sizeof *flags);  // exactly models flags, so ASan sees an overrun
    double back[4];
    s.outputs = back, s.done = flags;
    cr_assert_eq(store_lds_read(ctx, path, &s), INFL_E_FORMAT, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "/done"), "%s", infl_ctx_error(ctx));
    free(flags);
    infl_ctx_free(ctx);
}
