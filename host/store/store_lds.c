/*
 * store_lds.c — the state file of `infl lds` (format "lds", schema version 1): the
 * settings of a linear-datamodeling run (run, queries, models, fraction, seed, output,
 * epochs, and a fingerprint of the run's weights and training) as root attributes,
 * /outputs float64 [models, M] (the retrained models' query outputs) and /done int32
 * [models]. Written whole under a temporary name and renamed, after every model.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "h5util.h"
#include "store.h"



infl_status store_lds_write(infl_ctx *ctx, const char *path, const infl_lds_state *s) {
    char tmp[4200];
    FORWARD_IF_ERROR(infl_out_begin(ctx, path, 1, tmp, sizeof tmp));
    h5u_lock();
    hid_t f = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    CHECK(h5u_create_infl(ctx, path, tmp, "lds", &f));
    CHECK(h5u_wattr_str(ctx, path, f, "root", "run", s->run));
    CHECK(h5u_wattr_str(ctx, path, f, "root", "query", s->query));
    CHECK(h5u_wattr_str(ctx, path, f, "root", "fingerprint", s->fingerprint));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "models", s->models));
    CHECK(h5u_wattr_f64(ctx, path, f, "root", "fraction", s->fraction));
    CHECK(h5u_wattr_u64(ctx, path, f, "root", "seed", s->seed));
    CHECK(h5u_wattr_str(ctx, path, f, "root", "output", s->output_margin ? "margin" : "loss"));
    CHECK(h5u_wattr_i64(ctx, path, f, "root", "epochs", s->epochs));
    CHECK(h5u_write_array(ctx, path, f, "", "outputs", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)s->models,
                          (hsize_t)s->M, s->outputs));
    CHECK(h5u_write_array(ctx, path, f, "", "done", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)s->models, 0, s->done));
    herr_t e = H5Fclose(f);
    f = H5I_INVALID_HID;
    GOTO_IF(ctx, e < 0, INFL_E_IO, "%s: cannot finish writing %s", path, tmp);
    rc = infl_out_commit(ctx, tmp, path);
    h5u_unlock();
    return rc;
done:
    if (f >= 0) H5Fclose(f);
    infl_out_abort(tmp);
    h5u_unlock();
    return rc;
}

infl_status store_lds_read(infl_ctx *ctx, const char *path, infl_lds_state *s) {
    h5u_lock();
    hid_t f = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    CHECK(h5u_open_infl(ctx, path, "lds", &f));
    char run[4096], query[4096], output[16], fp[512];
    int64_t models, epochs;
    double fraction;
    uint64_t seed;
    CHECK(h5u_attr_str(ctx, path, f, "root", "run", run, sizeof run));
    CHECK(h5u_attr_str(ctx, path, f, "root", "query", query, sizeof query));
    CHECK(h5u_attr_i64(ctx, path, f, "root", "models", &models));
    CHECK(h5u_attr_f64(ctx, path, f, "root", "fraction", &fraction));
    CHECK(h5u_attr_u64(ctx, path, f, "root", "seed", &seed));
    CHECK(h5u_attr_str(ctx, path, f, "root", "output", output, sizeof output));
    CHECK(h5u_attr_i64(ctx, path, f, "root", "epochs", &epochs));
    CHECK(h5u_attr_str(ctx, path, f, "root", "fingerprint", fp, sizeof fp));
    GOTO_IF(ctx, strcmp(fp, s->fingerprint) != 0, INFL_E_ARG,
            "%s: this state file was made for another model or training (%s; now %s): the run was retrained or "
            "replaced; use another --state, or --force to start afresh",
            path, fp, s->fingerprint);
    const char *what = strcmp(run, s->run)                                         ? "--run"
                       : strcmp(query, s->query)                                   ? "--query"
                       : models > s->models                                        ? "--models (smaller)"
                       : fraction != s->fraction                                   ? "--fraction"
                       : seed != s->seed                                           ? "--seed"
                       : strcmp(output, s->output_margin ? "margin" : "loss") != 0 ? "--output"
                       : epochs != s->epochs                                       ? "--epochs"
                                                                                   : NULL;
    GOTO_IF(ctx, what, INFL_E_ARG,
            "%s: this state file was made with another %s (run %s, query %s, %" PRId64 " models, fraction %g, seed "
            "%" PRIu64 ", output %s, epochs %" PRId64 "); use another --state, or --force to start afresh",
            path, what, run, query, models, fraction, seed, output, epochs);
    const char *names[2] = {"outputs", "done"};
    for (int i = 0; i < 2; i++) {
        GOTO_IF(ctx, h5u_obj_type(f, names[i]) != H5O_TYPE_DATASET, INFL_E_FORMAT, "%s: /%s: missing", path,
                names[i]);
        hid_t d = H5Dopen2(f, names[i], H5P_DEFAULT);
        h5u_dinfo di;
        // a state of fewer models grows: its rows fill the first ones (model k is keyed by k)
        int ok = d >= 0 && h5u_dset_info(d, &di) >= 0 && di.rank == (i ? 1 : 2) && di.dims[0] == (hsize_t)models &&
                 (i == 1 || di.dims[1] == (hsize_t)s->M);
        herr_t e = ok ? H5Dread(d, i ? H5T_NATIVE_INT32 : H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                i ? (void *)s->done : (void *)s->outputs)
                      : -1;
        if (d >= 0) H5Dclose(d);
        GOTO_IF(ctx, e < 0, INFL_E_FORMAT, "%s: /%s: expected [%d%s] values", path, names[i], (int)models,
                i ? "" : ", M");
    }
done:
    if (f >= 0) H5Fclose(f);
    h5u_unlock();
    return rc;
}

infl_status store_lds_is_state(infl_ctx *ctx, const char *path) {
    h5u_lock();
    hid_t f;
    infl_status rc = h5u_open_infl(ctx, path, "lds", &f);
    if (rc == INFL_OK) H5Fclose(f);
    h5u_unlock();
    return rc;
}
