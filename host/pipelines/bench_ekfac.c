/*
 * bench_ekfac.c — the EK-FAC phases of `infl bench` (bench.c runs them from its phase
 * table): the covariance pass, the eigendecomposition and the eigenvalue correction
 * (one pass of infl_fit each, timed from its report), the query preconditioning, the
 * rank-r query factors and the rank-r scoring, each with the GEMMs it calls as its
 * ceiling.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench_internal.h"
#include "estimators/ekfac.h"

// ---- phases: EK-FAC ----
//
// The fit phases run infl_fit over the whole train split streamed from HDF5 and time
// one pass from its report (f->timed): the covariances and the eigendecomposition
// from a kfac fit (one pass), the eigenvalue correction from an ekfac fit. The
// preconditioning and scoring phases use identity factors of the model's shapes: the
// arithmetic does not depend on the values.

static infl_status fit_run(infl_ctx *ctx, bench_fix *f, infl_strategy st, int which) {
    infl_fit_options fo = infl_fit_options_default();
    fo.run = f->run;
    fo.data = f->train_ref;
    fo.strategy = st;
    fo.force = 1;
    infl_fit_report r;
    FORWARD_IF_ERROR(infl_fit(ctx, &fo, f->factors, &r));
    f->timed = which == 0 ? r.seconds_cov : which == 1 ? r.seconds_eig : r.seconds_lambda;
    return INFL_OK;
}

static void fit_what(const bench_fix *f, bench_work *w, const char *pass) {
    char n[32];
    snprintf(w->what, sizeof w->what, "%s, %s rows from HDF5", pass, bench_group_digits(n, sizeof n, f->N));
    w->examples = (double)f->N;
    w->io_bytes = (double)f->N * (f->D + 1) * 4.0;
    w->bytes = w->io_bytes;
}

infl_status bench_ekcov_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    int b = f->N < f->B ? (int)f->N : f->B;
    double blocks = (double)f->N / b;
    bench_fb_work(f, w, (double)f->N, b);
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        bench_add_gemm(w, dout, dout, b, INFL_T, INFL_N, blocks);  // Δᵀ Δ
        bench_add_gemm(w, din, din, b, INFL_T, INFL_N, blocks);    // Aᵀ A
        w->flops += (double)f->N * (2.0 * ((double)din * din + (double)dout * dout) + din);
    }
    fit_what(f, w, "A and S");
    return INFL_OK;
}

infl_status bench_ekcov_run(infl_ctx *ctx, bench_fix *f) { return fit_run(ctx, f, INFL_STRATEGY_KFAC, 0); }

infl_status bench_ekeig_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    // dsyevd with eigenvectors: ~9 n³ FLOPs (tridiagonal reduction 4/3 n³, divide and
    // conquer, back-transformation); its ceiling: sgemm at n³ for the same FLOPs
    for (int l = 0; l < f->L; l++) {
        int n[2] = {infl_linear_ni(&f->m->layer[l]), f->m->layer[l].d_out};
        for (int i = 0; i < 2; i++) {
            bench_add_gemm(w, n[i], n[i], n[i], INFL_N, INFL_N, 4.5);
            w->flops += 9.0 * (double)n[i] * n[i] * n[i];
        }
    }
    snprintf(w->what, sizeof w->what, "float64, %d pairs of symmetric matrices", f->L);
    w->examples = 2.0 * f->L;
    w->ceiling_name = "sgemm at n^3 (dsyevd ~ 9 n^3 flops, float64)";
    return INFL_OK;
}

infl_status bench_ekeig_run(infl_ctx *ctx, bench_fix *f) { return fit_run(ctx, f, INFL_STRATEGY_KFAC, 1); }

infl_status bench_eklam_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    int b = f->N < f->B ? (int)f->N : f->B;
    double blocks = (double)f->N / b;
    bench_fb_work(f, w, (double)f->N, b);
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, ni = infl_linear_ni(&f->m->layer[l]), dout = f->m->layer[l].d_out;
        bench_add_gemm(w, b, dout, dout, INFL_N, INFL_T, blocks);  // Δ Q_S
        bench_add_gemm(w, b, ni, din, INFL_N, INFL_T, blocks);     // Ã Q_A
        bench_add_gemm(w, dout, ni, b, INFL_T, INFL_N, blocks);    // (Δ Q_S)^2ᵀ (Ã Q_A)^2
        w->flops += (double)f->N * (2.0 * ((double)dout * dout + (double)din * ni + (double)dout * ni) + dout + ni);
    }
    fit_what(f, w, "eigenvalue correction");
    return INFL_OK;
}

infl_status bench_eklam_run(infl_ctx *ctx, bench_fix *f) { return fit_run(ctx, f, INFL_STRATEGY_EKFAC, 2); }

// Identity factors of the model's shapes and their preconditioner; the query gradients.
static infl_status ekpre_setup_common(infl_ctx *ctx, bench_fix *f) {
    infl_fit_options fo = infl_fit_options_default();
    fo.run = f->run;
    fo.data = f->train_ref;
    fo.strategy = INFL_STRATEGY_IDENTITY;
    fo.force = 1;
    FORWARD_IF_ERROR(infl_fit(ctx, &fo, f->factors, NULL));
    FORWARD_IF_ERROR(store_factors_read(ctx, f->factors, &f->fac));
    snprintf(f->fac->strategy, sizeof f->fac->strategy, "ekfac");  // apply them as EK-FAC
    FORWARD_IF_ERROR(ekfac_pre_create(ctx, f->fac, f->factors, f->m, INFL_METHOD_EKFAC, 0.1, 0, &f->pre));
    return bench_query_grads(ctx, f);
}

void bench_ekpre_teardown(infl_ctx *ctx, bench_fix *f) {
    ekfac_pre_free(ctx, f->pre);
    infl_factors_free(f->fac);
    f->pre = NULL;
    f->fac = NULL;
    for (int l = 0; l < INFL_MAX_LINEAR; l++) {
        infl_be_free(ctx, f->LF[l]);
        infl_be_free(ctx, f->RF[l]);
        f->LF[l] = f->RF[l] = NULL;
    }
    infl_be_free(ctx, f->X1);
    infl_be_free(ctx, f->X2);
    f->X1 = f->X2 = NULL;
    bench_ifprep_teardown(ctx, f);
    bench_ifscore_teardown(ctx, f);
}

infl_status bench_ekprep_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    FORWARD_IF_ERROR(ekpre_setup_common(ctx, f));
    // ekfac_precondition: chunks of mc queries; per layer W̃ Q_A and back (chunk GEMMs),
    // Q_Sᵀ · and Q_S · per query
    size_t blk = infl_model_max_layer_size(f->m);
    int mc = (int)((16u << 20) / blk);
    mc = mc < 1 ? 1 : mc > f->M ? f->M : mc;
    for (int q0 = 0; q0 < f->M; q0 += mc) {
        int m = q0 + mc <= f->M ? mc : f->M - q0;
        for (int l = 0; l < f->L; l++) {
            int ni = infl_linear_ni(&f->m->layer[l]), dout = f->m->layer[l].d_out;
            bench_add_gemm(w, m * dout, ni, ni, INFL_N, INFL_T, 1);
            bench_add_gemm(w, m * dout, ni, ni, INFL_N, INFL_N, 1);
            bench_add_gemm(w, dout, ni, dout, INFL_N, INFL_N, m);
            bench_add_gemm(w, dout, ni, dout, INFL_T, INFL_N, m);
            w->flops += (double)m * (4.0 * dout * (double)ni * ni + 4.0 * (double)dout * dout * ni);
        }
    }
    char m[32];
    snprintf(w->what, sizeof w->what, "%s queries", bench_group_digits(m, sizeof m, f->M));
    w->examples = f->M;
    return INFL_OK;
}

infl_status bench_ekprep_run(infl_ctx *ctx, bench_fix *f) {
    FORWARD_IF_ERROR(ekfac_precondition(ctx, f->Xs, f->pre, f->m, f->G, f->M));
    return bench_sync(ctx, f);
}

static int query_rank(const bench_fix *f) { return f->o->query_rank > 0 ? f->o->query_rank : 32; }

// ekfac_lowrank's work: per query and layer, the smaller Gram matrix, its float64
// eigendecomposition (~9 g³) and the other factor.
static void lowrank_work(const bench_fix *f, bench_work *w) {
    for (int l = 0; l < f->L; l++) {
        int ni = infl_linear_ni(&f->m->layer[l]), dout = f->m->layer[l].d_out;
        int g = dout <= ni ? dout : ni, o = dout <= ni ? ni : dout;
        int k = query_rank(f) < g ? query_rank(f) : g;
        bench_add_gemm(w, g, g, o, dout <= ni ? INFL_N : INFL_T, dout <= ni ? INFL_T : INFL_N, f->M);
        bench_add_gemm(w, g, g, g, INFL_N, INFL_N, 4.5 * f->M);
        bench_add_gemm(w, o, k, g, dout <= ni ? INFL_T : INFL_N, INFL_N, f->M);
        w->flops += f->M * (2.0 * g * (double)g * o + 9.0 * (double)g * g * g + 2.0 * o * (double)k * g);
    }
}

infl_status bench_eklow_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    FORWARD_IF_ERROR(ekpre_setup_common(ctx, f));
    FORWARD_IF_ERROR(ekfac_precondition(ctx, f->Xs, f->pre, f->m, f->G, f->M));
    lowrank_work(f, w);
    char m[32];
    snprintf(w->what, sizeof w->what, "%s queries, rank %d", bench_group_digits(m, sizeof m, f->M), query_rank(f));
    w->examples = f->M;
    w->ceiling_name = "sgemm at its shapes (eigendecompositions: ~9 g^3 at g^3)";
    return INFL_OK;
}

infl_status bench_eklow_run(infl_ctx *ctx, bench_fix *f) {
    for (int l = 0; l < f->L; l++) {
        infl_be_free(ctx, f->LF[l]);
        infl_be_free(ctx, f->RF[l]);
        f->LF[l] = f->RF[l] = NULL;
    }
    double energy;
    FORWARD_IF_ERROR(ekfac_lowrank(ctx, f->LF, f->RF, f->rl, &energy, f->m, f->Xs, f->M, query_rank(f)));
    return bench_sync(ctx, f);
}

infl_status bench_ekscore_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    FORWARD_IF_ERROR(bench_ifscore_setup(ctx, f, w));
    snprintf(w->what + strlen(w->what), sizeof w->what - strlen(w->what), ", full rank");
    return INFL_OK;
}

infl_status bench_ekscorer_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    FORWARD_IF_ERROR(ekpre_setup_common(ctx, f));
    FORWARD_IF_ERROR(ekfac_precondition(ctx, f->Xs, f->pre, f->m, f->G, f->M));
    double energy;
    FORWARD_IF_ERROR(ekfac_lowrank(ctx, f->LF, f->RF, f->rl, &energy, f->m, f->Xs, f->M, query_rank(f)));
    int maxr = 0;
    for (int l = 0; l < f->L; l++) maxr = f->rl[l] > maxr ? f->rl[l] : maxr;
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->X1, (size_t)f->B * f->M * maxr, "a low-rank score block"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->X2, (size_t)f->B * f->M * maxr, "a low-rank score block"));
    double blocks = (double)f->R / f->b;
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out, ld = f->M * f->rl[l];
        bench_add_gemm(w, f->b, ld, dout, INFL_N, INFL_N, blocks);  // Δ LF
        bench_add_gemm(w, f->b, ld, din, INFL_N, INFL_N, blocks);   // A RF
        w->flops += blocks * score_lowrank_flops(&f->m->layer[l], f->M, f->b, f->rl[l]);
    }
    char r[32], m[32];
    snprintf(w->what, sizeof w->what, "%s rows x %s queries, rank %d", bench_group_digits(r, sizeof r, f->R),
             bench_group_digits(m, sizeof m, f->M), query_rank(f));
    w->examples = (double)f->R;
    return INFL_OK;
}

// rank's --query-rank scoring: X1 = Δ LF, X2 = Ã RF, row dots of r-wide groups.
infl_status bench_ekscorer_run(infl_ctx *ctx, bench_fix *f) {
    const infl_backend *be = ctx->be;
    const int M = f->M;
    for (int64_t r0 = 0; r0 < f->R; r0 += f->B) {
        int b = (int)(r0 + f->B <= f->R ? f->B : f->R - r0);
        FORWARD_IF_ERROR(be->fill(ctx, f->Sd, 0.0f, (size_t)M * b));
        for (int l = 0; l < f->L; l++)
            FORWARD_IF_ERROR(score_lowrank_layer(ctx, f->Sd, f->X1, f->X2, &f->m->layer[l], f->LF[l], f->RF[l], f->rl[l],
                                                 f->tD[l], f->tA[l], M, b));
    }
    return bench_sync(ctx, f);
}

