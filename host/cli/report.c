/*
 * report.c — the token-wise attribution report in HTML and the one-line terminal
 * summary of a document (see report.h). Both read a document's tokens as one byte
 * stream through a small UTF-8 decoder (`stream`), so that a character split over
 * tokens is shown whole and bad bytes become U+FFFD; the HTML writer streams straight
 * into a temporary file, the line writer works in passes over the stream without
 * allocating.
 */
#define _POSIX_C_SOURCE 200809L
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

// ---- UTF-8 over a document's tokens ----

#define REPLACEMENT 0xFFFDu

typedef struct {
    const char *const *piece;  // (n) the tokens' bytes
    int n;
    int t;     // token of the next byte
    size_t o;  // its offset in that token
} stream;

static stream stream_of(const char *const *piece, int n) { return (stream){piece, n, 0, 0}; }

// The token the next character starts in (skipping token ends); n at the end.
static int stream_token(stream *s) {
    while (s->t < s->n && s->piece[s->t][s->o] == 0) {
        s->t++;
        s->o = 0;
    }
    return s->t;
}

// The next byte (0 at the end) without consuming it.
static unsigned char stream_peek(stream *s) {
    return stream_token(s) < s->n ? (unsigned char)s->piece[s->t][s->o] : 0;
}

// Reads the next character into *cp: a valid UTF-8 sequence (possibly spread over
// tokens) gives its code point; a byte that starts none gives U+FFFD and is consumed
// alone. Returns the token the character starts in, or -1 at the end of the stream.
static int stream_next(stream *s, uint32_t *cp) {
    int t = stream_token(s);
    if (t >= s->n) return -1;
    unsigned char b = (unsigned char)s->piece[t][s->o++];
    int need;
    uint32_t c, min;
    if (b < 0x80) {
        *cp = b;
        return t;
    } else if (b >= 0xC2 && b <= 0xDF) {
        need = 1, c = b & 0x1F, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2, c = b & 0x0F, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3, c = b & 0x07, min = 0x10000;
    } else {
        *cp = REPLACEMENT;  // a continuation byte, C0/C1 (overlong) or F5..FF
        return t;
    }
    // look ahead without consuming, so that a bad sequence gives back all but its lead
    stream look = *s;
    for (int k = 0; k < need; k++) {
        unsigned char x = stream_peek(&look);
        if ((x & 0xC0) != 0x80) {
            *cp = REPLACEMENT;
            return t;
        }
        c = c << 6 | (x & 0x3F);
        look.o++;
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        *cp = REPLACEMENT;  // overlong, out of range or a surrogate
        return t;
    }
    *s = look;
    *cp = c;
    return t;
}

// Encodes cp as UTF-8 into buf (>= 5 bytes, NUL-terminated); returns the length.
static int utf8_encode(uint32_t cp, char *buf) {
    int n;
    if (cp < 0x80) {
        buf[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        buf[0] = (char)(0xC0 | cp >> 6), buf[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | cp >> 12), buf[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        buf[0] = (char)(0xF0 | cp >> 18), buf[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        buf[2] = (char)(0x80 | (cp >> 6 & 0x3F)), buf[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    buf[n] = 0;
    return n;
}

// Control characters (C0 but newline and tab, DEL, C1) are not shown as themselves.
static int is_control(uint32_t cp) {
    return (cp < 0x20 && cp != '\n' && cp != '\t') || (cp >= 0x7F && cp <= 0x9F);
}

// ---- HTML: validation ----

static infl_status check_doc(infl_ctx *ctx, const infl_report_doc *d, int qi, const char *side, int k) {
    RETURN_IF(ctx, d->n < 0, INFL_E_ARG, "report: query %d, %s document %d: %d tokens", qi, side, k, d->n);
    RETURN_IF(ctx, d->n > 0 && (!d->piece || !d->share), INFL_E_ARG,
              "report: query %d, %s document %d: %d tokens but no %s", qi, side, k, d->n,
              d->piece ? "shares" : "pieces");
    RETURN_IF(ctx, !isfinite(d->score), INFL_E_VALUE, "report: query %d, %s document %d (#%lld): score is %g", qi,
              side, k, (long long)d->index, (double)d->score);
    for (int i = 0; i < d->n; i++) {
        RETURN_IF(ctx, !d->piece[i], INFL_E_ARG, "report: query %d, %s document %d (#%lld): token %d has no piece",
                  qi, side, k, (long long)d->index, i);
        RETURN_IF(ctx, !isfinite(d->share[i]), INFL_E_VALUE,
                  "report: query %d, %s document %d (#%lld): token %d's share is %g", qi, side, k,
                  (long long)d->index, i, (double)d->share[i]);
    }
    return INFL_OK;
}

static infl_status check_queries(infl_ctx *ctx, const infl_report_query *q, int nq) {
    RETURN_IF(ctx, nq < 0, INFL_E_ARG, "report: %d queries", nq);
    RETURN_IF(ctx, nq > 0 && !q, INFL_E_ARG, "report: %d queries but none given", nq);
    for (int i = 0; i < nq; i++) {
        RETURN_IF(ctx, q[i].ntop < 0 || q[i].nbottom < 0, INFL_E_ARG, "report: query %d: %d proponents, %d opponents",
                  i, q[i].ntop, q[i].nbottom);
        RETURN_IF(ctx, (q[i].ntop > 0 && !q[i].top) || (q[i].nbottom > 0 && !q[i].bottom), INFL_E_ARG,
                  "report: query %d: documents counted but not given", i);
        for (int k = 0; k < q[i].ntop; k++) FORWARD_IF_ERROR(check_doc(ctx, &q[i].top[k], i, "proponent", k));
        for (int k = 0; k < q[i].nbottom; k++) FORWARD_IF_ERROR(check_doc(ctx, &q[i].bottom[k], i, "opponent", k));
    }
    return INFL_OK;
}

// ---- HTML: text ----

// Writes code point cp as HTML text (escaped; controls as U+FFFD; a newline as a
// faint "↵" before it, so that a newline token can show its shade).
static void html_char(FILE *f, uint32_t cp) {
    char buf[8];
    switch (cp) {
    case '&': fputs("&amp;", f); return;
    case '<': fputs("&lt;", f); return;
    case '>': fputs("&gt;", f); return;
    case '"': fputs("&quot;", f); return;
    case '\'': fputs("&#39;", f); return;
    case '\n': fputs("<span class=\"nl\">\u21B5</span>\n", f); return;
    default: break;
    }
    utf8_encode(is_control(cp) ? REPLACEMENT : cp, buf);
    fputs(buf, f);
}

// Writes a whole string (NULL as "") as HTML text or attribute value; newlines are
// kept as they are (no "↵") when `plain`.
static void html_string(FILE *f, const char *s, int plain) {
    const char *one[1] = {s ? s : ""};
    stream st = stream_of(one, 1);
    uint32_t cp;
    while (stream_next(&st, &cp) >= 0) {
        if (cp == '\n' && plain)
            fputc('\n', f);
        else
            html_char(f, cp);
    }
}

// Formats v with %.*g, writing a typographic minus ("−") for a negative number.
static void html_number(FILE *f, const char *fmt, double v) {
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    if (buf[0] == '-') {
        fputs("\u2212", f);
        fputs(buf + 1, f);
    } else {
        fputs(buf, f);
    }
}

// ---- HTML: the page ----

static const char *const CSS =
    ":root{--pro:58,120,200;--opp:232,137,58;--ink:#1c1f24;--soft:#5d6472;--line:#e2e5ea;--bg:#f4f5f7;"
    "--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,\"DejaVu Sans Mono\",\"Liberation Mono\",monospace}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;background:var(--bg);color:var(--ink);"
    "font:15px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",\"DejaVu Sans\",Arial,sans-serif}\n"
    "main{max-width:1240px;margin:0 auto;padding:26px 26px 60px}\n"
    "header h1{font-size:25px;line-height:1.25;margin:0 0 4px;font-weight:650;letter-spacing:-.01em}\n"
    "header .sub{color:var(--soft);margin:0 0 14px;font-size:14px}\n"
    ".legend{display:flex;flex-wrap:wrap;gap:8px 26px;align-items:center;font-size:13px;color:var(--soft);"
    "background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px}\n"
    ".legend b{color:var(--ink);font-weight:600}\n"
    ".ramp{display:inline-block;width:84px;height:13px;border-radius:3px;vertical-align:-2px;margin-right:7px;"
    "border:1px solid var(--line)}\n"
    ".ramp.p{background:linear-gradient(90deg,rgba(var(--pro),0),rgba(var(--pro),.8))}\n"
    ".ramp.n{background:linear-gradient(90deg,rgba(var(--opp),0),rgba(var(--opp),.8))}\n"
    "section.query{margin-top:26px;background:#fff;border:1px solid var(--line);border-radius:10px;"
    "padding:18px 22px 8px;box-shadow:0 1px 2px rgba(0,0,0,.04)}\n"
    ".qhead{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap}\n"
    ".qhead h2{font-size:18px;margin:0}\n"
    ".lp{color:var(--soft);font-size:13.5px;font-variant-numeric:tabular-nums}\n"
    ".lp b{color:var(--ink)}\n"
    ".qkey{font-size:12px;color:var(--soft);margin:8px 0 4px}\n"
    ".qkey span{margin-right:14px}\n"
    ".qtext{font:14px/1.6 var(--mono);white-space:pre-wrap;overflow-wrap:anywhere;margin:0 0 16px;"
    "background:#fafbfc;border:1px solid var(--line);border-radius:6px;padding:12px 14px}\n"
    ".prompt{color:var(--soft)}\n"
    ".completion{color:var(--ink);font-weight:650;background:#fff1b8;box-shadow:inset 0 -2px #e2b100;"
    "border-radius:2px}\n"
    ".sw{display:inline-block;width:22px;height:11px;border-radius:2px;vertical-align:-1px;margin-right:5px}\n"
    ".sw.prompt{background:#eceef1;border:1px solid #d3d7dd}\n"
    ".sw.completion{background:#fff1b8;box-shadow:inset 0 -2px #e2b100}\n"
    ".cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:6px 22px}\n"
    "h3{font-size:13px;text-transform:uppercase;letter-spacing:.07em;margin:0 0 2px;font-weight:700}\n"
    "h3.p{color:rgb(var(--pro))}\n"
    "h3.n{color:rgb(196,104,24)}\n"
    ".hint{font-size:12.5px;color:var(--soft);margin:0 0 10px}\n"
    ".none{font-size:13px;color:var(--soft);font-style:italic}\n"
    ".card{border:1px solid var(--line);border-left:4px solid;border-radius:6px;padding:9px 12px 10px;"
    "margin:0 0 12px;background:#fff}\n"
    ".card.p{border-left-color:rgb(var(--pro))}\n"
    ".card.n{border-left-color:rgb(var(--opp))}\n"
    ".meta{display:flex;gap:10px;align-items:baseline;font-size:13px;color:var(--soft);margin-bottom:6px}\n"
    ".meta .rank{font-weight:700;color:var(--ink)}\n"
    ".meta .topic{background:#eef0f3;border-radius:10px;padding:0 8px;color:#3d4350}\n"
    ".meta .score{margin-left:auto;font-variant-numeric:tabular-nums;font-weight:650;color:var(--ink)}\n"
    ".doc{font:13px/1.65 var(--mono);white-space:pre-wrap;overflow-wrap:anywhere;margin:0}\n"
    ".t{border-radius:2px}\n"
    ".t:hover{outline:1px solid rgba(0,0,0,.6)}\n"
    ".nl{color:#aab1bc;font-size:.85em}\n"
    ".t.e::before{content:\"\\2205\";color:#aab1bc}\n"
    ".t.c{padding-left:1px}\n"
    "footer{margin-top:22px;font-size:12px;color:var(--soft)}\n";

static void html_head(FILE *f, const char *title, const char *subtitle) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
          f);
    html_string(f, title && *title ? title : "infl: token-wise attribution", 1);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n<header>\n<h1>", CSS);
    html_string(f, title && *title ? title : "Token-wise attribution", 1);
    fputs("</h1>\n", f);
    if (subtitle && *subtitle) {
        fputs("<p class=\"sub\">", f);
        html_string(f, subtitle, 1);
        fputs("</p>\n", f);
    }
    fprintf(f,
            "<div class=\"legend\">"
            "<span><span class=\"ramp p\"></span><b>Proponent</b> share: the token makes the completion "
            "more likely</span>"
            "<span><span class=\"ramp n\"></span><b>Opponent</b> share: less likely</span>"
            "<span>Shade = |share| / the largest |share| in its document (cards compare by score)."
            " Hover a token for its exact share.</span>"
            "</div>\n</header>\n");
}

// One document card: rank, index, topic, score, then every token as a shaded span.
static void html_card(FILE *f, const infl_report_doc *d, int rank, int proponent) {
    fprintf(f, "<article class=\"card %s\">\n<div class=\"meta\"><span class=\"rank\">%s%d</span>", proponent ? "p" : "n",
            proponent ? "P" : "O", rank);
    fprintf(f, "<span class=\"idx\">doc #%lld</span>", (long long)d->index);
    if (d->topic && *d->topic) {
        fputs("<span class=\"topic\">", f);
        html_string(f, d->topic, 0);
        fputs("</span>", f);
    }
    double sum = 0, amax = 0;
    for (int i = 0; i < d->n; i++) {
        sum += d->share[i];
        if (fabs(d->share[i]) > amax) amax = fabs(d->share[i]);
    }
    fprintf(f, "<span class=\"score\" title=\"score %.9g; sum of the token shares %.9g\">score ", (double)d->score,
            sum);
    html_number(f, "%+.4g", d->score);
    fputs("</span></div>\n<div class=\"doc\">", f);

    stream s = stream_of(d->piece, d->n);
    for (int t = 0; t < d->n; t++) {
        float sh = d->share[t];
        const char *cls = sh > 0 ? "p" : sh < 0 ? "n" : "z";
        int starts = stream_token(&s) == t;  // does a character start in this token?
        const char *extra = d->piece[t][0] == 0 ? " e" : starts ? "" : " c";
        fprintf(f, "<span class=\"t %s%s\"", cls, extra);
        if (sh != 0 && amax > 0)
            fprintf(f, " style=\"background:rgba(var(--%s),%.3f)\"", sh > 0 ? "pro" : "opp",
                    INFL_REPORT_MAX_ALPHA * fabs(sh) / amax);
        fprintf(f, " title=\"%.9g \u00B7 token %d%s\">", (double)sh, t,
                d->piece[t][0] == 0 ? " (empty)" : starts ? "" : " (ends the character before)");
        uint32_t cp;
        while (stream_token(&s) == t && stream_next(&s, &cp) >= 0) html_char(f, cp);
        fputs("</span>", f);
    }
    fputs("</div>\n</article>\n", f);
}

static void html_query(FILE *f, const infl_report_query *q, int qi, int nq) {
    fprintf(f, "<section class=\"query\" id=\"q%d\">\n<div class=\"qhead\"><h2>Query %d", qi + 1, qi + 1);
    if (nq > 1) fprintf(f, " <span class=\"lp\">of %d</span>", nq);
    fputs("</h2><span class=\"lp\">log p(completion | prompt) = <b>", f);
    html_number(f, "%.4f", q->logprob);
    fputs("</b> nats</span></div>\n", f);
    fputs("<div class=\"qkey\"><span><span class=\"sw prompt\"></span>prompt</span>"
          "<span><span class=\"sw completion\"></span>completion</span></div>\n<div class=\"qtext\">"
          "<span class=\"prompt\">",
          f);
    html_string(f, q->prompt, 1);
    fputs("</span><span class=\"completion\">", f);
    html_string(f, q->completion, 1);
    fputs("</span></div>\n<div class=\"cols\">\n", f);
    for (int side = 0; side < 2; side++) {
        int n = side ? q->nbottom : q->ntop;
        const infl_report_doc *docs = side ? q->bottom : q->top;
        fprintf(f, "<div class=\"col\">\n<h3 class=\"%s\">%s</h3>\n<p class=\"hint\">%s</p>\n", side ? "n" : "p",
                side ? "Opponents" : "Proponents",
                side ? "Training documents that make the completion less likely, lowest score first"
                     : "Training documents that make the completion more likely, highest score first");
        if (n == 0) fputs("<p class=\"none\">none</p>\n", f);
        for (int k = 0; k < n; k++) html_card(f, &docs[k], k + 1, !side);
        fputs("</div>\n", f);
    }
    fputs("</div>\n</section>\n", f);
}

infl_status infl_html_report(infl_ctx *ctx, const char *path, int force, const char *title, const char *subtitle,
                             const infl_report_query *q, int nq) {
    infl_status rc = INFL_OK;
    char *tmp = NULL;
    FILE *f = NULL;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "report: no output file given");
    FORWARD_IF_ERROR(check_queries(ctx, q, nq));
    size_t tmpsize = strlen(path) + 32;
    tmp = infl_malloc(ctx, tmpsize, "a temporary file name");
    if (!tmp) return INFL_E_NOMEM;
    tmp[0] = 0;
    CHECK(infl_out_begin(ctx, path, force, tmp, tmpsize));
    f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        GOTO_IF(ctx, 1, INFL_E_IO, "%s: cannot open %s for writing: %s", path, tmp, strerror(e));
    }
    html_head(f, title, subtitle);
    for (int i = 0; i < nq; i++) html_query(f, &q[i], i, nq);
    if (nq == 0) fputs("<p class=\"none\">No queries.</p>\n", f);
    fputs("<footer>Written by infl " INFL_VERSION_STRING ".</footer>\n</main>\n</body>\n</html>\n", f);
    int bad = ferror(f), e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    f = NULL;
    GOTO_IF(ctx, bad, INFL_E_IO, "%s: cannot write %s: %s", path, tmp, strerror(e));
    rc = infl_out_commit(ctx, tmp, path);  // removes tmp itself when it fails
done:
    if (f) fclose(f);
    if (rc < 0 && tmp) infl_out_abort(tmp);
    free(tmp);
    return rc;
}

// ---- terminal: the line ----

#define ANSI_RESET "\x1b[0m"
#define ELLIPSIS "\u2026"

typedef struct {
    char *out;
    size_t cap;
    size_t total;    // bytes the whole line takes
    size_t used;     // bytes written to out
    size_t reserve;  // bytes kept free for the reset of an open escape
    int stopped;     // a piece did not fit: nothing more is written
} line_writer;

static void put(line_writer *w, const char *s) {
    size_t k = strlen(s);
    w->total += k;
    if (w->stopped || w->used + k + w->reserve >= w->cap) {
        w->stopped = 1;
        return;
    }
    memcpy(w->out + w->used, s, k);
    w->used += k;
    w->out[w->used] = 0;
}

// The reset after an open escape: written whenever the opening one was.
static void put_reset(line_writer *w, int opened) {
    size_t k = strlen(ANSI_RESET);
    w->total += k;
    w->reserve = 0;
    if (!opened) return;
    memcpy(w->out + w->used, ANSI_RESET, k);
    w->used += k;
    w->out[w->used] = 0;
}

// The terminal's picture of one character (one column).
static void put_char(line_writer *w, uint32_t cp) {
    char buf[8];
    if (cp == '\n')
        put(w, "\u23CE");
    else if (cp == '\t')
        put(w, " ");
    else {
        utf8_encode(is_control(cp) ? REPLACEMENT : cp, buf);
        put(w, buf);
    }
}

// Characters in the whole document (*total) and, for tokens a..b (b - a < SPAN
// tokens), those starting in each (cnt[t - a]) and before a (*before).
static void count_chars(const infl_report_doc *d, int a, int b, int *cnt, int *before, int *total) {
    stream s = stream_of(d->piece, d->n);
    uint32_t cp;
    int t;
    *before = *total = 0;
    for (int i = a; i <= b; i++) cnt[i - a] = 0;
    while ((t = stream_next(&s, &cp)) >= 0) {
        ++*total;
        if (t < a) ++*before;
        else if (t <= b) cnt[t - a]++;
    }
}

size_t infl_report_line(char *out, size_t cap, const infl_report_doc *d, int width, int ansi) {
    line_writer w = {out, cap, 0, 0, 0, cap == 0};
    if (cap > 0) out[0] = 0;
    if (!d || d->n <= 0) return 0;
    if (width < INFL_REPORT_MIN_WIDTH) width = INFL_REPORT_MIN_WIDTH;
    const int n = d->n;

    // the sign that counts, and the best window of L tokens by Σ share × sign
    double sum = 0;
    for (int i = 0; i < n; i++) sum += d->share[i];
    double sign = d->score > 0 ? 1 : d->score < 0 ? -1 : sum > 0 ? 1 : sum < 0 ? -1 : 0;
    int marked = 0, a = 0, b = -1;  // the span: tokens a..b
    if (sign != 0) {
        int L = (n + 3) / 4 < INFL_REPORT_SPAN_TOKENS ? (n + 3) / 4 : INFL_REPORT_SPAN_TOKENS;
        double win = 0, best = 0;
        for (int i = 0; i < L; i++) win += sign * d->share[i];
        best = win, a = 0;
        for (int i = L; i < n; i++) {
            win += sign * (d->share[i] - d->share[i - L]);
            if (win > best) best = win, a = i - L + 1;
        }
        b = a + L - 1;
        while (a < b && sign * d->share[a] <= 0) a++;
        while (b > a && sign * d->share[b] <= 0) b--;
        marked = sign * d->share[a] > 0;  // all of the window's shares are of the other sign: no span
    }

    // columns: the span's characters, shrunk to what the line allows
    int cnt[INFL_REPORT_SPAN_TOKENS], before, total;
    count_chars(d, marked ? a : 0, marked ? b : -1, cnt, &before, &total);
    const int brackets = marked && ansi == 0 ? 2 : 0;
    int S = 0;
    for (int t = a; marked && t <= b; t++) S += cnt[t - a];
    int s0 = marked ? before : 0, s1 = s0 + S;  // the span's characters [s0, s1)
    int empty = marked && S == 0;               // a span of empty tokens shows as "∅"
    if (total + brackets + empty > width) {
        const int room = width - brackets - 2;  // for the span, with "…" on both sides
        while (marked && S > room && a < b) {   // drop the weaker edge token
            if (sign * d->share[a] < sign * d->share[b]) {
                s0 += cnt[0], S -= cnt[0];
                memmove(cnt, cnt + 1, (size_t)(b - a) * sizeof *cnt);
                a++;
            } else {
                S -= cnt[b - a];
                b--;
            }
            s1 = s0 + S;
        }
        if (S > room) S = room, s1 = s0 + S;  // one token wider than the line: its start
        empty = marked && S == 0;
    }

    // the window of characters [v0, v1) shown, the span as centred as the text allows
    int v0 = 0, v1 = total;
    if (total + brackets + empty > width) {
        int lead = s0, trail = total - s1;
        int budget = width - brackets - S - empty;  // >= 2
        int bb = budget / 2, ba = budget - bb;
        int take_b = lead <= bb ? lead : bb - 1;
        if (lead < bb) ba += bb - lead;
        int take_a = trail <= ba ? trail : ba - 1;
        if (trail < ba) bb += ba - trail;
        take_b = lead <= bb ? lead : bb - 1;
        v0 = s0 - take_b, v1 = s1 + take_a;
    }

    // write
    static const char *const OPEN[2] = {"\x1b[7;31m", "\x1b[7;32m"};
    stream s = stream_of(d->piece, d->n);
    uint32_t cp;
    int opened = 0;
    if (v0 > 0) put(&w, ELLIPSIS);
    for (int i = 0; i <= total; i++) {
        if (marked && i == s0 && ansi >= 0) {
            if (ansi) {
                w.reserve = strlen(ANSI_RESET);
                size_t used = w.used;
                put(&w, OPEN[sign > 0]);
                opened = w.used > used;
            } else {
                put(&w, "\u27E6");
            }
            if (empty) put(&w, "\u2205");
        }
        if (marked && i == s1 && ansi >= 0) {
            if (ansi)
                put_reset(&w, opened);
            else
                put(&w, "\u27E7");
        }
        if (i == total || stream_next(&s, &cp) < 0) break;
        if (i >= v0 && i < v1) put_char(&w, cp);
    }
    if (v1 < total) put(&w, ELLIPSIS);
    return w.total;
}
