/*
 * test_fastif.c — FastIF and model debugging (issue #12 item 4):
 *  - exact k-NN by GEMM (estimators/knn.c) against a float64 brute force, for block
 *    sizes that do and do not divide N, with duplicate rows (exact ties, which must
 *    rank by the lower index whatever the blocks);
 *  - `--prefilter knn:N` ranks exactly as the full method (indices and scores), for
 *    every method family, over the inputs and the penultimate activations; a small K
 *    reports only candidates, each scored as the full method scores it;
 *  - bad input: K = 0 (the CLI) and K > N;
 *  - `infl debug` on a tiny model: the examples it removes are the union of the
 *    chosen opponents, the retrained run records them as excluded, and the random
 *    control removes as many.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "estimators/knn.h"
#include "models/train.h"
#include "pipelines/attrib.h"
#include "testutil.h"

// ---- k-NN ----

typedef struct {
    double d;
    int64_t i;
} pair;

static int by_dist(const void *x, const void *y) {
    const pair *a = x, *b = y;
    if (a->d != b->d) return a->d < b->d ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

// out (n): every row of X (n, d) with its squared distance to q (d) in float64, nearest
// first, ties by index.
static void brute_force(pair *out, const float *q, const float *X, int n, int d) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += ((double)q[j] - X[i * d + j]) * ((double)q[j] - X[i * d + j]);
        out[i] = (pair){s, i};
    }
    qsort(out, (size_t)n, sizeof(pair), by_dist);
}

Test(knn, gemm_equals_brute_force_across_block_sizes) {
    infl_ctx *ctx = tu_ctx();
    enum { N = 53, D = 6, NQ = 5, K = 9 };
    // small integers: every distance is exact in float32, so ties are exact ties
    float X[N * D], Q[NQ * D];
    uint64_t st = 7;
    for (int i = 0; i < N * D; i++) X[i] = (float)((int)(tu_uniform(&st) * 5) - 2);
    for (int i = 0; i < NQ * D; i++) Q[i] = (float)((int)(tu_uniform(&st) * 5) - 2);
    for (int j = 0; j < D; j++) {
        X[40 * D + j] = X[3 * D + j];   // duplicates across blocks
        X[41 * D + j] = X[3 * D + j];
        X[10 * D + j] = Q[1 * D + j];   // a query's own row: distance 0
        X[50 * D + j] = Q[1 * D + j];
    }
    float *dX = tu_upload(ctx, X, sizeof X), *dQ = tu_upload(ctx, Q, sizeof Q);
    pair ref[NQ][N];
    for (int q = 0; q < NQ; q++) brute_force(ref[q], Q + q * D, X, N, D);
    const int blocks[] = {1, 4, 16, 53};
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        int B = blocks[bi];
        knn *kn;
        cr_assert_eq(knn_create(ctx, &kn, dQ, NQ, D, K, B), INFL_OK, "%s", infl_ctx_error(ctx));
        // the blocks in a scrambled order: the result may not depend on it
        int nb = (N + B - 1) / B;
        for (int t = 0; t < nb; t++) {
            int b0 = ((t * 7) % nb) * B, b = N - b0 < B ? N - b0 : B;
            if (nb % 7 == 0) b0 = t * B, b = N - b0 < B ? N - b0 : B;
            cr_assert_eq(knn_push(ctx, kn, dX + (size_t)b0 * D, b, b0), INFL_OK, "%s", infl_ctx_error(ctx));
        }
        int64_t idx[NQ * K];
        float dist[NQ * K];
        int cnt;
        knn_result(kn, idx, dist, &cnt);
        cr_assert_eq(cnt, K);
        for (int q = 0; q < NQ; q++)
            for (int j = 0; j < K; j++) {
                cr_assert_eq(idx[q * K + j], ref[q][j].i, "block %d query %d neighbour %d: %lld, brute force %lld", B, q,
                             j, (long long)idx[q * K + j], (long long)ref[q][j].i);
                cr_assert_eq(dist[q * K + j], (float)ref[q][j].d, "block %d query %d neighbour %d distance", B, q, j);
            }
        cr_assert_eq(idx[1 * K + 0], 10, "the query's own row first");
        cr_assert_eq(idx[1 * K + 1], 50, "its duplicate second (a tie, by index)");
        knn_free(ctx, kn);
    }
    // fewer rows pushed than K: -1 and +Inf past them
    knn *kn;
    cr_assert_eq(knn_create(ctx, &kn, dQ, NQ, D, K, 4), INFL_OK);
    cr_assert_eq(knn_push(ctx, kn, dX, 4, 0), INFL_OK);
    int64_t idx[NQ * K];
    float dist[NQ * K];
    int cnt;
    knn_result(kn, idx, dist, &cnt);
    cr_assert_eq(cnt, 4);
    cr_assert_eq(idx[K - 1], -1);
    cr_assert(isinf(dist[K - 1]));
    cr_assert_eq(knn_push(ctx, kn, dX, 5, 0), INFL_E_ARG, "a block larger than maxb");
    knn_free(ctx, kn);
    cr_assert_eq(knn_create(ctx, &kn, dQ, NQ, D, 0, 4), INFL_E_ARG, "K = 0");
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dQ);
    infl_ctx_free(ctx);
}

// ---- the prefilter in the rank pipeline ----

// A small MLP with several checkpoints, trained on blobs (and its EK-FAC factors).
static void make_model(const char *data, const char *run, const char *fac) {
    tu_make_blobs(data, 150, 6, 3, 11);
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(3, data, "train");
    o.nlayers = 2;
    o.widths[0] = 6, o.widths[1] = 8, o.widths[2] = 3;
    o.epochs = 3;
    o.batch = 16;
    o.lr = 0.05;
    o.checkpoint_every = 10;
    o.optimizer = INFL_OPT_SGD;
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    if (fac) {
        infl_fit_options fo = infl_fit_options_default();
        fo.run = run;
        fo.force = 1;
        cr_assert_eq(infl_fit(ctx, &fo, fac, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    }
    infl_ctx_free(ctx);
}

static void assert_same_ranking(const infl_rank_result *a, const infl_rank_result *b, const char *what) {
    cr_assert_eq(a->M, b->M);
    cr_assert_eq(a->k, b->k, "%s: k", what);
    for (int i = 0; i < a->M * a->k; i++) {
        cr_assert_eq(a->top_index[i], b->top_index[i], "%s: entry %d: top %lld, full %lld", what, i,
                     (long long)a->top_index[i], (long long)b->top_index[i]);
        cr_assert_eq(a->bottom_index[i], b->bottom_index[i], "%s: entry %d bottom", what, i);
        cr_assert_eq(a->top_score[i], b->top_score[i], "%s: entry %d: score %.9g, full %.9g", what, i, a->top_score[i],
                     b->top_score[i]);
        cr_assert_eq(a->bottom_score[i], b->bottom_score[i], "%s: entry %d bottom score", what, i);
    }
}

Test(knn, prefilter_of_every_row_equals_the_full_method_exactly) {
    const char *data = tu_path("blobs.h5"), *run = tu_path("run.h5"), *fac = tu_path("fac.h5");
    make_model(data, run, fac);
    infl_ctx *ctx = tu_ctx();
    const int64_t N = 150;
    const infl_method methods[] = {INFL_METHOD_TRACIN, INFL_METHOD_GRADCOS, INFL_METHOD_IF, INFL_METHOD_EKFAC};
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (int feat = 0; feat < 2; feat++) {
            infl_rank_options o = infl_rank_options_default();
            o.run = run;
            o.query = tu_ref(0, data, "test[0:7]");
            o.method = methods[mi];
            o.top = 6;
            o.shard_rows = 32;  // one sub-batch a shard: the listed sub-batches are the streamed ones
            if (o.method == INFL_METHOD_IF) o.solver = 0, o.hessian = 1, o.damping = 0.01;
            if (o.method == INFL_METHOD_EKFAC) o.factors = fac, o.damping_auto = 1;
            infl_rank_result *full = NULL, *r = NULL;
            cr_assert_eq(infl_rank(ctx, &o, &full), INFL_OK, "%s", infl_ctx_error(ctx));
            o.prefilter_knn = (int)N;
            o.knn_features = feat;
            cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
            char what[64];
            snprintf(what, sizeof what, "%s knn:N %s", infl_method_name(o.method), feat ? "penultimate" : "inputs");
            assert_same_ranking(r, full, what);
            cr_assert_eq(r->candidates, N);
            infl_rank_result_free(r);
            // K = 12: every reported example is one of the query's 12 nearest, with the full method's score
            o.prefilter_knn = 12;
            cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
            cr_assert(r->candidates <= 7 * 12 && r->candidates >= 12);
            infl_rank_result_free(r);
            infl_rank_result_free(full);
        }
    infl_ctx_free(ctx);
}

Test(knn, candidates_are_the_nearest_and_keep_the_full_scores) {
    const char *data = tu_path("blobs.h5"), *run = tu_path("run.h5");
    make_model(data, run, NULL);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(0, data, "test[0:5]");
    o.method = INFL_METHOD_GRADDOT;
    o.top = 4;
    attrib_full keep = {.S = malloc(sizeof(float) * 5 * 150), .N = 150};
    infl_rank_result *full = NULL, *r = NULL;
    cr_assert_eq(attrib_rank(ctx, &o, attrib_keep_full, &keep, &full), INFL_OK, "%s", infl_ctx_error(ctx));
    // the inputs' 10 nearest of each query by brute force
    infl_split *tr = tu_open_split(ctx, tu_ref(1, data, "train")), *qs = tu_open_split(ctx, o.query);
    float *x = malloc(sizeof(float) * 150 * 6), qx[5 * 6];
    cr_assert_eq(store_split_read(ctx, tr, 0, 150, x, NULL, NULL), INFL_OK);
    cr_assert_eq(store_split_read(ctx, qs, 0, 5, qx, NULL, NULL), INFL_OK);
    o.prefilter_knn = 10;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int q = 0; q < 5; q++) {
        pair p[150];
        brute_force(p, qx + q * 6, x, 150, 6);
        for (int j = 0; j < 4; j++) {
            int64_t t = r->top_index[q * 4 + j], b = r->bottom_index[q * 4 + j];
            int in_t = 0, in_b = 0;
            for (int i = 0; i < 10; i++) in_t |= p[i].i == t, in_b |= p[i].i == b;
            cr_assert(in_t && in_b, "query %d: a reported example is not among its 10 nearest", q);
            cr_assert_float_eq(r->top_score[q * 4 + j], keep.S[q * 150 + t], 1e-4 * fabsf(keep.S[q * 150 + t]) + 1e-6);
            cr_assert_float_eq(r->bottom_score[q * 4 + j], keep.S[q * 150 + b], 1e-4 * fabsf(keep.S[q * 150 + b]) + 1e-6);
        }
    }
    store_split_close(tr);
    store_split_close(qs);
    free(x);
    free(keep.S);
    infl_rank_result_free(r);
    infl_rank_result_free(full);
    infl_ctx_free(ctx);
}

Test(knn, bad_k_is_a_clear_error) {
    const char *data = tu_path("blobs.h5"), *run = tu_path("run.h5");
    make_model(data, run, NULL);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(0, data, "test[0:3]");
    o.method = INFL_METHOD_GRADDOT;
    o.top = 3;
    infl_rank_result *r = NULL;
    o.prefilter_knn = 151;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "knn:151") && strstr(infl_ctx_error(ctx), "150"), "%s", infl_ctx_error(ctx));
    o.prefilter_knn = 2;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG, "K below --top");
    o.prefilter_knn = 5;
    o.prefilter_bm25 = 5;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG, "two prefilters");
    infl_ctx_free(ctx);
    const char *q = tu_ref(0, data, "test[0:3]");
    const char *zero[] = {"infl", "rank", "--run", run, "--query", q, "--prefilter", "knn:0", NULL};
    cr_assert_eq(tu_cli(zero), 2);
    cr_assert(strstr(tu_err(), "knn:K with K >= 1"), "%s", tu_err());
    const char *junk[] = {"infl", "rank", "--run", run, "--query", q, "--prefilter", "knn:", NULL};
    cr_assert_eq(tu_cli(junk), 2);
    const char *big[] = {"infl", "rank", "--run", run, "--query", q, "--prefilter", "knn:1000", "--top", "3", NULL};
    cr_assert_eq(tu_cli(big), 1);
    cr_assert(strstr(tu_err(), "expected 1 to 150"), "%s", tu_err());
    const char *feat[] = {"infl", "rank", "--run", run, "--query", q, "--knn-features", "penultimate", NULL};
    cr_assert_eq(tu_cli(feat), 2, "--knn-features without --prefilter knn");
}

// ---- infl debug ----

Test(debug, removes_the_union_of_the_opponents_and_the_run_records_it) {
    const char *data = tu_path("blobs.h5"), *run = tu_path("run.h5");
    tu_make_blobs(data, 200, 6, 3, 5);
    infl_ctx *ctx = tu_ctx();
    infl_train_options t = infl_train_options_default();
    t.data = tu_ref(3, data, "train");
    t.nlayers = 2;
    t.widths[0] = 6, t.widths[1] = 4, t.widths[2] = 3;
    t.epochs = 1;  // under-trained: some test examples are wrong
    t.batch = 32;
    t.lr = 0.02;
    t.optimizer = INFL_OPT_SGD;
    cr_assert_eq(infl_train(ctx, &t, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_debug_options o = infl_debug_options_default();
    o.rank.run = run;
    o.rank.method = INFL_METHOD_GRADDOT;
    o.val = tu_ref(0, data, "test");
    o.fix = 8;
    o.per_example = 5;
    o.random = 2;
    o.seed = 9;
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s/kept", tu_tmpdir());
    o.keep_prefix = prefix;
    infl_debug_result *r = NULL;
    cr_assert_eq(infl_debug(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(r->M >= 2 && r->M <= 8 && r->val_wrong >= r->M, "M %d of %lld wrong", r->M, (long long)r->val_wrong);
    cr_assert_eq(r->before_fixed, 0.0);
    // the removed rows are the union of each fixed example's negative bottom-3, by the same ranking
    infl_rank_options ro = o.rank;
    ro.query = o.val;
    ro.query_rows = r->fixed;
    ro.nquery_rows = r->M;
    ro.top = 5;
    infl_rank_result *rk = NULL;
    cr_assert_eq(infl_rank(ctx, &ro, &rk), INFL_OK, "%s", infl_ctx_error(ctx));
    int64_t want[40], nw = 0, nneg = 0;
    for (int i = 0; i < r->M * 5; i++) {
        if (!(rk->bottom_score[i] < 0)) continue;
        nneg++;
        int seen = 0;
        for (int j = 0; j < nw; j++) seen |= want[j] == rk->bottom_index[i];
        if (!seen) want[nw++] = rk->bottom_index[i];
    }
    cr_assert(nw < nneg, "the fixture should give examples opponents in common (%lld of %lld)", (long long)nw,
              (long long)nneg);
    cr_assert_eq(r->nremoved, nw, "removed %lld, the union has %lld", (long long)r->nremoved, (long long)nw);
    for (int j = 0; j < nw; j++) {
        int found = 0;
        for (int64_t i = 0; i < r->nremoved; i++) found |= r->removed[i] == want[j];
        cr_assert(found, "opponent %lld was not removed", (long long)want[j]);
    }
    // the retrained runs record what they left out: the opponents, and as many random rows
    char path[4300];
    infl_run *kept = NULL;
    int64_t *rows = NULL, n = 0;
    snprintf(path, sizeof path, "%s-removed.h5", prefix);
    cr_assert_eq(store_run_open(ctx, path, &kept), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_run_read_rows(ctx, kept, "train_excluded", &rows, &n), INFL_OK);
    cr_assert_eq(n, r->nremoved);
    for (int64_t i = 0; i < n; i++) cr_assert_eq(rows[i], r->removed[i]);
    cr_assert_eq(store_run_seed(kept), 1, "retrained with the run's seed");
    free(rows);
    store_run_close(kept);
    snprintf(path, sizeof path, "%s-random-1.h5", prefix);
    cr_assert_eq(store_run_open(ctx, path, &kept), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_run_read_rows(ctx, kept, "train_excluded", &rows, &n), INFL_OK);
    cr_assert_eq(n, r->nremoved);
    for (int64_t i = 1; i < n; i++) cr_assert(rows[i] > rows[i - 1] && rows[i] < 200);
    free(rows);
    store_run_close(kept);
    // the trainer left exactly those rows out: an epoch over 200 - n rows in batches of 32
    infl_train_options te = t;
    te.exclude = r->removed;
    te.nexclude = r->nremoved;
    int64_t steps, used;
    cr_assert_eq(infl_train_epoch_steps(ctx, &te, 0, 200, 200, 32, &steps, &used), INFL_OK);
    cr_assert_eq(used, 200 - r->nremoved);
    for (int64_t i = 0; i < r->nremoved; i++) cr_assert(!infl_subset_keeps(&te, r->removed[i]));
    cr_assert(infl_subset_keeps(&te, r->removed[0] == 0 ? 199 : 0) || r->nremoved == 200);
    cr_assert(r->after_test >= 0 && r->after_test <= 1 && r->nrandom == 2);
    infl_rank_result_free(rk);
    infl_debug_result_free(r);
    // bad input
    o.fix = 0;
    cr_assert_eq(infl_debug(ctx, &o, &r), INFL_E_ARG);
    infl_ctx_free(ctx);
    const char *act[] = {"infl", "debug", "--run", run, "--val", tu_ref(0, data, "test"), "--action", "finetune", NULL};
    cr_assert_eq(tu_cli(act), 2);
    cr_assert(strstr(tu_err(), "only remove is implemented"), "%s", tu_err());
}
