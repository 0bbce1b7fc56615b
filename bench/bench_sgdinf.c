/*
 * bench_sgdinf.c — scores against counterfactual training: for training rows z, the
 * run's training repeated with z left out of its batches (each batch keeping its
 * divisor: the counterfactual SGD-influence linearises, pipelines/sgdinf.h), and each
 * query's actual change of loss beside the predicted one, score/n (DESIGN.md's
 * convention; any scores file with /scores, e.g. `infl rank --method sgd-influence
 * -o F --save-scores`).
 *
 * Usage: bench_sgdinf --run RUN --query FILE:/split[a:b] --scores F.h5 [--scores G.h5 ...]
 *                     [--random K] [--extreme K] [--seed S] [--eps E] [--csv FILE]
 * With --eps the truth is the derivative instead: z weighted by 1 ∓ E in its batches,
 * central difference (what SGD-influence is, to first order). The rows z: K drawn at random (seeded), and the K with the largest Σ_q |score| of the
 * first scores file. Per set and scores file: Pearson over all (query, z) pairs, the
 * mean over queries of the per-query Pearson, and the sign agreement (the share of
 * pairs where prediction and truth have the same sign). Prints a table; --csv writes
 * every pair.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/rng.h"
#include "estimators/stats.h"
#include "pipelines/sgdinf.h"
#include "store/store.h"

enum { MAXS = 8 };

static int cmp_desc(const void *a, const void *b) {
    const double *x = a, *y = b;
    return x[0] < y[0] ? 1 : x[0] > y[0] ? -1 : 0;
}

static void report(const char *set, const char *method, const double *pred, const double *act, int nz, int M) {
    int n = nz * M, agree = 0, both = 0;
    double *px = malloc((size_t)nz * sizeof(double)), *py = malloc((size_t)nz * sizeof(double));
    for (int i = 0; i < n; i++)
        if (pred[i] != 0 && act[i] != 0) {
            both++;
            agree += (pred[i] > 0) == (act[i] > 0);
        }
    double mean = 0;
    int valid = 0;
    for (int q = 0; q < M; q++) {
        for (int j = 0; j < nz; j++) {
            px[j] = pred[(size_t)j * M + q];
            py[j] = act[(size_t)j * M + q];
        }
        double r = stats_pearson(px, py, nz);
        if (isfinite(r)) {
            mean += r;
            valid++;
        }
    }
    printf("| %-8s | %-28s | %5d | %8.4f | %8.4f | %6.3f |\n", set, method, n, stats_pearson(pred, act, n),
           valid ? mean / valid : NAN, both ? (double)agree / both : NAN);
    free(px);
    free(py);
}

int main(int argc, char **argv) {
    bench_passive_omp(argv);
    const char *run = NULL, *query = NULL, *csv = NULL, *scores[MAXS];
    int ns = 0, nrand = 100, nextreme = 50;
    uint64_t seed = 1;
    double eps = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--run")) run = argv[i + 1];
        else if (!strcmp(argv[i], "--query")) query = argv[i + 1];
        else if (!strcmp(argv[i], "--scores") && ns < MAXS) scores[ns++] = argv[i + 1];
        else if (!strcmp(argv[i], "--random")) nrand = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--extreme")) nextreme = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--csv")) csv = argv[i + 1];
        else if (!strcmp(argv[i], "--eps")) eps = atof(argv[i + 1]);
        else break;
    }
    if (!run || !query || ns == 0) {
        fprintf(stderr, "usage: bench_sgdinf --run RUN --query FILE:/split[a:b] --scores F.h5 [--scores G.h5 ...] "
                        "[--random K] [--extreme K] [--seed S] [--eps E] [--csv FILE]\n");
        return 2;
    }
    infl_ctx *ctx;
    if (infl_ctx_create(NULL, &ctx) != INFL_OK) return 1;
#define TRY(x)                                                      \
    do {                                                            \
        if ((x) != INFL_OK) {                                       \
            fprintf(stderr, "bench_sgdinf: %s\n", infl_ctx_error(ctx)); \
            return 1;                                               \
        }                                                           \
    } while (0)
    // the scores, and the run's size
    int M = 0;
    int64_t N = 0;
    float *S[MAXS];
    char method[MAXS][80];
    for (int s = 0; s < ns; s++) {
        infl_scr *sc;
        TRY(store_scores_open(ctx, scores[s], &sc));
        int m;
        int64_t n;
        store_scores_shape(sc, &m, &n);
        if (s > 0 && (m != M || n != N)) {
            fprintf(stderr, "bench_sgdinf: %s is [%d, %lld], not [%d, %lld]\n", scores[s], m, (long long)n, M,
                    (long long)N);
            return 1;
        }
        M = m;
        N = n;
        snprintf(method[s], sizeof method[s], "%s%s%s", store_scores_attr(sc, "method"),
                 *store_scores_attr(sc, "sgd_variant") ? " " : "", store_scores_attr(sc, "sgd_variant"));
        S[s] = malloc((size_t)M * N * sizeof(float));
        if (!S[s]) return 1;
        TRY(store_scores_read_cols(ctx, sc, 0, N, S[s]));
        store_scores_close(sc);
    }
    infl_run *r;
    TRY(store_run_open(ctx, run, &r));
    size_t P = infl_spec_nparams(store_run_spec(r));
    store_run_close(r);
    float *w = malloc(P * sizeof(float));
    double *base = malloc((size_t)M * sizeof(double)), *loss = malloc((size_t)M * sizeof(double));

    // the z's: random, then the most influential by Σ_q |score| of the first file
    int nz = nrand + nextreme;
    int64_t *z = malloc((size_t)(nz > 0 ? nz : 1) * sizeof(int64_t));
    double *key = malloc((size_t)N * 2 * sizeof(double));
    int k = 0;
    for (int64_t i = 0; i < N; i++) {
        double a = 0;
        for (int q = 0; q < M; q++) a += fabs(S[0][(size_t)q * N + i]);
        key[2 * i] = a;
        key[2 * i + 1] = (double)i;
    }
    qsort(key, (size_t)N, 2 * sizeof(double), cmp_desc);
    for (int i = 0; i < nextreme && i < N; i++) z[k++] = (int64_t)key[2 * i + 1];
    int nx = k;
    for (int i = 0; k < nz && i < 100 * nz; i++) {
        int64_t c = (int64_t)infl_rng_below(seed, INFL_RNG_SUBSET, (uint64_t)i, 7, (uint64_t)N);
        int dup = 0;
        for (int j = 0; j < k; j++) dup |= z[j] == c;
        if (!dup) z[k++] = c;
    }
    nz = k;

    double t0 = bench_now();
    TRY(infl_sgd_counterfactual(ctx, run, NULL, 0, 1.0, w));
    double t_one = bench_now() - t0;
    TRY(infl_sgd_query_losses(ctx, run, w, query, base));
    double *act = malloc((size_t)nz * M * sizeof(double)), *pred = malloc((size_t)nz * M * sizeof(double));
    t0 = bench_now();
    double *lossp = malloc((size_t)M * sizeof(double));
    for (int j = 0; j < nz; j++) {
        if (eps > 0) {
            // the derivative SGD-influence linearises: z weighted by 1 -/+ eps, per unit of weight removed
            TRY(infl_sgd_counterfactual(ctx, run, &z[j], 1, 1.0 - eps, w));
            TRY(infl_sgd_query_losses(ctx, run, w, query, loss));
            TRY(infl_sgd_counterfactual(ctx, run, &z[j], 1, 1.0 + eps, w));
            TRY(infl_sgd_query_losses(ctx, run, w, query, lossp));
            for (int q = 0; q < M; q++) act[(size_t)j * M + q] = (loss[q] - lossp[q]) / (2 * eps);
        } else {
            TRY(infl_sgd_counterfactual(ctx, run, &z[j], 1, 0.0, w));
            TRY(infl_sgd_query_losses(ctx, run, w, query, loss));
            for (int q = 0; q < M; q++) act[(size_t)j * M + q] = loss[q] - base[q];
        }
        if (isatty(2)) fprintf(stderr, "\rcounterfactual %d of %d", j + 1, nz);
    }
    double t_cf = bench_now() - t0;
    if (isatty(2)) fprintf(stderr, "\n");
    FILE *fp = csv ? fopen(csv, "w") : NULL;
    if (fp) {
        fprintf(fp, "set,z,query,actual");
        for (int s = 0; s < ns; s++) fprintf(fp, ",%s", method[s]);
        fprintf(fp, "\n");
        for (int j = 0; j < nz; j++)
            for (int q = 0; q < M; q++) {
                fprintf(fp, "%s,%lld,%d,%.9g", j < nx ? "extreme" : "random", (long long)z[j], q,
                        act[(size_t)j * M + q]);
                for (int s = 0; s < ns; s++) fprintf(fp, ",%.9g", S[s][(size_t)q * N + z[j]] / (double)N);
                fprintf(fp, "\n");
            }
        fclose(fp);
    }
    printf("counterfactual trainings: %d (%.2f s each; the training replayed once: %.2f s), %d queries, N = %lld; "
           "truth: %s\n\n",
           nz, t_cf / (nz > 0 ? nz : 1), t_one, M, (long long)N,
           eps > 0 ? "central difference in z's weight (1 -/+ eps)" : "z left out of its batches");
    printf("| z set    | method                       | pairs |  pearson | mean per-query pearson | sign |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int s = 0; s < ns; s++) {
        const char *sets[3] = {"extreme", "random", "all"};
        int lo[3] = {0, nx, 0}, hi[3] = {nx, nz, nz};
        for (int t = 0; t < 3; t++) {
            int cnt = hi[t] - lo[t];
            if (cnt < 3) continue;
            for (int j = lo[t]; j < hi[t]; j++)
                for (int q = 0; q < M; q++) pred[(size_t)(j - lo[t]) * M + q] = S[s][(size_t)q * N + z[j]] / (double)N;
            report(sets[t], method[s], pred, act + (size_t)lo[t] * M, cnt, M);
        }
    }
    infl_ctx_free(ctx);
    return 0;
}
