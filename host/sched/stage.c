/*
 * stage.c — double-buffered sub-batches of a host shard on the backend (stage.h).
 */
#include "stage.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "core/comm.h"

infl_status infl_stage_alloc(infl_ctx *ctx, infl_stage *st, const infl_split *split, const infl_model *model,
                             int B, int64_t D, int64_t Kt, int64_t yf_width) {
    memset(st, 0, sizeof *st);
    st->B = B;
    st->D = D;
    st->Kt = Kt;
    st->split = split;
    st->model = model;
    char hint[128];
    snprintf(hint, sizeof hint, "--shard ROWS below %d makes the sub-batches smaller", B);
    for (int i = 0; i < 2; i++) {
        char what[96];
        snprintf(what, sizeof what, "sub-batch buffer %d of 2 (%d train rows x %" PRId64 " features)", i + 1, B, D);
        if (D > 0)  // documents (D = 0) stay on the host: the model reads their tokens there
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&st->x[i], (size_t)B * D * sizeof(float), what, hint));
        FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&st->y[i], (size_t)B * sizeof(int32_t), "sub-batch labels", hint));
        if (yf_width > 0)
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&st->yf[i], (size_t)B * yf_width * sizeof(float), "sub-batch targets", hint));
    }
    return INFL_OK;
}

void infl_stage_free(infl_ctx *ctx, infl_stage *st) {
    for (int i = 0; i < 2; i++) {
        infl_be_free(ctx, st->x[i]);
        infl_be_free(ctx, st->y[i]);
        infl_be_free(ctx, st->yf[i]);
    }
    memset(st, 0, sizeof *st);
}

infl_status infl_stage_put(infl_ctx *ctx, infl_stage *st, int i, const infl_shard *sh, int64_t r0, int b,
                           int labels) {
    RETURN_IF(ctx, (i != 0 && i != 1) || b < 0 || b > st->B, INFL_E_INTERNAL,
              "infl_stage_put: buffer %d, %d rows (at most %d)", i, b, st->B);
    st->put_r0[i] = r0;
    if (sh->tok) return INFL_OK;  // documents: the batch points into the host shard
    FORWARD_IF_ERROR(infl_be_upload_async(ctx, st->x[i], sh->x + (size_t)r0 * st->D, (size_t)b * st->D * sizeof(float),
                                          i));
    if (!labels) return INFL_OK;
    if (sh->y) {
        FORWARD_IF_ERROR(infl_model_check_labels(ctx, st->model, st->split, sh->y + r0, sh->row0 + r0, b));
        FORWARD_IF_ERROR(infl_be_upload_async(ctx, st->y[i], sh->y + r0, (size_t)b * sizeof(int32_t), i));
    }
    if (sh->yf) {
        RETURN_IF(ctx, !st->yf[i], INFL_E_INTERNAL, "infl_stage_put: no target buffer");
        FORWARD_IF_ERROR(infl_be_upload_async(ctx, st->yf[i], sh->yf + (size_t)r0 * st->Kt,
                                              (size_t)b * st->Kt * sizeof(float), i));
    }
    return INFL_OK;
}

infl_status infl_stage_take(infl_ctx *ctx, infl_stage *st, int i) {
    (void)st;
    return infl_be_wait_upload(ctx, i);
}

static int rows_from(const infl_stage *st, int64_t r0) {
    int64_t left = st->sh->n - r0;
    return (int)(left < st->B ? left : st->B);
}

infl_status infl_stage_begin(infl_ctx *ctx, infl_stage *st, const infl_shard *sh, int labels) {
    st->sh = sh;
    st->r0 = 0;
    st->cur = 0;
    st->labels = labels;
    if (sh->n <= 0) return INFL_OK;
    return infl_stage_put(ctx, st, 0, sh, 0, rows_from(st, 0), labels);
}

infl_status infl_stage_next(infl_ctx *ctx, infl_stage *st, int64_t *r0, int *b, int *cur) {
    *r0 = st->r0;
    *cur = st->cur;
    *b = st->r0 < st->sh->n ? rows_from(st, st->r0) : 0;
    if (*b == 0) return INFL_OK;
    FORWARD_IF_ERROR(infl_stage_take(ctx, st, *cur));
    st->r0 += *b;
    st->cur ^= 1;
    if (st->r0 < st->sh->n)  // prefetch: after the take of this one, before its work
        FORWARD_IF_ERROR(infl_stage_put(ctx, st, st->cur, st->sh, st->r0, rows_from(st, st->r0), st->labels));
    return INFL_OK;
}

infl_batch infl_stage_batch(const infl_stage *st, int cur, int b, int64_t index0, int labels) {
    infl_batch bt;
    memset(&bt, 0, sizeof bt);
    bt.b = b;
    bt.index0 = index0;
    bt.split = st->split;  // a captured model reads its rows there
    if (st->sh && st->sh->tok) {
        int64_t r0 = st->put_r0[cur];
        bt.T = st->sh->T;
        bt.tok = st->sh->tok + (size_t)r0 * st->sh->T;
        bt.len = st->sh->len + r0;
        return bt;
    }
    bt.x = st->x[cur];
    if (labels) {
        if (st->Kt)
            bt.yf = st->yf[cur];
        else
            bt.y = st->y[cur];
    }
    return bt;
}

infl_status infl_stage_stream(infl_ctx *ctx, infl_stage *st, infl_split *split, int64_t shard_rows, int T, int labels,
                              const infl_stream_fns *fn, const char *what, const char *info, double *wait_s) {
    const infl_split_info *in = store_split_info(split);
    infl_reader *rd = NULL;
    infl_status rc = INFL_OK;
    // this process's rows [b, e) of the range, and the steps every process takes: the most
    // shards any process has
    int64_t b = 0, e = in->n, steps = 0, step = 0;
    if (fn->ranks) {
        // every process starts here: a failure before it (another process's) ends the work now
        CHECK(infl_comm_sync(ctx, INFL_OK));
        int64_t unit = fn->ranks == INFL_STREAM_SHARDS ? shard_rows : 1, widest;
        CHECK(infl_comm_range(ctx, in->n, unit, store_split_ref(split), &b, &e, &widest));
        steps = unit > 1 ? widest : (widest + shard_rows - 1) / shard_rows;
    }
    if (T > 0)
        CHECK(infl_reader_start_docs(ctx, split, shard_rows, 2, b, e, T, infl_be_host_alloc_hook,
                                     infl_be_host_free_hook, ctx, &rd));
    else
        CHECK(infl_reader_start(ctx, split, shard_rows, 2, b, e, infl_be_host_alloc_hook, infl_be_host_free_hook, ctx,
                                &rd));
    int64_t done_rows = 0;
    for (;;) {
        infl_shard *sh;
        CHECK(infl_reader_next(ctx, rd, &sh));
        if (sh->n == 0) break;
        CHECK(infl_stage_begin(ctx, st, sh, labels));
        for (;;) {
            int64_t r0;
            int b, cur;
            CHECK(infl_stage_next(ctx, st, &r0, &b, &cur));
            if (b == 0) break;
            // a shard can be long (a language model's): Ctrl-C and SIGTERM between sub-batches too
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
            infl_batch bt = infl_stage_batch(st, cur, b, in->begin + sh->row0 + r0, labels);
            CHECK(fn->batch(ctx, fn->user, sh, r0, &bt));
        }
        if (fn->shard) CHECK(fn->shard(ctx, fn->user, sh));
        if (fn->step) CHECK(fn->step(ctx, fn->user, sh));
        step++;
        done_rows += sh->n;
        infl_reader_release(rd, sh);
        infl_progress(ctx, what, (uint64_t)done_rows, (uint64_t)(e - b), info);
    }
    // the steps of processes with more shards than this one's
    for (; fn->step && step < steps; step++) CHECK(fn->step(ctx, fn->user, NULL));
    if (wait_s) {
        double read_s = 0;
        infl_reader_stats(rd, &read_s, wait_s);
    }
done:
    infl_reader_stop(rd);
    return rc;
}
