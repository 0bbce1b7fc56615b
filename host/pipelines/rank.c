/*
 * rank.c — `infl rank` and `infl self`: the attribution pipelines.
 *
 * Queries are prepared once (their per-example factors at every checkpoint used, or
 * for influence functions their preconditioned gradients (H + λI)⁻¹ ∇L_q), then the
 * train split streams past on a reader thread, shard by shard, and each shard's
 * score block (M, n) is merged into a running top-k and bottom-k per query.
 *
 * Score blocks, per sub-batch of b train rows and per checkpoint c:
 *  - graddot / gradcos / tracin, by the ghost dot product (DESIGN.md): per layer
 *    (Δ_Q Δ_Zᵀ) ∘ (A_Q A_Zᵀ + 1), two GEMMs and a Hadamard product; per-example
 *    gradients are never formed. gradcos divides by |∇L_q| |∇ℓ_z|, where
 *    |∇ℓ_z|² = Σ_l |δ|² (|a|² + 1).
 *  - if: by contraction with the preconditioned queries V_q (DESIGN.md, EK-FAC
 *    scores): S[q, z] += Σ_l δ_lᵀ V_q,l ã_{l-1}, one GEMM (b, d_out)·(d_out, d_in) and
 *    a row dot per query and layer; train gradients are never formed.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "models/mlp.h"
#include "models/train.h"
#include "sched/reader.h"
#include "sched/topk.h"
#include "store/store.h"
#include "attrib.h"
#include "models/hvp.h"
#include "estimators/ihvp.h"

infl_rank_options infl_rank_options_default(void) {
    infl_rank_options o;
    memset(&o, 0, sizeof o);
    o.method = INFL_METHOD_TRACIN;
    o.top = 10;
    o.hessian = INFL_HESS_EXACT;
    o.solver = INFL_SOLVER_CG;
    o.damping = 1e-3;
    o.cg_iters = 100;
    o.cg_tol = 1e-6;
    o.lissa_depth = 1000;
    o.lissa_scale = 10;
    o.lissa_repeats = 1;
    o.shard_mb = 64;
    return o;
}

const char *infl_method_name(infl_method m) {
    switch (m) {
    case INFL_METHOD_GRADDOT: return "graddot";
    case INFL_METHOD_GRADCOS: return "gradcos";
    case INFL_METHOD_TRACIN: return "tracin";
    case INFL_METHOD_IF: return "if";
    case INFL_METHOD_EKFAC: return "ekfac";
    case INFL_METHOD_KFAC: return "kfac";
    case INFL_METHOD_DIAGONAL: return "diagonal";
    }
    return "?";
}

// ---- checkpoints ----

// Fills a->ck / a->weight from the options: tracin takes all checkpoints (or a list)
// weighted by lr; the others one checkpoint with weight 1.
static infl_status pick_checkpoints(infl_ctx *ctx, attrib *a, const infl_rank_options *o) {
    int n = store_run_ncheckpoints(a->run);
    a->ck = calloc((size_t)n, sizeof(int));
    a->weight = calloc((size_t)n, sizeof(double));
    RETURN_IF(ctx, !a->ck || !a->weight, INFL_E_NOMEM, "out of memory");
    if (o->method != INFL_METHOD_TRACIN) {
        // ekfac: the checkpoint the factors were fitted on, unless one is named
        const char *name = o->checkpoint;
        if (a->fac && (!name || !*name)) name = a->fac->checkpoint;
        FORWARD_IF_ERROR(store_run_find(ctx, a->run, name, &a->ck[0]));
        a->weight[0] = 1.0;
        a->nck = 1;
        return INFL_OK;
    }
    if (!o->checkpoints || !*o->checkpoints || strcmp(o->checkpoints, "all") == 0) {
        for (int i = 0; i < n; i++) {
            a->ck[i] = i;
            a->weight[i] = store_run_checkpoint(a->run, i)->lr;
        }
        a->nck = n;
    } else {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", o->checkpoints);
        a->nck = 0;
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            RETURN_IF(ctx, a->nck >= n, INFL_E_ARG, "--checkpoints: more names than the run has checkpoints (%d)", n);
            int i;
            FORWARD_IF_ERROR(store_run_find(ctx, a->run, t, &i));
            for (int j = 0; j < a->nck; j++)
                RETURN_IF(ctx, a->ck[j] == i, INFL_E_ARG, "--checkpoints: '%s' is named twice", t);
            a->ck[a->nck] = i;
            a->weight[a->nck++] = store_run_checkpoint(a->run, i)->lr;
        }
        RETURN_IF(ctx, a->nck == 0, INFL_E_ARG, "--checkpoints '%s' names no checkpoint", o->checkpoints);
    }
    // in step order (the TracIn sum does not depend on it; the queries' labels,
    // predictions and losses are reported at the last one, the latest)
    for (int i = 1; i < a->nck; i++)
        for (int j = i; j > 0 && store_run_checkpoint(a->run, a->ck[j])->step <
                                     store_run_checkpoint(a->run, a->ck[j - 1])->step; j--) {
            int t = a->ck[j];
            a->ck[j] = a->ck[j - 1];
            a->ck[j - 1] = t;
            double tw = a->weight[j];
            a->weight[j] = a->weight[j - 1];
            a->weight[j - 1] = tw;
        }
    for (int i = 0; i < a->nck; i++)
        RETURN_IF(ctx, !(a->weight[i] > 0) || !isfinite(a->weight[i]), INFL_E_FORMAT,
                  "%s: checkpoint %s has lr = %g; TracIn weighs checkpoints by their learning rate and needs lr > 0 "
                  "(a run trained by Newton has none: use --method graddot or if)",
                  store_run_path(a->run), store_run_checkpoint(a->run, a->ck[i])->name, a->weight[i]);
    return INFL_OK;
}

// ---- opening ----

size_t attrib_max_layer_params(const attrib *a) {
    size_t maxpl = 0;
    for (int l = 0; l < a->L; l++) {
        size_t pl = (size_t)a->spec->widths[l + 1] * (a->spec->widths[l] + 1);
        maxpl = pl > maxpl ? pl : maxpl;
    }
    return maxpl;
}

void attrib_close(attrib *a) {
    infl_ctx *ctx = a->ctx;
    if (!ctx) return;
    if (a->Wd)
        for (int c = 0; c < a->nck; c++) infl_be_free(ctx, a->Wd[c]);
    free(a->Wd);
    if (a->qD)
        for (int i = 0; i < a->nck * a->L; i++) {
            infl_be_free(ctx, a->qD[i]);
            infl_be_free(ctx, a->qA[i]);
        }
    free(a->qD);
    free(a->qA);
    infl_be_free(ctx, a->V);
    infl_stage_free(ctx, &a->st);
    infl_be_free(ctx, a->Sd);
    infl_be_free(ctx, a->T1);
    infl_be_free(ctx, a->T2);
    infl_be_free(ctx, a->Gz);
    infl_be_free(ctx, a->rn);
    for (int l = 0; l < INFL_MAX_LAYERS; l++) {
        infl_be_free(ctx, a->LF[l]);
        infl_be_free(ctx, a->RF[l]);
    }
    infl_be_free(ctx, a->X1);
    infl_be_free(ctx, a->X2);
    ekfac_pre_free(ctx, a->pre);
    infl_factors_free(a->fac);
    infl_mlp_work_free(ctx, a->work);
    free(a->ck);
    free(a->weight);
    free(a->qinv);
    free(a->hrow);
    free(a->hrow2);
    store_split_close(a->train);
    store_split_close(a->query);
    store_run_close(a->run);
    memset(a, 0, sizeof *a);
}

infl_status attrib_open(infl_ctx *ctx, attrib *a, const infl_rank_options *o, int need_query) {
    memset(a, 0, sizeof *a);
    a->ctx = ctx;
    a->o = o;
    infl_status rc = INFL_OK;
    RETURN_IF(ctx, !o->run || !*o->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, (unsigned)o->method > INFL_METHOD_DIAGONAL, INFL_E_ARG, "unknown method %d", (int)o->method);
    if (attrib_is_ekfac(o->method)) {
        RETURN_IF(ctx, !o->factors || !*o->factors, INFL_E_ARG,
                  "--method %s needs --factors factors.h5 (made by infl fit --strategy %s)", infl_method_name(o->method),
                  o->method == INFL_METHOD_DIAGONAL ? "diagonal" : "ekfac");
        RETURN_IF(ctx, o->query_rank < 0, INFL_E_ARG, "--query-rank: expected a rank >= 1");
    } else {
        RETURN_IF(ctx, o->query_rank != 0, INFL_E_ARG, "--query-rank goes with --method ekfac, kfac or diagonal");
    }
    if (attrib_is_ekfac(o->method)) CHECK(store_factors_read(ctx, o->factors, &a->fac));
    CHECK(store_run_open(ctx, o->run, &a->run));
    a->spec = store_run_spec(a->run);
    a->L = a->spec->L;
    if (a->fac) CHECK(ekfac_check_shape(ctx, a->fac, o->factors, a->spec));
    a->P = infl_mlp_nparams(a->spec);
    CHECK(pick_checkpoints(ctx, a, o));

    const char *train = o->train && *o->train ? o->train : store_run_data(a->run);
    GOTO_IF(ctx, !train || !*train, INFL_E_ARG, "%s: the run names no training data; give --train FILE:/split",
            o->run);
    infl_dataref ref;
    CHECK(infl_dataref_parse(ctx, train, &ref));
    CHECK(store_split_open(ctx, &ref, &a->train));
    CHECK(infl_check_data_for_model(ctx, a->train, a->spec));
    const infl_split_info *ti = store_split_info(a->train);
    a->N = ti->n;
    a->D = ti->d;
    a->Kt = ti->y_kind == INFL_Y_REAL ? ti->k : 0;
    if (need_query) {
        GOTO_IF(ctx, !o->query || !*o->query, INFL_E_ARG, "no queries given (--query FILE:/split[begin:end])");
        CHECK(infl_dataref_parse(ctx, o->query, &ref));
        CHECK(store_split_open(ctx, &ref, &a->query));
        CHECK(infl_check_data_for_model(ctx, a->query, a->spec));
        const infl_split_info *qi = store_split_info(a->query);
        GOTO_IF(ctx, qi->d != ti->d, INFL_E_SHAPE,
                "queries %s have %" PRId64 " features but the training data %s have %" PRId64, o->query, qi->d,
                train, ti->d);
        GOTO_IF(ctx, qi->n > 100000, INFL_E_ARG,
                "%" PRId64 " queries at once; rank at most 100000 (run several ranges)", qi->n);
        a->M = (int)qi->n;
    }
    // every checkpoint's weights resident on the backend: each shard is read once
    a->Wd = calloc((size_t)a->nck, sizeof(float *));
    float *hp = infl_malloc(ctx, a->P * sizeof(float), "the parameters");
    GOTO_NOMEM_IF(!a->Wd || !hp);
    for (int c = 0; c < a->nck; c++) {
        rc = store_run_load(ctx, a->run, a->ck[c], hp);
        if (rc == INFL_OK && a->fac && infl_weights_hash(hp, a->P) != a->fac->weights_hash) {
            const infl_ckpt_info *ci = store_run_checkpoint(a->run, a->ck[c]);
            rc = infl_seterr(ctx, INFL_E_ARG,
                             "%s: the factors were fitted on %s checkpoint %s (step %" PRId64 "), whose weights differ "
                             "from %s checkpoint %s: fit factors for this run and checkpoint (infl fit --run %s "
                             "--checkpoint %s)",
                             o->factors, a->fac->run, a->fac->checkpoint, a->fac->step, o->run, ci->name, o->run,
                             ci->name);
        }
        if (rc == INFL_OK)
            rc = infl_be_alloc_hint(ctx, (void **)&a->Wd[c], a->P * sizeof(float), "checkpoint weights",
                                    a->nck > 1 ? "fewer checkpoints (--checkpoints NAME,NAME,...)" : NULL);
        if (rc == INFL_OK) rc = ctx->be->upload(ctx, a->Wd[c], hp, a->P * sizeof(float));
        if (rc < 0) break;
    }
    free(hp);
    CHECK(rc);
    if (a->fac) {
        // the model's shape, the method's strategy, the damping
        CHECK(ekfac_pre_create(ctx, a->fac, o->factors, a->spec, o->method, o->damping, o->damping_auto, &a->pre));
        if (o->query_rank > 0) {
            int maxr = 0;
            for (int l = 0; l < a->L; l++) {
                int g = a->spec->widths[l + 1] < a->spec->widths[l] + 1 ? a->spec->widths[l + 1] : a->spec->widths[l] + 1;
                maxr = g > maxr ? g : maxr;
            }
            GOTO_IF(ctx, o->query_rank > maxr, INFL_E_ARG,
                    "--query-rank %d: the largest layer of this model has rank %d (min(d_out, d_in + 1)); expected "
                    "1 to %d",
                    o->query_rank, maxr, maxr);
            a->lowrank = 1;
        }
    }
    return INFL_OK;
done:
    attrib_close(a);
    return rc;
}

infl_status attrib_alloc_scoring(infl_ctx *ctx, attrib *a, int M, int influence) {
    if (a->B <= 0) a->B = 1024;  // train rows per forward/backward and score block
    if (a->o->shard_rows > 0 && a->o->shard_rows < a->B) a->B = (int)a->o->shard_rows;
    int B = a->B;
    char what[128], hint[160];
    snprintf(hint, sizeof hint, "--shard ROWS below %d makes the sub-batches smaller", B);
    FORWARD_IF_ERROR(infl_mlp_work_create(ctx, a->spec, B, &a->work));
    FORWARD_IF_ERROR(infl_stage_alloc(ctx, &a->st, a->train, a->spec, B, a->D, a->Kt, a->Kt));
    if (M > 0) {
        // (M, B): the queries against a sub-batch
        snprintf(what, sizeof what, "a score block (%d queries x %d train rows)", M, B);
        snprintf(hint, sizeof hint, "fewer queries (--query FILE:/split[begin:end]), or --shard ROWS below %d", B);
        FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->Sd, (size_t)M * B * sizeof(float), what, hint));
        if (!influence) {
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->T1, (size_t)M * B * sizeof(float), what, hint));
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->T2, (size_t)M * B * sizeof(float), what, hint));
        }
    }
    // row norms serve the train sub-batches (B rows) and the M queries (prepare_queries)
    size_t nr = (size_t)(M > B ? M : B);
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &a->rn, 2 * nr, "row norms"));
    a->hrow = infl_malloc(ctx, nr * sizeof(float), "row norms");
    a->hrow2 = infl_malloc(ctx, nr * sizeof(float), "row norms");
    if (!a->hrow || !a->hrow2) return INFL_E_NOMEM;
    if (influence) {
        int maxin = 0;
        for (int l = 0; l < a->L; l++) maxin = a->spec->widths[l] > maxin ? a->spec->widths[l] : maxin;
        snprintf(what, sizeof what, "a contraction block (%d train rows x %d inputs)", B, maxin);
        snprintf(hint, sizeof hint, "--shard ROWS below %d makes the sub-batches smaller", B);
        FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->Gz, (size_t)B * maxin * sizeof(float), what, hint));
    }
    return INFL_OK;
}

infl_status attrib_reader_start(infl_ctx *ctx, attrib *a, int64_t S, infl_reader **rd) {
    return infl_reader_start(ctx, a->train, S, 2, 0, -1, infl_be_host_alloc_hook, infl_be_host_free_hook, ctx, rd);
}

// Forward and backward of b rows at checkpoint c: per-example factors in a->work.
infl_status attrib_factors(infl_ctx *ctx, attrib *a, int c, const float *X, const int32_t *y, const float *yf,
                           int b, infl_mlp_work *work) {
    FORWARD_IF_ERROR(infl_mlp_forward(ctx, a->Wd[c], X, b, work));
    return infl_mlp_backward(ctx, a->Wd[c], y, yf, work, NULL, 1.0f);
}

// Per-example squared gradient norms |∇ℓ_i|² = Σ_l |δ_l,i|² (|a_{l-1,i}|² + 1) of
// the last backward, into host out (b), multiplied by wgt and added when accumulate.
infl_status attrib_sqnorms(infl_ctx *ctx, attrib *a, infl_mlp_work *work, int b, double wgt, double *out,
                           int accumulate) {
    const infl_backend *be = ctx->be;
    if (!accumulate)
        for (int i = 0; i < b; i++) out[i] = 0;
    for (int l = 0; l < a->L; l++) {
        int din = a->spec->widths[l], dout = a->spec->widths[l + 1];
        const float *Dl, *Al;
        infl_mlp_factors(work, l, &Dl, &Al);
        FORWARD_IF_ERROR(be->row_dot(ctx, a->rn, Dl, Dl, b, dout, 1.0f, 0.0f));
        FORWARD_IF_ERROR(be->row_dot(ctx, a->rn + b, Al, Al, b, din, 1.0f, 0.0f));
        FORWARD_IF_ERROR(be->download(ctx, a->hrow, a->rn, (size_t)b * sizeof(float)));
        FORWARD_IF_ERROR(be->download(ctx, a->hrow2, a->rn + b, (size_t)b * sizeof(float)));
        for (int i = 0; i < b; i++) out[i] += wgt * (double)a->hrow[i] * ((double)a->hrow2[i] + 1.0);
    }
    return INFL_OK;
}

// Full per-example gradients G (b, P) of the last backward, in the flat layout.
infl_status attrib_full_grads(infl_ctx *ctx, attrib *a, infl_mlp_work *work, int b, float *G, float *tmp) {
    for (int l = 0; l < a->L; l++) {
        int din = a->spec->widths[l], dout = a->spec->widths[l + 1];
        const float *Dl, *Al;
        infl_mlp_factors(work, l, &Dl, &Al);
        size_t pl = (size_t)dout * (din + 1);
        FORWARD_IF_ERROR(ctx->be->outer_rows(ctx, tmp, Dl, Al, b, dout, din));
        FORWARD_IF_ERROR(ctx->be->copy_2d(ctx, G + infl_mlp_woff(a->spec, l), (int)a->P, tmp, (int)pl, b, (int)pl));
    }
    return INFL_OK;
}

// ---- queries ----

// Reads the queries and prepares their state: ghost factors per checkpoint and layer
// (graddot, gradcos, tracin) or the preconditioned gradients V (if); their labels,
// predictions and losses at the last checkpoint.
static infl_status prepare_queries(infl_ctx *ctx, attrib *a, infl_rank_result *res) {
    const infl_backend *be = ctx->be;
    const infl_rank_options *o = a->o;
    const infl_split_info *qi = store_split_info(a->query);
    int M = a->M, L = a->L, K = a->spec->widths[L];
    int64_t kt = qi->y_kind == INFL_Y_REAL ? qi->k : 0;
    infl_status rc = INFL_OK;
    float *hx = NULL, *hyf = NULL, *qX = NULL, *qyf = NULL, *hl = NULL, *G = NULL, *tmp = NULL, *ql = NULL;
    double *qn = NULL;
    int32_t *hy = NULL, *qy = NULL;
    infl_mlp_work *qw = NULL;
    infl_hvp *op = NULL;

    hx = infl_malloc(ctx, (size_t)M * a->D * sizeof(float), "the queries");
    hl = infl_malloc(ctx, (size_t)M * K * sizeof(float), "query logits");
    GOTO_NOMEM_IF(!hx || !hl);
    if (kt) {
        hyf = infl_malloc(ctx, (size_t)M * kt * sizeof(float), "query targets");
        GOTO_NOMEM_IF(!hyf);
        CHECK(infl_be_alloc_f(ctx, &qyf, (size_t)M * kt, "query targets"));
    } else {
        hy = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query labels");
        GOTO_NOMEM_IF(!hy);
        CHECK(be->alloc(ctx, (size_t)M * sizeof(int32_t), (void **)&qy));
    }
    CHECK(store_split_read(ctx, a->query, 0, M, hx, hy, hyf));
    if (hy) CHECK(infl_check_labels(ctx, a->query, a->spec, hy, 0, M));
    CHECK(infl_be_alloc_f(ctx, &qX, (size_t)M * a->D, "the queries"));
    CHECK(be->upload(ctx, qX, hx, (size_t)M * a->D * sizeof(float)));
    if (hy) CHECK(be->upload(ctx, qy, hy, (size_t)M * sizeof(int32_t)));
    if (hyf) CHECK(be->upload(ctx, qyf, hyf, (size_t)M * kt * sizeof(float)));
    CHECK(infl_mlp_work_create(ctx, a->spec, M, &qw));

    res->query_begin = qi->begin;
    bool influence = attrib_contracts(o->method);
    if (!influence) {
        a->qD = calloc((size_t)a->nck * L, sizeof(float *));
        a->qA = calloc((size_t)a->nck * L, sizeof(float *));
        GOTO_IF(ctx, !a->qD || !a->qA, INFL_E_NOMEM, "out of memory");
    }
    qn = infl_calloc(ctx, (size_t)M, sizeof(double), "query gradient norms");
    GOTO_NOMEM_IF(!qn);
    for (int c = 0; c < a->nck; c++) {
        CHECK(attrib_factors(ctx, a, c, qX, qy, qyf, M, qw));
        // gradient norms: finite, or the checkpoint diverged
        CHECK(attrib_sqnorms(ctx, a, qw, M, 1.0, qn, 0));
        for (int q = 0; q < M; q++)
            GOTO_IF(ctx, !isfinite(qn[q]), INFL_E_NUMERIC,
                    "%s: checkpoint %s: the gradient of query %" PRId64 " is not finite (NaN or Inf): the checkpoint "
                    "may have diverged",
                    o->run, store_run_checkpoint(a->run, a->ck[c])->name, qi->begin + q);
        if (o->method == INFL_METHOD_GRADCOS) {
            a->qinv = calloc((size_t)M, sizeof(double));
            GOTO_IF(ctx, !a->qinv, INFL_E_NOMEM, "out of memory");
            for (int q = 0; q < M; q++) a->qinv[q] = qn[q] > 0 ? 1.0 / sqrt(qn[q]) : 0.0;
        }
        if (!influence)
            for (int l = 0; l < L; l++) {
                int din = a->spec->widths[l], dout = a->spec->widths[l + 1];
                const float *Dl, *Al;
                infl_mlp_factors(qw, l, &Dl, &Al);
                float **qd = &a->qD[c * L + l], **qa = &a->qA[c * L + l];
                const char *hint = "fewer queries (--query FILE:/split[begin:end]) or checkpoints (--checkpoints)";
                CHECK(infl_be_alloc_hint(ctx, (void **)qd, (size_t)M * dout * sizeof(float), "query factors", hint));
                CHECK(infl_be_alloc_hint(ctx, (void **)qa, (size_t)M * din * sizeof(float), "query factors", hint));
                CHECK(be->copy(ctx, *qd, Dl, (size_t)M * dout * sizeof(float)));
                CHECK(be->copy(ctx, *qa, Al, (size_t)M * din * sizeof(float)));
            }
    }
    // labels, predictions and losses at the last checkpoint (qw holds its forward)
    CHECK(be->download(ctx, hl, qw->Z[L - 1], (size_t)M * K * sizeof(float)));
    ql = infl_malloc(ctx, (size_t)M * sizeof(float), "query losses");
    GOTO_NOMEM_IF(!ql);
    rc = be->download(ctx, ql, qw->loss, (size_t)M * sizeof(float));
    for (int q = 0; q < M && rc == INFL_OK; q++) {
        res->query_loss[q] = ql[q];
        res->query_label[q] = hy ? hy[q] : -1;
        int arg = 0;
        for (int j = 1; j < K; j++)
            if (hl[(size_t)q * K + j] > hl[(size_t)q * K + arg]) arg = j;
        res->query_pred[q] = a->spec->loss == INFL_LOSS_SOFTMAX_CE   ? arg
                             : a->spec->loss == INFL_LOSS_SIGMOID_CE ? (hl[q] > 0)
                                                                     : -1;
    }
    CHECK(rc);

    if (influence) {
        // V = (H + λI)⁻¹ G_Q: query gradients, then the solver
        // (M, P) twice: the queries' gradients, whole
        char what[128];
        const char *hint = "fewer queries at once (--query FILE:/split[begin:end], several runs)";
        snprintf(what, sizeof what, "query gradients (%d queries x %zu parameters)", M, a->P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&G, (size_t)M * a->P * sizeof(float), what, hint));
        snprintf(what, sizeof what, "preconditioned query gradients (%d queries x %zu parameters)", M, a->P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&a->V, (size_t)M * a->P * sizeof(float), what, hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&tmp, (size_t)M * attrib_max_layer_params(a) * sizeof(float),
                                 "query layer gradients", hint));
        CHECK(attrib_full_grads(ctx, a, qw, M, G, tmp));
        if (a->pre)
            CHECK(ekfac_precondition(ctx, a->pre, a->spec, G, a->V, M));
        else
            CHECK(attrib_solve(ctx, a, G, a->V, M, 1, &op));
        if (a->lowrank) {
            // V_q,l ≈ LF_q RF_qᵀ; the full V is not needed any more
            CHECK(ekfac_lowrank(ctx, a->spec, a->V, M, o->query_rank, a->LF, a->RF, a->rl, &a->energy));
            infl_be_free(ctx, a->V);
            a->V = NULL;
            res->query_rank_energy = a->energy;
        }
    }
done:
    infl_hvp_free(ctx, op);
    free(qn);
    free(ql);
    free(hx);
    free(hy);
    free(hyf);
    free(hl);
    infl_be_free(ctx, qX);
    infl_be_free(ctx, qy);
    infl_be_free(ctx, qyf);
    infl_be_free(ctx, G);
    infl_be_free(ctx, tmp);
    infl_mlp_work_free(ctx, qw);
    return rc;
}

infl_status attrib_solve(infl_ctx *ctx, attrib *a, const float *G, float *X, int nv, int check, infl_hvp **opp) {
    const infl_rank_options *o = a->o;
    RETURN_IF(ctx, !(o->damping >= 0) || !isfinite(o->damping), INFL_E_ARG, "--damping: expected a value >= 0");
    RETURN_IF(ctx, (unsigned)o->hessian > 1, INFL_E_ARG, "--hessian: expected exact or ggn");
    RETURN_IF(ctx, (unsigned)o->solver > 2, INFL_E_ARG, "--solver: expected direct, cg or lissa");
    RETURN_IF(ctx, o->hessian_samples < 0, INFL_E_ARG, "--hessian-samples: expected 0 (all) or more");
    if (!*opp)
        FORWARD_IF_ERROR(infl_hvp_create(ctx, a->spec, a->Wd[0], a->train, o->hessian_samples,
                                         (infl_hessian)o->hessian, o->shard_rows, 1024.0, opp));
    infl_ihvp_options io = infl_ihvp_options_default();
    io.solver = (infl_solver)o->solver;
    io.damping = o->damping;
    io.cg_iters = o->cg_iters;
    io.cg_tol = o->cg_tol;
    io.lissa_depth = o->lissa_depth;
    io.lissa_scale = o->lissa_scale;
    io.lissa_repeats = o->lissa_repeats;
    io.seed = o->seed;
    io.check_residual = check;
    infl_ihvp_report rep;
    return infl_ihvp_solve(ctx, *opp, &io, G, X, nv, &rep);
}

// ---- scoring ----

// The layer kernels (attrib.h).
infl_status score_ghost_layer(infl_ctx *ctx, const float *qD, const float *qA, const float *Dz, const float *Az,
                              int M, int b, int din, int dout, float w, float *S, float *T1, float *T2) {
    const infl_backend *be = ctx->be;
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, M, b, dout, 1.0f, qD, dout, Dz, dout, 0.0f, T1, b));
    FORWARD_IF_ERROR(be->fill(ctx, T2, 1.0f, (size_t)M * b));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, M, b, din, 1.0f, qA, din, Az, din, 1.0f, T2, b));
    FORWARD_IF_ERROR(be->mul(ctx, T1, T1, T2, (size_t)M * b));
    return be->axpby(ctx, S, T1, w, 1.0f, (size_t)M * b);
}

infl_status score_contract_layer(infl_ctx *ctx, const float *Vw, const float *Vb, size_t ldv, const float *Dz,
                                 const float *Az, int M, int b, int din, int dout, float *S, float *Gz) {
    const infl_backend *be = ctx->be;
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, M, b, dout, 1.0f, Vb, (int)ldv, Dz, dout, 1.0f, S, b));
    for (int q = 0; q < M; q++) {
        FORWARD_IF_ERROR(
            be->sgemm(ctx, INFL_N, INFL_N, b, din, dout, 1.0f, Dz, dout, Vw + (size_t)q * ldv, din, 0.0f, Gz, din));
        FORWARD_IF_ERROR(be->row_dot(ctx, S + (size_t)q * b, Gz, Az, b, din, 1.0f, 1.0f));
    }
    return INFL_OK;
}

infl_status score_lowrank_layer(infl_ctx *ctx, const float *LF, const float *RF, int r, const float *Dz,
                                const float *Az, int M, int b, int din, int dout, float *S, float *X1, float *X2) {
    const infl_backend *be = ctx->be;
    int ld = M * r;
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, b, ld, dout, 1.0f, Dz, dout, LF, ld, 0.0f, X1, ld));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, b, ld, din, 1.0f, Az, din, RF, ld, 0.0f, X2, ld));
    FORWARD_IF_ERROR(be->add_row(ctx, X2, RF + (size_t)din * ld, b, ld));
    return be->row_dot(ctx, S, X1, X2, b * M, r, 1.0f, 1.0f);
}

// Adds the score block of b train rows (already through attrib_factors at
// checkpoint c) into a->Sd: (M, b), or (b, M) for --query-rank.
static infl_status score_block(infl_ctx *ctx, attrib *a, int c, int b) {
    int M = a->M;
    for (int l = 0; l < a->L; l++) {
        int din = a->spec->widths[l], dout = a->spec->widths[l + 1];
        const float *Dl, *Al;
        infl_mlp_factors(a->work, l, &Dl, &Al);
        if (a->lowrank) {
            FORWARD_IF_ERROR(score_lowrank_layer(ctx, a->LF[l], a->RF[l], a->rl[l], Dl, Al, M, b, din, dout, a->Sd,
                                                 a->X1, a->X2));
            a->flops += 2.0 * b * (double)M * a->rl[l] * (dout + din + 2);
        } else if (attrib_contracts(a->o->method)) {
            FORWARD_IF_ERROR(score_contract_layer(ctx, a->V + infl_mlp_woff(a->spec, l), a->V + infl_mlp_boff(a->spec, l),
                                                  a->P, Dl, Al, M, b, din, dout, a->Sd, a->Gz));
            a->flops += 2.0 * M * b * (double)dout * (din + 2);
        } else {
            FORWARD_IF_ERROR(score_ghost_layer(ctx, a->qD[c * a->L + l], a->qA[c * a->L + l], Dl, Al, M, b, din, dout,
                                               (float)a->weight[c], a->Sd, a->T1, a->T2));
            a->flops += 2.0 * M * b * (double)(din + dout) + 3.0 * M * b;
        }
    }
    return INFL_OK;
}

static infl_rank_result *result_new(int M, int k) {
    infl_rank_result *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->M = M;
    r->k = k;
    r->query_rank_energy = 1.0;
    size_t mk = (size_t)M * (k > 0 ? k : 1);
    r->top_index = calloc(mk, sizeof(int64_t));
    r->bottom_index = calloc(mk, sizeof(int64_t));
    r->top_score = calloc(mk, sizeof(float));
    r->bottom_score = calloc(mk, sizeof(float));
    r->query_label = calloc((size_t)M, sizeof(int32_t));
    r->query_pred = calloc((size_t)M, sizeof(int32_t));
    r->query_loss = calloc((size_t)M, sizeof(double));
    if (!r->top_index || !r->bottom_index || !r->top_score || !r->bottom_score || !r->query_label ||
        !r->query_pred || !r->query_loss) {
        infl_rank_result_free(r);
        return NULL;
    }
    return r;
}

void infl_rank_result_free(infl_rank_result *r) {
    if (!r) return;
    free(r->top_index);
    free(r->bottom_index);
    free(r->top_score);
    free(r->bottom_score);
    free(r->query_label);
    free(r->query_pred);
    free(r->query_loss);
    free(r);
}

int64_t attrib_shard_rows(const attrib *a) {
    const infl_rank_options *o = a->o;
    if (o->shard_rows > 0) return o->shard_rows < a->N ? o->shard_rows : a->N;
    // x rows and the host score block (M floats a row) share the budget
    return infl_shard_rows(a->N, a->D + a->M, a->Kt, o->shard_mb > 0 ? o->shard_mb : 64, a->B);
}

infl_status attrib_write_attrs(infl_ctx *ctx, infl_scw *w, const infl_rank_options *o, const attrib *a) {
    char buf[4096] = "";
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "method", infl_method_name(o->method)));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "run", o->run));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "train", store_split_ref(a->train)));
    if (a->query) FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "query", store_split_ref(a->query)));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "infl_version_string", INFL_VERSION_STRING));
    for (int c = 0; c < a->nck && strlen(buf) < sizeof buf - 40; c++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", c ? "," : "",
                 store_run_checkpoint(a->run, a->ck[c])->name);
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "checkpoints", buf));
    FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "weight_decay", a->spec->wd));
    if (o->method == INFL_METHOD_IF) {
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "hessian", o->hessian ? "ggn" : "exact"));
        FORWARD_IF_ERROR(
            store_scores_attr_str(ctx, w, "solver", o->solver == 0 ? "direct" : o->solver == 1 ? "cg" : "lissa"));
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "damping", o->damping));
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "hessian_samples", (double)o->hessian_samples));
    }
    if (a->pre) {
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "factors", o->factors));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "strategy", a->fac->strategy));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "damping_rule",
                                               o->damping_auto ? "auto: 0.1 x mean(lambda) per layer" : "given"));
        // per layer, comma-separated: the damping used and the mean eigenvalue
        char mean[2048] = "";
        buf[0] = 0;
        for (int l = 0; l < a->L; l++) {
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%.9g", l ? "," : "", a->pre->damping[l]);
            snprintf(mean + strlen(mean), sizeof mean - strlen(mean), "%s%.9g", l ? "," : "", a->pre->mean_lambda[l]);
        }
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "damping", buf));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "mean_eigenvalue", mean));
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "query_rank", (double)o->query_rank));
    }
    return INFL_OK;
}

infl_status attrib_keep_full(infl_ctx *ctx, void *user, const float *scores, int M, int n, int ld, int64_t col0) {
    (void)ctx;
    attrib_full *f = user;
    for (int q = 0; q < M; q++)
        memcpy(f->S + (size_t)q * f->N + col0, scores + (size_t)q * ld, (size_t)n * sizeof(float));
    return INFL_OK;
}

infl_status infl_rank(infl_ctx *ctx, const infl_rank_options *o, infl_rank_result **out) {
    return attrib_rank(ctx, o, NULL, NULL, out);
}

infl_status attrib_rank(infl_ctx *ctx, const infl_rank_options *o, attrib_block_fn block, void *user,
                        infl_rank_result **out) {
    *out = NULL;
    RETURN_IF(ctx, o->top < 1, INFL_E_ARG, "--top: expected at least 1, got %d", o->top);
    attrib a;
    infl_status rc = attrib_open(ctx, &a, o, 1);
    if (rc < 0) return rc;
    infl_rank_result *res = NULL;
    infl_topk *tk = NULL;
    infl_reader *rd = NULL;
    infl_scw *scw = NULL;
    float *hblock = NULL, *hsub = NULL;
    double *zn = NULL;
    int M = a.M;
    GOTO_IF(ctx, o->top > a.N, INFL_E_ARG, "--top %d is larger than the %" PRId64 " training examples", o->top, a.N);
    res = result_new(M, o->top);
    GOTO_IF(ctx, !res, INFL_E_NOMEM, "out of memory for the results");
    res->N = a.N;
    res->checkpoints = a.nck;
    res->weight_decay = a.spec->wd;
    if (a.pre) {
        res->layers = a.L;
        for (int l = 0; l < a.L && l < 16; l++) {
            res->layer_damping[l] = a.pre->damping[l];
            res->layer_mean_eigenvalue[l] = a.pre->mean_lambda[l];
        }
    }
    bool influence = attrib_contracts(o->method);
    if (a.lowrank) {
        // the low-rank blocks (B, M r) within ~8 Mi floats each
        int64_t per = (int64_t)M * o->query_rank;
        a.B = (int)(8388608 / per < 1024 ? 8388608 / per : 1024);
        a.B = a.B < 16 ? 16 : a.B;
    }
    CHECK(attrib_alloc_scoring(ctx, &a, M, influence));
    if (a.lowrank) {
        char what[128];
        snprintf(what, sizeof what, "a low-rank score block (%d train rows x %d queries x rank %d)", a.B, M,
                 o->query_rank);
        const char *hint = "a lower --query-rank, or fewer queries (--query FILE:/split[begin:end])";
        size_t n = (size_t)a.B * M * o->query_rank * sizeof(float);
        CHECK(infl_be_alloc_hint(ctx, (void **)&a.X1, n, what, hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&a.X2, n, what, hint));
    }

    double t0 = infl_now();
    CHECK(prepare_queries(ctx, &a, res));
    res->seconds_prepare = infl_now() - t0;

    int64_t S = attrib_shard_rows(&a);
    hblock = malloc((size_t)M * S * sizeof(float));
    GOTO_IF(ctx, !hblock, INFL_E_NOMEM,
            "out of memory for a shard's score block (%d queries x %" PRId64 " train rows, %.1f MiB); to fit: a "
            "smaller --shard-mb or --shard, or fewer queries",
            M, S, (double)M * S * 4.0 / 1048576.0);
    // the score download of every sub-batch lands here: pinned on CUDA (a faster copy)
    CHECK(infl_be_host_alloc(ctx, (size_t)M * a.B * sizeof(float), (void **)&hsub, "a score block"));
    zn = infl_malloc(ctx, (size_t)a.B * sizeof(double), "train gradient norms");
    GOTO_NOMEM_IF(!hblock || !hsub || !zn);
    CHECK(infl_topk_create(ctx, M, o->top, &tk));
    if (o->output) {
        CHECK(store_scores_create(ctx, o->output, o->force, M, o->top, a.N, o->save_scores, &scw));
        CHECK(attrib_write_attrs(ctx, scw, o, &a));
    }
    const int64_t begin = store_split_info(a.train)->begin;

    double t1 = infl_now();
    a.flops = 0;
    CHECK(attrib_reader_start(ctx, &a, S, &rd));
    int64_t done_rows = 0;
    for (;;) {
        infl_shard *sh;
        CHECK(infl_reader_next(ctx, rd, &sh));
        if (sh->n == 0) break;
        // sub-batches double-buffered (stage.h): the upload of the next one overlaps
        // the work on this one; the score download is the only synchronisation
        CHECK(infl_stage_begin(ctx, &a.st, sh, 1));
        for (;;) {
            int64_t r0;
            int b, cur;
            CHECK(infl_stage_next(ctx, &a.st, &r0, &b, &cur));
            if (b == 0) break;
            const float *Xb = a.st.x[cur], *yf = a.Kt ? a.st.yf[cur] : NULL;
            const int32_t *y = a.Kt ? NULL : a.st.y[cur];
            CHECK(ctx->be->fill(ctx, a.Sd, 0.0f, (size_t)M * b));
            for (int c = 0; c < a.nck; c++) {
                CHECK(attrib_factors(ctx, &a, c, Xb, y, yf, b, a.work));
                a.flops += infl_mlp_fb_flops(a.spec, b);
                if (o->method == INFL_METHOD_GRADCOS) CHECK(attrib_sqnorms(ctx, &a, a.work, b, 1.0, zn, 0));
                CHECK(score_block(ctx, &a, c, b));
            }
            CHECK(ctx->be->download(ctx, hsub, a.Sd, (size_t)M * b * sizeof(float)));
            for (int q = 0; q < M; q++) {
                float *dst = hblock + (size_t)q * S + r0;
                const float *src = hsub + (size_t)q * b;
                if (o->method == INFL_METHOD_GRADCOS)
                    for (int j = 0; j < b; j++)
                        dst[j] = (float)(src[j] * a.qinv[q] * (zn[j] > 0 ? 1.0 / sqrt(zn[j]) : 0.0));
                else if (a.lowrank)  // (b, M) on the backend
                    for (int j = 0; j < b; j++) dst[j] = hsub[(size_t)j * M + q];
                else
                    memcpy(dst, src, (size_t)b * sizeof(float));
            }
        }
        CHECK(infl_topk_push(ctx, tk, hblock, M, (int)sh->n, (int)S, begin + sh->row0));
        if (block) CHECK(block(ctx, user, hblock, M, (int)sh->n, (int)S, sh->row0));
        if (scw && o->save_scores) CHECK(store_scores_write_block(ctx, scw, hblock, (int)sh->n, (int)S, sh->row0));
        done_rows += sh->n;
        infl_reader_release(rd, sh);
        char info[64];
        snprintf(info, sizeof info, "%s, %d queries", infl_method_name(o->method), M);
        infl_progress(ctx, "rank", (uint64_t)done_rows, (uint64_t)a.N, info);
    }
    double read_s = 0, wait_s = 0;
    infl_reader_stats(rd, &read_s, &wait_s);
    infl_reader_stop(rd);
    rd = NULL;
    res->seconds_score = infl_now() - t1;
    res->seconds_wait = wait_s;
    res->flops = a.flops;
    for (int q = 0; q < M; q++) {
        int cnt;
        infl_topk_get(tk, q, res->top_index + (size_t)q * o->top, res->top_score + (size_t)q * o->top,
                      res->bottom_index + (size_t)q * o->top, res->bottom_score + (size_t)q * o->top, &cnt);
        res->k = cnt;
    }
    if (scw) {
        CHECK(store_scores_write_topk(ctx, scw, res->top_index, res->top_score, res->bottom_index,
                                      res->bottom_score));
        rc = store_scores_commit(ctx, scw);
        scw = NULL;
        CHECK(rc);
    }
    *out = res;
    res = NULL;
done:
    infl_reader_stop(rd);
    store_scores_abort(scw);
    infl_topk_free(tk);
    free(hblock);
    infl_be_host_free(ctx, hsub);
    free(zn);
    infl_rank_result_free(res);
    attrib_close(&a);
    return rc;
}
