/*
 * stage.h — the scheduler's sub-batch stager (DESIGN.md "The scheduler"): rows of a
 * host shard go to the backend in sub-batches of at most B rows, double-buffered, so
 * that the upload of sub-batch i+1 runs on the copy stream while sub-batch i is
 * computed (upload_async / wait_upload of host/backend.h; on the CPU backend the
 * same calls are plain copies, in the same order, so results do not change).
 *
 * Usage, over the sub-batches of one shard sh:
 *     CHECK(infl_stage_begin(ctx, &st, sh, 1));
 *     for (;;) {
 *         int64_t r0;
 *         int b, cur;
 *         CHECK(infl_stage_next(ctx, &st, &r0, &b, &cur));  // b = 0: the shard is done
 *         if (b == 0) break;
 *         ... compute on st.x[cur], st.y[cur], st.yf[cur]; download the results ...
 *     }
 * which is, underneath, put(0), then per sub-batch i: take(i), put(i+1), work(i).
 * The put of sub-batch i+1 comes after the take of i and before i's work is issued:
 * its copy waits for the work issued before it (which may still read the buffer),
 * so issued later it would wait for sub-batch i's work and not overlap it.
 * The shard's host memory must stay until the last sub-batch's results are
 * downloaded (release it to the reader after that). Documents (shards of
 * infl_reader_start_docs; D = 0) are not uploaded: a batch points at its documents'
 * tokens in the host shard, which the model reads there.
 */
#ifndef INFL_SCHED_STAGE_H
#define INFL_SCHED_STAGE_H

#include <stdint.h>

#include "models/model.h"
#include "store/store.h"
#include "reader.h"

typedef struct {
    int B;        // rows per buffer
    int64_t D;    // features
    int64_t Kt;   // real-target width of the data (0: class labels)
    float *x[2];      // (B, D) backend
    int32_t *y[2];    // (B) class labels (always allocated: sampled labels go here too)
    float *yf[2];     // (B, kf) real targets, kf = max(Kt, K of the model) when asked
    // for the model's label check on the host, before upload
    const infl_split *split;
    const infl_model *model;
    // the shard being iterated (infl_stage_begin / infl_stage_next)
    const infl_shard *sh;
    int64_t r0;   // first row of the next sub-batch
    int cur;      // its buffer
    int64_t put_r0[2];  // the first row of each buffer's last put (documents point into the shard)
    int labels;
} infl_stage;

// Two buffer sets of B rows: x (B, D), y (B) and yf (B, kf) with kf = yf_width
// (0: none). Failures name the buffer and how to make it smaller (--shard below B).
// On failure the buffers already made are freed by infl_stage_free (call it always).
infl_status infl_stage_alloc(infl_ctx *ctx, infl_stage *st, const infl_split *split, const infl_model *model,
                             int B, int64_t D, int64_t Kt, int64_t yf_width);
void infl_stage_free(infl_ctx *ctx, infl_stage *st);  // accepts a zeroed stage
// Queues rows [r0, r0 + b) of sh into buffer i (0 or 1): x, and with `labels` the
// labels (checked against the model on the host) or real targets.
infl_status infl_stage_put(infl_ctx *ctx, infl_stage *st, int i, const infl_shard *sh, int64_t r0, int b,
                           int labels);
// Makes the backend work issued from now on see buffer i's last put.
infl_status infl_stage_take(infl_ctx *ctx, infl_stage *st, int i);
// Starts iterating the sub-batches of sh: queues the first (with `labels`, as put).
infl_status infl_stage_begin(infl_ctx *ctx, infl_stage *st, const infl_shard *sh, int labels);
// The next sub-batch: *b rows (0 when the shard is done) from row *r0 of the shard, in
// buffer *cur, taken; the one after it is queued.
infl_status infl_stage_next(infl_ctx *ctx, infl_stage *st, int64_t *r0, int *b, int *cur);
// The model's view of buffer cur holding b rows whose first is row `index0` of the split
// (absolute within it, the key of sampled labels); with `labels` the data's targets
// (labels or real targets) are part of it, else none.
infl_batch infl_stage_batch(const infl_stage *st, int cur, int b, int64_t index0, int labels);

// ---- the whole stream ----

// What a pipeline does with the stream: batch for every sub-batch (bt: the model's view of
// it, labels as asked; r0 its first row within the shard), then shard once the shard's
// sub-batches are done (may be NULL); user is theirs.
// Several processes (core/comm.h): with `ranks`, each process streams only its own range
// of the rows (infl_comm_range; rows keep their numbers within the split's range):
// INFL_STREAM_ROWS, rows [r N / R, (r + 1) N / R); INFL_STREAM_SHARDS, whole shards of the
// single process's stream (its sums per shard are then the single process's, e.g. fit's
// float accumulators; with fewer shards than processes some have none). step (may be
// NULL) is then called after every shard's `shard` on every process the same number of
// times, with NULL once its own shards are done: the place for a collective step per shard
// (a gather of its results to rank 0). Without a communicator, step follows every shard.
enum { INFL_STREAM_ALL = 0, INFL_STREAM_ROWS = 1, INFL_STREAM_SHARDS = 2 };
typedef struct {
    infl_status (*batch)(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt);
    infl_status (*shard)(infl_ctx *ctx, void *user, const infl_shard *sh);
    void *user;
    int ranks;
    infl_status (*step)(infl_ctx *ctx, void *user, const infl_shard *sh);
} infl_stream_fns;

// Streams the whole split (with fn->ranks, this process's share of it) through st: a
// reader thread (reader.h) with shards of shard_rows rows in the backend's host memory
// (documents of T tokens when T > 0, rows when T = 0), each shard's sub-batches
// double-buffered as above, the cancel flag looked at between sub-batches, progress
// reported as `what` (with `info`) after every shard. *wait_s (may be NULL) gets the
// seconds spent waiting for the reader.
infl_status infl_stage_stream(infl_ctx *ctx, infl_stage *st, infl_split *split, int64_t shard_rows, int T, int labels,
                              const infl_stream_fns *fn, const char *what, const char *info, double *wait_s);

#endif
