/*
 * synth.h — synthetic `dataset` files of any size (`infl synth`), for benchmarks and
 * scaling studies: class-structured data (Gaussian blobs around class means), so that
 * a model trained on it is meaningful and its influence scores are not noise.
 *
 * Internal to the library (not in infl.h): the CLI (host/cli/cmd_bench.c) and the
 * benchmark pipeline (host/bench) call it.
 */
#ifndef INFL_DATA_SYNTH_H
#define INFL_DATA_SYNTH_H

#include <stdint.h>

#include "core/internal.h"

typedef struct {
    int64_t n;          // rows of /train; default 60000
    int64_t d;          // features per row; default 784
    int classes;        // K >= 2 class labels 0 .. K-1; default 10
    int64_t test;       // rows of /test; 0 = no /test split; default 100
    uint64_t seed;      // default 1
    double separation;  // distance between two class means in units of the noise's
                        // standard deviation (about; the means are random): default 4
    int64_t shard_rows; // rows generated and written at once; 0 = about 64 MiB of x
    int force;          // overwrite an existing output
} infl_synth_options;

// Returns the defaults documented above.
infl_synth_options infl_synth_options_default(void);

// Writes a `dataset` file (schema version 1, as `infl import` writes) with /train (n
// rows) and, when test > 0, /test (test rows): x float32 [rows, d], y int32 [rows],
// /classes ("c0", "c1", ...) and a root attribute `source` with the parameters.
//
// Row i of split s: y = uniform in [0, K); x = μ_y + ε with ε ~ N(0, I) and the class
// means μ_k ~ N(0, separation² / (2d) · I) (so that |μ_a − μ_b| ≈ separation). Every
// value is a pure function of (seed, split, row, column) drawn from the counter-based
// generator (core/rng.h, stream INFL_RNG_SYNTH): the file does not depend on the
// shard size or the number of threads. Memory: one shard (shard_rows × d floats) and
// the K × d class means, never n × d. Written under a temporary name and renamed when
// complete; INFL_E_EXISTS when out_path exists and !force; INFL_E_ARG for bad sizes;
// INFL_E_INTERRUPTED (nothing left behind) when the context's cancel flag is raised.
// Progress: "synth", rows written of n + test.
infl_status infl_synth(infl_ctx *ctx, const infl_synth_options *o, const char *out_path);

// The generator itself, for tests and callers that want rows without a file: row
// `row` of split `split` (0 train, 1 test) into x (d) and *y. mu is the (K, d) table
// of class means from infl_synth_means.
void infl_synth_row(const infl_synth_options *o, const float *mu, int split, int64_t row, float *x, int32_t *y);
// Fills mu (K, d) with the class means of the options' seed and separation.
void infl_synth_means(const infl_synth_options *o, float *mu);

#endif
