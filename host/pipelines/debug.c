/*
 * debug.c — `infl debug`: model debugging by influence (the experiment of FastIF, Guo
 * et al. 2020). The run's final model misclassifies some validation examples; for the
 * first M of them the training data are ranked (infl_rank over just those rows, any
 * method), the union of each one's k strongest opponents (negative scores: removing an
 * opponent is predicted to lower that example's loss) is removed, and the model is
 * trained again with the run's recorded options and seed (retrain.h; the trainer
 * leaves the rows out where it reads its shards and the run records them as
 * /train_excluded). The accuracy on the M examples and on a test split, before and
 * after, is set beside controls that remove as many random training rows, one model
 * per seed: the spread of retraining with any removal of that size.
 *
 * Implemented: removal. Down-weighting (per-example weights in the trainer) and
 * fine-tuning on proponents are not.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "models/train.h"
#include "retrain.h"
#include "store/store.h"

infl_debug_options infl_debug_options_default(void) {
    infl_debug_options o;
    memset(&o, 0, sizeof o);
    o.rank = infl_rank_options_default();
    o.fix = 100;
    o.per_example = 10;
    o.random = 3;
    return o;
}

void infl_debug_result_free(infl_debug_result *r) {
    if (!r) return;
    free(r->fixed);
    free(r->removed);
    free(r->random_fixed);
    free(r->random_test);
    free(r);
}

static int cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

// n rows of [begin, begin + N) drawn without replacement, ascending (Knuth's selection
// sampling: row i is taken with probability (still needed) / (rows left), each from
// the counter generator keyed by (seed, SUBSET, row, draw)), into out (n).
static void random_rows(int64_t *out, int64_t n, int64_t begin, int64_t N, uint64_t seed, uint32_t draw) {
    int64_t got = 0;
    for (int64_t i = 0; i < N && got < n; i++)
        if (infl_rng_uniform(seed, INFL_RNG_SUBSET, (uint64_t)(begin + i), draw) * (double)(N - i) < (double)(n - got))
            out[got++] = begin + i;
}

// Trains the run's model again without the rows `exclude` into `path`, then its
// accuracy on the M examples (fx, fy) and on the test split.
static infl_status retrain_eval(infl_ctx *ctx, const infl_train_options *to, const int64_t *exclude, int64_t n,
                                const char *path, const float *fx, const int32_t *fy, int M, int64_t D,
                                const char *test, double *acc_fixed, double *acc_test) {
    infl_train_options t = *to;
    t.exclude = exclude;
    t.nexclude = n;
    infl_progress_fn saved = ctx->progress;  // the trainer's progress would replace ours
    ctx->progress = NULL;
    infl_status rc = infl_train(ctx, &t, path, NULL);
    ctx->progress = saved;
    FORWARD_IF_ERROR(rc);
    double *mg = infl_malloc(ctx, (size_t)(M > 0 ? M : 1) * sizeof(double), "margins");
    if (!mg) return INFL_E_NOMEM;
    rc = retrain_mlp_outputs(ctx, path, fx, fy, NULL, M, D, 0, 1, mg);
    int right = 0;
    for (int i = 0; rc == INFL_OK && i < M; i++) right += mg[i] > 0;
    free(mg);
    FORWARD_IF_ERROR(rc);
    *acc_fixed = M > 0 ? (double)right / M : NAN;
    infl_eval_result ev;
    FORWARD_IF_ERROR(infl_eval(ctx, path, NULL, test, &ev));
    *acc_test = ev.accuracy;
    return INFL_OK;
}

infl_status infl_debug(infl_ctx *ctx, const infl_debug_options *o, infl_debug_result **out) {
    *out = NULL;
    const infl_rank_options *ro = &o->rank;
    RETURN_IF(ctx, !ro->run || !*ro->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, !o->val || !*o->val, INFL_E_ARG, "no validation split given (--val FILE:/split[a:b])");
    RETURN_IF(ctx, o->fix < 1, INFL_E_ARG, "--fix: expected at least 1 misclassified example, got %d", o->fix);
    RETURN_IF(ctx, o->per_example < 1, INFL_E_ARG, "--per-example: expected at least 1, got %d", o->per_example);
    RETURN_IF(ctx, o->random < 0, INFL_E_ARG, "--random: expected 0 or more seeds, got %d", o->random);
    infl_debug_result *res = infl_calloc(ctx, 1, sizeof *res, "the result");
    if (!res) return INFL_E_NOMEM;
    infl_run *run = NULL;
    infl_split *val = NULL, *train = NULL;
    float *vx = NULL, *fx = NULL;
    int32_t *vy = NULL, *fy = NULL;
    double *mg = NULL;
    int64_t *opp = NULL;
    infl_rank_result *rk = NULL;
    char path[4200];
    char *test = res->test;
    infl_status rc = INFL_OK;

    CHECK(store_run_open(ctx, ro->run, &run));
    const infl_model_spec *ms = store_run_spec(run);
    GOTO_IF(ctx, ms->kind != INFL_MODEL_MLP || ms->mlp.loss == INFL_LOSS_MSE, INFL_E_UNSUPPORTED,
            "%s: infl debug fixes misclassified examples: it takes mlp runs of class labels", ro->run);
    infl_train_options to;
    CHECK(retrain_options(ctx, run, o->epochs, &to));
    to.seed = store_run_seed(run);  // the run's own initialisation and order: only the rows removed differ
    GOTO_IF(ctx, ro->train && *ro->train, INFL_E_ARG,
            "infl debug ranks and retrains on the run's own training data (%s); --train is not taken", to.data);
    infl_dataref ref;
    CHECK(infl_dataref_parse(ctx, to.data, &ref));
    CHECK(store_split_open(ctx, &ref, &train));
    const int64_t N = store_split_info(train)->n, tbegin = store_split_info(train)->begin;
    CHECK(infl_dataref_parse(ctx, o->val, &ref));
    CHECK(store_split_open(ctx, &ref, &val));
    if (o->test && *o->test) snprintf(test, sizeof res->test, "%s", o->test);
    else snprintf(test, sizeof res->test, "%s:/%s", ref.path, ref.split);
    const infl_split_info *vi = store_split_info(val);
    GOTO_IF(ctx, vi->kind != INFL_SPLIT_ROWS || vi->y_kind != INFL_Y_CLASS, INFL_E_ARG,
            "%s: expected rows with class labels", o->val);
    GOTO_IF(ctx, vi->d != ms->mlp.widths[0], INFL_E_SHAPE, "%s has %" PRId64 " features; the model takes %d", o->val,
            vi->d, ms->mlp.widths[0]);
    GOTO_IF(ctx, vi->n > 1000000, INFL_E_ARG, "%s: %" PRId64 " validation rows; take at most 1000000", o->val, vi->n);
    const int64_t D = vi->d, nv = vi->n;

    // the misclassified validation examples: margin <= 0 at the run's final weights
    vx = infl_malloc(ctx, (size_t)nv * D * sizeof(float), "the validation rows");
    vy = infl_malloc(ctx, (size_t)nv * sizeof(int32_t), "the validation labels");
    mg = infl_malloc(ctx, (size_t)nv * sizeof(double), "margins");
    GOTO_NOMEM_IF(!vx || !vy || !mg);
    CHECK(store_split_read(ctx, val, 0, nv, vx, vy, NULL));
    CHECK(retrain_mlp_outputs(ctx, ro->run, vx, vy, NULL, (int)nv, D, 0, 1, mg));
    res->val_n = nv;
    res->fixed = infl_malloc(ctx, (size_t)(o->fix) * sizeof(int64_t), "the examples");
    GOTO_NOMEM_IF(!res->fixed);
    for (int64_t i = 0; i < nv; i++)
        if (!(mg[i] > 0)) {
            if (res->M < o->fix) res->fixed[res->M++] = i;
            res->val_wrong++;
        }
    GOTO_IF(ctx, res->M == 0, INFL_E_ARG, "%s: the run's final model classifies every example right: nothing to fix",
            o->val);
    int M = res->M;
    fx = infl_malloc(ctx, (size_t)M * D * sizeof(float), "the examples");
    fy = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "the examples");
    GOTO_NOMEM_IF(!fx || !fy);
    for (int q = 0; q < M; q++) {
        memcpy(fx + (size_t)q * D, vx + (size_t)res->fixed[q] * D, (size_t)D * sizeof(float));
        fy[q] = vy[res->fixed[q]];
    }
    free(vx);
    vx = NULL;

    // their opponents: the k most negative scores of each, their union
    infl_rank_options r = *ro;
    r.query = o->val;
    r.query_rows = res->fixed;
    r.nquery_rows = M;
    r.top = o->per_example;
    r.output = NULL;
    r.save_scores = 0;
    double t0 = infl_now();
    CHECK(infl_rank(ctx, &r, &rk));
    res->seconds_rank = infl_now() - t0;
    opp = infl_malloc(ctx, (size_t)M * rk->k * sizeof(int64_t), "the opponents");
    GOTO_NOMEM_IF(!opp);
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)M * rk->k; i++)
        if (rk->bottom_score[i] < 0) opp[n++] = rk->bottom_index[i];
    qsort(opp, (size_t)n, sizeof(int64_t), cmp_i64);
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++)
        if (w == 0 || opp[i] != opp[w - 1]) opp[w++] = opp[i];
    GOTO_IF(ctx, w == 0, INFL_E_NUMERIC, "no example has an opponent (a negative score): nothing to remove");
    GOTO_IF(ctx, w >= N, INFL_E_ARG, "the opponents are the whole training split: nothing would be left");
    res->removed = opp;
    res->nremoved = w;
    opp = NULL;

    // before: the run itself
    infl_eval_result ev;
    CHECK(infl_eval(ctx, ro->run, NULL, test, &ev));
    res->before_test = ev.accuracy;
    res->before_fixed = 0;

    // after: without the opponents, then the random controls
    res->nrandom = o->random;
    res->random_fixed = infl_malloc(ctx, (size_t)(o->random + 1) * sizeof(double), "the controls");
    res->random_test = infl_malloc(ctx, (size_t)(o->random + 1) * sizeof(double), "the controls");
    opp = infl_malloc(ctx, (size_t)res->nremoved * sizeof(int64_t), "random rows");
    GOTO_NOMEM_IF(!res->random_fixed || !res->random_test || !opp);
    double t1 = infl_now();
    for (int s = -1; s < o->random; s++) {
        char info[96];
        snprintf(info, sizeof info, s < 0 ? "without the %" PRId64 " opponents" : "without %" PRId64 " random rows",
                 res->nremoved);
        infl_progress(ctx, "debug", (uint64_t)(s + 1), (uint64_t)(o->random + 1), info);
        if (o->keep_prefix) {
            if (s < 0) snprintf(path, sizeof path, "%s-removed.h5", o->keep_prefix);
            else snprintf(path, sizeof path, "%s-random-%d.h5", o->keep_prefix, s);
        } else {
            snprintf(path, sizeof path, "%s.debug-%d.h5", ro->run, s + 1);
        }
        to.force = o->keep_prefix ? o->force : 1;
        const int64_t *ex = res->removed;
        if (s >= 0) {
            random_rows(opp, res->nremoved, tbegin, N, o->seed, (uint32_t)s);
            ex = opp;
        }
        rc = retrain_eval(ctx, &to, ex, res->nremoved, path, fx, fy, M, D, test,
                          s < 0 ? &res->after_fixed : &res->random_fixed[s],
                          s < 0 ? &res->after_test : &res->random_test[s]);
        if (!o->keep_prefix) retrain_remove_files(path);
        CHECK(rc);
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
    }
    res->seconds_train = infl_now() - t1;
    *out = res;
    res = NULL;
done:
    infl_rank_result_free(rk);
    infl_debug_result_free(res);
    free(opp);
    free(vx);
    free(vy);
    free(fx);
    free(fy);
    free(mg);
    store_split_close(val);
    store_split_close(train);
    store_run_close(run);
    return rc;
}
