/*
 * cliutil.c — what every CLI command shares (see cliutil.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "cliutil.h"
#include "cli.h"
#include "core/internal.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_interrupt;
static volatile int g_cancel;
static const infl_comm *g_comm;  // the job's processes (cli_set_comm), NULL: one

void cli_set_comm(const infl_comm *comm) { g_comm = comm; }
static const char *g_exe_build;  // cli_set_exe_build
void cli_set_exe_build(const char *what) { g_exe_build = what; }
const char *cli_exe_build(void) { return g_exe_build; }
int cli_root(void) { return !g_comm || g_comm->rank == 0; }
int cli_job_size(void) { return g_comm ? g_comm->size : 1; }

// The first Ctrl-C or SIGTERM raises the cancel flag, which the library polls: the work
// stops and leaves no output. A second one ends the process at once (the default
// action), for work that does not poll; the temporary it leaves is removed by the
// next run that writes the same output (infl_out_begin).
static void on_sigint(int sig) {
    if (g_interrupt) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_interrupt = 1;
    g_cancel = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void say_notes(common *c, infl_ctx *ctx) {
    const char *notes = infl_ctx_notes(ctx);
    if (!*notes) return;
    if (!c->quiet) {
        if (c->printed) fputs("\r\033[K", stderr);  // over the progress line, which the next update redraws
        for (const char *p = notes; *p;) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(stderr, "%s: %.*s\n", c->cmd, len, p);
            p += len + (nl != NULL);
        }
    }
    infl_ctx_clear_notes(ctx);
}

static void progress_cb(void *user, const char *what, uint64_t done, uint64_t total, const char *info) {
    common *c = user;
    if (c->ctx) say_notes(c, c->ctx);
    double t = now_s();
    if (done < total && t - c->last_print < 0.2) return;
    c->last_print = t;
    if (total)
        fprintf(stderr, "\r%s %llu/%llu (%.0f%%)%s%s\033[K", what, (unsigned long long)done,
                (unsigned long long)total, 100.0 * (double)done / (double)total, info ? "  " : "", info ? info : "");
    else
        fprintf(stderr, "\r%s %llu%s%s\033[K", what, (unsigned long long)done, info ? "  " : "", info ? info : "");
    c->printed = 1;
    if (done >= total && total) {
        fputc('\n', stderr);
        c->printed = 0;
    }
    fflush(stderr);
}

// Creates the context the common options ask for; prints the error and returns NULL
// on failure.
infl_ctx *open_ctx(common *c) {
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = c->backend;
    o.threads = c->threads;
    o.deterministic = c->deterministic;
    infl_ctx *ctx = NULL;
    infl_status st = infl_ctx_create(&o, &ctx);
    if (st != INFL_OK) {
        // (every process says it: it may be this one's alone)
        const char *why = ctx ? infl_ctx_error(ctx) : infl_status_str(st);
        if (g_comm)
            fprintf(stderr, "%s: rank %d: error: %s\n", c->cmd, g_comm->rank, why);
        else
            fprintf(stderr, "%s: error: %s\n", c->cmd, why);
        infl_ctx_free(ctx);
        return NULL;
    }
    infl_ctx_set_comm(ctx, g_comm);
    if (!cli_root()) c->quiet = 1;  // rank 0 speaks for the job
    if (!c->quiet && (c->progress || isatty(2))) infl_ctx_set_progress(ctx, progress_cb, c);
    // What `auto` chose and why (e.g. no CUDA device): the library records it, the CLI
    // says it; otherwise the backend is named on a terminal unless it is the CPU asked for.
    const char *note = infl_ctx_backend_note(ctx);
    if (!c->quiet && *note)
        fprintf(stderr, "%s: %s\n", c->cmd, note);
    else if (!c->quiet && (!c->backend || strcmp(c->backend, "cpu") != 0) && isatty(2))
        fprintf(stderr, "%s: backend %s\n", c->cmd, infl_ctx_backend(ctx));
    g_cancel = 0;
    g_interrupt = 0;
    infl_ctx_set_cancel(ctx, &g_cancel);
    c->ctx = ctx;
    return ctx;
}

// Prints the failure of a library call and returns the exit code.
int fail(common *c, infl_ctx *ctx, infl_status st) {
    if (c->printed) fputc('\n', stderr);
    c->printed = 0;
    say_notes(c, ctx);
    if (!cli_root()) return st == INFL_E_INTERRUPTED ? 130 : 1;  // rank 0 says the job's error
    if (st == INFL_E_INTERRUPTED) {
        fprintf(stderr, "%s: interrupted; no output was written\n", c->cmd);
        return 130;
    }
    const char *detail = infl_ctx_error(ctx);
    fprintf(stderr, "%s: error: %s\n", c->cmd, *detail ? detail : infl_status_str(st));
    return 1;
}

int finish(common *c, infl_ctx *ctx, infl_status st) {
    if (st == INFL_OK) say_notes(c, ctx);
    int rc = st == INFL_OK ? 0 : fail(c, ctx, st);
    c->ctx = NULL;
    infl_ctx_free(ctx);
    return rc;
}

int usage_error(const char *cmd, const char *msg) {
    if (cli_root()) fprintf(stderr, "%s: %s (see %s --help)\n", cmd, msg, cmd);
    return 2;
}


void end_progress(common *c) {
    if (c->printed) fputc('\n', stderr);
    c->printed = 0;
}

static struct sigaction g_old_int, g_old_term;

void cli_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
}

void cli_signals_restore(void) {
    sigaction(SIGINT, &g_old_int, NULL);
    sigaction(SIGTERM, &g_old_term, NULL);
}

int parse_widths(const char *text, int *widths, int *nlayers) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > (1 << 24) || n > INFL_MAX_LAYERS) return -1;
        widths[n++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    if (n < 2) return -1;
    *nlayers = n - 1;
    return 0;
}

// The length of the valid UTF-8 character at p (1 to 4), or 0 when it is not one.
static int utf8_len(const unsigned char *p) {
    int n = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3 : (p[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 2 && p[0] < 0xC2) return 0;  // overlong
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0))) return 0;  // overlong, surrogate
    if (n == 4 && ((p[0] == 0xF0 && p[1] < 0x90) || p[0] > 0xF4 || (p[0] == 0xF4 && p[1] >= 0x90))) return 0;
    return n;
}

void put_json(FILE *f, const char *v) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)v; *p;) {
        int n = utf8_len(p);
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else if (n == 0) fputs("\\ufffd", f);  // not UTF-8 (a token may end inside a character)
        else fwrite(p, 1, (size_t)n, f);
        p += n ? n : 1;
    }
    fputc('"', f);
}

// A CSV field: quoted (with "" for ") when it holds a separator, quote or newline.
void put_csv(FILE *f, const char *v) {
    if (!strpbrk(v, ",\"\n\r")) {
        fputs(v, f);
        return;
    }
    fputc('"', f);
    for (const char *p = v; *p; p++) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

infl_status refuse_existing(infl_ctx *ctx, const char *const *paths, int n, int force) {
    for (int i = 0; i < n; i++) {
        char tmp[4200];
        if (paths[i]) FORWARD_IF_ERROR(infl_out_begin(ctx, paths[i], force, tmp, sizeof tmp));
    }
    return INFL_OK;
}
