/*
 * representer.c — representer points (representer.h): the float64 fine-tune of a model's
 * logits layer on the features of the training rows (models/convex.c's Newton, fed by a
 * row reader that runs the seam's forward), and per train sub-batch the output gradients
 * at the fine-tuned layer that make the α_i, with the statistics of how close the
 * fine-tuned logits stay to the run's.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "models/train.h"
#include "representer.h"

infl_status repr_check(infl_ctx *ctx, const infl_model *m, const char *run, double lambda, double *lambda_out) {
    RETURN_IF(ctx, m->logits_layer < 0 || m->tokens, INFL_E_UNSUPPORTED,
              "%s: representer points fine-tune the model's last layer, the one whose output is the logits the loss "
              "reads; the %s model has no such layer (a gpt's output head is tied to its token embedding): use an "
              "mlp run",
              run, infl_model_kind_of(m));
    const infl_linear *ly = &m->layer[m->logits_layer];
    RETURN_IF(ctx, !ly->bias, INFL_E_UNSUPPORTED,
              "%s: representer points fold the last layer's bias into the features ([f; 1]); layer %s has none", run,
              ly->name);
    RETURN_IF(ctx, m->out_loss == INFL_LOSS_MSE, INFL_E_UNSUPPORTED,
              "%s: representer points score a class's logit; this model's loss is mse (real targets, no classes)", run);
    RETURN_IF(ctx, lambda < 0 || !isfinite(lambda), INFL_E_ARG,
              "--representer-lambda %g: expected λ > 0 (the weight of |W|² in the fine-tune's objective)", lambda);
    if (lambda == 0) {
        RETURN_IF(ctx, !(m->wd > 0), INFL_E_ARG,
                  "%s: the run has no weight decay, which the representer fine-tune takes λ from by default (λ = "
                  "wd / 2); give --representer-lambda L > 0",
                  run);
        lambda = m->wd / 2;
    }
    *lambda_out = lambda;
    return INFL_OK;
}

// ---- the features of the rows, through the seam ----

typedef struct {
    const repr_layer *r;
    infl_split *split;
    infl_model_work *w;
    float *hx;     // (B, D) host: raw rows
    float *dx;     // (B, D) backend
    int32_t *dy;   // (B) backend
    int64_t D;
} repr_reader;

// The convex optimiser's row reader: rows [row0, row0 + n) of the split through the model
// at the checkpoint; x (n, d) gets the logits layer's inputs, y (n) the labels.
static infl_status read_features(infl_ctx *ctx, void *user, int64_t row0, int64_t n, float *x, int32_t *y,
                                 float *yf) {
    (void)yf;  // classes only (repr_check)
    repr_reader *rd = user;
    const repr_layer *r = rd->r;
    const infl_backend *be = ctx->be;
    const int64_t begin = store_split_info(rd->split)->begin;
    for (int64_t i0 = 0; i0 < n; i0 += r->B) {
        RETURN_IF_CANCELLED(ctx);
        int b = (int)(n - i0 < r->B ? n - i0 : r->B);
        FORWARD_IF_ERROR(store_split_read(ctx, rd->split, row0 + i0, b, rd->hx, y + i0, NULL));
        FORWARD_IF_ERROR(infl_model_check_labels(ctx, r->m, rd->split, y + i0, row0 + i0, b));
        FORWARD_IF_ERROR(be->upload(ctx, rd->dx, rd->hx, (size_t)b * rd->D * sizeof(float)));
        FORWARD_IF_ERROR(be->upload(ctx, rd->dy, y + i0, (size_t)b * sizeof(int32_t)));
        infl_batch bt = {.b = b, .index0 = begin + row0 + i0, .x = rd->dx, .y = rd->dy};
        FORWARD_IF_ERROR(infl_model_factors(ctx, r->m, r->params, &bt, rd->w));
        FORWARD_IF_ERROR(be->download(ctx, x + i0 * r->d, rd->w->A[r->l], (size_t)b * r->d * sizeof(float)));
    }
    return INFL_OK;
}

// ---- the fine-tune ----

void repr_free(infl_ctx *ctx, repr_layer *r) {
    free(r->W);
    free(r->W0);
    infl_be_free(ctx, r->Wft);
    infl_be_free(ctx, r->Z);
    infl_be_free(ctx, r->Z0);
    infl_be_free(ctx, r->G);
    infl_be_free(ctx, r->ok);
    free(r->hZ);
    free(r->hZ0);
    free(r->hok);
    infl_be_free(ctx, r->rn);
    free(r->hrn);
    memset(r, 0, sizeof *r);
}

infl_status repr_fit(infl_ctx *ctx, repr_layer *r, const infl_model *m, const float *params, infl_split *split,
                     double lambda, int64_t shard_rows, double shard_mb, int B) {
    memset(r, 0, sizeof *r);
    const infl_backend *be = ctx->be;
    const infl_split_info *si = store_split_info(split);
    const infl_linear *ly = &m->layer[m->logits_layer];
    const int d = ly->d_in, K = ly->d_out;
    const size_t np = (size_t)K * d + K;
    *r = (repr_layer){.m = m, .l = m->logits_layer, .d = d, .K = K, .wd = 2.0 * lambda, .n = si->n,
                      .params = params, .B = B};
    r->fit.lambda = lambda;
    r->fit.n = si->n;
    r->fit.query_pearson = r->fit.query_acc_before = r->fit.query_acc_after = NAN;
    repr_reader rd = {.r = r, .split = split, .D = si->d};
    infl_status rc = INFL_OK;
    float *hw = NULL;
    RETURN_IF(ctx, si->n < 1, INFL_E_ARG, "%s: no training rows to fine-tune the last layer on", store_split_ref(split));
    double t0 = infl_now();
    r->W = infl_malloc(ctx, np * sizeof(double), "the fine-tuned layer");
    r->W0 = infl_malloc(ctx, np * sizeof(double), "the run's last layer");
    hw = infl_malloc(ctx, np * sizeof(float), "the last layer");
    rd.hx = infl_malloc(ctx, (size_t)B * rd.D * sizeof(float), "a sub-batch of rows");
    r->hZ = infl_malloc(ctx, (size_t)B * K * sizeof(float), "logits");
    r->hZ0 = infl_malloc(ctx, (size_t)B * K * sizeof(float), "logits");
    r->hok = infl_malloc(ctx, 2 * (size_t)B * sizeof(int32_t), "right predictions");
    r->hrn = infl_malloc(ctx, (size_t)B * sizeof(float), "row norms");
    GOTO_NOMEM_IF(!r->W || !r->W0 || !hw || !rd.hx || !r->hZ || !r->hZ0 || !r->hok || !r->hrn);
    CHECK(infl_be_alloc_f(ctx, &r->rn, (size_t)B, "row norms"));
    CHECK(infl_be_alloc_f(ctx, &rd.dx, (size_t)B * rd.D, "a sub-batch of rows"));
    CHECK(be->alloc(ctx, (size_t)B * sizeof(int32_t), (void **)&rd.dy));
    CHECK(infl_be_alloc_f(ctx, &r->Z, (size_t)B * K, "logits"));
    CHECK(infl_be_alloc_f(ctx, &r->Z0, (size_t)B * K, "logits"));
    CHECK(infl_be_alloc_f(ctx, &r->G, (size_t)B * K, "output gradients"));
    CHECK(be->alloc(ctx, 2 * (size_t)B * sizeof(int32_t), (void **)&r->ok));
    CHECK(infl_be_alloc_f(ctx, &r->Wft, np, "the fine-tuned layer"));
    CHECK(infl_model_work_create(ctx, m, B, &rd.w));

    // the run's layer, where the Newton starts: W (K, d) then b (K), as a one-layer model's
    CHECK(be->download(ctx, hw, params + ly->w_off, (size_t)K * d * sizeof(float)));
    CHECK(be->download(ctx, hw + (size_t)K * d, params + ly->b_off, (size_t)K * sizeof(float)));
    for (size_t i = 0; i < np; i++) r->W0[i] = r->W[i] = hw[i];

    // the features of every row held when they fit in 1 GiB (float and double copies, the
    // logits and their gradients in double); else shards, recomputed at every pass
    infl_mlp_spec cs = {.L = 1, .widths = {d, K}, .loss = m->out_loss, .wd = r->wd};
    double row_bytes = 12.0 * d + 16.0 * K + 16.0;
    int64_t S = shard_rows > 0 ? shard_rows
                : (double)si->n * row_bytes <= 1024.0 * 1048576.0
                    ? si->n
                    : infl_shard_rows(si->n, (int64_t)(row_bytes / 4), 0, shard_mb > 0 ? shard_mb : 64, B);
    // |∇R| / (2λ) bounds the distance of W̃ from Σ_i α_i f̃_iᵀ: stop when it is below 1e-7
    infl_convex_options co = {.tol = fmax(1e-7 * r->wd, 1e-13), .max_iters = 100, .shard_rows = S,
                              .precondition = 1, .read_rows = read_features, .read_user = &rd};
    infl_convex_report rep = {0};
    rc = infl_convex_fit(ctx, split, &cs, NULL, 0, &co, r->W, &rep);
    if (rc == INFL_E_NUMERIC) infl_errprefix(ctx, "the representer fine-tune (λ = %g)", lambda);
    CHECK(rc);
    r->fit.grad_norm = rep.grad_norm;
    r->fit.decomposition_bound = rep.grad_norm / r->wd;
    r->fit.iters = rep.iters;
    r->fit.cg_iters = rep.cg_iters;
    for (size_t i = 0; i < np; i++) hw[i] = (float)r->W[i];
    CHECK(be->upload(ctx, r->Wft, hw, np * sizeof(float)));
    r->fit.seconds = infl_now() - t0;
done:
    free(hw);
    free(rd.hx);
    infl_be_free(ctx, rd.dx);
    infl_be_free(ctx, rd.dy);
    infl_model_work_free(ctx, m, rd.w);
    return rc;
}

// ---- the train rows' output gradients and the statistics ----

infl_status repr_train_block(infl_ctx *ctx, repr_layer *r, const infl_model_work *w, const int32_t *y, int b) {
    const infl_backend *be = ctx->be;
    const infl_linear *ly = &r->m->layer[r->l];
    const int d = r->d, K = r->K;
    const float *A = w->A[r->l];  // (b, d)
    RETURN_IF(ctx, b > r->B, INFL_E_INTERNAL, "representer: a sub-batch of %d rows; the buffers hold %d", b, r->B);
    // Φ (b, K) = A Wᵀ + b at the fine-tuned layer and at the run's
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, b, K, d, 1.0f, A, d, r->Wft, d, 0.0f, r->Z, K));
    FORWARD_IF_ERROR(be->add_row(ctx, r->Z, r->Wft + (size_t)K * d, b, K));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, b, K, d, 1.0f, A, d, r->params + ly->w_off, d, 0.0f, r->Z0, K));
    FORWARD_IF_ERROR(be->add_row(ctx, r->Z0, r->params + ly->b_off, b, K));
    FORWARD_IF_ERROR(be->loss_grad(ctx, r->m->out_loss, r->Z, y, NULL, b, K, NULL, r->G, r->ok));
    FORWARD_IF_ERROR(be->loss_grad(ctx, r->m->out_loss, r->Z0, y, NULL, b, K, NULL, NULL, r->ok + b));
    FORWARD_IF_ERROR(be->download(ctx, r->hZ, r->Z, (size_t)b * K * sizeof(float)));
    FORWARD_IF_ERROR(be->download(ctx, r->hZ0, r->Z0, (size_t)b * K * sizeof(float)));
    FORWARD_IF_ERROR(be->download(ctx, r->hok, r->ok, 2 * (size_t)b * sizeof(int32_t)));
    for (size_t i = 0; i < (size_t)b * K; i++) stats_corr_add(&r->corr, r->hZ0[i], r->hZ[i]);
    for (int i = 0; i < b; i++) {
        r->right1 += r->hok[i] != 0;
        r->right0 += r->hok[b + i] != 0;
    }
    r->rows += b;
    return INFL_OK;
}

infl_status repr_self_block(infl_ctx *ctx, repr_layer *r, const infl_model_work *w, const int32_t *y, int b,
                            double *out) {
    const infl_backend *be = ctx->be;
    const int K = r->K;
    const double scale = repr_alpha_scale(r);
    // G is (b, K) on the backend; hZ is free again after repr_train_block
    FORWARD_IF_ERROR(be->download(ctx, r->hZ, r->G, (size_t)b * K * sizeof(float)));
    FORWARD_IF_ERROR(be->row_dot(ctx, r->rn, w->A[r->l], w->A[r->l], b, r->d, 1.0f, 0.0f));
    FORWARD_IF_ERROR(be->download(ctx, r->hrn, r->rn, (size_t)b * sizeof(float)));
    for (int i = 0; i < b; i++) {
        double alpha = scale * r->hZ[(size_t)i * K + repr_class_col(r, y[i])];
        out[i] = repr_class_sign(r, y[i]) * alpha * ((double)r->hrn[i] + 1.0);
    }
    return INFL_OK;
}

void repr_finish_train(repr_layer *r) {
    r->fit.train_pearson = stats_corr_pearson(&r->corr);
    r->fit.train_acc_before = r->rows ? (double)r->right0 / (double)r->rows : NAN;
    r->fit.train_acc_after = r->rows ? (double)r->right1 / (double)r->rows : NAN;
}

void repr_logits(double *Z, const repr_layer *r, const double *W, const float *f, int M) {
    const int d = r->d, K = r->K;
    for (int q = 0; q < M; q++)
        for (int k = 0; k < K; k++) {
            double z = W[(size_t)K * d + k];
            for (int j = 0; j < d; j++) z += W[(size_t)k * d + j] * (double)f[(size_t)q * d + j];
            Z[(size_t)q * K + k] = z;
        }
}

void repr_loss_grad(double *g, const repr_layer *r, const double *z, int y) {
    if (r->m->out_loss == INFL_LOSS_SIGMOID_CE) {
        g[0] = 1.0 / (1.0 + exp(-z[0])) - y;
        return;
    }
    double m = z[0], s = 0;
    for (int k = 1; k < r->K; k++) m = z[k] > m ? z[k] : m;
    for (int k = 0; k < r->K; k++) s += exp(z[k] - m);
    for (int k = 0; k < r->K; k++) g[k] = exp(z[k] - m) / s - (k == y);
}

int repr_argmax(const repr_layer *r, const double *z) {
    if (r->m->out_loss == INFL_LOSS_SIGMOID_CE) return z[0] > 0;
    int a = 0;
    for (int k = 1; k < r->K; k++)
        if (z[k] > z[a]) a = k;
    return a;
}
