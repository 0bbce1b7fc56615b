/*
 * store_captured.c — `captured` files (store.h; DESIGN.md "Files"): the layer inputs A
 * and output gradients Δ of a model trained elsewhere (PyTorch: python/infl/torch.py),
 * recorded per example and token row at each checkpoint. The file is a run (its /model
 * and /checkpoints are read by store_run.c) and its own data: a split /NAME holds the
 * examples' row offsets (and labels), the checkpoint's /checkpoints/C/NAME/layer{l}/A, D
 * (and Ds at sampled targets) and loss hold what was captured. Here: opening such a
 * split (store_dataset.c dispatches here when the file's infl_format is `captured`),
 * reading a range of examples' rows, and the writer that tests and tools use.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"
#include "store_private.h"

#define OFFS_BLOCK (1 << 20)  // offsets checked per read when a split is opened

// ---- reading ----

// Reads offsets [i, i + n] (n + 1 entries) of the split into v.
static infl_status read_offsets(infl_ctx *ctx, infl_split *s, int64_t i, int64_t n, int64_t *v) {
    char where[300];
    snprintf(where, sizeof where, "/%s/offsets", s->split);
    return store_rows_io(ctx, s->path, s->offsets, where, H5T_NATIVE_INT64, i, n + 1, 0, v, 0);
}

// The layers of the file's /model into s->cap (the same reader as the run's: store_run.c).
static infl_status read_spec(infl_ctx *ctx, infl_split *s) {
    infl_run *r = NULL;
    FORWARD_IF_ERROR(store_run_open(ctx, s->path, &r));  // the store's lock is recursive
    s->cap = infl_malloc(ctx, sizeof *s->cap, "a captured model's layers");
    infl_status rc = s->cap ? INFL_OK : INFL_E_NOMEM;
    if (rc == INFL_OK) *s->cap = store_run_spec(r)->cap;
    store_run_close(r);
    return rc;
}

infl_status store_captured_open(infl_ctx *ctx, infl_split *s, const infl_dataref *ref) {
    const char *path = s->path, *sp = s->split;
    infl_status rc = INFL_OK;
    int64_t *v = NULL;
    h5u_dinfo oi, yi;
    CHECK(read_spec(ctx, s));
    CHECK(store_split_member(ctx, s, "offsets", "int64 [N+1] (the first token row of each example, then the end)",
                             H5P_DEFAULT, &s->offsets, &oi));
    GOTO_IF(ctx, oi.cls != H5T_INTEGER || oi.size != 8 || !oi.is_signed || oi.rank != 1 || oi.dims[0] < 2,
            INFL_E_FORMAT, "%s: /%s/offsets: expected int64 [N+1] with N >= 1 examples, found %s", path, sp, oi.desc);
    const int64_t n = (int64_t)oi.dims[0] - 1;
    int ty = h5u_obj_type(s->group, "y");
    GOTO_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: /%s/y: cannot read the link", path, sp);
    if (ty != -1) {
        char yexp[200];
        snprintf(yexp, sizeof yexp, "int32 [N] with N = %" PRId64 " examples (offsets has N+1 entries)", n);
        CHECK(store_split_member(ctx, s, "y", yexp, H5P_DEFAULT, &s->y, &yi));
        GOTO_IF(ctx, !h5u_is_i32(&yi) || yi.rank != 1 || (int64_t)yi.dims[0] != n, INFL_E_FORMAT,
                "%s: /%s/y: expected %s, found %s", path, sp, yexp, yi.desc);
    }
    ty = h5u_obj_type(s->group, "flipped");
    s->info.has_flipped = ty == H5O_TYPE_DATASET;

    // every offset, a block at a time: from 0, non-decreasing; the longest example
    int64_t b = ref->begin, e = ref->end < 0 ? n : ref->end, max_len = 0, min_len = INT64_MAX, ob = 0, oe = 0;
    GOTO_IF(ctx, b < 0 || e > n || b > n, INFL_E_ARG,
            "%s: examples [%" PRId64 ":%" PRId64 "] lie outside /%s, which has N = %" PRId64 " examples", s->ref, b, e,
            sp, n);
    GOTO_IF(ctx, e <= b, INFL_E_ARG,
            "%s: the example range [%" PRId64 ":%" PRId64 "] is empty (/%s has N = %" PRId64 " examples)", s->ref, b,
            e, sp, n);
    v = infl_malloc(ctx, (OFFS_BLOCK + 1) * sizeof *v, "the offsets");
    GOTO_NOMEM_IF(!v);
    for (int64_t i = 0; i < n; i += OFFS_BLOCK) {
        int64_t m = n - i < OFFS_BLOCK ? n - i : OFFS_BLOCK;
        CHECK(read_offsets(ctx, s, i, m, v));
        GOTO_IF(ctx, i == 0 && v[0] != 0, INFL_E_FORMAT, "%s: /%s/offsets[0] is %" PRId64 "; expected 0", path, sp,
                v[0]);
        for (int64_t j = 0; j < m; j++) {
            GOTO_IF(ctx, v[j + 1] < v[j], INFL_E_FORMAT,
                    "%s: /%s/offsets[%" PRId64 "] = %" PRId64 " is below [%" PRId64 "] = %" PRId64
                    ": expected non-decreasing offsets (example i's rows are offsets[i] to offsets[i+1])",
                    path, sp, i + j + 1, v[j + 1], i + j, v[j]);
            if (v[j + 1] - v[j] > max_len) max_len = v[j + 1] - v[j];
            if (v[j + 1] - v[j] < min_len) min_len = v[j + 1] - v[j];
            if (i + j == b) ob = v[j];
            if (i + j + 1 == e) oe = v[j + 1];
        }
    }
    s->rows_total = v[(n - 1) % OFFS_BLOCK + 1];
    GOTO_IF(ctx, max_len > INT32_MAX, INFL_E_FORMAT, "%s: /%s/offsets: an example of %" PRId64 " rows; at most %d",
            path, sp, max_len, INT32_MAX);
    GOTO_IF(ctx, !s->cap->tokens && (max_len != 1 || min_len != 1), INFL_E_FORMAT,
            "%s: /%s/offsets: an example of %" PRId64 " rows, but /model says tokens = 0 (one row per example)", path,
            sp, max_len != 1 ? max_len : min_len);
    GOTO_IF(ctx, max_len < 1, INFL_E_FORMAT, "%s: /%s/offsets: no example has a token row (nothing was captured)",
            path, sp);

    store_split_set_ragged(&s->info, INFL_SPLIT_CAPTURED, n, b, e, max_len, oe - ob);
done:
    free(v);
    return rc;
}

const infl_captured_spec *store_split_captured(const infl_split *s) {
    return s && s->info.kind == INFL_SPLIT_CAPTURED ? s->cap : NULL;
}

infl_status store_captured_labels(infl_ctx *ctx, infl_split *s, int64_t r0, int64_t nrows, int32_t *y) {
    if (s->y < 0) {
        for (int64_t i = 0; i < nrows; i++) y[i] = -1;  // no labels captured
        return INFL_OK;
    }
    char where[300];
    snprintf(where, sizeof where, "/%s/y", s->split);
    FORWARD_IF_ERROR(store_rows_io(ctx, s->path, s->y, where, H5T_NATIVE_INT32, r0, nrows, 0, y, 0));
    for (int64_t i = 0; i < nrows; i++)
        RETURN_IF(ctx, y[i] < 0 || (s->info.n_classes > 0 && y[i] >= s->info.n_classes), INFL_E_VALUE,
                  "%s: %s row %" PRId64 ": label %" PRId32 "; expected 0 to %d", s->path, where, r0 + i, y[i],
                  s->info.n_classes > 0 ? s->info.n_classes - 1 : INT32_MAX);
    return INFL_OK;
}

static infl_status store_captured_offsets_impl(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows,
                                               int64_t *offs) {
    RETURN_IF(ctx, !store_split_captured(s), INFL_E_ARG, "%s: /%s is not a captured split", s->path, s->split);
    RETURN_IF(ctx, row < 0 || nrows < 1 || row > s->info.n || nrows > s->info.n - row, INFL_E_ARG,
              "%s: cannot read examples [%" PRId64 ":%" PRId64 "] of a range of %" PRId64, s->ref, row, row + nrows,
              s->info.n);
    FORWARD_IF_ERROR(read_offsets(ctx, s, s->info.begin + row, nrows, offs));
    for (int64_t i = 0; i < nrows; i++)
        RETURN_IF(ctx,
                  offs[i + 1] < offs[i] || offs[i] < 0 || offs[i + 1] > s->rows_total ||
                      (!s->cap->tokens && offs[i + 1] - offs[i] != 1),
                  INFL_E_FORMAT,
                  "%s: /%s/offsets[%" PRId64 "] changed since the file was opened", s->path, s->split,
                  s->info.begin + row + i);
    return INFL_OK;
}

infl_status store_captured_offsets(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, int64_t *offs) {
    h5u_lock();
    infl_status rc = store_captured_offsets_impl(ctx, s, row, nrows, offs);
    return h5u_unlock_rc(ctx, rc);
}

// Opens /checkpoints/ckpt/split[/sub]/name, a float32 dataset [rows, width] (width 0: 1-D [rows]).
static infl_status open_member(infl_ctx *ctx, infl_split *s, const char *ckpt, const char *sub, const char *name,
                               int64_t rows, int64_t width, char *where, size_t wsize, hid_t *out) {
    char rel[600], expected[200];
    snprintf(rel, sizeof rel, "checkpoints/%s/%s%s%s/%s", ckpt, s->split, sub ? "/" : "", sub ? sub : "", name);
    snprintf(where, wsize, "/%s", rel);
    if (width)
        snprintf(expected, sizeof expected, "float32 [%" PRId64 ", %" PRId64 "]", rows, width);
    else
        snprintf(expected, sizeof expected, "float32 [%" PRId64 "]", rows);
    int ty = h5u_obj_type(s->file, rel);
    RETURN_IF(ctx, ty != H5O_TYPE_DATASET, INFL_E_FORMAT,
              "%s: %s: missing; expected %s (the checkpoint's capture of /%s: capture every layer of every split at "
              "every checkpoint a command reads)",
              s->path, where, expected, s->split);
    h5u_dinfo di;
    // read a sub-batch of rows at a time: bounded by what the file stores, not by memory
    FORWARD_IF_ERROR(h5u_open_dset(ctx, s->path, s->file, rel, where, expected, H5P_DEFAULT, UINT64_MAX, out, &di));
    int ok = h5u_is_f32(&di) && di.rank == (width ? 2 : 1) && (int64_t)di.dims[0] == rows &&
             (!width || (int64_t)di.dims[1] == width);
    if (!ok) {
        H5Dclose(*out);
        *out = H5I_INVALID_HID;
        return infl_seterr(ctx, INFL_E_SHAPE, "%s: %s: expected %s%s, found %s", s->path, where, expected,
                           width ? " (one row per token row of /offsets)" : " (one per example)", di.desc);
    }
    return INFL_OK;
}

static infl_status read_block(infl_ctx *ctx, infl_split *s, const char *ckpt, const char *sub, const char *name,
                              int64_t total, int64_t width, int64_t r0, int64_t nrows, float *out) {
    char where[700];
    hid_t d;
    FORWARD_IF_ERROR(open_member(ctx, s, ckpt, sub, name, total, width, where, sizeof where, &d));
    infl_status rc = store_rows_io(ctx, s->path, d, where, H5T_NATIVE_FLOAT, r0, nrows, width, out, 0);
    H5Dclose(d);
    if (rc == INFL_OK) rc = store_check_finite(ctx, s->path, where, out, r0, nrows, width ? width : 1);
    return rc;
}

static infl_status store_captured_read_impl(infl_ctx *ctx, infl_split *s, const char *ckpt, int layer,
                                            infl_captured_part part, int64_t r0, int64_t nrows, float *out) {
    const infl_captured_spec *c = store_split_captured(s);
    RETURN_IF(ctx, !c, INFL_E_ARG, "%s: /%s is not a captured split", s->path, s->split);
    RETURN_IF(ctx, !ckpt || !*ckpt || strlen(ckpt) > 64, INFL_E_ARG, "%s: no checkpoint named to read /%s of",
              s->path, s->split);
    RETURN_IF(ctx, layer < 0 || layer >= c->L, INFL_E_ARG, "%s: layer %d of %d", s->path, layer, c->L);
    RETURN_IF(ctx, r0 < 0 || nrows < 0 || r0 + nrows > s->rows_total, INFL_E_ARG,
              "%s: token rows [%" PRId64 ":%" PRId64 "] of /%s's %" PRId64, s->path, r0, r0 + nrows, s->split,
              s->rows_total);
    if (nrows == 0) return INFL_OK;
    char sub[32];
    snprintf(sub, sizeof sub, "layer%d", layer);
    static const char *const names[] = {"A", "D", "Ds"};
    int64_t width = part == INFL_CAP_A ? c->d_in[layer] : c->d_out[layer];
    return read_block(ctx, s, ckpt, sub, names[part], s->rows_total, width, r0, nrows, out);
}

infl_status store_captured_read(infl_ctx *ctx, infl_split *s, const char *ckpt, int layer, infl_captured_part part,
                                int64_t r0, int64_t nrows, float *out) {
    h5u_lock();
    infl_status rc = store_captured_read_impl(ctx, s, ckpt, layer, part, r0, nrows, out);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_captured_loss_impl(infl_ctx *ctx, infl_split *s, const char *ckpt, int64_t row,
                                            int64_t nrows, float *loss) {
    RETURN_IF(ctx, !store_split_captured(s), INFL_E_ARG, "%s: /%s is not a captured split", s->path, s->split);
    RETURN_IF(ctx, row < 0 || nrows < 0 || row + nrows > s->info.n, INFL_E_ARG,
              "%s: examples [%" PRId64 ":%" PRId64 "] of a range of %" PRId64, s->ref, row, row + nrows, s->info.n);
    return read_block(ctx, s, ckpt, NULL, "loss", s->info.n_total, 0, s->info.begin + row, nrows, loss);
}

infl_status store_captured_loss(infl_ctx *ctx, infl_split *s, const char *ckpt, int64_t row, int64_t nrows,
                                float *loss) {
    h5u_lock();
    infl_status rc = store_captured_loss_impl(ctx, s, ckpt, row, nrows, loss);
    return h5u_unlock_rc(ctx, rc);
}

int store_captured_has_sampled(infl_split *s, const char *ckpt) {
    char rel[600];
    snprintf(rel, sizeof rel, "checkpoints/%s/%s/layer0/Ds", ckpt, s->split);
    h5u_lock();
    int ty = h5u_obj_type(s->file, rel);
    h5u_unlock();
    return ty == H5O_TYPE_DATASET;
}

// ---- writing (tests, tools): whole datasets at once ----

struct infl_capw {
    char path[4096];
    char tmp[4096 + 64];
    hid_t file;
    infl_captured_spec spec;
};

static infl_status store_captured_create_impl(infl_ctx *ctx, const char *path, int force,
                                              const infl_captured_spec *spec, infl_capw **out) {
    *out = NULL;
    FORWARD_IF_ERROR(infl_captured_spec_check(ctx, spec));
    infl_capw *w = infl_calloc(ctx, 1, sizeof *w, "a captured writer");
    if (!w) return INFL_E_NOMEM;
    w->file = H5I_INVALID_HID;
    w->spec = *spec;
    snprintf(w->path, sizeof w->path, "%s", path);
    infl_status rc = infl_out_begin(ctx, path, force, w->tmp, sizeof w->tmp);
    hid_t g = H5I_INVALID_HID;
    CHECK(rc);
    CHECK(h5u_create_infl(ctx, path, w->tmp, "captured", &w->file));
    g = H5Gcreate2(w->file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, g < 0, INFL_E_IO, "%s: cannot create /model", path);
    CHECK(h5u_wattr_str(ctx, path, g, "/model", "kind", "captured"));
    CHECK(h5u_wattr_i32s(ctx, path, g, "/model", "d_in", spec->d_in, spec->L));
    CHECK(h5u_wattr_i32s(ctx, path, g, "/model", "d_out", spec->d_out, spec->L));
    CHECK(h5u_wattr_i32s(ctx, path, g, "/model", "bias", spec->bias, spec->L));
    CHECK(h5u_wattr_i64(ctx, path, g, "/model", "outputs", spec->outputs));
    CHECK(h5u_wattr_i64(ctx, path, g, "/model", "tokens", spec->tokens));
    CHECK(h5u_wattr_f64(ctx, path, g, "/model", "weight_decay", spec->wd));
    CHECK(h5u_wattr_str(ctx, path, g, "/model", "source", "infl (store_captured_create)"));
    {
        const char *names[INFL_MAX_LINEAR];
        for (int l = 0; l < spec->L; l++) names[l] = spec->names[l];
        CHECK(h5u_write_strings(ctx, path, g, "/model", "names", names, spec->L));
    }
done:
    if (g >= 0) H5Gclose(g);
    if (rc < 0) {
        store_captured_abort(w);
        return rc;
    }
    *out = w;
    return INFL_OK;
}

infl_status store_captured_create(infl_ctx *ctx, const char *path, int force, const infl_captured_spec *spec,
                                  infl_capw **out) {
    h5u_lock();
    infl_status rc = store_captured_create_impl(ctx, path, force, spec, out);
    return h5u_unlock_rc(ctx, rc);
}

// Creates the groups of `rel` ("a/b/c") that are missing.
static infl_status make_groups(infl_ctx *ctx, infl_capw *w, const char *rel) {
    char part[700];
    for (const char *p = strchr(rel, '/'); ; p = strchr(p + 1, '/')) {
        size_t len = p ? (size_t)(p - rel) : strlen(rel);
        snprintf(part, sizeof part, "%.*s", (int)len, rel);
        if (h5u_obj_type(w->file, part) == -1) {
            hid_t g = H5Gcreate2(w->file, part, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            RETURN_IF(ctx, g < 0, INFL_E_IO, "%s: cannot create /%s", w->path, part);
            H5Gclose(g);
        }
        if (!p) return INFL_OK;
    }
}

static infl_status store_captured_put_impl(infl_ctx *ctx, infl_capw *w, const char *rel, hid_t ftype, hid_t mtype,
                                           int64_t rows, int64_t cols, const void *data) {
    const char *slash = strrchr(rel, '/');
    char grp[700] = "";
    hid_t g = w->file;
    if (slash) {
        snprintf(grp, sizeof grp, "%.*s", (int)(slash - rel), rel);
        FORWARD_IF_ERROR(make_groups(ctx, w, grp));
        g = H5Gopen2(w->file, grp, H5P_DEFAULT);
        RETURN_IF(ctx, g < 0, INFL_E_IO, "%s: cannot open /%s", w->path, grp);
    }
    char where[710];
    snprintf(where, sizeof where, "/%s", grp);
    infl_status rc = h5u_write_array(ctx, w->path, g, where, slash ? slash + 1 : rel, ftype, mtype, (hsize_t)rows,
                                     (hsize_t)cols, data);
    if (slash) H5Gclose(g);
    return rc;
}

infl_status store_captured_put(infl_ctx *ctx, infl_capw *w, const char *rel, int is_int, int64_t rows, int64_t cols,
                               const void *data) {
    h5u_lock();
    infl_status rc = store_captured_put_impl(ctx, w, rel, is_int == 8 ? H5T_STD_I64LE : is_int ? H5T_STD_I32LE : H5T_IEEE_F32LE,
                                             is_int == 8 ? H5T_NATIVE_INT64 : is_int ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT,
                                             rows, cols, data);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_captured_checkpoint_impl(infl_ctx *ctx, infl_capw *w, int64_t step, double epoch, double lr,
                                                  const float *params, char *name, size_t nsize) {
    snprintf(name, nsize, "%06" PRId64, step);
    char rel[128];
    snprintf(rel, sizeof rel, "checkpoints/%s", name);
    FORWARD_IF_ERROR(make_groups(ctx, w, rel));
    hid_t g = H5Gopen2(w->file, rel, H5P_DEFAULT), c = H5Gopen2(w->file, "checkpoints", H5P_DEFAULT);
    infl_status rc = INFL_OK;
    char where[140];
    snprintf(where, sizeof where, "/%s", rel);
    GOTO_IF(ctx, g < 0 || c < 0, INFL_E_IO, "%s: cannot open /%s", w->path, rel);
    CHECK(h5u_wattr_i64(ctx, w->path, g, where, "step", step));
    CHECK(h5u_wattr_f64(ctx, w->path, g, where, "epoch", epoch));
    CHECK(h5u_wattr_f64(ctx, w->path, g, where, "lr", lr));
    if (h5u_has_attr(c, "final") == 1) H5Adelete(c, "final");
    CHECK(h5u_wattr_str(ctx, w->path, c, "/checkpoints", "final", name));
    for (int l = 0; l < w->spec.L; l++) {
        size_t off = infl_captured_woff(&w->spec, l);
        char t[16];
        snprintf(t, sizeof t, "W%d", l);
        CHECK(h5u_write_array(ctx, w->path, g, where, t, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, (hsize_t)w->spec.d_out[l],
                              (hsize_t)w->spec.d_in[l], params + off));
        snprintf(t, sizeof t, "b%d", l);
        if (w->spec.bias[l])
            CHECK(h5u_write_array(ctx, w->path, g, where, t, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                                  (hsize_t)w->spec.d_out[l], 0,
                                  params + off + (size_t)w->spec.d_out[l] * (size_t)w->spec.d_in[l]));
    }
done:
    if (g >= 0) H5Gclose(g);
    if (c >= 0) H5Gclose(c);
    return rc;
}

infl_status store_captured_checkpoint(infl_ctx *ctx, infl_capw *w, int64_t step, double epoch, double lr,
                                      const float *params, char *name, size_t nsize) {
    h5u_lock();
    infl_status rc = store_captured_checkpoint_impl(ctx, w, step, epoch, lr, params, name, nsize);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_captured_commit(infl_ctx *ctx, infl_capw *w) {
    h5u_lock();
    infl_status rc = h5u_finish_infl(ctx, w->path, w->tmp, w->file, INFL_OK);
    w->file = H5I_INVALID_HID;
    free(w);
    return h5u_unlock_rc(ctx, rc);
}

void store_captured_abort(infl_capw *w) {
    if (!w) return;
    h5u_lock();
    if (w->file >= 0) H5Fclose(w->file);
    if (w->tmp[0]) infl_out_abort(w->tmp);
    h5u_unlock();
    free(w);
}
