/*
 * test_sched.c — the scheduler's parts (host/sched/): the running top-k against a
 * full sort of every score, for many streams cut into blocks every which way (ties
 * included); non-finite scores refused with the query and the index named; the shard
 * reader thread against one store_split_read of everything (every shard size, ring
 * size and row range), stopped mid-stream, cancelled, failing on a bad row, under
 * slow and fast consumers, while the main thread uses the store too; and its memory,
 * counted through the allocator it is given.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "infl.h"
#include "sched/reader.h"
#include "sched/topk.h"
#include "store/h5util.h"
#include "store/store.h"
#include "testutil.h"

static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
TestSuite(topk);
TestSuite(reader, .init = silence_hdf5, .timeout = 120);

#define ASSERT_OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s", #expr, infl_ctx_error(ctx))
#define ASSERT_ERR(ctx, expr, st, needle)                                                         \
    do {                                                                                          \
        infl_status got_ = (expr);                                                                \
        cr_assert_eq(got_, (st), "%s: got %s (%s), expected %s", #expr, infl_status_name(got_),   \
                     infl_ctx_error(ctx), #st);                                                   \
        ASSERT_HAS(ctx, needle);                                                                  \
    } while (0)
#define ASSERT_HAS(ctx, needle)                                                                   \
    cr_assert(strstr(infl_ctx_error(ctx), (needle)) != NULL, "detail '%s' lacks '%s'",            \
              infl_ctx_error(ctx), (needle))

// ---- top-k: the oracle ----

typedef struct {
    float s;
    int64_t i;
} scored;

// Descending score, ties by the smaller index.
static int cmp_desc(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}
// Ascending score, ties by the smaller index.
static int cmp_asc(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->s != b->s) return a->s < b->s ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

// Fills all (M, N) with scores: `levels` > 0 quantises them to that many values (many
// ties, zero included, with both signs of zero), else continuous.
static void make_scores(float *all, int M, int N, int levels, uint64_t seed) {
    uint64_t st = seed;
    for (int64_t i = 0; i < (int64_t)M * N; i++) {
        double u = tu_uniform(&st);
        if (levels > 0) {
            int l = (int)(u * levels);
            float v = (float)(l - levels / 2) * 0.5f;
            if (v == 0 && tu_uniform(&st) < 0.5) v = -0.0f;
            all[i] = v;
        } else {
            all[i] = (float)(2 * u - 1) * 1e3f;
        }
    }
}

// Checks t's results for every query against a full sort of all (M, N).
static void check_against_sort(const infl_topk *t, const float *all, int M, int N, int k, const char *what) {
    int want = k < N ? k : N;
    scored *ref = malloc(sizeof *ref * (size_t)N);
    int64_t *ti = malloc(sizeof(int64_t) * (size_t)k), *bi = malloc(sizeof(int64_t) * (size_t)k);
    float *ts = malloc(sizeof(float) * (size_t)k), *bs = malloc(sizeof(float) * (size_t)k);
    for (int q = 0; q < M; q++) {
        int count = -1;
        infl_topk_get(t, q, ti, ts, bi, bs, &count);
        cr_assert_eq(count, want, "%s: query %d: count %d, expected %d", what, q, count, want);
        for (int j = 0; j < N; j++) ref[j] = (scored){all[(size_t)q * N + j], j};
        qsort(ref, (size_t)N, sizeof *ref, cmp_desc);
        for (int r = 0; r < want; r++)
            cr_assert(ti[r] == ref[r].i && ts[r] == ref[r].s,
                      "%s: query %d top rank %d: got (%" PRId64 ", %g), expected (%" PRId64 ", %g)", what, q, r, ti[r],
                      ts[r], ref[r].i, ref[r].s);
        qsort(ref, (size_t)N, sizeof *ref, cmp_asc);
        for (int r = 0; r < want; r++)
            cr_assert(bi[r] == ref[r].i && bs[r] == ref[r].s,
                      "%s: query %d bottom rank %d: got (%" PRId64 ", %g), expected (%" PRId64 ", %g)", what, q, r,
                      bi[r], bs[r], ref[r].i, ref[r].s);
    }
    free(ref);
    free(ti);
    free(bi);
    free(ts);
    free(bs);
}

// Pushes all (M, N) in blocks of nb columns, copied into a buffer with ld = nb + 3
// (so that ld is honoured), in stream order or reversed.
static void push_blocks(infl_ctx *ctx, infl_topk *t, const float *all, int M, int N, int nb, int reverse) {
    int ld = nb + 3;
    float *blk = malloc(sizeof(float) * (size_t)M * (size_t)ld);
    int nblocks = (N + nb - 1) / nb;
    for (int b = 0; b < nblocks; b++) {
        int bb = reverse ? nblocks - 1 - b : b;
        int j0 = bb * nb, w = N - j0 < nb ? N - j0 : nb;
        for (int q = 0; q < M; q++) {
            memcpy(blk + (size_t)q * ld, all + (size_t)q * N + j0, sizeof(float) * (size_t)w);
            for (int j = w; j < ld; j++) blk[(size_t)q * ld + j] = NAN;  // padding must never be read
        }
        ASSERT_OK(ctx, infl_topk_push(ctx, t, blk, M, w, ld, j0));
    }
    free(blk);
}

// ---- top-k: against a full sort ----

typedef struct {
    int M, N;
    int levels;  // 0: continuous scores; else quantised to this many values
} topk_case;

ParameterizedTestParameters(topk, matches_full_sort) {
    static topk_case cases[] = {
        {1, 1, 0},    {1, 50, 0},   {3, 50, 0},  {17, 50, 0},  {1, 64, 4},   {3, 100, 3},  {17, 100, 7},
        {3, 1, 2},    {17, 2500, 0}, {17, 2500, 5}, {3, 2500, 2}, {1, 777, 1},
    };
    return cr_make_param_array(topk_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(const topk_case *c, topk, matches_full_sort) {
    infl_ctx *ctx = tu_ctx();
    int M = c->M, N = c->N;
    float *all = malloc(sizeof(float) * (size_t)M * (size_t)N);
    int ks[] = {1, 5, N, N + 3};
    int blocks[] = {1, 7, 64, N};
    for (int seed = 1; seed <= 3; seed++) {
        make_scores(all, M, N, c->levels, (uint64_t)(seed * 1000 + M * 31 + N));
        for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
            for (size_t ib = 0; ib < sizeof blocks / sizeof blocks[0]; ib++) {
                for (int rev = 0; rev < 2; rev++) {
                    if (N > 1000 && blocks[ib] == 1 && ks[ik] > 5) continue;  // O(N k log k) but slow in ASan
                    char what[160];
                    snprintf(what, sizeof what, "M=%d N=%d levels=%d seed=%d k=%d block=%d%s", M, N, c->levels,
                             seed, ks[ik], blocks[ib], rev ? " reversed" : "");
                    infl_topk *t = NULL;
                    ASSERT_OK(ctx, infl_topk_create(ctx, M, ks[ik], &t));
                    cr_assert_eq(infl_topk_k(t), ks[ik]);
                    cr_assert_eq(infl_topk_m(t), M);
                    push_blocks(ctx, t, all, M, N, blocks[ib], rev);
                    cr_assert_eq(infl_topk_seen(t), N, "%s: seen", what);
                    check_against_sort(t, all, M, N, ks[ik], what);
                    infl_topk_free(t);
                }
            }
        }
    }
    free(all);
    infl_ctx_free(ctx);
}

// Neither block boundaries nor block order change the result: random cuts pushed in
// random order, compared entry for entry.
Test(topk, same_result_for_every_blocking) {
    infl_ctx *ctx = tu_ctx();
    int M = 5, N = 3000, k = 40;
    float *all = malloc(sizeof(float) * (size_t)M * N);
    make_scores(all, M, N, 9, 42);
    int64_t ref_ti[5 * 40], ref_bi[5 * 40], ti[40], bi[40];
    float ref_ts[5 * 40], ref_bs[5 * 40], ts[40], bs[40];
    uint64_t st = 7;
    for (int trial = 0; trial < 20; trial++) {
        infl_topk *t = NULL;
        ASSERT_OK(ctx, infl_topk_create(ctx, M, k, &t));
        // cut [0, N) at random, then push the blocks in a random order
        int cut[3001], nblk = 0;
        for (int j0 = 0; j0 < N;) {
            int w = trial == 0 ? N : 1 + (int)(tu_uniform(&st) * 300);
            if (w > N - j0) w = N - j0;
            cut[nblk++] = j0;
            j0 += w;
        }
        cut[nblk] = N;
        int order[3000];
        for (int b = 0; b < nblk; b++) order[b] = b;
        for (int b = nblk - 1; b > 0 && trial > 0; b--) {
            int o = (int)(tu_uniform(&st) * (b + 1)), tmp = order[b];
            order[b] = order[o];
            order[o] = tmp;
        }
        float *blk = malloc(sizeof(float) * (size_t)M * N);
        for (int b = 0; b < nblk; b++) {
            int j0 = cut[order[b]], w = cut[order[b] + 1] - j0;
            for (int q = 0; q < M; q++) memcpy(blk + (size_t)q * w, all + (size_t)q * N + j0, sizeof(float) * w);
            ASSERT_OK(ctx, infl_topk_push(ctx, t, blk, M, w, w, j0));
        }
        free(blk);
        for (int q = 0; q < M; q++) {
            int count;
            if (trial == 0) {
                infl_topk_get(t, q, ref_ti + q * k, ref_ts + q * k, ref_bi + q * k, ref_bs + q * k, &count);
                cr_assert_eq(count, k);
                continue;
            }
            infl_topk_get(t, q, ti, ts, bi, bs, &count);
            cr_assert_eq(count, k);
            cr_assert(memcmp(ti, ref_ti + q * k, sizeof ti) == 0, "trial %d query %d: top indices differ", trial, q);
            cr_assert(memcmp(ts, ref_ts + q * k, sizeof ts) == 0, "trial %d query %d: top scores differ", trial, q);
            cr_assert(memcmp(bi, ref_bi + q * k, sizeof bi) == 0, "trial %d query %d: bottom indices differ", trial,
                      q);
            cr_assert(memcmp(bs, ref_bs + q * k, sizeof bs) == 0, "trial %d query %d: bottom scores differ", trial,
                      q);
        }
        infl_topk_free(t);
    }
    free(all);
    infl_ctx_free(ctx);
}

// All scores equal: the order is the index order on both sides.
Test(topk, all_tied_ranks_by_index) {
    infl_ctx *ctx = tu_ctx();
    infl_topk *t = NULL;
    ASSERT_OK(ctx, infl_topk_create(ctx, 2, 4, &t));
    float blk[2 * 10];
    for (int i = 0; i < 20; i++) blk[i] = 1.5f;
    ASSERT_OK(ctx, infl_topk_push(ctx, t, blk, 2, 10, 10, 100));  // indices 100..109, then 0..9
    ASSERT_OK(ctx, infl_topk_push(ctx, t, blk, 2, 10, 10, 0));
    int64_t ti[4], bi[4];
    int count;
    infl_topk_get(t, 1, ti, NULL, bi, NULL, &count);
    cr_assert_eq(count, 4);
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(ti[r], r, "top rank %d: index %" PRId64, r, ti[r]);
        cr_assert_eq(bi[r], r, "bottom rank %d: index %" PRId64, r, bi[r]);
    }
    infl_topk_free(t);
    infl_ctx_free(ctx);
}

Test(topk, counts_and_partial_outputs) {
    infl_ctx *ctx = tu_ctx();
    infl_topk *t = NULL;
    ASSERT_OK(ctx, infl_topk_create(ctx, 1, 5, &t));
    int count = -1;
    infl_topk_get(t, 0, NULL, NULL, NULL, NULL, &count);
    cr_assert_eq(count, 0, "nothing pushed: count %d", count);
    float s[3] = {2, -1, 7};
    ASSERT_OK(ctx, infl_topk_push(ctx, t, s, 1, 3, 3, 10));
    ASSERT_OK(ctx, infl_topk_push(ctx, t, s, 1, 0, 0, 13));  // empty block
    float ts[5] = {0}, bs[5] = {0};
    int64_t bi[5] = {0};
    infl_topk_get(t, 0, NULL, ts, bi, bs, &count);
    cr_assert_eq(count, 3);
    cr_assert(ts[0] == 7 && ts[1] == 2 && ts[2] == -1);
    cr_assert(bi[0] == 11 && bi[1] == 10 && bi[2] == 12);
    cr_assert(bs[0] == -1 && bs[1] == 2 && bs[2] == 7);
    infl_topk_get(t, 1, NULL, ts, NULL, NULL, &count);  // no such query
    cr_assert_eq(count, 0);
    infl_topk_free(t);
    infl_topk_free(NULL);
    infl_ctx_free(ctx);
}

Test(topk, rejects_bad_arguments) {
    infl_ctx *ctx = tu_ctx();
    infl_topk *t = NULL;
    ASSERT_ERR(ctx, infl_topk_create(ctx, 0, 5, &t), INFL_E_ARG, "M = 0");
    cr_assert_null(t);
    ASSERT_ERR(ctx, infl_topk_create(ctx, 3, 0, &t), INFL_E_ARG, "k = 0");
    ASSERT_OK(ctx, infl_topk_create(ctx, 3, 2, &t));
    float s[6] = {0};
    ASSERT_ERR(ctx, infl_topk_push(ctx, t, s, 2, 3, 3, 0), INFL_E_SHAPE, "2 query rows");
    ASSERT_ERR(ctx, infl_topk_push(ctx, t, s, 3, 3, 2, 0), INFL_E_ARG, "ld = 2");
    ASSERT_ERR(ctx, infl_topk_push(ctx, t, s, 3, 2, 2, -1), INFL_E_ARG, "first index -1");
    infl_topk_free(t);
    infl_ctx_free(ctx);
}

// NaN and ±Inf: INFL_E_NUMERIC naming the query and the training index; the block is
// not merged (the results before it stand).
typedef struct {
    float bad;
    int M, nb;      // nb large enough for the OpenMP path in one case
    char name[8];   // inline: Criterion's workers may not share the parent's addresses
} bad_case;

ParameterizedTestParameters(topk, non_finite_is_numeric_error) {
    static bad_case cases[] = {
        {NAN, 3, 10, "NaN"}, {INFINITY, 3, 10, "+Inf"}, {-INFINITY, 3, 10, "-Inf"}, {NAN, 17, 4000, "NaN"},
    };
    return cr_make_param_array(bad_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(const bad_case *c, topk, non_finite_is_numeric_error) {
    infl_ctx *ctx = tu_ctx();
    int M = c->M, nb = c->nb;
    infl_topk *t = NULL;
    ASSERT_OK(ctx, infl_topk_create(ctx, M, 2, &t));
    float *s = malloc(sizeof(float) * (size_t)M * nb);
    for (int i = 0; i < M * nb; i++) s[i] = (float)(i % 13);
    ASSERT_OK(ctx, infl_topk_push(ctx, t, s, M, nb, nb, 0));
    int64_t before[2], after[2];
    infl_topk_get(t, 2, before, NULL, NULL, NULL, NULL);
    // the first bad value in row-major order is (query 2, column 7); a later one too
    float *s2 = malloc(sizeof(float) * (size_t)M * nb);
    for (int i = 0; i < M * nb; i++) s2[i] = 1e6f;
    s2[2 * nb + 7] = c->bad;
    s2[(M - 1) * nb + nb - 1] = c->bad;
    ASSERT_ERR(ctx, infl_topk_push(ctx, t, s2, M, nb, nb, 1000), INFL_E_NUMERIC, "training example 1007");
    ASSERT_HAS(ctx, "query 2");
    ASSERT_HAS(ctx, c->name);
    cr_assert_eq(infl_topk_seen(t), nb, "a refused block was counted");
    infl_topk_get(t, 2, after, NULL, NULL, NULL, NULL);
    cr_assert(before[0] == after[0] && before[1] == after[1], "a refused block changed the results");
    free(s);
    free(s2);
    infl_topk_free(t);
    infl_ctx_free(ctx);
}

// ---- reader: fixtures ----

#define RN 1000
#define RD 6

typedef struct {
    float *x;     // (n, d)
    int32_t *y;   // (n) or NULL
    float *yf;    // (n, k) or NULL
    int64_t n, d, k;
} whole;

// Reads the whole selected range of `ref` in one store_split_read.
static whole read_whole(infl_ctx *ctx, const char *ref) {
    infl_split *s = tu_open_split(ctx, ref);
    const infl_split_info *in = store_split_info(s);
    whole w = {0};
    w.n = in->n;
    w.d = in->d;
    w.k = in->k;
    w.x = malloc(sizeof(float) * (size_t)(w.n * w.d));
    if (in->y_kind == INFL_Y_CLASS)
        w.y = malloc(sizeof(int32_t) * (size_t)w.n);
    else
        w.yf = malloc(sizeof(float) * (size_t)(w.n * w.k));
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, w.n, w.x, w.y, w.yf));
    store_split_close(s);
    return w;
}

static void whole_free(whole *w) {
    free(w->x);
    free(w->y);
    free(w->yf);
}

// Consumes the whole stream of r, checking that it is rows [begin, end) of w in
// order; usleep_us per shard plays a slow consumer.
static void consume_and_check(infl_ctx *ctx, infl_reader *r, const whole *w, int64_t begin, int64_t end,
                              int64_t shard_rows, long sleep_us, const char *what) {
    int64_t row = begin;
    for (;;) {
        infl_shard *sh = NULL;
        ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
        cr_assert_not_null(sh);
        if (sh->n == 0) break;
        int64_t want = end - row < shard_rows ? end - row : shard_rows;
        cr_assert_eq(sh->row0, row, "%s: shard starts at row %" PRId64 ", expected %" PRId64, what, sh->row0, row);
        cr_assert_eq(sh->n, want, "%s: shard at %" PRId64 " has %" PRId64 " rows, expected %" PRId64, what, row,
                     sh->n, want);
        cr_assert(memcmp(sh->x, w->x + row * w->d, sizeof(float) * (size_t)(sh->n * w->d)) == 0,
                  "%s: x of rows %" PRId64 "..%" PRId64 " differ", what, row, row + sh->n);
        if (w->y) {
            cr_assert_not_null(sh->y);
            cr_assert_null(sh->yf);
            cr_assert(memcmp(sh->y, w->y + row, sizeof(int32_t) * (size_t)sh->n) == 0, "%s: y differs at %" PRId64,
                      what, row);
        } else {
            cr_assert_null(sh->y);
            cr_assert_not_null(sh->yf);
            cr_assert(memcmp(sh->yf, w->yf + row * w->k, sizeof(float) * (size_t)(sh->n * w->k)) == 0,
                      "%s: yf differs at %" PRId64, what, row);
        }
        row += sh->n;
        if (sleep_us) nanosleep(&(struct timespec){0, sleep_us * 1000}, NULL);
        infl_reader_release(r, sh);
    }
    cr_assert_eq(row, end, "%s: the stream ended at row %" PRId64 ", expected %" PRId64, what, row, end);
    // the end marker again
    infl_shard *sh = NULL;
    ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
    cr_assert(sh && sh->n == 0, "%s: a second end marker expected", what);
    infl_reader_release(r, sh);
}

// ---- reader: the stream equals one read of everything ----

typedef struct {
    int classes;  // 0: real targets
    char range[24];  // appended to FILE:/train, e.g. "[100:900]"
} stream_case;

ParameterizedTestParameters(reader, stream_equals_whole_read) {
    static stream_case cases[] = {{3, ""}, {0, ""}, {4, "[100:900]"}, {0, "[999:]"}};
    return cr_make_param_array(stream_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(const stream_case *c, reader, stream_equals_whole_read) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, c->classes, 5);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train%s", path, c->range);
    whole w = read_whole(ctx, ref);
    infl_split *s = tu_open_split(ctx, ref);
    int64_t shards[] = {1, 7, 333, 1000, 5000};
    // sub-ranges of the selected range: all, [0, n), a middle, one row, empty
    int64_t n = w.n;
    int64_t ranges[][2] = {{0, -1}, {0, n}, {n / 7, n - n / 9}, {n / 2, n / 2 + 1}, {n / 3, n / 3}};
    for (size_t is = 0; is < sizeof shards / sizeof shards[0]; is++)
        for (int nbuf = 2; nbuf <= 3; nbuf++)
            for (size_t ir = 0; ir < sizeof ranges / sizeof ranges[0]; ir++) {
                int64_t b = ranges[ir][0], e = ranges[ir][1] < 0 ? n : ranges[ir][1];
                char what[4400];
                snprintf(what, sizeof what, "%s shards of %" PRId64 ", %d buffers, rows [%" PRId64 ":%" PRId64 "]",
                         ref, shards[is], nbuf, b, e);
                infl_reader *r = NULL;
                ASSERT_OK(ctx, infl_reader_start(ctx, s, shards[is], nbuf, ranges[ir][0], ranges[ir][1], NULL, NULL,
                                                 NULL, &r));
                consume_and_check(ctx, r, &w, b, e, shards[is], 0, what);
                infl_reader_stop(r);
            }
    store_split_close(s);
    whole_free(&w);
    infl_ctx_free(ctx);
}

// A slow consumer (the ring stays full, the thread waits) and a fast one (the
// consumer waits) get the same data.
Test(reader, slow_and_fast_consumers_agree) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, 3, 6);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    whole w = read_whole(ctx, ref);
    infl_split *s = tu_open_split(ctx, ref);
    for (int slow = 0; slow < 2; slow++)
        for (int nbuf = 2; nbuf <= 3; nbuf++) {
            infl_reader *r = NULL;
            ASSERT_OK(ctx, infl_reader_start(ctx, s, 50, nbuf, 0, -1, NULL, NULL, NULL, &r));
            consume_and_check(ctx, r, &w, 0, RN, 50, slow ? 3000 : 0, slow ? "slow consumer" : "fast consumer");
            double read_s = -1, wait_s = -1;
            infl_reader_stats(r, &read_s, &wait_s);
            cr_assert(read_s > 0 && wait_s >= 0, "stats: read %g s, wait %g s", read_s, wait_s);
            infl_reader_stop(r);
        }
    store_split_close(s);
    whole_free(&w);
    infl_ctx_free(ctx);
}

// Holding shards out of order and releasing them in any order.
Test(reader, release_in_any_order) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, 3, 7);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    whole w = read_whole(ctx, ref);
    infl_split *s = tu_open_split(ctx, ref);
    infl_reader *r = NULL;
    ASSERT_OK(ctx, infl_reader_start(ctx, s, 100, 3, 0, -1, NULL, NULL, NULL, &r));
    int64_t row = 0;
    while (row < RN) {
        infl_shard *a = NULL, *b = NULL;
        ASSERT_OK(ctx, infl_reader_next(ctx, r, &a));
        ASSERT_OK(ctx, infl_reader_next(ctx, r, &b));
        cr_assert(a->row0 == row && b->row0 == row + 100, "rows %" PRId64 ", %" PRId64, a->row0, b->row0);
        cr_assert(memcmp(b->x, w.x + (row + 100) * RD, sizeof(float) * 100 * RD) == 0);
        cr_assert(memcmp(a->x, w.x + row * RD, sizeof(float) * 100 * RD) == 0);
        infl_reader_release(r, b);  // the later one first
        infl_reader_release(r, a);
        row += 200;
    }
    infl_shard *e = NULL;
    ASSERT_OK(ctx, infl_reader_next(ctx, r, &e));
    cr_assert_eq(e->n, 0);
    infl_reader_stop(r);
    store_split_close(s);
    whole_free(&w);
    infl_ctx_free(ctx);
}

// Asking for more shards than there are buffers, without releasing: an error, not a hang.
Test(reader, holding_every_buffer_is_an_error) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, 3, 8);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    infl_split *s = tu_open_split(ctx, ref);
    infl_reader *r = NULL;
    ASSERT_OK(ctx, infl_reader_start(ctx, s, 10, 2, 0, -1, NULL, NULL, NULL, &r));
    infl_shard *a = NULL, *b = NULL, *c = NULL;
    ASSERT_OK(ctx, infl_reader_next(ctx, r, &a));
    ASSERT_OK(ctx, infl_reader_next(ctx, r, &b));
    ASSERT_ERR(ctx, infl_reader_next(ctx, r, &c), INFL_E_ARG, "all 2 shard buffers are held");
    cr_assert_null(c);
    infl_reader_release(r, a);
    ASSERT_OK(ctx, infl_reader_next(ctx, r, &c));
    cr_assert_eq(c->row0, 20);
    infl_reader_release(r, b);
    infl_reader_release(r, c);
    infl_reader_stop(r);
    store_split_close(s);
    infl_ctx_free(ctx);
}

// Stopping mid-stream: with shards held, with the thread blocked on a full ring, right
// after starting, and at the end. No hang (the suite's timeout), no leak (ASan).
Test(reader, stop_mid_stream) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, 3, 9);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    infl_split *s = tu_open_split(ctx, ref);
    for (int nbuf = 2; nbuf <= 3; nbuf++) {
        infl_reader *r = NULL;
        // immediately
        ASSERT_OK(ctx, infl_reader_start(ctx, s, 7, nbuf, 0, -1, NULL, NULL, NULL, &r));
        infl_reader_stop(r);
        // holding a shard, the thread blocked on a full ring
        ASSERT_OK(ctx, infl_reader_start(ctx, s, 7, nbuf, 0, -1, NULL, NULL, NULL, &r));
        infl_shard *sh = NULL;
        ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
        nanosleep(&(struct timespec){0, 20000000}, NULL);
        infl_reader_stop(r);
        // in the middle, after some shards went round
        ASSERT_OK(ctx, infl_reader_start(ctx, s, 7, nbuf, 0, -1, NULL, NULL, NULL, &r));
        for (int i = 0; i < 50; i++) {
            ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
            cr_assert_eq(sh->row0, 7 * i);
            infl_reader_release(r, sh);
        }
        infl_reader_stop(r);
    }
    infl_reader_stop(NULL);
    // the split is still usable after the readers stopped
    float x[RD];
    ASSERT_OK(ctx, store_split_read(ctx, s, 3, 1, x, NULL, NULL));
    store_split_close(s);
    infl_ctx_free(ctx);
}

// The cancel flag: next() returns INFL_E_INTERRUPTED (again on later calls) and the
// reader stops; also when it is raised while next() waits.
static volatile int g_cancel;

static void *raise_cancel_later(void *arg) {
    (void)arg;
    nanosleep(&(struct timespec){0, 50000000}, NULL);
    g_cancel = 1;
    return NULL;
}

Test(reader, cancel_interrupts) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, 3, 10);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    infl_split *s = tu_open_split(ctx, ref);
    g_cancel = 0;
    infl_ctx_set_cancel(ctx, &g_cancel);
    infl_reader *r = NULL;
    ASSERT_OK(ctx, infl_reader_start(ctx, s, 7, 2, 0, -1, NULL, NULL, NULL, &r));
    infl_shard *sh = NULL;
    ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
    infl_reader_release(r, sh);
    g_cancel = 1;
    ASSERT_ERR(ctx, infl_reader_next(ctx, r, &sh), INFL_E_INTERRUPTED, "interrupted");
    cr_assert_null(sh);
    g_cancel = 0;  // once interrupted, the stream stays interrupted
    ASSERT_ERR(ctx, infl_reader_next(ctx, r, &sh), INFL_E_INTERRUPTED, "interrupted");
    infl_reader_stop(r);

    // Raised while next() waits: the test holds the store lock, so the reader thread
    // is stuck in its first store_split_read and next() must notice the flag on its own.
    g_cancel = 0;
    h5u_lock();
    ASSERT_OK(ctx, infl_reader_start(ctx, s, 7, 2, 0, -1, NULL, NULL, NULL, &r));
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, raise_cancel_later, NULL), 0);
    ASSERT_ERR(ctx, infl_reader_next(ctx, r, &sh), INFL_E_INTERRUPTED, "interrupted");
    pthread_join(th, NULL);
    h5u_unlock();
    infl_reader_stop(r);
    infl_ctx_set_cancel(ctx, NULL);
    store_split_close(s);
    infl_ctx_free(ctx);
}

// A NaN at row 500 of x: the shards before it come through intact, then next()
// returns INFL_E_VALUE naming the row (and keeps returning it).
Test(reader, bad_row_surfaces_in_order) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("nan.h5");
    int64_t n = RN;
    float *x = malloc(sizeof(float) * (size_t)n * RD);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n * RD; i++) x[i] = (float)i * 0.001f;
    for (int64_t i = 0; i < n; i++) y[i] = (int32_t)(i % 4);
    x[500 * RD + 2] = NAN;
    infl_dsw *dw = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 1, &dw));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, dw, "train", n, RD, INFL_Y_CLASS, 1, NULL));
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, dw, "train", 0, n, x, y, NULL));
    ASSERT_OK(ctx, store_dataset_commit(ctx, dw));

    int64_t shards[] = {7, 100, 501, 1000};
    const char *ranges[] = {"", "[100:]"};
    // A slow consumer lets the thread run into the bad row while earlier shards still
    // wait in the ring: those must come out before the error.
    for (int c = 0; c < 4; c++)
        for (size_t is = 0; is < sizeof shards / sizeof shards[0]; is++) {
            int slow = c / 2, ir = c % 2;
            char ref[4200];
            snprintf(ref, sizeof ref, "%s:/train%s", path, ranges[ir]);
            int64_t base = ir ? 100 : 0;
            infl_split *s = tu_open_split(ctx, ref);
            infl_reader *r = NULL;
            ASSERT_OK(ctx, infl_reader_start(ctx, s, shards[is], 2, 0, -1, NULL, NULL, NULL, &r));
            int64_t row = 0;  // relative to the range
            infl_status st;
            infl_shard *sh = NULL;
            while ((st = infl_reader_next(ctx, r, &sh)) == INFL_OK) {
                cr_assert(sh->n > 0, "%s: the stream ended without the error", ref);
                cr_assert_eq(sh->row0, row);
                cr_assert(memcmp(sh->x, x + (base + row) * RD, sizeof(float) * (size_t)(sh->n * RD)) == 0);
                row += sh->n;
                infl_reader_release(r, sh);
                if (slow) nanosleep(&(struct timespec){0, 2000000}, NULL);
            }
            cr_assert_eq(st, INFL_E_VALUE, "%s shards of %" PRId64 "%s: got %s (%s)", ref, shards[is],
                         slow ? ", slow" : "", infl_status_name(st), infl_ctx_error(ctx));
            ASSERT_HAS(ctx, "row 500");
            ASSERT_HAS(ctx, "column 2");
            ASSERT_HAS(ctx, "NaN");
            ASSERT_HAS(ctx, "/train/x");
            // every shard before the one holding row 500 came through
            int64_t bad_rel = 500 - base;
            cr_assert_eq(row, bad_rel / shards[is] * shards[is],
                         "%s shards of %" PRId64 "%s: delivered %" PRId64 " rows before the error", ref, shards[is],
                         slow ? ", slow" : "", row);
            ASSERT_ERR(ctx, infl_reader_next(ctx, r, &sh), INFL_E_VALUE, "row 500");
            infl_reader_stop(r);
            store_split_close(s);
        }
    free(x);
    free(y);
    infl_ctx_free(ctx);
}

// The main thread writes and reads other files through the store while the reader
// thread streams: the store lock keeps HDF5 to one thread at a time.
Test(reader, store_used_meanwhile) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5"), *other = tu_path("other.h5"), *out = tu_path("out.h5");
    tu_make_blobs(path, RN, RD, 3, 11);
    tu_make_blobs(other, 300, 4, 2, 12);
    char ref[4200], oref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    snprintf(oref, sizeof oref, "%s:/train", other);
    whole w = read_whole(ctx, ref);
    whole ow = read_whole(ctx, oref);
    infl_split *s = tu_open_split(ctx, ref);
    infl_reader *r = NULL;
    ASSERT_OK(ctx, infl_reader_start(ctx, s, 1, 2, 0, -1, NULL, NULL, NULL, &r));
    infl_dsw *dw = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, out, 1, &dw));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, dw, "train", RN, RD, INFL_Y_CLASS, 1, NULL));
    int64_t row = 0;
    float ox[4];
    for (;;) {
        infl_shard *sh = NULL;
        ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
        if (sh->n == 0) break;
        cr_assert_eq(sh->row0, row);
        // copy the shard into the new file, and read a row of a third file
        ASSERT_OK(ctx, store_dataset_write_rows(ctx, dw, "train", sh->row0, sh->n, sh->x, sh->y, NULL));
        infl_split *os = tu_open_split(ctx, oref);
        int64_t orow = row % 300;
        ASSERT_OK(ctx, store_split_read(ctx, os, orow, 1, ox, NULL, NULL));
        cr_assert(memcmp(ox, ow.x + orow * 4, sizeof ox) == 0, "other file row %" PRId64, orow);
        store_split_close(os);
        row += sh->n;
        infl_reader_release(r, sh);
    }
    cr_assert_eq(row, RN);
    infl_reader_stop(r);
    ASSERT_OK(ctx, store_dataset_commit(ctx, dw));
    char cref[4200];
    snprintf(cref, sizeof cref, "%s:/train", out);
    whole cw = read_whole(ctx, cref);
    cr_assert(memcmp(cw.x, w.x, sizeof(float) * RN * RD) == 0, "the copy's x differs");
    cr_assert(memcmp(cw.y, w.y, sizeof(int32_t) * RN) == 0, "the copy's y differs");
    store_split_close(s);
    whole_free(&w);
    whole_free(&ow);
    whole_free(&cw);
    infl_ctx_free(ctx);
}

// ---- the store lock: HDF5 stays quiet on other threads ----

typedef struct {
    infl_ctx *ctx;
    const char *ref;
    infl_status st;
} open_job;

static void *open_on_thread(void *arg) {
    open_job *j = arg;
    infl_dataref dr;
    j->st = infl_dataref_parse(j->ctx, j->ref, &dr);
    infl_split *s = NULL;
    if (j->st == INFL_OK) j->st = store_split_open(j->ctx, &dr, &s);
    store_split_close(s);
    return NULL;
}

// A thread-safe HDF5 keeps its error printing per thread: a store call that fails
// inside HDF5 on a thread other than the context's (the reader's) must not print.
Test(reader, hdf5_silent_on_other_threads) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5"), *trunc = tu_path("trunc.h5"), *errf = tu_path("stderr.txt");
    tu_make_blobs(path, 200, RD, 3, 15);
    size_t n = 0;
    char *bytes = tu_read_file(path, &n);
    cr_assert(bytes && n > 4096);
    tu_write_file(trunc, bytes, n / 2);  // the superblock survives, the rest does not
    free(bytes);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", trunc);
    open_job job = {ctx, ref, INFL_OK};
    fflush(stderr);
    int saved = dup(2), fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    pthread_t th;
    int e = pthread_create(&th, NULL, open_on_thread, &job);
    if (e == 0) pthread_join(th, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    cr_assert_eq(e, 0);
    cr_assert_eq(job.st, INFL_E_FORMAT, "got %s (%s)", infl_status_name(job.st), infl_ctx_error(ctx));
    ASSERT_HAS(ctx, "trunc.h5");
    char *printed = tu_read_file(errf, NULL);
    cr_assert_not_null(printed);
    cr_assert(printed[0] == 0, "HDF5 printed on the other thread:\n%.600s", printed);
    free(printed);
    infl_ctx_free(ctx);
}

// ---- reader: memory through the allocator ----

typedef struct {
    size_t live, peak, allocs, frees;
} counter;

static void *count_alloc(size_t bytes, void *user) {
    counter *c = user;
    size_t *p = malloc(sizeof(size_t) + bytes);
    if (!p) return NULL;
    *p = bytes;
    c->live += bytes;
    if (c->live > c->peak) c->peak = c->live;
    c->allocs++;
    return p + 1;
}

static void count_free(void *q, void *user) {
    counter *c = user;
    size_t *p = (size_t *)q - 1;
    c->live -= *p;
    c->frees++;
    free(p);
}

typedef struct {
    int classes;
    int64_t shard_rows;
    int nbuf;
} mem_case;

ParameterizedTestParameters(reader, memory_is_the_ring) {
    static mem_case cases[] = {{3, 1, 2}, {3, 7, 3}, {3, 333, 2}, {0, 333, 3}, {3, 5000, 2}, {0, 1000, 3}};
    return cr_make_param_array(mem_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(const mem_case *c, reader, memory_is_the_ring) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, c->classes, 13);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train", path);
    whole w = read_whole(ctx, ref);
    infl_split *s = tu_open_split(ctx, ref);
    counter cnt = {0};
    infl_reader *r = NULL;
    ASSERT_OK(ctx, infl_reader_start(ctx, s, c->shard_rows, c->nbuf, 0, -1, count_alloc, count_free, &cnt, &r));
    int64_t rows = c->shard_rows < RN ? c->shard_rows : RN;
    size_t expect = (size_t)c->nbuf * (size_t)rows * (size_t)(w.d + w.k) * sizeof(float);
    cr_assert_eq(cnt.live, expect, "after start: %zu bytes, expected nbuf x shard x (d + k) = %zu", cnt.live, expect);
    consume_and_check(ctx, r, &w, 0, RN, c->shard_rows, 0, "counted allocator");
    cr_assert_eq(cnt.peak, expect, "peak %zu bytes over the stream, expected %zu", cnt.peak, expect);
    cr_assert_eq(cnt.allocs, (size_t)c->nbuf);
    infl_reader_stop(r);
    cr_assert_eq(cnt.live, 0, "%zu bytes not freed", cnt.live);
    cr_assert_eq(cnt.frees, cnt.allocs);
    store_split_close(s);
    whole_free(&w);
    infl_ctx_free(ctx);
}

// A failing allocator: INFL_E_NOMEM, nothing left allocated.
static void *fail_second(size_t bytes, void *user) {
    counter *c = user;
    if (c->allocs == 1) return NULL;
    return count_alloc(bytes, user);
}

Test(reader, rejects_bad_arguments) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("blobs.h5");
    tu_make_blobs(path, RN, RD, 3, 14);
    char ref[4200];
    snprintf(ref, sizeof ref, "%s:/train[0:100]", path);
    infl_split *s = tu_open_split(ctx, ref);
    infl_reader *r = NULL;
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 1, 0, -1, NULL, NULL, NULL, &r), INFL_E_ARG, "2 or 3 buffers");
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 4, 0, -1, NULL, NULL, NULL, &r), INFL_E_ARG, "2 or 3 buffers");
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 0, 2, 0, -1, NULL, NULL, NULL, &r), INFL_E_ARG, "0 rows");
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 2, 50, 101, NULL, NULL, NULL, &r), INFL_E_ARG, "[50:101]");
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 2, 60, 50, NULL, NULL, NULL, &r), INFL_E_ARG, "[60:50]");
    counter cnt = {0};
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 2, 0, -1, count_alloc, NULL, &cnt, &r), INFL_E_ARG, "allocator");
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 3, 0, -1, fail_second, count_free, &cnt, &r), INFL_E_NOMEM,
               "shard buffer 2 of 3");
    cr_assert_null(r);
    cr_assert_eq(cnt.live, 0, "%zu bytes left after a failed start", cnt.live);
    store_split_close(s);
    infl_ctx_free(ctx);
}

// Documents stream as store_split_read_docs reads them at once (every shard size and
// range), and each kind of split is refused by the other kind's reader.
Test(reader, documents_stream_as_one_read) {
    const char *txt = tu_path("sched_docs.txt"), *h5 = tu_path("sched_docs.h5");
    FILE *f = fopen(txt, "w");
    cr_assert(f);
    for (int i = 0; i < 57; i++) fprintf(f, "document %d %.*s\n", i, i % 23, "abcdefghijklmnopqrstuvwxyz");
    fclose(f);
    tu_import_lines(txt, h5, 0, 0.0);
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, h5, "train"));
    int64_t N = store_split_info(s)->n;
    const int T = 12;
    int32_t *tok = malloc((size_t)N * T * sizeof(int32_t)), *len = malloc((size_t)N * sizeof(int32_t)),
            *lab = malloc((size_t)N * sizeof(int32_t));
    ASSERT_OK(ctx, store_split_read_docs(ctx, s, 0, N, T, 0, tok, len, lab));
    const int64_t shards[] = {1, 5, 16, 57, 100};
    for (int is = 0; is < 5; is++)
        for (int64_t b0 = 0; b0 < N; b0 += 19) {
            infl_reader *r;
            ASSERT_OK(ctx, infl_reader_start_docs(ctx, s, shards[is], 2, b0, -1, T, NULL, NULL, NULL, &r));
            int64_t row = b0;
            for (;;) {
                infl_shard *sh;
                ASSERT_OK(ctx, infl_reader_next(ctx, r, &sh));
                if (sh->n == 0) break;
                cr_assert_eq(sh->row0, row);
                cr_assert(!sh->x && sh->T == T);
                cr_assert(!memcmp(sh->tok, tok + row * T, (size_t)sh->n * T * sizeof(int32_t)), "shard at %" PRId64, row);
                cr_assert(!memcmp(sh->len, len + row, (size_t)sh->n * sizeof(int32_t)));
                cr_assert(!memcmp(sh->y, lab + row, (size_t)sh->n * sizeof(int32_t)));
                row += sh->n;
                infl_reader_release(r, sh);
            }
            cr_assert_eq(row, N);
            infl_reader_stop(r);
        }
    infl_reader *r = NULL;
    ASSERT_ERR(ctx, infl_reader_start(ctx, s, 10, 2, 0, -1, NULL, NULL, NULL, &r), INFL_E_ARG, "infl_reader_start_docs");
    ASSERT_ERR(ctx, infl_reader_start_docs(ctx, s, 10, 2, 0, -1, 0, NULL, NULL, NULL, &r), INFL_E_ARG, "0 tokens");
    store_split_close(s);
    const char *blobs = tu_path("sched_blobs.h5");
    tu_make_blobs(blobs, 20, 3, 2, 1);
    s = tu_open_split(ctx, tu_ref(1, blobs, "train"));
    ASSERT_ERR(ctx, infl_reader_start_docs(ctx, s, 10, 2, 0, -1, 8, NULL, NULL, NULL, &r), INFL_E_ARG,
               "infl_reader_start");
    store_split_close(s);
    free(tok), free(len), free(lab);
    infl_ctx_free(ctx);
}
