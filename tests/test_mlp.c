/*
 * test_mlp.c — the MLP's gradients. A float64 reference MLP (plain loops, written
 * here) is checked against central finite differences in float64; the float32 model
 * on the backend is then checked against the reference: batch gradients, per-example
 * factors Δ_l and A_{l-1}, and losses, over a table of shapes, activations and losses.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mathfn.h"
#include "models/mlp.h"
#include "testutil.h"

typedef struct {
    int L;
    int w[5];
    infl_activation act;
    infl_loss loss;
    int B;
} shape;

static const shape shapes[] = {
    {1, {5, 3}, INFL_ACT_RELU, INFL_LOSS_SOFTMAX_CE, 4},
    {2, {7, 5, 3}, INFL_ACT_TANH, INFL_LOSS_SOFTMAX_CE, 6},
    {2, {7, 5, 3}, INFL_ACT_GELU, INFL_LOSS_SOFTMAX_CE, 1},
    {3, {6, 9, 4, 1}, INFL_ACT_GELU, INFL_LOSS_SIGMOID_CE, 5},
    {2, {4, 6, 2}, INFL_ACT_TANH, INFL_LOSS_MSE, 3},
    {3, {33, 17, 31, 10}, INFL_ACT_RELU, INFL_LOSS_SOFTMAX_CE, 7},
    {4, {9, 8, 7, 6, 4}, INFL_ACT_GELU, INFL_LOSS_MSE, 2},
};

static infl_mlp_spec spec_of(const shape *s) {
    infl_mlp_spec sp = {.L = s->L, .act = s->act, .loss = s->loss, .wd = 0};
    for (int l = 0; l <= s->L; l++) sp.widths[l] = s->w[l];
    return sp;
}

// Random fixture: params, inputs, labels (float32-representable values).
typedef struct {
    infl_mlp_spec spec;
    int B;
    size_t np;
    float *wf, *xf, *yff;
    int32_t *y;
    double *w, *x, *yf;
} fixture;

static fixture make_fixture(const shape *sh, uint64_t seed) {
    fixture f = {.spec = spec_of(sh), .B = sh->B};
    f.np = infl_mlp_nparams(&f.spec);
    int d0 = sh->w[0], K = sh->w[sh->L];
    f.wf = malloc(f.np * sizeof(float));
    f.w = malloc(f.np * sizeof(double));
    infl_mlp_init(&f.spec, seed, 0, f.wf);
    uint64_t st = seed;
    for (size_t i = 0; i < f.np; i++) {
        // biases non-zero too, so their gradients are exercised
        if (f.wf[i] == 0.0f) f.wf[i] = (float)(0.2 * (tu_uniform(&st) - 0.5));
        f.w[i] = f.wf[i];
    }
    f.xf = malloc((size_t)f.B * d0 * sizeof(float));
    f.x = malloc((size_t)f.B * d0 * sizeof(double));
    for (int i = 0; i < f.B * d0; i++) f.x[i] = f.xf[i] = (float)(2 * tu_uniform(&st) - 1);
    f.y = malloc((size_t)f.B * sizeof(int32_t));
    f.yff = malloc((size_t)f.B * K * sizeof(float));
    f.yf = malloc((size_t)f.B * K * sizeof(double));
    for (int i = 0; i < f.B; i++) {
        f.y[i] = (int32_t)(tu_uniform(&st) * (sh->loss == INFL_LOSS_SIGMOID_CE ? 2 : K));
        for (int j = 0; j < K; j++) f.yf[i * K + j] = f.yff[i * K + j] = (float)(tu_uniform(&st) - 0.5);
    }
    return f;
}

static void free_fixture(fixture *f) {
    free(f->wf);
    free(f->w);
    free(f->xf);
    free(f->x);
    free(f->y);
    free(f->yff);
    free(f->yf);
}

static double ref_mean_loss(const fixture *f, const double *w, double *g) {
    int d0 = f->spec.widths[0], K = f->spec.widths[f->spec.L];
    double total = 0;
    if (g) memset(g, 0, f->np * sizeof(double));
    for (int i = 0; i < f->B; i++) total += tu_ref_example(&f->spec, w, f->x + i * d0, f->y[i], f->yf + i * K, g, NULL);
    if (g)
        for (size_t j = 0; j < f->np; j++) g[j] /= f->B;
    return total / f->B;
}

ParameterizedTestParameters(mlp, reference_matches_finite_differences) {
    return cr_make_param_array(shape, (void *)shapes, sizeof shapes / sizeof shapes[0]);
}

// The reference gradient against central differences in float64: every coordinate.
ParameterizedTest(const shape *sh, mlp, reference_matches_finite_differences) {
    fixture f = make_fixture(sh, 11);
    double *g = malloc(f.np * sizeof(double)), *wp = malloc(f.np * sizeof(double));
    ref_mean_loss(&f, f.w, g);
    const double h = 1e-5;
    double worst = 0;
    for (size_t j = 0; j < f.np; j++) {
        memcpy(wp, f.w, f.np * sizeof(double));
        wp[j] = f.w[j] + h;
        double lp = ref_mean_loss(&f, wp, NULL);
        wp[j] = f.w[j] - h;
        double lm = ref_mean_loss(&f, wp, NULL);
        double fd = (lp - lm) / (2 * h);
        double err = fabs(fd - g[j]) / (1e-6 + fabs(g[j]));
        if (fabs(fd - g[j]) > 1e-7) worst = fmax(worst, err);
    }
    cr_assert(worst < 1e-4, "worst relative error against finite differences: %g", worst);
    free(g);
    free(wp);
    free_fixture(&f);
}

ParameterizedTestParameters(mlp, backend_matches_reference) {
    return cr_make_param_array(shape, (void *)shapes, sizeof shapes / sizeof shapes[0]);
}

static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

// The float32 model on the backend against the float64 reference: batch gradient,
// per-example factors and losses, to the parity tolerance 1e-4 (float32 sums).
ParameterizedTest(const shape *sh, mlp, backend_matches_reference) {
    infl_ctx *ctx = tu_ctx();
    fixture f = make_fixture(sh, 5);
    const infl_backend *be = ctx->be;
    int d0 = sh->w[0], K = sh->w[sh->L];
    float *dW, *dX, *dG, *dyf;
    int32_t *dy;
    cr_assert(infl_be_alloc_f(ctx, &dW, f.np, "w") == INFL_OK);
    cr_assert(infl_be_alloc_f(ctx, &dG, f.np, "g") == INFL_OK);
    cr_assert(infl_be_alloc_f(ctx, &dX, (size_t)f.B * d0, "x") == INFL_OK);
    cr_assert(infl_be_alloc_f(ctx, &dyf, (size_t)f.B * K, "yf") == INFL_OK);
    cr_assert(be->alloc(ctx, (size_t)f.B * sizeof(int32_t), (void **)&dy) == INFL_OK);
    be->upload(ctx, dW, f.wf, f.np * sizeof(float));
    be->upload(ctx, dX, f.xf, (size_t)f.B * d0 * sizeof(float));
    be->upload(ctx, dy, f.y, (size_t)f.B * sizeof(int32_t));
    be->upload(ctx, dyf, f.yff, (size_t)f.B * K * sizeof(float));
    infl_mlp_work *work;
    cr_assert(infl_mlp_work_create(ctx, &f.spec, f.B + 3, &work) == INFL_OK);
    cr_assert(infl_mlp_forward(ctx, dW, dX, f.B, work) == INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(infl_mlp_backward(ctx, dW, dy, dyf, work, dG, 1.0f / f.B) == INFL_OK, "%s", infl_ctx_error(ctx));

    double *g = malloc(f.np * sizeof(double));
    double ref_loss = ref_mean_loss(&f, f.w, g);
    float *hg = malloc(f.np * sizeof(float));
    be->download(ctx, hg, dG, f.np * sizeof(float));
    double e = rel_err(hg, g, f.np);
    cr_assert(e < 1e-4, "batch gradient: relative error %g", e);

    float *hl = malloc((size_t)f.B * sizeof(float));
    be->download(ctx, hl, work->loss, (size_t)f.B * sizeof(float));
    double mean = 0;
    for (int i = 0; i < f.B; i++) mean += hl[i];
    mean /= f.B;
    cr_assert(fabs(mean - ref_loss) <= 1e-5 * (1 + fabs(ref_loss)), "loss %g vs reference %g", mean, ref_loss);

    // Per-example factors: δ_l ã_{l-1}ᵀ is example i's gradient of layer l.
    double *gi = malloc(f.np * sizeof(double));
    for (int i = 0; i < f.B; i++) {
        memset(gi, 0, f.np * sizeof(double));
        tu_ref_example(&f.spec, f.w, f.x + i * d0, f.y[i], f.yf + i * K, gi, NULL);
        for (int l = 0; l < f.spec.L; l++) {
            int din = f.spec.widths[l], dout = f.spec.widths[l + 1];
            const float *Delta, *Aprev;
            infl_mlp_factors(work, l, &Delta, &Aprev);
            float *gl = malloc((size_t)dout * (din + 1) * sizeof(float));
            double *rl = malloc((size_t)dout * (din + 1) * sizeof(double));
            for (int o = 0; o < dout; o++) {
                for (int j = 0; j < din; j++) {
                    gl[o * (din + 1) + j] = Delta[i * dout + o] * Aprev[i * din + j];
                    rl[o * (din + 1) + j] = gi[infl_mlp_woff(&f.spec, l) + o * din + j];
                }
                gl[o * (din + 1) + din] = Delta[i * dout + o];  // the bias: ã's constant 1
                rl[o * (din + 1) + din] = gi[infl_mlp_boff(&f.spec, l) + o];
            }
            double el = rel_err(gl, rl, (size_t)dout * (din + 1));
            cr_assert(el < 1e-4, "example %d layer %d: per-example gradient relative error %g", i, l, el);
            free(gl);
            free(rl);
        }
    }
    free(gi);
    free(g);
    free(hg);
    free(hl);
    infl_mlp_work_free(ctx, work);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dG);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    infl_be_free(ctx, dyf);
    free_fixture(&f);
    infl_ctx_free(ctx);
}

// φ' and φ'' of mathfn.h against central differences of φ (float64 evaluation of
// the float formulas: tolerance set by float32 rounding of φ, ~1e-7/h).
Test(mlp, activation_derivatives) {
    const infl_activation acts[] = {INFL_ACT_TANH, INFL_ACT_GELU, INFL_ACT_RELU};
    for (int a = 0; a < 3; a++)
        for (double z = -3.05; z < 3.0; z += 0.1) {
            double h = 1e-2;
            double fd1 = (tu_ref_act(acts[a], z + h) - tu_ref_act(acts[a], z - h)) / (2 * h);
            double fd2 = (tu_ref_dact(acts[a], z + h) - tu_ref_dact(acts[a], z - h)) / (2 * h);
            cr_assert(fabs(fd1 - infl_act_df(acts[a], (float)z)) < 1e-3, "act %d phi'(%g)", a, z);
            cr_assert(fabs(fd2 - infl_act_d2f(acts[a], (float)z)) < 1e-3, "act %d phi''(%g): fd %g got %g", a, z,
                      fd2, infl_act_d2f(acts[a], (float)z));
            cr_assert(fabs(tu_ref_act(acts[a], z) - infl_act_f(acts[a], (float)z)) < 1e-6);
        }
}

// The same seed gives the same initial weights; another seed different ones.
Test(mlp, init_is_seeded) {
    infl_mlp_spec s = {.L = 2, .widths = {10, 8, 3}, .act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE};
    size_t np = infl_mlp_nparams(&s);
    cr_assert_eq(np, 8 * 11 + 3 * 9);
    float *a = malloc(np * 4), *b = malloc(np * 4), *c = malloc(np * 4);
    infl_mlp_init(&s, 7, 0, a);
    infl_mlp_init(&s, 7, 0, b);
    infl_mlp_init(&s, 8, 0, c);
    cr_assert(memcmp(a, b, np * 4) == 0);
    cr_assert(memcmp(a, c, np * 4) != 0);
    double bound = sqrt(6.0 / 10);
    for (int i = 0; i < 80; i++) cr_assert(fabsf(a[i]) <= bound);
    free(a);
    free(b);
    free(c);
}
