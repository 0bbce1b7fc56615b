/*
 * cmd_fit.c — `infl fit`: EK-FAC (or KFAC, diagonal, identity) factors of a
 * checkpoint over the training split, written to a factors HDF5 for
 * `infl rank --method ekfac --factors FILE`.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cliutil.h"

int cmd_fit(int argc, char **argv) {
    common c = COMMON_INIT("infl fit");
    infl_fit_options o = infl_fit_options_default();
    const char *out = NULL, *strategy = NULL, *fisher = NULL;
    const cli_opt opts[] = {
        {"run", 0, ARG_STR, &o.run, "FILE", "the run file (required)"},
        {"checkpoint", 0, ARG_STR, &o.checkpoint, "NAME", "final (default), a name or a step"},
        {"data", 0, ARG_STR, &o.data, "FILE:/split", "training data (default: the data the run was trained on)"},
        {"strategy", 0, ARG_STR, &strategy, "S", "ekfac (default), kfac, diagonal or identity"},
        {"fisher", 0, ARG_STR, &fisher, "F", "true (labels sampled from the model, default) or empirical"},
        {"seed", 0, ARG_U64, &o.seed, "S", "seed of the sampled labels (default 0)"},
        {"samples", 0, ARG_INT, &o.samples, "K", "true Fisher: labels drawn per example (default 1)", ">=1"},
        {"shard", 0, ARG_I64, &o.shard_rows, "ROWS", "rows read at once (default: from --shard-mb)", ">=1"},
        {"shard-mb", 0, ARG_DOUBLE, &o.shard_mb, "MB", "memory budget of one shard (default 64)", ">0"},
        {"output", 'o', ARG_STR, &out, "FILE", "the factors file to write (required)"},
        {"force", 'f', ARG_FLAG, &o.force, NULL, "overwrite the output if it exists"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl fit", "--run run.h5 [--strategy ekfac] -o factors.h5 [options]",
                     "Fits Kronecker factors of the curvature at a checkpoint, for influence functions at scale\n"
                     "(EK-FAC: George et al. 2018, Grosse et al. 2023). Per layer, one pass over the data\n"
                     "accumulates A = E[a a'] and S = E[d d'] (float32 within a shard, float64 across shards),\n"
                     "eigendecomposes them in float64, and a second pass the eigenvalue correction\n"
                     "Lambda = E[(Q_S' g Q_A)^2] of the examples' gradients g. Strategies: ekfac; kfac (Lambda =\n"
                     "eig(S) x eig(A), one pass); diagonal (the Fisher's diagonal, one pass); identity (none).\n"
                     "A gpt run: A and S over every token position of the documents, g each document's gradient\n"
                     "(the sum over its positions), as kronfluence does.\n"
                     "Then: infl rank --method ekfac --factors factors.h5 --query ...",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!o.run) return usage_error(spec.cmd, "no run file (--run run.h5)");
    if (!out) return usage_error(spec.cmd, "no output file (-o factors.h5)");
    if (strategy) {
        if (!strcmp(strategy, "ekfac")) o.strategy = INFL_STRATEGY_EKFAC;
        else if (!strcmp(strategy, "kfac")) o.strategy = INFL_STRATEGY_KFAC;
        else if (!strcmp(strategy, "diagonal")) o.strategy = INFL_STRATEGY_DIAGONAL;
        else if (!strcmp(strategy, "identity")) o.strategy = INFL_STRATEGY_IDENTITY;
        else return usage_error(spec.cmd, "--strategy: expected ekfac, kfac, diagonal or identity");
    }
    if (fisher) {
        if (!strcmp(fisher, "true")) o.fisher_empirical = 0;
        else if (!strcmp(fisher, "empirical")) o.fisher_empirical = 1;
        else return usage_error(spec.cmd, "--fisher: expected true or empirical");
    }
    if (o.samples > 1 && o.fisher_empirical)
        return usage_error(spec.cmd, "--samples draws labels for the true Fisher; --fisher empirical uses the data's");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_fit_report r;
    infl_status st = infl_fit(ctx, &o, out, &r);
    end_progress(&c);
    if (st == INFL_OK && o.strategy == INFL_STRATEGY_IDENTITY) {
        printf("wrote identity factors (no curvature: every method then scores grad-dot / (1 + wd + damping))\n");
    } else if (st == INFL_OK) {
        printf("fit %s factors (%s Fisher) over %" PRId64 " examples: covariances %.2f s, eigendecomposition %.2f s, "
               "eigenvalue correction %.2f s\n",
               strategy ? strategy : "ekfac", o.fisher_empirical ? "empirical" : "true", r.examples, r.seconds_cov,
               r.seconds_eig, r.seconds_lambda);
        if (!c.quiet) fprintf(stderr, "wrote %s\n", out);
    }
    return finish(&c, ctx, st);
}
