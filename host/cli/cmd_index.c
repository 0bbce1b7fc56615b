/*
 * cmd_index.c — `infl index`: a gradient index of the training set (projected
 * per-example gradients at every checkpoint, TRAK / LoGra), for `infl rank --index`
 * and `infl self --index` to query many times without touching the training data.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cliutil.h"

int cmd_index(int argc, char **argv) {
    common c = {.cmd = "infl index"};
    infl_index_options o = infl_index_options_default();
    const char *out = NULL, *proj = NULL, *dtype = NULL, *kron = NULL;
    const cli_opt opts[] = {
        {"run", 0, ARG_STR, &o.run, "FILE", "the run file (required)"},
        {"train", 0, ARG_STR, &o.train, "FILE:/split", "training data (default: the data the run was trained on)"},
        {"checkpoints", 0, ARG_STR, &o.checkpoints, "LIST", "all (default), or names/steps, comma-separated (final: the last)"},
        {"projection", 0, ARG_STR, &proj, "P", "rademacher (default), gaussian, or kron (LoGra's, per layer)"},
        {"dim", 0, ARG_INT, &o.dim, "K", "rademacher, gaussian: the projected width (default 2048)", ">=1"},
        {"kron", 0, ARG_STR, &kron, "OxI", "kron: each layer's k_out x k_in (default 32x32; capped per layer)"},
        {"seed", 0, ARG_U64, &o.seed, "S", "the projection's seed (default 0)"},
        {"dtype", 0, ARG_STR, &dtype, "T", "float16 (default) or float32"},
        {"shard", 0, ARG_I64, &o.shard_rows, "ROWS", "rows read at once (default: from --shard-mb)", ">=1"},
        {"shard-mb", 0, ARG_DOUBLE, &o.shard_mb, "MB", "memory budget of one shard (default 64)", ">0"},
        {"output", 'o', ARG_STR, &out, "FILE", "the index to write (required)"},
        {"force", 'f', ARG_FLAG, &o.force, NULL, "overwrite the output; start afresh over a partial one of other settings"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl index", "--run run.h5 [--projection rademacher --dim 2048] -o index.h5 [options]",
                     "Projects every training example's gradient at every checkpoint once, phi = P g, and stores\n"
                     "it (TRAK: Park et al. 2023; LoGra: Choe et al. 2024): then `infl rank --index index.h5` and\n"
                     "`infl self --index` score queries by GEMMs against the stored rows, with no pass over the\n"
                     "training data. P is never stored: its entries come from a counter-based generator keyed by\n"
                     "--seed, so the same on every backend and for any shard size. rademacher/gaussian: one P of\n"
                     "K rows over all layers (E[P'P] = I). kron: per layer (P_out x P_in) vec(D' A) =\n"
                     "vec(P_out D' A P_in'), k_out x k_in entries per layer, much cheaper for wide layers.\n"
                     "Classifiers store the margin's gradient (log sum_{k!=y} e^z_k - z_y) and q = 1 - p_y (TRAK's\n"
                     "features; q phi is the loss's gradient). The work goes to FILE.partial, flushed after every\n"
                     "shard: an interrupted or killed index continues when run again with the same options.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!o.run) return usage_error(spec.cmd, "no run file (--run run.h5)");
    if (!out) return usage_error(spec.cmd, "no output file (-o index.h5)");
    if (proj) {
        if (!strcmp(proj, "rademacher")) o.projection = INFL_PROJ_RADEMACHER;
        else if (!strcmp(proj, "gaussian")) o.projection = INFL_PROJ_GAUSSIAN;
        else if (!strcmp(proj, "kron")) o.projection = INFL_PROJ_KRON;
        else return usage_error(spec.cmd, "--projection: expected rademacher, gaussian or kron");
    }
    if (kron) {
        char x;
        if (sscanf(kron, "%d%c%d", &o.kron_out, &x, &o.kron_in) != 3 || (x != 'x' && x != 'X') || o.kron_out < 1 ||
            o.kron_in < 1)
            return usage_error(spec.cmd, "--kron: expected OUTxIN, two whole numbers >= 1 (e.g. 32x32)");
        if (o.projection != INFL_PROJ_KRON) return usage_error(spec.cmd, "--kron goes with --projection kron");
    }
    if (dtype) {
        if (!strcmp(dtype, "float16")) o.float16 = 1;
        else if (!strcmp(dtype, "float32")) o.float16 = 0;
        else return usage_error(spec.cmd, "--dtype: expected float16 or float32");
    }
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_index_report r;
    infl_status st = infl_index(ctx, &o, out, &r);
    end_progress(&c);
    if (st == INFL_OK) {
        if (r.resumed_rows > 0)
            printf("resumed from %s.partial: %" PRId64 " of %" PRId64 " rows were done\n", out, r.resumed_rows, r.N);
        double ex = (double)(r.N - r.resumed_rows);
        printf("indexed %" PRId64 " examples x %d checkpoint%s, k = %d (%s): %.0f bytes per example; %.2f s, %.0f "
               "examples/s (projection %.2f GFLOP, forward+backward %.2f GFLOP)\n",
               r.N, r.checkpoints, r.checkpoints > 1 ? "s" : "", r.k, infl_projection_name(o.projection),
               r.bytes_per_example, r.seconds, r.seconds > 0 ? ex / r.seconds : 0.0, r.flops_project / 1e9,
               r.flops_fb / 1e9);
        if (!c.quiet) fprintf(stderr, "wrote %s\n", out);
    } else if (st == INFL_E_INTERRUPTED) {
        fprintf(stderr, "infl index: interrupted; %s.partial keeps what is done: run the same command to continue\n",
                out);
    }
    return finish(&c, ctx, st);
}
