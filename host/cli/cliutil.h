/*
 * cliutil.h — what every CLI command shares: the common options (--backend,
 * --threads, --quiet, --progress), the context they open, progress on stderr,
 * Ctrl-C, and the error exits.
 */
#ifndef INFL_CLIUTIL_H
#define INFL_CLIUTIL_H

#include <stdio.h>

#include "args.h"
#include "infl.h"

typedef struct {
    const char *backend;
    int threads;
    int deterministic;  // -1: not given (the library's default)
    int quiet;
    int progress;
    int verbose;
    const char *cmd;
    double last_print;
    int printed;
    infl_ctx *ctx;  // the context open_ctx made (its notes are said as progress is)
} common;

// A command's common options before parsing: nothing given.
#define COMMON_INIT(name) {.cmd = (name), .deterministic = -1}

#define COMMON_OPTS(c)                                                                                     \
    {"backend", 0, ARG_STR, &(c).backend, "B", "auto | cpu | cuda[:N] (default: $INFL_BACKEND, else auto)"}, \
        {"threads", 0, ARG_INT, &(c).threads, "N", "CPU threads (default: all)", ">=1"},                     \
        {"deterministic", 0, ARG_INT, &(c).deterministic, "0|1",                                             \
         "1: the same bits at every --threads; 0: GEMMs on OpenBLAS's threads (default; $INFL_DETERMINISTIC)", \
         "[0,1]"},                                                                                           \
        {"quiet", 'q', ARG_FLAG, &(c).quiet, NULL, "print only results and errors"},                         \
        {"progress", 0, ARG_FLAG, &(c).progress, NULL, "show progress even when stderr is not a terminal"},   \
        {"verbose", 'v', ARG_FLAG, &(c).verbose, NULL, "say how the work was done (e.g. each layer's scoring form)"}

// Whether this process prints and writes the outputs: rank 0 of an MPI job (cli_set_comm),
// or the only process.
int cli_root(void);
// The job's processes: 1 but under mpirun.
int cli_job_size(void);
// cli_set_exe_build's text (cli.h), or NULL.
const char *cli_exe_build(void);
// Creates the context the common options ask for, with progress and Ctrl-C wired, and
// the job's communicator (cli_set_comm) with --quiet on ranks other than 0; prints the
// error and returns NULL on failure.
infl_ctx *open_ctx(common *c);
// Prints the context's notes (infl_ctx_notes: e.g. a stale temporary removed), one
// "CMD: note" line each on stderr unless --quiet, and clears them.
void say_notes(common *c, infl_ctx *ctx);
// Prints the failure of a library call (after the notes) and returns the exit code (1, or 130).
int fail(common *c, infl_ctx *ctx, infl_status st);
// Frees the context and returns 0, or fail()'s code.
int finish(common *c, infl_ctx *ctx, infl_status st);
// "784,256,128,10" into widths (INFL_MAX_LAYERS + 1 entries) and *nlayers (entries
// minus one); -1 when malformed (fewer than 2 widths, a width outside 1..2^24, too many).
int parse_widths(const char *text, int *widths, int *nlayers);
// Writes v as a CSV field: quoted (with "" for ") when it holds a separator, quote or
// newline, else as it is.
void put_csv(FILE *f, const char *v);
// Writes v as a JSON string, with its quotes and escapes; bytes that are not UTF-8
// become U+FFFD.
void put_json(FILE *f, const char *v);
// INFL_E_EXISTS (naming it) when one of the n output paths (NULL entries skipped)
// exists and !force: checked before the work, so a long run does not end refused.
infl_status refuse_existing(infl_ctx *ctx, const char *const *paths, int n, int force);
// Prints a usage error and returns 2.
int usage_error(const char *cmd, const char *msg);
// Ends the progress line when one is open.
void end_progress(common *c);
// Ctrl-C and SIGTERM set the cancel flag while a command runs.
void cli_signals_install(void);
void cli_signals_restore(void);

#define PARSE_OR_RETURN(spec, argc, argv, pos, maxpos, npos)                   \
    do {                                                                       \
        int r_ = cli_parse(&(spec), (argc), (argv), (pos), (maxpos), (npos));  \
        if (r_ == 1) return 0;                                                 \
        if (r_ == 2) return 2;                                                 \
    } while (0)

// The commands of cmd_attrib.c.
int cmd_rank(int argc, char **argv);
int cmd_self(int argc, char **argv);
int cmd_loo(int argc, char **argv);
// cmd_fit.c
int cmd_fit(int argc, char **argv);
// cmd_index.c
int cmd_index(int argc, char **argv);
// cmd_lds.c
int cmd_lds(int argc, char **argv);
int cmd_compare(int argc, char **argv);
// cmd_debug.c
int cmd_debug(int argc, char **argv);
// cmd_shapley.c
int cmd_shapley(int argc, char **argv);
// cmd_bench.c
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
