/*
 * store_factors.c — `factors` files (schema version 1, DESIGN.md "Files"): the
 * EK-FAC factors of one checkpoint for the model's attributed linear layers (the
 * model seam's list), per layer /layerL/{A_vecs, A_vals, S_vecs, S_vals, lambda} in
 * float64, with the layers' names and shapes (root attributes d_in, d_out, bias and
 * the dataset /layer_names) and the run, checkpoint, weights hash, strategy, Fisher,
 * seed and examples seen, so `rank` can refuse factors that belong to another model.
 * Files written before the seam describe the layers by an MLP's width chain
 * (attribute `layers`, every layer with a bias); they are still read.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"

infl_status infl_factors_alloc(infl_ctx *ctx, int L, const infl_linear *layers, infl_factors **out) {
    *out = NULL;
    RETURN_IF(ctx, L < 1 || L > INFL_MAX_LINEAR, INFL_E_ARG, "factors of %d layers; expected 1 to %d", L,
              INFL_MAX_LINEAR);
    infl_factors *f = infl_calloc(ctx, 1, sizeof *f, "factors");
    if (!f) return INFL_E_NOMEM;
    f->L = L;
    for (int l = 0; l < L; l++) {
        f->layer[l] = layers[l];
        size_t ni = (size_t)infl_linear_ni(&layers[l]), no = (size_t)layers[l].d_out;
        f->A_vecs[l] = calloc(ni * ni, sizeof(double));
        f->A_vals[l] = calloc(ni, sizeof(double));
        f->S_vecs[l] = calloc(no * no, sizeof(double));
        f->S_vals[l] = calloc(no, sizeof(double));
        f->lambda[l] = calloc(no * ni, sizeof(double));
        if (!f->A_vecs[l] || !f->A_vals[l] || !f->S_vecs[l] || !f->S_vals[l] || !f->lambda[l]) {
            infl_factors_free(f);
            return infl_seterr(ctx, INFL_E_NOMEM, "out of memory for the factors of layer %d (%s)", l,
                               layers[l].name);
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
    {
        int32_t din[INFL_MAX_LINEAR], dout[INFL_MAX_LINEAR], bias[INFL_MAX_LINEAR];
        const char *names[INFL_MAX_LINEAR];
        for (int l = 0; l < f->L; l++) {
            din[l] = f->layer[l].d_in;
            dout[l] = f->layer[l].d_out;
            bias[l] = f->layer[l].bias;
            names[l] = f->layer[l].name;
        }
        CHECK(h5u_wattr_i32s(ctx, path, file, "root", "d_in", din, f->L));
        CHECK(h5u_wattr_i32s(ctx, path, file, "root", "d_out", dout, f->L));
        CHECK(h5u_wattr_i32s(ctx, path, file, "root", "bias", bias, f->L));
        CHECK(h5u_write_strings(ctx, path, file, "", "layer_names", names, f->L));
    }
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
        hsize_t ni = (hsize_t)infl_linear_ni(&f->layer[l]), no = (hsize_t)f->layer[l].d_out;
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
    return h5u_unlock_rc(ctx, rc);
}

// Opens float64 dataset `name` of group g, which must be [rows, cols] ([rows] when cols
// is 0): the widths the layer list claims, checked against the dataset's real dims
// and what the file stores (h5u_open_dset) before anything is allocated for them.
static infl_status open_f64(infl_ctx *ctx, const char *path, hid_t g, const char *gwhere, const char *name,
                            hsize_t rows, hsize_t cols, hid_t *out) {
    char where[96], expected[96];
    snprintf(where, sizeof where, "%s/%s", gwhere, name);
    if (cols)
        snprintf(expected, sizeof expected, "float64 [%llu, %llu]", (unsigned long long)rows,
                 (unsigned long long)cols);
    else
        snprintf(expected, sizeof expected, "float64 [%llu]", (unsigned long long)rows);
    h5u_dinfo di;
    hid_t d;
    FORWARD_IF_ERROR(h5u_open_dset(ctx, path, g, name, where, expected, H5P_DEFAULT, h5u_mem_bytes(), &d, &di));
    int ok = di.cls == H5T_FLOAT && di.size == 8 && di.rank == (cols ? 2 : 1) && di.dims[0] == rows &&
             (!cols || di.dims[1] == cols);
    if (!ok) {
        H5Dclose(d);
        return infl_seterr(ctx, INFL_E_SHAPE, "%s: %s: expected %s (the widths of the layer list), found %s", path,
                           where, expected, di.desc);
    }
    *out = d;
    return INFL_OK;
}

// Reads float64 dataset `name` of shape (rows[, cols]) into v (NULL: only checks its
// type and shape), checking finiteness.
static infl_status read_f64(infl_ctx *ctx, const char *path, hid_t g, const char *gwhere, const char *name,
                            hsize_t rows, hsize_t cols, double *v) {
    hid_t d = H5I_INVALID_HID;
    FORWARD_IF_ERROR(open_f64(ctx, path, g, gwhere, name, rows, cols, &d));
    infl_status rc = INFL_OK;
    if (!v) goto done;
    GOTO_IF(ctx, H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0, INFL_E_FORMAT,
            "%s: %s/%s: cannot read the values (damaged file?)", path, gwhere, name);
    size_t n = (size_t)rows * (cols ? cols : 1);
    for (size_t i = 0; i < n; i++)
        GOTO_IF(ctx, !isfinite(v[i]), INFL_E_VALUE, "%s: %s/%s entry %zu is %s; expected finite values", path, gwhere,
                name, i, isnan(v[i]) ? "NaN" : "Inf");
done:
    H5Dclose(d);
    return rc;
}

// The layer list: d_in, d_out, bias (int32 [L]) and /layer_names, or an older file's
// MLP width chain `layers` (every layer with a bias, named layer0, layer1, ...), into
// ly (INFL_MAX_LINEAR) and *L. Each width is bounded (h5u_claim); the datasets that
// back them are checked by read_layer_groups.
static infl_status read_layers(infl_ctx *ctx, const char *path, hid_t file, infl_linear *ly, int *L) {
    int64_t din[INFL_MAX_LINEAR + 1], dout[INFL_MAX_LINEAR], bias[INFL_MAX_LINEAR];
    *L = 0;
    int has = h5u_has_attr(file, "d_in");
    RETURN_IF(ctx, has < 0, INFL_E_FORMAT, "%s: cannot read the root attributes", path);
    char what[128];
    if (!has) {
        int n = 0;
        FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, file, "root", "layers", 2, INFL_MAX_LAYERS + 1, din, &n));
        *L = n - 1;
        for (int l = 0; l < *L; l++) {
            snprintf(ly[l].name, sizeof ly[l].name, "layer%d", l);
            dout[l] = din[l + 1];
            bias[l] = 1;
        }
    } else {
        int n1 = 0, n2 = 0, n3 = 0;
        FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, file, "root", "d_in", 1, INFL_MAX_LINEAR, din, &n1));
        FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, file, "root", "d_out", 1, INFL_MAX_LINEAR, dout, &n2));
        FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, file, "root", "bias", 1, INFL_MAX_LINEAR, bias, &n3));
        RETURN_IF(ctx, n1 != n2 || n1 != n3, INFL_E_FORMAT,
                  "%s: attributes d_in, d_out and bias have %d, %d and %d entries; expected one per layer", path, n1,
                  n2, n3);
        *L = n1;
        int64_t count = 0;
        hid_t d;
        h5u_dinfo di;
        FORWARD_IF_ERROR(h5u_open_dset(ctx, path, file, "layer_names", "/layer_names", "one name per layer",
                                       H5P_DEFAULT, h5u_mem_bytes(), &d, &di));
        char(*names)[64] = infl_calloc(ctx, (size_t)*L, sizeof *names, "the layer names");
        infl_status rc = names ? h5u_read_strings(ctx, path, d, "/layer_names", names, *L, &count) : INFL_E_NOMEM;
        H5Dclose(d);
        if (rc == INFL_OK && count != *L)
            rc = infl_seterr(ctx, INFL_E_FORMAT, "%s: /layer_names has %" PRId64 " names; expected %d", path, count,
                             *L);
        for (int l = 0; rc == INFL_OK && l < *L; l++) {
            snprintf(ly[l].name, sizeof ly[l].name, "%.47s", names[l]);
            snprintf(what, sizeof what, "attribute bias, entry %d", l);
            rc = h5u_claim(ctx, path, "root", what, bias[l], 0, 1);
        }
        free(names);
        FORWARD_IF_ERROR(rc);
    }
    for (int l = 0; l < *L; l++) {
        snprintf(what, sizeof what, "the input width of layer %d (%s)", l, ly[l].name);
        FORWARD_IF_ERROR(h5u_claim(ctx, path, "root", what, din[l], 1, 1 << 24));
        snprintf(what, sizeof what, "the output width of layer %d (%s)", l, ly[l].name);
        FORWARD_IF_ERROR(h5u_claim(ctx, path, "root", what, dout[l], 1, 1 << 24));
        ly[l].d_in = (int)din[l];
        ly[l].d_out = (int)dout[l];
        ly[l].bias = (int)bias[l];
    }
    return INFL_OK;
}

// Checks (f NULL) or reads (into f) every layer's group /layerL: its five datasets
// have the shapes the layer list claims.
static infl_status read_layer_groups(infl_ctx *ctx, const char *path, hid_t file, int L, const infl_linear *ly,
                                     infl_factors *f) {
    infl_status rc = INFL_OK;
    hid_t g = H5I_INVALID_HID;
    for (int l = 0; l < L; l++) {
        char name[32], where[40];
        snprintf(name, sizeof name, "layer%d", l);
        snprintf(where, sizeof where, "/%s", name);
        GOTO_IF(ctx, h5u_obj_type(file, name) != H5O_TYPE_GROUP, INFL_E_FORMAT,
                "%s: %s: missing; the factors have %d layers and every layer needs its group", path, where, L);
        g = H5Gopen2(file, name, H5P_DEFAULT);
        GOTO_IF(ctx, g < 0, INFL_E_FORMAT, "%s: %s: cannot open the group", path, where);
        hsize_t ni = (hsize_t)infl_linear_ni(&ly[l]), no = (hsize_t)ly[l].d_out;
        CHECK(read_f64(ctx, path, g, where, "A_vecs", ni, ni, f ? f->A_vecs[l] : NULL));
        CHECK(read_f64(ctx, path, g, where, "A_vals", ni, 0, f ? f->A_vals[l] : NULL));
        CHECK(read_f64(ctx, path, g, where, "S_vecs", no, no, f ? f->S_vecs[l] : NULL));
        CHECK(read_f64(ctx, path, g, where, "S_vals", no, 0, f ? f->S_vals[l] : NULL));
        CHECK(read_f64(ctx, path, g, where, "lambda", no, ni, f ? f->lambda[l] : NULL));
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
done:
    if (g >= 0) H5Gclose(g);
    return rc;
}

static infl_status read_impl(infl_ctx *ctx, const char *path, infl_factors **out) {
    *out = NULL;
    hid_t file = H5I_INVALID_HID;
    infl_factors *f = NULL;
    infl_status rc = INFL_OK;
    int L = 0;
    infl_linear *ly = infl_calloc(ctx, INFL_MAX_LINEAR, sizeof *ly, "the layer list");
    if (!ly) return INFL_E_NOMEM;
    CHECK(h5u_open_infl(ctx, path, "factors", &file));
    CHECK(read_layers(ctx, path, file, ly, &L));
    // the widths are believed (and allocated for) only once the datasets bear them out
    CHECK(read_layer_groups(ctx, path, file, L, ly, NULL));
    CHECK(infl_factors_alloc(ctx, L, ly, &f));
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
    CHECK(read_layer_groups(ctx, path, file, L, ly, f));
    *out = f;
    f = NULL;
done:
    if (file >= 0) H5Fclose(file);
    infl_factors_free(f);
    free(ly);
    return rc;
}

infl_status store_factors_read(infl_ctx *ctx, const char *path, infl_factors **out) {
    h5u_lock();
    infl_status rc = read_impl(ctx, path, out);
    return h5u_unlock_rc(ctx, rc);
}
