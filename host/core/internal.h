/*
 * internal.h — what every host module shares: the context's insides, the error
 * helpers (RETURN_IF / CHECK / GOTO_IF) and small utilities. Not installed.
 */
#ifndef INFL_INTERNAL_H
#define INFL_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infl.h"

struct infl_backend;

struct infl_ctx {
    char detail[2048];              // last error's detail
    char backend_desc[256];         // "cpu (OpenBLAS ..., 2 threads)"
    char backend_note[512];         // what `auto` chose and why ("" when not asked for auto)
    const struct infl_backend *be;  // the backend table
    void *be_ctx;                   // its context
    infl_progress_fn progress;
    void *progress_user;
    const volatile int *cancel;
    int deterministic;              // CPU GEMMs give the same bits at every thread count (infl_ctx_options)
    char notes[2048];               // what the library did that the caller may say (infl_ctx_notes)
    const infl_comm *comm;          // the job's processes (infl_ctx_set_comm; core/comm.h), NULL: one
};

// ---- errors ----

// Sets the context's detail (printf format) and returns `st`. Always returns `st`.
infl_status infl_seterr(infl_ctx *ctx, infl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Appends one line to the context's notes (infl_ctx_notes), for the caller to show;
// the library itself never prints. A note that does not fit is dropped.
void infl_note(infl_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prepends "prefix: " to the current detail (for adding the file name on the way up).
void infl_errprefix(infl_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define RETURN_IF(ctx, cond, st, ...)                   \
    do {                                                \
        if (cond) return infl_seterr((ctx), (st), __VA_ARGS__); \
    } while (0)
#define FORWARD_IF_ERROR(expr)          \
    do {                                \
        infl_status s_fwd_ = (expr);    \
        if (s_fwd_ < 0) return s_fwd_;  \
    } while (0)
// In functions with `infl_status rc` and a `done:` label.
#define CHECK(expr)                 \
    do {                            \
        rc = (expr);                \
        if (rc < 0) goto done;      \
    } while (0)
#define GOTO_IF(ctx, cond, st, ...)                           \
    do {                                                      \
        if (cond) {                                           \
            rc = infl_seterr((ctx), (st), __VA_ARGS__);       \
            goto done;                                        \
        }                                                     \
    } while (0)

// After infl_malloc / infl_calloc (which set the detail): jump to done on NULL.
#define GOTO_NOMEM_IF(cond)         \
    do {                            \
        if (cond) {                 \
            rc = INFL_E_NOMEM;      \
            goto done;              \
        }                           \
    } while (0)

// ---- progress and cancel ----

static inline bool infl_cancelled(const infl_ctx *ctx) { return ctx->cancel && *ctx->cancel; }
static inline void infl_progress(infl_ctx *ctx, const char *what, uint64_t done, uint64_t total,
                                 const char *info) {
    if (ctx->progress) ctx->progress(ctx->progress_user, what, done, total, info);
}
#define RETURN_IF_CANCELLED(ctx) \
    RETURN_IF((ctx), infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted")

// ---- memory ----

// malloc that sets INFL_E_NOMEM with `what` in the detail; NULL on failure.
void *infl_malloc(infl_ctx *ctx, size_t bytes, const char *what);
void *infl_calloc(infl_ctx *ctx, size_t n, size_t size, const char *what);

// ---- time ----
double infl_now(void);  // seconds, monotonic

// ---- output files ----

// Checks that `path` may be written: fails with INFL_E_EXISTS when it exists and
// !force. Fills `tmp` (size >= strlen(path) + 32) with a temporary name beside it,
// "PATH.tmp.PID". First removes the stale temporaries of `path`: regular files named
// PATH.tmp.<digits> in its folder whose process is gone (kill(pid, 0) fails with
// ESRCH: a run killed by SIGKILL or a crash); a live process's (or this one's) is
// never touched. Each removal is noted on the context ("removed stale temporary X
// (process N is gone)").
infl_status infl_out_begin(infl_ctx *ctx, const char *path, int force, char *tmp, size_t tmpsize);
// Renames tmp to path (atomic on one filesystem).
infl_status infl_out_commit(infl_ctx *ctx, const char *tmp, const char *path);
// Removes tmp, ignoring errors (for failure paths).
void infl_out_abort(const char *tmp);

// The length of the file part of a data reference "FILE:/split[...]": up to its last
// ":/" (paths may hold ':'), or the whole text when it has none (core/util.c).
size_t infl_dataref_file_len(const char *ref);

#endif
