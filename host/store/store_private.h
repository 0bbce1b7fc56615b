/*
 * store_private.h — what the store's own files share and nothing else sees: the
 * insides of a split handle and of a dataset writer (store_dataset.c owns them,
 * store_docs.c adds the documents splits), the hyperslab helper, and the tokenizer
 * group's writer and reader (store_tok.c), which any HDF5 location can hold: the
 * dataset file's /tokenizer, and later a GPT run file's own.
 */
#ifndef INFL_STORE_PRIVATE_H
#define INFL_STORE_PRIVATE_H

#include <hdf5.h>
#include <stdint.h>

#include "h5util.h"
#include "store.h"

// ---- a split being read ----

struct infl_split {
    infl_split_info info;
    char path[4096];
    char split[256];
    char ref[4096 + 320];
    hid_t file, group, x, y;
    int n_names;         // cached class names (<= MAX_CACHED_NAMES)
    char (*names)[64];   // (n_names)
    // documents splits
    hid_t tokens, offsets;  // int32 [T], int64 [N+1]
    int64_t T;              // tokens in the whole split
    infl_tokenizer tok;     // the file's /tokenizer
    int64_t *offs;          // scratch (offs_cap) for offsets[a..b]
    size_t offs_cap;
    int32_t *scratch;       // scratch (scratch_cap) for a token range
    size_t scratch_cap;
    // captured splits (store_captured.c): offsets as above, y optional
    infl_captured_spec *cap;  // the file's /model layers
    int64_t rows_total;       // token rows of the whole split (offsets[N])
};

// ---- a dataset file being written ----

typedef struct {
    char name[256];
    hid_t group, x, y;
    int64_t n, d, k;
    infl_ykind kind;
    // documents splits (docs = 1): tokens and offsets grow as documents are appended
    int docs;
    hid_t tokens, offsets;
    int64_t ntok;      // tokens written (= the last offset)
    int64_t max_len;   // longest document so far
} dsw_split;

struct infl_dsw {
    char path[4096];
    char tmp[4096 + 64];
    hid_t file;
    dsw_split *splits;
    int nsplits, cap;
    int has_classes;
    int has_tok;       // /tokenizer written
    int tok_vocab;     // its vocabulary
};

// ---- helpers shared by store_dataset.c and store_docs.c ----

// Reads or writes rows [r0, r0 + nrows) of a 1-D (w = 0) or 2-D [N, w] dataset by a
// hyperslab, in memory type mt. Messages name path and where.
infl_status store_rows_io(infl_ctx *ctx, const char *path, hid_t dset, const char *where, hid_t mt, int64_t r0,
                          int64_t nrows, int64_t w, void *buf, int write);
// Opens dataset `name` of the split's group (named /split/name in messages) with
// h5u_open_dset: streamed, so bounded by what the file really stores, not by memory.
infl_status store_split_member(infl_ctx *ctx, infl_split *s, const char *name, const char *expected, hid_t dapl,
                               hid_t *out, h5u_dinfo *info);
// The split lookup of a writer (NULL when not added).
dsw_split *store_dsw_find(infl_dsw *w, const char *name);
// A new split's name: one HDF5 group name, not /classes or /tokenizer, not added yet.
infl_status store_dsw_check_name(infl_ctx *ctx, infl_dsw *w, const char *split);
// The next split slot of a writer, zeroed, named, its ids invalid (not counted in
// nsplits yet); NULL with INFL_E_NOMEM on the context.
dsw_split *store_dsw_new(infl_ctx *ctx, infl_dsw *w, const char *split);

// store_docs.c: the documents half of a split handle and of a writer.
// Opens the documents split whose group s->group is open (and /classes read): checks
// tokens, offsets, y, max_len and /tokenizer and the range of ref; fills s->info.
infl_status store_docs_open(infl_ctx *ctx, infl_split *s, const infl_dataref *ref);
void store_docs_close(infl_split *s);  // closes the documents ids, frees the scratch
// Before commit: writes each documents split's max_len; INFL_E_ARG when the file has
// documents but no tokenizer.
infl_status store_docs_finish(infl_ctx *ctx, infl_dsw *w);
// Closes a writer split's documents ids; < 0 when a close failed.
int store_docs_wclose(dsw_split *sp);

// The info of a ragged split (documents, captured examples): kind, N, the range [b, e), its
// longest example and the token rows of the range; no features (d = 0), class labels.
void store_split_set_ragged(infl_split_info *in, infl_split_kind kind, int64_t n, int64_t b, int64_t e,
                            int64_t max_len, int64_t tokens);
// store_captured.c: a split of a `captured` file, whose group s->group is open.
infl_status store_captured_open(infl_ctx *ctx, infl_split *s, const infl_dataref *ref);
// Class labels of examples [r0, r0 + nrows) (absolute rows) into y, checked (>= 0, below the
// file's /classes count); -1 each when none were captured.
infl_status store_captured_labels(infl_ctx *ctx, infl_split *s, int64_t r0, int64_t nrows, int32_t *y);
// Checks a (nrows, w) float block read from rows r0.. of `where` is finite (INFL_E_VALUE naming
// the row and column).
infl_status store_check_finite(infl_ctx *ctx, const char *path, const char *where, const float *v, int64_t r0,
                               int64_t nrows, int64_t w);

// ---- tokenizer groups (store_tok.c) ----
// Callers hold the store lock (h5util.h), as every store function that calls HDF5 does.

// Writes tokenizer t (checked first) as the new group `where` under loc ("tokenizer", or
// a path such as "model/tokenizer"): attributes kind, vocab, eot; dataset merges int32
// [M, 2] for BPE. Messages name path and /where.
infl_status store_tok_write(infl_ctx *ctx, const char *path, hid_t loc, const char *where, const infl_tokenizer *t);
// Reads and checks the group `where` under loc into *t (t->merges malloc'd: store_tok_clear).
// INFL_E_FORMAT naming path, /where and the attribute or merge that is wrong; on failure *t is zeroed.
infl_status store_tok_read(infl_ctx *ctx, const char *path, hid_t loc, const char *where, infl_tokenizer *t);

#endif
