/*
 * bench.h — `infl bench`: the throughput of every phase of attribution beside the
 * machine's own ceilings, measured in the same run on the same backend (DESIGN.md
 * "Performance: know the floor").
 *
 * One pipeline (bench.c): it measures the ceilings (sgemm through the backend at each
 * phase's own GEMM shapes and at 2048³, the HDF5 read rate of the data file), then
 * times each phase of a table (the median of `reps` runs after one warm-up) and
 * counts its work from the shapes (FLOPs and bytes), so that each phase is reported
 * as an achieved rate and a ratio to its ceiling. The model is a run of seeded random
 * weights written to a temporary file: attribution cost does not depend on how the
 * weights were trained. Without a data file, one is synthesised (data/synth.h).
 *
 * With `run` (a gpt run), the same driver benchmarks a language model's attribution
 * over its documents instead (bench_lm.c): per-token factors, the EK-FAC fit's passes,
 * and scoring in both forms (token rows, documents' gradients) per layer beside the
 * form the FLOP count picks; the model is the run's own, the data its documents.
 *
 * Internal to the library (not in infl.h); the CLI (host/cli/cmd_bench.c) prints the
 * report as Markdown and JSON. Everything runs through the backend table, so
 * `--backend cuda` measures the GPU with the same code.
 */
#ifndef INFL_BENCH_H
#define INFL_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

#define INFL_BENCH_MAX_PHASES 24
#define INFL_BENCH_MAX_LAYERS 64  // layers of a language model's per-layer scoring table

typedef struct {
    const char *data;         // dataset file with /train and /test (D = widths[0], labels < widths[L]);
                              // NULL: synthesise one (n train rows, `queries` test rows) in workdir
    const char *workdir;      // where temporary files go; NULL: $TMPDIR, else /tmp
    int nlayers;              // L; default 3
    int widths[INFL_MAX_LAYERS + 1];  // d_0 .. d_L; default 784,256,128,10
    int64_t n;                // train rows (with data: the first n of /train, or all when
                              // it has fewer; 0 = all); default 60000
    int queries;              // M, read from /test[0:M]; default 100
    int reps;                 // timed repetitions per phase (1 to 64), after one warm-up; default 3
    int checkpoints;          // C, the checkpoints TracIn sums over; default 5
    int64_t rows;             // train rows the in-memory phases process; 0 = min(n, 8192)
    int64_t hessian_samples;  // rows of the GGN of the IF preconditioning; default 1000
    int cg_iters;             // CG iterations of the IF preconditioning (all taken: tolerance 0); default 10
    int top;                  // k of the top-k merge and of the streamed rank; default 10
    int query_rank;           // r of the EK-FAC low-rank phases; default 32
    uint64_t seed;            // weights and synthetic data; default 1
    const char *phases;       // comma-separated phase names to run; NULL or "all": every phase
    // language models (bench_lm.c): `run` set benchmarks a gpt run's attribution; then
    // `data` is a documents split ("f.h5:/train", or a file: its /train; default the
    // run's own data), n its first documents (0 = all), rows the documents of the
    // in-memory phases (0 = min(n, 512)) and queries the documents of `query`
    // (default: /test[0:queries] of the data's file); the MLP's fields are ignored
    const char *run;
    const char *query;
} infl_bench_options;

// Returns the defaults documented above.
infl_bench_options infl_bench_options_default(void);

typedef struct {
    char name[32];            // "grad", "tracin", "graddot", "if_prepare", "if_score", "topk", "rank", ...
    char title[80];           // what it is, for a table: "TracIn scoring (ghost dot)"
    char what[160];           // the sizes it was timed at: "8,192 rows x 100 queries x 5 ckpts"
    char ceiling[80];         // what it is compared with: "sgemm at its shapes", "HDF5 read", ...
    double seconds;           // median over reps
    double flops;             // floating-point operations counted from the shapes (0: none)
    double bytes;             // bytes it must move (HDF5 or memory), counted from the shapes
    double examples;          // train examples (or queries) processed: examples/s = examples / seconds
    double ceiling_seconds;   // the time the same work takes at the ceiling
    double ratio;             // ceiling_seconds / seconds: achieved rate / ceiling rate
    int rate_is_flops;        // 1: rate and ceiling are GFLOP/s (flops); 0: GB/s (bytes)
} infl_bench_phase;

// A language model's layer scored both ways (bench_lm.c): per form [0] token rows
// (ghost over token pairs, or the contraction per row) and [1] documents' gradients.
typedef struct {
    char name[32];            // the layer's name ("h0.qkv")
    int d_in, d_out;
    int chosen;               // the form attrib_choose_paths picks by FLOP count: 0 rows, 1 documents
    double flops[2];          // counted from the shapes
    double seconds[2];        // median; 0: that form's phase did not run
    double ceiling_seconds[2];  // its GEMMs alone at their shapes
} infl_bench_layer;

typedef struct {
    char backend[256];        // infl_ctx_backend
    char model[160];          // "784-256-128-10 relu softmax_ce"
    size_t params;            // P
    int64_t n;                // train rows
    int queries, reps, checkpoints;
    int64_t rows;             // rows of the in-memory phases
    char data[4096];          // the data file ("(synthesised)" suffix when made here)
    double synth_seconds;     // writing the synthetic data (0 when given)
    double sgemm_peak_gflops; // sgemm 2048³ through the backend
    double hdf5_read_gbs;     // reading /train of the data file in 64 MiB shards (GB/s, 1e9 B)
    int nphases;
    infl_bench_phase phase[INFL_BENCH_MAX_PHASES];
    // language models: examples are tokens (examples/s = tokens/s); n documents holding
    // `tokens` tokens; rows documents in memory; per family (0 ghost: graddot, and
    // tracin per checkpoint; 1 ekfac: the contraction) and layer, both forms; the
    // token-row form's per-document sum (one GEMM per sub-batch, whatever the layers)
    int lm;
    int64_t tokens;
    int nlayers;
    infl_bench_layer layer[2][INFL_BENCH_MAX_LAYERS];
    double sum_rows_seconds[2], sum_rows_ceiling[2], sum_rows_flops[2];
    int score_docs, score_queries, score_query_rows, score_rows;  // a scored sub-batch: documents, queries, their
                                                                  // token rows, the sub-batch's token rows
} infl_bench_report;

// Runs the benchmark the options describe. *out (caller's, free()) holds the report.
// Temporary files (the run, synthesised data) are removed on return. Progress:
// "bench", phases done of the phases to run, with the phase's name. INFL_E_ARG for
// bad options (an unknown phase name lists the known ones); INFL_E_INTERRUPTED when
// the cancel flag is raised.
infl_status infl_bench(infl_ctx *ctx, const infl_bench_options *o, infl_bench_report **out);

// The names of the phases, in order, comma-separated, into buf (cut to size);
// returns buf.
const char *infl_bench_phase_names(char *buf, size_t size);
// The same for a language model's phases (`run` set).
const char *infl_bench_lm_phase_names(char *buf, size_t size);

#endif
