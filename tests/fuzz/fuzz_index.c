/*
 * fuzz_index.c — libFuzzer harness: a gradient `index` file (infl index) through
 * store_index_open, then a few rows of each checkpoint through store_index_read (float16
 * or float32 φ and q), and store_index_run (the run and data it names). Header: the
 * first row and how many rows to read.
 */
#include <stdlib.h>

#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "index"
#define FUZZ_HDR 2

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    int r0 = fz_u8(h) % 64, n = fz_u8(h) % 16 + 1;
    infl_ixr *r = NULL;
    fz_before(ctx);
    infl_status rc = store_index_open(ctx, path, &r);
    fz_after(ctx, rc, "store_index_open");
    if (rc != INFL_OK) return;
    const infl_index_info *in = store_index_info(r);
    if (in->N < 1 || in->k < 1 || in->nck < 1 || in->nck > INFL_INDEX_MAX_CK) abort();
    if (in->k <= (1 << 20)) {
        int64_t a = r0 < in->N ? r0 : 0, m = a + n <= in->N ? n : in->N - a;
        float *phi = malloc((size_t)m * in->k * sizeof(float)), *q = malloc((size_t)m * sizeof(float));
        if (!phi || !q) abort();
        for (int c = 0; c < in->nck; c++) {
            fz_before(ctx);
            fz_after(ctx, store_index_read(ctx, r, c, a, m, phi, q), "store_index_read");
        }
        free(phi);
        free(q);
    }
    store_index_close_r(r);
    char run[4096], data[4416];
    fz_before(ctx);
    fz_after(ctx, store_index_run(ctx, path, run, sizeof run, data, sizeof data), "store_index_run");
}

#include "h5harness.h"
