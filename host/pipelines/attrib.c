/*
 * attrib.c — what the attribution pipelines share (attrib.h): opening a run as a model
 * of the seam with the checkpoints a method uses, the train split and the queries,
 * the scoring buffers, per-example factors and gradient norms, full per-example
 * gradients and the inverse-Hessian solve of influence functions, and the attributes
 * of scores files.
 */
#define _POSIX_C_SOURCE 200809L  // strtok_r
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"
#include "estimators/ihvp.h"
#include "models/train.h"

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
    case INFL_METHOD_REPRESENTER: return "representer";
    case INFL_METHOD_TRAK: return "trak";
    case INFL_METHOD_SGD_INFLUENCE: return "sgd-influence";
    }
    return "?";
}

// ---- checkpoints ----

// Fills a->ck / a->weight from the options: tracin takes all checkpoints (or a list)
// weighted by lr; sgd-influence all of them (the queries' gradients at the last, the
// checkpoints variant's parameters) with weight 1; the others one checkpoint with weight 1.
static infl_status pick_checkpoints(infl_ctx *ctx, attrib *a, const infl_rank_options *o) {
    int n = store_run_ncheckpoints(a->run);
    a->ck = calloc((size_t)n, sizeof(int));
    a->weight = calloc((size_t)n, sizeof(double));
    RETURN_IF(ctx, !a->ck || !a->weight, INFL_E_NOMEM, "out of memory");
    if (o->method == INFL_METHOD_SGD_INFLUENCE) {
        for (int i = 0; i < n; i++) {
            a->ck[i] = i;  // sorted by step (store_run_open)
            a->weight[i] = 1.0;
        }
        a->nck = n;
        return INFL_OK;
    }
    if (o->method != INFL_METHOD_TRACIN && o->method != INFL_METHOD_TRAK) {
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
    for (int i = 0; i < a->nck && o->method == INFL_METHOD_TRACIN; i++)
        RETURN_IF(ctx, !(a->weight[i] > 0) || !isfinite(a->weight[i]), INFL_E_FORMAT,
                  "%s: checkpoint %s has lr = %g; TracIn weighs checkpoints by their learning rate and needs lr > 0 "
                  "(a run trained by Newton has none: use --method graddot or if)",
                  store_run_path(a->run), store_run_checkpoint(a->run, a->ck[i])->name, a->weight[i]);
    return INFL_OK;
}

// ---- opening ----

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
    if (a->qG)
        for (int i = 0; i < a->nck * a->L; i++) infl_be_free(ctx, a->qG[i]);
    free(a->qG);
    infl_be_free(ctx, a->EQ);
    infl_be_free(ctx, a->R);
    infl_be_free(ctx, a->EZ);
    infl_be_free(ctx, a->Gm);
    free(a->hEZ);
    free(a->qtok);
    free(a->qlen);
    free(a->qrange);
    for (int q = 0; q < a->M; q++) {
        if (a->qprompt) free(a->qprompt[q]);
        if (a->qcompletion) free(a->qcompletion[q]);
    }
    free(a->qprompt);
    free(a->qcompletion);
    infl_be_free(ctx, a->V);
    infl_stage_free(ctx, &a->st);
    infl_be_free(ctx, a->Sd);
    infl_be_free(ctx, a->T1);
    infl_be_free(ctx, a->T2);
    infl_be_free(ctx, a->Gz);
    infl_be_free(ctx, a->rn);
    for (int l = 0; l < INFL_MAX_LINEAR; l++) {
        infl_be_free(ctx, a->LF[l]);
        infl_be_free(ctx, a->RF[l]);
    }
    infl_be_free(ctx, a->X1);
    infl_be_free(ctx, a->X2);
    ekfac_pre_free(ctx, a->pre);
    infl_factors_free(a->fac);
    if (a->repr) repr_free(ctx, a->repr);
    free(a->repr);
    if (a->m) infl_model_work_free(ctx, a->m, a->work);
    infl_model_free(a->m);
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
    RETURN_IF(ctx,
              (unsigned)o->method > INFL_METHOD_REPRESENTER && o->method != INFL_METHOD_TRAK &&
                  o->method != INFL_METHOD_SGD_INFLUENCE,
              INFL_E_ARG, "unknown method %d", (int)o->method);
    RETURN_IF(ctx, o->method == INFL_METHOD_REPRESENTER && (unsigned)o->representer_class > 2, INFL_E_ARG,
              "--representer-class %d: expected 0 (the predicted class), 1 (the query's label) or 2 (the loss)",
              o->representer_class);
    RETURN_IF(ctx, (unsigned)o->score_form > 2, INFL_E_ARG,
              "score form %d: expected 0 (auto), 1 (token rows) or 2 (documents' gradients)", o->score_form);
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
    CHECK(infl_model_create(ctx, store_run_spec(a->run), 0, &a->m));
    a->m->tokenizer = store_run_tokenizer(a->run);
    a->L = a->m->nlayers;
    if (o->method == INFL_METHOD_IF) CHECK(infl_model_need_hvp(ctx, a->m));
    if (o->method == INFL_METHOD_REPRESENTER) CHECK(repr_check(ctx, a->m, o->run, o->representer_lambda, &a->repr_lambda));
    GOTO_IF(ctx, o->method == INFL_METHOD_SGD_INFLUENCE && a->m->spec.kind != INFL_MODEL_MLP, INFL_E_UNSUPPORTED,
            "%s: a %s run: sgd-influence replays the MLP's SGD trainer (a gpt is trained by AdamW); use --method "
            "tracin or ekfac",
            o->run, infl_model_kind_of(a->m));
    a->tokens = a->m->tokens;
    a->docs = a->tokens && a->m->spec.kind == INFL_MODEL_GPT;
    if (a->docs) a->ctxT = a->m->spec.gpt.context;
    GOTO_IF(ctx, !a->docs && (o->ntext > 0 || o->token_shares), INFL_E_ARG,
            "%s: a %s model: %s for language models trained by infl (a gpt run)", o->run, infl_model_kind_of(a->m),
            o->ntext > 0 ? "text queries (--prompt, --completion) are" : "token shares (--tokens, --html) are");
    if (a->fac) CHECK(ekfac_check_shape(ctx, a->fac, o->factors, a->m));
    a->P = a->m->nparams;
    CHECK(pick_checkpoints(ctx, a, o));

    const char *train = o->train;
    if (!train || !*train) CHECK(store_run_find_data(ctx, a->run, &train));
    infl_dataref ref;
    CHECK(infl_dataref_parse(ctx, train, &ref));
    CHECK(store_split_open(ctx, &ref, &a->train));
    CHECK(infl_model_check_data(ctx, a->m, a->train));
    const infl_split_info *ti = store_split_info(a->train);
    a->N = ti->n;
    a->D = ti->d;
    a->Kt = ti->y_kind == INFL_Y_REAL ? ti->k : 0;
    if (a->tokens && !a->docs) a->ctxT = ti->max_len > 0 ? (int)ti->max_len : 1;  // captured: its longest example
    if (a->tokens) {
        a->zrows = ti->n > 0 ? (double)ti->tokens / (double)ti->n + (a->docs ? 1.0 : 0.0) : 1.0;
        a->zrows = a->zrows < a->ctxT ? a->zrows : a->ctxT;
    }
    if (need_query && o->ntext > 0) {
        GOTO_IF(ctx, o->query && *o->query, INFL_E_ARG, "give queries as text (--prompt) or as documents (--query), not both");
        GOTO_IF(ctx, !o->prompt, INFL_E_ARG, "%d text queries but no prompts", o->ntext);
        GOTO_IF(ctx, o->ntext > 100000, INFL_E_ARG, "%d queries at once; rank at most 100000", o->ntext);
        a->M = o->ntext;
    } else if (need_query) {
        GOTO_IF(ctx, !o->query || !*o->query, INFL_E_ARG, "no queries given (--query FILE:/split[begin:end])");
        CHECK(infl_dataref_parse(ctx, o->query, &ref));
        CHECK(store_split_open(ctx, &ref, &a->query));
        CHECK(infl_model_check_data(ctx, a->m, a->query));
        const infl_split_info *qi = store_split_info(a->query);
        GOTO_IF(ctx, qi->d != ti->d, INFL_E_SHAPE,
                "queries %s have %" PRId64 " features but the training data %s have %" PRId64, o->query, qi->d,
                train, ti->d);
        GOTO_IF(ctx, qi->n > 100000, INFL_E_ARG,
                "%" PRId64 " queries at once; rank at most 100000 (run several ranges)", qi->n);
        a->M = (int)qi->n;
        if (a->tokens && !a->docs) {
            // captured token rows: the queries' own, and the longest example of either split
            GOTO_IF(ctx, qi->tokens > INT32_MAX, INFL_E_ARG, "%s: %" PRId64 " token rows of queries; at most %d",
                    o->query, qi->tokens, INT32_MAX);
            a->RQ = (int)qi->tokens;
            if (qi->max_len > a->ctxT) a->ctxT = (int)qi->max_len;
        }
        if (o->nquery_rows > 0) {
            // a list of the range's rows (infl debug's misclassified examples)
            GOTO_IF(ctx, a->m->spec.kind != INFL_MODEL_MLP || !o->query_rows, INFL_E_ARG,
                    "query rows: a list of rows serves mlp runs");
            for (int q = 0; q < o->nquery_rows; q++)
                GOTO_IF(ctx, o->query_rows[q] < 0 || o->query_rows[q] >= qi->n, INFL_E_ARG,
                        "query row %" PRId64 " is outside %s (rows 0 to %" PRId64 ")", o->query_rows[q], o->query,
                        qi->n - 1);
            a->M = o->nquery_rows;
        }
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
    if (need_query && a->docs) CHECK(attrib_lm_queries(ctx, a));
    if (a->fac) {
        // the model's shape, the method's strategy, the damping
        CHECK(ekfac_pre_create(ctx, a->fac, o->factors, a->m, o->method, o->damping, o->damping_auto, &a->pre));
        if (o->query_rank > 0) {
            int maxr = 0;
            for (int l = 0; l < a->L; l++) {
                int ni = infl_linear_ni(&a->m->layer[l]), dout = a->m->layer[l].d_out;
                int g = dout < ni ? dout : ni;
                maxr = g > maxr ? g : maxr;
            }
            GOTO_IF(ctx, o->query_rank > maxr, INFL_E_ARG,
                    "--query-rank %d: the largest layer of this model has rank %d (min(d_out, d_in + bias)); "
                    "expected 1 to %d",
                    o->query_rank, maxr, maxr);
            a->lowrank = 1;
        }
    }
    return INFL_OK;
done:
    attrib_close(a);
    return rc;
}

// Language models: documents per sub-batch so that the token-row blocks stay within
// about 16 Mi floats (the ghost form's (RQ, rows) products, the contraction block).
static int token_batch(const attrib *a, int M) {
    int64_t T = a->ctxT, per = T * (a->RQ > M ? a->RQ : (M > 0 ? M : 1));
    int64_t B = 8192 / T;
    while (B > 1 && B * per > 16777216) B /= 2;
    return (int)(B < 1 ? 1 : B > 1024 ? 1024 : B);
}

infl_status attrib_alloc_scoring(infl_ctx *ctx, attrib *a, int M, int influence) {
    // train examples per forward/backward and score block; a language model's within its
    // token-row budget whatever the caller asked (--query-rank's blocks count rows too)
    if (a->B <= 0) a->B = a->tokens ? token_batch(a, M) : 1024;
    if (a->tokens && a->B > token_batch(a, M)) a->B = token_batch(a, M);
    if (a->o->shard_rows > 0 && a->o->shard_rows < a->B) a->B = (int)a->o->shard_rows;
    int B = a->B;
    int64_t rows = attrib_max_rows(a), rq = a->tokens ? (a->RQ > M ? a->RQ : M) : M;
    char what[160], hint[160];
    snprintf(hint, sizeof hint, "--shard ROWS below %d makes the sub-batches smaller", B);
    FORWARD_IF_ERROR(infl_model_work_create(ctx, a->m, B, &a->work));
    FORWARD_IF_ERROR(infl_stage_alloc(ctx, &a->st, a->train, a->m, B, a->D, a->Kt, a->Kt));
    if (M > 0) {
        // (M, B): the queries against a sub-batch
        snprintf(what, sizeof what, "a score block (%d queries x %d train examples)", M, B);
        snprintf(hint, sizeof hint, "fewer queries (--query FILE:/split[begin:end]), or --shard ROWS below %d", B);
        FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->Sd, (size_t)M * B * sizeof(float), what, hint));
        if (!influence) {
            // (rq, rows): the ghost form's products of query and train token rows
            snprintf(what, sizeof what, "a ghost block (%" PRId64 " query rows x %" PRId64 " train rows)", rq, rows);
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->T1, (size_t)rq * rows * sizeof(float), what, hint));
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->T2, (size_t)rq * rows * sizeof(float), what, hint));
        }
        if (a->tokens) {
            // per-token-row scores, summed per document by EZ
            snprintf(what, sizeof what, "per-token scores (%d queries x %" PRId64 " train rows)", M, rows);
            FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->R, (size_t)M * rows * sizeof(float), what, hint));
        }
    }
    if (a->tokens && M > 0) {
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &a->EZ, (size_t)B * rows, "token-row sums"));
        a->hEZ = infl_malloc(ctx, (size_t)B * rows * sizeof(float), "token-row sums");
        if (!a->hEZ) return INFL_E_NOMEM;
    }
    if (a->tokens) {
        // per-document gradients of a chunk of documents: within 16 Mi floats
        size_t pl = infl_model_max_layer_size(a->m);
        int64_t bm = (int64_t)(16777216 / (pl ? pl : 1));
        a->Bm = (int)(bm < 1 ? 1 : bm < B ? bm : B);
        snprintf(what, sizeof what, "per-document gradients (%d documents x %zu)", a->Bm, pl);
        FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->Gm, (size_t)a->Bm * pl * sizeof(float), what, hint));
    }
    // row norms serve the train sub-batches (B rows) and the M queries (prepare_queries)
    size_t nr = (size_t)(M > B ? M : B);
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &a->rn, 2 * nr, "row norms"));
    a->hrow = infl_malloc(ctx, nr * sizeof(float), "row norms");
    a->hrow2 = infl_malloc(ctx, nr * sizeof(float), "row norms");
    if (!a->hrow || !a->hrow2) return INFL_E_NOMEM;
    if (influence) {
        int maxin = infl_model_max_in(a->m);
        snprintf(what, sizeof what, "a contraction block (%" PRId64 " train rows x %d inputs)", rows, maxin);
        snprintf(hint, sizeof hint, "--shard ROWS below %d makes the sub-batches smaller", B);
        FORWARD_IF_ERROR(infl_be_alloc_hint(ctx, (void **)&a->Gz, (size_t)rows * maxin * sizeof(float), what, hint));
    }
    return INFL_OK;
}

infl_status attrib_read_rows(infl_ctx *ctx, attrib *a, infl_split *split, const int64_t *rows, int64_t n, float *x,
                             int32_t *y, float *yf) {
    int64_t kt = a->Kt;
    for (int64_t i = 0; i < n;) {
        // a run of consecutive rows is one read
        int64_t j = i + 1;
        while (j < n && rows[j] == rows[j - 1] + 1) j++;
        FORWARD_IF_ERROR(store_split_read(ctx, split, rows[i], j - i, x + (size_t)i * a->D, y ? y + i : NULL,
                                          yf ? yf + (size_t)i * kt : NULL));
        if (y) FORWARD_IF_ERROR(infl_model_check_labels(ctx, a->m, split, y + i, rows[i], j - i));
        i = j;
    }
    return INFL_OK;
}

infl_status attrib_read_queries(infl_ctx *ctx, attrib *a, float *x, int32_t *y, float *yf) {
    if (a->o->nquery_rows > 0) return attrib_read_rows(ctx, a, a->query, a->o->query_rows, a->M, x, y, yf);
    FORWARD_IF_ERROR(store_split_read(ctx, a->query, 0, a->M, x, y, yf));
    return y ? infl_model_check_labels(ctx, a->m, a->query, y, 0, a->M) : INFL_OK;
}

infl_status attrib_repr_fit(infl_ctx *ctx, attrib *a) {
    a->repr = infl_calloc(ctx, 1, sizeof *a->repr, "the representer layer");
    if (!a->repr) return INFL_E_NOMEM;
    return repr_fit(ctx, a->repr, a->m, a->Wd[0], a->train, a->repr_lambda, a->o->shard_rows, a->o->shard_mb, a->B);
}

infl_status attrib_give_query_texts(infl_ctx *ctx, attrib *a, infl_rank_result *res) {
    if (!a->docs) return INFL_OK;  // a captured model's token rows have no text here
    res->query_prompt = calloc((size_t)a->M, sizeof(char *));
    res->query_completion = calloc((size_t)a->M, sizeof(char *));
    RETURN_IF(ctx, !res->query_prompt || !res->query_completion, INFL_E_NOMEM, "out of memory for the queries' texts");
    for (int q = 0; q < a->M; q++) {
        res->query_prompt[q] = a->qprompt[q];
        res->query_completion[q] = a->qcompletion[q];
        a->qprompt[q] = a->qcompletion[q] = NULL;
    }
    return INFL_OK;
}

infl_status attrib_factors(infl_ctx *ctx, attrib *a, int c, const infl_batch *bt, infl_model_work *work) {
    infl_batch b = *bt;
    b.ckpt = store_run_checkpoint(a->run, a->ck[c])->name;  // whose capture a captured model reads
    return infl_model_factors(ctx, a->m, a->Wd[c], &b, work);
}

// Per-example squared gradient norms of the last backward into host out (b), multiplied
// by wgt and added when accumulate: |∇ℓ_i|² = Σ_l |δ_l,i|² (|a_l,i|² + β_l) for T = 1;
// for examples of token rows, |Σ_t δ_t ã_tᵀ|² from the documents' gradients, formed
// a chunk of a->Bm documents at a time.
infl_status attrib_sqnorms(infl_ctx *ctx, attrib *a, infl_model_work *work, int b, double wgt, double *out,
                           int accumulate) {
    if (!accumulate)
        for (int i = 0; i < b; i++) out[i] = 0;
    if (a->tokens) {
        for (int l = 0; l < a->L; l++) {
            const infl_linear *ly = &a->m->layer[l];
            int pl = (int)infl_linear_size(ly);
            for (int i0 = 0; i0 < b; i0 += a->Bm) {
                int n = b - i0 < a->Bm ? b - i0 : a->Bm;
                FORWARD_IF_ERROR(
                    score_doc_grads_layer(ctx, a->Gm, (size_t)pl, NULL, ly, work->D[l], work->A[l], work->row_off, i0, n));
                FORWARD_IF_ERROR(ctx->be->row_dot(ctx, a->rn, a->Gm, a->Gm, n, pl, 1.0f, 0.0f));
                FORWARD_IF_ERROR(ctx->be->download(ctx, a->hrow, a->rn, (size_t)n * sizeof(float)));
                for (int i = 0; i < n; i++) out[i0 + i] += wgt * (double)a->hrow[i];
            }
        }
        return INFL_OK;
    }
    for (int l = 0; l < a->L; l++)
        FORWARD_IF_ERROR(
            score_sqnorms_layer(ctx, out, a->rn, a->hrow, a->hrow2, &a->m->layer[l], work->D[l], work->A[l], b, wgt));
    return INFL_OK;
}

infl_status attrib_solve(infl_ctx *ctx, attrib *a, const float *G, float *X, int nv, int check, infl_hvp **opp) {
    const infl_rank_options *o = a->o;
    RETURN_IF(ctx, !(o->damping >= 0) || !isfinite(o->damping), INFL_E_ARG, "--damping: expected a value >= 0");
    RETURN_IF(ctx, (unsigned)o->hessian > 1, INFL_E_ARG, "--hessian: expected exact or ggn");
    RETURN_IF(ctx, (unsigned)o->solver > 2, INFL_E_ARG, "--solver: expected direct, cg or lissa");
    RETURN_IF(ctx, o->hessian_samples < 0, INFL_E_ARG, "--hessian-samples: expected 0 (all) or more");
    if (!*opp)
        FORWARD_IF_ERROR(infl_model_hvp_create(ctx, a->m, a->Wd[0], a->train, o->hessian_samples,
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

int64_t attrib_shard_rows(const attrib *a) {
    const infl_rank_options *o = a->o;
    if (o->shard_rows > 0) return o->shard_rows < a->N ? o->shard_rows : a->N;
    // x rows (a document's tokens, length and label) and the host score block (M floats a row) share the budget
    int64_t width = a->docs ? (int64_t)a->ctxT + 2 : a->D;
    return infl_shard_rows(a->N, width + a->M, a->Kt, o->shard_mb > 0 ? o->shard_mb : 64, a->B);
}

infl_status attrib_write_attrs(infl_ctx *ctx, infl_scw *w, const infl_rank_options *o, const attrib *a) {
    char buf[4096] = "";
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "method", infl_method_name(o->method)));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "run", o->run));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "train", store_split_ref(a->train)));
    if (a->query) FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "query", store_split_ref(a->query)));
    if (!a->query && a->qprompt) {
        // text queries: what was measured (the prompts and completions, given or greedy)
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "query", "text (prompt_Q, completion_Q)"));
        for (int q = 0; q < a->M && q < 1000; q++) {
            char name[32];
            snprintf(name, sizeof name, "prompt_%d", q);
            FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, name, a->qprompt[q]));
            snprintf(name, sizeof name, "completion_%d", q);
            FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, name, a->qcompletion[q]));
        }
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "gen_tokens", (double)o->complete_tokens));
    }
    if (o->prefilter_bm25) FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "prefilter_bm25", (double)o->prefilter_bm25));
    if (o->prefilter_knn) {
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "prefilter_knn", (double)o->prefilter_knn));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "knn_features", o->knn_features ? "penultimate" : "inputs"));
    }
    if (o->rerank) FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "rerank", (double)o->rerank));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "infl_version_string", INFL_VERSION_STRING));
    for (int c = 0; c < a->nck && strlen(buf) < sizeof buf - 40; c++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", c ? "," : "",
                 store_run_checkpoint(a->run, a->ck[c])->name);
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "checkpoints", buf));
    FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "weight_decay", a->m->wd));
    if (o->method == INFL_METHOD_IF) {
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "hessian", o->hessian ? "ggn" : "exact"));
        FORWARD_IF_ERROR(
            store_scores_attr_str(ctx, w, "solver", o->solver == 0 ? "direct" : o->solver == 1 ? "cg" : "lissa"));
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "damping", o->damping));
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "hessian_samples", (double)o->hessian_samples));
    }
    if (o->method == INFL_METHOD_SGD_INFLUENCE) {
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "hessian", o->hessian ? "ggn" : "exact"));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "sgd_variant", o->sgd_variant ? "checkpoints" : "replay"));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "sign", "n x (loss without z - loss): positive = proponent"));
    }
    if (a->repr) {
        // the fine-tune's settings; its quality is written when the scores are (attrib_write_repr_fit)
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "representer_lambda", a->repr_lambda));
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "representer_class",
                                               o->representer_class == 2   ? "loss"
                                               : o->representer_class == 1 ? "true"
                                                                           : "predicted"));
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

infl_status attrib_write_repr_fit(infl_ctx *ctx, infl_scw *w, const infl_representer_fit *f) {
    const struct {
        const char *name;
        double v;
    } at[] = {{"representer_grad_norm", f->grad_norm},          {"representer_decomposition_bound", f->decomposition_bound},
              {"representer_train_pearson", f->train_pearson},  {"representer_train_acc_before", f->train_acc_before},
              {"representer_train_acc_after", f->train_acc_after}, {"representer_query_pearson", f->query_pearson},
              {"representer_query_acc_before", f->query_acc_before}, {"representer_query_acc_after", f->query_acc_after},
              {"representer_seconds", f->seconds}};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, at[i].name, at[i].v));
    return INFL_OK;
}

infl_status attrib_keep_full(infl_ctx *ctx, void *user, const float *scores, int M, int n, int ld, int64_t col0) {
    (void)ctx;
    attrib_full *f = user;
    for (int q = 0; q < M; q++)
        memcpy(f->S + (size_t)q * f->N + col0, scores + (size_t)q * ld, (size_t)n * sizeof(float));
    return INFL_OK;
}

