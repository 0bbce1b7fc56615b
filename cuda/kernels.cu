/*
 * kernels.cu — the CUDA kernels of the elementwise, reduction and loss primitives of
 * host/backend.h, with their launch glue. Each is the twin of the function of the same
 * name in host/cpu/cpu_backend.c and calls the same INFL_HD scalar math
 * (core/mathfn.h), so both backends compute the same formulas. Reductions accumulate
 * in float64 in a fixed order (no atomics), so results do not change from run to run.
 */
#include <limits.h>

#include "cuda_internal.h"

// ---- fill, scale ----

__global__ static void k_fill(float *x, float v, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}

cudaError_t cu_probe_kernels(void) {
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, k_fill);
    if (e != cudaSuccess) (void)cudaGetLastError();
    return e;
}

infl_status cu_fill(infl_ctx *ctx, float *x, float v, size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_fill, cu_grid(n), CU_THREADS, 0, x, v, n);
    return INFL_OK;
}

// C (rows, cols; leading dimension ldc) = beta C, without reading C when beta is 0
// (sgemm with k = 0).
__global__ static void k_scale_2d(float *C, int ldc, int rows, int cols, float beta) {
    size_t n = (size_t)rows * cols;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / cols, j = t % cols;
        float *c = C + i * ldc + j;
        *c = beta == 0.0f ? 0.0f : beta * *c;
    }
}

infl_status cu_scale_2d(infl_ctx *ctx, float *C, int ldc, int rows, int cols, float beta) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (rows <= 0 || cols <= 0 || beta == 1.0f) return INFL_OK;
    CU_LAUNCH(ctx, k_scale_2d, cu_grid((size_t)rows * cols), CU_THREADS, 0, C, ldc, rows, cols, beta);
    return INFL_OK;
}

// ---- row/column operations ----

// Z (rows, cols): Z[i, :] += b
__global__ static void k_add_row(float *Z, const float *b, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x)
        Z[t] += b[t % cols];
}

infl_status cu_add_row(infl_ctx *ctx, float *Z, const float *b, int rows, int cols) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (rows <= 0 || cols <= 0) return INFL_OK;
    CU_LAUNCH(ctx, k_add_row, cu_grid((size_t)rows * cols), CU_THREADS, 0, Z, b, rows, cols);
    return INFL_OK;
}

// out (cols) = alpha Σ_i X[i, :] + beta out; X is (rows, cols). A block of (32, 16)
// threads owns 32 columns: thread (x, y) sums rows y, y+16, ... of column x in
// float64 (a warp reads 32 adjacent floats of a row), then the 16 partial sums of a
// column are added in a fixed tree order.
#define CS_X 32
#define CS_Y 16
__global__ static void k_col_sum(float *out, const float *X, int rows, int cols, float alpha, float beta) {
    __shared__ double part[CS_Y][CS_X + 1];
    int j = blockIdx.x * CS_X + threadIdx.x;
    double s = 0;
    if (j < cols)
        for (int i = threadIdx.y; i < rows; i += CS_Y) s += X[(size_t)i * cols + j];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    for (int h = CS_Y / 2; h > 0; h /= 2) {
        if ((int)threadIdx.y < h) part[threadIdx.y][threadIdx.x] += part[threadIdx.y + h][threadIdx.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && j < cols)
        out[j] = (float)(alpha * part[0][threadIdx.x] + (beta == 0.0f ? 0.0 : (double)beta * out[j]));
}

infl_status cu_col_sum(infl_ctx *ctx, float *out, const float *X, int rows, int cols, float alpha, float beta) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (cols <= 0) return INFL_OK;
    dim3 block(CS_X, CS_Y);
    CU_LAUNCH(ctx, k_col_sum, (cols + CS_X - 1) / CS_X, block, 0, out, X, rows < 0 ? 0 : rows, cols, alpha, beta);
    return INFL_OK;
}

// ---- activations ----

__global__ static void k_act_forward(infl_activation act, float *A, const float *Z, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        A[i] = infl_act_f(act, Z[i]);
}

__global__ static void k_act_backward(infl_activation act, float *dZ, const float *dA, const float *Z, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dZ[i] = dA[i] * infl_act_df(act, Z[i]);
}

__global__ static void k_act_second(infl_activation act, float *out, const float *x, const float *Z, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = x[i] * infl_act_d2f(act, Z[i]);
}

infl_status cu_act_forward(infl_ctx *ctx, infl_activation act, float *A, const float *Z, size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_act_forward, cu_grid(n), CU_THREADS, 0, act, A, Z, n);
    return INFL_OK;
}

infl_status cu_act_backward(infl_ctx *ctx, infl_activation act, float *dZ, const float *dA, const float *Z,
                            size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_act_backward, cu_grid(n), CU_THREADS, 0, act, dZ, dA, Z, n);
    return INFL_OK;
}

infl_status cu_act_second(infl_ctx *ctx, infl_activation act, float *out, const float *x, const float *Z,
                          size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_act_second, cu_grid(n), CU_THREADS, 0, act, out, x, Z, n);
    return INFL_OK;
}

// ---- losses ----

// One thread per example (K, the number of outputs, is small). Labels are the
// caller's to check on the host (backend.h): a label out of range is not used to index
// anything; its row gets a NaN loss, NaN dlogits and correct 0, so the bug shows in
// the results without a read-back of the labels (no host synchronisation).
__global__ static void k_loss_grad(infl_loss loss, const float *logits, const int32_t *y, const float *yf, int B,
                                   int K, float *loss_out, float *dlogits, int32_t *correct) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    float *g = dlogits ? dlogits + (size_t)i * K : NULL;
    if (loss != INFL_LOSS_MSE) {
        int hi = loss == INFL_LOSS_SIGMOID_CE ? 2 : K;
        if (y[i] < 0 || y[i] >= hi) {
            float nan = __int_as_float(0x7fc00000);
            if (loss_out) loss_out[i] = nan;
            if (g)
                for (int j = 0; j < K; j++) g[j] = nan;
            if (correct) correct[i] = 0;
            return;
        }
    }
    const float *z = logits + (size_t)i * K;
    double l = 0;
    int ok = 0;
    switch (loss) {
    case INFL_LOSS_SOFTMAX_CE: l = infl_softmax_ce_row(z, y[i], K, g, &ok); break;
    case INFL_LOSS_SIGMOID_CE: l = infl_sigmoid_ce_row(z[0], y[i], g, &ok); break;
    case INFL_LOSS_MSE: l = infl_mse_row(z, yf + (size_t)i * K, K, g); break;
    }
    if (loss_out) loss_out[i] = (float)l;
    if (correct) correct[i] = ok;
}

infl_status cu_loss_grad(infl_ctx *ctx, infl_loss loss, const float *logits, const int32_t *y, const float *yf,
                         int B, int K, float *loss_out, float *dlogits, int32_t *correct) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (loss != INFL_LOSS_MSE)
        RETURN_IF(ctx, !y, INFL_E_ARG, "loss %s needs class labels", infl_loss_name(loss));
    else
        RETURN_IF(ctx, !yf, INFL_E_ARG, "loss mse needs real targets");
    if (B <= 0) return INFL_OK;
    CU_LAUNCH(ctx, k_loss_grad, (B + 127) / 128, 128, 0, loss, logits, y, yf, B, K, loss_out, dlogits, correct);
    return INFL_OK;
}

__global__ static void k_loss_hvp(infl_loss loss, const float *logits, const float *R, int B, int K, float *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    infl_loss_hvp_row(loss, logits + (size_t)i * K, R + (size_t)i * K, K, out + (size_t)i * K);
}

infl_status cu_loss_hvp(infl_ctx *ctx, infl_loss loss, const float *logits, const float *R, int B, int K,
                        float *out) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (B <= 0 || K <= 0) return INFL_OK;
    CU_LAUNCH(ctx, k_loss_hvp, (B + 127) / 128, 128, 0, loss, logits, R, B, K, out);
    return INFL_OK;
}

// ---- vector updates ----

__global__ static void k_axpby(float *y, const float *x, float a, float b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = a * x[i] + (b == 0.0f ? 0.0f : b * y[i]);
}

infl_status cu_axpby(infl_ctx *ctx, float *y, const float *x, float a, float b, size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_axpby, cu_grid(n), CU_THREADS, 0, y, x, a, b, n);
    return INFL_OK;
}

// v = mu v + (g + wd w); w -= lr v
__global__ static void k_sgd_step(float *w, float *v, const float *g, float lr, float mu, float wd, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float vi = mu * v[i] + (g[i] + wd * w[i]);
        v[i] = vi;
        w[i] -= lr * vi;
    }
}

infl_status cu_sgd_step(infl_ctx *ctx, float *w, float *v, const float *g, float lr, float mu, float wd,
                        size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_sgd_step, cu_grid(n), CU_THREADS, 0, w, v, g, lr, mu, wd, n);
    return INFL_OK;
}

// ---- dot: two passes, float64, fixed order ----

// Block sum of one double per thread (blockDim.x a power of two, <= 1024).
__device__ static double block_sum(double s, double *sh) {
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if ((int)threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
        __syncthreads();
    }
    return sh[0];
}

// partial[b] = Σ x_i y_i over the grid-stride share of block b
__global__ static void k_dot_partial(const float *x, const float *y, size_t n, double *partial) {
    __shared__ double sh[CU_THREADS];
    double s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * y[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// partial[CU_DOT_BLOCKS] = Σ partial[0 .. nb)
__global__ static void k_dot_final(double *partial, int nb) {
    __shared__ double sh[1024];
    double s = 0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) s += partial[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) partial[CU_DOT_BLOCKS] = s;
}

infl_status cu_dot(infl_ctx *ctx, const float *x, const float *y, size_t n, double *out) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    if (!n) {
        *out = 0;
        return INFL_OK;
    }
    size_t g = (n + CU_THREADS - 1) / CU_THREADS;
    int nb = (int)(g < CU_DOT_BLOCKS ? g : CU_DOT_BLOCKS);
    CU_LAUNCH(ctx, k_dot_partial, nb, CU_THREADS, 0, x, y, n, c->d_partial);
    CU_LAUNCH(ctx, k_dot_final, 1, 1024, 0, c->d_partial, nb);
    double *h = (double *)c->h_pinned;
    CU_CHECK(ctx, cudaMemcpyAsync(h, c->d_partial + CU_DOT_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost,
                                  c->stream));
    CU_CHECK(ctx, cudaStreamSynchronize(c->stream));
    *out = h[0];
    return INFL_OK;
}

// ---- second-order and attribution primitives ----

__global__ static void k_mul(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] * b[i];
}

infl_status cu_mul(infl_ctx *ctx, float *out, const float *a, const float *b, size_t n) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (!n) return INFL_OK;
    CU_LAUNCH(ctx, k_mul, cu_grid(n), CU_THREADS, 0, out, a, b, n);
    return INFL_OK;
}

// out (n) = alpha · rowwise A·B + beta out; A, B (n, w). One warp per row, float64.
#define RD_WARPS 8
__global__ static void k_row_dot(float *out, const float *A, const float *B, int n, int w, float alpha, float beta) {
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * RD_WARPS + (threadIdx.x >> 5);
    if (i >= n) return;  // whole warps leave together: i is uniform in a warp
    const float *a = A + (size_t)i * w, *b = B + (size_t)i * w;
    double s = 0;
    for (int j = lane; j < w; j += 32) s += (double)a[j] * b[j];
    for (int off = 16; off > 0; off /= 2) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) out[i] = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * out[i]));
}

infl_status cu_row_dot(infl_ctx *ctx, float *out, const float *A, const float *B, int n, int w, float alpha,
                       float beta) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (n <= 0) return INFL_OK;
    CU_LAUNCH(ctx, k_row_dot, (n + RD_WARPS - 1) / RD_WARPS, 32 * RD_WARPS, 0, out, A, B, n, w < 0 ? 0 : w, alpha,
              beta);
    return INFL_OK;
}

// G (b, dout·(din+1)), row i = [δ_i ⊗ a_i, δ_i]; Delta (b, dout), A (b, din)
__global__ static void k_outer_rows(float *G, const float *Delta, const float *A, int b, int dout, int din) {
    size_t row = (size_t)dout * (din + 1), n = (size_t)b * row, wpart = (size_t)dout * din;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / row, r = t % row;
        const float *d = Delta + i * dout;
        G[t] = r < wpart ? d[r / din] * A[i * din + r % din] : d[r - wpart];
    }
}

infl_status cu_outer_rows(infl_ctx *ctx, float *G, const float *Delta, const float *A, int b, int dout, int din) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (b <= 0 || dout <= 0 || din < 0) return INFL_OK;
    CU_LAUNCH(ctx, k_outer_rows, cu_grid((size_t)b * dout * (din + 1)), CU_THREADS, 0, G, Delta, A, b, dout, din);
    return INFL_OK;
}
