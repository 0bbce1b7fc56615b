/*
 * idx.c — the streaming gzip'd IDX reader of idx.h. Sits under the importer
 * (import.c): it knows the IDX header and zlib, nothing about data sets or HDF5.
 */
#define _POSIX_C_SOURCE 200809L
#include "idx.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct infl_idx {
    gzFile gz;
    char path[4096];
    char what[32];                     // "images", "labels"
    int ndims;
    uint32_t dims[INFL_IDX_MAX_DIMS];
    char shape[96];                    // "60000 x 28 x 28", for messages
    uint64_t header_bytes;             // 4 + 4 * ndims
    uint64_t data_bytes;               // product of dims
    uint64_t done;                     // data bytes read so far
};

// ---- raw reads ----

// zlib's message for the last error (*errnum its code), without the "path: " prefix
// gzerror puts in front; "" when there is none.
static const char *gz_msg(infl_idx *f, int *errnum) {
    *errnum = Z_OK;
    const char *msg = gzerror(f->gz, errnum);
    if (!msg) return "";
    size_t n = strlen(f->path);
    if (strncmp(msg, f->path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    return msg;
}

// Reads up to n bytes; *got is what arrived. Returns INFL_E_FORMAT (with zlib's
// message) when zlib reports corrupt data, INFL_OK otherwise (a short *got is EOF).
static infl_status gz_read_some(infl_ctx *ctx, infl_idx *f, uint8_t *buf, uint64_t n,
                                uint64_t *got) {
    *got = 0;
    while (*got < n) {
        uint64_t want = n - *got;
        if (want > (1u << 30)) want = 1u << 30;  // gzread takes an unsigned, returns an int
        int r = gzread(f->gz, buf + *got, (unsigned)want);
        if (r < 0) {
            int errnum;
            const char *msg = gz_msg(f, &errnum);
            if (errnum == Z_ERRNO)
                return infl_seterr(ctx, INFL_E_IO, "%s: read error: %s", f->path, strerror(errno));
            return infl_seterr(ctx, INFL_E_FORMAT,
                               "%s: corrupt gzip data (zlib: %s) near byte %" PRIu64
                               " of the uncompressed %s file; expected a gzip'd IDX file",
                               f->path, *msg ? msg : "unknown error",
                               f->header_bytes + f->done + *got, f->what);
        }
        *got += (uint64_t)r;
        if ((uint64_t)r < want) break;  // end of file (or of a truncated gzip stream)
    }
    return INFL_OK;
}

// The zlib message after a short read, as " (zlib: ...)", or "" for a clean EOF.
static const char *gz_eof_note(infl_idx *f, char *buf, size_t size) {
    int errnum;
    const char *msg = gz_msg(f, &errnum);
    buf[0] = 0;
    if (errnum != Z_OK && *msg) snprintf(buf, size, " (zlib: %s)", msg);
    return buf;
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

// ---- open ----

infl_status idx_open(infl_ctx *ctx, const char *path, int ndims, const char *what,
                     infl_idx **out) {
    *out = NULL;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "IDX reader: no file name given");
    RETURN_IF(ctx, ndims < 1 || ndims > INFL_IDX_MAX_DIMS, INFL_E_ARG,
              "%s: IDX reader: %d dimensions asked for, expected 1..%d", path, ndims,
              INFL_IDX_MAX_DIMS);
    RETURN_IF(ctx, strlen(path) >= sizeof((infl_idx *)0)->path, INFL_E_ARG, "%s: path too long",
              path);
    infl_status rc = INFL_OK;
    infl_idx *f = infl_calloc(ctx, 1, sizeof *f, "the IDX reader");
    if (!f) return INFL_E_NOMEM;
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->what, sizeof f->what, "%s", what ? what : "data");
    errno = 0;
    f->gz = gzopen(path, "rb");
    GOTO_IF(ctx, !f->gz, errno ? INFL_E_IO : INFL_E_NOMEM, "%s: cannot open the %s file: %s", path,
            f->what, errno ? strerror(errno) : "out of memory in zlib");
    gzbuffer(f->gz, 1u << 17);

    // magic: 0x00 0x00, type, ndims
    uint8_t hdr[4 * (1 + INFL_IDX_MAX_DIMS)];
    uint64_t got;
    char note[160];
    CHECK(gz_read_some(ctx, f, hdr, 4, &got));
    GOTO_IF(ctx, got < 4, INFL_E_FORMAT,
            "%s: truncated: expected a 4-byte IDX magic number (0x000008%02X), the file holds %" PRIu64
            " bytes%s",
            path, (unsigned)ndims, got, gz_eof_note(f, note, sizeof note));
    f->header_bytes = 4;
    uint32_t magic = be32(hdr);
    uint32_t want_magic = 0x00000800u | (uint32_t)ndims;
    GOTO_IF(ctx, hdr[0] != 0 || hdr[1] != 0, INFL_E_FORMAT,
            "%s: bad magic number 0x%08X, expected 0x%08X (an IDX file of unsigned bytes with %d "
            "dimension%s: %s)",
            path, magic, want_magic, ndims, ndims == 1 ? "" : "s", f->what);
    GOTO_IF(ctx, hdr[2] != 0x08, INFL_E_FORMAT,
            "%s: bad magic number 0x%08X: element type 0x%02X, expected 0x08 (unsigned byte); "
            "expected magic 0x%08X",
            path, magic, hdr[2], want_magic);
    GOTO_IF(ctx, hdr[3] != ndims, INFL_E_FORMAT,
            "%s: bad magic number 0x%08X: %u dimensions, expected %d (magic 0x%08X for %s)", path,
            magic, hdr[3], ndims, want_magic, f->what);
    f->ndims = ndims;

    // sizes
    uint64_t dbytes = 4u * (uint64_t)ndims;
    CHECK(gz_read_some(ctx, f, hdr + 4, dbytes, &got));
    GOTO_IF(ctx, got < dbytes, INFL_E_FORMAT,
            "%s: truncated: expected %" PRIu64 " bytes of IDX dimensions after the magic, the file "
            "holds %" PRIu64 "%s",
            path, dbytes, got, gz_eof_note(f, note, sizeof note));
    f->header_bytes = 4 + dbytes;
    uint64_t total = 1;
    size_t off = 0;
    for (int i = 0; i < ndims; i++) {
        f->dims[i] = be32(hdr + 4 + 4 * i);
        GOTO_IF(ctx, f->dims[i] == 0, INFL_E_FORMAT,
                "%s: dimension %d of the %s is 0, expected at least 1", path, i, f->what);
        GOTO_IF(ctx, total > UINT64_MAX / f->dims[i], INFL_E_FORMAT,
                "%s: the dimensions of the %s overflow 64 bits", path, f->what);
        total *= f->dims[i];
        int n = snprintf(f->shape + off, sizeof f->shape - off, "%s%" PRIu32, i ? " x " : "",
                         f->dims[i]);
        if (n > 0 && (size_t)n < sizeof f->shape - off) off += (size_t)n;
    }
    f->data_bytes = total;
    *out = f;
    return INFL_OK;
done:
    idx_close(f);
    return rc;
}

// ---- accessors ----

int idx_ndims(const infl_idx *f) { return f->ndims; }
uint32_t idx_dim(const infl_idx *f, int i) { return (i >= 0 && i < f->ndims) ? f->dims[i] : 0; }
uint64_t idx_data_bytes(const infl_idx *f) { return f->data_bytes; }
const char *idx_path(const infl_idx *f) { return f->path; }

// ---- data ----

infl_status idx_read(infl_ctx *ctx, infl_idx *f, uint8_t *buf, uint64_t bytes) {
    RETURN_IF(ctx, bytes > f->data_bytes - f->done, INFL_E_ARG,
              "%s: reading %" PRIu64 " bytes at data byte %" PRIu64
              " runs past the %" PRIu64 " bytes the header announces (%s)",
              f->path, bytes, f->done, f->data_bytes, f->shape);
    uint64_t got;
    FORWARD_IF_ERROR(gz_read_some(ctx, f, buf, bytes, &got));
    if (got < bytes) {
        char note[160];
        return infl_seterr(ctx, INFL_E_FORMAT,
                           "%s: truncated: expected %" PRIu64 " bytes of data (%s %s) after the %" PRIu64
                           "-byte header, the file ends after %" PRIu64 "%s",
                           f->path, f->data_bytes, f->shape, f->what, f->header_bytes,
                           f->done + got, gz_eof_note(f, note, sizeof note));
    }
    f->done += bytes;
    return INFL_OK;
}

void idx_close(infl_idx *f) {
    if (!f) return;
    if (f->gz) gzclose(f->gz);
    free(f);
}
