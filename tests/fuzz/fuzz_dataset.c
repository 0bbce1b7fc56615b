/*
 * fuzz_dataset.c — libFuzzer harness: a `dataset` file (rows or documents) through the
 * split reader (store_split_open and every read a pipeline makes: rows, documents
 * with their tokens, extra int32 datasets, class names, the tokenizer's codec).
 * Header: split, range kind and bounds, the token budget T of a documents read.
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "dataset"
#define FUZZ_HDR 4
#define MAX_ROWS 256     // rows (documents) read per input
#define MAX_WIDTH 65536  // features per row a reader is asked for

static void read_rows(infl_ctx *ctx, infl_split *s, const infl_split_info *in) {
    if (in->d > MAX_WIDTH || in->k > MAX_WIDTH) return;
    int64_t B = 32, n = in->n < MAX_ROWS ? in->n : MAX_ROWS;
    float *x = malloc((size_t)(B * (in->d ? in->d : 1)) * sizeof *x);
    float *yf = malloc((size_t)(B * in->k) * sizeof *yf);
    int32_t *y = malloc((size_t)B * sizeof *y);
    if (!x || !yf || !y) abort();
    for (int64_t r = 0; r < n; r += B) {
        int64_t m = n - r < B ? n - r : B;
        fz_before(ctx);
        infl_status rc = store_split_read(ctx, s, r, m, x, in->y_kind == INFL_Y_CLASS ? y : NULL,
                                          in->y_kind == INFL_Y_REAL ? yf : NULL);
        fz_after(ctx, rc, "store_split_read");
        if (rc < 0) break;
    }
    if (in->has_flipped) {
        fz_before(ctx);
        fz_after(ctx, store_split_read_int(ctx, s, "flipped", 0, n < B ? n : B, y), "store_split_read_int");
    }
    free(x);
    free(yf);
    free(y);
}

static void read_docs(infl_ctx *ctx, infl_split *s, const infl_split_info *in, int T) {
    int64_t B = 16, n = in->n < MAX_ROWS ? in->n : MAX_ROWS;
    int32_t *tok = malloc((size_t)(B * (T ? T : 1)) * sizeof *tok);
    int32_t *len = malloc((size_t)B * sizeof *len), *lab = malloc((size_t)B * sizeof *lab);
    uint8_t text[4096];
    tok_codec *codec = NULL;
    if (!tok || !len || !lab) abort();
    const infl_tokenizer *t = store_split_tokenizer(s);
    if (t) {
        fz_before(ctx);
        infl_status rc = tok_codec_create(ctx, t, &codec);
        fz_after(ctx, rc, "tok_codec_create");
    }
    for (int64_t r = 0; r < n; r += B) {
        int64_t m = n - r < B ? n - r : B;
        fz_before(ctx);
        infl_status rc = store_split_read_docs(ctx, s, r, m, T, INFL_TOK_EOT, T ? tok : NULL, len, lab);
        fz_after(ctx, rc, "store_split_read_docs");
        if (rc < 0) break;
        for (int64_t i = 0; codec && T && i < m; i++) {
            size_t nb;
            int k = len[i] < T ? len[i] : T;
            fz_before(ctx);
            rc = tok_decode(ctx, codec, tok + i * T, k, text, sizeof text, &nb);
            fz_after(ctx, rc, "tok_decode");
        }
    }
    tok_codec_free(codec);
    free(tok);
    free(len);
    free(lab);
}

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    static const char *const splits[] = {"train", "test", "train", "x"};
    uint8_t which = fz_u8(h), a = fz_u8(h), b = fz_u8(h), T = fz_u8(h) % 65;
    char ref[4400];
    const char *sp = splits[which % 4];
    switch ((which >> 2) % 4) {
    case 0: snprintf(ref, sizeof ref, "%s:/%s", path, sp); break;
    case 1: snprintf(ref, sizeof ref, "%s:/%s[%u:]", path, sp, a); break;
    case 2: snprintf(ref, sizeof ref, "%s:/%s[%u:%u]", path, sp, a, b); break;
    default: snprintf(ref, sizeof ref, "%s:/%s[%u]", path, sp, a); break;
    }
    infl_dataref r;
    fz_before(ctx);
    infl_status rc = infl_dataref_parse(ctx, ref, &r);
    fz_after(ctx, rc, "infl_dataref_parse");
    if (rc < 0) return;
    infl_split *s = NULL;
    fz_before(ctx);
    rc = store_split_open(ctx, &r, &s);
    fz_after(ctx, rc, "store_split_open");
    if (rc < 0) return;
    const infl_split_info *in = store_split_info(s);
    if (in->kind == INFL_SPLIT_DOCS)
        read_docs(ctx, s, in, T);
    else
        read_rows(ctx, s, in);
    char name[64];
    for (int i = 0; i <= in->n_classes && i < 1000; i++) store_split_class_name(s, i, name, sizeof name);
    (void)store_split_ref(s);
    store_split_close(s);
}

#include "h5harness.h"
