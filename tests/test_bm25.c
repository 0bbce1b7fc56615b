/*
 * test_bm25.c — the BM25 candidate filter (estimators/bm25.h) on a small documents file
 * written here: bm25_topk against a float64 BM25 computed in the test from the token
 * lists (several queries, K, parameters, a sub-range of the split), the same result
 * bitwise at any block size, the tie rule on duplicated documents, the empty query, and
 * the refusals (K out of range, a rows split, a token outside the vocabulary, bad
 * parameters, cancellation).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "estimators/bm25.h"
#include "infl.h"
#include "store/store.h"
#include "testutil.h"

// ---- the fixture: 30 documents over a small alphabet ----

#define ND 30
#define MAXL 16

static int32_t doc_len[ND];
static int32_t doc_tok[ND][MAXL];

// Documents of 0..13 tokens drawn from "abcdefgh" (skewed so that df varies: 'a' is
// common, 'h' rare); document 17 repeats document 3 and 25 repeats 8 (ties); document 11
// is empty; 'z' appears in document 20 only.
static void make_docs(void) {
    uint64_t st = 12345;
    for (int i = 0; i < ND; i++) {
        doc_len[i] = (int32_t)(tu_uniform(&st) * 14);
        for (int j = 0; j < doc_len[i]; j++) {
            double u = tu_uniform(&st);
            doc_tok[i][j] = 'a' + (int32_t)(8 * u * u);
        }
    }
    doc_len[11] = 0;
    doc_len[17] = doc_len[3];
    memcpy(doc_tok[17], doc_tok[3], sizeof doc_tok[3]);
    doc_len[25] = doc_len[8];
    memcpy(doc_tok[25], doc_tok[8], sizeof doc_tok[8]);
    doc_tok[20][0] = 'z';
    if (doc_len[20] == 0) doc_len[20] = 1;
}

// Writes the documents as FILE:/train (bytes tokenizer) and returns the file's path.
static const char *write_docs(void) {
    make_docs();
    const char *path = tu_path("docs.h5");
    infl_ctx *ctx = tu_ctx();
    infl_dsw *w = NULL;
    cr_assert_eq(store_dataset_create(ctx, path, 1, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_tokenizer t;
    tok_init_bytes(&t);
    cr_assert_eq(store_dataset_set_tokenizer(ctx, w, &t), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_add_docs_split(ctx, w, "train"), INFL_OK, "%s", infl_ctx_error(ctx));
    int32_t flat[ND * MAXL], lab[ND] = {0};
    int at = 0;
    for (int i = 0; i < ND; i++)
        for (int j = 0; j < doc_len[i]; j++) flat[at++] = doc_tok[i][j];
    cr_assert_eq(store_dataset_append_docs(ctx, w, "train", ND, doc_len, flat, lab), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return path;
}

// ---- the reference: BM25 in float64 straight from the token lists ----

// Scores of documents [a, b) (the range; N = b - a) for query q (n tokens), into s (N).
static void ref_scores(double *s, int a, int b, const int32_t *q, int n, double k1, double bb) {
    const int N = b - a;
    double total = 0;
    for (int i = a; i < b; i++) total += doc_len[i];
    const double avgdl = total / N;
    for (int i = 0; i < N; i++) s[i] = 0;
    for (int j = 0; j < n; j++) {
        int first = 1, qtf = 0;
        for (int m = 0; m < n; m++) {
            if (q[m] == q[j] && m < j) first = 0;
            qtf += q[m] == q[j];
        }
        if (!first) continue;  // each distinct query token once
        int df = 0;
        for (int i = a; i < b; i++) {
            int has = 0;
            for (int m = 0; m < doc_len[i]; m++) has |= doc_tok[i][m] == q[j];
            df += has;
        }
        const double idf = log((N - df + 0.5) / (df + 0.5) + 1.0);
        for (int i = a; i < b; i++) {
            int tf = 0;
            for (int m = 0; m < doc_len[i]; m++) tf += doc_tok[i][m] == q[j];
            if (tf == 0) continue;  // absent: adds nothing (with b = 1, an empty document is 0/0)
            s[i - a] += qtf * idf * tf * (k1 + 1) / (tf + k1 * (1 - bb + bb * doc_len[i] / avgdl));
        }
    }
}

typedef struct {
    float s;
    int64_t i;
} ref_entry;

static int by_rank(const void *x, const void *y) {
    const ref_entry *p = x, *r = y;
    if (p->s != r->s) return p->s > r->s ? -1 : 1;
    return p->i < r->i ? -1 : p->i > r->i;
}

static int near(double x, double y) { return fabs(x - y) <= 1e-5 * (1 + fabs(y)); }

// Checks one query's list (K) against the reference scores s (N): each rank's score is the
// reference's at that rank, each index is a distinct document whose reference score is the
// one reported, the order is by score then index, and where the reference has no near tie
// at a rank the index is the reference's exactly.
static void check_list(const int64_t *idx, const float *sc, const double *s, int N, int K, const char *what) {
    ref_entry *r = malloc((size_t)N * sizeof *r);
    for (int i = 0; i < N; i++) r[i] = (ref_entry){(float)s[i], i};
    qsort(r, (size_t)N, sizeof *r, by_rank);
    for (int k = 0; k < K; k++) {
        cr_assert(idx[k] >= 0 && idx[k] < N, "%s rank %d: index %lld", what, k, (long long)idx[k]);
        for (int m = 0; m < k; m++) cr_assert_neq(idx[m], idx[k], "%s: index %lld twice", what, (long long)idx[k]);
        cr_assert(near(sc[k], r[k].s), "%s rank %d: score %.9g, reference %.9g", what, k, sc[k], r[k].s);
        cr_assert(near(sc[k], s[idx[k]]), "%s rank %d: document %lld scored %.9g, reference %.9g", what, k,
                  (long long)idx[k], sc[k], s[idx[k]]);
        if (k > 0)
            cr_assert(sc[k - 1] > sc[k] || (sc[k - 1] == sc[k] && idx[k - 1] < idx[k]), "%s: ranks %d, %d out of order",
                      what, k - 1, k);
        int tied = (k > 0 && near(r[k - 1].s, r[k].s)) || (k + 1 < N && near(r[k + 1].s, r[k].s));
        if (!tied)
            cr_assert_eq(idx[k], r[k].i, "%s rank %d: document %lld, reference %lld", what, k, (long long)idx[k],
                         (long long)r[k].i);
    }
    free(r);
}

// ---- queries ----

// "abc", "hhh a" (a repeated rare token), "z" (one document), "gfedcba gg", "q" (in no
// document: all zero)
#define NQ 5
static const char *const qtext[NQ] = {"abc", "hhha", "z", "gfedcbagg", "q"};
static int32_t qbuf[NQ][16];
static int qlen[NQ];
static const int32_t *qptr[NQ];

static void make_queries(void) {
    for (int q = 0; q < NQ; q++) {
        qlen[q] = (int)strlen(qtext[q]);
        for (int j = 0; j < qlen[q]; j++) qbuf[q][j] = (unsigned char)qtext[q][j];
        qptr[q] = qbuf[q];
    }
}

// Runs bm25_topk on FILE:/train[a:b] and checks every query against the reference.
static void run_and_check(const char *path, int a, int b, int K, bm25_params p) {
    infl_ctx *ctx = tu_ctx();
    char spec[64];
    snprintf(spec, sizeof spec, "train[%d:%d]", a, b);
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, spec));
    int64_t idx[NQ * ND];
    float sc[NQ * ND];
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, K, &p), INFL_OK, "%s", infl_ctx_error(ctx));
    double ref[ND];
    for (int q = 0; q < NQ; q++) {
        char what[96];
        snprintf(what, sizeof what, "[%d:%d] K=%d k1=%g b=%g query '%s'", a, b, K, p.k1, p.b, qtext[q]);
        ref_scores(ref, a, b, qptr[q], qlen[q], p.k1, p.b);
        check_list(idx + q * K, sc + q * K, ref, b - a, K, what);
    }
    store_split_close(s);
    infl_ctx_free(ctx);
}

// ---- tests ----

Test(bm25, matches_a_float64_reference) {
    const char *path = write_docs();
    make_queries();
    const int Ks[] = {1, 5, 13, ND};
    for (size_t k = 0; k < sizeof Ks / sizeof Ks[0]; k++) run_and_check(path, 0, ND, Ks[k], bm25_params_default());
    // the query that names the one document with 'z' finds it first, with a positive score
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train"));
    int64_t idx[NQ * 3];
    float sc[NQ * 3];
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 3, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(idx[2 * 3], 20);
    cr_assert(sc[2 * 3] > 0 && sc[2 * 3 + 1] == 0);
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(bm25, other_parameters_and_a_sub_range) {
    const char *path = write_docs();
    make_queries();
    bm25_params p = {.k1 = 2.0, .b = 0.3};
    run_and_check(path, 0, ND, 7, p);
    p = (bm25_params){.k1 = 0.5, .b = 1.0};
    run_and_check(path, 0, ND, ND, p);
    p = (bm25_params){.k1 = 1.2, .b = 0.0};
    run_and_check(path, 0, ND, 4, p);
    // a range: df, N and the mean length are the range's, indices relative to its start
    run_and_check(path, 5, 28, 6, bm25_params_default());
    run_and_check(path, 12, 30, 18, bm25_params_default());
}

Test(bm25, any_block_size_gives_the_same_result_bitwise) {
    const char *path = write_docs();
    make_queries();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train"));
    const int K = 9, blocks[] = {1, 2, 7, 29, ND, 1000};
    int64_t idx0[NQ * K], idx[NQ * K];
    float sc0[NQ * K], sc[NQ * K];
    bm25_params p = bm25_params_default();
    cr_assert_eq(bm25_topk(ctx, idx0, sc0, s, qptr, qlen, NQ, K, &p), INFL_OK, "%s", infl_ctx_error(ctx));
    for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        p.block = blocks[b];
        memset(idx, 0xff, sizeof idx);
        cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, K, &p), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert(memcmp(idx, idx0, sizeof idx) == 0, "block %d: other indices", blocks[b]);
        cr_assert(memcmp(sc, sc0, sizeof sc) == 0, "block %d: other scores", blocks[b]);
    }
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(bm25, equal_scores_rank_by_the_lower_index) {
    const char *path = write_docs();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train"));
    // document 3's own tokens as the query: 3 and its copy 17 score the same, 3 first
    const int32_t *q[1] = {doc_tok[3]};
    int n[1] = {doc_len[3]};
    cr_assert(n[0] > 0, "the fixture's document 3 is empty");
    int64_t idx[ND];
    float sc[ND];
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, q, n, 1, ND, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    int at3 = -1, at17 = -1;
    for (int k = 0; k < ND; k++) {
        if (idx[k] == 3) at3 = k;
        if (idx[k] == 17) at17 = k;
    }
    cr_assert(at3 >= 0 && at17 == at3 + 1, "3 at rank %d, 17 at rank %d", at3, at17);
    cr_assert(sc[at3] == sc[at17] && sc[at3] > 0);
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(bm25, an_empty_query_gives_zeros_and_the_lowest_indices) {
    const char *path = write_docs();
    make_queries();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train[4:30]"));
    const int32_t *q[2] = {NULL, qptr[0]};
    int n[2] = {0, qlen[0]};
    const int K = 6;
    int64_t idx[2 * K];
    float sc[2 * K];
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, q, n, 2, K, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int k = 0; k < K; k++) {
        cr_assert_eq(idx[k], k, "rank %d: document %lld", k, (long long)idx[k]);
        cr_assert(sc[k] == 0.0f, "rank %d: score %g", k, sc[k]);
    }
    cr_assert(sc[K] > 0, "the second query, 'abc', should still score");
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(bm25, refuses_k_out_of_range) {
    const char *path = write_docs();
    make_queries();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train[0:20]"));
    int64_t idx[NQ * 32];
    float sc[NQ * 32];
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 21, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "K = 21") && strstr(infl_ctx_error(ctx), "N = 20"), "%s",
              infl_ctx_error(ctx));
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 0, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "K = 0"), "%s", infl_ctx_error(ctx));
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, -3, NULL), INFL_E_ARG);
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 20, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(bm25, refuses_bad_input) {
    const char *path = write_docs();
    make_queries();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train"));
    int64_t idx[NQ * 4];
    float sc[NQ * 4];
    // a token outside the bytes vocabulary [0, 257), and a negative one
    int32_t bad[3] = {'a', 'b', 257};
    const int32_t *q[2] = {qptr[0], bad};
    int n[2] = {qlen[0], 3};
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, q, n, 2, 4, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "query 1 position 2: token 257"), "%s", infl_ctx_error(ctx));
    bad[0] = -1;
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, q, n, 2, 4, NULL), INFL_E_ARG);
    // no queries, a negative length, tokens missing
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, 0, 4, NULL), INFL_E_ARG);
    n[1] = -1;
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, q, n, 2, 4, NULL), INFL_E_ARG);
    n[1] = 2;
    q[1] = NULL;
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, q, n, 2, 4, NULL), INFL_E_ARG);
    // parameters
    bm25_params p = {.k1 = -0.1, .b = 0.75};
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, &p), INFL_E_ARG);
    p = (bm25_params){.k1 = 1.2, .b = 1.5};
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, &p), INFL_E_ARG);
    p = (bm25_params){.k1 = NAN, .b = 0.5};
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, &p), INFL_E_ARG);
    p = (bm25_params){.k1 = 1.2, .b = 0.5, .block = -1};
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, &p), INFL_E_ARG);
    store_split_close(s);
    // a rows split
    const char *blobs = tu_path("blobs.h5");
    tu_make_blobs(blobs, 20, 3, 2, 7);
    s = tu_open_split(ctx, tu_ref(1, blobs, "train"));
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "not documents"), "%s", infl_ctx_error(ctx));
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(bm25, stops_when_cancelled) {
    const char *path = write_docs();
    make_queries();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train"));
    volatile int flag = 1;
    infl_ctx_set_cancel(ctx, &flag);
    int64_t idx[NQ * 4];
    float sc[NQ * 4];
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, NULL), INFL_E_INTERRUPTED);
    flag = 0;
    cr_assert_eq(bm25_topk(ctx, idx, sc, s, qptr, qlen, NQ, 4, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    store_split_close(s);
    infl_ctx_free(ctx);
}
