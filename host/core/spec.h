/*
 * spec.h — the descriptions of the models infl knows, as run files record them: the
 * MLP's widths, activation, loss and weight decay; the GPT's architecture; and for
 * either, the named parameter tensors and their place in the one flat float32
 * parameter vector every model is trained and attributed in. Plain data shared by the
 * store (which writes and reads them), the models (which compute with them) and the
 * command line; no computation on a backend here.
 *
 * MLP parameter layout (infl_mlp_nparams floats):
 *   for l = 0 .. L-1:  W_l (d_{l+1}, d_l) row-major, then b_l (d_{l+1})
 * so W̃_l = [W_l | b_l] and the per-example gradient of layer l is δ_l ã_{l-1}ᵀ.
 *
 * GPT parameter layout (GPT-2, nanoGPT's names; linear weights (d_out, d_in) like
 * torch.nn.Linear), in this order:
 *   wte (V, C), wpe (context, C), then per block i: h{i}.ln_1.weight (C), .bias (C),
 *   h{i}.attn.c_attn.weight (3C, C), .bias (3C), h{i}.attn.c_proj.weight (C, C), .bias (C),
 *   h{i}.ln_2.weight (C), .bias (C), h{i}.mlp.c_fc.weight (4C, C), .bias (4C),
 *   h{i}.mlp.c_proj.weight (C, 4C), .bias (C); then ln_f.weight (C), ln_f.bias (C).
 * The output head is tied to wte (logits = LN_f(x) wteᵀ): it has no tensor of its own.
 */
#ifndef INFL_SPEC_H
#define INFL_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "infl.h"

// Attributed linear layers a model may have (the seam's list; a GPT of 60 blocks).
#define INFL_MAX_LINEAR 256
// Named parameter tensors a model may have.
#define INFL_MAX_TENSORS 1024

// infl_model_kind (mlp | gpt) is public: infl.h.

typedef struct {
    int L;                              // weight layers
    int widths[INFL_MAX_LAYERS + 1];    // d_0 .. d_L
    infl_activation act;                // between layers (not after the last)
    infl_loss loss;                     // on the logits z_L
    double wd;                          // weight decay of R(w) (all parameters)
} infl_mlp_spec;

typedef struct {
    int n_layer;    // transformer blocks
    int n_head;     // attention heads (dim % n_head == 0)
    int dim;        // C, the residual stream's width
    int context;    // T, the longest sequence (positions of wpe)
    int vocab;      // V, tokens (the tokenizer's vocabulary, end-of-text included)
    int eot;        // the end-of-text token's id (0 <= eot < vocab): documents start and end with it
    double wd;      // AdamW's decoupled weight decay (of the matrices); not a term of the loss
} infl_gpt_spec;

// A captured model (models/captured.c, the `captured` file of store/store.h): only its
// attributed linear layers are known, in the order they were captured. Its parameter
// vector is the layer space: per layer W (d_out, d_in) row-major, then b (d_out) with a
// bias (tensors "W{l}", "b{l}" of a checkpoint).
typedef struct {
    int L;                            // layers
    int d_in[INFL_MAX_LINEAR];
    int d_out[INFL_MAX_LINEAR];
    int bias[INFL_MAX_LINEAR];        // 1: the layer adds a bias
    char names[INFL_MAX_LINEAR][48];  // the modules' names ("0", "transformer.h.0.attn.c_attn")
    int outputs;                      // the model's output width (classes, vocabulary); 0 unknown
    int tokens;                       // 1: an example is several token rows; 0: one row
    double wd;                        // weight decay that is part of the training objective (L2 of every
                                      // captured weight: (wd/2)|w|²); 0 unknown or none
} infl_captured_spec;

typedef struct {
    infl_model_kind kind;
    infl_mlp_spec mlp;  // kind MLP
    infl_gpt_spec gpt;  // kind GPT
    infl_captured_spec cap;  // kind CAPTURED
} infl_model_spec;

// A named parameter tensor: rank 1 or 2, (dims[0]) or (dims[0], dims[1]) row-major at
// offset `off` of the flat parameter vector.
typedef struct {
    char name[48];
    int rank;
    int64_t dims[2];
    size_t off;
} infl_tensor;

// An attributed linear layer (DESIGN.md, the model seam): z = W a + b with W
// (d_out, d_in) row-major at offset w_off of the parameter vector and, when `bias`,
// b (d_out) at b_off. Its per-token gradient is δ ãᵀ with ã = [a; 1] (bias) or a.
typedef struct {
    char name[48];  // "layer0", "h0.attn.c_attn", "lm_head"
    int d_in, d_out;
    int bias;       // 1: ã = [a; 1], W̃ = [W | b]; 0: ã = a
    size_t w_off, b_off;
} infl_linear;

// Inputs of the layer's gradient factor: d_in + 1 with a bias, else d_in.
static inline int infl_linear_ni(const infl_linear *l) { return l->d_in + (l->bias ? 1 : 0); }
// Parameters of the layer: d_out (d_in + bias).
static inline size_t infl_linear_size(const infl_linear *l) { return (size_t)l->d_out * (size_t)infl_linear_ni(l); }

// ---- the MLP ----

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

// ---- the GPT ----

// Offsets of the GPT's tensors in the flat vector (the layout above).
typedef struct {
    size_t wte, wpe, lnf_w, lnf_b, total;
    size_t ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fcp_w, fcp_b;  // of block 0
    size_t block;  // floats per block: block i's tensors are at the block-0 offsets + i·block
} infl_gpt_layout;
infl_gpt_layout infl_gpt_layout_of(const infl_gpt_spec *s);

// Validates a spec: 1..60 blocks, heads dividing dim, dim 1..16384, context 2..65536,
// vocabulary 2..1048576, 0 <= eot < vocabulary, wd >= 0 and finite. INFL_E_ARG with a detail.
infl_status infl_gpt_spec_check(infl_ctx *ctx, const infl_gpt_spec *s);

// ---- a captured model ----

// Validates a spec: 1 to INFL_MAX_LINEAR layers, widths 1 to 2^24, bias 0 or 1, names
// non-empty, outputs >= 0, tokens 0 or 1. INFL_E_ARG with a detail.
infl_status infl_captured_spec_check(infl_ctx *ctx, const infl_captured_spec *s);
// Offsets of layer l's W and b in the parameter vector (the layer space).
size_t infl_captured_woff(const infl_captured_spec *s, int l);

// ---- any model ----

const char *infl_model_kind_name(infl_model_kind k);  // "mlp" | "gpt"
int infl_model_kind_parse(const char *name, infl_model_kind *out);  // 0, or -1 when unknown
// Parameters of the flat vector.
size_t infl_spec_nparams(const infl_model_spec *s);
// The named tensors in layout order into out (at most max); returns how many there are.
int infl_spec_tensors(const infl_model_spec *s, infl_tensor *out, int max);
// The spec's own check (mlp or gpt).
infl_status infl_spec_check(infl_ctx *ctx, const infl_model_spec *s);
// Weight decay that is part of the training objective R(w) (so of its Hessian): the
// MLP's wd, a captured model's recorded one; 0 for the GPT (AdamW's decay is decoupled,
// not a loss term).
double infl_spec_objective_wd(const infl_model_spec *s);
// The attributed linear layers of a model into out (at most max); returns how many.
// MLP: every layer ("layer0", ...). GPT: per block h{i}.attn.c_attn, h{i}.attn.c_proj,
// h{i}.mlp.c_fc, h{i}.mlp.c_proj, then with `head` the tied output head "lm_head"
// (d_in = dim, d_out = vocab, no bias, its weight wte). Embeddings and LayerNorms are
// not attributed.
int infl_spec_linears(const infl_model_spec *s, int head, infl_linear *out, int max);
// A one-line description: "784-256-128-10 relu softmax_ce", "gpt 4 layers, 4 heads, dim 128, context 256, vocab 257".
void infl_spec_describe(const infl_model_spec *s, char *buf, size_t size);

#endif
