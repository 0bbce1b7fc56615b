/*
 * store_shapley.c — the files of `infl shapley`: its state (format "shapley_state",
 * schema version 1: the fingerprint of the settings, the permutations done, /sum and
 * /sum2 float64 [n] of the marginal contributions, /snap_perms int64 [S] and
 * /snap_values float64 [S, n] the running means at the last rounds), rewritten whole
 * after every round; and its values (format "shapley", see store.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"

infl_status store_shapley_state_write(infl_ctx *ctx, const char *path, const infl_shapley_state *s) {
    char tmp[4200];
    FORWARD_IF_ERROR(infl_out_begin(ctx, path, 1, tmp, sizeof tmp));
    h5u_lock();
    hid_t f = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    CHECK(h5u_create_infl(ctx, path, tmp, "shapley_state", &f));
    CHECK(h5u_wattr_str(ctx, path, f, "root", "fingerprint", s->fingerprint));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "n", s->n));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "permutations", s->perms));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "truncated", s->truncated));
    CHECK(h5u_write_array(ctx, path, f, "", "sum", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)s->n, 0, s->sum));
    CHECK(h5u_write_array(ctx, path, f, "", "sum2", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)s->n, 0, s->sum2));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "snapshots", s->nsnap));
    if (s->nsnap > 0) {
        CHECK(h5u_write_array(ctx, path, f, "", "snap_perms", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)s->nsnap, 0,
                              s->snap_perms));
        CHECK(h5u_write_array(ctx, path, f, "", "snap_values", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)s->nsnap,
                              (hsize_t)s->n, s->snap_values));
    }
done:
    rc = h5u_finish_infl(ctx, path, tmp, f, rc);
    h5u_unlock();
    return rc;
}

// Opens dataset `name` of f (its shape checked against what is stored, h5u_open_dset) and
// checks that it holds exactly `count` values: *out the open dataset.
static infl_status open_exact(infl_ctx *ctx, const char *path, hid_t f, const char *name, hsize_t count, hid_t *out) {
    char where[64];
    snprintf(where, sizeof where, "/%s", name);
    h5u_dinfo di;
    FORWARD_IF_ERROR(h5u_open_dset(ctx, path, f, name, where, "a dataset of the state", H5P_DEFAULT, h5u_mem_bytes(),
                                   out, &di));
    hsize_t have = 1;
    for (int i = 0; i < di.rank; i++) have *= di.dims[i];
    if (have != count) {
        H5Dclose(*out);
        *out = H5I_INVALID_HID;
        return infl_seterr(ctx, INFL_E_FORMAT, "%s: /%s is %s: expected %llu values", path, name, di.desc,
                           (unsigned long long)count);
    }
    return INFL_OK;
}

// Reads dataset `name` of f, which must hold exactly `count` values of mem_type.
static infl_status read_exact(infl_ctx *ctx, const char *path, hid_t f, const char *name, hid_t mem_type,
                              hsize_t count, void *out) {
    hid_t d;
    FORWARD_IF_ERROR(open_exact(ctx, path, f, name, count, &d));
    herr_t e = H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(d);
    RETURN_IF(ctx, e < 0, INFL_E_FORMAT, "%s: /%s: cannot read %llu values", path, name, (unsigned long long)count);
    return INFL_OK;
}

infl_status store_shapley_state_read(infl_ctx *ctx, const char *path, infl_shapley_state *s) {
    h5u_lock();
    hid_t f = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    int64_t *sp = NULL;
    double *sv = NULL;
    CHECK(h5u_open_infl(ctx, path, "shapley_state", &f));
    char fp[sizeof s->fingerprint];
    int64_t n, perms, trunc, nsnap;
    CHECK(h5u_attr_str(ctx, path, f, "root", "fingerprint", fp, sizeof fp));
    GOTO_IF(ctx, strcmp(fp, s->fingerprint) != 0, INFL_E_ARG,
            "%s: this state was made with other settings (%s; now %s); use another --state, or --force to start "
            "afresh",
            path, fp, s->fingerprint);
    CHECK(h5u_attr_i64(ctx, path, f, "root", "n", &n));
    GOTO_IF(ctx, n != s->n, INFL_E_FORMAT, "%s: attribute n is %" PRId64 "; expected %" PRId64, path, n, s->n);
    CHECK(h5u_attr_i64(ctx, path, f, "root", "permutations", &perms));
    CHECK(h5u_attr_i64(ctx, path, f, "root", "truncated", &trunc));
    CHECK(h5u_attr_i64(ctx, path, f, "root", "snapshots", &nsnap));
    GOTO_IF(ctx, perms < 0 || trunc < 0 || nsnap < 0 || nsnap > 1000000, INFL_E_FORMAT,
            "%s: permutations %" PRId64 ", truncated %" PRId64 ", snapshots %" PRId64 ": expected counts >= 0", path,
            perms, trunc, nsnap);
    s->perms = perms;
    s->truncated = trunc;
    CHECK(read_exact(ctx, path, f, "sum", H5T_NATIVE_DOUBLE, (hsize_t)n, s->sum));
    CHECK(read_exact(ctx, path, f, "sum2", H5T_NATIVE_DOUBLE, (hsize_t)n, s->sum2));
    s->nsnap = 0;
    if (nsnap > 0) {
        // the sizes the attributes claim, against the datasets as stored, before allocating
        hid_t d;
        CHECK(open_exact(ctx, path, f, "snap_perms", (hsize_t)nsnap, &d));
        H5Dclose(d);
        CHECK(open_exact(ctx, path, f, "snap_values", (hsize_t)nsnap * (hsize_t)n, &d));
        H5Dclose(d);
        sp = infl_malloc(ctx, (size_t)nsnap * sizeof(int64_t), "snapshots");
        sv = infl_malloc(ctx, (size_t)nsnap * n * sizeof(double), "snapshots");
        GOTO_NOMEM_IF(!sp || !sv);
        CHECK(read_exact(ctx, path, f, "snap_perms", H5T_NATIVE_INT64, (hsize_t)nsnap, sp));
        CHECK(read_exact(ctx, path, f, "snap_values", H5T_NATIVE_DOUBLE, (hsize_t)nsnap * n, sv));
        int64_t first = nsnap > s->cap ? nsnap - s->cap : 0;  // the newest cap of them
        for (int64_t k = first; k < nsnap; k++, s->nsnap++) {
            s->snap_perms[s->nsnap] = sp[k];
            memcpy(s->snap_values + (size_t)s->nsnap * n, sv + (size_t)k * n, (size_t)n * sizeof(double));
        }
    }
done:
    free(sp);
    free(sv);
    if (f >= 0) H5Fclose(f);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_shapley_is_state(infl_ctx *ctx, const char *path) {
    return h5u_is_infl(ctx, path, "shapley_state");
}

infl_status store_shapley_write(infl_ctx *ctx, const char *path, int force, const infl_shapley_result *r,
                                const char *const (*attrs)[2], int nattrs) {
    char tmp[4200];
    FORWARD_IF_ERROR(infl_out_begin(ctx, path, force, tmp, sizeof tmp));
    int64_t *index = malloc((size_t)r->n * sizeof(int64_t)), *order = malloc((size_t)r->n * sizeof(int64_t));
    if (!index || !order) {
        free(index);
        free(order);
        return infl_seterr(ctx, INFL_E_NOMEM, "out of memory for %" PRId64 " indices", r->n);
    }
    for (int64_t i = 0; i < r->n; i++) {
        index[i] = r->begin + i;
        order[i] = r->begin + r->order[i];
    }
    h5u_lock();
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    const hsize_t n = (hsize_t)r->n;
    CHECK(h5u_create_infl(ctx, path, tmp, "shapley", &f));
    for (int a = 0; a < nattrs; a++) CHECK(h5u_wattr_str(ctx, path, f, "root", attrs[a][0], attrs[a][1]));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "permutations", r->permutations));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "u_all", r->u_all));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "u_empty", r->u_empty));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "sum", r->sum));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "convergence", r->convergence));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "recall_10", r->recall[0]));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "recall_20", r->recall[1]));
    CHECK(h5u_write_array(ctx, path, f, "", "values", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, r->values));
    CHECK(h5u_write_array(ctx, path, f, "", "se", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, r->se));
    CHECK(h5u_write_array(ctx, path, f, "", "index", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, index));
    CHECK(h5u_write_array(ctx, path, f, "", "label", H5T_STD_I32LE, H5T_NATIVE_INT32, n, 0, r->label));
    CHECK(h5u_write_array(ctx, path, f, "", "order", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, order));
    if (r->flipped)
        CHECK(h5u_write_array(ctx, path, f, "", "flipped", H5T_STD_I32LE, H5T_NATIVE_INT32, n, 0, r->flipped));
    if (r->curve_points > 0) {
        g = H5Gcreate2(f, "curves", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        GOTO_IF(ctx, g < 0, INFL_E_IO, "%s: cannot create /curves", path);
        const char *names[4] = {"fraction", "high", "low", "random"};
        const double *v[4] = {r->curve_fraction, r->curve_high, r->curve_low, r->curve_random};
        for (int c = 0; c < 4; c++)
            CHECK(h5u_write_array(ctx, path, g, "/curves", names[c], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                                  (hsize_t)r->curve_points, 0, v[c]));
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
done:
    if (g >= 0) H5Gclose(g);
    rc = h5u_finish_infl(ctx, path, tmp, f, rc);
    h5u_unlock();
    free(index);
    free(order);
    return rc;
}
