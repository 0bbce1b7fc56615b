/*
 * shapley.h — Data Shapley's estimators on rows held in memory, in float64 (Ghorbani &
 * Zou 2019; Jia et al. 2019). The pipeline (pipelines/shapley.c) reads the rows, runs
 * these over threads and keeps the state; everything here is a pure function of its
 * arguments and a per-thread scratch, so distinct works run in parallel.
 *
 *   utility U(S)    a model fitted to the training rows S, scored on the validation
 *                   rows: accuracy, or minus the mean cross-entropy. The model is the
 *                   convex one (softmax regression with weight decay, fitted to its
 *                   optimum by Newton-CG, models/convex.c) or a small MLP (one tanh
 *                   hidden layer, `epochs` passes of per-example SGD from a seeded
 *                   initialisation). U(∅) is the untrained model's score (the convex
 *                   model's w = 0: uniform probabilities, ties to class 0).
 *                   A subset's rows are fitted in index order, so U is a function of
 *                   the set (the MLP's fit depends on the order and the start).
 *   TMC             one permutation π: U of the growing prefixes (the convex model's
 *                   fit warm started from the previous prefix's optimum, the MLP's from
 *                   the untrained model); example π_j gets U(π_1..j) − U(π_1..j−1).
 *                   Truncation: after `patience` prefixes in a row whose utility is
 *                   within tolerance·|U(N)| of U(N), the rest of π get 0.
 *   G-Shapley       one permutation: one SGD step per example in π's order from the
 *                   untrained model; example π_j gets the utility's change across its step.
 *   exact           U of every subset (n ≤ 16), then
 *                   φ_i = Σ_{S ∌ i} |S|! (n − |S| − 1)! / n! · (U(S ∪ i) − U(S)).
 *   KNN-Shapley     the closed form of Jia et al. (Theorem 1) for one validation point
 *                   given the training points sorted by distance.
 */
#ifndef INFL_SHAPLEY_H
#define INFL_SHAPLEY_H

#include <stdint.h>

#include "core/internal.h"
#include "models/train.h"

#define SHAP_PATIENCE 5    // prefixes in a row within the tolerance before TMC truncates
#define SHAP_EXACT_MAX 16  // exact Shapley enumerates 2^n subsets

typedef struct {
    int64_t n;              // training rows
    int D, K;               // features, classes
    const double *x;        // (n, D)
    const int32_t *y;       // (n) in [0, K)
    int64_t V;              // validation rows
    const double *vx;       // (V, D)
    const int32_t *vy;      // (V)
    int utility_loss;       // 0: accuracy; 1: minus the mean cross-entropy
    int mlp;                // 0: the convex model; 1: the MLP
    int hidden;             // the MLP's hidden width
    int epochs;             // the MLP's SGD passes per fit
    double wd;              // weight decay of either model
    double lr;              // SGD's rate (the MLP's fits; G-Shapley's steps)
    uint64_t seed;          // the MLP's initialisation and its fits' example order
    infl_convex_options fit;// the convex model's Newton (tol, max_iters)
    double tolerance;       // truncation, relative to |U(N)|; 0: none
    double u_all, u_empty;  // U(N) and U(∅) (shap_problem_finish)
} shap_problem;

// A thread's scratch for one problem.
typedef struct {
    double *w;        // (P) the model's parameters
    double *Z;        // (max(V, n), max(K, hidden)) logits or activations
    double *H;        // (max(V, n), hidden) the MLP's hidden activations
    double *sx;       // (n, D) the rows of the current subset
    int32_t *sy;      // (n)
    double *tmp;      // (2 hidden + K) per-example scratch
    int64_t *idx;     // (n) the rows of the current subset, in index order
} shap_work;

// Parameters of the problem's model: convex K·D + K, MLP H·D + H + K·H + K.
size_t shap_nparams(const shap_problem *p);
infl_status shap_work_create(infl_ctx *ctx, const shap_problem *p, shap_work *w);
void shap_work_free(shap_work *w);  // accepts a zeroed work
// The untrained model (convex: 0; MLP: seeded normal / sqrt(fan-in), biases 0) into w (P).
void shap_model_init(const shap_problem *p, double *w);
// U of the model w (P) on the validation rows.
double shap_utility(const shap_problem *p, shap_work *wk, const double *w);
// Fits wk->w (warm: from its current value) to the first m rows of wk->sx, wk->sy.
infl_status shap_fit(infl_ctx *ctx, const shap_problem *p, shap_work *wk, int64_t m);
// One SGD step of the model w on training row i: w −= lr (∇ℓ_i + wd w).
void shap_sgd_step(const shap_problem *p, shap_work *wk, double *w, int64_t i);
// Sets u_empty, and u_all by fitting every row (wk's scratch).
infl_status shap_problem_finish(infl_ctx *ctx, shap_problem *p, shap_work *wk);

// One TMC permutation perm (n): delta (n) gets each example's marginal contribution
// (0 for the truncated ones); *fits counts the models fitted.
infl_status shap_tmc_perm(infl_ctx *ctx, const shap_problem *p, shap_work *wk, const int64_t *perm, double *delta,
                          int64_t *fits);
// One G-Shapley permutation; *fits counts the utility evaluations.
infl_status shap_gshapley_perm(infl_ctx *ctx, const shap_problem *p, shap_work *wk, const int64_t *perm,
                               double *delta, int64_t *fits);
// U(S) for the subset S = the bits of mask (bit i: row i), fitted from the untrained model.
infl_status shap_subset_utility(infl_ctx *ctx, const shap_problem *p, shap_work *wk, uint32_t mask, double *u);
// phi (n) = the exact Shapley values from U (2^n) of every subset (n ≤ SHAP_EXACT_MAX).
void shap_exact_values(double *phi, const double *U, int n);

// KNN-Shapley of one validation point: s (N) gets the value of the training points at
// ranks 0..N−1 (nearest first), match (N) 1 where that point's label is the validation
// point's. The utility is (1/K) Σ_{k ≤ min(K, |S|)} match of S's k-th nearest; with 1-based
// ranks: s_N = match_N min(K, N) / (K N), s_i = s_{i+1} + (match_i − match_{i+1}) / K · min(K, i) / i.
void shap_knn_recursion(double *s, const uint8_t *match, int64_t N, int K);

#endif
