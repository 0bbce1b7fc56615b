/*
 * mlp.h — the MLP of DESIGN.md on the backend: forward, per-example backward (the
 * factors Δ_l and Ã_{l-1} the attribution work needs), batch gradients, seeded
 * initialisation. All arrays named here are backend memory unless said otherwise.
 *
 * Layer l (0-based): Z_l = A_{l-1} W_lᵀ + b_l, A_l = φ(Z_l), with A_{-1} = X and the
 * logits Z_{L-1} (no activation after the last layer).
 */
#ifndef INFL_MLP_H
#define INFL_MLP_H

#include "backend.h"
#include "core/spec.h"

typedef struct {
    infl_mlp_spec spec;
    int maxB;                        // rows the buffers hold
    int B;                           // rows of the last forward
    const float *X;                  // input of the last forward (B, d_0), borrowed
    float *Z[INFL_MAX_LAYERS];       // (maxB, d_{l+1}) pre-activations
    float *A[INFL_MAX_LAYERS];       // (maxB, d_{l+1}) activations, l < L-1
    float *D[INFL_MAX_LAYERS];       // (maxB, d_{l+1}) δ_l = ∂ℓ_i/∂Z_l, per example
    float *dA;                       // (maxB, max width) scratch
    float *loss;                     // (maxB) per-example loss
    int32_t *correct;                // (maxB) 1 where the prediction is right
} infl_mlp_work;

// Allocates buffers for batches of up to maxB rows.
infl_status infl_mlp_work_create(infl_ctx *ctx, const infl_mlp_spec *spec, int maxB, infl_mlp_work **out);
void infl_mlp_work_free(infl_ctx *ctx, infl_mlp_work *w);  // accepts NULL

// Forward pass of B rows: X (B, d_0); params the flat vector (spec.h layout).
// Logits land in w->Z[L-1] (B, d_L).
infl_status infl_mlp_forward(infl_ctx *ctx, const float *params, const float *X, int B, infl_mlp_work *w);

// Per-example losses of the last forward into w->loss and w->correct.
// Targets: y (B) int32 class labels or yf (B, d_L) real, backend memory.
infl_status infl_mlp_loss(infl_ctx *ctx, const int32_t *y, const float *yf, infl_mlp_work *w);

// Backward pass after infl_mlp_forward (and computing the loss): fills w->D[l] with
// the per-example δ_l for every layer (unscaled), w->loss and w->correct; when grad
// is not NULL, grad (nparams) = scale · Σ_i ∇_w ℓ_i (loss only, no weight decay).
infl_status infl_mlp_backward(infl_ctx *ctx, const float *params, const int32_t *y, const float *yf,
                              infl_mlp_work *w, float *grad, float scale);

// Floating-point operations of a forward and a backward pass (the per-example δ, no
// weight gradients) of B rows: 2 d_in d_out per layer forward, 2 more back for l > 0.
static inline double infl_mlp_fb_flops(const infl_mlp_spec *s, int B) {
    double f = 0;
    for (int l = 0; l < s->L; l++) f += (l > 0 ? 4.0 : 2.0) * B * s->widths[l] * s->widths[l + 1];
    return f;
}

// Per-example gradient factors of layer l after infl_mlp_backward:
// Δ_l (B, d_{l+1}) and A_{l-1} (B, d_l); the example's gradient of W̃_l is
// δ ãᵀ with ã = [a; 1].
static inline void infl_mlp_factors(const infl_mlp_work *w, int l, const float **Delta, const float **Aprev) {
    *Delta = w->D[l];
    *Aprev = l == 0 ? w->X : w->A[l - 1];
}

// Seeded initialisation into a host vector (nparams): W uniform in ±sqrt(6/d_in)
// (relu, gelu: He) or ±sqrt(6/(d_in+d_out)) (tanh: Glorot), biases 0; drawn from the
// counter-based generator keyed by (seed, INFL_RNG_INIT, parameter index), so the
// same seed gives the same weights everywhere. `zero` = 1 gives all zeros (convex
// models start there).
void infl_mlp_init(const infl_mlp_spec *spec, uint64_t seed, int zero, float *params);

#endif
