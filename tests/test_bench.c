/*
 * test_bench.c — `infl synth` (the synthetic dataset: shapes, labels, class structure,
 * determinism for a seed whatever the shard size) and `infl bench` (a tiny run whose
 * JSON has every phase with a positive time and a ratio to its ceiling in (0, 1.5]),
 * and the clear errors of bad input.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipelines/bench.h"
#include "data/synth.h"
#include "store/store.h"
#include "testutil.h"

#define CLI(...)                                           \
    ({                                                     \
        const char *argv_[] = {"infl", __VA_ARGS__, NULL}; \
        tu_cli(argv_);                                     \
    })

// Reads a whole split (x (n, d), y (n)), malloc'd; asserts on failure.
static void read_split(infl_ctx *ctx, const char *path, const char *split, int64_t *n, int64_t *d, float **x,
                       int32_t **y, int *n_classes) {
    infl_split *s = tu_open_split(ctx, tu_ref(3, path, split));
    const infl_split_info *in = store_split_info(s);
    cr_assert_eq(in->y_kind, INFL_Y_CLASS);
    *n = in->n;
    *d = in->d;
    *n_classes = in->n_classes;
    *x = malloc(sizeof(float) * (size_t)(*n * *d));
    *y = malloc(sizeof(int32_t) * (size_t)*n);
    cr_assert_eq(store_split_read(ctx, s, 0, *n, *x, *y, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    store_split_close(s);
}

// ---- synth ----

Test(synth, shapes_labels_and_class_structure) {
    infl_ctx *ctx = tu_ctx();
    infl_synth_options o = infl_synth_options_default();
    o.n = 1200;
    o.d = 40;
    o.classes = 4;
    o.test = 13;
    o.seed = 5;
    const char *path = tu_path("s.h5");
    cr_assert_eq(infl_synth(ctx, &o, path), INFL_OK, "%s", infl_ctx_error(ctx));
    int64_t n, d;
    float *x;
    int32_t *y;
    int k;
    read_split(ctx, path, "test", &n, &d, &x, &y, &k);
    cr_assert_eq(n, 13);
    cr_assert_eq(d, 40);
    free(x);
    free(y);
    read_split(ctx, path, "train", &n, &d, &x, &y, &k);
    cr_assert_eq(n, 1200);
    cr_assert_eq(d, 40);
    cr_assert_eq(k, 4, "/classes has %d names", k);
    // every class present, roughly balanced; every value finite
    int count[4] = {0};
    for (int64_t i = 0; i < n; i++) {
        cr_assert(y[i] >= 0 && y[i] < 4, "label %d", y[i]);
        count[y[i]]++;
    }
    for (int c = 0; c < 4; c++) cr_assert(count[c] > 200 && count[c] < 400, "class %d has %d rows", c, count[c]);
    // class structure: the nearest class mean (estimated from the first half) labels
    // the second half well; noise alone would give 25%
    double mean[4][40] = {{0}};
    int cnt[4] = {0};
    for (int64_t i = 0; i < n / 2; i++) {
        cnt[y[i]]++;
        for (int j = 0; j < d; j++) mean[y[i]][j] += x[i * d + j];
    }
    for (int c = 0; c < 4; c++)
        for (int j = 0; j < d; j++) mean[c][j] /= cnt[c];
    int right = 0;
    for (int64_t i = n / 2; i < n; i++) {
        int best = 0;
        double bd = INFINITY;
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += (x[i * d + j] - mean[c][j]) * (x[i * d + j] - mean[c][j]);
            if (s < bd) bd = s, best = c;
        }
        right += best == y[i];
    }
    cr_assert(right > 0.8 * (n / 2), "nearest class mean labels %d of %d", right, (int)(n / 2));
    // the noise has unit variance around the means
    double v = 0;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double e = x[i * d + j] - mean[y[i]][j];
            v += e * e;
        }
    v /= (double)(n * d);
    cr_assert(v > 0.85 && v < 1.2, "noise variance %g", v);
    free(x);
    free(y);
    infl_ctx_free(ctx);
}

Test(synth, deterministic_for_a_seed_whatever_the_shard) {
    infl_ctx *ctx = tu_ctx();
    infl_synth_options o = infl_synth_options_default();
    o.n = 777;
    o.d = 9;  // not a multiple of the 4 normals a counter gives
    o.classes = 3;
    o.test = 5;
    o.seed = 42;
    const char *paths[3] = {tu_path("a.h5"), tu_path("b.h5"), tu_path("c.h5")};
    const int64_t shards[3] = {64, 1000, 1};
    for (int f = 0; f < 3; f++) {
        o.shard_rows = shards[f];
        cr_assert_eq(infl_synth(ctx, &o, paths[f]), INFL_OK, "%s", infl_ctx_error(ctx));
    }
    float *mu = malloc(sizeof(float) * 3 * 9), row[9];
    infl_synth_means(&o, mu);
    for (int s = 0; s < 2; s++) {
        const char *split = s ? "test" : "train";
        int64_t n[3], d;
        float *x[3];
        int32_t *y[3];
        int k;
        for (int f = 0; f < 3; f++) read_split(ctx, paths[f], split, &n[f], &d, &x[f], &y[f], &k);
        for (int f = 1; f < 3; f++) {
            cr_assert_eq(n[f], n[0]);
            cr_assert_eq(memcmp(x[f], x[0], sizeof(float) * (size_t)(n[0] * d)), 0, "x differs with the shard size");
            cr_assert_eq(memcmp(y[f], y[0], sizeof(int32_t) * (size_t)n[0]), 0, "y differs with the shard size");
        }
        // the file holds what the row generator gives
        for (int64_t i = 0; i < n[0]; i += 97) {
            int32_t yy;
            infl_synth_row(&o, mu, s, i, row, &yy);
            cr_assert_eq(yy, y[0][i]);
            cr_assert_eq(memcmp(row, x[0] + i * d, sizeof row), 0);
        }
        for (int f = 0; f < 3; f++) {
            free(x[f]);
            free(y[f]);
        }
    }
    // another seed, other data
    o.seed = 43;
    o.shard_rows = 0;
    const char *other = tu_path("d.h5");
    cr_assert_eq(infl_synth(ctx, &o, other), INFL_OK);
    int64_t n1, n2, d;
    float *x1, *x2;
    int32_t *y1, *y2;
    int k;
    read_split(ctx, paths[0], "train", &n1, &d, &x1, &y1, &k);
    read_split(ctx, other, "train", &n2, &d, &x2, &y2, &k);
    cr_assert_neq(memcmp(x1, x2, sizeof(float) * (size_t)(n1 * d)), 0);
    free(x1), free(x2), free(y1), free(y2), free(mu);
    infl_ctx_free(ctx);
}

Test(synth, cli_and_bad_input) {
    const char *out = tu_path("cli.h5");
    cr_assert_eq(CLI("synth", "-o", out, "--n", "300", "--d", "6", "--classes", "3", "--test", "7", "--seed", "2"), 0,
                 "%s", tu_err());
    cr_assert(strstr(tu_out(), "300") != NULL, "%s", tu_out());
    cr_assert_eq(CLI("info", out), 0);
    cr_assert(strstr(tu_out(), "infl synth") != NULL, "%s", tu_out());
    // the output exists: refused without --force (exit 1, the file untouched), replaced with it
    cr_assert_eq(CLI("synth", "-o", out, "--n", "10", "--d", "6"), 1);
    cr_assert(strstr(tu_err(), "exists") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("synth", "-o", out, "--n", "10", "--d", "6", "--force"), 0, "%s", tu_err());
    // usage errors: exit 2 and a message naming the option
    cr_assert_eq(CLI("synth", "-o", tu_path("z.h5"), "--n", "0"), 2);
    cr_assert(strstr(tu_err(), "--n") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("synth", "-o", tu_path("z.h5"), "--classes", "1"), 2);
    cr_assert(strstr(tu_err(), "--classes") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("synth", "-o", tu_path("z.h5"), "--d", "many"), 2);
    cr_assert_eq(CLI("synth", "--n", "5"), 2);
    cr_assert(strstr(tu_err(), "-o") != NULL, "%s", tu_err());
    cr_assert(!tu_exists(tu_path("z.h5")));
    // the library refuses too
    infl_ctx *ctx = tu_ctx();
    infl_synth_options o = infl_synth_options_default();
    o.n = 0;
    cr_assert_eq(infl_synth(ctx, &o, tu_path("z.h5")), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "--n") != NULL);
    infl_ctx_free(ctx);
}

// ---- bench ----

// The number after `"key": ` in text, from `from` on; NAN when absent.
static double json_num(const char *from, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(from, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

Test(bench, tiny_run_reports_every_phase, .timeout = 60) {
    const char *json = tu_path("bench.json");
    cr_assert_eq(CLI("bench", "--backend", "cpu", "--model", "12,8,3", "--n", "2500", "--queries", "3", "--reps", "3",
                     "--checkpoints", "2", "--rows", "1024", "--hessian-samples", "200", "--cg-iters", "2", "--json",
                     json, "--workdir", tu_tmpdir()),
                 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "| phase |") != NULL, "%s", tu_out());
    cr_assert(strstr(tu_out(), "sgemm 2048") != NULL, "%s", tu_out());
    char *j = tu_read_file(json, NULL);
    cr_assert(j, "no JSON written");
    cr_assert(json_num(j, "sgemm_2048_gflops") > 0, "%s", j);
    cr_assert(json_num(j, "hdf5_read_gbs") > 0, "%s", j);
    cr_assert_eq(json_num(j, "n"), 2500);
    // every phase, with a positive time, positive work and a ratio in (0, 1.5]
    char names[512];
    infl_bench_phase_names(names, sizeof names);
    int seen = 0;
    for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char pat[64];
        snprintf(pat, sizeof pat, "\"name\": \"%s\"", t);
        const char *p = strstr(j, pat);
        cr_assert(p, "phase %s missing from the JSON: %s", t, j);
        double s = json_num(p, "seconds"), r = json_num(p, "ratio"), fl = json_num(p, "flops"),
               by = json_num(p, "bytes");
        cr_assert(s > 0 && isfinite(s), "%s: seconds %g", t, s);
        cr_assert(fl > 0 || by > 0, "%s: no work counted", t);
        cr_assert(r > 0 && r <= 1.5, "%s: ratio to its ceiling %g", t, r);
        cr_assert(strstr(tu_out(), t) != NULL, "phase %s missing from the table", t);
        seen++;
    }
    cr_assert_geq(seen, 7);
    free(j);
    // the temporary data and run files are gone: only the JSON (and the CLI's capture files) remain
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c infl-bench", tu_tmpdir());
    FILE *ls = popen(cmd, "r");
    int left = -1;
    cr_assert(ls && fscanf(ls, "%d", &left) == 1);
    pclose(ls);
    cr_assert_eq(left, 0, "temporary files left in %s", tu_tmpdir());
}

Test(bench, phases_and_data_options) {
    // a given data file and a subset of phases
    const char *data = tu_path("d.h5");
    cr_assert_eq(CLI("synth", "-o", data, "--n", "1500", "--d", "10", "--classes", "4", "--test", "5"), 0);
    cr_assert_eq(CLI("bench", "--data", data, "--model", "10,6,4", "--queries", "5", "--reps", "1", "--checkpoints",
                     "1", "--phases", "graddot,topk", "--workdir", tu_tmpdir()),
                 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "`graddot`") != NULL, "%s", tu_out());
    cr_assert(strstr(tu_out(), "`topk`") != NULL, "%s", tu_out());
    cr_assert(strstr(tu_out(), "`tracin`") == NULL, "%s", tu_out());
    cr_assert(strstr(tu_out(), "N = 1,500") != NULL, "%s", tu_out());
    // the model does not fit the data: a clear error
    cr_assert_eq(CLI("bench", "--data", data, "--model", "12,6,4", "--queries", "5", "--reps", "1", "--workdir",
                     tu_tmpdir()),
                 1);
    cr_assert(strstr(tu_err(), "12") != NULL && strstr(tu_err(), "10") != NULL, "%s", tu_err());
    // more queries than /test has
    cr_assert_eq(CLI("bench", "--data", data, "--model", "10,6,4", "--queries", "6", "--reps", "1", "--workdir",
                     tu_tmpdir()),
                 1);
    cr_assert(strstr(tu_err(), "test") != NULL, "%s", tu_err());
}

Test(bench, bad_input) {
    const char *wd = tu_tmpdir();
    cr_assert_eq(CLI("bench", "--n", "0"), 2);
    cr_assert(strstr(tu_err(), "--n") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("bench", "--model", "784"), 2);
    cr_assert(strstr(tu_err(), "--model") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("bench", "--model", "784,abc,10"), 2);
    cr_assert_eq(CLI("bench", "--model", "784,0,10"), 2);
    cr_assert_eq(CLI("bench", "--reps", "0"), 2);
    cr_assert_eq(CLI("bench", "--queries", "0"), 2);
    cr_assert_eq(CLI("bench", "--bogus"), 2);
    // an existing JSON without --force: refused before any work
    const char *json = tu_path("exists.json");
    tu_write_file(json, "{}", 2);
    cr_assert_eq(CLI("bench", "--model", "4,3,2", "--n", "100", "--json", json, "--workdir", wd), 1);
    cr_assert(strstr(tu_err(), "exists") != NULL, "%s", tu_err());
    char *j = tu_read_file(json, NULL);
    cr_assert_str_eq(j, "{}");
    free(j);
    // an unknown phase names the known ones
    cr_assert_eq(CLI("bench", "--model", "4,3,2", "--n", "100", "--phases", "tracin,warp", "--workdir", wd), 1);
    cr_assert(strstr(tu_err(), "warp") != NULL && strstr(tu_err(), "if_score") != NULL, "%s", tu_err());
    // a data file that is not there
    cr_assert_eq(CLI("bench", "--data", tu_path("none.h5"), "--model", "4,3,2", "--workdir", wd), 1);
    cr_assert(strstr(tu_err(), "none.h5") != NULL, "%s", tu_err());
    // no CUDA backend in a CPU-only build (or no device): a clear error, not a crash
    if (!strstr(infl_build_info(), "cuda")) {
        cr_assert_eq(CLI("bench", "--backend", "cuda", "--model", "4,3,2", "--n", "100", "--workdir", wd), 1);
        cr_assert(strstr(tu_err(), "error") != NULL, "%s", tu_err());
    }
}

// ---- a language model's attribution (--run gpt.h5) ----

// No .timeout of its own (ctest's bounds it): Criterion 2.4's runner leaks a timeout
// entry (48 bytes, LeakSanitizer fails the program) when tests with different timeouts
// run in parallel workers.
Test(bench, gpt_run_reports_every_phase_and_both_forms) {
    // a tiny GPT on a few hundred short documents
    const char *txt = tu_path("lm.txt"), *data = tu_path("lm.h5"), *run = tu_path("lm_gpt.h5"),
               *json = tu_path("lm.json");
    FILE *f = fopen(txt, "w");
    cr_assert(f);
    const char *words[] = {"cat", "dog ran far", "sun", "tea is hot", "we", "it is late at night again"};
    uint64_t st = 3;
    for (int i = 0; i < 200; i++) {
        int n = 1 + (int)(tu_uniform(&st) * 3);
        for (int j = 0; j < n; j++) fprintf(f, "%s%s", j ? " " : "", words[(int)(tu_uniform(&st) * 6)]);
        fprintf(f, "\n");
    }
    fclose(f);
    cr_assert_eq(CLI("import", "text", txt, "--sep", "line", "-o", data, "--force", "-q"), 0, "%s", tu_err());
    cr_assert_eq(CLI("train", "--model", "gpt", "--data", tu_ref(0, data, "train"), "--layers", "1", "--heads", "2",
                     "--dim", "8", "--context", "16", "--epochs", "1", "--batch", "8", "-o", run, "--force", "-q"),
                 0, "%s", tu_err());
    cr_assert_eq(CLI("bench", "--backend", "cpu", "--run", run, "--data", tu_ref(1, data, "train"), "--n", "150",
                     "--rows", "100", "--queries", "3", "--reps", "1", "--json", json, "--workdir", tu_tmpdir()),
                 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "tokens/s") != NULL, "%s", tu_out());
    cr_assert(strstr(tu_out(), "N = 150 documents") != NULL, "%s", tu_out());
    char *j = tu_read_file(json, NULL);
    cr_assert(j, "no JSON written");
    char names[512];
    infl_bench_lm_phase_names(names, sizeof names);
    int seen = 0;
    for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char pat[64];
        snprintf(pat, sizeof pat, "\"name\": \"%s\"", t);
        const char *p = strstr(j, pat);
        cr_assert(p, "phase %s missing from the JSON: %s", t, j);
        double s = json_num(p, "seconds"), r = json_num(p, "ratio"), fl = json_num(p, "flops");
        cr_assert(s > 0 && isfinite(s), "%s: seconds %g", t, s);
        cr_assert(fl > 0, "%s: no work counted", t);
        // a ratio, not a speed: tiny shapes on a shared machine put it anywhere above 0
        cr_assert(r > 0 && isfinite(r), "%s: ratio to its ceiling %g", t, r);
        seen++;
    }
    cr_assert_geq(seen, 10);
    // every layer (4 linear layers of one block) of both families timed in both forms, the pick named
    int layers = 0;
    for (const char *p = strstr(j, "\"family\""); p; p = strstr(p + 1, "\"family\"")) {
        cr_assert(json_num(p, "rows_seconds") > 0 && json_num(p, "docs_seconds") > 0, "%.300s", p);
        cr_assert(json_num(p, "rows_ceiling_seconds") > 0 && json_num(p, "docs_ceiling_seconds") > 0, "%.300s", p);
        cr_assert(strstr(p, "\"chosen\": \"rows\"") == strstr(p, "\"chosen\"") ||
                      strstr(p, "\"chosen\": \"docs\"") == strstr(p, "\"chosen\""),
                  "%.300s", p);
        layers++;
    }
    cr_assert_eq(layers, 8, "%s", j);
    cr_assert(strstr(tu_out(), "picked right") != NULL, "%s", tu_out());
    free(j);
    // a run that is not a language model: a clear error
    const char *blobs = tu_path("blobs.h5"), *mlp = tu_path("mlp.h5");
    cr_assert_eq(CLI("synth", "-o", blobs, "--n", "200", "--d", "4", "--classes", "2", "--test", "4", "-q"), 0);
    cr_assert_eq(CLI("train", "--data", tu_ref(2, blobs, "train"), "--layers", "4,3,2", "--epochs", "1", "-o", mlp,
                     "--force", "-q"),
                 0, "%s", tu_err());
    cr_assert_eq(CLI("bench", "--run", mlp, "--reps", "1", "--workdir", tu_tmpdir()), 1);
    cr_assert(strstr(tu_err(), "gpt") != NULL, "%s", tu_err());
}
