/*
 * gpt_train.c — the GPT's trainer and evaluation (the pipeline pipelines/train.c opens
 * the documents and the run file and calls them).
 *
 * Training: AdamW (bias-corrected moments, decoupled weight decay of the matrices and
 * embeddings, none of biases and LayerNorms) on the mean next-token loss of a batch
 * of documents (every position with a target counts once), the gradient's global
 * norm clipped, the rate warmed up linearly and then constant or cosine. Documents
 * stream in shards of the split; each epoch visits the shards in a seeded order and
 * shuffles the documents within each (the MLP trainer's scheme), so memory is
 * bounded by the shard. On a seeded subset (infl lds) each shard keeps the subset's
 * documents as it is read (train.h infl_subset_compact), as the MLP's trainer does.
 * A non-finite loss or gradient stops the training and names the step; the
 * checkpoints written before it stay (the pipeline commits them).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt.h"
#include "train.h"

// ---- options ----

static infl_status check_options(infl_ctx *ctx, const infl_train_options *o) {
    RETURN_IF(ctx, !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1), INFL_E_ARG,
              "--beta1, --beta2: expected values in [0, 1)");
    RETURN_IF(ctx, !(o->adam_eps > 0) || !isfinite(o->adam_eps), INFL_E_ARG, "--adam-eps: expected a value > 0");
    RETURN_IF(ctx, !(o->clip >= 0) || !isfinite(o->clip), INFL_E_ARG, "--clip: expected 0 (none) or a value > 0");
    RETURN_IF(ctx, o->optimizer != INFL_OPT_AUTO, INFL_E_ARG, "--optimizer: the gpt trains with AdamW only");
    return INFL_OK;
}

infl_status infl_gpt_train_plan(infl_ctx *ctx, const infl_train_options *o, const infl_tokenizer *tok,
                                infl_model_spec *spec, const char **optimizer) {
    memset(spec, 0, sizeof *spec);
    RETURN_IF(ctx, !tok, INFL_E_ARG, "the gpt trains on token documents (infl import text), which carry a tokenizer");
    spec->kind = INFL_MODEL_GPT;
    spec->gpt = (infl_gpt_spec){.n_layer = o->nlayers,
                                .n_head = o->heads,
                                .dim = o->dim,
                                .context = o->context,
                                .vocab = tok->vocab,
                                .eot = tok->eot,
                                .wd = o->weight_decay};
    FORWARD_IF_ERROR(infl_gpt_spec_check(ctx, &spec->gpt));
    FORWARD_IF_ERROR(check_options(ctx, o));
    *optimizer = "adamw";
    return INFL_OK;
}

// ---- training ----

typedef struct {
    infl_ctx *ctx;
    const infl_train_options *o;
    const infl_gpt_spec *s;
    infl_split *split;
    int64_t N, S, nshards;  // documents, per shard, shards
    int B, T;               // documents per step, tokens read per document (the context)
    size_t P;
    int32_t *htok, *hlen;   // (S, T), (S) host: a shard
    int32_t *btok, *blen;   // (B, T), (B) host: a batch
    int64_t *order, *perm;  // (nshards), (S)
    float *hp;              // (P) host: parameters for checkpoints
    gpt_adamw opt;          // parameters, gradient and moments (backend)
    gpt_work *w;
} trainer;

static void trainer_free(trainer *t) {
    infl_ctx *ctx = t->ctx;
    free(t->htok);
    free(t->hlen);
    free(t->btok);
    free(t->blen);
    free(t->order);
    free(t->perm);
    free(t->hp);
    gpt_adamw_free(ctx, &t->opt);
    gpt_work_free(ctx, t->w);
}

static infl_status trainer_open(trainer *t) {
    infl_ctx *ctx = t->ctx;
    const infl_gpt_spec *s = t->s;
    t->N = store_split_info(t->split)->n;
    t->T = s->context;
    // a document costs its T tokens and its length in the shard
    t->S = t->o->shard_rows > 0 ? (t->o->shard_rows < t->N ? t->o->shard_rows : t->N)
                                : infl_shard_rows(t->N, t->T, 0, t->o->shard_mb, t->o->batch);
    t->nshards = (t->N + t->S - 1) / t->S;
    t->B = (int)(t->o->batch < t->S ? t->o->batch : t->S);
    t->P = infl_spec_nparams(&(infl_model_spec){.kind = INFL_MODEL_GPT, .gpt = *s});
    t->htok = infl_malloc(ctx, (size_t)t->S * t->T * sizeof(int32_t), "a shard of documents");
    t->hlen = infl_malloc(ctx, (size_t)t->S * sizeof(int32_t), "document lengths");
    t->btok = infl_malloc(ctx, (size_t)t->B * t->T * sizeof(int32_t), "a batch of documents");
    t->blen = infl_malloc(ctx, (size_t)t->B * sizeof(int32_t), "document lengths");
    t->order = infl_malloc(ctx, (size_t)t->nshards * sizeof(int64_t), "the shard order");
    t->perm = infl_malloc(ctx, (size_t)t->S * sizeof(int64_t), "a shard permutation");
    t->hp = infl_malloc(ctx, t->P * sizeof(float), "the parameters");
    if (!t->htok || !t->hlen || !t->btok || !t->blen || !t->order || !t->perm || !t->hp)
        return INFL_E_NOMEM;
    FORWARD_IF_ERROR(gpt_work_create(ctx, s, t->B, &t->w));
    // seeded initialisation; the moments start at 0
    infl_gpt_init(s, t->o->seed, t->hp);
    return gpt_adamw_create(ctx, s, t->hp, &t->opt);
}

// ---- a step (gpt.h) ----

void gpt_adamw_free(infl_ctx *ctx, gpt_adamw *a) {
    infl_be_free(ctx, a->W);
    infl_be_free(ctx, a->G);
    infl_be_free(ctx, a->M);
    infl_be_free(ctx, a->V);
    free(a->tensors);
    memset(a, 0, sizeof *a);
}

infl_status gpt_adamw_create(infl_ctx *ctx, const infl_gpt_spec *s, const float *params, gpt_adamw *a) {
    memset(a, 0, sizeof *a);
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = *s};
    a->P = infl_spec_nparams(&ms);
    const char *hint = "a smaller model";
    infl_status rc = INFL_OK;
    CHECK(infl_be_alloc_hint(ctx, (void **)&a->W, a->P * sizeof(float), "the parameters", hint));
    CHECK(infl_be_alloc_hint(ctx, (void **)&a->G, a->P * sizeof(float), "the gradient", hint));
    CHECK(infl_be_alloc_hint(ctx, (void **)&a->M, a->P * sizeof(float), "AdamW's first moment", hint));
    CHECK(infl_be_alloc_hint(ctx, (void **)&a->V, a->P * sizeof(float), "AdamW's second moment", hint));
    a->ntensors = infl_spec_tensors(&ms, NULL, 0);
    a->tensors = infl_calloc(ctx, (size_t)a->ntensors, sizeof *a->tensors, "the tensor list");
    GOTO_NOMEM_IF(!a->tensors);
    infl_spec_tensors(&ms, a->tensors, a->ntensors);
    CHECK(ctx->be->upload(ctx, a->W, params, a->P * sizeof(float)));
    CHECK(ctx->be->fill(ctx, a->M, 0.0f, a->P));
    CHECK(ctx->be->fill(ctx, a->V, 0.0f, a->P));
    return INFL_OK;
done:
    gpt_adamw_free(ctx, a);
    return rc;
}

infl_status gpt_train_step(infl_ctx *ctx, const infl_gpt_spec *s, gpt_adamw *a, gpt_work *w, const int32_t *tok, int T,
                           const int32_t *len, int B, double lr, double beta1, double beta2, double eps, double wd,
                           double clip, int step, double *loss, int64_t *ntok, double *gnorm, int *truncated) {
    FORWARD_IF_ERROR(gpt_forward(ctx, s, a->W, tok, T, len, B, w, ntok, truncated));
    FORWARD_IF_ERROR(gpt_backward(ctx, s, a->W, w, 0, 0, 0, a->G, 1.0f / (float)*ntok));
    double *dl = infl_malloc(ctx, (size_t)B * sizeof(double), "document losses"), gn2 = 0;
    if (!dl) return INFL_E_NOMEM;
    infl_status rc = gpt_doc_losses(ctx, w, dl);
    *loss = 0;
    for (int i = 0; i < B; i++) *loss += dl[i];
    free(dl);
    FORWARD_IF_ERROR(rc);
    FORWARD_IF_ERROR(ctx->be->dot(ctx, a->G, a->G, a->P, &gn2));
    *gnorm = sqrt(gn2);
    if (!isfinite(*loss) || !isfinite(*gnorm)) return INFL_OK;
    float gscale = clip > 0 && *gnorm > clip ? (float)(clip / *gnorm) : 1.0f;
    // AdamW per tensor: matrices and embeddings decay, vectors do not
    for (int i = 0; i < a->ntensors; i++) {
        const infl_tensor *ts = &a->tensors[i];
        size_t n = (size_t)ts->dims[0] * (ts->rank == 2 ? (size_t)ts->dims[1] : 1), off = ts->off;
        FORWARD_IF_ERROR(ctx->be->adamw_step(ctx, a->W + off, a->M + off, a->V + off, a->G + off, n, (float)lr,
                                             (float)beta1, (float)beta2, (float)eps, ts->rank == 2 ? (float)wd : 0.0f,
                                             step, gscale));
    }
    return INFL_OK;
}

// Training stopped at `step` (epoch ep, 0-based) for `what`: INFL_E_NUMERIC naming both
// and the checkpoints the run keeps (the last at step last_ckpt, when there is one).
static infl_status diverged(infl_ctx *ctx, infl_train_report *rep, int64_t step, int ep, int64_t last_ckpt,
                            const char *what) {
    rep->diverged = 1;
    rep->diverged_step = step;
    char kept[96] = "no checkpoint was written before it";
    if (rep->checkpoints > 0)
        snprintf(kept, sizeof kept, "the run keeps its checkpoints up to step %" PRId64, last_ckpt);
    return infl_seterr(ctx, INFL_E_NUMERIC, "training diverged at step %" PRId64 " (epoch %d): %s; %s; lower --lr or --clip",
                       step, ep + 1, what, kept);
}

infl_status infl_gpt_train_run(infl_ctx *ctx, const infl_train_options *o, const infl_gpt_spec *s,
                               infl_split *split, infl_runw *rw, infl_train_report *rep) {
    const infl_backend *be = ctx->be;
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_beta1", o->beta1));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_beta2", o->beta2));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_adam_eps", o->adam_eps));
    FORWARD_IF_ERROR(store_run_attr_f64(ctx, rw, "train_clip", o->clip));
    trainer t;
    memset(&t, 0, sizeof t);
    t.ctx = ctx;
    t.o = o;
    t.s = s;
    t.split = split;
    infl_status rc = INFL_OK;
    CHECK(trainer_open(&t));
    const int64_t N = t.N, S = t.S, begin = store_split_info(split)->begin;
    const int B = t.B, T = t.T;
    int64_t steps_per_epoch, n_used;  // n_used: the documents of the subset (infl lds), else N
    CHECK(infl_train_epoch_steps(ctx, o, begin, N, S, B, &steps_per_epoch, &n_used));
    const int64_t total = steps_per_epoch * o->epochs;

    double t0 = infl_now(), lr_sum = 0, epoch_loss = 0, flops = 0;
    int64_t step = 0, last_ckpt = 0, epoch_tok = 0, tokens = 0;
    for (int ep = 0; ep < o->epochs; ep++) {
        infl_train_permute(t.order, t.nshards, o->seed, (uint64_t)ep);
        epoch_loss = 0;
        epoch_tok = 0;
        int64_t ep_docs = 0;  // documents of the shards visited before this one, this epoch
        for (int64_t si = 0; si < t.nshards; si++) {
            int64_t k = t.order[si], row0 = k * S, len = row0 + S <= N ? S : N - row0;
            CHECK(store_split_read_docs(ctx, split, row0, len, T, s->eot, t.htok, t.hlen, NULL));
            // the subset's documents, in order, at the front of the shard
            void *docs[2] = {t.htok, t.hlen};
            const size_t bytes[2] = {(size_t)T * sizeof(int32_t), sizeof(int32_t)};
            len = infl_subset_compact(o, begin + row0, len, 2, docs, bytes);
            infl_train_permute(t.perm, len, o->seed, ((uint64_t)(ep + 1) << 32) | (uint64_t)k);
            for (int64_t b0 = 0; b0 < len; b0 += B) {
                GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted at step %" PRId64, step);
                int nb = (int)(b0 + B <= len ? B : len - b0);
                for (int i = 0; i < nb; i++) {
                    int64_t r = t.perm[b0 + i];
                    memcpy(t.btok + (size_t)i * T, t.htok + (size_t)r * T, (size_t)T * sizeof(int32_t));
                    t.blen[i] = t.hlen[r];
                }
                int64_t ntok;
                int trunc;
                double bl, gn, lr = infl_train_lr(o, step, total);
                CHECK(gpt_train_step(ctx, s, &t.opt, t.w, t.btok, T, t.blen, nb, lr, o->beta1, o->beta2, o->adam_eps,
                                     o->weight_decay, o->clip, (int)(step + 1), &bl, &ntok, &gn, &trunc));
                if (ep == 0) rep->truncated += trunc;
                if (!isfinite(bl) || !isfinite(gn)) {
                    char what[64];
                    snprintf(what, sizeof what, "the %s is %s", isfinite(bl) ? "gradient" : "loss",
                             isnan(isfinite(bl) ? gn : bl) ? "NaN" : "infinite");
                    rc = diverged(ctx, rep, step + 1, ep, last_ckpt, what);
                    goto done;
                }
                rep->grad_norm = gn;
                epoch_loss += bl;
                epoch_tok += ntok;
                tokens += ntok;
                int Tb = gpt_padded_positions(t.w);
                flops += infl_gpt_train_flops(s, (double)nb * Tb, Tb);
                lr_sum += lr;
                step++;
                int last = step == total;
                if ((o->checkpoint_every > 0 && step % o->checkpoint_every == 0) || last) {
                    CHECK(be->download(ctx, t.hp, t.opt.W, t.P * sizeof(float)));
                    double epoch = last ? o->epochs : (double)ep + (double)(ep_docs + b0 + nb) / (double)n_used;
                    rc = store_run_add_checkpoint(ctx, rw, step, epoch, lr_sum / (double)(step - last_ckpt), NAN, t.hp);
                    if (rc == INFL_E_VALUE) {
                        // the store refuses non-finite weights (naming the tensor): an update that
                        // overflowed them is a divergence too, and the good checkpoints stay
                        char what[sizeof ctx->detail];
                        snprintf(what, sizeof what, "%s", infl_ctx_error(ctx));
                        rc = diverged(ctx, rep, step, ep, last_ckpt, what);
                    }
                    CHECK(rc);
                    rep->checkpoints++;
                    last_ckpt = step;
                    lr_sum = 0;
                }
                if ((step & 7) == 0 || last) {
                    char info[128];
                    double el = infl_now() - t0;
                    snprintf(info, sizeof info, "epoch %d/%d  loss %.4f/token  %.0f tokens/s", ep + 1, o->epochs,
                             epoch_loss / (double)epoch_tok, el > 0 ? (double)tokens / el : 0.0);
                    infl_progress(ctx, "train", (uint64_t)step, (uint64_t)total, info);
                }
            }
            ep_docs += len;
        }
    }
    rep->seconds = infl_now() - t0;
    rep->steps = step;
    rep->tokens = tokens;
    rep->flops = flops;
    rep->tokens_per_s = rep->seconds > 0 ? (double)tokens / rep->seconds : 0;
    rep->examples_per_s = rep->seconds > 0 ? (double)n_used * o->epochs / rep->seconds : 0;
    rep->final_loss = epoch_tok ? epoch_loss / (double)epoch_tok : NAN;
done:
    trainer_free(&t);
    return rc;
}

// ---- evaluation ----

infl_status infl_gpt_split_losses(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, const char *progress,
                                  double *out, int64_t *tokens, int64_t *truncated) {
    const infl_gpt_spec *s = &store_run_spec(run)->gpt;
    const int64_t n = store_split_info(split)->n;
    const int T = s->context, B = (int)(n < 16 ? n : 16);
    size_t P = infl_spec_nparams(store_run_spec(run));
    float *hp = NULL, *W = NULL;
    int32_t *tok = NULL, *len = NULL;
    gpt_work *w = NULL;
    infl_status rc = INFL_OK;
    *tokens = *truncated = 0;
    hp = infl_malloc(ctx, P * sizeof(float), "the parameters");
    tok = infl_malloc(ctx, (size_t)B * T * sizeof(int32_t), "documents");
    len = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "document lengths");
    GOTO_NOMEM_IF(!hp || !tok || !len);
    CHECK(store_run_load(ctx, run, ci, hp));
    CHECK(infl_be_alloc_f(ctx, &W, P, "the parameters"));
    CHECK(ctx->be->upload(ctx, W, hp, P * sizeof(float)));
    CHECK(gpt_work_create(ctx, s, B, &w));
    for (int64_t r0 = 0; r0 < n; r0 += B) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        int nb = (int)(r0 + B <= n ? B : n - r0);
        CHECK(store_split_read_docs(ctx, split, r0, nb, T, s->eot, tok, len, NULL));
        int64_t ntok;
        int trunc;
        CHECK(gpt_forward(ctx, s, W, tok, T, len, nb, w, &ntok, &trunc));
        CHECK(gpt_doc_losses(ctx, w, out + r0));
        *tokens += ntok;
        *truncated += trunc;
        if (progress) infl_progress(ctx, progress, (uint64_t)(r0 + nb), (uint64_t)n, NULL);
    }
done:
    free(hp);
    free(tok);
    free(len);
    infl_be_free(ctx, W);
    gpt_work_free(ctx, w);
    return rc;
}

infl_status infl_gpt_eval(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, infl_eval_result *res) {
    const int64_t n = store_split_info(split)->n;
    double *dl = infl_malloc(ctx, (size_t)n * sizeof(double), "document losses");
    if (!dl) return INFL_E_NOMEM;
    int64_t tokens, truncated;
    infl_status rc = INFL_OK;
    CHECK(infl_gpt_split_losses(ctx, run, ci, split, "eval", dl, &tokens, &truncated));
    double loss = 0;
    for (int64_t i = 0; i < n; i++) loss += dl[i];
    GOTO_IF(ctx, !isfinite(loss), INFL_E_NUMERIC, "the loss is not finite (the checkpoint may have diverged)");
    res->n = n;
    res->tokens = tokens;
    res->truncated = truncated;
    res->loss = tokens ? loss / (double)tokens : NAN;
    res->perplexity = exp(res->loss);
    res->accuracy = NAN;
done:
    free(dl);
    return rc;
}
