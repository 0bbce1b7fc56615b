/*
 * store_tok.c — the tokenizer's schema (store.h "tokenizers"): checking a tokenizer,
 * and writing and reading it as a group under any HDF5 location, so that a dataset
 * file (/tokenizer) and a GPT's run file store the same thing the same way. The
 * tokenizer's algorithms (learning BPE, encoding, decoding) are in host/data/tokenizer.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "store.h"
#include "store_private.h"

const char *store_tok_kind_name(int kind) {
    return kind == INFL_TOK_BYTES ? "bytes" : kind == INFL_TOK_BPE ? "bpe" : "?";
}

void store_tok_clear(infl_tokenizer *t) {
    if (!t) return;
    free(t->merges);
    memset(t, 0, sizeof *t);
}

// The rules of store.h, with `st` the status a violation returns (INFL_E_ARG for a
// tokenizer built in memory, INFL_E_FORMAT for one read from a file).
static infl_status tok_check(infl_ctx *ctx, infl_status st, const char *what, const infl_tokenizer *t) {
    RETURN_IF(ctx, !t, INFL_E_ARG, "%s: no tokenizer", what);
    RETURN_IF(ctx, t->kind != INFL_TOK_BYTES && t->kind != INFL_TOK_BPE, st,
              "%s: tokenizer kind %d; expected bytes (%d) or bpe (%d)", what, t->kind, INFL_TOK_BYTES, INFL_TOK_BPE);
    RETURN_IF(ctx, t->eot != INFL_TOK_EOT, st, "%s: eot %d; expected %d (the token after the 256 bytes)", what, t->eot,
              INFL_TOK_EOT);
    RETURN_IF(ctx, t->n_merges < 0 || t->n_merges > INFL_TOK_MAX_VOCAB - INFL_TOK_BASE_VOCAB, st,
              "%s: %d merges; expected 0 to %d", what, t->n_merges, INFL_TOK_MAX_VOCAB - INFL_TOK_BASE_VOCAB);
    RETURN_IF(ctx, t->kind == INFL_TOK_BYTES && t->n_merges != 0, st,
              "%s: a bytes tokenizer with %d merges; expected none", what, t->n_merges);
    RETURN_IF(ctx, t->vocab != INFL_TOK_BASE_VOCAB + t->n_merges, st,
              "%s: vocab %d; expected %d (256 bytes, EOT and %d merges)", what, t->vocab,
              INFL_TOK_BASE_VOCAB + t->n_merges, t->n_merges);
    RETURN_IF(ctx, t->n_merges > 0 && !t->merges, INFL_E_ARG, "%s: %d merges but no merge table", what, t->n_merges);
    for (int i = 0; i < t->n_merges; i++)
        for (int j = 0; j < 2; j++) {
            int32_t v = t->merges[2 * i + j];
            RETURN_IF(ctx, v < 0 || v >= INFL_TOK_BASE_VOCAB + i || v == INFL_TOK_EOT, st,
                      "%s: merge %d (token %d) joins token %" PRId32
                      "; expected a byte (0..255) or an earlier merge's token (257..%d)",
                      what, i, INFL_TOK_BASE_VOCAB + i, v, INFL_TOK_BASE_VOCAB + i - 1);
        }
    return INFL_OK;
}

infl_status store_tok_check(infl_ctx *ctx, const char *what, const infl_tokenizer *t) {
    return tok_check(ctx, INFL_E_ARG, what, t);
}

// ---- writing ----

infl_status store_tok_write(infl_ctx *ctx, const char *path, hid_t loc, const char *where, const infl_tokenizer *t) {
    RETURN_IF(ctx, !where || !*where, INFL_E_ARG, "%s: no name for the tokenizer group", path);
    char what[600];
    snprintf(what, sizeof what, "%s: /%s", path, where);
    FORWARD_IF_ERROR(store_tok_check(ctx, what, t));
    infl_status rc = INFL_OK;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), g = H5I_INVALID_HID;
    GOTO_IF(ctx, lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0, INFL_E_INTERNAL,
            "%s: cannot make a link creation list", what);
    GOTO_IF(ctx, h5u_obj_type(loc, where) >= 0, INFL_E_ARG, "%s: already exists", what);
    g = H5Gcreate2(loc, where, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, g < 0, INFL_E_IO, "%s: cannot create the group", what);
    char gw[600];
    snprintf(gw, sizeof gw, "/%s", where);
    CHECK(h5u_wattr_str(ctx, path, g, gw, "kind", store_tok_kind_name(t->kind)));
    int32_t v = t->vocab;
    CHECK(h5u_wattr_i32s(ctx, path, g, gw, "vocab", &v, 0));
    v = t->eot;
    CHECK(h5u_wattr_i32s(ctx, path, g, gw, "eot", &v, 0));
    if (t->kind == INFL_TOK_BPE)
        CHECK(h5u_write_array(ctx, path, g, gw, "merges", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)t->n_merges, 2,
                              t->merges));
done:
    if (g >= 0) H5Gclose(g);
    if (lcpl >= 0) H5Pclose(lcpl);
    return rc;
}

// ---- reading ----

static infl_status tok_read(infl_ctx *ctx, const char *path, hid_t loc, const char *where, infl_tokenizer *t) {
    infl_status rc = INFL_OK;
    hid_t g = H5I_INVALID_HID, d = H5I_INVALID_HID;
    char gw[600];
    snprintf(gw, sizeof gw, "/%s", where);
    int ty = h5u_obj_type(loc, where);
    RETURN_IF(ctx, ty == -2, INFL_E_FORMAT, "%s: %s: cannot read the link", path, gw);
    RETURN_IF(ctx, ty == -1, INFL_E_FORMAT,
              "%s: %s: missing; expected the tokenizer group (attributes kind, vocab, eot)", path, gw);
    RETURN_IF(ctx, ty != H5O_TYPE_GROUP, INFL_E_FORMAT, "%s: %s: expected the tokenizer group, found another object",
              path, gw);
    g = H5Gopen2(loc, where, H5P_DEFAULT);
    RETURN_IF(ctx, g < 0, INFL_E_FORMAT, "%s: %s: cannot open the group", path, gw);
    char kind[32];
    int64_t vocab = 0, eot = 0;
    CHECK(h5u_attr_str(ctx, path, g, gw, "kind", kind, sizeof kind));
    if (strcmp(kind, "bytes") == 0)
        t->kind = INFL_TOK_BYTES;
    else if (strcmp(kind, "bpe") == 0)
        t->kind = INFL_TOK_BPE;
    else
        GOTO_IF(ctx, 1, INFL_E_FORMAT, "%s: %s attribute kind '%s': expected 'bytes' or 'bpe'", path, gw, kind);
    CHECK(h5u_attr_i64(ctx, path, g, gw, "vocab", &vocab));
    CHECK(h5u_attr_i64(ctx, path, g, gw, "eot", &eot));
    GOTO_IF(ctx, vocab < INFL_TOK_BASE_VOCAB || vocab > INFL_TOK_MAX_VOCAB, INFL_E_FORMAT,
            "%s: %s attribute vocab %" PRId64 ": expected %d to %d", path, gw, vocab, INFL_TOK_BASE_VOCAB,
            INFL_TOK_MAX_VOCAB);
    GOTO_IF(ctx, eot != INFL_TOK_EOT, INFL_E_FORMAT, "%s: %s attribute eot %" PRId64 ": expected %d", path, gw, eot,
            INFL_TOK_EOT);
    t->vocab = (int)vocab;
    t->eot = (int)eot;
    t->n_merges = t->vocab - INFL_TOK_BASE_VOCAB;
    GOTO_IF(ctx, t->kind == INFL_TOK_BYTES && t->n_merges != 0, INFL_E_FORMAT,
            "%s: %s: a bytes tokenizer with vocab %d; expected %d", path, gw, t->vocab, INFL_TOK_BASE_VOCAB);
    if (t->kind == INFL_TOK_BPE) {
        char mw[700];
        snprintf(mw, sizeof mw, "%s/merges", gw);
        char expected[96];
        snprintf(expected, sizeof expected, "int32 [%d, 2] (vocab %d - 257)", t->n_merges, t->vocab);
        h5u_dinfo di;
        CHECK(h5u_open_dset(ctx, path, g, "merges", mw, expected, H5P_DEFAULT, h5u_mem_bytes(), &d, &di));
        GOTO_IF(ctx,
                di.cls != H5T_INTEGER || di.rank != 2 || (int64_t)di.dims[0] != t->n_merges || di.dims[1] != 2,
                INFL_E_FORMAT, "%s: %s: expected int32 [%d, 2] (vocab %d - 257 merges), found %s", path, mw,
                t->n_merges, t->vocab, di.desc);
        if (t->n_merges > 0) {
            t->merges = infl_malloc(ctx, (size_t)t->n_merges * 2 * sizeof(int32_t), "the merges");
            GOTO_NOMEM_IF(!t->merges);
            GOTO_IF(ctx, H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, t->merges) < 0, INFL_E_FORMAT,
                    "%s: %s: cannot read", path, mw);
        }
    }
    char what[1300];
    snprintf(what, sizeof what, "%s: %s", path, gw);
    CHECK(tok_check(ctx, INFL_E_FORMAT, what, t));
done:
    if (d >= 0) H5Dclose(d);
    H5Gclose(g);
    return rc;
}

infl_status store_tok_read(infl_ctx *ctx, const char *path, hid_t loc, const char *where, infl_tokenizer *t) {
    RETURN_IF(ctx, !t, INFL_E_ARG, "store_tok_read: no tokenizer to fill");
    memset(t, 0, sizeof *t);
    RETURN_IF(ctx, !where || !*where, INFL_E_ARG, "%s: no name for the tokenizer group", path);
    infl_status rc = tok_read(ctx, path, loc, where, t);
    if (rc < 0) store_tok_clear(t);
    return rc;
}

int store_tok_same(const infl_tokenizer *a, const infl_tokenizer *b) {
    if (a->kind != b->kind || a->vocab != b->vocab || a->eot != b->eot || a->n_merges != b->n_merges) return 0;
    return a->n_merges == 0 || memcmp(a->merges, b->merges, (size_t)a->n_merges * 2 * sizeof(int32_t)) == 0;
}
