/*
 * retrain.h — training a run's model again (lds.c, debug.c): the run's recorded
 * training options, the outputs of a retrained MLP on examples held in memory, and
 * the removal of a retrained run file with what a killed trainer left beside it.
 */
#ifndef INFL_RETRAIN_H
#define INFL_RETRAIN_H

#include "store/store.h"

// The run's recorded training options (architecture, optimiser, schedule, batch,
// shards; train_epochs unless epochs > 0), checkpoints at the end only, force set; the
// seed, subset and exclusions are the caller's. INFL_E_FORMAT for a run written
// before the options were recorded.
infl_status retrain_options(infl_ctx *ctx, infl_run *run, int epochs, infl_train_options *t);
// The outputs (M) of an MLP run's final weights on M examples: host qx (M, D) and class
// labels qy (M) or real targets qyf (M, kt): each one's loss, or with margin its margin
// (the true class's logit minus the best other's; > 0 exactly when it is classified right).
infl_status retrain_mlp_outputs(infl_ctx *ctx, const char *run_path, const float *qx, const int32_t *qy,
                                const float *qyf, int M, int64_t D, int64_t kt, int margin, double *out);
// Removes a model file and the temporary files a killed trainer left beside it.
void retrain_remove_files(const char *model);

#endif
