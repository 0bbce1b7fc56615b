/*
 * store_docs.c — documents splits of `dataset` files (store.h; DESIGN.md "documents"):
 * the ragged layout tokens int32 [T] + offsets int64 [N+1] + y int32 [N], opened
 * beside the rows splits of store_dataset.c (which dispatches here when a split has
 * `tokens`), read document range by document range, and written by appending blocks
 * of documents to extendible, chunked, compressed datasets.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"
#include "store_private.h"

#define TOK_CHUNK (1 << 16)     // tokens per chunk of /split/tokens (256 KiB)
#define ROW_CHUNK (1 << 13)     // entries per chunk of offsets and y
#define TOK_CACHE (16u << 20)   // chunk cache of an open tokens dataset
#define SLACK_TOKENS (1 << 16)  // a range read may fetch this many tokens more than it keeps

// ---- reading ----

// Reads offsets[i] into *v.
static infl_status read_offset(infl_ctx *ctx, infl_split *s, int64_t i, int64_t *v) {
    char where[300];
    snprintf(where, sizeof where, "/%s/offsets", s->split);
    return store_rows_io(ctx, s->path, s->offsets, where, H5T_NATIVE_INT64, i, 1, 0, v, 0);
}

void store_split_set_ragged(infl_split_info *in, infl_split_kind kind, int64_t n, int64_t b, int64_t e,
                            int64_t max_len, int64_t tokens) {
    in->kind = kind;
    in->n_total = n;
    in->begin = b;
    in->n = e - b;
    in->d = 0;
    in->y_kind = INFL_Y_CLASS;
    in->k = 1;
    in->max_len = max_len;
    in->tokens = tokens;
}

infl_status store_docs_open(infl_ctx *ctx, infl_split *s, const infl_dataref *ref) {
    const char *path = s->path, *sp = s->split;
    infl_status rc = INFL_OK;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    GOTO_IF(ctx, dapl < 0 || H5Pset_chunk_cache(dapl, 521, TOK_CACHE, 0.75) < 0, INFL_E_INTERNAL,
            "%s: cannot make a dataset access list", path);
    h5u_dinfo ti, oi, yi;
    CHECK(store_split_member(ctx, s, "tokens", "int32 [T] (a documents split)", dapl, &s->tokens, &ti));
    GOTO_IF(ctx, !h5u_is_i32(&ti) || ti.rank != 1, INFL_E_FORMAT, "%s: /%s/tokens: expected int32 [T], found %s",
            path, sp, ti.desc);
    s->T = (int64_t)ti.dims[0];
    CHECK(store_split_member(ctx, s, "offsets", "int64 [N+1] (a documents split)", H5P_DEFAULT, &s->offsets, &oi));
    GOTO_IF(ctx, oi.cls != H5T_INTEGER || oi.size != 8 || !oi.is_signed || oi.rank != 1 || oi.dims[0] < 1,
            INFL_E_FORMAT, "%s: /%s/offsets: expected int64 [N+1] with N >= 0 documents, found %s", path, sp,
            oi.desc);
    const int64_t n = (int64_t)oi.dims[0] - 1;
    char yexp[200];
    snprintf(yexp, sizeof yexp, "int32 [N] with N = %" PRId64 " documents (offsets has N+1 entries)", n);
    CHECK(store_split_member(ctx, s, "y", yexp, H5P_DEFAULT, &s->y, &yi));
    GOTO_IF(ctx, !h5u_is_i32(&yi) || yi.rank != 1 || (int64_t)yi.dims[0] != n, INFL_E_FORMAT,
            "%s: /%s/y: expected %s, found %s", path, sp, yexp, yi.desc);

    char gw[300];
    snprintf(gw, sizeof gw, "/%s", sp);
    int64_t max_len = 0, first = 0, last = 0;
    CHECK(h5u_attr_i64(ctx, path, s->group, gw, "max_len", &max_len));
    GOTO_IF(ctx, max_len < 0 || max_len > INT32_MAX || max_len > s->T || (s->T > 0 && max_len == 0), INFL_E_FORMAT,
            "%s: /%s attribute max_len %" PRId64 ": expected the longest document, 0 to %" PRId64 " tokens", path,
            sp, max_len, s->T < INT32_MAX ? s->T : (int64_t)INT32_MAX);
    CHECK(read_offset(ctx, s, 0, &first));
    CHECK(read_offset(ctx, s, n, &last));
    GOTO_IF(ctx, first != 0 || last != s->T, INFL_E_FORMAT,
            "%s: /%s/offsets: runs from %" PRId64 " to %" PRId64 "; expected 0 to T = %" PRId64
            " (the length of /%s/tokens)",
            path, sp, first, last, s->T, sp);

    // the document range
    int64_t b = ref->begin, e = ref->end < 0 ? n : ref->end;
    GOTO_IF(ctx, b < 0 || e > n || b > n, INFL_E_ARG,
            "%s: documents [%" PRId64 ":%" PRId64 "] lie outside /%s, which has N = %" PRId64 " documents", s->ref, b,
            e, sp, n);
    GOTO_IF(ctx, e <= b, INFL_E_ARG,
            "%s: the document range [%" PRId64 ":%" PRId64 "] is empty (/%s has N = %" PRId64 " documents)", s->ref, b,
            e, sp, n);
    int64_t ob = 0, oe = 0;
    CHECK(read_offset(ctx, s, b, &ob));
    CHECK(read_offset(ctx, s, e, &oe));
    GOTO_IF(ctx, ob < 0 || oe < ob || oe > s->T, INFL_E_FORMAT,
            "%s: /%s/offsets[%" PRId64 "] = %" PRId64 ", [%" PRId64 "] = %" PRId64
            ": expected non-decreasing offsets within the %" PRId64 " tokens",
            path, sp, b, ob, e, oe, s->T);
    CHECK(store_tok_read(ctx, path, s->file, "tokenizer", &s->tok));

    store_split_set_ragged(&s->info, INFL_SPLIT_DOCS, n, b, e, max_len, oe - ob);
    s->info.vocab = s->tok.vocab;
done:
    if (dapl >= 0) H5Pclose(dapl);
    return rc;
}

void store_docs_close(infl_split *s) {
    if (s->offsets >= 0) H5Dclose(s->offsets);
    if (s->tokens >= 0) H5Dclose(s->tokens);
    s->offsets = s->tokens = H5I_INVALID_HID;
    store_tok_clear(&s->tok);
    free(s->offs);
    free(s->scratch);
    s->offs = NULL;
    s->scratch = NULL;
}

// Grows a scratch buffer to hold n elements of `size` bytes.
static infl_status grow(infl_ctx *ctx, void **buf, size_t *cap, size_t n, size_t size, const char *what) {
    if (n <= *cap) return INFL_OK;
    void *p = realloc(*buf, n * size);
    RETURN_IF(ctx, !p, INFL_E_NOMEM, "out of memory for %s (%zu bytes)", what, n * size);
    *buf = p;
    *cap = n;
    return INFL_OK;
}

// Checks the first n tokens of document `doc` (a row of the split) against the vocabulary.
static infl_status check_tokens(infl_ctx *ctx, const infl_split *s, const int32_t *t, int64_t n, int64_t doc) {
    for (int64_t j = 0; j < n; j++)
        RETURN_IF(ctx, t[j] < 0 || t[j] >= s->tok.vocab, INFL_E_VALUE,
                  "%s: /%s/tokens: document %" PRId64 " position %" PRId64 ": token %" PRId32
                  " outside the vocabulary [0, %d) of /tokenizer",
                  s->path, s->split, doc, j, t[j], s->tok.vocab);
    return INFL_OK;
}

static infl_status read_docs_impl(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, int T, int32_t pad,
                                  int32_t *tok, int32_t *len, int32_t *label) {
    RETURN_IF(ctx, !s, INFL_E_ARG, "store_split_read_docs: no split");
    const char *path = s->path, *sp = s->split;
    const infl_split_info *in = &s->info;
    RETURN_IF(ctx, in->kind != INFL_SPLIT_DOCS, INFL_E_ARG,
              "%s: /%s holds rows x [N, D], not documents (tokens, offsets)", path, sp);
    RETURN_IF(ctx, row < 0 || nrows < 0 || row > in->n || nrows > in->n - row, INFL_E_ARG,
              "%s: cannot read documents [%" PRId64 ":%" PRId64 "] of a range of %" PRId64 " documents", s->ref, row,
              row + nrows, in->n);
    RETURN_IF(ctx, T < 0 || (T > 0 && !tok) || !len, INFL_E_ARG,
              "%s: store_split_read_docs needs len and, for T = %d > 0, tok", s->ref, T);
    if (nrows == 0) return INFL_OK;
    const int64_t r0 = in->begin + row;
    char where[300];

    // offsets[r0 .. r0 + nrows]: the lengths, checked
    FORWARD_IF_ERROR(grow(ctx, (void **)&s->offs, &s->offs_cap, (size_t)nrows + 1, sizeof(int64_t), "offsets"));
    const int64_t *o = s->offs;
    snprintf(where, sizeof where, "/%s/offsets", sp);
    FORWARD_IF_ERROR(store_rows_io(ctx, path, s->offsets, where, H5T_NATIVE_INT64, r0, nrows + 1, 0, s->offs, 0));
    int64_t need = 0;
    for (int64_t i = 0; i < nrows; i++) {
        int64_t l = o[i + 1] - o[i];
        RETURN_IF(ctx, o[i] < 0 || l < 0 || o[i + 1] > s->T, INFL_E_FORMAT,
                  "%s: %s[%" PRId64 ":%" PRId64 "] = %" PRId64 ", %" PRId64
                  ": expected non-decreasing offsets within the %" PRId64 " tokens",
                  path, where, r0 + i, r0 + i + 2, o[i], o[i + 1], s->T);
        RETURN_IF(ctx, l > in->max_len, INFL_E_FORMAT,
                  "%s: %s: document %" PRId64 " has %" PRId64 " tokens, more than the split's max_len %" PRId64, path,
                  where, r0 + i, l, in->max_len);
        len[i] = (int32_t)l;
        need += l < T ? l : T;
    }

    // the tokens: the whole range at once when little of it is cut, else document by document
    snprintf(where, sizeof where, "/%s/tokens", sp);
    const int64_t total = o[nrows] - o[0];
    const int whole = total <= 2 * need + SLACK_TOKENS;
    if (T > 0 && whole && total > 0) {
        FORWARD_IF_ERROR(
            grow(ctx, (void **)&s->scratch, &s->scratch_cap, (size_t)total, sizeof(int32_t), "a token range"));
        FORWARD_IF_ERROR(store_rows_io(ctx, path, s->tokens, where, H5T_NATIVE_INT32, o[0], total, 0, s->scratch, 0));
    }
    for (int64_t i = 0; i < nrows && T > 0; i++) {
        int32_t *dst = tok + (size_t)i * (size_t)T;
        int64_t keep = len[i] < T ? len[i] : T;
        if (keep > 0) {
            if (whole)
                memcpy(dst, s->scratch + (o[i] - o[0]), (size_t)keep * sizeof(int32_t));
            else
                FORWARD_IF_ERROR(store_rows_io(ctx, path, s->tokens, where, H5T_NATIVE_INT32, o[i], keep, 0, dst, 0));
            FORWARD_IF_ERROR(check_tokens(ctx, s, dst, keep, r0 + i));
        }
        for (int64_t j = keep; j < T; j++) dst[j] = pad;
    }

    // the labels
    if (label) {
        snprintf(where, sizeof where, "/%s/y", sp);
        FORWARD_IF_ERROR(store_rows_io(ctx, path, s->y, where, H5T_NATIVE_INT32, r0, nrows, 0, label, 0));
        for (int64_t i = 0; i < nrows; i++)
            RETURN_IF(ctx, label[i] < 0 || (in->n_classes > 0 && label[i] >= in->n_classes), INFL_E_VALUE,
                      "%s: %s document %" PRId64 ": label %" PRId32 "; expected a class index 0 to %d", path, where,
                      r0 + i, label[i], in->n_classes > 0 ? in->n_classes - 1 : INT32_MAX);
    }
    return INFL_OK;
}

infl_status store_split_read_docs(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, int T, int32_t pad,
                                  int32_t *tok, int32_t *len, int32_t *label) {
    h5u_lock();
    infl_status rc = read_docs_impl(ctx, s, row, nrows, T, pad, tok, len, label);
    return h5u_unlock_rc(ctx, rc);
}

const infl_tokenizer *store_split_tokenizer(const infl_split *s) {
    return s && s->info.kind == INFL_SPLIT_DOCS ? &s->tok : NULL;
}

// ---- writing ----

// Creates an extendible 1-D dataset of `init` elements, chunked by `chunk`, shuffled and
// deflated when this HDF5 has the filter.
static hid_t create_ext(hid_t loc, const char *name, hid_t ftype, hsize_t init, hsize_t chunk) {
    hsize_t maxd = H5S_UNLIMITED;
    hid_t s = H5Screate_simple(1, &init, &maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE), d = -1;
    int ok = s >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &chunk) >= 0;
    if (ok && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0)
        ok = H5Pset_shuffle(dcpl) >= 0 && H5Pset_deflate(dcpl, 4) >= 0;
    if (ok) d = H5Dcreate2(loc, name, ftype, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (s >= 0) H5Sclose(s);
    return d;
}

static infl_status add_docs_split_impl(infl_ctx *ctx, infl_dsw *w, const char *split) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_add_docs_split: no writer");
    const char *path = w->path;
    FORWARD_IF_ERROR(store_dsw_check_name(ctx, w, split));
    dsw_split *sp = store_dsw_new(ctx, w, split);
    if (!sp) return INFL_E_NOMEM;
    sp->docs = 1;
    sp->kind = INFL_Y_CLASS;
    sp->k = 1;
    w->nsplits++;  // counted now so that commit/abort close whatever was created
    sp->group = H5Gcreate2(w->file, split, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    RETURN_IF(ctx, sp->group < 0, INFL_E_IO, "%s: /%s: cannot create the group", path, split);
    sp->tokens = create_ext(sp->group, "tokens", H5T_STD_I32LE, 0, TOK_CHUNK);
    RETURN_IF(ctx, sp->tokens < 0, INFL_E_IO, "%s: /%s/tokens: cannot create int32 [T]", path, split);
    sp->offsets = create_ext(sp->group, "offsets", H5T_STD_I64LE, 1, ROW_CHUNK);
    RETURN_IF(ctx, sp->offsets < 0, INFL_E_IO, "%s: /%s/offsets: cannot create int64 [N+1]", path, split);
    sp->y = create_ext(sp->group, "y", H5T_STD_I32LE, 0, ROW_CHUNK);
    RETURN_IF(ctx, sp->y < 0, INFL_E_IO, "%s: /%s/y: cannot create int32 [N]", path, split);
    int64_t zero = 0;
    char where[300];
    snprintf(where, sizeof where, "/%s/offsets", split);
    return store_rows_io(ctx, path, sp->offsets, where, H5T_NATIVE_INT64, 0, 1, 0, &zero, 1);
}

infl_status store_dataset_add_docs_split(infl_ctx *ctx, infl_dsw *w, const char *split) {
    h5u_lock();
    infl_status rc = add_docs_split_impl(ctx, w, split);
    return h5u_unlock_rc(ctx, rc);
}

// Extends a 1-D dataset to `n` elements and writes v (count) at `at`.
static infl_status append_1d(infl_ctx *ctx, const char *path, hid_t d, const char *where, hid_t mt, int64_t at,
                             int64_t count, const void *v) {
    hsize_t size = (hsize_t)(at + count);
    RETURN_IF(ctx, H5Dset_extent(d, &size) < 0, INFL_E_IO, "%s: %s: cannot grow to %" PRId64 " entries", path, where,
              at + count);
    return store_rows_io(ctx, path, d, where, mt, at, count, 0, (void *)v, 1);
}

static infl_status append_docs_impl(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n, const int32_t *len,
                                    const int32_t *tok, const int32_t *label) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_append_docs: no writer");
    dsw_split *sp = split ? store_dsw_find(w, split) : NULL;
    RETURN_IF(ctx, !sp || !sp->docs, INFL_E_ARG, "%s: no documents split /%s was added", w->path,
              split ? split : "");
    RETURN_IF(ctx, !w->has_tok, INFL_E_ARG, "%s: /%s: set the tokenizer before appending documents", w->path, split);
    RETURN_IF(ctx, n < 0 || (n > 0 && (!len || !label)), INFL_E_ARG,
              "%s: /%s: %" PRId64 " documents need their lengths and labels", w->path, split, n);
    if (n == 0) return INFL_OK;
    int64_t total = 0, longest = sp->max_len;
    for (int64_t i = 0; i < n; i++) {
        RETURN_IF(ctx, len[i] < 0, INFL_E_ARG, "%s: /%s document %" PRId64 ": length %" PRId32, w->path, split,
                  sp->n + i, len[i]);
        RETURN_IF(ctx, label[i] < 0, INFL_E_ARG, "%s: /%s document %" PRId64 ": label %" PRId32 "; expected >= 0",
                  w->path, split, sp->n + i, label[i]);
        total += len[i];
        if (len[i] > longest) longest = len[i];
    }
    RETURN_IF(ctx, total > 0 && !tok, INFL_E_ARG, "%s: /%s: no tokens given", w->path, split);
    for (int64_t j = 0; j < total; j++)
        RETURN_IF(ctx, tok[j] < 0 || tok[j] >= w->tok_vocab, INFL_E_ARG,
                  "%s: /%s: token %" PRId32 " at position %" PRId64 " of the block is outside the vocabulary [0, %d)",
                  w->path, split, tok[j], j, w->tok_vocab);
    int64_t *offs = infl_malloc(ctx, (size_t)n * sizeof *offs, "a block of offsets");
    if (!offs) return INFL_E_NOMEM;
    int64_t at = sp->ntok;
    for (int64_t i = 0; i < n; i++) offs[i] = (at += len[i]);
    infl_status rc = INFL_OK;
    char where[300];
    snprintf(where, sizeof where, "/%s/tokens", split);
    if (total > 0) CHECK(append_1d(ctx, w->path, sp->tokens, where, H5T_NATIVE_INT32, sp->ntok, total, tok));
    snprintf(where, sizeof where, "/%s/offsets", split);
    CHECK(append_1d(ctx, w->path, sp->offsets, where, H5T_NATIVE_INT64, sp->n + 1, n, offs));
    snprintf(where, sizeof where, "/%s/y", split);
    CHECK(append_1d(ctx, w->path, sp->y, where, H5T_NATIVE_INT32, sp->n, n, label));
    sp->n += n;
    sp->ntok += total;
    sp->max_len = longest;
done:
    free(offs);
    return rc;
}

infl_status store_dataset_append_docs(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n, const int32_t *len,
                                      const int32_t *tok, const int32_t *label) {
    h5u_lock();
    infl_status rc = append_docs_impl(ctx, w, split, n, len, tok, label);
    return h5u_unlock_rc(ctx, rc);
}

static infl_status set_tokenizer_impl(infl_ctx *ctx, infl_dsw *w, const infl_tokenizer *t) {
    RETURN_IF(ctx, !w, INFL_E_ARG, "store_dataset_set_tokenizer: no writer");
    RETURN_IF(ctx, w->has_tok, INFL_E_ARG, "%s: /tokenizer was already written", w->path);
    FORWARD_IF_ERROR(store_tok_write(ctx, w->path, w->file, "tokenizer", t));
    w->has_tok = 1;
    w->tok_vocab = t->vocab;
    return INFL_OK;
}

infl_status store_dataset_set_tokenizer(infl_ctx *ctx, infl_dsw *w, const infl_tokenizer *t) {
    h5u_lock();
    infl_status rc = set_tokenizer_impl(ctx, w, t);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_docs_finish(infl_ctx *ctx, infl_dsw *w) {
    for (int i = 0; i < w->nsplits; i++) {
        dsw_split *sp = &w->splits[i];
        if (!sp->docs) continue;
        RETURN_IF(ctx, !w->has_tok, INFL_E_ARG, "%s: /%s holds documents but the file has no /tokenizer", w->path,
                  sp->name);
        RETURN_IF(ctx, sp->max_len > INT32_MAX, INFL_E_ARG,
                  "%s: /%s: a document of %" PRId64 " tokens; at most %d are supported", w->path, sp->name,
                  sp->max_len, INT32_MAX);
        char where[300];
        snprintf(where, sizeof where, "/%s", sp->name);
        FORWARD_IF_ERROR(h5u_wattr_i64(ctx, w->path, sp->group, where, "max_len", sp->max_len));
    }
    return INFL_OK;
}

int store_docs_wclose(dsw_split *sp) {
    int bad = 0;
    if (sp->offsets >= 0 && H5Dclose(sp->offsets) < 0) bad = 1;
    if (sp->tokens >= 0 && H5Dclose(sp->tokens) < 0) bad = 1;
    sp->offsets = sp->tokens = H5I_INVALID_HID;
    return bad ? -1 : 0;
}
