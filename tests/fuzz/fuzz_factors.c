/*
 * fuzz_factors.c — libFuzzer harness: a `factors` file (EK-FAC) through
 * store_factors_read: the layer list (the seam's d_in, d_out, bias and layer_names,
 * or the older `layers` width chain), every attribute, every layer's eigenbases and
 * eigenvalues with their shapes and values.
 */
#include <stdlib.h>

#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "factors"
#define FUZZ_HDR 1

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    (void)h;
    infl_factors *f = NULL;
    fz_before(ctx);
    infl_status rc = store_factors_read(ctx, path, &f);
    fz_after(ctx, rc, "store_factors_read");
    if (rc == INFL_OK && (f->L < 1 || f->L > INFL_MAX_LINEAR)) abort();
    infl_factors_free(f);
}

#include "h5harness.h"
