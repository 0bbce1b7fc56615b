/*
 * bench_rank.c — attribution throughput beside the machine's own sgemm rate,
 * measured in the same run, and peak memory.
 *
 *   bench_rank [--n N] [--queries M] [--layers 784,256,128,10] [--checkpoints C]
 *              [--methods tracin,if] [--reps R] [--data FILE.h5] [--json FILE]
 *
 * Data: synthetic rows written to a temporary HDF5 file (or --data FILE with /train
 * and /test of matching width). Model: a run of C checkpoints of seeded random weights
 * (lr 0.1), written beside it; attribution cost does not depend on how the weights
 * were trained. For each method: the median over R repetitions (after one warm-up) of
 * the whole streamed `rank` from HDF5, its score phase, the time the scorer waited for
 * the reader (what streaming from disk costs over the same run from memory), the
 * score-phase FLOPs counted from the shapes, and the achieved rate as a share of
 * OpenBLAS sgemm on the score phase's own GEMM shape, measured in this run.
 * Peak resident memory (getrusage) is printed last: run once with --n 60000 and once
 * with --n 1000000 to see that it does not grow with N.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/internal.h"
#include "core/rng.h"
#include "models/mlp.h"
#include "store/store.h"

static int die(infl_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_rank: %s: %s\n", what, infl_ctx_error(ctx));
    return 1;
}

int main(int argc, char **argv) {
    bench_passive_omp(argv);
    int64_t n = 60000;
    int M = 100, C = 5, reps = 3;
    const char *layers = "784,256,128,10", *methods = "tracin,if", *json = NULL, *data = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--queries")) M = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = argv[i + 1];
        else if (!strcmp(argv[i], "--checkpoints")) C = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--methods")) methods = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--data")) data = argv[i + 1];
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_rank [--n N] [--queries M] [--layers W,..] [--checkpoints C] "
                            "[--methods tracin,if,graddot] [--reps R] [--data FILE] [--json FILE]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64) reps = 3;
    infl_mlp_spec spec = {.act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE, .wd = 1e-4};
    {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", layers);
        int L = 0;
        for (char *s = NULL, *t = strtok_r(buf, ",", &s); t && L <= INFL_MAX_LAYERS; t = strtok_r(NULL, ",", &s))
            spec.widths[L++] = atoi(t);
        spec.L = L - 1;
    }
    infl_ctx *ctx = NULL;
    if (infl_ctx_create(NULL, &ctx) != INFL_OK) return 1;
    if (infl_mlp_spec_check(ctx, &spec) != INFL_OK) return die(ctx, "--layers");
    int D = spec.widths[0], K = spec.widths[spec.L];
    char path[256], runp[300], tref[320], qref[320];
    snprintf(path, sizeof path, "/tmp/infl-bench-rank-%ld.h5", (long)getpid());
    snprintf(runp, sizeof runp, "%s.run", path);

    // ---- data ----
    double tw = bench_now();
    if (!data) {
        infl_dsw *w;
        if (store_dataset_create(ctx, path, 1, &w) != INFL_OK) return die(ctx, "data");
        int64_t blk = 8192, ntest = M;
        float *x = malloc(sizeof(float) * blk * D);
        int32_t *y = malloc(sizeof(int32_t) * blk);
        const char *splits[2] = {"train", "test"};
        for (int s = 0; s < 2; s++) {
            int64_t rows = s ? ntest : n;
            if (store_dataset_add_split(ctx, w, splits[s], rows, D, INFL_Y_CLASS, 1, NULL) != INFL_OK)
                return die(ctx, "data");
            for (int64_t r0 = 0; r0 < rows; r0 += blk) {
                int64_t nb = r0 + blk <= rows ? blk : rows - r0;
                for (int64_t i = 0; i < nb; i++) {
                    uint64_t row = (uint64_t)(r0 + i) + (s ? (1ull << 40) : 0);
                    y[i] = (int32_t)infl_rng_below(7, INFL_RNG_SUBSET, row, 0, (uint64_t)K);
                    for (int j = 0; j < D; j++)
                        x[i * D + j] = (float)infl_rng_uniform(7, INFL_RNG_SUBSET, row, (uint32_t)j + 1) +
                                       0.05f * (float)((y[i] * 7 + j) % 11);
                }
                if (store_dataset_write_rows(ctx, w, splits[s], r0, nb, x, y, NULL) != INFL_OK)
                    return die(ctx, "data");
            }
        }
        free(x);
        free(y);
        if (store_dataset_commit(ctx, w) != INFL_OK) return die(ctx, "data");
        data = path;
    }
    tw = bench_now() - tw;
    snprintf(tref, sizeof tref, "%s:/train", data);
    snprintf(qref, sizeof qref, "%s:/test[0:%d]", data, M);

    // ---- a run of C checkpoints ----
    size_t P = infl_mlp_nparams(&spec);
    float *p = malloc(P * sizeof(float));
    infl_runw *rw;
    if (store_run_create(ctx, runp, 1, &(infl_model_spec){.kind = INFL_MODEL_MLP, .mlp = spec}, tref, "sgd", 1, &rw) != INFL_OK) return die(ctx, "run");
    for (int c = 0; c < C; c++) {
        infl_mlp_init(&spec, (uint64_t)c + 1, 0, p);
        for (size_t i = 0; i < P; i++) p[i] *= 0.5f;
        if (store_run_add_checkpoint(ctx, rw, 100 * (c + 1), c + 1, 0.1, NAN, p) != INFL_OK) return die(ctx, "run");
    }
    if (store_run_commit(ctx, rw) != INFL_OK) return die(ctx, "run");
    free(p);

    // ---- ceiling: sgemm at the score phase's GEMM shape (1024 train rows × layer) ----
    double peak_shape = 0;
    for (int l = 0; l < spec.L; l++) {
        double r = bench_sgemm_rate(1024, spec.widths[l + 1], spec.widths[l], 1, 9);
        peak_shape += r * spec.widths[l] * spec.widths[l + 1];
    }
    double wsum = 0;
    for (int l = 0; l < spec.L; l++) wsum += (double)spec.widths[l] * spec.widths[l + 1];
    peak_shape /= wsum;  // weighted by each layer's share of the work
    double peak_big = bench_sgemm_rate(2048, 2048, 2048, 1, 5);

    printf("machine: %s\n", infl_ctx_backend(ctx));
    printf("model %s (P = %zu), N = %lld train rows (%.0f MB of x), M = %d queries, %d checkpoints; data written in "
           "%.1f s\n",
           layers, P, (long long)n, n * (double)D * 4 / 1e6, M, C, tw);
    printf("sgemm ceilings: %.1f GFLOP/s at 2048^3, %.1f GFLOP/s at the score phase's layer shapes (1024 rows)\n\n",
           peak_big, peak_shape);
    printf("| method | rank total (s) | prepare (s) | score (s) | reader wait | score GFLOP | GFLOP/s | vs sgemm "
           "(shapes) | vs sgemm 2048^3 |\n|---|---|---|---|---|---|---|---|---|\n");
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (jf)
        fprintf(jf, "{\"backend\": \"%s\", \"layers\": \"%s\", \"n\": %lld, \"queries\": %d, \"checkpoints\": %d, "
                    "\"sgemm_2048_gflops\": %.3f, \"sgemm_shape_gflops\": %.3f, \"methods\": [",
                infl_ctx_backend(ctx), layers, (long long)n, M, C, peak_big, peak_shape);
    char mbuf[128];
    snprintf(mbuf, sizeof mbuf, "%s", methods);
    int first = 1;
    for (char *s = NULL, *t = strtok_r(mbuf, ",", &s); t; t = strtok_r(NULL, ",", &s)) {
        infl_rank_options o = infl_rank_options_default();
        o.run = runp;
        o.query = qref;
        o.top = 10;
        if (!strcmp(t, "tracin")) o.method = INFL_METHOD_TRACIN;
        else if (!strcmp(t, "graddot")) o.method = INFL_METHOD_GRADDOT;
        else if (!strcmp(t, "if")) {
            o.method = INFL_METHOD_IF;
            o.hessian = 1;  // ggn
            o.hessian_samples = 1000;
            o.cg_iters = 20;
            o.damping = 0.01;
        } else {
            fprintf(stderr, "bench_rank: unknown method %s\n", t);
            return 2;
        }
        double tot[64], prep[64], sc[64], wait[64], flops = 0;
        for (int r = -1; r < reps; r++) {
            infl_rank_result *res;
            double t0 = bench_now();
            if (infl_rank(ctx, &o, &res) != INFL_OK) return die(ctx, t);
            if (r >= 0) {
                tot[r] = bench_now() - t0;
                prep[r] = res->seconds_prepare;
                sc[r] = res->seconds_score;
                wait[r] = res->seconds_wait;
                flops = res->flops;
            }
            infl_rank_result_free(res);
        }
        double T = bench_median(tot, reps), Pp = bench_median(prep, reps), S = bench_median(sc, reps), W = bench_median(wait, reps);
        double rate = flops / S / 1e9;
        printf("| %s | %.2f | %.2f | %.2f | %.2f s (%.1f%%) | %.1f | %.1f | %.2f | %.2f |\n", t, T, Pp, S, W,
               100 * W / S, flops / 1e9, rate, rate / peak_shape, rate / peak_big);
        if (jf)
            fprintf(jf, "%s{\"method\": \"%s\", \"total_s\": %.4f, \"prepare_s\": %.4f, \"score_s\": %.4f, "
                        "\"wait_s\": %.4f, \"score_gflop\": %.3f, \"gflops\": %.3f}",
                    first ? "" : ", ", t, T, Pp, S, W, flops / 1e9, rate);
        first = 0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\npeak resident memory: %.1f MB (N = %lld; x alone would be %.0f MB)\n", ru.ru_maxrss / 1024.0,
           (long long)n, n * (double)D * 4 / 1e6);
    if (jf) {
        fprintf(jf, "], \"peak_rss_mb\": %.1f}\n", ru.ru_maxrss / 1024.0);
        fclose(jf);
    }
    if (data == path) unlink(path);
    unlink(runp);
    infl_ctx_free(ctx);
    return 0;
}
