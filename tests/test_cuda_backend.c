/*
 * test_cuda_backend.c — the CUDA backend against its CPU twin (the oracle): every
 * primitive of host/backend.h on random inputs of odd shapes (1, 7, 33, 257 rows: not
 * multiples of a warp or a block), run on a CPU and a CUDA context, compared by
 * ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-4 (sample_labels: identical; syevd: eigenvalues close,
 * eigenvectors equal up to sign); the caching pool's reuse; backend selection; and
 * end to end, training and ranking (TracIn; influence functions with the Gauss-Newton
 * Hessian and CG) on both backends.
 *
 * Every test that needs a device first tries to create the CUDA context and skips
 * (cr_skip_test, with the reason) when it cannot: in builds without the CUDA backend
 * and on machines without a GPU. CUDA is touched only inside test bodies (Criterion
 * forks its workers; a child cannot use a parent's CUDA context).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/mathfn.h"
#include "testutil.h"

// ---- contexts and buffers ----

typedef struct {
    infl_ctx *c[2];  // [0] cpu (the oracle), [1] cuda
} pair;

// Creates the CUDA context or skips the test, then the CPU one.
static pair open_pair(void) {
    pair p = {{NULL, NULL}};
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
        cr_skip_test("%s%s", strncmp(why, "no CUDA device", 14) == 0 ? "" : "no CUDA device: ", why);
    }
    p.c[0] = tu_ctx();
#endif
    return p;
}

static void close_pair(pair *p) {
    infl_ctx_free(p->c[0]);
    infl_ctx_free(p->c[1]);
}

#define OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s (%s)", #expr, infl_ctx_error(ctx), (ctx)->be->name)

// Backend memory of `bytes`, filled from host h (when not NULL).
static void *dev(infl_ctx *ctx, const void *h, size_t bytes) {
    void *d = NULL;
    OK(ctx, ctx->be->alloc(ctx, bytes, &d));
    if (h) OK(ctx, ctx->be->upload(ctx, d, h, bytes));
    return d;
}

// A host copy (malloc'd) of `bytes` of backend memory.
static void *host(infl_ctx *ctx, const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    OK(ctx, ctx->be->download(ctx, h, d, bytes));
    return h;
}

static void rel(infl_ctx *ctx, void *d) { ctx->be->release(ctx, d); }

// n uniform floats in [lo, hi)
static float *rnd(uint64_t *st, size_t n, double lo, double hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * tu_uniform(st));
    return x;
}

// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is 0); NaN anywhere gives NaN
static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define TOL 1e-4
// ‖gpu − cpu‖ / ‖cpu‖ <= TOL, else fails with the message (printf format and args).
#define EXPECT_CLOSE(gpu, cpu, n, ...)                                           \
    do {                                                                         \
        double e_ = relerr((gpu), (cpu), (n));                                   \
        if (!(e_ <= TOL)) {                                                      \
            char m_[512];                                                        \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                \
            cr_assert(0, "%s: relative error %g > %g", m_, e_, TOL);             \
        }                                                                        \
    } while (0)

static const int ROWS[] = {1, 7, 33, 257};
static const int COLS[] = {1, 5, 33, 130};
#define NR (int)(sizeof ROWS / sizeof ROWS[0])
#define NC (int)(sizeof COLS / sizeof COLS[0])

// ---- the table and backend selection (no device needed) ----

// Every slot the CPU backend fills, the CUDA backend fills: a slot appended to
// backend.h without its CUDA twin fails here, on machines with or without a GPU.
Test(cuda_backend, table_fills_every_slot) {
#ifndef INFL_HAVE_CUDA
    cr_skip_test("this build has no CUDA backend (no nvcc found, or INFL_CUDA=OFF)");
#else
    cr_assert_str_eq(infl_cuda_backend.name, "cuda");
    typedef void (*fn)(void);
    size_t first = offsetof(infl_backend, init);
    size_t nslots = (sizeof(infl_backend) - first) / sizeof(fn);
    cr_assert_eq(first + nslots * sizeof(fn), sizeof(infl_backend), "infl_backend holds more than pointers");
    for (size_t i = 0; i < nslots; i++) {
        fn g, c;
        memcpy(&g, (const char *)&infl_cuda_backend + first + i * sizeof(fn), sizeof g);
        memcpy(&c, (const char *)&infl_cpu_backend + first + i * sizeof(fn), sizeof c);
        cr_assert(!c || g, "slot %zu of infl_backend (byte offset %zu) has a CPU function but no CUDA one", i,
                  first + i * sizeof(fn));
    }
#endif
}

Test(cuda_backend, selection_and_errors) {
#ifndef INFL_HAVE_CUDA
    cr_skip_test("this build has no CUDA backend (no nvcc found, or INFL_CUDA=OFF)");
#else
    unsetenv("INFL_PRECISION");
    infl_ctx_options o = infl_ctx_options_default();
    infl_ctx *ctx = NULL;
    // a device number that is not a number
    o.backend = "cuda:x1";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "cuda:x1") != NULL, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    // a device number beyond the machine's devices (or no device at all)
    o.backend = "cuda:1000";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_BACKEND);
    cr_assert(strstr(infl_ctx_error(ctx), "no such device") || strstr(infl_ctx_error(ctx), "no CUDA device"), "%s",
              infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    // an unknown precision
    setenv("INFL_PRECISION", "fp8", 1);
    o.backend = "cuda";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "INFL_PRECISION") != NULL, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    unsetenv("INFL_PRECISION");
    // cuda: works, or says why; auto: takes it, or falls back to the CPU and says why
    o.backend = "cuda";
    infl_status st = infl_ctx_create(&o, &ctx);
    int have = st == INFL_OK;
    if (have) {
        cr_assert(strncmp(infl_ctx_backend(ctx), "cuda:0 (", 8) == 0, "%s", infl_ctx_backend(ctx));
        cr_assert_str_eq(infl_ctx_backend_note(ctx), "");  // asked for by name: nothing to note
    } else {
        cr_assert_eq(st, INFL_E_BACKEND);
        cr_assert(strstr(infl_ctx_error(ctx), "no CUDA device") != NULL, "%s", infl_ctx_error(ctx));
    }
    infl_ctx_free(ctx);
    o.backend = "auto";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_str_eq(infl_ctx_error(ctx), "");  // a failed CUDA attempt leaves no error behind
    if (have) {
        cr_assert(strncmp(infl_ctx_backend(ctx), "cuda:0", 6) == 0, "%s", infl_ctx_backend(ctx));
        cr_assert(strstr(infl_ctx_backend_note(ctx), "cuda:0") != NULL, "%s", infl_ctx_backend_note(ctx));
    } else {
        cr_assert(strncmp(infl_ctx_backend(ctx), "cpu", 3) == 0, "%s", infl_ctx_backend(ctx));
        cr_assert(strstr(infl_ctx_backend_note(ctx), "no CUDA device") != NULL, "%s", infl_ctx_backend_note(ctx));
        cr_assert(strstr(infl_ctx_backend_note(ctx), "using the CPU backend") != NULL);
    }
    infl_ctx_free(ctx);
    o.backend = "cpu";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_OK);
    cr_assert_str_eq(infl_ctx_backend_note(ctx), "");
    infl_ctx_free(ctx);
    cr_assert_str_eq(infl_ctx_backend_note(NULL), "");
#endif
}

// ---- memory and copies ----

Test(cuda_backend, upload_download_copy_fill) {
    pair P = open_pair();
    uint64_t st = 11;
    const size_t sizes[] = {1, 7, 33, 257, 100003};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        size_t n = sizes[t];
        float *x = rnd(&st, n, -2, 2);
        float *out[2][3];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            float *a = dev(ctx, x, n * 4), *b = dev(ctx, NULL, n * 4);
            out[s][0] = host(ctx, a, n * 4);  // round trip
            OK(ctx, ctx->be->copy(ctx, b, a, n * 4));
            OK(ctx, ctx->be->fill(ctx, a, 0.25f, n / 2));
            out[s][1] = host(ctx, a, n * 4);
            // overlapping copy (memmove): shift b by 3 floats to the right
            if (n > 3) OK(ctx, ctx->be->copy(ctx, b + 3, b, (n - 3) * 4));
            out[s][2] = host(ctx, b, n * 4);
            rel(ctx, a);
            rel(ctx, b);
        }
        cr_assert(memcmp(out[1][0], x, n * 4) == 0, "round trip of %zu floats", n);
        for (int k = 0; k < 3; k++) {
            cr_assert(memcmp(out[1][k], out[0][k], n * 4) == 0, "output %d of %zu floats differs from the CPU", k, n);
            free(out[0][k]);
            free(out[1][k]);
        }
        free(x);
    }
    close_pair(&P);
}

// The pool hands a released block out again (no cudaMalloc in steady state), and
// blocks that are live at once do not overlap.
Test(cuda_backend, pool_reuses_blocks) {
    pair P = open_pair();
    infl_ctx *ctx = P.c[1];
    void *a = dev(ctx, NULL, 1000), *b = NULL;
    rel(ctx, a);
    b = dev(ctx, NULL, 900);  // the same size class
    cr_assert_eq(a, b, "a released block of the same class is reused");
    rel(ctx, b);
    a = dev(ctx, NULL, (size_t)40 << 20);
    rel(ctx, a);
    b = dev(ctx, NULL, ((size_t)40 << 20) - 12345);  // a large block, reused best-fit
    cr_assert_eq(a, b);
    rel(ctx, b);
    // many live blocks of mixed sizes: disjoint, and all writable
    enum { NB = 64 };
    char *blk[NB];
    size_t sz[NB];
    uint64_t st = 5;
    for (int i = 0; i < NB; i++) {
        sz[i] = 1 + (size_t)(tu_uniform(&st) * 70000);
        blk[i] = dev(ctx, NULL, sz[i]);
        OK(ctx, ctx->be->fill(ctx, (float *)blk[i], (float)i, sz[i] / 4));
    }
    for (int i = 0; i < NB; i++)
        for (int j = i + 1; j < NB; j++)
            cr_assert(blk[i] + sz[i] <= blk[j] || blk[j] + sz[j] <= blk[i], "blocks %d and %d overlap", i, j);
    for (int i = 0; i < NB; i++) {
        float *h = host(ctx, blk[i], sz[i] / 4 * 4);
        for (size_t k = 0; k < sz[i] / 4; k++) cr_assert_eq(h[k], (float)i);
        free(h);
        rel(ctx, blk[i]);
    }
    rel(ctx, NULL);  // accepted
    close_pair(&P);
}

Test(cuda_backend, copy_2d) {
    pair P = open_pair();
    uint64_t st = 12;
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) {
            int rows = ROWS[r], cols = COLS[c], lds = cols + 3, ldd = cols + 1;
            float *src = rnd(&st, (size_t)rows * lds, -1, 1), *dst0 = rnd(&st, (size_t)rows * ldd, -1, 1);
            float *out[2];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *S = dev(ctx, src, (size_t)rows * lds * 4), *D = dev(ctx, dst0, (size_t)rows * ldd * 4);
                OK(ctx, ctx->be->copy_2d(ctx, D, ldd, S, lds, rows, cols));
                out[s] = host(ctx, D, (size_t)rows * ldd * 4);
                rel(ctx, S);
                rel(ctx, D);
            }
            cr_assert(memcmp(out[1], out[0], (size_t)rows * ldd * 4) == 0, "copy_2d %d x %d", rows, cols);
            free(out[0]);
            free(out[1]);
            free(src);
            free(dst0);
        }
    close_pair(&P);
}

// ---- BLAS ----

Test(cuda_backend, sgemm) {
    pair P = open_pair();
    uint64_t st = 13;
    const int shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {33, 7, 257}, {257, 130, 33}, {5, 3, 0}, {130, 1, 7}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.7f, 0.3f}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int q = 0; q < 2; q++) {
                    int m = shapes[t][0], n = shapes[t][1], k = shapes[t][2];
                    // op(A) (m, k), op(B) (k, n), stored row-major with padded leading dimensions
                    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                    int lda = ac + 2, ldb = bc + 1, ldc = n + 3;
                    size_t na = (size_t)ar * lda, nb = (size_t)br * ldb, nc = (size_t)m * ldc;
                    float *A = rnd(&st, na, -1, 1), *B = rnd(&st, nb, -1, 1), *C0 = rnd(&st, nc, -1, 1);
                    float *out[2];
                    for (int s = 0; s < 2; s++) {
                        infl_ctx *ctx = P.c[s];
                        float *dA = dev(ctx, A, (na ? na : 1) * 4), *dB = dev(ctx, B, (nb ? nb : 1) * 4);
                        float *dC = dev(ctx, C0, nc * 4);
                        OK(ctx, ctx->be->sgemm(ctx, ta ? INFL_T : INFL_N, tb ? INFL_T : INFL_N, m, n, k, ab[q][0], dA,
                                               lda < 1 ? 1 : lda, dB, ldb, ab[q][1], dC, ldc));
                        out[s] = host(ctx, dC, nc * 4);
                        rel(ctx, dA);
                        rel(ctx, dB);
                        rel(ctx, dC);
                    }
                    // the padding columns of C are untouched by both
                    for (int i = 0; i < m; i++)
                        for (int j = n; j < ldc; j++)
                            cr_assert_eq(out[1][(size_t)i * ldc + j], C0[(size_t)i * ldc + j], "padding of C written");
                    EXPECT_CLOSE(out[1], out[0], nc, "sgemm %c%c m=%d n=%d k=%d alpha=%g beta=%g", ta ? 'T' : 'N',
                                 tb ? 'T' : 'N', m, n, k, ab[q][0], ab[q][1]);
                    free(out[0]);
                    free(out[1]);
                    free(A);
                    free(B);
                    free(C0);
                }
    close_pair(&P);
}

// ---- row/column operations, vector updates ----

Test(cuda_backend, add_row_col_sum_row_dot) {
    pair P = open_pair();
    uint64_t st = 14;
    const int rows_cs[] = {1, 7, 33, 257, 3001};
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < NC; c++) {
            int rows = rows_cs[r], cols = COLS[c];
            size_t n = (size_t)rows * cols;
            float *X = rnd(&st, n, -2, 2), *Y = rnd(&st, n, -2, 2), *b = rnd(&st, cols, -1, 1);
            float *o0 = rnd(&st, rows > cols ? rows : cols, -1, 1);
            float *out[2][4];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *dX = dev(ctx, X, n * 4), *dY = dev(ctx, Y, n * 4), *db = dev(ctx, b, cols * 4);
                float *cs = dev(ctx, o0, cols * 4), *rd = dev(ctx, o0, rows * 4), *rd0 = dev(ctx, o0, rows * 4);
                OK(ctx, ctx->be->col_sum(ctx, cs, dX, rows, cols, 0.5f, 0.25f));
                OK(ctx, ctx->be->row_dot(ctx, rd, dX, dY, rows, cols, 1.5f, 0.5f));
                OK(ctx, ctx->be->row_dot(ctx, rd0, dX, dY, rows, cols, -1.0f, 0.0f));
                OK(ctx, ctx->be->add_row(ctx, dX, db, rows, cols));
                out[s][0] = host(ctx, cs, cols * 4);
                out[s][1] = host(ctx, rd, rows * 4);
                out[s][2] = host(ctx, rd0, rows * 4);
                out[s][3] = host(ctx, dX, n * 4);
                rel(ctx, dX), rel(ctx, dY), rel(ctx, db), rel(ctx, cs), rel(ctx, rd), rel(ctx, rd0);
            }
            const char *what[] = {"col_sum", "row_dot", "row_dot (beta 0)", "add_row"};
            size_t len[] = {(size_t)cols, (size_t)rows, (size_t)rows, n};
            for (int k = 0; k < 4; k++) {
                EXPECT_CLOSE(out[1][k], out[0][k], len[k], "%s rows=%d cols=%d", what[k], rows, cols);
                free(out[0][k]);
                free(out[1][k]);
            }
            free(X), free(Y), free(b), free(o0);
        }
    close_pair(&P);
}

Test(cuda_backend, axpby_sgd_step_mul_dot) {
    pair P = open_pair();
    uint64_t st = 15;
    const size_t sizes[] = {1, 7, 33, 257, 4097, 300001};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        size_t n = sizes[t];
        float *x = rnd(&st, n, -2, 2), *y = rnd(&st, n, -2, 2), *w = rnd(&st, n, -1, 1), *v = rnd(&st, n, -1, 1);
        float *out[2][5];
        double d[2], dd[2];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            float *dx = dev(ctx, x, n * 4), *dy = dev(ctx, y, n * 4), *dy0 = dev(ctx, y, n * 4);
            float *dw = dev(ctx, w, n * 4), *dv = dev(ctx, v, n * 4), *dm = dev(ctx, NULL, n * 4);
            OK(ctx, ctx->be->dot(ctx, dx, dy, n, &d[s]));
            OK(ctx, ctx->be->dot(ctx, dx, dx, n, &dd[s]));
            OK(ctx, ctx->be->axpby(ctx, dy, dx, 0.75f, -1.25f, n));
            OK(ctx, ctx->be->axpby(ctx, dy0, dx, 2.0f, 0.0f, n));
            OK(ctx, ctx->be->sgd_step(ctx, dw, dv, dx, 0.05f, 0.9f, 1e-2f, n));
            OK(ctx, ctx->be->mul(ctx, dm, dx, dy, n));
            OK(ctx, ctx->be->mul(ctx, dx, dx, dy, n));  // out aliases a
            out[s][0] = host(ctx, dy, n * 4);
            out[s][1] = host(ctx, dy0, n * 4);
            out[s][2] = host(ctx, dw, n * 4);
            out[s][3] = host(ctx, dv, n * 4);
            out[s][4] = host(ctx, dm, n * 4);
            float *alias = host(ctx, dx, n * 4);
            cr_assert(memcmp(alias, out[s][4], n * 4) == 0, "mul with out aliasing a (%s)", ctx->be->name);
            free(alias);
            rel(ctx, dx), rel(ctx, dy), rel(ctx, dy0), rel(ctx, dw), rel(ctx, dv), rel(ctx, dm);
        }
        // float64 sums of exact float64 products: only the order differs
        double mag = 0;
        for (size_t i = 0; i < n; i++) mag += fabs((double)x[i] * y[i]);
        cr_assert(fabs(d[1] - d[0]) <= 1e-12 * mag + 1e-300, "dot n=%zu: %.17g vs %.17g", n, d[1], d[0]);
        cr_assert(fabs(dd[1] - dd[0]) <= 1e-12 * dd[0], "dot n=%zu: %.17g vs %.17g", n, dd[1], dd[0]);
        const char *what[] = {"axpby", "axpby (b 0)", "sgd_step w", "sgd_step v", "mul"};
        for (int k = 0; k < 5; k++) {
            EXPECT_CLOSE(out[1][k], out[0][k], n, "%s n=%zu", what[k], n);
            free(out[0][k]);
            free(out[1][k]);
        }
        free(x), free(y), free(w), free(v);
    }
    close_pair(&P);
}

// ---- activations ----

Test(cuda_backend, activations) {
    pair P = open_pair();
    uint64_t st = 16;
    const size_t sizes[] = {1, 7, 33, 257, 70001};
    for (int a = 0; a < 3; a++)
        for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
            size_t n = sizes[t];
            infl_activation act = (infl_activation)a;
            float *Z = rnd(&st, n, -4, 4), *G = rnd(&st, n, -1, 1);
            float *out[2][4];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *dZ = dev(ctx, Z, n * 4), *dG = dev(ctx, G, n * 4), *o = dev(ctx, NULL, n * 4);
                float *o2 = dev(ctx, NULL, n * 4), *o3 = dev(ctx, G, n * 4);
                OK(ctx, ctx->be->act_forward(ctx, act, o, dZ, n));
                OK(ctx, ctx->be->act_backward(ctx, act, o2, dG, dZ, n));
                OK(ctx, ctx->be->act_second(ctx, act, o3, o3, dZ, n));  // out aliases x
                OK(ctx, ctx->be->act_backward(ctx, act, dG, dG, dZ, n));  // dZ aliases dA
                out[s][0] = host(ctx, o, n * 4);
                out[s][1] = host(ctx, o2, n * 4);
                out[s][2] = host(ctx, o3, n * 4);
                out[s][3] = host(ctx, dG, n * 4);
                rel(ctx, dZ), rel(ctx, dG), rel(ctx, o), rel(ctx, o2), rel(ctx, o3);
            }
            const char *what[] = {"act_forward", "act_backward", "act_second", "act_backward in place"};
            for (int k = 0; k < 4; k++) {
                if (a == INFL_ACT_RELU && k == 2) {  // φ'' = 0: both exactly zero
                    for (size_t i = 0; i < n; i++) cr_assert_eq(out[1][k][i], 0.0f);
                } else {
                    EXPECT_CLOSE(out[1][k], out[0][k], n, "%s %s n=%zu", what[k], infl_act_name(act), n);
                }
                free(out[0][k]);
                free(out[1][k]);
            }
            free(Z), free(G);
        }
    close_pair(&P);
}

// ---- losses ----

static int classes_of(infl_loss l, int K) { return l == INFL_LOSS_SIGMOID_CE ? 2 : l == INFL_LOSS_MSE ? 0 : K; }

Test(cuda_backend, loss_grad_and_hvp) {
    pair P = open_pair();
    uint64_t st = 17;
    const int Ks[] = {2, 10, 33};
    for (int l = 0; l < 3; l++)
        for (int r = 0; r < NR; r++)
            for (int kk = 0; kk < 3; kk++) {
                infl_loss loss = (infl_loss)l;
                int B = ROWS[r], K = loss == INFL_LOSS_SIGMOID_CE ? 1 : Ks[kk];
                size_t n = (size_t)B * K;
                float *Z = rnd(&st, n, -5, 5), *R = rnd(&st, n, -1, 1), *T = rnd(&st, n, -2, 2);
                int32_t *y = malloc(B * sizeof(int32_t));
                for (int i = 0; i < B; i++) y[i] = (int32_t)(tu_uniform(&st) * (classes_of(loss, K) ? classes_of(loss, K) : 1));
                float *out[2][3];
                int32_t *cor[2];
                for (int s = 0; s < 2; s++) {
                    infl_ctx *ctx = P.c[s];
                    float *dZ = dev(ctx, Z, n * 4), *dR = dev(ctx, R, n * 4), *dT = dev(ctx, T, n * 4);
                    int32_t *dy = dev(ctx, y, B * 4), *dc = dev(ctx, NULL, B * 4);
                    float *dl = dev(ctx, NULL, B * 4), *dg = dev(ctx, NULL, n * 4), *dh = dev(ctx, NULL, n * 4);
                    const int32_t *yy = loss == INFL_LOSS_MSE ? NULL : dy;
                    const float *yf = loss == INFL_LOSS_MSE ? dT : NULL;
                    OK(ctx, ctx->be->loss_grad(ctx, loss, dZ, yy, yf, B, K, dl, dg, dc));
                    OK(ctx, ctx->be->loss_grad(ctx, loss, dZ, yy, yf, B, K, NULL, NULL, NULL));  // all optional
                    OK(ctx, ctx->be->loss_hvp(ctx, loss, dZ, dR, B, K, dh));
                    out[s][0] = host(ctx, dl, B * 4);
                    out[s][1] = host(ctx, dg, n * 4);
                    out[s][2] = host(ctx, dh, n * 4);
                    cor[s] = host(ctx, dc, B * 4);
                    rel(ctx, dZ), rel(ctx, dR), rel(ctx, dT), rel(ctx, dy), rel(ctx, dc), rel(ctx, dl), rel(ctx, dg),
                        rel(ctx, dh);
                }
                const char *what[] = {"loss", "dlogits", "loss_hvp"};
                size_t len[] = {(size_t)B, n, n};
                for (int k = 0; k < 3; k++) {
                    EXPECT_CLOSE(out[1][k], out[0][k], len[k], "%s of %s B=%d K=%d", what[k], infl_loss_name(loss),
                                 B, K);
                    free(out[0][k]);
                    free(out[1][k]);
                }
                cr_assert(memcmp(cor[1], cor[0], B * 4) == 0, "correct of %s B=%d K=%d", infl_loss_name(loss), B, K);
                free(cor[0]), free(cor[1]);
                free(Z), free(R), free(T), free(y);
            }
    close_pair(&P);
}

// Out-of-range labels: the same status and detail on both backends (the first bad row).
Test(cuda_backend, loss_grad_bad_label) {
    pair P = open_pair();
    int B = 33, K = 7;
    float *Z = calloc((size_t)B * K, sizeof(float));
    int32_t y[33] = {0};
    y[20] = 7;
    y[31] = -1;
    for (int l = 0; l < 2; l++) {
        infl_loss loss = (infl_loss)l;  // softmax_ce (labels 0..6), sigmoid_ce (0, 1)
        int k = loss == INFL_LOSS_SIGMOID_CE ? 1 : K;
        char detail[2][256];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            float *dZ = dev(ctx, Z, (size_t)B * k * 4), *dg = dev(ctx, NULL, (size_t)B * k * 4);
            int32_t *dy = dev(ctx, y, sizeof y);
            cr_assert_eq(ctx->be->loss_grad(ctx, loss, dZ, dy, NULL, B, k, NULL, dg, NULL), INFL_E_VALUE);
            snprintf(detail[s], sizeof detail[s], "%s", infl_ctx_error(ctx));
            cr_assert_eq(ctx->be->loss_grad(ctx, loss, dZ, NULL, NULL, B, k, NULL, dg, NULL), INFL_E_ARG);
            rel(ctx, dZ), rel(ctx, dg), rel(ctx, dy);
        }
        cr_assert_str_eq(detail[1], detail[0]);
        cr_assert(strstr(detail[1], "example 20") != NULL, "%s", detail[1]);
    }
    free(Z);
    close_pair(&P);
}

// ---- EK-FAC primitives ----

Test(cuda_backend, outer_rows) {
    pair P = open_pair();
    uint64_t st = 18;
    const int bs[] = {1, 7, 33}, douts[] = {1, 5, 10}, dins[] = {1, 7, 33};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++) {
                int b = bs[i], dout = douts[j], din = dins[k];
                size_t ng = (size_t)b * dout * (din + 1);
                float *D = rnd(&st, (size_t)b * dout, -1, 1), *A = rnd(&st, (size_t)b * din, -1, 1);
                float *out[2];
                for (int s = 0; s < 2; s++) {
                    infl_ctx *ctx = P.c[s];
                    float *dD = dev(ctx, D, (size_t)b * dout * 4), *dA = dev(ctx, A, (size_t)b * din * 4);
                    float *dG = dev(ctx, NULL, ng * 4);
                    OK(ctx, ctx->be->outer_rows(ctx, dG, dD, dA, b, dout, din));
                    out[s] = host(ctx, dG, ng * 4);
                    rel(ctx, dD), rel(ctx, dA), rel(ctx, dG);
                }
                // products of two floats: exact in both
                cr_assert(memcmp(out[1], out[0], ng * 4) == 0, "outer_rows b=%d dout=%d din=%d", b, dout, din);
                free(out[0]), free(out[1]), free(D), free(A);
            }
    close_pair(&P);
}

Test(cuda_backend, sample_labels_identical) {
    pair P = open_pair();
    uint64_t st = 19;
    const int Ks[] = {1, 7, 10, 3};
    const infl_loss losses[] = {INFL_LOSS_SIGMOID_CE, INFL_LOSS_SOFTMAX_CE, INFL_LOSS_SOFTMAX_CE, INFL_LOSS_MSE};
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < NR; r++) {
            infl_loss loss = losses[c];
            int B = ROWS[r] * 4 + 1, K = Ks[c];  // up to 1029 rows: several blocks
            size_t n = (size_t)B * K;
            float *Z = rnd(&st, n, -3, 3);
            int32_t *y[2];
            float *t[2];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *dZ = dev(ctx, Z, n * 4), *dt = dev(ctx, NULL, n * 4);
                int32_t *dy = dev(ctx, NULL, B * 4);
                OK(ctx, ctx->be->fill(ctx, (float *)dy, 0.0f, B));
                OK(ctx, ctx->be->fill(ctx, dt, 0.0f, n));
                OK(ctx, ctx->be->sample_labels(ctx, loss, dZ, B, K, 0x5eedull + c, 1000 + r, loss == INFL_LOSS_MSE ? NULL : dy,
                                               loss == INFL_LOSS_MSE ? dt : NULL));
                y[s] = host(ctx, dy, B * 4);
                t[s] = host(ctx, dt, n * 4);
                rel(ctx, dZ), rel(ctx, dt), rel(ctx, dy);
            }
            cr_assert(memcmp(y[1], y[0], B * 4) == 0, "sampled labels of %s B=%d K=%d differ", infl_loss_name(loss), B,
                      K);
            cr_assert(memcmp(t[1], t[0], n * 4) == 0, "sampled targets of %s B=%d K=%d differ", infl_loss_name(loss), B,
                      K);
            // not degenerate: the labels take more than one value
            if (loss != INFL_LOSS_MSE && B > 30) {
                int distinct = 0;
                for (int i = 1; i < B; i++) distinct |= y[0][i] != y[0][0];
                cr_assert(distinct);
            }
            free(y[0]), free(y[1]), free(t[0]), free(t[1]), free(Z);
        }
    close_pair(&P);
}

Test(cuda_backend, syevd) {
    pair P = open_pair();
    uint64_t st = 20;
    const int ns[] = {1, 2, 7, 33, 130};
    for (int t = 0; t < 5; t++) {
        int n = ns[t];
        size_t nn = (size_t)n * n;
        double *A = malloc(nn * sizeof(double));
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) A[(size_t)i * n + j] = A[(size_t)j * n + i] = 2.0 * tu_uniform(&st) - 1.0;
        double *V[2], *w[2];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            double *dA = dev(ctx, A, nn * 8), *dw = dev(ctx, NULL, (size_t)n * 8);
            OK(ctx, ctx->be->syevd(ctx, dA, dw, n));
            V[s] = host(ctx, dA, nn * 8);
            w[s] = host(ctx, dw, (size_t)n * 8);
            rel(ctx, dA), rel(ctx, dw);
        }
        double scale = 0;
        for (int i = 0; i < n; i++) scale = fmax(scale, fabs(w[0][i]));
        for (int i = 0; i < n; i++) {
            cr_assert(fabs(w[1][i] - w[0][i]) <= 1e-10 * scale, "n=%d: eigenvalue %d: %.17g vs %.17g", n, i, w[1][i],
                      w[0][i]);
            if (i) cr_assert(w[1][i] >= w[1][i - 1], "eigenvalues ascending");
            // row i is the eigenvector of w[i]: A v = w v, and it matches the CPU's up to sign
            const double *v = V[1] + (size_t)i * n, *u = V[0] + (size_t)i * n;
            double res = 0, dot = 0;
            for (int r = 0; r < n; r++) {
                double av = 0;
                for (int c = 0; c < n; c++) av += A[(size_t)r * n + c] * v[c];
                res = fmax(res, fabs(av - w[1][i] * v[r]));
                dot += u[r] * v[r];
            }
            cr_assert(res <= 1e-10 * (scale + 1), "n=%d: |A v - w v| = %g for eigenvector %d", n, res, i);
            cr_assert(fabs(fabs(dot) - 1.0) <= 1e-8, "n=%d: eigenvector %d differs from the CPU's (|u.v| = %.12f)", n,
                      i, fabs(dot));
        }
        free(V[0]), free(V[1]), free(w[0]), free(w[1]), free(A);
    }
    close_pair(&P);
}

// ---- end to end: train, then rank, on both backends ----

// Top-k lists of two backends: the same indices, except where two scores are so
// close (a near-tie within the tolerance) that their order may swap; scores within
// 1e-4 of the query's largest |score|.
static void same_ranking(const infl_rank_result *a, const infl_rank_result *b, const char *what) {
    cr_assert_eq(a->M, b->M);
    cr_assert_eq(a->k, b->k);
    for (int q = 0; q < a->M; q++) {
        double scale = 0;
        for (int j = 0; j < a->k; j++) {
            scale = fmax(scale, fabs(a->top_score[q * a->k + j]));
            scale = fmax(scale, fabs(a->bottom_score[q * a->k + j]));
        }
        for (int j = 0; j < a->k; j++) {
            size_t i = (size_t)q * a->k + j;
            cr_assert(fabs(b->top_score[i] - a->top_score[i]) <= TOL * scale, "%s: query %d top %d: %g (cuda) vs %g",
                      what, q, j, b->top_score[i], a->top_score[i]);
            cr_assert(fabs(b->bottom_score[i] - a->bottom_score[i]) <= TOL * scale,
                      "%s: query %d bottom %d: %g (cuda) vs %g", what, q, j, b->bottom_score[i], a->bottom_score[i]);
            if (b->top_index[i] != a->top_index[i]) {
                // a swap is allowed only with a neighbour of (nearly) the same score
                int ok = 0;
                for (int d = -1; d <= 1; d += 2) {
                    int jj = j + d;
                    if (jj < 0 || jj >= a->k) continue;
                    size_t ii = (size_t)q * a->k + jj;
                    ok |= b->top_index[i] == a->top_index[ii] &&
                          fabs(a->top_score[ii] - a->top_score[i]) <= TOL * scale;
                }
                cr_assert(ok, "%s: query %d top %d: index %lld (cuda) vs %lld", what, q, j, (long long)b->top_index[i],
                          (long long)a->top_index[i]);
            }
            if (b->bottom_index[i] != a->bottom_index[i]) {
                int ok = 0;
                for (int d = -1; d <= 1; d += 2) {
                    int jj = j + d;
                    if (jj < 0 || jj >= a->k) continue;
                    size_t ii = (size_t)q * a->k + jj;
                    ok |= b->bottom_index[i] == a->bottom_index[ii] &&
                          fabs(a->bottom_score[ii] - a->bottom_score[i]) <= TOL * scale;
                }
                cr_assert(ok, "%s: query %d bottom %d: index %lld (cuda) vs %lld", what, q, j,
                          (long long)b->bottom_index[i], (long long)a->bottom_index[i]);
            }
        }
    }
}

Test(cuda_backend, train_and_rank_match_cpu, .timeout = 600) {
    pair P = open_pair();
    const char *data = tu_path("d.h5");
    tu_make_blobs(data, 257, 6, 3, 7);
    char train_ref[1200], query_ref[1200];
    snprintf(train_ref, sizeof train_ref, "%s:/train", data);
    snprintf(query_ref, sizeof query_ref, "%s:/test[0:7]", data);
    char run[2][1100];
    infl_train_report rep[2];
    for (int s = 0; s < 2; s++) {
        snprintf(run[s], sizeof run[s], "%s", tu_path(s ? "run-cuda.h5" : "run-cpu.h5"));
        infl_train_options o = infl_train_options_default();
        o.data = train_ref;
        o.nlayers = 2;
        o.widths[0] = 6;
        o.widths[1] = 9;
        o.widths[2] = 3;
        o.activation = INFL_ACT_TANH;
        o.epochs = 2;
        o.batch = 16;
        o.lr = 0.05;
        o.weight_decay = 1e-3;
        o.checkpoint_every = 10;
        o.optimizer = INFL_OPT_SGD;
        OK(P.c[s], infl_train(P.c[s], &o, run[s], &rep[s]));
    }
    cr_assert_eq(rep[1].steps, rep[0].steps);
    cr_assert(fabs(rep[1].final_loss - rep[0].final_loss) <= TOL * fabs(rep[0].final_loss), "final loss %.9g vs %.9g",
              rep[1].final_loss, rep[0].final_loss);
    // rank with the same (CPU-trained) run on both backends
    for (int m = 0; m < 2; m++) {
        infl_rank_result *r[2];
        for (int s = 0; s < 2; s++) {
            infl_rank_options o = infl_rank_options_default();
            o.run = run[0];
            o.train = train_ref;
            o.query = query_ref;
            o.top = 5;
            o.shard_rows = 100;  // does not divide 257
            if (m == 1) {
                o.method = INFL_METHOD_IF;
                o.hessian = 1;  // Gauss-Newton
                o.solver = 1;   // CG
                o.damping = 0.1;
                o.cg_tol = 1e-7;
                o.cg_iters = 300;
            } else {
                o.method = INFL_METHOD_TRACIN;
            }
            OK(P.c[s], infl_rank(P.c[s], &o, &r[s]));
        }
        cr_assert(r[0]->checkpoints >= 2 || m == 1);
        same_ranking(r[0], r[1], m ? "if (ggn, cg)" : "tracin");
        infl_rank_result_free(r[0]);
        infl_rank_result_free(r[1]);
    }
    close_pair(&P);
}
