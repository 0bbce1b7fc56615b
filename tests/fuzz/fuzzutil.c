/*
 * fuzzutil.c — the byte reader and writer, the process's context, temporary files
 * and the after-call checks of fuzzutil.h.
 */
#define _GNU_SOURCE
#include "fuzzutil.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

// ---- reading ----

uint8_t fz_u8(fz_in *in) { return in->at < in->n ? in->p[in->at++] : 0; }

uint64_t fz_var(fz_in *in) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        uint8_t b = fz_u8(in);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) break;
    }
    return v;
}

size_t fz_take(fz_in *in, void *dst, size_t n) {
    size_t k = fz_left(in) < n ? fz_left(in) : n;
    if (k) memcpy(dst, in->p + in->at, k);
    if (n > k) memset((uint8_t *)dst + k, 0, n - k);
    in->at += k;
    return k;
}

// ---- writing ----

void fz_put(fz_out *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->n + n) cap *= 2;
        uint8_t *q = realloc(o->p, cap);
        if (!q) abort();
        o->p = q;
        o->cap = cap;
    }
    if (n) memcpy(o->p + o->n, p, n);
    o->n += n;
}

void fz_put_u8(fz_out *o, uint8_t v) { fz_put(o, &v, 1); }

void fz_put_var(fz_out *o, uint64_t v) {
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        fz_put_u8(o, (uint8_t)(b | (v ? 0x80 : 0)));
    } while (v);
}

void fz_out_free(fz_out *o) {
    free(o->p);
    memset(o, 0, sizeof *o);
}

// ---- the process ----

// HDF5 ids that H5Fget_obj_count does not count (it counts those of files: datasets,
// groups, named types, attributes): dataspaces, datatypes and property lists. Their
// counts after a warm-up that touches every interface a reader uses are the baseline;
// more after a harness call is a leaked id.
static const H5I_type_t id_types[] = {H5I_DATASPACE, H5I_DATATYPE, H5I_GENPROP_LST};
static const char *const id_names[] = {"dataspace", "datatype", "property list"};
#define N_ID_TYPES (int)(sizeof id_types / sizeof id_types[0])
static hsize_t id_base[N_ID_TYPES];

static void h5_warm_up(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 16, 0);
    hid_t f = H5Fcreate("warm-up.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    hsize_t n = 4, maxd = H5S_UNLIMITED;
    hid_t s = H5Screate_simple(1, &n, &maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &n);
    H5Pset_deflate(dcpl, 1);
    hid_t d = H5Dcreate2(f, "d", H5T_STD_I32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int32_t v[4] = {1, 2, 3, 4};
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    hid_t as = H5Screate(H5S_SCALAR), a = H5Acreate2(d, "a", st, as, H5P_DEFAULT, H5P_DEFAULT);
    const char *text = "x";
    H5Awrite(a, st, &text);
    H5Aclose(a);
    H5Sclose(as);
    H5Tclose(st);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    H5Fclose(f);
    H5Pclose(fapl);
    for (int i = 0; i < N_ID_TYPES; i++) H5Inmembers(id_types[i], &id_base[i]);
}

infl_ctx *fz_ctx(void) {
    static infl_ctx *ctx;
    if (!ctx) {
        infl_ctx_options o = infl_ctx_options_default();
        o.backend = "cpu";
        o.threads = 1;
        if (infl_ctx_create(&o, &ctx) != INFL_OK) {
            fprintf(stderr, "fuzz: cannot create a CPU context: %s\n", infl_ctx_error(ctx));
            abort();
        }
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        h5_warm_up();
    }
    return ctx;
}

const char *fz_tmp(const char *name) {
    static char buf[4096];
    struct stat st;
    const char *dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                          ? "/dev/shm"
                          : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(buf, sizeof buf, "%s/infl-fuzz-%ld-%s", dir, (long)getpid(), name);
    return buf;
}

void fz_write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

typedef struct {
    size_t cap, n;
} sink;

static ssize_t sink_write(void *c, const char *buf, size_t size) {
    (void)buf;
    sink *s = c;
    s->n += size;
    if (s->n > s->cap) {
        fprintf(stderr, "fuzz: output blow-up: more than %zu bytes written\n", s->cap);
        abort();
    }
    return (ssize_t)size;
}

static int sink_close(void *c) {
    free(c);
    return 0;
}

FILE *fz_sink(size_t cap) {
    sink *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->cap = cap;
    cookie_io_functions_t io = {.read = NULL, .write = sink_write, .seek = NULL, .close = sink_close};
    FILE *f = fopencookie(s, "w", io);
    if (!f) abort();
    return f;
}

void fz_before(infl_ctx *ctx) { ctx->detail[0] = 0; }

void fz_after(infl_ctx *ctx, infl_status rc, const char *call) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("INFL_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "%s: %s %s\n", call, infl_status_name(rc), rc < 0 ? infl_ctx_error(ctx) : "");
    if (rc < 0 && !infl_ctx_error(ctx)[0]) {
        fprintf(stderr, "fuzz: %s failed (%s) without a detail\n", call, infl_status_name(rc));
        abort();
    }
}

void fz_check_closed(const char *after) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n != 0) {
        fprintf(stderr, "fuzz: %zd HDF5 objects left open after %s\n", n, after);
        abort();
    }
    for (int i = 0; i < N_ID_TYPES; i++) {
        hsize_t m = 0;
        H5Inmembers(id_types[i], &m);
        if (m > id_base[i]) {
            fprintf(stderr, "fuzz: %llu HDF5 %s ids left open after %s\n", (unsigned long long)(m - id_base[i]),
                    id_names[i], after);
            abort();
        }
    }
}

void fuzz_lds_settings(infl_lds_state *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->run, sizeof s->run, "run.h5");
    snprintf(s->query, sizeof s->query, "fm.h5:/test[0:3]");
    snprintf(s->fingerprint, sizeof s->fingerprint, "fuzz");
    s->models = 4;
    s->M = 3;
    s->output_margin = 0;
    s->epochs = 1;
    s->fraction = 0.5;
    s->seed = 7;
}
