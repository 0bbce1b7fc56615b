/*
 * shapley_internal.h — what the two halves of `infl shapley` share: the feature space
 * (the inputs, or an MLP run's penultimate activations through the model seam's
 * forward) streamed over a split by the scheduler (shapley_knn.c), and the exact
 * KNN-Shapley over a streamed train split (shapley_knn.c), called by the pipeline
 * (shapley.c).
 */
#ifndef INFL_SHAPLEY_INTERNAL_H
#define INFL_SHAPLEY_INTERNAL_H

#include "backend.h"
#include "models/model.h"
#include "sched/stage.h"
#include "store/store.h"

// The feature space of a run: its model and weights on the backend, and a work for
// sub-batches. Without a run (m NULL) the features are the inputs.
typedef struct {
    infl_run *run;
    infl_model *m;
    float *params;          // backend
    infl_model_work *work;  // sub-batches of up to B rows
    int B;
    int64_t d;              // feature width
    float *host;            // (B, d) a sub-batch's features, host
} shap_feat;

// Opens the feature space: run NULL or "" = the inputs of width D; else the run's MLP
// (checkpoint: NULL/"final", a name or a step) and its last layer's input width.
infl_status shap_feat_open(infl_ctx *ctx, shap_feat *f, const char *run, const char *checkpoint, int64_t D);
void shap_feat_close(infl_ctx *ctx, shap_feat *f);  // accepts a zeroed one

// What a stream of features hands its consumer: rows [row, row + b) of the split's
// range, their features F (b, d) on the host (NULL unless asked for) and Fdev (b, d)
// on the backend, their labels y (b, host).
typedef infl_status (*shap_feat_fn)(infl_ctx *ctx, void *user, int64_t row, int b, const float *F,
                                    const float *Fdev, const int32_t *y);
// Streams the split (shards of shard_rows rows, through the scheduler) and hands every
// sub-batch's features to fn (with host: on the host too). Checks the split against
// the run's model.
infl_status shap_feat_stream(infl_ctx *ctx, shap_feat *f, infl_split *split, int64_t shard_rows, int host,
                             shap_feat_fn fn, void *user, const char *what);
// Every row's features (n, d) and labels (n) of a split into memory.
infl_status shap_feat_gather(infl_ctx *ctx, shap_feat *f, infl_split *split, int64_t shard_rows, float *F,
                             int32_t *y);

// Exact KNN-Shapley: values (N) of the train split's rows for the validation features
// V (M, d) with labels vy (M); *u_all gets the KNN utility of the whole split. With
// curves (npoints > 0), a second pass scores the KNN classifier on the test features
// T (MT, d), ty after removing, for each of the orders rank (ncurves, N) (rank[c][i]:
// row i's position in curve c's removal order) the first cut[j] rows (npoints):
// acc (ncurves, npoints).
typedef struct {
    int K;                 // neighbours
    int threads;
    int64_t shard_rows;
    double block_mb;       // the distance block (on the backend and the host: 8 bytes a distance)
    int classes;           // for the votes
    const float *V;        // (M, d)
    const int32_t *vy;     // (M)
    int64_t M;
    const float *T;        // (MT, d), curves
    const int32_t *ty;     // (MT)
    int64_t MT;
    int ncurves, npoints;
    const int64_t *rank;   // (ncurves, N)
    const int64_t *cut;    // (npoints)
} shap_knn_job;

infl_status shap_knn_values(infl_ctx *ctx, shap_feat *f, infl_split *train, const shap_knn_job *job, double *values,
                            int32_t *labels, double *u_all);
infl_status shap_knn_curves(infl_ctx *ctx, shap_feat *f, infl_split *train, const shap_knn_job *job, double *acc);

// A scratch context for a worker thread: the parent's backend and cancel flag, its own
// error detail (copied back by shap_join_error).
void shap_thread_ctx(infl_ctx *t, const infl_ctx *parent);

#endif
