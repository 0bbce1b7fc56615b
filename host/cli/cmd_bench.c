/*
 * cmd_bench.c — `infl synth` (a synthetic class-structured dataset file of any size)
 * and `infl bench` (every phase of attribution beside the machine's own ceilings,
 * measured in the same run: a Markdown table on stdout, JSON with --json; with --run
 * a gpt run's attribution over its documents, and a table of its layers scored both
 * ways). The work
 * is in the library (host/data/synth.c, host/bench/bench.c); this file parses, prints
 * and writes.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "pipelines/bench.h"
#include "cliutil.h"
#include "core/internal.h"
#include "data/synth.h"

// "1,234,567" into buf.
static const char *digits(char *buf, size_t size, int64_t v) {
    char raw[32];
    snprintf(raw, sizeof raw, "%" PRId64, v);
    size_t len = strlen(raw), at = 0, lead = raw[0] == '-';
    for (size_t i = 0; i < len && at + 2 < size; i++) {
        if (i > lead && (len - i) % 3 == 0) buf[at++] = ',';
        buf[at++] = raw[i];
    }
    buf[at] = 0;
    return buf;
}

// ---- synth ----

int cmd_synth(int argc, char **argv) {
    common c = COMMON_INIT("infl synth");
    infl_synth_options o = infl_synth_options_default();
    const char *out = NULL;
    const cli_opt opts[] = {
        {"output", 'o', ARG_STR, &out, "FILE", "the dataset file to write (required)"},
        {"force", 'f', ARG_FLAG, &o.force, NULL, "overwrite the output if it exists"},
        {"n", 0, ARG_I64, &o.n, "N", "rows of /train (default 60000)", ">=1"},
        {"d", 0, ARG_I64, &o.d, "D", "features per row (default 784)", ">=1"},
        {"classes", 0, ARG_INT, &o.classes, "K", "class labels 0..K-1 (default 10)", ">=2"},
        {"test", 0, ARG_I64, &o.test, "T", "rows of /test; 0: no /test (default 100)", ">=0"},
        {"seed", 0, ARG_U64, &o.seed, "S", "seed of the generator (default 1)"},
        {"separation", 0, ARG_DOUBLE, &o.separation, "S",
         "distance between class means in noise standard deviations (default 4)", ">=0"},
        {"shard", 0, ARG_I64, &o.shard_rows, "ROWS", "rows generated and written at once (default: 64 MiB of x)", ">=1"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl synth", "-o FILE.h5 [--n N] [--d D] [--classes K] [--test T] [--seed S] [options]",
                     "Writes a synthetic dataset file (the schema infl import writes): /train and /test with\n"
                     "x float32 [N, D] drawn as Gaussian blobs around K random class means, and y int32 [N].\n"
                     "Each value depends only on (seed, split, row, column): the same seed gives the same file\n"
                     "whatever the shard size. Memory stays at one shard, whatever N is.\n"
                     "  infl synth -o syn.h5 --n 1000000 --d 784 --classes 10 --test 100 --seed 1",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!out) return usage_error(spec.cmd, "no output file (-o FILE.h5)");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    double t0 = infl_now();
    infl_status st = infl_synth(ctx, &o, out);
    if (st == INFL_OK && !c.quiet) {
        end_progress(&c);
        char n[32], t[32];
        printf("wrote %s: /train %s x %" PRId64 ", /test %s x %" PRId64 ", %d classes, seed %" PRIu64
               " (%.2f GB of x) in %.1f s\n",
               out, digits(n, sizeof n, o.n), o.d, digits(t, sizeof t, o.test), o.d, o.classes, o.seed,
               (double)(o.n + o.test) * (double)o.d * 4e-9, infl_now() - t0);
    }
    return finish(&c, ctx, st);
}

// ---- bench ----

// Rate of a phase in its unit (GFLOP/s or GB/s) for `seconds`.
static double rate_of(const infl_bench_phase *p, double seconds) {
    if (!(seconds > 0)) return 0;
    return (p->rate_is_flops ? p->flops : p->bytes) / seconds / 1e9;
}

static void print_phases(FILE *out, const infl_bench_report *r) {
    fprintf(out, "| phase | work | time (median) | %s | achieved | ceiling | vs ceiling |\n"
                 "|---|---|---|---|---|---|---|\n",
            r->lm ? "tokens/s" : "examples/s");
    for (int i = 0; i < r->nphases; i++) {
        const infl_bench_phase *p = &r->phase[i];
        const char *unit = p->rate_is_flops ? "GFLOP/s" : "GB/s";
        char amount[48], ex[32];
        if (p->rate_is_flops) snprintf(amount, sizeof amount, "%.3g GFLOP", p->flops / 1e9);
        else snprintf(amount, sizeof amount, "%.3g MB", p->bytes / 1e6);
        char t[32];
        if (p->seconds < 1) snprintf(t, sizeof t, "%.3g ms", p->seconds * 1e3);
        else snprintf(t, sizeof t, "%.2f s", p->seconds);
        fprintf(out, "| %s (`%s`) | %s: %s | %s | %s | %.1f %s | %.1f %s (%s) | **%.2f** |\n", p->title, p->name,
                p->what, amount, t, digits(ex, sizeof ex, (int64_t)llround(p->examples / p->seconds)),
                rate_of(p, p->seconds), unit, rate_of(p, p->ceiling_seconds), unit, p->ceiling, p->ratio);
    }
}

// A language model's layers scored both ways: per family, the form the FLOP count
// picks, each form's time and its ratio to its GEMMs alone, and which was faster.
static void print_layers(FILE *out, const infl_bench_report *r) {
    static const char *fam[2] = {"graddot (ghost)", "ekfac (contraction)"};
    fprintf(out,
            "\nscoring per layer: one sub-batch of %d documents (%d token rows) against %d queries (%d token rows), "
            "scored %" PRId64 " documents in all; ms, and GEMM-ceiling time / time in parentheses\n\n",
            r->score_docs, r->score_rows, r->score_queries, r->score_query_rows, r->rows);
    fprintf(out, "| family | layer | d_in x d_out | token rows | documents' gradients | FLOP count picks | faster | "
                 "picked right |\n|---|---|---|---|---|---|---|---|\n");
    for (int f = 0; f < 2; f++) {
        for (int l = 0; l < r->nlayers; l++) {
            const infl_bench_layer *y = &r->layer[f][l];
            if (!(y->seconds[0] > 0) || !(y->seconds[1] > 0)) continue;
            int faster = y->seconds[1] < y->seconds[0];
            fprintf(out, "| %s | %s | %d x %d | %.3f (%.2f; %.3g GFLOP) | %.3f (%.2f; %.3g GFLOP) | %s | %s | %s |\n",
                    fam[f], y->name, y->d_in, y->d_out, 1e3 * y->seconds[0], y->ceiling_seconds[0] / y->seconds[0],
                    y->flops[0] / 1e9, 1e3 * y->seconds[1], y->ceiling_seconds[1] / y->seconds[1], y->flops[1] / 1e9,
                    y->chosen ? "docs" : "rows", faster ? "docs" : "rows", y->chosen == faster ? "yes" : "**no**");
        }
        if (r->sum_rows_seconds[f] > 0)
            fprintf(out, "| %s | (the token rows' per-document sum, once per sub-batch) | | %.3f (%.2f; %.3g GFLOP) | "
                         "| | | |\n",
                    fam[f], 1e3 * r->sum_rows_seconds[f], r->sum_rows_ceiling[f] / r->sum_rows_seconds[f],
                    r->sum_rows_flops[f] / 1e9);
    }
}

static void print_markdown(FILE *out, const infl_bench_report *r, double rss_mb) {
    char n[32], m[32], rows[32], P[32], tk[32];
    fprintf(out, "infl bench on %s\n", r->backend);
    if (r->lm)
        fprintf(out,
                "model %s (P = %s); N = %s documents (%s tokens), M = %s query documents; in-memory phases on %s "
                "documents; median of %d runs after a warm-up\n",
                r->model, digits(P, sizeof P, (int64_t)r->params), digits(n, sizeof n, r->n),
                digits(tk, sizeof tk, r->tokens), digits(m, sizeof m, r->queries), digits(rows, sizeof rows, r->rows),
                r->reps);
    else
        fprintf(out,
                "model %s (P = %s); N = %s train rows, M = %s queries, %d checkpoints; in-memory phases on %s rows; "
                "median of %d runs after a warm-up\n",
                r->model, digits(P, sizeof P, (int64_t)r->params), digits(n, sizeof n, r->n),
                digits(m, sizeof m, r->queries), r->checkpoints, digits(rows, sizeof rows, r->rows), r->reps);
    fprintf(out, "data: %s", r->data);
    if (r->synth_seconds > 0) fprintf(out, ", written in %.1f s", r->synth_seconds);
    fprintf(out, "\n\n| ceiling (measured in this run) | value |\n|---|---|\n");
    fprintf(out, "| sgemm 2048³ through the backend | %.1f GFLOP/s |\n", r->sgemm_peak_gflops);
    if (!r->lm) fprintf(out, "| HDF5 read of /train (64 MiB shards) | %.2f GB/s |\n", r->hdf5_read_gbs);
    fprintf(out, "\n");
    print_phases(out, r);
    if (r->lm) print_layers(out, r);
    fprintf(out, "\npeak resident memory: %.1f MB\n", rss_mb);
}

static void print_json(FILE *f, const infl_bench_report *r, double rss_mb) {
    fprintf(f, "{\"infl_version\": \"%s\", \"backend\": ", infl_version_string());
    put_json(f, r->backend);
    fprintf(f, ", \"model\": ");
    put_json(f, r->model);
    fprintf(f, ", \"params\": %zu, \"n\": %" PRId64 ", \"queries\": %d, \"checkpoints\": %d, \"rows\": %" PRId64
               ", \"reps\": %d, \"data\": ",
            r->params, r->n, r->queries, r->checkpoints, r->rows, r->reps);
    put_json(f, r->data);
    fprintf(f, ", \"synth_seconds\": %.4f,\n \"ceilings\": {\"sgemm_2048_gflops\": %.4f, \"hdf5_read_gbs\": %.4f},\n"
               " \"phases\": [",
            r->synth_seconds, r->sgemm_peak_gflops, r->hdf5_read_gbs);
    for (int i = 0; i < r->nphases; i++) {
        const infl_bench_phase *p = &r->phase[i];
        fprintf(f, "%s\n  {\"name\": ", i ? "," : "");
        put_json(f, p->name);
        fprintf(f, ", \"title\": ");
        put_json(f, p->title);
        fprintf(f, ", \"what\": ");
        put_json(f, p->what);
        fprintf(f, ", \"seconds\": %.6g, \"flops\": %.6g, \"bytes\": %.6g, \"examples\": %.6g, \"examples_per_s\": %.6g"
                   ", \"rate\": %.6g, \"rate_unit\": \"%s\", \"ceiling\": ",
                p->seconds, p->flops, p->bytes, p->examples, p->seconds > 0 ? p->examples / p->seconds : 0,
                rate_of(p, p->seconds), p->rate_is_flops ? "GFLOP/s" : "GB/s");
        put_json(f, p->ceiling);
        fprintf(f, ", \"ceiling_rate\": %.6g, \"ceiling_seconds\": %.6g, \"ratio\": %.6g}",
                rate_of(p, p->ceiling_seconds), p->ceiling_seconds, p->ratio);
    }
    fprintf(f, "\n ]");
    if (r->lm) {
        fprintf(f, ",\n \"tokens\": %" PRId64 ", \"layers\": [", r->tokens);
        int k = 0;
        for (int fam = 0; fam < 2; fam++)
            for (int l = 0; l < r->nlayers; l++) {
                const infl_bench_layer *y = &r->layer[fam][l];
                if (!(y->seconds[0] > 0) && !(y->seconds[1] > 0)) continue;
                fprintf(f, "%s\n  {\"family\": \"%s\", \"layer\": ", k++ ? "," : "", fam ? "ekfac" : "graddot");
                put_json(f, y->name);
                fprintf(f, ", \"d_in\": %d, \"d_out\": %d, \"chosen\": \"%s\", \"rows_seconds\": %.6g, "
                           "\"rows_ceiling_seconds\": %.6g, \"rows_flops\": %.6g, \"docs_seconds\": %.6g, "
                           "\"docs_ceiling_seconds\": %.6g, \"docs_flops\": %.6g}",
                        y->d_in, y->d_out, y->chosen ? "docs" : "rows", y->seconds[0], y->ceiling_seconds[0],
                        y->flops[0], y->seconds[1], y->ceiling_seconds[1], y->flops[1]);
            }
        fprintf(f, "\n ],\n \"sum_rows_seconds\": [%.6g, %.6g], \"sum_rows_ceiling_seconds\": [%.6g, %.6g]",
                r->sum_rows_seconds[0], r->sum_rows_seconds[1], r->sum_rows_ceiling[0], r->sum_rows_ceiling[1]);
    }
    fprintf(f, ",\n \"peak_rss_mb\": %.1f}\n", rss_mb);
}

int cmd_bench(int argc, char **argv) {
    common c = COMMON_INIT("infl bench");
    infl_bench_options o = infl_bench_options_default();
    const char *model = NULL, *json = NULL;
    int force = 0;
    const cli_opt opts[] = {
        {"model", 0, ARG_STR, &model, "W,W,..", "MLP widths from input to output (default 784,256,128,10)"},
        {"n", 0, ARG_I64, &o.n, "N", "training rows (default 60000; with --data: its first N, 0 = all)", ">=0"},
        {"queries", 0, ARG_INT, &o.queries, "M", "queries (default 100)", ">=1"},
        {"reps", 0, ARG_INT, &o.reps, "R", "timed repetitions per phase after a warm-up; the median is reported (default 3)", "[1,64]"},
        {"json", 0, ARG_STR, &json, "FILE", "also write the results as JSON"},
        {"force", 'f', ARG_FLAG, &force, NULL, "overwrite the JSON file if it exists"},
        {"data", 0, ARG_STR, &o.data, "FILE",
         "a dataset file with /train and /test (default: synthesise N rows in a temporary file)"},
        {"checkpoints", 0, ARG_INT, &o.checkpoints, "C", "checkpoints TracIn sums over (default 5)", ">=1"},
        {"rows", 0, ARG_I64, &o.rows, "R", "training rows of the in-memory phases (default min(N, 8192))", ">=1"},
        {"hessian-samples", 0, ARG_I64, &o.hessian_samples, "N", "rows of the GGN the IF preconditioning uses (default 1000)", ">=1"},
        {"cg-iters", 0, ARG_INT, &o.cg_iters, "N", "CG iterations of the IF preconditioning (default 10)", ">=1"},
        {"query-rank", 0, ARG_INT, &o.query_rank, "R", "rank of the EK-FAC low-rank query phases (default 32)", ">=1"},
        {"top", 'k', ARG_INT, &o.top, "K", "k of the top-k merge and of the streamed rank (default 10)", ">=1"},
        {"seed", 0, ARG_U64, &o.seed, "S", "weights and synthetic data (default 1)"},
        {"phases", 0, ARG_STR, &o.phases, "LIST", "comma-separated phases to run (default all)"},
        {"workdir", 0, ARG_STR, &o.workdir, "DIR", "temporary files (default $TMPDIR, else /tmp)"},
        {"run", 0, ARG_STR, &o.run, "RUN.h5",
         "a gpt run: benchmark its attribution over its documents (--data FILE:/split, default the run's; --n the "
         "first N documents; --rows documents in memory, default 512; --queries M of --query, default /test[0:M])"},
        {"query", 0, ARG_STR, &o.query, "FILE:/split[a:b]", "with --run: the query documents"},
        COMMON_OPTS(c),
    };
    char names[1024], lmnames[512], about[2600];
    snprintf(about, sizeof about,
             "Measures the ceilings of this machine on the chosen backend (sgemm at each phase's own\n"
             "GEMM shapes and at 2048^3; the HDF5 read rate of the data), then times every phase of\n"
             "attribution on a model of random weights: per-example gradient factors, TracIn and graddot\n"
             "scoring (ghost dot), IF preconditioning (GGN + CG) and scoring (contraction), the top-k\n"
             "merge, a whole streamed `infl rank` from HDF5, and EK-FAC (the fit's passes and\n"
             "eigendecomposition, query preconditioning, full and rank-r scoring). For each: the work\n"
             "counted from the shapes, the median time, the achieved rate and its ratio to its ceiling\n"
             "(1 = as fast as its GEMMs alone, or its reads alone). A Markdown table on stdout; --json\n"
             "for a file.\nPhases: %s.\n"
             "With --run gpt.h5, a language model's attribution over its documents instead: per-token factors,\n"
             "the EK-FAC fit's passes, and scoring (graddot and ekfac) in both forms, token rows and\n"
             "documents' gradients, per layer beside the form the FLOP count picks. Phases: %s.",
             infl_bench_phase_names(names, sizeof names), infl_bench_lm_phase_names(lmnames, sizeof lmnames));
    cli_spec spec = {"infl bench", "[--backend B] [--model 784,256,128,10] [--n N] [--queries M] [--reps R] [--json F]",
                     about, opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (model && parse_widths(model, o.widths, &o.nlayers) != 0)
        return usage_error(spec.cmd, "--model: expected 2 to 17 comma-separated widths >= 1, e.g. 784,256,128,10");
    if (o.n < 0 || (o.n == 0 && !o.data && !o.run)) return usage_error(spec.cmd, "--n: expected at least 1 training row");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    char tmp[4200];
    infl_status st = INFL_OK;
    if (json) st = infl_out_begin(ctx, json, force, tmp, sizeof tmp);  // refuse before minutes of work
    infl_bench_report *r = NULL;
    if (st == INFL_OK) st = infl_bench(ctx, &o, &r);
    if (st == INFL_OK) {
        end_progress(&c);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double rss_mb = ru.ru_maxrss / 1024.0;
        print_markdown(stdout, r, rss_mb);
        if (json) {
            FILE *f = fopen(tmp, "w");
            if (!f) {
                st = infl_seterr(ctx, INFL_E_IO, "%s: cannot write", json);
            } else {
                print_json(f, r, rss_mb);
                int bad = ferror(f);
                bad |= fclose(f) != 0;
                if (bad) {
                    infl_out_abort(tmp);
                    st = infl_seterr(ctx, INFL_E_IO, "%s: write failed", json);
                } else {
                    st = infl_out_commit(ctx, tmp, json);
                }
            }
        }
    }
    free(r);
    return finish(&c, ctx, st);
}
