/*
 * text.c — `infl import text`: documents (Debian's fortunes, or UTF-8 text files) into
 * a `dataset` file of documents splits (store.h; DESIGN.md "documents"). Files are read
 * line by line, so memory holds one document at a time and a block of tokens on the way
 * to the store writer; learning BPE (tokenizer.c) is the exception: it needs the train
 * split's text, so with --bpe the documents are gathered first and written after.
 *
 * The train/test split of document i (in file order, after empty documents are
 * skipped) is drawn from the counter-based generator keyed by (seed, INFL_RNG_SPLIT, i),
 * as the CSV import draws rows: the same documents land in /test whatever the
 * tokenizer, and another seed draws another split.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "store/store.h"

#define FORTUNES_DIR "/usr/share/games/fortunes"
#define FLUSH_TOKENS (1 << 20)  // tokens of a block handed to the store writer
#define FLUSH_DOCS 8192         // documents of a block
#define MAX_FILES 100000

infl_import_text_options infl_import_text_options_default(void) {
    infl_import_text_options o;
    memset(&o, 0, sizeof o);
    o.dir = FORTUNES_DIR;  // NULL or "" also mean this folder
    o.files = NULL;
    o.nfiles = 0;          // the fortunes
    o.sep = "%";           // a line holding only "%" ends a document
    o.bpe_vocab = 0;       // bytes
    o.max_len = 0;         // no limit
    o.limit = 0;           // all documents
    o.test_fraction = 0.1;
    o.seed = 0;
    o.force = 0;
    return o;
}

// ---- the sources: one file per class ----

typedef struct {
    char **paths;  // (n) the files, in class order
    char **names;  // (n) their class names
    int n, cap;
} sources;

static void sources_free(sources *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->paths[i]);
        free(s->names[i]);
    }
    free(s->paths);
    free(s->names);
    memset(s, 0, sizeof *s);
}

static infl_status sources_add(infl_ctx *ctx, sources *s, const char *path, const char *name) {
    RETURN_IF(ctx, s->n >= MAX_FILES, INFL_E_ARG, "%s: more than %d files", path, MAX_FILES);
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **p = realloc(s->paths, (size_t)cap * sizeof *p);
        if (p) s->paths = p;
        char **q = realloc(s->names, (size_t)cap * sizeof *q);
        if (q) s->names = q;
        RETURN_IF(ctx, !p || !q, INFL_E_NOMEM, "out of memory listing the files");
        s->cap = cap;
    }
    s->paths[s->n] = strdup(path);
    s->names[s->n] = strdup(name);
    if (!s->paths[s->n] || !s->names[s->n]) {
        free(s->paths[s->n]);
        free(s->names[s->n]);
        return infl_seterr(ctx, INFL_E_NOMEM, "out of memory listing the files");
    }
    s->n++;
    return INFL_OK;
}

static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Every topic file directly in dir, in name order: regular files (after links), not
// hidden, not the strfile indexes (.dat) nor the .u8 links beside each topic.
static infl_status list_fortunes(infl_ctx *ctx, const char *dir, sources *s) {
    struct stat st;
    RETURN_IF(ctx, stat(dir, &st) != 0, INFL_E_IO,
              "%s: %s; expected the folder of fortune files (Debian: apt install fortunes)", dir, strerror(errno));
    RETURN_IF(ctx, !S_ISDIR(st.st_mode), INFL_E_ARG, "%s: not a folder; expected the folder of fortune files", dir);
    DIR *d = opendir(dir);
    RETURN_IF(ctx, !d, INFL_E_IO, "%s: cannot list: %s", dir, strerror(errno));
    infl_status rc = INFL_OK;
    char **names = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const char *nm = e->d_name;
        if (nm[0] == '.' || ends_with(nm, ".dat") || ends_with(nm, ".u8")) continue;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **p = realloc(names, (size_t)cap * sizeof *p);
            GOTO_IF(ctx, !p, INFL_E_NOMEM, "out of memory listing %s", dir);
            names = p;
        }
        names[n] = strdup(nm);
        GOTO_IF(ctx, !names[n], INFL_E_NOMEM, "out of memory listing %s", dir);
        n++;
    }
    GOTO_IF(ctx, n == 0, INFL_E_FORMAT, "%s: no fortune files in it (Debian: apt install fortunes)", dir);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        CHECK(sources_add(ctx, s, path, names[i]));
    }
done:
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

static infl_status list_files(infl_ctx *ctx, const char *const *files, int nfiles, sources *s) {
    for (int i = 0; i < nfiles; i++) {
        const char *f = files[i];
        RETURN_IF(ctx, !f || !*f, INFL_E_ARG, "import text: file %d has no name", i);
        struct stat st;
        RETURN_IF(ctx, stat(f, &st) != 0, INFL_E_IO, "%s: %s", f, strerror(errno));
        RETURN_IF(ctx, S_ISDIR(st.st_mode), INFL_E_ARG, "%s: is a folder; expected a text file (or --dir for fortunes)",
                  f);
        const char *base = strrchr(f, '/');
        FORWARD_IF_ERROR(sources_add(ctx, s, f, base && base[1] ? base + 1 : f));
    }
    return INFL_OK;
}

// ---- UTF-8 ----

// The index of the first byte of the first invalid UTF-8 sequence in s[0, n), or -1
// when it is all valid (no overlong forms, no surrogates, nothing above U+10FFFF).
static int64_t utf8_invalid(const uint8_t *s, int64_t n) {
    for (int64_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1Fu;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0Fu;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07u;
        else return i;
        for (int j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3Fu);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return i;
        i += k + 1;
    }
    return -1;
}

// ---- reading documents, a line at a time ----

enum { SEP_TEXT = 0, SEP_LINE = 1, SEP_PARAGRAPH = 2 };

typedef struct {
    const char *path;
    FILE *fp;
    char *line;
    size_t line_cap;
    int64_t off;        // file offset of the next line
    int mode;           // SEP_*
    const char *sep;    // SEP_TEXT: the separator line's text
    size_t seplen;
    uint8_t *doc;       // the document being gathered
    size_t len, cap;
    int started;        // a line went into doc (SEP_TEXT, SEP_PARAGRAPH)
    int64_t empty;      // empty documents skipped
} reader;

static infl_status doc_add(infl_ctx *ctx, reader *r, const char *s, size_t n) {
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n) cap *= 2;
        uint8_t *p = realloc(r->doc, cap);
        RETURN_IF(ctx, !p, INFL_E_NOMEM, "%s: out of memory for a document of %zu bytes", r->path, r->len + n);
        r->doc = p;
        r->cap = cap;
    }
    memcpy(r->doc + r->len, s, n);
    r->len += n;
    r->started = 1;
    return INFL_OK;
}

// Ends the document gathered so far: trims its trailing line breaks; *got = 1 when it
// is not empty (then r->doc[0, len) holds it; the caller resets len).
static void doc_end(reader *r, int *got) {
    while (r->len > 0 && (r->doc[r->len - 1] == '\n' || r->doc[r->len - 1] == '\r')) r->len--;
    if (r->len > 0)
        *got = 1;
    else if (r->started)
        r->empty++;
    r->started = 0;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

// The next document of the file into r->doc[0, r->len): *got = 1, or 0 at its end.
static infl_status reader_next(infl_ctx *ctx, reader *r, int *got) {
    *got = 0;
    r->len = 0;
    for (;;) {
        errno = 0;
        ssize_t nread = getline(&r->line, &r->line_cap, r->fp);
        if (nread < 0) {
            RETURN_IF(ctx, ferror(r->fp), INFL_E_IO, "%s: read error at byte %" PRId64 ": %s", r->path, r->off,
                      strerror(errno ? errno : EIO));
            if (r->mode != SEP_LINE) doc_end(r, got);
            return INFL_OK;
        }
        const char *s = r->line;
        size_t n = (size_t)nread;
        int64_t at = r->off;
        r->off += nread;
        if (at == 0 && n >= 3 && (uint8_t)s[0] == 0xEF && (uint8_t)s[1] == 0xBB && (uint8_t)s[2] == 0xBF) {
            s += 3;  // a UTF-8 byte-order mark is not text
            n -= 3;
            at += 3;
        }
        int64_t bad = utf8_invalid((const uint8_t *)s, (int64_t)n);
        RETURN_IF(ctx, bad >= 0, INFL_E_VALUE,
                  "%s: byte offset %" PRId64 ": invalid UTF-8 (byte 0x%02X); expected UTF-8 text", r->path, at + bad,
                  (uint8_t)s[bad]);
        size_t body = n;  // the line without its line break
        if (body > 0 && s[body - 1] == '\n') body--;
        if (body > 0 && s[body - 1] == '\r') body--;
        if (r->mode == SEP_LINE) {
            if (body == 0) {
                r->empty++;
                continue;
            }
            FORWARD_IF_ERROR(doc_add(ctx, r, s, body));
            *got = 1;
            return INFL_OK;
        }
        int ends = r->mode == SEP_TEXT ? body == r->seplen && memcmp(s, r->sep, body) == 0 : blank(s, body);
        if (!ends) {
            FORWARD_IF_ERROR(doc_add(ctx, r, s, n));
            continue;
        }
        if (r->mode == SEP_TEXT) r->started = 1;  // a separator ends a document even when nothing came before it
        doc_end(r, got);
        if (*got) return INFL_OK;
    }
}

// ---- writing documents ----

typedef struct {
    const char *name;   // "train", "test"
    int on;             // the split exists
    int32_t *tok;       // the block: tokens
    int64_t ntok, tcap;
    int32_t *len, *lab; // (FLUSH_DOCS) lengths and labels
    int64_t ndoc;
    int64_t docs, tokens, bytes, truncated, longest;
    int64_t *hist;      // (vocab) token counts
} wsplit;

typedef struct {
    infl_ctx *ctx;
    infl_dsw *w;
    tok_codec *codec;
    int64_t max_len;
    int32_t *ids;       // encoding buffer
    int64_t ids_cap;
    wsplit sp[2];       // train, test
} writer;

static infl_status flush(writer *W, wsplit *s) {
    if (s->ndoc == 0) return INFL_OK;
    FORWARD_IF_ERROR(store_dataset_append_docs(W->ctx, W->w, s->name, s->ndoc, s->len, s->tok, s->lab));
    s->ndoc = 0;
    s->ntok = 0;
    return INFL_OK;
}

// Encodes a document, cuts it to max_len tokens and adds it to its split's block.
static infl_status emit(writer *W, int test, const uint8_t *doc, int64_t len, int32_t label) {
    infl_ctx *ctx = W->ctx;
    wsplit *s = &W->sp[test];
    if (len > W->ids_cap) {
        int64_t cap = len + len / 2 + 1024;
        int32_t *p = realloc(W->ids, (size_t)cap * sizeof *p);
        RETURN_IF(ctx, !p, INFL_E_NOMEM, "out of memory encoding a document of %" PRId64 " bytes", len);
        W->ids = p;
        W->ids_cap = cap;
    }
    int64_t n = 0;
    FORWARD_IF_ERROR(tok_encode(ctx, W->codec, doc, len, W->ids, &n));
    if (W->max_len > 0 && n > W->max_len) {
        n = W->max_len;
        s->truncated++;
    }
    RETURN_IF(ctx, n > INT32_MAX, INFL_E_ARG, "a document of %" PRId64 " tokens; at most %d (use --max-len)", n,
              INT32_MAX);
    if (s->ntok + n > s->tcap) {
        int64_t cap = s->tcap ? s->tcap : FLUSH_TOKENS;
        while (cap < s->ntok + n) cap *= 2;
        int32_t *p = realloc(s->tok, (size_t)cap * sizeof *p);
        RETURN_IF(ctx, !p, INFL_E_NOMEM, "out of memory for a block of %" PRId64 " tokens", cap);
        s->tok = p;
        s->tcap = cap;
    }
    memcpy(s->tok + s->ntok, W->ids, (size_t)n * sizeof(int32_t));
    for (int64_t j = 0; j < n; j++) s->hist[W->ids[j]]++;
    s->ntok += n;
    s->len[s->ndoc] = (int32_t)n;
    s->lab[s->ndoc] = label;
    s->ndoc++;
    s->docs++;
    s->tokens += n;
    s->bytes += len;
    if (n > s->longest) s->longest = n;
    if (s->ndoc == FLUSH_DOCS || s->ntok >= FLUSH_TOKENS) FORWARD_IF_ERROR(flush(W, s));
    return INFL_OK;
}

static void writer_free(writer *W) {
    for (int k = 0; k < 2; k++) {
        free(W->sp[k].tok);
        free(W->sp[k].len);
        free(W->sp[k].lab);
        free(W->sp[k].hist);
    }
    free(W->ids);
    tok_codec_free(W->codec);
}

// ---- gathering documents (for learning BPE first) ----

typedef struct {
    uint8_t *text;
    int64_t *off;       // (n + 1)
    int32_t *lab;       // (n)
    int64_t n, tcap, dcap;
} corpus;

static infl_status corpus_add(infl_ctx *ctx, corpus *c, const uint8_t *doc, int64_t len, int32_t label) {
    int64_t at = c->n ? c->off[c->n] : 0;
    if (at + len > c->tcap) {
        int64_t cap = c->tcap ? c->tcap : 1 << 20;
        while (cap < at + len) cap *= 2;
        uint8_t *p = realloc(c->text, (size_t)cap);
        RETURN_IF(ctx, !p, INFL_E_NOMEM, "out of memory gathering %" PRId64 " bytes of text for BPE", cap);
        c->text = p;
        c->tcap = cap;
    }
    if (c->n + 2 > c->dcap) {
        int64_t cap = c->dcap ? 2 * c->dcap : 4096;
        int64_t *o = realloc(c->off, (size_t)cap * sizeof *o);
        if (o) c->off = o;
        int32_t *l = realloc(c->lab, (size_t)cap * sizeof *l);
        if (l) c->lab = l;
        RETURN_IF(ctx, !o || !l, INFL_E_NOMEM, "out of memory gathering documents for BPE");
        c->dcap = cap;
    }
    if (c->n == 0) c->off[0] = 0;
    memcpy(c->text + at, doc, (size_t)len);
    c->lab[c->n] = label;
    c->off[++c->n] = at + len;
    return INFL_OK;
}

static void corpus_free(corpus *c) {
    free(c->text);
    free(c->off);
    free(c->lab);
}

// ---- the import ----

// Shannon entropy in bits of counts (n of them).
static double entropy_bits(const int64_t *counts, int64_t n) {
    double total = 0, h = 0;
    for (int64_t i = 0; i < n; i++) total += (double)counts[i];
    for (int64_t i = 0; i < n && total > 0; i++)
        if (counts[i] > 0) {
            double p = (double)counts[i] / total;
            h -= p * log2(p);
        }
    return h;
}

// Reads every document of every source in order: to the writer (gather == NULL) or
// into the two corpora.
static infl_status read_all(infl_ctx *ctx, const sources *src, int mode, const char *sep,
                            const infl_import_text_options *o, writer *W, corpus *gather, infl_import_text_result *r) {
    infl_status rc = INFL_OK;
    int64_t ndocs = 0;
    reader rd;
    memset(&rd, 0, sizeof rd);
    rd.mode = mode;
    rd.sep = sep;
    rd.seplen = strlen(sep);
    for (int f = 0; f < src->n; f++) {
        if (o->limit > 0 && ndocs >= o->limit) break;
        rd.path = src->paths[f];
        rd.off = 0;
        rd.started = 0;
        rd.fp = fopen(rd.path, "rb");
        GOTO_IF(ctx, !rd.fp, INFL_E_IO, "%s: cannot open: %s", rd.path, strerror(errno));
        r->files++;
        for (;;) {
            if (o->limit > 0 && ndocs >= o->limit) break;
            int got = 0;
            CHECK(reader_next(ctx, &rd, &got));
            if (!got) break;
            int test = o->test_fraction > 0 &&
                       infl_rng_uniform(o->seed, INFL_RNG_SPLIT, (uint64_t)ndocs, 0) < o->test_fraction;
            ndocs++;
            if (gather)
                CHECK(corpus_add(ctx, &gather[test], rd.doc, (int64_t)rd.len, f));
            else
                CHECK(emit(W, test, rd.doc, (int64_t)rd.len, f));
            if ((ndocs & 1023) == 0) {
                GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
                infl_progress(ctx, "import", (uint64_t)ndocs, 0, NULL);
            }
        }
        fclose(rd.fp);
        rd.fp = NULL;
    }
done:
    if (rd.fp) fclose(rd.fp);
    r->empty = rd.empty;
    free(rd.line);
    free(rd.doc);
    return rc;
}

infl_status infl_import_text(infl_ctx *ctx, const infl_import_text_options *opts, const char *out_path,
                             infl_import_text_result *res) {
    const double t0 = infl_now();
    infl_import_text_options o = opts ? *opts : infl_import_text_options_default();
    const char *dir = (o.dir && *o.dir) ? o.dir : FORTUNES_DIR;
    const char *sep = (o.sep && *o.sep) ? o.sep : "%";
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "import text: no output file given");
    RETURN_IF(ctx, o.nfiles < 0 || (o.nfiles > 0 && !o.files), INFL_E_ARG, "import text: %d files but no names",
              o.nfiles);
    int mode = strcmp(sep, "line") == 0 ? SEP_LINE : strcmp(sep, "paragraph") == 0 ? SEP_PARAGRAPH : SEP_TEXT;
    RETURN_IF(ctx, mode == SEP_TEXT && (strchr(sep, '\n') || strchr(sep, '\r')), INFL_E_ARG,
              "import text: separator '%s': expected line, paragraph, or the text of a separator line (one line)",
              sep);
    RETURN_IF(ctx, o.bpe_vocab != 0 && (o.bpe_vocab <= INFL_TOK_BASE_VOCAB || o.bpe_vocab > INFL_TOK_MAX_VOCAB),
              INFL_E_ARG, "import text: BPE vocabulary %d; expected %d to %d (or 0 for bytes)", o.bpe_vocab,
              INFL_TOK_BASE_VOCAB + 1, INFL_TOK_MAX_VOCAB);
    RETURN_IF(ctx, o.max_len < 0 || o.max_len > INT32_MAX, INFL_E_ARG,
              "import text: max_len %" PRId64 "; expected 0 (no limit) to %d tokens", o.max_len, INT32_MAX);
    RETURN_IF(ctx, o.limit < 0, INFL_E_ARG, "import text: limit %" PRId64 "; expected >= 0 (0 = all)", o.limit);
    RETURN_IF(ctx, !(o.test_fraction >= 0.0 && o.test_fraction < 1.0), INFL_E_ARG,
              "import text: test_fraction %g; expected a fraction in [0, 1)", o.test_fraction);

    infl_status rc = INFL_OK;
    infl_import_text_result r;
    memset(&r, 0, sizeof r);
    sources src;
    memset(&src, 0, sizeof src);
    writer W;
    memset(&W, 0, sizeof W);
    W.ctx = ctx;
    W.max_len = o.max_len;
    W.sp[0].name = "train";
    W.sp[1].name = "test";
    corpus gather[2];
    memset(gather, 0, sizeof gather);
    infl_tokenizer tok;
    tok_init_bytes(&tok);
    infl_dsw *w = NULL;
    char src_desc[4096 + 512];

    // the output first: an existing one is refused before any work
    CHECK(store_dataset_create(ctx, out_path, o.force, &w));
    W.w = w;
    if (o.nfiles > 0) {
        CHECK(list_files(ctx, o.files, o.nfiles, &src));
        int at = snprintf(src_desc, sizeof src_desc, "text");
        for (int i = 0; i < src.n && at > 0 && (size_t)at < sizeof src_desc; i++)
            at += snprintf(src_desc + at, sizeof src_desc - (size_t)at, "%s%s", i ? ", " : " ", src.paths[i]);
    } else {
        CHECK(list_fortunes(ctx, dir, &src));
        snprintf(src_desc, sizeof src_desc, "fortunes %s (%d topics)", dir, src.n);
    }

    // the tokenizer: bytes, or BPE learned on the gathered train split
    if (o.bpe_vocab > 0) {
        CHECK(read_all(ctx, &src, mode, sep, &o, &W, gather, &r));
        tok_learn_stats ls;
        CHECK(tok_learn_bpe(ctx, gather[0].text, gather[0].off, gather[0].n, o.bpe_vocab, 2, &tok, &ls));
        r.seconds_learn = ls.seconds;
        r.bpe = 1;
    }
    CHECK(tok_codec_create(ctx, &tok, &W.codec));
    CHECK(store_dataset_set_tokenizer(ctx, w, &tok));
    W.sp[0].on = 1;
    W.sp[1].on = o.test_fraction > 0;
    for (int k = 0; k < 2; k++) {
        wsplit *s = &W.sp[k];
        if (!s->on) continue;
        CHECK(store_dataset_add_docs_split(ctx, w, s->name));
        s->len = infl_malloc(ctx, FLUSH_DOCS * sizeof *s->len, "a block of documents");
        s->lab = infl_malloc(ctx, FLUSH_DOCS * sizeof *s->lab, "a block of documents");
        s->hist = infl_calloc(ctx, (size_t)tok.vocab, sizeof *s->hist, "the token counts");
        GOTO_NOMEM_IF(!s->len || !s->lab || !s->hist);
    }

    // the documents
    if (o.bpe_vocab > 0) {
        for (int k = 0; k < 2; k++)
            for (int64_t i = 0; i < gather[k].n; i++) {
                if ((i & 1023) == 0) GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
                CHECK(emit(&W, k, gather[k].text + gather[k].off[i], gather[k].off[i + 1] - gather[k].off[i],
                           gather[k].lab[i]));
            }
    } else {
        CHECK(read_all(ctx, &src, mode, sep, &o, &W, NULL, &r));
    }
    for (int k = 0; k < 2; k++)
        if (W.sp[k].on) CHECK(flush(&W, &W.sp[k]));

    const wsplit *tr = &W.sp[0], *te = &W.sp[1];
    const char *what = o.nfiles > 0 ? (src.n == 1 ? src.paths[0] : "the text files") : dir;
    GOTO_IF(ctx, tr->docs + te->docs == 0, INFL_E_FORMAT,
            "%s: no documents (%" PRId64 " empty ones skipped); expected text with documents separated by %s%s%s", what,
            r.empty, mode == SEP_LINE ? "line breaks" : mode == SEP_PARAGRAPH ? "blank lines" : "lines holding only '",
            mode == SEP_TEXT ? sep : "", mode == SEP_TEXT ? "'" : "");
    GOTO_IF(ctx, tr->docs == 0 || (te->on && te->docs == 0), INFL_E_ARG,
            "%s: test_fraction %g (seed %" PRIu64 ") puts %" PRId64 " of the %" PRId64 " documents in /test and %" PRId64
            " in /train; both must be non-empty: use more documents or another fraction",
            what, o.test_fraction, o.seed, te->docs, tr->docs + te->docs, tr->docs);

    // classes, what the import was, and the train split's entropies
    CHECK(store_dataset_set_classes(ctx, w, (const char *const *)src.names, src.n));
    CHECK(store_dataset_set_attr(ctx, w, "source", src_desc));
    CHECK(store_dataset_set_attr(ctx, w, "import_sep", sep));
    CHECK(store_dataset_set_attr_u64(ctx, w, NULL, "import_seed", o.seed));
    CHECK(store_dataset_set_attr_f64(ctx, w, NULL, "import_test_fraction", o.test_fraction));
    CHECK(store_dataset_set_attr_i64(ctx, w, NULL, "import_max_len", o.max_len));
    CHECK(store_dataset_set_attr_i64(ctx, w, NULL, "import_limit", o.limit));
    CHECK(store_dataset_set_attr_i64(ctx, w, NULL, "import_bpe_vocab", o.bpe_vocab));
    int64_t bytes[256] = {0};
    for (int v = 0; v < tok.vocab; v++) {
        int l = 0;
        const uint8_t *b = tok_token_bytes(W.codec, v, &l);
        for (int j = 0; j < l && tr->hist[v]; j++) bytes[b[j]] += tr->hist[v];
    }
    r.unigram_bits = entropy_bits(tr->hist, tok.vocab);
    r.unigram_nats = r.unigram_bits * log(2.0);
    r.byte_unigram_bits = entropy_bits(bytes, 256);
    for (int k = 0; k < 2; k++) {
        const wsplit *s = &W.sp[k];
        if (!s->on) continue;
        double h = entropy_bits(s->hist, tok.vocab);
        CHECK(store_dataset_set_attr_f64(ctx, w, s->name, "unigram_bits", h));
        CHECK(store_dataset_set_attr_f64(ctx, w, s->name, "unigram_nats", h * log(2.0)));
        CHECK(store_dataset_set_attr_i64(ctx, w, s->name, "truncated", s->truncated));
        CHECK(store_dataset_set_attr_i64(ctx, w, s->name, "bytes", s->bytes));
    }
    GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
    rc = store_dataset_commit(ctx, w);  // frees w, also on failure
    w = NULL;
    if (rc < 0) goto done;

    r.docs_train = tr->docs;
    r.docs_test = te->docs;
    r.tokens_train = tr->tokens;
    r.tokens_test = te->tokens;
    r.bytes_train = tr->bytes;
    r.bytes_test = te->bytes;
    r.truncated = tr->truncated + te->truncated;
    r.longest = tr->longest > te->longest ? tr->longest : te->longest;
    r.classes = src.n;
    r.vocab = tok.vocab;
    r.seconds = infl_now() - t0;
    if (res) *res = r;
done:
    if (w) store_dataset_abort(w);
    writer_free(&W);
    corpus_free(&gather[0]);
    corpus_free(&gather[1]);
    store_tok_clear(&tok);
    sources_free(&src);
    return rc;
}
