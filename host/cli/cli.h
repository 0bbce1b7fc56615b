/*
 * cli.h — the infl command line: one entry point (main.c calls it; tests drive it
 * in-process) and the commands it dispatches to.
 */
#ifndef INFL_CLI_H
#define INFL_CLI_H

// Runs `infl ARGS...` and returns the process exit code: 0 success, 1 a failure of
// the work (the message on stderr), 2 a usage error, 130 interrupted.
int infl_cli_main(int argc, char **argv);

#endif
