/*
 * shares.c — token-wise attribution (DESIGN.md "Language-model queries"): how each
 * reported document's score splits over its token positions. A document's gradient
 * in a layer is Σ_t δ_t ã_tᵀ, so its score against a query is a sum of one term per
 * token position t: the ghost form's Σ_s (δ_q,s·δ_t)(ã_q,s·ã_t) over the query's rows
 * s, or the contraction δ_tᵀ V_q ã_t with the preconditioned query V_q (low rank with
 * --query-rank), summed over layers (and checkpoints, lr-weighted, for TracIn).
 * rank.c's row form (attrib_score_block with rows_only) computes exactly these terms
 * for a sub-batch; here the reported documents are scored again that way
 * (attrib_score_list) and the terms kept per position. They add up to the document's
 * score (to float round-off where rank scored a layer by the documents' gradients).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"

typedef struct {
    int64_t row;     // within the split's selected range
    int q, side, j;  // the result entry: query, 0 top / 1 bottom, rank
} want;

static int by_row(const void *x, const void *y) {
    const want *a = x, *b = y;
    return (a->row > b->row) - (a->row < b->row);
}

typedef struct {
    attrib *a;
    infl_rank_result *res;
    const want *w;  // sorted by row
    size_t nw, next;
} share_state;

static infl_status keep_shares(infl_ctx *ctx, void *user, const attrib_listed *L) {
    share_state *st = user;
    attrib *a = st->a;
    int k = st->res->k, T = a->ctxT, eot = a->m->spec.gpt.eot;
    for (int d = 0; d < L->b; d++)
        for (; st->next < st->nw && st->w[st->next].row == L->rows[d]; st->next++) {
            const want *w = &st->w[st->next];
            int n = L->row_off[d + 1] - L->row_off[d];
            infl_token_shares *sh = &(w->side ? st->res->bottom_shares : st->res->top_shares)[(size_t)w->q * k + w->j];
            sh->n = n;
            sh->token = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
            sh->share = malloc((size_t)(n ? n : 1) * sizeof(float));
            RETURN_IF(ctx, !sh->token || !sh->share, INFL_E_NOMEM, "out of memory for token shares");
            double scale = 1.0;
            if (a->o->method == INFL_METHOD_GRADCOS)
                scale = a->qinv[w->q] * (L->zn[d] > 0 ? 1.0 / sqrt(L->zn[d]) : 0.0);
            for (int t = 0; t < n; t++) {
                sh->share[t] = (float)(L->S[(size_t)w->q * L->rz + L->row_off[d] + t] * scale);
                sh->token[t] = t < L->len[d] ? L->tok[(size_t)d * T + t] : eot;
            }
        }
    return INFL_OK;
}

infl_status attrib_token_shares(infl_ctx *ctx, attrib *a, infl_rank_result *res) {
    int M = a->M, k = res->k;
    const int64_t begin = store_split_info(a->train)->begin;
    size_t nw = (size_t)M * k * 2;
    infl_status rc = INFL_OK;
    int64_t *rows = NULL;
    want *w = NULL;
    res->top_shares = calloc((size_t)M * (k > 0 ? k : 1), sizeof(infl_token_shares));
    res->bottom_shares = calloc((size_t)M * (k > 0 ? k : 1), sizeof(infl_token_shares));
    w = infl_malloc(ctx, (nw ? nw : 1) * sizeof(want), "token shares");
    rows = infl_malloc(ctx, (nw ? nw : 1) * sizeof(int64_t), "token shares");
    GOTO_NOMEM_IF(!res->top_shares || !res->bottom_shares || !w || !rows);
    for (int q = 0; q < M; q++)
        for (int j = 0; j < k; j++) {
            w[((size_t)q * k + j) * 2] = (want){res->top_index[(size_t)q * k + j] - begin, q, 0, j};
            w[((size_t)q * k + j) * 2 + 1] = (want){res->bottom_index[(size_t)q * k + j] - begin, q, 1, j};
        }
    qsort(w, nw, sizeof(want), by_row);
    int64_t n = 0;
    for (size_t i = 0; i < nw; i++)
        if (n == 0 || w[i].row != rows[n - 1]) rows[n++] = w[i].row;
    share_state st = {.a = a, .res = res, .w = w, .nw = nw};
    CHECK(attrib_score_list(ctx, a, rows, n, 1, keep_shares, &st));
done:
    free(w);
    free(rows);
    return rc;
}
