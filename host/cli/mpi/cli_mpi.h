/*
 * cli_mpi.h — the infl executable under mpirun (built when CMake finds MPI: INFL_MPI):
 * MPI's side of the library's communicator table (include/infl.h, infl_comm). main.c
 * calls these around the command; the CLI library itself (host/cli) never links MPI.
 */
#ifndef INFL_CLI_MPI_H
#define INFL_CLI_MPI_H

// When the process was started by mpirun (or another MPI launcher), initialises MPI and,
// for a job of two or more processes, gives the CLI its communicator (cli_set_comm); on
// every rank but 0 stdout goes to /dev/null. Returns 0, or non-zero when MPI would not
// start (it has said why). Without a launcher it does nothing.
int cli_mpi_init(int *argc, char ***argv);

// Ends the job: every process agrees on the command's exit code rc (a process that
// failed makes every process's code non-zero; one whose failure the library already
// agreed on leaves without communicating), then MPI is finalised. Returns the code
// this process exits with. Without MPI returns rc.
int cli_mpi_finish(int rc);

// "MPI (Open MPI v4.1.4, ...): mpirun -np R infl rank|self|fit|index|lds": what infl info says
// of the build (a static string).
const char *cli_mpi_describe(void);

#endif
