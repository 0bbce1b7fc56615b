/*
 * sgdinf.c — SGD-influence (Hara, Nitanda and Maehara 2019, "Data cleansing for models
 * trained with SGD") for the MLP's trainer, SGD with momentum, through the model seam:
 * the run's trajectory replayed backwards with minibatch Hessian-vector products.
 *
 * The trainer (models/mlp_train.c) takes, at step t with batch B_t of nb_t rows,
 *     g_t = (1/nb_t) Σ_{i∈B_t} ∇ℓ_i(w_t) + wd w_t,   v_{t+1} = μ v_t + g_t,   w_{t+1} = w_t − η_t v_{t+1},
 * from v_0 = 0 and the seeded w_0. Leaving z out of its batches (each keeping its
 * divisor nb_t: Hara et al.'s counterfactual) removes c_t = [z∈B_t] ∇ℓ_z(w_t)/nb_t from
 * g_t. To first order the deviations (δw, δv) of the counterfactual run follow
 *     δv_{t+1} = μ δv_t + H_t δw_t − c_t,   δw_{t+1} = δw_t − η_t δv_{t+1},
 * H_t the Hessian of the step's objective (1/nb_t) Σ_{B_t} ℓ_i + wd/2 |w|² at w_t, and
 * the query's loss changes by ∇L_q(w_T)·δw_T. Apply the transposed map backwards with
 * the adjoint (u, u_v), u_T = ∇L_q(w_T), u_v,T = 0: step t contributes (η_t u_{t+1} −
 * u_v,t+1)·c_t, and
 *     u_t = u_{t+1} − H_t r_t,   u_v,t = −μ r_t,   with r_t = η_t u_{t+1} − u_v,t+1,
 * so one vector r suffices: r_t = η_t u_{t+1} + μ r_{t+1} (r_T = 0). With μ = 0 this is
 * Hara et al.'s u ← (I − η_t H_t) u and η_t/nb_t u·∇ℓ_z. The change of the query's loss
 * when z is left out is Σ_{t: z∈B_t} r_t·∇ℓ_z(w_t)/nb_t; the score is n times it (n the
 * rows trained on): DESIGN.md's convention, removing z changes the loss by +score/n,
 * positive = proponent, as `infl lds` reads scores. It is exact when the steps are
 * affine (a linear model with the squared loss) and first order otherwise.
 *
 * Per step and query: one minibatch HVP (exact by the R-operator, or Gauss-Newton) and
 * the contraction of r with the batch's per-example gradients (the if/ekfac kernel);
 * the queries are all carried at once: memory 3 M P floats.
 *
 * The parameters w_t, backwards (variant 0, the full replay). The trainer is
 * deterministic (its batches come from the seed: models/train.h infl_sgd_walk; its step
 * is infl_sgd_step), so w_t is replayed from w_0: a first pass keeps (w, v) at every
 * segment's start (host, 2P floats each) and compares the weights with each checkpoint
 * of the run (the replay must reproduce them: bit-exact on the same build, backend and
 * thread count); then, segment by segment from the last, the segment is replayed again
 * keeping every step's w_t (backend, K P floats for K steps) and walked backwards.
 * Two forward passes of the training in all; memory (T/K + K) P, least at K ≈ √T.
 * Nothing beyond what the run records (options, seed, data) is needed.
 *
 * The checkpoints-only variant (1) replays nothing: step t takes the parameters of the
 * nearest checkpoint (or the seeded initial weights), so the per-step Hessians and
 * gradients are those of a nearby point of the trajectory. It needs no per-step memory
 * and no bit-exact replay (another machine, another thread count), but as many HVPs.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "models/mlp.h"
#include "models/train.h"
#include "retrain.h"
#include "sgdinf.h"

// ---- the replay: the trainer's batches and steps again ----

typedef struct {
    int64_t row0, len;  // the step's shard: rows [row0, row0 + len) of the range
    int nb;             // its batch's rows
} step_rec;

typedef struct {
    infl_train_options to;
    const infl_model *m;
    infl_model_work *mw;       // the step's forward/backward (B rows)
    infl_split *train;         // borrowed
    int64_t n, D, K;           // rows, features, real-target width (0: class labels)
    int64_t S, T;              // rows per shard, steps
    int B;
    float *hx, *hyf;           // (S, D), (S, K) host: the shard held
    int32_t *hy;               // (S)
    int64_t sh_row0, sh_len;   // the shard held (len 0: none)
    float *bx, *byf;           // (B, D), (B, K) host batch
    int32_t *by;
    float *dX, *dyf;           // the batch on the backend
    int32_t *dy;
    float *G, *G2;             // (P) backend: the step's gradient; the listed rows' part (weight != 0)
    const int64_t *exclude;    // (nexclude) rows weighted by `weight` (ascending), the counterfactual
    int64_t nexclude;
    double weight;             // their weight in their batches: 0 leaves them out
} replay;

static void replay_free(infl_ctx *ctx, replay *rp) {
    if (rp->m) infl_model_work_free(ctx, rp->m, rp->mw);
    free(rp->hx);
    free(rp->hyf);
    free(rp->hy);
    free(rp->bx);
    free(rp->byf);
    free(rp->by);
    infl_be_free(ctx, rp->dX);
    infl_be_free(ctx, rp->dyf);
    infl_be_free(ctx, rp->dy);
    infl_be_free(ctx, rp->G);
    infl_be_free(ctx, rp->G2);
    memset(rp, 0, sizeof *rp);
}

// The run's training options, checked for a replay: an MLP trained by SGD, with its
// options recorded (retrain.h), its seed and subset. Errors name the run and what is missing.
static infl_status replay_options(infl_ctx *ctx, infl_run *run, infl_train_options *to) {
    const char *path = store_run_path(run);
    const infl_model_spec *ms = store_run_spec(run);
    RETURN_IF(ctx, ms->kind != INFL_MODEL_MLP, INFL_E_UNSUPPORTED,
              "%s: a %s run: sgd-influence replays the MLP's SGD trainer (a gpt is trained by AdamW); use "
              "--method tracin or ekfac",
              path, infl_model_kind_name(ms->kind));
    RETURN_IF(ctx, strcmp(store_run_optimizer(run), "sgd") != 0, INFL_E_UNSUPPORTED,
              "%s: the run was trained by %s, not SGD: it has no SGD trajectory to replay; train it with "
              "--optimizer sgd, or use --method if",
              path, *store_run_optimizer(run) ? store_run_optimizer(run) : "an unrecorded optimizer");
    double v;
    const char *need[] = {"train_epochs", "train_batch", "train_lr", "train_momentum", "train_schedule"};
    for (int i = 0; i < 5; i++) {
        char buf[32];
        RETURN_IF(ctx, !store_run_get_f64(run, need[i], &v) && !store_run_get_str(run, need[i], buf, sizeof buf),
                  INFL_E_FORMAT,
                  "%s: the run does not record %s, which a replay of its training needs (with train_epochs, "
                  "train_batch, train_lr, train_momentum, train_schedule): it was written by an older infl; train "
                  "it again to use sgd-influence",
                  path, need[i]);
    }
    FORWARD_IF_ERROR(retrain_options(ctx, run, 0, to));
    to->seed = store_run_seed(run);
    // a run trained on a seeded subset (lds's models) walks the subset's rows
    char buf[32];
    if (store_run_get_f64(run, "subset_fraction", &v) && v > 0 && v <= 1) {
        to->subset_fraction = v;
        if (store_run_get_str(run, "subset_seed", buf, sizeof buf)) to->subset_seed = strtoull(buf, NULL, 10);
        if (store_run_get_f64(run, "subset_draw", &v)) to->subset_draw = (int)v;
    }
    return INFL_OK;
}

// Opens the replay of a run's training on its data split `train` (the run's own).
static infl_status replay_open(infl_ctx *ctx, replay *rp, infl_run *run, const infl_model *m, infl_split *train) {
    memset(rp, 0, sizeof *rp);
    FORWARD_IF_ERROR(replay_options(ctx, run, &rp->to));
    const infl_split_info *in = store_split_info(train);
    rp->m = m;
    rp->train = train;
    rp->n = in->n;
    rp->D = in->d;
    rp->K = in->y_kind == INFL_Y_REAL ? in->k : 0;
    infl_sgd_shape(&rp->to, rp->n, rp->D, rp->K, &rp->S, &rp->B);
    infl_sgd_walk wk;
    FORWARD_IF_ERROR(infl_sgd_walk_init(ctx, &wk, &rp->to, in->begin, rp->n, rp->S, rp->B, 0));
    rp->T = wk.total;
    infl_sgd_walk_free(&wk);
    // the run's last checkpoint must be its last step (a run stopped early has another trajectory)
    const infl_ckpt_info *fin = store_run_checkpoint(run, store_run_ncheckpoints(run) - 1);
    RETURN_IF(ctx, fin->step != rp->T, INFL_E_FORMAT,
              "%s: the last checkpoint is step %" PRId64 " but the recorded training (%d epochs of batches of %d "
              "over %s) takes %" PRId64 " steps: the run's steps cannot be replayed (a run stopped early?)",
              store_run_path(run), fin->step, rp->to.epochs, rp->to.batch, store_split_ref(train), rp->T);
    // batch buffers of 2B rows: a weighted counterfactual puts the batch's listed rows after it
    size_t S = (size_t)rp->S, B = 2 * (size_t)rp->B;
    infl_status rc = INFL_OK;
    rp->hx = infl_malloc(ctx, S * rp->D * sizeof(float), "a training shard");
    rp->bx = infl_malloc(ctx, B * rp->D * sizeof(float), "a minibatch");
    GOTO_NOMEM_IF(!rp->hx || !rp->bx);
    if (rp->K) {
        rp->hyf = infl_malloc(ctx, S * rp->K * sizeof(float), "shard targets");
        rp->byf = infl_malloc(ctx, B * rp->K * sizeof(float), "batch targets");
        GOTO_NOMEM_IF(!rp->hyf || !rp->byf);
        CHECK(infl_be_alloc_f(ctx, &rp->dyf, B * rp->K, "batch targets"));
    } else {
        rp->hy = infl_malloc(ctx, S * sizeof(int32_t), "shard labels");
        rp->by = infl_malloc(ctx, B * sizeof(int32_t), "batch labels");
        GOTO_NOMEM_IF(!rp->hy || !rp->by);
        CHECK(ctx->be->alloc(ctx, B * sizeof(int32_t), (void **)&rp->dy));
    }
    CHECK(infl_be_alloc_f(ctx, &rp->dX, B * rp->D, "a minibatch"));
    CHECK(infl_be_alloc_f(ctx, &rp->G, m->nparams, "the gradient"));
    CHECK(infl_be_alloc_f(ctx, &rp->G2, m->nparams, "the gradient"));
    CHECK(infl_model_work_create(ctx, m, rp->B, &rp->mw));
    return INFL_OK;
done:
    replay_free(ctx, rp);
    return rc;
}

static int excluded(const replay *rp, int64_t row) {
    int64_t lo = 0, hi = rp->nexclude;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (rp->exclude[mid] < row) lo = mid + 1;
        else hi = mid;
    }
    return lo < rp->nexclude && rp->exclude[lo] == row;
}

// The batch of a step (its shard and the rows' offsets in it) on the backend: *bt.
// Listed rows (rp->exclude): with weight 0 they are left out (bt->b the rows kept);
// else the batch is whole and *bl holds its listed rows again (bl->b of them, 0 when
// none). Reads the shard when another is held.
static infl_status replay_batch(infl_ctx *ctx, replay *rp, const step_rec *sr, const int64_t *rows, infl_batch *bt,
                                infl_batch *bl) {
    const infl_backend *be = ctx->be;
    if (rp->sh_len != sr->len || rp->sh_row0 != sr->row0) {
        rp->sh_len = 0;
        FORWARD_IF_ERROR(store_split_read(ctx, rp->train, sr->row0, sr->len, rp->hx, rp->hy, rp->hyf));
        if (rp->hy) FORWARD_IF_ERROR(infl_model_check_labels(ctx, rp->m, rp->train, rp->hy, sr->row0, sr->len));
        rp->sh_row0 = sr->row0;
        rp->sh_len = sr->len;
    }
    const int64_t d = rp->D, k = rp->K;
    int b = 0, nl = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < sr->nb; i++) {
            int64_t r = rows[i];
            int listed = rp->nexclude && excluded(rp, sr->row0 + r);
            // pass 0: the batch (without its listed rows for weight 0); pass 1: the listed rows again
            if (pass == 0 ? listed && rp->weight == 0 : !listed || rp->weight == 0) continue;
            memcpy(rp->bx + (size_t)b * d, rp->hx + (size_t)r * d, (size_t)d * sizeof(float));
            if (rp->hy) rp->by[b] = rp->hy[r];
            if (rp->hyf) memcpy(rp->byf + (size_t)b * k, rp->hyf + (size_t)r * k, (size_t)k * sizeof(float));
            b++;
            nl += pass;
        }
    if (b > 0) {
        FORWARD_IF_ERROR(be->upload(ctx, rp->dX, rp->bx, (size_t)b * d * sizeof(float)));
        if (rp->hy) FORWARD_IF_ERROR(be->upload(ctx, rp->dy, rp->by, (size_t)b * sizeof(int32_t)));
        if (rp->hyf) FORWARD_IF_ERROR(be->upload(ctx, rp->dyf, rp->byf, (size_t)b * k * sizeof(float)));
    }
    int b0 = b - nl;
    *bt = (infl_batch){.b = b0, .x = rp->dX, .y = rp->dy, .yf = rp->dyf};
    *bl = (infl_batch){.b = nl,
                       .x = rp->dX + (size_t)b0 * d,
                       .y = rp->dy ? rp->dy + b0 : NULL,
                       .yf = rp->dyf ? rp->dyf + (size_t)b0 * k : NULL};
    return INFL_OK;
}

// Comparing the replay with the run's checkpoints.
typedef struct {
    infl_run *run;
    float *hw, *hc;   // (P) host
    int next;         // the next checkpoint to compare (by step)
    double dev;       // the largest relative difference so far
} replay_check;

static infl_status check_step(infl_ctx *ctx, replay_check *ck, size_t P, int64_t step, const float *W) {
    if (!ck) return INFL_OK;
    while (ck->next < store_run_ncheckpoints(ck->run) && store_run_checkpoint(ck->run, ck->next)->step < step)
        ck->next++;
    if (ck->next >= store_run_ncheckpoints(ck->run) || store_run_checkpoint(ck->run, ck->next)->step != step)
        return INFL_OK;
    FORWARD_IF_ERROR(ctx->be->download(ctx, ck->hw, W, P * sizeof(float)));
    FORWARD_IF_ERROR(store_run_load(ctx, ck->run, ck->next, ck->hc));
    double dd = 0, cc = 0;
    for (size_t i = 0; i < P; i++) {
        double e = (double)ck->hw[i] - ck->hc[i];
        dd += e * e;
        cc += (double)ck->hc[i] * ck->hc[i];
    }
    double rel = cc > 0 ? sqrt(dd / cc) : sqrt(dd);
    if (rel > ck->dev) ck->dev = rel;
    if (rel <= 1e-3) return INFL_OK;
    char trained[256] = "";
    int known = store_run_get_str(ck->run, "train_backend", trained, sizeof trained);
    return infl_seterr(ctx, INFL_E_NUMERIC,
                       "%s: the replay of the training from its seed does not reproduce checkpoint %s (relative "
                       "difference %.3g > 1e-3): %s%s%s%s%sthe training data changed, or another build or backend "
                       "trained it; replay where it was trained (--threads N), or use --sgd-variant checkpoints (no "
                       "replay)",
                       store_run_path(ck->run), store_run_checkpoint(ck->run, ck->next)->name, rel,
                       known ? "it was trained on " : "", known ? trained : "", known ? " and replays on " : "",
                       known ? ctx->backend_desc : "", known ? "; or " : "");
    return INFL_OK;
}

// Steps [t0, t1) of the walk: each step's shard and rows into rec (t1 − t0) and rows
// ((t1 − t0) B); with W (and V, backend) also takes the steps from (W, V) at t0,
// keeping W before step t at Wseg + (t − t0) P when Wseg is given, and comparing the
// weights with the run's checkpoints when ck is.
static infl_status replay_steps(infl_ctx *ctx, replay *rp, int64_t t0, int64_t t1, float *W, float *V, float *Wseg,
                                step_rec *rec, int64_t *rows, replay_check *ck) {
    const size_t P = rp->m->nparams;
    infl_sgd_walk wk;
    FORWARD_IF_ERROR(infl_sgd_walk_init(ctx, &wk, &rp->to, store_split_info(rp->train)->begin, rp->n, rp->S, rp->B, t0));
    infl_status rc = INFL_OK;
    step_rec one;
    int64_t *orows = rows ? NULL : malloc((size_t)rp->B * sizeof(int64_t));
    GOTO_IF(ctx, !rows && !orows, INFL_E_NOMEM, "out of memory");
    for (int64_t t = t0; t < t1 && infl_sgd_walk_next(&wk); t++) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted at step %" PRId64 " of the replay", t);
        step_rec *sr = rec ? &rec[t - t0] : &one;
        int64_t *rr = rows ? rows + (size_t)(t - t0) * rp->B : orows;
        *sr = (step_rec){.row0 = wk.row0, .len = wk.len, .nb = wk.nb};
        for (int i = 0; i < wk.nb; i++) rr[i] = infl_sgd_walk_row(&wk, i);
        if (!W) continue;
        if (Wseg) CHECK(ctx->be->copy(ctx, Wseg + (size_t)(t - t0) * P, W, P * sizeof(float)));
        infl_batch bt, bl;
        CHECK(replay_batch(ctx, rp, sr, rr, &bt, &bl));
        double lr = infl_train_lr(&rp->to, t, rp->T);
        if (bl.b == 0) {
            CHECK(infl_sgd_step(ctx, rp->m, rp->mw, W, V, rp->G, &bt, sr->nb, lr, rp->to.momentum));
        } else {
            // G = (1/nb) Σ_batch ∇ℓ_i + ((weight − 1)/nb) Σ_listed ∇ℓ_i, then the trainer's update
            CHECK(infl_model_forward(ctx, rp->m, W, &bt, rp->mw));
            CHECK(infl_model_backward(ctx, rp->m, W, &bt, NULL, rp->mw, rp->G, 1.0f / (float)sr->nb));
            CHECK(infl_model_forward(ctx, rp->m, W, &bl, rp->mw));
            CHECK(infl_model_backward(ctx, rp->m, W, &bl, NULL, rp->mw, rp->G2,
                                      (float)((rp->weight - 1.0) / (double)sr->nb)));
            CHECK(ctx->be->axpby(ctx, rp->G, rp->G2, 1.0f, 1.0f, rp->m->nparams));
            CHECK(ctx->be->sgd_step(ctx, W, V, rp->G, (float)lr, (float)rp->to.momentum, (float)rp->m->wd,
                                    rp->m->nparams));
        }
        CHECK(check_step(ctx, ck, P, t + 1, W));
    }
done:
    free(orows);
    infl_sgd_walk_free(&wk);
    return rc;
}

// W, V (backend) = the trainer's start: the seeded weights, no velocity.
static infl_status replay_start(infl_ctx *ctx, const replay *rp, float *W, float *V) {
    size_t P = rp->m->nparams;
    float *h = infl_malloc(ctx, P * sizeof(float), "the parameters");
    if (!h) return INFL_E_NOMEM;
    infl_mlp_init(&rp->m->spec.mlp, rp->to.seed, 0, h);
    infl_status rc = ctx->be->upload(ctx, W, h, P * sizeof(float));
    free(h);
    FORWARD_IF_ERROR(rc);
    return ctx->be->fill(ctx, V, 0.0f, P);
}

// ---- the counterfactual ----

infl_status infl_sgd_counterfactual(infl_ctx *ctx, const char *run_path, const int64_t *exclude, int64_t nexclude,
                                    double weight, float *params) {
    infl_run *run = NULL;
    infl_model *m = NULL;
    infl_split *train = NULL;
    replay rp;
    memset(&rp, 0, sizeof rp);
    float *W = NULL, *V = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_run_open(ctx, run_path, &run));
    CHECK(infl_model_create(ctx, store_run_spec(run), 0, &m));
    infl_dataref ref;
    const char *data;
    CHECK(store_run_find_data(ctx, run, &data));
    CHECK(infl_dataref_parse(ctx, data, &ref));
    CHECK(store_split_open(ctx, &ref, &train));
    CHECK(infl_model_check_data(ctx, m, train));
    CHECK(replay_open(ctx, &rp, run, m, train));
    for (int64_t i = 0; i < nexclude; i++)
        GOTO_IF(ctx, exclude[i] < 0 || exclude[i] >= rp.n || (i > 0 && exclude[i] <= exclude[i - 1]), INFL_E_ARG,
                "rows left out: expected ascending rows within the %" PRId64 " of %s", rp.n, store_split_ref(train));
    GOTO_IF(ctx, !isfinite(weight), INFL_E_ARG, "the rows' weight must be finite");
    rp.exclude = exclude;
    rp.nexclude = nexclude;
    rp.weight = weight;
    CHECK(infl_be_alloc_f(ctx, &W, m->nparams, "the parameters"));
    CHECK(infl_be_alloc_f(ctx, &V, m->nparams, "the momentum"));
    CHECK(replay_start(ctx, &rp, W, V));
    CHECK(replay_steps(ctx, &rp, 0, rp.T, W, V, NULL, NULL, NULL, NULL));
    CHECK(ctx->be->download(ctx, params, W, m->nparams * sizeof(float)));
done:
    infl_be_free(ctx, W);
    infl_be_free(ctx, V);
    replay_free(ctx, &rp);
    store_split_close(train);
    infl_model_free(m);
    store_run_close(run);
    return rc;
}

// ---- the backward pass ----

typedef struct {
    attrib *a;
    replay rp;
    infl_hvp *op;     // minibatch HVPs
    float *R, *HR;    // (M, P) backend; u is a->V
    double *acc;      // (M, N) host: Σ_t r_t·∇ℓ_z(w_t) / nb_t
    float *hsub;      // (M, B) host
    float **Wck;      // checkpoints variant: (nck + 1) the parameters of each checkpoint, and the initial ones
    int64_t *ck_step; // (nck + 1) their steps
    int nck;
    float *W0;        // the initial weights (checkpoints variant)
} sgdinf;

// The checkpoints variant's parameters for step t: those of the nearest checkpoint
// (or the initial weights) to w_t.
static const float *nearest_params(const sgdinf *g, int64_t t) {
    int best = 0;
    for (int c = 1; c < g->nck; c++)
        if (llabs(g->ck_step[c] - t) < llabs(g->ck_step[best] - t)) best = c;
    return g->Wck[best];
}

// Steps t1 − 1 down to t0 backwards: the step's contribution r_t·∇ℓ_z(w_t)/nb_t for
// its rows, then u ← u − H_t r_t. Step t's parameters are at Wseg + (t − t0) P, or
// the nearest checkpoint's (Wseg NULL).
static infl_status backward_segment(infl_ctx *ctx, sgdinf *g, int64_t t0, int64_t t1, const float *Wseg,
                                    const step_rec *rec, const int64_t *rows, int64_t *done) {
    attrib *a = g->a;
    replay *rp = &g->rp;
    const infl_backend *be = ctx->be;
    const int M = a->M;
    const size_t P = a->P, MP = (size_t)M * P;
    const int64_t N = a->N;
    for (int64_t t = t1 - 1; t >= t0; t--) {
        RETURN_IF_CANCELLED(ctx);
        const step_rec *sr = &rec[t - t0];
        const int64_t *rr = rows + (size_t)(t - t0) * rp->B;
        const float *W = Wseg ? Wseg + (size_t)(t - t0) * P : nearest_params(g, t);
        infl_batch bt, bl;
        FORWARD_IF_ERROR(replay_batch(ctx, rp, sr, rr, &bt, &bl));
        // r_t = η_t u_{t+1} + μ r_{t+1}
        FORWARD_IF_ERROR(be->axpby(ctx, g->R, a->V, (float)infl_train_lr(&rp->to, t, rp->T), (float)rp->to.momentum, MP));
        // the batch's contributions: (M, nb) = r_t · ∇ℓ_i(w_t), by contraction with its factors
        const int b = bt.b;
        FORWARD_IF_ERROR(infl_model_factors(ctx, a->m, W, &bt, a->work));
        FORWARD_IF_ERROR(be->fill(ctx, a->Sd, 0.0f, (size_t)M * b));
        for (int l = 0; l < a->L; l++)
            FORWARD_IF_ERROR(score_contract_layer(ctx, a->Sd, a->Gz, &a->m->layer[l], g->R + a->m->loff[l], a->m->lsize,
                                                  a->work->D[l], a->work->A[l], M, b));
        FORWARD_IF_ERROR(be->download(ctx, g->hsub, a->Sd, (size_t)M * b * sizeof(float)));
        const double inv = 1.0 / (double)sr->nb;
        for (int q = 0; q < M; q++) {
            double *dst = g->acc + (size_t)q * N + sr->row0;
            const float *src = g->hsub + (size_t)q * b;
            for (int i = 0; i < b; i++) dst[rr[i]] += inv * src[i];
        }
        a->flops += infl_model_fb_flops(a->m, b);
        for (int l = 0; l < a->L; l++) a->flops += score_contract_flops(&a->m->layer[l], M, b);
        // u_t = u_{t+1} − H_t r_t
        FORWARD_IF_ERROR(
            infl_hvp_apply_batch(ctx, g->op, W, bt.x, bt.y, bt.yf, b, g->R, g->HR, M));
        FORWARD_IF_ERROR(be->axpby(ctx, a->V, g->HR, -1.0f, 1.0f, MP));
        (*done)++;
        if ((*done & 7) == 0 || *done == rp->T) {
            char info[64];
            snprintf(info, sizeof info, "%d queries, backwards", M);
            infl_progress(ctx, "sgd-influence", (uint64_t)*done, (uint64_t)rp->T, info);
        }
    }
    return INFL_OK;
}

infl_status sgdinf_batch(infl_ctx *ctx, attrib *a, int *B) {
    const infl_rank_options *o = a->o;
    RETURN_IF(ctx, o->prefilter_bm25 || o->prefilter_knn || o->rerank || o->query_rank, INFL_E_ARG,
              "sgd-influence scores every training row at once: --prefilter, --rerank and --query-rank do not apply");
    infl_train_options to;
    FORWARD_IF_ERROR(replay_options(ctx, a->run, &to));
    const infl_split_info *in = store_split_info(a->train);
    int64_t S;
    infl_sgd_shape(&to, in->n, in->d, in->y_kind == INFL_Y_REAL ? in->k : 0, &S, B);
    return INFL_OK;
}

infl_status sgdinf_scores(infl_ctx *ctx, attrib *a, float *S, infl_rank_result *res) {
    const infl_rank_options *o = a->o;
    const infl_backend *be = ctx->be;
    const int M = a->M;
    const size_t P = a->P;
    const int64_t N = a->N;
    RETURN_IF(ctx, (unsigned)o->sgd_variant > 1, INFL_E_ARG, "--sgd-variant: expected replay or checkpoints");
    RETURN_IF(ctx, o->sgd_segment < 0, INFL_E_ARG, "--sgd-segment: expected 0 (automatic) or a number of steps");
    RETURN_IF(ctx, (unsigned)o->hessian > 1, INFL_E_ARG, "--hessian: expected exact or ggn");
    const char *data;
    FORWARD_IF_ERROR(store_run_find_data(ctx, a->run, &data));
    RETURN_IF(ctx, o->train && *o->train && strcmp(o->train, data) != 0, INFL_E_ARG,
              "sgd-influence replays the run's training on its own data (%s); --train %s names other rows", data,
              o->train);
    sgdinf g;
    memset(&g, 0, sizeof g);
    g.a = a;
    float *W = NULL, *V = NULL, *Wseg = NULL, *bnd = NULL;
    step_rec *rec = NULL;
    int64_t *rows = NULL;
    replay_check ck = {.run = a->run};
    infl_status rc = INFL_OK;
    CHECK(replay_open(ctx, &g.rp, a->run, a->m, a->train));
    replay *rp = &g.rp;
    const int64_t T = rp->T;
    GOTO_IF(ctx, rp->B > a->B, INFL_E_ARG,
            "--shard %d is below the run's batch of %d: sgd-influence scores a step's batch at once (leave --shard out)",
            a->B, rp->B);
    GOTO_IF(ctx, store_run_checkpoint(a->run, a->ck[a->nck - 1])->step != T, INFL_E_INTERNAL,
            "the queries' gradients are not at the final weights");

    // segment length: about √T steps, their parameters within 256 MiB
    int64_t K = o->sgd_segment > 0 ? o->sgd_segment : (int64_t)ceil(sqrt((double)T));
    if (o->sgd_segment <= 0 && (double)K * P * 4.0 > 268435456.0) K = (int64_t)(268435456.0 / (P * 4.0));
    K = K < 1 ? 1 : K > T ? T : K;
    const int64_t nseg = (T + K - 1) / K;
    res->sgd_steps = T;
    res->sgd_segment = o->sgd_variant == 0 ? (int)K : 0;
    res->sgd_replay_dev = NAN;

    char what[160];
    const char *hint = "fewer queries at once (--query FILE:/split[begin:end], several runs)";
    snprintf(what, sizeof what, "the adjoint vectors (2 x %d queries x %zu parameters)", M, P);
    CHECK(infl_be_alloc_hint(ctx, (void **)&g.R, (size_t)M * P * sizeof(float), what, hint));
    CHECK(infl_be_alloc_hint(ctx, (void **)&g.HR, (size_t)M * P * sizeof(float), what, hint));
    CHECK(be->fill(ctx, g.R, 0.0f, (size_t)M * P));
    g.acc = infl_calloc(ctx, (size_t)M * N, sizeof(double), "the score accumulators (queries x training rows)");
    g.hsub = infl_malloc(ctx, (size_t)M * rp->B * sizeof(float), "a score block");
    rec = infl_malloc(ctx, (size_t)K * sizeof(step_rec), "the segment's batches");
    rows = infl_malloc(ctx, (size_t)K * rp->B * sizeof(int64_t), "the segment's batches");
    GOTO_NOMEM_IF(!g.acc || !g.hsub || !rec || !rows);
    CHECK(infl_model_hvp_create(ctx, a->m, NULL, NULL, rp->B, (infl_hessian)o->hessian, 0, 0, &g.op));

    double t0 = infl_now();
    int64_t done = 0;
    if (o->sgd_variant == 0) {
        // pass 1: the replay from the seed, keeping each segment's start, checked at every checkpoint
        ck.hw = infl_malloc(ctx, P * sizeof(float), "the parameters");
        ck.hc = infl_malloc(ctx, P * sizeof(float), "the parameters");
        snprintf(what, sizeof what, "the replay's segment starts (%" PRId64 " x 2 x %zu parameters)", nseg, P);
        bnd = infl_malloc(ctx, (size_t)nseg * 2 * P * sizeof(float), what);
        GOTO_NOMEM_IF(!ck.hw || !ck.hc || !bnd);
        CHECK(infl_be_alloc_f(ctx, &W, P, "the parameters"));
        CHECK(infl_be_alloc_f(ctx, &V, P, "the momentum"));
        snprintf(what, sizeof what, "a segment's parameters (%" PRId64 " steps x %zu)", K, P);
        CHECK(infl_be_alloc_hint(ctx, (void **)&Wseg, (size_t)K * P * sizeof(float), what,
                                 "a smaller --sgd-segment (more replay), or --sgd-variant checkpoints"));
        CHECK(replay_start(ctx, rp, W, V));
        for (int64_t s = 0; s < nseg; s++) {
            int64_t s0 = s * K, s1 = s0 + K < T ? s0 + K : T;
            CHECK(be->download(ctx, bnd + (size_t)s * 2 * P, W, P * sizeof(float)));
            CHECK(be->download(ctx, bnd + (size_t)s * 2 * P + P, V, P * sizeof(float)));
            CHECK(replay_steps(ctx, rp, s0, s1, W, V, NULL, NULL, NULL, &ck));
            infl_progress(ctx, "sgd-influence", (uint64_t)s1, (uint64_t)T, "replaying the training");
        }
        res->sgd_replay_dev = ck.dev;
        res->seconds_replay = infl_now() - t0;
        // backwards, segment by segment: replayed again keeping every step's parameters
        for (int64_t s = nseg - 1; s >= 0; s--) {
            int64_t s0 = s * K, s1 = s0 + K < T ? s0 + K : T;
            double t1 = infl_now();
            CHECK(be->upload(ctx, W, bnd + (size_t)s * 2 * P, P * sizeof(float)));
            CHECK(be->upload(ctx, V, bnd + (size_t)s * 2 * P + P, P * sizeof(float)));
            CHECK(replay_steps(ctx, rp, s0, s1, W, V, Wseg, rec, rows, NULL));
            res->seconds_replay += infl_now() - t1;
            CHECK(backward_segment(ctx, &g, s0, s1, Wseg, rec, rows, &done));
        }
    } else {
        // each step at the nearest checkpoint's parameters (or the initial ones): the batches only are walked
        g.nck = a->nck + 1;
        g.Wck = calloc((size_t)g.nck, sizeof(float *));
        g.ck_step = calloc((size_t)g.nck, sizeof(int64_t));
        GOTO_IF(ctx, !g.Wck || !g.ck_step, INFL_E_NOMEM, "out of memory");
        CHECK(infl_be_alloc_f(ctx, &W, P, "the initial parameters"));
        CHECK(infl_be_alloc_f(ctx, &V, P, "the momentum"));
        CHECK(replay_start(ctx, rp, W, V));
        g.Wck[0] = W;
        for (int c = 0; c < a->nck; c++) {
            g.Wck[c + 1] = a->Wd[c];
            g.ck_step[c + 1] = store_run_checkpoint(a->run, a->ck[c])->step;
        }
        for (int64_t s = nseg - 1; s >= 0; s--) {
            int64_t s0 = s * K, s1 = s0 + K < T ? s0 + K : T;
            CHECK(replay_steps(ctx, rp, s0, s1, NULL, NULL, NULL, rec, rows, NULL));
            CHECK(backward_segment(ctx, &g, s0, s1, NULL, rec, rows, &done));
        }
    }
    // score = n Σ_t r_t·∇ℓ_z(w_t)/nb_t: removing z changes the loss by about +score/n
    {
        infl_sgd_walk wk;
        CHECK(infl_sgd_walk_init(ctx, &wk, &rp->to, store_split_info(a->train)->begin, rp->n, rp->S, rp->B, 0));
        double n = (double)wk.n_used;
        infl_sgd_walk_free(&wk);
        for (size_t i = 0; i < (size_t)M * N; i++) S[i] = (float)(n * g.acc[i]);
    }
done:
    infl_hvp_free(ctx, g.op);
    infl_be_free(ctx, g.R);
    infl_be_free(ctx, g.HR);
    infl_be_free(ctx, W);
    infl_be_free(ctx, V);
    infl_be_free(ctx, Wseg);
    free(g.acc);
    free(g.hsub);
    free(g.Wck);
    free(g.ck_step);
    free(bnd);
    free(rec);
    free(rows);
    free(ck.hw);
    free(ck.hc);
    replay_free(ctx, &g.rp);
    return rc;
}

// ---- query losses at given weights ----

infl_status infl_sgd_query_losses(infl_ctx *ctx, const char *run_path, const float *params, const char *query,
                                  double *out) {
    const infl_backend *be = ctx->be;
    infl_run *run = NULL;
    infl_model *m = NULL;
    infl_split *qs = NULL;
    infl_model_work *w = NULL;
    float *hx = NULL, *hyf = NULL, *hl = NULL, *dW = NULL, *dX = NULL, *dyf = NULL;
    int32_t *hy = NULL, *dy = NULL;
    infl_status rc = INFL_OK;
    infl_dataref ref;
    CHECK(store_run_open(ctx, run_path, &run));
    CHECK(infl_model_create(ctx, store_run_spec(run), 0, &m));
    CHECK(infl_dataref_parse(ctx, query, &ref));
    CHECK(store_split_open(ctx, &ref, &qs));
    CHECK(infl_model_check_data(ctx, m, qs));
    const infl_split_info *qi = store_split_info(qs);
    GOTO_IF(ctx, qi->n > 65536, INFL_E_ARG, "%" PRId64 " queries; at most 65536", qi->n);
    const int M = (int)qi->n;
    const int64_t D = qi->d, K = qi->y_kind == INFL_Y_REAL ? qi->k : 0;
    hx = infl_malloc(ctx, (size_t)M * D * sizeof(float), "the queries");
    hl = infl_malloc(ctx, (size_t)M * sizeof(float), "losses");
    GOTO_NOMEM_IF(!hx || !hl);
    if (K) {
        hyf = infl_malloc(ctx, (size_t)M * K * sizeof(float), "targets");
        GOTO_NOMEM_IF(!hyf);
        CHECK(infl_be_alloc_f(ctx, &dyf, (size_t)M * K, "targets"));
    } else {
        hy = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "labels");
        GOTO_NOMEM_IF(!hy);
        CHECK(be->alloc(ctx, (size_t)M * sizeof(int32_t), (void **)&dy));
    }
    CHECK(store_split_read(ctx, qs, 0, M, hx, hy, hyf));
    if (hy) CHECK(infl_model_check_labels(ctx, m, qs, hy, 0, M));
    CHECK(infl_be_alloc_f(ctx, &dW, m->nparams, "the parameters"));
    CHECK(infl_be_alloc_f(ctx, &dX, (size_t)M * D, "the queries"));
    CHECK(be->upload(ctx, dW, params, m->nparams * sizeof(float)));
    CHECK(be->upload(ctx, dX, hx, (size_t)M * D * sizeof(float)));
    if (hy) CHECK(be->upload(ctx, dy, hy, (size_t)M * sizeof(int32_t)));
    if (hyf) CHECK(be->upload(ctx, dyf, hyf, (size_t)M * K * sizeof(float)));
    CHECK(infl_model_work_create(ctx, m, M, &w));
    infl_batch bt = {.b = M, .index0 = qi->begin, .x = dX, .y = dy, .yf = dyf};
    CHECK(infl_model_factors(ctx, m, dW, &bt, w));
    CHECK(be->download(ctx, hl, w->loss, (size_t)M * sizeof(float)));
    for (int q = 0; q < M; q++) out[q] = hl[q];
done:
    if (m) infl_model_work_free(ctx, m, w);
    free(hx);
    free(hyf);
    free(hy);
    free(hl);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    infl_be_free(ctx, dyf);
    store_split_close(qs);
    infl_model_free(m);
    store_run_close(run);
    return rc;
}
