/*
 * h5util.c — the HDF5 layer under the store (see h5util.h): files, attributes,
 * string arrays, listings, and types and shapes as text for error messages.
 * Every H5* call is checked (< 0) and turned into an infl status naming the file
 * and the object; ids are closed in reverse order at one `done:` label.
 */
#define _POSIX_C_SOURCE 200809L
#include "h5util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- the store lock ----

// The one piece of global mutable state in infl, and on purpose: HDF5's library state
// (open ids, the error stack, caches) is process-wide, and an HDF5 built without
// --enable-threadsafe has no lock of its own, so the lock that guards it must be
// process-wide too (with a thread-safe HDF5 it costs one uncontended lock a call).
// Taken by every public store_* function that calls HDF5, from entry to return;
// recursive so that those functions may call one another.
static pthread_once_t h5u_lock_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t h5u_mutex;

static void h5u_lock_init(void) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&h5u_mutex, &a);
    pthread_mutexattr_destroy(&a);
}

// HDF5 built thread-safe (as Debian's is, despite the name "serial") keeps its error
// stack and the auto-print setting per thread. So infl_ctx_create's silencing covers
// only its own thread: each outermost store call sets this thread's handler to
// on_h5_error (below) instead, so HDF5 never prints on any thread (its errors reach us
// as statuses). And a thread that exits with records on its error stack leaks them:
// the outermost unlock clears the stack once the store call has turned it into a
// status and a detail.
static _Thread_local int h5u_depth;     // nesting of h5u_lock on this thread
static _Thread_local int h5u_checksum;  // a failing HDF5 call met a checksum mismatch

// "incorrect metadata checksum after all read attempts", "data error detected by
// Fletcher32 checksum": HDF5's words for damage that its checksums caught.
static herr_t find_checksum(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    if (e && e->desc && strstr(e->desc, "checksum")) *(int *)data = 1;
    return 0;
}

// HDF5 calls this (instead of printing) when one of its API calls fails, before the
// next call clears the stack: it remembers whether a checksum caught damage.
static herr_t on_h5_error(hid_t estack, void *data) {
    (void)data;
    int found = 0;
    H5Ewalk2(estack, H5E_WALK_UPWARD, find_checksum, &found);
    if (found) h5u_checksum = 1;
    return 0;
}

void h5u_lock(void) {
    pthread_once(&h5u_lock_once, h5u_lock_init);
    pthread_mutex_lock(&h5u_mutex);
    if (h5u_depth++ == 0) {
        H5Eset_auto2(H5E_DEFAULT, on_h5_error, NULL);
        h5u_checksum = 0;
    }
}

void h5u_unlock(void) {
    if (--h5u_depth == 0) {
        H5Eclear2(H5E_DEFAULT);
        // silent again between store calls: HDF5 1.10 prints "infinite loop closing
        // library" at exit when a handler is set and a damaged object header has left
        // its free lists unbalanced
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    }
    pthread_mutex_unlock(&h5u_mutex);
}

infl_status h5u_unlock_rc(infl_ctx *ctx, infl_status rc) {
    if (h5u_depth == 1 && rc < 0 && h5u_checksum && ctx && !strstr(ctx->detail, "checksum"))
        infl_errprefix(ctx, "damaged file: an HDF5 checksum does not match (the file was changed or corrupted after "
                            "it was written)");
    if (h5u_depth == 1) h5u_checksum = 0;
    h5u_unlock();
    return rc;
}

// Closes an id of any kind when it is valid (for `done:` labels).
static void close_id(hid_t id) {
    if (id < 0) return;
    switch (H5Iget_type(id)) {
    case H5I_FILE: H5Fclose(id); break;
    case H5I_GROUP: H5Gclose(id); break;
    case H5I_DATASET: H5Dclose(id); break;
    case H5I_ATTR: H5Aclose(id); break;
    case H5I_DATATYPE: H5Tclose(id); break;
    case H5I_DATASPACE: H5Sclose(id); break;
    case H5I_GENPROP_LST: H5Pclose(id); break;
    default: break;
    }
}

// ---- types and shapes as text ----

void h5u_type_str(hid_t t, char *buf, size_t size) {
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    switch (c) {
    case H5T_INTEGER:
        snprintf(buf, size, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", sz * 8);
        break;
    case H5T_FLOAT: snprintf(buf, size, "float%zu", sz * 8); break;
    case H5T_STRING:
        if (H5Tis_variable_str(t) > 0)
            snprintf(buf, size, "string (variable length)");
        else
            snprintf(buf, size, "string (%zu bytes)", sz);
        break;
    case H5T_COMPOUND: snprintf(buf, size, "compound"); break;
    case H5T_ENUM: snprintf(buf, size, "enum"); break;
    case H5T_ARRAY: snprintf(buf, size, "array"); break;
    case H5T_VLEN: snprintf(buf, size, "variable-length sequence"); break;
    case H5T_OPAQUE: snprintf(buf, size, "opaque"); break;
    case H5T_REFERENCE: snprintf(buf, size, "reference"); break;
    case H5T_BITFIELD: snprintf(buf, size, "bitfield"); break;
    case H5T_TIME: snprintf(buf, size, "time"); break;
    default: snprintf(buf, size, "unknown type"); break;
    }
}

void h5u_shape_str(hid_t space, char *buf, size_t size) {
    H5S_class_t c = H5Sget_simple_extent_type(space);
    if (c == H5S_SCALAR) {
        snprintf(buf, size, "scalar");
        return;
    }
    if (c != H5S_SIMPLE) {
        snprintf(buf, size, "empty");
        return;
    }
    hsize_t dims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    if (rank < 0) {
        snprintf(buf, size, "?");
        return;
    }
    size_t at = 0;
    at += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (at < size) snprintf(buf + at, size - at, "]");
}

static void desc_of(hid_t type, hid_t space, char *buf, size_t size) {
    char t[64] = "?", s[96] = "?";
    if (type >= 0) h5u_type_str(type, t, sizeof t);
    if (space >= 0) h5u_shape_str(space, s, sizeof s);
    snprintf(buf, size, "%s %s", t, s);
}

void h5u_dset_desc(hid_t dset, char *buf, size_t size) {
    hid_t t = H5Dget_type(dset), s = H5Dget_space(dset);
    desc_of(t, s, buf, size);
    close_id(s);
    close_id(t);
}

void h5u_attr_desc(hid_t attr, char *buf, size_t size) {
    hid_t t = H5Aget_type(attr), s = H5Aget_space(attr);
    desc_of(t, s, buf, size);
    close_id(s);
    close_id(t);
}

typedef struct {
    char *buf;
    size_t size;
} errwalk;

static herr_t errwalk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    errwalk *w = data;
    if (n == 0 && e && e->desc) snprintf(w->buf, w->size, "%s", e->desc);
    return 0;
}

void h5u_errmsg(char *buf, size_t size) {
    if (!size) return;
    buf[0] = 0;
    errwalk w = {buf, size};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, errwalk_cb, &w);
}

int h5u_dset_info(hid_t dset, h5u_dinfo *info) {
    memset(info, 0, sizeof *info);
    int ret = -1;
    hid_t t = H5Dget_type(dset), s = H5Dget_space(dset);
    if (t < 0 || s < 0) goto done;
    info->cls = H5Tget_class(t);
    info->size = H5Tget_size(t);
    if (info->cls == H5T_NO_CLASS || info->size == 0) goto done;
    info->is_signed = info->cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2;
    H5S_class_t sc = H5Sget_simple_extent_type(s);
    if (sc == H5S_NULL) {
        info->rank = -1;
    } else {
        info->rank = H5Sget_simple_extent_dims(s, info->dims, NULL);
        if (info->rank < 0) goto done;
    }
    desc_of(t, s, info->desc, sizeof info->desc);
    ret = 0;
done:
    close_id(s);
    close_id(t);
    return ret;
}

// ---- objects ----

int h5u_obj_type(hid_t loc, const char *name) {
    htri_t ex = H5Lexists(loc, name, H5P_DEFAULT);
    if (ex < 0) return -2;
    if (ex == 0) return -1;
    htri_t ok = H5Oexists_by_name(loc, name, H5P_DEFAULT);
    if (ok < 0) return -1;  // a dangling soft or external link
    if (ok == 0) return -1;
    H5O_info_t oi;
    if (H5Oget_info_by_name2(loc, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return -2;
    return (int)oi.type;
}

// ---- sizes a file claims ----

infl_status h5u_claim(infl_ctx *ctx, const char *path, const char *where, const char *what, int64_t v, int64_t lo,
                      int64_t hi) {
    RETURN_IF(ctx, v < lo || v > hi, INFL_E_FORMAT, "%s: %s: %s is %" PRId64 "; expected %" PRId64 " to %" PRId64,
              path, where, what, v, lo, hi);
    return INFL_OK;
}

uint64_t h5u_mem_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return (uint64_t)1 << 40;  // unknown: the bound still stops overflow
    return (uint64_t)pages * (uint64_t)page;
}

// "3.0 GB", "512 bytes".
static void bytes_str(uint64_t b, char *buf, size_t size) {
    if (b < 10000)
        snprintf(buf, size, "%" PRIu64 " bytes", b);
    else if (b < 1000000ull)
        snprintf(buf, size, "%.1f kB", (double)b / 1e3);
    else if (b < 1000000000ull)
        snprintf(buf, size, "%.1f MB", (double)b / 1e6);
    else
        snprintf(buf, size, "%.1f GB", (double)b / 1e9);
}

// Whether every element of dataset d (of `points` elements of `esize` bytes each as
// stored; esize 0 for variable-length types, stored elsewhere) is written in this
// file: 1 yes, 0 no (*why says what is missing), -1 when HDF5 cannot tell.
static int dset_stored(hid_t d, uint64_t points, size_t esize, char *why, size_t wsize) {
    int ret = -1;
    hid_t pl = H5Dget_create_plist(d), fs = H5I_INVALID_HID;
    if (pl < 0) goto done;
    H5D_layout_t lay = H5Pget_layout(pl);
    int ext = H5Pget_external_count(pl);
    if (lay < 0 || ext < 0) goto done;
    ret = 0;
    if (lay == H5D_VIRTUAL) {
        snprintf(why, wsize, "it is a virtual dataset (its data lie in other files); infl reads only data stored in the file itself");
        goto done;
    }
    if (ext > 0) {
        snprintf(why, wsize, "its data lie in %d external file%s; infl reads only data stored in the file itself", ext,
                 ext > 1 ? "s" : "");
        goto done;
    }
    if (points == 0 || lay == H5D_COMPACT) {  // a compact dataset's data are in its header
        ret = 1;
        goto done;
    }
    if (lay == H5D_CHUNKED) {
        hsize_t cdims[H5S_MAX_RANK], dims[H5S_MAX_RANK], have = 0;
        fs = H5Dget_space(d);
        int crank = H5Pget_chunk(pl, H5S_MAX_RANK, cdims);
        int rank = fs >= 0 ? H5Sget_simple_extent_dims(fs, dims, NULL) : -1;
        if (crank < 1 || rank != crank || H5Dget_num_chunks(d, fs, &have) < 0) {
            ret = -1;
            goto done;
        }
        uint64_t need = 1;
        for (int i = 0; i < rank; i++) {
            if (cdims[i] == 0) {
                ret = -1;
                goto done;
            }
            uint64_t c = (dims[i] + cdims[i] - 1) / cdims[i];
            need = c && need > UINT64_MAX / c ? UINT64_MAX : need * c;
        }
        ret = have >= need;
        if (!ret)
            snprintf(why, wsize, "the file holds %llu of its %" PRIu64 " chunks", (unsigned long long)have, need);
        goto done;
    }
    // contiguous: its storage, allocated when written, holds every element
    uint64_t stored = H5Dget_storage_size(d);
    uint64_t need = esize ? (points > UINT64_MAX / esize ? UINT64_MAX : points * esize) : 1;
    ret = stored >= need;
    if (!ret) {
        char a[32];
        bytes_str(stored, a, sizeof a);
        snprintf(why, wsize, "the file holds only %s of its data", a);
    }
done:
    if (fs >= 0) H5Sclose(fs);
    if (pl >= 0) H5Pclose(pl);
    return ret;
}

infl_status h5u_open_dset(infl_ctx *ctx, const char *path, hid_t loc, const char *name, const char *where,
                          const char *expected, hid_t dapl, uint64_t max_bytes, hid_t *out, h5u_dinfo *info) {
    *out = H5I_INVALID_HID;
    int ty = h5u_obj_type(loc, name);
    RETURN_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: %s: cannot read the link", path, where);
    RETURN_IF(ctx, ty == -1, INFL_E_FORMAT, "%s: %s: missing; expected %s", path, where, expected);
    RETURN_IF(ctx, ty != H5O_TYPE_DATASET, INFL_E_FORMAT, "%s: %s: is not a dataset; expected %s", path, where,
              expected);
    hid_t d = H5Dopen2(loc, name, dapl);
    RETURN_IF(ctx, d < 0, INFL_E_FORMAT, "%s: %s: cannot open the dataset", path, where);
    infl_status rc = INFL_OK;
    hid_t t = H5I_INVALID_HID;
    GOTO_IF(ctx, h5u_dset_info(d, info) < 0, INFL_E_FORMAT, "%s: %s: cannot read its type and shape", path, where);
    // the size its shape claims, without overflow
    uint64_t points = 1, bytes;
    for (int i = 0; i < info->rank; i++)
        points = info->dims[i] && points > UINT64_MAX / info->dims[i] ? UINT64_MAX : points * info->dims[i];
    if (info->rank < 0) points = 0;
    bytes = points > UINT64_MAX / info->size ? UINT64_MAX : points * info->size;
    char claimed[32], bound[32], why[200] = "";
    bytes_str(bytes, claimed, sizeof claimed);
    bytes_str(max_bytes, bound, sizeof bound);
    GOTO_IF(ctx, bytes > max_bytes, INFL_E_FORMAT, "%s: %s: %s claims %s; at most %s (this machine's memory) can be read",
            path, where, info->desc, claimed, bound);
    t = H5Dget_type(d);
    htri_t vl = t >= 0 ? H5Tdetect_class(t, H5T_VLEN) : -1;
    htri_t vs = t >= 0 && info->cls == H5T_STRING ? H5Tis_variable_str(t) : 0;
    GOTO_IF(ctx, vl < 0 || vs < 0, INFL_E_FORMAT, "%s: %s: cannot read its type", path, where);
    int st = dset_stored(d, points, vl > 0 || vs > 0 ? 0 : info->size, why, sizeof why);
    GOTO_IF(ctx, st < 0, INFL_E_FORMAT, "%s: %s: cannot read how its data are stored (damaged file?)", path, where);
    GOTO_IF(ctx, st == 0, INFL_E_FORMAT, "%s: %s: %s claims %s, but %s", path, where, info->desc, claimed, why);
done:
    close_id(t);
    if (rc < 0) {
        H5Dclose(d);
        return rc;
    }
    *out = d;
    return INFL_OK;
}

typedef struct {
    char **names;
    int n, cap;
} namelist;

static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    namelist *l = data;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **p = realloc(l->names, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->names = p;
        l->cap = cap;
    }
    size_t len = strlen(name);
    char *s = malloc(len + 1);
    if (!s) return -1;
    memcpy(s, name, len + 1);
    l->names[l->n++] = s;
    return 0;
}

infl_status h5u_list(infl_ctx *ctx, const char *path, hid_t group, const char *where, char ***names,
                     int *n) {
    namelist l = {NULL, 0, 0};
    *names = NULL;
    *n = 0;
    if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, NULL, list_cb, &l) < 0) {
        h5u_list_free(l.names, l.n);
        return infl_seterr(ctx, INFL_E_FORMAT, "%s: %s: cannot list the group's members", path, where);
    }
    *names = l.names;
    *n = l.n;
    return INFL_OK;
}

void h5u_list_free(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

// ---- files ----

infl_status h5u_open_ro(infl_ctx *ctx, const char *path, hid_t *out) {
    *out = H5I_INVALID_HID;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no input file given");
    struct stat st;
    if (stat(path, &st) != 0) return infl_seterr(ctx, INFL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    RETURN_IF(ctx, S_ISDIR(st.st_mode), INFL_E_ARG, "%s: is a directory, expected an HDF5 file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return infl_seterr(ctx, INFL_E_IO, "%s: cannot read: %s", path, strerror(errno));
    fclose(f);
    htri_t is = H5Fis_hdf5(path);
    RETURN_IF(ctx, is <= 0, INFL_E_FORMAT, "%s: not an HDF5 file", path);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) {
        char why[256];
        h5u_errmsg(why, sizeof why);
        return infl_seterr(ctx, INFL_E_FORMAT, "%s: cannot open as HDF5, the file may be damaged or truncated%s%s%s",
                           path, why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
    *out = fid;
    return INFL_OK;
}

infl_status h5u_check_format(infl_ctx *ctx, const char *path, hid_t file, const char *want) {
    int has = h5u_has_attr(file, "infl_format");
    RETURN_IF(ctx, has < 0, INFL_E_FORMAT, "%s: cannot read the root attributes (damaged file?)", path);
    RETURN_IF(ctx, has == 0, INFL_E_FORMAT,
              "%s: root attribute infl_format missing: not an infl file (expected infl_format '%s')", path, want);
    char fmt[64];
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, file, "root", "infl_format", fmt, sizeof fmt));
    RETURN_IF(ctx, strcmp(fmt, want) != 0, INFL_E_FORMAT, "%s: root attribute infl_format is '%s', expected '%s'",
              path, fmt, want);
    has = h5u_has_attr(file, "infl_version");
    RETURN_IF(ctx, has < 0, INFL_E_FORMAT, "%s: cannot read the root attributes (damaged file?)", path);
    RETURN_IF(ctx, has == 0, INFL_E_FORMAT, "%s: root attribute infl_version missing; expected %d", path,
              INFL_FORMAT_VERSION);
    int64_t ver;
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, path, file, "root", "infl_version", &ver));
    RETURN_IF(ctx, ver != INFL_FORMAT_VERSION, INFL_E_FORMAT,
              "%s: infl_version is %" PRId64 "; this infl reads version %d", path, ver, INFL_FORMAT_VERSION);
    return INFL_OK;
}

int h5u_format_is(infl_ctx *ctx, const char *path, hid_t file, const char *format) {
    char fmt[64];
    return h5u_has_attr(file, "infl_format") == 1 &&
           h5u_attr_str(ctx, path, file, "root", "infl_format", fmt, sizeof fmt) == INFL_OK && strcmp(fmt, format) == 0;
}

infl_status h5u_open_infl(infl_ctx *ctx, const char *path, const char *want, hid_t *out) {
    hid_t f;
    FORWARD_IF_ERROR(h5u_open_ro(ctx, path, &f));
    infl_status rc = h5u_check_format(ctx, path, f, want);
    if (rc < 0) {
        H5Fclose(f);
        return rc;
    }
    *out = f;
    return INFL_OK;
}

infl_status h5u_create_infl(infl_ctx *ctx, const char *path, const char *tmp, const char *format,
                            hid_t *out) {
    *out = H5I_INVALID_HID;
    // HDF5 1.10's file format, pinned (not "latest", which would drift with the HDF5 we
    // are built against): a version 3 superblock, version 2 object headers, and the
    // 1.10 chunk indexes, all of whose metadata carry checksums, so damage to an infl
    // file's metadata is found as such rather than parsed. Readable by HDF5 1.10 and
    // later (h5py's wheels bundle 1.12 or 1.14), not by 1.8.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    RETURN_IF(ctx, fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0, INFL_E_INTERNAL,
              "%s: cannot set up the HDF5 file format", path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        char why[256];
        h5u_errmsg(why, sizeof why);
        return infl_seterr(ctx, INFL_E_IO, "%s: cannot create the temporary file %s%s%s%s", path, tmp,
                           why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
    infl_status rc = h5u_wattr_str(ctx, path, f, "root", "infl_format", format);
    if (rc == INFL_OK) {
        int32_t v = INFL_FORMAT_VERSION;
        rc = h5u_wattr_i32s(ctx, path, f, "root", "infl_version", &v, 0);
    }
    if (rc < 0) {
        H5Fclose(f);
        return rc;
    }
    *out = f;
    return INFL_OK;
}

// ---- attributes: reading ----

int h5u_has_attr(hid_t obj, const char *name) {
    htri_t r = H5Aexists(obj, name);
    return r < 0 ? -1 : (int)r;
}

// Opens attribute `name`, which must exist, have type class `cls` and hold one
// element (scalar or [1]); `expected` words the message.
static infl_status attr_open1(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                              H5T_class_t cls, H5T_class_t cls2, const char *expected, hid_t *attr, hid_t *type) {
    *attr = *type = H5I_INVALID_HID;
    infl_status rc = INFL_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    int has = h5u_has_attr(obj, name);
    GOTO_IF(ctx, has < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
    GOTO_IF(ctx, has == 0, INFL_E_FORMAT, "%s: %s attribute %s missing; expected %s", path, where, name, expected);
    a = H5Aopen(obj, name, H5P_DEFAULT);
    GOTO_IF(ctx, a < 0, INFL_E_FORMAT, "%s: %s: cannot open attribute %s", path, where, name);
    t = H5Aget_type(a);
    s = H5Aget_space(a);
    GOTO_IF(ctx, t < 0 || s < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
    H5T_class_t c = H5Tget_class(t);
    hssize_t npts = H5Sget_simple_extent_npoints(s);
    if ((c != cls && c != cls2) || npts != 1) {
        char found[160];
        h5u_attr_desc(a, found, sizeof found);
        GOTO_IF(ctx, 1, INFL_E_FORMAT, "%s: %s attribute %s: expected %s, found %s", path, where, name, expected,
                found);
    }
    *attr = a;
    *type = t;
    a = t = H5I_INVALID_HID;
done:
    close_id(s);
    close_id(t);
    close_id(a);
    return rc;
}

infl_status h5u_attr_str(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                         char *buf, size_t size) {
    infl_status rc = INFL_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, mt = H5I_INVALID_HID, s = H5I_INVALID_HID;
    char *tmp = NULL;
    buf[0] = 0;
    CHECK(attr_open1(ctx, path, obj, where, name, H5T_STRING, H5T_STRING, "a string", &a, &t));
    htri_t vl = H5Tis_variable_str(t);
    H5T_cset_t cset = H5Tget_cset(t);
    GOTO_IF(ctx, vl < 0 || cset < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
    mt = H5Tcopy(H5T_C_S1);
    GOTO_IF(ctx, mt < 0 || H5Tset_cset(mt, cset) < 0, INFL_E_INTERNAL, "%s: %s attribute %s: H5Tcopy failed", path,
            where, name);
    if (vl > 0) {
        char *p = NULL;
        GOTO_IF(ctx, H5Tset_size(mt, H5T_VARIABLE) < 0, INFL_E_INTERNAL, "%s: %s attribute %s: H5Tset_size failed",
                path, where, name);
        GOTO_IF(ctx, H5Aread(a, mt, &p) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
        snprintf(buf, size, "%s", p ? p : "");
        s = H5Aget_space(a);
        if (s >= 0) H5Dvlen_reclaim(mt, s, H5P_DEFAULT, &p);
    } else {
        size_t fsize = H5Tget_size(t);
        char what[160];
        snprintf(what, sizeof what, "the size of string attribute %s (bytes)", name);
        CHECK(h5u_claim(ctx, path, where, what, (int64_t)fsize, 1, H5U_MAX_STRING));
        GOTO_IF(ctx, H5Tset_size(mt, fsize + 1) < 0 || H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0, INFL_E_INTERNAL,
                "%s: %s attribute %s: H5Tset_size failed", path, where, name);
        tmp = infl_malloc(ctx, fsize + 1, "a string attribute");
        if (!tmp) {
            rc = INFL_E_NOMEM;
            goto done;
        }
        GOTO_IF(ctx, H5Aread(a, mt, tmp) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
        tmp[fsize] = 0;
        snprintf(buf, size, "%s", tmp);
    }
done:
    free(tmp);
    close_id(s);
    close_id(mt);
    close_id(t);
    close_id(a);
    return rc;
}

infl_status h5u_attr_i64(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                         int64_t *v) {
    infl_status rc = INFL_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID;
    CHECK(attr_open1(ctx, path, obj, where, name, H5T_INTEGER, H5T_INTEGER, "an integer", &a, &t));
    GOTO_IF(ctx, H5Aread(a, H5T_NATIVE_INT64, v) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path,
            where, name);
done:
    close_id(t);
    close_id(a);
    return rc;
}

infl_status h5u_attr_u64(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                         uint64_t *v) {
    infl_status rc = INFL_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID;
    CHECK(attr_open1(ctx, path, obj, where, name, H5T_INTEGER, H5T_INTEGER, "an integer", &a, &t));
    if (H5Tget_sign(t) == H5T_SGN_NONE) {
        GOTO_IF(ctx, H5Aread(a, H5T_NATIVE_UINT64, v) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path,
                where, name);
    } else {
        int64_t s;
        GOTO_IF(ctx, H5Aread(a, H5T_NATIVE_INT64, &s) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path,
                where, name);
        *v = (uint64_t)s;
    }
done:
    close_id(t);
    close_id(a);
    return rc;
}

infl_status h5u_attr_f64(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                         double *v) {
    infl_status rc = INFL_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID;
    CHECK(attr_open1(ctx, path, obj, where, name, H5T_FLOAT, H5T_INTEGER, "a number", &a, &t));
    GOTO_IF(ctx, H5Aread(a, H5T_NATIVE_DOUBLE, v) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path,
            where, name);
done:
    close_id(t);
    close_id(a);
    return rc;
}

infl_status h5u_attr_ints(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                          int min_n, int max_n, int64_t *v, int *n) {
    infl_status rc = INFL_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    char expected[96];
    if (min_n == max_n)
        snprintf(expected, sizeof expected, "int32 [%d]", min_n);
    else
        snprintf(expected, sizeof expected, "int32 [n] with %d <= n <= %d", min_n, max_n);
    int has = h5u_has_attr(obj, name);
    GOTO_IF(ctx, has < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
    GOTO_IF(ctx, has == 0, INFL_E_FORMAT, "%s: %s attribute %s missing; expected %s", path, where, name, expected);
    a = H5Aopen(obj, name, H5P_DEFAULT);
    GOTO_IF(ctx, a < 0, INFL_E_FORMAT, "%s: %s: cannot open attribute %s", path, where, name);
    t = H5Aget_type(a);
    s = H5Aget_space(a);
    GOTO_IF(ctx, t < 0 || s < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path, where, name);
    int rank = H5Sget_simple_extent_ndims(s);
    hssize_t npts = H5Sget_simple_extent_npoints(s);
    if (H5Tget_class(t) != H5T_INTEGER || rank != 1 || npts < min_n || npts > max_n) {
        char found[160];
        h5u_attr_desc(a, found, sizeof found);
        GOTO_IF(ctx, 1, INFL_E_FORMAT, "%s: %s attribute %s: expected %s, found %s", path, where, name, expected,
                found);
    }
    GOTO_IF(ctx, H5Aread(a, H5T_NATIVE_INT64, v) < 0, INFL_E_FORMAT, "%s: %s: cannot read attribute %s", path,
            where, name);
    *n = (int)npts;
done:
    close_id(s);
    close_id(t);
    close_id(a);
    return rc;
}

void h5u_attr_value_str(hid_t attr, char *buf, size_t size) {
    hid_t t = H5Aget_type(attr), s = H5Aget_space(attr), mt = H5I_INVALID_HID;
    buf[0] = 0;
    if (t < 0 || s < 0) goto generic;
    H5T_class_t c = H5Tget_class(t);
    hssize_t npts = H5Sget_simple_extent_npoints(s);
    int rank = H5Sget_simple_extent_ndims(s);
    if (npts < 1 || rank < 0) goto generic;
    if (c == H5T_STRING && npts == 1) {
        htri_t vl = H5Tis_variable_str(t);
        mt = H5Tcopy(H5T_C_S1);
        if (vl < 0 || mt < 0 || H5Tset_cset(mt, H5Tget_cset(t)) < 0) goto generic;
        if (vl > 0) {
            char *p = NULL;
            if (H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Aread(attr, mt, &p) < 0) goto generic;
            snprintf(buf, size, "'%s'", p ? p : "");
            H5Dvlen_reclaim(mt, s, H5P_DEFAULT, &p);
        } else {
            size_t fsize = H5Tget_size(t);
            char *tmp = fsize <= H5U_MAX_STRING ? malloc(fsize + 1) : NULL;
            if (!tmp || H5Tset_size(mt, fsize + 1) < 0 || H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0 ||
                H5Aread(attr, mt, tmp) < 0) {
                free(tmp);
                goto generic;
            }
            tmp[fsize] = 0;
            snprintf(buf, size, "'%s'", tmp);
            free(tmp);
        }
        goto done;
    }
    if ((c == H5T_INTEGER || c == H5T_FLOAT) && npts <= 8) {
        double dv[8];
        int64_t iv[8];
        uint64_t uv[8];
        int isint = c == H5T_INTEGER, uns = isint && H5Tget_sign(t) == H5T_SGN_NONE;
        herr_t e = !isint ? H5Aread(attr, H5T_NATIVE_DOUBLE, dv)
                   : uns  ? H5Aread(attr, H5T_NATIVE_UINT64, uv)
                          : H5Aread(attr, H5T_NATIVE_INT64, iv);
        if (e < 0) goto generic;
        size_t at = 0;
        if (rank > 0) at += (size_t)snprintf(buf, size, "[");
        for (hssize_t i = 0; i < npts && at < size; i++) {
            const char *sep = i ? ", " : "";
            if (!isint)
                at += (size_t)snprintf(buf + at, size - at, "%s%.10g", sep, dv[i]);
            else if (uns)
                at += (size_t)snprintf(buf + at, size - at, "%s%" PRIu64, sep, uv[i]);
            else
                at += (size_t)snprintf(buf + at, size - at, "%s%" PRId64, sep, iv[i]);
        }
        if (rank > 0 && at < size) snprintf(buf + at, size - at, "]");
        goto done;
    }
generic:
    desc_of(t, s, buf, size);
done:
    close_id(mt);
    close_id(s);
    close_id(t);
}

// ---- attributes: writing ----

// Writes attribute `name` of file type ft from memory type mt; dims NULL = scalar.
static infl_status wattr(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name, hid_t ft,
                         hid_t mt, int rank, const hsize_t *dims, const void *v) {
    infl_status rc = INFL_OK;
    hid_t s = H5I_INVALID_HID, a = H5I_INVALID_HID;
    int has = h5u_has_attr(obj, name);
    GOTO_IF(ctx, has < 0, INFL_E_IO, "%s: %s: cannot write attribute %s", path, where, name);
    if (has)
        GOTO_IF(ctx, H5Adelete(obj, name) < 0, INFL_E_IO, "%s: %s: cannot replace attribute %s", path, where, name);
    s = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    GOTO_IF(ctx, s < 0, INFL_E_IO, "%s: %s: cannot write attribute %s (dataspace)", path, where, name);
    a = H5Acreate2(obj, name, ft, s, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, a < 0, INFL_E_IO, "%s: %s: cannot create attribute %s", path, where, name);
    GOTO_IF(ctx, H5Awrite(a, mt, v) < 0, INFL_E_IO, "%s: %s: cannot write attribute %s", path, where, name);
done:
    close_id(a);
    close_id(s);
    return rc;
}

// A fixed-length null-terminated string type for `len` bytes of text.
static hid_t fixed_str_type(const char *const *v, int n, size_t len) {
    int utf8 = 0;
    for (int i = 0; i < n && !utf8; i++)
        for (const unsigned char *p = (const unsigned char *)v[i]; *p; p++)
            if (*p >= 0x80) {
                utf8 = 1;
                break;
            }
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, utf8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

infl_status h5u_wattr_str(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                          const char *value) {
    if (!value) value = "";
    hid_t t = fixed_str_type(&value, 1, strlen(value));
    RETURN_IF(ctx, t < 0, INFL_E_INTERNAL, "%s: %s attribute %s: cannot make a string type", path, where, name);
    infl_status rc = wattr(ctx, path, obj, where, name, t, t, 0, NULL, value);
    H5Tclose(t);
    return rc;
}

infl_status h5u_wattr_i32s(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                           const int32_t *v, int n) {
    hsize_t d = (hsize_t)n;
    return wattr(ctx, path, obj, where, name, H5T_STD_I32LE, H5T_NATIVE_INT32, n > 0, &d, v);
}

infl_status h5u_wattr_i64(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                          int64_t v) {
    return wattr(ctx, path, obj, where, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, NULL, &v);
}

infl_status h5u_wattr_u64(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                          uint64_t v) {
    return wattr(ctx, path, obj, where, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, NULL, &v);
}

infl_status h5u_wattr_f64(infl_ctx *ctx, const char *path, hid_t obj, const char *where, const char *name,
                          double v) {
    return wattr(ctx, path, obj, where, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, NULL, &v);
}

// ---- string datasets ----

infl_status h5u_read_strings(infl_ctx *ctx, const char *path, hid_t dset, const char *where, char (*names)[64],
                             int max, int64_t *count) {
    infl_status rc = INFL_OK;
    hid_t t = H5I_INVALID_HID, mt = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    char **vl = NULL;
    h5u_dinfo di;
    *count = 0;
    GOTO_IF(ctx, h5u_dset_info(dset, &di) < 0, INFL_E_FORMAT, "%s: %s: cannot read the dataset's type", path, where);
    GOTO_IF(ctx, di.cls != H5T_STRING || di.rank != 1, INFL_E_FORMAT, "%s: %s: expected a 1-D string array, found %s",
            path, where, di.desc);
    *count = (int64_t)di.dims[0];
    hsize_t m = (hsize_t)(max < 0 ? 0 : max);
    if (m > di.dims[0]) m = di.dims[0];
    if (m == 0 || !names) goto done;
    t = H5Dget_type(dset);
    GOTO_IF(ctx, t < 0, INFL_E_FORMAT, "%s: %s: cannot read the dataset's type", path, where);
    htri_t isvl = H5Tis_variable_str(t);
    H5T_cset_t cset = H5Tget_cset(t);
    mt = H5Tcopy(H5T_C_S1);
    GOTO_IF(ctx, isvl < 0 || cset < 0 || mt < 0 || H5Tset_cset(mt, cset) < 0, INFL_E_FORMAT,
            "%s: %s: cannot read the string type", path, where);
    fs = H5Dget_space(dset);
    hsize_t start = 0;
    ms = H5Screate_simple(1, &m, NULL);
    GOTO_IF(ctx, fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &m, NULL) < 0,
            INFL_E_FORMAT, "%s: %s: cannot select the strings", path, where);
    if (isvl > 0) {
        GOTO_IF(ctx, H5Tset_size(mt, H5T_VARIABLE) < 0, INFL_E_INTERNAL, "%s: %s: H5Tset_size failed", path, where);
        vl = infl_calloc(ctx, m, sizeof *vl, "string pointers");
        if (!vl) {
            rc = INFL_E_NOMEM;
            goto done;
        }
        GOTO_IF(ctx, H5Dread(dset, mt, ms, fs, H5P_DEFAULT, vl) < 0, INFL_E_FORMAT, "%s: %s: cannot read the strings",
                path, where);
        for (hsize_t i = 0; i < m; i++) snprintf(names[i], 64, "%s", vl[i] ? vl[i] : "");
        H5Dvlen_reclaim(mt, ms, H5P_DEFAULT, vl);
    } else {
        // HDF5 converts each string into names[i] (64 bytes, truncated, null-terminated):
        // nothing is allocated by the size the file claims, which is bounded all the same
        // (the conversion buffer HDF5 itself allocates holds at least one string)
        CHECK(h5u_claim(ctx, path, where, "the string size (bytes)", (int64_t)H5Tget_size(t), 1, H5U_MAX_STRING));
        GOTO_IF(ctx, H5Tset_size(mt, 64) < 0 || H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0, INFL_E_INTERNAL,
                "%s: %s: H5Tset_size failed", path, where);
        GOTO_IF(ctx, H5Dread(dset, mt, ms, fs, H5P_DEFAULT, names) < 0, INFL_E_FORMAT,
                "%s: %s: cannot read the strings", path, where);
        for (hsize_t i = 0; i < m; i++) names[i][63] = 0;
    }
done:
    free(vl);
    close_id(ms);
    close_id(fs);
    close_id(mt);
    close_id(t);
    return rc;
}

infl_status h5u_write_strings(infl_ctx *ctx, const char *path, hid_t loc, const char *where, const char *name,
                              const char *const *v, int n) {
    infl_status rc = INFL_OK;
    hid_t t = H5I_INVALID_HID, s = H5I_INVALID_HID, d = H5I_INVALID_HID;
    char *buf = NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(v[i] ? v[i] : "");
        if (l > len) len = l;
    }
    t = fixed_str_type(v, n, len);
    GOTO_IF(ctx, t < 0, INFL_E_INTERNAL, "%s: %s: cannot make a string type", path, where);
    buf = infl_calloc(ctx, (size_t)(n > 0 ? n : 1), len + 1, "strings");
    if (!buf) {
        rc = INFL_E_NOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (v[i]) memcpy(buf + (size_t)i * (len + 1), v[i], strlen(v[i]));
    hsize_t dim = (hsize_t)n;
    s = H5Screate_simple(1, &dim, NULL);
    GOTO_IF(ctx, s < 0, INFL_E_IO, "%s: %s: cannot make a dataspace", path, where);
    d = H5Dcreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, d < 0, INFL_E_IO, "%s: %s: cannot create the dataset", path, where);
    GOTO_IF(ctx, n > 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0, INFL_E_IO,
            "%s: %s: cannot write the strings", path, where);
done:
    free(buf);
    close_id(d);
    close_id(s);
    close_id(t);
    return rc;
}

infl_status h5u_write_array(infl_ctx *ctx, const char *path, hid_t loc, const char *where, const char *name,
                            hid_t file_type, hid_t mem_type, hsize_t rows, hsize_t cols, const void *data) {
    hsize_t dims[2] = {rows, cols};
    hid_t sp = H5Screate_simple(cols ? 2 : 1, dims, NULL);
    RETURN_IF(ctx, sp < 0, INFL_E_IO, "%s: %s/%s: cannot create the dataspace", path, where, name);
    hid_t d = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = d >= 0 && rows * (cols ? cols : 1) > 0 ? H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    RETURN_IF(ctx, d < 0, INFL_E_IO, "%s: %s/%s: cannot create the dataset", path, where, name);
    RETURN_IF(ctx, e < 0, INFL_E_IO, "%s: %s/%s: cannot write", path, where, name);
    return INFL_OK;
}

infl_status h5u_finish_infl(infl_ctx *ctx, const char *path, const char *tmp, hid_t f, infl_status rc) {
    if (f >= 0 && H5Fclose(f) < 0 && rc == INFL_OK)
        rc = infl_seterr(ctx, INFL_E_IO, "%s: cannot finish writing %s", path, tmp);
    if (rc == INFL_OK) return infl_out_commit(ctx, tmp, path);
    infl_out_abort(tmp);
    return rc;
}

infl_status h5u_is_infl(infl_ctx *ctx, const char *path, const char *format) {
    h5u_lock();
    hid_t f;
    infl_status rc = h5u_open_infl(ctx, path, format, &f);
    if (rc == INFL_OK) H5Fclose(f);
    return h5u_unlock_rc(ctx, rc);
}
