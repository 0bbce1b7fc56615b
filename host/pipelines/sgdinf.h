/*
 * sgdinf.h — SGD-influence (Hara, Nitanda and Maehara 2019) for SGD with momentum, on a
 * run of the MLP's SGD trainer (sgdinf.c has the derivation): the scores `infl rank
 * --method sgd-influence` ranks, and the counterfactual training they predict (the
 * run's training again with examples left out of their batches), which the tests and
 * bench/bench_sgdinf.c check them against.
 */
#ifndef INFL_SGDINF_H
#define INFL_SGDINF_H

#include "attrib.h"

// S (M, N) host: the SGD-influence score of every training row for each prepared query
// (attrib_prepare_queries put ∇L_q at the run's final weights into a->V): n × the
// change of the query's loss, to first order, had the row been left out of every
// batch it was in (the batch keeping its divisor), n the rows the run trained on.
// Positive: a proponent (leaving it out raises the loss). res gets the steps, the
// segment, the replay's deviation and its seconds. a->B must be the trainer's batch
// (sgdinf_batch) when the scoring buffers are allocated.
infl_status sgdinf_scores(infl_ctx *ctx, attrib *a, float *S, infl_rank_result *res);
// The trainer's batch size of the run a->run (the scoring buffers' rows); INFL_E_FORMAT
// or INFL_E_UNSUPPORTED naming what the run lacks when its steps cannot be replayed.
infl_status sgdinf_batch(infl_ctx *ctx, attrib *a, int *B);

// params (P, host): the final weights of the run's training repeated with the rows
// `exclude` (nexclude, ascending, rows of the run's training data range) weighted by
// `weight` in every batch they are in, each batch keeping its divisor: weight 0 leaves
// them out (the counterfactual SGD-influence linearises: the same batches minus the
// rows); 1 ± ε around the run give the derivative SGD-influence is, to first order.
// nexclude 0 repeats the training itself (bit-exact on the build and thread count that
// trained it).
infl_status infl_sgd_counterfactual(infl_ctx *ctx, const char *run_path, const int64_t *exclude, int64_t nexclude,
                                    double weight, float *params);

// out (M): each query's loss (the rows of the data reference `query`) at the weights
// params (P, host) of the run's model.
infl_status infl_sgd_query_losses(infl_ctx *ctx, const char *run_path, const float *params, const char *query,
                                  double *out);

#endif
