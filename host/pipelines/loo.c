/*
 * loo.c — `infl loo`: the check the field uses for influence functions. On a convex
 * model (no hidden layer, weight decay > 0) trained to its optimum w*, remove one
 * training example z at a time, retrain from w* to the optimum w_{-z} in float64
 * (Newton-CG, convex.c), and compare the actual change of each query's loss,
 * L_q(w_{-z}) − L_q(w*), with the prediction score(q, z)/N of influence functions
 * (positive score = proponent: removing it raises the query loss).
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "backend.h"
#include "core/comm.h"
#include "core/rng.h"
#include "models/train.h"
#include "attrib.h"
#include "estimators/stats.h"

infl_loo_options infl_loo_options_default(void) {
    infl_loo_options o = {.remove_top = 20, .remove_bottom = 20, .remove_random = 20, .tol = 1e-10};
    return o;
}

void infl_loo_result_free(infl_loo_result *r) {
    if (!r) return;
    free(r->query);
    free(r->removed);
    free(r->predicted);
    free(r->actual);
    free(r);
}

// Loss of one example under a one-layer model w (float64, spec.h layout).
static double glm_loss(const infl_mlp_spec *s, const double *w, const float *x, int32_t y, const float *yf) {
    int D = s->widths[0], K = s->widths[1];
    double z[4096] = {0};
    for (int k = 0; k < K; k++) {
        double t = w[(size_t)K * D + k];
        for (int j = 0; j < D; j++) t += w[(size_t)k * D + j] * x[j];
        z[k] = t;
    }
    switch (s->loss) {
    case INFL_LOSS_SOFTMAX_CE: {
        double m = z[0], sum = 0;
        for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
        for (int k = 0; k < K; k++) sum += exp(z[k] - m);
        return m + log(sum) - z[y];
    }
    case INFL_LOSS_SIGMOID_CE: return (z[0] > 0 ? z[0] : 0) + log1p(exp(-fabs(z[0]))) - y * z[0];
    case INFL_LOSS_MSE: {
        double l = 0;
        for (int k = 0; k < K; k++) l += 0.5 * (z[k] - yf[k]) * (z[k] - yf[k]);
        return l;
    }
    }
    return NAN;
}

// Spearman correlation of x and y (n); NaN when out of memory or constant.
static double spearman(const double *x, const double *y, int n) {
    double *rx = malloc((size_t)n * sizeof(double)), *ry = malloc((size_t)n * sizeof(double));
    stats_pair *tmp = malloc((size_t)n * sizeof(stats_pair));
    double s = rx && ry && tmp ? stats_spearman(x, y, n, rx, ry, tmp) : NAN;
    free(rx);
    free(ry);
    free(tmp);
    return s;
}

infl_status infl_loo(infl_ctx *ctx, const infl_rank_options *opts, const infl_loo_options *lo, infl_loo_result **out) {
    *out = NULL;
    infl_rank_options o = *opts;
    o.method = INFL_METHOD_IF;
    o.output = NULL;
    o.save_scores = 0;
    RETURN_IF(ctx, infl_comm_size(ctx) > 1, INFL_E_UNSUPPORTED,
              "infl_loo runs in one process (it retrains); %d processes share this context", infl_comm_size(ctx));
    RETURN_IF(ctx, lo->remove_top < 0 || lo->remove_bottom < 0 || lo->remove_random < 0, INFL_E_ARG,
              "the numbers of examples to remove must be >= 0");
    RETURN_IF(ctx, lo->remove_top + lo->remove_bottom + lo->remove_random < 2, INFL_E_ARG,
              "remove at least 2 examples per query to correlate anything");
    double t0 = infl_now();
    // The model must be convex: check before the expensive parts.
    infl_run *run = NULL;
    FORWARD_IF_ERROR(store_run_open(ctx, o.run, &run));
    const infl_model_spec *ms = store_run_spec(run);
    infl_status rc = ms->kind == INFL_MODEL_MLP
                         ? INFL_OK
                         : infl_seterr(ctx, INFL_E_ARG,
                                       "%s: leave-one-out retraining needs a convex model (an mlp without hidden "
                                       "layer); this is a %s run",
                                       o.run, infl_model_kind_name(ms->kind));
    infl_mlp_spec spec = ms->mlp;
    int ci = 0;
    if (rc == INFL_OK) rc = store_run_find(ctx, run, o.checkpoint, &ci);
    size_t P = infl_spec_nparams(ms);
    float *wf = malloc(P * sizeof(float));
    if (rc == INFL_OK && !wf) rc = infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
    if (rc == INFL_OK) rc = store_run_load(ctx, run, ci, wf);
    store_run_close(run);
    if (rc == INFL_OK && spec.L != 1)
        rc = infl_seterr(ctx, INFL_E_ARG,
                         "%s: leave-one-out retraining needs a convex model (no hidden layer) trained to its "
                         "optimum; this one has %d layers",
                         o.run, spec.L);
    if (rc == INFL_OK && spec.widths[1] > 4096)
        rc = infl_seterr(ctx, INFL_E_ARG, "%s: more than 4096 outputs", o.run);
    if (rc == INFL_OK && !(spec.wd > 0))
        rc = infl_seterr(ctx, INFL_E_ARG, "%s: leave-one-out needs weight decay > 0 (a unique optimum)", o.run);
    if (rc < 0) {
        free(wf);
        return rc;
    }

    infl_rank_result *rr = NULL;
    infl_loo_result *res = NULL;
    attrib_full fs = {0};
    double *w0 = NULL, *w = NULL, *H = NULL;
    infl_split *train = NULL, *query = NULL;
    float *qx = NULL, *qyf = NULL;
    int32_t *qy = NULL;
    int64_t *chosen = NULL;

    // Influence scores of every training example for every query (M, N).
    infl_dataref ref;
    char train_copy[4096];
    {
        attrib a;
        CHECK(attrib_open(ctx, &a, &o, 1));
        fs.N = a.N;
        snprintf(train_copy, sizeof train_copy, "%s", o.train && *o.train ? o.train : store_run_data(a.run));
        int64_t need = (int64_t)a.M * a.N;
        attrib_close(&a);
        fs.S = infl_malloc(ctx, (size_t)need * sizeof(float), "the full score matrix");
        GOTO_NOMEM_IF(!fs.S);
    }
    o.top = 1;
    CHECK(attrib_rank(ctx, &o, attrib_keep_full, &fs, &rr));
    int M = rr->M;
    int64_t N = rr->N;

    // The optimum w* in float64, from the stored weights.
    CHECK(infl_dataref_parse(ctx, train_copy, &ref));
    CHECK(store_split_open(ctx, &ref, &train));
    w0 = infl_malloc(ctx, P * sizeof(double), "the optimum");
    w = infl_malloc(ctx, P * sizeof(double), "retrained weights");
    GOTO_NOMEM_IF(!w0 || !w);
    for (size_t i = 0; i < P; i++) w0[i] = wf[i];
    infl_convex_options co = {.tol = lo->tol, .max_iters = 100, .shard_rows = o.shard_rows};
    infl_convex_report cr;
    CHECK(infl_convex_fit(ctx, train, &spec, NULL, 0, &co, w0, &cr));
    // Retraining after one removal is a small change: step with the factorised Hessian
    // at w* (a chord method), a few gradient passes per retraining instead of Newton-CG.
    if (P <= 12000) {
        H = infl_malloc(ctx, P * P * sizeof(double), "the Hessian at the optimum");
        GOTO_NOMEM_IF(!H);
        CHECK(infl_convex_hessian(ctx, train, &spec, &co, w0, H));
        int serial = infl_blas_serial_begin(ctx);
        lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)P, H, (lapack_int)P);
        infl_blas_serial_end(ctx, serial);
        GOTO_IF(ctx, info != 0, INFL_E_NUMERIC, "the Hessian at the optimum is not positive definite (dpotrf %d)",
                (int)info);
        co.chol = H;
        co.max_iters = 1000;
    }

    // The queries, for their losses.
    CHECK(infl_dataref_parse(ctx, o.query, &ref));
    CHECK(store_split_open(ctx, &ref, &query));
    const infl_split_info *qi = store_split_info(query);
    int64_t kt = qi->y_kind == INFL_Y_REAL ? qi->k : 0;
    qx = infl_malloc(ctx, (size_t)M * qi->d * sizeof(float), "the queries");
    qy = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query labels");
    qyf = infl_malloc(ctx, (size_t)M * (kt ? kt : 1) * sizeof(float), "query targets");
    GOTO_NOMEM_IF(!qx || !qy || !qyf);
    CHECK(store_split_read(ctx, query, 0, M, qx, kt ? NULL : qy, kt ? qyf : NULL));

    int per = lo->remove_top + lo->remove_bottom + lo->remove_random;
    GOTO_IF(ctx, per > N, INFL_E_ARG, "removing %d examples per query but the training split has %" PRId64, per, N);
    res = calloc(1, sizeof *res);
    GOTO_IF(ctx, !res, INFL_E_NOMEM, "out of memory");
    size_t cap = (size_t)M * per;
    res->query = calloc(cap, sizeof(int32_t));
    res->removed = calloc(cap, sizeof(int64_t));
    res->predicted = calloc(cap, sizeof(double));
    res->actual = calloc(cap, sizeof(double));
    chosen = calloc((size_t)per, sizeof(int64_t));
    GOTO_IF(ctx, !res->query || !res->removed || !res->predicted || !res->actual || !chosen, INFL_E_NOMEM,
            "out of memory");
    int64_t begin = store_split_info(train)->begin;
    res->query_begin = qi->begin;
    for (int q = 0; q < M; q++) {
        const float *S = fs.S + (size_t)q * N;
        int nc = 0;
        // top and bottom by score, then a random sample of the rest
        for (int side = 0; side < 2; side++) {
            int want = side == 0 ? lo->remove_top : lo->remove_bottom;
            for (int t = 0; t < want; t++) {
                int64_t best = -1;
                for (int64_t i = 0; i < N; i++) {
                    int taken = 0;
                    for (int c = 0; c < nc; c++) taken |= chosen[c] == i;
                    if (taken) continue;
                    if (best < 0 || (side == 0 ? S[i] > S[best] : S[i] < S[best])) best = i;
                }
                chosen[nc++] = best;
            }
        }
        for (int t = 0, draw = 0; t < lo->remove_random; draw++) {
            int64_t i = (int64_t)infl_rng_below(o.seed, INFL_RNG_SUBSET, (uint64_t)q, (uint32_t)draw, (uint64_t)N);
            int taken = 0;
            for (int c = 0; c < nc; c++) taken |= chosen[c] == i;
            if (taken) continue;
            chosen[nc++] = i;
            t++;
        }
        double base = glm_loss(&spec, w0, qx + (size_t)q * qi->d, qy[q], qyf + (size_t)q * (kt ? kt : 1));
        for (int c = 0; c < nc; c++) {
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
            memcpy(w, w0, P * sizeof(double));
            CHECK(infl_convex_fit(ctx, train, &spec, &chosen[c], 1, &co, w, &cr));
            double after = glm_loss(&spec, w, qx + (size_t)q * qi->d, qy[q], qyf + (size_t)q * (kt ? kt : 1));
            int n = res->n++;
            res->query[n] = q;
            res->removed[n] = begin + chosen[c];
            res->predicted[n] = (double)S[chosen[c]] / (double)N;
            res->actual[n] = after - base;
            char info[64];
            snprintf(info, sizeof info, "query %d/%d", q + 1, M);
            infl_progress(ctx, "loo", (uint64_t)res->n, (uint64_t)cap, info);
        }
    }
    res->pearson = stats_pearson(res->predicted, res->actual, res->n);
    res->spearman = spearman(res->predicted, res->actual, res->n);
    res->seconds = infl_now() - t0;
    *out = res;
    res = NULL;
done:
    free(wf);
    free(fs.S);
    free(w0);
    free(w);
    free(H);
    free(qx);
    free(qy);
    free(qyf);
    free(chosen);
    store_split_close(train);
    store_split_close(query);
    infl_rank_result_free(rr);
    infl_loo_result_free(res);
    return rc;
}
