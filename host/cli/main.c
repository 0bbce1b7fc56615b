/*
 * main.c — the infl executable: everything is in infl_cli_main (cli.c), which the
 * tests also drive in-process.
 *
 * One thing only main does: libgomp reads OMP_WAIT_POLICY once, when it loads, and by
 * default its idle workers spin. Between the GEMMs of a training step the spinning
 * workers take the cores the serial work needs (measured on a 2-core machine: 8.5k
 * examples/s spinning, 74k passive). So when the user has not chosen a policy, main
 * sets it to passive and re-executes itself; if that fails it simply goes on.
 * Built with MPI, it also joins the job when mpirun started it (host/cli/mpi/cli_mpi.h).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#ifdef INFL_HAVE_MPI
#include "mpi/cli_mpi.h"
#endif

int main(int argc, char **argv) {
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
#ifdef INFL_HAVE_MPI
    // under mpirun: the job's processes (host/cli/mpi), after the re-execution above
    if (cli_mpi_init(&argc, &argv) != 0) return 1;
    cli_set_exe_build(cli_mpi_describe());
    return cli_mpi_finish(infl_cli_main(argc, argv));
#else
    return infl_cli_main(argc, argv);
#endif
}
