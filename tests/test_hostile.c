/*
 * test_hostile.c — files infl did not write, or wrote and someone damaged, and runs
 * killed mid-write (issue #15). Every hostile file is built here with the HDF5 API
 * (no binary blobs): link cycles for `infl info`, sizes claimed far beyond what a
 * file stores (a factors file's widths, a /classes string size), a flipped byte in
 * the checksummed metadata of an infl-written file; and trainings killed by SIGKILL
 * at seeded random points, whose temporaries the next run removes.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "store/store.h"
#include "testutil.h"

static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
TestSuite(hostile, .init = silence_hdf5, .timeout = 120);

#define ASSERT_OK(ctx, expr)                                                          \
    do {                                                                              \
        infl_status s_ = (expr);                                                      \
        cr_assert_eq(s_, INFL_OK, "%s: %s", #expr, infl_ctx_error(ctx));              \
    } while (0)
// Fails unless expr returns st with a detail containing `part`.
#define ASSERT_ERR(ctx, expr, st, part)                                                                        \
    do {                                                                                                       \
        infl_status s_ = (expr);                                                                               \
        cr_assert_eq(s_, (st), "%s returned %s (%s); expected %s", #expr, infl_status_name(s_),                \
                     infl_ctx_error(ctx), infl_status_name(st));                                               \
        cr_assert(strstr(infl_ctx_error(ctx), (part)) != NULL, "%s: detail '%s' lacks '%s'", #expr,            \
                  infl_ctx_error(ctx), (part));                                                                \
    } while (0)

#if !defined(__SANITIZE_ADDRESS__)
// The bytes this process maps now (from /proc/self/statm).
static size_t vm_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

// Caps this test process's address space at what it maps now plus 1 GiB, so that an
// allocation by a size a file claims (gigabytes) fails instead of passing on overcommit:
// a reader that allocates before it checks then fails with INFL_E_NOMEM, not the format
// error the tests expect. (Not under AddressSanitizer, which reserves terabytes.)
static void cap_memory(void) {
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit r;
    r.rlim_cur = r.rlim_max = vm_bytes() + ((size_t)1 << 30);
    cr_assert(setrlimit(RLIMIT_AS, &r) == 0);
#endif
}

// ---- info: link cycles ----

// A plain file whose links make cycles: soft links back to / and to a parent, a hard
// link to a parent group (a cycle in the graph itself), an external link.
static void cyclic_file(const char *path) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t a = H5Gcreate2(f, "a", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t b = H5Gcreate2(a, "b", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && b >= 0);
    hsize_t n = 4;
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(b, "v", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int32_t v[4] = {1, 2, 3, 4};
    cr_assert(d >= 0 && H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    H5Sclose(s);
    // three soft links to the root: before the fix, each level of the walk multiplied
    cr_assert(H5Lcreate_soft("/", f, "up0", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    cr_assert(H5Lcreate_soft("/", a, "up1", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    cr_assert(H5Lcreate_soft("/", b, "up2", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    cr_assert(H5Lcreate_soft("/a", b, "parent", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    cr_assert(H5Lcreate_hard(f, "/a", b, "loop", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    cr_assert(H5Lcreate_hard(f, "/a/b/v", f, "v_again", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    cr_assert(H5Lcreate_external("other.h5", "/x", f, "ext", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    H5Gclose(b);
    H5Gclose(a);
    H5Fclose(f);
}

Test(hostile, info_link_cycles_end) {
    const char *path = tu_path("cyclic.h5");
    cyclic_file(path);
    const char *argv[] = {"infl", "info", path, NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    const char *out = tu_out();
    // every object once, every link one line: a few hundred bytes, not megabytes
    cr_assert_lt(strlen(out), 4000, "%zu bytes of output:\n%.2000s", strlen(out), out);
    cr_assert(strstr(out, "/up0") && strstr(out, "soft link to / (not followed)"), "%s", out);
    cr_assert(strstr(out, "/a/b/parent") && strstr(out, "soft link to /a (not followed)"), "%s", out);
    cr_assert(strstr(out, "/a/b/loop") && strstr(out, "hard link to /a (shown there)"), "%s", out);
    cr_assert(strstr(out, "external link to other.h5:/x (not followed)"), "%s", out);
    cr_assert(strstr(out, "/a/b/v ") && strstr(out, "int32 [4]"), "%s", out);
    // the dataset reached by two hard links is described once, named at the second
    const char *first = strstr(out, "hard link to /a/b/v (shown there)");
    const char *second = strstr(out, "hard link to /v_again (shown there)");
    cr_assert((first != NULL) != (second != NULL), "%s", out);
}

Test(hostile, info_stops_when_cancelled) {
    const char *path = tu_path("cyclic.h5");
    cyclic_file(path);
    infl_ctx *ctx = tu_ctx();
    volatile int flag = 1;
    infl_ctx_set_cancel(ctx, &flag);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    ASSERT_ERR(ctx, infl_info(ctx, path, out), INFL_E_INTERRUPTED, "interrupted");
    fclose(out);
    cr_assert_null(strstr(buf, "contents"), "an interrupted walk printed its tree:\n%s", buf);
    free(buf);
    infl_ctx_free(ctx);
}

// ---- sizes claimed by a file ----

// A factors file of one 3 -> 2 layer, written by infl.
static void write_factors(infl_ctx *ctx, const char *path) {
    infl_linear ly = {.name = "fc", .d_in = 3, .d_out = 2, .bias = 1};
    infl_factors *f = NULL;
    ASSERT_OK(ctx, infl_factors_alloc(ctx, 1, &ly, &f));
    for (int i = 0; i < 4; i++) f->A_vals[0][i] = 1;
    for (int i = 0; i < 2; i++) f->S_vals[0][i] = 1;
    snprintf(f->strategy, sizeof f->strategy, "ekfac");
    snprintf(f->fisher, sizeof f->fisher, "true");
    ASSERT_OK(ctx, store_factors_write(ctx, path, 1, f));
    infl_factors_free(f);
}

// Writes attribute `name` of obj: int32 [n].
static void put_ints_attr(hid_t obj, const char *name, const int32_t *v, hsize_t n) {
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT32, v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

// Replaces a factors file's layer list by the older width chain `layers` = [w, w].
static void claim_layers(const char *path, int32_t w) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    const char *attrs[] = {"d_in", "d_out", "bias", "layers"};
    for (int i = 0; i < 4; i++)
        if (H5Aexists(f, attrs[i]) > 0) cr_assert(H5Adelete(f, attrs[i]) >= 0);
    if (H5Lexists(f, "layer_names", H5P_DEFAULT) > 0) cr_assert(H5Ldelete(f, "layer_names", H5P_DEFAULT) >= 0);
    int32_t v[2] = {w, w};
    put_ints_attr(f, "layers", v, 2);
    H5Fclose(f);
}

// Puts dataset `name` (replacing one of that name) into the file at path: file type
// ft, shape dims (rank), chunked when chunk is not NULL (and deflated when asked);
// zeros written when `write`, else nothing stored: a shape the file does not hold.
static void put_dset(const char *path, const char *name, hid_t ft, int rank, const hsize_t *dims,
                     const hsize_t *chunk, int deflate, int write) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) cr_assert(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hid_t s = H5Screate_simple(rank, dims, NULL), pl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk) cr_assert(H5Pset_chunk(pl, rank, chunk) >= 0);
    if (deflate) cr_assert(H5Pset_deflate(pl, 9) >= 0);
    hid_t d = H5Dcreate2(f, name, ft, s, H5P_DEFAULT, pl, H5P_DEFAULT);
    cr_assert(d >= 0, "H5Dcreate2 %s", name);
    if (write) {
        size_t n = H5Tget_size(ft);
        for (int i = 0; i < rank; i++) n *= dims[i];
        char *zeros = calloc(n, 1);
        cr_assert(zeros && H5Dwrite(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) >= 0);
        free(zeros);
    }
    H5Dclose(d);
    H5Pclose(pl);
    H5Sclose(s);
    H5Fclose(f);
}

// put_dset of a rank-2 chunked dataset of which nothing is stored.
static void unstored_dset(const char *path, const char *name, hid_t ft, hsize_t d0, hsize_t d1, hsize_t c0,
                          hsize_t c1) {
    hsize_t dims[2] = {d0, d1}, chunk[2] = {c0, c1};
    put_dset(path, name, ft, 2, dims, chunk, 0, 0);
}

Test(hostile, factors_huge_layers) {
    cap_memory();
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("factors.h5");
    infl_factors *out = NULL;
    // the attribute claims 20000 -> 20000 (A_vecs alone 3.2 GB); the datasets are 3 -> 2
    write_factors(ctx, path);
    claim_layers(path, 20000);
    ASSERT_ERR(ctx, store_factors_read(ctx, path, &out), INFL_E_SHAPE,
               "/layer0/A_vecs: expected float64 [20001, 20001] (the widths of the layer list), found float64 [4, 4]");
    cr_assert_null(out);
    // the datasets claim it too, but the file stores none of it (chunks never written)
    unstored_dset(path, "/layer0/A_vecs", H5T_IEEE_F64LE, 20001, 20001, 256, 256);
    ASSERT_ERR(ctx, store_factors_read(ctx, path, &out), INFL_E_FORMAT,
               "/layer0/A_vecs: float64 [20001, 20001] claims 3.2 GB, but the file holds 0 of its 6241 chunks");
    // a shape beyond this machine's memory is refused before its storage is looked at
    unstored_dset(path, "/layer0/A_vecs", H5T_IEEE_F64LE, 1 << 24, 1 << 24, 1024, 1024);
    claim_layers(path, (1 << 24) - 1);
    ASSERT_ERR(ctx, store_factors_read(ctx, path, &out), INFL_E_FORMAT,
               "/layer0/A_vecs: float64 [16777216, 16777216] claims 2251799.8 GB; at most");
    // widths beyond the bound are refused from the attribute alone
    claim_layers(path, 1 << 30);
    ASSERT_ERR(ctx, store_factors_read(ctx, path, &out), INFL_E_FORMAT,
               "root: the input width of layer 0 (layer0) is 1073741824; expected 1 to 16777216");
    cr_assert_null(out);
    infl_ctx_free(ctx);
}

// A dataset file (written by infl) whose /classes is replaced by n fixed-length
// strings of `size` bytes: stored (deflated chunks of zeros) or not (never written).
static void claim_classes(const char *path, hsize_t n, size_t size, int stored) {
    tu_make_blobs(path, 40, 4, 3, 1);
    hid_t t = H5Tcopy(H5T_C_S1);
    cr_assert(H5Tset_size(t, size) >= 0);
    hsize_t one = 1;
    put_dset(path, "classes", t, 1, &n, stored ? &one : NULL, stored, stored);
    H5Tclose(t);
}

Test(hostile, classes_huge_string_size) {
    cap_memory();
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("d.h5");
    infl_split *sp = NULL;
    infl_dataref ref;
    ASSERT_OK(ctx, infl_dataref_parse(ctx, tu_ref(0, path, "train"), &ref));
    // ten strings of 4 GB each: 40 GB claimed by a file of a few kilobytes
    claim_classes(path, 10, 4000000000u, 0);
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &sp), INFL_E_FORMAT,
               "/classes: string (4000000000 bytes) [10] claims 40.0 GB, but the file holds only 0 bytes of its data");
    cr_assert_null(sp);
    // stored for real, compressed (8 MB of zeros in a few kilobytes): the string size
    // itself is bounded before HDF5 is asked to convert it
    claim_classes(path, 1, 8u << 20, 1);
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &sp), INFL_E_FORMAT,
               "/classes: the string size (bytes) is 8388608; expected 1 to 1048576");
    // and what is sane still reads
    claim_classes(path, 3, 80, 1);
    ASSERT_OK(ctx, store_split_open(ctx, &ref, &sp));
    cr_assert_eq(store_split_info(sp)->n_classes, 3);
    store_split_close(sp);
    infl_ctx_free(ctx);
}

Test(hostile, split_width_not_stored) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("d.h5");
    tu_make_blobs(path, 40, 4, 3, 1);
    // /train/x claims [40, 2^28] (43 GB), contiguous, with nothing stored
    hsize_t dims[2] = {40, (hsize_t)1 << 28};
    put_dset(path, "/train/x", H5T_IEEE_F32LE, 2, dims, NULL, 0, 0);
    infl_dataref ref;
    infl_split *sp = NULL;
    ASSERT_OK(ctx, infl_dataref_parse(ctx, tu_ref(0, path, "train"), &ref));
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &sp), INFL_E_FORMAT,
               "/train/x: float32 [40, 268435456] claims 42.9 GB, but the file holds only 0 bytes of its data");
    infl_ctx_free(ctx);
}

// ---- checksums: damage to an infl-written file is found as such ----

// Flips one byte of a file at `off`.
static void flip_byte(const char *path, long off) {
    FILE *f = fopen(path, "r+b");
    cr_assert(f && fseek(f, off, SEEK_SET) == 0);
    int c = fgetc(f);
    cr_assert(c != EOF && fseek(f, off, SEEK_SET) == 0);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

// The file address of object `name`'s header.
static long obj_addr(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    H5O_info_t oi;
    cr_assert(H5Oget_info_by_name2(f, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) >= 0);
    H5Fclose(f);
    return (long)oi.addr;
}

Test(hostile, checksum_finds_flipped_metadata) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("d.h5");
    infl_dataref ref;
    infl_split *sp = NULL;
    ASSERT_OK(ctx, infl_dataref_parse(ctx, tu_ref(0, path, "train"), &ref));
    // a byte inside the object header of /train/x (past its "OHDR" signature)
    tu_make_blobs(path, 40, 4, 3, 1);
    flip_byte(path, obj_addr(path, "/train/x") + 12);
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &sp), INFL_E_FORMAT,
               "damaged file: an HDF5 checksum does not match");
    cr_assert(strstr(infl_ctx_error(ctx), "/train/x"), "%s", infl_ctx_error(ctx));
    cr_assert_null(sp);
    cr_assert_eq(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0, "HDF5 ids left open");
    // a byte of the superblock (its root group's address)
    tu_make_blobs(path, 40, 4, 3, 1);
    flip_byte(path, 40);
    ASSERT_ERR(ctx, store_split_open(ctx, &ref, &sp), INFL_E_FORMAT, "checksum");
    cr_assert(strstr(infl_ctx_error(ctx), "d.h5: cannot open as HDF5, the file may be damaged"), "%s",
              infl_ctx_error(ctx));
    // and the CLI says so too, with no crash
    const char *argv[] = {"infl", "info", path, NULL};
    cr_assert_eq(tu_cli(argv), 1);
    cr_assert(strstr(tu_err(), "checksum"), "%s", tu_err());
    infl_ctx_free(ctx);
}

// ---- stale temporaries ----

// Names in dir that start with `prefix`, counted.
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *dp = opendir(dir);
    cr_assert(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(dp);
    return n;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// `infl train` of a small MLP with many checkpoints into run (a tenth of a second).
static int train(const char *data, const char *run) {
    const char *argv[] = {"infl", "train", "--data", tu_ref(1, data, "train"), "--layers", "8,16,3", "--epochs", "20",
                          "--batch", "8", "--checkpoint-every", "10", "-o", run, "--force", "--threads", "1", NULL};
    return tu_cli(argv);
}

// Forks a child that trains into run; returns its pid.
static pid_t train_child(const char *data, const char *run) {
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) _exit(train(data, run));
    return pid;
}

// Checks that run is a whole run file: it opens and its final checkpoint loads.
static void check_whole_run(const char *run) {
    infl_ctx *ctx = tu_ctx();
    infl_run *r = NULL;
    ASSERT_OK(ctx, store_run_open(ctx, run, &r));
    int fin = 0;
    ASSERT_OK(ctx, store_run_find(ctx, r, "final", &fin));
    float *p = malloc(infl_spec_nparams(store_run_spec(r)) * sizeof *p);
    ASSERT_OK(ctx, store_run_load(ctx, r, fin, p));
    free(p);
    store_run_close(r);
    infl_ctx_free(ctx);
}

// Waits (polling) until path exists (want 1) or not (want 0); the seconds it took, or
// -1 after 20 s.
static double wait_for(const char *path, int want) {
    double t0 = now_s();
    while (tu_exists(path) != want) {
        if (now_s() - t0 > 20) return -1;
        usleep(100);
    }
    return now_s() - t0;
}

Test(hostile, killed_train_leaves_no_stale_tmp) {
    const char *data = tu_path("d.h5"), *run = tu_path("run.h5");
    tu_make_blobs(data, 300, 8, 3, 1);
    // how long a training's temporary lives here (the kill points are drawn within it)
    pid_t pid = train_child(data, run);
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", run, (int)pid);
    cr_assert_geq(wait_for(tmp, 1), 0, "%s never appeared", tmp);
    double window = wait_for(tmp, 0);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_gt(window, 0.005, "the temporary lived %.4f s: too short to kill the training inside it", window);
    uint64_t seed = 15;
    int left = 0;
    for (int k = 0; k < 4; k++) {
        cr_assert(unlink(run) == 0);
        pid = train_child(data, run);
        // wait for its temporary to appear, then kill it at a random point of its life
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", run, (int)pid);
        cr_assert_geq(wait_for(tmp, 1), 0, "%s never appeared", tmp);
        usleep((useconds_t)(tu_uniform(&seed) * 0.6 * window * 1e6));
        kill(pid, SIGKILL);
        cr_assert(waitpid(pid, &status, 0) == pid);
        int killed = WIFSIGNALED(status);
        int stale = tu_exists(tmp);
        cr_assert(!stale || killed, "a training that ended left %s", tmp);
        left += stale;
        // the next run removes what the killed one left, says so, and writes a whole file
        cr_assert_eq(train(data, run), 0, "%s", tu_err());
        if (stale) {
            char said[1400];
            snprintf(said, sizeof said, "removed stale temporary %s (process %d is gone)", tmp, (int)pid);
            cr_assert(strstr(tu_err(), said), "run %d: stderr lacks '%s':\n%s", k, said, tu_err());
        }
        cr_assert_eq(count_prefixed(tu_tmpdir(), "run.h5.tmp."), 0, "run %d left a temporary", k);
        check_whole_run(run);
    }
    // the kills fall within the first 60% of the temporary's life as measured (a later
    // training may run faster): at least one must have left it behind, or nothing was tested
    cr_log_info("temporary's life %.3f s; %d of 4 kills left it behind", window, left);
    cr_assert_geq(left, 1, "no kill of 4 left a temporary behind (its life %.3f s)", window);
}

Test(hostile, live_or_foreign_tmps_are_kept) {
    const char *data = tu_path("d.h5"), *run = tu_path("run.h5");
    tu_make_blobs(data, 60, 8, 3, 1);
    // a live process's temporary (a child that sleeps), and names that are not ours
    fflush(NULL);
    pid_t live = fork();
    cr_assert(live >= 0);
    if (live == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // gone with the test, even when an assertion ends it
        pause();
        _exit(0);
    }
    char mine[1200], odd[1200], other[1200];
    snprintf(mine, sizeof mine, "%s.tmp.%d", run, (int)live);
    snprintf(odd, sizeof odd, "%s.tmp.12x", run);
    snprintf(other, sizeof other, "%s/other.h5.tmp.999999999", tu_tmpdir());
    tu_write_file(mine, "x", 1);
    tu_write_file(odd, "x", 1);
    tu_write_file(other, "x", 1);
    cr_assert_eq(train(data, run), 0, "%s", tu_err());
    cr_assert(tu_exists(mine) && tu_exists(odd) && tu_exists(other));
    cr_assert_null(strstr(tu_err(), "stale"), "%s", tu_err());
    // once it is gone (and reaped), its temporary is stale
    kill(live, SIGKILL);
    int status;
    cr_assert(waitpid(live, &status, 0) == live);
    cr_assert_eq(train(data, run), 0, "%s", tu_err());
    cr_assert(!tu_exists(mine) && tu_exists(odd) && tu_exists(other));
    cr_assert(strstr(tu_err(), "removed stale temporary"), "%s", tu_err());
}

// ---- runs and scores: the model and the matrix are as large as what is stored ----

Test(hostile, run_widths_borne_out_by_tensors) {
    cap_memory();
    const char *data = tu_path("d.h5"), *run = tu_path("run.h5");
    tu_make_blobs(data, 60, 8, 3, 1);
    const char *argv[] = {"infl", "train", "--data", tu_ref(1, data, "train"), "--layers", "8,16,3", "--epochs", "1",
                          "-o", run, "--quiet", NULL};
    cr_assert_eq(tu_cli(argv), 0, "%s", tu_err());
    // /model claims a hidden layer of 60000 (W0 alone 1.9 GB, P the caller allocates)
    hid_t f = H5Fopen(run, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
    cr_assert(g >= 0 && H5Adelete(g, "layers") >= 0);
    int32_t w[3] = {8, 60000, 3};
    put_ints_attr(g, "layers", w, 3);
    H5Gclose(g);
    H5Fclose(f);
    infl_ctx *ctx = tu_ctx();
    infl_run *r = NULL;
    ASSERT_ERR(ctx, store_run_open(ctx, run, &r), INFL_E_SHAPE, "/W0: expected float32 [60000, 8], found [16, 8]");
    cr_assert_null(r);
    infl_ctx_free(ctx);
}

Test(hostile, scores_matrix_not_stored) {
    const char *path = tu_path("s.h5");
    infl_ctx *ctx = tu_ctx();
    infl_scw *w = NULL;
    ASSERT_OK(ctx, store_scores_create(ctx, path, 1, 2, 1, 5, 1, &w));
    float sc[10] = {0};
    ASSERT_OK(ctx, store_scores_write_block(ctx, w, sc, 5, 5, 0));
    int64_t idx[2] = {0, 1};
    float top[2] = {0, 0};
    ASSERT_OK(ctx, store_scores_write_topk(ctx, w, idx, top, idx, top));
    ASSERT_OK(ctx, store_scores_commit(ctx, w));
    infl_scr *r = NULL;
    ASSERT_OK(ctx, store_scores_open(ctx, path, &r));
    store_scores_close(r);
    // /scores replaced by a [100000, 100000] matrix (40 GB) of which nothing is stored
    unstored_dset(path, "scores", H5T_IEEE_F32LE, 100000, 100000, 64, 4096);
    r = NULL;
    ASSERT_ERR(ctx, store_scores_open(ctx, path, &r), INFL_E_FORMAT,
               "/scores: float32 [100000, 100000] claims 40.0 GB, but the file holds 0 of its 39075 chunks");
    cr_assert_null(r);
    infl_ctx_free(ctx);
}

// A Shapley state whose `snapshots` attribute claims a million snapshots of 2,000 rows
// (16 GB) while the file holds one: refused, naming the dataset, before allocating.
Test(hostile, shapley_state_claims_snapshots) {
    const char *path = tu_path("sh.h5");
    infl_ctx *ctx = tu_ctx();
    enum { n = 2000 };
    static double sum[n], sum2[n], snapv[n], rs[n], rs2[n], rv[n];
    int64_t snapp[1] = {10}, rp[1];
    infl_shapley_state s = {.n = n, .perms = 10, .sum = sum, .sum2 = sum2, .nsnap = 1, .cap = 1,
                            .snap_perms = snapp, .snap_values = snapv};
    snprintf(s.fingerprint, sizeof s.fingerprint, "test");
    ASSERT_OK(ctx, store_shapley_state_write(ctx, path, &s));
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t a = H5Aopen(f, "snapshots", H5P_DEFAULT);
    int64_t claim = 1000000;
    cr_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &claim) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    cap_memory();
    infl_shapley_state r = {.n = n, .sum = rs, .sum2 = rs2, .cap = 1, .snap_perms = rp, .snap_values = rv};
    snprintf(r.fingerprint, sizeof r.fingerprint, "test");
    ASSERT_ERR(ctx, store_shapley_state_read(ctx, path, &r), INFL_E_FORMAT, "/snap_perms");
    infl_ctx_free(ctx);
}
