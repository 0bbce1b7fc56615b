/*
 * train.c — `infl train` and `infl eval`: the pipelines that open the data and the run
 * file and hand the work to the model's own trainer or evaluator (models/train.h):
 * the MLP's SGD or Newton on feature rows, the GPT's AdamW on token documents. The
 * model is checked against the data through the seam (models/model.h); a run file
 * records the model spec, the training options (so that `infl lds` can repeat the
 * training) and, for a GPT, the documents' tokenizer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "models/train.h"
#include "store/store.h"

infl_train_options infl_train_options_default(void) {
    infl_train_options o;
    memset(&o, 0, sizeof o);
    o.model = INFL_MODEL_MLP;
    o.activation = INFL_ACT_RELU;
    o.loss = INFL_LOSS_SOFTMAX_CE;
    o.optimizer = INFL_OPT_AUTO;
    o.epochs = 5;
    o.batch = 128;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.weight_decay = 1e-4;
    o.schedule = INFL_SCHED_CONSTANT;
    o.seed = 1;
    o.checkpoint_every = 500;
    o.shard_mb = 256;
    o.tol = 1e-8;
    o.max_iters = 100;
    // the gpt's fields, for a caller that switches model to gpt (see below)
    o.heads = 4;
    o.dim = 128;
    o.context = 256;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.adam_eps = 1e-8;
    o.clip = 1.0;
    return o;
}

infl_train_options infl_train_options_gpt_default(void) {
    infl_train_options o = infl_train_options_default();
    o.model = INFL_MODEL_GPT;
    o.nlayers = 4;
    o.epochs = 1;
    o.batch = 32;
    o.lr = 1e-3;
    o.weight_decay = 0.1;
    o.schedule = INFL_SCHED_COSINE;
    o.warmup = 100;
    return o;
}

// The options every trainer takes, checked before the data is opened (each trainer
// then checks its own).
static infl_status check_common(infl_ctx *ctx, const infl_train_options *o) {
    RETURN_IF(ctx, o->model != INFL_MODEL_MLP && o->model != INFL_MODEL_GPT, INFL_E_ARG,
              "--model: expected mlp or gpt");
    RETURN_IF(ctx, !o->data || !*o->data, INFL_E_ARG, "no training data given (--data FILE:/split)");
    RETURN_IF(ctx, o->epochs < 1, INFL_E_ARG, "--epochs: expected at least 1, got %d", o->epochs);
    RETURN_IF(ctx, o->batch < 1, INFL_E_ARG, "--batch: expected at least 1, got %d", o->batch);
    RETURN_IF(ctx, o->shard_rows > 0 && o->shard_rows < o->batch, INFL_E_ARG,
              "--shard %lld is smaller than --batch %d: a shard must hold at least one batch (batches do not cross "
              "shards)",
              (long long)o->shard_rows, o->batch);
    RETURN_IF(ctx, !(o->lr > 0) || !isfinite(o->lr), INFL_E_ARG, "--lr: expected a finite value > 0");
    RETURN_IF(ctx, !(o->subset_fraction >= 0 && o->subset_fraction <= 1), INFL_E_ARG,
              "subset fraction: expected a value in [0, 1]");
    RETURN_IF(ctx, o->checkpoint_every < 0, INFL_E_ARG, "--checkpoint-every: expected 0 (final only) or more");
    RETURN_IF(ctx, o->nexclude < 0 || (o->nexclude > 0 && !o->exclude), INFL_E_ARG, "excluded rows: bad list");
    for (int64_t i = 1; i < o->nexclude; i++)
        RETURN_IF(ctx, o->exclude[i] <= o->exclude[i - 1], INFL_E_ARG,
                  "excluded rows: expected ascending distinct rows (entry %lld)", (long long)i);
    RETURN_IF(ctx, o->warmup < 0, INFL_E_ARG, "--warmup: expected 0 or more steps");
    RETURN_IF(ctx, o->shard_rows < 0 || !(o->shard_mb > 0), INFL_E_ARG, "shard size: expected a positive value");
    return INFL_OK;
}

// The training options every trainer records in the run (infl lds repeats them).
static infl_status record_options(infl_ctx *ctx, infl_runw *rw, const infl_train_options *o) {
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_epochs", o->epochs));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_batch", o->batch));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_lr", o->lr));
    FORWARD_IF_ERROR(
        store_run_attr_str(ctx, rw, "train_schedule", o->schedule == INFL_SCHED_COSINE ? "cosine" : "constant"));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_shard_rows", (double)o->shard_rows));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_shard_mb", o->shard_mb));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_warmup", o->warmup));
    // the float operations' order depends on it (BLAS threads): a bit-exact replay runs where it trained
    FORWARD_IF_ERROR(store_run_attr_str(ctx, rw, "train_backend", ctx->backend_desc));
    if (o->subset_fraction > 0) {
        FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "subset_fraction", o->subset_fraction));
        char sd[32];
        snprintf(sd, sizeof sd, "%llu", (unsigned long long)o->subset_seed);
        FORWARD_IF_ERROR(store_run_attr_str(ctx, rw, "subset_seed", sd));
        FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "subset_draw", o->subset_draw));
    }
    if (o->nexclude > 0) FORWARD_IF_ERROR(store_run_write_rows(ctx, rw, "train_excluded", o->exclude, o->nexclude));
    return INFL_OK;
}

infl_status infl_train(infl_ctx *ctx, const infl_train_options *o, const char *out_path, infl_train_report *rep) {
    infl_train_report dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof *rep);
    RETURN_IF(ctx, !o, INFL_E_ARG, "infl_train: no options");
    FORWARD_IF_ERROR(check_common(ctx, o));
    infl_dataref ref;
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, o->data, &ref));
    infl_split *split = NULL;
    infl_runw *rw = NULL;
    infl_model *m = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_split_open(ctx, &ref, &split));
    infl_model_spec spec;
    const char *optimizer = NULL;
    if (o->model == INFL_MODEL_MLP)
        CHECK(infl_mlp_train_plan(ctx, o, &spec, &optimizer));
    else
        CHECK(infl_gpt_train_plan(ctx, o, store_split_tokenizer(split), &spec, &optimizer));
    // the model against the data, through the seam
    CHECK(infl_model_create(ctx, &spec, 0, &m));
    m->tokenizer = store_split_tokenizer(split);
    CHECK(infl_model_check_data(ctx, m, split));
    CHECK(store_run_create(ctx, out_path, o->force, &spec, o->data, optimizer, o->seed, &rw));
    if (spec.kind == INFL_MODEL_GPT) CHECK(store_run_set_tokenizer(ctx, rw, store_split_tokenizer(split)));
    CHECK(record_options(ctx, rw, o));
    if (spec.kind == INFL_MODEL_MLP)
        rc = infl_mlp_train_run(ctx, o, &spec.mlp, optimizer, split, rw, rep);
    else
        rc = infl_gpt_train_run(ctx, o, &spec.gpt, split, rw, rep);
    if (rc == INFL_E_NUMERIC && rep->diverged && rep->checkpoints > 0) {
        // keep the checkpoints before the divergence, and still report it
        char why[sizeof ctx->detail];
        snprintf(why, sizeof why, "%s", ctx->detail);
        infl_status cr = store_run_commit(ctx, rw);
        rw = NULL;
        if (cr < 0) infl_errprefix(ctx, "%s; and committing the checkpoints before it failed", why);
        else infl_seterr(ctx, INFL_E_NUMERIC, "%s", why);
        goto done;
    }
    CHECK(rc);
    rc = store_run_commit(ctx, rw);
    rw = NULL;
done:
    store_run_abort(rw);
    infl_model_free(m);
    store_split_close(split);
    return rc;
}

// A captured model's mean loss over a split at checkpoint ci: the losses recorded with the
// capture, read a block at a time (no forward pass: the model ran elsewhere).
static infl_status captured_eval(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, infl_eval_result *res) {
    const infl_split_info *in = store_split_info(split);
    const char *ck = store_run_checkpoint(run, ci)->name;
    enum { BLOCK = 65536 };
    float *v = infl_malloc(ctx, BLOCK * sizeof(float), "captured losses");
    if (!v) return INFL_E_NOMEM;
    double sum = 0;
    infl_status rc = INFL_OK;
    for (int64_t r = 0; r < in->n && rc == INFL_OK; r += BLOCK) {
        int64_t n = in->n - r < BLOCK ? in->n - r : BLOCK;
        rc = store_captured_loss(ctx, split, ck, r, n, v);
        for (int64_t i = 0; rc == INFL_OK && i < n; i++) sum += v[i];
    }
    free(v);
    res->n = in->n;
    res->loss = in->n ? sum / (double)in->n : NAN;
    res->accuracy = NAN;  // no predictions were captured
    res->perplexity = NAN;
    return rc;
}

infl_status infl_eval(infl_ctx *ctx, const char *run_path, const char *checkpoint, const char *data,
                      infl_eval_result *res) {
    memset(res, 0, sizeof *res);
    infl_run *run = NULL;
    infl_split *split = NULL;
    infl_model *m = NULL;
    infl_dataref ref;
    infl_status rc = INFL_OK;
    CHECK(infl_dataref_parse(ctx, data, &ref));
    CHECK(store_run_open(ctx, run_path, &run));
    int ci;
    CHECK(store_run_find(ctx, run, checkpoint, &ci));
    CHECK(store_split_open(ctx, &ref, &split));
    CHECK(infl_model_create(ctx, store_run_spec(run), 0, &m));
    m->tokenizer = store_run_tokenizer(run);
    CHECK(infl_model_check_data(ctx, m, split));
    if (m->spec.kind == INFL_MODEL_CAPTURED)
        CHECK(captured_eval(ctx, run, ci, split, res));
    else if (m->spec.kind == INFL_MODEL_GPT)
        CHECK(infl_gpt_eval(ctx, run, ci, split, res));
    else
        CHECK(infl_mlp_eval(ctx, run, ci, split, res));
done:
    infl_model_free(m);
    store_split_close(split);
    store_run_close(run);
    return rc;
}
