/*
 * backend.h — the table both backends fill: the only place that knows CPU from GPU.
 *
 * Algorithms (model, trainer, estimators) are written once against these primitives.
 * Pointers called "device" below are backend memory (host memory on the CPU backend,
 * device memory on CUDA); they come from alloc and are moved with upload/download.
 * All matrices are row-major. Every primitive returns an infl_status and sets the
 * context's detail on failure. Calls on one context are ordered; results of a
 * primitive are visible to the next one (download synchronises).
 *
 * A backend is a static const table of function pointers plus a context (ggml's
 * { iface; context; }). Optional slots are marked and may be NULL.
 */
#ifndef INFL_BACKEND_H
#define INFL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

typedef enum { INFL_N = 0, INFL_T = 1 } infl_trans;

typedef struct infl_backend {
    const char *name;  // "cpu", "cuda"

    // ---- lifecycle ----
    // spec: what came after "name:" ("" when nothing), e.g. the device number.
    // Writes a one-line description into desc. threads: 0 = default.
    infl_status (*init)(infl_ctx *ctx, const char *spec, int threads, void **be, char *desc,
                        size_t desc_size);
    void (*shutdown)(void *be);

    // ---- memory and copies ----
    infl_status (*alloc)(infl_ctx *ctx, size_t bytes, void **ptr);  // 64-byte aligned
    void (*release)(infl_ctx *ctx, void *ptr);                     // accepts NULL
    infl_status (*upload)(infl_ctx *ctx, void *dst, const void *host_src, size_t bytes);
    infl_status (*download)(infl_ctx *ctx, void *host_dst, const void *src, size_t bytes);
    infl_status (*copy)(infl_ctx *ctx, void *dst, const void *src, size_t bytes);
    // x[i] = v for i < n
    infl_status (*fill)(infl_ctx *ctx, float *x, float v, size_t n);

    // ---- BLAS ----
    // C (m, n) = alpha op(A) op(B) + beta C; op(A) is (m, k), op(B) is (k, n).
    infl_status (*sgemm)(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k,
                         float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                         float *C, int ldc);

    // ---- row/column operations ----
    // Z (rows, cols): Z[i, :] += b
    infl_status (*add_row)(infl_ctx *ctx, float *Z, const float *b, int rows, int cols);
    // out (cols) = alpha * sum_i X[i, :] + beta * out; X is (rows, cols)
    infl_status (*col_sum)(infl_ctx *ctx, float *out, const float *X, int rows, int cols,
                           float alpha, float beta);

    // ---- activations ----
    // A = φ(Z), n elements
    infl_status (*act_forward)(infl_ctx *ctx, infl_activation act, float *A, const float *Z,
                               size_t n);
    // dZ = dA ∘ φ'(Z), n elements (dZ may alias dA)
    infl_status (*act_backward)(infl_ctx *ctx, infl_activation act, float *dZ, const float *dA,
                                const float *Z, size_t n);

    // ---- losses ----
    // For B examples with logits (B, K): per-example loss into `loss` (B) and
    // ∂ℓ_i/∂z_i into dlogits (B, K), unscaled (either may be NULL). Targets: y (B)
    // class labels for softmax_ce / sigmoid_ce (0/1), or yf (B, K) for mse.
    // correct (B), optional: 1 where the prediction is right (argmax; sigmoid > 0.5).
    // Labels are the caller's to check, on the host before upload (infl_check_labels):
    // the CPU backend returns INFL_E_VALUE for one out of range; CUDA does not read
    // labels back (no host synchronisation) and gives such a row a NaN loss, NaN
    // dlogits and correct 0, without reading or writing outside the arrays.
    infl_status (*loss_grad)(infl_ctx *ctx, infl_loss loss, const float *logits, const int32_t *y,
                             const float *yf, int B, int K, float *loss_out, float *dlogits,
                             int32_t *correct);

    // ---- vector updates ----
    // y = a x + b y, n elements
    infl_status (*axpby)(infl_ctx *ctx, float *y, const float *x, float a, float b, size_t n);
    // SGD with momentum and weight decay on n parameters:
    // v = mu v + (g + wd w); w -= lr v
    infl_status (*sgd_step)(infl_ctx *ctx, float *w, float *v, const float *g, float lr, float mu,
                            float wd, size_t n);
    // *out = sum_i x_i y_i, accumulated in float64, result on the host
    infl_status (*dot)(infl_ctx *ctx, const float *x, const float *y, size_t n, double *out);

    // ---- second-order and attribution primitives ----
    // out = a ∘ b, n elements (out may alias a or b)
    infl_status (*mul)(infl_ctx *ctx, float *out, const float *a, const float *b, size_t n);
    // out = x ∘ φ''(Z), n elements (out may alias x)
    infl_status (*act_second)(infl_ctx *ctx, infl_activation act, float *out, const float *x, const float *Z,
                              size_t n);
    // Hessian of the loss in the logits times a vector, per row: out_i = H_out(z_i) r_i;
    // logits, R and out are (B, K). softmax_ce: diag(p) − p pᵀ; sigmoid_ce: σ(1−σ); mse: I.
    infl_status (*loss_hvp)(infl_ctx *ctx, infl_loss loss, const float *logits, const float *R, int B, int K,
                            float *out);
    // out (n) = alpha · (row-wise dots of A and B, both (n, w)) + beta · out
    infl_status (*row_dot)(infl_ctx *ctx, float *out, const float *A, const float *B, int n, int w, float alpha,
                           float beta);
    // Per-example gradients of one layer in the flat layout [vec(δ aᵀ) | δ]:
    // G (b, dout·(din+1)), row i = [δ_i ⊗ a_i, δ_i]; Delta (b, dout), A (b, din)
    infl_status (*outer_rows)(infl_ctx *ctx, float *G, const float *Delta, const float *A, int b, int dout, int din);
    // 2-D copy: rows × cols floats from src (leading dimension lds) to dst (ldd)
    infl_status (*copy_2d)(infl_ctx *ctx, float *dst, int ldd, const float *src, int lds, int rows, int cols);

    // ---- EK-FAC ----
    // Targets for B examples drawn from the model's predictive distribution at logits
    // (B, K) (infl_sample_label_row of core/mathfn.h, keyed by seed and example index
    // index0 + i): class labels into y (B) for softmax_ce / sigmoid_ce, real targets
    // into yf (B, K) for mse. Across backends: the same formula and the same uniform
    // draws, but exp, log and cos in float64 come from each backend's own library
    // (glibc, CUDA's; within an ulp or two of each other). So a label is the same on
    // every backend unless its uniform lies within 1e-12 (relative) of a class boundary
    // of the cumulative probabilities (a chance of about 1e-12 per draw), and a target
    // is the same or 1 ulp (float) away. tests/test_cuda_backend.c checks exactly this.
    infl_status (*sample_labels)(infl_ctx *ctx, infl_loss loss, const float *logits, int B, int K, uint64_t seed,
                                 int64_t index0, int32_t *y, float *yf);
    // A block of a random projection's transpose (core/projgen.h): out (nc, k), row-major,
    // out[i, j] = scale · infl_proj_entry(kind, seed, mat, c0 + i, j): the columns c0 .. c0 + nc − 1
    // of matrix `mat`, ready for G (b, nc) · out. Rademacher entries are the same bits on every
    // backend; gaussian ones the same to a float ulp (the device's float64 log/sin/cos).
    infl_status (*proj_gen)(infl_ctx *ctx, float *out, int kind, uint64_t seed, uint32_t mat, uint64_t c0, int nc,
                            int k, float scale);
    // Symmetric eigendecomposition in float64 of A (n, n), row-major, in place: on
    // return row i of A is the eigenvector of w[i], eigenvalues ascending (A and w are
    // backend memory). INFL_E_NUMERIC when it does not converge.
    infl_status (*syevd)(infl_ctx *ctx, double *A, double *w, int n);
    // Optional (NULL: use syevd): the k largest eigenpairs (1 <= k <= n) of symmetric A
    // (n, n), row-major, A destroyed: on return rows 0..k-1 of A hold the eigenvectors of
    // w[0..k-1], ascending (the largest last). Cheaper than syevd when k << n (the
    // rank-r factors of --query-rank).
    infl_status (*syevd_top)(infl_ctx *ctx, double *A, double *w, int n, int k);

    // ---- transformer primitives (the GPT) ----
    // Strided-batched GEMM: for i < count, C_i (m, n) = alpha op(A_i) op(B_i) + beta C_i with
    // A_i = A + i·sA, B_i = B + i·sB, C_i = C + i·sC (strides in floats; lda/ldb/ldc as sgemm).
    infl_status (*sgemm_batched)(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha,
                                 const float *A, int lda, int64_t sA, const float *B, int ldb, int64_t sB, float beta,
                                 float *C, int ldc, int64_t sC, int count);
    // LayerNorm over the rows of x (N, C): out = (x − μ) ρ ∘ w + b, μ the row mean, ρ = 1/sqrt(var + eps)
    // with the biased variance; mean (N) and rstd (N) are saved for the backward (either may be NULL).
    // out (N, C), w (C), b (C).
    infl_status (*layernorm_forward)(infl_ctx *ctx, float *out, float *mean, float *rstd, const float *x,
                                     const float *w, const float *b, int N, int C, float eps);
    // Its backward given dout (N, C): dx (N, C) += ∂/∂x (ACCUMULATES: the residual stream's gradient),
    // dw (C) += Σ_rows dout ∘ x̂, db (C) += Σ_rows dout (dw, db may be NULL: not needed by attribution).
    // x (N, C), w (C); mean (N) and rstd (N) as the forward saved them.
    infl_status (*layernorm_backward)(infl_ctx *ctx, float *dx, float *dw, float *db, const float *dout,
                                      const float *x, const float *w, const float *mean, const float *rstd, int N,
                                      int C);
    // Causal softmax of attention scores: S holds `count` (T, T) blocks, row-major, one after the other.
    // P[t, s] = exp(scale·S[t,s] − m_t) / Σ_{s' ≤ t} exp(scale·S[t,s'] − m_t) for s ≤ t, and 0 for s > t
    // (entries of S above the diagonal are never read). P may alias S.
    infl_status (*softmax_causal)(infl_ctx *ctx, float *P, const float *S, int count, int T, float scale);
    // Its backward: dS[t, s] = scale · P[t,s] (dP[t,s] − Σ_{s' ≤ t} P[t,s'] dP[t,s']) for s ≤ t, 0 above the
    // diagonal. dS may alias dP. dS, dP, P: `count` (T, T) blocks (dP above the diagonal is never read).
    infl_status (*softmax_causal_backward)(infl_ctx *ctx, float *dS, const float *dP, const float *P, int count,
                                           int T, float scale);
    // Token and position embeddings: out (B·T, C), row i = wte[tok[i]] + wpe[i mod T]; tok (B·T) int32 in [0, V)
    // (checked by callers on the host), wte (V, C), wpe (>= T, C).
    infl_status (*embed_forward)(infl_ctx *ctx, float *out, const int32_t *tok, const float *wte, const float *wpe,
                                 int B, int T, int C);
    // Its backward (scatter-add): dwte[tok[i]] += dout[i], dwpe[i mod T] += dout[i] (either may be NULL).
    // Deterministic: the same bits on every run (no order-dependent float atomics). dout (B·T, C).
    // A negative token adds to no row of dwte (tokens >= V are the caller's bug, as in the forward).
    infl_status (*embed_backward)(infl_ctx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                                  int B, int T, int C);
    // Softmax cross-entropy over a vocabulary, per row i < N of logits (N, V) with target y[i]:
    // loss[i] = logsumexp(z_i) − z_i[y_i]; dlogits[i] = scale · (softmax(z_i) − onehot(y_i)).
    // y[i] < 0 masks the row: loss 0 and dlogits 0. loss or dlogits may be NULL; dlogits may alias logits.
    // Targets y[i] >= V are the caller's bug (callers check on the host): no host synchronisation here.
    // (The CPU backend returns INFL_E_VALUE for one; CUDA gives the row a NaN loss and NaN dlogits.)
    infl_status (*xent)(infl_ctx *ctx, float *loss, float *dlogits, const float *logits, const int32_t *y, int N,
                        int V, float scale);
    // AdamW (Loshchilov & Hutter) on n parameters, step t >= 1, bias-corrected, decoupled weight decay:
    // m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; w −= lr (m/(1−β1^t) / (sqrt(v/(1−β2^t)) + eps) + wd w).
    // g is multiplied by gscale first (gradient clipping). Computed in float32 per element (double for β^t).
    // w, m, v, g (n).
    infl_status (*adamw_step)(infl_ctx *ctx, float *w, float *m, float *v, const float *g, size_t n, float lr,
                              float beta1, float beta2, float eps, float wd, int t, float gscale);
    // Row gather: out (n, cols), row r = X[idx[r], :]; idx (n) int32 backend memory.
    infl_status (*gather_rows)(infl_ctx *ctx, float *out, const float *X, const int32_t *idx, int n, int cols);

    // ---- the scheduler: pinned host memory, overlapped uploads (optional) ----
    // All four are optional (NULL on the CPU backend); call them through the
    // infl_be_host_* and infl_be_upload_async / infl_be_wait_upload wrappers below,
    // which fall back to aligned malloc and to the synchronous upload.
    //
    // host_alloc: `bytes` of host memory the device copies from without staging
    // (CUDA: page-locked, cudaHostAlloc), for the shard reader's ring. host_free
    // accepts NULL and waits for copies still reading the memory.
    infl_status (*host_alloc)(infl_ctx *ctx, size_t bytes, void **p);
    void (*host_free)(infl_ctx *ctx, void *p);
    // Overlapped uploads, for double-buffered sub-batches (DESIGN.md, the scheduler):
    //   upload_async(ctx, dst, src, bytes, slot) queues a host-to-device copy on a copy
    //     stream. The copy starts once every primitive issued before it has finished
    //     (they may still read dst), and runs while later primitives compute. slot
    //     (0 .. INFL_UPLOAD_SLOTS-1) names the copy for wait_upload; several uploads
    //     may share a slot.
    //   wait_upload(ctx, slot) makes every primitive issued after it wait for the
    //     uploads of the slot issued so far. It does not block the host.
    // The host memory src must stay allocated and unchanged until the copy is done:
    // it is once a download issued after wait_upload(slot) has returned (or
    // host_free, which waits). dst may be released at any time (release orders the
    // reuse after the copy). A slot's uploads not waited for are not seen by later
    // primitives: always wait before use.
    infl_status (*upload_async)(infl_ctx *ctx, void *dst, const void *host_src, size_t bytes, int slot);
    infl_status (*wait_upload)(infl_ctx *ctx, int slot);
} infl_backend;

// Slots of upload_async / wait_upload.
#define INFL_UPLOAD_SLOTS 4

extern const infl_backend infl_cpu_backend;
#ifdef INFL_HAVE_CUDA
extern const infl_backend infl_cuda_backend;
// Host BLAS and LAPACK calls made outside the table (float64 Cholesky and solves,
// the convex trainer's dgemm, the CPU backend's eigendecompositions): in deterministic
// mode (infl_ctx_options), infl_blas_serial_begin makes OpenBLAS run them on one thread
// until infl_blas_serial_end, so that their bits do not depend on the thread count;
// otherwise both do nothing. begin returns what end restores. Calling thread only.
int infl_blas_serial_begin(infl_ctx *ctx);
void infl_blas_serial_end(infl_ctx *ctx, int saved);

#endif

// Convenience wrappers: the context's backend and its memory.
#define BE(ctx) ((ctx)->be)
// Allocates n floats of backend memory into *p (INFL_E_NOMEM naming `what`).
infl_status infl_be_alloc_f(infl_ctx *ctx, float **p, size_t n, const char *what);
void infl_be_free(infl_ctx *ctx, void *p);
// Allocates `bytes` of backend memory into *p. On failure the detail names `what` and
// its size, and for INFL_E_NOMEM ends with "; to fit: <hint>" (the option that makes
// it smaller), e.g. "a score block (7.0 MiB): CUDA device out of memory ...; to fit:
// fewer queries".
infl_status infl_be_alloc_hint(infl_ctx *ctx, void **p, size_t bytes, const char *what, const char *hint);
// Host memory for buffers that are uploaded (the backend's host_alloc, else 64-byte
// aligned malloc); INFL_E_NOMEM naming `what`. infl_be_host_free accepts NULL.
infl_status infl_be_host_alloc(infl_ctx *ctx, size_t bytes, void **p, const char *what);
void infl_be_host_free(infl_ctx *ctx, void *p);
// Allocator hooks for infl_reader_start (user = the infl_ctx): the reader's shard
// ring in the backend's host memory (pinned on CUDA). Called on the consumer thread.
void *infl_be_host_alloc_hook(size_t bytes, void *ctx);
void infl_be_host_free_hook(void *p, void *ctx);
// The backend's upload_async / wait_upload, else the synchronous upload / nothing
// (same results: the overlap is the only difference).
infl_status infl_be_upload_async(infl_ctx *ctx, void *dst, const void *host_src, size_t bytes, int slot);
infl_status infl_be_wait_upload(infl_ctx *ctx, int slot);

// Host BLAS and LAPACK calls made outside the table (float64 Cholesky and solves,
// the convex trainer's dgemm, the CPU backend's eigendecompositions): in deterministic
// mode (infl_ctx_options), infl_blas_serial_begin makes OpenBLAS run them on one thread
// until infl_blas_serial_end, so that their bits do not depend on the thread count;
// otherwise both do nothing. begin returns what end restores. Calling thread only.
int infl_blas_serial_begin(infl_ctx *ctx);
void infl_blas_serial_end(infl_ctx *ctx, int saved);

#endif
