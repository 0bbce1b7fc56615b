/*
 * report.h — token-wise attribution for language models, for people: an HTML report
 * (per query: the prompt and the completion, then the proponent and opponent training
 * documents with every token shaded by its share of the document's score) and a
 * one-line terminal summary of a document (its most influential span, marked).
 * Part of the CLI layer (infl_cli); the library proper knows nothing of HTML. The
 * writers only lay out numbers they are given; how scores and shares are computed is
 * not their concern.
 *
 * Text handling, shared by both writers: a document's tokens are read as one byte
 * stream. A UTF-8 character split over tokens (a byte-level tokenizer splits "é" in
 * two) is shown whole, in the token holding its first byte; the tokens holding only
 * its continuation bytes show as empty. Bytes that are not valid UTF-8, and control
 * characters other than newline and tab, show as U+FFFD. Thread-safe (no state).
 */
#ifndef INFL_REPORT_H
#define INFL_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "infl.h"

typedef struct {
    int64_t index;             // the document's index in its split
    const char *topic;         // its class name (the fortune's topic file); NULL or "" if none
    float score;               // the document's score
    int n;                     // tokens (>= 0)
    const char *const *piece;  // (n) each token's bytes, NUL-terminated; "" allowed (end-of-text);
                               // any bytes (invalid UTF-8, '<', '&', newlines)
    const float *share;        // (n) each token's share of the score (they sum to about `score`)
} infl_report_doc;

typedef struct {
    const char *prompt, *completion;  // the texts (any bytes; NULL reads as "")
    double logprob;                   // log p(completion | prompt), nats
    int ntop, nbottom;
    const infl_report_doc *top;       // (ntop) proponents, highest score first
    const infl_report_doc *bottom;    // (nbottom) opponents, lowest score first
} infl_report_query;

// ---- HTML ----

// Writes a self-contained HTML page to `path` (inline CSS, no scripts, no external
// resources): a header with `title` and `subtitle` (either may be NULL; e.g. the
// method and the run) and a colour legend, then a section per query (q is (nq,)):
// the prompt followed by the completion (marked apart), log p(completion | prompt),
// and the proponent and opponent documents as cards (rank, index, topic, score). In a
// card every token is one <span class="t p|n|z"> (positive, negative, zero share)
// whose background is the proponent colour (blue) for a positive share and the
// opponent colour (orange) for a negative one, with opacity
// INFL_REPORT_MAX_ALPHA * |share| / (the largest |share| in that document): each card
// shows where *its* score comes from, and the card's score says how much there is.
// The span's title (shown on hover) is the share in %.9g (it reads back as the same
// float) and the token's position. Newlines are kept (white-space: pre-wrap) and
// shown as a faint "↵" so that a shaded newline token is visible; an empty token
// shows as a faint "∅".
//
// Validates everything first: INFL_E_ARG for a missing path, negative counts, NULL
// arrays or pieces; INFL_E_VALUE for a non-finite score, share or log-prob. Refuses an
// existing path without `force` (INFL_E_EXISTS), writes a temporary file beside it
// and renames it into place; leaves nothing behind on failure (INFL_E_IO, INFL_E_NOMEM).
infl_status infl_html_report(infl_ctx *ctx, const char *path, int force, const char *title, const char *subtitle,
                             const infl_report_query *q, int nq);

#define INFL_REPORT_MAX_ALPHA 0.8  // background opacity of a document's largest |share|

// ---- terminal ----

// Writes one terminal line for document d into out (cap bytes, NUL-terminated when
// cap > 0; a piece that does not fit is left out whole, never half a character or
// half an escape sequence) and returns the bytes the whole line takes (without the
// NUL), like snprintf: a return >= cap means it was cut.
//
// The line is the document's text with newlines shown as "⏎" and tabs as spaces,
// at most `width` columns (one per character; width < INFL_REPORT_MIN_WIDTH reads as
// INFL_REPORT_MIN_WIDTH), cut at character boundaries around the most influential
// span, with "…" where text is cut. The span: of all windows of
// L = min(ceil(n / 4), INFL_REPORT_SPAN_TOKENS) consecutive tokens (a short document
// gets a span shorter than itself), the one with the largest
// Σ share × sign (sign: of the score, or of Σ share when the score is 0; first such
// window on ties), with its edge tokens whose share × sign <= 0 dropped, and shrunk
// from its weaker edge while it is wider than the line allows. With `ansi` the span
// is in reverse video, green for a proponent (sign > 0), red for an opponent; without,
// it is bracketed "⟦…⟧" (two columns, counted in width); with ansi < 0 it is not
// marked (the line is cut around it all the same). A document whose shares are
// all zero (or that has no tokens) gets no span and shows from its start. d must be
// valid (n >= 0, piece and share non-NULL when n > 0); NULL d writes "".
size_t infl_report_line(char *out, size_t cap, const infl_report_doc *d, int width, int ansi);

#define INFL_REPORT_SPAN_TOKENS 8  // tokens in the window the span is chosen from
#define INFL_REPORT_MIN_WIDTH 8    // narrowest line infl_report_line makes

#endif
