/*
 * status.c — status names and messages from the one table in infl.h, the context's
 * error detail, version and build information.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *infl_status_name(infl_status s) {
    switch (s) {
#define X(name, value, msg) \
    case name:              \
        return #name;
        INFL_STATUS_TABLE(X)
#undef X
    }
    return "INFL_E_UNKNOWN";
}

const char *infl_status_str(infl_status s) {
    switch (s) {
#define X(name, value, msg) \
    case name:              \
        return msg;
        INFL_STATUS_TABLE(X)
#undef X
    }
    return "unknown status";
}

infl_status infl_seterr(infl_ctx *ctx, infl_status st, const char *fmt, ...) {
    if (!ctx) return st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->detail, sizeof ctx->detail, fmt, ap);
    va_end(ap);
    return st;
}

void infl_note(infl_ctx *ctx, const char *fmt, ...) {
    if (!ctx) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t at = strlen(ctx->notes), n = strlen(line);
    if (at + n + 2 > sizeof ctx->notes) return;
    memcpy(ctx->notes + at, line, n);
    ctx->notes[at + n] = '\n';
    ctx->notes[at + n + 1] = 0;
}

const char *infl_ctx_notes(const infl_ctx *ctx) { return ctx ? ctx->notes : ""; }

void infl_ctx_clear_notes(infl_ctx *ctx) {
    if (ctx) ctx->notes[0] = 0;
}

void infl_errprefix(infl_ctx *ctx, const char *fmt, ...) {
    if (!ctx) return;
    char pre[1024], old[sizeof ctx->detail];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->detail, sizeof old);
    snprintf(ctx->detail, sizeof ctx->detail, "%.1000s: %.1000s", pre, old);
}

unsigned infl_version_number(void) { return INFL_VERSION_NUMBER; }
const char *infl_version_string(void) { return INFL_VERSION_STRING; }
