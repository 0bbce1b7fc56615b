/*
 * test_mpi.c — `mpirun -np R infl rank|self|fit|index|lds` against the single process
 * (host/cli/mpi, core/comm.h): the built infl runs under mpiexec on tiny data, 2 and 3
 * processes (an uneven split), and every dataset of its output equals the single
 * process's (integers exactly, floats to 1e-6 relative); bad input: more processes than
 * rows, a row only rank 1 reads that is NaN (rank 1 fails at its second shard), an output
 * rank 0 refuses, a command that runs in one process only — every process exits non-zero,
 * rank 0 says the error, and nothing is left under the output's name.
 * A capture (models/captured.c) splits the same way (rank, fit).
 * Skips when the build has no MPI (INFL_MPI) or mpiexec cannot run.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testutil.h"

#ifndef INFL_BIN
#define INFL_BIN "infl"
#endif

// ---- running infl ----

// Runs `infl ARGS` in the test's folder (np = 0: one process, else under mpiexec with np
// processes), stdout and stderr into log; returns the exit code.
static int job(int np, const char *args, const char *log) {
#ifdef INFL_HAVE_MPI
    char cmd[4096];
    char pre[1200] = "";
    if (np > 0) snprintf(pre, sizeof pre, "%s --oversubscribe -np %d ", INFL_MPIEXEC, np);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s'%s' %s --threads 1 > '%s' 2>&1", tu_tmpdir(), pre, INFL_BIN, args,
             tu_path(log));
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
#else
    (void)np;
    (void)args;
    (void)log;
    return 128;
#endif
}

static void setup(void) {
#ifndef INFL_HAVE_MPI
    cr_skip_test("this build has no MPI (INFL_MPI; apt-get install libopenmpi-dev openmpi-bin)");
#else
    // OpenMPI refuses root without these; one thread a process (the machine may have 2 cores)
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);  // containers without ptrace
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OMP_WAIT_POLICY", "passive", 1);
    // ASan builds: MPI's own allocations at MPI_Init live until exit (not ours); whole stacks
    // (slow unwinding) name the MPI libraries the suppressions match, past its plugins'
    // frames, whose modules are unloaded before LeakSanitizer looks
    setenv("LSAN_OPTIONS", "suppressions=" INFL_SOURCE_DIR "/tests/mpi_lsan.supp:print_suppressions=0", 1);
    const char *ao = getenv("ASAN_OPTIONS");
    char asan[1024];
    snprintf(asan, sizeof asan, "%s%sfast_unwind_on_malloc=0", ao ? ao : "", ao && *ao ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    if (job(2, "--version", "probe.log") != 0) {
        char *log = tu_read_file(tu_path("probe.log"), NULL);
        cr_skip_test("mpiexec cannot start 2 processes here: %s", log ? log : "");
    }
#endif
}

// ---- comparing outputs ----

typedef struct {
    hid_t b;
    double rtol;
    int datasets;
    char bad[512];
} cmp_state;

// Dataset `name` of a against b's: the same shape and values (floats to rtol relative to
// the largest magnitude of the dataset, integers exactly); strings are not compared.
static herr_t cmp_one(hid_t a, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    cmp_state *c = op;
    H5O_type_t type = H5O_TYPE_UNKNOWN;
    hid_t obj = H5Oopen(a, name, H5P_DEFAULT);
    if (obj >= 0) type = H5Iget_type(obj) == H5I_DATASET ? H5O_TYPE_DATASET : H5O_TYPE_GROUP;
    H5Oclose(obj);
    if (type != H5O_TYPE_DATASET || c->bad[0]) return 0;
    hid_t da = H5Dopen2(a, name, H5P_DEFAULT), db = H5Dopen2(c->b, name, H5P_DEFAULT);
    if (db < 0) {
        snprintf(c->bad, sizeof c->bad, "%s: missing", name);
        H5Dclose(da);
        return 0;
    }
    hid_t ta = H5Dget_type(da), sa = H5Dget_space(da), sb = H5Dget_space(db);
    H5T_class_t cls = H5Tget_class(ta);
    hssize_t n = H5Sget_simple_extent_npoints(sa);
    if (n != H5Sget_simple_extent_npoints(sb)) snprintf(c->bad, sizeof c->bad, "%s: shapes differ", name);
    if (!c->bad[0] && (cls == H5T_INTEGER || cls == H5T_FLOAT) && n > 0) {
        double *x = malloc((size_t)n * sizeof(double)), *y = malloc((size_t)n * sizeof(double));
        H5Dread(da, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
        H5Dread(db, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
        double big = 0;
        for (hssize_t i = 0; i < n; i++) big = fmax(big, fabs(x[i]));
        for (hssize_t i = 0; i < n && !c->bad[0]; i++) {
            double tol = cls == H5T_INTEGER ? 0 : c->rtol * fmax(fabs(x[i]), 1e-3 * big);
            if (!(fabs(x[i] - y[i]) <= tol))
                snprintf(c->bad, sizeof c->bad, "%s[%lld]: %.9g vs %.9g", name, (long long)i, x[i], y[i]);
        }
        free(x);
        free(y);
    }
    c->datasets++;
    H5Sclose(sa);
    H5Sclose(sb);
    H5Tclose(ta);
    H5Dclose(da);
    H5Dclose(db);
    return 0;
}

// Asserts that every dataset of file a (in the test's folder) equals b's.
static void same_h5(const char *a, const char *b, double rtol) {
    hid_t fa = H5Fopen(tu_path(a), H5F_ACC_RDONLY, H5P_DEFAULT), fb = H5Fopen(tu_path(b), H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(fa >= 0 && fb >= 0, "cannot open %s or %s", a, b);
    cmp_state c = {.b = fb, .rtol = rtol};
    H5Lvisit(fa, H5_INDEX_NAME, H5_ITER_INC, cmp_one, &c);
    H5Fclose(fa);
    H5Fclose(fb);
    cr_assert(c.datasets > 0, "%s holds no datasets", a);
    cr_assert(!c.bad[0], "%s vs %s: %s", a, b, c.bad);
}

// ---- the data: 61 rows (3 processes: 20, 20, 21), a 2-layer MLP with 3 checkpoints ----

static void tweak(infl_train_options *o, void *u) {
    (void)u;
    o->epochs = 3;
    o->batch = 16;
    o->checkpoint_every = 4;
}

static void make_run(void) {
    tu_make_blobs(tu_path("d.h5"), 61, 6, 3, 11);
    const int w[] = {6, 8, 3};
    tu_train_mlp(tu_path("d.h5"), tu_path("run.h5"), 2, w, tweak, NULL);
}

// Runs args on one process into out1 and on np = 2 and 3 into out2 / out3 (args holds
// "%s" where the output's name goes) and compares.
static void across(const char *args, const char *out) {
    char a[1024], o[64];
    snprintf(a, sizeof a, args, out);
    cr_assert_eq(job(0, a, "one.log"), 0, "one process: %s", tu_read_file(tu_path("one.log"), NULL));
#ifdef __SANITIZE_ADDRESS__
    // under ASan (whole stacks at every allocation, for the MPI suppressions) a job costs
    // seconds: the uneven split only, which covers what 2 processes would
    for (int np = 3; np <= 3; np++) {
#else
    for (int np = 2; np <= 3; np++) {
#endif
        snprintf(o, sizeof o, "np%d-%s", np, out);
        snprintf(a, sizeof a, args, o);
        char log[32];
        snprintf(log, sizeof log, "np%d.log", np);
        cr_assert_eq(job(np, a, log), 0, "-np %d: %s", np, tu_read_file(tu_path(log), NULL));
        same_h5(out, o, 1e-6);
    }
}

TestSuite(mpi, .init = setup, .timeout = 120);

Test(mpi, rank_tracin_and_scores) {
    make_run();
    across("rank --run run.h5 --query d.h5:/test[0:5] --top 4 --shard 8 --save-scores -o %s", "tracin.h5");
    // within a range of rows: the processes split rows [5, 58), indices stay rows of the split
    across("rank --run run.h5 --train d.h5:/train[5:58] --query d.h5:/test[0:5] --top 4 --shard 8 -o %s",
           "range.h5");
    hid_t f = H5Fopen(tu_path("np3-range.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/topk/index", H5P_DEFAULT);
    int64_t idx[20];
    cr_assert(H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, idx) >= 0);
    int64_t lo = idx[0], hi = idx[0];
    for (int i = 0; i < 20; i++) lo = idx[i] < lo ? idx[i] : lo, hi = idx[i] > hi ? idx[i] : hi;
    cr_assert(lo >= 5 && hi < 58 && hi >= 40, "top-k rows %lld..%lld: expected rows of [5, 58), some of rank 2's",
              (long long)lo, (long long)hi);
    H5Dclose(d);
    H5Fclose(f);
}

Test(mpi, rank_ekfac) {
    make_run();
    cr_assert_eq(job(0, "fit --run run.h5 -o f.h5", "fit.log"), 0, "%s", tu_read_file(tu_path("fit.log"), NULL));
    across("rank --run run.h5 --method ekfac --factors f.h5 --query d.h5:/test[0:5] --top 4 --shard 8 -o %s",
           "ekfac.h5");
}

// A PyTorch model's capture (here: the run recorded through the seam, tu_capture_run): each
// process reads its own examples' rows of the captured file.
Test(mpi, captured) {
    make_run();
    char run[4096], data[4096];
    snprintf(run, sizeof run, "%s", tu_path("run.h5"));
    snprintf(data, sizeof data, "%s", tu_path("d.h5"));
    tu_capture_run(run, data, tu_path("cap.h5"), TU_CAP_OK);
    across("rank --run cap.h5 --query cap.h5:/test[0:5] --top 4 --shard 8 -o %s", "cap-tracin.h5");
    across("fit --run cap.h5 --fisher empirical --shard 7 -o %s", "cap-factors.h5");
}

Test(mpi, fit) {
    make_run();
    // shards of 7 rows: 9 shards, uneven over 2 and 3 processes
    across("fit --run run.h5 --shard 7 -o %s", "factors.h5");
}

Test(mpi, self) {
    make_run();
    across("self --run run.h5 --shard 8 -o %s", "self.h5");
}

Test(mpi, index) {
    make_run();
    across("index --run run.h5 --dim 16 --shard 8 -o %s", "index.h5");
}

Test(mpi, lds) {
    make_run();
    // 5 models over 2 and 3 processes, the trainer's options recorded in the run
    across("lds --run run.h5 --query d.h5:/test[0:4] --models 5 --state %s", "lds.h5");
}

// ---- bad input ----

// The last failed job's log holds `what`, said once (by rank 0), and neither the output
// `out` nor a temporary of it (out.tmp.PID) is left.
static void failed_cleanly(const char *log, const char *what, const char *out) {
    char *l = tu_read_file(tu_path(log), NULL);
    cr_assert(l && strstr(l, what), "expected '%s' in: %s", what, l ? l : "");
    cr_assert(!strstr(strstr(l, what) + 1, what), "the error is said once (by rank 0): %s", l);
    free(l);
    if (!out) return;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q -e '^%s$' -e '^%s\\.tmp\\.'", tu_tmpdir(), out, out);
    cr_assert_neq(system(cmd), 0, "%s or a temporary of it is left", out);
}

Test(mpi, more_processes_than_rows) {
    make_run();
    cr_assert_eq(job(3, "self --run run.h5 --train d.h5:/train[0:2] -o x.h5", "bad.log"), 1);
    failed_cleanly("bad.log", "2 rows cannot be split across 3 processes", "x.h5");
}

// Row 45's first feature NaN: with 2 processes and shards of 8 rows, rank 1 streams rows
// [30, 61) and meets it in its second shard ([38, 46); fit's whole shards: [40, 48)).
static void poison_row_45(void) {
    hid_t f = H5Fopen(tu_path("d.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/train/x", H5P_DEFAULT), s = H5Dget_space(d);
    hsize_t at[2] = {45, 0}, one[2] = {1, 1};
    H5Sselect_hyperslab(s, H5S_SELECT_SET, at, NULL, one, NULL);
    hid_t m = H5Screate_simple(2, one, NULL);
    float nan = NAN;
    cr_assert(H5Dwrite(d, H5T_NATIVE_FLOAT, m, s, H5P_DEFAULT, &nan) >= 0);
    H5Sclose(m);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(f);
}

Test(mpi, one_rank_fails_midway) {
    make_run();
    poison_row_45();
    // (the run names its data by its full path)
    const char *what = "error: rank 1: /";
    cr_assert_eq(job(2, "rank --run run.h5 --query d.h5:/test[0:3] --shard 8 --save-scores -o s.h5", "r.log"), 1);
    failed_cleanly("r.log", what, "s.h5");
    failed_cleanly("r.log", "d.h5: /train/x row 45 column 0: NaN", NULL);
    cr_assert_eq(job(2, "fit --run run.h5 --shard 8 -o f.h5", "f.log"), 1);
    failed_cleanly("f.log", what, "f.h5");
    failed_cleanly("f.log", "d.h5: /train/x row 45 column 0: NaN", NULL);
    cr_assert_eq(job(2, "index --run run.h5 --dim 8 --shard 8 -o i.h5", "i.log"), 1);
    failed_cleanly("i.log", what, "i.h5");  // (i.h5.partial is kept to resume from)
    failed_cleanly("i.log", "d.h5: /train/x row 45 column 0: NaN", NULL);
}

Test(mpi, rank0_refuses_its_output) {
    make_run();
    tu_write_file(tu_path("taken.h5"), "x", 1);
    // rank 0 stops before the work; the others stop at their first agreement
    cr_assert_eq(job(3, "self --run run.h5 -o taken.h5", "t.log"), 1);
    failed_cleanly("t.log", "taken.h5: exists", NULL);
    size_t n = 0;
    char *kept = tu_read_file(tu_path("taken.h5"), &n);
    cr_assert(kept && n == 1 && kept[0] == 'x', "taken.h5 was overwritten");
    free(kept);
}

Test(mpi, one_process_commands_refuse) {
    make_run();
    cr_assert_eq(job(2, "train --data d.h5:/train --layers 6,3 -o r2.h5", "t.log"), 2);
    failed_cleanly("t.log", "infl train: runs in one process", "r2.h5");
}
