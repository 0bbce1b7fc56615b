/*
 * mlp.c — MLP forward and backward on the backend (see mlp.h for the shapes).
 */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "mlp.h"

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
