/*
 * spec.c — model descriptions (spec.h): the MLP's and the GPT's parameter layouts, their named
 * tensors, checks and names.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "spec.h"

size_t infl_mlp_nparams(const infl_mlp_spec *s) {
    size_t n = 0;
    for (int l = 0; l < s->L; l++) n += (size_t)s->widths[l + 1] * ((size_t)s->widths[l] + 1);
    return n;
}

size_t infl_mlp_woff(const infl_mlp_spec *s, int l) {
    size_t n = 0;
    for (int i = 0; i < l; i++) n += (size_t)s->widths[i + 1] * ((size_t)s->widths[i] + 1);
    return n;
}

size_t infl_mlp_boff(const infl_mlp_spec *s, int l) {
    return infl_mlp_woff(s, l) + (size_t)s->widths[l + 1] * (size_t)s->widths[l];
}

static const char *const act_names[] = {"relu", "tanh", "gelu"};
static const char *const loss_names[] = {"softmax_ce", "sigmoid_ce", "mse"};

const char *infl_act_name(infl_activation a) {
    return (unsigned)a < 3 ? act_names[a] : "?";
}
const char *infl_loss_name(infl_loss l) {
    return (unsigned)l < 3 ? loss_names[l] : "?";
}

int infl_act_parse(const char *name, infl_activation *out) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, act_names[i]) == 0) {
            *out = (infl_activation)i;
            return 0;
        }
    return -1;
}

int infl_loss_parse(const char *name, infl_loss *out) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, loss_names[i]) == 0) {
            *out = (infl_loss)i;
            return 0;
        }
    return -1;
}

infl_status infl_mlp_spec_check(infl_ctx *ctx, const infl_mlp_spec *s) {
    RETURN_IF(ctx, s->L < 1 || s->L > INFL_MAX_LAYERS, INFL_E_ARG,
              "layers: expected 2 to %d widths (input, hidden..., output), got %d", INFL_MAX_LAYERS + 1, s->L + 1);
    for (int l = 0; l <= s->L; l++)
        RETURN_IF(ctx, s->widths[l] < 1 || s->widths[l] > (1 << 24), INFL_E_ARG,
                  "layers: width %d is %d; expected 1 to 16777216", l, s->widths[l]);
    RETURN_IF(ctx, (unsigned)s->act > 2, INFL_E_ARG, "activation: expected relu, tanh or gelu");
    RETURN_IF(ctx, (unsigned)s->loss > 2, INFL_E_ARG, "loss: expected softmax_ce, sigmoid_ce or mse");
    RETURN_IF(ctx, s->loss == INFL_LOSS_SIGMOID_CE && s->widths[s->L] != 1, INFL_E_ARG,
              "loss sigmoid_ce (binary) needs 1 output, the last width is %d", s->widths[s->L]);
    RETURN_IF(ctx, s->loss == INFL_LOSS_SOFTMAX_CE && s->widths[s->L] < 2, INFL_E_ARG,
              "loss softmax_ce needs at least 2 outputs (classes), the last width is %d", s->widths[s->L]);
    RETURN_IF(ctx, !(s->wd >= 0) || !isfinite(s->wd), INFL_E_ARG, "weight decay: expected a finite value >= 0");
    return INFL_OK;
}

// ---- the GPT ----

infl_gpt_layout infl_gpt_layout_of(const infl_gpt_spec *s) {
    infl_gpt_layout g;
    size_t C = (size_t)s->dim, V = (size_t)s->vocab, T = (size_t)s->context, at = 0;
    g.wte = at, at += V * C;
    g.wpe = at, at += T * C;
    size_t b0 = at;
    g.ln1_w = at, at += C;
    g.ln1_b = at, at += C;
    g.attn_w = at, at += 3 * C * C;
    g.attn_b = at, at += 3 * C;
    g.proj_w = at, at += C * C;
    g.proj_b = at, at += C;
    g.ln2_w = at, at += C;
    g.ln2_b = at, at += C;
    g.fc_w = at, at += 4 * C * C;
    g.fc_b = at, at += 4 * C;
    g.fcp_w = at, at += 4 * C * C;
    g.fcp_b = at, at += C;
    g.block = at - b0;
    at = b0 + g.block * (size_t)s->n_layer;
    g.lnf_w = at, at += C;
    g.lnf_b = at, at += C;
    g.total = at;
    return g;
}

infl_status infl_gpt_spec_check(infl_ctx *ctx, const infl_gpt_spec *s) {
    RETURN_IF(ctx, s->n_layer < 1 || s->n_layer > 60, INFL_E_ARG, "layers: expected 1 to 60 blocks, got %d",
              s->n_layer);
    RETURN_IF(ctx, s->dim < 1 || s->dim > 16384, INFL_E_ARG, "dim: expected 1 to 16384, got %d", s->dim);
    RETURN_IF(ctx, s->n_head < 1 || s->dim % s->n_head != 0, INFL_E_ARG,
              "heads: expected a divisor of dim %d (the head width is dim / heads), got %d", s->dim, s->n_head);
    RETURN_IF(ctx, s->context < 2 || s->context > 65536, INFL_E_ARG, "context: expected 2 to 65536 tokens, got %d",
              s->context);
    RETURN_IF(ctx, s->vocab < 2 || s->vocab > (1 << 20), INFL_E_ARG, "vocabulary: expected 2 to 1048576 tokens, got %d",
              s->vocab);
    RETURN_IF(ctx, s->eot < 0 || s->eot >= s->vocab, INFL_E_ARG,
              "end-of-text token %d: expected an id below the vocabulary of %d", s->eot, s->vocab);
    RETURN_IF(ctx, !(s->wd >= 0) || !isfinite(s->wd), INFL_E_ARG, "weight decay: expected a finite value >= 0");
    return INFL_OK;
}

// ---- a captured model ----

infl_status infl_captured_spec_check(infl_ctx *ctx, const infl_captured_spec *s) {
    RETURN_IF(ctx, s->L < 1 || s->L > INFL_MAX_LINEAR, INFL_E_ARG, "layers: expected 1 to %d captured layers, got %d",
              INFL_MAX_LINEAR, s->L);
    for (int l = 0; l < s->L; l++) {
        RETURN_IF(ctx, s->d_in[l] < 1 || s->d_in[l] > (1 << 24) || s->d_out[l] < 1 || s->d_out[l] > (1 << 24),
                  INFL_E_ARG, "layer %d (%s): d_in %d, d_out %d; expected 1 to 16777216 each", l, s->names[l],
                  s->d_in[l], s->d_out[l]);
        RETURN_IF(ctx, s->bias[l] != 0 && s->bias[l] != 1, INFL_E_ARG, "layer %d (%s): bias %d; expected 0 or 1", l,
                  s->names[l], s->bias[l]);
        RETURN_IF(ctx, !s->names[l][0], INFL_E_ARG, "layer %d: an empty name", l);
    }
    RETURN_IF(ctx, s->outputs < 0, INFL_E_ARG, "outputs: expected >= 0, got %d", s->outputs);
    RETURN_IF(ctx, s->tokens != 0 && s->tokens != 1, INFL_E_ARG, "tokens: expected 0 or 1, got %d", s->tokens);
    RETURN_IF(ctx, !(s->wd >= 0) || !isfinite(s->wd), INFL_E_ARG, "weight decay: expected a finite value >= 0");
    return INFL_OK;
}

size_t infl_captured_woff(const infl_captured_spec *s, int l) {
    size_t at = 0;
    for (int i = 0; i < l; i++) at += (size_t)s->d_out[i] * (size_t)(s->d_in[i] + s->bias[i]);
    return at;
}

// ---- any model ----

const char *infl_model_kind_name(infl_model_kind k) {
    return k == INFL_MODEL_GPT ? "gpt" : k == INFL_MODEL_MLP ? "mlp" : k == INFL_MODEL_CAPTURED ? "captured" : "?";
}

int infl_model_kind_parse(const char *name, infl_model_kind *out) {
    if (name && strcmp(name, "mlp") == 0) return *out = INFL_MODEL_MLP, 0;
    if (name && strcmp(name, "gpt") == 0) return *out = INFL_MODEL_GPT, 0;
    if (name && strcmp(name, "captured") == 0) return *out = INFL_MODEL_CAPTURED, 0;
    return -1;
}

size_t infl_spec_nparams(const infl_model_spec *s) {
    if (s->kind == INFL_MODEL_CAPTURED) return infl_captured_woff(&s->cap, s->cap.L);
    return s->kind == INFL_MODEL_GPT ? infl_gpt_layout_of(&s->gpt).total : infl_mlp_nparams(&s->mlp);
}

static int add_tensor(infl_tensor *out, int max, int n, const char *name, int rank, int64_t d0, int64_t d1,
                      size_t off) {
    if (n < max) {
        infl_tensor *t = &out[n];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->rank = rank;
        t->dims[0] = d0;
        t->dims[1] = rank == 2 ? d1 : 0;
        t->off = off;
    }
    return n + 1;
}

int infl_spec_tensors(const infl_model_spec *s, infl_tensor *out, int max) {
    int n = 0;
    char name[48];
    if (s->kind == INFL_MODEL_CAPTURED) {
        const infl_captured_spec *c = &s->cap;
        for (int l = 0; l < c->L; l++) {
            size_t w = infl_captured_woff(c, l);
            snprintf(name, sizeof name, "W%d", l);
            n = add_tensor(out, max, n, name, 2, c->d_out[l], c->d_in[l], w);
            snprintf(name, sizeof name, "b%d", l);
            if (c->bias[l]) n = add_tensor(out, max, n, name, 1, c->d_out[l], 0, w + (size_t)c->d_out[l] * c->d_in[l]);
        }
        return n;
    }
    if (s->kind == INFL_MODEL_MLP) {
        const infl_mlp_spec *m = &s->mlp;
        for (int l = 0; l < m->L; l++) {
            snprintf(name, sizeof name, "W%d", l);
            n = add_tensor(out, max, n, name, 2, m->widths[l + 1], m->widths[l], infl_mlp_woff(m, l));
            snprintf(name, sizeof name, "b%d", l);
            n = add_tensor(out, max, n, name, 1, m->widths[l + 1], 0, infl_mlp_boff(m, l));
        }
        return n;
    }
    const infl_gpt_spec *g = &s->gpt;
    infl_gpt_layout y = infl_gpt_layout_of(g);
    int64_t C = g->dim;
    n = add_tensor(out, max, n, "wte", 2, g->vocab, C, y.wte);
    n = add_tensor(out, max, n, "wpe", 2, g->context, C, y.wpe);
    for (int i = 0; i < g->n_layer; i++) {
        size_t b = y.block * (size_t)i;
        const struct {
            const char *name;
            int rank;
            int64_t d0, d1;
            size_t off;
        } t[] = {
            {"ln_1.weight", 1, C, 0, y.ln1_w},          {"ln_1.bias", 1, C, 0, y.ln1_b},
            {"attn.c_attn.weight", 2, 3 * C, C, y.attn_w}, {"attn.c_attn.bias", 1, 3 * C, 0, y.attn_b},
            {"attn.c_proj.weight", 2, C, C, y.proj_w},     {"attn.c_proj.bias", 1, C, 0, y.proj_b},
            {"ln_2.weight", 1, C, 0, y.ln2_w},          {"ln_2.bias", 1, C, 0, y.ln2_b},
            {"mlp.c_fc.weight", 2, 4 * C, C, y.fc_w},      {"mlp.c_fc.bias", 1, 4 * C, 0, y.fc_b},
            {"mlp.c_proj.weight", 2, C, 4 * C, y.fcp_w},   {"mlp.c_proj.bias", 1, C, 0, y.fcp_b},
        };
        for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
            snprintf(name, sizeof name, "h%d.%s", i, t[k].name);
            n = add_tensor(out, max, n, name, t[k].rank, t[k].d0, t[k].d1, t[k].off + b);
        }
    }
    n = add_tensor(out, max, n, "ln_f.weight", 1, C, 0, y.lnf_w);
    n = add_tensor(out, max, n, "ln_f.bias", 1, C, 0, y.lnf_b);
    return n;
}

static int add_linear(infl_linear *out, int max, int n, const char *name, int din, int dout, int bias, size_t w_off,
                      size_t b_off) {
    if (n < max) {
        infl_linear *l = &out[n];
        snprintf(l->name, sizeof l->name, "%s", name);
        l->d_in = din;
        l->d_out = dout;
        l->bias = bias;
        l->w_off = w_off;
        l->b_off = bias ? b_off : 0;
    }
    return n + 1;
}

int infl_spec_linears(const infl_model_spec *s, int head, infl_linear *out, int max) {
    int n = 0;
    char name[48];
    if (s->kind == INFL_MODEL_CAPTURED) {
        const infl_captured_spec *c = &s->cap;
        for (int l = 0; l < c->L; l++) {
            size_t w = infl_captured_woff(c, l);
            n = add_linear(out, max, n, c->names[l], c->d_in[l], c->d_out[l], c->bias[l], w,
                           w + (size_t)c->d_out[l] * c->d_in[l]);
        }
        return n;
    }
    if (s->kind == INFL_MODEL_MLP) {
        const infl_mlp_spec *m = &s->mlp;
        for (int l = 0; l < m->L; l++) {
            snprintf(name, sizeof name, "layer%d", l);
            n = add_linear(out, max, n, name, m->widths[l], m->widths[l + 1], 1, infl_mlp_woff(m, l),
                           infl_mlp_boff(m, l));
        }
        return n;
    }
    const infl_gpt_spec *g = &s->gpt;
    infl_gpt_layout y = infl_gpt_layout_of(g);
    int C = g->dim;
    for (int i = 0; i < g->n_layer; i++) {
        size_t b = y.block * (size_t)i;
        snprintf(name, sizeof name, "h%d.attn.c_attn", i);
        n = add_linear(out, max, n, name, C, 3 * C, 1, y.attn_w + b, y.attn_b + b);
        snprintf(name, sizeof name, "h%d.attn.c_proj", i);
        n = add_linear(out, max, n, name, C, C, 1, y.proj_w + b, y.proj_b + b);
        snprintf(name, sizeof name, "h%d.mlp.c_fc", i);
        n = add_linear(out, max, n, name, C, 4 * C, 1, y.fc_w + b, y.fc_b + b);
        snprintf(name, sizeof name, "h%d.mlp.c_proj", i);
        n = add_linear(out, max, n, name, 4 * C, C, 1, y.fcp_w + b, y.fcp_b + b);
    }
    if (head) n = add_linear(out, max, n, "lm_head", C, g->vocab, 0, y.wte, 0);
    return n;
}

infl_status infl_spec_check(infl_ctx *ctx, const infl_model_spec *s) {
    if (s->kind == INFL_MODEL_GPT) return infl_gpt_spec_check(ctx, &s->gpt);
    if (s->kind == INFL_MODEL_CAPTURED) return infl_captured_spec_check(ctx, &s->cap);
    RETURN_IF(ctx, s->kind != INFL_MODEL_MLP, INFL_E_ARG, "model kind %d: expected mlp, gpt or captured", (int)s->kind);
    return infl_mlp_spec_check(ctx, &s->mlp);
}

double infl_spec_objective_wd(const infl_model_spec *s) {
    return s->kind == INFL_MODEL_MLP ? s->mlp.wd : s->kind == INFL_MODEL_CAPTURED ? s->cap.wd : 0.0;
}

void infl_spec_describe(const infl_model_spec *s, char *buf, size_t size) {
    if (s->kind == INFL_MODEL_CAPTURED) {
        const infl_captured_spec *c = &s->cap;
        size_t np = infl_spec_nparams(s);
        snprintf(buf, size, "captured, %d linear layers (%s %dx%d ... %s %dx%d), %zu parameters%s", c->L, c->names[0],
                 c->d_out[0], c->d_in[0], c->names[c->L - 1], c->d_out[c->L - 1], c->d_in[c->L - 1], np,
                 c->tokens ? ", token rows" : "");
        return;
    }
    if (s->kind == INFL_MODEL_GPT) {
        const infl_gpt_spec *g = &s->gpt;
        snprintf(buf, size, "gpt %d layers, %d heads, dim %d, context %d, vocab %d", g->n_layer, g->n_head, g->dim,
                 g->context, g->vocab);
        return;
    }
    size_t at = 0;
    buf[0] = 0;
    for (int l = 0; l <= s->mlp.L && at < size; l++)
        at += (size_t)snprintf(buf + at, size - at, "%s%d", l ? "-" : "", s->mlp.widths[l]);
    if (at < size) snprintf(buf + at, size - at, " %s %s", infl_act_name(s->mlp.act), infl_loss_name(s->mlp.loss));
}
