/*
 * ihvp.c — inverse-Hessian-vector solvers over the HVP operator (see ihvp.h).
 *
 * All vector work goes through the backend table on backend memory; only the direct
 * solver works on the host, in float64, because it factors the assembled P × P matrix
 * with LAPACKE (a backend Cholesky is wanted for large P on the GPU: cuSOLVER potrf).
 * Every solver ends with one full HVP of its result to report the true relative
 * residual |G − (H + λI) X| / |G| of each vector, whatever it used to stop.
 */
#include <inttypes.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/rng.h"
#include "ihvp.h"

infl_ihvp_options infl_ihvp_options_default(void) {
    infl_ihvp_options o;
    memset(&o, 0, sizeof o);
    o.solver = INFL_SOLVER_CG;
    o.damping = 0.01;
    o.cg_iters = 100;
    o.cg_tol = 1e-6;
    o.lissa_depth = 1000;
    o.lissa_scale = 10.0;
    o.lissa_repeats = 1;
    o.lissa_batch = 256;
    o.seed = 0;
    o.direct_max_params = 12000;
    o.check_residual = 1;
    return o;
}

#define NOT_PD_ADVICE "use --hessian ggn or a larger --damping"

static infl_status check_options(infl_ctx *ctx, const infl_ihvp_options *o, int nv) {
    RETURN_IF(ctx, nv < 0, INFL_E_ARG, "inverse-HVP of %d vectors", nv);
    RETURN_IF(ctx, o->solver != INFL_SOLVER_DIRECT && o->solver != INFL_SOLVER_CG && o->solver != INFL_SOLVER_LISSA,
              INFL_E_ARG, "unknown solver %d", (int)o->solver);
    RETURN_IF(ctx, !isfinite(o->damping), INFL_E_ARG, "--damping: expected a finite value");
    if (o->solver == INFL_SOLVER_CG) {
        RETURN_IF(ctx, o->cg_iters < 1, INFL_E_ARG, "--cg-iters: expected at least 1, got %d", o->cg_iters);
        RETURN_IF(ctx, !(o->cg_tol >= 0) || !isfinite(o->cg_tol), INFL_E_ARG, "--cg-tol: expected a value >= 0");
    }
    if (o->solver == INFL_SOLVER_LISSA) {
        RETURN_IF(ctx, o->lissa_depth < 1, INFL_E_ARG, "--lissa-depth: expected at least 1, got %d", o->lissa_depth);
        RETURN_IF(ctx, !(o->lissa_scale > 0) || !isfinite(o->lissa_scale), INFL_E_ARG,
                  "--lissa-scale: expected a finite value > 0");
        RETURN_IF(ctx, o->lissa_repeats < 1, INFL_E_ARG, "--lissa-repeats: expected at least 1, got %d",
                  o->lissa_repeats);
        RETURN_IF(ctx, o->lissa_batch < 1, INFL_E_ARG, "--lissa-batch: expected at least 1, got %" PRId64,
                  o->lissa_batch);
    }
    return INFL_OK;
}

// ---- the true residual ----

// worst over v of |G_v − (H + λI) X_v| / |G_v|; T (nv, P) backend scratch.
static infl_status true_residual(infl_ctx *ctx, infl_hvp *op, double lambda, const float *G, const float *X, float *T,
                                 int nv, double *worst) {
    const infl_backend *be = ctx->be;
    size_t P = infl_hvp_nparams(op);
    *worst = 0;
    FORWARD_IF_ERROR(infl_hvp_apply(ctx, op, X, T, nv));
    FORWARD_IF_ERROR(be->axpby(ctx, T, X, (float)lambda, 1.0f, (size_t)nv * P));  // T = (H + λI) X
    FORWARD_IF_ERROR(be->axpby(ctx, T, G, -1.0f, 1.0f, (size_t)nv * P));          // T = (H + λI) X − G
    for (int v = 0; v < nv; v++) {
        double rr, gg;
        FORWARD_IF_ERROR(be->dot(ctx, T + (size_t)v * P, T + (size_t)v * P, P, &rr));
        FORWARD_IF_ERROR(be->dot(ctx, G + (size_t)v * P, G + (size_t)v * P, P, &gg));
        double rel = gg > 0 ? sqrt(rr / gg) : (rr > 0 ? INFINITY : 0.0);
        if (!(rel <= *worst)) *worst = rel;  // NaN propagates as the worst
    }
    return INFL_OK;
}

// ---- direct: assemble H in float64, Cholesky ----

static infl_status solve_direct(infl_ctx *ctx, infl_hvp *op, const infl_ihvp_options *o, const float *G, float *X,
                                int nv) {
    const infl_backend *be = ctx->be;
    const size_t P = infl_hvp_nparams(op);
    RETURN_IF(ctx, P > o->direct_max_params, INFL_E_UNSUPPORTED,
              "the direct solver assembles the %zu x %zu Hessian: the model has %zu parameters, more than the "
              "direct solver's limit of %zu; use --solver cg or lissa",
              P, P, P, o->direct_max_params);
    infl_status rc = INFL_OK;
    double *H = NULL, *Bh = NULL;
    float *hE = NULL, *hHV = NULL, *dE = NULL, *dHV = NULL;
    hHV = infl_malloc(ctx, ((size_t)nv > 64 ? (size_t)nv : 64) * P * sizeof(float), "Hessian columns");
    Bh = infl_malloc(ctx, (size_t)nv * P * sizeof(double), "right-hand sides (float64)");
    GOTO_NOMEM_IF(!hHV || !Bh);
    const double *Lf = infl_hvp_factor(op, o->damping);
    if (!Lf) {
        enum { BLK = 64 };  // unit vectors per HVP call
        const size_t blk = P < BLK ? P : BLK;
        H = infl_malloc(ctx, P * P * sizeof(double), "the Hessian (float64)");
        hE = infl_calloc(ctx, blk * P, sizeof(float), "unit vectors");
        GOTO_NOMEM_IF(!H || !hE);
        CHECK(infl_be_alloc_f(ctx, &dE, blk * P, "unit vectors"));
        CHECK(infl_be_alloc_f(ctx, &dHV, blk * P, "Hessian columns"));

        // Row j of H = (H e_j)ᵀ: blocks of unit vectors through the operator
        for (size_t j0 = 0; j0 < P; j0 += blk) {
            size_t nb = P - j0 < blk ? P - j0 : blk;
            for (size_t k = 0; k < nb; k++) hE[k * P + j0 + k] = 1.0f;
            CHECK(be->upload(ctx, dE, hE, nb * P * sizeof(float)));
            for (size_t k = 0; k < nb; k++) hE[k * P + j0 + k] = 0.0f;
            CHECK(infl_hvp_apply(ctx, op, dE, dHV, (int)nb));
            CHECK(be->download(ctx, hHV, dHV, nb * P * sizeof(float)));
            for (size_t k = 0; k < nb; k++)
                for (size_t i = 0; i < P; i++) H[(j0 + k) * P + i] = hHV[k * P + i];
            infl_progress(ctx, "hessian", j0 + nb, P, NULL);
        }
        // symmetrise (H + Hᵀ)/2 (float32 HVPs are symmetric only to rounding), add λ
        for (size_t i = 0; i < P; i++) {
            for (size_t j = 0; j < i; j++) {
                double m = 0.5 * (H[i * P + j] + H[j * P + i]);
                H[i * P + j] = H[j * P + i] = m;
            }
            H[i * P + i] += o->damping;
        }
        for (size_t i = 0; i < P * P; i++)
            GOTO_IF(ctx, !isfinite(H[i]), INFL_E_NUMERIC, "the Hessian has a non-finite entry (row %zu, column %zu)", i / P,
                    i % P);
        // H is symmetric: its row-major and column-major layouts are the same matrix
        int serial = infl_blas_serial_begin(ctx);
        lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)P, H, (lapack_int)P);
        infl_blas_serial_end(ctx, serial);
        GOTO_IF(ctx, info > 0, INFL_E_NUMERIC,
                "the Hessian plus damping (λ = %g) is not positive definite (Cholesky failed at column %d of %zu); "
                NOT_PD_ADVICE, o->damping, (int)info, P);
        GOTO_IF(ctx, info < 0, INFL_E_INTERNAL, "dpotrf: argument %d is invalid", (int)-info);
        infl_hvp_set_factor(op, o->damping, H);  // the operator owns it now
        Lf = H;
        H = NULL;
    }
    // G (nv, P) row-major is P × nv column-major: one right-hand side per column
    CHECK(be->download(ctx, hHV, G, (size_t)nv * P * sizeof(float)));
    for (size_t i = 0; i < (size_t)nv * P; i++) Bh[i] = hHV[i];
    int serial = infl_blas_serial_begin(ctx);
    lapack_int info = LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'L', (lapack_int)P, nv, Lf, (lapack_int)P, Bh, (lapack_int)P);
    infl_blas_serial_end(ctx, serial);
    GOTO_IF(ctx, info != 0, INFL_E_INTERNAL, "dpotrs failed (info %d)", (int)info);
    for (size_t i = 0; i < (size_t)nv * P; i++) {
        GOTO_IF(ctx, !isfinite(Bh[i]) || fabs(Bh[i]) > 3.0e38, INFL_E_NUMERIC,
                "the direct solve gave a value out of float range for vector %zu; the Hessian plus damping "
                "(λ = %g) is too close to singular: " NOT_PD_ADVICE,
                i / P, o->damping);
        hHV[i] = (float)Bh[i];
    }
    CHECK(be->upload(ctx, X, hHV, (size_t)nv * P * sizeof(float)));
done:
    free(H);
    free(Bh);
    free(hE);
    free(hHV);
    infl_be_free(ctx, dE);
    infl_be_free(ctx, dHV);
    return rc;
}

// ---- cg: nv conjugate-gradient runs advanced together ----

static infl_status solve_cg(infl_ctx *ctx, infl_hvp *op, const infl_ihvp_options *o, const float *G, float *X, int nv,
                            int *iters_out) {
    const infl_backend *be = ctx->be;
    const size_t P = infl_hvp_nparams(op), total = (size_t)nv * P;
    const float lambda = (float)o->damping;
    infl_status rc = INFL_OK;
    float *R = NULL, *Dd = NULL, *Dg = NULL, *HD = NULL;
    double *gnorm = infl_malloc(ctx, (size_t)nv * sizeof(double), "CG norms");
    double *rr = infl_malloc(ctx, (size_t)nv * sizeof(double), "CG residuals");
    int *act = infl_malloc(ctx, (size_t)nv * sizeof(int), "CG active set");
    GOTO_NOMEM_IF(!gnorm || !rr || !act);
    CHECK(infl_be_alloc_f(ctx, &R, total, "CG residuals"));
    CHECK(infl_be_alloc_f(ctx, &Dd, total, "CG directions"));
    CHECK(infl_be_alloc_f(ctx, &Dg, total, "CG gathered directions"));
    CHECK(infl_be_alloc_f(ctx, &HD, total, "CG products"));

    // x = 0, r = g, d = g
    CHECK(be->fill(ctx, X, 0.0f, total));
    CHECK(be->copy(ctx, R, G, total * sizeof(float)));
    CHECK(be->copy(ctx, Dd, G, total * sizeof(float)));
    int na = 0;
    for (int v = 0; v < nv; v++) {
        CHECK(be->dot(ctx, G + (size_t)v * P, G + (size_t)v * P, P, &rr[v]));
        GOTO_IF(ctx, !isfinite(rr[v]), INFL_E_NUMERIC, "vector %d of the right-hand side is not finite", v);
        gnorm[v] = sqrt(rr[v]);
        if (gnorm[v] > 0) act[na++] = v;
    }
    int it = 0;
    while (na > 0 && it < o->cg_iters) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        // the active directions, contiguous: (na, P)
        const float *Din = Dd;
        if (na < nv) {
            for (int k = 0; k < na; k++)
                CHECK(be->copy(ctx, Dg + (size_t)k * P, Dd + (size_t)act[k] * P, P * sizeof(float)));
            Din = Dg;
        }
        CHECK(infl_hvp_apply(ctx, op, Din, HD, na));
        CHECK(be->axpby(ctx, HD, Din, lambda, 1.0f, (size_t)na * P));  // (H + λI) d
        it++;
        double worst = 0;
        int keep = 0;
        for (int k = 0; k < na; k++) {
            int v = act[k];
            const float *d = Din + (size_t)k * P, *hd = HD + (size_t)k * P;
            float *x = X + (size_t)v * P, *r = R + (size_t)v * P, *dv = Dd + (size_t)v * P;
            double dhd, rr2;
            CHECK(be->dot(ctx, d, hd, P, &dhd));
            GOTO_IF(ctx, !(dhd > 0), INFL_E_NUMERIC,
                    "the Hessian plus damping (λ = %g) is not positive definite: conjugate gradient found a "
                    "direction d with dᵀ(H + λI)d = %g <= 0 (vector %d, iteration %d); " NOT_PD_ADVICE,
                    o->damping, dhd, v, it);
            double alpha = rr[v] / dhd;
            CHECK(be->axpby(ctx, x, d, (float)alpha, 1.0f, P));    // x += α d
            CHECK(be->axpby(ctx, r, hd, (float)-alpha, 1.0f, P));  // r −= α (H + λI) d
            CHECK(be->dot(ctx, r, r, P, &rr2));
            GOTO_IF(ctx, !isfinite(rr2), INFL_E_NUMERIC, "conjugate gradient produced non-finite values (vector %d)",
                    v);
            CHECK(be->axpby(ctx, dv, r, 1.0f, (float)(rr2 / rr[v]), P));  // d = r + β d
            rr[v] = rr2;
            double rel = sqrt(rr2) / gnorm[v];
            worst = rel > worst ? rel : worst;
            if (rel > o->cg_tol) act[keep++] = v;
        }
        na = keep;
        char info[64];
        snprintf(info, sizeof info, "residual %.2e", worst);
        infl_progress(ctx, "cg", (uint64_t)it, (uint64_t)o->cg_iters, info);
    }
    *iters_out = it;
done:
    free(gnorm);
    free(rr);
    free(act);
    infl_be_free(ctx, R);
    infl_be_free(ctx, Dd);
    infl_be_free(ctx, Dg);
    infl_be_free(ctx, HD);
    return rc;
}

// ---- lissa: x_{j+1} = g + (I − (H_B + λI)/s) x_j, result x/s ----

// The minibatch of step t: `batch` consecutive rows from a random start, wrapping
// around the end, so that every row is in a step's batch with the same probability
// batch/n and E[H_B] = H (a plain contiguous block would under-weight the rows near
// both ends). Consecutive rows keep the reads and the cache slices contiguous; a data
// file sorted by label therefore gives correlated minibatches (still unbiased).
static infl_status lissa_hvp(infl_ctx *ctx, infl_hvp *op, const infl_ihvp_options *o, int64_t batch, uint64_t t,
                             const float *x, float *hb, float *hb2, int nv) {
    int64_t n = infl_hvp_rows(op);
    if (batch >= n) return infl_hvp_apply(ctx, op, x, hb, nv);
    int64_t start = (int64_t)infl_rng_below(o->seed, INFL_RNG_SUBSET, t, 0, (uint64_t)n);
    int64_t n1 = n - start < batch ? n - start : batch, n2 = batch - n1;
    FORWARD_IF_ERROR(infl_hvp_apply_rows(ctx, op, start, n1, x, hb, nv));
    if (n2 > 0) {
        // the wrapped part: the row-weighted mean of the two (each holds wd·x once)
        FORWARD_IF_ERROR(infl_hvp_apply_rows(ctx, op, 0, n2, x, hb2, nv));
        size_t total = (size_t)nv * infl_hvp_nparams(op);
        FORWARD_IF_ERROR(ctx->be->axpby(ctx, hb, hb2, (float)((double)n2 / batch), (float)((double)n1 / batch), total));
    }
    return INFL_OK;
}

static infl_status solve_lissa(infl_ctx *ctx, infl_hvp *op, const infl_ihvp_options *o, const float *G, float *X,
                               int nv) {
    const infl_backend *be = ctx->be;
    const size_t P = infl_hvp_nparams(op), total = (size_t)nv * P;
    const double s = o->lissa_scale, lambda = o->damping;
    const int64_t batch = o->lissa_batch < infl_hvp_rows(op) ? o->lissa_batch : infl_hvp_rows(op);
    const uint64_t steps = (uint64_t)o->lissa_depth * (uint64_t)o->lissa_repeats;
    infl_status rc = INFL_OK;
    float *x = NULL, *hb = NULL, *hb2 = NULL;
    CHECK(infl_be_alloc_f(ctx, &x, total, "LiSSA iterate"));
    CHECK(infl_be_alloc_f(ctx, &hb, total, "LiSSA products"));
    if (batch < infl_hvp_rows(op)) CHECK(infl_be_alloc_f(ctx, &hb2, total, "LiSSA products"));
    double gg;
    CHECK(be->dot(ctx, G, G, total, &gg));
    GOTO_IF(ctx, !isfinite(gg), INFL_E_NUMERIC, "the right-hand side is not finite");
    CHECK(be->fill(ctx, X, 0.0f, total));
    for (int rep = 0; rep < o->lissa_repeats; rep++) {
        CHECK(be->copy(ctx, x, G, total * sizeof(float)));  // x_0 = g
        for (int j = 0; j < o->lissa_depth; j++) {
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
            uint64_t t = (uint64_t)rep * (uint64_t)o->lissa_depth + (uint64_t)j;
            CHECK(lissa_hvp(ctx, op, o, batch, t, x, hb, hb2, nv));
            // x = g + (1 − λ/s) x − (H_B x)/s
            CHECK(be->axpby(ctx, x, hb, (float)(-1.0 / s), (float)(1.0 - lambda / s), total));
            CHECK(be->axpby(ctx, x, G, 1.0f, 1.0f, total));
            if ((j + 1) % 16 == 0 || j + 1 == o->lissa_depth) {
                // With 0 <= eig(H_B + λI) <= s the iterate obeys |x_j| <= (j+1)|g|;
                // non-finite values or growth far beyond that is divergence.
                double xx;
                CHECK(be->dot(ctx, x, x, total, &xx));
                double bound = 100.0 * (j + 2) * sqrt(gg);
                GOTO_IF(ctx, !isfinite(xx) || sqrt(xx) > bound, INFL_E_NUMERIC,
                        "LiSSA diverged at step %d of repeat %d (|x| = %.3g): the scale (%g) must exceed the largest "
                        "eigenvalue of the Hessian plus damping; use a larger --lissa-scale (or, if the Hessian plus "
                        "damping is not positive definite, --hessian ggn or a larger --damping)",
                        j + 1, rep + 1, sqrt(xx), s);
                infl_progress(ctx, "lissa", t + 1, steps, NULL);
            }
        }
        CHECK(be->axpby(ctx, X, x, (float)(1.0 / (s * o->lissa_repeats)), 1.0f, total));  // X += x / (s·repeats)
    }
done:
    infl_be_free(ctx, x);
    infl_be_free(ctx, hb);
    infl_be_free(ctx, hb2);
    return rc;
}

// ---- entry ----

infl_status infl_ihvp_solve(infl_ctx *ctx, infl_hvp *op, const infl_ihvp_options *o, const float *G, float *X, int nv,
                            infl_ihvp_report *rep) {
    infl_ihvp_options def = infl_ihvp_options_default();
    if (!o) o = &def;
    FORWARD_IF_ERROR(check_options(ctx, o, nv));
    double t0 = infl_now();
    infl_ihvp_report r = {0, 0.0, 0.0};
    if (rep) *rep = r;
    if (nv == 0) return INFL_OK;
    if (o->solver == INFL_SOLVER_DIRECT) {
        FORWARD_IF_ERROR(solve_direct(ctx, op, o, G, X, nv));
    } else if (o->solver == INFL_SOLVER_CG) {
        FORWARD_IF_ERROR(solve_cg(ctx, op, o, G, X, nv, &r.iters));
    } else {
        FORWARD_IF_ERROR(solve_lissa(ctx, op, o, G, X, nv));
        r.iters = o->lissa_depth * o->lissa_repeats;
    }
    if (o->check_residual) {
        float *T = NULL;
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &T, (size_t)nv * infl_hvp_nparams(op), "residual check"));
        infl_status rc = true_residual(ctx, op, o->damping, G, X, T, nv, &r.max_rel_residual);
        infl_be_free(ctx, T);
        FORWARD_IF_ERROR(rc);
    } else {
        r.max_rel_residual = NAN;
    }
    r.seconds = infl_now() - t0;
    if (rep) *rep = r;
    return INFL_OK;
}
