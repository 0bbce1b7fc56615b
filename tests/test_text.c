/*
 * test_text.c — documents: the tokenizers (bytes and BPE: a hand-computed learning
 * case, exact round trips of any bytes and of multi-byte UTF-8), the documents splits
 * of the store (ragged layout, padded reads of a range, every check), `infl import
 * text` on small generated corpora (each separator, --max-len, --limit, the seeded
 * split, bad input, --force) and on Debian's fortunes when they are installed.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "data/tokenizer.h"
#include "infl.h"
#include "store/store.h"
#include "store/store_private.h"
#include "testutil.h"

#define FORTUNES "/usr/share/games/fortunes"

#define CLI(...)                                           \
    ({                                                     \
        const char *argv_[] = {"infl", __VA_ARGS__, NULL}; \
        tu_cli(argv_);                                     \
    })

// ---- helpers ----

static tok_codec *codec_of(infl_ctx *ctx, const infl_tokenizer *t) {
    tok_codec *c = NULL;
    infl_status st = tok_codec_create(ctx, t, &c);
    cr_assert_eq(st, INFL_OK, "%s", infl_ctx_error(ctx));
    return c;
}

// Encodes s, checks the decoding is s exactly, returns the number of tokens.
static int64_t round_trip(infl_ctx *ctx, tok_codec *c, const uint8_t *s, int64_t n) {
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    uint8_t *back = malloc((size_t)n + 1);
    int64_t k = -1;
    cr_assert_eq(tok_encode(ctx, c, s, n, ids, &k), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(k >= 0 && k <= n);
    size_t nb = 0;
    cr_assert_eq(tok_decode(ctx, c, ids, k, back, (size_t)n, &nb), INFL_OK);
    cr_assert_eq(nb, (size_t)n, "decoded %zu bytes of %lld", nb, (long long)n);
    cr_assert(n == 0 || memcmp(back, s, (size_t)n) == 0, "the decoding differs from the text");
    // token by token: every token's bytes in turn give the text back, also where a token
    // ends inside a multi-byte character
    int64_t at = 0;
    for (int64_t i = 0; i < k; i++) {
        int l = -1;
        const uint8_t *b = tok_token_bytes(c, ids[i], &l);
        cr_assert(b && l >= 1 && at + l <= n);
        cr_assert(memcmp(b, s + at, (size_t)l) == 0);
        at += l;
    }
    cr_assert_eq(at, n);
    free(ids);
    free(back);
    return k;
}

// A text file under the test's folder; returns its path (a static rotating buffer).
static const char *put(const char *name, const char *text) {
    const char *p = tu_path(name);
    tu_write_file(p, text, strlen(text));
    return p;
}

// Every document of FILE:/split decoded: docs[i] is a malloc'd NUL-terminated string,
// labels[i] its class. Returns the number of documents.
static int64_t read_docs(const char *path, const char *split, char ***docs, int32_t **labels) {
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, split));
    const infl_split_info *in = store_split_info(s);
    cr_assert_eq(in->kind, INFL_SPLIT_DOCS);
    int64_t n = in->n;
    int T = (int)(in->max_len > 0 ? in->max_len : 1);
    int32_t *tok = malloc((size_t)n * (size_t)T * sizeof *tok), *len = malloc((size_t)n * sizeof *len);
    *labels = malloc((size_t)n * sizeof **labels);
    cr_assert_eq(store_split_read_docs(ctx, s, 0, n, T, -7, tok, len, *labels), INFL_OK, "%s", infl_ctx_error(ctx));
    tok_codec *c = codec_of(ctx, store_split_tokenizer(s));
    *docs = malloc((size_t)n * sizeof **docs);
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t nb = 0;
        cr_assert_eq(tok_decode(ctx, c, tok + i * T, len[i], NULL, 0, &nb), INFL_OK);
        (*docs)[i] = malloc(nb + 1);
        cr_assert_eq(tok_decode(ctx, c, tok + i * T, len[i], (uint8_t *)(*docs)[i], nb, &nb), INFL_OK);
        (*docs)[i][nb] = 0;
        total += len[i];
        for (int j = len[i]; j < T; j++) cr_assert_eq(tok[i * T + j], -7, "padding");
    }
    cr_assert_eq(total, in->tokens);
    tok_codec_free(c);
    free(tok);
    free(len);
    store_split_close(s);
    infl_ctx_free(ctx);
    return n;
}

static void free_docs(char **docs, int32_t *labels, int64_t n) {
    for (int64_t i = 0; i < n; i++) free(docs[i]);
    free(docs);
    free(labels);
}

// infl_import_text with files, a separator and no test split, asserting success.
static infl_import_text_result import(const char *const *files, int nfiles, const char *sep, int bpe,
                                      const char *out) {
    infl_ctx *ctx = tu_ctx();
    infl_import_text_options o = infl_import_text_options_default();
    o.files = files;
    o.nfiles = nfiles;
    o.sep = sep;
    o.bpe_vocab = bpe;
    o.test_fraction = 0;
    o.force = 1;
    infl_import_text_result r;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return r;
}

// Files in the test's folder other than dot files (the CLI driver's captures).
static int count_files(void) {
    DIR *d = opendir(tu_tmpdir());
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

// ---- tokenizers ----

static const char *const utf8_samples[] = {
    "plain ASCII, with punctuation!",
    "caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e",                            // é è û
    "\xe6\xbc\xa2\xe5\xad\x97 \xe3\x81\x8b\xe3\x81\xaa",                            // 漢字 かな
    "emoji \xf0\x9f\x98\x80\xf0\x9f\x8e\x89 and \xf0\x9f\x90\x8d",                  // 😀🎉 🐍
    "mixed: na\xc3\xafve \xe6\xbc\xa2 \xf0\x9f\x98\x80 end\n\ttabs and lines\r\n",
};
#define NSAMPLES (int)(sizeof utf8_samples / sizeof utf8_samples[0])

Test(tok, bytes_round_trip) {
    infl_ctx *ctx = tu_ctx();
    infl_tokenizer t;
    tok_init_bytes(&t);
    cr_assert_eq(t.vocab, 257);
    cr_assert_eq(t.eot, 256);
    tok_codec *c = codec_of(ctx, &t);
    // every byte value, and random bytes (not UTF-8 at all)
    uint8_t all[256 * 3];
    for (int i = 0; i < 256 * 3; i++) all[i] = (uint8_t)(i * 151 + 7);
    cr_assert_eq(round_trip(ctx, c, all, sizeof all), (int64_t)sizeof all);
    uint64_t seed = 5;
    uint8_t rnd[1000];
    for (int i = 0; i < 1000; i++) rnd[i] = (uint8_t)(tu_uniform(&seed) * 256);
    cr_assert_eq(round_trip(ctx, c, rnd, 1000), 1000);
    for (int i = 0; i < NSAMPLES; i++) {
        const uint8_t *s = (const uint8_t *)utf8_samples[i];
        int64_t n = (int64_t)strlen(utf8_samples[i]);
        cr_assert_eq(round_trip(ctx, c, s, n), n, "bytes: one token per byte");
    }
    // the ids are the bytes; EOT decodes to nothing; an id outside the vocabulary is refused
    int32_t ids[4] = {0xC3, 0xA9, 256, 'x'};
    uint8_t out[8];
    size_t nb = 0;
    cr_assert_eq(tok_decode(ctx, c, ids, 4, out, sizeof out, &nb), INFL_OK);
    cr_assert_eq(nb, 3);
    cr_assert(memcmp(out, "\xc3\xa9x", 3) == 0);
    // half of a two-byte character decodes to its one byte
    cr_assert_eq(tok_decode(ctx, c, ids, 1, out, sizeof out, &nb), INFL_OK);
    cr_assert_eq(nb, 1);
    cr_assert_eq(out[0], 0xC3);
    ids[1] = 257;
    cr_assert_eq(tok_decode(ctx, c, ids, 2, out, sizeof out, &nb), INFL_E_VALUE);
    cr_assert(strstr(infl_ctx_error(ctx), "position 1") != NULL, "%s", infl_ctx_error(ctx));
    tok_codec_free(c);
    infl_ctx_free(ctx);
}

// Learns on documents given as NUL-terminated strings.
static infl_status learn(infl_ctx *ctx, const char *const *docs, int n, int V, int64_t min_count, infl_tokenizer *t,
                         tok_learn_stats *st) {
    int64_t off[64];
    char text[4096];
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(docs[i]);
        memcpy(text + off[i], docs[i], l);
        off[i + 1] = off[i] + (int64_t)l;
    }
    return tok_learn_bpe(ctx, (const uint8_t *)text, off, n, V, min_count, t, st);
}

Test(tok, bpe_hand_computed) {
    infl_ctx *ctx = tu_ctx();
    infl_tokenizer t;
    tok_learn_stats st;
    // "aaabdaaabac": aa occurs 4 times (overlapping), ab twice: aa -> 257;
    // Z a b d Z a b a c: (257,97) and (97,98) twice each: the smaller pair, ab -> 258;
    // Z Y d Z Y a c: (257,258) twice -> 259; X d X a c: every pair once, so it stops.
    const char *w[] = {"aaabdaaabac"};
    cr_assert_eq(learn(ctx, w, 1, 1024, 2, &t, &st), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(t.kind, INFL_TOK_BPE);
    cr_assert_eq(t.n_merges, 3, "%d merges", t.n_merges);
    cr_assert_eq(t.vocab, 260);
    const int32_t want[6] = {'a', 'a', 'a', 'b', 257, 258};
    for (int i = 0; i < 6; i++) cr_assert_eq(t.merges[i], want[i], "merges[%d] = %d", i, t.merges[i]);
    cr_assert_eq(st.tokens_before, 11);
    cr_assert_eq(st.tokens_after, 5);
    cr_assert_eq(st.last_count, 2);
    tok_codec *c = codec_of(ctx, &t);
    int32_t ids[11];
    int64_t k = 0;
    cr_assert_eq(tok_encode(ctx, c, (const uint8_t *)w[0], 11, ids, &k), INFL_OK);
    const int32_t enc[5] = {259, 'd', 259, 'a', 'c'};
    cr_assert_eq(k, 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(ids[i], enc[i]);
    tok_codec_free(c);
    store_tok_clear(&t);

    // a vocabulary of 258 stops after the first merge
    cr_assert_eq(learn(ctx, w, 1, 258, 2, &t, NULL), INFL_OK);
    cr_assert_eq(t.n_merges, 1);
    cr_assert_eq(t.vocab, 258);
    store_tok_clear(&t);

    // ties: ab, bc, cd twice each -> ab; then (257,99) and (99,100) twice -> cd (the
    // smaller first id); then (257,258)
    const char *x[] = {"abcd", "abcd"};
    cr_assert_eq(learn(ctx, x, 2, 1024, 2, &t, NULL), INFL_OK);
    const int32_t want2[6] = {'a', 'b', 'c', 'd', 257, 258};
    cr_assert_eq(t.n_merges, 3);
    for (int i = 0; i < 6; i++) cr_assert_eq(t.merges[i], want2[i], "merges[%d] = %d", i, t.merges[i]);
    store_tok_clear(&t);

    // pairs never cross documents: "xa" + "bx" as one text would have ab
    const char *y[] = {"xa", "bx", "xa", "bx"};
    cr_assert_eq(learn(ctx, y, 4, 1024, 1, &t, NULL), INFL_OK);
    cr_assert_eq(t.n_merges, 2);
    cr_assert_eq(t.merges[0], 'b');  // (b, x) before (x, a): the smaller first id
    cr_assert_eq(t.merges[1], 'x');
    cr_assert_eq(t.merges[2], 'x');
    cr_assert_eq(t.merges[3], 'a');
    store_tok_clear(&t);

    // bad vocabularies
    cr_assert_eq(learn(ctx, w, 1, 257, 2, &t, NULL), INFL_E_ARG);
    cr_assert_eq(learn(ctx, w, 1, INFL_TOK_MAX_VOCAB + 1, 2, &t, NULL), INFL_E_ARG);
    infl_ctx_free(ctx);
}

Test(tok, bpe_round_trip_utf8) {
    infl_ctx *ctx = tu_ctx();
    // a corpus of the samples, many times, with variations
    enum { NDOC = 40 };
    char *text = malloc(1 << 16);
    int64_t off[NDOC + 1];
    off[0] = 0;
    for (int d = 0; d < NDOC; d++) {
        int l = snprintf(text + off[d], 4096, "%s %d %s", utf8_samples[d % NSAMPLES], d, utf8_samples[(d + 2) % NSAMPLES]);
        off[d + 1] = off[d] + l;
    }
    infl_tokenizer t;
    tok_learn_stats st;
    cr_assert_eq(tok_learn_bpe(ctx, (uint8_t *)text, off, NDOC, 400, 2, &t, &st), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(t.n_merges > 20, "%d merges", t.n_merges);
    cr_assert_eq(store_tok_check(ctx, "learned", &t), INFL_OK, "%s", infl_ctx_error(ctx));
    tok_codec *c = codec_of(ctx, &t);
    // encoding the training documents reproduces the learner's segmentation
    int64_t total = 0;
    for (int d = 0; d < NDOC; d++) {
        int64_t n = off[d + 1] - off[d];
        int64_t k = round_trip(ctx, c, (uint8_t *)text + off[d], n);
        cr_assert(k < n, "BPE: %lld tokens for %lld bytes", (long long)k, (long long)n);
        total += k;
    }
    cr_assert_eq(total, st.tokens_after, "encoding gives %lld tokens, the learner ended with %lld", (long long)total,
                 (long long)st.tokens_after);
    // new text with the same characters, every sample alone, and arbitrary bytes
    for (int i = 0; i < NSAMPLES; i++) {
        int64_t n = (int64_t)strlen(utf8_samples[i]);
        cr_assert(round_trip(ctx, c, (const uint8_t *)utf8_samples[i], n) < n);
    }
    uint64_t seed = 11;
    uint8_t rnd[3000];
    for (int i = 0; i < 3000; i++) rnd[i] = (uint8_t)(tu_uniform(&seed) < 0.5 ? text[i % off[NDOC]] : tu_uniform(&seed) * 256);
    round_trip(ctx, c, rnd, 3000);
    round_trip(ctx, c, rnd, 0);
    tok_codec_free(c);
    store_tok_clear(&t);
    free(text);
    infl_ctx_free(ctx);
}

// Encoding the training documents gives exactly the learner's final segmentation, also
// on text full of overlapping runs (aaaa, abab) and of multi-byte characters.
Test(tok, bpe_encode_matches_learner) {
    infl_ctx *ctx = tu_ctx();
    static const char *const pieces[] = {"a", "aa", "b", "ab", " ", "\xc3\xa9", "\xe6\xbc\xa2", "aaa", "ba"};
    enum { NDOC = 300 };
    char *text = malloc(NDOC * 200);
    int64_t off[NDOC + 1];
    off[0] = 0;
    uint64_t seed = 99;
    for (int d = 0; d < NDOC; d++) {
        int64_t at = off[d];
        int n = 1 + (int)(tu_uniform(&seed) * 40);
        for (int i = 0; i < n; i++) {
            const char *p = pieces[(int)(tu_uniform(&seed) * 9)];
            memcpy(text + at, p, strlen(p));
            at += (int64_t)strlen(p);
        }
        off[d + 1] = at;
    }
    for (int V = 258; V <= 1000; V += 371) {
        infl_tokenizer t;
        tok_learn_stats st;
        cr_assert_eq(tok_learn_bpe(ctx, (uint8_t *)text, off, NDOC, V, 1, &t, &st), INFL_OK, "%s",
                     infl_ctx_error(ctx));
        tok_codec *c = codec_of(ctx, &t);
        int64_t total = 0;
        for (int d = 0; d < NDOC; d++) total += round_trip(ctx, c, (uint8_t *)text + off[d], off[d + 1] - off[d]);
        cr_assert_eq(total, st.tokens_after, "V = %d: encoding gives %lld tokens, the learner %lld", V,
                     (long long)total, (long long)st.tokens_after);
        cr_assert(st.tokens_after < st.tokens_before);
        tok_codec_free(c);
        store_tok_clear(&t);
    }
    free(text);
    infl_ctx_free(ctx);
}

// Fuzzing (tests/fuzz, fuzz_text): `import text --bpe` whose documents all go to /test
// learns on no documents, with no text at all (NULL); the learner offset that NULL
// (undefined behaviour: clang's UBSan stops there; gcc's does not check NULL + 0).
// No documents learn no merges.
Test(tok, bpe_no_documents) {
    infl_ctx *ctx = tu_ctx();
    infl_tokenizer t;
    tok_learn_stats st;
    cr_assert_eq(tok_learn_bpe(ctx, NULL, NULL, 0, 300, 2, &t, &st), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(t.n_merges, 0);
    cr_assert_eq(t.vocab, INFL_TOK_BASE_VOCAB);
    cr_assert_eq(st.tokens_before, 0);
    store_tok_clear(&t);
    infl_ctx_free(ctx);
}

Test(tok, check_and_store_round_trip) {
    infl_ctx *ctx = tu_ctx();
    int32_t m[6] = {'a', 'b', 257, 'c', 'x', 258};
    infl_tokenizer t = {INFL_TOK_BPE, 260, 256, 3, m};
    cr_assert_eq(store_tok_check(ctx, "t", &t), INFL_OK, "%s", infl_ctx_error(ctx));
    // a merge of a later token, of EOT, a wrong vocabulary, a wrong EOT
    m[2] = 259;
    cr_assert_eq(store_tok_check(ctx, "t", &t), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "merge 1") != NULL, "%s", infl_ctx_error(ctx));
    m[2] = 256;
    cr_assert_eq(store_tok_check(ctx, "t", &t), INFL_E_ARG);
    m[2] = 257;
    t.vocab = 261;
    cr_assert_eq(store_tok_check(ctx, "t", &t), INFL_E_ARG);
    t.vocab = 260;
    t.eot = 0;
    cr_assert_eq(store_tok_check(ctx, "t", &t), INFL_E_ARG);
    t.eot = 256;
    tok_codec *c = NULL;
    m[5] = 300;
    cr_assert_eq(tok_codec_create(ctx, &t, &c), INFL_E_ARG);
    cr_assert(c == NULL);
    m[5] = 258;

    // written under any location (here a run-like /model group) and read back
    const char *path = tu_path("tok.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t g = H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_eq(store_tok_write(ctx, path, g, "tokenizer", &t), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_tok_write(ctx, path, g, "tokenizer", &t), INFL_E_ARG);  // once
    infl_tokenizer b;
    tok_init_bytes(&b);
    cr_assert_eq(store_tok_write(ctx, path, f, "bytes_tok", &b), INFL_OK);
    infl_tokenizer r;
    cr_assert_eq(store_tok_read(ctx, path, g, "tokenizer", &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(r.kind, INFL_TOK_BPE);
    cr_assert_eq(r.vocab, 260);
    cr_assert_eq(r.n_merges, 3);
    cr_assert(memcmp(r.merges, m, sizeof m) == 0);
    store_tok_clear(&r);
    cr_assert_eq(store_tok_read(ctx, path, f, "bytes_tok", &r), INFL_OK);
    cr_assert_eq(r.kind, INFL_TOK_BYTES);
    cr_assert_eq(r.vocab, 257);
    cr_assert(r.merges == NULL);
    cr_assert_eq(store_tok_read(ctx, path, f, "nothing", &r), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "/nothing") != NULL, "%s", infl_ctx_error(ctx));

    // a damaged merge table is named
    hid_t d = H5Dopen2(g, "tokenizer/merges", H5P_DEFAULT);
    int32_t bad[6] = {'a', 'b', 256, 'c', 'x', 258};
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad) >= 0);
    H5Dclose(d);
    cr_assert_eq(store_tok_read(ctx, path, g, "tokenizer", &r), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "merge 1") != NULL && strstr(infl_ctx_error(ctx), "tok.h5") != NULL, "%s",
              infl_ctx_error(ctx));
    cr_assert(r.merges == NULL && r.vocab == 0);
    H5Gclose(g);
    H5Fclose(f);
    infl_ctx_free(ctx);
}

// ---- the store: documents splits ----

// Writes a documents file by hand: /train with docs of lengths len (n) whose tokens are
// 100 * i + j % 50 (document i, position j) and labels i % 3, and /classes a, b, c.
static void write_docs_file(const char *path, const int32_t *len, int n) {
    infl_ctx *ctx = tu_ctx();
    infl_dsw *w = NULL;
    cr_assert_eq(store_dataset_create(ctx, path, 1, &w), INFL_OK);
    infl_tokenizer t;
    tok_init_bytes(&t);
    cr_assert_eq(store_dataset_add_docs_split(ctx, w, "train"), INFL_OK, "%s", infl_ctx_error(ctx));
    // split names, one check for both writers: taken, reserved, not one group
    cr_assert_eq(store_dataset_add_docs_split(ctx, w, "train"), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "/train was already added") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_add_split(ctx, w, "train", 2, 3, INFL_Y_CLASS, 1, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "/train was already added") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_add_docs_split(ctx, w, "tokenizer"), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "split name 'tokenizer'") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_add_split(ctx, w, "a/b", 2, 3, INFL_Y_CLASS, 1, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "split name 'a/b'") != NULL, "%s", infl_ctx_error(ctx));
    int32_t one = 1, tk = 5, lb = 0;
    cr_assert_eq(store_dataset_append_docs(ctx, w, "train", 1, &one, &tk, &lb), INFL_E_ARG);  // no tokenizer yet
    cr_assert_eq(store_dataset_set_tokenizer(ctx, w, &t), INFL_OK);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += len[i];
    int32_t *tok = malloc((size_t)(total > 0 ? total : 1) * sizeof *tok), *lab = malloc((size_t)n * sizeof *lab);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < len[i]; j++) tok[at++] = (100 * i + j % 50) % 256;
        lab[i] = i % 3;
    }
    // appended in two blocks
    int h = n / 2;
    int64_t first = 0;
    for (int i = 0; i < h; i++) first += len[i];
    cr_assert_eq(store_dataset_append_docs(ctx, w, "train", h, len, tok, lab), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_append_docs(ctx, w, "train", n - h, len + h, tok + first, lab + h), INFL_OK);
    int32_t big = 257;
    cr_assert_eq(store_dataset_append_docs(ctx, w, "train", 1, &one, &big, &lb), INFL_E_ARG);  // outside the vocabulary
    const char *names[] = {"a", "b", "c"};
    cr_assert_eq(store_dataset_set_classes(ctx, w, names, 3), INFL_OK);
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    free(tok);
    free(lab);
    infl_ctx_free(ctx);
}

static int32_t tok_at(int i, int j) { return (100 * i + j % 50) % 256; }

Test(store, docs_read_range_with_padding) {
    const int32_t len[7] = {3, 0, 6, 2, 9, 1, 4};
    const char *path = tu_path("docs.h5");
    write_docs_file(path, len, 7);
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train[2:6]"));
    const infl_split_info *in = store_split_info(s);
    cr_assert_eq(in->kind, INFL_SPLIT_DOCS);
    cr_assert_eq(in->n, 4);
    cr_assert_eq(in->n_total, 7);
    cr_assert_eq(in->begin, 2);
    cr_assert_eq(in->d, 0);
    cr_assert_eq(in->max_len, 9);
    cr_assert_eq(in->tokens, 6 + 2 + 9 + 1);
    cr_assert_eq(in->vocab, 257);
    cr_assert_eq(in->n_classes, 3);
    const infl_tokenizer *t = store_split_tokenizer(s);
    cr_assert(t && t->kind == INFL_TOK_BYTES && t->vocab == 257);
    // documents 3 and 4 of the split (rows 1, 2 of the range), T = 4: 2 tokens + padding, 4 of 9
    int32_t tok[2 * 4], l[4], lab[4];
    cr_assert_eq(store_split_read_docs(ctx, s, 1, 2, 4, -1, tok, l, lab), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(l[0], 2);
    cr_assert_eq(l[1], 9);
    cr_assert_eq(lab[0], 0);
    cr_assert_eq(lab[1], 1);
    const int32_t want[8] = {tok_at(3, 0), tok_at(3, 1), -1, -1, tok_at(4, 0), tok_at(4, 1), tok_at(4, 2), tok_at(4, 3)};
    for (int i = 0; i < 8; i++) cr_assert_eq(tok[i], want[i], "tok[%d] = %d, expected %d", i, tok[i], want[i]);
    // lengths only; labels skipped
    cr_assert_eq(store_split_read_docs(ctx, s, 0, 4, 0, 0, NULL, l, NULL), INFL_OK);
    // outside the range, a rows read of documents
    cr_assert_eq(store_split_read_docs(ctx, s, 3, 2, 4, 0, tok, l, NULL), INFL_E_ARG);
    float x[4];
    cr_assert_eq(store_split_read(ctx, s, 0, 1, x, NULL, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "documents") != NULL, "%s", infl_ctx_error(ctx));
    store_split_close(s);

    // the empty document 1 reads as padding only
    s = tu_open_split(ctx, tu_ref(0, path, "train"));
    cr_assert_eq(store_split_read_docs(ctx, s, 1, 1, 3, 9, tok, l, lab), INFL_OK);
    cr_assert_eq(l[0], 0);
    cr_assert(tok[0] == 9 && tok[1] == 9 && tok[2] == 9);
    store_split_close(s);

    // a rows split is not documents
    const char *blobs = tu_path("blobs.h5");
    tu_make_blobs(blobs, 20, 3, 2, 1);
    s = tu_open_split(ctx, tu_ref(0, blobs, "train"));
    cr_assert_eq(store_split_info(s)->kind, INFL_SPLIT_ROWS);
    cr_assert(store_split_tokenizer(s) == NULL);
    cr_assert_eq(store_split_read_docs(ctx, s, 0, 1, 4, 0, tok, l, NULL), INFL_E_ARG);
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(store, docs_long_documents_read_one_by_one) {
    // documents far longer than T are read document by document (not the whole range)
    const int32_t len[4] = {200000, 5, 150000, 70};
    const char *path = tu_path("long.h5");
    write_docs_file(path, len, 4);
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, path, "train"));
    enum { T = 8 };
    int32_t tok[4 * T], l[4];
    cr_assert_eq(store_split_read_docs(ctx, s, 0, 4, T, -1, tok, l, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(l[i], len[i]);
        for (int j = 0; j < T; j++)
            cr_assert_eq(tok[i * T + j], j < len[i] ? tok_at(i, j) : -1, "document %d position %d", i, j);
    }
    cr_assert(s->scratch_cap < 100000, "the whole range was read (%zu tokens)", s->scratch_cap);
    store_split_close(s);
    infl_ctx_free(ctx);
}

Test(store, docs_damaged_files_are_named) {
    const int32_t len[3] = {4, 6, 5};
    const char *path = tu_path("bad.h5");
    write_docs_file(path, len, 3);
    // a token outside the vocabulary at document 1, position 2
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "train/tokens", H5P_DEFAULT);
    int32_t all[15];
    cr_assert(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, all) >= 0);
    all[4 + 2] = 5000;
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, all) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    infl_ctx *ctx = tu_ctx();
    infl_dataref ref;
    char text[1200];
    snprintf(text, sizeof text, "%s:/train", path);
    cr_assert_eq(infl_dataref_parse(ctx, text, &ref), INFL_OK);
    infl_split *s = NULL;
    cr_assert_eq(store_split_open(ctx, &ref, &s), INFL_OK, "%s", infl_ctx_error(ctx));
    int32_t tok[3 * 6], l[3];
    cr_assert_eq(store_split_read_docs(ctx, s, 0, 3, 6, 0, tok, l, NULL), INFL_E_VALUE);
    const char *e = infl_ctx_error(ctx);
    cr_assert(strstr(e, "bad.h5") && strstr(e, "document 1") && strstr(e, "position 2") && strstr(e, "5000"), "%s",
              e);
    // only the first two tokens of each: the bad one is not read
    cr_assert_eq(store_split_read_docs(ctx, s, 0, 3, 2, 0, tok, l, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    store_split_close(s);

    // offsets that go backwards
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    d = H5Dopen2(f, "train/offsets", H5P_DEFAULT);
    int64_t off[4] = {0, 9, 3, 15};
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    cr_assert_eq(store_split_open(ctx, &ref, &s), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_split_read_docs(ctx, s, 0, 3, 6, 0, tok, l, NULL), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "offsets") != NULL, "%s", infl_ctx_error(ctx));
    store_split_close(s);

    // offsets that do not end at the tokens' length; no tokenizer
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    d = H5Dopen2(f, "train/offsets", H5P_DEFAULT);
    int64_t off2[4] = {0, 4, 10, 14};
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off2) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    cr_assert_eq(store_split_open(ctx, &ref, &s), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "/train/offsets") != NULL, "%s", infl_ctx_error(ctx));
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    d = H5Dopen2(f, "train/offsets", H5P_DEFAULT);
    int64_t off3[4] = {0, 4, 10, 15};
    cr_assert(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off3) >= 0);
    H5Dclose(d);
    cr_assert(H5Ldelete(f, "tokenizer", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    cr_assert_eq(store_split_open(ctx, &ref, &s), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "/tokenizer") != NULL, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// ---- import ----

// Documents of the generated corpus: ASCII, accents, CJK, emoji; some with inner lines.
static const char *const corpus_docs[] = {
    "The first document.",
    "Second, on\ntwo lines.",
    "caf\xc3\xa9 \xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x98\x80",
    "a",
    "  leading spaces are kept",
    "the fifth\n\twith a tab",
};
#define NCORPUS 6

Test(text, separators_and_exact_documents) {
    // the same documents written three ways
    char pct[1024] = "", para[1024] = "\n\n", lines[1024] = "";
    for (int i = 0; i < NCORPUS; i++) {
        strcat(pct, corpus_docs[i]);
        strcat(pct, i == 2 ? "\n\n%\n" : "\n%\n");  // trailing line breaks are trimmed
        strcat(para, corpus_docs[i]);
        strcat(para, i == 1 ? "\n \t\n\n" : "\n\n");  // a blank line may hold spaces
        if (!strchr(corpus_docs[i], '\n')) {
            strcat(lines, corpus_docs[i]);
            strcat(lines, "\r\n");
        }
    }
    strcat(pct, "%\n");  // an empty document, skipped
    strcat(lines, "\n");   // likewise
    char p1[1100], p2[1100], p3[1100], out[1100];
    snprintf(p1, sizeof p1, "%s", put("pct.txt", pct));
    snprintf(p2, sizeof p2, "%s", put("para.txt", para));
    snprintf(p3, sizeof p3, "%s", put("lines.txt", lines));
    snprintf(out, sizeof out, "%s", tu_path("docs.h5"));
    const char *sep[3] = {"%", "paragraph", "line"};
    const char *files[3] = {p1, p2, p3};
    for (int k = 0; k < 3; k++)
        for (int bpe = 0; bpe <= 300; bpe += 300) {
            const char *one[1] = {files[k]};
            infl_import_text_result r = import(one, 1, sep[k], bpe, out);
            char **docs;
            int32_t *labels;
            int64_t n = read_docs(out, "train", &docs, &labels);
            int j = 0;
            for (int i = 0; i < NCORPUS; i++) {
                if (k == 2 && strchr(corpus_docs[i], '\n')) continue;
                cr_assert(j < n, "sep %s: too few documents (%lld)", sep[k], (long long)n);
                cr_assert_str_eq(docs[j], corpus_docs[i], "sep %s, bpe %d: document %d", sep[k], bpe, j);
                cr_assert_eq(labels[j], 0);
                j++;
            }
            cr_assert_eq(n, j, "sep %s: %lld documents, expected %d", sep[k], (long long)n, j);
            cr_assert_eq(r.docs_train, n);
            cr_assert_eq(r.docs_test, 0);
            cr_assert_eq(r.empty, k == 1 ? 0 : 1, "sep %s: %lld empty", sep[k], (long long)r.empty);
            cr_assert_eq(r.classes, 1);
            cr_assert_eq(r.files, 1);
            cr_assert_eq(r.bpe, bpe > 0);
            if (bpe == 0) {
                cr_assert_eq(r.vocab, 257);
                cr_assert_eq(r.tokens_train, r.bytes_train);
                cr_assert(r.unigram_bits > 3 && r.unigram_bits < 8, "%g bits", r.unigram_bits);
                cr_assert(fabs(r.unigram_bits - r.byte_unigram_bits) < 1e-12);
            } else {
                cr_assert(r.vocab > 257 && r.vocab <= 300);
                cr_assert(r.tokens_train < r.bytes_train);
            }
            cr_assert(fabs(r.unigram_nats - r.unigram_bits * 0.69314718055994531) < 1e-9);
            free_docs(docs, labels, n);
        }
}

Test(text, classes_per_file_max_len_and_limit) {
    // two files, two classes; documents of 1..20 bytes
    char a[2048] = "", b[2048] = "";
    int want_trunc = 0, na = 0, nb = 0;
    for (int i = 1; i <= 20; i++) {
        char *dst = i % 2 ? a : b;
        for (int j = 0; j < i; j++) strcat(dst, i % 2 ? "x" : "y");
        strcat(dst, "\n");
        want_trunc += i > 8;
        if (i % 2) na++;
        else nb++;
    }
    char pa[1100], pb[1100], out[1100];
    snprintf(pa, sizeof pa, "%s", put("alpha.txt", a));
    snprintf(pb, sizeof pb, "%s", put("beta.txt", b));
    snprintf(out, sizeof out, "%s", tu_path("cut.h5"));
    infl_ctx *ctx = tu_ctx();
    infl_import_text_options o = infl_import_text_options_default();
    const char *files[2] = {pa, pb};
    o.files = files;
    o.nfiles = 2;
    o.sep = "line";
    o.max_len = 8;
    o.test_fraction = 0;
    infl_import_text_result r;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(r.truncated, want_trunc);
    cr_assert_eq(r.longest, 8);
    cr_assert_eq(r.docs_train, 20);
    cr_assert_eq(r.classes, 2);
    char **docs;
    int32_t *labels;
    int64_t n = read_docs(out, "train", &docs, &labels);
    cr_assert_eq(n, 20);
    for (int64_t i = 0; i < n; i++) {
        // file order: alpha's documents (1, 3, .., 19 x's), then beta's
        int alpha = i < na;
        int full = alpha ? 2 * (int)i + 1 : 2 * (int)(i - na) + 2;
        cr_assert_eq(labels[i], alpha ? 0 : 1);
        cr_assert_eq((int)strlen(docs[i]), full < 8 ? full : 8, "document %lld", (long long)i);
        cr_assert_eq(docs[i][0], alpha ? 'x' : 'y');
    }
    free_docs(docs, labels, n);
    // the class names are the files' names; the split records what was cut
    infl_split *s = tu_open_split(ctx, tu_ref(0, out, "train"));
    char name[64];
    store_split_class_name(s, 1, name, sizeof name);
    cr_assert_str_eq(name, "beta.txt");
    cr_assert_eq(store_split_info(s)->max_len, 8);
    store_split_close(s);

    // --limit: the first N documents in file order
    o.limit = 13;
    o.max_len = 0;
    o.force = 1;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(r.docs_train, 13);
    cr_assert_eq(r.truncated, 0);
    cr_assert_eq(r.longest, 19);
    n = read_docs(out, "train", &docs, &labels);
    cr_assert_eq(n, 13);
    cr_assert_eq(labels[12], 1);
    cr_assert_str_eq(docs[12], "yyyyyy");
    free_docs(docs, labels, n);
    o.limit = 5;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK);
    cr_assert_eq(r.docs_train, 5);
    cr_assert_eq(r.files, 1, "the second file is not read");
    infl_ctx_free(ctx);
}

// The documents of /test, decoded, joined by '|'.
static char *test_docs(const char *out) {
    char **docs;
    int32_t *labels;
    int64_t n = read_docs(out, "test", &docs, &labels);
    char *all = calloc(1, 8192);
    for (int64_t i = 0; i < n; i++) {
        strcat(all, docs[i]);
        strcat(all, "|");
    }
    free_docs(docs, labels, n);
    return all;
}

Test(text, seeded_split) {
    char text[8192] = "";
    for (int i = 0; i < 200; i++) snprintf(text + strlen(text), sizeof text - strlen(text), "doc %d\n", i);
    char p[1100], out[1100];
    snprintf(p, sizeof p, "%s", put("many.txt", text));
    snprintf(out, sizeof out, "%s", tu_path("split.h5"));
    infl_ctx *ctx = tu_ctx();
    infl_import_text_options o = infl_import_text_options_default();
    const char *files[1] = {p};
    o.files = files;
    o.nfiles = 1;
    o.sep = "line";
    o.test_fraction = 0.25;
    o.seed = 7;
    o.force = 1;
    infl_import_text_result r;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(r.docs_train + r.docs_test, 200);
    // document i is in /test exactly when the generator says so
    int want = 0;
    char expect[8192] = "";
    for (int i = 0; i < 200; i++)
        if (infl_rng_uniform(7, INFL_RNG_SPLIT, (uint64_t)i, 0) < 0.25) {
            want++;
            snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "doc %d|", i);
        }
    cr_assert_eq(r.docs_test, want);
    cr_assert(want > 25 && want < 75, "%d in /test", want);
    char *a = test_docs(out);
    cr_assert_str_eq(a, expect);
    // the same seed again: the same split; with BPE too
    o.bpe_vocab = 280;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    char *b = test_docs(out);
    cr_assert_str_eq(a, b);
    // another seed: another split
    o.seed = 8;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_OK);
    char *c = test_docs(out);
    cr_assert(strcmp(a, c) != 0, "seeds 7 and 8 drew the same split");
    free(a);
    free(b);
    free(c);
    // a fraction that leaves /test empty is refused, naming the counts
    o.limit = 2;
    o.test_fraction = 0.01;
    cr_assert_eq(infl_import_text(ctx, &o, out, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "/test") != NULL, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(text, bad_input_leaves_nothing) {
    infl_ctx *ctx = tu_ctx();
    infl_import_text_options o = infl_import_text_options_default();
    o.test_fraction = 0;
    char out[1100];
    snprintf(out, sizeof out, "%s", tu_path("out.h5"));
    int before;

    // invalid UTF-8: the file and the byte offset (a lone continuation byte at 15)
    char bad[1100];
    snprintf(bad, sizeof bad, "%s", put("bad.txt", "fine\n%\nstill ok\xbf here\n"));
    before = count_files();
    const char *files[2] = {bad, NULL};
    o.files = files;
    o.nfiles = 1;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_VALUE);
    const char *e = infl_ctx_error(ctx);
    cr_assert(strstr(e, "bad.txt") && strstr(e, "byte offset 15") && strstr(e, "UTF-8"), "%s", e);
    cr_assert_eq(count_files(), before, "something was left behind");
    // an overlong encoding and a truncated sequence at the end of a line
    put("bad.txt", "ok\n%\n\xc0\xaf\n");
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_VALUE);
    cr_assert(strstr(infl_ctx_error(ctx), "byte offset 5") != NULL, "%s", infl_ctx_error(ctx));
    put("bad.txt", "ok \xe6\xbc\n");
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_VALUE);
    cr_assert(strstr(infl_ctx_error(ctx), "byte offset 3") != NULL, "%s", infl_ctx_error(ctx));

    // an empty corpus
    put("bad.txt", "%\n\n%\n%\n");
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "no documents") != NULL, "%s", infl_ctx_error(ctx));
    put("bad.txt", "");
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_FORMAT);
    cr_assert_eq(count_files(), before);

    // a missing file, a missing folder: named
    files[0] = tu_path("missing.txt");
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_IO);
    cr_assert(strstr(infl_ctx_error(ctx), "missing.txt") != NULL, "%s", infl_ctx_error(ctx));
    o.nfiles = 0;
    o.dir = tu_path("no-such-folder");
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_IO);
    cr_assert(strstr(infl_ctx_error(ctx), "no-such-folder") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert_eq(count_files(), before);

    // bad options
    o = infl_import_text_options_default();
    o.bpe_vocab = 100;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_ARG);
    o = infl_import_text_options_default();
    o.test_fraction = 1.0;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_ARG);
    cr_assert_eq(count_files(), before);
    infl_ctx_free(ctx);
}

Test(text, exists_and_force) {
    char good[1100], out[1100];
    snprintf(good, sizeof good, "%s", put("good.txt", "one\n%\ntwo\n"));
    snprintf(out, sizeof out, "%s", tu_path("out.h5"));
    const char *files[1] = {good};
    import(files, 1, "%", 0, out);
    infl_ctx *ctx = tu_ctx();
    infl_import_text_options o = infl_import_text_options_default();
    const char *missing[1] = {tu_path("missing.txt")};
    o.files = missing;  // the existing output is refused before the input is looked at
    o.nfiles = 1;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_EXISTS);
    cr_assert(strstr(infl_ctx_error(ctx), "--force") != NULL, "%s", infl_ctx_error(ctx));
    // a failed import with --force leaves the old file as it was
    o.force = 1;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_E_IO);
    char **docs;
    int32_t *labels;
    int64_t n = read_docs(out, "train", &docs, &labels);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(docs[1], "two");
    free_docs(docs, labels, n);
    o.files = files;
    o.test_fraction = 0;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(text, cli_import_and_info) {
    char f1[1100], f2[1100], out[1100];
    snprintf(f1, sizeof f1, "%s", put("one.txt", "alpha beta\n\ngamma delta\n\nepsilon\n"));
    snprintf(f2, sizeof f2, "%s", put("two.txt", "zeta eta\n\ntheta\n"));
    snprintf(out, sizeof out, "%s", tu_path("cli.h5"));
    cr_assert_eq(CLI("import", "text", f1, f2, "--sep", "paragraph", "--test-fraction", "0", "--bpe", "270",
                     "--max-len", "4", "-o", out),
                 0, "%s", tu_err());
    const char *o = tu_out();
    cr_assert(strstr(o, "documents  5 in /train, 0 in /test") != NULL, "%s", o);
    cr_assert(strstr(o, "tokenizer  bpe") != NULL, "%s", o);
    cr_assert(strstr(o, "truncated") != NULL, "%s", o);
    cr_assert(strstr(o, "bits") != NULL && strstr(o, "nats") != NULL, "%s", o);
    cr_assert_eq(CLI("info", out), 0, "%s", tu_err());
    o = tu_out();
    cr_assert(strstr(o, "split /train") && strstr(o, "documents") && strstr(o, "tokenizer     bpe") &&
                  strstr(o, "one.txt, two.txt"),
              "%s", o);
    // exists without --force; usage errors
    cr_assert_eq(CLI("import", "text", f1, "-o", out), 1);
    cr_assert(strstr(tu_err(), "--force") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("import", "text", f1, "--dir", "/tmp", "-o", out), 2);
    cr_assert_eq(CLI("import", "text", f1, "--bpe", "-5", "-o", out), 2);
    cr_assert_eq(CLI("import", "poetry", "-o", out), 2);
    cr_assert_eq(CLI("import", "--help"), 0);
    cr_assert(strstr(tu_out(), "--bpe") != NULL && strstr(tu_out(), "text") != NULL);
    // invalid UTF-8 fails with the offset and leaves nothing
    char bad[1100];
    snprintf(bad, sizeof bad, "%s", put("bad.txt", "\xff\n"));
    cr_assert_eq(CLI("import", "text", bad, "-o", tu_path("bad.h5")), 1);
    cr_assert(strstr(tu_err(), "byte offset 0") != NULL, "%s", tu_err());
    cr_assert(!tu_exists(tu_path("bad.h5")));
}

Test(text, fortunes, .timeout = 300) {
    struct stat st;
    if (stat(FORTUNES "/computers", &st) != 0) cr_skip_test("Debian's fortunes are not installed (" FORTUNES ")");
    char out[1100];
    snprintf(out, sizeof out, "%s", tu_path("fortunes.h5"));
    cr_assert_eq(CLI("import", "text", "-o", out, "--bpe", "512", "--seed", "3"), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "tokenizer  bpe, vocabulary 512") != NULL, "%s", tu_out());
    infl_ctx *ctx = tu_ctx();
    infl_split *tr = tu_open_split(ctx, tu_ref(0, out, "train")), *te = tu_open_split(ctx, tu_ref(1, out, "test"));
    int64_t ntr = store_split_info(tr)->n, nte = store_split_info(te)->n;
    cr_assert(ntr + nte > 13000 && ntr + nte < 17000, "%lld documents", (long long)(ntr + nte));
    cr_assert(nte > 0.07 * (ntr + nte) && nte < 0.13 * (ntr + nte), "%lld in /test", (long long)nte);
    int K = store_split_info(tr)->n_classes;
    cr_assert(K >= 20, "%d topics", K);
    // every topic is a class; the labels cover them
    int *seen = calloc((size_t)K, sizeof *seen), computers = -1;
    for (int k = 0; k < K; k++) {
        char name[64];
        store_split_class_name(tr, k, name, sizeof name);
        cr_assert(!strstr(name, ".dat") && !strstr(name, ".u8"), "class %s", name);
        if (strcmp(name, "computers") == 0) computers = k;
    }
    cr_assert(computers >= 0);
    int32_t *lab = malloc((size_t)ntr * sizeof *lab), *len = malloc((size_t)ntr * sizeof *len);
    cr_assert_eq(store_split_read_docs(ctx, tr, 0, ntr, 0, 0, NULL, len, lab), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int64_t i = 0; i < ntr; i++) {
        cr_assert(lab[i] >= 0 && lab[i] < K);
        cr_assert(len[i] > 0);
        seen[lab[i]]++;
    }
    for (int k = 0; k < K; k++) cr_assert(seen[k] > 0, "class %d has no document", k);
    cr_assert(seen[computers] > 500, "%d computers fortunes", seen[computers]);
    // a computers fortune decodes to text of that topic file
    int64_t i = 0;
    while (lab[i] != computers) i++;
    int T = (int)store_split_info(tr)->max_len;
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    int32_t l;
    cr_assert_eq(store_split_read_docs(ctx, tr, i, 1, T, 0, tok, &l, NULL), INFL_OK);
    tok_codec *c = codec_of(ctx, store_split_tokenizer(tr));
    char doc[65536];
    size_t nb = 0;
    cr_assert_eq(tok_decode(ctx, c, tok, l, (uint8_t *)doc, sizeof doc - 1, &nb), INFL_OK);
    doc[nb] = 0;
    char *file = tu_read_file(FORTUNES "/computers", NULL);
    cr_assert(file && strstr(file, doc) != NULL, "document %lld is not in the computers file:\n%s", (long long)i, doc);
    free(file);
    tok_codec_free(c);
    free(tok);
    free(lab);
    free(len);
    free(seen);
    store_split_close(tr);
    store_split_close(te);
    infl_ctx_free(ctx);
    cr_assert_eq(CLI("info", out), 0);
    cr_assert(strstr(tu_out(), "computers") && strstr(tu_out(), "split /test") && strstr(tu_out(), "vocabulary 512"),
              "%s", tu_out());
}
