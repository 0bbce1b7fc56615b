/*
 * topk.h — the scheduler's running top-k: for each of M queries, the k training
 * examples with the largest scores (proponents) and the k with the smallest
 * (opponents), merged block by block as score blocks stream past (DESIGN.md "The
 * scheduler"). Memory is O(M·k), never O(N).
 *
 * Order: a score ranks above another when it is larger (top) or smaller (bottom);
 * equal scores rank by the smaller training index. This is a strict total order, so
 * the result does not depend on how the stream was cut into blocks.
 *
 * Thread safety: one infl_topk is not safe for concurrent push; infl_topk_get may be
 * called from several threads at once when no push runs. push parallelises over
 * queries with OpenMP itself.
 */
#ifndef INFL_SCHED_TOPK_H
#define INFL_SCHED_TOPK_H

#include <stdint.h>

#include "core/internal.h"

typedef struct infl_topk infl_topk;

// Creates an empty running top-k and bottom-k for M >= 1 queries, k >= 1 each.
// INFL_E_ARG for bad sizes, INFL_E_NOMEM when M·k entries cannot be allocated.
// *out owns it (infl_topk_free).
infl_status infl_topk_create(infl_ctx *ctx, int M, int k, infl_topk **out);
void infl_topk_free(infl_topk *t);  // accepts NULL

// Merges a block of scores. scores is (M, nb) row-major with leading dimension
// ld >= nb, host memory; column j belongs to training example index0 + j. Blocks may
// come in any order and any size (nb = 0 is a no-op), but each training index should
// be pushed once. A non-finite score is INFL_E_NUMERIC naming the query row and the
// training index of the first one (row-major order), and the block is not merged: a
// diverged checkpoint must not rank silently. M must equal the M given to create.
infl_status infl_topk_push(infl_ctx *ctx, infl_topk *t, const float *scores, int M, int nb, int ld,
                           int64_t index0);

// Several processes (core/comm.h), each having pushed its own part of the examples:
// collective; merges every process's top-k into one and gives it to every process, as if
// every part had been pushed into each (the order is strict: the same top-k, ties and all).
// The heaps cross as bytes: the processes share one binary and byte order.
infl_status infl_topk_reduce(infl_ctx *ctx, infl_topk *t);

// Query q's results, sorted: top by descending score, bottom by ascending score, ties
// by the smaller index. Writes *count = min(k, examples pushed) entries into each
// array that is not NULL (each must hold k entries). count may be NULL.
void infl_topk_get(const infl_topk *t, int q, int64_t *top_idx, float *top_score, int64_t *bot_idx,
                   float *bot_score, int *count);

// k, M and the number of training examples pushed so far.
int infl_topk_k(const infl_topk *t);
int infl_topk_m(const infl_topk *t);
int64_t infl_topk_seen(const infl_topk *t);

#endif
