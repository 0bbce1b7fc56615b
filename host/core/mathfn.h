/*
 * mathfn.h — the scalar functions of the model, written once for host and device
 * (INFL_HD): activations and their first and second derivatives, and the per-row
 * losses with their gradients. The CPU backend loops over them; CUDA kernels call
 * them per thread, so both backends compute the same formulas.
 */
#ifndef INFL_MATHFN_H
#define INFL_MATHFN_H

#include <math.h>
#include <stdint.h>

#include "infl.h"
#include "rng.h"  // INFL_HD

#define INFL_SQRT1_2 0.70710678118654752440
#define INFL_INV_SQRT_2PI 0.39894228040143267794

// ---- activations (exact GELU: z Φ(z) with Φ(z) = erfc(−z/√2)/2, in float: erfcf and
// expf, each within an ulp or two, also far in the left tail where 1 + erf(z/√2)
// would cancel; in double they cost a GPT training step a tenth of its time) ----

static inline INFL_HD float infl_act_f(infl_activation a, float z) {
    switch (a) {
    case INFL_ACT_RELU: return z > 0.0f ? z : 0.0f;
    case INFL_ACT_TANH: return tanhf(z);
    case INFL_ACT_GELU: return 0.5f * z * erfcf(-z * (float)INFL_SQRT1_2);  // 1 + erf cancels for z << 0
    }
    return z;
}

// φ'(z); relu' is taken as 0 at 0.
static inline INFL_HD float infl_act_df(infl_activation a, float z) {
    switch (a) {
    case INFL_ACT_RELU: return z > 0.0f ? 1.0f : 0.0f;
    case INFL_ACT_TANH: {
        float t = tanhf(z);
        return 1.0f - t * t;
    }
    case INFL_ACT_GELU: {
        float Phi = 0.5f * erfcf(-z * (float)INFL_SQRT1_2);
        float pdf = (float)INFL_INV_SQRT_2PI * expf(-0.5f * z * z);
        return Phi + z * pdf;
    }
    }
    return 1.0f;
}

// φ''(z); 0 for relu (almost everywhere).
static inline INFL_HD float infl_act_d2f(infl_activation a, float z) {
    switch (a) {
    case INFL_ACT_RELU: return 0.0f;
    case INFL_ACT_TANH: {
        float t = tanhf(z);
        return -2.0f * t * (1.0f - t * t);
    }
    case INFL_ACT_GELU: {
        double pdf = INFL_INV_SQRT_2PI * exp(-0.5 * (double)z * z);
        return (float)(pdf * (2.0 - (double)z * z));
    }
    }
    return 0.0f;
}

// ---- losses of one example ----

// Softmax cross-entropy of logits z (K) with class y: returns ℓ = logsumexp(z) − z_y
// (in double); g (K, may be NULL) = softmax(z) − onehot(y); *correct = argmax == y.
static inline INFL_HD double infl_softmax_ce_row(const float *z, int32_t y, int K, float *g, int *correct) {
    float m = z[0];
    int arg = 0;
    for (int j = 1; j < K; j++)
        if (z[j] > m) {
            m = z[j];
            arg = j;
        }
    double s = 0;
    for (int j = 0; j < K; j++) s += exp((double)z[j] - m);
    double lse = m + log(s);
    if (g)
        for (int j = 0; j < K; j++) g[j] = (float)(exp((double)z[j] - lse) - (j == y ? 1.0 : 0.0));
    *correct = arg == y;
    return lse - z[y];
}

// Binary sigmoid cross-entropy of one logit z with label y ∈ {0,1}:
// ℓ = softplus(z) − y z; g = σ(z) − y; *correct = (z > 0) == y.
static inline INFL_HD double infl_sigmoid_ce_row(float z, int32_t y, float *g, int *correct) {
    double zd = z;
    double sp = (zd > 0 ? zd : 0.0) + log1p(exp(-fabs(zd)));
    if (g) g[0] = (float)(1.0 / (1.0 + exp(-zd)) - y);
    *correct = (z > 0.0f) == (y == 1);
    return sp - y * zd;
}

// Squared error ℓ = ½ |z − t|²; g = z − t.
static inline INFL_HD double infl_mse_row(const float *z, const float *t, int K, float *g) {
    double l = 0;
    for (int j = 0; j < K; j++) {
        double d = (double)z[j] - t[j];
        l += 0.5 * d * d;
        if (g) g[j] = (float)d;
    }
    return l;
}

// Hessian of one example's loss in its logits times r: out = H_out(z) r.
// softmax_ce: p ∘ r − p (p·r); sigmoid_ce: σ(z)(1−σ(z)) r; mse: r.
static inline INFL_HD void infl_loss_hvp_row(infl_loss loss, const float *z, const float *r, int K, float *out) {
    switch (loss) {
    case INFL_LOSS_SOFTMAX_CE: {
        float m = z[0];
        for (int j = 1; j < K; j++) m = z[j] > m ? z[j] : m;
        double s = 0, pr = 0;
        for (int j = 0; j < K; j++) s += exp((double)z[j] - m);
        for (int j = 0; j < K; j++) pr += exp((double)z[j] - m) / s * r[j];
        for (int j = 0; j < K; j++) out[j] = (float)(exp((double)z[j] - m) / s * (r[j] - pr));
        break;
    }
    case INFL_LOSS_SIGMOID_CE: {
        double p = 1.0 / (1.0 + exp(-(double)z[0]));
        out[0] = (float)(p * (1.0 - p) * r[0]);
        break;
    }
    case INFL_LOSS_MSE:
        for (int j = 0; j < K; j++) out[j] = r[j];
        break;
    }
}

// ---- labels sampled from the model (true Fisher) ----

// Draws one example's target from the model's predictive distribution at logits z
// (K), by the counter-based generator keyed by (seed, INFL_RNG_LABELS, index, 0):
// softmax_ce: a class y ~ softmax(z) by inversion of one uniform; sigmoid_ce: y ~
// Bernoulli(σ(z)); mse: t = z + ε, ε ~ N(0, I) (the Gaussian whose negative log-
// likelihood is ½|z − t|²), one normal per output (draw j).
static inline INFL_HD void infl_sample_label_row(infl_loss loss, const float *z, int K, uint64_t seed,
                                                 uint64_t index, int32_t *y, float *t) {
    switch (loss) {
    case INFL_LOSS_SOFTMAX_CE: {
        float m = z[0];
        for (int j = 1; j < K; j++) m = z[j] > m ? z[j] : m;
        double s = 0;
        for (int j = 0; j < K; j++) s += exp((double)z[j] - m);
        double u = infl_rng_uniform(seed, INFL_RNG_LABELS, index, 0) * s, c = 0;
        int32_t k = K - 1;
        for (int j = 0; j < K; j++) {
            c += exp((double)z[j] - m);
            if (u < c) {
                k = j;
                break;
            }
        }
        *y = k;
        break;
    }
    case INFL_LOSS_SIGMOID_CE: {
        double p = 1.0 / (1.0 + exp(-(double)z[0]));
        *y = infl_rng_uniform(seed, INFL_RNG_LABELS, index, 0) < p;
        break;
    }
    case INFL_LOSS_MSE:
        for (int j = 0; j < K; j++) t[j] = (float)(z[j] + infl_rng_normal(seed, INFL_RNG_LABELS, index, (uint32_t)j));
        break;
    }
}

#endif
