/*
 * lds.c — `infl lds`: the linear datamodeling score (Park et al. 2023, TRAK), the
 * measure the field uses to compare attribution methods.
 *
 * Model k (k < models) is the run's model trained again, with the run's recorded
 * training options, on the subset S_k of its train split that keeps row i when
 * uniform(seed, SUBSET, i, k) < t_k, the cut t_k for which S_k holds exactly
 * round(fraction · N) rows (infl_subset_cut; the counter generator: no subset is ever
 * stored; the trainers keep a shard's rows of S_k as they read it, models/train.h).
 * An MLP's or a GPT's run: a GPT's rows are its documents, and its output on a query
 * document is the document's loss (the sum of its next-token losses, the seam's
 * per-example loss). Its output on each query (loss, or margin) is recorded in a
 * state file that is rewritten (temporary name, then rename) after every model, so a
 * killed run resumes where it stopped. A method's prediction for model k and query q is the sum
 * of its scores over S_k (−Σ for the loss: proponents lower it); the LDS is the
 * Spearman correlation over k of prediction and truth, averaged over queries.
 */
#define _XOPEN_SOURCE 700
#include <glob.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "core/comm.h"
#include "core/rng.h"
#include "models/mlp.h"
#include "models/model.h"
#include "models/train.h"
#include "store/store.h"
#include "estimators/stats.h"
#include "retrain.h"

infl_lds_options infl_lds_options_default(void) {
    infl_lds_options o;
    memset(&o, 0, sizeof o);
    o.models = 20;
    o.fraction = 0.5;
    return o;
}

void infl_lds_result_free(infl_lds_result *r) {
    if (!r) return;
    free(r->outputs);
    free(r->method);
    free(r->lds);
    free(r->ci);
    free(r->per_query);
    free(r->valid);
    free(r);
}

// ---- retraining ----

infl_status retrain_options(infl_ctx *ctx, infl_run *run, int epochs, infl_train_options *t) {
    const infl_model_spec *ms = store_run_spec(run);
    if (ms->kind == INFL_MODEL_GPT) {
        const infl_gpt_spec *g = &ms->gpt;
        *t = infl_train_options_gpt_default();
        t->nlayers = g->n_layer;
        t->heads = g->n_head;
        t->dim = g->dim;
        t->context = g->context;
        t->weight_decay = g->wd;
    } else {
        const infl_mlp_spec *s = &ms->mlp;
        *t = infl_train_options_default();
        t->nlayers = s->L;
        for (int l = 0; l <= s->L; l++) t->widths[l] = s->widths[l];
        t->activation = s->act;
        t->loss = s->loss;
        t->weight_decay = s->wd;
    }
    FORWARD_IF_ERROR(store_run_find_data(ctx, run, &t->data));
    double v;
    char sched[32];
    RETURN_IF(ctx, !store_run_get_f64(run, "train_epochs", &v), INFL_E_FORMAT,
              "%s: the run has no recorded training options (train_epochs ...): it was written by an older infl; "
              "train it again to use lds",
              store_run_path(run));
    RETURN_IF(ctx, epochs <= 0 && !(v >= 1 && v <= 1e6), INFL_E_FORMAT,
              "%s: attribute train_epochs is %g; expected 1 to 1000000", store_run_path(run), v);
    t->epochs = epochs > 0 ? epochs : (int)v;
    const char *opt = store_run_optimizer(run);
    t->optimizer = strcmp(opt, "newton") == 0 ? INFL_OPT_NEWTON : strcmp(opt, "sgd") == 0 ? INFL_OPT_SGD : INFL_OPT_AUTO;
    if (store_run_get_f64(run, "train_shard_rows", &v) && v >= 0 && v < 9e15) t->shard_rows = (int64_t)v;
    if (store_run_get_f64(run, "train_shard_mb", &v) && v > 0) t->shard_mb = v;
    if (store_run_get_f64(run, "train_batch", &v) && v >= 1 && v <= 1e9) t->batch = (int)v;
    if (store_run_get_f64(run, "train_lr", &v)) t->lr = v;
    if (store_run_get_f64(run, "train_momentum", &v)) t->momentum = v;
    if (store_run_get_f64(run, "train_tol", &v)) t->tol = v;
    if (store_run_get_f64(run, "train_max_iters", &v)) t->max_iters = (int)v;
    if (store_run_get_f64(run, "train_warmup", &v) && v >= 0 && v <= 1e9) t->warmup = (int)v;
    if (store_run_get_str(run, "train_schedule", sched, sizeof sched))
        t->schedule = strcmp(sched, "cosine") == 0 ? INFL_SCHED_COSINE : INFL_SCHED_CONSTANT;
    // AdamW's (the GPT's trainer records them)
    if (store_run_get_f64(run, "train_beta1", &v)) t->beta1 = v;
    if (store_run_get_f64(run, "train_beta2", &v)) t->beta2 = v;
    if (store_run_get_f64(run, "train_adam_eps", &v)) t->adam_eps = v;
    if (store_run_get_f64(run, "train_clip", &v)) t->clip = v;
    t->checkpoint_every = 0;
    t->force = 1;
    return INFL_OK;
}

infl_status retrain_mlp_outputs(infl_ctx *ctx, const char *run_path, const float *qx, const int32_t *qy,
                                     const float *qyf, int M, int64_t D, int64_t kt, int margin, double *out) {
    const infl_backend *be = ctx->be;
    infl_run *run = NULL;
    float *hp = NULL, *dW = NULL, *dX = NULL, *dyf = NULL, *hl = NULL, *hz = NULL;
    int32_t *dy = NULL;
    infl_mlp_work *w = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_run_open(ctx, run_path, &run));
    const infl_mlp_spec *s = &store_run_spec(run)->mlp;
    size_t P = infl_mlp_nparams(s);
    int K = s->widths[s->L], fin, B = M < 1024 ? M : 1024;
    CHECK(store_run_find(ctx, run, NULL, &fin));
    hp = infl_malloc(ctx, P * sizeof(float), "the parameters");
    hl = infl_malloc(ctx, (size_t)B * sizeof(float), "query losses");
    hz = infl_malloc(ctx, (size_t)B * K * sizeof(float), "query logits");
    GOTO_NOMEM_IF(!hp || !hl || !hz);
    CHECK(store_run_load(ctx, run, fin, hp));
    CHECK(infl_be_alloc_f(ctx, &dW, P, "the parameters"));
    CHECK(be->upload(ctx, dW, hp, P * sizeof(float)));
    CHECK(infl_be_alloc_f(ctx, &dX, (size_t)B * D, "queries"));
    if (kt)
        CHECK(infl_be_alloc_f(ctx, &dyf, (size_t)B * kt, "query targets"));
    else
        CHECK(be->alloc(ctx, (size_t)B * sizeof(int32_t), (void **)&dy));
    CHECK(infl_mlp_work_create(ctx, s, B, &w));
    for (int q0 = 0; q0 < M; q0 += B) {
        int b = q0 + B <= M ? B : M - q0;
        CHECK(be->upload(ctx, dX, qx + (size_t)q0 * D, (size_t)b * D * sizeof(float)));
        if (dy) CHECK(be->upload(ctx, dy, qy + q0, (size_t)b * sizeof(int32_t)));
        if (dyf) CHECK(be->upload(ctx, dyf, qyf + (size_t)q0 * kt, (size_t)b * kt * sizeof(float)));
        CHECK(infl_mlp_forward(ctx, dW, dX, b, w));
        CHECK(infl_mlp_loss(ctx, dy, dyf, w));
        CHECK(be->download(ctx, hl, w->loss, (size_t)b * sizeof(float)));
        CHECK(be->download(ctx, hz, w->Z[s->L - 1], (size_t)b * K * sizeof(float)));
        for (int i = 0; i < b; i++) {
            const float *z = hz + (size_t)i * K;
            if (!margin) {
                out[q0 + i] = hl[i];
            } else if (s->loss == INFL_LOSS_SIGMOID_CE) {
                out[q0 + i] = qy[q0 + i] ? z[0] : -z[0];
            } else {
                int y = qy[q0 + i];
                double best = -INFINITY;
                for (int j = 0; j < K; j++)
                    if (j != y && z[j] > best) best = z[j];
                out[q0 + i] = z[y] - best;
            }
            GOTO_IF(ctx, !isfinite(out[q0 + i]), INFL_E_NUMERIC, "%s: query %d: the output is not finite (diverged?)",
                    run_path, q0 + i);
        }
    }
done:
    infl_mlp_work_free(ctx, w);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    infl_be_free(ctx, dyf);
    free(hp);
    free(hl);
    free(hz);
    store_run_close(run);
    return rc;
}

// The queries' outputs (M, the documents of the split qs) at the final weights of a
// GPT run: each document's loss.
static infl_status gpt_query_outputs(infl_ctx *ctx, const char *run_path, infl_split *qs, double *out) {
    infl_run *run = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_run_open(ctx, run_path, &run));
    int fin;
    int64_t tokens, truncated;
    CHECK(store_run_find(ctx, run, NULL, &fin));
    CHECK(infl_gpt_split_losses(ctx, run, fin, qs, NULL, out, &tokens, &truncated));
    for (int64_t q = 0; q < store_split_info(qs)->n; q++)
        GOTO_IF(ctx, !isfinite(out[q]), INFL_E_NUMERIC, "%s: query %" PRId64 ": the loss is not finite (diverged?)",
                run_path, q);
done:
    store_run_close(run);
    return rc;
}

// ---- scoring the methods ----

// pred (models, M) = Σ_{i ∈ S_k} scores[q, i], streamed by columns; S_k the rows whose
// draw is below cut[k].
static infl_status predictions(infl_ctx *ctx, infl_scr *sc, int models, int M, int64_t N, int64_t begin,
                               const double *cut, uint64_t seed, double *pred) {
    const int64_t C = 4096;
    float *blk = infl_malloc(ctx, (size_t)M * C * sizeof(float), "a block of scores");
    if (!blk) return INFL_E_NOMEM;
    memset(pred, 0, (size_t)models * M * sizeof(double));
    infl_status rc = INFL_OK;
    for (int64_t c0 = 0; c0 < N; c0 += C) {
        int64_t n = c0 + C <= N ? C : N - c0;
        CHECK(store_scores_read_cols(ctx, sc, c0, n, blk));
        for (int64_t j = 0; j < n; j++)
            for (int k = 0; k < models; k++) {
                if (!(infl_rng_uniform(seed, INFL_RNG_SUBSET, (uint64_t)(begin + c0 + j), (uint32_t)k) < cut[k]))
                    continue;
                double *pk = pred + (size_t)k * M;
                for (int q = 0; q < M; q++) pk[q] += blk[(size_t)q * n + j];
            }
    }
done:
    free(blk);
    return rc;
}

// Two data references name the same rows: the same file (by its resolved path), split
// and first row; the row counts are compared by the caller (from the shapes).
static int same_rows(const char *a, const char *b) {
    infl_dataref ra, rb;
    infl_ctx scratch;
    memset(&scratch, 0, sizeof scratch);
    if (infl_dataref_parse(&scratch, a, &ra) != INFL_OK || infl_dataref_parse(&scratch, b, &rb) != INFL_OK) return 0;
    char pa[4096], pb[4096];
    if (!realpath(ra.path, pa) || !realpath(rb.path, pb)) return 0;
    return strcmp(pa, pb) == 0 && strcmp(ra.split, rb.split) == 0 && ra.begin == rb.begin;
}

static int same_file(const char *a, const char *b) {
    char pa[4096], pb[4096];
    return realpath(a, pa) && realpath(b, pb) && strcmp(pa, pb) == 0;
}

// (retrain.h)
void retrain_remove_files(const char *model) {
    unlink(model);
    char pat[4300];
    snprintf(pat, sizeof pat, "%s.tmp.*", model);
    glob_t g;
    if (glob(pat, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) unlink(g.gl_pathv[i]);
        globfree(&g);
    }
}

// "weights …, layers …, optimizer …" of the run's final checkpoint, its architecture
// and training options.
static infl_status fingerprint(infl_ctx *ctx, infl_run *run, const infl_train_options *t, char *buf, size_t size) {
    const infl_model_spec *ms = store_run_spec(run);
    const infl_mlp_spec *s = &ms->mlp;
    size_t P = infl_spec_nparams(ms);
    float *w = infl_malloc(ctx, P * sizeof(float), "the parameters");
    if (!w) return INFL_E_NOMEM;
    int fin;
    infl_status rc = store_run_find(ctx, run, NULL, &fin);
    if (rc == INFL_OK) rc = store_run_load(ctx, run, fin, w);
    if (rc == INFL_OK && ms->kind == INFL_MODEL_GPT) {
        const infl_gpt_spec *g = &ms->gpt;
        snprintf(buf, size,
                 "weights %016llx, gpt layers %d heads %d dim %d context %d vocab %d, batch %d, lr %g, wd %g, "
                 "schedule %d, warmup %d, betas %g,%g, eps %g, clip %g",
                 (unsigned long long)infl_weights_hash(w, P), g->n_layer, g->n_head, g->dim, g->context, g->vocab,
                 t->batch, t->lr, g->wd, (int)t->schedule, t->warmup, t->beta1, t->beta2, t->adam_eps, t->clip);
    } else if (rc == INFL_OK) {
        int at = snprintf(buf, size, "weights %016llx, layers", (unsigned long long)infl_weights_hash(w, P));
        for (int l = 0; l <= s->L && at < (int)size; l++) at += snprintf(buf + at, size - at, "%s%d", l ? "," : " ", s->widths[l]);
        if (at < (int)size)
            at += snprintf(buf + at, size - at, ", optimizer %d, batch %d, lr %g, momentum %g, wd %g, schedule %d",
                           (int)t->optimizer, t->batch, t->lr, t->momentum, s->wd, (int)t->schedule);
        // (only when there is one: the state files of runs without warm-up keep their fingerprint)
        if (t->warmup > 0 && at < (int)size) snprintf(buf + at, size - at, ", warmup %d", t->warmup);
    }
    free(w);
    return rc;
}

static infl_status lds_run(infl_ctx *ctx, const infl_lds_options *o, infl_lds_result **out);

infl_status infl_lds(infl_ctx *ctx, const infl_lds_options *o, infl_lds_result **out) {
    // every process leaves with the job's status (core/comm.h)
    infl_status rc = infl_comm_sync(ctx, lds_run(ctx, o, out));
    if (rc < 0) {
        infl_lds_result_free(*out);
        *out = NULL;
    }
    return rc;
}

static infl_status lds_run(infl_ctx *ctx, const infl_lds_options *o, infl_lds_result **out) {
    *out = NULL;
    RETURN_IF(ctx, !o->run || !*o->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, !o->query || !*o->query, INFL_E_ARG, "no queries given (--query FILE:/split[a:b])");
    RETURN_IF(ctx, !o->state || !*o->state, INFL_E_ARG, "no state file given (--state lds.h5)");
    RETURN_IF(ctx, o->models < 2, INFL_E_ARG, "--models: expected at least 2 (a correlation over models)");
    RETURN_IF(ctx, !(o->fraction > 0 && o->fraction < 1), INFL_E_ARG, "--fraction: expected a value in (0, 1)");
    RETURN_IF(ctx, o->nscores < 0 || (o->nscores > 0 && !o->scores), INFL_E_ARG, "scores files: bad list");
    infl_lds_result *res = infl_calloc(ctx, 1, sizeof *res, "the result");
    if (!res) return INFL_E_NOMEM;
    infl_run *run = NULL;
    infl_model *model = NULL;
    infl_split *qs = NULL, *train = NULL;
    infl_scr *sc = NULL;
    infl_lds_state st;
    memset(&st, 0, sizeof st);
    float *qx = NULL, *qyf = NULL;
    int32_t *qy = NULL;
    double *pred = NULL, *cut = NULL, *ra = NULL, *rb = NULL, *col = NULL, *tru = NULL;
    stats_pair *idx = NULL;
    int *pend = NULL;
    char tmprun[4200] = "";
    infl_status rc = INFL_OK;

    CHECK(store_run_open(ctx, o->run, &run));
    const infl_model_spec *ms = store_run_spec(run);
    const int gpt = ms->kind == INFL_MODEL_GPT;
    GOTO_IF(ctx, ms->kind != INFL_MODEL_MLP && !gpt, INFL_E_UNSUPPORTED,
            "%s: a %s run: lds retrains mlp and gpt runs", o->run, infl_model_kind_name(ms->kind));
    GOTO_IF(ctx, o->output_margin && gpt, INFL_E_ARG,
            "--output margin is a class margin; a gpt's output is a document's loss (use --output loss)");
    GOTO_IF(ctx, o->output_margin && ms->mlp.loss == INFL_LOSS_MSE, INFL_E_ARG,
            "--output margin needs class labels; this model's loss is mse (use --output loss)");
    infl_train_options to;
    CHECK(retrain_options(ctx, run, o->epochs, &to));
    to.subset_fraction = o->fraction;
    to.subset_seed = o->seed;
    infl_dataref ref;
    CHECK(infl_dataref_parse(ctx, to.data, &ref));
    CHECK(store_split_open(ctx, &ref, &train));
    const int64_t N = store_split_info(train)->n, tbegin = store_split_info(train)->begin;
    CHECK(infl_dataref_parse(ctx, o->query, &ref));
    CHECK(store_split_open(ctx, &ref, &qs));
    // the queries against the model, through the seam (a gpt's: documents of its tokenizer)
    CHECK(infl_model_create(ctx, ms, 0, &model));
    model->tokenizer = store_run_tokenizer(run);
    CHECK(infl_model_check_data(ctx, model, qs));
    const infl_split_info *qi = store_split_info(qs);
    GOTO_IF(ctx, qi->n > 100000, INFL_E_ARG, "%" PRId64 " queries; lds takes at most 100000", qi->n);
    const int M = (int)qi->n;
    const int64_t kt = qi->y_kind == INFL_Y_REAL ? qi->k : 0;
    if (!gpt) {
        // an MLP's queries are read once (a gpt's documents are read by each evaluation)
        qx = infl_malloc(ctx, (size_t)M * qi->d * sizeof(float), "the queries");
        GOTO_NOMEM_IF(!qx);
        if (kt) {
            qyf = infl_malloc(ctx, (size_t)M * kt * sizeof(float), "query targets");
            GOTO_NOMEM_IF(!qyf);
        } else {
            qy = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query labels");
            GOTO_NOMEM_IF(!qy);
        }
        CHECK(store_split_read(ctx, qs, 0, M, qx, qy, qyf));
        if (qy) CHECK(infl_model_check_labels(ctx, model, qs, qy, 0, M));
    }

    // the scores files first: a wrong one is found before hours of training
    for (int m = 0; m < o->nscores; m++) {
        CHECK(store_scores_open(ctx, o->scores[m], &sc));
        int sm;
        int64_t sn;
        store_scores_shape(sc, &sm, &sn);
        GOTO_IF(ctx, sm != M || sn != N, INFL_E_SHAPE,
                "%s: /scores is [%d, %" PRId64 "], but lds has %d queries (%s) and %" PRId64
                " training rows (%s)",
                o->scores[m], sm, sn, M, o->query, N, to.data);
        const char *sq = store_scores_attr(sc, "query"), *st = store_scores_attr(sc, "train"),
                   *sr = store_scores_attr(sc, "run");
        GOTO_IF(ctx, *sq && !same_rows(sq, o->query), INFL_E_ARG,
                "%s: the scores are for queries %s, not %s", o->scores[m], sq, o->query);
        GOTO_IF(ctx, *st && !same_rows(st, to.data), INFL_E_ARG,
                "%s: the scores are for training rows %s, but the run trains on %s", o->scores[m], st, to.data);
        GOTO_IF(ctx, *sr && !same_file(sr, o->run), INFL_E_ARG, "%s: the scores were made from run %s, not %s",
                o->scores[m], sr, o->run);
        store_scores_close(sc);
        sc = NULL;
    }

    // the state: resume or start
    snprintf(st.run, sizeof st.run, "%s", o->run);
    snprintf(st.query, sizeof st.query, "%s", o->query);
    st.models = o->models;
    st.M = M;
    st.fraction = o->fraction;
    st.seed = o->seed;
    st.output_margin = o->output_margin;
    st.epochs = to.epochs;
    CHECK(fingerprint(ctx, run, &to, st.fingerprint, sizeof st.fingerprint));
    // subsets of exactly round(fraction · N) rows (older state files drew each row alone:
    // their fingerprint lacks this and they are not resumed into the new subsets)
    snprintf(st.fingerprint + strlen(st.fingerprint), sizeof st.fingerprint - strlen(st.fingerprint),
             ", subsets of one size");
    cut = infl_malloc(ctx, (size_t)o->models * sizeof(double), "the subsets");
    GOTO_NOMEM_IF(!cut);
    for (int k = 0; k < o->models; k++) cut[k] = infl_subset_cut(o->seed, k, tbegin, N, o->fraction);
    st.outputs = infl_calloc(ctx, (size_t)o->models * M, sizeof(double), "the outputs");
    st.done = infl_calloc(ctx, (size_t)o->models, sizeof(int32_t), "the state");
    GOTO_NOMEM_IF(!st.outputs || !st.done);
    if (infl_comm_root(ctx)) {  // rank 0 keeps the state
        if (access(o->state, F_OK) == 0 && o->force) {
            // --force starts a state file afresh, but never overwrites another kind of file
            rc = store_lds_is_state(ctx, o->state);
            GOTO_IF(ctx, rc < 0, INFL_E_EXISTS, "%s exists and is not an lds state file; --force replaces only those",
                    o->state);
        }
        if (!o->force && access(o->state, F_OK) == 0) CHECK(store_lds_read(ctx, o->state, &st));
        else CHECK(store_lds_write(ctx, o->state, &st));
    }
    CHECK(infl_comm_bcast(ctx, st.done, (size_t)o->models * sizeof(int32_t)));
    // one model file per state (and process): a killed run's leftovers are removed when it resumes
    if (infl_comm_size(ctx) > 1)
        snprintf(tmprun, sizeof tmprun, "%s.model.%d.h5", o->state, infl_comm_rank(ctx));
    else
        snprintf(tmprun, sizeof tmprun, "%s.model.h5", o->state);
    retrain_remove_files(tmprun);

    // the models still to train, in rounds: in round j process r trains pend[j R + r], then
    // every process's outputs go to rank 0, which writes the state
    double t0 = infl_now();
    const int R = infl_comm_size(ctx), me = infl_comm_rank(ctx);
    int have = 0, npend = 0;
    pend = infl_malloc(ctx, (size_t)o->models * sizeof(int), "the models to train");
    GOTO_NOMEM_IF(!pend);
    for (int k = 0; k < o->models; k++) {
        if (st.done[k]) have++;
        else pend[npend++] = k;
    }
    for (int j0 = 0; j0 < npend; j0 += R) {
        int k = j0 + me < npend ? pend[j0 + me] : -1;
        char info[96];
        snprintf(info, sizeof info, "training model %d of %d on a %.0f%% subset", (k >= 0 ? k : pend[j0]) + 1,
                 o->models, 100 * o->fraction);
        infl_progress(ctx, "lds", (uint64_t)have, (uint64_t)o->models, info);
        if (k >= 0) {
            infl_train_options tk = to;
            tk.subset_draw = k;
            tk.subset_fraction = cut[k];  // exactly round(fraction · N) rows
            tk.seed = o->seed * 1000003ull + (uint64_t)k + 1;  // another initialisation and order per model
            infl_progress_fn saved = ctx->progress;  // the trainer's progress would replace ours
            ctx->progress = NULL;
            rc = infl_train(ctx, &tk, tmprun, NULL);
            ctx->progress = saved;
            CHECK(rc);
            double *out_k = st.outputs + (size_t)k * M;
            rc = gpt ? gpt_query_outputs(ctx, tmprun, qs, out_k)
                     : retrain_mlp_outputs(ctx, tmprun, qx, qy, qyf, M, qi->d, kt, o->output_margin, out_k);
            retrain_remove_files(tmprun);
            CHECK(rc);
        }
        // every process's model of the round (its row of outputs) to rank 0: all of them are done
        CHECK(infl_comm_gather_rows(ctx, st.outputs, (size_t)M * sizeof(double), k >= 0 ? k : 0, k >= 0, 1));
        int n = npend - j0 < R ? npend - j0 : R;
        for (int i = 0; i < n; i++) st.done[pend[j0 + i]] = 1;
        if (infl_comm_root(ctx)) CHECK(store_lds_write(ctx, o->state, &st));
        res->trained_now += n;
        have += n;
        infl_progress(ctx, "lds", (uint64_t)have, (uint64_t)o->models, info);
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED,
                "interrupted after %d of %d models; run the same command again to go on", have, o->models);
    }
    // every model's outputs (rank 0 holds them) to every process
    CHECK(infl_comm_bcast(ctx, st.outputs, (size_t)o->models * M * sizeof(double)));
    res->seconds_train = infl_now() - t0;
    res->models = o->models;
    res->M = M;
    res->outputs = st.outputs;
    st.outputs = NULL;

    // the methods
    res->nmethods = o->nscores;
    if (o->nscores > 0) {
        res->method = calloc((size_t)o->nscores, sizeof *res->method);
        res->lds = calloc((size_t)o->nscores, sizeof(double));
        res->ci = calloc((size_t)o->nscores, sizeof(double));
        res->per_query = calloc((size_t)o->nscores * M, sizeof(double));
        res->valid = calloc((size_t)o->nscores, sizeof(int));
        pred = infl_malloc(ctx, (size_t)o->models * M * sizeof(double), "predictions");
        ra = infl_malloc(ctx, (size_t)o->models * sizeof(double), "ranks");
        rb = infl_malloc(ctx, (size_t)o->models * sizeof(double), "ranks");
        col = infl_malloc(ctx, (size_t)o->models * sizeof(double), "a column");
        tru = infl_malloc(ctx, (size_t)o->models * sizeof(double), "a column");
        idx = infl_malloc(ctx, (size_t)o->models * sizeof(stats_pair), "ranks");
        GOTO_IF(ctx, !res->method || !res->lds || !res->ci || !res->per_query || !res->valid || !pred || !ra || !rb || !col || !tru ||
                         !idx,
                INFL_E_NOMEM, "out of memory");
    }
    for (int m = 0; m < o->nscores; m++) {
        CHECK(store_scores_open(ctx, o->scores[m], &sc));
        // the method, and sgd-influence's variant when it is not the full replay
        const char *variant = store_scores_attr(sc, "sgd_variant");
        snprintf(res->method[m], sizeof res->method[m], "%s%s%s",
                 *store_scores_attr(sc, "method") ? store_scores_attr(sc, "method") : o->scores[m],
                 *variant && strcmp(variant, "replay") != 0 ? " " : "",
                 *variant && strcmp(variant, "replay") != 0 ? variant : "");
        CHECK(predictions(ctx, sc, o->models, M, N, tbegin, cut, o->seed, pred));
        store_scores_close(sc);
        sc = NULL;
        double sum = 0, sum2 = 0;
        int valid = 0;
        for (int q = 0; q < M; q++) {
            for (int k = 0; k < o->models; k++) {
                // loss: proponents in the subset lower it (−Σ); margin: they raise it
                col[k] = (o->output_margin ? 1.0 : -1.0) * pred[(size_t)k * M + q];
                tru[k] = res->outputs[(size_t)k * M + q];
            }
            double r = stats_spearman(col, tru, o->models, ra, rb, idx);
            res->per_query[(size_t)m * M + q] = r;
            if (isfinite(r)) {
                sum += r;
                sum2 += r * r;
                valid++;
            }
        }
        res->valid[m] = valid;
        res->lds[m] = valid ? sum / valid : NAN;
        double var = valid > 1 ? (sum2 - sum * sum / valid) / (valid - 1) : NAN;
        res->ci[m] = valid > 1 ? 1.96 * sqrt(var > 0 ? var : 0) / sqrt((double)valid) : NAN;
    }
    *out = res;
    res = NULL;
done:
    if (tmprun[0]) retrain_remove_files(tmprun);
    store_scores_close(sc);
    store_split_close(qs);
    store_split_close(train);
    infl_model_free(model);
    store_run_close(run);
    free(st.outputs);
    free(st.done);
    free(qx);
    free(qy);
    free(qyf);
    free(pred);
    free(cut);
    free(ra);
    free(rb);
    free(col);
    free(tru);
    free(idx);
    free(pend);
    infl_lds_result_free(res);
    return rc;
}
