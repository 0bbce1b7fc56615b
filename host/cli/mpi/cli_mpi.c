/*
 * cli_mpi.c — MPI's side of the library's communicator table (include/infl.h,
 * infl_comm) for `mpirun -np R infl rank|self|fit|index|lds ...` (cli_mpi.h). Built into
 * the infl executable only, when CMake finds MPI; the library and the CLI library stay
 * MPI-free. Every call is on MPI_COMM_WORLD, from the thread that called MPI_Init.
 *
 * The status agreement: the lowest failing rank (an MPI_MIN reduction of rank or size),
 * then its status and detail broadcast from it; a failed agreement is remembered, so
 * later ones (the library's and cli_mpi_finish's) return it without communicating and
 * every process leaves by the same path. Messages larger than MPI's int counts go in
 * pieces.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli_mpi.h"

#include <fcntl.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "infl.h"

// The largest piece of one MPI call, in bytes (well within int counts).
#define PIECE ((size_t)1 << 30)
#define TAG_GATHER 7
#define DETAIL 2048

typedef struct {
    int failed;           // an agreement has failed: later ones return it at once
    int status;           // its status
    char detail[DETAIL];  // and its detail, as this process gave it out
} agreement;

static agreement g_agree;
static infl_comm g_comm;
static int g_started;

static int mpi_agree(void *user, int *status, char *detail, size_t size) {
    agreement *a = user;
    if (!a->failed) {
        int rank = g_comm.rank, first, mine = *status < 0 ? rank : g_comm.size;
        if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
        if (first == g_comm.size) {
            *status = 0;
            return 0;
        }
        // the failing process's status and detail to every process
        struct {
            int status;
            char detail[DETAIL];
        } msg;
        memset(&msg, 0, sizeof msg);
        if (rank == first) {
            msg.status = *status;
            snprintf(msg.detail, sizeof msg.detail, "%s", detail);
        }
        if (MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, first, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
        a->failed = 1;
        a->status = msg.status;
        if (rank == first)
            snprintf(a->detail, sizeof a->detail, "%s", msg.detail);
        else
            snprintf(a->detail, sizeof a->detail, "rank %d: %.2030s", first, msg.detail);
    }
    *status = a->status;
    if (detail && size) snprintf(detail, size, "%s", a->detail);
    return 0;
}

static int mpi_sum_f64(void *user, double *buf, size_t n) {
    (void)user;
    for (size_t at = 0; at < n;) {
        size_t m = n - at < PIECE / sizeof(double) ? n - at : PIECE / sizeof(double);
        if (MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)m, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
        at += m;
    }
    return 0;
}

static int mpi_sum_i64(void *user, int64_t *buf, size_t n) {
    (void)user;
    for (size_t at = 0; at < n;) {
        size_t m = n - at < PIECE / sizeof(int64_t) ? n - at : PIECE / sizeof(int64_t);
        if (MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)m, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return 1;
        at += m;
    }
    return 0;
}

static int mpi_bcast(void *user, void *buf, size_t bytes, int root) {
    (void)user;
    for (size_t at = 0; at < bytes;) {
        size_t m = bytes - at < PIECE ? bytes - at : PIECE;
        if (MPI_Bcast((char *)buf + at, (int)m, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
        at += m;
    }
    return 0;
}

// Point to point, in pieces.
static int send_all(const void *buf, size_t bytes, int to) {
    for (size_t at = 0; at < bytes;) {
        size_t m = bytes - at < PIECE ? bytes - at : PIECE;
        if (MPI_Send((const char *)buf + at, (int)m, MPI_BYTE, to, TAG_GATHER, MPI_COMM_WORLD) != MPI_SUCCESS)
            return 1;
        at += m;
    }
    return 0;
}

static int recv_all(void *buf, size_t bytes, int from) {
    for (size_t at = 0; at < bytes;) {
        size_t m = bytes - at < PIECE ? bytes - at : PIECE;
        if (MPI_Recv((char *)buf + at, (int)m, MPI_BYTE, from, TAG_GATHER, MPI_COMM_WORLD, MPI_STATUS_IGNORE) !=
            MPI_SUCCESS)
            return 1;
        at += m;
    }
    return 0;
}

// Root receives one process's block at a time into one buffer: its memory is one block,
// whatever the number of processes.
static int mpi_gather(void *user, const void *buf, size_t bytes, int root, infl_comm_take_fn take, void *arg) {
    (void)user;
    if (g_comm.rank != root) return send_all(buf, bytes, root);
    char *tmp = malloc(bytes ? bytes : 1);
    if (!tmp) {
        // the others are sending: nothing to receive them into
        fprintf(stderr, "infl: rank %d: out of memory for a gather of %zu bytes\n", root, bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int ret = 0;
    for (int from = 0; from < g_comm.size; from++) {
        const void *blk = buf;
        if (from != root) {
            if (recv_all(tmp, bytes, from) != 0) {
                free(tmp);
                return 1;
            }
            blk = tmp;
        }
        if (ret == 0) ret = take(arg, from, blk);
    }
    free(tmp);
    return ret;
}

// Started by an MPI launcher: OpenMPI's mpirun, or a PMI one (MPICH's Hydra, Slurm's srun).
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int cli_mpi_init(int *argc, char ***argv) {
    if (!launched()) return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "infl: MPI_Init failed\n");
        return 1;
    }
    g_started = 1;
    g_comm = (infl_comm){.user = &g_agree,
                         .agree = mpi_agree,
                         .sum_f64 = mpi_sum_f64,
                         .sum_i64 = mpi_sum_i64,
                         .bcast = mpi_bcast,
                         .gather = mpi_gather};
    MPI_Comm_rank(MPI_COMM_WORLD, &g_comm.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_comm.size);
    if (g_comm.size < 2) return 0;
    cli_set_comm(&g_comm);
    if (g_comm.rank != 0) {
        // only rank 0 prints results
        fflush(stdout);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
    }
    return 0;
}

int cli_mpi_finish(int rc) {
    if (!g_started) return rc;
    if (g_comm.size > 1) {
        int st = rc == 0 ? 0 : rc == 130 ? INFL_E_INTERRUPTED : INFL_E_ARG;
        char detail[DETAIL];
        snprintf(detail, sizeof detail, "the command stopped with exit code %d", rc);
        if (mpi_agree(&g_agree, &st, detail, sizeof detail) == 0 && st < 0 && rc == 0) rc = st == INFL_E_INTERRUPTED ? 130 : 1;
    }
    fflush(stdout);
    fflush(stderr);
    MPI_Finalize();
    return rc;
}

const char *cli_mpi_describe(void) {
    static char buf[320];
    if (buf[0]) return buf;
    char ver[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(ver, &len);  // callable before MPI_Init
    ver[strcspn(ver, ",\n")] = '\0';     // "Open MPI v4.1.4"
    snprintf(buf, sizeof buf, "MPI (%s): mpirun -np R infl rank|self|fit|index|lds", ver[0] ? ver : "?");
    return buf;
}
