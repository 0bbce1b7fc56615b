/*
 * store_dataset.c — `dataset` files (DESIGN.md "Files"): opening a split and
 * streaming row ranges of it by hyperslab (so a split larger than memory is read in
 * shards and never whole), and writing a dataset file split by split under a
 * temporary name. Every read validates the shapes and the values it returns.
 * Documents splits (tokens and offsets) are opened and written through store_docs.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"
#include "store_private.h"

// Class names cached per open split (n_classes still counts them all).
#define MAX_CACHED_NAMES 1024
// Target bytes of one chunk of x (rows of a float32 [N, D] dataset).
#define CHUNK_BYTES (1 << 20)
// Chunk cache per open x / yf dataset.
#define CACHE_BYTES (16u << 20)

static void close_if(hid_t id, herr_t (*fn)(hid_t)) {
    if (id >= 0) fn(id);
}

// A dataset access list with a chunk cache large enough for a few chunks of rows.
static hid_t row_dapl(void) {
    hid_t p = H5Pcreate(H5P_DATASET_ACCESS);
    if (p < 0) return p;
    if (H5Pset_chunk_cache(p, 1021, CACHE_BYTES, 0.75) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

// Rows per chunk of a float32 [n, w] dataset: about CHUNK_BYTES, at least 1, at most n.
static hsize_t chunk_rows(int64_t n, int64_t w) {
    int64_t r = CHUNK_BYTES / (4 * (w > 0 ? w : 1));
    if (r < 1) r = 1;
    if (r > n) r = n;
    return (hsize_t)r;
}

// Reads or writes rows [r0, r0 + nrows) of a 1-D (w = 0) or 2-D [N, w] dataset by a
// hyperslab, in memory type mt (store_private.h).
infl_status store_rows_io(infl_ctx *ctx, const char *path, hid_t dset, const char *where, hid_t mt, int64_t r0,
                          int64_t nrows, int64_t w, void *buf, int write) {
    infl_status rc = INFL_OK;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t start[2] = {(hsize_t)r0, 0}, count[2] = {(hsize_t)nrows, (hsize_t)w};
    int rank = w > 0 ? 2 : 1;
    fs = H5Dget_space(dset);
    GOTO_IF(ctx, fs < 0, write ? INFL_E_IO : INFL_E_FORMAT, "%s: %s: cannot get the dataspace", path, where);
    GOTO_IF(ctx, H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0, INFL_E_INTERNAL,
            "%s: %s: cannot select rows %" PRId64 " to %" PRId64, path, where, r0, r0 + nrows);
    ms = H5Screate_simple(rank, count, NULL);
    GOTO_IF(ctx, ms < 0, INFL_E_INTERNAL, "%s: %s: cannot make a memory dataspace", path, where);
    herr_t e = write ? H5Dwrite(dset, mt, ms, fs, H5P_DEFAULT, buf) : H5Dread(dset, mt, ms, fs, H5P_DEFAULT, buf);
    if (e < 0) {
        char why[256];
        h5u_errmsg(why, sizeof why);
        GOTO_IF(ctx, 1, write ? INFL_E_IO : INFL_E_FORMAT, "%s: %s: cannot %s rows %" PRId64 " to %" PRId64 "%s%s%s",
                path, where, write ? "write" : "read", r0, r0 + nrows, why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
done:
    close_if(ms, H5Sclose);
    close_if(fs, H5Sclose);
    return rc;
}

static const char *nonfinite_name(float v) {
    return isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
}

// Checks a (nrows, w) block read from rows r0.. of `where` is finite.
infl_status store_check_finite(infl_ctx *ctx, const char *path, const char *where, const float *v, int64_t r0,
                               int64_t nrows, int64_t w) {
    size_t total = (size_t)nrows * (size_t)w;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(v[i]))
            return infl_seterr(ctx, INFL_E_VALUE, "%s: %s row %" PRId64 " column %" PRId64 ": %s", path, where,
                               r0 + (int64_t)(i / (size_t)w), (int64_t)(i % (size_t)w), nonfinite_name(v[i]));
    return INFL_OK;
}

// ---- reading ----
//
// Each public function below that calls HDF5 is a thin wrapper that holds the store
// lock (h5u_lock, h5util.h) around its *_impl body.

// "a, b, c" of the groups at the root (for "no such split"), into buf.
static void list_groups(hid_t file, char *buf, size_t size) {
    char **names = NULL;
    int n = 0;
    buf[0] = 0;
    if (h5u_list(NULL, "", file, "/", &names, &n) < 0) return;
    size_t at = 0;
    int shown = 0;
    for (int i = 0; i < n && at < size; i++) {
        if (h5u_obj_type(file, names[i]) != H5O_TYPE_GROUP) continue;
        at += (size_t)snprintf(buf + at, size - at, "%s/%s", shown ? ", " : "", names[i]);
        shown++;
    }
    if (!shown) snprintf(buf, size, "no groups");
    h5u_list_free(names, n);
}

infl_status store_split_member(infl_ctx *ctx, infl_split *s, const char *name, const char *expected, hid_t dapl,
                               hid_t *out, h5u_dinfo *info) {
    char where[600];
    snprintf(where, sizeof where, "/%s/%s", s->split, name);
    return h5u_open_dset(ctx, s->path, s->group, name, where, expected, dapl, UINT64_MAX, out, info);
}

static infl_status read_classes(infl_ctx *ctx, infl_split *s) {
    int ty = h5u_obj_type(s->file, "classes");
    if (ty == -1) return INFL_OK;
    hid_t d;
    h5u_dinfo di;
    FORWARD_IF_ERROR(h5u_open_dset(ctx, s->path, s->file, "classes", "/classes", "a 1-D string array", H5P_DEFAULT,
                                   UINT64_MAX, &d, &di));
    s->names = infl_calloc(ctx, MAX_CACHED_NAMES, sizeof *s->names, "class names");
    if (!s->names) {
        H5Dclose(d);
        return INFL_E_NOMEM;
    }
    int64_t count = 0;
    infl_status rc = h5u_read_strings(ctx, s->path, d, "/classes", s->names, MAX_CACHED_NAMES, &count);
    H5Dclose(d);
    FORWARD_IF_ERROR(rc);
    RETURN_IF(ctx, count < 1 || count > INT_MAX, INFL_E_FORMAT,
              "%s: /classes: expected 1 to %d class names, found %" PRId64, s->path, INT_MAX, count);
    s->info.n_classes = (int)count;
    s->n_names = count < MAX_CACHED_NAMES ? (int)count : MAX_CACHED_NAMES;
    return INFL_OK;
}

static infl_status read_image_shape(infl_ctx *ctx, infl_split *s) {
    int has = h5u_has_attr(s->group, "image_shape");
    RETURN_IF(ctx, has < 0, INFL_E_FORMAT, "%s: /%s: cannot read its attributes", s->path, s->split);
    if (!has) return INFL_OK;
    char where[300];
    snprintf(where, sizeof where, "/%s", s->split);
    int64_t v[3];
    int n;
    FORWARD_IF_ERROR(h5u_attr_ints(ctx, s->path, s->group, where, "image_shape", 3, 3, v, &n));
    for (int i = 0; i < 3; i++)
        RETURN_IF(ctx, v[i] < 1 || v[i] > 65535, INFL_E_FORMAT,
                  "%s: /%s attribute image_shape [%" PRId64 ", %" PRId64 ", %" PRId64
                  "]: expected [H, W, C], each 1 to 65535",
                  s->path, s->split, v[0], v[1], v[2]);
    RETURN_IF(ctx, v[0] * v[1] * v[2] != s->info.d, INFL_E_FORMAT,
              "%s: /%s attribute image_shape [%" PRId64 ", %" PRId64 ", %" PRId64 "] has %" PRId64
              " values per image, but /%s/x has D = %" PRId64 " columns",
              s->path, s->split, v[0], v[1], v[2], v[0] * v[1] * v[2], s->split, s->info.d);
    s->info.has_image = 1;
    for (int i = 0; i < 3; i++) s->info.image_shape[i] = (int)v[i];
    return INFL_OK;
}

static infl_status store_split_open_impl(infl_ctx *ctx, const infl_dataref *ref, infl_split **out) {
    infl_status rc = INFL_OK;
    hid_t dapl = H5I_INVALID_HID;
    RETURN_IF(ctx, !out, INFL_E_ARG, "store_split_open: out is NULL");
    *out = NULL;
    RETURN_IF(ctx, !ref || !ref->path[0], INFL_E_ARG, "no data reference given");
    RETURN_IF(ctx, !ref->split[0] || strchr(ref->split, '/'), INFL_E_ARG,
              "%s: split '%s': expected one group name, e.g. train", ref->path, ref->split);
    infl_split *s = infl_calloc(ctx, 1, sizeof *s, "a split handle");
    if (!s) return INFL_E_NOMEM;
    s->file = s->group = s->x = s->y = s->tokens = s->offsets = H5I_INVALID_HID;
    snprintf(s->path, sizeof s->path, "%s", ref->path);
    snprintf(s->split, sizeof s->split, "%s", ref->split);
    const char *path = s->path, *sp = s->split;
    if (ref->end >= 0)
        snprintf(s->ref, sizeof s->ref, "%s:/%s[%" PRId64 ":%" PRId64 "]", path, sp, ref->begin, ref->end);
    else if (ref->begin > 0)
        snprintf(s->ref, sizeof s->ref, "%s:/%s[%" PRId64 ":]", path, sp, ref->begin);
    else
        snprintf(s->ref, sizeof s->ref, "%s:/%s", path, sp);

    // a `captured` file's splits hold examples' captured factors (store_captured.c)
    CHECK(h5u_open_ro(ctx, path, &s->file));
    const int captured = h5u_format_is(ctx, path, s->file, "captured");
    CHECK(h5u_check_format(ctx, path, s->file, captured ? "captured" : "dataset"));
    int ty = h5u_obj_type(s->file, sp);
    GOTO_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: /%s: cannot read the link", path, sp);
    if (ty != H5O_TYPE_GROUP) {
        char have[512];
        list_groups(s->file, have, sizeof have);
        GOTO_IF(ctx, 1, INFL_E_FORMAT, "%s: /%s: no such split (the file has %s)", path, sp, have);
    }
    s->group = H5Gopen2(s->file, sp, H5P_DEFAULT);
    GOTO_IF(ctx, s->group < 0, INFL_E_FORMAT, "%s: /%s: cannot open the group", path, sp);

    if (captured) {
        CHECK(read_classes(ctx, s));
        CHECK(store_captured_open(ctx, s, ref));
        goto done;
    }
    // a `tokens` dataset makes it a documents split (store_docs.c)
    ty = h5u_obj_type(s->group, "tokens");
    GOTO_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: /%s/tokens: cannot read the link", path, sp);
    if (ty != -1) {
        CHECK(read_classes(ctx, s));
        CHECK(store_docs_open(ctx, s, ref));
        goto done;
    }

    // x float32 [N, D]
    dapl = row_dapl();
    GOTO_IF(ctx, dapl < 0, INFL_E_INTERNAL, "%s: cannot make a dataset access list", path);
    h5u_dinfo xi, yi;
    CHECK(store_split_member(ctx, s, "x", "float32 [N, D]", dapl, &s->x, &xi));
    GOTO_IF(ctx, !h5u_is_f32(&xi) || xi.rank != 2 || xi.dims[1] < 1, INFL_E_FORMAT,
            "%s: /%s/x: expected float32 [N, D] with D >= 1, found %s", path, sp, xi.desc);
    int64_t n = (int64_t)xi.dims[0];
    s->info.n_total = n;
    s->info.d = (int64_t)xi.dims[1];

    // y int32 [N] or float32 [N, K]
    char yexp[400];
    snprintf(yexp, sizeof yexp, "int32 [N] or float32 [N, K] with N = %" PRId64 " rows like /%s/x", n, sp);
    CHECK(store_split_member(ctx, s, "y", yexp, dapl, &s->y, &yi));
    if (h5u_is_i32(&yi) && yi.rank == 1 && (int64_t)yi.dims[0] == n) {
        s->info.y_kind = INFL_Y_CLASS;
        s->info.k = 1;
    } else if (h5u_is_f32(&yi) && yi.rank == 2 && (int64_t)yi.dims[0] == n && yi.dims[1] >= 1) {
        s->info.y_kind = INFL_Y_REAL;
        s->info.k = (int64_t)yi.dims[1];
    } else {
        GOTO_IF(ctx, 1, INFL_E_FORMAT, "%s: /%s/y: expected %s, found %s", path, sp, yexp, yi.desc);
    }

    // the row range
    int64_t b = ref->begin, e = ref->end < 0 ? n : ref->end;
    GOTO_IF(ctx, b < 0 || e > n || b > n, INFL_E_ARG,
            "%s: rows [%" PRId64 ":%" PRId64 "] lie outside /%s, which has N = %" PRId64 " rows", s->ref, b, e, sp, n);
    GOTO_IF(ctx, e <= b, INFL_E_ARG,
            "%s: the row range [%" PRId64 ":%" PRId64 "] is empty (/%s has N = %" PRId64 " rows)", s->ref, b, e, sp, n);
    s->info.begin = b;
    s->info.n = e - b;

    CHECK(read_classes(ctx, s));
    CHECK(read_image_shape(ctx, s));
    ty = h5u_obj_type(s->group, "flipped");
    GOTO_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: /%s/flipped: cannot read the link", path, sp);
    s->info.has_flipped = ty == H5O_TYPE_DATASET;
done:
    close_if(dapl, H5Pclose);
    if (rc < 0) {
        store_split_close(s);
        return rc;
    }
    *out = s;
    return INFL_OK;
}

infl_status store_split_open(infl_ctx *ctx, const infl_dataref *ref, infl_split **out) {
    h5u_lock();
    infl_status rc = store_split_open_impl(ctx, ref, out);
    return h5u_unlock_rc(ctx, rc);
}

const infl_split_info *store_split_info(const infl_split *s) { return &s->info; }
const char *store_split_ref(const infl_split *s) { return s->ref; }
const char *store_split_path(const infl_split *s) { return s->path; }

static infl_status store_split_read_impl(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, float *x, int32_t *y,
                                         float *yf) {
    RETURN_IF(ctx, !s, INFL_E_ARG, "store_split_read: no split");
    const char *path = s->path, *sp = s->split;
    const infl_split_info *in = &s->info;
    RETURN_IF(ctx, in->kind == INFL_SPLIT_DOCS, INFL_E_ARG,
              "%s: /%s holds documents (tokens int32 [T], offsets int64 [N+1]), not rows x [N, D]: a model of rows "
              "cannot read it (documents are read by store_split_read_docs)",
              path, sp);
    RETURN_IF(ctx, row < 0 || nrows < 0 || row > in->n || nrows > in->n - row, INFL_E_ARG,
              "%s: cannot read rows [%" PRId64 ":%" PRId64 "] of a range of %" PRId64 " rows", s->ref, row,
              row + nrows, in->n);
    RETURN_IF(ctx, y && in->y_kind != INFL_Y_CLASS, INFL_E_ARG,
              "%s: /%s/y holds real targets float32 [N, %" PRId64 "], not class labels", path, sp, in->k);
    RETURN_IF(ctx, yf && in->y_kind != INFL_Y_REAL, INFL_E_ARG, "%s: /%s/y holds class labels, not real targets",
              path, sp);
    if (nrows == 0) return INFL_OK;
    int64_t r0 = in->begin + row;
    char where[300];
    if (in->kind == INFL_SPLIT_CAPTURED) return y ? store_captured_labels(ctx, s, r0, nrows, y) : INFL_OK;
    if (x) {
        snprintf(where, sizeof where, "/%s/x", sp);
        FORWARD_IF_ERROR(store_rows_io(ctx, path, s->x, where, H5T_NATIVE_FLOAT, r0, nrows, in->d, x, 0));
        FORWARD_IF_ERROR(store_check_finite(ctx, path, where, x, r0, nrows, in->d));
    }
    snprintf(where, sizeof where, "/%s/y", sp);
    if (y) {
        FORWARD_IF_ERROR(store_rows_io(ctx, path, s->y, where, H5T_NATIVE_INT32, r0, nrows, 0, y, 0));
        for (int64_t i = 0; i < nrows; i++) {
            RETURN_IF(ctx, y[i] < 0, INFL_E_VALUE,
                      "%s: %s row %" PRId64 ": label %" PRId32 " is negative; expected a class index >= 0", path, where,
                      r0 + i, y[i]);
            RETURN_IF(ctx, in->n_classes > 0 && y[i] >= in->n_classes, INFL_E_VALUE,
                      "%s: %s row %" PRId64 ": label %" PRId32 "; expected 0 to %d (/classes has %d names)", path,
                      where, r0 + i, y[i], in->n_classes - 1, in->n_classes);
        }
    }
    if (yf) {
        FORWARD_IF_ERROR(store_rows_io(ctx, path, s->y, where, H5T_NATIVE_FLOAT, r0, nrows, in->k, yf, 0));
        FORWARD_IF_ERROR(store_check_finite(ctx, path, where, yf, r0, nrows, in->k));
    }
    return INFL_OK;
}

infl_status store_split_read(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, float *x, int32_t *y,
                             float *yf) {
    h5u_lock();
    infl_status rc = store_split_read_impl(ctx, s, row, nrows, x, y, yf);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_split_read_int_impl(infl_ctx *ctx, infl_split *s, const char *name, int64_t row, int64_t nrows,
                                             int32_t *out) {
    RETURN_IF(ctx, !s, INFL_E_ARG, "store_split_read_int: no split");
    RETURN_IF(ctx, !name || !*name || strchr(name, '/'), INFL_E_ARG, "%s: expected a dataset name in /%s, got '%s'",
              s->path, s->split, name ? name : "");
    const infl_split_info *in = &s->info;
    RETURN_IF(ctx, row < 0 || nrows < 0 || row > in->n || nrows > in->n - row, INFL_E_ARG,
              "%s: cannot read rows [%" PRId64 ":%" PRId64 "] of a range of %" PRId64 " rows", s->ref, row,
              row + nrows, in->n);
    char where[600], expected[400];
    snprintf(where, sizeof where, "/%s/%s", s->split, name);
    snprintf(expected, sizeof expected, "int32 [N] with N = %" PRId64 " rows like /%s/x", in->n_total, s->split);
    hid_t d;
    h5u_dinfo di;
    FORWARD_IF_ERROR(store_split_member(ctx, s, name, expected, H5P_DEFAULT, &d, &di));
    infl_status rc = INFL_OK;
    GOTO_IF(ctx, !h5u_is_i32(&di) || di.rank != 1 || (int64_t)di.dims[0] != in->n_total, INFL_E_FORMAT,
            "%s: %s: expected %s, found %s", s->path, where, expected, di.desc);
    if (nrows > 0) CHECK(store_rows_io(ctx, s->path, d, where, H5T_NATIVE_INT32, in->begin + row, nrows, 0, out, 0));
done:
    H5Dclose(d);
    return rc;
}

infl_status store_split_read_int(infl_ctx *ctx, infl_split *s, const char *name, int64_t row, int64_t nrows,
                                 int32_t *out) {
    h5u_lock();
    infl_status rc = store_split_read_int_impl(ctx, s, name, row, nrows, out);
    return h5u_unlock_rc(ctx, rc);
}

void store_split_class_name(const infl_split *s, int i, char *buf, size_t size) {
    if (!size) return;
    if (!s || i < 0 || i >= s->n_names)
        buf[0] = 0;
    else
        snprintf(buf, size, "%s", s->names[i]);
}

static void store_split_close_impl(infl_split *s) {
    if (!s) return;
    store_docs_close(s);
    close_if(s->y, H5Dclose);
    close_if(s->x, H5Dclose);
    close_if(s->group, H5Gclose);
    close_if(s->file, H5Fclose);
    free(s->names);
    free(s->cap);
    free(s);
}

void store_split_close(infl_split *s) {
    h5u_lock();
    store_split_close_impl(s);
    h5u_unlock();
}

// ---- writing ----

static infl_status store_dataset_create_impl(infl_ctx *ctx, const char *path, int force, infl_dsw **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "store_dataset_create: out is NULL");
    *out = NULL;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no output file given");
    RETURN_IF(ctx, strlen(path) >= 4096, INFL_E_ARG, "%s: path too long", path);
    infl_dsw *w = infl_calloc(ctx, 1, sizeof *w, "a dataset writer");
    if (!w) return INFL_E_NOMEM;
    w->file = H5I_INVALID_HID;
    snprintf(w->path, sizeof w->path, "%s", path);
    infl_status rc = infl_out_begin(ctx, path, force, w->tmp, sizeof w->tmp);
    if (rc < 0) {
        free(w);
        return rc;
    }
    rc = h5u_create_infl(ctx, path, w->tmp, "dataset", &w->file);
    if (rc < 0) {
        infl_out_abort(w->tmp);
        free(w);
        return rc;
    }
    *out = w;
    return INFL_OK;
}

infl_status store_dataset_create(infl_ctx *ctx, const char *path, int force, infl_dsw **out) {
    h5u_lock();
    infl_status rc = store_dataset_create_impl(ctx, path, force, out);
    return h5u_unlock_rc(ctx, rc);
}

dsw_split *store_dsw_new(infl_ctx *ctx, infl_dsw *w, const char *split) {
    if (w->nsplits == w->cap) {
        int cap = w->cap ? 2 * w->cap : 4;
        dsw_split *p = realloc(w->splits, (size_t)cap * sizeof *p);
        if (!p) {
            infl_seterr(ctx, INFL_E_NOMEM, "out of memory adding split /%s", split);
            return NULL;
        }
        w->splits = p;
        w->cap = cap;
    }
    dsw_split *sp = &w->splits[w->nsplits];
    memset(sp, 0, sizeof *sp);
    snprintf(sp->name, sizeof sp->name, "%s", split);
    sp->group = sp->x = sp->y = sp->tokens = sp->offsets = H5I_INVALID_HID;
    return sp;
}

dsw_split *store_dsw_find(infl_dsw *w, const char *name) {
    for (int i = 0; i < w->nsplits; i++)
        if (strcmp(w->splits[i].name, name) == 0) return &w->splits[i];
    return NULL;
}

infl_status store_dsw_check_name(infl_ctx *ctx, infl_dsw *w, const char *split) {
    const char *path = w->path;
    RETURN_IF(ctx,
              !split || !*split || strchr(split, '/') || strlen(split) >= 256 || strcmp(split, "classes") == 0 ||
                  strcmp(split, "tokenizer") == 0,
              INFL_E_ARG, "%s: split name '%s': expected one group name such as train or test", path,
              split ? split : "");
    RETURN_IF(ctx, store_dsw_find(w, split), INFL_E_ARG, "%s: split /%s was already added", path, split);
    return INFL_OK;
}

// Creates a float32 [n, w] dataset chunked by rows (contiguous when n is 0).
static hid_t create_rows_f32(hid_t loc, const char *name, int64_t n, int64_t w) {
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)w}, chunk[2] = {chunk_rows(n, w), (hsize_t)w};
    hid_t s = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), dapl = row_dapl(), d = -1;
    if (s >= 0 && dcpl >= 0 && dapl >= 0 && (n == 0 || H5Pset_chunk(dcpl, 2, chunk) >= 0))
        d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, dapl);
    close_if(dapl, H5Pclose);
    close_if(dcpl, H5Pclose);
    close_if(s, H5Sclose);
    return d;
}

static hid_t create_i32(hid_t loc, const char *name, int64_t n) {
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL), d = -1;
    if (s >= 0) d = H5Dcreate2(loc, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    close_if(s, H5Sclose);
    return d;
}

static infl_status store_dataset_add_split_impl(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n, int64_t d,
                                                infl_ykind y_kind, int64_t k, const int image_shape[3]) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_add_split: no writer");
    const char *path = w->path;
    FORWARD_IF_ERROR(store_dsw_check_name(ctx, w, split));
    RETURN_IF(ctx, n < 0 || d < 1, INFL_E_ARG,
              "%s: /%s: expected N >= 0 rows of D >= 1 features, got [%" PRId64 ", %" PRId64 "]", path, split, n, d);
    RETURN_IF(ctx, y_kind != INFL_Y_CLASS && y_kind != INFL_Y_REAL, INFL_E_ARG, "%s: /%s: unknown label kind %d", path,
              split, (int)y_kind);
    RETURN_IF(ctx, y_kind == INFL_Y_CLASS && k != 1, INFL_E_ARG, "%s: /%s: class labels have k = 1, got %" PRId64,
              path, split, k);
    RETURN_IF(ctx, y_kind == INFL_Y_REAL && k < 1, INFL_E_ARG, "%s: /%s: real targets need k >= 1, got %" PRId64, path,
              split, k);
    if (image_shape) {
        int64_t p = 1;
        for (int i = 0; i < 3; i++) {
            RETURN_IF(ctx, image_shape[i] < 1 || image_shape[i] > 65535, INFL_E_ARG,
                      "%s: /%s: image_shape [%d, %d, %d]: each entry must be 1 to 65535", path, split, image_shape[0],
                      image_shape[1], image_shape[2]);
            p *= image_shape[i];
        }
        RETURN_IF(ctx, p != d, INFL_E_ARG,
                  "%s: /%s: image_shape [%d, %d, %d] has %" PRId64 " values, the rows have D = %" PRId64, path, split,
                  image_shape[0], image_shape[1], image_shape[2], p, d);
    }
    dsw_split *sp = store_dsw_new(ctx, w, split);
    if (!sp) return INFL_E_NOMEM;
    sp->n = n;
    sp->d = d;
    sp->k = k;
    sp->kind = y_kind;
    w->nsplits++;  // counted now so that commit/abort close whatever was created
    char where[300];
    snprintf(where, sizeof where, "/%s", split);
    sp->group = H5Gcreate2(w->file, split, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    RETURN_IF(ctx, sp->group < 0, INFL_E_IO, "%s: %s: cannot create the group", path, where);
    sp->x = create_rows_f32(sp->group, "x", n, d);
    RETURN_IF(ctx, sp->x < 0, INFL_E_IO, "%s: %s/x: cannot create float32 [%" PRId64 ", %" PRId64 "]", path, where, n,
              d);
    sp->y = y_kind == INFL_Y_CLASS ? create_i32(sp->group, "y", n) : create_rows_f32(sp->group, "y", n, k);
    RETURN_IF(ctx, sp->y < 0, INFL_E_IO, "%s: %s/y: cannot create the dataset", path, where);
    if (image_shape) {
        int32_t v[3] = {image_shape[0], image_shape[1], image_shape[2]};
        FORWARD_IF_ERROR(h5u_wattr_i32s(ctx, path, sp->group, where, "image_shape", v, 3));
    }
    return INFL_OK;
}

infl_status store_dataset_add_split(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n, int64_t d,
                                    infl_ykind y_kind, int64_t k, const int image_shape[3]) {
    h5u_lock();
    infl_status rc = store_dataset_add_split_impl(ctx, w, split, n, d, y_kind, k, image_shape);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_dataset_write_rows_impl(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t row,
                                                 int64_t nrows, const float *x, const int32_t *y, const float *yf) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_write_rows: no writer");
    dsw_split *sp = split ? store_dsw_find(w, split) : NULL;
    RETURN_IF(ctx, !sp, INFL_E_ARG, "%s: split /%s was not added", w->path, split ? split : "");
    RETURN_IF(ctx, row < 0 || nrows < 0 || row > sp->n || nrows > sp->n - row, INFL_E_ARG,
              "%s: /%s: rows [%" PRId64 ":%" PRId64 "] lie outside its N = %" PRId64 " rows", w->path, split, row,
              row + nrows, sp->n);
    RETURN_IF(ctx, sp->docs, INFL_E_ARG, "%s: /%s is a documents split: append documents to it, not rows", w->path,
              split);
    if (nrows == 0) return INFL_OK;
    RETURN_IF(ctx, !x, INFL_E_ARG, "%s: /%s: no x given for rows %" PRId64 "..", w->path, split, row);
    RETURN_IF(ctx, sp->kind == INFL_Y_CLASS && !y, INFL_E_ARG, "%s: /%s: no class labels y given", w->path, split);
    RETURN_IF(ctx, sp->kind == INFL_Y_REAL && !yf, INFL_E_ARG, "%s: /%s: no real targets yf given", w->path, split);
    char where[300];
    snprintf(where, sizeof where, "/%s/x", split);
    FORWARD_IF_ERROR(store_rows_io(ctx, w->path, sp->x, where, H5T_NATIVE_FLOAT, row, nrows, sp->d, (void *)x, 1));
    snprintf(where, sizeof where, "/%s/y", split);
    if (sp->kind == INFL_Y_CLASS)
        return store_rows_io(ctx, w->path, sp->y, where, H5T_NATIVE_INT32, row, nrows, 0, (void *)y, 1);
    return store_rows_io(ctx, w->path, sp->y, where, H5T_NATIVE_FLOAT, row, nrows, sp->k, (void *)yf, 1);
}

infl_status store_dataset_write_rows(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t row, int64_t nrows,
                                     const float *x, const int32_t *y, const float *yf) {
    h5u_lock();
    infl_status rc = store_dataset_write_rows_impl(ctx, w, split, row, nrows, x, y, yf);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_dataset_write_int_impl(infl_ctx *ctx, infl_dsw *w, const char *split, const char *name,
                                                int64_t n, const int32_t *v) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_write_int: no writer");
    dsw_split *sp = split ? store_dsw_find(w, split) : NULL;
    RETURN_IF(ctx, !sp, INFL_E_ARG, "%s: split /%s was not added", w->path, split ? split : "");
    RETURN_IF(ctx,
              !name || !*name || strchr(name, '/') || strcmp(name, "x") == 0 || strcmp(name, "y") == 0 ||
                  strcmp(name, "tokens") == 0 || strcmp(name, "offsets") == 0,
              INFL_E_ARG, "%s: /%s: '%s' is not a name for an extra dataset", w->path, split, name ? name : "");
    RETURN_IF(ctx, n != sp->n, INFL_E_ARG, "%s: /%s/%s: has %" PRId64 " values, the split has N = %" PRId64 " rows",
              w->path, split, name, n, sp->n);
    RETURN_IF(ctx, n > 0 && !v, INFL_E_ARG, "%s: /%s/%s: no values given", w->path, split, name);
    int ex = h5u_obj_type(sp->group, name);
    RETURN_IF(ctx, ex != -1, INFL_E_ARG, "%s: /%s/%s: already written", w->path, split, name);
    hid_t d = create_i32(sp->group, name, n);
    RETURN_IF(ctx, d < 0, INFL_E_IO, "%s: /%s/%s: cannot create int32 [%" PRId64 "]", w->path, split, name, n);
    infl_status rc = INFL_OK;
    if (n > 0 && H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        rc = infl_seterr(ctx, INFL_E_IO, "%s: /%s/%s: cannot write", w->path, split, name);
    H5Dclose(d);
    return rc;
}

infl_status store_dataset_write_int(infl_ctx *ctx, infl_dsw *w, const char *split, const char *name, int64_t n,
                                    const int32_t *v) {
    h5u_lock();
    infl_status rc = store_dataset_write_int_impl(ctx, w, split, name, n, v);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_dataset_set_classes_impl(infl_ctx *ctx, infl_dsw *w, const char *const *names, int count) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_set_classes: no writer");
    RETURN_IF(ctx, w->has_classes, INFL_E_ARG, "%s: /classes was already written", w->path);
    RETURN_IF(ctx, count < 1 || !names, INFL_E_ARG, "%s: /classes: expected at least one class name, got %d", w->path,
              count);
    for (int i = 0; i < count; i++)
        RETURN_IF(ctx, !names[i], INFL_E_ARG, "%s: /classes: name %d is NULL", w->path, i);
    FORWARD_IF_ERROR(h5u_write_strings(ctx, w->path, w->file, "/classes", "classes", names, count));
    w->has_classes = 1;
    return INFL_OK;
}

infl_status store_dataset_set_classes(infl_ctx *ctx, infl_dsw *w, const char *const *names, int count) {
    h5u_lock();
    infl_status rc = store_dataset_set_classes_impl(ctx, w, names, count);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_dataset_set_attr_impl(infl_ctx *ctx, infl_dsw *w, const char *name, const char *value) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_set_attr: no writer");
    RETURN_IF(ctx, !name || !*name, INFL_E_ARG, "%s: an attribute needs a name", w->path);
    RETURN_IF(ctx, strcmp(name, "infl_format") == 0 || strcmp(name, "infl_version") == 0, INFL_E_ARG,
              "%s: root attribute %s is written by the store itself", w->path, name);
    return h5u_wattr_str(ctx, w->path, w->file, "root", name, value ? value : "");
}

infl_status store_dataset_set_attr(infl_ctx *ctx, infl_dsw *w, const char *name, const char *value) {
    h5u_lock();
    infl_status rc = store_dataset_set_attr_impl(ctx, w, name, value);
    return h5u_unlock_rc(ctx, rc);
}

// A numeric attribute of the root or a split: kind 'i' int64, 'u' uint64, 'f' float64.
static infl_status set_attr_num_impl(infl_ctx *ctx, infl_dsw *w, const char *split, const char *name, char kind,
                                     int64_t i, uint64_t u, double f) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_set_attr: no writer");
    RETURN_IF(ctx, !name || !*name, INFL_E_ARG, "%s: an attribute needs a name", w->path);
    hid_t obj = w->file;
    char where[300] = "root";
    if (split) {
        dsw_split *sp = store_dsw_find(w, split);
        RETURN_IF(ctx, !sp, INFL_E_ARG, "%s: split /%s was not added", w->path, split);
        obj = sp->group;
        snprintf(where, sizeof where, "/%s", split);
    } else {
        RETURN_IF(ctx, strcmp(name, "infl_format") == 0 || strcmp(name, "infl_version") == 0, INFL_E_ARG,
                  "%s: root attribute %s is written by the store itself", w->path, name);
    }
    if (kind == 'i') return h5u_wattr_i64(ctx, w->path, obj, where, name, i);
    if (kind == 'u') return h5u_wattr_u64(ctx, w->path, obj, where, name, u);
    return h5u_wattr_f64(ctx, w->path, obj, where, name, f);
}

infl_status store_dataset_set_attr_i64(infl_ctx *ctx, infl_dsw *w, const char *split, const char *name, int64_t v) {
    h5u_lock();
    infl_status rc = set_attr_num_impl(ctx, w, split, name, 'i', v, 0, 0);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_dataset_set_attr_u64(infl_ctx *ctx, infl_dsw *w, const char *split, const char *name, uint64_t v) {
    h5u_lock();
    infl_status rc = set_attr_num_impl(ctx, w, split, name, 'u', 0, v, 0);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_dataset_set_attr_f64(infl_ctx *ctx, infl_dsw *w, const char *split, const char *name, double v) {
    h5u_lock();
    infl_status rc = set_attr_num_impl(ctx, w, split, name, 'f', 0, 0, v);
    return h5u_unlock_rc(ctx, rc);
}

// Closes every id of the writer; < 0 when any close failed.
static int dsw_close(infl_dsw *w) {
    int bad = 0;
    for (int i = w->nsplits - 1; i >= 0; i--) {
        dsw_split *sp = &w->splits[i];
        if (store_docs_wclose(sp) < 0) bad = 1;
        if (sp->y >= 0 && H5Dclose(sp->y) < 0) bad = 1;
        if (sp->x >= 0 && H5Dclose(sp->x) < 0) bad = 1;
        if (sp->group >= 0 && H5Gclose(sp->group) < 0) bad = 1;
        sp->x = sp->y = sp->group = H5I_INVALID_HID;
    }
    if (w->file >= 0 && H5Fclose(w->file) < 0) bad = 1;
    w->file = H5I_INVALID_HID;
    return bad ? -1 : 0;
}

static infl_status store_dataset_commit_impl(infl_ctx *ctx, infl_dsw *w) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_commit: no writer");
    infl_status rc = store_docs_finish(ctx, w);
    if (rc < 0) {
        dsw_close(w);
        infl_out_abort(w->tmp);
    } else if (dsw_close(w) < 0) {
        char why[256];
        h5u_errmsg(why, sizeof why);
        rc = infl_seterr(ctx, INFL_E_IO, "%s: cannot finish writing %s%s%s%s", w->path, w->tmp, why[0] ? " (" : "",
                         why, why[0] ? ")" : "");
        infl_out_abort(w->tmp);
    } else {
        rc = infl_out_commit(ctx, w->tmp, w->path);
    }
    free(w->splits);
    free(w);
    return rc;
}

infl_status store_dataset_commit(infl_ctx *ctx, infl_dsw *w) {
    h5u_lock();
    infl_status rc = store_dataset_commit_impl(ctx, w);
    return h5u_unlock_rc(ctx, rc);
}

static void store_dataset_abort_impl(infl_dsw *w) {
    if (!w) return;
    int created = w->file >= 0;
    dsw_close(w);
    if (created) infl_out_abort(w->tmp);
    free(w->splits);
    free(w);
}

void store_dataset_abort(infl_dsw *w) {
    h5u_lock();
    store_dataset_abort_impl(w);
    h5u_unlock();
}
