/*
 * attrib_args.h — the options the attribution commands share (rank, self, loo in
 * cmd_attrib.c; debug in cmd_debug.c): the run, the data, the method and its solver.
 */
#ifndef INFL_CLI_ATTRIB_ARGS_H
#define INFL_CLI_ATTRIB_ARGS_H

#include "cliutil.h"

typedef struct {
    infl_rank_options o;
    const char *method, *hessian, *solver, *damping, *repr_lambda, *repr_class;
    double shard_mb;
} attrib_args;

#define ATTRIB_OPTS(A)                                                                                                 \
    {"run", 0, ARG_STR, &(A).o.run, "FILE", "the run file (required)"},                                                \
        {"train", 0, ARG_STR, &(A).o.train, "FILE:/split", "training data (default: the data the run was trained on)"}, \
        {"checkpoint", 0, ARG_STR, &(A).o.checkpoint, "NAME", "graddot, gradcos, if: final (default), a name or step; ekfac: the factors' own"},  \
        {"checkpoints", 0, ARG_STR, &(A).o.checkpoints, "LIST", "tracin: all (default) or names/steps, comma-separated"}, \
        {"hessian", 0, ARG_STR, &(A).hessian, "H",                                                                   \
         "if, sgd-influence: exact (R-operator, default) or ggn (Gauss-Newton)"},                                    \
        {"solver", 0, ARG_STR, &(A).solver, "S", "if: direct (Cholesky, P <= 12000), cg (default) or lissa"},           \
        {"damping", 0, ARG_STR, &(A).damping, "L",                                                                   \
         "λ added to H on top of the run's weight decay; if: default 0.001; ekfac/kfac/diagonal: auto (default, "    \
         "0.1 x mean eigenvalue per layer) or a value; trak, if with --index: auto, auto:F (F x mean eigenvalue) "     \
         "or a value"},                                                                                               \
        {"factors", 0, ARG_STR, &(A).o.factors, "FILE", "ekfac, kfac, diagonal: the factors from infl fit"},          \
        {"hessian-samples", 0, ARG_I64, &(A).o.hessian_samples, "K", "if: H from the first K train rows (default all)", ">=1"}, \
        {"cg-iters", 0, ARG_INT, &(A).o.cg_iters, "N", "cg: iteration limit (default 100)", ">=1"},                             \
        {"cg-tol", 0, ARG_DOUBLE, &(A).o.cg_tol, "T", "cg: relative residual (default 1e-6)", ">0"},                           \
        {"lissa-depth", 0, ARG_INT, &(A).o.lissa_depth, "N", "lissa: recursion depth (default 1000)", ">=1"},                   \
        {"lissa-scale", 0, ARG_DOUBLE, &(A).o.lissa_scale, "S", "lissa: scale, above H's largest eigenvalue (default 10)", ">0"}, \
        {"lissa-repeats", 0, ARG_INT, &(A).o.lissa_repeats, "R", "lissa: repeats averaged (default 1)", ">=1"},                 \
        {"seed", 0, ARG_U64, &(A).o.seed, "S", "lissa batches, loo samples (default 0)"},                                 \
        {"shard", 0, ARG_I64, &(A).o.shard_rows, "ROWS", "train rows read at once (default: from --shard-mb)", ">=1"},          \
        {"shard-mb", 0, ARG_DOUBLE, &(A).shard_mb, "MB", "memory budget of one shard (default 64)", ">0"},             \
        {"index", 0, ARG_STR, &(A).o.index, "FILE[,FILE]",                                                           \
         "score from gradient indexes (infl index): graddot, gradcos, tracin, trak, if; several: TRAK's ensemble"},   \
        {"representer-lambda", 0, ARG_STR, &(A).repr_lambda, "L",                                                    \
         "representer: λ of the last layer's fine-tune, (1/n) sum l_i + λ |W|^2 (default: the run's weight decay / 2)"}, \
        {"representer-class", 0, ARG_STR, &(A).repr_class, "C",                                                      \
         "representer (rank): the class whose logit is explained, predicted (default) or true; loss: every class by "  \
         "-dl_q/dlogit (the query's loss)"}

// Resolves the text options into the enum fields. Returns 0 or a usage exit code.
int attrib_args_resolve(attrib_args *A, const char *cmd);

#endif
