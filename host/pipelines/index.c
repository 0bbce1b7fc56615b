/*
 * index.c — `infl index`: the gradient index of a training set (DESIGN.md
 * "Projection"). Streams the train split once (sched/stage.h), and for every
 * sub-batch and checkpoint runs the model's forward and backward (the seam), projects
 * each example's gradient (estimators/project.h) and appends the rows to the index
 * (store_index.c): φ of the margin loss m = log Σ_{k≠y} e^{z_k} − z_y for classifiers,
 * with q = 1 − p_y, so that q φ is the loss's gradient (∇ℓ = (1 − p_y) ∇m at the logits;
 * the division is exact and keeps float16 in range for confident examples), else the
 * loss's with q = 1. The partial file is flushed after every shard and a second call
 * resumes after the last complete one.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"
#include "core/comm.h"
#include "estimators/project.h"

const char *infl_projection_name(infl_projection p) {
    switch (p) {
    case INFL_PROJ_GAUSSIAN: return "gaussian";
    case INFL_PROJ_RADEMACHER: return "rademacher";
    case INFL_PROJ_KRON: return "kron";
    }
    return "?";
}

infl_index_options infl_index_options_default(void) {
    infl_index_options o = {0};
    o.projection = INFL_PROJ_RADEMACHER;
    o.dim = 2048;
    o.kron_out = 32;
    o.kron_in = 32;
    o.float16 = 1;
    o.shard_mb = 64;
    return o;
}

// 1 when the model's loss has a margin (a class label and p_y = e^{−ℓ}): φ is then the margin's.
int index_has_margin(const infl_model *m) {
    return !m->tokens && m->spec.kind == INFL_MODEL_MLP && m->spec.mlp.loss != INFL_LOSS_MSE;
}

// q (b) host = 1 − p_y = −expm1(−ℓ) from the losses, and phi's rows (b, k) host divided by it
// (the margin's gradient); margin 0: q = 1.
void index_margin_rows(float *phi, float *q, const float *loss, int b, int k, int margin) {
    for (int i = 0; i < b; i++) {
        if (!margin) {
            q[i] = 1.0f;
            continue;
        }
        double qi = -expm1(-(double)loss[i]);
        q[i] = (float)qi;
        // q underflows only when the loss does (p_y = 1 in float64): its gradient is then 0 too
        float inv = qi > 1e-37 ? (float)(1.0 / qi) : 0.0f;
        for (int j = 0; j < k; j++) phi[(size_t)i * k + j] *= inv;
    }
}

// Several processes (core/comm.h) gather each shard's rows to rank 0, which writes them: a
// shard's block is its head, then per checkpoint its rows' φ (S, k) and q (S).
typedef struct {
    int64_t row0, n;  // the shard's first row (within the streamed range) and rows; n = 0: none
} index_head;

typedef struct {
    attrib *a;
    infl_proj *p;
    infl_ixw *w;        // rank 0's writer (NULL elsewhere)
    int64_t row_base;   // rows of the index before the streamed range (a resumed call)
    int k, margin;
    float *phi;         // (B, k) backend
    float *hphi, *hq, *hl;  // (B, k), (B), (B) host
    index_head *blk;    // several processes: a shard's block (head, then S rows per checkpoint); else NULL
    int64_t S;          // its rows
    int64_t done0;      // rank 0's rows written, the prefix a resumed call starts after
    double flops_p, flops_fb;
} index_stream;

// Checkpoint c's φ (S, k) and q (S) in a shard's block.
static float *blk_phi(const index_stream *is, const index_head *h, int c) {
    return (float *)(h + 1) + (size_t)c * is->S * (is->k + 1);
}
static float *blk_q(const index_stream *is, const index_head *h, int c) { return blk_phi(is, h, c) + is->S * is->k; }

static infl_status index_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    index_stream *is = user;
    attrib *a = is->a;
    const infl_backend *be = ctx->be;
    int b = bt->b, k = is->k;
    int64_t row = is->row_base + sh->row0 + r0;
    for (int c = 0; c < a->nck; c++) {
        FORWARD_IF_ERROR(attrib_factors(ctx, a, c, bt, a->work));
        FORWARD_IF_ERROR(proj_batch(ctx, is->p, a->m, a->work, b, is->phi));
        FORWARD_IF_ERROR(be->download(ctx, is->hphi, is->phi, (size_t)b * k * sizeof(float)));
        FORWARD_IF_ERROR(be->download(ctx, is->hl, a->work->loss, (size_t)b * sizeof(float)));
        for (size_t i = 0; i < (size_t)b * k; i++)
            RETURN_IF(ctx, !isfinite(is->hphi[i]), INFL_E_NUMERIC,
                      "training example %" PRId64 ": its projected gradient at checkpoint %s is not finite: the "
                      "checkpoint may have diverged",
                      bt->index0 + (int64_t)(i / k), store_run_checkpoint(a->run, a->ck[c])->name);
        index_margin_rows(is->hphi, is->hq, is->hl, b, k, is->margin);
        if (is->blk) {
            // kept for the step's gather
            memcpy(blk_phi(is, is->blk, c) + (size_t)r0 * k, is->hphi, (size_t)b * k * sizeof(float));
            memcpy(blk_q(is, is->blk, c) + r0, is->hq, (size_t)b * sizeof(float));
        } else {
            FORWARD_IF_ERROR(store_index_write(ctx, is->w, c, row, b, is->hphi, is->hq));
        }
        is->flops_fb += infl_model_fb_flops(a->m, a->work->rows);
        is->flops_p += proj_flops(is->p, a->m, b, a->work->rows);
    }
    return INFL_OK;
}

static infl_status index_shard(infl_ctx *ctx, void *user, const infl_shard *sh) {
    index_stream *is = user;
    if (is->blk) return INFL_OK;  // the step writes
    return store_index_mark(ctx, is->w, is->row_base + sh->row0 + sh->n);
}

// On rank 0: a process's shard block into the index.
static infl_status index_take(infl_ctx *ctx, void *user, int from, const void *blk) {
    index_stream *is = user;
    const index_head *h = blk;
    if (h->n == 0) return INFL_OK;
    for (int c = 0; c < is->a->nck; c++)
        FORWARD_IF_ERROR(store_index_write(ctx, is->w, c, is->row_base + h->row0, h->n, blk_phi(is, h, c),
                                           blk_q(is, h, c)));
    if (from == 0) is->done0 = h->row0 + h->n;
    return INFL_OK;
}

// A step: every process's shard to rank 0, which writes them and marks its own prefix done.
static infl_status index_step(infl_ctx *ctx, void *user, const infl_shard *sh) {
    index_stream *is = user;
    *is->blk = (index_head){sh ? sh->row0 : 0, sh ? sh->n : 0};
    size_t bytes = sizeof(index_head) + (size_t)is->a->nck * is->S * (is->k + 1) * sizeof(float);
    FORWARD_IF_ERROR(infl_comm_gather(ctx, is->blk, bytes, index_take, is));
    return is->w ? store_index_mark(ctx, is->w, is->row_base + is->done0) : INFL_OK;
}

// The index's settings from the options, the open run and its checkpoints.
static infl_status index_info_fill(infl_ctx *ctx, attrib *a, const infl_index_options *o, const char *train,
                                   const infl_proj *p, infl_index_info *in) {
    memset(in, 0, sizeof *in);
    snprintf(in->run, sizeof in->run, "%s", o->run);
    snprintf(in->data, sizeof in->data, "%s", train);
    infl_model_describe(a->m, in->model, sizeof in->model);
    snprintf(in->projection, sizeof in->projection, "%s", infl_projection_name(o->projection));
    in->seed = o->seed;
    in->k = proj_dim(p);
    in->kron_out = o->projection == INFL_PROJ_KRON ? o->kron_out : 0;
    in->kron_in = o->projection == INFL_PROJ_KRON ? o->kron_in : 0;
    if (o->projection == INFL_PROJ_KRON) {
        in->L = a->L;
        for (int l = 0; l < a->L; l++) proj_layer_dims(p, l, &in->kdims[2 * l], &in->kdims[2 * l + 1]);
    }
    snprintf(in->target, sizeof in->target, "%s", index_has_margin(a->m) ? "margin" : "loss");
    in->float16 = o->float16 != 0;
    in->N = a->N;
    RETURN_IF(ctx, a->nck > INFL_INDEX_MAX_CK, INFL_E_ARG, "%d checkpoints: an index holds at most %d (--checkpoints)",
              a->nck, INFL_INDEX_MAX_CK);
    in->nck = a->nck;
    float *hp = infl_malloc(ctx, a->P * sizeof(float), "the parameters");
    if (!hp) return INFL_E_NOMEM;
    infl_status rc = INFL_OK;
    for (int c = 0; c < a->nck && rc == INFL_OK; c++) {
        in->ck[c] = *store_run_checkpoint(a->run, a->ck[c]);
        rc = store_run_load(ctx, a->run, a->ck[c], hp);
        in->ck_hash[c] = infl_weights_hash(hp, a->P);
    }
    free(hp);
    return rc;
}

// The train reference of rows [begin + skip, end) of `train`.
static infl_status index_tail_ref(infl_ctx *ctx, const char *train, int64_t skip, infl_dataref *ref) {
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, train, ref));
    ref->begin += skip;
    return INFL_OK;
}

static infl_status index_run(infl_ctx *ctx, const infl_index_options *o, const char *out_path,
                             infl_index_report *rep);

infl_status infl_index(infl_ctx *ctx, const infl_index_options *o, const char *out_path, infl_index_report *rep) {
    // every process leaves with the job's status (core/comm.h)
    return infl_comm_sync(ctx, index_run(ctx, o, out_path, rep));
}

static infl_status index_run(infl_ctx *ctx, const infl_index_options *o, const char *out_path,
                             infl_index_report *rep) {
    memset(rep, 0, sizeof *rep);
    RETURN_IF(ctx, !o->run || !*o->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "no output given (-o index.h5)");
    RETURN_IF(ctx, o->projection != INFL_PROJ_KRON && o->dim < 1, INFL_E_ARG, "--dim: expected at least 1 (got %d)",
              o->dim);
    double t0 = infl_now();
    infl_rank_options ro = infl_rank_options_default();
    ro.run = o->run;
    ro.train = o->train;
    ro.method = INFL_METHOD_TRAK;  // the checkpoints listed (all by default), whatever their learning rate
    ro.checkpoints = o->checkpoints;
    ro.shard_rows = o->shard_rows;
    ro.shard_mb = o->shard_mb > 0 ? o->shard_mb : 64;
    attrib a;
    infl_status rc = attrib_open(ctx, &a, &ro, 0);
    if (rc < 0) return rc;
    infl_proj *p = NULL;
    infl_ixw *w = NULL;
    infl_index_info *in = NULL;
    infl_split *tail = NULL;
    float *phi = NULL, *hphi = NULL, *hq = NULL, *hl = NULL;
    index_head *blk = NULL;
    const char *train = o->train && *o->train ? o->train : store_run_data(a.run);

    // sub-batches of up to 1024 examples (a language model's within its token budget)
    a.B = 0;
    int64_t rows_done = 0;
    in = infl_malloc(ctx, sizeof *in, "the index settings");
    GOTO_NOMEM_IF(!in);
    {
        int B = a.tokens ? 64 : 1024;
        if (o->shard_rows > 0 && o->shard_rows < B) B = (int)o->shard_rows;
        CHECK(proj_create(ctx, a.m, o->projection, o->dim, o->kron_out, o->kron_in, o->seed, B,
                          B * (a.tokens ? a.ctxT : 1), &p));
        a.B = B;
    }
    CHECK(index_info_fill(ctx, &a, o, train, p, in));
    // rank 0 writes (and finds where a partial file stops)
    if (infl_comm_root(ctx)) CHECK(store_index_begin(ctx, out_path, o->force, in, &w, &rows_done));
    CHECK(infl_comm_bcast(ctx, &rows_done, sizeof rows_done));
    rep->resumed_rows = rows_done;
    rep->N = a.N;
    rep->k = proj_dim(p);
    rep->checkpoints = a.nck;
    rep->bytes_per_example = (double)a.nck * (proj_dim(p) * (o->float16 ? 2.0 : 4.0) + 4.0);
    if (rows_done > 0 && rows_done < a.N) {
        // resume: stream only the rows after the last complete shard
        infl_dataref ref;
        CHECK(index_tail_ref(ctx, train, rows_done, &ref));
        CHECK(store_split_open(ctx, &ref, &tail));
        store_split_close(a.train);
        a.train = tail;
        tail = NULL;
    }
    if (rows_done < a.N) {
        CHECK(attrib_alloc_scoring(ctx, &a, 0, 0));
        int k = proj_dim(p);
        CHECK(infl_be_alloc_hint(ctx, (void **)&phi, (size_t)a.B * k * sizeof(float), "projected gradients",
                                 "a smaller --dim or --shard"));
        hphi = infl_malloc(ctx, (size_t)a.B * k * sizeof(float), "projected gradients");
        hq = infl_malloc(ctx, (size_t)a.B * sizeof(float), "margins");
        hl = infl_malloc(ctx, (size_t)a.B * sizeof(float), "losses");
        GOTO_NOMEM_IF(!hphi || !hq || !hl);
        int64_t S = attrib_shard_rows(&a);
        if (infl_comm_size(ctx) > 1) {
            // a shard's rows held for the gather: within --shard-mb too (at least a sub-batch)
            double mb = o->shard_mb > 0 ? o->shard_mb : 64;
            int64_t cap = (int64_t)(mb * 1048576.0 / (4.0 * a.nck * (k + 1.0)));
            cap = cap < a.B ? a.B : cap;
            S = S < cap ? S : cap;
            char what[128];
            snprintf(what, sizeof what, "a shard's projected gradients (%" PRId64 " rows x %d checkpoints x %d)", S,
                     a.nck, k);
            blk = infl_malloc(ctx, sizeof(index_head) + (size_t)a.nck * S * (k + 1) * sizeof(float), what);
            GOTO_NOMEM_IF(!blk);
        }
        index_stream is = {.a = &a, .p = p, .w = w, .row_base = rows_done, .k = k, .margin = index_has_margin(a.m),
                           .phi = phi, .hphi = hphi, .hq = hq, .hl = hl, .blk = blk, .S = S};
        infl_stream_fns fns = {.batch = index_batch, .shard = index_shard, .user = &is, .ranks = INFL_STREAM_ROWS,
                               .step = blk ? index_step : NULL};
        char info[96];
        snprintf(info, sizeof info, "%s, k %d, %d checkpoint%s", infl_projection_name(o->projection), k, a.nck,
                 a.nck > 1 ? "s" : "");
        CHECK(infl_stage_stream(ctx, &a.st, a.train, S, a.docs ? a.ctxT : 0, 1, &fns, "index", info,
                                &rep->seconds_wait));
        rep->flops_project = is.flops_p;
        rep->flops_fb = is.flops_fb;
    }
    CHECK(infl_comm_sync(ctx, INFL_OK));  // rank 0 commits once every process has done its part
    if (w) {
        rc = store_index_commit(ctx, w);
        w = NULL;
        CHECK(rc);
    }
    rep->seconds = infl_now() - t0;
done:
    store_index_close(w);  // keeps out_path.partial to resume from
    store_split_close(tail);
    proj_free(ctx, p);
    infl_be_free(ctx, phi);
    free(hphi);
    free(hq);
    free(hl);
    free(blk);
    free(in);
    attrib_close(&a);
    return rc;
}
