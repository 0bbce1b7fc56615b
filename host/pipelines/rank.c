/*
 * rank.c — `infl rank`: the attribution pipeline, written against the model seam
 * (models/model.h) and the score kernels (estimators/score.h).
 *
 * Queries are prepared once (their per-example factors at every checkpoint used, or
 * for influence functions their preconditioned gradients (H + λI)⁻¹ ∇L_q), then the
 * train split streams past on a reader thread, shard by shard, and each shard's
 * score block (M, n) is merged into a running top-k and bottom-k per query.
 *
 * Score blocks, per sub-batch of b train rows and per checkpoint c:
 *  - graddot / gradcos / tracin, by the ghost dot product (DESIGN.md): per layer
 *    (Δ_Q Δ_Zᵀ) ∘ (A_Q A_Zᵀ + β), two GEMMs and a Hadamard product (β = 1 for a
 *    layer with a bias); per-example gradients are never formed. gradcos divides by
 *    |∇L_q| |∇ℓ_z|, where |∇ℓ_z|² = Σ_l |δ|² (|a|² + β).
 *  - if, ekfac, kfac, diagonal: by contraction with the preconditioned queries V_q
 *    (DESIGN.md, EK-FAC scores): S[q, z] += Σ_l δ_lᵀ V_q,l ã_l, one GEMM
 *    (b, d_out)·(d_out, d_in) and a row dot per query and layer (or, with
 *    --query-rank, the low-rank contraction); train gradients are never formed.
 *  - representer: the ghost dot product of the logits layer alone, with the query's
 *    output gradient replaced by the one-hot e_c of the class scored and the train
 *    row's taken at the fine-tuned layer (estimators/representer.h), weighted by
 *    −1/(2λn): α_{z,c} (f_qᵀ f_z + 1).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"
#include "core/comm.h"
#include "sched/topk.h"
#include "sgdinf.h"

// ---- queries ----

// Representer points, after the queries' factors and predictions: the class each query is
// scored for (the fine-tuned prediction, or its label) and that class's fine-tuned logit, how
// close the fine-tuned logits of the queries stay to the run's, and the signed one-hot e_c in
// place of the queries' output gradients of the logits layer (a->qD), so that the ghost
// product scores α_{z,c} f̃_zᵀ f̃_q (for the loss, −∂ℓ_q/∂Φ_q in place of e_c).
static infl_status repr_queries(infl_ctx *ctx, attrib *a, const infl_model_work *qw, const int32_t *hy,
                                infl_rank_result *res) {
    const repr_layer *r = a->repr;
    int M = a->M, K = r->K, d = r->d;
    infl_status rc = INFL_OK;
    float *f = infl_malloc(ctx, (size_t)M * d * sizeof(float), "query features");
    float *E = infl_calloc(ctx, (size_t)M * K, sizeof(float), "query classes");
    double *Z = infl_malloc(ctx, (size_t)M * K * sizeof(double), "query logits");
    double *Z0 = infl_malloc(ctx, (size_t)M * K * sizeof(double), "query logits");
    res->query_class = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query classes");
    res->query_logit = infl_malloc(ctx, (size_t)M * sizeof(double), "query logits");
    GOTO_NOMEM_IF(!f || !E || !Z || !Z0 || !res->query_class || !res->query_logit);
    CHECK(ctx->be->download(ctx, f, qw->A[r->l], (size_t)M * d * sizeof(float)));
    repr_logits(Z, r, r->W, f, M);
    repr_logits(Z0, r, r->W0, f, M);
    int64_t right0 = 0, right1 = 0;
    for (int q = 0; q < M; q++) {
        int p1 = repr_argmax(r, Z + (size_t)q * K), p0 = repr_argmax(r, Z0 + (size_t)q * K);
        int c = a->o->representer_class ? hy[q] : p1;
        double *zq = Z + (size_t)q * K;
        res->query_class[q] = c;
        if (a->o->representer_class == 2) {
            // every class, weighted by −∂ℓ_q/∂Φ_q at the label
            double g[K];
            repr_loss_grad(g, r, zq, c);
            res->query_logit[q] = 0;
            for (int k = 0; k < K; k++) {
                E[(size_t)q * K + k] = (float)-g[k];
                res->query_logit[q] -= g[k] * zq[k];
            }
        } else {
            res->query_logit[q] = repr_class_sign(r, c) * zq[repr_class_col(r, c)];
            E[(size_t)q * K + repr_class_col(r, c)] = (float)repr_class_sign(r, c);
        }
        right0 += p0 == hy[q];
        right1 += p1 == hy[q];
    }
    res->representer = r->fit;
    res->representer.query_pearson = stats_pearson(Z0, Z, (int64_t)M * K);
    res->representer.query_acc_before = (double)right0 / M;
    res->representer.query_acc_after = (double)right1 / M;
    CHECK(ctx->be->upload(ctx, a->qD[r->l], E, (size_t)M * K * sizeof(float)));
done:
    free(f);
    free(E);
    free(Z);
    free(Z0);
    return rc;
}

// Reads the queries and prepares their state: ghost factors per checkpoint and layer
// (graddot, gradcos, tracin) or the preconditioned gradients V (if); their labels,
// predictions and losses at the last checkpoint.
void attrib_qbatch_free(infl_ctx *ctx, attrib_qbatch *q) {
    free(q->hy);
    free(q->hyf);
    infl_be_free(ctx, q->qX);
    infl_be_free(ctx, q->qy);
    infl_be_free(ctx, q->qyf);
    memset(q, 0, sizeof *q);
}

infl_status attrib_query_batch(infl_ctx *ctx, attrib *a, attrib_qbatch *q) {
    const infl_backend *be = ctx->be;
    const infl_split_info *qi = a->query ? store_split_info(a->query) : NULL;
    int M = a->M;
    int64_t kt = qi && qi->y_kind == INFL_Y_REAL ? qi->k : 0;
    infl_status rc = INFL_OK;
    float *hx = NULL;
    memset(q, 0, sizeof *q);
    if (a->docs) {
        // documents (lmquery.c): the model reads their tokens on the host
        q->bt = (infl_batch){.b = M, .index0 = qi ? qi->begin : 0, .tok = a->qtok, .T = a->ctxT, .len = a->qlen,
                             .loss_range = a->qrange};
        return INFL_OK;
    }
    hx = infl_malloc(ctx, (size_t)M * a->D * sizeof(float), "the queries");
    GOTO_NOMEM_IF(!hx);
    if (kt) {
        q->hyf = infl_malloc(ctx, (size_t)M * kt * sizeof(float), "query targets");
        GOTO_NOMEM_IF(!q->hyf);
        CHECK(infl_be_alloc_f(ctx, &q->qyf, (size_t)M * kt, "query targets"));
    } else {
        q->hy = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query labels");
        GOTO_NOMEM_IF(!q->hy);
        CHECK(be->alloc(ctx, (size_t)M * sizeof(int32_t), (void **)&q->qy));
    }
    CHECK(attrib_read_queries(ctx, a, hx, q->hy, q->hyf));
    CHECK(infl_be_alloc_f(ctx, &q->qX, (size_t)M * a->D, "the queries"));
    CHECK(be->upload(ctx, q->qX, hx, (size_t)M * a->D * sizeof(float)));
    if (q->hy) CHECK(be->upload(ctx, q->qy, q->hy, (size_t)M * sizeof(int32_t)));
    if (q->hyf) CHECK(be->upload(ctx, q->qyf, q->hyf, (size_t)M * kt * sizeof(float)));
    q->bt = (infl_batch){.b = M, .index0 = qi->begin, .x = q->qX, .y = q->qy, .yf = q->qyf, .split = a->query};
done:
    free(hx);
    if (rc < 0) attrib_qbatch_free(ctx, q);
    return rc;
}

infl_status attrib_prepare_queries(infl_ctx *ctx, attrib *a, infl_rank_result *res) {
    const infl_backend *be = ctx->be;
    const infl_rank_options *o = a->o;
    const infl_split_info *qi = a->query ? store_split_info(a->query) : NULL;
    int M = a->M, L = a->L;
    infl_status rc = INFL_OK;
    float *G = NULL, *tmp = NULL, *ql = NULL, *hE = NULL;
    double *qn = NULL;
    int32_t *hp = NULL;
    infl_model_work *qw = NULL;
    infl_hvp *op = NULL;
    attrib_qbatch qbt = {0};

    hp = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query predictions");
    GOTO_NOMEM_IF(!hp);
    CHECK(attrib_query_batch(ctx, a, &qbt));
    const infl_batch qb = qbt.bt;
    const int32_t *hy = qbt.hy;
    CHECK(infl_model_work_create(ctx, a->m, M, &qw));

    res->query_begin = qi ? qi->begin : 0;
    bool influence = attrib_contracts(o->method);
    if (!influence) {
        a->qD = calloc((size_t)a->nck * L, sizeof(float *));
        a->qA = calloc((size_t)a->nck * L, sizeof(float *));
        a->qG = calloc((size_t)a->nck * L, sizeof(float *));
        GOTO_IF(ctx, !a->qD || !a->qA || !a->qG, INFL_E_NOMEM, "out of memory");
    }
    qn = infl_calloc(ctx, (size_t)M, sizeof(double), "query gradient norms");
    GOTO_NOMEM_IF(!qn);
    for (int c = 0; c < a->nck; c++) {
        CHECK(attrib_factors(ctx, a, c, &qb, qw));
        if (a->tokens && c == 0 && !influence) {
            // sums the queries' token rows per query in the ghost form
            hE = infl_malloc(ctx, (size_t)M * qw->rows * sizeof(float), "query row sums");
            GOTO_NOMEM_IF(!hE);
            GOTO_IF(ctx, qw->rows != a->RQ, INFL_E_INTERNAL, "queries of %d token rows; expected %d", qw->rows, a->RQ);
            score_seg_indicator(hE, qw->row_off, M, 0);
            CHECK(infl_be_alloc_f(ctx, &a->EQ, (size_t)M * qw->rows, "query row sums"));
            CHECK(be->upload(ctx, a->EQ, hE, (size_t)M * qw->rows * sizeof(float)));
        }
        // gradient norms: finite, or the checkpoint diverged
        CHECK(attrib_sqnorms(ctx, a, qw, M, 1.0, qn, 0));
        for (int q = 0; q < M; q++)
            GOTO_IF(ctx, !isfinite(qn[q]), INFL_E_NUMERIC,
                    "%s: checkpoint %s: the gradient of query %" PRId64 " is not finite (NaN or Inf): the checkpoint "
                    "may have diverged",
                    o->run, store_run_checkpoint(a->run, a->ck[c])->name, (qi ? qi->begin : 0) + q);
        if (o->method == INFL_METHOD_GRADCOS) {
            a->qinv = calloc((size_t)M, sizeof(double));
            GOTO_IF(ctx, !a->qinv, INFL_E_NOMEM, "out of memory");
            for (int q = 0; q < M; q++) a->qinv[q] = qn[q] > 0 ? 1.0 / sqrt(qn[q]) : 0.0;
        }
        if (!influence)
            for (int l = 0; l < L; l++) {
                const infl_linear *ly = &a->m->layer[l];
                int din = ly->d_in, dout = ly->d_out;
                size_t rq = (size_t)qw->rows, pl = infl_linear_size(ly);
                const float *Dl = qw->D[l], *Al = qw->A[l];
                float **qd = &a->qD[c * L + l], **qa = &a->qA[c * L + l];
                const char *hint = "fewer queries (--query FILE:/split[begin:end]) or checkpoints (--checkpoints)";
                CHECK(infl_be_alloc_hint(ctx, (void **)qd, rq * dout * sizeof(float), "query factors", hint));
                CHECK(infl_be_alloc_hint(ctx, (void **)qa, rq * din * sizeof(float), "query factors", hint));
                CHECK(be->copy(ctx, *qd, Dl, rq * dout * sizeof(float)));
                CHECK(be->copy(ctx, *qa, Al, rq * din * sizeof(float)));
                if (a->path[l] == ATTRIB_DOCS) {
                    // the queries' gradients of this layer (M, pl), scored against the documents' by GEMM
                    float **qg = &a->qG[c * L + l];
                    CHECK(infl_be_alloc_hint(ctx, (void **)qg, (size_t)M * pl * sizeof(float), "query gradients",
                                             hint));
                    CHECK(score_doc_grads_layer(ctx, *qg, pl, NULL, ly, Dl, Al, qw->row_off, 0, M));
                }
            }
    }
    // labels, predictions and losses at the last checkpoint (qw holds its forward)
    CHECK(infl_model_predict(ctx, a->m, qw, hp));
    ql = infl_malloc(ctx, (size_t)M * sizeof(float), "query losses");
    GOTO_NOMEM_IF(!ql);
    CHECK(be->download(ctx, ql, qw->loss, (size_t)M * sizeof(float)));
    for (int q = 0; q < M; q++) {
        res->query_loss[q] = ql[q];
        res->query_label[q] = hy ? hy[q] : -1;
        res->query_pred[q] = hp[q];
    }
    if (a->repr) CHECK(repr_queries(ctx, a, qw, hy, res));

    if (influence) {
        // V = (H + λI)⁻¹ G_Q: query gradients, then the solver
        // (M, P) twice: the queries' gradients, whole
        char what[128];
        const char *hint = "fewer queries at once (--query FILE:/split[begin:end], several runs)";
        size_t P = a->m->lsize;
        snprintf(what, sizeof what, "query gradients (%d queries x %zu parameters)", M, P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&G, (size_t)M * P * sizeof(float), what, hint));
        snprintf(what, sizeof what, "preconditioned query gradients (%d queries x %zu parameters)", M, P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&a->V, (size_t)M * P * sizeof(float), what, hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&tmp, (size_t)M * score_grad_tmp_cols(a->m) * sizeof(float),
                                 "query layer gradients", hint));
        CHECK(score_full_grads(ctx, G, tmp, a->m, qw, M));
        if (a->pre)
            CHECK(ekfac_precondition(ctx, a->V, a->pre, a->m, G, M));
        else if (o->method == INFL_METHOD_SGD_INFLUENCE)  // the adjoint's start u_T = ∇L_q(w_T) (sgdinf.c)
            CHECK(be->copy(ctx, a->V, G, (size_t)M * P * sizeof(float)));
        else
            CHECK(attrib_solve(ctx, a, G, a->V, M, 1, &op));
        if (a->lowrank) {
            // V_q,l ≈ LF_q RF_qᵀ; the full V is not needed any more (but by --rerank's second pass)
            CHECK(ekfac_lowrank(ctx, a->LF, a->RF, a->rl, &a->energy, a->m, a->V, M, o->query_rank));
            if (!o->rerank) {
                infl_be_free(ctx, a->V);
                a->V = NULL;
            }
            res->query_rank_energy = a->energy;
        }
    }
done:
    infl_hvp_free(ctx, op);
    free(qn);
    free(ql);
    free(hp);
    free(hE);
    attrib_qbatch_free(ctx, &qbt);
    infl_be_free(ctx, G);
    infl_be_free(ctx, tmp);
    infl_model_work_free(ctx, a->m, qw);
    return rc;
}

// Adds checkpoint c's score terms of layer l for the sub-batch in a->work (b examples,
// already through attrib_factors): into a->Sd (M, b) when the layer is scored by
// documents' gradients (ATTRIB_DOCS) and, if not, per token row into R ((M, rows), or
// (rows, M) for --query-rank), which attrib_sum_rows sums per example. For T = 1, R is
// a->Sd itself. rows_only: the token-row form whatever the layer's path (the token shares).
infl_status attrib_score_layer(infl_ctx *ctx, attrib *a, int c, int l, int b, int rows_only) {
    int M = a->M;
    const infl_model_work *w = a->work;
    int rz = w->rows;
    float *R = a->tokens ? a->R : a->Sd;
    const infl_linear *ly = &a->m->layer[l];
    const float *Dl = w->D[l], *Al = w->A[l];
    if (a->path[l] == ATTRIB_DOCS && !rows_only) {
        // S += w_c G_Q G_Zᵀ: the documents' gradients formed a chunk at a time
        size_t pl = infl_linear_size(ly);
        const float *Q = attrib_contracts(a->o->method) ? a->V + a->m->loff[l] : a->qG[c * a->L + l];
        int ldq = attrib_contracts(a->o->method) ? (int)a->m->lsize : (int)pl;
        for (int i0 = 0; i0 < b; i0 += a->Bm) {
            int n = b - i0 < a->Bm ? b - i0 : a->Bm;
            FORWARD_IF_ERROR(score_doc_grads_layer(ctx, a->Gm, pl, NULL, ly, Dl, Al, w->row_off, i0, n));
            FORWARD_IF_ERROR(ctx->be->sgemm(ctx, INFL_N, INFL_T, M, n, (int)pl, (float)a->weight[c], Q, ldq, a->Gm,
                                            (int)pl, 1.0f, a->Sd + i0, b));
        }
        a->flops += score_doc_grads_flops(ly, rz) + 2.0 * M * b * (double)pl;
    } else if (a->lowrank) {
        FORWARD_IF_ERROR(score_lowrank_layer(ctx, R, a->X1, a->X2, ly, a->LF[l], a->RF[l], a->rl[l], Dl, Al, M, rz));
        a->flops += score_lowrank_flops(ly, M, rz, a->rl[l]);
    } else if (attrib_contracts(a->o->method)) {
        FORWARD_IF_ERROR(score_contract_layer(ctx, R, a->Gz, ly, a->V + a->m->loff[l], a->m->lsize, Dl, Al, M, rz));
        a->flops += score_contract_flops(ly, M, rz);
    } else {
        int rq = a->tokens ? a->RQ : M;
        FORWARD_IF_ERROR(score_ghost_rows_layer(ctx, R, a->T1, a->T2, ly, a->qD[c * a->L + l], a->qA[c * a->L + l],
                                                a->tokens ? a->EQ : NULL, M, rq, Dl, Al, rz, (float)a->weight[c]));
        a->flops += score_ghost_rows_flops(ly, M, rq, rz);
    }
    return INFL_OK;
}

// Checkpoint c's score terms of every layer (attrib_score_layer).
infl_status attrib_score_block(infl_ctx *ctx, attrib *a, int c, int b, int rows_only) {
    for (int l = 0; l < a->L; l++) FORWARD_IF_ERROR(attrib_score_layer(ctx, a, c, l, b, rows_only));
    return INFL_OK;
}

// Language models: a->Sd += the per-token-row scores a->R summed per example of the
// sub-batch in a->work (R E_Zᵀ, or E_Z R for --query-rank's (rows, M) layout).
infl_status attrib_sum_rows(infl_ctx *ctx, attrib *a, int b) {
    if (!a->tokens) return INFL_OK;
    int rz = a->work->rows, M = a->M;
    score_seg_indicator(a->hEZ, a->work->row_off, b, 0);
    FORWARD_IF_ERROR(ctx->be->upload(ctx, a->EZ, a->hEZ, (size_t)b * rz * sizeof(float)));
    a->flops += 2.0 * M * (double)rz * b;
    if (a->lowrank)
        return ctx->be->sgemm(ctx, INFL_N, INFL_N, b, M, rz, 1.0f, a->EZ, rz, a->R, M, 1.0f, a->Sd, M);
    return ctx->be->sgemm(ctx, INFL_N, INFL_T, M, b, rz, 1.0f, a->R, rz, a->EZ, rz, 1.0f, a->Sd, b);
}

// Per layer, how a language model's layers are scored: by the token-row form (ghost
// pairs, or the contraction per row) or by forming each document's gradient Δᵀ Ã and
// one GEMM against the queries', whichever counts fewer FLOPs for a document of the
// train split's mean length. T = 1 models and --query-rank keep the row form.
void attrib_choose_paths(attrib *a) {
    for (int l = 0; l < a->L; l++) {
        const infl_linear *ly = &a->m->layer[l];
        a->path[l] = ATTRIB_ROWS;
        if (!a->tokens || a->lowrank) continue;
        double z = a->zrows, M = a->M, pl = (double)infl_linear_size(ly);
        double rows = attrib_contracts(a->o->method) ? score_contract_flops(ly, a->M, 1) * z
                                                     : score_ghost_rows_flops(ly, a->M, a->RQ, z);
        double docs = score_doc_grads_flops(ly, z) + 2.0 * M * pl;
        int form = a->o->score_form;
        if (form == 2 || (form == 0 && docs < rows)) a->path[l] = ATTRIB_DOCS;
    }
}

infl_rank_result *attrib_result_new(int M, int k) {
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

void attrib_result_topk(infl_rank_result *res, const infl_topk *tk, int top) {
    for (int q = 0; q < res->M; q++) {
        int cnt;
        infl_topk_get(tk, q, res->top_index + (size_t)q * top, res->top_score + (size_t)q * top,
                      res->bottom_index + (size_t)q * top, res->bottom_score + (size_t)q * top, &cnt);
        res->k = cnt;
    }
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
    free(r->layer_damping);
    free(r->layer_mean_eigenvalue);
    free(r->layer_path);
    free(r->query_class);
    free(r->query_logit);
    for (int q = 0; q < r->M; q++) {
        if (r->query_prompt) free(r->query_prompt[q]);
        if (r->query_completion) free(r->query_completion[q]);
        for (int j = 0; j < r->k; j++) {
            infl_token_shares *sh[2] = {r->top_shares ? &r->top_shares[(size_t)q * r->k + j] : NULL,
                                        r->bottom_shares ? &r->bottom_shares[(size_t)q * r->k + j] : NULL};
            for (int i = 0; i < 2; i++)
                if (sh[i]) {
                    free(sh[i]->token);
                    free(sh[i]->share);
                }
        }
    }
    free(r->query_prompt);
    free(r->query_completion);
    free(r->top_shares);
    free(r->bottom_shares);
    free(r);
}

// The streamed scoring (infl_stage_stream): each sub-batch's block into the shard's
// host block, each shard's block into the top-k (this process's rows), and at each step
// every process's block to rank 0 for the block callback and the file (core/comm.h).
typedef struct {
    int64_t col0, n;  // the block's first row within the split's range, and its rows (0: none)
} rank_head;

typedef struct {
    attrib *a;
    int64_t S;        // rows of a shard's host block
    rank_head *head;  // host: the head of a step's block, hblock right after it
    float *hblock;    // (M, S) host
    float *hsub;      // (M, B) a sub-batch's download
    double *zn;       // (B) gradcos norms
    infl_topk *tk;
    infl_scw *scw;
    attrib_block_fn block;
    void *user;
} rank_stream;

// Representer points: the sub-batch's output gradients at the fine-tuned layer (and the
// fine-tune's train statistics), then a->Sd (M, b) = −1/(2λn) (E_Q G_Zᵀ) ∘ (F_Q F_Zᵀ + 1).
static infl_status repr_score_block(infl_ctx *ctx, attrib *a, const infl_batch *bt, int b) {
    repr_layer *r = a->repr;
    const infl_linear *ly = &a->m->layer[r->l];
    FORWARD_IF_ERROR(repr_train_block(ctx, r, a->work, bt->y, b));
    a->flops += 4.0 * b * (double)r->d * r->K + score_ghost_flops(ly, a->M, b);
    return score_ghost_layer(ctx, a->Sd, a->T1, a->T2, ly, a->qD[r->l], a->qA[r->l], r->G, a->work->A[r->l], a->M, b,
                             (float)repr_alpha_scale(r));
}

static infl_status rank_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    (void)sh;
    rank_stream *rs = user;
    attrib *a = rs->a;
    const infl_rank_options *o = a->o;
    int M = a->M, b = bt->b;
    FORWARD_IF_ERROR(ctx->be->fill(ctx, a->Sd, 0.0f, (size_t)M * b));
    for (int c = 0; c < a->nck; c++) {
        FORWARD_IF_ERROR(attrib_factors(ctx, a, c, bt, a->work));
        if (c == 0 && a->tokens) FORWARD_IF_ERROR(ctx->be->fill(ctx, a->R, 0.0f, (size_t)M * a->work->rows));
        a->flops += infl_model_fb_flops(a->m, a->work->rows);
        if (o->method == INFL_METHOD_GRADCOS) FORWARD_IF_ERROR(attrib_sqnorms(ctx, a, a->work, b, 1.0, rs->zn, 0));
        if (a->repr)
            FORWARD_IF_ERROR(repr_score_block(ctx, a, bt, b));
        else
            FORWARD_IF_ERROR(attrib_score_block(ctx, a, c, b, 0));
    }
    FORWARD_IF_ERROR(attrib_sum_rows(ctx, a, b));
    FORWARD_IF_ERROR(ctx->be->download(ctx, rs->hsub, a->Sd, (size_t)M * b * sizeof(float)));
    for (int q = 0; q < M; q++) {
        float *dst = rs->hblock + (size_t)q * rs->S + r0;
        const float *src = rs->hsub + (size_t)q * b;
        if (o->method == INFL_METHOD_GRADCOS)
            for (int j = 0; j < b; j++)
                dst[j] = (float)(src[j] * a->qinv[q] * (rs->zn[j] > 0 ? 1.0 / sqrt(rs->zn[j]) : 0.0));
        else if (a->lowrank)  // (b, M) on the backend
            for (int j = 0; j < b; j++) dst[j] = rs->hsub[(size_t)j * M + q];
        else
            memcpy(dst, src, (size_t)b * sizeof(float));
    }
    return INFL_OK;
}

static infl_status rank_shard(infl_ctx *ctx, void *user, const infl_shard *sh) {
    rank_stream *rs = user;
    attrib *a = rs->a;
    const int64_t begin = store_split_info(a->train)->begin;
    return infl_topk_push(ctx, rs->tk, rs->hblock, a->M, (int)sh->n, (int)rs->S, begin + sh->row0);
}

// On rank 0, a process's block of a step: to the block callback and the file.
static infl_status rank_take(infl_ctx *ctx, void *user, int from, const void *blk) {
    (void)from;
    rank_stream *rs = user;
    rank_head h;
    memcpy(&h, blk, sizeof h);
    const float *S = (const float *)((const char *)blk + sizeof h);
    if (h.n == 0) return INFL_OK;
    if (rs->block) FORWARD_IF_ERROR(rs->block(ctx, rs->user, S, rs->a->M, (int)h.n, (int)rs->S, h.col0));
    if (rs->scw) FORWARD_IF_ERROR(store_scores_write_block(ctx, rs->scw, S, (int)h.n, (int)rs->S, h.col0));
    return INFL_OK;
}

// A step (with the block callback or --save-scores): every process's shard block to rank 0.
static infl_status rank_step(infl_ctx *ctx, void *user, const infl_shard *sh) {
    rank_stream *rs = user;
    *rs->head = (rank_head){sh ? sh->row0 : 0, sh ? sh->n : 0};
    return infl_comm_gather(ctx, rs->head, sizeof(rank_head) + (size_t)rs->a->M * rs->S * sizeof(float), rank_take,
                            rs);
}

infl_status infl_rank(infl_ctx *ctx, const infl_rank_options *o, infl_rank_result **out) {
    // every process leaves with the job's status (core/comm.h)
    infl_status rc = infl_comm_sync(ctx, attrib_rank(ctx, o, NULL, NULL, out));
    if (rc < 0) {
        infl_rank_result_free(*out);
        *out = NULL;
    }
    return rc;
}

infl_status attrib_rank(infl_ctx *ctx, const infl_rank_options *o, attrib_block_fn block, void *user,
                        infl_rank_result **out) {
    *out = NULL;
    RETURN_IF(ctx, o->top < 1, INFL_E_ARG, "--top: expected at least 1, got %d", o->top);
    RETURN_IF(ctx,
              infl_comm_size(ctx) > 1 && ((o->index && *o->index) || o->prefilter_bm25 || o->prefilter_knn ||
                                          o->rerank || o->method == INFL_METHOD_SGD_INFLUENCE ||
                                          o->method == INFL_METHOD_REPRESENTER),
              INFL_E_UNSUPPORTED,
              "across processes (mpirun -np %d), rank streams the training rows by tracin, graddot, gradcos, if, "
              "ekfac, kfac or diagonal; --index, --prefilter, --rerank, sgd-influence and representer run in one "
              "process",
              infl_comm_size(ctx));
    if (o->index && *o->index) return index_rank(ctx, o, block, user, out);
    // the candidates per query of a prefilter (bm25 or knn), 0 for none
    const int pre = o->prefilter_bm25 ? o->prefilter_bm25 : o->prefilter_knn;
    const char *pre_name = o->prefilter_bm25 ? "bm25" : "knn";
    RETURN_IF(ctx, o->prefilter_bm25 < 0 || o->prefilter_knn < 0 || o->rerank < 0, INFL_E_ARG,
              "--prefilter bm25:K or knn:K and --rerank K: expected K >= 1");
    RETURN_IF(ctx, o->prefilter_bm25 && o->prefilter_knn, INFL_E_ARG, "give one --prefilter, bm25 or knn");
    RETURN_IF(ctx, pre && o->rerank, INFL_E_ARG, "give --prefilter or --rerank, not both");
    RETURN_IF(ctx, (pre || o->rerank) && o->save_scores, INFL_E_ARG,
              "--save-scores writes every example's score; with --prefilter or --rerank only the candidates have one");
    RETURN_IF(ctx, o->rerank && o->query_rank < 1, INFL_E_ARG,
              "--rerank K rescored the best K at full rank after a pass at --query-rank r: give --query-rank");
    RETURN_IF(ctx, (pre && pre < o->top) || (o->rerank && o->rerank < o->top), INFL_E_ARG,
              "--top %d is more than the %d candidates of each query", o->top, pre ? pre : o->rerank);
    attrib a;
    infl_status rc = attrib_open(ctx, &a, o, 1);
    if (rc < 0) return rc;
    infl_rank_result *res = NULL;
    infl_topk *tk = NULL;
    infl_scw *scw = NULL;
    float *hblock = NULL, *hsub = NULL;
    rank_head *head = NULL;
    double *zn = NULL;
    int64_t *cand = NULL;
    int M = a.M;
    GOTO_IF(ctx, o->top > a.N, INFL_E_ARG, "--top %d is larger than the %" PRId64 " training examples", o->top, a.N);
    GOTO_IF(ctx, (o->rerank || o->prefilter_bm25) && !a.tokens, INFL_E_ARG,
            "%s: --prefilter bm25 and --rerank choose among documents: they serve language models (a gpt run); an "
            "mlp's rows take --prefilter knn:K",
            o->run);
    GOTO_IF(ctx, o->prefilter_knn && a.tokens, INFL_E_ARG,
            "%s: --prefilter knn finds the nearest rows of an mlp run's features; for a gpt's documents use bm25:K",
            o->run);
    GOTO_IF(ctx, pre > a.N, INFL_E_ARG, "--prefilter %s:%d: expected 1 to %" PRId64 " (the training %s)", pre_name,
            pre, a.N, a.tokens ? "documents" : "examples");
    res = attrib_result_new(M, o->top);
    GOTO_IF(ctx, !res, INFL_E_NOMEM, "out of memory for the results");
    res->N = a.N;
    res->checkpoints = a.nck;
    res->weight_decay = a.m->wd;
    if (a.pre) {
        res->layers = a.L;
        res->layer_damping = calloc((size_t)a.L, sizeof(double));
        res->layer_mean_eigenvalue = calloc((size_t)a.L, sizeof(double));
        GOTO_IF(ctx, !res->layer_damping || !res->layer_mean_eigenvalue, INFL_E_NOMEM, "out of memory");
        for (int l = 0; l < a.L; l++) {
            res->layer_damping[l] = a.pre->damping[l];
            res->layer_mean_eigenvalue[l] = a.pre->mean_lambda[l];
        }
    }
    bool influence = attrib_contracts(o->method);
    if (a.lowrank) {
        // the low-rank blocks (B, M r) within ~8 Mi floats each
        int64_t per = (int64_t)M * o->query_rank * (a.tokens ? a.ctxT : 1);
        a.B = (int)(8388608 / per < 1024 ? 8388608 / per : 1024);
        a.B = a.B < (a.tokens ? 1 : 16) ? (a.tokens ? 1 : 16) : a.B;
    }
    // sgd-influence scores each step's batch: buffers of the trainer's batch
    if (o->method == INFL_METHOD_SGD_INFLUENCE) CHECK(sgdinf_batch(ctx, &a, &a.B));
    attrib_choose_paths(&a);
    CHECK(attrib_alloc_scoring(ctx, &a, M, influence));
    if (a.lowrank) {
        char what[128];
        int64_t rows = attrib_max_rows(&a);
        snprintf(what, sizeof what, "a low-rank score block (%" PRId64 " train rows x %d queries x rank %d)", rows, M,
                 o->query_rank);
        const char *hint = "a lower --query-rank, or fewer queries (--query FILE:/split[begin:end])";
        size_t n = (size_t)rows * M * o->query_rank * sizeof(float);
        CHECK(infl_be_alloc_hint(ctx, (void **)&a.X1, n, what, hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&a.X2, n, what, hint));
    }

    if (o->method == INFL_METHOD_REPRESENTER) CHECK(attrib_repr_fit(ctx, &a));
    double t0 = infl_now();
    CHECK(attrib_prepare_queries(ctx, &a, res));
    res->seconds_prepare = infl_now() - t0;

    if (o->output && infl_comm_root(ctx)) {  // rank 0 writes
        CHECK(store_scores_create(ctx, o->output, o->force, M, o->top, a.N, o->save_scores, &scw));
        CHECK(attrib_write_attrs(ctx, scw, o, &a));
    }
    const int64_t begin = store_split_info(a.train)->begin;

    double t1 = infl_now();
    a.flops = 0;
    res->candidates = a.N;
    if (o->method == INFL_METHOD_SGD_INFLUENCE) {
        // every training row's score at once (the steps' contributions add up), then as one block
        hblock = malloc((size_t)M * a.N * sizeof(float));
        GOTO_IF(ctx, !hblock, INFL_E_NOMEM,
                "out of memory for the scores (%d queries x %" PRId64 " training rows, %.1f MiB); fewer queries at once",
                M, a.N, (double)M * a.N * 4.0 / 1048576.0);
        CHECK(sgdinf_scores(ctx, &a, hblock, res));
        CHECK(infl_topk_create(ctx, M, o->top, &tk));
        CHECK(infl_topk_push(ctx, tk, hblock, M, (int)a.N, (int)a.N, begin));
        if (block) CHECK(block(ctx, user, hblock, M, (int)a.N, (int)a.N, 0));
        if (scw && o->save_scores) CHECK(store_scores_write_block(ctx, scw, hblock, (int)a.N, (int)a.N, 0));
        res->seconds_score = infl_now() - t1;
        res->flops = a.flops;
    } else if (!pre) {
        // the train split streamed past (stage.h); the score download is the only synchronisation
        int64_t S = attrib_shard_rows(&a);
        // the block follows its head: one buffer for a step's gather
        head = malloc(sizeof(rank_head) + (size_t)M * S * sizeof(float));
        hblock = head ? (float *)(head + 1) : NULL;
        GOTO_IF(ctx, !hblock, INFL_E_NOMEM,
                "out of memory for a shard's score block (%d queries x %" PRId64 " train rows, %.1f MiB); to fit: a "
                "smaller --shard-mb or --shard, or fewer queries",
                M, S, (double)M * S * 4.0 / 1048576.0);
        // the score download of every sub-batch lands here: pinned on CUDA (a faster copy)
        CHECK(infl_be_host_alloc(ctx, (size_t)M * a.B * sizeof(float), (void **)&hsub, "a score block"));
        zn = infl_malloc(ctx, (size_t)a.B * sizeof(double), "train gradient norms");
        GOTO_NOMEM_IF(!hblock || !hsub || !zn);
        // --rerank keeps the best K of each side for the second pass
        CHECK(infl_topk_create(ctx, M, o->rerank > o->top ? o->rerank : o->top, &tk));
        rank_stream rs = {.a = &a, .S = S, .head = head, .hblock = hblock, .hsub = hsub, .zn = zn, .tk = tk,
                          .scw = o->save_scores ? scw : NULL, .block = block, .user = user};
        infl_stream_fns fns = {.batch = rank_batch, .shard = rank_shard, .user = &rs, .ranks = INFL_STREAM_ROWS,
                               .step = block || o->save_scores ? rank_step : NULL};
        char info[64];
        snprintf(info, sizeof info, "%s, %d queries", infl_method_name(o->method), M);
        double wait_s = 0;
        CHECK(infl_stage_stream(ctx, &a.st, a.train, S, a.docs ? a.ctxT : 0, 1, &fns, "rank", info, &wait_s));
        CHECK(infl_topk_reduce(ctx, tk));  // every process's rows' top-k merged
        res->seconds_score = infl_now() - t1;
        res->seconds_wait = wait_s;
        CHECK(infl_comm_sum_f64(ctx, &a.flops, 1));  // the job's
        res->flops = a.flops;
    }
    if (pre) {
        // each query against its K candidates only: the most similar documents (bm25) or nearest rows (knn)
        double t2 = infl_now();
        cand = infl_malloc(ctx, (size_t)M * pre * sizeof(int64_t), "candidates");
        GOTO_NOMEM_IF(!cand);
        CHECK(attrib_prefilter_candidates(ctx, &a, pre, cand));
        res->seconds_prefilter = infl_now() - t2;
        CHECK(attrib_rank_candidates(ctx, &a, cand, pre, res));
        res->seconds_score = infl_now() - t2;
    } else if (o->rerank) {
        // the best K of each side at rank r, again at full rank
        double t2 = infl_now();
        int K = o->rerank, k2 = 2 * K, cnt;
        cand = infl_malloc(ctx, (size_t)M * k2 * sizeof(int64_t), "candidates");
        float *tmp = infl_malloc(ctx, (size_t)k2 * sizeof(float), "candidates");
        if (!cand || !tmp) free(tmp);
        GOTO_NOMEM_IF(!cand || !tmp);
        for (int q = 0; q < M; q++) {
            int64_t *cq = cand + (size_t)q * k2;
            infl_topk_get(tk, q, cq, tmp, cq + K, tmp + K, &cnt);
            for (int j = 0; j < k2; j++) {
                cq[j] = j % K < cnt ? cq[j] - begin : -1;
                for (int i = 0; i < j && cq[j] >= 0; i++)
                    if (cq[i] == cq[j]) cq[j] = -1;  // in both lists when N < 2K
            }
        }
        free(tmp);
        a.lowrank = 0;
        attrib_choose_paths(&a);
        CHECK(attrib_rank_candidates(ctx, &a, cand, k2, res));
        res->seconds_rerank = infl_now() - t2;
    } else {
        attrib_result_topk(res, tk, o->top);
    }
    if (a.tokens) {
        res->layer_path = calloc((size_t)a.L, sizeof(int));
        GOTO_IF(ctx, !res->layer_path, INFL_E_NOMEM, "out of memory");
        res->layer_paths = a.L;
        for (int l = 0; l < a.L; l++) res->layer_path[l] = a.path[l];
    }
    CHECK(attrib_give_query_texts(ctx, &a, res));
    if (a.docs && o->token_shares) CHECK(attrib_token_shares(ctx, &a, res));
    if (a.repr) {
        // the train statistics came with the scoring pass (--prefilter and --rerank serve gpt runs only)
        repr_finish_train(a.repr);
        res->representer.train_pearson = a.repr->fit.train_pearson;
        res->representer.train_acc_before = a.repr->fit.train_acc_before;
        res->representer.train_acc_after = a.repr->fit.train_acc_after;
        if (scw) CHECK(attrib_write_repr_fit(ctx, scw, &res->representer));
    }
    CHECK(infl_comm_sync(ctx, INFL_OK));  // the file is committed only when every process has done its part
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
    store_scores_abort(scw);
    infl_topk_free(tk);
    free(cand);
    if (head)
        free(head);
    else
        free(hblock);
    infl_be_host_free(ctx, hsub);
    free(zn);
    infl_rank_result_free(res);
    attrib_close(&a);
    return rc;
}

