/*
 * cmd_rank_lm.c — `infl rank` on a language model (a gpt run): the queries file of
 * text queries (JSON lines {"prompt": ..., "completion": ...}), and the output a
 * person reads: per query the prompt, the completion and its log-probability, then
 * the proponent and opponent documents with their topic, score and text (one line,
 * around the tokens that carry most of the score); the same as CSV and JSON with
 * every token's share, and the HTML report (report.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "cmd_rank_lm.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "data/tokenizer.h"
#include "report.h"

// ---- the queries file ----

// Appends the UTF-8 encoding of code point u.
static void put_utf8(char **o, uint32_t u) {
    char *p = *o;
    if (u < 0x80) *p++ = (char)u;
    else if (u < 0x800) *p++ = (char)(0xC0 | u >> 6), *p++ = (char)(0x80 | (u & 0x3F));
    else if (u < 0x10000)
        *p++ = (char)(0xE0 | u >> 12), *p++ = (char)(0x80 | (u >> 6 & 0x3F)), *p++ = (char)(0x80 | (u & 0x3F));
    else
        *p++ = (char)(0xF0 | u >> 18), *p++ = (char)(0x80 | (u >> 12 & 0x3F)), *p++ = (char)(0x80 | (u >> 6 & 0x3F)),
        *p++ = (char)(0x80 | (u & 0x3F));
    *o = p;
}

static int hex4(const char *s, uint32_t *u) {
    *u = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0) return -1;
        *u = *u << 4 | (uint32_t)v;
    }
    return 0;
}

// Parses the JSON string at *p (at its opening quote) into a malloc'd UTF-8 string;
// NULL with *err set when malformed.
static char *json_string(const char **p, const char **err) {
    const char *s = *p;
    if (*s != '"') return *err = "expected a string", NULL;
    s++;
    char *out = malloc(strlen(s) + 1), *o = out;  // never longer than its escaped form
    if (!out) return *err = "out of memory", NULL;
    while (*s && *s != '"') {
        if ((unsigned char)*s < 0x20) return free(out), *err = "a control character inside a string", NULL;
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        s++;
        char e = *s++;
        uint32_t u, lo;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (hex4(s, &u)) return free(out), *err = "a \\u escape without 4 hex digits", NULL;
            s += 4;
            if (u >= 0xD800 && u < 0xDC00) {
                if (s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo) || lo < 0xDC00 || lo >= 0xE000)
                    return free(out), *err = "a lone UTF-16 surrogate in a \\u escape", NULL;
                s += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            } else if (u >= 0xDC00 && u < 0xE000) {
                return free(out), *err = "a lone UTF-16 surrogate in a \\u escape", NULL;
            }
            if (u == 0) return free(out), *err = "a NUL character (\\u0000) in a text", NULL;
            put_utf8(&o, u);
            break;
        default: return free(out), *err = "an unknown escape", NULL;
        }
    }
    if (*s != '"') return free(out), *err = "an unterminated string", NULL;
    *o = 0;
    *p = s + 1;
    return out;
}

static const char *skip_ws(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    return s;
}

void lm_queries_free(lm_queries *q) {
    for (int i = 0; i < q->n; i++) {
        free(q->prompt[i]);
        free(q->completion[i]);
    }
    free(q->prompt);
    free(q->completion);
    memset(q, 0, sizeof *q);
}

infl_status lm_queries_read(infl_ctx *ctx, const char *path, lm_queries *q) {
    memset(q, 0, sizeof *q);
    FILE *f = fopen(path, "r");
    RETURN_IF(ctx, !f, INFL_E_IO, "%s: cannot open the queries file", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0, alloc = 0;
    infl_status rc = INFL_OK;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        const char *s = skip_ws(line), *err = NULL;
        if (!*s) continue;  // blank lines
        GOTO_IF(ctx, *s != '{', INFL_E_FORMAT, "%s:%d: expected a JSON object {\"prompt\": ..., \"completion\": ...}",
                path, lineno);
        if (q->n == alloc) {
            alloc = alloc ? 2 * alloc : 16;
            char **p = realloc(q->prompt, (size_t)alloc * sizeof(char *));
            if (p) q->prompt = p;
            char **c = realloc(q->completion, (size_t)alloc * sizeof(char *));
            if (c) q->completion = c;
            GOTO_IF(ctx, !p || !c, INFL_E_NOMEM, "out of memory reading %s", path);
        }
        char *prompt = NULL, *completion = NULL;
        s = skip_ws(s + 1);
        while (*s && *s != '}') {
            const char *k0 = s;
            char *key = json_string(&s, &err);
            if (!key) break;
            s = skip_ws(s);
            if (*s != ':') {
                free(key);
                err = "expected ':' after a key";
                break;
            }
            s = skip_ws(s + 1);
            char *val = json_string(&s, &err);
            if (!val) {
                free(key);
                break;
            }
            char **slot = !strcmp(key, "prompt") ? &prompt : !strcmp(key, "completion") ? &completion : NULL;
            if (slot) {
                free(*slot);
                *slot = val;
            } else {
                free(val);  // other fields (an id, a note) are allowed and ignored
            }
            (void)k0;
            free(key);
            s = skip_ws(s);
            if (*s == ',') s = skip_ws(s + 1);
        }
        if (!err && *s != '}') err = "an unterminated object";
        if (!err && !prompt) err = "no \"prompt\" field";
        if (err) {
            free(prompt);
            free(completion);
            GOTO_IF(ctx, 1, INFL_E_FORMAT, "%s:%d: %s", path, lineno, err);
        }
        q->prompt[q->n] = prompt;
        q->completion[q->n] = completion;  // NULL: the model's greedy completion
        q->n++;
    }
    GOTO_IF(ctx, ferror(f), INFL_E_IO, "%s: read failed", path);
    GOTO_IF(ctx, q->n == 0, INFL_E_FORMAT, "%s: no queries (one JSON object a line)", path);
done:
    free(line);
    fclose(f);
    if (rc < 0) lm_queries_free(q);
    return rc;
}

// ---- the report ----

// One reported document: its topic and the bytes of each scored token.
typedef struct {
    char topic[64];
    char **piece;  // (n) NUL-terminated
    int n;
} docinfo;

static void docinfo_free(docinfo *d) {
    for (int i = 0; d->piece && i < d->n; i++) free(d->piece[i]);
    free(d->piece);
}

// Each of n tokens' bytes as a NUL-terminated string into piece (n, zeroed; the caller
// frees what it holds, also after a failure).
static infl_status token_pieces(infl_ctx *ctx, const tok_codec *codec, const int32_t *ids, int n, char **piece) {
    for (int t = 0; t < n; t++) {
        int k = 0;
        const uint8_t *b = tok_token_bytes(codec, ids[t], &k);
        piece[t] = malloc((size_t)k + 1);
        RETURN_IF(ctx, !piece[t], INFL_E_NOMEM, "out of memory");
        if (k) memcpy(piece[t], b, (size_t)k);
        piece[t][k] = 0;
    }
    return INFL_OK;
}

static infl_status load_doc(infl_ctx *ctx, infl_split *train, const tok_codec *codec, int64_t idx,
                            const infl_token_shares *sh, docinfo *d) {
    const infl_split_info *in = store_split_info(train);
    int32_t len = 0, label = 0;
    FORWARD_IF_ERROR(store_split_read_docs(ctx, train, idx - in->begin, 1, 0, 0, NULL, &len, &label));
    store_split_class_name(train, label, d->topic, sizeof d->topic);
    if (!d->topic[0]) snprintf(d->topic, sizeof d->topic, "%d", (int)label);
    d->n = sh->n;
    d->piece = calloc((size_t)(sh->n ? sh->n : 1), sizeof(char *));
    RETURN_IF(ctx, !d->piece, INFL_E_NOMEM, "out of memory");
    return token_pieces(ctx, codec, sh->token, sh->n, d->piece);
}

static infl_report_doc report_doc(const docinfo *d, int64_t idx, float score, const infl_token_shares *sh) {
    return (infl_report_doc){.index = idx, .topic = d->topic, .score = score, .n = d->n,
                             .piece = (const char *const *)d->piece, .share = sh->share};
}

// The document's text as one JSON/CSV string (its scored tokens), malloc'd.
static char *doc_text(const docinfo *d) {
    size_t n = 1;
    for (int t = 0; t < d->n; t++) n += strlen(d->piece[t]);
    char *s = malloc(n), *o = s;
    if (!s) return NULL;
    for (int t = 0; t < d->n; t++) {
        size_t k = strlen(d->piece[t]);
        memcpy(o, d->piece[t], k);
        o += k;
    }
    *o = 0;
    return s;
}

// Writes the CSV (one row per document: query, side, rank, index, topic, score, text)
// or the JSON (every document with its tokens and shares) of the rankings.
static infl_status write_file(infl_ctx *ctx, const char *path, int force, int json, const infl_rank_result *r,
                              const infl_rank_options *o, const char *train_ref, docinfo *const side_docs[2]) {
    char tmp[4200];
    FORWARD_IF_ERROR(infl_out_begin(ctx, path, force, tmp, sizeof tmp));
    FILE *fp = fopen(tmp, "w");
    RETURN_IF(ctx, !fp, INFL_E_IO, "%s: cannot write", path);
    if (json) {
        fprintf(fp, "{\"method\": \"%s\", \"run\": ", infl_method_name(o->method));
        put_json(fp, o->run);
        fprintf(fp, ", \"train\": ");
        put_json(fp, train_ref);
        fprintf(fp, ", \"queries\": [");
    } else {
        fprintf(fp, "query,prompt,completion,logprob,side,rank,train_index,topic,score,text\n");
    }
    for (int q = 0; q < r->M; q++) {
        if (json) {
            fprintf(fp, "%s\n {\"query\": %d, \"prompt\": ", q ? "," : "", q);
            put_json(fp, r->query_prompt[q]);
            fprintf(fp, ", \"completion\": ");
            put_json(fp, r->query_completion[q]);
            fprintf(fp, ", \"logprob\": %.9g", -r->query_loss[q]);
        }
        for (int side = 0; side < 2; side++) {
            if (json) fprintf(fp, ", \"%s\": [", side ? "opponents" : "proponents");
            for (int j = 0; j < r->k; j++) {
                size_t at = (size_t)q * r->k + j;
                const infl_token_shares *sh = &(side ? r->bottom_shares : r->top_shares)[at];
                const docinfo *d = &side_docs[side][at];
                int64_t idx = (side ? r->bottom_index : r->top_index)[at];
                float sc = (side ? r->bottom_score : r->top_score)[at];
                char *text = doc_text(d);
                if (!text) {
                    fclose(fp);
                    infl_out_abort(tmp);
                    return infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
                }
                if (json) {
                    fprintf(fp, "%s\n   {\"index\": %" PRId64 ", \"topic\": ", j ? "," : "", idx);
                    put_json(fp, d->topic);
                    fprintf(fp, ", \"score\": %.9g, \"text\": ", sc);
                    put_json(fp, text);
                    fprintf(fp, ", \"tokens\": [");
                    for (int t = 0; t < d->n; t++) {
                        fprintf(fp, "%s", t ? ", " : "");
                        put_json(fp, d->piece[t]);
                    }
                    fprintf(fp, "], \"shares\": [");
                    for (int t = 0; t < sh->n; t++) fprintf(fp, "%s%.6g", t ? ", " : "", sh->share[t]);
                    fprintf(fp, "]}");
                } else {
                    fprintf(fp, "%d,", q);
                    put_csv(fp, r->query_prompt[q]);
                    fputc(',', fp);
                    put_csv(fp, r->query_completion[q]);
                    fprintf(fp, ",%.9g,%s,%d,%" PRId64 ",", -r->query_loss[q], side ? "opponent" : "proponent", j + 1,
                            idx);
                    put_csv(fp, d->topic);
                    fprintf(fp, ",%.9g,", sc);
                    put_csv(fp, text);
                    fputc('\n', fp);
                }
                free(text);
            }
            if (json) fprintf(fp, "]");
        }
        if (json) fprintf(fp, "}");
    }
    if (json) fprintf(fp, "\n]}\n");
    int bad = ferror(fp);
    bad |= fclose(fp) != 0;
    if (bad) {
        infl_out_abort(tmp);
        return infl_seterr(ctx, INFL_E_IO, "%s: write failed", path);
    }
    return infl_out_commit(ctx, tmp, path);
}

// One line of text for the terminal: newlines shown as ⏎.
static void print_line(const char *s, int width) {
    int col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && col < width; p++) {
        if (*p == '\n') fputs("\u23ce", stdout);
        else if (*p == '\t') fputc(' ', stdout);
        else if (*p < 0x20) continue;
        else fputc(*p, stdout);
        if ((*p & 0xC0) != 0x80) col++;
    }
}

infl_status lm_doc_line(infl_ctx *ctx, infl_split *split, const tok_codec *codec, int64_t idx, int width, char *buf,
                        size_t size) {
    const infl_split_info *in = store_split_info(split);
    int T = width > 0 ? width : 1;
    int32_t *tok = infl_malloc(ctx, (size_t)T * sizeof(int32_t), "a document"), len = 0;
    float *share = infl_calloc(ctx, (size_t)T, sizeof(float), "a document");
    char **piece = infl_calloc(ctx, (size_t)T, sizeof(char *), "a document");
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!tok || !share || !piece);
    CHECK(store_split_read_docs(ctx, split, idx - in->begin, 1, T, 0, tok, &len, NULL));
    int n = len < T ? len : T;
    CHECK(token_pieces(ctx, codec, tok, n, piece));
    infl_report_doc d = {.index = idx, .n = n, .piece = (const char *const *)piece, .share = share};
    infl_report_line(buf, size, &d, width, -1);
done:
    for (int t = 0; piece && t < T; t++) free(piece[t]);
    free(piece);
    free(tok);
    free(share);
    return rc;
}

infl_status rank_lm_report(infl_ctx *ctx, const infl_rank_result *r, const infl_rank_options *o,
                           const char *train_ref, const lm_report_opts *ro) {
    infl_split *train = NULL;
    tok_codec *codec = NULL;
    docinfo *docs[2] = {NULL, NULL};
    infl_report_query *rq = NULL;
    infl_report_doc *rd = NULL;
    size_t nd = (size_t)r->M * r->k;
    infl_status rc = INFL_OK;
    infl_dataref dr;
    CHECK(infl_dataref_parse(ctx, train_ref, &dr));
    CHECK(store_split_open(ctx, &dr, &train));
    GOTO_IF(ctx, !r->top_shares, INFL_E_INTERNAL, "the ranking carries no token shares");
    CHECK(tok_codec_create(ctx, store_split_tokenizer(train), &codec));
    docs[0] = calloc(nd ? nd : 1, sizeof(docinfo));
    docs[1] = calloc(nd ? nd : 1, sizeof(docinfo));
    GOTO_NOMEM_IF(!docs[0] || !docs[1]);
    for (int side = 0; side < 2; side++)
        for (size_t at = 0; at < nd; at++)
            CHECK(load_doc(ctx, train, codec, (side ? r->bottom_index : r->top_index)[at],
                           &(side ? r->bottom_shares : r->top_shares)[at], &docs[side][at]));

    int width = ro->width > 20 ? ro->width : 100;
    for (int q = 0; q < r->M; q++) {
        printf("\nquery %d: ", q);
        if (r->query_prompt[q][0]) {
            printf("prompt \"");
            print_line(r->query_prompt[q], width);
            printf("\"\n  completion \"");
        } else {
            printf("document %" PRId64 " \"", r->query_begin + q);
        }
        print_line(r->query_completion[q], width);
        printf("\"\n  log p = %.4f nats\n", -r->query_loss[q]);
        for (int side = 0; side < 2; side++) {
            printf("  %s\n", side ? "opponents (made it less likely)" : "proponents (made it more likely)");
            for (int j = 0; j < r->k; j++) {
                size_t at = (size_t)q * r->k + j;
                const infl_token_shares *sh = &(side ? r->bottom_shares : r->top_shares)[at];
                infl_report_doc d = report_doc(&docs[side][at], (side ? r->bottom_index : r->top_index)[at],
                                               (side ? r->bottom_score : r->top_score)[at], sh);
                char line[2048];
                infl_report_line(line, sizeof line, &d, width - 40 > 30 ? width - 40 : 30, ro->spans ? ro->ansi : -1);
                printf("  %3d %7" PRId64 " %-14.14s %+11.4e  %s\n", j + 1, d.index, d.topic, d.score, line);
            }
        }
    }
    fflush(stdout);
    if (ro->csv) CHECK(write_file(ctx, ro->csv, o->force, 0, r, o, train_ref, docs));
    if (ro->json) CHECK(write_file(ctx, ro->json, o->force, 1, r, o, train_ref, docs));
    if (ro->html) {
        rq = calloc((size_t)r->M, sizeof *rq);
        rd = calloc(2 * nd + 1, sizeof *rd);
        GOTO_NOMEM_IF(!rq || !rd);
        for (int q = 0; q < r->M; q++) {
            for (int side = 0; side < 2; side++)
                for (int j = 0; j < r->k; j++) {
                    size_t at = (size_t)q * r->k + j;
                    rd[side * nd + at] =
                        report_doc(&docs[side][at], (side ? r->bottom_index : r->top_index)[at],
                                   (side ? r->bottom_score : r->top_score)[at],
                                   &(side ? r->bottom_shares : r->top_shares)[at]);
                }
            rq[q] = (infl_report_query){.prompt = r->query_prompt[q], .completion = r->query_completion[q],
                                        .logprob = -r->query_loss[q], .ntop = r->k, .nbottom = r->k,
                                        .top = rd + (size_t)q * r->k, .bottom = rd + nd + (size_t)q * r->k};
        }
        char title[256], sub[1024];
        snprintf(title, sizeof title, "Which training documents made the model say this (%s)",
                 infl_method_name(o->method));
        snprintf(sub, sizeof sub, "run %s, training documents %s", o->run, train_ref);
        CHECK(infl_html_report(ctx, ro->html, o->force, title, sub, rq, r->M));
    }
done:
    for (int side = 0; side < 2; side++)
        for (size_t at = 0; docs[side] && at < nd; at++) docinfo_free(&docs[side][at]);
    free(docs[0]);
    free(docs[1]);
    free(rq);
    free(rd);
    tok_codec_free(codec);
    store_split_close(train);
    return rc;
}
