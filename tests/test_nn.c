/*
 * test_nn.c — the transformer primitives of host/backend.h on the CPU backend
 * (host/cpu/cpu_nn.c), the oracle their CUDA twins are compared with in
 * test_cuda_nn.c. Each is checked against a float64 implementation of the same
 * formula written here as naive loops; each float64 backward is first checked against
 * central finite differences of its float64 forward (objective Σ G ∘ out for a random
 * G). The embedding's backward, a linear map, is checked against central differences
 * of the float32 primitive itself. sgemm_batched is checked against a float64 triple
 * loop (transposes, leading dimensions, strides, a zero stride, k = 0), AdamW against
 * a float64 loop over several steps. Also: masking, aliasing, NULL outputs,
 * accumulation, determinism, argument errors.
 *
 * On the CPU backend, backend memory is host memory: the tests read and write it
 * directly.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "testutil.h"

#define OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s", #expr, infl_ctx_error(ctx))

// One float32 rounding (round to nearest): 2^-24.
#define U32 0x1.0p-24

// ---- fixtures ----

// n floats of backend memory, uniform in [lo, hi)
static float *frnd(infl_ctx *ctx, uint64_t *st, size_t n, double lo, double hi) {
    void *p = NULL;
    OK(ctx, ctx->be->alloc(ctx, (n ? n : 1) * sizeof(float), &p));
    float *x = p;
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * tu_uniform(st));
    return x;
}

static float *fcopy(infl_ctx *ctx, const float *src, size_t n) {
    void *p = NULL;
    OK(ctx, ctx->be->alloc(ctx, (n ? n : 1) * sizeof(float), &p));
    if (n) memcpy(p, src, n * sizeof(float));
    return p;
}

static double *dnew(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double *dof(const float *x, size_t n) {
    double *d = dnew(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// ‖a − ref‖ / ‖ref‖ (‖a − ref‖ when ref is 0); NaN anywhere gives NaN
static double rel_err(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define EXPECT_REL(a, ref, n, tol, ...)                                          \
    do {                                                                         \
        double e_ = rel_err((a), (ref), (n));                                    \
        if (!(e_ <= (tol))) {                                                    \
            char m_[256];                                                        \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                \
            cr_assert(0, "%s: relative error %g > %g", m_, e_, (double)(tol));   \
        }                                                                        \
    } while (0)

// Central differences of f at every coordinate of x (n), f(x) a float64 scalar; the
// worst |fd − g| / (1 + |g|) over the coordinates.
typedef double (*objective)(const double *x, void *user);
static double fd_worst(objective f, double *x, size_t n, const double *g, double h, void *user) {
    double worst = 0;
    for (size_t j = 0; j < n; j++) {
        double x0 = x[j];
        x[j] = x0 + h;
        double fp = f(x, user);
        x[j] = x0 - h;
        double fm = f(x, user);
        x[j] = x0;
        worst = fmax(worst, fabs((fp - fm) / (2 * h) - g[j]) / (1 + fabs(g[j])));
    }
    return worst;
}

// Finite differences in float64 with h = 1e-6 on smooth functions of O(1) inputs:
// truncation ~h²·|f'''| ~ 1e-12, rounding ~1e-16·|f|/h ~ 1e-10. A wrong term in a
// gradient is off by O(1e-1) or more.
#define FD_H 1e-6
#define FD_TOL 1e-7

// Every new slot is filled on the CPU backend (test_cuda_nn.c checks the CUDA table).
Test(nn, cpu_fills_the_transformer_slots) {
    const infl_backend *b = &infl_cpu_backend;
    cr_assert(b->sgemm_batched && b->layernorm_forward && b->layernorm_backward && b->softmax_causal &&
              b->softmax_causal_backward && b->embed_forward && b->embed_backward && b->xent && b->adamw_step &&
              b->gather_rows);
}

// ---- strided-batched GEMM ----

// op(X)[i, p] of a row-major X with leading dimension ld
static double opx(const float *X, int ld, int trans, int i, int p) {
    return trans ? X[(size_t)p * ld + i] : X[(size_t)i * ld + p];
}

Test(nn, sgemm_batched_matches_naive_loops) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 21;
    // m, n, k, count: single matrices and batches, odd sizes, k = 0 (C = beta C), and a
    // batch of attention-sized products (the batch-parallel path)
    const int shapes[][4] = {{1, 1, 1, 1}, {7, 5, 3, 1}, {7, 5, 3, 4}, {33, 17, 9, 3},
                             {16, 16, 16, 5}, {5, 3, 0, 3}, {64, 64, 32, 12}, {130, 70, 40, 1}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.7f, -0.3f}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int q = 0; q < 2; q++)
                    for (int zb = 0; zb < 2; zb++) {  // zb: every A_i shares one B (stride 0)
                        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], count = shapes[s][3];
                        float alpha = ab[q][0], beta = ab[q][1];
                        // op(A) (m, k), op(B) (k, n), row-major with padded leading dimensions and gaps between
                        int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                        int lda = ac + 2, ldb = bc + 1, ldc = n + 3;
                        int64_t sA = (int64_t)ar * lda + 5, sB = zb ? 0 : (int64_t)br * ldb + 3;
                        int64_t sC = (int64_t)m * ldc + 7;
                        size_t na = (size_t)sA * count, nb = zb ? (size_t)br * ldb : (size_t)sB * count;
                        size_t nc = (size_t)sC * count;
                        float *A = frnd(ctx, &st, na, -1, 1), *B = frnd(ctx, &st, nb, -1, 1);
                        float *C = frnd(ctx, &st, nc, -1, 1), *C0 = fcopy(ctx, C, nc);
                        OK(ctx, ctx->be->sgemm_batched(ctx, ta ? INFL_T : INFL_N, tb ? INFL_T : INFL_N, m, n, k,
                                                       alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, count));
                        for (int b = 0; b < count; b++) {
                            const float *Ab = A + b * sA, *Bb = B + b * sB;
                            for (int i = 0; i < m; i++)
                                for (int j = 0; j < ldc; j++) {
                                    size_t at = (size_t)(b * sC) + (size_t)i * ldc + j;
                                    if (j >= n) {  // the padding of C is not written
                                        cr_assert_eq(C[at], C0[at], "padding of C_%d written", b);
                                        continue;
                                    }
                                    double ref = 0, mag = 0;
                                    for (int p = 0; p < k; p++) {
                                        double t = opx(Ab, lda, ta, i, p) * opx(Bb, ldb, tb, p, j);
                                        ref += t;
                                        mag += fabs(t);
                                    }
                                    ref = alpha * ref + (beta == 0.0f ? 0.0 : (double)beta * C0[at]);
                                    mag = fabs(alpha) * mag + fabs((double)beta * C0[at]);
                                    // float32 GEMM: |error| <= (k + 2) u Σ|terms| (Higham's γ_k bound,
                                    // u = 2^-24), taken twice for the alpha and beta roundings
                                    double tol = 2 * (k + 4) * U32 * mag + 1e-30;
                                    cr_assert(fabs(C[at] - ref) <= tol,
                                              "sgemm_batched %c%c m=%d n=%d k=%d count=%d alpha=%g beta=%g zb=%d: "
                                              "C_%d[%d,%d] = %.9g, expected %.9g",
                                              ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, count, alpha, beta, zb, b, i,
                                              j, C[at], ref);
                                }
                            // the gap between C_b and C_{b+1} is not written
                            for (int64_t g = (int64_t)m * ldc; g < sC; g++)
                                cr_assert_eq(C[b * sC + g], C0[b * sC + g], "gap after C_%d written", b);
                        }
                        ctx->be->release(ctx, A), ctx->be->release(ctx, B), ctx->be->release(ctx, C),
                            ctx->be->release(ctx, C0);
                    }
    cr_assert_eq(ctx->be->sgemm_batched(ctx, INFL_N, INFL_N, 2, 2, 2, 1, NULL, 2, 4, NULL, 2, 4, 0, NULL, 2, 4, -1),
                 INFL_E_ARG);
    OK(ctx, ctx->be->sgemm_batched(ctx, INFL_N, INFL_N, 2, 2, 2, 1, NULL, 2, 4, NULL, 2, 4, 0, NULL, 2, 4, 0));
    infl_ctx_free(ctx);
}

// ---- LayerNorm ----

// float64 reference: out, mean, rstd from x (N, C), w, b (C)
static void ln_fwd64(double *out, double *mean, double *rstd, const double *x, const double *w, const double *b,
                     int N, int C, double eps) {
    for (int i = 0; i < N; i++) {
        const double *xi = x + (size_t)i * C;
        double mu = 0, var = 0;
        for (int j = 0; j < C; j++) mu += xi[j];
        mu /= C;
        for (int j = 0; j < C; j++) var += (xi[j] - mu) * (xi[j] - mu);
        var /= C;
        double rs = 1 / sqrt(var + eps);
        for (int j = 0; j < C; j++) out[(size_t)i * C + j] = (xi[j] - mu) * rs * w[j] + b[j];
        if (mean) mean[i] = mu;
        if (rstd) rstd[i] = rs;
    }
}

// float64 reference backward: dx (N, C), dw, db (C) of Σ G ∘ out (overwritten)
static void ln_bwd64(double *dx, double *dw, double *db, const double *G, const double *x, const double *w, int N,
                     int C, double eps) {
    memset(dw, 0, C * sizeof(double));
    memset(db, 0, C * sizeof(double));
    for (int i = 0; i < N; i++) {
        const double *xi = x + (size_t)i * C, *gi = G + (size_t)i * C;
        double mu = 0, var = 0;
        for (int j = 0; j < C; j++) mu += xi[j];
        mu /= C;
        for (int j = 0; j < C; j++) var += (xi[j] - mu) * (xi[j] - mu);
        var /= C;
        double rs = 1 / sqrt(var + eps), a = 0, bx = 0;
        for (int j = 0; j < C; j++) {
            a += gi[j] * w[j];
            bx += gi[j] * w[j] * (xi[j] - mu) * rs;
        }
        a /= C;
        bx /= C;
        for (int j = 0; j < C; j++) {
            double xh = (xi[j] - mu) * rs;
            dx[(size_t)i * C + j] = rs * (gi[j] * w[j] - a - xh * bx);
            dw[j] += gi[j] * xh;
            db[j] += gi[j];
        }
    }
}

typedef struct {
    int N, C, which;  // which: 0 x, 1 w, 2 b is the variable
    double eps;
    double *x, *w, *b, *G, *out;
} ln_fd;

static double ln_objective(const double *v, void *user) {
    ln_fd *f = user;
    ln_fwd64(f->out, NULL, NULL, f->which == 0 ? v : f->x, f->which == 1 ? v : f->w, f->which == 2 ? v : f->b, f->N,
             f->C, f->eps);
    double s = 0;
    for (size_t i = 0; i < (size_t)f->N * f->C; i++) s += f->G[i] * f->out[i];
    return s;
}

Test(nn, layernorm_reference_matches_finite_differences) {
    uint64_t st = 22;
    const int shapes[][2] = {{1, 1}, {3, 7}, {2, 33}};
    for (int s = 0; s < 3; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)N * C;
        ln_fd f = {N, C, 0, 1e-5, dnew(n), dnew(C), dnew(C), dnew(n), dnew(n)};
        for (size_t i = 0; i < n; i++) f.x[i] = 4 * tu_uniform(&st) - 2 + (double)(i / C), f.G[i] = tu_uniform(&st) - 0.5;
        for (int j = 0; j < C; j++) f.w[j] = 0.5 + tu_uniform(&st), f.b[j] = tu_uniform(&st) - 0.5;
        double *dx = dnew(n), *dw = dnew(C), *db = dnew(C);
        ln_bwd64(dx, dw, db, f.G, f.x, f.w, N, C, f.eps);
        double *g[3] = {dx, dw, db}, *v[3] = {f.x, f.w, f.b};
        size_t len[3] = {n, (size_t)C, (size_t)C};
        const char *what[3] = {"dx", "dw", "db"};
        for (f.which = 0; f.which < 3; f.which++) {
            double worst = fd_worst(ln_objective, v[f.which], len[f.which], g[f.which], FD_H, &f);
            cr_assert(worst < FD_TOL, "layernorm %s N=%d C=%d: finite differences off by %g", what[f.which], N, C,
                      worst);
        }
        free(dx), free(dw), free(db), free(f.x), free(f.w), free(f.b), free(f.G), free(f.out);
    }
}

Test(nn, layernorm_matches_reference) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 23;
    // the last two take the OpenMP paths (N·C > 65536)
    const int shapes[][2] = {{1, 1}, {3, 7}, {17, 64}, {33, 130}, {300, 768}, {1000, 70}};
    const float eps = 1e-5f;
    for (int s = 0; s < 6; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)N * C;
        // rows with their own offset (the mean matters) and spread
        float *x = frnd(ctx, &st, n, -2, 2), *w = frnd(ctx, &st, C, 0.5, 1.5), *b = frnd(ctx, &st, C, -0.5, 0.5);
        for (int i = 0; i < N; i++) {
            float off = (float)(6 * tu_uniform(&st) - 3), sc = (float)(0.5 + tu_uniform(&st));
            for (int j = 0; j < C; j++) x[(size_t)i * C + j] = off + sc * x[(size_t)i * C + j];
        }
        float *out = frnd(ctx, &st, n, 0, 1), *mean = frnd(ctx, &st, N, 0, 1), *rstd = frnd(ctx, &st, N, 0, 1);
        OK(ctx, ctx->be->layernorm_forward(ctx, out, mean, rstd, x, w, b, N, C, eps));
        double *x64 = dof(x, n), *w64 = dof(w, C), *b64 = dof(b, C);
        double *o64 = dnew(n), *m64 = dnew(N), *r64 = dnew(N);
        ln_fwd64(o64, m64, r64, x64, w64, b64, N, C, eps);
        // float64 sums, then one float32 rounding of each result (2^-24 relative):
        // 1e-6 is 16 roundings
        EXPECT_REL(out, o64, n, 1e-6, "layernorm out N=%d C=%d", N, C);
        EXPECT_REL(mean, m64, N, 1e-6, "layernorm mean N=%d C=%d", N, C);
        EXPECT_REL(rstd, r64, N, 1e-6, "layernorm rstd N=%d C=%d", N, C);
        // mean and rstd are optional, and do not change out
        float *out2 = frnd(ctx, &st, n, 0, 1);
        OK(ctx, ctx->be->layernorm_forward(ctx, out2, NULL, NULL, x, w, b, N, C, eps));
        cr_assert(memcmp(out2, out, n * sizeof(float)) == 0, "layernorm out without mean/rstd N=%d C=%d", N, C);

        // the backward accumulates into dx, dw, db
        float *G = frnd(ctx, &st, n, -1, 1), *dx = frnd(ctx, &st, n, -0.1, 0.1);
        float *dw = frnd(ctx, &st, C, -1, 1), *db = frnd(ctx, &st, C, -1, 1);
        float *dx0 = fcopy(ctx, dx, n), *dw0 = fcopy(ctx, dw, C), *db0 = fcopy(ctx, db, C);
        OK(ctx, ctx->be->layernorm_backward(ctx, dx, dw, db, G, x, w, mean, rstd, N, C));
        double *G64 = dof(G, n), *rdx = dnew(n), *rdw = dnew(C), *rdb = dnew(C);
        ln_bwd64(rdx, rdw, rdb, G64, x64, w64, N, C, eps);
        for (size_t i = 0; i < n; i++) rdx[i] += dx0[i];
        for (int j = 0; j < C; j++) rdw[j] += dw0[j], rdb[j] += db0[j];
        // The primitive works from the saved float32 μ and ρ: x̂ is off by ~2^-24 (|μ|ρ + 1)
        // (≲ 1e-6 here), and dx is a difference of O(1) terms; 1e-5 leaves a margin of 10.
        EXPECT_REL(dx, rdx, n, 1e-5, "layernorm dx N=%d C=%d", N, C);
        EXPECT_REL(dw, rdw, C, 1e-5, "layernorm dw N=%d C=%d", N, C);
        EXPECT_REL(db, rdb, C, 1e-5, "layernorm db N=%d C=%d", N, C);
        // dw and db are optional: dx is the same without them; and the same bits twice
        float *dx2 = fcopy(ctx, dx0, n);
        OK(ctx, ctx->be->layernorm_backward(ctx, dx2, NULL, NULL, G, x, w, mean, rstd, N, C));
        cr_assert(memcmp(dx2, dx, n * sizeof(float)) == 0, "layernorm dx without dw/db N=%d C=%d", N, C);
        float *dw2 = fcopy(ctx, dw0, C), *db2 = fcopy(ctx, db0, C);
        memcpy(dx2, dx0, n * sizeof(float));
        OK(ctx, ctx->be->layernorm_backward(ctx, dx2, dw2, db2, G, x, w, mean, rstd, N, C));
        cr_assert(memcmp(dw2, dw, C * sizeof(float)) == 0 && memcmp(db2, db, C * sizeof(float)) == 0,
                  "layernorm dw/db not deterministic N=%d C=%d", N, C);
        float *bufs[] = {x, w, b, out, mean, rstd, out2, G, dx, dw, db, dx0, dw0, db0, dx2, dw2, db2};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ctx->be->release(ctx, bufs[i]);
        free(x64), free(w64), free(b64), free(o64), free(m64), free(r64), free(G64), free(rdx), free(rdw), free(rdb);
    }
    cr_assert_eq(ctx->be->layernorm_forward(ctx, NULL, NULL, NULL, NULL, NULL, NULL, 2, 0, 1e-5f), INFL_E_ARG);
    cr_assert_eq(ctx->be->layernorm_backward(ctx, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -1, 4), INFL_E_ARG);
    infl_ctx_free(ctx);
}

// ---- causal softmax ----

// float64 reference over count (T, T) blocks
static void sm_fwd64(double *P, const double *S, int count, int T, double scale) {
    for (size_t r = 0; r < (size_t)count * T; r++) {
        int t = (int)(r % T);
        const double *s = S + r * T;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= t; j++) mx = fmax(mx, scale * s[j]);
        for (int j = 0; j <= t; j++) sum += exp(scale * s[j] - mx);
        for (int j = 0; j < T; j++) P[r * T + j] = j <= t ? exp(scale * s[j] - mx) / sum : 0;
    }
}

static void sm_bwd64(double *dS, const double *dP, const double *P, int count, int T, double scale) {
    for (size_t r = 0; r < (size_t)count * T; r++) {
        int t = (int)(r % T);
        double d = 0;
        for (int j = 0; j <= t; j++) d += P[r * T + j] * dP[r * T + j];
        for (int j = 0; j < T; j++) dS[r * T + j] = j <= t ? scale * P[r * T + j] * (dP[r * T + j] - d) : 0;
    }
}

typedef struct {
    int count, T;
    double scale;
    const double *G;
    double *P;
} sm_fd;

static double sm_objective(const double *S, void *user) {
    sm_fd *f = user;
    sm_fwd64(f->P, S, f->count, f->T, f->scale);
    double s = 0;
    for (size_t i = 0; i < (size_t)f->count * f->T * f->T; i++) s += f->G[i] * f->P[i];
    return s;
}

// Every entry of S, above the diagonal too (where the gradient is 0).
Test(nn, softmax_causal_reference_matches_finite_differences) {
    uint64_t st = 24;
    const int shapes[][2] = {{1, 1}, {2, 5}, {1, 9}};
    for (int s = 0; s < 3; s++) {
        int count = shapes[s][0], T = shapes[s][1];
        size_t n = (size_t)count * T * T;
        double *S = dnew(n), *G = dnew(n), *P = dnew(n), *dS = dnew(n);
        for (size_t i = 0; i < n; i++) S[i] = 6 * tu_uniform(&st) - 3, G[i] = tu_uniform(&st) - 0.5;
        sm_fd f = {count, T, 0.6, G, P};
        sm_fwd64(P, S, count, T, f.scale);
        sm_bwd64(dS, G, P, count, T, f.scale);
        double worst = fd_worst(sm_objective, S, n, dS, FD_H, &f);
        cr_assert(worst < FD_TOL, "softmax_causal count=%d T=%d: finite differences off by %g", count, T, worst);
        free(S), free(G), free(P), free(dS);
    }
}

Test(nn, softmax_causal_matches_reference) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 25;
    const int shapes[][2] = {{1, 1}, {3, 5}, {2, 33}, {12, 64}, {4, 130}};
    const float scales[] = {0.125f, 1.7f};
    for (int s = 0; s < 5; s++)
        for (int q = 0; q < 2; q++) {
            int count = shapes[s][0], T = shapes[s][1];
            float scale = scales[q];
            size_t n = (size_t)count * T * T;
            // above the diagonal: NaN, which must never be read
            float *S = frnd(ctx, &st, n, -4, 4), *dP = frnd(ctx, &st, n, -1, 1);
            for (size_t i = 0; i < n; i++)
                if ((int)(i % T) > (int)((i / T) % T)) S[i] = dP[i] = NAN;
            float *P = frnd(ctx, &st, n, 0, 1), *dS = frnd(ctx, &st, n, 0, 1);
            OK(ctx, ctx->be->softmax_causal(ctx, P, S, count, T, scale));
            OK(ctx, ctx->be->softmax_causal_backward(ctx, dS, dP, P, count, T, scale));
            double *S64 = dof(S, n), *P64 = dnew(n), *Pf = dof(P, n), *dP64 = dof(dP, n), *dS64 = dnew(n);
            sm_fwd64(P64, S64, count, T, scale);
            sm_bwd64(dS64, dP64, Pf, count, T, scale);  // on the primitive's own P
            for (size_t i = 0; i < n; i++)
                if ((int)(i % T) > (int)((i / T) % T))
                    cr_assert(P[i] == 0.0f && dS[i] == 0.0f, "above the diagonal: P %g dS %g", P[i], dS[i]);
            // float64 exponents and sums, one float32 rounding of each result: 1e-6 is 16 of
            // them; the backward's difference dP − Σ P dP may cancel a few bits more: 1e-5
            EXPECT_REL(P, P64, n, 1e-6, "softmax_causal count=%d T=%d scale=%g", count, T, scale);
            EXPECT_REL(dS, dS64, n, 1e-5, "softmax_causal_backward count=%d T=%d scale=%g", count, T, scale);
            // in place: P over S, dS over dP, the same bits
            float *SP = fcopy(ctx, S, n), *dPS = fcopy(ctx, dP, n);
            OK(ctx, ctx->be->softmax_causal(ctx, SP, SP, count, T, scale));
            OK(ctx, ctx->be->softmax_causal_backward(ctx, dPS, dPS, P, count, T, scale));
            cr_assert(memcmp(SP, P, n * sizeof(float)) == 0, "softmax_causal in place count=%d T=%d", count, T);
            cr_assert(memcmp(dPS, dS, n * sizeof(float)) == 0, "softmax_causal_backward in place count=%d T=%d",
                      count, T);
            float *bufs[] = {S, dP, P, dS, SP, dPS};
            for (size_t i = 0; i < 6; i++) ctx->be->release(ctx, bufs[i]);
            free(S64), free(P64), free(Pf), free(dP64), free(dS64);
        }
    cr_assert_eq(ctx->be->softmax_causal(ctx, NULL, NULL, -1, 4, 1.0f), INFL_E_ARG);
    OK(ctx, ctx->be->softmax_causal(ctx, NULL, NULL, 0, 4, 1.0f));
    infl_ctx_free(ctx);
}

// ---- softmax cross-entropy over a vocabulary ----

// float64 reference: loss (N) and dlogits (N, V); y < 0 masks the row
static void xent64(double *loss, double *g, const double *z, const int32_t *y, int N, int V, double scale) {
    for (int i = 0; i < N; i++) {
        const double *zi = z + (size_t)i * V;
        if (y[i] < 0) {
            loss[i] = 0;
            for (int j = 0; j < V; j++) g[(size_t)i * V + j] = 0;
            continue;
        }
        double mx = zi[0], s = 0;
        for (int j = 1; j < V; j++) mx = fmax(mx, zi[j]);
        for (int j = 0; j < V; j++) s += exp(zi[j] - mx);
        double lse = mx + log(s);
        loss[i] = lse - zi[y[i]];
        for (int j = 0; j < V; j++) g[(size_t)i * V + j] = scale * (exp(zi[j] - lse) - (j == y[i]));
    }
}

typedef struct {
    int N, V;
    const int32_t *y;
    double *loss, *g;
} xe_fd;

static double xe_objective(const double *z, void *user) {
    xe_fd *f = user;
    xent64(f->loss, f->g, z, f->y, f->N, f->V, 1.0);
    double s = 0;
    for (int i = 0; i < f->N; i++) s += f->loss[i];
    return s;
}

// dlogits / scale is the gradient of Σ_i loss_i (masked rows: 0).
Test(nn, xent_reference_matches_finite_differences) {
    uint64_t st = 26;
    int N = 4, V = 6;
    int32_t y[4] = {2, -1, 0, 5};
    size_t n = (size_t)N * V;
    double *z = dnew(n), *loss = dnew(N), *g = dnew(n), *g1 = dnew(n), *tmp = dnew(n);
    for (size_t i = 0; i < n; i++) z[i] = 6 * tu_uniform(&st) - 3;
    xent64(loss, g, z, y, N, V, 0.25);
    for (size_t i = 0; i < n; i++) g1[i] = g[i] / 0.25;
    xe_fd f = {N, V, y, dnew(N), tmp};
    double worst = fd_worst(xe_objective, z, n, g1, FD_H, &f);
    cr_assert(worst < FD_TOL, "xent: finite differences off by %g", worst);
    free(z), free(loss), free(g), free(g1), free(tmp), free(f.loss);
}

Test(nn, xent_matches_reference) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 27;
    const int Vs[] = {1, 3, 257, 4096}, Ns[] = {1, 7, 65};
    for (int a = 0; a < 4; a++)
        for (int c = 0; c < 3; c++)
            for (int big = 0; big < 2; big++) {  // big: logits near 80 (exp overflows float32)
                int V = Vs[a], N = Ns[c];
                size_t n = (size_t)N * V;
                float *z = frnd(ctx, &st, n, big ? 79 : -8, big ? 81 : 8);
                int32_t *y = malloc(N * sizeof(int32_t));
                for (int i = 0; i < N; i++) y[i] = i % 5 == 3 ? -1 : (int32_t)(tu_uniform(&st) * V);
                float *loss = frnd(ctx, &st, N, 1, 2), *g = frnd(ctx, &st, n, 1, 2);  // garbage to overwrite
                float scale = 1.0f / N;
                OK(ctx, ctx->be->xent(ctx, loss, g, z, y, N, V, scale));
                double *z64 = dof(z, n), *l64 = dnew(N), *g64 = dnew(n);
                xent64(l64, g64, z64, y, N, V, scale);
                // float64 logsumexp and exponentials, one float32 rounding of each result
                // (2^-24 relative): elementwise within 8 roundings
                for (int i = 0; i < N; i++) {
                    cr_assert(fabs(loss[i] - l64[i]) <= 8 * U32 * fabs(l64[i]), "xent loss V=%d N=%d row %d: %.9g vs %.9g",
                              V, N, i, loss[i], l64[i]);
                    for (int j = 0; j < V; j++) {
                        size_t at = (size_t)i * V + j;
                        cr_assert(fabs(g[at] - g64[at]) <= 8 * U32 * fabs(g64[at]) + 1e-37,
                                  "xent dlogits V=%d N=%d [%d,%d]: %.9g vs %.9g", V, N, i, j, g[at], g64[at]);
                    }
                    if (y[i] < 0) {  // masked: exactly 0
                        cr_assert(loss[i] == 0.0f, "masked row %d: loss %g", i, loss[i]);
                        for (int j = 0; j < V; j++) cr_assert(g[(size_t)i * V + j] == 0.0f, "masked row %d", i);
                    }
                }
                // in place over the logits; loss alone; dlogits alone: the same bits
                float *zg = fcopy(ctx, z, n), *l2 = frnd(ctx, &st, N, 0, 1), *g2 = frnd(ctx, &st, n, 0, 1);
                OK(ctx, ctx->be->xent(ctx, NULL, zg, zg, y, N, V, scale));
                OK(ctx, ctx->be->xent(ctx, l2, NULL, z, y, N, V, scale));
                OK(ctx, ctx->be->xent(ctx, NULL, g2, z, y, N, V, scale));
                OK(ctx, ctx->be->xent(ctx, NULL, NULL, z, y, N, V, scale));
                cr_assert(memcmp(zg, g, n * sizeof(float)) == 0, "xent in place V=%d N=%d", V, N);
                cr_assert(memcmp(l2, loss, N * sizeof(float)) == 0, "xent loss alone V=%d N=%d", V, N);
                cr_assert(memcmp(g2, g, n * sizeof(float)) == 0, "xent dlogits alone V=%d N=%d", V, N);
                float *bufs[] = {z, loss, g, zg, l2, g2};
                for (size_t i = 0; i < 6; i++) ctx->be->release(ctx, bufs[i]);
                free(y), free(z64), free(l64), free(g64);
            }
    // a target past the vocabulary: the CPU says which row
    float z[6] = {0};
    int32_t y[2] = {1, 3};
    cr_assert_eq(ctx->be->xent(ctx, NULL, z, z, y, 2, 3, 1.0f), INFL_E_VALUE);
    cr_assert(strstr(infl_ctx_error(ctx), "row 1") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert_eq(ctx->be->xent(ctx, NULL, z, z, y, 2, 0, 1.0f), INFL_E_ARG);
    infl_ctx_free(ctx);
}

// ---- embeddings ----

typedef struct {
    int B, T, C, V;
} emb_shape;

Test(nn, embed_forward_and_backward) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 28;
    // few tokens for many rows (repeats collide in dwte); the last takes the OpenMP path
    const emb_shape shapes[] = {{1, 1, 1, 1}, {3, 4, 3, 5}, {2, 7, 33, 4}, {8, 64, 160, 50}};
    for (int s = 0; s < 4; s++) {
        int B = shapes[s].B, T = shapes[s].T, C = shapes[s].C, V = shapes[s].V, N = B * T, Tp = T + 3;
        size_t n = (size_t)N * C;
        int32_t *tok = malloc(N * sizeof(int32_t));
        for (int i = 0; i < N; i++) tok[i] = (int32_t)(tu_uniform(&st) * V);
        float *wte = frnd(ctx, &st, (size_t)V * C, -1, 1), *wpe = frnd(ctx, &st, (size_t)Tp * C, -1, 1);
        float *out = frnd(ctx, &st, n, 0, 1);
        OK(ctx, ctx->be->embed_forward(ctx, out, tok, wte, wpe, B, T, C));
        for (int i = 0; i < N; i++)  // one float32 addition: exact agreement
            for (int c = 0; c < C; c++)
                cr_assert_eq(out[(size_t)i * C + c], wte[(size_t)tok[i] * C + c] + wpe[(size_t)(i % T) * C + c],
                             "embed_forward B=%d T=%d C=%d row %d", B, T, C, i);

        // backward, accumulating onto non-zero gradients
        float *G = frnd(ctx, &st, n, -1, 1);
        float *dwte = frnd(ctx, &st, (size_t)V * C, -1, 1), *dwpe = frnd(ctx, &st, (size_t)Tp * C, -1, 1);
        float *dwte0 = fcopy(ctx, dwte, (size_t)V * C), *dwpe0 = fcopy(ctx, dwpe, (size_t)Tp * C);
        OK(ctx, ctx->be->embed_backward(ctx, dwte, dwpe, G, tok, B, T, C));
        // against float64 sums: each entry is a float32 sum of m terms, |error| <= m u Σ|terms|
        double *rte = dof(dwte0, (size_t)V * C), *rpe = dof(dwpe0, (size_t)Tp * C);
        double *ate = dof(dwte0, (size_t)V * C), *ape = dof(dwpe0, (size_t)Tp * C);  // Σ|terms|
        for (size_t j = 0; j < (size_t)V * C; j++) ate[j] = fabs(ate[j]);
        for (size_t j = 0; j < (size_t)Tp * C; j++) ape[j] = fabs(ape[j]);
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++) {
                double gv = G[(size_t)i * C + c];
                rte[(size_t)tok[i] * C + c] += gv, ate[(size_t)tok[i] * C + c] += fabs(gv);
                rpe[(size_t)(i % T) * C + c] += gv, ape[(size_t)(i % T) * C + c] += fabs(gv);
            }
        for (size_t j = 0; j < (size_t)V * C; j++)
            cr_assert(fabs(dwte[j] - rte[j]) <= (N + 1) * U32 * ate[j], "dwte B=%d T=%d C=%d [%zu]: %.9g vs %.9g", B,
                      T, C, j, dwte[j], rte[j]);
        for (size_t j = 0; j < (size_t)Tp * C; j++)
            cr_assert(fabs(dwpe[j] - rpe[j]) <= (B + 1) * U32 * ape[j], "dwpe B=%d T=%d C=%d [%zu]: %.9g vs %.9g", B,
                      T, C, j, dwpe[j], rpe[j]);
        for (size_t j = (size_t)T * C; j < (size_t)Tp * C; j++)
            cr_assert_eq(dwpe[j], dwpe0[j], "dwpe rows past T written");
        // either output alone, and the same bits on every run
        float *e2 = fcopy(ctx, dwte0, (size_t)V * C), *p2 = fcopy(ctx, dwpe0, (size_t)Tp * C);
        OK(ctx, ctx->be->embed_backward(ctx, e2, NULL, G, tok, B, T, C));
        OK(ctx, ctx->be->embed_backward(ctx, NULL, p2, G, tok, B, T, C));
        cr_assert(memcmp(e2, dwte, (size_t)V * C * sizeof(float)) == 0, "dwte alone / run to run B=%d T=%d", B, T);
        cr_assert(memcmp(p2, dwpe, (size_t)Tp * C * sizeof(float)) == 0, "dwpe alone / run to run B=%d T=%d", B, T);
        float *bufs[] = {wte, wpe, out, G, dwte, dwpe, dwte0, dwpe0, e2, p2};
        for (size_t i = 0; i < 10; i++) ctx->be->release(ctx, bufs[i]);
        free(tok), free(rte), free(rpe), free(ate), free(ape);
    }
    infl_ctx_free(ctx);
}

// Σ G ∘ embed_forward(wte, wpe) as a float64 sum of the float32 primitive's output
static double emb_objective(infl_ctx *ctx, float *out, const int32_t *tok, const float *wte, const float *wpe,
                            const float *G, int B, int T, int C) {
    OK(ctx, ctx->be->embed_forward(ctx, out, tok, wte, wpe, B, T, C));
    double s = 0;
    for (size_t i = 0; i < (size_t)B * T * C; i++) s += (double)G[i] * out[i];
    return s;
}

// The backward is the adjoint of the forward: central differences of the float32
// forward, every entry of wte and wpe. The objective is linear, so the differences are
// exact up to the float32 rounding of each perturbed output (±2^-24 · |out| ≤ 2^-22,
// at most N·C of them times |G| ≤ 1, divided by 2h = 1): under 1e-5 here.
Test(nn, embed_backward_is_the_adjoint_of_forward) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 29;
    int B = 3, T = 4, C = 3, V = 5, N = B * T;
    int32_t tok[12];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)(tu_uniform(&st) * (V - 1));  // token V-1 unused: gradient 0
    float *wte = frnd(ctx, &st, (size_t)V * C, -1, 1), *wpe = frnd(ctx, &st, (size_t)T * C, -1, 1);
    float *G = frnd(ctx, &st, (size_t)N * C, -1, 1), *out = frnd(ctx, &st, (size_t)N * C, 0, 1);
    float *dwte = frnd(ctx, &st, (size_t)V * C, 0, 0), *dwpe = frnd(ctx, &st, (size_t)T * C, 0, 0);
    OK(ctx, ctx->be->embed_backward(ctx, dwte, dwpe, G, tok, B, T, C));
    const float h = 0.5f;
    float *par[2] = {wte, wpe}, *grad[2] = {dwte, dwpe};
    size_t len[2] = {(size_t)V * C, (size_t)T * C};
    for (int w = 0; w < 2; w++)
        for (size_t j = 0; j < len[w]; j++) {
            float x0 = par[w][j];
            par[w][j] = x0 + h;
            double fp = emb_objective(ctx, out, tok, wte, wpe, G, B, T, C);
            par[w][j] = x0 - h;
            double fm = emb_objective(ctx, out, tok, wte, wpe, G, B, T, C);
            par[w][j] = x0;
            double fd = (fp - fm) / (2 * h);
            cr_assert(fabs(fd - grad[w][j]) <= 1e-5, "%s[%zu]: finite differences %.9g, backward %.9g",
                      w ? "dwpe" : "dwte", j, fd, grad[w][j]);
        }
    for (int c = 0; c < C; c++) cr_assert_eq(dwte[(size_t)(V - 1) * C + c], 0.0f);
    float *bufs[] = {wte, wpe, G, out, dwte, dwpe};
    for (size_t i = 0; i < 6; i++) ctx->be->release(ctx, bufs[i]);
    infl_ctx_free(ctx);
}

// ---- AdamW ----

Test(nn, adamw_matches_reference) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 30;
    const size_t sizes[] = {1, 1000, 100003};
    const float betas[][2] = {{0.9f, 0.999f}, {0.8f, 0.95f}};
    for (int s = 0; s < 3; s++)
        for (int q = 0; q < 2; q++) {
            size_t n = sizes[s];
            float lr = 1e-2f, b1 = betas[q][0], b2 = betas[q][1], eps = 1e-8f, wd = 0.1f, gscale = 0.5f;
            float *w = frnd(ctx, &st, n, -1, 1), *m = frnd(ctx, &st, n, 0, 0), *v = frnd(ctx, &st, n, 0, 0);
            double *w64 = dof(w, n), *m64 = dnew(n), *v64 = dnew(n);
            for (int t = 1; t <= 5; t++) {
                float *g = frnd(ctx, &st, n, -1, 1);
                OK(ctx, ctx->be->adamw_step(ctx, w, m, v, g, n, lr, b1, b2, eps, wd, t, gscale));
                // the float64 reference: Loshchilov & Hutter's AdamW, bias-corrected
                for (size_t i = 0; i < n; i++) {
                    double gi = (double)g[i] * gscale;
                    m64[i] = b1 * m64[i] + (1 - (double)b1) * gi;
                    v64[i] = b2 * v64[i] + (1 - (double)b2) * gi * gi;
                    double mh = m64[i] / (1 - pow(b1, t)), vh = v64[i] / (1 - pow(b2, t));
                    w64[i] -= lr * (mh / (sqrt(vh) + eps) + wd * w64[i]);
                }
                ctx->be->release(ctx, g);
            }
            // float32 per element: a few roundings a step, 5 steps: ~2e-7 relative; 2e-6 is a margin
            // of 10. (Leaving out the bias correction, the decay or gscale moves w, m or v by
            // 1e-3 relative or more.)
            EXPECT_REL(w, w64, n, 2e-6, "adamw w n=%zu betas %g %g", n, b1, b2);
            EXPECT_REL(m, m64, n, 2e-6, "adamw m n=%zu betas %g %g", n, b1, b2);
            EXPECT_REL(v, v64, n, 2e-6, "adamw v n=%zu betas %g %g", n, b1, b2);
            ctx->be->release(ctx, w), ctx->be->release(ctx, m), ctx->be->release(ctx, v);
            free(w64), free(m64), free(v64);
        }
    float x = 1;
    cr_assert_eq(ctx->be->adamw_step(ctx, &x, &x, &x, &x, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0, 1), INFL_E_ARG);
    infl_ctx_free(ctx);
}

// ---- row gather ----

Test(nn, gather_rows) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = 31;
    int rows = 9, cols = 13, n = 20;
    float *X = frnd(ctx, &st, (size_t)rows * cols, -1, 1), *out = frnd(ctx, &st, (size_t)n * cols, 0, 1);
    int32_t idx[20];
    for (int r = 0; r < n; r++) idx[r] = (int32_t)(tu_uniform(&st) * rows);  // repeats, any order
    idx[0] = rows - 1;
    OK(ctx, ctx->be->gather_rows(ctx, out, X, idx, n, cols));
    for (int r = 0; r < n; r++)
        cr_assert(memcmp(out + (size_t)r * cols, X + (size_t)idx[r] * cols, cols * sizeof(float)) == 0, "row %d", r);
    OK(ctx, ctx->be->gather_rows(ctx, out, X, idx, 0, cols));
    cr_assert_eq(ctx->be->gather_rows(ctx, out, X, idx, -1, cols), INFL_E_ARG);
    ctx->be->release(ctx, X), ctx->be->release(ctx, out);
    infl_ctx_free(ctx);
}
