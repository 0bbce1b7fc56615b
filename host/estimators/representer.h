/*
 * representer.h — representer points (Yeh et al. 2018) on the model seam: the model's
 * logits layer W̃ = [W | b] (model.h's logits_layer: its output Φ is what the loss reads)
 * is fine-tuned, on the features f̃ = [f; 1] its earlier layers make of the training rows,
 * to the optimum of
 *
 *     R(W̃) = (1/n) Σ_i ℓ(W̃ f̃_i, y_i) + λ |W̃|²      (the bias folded in, regularised too)
 *
 * by the float64 Newton of models/convex.c (wd = 2λ in its terms). There ∇R = 0 gives
 * W̃ = Σ_i α_i f̃_iᵀ with α_i = −(1/(2λn)) ∂ℓ_i/∂Φ_i (K), so every prediction splits over
 * the training rows exactly: Φ(x_q) = W̃ f̃_q = Σ_i α_i (f̃_iᵀ f̃_q). Training row z's score
 * for query q and class c is its term α_{z,c} f̃_zᵀ f̃_q: the ghost dot product of
 * rank.c with the query's "output gradient" the one-hot e_c and the train row's
 * ∂ℓ_z/∂Φ_z, weighted by −1/(2λn) (estimators/score.h).
 */
#ifndef INFL_REPRESENTER_H
#define INFL_REPRESENTER_H

#include "estimators/stats.h"
#include "models/model.h"

typedef struct {
    const infl_model *m;
    int l;                  // the logits layer
    int d, K;               // its inputs (features) and outputs (classes)
    double wd;              // 2λ
    int64_t n;              // training rows
    double *W, *W0;         // (K d + K) float64: the fine-tuned and the run's W (K, d) row-major, then b (K)
    float *Wft;             // backend: the fine-tuned layer in float32, same layout
    const float *params;    // backend: the checkpoint's parameters (borrowed): the run's layer inside
    infl_representer_fit fit;
    // the logits over the train split, original (x) against fine-tuned (y); rows right before and after
    stats_corr corr;
    int64_t right0, right1, rows;
    // scratch for sub-batches of up to B rows: backend Z, Z0, G (B, K) and correct (2B); host twins
    int B;
    float *Z, *Z0, *G, *hZ, *hZ0;
    float *rn, *hrn;  // (B) row norms, backend and host (self)
    int32_t *ok, *hok;
} repr_layer;

// Checks that the model has a layer to fine-tune (a logits layer with a bias, one row per
// example, a loss on classes) and resolves λ: lambda > 0, or 0 for the model's weight decay / 2.
// Errors name the run.
infl_status repr_check(infl_ctx *ctx, const infl_model *m, const char *run, double lambda, double *lambda_out);

// Fine-tunes the logits layer of m at params (backend) on the split's rows (every row: n of them):
// the features are the layer's inputs through the seam's forward (in sub-batches of B rows), held
// for every row when they fit in 1 GiB, else recomputed shard by shard (shard_rows, or shard_mb
// MiB) at every pass of the Newton. Fills r (free with repr_free, also on failure) and r->fit's
// lambda, grad_norm, decomposition_bound, iters, cg_iters, seconds, n.
infl_status repr_fit(infl_ctx *ctx, repr_layer *r, const infl_model *m, const float *params, infl_split *split,
                     double lambda, int64_t shard_rows, double shard_mb, int B);
void repr_free(infl_ctx *ctx, repr_layer *r);

// For a sub-batch of b <= B training rows whose factors are in w (the seam's forward and
// backward at the checkpoint) with their labels y (backend (b)): r->G (backend (b, K)) =
// ∂ℓ_i/∂Φ_i at the fine-tuned layer, unscaled (α_i = −G_i / (2λn) = repr_alpha_scale · G_i),
// and the sub-batch's logits (original and fine-tuned) and accuracies into the train statistics.
infl_status repr_train_block(infl_ctx *ctx, repr_layer *r, const infl_model_work *w, const int32_t *y, int b);
static inline double repr_alpha_scale(const repr_layer *r) { return -1.0 / (r->wd * (double)r->n); }
// After repr_train_block on the same sub-batch, with its labels y (b) on the host: out (b) =
// α_{i,y_i} (|f_i|² + 1), training row i's part of its own label's fine-tuned logit (self).
infl_status repr_self_block(infl_ctx *ctx, repr_layer *r, const infl_model_work *w, const int32_t *y, int b,
                            double *out);
// The train statistics so far into r->fit (train_pearson, train_acc_before, train_acc_after).
void repr_finish_train(repr_layer *r);

// Host float64 logits Z (M, K) = W f̃ of M feature rows f (M, d) for a layer W (repr_layer layout).
void repr_logits(double *Z, const repr_layer *r, const double *W, const float *f, int M);
// The class a row of logits z (K) predicts (sigmoid_ce: 1 when z > 0).
int repr_argmax(const repr_layer *r, const double *z);
// g (K) = ∂ℓ/∂Φ at logits z (K) and label y: softmax(z) − e_y, or σ(z) − y (sigmoid_ce).
void repr_loss_grad(double *g, const repr_layer *r, const double *z, int y);
// The sign of class c's logit in Φ: 1, but for sigmoid_ce's one output −1 for class 0.
static inline double repr_class_sign(const repr_layer *r, int c) {
    return r->m->out_loss == INFL_LOSS_SIGMOID_CE && c == 0 ? -1.0 : 1.0;
}
// The column of Φ class c reads: c, or 0 for sigmoid_ce.
static inline int repr_class_col(const repr_layer *r, int c) { return r->m->out_loss == INFL_LOSS_SIGMOID_CE ? 0 : c; }

#endif
