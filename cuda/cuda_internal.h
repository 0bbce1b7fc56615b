/*
 * cuda_internal.h — what the files of the CUDA backend share: the backend context
 * (device, streams, cuBLAS and cuSOLVER handles, the caching memory pool, small
 * scratch buffers), the macros that check every CUDA, cuBLAS and cuSOLVER call and
 * turn a failure into an infl_status with the call, file and line in the context's
 * detail, and the primitives each .cu file defines for the table in backend.cu.
 *
 * Where it sits: host/backend.h is the table; host/cpu/cpu_backend.c is the CPU twin
 * and test oracle of every function here; tests/test_cuda_backend.c compares them.
 *
 * All work of a context runs on its compute stream, in call order, except the
 * overlapped uploads of upload_async on the copy stream. Memory returned to the pool
 * is handed out again only to later work on the compute stream, so stream order makes
 * the reuse safe without synchronising; a release of memory an overlapped upload may
 * still write first makes the compute stream wait for that upload (cu_release).
 */
#ifndef INFL_CUDA_INTERNAL_H
#define INFL_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/mathfn.h"  // INFL_HD scalar math shared with the CPU backend (C++-clean)

extern "C" {
#include "backend.h"
#include "core/spec.h"
}

// ---- the caching memory pool (pool.cu) ----

// One device block the pool knows: handed out (live) or cached for reuse.
typedef struct {
    void *ptr;     // NULL: empty slot; CU_TOMB: deleted slot
    size_t bytes;  // rounded size actually allocated
    int state;     // CU_BLOCK_LIVE or CU_BLOCK_CACHED
} cu_block;

enum { CU_BLOCK_LIVE = 1, CU_BLOCK_CACHED = 2 };

// A stack of cached blocks of one size class.
typedef struct {
    void **ptr;
    size_t n, cap;
} cu_stack;

// Size classes: 512 bytes, then four steps per octave (2^e · {1.25, 1.5, 1.75, 2}) up
// to CU_POOL_LARGE; larger blocks are rounded to 2 MiB and cached in one list that is
// searched best-fit (a block at most 1/8 larger than asked for is reused).
#define CU_POOL_CLASSES 128
#define CU_POOL_LARGE ((size_t)32 << 20)
#define CU_POOL_LARGE_ROUND ((size_t)2 << 20)

typedef struct {
    cu_block *tab;  // open-addressing hash of every block, keyed by pointer
    size_t cap;     // power of two
    size_t used;    // live + cached + deleted slots
    cu_stack cls[CU_POOL_CLASSES];
    cu_stack large;
    size_t bytes_live, bytes_cached;
    size_t n_malloc;  // cudaMalloc calls made (for tests and the description)
} cu_pool;

// ---- the backend context ----

// Scratch for reductions: dot's per-block partial sums (float64).
#define CU_DOT_BLOCKS 1024

// A device range an overlapped upload of a slot writes, until the compute stream has
// waited for it (see cu_upload_async in backend.cu).
#define CU_UPLOAD_RANGES 8
typedef struct {
    uintptr_t lo, hi;  // [lo, hi)
} cu_range;

typedef struct {
    int dev;
    int sm_count;
    cudaStream_t stream;       // compute stream: every primitive runs here
    cudaStream_t copy_stream;  // the scheduler's overlapped H2D copies (upload_async)
    // upload_async / wait_upload: ev_up[s] marks the end of slot s's copies on the
    // copy stream; ev_compute is recorded on the compute stream before each copy, so
    // the copy does not overwrite what earlier primitives still read.
    cudaEvent_t ev_up[INFL_UPLOAD_SLOTS];
    cudaEvent_t ev_compute;
    // Destinations of copies the compute stream has not waited for, per slot: release
    // of pool memory that overlaps one first makes the compute stream wait (pool reuse
    // is ordered by the compute stream only). n_pending[s] > CU_UPLOAD_RANGES: too
    // many to list, every release waits for the slot.
    cu_range pending[INFL_UPLOAD_SLOTS][CU_UPLOAD_RANGES];
    int n_pending[INFL_UPLOAD_SLOTS];
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    cu_pool pool;
    double *d_partial;  // (CU_DOT_BLOCKS + 1) device doubles: dot partials and result
    int *d_flag;        // (4) device ints: [1] syevd's info ([0], [2], [3] unused)
    void *h_pinned;     // 64 bytes of pinned host memory for small results
    int tf32;           // sgemm math mode: 0 fp32 (default), 1 tf32, 2 pedantic fp32
} cu_ctx;

static inline cu_ctx *cu_of(infl_ctx *ctx) { return (cu_ctx *)ctx->be_ctx; }

// ---- error checking ----

infl_status cu_fail_rt(infl_ctx *ctx, cudaError_t e, const char *call, const char *file, int line);
infl_status cu_fail_blas(infl_ctx *ctx, cublasStatus_t e, const char *call, const char *file, int line);
infl_status cu_fail_solver(infl_ctx *ctx, cusolverStatus_t e, const char *call, const char *file, int line);

// Each returns from the calling function with an infl_status on failure: INFL_E_NOMEM
// for out-of-memory, INFL_E_BACKEND otherwise; the detail names the call, the error,
// the file and the line.
#define CU_CHECK(ctx, call)                                                          \
    do {                                                                             \
        cudaError_t e_cu_ = (call);                                                  \
        if (e_cu_ != cudaSuccess) return cu_fail_rt((ctx), e_cu_, #call, __FILE__, __LINE__); \
    } while (0)
#define CUBLAS_CHECK(ctx, call)                                                      \
    do {                                                                             \
        cublasStatus_t e_cb_ = (call);                                               \
        if (e_cb_ != CUBLAS_STATUS_SUCCESS) return cu_fail_blas((ctx), e_cb_, #call, __FILE__, __LINE__); \
    } while (0)
#define CUSOLVER_CHECK(ctx, call)                                                    \
    do {                                                                             \
        cusolverStatus_t e_cs_ = (call);                                             \
        if (e_cs_ != CUSOLVER_STATUS_SUCCESS) return cu_fail_solver((ctx), e_cs_, #call, __FILE__, __LINE__); \
    } while (0)
// In functions with `infl_status rc` and a `done:` label.
#define CU_GOTO(ctx, call)                                                           \
    do {                                                                             \
        cudaError_t e_cu_ = (call);                                                  \
        if (e_cu_ != cudaSuccess) {                                                  \
            rc = cu_fail_rt((ctx), e_cu_, #call, __FILE__, __LINE__);                \
            goto done;                                                               \
        }                                                                            \
    } while (0)
#define CUSOLVER_GOTO(ctx, call)                                                     \
    do {                                                                             \
        cusolverStatus_t e_cs_ = (call);                                             \
        if (e_cs_ != CUSOLVER_STATUS_SUCCESS) {                                      \
            rc = cu_fail_solver((ctx), e_cs_, #call, __FILE__, __LINE__);            \
            goto done;                                                               \
        }                                                                            \
    } while (0)
// Launches a kernel on the context's compute stream and checks the launch.
#define CU_LAUNCH(ctx, kernel, grid, block, shmem, ...)                                  \
    do {                                                                                 \
        kernel<<<(grid), (block), (shmem), cu_of(ctx)->stream>>>(__VA_ARGS__);           \
        cudaError_t e_cl_ = cudaGetLastError();                                          \
        if (e_cl_ != cudaSuccess) return cu_fail_rt((ctx), e_cl_, "launch of " #kernel, __FILE__, __LINE__); \
    } while (0)

// Makes the context's device current for the calling thread (several contexts on
// different devices may share a thread). Called first by every primitive.
infl_status cu_enter(infl_ctx *ctx);

// Blocks of CU_THREADS threads for a grid-stride loop over n elements (n > 0).
#define CU_THREADS 256
static inline unsigned cu_grid(size_t n) {
    size_t g = (n + CU_THREADS - 1) / CU_THREADS;
    return (unsigned)(g < 65536 ? g : 65536);
}

// ---- pool.cu ----
void cu_pool_init(cu_pool *p);
// Returns a block of at least `bytes` (256-byte aligned) from the pool, or
// cudaMalloc's; INFL_E_NOMEM naming the bytes when the device has no room even after
// the cached blocks are given back.
infl_status cu_pool_alloc(infl_ctx *ctx, cu_pool *p, size_t bytes, void **out);
// Returns a block to the pool (NULL is ignored; unknown pointers are ignored).
void cu_pool_release(cu_pool *p, void *ptr);
// Frees a live block instead of caching it (cudaFree: after the device's work on it),
// for a block that later work must not be handed (cu_release after a failed wait).
void cu_pool_discard(cu_pool *p, void *ptr);
// The size of the live block at ptr, 0 when ptr is not one.
size_t cu_pool_block_bytes(const cu_pool *p, const void *ptr);
// Frees the cached blocks (cudaFree; synchronises the device); the first cudaFree
// error, cleared, for the caller to report.
cudaError_t cu_pool_trim(cu_pool *p);
// Frees every block, live or cached, and the pool's own arrays.
void cu_pool_destroy(cu_pool *p);

// ---- kernels.cu: the elementwise, reduction and loss primitives ----
// Whether this build's kernels run on the current device: cudaSuccess, or the error
// (cudaErrorNoKernelImageForDevice, ...) that a launch would give. Clears it.
cudaError_t cu_probe_kernels(void);
infl_status cu_fill(infl_ctx *ctx, float *x, float v, size_t n);
infl_status cu_scale_2d(infl_ctx *ctx, float *C, int ldc, int rows, int cols, float beta);
infl_status cu_add_row(infl_ctx *ctx, float *Z, const float *b, int rows, int cols);
infl_status cu_col_sum(infl_ctx *ctx, float *out, const float *X, int rows, int cols, float alpha, float beta);
infl_status cu_act_forward(infl_ctx *ctx, infl_activation act, float *A, const float *Z, size_t n);
infl_status cu_act_backward(infl_ctx *ctx, infl_activation act, float *dZ, const float *dA, const float *Z,
                            size_t n);
infl_status cu_act_second(infl_ctx *ctx, infl_activation act, float *out, const float *x, const float *Z,
                          size_t n);
infl_status cu_loss_grad(infl_ctx *ctx, infl_loss loss, const float *logits, const int32_t *y, const float *yf,
                         int B, int K, float *loss_out, float *dlogits, int32_t *correct);
infl_status cu_loss_hvp(infl_ctx *ctx, infl_loss loss, const float *logits, const float *R, int B, int K,
                        float *out);
infl_status cu_axpby(infl_ctx *ctx, float *y, const float *x, float a, float b, size_t n);
infl_status cu_sgd_step(infl_ctx *ctx, float *w, float *v, const float *g, float lr, float mu, float wd, size_t n);
infl_status cu_dot(infl_ctx *ctx, const float *x, const float *y, size_t n, double *out);
infl_status cu_mul(infl_ctx *ctx, float *out, const float *a, const float *b, size_t n);
infl_status cu_row_dot(infl_ctx *ctx, float *out, const float *A, const float *B, int n, int w, float alpha,
                       float beta);
infl_status cu_outer_rows(infl_ctx *ctx, float *G, const float *Delta, const float *A, int b, int dout, int din);

// ---- nn_kernels.cu: the transformer primitives (the GPT's layers) ----
// C_i (m, n) = beta C_i for i < count, C_i = C + i·sC (sgemm_batched with k = 0)
infl_status cu_scale_batched(infl_ctx *ctx, float *C, int ldc, int64_t sC, int m, int n, int count, float beta);
infl_status cu_layernorm_forward(infl_ctx *ctx, float *out, float *mean, float *rstd, const float *x, const float *w,
                                 const float *b, int N, int C, float eps);
infl_status cu_layernorm_backward(infl_ctx *ctx, float *dx, float *dw, float *db, const float *dout, const float *x,
                                  const float *w, const float *mean, const float *rstd, int N, int C);
infl_status cu_softmax_causal(infl_ctx *ctx, float *P, const float *S, int count, int T, float scale);
infl_status cu_softmax_causal_backward(infl_ctx *ctx, float *dS, const float *dP, const float *P, int count, int T,
                                       float scale);
infl_status cu_embed_forward(infl_ctx *ctx, float *out, const int32_t *tok, const float *wte, const float *wpe,
                             int B, int T, int C);
infl_status cu_embed_backward(infl_ctx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tok, int B,
                              int T, int C);
infl_status cu_xent(infl_ctx *ctx, float *loss, float *dlogits, const float *logits, const int32_t *y, int N, int V,
                    float scale);
infl_status cu_adamw_step(infl_ctx *ctx, float *w, float *m, float *v, const float *g, size_t n, float lr,
                          float beta1, float beta2, float eps, float wd, int t, float gscale);
infl_status cu_gather_rows(infl_ctx *ctx, float *out, const float *X, const int32_t *idx, int n, int cols);

// ---- sample_kernels.cu (compiled without FMA contraction: bit-identical to CPU) ----
infl_status cu_sample_labels(infl_ctx *ctx, infl_loss loss, const float *logits, int B, int K, uint64_t seed,
                             int64_t index0, int32_t *y, float *yf);
infl_status cu_proj_gen(infl_ctx *ctx, float *out, int kind, uint64_t seed, uint32_t mat, uint64_t c0, int nc, int k,
                        float scale);

#endif
