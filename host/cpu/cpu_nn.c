/*
 * cpu_nn.c — the CPU backend's transformer primitives, the GPT's layers as plain
 * loops (llm.c's train_gpt2.c style): LayerNorm forward and backward, the causal
 * softmax of attention and its backward, token and position embeddings and their
 * scatter-add, the softmax cross-entropy over a vocabulary, AdamW and a row gather
 * (the strided-batched GEMM is in cpu_gemm.c). They fill the slots of the same names
 * in host/backend.h (table in cpu_backend.c) and are the oracle that
 * cuda/nn_kernels.cu is tested against.
 *
 * Reductions (LayerNorm statistics and dw/db, softmax sums, the cross-entropy's
 * logsumexp) accumulate in float64. Every result is computed in a fixed order that
 * does not depend on the number of threads: rows are independent, and column sums run
 * over the rows in order.
 */
#include "cpu_nn.h"

#include <math.h>
#include <string.h>

// Work (elements) below which a loop stays on one thread.
#define PAR_MIN 65536

// ---- LayerNorm ----

infl_status cpu_layernorm_forward(infl_ctx *ctx, float *out, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int N, int C, float eps) {
    RETURN_IF(ctx, N < 0 || C < 1, INFL_E_ARG, "layernorm_forward: bad size (N %d, C %d)", N, C);
    // x and out are (N, C), w and b (C), mean and rstd (N); each row on its own
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        // the row's mean
        double s = 0;
        for (int j = 0; j < C; j++) s += xi[j];
        double mu = s / C;
        // its biased variance, from the deviations (a second pass: no cancellation)
        double var = 0;
        for (int j = 0; j < C; j++) {
            double d = xi[j] - mu;
            var += d * d;
        }
        var /= C;
        double rs = 1.0 / sqrt(var + eps);
        // normalise, then scale and shift
        for (int j = 0; j < C; j++) oi[j] = (float)((xi[j] - mu) * rs * w[j] + b[j]);
        if (mean) mean[i] = (float)mu;
        if (rstd) rstd[i] = (float)rs;
    }
    return INFL_OK;
}

// Columns per task of the dw/db column sums: a task owns whole cache lines.
#define LN_COLS 64

infl_status cpu_layernorm_backward(infl_ctx *ctx, float *dx, float *dw, float *db, const float *dout,
                                   const float *x, const float *w, const float *mean, const float *rstd, int N,
                                   int C) {
    RETURN_IF(ctx, N < 0 || C < 1, INFL_E_ARG, "layernorm_backward: bad size (N %d, C %d)", N, C);
    // dx, dout and x are (N, C), w, dw and db (C), mean and rstd (N).
    // dx, row by row: with x̂ = (x − μ) ρ and dn = dout ∘ w (the gradient of x̂),
    // dx += ρ (dn − mean(dn) − x̂ mean(dn ∘ x̂))
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C, *gi = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        double mu = mean[i], rs = rstd[i];
        // the two row means of the projection
        double dn_mean = 0, dnx_mean = 0;
        for (int j = 0; j < C; j++) {
            double xh = (xi[j] - mu) * rs, dn = (double)gi[j] * w[j];
            dn_mean += dn;
            dnx_mean += dn * xh;
        }
        dn_mean /= C;
        dnx_mean /= C;
        // accumulate into dx
        for (int j = 0; j < C; j++) {
            double xh = (xi[j] - mu) * rs, dn = (double)gi[j] * w[j];
            dxi[j] = (float)(dxi[j] + rs * (dn - dn_mean - xh * dnx_mean));
        }
    }
    if (!dw && !db) return INFL_OK;
    // dw += Σ_rows dout ∘ x̂, db += Σ_rows dout: a task per block of LN_COLS columns walks
    // the rows in order, summing in float64
    int nblk = (C + LN_COLS - 1) / LN_COLS;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int bk = 0; bk < nblk; bk++) {
        int j0 = bk * LN_COLS, j1 = j0 + LN_COLS < C ? j0 + LN_COLS : C;
        double sw[LN_COLS] = {0}, sb[LN_COLS] = {0};
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * C, *gi = dout + (size_t)i * C;
            double mu = mean[i], rs = rstd[i];
            for (int j = j0; j < j1; j++) {
                sw[j - j0] += gi[j] * ((xi[j] - mu) * rs);
                sb[j - j0] += gi[j];
            }
        }
        for (int j = j0; j < j1; j++) {
            if (dw) dw[j] = (float)(dw[j] + sw[j - j0]);
            if (db) db[j] = (float)(db[j] + sb[j - j0]);
        }
    }
    return INFL_OK;
}

// exp(d) for d <= 0 at float precision, about an ulp from exp in float64, at the cost
// of expf: d rounded to float loses up to half an ulp of d (at d = -10 that is 8 ulps
// of the result), which exp(d) = expf(f) · exp(d − f) ≈ expf(f) · (1 + (d − f)) restores.
static inline float exp_f64ish(double d) {
    float f = (float)d;
    return (float)((double)expf(f) * (1.0 + (d - (double)f)));
}

// ---- causal softmax (attention) ----

infl_status cpu_softmax_causal(infl_ctx *ctx, float *P, const float *S, int count, int T, float scale) {
    RETURN_IF(ctx, count < 0 || T < 0, INFL_E_ARG, "softmax_causal: bad size (count %d, T %d)", count, T);
    // S and P are count blocks of (T, T); row t of a block attends to positions s <= t
    size_t rows = (size_t)count * T;
#pragma omp parallel for schedule(static) if (rows * T > PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        int t = (int)(r % T);
        const float *s = S + r * T;
        float *p = P + r * T;
        // the largest scaled score, for a safe exponent
        double mx = (double)scale * s[0];
        for (int j = 1; j <= t; j++) mx = (double)scale * s[j] > mx ? (double)scale * s[j] : mx;
        // the exponentials (each s[j] is read before p[j] is written: P may alias S),
        // the normaliser summed in float64, then probabilities up to the diagonal and
        // zeros after it. One expf per entry (a double exp here cost a fifth of a GPT
        // training step), of the exponent rounded to float and corrected to first
        // order by the rounding's residual: exact to about an ulp (exp_f64ish).
        double sum = 0;
        for (int j = 0; j <= t; j++) {
            float e = exp_f64ish((double)scale * s[j] - mx);
            p[j] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j <= t; j++) p[j] *= inv;
        for (int j = t + 1; j < T; j++) p[j] = 0.0f;
    }
    return INFL_OK;
}

infl_status cpu_softmax_causal_backward(infl_ctx *ctx, float *dS, const float *dP, const float *P, int count, int T,
                                        float scale) {
    RETURN_IF(ctx, count < 0 || T < 0, INFL_E_ARG, "softmax_causal_backward: bad size (count %d, T %d)", count, T);
    // dS, dP and P are count blocks of (T, T)
    size_t rows = (size_t)count * T;
#pragma omp parallel for schedule(static) if (rows * T > PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        int t = (int)(r % T);
        const float *p = P + r * T, *dp = dP + r * T;
        float *ds = dS + r * T;
        // Σ_{s <= t} P dP: the row's projection onto the probabilities
        double d = 0;
        for (int j = 0; j <= t; j++) d += (double)p[j] * dp[j];
        // the softmax's Jacobian times dP, and the scale of the scores (dS may alias dP)
        for (int j = 0; j <= t; j++) ds[j] = (float)(scale * (double)p[j] * (dp[j] - d));
        for (int j = t + 1; j < T; j++) ds[j] = 0.0f;
    }
    return INFL_OK;
}

// ---- embeddings ----

infl_status cpu_embed_forward(infl_ctx *ctx, float *out, const int32_t *tok, const float *wte, const float *wpe,
                              int B, int T, int C) {
    RETURN_IF(ctx, B < 0 || T < 0 || C < 0, INFL_E_ARG, "embed_forward: bad size (B %d, T %d, C %d)", B, T, C);
    // out is (B·T, C), tok (B·T), wte (V, C), wpe (>= T, C)
    int N = B * T;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *e = wte + (size_t)tok[i] * C, *p = wpe + (size_t)(i % T) * C;
        float *o = out + (size_t)i * C;
        // the token's vector plus its position's
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
    return INFL_OK;
}

// Columns per task of the scatter-add.
#define EMB_COLS 64

infl_status cpu_embed_backward(infl_ctx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tok, int B,
                               int T, int C) {
    RETURN_IF(ctx, B < 0 || T < 0 || C < 0, INFL_E_ARG, "embed_backward: bad size (B %d, T %d, C %d)", B, T, C);
    // dout is (B·T, C), tok (B·T), dwte (V, C), dwpe (>= T, C). Tokens repeat, so rows
    // of dwte collide: a task owns a block of columns and walks the tokens in order,
    // so every sum is added in token order, whatever the threads (the CUDA twin adds
    // in the same order).
    int N = B * T, nblk = (C + EMB_COLS - 1) / EMB_COLS;
    if (!dwte && !dwpe) return INFL_OK;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * EMB_COLS, c1 = c0 + EMB_COLS < C ? c0 + EMB_COLS : C;
        for (int i = 0; i < N; i++) {
            const float *g = dout + (size_t)i * C;
            // the token's row and the position's row each get the row's gradient
            if (dwte && tok[i] >= 0) {  // a negative token is skipped, as on CUDA
                float *e = dwte + (size_t)tok[i] * C;
                for (int c = c0; c < c1; c++) e[c] += g[c];
            }
            if (dwpe) {
                float *p = dwpe + (size_t)(i % T) * C;
                for (int c = c0; c < c1; c++) p[c] += g[c];
            }
        }
    }
    return INFL_OK;
}

// ---- softmax cross-entropy over a vocabulary ----

infl_status cpu_xent(infl_ctx *ctx, float *loss, float *dlogits, const float *logits, const int32_t *y, int N, int V,
                     float scale) {
    RETURN_IF(ctx, N < 0 || V < 1, INFL_E_ARG, "xent: bad size (N %d, V %d)", N, V);
    // A target past the vocabulary is a caller's bug; the CPU can say so for free.
    for (int i = 0; i < N; i++)
        RETURN_IF(ctx, y[i] >= V, INFL_E_VALUE, "xent: target %d of row %d is out of range [0, %d)", (int)y[i], i, V);
    // logits and dlogits are (N, V), loss and y (N)
#pragma omp parallel for schedule(static) if ((size_t)N * V > PAR_MIN / 4)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float *g = dlogits ? dlogits + (size_t)i * V : NULL;
        int yi = y[i];
        if (yi < 0) {  // a masked row: no loss, no gradient
            if (loss) loss[i] = 0.0f;
            if (g) memset(g, 0, (size_t)V * sizeof(float));
            continue;
        }
        // logsumexp from the largest logit
        float mx = z[0];
        for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        // z[y] is read before the gradient may overwrite it (dlogits may alias logits)
        float zy = z[yi];
        // one exponential per logit (kept in g when there is one), summed in float64
        double s = 0;
        if (g)
            for (int j = 0; j < V; j++) {
                float e = exp_f64ish((double)z[j] - mx);
                g[j] = e;
                s += e;
            }
        else
            for (int j = 0; j < V; j++) s += exp_f64ish((double)z[j] - mx);
        double lse = mx + log(s);
        // scale · (softmax − onehot)
        if (g) {
            double c = scale / s;  // one rounding after expf's
            for (int j = 0; j < V; j++) g[j] = (float)(c * g[j]);
            // the target's p − 1 cancels when p is near 1: in float64, by expm1
            g[yi] = (float)(scale * expm1((double)zy - lse));
        }
        if (loss) loss[i] = (float)(lse - zy);
    }
    return INFL_OK;
}

// ---- AdamW ----

infl_status cpu_adamw_step(infl_ctx *ctx, float *w, float *m, float *v, const float *g, size_t n, float lr,
                           float beta1, float beta2, float eps, float wd, int t, float gscale) {
    RETURN_IF(ctx, t < 1, INFL_E_ARG, "adamw_step: step %d (steps count from 1)", t);
    // the bias corrections 1 − β^t, the powers in float64
    float c1 = (float)(1.0 - pow(beta1, t)), c2 = (float)(1.0 - pow(beta2, t));
    // w, m, v and g are (n)
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        // the moving averages of the gradient and its square
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        // the bias-corrected step, and the decoupled weight decay
        float mhat = mi / c1, vhat = vi / c2;
        w[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[i]);
    }
    return INFL_OK;
}

// ---- row gather ----

infl_status cpu_gather_rows(infl_ctx *ctx, float *out, const float *X, const int32_t *idx, int n, int cols) {
    RETURN_IF(ctx, n < 0 || cols < 0, INFL_E_ARG, "gather_rows: bad size (n %d, cols %d)", n, cols);
    // out is (n, cols): row r is row idx[r] of X
#pragma omp parallel for schedule(static) if ((size_t)n * cols > PAR_MIN)
    for (int r = 0; r < n; r++)
        memcpy(out + (size_t)r * cols, X + (size_t)idx[r] * cols, (size_t)cols * sizeof(float));
    return INFL_OK;
}
