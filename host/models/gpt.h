/*
 * gpt.h — the GPT (GPT-2's architecture) on the backend: token and position
 * embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP
 * of 4× width with residuals, a final LayerNorm, and an output head tied to the token
 * embedding (core/spec.h gives the parameter layout). The reference is the plain
 * sequence of backend primitives below; both backends run the same code.
 *
 * A document of L tokens t_0 .. t_{L-1} is one example of n = min(L + 1, context)
 * positions: inputs [EOT, t_0, ..., t_{n-2}], targets [t_0, ..., t_{n-1}] where
 * t_L = EOT (so the model learns where a document ends, and generation can start
 * from EOT alone). The loss of a document is the sum over its positions of the
 * next-token cross-entropy; longer documents are truncated to the context.
 *
 * Forward of a batch of B documents pads them to Tb = max n positions (targets of
 * padding rows are masked); attention is causal, so padding never reaches a real
 * position. The model seam (model.h) sees per attributed layer (per block c_attn,
 * c_proj, c_fc, mlp c_proj, and with `head` the tied lm_head) the inputs and output
 * gradients of the real positions only, example by example (padding compacted away).
 */
#ifndef INFL_GPT_H
#define INFL_GPT_H

#include "model.h"

// LayerNorm's epsilon (GPT-2's).
#define INFL_GPT_LN_EPS 1e-5f

typedef struct gpt_work gpt_work;

// Buffers for batches of up to maxB documents of up to `context` positions.
infl_status gpt_work_create(infl_ctx *ctx, const infl_gpt_spec *s, int maxB, gpt_work **out);
void gpt_work_free(infl_ctx *ctx, gpt_work *w);  // accepts NULL

// Forward pass of B documents (tok (B, T) host, each document's first min(len, T)
// tokens; len (B) host: full lengths; T >= context) at params (backend): logits and
// the logits. *tokens gets the positions that carry a loss (Σ n_i), *truncated the
// documents longer than the context allows.
// The next gpt_forward's loss positions: document i's targets at positions
// [range[2i], range[2i+1]) carry a loss, the others none (as padding). Position t's
// target is token t of the document, or EOT at t = len. NULL (and after every
// forward): all positions. range is the caller's until that forward returns.
void gpt_set_loss_ranges(gpt_work *w, const int32_t *range);
infl_status gpt_forward(infl_ctx *ctx, const infl_gpt_spec *s, const float *params, const int32_t *tok, int T,
                        const int32_t *len, int B, gpt_work *w, int64_t *tokens, int *truncated);
// Positions per document of the last forward's batch (documents padded to the longest).
int gpt_padded_positions(const gpt_work *w);
// Backend memory the buffers hold (activations and their gradients for maxB documents
// of `context` positions).
size_t gpt_work_bytes(const gpt_work *w);

// ---- a training step (the trainer's and the benchmark's) ----

// AdamW's state: parameters, gradient and moments (backend, nparams floats each), and
// the tensors (matrices and embeddings decay, vectors do not).
typedef struct {
    size_t P;
    float *W, *G, *M, *V;
    int ntensors;
    infl_tensor *tensors;
} gpt_adamw;
// Allocates the state with W from the host vector params; moments 0.
infl_status gpt_adamw_create(infl_ctx *ctx, const infl_gpt_spec *s, const float *params, gpt_adamw *a);
void gpt_adamw_free(infl_ctx *ctx, gpt_adamw *a);
// One step on B documents: forward, backward of the mean loss per position, the
// gradient's global norm (*gnorm, before clipping; clipped to `clip` when clip > 0),
// and AdamW at rate lr (step >= 1). *loss gets the batch's summed loss, *ntok its
// positions. A non-finite loss or norm skips the update (the caller decides).
infl_status gpt_train_step(infl_ctx *ctx, const infl_gpt_spec *s, gpt_adamw *a, gpt_work *w, const int32_t *tok, int T,
                           const int32_t *len, int B, double lr, double beta1, double beta2, double eps, double wd,
                           double clip, int step, double *loss, int64_t *ntok, double *gnorm, int *truncated);
// Per-document losses into host out (B), the sum over its positions: at the last
// backward's targets, or (forward only) at the documents' next tokens.
infl_status gpt_doc_losses(infl_ctx *ctx, gpt_work *w, double *out);
// Backward after gpt_forward: at the data's targets (sampled = 0) or at targets drawn
// from the model per position (sampled = 1, keyed by seed and doc_index0 + i, the
// document's index within its split, times the context, plus the position). With grad
// (backend, nparams floats): grad = scale · Σ_docs ∇ loss (all parameters).
infl_status gpt_backward(infl_ctx *ctx, const infl_gpt_spec *s, const float *params, gpt_work *w, int sampled,
                         uint64_t seed, int64_t doc_index0, float *grad, float scale);
// The logits (V) at position `pos` of document i of the last forward, into host out.
infl_status gpt_logits_at(infl_ctx *ctx, const infl_gpt_spec *s, gpt_work *w, int i, int pos, float *out);

// Seeded initialisation into a host vector (nparams): linear weights and embeddings
// N(0, 0.02²) (the residual projections N(0, (0.02/√(2·layers))²)), biases 0,
// LayerNorm weights 1 and biases 0; drawn from the counter generator keyed by (seed,
// INFL_RNG_INIT, parameter index).
void infl_gpt_init(const infl_gpt_spec *s, uint64_t seed, float *params);

// FLOPs of a forward and backward (weight gradients included) over `rows` positions of
// documents padded to T positions: 6 per parameter per position for the linear layers
// and the head, plus attention's 12 T C per position (forward 4, backward 8).
double infl_gpt_train_flops(const infl_gpt_spec *s, double rows, int T);

#endif
