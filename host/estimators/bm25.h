/*
 * bm25.h — a BM25 candidate filter over a documents split: for each query (a list of
 * token ids), the K training documents most similar to it by Okapi BM25 over tokens.
 * The search-space reduction of Grosse et al. 2023: the rank pipeline scores each query
 * only against its K candidates (`infl rank --prefilter bm25:K`). It sits beside the
 * estimators and reads the split through the store; it needs no model and no backend.
 *
 * The score of document D (length |D|, mean length avgdl over the split's range of N
 * documents) for query Q, summed over the distinct tokens t of Q:
 *
 *   qtf(t) · idf(t) · tf(t,D) (k1 + 1) / (tf(t,D) + k1 (1 − b + b |D| / avgdl))
 *   idf(t) = ln((N − df(t) + 0.5) / (df(t) + 0.5) + 1)
 *
 * with qtf(t) the count of t in the query, tf(t,D) its count in the document, df(t) the
 * documents of the range that hold t. The "+ 1" inside the logarithm keeps every idf
 * positive (a token in more than half the documents still counts a little).
 *
 * Thread safety: a split is used by one thread at a time (store.h); bm25_topk reads it.
 */
#ifndef INFL_BM25_H
#define INFL_BM25_H

#include <stdint.h>

#include "core/internal.h"
#include "store/store.h"

typedef struct {
    double k1;  // term-frequency saturation, >= 0; default 1.2
    double b;   // length normalisation, in [0, 1]; default 0.75
    int block;  // documents read at a time; 0 (the default) chooses from max_len and nq.
                // Only memory and speed depend on it, never the result (the tests set it).
} bm25_params;

// k1 = 1.2, b = 0.75, block = 0.
bm25_params bm25_params_default(void);

// The K documents of `split` (a documents split; its selected range, indices relative to
// the range's start) with the highest BM25 scores for each of nq >= 1 queries, query j
// being the qlen[j] >= 0 token ids qtok[j] (each in [0, vocab) of the split's tokenizer;
// qtok[j] may be NULL when qlen[j] is 0). p NULL: bm25_params_default().
//
// Outputs first (STYLE.md): out_idx (nq, K) and out_score (nq, K), row-major, caller-owned: query j's documents best
// first, equal scores by the lower index. A document that shares no token with the query
// scores 0 and still fills the list when fewer than K score above 0; so an empty query
// (qlen 0) gives K zeros and the indices 0..K-1.
//
// Two passes over the split, in blocks of documents (each read whole: T = max_len):
// the first counts df and the mean length, the second scores and keeps a running top-K
// per query (sched/topk.h). Memory O(vocab + Σ qlen + nq·K + block·(max_len + nq)),
// never O(N). Scores are summed in float64 and kept as float32.
//
// INFL_E_ARG for K < 1 or K > N (naming both), nq < 1, a rows split, bad parameters, a
// query token outside the vocabulary (naming the query and position); the store's
// errors; INFL_E_INTERRUPTED when the context's cancel flag is raised (polled once per
// block). Progress: "bm25: df" and "bm25: score" (documents done of N).
infl_status bm25_topk(infl_ctx *ctx, int64_t *out_idx, float *out_score, infl_split *split, const int32_t *const *qtok,
                      const int *qlen, int nq, int K, const bm25_params *p);

#endif
