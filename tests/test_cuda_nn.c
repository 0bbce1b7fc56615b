/*
 * test_cuda_nn.c — the CUDA transformer primitives (cuda/nn_kernels.cu, and
 * sgemm_batched in cuda/backend.cu) against their CPU twins (host/cpu/cpu_nn.c, the
 * oracle checked in test_nn.c): every slot on the same random inputs of odd shapes
 * (not multiples of a warp or a block), compared by ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-4 (FP32).
 * Also: determinism (embed_backward and layernorm_backward give the same bits twice;
 * embed_backward adds in the CPU's order, so its bits equal the CPU's), aliasing,
 * masking, NULL outputs, and what the CUDA backend promises where the CPU returns an
 * error: a cross-entropy target past the vocabulary gives a NaN row, read from nowhere.
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
#include "cudapair.h"
#include "testutil.h"

// ---- contexts and buffers: cudapair.h ----



#define SAME_BITS(a, b, bytes, ...) cr_assert(memcmp((a), (b), (bytes)) == 0, __VA_ARGS__)

// ---- the table (no device needed) ----

Test(cuda_nn, table_fills_the_transformer_slots) {
#ifndef INFL_HAVE_CUDA
    cr_skip_test("this build has no CUDA backend (no nvcc found, or INFL_CUDA=OFF)");
#else
    const infl_backend *b = &infl_cuda_backend;
    cr_assert(b->sgemm_batched && b->layernorm_forward && b->layernorm_backward && b->softmax_causal &&
              b->softmax_causal_backward && b->embed_forward && b->embed_backward && b->xent && b->adamw_step &&
              b->gather_rows);
#endif
}

// ---- strided-batched GEMM ----

Test(cuda_nn, sgemm_batched) {
    pair P = open_pair();
    uint64_t st = 41;
    // m, n, k, count; k = 0 is C = beta C
    const int shapes[][4] = {{1, 1, 1, 1}, {7, 33, 5, 3}, {33, 7, 130, 5}, {64, 64, 32, 48}, {5, 3, 0, 4},
                             {130, 1, 7, 2}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.7f, 0.3f}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int q = 0; q < 2; q++) {
                    int m = shapes[t][0], n = shapes[t][1], k = shapes[t][2], count = shapes[t][3];
                    int zb = q;  // with alpha/beta (0.7, 0.3): one B for all (stride 0)
                    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                    int lda = ac + 2, ldb = bc + 1, ldc = n + 3;
                    int64_t sA = (int64_t)ar * lda + 5, sB = zb ? 0 : (int64_t)br * ldb + 3;
                    int64_t sC = (int64_t)m * ldc + 7;
                    size_t na = (size_t)sA * count, nb = zb ? (size_t)br * ldb : (size_t)sB * count;
                    size_t nc = (size_t)sC * count;
                    float *A = rnd(&st, na, -1, 1), *B = rnd(&st, nb, -1, 1), *C0 = rnd(&st, nc, -1, 1);
                    float *out[2];
                    for (int s = 0; s < 2; s++) {
                        infl_ctx *ctx = P.c[s];
                        float *dA = dev(ctx, A, na * 4), *dB = dev(ctx, B, nb * 4), *dC = dev(ctx, C0, nc * 4);
                        OK(ctx, ctx->be->sgemm_batched(ctx, ta ? INFL_T : INFL_N, tb ? INFL_T : INFL_N, m, n, k,
                                                       ab[q][0], dA, lda, sA, dB, ldb, sB, ab[q][1], dC, ldc, sC,
                                                       count));
                        out[s] = host(ctx, dC, nc * 4);
                        rel(ctx, dA), rel(ctx, dB), rel(ctx, dC);
                    }
                    // padding columns and the gaps between the C_i: untouched by both
                    for (int b = 0; b < count; b++)
                        for (int64_t g = 0; g < sC; g++) {
                            int64_t i = g / ldc, j = g % ldc;
                            if (i < m && j < n) continue;
                            cr_assert_eq(out[1][b * sC + g], C0[b * sC + g], "C_%d written outside (m, n)", b);
                        }
                    EXPECT_CLOSE(out[1], out[0], nc, "sgemm_batched %c%c m=%d n=%d k=%d count=%d zb=%d",
                                 ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, count, zb);
                    free(out[0]), free(out[1]), free(A), free(B), free(C0);
                }
    close_pair(&P);
}

// ---- LayerNorm ----

Test(cuda_nn, layernorm) {
    pair P = open_pair();
    uint64_t st = 42;
    const int Ns[] = {1, 7, 33, 257, 1000}, Cs[] = {1, 5, 33, 130, 768};
    for (int a = 0; a < 5; a++)
        for (int c = 0; c < 5; c++) {
            int N = Ns[a], C = Cs[c];
            size_t n = (size_t)N * C;
            float *x = rnd(&st, n, -2, 3), *w = rnd(&st, C, 0.5, 1.5), *b = rnd(&st, C, -0.5, 0.5);
            float *G = rnd(&st, n, -1, 1), *dx0 = rnd(&st, n, -0.1, 0.1), *dw0 = rnd(&st, C, -1, 1);
            float *db0 = rnd(&st, C, -1, 1);
            float *out[2][6];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *dX = dev(ctx, x, n * 4), *dW = dev(ctx, w, C * 4), *dB = dev(ctx, b, C * 4);
                float *dO = dev(ctx, NULL, n * 4), *dM = dev(ctx, NULL, N * 4), *dR = dev(ctx, NULL, N * 4);
                float *dG = dev(ctx, G, n * 4), *ddx = dev(ctx, dx0, n * 4), *ddw = dev(ctx, dw0, C * 4);
                float *ddb = dev(ctx, db0, C * 4);
                OK(ctx, ctx->be->layernorm_forward(ctx, dO, dM, dR, dX, dW, dB, N, C, 1e-5f));
                OK(ctx, ctx->be->layernorm_backward(ctx, ddx, ddw, ddb, dG, dX, dW, dM, dR, N, C));
                out[s][0] = host(ctx, dO, n * 4);
                out[s][1] = host(ctx, dM, N * 4);
                out[s][2] = host(ctx, dR, N * 4);
                out[s][3] = host(ctx, ddx, n * 4);
                out[s][4] = host(ctx, ddw, C * 4);
                out[s][5] = host(ctx, ddb, C * 4);
                if (s == 1) {
                    // the same bits again; and without dw/db, and without mean/rstd
                    OK(ctx, ctx->be->upload(ctx, ddx, dx0, n * 4));
                    OK(ctx, ctx->be->upload(ctx, ddw, dw0, C * 4));
                    OK(ctx, ctx->be->upload(ctx, ddb, db0, C * 4));
                    OK(ctx, ctx->be->layernorm_backward(ctx, ddx, ddw, ddb, dG, dX, dW, dM, dR, N, C));
                    float *again[3] = {host(ctx, ddx, n * 4), host(ctx, ddw, C * 4), host(ctx, ddb, C * 4)};
                    SAME_BITS(again[0], out[1][3], n * 4, "layernorm_backward dx twice N=%d C=%d", N, C);
                    SAME_BITS(again[1], out[1][4], C * 4, "layernorm_backward dw twice N=%d C=%d", N, C);
                    SAME_BITS(again[2], out[1][5], C * 4, "layernorm_backward db twice N=%d C=%d", N, C);
                    OK(ctx, ctx->be->upload(ctx, ddx, dx0, n * 4));
                    OK(ctx, ctx->be->layernorm_backward(ctx, ddx, NULL, NULL, dG, dX, dW, dM, dR, N, C));
                    float *alone = host(ctx, ddx, n * 4);
                    SAME_BITS(alone, out[1][3], n * 4, "layernorm_backward dx without dw/db N=%d C=%d", N, C);
                    OK(ctx, ctx->be->layernorm_forward(ctx, dO, NULL, NULL, dX, dW, dB, N, C, 1e-5f));
                    float *o2 = host(ctx, dO, n * 4);
                    SAME_BITS(o2, out[1][0], n * 4, "layernorm_forward without mean/rstd N=%d C=%d", N, C);
                    free(again[0]), free(again[1]), free(again[2]), free(alone), free(o2);
                }
                rel(ctx, dX), rel(ctx, dW), rel(ctx, dB), rel(ctx, dO), rel(ctx, dM), rel(ctx, dR), rel(ctx, dG);
                rel(ctx, ddx), rel(ctx, ddw), rel(ctx, ddb);
            }
            const char *what[] = {"out", "mean", "rstd", "dx", "dw", "db"};
            size_t len[] = {n, (size_t)N, (size_t)N, n, (size_t)C, (size_t)C};
            for (int k = 0; k < 6; k++) {
                EXPECT_CLOSE(out[1][k], out[0][k], len[k], "layernorm %s N=%d C=%d", what[k], N, C);
                free(out[0][k]), free(out[1][k]);
            }
            free(x), free(w), free(b), free(G), free(dx0), free(dw0), free(db0);
        }
    close_pair(&P);
}

// ---- causal softmax ----

Test(cuda_nn, softmax_causal) {
    pair P = open_pair();
    uint64_t st = 43;
    const int shapes[][2] = {{1, 1}, {3, 5}, {2, 33}, {12, 64}, {4, 130}, {2, 300}};
    for (int t = 0; t < 6; t++) {
        int count = shapes[t][0], T = shapes[t][1];
        float scale = 1.0f / sqrtf(1.0f + t * 7);
        size_t n = (size_t)count * T * T;
        float *S = rnd(&st, n, -4, 4), *dP = rnd(&st, n, -1, 1);
        for (size_t i = 0; i < n; i++)  // above the diagonal: never read
            if ((int)(i % T) > (int)((i / T) % T)) S[i] = dP[i] = NAN;
        float *out[2][2];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            float *dS = dev(ctx, S, n * 4), *ddP = dev(ctx, dP, n * 4), *dPr = dev(ctx, NULL, n * 4);
            float *ddS = dev(ctx, NULL, n * 4);
            OK(ctx, ctx->be->softmax_causal(ctx, dPr, dS, count, T, scale));
            OK(ctx, ctx->be->softmax_causal_backward(ctx, ddS, ddP, dPr, count, T, scale));
            out[s][0] = host(ctx, dPr, n * 4);
            out[s][1] = host(ctx, ddS, n * 4);
            if (s == 1) {  // in place: the same bits
                OK(ctx, ctx->be->softmax_causal(ctx, dS, dS, count, T, scale));
                OK(ctx, ctx->be->softmax_causal_backward(ctx, ddP, ddP, dPr, count, T, scale));
                float *a = host(ctx, dS, n * 4), *b = host(ctx, ddP, n * 4);
                SAME_BITS(a, out[1][0], n * 4, "softmax_causal in place count=%d T=%d", count, T);
                SAME_BITS(b, out[1][1], n * 4, "softmax_causal_backward in place count=%d T=%d", count, T);
                free(a), free(b);
            }
            rel(ctx, dS), rel(ctx, ddP), rel(ctx, dPr), rel(ctx, ddS);
        }
        for (size_t i = 0; i < n; i++)
            if ((int)(i % T) > (int)((i / T) % T))
                cr_assert(out[1][0][i] == 0.0f && out[1][1][i] == 0.0f, "above the diagonal not 0");
        EXPECT_CLOSE(out[1][0], out[0][0], n, "softmax_causal count=%d T=%d", count, T);
        EXPECT_CLOSE(out[1][1], out[0][1], n, "softmax_causal_backward count=%d T=%d", count, T);
        free(out[0][0]), free(out[0][1]), free(out[1][0]), free(out[1][1]), free(S), free(dP);
    }
    close_pair(&P);
}

// ---- embeddings ----

// The forward is one float addition per element, and the backward adds in the CPU's
// order (token order for each (row, column)): both give the CPU's bits exactly.
Test(cuda_nn, embed) {
    pair P = open_pair();
    uint64_t st = 44;
    const int shapes[][4] = {{1, 1, 1, 1}, {3, 5, 7, 4}, {2, 33, 130, 50}, {4, 64, 96, 257}, {8, 128, 768, 40}};
    for (int t = 0; t < 5; t++) {
        int B = shapes[t][0], T = shapes[t][1], C = shapes[t][2], V = shapes[t][3], N = B * T, Tp = T + 2;
        size_t n = (size_t)N * C, nte = (size_t)V * C, npe = (size_t)Tp * C;
        int32_t *tok = malloc(N * sizeof(int32_t));
        for (int i = 0; i < N; i++) tok[i] = (int32_t)(tu_uniform(&st) * V);
        float *wte = rnd(&st, nte, -1, 1), *wpe = rnd(&st, npe, -1, 1), *G = rnd(&st, n, -1, 1);
        float *gte = rnd(&st, nte, -1, 1), *gpe = rnd(&st, npe, -1, 1);
        float *out[2][3];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            int32_t *dt = dev(ctx, tok, N * 4);
            float *dte = dev(ctx, wte, nte * 4), *dpe = dev(ctx, wpe, npe * 4), *dG = dev(ctx, G, n * 4);
            float *dO = dev(ctx, NULL, n * 4), *dgte = dev(ctx, gte, nte * 4), *dgpe = dev(ctx, gpe, npe * 4);
            OK(ctx, ctx->be->embed_forward(ctx, dO, dt, dte, dpe, B, T, C));
            OK(ctx, ctx->be->embed_backward(ctx, dgte, dgpe, dG, dt, B, T, C));
            out[s][0] = host(ctx, dO, n * 4);
            out[s][1] = host(ctx, dgte, nte * 4);
            out[s][2] = host(ctx, dgpe, npe * 4);
            if (s == 1) {  // twice, and each output alone: the same bits
                OK(ctx, ctx->be->upload(ctx, dgte, gte, nte * 4));
                OK(ctx, ctx->be->upload(ctx, dgpe, gpe, npe * 4));
                OK(ctx, ctx->be->embed_backward(ctx, dgte, NULL, dG, dt, B, T, C));
                OK(ctx, ctx->be->embed_backward(ctx, NULL, dgpe, dG, dt, B, T, C));
                float *a = host(ctx, dgte, nte * 4), *b = host(ctx, dgpe, npe * 4);
                SAME_BITS(a, out[1][1], nte * 4, "embed_backward dwte twice B=%d T=%d C=%d", B, T, C);
                SAME_BITS(b, out[1][2], npe * 4, "embed_backward dwpe twice B=%d T=%d C=%d", B, T, C);
                free(a), free(b);
            }
            rel(ctx, dt), rel(ctx, dte), rel(ctx, dpe), rel(ctx, dG), rel(ctx, dO), rel(ctx, dgte), rel(ctx, dgpe);
        }
        const char *what[] = {"embed_forward", "embed_backward dwte", "embed_backward dwpe"};
        size_t len[] = {n, nte, npe};
        for (int k = 0; k < 3; k++) {
            EXPECT_CLOSE(out[1][k], out[0][k], len[k], "%s B=%d T=%d C=%d V=%d", what[k], B, T, C, V);
            SAME_BITS(out[1][k], out[0][k], len[k] * 4, "%s B=%d T=%d C=%d V=%d: not the CPU's bits", what[k], B, T, C,
                      V);
            free(out[0][k]), free(out[1][k]);
        }
        free(tok), free(wte), free(wpe), free(G), free(gte), free(gpe);
    }
    close_pair(&P);
}

// ---- softmax cross-entropy ----

Test(cuda_nn, xent) {
    pair P = open_pair();
    uint64_t st = 45;
    const int Vs[] = {1, 7, 257, 4096, 50257}, Ns[] = {1, 33, 65};
    for (int a = 0; a < 5; a++)
        for (int c = 0; c < 3; c++) {
            int V = Vs[a], N = Ns[c];
            size_t n = (size_t)N * V;
            float *z = rnd(&st, n, -8, 8);
            int32_t *y = malloc(N * sizeof(int32_t));
            for (int i = 0; i < N; i++) y[i] = i % 7 == 5 ? -1 : (int32_t)(tu_uniform(&st) * V);
            float scale = 1.0f / N;
            float *out[2][2];
            for (int s = 0; s < 2; s++) {
                infl_ctx *ctx = P.c[s];
                float *dz = dev(ctx, z, n * 4), *dl = dev(ctx, NULL, N * 4), *dg = dev(ctx, NULL, n * 4);
                int32_t *dy = dev(ctx, y, N * 4);
                OK(ctx, ctx->be->xent(ctx, dl, dg, dz, dy, N, V, scale));
                out[s][0] = host(ctx, dl, N * 4);
                out[s][1] = host(ctx, dg, n * 4);
                if (s == 1) {  // in place over the logits, loss alone: the same bits
                    float *dl2 = dev(ctx, NULL, N * 4);
                    OK(ctx, ctx->be->xent(ctx, dl2, NULL, dz, dy, N, V, scale));
                    OK(ctx, ctx->be->xent(ctx, NULL, dz, dz, dy, N, V, scale));
                    float *l2 = host(ctx, dl2, N * 4), *g2 = host(ctx, dz, n * 4);
                    SAME_BITS(l2, out[1][0], N * 4, "xent loss alone V=%d N=%d", V, N);
                    SAME_BITS(g2, out[1][1], n * 4, "xent in place V=%d N=%d", V, N);
                    free(l2), free(g2);
                    rel(ctx, dl2);
                }
                rel(ctx, dz), rel(ctx, dl), rel(ctx, dg), rel(ctx, dy);
            }
            for (int i = 0; i < N; i++)
                if (y[i] < 0) {  // masked rows: exactly 0
                    cr_assert(out[1][0][i] == 0.0f, "masked row %d: loss %g", i, out[1][0][i]);
                    for (int j = 0; j < V; j++) cr_assert(out[1][1][(size_t)i * V + j] == 0.0f, "masked row %d", i);
                }
            EXPECT_CLOSE(out[1][0], out[0][0], N, "xent loss V=%d N=%d", V, N);
            EXPECT_CLOSE(out[1][1], out[0][1], n, "xent dlogits V=%d N=%d", V, N);
            free(out[0][0]), free(out[0][1]), free(out[1][0]), free(out[1][1]), free(z), free(y);
        }
    close_pair(&P);
}

// A target past the vocabulary (the caller's bug; the CPU returns INFL_E_VALUE): CUDA
// gives its row a NaN loss and NaN dlogits, indexes nothing by it (one target is
// 2^30: an unguarded read would fault) and computes the other rows as usual.
Test(cuda_nn, xent_bad_target_is_a_nan_row) {
    pair P = open_pair();
    uint64_t st = 46;
    int N = 9, V = 257;
    size_t n = (size_t)N * V;
    float *z = rnd(&st, n, -4, 4);
    int32_t y[9], yok[9];
    for (int i = 0; i < N; i++) y[i] = yok[i] = (int32_t)(tu_uniform(&st) * V);
    y[2] = V;
    y[6] = 1 << 30;
    yok[2] = yok[6] = -1;  // for the CPU: masked
    float *out[2][2];
    for (int s = 0; s < 2; s++) {
        infl_ctx *ctx = P.c[s];
        float *dz = dev(ctx, z, n * 4), *dl = dev(ctx, NULL, N * 4), *dg = dev(ctx, NULL, n * 4);
        int32_t *dy = dev(ctx, s ? y : yok, sizeof y);
        OK(ctx, ctx->be->xent(ctx, dl, dg, dz, dy, N, V, 0.5f));
        if (s == 0) {
            int32_t *dbad = dev(ctx, y, sizeof y);
            cr_assert_eq(ctx->be->xent(ctx, dl, dg, dz, dbad, N, V, 0.5f), INFL_E_VALUE);
            rel(ctx, dbad);
        }
        out[s][0] = host(ctx, dl, N * 4);
        out[s][1] = host(ctx, dg, n * 4);
        rel(ctx, dz), rel(ctx, dl), rel(ctx, dg), rel(ctx, dy);
    }
    for (int i = 0; i < N; i++) {
        if (i == 2 || i == 6) {
            cr_assert(isnan(out[1][0][i]), "loss of row %d (target %d) is %g, not NaN", i, (int)y[i], out[1][0][i]);
            for (int j = 0; j < V; j++) cr_assert(isnan(out[1][1][(size_t)i * V + j]), "dlogits of row %d", i);
            continue;
        }
        EXPECT_CLOSE(out[1][0] + i, out[0][0] + i, 1, "xent loss row %d", i);
        EXPECT_CLOSE(out[1][1] + (size_t)i * V, out[0][1] + (size_t)i * V, V, "xent dlogits row %d", i);
    }
    free(out[0][0]), free(out[0][1]), free(out[1][0]), free(out[1][1]), free(z);
    close_pair(&P);
}

// ---- AdamW, row gather ----

Test(cuda_nn, adamw_step) {
    pair P = open_pair();
    uint64_t st = 47;
    const size_t sizes[] = {1, 7, 257, 300001};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        size_t n = sizes[t];
        float *w = rnd(&st, n, -1, 1), *g[5];
        for (int k = 0; k < 5; k++) g[k] = rnd(&st, n, -1, 1);
        float *out[2][3];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            float *dw = dev(ctx, w, n * 4), *dm = dev(ctx, NULL, n * 4), *dv = dev(ctx, NULL, n * 4);
            OK(ctx, ctx->be->fill(ctx, dm, 0.0f, n));
            OK(ctx, ctx->be->fill(ctx, dv, 0.0f, n));
            for (int k = 0; k < 5; k++) {
                float *dg = dev(ctx, g[k], n * 4);
                OK(ctx, ctx->be->adamw_step(ctx, dw, dm, dv, dg, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, k + 1, 0.5f));
                rel(ctx, dg);
            }
            out[s][0] = host(ctx, dw, n * 4);
            out[s][1] = host(ctx, dm, n * 4);
            out[s][2] = host(ctx, dv, n * 4);
            rel(ctx, dw), rel(ctx, dm), rel(ctx, dv);
        }
        const char *what[] = {"w", "m", "v"};
        for (int k = 0; k < 3; k++) {
            EXPECT_CLOSE(out[1][k], out[0][k], n, "adamw_step %s n=%zu", what[k], n);
            free(out[0][k]), free(out[1][k]);
        }
        free(w);
        for (int k = 0; k < 5; k++) free(g[k]);
    }
    close_pair(&P);
}

Test(cuda_nn, gather_rows) {
    pair P = open_pair();
    uint64_t st = 48;
    const int shapes[][3] = {{1, 1, 1}, {9, 13, 20}, {257, 33, 1000}, {50, 768, 7}};  // rows, cols, n
    for (int t = 0; t < 4; t++) {
        int rows = shapes[t][0], cols = shapes[t][1], n = shapes[t][2];
        float *X = rnd(&st, (size_t)rows * cols, -1, 1);
        int32_t *idx = malloc(n * sizeof(int32_t));
        for (int r = 0; r < n; r++) idx[r] = (int32_t)(tu_uniform(&st) * rows);
        float *out[2];
        for (int s = 0; s < 2; s++) {
            infl_ctx *ctx = P.c[s];
            float *dX = dev(ctx, X, (size_t)rows * cols * 4), *dO = dev(ctx, NULL, (size_t)n * cols * 4);
            int32_t *di = dev(ctx, idx, n * 4);
            OK(ctx, ctx->be->gather_rows(ctx, dO, dX, di, n, cols));
            out[s] = host(ctx, dO, (size_t)n * cols * 4);
            rel(ctx, dX), rel(ctx, dO), rel(ctx, di);
        }
        SAME_BITS(out[1], out[0], (size_t)n * cols * 4, "gather_rows rows=%d cols=%d n=%d", rows, cols, n);
        free(out[0]), free(out[1]), free(X), free(idx);
    }
    close_pair(&P);
}
