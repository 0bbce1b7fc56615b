/*
 * fuzz_text.c — libFuzzer harness: text files through infl_import_text (UTF-8 checks,
 * the separators %, line, paragraph or a custom line, BPE learned on the train split,
 * max_len, limit, the train/test split) into a documents dataset file. Input: four
 * option bytes (separator; BPE vocabulary; max_len; limit, test fraction and seed),
 * then the text; each 0xFF byte (never in UTF-8) starts another file (at most 4).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzzutil.h"

#define MAX_FILES 4

static char files[MAX_FILES][4096], out[4200];

static void cleanup(void) {
    for (int i = 0; i < MAX_FILES; i++) unlink(files[i]);
    unlink(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    infl_ctx *ctx = fz_ctx();
    if (!out[0]) {
        for (int i = 0; i < MAX_FILES; i++) {
            char name[32];
            snprintf(name, sizeof name, "topic%d.txt", i);
            snprintf(files[i], sizeof files[i], "%s", fz_tmp(name));
        }
        snprintf(out, sizeof out, "%s", fz_tmp("text.h5"));
        atexit(cleanup);
    }
    fz_in in = fz_in_make(data, size);
    uint8_t sep = fz_u8(&in), bpe = fz_u8(&in), maxlen = fz_u8(&in), lim = fz_u8(&in);
    const uint8_t *p = in.p + in.at, *end = in.p + in.n;
    const char *names[MAX_FILES];
    int nf = 0;
    while (nf < MAX_FILES) {
        const uint8_t *q = memchr(p, 0xFF, (size_t)(end - p));
        if (!q || nf == MAX_FILES - 1) q = end;
        fz_write_file(files[nf], p, (size_t)(q - p));
        names[nf] = files[nf];
        nf++;
        if (q == end) break;
        p = q + 1;
    }
    static const char *const seps[] = {"%", "line", "paragraph", "--", "%%", "%"};
    infl_import_text_options o = infl_import_text_options_default();
    o.files = names;
    o.nfiles = nf;
    o.sep = seps[sep % 6];
    o.bpe_vocab = bpe & 1 ? 258 + bpe / 2 : 0;
    o.max_len = maxlen % 4 == 0 ? 0 : maxlen / 4;
    o.limit = lim % 4 == 0 ? 0 : lim / 4;
    o.test_fraction = (double[]){0.0, 0.1, 0.5, 0.3}[(lim >> 1) % 4];
    o.seed = sep >> 4;
    o.force = 1;
    infl_import_text_result res;
    fz_before(ctx);
    fz_after(ctx, infl_import_text(ctx, &o, out, &res), "infl_import_text");
    fz_check_closed("infl_import_text");
    return 0;
}
