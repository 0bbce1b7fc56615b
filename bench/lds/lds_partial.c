/*
 * lds_partial.c — a check on `infl lds` (host/pipelines/lds.c), outside the build: the LDS of
 * scores files recomputed from an lds state file (/outputs [K, M], /done [K]), with each
 * subset redrawn as lds.c draws it (row i is in S_k when uniform(seed, SUBSET, begin + i, k) <
 * fraction), beside the partial Spearman correlation given the subset's size |S_k|. lds.c's
 * subsets are Bernoulli draws, so |S_k| varies (N/2 ± sqrt(N)/2), and a bigger subset trains a
 * better model for every query: a method whose scores share a positive part over all training
 * rows is rewarded for counting rows. The partial correlation (of the ranks, with the ranks of
 * |S_k| partialled out) removes that. Only the models marked done are used.
 *   gcc -O2 -Ihost -I/usr/include/hdf5/serial bench/lds/lds_partial.c \
 *       -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5 -lm -o build/lds_partial
 *   build/lds_partial STATE.h5 SEED FRACTION BEGIN SCORES.h5 ...
 * (BEGIN: the first training row of the run's data, e.g. 0 for /train[0:4000].)
 * The last column is the LDS minus the first file's, query by query (paired), with its interval.
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/rng.h"
static double *rd(hid_t f, const char *p, hsize_t *dims) {
    hid_t d = H5Dopen2(f, p, H5P_DEFAULT); if (d < 0) return NULL;
    hid_t s = H5Dget_space(d); H5Sget_simple_extent_dims(s, dims, NULL);
    hssize_t k = H5Sget_simple_extent_npoints(s);
    double *b = malloc(k * sizeof *b); H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    H5Sclose(s); H5Dclose(d); return b;
}
static const double *g_key;
static int cmp(const void *a, const void *b) { double x = g_key[*(const int *)a], y = g_key[*(const int *)b]; return (x > y) - (x < y); }
static void ranks(double *r, const double *x, int n) {  // average ranks of ties
    int *ix = malloc(n * sizeof *ix); for (int i = 0; i < n; i++) ix[i] = i;
    g_key = x; qsort(ix, n, sizeof *ix, cmp);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && x[ix[j + 1]] == x[ix[i]]) j++;
        for (int t = i; t <= j; t++) r[ix[t]] = 0.5 * (i + j);
        i = j + 1;
    }
    free(ix);
}
static double pear(const double *a, const double *b, int n) {
    double ma = 0, mb = 0; for (int i = 0; i < n; i++) { ma += a[i]; mb += b[i]; } ma /= n; mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) * (a[i] - ma); sbb += (b[i] - mb) * (b[i] - mb); }
    return sab / sqrt(saa * sbb);
}
int main(int c, char **v) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (c < 6) { fprintf(stderr, "usage: lds_partial STATE.h5 SEED FRACTION BEGIN SCORES.h5 ...\n"); return 2; }
    hid_t st = H5Fopen(v[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (st < 0) { fprintf(stderr, "%s: cannot open\n", v[1]); return 1; }
    uint64_t seed = strtoull(v[2], 0, 10); double fr = atof(v[3]); long begin = atol(v[4]);
    hsize_t od[2]; double *out = rd(st, "/outputs", od); int K = od[0], M = od[1];
    hsize_t dd[1]; double *done = rd(st, "/done", dd);  // only the models trained so far
    int *kk = malloc(K * sizeof *kk), Kd = 0;
    for (int k = 0; k < K; k++) if (done[k] != 0) kk[Kd++] = k;
    printf("%d of %d models done\n", Kd, K);
    double *size = calloc(K, sizeof *size), *rs = malloc(K * sizeof *rs);
    printf("%-40s %8s %8s %10s %8s %12s %8s\n", "scores", "LDS", "95%CI", "partial", "95%CI", "-first", "95%CI");
    double *first = malloc(M * sizeof *first);
    for (int f = 5; f < c; f++) {
        hid_t sf = H5Fopen(v[f], H5F_ACC_RDONLY, H5P_DEFAULT);
        if (sf < 0) { fprintf(stderr, "%s: cannot open\n", v[f]); return 1; }
        hid_t d = H5Dopen2(sf, "/scores", H5P_DEFAULT); hid_t s = H5Dget_space(d); hsize_t dm[2];
        H5Sget_simple_extent_dims(s, dm, NULL); int N = dm[1];
        if ((int)dm[0] != M) { fprintf(stderr, "%s: %d queries, state %d\n", v[f], (int)dm[0], M); return 1; }
        float *sc = malloc((size_t)M * N * sizeof *sc); H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, sc);
        double *pred = calloc((size_t)K * M, sizeof *pred);
        memset(size, 0, K * sizeof *size);
        for (int i = 0; i < N; i++) for (int k = 0; k < Kd; k++) {
            if (!(infl_rng_uniform(seed, INFL_RNG_SUBSET, (uint64_t)(begin + i), (uint32_t)kk[k]) < fr)) continue;
            size[k] += 1; for (int q = 0; q < M; q++) pred[(size_t)k * M + q] -= sc[(size_t)q * N + i];
        }
        ranks(rs, size, Kd);
        double s1 = 0, s2 = 0, p1 = 0, p2 = 0, d1 = 0, d2 = 0; int n = 0;
        double *x = malloc(K * sizeof *x), *y = malloc(K * sizeof *y), *rx = malloc(K * sizeof *rx), *ry = malloc(K * sizeof *ry);
        for (int q = 0; q < M; q++) {
            for (int k = 0; k < Kd; k++) { x[k] = pred[(size_t)k * M + q]; y[k] = out[(size_t)kk[k] * M + q]; }
            ranks(rx, x, Kd); ranks(ry, y, Kd);
            double rxy = pear(rx, ry, Kd), rxz = pear(rx, rs, Kd), ryz = pear(ry, rs, Kd);
            double pr = (rxy - rxz * ryz) / sqrt((1 - rxz * rxz) * (1 - ryz * ryz));
            if (f == 5) first[q] = rxy;
            if (!isfinite(rxy)) continue;
            d1 += rxy - first[q]; d2 += (rxy - first[q]) * (rxy - first[q]);
            s1 += rxy; s2 += rxy * rxy; n++;
            if (isfinite(pr)) { p1 += pr; p2 += pr * pr; }
        }
        double dmean = d1 / n, dsd = sqrt(fmax(0, (d2 - d1 * d1 / n) / (n - 1)));
        double m = s1 / n, sd = sqrt((s2 - s1 * s1 / n) / (n - 1)), pm = p1 / n, psd = sqrt((p2 - p1 * p1 / n) / (n - 1));
        const char *b = strrchr(v[f], '/');
        printf("%-40s %8.4f %8.4f %10.4f %8.4f %12.4f %8.4f\n", b ? b + 1 : v[f], m, 1.96 * sd / sqrt(n), pm,
               1.96 * psd / sqrt(n), dmean, 1.96 * dsd / sqrt(n));
        free(x); free(y); free(rx); free(ry); free(pred); free(sc); H5Sclose(s); H5Dclose(d); H5Fclose(sf);
    }
    return 0;
}
