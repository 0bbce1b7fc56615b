/*
 * comm.h — the library's side of several processes (include/infl.h, infl_comm): which
 * rows of a split a process streams, and the collective steps the pipelines take over
 * the context's communicator. Without one (or with one of size 1) every function is the
 * single process's: rank 0 of 1, all rows, sums and gathers of one.
 *
 * The rule that keeps processes in step when one fails: every collective here first
 * agrees on the status (infl_comm_sync), and a pipeline that may run under a
 * communicator ends with `rc = infl_comm_sync(ctx, rc)` at its `done:` label. A process
 * that fails jumps to `done:` and its agreement meets the others' next one, which then
 * fails on every process with its status and detail; after a failed agreement later
 * ones fail at once without communicating, so every process leaves by the same path.
 * Output files are written by rank 0 only, and committed after an agreement.
 */
#ifndef INFL_CORE_COMM_H
#define INFL_CORE_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

// This process's rank (0 without a communicator), the job's processes (1 without one),
// and whether this process is the one that writes (rank 0).
int infl_comm_rank(const infl_ctx *ctx);
int infl_comm_size(const infl_ctx *ctx);
static inline int infl_comm_root(const infl_ctx *ctx) { return infl_comm_rank(ctx) == 0; }

// This process's rows of a range of n cut into units of `unit` rows (the last may be
// shorter): units [r u / R, (r + 1) u / R) of the u = ⌈n / unit⌉, as rows [*begin, *end);
// unit 1: rows [r n / R, (r + 1) n / R). *widest (may be NULL) gets the most units any
// process has, ⌈u / R⌉. what names the rows for the error when R > n (INFL_E_ARG: every
// process needs a row; with R > u some processes get none).
infl_status infl_comm_range(infl_ctx *ctx, int64_t n, int64_t unit, const char *what, int64_t *begin, int64_t *end,
                            int64_t *widest);

// The status agreement: rc (this process's) in, the job's out (the rule above); the detail
// of a failure elsewhere is copied into ctx's (infl_comm.agree prefixes "rank R: "); a
// transport failure is INFL_E_IO. Returns rc unchanged without a communicator.
infl_status infl_comm_sync(infl_ctx *ctx, infl_status rc);

// After an agreement: element-wise sums across processes, in place, on every process.
infl_status infl_comm_sum_f64(infl_ctx *ctx, double *buf, size_t n);
infl_status infl_comm_sum_i64(infl_ctx *ctx, int64_t *buf, size_t n);
// After an agreement: rank 0's bytes to every process.
infl_status infl_comm_bcast(infl_ctx *ctx, void *buf, size_t bytes);

// What rank 0 does with each process's block in a gather: `from` the process, block its
// bytes; a failure stops the taking (the rest is received and dropped).
typedef infl_status (*infl_comm_taker)(infl_ctx *ctx, void *user, int from, const void *block);
// After an agreement: every process's `bytes` bytes to rank 0, which takes them one
// process at a time in rank order (its own first). take is called on rank 0 only.
infl_status infl_comm_gather(infl_ctx *ctx, const void *buf, size_t bytes, infl_comm_taker take, void *user);

// After an agreement: every process's rows [row0, row0 + n) of dst (rows of `width` bytes,
// n <= most on every process) into rank 0's dst at the same rows (a gather of most rows
// each). Without a communicator the rows are where they belong already.
infl_status infl_comm_gather_rows(infl_ctx *ctx, void *dst, size_t width, int64_t row0, int64_t n, int64_t most);

#endif
