/*
 * bm25.c — the BM25 candidate filter (bm25.h): the queries as an inverted list over the
 * vocabulary, a pass over the split for document frequencies and the mean length, a
 * pass that scores each block of documents against every query through that list and
 * merges the block into a running top-K (sched/topk.h).
 */
#include "estimators/bm25.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched/topk.h"

// Budgets of the default block: tokens read at a time (padded to max_len) and scores
// held at a time (nq per document), each about 16 MiB.
#define BM25_BLOCK_TOKENS (1 << 22)
#define BM25_BLOCK_SCORES (1 << 22)
#define BM25_BLOCK_MAX 8192

bm25_params bm25_params_default(void) { return (bm25_params){.k1 = 1.2, .b = 0.75, .block = 0}; }

// ---- the queries as an inverted list ----

// Query q holds token t `qtf` times; w becomes qtf · idf(t) once the df are known.
typedef struct {
    int q;
    int qtf;
    double w;
} bm25_post;

typedef struct {
    int64_t *head;    // (vocab + 1): token t's postings are post[head[t] .. head[t+1])
    bm25_post *post;  // (number of distinct (query, token) pairs)
} bm25_index;

static void index_free(bm25_index *ix) {
    free(ix->head);
    free(ix->post);
}

// The distinct tokens of a query into seen (returned: how many), each one's count in cnt.
static int distinct_tokens(const int32_t *tok, int len, int32_t *cnt, int32_t *seen) {
    int nd = 0;
    for (int j = 0; j < len; j++)
        if (cnt[tok[j]]++ == 0) seen[nd++] = tok[j];
    return nd;
}

// Builds the inverted list of the queries. cnt (vocab) is zeroed scratch, returned zeroed;
// seen (max qlen) scratch.
static infl_status index_build(infl_ctx *ctx, bm25_index *ix, int32_t *cnt, int32_t *seen,
                               const int32_t *const *qtok, const int *qlen, int nq, int vocab) {
    infl_status rc = INFL_OK;
    ix->head = infl_calloc(ctx, (size_t)vocab + 1, sizeof *ix->head, "bm25: the query index");
    GOTO_NOMEM_IF(!ix->head);
    // distinct tokens of each query, counted per token into head[t + 1]
    for (int q = 0; q < nq; q++) {
        int nd = distinct_tokens(qtok[q], qlen[q], cnt, seen);
        for (int d = 0; d < nd; d++) {
            ix->head[seen[d] + 1]++;
            cnt[seen[d]] = 0;
        }
    }
    for (int t = 0; t < vocab; t++) ix->head[t + 1] += ix->head[t];
    ix->post = infl_malloc(ctx, (size_t)(ix->head[vocab] > 0 ? ix->head[vocab] : 1) * sizeof *ix->post,
                           "bm25: the query index");
    GOTO_NOMEM_IF(!ix->post);
    // fill: head[t] runs ahead as a cursor and is shifted back after
    for (int q = 0; q < nq; q++) {
        int nd = distinct_tokens(qtok[q], qlen[q], cnt, seen);
        for (int d = 0; d < nd; d++) {
            int32_t t = seen[d];
            ix->post[ix->head[t]++] = (bm25_post){.q = q, .qtf = cnt[t], .w = 0};
            cnt[t] = 0;
        }
    }
    for (int t = vocab; t > 0; t--) ix->head[t] = ix->head[t - 1];
    ix->head[0] = 0;
done:
    return rc;
}

// ---- checks ----

static infl_status check_args(infl_ctx *ctx, const infl_split *split, const int32_t *const *qtok, const int *qlen,
                              int nq, int K, const bm25_params *p, const int64_t *out_idx, const float *out_score) {
    RETURN_IF(ctx, !split, INFL_E_ARG, "bm25: no split");
    const infl_split_info *in = store_split_info(split);
    RETURN_IF(ctx, in->kind != INFL_SPLIT_DOCS, INFL_E_ARG, "bm25: %s holds rows, not documents",
              store_split_ref(split));
    RETURN_IF(ctx, in->max_len > INT32_MAX, INFL_E_ARG,
              "bm25: %s: the longest document has %" PRId64 " tokens, more than one read can hold",
              store_split_ref(split), in->max_len);
    RETURN_IF(ctx, nq < 1 || !qlen || !qtok, INFL_E_ARG, "bm25: %d queries (need at least 1, with qtok and qlen)",
              nq);
    RETURN_IF(ctx, K < 1 || K > in->n, INFL_E_ARG,
              "bm25: K = %d documents per query, but %s holds N = %" PRId64 " (need 1 <= K <= N)", K,
              store_split_ref(split), in->n);
    RETURN_IF(ctx, !out_idx || !out_score, INFL_E_ARG, "bm25: out_idx and out_score are needed");
    RETURN_IF(ctx, !(p->k1 >= 0 && isfinite(p->k1)), INFL_E_ARG, "bm25: k1 = %g (need finite, >= 0)", p->k1);
    RETURN_IF(ctx, !(p->b >= 0 && p->b <= 1), INFL_E_ARG, "bm25: b = %g (need 0 <= b <= 1)", p->b);
    RETURN_IF(ctx, p->block < 0, INFL_E_ARG, "bm25: block = %d (need >= 0; 0 chooses)", p->block);
    for (int q = 0; q < nq; q++) {
        RETURN_IF(ctx, qlen[q] < 0 || (qlen[q] > 0 && !qtok[q]), INFL_E_ARG, "bm25: query %d: %d tokens%s", q,
                  qlen[q], qlen[q] > 0 ? " but no token array" : "");
        for (int j = 0; j < qlen[q]; j++)
            RETURN_IF(ctx, qtok[q][j] < 0 || qtok[q][j] >= in->vocab, INFL_E_ARG,
                      "bm25: query %d position %d: token %" PRId32 " outside the vocabulary [0, %d) of %s", q, j,
                      qtok[q][j], in->vocab, store_split_ref(split));
    }
    return INFL_OK;
}

// Documents per block: as given, else within the token and score budgets; in [1, N].
static int64_t block_size(const bm25_params *p, int64_t max_len, int nq, int64_t N) {
    int64_t b = p->block;
    if (b == 0) {
        b = BM25_BLOCK_MAX;
        if (max_len > 0 && BM25_BLOCK_TOKENS / max_len < b) b = BM25_BLOCK_TOKENS / max_len;
        if (BM25_BLOCK_SCORES / nq < b) b = BM25_BLOCK_SCORES / nq;
    }
    if (b > N) b = N;
    return b < 1 ? 1 : b;
}

// ---- the two passes ----

infl_status bm25_topk(infl_ctx *ctx, int64_t *out_idx, float *out_score, infl_split *split, const int32_t *const *qtok,
                      const int *qlen, int nq, int K, const bm25_params *p) {
    const bm25_params def = bm25_params_default();
    if (!p) p = &def;
    FORWARD_IF_ERROR(check_args(ctx, split, qtok, qlen, nq, K, p, out_idx, out_score));
    const infl_split_info *in = store_split_info(split);
    const int64_t N = in->n;
    const int vocab = in->vocab, T = (int)in->max_len;
    const int64_t B = block_size(p, in->max_len, nq, N);
    int maxq = 1;
    for (int q = 0; q < nq; q++)
        if (qlen[q] > maxq) maxq = qlen[q];

    infl_status rc = INFL_OK;
    bm25_index ix = {0};
    infl_topk *tk = NULL;
    int64_t *df = NULL, *last = NULL;
    int32_t *tf = NULL, *seen = NULL, *tok = NULL, *len = NULL;
    double *acc = NULL;
    float *S = NULL;
    df = infl_calloc(ctx, (size_t)vocab, sizeof *df, "bm25: document frequencies");
    last = infl_malloc(ctx, (size_t)vocab * sizeof *last, "bm25: document frequencies");
    tf = infl_calloc(ctx, (size_t)vocab, sizeof *tf, "bm25: term frequencies");
    seen = infl_malloc(ctx, (size_t)(T > maxq ? T : maxq) * sizeof *seen, "bm25: distinct tokens");
    tok = infl_malloc(ctx, (size_t)B * (size_t)(T > 0 ? T : 1) * sizeof *tok, "bm25: a block of documents");
    len = infl_malloc(ctx, (size_t)B * sizeof *len, "bm25: a block of documents");
    acc = infl_malloc(ctx, (size_t)nq * sizeof *acc, "bm25: a document's scores");
    S = infl_malloc(ctx, (size_t)nq * (size_t)B * sizeof *S, "bm25: a block of scores");
    GOTO_NOMEM_IF(!df || !last || !tf || !seen || !tok || !len || !acc || !S);
    CHECK(index_build(ctx, &ix, tf, seen, qtok, qlen, nq, vocab));
    CHECK(infl_topk_create(ctx, nq, K, &tk));

    // pass 1: df(t) (last[t]: the last document that counted t) and the total length
    for (int t = 0; t < vocab; t++) last[t] = -1;
    int64_t total = 0;
    for (int64_t r0 = 0; r0 < N; r0 += B) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        const int64_t nb = N - r0 < B ? N - r0 : B;
        CHECK(store_split_read_docs(ctx, split, r0, nb, T, 0, tok, len, NULL));
        for (int64_t i = 0; i < nb; i++) {
            const int32_t *d = tok + (size_t)i * (size_t)T;
            for (int32_t j = 0; j < len[i]; j++)
                if (last[d[j]] != r0 + i) {
                    last[d[j]] = r0 + i;
                    df[d[j]]++;
                }
            total += len[i];
        }
        infl_progress(ctx, "bm25: df", (uint64_t)(r0 + nb), (uint64_t)N, NULL);
    }
    const double avgdl = (double)total / (double)N;

    // the queries' weights: qtf · idf
    for (int t = 0; t < vocab; t++)
        for (int64_t e = ix.head[t]; e < ix.head[t + 1]; e++) {
            double n_t = (double)df[t];
            ix.post[e].w = ix.post[e].qtf * log(((double)N - n_t + 0.5) / (n_t + 0.5) + 1.0);
        }

    // pass 2: each document's scores through the query index; S (nq, nb) per block
    const double k1 = p->k1, b = p->b;
    for (int64_t r0 = 0; r0 < N; r0 += B) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        const int64_t nb = N - r0 < B ? N - r0 : B;
        CHECK(store_split_read_docs(ctx, split, r0, nb, T, 0, tok, len, NULL));
        for (int64_t i = 0; i < nb; i++) {
            const int32_t *d = tok + (size_t)i * (size_t)T;
            // term frequencies of the document's distinct tokens, in order of first appearance
            int nd = 0;
            for (int32_t j = 0; j < len[i]; j++)
                if (tf[d[j]]++ == 0) seen[nd++] = d[j];
            const double norm = k1 * (1.0 - b + (avgdl > 0 ? b * len[i] / avgdl : 0.0));
            for (int q = 0; q < nq; q++) acc[q] = 0;
            for (int u = 0; u < nd; u++) {
                const int32_t t = seen[u];
                if (ix.head[t + 1] > ix.head[t]) {
                    const double f = tf[t], part = f * (k1 + 1.0) / (f + norm);
                    for (int64_t e = ix.head[t]; e < ix.head[t + 1]; e++) acc[ix.post[e].q] += ix.post[e].w * part;
                }
                tf[t] = 0;
            }
            for (int q = 0; q < nq; q++) S[(size_t)q * (size_t)nb + (size_t)i] = (float)acc[q];
        }
        CHECK(infl_topk_push(ctx, tk, S, nq, (int)nb, (int)nb, r0));
        infl_progress(ctx, "bm25: score", (uint64_t)(r0 + nb), (uint64_t)N, NULL);
    }

    for (int q = 0; q < nq; q++) {
        int count = 0;
        infl_topk_get(tk, q, out_idx + (size_t)q * (size_t)K, out_score + (size_t)q * (size_t)K, NULL, NULL, &count);
        GOTO_IF(ctx, count != K, INFL_E_INTERNAL, "bm25: query %d kept %d documents of K = %d", q, count, K);
    }
done:
    infl_topk_free(tk);
    index_free(&ix);
    free(df);
    free(last);
    free(tf);
    free(seen);
    free(tok);
    free(len);
    free(acc);
    free(S);
    return rc;
}
