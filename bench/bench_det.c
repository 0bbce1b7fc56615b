/*
 * bench_det.c — what deterministic GEMMs cost (infl_ctx_options.deterministic; README
 * "Reproducibility"): training at 1 and 2 threads, with the CPU backend's GEMMs cut into
 * shape-only tiles (deterministic) and on OpenBLAS's own threads (the default), each
 * configuration's time beside the others measured in the same run, the configurations
 * interleaved repetition by repetition so that a busy machine slows them alike.
 *
 * Usage: bench_det [--data FILE:/split] [--n N] [--reps R] [--steps S] [--json FILE]
 *
 * 1. MLP: infl_train of the README's 784-256-128-10 (batch 128, SGD with momentum, one
 *    epoch) on --data (default: a synthetic split of N = 20,000 rows of 784 written to
 *    /tmp); its reported seconds (reading included) and final loss.
 * 2. GPT: the demo's model (2 blocks, 4 heads, dim 64, context 128, bytes), the
 *    trainer's own step (gpt_train_step) on 32 documents of 128 positions; the median
 *    of S steps after 2 warm-up steps, and the loss after them.
 * The loss columns show the bits: deterministic rows agree across thread counts.
 * The table goes to stdout last; --json writes the same figures.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/internal.h"
#include "core/rng.h"
#include "data/synth.h"
#include "models/gpt.h"

#define NCFG 4
static const int THREADS[NCFG] = {1, 1, 2, 2}, DET[NCFG] = {0, 1, 0, 1};

static infl_ctx *open_ctx(int c) {
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = "cpu";
    o.threads = THREADS[c];
    o.deterministic = DET[c];
    infl_ctx *ctx = NULL;
    if (infl_ctx_create(&o, &ctx) != INFL_OK) {
        fprintf(stderr, "bench_det: %s\n", infl_ctx_error(ctx));
        exit(1);
    }
    return ctx;
}

// One epoch of the README's MLP on `data`: seconds, and the final loss into *loss.
static double mlp_epoch(int c, const char *data, const char *out, double *loss) {
    infl_ctx *ctx = open_ctx(c);
    infl_train_options o = infl_train_options_default();
    const int w[4] = {784, 256, 128, 10};
    memcpy(o.widths, w, sizeof w);
    o.nlayers = 3;
    o.data = data;
    o.epochs = 1;
    o.batch = 128;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.weight_decay = 1e-4;
    o.seed = 1;
    o.checkpoint_every = 0;
    o.force = 1;
    infl_train_report rep;
    if (infl_train(ctx, &o, out, &rep) != INFL_OK) {
        fprintf(stderr, "bench_det: %s\n", infl_ctx_error(ctx));
        exit(1);
    }
    infl_ctx_free(ctx);
    unlink(out);
    *loss = rep.final_loss;
    return rep.seconds;
}

// The demo GPT's step: the median seconds of `steps` steps after 2 warm-up steps, and
// the loss of the last into *loss.
static double gpt_steps(int c, int steps, double *loss) {
    infl_ctx *ctx = open_ctx(c);
    infl_gpt_spec s = {.n_layer = 2, .n_head = 4, .dim = 64, .context = 128, .vocab = 257, .eot = 256, .wd = 0.1};
    const int B = 32, T = s.context;
    size_t P = infl_spec_nparams(&(infl_model_spec){.kind = INFL_MODEL_GPT, .gpt = s});
    float *hp = malloc(P * sizeof(float));
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *len = malloc(sizeof(int32_t) * B);
    infl_gpt_init(&s, 1, hp);
    for (int i = 0; i < B; i++) {
        len[i] = T - 1;
        for (int t = 0; t < T; t++)
            tok[i * T + t] = (int32_t)infl_rng_below(1, INFL_RNG_SYNTH, (uint64_t)(i * T + t), 0, (uint64_t)s.eot);
    }
    gpt_work *w = NULL;
    gpt_adamw opt;
    if (gpt_work_create(ctx, &s, B, &w) != INFL_OK || gpt_adamw_create(ctx, &s, hp, &opt) != INFL_OK) {
        fprintf(stderr, "bench_det: %s\n", infl_ctx_error(ctx));
        exit(1);
    }
    double ts[64], gn = 0;
    int64_t ntok = 0;
    int trunc = 0;
    for (int k = -2; k < steps; k++) {
        double t0 = bench_now();
        if (gpt_train_step(ctx, &s, &opt, w, tok, T, len, B, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, k + 3, loss, &ntok, &gn,
                           &trunc) != INFL_OK) {
            fprintf(stderr, "bench_det: %s\n", infl_ctx_error(ctx));
            exit(1);
        }
        if (k >= 0) ts[k] = bench_now() - t0;
    }
    gpt_adamw_free(ctx, &opt);
    gpt_work_free(ctx, w);
    infl_ctx_free(ctx);
    free(hp), free(tok), free(len);
    return bench_median(ts, steps);
}

int main(int argc, char **argv) {
    bench_passive_omp(argv);
    const char *data = NULL, *json = NULL;
    int64_t n = 20000;
    int reps = 5, steps = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--data")) data = argv[i + 1];
        else if (!strcmp(argv[i], "--n")) n = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_det [--data FILE:/split] [--n N] [--reps R] [--steps S] [--json FILE]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64) reps = 5;
    if (steps < 1 || steps > 64) steps = 10;
    char synth[256] = "", ref[300], out[300], machine[256];
    {
        infl_ctx *ctx = open_ctx(3);
        snprintf(machine, sizeof machine, "%s", infl_ctx_backend(ctx));
        infl_ctx_free(ctx);
    }
    snprintf(out, sizeof out, "/tmp/infl-bench-det-%ld.run.h5", (long)getpid());
    if (!data) {
        snprintf(synth, sizeof synth, "/tmp/infl-bench-det-%ld.h5", (long)getpid());
        infl_ctx *ctx = open_ctx(3);
        infl_synth_options so = infl_synth_options_default();
        so.n = n;
        so.test = 0;
        if (infl_synth(ctx, &so, synth) != INFL_OK) {
            fprintf(stderr, "bench_det: %s\n", infl_ctx_error(ctx));
            return 1;
        }
        infl_ctx_free(ctx);
        snprintf(ref, sizeof ref, "%s:/train", synth);
        data = ref;
    }
    double mlp_t[NCFG][64], gpt_t[NCFG][64], mlp_loss[NCFG], gpt_loss[NCFG];
    for (int r = 0; r < reps; r++)
        for (int c = 0; c < NCFG; c++) {
            mlp_t[c][r] = mlp_epoch(c, data, out, &mlp_loss[c]);
            gpt_t[c][r] = gpt_steps(c, steps, &gpt_loss[c]);
        }
    if (*synth) unlink(synth);
    double mlp_m[NCFG], gpt_m[NCFG];
    for (int c = 0; c < NCFG; c++) mlp_m[c] = bench_median(mlp_t[c], reps), gpt_m[c] = bench_median(gpt_t[c], reps);

    printf("machine: %s; MLP 784-256-128-10 on %s, 1 epoch, batch 128; GPT 2 x 64, batch 32 x 128 positions, "
           "%d steps; medians of %d interleaved repetitions\n\n",
           machine, data, steps, reps);
    printf("| threads | GEMMs | MLP epoch | vs threaded | MLP final loss | GPT step | vs threaded | GPT loss |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int c = 0; c < NCFG; c++) {
        int t = c & ~1;  // the threaded configuration of the same thread count
        printf("| %d | %s | %.3f s | %.2f | %.9g | %.1f ms | %.2f | %.9g |\n", THREADS[c],
               DET[c] ? "deterministic" : "threaded", mlp_m[c], mlp_m[c] / mlp_m[t], mlp_loss[c], 1e3 * gpt_m[c],
               gpt_m[c] / gpt_m[t], gpt_loss[c]);
    }
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "{\"data\": \"%s\", \"reps\": %d, \"steps\": %d, \"configs\": [", data, reps, steps);
            for (int c = 0; c < NCFG; c++)
                fprintf(f,
                        "%s{\"threads\": %d, \"deterministic\": %d, \"mlp_epoch_s\": %.4f, \"mlp_loss\": %.9g, "
                        "\"gpt_step_s\": %.5f, \"gpt_loss\": %.9g}",
                        c ? ", " : "", THREADS[c], DET[c], mlp_m[c], mlp_loss[c], gpt_m[c], gpt_loss[c]);
            fprintf(f, "]}\n");
            fclose(f);
        }
    }
    return 0;
}
