/*
 * store_run.c — `run` files (DESIGN.md "Files"): a model's spec in /model and its
 * checkpoints in /checkpoints/NNNNNN, each holding the model's named parameter
 * tensors (core/spec.h: W0 [d1,d0], b0 [d1], ... for an MLP; wte, wpe, h0.ln_1.weight,
 * ... for a GPT) as float32 datasets, with attributes step, epoch, lr. The writer
 * (used by the trainers) goes to a temporary name; the reader validates the spec,
 * lists the checkpoints sorted by step and loads one into the flat parameter vector.
 * /model's attribute `kind` (mlp | gpt) says which spec follows; a run without it is
 * an MLP (files written before the GPT).
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700  // realpath
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"
#include "store.h"
#include "store_private.h"

static void close_if(hid_t id, herr_t (*fn)(hid_t)) {
    if (id >= 0) fn(id);
}

static const char *nonfinite_name(float v) {
    return isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
}

// Each public function that calls HDF5 is a thin wrapper holding the store lock
// (h5u_lock, h5util.h) around its *_impl body.

// ---- where the training data is: a relative path is found from the run file too ----

// The folder of a path into dst ("." for a bare name).
static void dir_of(char *dst, size_t size, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dst, size, ".");
    else if (slash == path) snprintf(dst, size, "/");
    else snprintf(dst, size, "%.*s", (int)(slash - path), path);
}

// dst = the canonical absolute path `file` written relative to the canonical absolute
// folder `dir` ("../data/x.h5"); -1 when it does not fit.
static int relative_to(char *dst, size_t size, const char *file, const char *dir) {
    // the longest folder of both: dir[0, common) is a folder of file
    size_t common = 0, dl = strlen(dir);
    if (strcmp(dir, "/") != 0)
        for (size_t i = 1; i <= dl; i++)
            if ((dir[i] == '/' || dir[i] == '\0') && strncmp(file, dir, i) == 0 && file[i] == '/') common = i;
    // one ".." per folder of dir below it, then the rest of file
    size_t at = 0;
    if (strcmp(dir, "/") != 0)
        for (const char *p = dir + common; *p; p++)
            if (*p == '/') {
                if (at + 4 > size) return -1;
                memcpy(dst + at, "../", 3);
                at += 3;
            }
    int n = snprintf(dst + at, size - at, "%s", file + common + 1);
    return n < 0 || (size_t)n >= size - at ? -1 : 0;
}

// The attribute data_from_run of a new run: the file of data_ref relative to the run
// file's folder (with the reference's split and range), so that the run finds its data
// from any current folder; "" when data_ref is absolute or either path cannot be resolved.
static void data_from_run(char *dst, size_t size, const char *run_path, const char *data_ref) {
    dst[0] = '\0';
    if (!data_ref || !*data_ref || data_ref[0] == '/') return;
    size_t flen = infl_dataref_file_len(data_ref);
    char file[4096], dir[4096], afile[PATH_MAX], adir[PATH_MAX], rel[4096];
    if (flen >= sizeof file) return;
    snprintf(file, sizeof file, "%.*s", (int)flen, data_ref);
    dir_of(dir, sizeof dir, run_path);
    if (!realpath(file, afile) || !realpath(dir, adir) || relative_to(rel, sizeof rel, afile, adir) != 0) return;
    snprintf(dst, size, "%s%s", rel, data_ref + flen);
}

// ---- writing ----

struct infl_runw {
    char path[4096];
    char tmp[4096 + 64];
    hid_t file, ckpts;
    infl_model_spec spec;
    int ntensors;
    infl_tensor tensors[INFL_MAX_TENSORS];
    char last[32];
    int count;
};

static infl_status store_run_create_impl(infl_ctx *ctx, const char *path, int force, const infl_model_spec *spec,
                                         const char *data_ref, const char *optimizer, uint64_t seed, infl_runw **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "store_run_create: out is NULL");
    *out = NULL;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no output file given");
    RETURN_IF(ctx, strlen(path) >= 4096, INFL_E_ARG, "%s: path too long", path);
    RETURN_IF(ctx, !spec, INFL_E_ARG, "%s: no model spec given", path);
    if (infl_spec_check(ctx, spec) < 0) {
        infl_errprefix(ctx, "%s: /model", path);
        return INFL_E_ARG;
    }
    infl_runw *w = infl_calloc(ctx, 1, sizeof *w, "a run writer");
    if (!w) return INFL_E_NOMEM;
    w->file = w->ckpts = H5I_INVALID_HID;
    w->spec = *spec;
    w->ntensors = infl_spec_tensors(spec, w->tensors, INFL_MAX_TENSORS);
    if (w->ntensors > INFL_MAX_TENSORS) {
        int n = w->ntensors;
        free(w);
        return infl_seterr(ctx, INFL_E_ARG, "%s: the model has %d parameter tensors; at most %d", path, n,
                           INFL_MAX_TENSORS);
    }
    snprintf(w->path, sizeof w->path, "%s", path);
    infl_status rc = infl_out_begin(ctx, path, force, w->tmp, sizeof w->tmp);
    if (rc < 0) {
        free(w);
        return rc;
    }
    hid_t model = H5I_INVALID_HID;
    CHECK(h5u_create_infl(ctx, path, w->tmp, "run", &w->file));
    model = H5Gcreate2(w->file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, model < 0, INFL_E_IO, "%s: /model: cannot create the group", path);
    CHECK(h5u_wattr_str(ctx, path, model, "/model", "kind", infl_model_kind_name(spec->kind)));
    if (spec->kind == INFL_MODEL_MLP) {
        const infl_mlp_spec *m = &spec->mlp;
        int32_t widths[INFL_MAX_LAYERS + 1];
        for (int l = 0; l <= m->L; l++) widths[l] = m->widths[l];
        CHECK(h5u_wattr_i32s(ctx, path, model, "/model", "layers", widths, m->L + 1));
        CHECK(h5u_wattr_str(ctx, path, model, "/model", "activation", infl_act_name(m->act)));
        CHECK(h5u_wattr_str(ctx, path, model, "/model", "loss", infl_loss_name(m->loss)));
        CHECK(h5u_wattr_f64(ctx, path, model, "/model", "weight_decay", m->wd));
    } else {
        const infl_gpt_spec *g = &spec->gpt;
        CHECK(h5u_wattr_i64(ctx, path, model, "/model", "n_layer", g->n_layer));
        CHECK(h5u_wattr_i64(ctx, path, model, "/model", "n_head", g->n_head));
        CHECK(h5u_wattr_i64(ctx, path, model, "/model", "dim", g->dim));
        CHECK(h5u_wattr_i64(ctx, path, model, "/model", "context", g->context));
        CHECK(h5u_wattr_i64(ctx, path, model, "/model", "vocab", g->vocab));
        CHECK(h5u_wattr_i64(ctx, path, model, "/model", "eot", g->eot));
        CHECK(h5u_wattr_str(ctx, path, model, "/model", "loss", "next_token_ce"));
        CHECK(h5u_wattr_f64(ctx, path, model, "/model", "weight_decay", g->wd));
    }
    CHECK(h5u_wattr_str(ctx, path, model, "/model", "data", data_ref ? data_ref : ""));
    {
        char rel[8300];
        data_from_run(rel, sizeof rel, path, data_ref);
        if (*rel) CHECK(h5u_wattr_str(ctx, path, model, "/model", "data_from_run", rel));
    }
    CHECK(h5u_wattr_str(ctx, path, model, "/model", "optimizer", optimizer ? optimizer : ""));
    CHECK(h5u_wattr_u64(ctx, path, model, "/model", "seed", seed));
    w->ckpts = H5Gcreate2(w->file, "checkpoints", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, w->ckpts < 0, INFL_E_IO, "%s: /checkpoints: cannot create the group", path);
done:
    close_if(model, H5Gclose);
    if (rc < 0) {
        store_run_abort(w);
        return rc;
    }
    *out = w;
    return INFL_OK;
}

infl_status store_run_create(infl_ctx *ctx, const char *path, int force, const infl_model_spec *spec,
                             const char *data_ref, const char *optimizer, uint64_t seed, infl_runw **out) {
    h5u_lock();
    infl_status rc = store_run_create_impl(ctx, path, force, spec, data_ref, optimizer, seed, out);
    return h5u_unlock_rc(ctx, rc);
}

// Writes a float32 dataset of rank 1 or 2 under loc from v.
static infl_status write_f32(infl_ctx *ctx, const char *path, hid_t loc, const char *where, const char *name,
                             int rank, const hsize_t *dims, const float *v) {
    return h5u_write_array(ctx, path, loc, where, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims[0],
                           rank == 2 ? dims[1] : 0, v);
}

static infl_status store_run_add_checkpoint_impl(infl_ctx *ctx, infl_runw *w, int64_t step, double epoch, double lr,
                                                 double grad_norm, const float *params) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_run_add_checkpoint: no writer");
    const char *path = w->path;
    RETURN_IF(ctx, !params, INFL_E_ARG, "%s: checkpoint at step %" PRId64 ": no parameters given", path, step);
    RETURN_IF(ctx, step < 0 || step > 999999999999LL, INFL_E_ARG,
              "%s: checkpoint step %" PRId64 ": expected 0 to 999999999999", path, step);
    RETURN_IF(ctx, !isfinite(epoch) || !isfinite(lr), INFL_E_ARG,
              "%s: checkpoint at step %" PRId64 ": epoch %g and lr %g must be finite", path, step, epoch, lr);
    char name[32], where[64];
    snprintf(name, sizeof name, "%06lld", (long long)step);
    snprintf(where, sizeof where, "/checkpoints/%s", name);
    int ex = h5u_obj_type(w->ckpts, name);
    RETURN_IF(ctx, ex != -1, INFL_E_ARG, "%s: %s: a checkpoint at step %" PRId64 " was already written", path, where,
              step);
    // Refuse to write weights that no reader would accept.
    for (int t = 0; t < w->ntensors; t++) {
        const infl_tensor *ts = &w->tensors[t];
        int64_t cols = ts->rank == 2 ? ts->dims[1] : 1, n = ts->dims[0] * cols;
        const float *v = params + ts->off;
        for (int64_t i = 0; i < n; i++) {
            if (isfinite(v[i])) continue;
            if (ts->rank == 2)
                return infl_seterr(ctx, INFL_E_VALUE, "%s: %s/%s row %" PRId64 " column %" PRId64 ": %s; not writing it",
                                   path, where, ts->name, i / cols, i % cols, nonfinite_name(v[i]));
            return infl_seterr(ctx, INFL_E_VALUE, "%s: %s/%s entry %" PRId64 ": %s; not writing it", path, where,
                               ts->name, i, nonfinite_name(v[i]));
        }
    }
    infl_status rc = INFL_OK;
    hid_t g = H5Gcreate2(w->ckpts, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, g < 0, INFL_E_IO, "%s: %s: cannot create the group", path, where);
    for (int t = 0; t < w->ntensors; t++) {
        const infl_tensor *ts = &w->tensors[t];
        hsize_t dims[2] = {(hsize_t)ts->dims[0], (hsize_t)ts->dims[1]};
        CHECK(write_f32(ctx, path, g, where, ts->name, ts->rank, dims, params + ts->off));
    }
    CHECK(h5u_wattr_i64(ctx, path, g, where, "step", step));
    CHECK(h5u_wattr_f64(ctx, path, g, where, "epoch", epoch));
    CHECK(h5u_wattr_f64(ctx, path, g, where, "lr", lr));
    if (isfinite(grad_norm)) CHECK(h5u_wattr_f64(ctx, path, g, where, "grad_norm", grad_norm));
    snprintf(w->last, sizeof w->last, "%s", name);
    w->count++;
done:
    close_if(g, H5Gclose);
    return rc;
}

infl_status store_run_add_checkpoint(infl_ctx *ctx, infl_runw *w, int64_t step, double epoch, double lr,
                                     double grad_norm, const float *params) {
    h5u_lock();
    infl_status rc = store_run_add_checkpoint_impl(ctx, w, step, epoch, lr, grad_norm, params);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status store_run_commit_impl(infl_ctx *ctx, infl_runw *w) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_run_commit: no writer");
    infl_status rc = INFL_OK;
    GOTO_IF(ctx, w->count == 0, INFL_E_ARG, "%s: no checkpoint was written; a run needs at least one", w->path);
    CHECK(h5u_wattr_str(ctx, w->path, w->ckpts, "/checkpoints", "final", w->last));
    herr_t e1 = H5Gclose(w->ckpts);
    w->ckpts = H5I_INVALID_HID;
    herr_t e2 = H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (e1 < 0 || e2 < 0) {
        char why[256];
        h5u_errmsg(why, sizeof why);
        GOTO_IF(ctx, 1, INFL_E_IO, "%s: cannot finish writing %s%s%s%s", w->path, w->tmp, why[0] ? " (" : "", why,
                why[0] ? ")" : "");
    }
    rc = infl_out_commit(ctx, w->tmp, w->path);
    free(w);
    return rc;
done:
    store_run_abort(w);
    return rc;
}

infl_status store_run_commit(infl_ctx *ctx, infl_runw *w) {
    h5u_lock();
    infl_status rc = store_run_commit_impl(ctx, w);
    return h5u_unlock_rc(ctx, rc);
}

static void store_run_abort_impl(infl_runw *w) {
    if (!w) return;
    close_if(w->ckpts, H5Gclose);
    close_if(w->file, H5Fclose);
    infl_out_abort(w->tmp);
    free(w);
}

void store_run_abort(infl_runw *w) {
    h5u_lock();
    store_run_abort_impl(w);
    h5u_unlock();
}

// ---- reading ----

struct infl_run {
    char path[4096];
    hid_t file;
    infl_model_spec spec;
    int ntensors;
    infl_tensor *tensors;  // (ntensors)
    infl_tokenizer tok;    // gpt: /model/tokenizer
    char data[4096];       // the training data reference, its file found (resolve_data), else as recorded
    char data_tried[8192]; // "" when found, else every path tried, for store_run_find_data
    int captured;          // a `captured` file (its infl_format), not a `run`
    char optimizer[64];
    uint64_t seed;
    int n, final_idx;
    infl_ckpt_info *ck;  // (n), sorted by step
};

// Finds the file of the run's recorded data reference r->data (from_run: the attribute
// data_from_run, or ""). The rule (README, "File formats"): the path as recorded (absolute,
// or from the current folder); for a relative one then, in the run file's folder, the path
// of data_from_run, the path as recorded and its file name alone. The first that exists
// replaces the file part of r->data; when none does, r->data stays as recorded and
// r->data_tried lists them.
static void resolve_data(infl_run *r, const char *from_run) {
    r->data_tried[0] = '\0';
    if (!r->data[0]) return;
    size_t flen = infl_dataref_file_len(r->data);
    char file[4096], dir[4096], cand[4][8300], rest[4096];
    if (flen >= sizeof file) return;
    snprintf(file, sizeof file, "%.*s", (int)flen, r->data);
    snprintf(rest, sizeof rest, "%s", r->data + flen);
    dir_of(dir, sizeof dir, r->path);
    int nc = 0;
    snprintf(cand[nc++], sizeof cand[0], "%s", file);
    if (file[0] != '/') {
        if (from_run && *from_run) snprintf(cand[nc++], sizeof cand[0], "%s/%.*s", dir, (int)infl_dataref_file_len(from_run), from_run);
        snprintf(cand[nc++], sizeof cand[0], "%s/%s", dir, file);
        const char *base = strrchr(file, '/');
        if (base) snprintf(cand[nc++], sizeof cand[0], "%s/%s", dir, base + 1);
    }
    for (int i = 0; i < nc; i++)
        if (access(cand[i], F_OK) == 0) {
            char found[sizeof r->data];
            int n = snprintf(found, sizeof found, "%s%s", cand[i], rest);
            if (i > 0 && n > 0 && (size_t)n < sizeof found) memcpy(r->data, found, (size_t)n + 1);
            return;
        }
    size_t at = 0;
    for (int i = 0; i < nc && at < sizeof r->data_tried; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= strcmp(cand[i], cand[j]) == 0;
        if (!dup)
            at += (size_t)snprintf(r->data_tried + at, sizeof r->data_tried - at, "%s%s%s", at ? ", " : "", cand[i],
                                   i == 0 ? (file[0] == '/' ? "" : " (from the current folder)") : "");
    }
}

static int ckpt_cmp(const void *a, const void *b) {
    const infl_ckpt_info *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    return strcmp(x->name, y->name);
}

// An integer attribute of /model within [lo, hi] into *v.
static infl_status model_int(infl_ctx *ctx, const char *path, hid_t g, const char *name, int64_t lo, int64_t hi,
                             int *v) {
    int64_t x;
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, path, g, "/model", name, &x));
    RETURN_IF(ctx, x < lo || x > hi, INFL_E_FORMAT, "%s: /model attribute %s is %" PRId64 "; expected %" PRId64
              " to %" PRId64, path, name, x, lo, hi);
    *v = (int)x;
    return INFL_OK;
}

static infl_status read_mlp(infl_ctx *ctx, const char *path, hid_t g, infl_mlp_spec *sp) {
    int64_t widths[INFL_MAX_LAYERS + 1];
    int n = 0;
    char s[64];
    FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, g, "/model", "layers", 2, INFL_MAX_LAYERS + 1, widths, &n));
    sp->L = n - 1;
    for (int l = 0; l < n; l++) {
        RETURN_IF(ctx, widths[l] < 1 || widths[l] > (1 << 24), INFL_E_FORMAT,
                  "%s: /model attribute layers: width %d is %" PRId64 "; expected 1 to 16777216", path, l, widths[l]);
        sp->widths[l] = (int)widths[l];
    }
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, g, "/model", "activation", s, sizeof s));
    RETURN_IF(ctx, infl_act_parse(s, &sp->act) != 0, INFL_E_FORMAT,
              "%s: /model attribute activation is '%s', expected relu, tanh or gelu", path, s);
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, g, "/model", "loss", s, sizeof s));
    RETURN_IF(ctx, infl_loss_parse(s, &sp->loss) != 0, INFL_E_FORMAT,
              "%s: /model attribute loss is '%s', expected softmax_ce, sigmoid_ce or mse", path, s);
    return h5u_attr_f64(ctx, path, g, "/model", "weight_decay", &sp->wd);
}

static infl_status read_gpt(infl_ctx *ctx, const char *path, hid_t g, infl_gpt_spec *sp) {
    FORWARD_IF_ERROR(model_int(ctx, path, g, "n_layer", 1, 60, &sp->n_layer));
    FORWARD_IF_ERROR(model_int(ctx, path, g, "n_head", 1, 16384, &sp->n_head));
    FORWARD_IF_ERROR(model_int(ctx, path, g, "dim", 1, 16384, &sp->dim));
    FORWARD_IF_ERROR(model_int(ctx, path, g, "context", 2, 65536, &sp->context));
    FORWARD_IF_ERROR(model_int(ctx, path, g, "vocab", 2, 1 << 20, &sp->vocab));
    FORWARD_IF_ERROR(model_int(ctx, path, g, "eot", 0, sp->vocab - 1, &sp->eot));
    return h5u_attr_f64(ctx, path, g, "/model", "weight_decay", &sp->wd);
}

// A captured model (the `captured` file, store.h): its layers from /model's d_in, d_out,
// bias and the dataset /model/names.
static infl_status read_captured(infl_ctx *ctx, const char *path, hid_t g, infl_captured_spec *sp) {
    int64_t v[INFL_MAX_LINEAR];
    int n = 0, nl = 0;
    const char *what[3] = {"d_in", "d_out", "bias"};
    int *dst[3] = {sp->d_in, sp->d_out, sp->bias};
    for (int k = 0; k < 3; k++) {
        FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, g, "/model", what[k], 1, INFL_MAX_LINEAR, v, &n));
        RETURN_IF(ctx, k > 0 && n != nl, INFL_E_FORMAT, "%s: /model attribute %s has %d entries but d_in has %d", path,
                  what[k], n, nl);
        nl = n;
        for (int l = 0; l < n; l++) {
            RETURN_IF(ctx, v[l] < (k == 2 ? 0 : 1) || v[l] > (k == 2 ? 1 : 1 << 24), INFL_E_FORMAT,
                      "%s: /model attribute %s: entry %d is %" PRId64 "; expected %s", path, what[k], l, v[l],
                      k == 2 ? "0 or 1" : "1 to 16777216");
            dst[k][l] = (int)v[l];
        }
    }
    sp->L = nl;
    FORWARD_IF_ERROR(model_int(ctx, path, g, "outputs", 0, 1 << 24, &sp->outputs));
    FORWARD_IF_ERROR(model_int(ctx, path, g, "tokens", 0, 1, &sp->tokens));
    sp->wd = 0;
    int has = h5u_has_attr(g, "weight_decay");
    RETURN_IF(ctx, has < 0, INFL_E_FORMAT, "%s: /model: cannot read its attributes", path);
    if (has) FORWARD_IF_ERROR(h5u_attr_f64(ctx, path, g, "/model", "weight_decay", &sp->wd));
    hid_t d;
    h5u_dinfo di;
    FORWARD_IF_ERROR(h5u_open_dset(ctx, path, g, "names", "/model/names", "a 1-D string array", H5P_DEFAULT,
                                   h5u_mem_bytes(), &d, &di));
    char(*names)[64] = infl_calloc(ctx, INFL_MAX_LINEAR, sizeof *names, "the layer names");
    int64_t count = 0;
    infl_status rc = names ? h5u_read_strings(ctx, path, d, "/model/names", names, INFL_MAX_LINEAR, &count)
                           : INFL_E_NOMEM;
    H5Dclose(d);
    if (rc == INFL_OK && count != nl)
        rc = infl_seterr(ctx, INFL_E_FORMAT, "%s: /model/names has %" PRId64 " names but /model/d_in %d layers", path,
                         count, nl);
    for (int l = 0; rc == INFL_OK && l < nl; l++) {
        if (strlen(names[l]) >= sizeof sp->names[l] || !names[l][0])
            rc = infl_seterr(ctx, INFL_E_FORMAT, "%s: /model/names entry %d ('%s'): expected 1 to %zu bytes", path, l,
                             names[l], sizeof sp->names[l] - 1);
        else
            snprintf(sp->names[l], sizeof sp->names[l], "%s", names[l]);
    }
    free(names);
    return rc;
}

static infl_status read_model(infl_ctx *ctx, infl_run *r) {
    const char *path = r->path;
    int ty = h5u_obj_type(r->file, "model");
    RETURN_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: /model: cannot read the link", path);
    RETURN_IF(ctx, ty != H5O_TYPE_GROUP, INFL_E_FORMAT,
              "%s: /model: missing; expected a group with the model's attributes", path);
    hid_t g = H5Gopen2(r->file, "model", H5P_DEFAULT);
    RETURN_IF(ctx, g < 0, INFL_E_FORMAT, "%s: /model: cannot open the group", path);
    infl_status rc = INFL_OK;
    infl_model_spec *sp = &r->spec;
    char kind[64] = "mlp", opt[64];
    uint64_t seed;
    int has = h5u_has_attr(g, "kind");
    GOTO_IF(ctx, has < 0, INFL_E_FORMAT, "%s: /model: cannot read its attributes", path);
    if (has) CHECK(h5u_attr_str(ctx, path, g, "/model", "kind", kind, sizeof kind));
    GOTO_IF(ctx, infl_model_kind_parse(kind, &sp->kind) != 0 || (sp->kind == INFL_MODEL_CAPTURED) != r->captured,
            INFL_E_FORMAT, "%s: /model attribute kind is '%s', expected %s", path, kind,
            r->captured ? "captured (the file's infl_format is captured)" : "mlp or gpt");
    if (sp->kind == INFL_MODEL_CAPTURED) {
        // gradients captured elsewhere: the file is its own training data (/train)
        CHECK(read_captured(ctx, path, g, &sp->cap));
        snprintf(r->data, sizeof r->data, "%.4080s:/train", path);
        snprintf(r->optimizer, sizeof r->optimizer, "unknown (captured)");
        goto checked;
    }
    if (sp->kind == INFL_MODEL_MLP)
        CHECK(read_mlp(ctx, path, g, &sp->mlp));
    else
        CHECK(read_gpt(ctx, path, g, &sp->gpt));
    CHECK(h5u_attr_str(ctx, path, g, "/model", "data", r->data, sizeof r->data));
    {
        char from_run[4096] = "";
        int hf = h5u_has_attr(g, "data_from_run");
        GOTO_IF(ctx, hf < 0, INFL_E_FORMAT, "%s: /model: cannot read its attributes", path);
        if (hf) CHECK(h5u_attr_str(ctx, path, g, "/model", "data_from_run", from_run, sizeof from_run));
        resolve_data(r, from_run);
    }
    CHECK(h5u_attr_str(ctx, path, g, "/model", "optimizer", opt, sizeof opt));
    snprintf(r->optimizer, sizeof r->optimizer, "%s", opt);
    CHECK(h5u_attr_u64(ctx, path, g, "/model", "seed", &seed));
    r->seed = seed;
checked:
    if (infl_spec_check(ctx, sp) < 0) {
        infl_errprefix(ctx, "%s: /model", path);
        rc = INFL_E_FORMAT;
        goto done;
    }
    if (sp->kind == INFL_MODEL_GPT) {
        GOTO_IF(ctx, h5u_obj_type(g, "tokenizer") != H5O_TYPE_GROUP, INFL_E_FORMAT,
                "%s: /model/tokenizer: missing; a gpt run keeps the tokenizer of its documents", path);
        CHECK(store_tok_read(ctx, path, r->file, "model/tokenizer", &r->tok));
        GOTO_IF(ctx, r->tok.vocab != sp->gpt.vocab || r->tok.eot != sp->gpt.eot, INFL_E_FORMAT,
                "%s: /model/tokenizer has %d tokens (end-of-text %d) but /model says vocab %d (eot %d)", path,
                r->tok.vocab, r->tok.eot, sp->gpt.vocab, sp->gpt.eot);
    }
    r->ntensors = infl_spec_tensors(sp, NULL, 0);
    GOTO_IF(ctx, r->ntensors > INFL_MAX_TENSORS, INFL_E_FORMAT, "%s: /model: %d parameter tensors; at most %d", path,
            r->ntensors, INFL_MAX_TENSORS);
    r->tensors = infl_calloc(ctx, (size_t)r->ntensors, sizeof *r->tensors, "the tensor list");
    GOTO_NOMEM_IF(!r->tensors);
    infl_spec_tensors(sp, r->tensors, r->ntensors);
done:
    H5Gclose(g);
    return rc;
}

static infl_status read_checkpoint_list(infl_ctx *ctx, infl_run *r) {
    const char *path = r->path;
    int ty = h5u_obj_type(r->file, "checkpoints");
    RETURN_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: /checkpoints: cannot read the link", path);
    RETURN_IF(ctx, ty != H5O_TYPE_GROUP, INFL_E_FORMAT, "%s: /checkpoints: missing; expected a group of checkpoints",
              path);
    infl_status rc = INFL_OK;
    char **names = NULL;
    int n = 0;
    hid_t c = H5Gopen2(r->file, "checkpoints", H5P_DEFAULT), g = H5I_INVALID_HID;
    GOTO_IF(ctx, c < 0, INFL_E_FORMAT, "%s: /checkpoints: cannot open the group", path);
    CHECK(h5u_list(ctx, path, c, "/checkpoints", &names, &n));
    GOTO_IF(ctx, n == 0, INFL_E_FORMAT, "%s: /checkpoints: no checkpoints", path);
    r->ck = infl_calloc(ctx, (size_t)n, sizeof *r->ck, "the checkpoint list");
    if (!r->ck) {
        rc = INFL_E_NOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        char where[320];
        snprintf(where, sizeof where, "/checkpoints/%.300s", names[i]);
        GOTO_IF(ctx, strlen(names[i]) >= sizeof r->ck[i].name, INFL_E_FORMAT,
                "%s: %s: checkpoint names are at most %zu characters", path, where, sizeof r->ck[i].name - 1);
        ty = h5u_obj_type(c, names[i]);
        GOTO_IF(ctx, ty != H5O_TYPE_GROUP, INFL_E_FORMAT, "%s: %s: expected a checkpoint group", path, where);
        g = H5Gopen2(c, names[i], H5P_DEFAULT);
        GOTO_IF(ctx, g < 0, INFL_E_FORMAT, "%s: %s: cannot open the group", path, where);
        infl_ckpt_info *ck = &r->ck[i];
        snprintf(ck->name, sizeof ck->name, "%s", names[i]);
        CHECK(h5u_attr_i64(ctx, path, g, where, "step", &ck->step));
        CHECK(h5u_attr_f64(ctx, path, g, where, "epoch", &ck->epoch));
        CHECK(h5u_attr_f64(ctx, path, g, where, "lr", &ck->lr));
        GOTO_IF(ctx, ck->step < 0, INFL_E_FORMAT, "%s: %s attribute step is %" PRId64 "; expected >= 0", path, where,
                ck->step);
        GOTO_IF(ctx, !isfinite(ck->epoch) || ck->epoch < 0, INFL_E_FORMAT,
                "%s: %s attribute epoch is %g; expected a finite number >= 0", path, where, ck->epoch);
        GOTO_IF(ctx, !isfinite(ck->lr), INFL_E_FORMAT, "%s: %s attribute lr is %g; expected a finite number", path,
                where, ck->lr);
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
    r->n = n;
    qsort(r->ck, (size_t)n, sizeof *r->ck, ckpt_cmp);
    r->final_idx = n - 1;
    int has = h5u_has_attr(c, "final");
    GOTO_IF(ctx, has < 0, INFL_E_FORMAT, "%s: /checkpoints: cannot read its attributes", path);
    if (has) {
        char fin[64];
        CHECK(h5u_attr_str(ctx, path, c, "/checkpoints", "final", fin, sizeof fin));
        int found = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(r->ck[i].name, fin) == 0) found = i;
        GOTO_IF(ctx, found < 0, INFL_E_FORMAT,
                "%s: /checkpoints attribute final names '%s', which is not a checkpoint (the last is %s)", path, fin,
                r->ck[n - 1].name);
        r->final_idx = found;
    }
done:
    close_if(g, H5Gclose);
    close_if(c, H5Gclose);
    h5u_list_free(names, n);
    return rc;
}

static infl_status load_checkpoint(infl_ctx *ctx, infl_run *r, int i, float *params);

static infl_status store_run_open_impl(infl_ctx *ctx, const char *path, infl_run **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "store_run_open: out is NULL");
    *out = NULL;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no run file given");
    RETURN_IF(ctx, strlen(path) >= 4096, INFL_E_ARG, "%s: path too long", path);
    infl_run *r = infl_calloc(ctx, 1, sizeof *r, "a run handle");
    if (!r) return INFL_E_NOMEM;
    r->file = H5I_INVALID_HID;
    snprintf(r->path, sizeof r->path, "%s", path);
    infl_status rc = INFL_OK;
    // a `captured` file (gradients recorded elsewhere) is a run too: its model and checkpoints
    CHECK(h5u_open_ro(ctx, path, &r->file));
    r->captured = h5u_format_is(ctx, path, r->file, "captured");
    CHECK(h5u_check_format(ctx, path, r->file, r->captured ? "captured" : "run"));
    CHECK(read_model(ctx, r));
    CHECK(read_checkpoint_list(ctx, r));
    // the model's size, which callers allocate, is believed only once the final
    // checkpoint's tensors bear it out (the others are checked as they are loaded)
    CHECK(load_checkpoint(ctx, r, r->final_idx, NULL));
done:
    if (rc < 0) {
        store_run_close(r);
        return rc;
    }
    *out = r;
    return INFL_OK;
}

infl_status store_run_open(infl_ctx *ctx, const char *path, infl_run **out) {
    h5u_lock();
    infl_status rc = store_run_open_impl(ctx, path, out);
    return h5u_unlock_rc(ctx, rc);
}

const infl_model_spec *store_run_spec(const infl_run *r) { return &r->spec; }
const char *store_run_data(const infl_run *r) { return r->data; }
infl_status store_run_find_data(infl_ctx *ctx, const infl_run *r, const char **ref) {
    *ref = r->data;
    RETURN_IF(ctx, !r->data[0], INFL_E_ARG, "%s: the run records no training data; give the data explicitly",
              r->path);
    RETURN_IF(ctx, r->data_tried[0], INFL_E_IO,
              "%s: its training data %s is not found; tried %s; give the data explicitly (rank, self: --train)",
              r->path, r->data, r->data_tried);
    return INFL_OK;
}
const infl_tokenizer *store_run_tokenizer(const infl_run *r) {
    return r->spec.kind == INFL_MODEL_GPT ? &r->tok : NULL;
}
const char *store_run_optimizer(const infl_run *r) { return r->optimizer; }
uint64_t store_run_seed(const infl_run *r) { return r->seed; }
int store_run_ncheckpoints(const infl_run *r) { return r ? r->n : 0; }
const infl_ckpt_info *store_run_checkpoint(const infl_run *r, int i) {
    return r && i >= 0 && i < r->n ? &r->ck[i] : NULL;
}
const char *store_run_path(const infl_run *r) { return r->path; }

infl_status store_run_find(infl_ctx *ctx, const infl_run *r, const char *name, int *index) {
    RETURN_IF(ctx, !r || !index, INFL_E_ARG, "store_run_find: no run or index");
    if (!name || !*name || strcmp(name, "final") == 0) {
        *index = r->final_idx;
        return INFL_OK;
    }
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->ck[i].name, name) == 0) {
            *index = i;
            return INFL_OK;
        }
    // A plain step number: "500" finds 000500.
    size_t len = strlen(name);
    if (len <= 18 && strspn(name, "0123456789") == len) {
        int64_t step = strtoll(name, NULL, 10);
        for (int i = 0; i < r->n; i++)
            if (r->ck[i].step == step) {
                *index = i;
                return INFL_OK;
            }
    }
    char have[512];
    size_t at = 0;
    have[0] = 0;
    int shown = r->n < 8 ? r->n : 8;
    for (int i = 0; i < shown && at < sizeof have; i++)
        at += (size_t)snprintf(have + at, sizeof have - at, "%s%s", i ? ", " : "", r->ck[i].name);
    if (r->n > shown && at < sizeof have)
        snprintf(have + at, sizeof have - at, ", ... %s (%d in all)", r->ck[r->n - 1].name, r->n);
    return infl_seterr(ctx, INFL_E_ARG, "%s: no checkpoint '%s'; available: %s, or final (%s)", r->path, name, have,
                       r->ck[r->final_idx].name);
}

// Opens float32 dataset `name` of group g, which must have the given shape (the
// model's, from /model): the shape is checked against the dataset's dims and what
// the file stores (h5u_open_dset) before anything is read.
static infl_status open_f32(infl_ctx *ctx, const char *path, hid_t g, const char *gwhere, const char *name, int rank,
                            const hsize_t *dims, hid_t *out) {
    char where[160], expected[96];
    snprintf(where, sizeof where, "%s/%s", gwhere, name);
    if (rank == 2)
        snprintf(expected, sizeof expected, "float32 [%llu, %llu]", (unsigned long long)dims[0],
                 (unsigned long long)dims[1]);
    else
        snprintf(expected, sizeof expected, "float32 [%llu]", (unsigned long long)dims[0]);
    hid_t d;
    h5u_dinfo di;
    FORWARD_IF_ERROR(h5u_open_dset(ctx, path, g, name, where, expected, H5P_DEFAULT, h5u_mem_bytes(), &d, &di));
    int shape_ok = di.rank == rank;
    for (int i = 0; shape_ok && i < rank; i++) shape_ok = di.dims[i] == dims[i];
    if (!h5u_is_f32(&di) || !shape_ok) {
        // "found [128, 255]" when only the shape differs, else the type too.
        const char *found = di.desc;
        if (h5u_is_f32(&di)) {
            const char *sp = strchr(di.desc, ' ');
            if (sp) found = sp + 1;
        }
        H5Dclose(d);
        return infl_seterr(ctx, INFL_E_SHAPE, "%s: %s: expected %s, found %s", path, where, expected, found);
    }
    *out = d;
    return INFL_OK;
}

// Reads float32 dataset `name` of group g, which must have the given shape, into v
// (NULL: only checks it, open_f32) and checks every value is finite.
static infl_status load_f32(infl_ctx *ctx, const char *path, hid_t g, const char *gwhere, const char *name, int rank,
                            const hsize_t *dims, float *v) {
    hid_t d = H5I_INVALID_HID;
    FORWARD_IF_ERROR(open_f32(ctx, path, g, gwhere, name, rank, dims, &d));
    infl_status rc = INFL_OK;
    if (!v) goto done;
    GOTO_IF(ctx, H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0, INFL_E_FORMAT,
            "%s: %s/%s: cannot read the values (damaged file?)", path, gwhere, name);
    size_t total = rank == 2 ? (size_t)(dims[0] * dims[1]) : (size_t)dims[0];
    for (size_t i = 0; i < total; i++) {
        if (isfinite(v[i])) continue;
        if (rank == 2)
            rc = infl_seterr(ctx, INFL_E_VALUE, "%s: %s/%s row %zu column %zu: %s", path, gwhere, name,
                             i / (size_t)dims[1], i % (size_t)dims[1], nonfinite_name(v[i]));
        else
            rc = infl_seterr(ctx, INFL_E_VALUE, "%s: %s/%s entry %zu: %s", path, gwhere, name, i,
                             nonfinite_name(v[i]));
        goto done;
    }
done:
    H5Dclose(d);
    return rc;
}

// Loads checkpoint i into params, or (params NULL) checks that its tensors have the
// model's shapes.
static infl_status load_checkpoint(infl_ctx *ctx, infl_run *r, int i, float *params) {
    RETURN_IF(ctx, i < 0 || i >= r->n, INFL_E_ARG, "%s: checkpoint index %d out of range (the run has %d)", r->path,
              i, r->n);
    char gwhere[64];
    snprintf(gwhere, sizeof gwhere, "/checkpoints/%s", r->ck[i].name);
    hid_t g = H5Gopen2(r->file, gwhere, H5P_DEFAULT);
    RETURN_IF(ctx, g < 0, INFL_E_FORMAT, "%s: %s: cannot open the group", r->path, gwhere);
    infl_status rc = INFL_OK;
    for (int t = 0; t < r->ntensors; t++) {
        const infl_tensor *ts = &r->tensors[t];
        hsize_t dims[2] = {(hsize_t)ts->dims[0], (hsize_t)ts->dims[1]};
        CHECK(load_f32(ctx, r->path, g, gwhere, ts->name, ts->rank, dims, params ? params + ts->off : NULL));
    }
done:
    H5Gclose(g);
    return rc;
}

infl_status store_run_load(infl_ctx *ctx, infl_run *r, int i, float *params) {
    RETURN_IF(ctx, !r || !params, INFL_E_ARG, "store_run_load: no run or parameter buffer");
    h5u_lock();
    infl_status rc = load_checkpoint(ctx, r, i, params);
    return h5u_unlock_rc(ctx, rc);
}

static void store_run_close_impl(infl_run *r) {
    if (!r) return;
    close_if(r->file, H5Fclose);
    free(r->ck);
    free(r->tensors);
    store_tok_clear(&r->tok);
    free(r);
}

void store_run_close(infl_run *r) {
    h5u_lock();
    store_run_close_impl(r);
    h5u_unlock();
}

// ---- the tokenizer of a gpt run ----

infl_status store_run_set_tokenizer(infl_ctx *ctx, infl_runw *w, const infl_tokenizer *t) {
    RETURN_IF(ctx, !w || !t, INFL_E_ARG, "store_run_set_tokenizer: no writer or tokenizer");
    RETURN_IF(ctx, w->spec.kind != INFL_MODEL_GPT || t->vocab != w->spec.gpt.vocab || t->eot != w->spec.gpt.eot,
              INFL_E_ARG, "%s: a tokenizer of %d tokens (end-of-text %d) for a %s model of vocabulary %d", w->path,
              t->vocab, t->eot, infl_model_kind_name(w->spec.kind), w->spec.gpt.vocab);
    h5u_lock();
    infl_status rc = store_tok_write(ctx, w->path, w->file, "model/tokenizer", t);
    return h5u_unlock_rc(ctx, rc);
}

// ---- optional root attributes ----

infl_status store_run_attr_f64(infl_ctx *ctx, infl_runw *w, const char *name, double v) {
    h5u_lock();
    infl_status rc = h5u_wattr_f64(ctx, w->path, w->file, "root", name, v);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_run_attr_str(infl_ctx *ctx, infl_runw *w, const char *name, const char *v) {
    h5u_lock();
    infl_status rc = h5u_wattr_str(ctx, w->path, w->file, "root", name, v);
    return h5u_unlock_rc(ctx, rc);
}

int store_run_get_f64(infl_run *r, const char *name, double *v) {
    infl_ctx scratch;  // for the detail of a failure nobody reads
    memset(&scratch, 0, sizeof scratch);
    h5u_lock();
    int ok = h5u_has_attr(r->file, name) == 1 && h5u_attr_f64(&scratch, r->path, r->file, "root", name, v) == INFL_OK;
    h5u_unlock();
    return ok;
}

int store_run_get_str(infl_run *r, const char *name, char *buf, size_t size) {
    infl_ctx scratch;
    memset(&scratch, 0, sizeof scratch);
    h5u_lock();
    int ok = h5u_has_attr(r->file, name) == 1 &&
             h5u_attr_str(&scratch, r->path, r->file, "root", name, buf, size) == INFL_OK;
    h5u_unlock();
    return ok;
}

// ---- lists of rows (the training's excluded rows) ----

infl_status store_run_write_rows(infl_ctx *ctx, infl_runw *w, const char *name, const int64_t *rows, int64_t n) {
    h5u_lock();
    infl_status rc = h5u_write_array(ctx, w->path, w->file, "", name, H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)n, 0,
                                     rows);
    h5u_unlock();
    return rc;
}

static infl_status store_run_read_rows_impl(infl_ctx *ctx, infl_run *r, const char *name, int64_t **rows,
                                            int64_t *n) {
    *rows = NULL;
    *n = 0;
    if (h5u_obj_type(r->file, name) == -1) return INFL_OK;
    char where[300];
    snprintf(where, sizeof where, "/%s", name);
    hid_t d;
    h5u_dinfo info;
    // read whole: its length is borne out by what the file stores and bounded by memory
    FORWARD_IF_ERROR(h5u_open_dset(ctx, r->path, r->file, name, where, "an int64 dataset [n]", H5P_DEFAULT,
                                   h5u_mem_bytes(), &d, &info));
    infl_status rc = INFL_OK;
    GOTO_IF(ctx, info.cls != H5T_INTEGER || info.size != 8 || info.rank != 1, INFL_E_FORMAT,
            "%s: %s: expected an int64 dataset [n], found %s", r->path, where, info.desc);
    *n = (int64_t)info.dims[0];
    *rows = infl_malloc(ctx, (size_t)(*n > 0 ? *n : 1) * sizeof(int64_t), "a list of rows");
    GOTO_NOMEM_IF(!*rows);
    GOTO_IF(ctx, *n > 0 && H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, *rows) < 0, INFL_E_FORMAT,
            "%s: /%s: cannot read it as int64", r->path, name);
done:
    H5Dclose(d);
    if (rc < 0) {
        free(*rows);
        *rows = NULL;
        *n = 0;
    }
    return rc;
}

infl_status store_run_read_rows(infl_ctx *ctx, infl_run *r, const char *name, int64_t **rows, int64_t *n) {
    h5u_lock();
    infl_status rc = store_run_read_rows_impl(ctx, r, name, rows, n);
    return h5u_unlock_rc(ctx, rc);
}
