/*
 * testutil.c — helpers shared by the Criterion tests (see testutil.h).
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static char g_dir[512];

const char *tu_tmpdir(void) {
    if (!g_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/infl-test-XXXXXX", base && *base ? base : "/tmp");
        cr_assert(mkdtemp(g_dir) != NULL, "mkdtemp failed");
    }
    return g_dir;
}

const char *tu_path(const char *name) {
    static char buf[8][1024];
    static int slot;
    char *b = buf[slot++ & 7];
    snprintf(b, 1024, "%s/%s", tu_tmpdir(), name);
    return b;
}

infl_ctx *tu_ctx(void) {
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = "cpu";
    infl_ctx *ctx = NULL;
    infl_status st = infl_ctx_create(&o, &ctx);
    cr_assert(st == INFL_OK, "infl_ctx_create: %s", infl_ctx_error(ctx));
    return ctx;
}

void tu_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "cannot write %s", path);
    cr_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

char *tu_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = 0;
    if (n) *n = got;
    return buf;
}

int tu_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static char *g_out, *g_err;

int tu_cli(const char *const *argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    char outp[1100], errp[1100];
    snprintf(outp, sizeof outp, "%s/.cli-out", tu_tmpdir());
    snprintf(errp, sizeof errp, "%s/.cli-err", tu_tmpdir());
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    FILE *fo = freopen(outp, "w", stdout);
    FILE *fe = freopen(errp, "w", stderr);
    cr_assert(fo && fe);
    int rc = infl_cli_main(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    free(g_out);
    free(g_err);
    g_out = tu_read_file(outp, NULL);
    g_err = tu_read_file(errp, NULL);
    return rc;
}

const char *tu_out(void) { return g_out ? g_out : ""; }
const char *tu_err(void) { return g_err ? g_err : ""; }

double tu_uniform(uint64_t *s) {
    // splitmix64
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

#include <math.h>

#include "store/store.h"

static void blobs_split(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n, int d, int k, const double *mu,
                        uint64_t *st) {
    cr_assert_eq(store_dataset_add_split(ctx, w, split, n, d, k ? INFL_Y_CLASS : INFL_Y_REAL, 1, NULL), INFL_OK,
                 "%s", infl_ctx_error(ctx));
    float *x = malloc(sizeof(float) * (size_t)n * d), *yf = malloc(sizeof(float) * (size_t)n);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int c = k ? (int)(tu_uniform(st) * k) : 0;
        double t = 0;
        for (int j = 0; j < d; j++) {
            double g = sqrt(-2 * log(1 - tu_uniform(st))) * cos(6.283185307 * tu_uniform(st));
            x[i * d + j] = (float)(mu[c * d + j] + 0.7 * g);
            t += mu[j] * x[i * d + j];
        }
        y[i] = c;
        yf[i] = (float)(t + 0.1 * (tu_uniform(st) - 0.5));
    }
    cr_assert_eq(store_dataset_write_rows(ctx, w, split, 0, n, x, k ? y : NULL, k ? NULL : yf), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    free(x);
    free(y);
    free(yf);
}

void tu_make_blobs(const char *path, int64_t n, int d, int k, uint64_t seed) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = seed * 7919 + 1;
    int kk = k ? k : 1;
    double *mu = malloc(sizeof(double) * (size_t)kk * d);
    for (int i = 0; i < kk * d; i++) mu[i] = 2 * tu_uniform(&st) - 1;
    infl_dsw *w = NULL;
    cr_assert_eq(store_dataset_create(ctx, path, 1, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    blobs_split(ctx, w, "train", n, d, k, mu, &st);
    blobs_split(ctx, w, "test", n / 2 > 0 ? n / 2 : 1, d, k, mu, &st);
    if (k) {
        char names[64][8];
        const char *ptr[64];
        for (int c = 0; c < k && c < 64; c++) {
            snprintf(names[c], sizeof names[c], "c%d", c);
            ptr[c] = names[c];
        }
        cr_assert_eq(store_dataset_set_classes(ctx, w, ptr, k), INFL_OK);
    }
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    free(mu);
    infl_ctx_free(ctx);
}
