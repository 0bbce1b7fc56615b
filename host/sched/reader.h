/*
 * reader.h — the scheduler's shard reader (DESIGN.md "The scheduler"): a thread that
 * streams a split's rows in order, shard by shard, into a ring of 2–3 host buffers
 * allocated up front, so that reading the next shard from HDF5 overlaps with the
 * work on the current one. Memory is nbuf × shard_rows × (d + k) floats, never
 * growing with N.
 *
 * Usage:
 *     infl_reader *r;
 *     CHECK(infl_reader_start(ctx, split, 4096, 2, 0, -1, NULL, NULL, NULL, &r));
 *     for (;;) {
 *         infl_shard *sh;
 *         CHECK(infl_reader_next(ctx, r, &sh));
 *         if (sh->n == 0) break;
 *         ... use sh->x (sh->n, d) for rows sh->row0 .. ...
 *         infl_reader_release(r, sh);
 *     }
 *   done:
 *     infl_reader_stop(r);
 *
 * Threads: the reader thread calls only store_split_read (under the store lock) with
 * a private context; next / release / stop / stats are called from one consumer
 * thread. The split must stay open, and must not be read by the consumer, until
 * infl_reader_stop returns.
 */
#ifndef INFL_SCHED_READER_H
#define INFL_SCHED_READER_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"
#include "store/store.h"

typedef struct {
    int64_t row0;  // first row of the shard, relative to the split's selected range
    int64_t n;     // rows in this shard (0 marks the end of the stream)
    float *x;      // (n, d) host memory
    int32_t *y;    // (n) class labels, or NULL for real targets
    float *yf;     // (n, k) real targets, or NULL
    // documents (infl_reader_start_docs; x and yf NULL, y the class labels):
    int T;         // tokens kept per document
    int32_t *tok;  // (n, T) each document's first min(len, T) tokens, padded with 0
    int32_t *len;  // (n) the documents' full lengths
} infl_shard;

typedef struct infl_reader infl_reader;

// Host allocator for the ring's buffers (e.g. pinned memory for CUDA); user is passed
// through. Return NULL on failure.
typedef void *(*infl_host_alloc_fn)(size_t bytes, void *user);
typedef void (*infl_host_free_fn)(void *p, void *user);

// Starts a reader thread (pthreads) that reads rows [begin, end) of the split's
// selected range (end = -1: to its end; begin == end is an empty stream) in order, in
// shards of shard_rows >= 1 rows (the last may be shorter), into a ring of nbuf (2 or
// 3) buffers. Each buffer is one allocation of min(shard_rows, end - begin) × (d + k)
// × 4 bytes by `alloc` (NULL: malloc; free_fn must then be NULL too, and is used
// otherwise): x first, then y or yf. On success *out owns the reader
// (infl_reader_stop); on failure nothing is left running or allocated.
infl_status infl_reader_start(infl_ctx *ctx, infl_split *split, int64_t shard_rows, int nbuf, int64_t begin,
                              int64_t end, infl_host_alloc_fn alloc, infl_host_free_fn free_fn, void *user,
                              infl_reader **out);

// The same for a documents split: shards of shard_rows documents, each read as its
// first T tokens (store_split_read_docs) into tok, with len and y; a buffer is
// rows × (T + 2) × 4 bytes. infl_reader_start refuses a documents split and this a
// rows split (INFL_E_ARG).
infl_status infl_reader_start_docs(infl_ctx *ctx, infl_split *split, int64_t shard_rows, int nbuf, int64_t begin,
                                   int64_t end, int T, infl_host_alloc_fn alloc, infl_host_free_fn free_fn,
                                   void *user, infl_reader **out);

// Blocks until the next shard is ready and points *shard at it; at the end of the
// stream *shard is an end marker with n == 0 (returned again on further calls). The
// shard's buffers are the caller's until infl_reader_release. An error in the reader
// thread (bad values in the file, I/O) is returned here, in stream order, with its
// detail copied into ctx, and again on further calls. When ctx's cancel flag is set
// (checked on entry and while waiting) it stops the reader and returns
// INFL_E_INTERRUPTED. INFL_E_ARG when the caller holds all nbuf shards (release one
// first: waiting would never end). *shard is NULL on any error.
infl_status infl_reader_next(infl_ctx *ctx, infl_reader *r, infl_shard **shard);

// Hands a shard's buffer back for reuse; shards may be released in any order. The end
// marker and NULL are accepted and ignored.
void infl_reader_release(infl_reader *r, infl_shard *shard);

// Stops the thread (mid-stream too: it finishes its current read and exits), joins it,
// frees the buffers and the reader. Accepts NULL.
void infl_reader_stop(infl_reader *r);

// Seconds the thread has spent in store_split_read, and seconds infl_reader_next has
// spent waiting for a shard (small wait_s = the reads hid behind the consumer's work).
// Either pointer may be NULL.
void infl_reader_stats(const infl_reader *r, double *read_s, double *wait_s);

#endif
