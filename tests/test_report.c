/*
 * test_report.c — the token-wise attribution writers (host/cli/report.c): the HTML
 * report (escaping, U+FFFD for bad bytes, one shaded span per token with its share in
 * the title, output safety) and the terminal line (the span of largest share marked,
 * trimming with "…" at the width, short and all-zero documents, UTF-8 never cut).
 * The `sample` test writes a realistic two-query report; with INFL_REPORT_SAMPLE=path
 * set it also writes it there, for looking at in a browser.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/report.h"
#include "infl.h"
#include "testutil.h"

#define ASSERT_OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s", #expr, infl_ctx_error(ctx))

// ---- helpers ----

// Entries in the test's folder; *tmps counts names holding ".tmp".
static int count_files(int *tmps) {
    DIR *d = opendir(tu_tmpdir());
    cr_assert(d != NULL);
    int n = 0;
    *tmps = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (strstr(e->d_name, ".tmp")) ++*tmps;
    }
    closedir(d);
    return n;
}

// Whether s is valid UTF-8 (an independent, plain checker).
static int valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int k = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (k < 0 || (k == 1 && *p < 0xC2)) return 0;
        p++;
        for (int i = 0; i < k; i++, p++)
            if ((*p & 0xC0) != 0x80) return 0;
    }
    return 1;
}

// Display columns of a terminal line: code points, less ANSI escapes (ESC [ ... m).
static int columns(const char *s) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == 0x1b) {
            while (*p && *p != 'm') p++;
            if (!*p) break;
            continue;
        }
        if ((*p & 0xC0) != 0x80) n++;
    }
    return n;
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

// A document from NULL-terminated pieces and their shares; score = Σ shares.
typedef struct {
    const char *piece[64];
    float share[64];
    infl_report_doc d;
} tdoc;

static void tdoc_make(tdoc *t, const char *const *pieces, const float *shares) {
    memset(t, 0, sizeof *t);
    int n = 0;
    double sum = 0;
    for (; pieces[n]; n++) {
        cr_assert(n < 64);
        t->piece[n] = pieces[n];
        t->share[n] = shares[n];
        sum += shares[n];
    }
    t->d = (infl_report_doc){.index = 7, .topic = "computers", .score = (float)sum, .n = n, .piece = t->piece,
                             .share = t->share};
}

static char *write_and_read(infl_ctx *ctx, const char *name, const infl_report_query *q, int nq) {
    const char *path = tu_path(name);
    ASSERT_OK(ctx, infl_html_report(ctx, path, 0, "T", "S", q, nq));
    char *html = tu_read_file(path, NULL);
    cr_assert(html != NULL);
    return html;
}

// ---- HTML ----

Test(report_html, escapes_markup) {
    infl_ctx *ctx = tu_ctx();
    tdoc t;
    tdoc_make(&t, (const char *[]){"<script>", "alert(1)", "</script>", " a&b", " \"q\"", " 'x'", NULL},
              (const float[]){0.5f, 0.25f, -0.1f, 0.0f, 0.2f, 0.1f});
    t.d.topic = "<i>topic</i>";
    infl_report_query q = {.prompt = "<b>bold</b> & co", .completion = " \"yes\" <img src=x>", .logprob = -3.5,
                           .ntop = 1, .top = &t.d};
    const char *path = tu_path("esc.html");
    ASSERT_OK(ctx, infl_html_report(ctx, path, 0, "<title>&", "run <1>", &q, 1));
    char *html = tu_read_file(path, NULL);
    cr_assert(html != NULL);
    cr_assert(strstr(html, "<script") == NULL, "a <script> tag came through");
    cr_assert(strstr(html, "<img") == NULL && strstr(html, "<b>bold") == NULL && strstr(html, "<i>") == NULL);
    cr_assert(strstr(html, "&lt;script&gt;") != NULL);
    cr_assert(strstr(html, "&lt;/script&gt;") != NULL);
    cr_assert(strstr(html, " a&amp;b") != NULL);
    cr_assert(strstr(html, "&quot;q&quot;") != NULL);
    cr_assert(strstr(html, "&#39;x&#39;") != NULL);
    cr_assert(strstr(html, "&lt;b&gt;bold&lt;/b&gt; &amp; co") != NULL);
    cr_assert(strstr(html, "&quot;yes&quot; &lt;img src=x&gt;") != NULL);
    cr_assert(strstr(html, "&lt;i&gt;topic&lt;/i&gt;") != NULL);
    cr_assert(strstr(html, "<title>&lt;title&gt;&amp;</title>") != NULL);
    cr_assert(strstr(html, "run &lt;1&gt;") != NULL);
    free(html);
    infl_ctx_free(ctx);
}

Test(report_html, replaces_bad_utf8) {
    infl_ctx *ctx = tu_ctx();
    tdoc t;
    // "café" with é split over two tokens; a lone 0xFF; an overlong '/'; a lone
    // continuation byte; ESC; a truncated sequence at the very end
    tdoc_make(&t, (const char *[]){"caf\xC3", "\xA9!", " \xFF", " \xC0\xAF", " \x80", " \x1b[31m", " \xE2\x82", NULL},
              (const float[]){1, 1, 1, 1, 1, 1, 1});
    infl_report_query q = {.prompt = "bad \xFE byte", .completion = " ok", .ntop = 1, .top = &t.d};
    char *html = write_and_read(ctx, "utf8.html", &q, 1);
    cr_assert(valid_utf8(html), "the page is not valid UTF-8");
    cr_assert(strstr(html, ">caf\xC3\xA9</span>") != NULL, "é split over tokens is not shown whole in the first");
    cr_assert(strstr(html, ">!</span>") != NULL, "the token after the split character lost its '!'");
    cr_assert(strstr(html, "> \xEF\xBF\xBD</span>") != NULL, "0xFF is not U+FFFD");
    cr_assert(strstr(html, "> \xEF\xBF\xBD\xEF\xBF\xBD</span>") != NULL, "the overlong pair is not two U+FFFD");
    cr_assert(strstr(html, "> \xEF\xBF\xBD[31m</span>") != NULL, "ESC is not U+FFFD");
    cr_assert(strstr(html, "\x1b") == NULL);
    cr_assert(strstr(html, "bad \xEF\xBF\xBD byte") != NULL, "the prompt's bad byte is not U+FFFD");
    free(html);
    infl_ctx_free(ctx);
}

// Walks every token span of the page in order, checking its class, title and shade
// against the documents of q (proponents then opponents, query by query).
static void check_spans(const char *html, const infl_report_query *q, int nq) {
    const char *p = html;
    int seen = 0;
    for (int qi = 0; qi < nq; qi++)
        for (int side = 0; side < 2; side++) {
            int nd = side ? q[qi].nbottom : q[qi].ntop;
            for (int k = 0; k < nd; k++) {
                const infl_report_doc *d = side ? &q[qi].bottom[k] : &q[qi].top[k];
                float amax = 0;
                for (int i = 0; i < d->n; i++) amax = fmaxf(amax, fabsf(d->share[i]));
                for (int i = 0; i < d->n; i++, seen++) {
                    p = strstr(p, "<span class=\"t ");
                    cr_assert(p != NULL, "span %d (doc %d token %d) is missing", seen, k, i);
                    p += strlen("<span class=\"t ");
                    float s = d->share[i];
                    char want = s > 0 ? 'p' : s < 0 ? 'n' : 'z';
                    cr_assert_eq(*p, want, "token %d of doc #%lld (share %g): class '%c', expected '%c'", i,
                                 (long long)d->index, s, *p, want);
                    const char *end = strchr(p, '>');
                    const char *style = strstr(p, "style=\"background:rgba(var(--");
                    if (s != 0) {
                        cr_assert(style && style < end, "token %d has no shade", i);
                        style += strlen("style=\"background:rgba(var(--");
                        cr_assert(!strncmp(style, s > 0 ? "pro" : "opp", 3), "token %d: wrong colour", i);
                        double alpha = strtod(strchr(style, ',') + 1, NULL);
                        cr_assert(fabs(alpha - INFL_REPORT_MAX_ALPHA * fabsf(s) / amax) < 1e-3,
                                  "token %d: alpha %g, expected %g", i, alpha, INFL_REPORT_MAX_ALPHA * fabsf(s) / amax);
                    } else {
                        cr_assert(!style || style > end, "token %d has zero share but a shade", i);
                    }
                    const char *title = strstr(p, "title=\"");
                    cr_assert(title && title < end, "token %d has no title", i);
                    float got = strtof(title + 7, NULL);
                    cr_assert(got == s, "token %d: title says %.9g, share is %.9g", i, got, s);
                }
            }
        }
    cr_assert(strstr(p, "<span class=\"t ") == NULL, "more token spans than tokens (%d)", seen);
}

Test(report_html, one_span_per_token) {
    infl_ctx *ctx = tu_ctx();
    tdoc a, b, c;
    tdoc_make(&a, (const char *[]){"Real", " programmers", " don't", " comment", "\n", "", NULL},
              (const float[]){0.0123f, 0.4567891f, -0.031f, 0.2f, 0.0f, 1e-6f});
    tdoc_make(&b, (const char *[]){"A", " bird", " in", " hand", NULL}, (const float[]){-0.5f, 0.1f, -0.25f, 0});
    tdoc_make(&c, (const char *[]){"caf\xC3", "\xA9", NULL}, (const float[]){-1e-3f, -2e-3f});
    infl_report_doc bottom[2] = {b.d, c.d};
    infl_report_query q[2] = {{.prompt = "p", .completion = "c", .ntop = 1, .top = &a.d, .nbottom = 1,
                               .bottom = &bottom[0]},
                              {.prompt = "p2", .completion = "c2", .ntop = 0, .nbottom = 1, .bottom = &bottom[1]}};
    char *html = write_and_read(ctx, "spans.html", q, 2);
    check_spans(html, q, 2);
    cr_assert_eq(count_of(html, "<article class=\"card p\""), 1);
    cr_assert_eq(count_of(html, "<article class=\"card n\""), 2);
    // the newline is kept in the text (pre-wrap), the empty token is marked
    cr_assert(strstr(html, "\u21B5</span>\n</span>") != NULL, "the newline token lost its newline");
    cr_assert(strstr(html, "<span class=\"t p e\"") != NULL, "the empty token is not marked empty");
    cr_assert(strstr(html, "<span class=\"t n c\"") != NULL, "the continuation-only token is not marked");
    cr_assert(strstr(html, "white-space:pre-wrap") != NULL);
    free(html);
    infl_ctx_free(ctx);
}

Test(report_html, refuses_existing_file) {
    infl_ctx *ctx = tu_ctx();
    tdoc t;
    tdoc_make(&t, (const char *[]){"x", NULL}, (const float[]){1});
    infl_report_query q = {.prompt = "p", .completion = "c", .ntop = 1, .top = &t.d};
    const char *path = tu_path("r.html");
    tu_write_file(path, "keep", 4);
    cr_assert_eq(infl_html_report(ctx, path, 0, NULL, NULL, &q, 1), INFL_E_EXISTS);
    char *kept = tu_read_file(path, NULL);
    cr_assert_str_eq(kept, "keep", "the existing file was changed");
    free(kept);
    int tmps;
    cr_assert_eq(count_files(&tmps), 1);
    cr_assert_eq(tmps, 0, "a temporary file was left behind");

    ASSERT_OK(ctx, infl_html_report(ctx, path, 1, NULL, NULL, &q, 1));
    char *html = tu_read_file(path, NULL);
    cr_assert(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    free(html);
    cr_assert_eq(count_files(&tmps), 1);
    cr_assert_eq(tmps, 0);

    // a folder that does not exist: an I/O error, nothing left
    char bad[512];
    snprintf(bad, sizeof bad, "%s/no-such-dir/r.html", tu_tmpdir());
    cr_assert_eq(infl_html_report(ctx, bad, 0, NULL, NULL, &q, 1), INFL_E_IO);
    // a non-finite share: refused before any file is made
    t.share[0] = NAN;
    cr_assert_eq(infl_html_report(ctx, tu_path("nan.html"), 0, NULL, NULL, &q, 1), INFL_E_VALUE);
    cr_assert(strstr(infl_ctx_error(ctx), "token 0") != NULL, "%s", infl_ctx_error(ctx));
    cr_assert_eq(count_files(&tmps), 1);
    cr_assert_eq(tmps, 0);
    infl_ctx_free(ctx);
}

Test(report_html, rejects_bad_arguments) {
    infl_ctx *ctx = tu_ctx();
    tdoc t;
    tdoc_make(&t, (const char *[]){"x", "y", NULL}, (const float[]){1, 2});
    infl_report_query q = {.ntop = 1, .top = &t.d};
    cr_assert_eq(infl_html_report(ctx, NULL, 0, NULL, NULL, &q, 1), INFL_E_ARG);
    cr_assert_eq(infl_html_report(ctx, tu_path("a.html"), 0, NULL, NULL, NULL, 1), INFL_E_ARG);
    cr_assert_eq(infl_html_report(ctx, tu_path("a.html"), 0, NULL, NULL, &q, -1), INFL_E_ARG);
    t.piece[1] = NULL;
    cr_assert_eq(infl_html_report(ctx, tu_path("a.html"), 0, NULL, NULL, &q, 1), INFL_E_ARG);
    t.piece[1] = "y";
    t.d.n = -2;
    cr_assert_eq(infl_html_report(ctx, tu_path("a.html"), 0, NULL, NULL, &q, 1), INFL_E_ARG);
    t.d.n = 2;
    q.ntop = 2;  // counted but only one given: caught as a NULL array only when top is NULL
    q.top = NULL;
    cr_assert_eq(infl_html_report(ctx, tu_path("a.html"), 0, NULL, NULL, &q, 1), INFL_E_ARG);
    int tmps;
    cr_assert_eq(count_files(&tmps), 0, "a refused report left a file");
    // no queries at all is a valid (empty) report
    ASSERT_OK(ctx, infl_html_report(ctx, tu_path("empty.html"), 0, NULL, NULL, NULL, 0));
    infl_ctx_free(ctx);
}

// ---- terminal line ----

// 20 tokens "w00 w01 ... w19" with shares given by index.
typedef struct {
    char text[20][16];
    tdoc t;
} words;

static void words_make(words *w, const float *shares, int n) {
    const char *pieces[21];
    for (int i = 0; i < n; i++) {
        snprintf(w->text[i], sizeof w->text[i], "%sw%02d", i ? " " : "", i);
        pieces[i] = w->text[i];
    }
    pieces[n] = NULL;
    tdoc_make(&w->t, pieces, shares);
}

Test(report_line, marks_span_of_largest_share) {
    float sh[20] = {0};
    sh[3] = 0.1f, sh[11] = 0.5f, sh[12] = 0.4f, sh[14] = -0.05f, sh[17] = 0.2f;
    words w;
    words_make(&w, sh, 20);
    char out[512];
    // windows of 5 tokens (20 / 4): the first with the largest sum is 8..12 (0.9);
    // its edges with no positive share are dropped: the span is tokens 11..12
    size_t n = infl_report_line(out, sizeof out, &w.t.d, 200, 0);
    cr_assert_eq(n, strlen(out));
    cr_assert_str_eq(out, "w00 w01 w02 w03 w04 w05 w06 w07 w08 w09 w10\u27E6 w11 w12\u27E7 w13 w14 w15 w16 w17 w18 w19");
    n = infl_report_line(out, sizeof out, &w.t.d, 200, 1);
    cr_assert_str_eq(out, "w00 w01 w02 w03 w04 w05 w06 w07 w08 w09 w10\x1b[7;32m w11 w12\x1b[0m w13 w14 w15 w16 w17 "
                          "w18 w19");
    // a weak token inside the window stays in the span: 11..15 (0.5 - 0.05 + 0.4 + 0.2)
    w.t.share[12] = 0, w.t.share[15] = 0.4f, w.t.d.score = 1.05f;
    infl_report_line(out, sizeof out, &w.t.d, 200, 0);
    cr_assert(strstr(out, "w10\u27E6 w11 w12 w13 w14 w15\u27E7 w16") != NULL, "%s", out);
    // an opponent: the most negative window, in red
    for (int i = 0; i < 20; i++) w.t.share[i] = -w.t.share[i];
    w.t.d.score = -w.t.d.score;
    infl_report_line(out, sizeof out, &w.t.d, 200, 1);
    cr_assert(strstr(out, "w10\x1b[7;31m w11") != NULL, "%s", out);
    // a single dominant token
    memset(w.t.share, 0, sizeof w.t.share);
    w.t.share[5] = -2;
    w.t.share[6] = 0.5f;
    w.t.d.score = -1.5f;
    infl_report_line(out, sizeof out, &w.t.d, 200, 0);
    cr_assert(strstr(out, "w04\u27E6 w05\u27E7 w06") != NULL, "%s", out);
}

Test(report_line, trims_with_ellipsis_at_width) {
    float sh[20] = {0};
    sh[10] = 1;
    words w;
    words_make(&w, sh, 20);  // 79 columns
    char out[512];
    for (int width = 8; width <= 90; width++) {
        infl_report_line(out, sizeof out, &w.t.d, width, width % 2);
        int cols = columns(out);
        cr_assert(cols <= width, "width %d: %d columns: %s", width, cols, out);
        const char *span = width % 2 ? "\x1b[7;32m w10\x1b[0m" : "\u27E6 w10\u27E7";
        cr_assert(strstr(out, span) != NULL, "width %d: the span is not whole: %s", width, out);
        if (width < 79 + (width % 2 ? 0 : 2)) {
            cr_assert(cols >= width - 1, "width %d: only %d columns used: %s", width, cols, out);
            // cut on one side at least; a side not cut shows the text's own end
            int lead = !strncmp(out, "\u2026", 3), trail = !strcmp(out + strlen(out) - 3, "\u2026");
            cr_assert(lead || trail, "width %d: no ellipsis: %s", width, out);
            cr_assert(lead || !strncmp(out, "w00", 3), "width %d: start cut without an ellipsis: %s", width, out);
            cr_assert(trail || !strcmp(out + strlen(out) - 3, "w19"), "width %d: end cut without an ellipsis: %s",
                      width, out);
        } else {
            cr_assert(strstr(out, "\u2026") == NULL, "width %d: cut though it fits: %s", width, out);
        }
    }
    // the span near the start: the line starts with the text, the rest goes after it
    memset(w.t.share, 0, sizeof w.t.share);
    w.t.share[1] = 1;
    infl_report_line(out, sizeof out, &w.t.d, 30, 0);
    cr_assert_str_eq(out, "w00\u27E6 w01\u27E7 w02 w03 w04 w05 w06\u2026");
    // near the end
    memset(w.t.share, 0, sizeof w.t.share);
    w.t.share[19] = 1;
    infl_report_line(out, sizeof out, &w.t.d, 30, 0);
    cr_assert_str_eq(out, "\u2026w13 w14 w15 w16 w17 w18\u27E6 w19\u27E7");
}

Test(report_line, short_document_and_newlines) {
    tdoc t;
    tdoc_make(&t, (const char *[]){"Hi", "\n", "there", "\t", "!", NULL}, (const float[]){0.1f, 0, 0.9f, 0, 0});
    char out[128];
    size_t n = infl_report_line(out, sizeof out, &t.d, 80, 0);
    cr_assert_str_eq(out, "Hi\u23CE\u27E6there\u27E7 !");
    cr_assert_eq(n, strlen(out));
    // a span that is a lone empty token (end-of-text) shows as ∅
    tdoc_make(&t, (const char *[]){"ab", "", NULL}, (const float[]){0, 1});
    infl_report_line(out, sizeof out, &t.d, 80, 0);
    cr_assert_str_eq(out, "ab\u27E6\u2205\u27E7");
    // no tokens, NULL
    t.d.n = 0;
    cr_assert_eq(infl_report_line(out, sizeof out, &t.d, 80, 1), 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(infl_report_line(out, sizeof out, NULL, 80, 1), 0);
}

Test(report_line, all_zero_shares) {
    float sh[20] = {0};
    words w;
    words_make(&w, sh, 20);
    w.t.d.score = 0;
    char out[512];
    infl_report_line(out, sizeof out, &w.t.d, 20, 1);
    cr_assert_str_eq(out, "w00 w01 w02 w03 w04\u2026", "%s", out);
    infl_report_line(out, sizeof out, &w.t.d, 200, 0);
    cr_assert(strstr(out, "\u27E6") == NULL && strstr(out, "\u2026") == NULL, "%s", out);
    // a positive score whose window holds only negative shares: no span either
    w.t.share[3] = -1;
    w.t.d.score = 1;
    infl_report_line(out, sizeof out, &w.t.d, 200, 0);
    cr_assert(strstr(out, "\u27E6") == NULL, "%s", out);
}

Test(report_line, never_cuts_a_character) {
    // "é" as one token, "ü" split over two tokens, "→" (3 bytes), "😀" (4 bytes)
    tdoc t;
    const char *pieces[41];
    float shares[40];
    static const char *const kinds[4] = {"\xC3\xA9", "\xC3", "\xE2\x86\x92", "\xF0\x9F\x98\x80"};
    for (int i = 0; i < 40; i++) {
        pieces[i] = i % 4 == 1 ? kinds[1] : i % 4 == 2 ? "\xBC" : kinds[i % 4 == 3 ? 3 : i % 4 == 0 ? 0 : 2];
        shares[i] = i == 21 ? 1.0f : 0.01f;
    }
    pieces[40] = NULL;
    tdoc_make(&t, pieces, shares);
    char out[512];
    for (int width = 8; width <= 40; width++)
        for (int ansi = 0; ansi < 2; ansi++) {
            size_t n = infl_report_line(out, sizeof out, &t.d, width, ansi);
            cr_assert_eq(n, strlen(out));
            cr_assert(valid_utf8(out), "width %d: not valid UTF-8", width);
            cr_assert(columns(out) <= width, "width %d: %d columns", width, columns(out));
            cr_assert(strstr(out, "\xC3\xBC") != NULL, "width %d: the split ü is not whole", width);
        }
    // a small buffer: the return is the whole length, the text is cut between pieces
    size_t full = infl_report_line(out, sizeof out, &t.d, 30, 1);
    for (size_t cap = 1; cap < full + 2; cap++) {
        char small[512];
        memset(small, 'X', sizeof small);
        size_t n = infl_report_line(small, cap, &t.d, 30, 1);
        cr_assert_eq(n, full, "cap %zu: returned %zu, the whole line is %zu", cap, n, full);
        cr_assert(strlen(small) < cap, "cap %zu: wrote %zu bytes", cap, strlen(small));
        cr_assert(valid_utf8(small), "cap %zu: cut inside a character", cap);
        if (strstr(small, "\x1b[7;32m")) cr_assert(strstr(small, "\x1b[0m") != NULL, "cap %zu: colour left on", cap);
        if (cap > full) cr_assert_str_eq(small, out);
    }
    // bad bytes and controls do not reach the terminal
    tdoc_make(&t, (const char *[]){"a\x1b[2J", "\xFF", "b", NULL}, (const float[]){0, 0, 1});
    infl_report_line(out, sizeof out, &t.d, 80, 0);
    cr_assert_str_eq(out, "a\xEF\xBF\xBD[2J\xEF\xBF\xBD\u27E6b\u27E7");
}

// ---- a realistic sample (two queries, three proponents and three opponents each) ----

typedef struct {
    const char *text;      // the fortune
    const char *topic;
    int64_t index;
    float score;
    const char *keys;      // words that carry the score, space-separated
} sample_doc;

// Splits text into tokens the way a byte-pair tokenizer roughly would: a word with its
// leading space, punctuation alone, each newline alone; then an empty end-of-text
// token. Shares: keywords carry the score, other tokens a little deterministic noise.
static int sample_tokens(const sample_doc *s, char **piece, float *share, int max, uint64_t *rng) {
    int n = 0;
    const char *p = s->text;
    while (*p && n < max - 1) {
        const char *q = p;
        if (*q == '\n' || ispunct((unsigned char)*q)) {
            q++;
        } else {
            if (*q == ' ') q++;
            while (*q && !isspace((unsigned char)*q) && !ispunct((unsigned char)*q)) q++;
            if (q == p) q++;
        }
        piece[n] = strndup(p, (size_t)(q - p));
        n++;
        p = q;
    }
    piece[n++] = strdup("");
    double w[256], sum = 0;
    for (int i = 0; i < n; i++) {
        const char *word = piece[i] + (piece[i][0] == ' ');
        int key = 0;
        size_t len = strlen(word);
        for (const char *k = s->keys; len && *k;) {
            const char *e = strchr(k, ' ');
            size_t kl = e ? (size_t)(e - k) : strlen(k);
            if (kl == len && !strncasecmp(k, word, len)) key = 1;
            k += kl + (e != NULL);
        }
        double u = tu_uniform(rng);
        w[i] = key ? 0.6 + 0.8 * u : 0.12 * (u - 0.3);
        sum += w[i];
    }
    for (int i = 0; i < n; i++) share[i] = (float)(w[i] / sum * s->score);
    return n;
}

static const sample_doc SAMPLE[2][6] = {
    {{"Debugging is twice as hard as writing the code in the first place.\n"
      "So if you write the code as cleverly as you can, you are, by\n"
      "definition, not smart enough to debug it.",
      "computers", 4182, 0.0412f, "debug Debugging code cleverly smart"},
     {"A printf in the right place is worth a week in the debugger.", "computers", 911, 0.0287f,
      "printf debugger place"},
     {"The last bug is always in the line you were sure of.\n\t-- Proverb of the night shift", "computers", 2750,
      0.0163f, "bug line sure"},
     {"Love is a fire. But whether it warms your hearth or burns\ndown your house, you can never tell.", "love",
      1207, -0.0231f, "Love fire warms burns"},
     {"Eat dessert first; life is uncertain.", "food", 3301, -0.0148f, "dessert Eat first"},
     {"The naïve gardener plants \"roses\" & <weeds> alike, and\nthe garden forgives neither.", "wisdom", 58,
      -0.0072f, "gardener roses weeds garden"}},
    {{"You will meet a tall, dark stranger who owes you money.", "fortunes", 17, 0.0538f,
      "meet tall dark stranger"},
     {"A stranger is a friend you have not yet lent a book to.", "people", 2044, 0.0301f, "stranger friend"},
     {"Tomorrow you will meet someone who knows exactly what you did\nlast summer. Be polite.", "fortunes", 989,
      0.0118f, "meet Tomorrow someone"},
     {"Never trust a computer you cannot throw out of a window.", "computers", 3120, -0.0196f,
      "computer trust window"},
     {"The meeting has been cancelled. Rejoice, and go home early.", "work", 1502, -0.0121f,
      "meeting cancelled home"},
     {"Stay home tonight; the stars are busy elsewhere.", "astrology", 730, -0.0065f, "home Stay stars"}}};

Test(report_html, sample) {
    infl_ctx *ctx = tu_ctx();
    uint64_t rng = 42;
    char *piece[2][6][256];
    float share[2][6][256];
    infl_report_doc docs[2][6];
    for (int qi = 0; qi < 2; qi++)
        for (int k = 0; k < 6; k++) {
            const sample_doc *s = &SAMPLE[qi][k];
            int n = sample_tokens(s, piece[qi][k], share[qi][k], 256, &rng);
            docs[qi][k] = (infl_report_doc){s->index, s->topic, s->score, n, (const char *const *)piece[qi][k],
                                            share[qi][k]};
        }
    infl_report_query q[2] = {
        {.prompt = "Q: What is the best way to find a bug in a program?\nA:",
         .completion = " Put a printf before every line and read them all.", .logprob = -21.347, .ntop = 3,
         .top = docs[0], .nbottom = 3, .bottom = docs[0] + 3},
        {.prompt = "Your fortune for today: you will", .completion = " meet a tall, dark stranger.",
         .logprob = -6.912, .ntop = 3, .top = docs[1], .nbottom = 3, .bottom = docs[1] + 3}};
    const char *title = "Which fortunes made these completions likely?";
    const char *subtitle = "EK-FAC influence, token-wise \u00B7 run runs/fortunes-gpt (step 20000) \u00B7 "
                           "train split of fortunes.h5 (14,302 documents)";
    char *html = write_and_read(ctx, "sample.html", q, 2);
    check_spans(html, q, 2);
    cr_assert_eq(count_of(html, "<section class=\"query\""), 2);
    cr_assert_eq(count_of(html, "<article class=\"card p\""), 6);
    cr_assert_eq(count_of(html, "<article class=\"card n\""), 6);
    cr_assert(valid_utf8(html));
    free(html);
    const char *where = getenv("INFL_REPORT_SAMPLE");
    if (where && *where) {
        ASSERT_OK(ctx, infl_html_report(ctx, where, 1, title, subtitle, q, 2));
        char line[1024];
        for (int qi = 0; qi < 2; qi++)
            for (int k = 0; k < 6; k++) {
                infl_report_line(line, sizeof line, &docs[qi][k], 64, 1);
                printf("  %+.4f  %-10s %s\n", docs[qi][k].score, docs[qi][k].topic, line);
            }
    }
    for (int qi = 0; qi < 2; qi++)
        for (int k = 0; k < 6; k++)
            for (int i = 0; i < docs[qi][k].n; i++) free(piece[qi][k][i]);
    infl_ctx_free(ctx);
}
