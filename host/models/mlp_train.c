/*
 * mlp_train.c — the MLP's trainers and its evaluation (the pipeline
 * pipelines/train.c opens the data and the run file and calls them): minibatch SGD
 * with momentum and weight decay over a split streamed in shards, checkpoints into a
 * run file; the convex case goes to the Newton optimiser (convex.c). Evaluation
 * streams a split through the forward pass.
 *
 * Shuffling without holding N: each epoch visits the shards in a random order and
 * shuffles the rows inside each shard, both from the counter-based generator keyed by
 * (seed, epoch, shard), so memory is bounded by the shard, and a split that fits in
 * one shard (the default budget holds Fashion-MNIST) gets a full shuffle.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "mlp.h"
#include "model.h"
#include "train.h"

// ---- shared checks ----

infl_status infl_check_data_for_model(infl_ctx *ctx, const infl_split *split, const infl_mlp_spec *spec) {
    const infl_split_info *in = store_split_info(split);
    const char *ref = store_split_ref(split);
    int dL = spec->widths[spec->L];
    RETURN_IF(ctx, in->d != spec->widths[0], INFL_E_SHAPE,
              "%s: rows have %" PRId64 " features but the model's input width is %d", ref, in->d, spec->widths[0]);
    if (spec->loss == INFL_LOSS_MSE) {
        RETURN_IF(ctx, in->y_kind != INFL_Y_REAL, INFL_E_SHAPE,
                  "%s: loss mse needs real targets (y float32 [N, %d]) but y holds class labels", ref, dL);
        RETURN_IF(ctx, in->k != dL, INFL_E_SHAPE, "%s: targets have width %" PRId64 " but the model has %d outputs",
                  ref, in->k, dL);
    } else {
        RETURN_IF(ctx, in->y_kind != INFL_Y_CLASS, INFL_E_SHAPE,
                  "%s: loss %s needs class labels (y int32 [N]) but y holds real targets", ref,
                  infl_loss_name(spec->loss));
        int outs = spec->loss == INFL_LOSS_SIGMOID_CE ? 2 : dL;
        RETURN_IF(ctx, in->n_classes > outs, INFL_E_SHAPE,
                  "%s: the data has %d classes but the model's %s output covers %d", ref, in->n_classes,
                  infl_loss_name(spec->loss), outs);
    }
    return INFL_OK;
}

infl_status infl_check_labels(infl_ctx *ctx, const infl_split *split, const infl_mlp_spec *spec,
                                const int32_t *y, int64_t row0, int64_t n) {
    if (spec->loss == INFL_LOSS_MSE) return INFL_OK;
    int hi = spec->loss == INFL_LOSS_SIGMOID_CE ? 2 : spec->widths[spec->L];
    for (int64_t i = 0; i < n; i++)
        RETURN_IF(ctx, y[i] < 0 || y[i] >= hi, INFL_E_VALUE,
                  "%s: row %" PRId64 ": label %d is out of range for a model with %d classes", store_split_ref(split),
                  store_split_info(split)->begin + row0 + i, (int)y[i], hi);
    return INFL_OK;
}

static infl_status check_options(infl_ctx *ctx, const infl_train_options *o, const infl_mlp_spec *spec) {
    FORWARD_IF_ERROR(infl_mlp_spec_check(ctx, spec));
    if (o->optimizer == INFL_OPT_NEWTON) {
        RETURN_IF(ctx, spec->L != 1, INFL_E_ARG,
                  "optimizer newton is for convex models (no hidden layer); this model has %d layers", spec->L);
    }
    RETURN_IF(ctx, !(o->tol > 0), INFL_E_ARG, "--tol: expected a value > 0");
    RETURN_IF(ctx, o->max_iters < 1, INFL_E_ARG, "--max-iters: expected at least 1");
    RETURN_IF(ctx, !(o->momentum >= 0 && o->momentum < 1), INFL_E_ARG, "--momentum: expected a value in [0, 1)");
    return INFL_OK;
}

// ---- SGD ----

static infl_status train_sgd(infl_ctx *ctx, const infl_train_options *o, const infl_mlp_spec *spec,
                             infl_split *split, infl_runw *rw, infl_train_report *rep) {
    const infl_backend *be = ctx->be;
    const infl_split_info *in = store_split_info(split);
    const int64_t n = in->n, d = in->d, k = in->y_kind == INFL_Y_REAL ? in->k : 0;
    int64_t S;
    int B;
    infl_sgd_shape(o, n, d, k, &S, &B);
    const size_t np = infl_mlp_nparams(spec);

    infl_status rc = INFL_OK;
    infl_sgd_walk wk;
    infl_model *m = NULL;
    infl_model_work *mw = NULL;
    float *hx = NULL, *hyf = NULL, *bx = NULL, *byf = NULL, *hp = NULL, *hloss = NULL;
    float *dX = NULL, *dyf = NULL, *dW = NULL, *dV = NULL, *dG = NULL;
    int32_t *hy = NULL, *by = NULL, *dy = NULL;
    // the walk over the minibatches (train.h): ceil(len / B) steps per shard and epoch
    FORWARD_IF_ERROR(infl_sgd_walk_init(ctx, &wk, o, in->begin, n, S, B, 0));
    const int64_t total = wk.total;

    hx = infl_malloc(ctx, (size_t)S * d * sizeof(float), "a training shard");
    bx = infl_malloc(ctx, (size_t)B * d * sizeof(float), "a minibatch");
    hp = infl_malloc(ctx, np * sizeof(float), "the parameters");
    hloss = infl_malloc(ctx, (size_t)B * sizeof(float), "batch losses");
    GOTO_NOMEM_IF(!hx || !bx || !hp || !hloss);
    if (k) {
        hyf = infl_malloc(ctx, (size_t)S * k * sizeof(float), "shard targets");
        byf = infl_malloc(ctx, (size_t)B * k * sizeof(float), "batch targets");
        GOTO_NOMEM_IF(!hyf || !byf);
        CHECK(infl_be_alloc_f(ctx, &dyf, (size_t)B * k, "batch targets"));
    } else {
        hy = infl_malloc(ctx, (size_t)S * sizeof(int32_t), "shard labels");
        by = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "batch labels");
        GOTO_NOMEM_IF(!hy || !by);
        CHECK(be->alloc(ctx, (size_t)B * sizeof(int32_t), (void **)&dy));
    }
    CHECK(infl_be_alloc_f(ctx, &dX, (size_t)B * d, "a minibatch"));
    CHECK(infl_be_alloc_f(ctx, &dW, np, "the parameters"));
    CHECK(infl_be_alloc_f(ctx, &dV, np, "the momentum"));
    CHECK(infl_be_alloc_f(ctx, &dG, np, "the gradient"));
    CHECK(infl_model_create(ctx, &(infl_model_spec){.kind = INFL_MODEL_MLP, .mlp = *spec}, 0, &m));
    CHECK(infl_model_work_create(ctx, m, B, &mw));

    infl_mlp_init(spec, o->seed, 0, hp);
    CHECK(be->upload(ctx, dW, hp, np * sizeof(float)));
    CHECK(be->fill(ctx, dV, 0.0f, np));

    double t0 = infl_now();
    int64_t last_ckpt = 0;
    double lr_sum = 0;  // Σ lr over the steps since the last checkpoint
    double epoch_loss = 0;
    int64_t epoch_seen = 0;
    int ep = -1;
    while (infl_sgd_walk_next(&wk)) {
        const int64_t step = wk.step;
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted at step %" PRId64, step);
        if (wk.ep != ep) {
            ep = wk.ep;
            epoch_loss = 0;
            epoch_seen = 0;
        }
        if (wk.fresh) {
            CHECK(store_split_read(ctx, split, wk.row0, wk.len, hx, hy, hyf));
            if (hy) CHECK(infl_check_labels(ctx, split, spec, hy, wk.row0, wk.len));
        }
        int nb = wk.nb;
        // gather the minibatch rows in shuffled order
        for (int i = 0; i < nb; i++) {
            int64_t r = infl_sgd_walk_row(&wk, i);
            memcpy(bx + (size_t)i * d, hx + (size_t)r * d, (size_t)d * sizeof(float));
            if (hy) by[i] = hy[r];
            if (hyf) memcpy(byf + (size_t)i * k, hyf + (size_t)r * k, (size_t)k * sizeof(float));
        }
        CHECK(be->upload(ctx, dX, bx, (size_t)nb * d * sizeof(float)));
        if (hy) CHECK(be->upload(ctx, dy, by, (size_t)nb * sizeof(int32_t)));
        if (hyf) CHECK(be->upload(ctx, dyf, byf, (size_t)nb * k * sizeof(float)));

        double lr = infl_train_lr(o, step, total);
        infl_batch bt = {.b = nb, .x = dX, .y = dy, .yf = dyf};
        CHECK(infl_sgd_step(ctx, m, mw, dW, dV, dG, &bt, nb, lr, o->momentum));
        CHECK(be->download(ctx, hloss, mw->loss, (size_t)nb * sizeof(float)));
        double bl = 0;
        for (int i = 0; i < nb; i++) bl += hloss[i];
        GOTO_IF(ctx, !isfinite(bl), INFL_E_NUMERIC,
                "training diverged at step %" PRId64 " (epoch %d): the loss is %s; lower --lr", step + 1, ep + 1,
                isnan(bl) ? "NaN" : "infinite");
        epoch_loss += bl;
        epoch_seen += nb;
        lr_sum += lr;

        bool last = step + 1 == total;
        if ((o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0) || last) {
            CHECK(be->download(ctx, hp, dW, np * sizeof(float)));
            double epoch = (double)ep + (double)(wk.ep_rows + wk.b0 + nb) / (double)wk.n_used;
            if (last) epoch = o->epochs;
            CHECK(store_run_add_checkpoint(ctx, rw, step + 1, epoch, lr_sum / (double)(step + 1 - last_ckpt), NAN,
                                           hp));
            rep->checkpoints++;
            last_ckpt = step + 1;
            lr_sum = 0;
        }
        if (((step + 1) & 15) == 0 || last) {
            char info[96];
            snprintf(info, sizeof info, "epoch %d/%d  loss %.4f", ep + 1, o->epochs, epoch_loss / (double)epoch_seen);
            infl_progress(ctx, "train", (uint64_t)(step + 1), (uint64_t)total, info);
        }
    }
    rep->seconds = infl_now() - t0;
    rep->steps = total;
    rep->examples_per_s = (double)wk.n_used * o->epochs / rep->seconds;
    rep->final_loss = epoch_loss / (double)epoch_seen;
    rep->grad_norm = NAN;
done:
    infl_sgd_walk_free(&wk);
    free(hx);
    free(hyf);
    free(hy);
    free(bx);
    free(byf);
    free(by);
    free(hp);
    free(hloss);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    infl_be_free(ctx, dyf);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dV);
    infl_be_free(ctx, dG);
    if (m) infl_model_work_free(ctx, m, mw);
    infl_model_free(m);
    return rc;
}

// ---- Newton (convex models) ----

static infl_status train_newton(infl_ctx *ctx, const infl_train_options *o, const infl_mlp_spec *spec,
                                infl_split *split, infl_runw *rw, infl_train_report *rep) {
    const infl_split_info *in = store_split_info(split);
    size_t np = infl_mlp_nparams(spec);
    RETURN_IF(ctx, !(spec->wd > 0), INFL_E_ARG,
              "optimizer newton needs --wd > 0 so that the objective is strictly convex (or use --optimizer sgd)");
    double *w = calloc(np, sizeof *w);
    float *hp = calloc(np, sizeof *hp);
    infl_status rc = INFL_OK;
    GOTO_IF(ctx, !w || !hp, INFL_E_NOMEM, "out of memory for %zu parameters", np);
    infl_convex_options co = {.tol = o->tol, .max_iters = o->max_iters, .subset = o,
                              .shard_rows = o->shard_rows > 0 ? o->shard_rows
                                                              : infl_shard_rows(in->n, in->d, in->k, o->shard_mb / 2, 1)};
    infl_convex_report cr;
    double t0 = infl_now();
    CHECK(infl_convex_fit(ctx, split, spec, NULL, 0, &co, w, &cr));
    rep->seconds = infl_now() - t0;
    for (size_t i = 0; i < np; i++) hp[i] = (float)w[i];
    CHECK(store_run_add_checkpoint(ctx, rw, cr.iters, 0.0, 0.0, cr.grad_norm, hp));
    rep->checkpoints = 1;
    rep->steps = cr.iters;
    rep->final_loss = cr.objective;
    rep->grad_norm = cr.grad_norm;
    rep->examples_per_s = NAN;
done:
    free(w);
    free(hp);
    return rc;
}

infl_status infl_mlp_train_plan(infl_ctx *ctx, const infl_train_options *o, infl_model_spec *spec,
                                const char **optimizer) {
    memset(spec, 0, sizeof *spec);
    spec->kind = INFL_MODEL_MLP;
    spec->mlp = (infl_mlp_spec){.L = o->nlayers, .act = o->activation, .loss = o->loss, .wd = o->weight_decay};
    memcpy(spec->mlp.widths, o->widths, sizeof spec->mlp.widths);
    FORWARD_IF_ERROR(check_options(ctx, o, &spec->mlp));
    int newton = o->optimizer == INFL_OPT_NEWTON || (o->optimizer == INFL_OPT_AUTO && spec->mlp.L == 1);
    *optimizer = newton ? "newton" : "sgd";
    return INFL_OK;
}

infl_status infl_mlp_train_run(infl_ctx *ctx, const infl_train_options *o, const infl_mlp_spec *spec,
                               const char *optimizer, infl_split *split, infl_runw *rw, infl_train_report *rep) {
    // the training options, so that the training can be repeated (infl lds)
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_momentum", o->momentum));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_tol", o->tol));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_max_iters", o->max_iters));
    if (strcmp(optimizer, "newton") == 0) return train_newton(ctx, o, spec, split, rw, rep);
    return train_sgd(ctx, o, spec, split, rw, rep);
}

// ---- evaluation ----

infl_status infl_mlp_eval(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, infl_eval_result *res) {
    const infl_backend *be = ctx->be;
    const infl_mlp_spec *spec = &store_run_spec(run)->mlp;
    infl_mlp_work *work = NULL;
    float *hp = NULL, *hx = NULL, *hyf = NULL, *hloss = NULL, *dW = NULL, *dX = NULL, *dyf = NULL;
    int32_t *hy = NULL, *hcor = NULL, *dy = NULL;
    infl_status rc = INFL_OK;
    const infl_split_info *in = store_split_info(split);
    const int64_t n = in->n, d = in->d, k = in->y_kind == INFL_Y_REAL ? in->k : 0;
    const int B = (int)(n < 4096 ? n : 4096);
    size_t np = infl_mlp_nparams(spec);

    hp = infl_malloc(ctx, np * sizeof(float), "the parameters");
    hx = infl_malloc(ctx, (size_t)B * d * sizeof(float), "a batch");
    hloss = infl_malloc(ctx, (size_t)B * sizeof(float), "losses");
    hcor = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "predictions");
    GOTO_NOMEM_IF(!hp || !hx || !hloss || !hcor);
    if (k) {
        hyf = infl_malloc(ctx, (size_t)B * k * sizeof(float), "targets");
        GOTO_NOMEM_IF(!hyf);
        CHECK(infl_be_alloc_f(ctx, &dyf, (size_t)B * k, "targets"));
    } else {
        hy = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "labels");
        GOTO_NOMEM_IF(!hy);
        CHECK(be->alloc(ctx, (size_t)B * sizeof(int32_t), (void **)&dy));
    }
    CHECK(store_run_load(ctx, run, ci, hp));
    CHECK(infl_be_alloc_f(ctx, &dW, np, "the parameters"));
    CHECK(infl_be_alloc_f(ctx, &dX, (size_t)B * d, "a batch"));
    CHECK(be->upload(ctx, dW, hp, np * sizeof(float)));
    CHECK(infl_mlp_work_create(ctx, spec, B, &work));

    double loss = 0;
    int64_t correct = 0;
    for (int64_t r0 = 0; r0 < n; r0 += B) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        int nb = (int)(r0 + B <= n ? B : n - r0);
        CHECK(store_split_read(ctx, split, r0, nb, hx, hy, hyf));
        if (hy) CHECK(infl_check_labels(ctx, split, spec, hy, r0, nb));
        CHECK(be->upload(ctx, dX, hx, (size_t)nb * d * sizeof(float)));
        if (hy) CHECK(be->upload(ctx, dy, hy, (size_t)nb * sizeof(int32_t)));
        if (hyf) CHECK(be->upload(ctx, dyf, hyf, (size_t)nb * k * sizeof(float)));
        CHECK(infl_mlp_forward(ctx, dW, dX, nb, work));
        CHECK(infl_mlp_loss(ctx, dy, dyf, work));
        CHECK(be->download(ctx, hloss, work->loss, (size_t)nb * sizeof(float)));
        CHECK(be->download(ctx, hcor, work->correct, (size_t)nb * sizeof(int32_t)));
        for (int i = 0; i < nb; i++) {
            loss += hloss[i];
            correct += hcor[i];
        }
        infl_progress(ctx, "eval", (uint64_t)(r0 + nb), (uint64_t)n, NULL);
    }
    res->n = n;
    res->loss = loss / (double)n;
    res->accuracy = spec->loss == INFL_LOSS_MSE ? NAN : (double)correct / (double)n;
    res->perplexity = NAN;
done:
    free(hp);
    free(hx);
    free(hy);
    free(hyf);
    free(hloss);
    free(hcor);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    infl_be_free(ctx, dyf);
    infl_mlp_work_free(ctx, work);
    return rc;
}
