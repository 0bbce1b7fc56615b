/*
 * cpu_gemm.h — the CPU backend's GEMMs (cpu_gemm.c), for the table in cpu_backend.c:
 * sgemm and strided-batched sgemm, deterministic (the same bits at every thread count)
 * or on OpenBLAS's own threads, as the context asks. Internal to host/cpu/; the
 * contracts are the slots of the same names in host/backend.h.
 */
#ifndef INFL_CPU_GEMM_H
#define INFL_CPU_GEMM_H

#include "backend.h"

infl_status cpu_sgemm(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc);
infl_status cpu_sgemm_batched(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, float alpha,
                              const float *A, int lda, int64_t sA, const float *B, int ldb, int64_t sB, float beta,
                              float *C, int ldc, int64_t sC, int count);

#endif
