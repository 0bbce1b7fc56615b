/*
 * test_import.c — `infl import`: Fashion-MNIST IDX files (built here with zlib, with
 * known pixels and labels, plus every way they can be broken) and CSV files, read
 * back through the store's split reader. One test imports the real Debian data set
 * when it is installed.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/rng.h"
#include "infl.h"
#include "store/store.h"
#include "testutil.h"

#define SIDE 28
#define PIX (SIDE * SIDE)
#define REAL_DIR "/usr/share/datasets/fashion-mnist"

// ---- fixtures: IDX files ----

// Pixel (i, j) of image r of a split (0 train, 1 test): covers 0..255.
static uint8_t pix(int split, int r, int i, int j) {
    return (uint8_t)((r * 37 + i * 11 + j * 7 + (i * j) % 13 + split * 101) & 255);
}
static uint8_t lab_of(int split, int r) { return (uint8_t)((r * 3 + 1 + split * 4) % 10); }

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void write_gz(const char *path, const uint8_t *data, size_t n) {
    gzFile gz = gzopen(path, "wb");
    cr_assert(gz != NULL, "gzopen %s", path);
    if (n) cr_assert_eq(gzwrite(gz, data, (unsigned)n), (int)n);
    cr_assert_eq(gzclose(gz), Z_OK);
}

// An images file: header (magic, n, h, w), then `ndata` images of h x w (ndata may be
// less than n to make it truncated).
static void write_images(const char *path, int split, uint32_t magic, int n, int h, int w,
                         int ndata) {
    size_t bytes = 16 + (size_t)ndata * h * w;
    uint8_t *b = malloc(bytes);
    put_be32(b, magic);
    put_be32(b + 4, (uint32_t)n);
    put_be32(b + 8, (uint32_t)h);
    put_be32(b + 12, (uint32_t)w);
    for (int r = 0; r < ndata; r++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) b[16 + (size_t)r * h * w + i * w + j] = pix(split, r, i, j);
    write_gz(path, b, bytes);
    free(b);
}

// A labels file of n labels; bad_row >= 0 gets label `bad`.
static void write_labels(const char *path, int split, int n, int bad_row, uint8_t bad) {
    uint8_t *b = malloc(8 + (size_t)n);
    put_be32(b, 0x00000801);
    put_be32(b + 4, (uint32_t)n);
    for (int r = 0; r < n; r++) b[8 + r] = r == bad_row ? bad : lab_of(split, r);
    write_gz(path, b, 8 + (size_t)n);
    free(b);
}

// A folder under the test's temp dir with the four files of a healthy data set.
static const char *make_fmnist(const char *name, int ntrain, int ntest) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", tu_path(name));
    cr_assert(mkdir(dir, 0755) == 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_images(p, 0, 0x00000803, ntrain, SIDE, SIDE, ntrain);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_labels(p, 0, ntrain, -1, 0);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_images(p, 1, 0x00000803, ntest, SIDE, SIDE, ntest);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    write_labels(p, 1, ntest, -1, 0);
    return dir;
}

static const char *in_dir(const char *dir, const char *file) {
    static char buf[4][1200];
    static int slot;
    char *b = buf[slot++ & 3];
    snprintf(b, 1200, "%s/%s", dir, file);
    return b;
}

// ---- reading back ----

typedef struct {
    infl_split_info info;
    float *x;   // (n, d)
    int32_t *y; // (n) for classes
    float *yf;  // (n, k) for real targets
    char classes[16][32];
} split_data;

static split_data read_split(infl_ctx *ctx, const char *file, const char *split) {
    infl_dataref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.path, sizeof ref.path, "%s", file);
    snprintf(ref.split, sizeof ref.split, "%s", split);
    ref.begin = 0;
    ref.end = -1;
    infl_split *s = NULL;
    infl_status st = store_split_open(ctx, &ref, &s);
    cr_assert_eq(st, INFL_OK, "store_split_open %s:/%s: %s", file, split, infl_ctx_error(ctx));
    split_data d;
    memset(&d, 0, sizeof d);
    d.info = *store_split_info(s);
    int64_t n = d.info.n;
    d.x = malloc((size_t)(n * d.info.d) * sizeof(float));
    d.y = malloc((size_t)n * sizeof(int32_t));
    d.yf = malloc((size_t)(n * d.info.k) * sizeof(float));
    int real = d.info.y_kind == INFL_Y_REAL;
    st = store_split_read(ctx, s, 0, n, d.x, real ? NULL : d.y, real ? d.yf : NULL);
    cr_assert_eq(st, INFL_OK, "store_split_read: %s", infl_ctx_error(ctx));
    for (int i = 0; i < d.info.n_classes && i < 16; i++)
        store_split_class_name(s, i, d.classes[i], sizeof d.classes[i]);
    store_split_close(s);
    return d;
}

static void free_split(split_data *d) {
    free(d->x);
    free(d->y);
    free(d->yf);
}

static int32_t *read_int(infl_ctx *ctx, const char *file, const char *split, const char *name,
                         int64_t n) {
    infl_dataref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.path, sizeof ref.path, "%s", file);
    snprintf(ref.split, sizeof ref.split, "%s", split);
    ref.end = -1;
    infl_split *s = NULL;
    cr_assert_eq(store_split_open(ctx, &ref, &s), INFL_OK, "%s", infl_ctx_error(ctx));
    int32_t *v = malloc((size_t)n * sizeof(int32_t));
    infl_status st = store_split_read_int(ctx, s, name, 0, n, v);
    cr_assert_eq(st, INFL_OK, "read %s: %s", name, infl_ctx_error(ctx));
    store_split_close(s);
    return v;
}

// A root string attribute, read with HDF5 directly (fixed or variable length).
static void read_root_attr(const char *file, const char *name, char *buf, size_t size) {
    buf[0] = 0;
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0, "H5Fopen %s", file);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    cr_assert(a >= 0, "no root attribute %s in %s", name, file);
    hid_t t = H5Aget_type(a);
    cr_assert_eq(H5Tget_class(t), H5T_STRING);
    if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        cr_assert(H5Aread(a, mt, &s) >= 0);
        snprintf(buf, size, "%s", s ? s : "");
        H5free_memory(s);
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(t);
        char *s = calloc(n + 1, 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n + 1);
        cr_assert(H5Aread(a, mt, s) >= 0);
        snprintf(buf, size, "%s", s);
        free(s);
        H5Tclose(mt);
    }
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
}

// No file whose name starts with `prefix` is left in the test's temp dir.
static int leftovers(const char *prefix) {
    DIR *d = opendir(tu_tmpdir());
    cr_assert(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

// Expected x of image r at pool P: the P x P block averages of pixel/255.
static float expect_x(int split, int r, int P, int i, int j) {
    double s = 0;
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) s += pix(split, r, i * P + a, j * P + b) / 255.0;
    return (float)(s / (P * P));
}

static void check_pool(int P) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    o.pool = P;
    const char *out = tu_path("fm.h5");
    infl_status st = infl_import_fashion_mnist(ctx, &o, out);
    cr_assert_eq(st, INFL_OK, "import: %s", infl_ctx_error(ctx));
    const int S = SIDE / P;
    const char *splits[2] = {"train", "test"};
    const int ns[2] = {10, 6};
    for (int sp = 0; sp < 2; sp++) {
        split_data d = read_split(ctx, out, splits[sp]);
        cr_assert_eq(d.info.n, ns[sp]);
        cr_assert_eq(d.info.d, S * S);
        cr_assert_eq(d.info.y_kind, INFL_Y_CLASS);
        cr_assert_eq(d.info.has_image, 1);
        cr_assert_eq(d.info.image_shape[0], S);
        cr_assert_eq(d.info.image_shape[1], S);
        cr_assert_eq(d.info.image_shape[2], 1);
        cr_assert_eq(d.info.has_flipped, 0);
        cr_assert_eq(d.info.n_classes, 10);
        cr_assert_str_eq(d.classes[0], "T-shirt/top");
        cr_assert_str_eq(d.classes[7], "Sneaker");
        cr_assert_str_eq(d.classes[9], "Ankle boot");
        for (int r = 0; r < ns[sp]; r++) {
            cr_assert_eq(d.y[r], lab_of(sp, r), "%s row %d label", splits[sp], r);
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++) {
                    float got = d.x[(size_t)r * S * S + i * S + j];
                    float want = expect_x(sp, r, P, i, j);
                    cr_assert(fabsf(got - want) <= 1e-6f, "%s pool %d row %d (%d,%d): %g, expected %g",
                              splits[sp], P, r, i, j, got, want);
                }
        }
        free_split(&d);
    }
    char src[512];
    read_root_attr(out, "source", src, sizeof src);
    cr_assert(strstr(src, "fashion-mnist") && strstr(src, dir), "source: %s", src);
    char fmt[64];
    read_root_attr(out, "infl_format", fmt, sizeof fmt);
    cr_assert_str_eq(fmt, "dataset");
    infl_ctx_free(ctx);
}

// ---- Fashion-MNIST: values ----

Test(import, fmnist_pool1) { check_pool(1); }
Test(import, fmnist_pool2) { check_pool(2); }
Test(import, fmnist_pool4) { check_pool(4); }

Test(import, fmnist_pool1_extremes) {
    // pixel 0 -> 0 and 255 -> 1 exactly
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 3, 2);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("fm.h5")), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("fm.h5"), "train");
    int zeros = 0, ones = 0;
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < PIX; k++) {
            uint8_t p = pix(0, r, k / SIDE, k % SIDE);
            float v = d.x[r * PIX + k];
            if (p == 0) {
                cr_assert_eq(v, 0.0f);
                zeros++;
            }
            if (p == 255) {
                cr_assert_eq(v, 1.0f);
                ones++;
            }
            cr_assert(v >= 0.0f && v <= 1.0f);
        }
    cr_assert(zeros > 0 && ones > 0, "the fixture should hold both 0 and 255");
    free_split(&d);
    infl_ctx_free(ctx);
}

Test(import, fmnist_limit) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    o.limit = 4;
    o.pool = 2;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("a.h5")), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    split_data tr = read_split(ctx, tu_path("a.h5"), "train");
    split_data te = read_split(ctx, tu_path("a.h5"), "test");
    cr_assert_eq(tr.info.n, 4);
    cr_assert_eq(te.info.n, 4);
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(tr.y[r], lab_of(0, r));
        cr_assert_eq(te.y[r], lab_of(1, r));
        cr_assert(fabsf(tr.x[r * 196 + 5] - expect_x(0, r, 2, 0, 5)) <= 1e-6f);
    }
    free_split(&tr);
    free_split(&te);
    char src[512];
    read_root_attr(tu_path("a.h5"), "source", src, sizeof src);
    cr_assert(strstr(src, "limit 4") && strstr(src, "pool 2"), "source: %s", src);

    // a limit beyond the data keeps everything
    o.limit = 1000;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("b.h5")), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    tr = read_split(ctx, tu_path("b.h5"), "train");
    te = read_split(ctx, tu_path("b.h5"), "test");
    cr_assert_eq(tr.info.n, 10);
    cr_assert_eq(te.info.n, 6);
    free_split(&tr);
    free_split(&te);
    infl_ctx_free(ctx);
}

Test(import, fmnist_many_blocks) {
    // more rows than one block (4096) so that block boundaries are crossed
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 4100, 3);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    o.pool = 4;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("fm.h5")), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("fm.h5"), "train");
    cr_assert_eq(d.info.n, 4100);
    for (int r = 4090; r < 4100; r++) {
        cr_assert_eq(d.y[r], lab_of(0, r));
        for (int k = 0; k < 49; k++)
            cr_assert(fabsf(d.x[r * 49 + k] - expect_x(0, r, 4, k / 7, k % 7)) <= 1e-6f, "row %d", r);
    }
    free_split(&d);
    infl_ctx_free(ctx);
}

typedef struct {
    uint64_t last_done, last_total;
    int calls;
} progress_seen;

static void on_progress(void *user, const char *what, uint64_t done, uint64_t total,
                        const char *info) {
    (void)info;
    progress_seen *p = user;
    cr_assert_str_eq(what, "import");
    cr_assert(done >= p->last_done && done <= total);
    p->last_done = done;
    p->last_total = total;
    p->calls++;
}

Test(import, fmnist_progress) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    progress_seen p = {0};
    infl_ctx_set_progress(ctx, on_progress, &p);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("fm.h5")), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    cr_assert(p.calls >= 2);
    cr_assert_eq(p.last_total, 16);
    cr_assert_eq(p.last_done, 16);
    infl_ctx_free(ctx);
}

Test(import, fmnist_cancel) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    static volatile int flag = 1;
    infl_ctx_set_cancel(ctx, &flag);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("fm.h5")), INFL_E_INTERRUPTED);
    cr_assert(!tu_exists(tu_path("fm.h5")));
    cr_assert_eq(leftovers("fm.h5"), 0, "a temporary file was left behind");
    infl_ctx_free(ctx);
}

// ---- Fashion-MNIST: label flips ----

static void import_flip(infl_ctx *ctx, const char *dir, const char *out, double f, uint64_t seed) {
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    o.pool = 4;
    o.flip_labels = f;
    o.seed = seed;
    infl_status st = infl_import_fashion_mnist(ctx, &o, out);
    cr_assert_eq(st, INFL_OK, "import flip %g seed %llu: %s", f, (unsigned long long)seed,
                 infl_ctx_error(ctx));
}

Test(import, fmnist_flip_labels) {
    infl_ctx *ctx = tu_ctx();
    const int N = 600;
    const double f = 0.2;
    const char *dir = make_fmnist("fm", N, 20);
    import_flip(ctx, dir, tu_path("s3a.h5"), f, 3);
    import_flip(ctx, dir, tu_path("s3b.h5"), f, 3);
    import_flip(ctx, dir, tu_path("s4.h5"), f, 4);

    split_data d = read_split(ctx, tu_path("s3a.h5"), "train");
    cr_assert_eq(d.info.has_flipped, 1);
    int32_t *fl = read_int(ctx, tu_path("s3a.h5"), "train", "flipped", N);
    int32_t *yc = read_int(ctx, tu_path("s3a.h5"), "train", "y_clean", N);
    int nflip = 0;
    int hist[10] = {0};
    for (int i = 0; i < N; i++) {
        cr_assert(fl[i] == 0 || fl[i] == 1);
        cr_assert_eq(yc[i], lab_of(0, i), "y_clean row %d", i);
        cr_assert(d.y[i] >= 0 && d.y[i] < 10);
        if (fl[i]) {
            cr_assert_neq(d.y[i], yc[i], "flipped row %d kept its label", i);
            hist[d.y[i]]++;
        } else {
            cr_assert_eq(d.y[i], yc[i], "row %d changed without a flip", i);
        }
        // the documented rule: flipped when uniform(seed, FLIP, i, 0) < f
        cr_assert_eq(fl[i], infl_rng_uniform(3, INFL_RNG_FLIP, (uint64_t)i, 0) < f, "row %d", i);
        nflip += fl[i];
    }
    // 600 rows at f = 0.2: mean 120, sd ~ 9.8
    cr_assert(nflip > 85 && nflip < 155, "%d of %d flipped, expected about %g", nflip, N, f * N);
    int used = 0;
    for (int k = 0; k < 10; k++) used += hist[k] > 0;
    cr_assert(used >= 8, "flips should land on many classes, got %d", used);

    // the test split is never flipped and has no flip datasets
    split_data te = read_split(ctx, tu_path("s3a.h5"), "test");
    cr_assert_eq(te.info.has_flipped, 0);
    for (int r = 0; r < 20; r++) cr_assert_eq(te.y[r], lab_of(1, r));
    free_split(&te);

    // the same seed gives the same flips; another seed different ones
    split_data d2 = read_split(ctx, tu_path("s3b.h5"), "train");
    int32_t *fl2 = read_int(ctx, tu_path("s3b.h5"), "train", "flipped", N);
    split_data d3 = read_split(ctx, tu_path("s4.h5"), "train");
    int32_t *fl3 = read_int(ctx, tu_path("s4.h5"), "train", "flipped", N);
    int diff_same = 0, diff_other = 0;
    for (int i = 0; i < N; i++) {
        diff_same += fl[i] != fl2[i] || d.y[i] != d2.y[i];
        diff_other += fl[i] != fl3[i];
    }
    cr_assert_eq(diff_same, 0, "same seed, %d rows differ", diff_same);
    cr_assert(diff_other > 20, "seeds 3 and 4 flip nearly the same rows (%d differ)", diff_other);

    char src[512];
    read_root_attr(tu_path("s3a.h5"), "source", src, sizeof src);
    cr_assert(strstr(src, "flip 0.2") && strstr(src, "seed 3"), "source: %s", src);
    free(fl);
    free(yc);
    free(fl2);
    free(fl3);
    free_split(&d);
    free_split(&d2);
    free_split(&d3);
    infl_ctx_free(ctx);
}

Test(import, fmnist_bad_options) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 4, 2);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    const int pools[] = {0, 3, 7, 28, -2};
    for (size_t i = 0; i < sizeof pools / sizeof *pools; i++) {
        o.pool = pools[i];
        cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("x.h5")), INFL_E_ARG, "pool %d",
                     pools[i]);
        cr_assert(strstr(infl_ctx_error(ctx), "pool"), "%s", infl_ctx_error(ctx));
    }
    o.pool = 1;
    const double flips[] = {1.0, 1.5, -0.1, NAN};
    for (size_t i = 0; i < sizeof flips / sizeof *flips; i++) {
        o.flip_labels = flips[i];
        cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("x.h5")), INFL_E_ARG, "flip %g",
                     flips[i]);
    }
    o.flip_labels = 0;
    o.limit = -1;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("x.h5")), INFL_E_ARG);
    cr_assert(!tu_exists(tu_path("x.h5")));
    infl_ctx_free(ctx);
}

// ---- Fashion-MNIST: broken inputs ----

// Imports from dir and checks that it fails, names `file` (and `also` when given), and
// leaves no output.
static void expect_fail(infl_ctx *ctx, const char *dir, const char *file, const char *also) {
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    infl_status st = infl_import_fashion_mnist(ctx, &o, tu_path("out.h5"));
    const char *err = infl_ctx_error(ctx);
    cr_assert_neq(st, INFL_OK, "a broken %s was imported", file);
    cr_assert(strstr(err, file) != NULL, "error should name %s: %s", file, err);
    if (also) cr_assert(strstr(err, also) != NULL, "error should say '%s': %s", also, err);
    cr_assert(!tu_exists(tu_path("out.h5")));
    cr_assert_eq(leftovers("out.h5"), 0, "a temporary file was left behind");
}

Test(import, fmnist_bad_magic) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    const char *f = in_dir(dir, "train-images-idx3-ubyte.gz");
    write_images(f, 0, 0x00000801, 10, SIDE, SIDE, 10);  // a labels magic on images
    expect_fail(ctx, dir, f, "0x00000803");
    write_images(f, 0, 0x00000903, 10, SIDE, SIDE, 10);  // element type 0x09 (signed byte)
    expect_fail(ctx, dir, f, "magic");
    write_images(f, 0, 0x12345678, 10, SIDE, SIDE, 10);
    expect_fail(ctx, dir, f, "magic");
    infl_ctx_free(ctx);
}

Test(import, fmnist_truncated) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    const char *f = in_dir(dir, "t10k-images-idx3-ubyte.gz");
    write_images(f, 1, 0x00000803, 6, SIDE, SIDE, 4);  // header says 6, data holds 4
    expect_fail(ctx, dir, f, "4704");                  // 6 * 784 bytes expected
    cr_assert(strstr(infl_ctx_error(ctx), "truncated"), "%s", infl_ctx_error(ctx));
    // a header cut short
    uint8_t hdr[6] = {0, 0, 8, 3, 0, 0};
    write_gz(f, hdr, sizeof hdr);
    expect_fail(ctx, dir, f, "truncated");
    // an empty file
    write_gz(f, NULL, 0);
    expect_fail(ctx, dir, f, "truncated");
    infl_ctx_free(ctx);
}

Test(import, fmnist_truncated_gzip_stream) {
    // a gzip stream cut in the middle: zlib reports an unexpected end of file
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 50, 6);
    const char *f = in_dir(dir, "train-images-idx3-ubyte.gz");
    size_t n;
    char *gz = tu_read_file(f, &n);
    cr_assert(gz && n > 100);
    tu_write_file(f, gz, n / 2);
    free(gz);
    expect_fail(ctx, dir, f, NULL);
    infl_ctx_free(ctx);
}

Test(import, fmnist_corrupt_gzip) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    const char *f = in_dir(dir, "train-labels-idx1-ubyte.gz");
    // a valid gzip header (magic, deflate, no flags, mtime 0, xfl 0, OS unix), then garbage
    uint8_t b[10 + 64] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
    memset(b + 10, 0xff, 64);
    tu_write_file(f, b, sizeof b);
    expect_fail(ctx, dir, f, "gzip");
    cr_assert(strstr(infl_ctx_error(ctx), "zlib"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(import, fmnist_wrong_dims) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    const char *f = in_dir(dir, "train-images-idx3-ubyte.gz");
    write_images(f, 0, 0x00000803, 10, 27, 28, 10);
    expect_fail(ctx, dir, f, "27 x 28");
    cr_assert(strstr(infl_ctx_error(ctx), "28 x 28"), "%s", infl_ctx_error(ctx));
    write_images(f, 0, 0x00000803, 10, 28, 32, 10);
    expect_fail(ctx, dir, f, "28 x 32");
    // zero images (and zero labels, so that only the count of images is wrong)
    write_images(f, 0, 0x00000803, 0, 28, 28, 0);
    write_labels(in_dir(dir, "train-labels-idx1-ubyte.gz"), 0, 0, -1, 0);
    expect_fail(ctx, dir, f, "at least 1");
    infl_ctx_free(ctx);
}

Test(import, fmnist_label_count) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    const char *f = in_dir(dir, "train-labels-idx1-ubyte.gz");
    write_labels(f, 0, 9, -1, 0);
    expect_fail(ctx, dir, f, "9 labels");
    cr_assert(strstr(infl_ctx_error(ctx), "10"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(import, fmnist_label_out_of_range) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 10, 6);
    const char *f = in_dir(dir, "t10k-labels-idx1-ubyte.gz");
    write_labels(f, 1, 6, 4, 12);
    expect_fail(ctx, dir, f, "label 12");
    cr_assert(strstr(infl_ctx_error(ctx), "row 4"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(import, fmnist_missing) {
    infl_ctx *ctx = tu_ctx();
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    char nodir[1100];
    snprintf(nodir, sizeof nodir, "%s", tu_path("no-such-dir"));
    o.dir = nodir;
    infl_status st = infl_import_fashion_mnist(ctx, &o, tu_path("out.h5"));
    cr_assert_neq(st, INFL_OK);
    cr_assert(strstr(infl_ctx_error(ctx), "no-such-dir"), "%s", infl_ctx_error(ctx));
    cr_assert(!tu_exists(tu_path("out.h5")));

    // a folder with one of the four files missing
    const char *dir = make_fmnist("fm", 4, 2);
    const char *f = in_dir(dir, "t10k-labels-idx1-ubyte.gz");
    cr_assert_eq(remove(f), 0);
    expect_fail(ctx, dir, f, NULL);
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("out.h5")), INFL_E_IO);
    infl_ctx_free(ctx);
}

Test(import, fmnist_exists) {
    infl_ctx *ctx = tu_ctx();
    const char *dir = make_fmnist("fm", 4, 2);
    const char *out = tu_path("fm.h5");
    tu_write_file(out, "keep me", 7);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, out), INFL_E_EXISTS, "%s", infl_ctx_error(ctx));
    size_t n;
    char *kept = tu_read_file(out, &n);
    cr_assert(kept && n == 7 && memcmp(kept, "keep me", 7) == 0, "the existing file was changed");
    free(kept);
    o.force = 1;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, out), INFL_OK, "%s", infl_ctx_error(ctx));
    split_data d = read_split(ctx, out, "train");
    cr_assert_eq(d.info.n, 4);
    free_split(&d);
    infl_ctx_free(ctx);
}

Test(import, fmnist_real_data) {
    struct stat st;
    if (stat(REAL_DIR "/train-images-idx3-ubyte.gz", &st) != 0) {
        cr_skip_test("%s is absent (Debian: apt install dataset-fashion-mnist)", REAL_DIR);
        return;
    }
    infl_ctx *ctx = tu_ctx();
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    cr_assert_str_eq(o.dir, REAL_DIR);
    o.limit = 500;
    o.pool = 4;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &o, tu_path("real.h5")), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    const char *splits[2] = {"train", "test"};
    for (int s = 0; s < 2; s++) {
        split_data d = read_split(ctx, tu_path("real.h5"), splits[s]);
        cr_assert_eq(d.info.n, 500);
        cr_assert_eq(d.info.d, 49);
        cr_assert_eq(d.info.image_shape[0], 7);
        int seen[10] = {0};
        double sum = 0;
        for (int i = 0; i < 500; i++) {
            cr_assert(d.y[i] >= 0 && d.y[i] <= 9, "label %d", d.y[i]);
            seen[d.y[i]] = 1;
        }
        for (int i = 0; i < 500 * 49; i++) {
            cr_assert(d.x[i] >= 0.0f && d.x[i] <= 1.0f);
            sum += d.x[i];
        }
        int classes = 0;
        for (int k = 0; k < 10; k++) classes += seen[k];
        cr_assert_eq(classes, 10, "500 rows of %s should hold all 10 classes", splits[s]);
        cr_assert(sum / (500 * 49) > 0.1 && sum / (500 * 49) < 0.6, "mean pixel %g", sum / (500 * 49));
        free_split(&d);
    }
    infl_ctx_free(ctx);
}

// ---- CSV ----

// Writes a text file in the test's folder; the path stays valid over 4 more calls
// (tu_path's own buffer rotates with every use).
static const char *write_text(const char *name, const char *text) {
    static char buf[4][1100];
    static int slot;
    char *p = buf[slot++ & 3];
    snprintf(p, 1100, "%s", tu_path(name));
    tu_write_file(p, text, strlen(text));
    return p;
}

static infl_status csv(infl_ctx *ctx, const char *text, const char *label, int header,
                       int regression, const char *out) {
    const char *in = write_text("in.csv", text);
    infl_import_csv_options o = infl_import_csv_options_default();
    o.label = label;
    o.header = header;
    o.regression = regression;
    return infl_import_csv(ctx, in, &o, tu_path(out));
}

Test(import, csv_defaults) {
    infl_import_csv_options o = infl_import_csv_options_default();
    cr_assert_eq(o.delimiter, ',');
    cr_assert_eq(o.header, 1);
    cr_assert_eq(o.regression, 0);
    cr_assert_eq(o.test_fraction, 0.0);
    cr_assert(o.label == NULL);
    infl_import_fmnist_options f = infl_import_fmnist_options_default();
    cr_assert_eq(f.pool, 1);
    cr_assert_eq(f.limit, 0);
    cr_assert_eq(f.flip_labels, 0.0);
}

Test(import, csv_header_label_by_name) {
    infl_ctx *ctx = tu_ctx();
    infl_status st = csv(ctx,
                         "a, b ,label,\"c\"\r\n"
                         "1,2,0,3\r\n"
                         "4.5,-5e-1,2,  6\r\n"
                         "7,8,1,9\r\n"
                         "\r\n\n",
                         "label", 1, 0, "o.h5");
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("o.h5"), "train");
    cr_assert_eq(d.info.n, 3);
    cr_assert_eq(d.info.d, 3);
    cr_assert_eq(d.info.y_kind, INFL_Y_CLASS);
    cr_assert_eq(d.info.has_image, 0);
    const float x[9] = {1, 2, 3, 4.5f, -0.5f, 6, 7, 8, 9};
    for (int i = 0; i < 9; i++) cr_assert_eq(d.x[i], x[i], "x[%d] = %g", i, d.x[i]);
    cr_assert_eq(d.y[0], 0);
    cr_assert_eq(d.y[1], 2);
    cr_assert_eq(d.y[2], 1);
    cr_assert_eq(d.info.n_classes, 3);
    cr_assert_str_eq(d.classes[0], "0");
    cr_assert_str_eq(d.classes[2], "2");
    free_split(&d);
    char src[512];
    read_root_attr(tu_path("o.h5"), "source", src, sizeof src);
    cr_assert(strstr(src, "csv") && strstr(src, "in.csv"), "source: %s", src);
    // no /test without test_fraction
    infl_dataref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.path, sizeof ref.path, "%s", tu_path("o.h5"));
    snprintf(ref.split, sizeof ref.split, "test");
    ref.end = -1;
    infl_split *s = NULL;
    cr_assert_neq(store_split_open(ctx, &ref, &s), INFL_OK);
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(import, csv_label_by_index) {
    infl_ctx *ctx = tu_ctx();
    // no header, label index 0
    cr_assert_eq(csv(ctx, "3,0.5,1.5\n1,2.5,3.5\n", "0", 0, 0, "a.h5"), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("a.h5"), "train");
    cr_assert_eq(d.info.n, 2);
    cr_assert_eq(d.info.d, 2);
    cr_assert_eq(d.y[0], 3);
    cr_assert_eq(d.y[1], 1);
    cr_assert_eq(d.x[0], 0.5f);
    cr_assert_eq(d.x[3], 3.5f);
    cr_assert_eq(d.info.n_classes, 4);
    free_split(&d);
    // header present, label given as an index that is no header name
    cr_assert_eq(csv(ctx, "p,q,r\n1,2,1\n4,5,0\n", "2", 1, 0, "b.h5"), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    d = read_split(ctx, tu_path("b.h5"), "train");
    cr_assert_eq(d.info.d, 2);
    cr_assert_eq(d.y[0], 1);
    cr_assert_eq(d.x[2], 4.0f);
    free_split(&d);
    // a header name that is all digits wins over the index
    cr_assert_eq(csv(ctx, "5,0,1\n7,1,2\n8,0,3\n", "0", 1, 0, "c.h5"), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    d = read_split(ctx, tu_path("c.h5"), "train");
    cr_assert_eq(d.y[0], 1);  // column "0" is column 1
    cr_assert_eq(d.x[0], 7.0f);
    cr_assert_eq(d.x[1], 2.0f);
    free_split(&d);
    infl_ctx_free(ctx);
}

Test(import, csv_delimiter_and_quotes) {
    infl_ctx *ctx = tu_ctx();
    const char *in = write_text("in.csv", "\xEF\xBB\xBF\"x;1\";\"y\"\"\";cls\n\"1\";2;0\n3;4;1");
    infl_import_csv_options o = infl_import_csv_options_default();
    o.label = "cls";
    o.delimiter = ';';
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("o.h5")), INFL_OK, "%s", infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("o.h5"), "train");
    cr_assert_eq(d.info.n, 2);
    cr_assert_eq(d.info.d, 2);
    cr_assert_eq(d.x[0], 1.0f);
    cr_assert_eq(d.x[3], 4.0f);
    cr_assert_eq(d.y[1], 1);
    free_split(&d);
    // tab-separated
    in = write_text("tab.csv", "y\tf\n1\t0.25\n0\t0.75\n");
    o.label = "y";
    o.delimiter = '\t';
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("t.h5")), INFL_OK, "%s", infl_ctx_error(ctx));
    d = read_split(ctx, tu_path("t.h5"), "train");
    cr_assert_eq(d.x[1], 0.75f);
    free_split(&d);
    infl_ctx_free(ctx);
}

Test(import, csv_regression) {
    infl_ctx *ctx = tu_ctx();
    cr_assert_eq(csv(ctx, "x1,x2,t\n1,2,0.25\n3,4,-1.5e2\n", "t", 1, 1, "r.h5"), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("r.h5"), "train");
    cr_assert_eq(d.info.y_kind, INFL_Y_REAL);
    cr_assert_eq(d.info.k, 1);
    cr_assert_eq(d.info.n, 2);
    cr_assert_eq(d.yf[0], 0.25f);
    cr_assert_eq(d.yf[1], -150.0f);
    cr_assert_eq(d.x[2], 3.0f);
    cr_assert_eq(d.info.n_classes, 0);
    free_split(&d);
    infl_ctx_free(ctx);
}

Test(import, csv_test_fraction) {
    infl_ctx *ctx = tu_ctx();
    const int N = 300;
    const double tf = 0.3;
    const uint64_t seed = 11;
    // feature 0 is the row index, so every row can be found again
    size_t cap = 64 + (size_t)N * 32, off = 0;
    char *text = malloc(cap);
    off += (size_t)snprintf(text + off, cap - off, "idx,sq,y\n");
    for (int i = 0; i < N; i++)
        off += (size_t)snprintf(text + off, cap - off, "%d,%d,%d\n", i, i * i, i % 3);
    const char *in = write_text("big.csv", text);
    free(text);
    infl_import_csv_options o = infl_import_csv_options_default();
    o.label = "y";
    o.test_fraction = tf;
    o.seed = seed;
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("s.h5")), INFL_OK, "%s", infl_ctx_error(ctx));
    split_data tr = read_split(ctx, tu_path("s.h5"), "train");
    split_data te = read_split(ctx, tu_path("s.h5"), "test");
    cr_assert_eq(tr.info.n + te.info.n, N);
    // 300 rows at 0.3: mean 90, sd ~ 7.9
    cr_assert(te.info.n > 60 && te.info.n < 120, "%lld test rows", (long long)te.info.n);
    int seen[300] = {0};
    int64_t prev = -1;
    for (int s = 0; s < 2; s++) {
        split_data *d = s ? &te : &tr;
        prev = -1;
        for (int64_t r = 0; r < d->info.n; r++) {
            int i = (int)d->x[r * 2];
            cr_assert(i >= 0 && i < N);
            cr_assert(i > prev, "rows keep the file order");
            prev = i;
            seen[i]++;
            cr_assert_eq(d->x[r * 2 + 1], (float)(i * i));
            cr_assert_eq(d->y[r], i % 3);
            int want_test = infl_rng_uniform(seed, INFL_RNG_SPLIT, (uint64_t)i, 0) < tf;
            cr_assert_eq(s, want_test, "row %d in the wrong split", i);
        }
    }
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1, "row %d seen %d times", i, seen[i]);
    free_split(&tr);
    free_split(&te);

    // a fraction that leaves a split empty is an error
    in = write_text("two.csv", "a,y\n1,0\n2,1\n");
    o.test_fraction = 1e-9;
    cr_assert(infl_rng_uniform(seed, INFL_RNG_SPLIT, 0, 0) >= 1e-9);
    cr_assert(infl_rng_uniform(seed, INFL_RNG_SPLIT, 1, 0) >= 1e-9);
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("e.h5")), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "empty"), "%s", infl_ctx_error(ctx));
    cr_assert(!tu_exists(tu_path("e.h5")));
    o.test_fraction = 1.0;
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("e.h5")), INFL_E_ARG);
    infl_ctx_free(ctx);
}

Test(import, csv_many_rows) {
    // over 64 KiB of text and more rows than one write block (4096)
    infl_ctx *ctx = tu_ctx();
    const int N = 6000;
    size_t cap = 64 + (size_t)N * 48, off = 0;
    char *text = malloc(cap);
    off += (size_t)snprintf(text + off, cap - off, "f0,f1,f2,label\n");
    for (int i = 0; i < N; i++)
        off += (size_t)snprintf(text + off, cap - off, "%d,%.3f,%d,%d\n", i, i * 0.125, -i, i % 7);
    cr_assert(off > 100000);
    const char *in = write_text("big.csv", text);
    free(text);
    infl_import_csv_options o = infl_import_csv_options_default();
    o.label = "label";
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("m.h5")), INFL_OK, "%s", infl_ctx_error(ctx));
    split_data d = read_split(ctx, tu_path("m.h5"), "train");
    cr_assert_eq(d.info.n, N);
    cr_assert_eq(d.info.d, 3);
    cr_assert_eq(d.info.n_classes, 7);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(d.x[i * 3], (float)i, "row %d", i);
        cr_assert_eq(d.x[i * 3 + 1], (float)(i * 0.125), "row %d", i);
        cr_assert_eq(d.x[i * 3 + 2], (float)-i, "row %d", i);
        cr_assert_eq(d.y[i], i % 7, "row %d", i);
    }
    free_split(&d);
    infl_ctx_free(ctx);
}

// Imports `text` and expects a failure whose message holds every one of `needles`.
static void csv_fail(infl_ctx *ctx, const char *text, const char *label, int header,
                     infl_status want, const char *const *needles) {
    infl_status st = csv(ctx, text, label, header, 0, "bad.h5");
    const char *err = infl_ctx_error(ctx);
    cr_assert_eq(st, want, "%s: got %s: %s", text, infl_status_name(st), err);
    for (; *needles; needles++)
        cr_assert(strstr(err, *needles) != NULL, "error should say '%s': %s", *needles, err);
    cr_assert(!tu_exists(tu_path("bad.h5")));
    cr_assert_eq(leftovers("bad.h5"), 0);
}

Test(import, csv_errors) {
    infl_ctx *ctx = tu_ctx();
    // non-numeric cell: line 3, character column 3, column 1 named b
    csv_fail(ctx, "a,b,y\n1,2,0\n3,x,1\n", "y", 1, INFL_E_FORMAT,
             (const char *[]){"in.csv:3:3", "'b'", "not a number", NULL});
    // wrong number of fields
    csv_fail(ctx, "a,b,y\n1,2,0\n3,1\n", "y", 1, INFL_E_FORMAT,
             (const char *[]){"in.csv:3", "2 fields, expected 3", NULL});
    csv_fail(ctx, "a,b,y\n1,2,0,5\n", "y", 1, INFL_E_FORMAT,
             (const char *[]){"in.csv:2", "4 fields", NULL});
    // negative and fractional class labels
    csv_fail(ctx, "a,y\n1,0\n2,-1\n", "y", 1, INFL_E_VALUE,
             (const char *[]){"in.csv:3:3", "class label '-1'", NULL});
    csv_fail(ctx, "a,y\n1,0.5\n", "y", 1, INFL_E_VALUE,
             (const char *[]){"in.csv:2", "0.5", "regression", NULL});
    // missing label column
    csv_fail(ctx, "a,b,y\n1,2,0\n", "label", 1, INFL_E_ARG,
             (const char *[]){"'label'", "'a', 'b', 'y'", NULL});
    csv_fail(ctx, "1,2,0\n", "y", 0, INFL_E_ARG, (const char *[]){"in.csv", "'y'", NULL});
    csv_fail(ctx, "a,b,y\n1,2,0\n", "3", 1, INFL_E_ARG, (const char *[]){"index 3", NULL});
    // empty field, NaN, Inf, out of float32 range
    csv_fail(ctx, "a,b,y\n1,,0\n", "y", 1, INFL_E_FORMAT,
             (const char *[]){"in.csv:2:3", "empty", NULL});
    csv_fail(ctx, "a,b,y\n1,nan,0\n", "y", 1, INFL_E_VALUE, (const char *[]){"in.csv:2:3", NULL});
    csv_fail(ctx, "a,b,y\n1,2,0\n-inf,2,0\n", "y", 1, INFL_E_VALUE,
             (const char *[]){"in.csv:3:1", NULL});
    csv_fail(ctx, "a,b,y\n1,1e39,0\n", "y", 1, INFL_E_VALUE, (const char *[]){"in.csv:2:3", NULL});
    // trailing junk after a number, a blank line among the rows, an unterminated quote
    csv_fail(ctx, "a,y\n1.5x,0\n", "y", 1, INFL_E_FORMAT, (const char *[]){"in.csv:2:1", NULL});
    csv_fail(ctx, "a,y\n1,0\n\n2,1\n", "y", 1, INFL_E_FORMAT,
             (const char *[]){"in.csv:3", "blank", NULL});
    csv_fail(ctx, "a,y\n\"1,0\n", "y", 1, INFL_E_FORMAT, (const char *[]){"in.csv:2:1", NULL});
    // nothing to import
    csv_fail(ctx, "", "y", 1, INFL_E_FORMAT, (const char *[]){"in.csv", "empty", NULL});
    csv_fail(ctx, "a,y\n\n", "y", 1, INFL_E_FORMAT, (const char *[]){"in.csv", "no data", NULL});
    csv_fail(ctx, "y\n1\n", "y", 1, INFL_E_FORMAT, (const char *[]){"in.csv:1", "feature", NULL});
    infl_ctx_free(ctx);
}

Test(import, csv_bad_arguments) {
    infl_ctx *ctx = tu_ctx();
    const char *in = write_text("in.csv", "a,y\n1,0\n2,1\n");
    infl_import_csv_options o = infl_import_csv_options_default();
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("o.h5")), INFL_E_ARG);  // no label
    cr_assert(strstr(infl_ctx_error(ctx), "label"), "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_import_csv(ctx, in, NULL, tu_path("o.h5")), INFL_E_ARG);
    o.label = "y";
    o.test_fraction = -0.1;
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("o.h5")), INFL_E_ARG);
    o.test_fraction = 0;
    o.delimiter = '\n';
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("o.h5")), INFL_E_ARG);
    o.delimiter = ',';
    cr_assert_eq(infl_import_csv(ctx, tu_path("missing.csv"), &o, tu_path("o.h5")), INFL_E_IO);
    cr_assert(strstr(infl_ctx_error(ctx), "missing.csv"), "%s", infl_ctx_error(ctx));
    // existing output
    tu_write_file(tu_path("o.h5"), "x", 1);
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("o.h5")), INFL_E_EXISTS, "%s",
                 infl_ctx_error(ctx));
    o.force = 1;
    cr_assert_eq(infl_import_csv(ctx, in, &o, tu_path("o.h5")), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}
