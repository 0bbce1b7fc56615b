/*
 * fuzzutil.h — what the libFuzzer harnesses of tests/fuzz share: a byte reader that
 * never fails (past the end it yields zeros, so every input decodes to something), a
 * byte writer for the seed generator, the structure-aware HDF5 builder (h5build.c)
 * and its encoder, one CPU context per process, temporary files, and the checks every
 * harness makes after a call (an error has a detail; no HDF5 object left open).
 */
#ifndef INFL_FUZZUTIL_H
#define INFL_FUZZUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "infl.h"
#include "store/store.h"

// ---- reading fuzz input ----

typedef struct {
    const uint8_t *p;
    size_t n, at;
} fz_in;

static inline fz_in fz_in_make(const uint8_t *p, size_t n) { return (fz_in){p, n, 0}; }
static inline size_t fz_left(const fz_in *in) { return in->n - in->at; }
uint8_t fz_u8(fz_in *in);    // 0 past the end
uint64_t fz_var(fz_in *in);  // LEB128 (at most 10 bytes), 0 past the end
// Copies n bytes into dst (zeros past the end); returns how many came from the input.
size_t fz_take(fz_in *in, void *dst, size_t n);

// ---- writing seed inputs ----

typedef struct {
    uint8_t *p;
    size_t n, cap;
} fz_out;

void fz_put_u8(fz_out *o, uint8_t v);
void fz_put_var(fz_out *o, uint64_t v);
void fz_put(fz_out *o, const void *p, size_t n);
void fz_out_free(fz_out *o);

// ---- the HDF5 builder (h5build.c) ----
//
// A program is a file-flags byte then operations, each an opcode byte (mod 5) and its
// fields: GROUP (parent, name), DATASET (parent, name, type, space, layout, data),
// ATTRIBUTE (object, name, type, space, data), LINK (parent, name, kind, target) and
// NAMED TYPE (parent, name, type). Names come from a dictionary of infl's schema or are
// literal; sizes and dimensions (always three, whatever the rank) are LEB128 varints; data are raw bytes, a constant from
// a table of hostile values (0, -1, 2^31 - 1, NaN, Inf, 1e30, ...), a ramp, or nothing
// (the fill value). So every input is a well-formed HDF5 file, written through the HDF5
// API, whose contents are what the fuzzer chose: what is fuzzed is what infl does with
// what libhdf5 hands it, not libhdf5's own parser.

// Builds the file `path` from the program; 0 when a file was written, -1 when HDF5
// refused to create it.
int h5b_build(const char *path, const uint8_t *prog, size_t n);
// Appends to o the program that rebuilds the HDF5 file `path` (groups, datasets with
// their types, shapes, layouts and data, attributes); with reshape = k >= 0, its k-th
// dataset gets one more dimension, of 3, and no data (a hostile variant: a reader that
// checks the length but not the rank reads past its buffer). Returns the number of
// datasets, or -1 when the file cannot be opened.
int h5b_encode(const char *path, int reshape, fz_out *o);

// ---- the harnesses' process ----

// One CPU context (one thread) for the process; HDF5's error printing is off.
infl_ctx *fz_ctx(void);
// "<dir>/infl-fuzz-<pid>-<name>" under /dev/shm when present (else $TMPDIR or /tmp),
// in static storage (one buffer per call site is the caller's job: copy it).
const char *fz_tmp(const char *name);
// Writes bytes to a file; aborts when it cannot (the harness cannot go on).
void fz_write_file(const char *path, const void *p, size_t n);
// A stream that discards what is written and aborts when more than `cap` bytes come
// (an output blow-up).
FILE *fz_sink(size_t cap);

// Before a library call: clears the context's detail. After it: a failure must leave a
// detail (else abort: an error nobody can read). With INFL_FUZZ_VERBOSE set in the
// environment, prints each call's status and detail to stderr (to read one input).
void fz_before(infl_ctx *ctx);
void fz_after(infl_ctx *ctx, infl_status rc, const char *call);
// When every handle is closed: no HDF5 object of any file may stay open (else abort: a
// leaked handle, which also keeps the file open), nor more dataspace, datatype or
// property-list ids than after fz_ctx's warm-up (a leaked id: HDF5 memory that
// LeakSanitizer cannot tell from libhdf5's own, lsan.supp).
void fz_check_closed(const char *after);

// The settings of the lds state the seed generator writes and the lds harness reads
// with (run, query, fingerprint, 4 models, 3 queries, fraction, seed, output, epochs);
// outputs and done NULL.
void fuzz_lds_settings(infl_lds_state *s);

#endif
