/*
 * backend.cu — the CUDA backend's table (infl_cuda_backend) and the primitives that
 * are calls into the CUDA runtime, cuBLAS and cuSOLVER rather than kernels of ours:
 * lifecycle (device, streams, handles), memory (the caching pool of pool.cu),
 * copies, sgemm, sgemm_batched and syevd. The kernels are in kernels.cu, nn_kernels.cu
 * and sample_kernels.cu.
 *
 * Precision of sgemm: FP32 by default (cuBLAS CUBLAS_DEFAULT_MATH: no tensor-core
 * down-conversion of float inputs). The environment variable INFL_PRECISION, read
 * when the context is created, selects another mode:
 *   INFL_PRECISION=fp32      the default;
 *   INFL_PRECISION=tf32      CUBLAS_TF32_TENSOR_OP_MATH: inputs rounded to TF32
 *                            (10-bit mantissa) on the tensor cores, float accumulate;
 *                            several times faster on A100/H100, relative errors
 *                            ~1e-3, outside the 1e-4 parity of the tests;
 *   INFL_PRECISION=pedantic  CUBLAS_PEDANTIC_MATH: strictly IEEE FP32 algorithms.
 * The mode chosen is named in the backend description (infl_ctx_backend).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

// ---- error translation ----

static infl_status cu_status_of(cudaError_t e) {
    return e == cudaErrorMemoryAllocation ? INFL_E_NOMEM : INFL_E_BACKEND;
}

infl_status cu_fail_rt(infl_ctx *ctx, cudaError_t e, const char *call, const char *file, int line) {
    return infl_seterr(ctx, cu_status_of(e), "CUDA: %s failed: %s (%s) at %s:%d", call, cudaGetErrorString(e),
                       cudaGetErrorName(e), file, line);
}

infl_status cu_fail_blas(infl_ctx *ctx, cublasStatus_t e, const char *call, const char *file, int line) {
    return infl_seterr(ctx, e == CUBLAS_STATUS_ALLOC_FAILED ? INFL_E_NOMEM : INFL_E_BACKEND,
                       "cuBLAS: %s failed: %s (%s) at %s:%d", call, cublasGetStatusString(e), cublasGetStatusName(e),
                       file, line);
}

static const char *cusolver_name(cusolverStatus_t e) {
    switch (e) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "unknown cuSOLVER status";
    }
}

infl_status cu_fail_solver(infl_ctx *ctx, cusolverStatus_t e, const char *call, const char *file, int line) {
    return infl_seterr(ctx, e == CUSOLVER_STATUS_ALLOC_FAILED ? INFL_E_NOMEM : INFL_E_BACKEND,
                       "cuSOLVER: %s failed: %s (%d) at %s:%d", call, cusolver_name(e), (int)e, file, line);
}

infl_status cu_enter(infl_ctx *ctx) {
    cu_ctx *c = cu_of(ctx);
    int d = -1;
    CU_CHECK(ctx, cudaGetDevice(&d));
    if (d != c->dev) CU_CHECK(ctx, cudaSetDevice(c->dev));
    return INFL_OK;
}

// ---- lifecycle ----

static void cu_shutdown(void *be) {
    cu_ctx *c = (cu_ctx *)be;
    if (!c) return;
    // Errors cannot be reported from here; each step is attempted regardless.
    if (cudaSetDevice(c->dev) != cudaSuccess) (void)cudaGetLastError();
    if (c->stream && cudaStreamSynchronize(c->stream) != cudaSuccess) (void)cudaGetLastError();
    if (c->copy_stream && cudaStreamSynchronize(c->copy_stream) != cudaSuccess) (void)cudaGetLastError();
    for (int s = 0; s < INFL_UPLOAD_SLOTS; s++)
        if (c->ev_up[s]) cudaEventDestroy(c->ev_up[s]);
    if (c->ev_compute) cudaEventDestroy(c->ev_compute);
    if (c->solver) cusolverDnDestroy(c->solver);
    if (c->blas) cublasDestroy(c->blas);
    cu_pool_destroy(&c->pool);
    // (each failure is cleared at the end: shutdown cannot report)
    if (c->d_partial) (void)cudaFree(c->d_partial);
    if (c->d_flag) (void)cudaFree(c->d_flag);
    if (c->h_pinned) (void)cudaFreeHost(c->h_pinned);
    if (c->copy_stream) cudaStreamDestroy(c->copy_stream);
    if (c->stream) cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c);
}

// Parses the device number of "cuda:N"; "" is device 0.
static infl_status parse_device(infl_ctx *ctx, const char *spec, int *dev) {
    *dev = 0;
    if (!spec || !*spec) return INFL_OK;
    char *end = NULL;
    long v = strtol(spec, &end, 10);
    RETURN_IF(ctx, end == spec || *end || v < 0 || v > 1023, INFL_E_ARG,
              "backend cuda:%s: expected a device number (cuda:0, cuda:1, ...)", spec);
    *dev = (int)v;
    return INFL_OK;
}

// INFL_PRECISION (see the top of this file): 0 fp32, 1 tf32, 2 pedantic.
static infl_status parse_precision(infl_ctx *ctx, int *mode) {
    const char *p = getenv("INFL_PRECISION");
    *mode = 0;
    if (!p || !*p || strcmp(p, "fp32") == 0) return INFL_OK;
    if (strcmp(p, "tf32") == 0) {
        *mode = 1;
        return INFL_OK;
    }
    if (strcmp(p, "pedantic") == 0) {
        *mode = 2;
        return INFL_OK;
    }
    return infl_seterr(ctx, INFL_E_ARG, "INFL_PRECISION=%s: expected fp32, tf32 or pedantic", p);
}

// Why the device query failed, in a few words (the one line of `auto`, host/backend.c).
static const char *short_reason(cudaError_t e) {
    switch (e) {
    case cudaErrorInsufficientDriver: return "driver older than the runtime";
    case cudaErrorNoDevice: return "no GPU visible";
    case cudaErrorInitializationError: return "the driver did not initialise";
    case cudaErrorSystemDriverMismatch: return "driver and kernel module of different versions";
    case cudaErrorDevicesUnavailable: return "the GPUs are busy or prohibited";
    default: return cudaGetErrorName(e);
    }
}

// The architectures this build has kernels for ("80,90" from CMake) as "sm_80, sm_90".
static void compiled_archs(char *out, size_t size) {
    const char *a = INFL_CUDA_ARCHS;
    size_t at = 0;
    out[0] = 0;
    while (*a && at + 8 < size) {
        size_t n = strcspn(a, ",");
        at += (size_t)snprintf(out + at, size - at, "%ssm_%.*s", at ? ", " : "", (int)n, a);
        a += n + (a[n] == ',');
    }
}

// Every failure of init says first, in the words before its first ':', that there is
// no usable device and why in brief ("no usable CUDA device (driver older than the
// runtime)"); the details follow. `auto` shows the brief part and goes on on the CPU.
static infl_status cu_init(infl_ctx *ctx, const char *spec, int threads, void **be, char *desc, size_t desc_size) {
    (void)threads;  // host threads are the CPU backend's business
    int dev, mode, count = 0;
    FORWARD_IF_ERROR(parse_device(ctx, spec, &dev));
    FORWARD_IF_ERROR(parse_precision(ctx, &mode));
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return infl_seterr(ctx, INFL_E_BACKEND, "no usable CUDA device (%s): cudaGetDeviceCount: %s (%s)%s",
                           short_reason(e), cudaGetErrorString(e), cudaGetErrorName(e),
                           e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                               ? "; is the NVIDIA driver installed and a GPU visible (CUDA_VISIBLE_DEVICES)?"
                               : "");
    }
    RETURN_IF(ctx, count == 0, INFL_E_BACKEND, "no usable CUDA device (no GPU visible): cudaGetDeviceCount reports 0");
    RETURN_IF(ctx, dev >= count, INFL_E_BACKEND,
              "backend cuda:%d: no such device; this machine has %d CUDA device%s (cuda:0%s%.0d)", dev, count,
              count == 1 ? "" : "s", count > 1 ? " to cuda:" : "", count > 1 ? count - 1 : 0);

    cu_ctx *c = (cu_ctx *)calloc(1, sizeof *c);
    RETURN_IF(ctx, !c, INFL_E_NOMEM, "out of memory creating the CUDA backend");
    c->dev = dev;
    c->tf32 = mode;
    cu_pool_init(&c->pool);
    infl_status rc = INFL_OK;
    cudaDeviceProp prop;
    int drv = 0, rt = 0;
    CU_GOTO(ctx, cudaSetDevice(dev));
    CU_GOTO(ctx, cudaGetDeviceProperties(&prop, dev));
    {
        // kernels for this device's architecture (or PTX it can compile) in this build?
        cudaError_t k = cu_probe_kernels();
        if (k != cudaSuccess) {
            char archs[128];
            compiled_archs(archs, sizeof archs);
            rc = infl_seterr(ctx, INFL_E_BACKEND,
                             "no usable CUDA device (%s is sm_%d%d, this build has kernels for %s): %s (%s); rebuild "
                             "with -DCMAKE_CUDA_ARCHITECTURES=%d%d",
                             prop.name, prop.major, prop.minor, archs, cudaGetErrorString(k), cudaGetErrorName(k),
                             prop.major, prop.minor);
            goto done;
        }
    }
    CU_GOTO(ctx, cudaDriverGetVersion(&drv));
    CU_GOTO(ctx, cudaRuntimeGetVersion(&rt));
    c->sm_count = prop.multiProcessorCount;
    CU_GOTO(ctx, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CU_GOTO(ctx, cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    for (int s = 0; s < INFL_UPLOAD_SLOTS; s++)
        CU_GOTO(ctx, cudaEventCreateWithFlags(&c->ev_up[s], cudaEventDisableTiming));
    CU_GOTO(ctx, cudaEventCreateWithFlags(&c->ev_compute, cudaEventDisableTiming));
    CU_GOTO(ctx, cudaMalloc((void **)&c->d_partial, (CU_DOT_BLOCKS + 1) * sizeof(double)));
    CU_GOTO(ctx, cudaMalloc((void **)&c->d_flag, 4 * sizeof(int)));
    CU_GOTO(ctx, cudaMallocHost(&c->h_pinned, 64));
    {
        cublasStatus_t s = cublasCreate(&c->blas);
        if (s != CUBLAS_STATUS_SUCCESS) {
            c->blas = NULL;
            rc = cu_fail_blas(ctx, s, "cublasCreate(&c->blas)", __FILE__, __LINE__);
            goto done;
        }
        cublasMath_t math = mode == 1 ? CUBLAS_TF32_TENSOR_OP_MATH : mode == 2 ? CUBLAS_PEDANTIC_MATH
                                                                                : CUBLAS_DEFAULT_MATH;
        const char *what[2] = {"cublasSetStream(c->blas, c->stream)", "cublasSetMathMode(c->blas, math)"};
        cublasStatus_t r[2] = {cublasSetStream(c->blas, c->stream), cublasSetMathMode(c->blas, math)};
        for (int i = 0; i < 2; i++)
            if (r[i] != CUBLAS_STATUS_SUCCESS) {
                rc = cu_fail_blas(ctx, r[i], what[i], __FILE__, __LINE__);
                goto done;
            }
    }
    {
        cusolverStatus_t s = cusolverDnCreate(&c->solver);
        if (s != CUSOLVER_STATUS_SUCCESS) c->solver = NULL;
        CUSOLVER_GOTO(ctx, s);
        CUSOLVER_GOTO(ctx, cusolverDnSetStream(c->solver, c->stream));
    }
    snprintf(desc, desc_size, "cuda:%d (%s, sm_%d%d, %d SMs, %.1f GiB; driver %d.%d, runtime %d.%d; %s GEMM)", dev,
             prop.name, prop.major, prop.minor, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), drv / 1000, drv % 1000 / 10, rt / 1000,
             rt % 1000 / 10, mode == 1 ? "TF32" : mode == 2 ? "pedantic FP32" : "FP32");
    *be = c;
    return INFL_OK;
done:
    if (strncmp(ctx->detail, "no usable CUDA device", 21) != 0)
        infl_errprefix(ctx, "no usable CUDA device (setting it up failed)");
    cu_shutdown(c);
    return rc;
}

// ---- memory and copies ----

static infl_status cu_alloc(infl_ctx *ctx, size_t bytes, void **ptr) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    return cu_pool_alloc(ctx, &cu_of(ctx)->pool, bytes, ptr);
}

// Before the block goes back to the pool (and to later compute-stream work), the
// compute stream waits for overlapped uploads still writing into it.
static void cu_release(infl_ctx *ctx, void *ptr) {
    if (!ptr) return;
    cu_ctx *c = cu_of(ctx);
    size_t bytes = 0;
    for (int s = 0; s < INFL_UPLOAD_SLOTS; s++) {
        if (!c->n_pending[s]) continue;
        if (!bytes) bytes = cu_pool_block_bytes(&c->pool, ptr);
        uintptr_t lo = (uintptr_t)ptr, hi = lo + bytes;
        int hit = c->n_pending[s] > CU_UPLOAD_RANGES;
        for (int i = 0; i < c->n_pending[s] && i < CU_UPLOAD_RANGES && !hit; i++)
            hit = c->pending[s][i].lo < hi && lo < c->pending[s][i].hi;
        if (!hit) continue;
        // The compute stream (the pool's next user of the block) waits for the upload.
        // When it cannot be made to, the block is not pooled: cudaFree it after the
        // device's work instead (release cannot report; the failure is cleared).
        if (cudaSetDevice(c->dev) != cudaSuccess || cudaStreamWaitEvent(c->stream, c->ev_up[s], 0) != cudaSuccess) {
            (void)cudaGetLastError();
            cu_pool_discard(&c->pool, ptr);
            return;
        }
        c->n_pending[s] = 0;
    }
    cu_pool_release(&c->pool, ptr);
}

// ---- the scheduler's host memory and overlapped uploads ----

// Page-locked host memory, so that copies from it are DMA without staging and can run
// asynchronously. When the driver has none to give (pinned memory is a limited
// resource), ordinary memory serves instead: uploads from it are correct, only slower.
static infl_status cu_host_alloc(infl_ctx *ctx, size_t bytes, void **p) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (!rounded) rounded = 64;
    cudaError_t e = cudaHostAlloc(p, rounded, cudaHostAllocPortable);
    if (e == cudaSuccess) return INFL_OK;
    (void)cudaGetLastError();
    *p = aligned_alloc(64, rounded);
    RETURN_IF(ctx, !*p, INFL_E_NOMEM, "out of host memory allocating %zu bytes (pinned: %s)", bytes,
              cudaGetErrorString(e));
    return INFL_OK;
}

// Waits for the copy stream (an overlapped upload may still read p), then frees p
// by whichever allocator made it.
static void cu_host_free(infl_ctx *ctx, void *p) {
    if (!p) return;
    cu_ctx *c = cu_of(ctx);
    if (cudaSetDevice(c->dev) != cudaSuccess || cudaStreamSynchronize(c->copy_stream) != cudaSuccess)
        (void)cudaGetLastError();
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, p) == cudaSuccess && at.type == cudaMemoryTypeHost) {
        if (cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
    } else {
        (void)cudaGetLastError();
        free(p);
    }
}

// On the copy stream, after everything issued so far on the compute stream (which may
// still read dst); the slot's event marks its end. dst is remembered until the
// compute stream waits for the slot (cu_wait_upload), for cu_release.
static infl_status cu_upload_async(infl_ctx *ctx, void *dst, const void *host_src, size_t bytes, int slot) {
    RETURN_IF(ctx, slot < 0 || slot >= INFL_UPLOAD_SLOTS, INFL_E_ARG, "upload_async: slot %d is not in 0..%d", slot,
              INFL_UPLOAD_SLOTS - 1);
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    if (!bytes) return INFL_OK;
    CU_CHECK(ctx, cudaEventRecord(c->ev_compute, c->stream));
    CU_CHECK(ctx, cudaStreamWaitEvent(c->copy_stream, c->ev_compute, 0));
    CU_CHECK(ctx, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->copy_stream));
    CU_CHECK(ctx, cudaEventRecord(c->ev_up[slot], c->copy_stream));
    int n = c->n_pending[slot];
    if (n < CU_UPLOAD_RANGES) c->pending[slot][n] = (cu_range){(uintptr_t)dst, (uintptr_t)dst + bytes};
    c->n_pending[slot] = n + (n <= CU_UPLOAD_RANGES);
    return INFL_OK;
}

// The compute stream waits for the slot's uploads issued so far; the host does not.
static infl_status cu_wait_upload(infl_ctx *ctx, int slot) {
    RETURN_IF(ctx, slot < 0 || slot >= INFL_UPLOAD_SLOTS, INFL_E_ARG, "wait_upload: slot %d is not in 0..%d", slot,
              INFL_UPLOAD_SLOTS - 1);
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    CU_CHECK(ctx, cudaStreamWaitEvent(c->stream, c->ev_up[slot], 0));
    c->n_pending[slot] = 0;
    return INFL_OK;
}

// Returns from the host as the CPU twin does: the source may be reused at once. From
// pageable memory cudaMemcpyAsync returns once the bytes are staged; from pinned
// memory it returns at once, so the stream is synchronised then.
static infl_status cu_upload(infl_ctx *ctx, void *dst, const void *host_src, size_t bytes) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    if (!bytes) return INFL_OK;
    CU_CHECK(ctx, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
    cudaPointerAttributes at;
    CU_CHECK(ctx, cudaPointerGetAttributes(&at, host_src));
    if (at.type == cudaMemoryTypeHost) CU_CHECK(ctx, cudaStreamSynchronize(c->stream));
    return INFL_OK;
}

// Synchronises: on return the bytes are in host_dst and every earlier primitive is done.
static infl_status cu_download(infl_ctx *ctx, void *host_dst, const void *src, size_t bytes) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    if (bytes) CU_CHECK(ctx, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CU_CHECK(ctx, cudaStreamSynchronize(c->stream));
    return INFL_OK;
}

static bool spans_overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + nb && y < x + na;
}

// memmove semantics like the CPU twin: overlapping ranges go through a pool buffer.
static infl_status cu_copy(infl_ctx *ctx, void *dst, const void *src, size_t bytes) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    if (!bytes || dst == src) return INFL_OK;
    if (!spans_overlap(dst, bytes, src, bytes)) {
        CU_CHECK(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
        return INFL_OK;
    }
    void *tmp = NULL;
    FORWARD_IF_ERROR(cu_pool_alloc(ctx, &c->pool, bytes, &tmp));
    cudaError_t e = cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, c->stream);
    if (e == cudaSuccess) e = cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, c->stream);
    cu_pool_release(&c->pool, tmp);  // stream order keeps the reuse of tmp after these copies
    if (e != cudaSuccess) return cu_fail_rt(ctx, e, "cudaMemcpyAsync (overlapping copy)", __FILE__, __LINE__);
    return INFL_OK;
}

// rows × cols floats from src (leading dimension lds) to dst (ldd).
static infl_status cu_copy_2d(infl_ctx *ctx, float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    if (rows <= 0 || cols <= 0) return INFL_OK;
    if (rows == 1) return cu_copy(ctx, dst, src, (size_t)cols * sizeof(float));
    RETURN_IF(ctx, ldd < cols || lds < cols, INFL_E_ARG,
              "copy_2d: leading dimensions (%d, %d) smaller than the %d columns", ldd, lds, cols);
    size_t w = (size_t)cols * sizeof(float);
    size_t dspan = ((size_t)(rows - 1) * ldd + cols) * sizeof(float);
    size_t sspan = ((size_t)(rows - 1) * lds + cols) * sizeof(float);
    if (!spans_overlap(dst, dspan, src, sspan)) {
        CU_CHECK(ctx, cudaMemcpy2DAsync(dst, (size_t)ldd * sizeof(float), src, (size_t)lds * sizeof(float), w,
                                        (size_t)rows, cudaMemcpyDeviceToDevice, c->stream));
        return INFL_OK;
    }
    // Overlapping: through a packed pool buffer (all rows read before any is written).
    void *tmp = NULL;
    FORWARD_IF_ERROR(cu_pool_alloc(ctx, &c->pool, w * rows, &tmp));
    cudaError_t e = cudaMemcpy2DAsync(tmp, w, src, (size_t)lds * sizeof(float), w, (size_t)rows,
                                      cudaMemcpyDeviceToDevice, c->stream);
    if (e == cudaSuccess)
        e = cudaMemcpy2DAsync(dst, (size_t)ldd * sizeof(float), tmp, w, w, (size_t)rows, cudaMemcpyDeviceToDevice,
                              c->stream);
    cu_pool_release(&c->pool, tmp);
    if (e != cudaSuccess) return cu_fail_rt(ctx, e, "cudaMemcpy2DAsync (overlapping copy)", __FILE__, __LINE__);
    return INFL_OK;
}

// ---- BLAS ----

// Row-major C (m, n) = alpha op(A) op(B) + beta C. cuBLAS is column-major, and a
// row-major matrix with leading dimension ld is, read column-major, its transpose
// with the same ld. So compute Cᵀ (n, m) = alpha op(B)ᵀ op(A)ᵀ + beta Cᵀ: swap the
// operands and their sizes, keep each operand's own op flag and leading dimension.
static infl_status cu_sgemm(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha,
                            const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    RETURN_IF(ctx, m < 0 || n < 0 || k < 0, INFL_E_ARG, "sgemm: negative size (%d, %d, %d)", m, n, k);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (m == 0 || n == 0) return INFL_OK;
    if (k == 0) return cu_scale_2d(ctx, C, ldc, m, n, beta);  // C = beta C, as BLAS does
    cu_ctx *c = cu_of(ctx);
    cublasOperation_t opA = ta == INFL_T ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opB = tb == INFL_T ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(ctx, cublasSgemm(c->blas, opB, opA, n, m, k, &alpha, B, ldb, A, lda, &beta, C, ldc));
    return INFL_OK;
}

// Strided-batched: C_i = alpha op(A_i) op(B_i) + beta C_i for i < count, mapped onto
// cuBLAS's column-major as cu_sgemm does (operands and sizes swapped, each keeping its
// own op, leading dimension and stride). The math mode of the handle (INFL_PRECISION:
// FP32 by default, TF32 or pedantic) applies to it as to sgemm. cuBLAS takes at most
// 65535 matrices per call in some versions: larger batches go in pieces.
static infl_status cu_sgemm_batched(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha,
                                    const float *A, int lda, int64_t sA, const float *B, int ldb, int64_t sB,
                                    float beta, float *C, int ldc, int64_t sC, int count) {
    RETURN_IF(ctx, m < 0 || n < 0 || k < 0 || count < 0, INFL_E_ARG,
              "sgemm_batched: negative size (%d, %d, %d) or count %d", m, n, k, count);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (m == 0 || n == 0 || count == 0) return INFL_OK;
    if (k == 0) return cu_scale_batched(ctx, C, ldc, sC, m, n, count, beta);  // C_i = beta C_i, as BLAS does
    cu_ctx *c = cu_of(ctx);
    cublasOperation_t opA = ta == INFL_T ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opB = tb == INFL_T ? CUBLAS_OP_T : CUBLAS_OP_N;
    for (int i0 = 0; i0 < count; i0 += 65535) {
        int cnt = count - i0 < 65535 ? count - i0 : 65535;
        CUBLAS_CHECK(ctx, cublasSgemmStridedBatched(c->blas, opB, opA, n, m, k, &alpha, B + i0 * sB, ldb, sB,
                                                    A + i0 * sA, lda, sA, &beta, C + i0 * sC, ldc, sC, cnt));
    }
    return INFL_OK;
}

// ---- EK-FAC ----

// Symmetric eigendecomposition in float64, in place. A row-major symmetric matrix is
// its own transpose, so it is handed to cuSOLVER as it is (lower triangle, column-
// major): the eigenvectors come back in the columns of the column-major result, i.e.
// the rows of the row-major one, eigenvalues ascending: the layout of the CPU twin's
// LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', ...) on the same buffer.
static infl_status cu_syevd(infl_ctx *ctx, double *A, double *w, int n) {
    RETURN_IF(ctx, n < 0, INFL_E_ARG, "syevd: negative size %d", n);
    FORWARD_IF_ERROR(cu_enter(ctx));
    if (n == 0) return INFL_OK;
    cu_ctx *c = cu_of(ctx);
    int lwork = 0;
    infl_status rc = INFL_OK;
    double *work = NULL;
    int *h = (int *)c->h_pinned;
    CUSOLVER_CHECK(ctx, cusolverDnDsyevd_bufferSize(c->solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                                    A, n, w, &lwork));
    rc = cu_pool_alloc(ctx, &c->pool, (size_t)(lwork > 0 ? lwork : 1) * sizeof(double), (void **)&work);
    if (rc < 0) {
        infl_errprefix(ctx, "workspace of the %d x %d eigendecomposition", n, n);
        return rc;
    }
    CUSOLVER_GOTO(ctx, cusolverDnDsyevd(c->solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, A, n, w,
                                        work, lwork, c->d_flag + 1));
    CU_GOTO(ctx, cudaMemcpyAsync(h + 1, c->d_flag + 1, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    CU_GOTO(ctx, cudaStreamSynchronize(c->stream));
    GOTO_IF(ctx, h[1] < 0, INFL_E_INTERNAL, "cusolverDnDsyevd: argument %d is invalid", -h[1]);
    GOTO_IF(ctx, h[1] > 0, INFL_E_NUMERIC,
            "cusolverDnDsyevd: the eigendecomposition of a %d x %d matrix did not converge (NaN or Inf in it?)", n, n);
done:
    cu_pool_release(&c->pool, work);  // after the synchronisation above, or on a failed launch
    return rc;
}

// The k largest eigenpairs (cusolverDnDsyevdx, range by index): the eigenvectors come
// back in the first k columns of the column-major A, i.e. its first k rows row-major,
// eigenvalues ascending in w[0..k-1]: the layout of the CPU twin (dsyevr).
static infl_status cu_syevd_top(infl_ctx *ctx, double *A, double *w, int n, int k) {
    RETURN_IF(ctx, k < 1 || k > n, INFL_E_ARG, "syevd_top: k = %d for a %d x %d matrix", k, n, n);
    FORWARD_IF_ERROR(cu_enter(ctx));
    cu_ctx *c = cu_of(ctx);
    int lwork = 0, meig = 0;
    infl_status rc = INFL_OK;
    double *work = NULL;
    int *h = (int *)c->h_pinned;
    CUSOLVER_CHECK(ctx, cusolverDnDsyevdx_bufferSize(c->solver, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                                     CUBLAS_FILL_MODE_LOWER, n, A, n, 0.0, 0.0, n - k + 1, n, &meig, w,
                                                     &lwork));
    rc = cu_pool_alloc(ctx, &c->pool, (size_t)(lwork > 0 ? lwork : 1) * sizeof(double), (void **)&work);
    if (rc < 0) {
        infl_errprefix(ctx, "workspace of the top-%d eigenpairs of a %d x %d matrix", k, n, n);
        return rc;
    }
    CUSOLVER_GOTO(ctx, cusolverDnDsyevdx(c->solver, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                         CUBLAS_FILL_MODE_LOWER, n, A, n, 0.0, 0.0, n - k + 1, n, &meig, w, work, lwork,
                                         c->d_flag + 1));
    CU_GOTO(ctx, cudaMemcpyAsync(h + 1, c->d_flag + 1, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    CU_GOTO(ctx, cudaStreamSynchronize(c->stream));
    GOTO_IF(ctx, h[1] < 0, INFL_E_INTERNAL, "cusolverDnDsyevdx: argument %d is invalid", -h[1]);
    GOTO_IF(ctx, h[1] > 0 || meig != k, INFL_E_NUMERIC,
            "cusolverDnDsyevdx: the top %d eigenpairs of a %d x %d matrix did not converge (NaN or Inf in it?)", k, n,
            n);
done:
    cu_pool_release(&c->pool, work);
    return rc;
}

// ---- the table ----

extern "C" const infl_backend infl_cuda_backend = {
    .name = "cuda",
    .init = cu_init,
    .shutdown = cu_shutdown,
    .alloc = cu_alloc,
    .release = cu_release,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .fill = cu_fill,
    .sgemm = cu_sgemm,
    .add_row = cu_add_row,
    .col_sum = cu_col_sum,
    .act_forward = cu_act_forward,
    .act_backward = cu_act_backward,
    .loss_grad = cu_loss_grad,
    .axpby = cu_axpby,
    .sgd_step = cu_sgd_step,
    .dot = cu_dot,
    .mul = cu_mul,
    .act_second = cu_act_second,
    .loss_hvp = cu_loss_hvp,
    .row_dot = cu_row_dot,
    .outer_rows = cu_outer_rows,
    .copy_2d = cu_copy_2d,
    .sample_labels = cu_sample_labels,
    .proj_gen = cu_proj_gen,
    .syevd = cu_syevd,
    .syevd_top = cu_syevd_top,
    .sgemm_batched = cu_sgemm_batched,
    .layernorm_forward = cu_layernorm_forward,
    .layernorm_backward = cu_layernorm_backward,
    .softmax_causal = cu_softmax_causal,
    .softmax_causal_backward = cu_softmax_causal_backward,
    .embed_forward = cu_embed_forward,
    .embed_backward = cu_embed_backward,
    .xent = cu_xent,
    .adamw_step = cu_adamw_step,
    .gather_rows = cu_gather_rows,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
    .upload_async = cu_upload_async,
    .wait_upload = cu_wait_upload,
};
