/*
 * fuzz_info.c — libFuzzer harness: `infl info`'s describe (infl_info, the public API)
 * on any file: datasets (splits, classes, tokenizer), runs (model, checkpoints), other
 * formats and plain HDF5 as a tree. Its output goes to a sink that aborts past 64 MiB
 * (an output blow-up).
 */
#include "fuzzutil.h"

#define FUZZ_NAME "info"
#define FUZZ_HDR 1

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    (void)h;
    FILE *out = fz_sink((size_t)64 << 20);
    fz_before(ctx);
    infl_status rc = infl_info(ctx, path, out);
    fz_after(ctx, rc, "infl_info");
    fclose(out);
}

#include "h5harness.h"
