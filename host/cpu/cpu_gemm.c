/*
 * cpu_gemm.c — the CPU backend's GEMMs (the sgemm and sgemm_batched slots of
 * host/backend.h) on OpenBLAS, in two modes:
 *
 *  - deterministic (the context's `deterministic`, --deterministic 1): the output C of each
 *    product is cut into tiles by a rule that looks only at the shapes (never at the
 *    thread count), and every tile is one single-threaded OpenBLAS call made from
 *    inside an OpenMP loop over the tiles. A tile's bits depend only on its own call,
 *    so the result is the same whatever the number of threads: OpenBLAS's own
 *    threading splits the k loop of some shapes differently at different thread
 *    counts (784-wide inputs, measured: 3/4 of the outputs of a 128 x 256 x 784 product
 *    differ in the last bits between 1 and 2 threads), which is what made training
 *    at --threads 1 and 2 diverge.
 *  - threaded (the default): each GEMM on all of OpenBLAS's threads (or a batch spread over OpenMP
 *    threads, each GEMM on one), as before; the last bits may depend on the threads.
 *
 * OpenBLAS's OpenMP build runs single-threaded inside an active OpenMP parallel region,
 * and outside one on omp_get_max_threads() threads, which infl_blas_serial_begin sets
 * to one for a product of one tile; the pthreads build is set to one thread in
 * deterministic mode (cpu_init).
 */
#include <cblas.h>
#include <omp.h>

#include "cpu_gemm.h"

// ---- the tiling rule (shapes only) ----

// Multiply-adds below which a product is one tile: waking threads costs more.
#define TILE_SMALL ((int64_t)128 * 128 * 64)
// Rows (or columns) of C per tile at least, a multiple of OpenBLAS's register blocks.
#define TILE_MIN 64
// Tiles per product at most: enough for 16 cores, few enough that re-packing the
// shared operand per tile stays cheap (one pass over it per tile).
#define TILE_MAX 16

// How C (m, n) of a k-deep product is cut: into *tiles pieces of *step rows (when
// *by_rows) or columns, the last one shorter. Depends on the shape alone.
static void tiling(int m, int n, int k, int *tiles, int *step, int *by_rows) {
    int64_t work = (int64_t)m * n * (k ? k : 1);
    *by_rows = m >= n;
    int d = *by_rows ? m : n;
    int t = work < TILE_SMALL ? 1 : (d + TILE_MIN - 1) / TILE_MIN;
    if (t > TILE_MAX) t = TILE_MAX;
    int s = (d + t - 1) / t;
    s = (s + 15) / 16 * 16;  // whole register blocks
    *step = s;
    *tiles = (d + s - 1) / s;
}

// One tile of C_i: rows [r0, r0 + mr) and columns [c0, c0 + nc) of
// C (m, n) = alpha op(A) op(B) + beta C, one OpenBLAS call on the sub-matrices.
static void gemm_tile(CBLAS_TRANSPOSE opA, CBLAS_TRANSPOSE opB, int r0, int mr, int c0, int nc, int k, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    // op(A)'s rows r0.. are A's rows (no transpose) or A's columns (transposed)
    const float *a = opA == CblasNoTrans ? A + (size_t)r0 * lda : A + r0;
    // op(B)'s columns c0.. are B's columns (no transpose) or B's rows (transposed)
    const float *b = opB == CblasNoTrans ? B + c0 : B + (size_t)c0 * ldb;
    cblas_sgemm(CblasRowMajor, opA, opB, mr, nc, k, alpha, a, lda, b, ldb, beta, C + (size_t)r0 * ldc + c0, ldc);
}

// The deterministic batched product: every (matrix, tile) pair is one task, run on one
// thread; a single task is run here, on one thread (no parallel region to wake).
static void gemm_tiled(infl_ctx *ctx, CBLAS_TRANSPOSE opA, CBLAS_TRANSPOSE opB, int m, int n, int k, float alpha, const float *A,
                       int lda, int64_t sA, const float *B, int ldb, int64_t sB, float beta, float *C, int ldc,
                       int64_t sC, int count) {
    int tiles, step, by_rows;
    tiling(m, n, k, &tiles, &step, &by_rows);
    if (count > 1 && (int64_t)count * tiles > TILE_MAX) tiles = 1, step = by_rows ? m : n;  // the batch is the work
    int64_t tasks = (int64_t)count * tiles;
    if (tasks == 1) {
        int serial = infl_blas_serial_begin(ctx);
        cblas_sgemm(CblasRowMajor, opA, opB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        infl_blas_serial_end(ctx, serial);
        return;
    }
    // no `if` clause: inside an active region OpenBLAS runs each call on one thread
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int i = (int)(t / tiles), j = (int)(t % tiles);
        int d = by_rows ? m : n, lo = j * step, len = d - lo < step ? d - lo : step;
        const float *Ai = A + i * sA, *Bi = B + i * sB;
        float *Ci = C + i * sC;
        if (by_rows)
            gemm_tile(opA, opB, lo, len, 0, n, k, alpha, Ai, lda, Bi, ldb, beta, Ci, ldc);
        else
            gemm_tile(opA, opB, 0, m, lo, len, k, alpha, Ai, lda, Bi, ldb, beta, Ci, ldc);
    }
}

// ---- threaded (OpenBLAS's own threading) ----

// Two ways to run a batch: one GEMM after the other, each on all of OpenBLAS's threads,
// or the batch spread over OpenMP threads with each GEMM on one thread. Measured on 2
// cores (OpenBLAS 0.3.21 OpenMP build, OMP_WAIT_POLICY=passive as the CLI and tests run;
// medians of 9), sequential vs batch-parallel, (m, n, k) × count:
//   (64, 64, 32) × 48      0.23 ms vs 0.24 ms
//   (128, 128, 64) × 48    7.3 ms  vs 1.0 ms
//   (256, 256, 64) × 48    12.2 ms vs 3.8 ms
//   (256, 256, 64) × 2     0.22 ms vs 0.13 ms
//   (1024, 1024, 64) × 8   14.2 ms vs 7.9 ms
//   (1024, 1024, 64) × 2   2.1 ms  vs 1.8 ms
//   (1024, 1024, 64) × 1   1.0 ms  vs 1.7 ms (one GEMM: BLAS's threads do help)
// BLAS's threads wake and join on every call, which costs as much as a small multiply.
// So the batch is spread over the threads whenever it has at least one matrix per
// thread, or its matrices are small (below BATCH_SMALL multiply-adds, where BLAS's
// threading does not pay even on a machine with more cores than matrices); otherwise
// (a few large matrices, more cores) each GEMM gets all the threads.
#define BATCH_SMALL ((int64_t)256 * 256 * 64)

static void gemm_threaded(CBLAS_TRANSPOSE opA, CBLAS_TRANSPOSE opB, int m, int n, int k, float alpha, const float *A,
                          int lda, int64_t sA, const float *B, int ldb, int64_t sB, float beta, float *C, int ldc,
                          int64_t sC, int count) {
    int64_t work = (int64_t)m * n * (k ? k : 1);
    int spread = count > 1 && (count >= omp_get_max_threads() || work < BATCH_SMALL);
    // C_i (m, n) = alpha op(A_i) op(B_i) + beta C_i, for each matrix i of the batch
#pragma omp parallel for schedule(static) if (spread)
    for (int i = 0; i < count; i++)
        cblas_sgemm(CblasRowMajor, opA, opB, m, n, k, alpha, A + i * sA, lda, B + i * sB, ldb, beta, C + i * sC,
                    ldc);
}

// ---- the slots ----

infl_status cpu_sgemm_batched(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha,
                              const float *A, int lda, int64_t sA, const float *B, int ldb, int64_t sB, float beta,
                              float *C, int ldc, int64_t sC, int count) {
    RETURN_IF(ctx, m < 0 || n < 0 || k < 0 || count < 0, INFL_E_ARG,
              "sgemm_batched: negative size (%d, %d, %d) or count %d", m, n, k, count);
    if (m == 0 || n == 0 || count == 0) return INFL_OK;
    CBLAS_TRANSPOSE opA = ta == INFL_T ? CblasTrans : CblasNoTrans, opB = tb == INFL_T ? CblasTrans : CblasNoTrans;
    if (ctx->deterministic)
        gemm_tiled(ctx, opA, opB, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, count);
    else
        gemm_threaded(opA, opB, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, count);
    return INFL_OK;
}

infl_status cpu_sgemm(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    RETURN_IF(ctx, m < 0 || n < 0 || k < 0, INFL_E_ARG, "sgemm: negative size (%d, %d, %d)", m, n, k);
    return cpu_sgemm_batched(ctx, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
