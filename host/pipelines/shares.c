/*
 * shares.c — token-wise attribution (DESIGN.md "Language-model queries"): how each
 * reported document's score splits over its token positions. A document's gradient
 * in a layer is Σ_t δ_t ã_tᵀ, so its score against a query is a sum of one term per
 * token position t: the ghost form's Σ_s (δ_q,s·δ_t)(ã_q,s·ã_t) over the query's rows
 * s, or the contraction δ_tᵀ V_q ã_t with the preconditioned query V_q (low rank with
 * --query-rank), summed over layers (and checkpoints, lr-weighted, for TracIn).
 * rank.c's row form (attrib_score_block with rows_only) computes exactly these terms
 * for a sub-batch; here they are computed again for the top and bottom documents
 * only, read one by one, and kept per position. The terms add up to the document's
 * score (to float round-off when rank scored the layer by the documents' gradients).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"

typedef struct {
    int64_t row;  // within the split's selected range
    int q, side, j;  // the result entry: query, 0 top / 1 bottom, rank
} want;

static int by_row(const void *x, const void *y) {
    const want *a = x, *b = y;
    return (a->row > b->row) - (a->row < b->row);
}

infl_status attrib_token_shares(infl_ctx *ctx, attrib *a, infl_rank_result *res) {
    const infl_backend *be = ctx->be;
    int M = a->M, k = res->k, T = a->ctxT, eot = a->m->spec.gpt.eot;
    const int64_t begin = store_split_info(a->train)->begin;
    size_t nw = (size_t)M * k * 2;
    infl_status rc = INFL_OK;
    want *w = NULL;
    int32_t *tok = NULL, *len = NULL;
    int64_t *rowof = NULL;
    float *hR = NULL;
    double *zn = NULL;
    res->top_shares = calloc((size_t)M * (k > 0 ? k : 1), sizeof(infl_token_shares));
    res->bottom_shares = calloc((size_t)M * (k > 0 ? k : 1), sizeof(infl_token_shares));
    w = infl_malloc(ctx, (nw ? nw : 1) * sizeof(want), "token shares");
    tok = infl_malloc(ctx, (size_t)a->B * T * sizeof(int32_t), "token shares");
    len = infl_malloc(ctx, (size_t)a->B * sizeof(int32_t), "token shares");
    rowof = infl_malloc(ctx, (size_t)a->B * sizeof(int64_t), "token shares");
    hR = infl_malloc(ctx, (size_t)M * attrib_max_rows(a) * sizeof(float), "token shares");
    zn = infl_malloc(ctx, (size_t)a->B * sizeof(double), "token shares");
    GOTO_NOMEM_IF(!res->top_shares || !res->bottom_shares || !w || !tok || !len || !rowof || !hR || !zn);
    for (int q = 0; q < M; q++)
        for (int j = 0; j < k; j++) {
            w[((size_t)q * k + j) * 2] = (want){res->top_index[(size_t)q * k + j] - begin, q, 0, j};
            w[((size_t)q * k + j) * 2 + 1] = (want){res->bottom_index[(size_t)q * k + j] - begin, q, 1, j};
        }
    qsort(w, nw, sizeof(want), by_row);
    // the distinct documents, a sub-batch of up to B at a time
    size_t i = 0;
    while (i < nw) {
        int b = 0;
        size_t i1 = i;
        while (i1 < nw && (b < a->B || w[i1].row == rowof[b - 1])) {
            if (b == 0 || w[i1].row != rowof[b - 1]) {
                rowof[b] = w[i1].row;
                CHECK(store_split_read_docs(ctx, a->train, w[i1].row, 1, T, 0, tok + (size_t)b * T, len + b, NULL));
                b++;
            }
            i1++;
        }
        infl_batch bt = {.b = b, .index0 = begin + rowof[0], .tok = tok, .T = T, .len = len};
        for (int c = 0; c < a->nck; c++) {
            CHECK(attrib_factors(ctx, a, c, &bt, a->work));
            if (c == 0) CHECK(be->fill(ctx, a->R, 0.0f, (size_t)M * a->work->rows));
            if (a->o->method == INFL_METHOD_GRADCOS) CHECK(attrib_sqnorms(ctx, a, a->work, b, 1.0, zn, 0));
            CHECK(attrib_score_block(ctx, a, c, b, 1));
        }
        int rz = a->work->rows;
        const int *off = a->work->row_off;
        CHECK(be->download(ctx, hR, a->R, (size_t)M * rz * sizeof(float)));
        for (int d = 0; i < i1; i++) {
            while (rowof[d] != w[i].row) d++;
            int q = w[i].q, n = off[d + 1] - off[d];
            infl_token_shares *sh = &(w[i].side ? res->bottom_shares : res->top_shares)[(size_t)q * k + w[i].j];
            sh->n = n;
            sh->token = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
            sh->share = malloc((size_t)(n ? n : 1) * sizeof(float));
            GOTO_IF(ctx, !sh->token || !sh->share, INFL_E_NOMEM, "out of memory for token shares");
            double scale = 1.0;
            if (a->o->method == INFL_METHOD_GRADCOS) scale = a->qinv[q] * (zn[d] > 0 ? 1.0 / sqrt(zn[d]) : 0.0);
            for (int t = 0; t < n; t++) {
                int r = off[d] + t;
                float v = a->lowrank ? hR[(size_t)r * M + q] : hR[(size_t)q * rz + r];
                sh->share[t] = (float)(v * scale);
                sh->token[t] = t < len[d] ? tok[(size_t)d * T + t] : eot;
            }
        }
    }
done:
    free(w);
    free(tok);
    free(len);
    free(rowof);
    free(hR);
    free(zn);
    return rc;
}
