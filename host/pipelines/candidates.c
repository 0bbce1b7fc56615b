/*
 * candidates.c — scoring a list of training examples rather than the whole split
 * (attrib.h): the listed documents (or rows) are read, gathered into sub-batches and
 * scored as rank.c scores a streamed sub-batch. It serves the search-space
 * reductions: `--prefilter bm25:K` (Grosse et al. 2023: each query against its K most
 * similar documents by BM25 over tokens), `--prefilter knn:K` (FastIF, Guo et al.
 * 2020: each query against its K nearest training rows by exact k-NN in the inputs or
 * the penultimate activations) and `--rerank K` (every document at --query-rank r
 * first, then the best K of each side again at full rank) — one candidate path for all
 * three — and the token shares (shares.c).
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"
#include "estimators/bm25.h"
#include "estimators/knn.h"

// A sub-batch of b listed examples, rows[0..b) within the split's range, read into the
// model's view bt: a language model's documents (host tokens), or rows uploaded into the
// stage's first buffers.
static infl_status read_listed(infl_ctx *ctx, attrib *a, const int64_t *rows, int b, int32_t *tok, int32_t *len,
                               float *hx, int32_t *hy, float *hyf, infl_batch *bt) {
    const int64_t begin = store_split_info(a->train)->begin;
    int T = a->ctxT;
    if (a->tokens) {
        for (int i = 0; i < b; i++)
            FORWARD_IF_ERROR(store_split_read_docs(ctx, a->train, rows[i], 1, T, 0, tok + (size_t)i * T, len + i, NULL));
        *bt = (infl_batch){.b = b, .index0 = begin + rows[0], .tok = tok, .T = T, .len = len};
        return INFL_OK;
    }
    FORWARD_IF_ERROR(attrib_read_rows(ctx, a, a->train, rows, b, hx, hy, hyf));
    const infl_backend *be = ctx->be;
    FORWARD_IF_ERROR(be->upload(ctx, a->st.x[0], hx, (size_t)b * a->D * sizeof(float)));
    if (hy) FORWARD_IF_ERROR(be->upload(ctx, a->st.y[0], hy, (size_t)b * sizeof(int32_t)));
    if (hyf) FORWARD_IF_ERROR(be->upload(ctx, a->st.yf[0], hyf, (size_t)b * a->Kt * sizeof(float)));
    *bt = (infl_batch){.b = b, .index0 = begin + rows[0], .x = a->st.x[0], .y = hy ? a->st.y[0] : NULL,
                       .yf = hyf ? a->st.yf[0] : NULL};
    return INFL_OK;
}

infl_status attrib_score_list(infl_ctx *ctx, attrib *a, const int64_t *rows, int64_t n, int rows_only,
                              attrib_list_fn fn, void *user) {
    const infl_backend *be = ctx->be;
    int M = a->M, T = a->ctxT, B = a->B;
    infl_status rc = INFL_OK;
    int32_t *tok = NULL, *len = NULL, *hy = NULL;
    float *hx = NULL, *hyf = NULL, *hS = NULL, *hT = NULL;
    double *zn = NULL;
    if (a->tokens) {
        tok = infl_malloc(ctx, (size_t)B * T * sizeof(int32_t), "listed documents");
        len = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "listed documents");
        GOTO_NOMEM_IF(!tok || !len);
    } else {
        hx = infl_malloc(ctx, (size_t)B * a->D * sizeof(float), "listed rows");
        GOTO_NOMEM_IF(!hx);
        if (a->Kt) hyf = infl_malloc(ctx, (size_t)B * a->Kt * sizeof(float), "listed targets");
        else hy = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "listed labels");
        GOTO_NOMEM_IF(!hyf && !hy);
    }
    hS = infl_malloc(ctx, (size_t)M * attrib_max_rows(a) * sizeof(float), "listed scores");
    hT = infl_malloc(ctx, (size_t)M * attrib_max_rows(a) * sizeof(float), "listed scores");
    zn = infl_malloc(ctx, (size_t)B * sizeof(double), "listed norms");
    GOTO_NOMEM_IF(!hS || !hT || !zn);
    for (int64_t i0 = 0; i0 < n; i0 += B) {
        int b = n - i0 < B ? (int)(n - i0) : B;
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        infl_batch bt;
        CHECK(read_listed(ctx, a, rows + i0, b, tok, len, hx, hy, hyf, &bt));
        CHECK(be->fill(ctx, a->Sd, 0.0f, (size_t)M * b));
        for (int c = 0; c < a->nck; c++) {
            CHECK(attrib_factors(ctx, a, c, &bt, a->work));
            if (c == 0 && a->tokens) CHECK(be->fill(ctx, a->R, 0.0f, (size_t)M * a->work->rows));
            if (a->o->method == INFL_METHOD_GRADCOS) CHECK(attrib_sqnorms(ctx, a, a->work, b, 1.0, zn, 0));
            CHECK(attrib_score_block(ctx, a, c, b, rows_only));
        }
        // (M, b) document scores or (M, rz) token-row terms, whatever the backend's layout
        int rz = a->work->rows, cols = rows_only ? rz : b;
        if (!rows_only) CHECK(attrib_sum_rows(ctx, a, b));
        CHECK(be->download(ctx, a->lowrank ? hT : hS, rows_only ? a->R : a->Sd, (size_t)M * cols * sizeof(float)));
        if (a->lowrank)
            for (int q = 0; q < M; q++)
                for (int j = 0; j < cols; j++) hS[(size_t)q * cols + j] = hT[(size_t)j * M + q];
        if (a->o->method == INFL_METHOD_GRADCOS && !rows_only)
            for (int q = 0; q < M; q++)
                for (int j = 0; j < b; j++)
                    hS[(size_t)q * b + j] = (float)(hS[(size_t)q * b + j] * a->qinv[q] * (zn[j] > 0 ? 1.0 / sqrt(zn[j]) : 0.0));
        attrib_listed L = {.b = b, .rows = rows + i0, .tok = tok, .len = len, .row_off = a->work->row_off, .rz = rz,
                           .S = hS, .zn = zn};
        CHECK(fn(ctx, user, &L));
        infl_progress(ctx, rows_only ? "token shares" : "rescoring", (uint64_t)(i0 + b), (uint64_t)n, NULL);
    }
done:
    free(tok);
    free(len);
    free(hx);
    free(hy);
    free(hyf);
    free(hS);
    free(hT);
    free(zn);
    return rc;
}

// ---- the candidates of each query ----

typedef struct {
    float s;
    int64_t i;
} scored;

static int by_row(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}
// Best first (top-k) or worst first (bottom-k); equal scores by the lower index on both
// sides, as the streamed top-k orders them (sched/topk.c).
static int by_score_desc(const void *x, const void *y) {
    const scored *a = x, *b = y;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}
static int by_score_asc(const void *x, const void *y) {
    const scored *a = x, *b = y;
    if (a->s != b->s) return a->s < b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

typedef struct {
    int M, K;             // queries, candidates per query
    const int64_t *cand;  // (M, K) rows, or -1 for none
    const int64_t *urow;  // (nu) the distinct candidates, ascending
    int64_t nu;
    float *S;             // (M, nu) their scores (NAN: not a candidate of the query)
} cand_state;

static infl_status keep_scores(infl_ctx *ctx, void *user, const attrib_listed *L) {
    (void)ctx;
    cand_state *cs = user;
    int64_t u0 = L->rows - cs->urow;
    for (int q = 0; q < cs->M; q++)
        for (int j = 0; j < L->b; j++) cs->S[(size_t)q * cs->nu + u0 + j] = L->S[(size_t)q * L->b + j];
    return INFL_OK;
}

infl_status attrib_rank_candidates(infl_ctx *ctx, attrib *a, const int64_t *cand, int K, infl_rank_result *res) {
    int M = a->M, k = res->k;
    const int64_t begin = store_split_info(a->train)->begin;
    infl_status rc = INFL_OK;
    int64_t *u = infl_malloc(ctx, (size_t)M * K * sizeof(int64_t), "candidates");
    float *S = NULL;
    scored *t = infl_malloc(ctx, (size_t)K * sizeof(scored), "candidates");
    GOTO_NOMEM_IF(!u || !t);
    int64_t nu = 0;
    for (size_t i = 0; i < (size_t)M * K; i++)
        if (cand[i] >= 0) u[nu++] = cand[i];
    qsort(u, (size_t)nu, sizeof(int64_t), by_row);
    int64_t w = 0;
    for (int64_t i = 0; i < nu; i++)
        if (w == 0 || u[i] != u[w - 1]) u[w++] = u[i];
    nu = w;
    res->candidates = nu;
    S = infl_malloc(ctx, (size_t)M * (nu ? nu : 1) * sizeof(float), "candidate scores");
    GOTO_NOMEM_IF(!S);
    cand_state cs = {.M = M, .K = K, .cand = cand, .urow = u, .nu = nu, .S = S};
    CHECK(attrib_score_list(ctx, a, u, nu, 0, keep_scores, &cs));
    for (int q = 0; q < M; q++) {
        int n = 0;
        for (int j = 0; j < K; j++) {
            int64_t r = cand[(size_t)q * K + j];
            if (r < 0) continue;
            int64_t at = (int64_t *)bsearch(&r, u, (size_t)nu, sizeof(int64_t), by_row) - u;
            t[n++] = (scored){S[(size_t)q * nu + at], r};
        }
        GOTO_IF(ctx, n < k, INFL_E_ARG, "query %d has %d candidates; --top %d asks for more", q, n, k);
        qsort(t, (size_t)n, sizeof(scored), by_score_desc);
        for (int j = 0; j < k; j++) {
            res->top_index[(size_t)q * k + j] = begin + t[j].i;
            res->top_score[(size_t)q * k + j] = t[j].s;
        }
        qsort(t, (size_t)n, sizeof(scored), by_score_asc);
        for (int j = 0; j < k; j++) {
            res->bottom_index[(size_t)q * k + j] = begin + t[j].i;
            res->bottom_score[(size_t)q * k + j] = t[j].s;
        }
    }
done:
    free(u);
    free(t);
    free(S);
    return rc;
}

infl_status attrib_bm25_candidates(infl_ctx *ctx, attrib *a, int K, int64_t *cand) {
    RETURN_IF(ctx, !a->tokens, INFL_E_ARG, "--prefilter bm25 filters documents; this run's examples are rows");
    RETURN_IF(ctx, K < 1 || K > a->N, INFL_E_ARG, "--prefilter bm25:%d: expected 1 to %" PRId64 " (the documents)",
              K, a->N);
    const int32_t **qt = infl_malloc(ctx, (size_t)a->M * sizeof(int32_t *), "queries");
    int *ql = infl_malloc(ctx, (size_t)a->M * sizeof(int), "queries");
    float *sc = infl_malloc(ctx, (size_t)a->M * K * sizeof(float), "candidates");
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!qt || !ql || !sc);
    for (int q = 0; q < a->M; q++) {
        qt[q] = a->qtok + (size_t)q * a->ctxT;
        ql[q] = a->qlen[q] < a->ctxT ? a->qlen[q] : a->ctxT;  // a text query: prompt and completion
    }
    CHECK(bm25_topk(ctx, cand, sc, a->train, qt, ql, a->M, K, NULL));
done:
    free(qt);
    free(ql);
    free(sc);
    return rc;
}

// ---- FastIF: the K nearest training rows ----

typedef struct {
    attrib *a;
    knn *kn;
    int pen;  // the penultimate activations (else the inputs)
} knn_stream;

// The features of a batch on the backend: its inputs, or the last layer's inputs after a
// forward pass at the last checkpoint used (the seam's A of that layer).
static infl_status knn_features(infl_ctx *ctx, attrib *a, int pen, const infl_batch *bt, infl_model_work *w,
                                const float **F) {
    if (!pen) {
        *F = bt->x;
        return INFL_OK;
    }
    FORWARD_IF_ERROR(infl_model_forward(ctx, a->m, a->Wd[a->nck - 1], bt, w));
    *F = w->A[a->L - 1];
    return INFL_OK;
}

static infl_status knn_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    knn_stream *ks = user;
    const float *F;
    FORWARD_IF_ERROR(knn_features(ctx, ks->a, ks->pen, bt, ks->a->work, &F));
    return knn_push(ctx, ks->kn, F, bt->b, sh->row0 + r0);
}

infl_status attrib_knn_candidates(infl_ctx *ctx, attrib *a, int K, int64_t *cand) {
    const infl_rank_options *o = a->o;
    RETURN_IF(ctx, a->tokens, INFL_E_ARG,
              "--prefilter knn finds the nearest rows of an mlp run's features; for a gpt's documents use bm25:K");
    RETURN_IF(ctx, K < 1 || K > a->N, INFL_E_ARG,
              "--prefilter knn:%d: expected 1 to %" PRId64 " (the training examples)", K, a->N);
    RETURN_IF(ctx, (unsigned)o->knn_features > 1, INFL_E_ARG, "--knn-features: expected inputs or penultimate");
    const infl_backend *be = ctx->be;
    int M = a->M, pen = o->knn_features == 1;
    int d = pen ? a->m->layer[a->L - 1].d_in : (int)a->D;
    infl_status rc = INFL_OK;
    float *hx = NULL, *qX = NULL;
    infl_model_work *qw = NULL;
    knn *kn = NULL;
    // the queries' features
    hx = infl_malloc(ctx, (size_t)M * a->D * sizeof(float), "the queries");
    GOTO_NOMEM_IF(!hx);
    CHECK(attrib_read_queries(ctx, a, hx, NULL, NULL));
    CHECK(infl_be_alloc_f(ctx, &qX, (size_t)M * a->D, "the queries"));
    CHECK(be->upload(ctx, qX, hx, (size_t)M * a->D * sizeof(float)));
    const float *QF = qX;
    if (pen) {
        CHECK(infl_model_work_create(ctx, a->m, M, &qw));
        infl_batch qb = {.b = M, .x = qX};
        CHECK(knn_features(ctx, a, 1, &qb, qw, &QF));
    }
    CHECK(knn_create(ctx, &kn, QF, M, d, K, a->B));
    // the train split streamed once past them
    knn_stream ks = {.a = a, .kn = kn, .pen = pen};
    infl_stream_fns fns = {.batch = knn_batch, .user = &ks};
    char info[64];
    snprintf(info, sizeof info, "k = %d, %s", K, pen ? "penultimate" : "inputs");
    CHECK(infl_stage_stream(ctx, &a->st, a->train, attrib_shard_rows(a), 0, 0, &fns, "knn", info, NULL));
    knn_result(kn, cand, NULL, NULL);
done:
    knn_free(ctx, kn);
    infl_model_work_free(ctx, a->m, qw);
    infl_be_free(ctx, qX);
    free(hx);
    return rc;
}

infl_status attrib_prefilter_candidates(infl_ctx *ctx, attrib *a, int K, int64_t *cand) {
    if (a->o->prefilter_knn) return attrib_knn_candidates(ctx, a, K, cand);
    return attrib_bm25_candidates(ctx, a, K, cand);
}
