/*
 * knn.h — exact k-nearest neighbours by GEMM, the candidate filter of FastIF (Guo et
 * al. 2020): for each query, the K training examples nearest to it in a feature space
 * (an MLP's inputs or its penultimate activations), so that the rank pipeline scores
 * each query only against its K candidates (`infl rank --prefilter knn:K`). It sits
 * beside the estimators and knows no model: the caller hands it feature blocks on the
 * backend as the train split streams past.
 *
 * Distance: squared Euclidean (L2). Per block of b training rows X (b, d) and the nq
 * queries Q (nq, d), one GEMM and a row norm:
 *
 *   s[q, j] = 2 q·x_j − |x_j|²,      |q − x_j|² = |q|² − s[q, j]
 *
 * s is what is ranked (larger = nearer; |q|² is the same for every j of a query), so
 * the block is one sgemm, one row_dot and one add_row on the backend (CPU or CUDA),
 * then a download and the running top-K (sched/topk.h): equal distances rank by the
 * lower training index, whatever the block sizes. Memory O(nq·(d + K) + nq·maxb),
 * never O(N).
 *
 * Thread safety: one knn per thread.
 */
#ifndef INFL_KNN_H
#define INFL_KNN_H

#include <stdint.h>

#include "core/internal.h"

typedef struct knn knn;

// Starts a search for nq >= 1 queries Q (nq, d) (backend memory, copied: the caller may
// free it after) among blocks of at most maxb >= 1 rows, keeping K >= 1 per query.
// INFL_E_ARG for bad sizes; *out owns it (knn_free).
infl_status knn_create(infl_ctx *ctx, knn **out, const float *Q, int nq, int d, int K, int maxb);
void knn_free(infl_ctx *ctx, knn *kn);  // accepts NULL

// Merges a block of b (1..maxb) training rows X (b, d) (backend), row j being training
// index index0 + j. INFL_E_NUMERIC names the first non-finite distance (NaN or Inf in
// the features).
infl_status knn_push(infl_ctx *ctx, knn *kn, const float *X, int b, int64_t index0);

// Outputs first (STYLE.md): idx (nq, K) and dist (nq, K) (dist may be NULL), host,
// row-major: query q's neighbours nearest first, equal distances by the lower index;
// squared distances (clamped at 0: round-off). *count = min(K, rows pushed) (may be NULL);
// entries past it are -1 and +Inf.
void knn_result(const knn *kn, int64_t *idx, float *dist, int *count);

#endif
