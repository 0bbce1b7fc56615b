/*
 * cmd_shapley.c — `infl shapley`: Data Shapley values of training rows (tmc, gshapley,
 * knn, exact): the run's figures, the lowest-valued rows, the flipped labels' recall,
 * the removal curves as a table and a PNG, the values as CSV (the HDF5 file is the
 * library's).
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cliutil.h"
#include "core/internal.h"
#include "render.h"

static infl_status write_csv(infl_ctx *ctx, const char *path, int force, const infl_shapley_result *r) {
    char tmp[4200];
    FORWARD_IF_ERROR(infl_out_begin(ctx, path, force, tmp, sizeof tmp));
    FILE *fp = fopen(tmp, "w");
    RETURN_IF(ctx, !fp, INFL_E_IO, "%s: cannot write %s", path, tmp);
    fprintf(fp, "rank,train_index,label,value,se%s\n", r->flipped ? ",flipped" : "");
    for (int64_t k = 0; k < r->n; k++) {
        int64_t i = r->order[k];
        fprintf(fp, "%" PRId64 ",%" PRId64 ",%d,%.9g,%.3g", k + 1, r->begin + i, (int)r->label[i], r->values[i],
                r->se[i]);
        if (r->flipped) fprintf(fp, ",%d", r->flipped[i] != 0);
        fputc('\n', fp);
    }
    int bad = ferror(fp) | (fclose(fp) != 0);
    if (bad) {
        infl_out_abort(tmp);
        return infl_seterr(ctx, INFL_E_IO, "%s: write failed", path);
    }
    return infl_out_commit(ctx, tmp, path);
}

// A data reference without the folders of its file ("/a/b/f.h5:/test[0:9]" -> "f.h5:/test[0:9]").
static const char *short_ref(const char *ref) {
    const char *split = strstr(ref, ":/"), *base = ref;
    for (const char *c = ref; *c && (!split || c < split); c++)
        if (*c == '/') base = c + 1;
    return base;
}

static infl_status write_png(infl_ctx *ctx, const char *path, int force, const infl_shapley_result *r,
                             const infl_shapley_options *o) {
    const int P = r->curve_points;
    double *x = malloc((size_t)P * sizeof(double));
    RETURN_IF(ctx, !x, INFL_E_NOMEM, "out of memory");
    for (int j = 0; j < P; j++) x[j] = 100.0 * r->curve_fraction[j];
    const infl_series s[3] = {
        {.x = x, .y = r->curve_high, .n = P, .label = "highest-valued removed first", .colour = 0xD62728},
        {.x = x, .y = r->curve_low, .n = P, .label = "lowest-valued removed first", .colour = 0x2CA02C},
        {.x = x, .y = r->curve_random, .n = P, .label = "random removal (mean of 3)", .colour = 0x7F7F7F},
    };
    char title[160], sub[256];
    snprintf(title, sizeof title, "Data Shapley (%s): removing training rows", infl_shapley_method_name(o->method));
    snprintf(sub, sizeof sub, "%" PRId64 " rows of %s; accuracy of the %s on %s", r->n, short_ref(o->train),
             o->method == INFL_SHAPLEY_KNN ? "KNN classifier" : o->model_mlp ? "MLP" : "convex model",
             short_ref(o->test && *o->test ? o->test : o->valid));
    infl_status st = infl_png_plot(ctx, path, force, s, 3, "training rows removed (%)",
                                   o->method == INFL_SHAPLEY_KNN ? "test accuracy (KNN)" : "test accuracy", title,
                                   sub, 0);
    free(x);
    return st;
}

static void print_result(const infl_shapley_result *r, const infl_shapley_options *o, int show) {
    char utility[96];
    if (o->method == INFL_SHAPLEY_KNN)
        snprintf(utility, sizeof utility, "the %d-NN classifier's likelihood of the label", o->knn_k);
    else
        snprintf(utility, sizeof utility, "%s of the %s", o->utility_loss ? "minus the cross-entropy" : "accuracy",
                 o->model_mlp ? "MLP" : "convex model");
    printf("Data Shapley (%s) of %" PRId64 " rows of %s, %d classes, features %s (%" PRId64 "); utility: %s on %s\n",
           infl_shapley_method_name(o->method), r->n, o->train, r->classes, o->run && *o->run ? o->run : "inputs",
           r->features, utility, o->valid);
    printf("  U(all) %.4f  U(empty) %.4f  sum of values %.4f  (U(all) - U(empty) = %.4f)\n", r->u_all, r->u_empty,
           r->sum, r->u_all - r->u_empty);
    if (o->method == INFL_SHAPLEY_TMC || o->method == INFL_SHAPLEY_GSHAPLEY)
        printf("  %d permutations (%d now), %.1f%% of marginal contributions truncated, convergence %.4f%s, "
               "%" PRId64 " utility evaluations%s\n",
               r->permutations, r->permutations_now, 100 * r->truncated, r->convergence,
               o->converge > 0 && r->convergence < o->converge ? " (converged)" : "", r->fits,
               o->method == INFL_SHAPLEY_GSHAPLEY || o->model_mlp ? "" : " (model fits)");
    if (o->method == INFL_SHAPLEY_GSHAPLEY || o->model_mlp) printf("  SGD rate %g\n", r->lr);
    printf("  %.1f s (removal curves %.1f s)\n", r->seconds, r->seconds_curves);
    int k = show < r->n ? show : (int)r->n;
    if (k > 0) {
        printf("lowest-valued %d:\n  %5s %8s %6s %12s %10s%s\n", k, "rank", "row", "label", "value", "se",
               r->flipped ? "  flipped" : "");
        for (int j = 0; j < k; j++) {
            int64_t i = r->order[j];
            printf("  %5d %8" PRId64 " %6d %12.4e %10.2e%s\n", j + 1, r->begin + i, (int)r->label[i], r->values[i],
                   r->se[i], r->flipped ? (r->flipped[i] ? "  yes" : "  no") : "");
        }
    }
    if (r->flipped)
        printf("flipped labels: %" PRId64 " of %" PRId64 "; found among the lowest-valued 10%%: %.3f (random 0.10), "
               "20%%: %.3f (random 0.20)\n",
               r->nflipped, r->n, r->recall[0], r->recall[1]);
    if (r->curve_points > 0) {
        printf("removal curves (test accuracy on %s):\n  %8s %14s %14s %14s\n", o->test && *o->test ? o->test : o->valid,
               "removed", "highest first", "lowest first", "random");
        for (int j = 0; j < r->curve_points; j++)
            printf("  %7.1f%% %14.4f %14.4f %14.4f\n", 100 * r->curve_fraction[j], r->curve_high[j], r->curve_low[j],
                   r->curve_random[j]);
    }
}

int cmd_shapley(int argc, char **argv) {
    common c = {.cmd = "infl shapley"};
    infl_shapley_options o = infl_shapley_options_default();
    const char *method = "tmc", *utility = "accuracy", *model = "convex", *csv = NULL, *png = NULL;
    int show = 10;
    const cli_opt opts[] = {
        {"train", 0, ARG_STR, &o.train, "FILE:/split[a:b]", "the training rows to value (required)"},
        {"valid", 0, ARG_STR, &o.valid, "FILE:/split[a:b]", "the utility's split: two classes or more (required)"},
        {"test", 0, ARG_STR, &o.test, "FILE:/split[a:b]", "the removal curves' split (default: --valid)"},
        {"method", 'm', ARG_STR, &method, "M", "tmc (default), gshapley, knn, exact (at most 16 rows)"},
        {"utility", 0, ARG_STR, &utility, "U", "accuracy (default) or loss (minus the mean cross-entropy)"},
        {"model", 0, ARG_STR, &model, "M",
         "the utility model: convex (softmax regression, Newton, warm started; default) or mlp (one tanh hidden "
         "layer, per-example SGD)"},
        {"hidden", 0, ARG_INT, &o.hidden, "H", "the MLP's hidden width (default 32)"},
        {"epochs", 0, ARG_INT, &o.epochs, "E", "the MLP's SGD passes per fit (default 5)"},
        {"wd", 0, ARG_DOUBLE, &o.weight_decay, "L", "weight decay of the utility model (default 1e-3)"},
        {"lr", 0, ARG_DOUBLE, &o.lr, "R",
         "SGD rate (the MLP, gshapley); default: gshapley picks the best one-pass rate of 1, 0.3, 0.1, 0.03, 0.01, "
         "the MLP takes 0.1"},
        {"newton-tol", 0, ARG_DOUBLE, &o.newton_tol, "T", "the convex model's |grad| target (default 1e-6)"},
        {"run", 0, ARG_STR, &o.run, "FILE",
         "features: the penultimate activations of this MLP run (default: the inputs)"},
        {"checkpoint", 0, ARG_STR, &o.checkpoint, "NAME", "the run's checkpoint (default final)"},
        {"permutations", 0, ARG_INT, &o.permutations, "P", "tmc, gshapley: at most P permutations in all (default 500)"},
        {"tolerance", 0, ARG_DOUBLE, &o.tolerance, "T",
         "truncate a permutation after 5 prefixes in a row within T·|U(all)| of U(all) (default 0.01; 0 never)"},
        {"converge", 0, ARG_DOUBLE, &o.converge, "C",
         "stop when the values' relative change over the last --window permutations is below C (default 0.05; 0 "
         "runs them all)"},
        {"window", 0, ARG_INT, &o.window, "W", "permutations the convergence criterion looks back (default 100)"},
        {"k", 'k', ARG_INT, &o.knn_k, "K", "knn: neighbours (default 10)"},
        {"seed", 0, ARG_U64, &o.seed, "S", "permutations, the MLP's initialisation, random removal (default 0)"},
        {"state", 0, ARG_STR, &o.state, "FILE",
         "tmc, gshapley: state file; an interrupted run resumes, more --permutations extend it"},
        {"output", 'o', ARG_STR, &o.output, "FILE", "write the values (HDF5)"},
        {"csv", 0, ARG_STR, &csv, "FILE", "write rank,train_index,label,value,se[,flipped], the lowest-valued first"},
        {"png", 0, ARG_STR, &png, "FILE", "write the removal curves as a PNG plot"},
        {"show", 0, ARG_INT, &show, "N", "list the N lowest-valued rows (default 10)"},
        {"curve-points", 0, ARG_INT, &o.curve_points, "N", "removal curves: N points (default 11; 0 none)"},
        {"curve-max", 0, ARG_DOUBLE, &o.curve_max, "F", "removal curves: up to this share removed (default 0.5)"},
        {"shard", 0, ARG_I64, &o.shard_rows, "ROWS", "rows per shard read (default from --shard-mb)"},
        {"shard-mb", 0, ARG_DOUBLE, &o.shard_mb, "MB", "memory of one shard (default 64)"},
        {"block-mb", 0, ARG_DOUBLE, &o.block_mb, "MB",
         "knn: memory of the distance block, validation points x N x 8 bytes (default 512)"},
        {"force", 'f', ARG_FLAG, &o.force, NULL, "overwrite outputs; start the state afresh"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {
        "infl shapley", "--train FILE:/split[a:b] --valid FILE:/split[a:b] [--method tmc|gshapley|knn|exact] [options]",
        "Data Shapley (Ghorbani & Zou 2019): the value of each training row for a utility, the accuracy (or\n"
        "minus the loss) on --valid of a model trained on a subset. tmc: Truncated Monte Carlo over\n"
        "permutations, the convex model refitted (warm started) on every prefix; gshapley: one pass of\n"
        "SGD per permutation; exact: every subset (16 rows at most); knn: the exact KNN-Shapley of Jia et\n"
        "al. (2019), the utility of a K-nearest-neighbour classifier, for a train split of any length\n"
        "(streamed in shards). Features: the inputs, or --run's penultimate activations. Permutations run\n"
        "in parallel rounds (--threads), seeded; a line per round gives the convergence. With /flipped in\n"
        "the train split: the share of flipped labels among the lowest-valued 10% and 20%. Removal\n"
        "curves: the test accuracy after removing the highest- or lowest-valued rows, against random.",
        opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!o.train) return usage_error(spec.cmd, "no training rows (--train FILE:/split[a:b])");
    if (!o.valid) return usage_error(spec.cmd, "no utility split (--valid FILE:/split[a:b])");
    if (!strcmp(method, "tmc")) o.method = INFL_SHAPLEY_TMC;
    else if (!strcmp(method, "gshapley")) o.method = INFL_SHAPLEY_GSHAPLEY;
    else if (!strcmp(method, "knn")) o.method = INFL_SHAPLEY_KNN;
    else if (!strcmp(method, "exact")) o.method = INFL_SHAPLEY_EXACT;
    else return usage_error(spec.cmd, "--method: expected tmc, gshapley, knn or exact");
    if (!strcmp(utility, "accuracy")) o.utility_loss = 0;
    else if (!strcmp(utility, "loss")) o.utility_loss = 1;
    else return usage_error(spec.cmd, "--utility: expected accuracy or loss");
    if (!strcmp(model, "convex")) o.model_mlp = 0;
    else if (!strcmp(model, "mlp")) o.model_mlp = 1;
    else return usage_error(spec.cmd, "--model: expected convex or mlp");
    if (png && o.curve_points == 0) return usage_error(spec.cmd, "--png draws the removal curves: --curve-points > 0");
    if (show < 0) return usage_error(spec.cmd, "--show: expected N >= 0");
    o.threads = c.threads;
    if (!c.quiet) o.log = stderr;
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    const char *outs[] = {o.output, csv, png};
    infl_shapley_result *r = NULL;
    infl_status st = refuse_existing(ctx, outs, 3, o.force);
    if (st == INFL_OK) st = infl_shapley(ctx, &o, &r);
    end_progress(&c);
    if (st == INFL_OK) {
        print_result(r, &o, show);
        if (o.output && !c.quiet) fprintf(stderr, "wrote %s\n", o.output);
        if (csv) st = write_csv(ctx, csv, o.force, r);
        if (st == INFL_OK && csv && !c.quiet) fprintf(stderr, "wrote %s\n", csv);
        if (st == INFL_OK && png) st = write_png(ctx, png, o.force, r, &o);
        if (st == INFL_OK && png && !c.quiet) fprintf(stderr, "wrote %s\n", png);
    }
    infl_shapley_result_free(r);
    return finish(&c, ctx, st);
}
