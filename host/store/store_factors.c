/*
 * store_factors.c — `factors` files (schema version 1, DESIGN.md "Files"): the
 * EK-FAC factors of one checkpoint, per layer /layerL/{A_vecs, A_vals, S_vecs,
 * S_vals, lambda} in float64, with the run, checkpoint, weights hash, strategy,
 * Fisher, seed and examples seen as root attributes, so `rank` can refuse factors
 * that belong to another model.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"

infl_status infl_factors_alloc(infl_ctx *ctx, int L, const int *widths, infl_factors **out) {
    *out = NULL;
    RETURN_IF(ctx, L < 1 || L > INFL_MAX_LAYERS, INFL_E_ARG, "factors of %d layers", L);
    infl_factors *f = infl_calloc(ctx, 1, sizeof *f, "factors");
    if (!f) return INFL_E_NOMEM;
    f->L = L;
    for (int l = 0; l <= L; l++) f->widths[l] = widths[l];
    for (int l = 0; l < L; l++) {
        size_t ni = (size_t)widths[l] + 1, no = (size_t)widths[l + 1];
        f->A_vecs[l] = calloc(ni * ni, sizeof(double));
        f->A_vals[l] = calloc(ni, sizeof(double));
        f->S_vecs[l] = calloc(no * no, sizeof(double));
        f->S_vals[l] = calloc(no, sizeof(double));
        f->lambda[l] = calloc(no * ni, sizeof(double));
        if (!f->A_vecs[l] || !f->A_vals[l] || !f->S_vecs[l] || !f->S_vals[l] || !f->lambda[l]) {
            infl_factors_free(f);
            return infl_seterr(ctx, INFL_E_NOMEM, "out of memory for the factors of layer %d", l);
        }
    }
    *out = f;
    return INFL_OK;
}

void infl_factors_free(infl_factors *f) {
    if (!f) return;
    for (int l = 0; l < f->L; l++) {
        free(f->A_vecs[l]);
        free(f->A_vals[l]);
        free(f->S_vecs[l]);
        free(f->S_vals[l]);
        free(f->lambda[l]);
    }
    free(f);
}

uint64_t infl_weights_hash(const float *params, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *p = (const unsigned char *)params;
    for (size_t i = 0; i < n * sizeof(float); i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static infl_status write_f64(infl_ctx *ctx, const char *path, hid_t g, const char *where, const char *name,
                             hsize_t rows, hsize_t cols, const double *v) {
    return h5u_write_array(ctx, path, g, where, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, rows, cols, v);
}

static infl_status write_impl(infl_ctx *ctx, const char *path, int force, const infl_factors *f) {
    char tmp[4200];
    RETURN_IF(ctx, strlen(path) >= 4096, INFL_E_ARG, "%s: path too long", path);
    FORWARD_IF_ERROR(infl_out_begin(ctx, path, force, tmp, sizeof tmp));
    hid_t file = H5I_INVALID_HID, g = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    CHECK(h5u_create_infl(ctx, path, tmp, "factors", &file));
    int32_t widths[INFL_MAX_LAYERS + 1];
    for (int l = 0; l <= f->L; l++) widths[l] = f->widths[l];
    CHECK(h5u_wattr_i32s(ctx, path, file, "root", "layers", widths, f->L + 1));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "strategy", f->strategy));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "fisher", f->fisher));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "run", f->run));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "checkpoint", f->checkpoint));
    CHECK(h5u_wattr_i64(ctx, path, file, "root", "step", f->step));
    CHECK(h5u_wattr_u64(ctx, path, file, "root", "weights_hash", f->weights_hash));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "data", f->data));
    CHECK(h5u_wattr_i64(ctx, path, file, "root", "examples", f->examples));
    CHECK(h5u_wattr_u64(ctx, path, file, "root", "seed", f->seed));
    CHECK(h5u_wattr_i64(ctx, path, file, "root", "samples", f->samples));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "damping", "auto: 0.1 x mean(lambda) per layer, unless given"));
    CHECK(h5u_wattr_str(ctx, path, file, "root", "infl_version_string", INFL_VERSION_STRING));
    for (int l = 0; l < f->L; l++) {
        char name[32], where[40];
        snprintf(name, sizeof name, "layer%d", l);
        snprintf(where, sizeof where, "/%s", name);
        g = H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        GOTO_IF(ctx, g < 0, INFL_E_IO, "%s: %s: cannot create the group", path, where);
        hsize_t ni = (hsize_t)f->widths[l] + 1, no = (hsize_t)f->widths[l + 1];
        CHECK(write_f64(ctx, path, g, where, "A_vecs", ni, ni, f->A_vecs[l]));
        CHECK(write_f64(ctx, path, g, where, "A_vals", ni, 0, f->A_vals[l]));
        CHECK(write_f64(ctx, path, g, where, "S_vecs", no, no, f->S_vecs[l]));
        CHECK(write_f64(ctx, path, g, where, "S_vals", no, 0, f->S_vals[l]));
        CHECK(write_f64(ctx, path, g, where, "lambda", no, ni, f->lambda[l]));
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
    herr_t e = H5Fclose(file);
    file = H5I_INVALID_HID;
    GOTO_IF(ctx, e < 0, INFL_E_IO, "%s: cannot finish writing %s", path, tmp);
    return infl_out_commit(ctx, tmp, path);
done:
    if (g >= 0) H5Gclose(g);
    if (file >= 0) H5Fclose(file);
    infl_out_abort(tmp);
    return rc;
}

infl_status store_factors_write(infl_ctx *ctx, const char *path, int force, const infl_factors *f) {
    h5u_lock();
    infl_status rc = write_impl(ctx, path, force, f);
    h5u_unlock();
    return rc;
}

// Reads float64 dataset `name` of shape (rows[, cols]) into v, checking finiteness.
static infl_status read_f64(infl_ctx *ctx, const char *path, hid_t g, const char *gwhere, const char *name,
                            hsize_t rows, hsize_t cols, double *v) {
    char where[96], expected[96];
    snprintf(where, sizeof where, "%s/%s", gwhere, name);
    if (cols)
        snprintf(expected, sizeof expected, "float64 [%llu, %llu]", (unsigned long long)rows,
                 (unsigned long long)cols);
    else
        snprintf(expected, sizeof expected, "float64 [%llu]", (unsigned long long)rows);
    int ty = h5u_obj_type(g, name);
    RETURN_IF(ctx, ty != H5O_TYPE_DATASET, INFL_E_FORMAT, "%s: %s: missing; expected %s", path, where, expected);
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    RETURN_IF(ctx, d < 0, INFL_E_FORMAT, "%s: %s: cannot open the dataset", path, where);
    infl_status rc = INFL_OK;
    h5u_dinfo di;
    GOTO_IF(ctx, h5u_dset_info(d, &di) < 0, INFL_E_FORMAT, "%s: %s: cannot read its type and shape", path, where);
    int ok = di.cls == H5T_FLOAT && di.size == 8 && di.rank == (cols ? 2 : 1) && di.dims[0] == rows &&
             (!cols || di.dims[1] == cols);
    GOTO_IF(ctx, !ok, INFL_E_SHAPE, "%s: %s: expected %s (the model's layer widths), found %s", path, where,
            expected, di.desc);
    GOTO_IF(ctx, H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0, INFL_E_FORMAT,
            "%s: %s: cannot read the values (damaged file?)", path, where);
    size_t n = (size_t)rows * (cols ? cols : 1);
    for (size_t i = 0; i < n; i++)
        GOTO_IF(ctx, !isfinite(v[i]), INFL_E_VALUE, "%s: %s entry %zu is %s; expected finite values", path, where, i,
                isnan(v[i]) ? "NaN" : "Inf");
done:
    H5Dclose(d);
    return rc;
}

static infl_status read_impl(infl_ctx *ctx, const char *path, infl_factors **out) {
    *out = NULL;
    hid_t file = H5I_INVALID_HID, g = H5I_INVALID_HID;
    infl_factors *f = NULL;
    infl_status rc = INFL_OK;
    FORWARD_IF_ERROR(h5u_open_infl(ctx, path, "factors", &file));
    int64_t w64[INFL_MAX_LAYERS + 1];
    int n = 0;
    CHECK(h5u_attr_ints(ctx, path, file, "root", "layers", 2, INFL_MAX_LAYERS + 1, w64, &n));
    int widths[INFL_MAX_LAYERS + 1];
    for (int l = 0; l < n; l++) {
        GOTO_IF(ctx, w64[l] < 1 || w64[l] > 16777216, INFL_E_FORMAT,
                "%s: attribute layers: width %d is %" PRId64 "; expected 1 to 16777216", path, l, w64[l]);
        widths[l] = (int)w64[l];
    }
    CHECK(infl_factors_alloc(ctx, n - 1, widths, &f));
    CHECK(h5u_attr_str(ctx, path, file, "root", "strategy", f->strategy, sizeof f->strategy));
    GOTO_IF(ctx, strcmp(f->strategy, "ekfac") && strcmp(f->strategy, "kfac") && strcmp(f->strategy, "diagonal") &&
                     strcmp(f->strategy, "identity"),
            INFL_E_FORMAT, "%s: attribute strategy is '%s'; expected ekfac, kfac, diagonal or identity", path,
            f->strategy);
    CHECK(h5u_attr_str(ctx, path, file, "root", "fisher", f->fisher, sizeof f->fisher));
    CHECK(h5u_attr_str(ctx, path, file, "root", "run", f->run, sizeof f->run));
    CHECK(h5u_attr_str(ctx, path, file, "root", "checkpoint", f->checkpoint, sizeof f->checkpoint));
    CHECK(h5u_attr_i64(ctx, path, file, "root", "step", &f->step));
    CHECK(h5u_attr_u64(ctx, path, file, "root", "weights_hash", &f->weights_hash));
    CHECK(h5u_attr_str(ctx, path, file, "root", "data", f->data, sizeof f->data));
    CHECK(h5u_attr_i64(ctx, path, file, "root", "examples", &f->examples));
    CHECK(h5u_attr_u64(ctx, path, file, "root", "seed", &f->seed));
    CHECK(h5u_attr_i64(ctx, path, file, "root", "samples", &f->samples));
    for (int l = 0; l < f->L; l++) {
        char name[32], where[40];
        snprintf(name, sizeof name, "layer%d", l);
        snprintf(where, sizeof where, "/%s", name);
        GOTO_IF(ctx, h5u_obj_type(file, name) != H5O_TYPE_GROUP, INFL_E_FORMAT,
                "%s: %s: missing; the factors have %d layers (attribute layers) and every layer needs its group",
                path, where, f->L);
        g = H5Gopen2(file, name, H5P_DEFAULT);
        GOTO_IF(ctx, g < 0, INFL_E_FORMAT, "%s: %s: cannot open the group", path, where);
        hsize_t ni = (hsize_t)f->widths[l] + 1, no = (hsize_t)f->widths[l + 1];
        CHECK(read_f64(ctx, path, g, where, "A_vecs", ni, ni, f->A_vecs[l]));
        CHECK(read_f64(ctx, path, g, where, "A_vals", ni, 0, f->A_vals[l]));
        CHECK(read_f64(ctx, path, g, where, "S_vecs", no, no, f->S_vecs[l]));
        CHECK(read_f64(ctx, path, g, where, "S_vals", no, 0, f->S_vals[l]));
        CHECK(read_f64(ctx, path, g, where, "lambda", no, ni, f->lambda[l]));
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
    *out = f;
    f = NULL;
done:
    if (g >= 0) H5Gclose(g);
    if (file >= 0) H5Fclose(file);
    infl_factors_free(f);
    return rc;
}

infl_status store_factors_read(infl_ctx *ctx, const char *path, infl_factors **out) {
    h5u_lock();
    infl_status rc = read_impl(ctx, path, out);
    h5u_unlock();
    return rc;
}
