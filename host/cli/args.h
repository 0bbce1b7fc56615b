/*
 * args.h — a small long-option parser for the CLI commands: a table of options per
 * command, generated --help, clear usage errors. Reentrant (no getopt state), so
 * tests can run commands in-process one after another.
 */
#ifndef INFL_ARGS_H
#define INFL_ARGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum { ARG_FLAG, ARG_STR, ARG_INT, ARG_I64, ARG_U64, ARG_DOUBLE } arg_kind;

typedef struct {
    const char *name;     // long name without "--"
    char shortc;          // short letter or 0
    arg_kind kind;
    void *dst;            // int* for flags, const char** for strings, ...
    const char *metavar;  // "N", "FILE", NULL for flags
    const char *help;     // one line; defaults belong here
} cli_opt;

typedef struct {
    const char *cmd;       // "infl train"
    const char *synopsis;  // "--data FILE:/split --layers W,W,.. -o run.h5 [options]"
    const char *about;     // a paragraph
    const cli_opt *opts;
    int nopts;
} cli_spec;

// Parses argv[1..argc) (argv[0] is the command name). Positional arguments go into
// pos (up to maxpos, count in *npos). Returns 0 to run, 1 when --help was printed
// (to stdout), 2 on a usage error (message on stderr).
int cli_parse(const cli_spec *spec, int argc, char **argv, const char **pos, int maxpos, int *npos);
void cli_help(const cli_spec *spec, FILE *out);

#endif
