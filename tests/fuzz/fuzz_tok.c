/*
 * fuzz_tok.c — libFuzzer harness: the tokenizers. A BPE merge table from the input
 * (store_tok_check must refuse a bad one; a good one builds a codec), BPE learned on
 * the input's lines (tok_learn_bpe), and for each codec the round trip: decoding the
 * encoding of the text gives the text back, every id below the vocabulary (else
 * abort). Input: the learned vocabulary, min_count and the table's size, the merges
 * (2 × 2 bytes each), then the text.
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "fuzzutil.h"

#define MAX_MERGES 255

// Encodes and decodes text with t's codec; aborts when the text does not come back.
static void round_trip(infl_ctx *ctx, const infl_tokenizer *t, const uint8_t *text, int64_t n) {
    tok_codec *c = NULL;
    fz_before(ctx);
    infl_status rc = tok_codec_create(ctx, t, &c);
    fz_after(ctx, rc, "tok_codec_create");
    if (rc < 0) return;
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    uint8_t *back = malloc((size_t)(n ? n : 1));
    if (!ids || !back) abort();
    int64_t k = 0;
    size_t nb = 0;
    fz_before(ctx);
    rc = tok_encode(ctx, c, text, n, ids, &k);
    fz_after(ctx, rc, "tok_encode");
    if (rc == INFL_OK) {
        if (k < 0 || k > n) abort();
        for (int64_t i = 0; i < k; i++)
            if (ids[i] < 0 || ids[i] >= t->vocab || ids[i] == INFL_TOK_EOT) abort();
        fz_before(ctx);
        rc = tok_decode(ctx, c, ids, k, back, (size_t)n, &nb);
        fz_after(ctx, rc, "tok_decode");
        if (rc != INFL_OK || nb != (size_t)n || (n && memcmp(back, text, (size_t)n) != 0)) {
            fprintf(stderr, "fuzz: the tokenizer's round trip lost the text (%lld bytes -> %lld ids -> %zu bytes)\n",
                    (long long)n, (long long)k, nb);
            abort();
        }
    }
    free(ids);
    free(back);
    tok_codec_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    infl_ctx *ctx = fz_ctx();
    fz_in in = fz_in_make(data, size);
    int V = INFL_TOK_BASE_VOCAB + 1 + fz_u8(&in);
    int min_count = fz_u8(&in) % 3 + 1;
    uint8_t m = fz_u8(&in);
    infl_tokenizer t = {.kind = INFL_TOK_BPE, .vocab = INFL_TOK_BASE_VOCAB + m % MAX_MERGES, .eot = INFL_TOK_EOT,
                        .n_merges = m % MAX_MERGES};
    if (m == 255) t.vocab++;  // a vocabulary that disagrees with the merges
    t.merges = malloc((size_t)(t.n_merges ? t.n_merges : 1) * 2 * sizeof *t.merges);
    if (!t.merges) abort();
    for (int i = 0; i < 2 * t.n_merges; i++) {
        uint16_t v = (uint16_t)(fz_u8(&in) | fz_u8(&in) << 8);
        t.merges[i] = (int32_t)v - 8;  // a few negative ids too
    }
    const uint8_t *text = in.p + in.at;
    int64_t n = (int64_t)fz_left(&in);

    // the table from the input
    fz_before(ctx);
    infl_status rc = store_tok_check(ctx, "fuzz", &t);
    fz_after(ctx, rc, "store_tok_check");
    if (rc == INFL_OK) round_trip(ctx, &t, text, n);
    store_tok_clear(&t);

    // BPE learned on the text's lines
    int64_t *off = malloc((size_t)(n + 2) * sizeof *off), nd = 0;
    if (!off) abort();
    off[0] = 0;
    for (int64_t i = 0; i < n; i++)
        if (text[i] == '\n') off[++nd] = i + 1;
    if (off[nd] < n) off[++nd] = n;
    infl_tokenizer l;
    memset(&l, 0, sizeof l);
    fz_before(ctx);
    rc = tok_learn_bpe(ctx, text, off, nd, V, min_count, &l, NULL);
    fz_after(ctx, rc, "tok_learn_bpe");
    if (rc == INFL_OK) round_trip(ctx, &l, text, n);
    store_tok_clear(&l);
    free(off);
    return 0;
}
