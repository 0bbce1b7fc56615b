/*
 * cmd_lds.c — judging attributions: `infl lds` (the linear datamodeling score of one
 * or more methods' scores files, from models retrained on random subsets, resumable
 * through a state file) and `infl compare` (how two scores files agree).
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cliutil.h"

int cmd_lds(int argc, char **argv) {
    common c = COMMON_INIT("infl lds");
    infl_lds_options o = infl_lds_options_default();
    const char *output = NULL;
    const cli_opt opts[] = {
        {"run", 0, ARG_STR, &o.run, "FILE", "the run whose training is repeated on subsets (required)"},
        {"query", 0, ARG_STR, &o.query, "FILE:/split[a:b]", "the queries the scores were made for (required)"},
        {"state", 0, ARG_STR, &o.state, "FILE", "state file of the retrained outputs (required); an interrupted run resumes, more --models extend it"},
        {"models", 0, ARG_INT, &o.models, "K", "subsets, one model each (default 20)", ">=2"},
        {"fraction", 0, ARG_DOUBLE, &o.fraction, "A", "share of the training rows in a subset (default 0.5)", "(0,1)"},
        {"seed", 0, ARG_U64, &o.seed, "S", "subsets and the models' initialisations (default 0)"},
        {"output", 0, ARG_STR, &output, "O",
         "loss (default) or margin of each query (an MLP's classes; a GPT's output is the loss)"},
        {"epochs", 0, ARG_INT, &o.epochs, "E", "epochs per model (default: the run's own)", ">=1"},
        {"force", 'f', ARG_FLAG, &o.force, NULL, "start the state file afresh"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl lds", "--run run.h5 --query FILE:/split[a:b] --state lds.h5 [options] SCORES.h5 ...",
                     "The linear datamodeling score (Park et al. 2023): trains K models on random subsets of the\n"
                     "run's training split (its recorded training options), records each query's loss or margin\n"
                     "(an MLP's run: rows; a GPT's run: documents, and a query document's loss, summed over its\n"
                     "tokens), and for each scores file (infl rank -o F --save-scores, same queries) reports the\n"
                     "mean over queries of the Spearman correlation between the summed scores of a subset and the\n"
                     "retrained output, with a 95% interval (1.96 sd / sqrt(queries)). Models already in the state\n"
                     "file are not trained again.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[64];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 64, &npos);
    if (!o.run) return usage_error(spec.cmd, "no run file (--run run.h5)");
    if (!o.query) return usage_error(spec.cmd, "no queries (--query FILE:/split[a:b])");
    if (!o.state) return usage_error(spec.cmd, "no state file (--state lds.h5)");
    if (output) {
        if (!strcmp(output, "loss")) o.output_margin = 0;
        else if (!strcmp(output, "margin")) o.output_margin = 1;
        else return usage_error(spec.cmd, "--output: expected loss or margin");
    }
    o.scores = pos;
    o.nscores = npos;
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_lds_result *r = NULL;
    infl_status st = infl_lds(ctx, &o, &r);
    end_progress(&c);
    if (st == INFL_OK) {
        printf("LDS over %d models (%.0f%% subsets, query %s), %d queries; %d model(s) trained now (%.1f s), the rest "
               "from %s\n",
               r->models, 100 * o.fraction, o.output_margin ? "margin" : "loss", r->M, r->trained_now,
               r->seconds_train, o.state);
        if (r->nmethods) printf("  %-24s %8s %10s\n", "method (scores file)", "LDS", "95% CI");
        for (int m = 0; m < r->nmethods; m++) {
            char name[40];
            snprintf(name, sizeof name, "%s", r->method[m]);
            printf("  %-24s %8.4f   ±%.4f   %s", name, r->lds[m], r->ci[m], pos[m]);
            if (r->valid[m] < r->M)
                printf("   (%d of %d queries: the rest have constant outputs or predictions)", r->valid[m], r->M);
            printf("\n");
        }
    }
    infl_lds_result_free(r);
    return finish(&c, ctx, st);
}

// ---- compare ----

int cmd_compare(int argc, char **argv) {
    common c = COMMON_INIT("infl compare");
    int top = 10, per_query = 0;
    const cli_opt opts[] = {
        {"top", 'k', ARG_INT, &top, "K", "overlap of the top-K proponents and opponents (default 10)", ">=1"},
        {"per-query", 0, ARG_FLAG, &per_query, NULL, "a line per query, not only the means"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl compare", "A.h5 B.h5 [--top K]",
                     "How two scores files (infl rank -o F --save-scores, the same queries and training data)\n"
                     "agree, query by query: Pearson and Spearman over the training examples, and the share of\n"
                     "the top-K proponents and opponents they have in common.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[2];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 2, &npos);
    if (npos != 2) return usage_error(spec.cmd, "expected two scores files");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_compare_result *r = NULL;
    infl_status st = infl_compare(ctx, pos[0], pos[1], top, &r);
    if (st == INFL_OK) {
        printf("%s (%s) vs %s (%s): %d queries, %lld training examples\n", pos[0], r->method_a, pos[1], r->method_b,
               r->M, (long long)r->N);
        if (per_query)
            for (int q = 0; q < r->M; q++)
                printf("  query %4d  pearson %.4f  spearman %.4f  top-%d %.2f  bottom-%d %.2f\n", q, r->pearson[q],
                       r->spearman[q], top, r->top_overlap[q], top, r->bottom_overlap[q]);
        printf("mean: pearson %.4f  spearman %.4f  top-%d overlap %.3f  bottom-%d overlap %.3f\n", r->mean_pearson,
               r->mean_spearman, top, r->mean_top, top, r->mean_bottom);
    }
    infl_compare_result_free(r);
    return finish(&c, ctx, st);
}
