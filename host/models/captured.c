/*
 * captured.c — the seam's third implementation (model.h; DESIGN.md "Architecture"): a
 * model trained elsewhere whose layer inputs A and output gradients Δ were recorded per
 * example and token row (python/infl/torch.py's hooks on nn.Linear and Hugging Face's
 * Conv1D) into a `captured` file (store/store_captured.c). Nothing is computed here: a
 * forward reads the batch's rows of every layer's A (and the examples' losses) from the
 * batch's split at the batch's checkpoint, a backward reads Δ at the data's targets, or
 * the Δs captured at targets sampled from the model (the true Fisher) when the capture
 * has them. So every estimator that needs only the seam (TracIn, grad-dot, grad-cos,
 * EK-FAC, K-FAC, the gradient index) serves any model PyTorch can run, and nothing that
 * needs a new forward pass does (exact HVPs, text queries, representer points).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

typedef struct {
    int64_t cap_rows;  // token rows the buffers hold
    float *A[INFL_MAX_LINEAR], *D[INFL_MAX_LINEAR];  // backend (cap_rows, d_in), (cap_rows, d_out)
    float *host;       // (cap_rows · max width) staging
    float *hloss;      // (maxB)
    int64_t *offs;     // (maxB + 1)
    // the last forward's rows, read again by backward
    infl_split *split;
    const char *ckpt;
    int64_t r0;        // its first token row within the whole split
} cap_work;

static void cap_model_free(infl_model *m) { free(m); }

static infl_status cap_check_data(infl_ctx *ctx, const infl_model *m, const infl_split *split) {
    const infl_captured_spec *have = store_split_captured(split), *want = &m->spec.cap;
    RETURN_IF(ctx, !have, INFL_E_ARG,
              "%s: a captured model reads its examples from a captured file (its layers' inputs and output gradients "
              "were recorded, not computed): give a split of a captured file (--train cap.h5:/train)",
              store_split_ref(split));
    int same = have->L == want->L;
    for (int l = 0; same && l < want->L; l++)
        same = have->d_in[l] == want->d_in[l] && have->d_out[l] == want->d_out[l] && have->bias[l] == want->bias[l] &&
               strcmp(have->names[l], want->names[l]) == 0;
    RETURN_IF(ctx, !same, INFL_E_SHAPE,
              "%s: captured from other layers than the run's (%d layers, the first %s %dx%d; the run's %d, %s %dx%d)",
              store_split_ref(split), have->L, have->names[0], have->d_out[0], have->d_in[0], want->L, want->names[0],
              want->d_out[0], want->d_in[0]);
    return INFL_OK;
}

static void cap_free_buffers(infl_ctx *ctx, const infl_model *m, cap_work *s, infl_model_work *w) {
    for (int l = 0; l < m->nlayers; l++) {
        infl_be_free(ctx, s->A[l]);
        infl_be_free(ctx, s->D[l]);
        s->A[l] = s->D[l] = NULL;
    }
    for (int l = 0; l < m->nlayers && w; l++) w->A[l] = w->D[l] = NULL;
    free(s->host);
    s->host = NULL;
    s->cap_rows = 0;
}

// Buffers for `rows` token rows (grown, never shrunk).
static infl_status cap_reserve(infl_ctx *ctx, const infl_model *m, infl_model_work *w, int64_t rows) {
    cap_work *s = w->impl;
    if (rows <= s->cap_rows) return INFL_OK;
    cap_free_buffers(ctx, m, s, w);
    int64_t width = infl_model_max_in(m) > infl_model_max_out(m) ? infl_model_max_in(m) : infl_model_max_out(m);
    s->host = infl_malloc(ctx, (size_t)rows * (size_t)width * sizeof(float), "captured rows");
    if (!s->host) return INFL_E_NOMEM;
    for (int l = 0; l < m->nlayers; l++) {
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &s->A[l], (size_t)rows * m->layer[l].d_in, "captured layer inputs"));
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &s->D[l], (size_t)rows * m->layer[l].d_out, "captured output gradients"));
        w->A[l] = s->A[l];
        w->D[l] = s->D[l];
    }
    s->cap_rows = rows;
    return INFL_OK;
}

static void cap_work_free(infl_ctx *ctx, infl_model_work *w) {
    cap_work *s = w->impl;
    if (!s) return;
    for (int l = 0; l < INFL_MAX_LINEAR; l++) {
        infl_be_free(ctx, s->A[l]);
        infl_be_free(ctx, s->D[l]);
    }
    free(s->host);
    free(s->hloss);
    free(s->offs);
    infl_be_free(ctx, w->loss);
    free(s);
    w->impl = NULL;
}

static infl_status cap_work_create(infl_ctx *ctx, const infl_model *m, infl_model_work *w) {
    cap_work *s = infl_calloc(ctx, 1, sizeof *s, "model buffers");
    w->impl = s;
    if (!s) return INFL_E_NOMEM;
    s->hloss = infl_malloc(ctx, (size_t)w->maxB * sizeof(float), "losses");
    s->offs = infl_malloc(ctx, ((size_t)w->maxB + 1) * sizeof(int64_t), "row offsets");
    if (!s->hloss || !s->offs) return INFL_E_NOMEM;
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &w->loss, (size_t)w->maxB, "losses"));
    // one row per example; token rows: as many as the first batch brings (grown as needed)
    return m->tokens ? INFL_OK : cap_reserve(ctx, m, w, w->maxB);
}

// Reads layer l's part (A, D or Ds) of the last forward's rows onto the backend.
static infl_status cap_load(infl_ctx *ctx, const infl_model *m, infl_model_work *w, int l, infl_captured_part part) {
    cap_work *s = w->impl;
    int width = part == INFL_CAP_A ? m->layer[l].d_in : m->layer[l].d_out;
    FORWARD_IF_ERROR(store_captured_read(ctx, s->split, s->ckpt, l, part, s->r0, w->rows, s->host));
    return ctx->be->upload(ctx, part == INFL_CAP_A ? s->A[l] : s->D[l], s->host,
                           (size_t)w->rows * (size_t)width * sizeof(float));
}

static infl_status cap_forward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                               infl_model_work *w) {
    (void)params;  // the capture is of the checkpoint's weights already
    cap_work *s = w->impl;
    RETURN_IF(ctx, !bt->split || !store_split_captured(bt->split), INFL_E_UNSUPPORTED,
              "a captured model has no forward pass of its own: it serves examples of a captured file only (not text "
              "queries, --prefilter knn or --method representer)");
    RETURN_IF(ctx, !bt->ckpt, INFL_E_INTERNAL, "captured model: the batch names no checkpoint");
    RETURN_IF(ctx, bt->b < 1 || bt->b > w->maxB, INFL_E_ARG, "captured model: a batch of %d; the buffers hold %d",
              bt->b, w->maxB);
    infl_split *split = (infl_split *)bt->split;  // read through (the handle's scratch), not changed
    const infl_split_info *in = store_split_info(split);
    int64_t row = bt->index0 - in->begin;
    FORWARD_IF_ERROR(store_captured_offsets(ctx, split, row, bt->b, s->offs));
    int64_t rows = s->offs[bt->b] - s->offs[0];
    RETURN_IF(ctx, rows > INT32_MAX, INFL_E_ARG, "captured model: a batch of %" PRId64 " token rows", rows);
    FORWARD_IF_ERROR(cap_reserve(ctx, m, w, rows > 0 ? rows : 1));
    for (int i = 0; i <= bt->b; i++) w->row_off[i] = (int)(s->offs[i] - s->offs[0]);
    w->b = bt->b;
    w->rows = (int)rows;
    s->split = split;
    s->ckpt = bt->ckpt;
    s->r0 = s->offs[0];
    for (int l = 0; l < m->nlayers; l++) FORWARD_IF_ERROR(cap_load(ctx, m, w, l, INFL_CAP_A));
    FORWARD_IF_ERROR(store_captured_loss(ctx, split, bt->ckpt, row, bt->b, s->hloss));
    return ctx->be->upload(ctx, w->loss, s->hloss, (size_t)bt->b * sizeof(float));
}

static infl_status cap_backward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                                const infl_targets *tg, infl_model_work *w, float *grad, float scale) {
    (void)params;
    (void)scale;
    (void)bt;
    cap_work *s = w->impl;
    RETURN_IF(ctx, grad != NULL, INFL_E_UNSUPPORTED,
              "a captured model gives per-example factors only, not a summed weight gradient (training, "
              "sgd-influence and representer points need one)");
    RETURN_IF(ctx, !s->split, INFL_E_INTERNAL, "captured model: backward before forward");
    int sampled = tg && tg->sampled;
    RETURN_IF(ctx, sampled && !store_captured_has_sampled(s->split, s->ckpt), INFL_E_UNSUPPORTED,
              "%s: no output gradients at sampled targets (layer0/Ds) were captured at checkpoint %s, which the true "
              "Fisher needs: fit with --fisher empirical, or capture with sample_fisher=True",
              store_split_ref(s->split), s->ckpt);
    for (int l = 0; l < m->nlayers; l++) FORWARD_IF_ERROR(cap_load(ctx, m, w, l, sampled ? INFL_CAP_DS : INFL_CAP_D));
    return INFL_OK;
}

static infl_status cap_predict(infl_ctx *ctx, const infl_model *m, infl_model_work *w, int32_t *pred) {
    (void)ctx;
    (void)m;
    for (int i = 0; i < w->b; i++) pred[i] = -1;  // no logits were captured
    return INFL_OK;
}

// Nothing is computed: reading A and Δ is what a batch costs (counted as its bytes, not FLOPs).
static double cap_fb_flops(const infl_model *m, double rows) {
    (void)m;
    (void)rows;
    return 0.0;
}

static const infl_model_iface cap_iface = {
    .kind = "captured",
    .free = cap_model_free,
    .check_data = cap_check_data,
    .check_labels = NULL,
    .work_create = cap_work_create,
    .work_free = cap_work_free,
    .forward = cap_forward,
    .backward = cap_backward,
    .predict = cap_predict,
    .fb_flops = cap_fb_flops,
    .hvp_create = NULL,
};

infl_status infl_captured_model_create(infl_ctx *ctx, const infl_model_spec *spec, infl_model **out) {
    *out = NULL;
    RETURN_IF(ctx, spec->kind != INFL_MODEL_CAPTURED, INFL_E_ARG, "infl_captured_model_create: not a captured spec");
    FORWARD_IF_ERROR(infl_captured_spec_check(ctx, &spec->cap));
    infl_model *m = infl_calloc(ctx, 1, sizeof *m, "the model");
    if (!m) return INFL_E_NOMEM;
    m->iface = &cap_iface;
    m->spec = *spec;
    infl_model_init_layers(m, 0);
    m->tokens = spec->cap.tokens;
    m->outputs = spec->cap.outputs;
    m->logits_layer = -1;  // no logits: representer points need a forward pass
    *out = m;
    return INFL_OK;
}
