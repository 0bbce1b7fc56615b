/*
 * test_cuda_backend.c — the CUDA backend against its CPU twin (the oracle): every
 * primitive of host/backend.h (but the transformer primitives: test_cuda_nn.c) on
 * random inputs of odd shapes (1, 7, 33, 257 rows: not multiples of a warp or a
 * block), run on a CPU and a CUDA context, compared by
 * ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-4 (sample_labels: the same but at class boundaries; syevd: eigenvalues close,
 * eigenvectors equal up to sign); the caching pool's reuse; backend selection; and
 * end to end on both backends, on one small model and data set: training (final
 * loss), rank with every method (graddot, gradcos, tracin, if with exact and GGN
 * Hessians and the direct and CG solvers, ekfac, kfac, diagonal, ekfac with
 * --query-rank: every score within 1e-4 of the query's largest, top-k equal up to
 * near-ties), infl_fit with ekfac, kfac and diagonal on the true Fisher with sampled
 * labels (eigenvalues and Λ within 1e-4 of the layer's largest, eigenvectors up to
 * sign where the eigenvalues are apart), infl_self (tracin, if direct, ekfac) and a
 * tiny infl_lds (the retrained outputs). The train split has more rows than a
 * sub-batch (1024), so the double-buffered overlapped uploads of the scheduler
 * (upload_async, stage.h) and the pinned shard buffers are on the path; their
 * ordering is also tested at the primitive level.
 *
 * A dry run of the tests on a machine without a GPU: INFL_TEST_PAIR_CPU=1 (cudapair.h)
 * makes them compare the CPU backend with itself (the test logic, not the parity).
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
#include "pipelines/attrib.h"
#include "sched/stage.h"
#include "store/store.h"
#include "cudapair.h"
#include "testutil.h"

// ---- contexts and buffers: cudapair.h ----

// The end-to-end tests' pair (cudapair.h: INFL_TEST_PAIR_CPU=1 makes it two CPU contexts).
static pair open_pair_e2e(void) { return open_pair(); }



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
    cr_assert(strstr(infl_ctx_error(ctx), "no such device") || strstr(infl_ctx_error(ctx), "no usable CUDA device"),
              "%s", infl_ctx_error(ctx));
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
        cr_assert(strncmp(infl_ctx_error(ctx), "no usable CUDA device (", 23) == 0, "%s", infl_ctx_error(ctx));
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
        // one short line: "no usable CUDA device (why in brief); using the CPU", not the runtime's message
        const char *note = infl_ctx_backend_note(ctx);
        cr_assert(strncmp(note, "no usable CUDA device (", 23) == 0, "%s", note);
        size_t n = strlen(note);
        cr_assert(n > 36 && strcmp(note + n - 15, "; using the CPU") == 0, "%s", note);
        cr_assert(!strchr(note, ':') && !strchr(note, '\n') && n < 120, "%s", note);
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

// Out-of-range labels are the caller's to check on the host (backend.h, loss_grad):
// the CPU backend returns INFL_E_VALUE naming the first bad example; CUDA reads no
// labels back (no host synchronisation) and instead gives each bad row a NaN loss, NaN
// dlogits and correct 0, without indexing anything by the label (one is 2^30: an
// unguarded read would fault), while the good rows get the CPU's values.
Test(cuda_backend, loss_grad_bad_label) {
    pair P = open_pair();
    uint64_t st = 23;
    int B = 33, K = 7;
    float *Z = rnd(&st, (size_t)B * K, -3, 3);
    int32_t y[33], yok[33];
    for (int l = 0; l < 2; l++) {
        infl_loss loss = (infl_loss)l;  // softmax_ce (labels 0..6), sigmoid_ce (0, 1)
        int k = loss == INFL_LOSS_SIGMOID_CE ? 1 : K, hi = loss == INFL_LOSS_SIGMOID_CE ? 2 : K;
        for (int i = 0; i < B; i++) y[i] = yok[i] = (int32_t)(tu_uniform(&st) * hi);
        y[5] = 1 << 30;
        y[20] = 7;
        y[31] = -1;
        yok[5] = yok[20] = yok[31] = 0;
        size_t n = (size_t)B * k;
        // the CPU: an error naming the first bad example
        infl_ctx *cpu = P.c[0];
        float *dZ = dev(cpu, Z, n * 4), *dg = dev(cpu, NULL, n * 4), *dl = dev(cpu, NULL, B * 4);
        int32_t *dy = dev(cpu, y, sizeof y), *dyok = dev(cpu, yok, sizeof yok), *dc = dev(cpu, NULL, B * 4);
        cr_assert_eq(cpu->be->loss_grad(cpu, loss, dZ, dy, NULL, B, k, NULL, dg, NULL), INFL_E_VALUE);
        cr_assert(strstr(infl_ctx_error(cpu), "example 5") != NULL, "%s", infl_ctx_error(cpu));
        cr_assert_eq(cpu->be->loss_grad(cpu, loss, dZ, NULL, NULL, B, k, NULL, dg, NULL), INFL_E_ARG);
        OK(cpu, cpu->be->loss_grad(cpu, loss, dZ, dyok, NULL, B, k, dl, dg, dc));
        float *l0 = host(cpu, dl, B * 4), *g0 = host(cpu, dg, n * 4);
        int32_t *c0 = host(cpu, dc, B * 4);
        rel(cpu, dZ), rel(cpu, dg), rel(cpu, dl), rel(cpu, dy), rel(cpu, dyok), rel(cpu, dc);
        // CUDA: NaN rows where the label is bad, the CPU's values elsewhere
        infl_ctx *gpu = P.c[1];
        dZ = dev(gpu, Z, n * 4), dg = dev(gpu, NULL, n * 4), dl = dev(gpu, NULL, B * 4);
        dy = dev(gpu, y, sizeof y), dc = dev(gpu, NULL, B * 4);
        OK(gpu, gpu->be->loss_grad(gpu, loss, dZ, dy, NULL, B, k, dl, dg, dc));
        cr_assert_eq(gpu->be->loss_grad(gpu, loss, dZ, NULL, NULL, B, k, NULL, dg, NULL), INFL_E_ARG);
        float *l1 = host(gpu, dl, B * 4), *g1 = host(gpu, dg, n * 4);
        int32_t *c1 = host(gpu, dc, B * 4);
        rel(gpu, dZ), rel(gpu, dg), rel(gpu, dl), rel(gpu, dy), rel(gpu, dc);
        for (int i = 0; i < B; i++) {
            int bad = i == 5 || i == 20 || i == 31;
            if (bad) {
                cr_assert(isnan(l1[i]), "%s: loss of bad row %d is %g, not NaN", infl_loss_name(loss), i, l1[i]);
                for (int j = 0; j < k; j++) cr_assert(isnan(g1[(size_t)i * k + j]), "dlogits of bad row %d", i);
                cr_assert_eq(c1[i], 0, "correct of bad row %d", i);
                continue;
            }
            EXPECT_CLOSE(l1 + i, l0 + i, 1, "%s loss row %d", infl_loss_name(loss), i);
            EXPECT_CLOSE(g1 + (size_t)i * k, g0 + (size_t)i * k, k, "%s dlogits row %d", infl_loss_name(loss), i);
            cr_assert_eq(c1[i], c0[i], "correct row %d", i);
        }
        free(l0), free(g0), free(c0), free(l1), free(g1), free(c1);
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

// Whether the draw of example `index` lies within 1e-12 (relative) of a class boundary
// of the cumulative probabilities at logits z (K): where backends' float64 exp may
// round it to either side (backend.h, sample_labels).
static int near_boundary(infl_loss loss, const float *z, int K, uint64_t seed, uint64_t index) {
    double u = infl_rng_uniform(seed, INFL_RNG_LABELS, index, 0);
    if (loss == INFL_LOSS_SIGMOID_CE) return fabs(u - 1.0 / (1.0 + exp(-(double)z[0]))) <= 1e-12;
    float m = z[0];
    for (int j = 1; j < K; j++) m = z[j] > m ? z[j] : m;
    double s = 0, c = 0;
    for (int j = 0; j < K; j++) s += exp((double)z[j] - m);
    for (int j = 0; j < K; j++) {
        c += exp((double)z[j] - m);
        if (fabs(u * s - c) <= 1e-12 * s) return 1;
    }
    return 0;
}

Test(cuda_backend, sample_labels_agree) {
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
            // backend.h's guarantee: the same label unless the draw is within rounding of a
            // class boundary; targets the same or 1 ulp apart
            for (int i = 0; i < B && loss != INFL_LOSS_MSE; i++)
                cr_assert(y[1][i] == y[0][i] || near_boundary(loss, Z + (size_t)i * K, K, 0x5eedull + c,
                                                              (uint64_t)(1000 + r + i)),
                          "sampled label %d of %s B=%d K=%d: %d vs %d, not at a class boundary", i,
                          infl_loss_name(loss), B, K, y[1][i], y[0][i]);
            for (size_t i = 0; i < n; i++)
                cr_assert(t[1][i] == t[0][i] || nextafterf(t[0][i], t[1][i]) == t[1][i],
                          "sampled target %zu of %s B=%d K=%d: %.9g vs %.9g", i, infl_loss_name(loss), B, K, t[1][i],
                          t[0][i]);
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

// The projections of a gradient index (core/projgen.h): rademacher entries the same bits,
// gaussian ones within a float ulp (the device's float64 log/sin/cos), for blocks of
// several launch sizes and column offsets.
Test(cuda_backend, proj_gen_parity) {
    pair P = open_pair();
    const int ncs[] = {1, 37, 300}, ks[] = {1, 129, 2048};
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < 3; i++) {
            int nc = ncs[i], k = ks[i];
            size_t n = (size_t)nc * k;
            float *h[2];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *d = dev(ctx, NULL, n * 4);
                OK(ctx, ctx->be->proj_gen(ctx, d, kind, 0xabcdull, 3u * i + 1, 1000ull * i, nc, k, 0.125f));
                h[s] = host(ctx, d, n * 4);
                rel(ctx, d);
            }
            if (kind == 1)
                cr_assert(memcmp(h[0], h[1], n * 4) == 0, "rademacher block %d x %d differs", nc, k);
            else
                for (size_t e = 0; e < n; e++)
                    cr_assert(fabsf(h[1][e] - h[0][e]) <= 2e-7f * fmaxf(1.0f, fabsf(h[0][e])),
                              "gaussian entry %zu: %a on the GPU, %a on the CPU", e, (double)h[1][e], (double)h[0][e]);
            free(h[0]), free(h[1]);
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

// The top-k eigenpairs (syevd_top) on both backends against the full syevd on the CPU.
Test(cuda_backend, syevd_top) {
    pair P = open_pair();
    uint64_t st = 23;
    const int ns[] = {1, 7, 33, 130}, ks[] = {1, 3, 5, 32};
    for (int t = 0; t < 4; t++) {
        int n = ns[t], k = ks[t] < n ? ks[t] : n;
        size_t nn = (size_t)n * n;
        double *A = malloc(nn * sizeof(double));
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) A[(size_t)i * n + j] = A[(size_t)j * n + i] = 2.0 * tu_uniform(&st) - 1.0;
        // the reference: the full decomposition on the CPU
        infl_ctx *cpu = P.c[0];
        double *dA = dev(cpu, A, nn * 8), *dw = dev(cpu, NULL, (size_t)n * 8);
        OK(cpu, cpu->be->syevd(cpu, dA, dw, n));
        double *Vf = host(cpu, dA, nn * 8), *wf = host(cpu, dw, (size_t)n * 8);
        rel(cpu, dA), rel(cpu, dw);
        double scale = 0;
        for (int i = 0; i < n; i++) scale = fmax(scale, fabs(wf[i]));
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            dA = dev(ctx, A, nn * 8), dw = dev(ctx, NULL, (size_t)k * 8);
            OK(ctx, ctx->be->syevd_top(ctx, dA, dw, n, k));
            double *V = host(ctx, dA, (size_t)k * n * 8), *w = host(ctx, dw, (size_t)k * 8);
            rel(ctx, dA), rel(ctx, dw);
            for (int j = 0; j < k; j++) {
                int i = n - k + j;  // the same eigenpair in the full decomposition
                cr_assert(fabs(w[j] - wf[i]) <= 1e-10 * scale, "%s n=%d k=%d: eigenvalue %d: %.17g vs %.17g",
                          s ? "cuda" : "cpu", n, k, j, w[j], wf[i]);
                double dot = 0;
                for (int r = 0; r < n; r++) dot += V[(size_t)j * n + r] * Vf[(size_t)i * n + r];
                cr_assert(fabs(fabs(dot) - 1.0) <= 1e-8, "%s n=%d: eigenvector %d (|u.v| = %.12f)", s ? "cuda" : "cpu",
                          n, j, fabs(dot));
            }
            free(V), free(w);
        }
        free(Vf), free(wf), free(A);
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

// ---- the scheduler's primitives: pinned host memory, overlapped uploads ----

// The wrappers on a backend without the optional slots (the CPU): aligned host
// memory, uploads that are plain copies, waits that do nothing, slots checked.
Test(cuda_backend, scheduler_wrappers_without_the_slots) {
    infl_ctx *ctx = tu_ctx();
    cr_assert_null(ctx->be->host_alloc);
    cr_assert_null(ctx->be->upload_async);
    float *h = NULL, *d = NULL;
    OK(ctx, infl_be_host_alloc(ctx, 1000 * sizeof(float), (void **)&h, "a test buffer"));
    cr_assert_eq((uintptr_t)h % 64, 0, "host memory is 64-byte aligned");
    for (int i = 0; i < 1000; i++) h[i] = (float)i;
    OK(ctx, infl_be_alloc_f(ctx, &d, 1000, "a test buffer"));
    OK(ctx, infl_be_upload_async(ctx, d, h, 1000 * sizeof(float), INFL_UPLOAD_SLOTS - 1));
    OK(ctx, infl_be_wait_upload(ctx, INFL_UPLOAD_SLOTS - 1));
    cr_assert(memcmp(d, h, 1000 * sizeof(float)) == 0);
    cr_assert_eq(infl_be_upload_async(ctx, d, h, 4, INFL_UPLOAD_SLOTS), INFL_E_ARG);
    cr_assert_eq(infl_be_wait_upload(ctx, -1), INFL_E_ARG);
    void *p = infl_be_host_alloc_hook(4096, ctx);
    cr_assert_not_null(p);
    infl_be_host_free_hook(p, ctx);
    infl_be_host_free(ctx, NULL);
    infl_be_host_free(ctx, h);
    infl_be_free(ctx, d);
#ifndef __SANITIZE_ADDRESS__  // ASan aborts on an allocation this size instead of failing it
    // a failed allocation names what did not fit and the option that makes it smaller
    void *big = NULL;
    cr_assert_eq(infl_be_alloc_hint(ctx, &big, (size_t)1 << 62, "a score block (7 queries x 1024 train rows)",
                                    "fewer queries"),
                 INFL_E_NOMEM);
    cr_assert_null(big);
    cr_assert(strncmp(infl_ctx_error(ctx), "a score block (7 queries x 1024 train rows) (", 45) == 0, "%s",
              infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "; to fit: fewer queries") != NULL, "%s", infl_ctx_error(ctx));
#endif
    infl_ctx_free(ctx);
}

// An overlapped upload does not overwrite what earlier primitives still read; the
// primitives after wait_upload see it; a destination released before the wait is
// not handed out to later work until the copy is done; pinned memory round-trips.
Test(cuda_backend, upload_async_is_ordered) {
    pair P = open_pair();
    infl_ctx *ctx = P.c[1];
    const int n = 1024;  // A (n, n): GEMMs long enough that a racing copy would show
    size_t nn = (size_t)n * n, bytes = nn * sizeof(float);
    uint64_t st = 21;
    float *x0 = rnd(&st, nn, -1, 1), *h1 = NULL;
    OK(ctx, infl_be_host_alloc(ctx, bytes, (void **)&h1, "a test buffer"));
    for (size_t i = 0; i < nn; i++) h1[i] = (float)(i % 977) * 0.5f;
    float *out[2];
    for (int s = 0; s < 2; s++) {
        infl_ctx *c = P.c[s];
        float *A = dev(c, x0, bytes), *C = dev(c, NULL, bytes);
        OK(c, c->be->fill(c, C, 0.0f, nn));
        for (int r = 0; r < 4; r++)  // C += A Aᵀ, four times, all reading A
            OK(c, c->be->sgemm(c, INFL_N, INFL_T, n, n, n, 0.25f, A, n, A, n, 1.0f, C, n));
        if (s == 1) {
            // queued behind the GEMMs: A is replaced only after they are done
            OK(c, infl_be_upload_async(c, A, h1, bytes, 0));
            OK(c, infl_be_wait_upload(c, 0));
            float *B = dev(c, NULL, bytes);
            OK(c, c->be->copy(c, B, A, bytes));
            float *hb = host(c, B, bytes);
            cr_assert(memcmp(hb, h1, bytes) == 0, "the primitives after wait_upload see the upload");
            free(hb);
            rel(c, B);
        }
        out[s] = host(c, C, bytes);
        rel(c, A);
        rel(c, C);
    }
    EXPECT_CLOSE(out[1], out[0], nn, "GEMMs issued before an overlapped upload into their input");
    free(out[0]);
    free(out[1]);
    // released before the wait: the next user of the block runs after the copy
    for (int rep = 0; rep < 4; rep++) {
        float *D = dev(ctx, NULL, bytes);
        OK(ctx, infl_be_upload_async(ctx, D, h1, bytes, 1));
        rel(ctx, D);
        float *E = dev(ctx, NULL, bytes);  // the pool's cached block: D again
        OK(ctx, ctx->be->fill(ctx, E, 7.0f, nn));
        float *he = host(ctx, E, bytes);
        for (size_t i = 0; i < nn; i++) cr_assert_eq(he[i], 7.0f, "rep %d: element %zu overwritten by the copy", rep, i);
        free(he);
        rel(ctx, E);
        OK(ctx, infl_be_wait_upload(ctx, 1));
    }
    infl_be_host_free(ctx, h1);
    free(x0);
    // out of device memory: what did not fit, and the option that lowers it
    void *big = NULL;
    cr_assert_eq(infl_be_alloc_hint(ctx, &big, (size_t)1 << 50, "query gradients", "fewer queries"), INFL_E_NOMEM);
    cr_assert(strstr(infl_ctx_error(ctx), "query gradients (") == infl_ctx_error(ctx), "%s", infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "CUDA device out of memory") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "; to fit: fewer queries") != NULL, "%s", infl_ctx_error(ctx));
    close_pair(&P);
}

// The stager's double-buffered put/take over a shard in pinned memory (sub-batches
// of 7 rows of 33): every row arrives, on both backends, in order.
Test(cuda_backend, stage_double_buffers_sub_batches) {
    pair P = open_pair_e2e();
    uint64_t st = 22;
    const int n = 33, D = 5, B = 7;
    float *x = rnd(&st, (size_t)n * D, -1, 1);
    float *out[2];
    for (int s = 0; s < 2; s++) {
        infl_ctx *ctx = P.c[s];
        infl_shard sh;
        memset(&sh, 0, sizeof sh);
        sh.n = n;
        OK(ctx, infl_be_host_alloc(ctx, (size_t)n * D * sizeof(float), (void **)&sh.x, "a shard"));
        memcpy(sh.x, x, (size_t)n * D * sizeof(float));
        infl_stage sg;
        OK(ctx, infl_stage_alloc(ctx, &sg, NULL, NULL, B, D, 0, 0));
        float *all = dev(ctx, NULL, (size_t)n * D * sizeof(float));
        int cur = 0;
        OK(ctx, infl_stage_put(ctx, &sg, cur, &sh, 0, B, 0));
        for (int r0 = 0; r0 < n; r0 += B, cur ^= 1) {
            int b = r0 + B <= n ? B : n - r0;
            OK(ctx, infl_stage_take(ctx, &sg, cur));
            if (r0 + b < n) OK(ctx, infl_stage_put(ctx, &sg, cur ^ 1, &sh, r0 + b, r0 + b + B <= n ? B : n - r0 - b, 0));
            OK(ctx, ctx->be->copy(ctx, all + (size_t)r0 * D, sg.x[cur], (size_t)b * D * sizeof(float)));
        }
        out[s] = host(ctx, all, (size_t)n * D * sizeof(float));
        rel(ctx, all);
        infl_stage_free(ctx, &sg);
        infl_be_host_free(ctx, sh.x);
    }
    cr_assert(memcmp(out[0], x, (size_t)n * D * sizeof(float)) == 0, "cpu");
    cr_assert(memcmp(out[1], x, (size_t)n * D * sizeof(float)) == 0, "cuda");
    free(out[0]), free(out[1]), free(x);
    close_pair(&P);
}

// ---- end to end: every pipeline on both backends ----

// One small model and data set: blobs of 6 features in 3 classes, 2600 train rows
// (more than a sub-batch of 1024, so sub-batches are double-buffered), an MLP
// 6-9-3 (tanh) trained on the CPU by SGD with several checkpoints.
typedef struct {
    char data[1100], train[1200], query[1200], run[1100];
    int64_t N;
    int M;
} fixture;

#define FX_N 2600
#define FX_M 7
#define FX_SHARD 2000  // two shards: 2000 (sub-batches 1024 + 976) and 600

static void make_fixture(fixture *f) {
    snprintf(f->data, sizeof f->data, "%s", tu_path("d.h5"));
    snprintf(f->run, sizeof f->run, "%s", tu_path("run.h5"));
    tu_make_blobs(f->data, FX_N, 6, 3, 7);
    snprintf(f->train, sizeof f->train, "%s:/train", f->data);
    snprintf(f->query, sizeof f->query, "%s:/test[0:%d]", f->data, FX_M);
    f->N = FX_N;
    f->M = FX_M;
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_default();
    o.data = f->train;
    o.nlayers = 2;
    o.widths[0] = 6;
    o.widths[1] = 9;
    o.widths[2] = 3;
    o.activation = INFL_ACT_TANH;
    o.epochs = 2;
    o.batch = 32;
    o.lr = 0.05;
    o.weight_decay = 1e-3;
    o.checkpoint_every = 60;
    o.optimizer = INFL_OPT_SGD;
    OK(ctx, infl_train(ctx, &o, f->run, NULL));
    infl_ctx_free(ctx);
}

static void fit_on(infl_ctx *ctx, const fixture *f, infl_strategy st, const char *out) {
    infl_fit_options o = infl_fit_options_default();
    o.run = f->run;
    o.strategy = st;
    o.seed = 3;
    o.samples = 2;  // two sampled labels per example: the same on both backends
    o.shard_rows = FX_SHARD;
    o.force = 1;
    OK(ctx, infl_fit(ctx, &o, out, NULL));
}

// Every score within TOL of the query's largest |score| (CPU's).
static void same_scores(const float *cpu, const float *gpu, int M, int64_t N, const char *what) {
    for (int q = 0; q < M; q++) {
        double scale = 0, worst = 0;
        int64_t at = 0;
        for (int64_t j = 0; j < N; j++) scale = fmax(scale, fabs(cpu[(size_t)q * N + j]));
        for (int64_t j = 0; j < N; j++) {
            double e = fabs((double)gpu[(size_t)q * N + j] - cpu[(size_t)q * N + j]);
            if (!(e <= worst)) worst = e, at = j;
        }
        cr_assert(worst <= TOL * scale, "%s: query %d, train row %lld: %g (cuda) vs %g; largest |score| %g", what, q,
                  (long long)at, gpu[(size_t)q * N + at], cpu[(size_t)q * N + at], scale);
    }
}

typedef struct {
    const char *name;
    infl_method method;
    int hessian;  // 0 exact, 1 ggn
    int solver;   // 0 direct, 1 cg
    int query_rank;
    int factors;  // 0 none, 1 the ekfac fit, 2 the diagonal fit
} rank_case;

static const rank_case RANK_CASES[] = {
    {"graddot", INFL_METHOD_GRADDOT, 0, 0, 0, 0},
    {"gradcos", INFL_METHOD_GRADCOS, 0, 0, 0, 0},
    {"tracin", INFL_METHOD_TRACIN, 0, 0, 0, 0},
    {"if (exact, direct)", INFL_METHOD_IF, 0, 0, 0, 0},
    {"if (exact, cg)", INFL_METHOD_IF, 0, 1, 0, 0},
    {"if (ggn, direct)", INFL_METHOD_IF, 1, 0, 0, 0},
    {"if (ggn, cg)", INFL_METHOD_IF, 1, 1, 0, 0},
    {"ekfac", INFL_METHOD_EKFAC, 0, 0, 0, 1},
    {"kfac", INFL_METHOD_KFAC, 0, 0, 0, 1},
    {"diagonal", INFL_METHOD_DIAGONAL, 0, 0, 0, 2},
    {"ekfac --query-rank 2", INFL_METHOD_EKFAC, 0, 0, 2, 1},
};

static infl_rank_options rank_options(const fixture *f, const rank_case *c, const char *const *fac) {
    infl_rank_options o = infl_rank_options_default();
    o.run = f->run;
    o.train = f->train;
    o.query = f->query;
    o.top = 5;
    o.shard_rows = FX_SHARD;
    o.method = c->method;
    if (c->method == INFL_METHOD_IF) {
        o.hessian = c->hessian;
        o.solver = c->solver;
        o.damping = 0.1;
        o.cg_tol = 1e-7;
        o.cg_iters = 300;
    }
    if (c->factors) {
        o.factors = fac[c->factors - 1];
        o.damping_auto = 1;
        o.query_rank = c->query_rank;
    }
    return o;
}

// Factors fitted on the CPU serve both backends' rank (the fit's own parity is below).
Test(cuda_backend, rank_every_method_matches_cpu, .timeout = 900) {
    pair P = open_pair_e2e();
    fixture f;
    make_fixture(&f);
    char fe[1100], fd[1100];
    snprintf(fe, sizeof fe, "%s", tu_path("f-ekfac.h5"));
    snprintf(fd, sizeof fd, "%s", tu_path("f-diag.h5"));
    fit_on(P.c[0], &f, INFL_STRATEGY_EKFAC, fe);
    fit_on(P.c[0], &f, INFL_STRATEGY_DIAGONAL, fd);
    const char *fac[2] = {fe, fd};
    for (size_t k = 0; k < sizeof RANK_CASES / sizeof RANK_CASES[0]; k++) {
        const rank_case *c = &RANK_CASES[k];
        infl_rank_options o = rank_options(&f, c, fac);
        infl_rank_result *r[2];
        float *S[2];
        for (int s = 0; s < 2; s++) {
            attrib_full col = {calloc((size_t)f.M * f.N, sizeof(float)), f.N};
            cr_assert_eq(attrib_rank(P.c[s], &o, attrib_keep_full, &col, &r[s]), INFL_OK, "%s on %s: %s", c->name,
                         P.c[s]->be->name, infl_ctx_error(P.c[s]));
            S[s] = col.S;
        }
        cr_assert_eq(r[1]->N, f.N);
        if (c->method == INFL_METHOD_TRACIN) cr_assert(r[0]->checkpoints >= 3, "%d checkpoints", r[0]->checkpoints);
        same_scores(S[0], S[1], f.M, f.N, c->name);
        same_ranking(r[0], r[1], c->name);
        for (int q = 0; q < f.M; q++) {
            cr_assert_eq(r[1]->query_label[q], r[0]->query_label[q]);
            cr_assert_eq(r[1]->query_pred[q], r[0]->query_pred[q]);
        }
        if (c->query_rank) cr_assert(fabs(r[1]->query_rank_energy - r[0]->query_rank_energy) <= TOL);
        infl_rank_result_free(r[0]);
        infl_rank_result_free(r[1]);
        free(S[0]);
        free(S[1]);
    }
    close_pair(&P);
}

static infl_factors *read_factors(const char *path) {
    infl_ctx *ctx = tu_ctx();
    infl_factors *f = NULL;
    OK(ctx, store_factors_read(ctx, path, &f));
    infl_ctx_free(ctx);
    return f;
}

// Eigenvalues w (n) of two fits within TOL of the largest |w|; eigenvectors (rows of
// Q (n, n)) equal up to sign where the eigenvalue is apart from its neighbours (in a
// near-degenerate cluster any basis of the eigenspace is right), and Q diag(w) Qᵀ
// equal throughout.
static void same_eig(const double *Qc, const double *wc, const double *Qg, const double *wg, int n, const char *what) {
    double scale = 0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(wc[i]));
    for (int i = 0; i < n; i++)
        cr_assert(fabs(wg[i] - wc[i]) <= TOL * scale, "%s: eigenvalue %d: %.9g (cuda) vs %.9g", what, i, wg[i], wc[i]);
    for (int i = 0; i < n; i++) {
        double gap = INFINITY;
        if (i > 0) gap = fmin(gap, wc[i] - wc[i - 1]);
        if (i < n - 1) gap = fmin(gap, wc[i + 1] - wc[i]);
        if (!(gap > 1e-2 * scale)) continue;
        double dot = 0;
        for (int j = 0; j < n; j++) dot += Qc[(size_t)i * n + j] * Qg[(size_t)i * n + j];
        cr_assert(fabs(fabs(dot) - 1.0) <= 1e-3, "%s: eigenvector %d (eigenvalue %g, gap %g): |u.v| = %.9f", what, i,
                  wc[i], gap, fabs(dot));
    }
    double num = 0, den = 0;
    for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++) {
            double a = 0, b = 0;
            for (int i = 0; i < n; i++) {
                a += Qc[(size_t)i * n + r] * wc[i] * Qc[(size_t)i * n + c];
                b += Qg[(size_t)i * n + r] * wg[i] * Qg[(size_t)i * n + c];
            }
            num += (a - b) * (a - b);
            den += a * a;
        }
    cr_assert(sqrt(num) <= TOL * sqrt(den), "%s: Q diag(w) Q' differs by %g (relative)", what, sqrt(num / den));
}

// infl_fit on both backends: covariances through their eigendecompositions, and Λ
// (ekfac, diagonal) in the eigenbases: entries whose two eigenvectors are both apart
// from their neighbours, and every layer's sum (invariant under the choice of basis).
Test(cuda_backend, fit_matches_cpu, .timeout = 600) {
    pair P = open_pair_e2e();
    fixture f;
    make_fixture(&f);
    const infl_strategy strat[3] = {INFL_STRATEGY_EKFAC, INFL_STRATEGY_KFAC, INFL_STRATEGY_DIAGONAL};
    const char *names[3] = {"ekfac", "kfac", "diagonal"};
    for (int t = 0; t < 3; t++) {
        char out[2][1100];
        infl_factors *F[2];
        for (int s = 0; s < 2; s++) {
            snprintf(out[s], sizeof out[s], "%s", tu_path(s ? "f-cuda.h5" : "f-cpu.h5"));
            fit_on(P.c[s], &f, strat[t], out[s]);
            F[s] = read_factors(out[s]);
        }
        cr_assert_eq(F[1]->L, F[0]->L);
        cr_assert_eq(F[1]->examples, F[0]->examples);
        for (int l = 0; l < F[0]->L; l++) {
            int ni = infl_linear_ni(&F[0]->layer[l]), no = F[0]->layer[l].d_out;
            char what[128];
            snprintf(what, sizeof what, "%s layer %d A", names[t], l);
            same_eig(F[0]->A_vecs[l], F[0]->A_vals[l], F[1]->A_vecs[l], F[1]->A_vals[l], ni, what);
            snprintf(what, sizeof what, "%s layer %d S", names[t], l);
            same_eig(F[0]->S_vecs[l], F[0]->S_vals[l], F[1]->S_vecs[l], F[1]->S_vals[l], no, what);
            // Λ (no, ni)
            const double *lc = F[0]->lambda[l], *lg = F[1]->lambda[l];
            double scale = 0, sc = 0, sg = 0;
            for (size_t i = 0; i < (size_t)no * ni; i++) scale = fmax(scale, fabs(lc[i])), sc += lc[i], sg += lg[i];
            cr_assert(fabs(sg - sc) <= TOL * fabs(sc), "%s layer %d: sum of lambda %.9g (cuda) vs %.9g", names[t], l,
                      sg, sc);
            double sa = 0, ss = 0;
            for (int j = 0; j < ni; j++) sa = fmax(sa, fabs(F[0]->A_vals[l][j]));
            for (int i = 0; i < no; i++) ss = fmax(ss, fabs(F[0]->S_vals[l][i]));
            for (int i = 0; i < no; i++)
                for (int j = 0; j < ni; j++) {
                    // apart: both eigenvalues at least 1% of the largest from their neighbours
                    int apart = 1;
                    const double *wa = F[0]->A_vals[l], *ws = F[0]->S_vals[l];
                    if (j > 0) apart &= wa[j] - wa[j - 1] > 1e-2 * sa;
                    if (j < ni - 1) apart &= wa[j + 1] - wa[j] > 1e-2 * sa;
                    if (i > 0) apart &= ws[i] - ws[i - 1] > 1e-2 * ss;
                    if (i < no - 1) apart &= ws[i + 1] - ws[i] > 1e-2 * ss;
                    if (!apart && strat[t] == INFL_STRATEGY_EKFAC) continue;
                    size_t k = (size_t)i * ni + j;
                    cr_assert(fabs(lg[k] - lc[k]) <= TOL * scale, "%s layer %d: lambda[%d, %d] %.9g (cuda) vs %.9g",
                              names[t], l, i, j, lg[k], lc[k]);
                }
        }
        infl_factors_free(F[0]);
        infl_factors_free(F[1]);
    }
    close_pair(&P);
}

Test(cuda_backend, self_matches_cpu, .timeout = 600) {
    pair P = open_pair_e2e();
    fixture f;
    make_fixture(&f);
    char fe[1100];
    snprintf(fe, sizeof fe, "%s", tu_path("f-ekfac.h5"));
    fit_on(P.c[0], &f, INFL_STRATEGY_EKFAC, fe);
    const char *names[3] = {"tracin", "if (ggn, direct)", "ekfac"};
    for (int m = 0; m < 3; m++) {
        infl_rank_options o = infl_rank_options_default();
        o.run = f.run;
        o.train = f.train;
        o.shard_rows = FX_SHARD;
        o.method = m == 0 ? INFL_METHOD_TRACIN : m == 1 ? INFL_METHOD_IF : INFL_METHOD_EKFAC;
        if (m == 1) {
            o.hessian = 1;
            o.solver = 0;
            o.damping = 0.1;
        }
        if (m == 2) {
            o.factors = fe;
            o.damping_auto = 1;
        }
        infl_self_result *r[2];
        for (int s = 0; s < 2; s++)
            cr_assert_eq(infl_self(P.c[s], &o, &r[s]), INFL_OK, "%s on %s: %s", names[m], P.c[s]->be->name,
                         infl_ctx_error(P.c[s]));
        cr_assert_eq(r[1]->N, f.N);
        double scale = 0;
        for (int64_t i = 0; i < f.N; i++) scale = fmax(scale, fabs(r[0]->self[i]));
        cr_assert(scale > 0);
        for (int64_t i = 0; i < f.N; i++)
            cr_assert(fabs(r[1]->self[i] - r[0]->self[i]) <= TOL * scale, "%s: row %lld: %g (cuda) vs %g; largest %g",
                      names[m], (long long)i, r[1]->self[i], r[0]->self[i], scale);
        infl_self_result_free(r[0]);
        infl_self_result_free(r[1]);
    }
    close_pair(&P);
}

// The linear datamodeling score retrains the model on subsets: the retrained query
// outputs agree (several epochs of SGD from the same start; rounding differences grow
// along the way, hence a looser 1e-3 of the largest output).
Test(cuda_backend, lds_matches_cpu, .timeout = 600) {
    pair P = open_pair_e2e();
    char data[1100], run[1100], train[1200], query[1200];
    snprintf(data, sizeof data, "%s", tu_path("d.h5"));
    snprintf(run, sizeof run, "%s", tu_path("run.h5"));
    tu_make_blobs(data, 300, 4, 3, 2);
    snprintf(train, sizeof train, "%s:/train", data);
    snprintf(query, sizeof query, "%s:/test[0:5]", data);
    infl_train_options to = infl_train_options_default();
    to.data = train;
    to.nlayers = 2;
    to.widths[0] = 4;
    to.widths[1] = 6;
    to.widths[2] = 3;
    to.epochs = 2;
    to.batch = 16;
    to.lr = 0.05;
    to.checkpoint_every = 0;
    OK(P.c[0], infl_train(P.c[0], &to, run, NULL));
    infl_lds_result *r[2];
    for (int s = 0; s < 2; s++) {
        char state[1100];
        snprintf(state, sizeof state, "%s", tu_path(s ? "lds-cuda.h5" : "lds-cpu.h5"));
        infl_lds_options o = infl_lds_options_default();
        o.run = run;
        o.query = query;
        o.state = state;
        o.models = 3;
        o.seed = 5;
        OK(P.c[s], infl_lds(P.c[s], &o, &r[s]));
        cr_assert_eq(r[s]->trained_now, 3);
    }
    cr_assert_eq(r[1]->M, r[0]->M);
    double scale = 0;
    for (int i = 0; i < 3 * r[0]->M; i++) scale = fmax(scale, fabs(r[0]->outputs[i]));
    for (int i = 0; i < 3 * r[0]->M; i++)
        cr_assert(fabs(r[1]->outputs[i] - r[0]->outputs[i]) <= 1e-3 * scale, "output %d: %.9g (cuda) vs %.9g", i,
                  r[1]->outputs[i], r[0]->outputs[i]);
    infl_lds_result_free(r[0]);
    infl_lds_result_free(r[1]);
    close_pair(&P);
}
