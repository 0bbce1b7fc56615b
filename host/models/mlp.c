/*
 * mlp.c — MLP forward and backward on the backend (see mlp.h for the shapes), and the
 * MLP as an implementation of the model seam (model.h): one row per example, every
 * layer attributed, Hessian-vector products from mlp_hvp.c.
 */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "mlp.h"
#include "model.h"
#include "train.h"

infl_status infl_mlp_work_create(infl_ctx *ctx, const infl_mlp_spec *spec, int maxB, infl_mlp_work **out) {
    RETURN_IF(ctx, maxB < 1, INFL_E_ARG, "batch of %d rows; expected at least 1", maxB);
    infl_mlp_work *w = calloc(1, sizeof *w);
    RETURN_IF(ctx, !w, INFL_E_NOMEM, "out of memory");
    w->spec = *spec;
    w->maxB = maxB;
    infl_status rc = INFL_OK;
    int maxw = 0;
    for (int l = 0; l <= spec->L; l++) maxw = spec->widths[l] > maxw ? spec->widths[l] : maxw;
    for (int l = 0; l < spec->L; l++) {
        size_t n = (size_t)maxB * spec->widths[l + 1];
        CHECK(infl_be_alloc_f(ctx, &w->Z[l], n, "pre-activations"));
        CHECK(infl_be_alloc_f(ctx, &w->D[l], n, "backward deltas"));
        if (l < spec->L - 1) CHECK(infl_be_alloc_f(ctx, &w->A[l], n, "activations"));
    }
    CHECK(infl_be_alloc_f(ctx, &w->dA, (size_t)maxB * maxw, "backward scratch"));
    CHECK(infl_be_alloc_f(ctx, &w->loss, (size_t)maxB, "losses"));
    CHECK(ctx->be->alloc(ctx, (size_t)maxB * sizeof(int32_t), (void **)&w->correct));
    *out = w;
    return INFL_OK;
done:
    infl_mlp_work_free(ctx, w);
    return rc;
}

void infl_mlp_work_free(infl_ctx *ctx, infl_mlp_work *w) {
    if (!w) return;
    for (int l = 0; l < w->spec.L; l++) {
        infl_be_free(ctx, w->Z[l]);
        infl_be_free(ctx, w->A[l]);
        infl_be_free(ctx, w->D[l]);
    }
    infl_be_free(ctx, w->dA);
    infl_be_free(ctx, w->loss);
    infl_be_free(ctx, w->correct);
    free(w);
}

infl_status infl_mlp_forward(infl_ctx *ctx, const float *params, const float *X, int B, infl_mlp_work *w) {
    const infl_mlp_spec *s = &w->spec;
    const infl_backend *be = ctx->be;
    RETURN_IF(ctx, B < 1 || B > w->maxB, INFL_E_ARG, "forward of %d rows; the buffers hold 1 to %d", B, w->maxB);
    w->B = B;
    w->X = X;
    const float *in = X;
    for (int l = 0; l < s->L; l++) {
        int din = s->widths[l], dout = s->widths[l + 1];
        const float *W = params + infl_mlp_woff(s, l);  // (dout, din)
        const float *b = params + infl_mlp_boff(s, l);  // (dout)
        // Z_l (B, dout) = in (B, din) · W_lᵀ + b_l
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, B, dout, din, 1.0f, in, din, W, din, 0.0f, w->Z[l], dout));
        FORWARD_IF_ERROR(be->add_row(ctx, w->Z[l], b, B, dout));
        if (l < s->L - 1) {
            FORWARD_IF_ERROR(be->act_forward(ctx, s->act, w->A[l], w->Z[l], (size_t)B * dout));
            in = w->A[l];
        }
    }
    return INFL_OK;
}

infl_status infl_mlp_loss(infl_ctx *ctx, const int32_t *y, const float *yf, infl_mlp_work *w) {
    const infl_mlp_spec *s = &w->spec;
    return ctx->be->loss_grad(ctx, s->loss, w->Z[s->L - 1], y, yf, w->B, s->widths[s->L], w->loss, NULL,
                              w->correct);
}

infl_status infl_mlp_backward(infl_ctx *ctx, const float *params, const int32_t *y, const float *yf,
                              infl_mlp_work *w, float *grad, float scale) {
    const infl_mlp_spec *s = &w->spec;
    const infl_backend *be = ctx->be;
    int B = w->B, L = s->L;
    // δ_{L-1} (B, d_L) = ∂ℓ_i/∂z_i for each example
    FORWARD_IF_ERROR(
        be->loss_grad(ctx, s->loss, w->Z[L - 1], y, yf, B, s->widths[L], w->loss, w->D[L - 1], w->correct));
    for (int l = L - 1; l >= 0; l--) {
        int din = s->widths[l], dout = s->widths[l + 1];
        const float *Aprev = l == 0 ? w->X : w->A[l - 1];  // (B, din)
        if (grad) {
            // ∇W_l (dout, din) = scale · Δ_lᵀ A_{l-1};  ∇b_l (dout) = scale · Σ_i δ_l,i
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, din, B, scale, w->D[l], dout, Aprev, din, 0.0f,
                                       grad + infl_mlp_woff(s, l), din));
            FORWARD_IF_ERROR(be->col_sum(ctx, grad + infl_mlp_boff(s, l), w->D[l], B, dout, scale, 0.0f));
        }
        if (l > 0) {
            // ∂ℓ/∂A_{l-1} (B, din) = Δ_l (B, dout) · W_l (dout, din); then δ_{l-1} = that ∘ φ'(Z_{l-1})
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, B, din, dout, 1.0f, w->D[l], dout,
                                       params + infl_mlp_woff(s, l), din, 0.0f, w->dA, din));
            FORWARD_IF_ERROR(be->act_backward(ctx, s->act, w->D[l - 1], w->dA, w->Z[l - 1], (size_t)B * din));
        }
    }
    return INFL_OK;
}

void infl_mlp_init(const infl_mlp_spec *s, uint64_t seed, int zero, float *params) {
    size_t np = infl_mlp_nparams(s);
    if (zero) {
        for (size_t i = 0; i < np; i++) params[i] = 0.0f;
        return;
    }
    for (int l = 0; l < s->L; l++) {
        int din = s->widths[l], dout = s->widths[l + 1];
        double bound = s->act == INFL_ACT_TANH ? sqrt(6.0 / (din + dout)) : sqrt(6.0 / din);
        if (l == s->L - 1) bound = sqrt(6.0 / (din + dout));  // the output layer: Glorot
        size_t wo = infl_mlp_woff(s, l), bo = infl_mlp_boff(s, l);
        for (size_t i = 0; i < (size_t)dout * din; i++)
            params[wo + i] = (float)(bound * (2.0 * infl_rng_uniform(seed, INFL_RNG_INIT, wo + i, 0) - 1.0));
        for (int j = 0; j < dout; j++) params[bo + j] = 0.0f;
    }
}

// ---- the model seam (model.h): the MLP is one row per example ----

typedef struct {
    infl_mlp_work *w;
    int32_t *ys;            // (maxB) backend: sampled labels
    float *yfs;             // (maxB, K) backend: sampled real targets (mse)
    float *hlogits;         // (maxB, K) host, for predict
} mlp_seam;

static void mlp_model_free(infl_model *m) { free(m); }

static infl_status mlp_check_data(infl_ctx *ctx, const infl_model *m, const infl_split *split) {
    RETURN_IF(ctx, store_split_info(split)->kind != INFL_SPLIT_ROWS, INFL_E_SHAPE,
              "%s: the mlp model reads feature rows, not token documents (train a gpt on them: --model gpt)",
              store_split_ref(split));
    return infl_check_data_for_model(ctx, split, &m->spec.mlp);
}

static infl_status mlp_check_labels(infl_ctx *ctx, const infl_model *m, const infl_split *split, const int32_t *y,
                                    int64_t row0, int64_t n) {
    return infl_check_labels(ctx, split, &m->spec.mlp, y, row0, n);
}

static void mlp_seam_free(infl_ctx *ctx, infl_model_work *mw) {
    mlp_seam *s = mw->impl;
    if (s) {
        infl_mlp_work_free(ctx, s->w);
        infl_be_free(ctx, s->ys);
        infl_be_free(ctx, s->yfs);
        free(s->hlogits);
        free(s);
    }
}

static infl_status mlp_seam_create(infl_ctx *ctx, const infl_model *m, infl_model_work *mw) {
    const infl_mlp_spec *sp = &m->spec.mlp;
    int L = sp->L, K = sp->widths[L], maxB = mw->maxB;
    mlp_seam *s = infl_calloc(ctx, 1, sizeof *s, "model buffers");
    mw->impl = s;
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!s);
    s->hlogits = infl_malloc(ctx, (size_t)maxB * K * sizeof(float), "logits");
    GOTO_NOMEM_IF(!s->hlogits);
    for (int i = 0; i <= maxB; i++) mw->row_off[i] = i;
    CHECK(infl_mlp_work_create(ctx, sp, maxB, &s->w));
    CHECK(ctx->be->alloc(ctx, (size_t)maxB * sizeof(int32_t), (void **)&s->ys));
    if (sp->loss == INFL_LOSS_MSE) CHECK(infl_be_alloc_f(ctx, &s->yfs, (size_t)maxB * K, "sampled targets"));
    mw->loss = s->w->loss;
done:
    return rc;
}

static infl_status mlp_seam_forward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                                    infl_model_work *mw) {
    mlp_seam *s = mw->impl;
    RETURN_IF(ctx, !bt->x, INFL_E_ARG, "the mlp model needs feature rows (x), not token documents");
    FORWARD_IF_ERROR(infl_mlp_forward(ctx, params, bt->x, bt->b, s->w));
    mw->b = mw->rows = bt->b;
    for (int l = 0; l < m->spec.mlp.L; l++) infl_mlp_factors(s->w, l, &mw->D[l], &mw->A[l]);
    return INFL_OK;
}

static infl_status mlp_seam_backward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                                     const infl_targets *tg, infl_model_work *mw, float *grad, float scale) {
    mlp_seam *s = mw->impl;
    const infl_mlp_spec *sp = &m->spec.mlp;
    const int32_t *y = bt->y;
    const float *yf = bt->yf;
    if (tg && tg->sampled) {
        // targets drawn from the model at its logits, keyed by (seed, example index)
        FORWARD_IF_ERROR(ctx->be->sample_labels(ctx, sp->loss, s->w->Z[sp->L - 1], bt->b, sp->widths[sp->L], tg->seed,
                                                bt->index0, s->ys, s->yfs));
        y = s->ys;
        yf = s->yfs;
    }
    return infl_mlp_backward(ctx, params, y, yf, s->w, grad, scale);
}

static infl_status mlp_seam_predict(infl_ctx *ctx, const infl_model *m, infl_model_work *mw, int32_t *pred) {
    mlp_seam *s = mw->impl;
    const infl_mlp_spec *sp = &m->spec.mlp;
    int K = sp->widths[sp->L], b = mw->b;
    if (sp->loss == INFL_LOSS_MSE) {
        for (int i = 0; i < b; i++) pred[i] = -1;
        return INFL_OK;
    }
    FORWARD_IF_ERROR(ctx->be->download(ctx, s->hlogits, s->w->Z[sp->L - 1], (size_t)b * K * sizeof(float)));
    for (int i = 0; i < b; i++) {
        const float *z = s->hlogits + (size_t)i * K;
        int arg = 0;
        for (int j = 1; j < K; j++)
            if (z[j] > z[arg]) arg = j;
        pred[i] = sp->loss == INFL_LOSS_SIGMOID_CE ? (z[0] > 0) : arg;
    }
    return INFL_OK;
}

static double mlp_seam_fb_flops(const infl_model *m, double rows) { return infl_mlp_fb_flops(&m->spec.mlp, (int)rows); }

static infl_status mlp_seam_hvp(infl_ctx *ctx, const infl_model *m, const float *params, infl_split *split,
                                int64_t samples, infl_hessian kind, int64_t shard_rows, double cache_mb,
                                infl_hvp **out) {
    return infl_hvp_create(ctx, &m->spec.mlp, params, split, samples, kind, shard_rows, cache_mb, out);
}

static const infl_model_iface mlp_iface = {
    .kind = "mlp",
    .free = mlp_model_free,
    .check_data = mlp_check_data,
    .check_labels = mlp_check_labels,
    .work_create = mlp_seam_create,
    .work_free = mlp_seam_free,
    .forward = mlp_seam_forward,
    .backward = mlp_seam_backward,
    .predict = mlp_seam_predict,
    .fb_flops = mlp_seam_fb_flops,
    .hvp_create = mlp_seam_hvp,
};

infl_status infl_mlp_model_create(infl_ctx *ctx, const infl_model_spec *spec, infl_model **out) {
    *out = NULL;
    RETURN_IF(ctx, spec->kind != INFL_MODEL_MLP, INFL_E_ARG, "infl_mlp_model_create: not an mlp spec");
    FORWARD_IF_ERROR(infl_mlp_spec_check(ctx, &spec->mlp));
    infl_model *m = infl_calloc(ctx, 1, sizeof *m, "the model");
    if (!m) return INFL_E_NOMEM;
    m->iface = &mlp_iface;
    m->spec = *spec;
    infl_model_init_layers(m, 0);
    m->tokens = 0;
    m->outputs = spec->mlp.widths[spec->mlp.L];
    m->logits_layer = m->nlayers - 1;  // z_L = W_L a_{L-1} + b_L, read by the loss
    m->out_loss = spec->mlp.loss;
    *out = m;
    return INFL_OK;
}
