/*
 * util.c — small services every module uses: checked allocation, a monotonic clock,
 * output files written under a temporary name, and data-reference parsing.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

// ---- memory ----

void *infl_malloc(infl_ctx *ctx, size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) infl_seterr(ctx, INFL_E_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *infl_calloc(infl_ctx *ctx, size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) infl_seterr(ctx, INFL_E_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

double infl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- output files ----

infl_status infl_out_begin(infl_ctx *ctx, const char *path, int force, char *tmp, size_t tmpsize) {
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no output file given");
    struct stat st;
    if (stat(path, &st) == 0) {
        RETURN_IF(ctx, S_ISDIR(st.st_mode), INFL_E_ARG, "%s: is a directory, expected a file name", path);
        RETURN_IF(ctx, !force, INFL_E_EXISTS, "%s: exists; use --force to overwrite it", path);
    }
    int n = snprintf(tmp, tmpsize, "%s.tmp.%ld", path, (long)getpid());
    RETURN_IF(ctx, n < 0 || (size_t)n >= tmpsize, INFL_E_ARG, "%s: path too long", path);
    return INFL_OK;
}

infl_status infl_out_commit(infl_ctx *ctx, const char *tmp, const char *path) {
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return infl_seterr(ctx, INFL_E_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(e));
    }
    return INFL_OK;
}

void infl_out_abort(const char *tmp) {
    if (tmp && *tmp) unlink(tmp);
}

// ---- data references ----

static int parse_i64(const char *s, const char *e, int64_t *out) {
    if (s == e) return -1;
    int64_t v = 0;
    for (const char *p = s; p < e; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

size_t infl_dataref_file_len(const char *ref) {
    const char *sep = NULL;
    for (const char *p = ref; (p = strstr(p, ":/")) != NULL; p++) sep = p;
    return sep ? (size_t)(sep - ref) : strlen(ref);
}

infl_status infl_dataref_parse(infl_ctx *ctx, const char *text, infl_dataref *out) {
    RETURN_IF(ctx, !text || !*text, INFL_E_ARG, "empty data reference; expected FILE:/split[begin:end]");
    memset(out, 0, sizeof *out);
    out->end = -1;
    // The split starts at the last ":/" so that paths may hold ':'.
    const char *sep = text[infl_dataref_file_len(text)] ? text + infl_dataref_file_len(text) : NULL;
    RETURN_IF(ctx, !sep, INFL_E_ARG,
              "data reference '%s': expected FILE:/split with an optional [begin:end], e.g. fmnist.h5:/test[0:16]",
              text);
    size_t plen = (size_t)(sep - text);
    RETURN_IF(ctx, plen == 0, INFL_E_ARG, "data reference '%s': no file name before ':/'", text);
    RETURN_IF(ctx, plen >= sizeof out->path, INFL_E_ARG, "data reference '%s': path too long", text);
    memcpy(out->path, text, plen);
    const char *sp = sep + 2;
    const char *br = strchr(sp, '[');
    const char *se = br ? br : sp + strlen(sp);
    RETURN_IF(ctx, se == sp, INFL_E_ARG, "data reference '%s': no split name after ':/'", text);
    RETURN_IF(ctx, (size_t)(se - sp) >= sizeof out->split, INFL_E_ARG, "data reference '%s': split name too long",
              text);
    memcpy(out->split, sp, (size_t)(se - sp));
    RETURN_IF(ctx, strchr(out->split, '/') != NULL, INFL_E_ARG,
              "data reference '%s': the split is one group name, e.g. /train", text);
    if (!br) return INFL_OK;
    const char *close = strchr(br, ']');
    RETURN_IF(ctx, !close || close[1] != '\0', INFL_E_ARG,
              "data reference '%s': the range must end the reference, as [begin:end]", text);
    const char *colon = memchr(br + 1, ':', (size_t)(close - br - 1));
    if (!colon) {
        int64_t i;
        RETURN_IF(ctx, parse_i64(br + 1, close, &i) != 0, INFL_E_ARG,
                  "data reference '%s': row range: expected [i], [begin:end], [begin:] or [:end] with whole numbers",
                  text);
        out->begin = i;
        out->end = i + 1;
        return INFL_OK;
    }
    if (colon > br + 1)
        RETURN_IF(ctx, parse_i64(br + 1, colon, &out->begin) != 0, INFL_E_ARG,
                  "data reference '%s': row range: begin is not a whole number", text);
    if (close > colon + 1)
        RETURN_IF(ctx, parse_i64(colon + 1, close, &out->end) != 0, INFL_E_ARG,
                  "data reference '%s': row range: end is not a whole number", text);
    RETURN_IF(ctx, out->end >= 0 && out->end <= out->begin, INFL_E_ARG,
              "data reference '%s': empty row range [%" PRId64 ":%" PRId64 "]", text, out->begin, out->end);
    return INFL_OK;
}
