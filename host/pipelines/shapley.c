/*
 * shapley.c — `infl shapley`: Data Shapley values of training rows (Ghorbani & Zou
 * 2019; Jia et al. 2019). The rows' features (inputs, or a run's penultimate
 * activations) come through the scheduler (shapley_knn.c); the estimators are in
 * estimators/shapley.c.
 *
 *   tmc, gshapley   the rows and the validation split held in memory in float64;
 *                   permutations in rounds, in parallel over threads (OpenMP, one
 *                   scratch context and work each), permutation t keyed by (seed, t), so
 *                   the values do not depend on the threads or on where a run resumed.
 *                   After each round: the running sums go to the state file, and the
 *                   convergence criterion Σ_i |φ_i(T) − φ_i(T − window)| / Σ_i |φ_i(T)|
 *                   is printed; the run stops at `permutations` or below `converge`.
 *   exact           U of all 2^n subsets (n ≤ 16), in parallel.
 *   knn             streamed (shapley_knn.c): any N.
 * Then: the flipped labels' recall among the lowest-valued 10% and 20%, and the removal
 * curves (test accuracy of the utility model — of the KNN classifier for knn — refitted
 * without the highest-valued, the lowest-valued, or random rows).
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "estimators/shapley.h"
#include "shapley_internal.h"

#define RANDOM_DRAWS 3

infl_shapley_options infl_shapley_options_default(void) {
    infl_shapley_options o;
    memset(&o, 0, sizeof o);
    o.method = INFL_SHAPLEY_TMC;
    o.hidden = 32;
    o.epochs = 5;
    o.weight_decay = 1e-3;
    o.newton_tol = 1e-6;
    o.permutations = 500;
    o.tolerance = 0.01;
    o.converge = 0.05;
    o.window = 100;
    o.knn_k = 10;
    o.curve_points = 11;
    o.curve_max = 0.5;
    o.shard_mb = 64;
    o.block_mb = 512;
    return o;
}

const char *infl_shapley_method_name(infl_shapley_method m) {
    switch (m) {
    case INFL_SHAPLEY_TMC: return "tmc";
    case INFL_SHAPLEY_GSHAPLEY: return "gshapley";
    case INFL_SHAPLEY_KNN: return "knn";
    case INFL_SHAPLEY_EXACT: return "exact";
    }
    return "?";
}

void infl_shapley_result_free(infl_shapley_result *r) {
    if (!r) return;
    free(r->values);
    free(r->se);
    free(r->label);
    free(r->order);
    free(r->flipped);
    free(r->curve_fraction);
    free(r->curve_high);
    free(r->curve_low);
    free(r->curve_random);
    free(r);
}

// ---- the data ----

typedef struct {
    infl_split *train, *valid, *test;
    shap_feat feat;
    int64_t n, V, T;
    float *fx, *fv, *ft;   // features (n, d), (V, d), (T, d)
    int32_t *y, *vy, *ty;
    int classes;
    int nt;                // threads
} sdata;

static void sdata_close(infl_ctx *ctx, sdata *s) {
    shap_feat_close(ctx, &s->feat);
    store_split_close(s->train);
    store_split_close(s->valid);
    store_split_close(s->test);
    free(s->fx);
    free(s->fv);
    free(s->ft);
    free(s->y);
    free(s->vy);
    free(s->ty);
}

static infl_status open_split(infl_ctx *ctx, const char *ref_text, const char *what, infl_split **out) {
    infl_dataref ref;
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, ref_text, &ref));
    FORWARD_IF_ERROR(store_split_open(ctx, &ref, out));
    const infl_split_info *in = store_split_info(*out);
    RETURN_IF(ctx, in->kind != INFL_SPLIT_ROWS || in->y_kind != INFL_Y_CLASS, INFL_E_ARG,
              "%s (%s): shapley values rows with class labels; this split holds %s", ref_text, what,
              in->kind == INFL_SPLIT_DOCS       ? "documents"
              : in->kind == INFL_SPLIT_CAPTURED ? "captured gradients, not features"
                                                : "real targets");
    return INFL_OK;
}

// Features and labels of a split into memory (*F (n, d), *y (n)).
static infl_status gather(infl_ctx *ctx, sdata *s, infl_split *sp, int64_t shard_rows, float **F, int32_t **y) {
    int64_t n = store_split_info(sp)->n;
    *F = infl_malloc(ctx, (size_t)n * s->feat.d * sizeof(float), "features");
    *y = infl_malloc(ctx, (size_t)n * sizeof(int32_t), "labels");
    if (!*F || !*y) return INFL_E_NOMEM;
    return shap_feat_gather(ctx, &s->feat, sp, shard_rows, *F, *y);
}

// The utility's split must hold two classes at least, else no utility tells rows apart.
static infl_status check_classes(infl_ctx *ctx, const char *ref, const int32_t *y, int64_t n, infl_split *sp) {
    for (int64_t i = 1; i < n; i++)
        if (y[i] != y[0]) return INFL_OK;
    char name[64];
    store_split_class_name(sp, y[0], name, sizeof name);
    return infl_seterr(ctx, INFL_E_ARG,
                       "%s: the utility's split has a single class (%d%s%s%s) in its %" PRId64
                       " rows: its accuracy and loss cannot tell training rows apart; give --valid a split with "
                       "two classes or more",
                       ref, (int)y[0], *name ? " '" : "", name, *name ? "'" : "", n);
}

// ---- permutations: the running state ----

static void fingerprint(const infl_shapley_options *o, const sdata *s, double lr, char *buf, size_t size) {
    snprintf(buf, size,
             "method %s, train %s, valid %s, features %s%s%s, utility %s, model %s (hidden %d, epochs %d), wd %g, "
             "lr %g, newton tol %g, tolerance %g, seed %" PRIu64 ", n %" PRId64,
             infl_shapley_method_name(o->method), o->train, o->valid, o->run && *o->run ? o->run : "inputs",
             o->run && *o->run ? ":" : "", o->run && *o->run ? (o->checkpoint ? o->checkpoint : "final") : "",
             o->utility_loss ? "loss" : "accuracy", o->model_mlp ? "mlp" : "convex", o->model_mlp ? o->hidden : 0,
             o->model_mlp ? o->epochs : 0, o->weight_decay, lr, o->model_mlp ? 0.0 : o->newton_tol, o->tolerance,
             o->seed, s->n);
}

// Σ_i |φ(T) − φ(T_k)| / Σ_i |φ(T)| against the newest snapshot at least `window` behind.
static double convergence(const infl_shapley_state *st, const double *mean, int window) {
    int k = -1;
    for (int j = 0; j < st->nsnap; j++)
        if (st->snap_perms[j] <= st->perms - window) k = j;
    if (k < 0) return NAN;
    const double *old = st->snap_values + (size_t)k * st->n;
    double num = 0, den = 0;
    for (int64_t i = 0; i < st->n; i++) {
        num += fabs(mean[i] - old[i]);
        den += fabs(mean[i]);
    }
    return den > 0 ? num / den : NAN;
}

static void push_snapshot(infl_shapley_state *st, const double *mean) {
    if (st->nsnap == st->cap) {  // drop the oldest
        memmove(st->snap_perms, st->snap_perms + 1, (size_t)(st->cap - 1) * sizeof(int64_t));
        memmove(st->snap_values, st->snap_values + st->n, (size_t)(st->cap - 1) * st->n * sizeof(double));
        st->nsnap--;
    }
    st->snap_perms[st->nsnap] = st->perms;
    memcpy(st->snap_values + (size_t)st->nsnap * st->n, mean, (size_t)st->n * sizeof(double));
    st->nsnap++;
}

// Runs a parallel loop body over [0, count) with a work and a scratch context per
// thread; the first error's detail lands in ctx.
typedef infl_status (*job_fn)(infl_ctx *tctx, void *user, shap_work *wk, int64_t job);

static infl_status parallel_jobs(infl_ctx *ctx, const shap_problem *p, int nt, int64_t count, job_fn fn, void *user) {
    infl_status rc = INFL_OK;
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        infl_ctx tctx;
        shap_thread_ctx(&tctx, ctx);
        shap_work wk;
        infl_status trc = shap_work_create(&tctx, p, &wk);
#pragma omp for schedule(dynamic)
        for (int64_t j = 0; j < count; j++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (trc == INFL_OK && !stop) trc = fn(&tctx, user, &wk, j);
            if (trc < 0) {
#pragma omp atomic write
                failed = 1;
            }
        }
        shap_work_free(&wk);
#pragma omp critical
        if (trc < 0 && rc == INFL_OK) {
            rc = trc;
            snprintf(ctx->detail, sizeof ctx->detail, "%s", tctx.detail);
        }
    }
    return rc;
}

typedef struct {
    const shap_problem *p;
    int gshapley;
    uint64_t seed;
    int64_t first;      // permutation number of job 0
    double *delta;      // (round, n)
    int64_t *fits;      // (round)
} perm_jobs;

static infl_status perm_job(infl_ctx *tctx, void *user, shap_work *wk, int64_t j) {
    perm_jobs *pj = user;
    const int64_t n = pj->p->n;
    int64_t *perm = malloc((size_t)n * sizeof(int64_t));
    RETURN_IF(tctx, !perm, INFL_E_NOMEM, "out of memory for a permutation of %" PRId64, n);
    infl_train_permute(perm, n, pj->seed, (uint64_t)(pj->first + j));
    pj->fits[j] = 0;
    infl_status rc = pj->gshapley ? shap_gshapley_perm(tctx, pj->p, wk, perm, pj->delta + j * n, &pj->fits[j])
                                  : shap_tmc_perm(tctx, pj->p, wk, perm, pj->delta + j * n, &pj->fits[j]);
    free(perm);
    return rc;
}

static infl_status run_permutations(infl_ctx *ctx, const infl_shapley_options *o, const shap_problem *p,
                                    const sdata *s, infl_shapley_result *r) {
    const int64_t n = p->n;
    const int round = s->nt * 4 < o->window ? s->nt * 4 : (o->window > 0 ? o->window : 1);
    infl_shapley_state st;
    memset(&st, 0, sizeof st);
    st.n = n;
    st.cap = (o->window + round - 1) / round + 2;
    fingerprint(o, s, p->lr, st.fingerprint, sizeof st.fingerprint);
    perm_jobs pj = {.p = p, .gshapley = o->method == INFL_SHAPLEY_GSHAPLEY, .seed = o->seed};
    double *mean = NULL;
    infl_status rc = INFL_OK;
    st.sum = infl_calloc(ctx, (size_t)n, sizeof(double), "the sums");
    st.sum2 = infl_calloc(ctx, (size_t)n, sizeof(double), "the sums");
    st.snap_perms = infl_malloc(ctx, (size_t)st.cap * sizeof(int64_t), "snapshots");
    st.snap_values = infl_malloc(ctx, (size_t)st.cap * n * sizeof(double), "snapshots");
    mean = infl_malloc(ctx, (size_t)n * sizeof(double), "the values");
    pj.delta = infl_malloc(ctx, (size_t)round * n * sizeof(double), "a round's marginal contributions");
    pj.fits = infl_malloc(ctx, (size_t)round * sizeof(int64_t), "a round's counts");
    GOTO_NOMEM_IF(!st.sum || !st.sum2 || !st.snap_perms || !st.snap_values || !mean || !pj.delta || !pj.fits);
    if (o->state && access(o->state, F_OK) == 0) {
        if (o->force) {
            rc = store_shapley_is_state(ctx, o->state);
            GOTO_IF(ctx, rc < 0, INFL_E_EXISTS, "%s exists and is not a shapley state file; --force replaces only those",
                    o->state);
        } else {
            CHECK(store_shapley_state_read(ctx, o->state, &st));
        }
    }
    r->convergence = NAN;
    int64_t start = st.perms;
    for (;;) {
        for (int64_t i = 0; i < n && st.perms > 0; i++) mean[i] = st.sum[i] / (double)st.perms;
        if (st.perms > 0) r->convergence = convergence(&st, mean, o->window);
        if (st.perms >= o->permutations || (o->converge > 0 && r->convergence < o->converge)) break;
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED,
                "interrupted after %" PRId64 " permutations%s", st.perms,
                o->state ? "; run the same command again to go on" : "");
        int64_t R = o->permutations - st.perms < round ? o->permutations - st.perms : round;
        pj.first = st.perms;
        CHECK(parallel_jobs(ctx, p, s->nt, R, perm_job, &pj));
        for (int64_t j = 0; j < R; j++) {  // in order: the sums do not depend on the threads
            const double *d = pj.delta + j * n;
            for (int64_t i = 0; i < n; i++) {
                st.sum[i] += d[i];
                st.sum2[i] += d[i] * d[i];
            }
            st.truncated += n - pj.fits[j];
            r->fits += pj.fits[j];
        }
        st.perms += R;
        for (int64_t i = 0; i < n; i++) mean[i] = st.sum[i] / (double)st.perms;
        push_snapshot(&st, mean);
        r->convergence = convergence(&st, mean, o->window);
        if (o->state) CHECK(store_shapley_state_write(ctx, o->state, &st));
        double se = 0;
        for (int64_t i = 0; i < n; i++) {
            double var = st.perms > 1 ? (st.sum2[i] - st.sum[i] * mean[i]) / (double)(st.perms - 1) : 0;
            se += sqrt(var > 0 ? var : 0) / sqrt((double)st.perms);
        }
        char info[160];
        snprintf(info, sizeof info, "change over %d perms %.4f, mean se %.2e, truncated %.0f%%", o->window,
                 r->convergence, se / (double)n, 100.0 * (double)st.truncated / ((double)st.perms * (double)n));
        if (o->log)
            fprintf(o->log, "%s: %" PRId64 " permutations: %s\n", infl_shapley_method_name(o->method), st.perms, info);
        infl_progress(ctx, "shapley", (uint64_t)st.perms, (uint64_t)o->permutations, info);
    }
    r->permutations = (int)st.perms;
    r->permutations_now = (int)(st.perms - start);
    r->truncated = st.perms ? (double)st.truncated / ((double)st.perms * (double)n) : 0;
    GOTO_IF(ctx, st.perms == 0, INFL_E_ARG, "no permutations run (--permutations %d)", o->permutations);
    for (int64_t i = 0; i < n; i++) {
        r->values[i] = st.sum[i] / (double)st.perms;
        double var = st.perms > 1 ? (st.sum2[i] - st.sum[i] * r->values[i]) / (double)(st.perms - 1) : 0;
        r->se[i] = sqrt(var > 0 ? var : 0) / sqrt((double)st.perms);
    }
done:
    free(st.sum);
    free(st.sum2);
    free(st.snap_perms);
    free(st.snap_values);
    free(mean);
    free(pj.delta);
    free(pj.fits);
    return rc;
}

// ---- exact ----

typedef struct {
    const shap_problem *p;
    double *U;
} exact_jobs;

static infl_status exact_job(infl_ctx *tctx, void *user, shap_work *wk, int64_t mask) {
    exact_jobs *ej = user;
    return shap_subset_utility(tctx, ej->p, wk, (uint32_t)mask, &ej->U[mask]);
}

// ---- G-Shapley's rate: the best one-pass rate on the validation split ----

static infl_status pick_lr(infl_ctx *ctx, shap_problem *p, shap_work *wk) {
    static const double rates[] = {1, 0.3, 0.1, 0.03, 0.01};
    double best = -INFINITY, lr = rates[0];
    for (size_t k = 0; k < sizeof rates / sizeof rates[0]; k++) {
        p->lr = rates[k];
        shap_model_init(p, wk->w);
        for (int64_t i = 0; i < p->n; i++) shap_sgd_step(p, wk, wk->w, i);
        double u = shap_utility(p, wk, wk->w);
        if (isfinite(u) && u > best) best = u, lr = rates[k];
        RETURN_IF_CANCELLED(ctx);
    }
    p->lr = lr;
    return INFL_OK;
}

// ---- removal curves of the in-memory methods ----

typedef struct {
    const shap_problem *p;     // the test split as its validation rows, accuracy
    const int64_t *orders;     // (ncurves, n): rows in removal order
    const int64_t *cut;        // (npoints)
    int npoints;
    double *acc;               // (ncurves, npoints)
} curve_jobs;

static infl_status curve_job(infl_ctx *tctx, void *user, shap_work *wk, int64_t job) {
    curve_jobs *cj = user;
    const shap_problem *p = cj->p;
    int c = (int)(job / cj->npoints), j = (int)(job % cj->npoints);
    const int64_t *ord = cj->orders + (size_t)c * p->n;
    // the rows kept, in index order (U is a function of the set: shapley.h)
    for (int64_t i = 0; i < p->n; i++) wk->idx[i] = 1;
    for (int64_t k = 0; k < cj->cut[j]; k++) wk->idx[ord[k]] = 0;
    int64_t m = 0;
    for (int64_t i = 0; i < p->n; i++)
        if (wk->idx[i]) {
            memcpy(wk->sx + m * p->D, p->x + i * p->D, (size_t)p->D * sizeof(double));
            wk->sy[m++] = p->y[i];
        }
    shap_model_init(p, wk->w);
    FORWARD_IF_ERROR(shap_fit(tctx, p, wk, m));
    cj->acc[job] = shap_utility(p, wk, wk->w);
    return INFL_OK;
}

// orders (2 + RANDOM_DRAWS, n): highest first, lowest first, random draws.
static void removal_orders(const infl_shapley_result *r, uint64_t seed, int64_t *orders) {
    const int64_t n = r->n;
    for (int64_t k = 0; k < n; k++) {
        orders[k] = r->order[n - 1 - k];
        orders[n + k] = r->order[k];
    }
    for (int d = 0; d < RANDOM_DRAWS; d++)
        infl_train_permute(orders + (size_t)(2 + d) * n, n, seed, (1ull << 40) + (uint64_t)d);
}

static void curves_combine(infl_shapley_result *r, const double *acc) {
    const int P = r->curve_points;
    for (int j = 0; j < P; j++) {
        r->curve_high[j] = acc[j];
        r->curve_low[j] = acc[P + j];
        double s = 0;
        for (int d = 0; d < RANDOM_DRAWS; d++) s += acc[(2 + d) * P + j];
        r->curve_random[j] = s / RANDOM_DRAWS;
    }
}

// ---- the pipeline ----

typedef struct {
    double v;
    int64_t i;
} vi;

static int by_value(const void *x, const void *y) {
    const vi *a = x, *b = y;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static infl_status check_options(infl_ctx *ctx, const infl_shapley_options *o) {
    RETURN_IF(ctx, !o->train || !*o->train, INFL_E_ARG, "no training rows given (--train FILE:/split[a:b])");
    RETURN_IF(ctx, !o->valid || !*o->valid, INFL_E_ARG, "no utility split given (--valid FILE:/split[a:b])");
    RETURN_IF(ctx, o->method < INFL_SHAPLEY_TMC || o->method > INFL_SHAPLEY_EXACT, INFL_E_ARG, "unknown method %d",
              (int)o->method);
    RETURN_IF(ctx, o->permutations < 1, INFL_E_ARG, "--permutations: expected at least 1");
    RETURN_IF(ctx, !(o->tolerance >= 0) || !(o->converge >= 0), INFL_E_ARG,
              "--tolerance and --converge: expected values >= 0");
    RETURN_IF(ctx, o->window < 1, INFL_E_ARG, "--window: expected at least 1");
    RETURN_IF(ctx, o->knn_k < 1, INFL_E_ARG, "--k: expected at least 1");
    RETURN_IF(ctx, !(o->weight_decay > 0) && !o->model_mlp, INFL_E_ARG,
              "--wd: the convex model needs weight decay > 0 (a unique optimum)");
    RETURN_IF(ctx, o->model_mlp && (o->hidden < 1 || o->epochs < 1), INFL_E_ARG,
              "--hidden and --epochs: expected at least 1");
    RETURN_IF(ctx, !(o->lr >= 0) || !(o->newton_tol > 0), INFL_E_ARG, "--lr >= 0 and --newton-tol > 0 expected");
    RETURN_IF(ctx, o->curve_points < 0 || o->curve_points == 1 || !(o->curve_max > 0 && o->curve_max < 1),
              INFL_E_ARG, "--curve-points: 0 or at least 2; --curve-max in (0, 1)");
    RETURN_IF(ctx, o->state && o->method != INFL_SHAPLEY_TMC && o->method != INFL_SHAPLEY_GSHAPLEY, INFL_E_ARG,
              "--state: only tmc and gshapley have permutations to resume");
    return INFL_OK;
}

static infl_status flipped_recall(infl_ctx *ctx, sdata *s, infl_shapley_result *r) {
    r->recall[0] = r->recall[1] = NAN;
    if (!store_split_info(s->train)->has_flipped) return INFL_OK;
    r->flipped = infl_malloc(ctx, (size_t)r->n * sizeof(int32_t), "the flipped labels");
    if (!r->flipped) return INFL_E_NOMEM;
    FORWARD_IF_ERROR(store_split_read_int(ctx, s->train, "flipped", 0, r->n, r->flipped));
    for (int64_t i = 0; i < r->n; i++) r->nflipped += r->flipped[i] != 0;
    const double shares[2] = {0.10, 0.20};
    for (int k = 0; k < 2; k++) {
        int64_t top = (int64_t)ceil(shares[k] * (double)r->n), found = 0;
        for (int64_t i = 0; i < top; i++) found += r->flipped[r->order[i]] != 0;
        r->recall[k] = r->nflipped ? (double)found / (double)r->nflipped : NAN;
    }
    return INFL_OK;
}

static infl_status write_output(infl_ctx *ctx, const infl_shapley_options *o, const infl_shapley_result *r) {
    char k[32], perms[32], tol[32], wd[32], lr[32];
    snprintf(k, sizeof k, "%d", o->knn_k);
    snprintf(perms, sizeof perms, "%d", o->permutations);
    snprintf(tol, sizeof tol, "%g", o->tolerance);
    snprintf(wd, sizeof wd, "%g", o->weight_decay);
    snprintf(lr, sizeof lr, "%g", r->lr);
    const char *const attrs[][2] = {
        {"method", infl_shapley_method_name(o->method)},
        {"train", o->train},
        {"valid", o->valid},
        {"test", o->test && *o->test ? o->test : o->valid},
        {"features", o->run && *o->run ? o->run : "inputs"},
        {"utility", o->utility_loss ? "loss" : "accuracy"},
        {"model", o->method == INFL_SHAPLEY_KNN ? "knn" : o->model_mlp ? "mlp" : "convex"},
        {"k", k},
        {"max_permutations", perms},
        {"tolerance", tol},
        {"weight_decay", wd},
        {"lr", lr},
    };
    return store_shapley_write(ctx, o->output, o->force, r, attrs, (int)(sizeof attrs / sizeof attrs[0]));
}

// tmc, gshapley, exact: the rows in memory.
static infl_status in_memory(infl_ctx *ctx, const infl_shapley_options *o, sdata *s, infl_shapley_result *r,
                             int64_t *cut) {
    const int64_t n = s->n, d = s->feat.d;
    double *x = NULL, *vx = NULL, *tx = NULL, *acc = NULL, *U = NULL;
    int64_t *orders = NULL;
    shap_work wk;
    memset(&wk, 0, sizeof wk);
    infl_status rc = INFL_OK;
    GOTO_IF(ctx, o->method == INFL_SHAPLEY_EXACT && n > SHAP_EXACT_MAX, INFL_E_ARG,
            "exact Shapley enumerates 2^n subsets: %" PRId64 " training rows is more than its %d; use --method tmc "
            "(or a range such as %s[0:10])",
            n, SHAP_EXACT_MAX, o->train);
    x = infl_malloc(ctx, (size_t)n * d * sizeof(double), "the training rows in float64");
    vx = infl_malloc(ctx, (size_t)s->V * d * sizeof(double), "the validation rows in float64");
    GOTO_NOMEM_IF(!x || !vx);
    for (size_t i = 0; i < (size_t)n * d; i++) x[i] = s->fx[i];
    for (size_t i = 0; i < (size_t)s->V * d; i++) vx[i] = s->fv[i];
    shap_problem p = {.n = n, .D = (int)d, .K = s->classes, .x = x, .y = s->y, .V = s->V, .vx = vx, .vy = s->vy,
                      .utility_loss = o->utility_loss, .mlp = o->model_mlp, .hidden = o->hidden, .epochs = o->epochs,
                      .wd = o->weight_decay, .lr = o->lr, .seed = o->seed,
                      .fit = {.tol = o->newton_tol, .max_iters = 100},
                      .tolerance = o->tolerance};
    if (p.mlp && !(p.lr > 0)) p.lr = 0.1;
    CHECK(shap_work_create(ctx, &p, &wk));
    if (o->method == INFL_SHAPLEY_GSHAPLEY && !(o->lr > 0)) CHECK(pick_lr(ctx, &p, &wk));
    r->lr = p.lr;
    CHECK(shap_problem_finish(ctx, &p, &wk));
    r->u_all = p.u_all;
    r->u_empty = p.u_empty;
    if (o->method == INFL_SHAPLEY_EXACT) {
        U = infl_malloc(ctx, ((size_t)1 << n) * sizeof(double), "every subset's utility");
        GOTO_NOMEM_IF(!U);
        exact_jobs ej = {.p = &p, .U = U};
        CHECK(parallel_jobs(ctx, &p, s->nt, (int64_t)1 << n, exact_job, &ej));
        shap_exact_values(r->values, U, (int)n);
        r->fits = (int64_t)1 << n;
        r->convergence = 0;
    } else {
        CHECK(run_permutations(ctx, o, &p, s, r));
    }
    for (int64_t i = 0; i < n; i++) r->sum += r->values[i];
    // the order, then the removal curves on the test rows (accuracy)
    {
        vi *t = infl_malloc(ctx, (size_t)n * sizeof(vi), "sorting");
        GOTO_NOMEM_IF(!t);
        for (int64_t i = 0; i < n; i++) t[i] = (vi){r->values[i], i};
        qsort(t, (size_t)n, sizeof(vi), by_value);
        for (int64_t i = 0; i < n; i++) r->order[i] = t[i].i;
        free(t);
    }
    if (r->curve_points > 0) {
        double t0 = infl_now();
        const int P = r->curve_points, C = 2 + RANDOM_DRAWS;
        tx = infl_malloc(ctx, (size_t)s->T * d * sizeof(double), "the test rows in float64");
        orders = infl_malloc(ctx, (size_t)C * n * sizeof(int64_t), "the removal orders");
        acc = infl_malloc(ctx, (size_t)C * P * sizeof(double), "the curves");
        GOTO_NOMEM_IF(!tx || !orders || !acc);
        for (size_t i = 0; i < (size_t)s->T * d; i++) tx[i] = s->ft[i];
        removal_orders(r, o->seed, orders);
        shap_problem pt = p;
        pt.vx = tx;
        pt.vy = s->ty;
        pt.V = s->T;
        pt.utility_loss = 0;
        for (int j = 0; j < P; j++) cut[j] = cut[j] >= n ? n - 1 : cut[j];  // keep one row at least
        curve_jobs cj = {.p = &pt, .orders = orders, .cut = cut, .npoints = P, .acc = acc};
        CHECK(parallel_jobs(ctx, &pt, s->nt, (int64_t)C * P, curve_job, &cj));
        curves_combine(r, acc);
        r->seconds_curves = infl_now() - t0;
    }
done:
    shap_work_free(&wk);
    free(x);
    free(vx);
    free(tx);
    free(acc);
    free(U);
    free(orders);
    return rc;
}

// knn: streamed.
static infl_status knn(infl_ctx *ctx, const infl_shapley_options *o, sdata *s, infl_shapley_result *r,
                       const int64_t *cut, int64_t shard_rows) {
    const int64_t n = s->n;
    int64_t *rank = NULL, *orders = NULL;
    double *acc = NULL;
    vi *t = NULL;
    infl_status rc = INFL_OK;
    shap_knn_job job = {.K = o->knn_k, .threads = s->nt, .shard_rows = shard_rows, .block_mb = o->block_mb,
                        .classes = s->classes, .V = s->fv, .vy = s->vy, .M = s->V, .T = s->ft, .ty = s->ty,
                        .MT = s->T};
    CHECK(shap_knn_values(ctx, &s->feat, s->train, &job, r->values, r->label, &r->u_all));
    r->u_empty = 0;
    for (int64_t i = 0; i < n; i++) job.classes = r->label[i] >= job.classes ? r->label[i] + 1 : job.classes;
    s->classes = job.classes;
    for (int64_t i = 0; i < n; i++) r->sum += r->values[i];
    t = infl_malloc(ctx, (size_t)n * sizeof(vi), "sorting");
    GOTO_NOMEM_IF(!t);
    for (int64_t i = 0; i < n; i++) t[i] = (vi){r->values[i], i};
    qsort(t, (size_t)n, sizeof(vi), by_value);
    for (int64_t i = 0; i < n; i++) r->order[i] = t[i].i;
    if (r->curve_points > 0) {
        double t0 = infl_now();
        const int P = r->curve_points, C = 2 + RANDOM_DRAWS;
        orders = infl_malloc(ctx, (size_t)C * n * sizeof(int64_t), "the removal orders");
        rank = infl_malloc(ctx, (size_t)C * n * sizeof(int64_t), "the removal ranks");
        acc = infl_malloc(ctx, (size_t)C * P * sizeof(double), "the curves");
        GOTO_NOMEM_IF(!orders || !rank || !acc);
        removal_orders(r, o->seed, orders);
        for (int c = 0; c < C; c++)
            for (int64_t k = 0; k < n; k++) rank[(size_t)c * n + orders[(size_t)c * n + k]] = k;
        job.ncurves = C;
        job.npoints = P;
        job.rank = rank;
        job.cut = cut;
        CHECK(shap_knn_curves(ctx, &s->feat, s->train, &job, acc));
        curves_combine(r, acc);
        r->seconds_curves = infl_now() - t0;
    }
done:
    free(t);
    free(rank);
    free(orders);
    free(acc);
    return rc;
}

infl_status infl_shapley(infl_ctx *ctx, const infl_shapley_options *o, infl_shapley_result **out) {
    *out = NULL;
    FORWARD_IF_ERROR(check_options(ctx, o));
    double t0 = infl_now();
    sdata s;
    memset(&s, 0, sizeof s);
    infl_shapley_result *r = NULL;
    int64_t *cut = NULL;
    infl_status rc = INFL_OK;
    s.nt = o->threads > 0 ? o->threads : omp_get_max_threads();
    const char *test = o->test && *o->test ? o->test : o->valid;
    CHECK(open_split(ctx, o->train, "--train", &s.train));
    CHECK(open_split(ctx, o->valid, "--valid", &s.valid));
    if (o->curve_points > 0) CHECK(open_split(ctx, test, "--test", &s.test));
    const infl_split_info *ti = store_split_info(s.train), *vi_ = store_split_info(s.valid);
    GOTO_IF(ctx, vi_->d != ti->d, INFL_E_SHAPE, "%s has %" PRId64 " features but %s has %" PRId64, o->valid, vi_->d,
            o->train, ti->d);
    GOTO_IF(ctx, s.test && store_split_info(s.test)->d != ti->d, INFL_E_SHAPE,
            "%s has %" PRId64 " features but %s has %" PRId64, test, store_split_info(s.test)->d, o->train, ti->d);
    s.n = ti->n;
    s.V = vi_->n;
    s.T = s.test ? store_split_info(s.test)->n : 0;
    CHECK(shap_feat_open(ctx, &s.feat, o->run, o->checkpoint, ti->d));
    int64_t shard_rows = o->shard_rows > 0 ? o->shard_rows : infl_shard_rows(s.n, ti->d, 1, o->shard_mb, 256);
    CHECK(gather(ctx, &s, s.valid, shard_rows, &s.fv, &s.vy));
    CHECK(check_classes(ctx, o->valid, s.vy, s.V, s.valid));
    if (s.test) CHECK(gather(ctx, &s, s.test, shard_rows, &s.ft, &s.ty));

    r = infl_calloc(ctx, 1, sizeof *r, "the result");
    GOTO_NOMEM_IF(!r);
    r->n = s.n;
    r->begin = ti->begin;
    r->features = s.feat.d;
    r->values = infl_calloc(ctx, (size_t)s.n, sizeof(double), "the values");
    r->se = infl_calloc(ctx, (size_t)s.n, sizeof(double), "the standard errors");
    r->label = infl_malloc(ctx, (size_t)s.n * sizeof(int32_t), "the labels");
    r->order = infl_malloc(ctx, (size_t)s.n * sizeof(int64_t), "the order");
    GOTO_NOMEM_IF(!r->values || !r->se || !r->label || !r->order);
    r->curve_points = o->curve_points;
    if (r->curve_points > 0) {
        const int P = r->curve_points;
        r->curve_fraction = infl_malloc(ctx, (size_t)P * sizeof(double), "the curves");
        r->curve_high = infl_malloc(ctx, (size_t)P * sizeof(double), "the curves");
        r->curve_low = infl_malloc(ctx, (size_t)P * sizeof(double), "the curves");
        r->curve_random = infl_malloc(ctx, (size_t)P * sizeof(double), "the curves");
        cut = infl_malloc(ctx, (size_t)P * sizeof(int64_t), "the curves");
        GOTO_NOMEM_IF(!r->curve_fraction || !r->curve_high || !r->curve_low || !r->curve_random || !cut);
        for (int j = 0; j < P; j++) {
            r->curve_fraction[j] = o->curve_max * j / (P - 1);
            cut[j] = (int64_t)llround(r->curve_fraction[j] * (double)s.n);
        }
    }
    // the classes: the files' /classes, else the largest label seen (+1)
    s.classes = ti->n_classes > vi_->n_classes ? ti->n_classes : vi_->n_classes;
    for (int64_t i = 0; i < s.V; i++) s.classes = s.vy[i] >= s.classes ? s.vy[i] + 1 : s.classes;
    for (int64_t i = 0; i < s.T; i++) s.classes = s.ty[i] >= s.classes ? s.ty[i] + 1 : s.classes;
    if (o->method == INFL_SHAPLEY_KNN) {
        CHECK(knn(ctx, o, &s, r, cut, shard_rows));
    } else {
        GOTO_IF(ctx, s.n > 100000, INFL_E_ARG,
                "%s: %" PRId64 " training rows: %s refits a model per prefix and holds the rows in memory; value a "
                "range of at most 100000 rows (or use --method knn)",
                o->train, s.n, infl_shapley_method_name(o->method));
        CHECK(gather(ctx, &s, s.train, shard_rows, &s.fx, &s.y));
        memcpy(r->label, s.y, (size_t)s.n * sizeof(int32_t));
        for (int64_t i = 0; i < s.n; i++) s.classes = s.y[i] >= s.classes ? s.y[i] + 1 : s.classes;
        CHECK(in_memory(ctx, o, &s, r, cut));
    }
    r->classes = s.classes;
    CHECK(flipped_recall(ctx, &s, r));
    r->seconds = infl_now() - t0;
    if (o->output) CHECK(write_output(ctx, o, r));
    *out = r;
    r = NULL;
done:
    infl_shapley_result_free(r);
    free(cut);
    sdata_close(ctx, &s);
    return rc;
}
