/*
 * args.h — a small long-option parser for the CLI commands: a table of options per
 * command, generated --help, clear usage errors. Reentrant (no getopt state), so
 * tests can run commands in-process one after another.
 */
#ifndef INFL_ARGS_H
#define INFL_ARGS_H

#include <stdint.h>
#include <stdio.h>

// Option tables give `range` only where it applies (the rest are zero, i.e. NULL, by the
// language's rule for a shorter initialiser): keep -Wextra from asking for the NULLs in the
// CLI's files, which are the ones that include this header.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef enum { ARG_FLAG, ARG_STR, ARG_INT, ARG_I64, ARG_U64, ARG_DOUBLE } arg_kind;

typedef struct {
    const char *name;     // long name without "--"
    char shortc;          // short letter or 0
    arg_kind kind;
    void *dst;            // int* for flags, const char** for strings, ...
    const char *metavar;  // "N", "FILE", NULL for flags
    const char *help;     // one line; defaults belong here
    const char *range;    // numbers only, optional: the values that mean something, checked by
                          // the parser (a usage error, exit 2, names the option and the range):
                          // ">=1", ">0", "[0,1]", "(0,1]", "[0,1)" ...; NULL: any
} cli_opt;

typedef struct {
    const char *cmd;       // "infl train"
    const char *synopsis;  // "--data FILE:/split --layers W,W,.. -o run.h5 [options]"
    const char *about;     // a paragraph
    const cli_opt *opts;
    int nopts;
} cli_spec;

// Whether x lies in `range` (cli_opt.range; NULL: any); writes the range as words
// ("a whole number >= 1", "a number in (0, 1]") into what when what != NULL. -1 when
// the range itself is malformed (a bug in an option table).
int cli_in_range(const char *range, int whole, double x, char *what, size_t size);

// Parses argv[1..argc) (argv[0] is the command name). Positional arguments go into
// pos (up to maxpos, count in *npos). Returns 0 to run, 1 when --help was printed
// (to stdout), 2 on a usage error (message on stderr).
int cli_parse(const cli_spec *spec, int argc, char **argv, const char **pos, int maxpos, int *npos);
void cli_help(const cli_spec *spec, FILE *out);

#endif
