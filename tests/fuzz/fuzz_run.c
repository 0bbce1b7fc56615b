/*
 * fuzz_run.c — libFuzzer harness: a `run` file through store_run_open (the model's
 * spec, an MLP's or a GPT's with its tokenizer, the checkpoint list), store_run_find,
 * store_run_load of its checkpoints, and the optional training attributes.
 * Header: which checkpoints to load.
 */
#include <stdlib.h>

#include "core/spec.h"
#include "data/tokenizer.h"
#include "fuzzutil.h"
#include "store/store.h"

#define FUZZ_NAME "run"
#define FUZZ_HDR 2
#define MAX_PARAMS (16 << 20)  // parameters the harness loads (64 MiB of floats)

static void fuzz_read(infl_ctx *ctx, const char *path, fz_in *h) {
    uint8_t pick = fz_u8(h), name = fz_u8(h);
    infl_run *r = NULL;
    fz_before(ctx);
    infl_status rc = store_run_open(ctx, path, &r);
    fz_after(ctx, rc, "store_run_open");
    if (rc < 0) return;
    const infl_model_spec *spec = store_run_spec(r);
    size_t np = infl_spec_nparams(spec);
    (void)store_run_data(r);
    (void)store_run_optimizer(r);
    const infl_tokenizer *t = store_run_tokenizer(r);
    if (t) {
        tok_codec *c = NULL;
        fz_before(ctx);
        rc = tok_codec_create(ctx, t, &c);
        fz_after(ctx, rc, "tok_codec_create");
        tok_codec_free(c);
    }
    int n = store_run_ncheckpoints(r), i = 0;
    static const char *const names[] = {NULL, "final", "000001", "3", "nope"};
    fz_before(ctx);
    rc = store_run_find(ctx, r, names[name % 5], &i);
    fz_after(ctx, rc, "store_run_find");
    if (rc == INFL_OK && (i < 0 || i >= n)) abort();
    float *params = np <= MAX_PARAMS ? malloc((np ? np : 1) * sizeof *params) : NULL;
    for (int k = 0; params && k < n && k < 3; k++) {
        int c = k == 0 ? i : (pick + k) % n;
        (void)store_run_checkpoint(r, c)->name;
        fz_before(ctx);
        rc = store_run_load(ctx, r, c, params);
        fz_after(ctx, rc, "store_run_load");
    }
    free(params);
    double v;
    char buf[64];
    store_run_get_f64(r, "train_lr", &v);
    store_run_get_str(r, "train_schedule", buf, sizeof buf);
    store_run_close(r);
}

#include "h5harness.h"
