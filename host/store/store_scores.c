/*
 * store_scores.c — writing `scores` files (schema version 1): the top-k and
 * bottom-k per query, optionally the full score matrix [M, N] filled shard by shard
 * (chunked, so memory stays bounded by the shard), and self-influence vectors.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"

struct infl_scw {
    char path[4096];
    char tmp[4200];
    hid_t file, scores;
    int M, k;
    int64_t N;
};

static void close_id(hid_t id, herr_t (*fn)(hid_t)) {
    if (id >= 0) fn(id);
}

infl_status store_scores_create(infl_ctx *ctx, const char *path, int force, int M, int k, int64_t N, int full,
                                infl_scw **out) {
    *out = NULL;
    RETURN_IF(ctx, M < 1 || k < 0 || N < 1, INFL_E_ARG, "%s: scores of %d queries, k = %d, N = %" PRId64, path, M, k,
              N);
    RETURN_IF(ctx, strlen(path) >= 4096, INFL_E_ARG, "%s: path too long", path);
    infl_scw *w = infl_calloc(ctx, 1, sizeof *w, "a scores writer");
    if (!w) return INFL_E_NOMEM;
    w->file = w->scores = H5I_INVALID_HID;
    w->M = M;
    w->k = k;
    w->N = N;
    snprintf(w->path, sizeof w->path, "%s", path);
    h5u_lock();
    infl_status rc = infl_out_begin(ctx, path, force, w->tmp, sizeof w->tmp);
    if (rc < 0) {
        free(w);
        h5u_unlock();
        return rc;
    }
    CHECK(h5u_create_infl(ctx, path, w->tmp, "scores", &w->file));
    if (full) {
        hsize_t dims[2] = {(hsize_t)M, (hsize_t)N};
        // chunks of whole query rows by ~1 MiB of columns
        hsize_t cc = (hsize_t)(262144 / (M < 64 ? M : 64));
        if (cc > (hsize_t)N) cc = (hsize_t)N;
        if (cc < 1) cc = 1;
        hsize_t chunk[2] = {(hsize_t)(M < 64 ? M : 64), cc};
        hid_t sp = H5Screate_simple(2, dims, NULL);
        hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
        GOTO_IF(ctx, sp < 0 || pl < 0 || H5Pset_chunk(pl, 2, chunk) < 0, INFL_E_IO, "%s: /scores: cannot set up",
                path);
        w->scores = H5Dcreate2(w->file, "scores", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
        H5Sclose(sp);
        H5Pclose(pl);
        GOTO_IF(ctx, w->scores < 0, INFL_E_IO, "%s: /scores: cannot create float32 [%d, %" PRId64 "]", path, M, N);
    }
    h5u_unlock();
    *out = w;
    return INFL_OK;
done:
    store_scores_abort(w);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_scores_write_block(infl_ctx *ctx, infl_scw *w, const float *scores, int nb, int ld, int64_t col0) {
    RETURN_IF(ctx, w->scores < 0, INFL_E_ARG, "%s: /scores was not requested", w->path);
    RETURN_IF(ctx, col0 < 0 || nb < 0 || col0 + nb > w->N, INFL_E_ARG, "%s: /scores columns [%" PRId64 ", %" PRId64
              ") outside [0, %" PRId64 ")", w->path, col0, col0 + nb, w->N);
    if (nb == 0) return INFL_OK;
    h5u_lock();
    infl_status rc = INFL_OK;
    hid_t fs = H5Dget_space(w->scores), ms = H5I_INVALID_HID;
    hsize_t start[2] = {0, (hsize_t)col0}, count[2] = {(hsize_t)w->M, (hsize_t)nb};
    hsize_t mdims[2] = {(hsize_t)w->M, (hsize_t)ld}, mstart[2] = {0, 0};
    GOTO_IF(ctx, fs < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0, INFL_E_IO,
            "%s: /scores: cannot select columns", w->path);
    ms = H5Screate_simple(2, mdims, NULL);
    GOTO_IF(ctx, ms < 0 || H5Sselect_hyperslab(ms, H5S_SELECT_SET, mstart, NULL, count, NULL) < 0, INFL_E_IO,
            "%s: /scores: cannot set up the block", w->path);
    GOTO_IF(ctx, H5Dwrite(w->scores, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, scores) < 0, INFL_E_IO,
            "%s: /scores: cannot write columns [%" PRId64 ", %" PRId64 ")", w->path, col0, col0 + nb);
done:
    close_id(ms, H5Sclose);
    close_id(fs, H5Sclose);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status write_pair(infl_ctx *ctx, infl_scw *w, const char *group, const int64_t *idx, const float *score) {
    hid_t g = H5Gcreate2(w->file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    RETURN_IF(ctx, g < 0, INFL_E_IO, "%s: /%s: cannot create the group", w->path, group);
    char where[32];
    snprintf(where, sizeof where, "/%s", group);
    infl_status rc = h5u_write_array(ctx, w->path, g, where, "index", H5T_NATIVE_INT64, H5T_NATIVE_INT64, (hsize_t)w->M,
                                     (hsize_t)w->k, idx);
    if (rc == INFL_OK)
        rc = h5u_write_array(ctx, w->path, g, where, "score", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, (hsize_t)w->M,
                             (hsize_t)w->k, score);
    H5Gclose(g);
    return rc;
}

infl_status store_scores_write_topk(infl_ctx *ctx, infl_scw *w, const int64_t *top_idx, const float *top_score,
                                    const int64_t *bot_idx, const float *bot_score) {
    h5u_lock();
    infl_status rc = write_pair(ctx, w, "topk", top_idx, top_score);
    if (rc == INFL_OK) rc = write_pair(ctx, w, "bottomk", bot_idx, bot_score);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_scores_write_self(infl_ctx *ctx, infl_scw *w, const float *self, const int64_t *order, int64_t N) {
    h5u_lock();
    infl_status rc =
        h5u_write_array(ctx, w->path, w->file, "", "self", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, (hsize_t)N, 0, self);
    if (rc == INFL_OK)
        rc = h5u_write_array(ctx, w->path, w->file, "", "self_order", H5T_NATIVE_INT64, H5T_NATIVE_INT64, (hsize_t)N, 0,
                             order);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_scores_attr_str(infl_ctx *ctx, infl_scw *w, const char *name, const char *value) {
    h5u_lock();
    infl_status rc = h5u_wattr_str(ctx, w->path, w->file, "root", name, value ? value : "");
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_scores_attr_f64(infl_ctx *ctx, infl_scw *w, const char *name, double value) {
    h5u_lock();
    infl_status rc = h5u_wattr_f64(ctx, w->path, w->file, "root", name, value);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_scores_commit(infl_ctx *ctx, infl_scw *w) {
    h5u_lock();
    herr_t e1 = w->scores >= 0 ? H5Dclose(w->scores) : 0;
    w->scores = H5I_INVALID_HID;
    herr_t e2 = H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    infl_status rc;
    if (e1 < 0 || e2 < 0) {
        rc = infl_seterr(ctx, INFL_E_IO, "%s: cannot finish writing %s", w->path, w->tmp);
        infl_out_abort(w->tmp);
    } else {
        rc = infl_out_commit(ctx, w->tmp, w->path);
    }
    free(w);
    return h5u_unlock_rc(ctx, rc);
}

void store_scores_abort(infl_scw *w) {
    if (!w) return;
    h5u_lock();
    close_id(w->scores, H5Dclose);
    close_id(w->file, H5Fclose);
    infl_out_abort(w->tmp);
    free(w);
    h5u_unlock();
}

// ---- reading ----

struct infl_scr {
    char path[4096];
    hid_t file, scores;
    int M;
    int64_t N;
    char method[64], query[4096], train[4096];
    char sgd_variant[32];  // sgd-influence: replay | checkpoints
};

static infl_status scr_open(infl_ctx *ctx, const char *path, infl_scr **out) {
    *out = NULL;
    RETURN_IF(ctx, strlen(path) >= 4096, INFL_E_ARG, "%s: path too long", path);
    infl_scr *r = infl_calloc(ctx, 1, sizeof *r, "a scores reader");
    if (!r) return INFL_E_NOMEM;
    r->file = r->scores = H5I_INVALID_HID;
    snprintf(r->path, sizeof r->path, "%s", path);
    infl_status rc = INFL_OK;
    CHECK(h5u_open_infl(ctx, path, "scores", &r->file));
    h5u_dinfo di;
    CHECK(h5u_open_dset(ctx, path, r->file, "scores", "/scores",
                        "the full score matrix float32 [M, N] (infl rank -o FILE --save-scores)", H5P_DEFAULT,
                        UINT64_MAX, &r->scores, &di));
    GOTO_IF(ctx, !h5u_is_f32(&di) || di.rank != 2 || di.dims[0] < 1 || di.dims[1] < 1, INFL_E_FORMAT,
            "%s: /scores: expected float32 [M, N], found %s", path, di.desc);
    CHECK(h5u_claim(ctx, path, "/scores", "the number of queries M", (int64_t)di.dims[0], 1, INT_MAX));
    r->M = (int)di.dims[0];
    r->N = (int64_t)di.dims[1];
    const char *names[4] = {"method", "query", "train", "sgd_variant"};
    char *dst[4] = {r->method, r->query, r->train, r->sgd_variant};
    size_t sz[4] = {sizeof r->method, sizeof r->query, sizeof r->train, sizeof r->sgd_variant};
    for (int i = 0; i < 4; i++)
        if (h5u_has_attr(r->file, names[i]) == 1) CHECK(h5u_attr_str(ctx, path, r->file, "root", names[i], dst[i], sz[i]));
    *out = r;
    return INFL_OK;
done:
    if (r->scores >= 0) H5Dclose(r->scores);
    if (r->file >= 0) H5Fclose(r->file);
    free(r);
    return rc;
}

infl_status store_scores_open(infl_ctx *ctx, const char *path, infl_scr **out) {
    h5u_lock();
    infl_status rc = scr_open(ctx, path, out);
    return h5u_unlock_rc(ctx, rc);
}

void store_scores_shape(const infl_scr *r, int *M, int64_t *N) {
    *M = r->M;
    *N = r->N;
}

const char *store_scores_attr(const infl_scr *r, const char *name) {
    if (!strcmp(name, "method")) return r->method;
    if (!strcmp(name, "query")) return r->query;
    if (!strcmp(name, "train")) return r->train;
    if (!strcmp(name, "sgd_variant")) return r->sgd_variant;
    return "";
}

infl_status store_scores_read_cols(infl_ctx *ctx, infl_scr *r, int64_t col0, int64_t n, float *out) {
    RETURN_IF(ctx, col0 < 0 || n < 1 || col0 + n > r->N, INFL_E_ARG, "%s: /scores columns [%" PRId64 ", %" PRId64
              ") outside [0, %" PRId64 ")", r->path, col0, col0 + n, r->N);
    h5u_lock();
    infl_status rc = INFL_OK;
    hid_t fs = H5Dget_space(r->scores), ms = H5I_INVALID_HID;
    hsize_t start[2] = {0, (hsize_t)col0}, count[2] = {(hsize_t)r->M, (hsize_t)n};
    GOTO_IF(ctx, fs < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0, INFL_E_IO,
            "%s: /scores: cannot select columns", r->path);
    ms = H5Screate_simple(2, count, NULL);
    GOTO_IF(ctx, ms < 0 || H5Dread(r->scores, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out) < 0, INFL_E_IO,
            "%s: /scores: cannot read columns [%" PRId64 ", %" PRId64 ") (damaged file?)", r->path, col0, col0 + n);
done:
    close_id(ms, H5Sclose);
    close_id(fs, H5Sclose);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_scores_read_row(infl_ctx *ctx, infl_scr *r, int q, float *out) {
    RETURN_IF(ctx, q < 0 || q >= r->M, INFL_E_ARG, "%s: /scores row %d outside [0, %d)", r->path, q, r->M);
    h5u_lock();
    infl_status rc = INFL_OK;
    hid_t fs = H5Dget_space(r->scores), ms = H5I_INVALID_HID;
    hsize_t start[2] = {(hsize_t)q, 0}, count[2] = {1, (hsize_t)r->N};
    GOTO_IF(ctx, fs < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0, INFL_E_IO,
            "%s: /scores: cannot select row %d", r->path, q);
    ms = H5Screate_simple(2, count, NULL);
    GOTO_IF(ctx, ms < 0 || H5Dread(r->scores, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out) < 0, INFL_E_IO,
            "%s: /scores: cannot read row %d (damaged file?)", r->path, q);
done:
    close_id(ms, H5Sclose);
    close_id(fs, H5Sclose);
    return h5u_unlock_rc(ctx, rc);
}

void store_scores_close(infl_scr *r) {
    if (!r) return;
    h5u_lock();
    close_id(r->scores, H5Dclose);
    close_id(r->file, H5Fclose);
    h5u_unlock();
    free(r);
}
