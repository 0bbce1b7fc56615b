/*
 * h5build.c — the structure-aware HDF5 builder of the fuzz harnesses (fuzzutil.h):
 * a program of operations becomes a well-formed HDF5 file through the HDF5 API, with
 * hostile contents (wrong or huge shapes and sizes, wrong types, missing objects,
 * links back to a parent, NaNs, huge counts); and its inverse, the encoder, which
 * turns a real infl file into the program that rebuilds it (the seed corpora).
 *
 * Every decision reads from the program, and a program that runs out reads zeros, so
 * every input builds some file; an operation HDF5 refuses (a duplicate name, a chunk
 * too large) is skipped. Sizes are capped where writing them would be the builder's
 * cost rather than the reader's: a dataset's data is written only up to 2^16
 * elements (a larger one, up to 2^48 elements, is left to its fill value), an
 * attribute holds at most 4,096 elements and 1 MiB (libhdf5 allocates a new
 * attribute's whole value: a 4 GiB string attribute in dense storage is 4 GiB).
 */
#define _POSIX_C_SOURCE 200809L  // strdup
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"

#define MAX_OBJS 512          // objects a program may create (groups, datasets)
#define MAX_OPS 1024          // operations it may run
#define MAX_WRITE_ELEMS (1 << 16)
#define MAX_WRITE_BYTES (1 << 21)
#define MAX_ATTR_ELEMS 4096
#define MAX_ATTR_BYTES (1 << 20)  // libhdf5 allocates an attribute's whole value when it creates it
#define MAX_ELEMS_LOG2 48     // a dataset's shape holds at most 2^48 elements
#define MAX_LINKS 16
// Links to a group (soft or hard) can make the tree a graph with cycles. `infl info`
// walks it to a depth of 32, so two such links make 2^32 paths (issue #15: the
// `hostile` branch bounds the walk). Until that lands, one per file: a cycle, but a
// linear walk.
#define MAX_GROUP_LINKS 8

enum { OP_GROUP, OP_DSET, OP_ATTR, OP_LINK, OP_NTYPE, N_OPS };
enum { LINK_SOFT, LINK_DANGLING, LINK_HARD, LINK_EXTERNAL, N_LINKS };
enum { DATA_RAW, DATA_CONST, DATA_RAMP, DATA_NONE, N_DATA };
enum { LAYOUT_CONTIG, LAYOUT_CHUNK, LAYOUT_DEFLATE, LAYOUT_COMPACT, N_LAYOUTS };

// Names of infl's schema (README "File formats"), so that mutations find the objects
// and attributes the readers look for. Index = the name byte; past the table a name
// is literal.
static const char *const names[] = {
    "train", "test", "x", "y", "tokens", "offsets", "classes", "tokenizer", "flipped", "y_clean", "image_shape",
    "max_len", "truncated", "bytes", "unigram_bits", "unigram_nats", "kind", "vocab", "eot", "merges", "source",
    "import_sep", "import_seed", "import_test_fraction", "import_max_len", "import_limit", "import_bpe_vocab",
    "infl_format", "infl_version", "model", "checkpoints", "final", "step", "epoch", "lr", "grad_norm", "layers",
    "activation", "loss", "weight_decay", "data", "optimizer", "seed", "n_layer", "n_head", "dim", "context",
    "000000", "000001", "000002", "000003", "000005", "000010", "W0", "b0", "W1", "b1", "W2", "b2", "wte", "wpe",
    "h0.ln_1.weight", "h0.ln_1.bias", "h0.attn.c_attn.weight", "h0.attn.c_attn.bias", "h0.attn.c_proj.weight",
    "h0.attn.c_proj.bias", "h0.ln_2.weight", "h0.ln_2.bias", "h0.mlp.c_fc.weight", "h0.mlp.c_fc.bias",
    "h0.mlp.c_proj.weight", "h0.mlp.c_proj.bias", "ln_f.weight", "ln_f.bias", "train_epochs", "train_batch",
    "train_lr", "train_schedule", "train_momentum", "layer0", "layer1", "layer2", "A_vecs", "A_vals", "S_vecs",
    "S_vals", "lambda", "d_in", "d_out", "bias", "layer_names", "strategy", "fisher", "run", "checkpoint",
    "weights_hash", "examples", "samples", "topk", "bottomk", "index", "score", "scores", "self", "self_order",
    "method", "query", "outputs", "done", "models", "fraction", "output", "fingerprint", "epochs", "a", "b",
};
#define N_NAMES (int)(sizeof names / sizeof names[0])

// String values the readers compare against.
static const char *const strvals[] = {
    "dataset", "run", "factors", "scores", "lds", "mlp", "gpt", "relu", "tanh", "gelu", "softmax_ce",
    "sigmoid_ce", "mse", "next_token_ce", "bytes", "bpe", "sgd", "newton", "adamw", "ekfac", "kfac",
    "diagonal", "identity", "true", "empirical", "loss", "margin", "final", "000000", "000001", "tracin",
    "graddot", "%", "line", "paragraph", "cosine", "constant", "", "f.h5:/train", "f.h5:/test[0:2]",
};
#define N_STRVALS (int)(sizeof strvals / sizeof strvals[0])

static const int64_t ivals[] = {
    0, 1, -1, 2, 3, 7, 8, 10, 16, 49, 255, 256, 257, -2, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN,
    (int64_t)1 << 31, (int64_t)1 << 32, 1000000000, (int64_t)1000000000000, 65535, 65536, 1 << 20,
};
#define N_IVALS (int)(sizeof ivals / sizeof ivals[0])
static const double fvals[] = {
    0.0, 1.0, -1.0, 0.5, NAN, INFINITY, -INFINITY, 1e30, -1e30, 1e-30, 3.4e38, 1e300, -0.0, 1e-45, 0.01, 2.0, 1e-8,
};
#define N_FVALS (int)(sizeof fvals / sizeof fvals[0])

// ---- types ----

enum {
    T_F32LE, T_F64LE, T_I32LE, T_I64LE, T_U8, T_I8, T_I16LE, T_U16LE, T_U32LE, T_U64LE, T_F32BE, T_I32BE,
    T_I64BE, T_F64BE, T_FSTR, T_VSTR, T_COMPOUND, T_ENUM, T_ARRAY, T_OPAQUE, T_BITFIELD, T_VLEN, N_TYPES
};

static hid_t atomic(int code) {
    switch (code) {
    case T_F32LE: return H5T_IEEE_F32LE;
    case T_F64LE: return H5T_IEEE_F64LE;
    case T_I32LE: return H5T_STD_I32LE;
    case T_I64LE: return H5T_STD_I64LE;
    case T_U8: return H5T_STD_U8LE;
    case T_I8: return H5T_STD_I8LE;
    case T_I16LE: return H5T_STD_I16LE;
    case T_U16LE: return H5T_STD_U16LE;
    case T_U32LE: return H5T_STD_U32LE;
    case T_U64LE: return H5T_STD_U64LE;
    case T_F32BE: return H5T_IEEE_F32BE;
    case T_I32BE: return H5T_STD_I32BE;
    case T_I64BE: return H5T_STD_I64BE;
    case T_F64BE: return H5T_IEEE_F64BE;
    case T_BITFIELD: return H5T_STD_B8LE;
    default: return H5I_INVALID_HID;
    }
}

// A type read from the program (a copy the caller closes); *vstr = 1 for a variable-
// length string, *vlen = 1 for another variable-length type (written without data).
static hid_t read_type(fz_in *in, int *vstr, int *vlen) {
    *vstr = *vlen = 0;
    int code = fz_u8(in) % N_TYPES;
    hid_t t = H5I_INVALID_HID;
    if (atomic(code) >= 0) return H5Tcopy(atomic(code));
    switch (code) {
    case T_FSTR:
    case T_VSTR: {
        uint8_t pc = fz_u8(in);  // padding (low bits) and character set
        t = H5Tcopy(H5T_C_S1);
        if (code == T_VSTR) {
            H5Tset_size(t, H5T_VARIABLE);
            *vstr = 1;
        } else {
            uint64_t size = fz_var(in);
            if (size == 0) size = 1;
            if (size > ((uint64_t)1 << 32)) size = (uint64_t)1 << 32;
            if (H5Tset_size(t, (size_t)size) < 0) H5Tset_size(t, 1);
        }
        H5Tset_strpad(t, (H5T_str_t)(pc % 3));
        H5Tset_cset(t, (pc >> 2) & 1 ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
        return t;
    }
    case T_COMPOUND:
        t = H5Tcreate(H5T_COMPOUND, 16);
        H5Tinsert(t, "a", 0, H5T_STD_I32LE);
        H5Tinsert(t, "b", 8, H5T_IEEE_F64LE);
        return t;
    case T_ENUM: {
        t = H5Tenum_create(H5T_STD_I32LE);
        int32_t v0 = 0, v1 = 1;
        H5Tenum_insert(t, "FALSE", &v0);
        H5Tenum_insert(t, "TRUE", &v1);
        return t;
    }
    case T_ARRAY: {
        hsize_t n = fz_u8(in) % 64 + 1;
        return H5Tarray_create2(H5T_IEEE_F32LE, 1, &n);
    }
    case T_OPAQUE:
        t = H5Tcreate(H5T_OPAQUE, fz_u8(in) % 32 + 1);
        H5Tset_tag(t, "fuzz");
        return t;
    default:  // T_VLEN
        *vlen = 1;
        return H5Tvlen_create(H5T_STD_I32LE);
    }
}

// ---- names and spaces ----

static void read_name(fz_in *in, char *buf, size_t size) {
    int t = fz_u8(in);
    if (t < N_NAMES) {
        snprintf(buf, size, "%s", names[t]);
        return;
    }
    size_t len = fz_u8(in) % 64;
    if (len >= size) len = size - 1;
    fz_take(in, buf, len);
    buf[len] = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '/' || buf[i] == 0) buf[i] = '_';
    if (len == 0 || strcmp(buf, ".") == 0) snprintf(buf, size, "_");
}

// A dataspace: scalar, 1 to 3 dimensions, or null; at most 2^max_log2 elements. Three
// dimensions are always read, the unused ones too, so that a mutated rank keeps the
// program's layout (rank 1 [4] becomes rank 2 [4, 1], a byte away from [4, 3]).
static hid_t read_space(fz_in *in, int max_log2, int *rank, hsize_t *dims, uint64_t *nelem) {
    int r = fz_u8(in) % 5;
    uint64_t max = (uint64_t)1 << max_log2, all[3];
    for (int i = 0; i < 3; i++) all[i] = fz_var(in);
    *nelem = 1;
    *rank = r == 4 ? -1 : r;
    if (r == 0) return H5Screate(H5S_SCALAR);
    if (r == 4) {
        *nelem = 0;
        return H5Screate(H5S_NULL);
    }
    for (int i = 0; i < r; i++) {
        uint64_t d = all[i];
        if (d > max) d = max;
        if (d && *nelem > max / d) d = max / *nelem;  // keep the product under the cap
        dims[i] = d;
        *nelem *= d;
    }
    return H5Screate_simple(r, dims, NULL);
}

// ---- data ----

// Fills buf (n elements of type t, in t's own representation unless *mem says
// otherwise) from the program. Returns the memory type to write with (a copy, or
// H5T_NATIVE_*), or H5I_INVALID_HID to write nothing. vstr: *strs gets n strings.
static hid_t read_data(fz_in *in, hid_t t, int vstr, int vlen, uint64_t n, void **buf, char ***strs) {
    *buf = NULL;
    *strs = NULL;
    int mode = fz_u8(in) % N_DATA;
    size_t size = H5Tget_size(t);
    if (mode == DATA_NONE || vlen || n == 0 || n > MAX_WRITE_ELEMS) return H5I_INVALID_HID;
    if (vstr) {
        char **s = calloc(n, sizeof *s);
        if (!s) return H5I_INVALID_HID;
        uint8_t k = 0;
        for (uint64_t i = 0; i < n; i++) {
            if (mode == DATA_RAW) {
                size_t len = fz_var(in) % 4096;
                s[i] = malloc(len + 1);
                if (s[i]) {
                    fz_take(in, s[i], len);
                    s[i][len] = 0;
                }
            } else {  // one value for all (const), or the table from a start (ramp)
                if (i == 0) k = fz_u8(in);
                s[i] = strdup(strvals[(k + (mode == DATA_RAMP ? i : 0)) % N_STRVALS]);
            }
            if (!s[i]) s[i] = strdup("");
        }
        *strs = s;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(t));
        return mt;
    }
    if (size == 0 || n * size > MAX_WRITE_BYTES) return H5I_INVALID_HID;
    H5T_class_t cls = H5Tget_class(t);
    int numeric = cls == H5T_INTEGER || cls == H5T_FLOAT;
    if (mode == DATA_RAW || !numeric) {
        uint8_t *b = malloc(n * size);
        if (!b) return H5I_INVALID_HID;
        if (mode == DATA_RAW || cls != H5T_STRING) {
            fz_take(in, b, n * size);
        } else {  // a fixed-length string: each element one string value
            const char *v = strvals[fz_u8(in) % N_STRVALS];
            for (uint64_t i = 0; i < n; i++) strncpy((char *)b + i * size, v, size);
        }
        *buf = b;
        return H5Tcopy(t);
    }
    // numbers: through int64 or double, converted (and clamped) by HDF5
    uint8_t *b = malloc(n * 8);
    if (!b) return H5I_INVALID_HID;
    int64_t *iv = (int64_t *)b;
    double *dv = (double *)b;
    if (mode == DATA_CONST) {
        uint8_t k = fz_u8(in);
        for (uint64_t i = 0; i < n; i++) {
            if (cls == H5T_INTEGER) iv[i] = ivals[k % N_IVALS];
            else dv[i] = fvals[k % N_FVALS];
        }
    } else {  // a ramp: start + i * step
        uint64_t z = fz_var(in);
        int64_t start = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
        int64_t step = (int8_t)fz_u8(in);
        for (uint64_t i = 0; i < n; i++) {
            int64_t v = (int64_t)((uint64_t)start + (uint64_t)step * i);
            if (cls == H5T_INTEGER) iv[i] = v;
            else dv[i] = (double)v;
        }
    }
    *buf = b;
    return cls == H5T_INTEGER ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE;
}

// A typed value of the program: its type, space and data (what a dataset and an
// attribute are made of).
typedef struct {
    hid_t t, s, mt;  // type, space, memory type to write with (invalid: nothing to write)
    int rank;
    hsize_t dims[3];
    uint64_t n;      // elements
    void *buf;
    char **strs;     // (n) variable-length strings
} value;

// Type, space (at most 2^max_log2 elements), a dataset's layout byte when `layout` is
// not NULL, then the data.
static void read_value(fz_in *in, int max_log2, int *layout, value *v) {
    int vstr, vlen;
    v->t = read_type(in, &vstr, &vlen);
    v->s = read_space(in, max_log2, &v->rank, v->dims, &v->n);
    if (layout) *layout = fz_u8(in) % N_LAYOUTS;
    v->mt = read_data(in, v->t, vstr, vlen, v->n, &v->buf, &v->strs);
}

static const void *value_data(const value *v) { return v->strs ? (void *)v->strs : v->buf; }

static void value_free(value *v) {
    if (v->strs)
        for (uint64_t i = 0; i < v->n; i++) free(v->strs[i]);
    free(v->strs);
    free(v->buf);
    if (v->mt >= 0 && v->mt != H5T_NATIVE_INT64 && v->mt != H5T_NATIVE_DOUBLE) H5Tclose(v->mt);
    if (v->s >= 0) H5Sclose(v->s);
    if (v->t >= 0) H5Tclose(v->t);
}

// ---- the builder ----

typedef struct {
    char path[1024];
    int group;
} obj;

typedef struct {
    hid_t file;
    obj *objs;    // (nobjs) every object created: objs[0] is the root
    int nobjs;
    int *groups;  // (ngroups) indices into objs of the groups
    int ngroups;
    int links, group_links;
} builder;

static int add_obj(builder *b, int parent, const char *name, int group) {
    if (b->nobjs >= MAX_OBJS) return -1;
    obj *o = &b->objs[b->nobjs];
    const char *pp = b->objs[parent].path;
    snprintf(o->path, sizeof o->path, "%s%s%s", pp, strcmp(pp, "/") ? "/" : "", name);
    o->group = group;
    if (group) b->groups[b->ngroups++] = b->nobjs;
    return b->nobjs++;
}

static int pick_group(fz_in *in, builder *b) { return b->groups[fz_var(in) % (uint64_t)b->ngroups]; }

static void op_dataset(fz_in *in, builder *b) {
    int parent = pick_group(in, b);
    char name[80];
    read_name(in, name, sizeof name);
    int layout;
    value v;
    read_value(in, MAX_ELEMS_LOG2, &layout, &v);
    const int rank = v.rank, chunked = rank > 0 && (layout == LAYOUT_CHUNK || layout == LAYOUT_DEFLATE);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), d = H5I_INVALID_HID;
    hid_t pg = H5Gopen2(b->file, b->objs[parent].path, H5P_DEFAULT);
    if (v.t < 0 || v.s < 0 || dcpl < 0 || pg < 0 || b->nobjs >= MAX_OBJS) goto done;
    if (chunked) {
        // extendible in every dimension, as infl's documents are; chunks of up to 64
        hsize_t chunk[3], maxd[3];
        for (int i = 0; i < rank; i++) {
            chunk[i] = v.dims[i] == 0 ? 1 : v.dims[i] < 64 ? v.dims[i] : 64;
            maxd[i] = H5S_UNLIMITED;
        }
        H5Sset_extent_simple(v.s, rank, v.dims, maxd);
        H5Pset_chunk(dcpl, rank, chunk);
        if (layout == LAYOUT_DEFLATE) H5Pset_deflate(dcpl, 1);
    } else if (layout == LAYOUT_COMPACT) {
        H5Pset_layout(dcpl, H5D_COMPACT);
    }
    d = H5Dcreate2(pg, name, v.t, v.s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0 && chunked) {
        hsize_t one[3] = {1, 1, 1};  // the chunk was too large for its type: chunks of one element
        H5Pset_chunk(dcpl, rank, one);
        d = H5Dcreate2(pg, name, v.t, v.s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    }
    if (d < 0) goto done;
    add_obj(b, parent, name, 0);
    if (v.mt >= 0) H5Dwrite(d, v.mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, value_data(&v));
done:
    value_free(&v);
    if (d >= 0) H5Dclose(d);
    if (pg >= 0) H5Gclose(pg);
    if (dcpl >= 0) H5Pclose(dcpl);
}

static void op_attr(fz_in *in, builder *b) {
    int target = (int)(fz_var(in) % (uint64_t)b->nobjs);
    char name[80];
    read_name(in, name, sizeof name);
    value v;
    read_value(in, 12, NULL, &v);  // 4,096 elements at most
    hid_t o = H5Oopen(b->file, b->objs[target].path, H5P_DEFAULT), a = H5I_INVALID_HID;
    size_t size = v.t >= 0 ? H5Tget_size(v.t) : 0;
    if (v.t >= 0 && v.s >= 0 && o >= 0 && v.n <= MAX_ATTR_ELEMS && size <= MAX_ATTR_BYTES / (v.n ? v.n : 1))
        a = H5Acreate2(o, name, v.t, v.s, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && v.mt >= 0) H5Awrite(a, v.mt, value_data(&v));
    value_free(&v);
    if (a >= 0) H5Aclose(a);
    if (o >= 0) H5Oclose(o);
}

static void op_link(fz_in *in, builder *b) {
    int parent = pick_group(in, b);
    char name[80];
    read_name(in, name, sizeof name);
    int kind = fz_u8(in) % N_LINKS;
    const obj *target = &b->objs[fz_var(in) % (uint64_t)b->nobjs];
    int to_group = (kind == LINK_SOFT || kind == LINK_HARD) && target->group;
    if (b->links >= MAX_LINKS || (to_group && b->group_links >= MAX_GROUP_LINKS)) return;
    hid_t pg = H5Gopen2(b->file, b->objs[parent].path, H5P_DEFAULT);
    if (pg < 0) return;
    herr_t e;
    if (kind == LINK_SOFT) e = H5Lcreate_soft(target->path, pg, name, H5P_DEFAULT, H5P_DEFAULT);
    else if (kind == LINK_DANGLING) e = H5Lcreate_soft("/no/such/object", pg, name, H5P_DEFAULT, H5P_DEFAULT);
    else if (kind == LINK_HARD) e = H5Lcreate_hard(b->file, target->path, pg, name, H5P_DEFAULT, H5P_DEFAULT);
    else e = H5Lcreate_external("/nonexistent/infl-fuzz.h5", "/x", pg, name, H5P_DEFAULT, H5P_DEFAULT);
    if (e >= 0) {
        b->links++;
        b->group_links += to_group;
    }
    H5Gclose(pg);
}

int h5b_build(const char *path, const uint8_t *prog, size_t n) {
    fz_in in = fz_in_make(prog, n);
    uint8_t flags = fz_u8(&in);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (flags & 1) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    if (flags & 2) H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    builder b;
    memset(&b, 0, sizeof b);
    b.file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fapl);
    H5Pclose(fcpl);
    if (b.file < 0) return -1;
    b.objs = calloc(MAX_OBJS, sizeof *b.objs);
    b.groups = calloc(MAX_OBJS, sizeof *b.groups);
    if (!b.objs || !b.groups) abort();
    snprintf(b.objs[0].path, sizeof b.objs[0].path, "/");
    b.objs[0].group = 1;
    b.nobjs = b.ngroups = 1;
    for (int ops = 0; fz_left(&in) > 0 && ops < MAX_OPS; ops++) {
        int op = fz_u8(&in) % N_OPS;
        if (op == OP_GROUP) {
            int parent = pick_group(&in, &b);
            char name[80];
            read_name(&in, name, sizeof name);
            hid_t pg = H5Gopen2(b.file, b.objs[parent].path, H5P_DEFAULT);
            hid_t g = pg >= 0 && b.nobjs < MAX_OBJS ? H5Gcreate2(pg, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)
                                                    : H5I_INVALID_HID;
            if (g >= 0) {
                add_obj(&b, parent, name, 1);
                H5Gclose(g);
            }
            if (pg >= 0) H5Gclose(pg);
        } else if (op == OP_DSET) {
            op_dataset(&in, &b);
        } else if (op == OP_ATTR) {
            op_attr(&in, &b);
        } else if (op == OP_LINK) {
            op_link(&in, &b);
        } else {
            int parent = pick_group(&in, &b);
            char name[80];
            read_name(&in, name, sizeof name);
            int vstr, vlen;
            hid_t t = read_type(&in, &vstr, &vlen);
            hid_t pg = H5Gopen2(b.file, b.objs[parent].path, H5P_DEFAULT);
            if (t >= 0 && pg >= 0) H5Tcommit2(pg, name, t, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (pg >= 0) H5Gclose(pg);
            if (t >= 0) H5Tclose(t);
        }
    }
    free(b.objs);
    free(b.groups);
    return H5Fclose(b.file) < 0 ? -1 : 0;
}

// ---- the encoder: a real file as a program ----

typedef struct {
    fz_out *o;
    int nobjs, ngroups;
    int ndsets;   // datasets encoded so far
    int reshape;  // the index of the dataset to reshape, or -1
} encoder;

static void put_name(fz_out *o, const char *name) {
    for (int i = 0; i < N_NAMES; i++)
        if (strcmp(names[i], name) == 0) {
            fz_put_u8(o, (uint8_t)i);
            return;
        }
    size_t len = strlen(name);
    if (len > 63) len = 63;
    fz_put_u8(o, 255);
    fz_put_u8(o, (uint8_t)len);
    fz_put(o, name, len);
}

// The type code of t (and its fields); 0 when it has none (then float64, no data).
static int put_type(fz_out *o, hid_t t) {
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    int be = (cls == H5T_INTEGER || cls == H5T_FLOAT) && H5Tget_order(t) == H5T_ORDER_BE;
    int sgn = cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2;
    int code = -1;
    if (cls == H5T_FLOAT) code = size == 4 ? (be ? T_F32BE : T_F32LE) : size == 8 ? (be ? T_F64BE : T_F64LE) : -1;
    if (cls == H5T_INTEGER) {
        if (size == 1) code = sgn ? T_I8 : T_U8;
        if (size == 2) code = sgn ? T_I16LE : T_U16LE;
        if (size == 4) code = sgn ? (be ? T_I32BE : T_I32LE) : T_U32LE;
        if (size == 8) code = sgn ? (be ? T_I64BE : T_I64LE) : T_U64LE;
        if (be && !(size == 4 || size == 8)) code = -1;
    }
    if (cls == H5T_STRING) {
        int vl = H5Tis_variable_str(t) > 0;
        fz_put_u8(o, vl ? T_VSTR : T_FSTR);
        fz_put_u8(o, (uint8_t)((int)H5Tget_strpad(t) | (H5Tget_cset(t) == H5T_CSET_UTF8 ? 4 : 0)));
        if (!vl) fz_put_var(o, size);
        return 1;
    }
    if (code < 0) {
        fz_put_u8(o, T_F64LE);
        return 0;
    }
    fz_put_u8(o, (uint8_t)code);
    return 1;
}

// The space of s (rank, three dimensions: the unused ones 1); *n its elements.
static void put_space(fz_out *o, hid_t s, uint64_t *n) {
    *n = 1;
    H5S_class_t sc = H5Sget_simple_extent_type(s);
    int rank = sc == H5S_SIMPLE ? H5Sget_simple_extent_ndims(s) : 0;
    hsize_t dims[H5S_MAX_RANK];
    if (sc == H5S_NULL || rank > 3) {
        rank = 4;  // null (or more dimensions than the builder makes)
        *n = 0;
    } else {
        H5Sget_simple_extent_dims(s, dims, NULL);
    }
    fz_put_u8(o, (uint8_t)rank);
    for (int i = 0; i < 3; i++) {
        hsize_t d = i < rank && rank < 4 ? dims[i] : 1;
        fz_put_var(o, d);
        if (i < rank && rank < 4) *n *= d;
    }
}

// The space of s with one more dimension, of 3 (scalar: [3]; three dimensions: as is).
static void put_reshaped(fz_out *o, hid_t s) {
    hsize_t dims[H5S_MAX_RANK] = {1, 1, 1};
    int rank = H5Sget_simple_extent_type(s) == H5S_SIMPLE ? H5Sget_simple_extent_ndims(s) : 0;
    if (rank > 3) rank = 3;
    if (rank > 0) H5Sget_simple_extent_dims(s, dims, NULL);
    if (rank < 3) dims[rank++] = 3;
    fz_put_u8(o, (uint8_t)rank);
    for (int i = 0; i < 3; i++) fz_put_var(o, i < rank ? dims[i] : 1);
}

// The data of a dataset (attr < 0) or an attribute (dset < 0), raw, or DATA_NONE.
static void put_data(fz_out *o, hid_t dset, hid_t attr, hid_t t, int typed, uint64_t n) {
    size_t size = H5Tget_size(t);
    int vl = H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0;
    if (!typed || n == 0 || n > MAX_WRITE_ELEMS || (!vl && n * size > MAX_WRITE_BYTES)) {
        fz_put_u8(o, DATA_NONE);
        return;
    }
    if (vl) {
        char **s = calloc(n, sizeof *s);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(t));
        herr_t e = attr >= 0 ? H5Aread(attr, mt, s) : H5Dread(dset, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s);
        fz_put_u8(o, e < 0 ? DATA_NONE : DATA_RAW);
        for (uint64_t i = 0; e >= 0 && i < n; i++) {
            size_t len = s[i] ? strlen(s[i]) : 0;
            if (len > 4095) len = 4095;
            fz_put_var(o, len);
            fz_put(o, s[i], len);
            free(s[i]);
        }
        H5Tclose(mt);
        free(s);
        return;
    }
    uint8_t *b = malloc(n * size);
    herr_t e = !b ? -1 : attr >= 0 ? H5Aread(attr, t, b) : H5Dread(dset, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    fz_put_u8(o, e < 0 ? DATA_NONE : DATA_RAW);
    if (e >= 0) fz_put(o, b, n * size);
    free(b);
}

static herr_t put_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    encoder *E = data;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    fz_put_u8(E->o, OP_ATTR);
    fz_put_var(E->o, (uint64_t)(E->nobjs - 1));
    put_name(E->o, name);
    int typed = put_type(E->o, t);
    uint64_t n;
    put_space(E->o, s, &n);
    put_data(E->o, -1, a, t, typed, n);
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

static void put_attrs(encoder *E, hid_t obj) {
    hsize_t idx = 0;
    H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, put_attr, E);
}

// Children of group g (group index gidx), in name order, depth first.
static void put_group(encoder *E, hid_t g, int gidx) {
    H5G_info_t gi;
    if (H5Gget_info(g, &gi) < 0) return;
    hsize_t n = gi.nlinks;
    for (hsize_t i = 0; i < n; i++) {
        char name[1024];
        if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT) < 0) continue;
        H5L_info_t li;
        if (H5Lget_info(g, name, &li, H5P_DEFAULT) < 0 || li.type != H5L_TYPE_HARD) continue;
        H5O_info_t oi;
        if (H5Oget_info_by_name2(g, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) continue;
        if (oi.type == H5O_TYPE_GROUP) {
            hid_t c = H5Gopen2(g, name, H5P_DEFAULT);
            if (c < 0) continue;
            fz_put_u8(E->o, OP_GROUP);
            fz_put_var(E->o, (uint64_t)gidx);
            put_name(E->o, name);
            int my = E->ngroups++;
            E->nobjs++;
            put_attrs(E, c);
            put_group(E, c, my);
            H5Gclose(c);
        } else if (oi.type == H5O_TYPE_DATASET) {
            hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
            if (d < 0) continue;
            hid_t t = H5Dget_type(d), s = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
            fz_put_u8(E->o, OP_DSET);
            fz_put_var(E->o, (uint64_t)gidx);
            put_name(E->o, name);
            int typed = put_type(E->o, t);
            uint64_t nel = 0;
            if (E->ndsets++ == E->reshape) {
                put_reshaped(E->o, s);
                typed = 0;  // its data no longer fit: the fill value
            } else {
                put_space(E->o, s, &nel);
            }
            H5D_layout_t lay = H5Pget_layout(dcpl);
            fz_put_u8(E->o, lay == H5D_CHUNKED ? (H5Pget_nfilters(dcpl) > 0 ? LAYOUT_DEFLATE : LAYOUT_CHUNK)
                            : lay == H5D_COMPACT ? LAYOUT_COMPACT
                                                 : LAYOUT_CONTIG);
            put_data(E->o, d, -1, t, typed, nel);
            E->nobjs++;
            put_attrs(E, d);
            H5Pclose(dcpl);
            H5Sclose(s);
            H5Tclose(t);
            H5Dclose(d);
        }
    }
}

int h5b_encode(const char *path, int reshape, fz_out *o) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    encoder E = {o, 1, 1, 0, reshape};
    fz_put_u8(o, 0);   // file flags: the default format
    put_attrs(&E, f);  // root: object 0 (E.nobjs - 1)
    put_group(&E, f, 0);
    H5Fclose(f);
    return E.ndsets;
}
