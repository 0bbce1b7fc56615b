/*
 * cudapair.h — what the CUDA parity tests share (test_cuda_backend.c, test_cuda_nn.c,
 * test_gpt.c): a CPU context beside a CUDA one (or the test is skipped, with the
 * reason, when the build or the machine has no CUDA), backend buffers to and from the
 * host, random inputs and the relative error ‖gpu − cpu‖ / ‖cpu‖. CUDA is touched only
 * inside test bodies (Criterion forks workers). Header-only, static inline.
 */
#ifndef INFL_TESTS_CUDAPAIR_H
#define INFL_TESTS_CUDAPAIR_H

// unsetenv (POSIX): a file including this header defines _GNU_SOURCE or
// _POSIX_C_SOURCE before its first include.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "testutil.h"


typedef struct {
    infl_ctx *c[2];  // [0] cpu (the oracle), [1] cuda
} pair;

// Creates the CUDA context or skips the test, then the CPU one. With
// INFL_TEST_PAIR_CPU=1 both are CPU contexts: a dry run of the tests' own code on a
// machine without a GPU (parity holds trivially; tests of CUDA-only promises fail).
static inline pair open_pair(void) {
    pair p = {{NULL, NULL}};
    const char *dry = getenv("INFL_TEST_PAIR_CPU");
    if (dry && strcmp(dry, "1") == 0) {
        p.c[0] = tu_ctx();
        p.c[1] = tu_ctx();
        return p;
    }
    unsetenv("INFL_PRECISION");  // FP32 GEMMs: the 1e-4 parity does not hold for TF32
#ifndef INFL_HAVE_CUDA
    cr_skip_test("this build has no CUDA backend (no nvcc found, or INFL_CUDA=OFF)");
#else
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = "cuda";
    if (infl_ctx_create(&o, &p.c[1]) != INFL_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", infl_ctx_error(p.c[1]));
        infl_ctx_free(p.c[1]);
        cr_skip_test("%s%s", strncmp(why, "no usable CUDA device", 21) == 0 ? "" : "no usable CUDA device: ", why);
    }
    p.c[0] = tu_ctx();
#endif
    return p;
}

static inline void close_pair(pair *p) {
    infl_ctx_free(p->c[0]);
    infl_ctx_free(p->c[1]);
}

#define OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s (%s)", #expr, infl_ctx_error(ctx), (ctx)->be->name)

// Backend memory of `bytes`, filled from host h (when not NULL).
static inline void *dev(infl_ctx *ctx, const void *h, size_t bytes) {
    void *d = NULL;
    OK(ctx, ctx->be->alloc(ctx, bytes ? bytes : 4, &d));
    if (h && bytes) OK(ctx, ctx->be->upload(ctx, d, h, bytes));
    return d;
}

// A host copy (malloc'd) of `bytes` of backend memory.
static inline void *host(infl_ctx *ctx, const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    OK(ctx, ctx->be->download(ctx, h, d, bytes));
    return h;
}

static inline void rel(infl_ctx *ctx, void *d) { ctx->be->release(ctx, d); }

// n uniform floats in [lo, hi)
static inline float *rnd(uint64_t *st, size_t n, double lo, double hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * tu_uniform(st));
    return x;
}

// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is 0); NaN anywhere gives NaN
static inline double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// The parity tolerance of FP32: ‖gpu − cpu‖ / ‖cpu‖ <= TOL, else fails with the message
// (printf format and args).
#define TOL 1e-4
#define EXPECT_CLOSE(gpu, cpu, n, ...)                                           \
    do {                                                                         \
        double e_ = relerr((gpu), (cpu), (n));                                   \
        if (!(e_ <= TOL)) {                                                      \
            char m_[512];                                                        \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                \
            cr_assert(0, "%s: relative error %g > %g", m_, e_, TOL);             \
        }                                                                        \
    } while (0)

#endif
