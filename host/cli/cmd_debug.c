/*
 * cmd_debug.c — `infl debug`: model debugging by influence (FastIF's experiment): remove
 * the strongest opponents of misclassified validation examples, retrain, and compare
 * the accuracy on them and on a test split with removing as many random rows. A table
 * on stdout, and --json.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrib_args.h"
#include "cliutil.h"
#include "core/internal.h"

// Mean and sample standard deviation of n values (sd 0 for n < 2).
static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : NAN;
    for (int i = 0; i < n; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0;
}

static int write_json(const char *path, const infl_debug_result *r, const infl_debug_options *o, const char *test) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"run\": ");
    put_json(f, o->rank.run);
    fprintf(f, ", \"method\": \"%s\", \"val\": ", infl_method_name(o->rank.method));
    put_json(f, o->val);
    fprintf(f, ", \"test\": ");
    put_json(f, test);
    fprintf(f,
            ", \"action\": \"remove\", \"per_example\": %d, \"val_n\": %" PRId64 ", \"val_wrong\": %" PRId64
            ", \"fixed_n\": %d, \"removed_n\": %" PRId64 ",\n \"fixed\": [",
            o->per_example, r->val_n, r->val_wrong, r->M, r->nremoved);
    for (int i = 0; i < r->M; i++) fprintf(f, "%s%" PRId64, i ? ", " : "", r->fixed[i]);
    fprintf(f, "],\n \"removed\": [");
    for (int64_t i = 0; i < r->nremoved; i++) fprintf(f, "%s%" PRId64, i ? ", " : "", r->removed[i]);
    fprintf(f, "],\n \"before\": {\"fixed_accuracy\": %.6f, \"test_accuracy\": %.6f},\n", r->before_fixed,
            r->before_test);
    fprintf(f, " \"removed_opponents\": {\"fixed_accuracy\": %.6f, \"test_accuracy\": %.6f},\n \"random\": [",
            r->after_fixed, r->after_test);
    for (int s = 0; s < r->nrandom; s++)
        fprintf(f, "%s{\"seed\": %d, \"fixed_accuracy\": %.6f, \"test_accuracy\": %.6f}", s ? ", " : "", s,
                r->random_fixed[s], r->random_test[s]);
    fprintf(f, "],\n \"seconds_rank\": %.3f, \"seconds_train\": %.3f}\n", r->seconds_rank, r->seconds_train);
    return fclose(f);
}

int cmd_debug(int argc, char **argv) {
    common c = {.cmd = "infl debug"};
    attrib_args A = {.o = infl_rank_options_default()};
    A.shard_mb = A.o.shard_mb;
    infl_debug_options d = infl_debug_options_default();
    const char *json = NULL, *action = NULL;
    const cli_opt opts[] = {
        ATTRIB_OPTS(A),
        {"method", 'm', ARG_STR, &A.method, "M", "tracin (default), graddot, gradcos, if, ekfac, kfac or diagonal"},
        {"val", 0, ARG_STR, &d.val, "FILE:/split[a:b]", "validation examples; the misclassified ones are fixed (required)"},
        {"test", 0, ARG_STR, &d.test, "FILE:/split[a:b]", "accuracy before and after on this split (default: val's whole split)"},
        {"fix", 0, ARG_INT, &d.fix, "M", "the first M misclassified validation examples (default 100)", ">=1"},
        {"per-example", 'k', ARG_INT, &d.per_example, "K", "opponents removed per example: its K most negative scores (default 10)", ">=1"},
        {"action", 0, ARG_STR, &action, "A", "remove (the only one implemented; downweight and finetune are not)"},
        {"random", 0, ARG_INT, &d.random, "R", "controls: R models without as many random rows (default 3; --seed)", ">=0"},
        {"epochs", 0, ARG_INT, &d.epochs, "E", "epochs of each retraining (default: the run's own; 0 = the run's own)", ">=0"},
        {"keep", 0, ARG_STR, &d.keep_prefix, "PREFIX", "keep the retrained runs as PREFIX-removed.h5, PREFIX-random-S.h5"},
        {"json", 0, ARG_STR, &json, "FILE", "write the result as JSON"},
        {"force", 'f', ARG_FLAG, &d.force, NULL, "overwrite outputs that exist"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl debug", "--run run.h5 --val FILE:/split[a:b] [--method M] [--fix M] [-k K] [options]",
                     "Model debugging by influence (FastIF, Guo et al. 2020): the first M validation examples the\n"
                     "run's final model gets wrong; the union of each one's K strongest opponents (the most negative\n"
                     "scores: removing them is predicted to lower its loss) is removed from the training split and\n"
                     "the model is trained again with the run's recorded options and seed. Reports the accuracy on\n"
                     "the M examples and on the test split before and after, beside R models trained without as\n"
                     "many random training rows (--seed picks them). The training rows removed are recorded in each\n"
                     "retrained run as /train_excluded.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    int u = attrib_args_resolve(&A, spec.cmd);
    if (u) return u;
    if (!d.val) return usage_error(spec.cmd, "no validation split (--val FILE:/split[a:b])");
    if (action && strcmp(action, "remove"))
        return usage_error(spec.cmd, strcmp(action, "downweight") && strcmp(action, "finetune")
                                         ? "--action: expected remove"
                                         : "--action: only remove is implemented (downweight and finetune are not)");
    d.rank = A.o;
    d.seed = A.o.seed;
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    const char *outs[] = {json};
    infl_status st = refuse_existing(ctx, outs, 1, d.force);
    infl_debug_result *r = NULL;
    if (st == INFL_OK) st = infl_debug(ctx, &d, &r);
    end_progress(&c);
    if (st == INFL_OK) {
        const char *test = r->test;
        double mf, sf, mt, st2;
        mean_sd(r->random_fixed, r->nrandom, &mf, &sf);
        mean_sd(r->random_test, r->nrandom, &mt, &st2);
        printf("%s: %" PRId64 " of %" PRId64 " validation examples misclassified; fixing the first %d: removed the union "
               "of their %d strongest opponents, %" PRId64 " training rows (%.1f s ranking, %.1f s retraining %d models)\n",
               d.val, r->val_wrong, r->val_n, r->M, d.per_example, r->nremoved, r->seconds_rank, r->seconds_train,
               r->nrandom + 1);
        printf("  %-34s %22s %22s\n", "model", "accuracy on the fixed", test);
        printf("  %-34s %22.4f %22.4f\n", "the run (before)", r->before_fixed, r->before_test);
        char what[64];
        snprintf(what, sizeof what, "without the %s opponents", infl_method_name(d.rank.method));
        printf("  %-34s %22.4f %22.4f\n", what, r->after_fixed, r->after_test);
        for (int s = 0; s < r->nrandom; s++) {
            snprintf(what, sizeof what, "without %" PRId64 " random rows (%d)", r->nremoved, s);
            printf("  %-34s %22.4f %22.4f\n", what, r->random_fixed[s], r->random_test[s]);
        }
        if (r->nrandom > 0)
            printf("  %-34s %15.4f ± %.4f %15.4f ± %.4f\n", "random: mean ± sd", mf, sf, mt, st2);
        if (json) {
            if (write_json(json, r, &d, test) != 0) st = infl_seterr(ctx, INFL_E_IO, "%s: cannot write", json);
            else if (!c.quiet) fprintf(stderr, "wrote %s\n", json);
        }
    }
    infl_debug_result_free(r);
    return finish(&c, ctx, st);
}
