/*
 * test_index.c — gradient indexes (estimators/project.c, pipelines/index.c,
 * index_rank.c, store/store_index.c) against the truth:
 *  - the generated projection: the same entries for any block split, ±1/√k for
 *    rademacher, E[PᵀP] ≈ I at the right scale for gaussian;
 *  - projecting through the seam (chunked outer products, or LoGra's Kronecker form)
 *    equals the dense P applied to the materialised gradient (the MLP with layers
 *    wider than a chunk, and a GPT's documents);
 *  - rank --index graddot / tracin against a float64 reference: the reference MLP's
 *    per-example gradients projected by the dense P; TRAK against a dense solve on a
 *    linear model; the projected grad-dot's error shrinks as 1/√k;
 *  - an interrupted index resumes to the same rows as an uninterrupted one;
 *  - trak's and if's kernels over many chunks of rows (a diagonal kernel known exactly);
 *  - bad input: another run's index, k larger than the gradient, a truncated file;
 *  - float16 conversion (rounding to nearest even, subnormals, overflow), and every half
 *    pattern read back from a float16 index as the scalar conversion gives it;
 *  - the CUDA backend's index against the CPU's (skipped without a device).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "core/projgen.h"
#include "estimators/project.h"
#include "estimators/score.h"
#include "pipelines/attrib.h"
#include "testutil.h"
#include "cudapair.h"

// A small trained MLP on blobs (SGD, checkpoints every 5 steps), or with no hidden layer (Newton).
static void small_run(infl_train_options *o, void *u) {
    o->epochs = 2;
    o->batch = 16;
    o->lr = 0.05;
    o->weight_decay = 1e-2;
    o->checkpoint_every = 5;
    o->seed = *(const uint64_t *)u;
    if (o->nlayers == 1) o->optimizer = INFL_OPT_AUTO;  // convex: Newton to the optimum
}

static void make_run(const char *data, const char *run, int L, const int *w, uint64_t seed) {
    tu_train_mlp(data, run, L, w, small_run, &seed);
}

static infl_index_options ix_opts(const char *run, infl_projection p, int dim) {
    infl_index_options o = infl_index_options_default();
    o.run = run;
    o.projection = p;
    o.dim = dim;
    o.float16 = 0;
    o.force = 1;
    o.shard_rows = 23;  // several shards that do not divide N
    return o;
}

// P (k, lsize) in double: every layer's block of the dense projection (matrix 3l).
static double *dense_P(infl_ctx *ctx, const infl_model *m, int kind, uint64_t seed, int k) {
    double *P = calloc((size_t)k * m->lsize, sizeof(double));
    for (int l = 0; l < m->nlayers; l++) {
        size_t n = infl_linear_size(&m->layer[l]);
        float *blk = malloc(n * k * sizeof(float));
        cr_assert_eq(ctx->be->proj_gen(ctx, blk, kind, seed, (uint32_t)(3 * l), 0, (int)n, k, 1.0f / sqrtf((float)k)),
                     INFL_OK);
        for (size_t c = 0; c < n; c++)
            for (int j = 0; j < k; j++) P[(size_t)j * m->lsize + m->loff[l] + c] = blk[c * k + j];
        free(blk);
    }
    return P;
}

// φ (k) = the projection of one layer-space gradient g (lsize): dense, or kron per layer
// (P_out G̃ P_inᵀ with G̃ (d_out, d_in + bias) = [W | b] of the block).
static void project_ref(infl_ctx *ctx, const infl_model *m, int kron, int ko, int ki, uint64_t seed, const double *P,
                        int k, const double *g, double *phi) {
    if (!kron) {
        for (int j = 0; j < k; j++) {
            double s = 0;
            for (size_t c = 0; c < m->lsize; c++) s += P[(size_t)j * m->lsize + c] * g[c];
            phi[j] = s;
        }
        return;
    }
    int at = 0;
    for (int l = 0; l < m->nlayers; l++) {
        const infl_linear *ly = &m->layer[l];
        int din = ly->d_in, dout = ly->d_out, ni = infl_linear_ni(ly);
        int o = ko < dout ? ko : dout, i = ki < ni ? ki : ni;
        float *Po = malloc((size_t)dout * o * sizeof(float)), *Pi = malloc((size_t)ni * i * sizeof(float));
        cr_assert_eq(ctx->be->proj_gen(ctx, Po, INFL_PROJ_RADEMACHER_, seed, 3 * l + 1, 0, dout, o, 1.0f / sqrtf(o)),
                     INFL_OK);
        cr_assert_eq(ctx->be->proj_gen(ctx, Pi, INFL_PROJ_RADEMACHER_, seed, 3 * l + 2, 0, ni, i, 1.0f / sqrtf(i)),
                     INFL_OK);
        const double *gl = g + m->loff[l];
        for (int a = 0; a < o; a++)
            for (int b = 0; b < i; b++) {
                double s = 0;
                for (int r = 0; r < dout; r++)
                    for (int c = 0; c < ni; c++) {
                        double gv = c < din ? gl[(size_t)r * din + c] : gl[(size_t)dout * din + r];
                        s += Po[(size_t)r * o + a] * gv * Pi[(size_t)c * i + b];
                    }
                phi[at + a * i + b] = s;
            }
        at += o * i;
        free(Po);
        free(Pi);
    }
}

// ---- the generator ----

Test(index, projection_blocks_agree_and_scale) {
    infl_ctx *ctx = tu_ctx();
    int k = 303, n = 64;  // k no multiple of a counter's 4 (gaussian) or 128 (rademacher) entries
    for (int kind = 0; kind < 2; kind++) {
        float *a = malloc((size_t)n * k * sizeof(float)), *b = malloc((size_t)n * k * sizeof(float));
        float s = 1.0f / sqrtf((float)k);
        cr_assert_eq(ctx->be->proj_gen(ctx, a, kind, 5, 7, 100, n, k, s), INFL_OK);
        // the same columns in two blocks, generated apart
        cr_assert_eq(ctx->be->proj_gen(ctx, b, kind, 5, 7, 100, 25, k, s), INFL_OK);
        cr_assert_eq(ctx->be->proj_gen(ctx, b + (size_t)25 * k, kind, 5, 7, 125, n - 25, k, s), INFL_OK);
        cr_assert(memcmp(a, b, (size_t)n * k * sizeof(float)) == 0, "kind %d: blocks differ", kind);
        // the scalar entry function agrees with the block
        for (int j = 0; j < k; j++)
            cr_assert_eq(a[(size_t)3 * k + j], s * infl_proj_entry(kind, 5, 7, 103, (uint32_t)j), "kind %d row %d",
                         kind, j);
        // (PᵀP)_ij = Σ_rows P_ri P_rj: near the identity, within a few 1/√k
        double maxoff = 0, maxdiag = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) {
                double d = 0;
                for (int r = 0; r < k; r++) d += (double)a[(size_t)i * k + r] * a[(size_t)j * k + r];
                if (i == j) maxdiag = fmax(maxdiag, fabs(d - 1));
                else maxoff = fmax(maxoff, fabs(d));
            }
        cr_assert(maxoff < 5.0 / sqrt(k), "kind %d: off-diagonal of PᵀP up to %g", kind, maxoff);
        if (kind == INFL_PROJ_RADEMACHER_) {
            cr_assert(maxdiag < 1e-6, "rademacher columns have norm 1");
            for (size_t e = 0; e < (size_t)n * k; e++) cr_assert(fabsf(fabsf(a[e]) - s) == 0);
        } else {
            cr_assert(maxdiag < 6.0 * sqrt(2.0 / k), "gaussian column norms off by %g", maxdiag);
        }
        free(a);
        free(b);
    }
    infl_ctx_free(ctx);
}

// ---- projecting through the seam ----

// The queries' projections by proj_batch against the dense projection of their materialised gradients.
static void check_projection(const char *run, const char *query, int kind, int dim, int ko, int ki) {
    infl_ctx *ctx = tu_ctx();
    infl_rank_options ro = infl_rank_options_default();
    ro.run = run;
    ro.query = query;
    ro.method = INFL_METHOD_GRADDOT;
    attrib a;
    cr_assert_eq(attrib_open(ctx, &a, &ro, 1), INFL_OK, "%s", infl_ctx_error(ctx));
    attrib_qbatch qb;
    cr_assert_eq(attrib_query_batch(ctx, &a, &qb), INFL_OK, "%s", infl_ctx_error(ctx));
    int M = a.M;
    infl_model_work *w;
    cr_assert_eq(infl_model_work_create(ctx, a.m, M, &w), INFL_OK);
    cr_assert_eq(attrib_factors(ctx, &a, 0, &qb.bt, w), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_proj *p;
    int rows = a.tokens ? a.RQ : M;
    cr_assert_eq(proj_create(ctx, a.m, kind, dim, ko, ki, 11, M, rows, &p), INFL_OK, "%s", infl_ctx_error(ctx));
    int k = proj_dim(p);
    float *phi = calloc((size_t)M * k, sizeof(float));
    cr_assert_eq(proj_batch(ctx, p, a.m, w, M, phi), INFL_OK, "%s", infl_ctx_error(ctx));
    // the materialised gradients (M, lsize)
    size_t P = a.m->lsize;
    float *G = calloc((size_t)M * P, sizeof(float)), *tmp = calloc((size_t)M * score_grad_tmp_cols(a.m), sizeof(float));
    cr_assert_eq(score_full_grads(ctx, G, tmp, a.m, w, M), INFL_OK);
    int kr = kind == INFL_PROJ_KRON;
    double *Pd = kr ? NULL : dense_P(ctx, a.m, kind == INFL_PROJ_GAUSSIAN ? INFL_PROJ_GAUSSIAN_ : INFL_PROJ_RADEMACHER_,
                                     11, k);
    double *g = malloc(P * sizeof(double)), *ref = malloc((size_t)k * sizeof(double));
    double num = 0, den = 0;
    for (int q = 0; q < M; q++) {
        for (size_t c = 0; c < P; c++) g[c] = G[(size_t)q * P + c];
        project_ref(ctx, a.m, kr, ko, ki, 11, Pd, k, g, ref);
        for (int j = 0; j < k; j++) {
            num += (phi[(size_t)q * k + j] - ref[j]) * (phi[(size_t)q * k + j] - ref[j]);
            den += ref[j] * ref[j];
        }
    }
    cr_assert(den > 0);
    cr_assert(sqrt(num / den) < 2e-5, "kind %d: relative error %g against P g", kind, sqrt(num / den));
    free(g);
    free(ref);
    free(Pd);
    free(G);
    free(tmp);
    free(phi);
    proj_free(ctx, p);
    infl_model_work_free(ctx, a.m, w);
    attrib_qbatch_free(ctx, &qb);
    attrib_close(&a);
    infl_ctx_free(ctx);
}

Test(index, projection_equals_materialised_gradient) {
    // 300 inputs: the first layer's 40 x 301 entries are more than one chunk of 8192 columns
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5");
    tu_make_blobs(data, 60, 300, 3, 2);
    const int w[] = {300, 40, 3};
    make_run(data, run, 2, w, 1);
    check_projection(run, tu_ref(0, data, "test[0:5]"), INFL_PROJ_RADEMACHER, 96, 0, 0);
    check_projection(run, tu_ref(0, data, "test[0:5]"), INFL_PROJ_GAUSSIAN, 33, 0, 0);
    check_projection(run, tu_ref(0, data, "test[0:5]"), INFL_PROJ_KRON, 0, 4, 7);
}

Test(index, projection_of_documents_equals_materialised_gradient) {
    char data[4096], run[4096];
    snprintf(data, sizeof data, "%s", tu_path("docs.h5"));
    snprintf(run, sizeof run, "%s", tu_path("gpt.h5"));
    tu_tiny_gpt(data, run, 0.2, 1, 0);
    infl_ctx *ctx;
    check_projection(run, tu_ref(0, data, "test[0:4]"), INFL_PROJ_RADEMACHER, 40, 0, 0);
    check_projection(run, tu_ref(0, data, "test[0:4]"), INFL_PROJ_KRON, 0, 3, 5);
    // ranked from an index: each reported document's token shares add up to its score
    ctx = tu_ctx();
    char ix[4096];
    snprintf(ix, sizeof ix, "%s", tu_path("gix.h5"));
    infl_index_options io = ix_opts(run, INFL_PROJ_KRON, 0);
    io.kron_out = 4;
    io.kron_in = 6;
    infl_index_report rep;
    cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    const infl_method ms[] = {INFL_METHOD_TRACIN, INFL_METHOD_TRAK, INFL_METHOD_GRADCOS};
    for (int t = 0; t < 3; t++) {
        infl_rank_options ro = infl_rank_options_default();
        ro.index = ix;
        ro.query = tu_ref(1, data, "test[0:3]");
        ro.method = ms[t];
        ro.damping_auto = 1;
        ro.top = 3;
        ro.token_shares = 1;
        infl_rank_result *res;
        cr_assert_eq(infl_rank(ctx, &ro, &res), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert_not_null(res->top_shares);
        for (int e = 0; e < res->M * res->k; e++)
            for (int side = 0; side < 2; side++) {
                const infl_token_shares *sh = &(side ? res->bottom_shares : res->top_shares)[e];
                double sum = 0, score = (side ? res->bottom_score : res->top_score)[e];
                for (int i = 0; i < sh->n; i++) sum += sh->share[i];
                cr_assert(sh->n > 0);
                cr_assert(fabs(sum - score) <= 1e-4 * fabs(score) + 1e-7, "method %d: shares add up to %g, score %g",
                          (int)ms[t], sum, score);
            }
        infl_rank_result_free(res);
    }
    infl_ctx_free(ctx);
}

// ---- scores against float64 references ----

// The reference MLP's loss gradients (n, P) in double for rows of a split at a checkpoint's weights.
static double *ref_grads(infl_ctx *ctx, const char *run, int ck, const char *ref, int64_t *n, infl_mlp_spec *spec,
                         double *loss) {
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
    *spec = store_run_spec(r)->mlp;
    size_t P = infl_mlp_nparams(spec);
    float *wf = malloc(P * sizeof(float));
    cr_assert_eq(store_run_load(ctx, r, ck < 0 ? store_run_ncheckpoints(r) - 1 : ck, wf), INFL_OK);
    double *w = malloc(P * sizeof(double));
    for (size_t i = 0; i < P; i++) w[i] = wf[i];
    infl_split *s = tu_open_split(ctx, ref);
    *n = store_split_info(s)->n;
    int d = spec->widths[0];
    float *x = malloc((size_t)*n * d * sizeof(float));
    int32_t *y = malloc((size_t)*n * sizeof(int32_t));
    cr_assert_eq(store_split_read(ctx, s, 0, *n, x, y, NULL), INFL_OK);
    double *g = calloc((size_t)*n * P, sizeof(double)), *xd = malloc((size_t)d * sizeof(double));
    for (int64_t i = 0; i < *n; i++) {
        for (int j = 0; j < d; j++) xd[j] = x[(size_t)i * d + j];
        double l = tu_ref_example(spec, w, xd, y[i], NULL, g + (size_t)i * P, NULL);
        if (loss) loss[i] = l;
    }
    free(xd);
    free(x);
    free(y);
    free(w);
    free(wf);
    store_split_close(s);
    store_run_close(r);
    return g;
}

Test(index, rank_matches_projected_reference) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *ix = tu_path("ix.h5");
    tu_make_blobs(data, 70, 5, 3, 4);
    const int w[] = {5, 6, 3};
    make_run(data, run, 2, w, 1);
    infl_ctx *ctx = tu_ctx();
    infl_index_options io = ix_opts(run, INFL_PROJ_RADEMACHER, 24);
    infl_index_report rep;
    cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.N, 70);
    for (int method = 0; method < 2; method++) {
        infl_rank_options o = infl_rank_options_default();
        o.index = ix;
        o.query = tu_ref(1, data, "test[0:4]");
        o.method = method ? INFL_METHOD_TRACIN : INFL_METHOD_GRADDOT;
        o.top = 3;
        attrib_full f = {.N = 70};
        f.S = calloc(4 * 70, sizeof(float));
        infl_rank_result *res;
        cr_assert_eq(attrib_rank(ctx, &o, attrib_keep_full, &f, &res), INFL_OK, "%s", infl_ctx_error(ctx));
        // the reference: Σ_c w_c (P g_q)·(P g_z) with float64 gradients
        infl_run *r;
        cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
        int nck = store_run_ncheckpoints(r);
        infl_model *m;
        cr_assert_eq(infl_model_create(ctx, store_run_spec(r), 0, &m), INFL_OK);
        double *Pd = dense_P(ctx, m, INFL_PROJ_RADEMACHER_, 0, 24);
        double *R = calloc(4 * 70, sizeof(double));
        for (int c = method ? 0 : nck - 1; c < nck; c++) {
            int64_t nz, nq;
            infl_mlp_spec sp;
            double *gz = ref_grads(ctx, run, c, tu_ref(0, data, "train"), &nz, &sp, NULL);
            double *gq = ref_grads(ctx, run, c, tu_ref(0, data, "test[0:4]"), &nq, &sp, NULL);
            size_t P = m->lsize;
            double *pz = malloc((size_t)nz * 24 * sizeof(double)), *pq = malloc((size_t)nq * 24 * sizeof(double));
            for (int64_t i = 0; i < nz; i++) project_ref(ctx, m, 0, 0, 0, 0, Pd, 24, gz + i * P, pz + i * 24);
            for (int64_t i = 0; i < nq; i++) project_ref(ctx, m, 0, 0, 0, 0, Pd, 24, gq + i * P, pq + i * 24);
            double wc = method ? store_run_checkpoint(r, c)->lr : 1.0;
            for (int q = 0; q < 4; q++)
                for (int i = 0; i < 70; i++) {
                    double s = 0;
                    for (int j = 0; j < 24; j++) s += pq[q * 24 + j] * pz[i * 24 + j];
                    R[q * 70 + i] += wc * s;
                }
            free(gz);
            free(gq);
            free(pz);
            free(pq);
        }
        double num = 0, den = 0;
        for (int i = 0; i < 4 * 70; i++) {
            num += (f.S[i] - R[i]) * (f.S[i] - R[i]);
            den += R[i] * R[i];
        }
        cr_assert(sqrt(num / den) < 1e-4, "method %d: relative error %g", method, sqrt(num / den));
        free(R);
        free(Pd);
        free(f.S);
        infl_model_free(m);
        store_run_close(r);
        infl_rank_result_free(res);
    }
    infl_ctx_free(ctx);
}

// TRAK on a linear model with λ → 0: φ_q (ΦᵀΦ)⁻¹ φ_z q_z, Φ the projected margin gradients, by a dense solve.
Test(index, trak_matches_dense_solve_on_a_linear_model) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *ix = tu_path("ix.h5");
    tu_make_blobs(data, 80, 4, 3, 9);
    const int w[] = {4, 3};
    make_run(data, run, 1, w, 1);  // no hidden layer: Newton to the optimum
    infl_ctx *ctx = tu_ctx();
    int k = 10;  // of P = 15
    infl_index_options io = ix_opts(run, INFL_PROJ_RADEMACHER, k);
    io.checkpoints = "final";
    infl_index_report rep;
    cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_options o = infl_rank_options_default();
    o.index = ix;
    o.query = tu_ref(1, data, "test[0:5]");
    o.method = INFL_METHOD_TRAK;
    o.damping = 1e-9;
    o.top = 3;
    int64_t N = rep.N;
    attrib_full f = {.N = N};
    f.S = calloc((size_t)5 * N, sizeof(float));
    infl_rank_result *res;
    cr_assert_eq(attrib_rank(ctx, &o, attrib_keep_full, &f, &res), INFL_OK, "%s", infl_ctx_error(ctx));
    // the reference
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK);
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, store_run_spec(r), 0, &m), INFL_OK);
    double *Pd = dense_P(ctx, m, INFL_PROJ_RADEMACHER_, 0, k);
    int64_t nz, nq;
    infl_mlp_spec sp;
    double *lz = malloc((size_t)N * sizeof(double)), lq[5];
    double *gz = ref_grads(ctx, run, -1, tu_ref(0, data, "train"), &nz, &sp, lz);
    double *gq = ref_grads(ctx, run, -1, tu_ref(0, data, "test[0:5]"), &nq, &sp, lq);
    size_t P = m->lsize;
    // margin features: the loss gradient over q = 1 − p_y = −expm1(−ℓ)
    double *Fz = malloc((size_t)N * k * sizeof(double)), *Fq = malloc(5 * k * sizeof(double)), *qz = malloc(N * sizeof(double));
    for (int64_t i = 0; i < N; i++) {
        project_ref(ctx, m, 0, 0, 0, 0, Pd, k, gz + i * P, Fz + i * k);
        qz[i] = -expm1(-lz[i]);
        for (int j = 0; j < k; j++) Fz[i * k + j] /= qz[i];
    }
    for (int q = 0; q < 5; q++) {
        project_ref(ctx, m, 0, 0, 0, 0, Pd, k, gq + q * P, Fq + q * k);
        for (int j = 0; j < k; j++) Fq[q * k + j] /= -expm1(-lq[q]);
    }
    // K = ΦᵀΦ, solved by Gaussian elimination with partial pivoting for each query
    double *K = calloc((size_t)k * k, sizeof(double));
    for (int64_t i = 0; i < N; i++)
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++) K[a * k + b] += Fz[i * k + a] * Fz[i * k + b];
    double num = 0, den = 0;
    for (int q = 0; q < 5; q++) {
        double A[10][11];
        for (int a = 0; a < k; a++) {
            for (int b = 0; b < k; b++) A[a][b] = K[a * k + b];
            A[a][k] = Fq[q * k + a];
        }
        for (int c = 0; c < k; c++) {
            int piv = c;
            for (int a = c + 1; a < k; a++)
                if (fabs(A[a][c]) > fabs(A[piv][c])) piv = a;
            for (int b = 0; b <= k; b++) {
                double t = A[c][b];
                A[c][b] = A[piv][b];
                A[piv][b] = t;
            }
            for (int a = 0; a < k; a++)
                if (a != c) {
                    double fct = A[a][c] / A[c][c];
                    for (int b = c; b <= k; b++) A[a][b] -= fct * A[c][b];
                }
        }
        for (int64_t i = 0; i < N; i++) {
            double s = 0;
            for (int a = 0; a < k; a++) s += A[a][k] / A[a][a] * Fz[i * k + a];
            double ref = s * qz[i];
            num += (f.S[q * N + i] - ref) * (f.S[q * N + i] - ref);
            den += ref * ref;
        }
    }
    cr_assert(sqrt(num / den) < 2e-3, "trak: relative error %g against the dense solve", sqrt(num / den));
    free(K);
    free(Fz);
    free(Fq);
    free(qz);
    free(gz);
    free(gq);
    free(lz);
    free(Pd);
    free(f.S);
    infl_model_free(m);
    store_run_close(r);
    infl_rank_result_free(res);
    infl_ctx_free(ctx);
}

// The projected grad-dot's relative error against the exact one falls like 1/√k.
Test(index, projection_error_shrinks_as_one_over_root_k) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *ix = tu_path("ix.h5");
    tu_make_blobs(data, 60, 20, 3, 6);
    const int w[] = {20, 16, 3};
    make_run(data, run, 2, w, 2);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = infl_rank_options_default();
    o.run = run;
    o.query = tu_ref(1, data, "test[0:6]");
    o.method = INFL_METHOD_GRADDOT;
    o.top = 3;
    attrib_full ex = {.N = 60};
    ex.S = calloc(6 * 60, sizeof(float));
    infl_rank_result *res;
    cr_assert_eq(attrib_rank(ctx, &o, attrib_keep_full, &ex, &res), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_result_free(res);
    double err[2];
    const int ks[2] = {16, 256};
    for (int t = 0; t < 2; t++) {
        // the mean over 4 seeds of the relative error
        err[t] = 0;
        for (uint64_t seed = 0; seed < 4; seed++) {
            infl_index_options io = ix_opts(run, INFL_PROJ_GAUSSIAN, ks[t]);
            io.checkpoints = "final";
            io.seed = seed;
            infl_index_report rep;
            cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
            o.run = NULL;
            o.index = ix;
            attrib_full f = {.N = 60};
            f.S = calloc(6 * 60, sizeof(float));
            cr_assert_eq(attrib_rank(ctx, &o, attrib_keep_full, &f, &res), INFL_OK, "%s", infl_ctx_error(ctx));
            double num = 0, den = 0;
            for (int i = 0; i < 6 * 60; i++) {
                num += (f.S[i] - ex.S[i]) * (f.S[i] - ex.S[i]);
                den += (double)ex.S[i] * ex.S[i];
            }
            err[t] += sqrt(num / den) / 4;
            free(f.S);
            infl_rank_result_free(res);
        }
    }
    // 16x the width: 4x less error, within the spread of 4 seeds
    double ratio = err[0] / err[1];
    cr_assert(ratio > 2.5 && ratio < 6.5, "error %g at k = 16, %g at k = 256: ratio %g, expected about 4", err[0],
              err[1], ratio);
    free(ex.S);
    infl_ctx_free(ctx);
}

// ---- resuming ----

typedef struct {
    volatile int flag;
    int shards;
} stopper;

static void stop_after_two(void *user, const char *what, uint64_t done, uint64_t total, const char *info) {
    (void)done, (void)total, (void)info;
    stopper *s = user;
    if (!strcmp(what, "index") && ++s->shards == 2) s->flag = 1;
}

Test(index, an_interrupted_index_resumes_to_the_same_rows) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *a = tu_path("a.h5"), *b = tu_path("b.h5");
    tu_make_blobs(data, 150, 6, 3, 5);
    const int w[] = {6, 8, 3};
    make_run(data, run, 2, w, 1);
    infl_ctx *ctx = tu_ctx();
    infl_index_options io = ix_opts(run, INFL_PROJ_RADEMACHER, 20);
    io.float16 = 1;
    infl_index_report rep;
    cr_assert_eq(infl_index(ctx, &io, a, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    // interrupted after two shards: the partial file stays, the output does not exist
    stopper st = {0};
    infl_ctx_set_progress(ctx, stop_after_two, &st);
    infl_ctx_set_cancel(ctx, &st.flag);
    cr_assert_eq(infl_index(ctx, &io, b, &rep), INFL_E_INTERRUPTED);
    cr_assert(!tu_exists(b));
    char partial[4200];
    snprintf(partial, sizeof partial, "%s.partial", b);
    cr_assert(tu_exists(partial));
    // again: resumes after the two shards
    st.flag = 0;
    st.shards = -1000;
    io.force = 0;
    cr_assert_eq(infl_index(ctx, &io, b, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.resumed_rows, 46, "resumed after %lld rows", (long long)rep.resumed_rows);
    cr_assert(!tu_exists(partial));
    // other settings do not resume a partial file, and say why
    infl_ixr *ra, *rb;
    cr_assert_eq(store_index_open(ctx, a, &ra), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_index_open(ctx, b, &rb), INFL_OK, "%s", infl_ctx_error(ctx));
    const infl_index_info *ia = store_index_info(ra);
    int64_t N = ia->N;
    float *pa = malloc((size_t)N * 20 * sizeof(float)), *pb = malloc((size_t)N * 20 * sizeof(float));
    float *qa = malloc((size_t)N * sizeof(float)), *qb = malloc((size_t)N * sizeof(float));
    for (int c = 0; c < ia->nck; c++) {
        cr_assert_eq(store_index_read(ctx, ra, c, 0, N, pa, qa), INFL_OK);
        cr_assert_eq(store_index_read(ctx, rb, c, 0, N, pb, qb), INFL_OK);
        cr_assert(memcmp(pa, pb, (size_t)N * 20 * sizeof(float)) == 0, "checkpoint %d: the rows differ", c);
        cr_assert(memcmp(qa, qb, (size_t)N * sizeof(float)) == 0);
    }
    free(pa);
    free(pb);
    free(qa);
    free(qb);
    store_index_close_r(ra);
    store_index_close_r(rb);
    infl_ctx_free(ctx);
}

// ---- bad input ----

Test(index, bad_input_is_named) {
    const char *data = tu_path("d.h5"), *run = tu_path("r.h5"), *run2 = tu_path("r2.h5"), *ix = tu_path("ix.h5");
    tu_make_blobs(data, 50, 5, 3, 4);
    const int w[] = {5, 6, 3};
    make_run(data, run, 2, w, 1);
    make_run(data, run2, 2, w, 2);
    infl_ctx *ctx = tu_ctx();
    infl_index_options io = ix_opts(run, INFL_PROJ_RADEMACHER, 1000);  // P = 57
    infl_index_report rep;
    cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "larger than the gradient"), "%s", infl_ctx_error(ctx));
    io.dim = 8;
    cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    io.force = 0;
    cr_assert_eq(infl_index(ctx, &io, ix, &rep), INFL_E_EXISTS);
    // an index of another run
    infl_rank_options o = infl_rank_options_default();
    o.run = run2;
    o.index = ix;
    o.query = tu_ref(1, data, "test[0:2]");
    o.method = INFL_METHOD_GRADDOT;
    infl_rank_result *res = NULL;
    cr_assert_eq(infl_rank(ctx, &o, &res), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "other weights"), "%s", infl_ctx_error(ctx));
    // queries of another width
    char other[4096];
    snprintf(other, sizeof other, "%s", tu_path("d4.h5"));
    tu_make_blobs(other, 10, 4, 3, 1);
    o.run = NULL;
    o.query = tu_ref(1, other, "test[0:2]");
    cr_assert_eq(infl_rank(ctx, &o, &res), INFL_E_SHAPE, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "features"), "%s", infl_ctx_error(ctx));
    o.query = tu_ref(1, data, "test[0:2]");
    // several indexes are an ensemble for trak only; methods the index cannot serve
    char two[9000];
    snprintf(two, sizeof two, "%s,%s", ix, ix);
    o.run = NULL;
    o.index = two;
    cr_assert_eq(infl_rank(ctx, &o, &res), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "ensemble"), "%s", infl_ctx_error(ctx));
    o.index = ix;
    o.method = INFL_METHOD_EKFAC;
    cr_assert_eq(infl_rank(ctx, &o, &res), INFL_E_ARG);
    // a truncated index: named, no crash
    size_t n;
    char *bytes = tu_read_file(ix, &n);
    const char *cut = tu_path("cut.h5");
    tu_write_file(cut, bytes, n / 2);
    free(bytes);
    o.method = INFL_METHOD_GRADDOT;
    o.index = cut;
    infl_status st = infl_rank(ctx, &o, &res);
    cr_assert(st == INFL_E_FORMAT || st == INFL_E_IO, "status %d", st);
    cr_assert(strstr(infl_ctx_error(ctx), "cut.h5"), "%s", infl_ctx_error(ctx));
    cr_assert_null(res);
    infl_ctx_free(ctx);
}

Test(index, float16_rounds_to_nearest_even) {
    const float v[] = {0.0f, 1.0f, -2.5f, 65504.0f, 1.0f / 1024, 0x1.0p-14f, 0x1.0p-24f, 0x1.8p-24f, 1.0f + 0x1.0p-11f,
                       1.0f + 0x1.8p-11f};
    const float want[] = {0.0f, 1.0f, -2.5f, 65504.0f, 1.0f / 1024, 0x1.0p-14f, 0x1.0p-24f, 0x1.0p-23f, 1.0f,
                          1.0f + 0x1.0p-10f};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        cr_assert_eq(infl_f16_to_f32(infl_f32_to_f16(v[i])), want[i], "%a -> %a, expected %a", (double)v[i],
                     (double)infl_f16_to_f32(infl_f32_to_f16(v[i])), (double)want[i]);
    cr_assert(isinf(infl_f16_to_f32(infl_f32_to_f16(65520.0f))));
    cr_assert_eq(infl_f16_to_f32(infl_f32_to_f16(0x1.0p-26f)), 0.0f);
    // every half round-trips
    for (uint32_t h = 0; h < 0x7c00u; h++) cr_assert_eq(infl_f32_to_f16(infl_f16_to_f32((uint16_t)h)), h);
}

// The row conversions (F16C's where the CPU has them) give the scalar ones' bits: every half to
// float, and floats of every exponent (ties, the subnormal range, overflow, NaN, Inf) to half, in
// a count that is no multiple of the vector width.
Test(index, float16_row_conversions_match_the_scalar_ones) {
    uint16_t *h = malloc(65537 * sizeof(uint16_t));
    float *f = malloc(65537 * sizeof(float));
    for (uint32_t i = 0; i < 65537; i++) h[i] = (uint16_t)(i * 40503u);  // a permutation, then one more
    infl_f16_to_f32_n(f, h, 65537);
    for (uint32_t i = 0; i < 65537; i++) {
        float want = infl_f16_to_f32(h[i]);
        cr_assert(isnan(want) ? isnan(f[i]) : !memcmp(&f[i], &want, sizeof want), "half %#x: %a, expected %a", h[i],
                  (double)f[i], (double)want);
    }
    uint64_t st = 7;
    for (uint32_t i = 0; i < 65537; i++) {
        uint32_t bits = (uint32_t)(tu_uniform(&st) * 4294967296.0);
        if (i % 3 == 1) bits = (bits & 0x80000000u) | ((uint32_t)(100 + i % 50) << 23) | (bits & 0x7fffffu);  // near half's range
        if (i % 3 == 2) bits = (bits & 0x80000000u) | ((uint32_t)(100 + i % 50) << 23) | (bits & 0x7fe000u) | 0x1000u;  // ties
        memcpy(&f[i], &bits, sizeof bits);
    }
    f[0] = INFINITY;
    f[1] = -NAN;
    f[2] = 65520.0f;
    f[3] = -0.0f;
    infl_f32_to_f16_n(h, f, 65537);
    for (uint32_t i = 0; i < 65537; i++) {
        uint16_t want = infl_f32_to_f16(f[i]);
        if (isnan(f[i])) cr_assert((h[i] & 0x7c00u) == 0x7c00u && (h[i] & 0x3ffu), "NaN -> %#x", h[i]);
        else cr_assert_eq(h[i], want, "%a -> %#x, expected %#x", (double)f[i], h[i], want);
    }
    free(h);
    free(f);
}

// The settings of an index written directly (store_index_begin): N rows of width k, float16, one
// checkpoint (caller frees).
static infl_index_info *bare_info(int k, int64_t N) {
    infl_index_info *in = calloc(1, sizeof *in);
    snprintf(in->run, sizeof in->run, "run.h5");
    snprintf(in->data, sizeof in->data, "data.h5:/train");
    snprintf(in->model, sizeof in->model, "test");
    snprintf(in->projection, sizeof in->projection, "rademacher");
    snprintf(in->target, sizeof in->target, "loss");
    in->k = k;
    in->N = N;
    in->float16 = 1;
    in->nck = 1;
    snprintf(in->ck[0].name, sizeof in->ck[0].name, "000100");
    in->ck[0].step = 100;
    in->ck[0].lr = 0.1;
    return in;
}

// A float16 index read back: every one of the 65536 half patterns stored (written through
// the writer's rounding, which keeps halves exactly) reads as infl_f16_to_f32 of it, bit for bit
// (the reader converts by a table; NaN payloads compared as NaN).
Test(index, float16_rows_read_back_every_half) {
    infl_ctx *ctx = tu_ctx();
    infl_index_info *in = bare_info(1024, 64);
    float *phi = malloc(65536 * sizeof(float)), *back = malloc(65536 * sizeof(float)), q[64];
    for (uint32_t h = 0; h < 65536; h++) phi[h] = infl_f16_to_f32((uint16_t)h);
    for (int i = 0; i < 64; i++) q[i] = 1.0f;
    const char *path = tu_path("halves.h5");
    infl_ixw *w;
    int64_t done;
    cr_assert_eq(store_index_begin(ctx, path, 1, in, &w, &done), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_index_write(ctx, w, 0, 0, 64, phi, q), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_index_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ixr *r;
    cr_assert_eq(store_index_open(ctx, path, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_index_read(ctx, r, 0, 0, 64, back, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    for (uint32_t h = 0; h < 65536; h++) {
        if (isnan(phi[h])) {
            cr_assert(isnan(back[h]), "half %#x: %a, expected NaN", h, (double)back[h]);
            continue;
        }
        cr_assert(!memcmp(&back[h], &phi[h], sizeof(float)), "half %#x: %a, expected %a", h, (double)back[h],
                  (double)phi[h]);
    }
    store_index_close_r(r);
    free(phi);
    free(back);
    free(in);
    infl_ctx_free(ctx);
}

// TRAK's and if's kernels over an index longer than the rows one float GEMM of the kernel covers
// (index_rank.c: chunks of index_chunk_rows, groups of chunks accumulated on the backend): row i is
// c_i e_{i mod k}, so the kernel is diagonal and known exactly; a chunk dropped or counted twice at a
// group's boundary changes every entry. Self-influence, trak: c_i² q_i / (K_jj + λ), K_jj = Σ c²
// over the rows of j; if: (q_i c_i)² / (F_jj + λ), F_jj = Σ (q c)² / N.
Test(index, kernels_over_many_chunks_are_exact) {
    infl_ctx *ctx = tu_ctx();
    int k = 512;
    int64_t N = 4194304 / k + 3;  // past one group of the kernel's GEMMs
    cr_assert_gt(N, 2 * index_chunk_rows(k, N), "several chunks");
    infl_index_info *in = bare_info(k, N);
    float *phi = calloc((size_t)N * k, sizeof(float)), *q = malloc((size_t)N * sizeof(float));
    double *K = calloc((size_t)k, sizeof(double)), *F = calloc((size_t)k, sizeof(double));
    for (int64_t i = 0; i < N; i++) {
        double c = 1.0 + (double)(i % 7) / 8;
        q[i] = (float)(0.5 + 0.25 * (double)(i % 3));
        phi[i * k + i % k] = (float)c;
        K[i % k] += c * c;
        F[i % k] += c * c * q[i] * q[i] / (double)N;
    }
    const char *path = tu_path("diag.h5");
    infl_ixw *w;
    int64_t done;
    cr_assert_eq(store_index_begin(ctx, path, 1, in, &w, &done), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_index_write(ctx, w, 0, 0, N, phi, q), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_index_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int m = 0; m < 2; m++) {
        infl_rank_options o = infl_rank_options_default();
        o.index = path;
        o.method = m ? INFL_METHOD_IF : INFL_METHOD_TRAK;
        o.damping = 0.5;
        infl_self_result r = {0};
        char data[4416];
        cr_assert_eq(index_self(ctx, &o, &r, data, sizeof data), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert_eq(r.N, N);
        for (int64_t i = 0; i < N; i++) {
            double c = 1.0 + (double)(i % 7) / 8, qi = 0.5 + 0.25 * (double)(i % 3);
            double want = m ? c * c * qi * qi / (F[i % k] + 0.5) : c * c * qi / (K[i % k] + 0.5);
            cr_assert(fabs(r.self[i] - want) <= 1e-5 * want, "%s row %ld: %g, expected %g", m ? "if" : "trak", (long)i,
                      (double)r.self[i], want);
        }
        free(r.self);
    }
    free(phi);
    free(q);
    free(K);
    free(F);
    free(in);
    infl_ctx_free(ctx);
}

// The same index built on the CUDA backend and on the CPU: rows within 1e-4 (relative).
Test(index, cuda_index_matches_cpu) {
    pair Pp = open_pair();
    char data[4096], run[4096];
    snprintf(data, sizeof data, "%s", tu_path("d.h5"));
    snprintf(run, sizeof run, "%s", tu_path("r.h5"));
    tu_make_blobs(data, 90, 30, 3, 4);
    const int w[] = {30, 20, 3};
    make_run(data, run, 2, w, 1);
    const infl_projection kinds[] = {INFL_PROJ_RADEMACHER, INFL_PROJ_GAUSSIAN, INFL_PROJ_KRON};
    for (int t = 0; t < 3; t++) {
        float *rows[2];
        int64_t n = 0;
        int k = 0;
        for (int s = 0; s < 2; s++) {
            char out[4096];
            snprintf(out, sizeof out, "%s", tu_path(s ? "ix1.h5" : "ix0.h5"));
            infl_index_options io = ix_opts(run, kinds[t], 64);
            io.kron_out = 4;
            io.kron_in = 9;
            infl_index_report rep;
            OK(Pp.c[s], infl_index(Pp.c[s], &io, out, &rep));
            infl_ixr *r;
            OK(Pp.c[s], store_index_open(Pp.c[s], out, &r));
            const infl_index_info *in = store_index_info(r);
            n = in->N * in->nck;
            k = in->k;
            rows[s] = malloc((size_t)n * k * sizeof(float));
            for (int c = 0; c < in->nck; c++)
                OK(Pp.c[s], store_index_read(Pp.c[s], r, c, 0, in->N, rows[s] + (size_t)c * in->N * k, NULL));
            store_index_close_r(r);
        }
        double e = relerr(rows[1], rows[0], (size_t)n * k);
        cr_assert(e <= 1e-4, "%s: the CUDA index differs from the CPU's by %g", infl_projection_name(kinds[t]), e);
        free(rows[0]);
        free(rows[1]);
    }
    close_pair(&Pp);
}
