/*
 * knn.c — exact k-nearest neighbours by one GEMM per block (knn.h): the block's
 * s = 2 Q Xᵀ − |x|² on the backend, downloaded and merged into a running top-K.
 */
#include "knn.h"

#include <math.h>
#include <stdlib.h>

#include "backend.h"
#include "sched/topk.h"

struct knn {
    int nq, d, K, maxb;
    float *Q;      // (nq, d) backend: the queries
    float *S;      // (nq, maxb) backend: a block's s
    float *xn;     // (maxb) backend: −|x_j|²
    float *hS;     // (nq, maxb) host
    double *qn;    // (nq) host: |q|²
    infl_topk *tk;
};

void knn_free(infl_ctx *ctx, knn *kn) {
    if (!kn) return;
    infl_be_free(ctx, kn->Q);
    infl_be_free(ctx, kn->S);
    infl_be_free(ctx, kn->xn);
    free(kn->hS);
    free(kn->qn);
    infl_topk_free(kn->tk);
    free(kn);
}

infl_status knn_create(infl_ctx *ctx, knn **out, const float *Q, int nq, int d, int K, int maxb) {
    *out = NULL;
    RETURN_IF(ctx, nq < 1 || d < 1 || K < 1 || maxb < 1, INFL_E_ARG,
              "knn: %d queries of %d features, K = %d, blocks of %d rows: expected each >= 1", nq, d, K, maxb);
    const infl_backend *be = ctx->be;
    knn *kn = infl_calloc(ctx, 1, sizeof *kn, "the k-NN search");
    if (!kn) return INFL_E_NOMEM;
    *kn = (knn){.nq = nq, .d = d, .K = K, .maxb = maxb};
    infl_status rc = INFL_OK;
    float *hq = NULL;
    CHECK(infl_be_alloc_f(ctx, &kn->Q, (size_t)nq * d, "k-NN queries"));
    CHECK(infl_be_alloc_hint(ctx, (void **)&kn->S, (size_t)nq * maxb * sizeof(float), "a k-NN distance block",
                             "fewer queries"));
    CHECK(infl_be_alloc_f(ctx, &kn->xn, (size_t)maxb, "k-NN row norms"));
    CHECK(be->copy(ctx, kn->Q, Q, (size_t)nq * d * sizeof(float)));
    kn->hS = infl_malloc(ctx, (size_t)nq * maxb * sizeof(float), "a k-NN distance block");
    kn->qn = infl_malloc(ctx, (size_t)nq * sizeof(double), "k-NN query norms");
    hq = infl_malloc(ctx, (size_t)nq * sizeof(float), "k-NN query norms");
    GOTO_NOMEM_IF(!kn->hS || !kn->qn || !hq);
    // |q|² (for the distances reported; the ranking does not need it)
    for (int q0 = 0; q0 < nq; q0 += maxb) {
        int n = nq - q0 < maxb ? nq - q0 : maxb;
        CHECK(be->row_dot(ctx, kn->xn, kn->Q + (size_t)q0 * d, kn->Q + (size_t)q0 * d, n, d, 1.0f, 0.0f));
        CHECK(be->download(ctx, hq + q0, kn->xn, (size_t)n * sizeof(float)));
    }
    for (int q = 0; q < nq; q++) kn->qn[q] = hq[q];
    CHECK(infl_topk_create(ctx, nq, K, &kn->tk));
    *out = kn;
    kn = NULL;
done:
    free(hq);
    knn_free(ctx, kn);
    return rc;
}

infl_status knn_push(infl_ctx *ctx, knn *kn, const float *X, int b, int64_t index0) {
    RETURN_IF(ctx, b < 1 || b > kn->maxb, INFL_E_ARG, "knn: a block of %d rows; expected 1 to %d", b, kn->maxb);
    const infl_backend *be = ctx->be;
    int nq = kn->nq, d = kn->d;
    // S (nq, b) = 2 Q Xᵀ − |x_j|² per column
    FORWARD_IF_ERROR(be->row_dot(ctx, kn->xn, X, X, b, d, -1.0f, 0.0f));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, nq, b, d, 2.0f, kn->Q, d, X, d, 0.0f, kn->S, b));
    FORWARD_IF_ERROR(be->add_row(ctx, kn->S, kn->xn, nq, b));
    FORWARD_IF_ERROR(be->download(ctx, kn->hS, kn->S, (size_t)nq * b * sizeof(float)));
    infl_status rc = infl_topk_push(ctx, kn->tk, kn->hS, nq, b, b, index0);
    if (rc < 0) infl_errprefix(ctx, "k-NN distances (are the features finite?)");
    return rc;
}

void knn_result(const knn *kn, int64_t *idx, float *dist, int *count) {
    int cnt = 0;
    for (int q = 0; q < kn->nq; q++) {
        int64_t *iq = idx + (size_t)q * kn->K;
        float *dq = dist ? dist + (size_t)q * kn->K : NULL;
        infl_topk_get(kn->tk, q, iq, dq, NULL, NULL, &cnt);
        for (int j = 0; j < kn->K; j++) {
            if (j >= cnt) {
                iq[j] = -1;
                if (dq) dq[j] = INFINITY;
            } else if (dq) {
                double v = kn->qn[q] - (double)dq[j];
                dq[j] = (float)(v > 0 ? v : 0);
            }
        }
    }
    if (count) *count = cnt;
}
