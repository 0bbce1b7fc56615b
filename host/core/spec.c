/*
 * spec.c — MLP shapes, parameter layout and the names of activations and losses.
 */
#include <math.h>
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
