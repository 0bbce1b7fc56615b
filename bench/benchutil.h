/*
 * benchutil.h — what the benchmark programs share: a monotonic clock, medians, the
 * sgemm ceiling measured in the same run, and the OpenMP wait policy the CLI uses.
 * Header-only: each program in bench/ is built on its own.
 */
#ifndef INFL_BENCHUTIL_H
#define INFL_BENCHUTIL_H

#include <cblas.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int bench_cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median of v (n entries; sorts v).
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), bench_cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median GFLOP/s of C (m, n) = A (m, k) · op(B) (op = ᵀ when tb) over reps (<= 64)
// after one warm-up.
static inline double bench_sgemm_rate(int m, int n, int k, int tb, int reps) {
    float *A = malloc(sizeof(float) * (size_t)m * k), *B = malloc(sizeof(float) * (size_t)k * n),
          *C = malloc(sizeof(float) * (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)k * n; i++) B[i] = (float)(i % 5) * 0.1f;
    double t[64];
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, A, k, B, tb ? k : n,
                    0.0f, C, n);
        if (r >= 0) t[r] = bench_now() - t0;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * m * n * k / bench_median(t, reps) / 1e9;
}

// As the CLI does (host/cli/main.c): idle OpenMP workers sleep instead of spinning.
static inline void bench_passive_omp(char **argv) {
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
}

#endif
