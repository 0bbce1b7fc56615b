/*
 * store_describe.c — `infl info`'s body: a readable description of any infl file.
 * Datasets list their splits (rows, features, labels, image shape, extra datasets;
 * for documents splits their documents, tokens and longest document), their class
 * names and tokenizer; runs their model and a table of checkpoints; any other format,
 * or a plain HDF5 file, is shown as a tree of groups and datasets with types,
 * shapes and attributes.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"
#include "store_private.h"

#define KEYW 14  // width of the key column

static void kv(FILE *out, const char *indent, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void kv(FILE *out, const char *indent, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    // at least one space after the key, however long it is
    fprintf(out, "%s%-*s ", indent, KEYW - 1 - (int)strlen(indent), key);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    va_end(ap);
}

// Prints the attributes of obj (except those named in skip, NULL-terminated) as
// "key  value" lines.
static void print_attrs(FILE *out, hid_t obj, const char *indent, const char *const *skip) {
    H5O_info_t oi;
    if (H5Oget_info2(obj, &oi, H5O_INFO_NUM_ATTRS) < 0) return;
    for (hsize_t i = 0; i < oi.num_attrs; i++) {
        hid_t a = H5Aopen_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) continue;
        char name[128], val[512];
        if (H5Aget_name(a, sizeof name, name) < 0) {
            H5Aclose(a);
            continue;
        }
        int skipped = 0;
        for (const char *const *s = skip; s && *s; s++)
            if (strcmp(*s, name) == 0) skipped = 1;
        if (!skipped) {
            h5u_attr_value_str(a, val, sizeof val);
            kv(out, indent, name, "%s", val);
        }
        H5Aclose(a);
    }
}

// ---- any HDF5 file: a tree ----

typedef struct {
    char *left, *right;
} line;
typedef struct {
    line *v;
    int n, cap;
} lines;

static void add_line(lines *ls, const char *left, const char *right) {
    if (ls->n == ls->cap) {
        int cap = ls->cap ? 2 * ls->cap : 64;
        line *p = realloc(ls->v, (size_t)cap * sizeof *p);
        if (!p) return;
        ls->v = p;
        ls->cap = cap;
    }
    size_t a = strlen(left) + 1, b = strlen(right) + 1;
    char *l = malloc(a), *r = malloc(b);
    if (!l || !r) {
        free(l);
        free(r);
        return;
    }
    memcpy(l, left, a);
    memcpy(r, right, b);
    ls->v[ls->n++] = (line){l, r};
}

static void tree_attrs(lines *ls, hid_t obj, int depth) {
    H5O_info_t oi;
    if (H5Oget_info2(obj, &oi, H5O_INFO_NUM_ATTRS) < 0) return;
    for (hsize_t i = 0; i < oi.num_attrs; i++) {
        hid_t a = H5Aopen_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) continue;
        char name[128], left[200], val[512];
        if (H5Aget_name(a, sizeof name, name) >= 0) {
            snprintf(left, sizeof left, "%*s@%s", 2 * depth + 2, "", name);
            h5u_attr_value_str(a, val, sizeof val);
            add_line(ls, left, val);
        }
        H5Aclose(a);
    }
}

// The walk of a tree: every object is shown once (a second hard link to it says where
// it was shown), soft and external links are shown and never followed, and the walk
// stops when the context's cancel flag is raised. So a file whose links make cycles
// (a soft or hard link to a parent group) prints one line per link and ends.
typedef struct {
    lines ls;
    infl_ctx *ctx;
    haddr_t *seen;   // (nseen) object addresses already shown
    char **seen_at;  // (nseen) the path each was shown at
    int nseen;
    int *slot;       // (nslot, a power of two) open-addressing hash of seen: index + 1, 0 empty
    int nslot;
    int stopped;     // 1 cancelled, 2 out of memory
} tree_walk;

static size_t addr_hash(haddr_t a, int nslot) {
    uint64_t h = (uint64_t)a * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (size_t)(nslot - 1);
}

// Whether `addr` was shown before: 1 (*first gets the path it was shown at), or 0 and
// it is recorded as shown at cpath; -1 out of memory.
static int tree_visit(tree_walk *w, haddr_t addr, const char *cpath, const char **first) {
    if (w->nslot) {
        for (size_t i = addr_hash(addr, w->nslot); w->slot[i]; i = (i + 1) & (size_t)(w->nslot - 1))
            if (w->seen[w->slot[i] - 1] == addr) {
                *first = w->seen_at[w->slot[i] - 1];
                return 1;
            }
    }
    if (2 * (w->nseen + 1) > w->nslot) {  // grow: at most half full
        int ns = w->nslot ? 2 * w->nslot : 256;
        int *sl = calloc((size_t)ns, sizeof *sl);
        haddr_t *a = realloc(w->seen, (size_t)ns / 2 * sizeof *a);
        if (a) w->seen = a;
        char **p = realloc(w->seen_at, (size_t)ns / 2 * sizeof *p);
        if (p) w->seen_at = p;
        if (!sl || !a || !p) {
            free(sl);
            return -1;
        }
        for (int j = 0; j < w->nseen; j++) {
            size_t i = addr_hash(w->seen[j], ns);
            while (sl[i]) i = (i + 1) & (size_t)(ns - 1);
            sl[i] = j + 1;
        }
        free(w->slot);
        w->slot = sl;
        w->nslot = ns;
    }
    char *c = malloc(strlen(cpath) + 1);
    if (!c) return -1;
    strcpy(c, cpath);
    size_t i = addr_hash(addr, w->nslot);
    while (w->slot[i]) i = (i + 1) & (size_t)(w->nslot - 1);
    w->seen[w->nseen] = addr;
    w->seen_at[w->nseen] = c;
    w->slot[i] = ++w->nseen;
    return 0;
}

// "soft link to /a/b (not followed)", "external link to f.h5:/x (not followed)".
static void link_desc(hid_t g, const char *name, const H5L_info_t *li, char *buf, size_t size) {
    char val[512] = "?";
    size_t n = li->u.val_size;
    if (n > 0 && n <= sizeof val && H5Lget_val(g, name, val, sizeof val, H5P_DEFAULT) >= 0) {
        val[sizeof val - 1] = 0;
        if (li->type == H5L_TYPE_EXTERNAL) {
            const char *file = NULL, *obj = NULL;
            unsigned flags;
            if (H5Lunpack_elink_val(val, n, &flags, &file, &obj) >= 0 && file && obj) {
                snprintf(buf, size, "external link to %.200s:%.200s (not followed)", file, obj);
                return;
            }
        }
    } else {
        snprintf(val, sizeof val, "?");
    }
    if (li->type == H5L_TYPE_SOFT)
        snprintf(buf, size, "soft link to %.400s (not followed)", val);
    else
        snprintf(buf, size, "%s link (not followed)", li->type == H5L_TYPE_EXTERNAL ? "external" : "user-defined");
}

static void tree_group(tree_walk *w, hid_t g, const char *gpath, int depth) {
    lines *ls = &w->ls;
    char **names = NULL;
    int n = 0;
    if (h5u_list(NULL, "", g, gpath, &names, &n) < 0) {
        add_line(ls, gpath, "(cannot list)");
        return;
    }
    for (int i = 0; i < n && !w->stopped; i++) {
        if (w->ctx && infl_cancelled(w->ctx)) {
            w->stopped = 1;
            break;
        }
        char cpath[1024], left[1100], desc[600];
        snprintf(cpath, sizeof cpath, "%.400s%s%.400s", gpath, strcmp(gpath, "/") ? "/" : "", names[i]);
        snprintf(left, sizeof left, "%*s%s", 2 * depth, "", cpath);
        H5L_info_t li;
        if (H5Lget_info(g, names[i], &li, H5P_DEFAULT) < 0) {
            add_line(ls, left, "(cannot read the link)");
            continue;
        }
        if (li.type != H5L_TYPE_HARD) {
            link_desc(g, names[i], &li, desc, sizeof desc);
            add_line(ls, left, desc);
            continue;
        }
        const char *first = NULL;
        int seen = tree_visit(w, li.u.address, cpath, &first);
        if (seen < 0) {
            w->stopped = 2;
            break;
        }
        if (seen) {
            snprintf(desc, sizeof desc, "hard link to %.500s (shown there)", first);
            add_line(ls, left, desc);
            continue;
        }
        int ty = h5u_obj_type(g, names[i]);
        if (ty == H5O_TYPE_GROUP) {
            hid_t c = depth < 32 ? H5Gopen2(g, names[i], H5P_DEFAULT) : H5I_INVALID_HID;
            add_line(ls, left, c >= 0 ? "group" : "group (not opened)");
            if (c >= 0) {
                tree_attrs(ls, c, depth);
                tree_group(w, c, cpath, depth + 1);
                H5Gclose(c);
            }
        } else if (ty == H5O_TYPE_DATASET) {
            hid_t d = H5Dopen2(g, names[i], H5P_DEFAULT);
            if (d >= 0) {
                h5u_dset_desc(d, desc, sizeof desc);
                add_line(ls, left, desc);
                tree_attrs(ls, d, depth);
                H5Dclose(d);
            } else {
                add_line(ls, left, "dataset (cannot open)");
            }
        } else if (ty == H5O_TYPE_NAMED_DATATYPE) {
            add_line(ls, left, "named datatype");
        } else {
            add_line(ls, left, "(cannot read)");
        }
    }
    h5u_list_free(names, n);
}

// Prints the tree; INFL_E_INTERRUPTED when the cancel flag stopped the walk (then nothing
// is printed).
static infl_status print_tree(infl_ctx *ctx, FILE *out, hid_t file) {
    tree_walk w = {.ctx = ctx};
    add_line(&w.ls, "/", "group");
    tree_attrs(&w.ls, file, 0);
    H5O_info_t oi;
    const char *first;
    if (H5Oget_info2(file, &oi, H5O_INFO_BASIC) >= 0 && tree_visit(&w, oi.addr, "/", &first) < 0) w.stopped = 2;
    if (!w.stopped) tree_group(&w, file, "/", 1);
    lines *ls = &w.ls;
    int wd = 0;
    for (int i = 0; i < ls->n; i++) {
        int l = (int)strlen(ls->v[i].left);
        if (l > wd) wd = l;
    }
    if (wd > 40) wd = 40;
    if (!w.stopped) fprintf(out, "contents\n");
    for (int i = 0; i < ls->n; i++) {
        if (!w.stopped) fprintf(out, "  %-*s  %s\n", wd, ls->v[i].left, ls->v[i].right);
        free(ls->v[i].left);
        free(ls->v[i].right);
    }
    free(ls->v);
    for (int i = 0; i < w.nseen; i++) free(w.seen_at[i]);
    free(w.seen);
    free(w.seen_at);
    free(w.slot);
    RETURN_IF(ctx, w.stopped == 2, INFL_E_NOMEM, "out of memory listing the file's objects");
    RETURN_IF(ctx, w.stopped, INFL_E_INTERRUPTED, "interrupted");
    return INFL_OK;
}

// ---- datasets ----

static void print_classes(FILE *out, const char *path, hid_t file) {
    hid_t d;
    h5u_dinfo di;
    if (h5u_open_dset(NULL, path, file, "classes", "/classes", "", H5P_DEFAULT, UINT64_MAX, &d, &di) < 0) return;
    enum { SHOW = 100 };
    char(*names)[64] = calloc(SHOW, sizeof *names);
    int64_t count = 0;
    if (names && h5u_read_strings(NULL, path, d, "/classes", names, SHOW, &count) == INFL_OK) {
        fprintf(out, "%-*s%" PRId64 ": ", KEYW, "classes", count);
        for (int64_t i = 0; i < count && i < SHOW; i++) fprintf(out, "%s%s", i ? ", " : "", names[i]);
        if (count > SHOW) fprintf(out, ", ... (%" PRId64 " more)", count - SHOW);
        fputc('\n', out);
    }
    free(names);
    H5Dclose(d);
}

static infl_status describe_split(infl_ctx *ctx, FILE *out, const char *path, hid_t file, const char *name) {
    infl_dataref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.path, sizeof ref.path, "%s", path);
    snprintf(ref.split, sizeof ref.split, "%s", name);
    ref.end = -1;
    infl_split *s = NULL;
    FORWARD_IF_ERROR(store_split_open(ctx, &ref, &s));
    const infl_split_info *in = store_split_info(s);
    fprintf(out, "split /%s\n", name);
    const int docs = in->kind == INFL_SPLIT_DOCS, cap = in->kind == INFL_SPLIT_CAPTURED;
    if (cap) {
        kv(out, "  ", "examples", "%" PRId64 " captured", in->n_total);
        kv(out, "  ", "token rows", "%" PRId64 " (%.1f per example; the longest %" PRId64 ")", in->tokens,
           in->n_total ? (double)in->tokens / (double)in->n_total : 0.0, in->max_len);
    } else if (docs) {
        kv(out, "  ", "documents", "%" PRId64, in->n_total);
        kv(out, "  ", "tokens", "%" PRId64 " (%.1f per document; the longest %" PRId64 ")", in->tokens,
           in->n_total ? (double)in->tokens / (double)in->n_total : 0.0, in->max_len);
    } else {
        kv(out, "  ", "rows", "%" PRId64, in->n_total);
    }
    if (docs || cap)
        ;
    else if (in->has_image)
        kv(out, "  ", "features", "%" PRId64 " (image %d x %d x %d)", in->d, in->image_shape[0], in->image_shape[1],
           in->image_shape[2]);
    else
        kv(out, "  ", "features", "%" PRId64, in->d);
    if (in->y_kind == INFL_Y_CLASS && in->n_classes > 0)
        kv(out, "  ", "labels", "classes, int32 [%" PRId64 "], %d classes", in->n_total, in->n_classes);
    else if (in->y_kind == INFL_Y_CLASS)
        kv(out, "  ", "labels", "classes, int32 [%" PRId64 "]", in->n_total);
    else
        kv(out, "  ", "labels", "real targets, float32 [%" PRId64 ", %" PRId64 "] (K = %" PRId64 ")", in->n_total,
           in->k, in->k);
    store_split_close(s);

    // extra datasets and attributes of the group
    hid_t g = H5Gopen2(file, name, H5P_DEFAULT);
    if (g < 0) return INFL_OK;
    char **names = NULL;
    int n = 0;
    if (h5u_list(NULL, path, g, name, &names, &n) == INFL_OK) {
        char extra[2048];
        size_t at = 0;
        extra[0] = 0;
        for (int i = 0; i < n && at < sizeof extra; i++) {
            if (strcmp(names[i], "x") == 0 || strcmp(names[i], "y") == 0) continue;
            if (docs && (strcmp(names[i], "tokens") == 0 || strcmp(names[i], "offsets") == 0)) continue;
            if (cap && strcmp(names[i], "offsets") == 0) continue;
            char desc[200] = "group";
            if (h5u_obj_type(g, names[i]) == H5O_TYPE_DATASET) {
                hid_t d = H5Dopen2(g, names[i], H5P_DEFAULT);
                if (d >= 0) {
                    h5u_dset_desc(d, desc, sizeof desc);
                    H5Dclose(d);
                }
            }
            at += (size_t)snprintf(extra + at, sizeof extra - at, "%s%s %s", at ? ", " : "", names[i], desc);
        }
        if (extra[0]) kv(out, "  ", "extra", "%s", extra);
        h5u_list_free(names, n);
    }
    static const char *const skip[] = {"image_shape", "max_len", NULL};
    print_attrs(out, g, "  ", skip);
    H5Gclose(g);
    return INFL_OK;
}

static infl_status describe_tokenizer(infl_ctx *ctx, FILE *out, const char *path, hid_t file) {
    infl_tokenizer t;
    FORWARD_IF_ERROR(store_tok_read(ctx, path, file, "tokenizer", &t));
    if (t.kind == INFL_TOK_BPE)
        kv(out, "", "tokenizer", "bpe, vocabulary %d (256 bytes, EOT = %d, %d merges)", t.vocab, t.eot, t.n_merges);
    else
        kv(out, "", "tokenizer", "bytes, vocabulary %d (256 bytes, EOT = %d)", t.vocab, t.eot);
    store_tok_clear(&t);
    return INFL_OK;
}

static infl_status describe_dataset(infl_ctx *ctx, FILE *out, const char *path, hid_t file) {
    static const char *const skip[] = {"infl_format", "infl_version", NULL};
    print_attrs(out, file, "", skip);
    print_classes(out, path, file);
    if (h5u_obj_type(file, "tokenizer") == H5O_TYPE_GROUP) FORWARD_IF_ERROR(describe_tokenizer(ctx, out, path, file));
    char **names = NULL;
    int n = 0;
    FORWARD_IF_ERROR(h5u_list(ctx, path, file, "/", &names, &n));
    infl_status rc = INFL_OK;
    int nsplits = 0;
    for (int i = 0; i < n && rc == INFL_OK; i++) {
        int ty = h5u_obj_type(file, names[i]);
        if (ty == H5O_TYPE_GROUP && strcmp(names[i], "tokenizer") == 0) {
            continue;  // described above
        } else if (ty == H5O_TYPE_GROUP) {
            hid_t g = H5Gopen2(file, names[i], H5P_DEFAULT);
            // a link that cannot be read (damage) counts: describing the split says why
            int has_x = g < 0 || h5u_obj_type(g, "x") != -1 || h5u_obj_type(g, "tokens") != -1;
            if (g >= 0) H5Gclose(g);
            if (has_x) {
                rc = describe_split(ctx, out, path, file, names[i]);
                nsplits++;
            } else {
                char key[300];
                snprintf(key, sizeof key, "/%s", names[i]);
                kv(out, "", key, "group (not a split: no x, no tokens)");
            }
        } else if (ty == H5O_TYPE_DATASET && strcmp(names[i], "classes") != 0) {
            hid_t d = H5Dopen2(file, names[i], H5P_DEFAULT);
            char desc[200] = "?", key[300];
            if (d >= 0) {
                h5u_dset_desc(d, desc, sizeof desc);
                H5Dclose(d);
            }
            snprintf(key, sizeof key, "/%s", names[i]);
            kv(out, "", key, "%s", desc);
        }
    }
    if (rc == INFL_OK && nsplits == 0) rc = infl_seterr(ctx, INFL_E_FORMAT, "%s: a dataset file without splits", path);
    h5u_list_free(names, n);
    return rc;
}

// ---- runs ----

static infl_status describe_run(infl_ctx *ctx, FILE *out, const char *path, hid_t file) {
    infl_run *r = NULL;
    FORWARD_IF_ERROR(store_run_open(ctx, path, &r));
    const infl_model_spec *ms = store_run_spec(r);
    kv(out, "", "model", "%s", infl_model_kind_name(ms->kind));
    if (ms->kind == INFL_MODEL_CAPTURED) {
        // a model trained elsewhere: its captured linear layers
        const infl_captured_spec *c = &ms->cap;
        kv(out, "", "layers", "%d captured (%zu parameters)%s", c->L, infl_spec_nparams(ms),
           c->tokens ? ", examples of token rows" : "");
        for (int l = 0; l < c->L; l++) {
            char key[64];
            snprintf(key, sizeof key, "layer%d", l);
            kv(out, "  ", key, "%s: %d -> %d%s", c->names[l], c->d_in[l], c->d_out[l], c->bias[l] ? " (bias)" : "");
        }
        if (c->outputs) kv(out, "", "outputs", "%d", c->outputs);
        kv(out, "", "weight decay", "%g", c->wd);
    } else if (ms->kind == INFL_MODEL_MLP) {
        const infl_mlp_spec *sp = &ms->mlp;
        char buf[512];
        size_t at = 0;
        for (int l = 0; l <= sp->L && at < sizeof buf; l++)
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%d", l ? ", " : "", sp->widths[l]);
        kv(out, "", "layers", "%s (%zu parameters)", buf, infl_mlp_nparams(sp));
        kv(out, "", "activation", "%s", infl_act_name(sp->act));
        kv(out, "", "loss", "%s", infl_loss_name(sp->loss));
        kv(out, "", "weight decay", "%g", sp->wd);
    } else {
        const infl_gpt_spec *g = &ms->gpt;
        kv(out, "", "architecture", "%d layers, %d heads, dim %d, context %d, vocabulary %d (%zu parameters)",
           g->n_layer, g->n_head, g->dim, g->context, g->vocab, infl_spec_nparams(ms));
        kv(out, "", "loss", "next-token cross-entropy");
        kv(out, "", "weight decay", "%g (AdamW, decoupled)", g->wd);
        const infl_tokenizer *t = store_run_tokenizer(r);
        if (t) kv(out, "", "tokenizer", "%s, vocabulary %d (end-of-text %d)", store_tok_kind_name(t->kind), t->vocab, t->eot);
    }
    kv(out, "", "data", "%s", store_run_data(r));
    hid_t model = H5Gopen2(file, "model", H5P_DEFAULT);
    if (model >= 0) {
        char opt[64] = "?";
        uint64_t seed = 0;
        if (h5u_attr_str(NULL, path, model, "/model", "optimizer", opt, sizeof opt) == INFL_OK)
            kv(out, "", "optimizer", "%s", opt);
        if (h5u_attr_u64(NULL, path, model, "/model", "seed", &seed) == INFL_OK) kv(out, "", "seed", "%" PRIu64, seed);
        static const char *const skip[] = {"kind",    "layers", "activation", "loss",  "weight_decay", "data",
                                           "optimizer", "seed", "n_layer",    "n_head", "dim",          "context",
                                           "vocab",  "eot",    "d_in",      "d_out", "bias",       "outputs",
                                           "tokens", NULL};
        print_attrs(out, model, "", skip);
        H5Gclose(model);
    }
    static const char *const rskip[] = {"infl_format", "infl_version", NULL};
    print_attrs(out, file, "", rskip);

    int n = store_run_ncheckpoints(r), fin = 0;
    store_run_find(ctx, r, "final", &fin);
    kv(out, "", "checkpoints", "%d (final %s)", n, store_run_checkpoint(r, fin)->name);
    // column widths
    int wn = 4, ws = 4;
    for (int i = 0; i < n; i++) {
        const infl_ckpt_info *c = store_run_checkpoint(r, i);
        int a = (int)strlen(c->name), b = snprintf(NULL, 0, "%" PRId64, c->step);
        if (a > wn) wn = a;
        if (b > ws) ws = b;
    }
    fprintf(out, "  %-*s  %*s  %10s  %12s  %12s\n", wn, "name", ws, "step", "epoch", "lr", "grad_norm");
    for (int i = 0; i < n; i++) {
        const infl_ckpt_info *c = store_run_checkpoint(r, i);
        char gn[32] = "-", where[64];
        snprintf(where, sizeof where, "/checkpoints/%s", c->name);
        hid_t g = H5Gopen2(file, where, H5P_DEFAULT);
        if (g >= 0) {
            double v;
            if (h5u_has_attr(g, "grad_norm") > 0 && h5u_attr_f64(NULL, path, g, where, "grad_norm", &v) == INFL_OK)
                snprintf(gn, sizeof gn, "%.4g", v);
            H5Gclose(g);
        }
        fprintf(out, "  %-*s  %*" PRId64 "  %10.4g  %12.6g  %12s%s\n", wn, c->name, ws, c->step, c->epoch, c->lr, gn,
                i == fin ? "  (final)" : "");
    }
    store_run_close(r);
    return INFL_OK;
}

// A captured file's splits: its top-level groups other than /model and /checkpoints.
static infl_status describe_captured_splits(infl_ctx *ctx, FILE *out, const char *path, hid_t file) {
    char **names = NULL;
    int n = 0;
    FORWARD_IF_ERROR(h5u_list(ctx, path, file, "/", &names, &n));
    infl_status rc = INFL_OK;
    for (int i = 0; i < n && rc == INFL_OK; i++)
        if (h5u_obj_type(file, names[i]) == H5O_TYPE_GROUP && strcmp(names[i], "model") != 0 &&
            strcmp(names[i], "checkpoints") != 0)
            rc = describe_split(ctx, out, path, file, names[i]);
    h5u_list_free(names, n);
    return rc;
}

// ---- entry ----

// The body; store_describe holds the store lock (h5u_lock, h5util.h) around it.

static infl_status store_describe_impl(infl_ctx *ctx, const char *path, FILE *out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "store_describe: no output stream");
    hid_t f;
    FORWARD_IF_ERROR(h5u_open_ro(ctx, path, &f));
    infl_status rc = INFL_OK;
    char fmt[64] = "";
    int64_t ver = -1;
    kv(out, "", "file", "%s", path);
    int has = h5u_has_attr(f, "infl_format");
    if (has > 0) CHECK(h5u_attr_str(ctx, path, f, "root", "infl_format", fmt, sizeof fmt));
    if (!fmt[0]) {
        kv(out, "", "format", "plain HDF5 (no infl_format attribute)");
        rc = print_tree(ctx, out, f);
        goto done;
    }
    has = h5u_has_attr(f, "infl_version");
    if (has > 0) CHECK(h5u_attr_i64(ctx, path, f, "root", "infl_version", &ver));
    if (ver == INFL_FORMAT_VERSION) {
        kv(out, "", "format", "%s, version %" PRId64, fmt, ver);
    } else {
        if (ver < 0)
            kv(out, "", "format", "%s, no infl_version (this infl reads version %d)", fmt, INFL_FORMAT_VERSION);
        else
            kv(out, "", "format", "%s, version %" PRId64 " (this infl reads version %d)", fmt, ver,
               INFL_FORMAT_VERSION);
        rc = print_tree(ctx, out, f);
        goto done;
    }
    if (strcmp(fmt, "dataset") != 0 && strcmp(fmt, "run") != 0 && strcmp(fmt, "captured") != 0) {
        rc = print_tree(ctx, out, f);
        goto done;
    }
    rc = strcmp(fmt, "dataset") == 0 ? describe_dataset(ctx, out, path, f) : describe_run(ctx, out, path, f);
    if (rc == INFL_OK && strcmp(fmt, "captured") == 0) rc = describe_captured_splits(ctx, out, path, f);
    if (rc < 0 && rc != INFL_E_INTERRUPTED) {
        // The structured view failed: show what is there, and still report why.
        fprintf(out, "(cannot describe it as a %s: %s)\n", fmt, ctx ? ctx->detail : "");
        infl_status t = print_tree(ctx, out, f);
        if (t == INFL_E_INTERRUPTED) rc = t;
    }
done:
    H5Fclose(f);
    return rc;
}

infl_status store_describe(infl_ctx *ctx, const char *path, FILE *out) {
    h5u_lock();
    infl_status rc = store_describe_impl(ctx, path, out);
    return h5u_unlock_rc(ctx, rc);
}
