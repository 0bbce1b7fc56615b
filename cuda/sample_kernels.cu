/*
 * sample_kernels.cu — labels sampled from the model (true Fisher) on the device: one
 * thread per example calls infl_sample_label_row of core/mathfn.h, the function the
 * CPU twin loops over, keyed by (seed, index0 + i), so CPU and GPU runs draw the same
 * labels. This file is compiled with --fmad=false (cuda/CMakeLists.txt): contracting
 * z + sqrt(..)·cos(..) or the running sums into fused multiply-adds would round
 * differently from the host. What remains is the device's float64 exp/log/cos,
 * within an ulp or two of glibc's: a draw can differ from the CPU's only when a
 * uniform falls within that much of a class boundary (softmax_ce, sigmoid_ce), or
 * when the float64 normal rounds to a different float (mse). Also the blocks of a
 * gradient index's random projections (core/projgen.h), under the same rule.
 */
#include "cuda_internal.h"
#include "core/projgen.h"

__global__ static void k_sample_labels(infl_loss loss, const float *logits, int B, int K, uint64_t seed,
                                       int64_t index0, int32_t *y, float *yf) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    infl_sample_label_row(loss, logits + (size_t)i * K, K, seed, (uint64_t)(index0 + i), y ? y + i : NULL,
                          yf ? yf + (size_t)i * K : NULL);
}

infl_status cu_sample_labels(infl_ctx *ctx, infl_loss loss, const float *logits, int B, int K, uint64_t seed,
                             int64_t index0, int32_t *y, float *yf) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (loss == INFL_LOSS_MSE)
        RETURN_IF(ctx, !yf, INFL_E_ARG, "sample_labels: loss mse needs a buffer for real targets");
    else
        RETURN_IF(ctx, !y, INFL_E_ARG, "sample_labels: loss %s needs a buffer for class labels",
                  infl_loss_name(loss));
    if (B <= 0) return INFL_OK;
    CU_LAUNCH(ctx, k_sample_labels, (B + 127) / 128, 128, 0, loss, logits, B, K, seed, index0, y, yf);
    return INFL_OK;
}

// ---- projections of a gradient index (core/projgen.h) ----

// One thread per entry of out (nc, k): the same infl_proj_entry as the CPU twin.
__global__ static void k_proj_gen(float *out, int kind, uint64_t seed, uint32_t mat, uint64_t c0, int nc, int k,
                                  float scale) {
    size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)nc * k) return;
    int i = (int)(e / (size_t)k), j = (int)(e % (size_t)k);
    out[e] = scale * infl_proj_entry(kind, seed, mat, c0 + (uint64_t)i, (uint32_t)j);
}

infl_status cu_proj_gen(infl_ctx *ctx, float *out, int kind, uint64_t seed, uint32_t mat, uint64_t c0, int nc, int k,
                        float scale) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    size_t n = (size_t)nc * k;
    if (n == 0) return INFL_OK;
    CU_LAUNCH(ctx, k_proj_gen, (unsigned)((n + 255) / 256), 256, 0, out, kind, seed, mat, c0, nc, k, scale);
    return INFL_OK;
}
