/*
 * cli.h — the infl command line: one entry point (main.c calls it; tests drive it
 * in-process) and the commands it dispatches to.
 */
#ifndef INFL_CLI_H
#define INFL_CLI_H

#include "infl.h"

// Runs `infl ARGS...` and returns the process exit code: 0 success, 1 a failure of
// the work (the message on stderr), 2 a usage error, 130 interrupted.
int infl_cli_main(int argc, char **argv);

// Several processes (mpirun; host/cli/mpi): the job's communicator, set before
// infl_cli_main (NULL, the default: one process). rank, self, fit, index and lds then run
// across the processes (the library's contexts get it); other commands refuse; only rank 0
// prints progress, notes and errors and writes outputs.
void cli_set_comm(const infl_comm *comm);
// What the executable was built with beyond the library (main.c: "MPI (Open MPI v4.1.4)"), for
// infl info; NULL (the default): nothing.
void cli_set_exe_build(const char *what);

#endif
