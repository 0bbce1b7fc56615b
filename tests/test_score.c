/*
 * test_score.c — the score kernels (estimators/score.c) and EK-FAC's application
 * (estimators/ekfac.c) on layers without a bias (ã = a), against float64 references
 * with materialised gradients: the full per-example gradients in the layer space, the
 * ghost dot product, the contraction with preconditioned queries, the low-rank
 * contraction at full rank, and the preconditioner with random orthogonal
 * (Householder) eigenbases. The model is an MLP whose first and last layers are
 * declared without a bias (their layer space shrinks accordingly): every branch of the
 * kernels that depends on the bias is taken both ways in one model. (Layers with a
 * bias are covered end to end by test_attrib and test_ekfac.)
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "estimators/ekfac.h"
#include "estimators/score.h"
#include "models/model.h"
#include "testutil.h"

static double urand(uint64_t *s) { return tu_uniform(s) * 2 - 1; }
static void down(infl_ctx *ctx, float *h, const float *d, size_t n) {
    cr_assert_eq(ctx->be->download(ctx, h, d, n * sizeof(float)), INFL_OK);
}

Test(score, layers_without_bias_against_float64) {
    infl_ctx *ctx = tu_ctx();
    const infl_mlp_spec s = {.L = 3, .widths = {5, 7, 6, 4}, .act = INFL_ACT_TANH, .loss = INFL_LOSS_SOFTMAX_CE};
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, TU_MS(s), 0, &m), INFL_OK);
    m->layer[0].bias = 0;
    m->layer[2].bias = 0;
    size_t at = 0;
    for (int l = 0; l < m->nlayers; l++) m->loff[l] = at, at += infl_linear_size(&m->layer[l]);
    m->lsize = at;
    m->wd = 0.01;
    const int b = 6, M = 3, L = m->nlayers;
    size_t P = m->lsize;
    uint64_t st = 9;
    float *hA[8], *hD[8];
    infl_model_work w = {0};
    const float *Av[8], *Dv[8];
    int off[7] = {0, 1, 2, 3, 4, 5, 6};  // one row per example
    w.A = Av;
    w.D = Dv;
    w.row_off = off;
    w.b = w.rows = b;
    for (int l = 0; l < L; l++) {
        int din = m->layer[l].d_in, dout = m->layer[l].d_out;
        hA[l] = malloc(sizeof(float) * b * din);
        hD[l] = malloc(sizeof(float) * b * dout);
        for (int i = 0; i < b * din; i++) hA[l][i] = (float)urand(&st);
        for (int i = 0; i < b * dout; i++) hD[l][i] = (float)urand(&st);
        Av[l] = tu_upload(ctx, hA[l], (size_t)b * din * sizeof(float));
        Dv[l] = tu_upload(ctx, hD[l], (size_t)b * dout * sizeof(float));
    }
    // reference per-example gradients (b, P)
    double *Gr = calloc((size_t)b * P, sizeof(double));
    for (int i = 0; i < b; i++)
        for (int l = 0; l < L; l++) {
            const infl_linear *ly = &m->layer[l];
            double *g = Gr + (size_t)i * P + m->loff[l];
            for (int o = 0; o < ly->d_out; o++) {
                for (int j = 0; j < ly->d_in; j++) g[o * ly->d_in + j] = hD[l][i * ly->d_out + o] * hA[l][i * ly->d_in + j];
                if (ly->bias) g[(size_t)ly->d_out * ly->d_in + o] = hD[l][i * ly->d_out + o];
            }
        }
    float *G, *tmp;
    cr_assert_eq(infl_be_alloc_f(ctx, &G, (size_t)b * P, "G"), INFL_OK);
    cr_assert_eq(infl_be_alloc_f(ctx, &tmp, (size_t)b * score_grad_tmp_cols(m), "t"), INFL_OK);
    cr_assert_eq(score_full_grads(ctx, G, tmp, m, &w, b), INFL_OK);
    float *hG = malloc(sizeof(float) * b * P);
    down(ctx, hG, G, (size_t)b * P);
    for (size_t i = 0; i < (size_t)b * P; i++) cr_assert(fabs(hG[i] - Gr[i]) < 1e-5, "full grads %zu: %g vs %g", i, hG[i], Gr[i]);
    // ghost: queries = first M examples
    float *S, *T1, *T2, *Sh = malloc(sizeof(float) * M * b);
    cr_assert_eq(infl_be_alloc_f(ctx, &S, (size_t)M * b, "S"), INFL_OK);
    cr_assert_eq(infl_be_alloc_f(ctx, &T1, (size_t)M * b, "S"), INFL_OK);
    cr_assert_eq(infl_be_alloc_f(ctx, &T2, (size_t)M * b, "S"), INFL_OK);
    cr_assert_eq(ctx->be->fill(ctx, S, 0, (size_t)M * b), INFL_OK);
    for (int l = 0; l < L; l++)
        cr_assert_eq(score_ghost_layer(ctx, S, T1, T2, &m->layer[l], Dv[l], Av[l], Dv[l], Av[l], M, b, 1.0f), INFL_OK);
    down(ctx, Sh, S, (size_t)M * b);
    for (int q = 0; q < M; q++)
        for (int i = 0; i < b; i++) {
            double r = 0;
            for (size_t k = 0; k < P; k++) r += Gr[(size_t)q * P + k] * Gr[(size_t)i * P + k];
            cr_assert(fabs(Sh[q * b + i] - r) < 1e-4 * (1 + fabs(r)), "ghost %d %d: %g vs %g", q, i, Sh[q * b + i], r);
        }
    // contract with random V
    float *hV = malloc(sizeof(float) * M * P);
    for (size_t i = 0; i < (size_t)M * P; i++) hV[i] = (float)urand(&st);
    float *V = tu_upload(ctx, hV, (size_t)M * P * sizeof(float)), *Gz;
    cr_assert_eq(infl_be_alloc_f(ctx, &Gz, (size_t)b * 8, "Gz"), INFL_OK);
    cr_assert_eq(ctx->be->fill(ctx, S, 0, (size_t)M * b), INFL_OK);
    for (int l = 0; l < L; l++)
        cr_assert_eq(score_contract_layer(ctx, S, Gz, &m->layer[l], V + m->loff[l], P, Dv[l], Av[l], M, b), INFL_OK);
    down(ctx, Sh, S, (size_t)M * b);
    for (int q = 0; q < M; q++)
        for (int i = 0; i < b; i++) {
            double r = 0;
            for (size_t k = 0; k < P; k++) r += hV[(size_t)q * P + k] * Gr[(size_t)i * P + k];
            cr_assert(fabs(Sh[q * b + i] - r) < 1e-4 * (1 + fabs(r)), "contract %d %d: %g vs %g", q, i, Sh[q * b + i], r);
        }
    // low rank at full rank equals contract
    float *LF[INFL_MAX_LINEAR], *RF[INFL_MAX_LINEAR];
    int rl[INFL_MAX_LINEAR];
    double energy;
    cr_assert_eq(ekfac_lowrank(ctx, LF, RF, rl, &energy, m, V, M, 8), INFL_OK, "%s", infl_ctx_error(ctx));
    float *X1, *X2;
    cr_assert_eq(infl_be_alloc_f(ctx, &X1, (size_t)b * M * 8, "x"), INFL_OK);
    cr_assert_eq(infl_be_alloc_f(ctx, &X2, (size_t)b * M * 8, "x"), INFL_OK);
    cr_assert_eq(ctx->be->fill(ctx, S, 0, (size_t)M * b), INFL_OK);
    for (int l = 0; l < L; l++)
        cr_assert_eq(score_lowrank_layer(ctx, S, X1, X2, &m->layer[l], LF[l], RF[l], rl[l], Dv[l], Av[l], M, b), INFL_OK);
    down(ctx, Sh, S, (size_t)M * b);
    for (int q = 0; q < M; q++)
        for (int i = 0; i < b; i++) {
            double r = 0;
            for (size_t k = 0; k < P; k++) r += hV[(size_t)q * P + k] * Gr[(size_t)i * P + k];
            cr_assert(fabs(Sh[i * M + q] - r) < 1e-3 * (1 + fabs(r)), "lowrank %d %d: %g vs %g", q, i, Sh[i * M + q], r);
        }
    // precondition with Householder bases
    infl_factors *f;
    cr_assert_eq(infl_factors_alloc(ctx, L, m->layer, &f), INFL_OK);
    snprintf(f->strategy, sizeof f->strategy, "ekfac");
    for (int l = 0; l < L; l++) {
        int ni = infl_linear_ni(&m->layer[l]), no = m->layer[l].d_out;
        int ns[2] = {ni, no};
        double *Q[2] = {f->A_vecs[l], f->S_vecs[l]};
        for (int k = 0; k < 2; k++) {
            int n = ns[k];
            double v[16], vv = 0;
            for (int i = 0; i < n; i++) v[i] = urand(&st), vv += v[i] * v[i];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) Q[k][i * n + j] = (i == j) - 2 * v[i] * v[j] / vv;
        }
        for (int i = 0; i < ni; i++) f->A_vals[l][i] = 1;
        for (int i = 0; i < no; i++) f->S_vals[l][i] = 1;
        for (int i = 0; i < no * ni; i++) f->lambda[l][i] = 0.5 + tu_uniform(&st);
    }
    ekfac_pre *pre;
    cr_assert_eq(ekfac_pre_create(ctx, f, "f", m, INFL_METHOD_EKFAC, 0.1, 0, &pre), INFL_OK, "%s", infl_ctx_error(ctx));
    float *Vo;
    cr_assert_eq(infl_be_alloc_f(ctx, &Vo, (size_t)M * P, "x"), INFL_OK);
    cr_assert_eq(ekfac_precondition(ctx, Vo, pre, m, V, M), INFL_OK);
    float *hVo = malloc(sizeof(float) * M * P);
    down(ctx, hVo, Vo, (size_t)M * P);
    for (int q = 0; q < M; q++)
        for (int l = 0; l < L; l++) {
            const infl_linear *ly = &m->layer[l];
            int ni = infl_linear_ni(ly), no = ly->d_out, din = ly->d_in;
            const float *g = hV + (size_t)q * P + m->loff[l];
            double Wt[16 * 16], T[16 * 16], U[16 * 16];
            for (int o = 0; o < no; o++)
                for (int j = 0; j < ni; j++) Wt[o * ni + j] = j < din ? g[o * din + j] : g[no * din + o];
            // T = RS Wt RAᵀ (RS rows = S eigvecs, RA rows = A eigvecs)
            for (int a = 0; a < no; a++)
                for (int c = 0; c < ni; c++) {
                    double x = 0;
                    for (int o = 0; o < no; o++)
                        for (int j = 0; j < ni; j++) x += f->S_vecs[l][a * no + o] * Wt[o * ni + j] * f->A_vecs[l][c * ni + j];
                    T[a * ni + c] = x / (f->lambda[l][a * ni + c] + m->wd + 0.1);
                }
            for (int o = 0; o < no; o++)
                for (int j = 0; j < ni; j++) {
                    double x = 0;
                    for (int a = 0; a < no; a++)
                        for (int c = 0; c < ni; c++) x += f->S_vecs[l][a * no + o] * T[a * ni + c] * f->A_vecs[l][c * ni + j];
                    U[o * ni + j] = x;
                }
            const float *v = hVo + (size_t)q * P + m->loff[l];
            for (int o = 0; o < no; o++)
                for (int j = 0; j < ni; j++) {
                    double got = j < din ? v[o * din + j] : v[no * din + o];
                    cr_assert(fabs(got - U[o * ni + j]) < 1e-4 * (1 + fabs(U[o * ni + j])), "pre q%d l%d (%d,%d): %g vs %g", q, l, o,
                              j, got, U[o * ni + j]);
                }
        }
    for (int l = 0; l < L; l++) {
        infl_be_free(ctx, (void *)Av[l]);
        infl_be_free(ctx, (void *)Dv[l]);
        infl_be_free(ctx, LF[l]);
        infl_be_free(ctx, RF[l]);
        free(hA[l]);
        free(hD[l]);
    }
    float *dev_bufs[] = {G, tmp, S, T1, T2, V, Gz, X1, X2, Vo};
    for (size_t i = 0; i < sizeof dev_bufs / sizeof dev_bufs[0]; i++) infl_be_free(ctx, dev_bufs[i]);
    ekfac_pre_free(ctx, pre);
    infl_factors_free(f);
    infl_model_free(m);
    free(Gr);
    free(hG);
    free(Sh);
    free(hV);
    free(hVo);
    infl_ctx_free(ctx);
}
