/*
 * backend.c — the context and its backend (backend.h): backend selection
 * (--backend auto|cpu|cuda[:N] and INFL_BACKEND), the thin wrappers over the table's
 * memory slots, progress and cancel hooks, build information. It sits on the
 * backend floor, above core/ (which knows no backend).
 */
#include <hdf5.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "build_config.h"
#include "core/internal.h"

infl_ctx_options infl_ctx_options_default(void) {
    infl_ctx_options o = {.backend = NULL, .threads = 0, .deterministic = -1};
    return o;
}

static infl_status try_backend(infl_ctx *ctx, const infl_backend *be, const char *spec, int threads) {
    void *bc = NULL;
    infl_status st = be->init(ctx, spec, threads, &bc, ctx->backend_desc, sizeof ctx->backend_desc);
    if (st != INFL_OK) return st;
    ctx->be = be;
    ctx->be_ctx = bc;
    return INFL_OK;
}

infl_status infl_ctx_create(const infl_ctx_options *opts, infl_ctx **out) {
    infl_ctx_options o = opts ? *opts : infl_ctx_options_default();
    *out = NULL;
    infl_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return INFL_E_NOMEM;
    *out = ctx;
    const char *det = getenv("INFL_DETERMINISTIC");
    if (o.deterministic < 0 && det && *det) {
        RETURN_IF(ctx, strcmp(det, "0") != 0 && strcmp(det, "1") != 0, INFL_E_ARG,
                  "INFL_DETERMINISTIC=%s: expected 0 or 1", det);
        o.deterministic = det[0] == '1';
    }
    ctx->deterministic = o.deterministic > 0;  // -1 (not asked): off (it costs up to 1.6x: README)
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);  // we translate HDF5 errors ourselves

    const char *want = o.backend;
    if (!want || !*want) want = getenv("INFL_BACKEND");
    if (!want || !*want) want = "auto";
    char name[64];
    const char *colon = strchr(want, ':');
    size_t nlen = colon ? (size_t)(colon - want) : strlen(want);
    RETURN_IF(ctx, nlen >= sizeof name, INFL_E_ARG, "backend '%s': expected auto, cpu or cuda[:N]", want);
    memcpy(name, want, nlen);
    name[nlen] = 0;
    const char *spec = colon ? colon + 1 : "";

    if (strcmp(name, "cpu") == 0) return try_backend(ctx, &infl_cpu_backend, spec, o.threads);
    if (strcmp(name, "cuda") == 0) {
#ifdef INFL_HAVE_CUDA
        return try_backend(ctx, &infl_cuda_backend, spec, o.threads);
#else
        return infl_seterr(ctx, INFL_E_BACKEND,
                           "backend cuda: this build of infl has no CUDA backend; use --backend cpu or auto");
#endif
    }
    if (strcmp(name, "auto") == 0) {
#ifdef INFL_HAVE_CUDA
        if (try_backend(ctx, &infl_cuda_backend, spec, o.threads) == INFL_OK) {
            snprintf(ctx->backend_note, sizeof ctx->backend_note, "backend auto: using %s", ctx->backend_desc);
            return INFL_OK;
        }
        // A failing CUDA init counts as no device: one line says why in brief (the
        // detail's words before its first ':', "no usable CUDA device (driver older than
        // the runtime)"), not as an error; `--backend cuda` shows the whole detail.
        int len = (int)strcspn(ctx->detail, ":");
        snprintf(ctx->backend_note, sizeof ctx->backend_note, "%.*s; using the CPU", len > 300 ? 300 : len,
                 ctx->detail);
        ctx->detail[0] = 0;
#endif
        return try_backend(ctx, &infl_cpu_backend, "", o.threads);
    }
    return infl_seterr(ctx, INFL_E_ARG, "backend '%s': expected auto, cpu or cuda[:N]", want);
}

void infl_ctx_free(infl_ctx *ctx) {
    if (!ctx) return;
    if (ctx->be && ctx->be->shutdown) ctx->be->shutdown(ctx->be_ctx);
    free(ctx);
}

const char *infl_ctx_error(const infl_ctx *ctx) { return ctx ? ctx->detail : ""; }

const char *infl_ctx_backend(const infl_ctx *ctx) {
    return ctx && ctx->be ? ctx->backend_desc : "none";
}

const char *infl_ctx_backend_note(const infl_ctx *ctx) { return ctx ? ctx->backend_note : ""; }

void infl_ctx_set_progress(infl_ctx *ctx, infl_progress_fn fn, void *user) {
    ctx->progress = fn;
    ctx->progress_user = user;
}

void infl_ctx_set_cancel(infl_ctx *ctx, const volatile int *flag) { ctx->cancel = flag; }

infl_status infl_be_alloc_f(infl_ctx *ctx, float **p, size_t n, const char *what) {
    void *v = NULL;
    infl_status st = ctx->be->alloc(ctx, n * sizeof(float), &v);
    if (st != INFL_OK) {
        infl_errprefix(ctx, "%s (%zu floats)", what, n);
        return st;
    }
    *p = v;
    return INFL_OK;
}

void infl_be_free(infl_ctx *ctx, void *p) {
    if (p) ctx->be->release(ctx, p);
}

infl_status infl_be_alloc_hint(infl_ctx *ctx, void **p, size_t bytes, const char *what, const char *hint) {
    infl_status st = ctx->be->alloc(ctx, bytes, p);
    if (st == INFL_OK) return INFL_OK;
    *p = NULL;
    infl_errprefix(ctx, "%s (%.1f MiB)", what, (double)bytes / 1048576.0);
    if (st == INFL_E_NOMEM && hint && *hint) {
        size_t len = strlen(ctx->detail);
        snprintf(ctx->detail + len, sizeof ctx->detail - len, "; to fit: %s", hint);
    }
    return st;
}

infl_status infl_be_host_alloc(infl_ctx *ctx, size_t bytes, void **p, const char *what) {
    *p = NULL;
    if (ctx->be->host_alloc) {
        infl_status st = ctx->be->host_alloc(ctx, bytes, p);
        if (st != INFL_OK) infl_errprefix(ctx, "%s (%zu bytes of host memory)", what, bytes);
        return st;
    }
    size_t rounded = (bytes + 63) & ~(size_t)63;
    *p = aligned_alloc(64, rounded ? rounded : 64);
    RETURN_IF(ctx, !*p, INFL_E_NOMEM, "out of memory allocating %s (%zu bytes)", what, bytes);
    return INFL_OK;
}

void infl_be_host_free(infl_ctx *ctx, void *p) {
    if (!p) return;
    if (ctx->be->host_free)
        ctx->be->host_free(ctx, p);
    else
        free(p);
}

void *infl_be_host_alloc_hook(size_t bytes, void *user) {
    void *p = NULL;
    return infl_be_host_alloc((infl_ctx *)user, bytes, &p, "a shard buffer") == INFL_OK ? p : NULL;
}

void infl_be_host_free_hook(void *p, void *user) { infl_be_host_free((infl_ctx *)user, p); }

infl_status infl_be_upload_async(infl_ctx *ctx, void *dst, const void *host_src, size_t bytes, int slot) {
    RETURN_IF(ctx, slot < 0 || slot >= INFL_UPLOAD_SLOTS, INFL_E_ARG, "upload_async: slot %d is not in 0..%d", slot,
              INFL_UPLOAD_SLOTS - 1);
    if (ctx->be->upload_async) return ctx->be->upload_async(ctx, dst, host_src, bytes, slot);
    return ctx->be->upload(ctx, dst, host_src, bytes);
}

infl_status infl_be_wait_upload(infl_ctx *ctx, int slot) {
    RETURN_IF(ctx, slot < 0 || slot >= INFL_UPLOAD_SLOTS, INFL_E_ARG, "wait_upload: slot %d is not in 0..%d", slot,
              INFL_UPLOAD_SLOTS - 1);
    return ctx->be->wait_upload ? ctx->be->wait_upload(ctx, slot) : INFL_OK;
}

// OpenBLAS's OpenMP build takes omp_get_max_threads() threads outside parallel regions
// (its pthreads build was set to one thread by the CPU backend in deterministic mode).
int infl_blas_serial_begin(infl_ctx *ctx) {
    if (!ctx->deterministic) return 0;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    return saved;
}

void infl_blas_serial_end(infl_ctx *ctx, int saved) {
    (void)ctx;
    if (saved > 0) omp_set_num_threads(saved);
}

const char *infl_build_info(void) {
    static const char info[] =
        "infl " INFL_VERSION_STRING " (" INFL_BUILD_TYPE ")\n"
        "compiler   " INFL_BUILD_COMPILER "\n"
        "HDF5       " INFL_BUILD_HDF5 "\n"
        "BLAS       OpenBLAS " INFL_BUILD_OPENBLAS " + LAPACKE\n"
        "OpenMP     " INFL_BUILD_OPENMP "\n"
#if INFL_SANITIZE
        "sanitizers ASan+UBSan\n"
#else
        "sanitizers off\n"
#endif
#ifdef INFL_HAVE_CUDA
        "backends   cpu cuda\n"
#else
        "backends   cpu (this build has no CUDA backend)\n"
#endif
        "schema     version " INFL_STR(INFL_FORMAT_VERSION) "\n";
    return info;
}
