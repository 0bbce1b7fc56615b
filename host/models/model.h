/*
 * model.h — THE SEAM (DESIGN.md "Architecture"): everything the estimators and the
 * attribution pipelines know of a model. A model is
 *
 *   - a list of attributed linear layers (core/spec.h infl_linear: name, d_in, d_out,
 *     bias or not, where W and b live in the flat parameter vector), and
 *   - a batch function: for b examples at a checkpoint's parameters, a forward pass,
 *     then a backward pass at the data's targets or at targets sampled from the
 *     model (the true Fisher), which hands out, for every layer, its inputs A (rows,
 *     d_in) and its output gradients Δ (rows, d_out), one row per token, the rows of
 *     example i contiguous ([row_off[i], row_off[i+1]): T_i rows; T = 1 for the MLP),
 *     plus every example's loss (the sum over its tokens).
 *
 * An example's gradient in layer l is Σ_t δ_t ã_tᵀ with ã = [a; 1] when the layer has
 * a bias (DESIGN.md "The math"). Estimators work in the *layer space*: the
 * concatenation over layers of [vec(W) (d_out·d_in, row-major) | b (d_out, with a
 * bias)], layer l at offset m->loff[l], m->lsize floats in all. For the MLP the layer
 * space is the parameter vector itself.
 *
 * Written ggml-style: an implementation fills a `static const infl_model_iface` and a
 * context (`impl`); infl_model_* below are thin wrappers. Implementations: the MLP
 * (models/mlp.c), the GPT (models/gpt.c), and a model captured from PyTorch
 * (models/captured.c: A and Δ read from a `captured` file, not computed). Models that can also give Hessian-vector
 * products (the MLP) fill the optional hvp_create slot and serve exact influence
 * functions; every other estimator needs only the layers and the batch function.
 */
#ifndef INFL_MODEL_H
#define INFL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "core/spec.h"
#include "models/hvp.h"
#include "store/store.h"

// A sub-batch of b examples on the backend (what the scheduler's stage uploads).
typedef struct {
    int b;               // examples
    int64_t index0;      // the first one's row within its split: sampled labels are keyed by it
    // rows (the MLP): features and targets
    const float *x;      // (b, D)
    const int32_t *y;    // (b) class labels, or NULL
    const float *yf;     // (b, K) real targets, or NULL
    // documents (the GPT), host memory: each example's first min(len[i], T) tokens
    const int32_t *tok;  // (b, T) host: token ids, padded
    int T;               // tokens per example in tok (the model's context)
    const int32_t *len;  // (b) host: the documents' full token counts
    const int32_t *loss_range;  // (b, 2) host or NULL: example i's loss is the sum over the token
                                // positions [lo, hi) only (position t predicts token t; t = len the
                                // EOT): a completion's tokens after its prompt. NULL: every position
    // captured examples (models/captured.c), which the model reads itself: the split they come
    // from and the checkpoint whose capture to read (its name in the run); ignored by others
    const infl_split *split;
    const char *ckpt;
} infl_batch;

// The targets of a backward pass.
typedef struct {
    int sampled;    // 0: the data's targets; 1: drawn from the model's predictive distribution
    uint64_t seed;  // sampled: the key (with the example's index, or its token row's)
} infl_targets;

typedef struct infl_model infl_model;

// What a batch hands out: forward fills the rows (b, rows, row_off), backward the
// factors (A, Δ) and the losses at its targets.
typedef struct {
    int maxB;           // examples the buffers hold
    int b;              // examples of the last forward
    int rows;           // token rows of the last forward (b for T = 1)
    int *row_off;       // (maxB + 1) host: example i's rows are [row_off[i], row_off[i+1])
    const float **A;    // (nlayers) backend: layer inputs a (rows, d_in), without the bias's 1
    const float **D;    // (nlayers) backend: output gradients δ (rows, d_out), unscaled
    float *loss;        // (maxB) backend: per-example loss at the last backward's targets
    void *impl;         // the implementation's buffers
} infl_model_work;

typedef struct infl_model_iface {
    const char *kind;  // "mlp", "gpt", ...
    void (*free)(infl_model *m);
    // Checks that a split can feed the model (kind of split, widths, label kinds and
    // ranges known from the file); errors name the data reference.
    infl_status (*check_data)(infl_ctx *ctx, const infl_model *m, const infl_split *split);
    // Checks n host labels (class or token targets) of rows [row0, row0 + n) of a
    // split before they are uploaded; NULL when there is nothing to check.
    infl_status (*check_labels)(infl_ctx *ctx, const infl_model *m, const infl_split *split, const int32_t *y,
                                int64_t row0, int64_t n);
    // The implementation's part of a work whose generic fields (maxB, row_off, A, D)
    // infl_model_work_create has allocated: sets impl and loss. On failure work_free
    // is called on what it left.
    infl_status (*work_create)(infl_ctx *ctx, const infl_model *m, infl_model_work *w);
    // Frees what work_create set (impl, and loss where the implementation owns it).
    void (*work_free)(infl_ctx *ctx, infl_model_work *w);
    // Forward pass of a batch at params (backend, nparams floats): the rows of its
    // examples (w->b, w->rows, w->row_off) and what predict and backward need. The
    // losses come with the backward, which computes them with the output gradient.
    infl_status (*forward)(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                           infl_model_work *w);
    // Backward pass after forward (the forward state is kept: backward may be called
    // again with other targets): w->A, w->D and w->loss for the targets; with grad
    // (backend, nparams floats) also grad = scale · Σ_i ∇ℓ_i (loss only, no weight
    // decay; parameters outside the gradient's reach are set to 0).
    infl_status (*backward)(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                            const infl_targets *tg, infl_model_work *w, float *grad, float scale);
    // Host pred (b): the predicted class of each example of the last forward, -1 when
    // the model predicts no class (real targets, token sequences).
    infl_status (*predict)(infl_ctx *ctx, const infl_model *m, infl_model_work *w, int32_t *pred);
    // Floating-point operations of forward + backward (the factors, no weight
    // gradients) of `rows` token rows, counted from the shapes (benchmarks' ratios).
    double (*fb_flops)(const infl_model *m, double rows);
    // Optional (NULL: none): the operator v -> H v of the training objective at params
    // on a split's rows (models/hvp.h), for exact influence functions. Models that fill
    // it have a layer space equal to their parameter vector. split NULL: an operator on
    // batches of up to `samples` rows given to each call (infl_hvp_apply_batch: the
    // minibatch Hessians of sgd-influence).
    infl_status (*hvp_create)(infl_ctx *ctx, const infl_model *m, const float *params, infl_split *split,
                              int64_t samples, infl_hessian kind, int64_t shard_rows, double cache_mb,
                              infl_hvp **out);
} infl_model_iface;

struct infl_model {
    const infl_model_iface *iface;
    void *impl;                      // the implementation's context
    infl_model_spec spec;            // as recorded in the run file
    size_t nparams;                  // the flat parameter vector
    int nlayers;                     // attributed linear layers
    infl_linear layer[INFL_MAX_LINEAR];
    size_t loff[INFL_MAX_LINEAR];    // layer l's offset in the layer space
    size_t lsize;                    // the layer space: Σ_l d_out (d_in + bias)
    int tokens;                      // 0: one row per example (T = 1); 1: examples of T_i token rows
    int outputs;                     // K: classes, targets or the vocabulary
    double wd;                       // weight decay that is part of the objective's Hessian
    const infl_tokenizer *tokenizer; // the tokenizer of the model's documents when known (a GPT run's,
                                     // borrowed; set by whoever opens the run): check_data refuses
                                     // documents tokenized otherwise    // The output head, for methods that refit it (representer points): the layer whose output z (one
    // row per example) is the logits the loss `out_loss` reads directly, ℓ(z); -1 when there is none
    // (the GPT's head is tied to its token embedding and reads token rows).
    int logits_layer;
    infl_loss out_loss;
};

// Creates the model a spec describes (MLP, GPT or captured). head: the GPT's tied output head
// is attributed too (ignored by the MLP). *out owns it (infl_model_free).
infl_status infl_model_create(infl_ctx *ctx, const infl_model_spec *spec, int head, infl_model **out);
void infl_model_free(infl_model *m);  // accepts NULL

// Fills the generic fields (layers, offsets, sizes) from the spec; for implementations.
void infl_model_init_layers(infl_model *m, int head);

static inline const char *infl_model_kind_of(const infl_model *m) { return m->iface->kind; }
static inline infl_status infl_model_check_data(infl_ctx *ctx, const infl_model *m, const infl_split *split) {
    return m->iface->check_data(ctx, m, split);
}
static inline infl_status infl_model_check_labels(infl_ctx *ctx, const infl_model *m, const infl_split *split,
                                                  const int32_t *y, int64_t row0, int64_t n) {
    return m->iface->check_labels ? m->iface->check_labels(ctx, m, split, y, row0, n) : INFL_OK;
}
// The buffers of batches of up to maxB examples: the generic fields, then the
// implementation's (iface->work_create).
infl_status infl_model_work_create(infl_ctx *ctx, const infl_model *m, int maxB, infl_model_work **out);
void infl_model_work_free(infl_ctx *ctx, const infl_model *m, infl_model_work *w);
static inline infl_status infl_model_forward(infl_ctx *ctx, const infl_model *m, const float *params,
                                             const infl_batch *bt, infl_model_work *w) {
    return m->iface->forward(ctx, m, params, bt, w);
}
static inline infl_status infl_model_backward(infl_ctx *ctx, const infl_model *m, const float *params,
                                              const infl_batch *bt, const infl_targets *tg, infl_model_work *w,
                                              float *grad, float scale) {
    return m->iface->backward(ctx, m, params, bt, tg, w, grad, scale);
}
// Forward, then backward at the data's targets: the factors of every layer in w.
infl_status infl_model_factors(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                               infl_model_work *w);
static inline infl_status infl_model_predict(infl_ctx *ctx, const infl_model *m, infl_model_work *w,
                                             int32_t *pred) {
    return m->iface->predict(ctx, m, w, pred);
}
// INFL_E_UNSUPPORTED naming the model kind (and the alternative) when it gives no
// Hessian-vector products; INFL_OK when it does.
infl_status infl_model_need_hvp(infl_ctx *ctx, const infl_model *m);
// The model's HVP operator (infl_model_need_hvp's error when it has none).
infl_status infl_model_hvp_create(infl_ctx *ctx, const infl_model *m, const float *params, infl_split *split,
                                  int64_t samples, infl_hessian kind, int64_t shard_rows, double cache_mb,
                                  infl_hvp **out);

// Largest d_in, d_out, d_in + bias and d_out (d_in + bias) over the layers.
int infl_model_max_in(const infl_model *m);
int infl_model_max_out(const infl_model *m);
int infl_model_max_ni(const infl_model *m);
size_t infl_model_max_layer_size(const infl_model *m);

// Floating-point operations of a forward and a backward pass (the factors, no weight
// gradients) of a batch of `rows` token rows, counted from the shapes.
static inline double infl_model_fb_flops(const infl_model *m, double rows) { return m->iface->fb_flops(m, rows); }

// "784-256-128-10 relu softmax_ce", "gpt 4 layers, ...".
void infl_model_describe(const infl_model *m, char *buf, size_t size);

#endif
