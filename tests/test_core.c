/*
 * test_core.c — the context, status table, data references, output files, the
 * counter-based generator (Philox4x32-10 known answers) and the CPU backend's
 * primitives against plain loops.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/rng.h"
#include "testutil.h"

// ---- status table ----

Test(core, status_names_and_messages) {
    cr_assert_str_eq(infl_status_name(INFL_OK), "INFL_OK");
    cr_assert_str_eq(infl_status_name(INFL_E_EXISTS), "INFL_E_EXISTS");
    cr_assert_eq(INFL_E_IO, -3);  // pinned values
    cr_assert_eq(INFL_E_INTERNAL, -12);
    cr_assert_str_eq(infl_status_name((infl_status)-99), "INFL_E_UNKNOWN");
    cr_assert_str_eq(infl_status_str((infl_status)-99), "unknown status");
    for (int s = 0; s >= -12; s--) {
        cr_assert(infl_status_str((infl_status)s) != NULL);
        cr_assert(strncmp(infl_status_name((infl_status)s), "INFL_", 5) == 0);
    }
    cr_assert_eq(infl_version_number(), INFL_VERSION_NUMBER);
    cr_assert_str_eq(infl_version_string(), INFL_VERSION_STRING);
}

// ---- context and backend selection ----

Test(core, backend_selection) {
    infl_ctx *ctx = NULL;
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = "cpu";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_OK);
    cr_assert(strncmp(infl_ctx_backend(ctx), "cpu", 3) == 0);
    infl_ctx_free(ctx);

    o.backend = "auto";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_OK);
    infl_ctx_free(ctx);

    o.backend = "tpu";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "tpu") != NULL);
    infl_ctx_free(ctx);

    o.backend = "cpu:3";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_ARG);
    infl_ctx_free(ctx);

#ifndef INFL_HAVE_CUDA
    o.backend = "cuda";
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_BACKEND);
    cr_assert(strstr(infl_ctx_error(ctx), "no CUDA backend") != NULL, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
#endif

    setenv("INFL_BACKEND", "nonsense", 1);
    o.backend = NULL;
    cr_assert_eq(infl_ctx_create(&o, &ctx), INFL_E_ARG);
    infl_ctx_free(ctx);
    unsetenv("INFL_BACKEND");
    infl_ctx_free(NULL);
    cr_assert_str_eq(infl_ctx_error(NULL), "");
}

// ---- data references ----

Test(core, dataref_parse) {
    infl_ctx *ctx = tu_ctx();
    infl_dataref r;
    cr_assert_eq(infl_dataref_parse(ctx, "fmnist.h5:/test[0:16]", &r), INFL_OK);
    cr_assert_str_eq(r.path, "fmnist.h5");
    cr_assert_str_eq(r.split, "test");
    cr_assert_eq(r.begin, 0);
    cr_assert_eq(r.end, 16);
    cr_assert_eq(infl_dataref_parse(ctx, "a:b/f.h5:/train", &r), INFL_OK);
    cr_assert_str_eq(r.path, "a:b/f.h5");
    cr_assert_eq(r.end, -1);
    cr_assert_eq(infl_dataref_parse(ctx, "f.h5:/train[100:]", &r), INFL_OK);
    cr_assert_eq(r.begin, 100);
    cr_assert_eq(r.end, -1);
    cr_assert_eq(infl_dataref_parse(ctx, "f.h5:/train[:5]", &r), INFL_OK);
    cr_assert_eq(r.begin, 0);
    cr_assert_eq(r.end, 5);
    cr_assert_eq(infl_dataref_parse(ctx, "f.h5:/train[7]", &r), INFL_OK);
    cr_assert_eq(r.begin, 7);
    cr_assert_eq(r.end, 8);
    const char *bad[] = {"", "f.h5", "f.h5:/", ":/train", "f.h5:/train[5:5]", "f.h5:/train[9:3]",
                         "f.h5:/train[a:3]", "f.h5:/train[1:2", "f.h5:/train[1:2]x", "f.h5:/a/b", "f.h5:/t[-1:3]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(infl_dataref_parse(ctx, bad[i], &r), INFL_E_ARG, "'%s' was accepted", bad[i]);
        cr_assert(strlen(infl_ctx_error(ctx)) > 10);
    }
    cr_assert(strstr(infl_ctx_error(ctx), "t[-1:3]") != NULL);
    infl_ctx_free(ctx);
}

// ---- output files ----

Test(core, outputs_are_not_overwritten_without_force) {
    infl_ctx *ctx = tu_ctx();
    const char *p = tu_path("out.h5");
    char tmp[2048];
    cr_assert_eq(infl_out_begin(ctx, p, 0, tmp, sizeof tmp), INFL_OK);
    tu_write_file(tmp, "new", 3);
    cr_assert_eq(infl_out_commit(ctx, tmp, p), INFL_OK);
    cr_assert(!tu_exists(tmp));
    cr_assert_eq(infl_out_begin(ctx, p, 0, tmp, sizeof tmp), INFL_E_EXISTS);
    cr_assert(strstr(infl_ctx_error(ctx), "--force") != NULL);
    cr_assert_eq(infl_out_begin(ctx, p, 1, tmp, sizeof tmp), INFL_OK);
    tu_write_file(tmp, "x", 1);
    infl_out_abort(tmp);
    cr_assert(!tu_exists(tmp));
    char *s = tu_read_file(p, NULL);
    cr_assert_str_eq(s, "new");
    free(s);
    cr_assert_eq(infl_out_begin(ctx, tu_tmpdir(), 1, tmp, sizeof tmp), INFL_E_ARG);
    infl_ctx_free(ctx);
}

// ---- counter-based generator ----

// Known answers of Philox4x32-10 from Random123's kat_vectors.
Test(core, philox_known_answers) {
    infl_rng4 a = infl_philox(0, 0, 0, 0, 0, 0);
    cr_assert_eq(a.v[0], 0x6627e8d5u);
    cr_assert_eq(a.v[1], 0xe169c58du);
    cr_assert_eq(a.v[2], 0xbc57ac4cu);
    cr_assert_eq(a.v[3], 0x9b00dbd8u);
    infl_rng4 b = infl_philox(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
    cr_assert_eq(b.v[0], 0x408f276du);
    cr_assert_eq(b.v[1], 0x41c83b0eu);
    cr_assert_eq(b.v[2], 0xa20bc7c6u);
    cr_assert_eq(b.v[3], 0x6d5451fdu);
    infl_rng4 c = infl_philox(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
    cr_assert_eq(c.v[0], 0xd16cfe09u);
    cr_assert_eq(c.v[1], 0x94fdcceb);
    cr_assert_eq(c.v[2], 0x5001e420u);
    cr_assert_eq(c.v[3], 0x24126ea1u);
}

Test(core, rng_uniform_moments_and_below) {
    double s = 0, s2 = 0;
    int n = 200000, counts[7] = {0};
    for (int i = 0; i < n; i++) {
        double u = infl_rng_uniform(42, INFL_RNG_INIT, (uint64_t)i, 0);
        cr_assert(u >= 0 && u < 1);
        s += u;
        s2 += u * u;
        counts[infl_rng_below(42, INFL_RNG_INIT, (uint64_t)i, 1, 7)]++;
    }
    cr_assert(fabs(s / n - 0.5) < 0.005);
    cr_assert(fabs(s2 / n - 1.0 / 3) < 0.005);
    for (int k = 0; k < 7; k++) cr_assert(fabs(counts[k] / (double)n - 1.0 / 7) < 0.005, "bucket %d", k);
    // streams and seeds are independent
    cr_assert(infl_rng_uniform(42, INFL_RNG_INIT, 5, 0) != infl_rng_uniform(42, INFL_RNG_FLIP, 5, 0));
    cr_assert(infl_rng_uniform(42, INFL_RNG_INIT, 5, 0) != infl_rng_uniform(43, INFL_RNG_INIT, 5, 0));
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) {
        double z = infl_rng_normal(1, INFL_RNG_LABELS, (uint64_t)i, 0);
        m += z;
        v += z * z;
    }
    cr_assert(fabs(m / n) < 0.01);
    cr_assert(fabs(v / n - 1) < 0.02);
}

// ---- CPU primitives against plain loops ----

static void fill_rand(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = (float)(2 * tu_uniform(&s) - 1);
}

Test(core, sgemm_all_transposes) {
    infl_ctx *ctx = tu_ctx();
    const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 1, 9}};
    for (size_t si = 0; si < 4; si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
                float *A = malloc(sizeof(float) * m * k), *B = malloc(sizeof(float) * k * n);
                float *C = malloc(sizeof(float) * m * n);
                fill_rand(A, (size_t)m * k, 1);
                fill_rand(B, (size_t)k * n, 2);
                fill_rand(C, (size_t)m * n, 3);
                double *ref = malloc(sizeof(double) * m * n);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int p = 0; p < k; p++)
                            s += (double)(ta ? A[p * m + i] : A[i * k + p]) * (tb ? B[j * k + p] : B[p * n + j]);
                        ref[i * n + j] = 0.5 * s + 2.0 * C[i * n + j];
                    }
                cr_assert_eq(ctx->be->sgemm(ctx, ta, tb, m, n, k, 0.5f, A, ta ? m : k, B, tb ? k : n, 2.0f, C, n),
                             INFL_OK);
                for (int i = 0; i < m * n; i++)
                    cr_assert(fabs(C[i] - ref[i]) < 1e-4 * (1 + fabs(ref[i])), "shape %zu ta %d tb %d", si, ta, tb);
                free(A);
                free(B);
                free(C);
                free(ref);
            }
    infl_ctx_free(ctx);
}

Test(core, elementwise_primitives) {
    infl_ctx *ctx = tu_ctx();
    const infl_backend *be = ctx->be;
    int rows = 37, cols = 13;
    float *X = malloc(sizeof(float) * rows * cols), *b = malloc(sizeof(float) * cols), *out = malloc(sizeof(float) * cols);
    fill_rand(X, (size_t)rows * cols, 4);
    fill_rand(b, (size_t)cols, 5);
    float *X0 = malloc(sizeof(float) * rows * cols);
    memcpy(X0, X, sizeof(float) * rows * cols);
    be->add_row(ctx, X, b, rows, cols);
    for (int i = 0; i < rows * cols; i++) cr_assert_float_eq(X[i], X0[i] + b[i % cols], 1e-6);
    for (int j = 0; j < cols; j++) out[j] = 1.0f;
    be->col_sum(ctx, out, X0, rows, cols, 2.0f, 3.0f);
    for (int j = 0; j < cols; j++) {
        double s = 0;
        for (int i = 0; i < rows; i++) s += X0[i * cols + j];
        cr_assert_float_eq(out[j], 2 * s + 3, 1e-4);
    }
    float w[5] = {1, 2, 3, 4, 5}, v[5] = {0.5f, 0, 0, 0, 1}, g[5] = {1, 1, 1, 1, 1};
    be->sgd_step(ctx, w, v, g, 0.1f, 0.9f, 0.01f, 5);
    cr_assert_float_eq(v[0], 0.9f * 0.5f + 1 + 0.01f, 1e-6);
    cr_assert_float_eq(w[0], 1 - 0.1f * v[0], 1e-6);
    cr_assert_float_eq(v[4], 0.9f + 1 + 0.05f, 1e-6);
    double d;
    float *big = malloc(sizeof(float) * 100003);
    for (int i = 0; i < 100003; i++) big[i] = 0.5f;
    be->dot(ctx, big, big, 100003, &d);
    cr_assert_float_eq(d, 0.25 * 100003, 1e-9);
    be->axpby(ctx, w, g, 2.0f, 0.0f, 5);
    cr_assert_float_eq(w[3], 2.0f, 0);
    // softmax cross-entropy rows: gradient sums to 0, loss is -log p_y
    float logits[6] = {1, 2, 3, -1, 0, 1}, dl[6], loss[2];
    int32_t y[2] = {2, 0}, cor[2];
    cr_assert_eq(be->loss_grad(ctx, INFL_LOSS_SOFTMAX_CE, logits, y, NULL, 2, 3, loss, dl, cor), INFL_OK);
    cr_assert_float_eq(loss[0], -log(exp(3) / (exp(1) + exp(2) + exp(3))), 1e-5);
    cr_assert_float_eq(dl[0] + dl[1] + dl[2], 0, 1e-6);
    cr_assert_eq(cor[0], 1);
    cr_assert_eq(cor[1], 0);
    y[1] = 3;  // out of range
    cr_assert_eq(be->loss_grad(ctx, INFL_LOSS_SOFTMAX_CE, logits, y, NULL, 2, 3, loss, dl, cor), INFL_E_VALUE);
    free(X);
    free(X0);
    free(b);
    free(out);
    free(big);
    infl_ctx_free(ctx);
}
