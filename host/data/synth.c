/*
 * synth.c — `infl synth`: synthetic class-structured `dataset` files of any size (see
 * synth.h), written shard by shard through the store writer (host/store), so that
 * memory stays at one shard whatever N is and the file appears under its final name
 * only when complete.
 *
 * Every number is drawn from the counter-based generator keyed by (seed,
 * INFL_RNG_SYNTH, index, draw): one Philox call gives four normals, so column j of a
 * row takes draw 1 + j/4; labels take draw 0. Row indices of /test are offset by 2^62
 * and class means use indices from 2^63, so the three never share a counter.
 */
#define _POSIX_C_SOURCE 200809L
#include "synth.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "store/store.h"

#define SYNTH_TEST_BASE (1ull << 62)  // index of /test row 0
#define SYNTH_MEAN_BASE (1ull << 63)  // index of class mean 0
#define SYNTH_SHARD_BYTES (64u << 20)

infl_synth_options infl_synth_options_default(void) {
    infl_synth_options o;
    memset(&o, 0, sizeof o);
    o.n = 60000;
    o.d = 784;
    o.classes = 10;
    o.test = 100;
    o.seed = 1;
    o.separation = 4.0;
    o.shard_rows = 0;  // about 64 MiB of x
    o.force = 0;
    return o;
}

// ---- the generator ----

// Four standard normals from one counter (Box-Muller on both pairs of words).
static void normal4(uint64_t seed, uint64_t index, uint32_t draw, double out[4]) {
    infl_rng4 w = infl_rng_words(seed, INFL_RNG_SYNTH, index, draw);
    for (int p = 0; p < 2; p++) {
        double u1 = ((double)w.v[2 * p] + 1.0) * 0x1.0p-32;  // (0, 1]
        double u2 = (double)w.v[2 * p + 1] * 0x1.0p-32;      // [0, 1)
        double r = sqrt(-2.0 * log(u1)), t = 6.283185307179586 * u2;
        out[2 * p] = r * cos(t);
        out[2 * p + 1] = r * sin(t);
    }
}

// v (d) = scale · (normals of counter index, draws 1 ..) + base (base may be NULL).
static void normal_row(uint64_t seed, uint64_t index, int64_t d, double scale, const float *base, float *v) {
    double g[4];
    for (int64_t j0 = 0; j0 < d; j0 += 4) {
        normal4(seed, index, (uint32_t)(1 + j0 / 4), g);
        for (int64_t j = j0; j < j0 + 4 && j < d; j++)
            v[j] = (float)(scale * g[j - j0] + (base ? (double)base[j] : 0.0));
    }
}

void infl_synth_means(const infl_synth_options *o, float *mu) {
    // mu is (K, d): each coordinate N(0, s²) with s = separation / sqrt(2d), so the
    // distance between two means is about separation noise standard deviations
    double s = o->separation / sqrt(2.0 * (double)o->d);
    for (int k = 0; k < o->classes; k++)
        normal_row(o->seed, SYNTH_MEAN_BASE + (uint64_t)k, o->d, s, NULL, mu + (size_t)k * o->d);
}

void infl_synth_row(const infl_synth_options *o, const float *mu, int split, int64_t row, float *x, int32_t *y) {
    uint64_t index = (split ? SYNTH_TEST_BASE : 0) + (uint64_t)row;
    int32_t c = (int32_t)infl_rng_below(o->seed, INFL_RNG_SYNTH, index, 0, (uint64_t)o->classes);
    *y = c;
    normal_row(o->seed, index, o->d, 1.0, mu + (size_t)c * o->d, x);
}

// ---- the file ----

static infl_status check_options(infl_ctx *ctx, const infl_synth_options *o) {
    RETURN_IF(ctx, !o, INFL_E_ARG, "infl_synth: no options");
    RETURN_IF(ctx, o->n < 1, INFL_E_ARG, "--n: expected at least 1 training row, got %" PRId64, o->n);
    RETURN_IF(ctx, o->d < 1 || o->d > (1 << 24), INFL_E_ARG, "--d: expected 1 to %d features, got %" PRId64, 1 << 24,
              o->d);
    RETURN_IF(ctx, o->classes < 2 || o->classes > (1 << 20), INFL_E_ARG, "--classes: expected 2 to %d, got %d",
              1 << 20, o->classes);
    RETURN_IF(ctx, o->test < 0, INFL_E_ARG, "--test: expected 0 or more rows, got %" PRId64, o->test);
    RETURN_IF(ctx, o->n > (int64_t)(SYNTH_TEST_BASE / 2) || o->test > (int64_t)(SYNTH_TEST_BASE / 2), INFL_E_ARG,
              "--n / --test: too many rows");
    RETURN_IF(ctx, !(o->separation >= 0) || !isfinite(o->separation), INFL_E_ARG,
              "--separation: expected a finite value >= 0");
    RETURN_IF(ctx, o->shard_rows < 0, INFL_E_ARG, "shard rows: expected 0 (automatic) or more");
    RETURN_IF(ctx, (double)o->classes * (double)o->d > (double)(1 << 28), INFL_E_ARG,
              "--classes x --d = %g class-mean entries; at most %d", (double)o->classes * (double)o->d, 1 << 28);
    return INFL_OK;
}

infl_status infl_synth(infl_ctx *ctx, const infl_synth_options *o, const char *out_path) {
    FORWARD_IF_ERROR(check_options(ctx, o));
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "no output file (-o FILE.h5)");
    infl_status rc = INFL_OK;
    infl_dsw *w = NULL;
    float *mu = NULL, *x = NULL;
    int32_t *y = NULL;
    char **names = NULL;
    const int64_t d = o->d;
    int64_t S = o->shard_rows > 0 ? o->shard_rows : (int64_t)(SYNTH_SHARD_BYTES / (4 * (uint64_t)d));
    if (S < 1) S = 1;
    int64_t maxrows = o->n > o->test ? o->n : o->test;
    if (S > maxrows) S = maxrows;

    mu = infl_malloc(ctx, (size_t)o->classes * d * sizeof(float), "the class means");
    x = infl_malloc(ctx, (size_t)S * d * sizeof(float), "a shard of rows");
    y = infl_malloc(ctx, (size_t)S * sizeof(int32_t), "a shard of labels");
    names = infl_calloc(ctx, (size_t)o->classes, sizeof(char *), "class names");
    GOTO_NOMEM_IF(!mu || !x || !y || !names);
    for (int k = 0; k < o->classes; k++) {
        names[k] = infl_malloc(ctx, 16, "class names");
        GOTO_NOMEM_IF(!names[k]);
        snprintf(names[k], 16, "c%d", k);
    }
    infl_synth_means(o, mu);

    CHECK(store_dataset_create(ctx, out_path, o->force, &w));
    const char *splits[2] = {"train", "test"};
    const int64_t rows[2] = {o->n, o->test};
    for (int s = 0; s < 2; s++)
        if (rows[s] > 0) CHECK(store_dataset_add_split(ctx, w, splits[s], rows[s], d, INFL_Y_CLASS, 1, NULL));
    uint64_t done = 0, total = (uint64_t)(o->n + o->test);
    for (int s = 0; s < 2; s++)
        for (int64_t r0 = 0; r0 < rows[s]; r0 += S) {
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
            int64_t nb = r0 + S <= rows[s] ? S : rows[s] - r0;
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < nb; i++) infl_synth_row(o, mu, s, r0 + i, x + (size_t)i * d, y + i);
            CHECK(store_dataset_write_rows(ctx, w, splits[s], r0, nb, x, y, NULL));
            done += (uint64_t)nb;
            infl_progress(ctx, "synth", done, total, splits[s]);
        }
    CHECK(store_dataset_set_classes(ctx, w, (const char *const *)names, o->classes));
    char src[256];
    snprintf(src, sizeof src,
             "infl synth: n=%" PRId64 " test=%" PRId64 " d=%" PRId64 " classes=%d seed=%" PRIu64 " separation=%g",
             o->n, o->test, d, o->classes, o->seed, o->separation);
    CHECK(store_dataset_set_attr(ctx, w, "source", src));
    rc = store_dataset_commit(ctx, w);
    w = NULL;
done:
    store_dataset_abort(w);
    if (names)
        for (int k = 0; k < o->classes; k++) free(names[k]);
    free(names);
    free(mu);
    free(x);
    free(y);
    return rc;
}
