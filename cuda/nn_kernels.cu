/*
 * nn_kernels.cu — the CUDA kernels of the transformer primitives of host/backend.h
 * (the GPT's layers), with their launch glue: LayerNorm forward and backward, the
 * causal softmax of attention and its backward, token and position embeddings and
 * their scatter-add, the softmax cross-entropy over a vocabulary, AdamW, a row gather,
 * and the batched C = beta C that sgemm_batched (backend.cu) needs when k = 0. Each is
 * the twin of the function of the same name in host/cpu/cpu_nn.c, its test oracle
 * (tests/test_cuda_nn.c).
 *
 * Elementwise work is float32; reductions (LayerNorm statistics and dw/db, softmax
 * sums, the logsumexp) accumulate in float64, as the CPU twins do. Every reduction
 * runs in a fixed order (warp shuffles in a fixed pattern, fixed partitions, no float
 * atomics), so the results are the same bits on every run. No primitive here
 * synchronises with the host.
 */
#include "cuda_internal.h"

// ---- warp and block reductions ----

// Butterfly reductions: every lane ends with the same value (each step adds the same
// two numbers in every lane of a pair, and float addition commutes exactly).
__device__ static inline double warp_sum_d(double s) {
    for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}

__device__ static inline float warp_max_f(float v) {
    for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Over a block of whole warps (at most 32 of them): every thread gets the result.
// sh: 32 slots of shared memory, free again on return.
__device__ static double block_sum_d(double s, double *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    s = warp_sum_d(s);
    if (lane == 0) sh[wid] = s;
    __syncthreads();
    s = warp_sum_d(lane < nw ? sh[lane] : 0.0);  // each warp adds the same partials in the same order
    __syncthreads();
    return s;
}

__device__ static float block_max_f(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max_f(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = warp_max_f(lane < nw ? sh[lane] : -INFINITY);
    __syncthreads();
    return v;
}

// Rows handled by one block when a warp owns a row.
#define ROW_WARPS 8

// ---- sgemm_batched's k = 0 ----

// C_i (m, n; leading dimension ldc) = beta C_i for i < count, C_i = C + i·sC, without
// reading C when beta is 0.
__global__ static void k_scale_batched(float *C, int ldc, int64_t sC, int m, int n, int count, float beta) {
    size_t per = (size_t)m * n, total = per * count;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t b = t / per, r = t % per;
        float *c = C + (int64_t)b * sC + (r / n) * ldc + r % n;
        *c = beta == 0.0f ? 0.0f : beta * *c;
    }
}

infl_status cu_scale_batched(infl_ctx *ctx, float *C, int ldc, int64_t sC, int m, int n, int count, float beta) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (m <= 0 || n <= 0 || count <= 0 || beta == 1.0f) return INFL_OK;
    CU_LAUNCH(ctx, k_scale_batched, cu_grid((size_t)m * n * count), CU_THREADS, 0, C, ldc, sC, m, n, count, beta);
    return INFL_OK;
}

// ---- LayerNorm ----

// One warp per row of x (N, C): mean and biased variance in float64 (two passes over
// the row, which stays in L1), then out = (x − μ) ρ w + b.
__global__ static void k_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                                           const float *b, int N, int C, float eps) {
    int lane = threadIdx.x & 31, i = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5);
    if (i >= N) return;  // whole warps leave together
    const float *xi = x + (size_t)i * C;
    float *oi = out + (size_t)i * C;
    double s = 0;
    for (int j = lane; j < C; j += 32) s += xi[j];
    double mu = warp_sum_d(s) / C;
    double v = 0;
    for (int j = lane; j < C; j += 32) {
        double d = xi[j] - mu;
        v += d * d;
    }
    double rs = 1.0 / sqrt(warp_sum_d(v) / C + eps);
    float muf = (float)mu, rsf = (float)rs;
    for (int j = lane; j < C; j += 32) oi[j] = (xi[j] - muf) * rsf * w[j] + b[j];
    if (lane == 0) {
        if (mean) mean[i] = muf;
        if (rstd) rstd[i] = rsf;
    }
}

infl_status cu_layernorm_forward(infl_ctx *ctx, float *out, float *mean, float *rstd, const float *x, const float *w,
                                 const float *b, int N, int C, float eps) {
    RETURN_IF(ctx, N < 0 || C < 1, INFL_E_ARG, "layernorm_forward: bad size (N %d, C %d)", N, C);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (N == 0) return INFL_OK;
    CU_LAUNCH(ctx, k_layernorm_forward, (N + ROW_WARPS - 1) / ROW_WARPS, 32 * ROW_WARPS, 0, out, mean, rstd, x, w, b,
              N, C, eps);
    return INFL_OK;
}

// dx, one warp per row: with x̂ = (x − μ) ρ and dn = dout ∘ w,
// dx += ρ (dn − mean(dn) − x̂ mean(dn ∘ x̂)), the two means in float64.
__global__ static void k_layernorm_dx(float *dx, const float *dout, const float *x, const float *w,
                                      const float *mean, const float *rstd, int N, int C) {
    int lane = threadIdx.x & 31, i = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5);
    if (i >= N) return;
    const float *xi = x + (size_t)i * C, *gi = dout + (size_t)i * C;
    float *dxi = dx + (size_t)i * C;
    float mu = mean[i], rs = rstd[i];
    double a = 0, bx = 0;
    for (int j = lane; j < C; j += 32) {
        float xh = (xi[j] - mu) * rs, dn = gi[j] * w[j];
        a += dn;
        bx += (double)dn * xh;
    }
    float dn_mean = (float)(warp_sum_d(a) / C), dnx_mean = (float)(warp_sum_d(bx) / C);
    for (int j = lane; j < C; j += 32) {
        float xh = (xi[j] - mu) * rs, dn = gi[j] * w[j];
        dxi[j] += rs * (dn - dn_mean - xh * dnx_mean);
    }
}

// dw and db, stage 1: block (x, y) sums the rows of chunk y (rows [y·chunk, (y+1)·chunk))
// of 32 columns: thread (tx, ty) takes rows ty, ty + LNB_Y, ... of column x·32 + tx in
// float64, then the LNB_Y partial sums are added in a fixed tree order into pw, pb
// (R, C), R = gridDim.y.
#define LNB_Y 8
__global__ static void k_layernorm_dwdb_part(double *pw, double *pb, const float *dout, const float *x,
                                             const float *mean, const float *rstd, int N, int C, int chunk) {
    __shared__ double sw[LNB_Y][33], sb[LNB_Y][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * chunk, r1 = min(N, r0 + chunk);
    double aw = 0, ab = 0;
    if (j < C)
        for (int i = r0 + threadIdx.y; i < r1; i += LNB_Y) {
            float g = dout[(size_t)i * C + j];
            aw += (double)g * ((x[(size_t)i * C + j] - mean[i]) * rstd[i]);
            ab += g;
        }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    for (int h = LNB_Y / 2; h > 0; h /= 2) {
        if ((int)threadIdx.y < h) {
            sw[threadIdx.y][threadIdx.x] += sw[threadIdx.y + h][threadIdx.x];
            sb[threadIdx.y][threadIdx.x] += sb[threadIdx.y + h][threadIdx.x];
        }
        __syncthreads();
    }
    if (threadIdx.y == 0 && j < C) {
        pw[(size_t)blockIdx.y * C + j] = sw[0][threadIdx.x];
        pb[(size_t)blockIdx.y * C + j] = sb[0][threadIdx.x];
    }
}

// Stage 2: one thread per column adds the R chunks' partial sums in chunk order.
__global__ static void k_layernorm_dwdb_final(float *dw, float *db, const double *pw, const double *pb, int R,
                                              int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    double aw = 0, ab = 0;
    for (int r = 0; r < R; r++) {
        aw += pw[(size_t)r * C + j];
        ab += pb[(size_t)r * C + j];
    }
    if (dw) dw[j] = (float)(dw[j] + aw);
    if (db) db[j] = (float)(db[j] + ab);
}

// Rows per chunk of the dw/db reduction: at least LNB_ROWS, and at most LNB_CHUNKS chunks.
#define LNB_ROWS 64
#define LNB_CHUNKS 64

infl_status cu_layernorm_backward(infl_ctx *ctx, float *dx, float *dw, float *db, const float *dout, const float *x,
                                  const float *w, const float *mean, const float *rstd, int N, int C) {
    RETURN_IF(ctx, N < 0 || C < 1, INFL_E_ARG, "layernorm_backward: bad size (N %d, C %d)", N, C);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (N == 0) return INFL_OK;
    CU_LAUNCH(ctx, k_layernorm_dx, (N + ROW_WARPS - 1) / ROW_WARPS, 32 * ROW_WARPS, 0, dx, dout, x, w, mean, rstd, N,
              C);
    if (!dw && !db) return INFL_OK;
    // dw, db: column sums over a fixed partition of the rows into R chunks (parallel
    // over chunks and columns), then the chunks added in order: deterministic, no
    // atomics. The partials come from the pool (stream-ordered reuse: released at once).
    int R = (N + LNB_ROWS - 1) / LNB_ROWS;
    if (R > LNB_CHUNKS) R = LNB_CHUNKS;
    int chunk = (N + R - 1) / R;
    cu_ctx *c = cu_of(ctx);
    double *part = NULL;
    infl_status rc = cu_pool_alloc(ctx, &c->pool, 2 * (size_t)R * C * sizeof(double), (void **)&part);
    if (rc < 0) {
        infl_errprefix(ctx, "layernorm_backward: partial sums (%d x %d)", R, C);
        return rc;
    }
    dim3 grid((C + 31) / 32, R), block(32, LNB_Y);
    k_layernorm_dwdb_part<<<grid, block, 0, c->stream>>>(part, part + (size_t)R * C, dout, x, mean, rstd, N, C,
                                                         chunk);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        k_layernorm_dwdb_final<<<(C + 255) / 256, 256, 0, c->stream>>>(dw, db, part, part + (size_t)R * C, R, C);
        e = cudaGetLastError();
    }
    cu_pool_release(&c->pool, part);  // stream order keeps its reuse after these kernels
    if (e != cudaSuccess) return cu_fail_rt(ctx, e, "launch of k_layernorm_dwdb", __FILE__, __LINE__);
    return INFL_OK;
}

// ---- causal softmax (attention) ----

// One warp per row r of the count·T rows; row t = r mod T of its block attends to
// s <= t. Entries above the diagonal are written 0 and never read. Each lane reads
// S[t, s] before it writes P[t, s] for the same s, so P may alias S.
__global__ static void k_softmax_causal(float *P, const float *S, int rows, int T, float scale) {
    int lane = threadIdx.x & 31, r = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    int t = r % T;
    const float *s = S + (size_t)r * T;
    float *p = P + (size_t)r * T;
    float mx = -INFINITY;
    for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, scale * s[j]);
    mx = warp_max_f(mx);
    double sum = 0;
    for (int j = lane; j <= t; j += 32) sum += expf(scale * s[j] - mx);
    float inv = (float)(1.0 / warp_sum_d(sum));
    for (int j = lane; j < T; j += 32) p[j] = j <= t ? expf(scale * s[j] - mx) * inv : 0.0f;
}

infl_status cu_softmax_causal(infl_ctx *ctx, float *P, const float *S, int count, int T, float scale) {
    RETURN_IF(ctx, count < 0 || T < 0, INFL_E_ARG, "softmax_causal: bad size (count %d, T %d)", count, T);
    FORWARD_IF_ERROR(cu_enter(ctx));
    int64_t rows = (int64_t)count * T;
    if (rows == 0) return INFL_OK;
    RETURN_IF(ctx, rows > INT32_MAX - ROW_WARPS, INFL_E_ARG, "softmax_causal: %lld rows", (long long)rows);
    CU_LAUNCH(ctx, k_softmax_causal, (unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS), 32 * ROW_WARPS, 0, P, S,
              (int)rows, T, scale);
    return INFL_OK;
}

// dS[t, s] = scale P[t,s] (dP[t,s] − Σ_{s' <= t} P[t,s'] dP[t,s']), 0 above the
// diagonal; one warp per row, the sum in float64; dS may alias dP (same lane, same s).
__global__ static void k_softmax_causal_backward(float *dS, const float *dP, const float *P, int rows, int T,
                                                 float scale) {
    int lane = threadIdx.x & 31, r = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    int t = r % T;
    const float *p = P + (size_t)r * T, *dp = dP + (size_t)r * T;
    float *ds = dS + (size_t)r * T;
    double d = 0;
    for (int j = lane; j <= t; j += 32) d += (double)p[j] * dp[j];
    float df = (float)warp_sum_d(d);
    for (int j = lane; j < T; j += 32) ds[j] = j <= t ? scale * p[j] * (dp[j] - df) : 0.0f;
}

infl_status cu_softmax_causal_backward(infl_ctx *ctx, float *dS, const float *dP, const float *P, int count, int T,
                                       float scale) {
    RETURN_IF(ctx, count < 0 || T < 0, INFL_E_ARG, "softmax_causal_backward: bad size (count %d, T %d)", count, T);
    FORWARD_IF_ERROR(cu_enter(ctx));
    int64_t rows = (int64_t)count * T;
    if (rows == 0) return INFL_OK;
    RETURN_IF(ctx, rows > INT32_MAX - ROW_WARPS, INFL_E_ARG, "softmax_causal_backward: %lld rows", (long long)rows);
    CU_LAUNCH(ctx, k_softmax_causal_backward, (unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS), 32 * ROW_WARPS, 0, dS,
              dP, P, (int)rows, T, scale);
    return INFL_OK;
}

// ---- embeddings ----

// out (B·T, C), row i = wte[tok[i]] + wpe[i mod T]
__global__ static void k_embed_forward(float *out, const int32_t *tok, const float *wte, const float *wpe, int N,
                                       int T, int C) {
    size_t n = (size_t)N * C;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / C, c = t % C;
        out[t] = wte[(size_t)tok[i] * C + c] + wpe[(i % T) * C + c];
    }
}

infl_status cu_embed_forward(infl_ctx *ctx, float *out, const int32_t *tok, const float *wte, const float *wpe,
                             int B, int T, int C) {
    RETURN_IF(ctx, B < 0 || T < 0 || C < 0, INFL_E_ARG, "embed_forward: bad size (B %d, T %d, C %d)", B, T, C);
    FORWARD_IF_ERROR(cu_enter(ctx));
    size_t n = (size_t)B * T * C;
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_embed_forward, cu_grid(n), CU_THREADS, 0, out, tok, wte, wpe, B * T, T, C);
    return INFL_OK;
}

// dwpe (T, C): thread (t, c) adds dout[b·T + t, c] for b = 0, 1, ... in order, the
// order of the CPU twin's walk over the tokens (the same float additions: same bits).
__global__ static void k_embed_backward_wpe(float *dwpe, const float *dout, int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t u = blockIdx.x * (size_t)blockDim.x + threadIdx.x; u < n; u += (size_t)gridDim.x * blockDim.x) {
        float acc = dwpe[u];
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * n + u];
        dwpe[u] = acc;
    }
}

// dwte: tokens repeat, so rows collide. Thread (c, g) owns column c of the vocabulary
// rows v with v mod EMB_GROUPS = g and walks all the tokens in order, adding the rows
// of its own tokens: every (v, c) has one owner that adds in token order (the CPU
// twin's order: same bits, on every run), with C · EMB_GROUPS threads at work. The
// lanes of a warp share g (they take adjacent columns), so the branch is uniform and
// tok[i] is one broadcast load. A negative token matches no group and is skipped.
#define EMB_GROUPS 32
#define EMB_GY 8
__global__ static void k_embed_backward_wte(float *dwte, const float *dout, const int32_t *tok, int N, int C) {
    int c = blockIdx.x * 32 + threadIdx.x, g = blockIdx.y * EMB_GY + threadIdx.y;
    if (c >= C) return;
    for (int i = 0; i < N; i++) {
        int v = tok[i];
        if (v >= 0 && v % EMB_GROUPS == g) dwte[(size_t)v * C + c] += dout[(size_t)i * C + c];
    }
}

infl_status cu_embed_backward(infl_ctx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tok, int B,
                              int T, int C) {
    RETURN_IF(ctx, B < 0 || T < 0 || C < 0, INFL_E_ARG, "embed_backward: bad size (B %d, T %d, C %d)", B, T, C);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if ((size_t)B * T * C == 0) return INFL_OK;
    if (dwpe) CU_LAUNCH(ctx, k_embed_backward_wpe, cu_grid((size_t)T * C), CU_THREADS, 0, dwpe, dout, B, T, C);
    if (dwte) {
        dim3 grid((C + 31) / 32, EMB_GROUPS / EMB_GY), block(32, EMB_GY);
        CU_LAUNCH(ctx, k_embed_backward_wte, grid, block, 0, dwte, dout, tok, B * T, C);
    }
    return INFL_OK;
}

// ---- softmax cross-entropy over a vocabulary ----

// One block per row i of logits (N, V): the block finds the largest logit and the
// float64 sum of exp(z − max) by block reductions, then writes loss and
// dlogits = scale (softmax − onehot). z[y] is read by every thread before the first
// barrier, so before any write: dlogits may alias logits. y < 0: loss 0, dlogits 0.
// y >= V (a caller's bug): loss NaN and dlogits NaN, nothing read out of the row.
#define XE_THREADS 256
__global__ static void k_xent(float *loss, float *dlogits, const float *logits, const int32_t *y, int V,
                              float scale) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int i = blockIdx.x, yi = y[i];
    const float *z = logits + (size_t)i * V;
    float *g = dlogits ? dlogits + (size_t)i * V : NULL;
    if (yi < 0 || yi >= V) {  // the whole block takes this branch
        float f = yi < 0 ? 0.0f : __int_as_float(0x7fc00000);  // 0, or a quiet NaN
        if (loss && threadIdx.x == 0) loss[i] = f;
        if (g)
            for (int j = threadIdx.x; j < V; j += blockDim.x) g[j] = f;
        return;
    }
    float zy = z[yi];
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j]);
    mx = block_max_f(mx, shf);
    double s = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] - mx);
    double lse = mx + log(block_sum_d(s, shd));
    if (loss && threadIdx.x == 0) loss[i] = (float)(lse - zy);
    if (g) {
        float lsef = (float)lse;
        for (int j = threadIdx.x; j < V; j += blockDim.x) g[j] = scale * (expf(z[j] - lsef) - (j == yi ? 1.0f : 0.0f));
    }
}

infl_status cu_xent(infl_ctx *ctx, float *loss, float *dlogits, const float *logits, const int32_t *y, int N, int V,
                    float scale) {
    RETURN_IF(ctx, N < 0 || V < 1, INFL_E_ARG, "xent: bad size (N %d, V %d)", N, V);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (N == 0 || (!loss && !dlogits)) return INFL_OK;
    CU_LAUNCH(ctx, k_xent, N, XE_THREADS, 0, loss, dlogits, logits, y, V, scale);
    return INFL_OK;
}

// ---- AdamW ----

// c1 = 1 − β1^t and c2 = 1 − β2^t, computed on the host as the CPU twin does.
__global__ static void k_adamw_step(float *w, float *m, float *v, const float *g, size_t n, float lr, float beta1,
                                    float beta2, float eps, float wd, float c1, float c2, float gscale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i] * gscale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / c1, vhat = vi / c2;
        w[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[i]);
    }
}

infl_status cu_adamw_step(infl_ctx *ctx, float *w, float *m, float *v, const float *g, size_t n, float lr,
                          float beta1, float beta2, float eps, float wd, int t, float gscale) {
    RETURN_IF(ctx, t < 1, INFL_E_ARG, "adamw_step: step %d (steps count from 1)", t);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    float c1 = (float)(1.0 - pow((double)beta1, t)), c2 = (float)(1.0 - pow((double)beta2, t));
    CU_LAUNCH(ctx, k_adamw_step, cu_grid(n), CU_THREADS, 0, w, m, v, g, n, lr, beta1, beta2, eps, wd, c1, c2,
              gscale);
    return INFL_OK;
}

// ---- row gather ----

// out (n, cols), row r = X[idx[r], :]
__global__ static void k_gather_rows(float *out, const float *X, const int32_t *idx, int n, int cols) {
    size_t total = (size_t)n * cols;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t r = t / cols, c = t % cols;
        out[t] = X[(size_t)idx[r] * cols + c];
    }
}

infl_status cu_gather_rows(infl_ctx *ctx, float *out, const float *X, const int32_t *idx, int n, int cols) {
    RETURN_IF(ctx, n < 0 || cols < 0, INFL_E_ARG, "gather_rows: bad size (n %d, cols %d)", n, cols);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if ((size_t)n * cols == 0) return INFL_OK;
    CU_LAUNCH(ctx, k_gather_rows, cu_grid((size_t)n * cols), CU_THREADS, 0, out, X, idx, n, cols);
    return INFL_OK;
}
