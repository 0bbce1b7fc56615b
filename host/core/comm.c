/*
 * comm.c — the library's side of several processes (comm.h): the communicator table a
 * caller sets on the context, each process's share of the rows, and the collective steps
 * with their status agreement first.
 */
#include "comm.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void infl_ctx_set_comm(infl_ctx *ctx, const infl_comm *comm) {
    if (ctx) ctx->comm = comm && comm->size > 1 ? comm : NULL;
}

int infl_comm_rank(const infl_ctx *ctx) { return ctx->comm ? ctx->comm->rank : 0; }
int infl_comm_size(const infl_ctx *ctx) { return ctx->comm ? ctx->comm->size : 1; }

// x r / R without overflow for any x < 2^63 and R < 2^31
static int64_t part(int64_t x, int64_t r, int64_t R) { return r * (x / R) + r * (x % R) / R; }

infl_status infl_comm_range(infl_ctx *ctx, int64_t n, int64_t unit, const char *what, int64_t *begin, int64_t *end,
                            int64_t *widest) {
    int64_t R = infl_comm_size(ctx), r = infl_comm_rank(ctx), u = unit > 1 ? (n + unit - 1) / unit : n;
    unit = unit > 1 ? unit : 1;
    *begin = 0;
    *end = n;
    if (widest) *widest = u;
    if (R == 1) return INFL_OK;
    RETURN_IF(ctx, n < R, INFL_E_ARG,
              "%s: %" PRId64 " rows cannot be split across %" PRId64
              " processes (mpirun -np %" PRId64 "): each needs at least one; run at most %" PRId64 " processes",
              what, n, R, R, n);
    int64_t b = part(u, r, R) * unit, e = part(u, r + 1, R) * unit;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
    if (widest) *widest = u / R + (u % R != 0);
    return INFL_OK;
}

infl_status infl_comm_sync(infl_ctx *ctx, infl_status rc) {
    const infl_comm *c = ctx->comm;
    if (!c) return rc;
    int st = rc;
    if (c->agree(c->user, &st, ctx->detail, sizeof ctx->detail) != 0)
        return infl_seterr(ctx, INFL_E_IO, "rank %d: the processes could not agree on their status (MPI failed)",
                           c->rank);
    return (infl_status)st;
}

// A transport failure as a status.
static infl_status transport(infl_ctx *ctx, int err, const char *what) {
    if (err == 0) return INFL_OK;
    return infl_seterr(ctx, INFL_E_IO, "rank %d: %s across the processes failed (MPI)", ctx->comm->rank, what);
}

infl_status infl_comm_sum_f64(infl_ctx *ctx, double *buf, size_t n) {
    FORWARD_IF_ERROR(infl_comm_sync(ctx, INFL_OK));
    if (!ctx->comm) return INFL_OK;
    return transport(ctx, ctx->comm->sum_f64(ctx->comm->user, buf, n), "a sum");
}

infl_status infl_comm_sum_i64(infl_ctx *ctx, int64_t *buf, size_t n) {
    FORWARD_IF_ERROR(infl_comm_sync(ctx, INFL_OK));
    if (!ctx->comm) return INFL_OK;
    return transport(ctx, ctx->comm->sum_i64(ctx->comm->user, buf, n), "a sum");
}

infl_status infl_comm_bcast(infl_ctx *ctx, void *buf, size_t bytes) {
    FORWARD_IF_ERROR(infl_comm_sync(ctx, INFL_OK));
    if (!ctx->comm) return INFL_OK;
    return transport(ctx, ctx->comm->bcast(ctx->comm->user, buf, bytes, 0), "a broadcast");
}

typedef struct {
    infl_ctx *ctx;
    infl_comm_taker take;
    void *user;
} take_arg;  // the library's taker behind the table's infl_comm_take_fn

static int take_one(void *arg, int from, const void *block) {
    take_arg *t = arg;
    return t->take(t->ctx, t->user, from, block);
}

infl_status infl_comm_gather(infl_ctx *ctx, const void *buf, size_t bytes, infl_comm_taker take, void *user) {
    FORWARD_IF_ERROR(infl_comm_sync(ctx, INFL_OK));
    if (!ctx->comm) return take(ctx, user, 0, buf);
    take_arg t = {ctx, take, user};
    int e = ctx->comm->gather(ctx->comm->user, buf, bytes, 0, take_one, &t);
    // take's own status (negative, its detail set) or the transport's
    if (e < 0) return (infl_status)e;
    return transport(ctx, e, "a gather");
}

// A block of infl_comm_gather_rows: its rows, then their bytes.
typedef struct {
    int64_t row0, n;
} rows_head;

typedef struct {
    char *dst;
    size_t width;
} rows_arg;

static infl_status take_rows(infl_ctx *ctx, void *user, int from, const void *block) {
    (void)ctx;
    (void)from;
    rows_arg *r = user;
    rows_head h;
    memcpy(&h, block, sizeof h);
    memcpy(r->dst + (size_t)h.row0 * r->width, (const char *)block + sizeof h, (size_t)h.n * r->width);
    return INFL_OK;
}

infl_status infl_comm_gather_rows(infl_ctx *ctx, void *dst, size_t width, int64_t row0, int64_t n, int64_t most) {
    if (!ctx->comm) return INFL_OK;
    size_t bytes = sizeof(rows_head) + (size_t)most * width;
    char *buf = infl_malloc(ctx, bytes, "rows to gather across processes");
    if (!buf) return INFL_E_NOMEM;
    rows_head h = {row0, n};
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, (const char *)dst + (size_t)row0 * width, (size_t)n * width);
    rows_arg r = {dst, width};
    infl_status rc = infl_comm_gather(ctx, buf, bytes, take_rows, &r);
    free(buf);
    return rc;
}
