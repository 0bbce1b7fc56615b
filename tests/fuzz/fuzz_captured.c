/*
 * fuzz_captured.c — libFuzzer harness: a `captured` file (gradients recorded from
 * PyTorch) through store_split_open of its splits (the file's /model layers, the
 * offsets checked block by block), then a few examples' rows of every layer's A, D and Ds
 * and their losses at each checkpoint (store_captured_offsets, store_captured_read,
 * store_captured_loss), and the split's labels. Header: which split, the first example and
 * how many to read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "captured"
#define FUZZ_HDR 3
#define MAX_FLOATS (4 << 20)  // floats the harness reads at once (16 MiB)

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    static const char *const splits[] = {"train", "test", "model", "checkpoints"};
    const char *sp = splits[fz_u8(h) % 4];
    int r0 = fz_u8(h) % 32, n = fz_u8(h) % 8 + 1;
    infl_run *run = NULL;
    fz_before(ctx);
    infl_status rc = store_run_open(ctx, path, &run);
    fz_after(ctx, rc, "store_run_open");
    infl_dataref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.path, sizeof ref.path, "%s", path);
    snprintf(ref.split, sizeof ref.split, "%s", sp);
    ref.end = -1;
    infl_split *s = NULL;
    fz_before(ctx);
    rc = store_split_open(ctx, &ref, &s);
    fz_after(ctx, rc, "store_split_open");
    if (rc == INFL_OK && store_split_captured(s)) {
        const infl_split_info *in = store_split_info(s);
        const infl_captured_spec *c = store_split_captured(s);
        if (in->n < 1 || in->max_len < 1 || c->L < 1 || c->L > INFL_MAX_LINEAR) abort();
        int64_t a = r0 < in->n ? r0 : 0, m = a + n <= in->n ? n : in->n - a;
        int64_t offs[9];
        int32_t y[8];
        float loss[8];
        fz_before(ctx);
        fz_after(ctx, store_split_read(ctx, s, a, m, NULL, y, NULL), "store_split_read");
        fz_before(ctx);
        rc = store_captured_offsets(ctx, s, a, m, offs);
        fz_after(ctx, rc, "store_captured_offsets");
        int64_t rows = rc == INFL_OK ? offs[m] - offs[0] : 0;
        for (int k = 0; rc == INFL_OK && run && k < store_run_ncheckpoints(run) && k < 2; k++) {
            const char *ck = store_run_checkpoint(run, k)->name;
            fz_before(ctx);
            fz_after(ctx, store_captured_loss(ctx, s, ck, a, m, loss), "store_captured_loss");
            for (int l = 0; l < c->L && l < 4; l++)
                for (int part = 0; part < 3; part++) {
                    int64_t w = part == INFL_CAP_A ? c->d_in[l] : c->d_out[l];
                    if (rows * w > MAX_FLOATS) continue;
                    float *buf = malloc((size_t)(rows * w + 1) * sizeof(float));
                    if (!buf) abort();
                    fz_before(ctx);
                    fz_after(ctx, store_captured_read(ctx, s, ck, l, (infl_captured_part)part, offs[0], rows, buf),
                             "store_captured_read");
                    free(buf);
                }
            (void)store_captured_has_sampled(s, ck);
        }
    }
    store_split_close(s);
    store_run_close(run);
}

#include "h5harness.h"
