/*
 * model.c — the seam's generic part (model.h): creating a model from its spec, the
 * layer list and layer space, and the thin wrappers that need more than one line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

infl_status infl_mlp_model_create(infl_ctx *ctx, const infl_model_spec *spec, infl_model **out);
infl_status infl_gpt_model_create(infl_ctx *ctx, const infl_model_spec *spec, int head, infl_model **out);
infl_status infl_captured_model_create(infl_ctx *ctx, const infl_model_spec *spec, infl_model **out);

infl_status infl_model_create(infl_ctx *ctx, const infl_model_spec *spec, int head, infl_model **out) {
    *out = NULL;
    FORWARD_IF_ERROR(infl_spec_check(ctx, spec));
    switch (spec->kind) {
    case INFL_MODEL_MLP: return infl_mlp_model_create(ctx, spec, out);
    case INFL_MODEL_GPT: return infl_gpt_model_create(ctx, spec, head, out);
    case INFL_MODEL_CAPTURED: return infl_captured_model_create(ctx, spec, out);
    }
    return infl_seterr(ctx, INFL_E_ARG, "model kind %d: expected mlp, gpt or captured", (int)spec->kind);
}

void infl_model_free(infl_model *m) {
    if (m) m->iface->free(m);
}

void infl_model_init_layers(infl_model *m, int head) {
    m->nparams = infl_spec_nparams(&m->spec);
    m->nlayers = infl_spec_linears(&m->spec, head, m->layer, INFL_MAX_LINEAR);
    if (m->nlayers > INFL_MAX_LINEAR) m->nlayers = INFL_MAX_LINEAR;  // spec checks keep it below
    size_t at = 0;
    for (int l = 0; l < m->nlayers; l++) {
        m->loff[l] = at;
        at += infl_linear_size(&m->layer[l]);
    }
    m->lsize = at;
    m->wd = infl_spec_objective_wd(&m->spec);
    m->logits_layer = -1;  // an implementation whose last layer reads out the logits sets it
}

infl_status infl_model_work_create(infl_ctx *ctx, const infl_model *m, int maxB, infl_model_work **out) {
    *out = NULL;
    infl_model_work *w = infl_calloc(ctx, 1, sizeof *w, "model buffers");
    if (!w) return INFL_E_NOMEM;
    w->maxB = maxB;
    w->row_off = infl_calloc(ctx, (size_t)maxB + 1, sizeof(int), "row offsets");
    w->A = infl_calloc(ctx, (size_t)m->nlayers, sizeof(float *), "layer views");
    w->D = infl_calloc(ctx, (size_t)m->nlayers, sizeof(float *), "layer views");
    infl_status rc = w->row_off && w->A && w->D ? m->iface->work_create(ctx, m, w) : INFL_E_NOMEM;
    if (rc != INFL_OK) {
        infl_model_work_free(ctx, m, w);
        return rc;
    }
    *out = w;
    return INFL_OK;
}

void infl_model_work_free(infl_ctx *ctx, const infl_model *m, infl_model_work *w) {
    if (!w) return;
    m->iface->work_free(ctx, w);
    free(w->row_off);
    free(w->A);
    free(w->D);
    free(w);
}

infl_status infl_model_factors(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                               infl_model_work *w) {
    const infl_targets data = {0, 0};
    FORWARD_IF_ERROR(infl_model_forward(ctx, m, params, bt, w));
    return infl_model_backward(ctx, m, params, bt, &data, w, NULL, 1.0f);
}

infl_status infl_model_need_hvp(infl_ctx *ctx, const infl_model *m) {
    RETURN_IF(ctx, !m->iface->hvp_create, INFL_E_UNSUPPORTED,
              "the %s model gives no Hessian-vector products, which influence functions with an exact or "
              "Gauss-Newton Hessian (--method if) need; use --method ekfac (infl fit, then rank --factors)",
              m->iface->kind);
    return INFL_OK;
}

infl_status infl_model_hvp_create(infl_ctx *ctx, const infl_model *m, const float *params, infl_split *split,
                                  int64_t samples, infl_hessian kind, int64_t shard_rows, double cache_mb,
                                  infl_hvp **out) {
    *out = NULL;
    FORWARD_IF_ERROR(infl_model_need_hvp(ctx, m));
    return m->iface->hvp_create(ctx, m, params, split, samples, kind, shard_rows, cache_mb, out);
}

int infl_model_max_in(const infl_model *m) {
    int v = 0;
    for (int l = 0; l < m->nlayers; l++) v = m->layer[l].d_in > v ? m->layer[l].d_in : v;
    return v;
}

int infl_model_max_out(const infl_model *m) {
    int v = 0;
    for (int l = 0; l < m->nlayers; l++) v = m->layer[l].d_out > v ? m->layer[l].d_out : v;
    return v;
}

int infl_model_max_ni(const infl_model *m) {
    int v = 0;
    for (int l = 0; l < m->nlayers; l++) v = infl_linear_ni(&m->layer[l]) > v ? infl_linear_ni(&m->layer[l]) : v;
    return v;
}

size_t infl_model_max_layer_size(const infl_model *m) {
    size_t v = 0;
    for (int l = 0; l < m->nlayers; l++) v = infl_linear_size(&m->layer[l]) > v ? infl_linear_size(&m->layer[l]) : v;
    return v;
}

void infl_model_describe(const infl_model *m, char *buf, size_t size) { infl_spec_describe(&m->spec, buf, size); }
