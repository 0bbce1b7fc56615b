/*
 * spec.h — the shape of an MLP (widths, activation, loss, weight decay) and the
 * layout of its flat parameter vector. Shared by the model, the trainer and the store.
 *
 * Parameter layout (float32, one flat vector of infl_mlp_nparams entries):
 *   for l = 0 .. L-1:  W_l (d_{l+1}, d_l) row-major, then b_l (d_{l+1})
 * so W̃_l = [W_l | b_l] and the per-example gradient of layer l is δ_l ã_{l-1}ᵀ.
 */
#ifndef INFL_SPEC_H
#define INFL_SPEC_H

#include <stddef.h>

#include "infl.h"

typedef struct {
    int L;                              // weight layers
    int widths[INFL_MAX_LAYERS + 1];    // d_0 .. d_L
    infl_activation act;                // between layers (not after the last)
    infl_loss loss;                     // on the logits z_L
    double wd;                          // weight decay of R(w) (all parameters)
} infl_mlp_spec;

// Total parameters: sum over l of d_{l+1} (d_l + 1).
size_t infl_mlp_nparams(const infl_mlp_spec *s);
// Offset of W_l and of b_l in the flat vector.
size_t infl_mlp_woff(const infl_mlp_spec *s, int l);
size_t infl_mlp_boff(const infl_mlp_spec *s, int l);

// Names as stored in files and taken on the command line.
const char *infl_act_name(infl_activation a);   // "relu" | "tanh" | "gelu"
const char *infl_loss_name(infl_loss l);        // "softmax_ce" | "sigmoid_ce" | "mse"
// Parse a name; return 0 on success, -1 when unknown.
int infl_act_parse(const char *name, infl_activation *out);
int infl_loss_parse(const char *name, infl_loss *out);

// Validates a spec: 1 <= L <= INFL_MAX_LAYERS, every width >= 1, sigmoid_ce has
// d_L == 1, softmax_ce has d_L >= 2, wd >= 0 and finite. INFL_E_ARG with a detail.
infl_status infl_mlp_spec_check(infl_ctx *ctx, const infl_mlp_spec *s);

#endif
