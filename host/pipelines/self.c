/*
 * self.c — `infl self`: the self-influence of every training example, the classic
 * detector of mislabelled data (a wrong label makes an example pull hard on itself).
 *   tracin   Σ_c lr_c |∇ℓ_z(w_c)|²   (ghost: Σ_l |δ_l|² (|a_l|² + β_l) per checkpoint)
 *   graddot  |∇ℓ_z|² at one checkpoint
 *   if       ∇ℓ_zᵀ (H + λI)⁻¹ ∇ℓ_z, per sub-batch of materialised gradients
 *   ekfac    ∇ℓ_zᵀ P(∇ℓ_z) without forming gradients: in the eigenbases the
 *            gradient δ ãᵀ is u vᵀ with u = Q_Sᵀ δ, v = Q_Aᵀ ã, so the score is
 *            Σ_ij u_i² v_j² / (Λ_ij + wd + λ) = rowdot((u^∘2) Inv, v^∘2) per layer
 *            (kfac and diagonal likewise)
 *   representer  α_{z,y_z} (|f_z|² + 1): z's part of its own label's logit at the
 *            fine-tuned last layer (estimators/representer.h); for softmax_ce
 *            (1 − p_{y_z}) |f̃_z|² / (2λn) ≥ 0, large where the layer fits z worst
 * With /train/flipped in the data, reports the share of flipped labels found among
 * the top 5%, 10% and 20% by self-influence.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"
#include "core/comm.h"
#include "estimators/ihvp.h"

void infl_self_result_free(infl_self_result *r) {
    if (!r) return;
    free(r->self);
    free(r->order);
    free(r);
}

typedef struct {
    float s;
    int64_t i;
} scored;

// Decreasing score, ties by index.
static int by_score_desc(const void *x, const void *y) {
    const scored *a = x, *b = y;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

// order (N) = indices of self by decreasing value.
static infl_status sort_order(infl_ctx *ctx, const float *self, int64_t N, int64_t *order) {
    scored *t = infl_malloc(ctx, (size_t)N * sizeof(scored), "sorting");
    if (!t) return INFL_E_NOMEM;
    for (int64_t i = 0; i < N; i++) t[i] = (scored){self[i], i};
    qsort(t, (size_t)N, sizeof(scored), by_score_desc);
    for (int64_t i = 0; i < N; i++) order[i] = t[i].i;
    free(t);
    return INFL_OK;
}

// Recall of the flipped labels in the top shares of the order.
static infl_status flipped_recall(infl_ctx *ctx, attrib *a, infl_self_result *r) {
    int64_t N = a->N, chunk = 65536;
    uint8_t *fl = calloc((size_t)N, 1);
    int32_t *buf = malloc((size_t)chunk * sizeof(int32_t));
    infl_status rc = INFL_OK;
    GOTO_IF(ctx, !fl || !buf, INFL_E_NOMEM, "out of memory");
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t n = r0 + chunk <= N ? chunk : N - r0;
        CHECK(store_split_read_int(ctx, a->train, "flipped", r0, n, buf));
        for (int64_t i = 0; i < n; i++) {
            fl[r0 + i] = buf[i] != 0;
            r->flipped += buf[i] != 0;
        }
    }
    const double shares[3] = {0.05, 0.10, 0.20};
    for (int s = 0; s < 3; s++) {
        int64_t top = (int64_t)ceil(shares[s] * (double)N), found = 0;
        for (int64_t i = 0; i < top && i < N; i++) found += fl[r->order[i]];
        r->recall[s] = r->flipped ? (double)found / (double)r->flipped : NAN;
    }
done:
    free(fl);
    free(buf);
    return rc;
}

// One streamed sub-batch (infl_stage_stream): its examples' self-influence into r->self.
typedef struct {
    attrib *a;
    infl_self_result *r;
    double *acc;                                // (B) host
    float *G, *X, *tmp, *d, *DQ, *AQ, *T;       // backend scratch (as the method needs)
    infl_hvp **op;                              // if: the direct solver's factorisation
} self_stream;

static infl_status self_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    self_stream *ss = user;
    attrib *a = ss->a;
    const infl_backend *be = ctx->be;
    int b = bt->b;
    double *acc = ss->acc;
    float *d = ss->d, *DQ = ss->DQ, *AQ = ss->AQ;
    for (int c = 0; c < a->nck; c++) {
        FORWARD_IF_ERROR(attrib_factors(ctx, a, c, bt, a->work));
        if (a->repr) {
            FORWARD_IF_ERROR(repr_train_block(ctx, a->repr, a->work, bt->y, b));
            FORWARD_IF_ERROR(repr_self_block(ctx, a->repr, a->work, sh->y + r0, b, acc));
        } else if (a->pre && a->tokens) {
            // documents: each one's rotated gradient R = Σ_t (Q_Sᵀ δ_t)(Q_Aᵀ ã_t)ᵀ, then
            // Σ_ij R_ij² / (Λ_ij + wd + λ): R squared against the inverse, a chunk at a time
            for (int l = 0; l < a->L; l++) {
                int ni = infl_linear_ni(&a->m->layer[l]), dout = a->m->layer[l].d_out;
                infl_linear rot = {.d_in = ni, .d_out = dout, .bias = 0};
                size_t n2 = (size_t)dout * ni;
                FORWARD_IF_ERROR(ekfac_rotate(ctx, DQ, AQ, a->pre, l, a->work->D[l], a->work->A[l], a->work->rows));
                for (int i0 = 0; i0 < b; i0 += a->Bm) {
                    int n = b - i0 < a->Bm ? b - i0 : a->Bm;
                    FORWARD_IF_ERROR(score_doc_grads_layer(ctx, a->Gm, n2, NULL, &rot, DQ, AQ, a->work->row_off, i0, n));
                    FORWARD_IF_ERROR(be->mul(ctx, a->Gm, a->Gm, a->Gm, (size_t)n * n2));
                    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, n, 1, (int)n2, 1.0f, a->Gm, (int)n2, a->pre->inv[l], 1,
                                               l > 0 ? 1.0f : 0.0f, d + i0, 1));
                }
            }
            FORWARD_IF_ERROR(be->download(ctx, a->hrow, d, (size_t)b * sizeof(float)));
            for (int i = 0; i < b; i++) acc[i] = a->hrow[i];
        } else if (a->pre) {
            for (int l = 0; l < a->L; l++) {
                int ni = infl_linear_ni(&a->m->layer[l]), dout = a->m->layer[l].d_out;
                FORWARD_IF_ERROR(ekfac_rotate(ctx, DQ, AQ, a->pre, l, a->work->D[l], a->work->A[l], b));
                FORWARD_IF_ERROR(be->mul(ctx, DQ, DQ, DQ, (size_t)b * dout));
                FORWARD_IF_ERROR(be->mul(ctx, AQ, AQ, AQ, (size_t)b * ni));
                FORWARD_IF_ERROR(
                    be->sgemm(ctx, INFL_N, INFL_N, b, ni, dout, 1.0f, DQ, dout, a->pre->inv[l], ni, 0.0f, ss->T, ni));
                FORWARD_IF_ERROR(be->row_dot(ctx, d, ss->T, AQ, b, ni, 1.0f, l > 0 ? 1.0f : 0.0f));
            }
            FORWARD_IF_ERROR(be->download(ctx, a->hrow, d, (size_t)b * sizeof(float)));
            for (int i = 0; i < b; i++) acc[i] = a->hrow[i];
        } else if (a->o->method != INFL_METHOD_IF) {
            FORWARD_IF_ERROR(attrib_sqnorms(ctx, a, a->work, b, a->weight[c], acc, c > 0));
        } else {
            FORWARD_IF_ERROR(score_full_grads(ctx, ss->G, ss->tmp, a->m, a->work, b));
            FORWARD_IF_ERROR(attrib_solve(ctx, a, ss->G, ss->X, b, 0, ss->op));
            FORWARD_IF_ERROR(be->row_dot(ctx, d, ss->G, ss->X, b, (int)a->m->lsize, 1.0f, 0.0f));
            FORWARD_IF_ERROR(be->download(ctx, a->hrow, d, (size_t)b * sizeof(float)));
            for (int i = 0; i < b; i++) acc[i] = a->hrow[i];
        }
    }
    for (int i = 0; i < b; i++) {
        int64_t row = sh->row0 + r0 + i;
        RETURN_IF(ctx, !isfinite(acc[i]), INFL_E_NUMERIC,
                  "training example %" PRId64 ": self-influence is not finite: a checkpoint may have diverged",
                  bt->index0 + i);
        ss->r->self[row] = (float)acc[i];
    }
    return INFL_OK;
}

// self --index: the self-influences from the index, then the order (and recall) as below.
static infl_status self_from_index(infl_ctx *ctx, const infl_rank_options *o, infl_self_result **out) {
    infl_self_result *r = calloc(1, sizeof *r);
    RETURN_IF(ctx, !r, INFL_E_NOMEM, "out of memory");
    double t0 = infl_now();
    char data[4416];
    attrib a = {0};
    infl_dataref ref;
    infl_scw *scw = NULL;
    infl_status rc = index_self(ctx, o, r, data, sizeof data);
    CHECK(rc);
    r->order = malloc((size_t)r->N * sizeof(int64_t));
    GOTO_IF(ctx, !r->order, INFL_E_NOMEM, "out of memory");
    CHECK(sort_order(ctx, r->self, r->N, r->order));
    // the recall of flipped labels reads the indexed split's /flipped
    CHECK(infl_dataref_parse(ctx, data, &ref));
    CHECK(store_split_open(ctx, &ref, &a.train));
    a.N = r->N;
    r->has_flipped = store_split_info(a.train)->has_flipped;
    if (r->has_flipped) CHECK(flipped_recall(ctx, &a, r));
    for (int64_t i = 0; i < r->N; i++) r->order[i] += ref.begin;
    if (o->output) {
        CHECK(store_scores_create(ctx, o->output, o->force, 1, 0, r->N, 0, &scw));
        CHECK(store_scores_attr_str(ctx, scw, "method", infl_method_name(o->method)));
        CHECK(store_scores_attr_str(ctx, scw, "index", o->index));
        CHECK(store_scores_attr_str(ctx, scw, "train", data));
        CHECK(store_scores_write_self(ctx, scw, r->self, r->order, r->N));
        rc = store_scores_commit(ctx, scw);
        scw = NULL;
        CHECK(rc);
    }
    r->seconds = infl_now() - t0;
    *out = r;
    r = NULL;
done:
    store_scores_abort(scw);
    store_split_close(a.train);
    infl_self_result_free(r);
    return rc;
}

// Several processes (core/comm.h): each one's rows of self (N) to rank 0, then all of them
// to every process.
static infl_status self_gather(infl_ctx *ctx, float *self, int64_t N) {
    if (infl_comm_size(ctx) == 1) return INFL_OK;
    int64_t b, e, widest;
    FORWARD_IF_ERROR(infl_comm_range(ctx, N, 1, "self-influence", &b, &e, &widest));
    FORWARD_IF_ERROR(infl_comm_gather_rows(ctx, self, sizeof(float), b, e - b, widest));
    return infl_comm_bcast(ctx, self, (size_t)N * sizeof(float));
}

static infl_status self_run(infl_ctx *ctx, const infl_rank_options *o, infl_self_result **out);

infl_status infl_self(infl_ctx *ctx, const infl_rank_options *o, infl_self_result **out) {
    // every process leaves with the job's status (core/comm.h)
    infl_status rc = infl_comm_sync(ctx, self_run(ctx, o, out));
    if (rc < 0) {
        infl_self_result_free(*out);
        *out = NULL;
    }
    return rc;
}

static infl_status self_run(infl_ctx *ctx, const infl_rank_options *o, infl_self_result **out) {
    *out = NULL;
    RETURN_IF(ctx, infl_comm_size(ctx) > 1 && ((o->index && *o->index) || o->method == INFL_METHOD_REPRESENTER),
              INFL_E_UNSUPPORTED,
              "across processes (mpirun -np %d), self streams the training rows by tracin, graddot, if, ekfac, kfac "
              "or diagonal; --index and representer run in one process",
              infl_comm_size(ctx));
    if (o->index && *o->index) return self_from_index(ctx, o, out);
    attrib a;
    infl_status rc = attrib_open(ctx, &a, o, 0);
    if (rc < 0) return rc;
    infl_self_result *r = calloc(1, sizeof *r);
    infl_hvp *op = NULL;
    infl_scw *scw = NULL;
    double *acc = NULL;
    float *G = NULL, *X = NULL, *tmp = NULL, *d = NULL, *DQ = NULL, *AQ = NULL, *T = NULL;
    GOTO_IF(ctx, !r, INFL_E_NOMEM, "out of memory");
    GOTO_IF(ctx, o->method == INFL_METHOD_IF && o->solver != 0, INFL_E_ARG,
            "self-influence by if needs --solver direct: one factorisation serves every example, where cg or "
            "lissa would solve once per training example");
    GOTO_IF(ctx, o->query_rank != 0, INFL_E_ARG, "--query-rank applies to rank, not self");
    GOTO_IF(ctx, o->method == INFL_METHOD_SGD_INFLUENCE, INFL_E_UNSUPPORTED,
            "self-influence by sgd-influence would carry one adjoint per training example through the whole "
            "replay; use tracin, graddot or if");
    GOTO_IF(ctx, o->method == INFL_METHOD_GRADCOS, INFL_E_ARG,
            "self-influence by gradcos is 1 for every example; use tracin, graddot or if");
    bool influence = o->method == INFL_METHOD_IF;
    r->N = a.N;
    r->self = malloc((size_t)a.N * sizeof(float));
    r->order = malloc((size_t)a.N * sizeof(int64_t));
    GOTO_IF(ctx, !r->self || !r->order, INFL_E_NOMEM, "out of memory for %" PRId64 " self-influences", a.N);
    if (influence) {
        // the direct solver's limit, before any pass over the data
        size_t lim = infl_ihvp_options_default().direct_max_params;
        GOTO_IF(ctx, a.m->lsize > lim, INFL_E_UNSUPPORTED,
                "self-influence by if (--solver direct) factorises the Hessian: %zu parameters is more than its "
                "limit of %zu; use --method ekfac",
                a.m->lsize, lim);
        // full gradients of a sub-batch within 64 MiB: the sub-batches (and the stager's
        // and the model's buffers, made next) hold at most that many rows
        int64_t cap = (int64_t)(64.0 * 1048576.0 / (4.0 * (double)a.m->lsize));
        a.B = cap < 1 ? 1 : cap < 1024 ? (int)cap : 1024;
    }
    CHECK(attrib_alloc_scoring(ctx, &a, 0, 0));
    if (o->method == INFL_METHOD_REPRESENTER) CHECK(attrib_repr_fit(ctx, &a));
    acc = infl_malloc(ctx, (size_t)a.B * sizeof(double), "self-influence");
    GOTO_NOMEM_IF(!acc);
    if (influence) {
        size_t P = a.m->lsize;
        char what[128], hint[128];
        snprintf(hint, sizeof hint, "--shard ROWS below %d makes the sub-batches smaller", a.B);
        snprintf(what, sizeof what, "per-example gradients (%d train rows x %zu parameters)", a.B, P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&G, (size_t)a.B * P * sizeof(float), what, hint));
        snprintf(what, sizeof what, "preconditioned gradients (%d train rows x %zu parameters)", a.B, P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&X, (size_t)a.B * P * sizeof(float), what, hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&tmp, (size_t)a.B * score_grad_tmp_cols(a.m) * sizeof(float),
                                 "layer gradients", hint));
        CHECK(infl_be_alloc_f(ctx, &d, (size_t)a.B, "row dots"));
    }
    if (a.pre) {
        int maxo = infl_model_max_out(a.m), maxi = infl_model_max_ni(a.m);
        size_t rows = (size_t)attrib_max_rows(&a);
        CHECK(infl_be_alloc_f(ctx, &DQ, rows * maxo, "rotated factors"));
        CHECK(infl_be_alloc_f(ctx, &AQ, rows * maxi, "rotated factors"));
        CHECK(infl_be_alloc_f(ctx, &T, rows * maxi, "rotated factors"));
        CHECK(infl_be_alloc_f(ctx, &d, (size_t)a.B, "row dots"));
    }
    double t0 = infl_now();
    const int64_t begin = store_split_info(a.train)->begin;
    int64_t S = attrib_shard_rows(&a);
    self_stream ss = {.a = &a, .r = r, .acc = acc, .G = G, .X = X, .tmp = tmp, .d = d, .DQ = DQ, .AQ = AQ, .T = T,
                      .op = &op};
    infl_stream_fns fns = {.batch = self_batch, .shard = NULL, .user = &ss, .ranks = INFL_STREAM_ROWS};
    CHECK(infl_stage_stream(ctx, &a.st, a.train, S, a.docs ? a.ctxT : 0, 1, &fns, "self", infl_method_name(o->method),
                            NULL));
    CHECK(self_gather(ctx, r->self, a.N));
    CHECK(sort_order(ctx, r->self, a.N, r->order));
    r->has_flipped = store_split_info(a.train)->has_flipped;
    if (r->has_flipped) CHECK(flipped_recall(ctx, &a, r));
    r->seconds = infl_now() - t0;
    if (a.repr) {
        repr_finish_train(a.repr);
        r->representer = a.repr->fit;
    }
    // indices reported within the split, like rank's
    for (int64_t i = 0; i < a.N; i++) r->order[i] += begin;
    CHECK(infl_comm_sync(ctx, INFL_OK));  // rank 0 writes once every process has done its part
    if (o->output && infl_comm_root(ctx)) {
        CHECK(store_scores_create(ctx, o->output, o->force, 1, 0, a.N, 0, &scw));
        CHECK(attrib_write_attrs(ctx, scw, o, &a));
        CHECK(store_scores_write_self(ctx, scw, r->self, r->order, a.N));
        if (a.repr) CHECK(attrib_write_repr_fit(ctx, scw, &r->representer));
        rc = store_scores_commit(ctx, scw);
        scw = NULL;
        CHECK(rc);
    }
    *out = r;
    r = NULL;
done:
    store_scores_abort(scw);
    infl_hvp_free(ctx, op);
    infl_be_free(ctx, G);
    infl_be_free(ctx, X);
    infl_be_free(ctx, tmp);
    infl_be_free(ctx, d);
    infl_be_free(ctx, DQ);
    infl_be_free(ctx, AQ);
    infl_be_free(ctx, T);
    free(acc);
    infl_self_result_free(r);
    attrib_close(&a);
    return rc;
}
