/*
 * test_store.c — the HDF5 store (host/store/): dataset and run files written and
 * read back (whole, by row ranges and in shards), h5py-style variable-length
 * strings, every rejection the readers promise (each message checked for the file
 * and object it names), output safety (no overwrite without force, no temporary
 * file left behind) and `infl info`'s description. Bad files are made with the raw
 * HDF5 API.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infl.h"
#include "store/store.h"
#include "testutil.h"

static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
TestSuite(store, .init = silence_hdf5);

#define ASSERT_OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s", #expr, infl_ctx_error(ctx))
// The status is `st` and the detail contains `needle`.
#define ASSERT_ERR(ctx, expr, st, needle)                                                         \
    do {                                                                                          \
        infl_status got_ = (expr);                                                                \
        cr_assert_eq(got_, (st), "%s: got %s (%s), expected %s", #expr, infl_status_name(got_),   \
                     infl_ctx_error(ctx), #st);                                                   \
        ASSERT_HAS(ctx, needle);                                                                  \
    } while (0)
#define ASSERT_HAS(ctx, needle)                                                                   \
    cr_assert(strstr(infl_ctx_error(ctx), (needle)) != NULL, "detail '%s' lacks '%s'",            \
              infl_ctx_error(ctx), (needle))

// ---- fixtures: a dataset file ----

// /train: N_TR rows of D features, class labels (3 classes), image_shape [2, 2, 1],
// extra `flipped`; /test: N_TE rows with real targets [N_TE, K]; /classes a, b, c.
#define N_TR 10
#define N_TE 5
#define D 4
#define K 2

static float xval(int split, int64_t i, int64_t j) { return (float)(split * 1000 + i * 10 + j) + 0.5f; }
static int32_t yval(int64_t i) { return (int32_t)(i % 3); }
static float yfval(int64_t i, int64_t k) { return (float)i - 0.25f * (float)k; }
static int32_t flipval(int64_t i) { return (int32_t)(i % 2); }

static void fill_x(int split, int64_t n, float *x) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < D; j++) x[i * D + j] = xval(split, i, j);
}

static void write_dataset(infl_ctx *ctx, const char *path) {
    float xtr[N_TR * D], xte[N_TE * D], yf[N_TE * K];
    int32_t y[N_TR], fl[N_TR];
    fill_x(0, N_TR, xtr);
    fill_x(1, N_TE, xte);
    for (int i = 0; i < N_TR; i++) {
        y[i] = yval(i);
        fl[i] = flipval(i);
    }
    for (int i = 0; i < N_TE; i++)
        for (int k = 0; k < K; k++) yf[i * K + k] = yfval(i, k);
    const int shape[3] = {2, 2, 1};
    const char *names[3] = {"a", "b", "c"};
    infl_dsw *w = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 0, &w));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", N_TR, D, INFL_Y_CLASS, 1, shape));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "test", N_TE, D, INFL_Y_REAL, K, NULL));
    // train in two uneven pieces, test at once
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", 0, 7, xtr, y, NULL));
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", 7, N_TR - 7, xtr + 7 * D, y + 7, NULL));
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "test", 0, N_TE, xte, NULL, yf));
    ASSERT_OK(ctx, store_dataset_write_int(ctx, w, "train", "flipped", N_TR, fl));
    ASSERT_OK(ctx, store_dataset_set_classes(ctx, w, names, 3));
    ASSERT_OK(ctx, store_dataset_set_attr(ctx, w, "source", "unit test"));
    ASSERT_OK(ctx, store_dataset_commit(ctx, w));
}

static infl_dataref mkref(const char *path, const char *split, int64_t begin, int64_t end) {
    infl_dataref r;
    memset(&r, 0, sizeof r);
    snprintf(r.path, sizeof r.path, "%s", path);
    snprintf(r.split, sizeof r.split, "%s", split);
    r.begin = begin;
    r.end = end;
    return r;
}

// ---- fixtures: raw HDF5 ----

static void raw_str_attr(hid_t obj, const char *name, const char *value, int variable) {
    hid_t t = H5Tcopy(H5T_C_S1);
    cr_assert(t >= 0);
    if (variable) {
        cr_assert(H5Tset_size(t, H5T_VARIABLE) >= 0);
        cr_assert(H5Tset_cset(t, H5T_CSET_UTF8) >= 0);
    } else {
        cr_assert(H5Tset_size(t, strlen(value) + 1) >= 0);
    }
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0);
    cr_assert(H5Awrite(a, t, variable ? (const void *)&value : (const void *)value) >= 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void raw_int_attr(hid_t obj, const char *name, int32_t v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0);
    cr_assert(H5Awrite(a, H5T_NATIVE_INT32, &v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

// A new file with infl_format and infl_version (format NULL: neither).
static hid_t raw_file(const char *path, const char *format, int version) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0, "H5Fcreate %s", path);
    if (format) {
        raw_str_attr(f, "infl_format", format, 0);
        raw_int_attr(f, "infl_version", version);
    }
    return f;
}

// A dataset of file type ft from memory type mt (data may be NULL: zeros).
static void raw_dset(hid_t loc, const char *name, hid_t ft, hid_t mt, int rank, const hsize_t *dims,
                     const void *data) {
    hid_t s = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, ft, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0, "H5Dcreate2 %s", name);
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    void *zeros = NULL;
    if (!data) data = zeros = calloc(n ? n : 1, 8);
    cr_assert(H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    free(zeros);
    H5Dclose(d);
    H5Sclose(s);
}

// A dataset file with one split /train made of the given x and y (ydims NULL: no y;
// xdims NULL: no x).
static void raw_split_file(const char *path, const hsize_t *xdims, hid_t yft, hid_t ymt, int yrank,
                           const hsize_t *ydims) {
    hid_t f = raw_file(path, "dataset", 1);
    hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(g >= 0);
    if (xdims) raw_dset(g, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xdims, NULL);
    if (ydims) raw_dset(g, "y", yft, ymt, yrank, ydims, NULL);
    H5Gclose(g);
    H5Fclose(f);
}

// ---- fixtures: a run file ----

static infl_mlp_spec small_spec(void) {
    infl_mlp_spec s;
    memset(&s, 0, sizeof s);
    s.L = 2;
    s.widths[0] = 4;
    s.widths[1] = 3;
    s.widths[2] = 2;
    s.act = INFL_ACT_TANH;
    s.loss = INFL_LOSS_SOFTMAX_CE;
    s.wd = 1e-3;
    return s;
}

static void fill_params(float *p, size_t n, int64_t step) {
    for (size_t i = 0; i < n; i++) p[i] = (float)step * 0.001f + (float)i * 0.01f - 0.1f;
}

// Steps written out of order (200, 100, 300): readers sort them, final is 300.
static void write_run(infl_ctx *ctx, const char *path) {
    infl_mlp_spec s = small_spec();
    size_t P = infl_mlp_nparams(&s);
    float *p = malloc(P * sizeof *p);
    infl_runw *w = NULL;
    ASSERT_OK(ctx, store_run_create(ctx, path, 0, TU_MS(s), "d.h5:/train", "sgd", 12345678901ull, &w));
    const int64_t steps[3] = {200, 100, 300};
    for (int c = 0; c < 3; c++) {
        fill_params(p, P, steps[c]);
        ASSERT_OK(ctx, store_run_add_checkpoint(ctx, w, steps[c], (double)steps[c] / 100.0, 0.1 * (double)(c + 1),
                                                c == 2 ? 0.5 : NAN, p));
    }
    ASSERT_OK(ctx, store_run_commit(ctx, w));
    free(p);
}

static int dir_has_tmp(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert(d != NULL);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

// Runs store_describe into a string (malloc'd).
static char *describe(infl_ctx *ctx, const char *path, infl_status *st) {
    FILE *f = tmpfile();
    cr_assert(f != NULL);
    *st = store_describe(ctx, path, f);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

// Every HDF5 file and object the store opened has been closed again (an id left
// open on an error path would keep the file open).
static void assert_no_open_ids(void) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    cr_assert_eq(n, 0, "%zd HDF5 files or objects are still open", n);
}

// ---- dataset files: round trip ----

Test(store, dataset_round_trip) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("d.h5");
    write_dataset(ctx, path);

    // the whole train split
    infl_dataref r = mkref(path, "train", 0, -1);
    infl_split *s = NULL;
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    const infl_split_info *in = store_split_info(s);
    cr_assert_eq(in->n, N_TR);
    cr_assert_eq(in->n_total, N_TR);
    cr_assert_eq(in->begin, 0);
    cr_assert_eq(in->d, D);
    cr_assert_eq(in->y_kind, INFL_Y_CLASS);
    cr_assert_eq(in->k, 1);
    cr_assert_eq(in->n_classes, 3);
    cr_assert_eq(in->has_image, 1);
    cr_assert(in->image_shape[0] == 2 && in->image_shape[1] == 2 && in->image_shape[2] == 1);
    cr_assert_eq(in->has_flipped, 1);
    cr_assert_str_eq(store_split_path(s), path);
    char name[64];
    store_split_class_name(s, 1, name, sizeof name);
    cr_assert_str_eq(name, "b");
    store_split_class_name(s, 3, name, sizeof name);
    cr_assert_str_eq(name, "");
    float x[N_TR * D];
    int32_t y[N_TR], fl[N_TR];
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, N_TR, x, y, NULL));
    for (int i = 0; i < N_TR; i++) {
        cr_assert_eq(y[i], yval(i), "y[%d]", i);
        for (int j = 0; j < D; j++) cr_assert_eq(x[i * D + j], xval(0, i, j), "x[%d][%d]", i, j);
    }
    ASSERT_OK(ctx, store_split_read_int(ctx, s, "flipped", 0, N_TR, fl));
    for (int i = 0; i < N_TR; i++) cr_assert_eq(fl[i], flipval(i));
    // only y, only x
    memset(y, 0xff, sizeof y);
    ASSERT_OK(ctx, store_split_read(ctx, s, 2, 3, NULL, y, NULL));
    for (int i = 0; i < 3; i++) cr_assert_eq(y[i], yval(2 + i));
    // asking for real targets of class labels is an error
    float yf[N_TR];
    ASSERT_ERR(ctx, store_split_read(ctx, s, 0, 1, NULL, NULL, yf), INFL_E_ARG, "/train/y");
    // rows beyond the range
    ASSERT_ERR(ctx, store_split_read(ctx, s, 8, 3, x, NULL, NULL), INFL_E_ARG, "[8:11]");
    ASSERT_ERR(ctx, store_split_read_int(ctx, s, "nothere", 0, 1, fl), INFL_E_FORMAT, "/train/nothere");
    store_split_close(s);

    // a range [3:7]: rows are relative to begin, messages name absolute rows
    r = mkref(path, "train", 3, 7);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    in = store_split_info(s);
    cr_assert_eq(in->n, 4);
    cr_assert_eq(in->begin, 3);
    cr_assert_eq(in->n_total, N_TR);
    char want[1200];
    snprintf(want, sizeof want, "%s:/train[3:7]", path);
    cr_assert_str_eq(store_split_ref(s), want);
    ASSERT_OK(ctx, store_split_read(ctx, s, 1, 3, x, y, NULL));
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(y[i], yval(4 + i));
        for (int j = 0; j < D; j++) cr_assert_eq(x[i * D + j], xval(0, 4 + i, j));
    }
    ASSERT_OK(ctx, store_split_read_int(ctx, s, "flipped", 0, 4, fl));
    for (int i = 0; i < 4; i++) cr_assert_eq(fl[i], flipval(3 + i));
    ASSERT_ERR(ctx, store_split_read(ctx, s, 0, 5, x, y, NULL), INFL_E_ARG, "[0:5]");
    store_split_close(s);

    // the test split: real targets, no image shape, no flipped
    r = mkref(path, "test", 0, -1);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    in = store_split_info(s);
    cr_assert_eq(in->n, N_TE);
    cr_assert_eq(in->y_kind, INFL_Y_REAL);
    cr_assert_eq(in->k, K);
    cr_assert_eq(in->has_image, 0);
    cr_assert_eq(in->has_flipped, 0);
    float yt[N_TE * K];
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, N_TE, x, NULL, yt));
    for (int i = 0; i < N_TE; i++) {
        for (int k = 0; k < K; k++) cr_assert_eq(yt[i * K + k], yfval(i, k));
        for (int j = 0; j < D; j++) cr_assert_eq(x[i * D + j], xval(1, i, j));
    }
    ASSERT_ERR(ctx, store_split_read(ctx, s, 0, 1, NULL, y, NULL), INFL_E_ARG, "real targets");
    store_split_close(s);

    // a split that is not there names the ones that are
    r = mkref(path, "valid", 0, -1);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, "/valid: no such split");
    ASSERT_HAS(ctx, "/train");
    cr_assert_null(s);

    // x is chunked by rows, whole rows per chunk
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dx = H5Dopen2(f, "/train/x", H5P_DEFAULT);
    hid_t pl = H5Dget_create_plist(dx);
    cr_assert_eq(H5Pget_layout(pl), H5D_CHUNKED);
    hsize_t cd[2];
    cr_assert_eq(H5Pget_chunk(pl, 2, cd), 2);
    cr_assert_eq(cd[1], (hsize_t)D);
    cr_assert(cd[0] >= 1 && cd[0] <= N_TR);
    H5Pclose(pl);
    H5Dclose(dx);
    H5Fclose(f);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// Shard reads over a bigger split: shard sizes that divide N and that do not.
Test(store, dataset_shards) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("big.h5");
    const int64_t n = 1000, d = 300;  // several chunks of rows
    float *x = malloc(sizeof(float) * (size_t)(n * d)), *xr = malloc(sizeof(float) * (size_t)(n * d));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n), *yr = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n * d; i++) x[i] = (float)(i % 9973) * 0.25f;
    for (int64_t i = 0; i < n; i++) y[i] = (int32_t)(i % 7);
    infl_dsw *w = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 0, &w));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", n, d, INFL_Y_CLASS, 1, NULL));
    for (int64_t r0 = 0; r0 < n; r0 += 333) {
        int64_t m = n - r0 < 333 ? n - r0 : 333;
        ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", r0, m, x + r0 * d, y + r0, NULL));
    }
    ASSERT_OK(ctx, store_dataset_commit(ctx, w));

    const int64_t shards[] = {1000, 250, 300, 7, 1};
    const int64_t begins[] = {0, 0, 13, 0, 990};
    for (size_t c = 0; c < sizeof shards / sizeof *shards; c++) {
        infl_dataref r = mkref(path, "train", begins[c], -1);
        infl_split *s = NULL;
        ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
        int64_t m = store_split_info(s)->n;
        cr_assert_eq(m, n - begins[c]);
        memset(xr, 0, sizeof(float) * (size_t)(n * d));
        for (int64_t r0 = 0; r0 < m; r0 += shards[c]) {
            int64_t k = m - r0 < shards[c] ? m - r0 : shards[c];
            ASSERT_OK(ctx, store_split_read(ctx, s, r0, k, xr + r0 * d, yr + r0, NULL));
        }
        cr_assert(memcmp(xr, x + begins[c] * d, sizeof(float) * (size_t)(m * d)) == 0, "shard %lld",
                  (long long)shards[c]);
        cr_assert(memcmp(yr, y + begins[c], sizeof(int32_t) * (size_t)m) == 0);
        store_split_close(s);
    }
    free(x);
    free(xr);
    free(y);
    free(yr);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// Files written by h5py hold variable-length strings; the reader takes both kinds.
Test(store, dataset_variable_length_strings) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("vlen.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    raw_str_attr(f, "infl_format", "dataset", 1);
    raw_int_attr(f, "infl_version", 1);
    hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[2] = {3, 2}, yd[1] = {3};
    int32_t y[3] = {0, 1, 1};
    raw_dset(g, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, NULL);
    raw_dset(g, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y);
    H5Gclose(g);
    const char *names[2] = {"cat", "a very long class name that is longer than sixty-three characters in all"};
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hsize_t cd[1] = {2};
    raw_dset(f, "classes", t, t, 1, cd, names);
    H5Tclose(t);
    H5Fclose(f);

    infl_dataref r = mkref(path, "train", 0, -1);
    infl_split *s = NULL;
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    cr_assert_eq(store_split_info(s)->n_classes, 2);
    char name[64];
    store_split_class_name(s, 0, name, sizeof name);
    cr_assert_str_eq(name, "cat");
    store_split_class_name(s, 1, name, sizeof name);
    cr_assert_eq(strlen(name), 63);
    cr_assert(strncmp(name, names[1], 63) == 0);
    int32_t yr[3];
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, 3, NULL, yr, NULL));
    cr_assert_eq(yr[2], 1);
    store_split_close(s);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- run files: round trip ----

Test(store, run_round_trip) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("r.h5");
    write_run(ctx, path);
    infl_run *r = NULL;
    ASSERT_OK(ctx, store_run_open(ctx, path, &r));
    const infl_mlp_spec *sp = &store_run_spec(r)->mlp;
    infl_mlp_spec want = small_spec();
    cr_assert_eq(sp->L, 2);
    for (int l = 0; l <= 2; l++) cr_assert_eq(sp->widths[l], want.widths[l]);
    cr_assert_eq(sp->act, INFL_ACT_TANH);
    cr_assert_eq(sp->loss, INFL_LOSS_SOFTMAX_CE);
    cr_assert_eq(sp->wd, 1e-3);
    cr_assert_str_eq(store_run_data(r), "d.h5:/train");
    cr_assert_str_eq(store_run_path(r), path);
    cr_assert_eq(store_run_ncheckpoints(r), 3);
    const char *names[3] = {"000100", "000200", "000300"};
    const double lrs[3] = {0.2, 0.1, 0.3};  // written in the order 200, 100, 300
    for (int i = 0; i < 3; i++) {
        const infl_ckpt_info *c = store_run_checkpoint(r, i);
        cr_assert_str_eq(c->name, names[i]);
        cr_assert_eq(c->step, 100 * (i + 1));
        cr_assert_eq(c->epoch, (double)(i + 1));
        cr_assert_float_eq(c->lr, lrs[i], 1e-12);
    }
    cr_assert_null(store_run_checkpoint(r, 3));

    int idx = -1;
    ASSERT_OK(ctx, store_run_find(ctx, r, NULL, &idx));
    cr_assert_eq(idx, 2);
    ASSERT_OK(ctx, store_run_find(ctx, r, "final", &idx));
    cr_assert_eq(idx, 2);
    ASSERT_OK(ctx, store_run_find(ctx, r, "000200", &idx));
    cr_assert_eq(idx, 1);
    ASSERT_OK(ctx, store_run_find(ctx, r, "100", &idx));
    cr_assert_eq(idx, 0);
    ASSERT_ERR(ctx, store_run_find(ctx, r, "nope", &idx), INFL_E_ARG, "'nope'");
    ASSERT_HAS(ctx, path);
    ASSERT_HAS(ctx, "000100, 000200, 000300");
    ASSERT_ERR(ctx, store_run_find(ctx, r, "250", &idx), INFL_E_ARG, "'250'");

    size_t P = infl_mlp_nparams(sp);
    float *p = malloc(P * sizeof *p), *e = malloc(P * sizeof *e);
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(ctx, store_run_load(ctx, r, i, p));
        fill_params(e, P, 100 * (i + 1));
        cr_assert(memcmp(p, e, P * sizeof *p) == 0, "checkpoint %d", i);
    }
    ASSERT_ERR(ctx, store_run_load(ctx, r, 3, p), INFL_E_ARG, "index 3");
    free(p);
    free(e);
    store_run_close(r);

    // the file itself: /checkpoints@final, grad_norm only where finite
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    cr_assert_gt(H5Aexists_by_name(f, "/checkpoints/000300", "grad_norm", H5P_DEFAULT), 0);
    cr_assert_eq(H5Aexists_by_name(f, "/checkpoints/000100", "grad_norm", H5P_DEFAULT), 0);
    cr_assert_gt(H5Aexists_by_name(f, "/checkpoints", "final", H5P_DEFAULT), 0);
    H5Fclose(f);

    // the reader follows /checkpoints@final, not the largest step
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "checkpoints", H5P_DEFAULT);
    cr_assert(H5Adelete(g, "final") >= 0);
    raw_str_attr(g, "final", "000200", 1);
    H5Gclose(g);
    H5Fclose(f);
    ASSERT_OK(ctx, store_run_open(ctx, path, &r));
    ASSERT_OK(ctx, store_run_find(ctx, r, "final", &idx));
    cr_assert_eq(idx, 1);
    store_run_close(r);
    // and a `final` that names no checkpoint is an error
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(f, "checkpoints", H5P_DEFAULT);
    cr_assert(H5Adelete(g, "final") >= 0);
    raw_str_attr(g, "final", "000900", 0);
    H5Gclose(g);
    H5Fclose(f);
    ASSERT_ERR(ctx, store_run_open(ctx, path, &r), INFL_E_FORMAT, "r.h5: /checkpoints attribute final names '000900'");
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// Names sort as text ("1000000" < "999999"); checkpoints sort by step.
Test(store, run_sorted_by_step) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("long.h5");
    infl_mlp_spec s = small_spec();
    size_t P = infl_mlp_nparams(&s);
    float *p = malloc(P * sizeof *p);
    infl_runw *w = NULL;
    ASSERT_OK(ctx, store_run_create(ctx, path, 0, TU_MS(s), "d.h5:/train", "sgd", 1, &w));
    const int64_t steps[3] = {1000000, 5, 999999};
    for (int c = 0; c < 3; c++) {
        fill_params(p, P, steps[c]);
        ASSERT_OK(ctx, store_run_add_checkpoint(ctx, w, steps[c], 1.0, 0.1, NAN, p));
    }
    ASSERT_OK(ctx, store_run_commit(ctx, w));
    infl_run *r = NULL;
    ASSERT_OK(ctx, store_run_open(ctx, path, &r));
    cr_assert_str_eq(store_run_checkpoint(r, 0)->name, "000005");
    cr_assert_str_eq(store_run_checkpoint(r, 1)->name, "999999");
    cr_assert_str_eq(store_run_checkpoint(r, 2)->name, "1000000");
    int idx = -1;
    ASSERT_OK(ctx, store_run_find(ctx, r, "final", &idx));  // the last written
    cr_assert_eq(idx, 1);
    ASSERT_OK(ctx, store_run_find(ctx, r, "5", &idx));
    cr_assert_eq(idx, 0);
    ASSERT_OK(ctx, store_run_find(ctx, r, "1000000", &idx));
    cr_assert_eq(idx, 2);
    float *e = malloc(P * sizeof *e);
    ASSERT_OK(ctx, store_run_load(ctx, r, 2, p));
    fill_params(e, P, 1000000);
    cr_assert(memcmp(p, e, P * sizeof *p) == 0);
    store_run_close(r);
    free(p);
    free(e);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, run_writer_checks) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("w.h5");
    infl_mlp_spec s = small_spec();
    size_t P = infl_mlp_nparams(&s);
    float *p = calloc(P, sizeof *p);
    infl_runw *w = NULL;
    // an invalid spec
    s.loss = INFL_LOSS_SIGMOID_CE;
    ASSERT_ERR(ctx, store_run_create(ctx, path, 0, TU_MS(s), "d.h5:/train", "sgd", 1, &w), INFL_E_ARG, "sigmoid_ce");
    cr_assert_null(w);
    s = small_spec();
    ASSERT_OK(ctx, store_run_create(ctx, path, 0, TU_MS(s), "d.h5:/train", "sgd", 1, &w));
    ASSERT_OK(ctx, store_run_add_checkpoint(ctx, w, 5, 0.5, 0.1, NAN, p));
    ASSERT_ERR(ctx, store_run_add_checkpoint(ctx, w, 5, 0.5, 0.1, NAN, p), INFL_E_ARG, "000005");
    p[infl_mlp_woff(&s, 1) + 4] = NAN;  // W1 row 1 column 1
    ASSERT_ERR(ctx, store_run_add_checkpoint(ctx, w, 6, 0.6, 0.1, NAN, p), INFL_E_VALUE, "W1 row 1 column 1: NaN");
    store_run_abort(w);
    cr_assert(!tu_exists(path));
    cr_assert(!dir_has_tmp(tu_tmpdir()));
    // a run with no checkpoint is not committed
    ASSERT_OK(ctx, store_run_create(ctx, path, 0, TU_MS(s), "d.h5:/train", "sgd", 1, &w));
    ASSERT_ERR(ctx, store_run_commit(ctx, w), INFL_E_ARG, "no checkpoint");
    cr_assert(!tu_exists(path));
    cr_assert(!dir_has_tmp(tu_tmpdir()));
    free(p);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- rejections: files ----

Test(store, reject_not_hdf5) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("x.h5");
    const char text[] = "this is a text file, not HDF5\n";
    tu_write_file(path, text, sizeof text - 1);
    infl_dataref r = mkref(path, "train", 0, -1);
    infl_split *s = NULL;
    char want[1200];
    snprintf(want, sizeof want, "%s: not an HDF5 file", path);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, want);
    infl_run *run = NULL;
    ASSERT_ERR(ctx, store_run_open(ctx, path, &run), INFL_E_FORMAT, want);
    infl_status st;
    free(describe(ctx, path, &st));
    cr_assert_eq(st, INFL_E_FORMAT);
    ASSERT_HAS(ctx, want);
    // an empty file
    tu_write_file(path, "", 0);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, want);
    // a missing file
    r = mkref(tu_path("missing.h5"), "train", 0, -1);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_IO, "missing.h5: cannot open");
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

static void check_truncated(infl_ctx *ctx, infl_status st, const char *path) {
    cr_assert(st == INFL_E_FORMAT || st == INFL_E_IO, "got %s: %s", infl_status_name(st), infl_ctx_error(ctx));
    ASSERT_HAS(ctx, path);
}

Test(store, reject_truncated) {
    infl_ctx *ctx = tu_ctx();
    const char *good = tu_path("good.h5"), *cut = tu_path("cut.h5");
    write_dataset(ctx, good);
    size_t n = 0;
    char *bytes = tu_read_file(good, &n);
    cr_assert(bytes && n > 100);
    // the first half, and a few other cuts
    const size_t cuts[] = {n / 2, n / 3, 2 * n / 3, n - 1, 100};
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        tu_write_file(cut, bytes, cuts[c]);
        infl_dataref r = mkref(cut, "train", 0, -1);
        infl_split *s = NULL;
        infl_status st = store_split_open(ctx, &r, &s);
        if (st == INFL_OK) {  // opening may succeed on a lucky cut; reading must not
            float x[N_TR * D];
            int32_t y[N_TR];
            st = store_split_read(ctx, s, 0, N_TR, x, y, NULL);
            store_split_close(s);
        }
        check_truncated(ctx, st, cut);
        free(describe(ctx, cut, &st));
        check_truncated(ctx, st, cut);
    }
    free(bytes);

    const char *rgood = tu_path("rgood.h5");
    write_run(ctx, rgood);
    bytes = tu_read_file(rgood, &n);
    tu_write_file(cut, bytes, n / 2);
    infl_run *run = NULL;
    check_truncated(ctx, store_run_open(ctx, cut, &run), cut);
    free(bytes);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_wrong_format) {
    infl_ctx *ctx = tu_ctx();
    const char *d = tu_path("d.h5"), *r = tu_path("r.h5");
    write_dataset(ctx, d);
    write_run(ctx, r);
    char want[1200];
    infl_run *run = NULL;
    snprintf(want, sizeof want, "%s: root attribute infl_format is 'dataset', expected 'run'", d);
    ASSERT_ERR(ctx, store_run_open(ctx, d, &run), INFL_E_FORMAT, want);
    cr_assert_null(run);
    infl_dataref ref = mkref(r, "train", 0, -1);
    infl_split *s = NULL;
    snprintf(want, sizeof want, "%s: root attribute infl_format is 'run', expected 'dataset'", r);
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &s), INFL_E_FORMAT, want);
    // a plain HDF5 file without infl attributes
    const char *plain = tu_path("plain.h5");
    H5Fclose(raw_file(plain, NULL, 0));
    ref = mkref(plain, "train", 0, -1);
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &s), INFL_E_FORMAT, "infl_format missing");
    ASSERT_HAS(ctx, plain);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_wrong_version) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("v2.h5");
    hid_t f = raw_file(path, "run", 2);
    H5Fclose(f);
    infl_run *run = NULL;
    char want[1200];
    snprintf(want, sizeof want, "%s: infl_version is 2; this infl reads version 1", path);
    ASSERT_ERR(ctx, store_run_open(ctx, path, &run), INFL_E_FORMAT, want);
    infl_status st;
    char *out = describe(ctx, path, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(out, "version 2"), "%s", out);
    free(out);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- rejections: dataset shapes and ranges ----

Test(store, reject_missing_x_or_y) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("bad.h5");
    hsize_t xd[2] = {10, 4}, yd[1] = {10};
    infl_split *s = NULL;
    infl_dataref r = mkref(path, "train", 0, -1);
    raw_split_file(path, NULL, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, "bad.h5: /train/x: missing; expected float32 [N, D]");
    raw_split_file(path, xd, 0, 0, 0, NULL);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, "bad.h5: /train/y: missing; expected int32 [N]");
    cr_assert_null(s);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_bad_shapes_and_types) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("bad.h5");
    hsize_t xd[2] = {10, 4}, y9[1] = {10 - 1}, y10[1] = {10}, yk[2] = {9, 2};
    infl_split *s = NULL;
    infl_dataref r = mkref(path, "train", 0, -1);
    // x rows != y rows
    raw_split_file(path, xd, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, y9);
    ASSERT_ERR(
        ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT,
        "bad.h5: /train/y: expected int32 [N] or float32 [N, K] with N = 10 rows like /train/x, found int32 [9]");
    raw_split_file(path, xd, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, yk);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, "found float32 [9, 2]");
    // y of the wrong type
    raw_split_file(path, xd, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, y10);
    ASSERT_ERR(
        ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT,
        "bad.h5: /train/y: expected int32 [N] or float32 [N, K] with N = 10 rows like /train/x, found float64 [10]");
    // x of the wrong type or rank
    hid_t f = raw_file(path, "dataset", 1);
    hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    raw_dset(g, "x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, xd, NULL);
    raw_dset(g, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, y10, NULL);
    H5Gclose(g);
    H5Fclose(f);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT,
               "bad.h5: /train/x: expected float32 [N, D] with D >= 1, found float64 [10, 4]");
    f = raw_file(path, "dataset", 1);
    g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    raw_dset(g, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, y10, NULL);
    raw_dset(g, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, y10, NULL);
    H5Gclose(g);
    H5Fclose(f);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_FORMAT, "found float32 [10]");
    cr_assert_null(s);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_ranges) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("d.h5");
    write_dataset(ctx, path);
    infl_split *s = NULL;
    infl_dataref r = mkref(path, "train", 5, 5);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_ARG, "N = 10 rows");
    ASSERT_HAS(ctx, "empty");
    r = mkref(path, "train", 10, -1);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_ARG, "N = 10 rows");
    ASSERT_HAS(ctx, "empty");
    r = mkref(path, "train", 5, 20);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_ARG, "N = 10 rows");
    ASSERT_HAS(ctx, "[5:20]");
    r = mkref(path, "test", 11, -1);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_ARG, "N = 5 rows");
    cr_assert_null(s);
    // a split with no rows at all
    const char *empty = tu_path("empty.h5");
    infl_dsw *w = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, empty, 0, &w));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", 0, 3, INFL_Y_CLASS, 1, NULL));
    ASSERT_OK(ctx, store_dataset_commit(ctx, w));
    r = mkref(empty, "train", 0, -1);
    ASSERT_ERR(ctx, store_split_open(ctx, &r, &s), INFL_E_ARG, "N = 0 rows");
    ASSERT_HAS(ctx, "empty.h5");
    // the last row alone is fine
    r = mkref(path, "train", 9, 10);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    cr_assert_eq(store_split_info(s)->n, 1);
    store_split_close(s);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- rejections: values ----

Test(store, reject_nan_inf_x) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("nan.h5");
    enum { N = 30 };
    float x[N * D], yf[N];
    int32_t y[N];
    for (int i = 0; i < N * D; i++) x[i] = (float)i;
    for (int i = 0; i < N; i++) {
        y[i] = i % 3;
        yf[i] = (float)i;
    }
    x[17 * D + 3] = NAN;
    x[25 * D + 1] = -INFINITY;
    yf[22] = INFINITY;
    infl_dsw *w = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 0, &w));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", N, D, INFL_Y_CLASS, 1, NULL));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "reg", N, D, INFL_Y_REAL, 1, NULL));
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", 0, N, x, y, NULL));
    for (int i = 0; i < N * D; i++) x[i] = (float)i;
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "reg", 0, N, x, NULL, yf));
    ASSERT_OK(ctx, store_dataset_commit(ctx, w));

    infl_split *s = NULL;
    infl_dataref r = mkref(path, "train", 0, -1);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    ASSERT_ERR(ctx, store_split_read(ctx, s, 0, N, x, y, NULL), INFL_E_VALUE, "nan.h5: /train/x row 17 column 3: NaN");
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, 17, x, y, NULL));  // the rows before are fine
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, N, NULL, y, NULL));  // and y alone
    store_split_close(s);
    // in a range the row is still the split's own (begin + row)
    r = mkref(path, "train", 20, 30);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    ASSERT_ERR(ctx, store_split_read(ctx, s, 3, 5, x, NULL, NULL), INFL_E_VALUE, "/train/x row 25 column 1: -Inf");
    store_split_close(s);
    // real targets
    r = mkref(path, "reg", 0, -1);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    ASSERT_ERR(ctx, store_split_read(ctx, s, 0, N, x, NULL, yf), INFL_E_VALUE, "/reg/y row 22 column 0: +Inf");
    store_split_close(s);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_bad_labels) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("lab.h5");
    float x[N_TR * D];
    int32_t y[N_TR];
    fill_x(0, N_TR, x);
    for (int i = 0; i < N_TR; i++) y[i] = yval(i);
    y[4] = -1;
    y[6] = 3;  // /classes has 3 names
    const char *names[3] = {"a", "b", "c"};
    infl_dsw *w = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 0, &w));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", N_TR, D, INFL_Y_CLASS, 1, NULL));
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", 0, N_TR, x, y, NULL));
    ASSERT_OK(ctx, store_dataset_set_classes(ctx, w, names, 3));
    ASSERT_OK(ctx, store_dataset_commit(ctx, w));
    infl_split *s = NULL;
    infl_dataref r = mkref(path, "train", 0, -1);
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    ASSERT_ERR(ctx, store_split_read(ctx, s, 0, N_TR, x, y, NULL), INFL_E_VALUE, "lab.h5: /train/y row 4: label -1");
    ASSERT_ERR(ctx, store_split_read(ctx, s, 5, 3, NULL, y, NULL), INFL_E_VALUE, "/train/y row 6: label 3");
    ASSERT_HAS(ctx, "3 names");
    ASSERT_OK(ctx, store_split_read(ctx, s, 0, 4, x, y, NULL));
    store_split_close(s);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- rejections: runs ----

// Opens a valid run file for editing with the raw API.
static hid_t edit_run(infl_ctx *ctx, const char *path) {
    write_run(ctx, path);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    return f;
}

Test(store, reject_weight_shape) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("r.h5");
    hid_t f = edit_run(ctx, path);
    cr_assert(H5Ldelete(f, "/checkpoints/000200/W1", H5P_DEFAULT) >= 0);
    hid_t g = H5Gopen2(f, "/checkpoints/000200", H5P_DEFAULT);
    hsize_t wd[2] = {2, 2};  // should be [2, 3]
    raw_dset(g, "W1", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, wd, NULL);
    H5Gclose(g);
    g = H5Gopen2(f, "/checkpoints/000100", H5P_DEFAULT);
    cr_assert(H5Ldelete(g, "W0", H5P_DEFAULT) >= 0);
    hsize_t w0[2] = {3, 4};
    raw_dset(g, "W0", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, w0, NULL);
    H5Gclose(g);
    H5Fclose(f);

    infl_run *r = NULL;
    ASSERT_OK(ctx, store_run_open(ctx, path, &r));
    float p[64];
    cr_assert_leq(infl_spec_nparams(store_run_spec(r)), 64);
    ASSERT_ERR(ctx, store_run_load(ctx, r, 1, p), INFL_E_SHAPE,
               "r.h5: /checkpoints/000200/W1: expected float32 [2, 3], found [2, 2]");
    ASSERT_ERR(ctx, store_run_load(ctx, r, 0, p), INFL_E_SHAPE,
               "/checkpoints/000100/W0: expected float32 [3, 4], found float64 [3, 4]");
    store_run_close(r);
    // the final checkpoint's tensors are checked when the run is opened: the model's
    // size, which callers allocate, is believed only once they bear it out
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Ldelete(f, "/checkpoints/000300/b0", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    r = NULL;
    ASSERT_ERR(ctx, store_run_open(ctx, path, &r), INFL_E_FORMAT,
               "/checkpoints/000300/b0: missing; expected float32 [3]");
    cr_assert_null(r);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_nan_weights) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("r.h5");
    hid_t f = edit_run(ctx, path);
    hid_t d = H5Dopen2(f, "/checkpoints/000300/W0", H5P_DEFAULT);
    float w[3 * 4];
    cr_assert(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0);
    w[1 * 4 + 2] = NAN;
    cr_assert(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0);
    H5Dclose(d);
    d = H5Dopen2(f, "/checkpoints/000100/b1", H5P_DEFAULT);
    float b[2] = {0, INFINITY};
    cr_assert(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    infl_run *r = NULL;
    ASSERT_OK(ctx, store_run_open(ctx, path, &r));
    float p[64];
    ASSERT_ERR(ctx, store_run_load(ctx, r, 2, p), INFL_E_VALUE, "r.h5: /checkpoints/000300/W0 row 1 column 2: NaN");
    ASSERT_ERR(ctx, store_run_load(ctx, r, 0, p), INFL_E_VALUE, "/checkpoints/000100/b1 entry 1: +Inf");
    ASSERT_OK(ctx, store_run_load(ctx, r, 1, p));
    store_run_close(r);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_run_without_checkpoints) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("r.h5");
    hid_t f = edit_run(ctx, path);
    cr_assert(H5Ldelete(f, "/checkpoints/000100", H5P_DEFAULT) >= 0);
    cr_assert(H5Ldelete(f, "/checkpoints/000200", H5P_DEFAULT) >= 0);
    cr_assert(H5Ldelete(f, "/checkpoints/000300", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    infl_run *r = NULL;
    ASSERT_ERR(ctx, store_run_open(ctx, path, &r), INFL_E_FORMAT, "r.h5: /checkpoints: no checkpoints");
    cr_assert_null(r);
    // and no /checkpoints at all
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Ldelete(f, "/checkpoints", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    ASSERT_ERR(ctx, store_run_open(ctx, path, &r), INFL_E_FORMAT, "r.h5: /checkpoints: missing");
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, reject_bad_model) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("r.h5");
    // softmax_ce with one output: the spec check, prefixed with file and object
    hid_t f = edit_run(ctx, path);
    hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
    cr_assert(H5Adelete(g, "layers") >= 0);
    int32_t layers[3] = {4, 3, 1};
    hsize_t n = 3;
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(g, "layers", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(a, H5T_NATIVE_INT32, layers) >= 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Gclose(g);
    H5Fclose(f);
    infl_run *r = NULL;
    ASSERT_ERR(ctx, store_run_open(ctx, path, &r), INFL_E_FORMAT, "r.h5: /model: ");
    ASSERT_HAS(ctx, "softmax_ce");
    // an unknown activation
    f = edit_run(ctx, tu_path("r2.h5"));
    g = H5Gopen2(f, "model", H5P_DEFAULT);
    cr_assert(H5Adelete(g, "activation") >= 0);
    raw_str_attr(g, "activation", "swish", 1);
    H5Gclose(g);
    H5Fclose(f);
    ASSERT_ERR(ctx, store_run_open(ctx, tu_path("r2.h5"), &r), INFL_E_FORMAT,
               "r2.h5: /model attribute activation is 'swish'");
    // a missing attribute
    f = edit_run(ctx, tu_path("r3.h5"));
    g = H5Gopen2(f, "model", H5P_DEFAULT);
    cr_assert(H5Adelete(g, "weight_decay") >= 0);
    H5Gclose(g);
    H5Fclose(f);
    ASSERT_ERR(ctx, store_run_open(ctx, tu_path("r3.h5"), &r), INFL_E_FORMAT,
               "r3.h5: /model attribute weight_decay missing");
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- output safety ----

Test(store, exists_without_force) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("out.h5");
    const char orig[] = "precious bytes";
    tu_write_file(path, orig, sizeof orig - 1);
    infl_dsw *w = NULL;
    ASSERT_ERR(ctx, store_dataset_create(ctx, path, 0, &w), INFL_E_EXISTS, "out.h5");
    cr_assert_null(w);
    infl_mlp_spec sp = small_spec();
    infl_runw *rw = NULL;
    ASSERT_ERR(ctx, store_run_create(ctx, path, 0, TU_MS(sp), "d.h5:/train", "sgd", 1, &rw), INFL_E_EXISTS, "out.h5");
    cr_assert_null(rw);
    size_t n = 0;
    char *now = tu_read_file(path, &n);
    cr_assert(now && n == sizeof orig - 1 && memcmp(now, orig, n) == 0, "the original file changed");
    free(now);
    cr_assert(!dir_has_tmp(tu_tmpdir()));
    // with force it is replaced, and only on commit
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 1, &w));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", 1, 1, INFL_Y_CLASS, 1, NULL));
    now = tu_read_file(path, &n);
    cr_assert(n == sizeof orig - 1 && memcmp(now, orig, n) == 0, "replaced before commit");
    free(now);
    float x = 1;
    int32_t y = 0;
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", 0, 1, &x, &y, NULL));
    ASSERT_OK(ctx, store_dataset_commit(ctx, w));
    infl_dataref r = mkref(path, "train", 0, -1);
    infl_split *s = NULL;
    ASSERT_OK(ctx, store_split_open(ctx, &r, &s));
    store_split_close(s);
    cr_assert(!dir_has_tmp(tu_tmpdir()));
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, abort_leaves_nothing) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("aborted.h5");
    infl_dsw *w = NULL;
    ASSERT_OK(ctx, store_dataset_create(ctx, path, 0, &w));
    cr_assert(dir_has_tmp(tu_tmpdir()), "the writer should work under a temporary name");
    cr_assert(!tu_exists(path));
    ASSERT_OK(ctx, store_dataset_add_split(ctx, w, "train", 4, 2, INFL_Y_CLASS, 1, NULL));
    float x[8] = {0};
    int32_t y[4] = {0};
    ASSERT_OK(ctx, store_dataset_write_rows(ctx, w, "train", 0, 4, x, y, NULL));
    // misuse is refused without harm
    ASSERT_ERR(ctx, store_dataset_write_rows(ctx, w, "train", 3, 2, x, y, NULL), INFL_E_ARG, "N = 4");
    ASSERT_ERR(ctx, store_dataset_write_rows(ctx, w, "nope", 0, 1, x, y, NULL), INFL_E_ARG, "/nope");
    ASSERT_ERR(ctx, store_dataset_add_split(ctx, w, "train", 4, 2, INFL_Y_CLASS, 1, NULL), INFL_E_ARG, "already");
    const int bad_shape[3] = {2, 2, 1};
    ASSERT_ERR(ctx, store_dataset_add_split(ctx, w, "t2", 4, 3, INFL_Y_CLASS, 1, bad_shape), INFL_E_ARG, "image_shape");
    ASSERT_ERR(ctx, store_dataset_set_attr(ctx, w, "infl_format", "run"), INFL_E_ARG, "infl_format");
    store_dataset_abort(w);
    store_dataset_abort(NULL);
    cr_assert(!tu_exists(path));
    cr_assert(!dir_has_tmp(tu_tmpdir()), "a temporary file was left behind");

    infl_mlp_spec sp = small_spec();
    infl_runw *rw = NULL;
    ASSERT_OK(ctx, store_run_create(ctx, path, 0, TU_MS(sp), "d.h5:/train", "sgd", 1, &rw));
    cr_assert(dir_has_tmp(tu_tmpdir()));
    store_run_abort(rw);
    store_run_abort(NULL);
    cr_assert(!tu_exists(path));
    cr_assert(!dir_has_tmp(tu_tmpdir()), "a temporary file was left behind");
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

// ---- describe ----

Test(store, describe_dataset) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("d.h5");
    write_dataset(ctx, path);
    infl_status st;
    char *out = describe(ctx, path, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    const char *words[] = {"dataset", "version 1", "split /train", "split /test", "rows", "10",
                           "features", "image 2 x 2 x 1", "3 classes", "real targets", "K = 2", "flipped int32 [10]",
                           "a, b, c", "source", "unit test"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        cr_assert(strstr(out, words[i]), "no '%s' in:\n%s", words[i], out);
    free(out);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, describe_run) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("r.h5");
    write_run(ctx, path);
    infl_status st;
    char *out = describe(ctx, path, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    const char *words[] = {"run", "layers", "4, 3, 2", "tanh", "softmax_ce", "0.001", "d.h5:/train", "sgd",
                           "12345678901", "000100", "000200", "000300", "(final)", "epoch", "lr"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        cr_assert(strstr(out, words[i]), "no '%s' in:\n%s", words[i], out);
    // the table is sorted by step
    const char *table = strstr(out, "grad_norm");
    cr_assert(table, "%s", out);
    const char *c1 = strstr(table, "000100"), *c2 = strstr(table, "000200"), *c3 = strstr(table, "000300");
    cr_assert(c1 && c2 && c3 && c1 < c2 && c2 < c3, "%s", out);
    free(out);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}

Test(store, describe_other_formats) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("s.h5");
    hid_t f = raw_file(path, "scores", 1);
    raw_str_attr(f, "method", "tracin", 0);
    hid_t g = H5Gcreate2(f, "topk", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d2[2] = {3, 2};
    raw_dset(g, "index", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d2, NULL);
    H5Gclose(g);
    H5Fclose(f);
    infl_status st;
    char *out = describe(ctx, path, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    const char *words[] = {"scores", "/topk", "/topk/index", "int64 [3, 2]", "@method", "'tracin'"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        cr_assert(strstr(out, words[i]), "no '%s' in:\n%s", words[i], out);
    free(out);

    const char *plain = tu_path("plain.h5");
    f = raw_file(plain, NULL, 0);
    hsize_t d1[1] = {7};
    raw_dset(f, "data", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, d1, NULL);
    H5Fclose(f);
    out = describe(ctx, plain, &st);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(out, "plain HDF5") && strstr(out, "/data") && strstr(out, "float64 [7]"), "%s", out);
    free(out);
    assert_no_open_ids();
    infl_ctx_free(ctx);
}
