/*
 * train.h — the models' trainers (the pipeline pipelines/train.c calls them) and what
 * they share with other modules: shard sizes, shuffling and the learning-rate
 * schedule (train.c), checking that a data split fits an MLP, and the float64 convex
 * optimiser used for models without a hidden layer (and by leave-one-out retraining).
 */
#ifndef INFL_TRAIN_H
#define INFL_TRAIN_H

#include "core/rng.h"
#include "core/spec.h"
#include "models/model.h"
#include "store/store.h"

// Checks that a split can feed the model: x width = d_0; class labels for
// softmax_ce / sigmoid_ce (and no more classes than outputs), real targets of width
// d_L for mse. Errors name the data reference.
infl_status infl_check_data_for_model(infl_ctx *ctx, const infl_split *split, const infl_mlp_spec *spec);

// Checks class labels y (n) of rows [row0, row0 + n) against the model's classes;
// INFL_E_VALUE naming the file and the row.
infl_status infl_check_labels(infl_ctx *ctx, const infl_split *split, const infl_mlp_spec *spec, const int32_t *y,
                              int64_t row0, int64_t n);

// Rows per shard for a budget in MiB (at least min_rows, at most n).
int64_t infl_shard_rows(int64_t n, int64_t d, int64_t k, double budget_mb, int64_t min_rows);

// ---- what the trainers share (train.c) ----

// Fisher-Yates permutation p of [0, n) keyed by (seed, INFL_RNG_SHUFFLE, key): the
// shard order of an epoch and the rows within a shard.
void infl_train_permute(int64_t *p, int64_t n, uint64_t seed, uint64_t key);
// The learning rate of step `step` of `total`: a linear warm-up over the first
// o->warmup steps, then o->lr (constant) or its cosine decay to 0 over the rest.
double infl_train_lr(const infl_train_options *o, int64_t step, int64_t total);

// Steps per epoch of a trainer that reads a split of n rows (documents) in shards of
// S rows, the last one possibly short, and takes batches of up to B rows within a
// shard: Σ over shards of ceil(kept / B), where kept counts the shard's rows in the
// seeded subset of o (every row without one; row r of the split is keyed by
// begin + r, begin being the split range's first row). *n_used gets the rows kept.
// INFL_E_ARG when the subset is empty.
infl_status infl_train_epoch_steps(infl_ctx *ctx, const infl_train_options *o, int64_t begin, int64_t n, int64_t S,
                                   int B, int64_t *steps, int64_t *n_used);
// Training on a subset where a trainer reads its shards: moves the rows of a shard
// whose first row is keyed index0 (begin + row0) that the subset of o keeps, in order,
// to the front of every array (arrays[a] holds len rows of row_bytes[a] bytes each;
// NULL entries are skipped) and returns how many it kept (len, untouched, without a
// subset).
int64_t infl_subset_compact(const infl_train_options *o, int64_t index0, int64_t len, int narrays,
                            void *const *arrays, const size_t *row_bytes);

// ---- the SGD trainer's walk over its minibatches (train.c) ----
//
// Which rows each step of the MLP's SGD trainer takes, from the seed alone: epoch e
// visits the shards in the order infl_train_permute(seed, e), keeps a shard's rows of
// the subset (all without one), permutes them by infl_train_permute(seed, (e+1) << 32 |
// shard) and takes batches of up to B of them in that order (the last of a shard may
// be short; batches never cross shards). The trainer and its replay (sgd-influence)
// walk the same way, so step t's batch is the same rows in both. Memory: the shard
// order and two arrays of S entries.
typedef struct {
    const infl_train_options *o;
    int64_t n, S, nshards, begin;  // the split's rows, rows per shard, shards, the range's first row
    int B;
    int64_t steps_per_epoch, total, n_used;
    int64_t *order;                // (nshards) this epoch's shard order
    int64_t *kept;                 // (S) the shard's rows in the subset (offsets within the shard)
    int64_t *perm;                 // (S) their permutation
    // the current step (after infl_sgd_walk_next returned 1)
    int64_t step;                  // 0-based
    int ep;                        // its epoch
    int64_t si;                    // its shard's place in the epoch's order
    int64_t row0, len;             // the shard: rows [row0, row0 + len) of the range
    int64_t nkept;                 // rows of the shard in the subset
    int64_t b0;                    // the batch: entries [b0, b0 + nb) of the shard's permutation
    int nb;
    int64_t ep_rows;               // rows (of the subset) in the shards visited before this one, this epoch
    int fresh;                     // 1 when the shard differs from the previous step's (read it)
    int started;
} infl_sgd_walk;

// Sets up the walk of a trainer with options o over n rows (the range starts at row
// `begin` of its split) in shards of S rows and batches of up to B, before step
// `start` (0: the first): infl_sgd_walk_next then gives step `start`. INFL_E_ARG when
// the subset is empty or start is past the end.
infl_status infl_sgd_walk_init(infl_ctx *ctx, infl_sgd_walk *w, const infl_train_options *o, int64_t begin,
                               int64_t n, int64_t S, int B, int64_t start);
// Moves to the next step: 1 and the step's fields set, or 0 after the last step.
int infl_sgd_walk_next(infl_sgd_walk *w);
// Row (offset within the current shard) of the step's i-th batch entry, i < nb.
static inline int64_t infl_sgd_walk_row(const infl_sgd_walk *w, int i) { return w->kept[w->perm[w->b0 + i]]; }
void infl_sgd_walk_free(infl_sgd_walk *w);
// The shard rows and the batch size the MLP's SGD trainer uses for options o on a
// split of n rows of d features (k: real-target width, 0 for labels).
void infl_sgd_shape(const infl_train_options *o, int64_t n, int64_t d, int64_t k, int64_t *S, int *B);

// One step of SGD with momentum through the model seam, as the trainer takes it: a
// forward and a backward pass of the batch bt at W, G (nparams, backend) = (1/divisor)
// Σ_i ∇ℓ_i (loss only), then V ← μ V + G + wd W, W ← W − lr V (be->sgd_step). The
// trainer's divisor is bt->b; a counterfactual batch with examples left out keeps the
// full batch's divisor. bt->b = 0 takes the step with G = 0. m's work mw holds bt->b rows.
infl_status infl_sgd_step(infl_ctx *ctx, const infl_model *m, infl_model_work *mw, float *W, float *V, float *G,
                          const infl_batch *bt, int divisor, double lr, double mu);


// ---- the trainers: plan (check the options, make the spec), then run ----

// MLP (mlp_train.c): SGD with momentum, or Newton for a convex model. *optimizer is
// "sgd" or "newton".
infl_status infl_mlp_train_plan(infl_ctx *ctx, const infl_train_options *o, infl_model_spec *spec,
                                const char **optimizer);
infl_status infl_mlp_train_run(infl_ctx *ctx, const infl_train_options *o, const infl_mlp_spec *spec,
                               const char *optimizer, infl_split *split, infl_runw *rw, infl_train_report *rep);
// Mean loss and accuracy of checkpoint ci of an MLP run on a rows split.
infl_status infl_mlp_eval(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, infl_eval_result *res);

// GPT (gpt_train.c): AdamW with warm-up, cosine or constant rate, gradient clipping;
// the vocabulary and end-of-text token come from the documents' tokenizer.
infl_status infl_gpt_train_plan(infl_ctx *ctx, const infl_train_options *o, const infl_tokenizer *tok,
                                infl_model_spec *spec, const char **optimizer);
infl_status infl_gpt_train_run(infl_ctx *ctx, const infl_train_options *o, const infl_gpt_spec *spec,
                               infl_split *split, infl_runw *rw, infl_train_report *rep);
// Every document's loss (the sum of its next-token losses) at checkpoint ci of a GPT
// run, documents [0, n) of a documents split: out (n) host. *tokens gets the positions
// with a loss, *truncated the documents longer than the context. progress: the name
// progress is reported under, or NULL for none.
infl_status infl_gpt_split_losses(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, const char *progress,
                                  double *out, int64_t *tokens, int64_t *truncated);
// Loss per token and perplexity of checkpoint ci of a GPT run on a documents split.
infl_status infl_gpt_eval(infl_ctx *ctx, infl_run *run, int ci, infl_split *split, infl_eval_result *res);

// ---- convex optimiser (L = 1), float64 ----

// Whether row `index` of a split (absolute within the split) is in the seeded subset
// of the training options (always when subset_fraction is 0) and not excluded.
// Whether the options train on part of the split only: a seeded subset or excluded rows.
static inline int infl_subset_active(const infl_train_options *o) {
    return o->subset_fraction > 0 || o->nexclude > 0;
}
static inline int infl_subset_keeps(const infl_train_options *o, int64_t index) {
    if (o->nexclude > 0) {
        // the excluded rows (ascending): a binary search
        int64_t lo = 0, hi = o->nexclude;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (o->exclude[mid] < index) lo = mid + 1;
            else hi = mid;
        }
        if (lo < o->nexclude && o->exclude[lo] == index) return 0;
    }
    return !(o->subset_fraction > 0) ||
           infl_rng_uniform(o->subset_seed, INFL_RNG_SUBSET, (uint64_t)index, (uint32_t)o->subset_draw) <
               o->subset_fraction;
}

// The cut t for which exactly round(fraction · n) of the rows [begin, begin + n) have
// uniform(seed, SUBSET, i, draw) < t: with subset_fraction = t, infl_subset_keeps keeps
// a subset of exactly that size (the lds's subsets are all of one size, as TRAK's are:
// a subset's size would otherwise move every query's loss and look like influence).
// O(n) draws per bisection step, no memory.
double infl_subset_cut(uint64_t seed, int draw, int64_t begin, int64_t n, double fraction);

typedef struct {
    double tol;        // stop when |∇R| <= tol (2-norm)
    int max_iters;     // Newton iterations
    int64_t shard_rows;
    // Optional: the Cholesky factor (lower, P × P column-major, float64) of the
    // Hessian of R at a nearby point (infl_convex_hessian + dpotrf). Then the steps
    // are −H₀⁻¹ ∇R (a chord method) instead of Newton-CG: for a small change of the
    // problem (leave-one-out) each retraining costs a few gradient passes.
    const double *chol;
    // Optional: train on the subset of these training options only (rows outside get
    // weight 0 and the mean runs over the rows kept).
    const infl_train_options *subset;
    // Precondition Newton-CG by the Hessian's diagonal blocks at the start (convex.c): fewer CG
    // steps where the features are correlated and wd is small (ignored with chol).
    int precondition;
    // Optional: the rows come from here instead of the split's x (the split still gives their count,
    // the kind of targets and the names in errors): x (n, widths[0]) of rows [row0, row0 + n) of the
    // split's range with their labels y (n) or real targets yf (n, widths[1]), as store_split_read
    // fills them (e.g. a network's features of its rows: representer points). read_user is passed.
    infl_status (*read_rows)(infl_ctx *ctx, void *read_user, int64_t row0, int64_t n, float *x, int32_t *y,
                             float *yf);
    void *read_user;
} infl_convex_options;

typedef struct {
    int iters;         // Newton iterations
    int cg_iters;      // CG iterations in all
    double objective;  // R(w) at the end
    double grad_norm;  // |∇R(w)| at the end
} infl_convex_report;

// Minimises R(w) = (1/n) Σ_{i ∉ exclude} ℓ_i(w) + wd/2 |w|² for a model with one
// layer (a generalised linear model) by Newton-CG with exact Hessian-vector products
// and backtracking, in float64. n is the split's row count also when rows are
// excluded: removing z is up-weighting it by −1/n, as influence functions predict. w (nparams, host, spec.h layout) is the start and the
// result. exclude: sorted row indices (of the split's range) left out, may be NULL.
// Needs wd > 0 (strictly convex). INFL_E_NUMERIC when the target is not reached.
infl_status infl_convex_fit(infl_ctx *ctx, infl_split *split, const infl_mlp_spec *spec,
                            const int64_t *exclude, int64_t nexclude, const infl_convex_options *o,
                            double *w, infl_convex_report *rep);

// Rows held in memory, float64 (infl_convex_fit_rows): the caller's, borrowed.
typedef struct {
    int64_t n;         // rows
    const double *x;   // (n, D) row-major
    const int32_t *y;  // (n) class labels (softmax_ce, sigmoid_ce), or NULL
    const double *yf;  // (n, K) real targets (mse), or NULL
} infl_convex_rows;

// The same minimisation on rows in memory, every row weighted 1/n (no exclusion, no
// subset, no shards: o->shard_rows and o->subset are ignored). Nothing is read from a
// file, nothing but ctx's detail and progress is shared, so calls on distinct contexts
// may run in parallel. Labels are checked against the model's classes (INFL_E_VALUE).
infl_status infl_convex_fit_rows(infl_ctx *ctx, const infl_convex_rows *rows, const infl_mlp_spec *spec,
                                 const infl_convex_options *o, double *w, infl_convex_report *rep);

// H (P × P, float64, row-major = column-major: it is symmetric) = ∇²R(w) of a
// one-layer model on the split's rows: (1/n) Σ_i H_out(z_i) ⊗ x̃_i x̃_iᵀ + wd I,
// streamed in shards (o->shard_rows).
infl_status infl_convex_hessian(infl_ctx *ctx, infl_split *split, const infl_mlp_spec *spec,
                                const infl_convex_options *o, const double *w, double *H);

#endif
