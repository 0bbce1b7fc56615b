/*
 * test_shapley.c — Data Shapley (estimators/shapley.c, pipelines/shapley*.c):
 *  - exact Shapley by enumeration against its definition's efficiency (the values sum
 *    to U(all) − U(∅)), and TMC against exact within TMC's error bars, for the convex
 *    model (accuracy and loss) and the MLP; TMC's values sum to U(all) − U(∅) too;
 *  - the KNN-Shapley recursion against the Shapley values of the KNN utility by brute
 *    force over every subset of a tiny set;
 *  - the streamed KNN-Shapley (several shards, several blocks of validation points)
 *    against the recursion over a naive sort, and with a run's penultimate features;
 *  - the pipeline: resuming a state gives the values of one uninterrupted run; the
 *    removal curves start at one accuracy; the outputs;
 *  - bad input: a utility split with one class, exact on too many rows.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "estimators/shapley.h"
#include "store/store.h"
#include "testutil.h"

// ---- a small in-memory problem ----

typedef struct {
    double x[16 * 3], vx[80 * 3];
    int32_t y[16], vy[80];
} toy;

// n rows and 80 validation rows of 3 features in 3 overlapping classes.
static void toy_make(toy *t, int n, uint64_t seed) {
    uint64_t st = seed;
    static const double mu[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    for (int i = 0; i < n + 80; i++) {
        int c = (int)(tu_uniform(&st) * 3);
        double *x = i < n ? t->x + i * 3 : t->vx + (i - n) * 3;
        for (int d = 0; d < 3; d++) x[d] = mu[c][d] + 0.9 * (2 * tu_uniform(&st) - 1);
        if (i < n) t->y[i] = c;
        else t->vy[i - n] = c;
    }
}

static shap_problem toy_problem(const toy *t, int n, int loss, int mlp) {
    shap_problem p = {.n = n, .D = 3, .K = 3, .x = t->x, .y = t->y, .V = 80, .vx = t->vx, .vy = t->vy,
                      .utility_loss = loss, .mlp = mlp, .hidden = 4, .epochs = 3, .wd = 1e-2, .lr = 0.1, .seed = 5,
                      .fit = {.tol = 1e-9, .max_iters = 100}, .tolerance = 0};
    return p;
}

static void exact_values(shap_problem *p, shap_work *wk, double *phi) {
    infl_ctx *ctx = tu_ctx();
    int n = (int)p->n;
    double *U = malloc(sizeof(double) << n);
    for (uint32_t m = 0; m < (1u << n); m++)
        cr_assert_eq(shap_subset_utility(ctx, p, wk, m, &U[m]), INFL_OK, "%s", infl_ctx_error(ctx));
    shap_exact_values(phi, U, n);
    free(U);
    infl_ctx_free(ctx);
}

// TMC over T permutations: mean and standard error per row.
static void tmc_values(shap_problem *p, shap_work *wk, int T, double *mean, double *se) {
    infl_ctx *ctx = tu_ctx();
    int n = (int)p->n;
    double *d = malloc(sizeof(double) * n), s[16] = {0}, s2[16] = {0};
    int64_t perm[16], fits = 0;
    for (int t = 0; t < T; t++) {
        infl_train_permute(perm, n, 11, (uint64_t)t);
        cr_assert_eq(shap_tmc_perm(ctx, p, wk, perm, d, &fits), INFL_OK, "%s", infl_ctx_error(ctx));
        double sum = 0;
        for (int i = 0; i < n; i++) {
            s[i] += d[i];
            s2[i] += d[i] * d[i];
            sum += d[i];
        }
        // every permutation's contributions telescope to U(all) − U(∅) (no truncation), to the
        // optimiser's tolerance: the convex model's last prefix is fitted from a warm start
        cr_assert(fabs(sum - (p->u_all - p->u_empty)) < 1e-6, "permutation %d sums to %.12g, not %.12g", t, sum,
                  p->u_all - p->u_empty);
    }
    for (int i = 0; i < n; i++) {
        mean[i] = s[i] / T;
        se[i] = sqrt(fmax(s2[i] / T - mean[i] * mean[i], 0) / (T - 1));
    }
    free(d);
    infl_ctx_free(ctx);
}

static void exact_against_tmc(int n, int loss, int mlp, int T) {
    toy t;
    toy_make(&t, n, 3 + (uint64_t)n);
    shap_problem p = toy_problem(&t, n, loss, mlp);
    infl_ctx *ctx = tu_ctx();
    shap_work wk;
    cr_assert_eq(shap_work_create(ctx, &p, &wk), INFL_OK);
    cr_assert_eq(shap_problem_finish(ctx, &p, &wk), INFL_OK, "%s", infl_ctx_error(ctx));
    double phi[16], mean[16], se[16], sum = 0;
    exact_values(&p, &wk, phi);
    for (int i = 0; i < n; i++) sum += phi[i];
    cr_assert(fabs(sum - (p.u_all - p.u_empty)) < 1e-9, "exact values sum to %g, U(all) - U(empty) = %g", sum,
              p.u_all - p.u_empty);
    tmc_values(&p, &wk, T, mean, se);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double z = fabs(mean[i] - phi[i]) / fmax(se[i], 1e-12);
        worst = fmax(worst, z);
        // 4.5 standard errors: a false alarm about once in 10^5 rows
        cr_expect(z < 4.5 || fabs(mean[i] - phi[i]) < 1e-12, "row %d: TMC %.6f +- %.6f, exact %.6f", i, mean[i], se[i],
                  phi[i]);
    }
    cr_log_info("n %d loss %d mlp %d: worst |TMC - exact| = %.2f standard errors", n, loss, mlp, worst);
    shap_work_free(&wk);
    infl_ctx_free(ctx);
}

Test(shapley, tmc_within_error_bars_of_exact_convex_accuracy) { exact_against_tmc(8, 0, 0, 300); }
Test(shapley, tmc_within_error_bars_of_exact_convex_loss) { exact_against_tmc(7, 1, 0, 300); }
Test(shapley, tmc_within_error_bars_of_exact_mlp_loss) { exact_against_tmc(6, 1, 1, 200); }

// ---- KNN-Shapley: the recursion against the definition ----

// The KNN utility of the subset `mask` of N rows sorted by distance (row r is the r-th
// nearest): (1/K) Σ over S's first min(K, |S|) rows of match.
static double knn_utility(uint32_t mask, const uint8_t *match, int N, int K) {
    int got = 0;
    double u = 0;
    for (int r = 0; r < N && got < K; r++)
        if (mask >> r & 1u) {
            u += match[r];
            got++;
        }
    return u / K;
}

Test(shapley, knn_recursion_equals_brute_force) {
    uint64_t st = 9;
    for (int trial = 0; trial < 12; trial++) {
        int N = 3 + trial % 6, K = 1 + trial % 4;
        if (trial == 11) K = N + 2;  // K above N
        uint8_t match[16];
        for (int r = 0; r < N; r++) match[r] = tu_uniform(&st) < 0.5;
        double *U = malloc(sizeof(double) << N), phi[16], s[16];
        for (uint32_t m = 0; m < (1u << N); m++) U[m] = knn_utility(m, match, N, K);
        shap_exact_values(phi, U, N);
        shap_knn_recursion(s, match, N, K);
        for (int r = 0; r < N; r++)
            cr_assert(fabs(s[r] - phi[r]) < 1e-12, "N %d K %d rank %d: recursion %.15f, brute force %.15f", N, K, r,
                      s[r], phi[r]);
        free(U);
    }
}

// ---- the pipeline ----

// Reads a split's rows (n, d) and labels into memory.
static void read_split(const char *ref, float **x, int32_t **y, int64_t *n, int64_t *d) {
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, ref);
    *n = store_split_info(s)->n;
    *d = store_split_info(s)->d;
    *x = malloc(sizeof(float) * *n * *d);
    *y = malloc(sizeof(int32_t) * *n);
    cr_assert_eq(store_split_read(ctx, s, 0, *n, *x, *y, NULL), INFL_OK);
    store_split_close(s);
    infl_ctx_free(ctx);
}

typedef struct {
    float d;
    int i;
} pair;

static int by_d(const void *a, const void *b) {
    const pair *x = a, *y = b;
    return x->d != y->d ? (x->d < y->d ? -1 : 1) : x->i - y->i;
}

Test(shapley, knn_streamed_in_shards_and_blocks_equals_naive) {
    const char *data = tu_path("b.h5");
    tu_make_blobs(data, 90, 5, 3, 4);
    infl_ctx *ctx = tu_ctx();
    infl_shapley_options o = infl_shapley_options_default();
    char train[512], valid[512];
    snprintf(train, sizeof train, "%s:/train", data);
    snprintf(valid, sizeof valid, "%s:/test[0:30]", data);
    o.train = train;
    o.valid = valid;
    o.method = INFL_SHAPLEY_KNN;
    o.knn_k = 4;
    o.shard_rows = 16;                       // 6 shards
    o.block_mb = 7 * 90 * 8 / 1048576.0;     // 7 validation points a block: 5 blocks
    o.curve_points = 4;
    o.curve_max = 0.6;
    o.threads = 2;
    infl_shapley_result *r = NULL;
    cr_assert_eq(infl_shapley(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    float *x, *vx;
    int32_t *y, *vy;
    int64_t n, d, M, d2;
    read_split(train, &x, &y, &n, &d);
    read_split(valid, &vx, &vy, &M, &d2);
    double *ref = calloc((size_t)n, sizeof(double)), s[90], u = 0;
    pair *pr = malloc(sizeof(pair) * n);
    uint8_t match[90];
    for (int64_t q = 0; q < M; q++) {
        for (int64_t i = 0; i < n; i++) {
            double t = 0;
            for (int64_t j = 0; j < d; j++) t += ((double)x[i * d + j] - vx[q * d + j]) * ((double)x[i * d + j] - vx[q * d + j]);
            pr[i] = (pair){(float)t, (int)i};
        }
        qsort(pr, (size_t)n, sizeof(pair), by_d);
        for (int64_t k = 0; k < n; k++) match[k] = y[pr[k].i] == vy[q];
        shap_knn_recursion(s, match, n, 4);
        for (int64_t k = 0; k < n; k++) ref[pr[k].i] += s[k] / M;
        for (int k = 0; k < 4; k++) u += match[k] / 4.0 / M;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        // float32 distances from a GEMM against exact squares: the order can differ at a near tie only
        cr_expect(fabs(r->values[i] - ref[i]) < 1e-9, "row %ld: streamed %.12f, naive %.12f", (long)i, r->values[i],
                  ref[i]);
        sum += r->values[i];
    }
    cr_assert(fabs(r->u_all - u) < 1e-12, "U(all) %g, naive %g", r->u_all, u);
    cr_assert(fabs(sum - r->u_all) < 1e-9, "efficiency: the values sum to %g, U(all) = %g", sum, r->u_all);
    cr_assert(r->curve_high[0] == r->curve_low[0] && r->curve_low[0] == r->curve_random[0]);
    for (int64_t k = 1; k < n; k++) cr_assert(r->values[r->order[k - 1]] <= r->values[r->order[k]]);
    // the removal curves: the 4-NN classifier without the lowest- (highest-) valued rows, naively
    int *removed = malloc(sizeof(int) * n);
    for (int side = 0; side < 2; side++)
        for (int j = 0; j < r->curve_points; j++) {
            int64_t cut = llround(r->curve_fraction[j] * n), right = 0;
            for (int64_t k = 0; k < n; k++) removed[k] = 0;
            for (int64_t k = 0; k < cut; k++) removed[r->order[side ? n - 1 - k : k]] = 1;
            for (int64_t q = 0; q < M; q++) {
                for (int64_t i = 0; i < n; i++) {
                    double t = 0;
                    for (int64_t c = 0; c < d; c++) t += ((double)x[i * d + c] - vx[q * d + c]) * ((double)x[i * d + c] - vx[q * d + c]);
                    pr[i] = (pair){(float)t, (int)i};
                }
                qsort(pr, (size_t)n, sizeof(pair), by_d);
                int votes[3] = {0}, got = 0, best = -1;
                for (int64_t k = 0; k < n && got < 4; k++) {
                    if (removed[pr[k].i]) continue;
                    int c = y[pr[k].i];
                    votes[c]++, got++;
                    if (best < 0 || votes[c] > votes[best]) best = c;
                }
                right += best == vy[q];
            }
            double want = (double)right / M, have = side ? r->curve_high[j] : r->curve_low[j];
            cr_expect(fabs(have - want) < 1e-12, "%s removed first, point %d: %g, naive %g",
                      side ? "highest" : "lowest", j, have, want);
        }
    free(removed);
    free(x), free(vx), free(y), free(vy), free(ref), free(pr);
    infl_shapley_result_free(r);
    infl_ctx_free(ctx);
}

Test(shapley, knn_on_a_runs_penultimate_features) {
    const char *data = tu_path("b.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 60, 4, 3, 2);
    char tref[512];
    snprintf(tref, sizeof tref, "%s:/train", data);
    const char *targv[] = {"infl", "train", "--data", tref, "--layers", "4,8,3", "--epochs", "1", "--batch", "16",
                           "-o", run, "-q", NULL};
    cr_assert_eq(tu_cli(targv), 0, "%s", tu_err());
    char valid[512];
    snprintf(valid, sizeof valid, "%s:/test", data);
    const char *argv[] = {"infl", "shapley", "--train", tref, "--valid", valid, "--method", "knn", "--k", "3",
                          "--run", run, "--curve-points", "0", "-q", NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "features ") && strstr(tu_out(), "(8)"), "%s", tu_out());
}

// The values of a pipeline run (tmc on 12 rows of blobs).
static infl_shapley_result *run_tmc(const char *data, const char *state, int perms, int threads) {
    infl_ctx *ctx = tu_ctx();
    infl_shapley_options o = infl_shapley_options_default();
    static char train[512], valid[512];
    snprintf(train, sizeof train, "%s:/train[0:12]", data);
    snprintf(valid, sizeof valid, "%s:/test", data);
    o.train = train;
    o.valid = valid;
    o.state = state;
    o.permutations = perms;
    o.converge = 0;
    o.window = 8;
    o.threads = threads;
    o.curve_points = 3;
    o.utility_loss = 1;
    o.newton_tol = 1e-10;
    o.tolerance = 0;
    infl_shapley_result *r = NULL;
    cr_assert_eq(infl_shapley(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return r;
}

Test(shapley, resumed_state_gives_the_uninterrupted_values) {
    const char *data = tu_path("b.h5"), *state = tu_path("s.h5");
    tu_make_blobs(data, 40, 4, 3, 6);
    infl_shapley_result *a = run_tmc(data, NULL, 24, 1);
    infl_shapley_result *b = run_tmc(data, state, 8, 2);
    cr_assert_eq(b->permutations, 8);
    infl_shapley_result_free(b);
    b = run_tmc(data, state, 24, 2);
    cr_assert_eq(b->permutations, 24);
    cr_assert_eq(b->permutations_now, 16);
    for (int64_t i = 0; i < a->n; i++)
        cr_assert(a->values[i] == b->values[i] && a->se[i] == b->se[i], "row %ld: %.17g vs %.17g", (long)i,
                  a->values[i], b->values[i]);
    cr_assert(a->curve_high[0] == a->curve_low[0] && a->curve_low[0] == a->curve_random[0]);
    cr_assert(fabs(a->sum - (a->u_all - a->u_empty)) < 1e-6, "the values sum to %.12g, U(all) - U(empty) = %.12g",
              a->sum, a->u_all - a->u_empty);
    infl_shapley_result_free(a);
    infl_shapley_result_free(b);
}

Test(shapley, cli_outputs_and_flipped_recall) {
    if (!tu_have_fmnist()) cr_skip_test("dataset-fashion-mnist is not installed");
    const char *data = tu_path("f.h5"), *out = tu_path("v.h5"), *csv = tu_path("v.csv"), *png = tu_path("v.png");
    tu_import_fm7(data, 300, 0.2, 3);
    char train[512], valid[512];
    snprintf(train, sizeof train, "%s:/train[0:120]", data);
    snprintf(valid, sizeof valid, "%s:/test[0:200]", data);
    const char *argv[] = {"infl", "shapley", "--train", train, "--valid", valid, "--method", "gshapley",
                          "--permutations", "6", "-o", out, "--csv", csv, "--png", png, "--curve-points", "3", NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "found among the lowest-valued 10%"), "%s", tu_out());
    cr_assert(strstr(tu_err(), "gshapley: 6 permutations: change over"), "%s", tu_err());
    cr_assert(tu_exists(out) && tu_exists(csv) && tu_exists(png));
    size_t len;
    char *text = tu_read_file(csv, &len);
    cr_assert(text && !strncmp(text, "rank,train_index,label,value,se,flipped\n", 40));
    free(text);
    // the outputs are not overwritten without --force
    cr_assert_eq(tu_cli(argv), 1);
    cr_assert(strstr(tu_err(), "exists"), "%s", tu_err());
}

// ---- bad input ----

Test(shapley, utility_split_with_one_class_is_a_clear_error) {
    const char *data = tu_path("b.h5");
    tu_make_blobs(data, 40, 4, 3, 6);
    char train[512], valid[512];
    snprintf(train, sizeof train, "%s:/train[0:8]", data);
    snprintf(valid, sizeof valid, "%s:/test[3:4]", data);  // one row: one class
    const char *argv[] = {"infl", "shapley", "--train", train, "--valid", valid, NULL};
    cr_assert_eq(tu_cli(argv), 1);
    cr_assert(strstr(tu_err(), "single class") && strstr(tu_err(), "/test[3:4]"), "%s", tu_err());
    snprintf(train, sizeof train, "%s:/train[0:20]", data);
    snprintf(valid, sizeof valid, "%s:/test", data);
    const char *argv2[] = {"infl", "shapley", "--train", train, "--valid", valid, "--method", "exact", NULL};
    cr_assert_eq(tu_cli(argv2), 1);
    cr_assert(strstr(tu_err(), "2^n subsets"), "%s", tu_err());
}
