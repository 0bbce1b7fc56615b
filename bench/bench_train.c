/*
 * bench_train.c — training throughput beside the machine's own sgemm rate, measured
 * in the same run. Usage: bench_train [--n N] [--layers 784,256,128,10] [--batch B]
 *                                     [--epochs E] [--json FILE]
 *
 * 1. Ceiling: OpenBLAS sgemm at the training step's own shapes (forward, weight
 *    gradient and input gradient of every layer for a batch of B) and at 2048³;
 *    median of repetitions after a warm-up.
 * 2. Work: infl_train on synthetic data of N rows (written to a temporary HDF5
 *    file), examples per second, and the achieved rate counted as
 *    6 · Σ_l d_l d_{l+1} FLOPs per example (forward 2, backward 4).
 * The table goes to stdout last; --json writes the same figures.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/internal.h"
#include "store/store.h"

int main(int argc, char **argv) {
    bench_passive_omp(argv);
    int64_t n = 60000;
    int batch = 128, epochs = 1;
    const char *layers = "784,256,128,10", *json = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--epochs")) epochs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_train [--n N] [--layers W,..] [--batch B] [--epochs E] [--json FILE]\n");
            return 2;
        }
    }
    infl_train_options o = infl_train_options_default();
    {
        int L = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", layers);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) o.widths[L++] = atoi(t);
        o.nlayers = L - 1;
    }
    // ---- ceilings ----
    double step_flops = 0, step_time = 0;
    for (int l = 0; l < o.nlayers; l++) {
        int din = o.widths[l], dout = o.widths[l + 1];
        double f = 2.0 * batch * din * dout;
        step_time += f / bench_sgemm_rate(batch, dout, din, 1, 21);  // forward Z = A Wᵀ
        step_time += f / bench_sgemm_rate(dout, din, batch, 0, 21);  // ∇W = Δᵀ A (same flops)
        if (l > 0) step_time += f / bench_sgemm_rate(batch, din, dout, 0, 21);  // Δ W
        step_flops += (l > 0 ? 3 : 2) * f;
    }
    double shape_peak = step_flops / step_time;  // GFLOP/s of the step's GEMMs alone
    double big_peak = bench_sgemm_rate(2048, 2048, 2048, 0, 5);

    // ---- synthetic data and training ----
    infl_ctx *ctx = NULL;
    if (infl_ctx_create(NULL, &ctx) != INFL_OK) return 1;
    char path[256];
    snprintf(path, sizeof path, "/tmp/infl-bench-train-%ld.h5", (long)getpid());
    infl_dsw *w = NULL;
    int D = o.widths[0], K = o.widths[o.nlayers];
    if (store_dataset_create(ctx, path, 1, &w) != INFL_OK ||
        store_dataset_add_split(ctx, w, "train", n, D, INFL_Y_CLASS, 1, NULL) != INFL_OK) {
        fprintf(stderr, "bench_train: %s\n", infl_ctx_error(ctx));
        return 1;
    }
    int64_t blk = 4096;
    float *x = malloc(sizeof(float) * blk * D);
    int32_t *y = malloc(sizeof(int32_t) * blk);
    for (int64_t r0 = 0; r0 < n; r0 += blk) {
        int64_t nb = r0 + blk <= n ? blk : n - r0;
        for (int64_t i = 0; i < nb; i++) {
            y[i] = (int32_t)((r0 + i) % K);
            for (int j = 0; j < D; j++) x[i * D + j] = (float)(((r0 + i) * 31 + j * 17) % 97) / 97.0f + 0.01f * y[i];
        }
        if (store_dataset_write_rows(ctx, w, "train", r0, nb, x, y, NULL) != INFL_OK) return 1;
    }
    if (store_dataset_commit(ctx, w) != INFL_OK) return 1;
    free(x);
    free(y);
    char ref[300], out[300];
    snprintf(ref, sizeof ref, "%s:/train", path);
    snprintf(out, sizeof out, "%s.run", path);
    o.data = ref;
    o.batch = batch;
    o.epochs = epochs;
    o.lr = 0.01;
    o.checkpoint_every = 0;
    o.force = 1;
    infl_train_report rep;
    infl_status st = infl_train(ctx, &o, out, &rep);
    unlink(path);
    unlink(out);
    if (st != INFL_OK) {
        fprintf(stderr, "bench_train: %s\n", infl_ctx_error(ctx));
        return 1;
    }
    double per_ex = 0;
    for (int l = 0; l < o.nlayers; l++) per_ex += 6.0 * o.widths[l] * o.widths[l + 1];
    double achieved = rep.examples_per_s * per_ex / 1e9;

    printf("machine: %s\n", infl_ctx_backend(ctx));
    printf("| what | value | ratio |\n|---|---|---|\n");
    printf("| sgemm 2048^3 | %.1f GFLOP/s | 1.00 |\n", big_peak);
    printf("| sgemm at the step's shapes (batch %d) | %.1f GFLOP/s | %.2f of 2048^3 |\n", batch, shape_peak,
           shape_peak / big_peak);
    printf("| train %s, N=%lld, %d epoch(s) | %.0f examples/s, %.1f s | |\n", layers, (long long)n, epochs,
           rep.examples_per_s, rep.seconds);
    printf("| achieved (6 flop/weight/example) | %.1f GFLOP/s | %.2f of step-shape sgemm, %.2f of 2048^3 |\n",
           achieved, achieved / shape_peak, achieved / big_peak);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f,
                    "{\"backend\": \"%s\", \"layers\": \"%s\", \"n\": %lld, \"batch\": %d, \"sgemm_2048_gflops\": %.3f,"
                    " \"sgemm_step_gflops\": %.3f, \"examples_per_s\": %.1f, \"train_gflops\": %.3f}\n",
                    infl_ctx_backend(ctx), layers, (long long)n, batch, big_peak, shape_peak, rep.examples_per_s,
                    achieved);
            fclose(f);
        }
    }
    infl_ctx_free(ctx);
    return 0;
}
