/*
 * fuzz_scores.c — libFuzzer harness: a `scores` file through store_scores_open, its
 * shape and attributes, row and column reads, and infl_compare of the file with
 * itself (the public API: Pearson, Spearman, top-k overlaps). Header: k, columns.
 */
#include <stdlib.h>

#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "scores"
#define FUZZ_HDR 2
#define MAX_CELLS (1 << 22)  // scores a read may ask for

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    int k = fz_u8(h) % 20, ncol = fz_u8(h) % 9;
    infl_scr *r = NULL;
    fz_before(ctx);
    infl_status rc = store_scores_open(ctx, path, &r);
    fz_after(ctx, rc, "store_scores_open");
    if (rc < 0) return;
    int M = 0;
    int64_t N = 0;
    store_scores_shape(r, &M, &N);
    (void)store_scores_attr(r, "method");
    (void)store_scores_attr(r, "query");
    (void)store_scores_attr(r, "train");
    int small = M >= 1 && N >= 1 && (uint64_t)M * (uint64_t)N <= MAX_CELLS;
    if (small) {
        float *row = malloc((size_t)N * sizeof *row), *cols = malloc((size_t)M * 8 * sizeof *cols);
        if (!row || !cols) abort();
        fz_before(ctx);
        fz_after(ctx, store_scores_read_row(ctx, r, M - 1, row), "store_scores_read_row");
        int64_t n = ncol < N ? ncol : N;
        if (n > 0) {
            fz_before(ctx);
            fz_after(ctx, store_scores_read_cols(ctx, r, N - n, n, cols), "store_scores_read_cols");
        }
        free(row);
        free(cols);
    }
    store_scores_close(r);
    if (small) {
        infl_compare_result *res = NULL;
        fz_before(ctx);
        rc = infl_compare(ctx, path, path, k, &res);
        fz_after(ctx, rc, "infl_compare");
        infl_compare_result_free(res);
    }
}

#include "h5harness.h"
