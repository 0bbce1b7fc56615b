/*
 * fuzz_lds.c — libFuzzer harness: an `lds` state file through store_lds_is_state and
 * store_lds_read with the settings of the seed's state (run, query, fingerprint,
 * fraction, seed, output, epochs), so that mutations reach the outputs and done
 * arrays. Header: the models and queries the caller expects.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "lds"
#define FUZZ_HDR 2

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    infl_lds_state s;
    fuzz_lds_settings(&s);
    s.models = fz_u8(h) % 8 + 1;
    s.M = fz_u8(h) % 8 + 1;
    s.outputs = calloc((size_t)s.models * (size_t)s.M, sizeof *s.outputs);
    s.done = calloc((size_t)s.models, sizeof *s.done);
    if (!s.outputs || !s.done) abort();
    fz_before(ctx);
    infl_status rc = store_lds_is_state(ctx, path);
    fz_after(ctx, rc, "store_lds_is_state");
    if (rc == INFL_OK) {
        fz_before(ctx);
        fz_after(ctx, store_lds_read(ctx, path, &s), "store_lds_read");
    }
    free(s.outputs);
    free(s.done);
}

#include "h5harness.h"
