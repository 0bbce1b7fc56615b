/*
 * cpu_backend.c — the CPU backend: OpenBLAS for GEMMs (cpu_gemm.c), OpenMP loops for the rest.
 * It is the reference oracle every CUDA primitive is tested against, so each function
 * is the plain loop of what it computes. The transformer primitives (the GPT's layers)
 * are in cpu_nn.c.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/mathfn.h"
#include "core/projgen.h"
#include "core/spec.h"
#include "cpu_gemm.h"
#include "cpu_nn.h"

// ---- lifecycle ----

typedef struct {
    int threads;
} cpu_ctx;

static infl_status cpu_init(infl_ctx *ctx, const char *spec, int threads, void **be, char *desc,
                            size_t desc_size) {
    RETURN_IF(ctx, spec && *spec, INFL_E_ARG, "backend cpu takes no device number (got 'cpu:%s')", spec);
    cpu_ctx *c = calloc(1, sizeof *c);
    RETURN_IF(ctx, !c, INFL_E_NOMEM, "out of memory creating the CPU backend");
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    c->threads = threads > 0 ? threads : omp_get_max_threads();
    char *cfg = openblas_get_config();
    int par = openblas_get_parallel();  // 0 sequential, 1 pthreads, 2 OpenMP
    // Deterministic GEMMs (cpu_gemm.c) call OpenBLAS from inside OpenMP loops: its
    // OpenMP build then runs single-threaded by itself; a pthreads build must be told.
    if (ctx->deterministic && par == 1) openblas_set_num_threads(1);
    snprintf(desc, desc_size, "cpu (%s; %s; %d threads%s)", cfg ? cfg : "OpenBLAS",
             par == 2 ? "OpenMP BLAS" : par == 1 ? "pthreads BLAS" : "sequential BLAS", c->threads,
             ctx->deterministic ? "; deterministic" : "");
    *be = c;
    return INFL_OK;
}

static void cpu_shutdown(void *be) { free(be); }

// ---- memory and copies ----

static infl_status cpu_alloc(infl_ctx *ctx, size_t bytes, void **ptr) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    RETURN_IF(ctx, !p, INFL_E_NOMEM, "out of memory allocating %zu bytes", bytes);
    *ptr = p;
    return INFL_OK;
}

static void cpu_release(infl_ctx *ctx, void *ptr) {
    (void)ctx;
    free(ptr);
}

static infl_status cpu_copy(infl_ctx *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return INFL_OK;
}

static infl_status cpu_fill(infl_ctx *ctx, float *x, float v, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = v;
    return INFL_OK;
}

// ---- row/column operations ----

static infl_status cpu_add_row(infl_ctx *ctx, float *Z, const float *b, int rows, int cols) {
    (void)ctx;
    // Z is (rows, cols): every row gets b
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 65536)
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) Z[(size_t)i * cols + j] += b[j];
    return INFL_OK;
}

static infl_status cpu_col_sum(infl_ctx *ctx, float *out, const float *X, int rows, int cols, float alpha,
                               float beta) {
    (void)ctx;
    // out (cols) = alpha * sum over rows of X + beta * out; each column summed in
    // double, in row order, so the result does not depend on the thread count.
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 65536)
    for (int j = 0; j < cols; j++) {
        double s = 0;
        for (int i = 0; i < rows; i++) s += X[(size_t)i * cols + j];
        out[j] = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * out[j]));
    }
    return INFL_OK;
}

// ---- activations ----

static infl_status cpu_act_forward(infl_ctx *ctx, infl_activation act, float *A, const float *Z, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) A[i] = infl_act_f(act, Z[i]);
    return INFL_OK;
}

static infl_status cpu_act_backward(infl_ctx *ctx, infl_activation act, float *dZ, const float *dA,
                                    const float *Z, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dZ[i] = dA[i] * infl_act_df(act, Z[i]);
    return INFL_OK;
}

// ---- losses ----

static infl_status cpu_loss_grad(infl_ctx *ctx, infl_loss loss, const float *logits, const int32_t *y,
                                 const float *yf, int B, int K, float *loss_out, float *dlogits,
                                 int32_t *correct) {
    int bad = -1;
    if (loss != INFL_LOSS_MSE) {
        RETURN_IF(ctx, !y, INFL_E_ARG, "loss %s needs class labels", infl_loss_name(loss));
        int hi = loss == INFL_LOSS_SIGMOID_CE ? 2 : K;
        for (int i = 0; i < B && bad < 0; i++)
            if (y[i] < 0 || y[i] >= hi) bad = i;
        RETURN_IF(ctx, bad >= 0, INFL_E_VALUE, "label %d of example %d is out of range [0, %d)", (int)y[bad], bad,
                  hi);
    } else {
        RETURN_IF(ctx, !yf, INFL_E_ARG, "loss mse needs real targets");
    }
#pragma omp parallel for schedule(static) if ((size_t)B * K > 16384)
    for (int i = 0; i < B; i++) {
        const float *z = logits + (size_t)i * K;
        float *g = dlogits ? dlogits + (size_t)i * K : NULL;
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
    return INFL_OK;
}

// ---- vector updates ----

static infl_status cpu_axpby(infl_ctx *ctx, float *y, const float *x, float a, float b, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = a * x[i] + (b == 0.0f ? 0.0f : b * y[i]);
    return INFL_OK;
}

static infl_status cpu_sgd_step(infl_ctx *ctx, float *w, float *v, const float *g, float lr, float mu, float wd,
                                size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        v[i] = mu * v[i] + (g[i] + wd * w[i]);
        w[i] -= lr * v[i];
    }
    return INFL_OK;
}

static infl_status cpu_dot(infl_ctx *ctx, const float *x, const float *y, size_t n, double *out) {
    (void)ctx;
    // Blocks of fixed size summed in a fixed order: the result does not depend on
    // the thread count.
    enum { BLK = 4096 };
    size_t nb = (n + BLK - 1) / BLK;
    double total = 0;
    for (size_t b0 = 0; b0 < nb; b0 += 256) {
        double part[256];
        size_t bend = b0 + 256 < nb ? b0 + 256 : nb;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t b = b0; b < bend; b++) {
            double s = 0;
            size_t e = (b + 1) * BLK < n ? (b + 1) * BLK : n;
            for (size_t i = b * BLK; i < e; i++) s += (double)x[i] * y[i];
            part[b - b0] = s;
        }
        for (size_t b = b0; b < bend; b++) total += part[b - b0];
    }
    *out = total;
    return INFL_OK;
}

// ---- second-order and attribution primitives ----

static infl_status cpu_mul(infl_ctx *ctx, float *out, const float *a, const float *b, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
    return INFL_OK;
}

static infl_status cpu_act_second(infl_ctx *ctx, infl_activation act, float *out, const float *x, const float *Z,
                                  size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = x[i] * infl_act_d2f(act, Z[i]);
    return INFL_OK;
}

static infl_status cpu_loss_hvp(infl_ctx *ctx, infl_loss loss, const float *logits, const float *R, int B, int K,
                                float *out) {
    (void)ctx;
#pragma omp parallel for schedule(static) if ((size_t)B * K > 16384)
    for (int i = 0; i < B; i++)
        infl_loss_hvp_row(loss, logits + (size_t)i * K, R + (size_t)i * K, K, out + (size_t)i * K);
    return INFL_OK;
}

static infl_status cpu_row_dot(infl_ctx *ctx, float *out, const float *A, const float *B, int n, int w, float alpha,
                               float beta) {
    (void)ctx;
#pragma omp parallel for schedule(static) if ((size_t)n * w > 65536)
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < w; j++) s += (double)A[(size_t)i * w + j] * B[(size_t)i * w + j];
        out[i] = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * out[i]));
    }
    return INFL_OK;
}

static infl_status cpu_outer_rows(infl_ctx *ctx, float *G, const float *Delta, const float *A, int b, int dout,
                                  int din) {
    (void)ctx;
    size_t row = (size_t)dout * (din + 1);
#pragma omp parallel for schedule(static) if ((size_t)b * row > 65536)
    for (int i = 0; i < b; i++) {
        float *g = G + (size_t)i * row;
        const float *d = Delta + (size_t)i * dout, *a = A + (size_t)i * din;
        for (int o = 0; o < dout; o++)
            for (int j = 0; j < din; j++) g[(size_t)o * din + j] = d[o] * a[j];
        for (int o = 0; o < dout; o++) g[(size_t)dout * din + o] = d[o];
    }
    return INFL_OK;
}

static infl_status cpu_copy_2d(infl_ctx *ctx, float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    (void)ctx;
    for (int i = 0; i < rows; i++) memmove(dst + (size_t)i * ldd, src + (size_t)i * lds, (size_t)cols * sizeof(float));
    return INFL_OK;
}

static infl_status cpu_proj_gen(infl_ctx *ctx, float *out, int kind, uint64_t seed, uint32_t mat, uint64_t c0, int nc,
                                int k, float scale) {
    (void)ctx;
#pragma omp parallel for schedule(static) if ((size_t)nc * k > 65536)
    for (int i = 0; i < nc; i++) {
        float *o = out + (size_t)i * k;
        uint64_t index = ((uint64_t)mat << 40) | (c0 + (uint64_t)i);
        if (kind == INFL_PROJ_RADEMACHER_) {
            // 128 entries per counter: the same bits as infl_proj_entry, drawn once; a 0 bit sets the sign
            // bit of ±scale (no branch: the bits are random, a branch on them mispredicts half the time)
            uint32_t sbits;
            memcpy(&sbits, &scale, sizeof sbits);
            for (int j0 = 0; j0 < k; j0 += 128) {
                infl_rng4 w = infl_rng_words(seed, INFL_RNG_PROJECT, index, (uint32_t)(j0 >> 7));
                int n = k - j0 < 128 ? k - j0 : 128;
                for (int j = 0; j < n; j++) {
                    uint32_t v = sbits ^ ((~(w.v[j >> 5] >> (j & 31)) & 1u) << 31);
                    memcpy(&o[j0 + j], &v, sizeof v);
                }
            }
        } else {
            // 4 entries per counter, two Box-Muller pairs: the entries of infl_proj_entry, each counter and pair once
            for (int j0 = 0; j0 < k; j0 += 4) {
                infl_rng4 w = infl_rng_words(seed, INFL_RNG_PROJECT, index, (uint32_t)(j0 >> 2));
                for (int j = j0; j < k && j < j0 + 4; j += 2) {
                    float e[2];
                    infl_proj_gauss_pair(&w, (j >> 1) & 1, e);
                    o[j] = scale * e[0];
                    if (j + 1 < k) o[j + 1] = scale * e[1];
                }
            }
        }
    }
    return INFL_OK;
}

static infl_status cpu_sample_labels(infl_ctx *ctx, infl_loss loss, const float *logits, int B, int K, uint64_t seed,
                                     int64_t index0, int32_t *y, float *yf) {
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++)
        infl_sample_label_row(loss, logits + (size_t)i * K, K, seed, (uint64_t)(index0 + i), y ? y + i : NULL,
                              yf ? yf + (size_t)i * K : NULL);
    return INFL_OK;
}

static infl_status cpu_syevd(infl_ctx *ctx, double *A, double *w, int n) {
    // Row-major A is its own transpose (symmetric); LAPACK's column-major eigenvectors
    // in columns are, read row-major, eigenvectors in rows.
    int serial = infl_blas_serial_begin(ctx);
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, A, (lapack_int)n, w);
    infl_blas_serial_end(ctx, serial);
    RETURN_IF(ctx, info < 0, INFL_E_INTERNAL, "dsyevd: argument %d is invalid", (int)-info);
    RETURN_IF(ctx, info > 0, INFL_E_NUMERIC, "dsyevd: the eigendecomposition of a %d x %d matrix did not converge "
              "(NaN or Inf in it?)", n, n);
    return INFL_OK;
}

static infl_status cpu_syevd_top(infl_ctx *ctx, double *A, double *w, int n, int k) {
    RETURN_IF(ctx, k < 1 || k > n, INFL_E_ARG, "syevd_top: k = %d for a %d x %d matrix", k, n, n);
    double *Z = malloc((size_t)n * k * sizeof(double));
    lapack_int *isuppz = malloc(2 * (size_t)k * sizeof(lapack_int));
    RETURN_IF(ctx, !Z || !isuppz, INFL_E_NOMEM, "syevd_top: out of memory (%d x %d)", n, k);
    lapack_int m = 0;
    // column-major on the row-major symmetric A (its own transpose); eigenvector j is
    // column j of Z (leading dimension n), i.e. n contiguous values: row j row-major
    int serial = infl_blas_serial_begin(ctx);
    lapack_int info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'L', (lapack_int)n, A, (lapack_int)n, 0.0, 0.0,
                                     (lapack_int)(n - k + 1), (lapack_int)n, 0.0, &m, w, Z, (lapack_int)n, isuppz);
    infl_blas_serial_end(ctx, serial);
    infl_status rc = INFL_OK;
    if (info < 0) rc = infl_seterr(ctx, INFL_E_INTERNAL, "dsyevr: argument %d is invalid", (int)-info);
    else if (info > 0 || m != k)
        rc = infl_seterr(ctx, INFL_E_NUMERIC, "dsyevr: the top %d eigenpairs of a %d x %d matrix did not converge "
                         "(NaN or Inf in it?)", k, n, n);
    else memcpy(A, Z, (size_t)n * k * sizeof(double));
    free(Z);
    free(isuppz);
    return rc;
}

const infl_backend infl_cpu_backend = {
    .name = "cpu",
    .init = cpu_init,
    .shutdown = cpu_shutdown,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .sgemm = cpu_sgemm,
    .add_row = cpu_add_row,
    .col_sum = cpu_col_sum,
    .act_forward = cpu_act_forward,
    .act_backward = cpu_act_backward,
    .loss_grad = cpu_loss_grad,
    .axpby = cpu_axpby,
    .sgd_step = cpu_sgd_step,
    .dot = cpu_dot,
    .mul = cpu_mul,
    .act_second = cpu_act_second,
    .loss_hvp = cpu_loss_hvp,
    .row_dot = cpu_row_dot,
    .outer_rows = cpu_outer_rows,
    .copy_2d = cpu_copy_2d,
    .sample_labels = cpu_sample_labels,
    .proj_gen = cpu_proj_gen,
    .syevd = cpu_syevd,
    .syevd_top = cpu_syevd_top,
    .sgemm_batched = cpu_sgemm_batched,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .softmax_causal = cpu_softmax_causal,
    .softmax_causal_backward = cpu_softmax_causal_backward,
    .embed_forward = cpu_embed_forward,
    .embed_backward = cpu_embed_backward,
    .xent = cpu_xent,
    .adamw_step = cpu_adamw_step,
    .gather_rows = cpu_gather_rows,
};
