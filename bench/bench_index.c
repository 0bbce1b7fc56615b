/*
 * bench_index.c — the gradient index (`infl index`, `rank --index`): its building, its
 * size and its scoring, each beside a ceiling measured in the same run, and peak memory.
 *
 *   bench_index [--n 60000] [--big 1000000] [--layers 784,256,128,10] [--dims 256,1024]
 *               [--gaussian 1024] [--kron 32x32,64x64] [--dense-rows 1024] [--kron-rows 16384]
 *               [--queries 1,10,100] [--reps 3] [--run FILE] [--data FILE] [--json FILE]
 *
 * Data: synthetic (infl_synth: class blobs) N rows of the first layer's width and 100
 * queries (or --data FILE with /train and /test); model: one checkpoint of seeded random
 * weights (or --run FILE, whose first checkpoint's data must be --data). Index cost does
 * not depend on how the weights were trained.
 *  1. Building, per projection (rademacher at each --dims, gaussian, kron at each
 *     --kron, and kron 32x32 in float32 for its size): examples/s of the whole `infl
 *     index` (HDF5 in, projections, float16 conversion, HDF5 out) over the first rows of
 *     the train split (--dense-rows for the dense projections, which cost 2·P·k per
 *     example; --kron-rows for kron), beside two ceilings on the same rows:
 *     (a) the forward and backward alone: the index's own stream (sched/stage, same
 *         sub-batches of 1024, same reader) with only attrib_factors per sub-batch,
 *         timed around it (a download to synchronise); the same stream then times
 *         proj_batch apart, whose FLOPs (proj_flops) give the projection's GFLOP/s;
 *     (b) the backend's sgemm (OpenBLAS on the CPU, cuBLAS on CUDA; the best of short
 *         samples, as `infl bench` times its ceilings) at the projection's own GEMM shapes:
 *         dense, b × k × chunk per layer (the chunk of output rows proj_create picks);
 *         kron, b × k_out × d_out and b × k_in × d_in per layer (its per-example outer
 *         products are counted in its FLOPs but are no GEMM): the rate they would reach
 *         at sgemm's speed.
 *     Medians over --reps after one warm-up per configuration.
 *  2. Bytes per example: counted (k × 2 or 4 + 4 for q, per checkpoint) and the file's
 *     size over its rows (HDF5's overhead included).
 *  3. Scoring: a kron 32x32 index (k = 2368) of all N rows is built in a child process,
 *     then another child ranks --queries M (graddot, top 10, no output) against it: the
 *     score phase (reading every row, float16 to float32, GEMM, top-k), its GEMM rate
 *     2·M·k·N / score seconds beside sgemm at (M × k)·(k × R) (R the rows per chunk
 *     index_rank.c reads: index_chunk_rows), the rate the index is
 *     read at (file bytes / score seconds) beside the read alone (store_index_read of
 *     every row in the same chunks, with the float16 conversion: what scoring costs
 *     before its GEMMs), and queries per second (M / the whole rank call).
 *  4. The same against an index of --big rows (default 1,000,000): built the same way
 *     (kron 32x32, k = 2368 again) from synthetic data of 32 features through a model of
 *     the same hidden layers (32-256-128-10), so that the data and the build stay small;
 *     scoring cost depends on N and k only. Its queries are that model's.
 *  Each build and each scoring runs in a fresh process (this program again): its peak
 *  resident memory (VmHWM since its exec) is printed beside its N, to see memory flat in N.
 * The tables go to stdout last; --json writes the same figures.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/internal.h"
#include "data/synth.h"
#include "estimators/project.h"
#include "models/mlp.h"
#include "pipelines/attrib.h"
#include "pipelines/bench_internal.h"
#include "store/store.h"

#define MAXCFG 16
#define MAXQ 8

static int die(infl_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_index: %s: %s\n", what, infl_ctx_error(ctx));
    return 1;
}

static double file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size : 0;
}

static int parse_ints(const char *s, int *v, int max) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && n < max; t = strtok_r(NULL, ",", &sv)) v[n++] = atoi(t);
    return n;
}

// A dataset of n train rows of d features and `test` queries (infl_synth, seed 1).
static infl_status write_data(infl_ctx *ctx, const char *path, int64_t n, int64_t d, int64_t test) {
    infl_synth_options o = infl_synth_options_default();
    o.n = n;
    o.d = d;
    o.test = test;
    o.force = 1;
    return infl_synth(ctx, &o, path);
}

// A run of one checkpoint of seeded random weights (halved, as bench_rank's) of spec on tref.
static infl_status write_run(infl_ctx *ctx, const char *path, const infl_mlp_spec *spec, const char *tref) {
    size_t P = infl_mlp_nparams(spec);
    float *p = malloc(P * sizeof(float));
    if (!p) return INFL_E_NOMEM;
    infl_mlp_init(spec, 1, 0, p);
    for (size_t i = 0; i < P; i++) p[i] *= 0.5f;
    infl_runw *rw;
    infl_status rc = store_run_create(ctx, path, 1, &(infl_model_spec){.kind = INFL_MODEL_MLP, .mlp = *spec}, tref,
                                      "sgd", 1, &rw);
    if (rc == INFL_OK) rc = store_run_add_checkpoint(ctx, rw, 100, 1, 0.1, NAN, p);
    if (rc == INFL_OK) rc = store_run_commit(ctx, rw);
    free(p);
    return rc;
}

// ---- the index's stream with its phases timed apart ----

typedef struct {
    attrib *a;
    infl_proj *p;
    float *phi;
    int project;
    double t_fb, t_proj;
} split_stream;

// Waits for the backend's queued work (a download synchronises).
static infl_status be_sync(infl_ctx *ctx, const float *dev) {
    float h;
    return ctx->be->download(ctx, &h, dev, sizeof h);
}

static infl_status split_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    (void)sh;
    (void)r0;
    split_stream *s = user;
    double t0 = bench_now();
    FORWARD_IF_ERROR(attrib_factors(ctx, s->a, 0, bt, s->a->work));
    FORWARD_IF_ERROR(be_sync(ctx, s->a->work->loss));
    double t1 = bench_now();
    s->t_fb += t1 - t0;
    if (s->project) {
        FORWARD_IF_ERROR(proj_batch(ctx, s->p, s->a->m, s->a->work, bt->b, s->phi));
        FORWARD_IF_ERROR(be_sync(ctx, s->phi));
        s->t_proj += bench_now() - t1;
    }
    return INFL_OK;
}

// One pass of the index's stream over `train` at the run's first checkpoint: seconds of the
// forward and backward (fb), of the projection (proj) and of waiting for the reader.
static infl_status stream_split(infl_ctx *ctx, const char *run, const char *train, const infl_index_options *io,
                                double *fb, double *proj, double *wait) {
    infl_rank_options ro = infl_rank_options_default();
    ro.run = run;
    ro.train = train;
    ro.method = INFL_METHOD_TRAK;
    ro.checkpoints = "final";
    attrib a;
    infl_status rc = attrib_open(ctx, &a, &ro, 0);
    if (rc < 0) return rc;
    infl_proj *p = NULL;
    float *phi = NULL;
    a.B = a.N < 1024 ? (int)a.N : 1024;
    CHECK(proj_create(ctx, a.m, io->projection, io->dim, io->kron_out, io->kron_in, io->seed, a.B, a.B, &p));
    CHECK(attrib_alloc_scoring(ctx, &a, 0, 0));
    CHECK(infl_be_alloc_f(ctx, &phi, (size_t)a.B * proj_dim(p), "projected gradients"));
    split_stream s = {.a = &a, .p = p, .phi = phi, .project = 1};
    infl_stream_fns fns = {.batch = split_batch, .user = &s};
    CHECK(infl_stage_stream(ctx, &a.st, a.train, attrib_shard_rows(&a), 0, 1, &fns, "bench", "", wait));
    *fb = s.t_fb;
    *proj = s.t_proj;
done:
    infl_be_free(ctx, phi);
    proj_free(ctx, p);
    attrib_close(&a);
    return rc;
}

// ---- ceilings ----

// GFLOP/s of C (m, n) = A (m, k) · op(B) through the backend (the best of short samples, as `infl
// bench` times its ceilings); op = ᵀ when tb.
static double be_gemm_rate(infl_ctx *ctx, int m, int n, int k, int tb) {
    double t = NAN;
    if (bench_time_gemm(ctx, m, n, k, INFL_N, tb ? INFL_T : INFL_N, 0, &t) != INFL_OK) return NAN;
    return 2.0 * m * n * k / t / 1e9;
}

// sgemm's rate (GFLOP/s) over the projection's GEMMs for sub-batches of b examples: total
// FLOPs over Σ FLOPs_i / rate_i at each GEMM shape.
static double proj_sgemm_ceiling(infl_ctx *ctx, const infl_mlp_spec *sp, const infl_index_options *io, int b, int k) {
    double fl = 0, t = 0;
    for (int l = 0; l < sp->L; l++) {
        int din = sp->widths[l], dout = sp->widths[l + 1], ni = din + 1;
        if (io->projection == INFL_PROJ_KRON) {
            int ko = io->kron_out < dout ? io->kron_out : dout, ki = io->kron_in < ni ? io->kron_in : ni;
            double f1 = 2.0 * b * ko * dout, f2 = 2.0 * b * ki * din;
            fl += f1 + f2;
            t += f1 / be_gemm_rate(ctx, b, ko, dout, 0) + f2 / be_gemm_rate(ctx, b, ki, din, 0);
        } else {
            // the chunk of output rows project.c's proj_create picks: about 8192 columns, Pᵀ's block <= 64 MiB
            size_t target = 8192, cap = (64u << 20) / ((size_t)k * sizeof(float));
            if (cap < target) target = cap;
            int no = (int)(target / ni);
            no = no < 1 ? 1 : no > dout ? dout : no;
            double f = 2.0 * b * (double)k * dout * ni;
            fl += f;
            t += f / be_gemm_rate(ctx, b, k, no * ni, 0);
        }
    }
    return fl / t;
}

// ---- child processes: one build or one scoring, so that each one's peak memory is its own ----

// This process's peak resident memory in MB: VmHWM, the high-water mark of its memory since its exec
// (getrusage's ru_maxrss, of its own or from wait4, also counts the parent's resident memory at the
// fork, which exec folds in), else ru_maxrss.
static double peak_mb(void) {
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    if (fp) fclose(fp);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = (double)ru.ru_maxrss;
    }
    return kb / 1024.0;
}

// build RESULT RUN TRAIN OUT PROJ DIM KOUT KIN FLOAT16: one infl_index; RESULT gets its report.
// score RESULT INDEX QUERYFILE MLIST REPS: per M the medians of infl_rank (graddot, top 10),
// then the median of reading the whole index alone.
static int child(int argc, char **argv) {
    infl_ctx *ctx = NULL;
    if (infl_ctx_create(NULL, &ctx) != INFL_OK) return die(ctx, "context");
    FILE *out = fopen(argv[3], "w");
    if (!out) return 1;
    if (!strcmp(argv[2], "build") && argc == 12) {
        infl_index_options o = infl_index_options_default();
        o.run = argv[4];
        o.train = argv[5];
        o.projection = (infl_projection)atoi(argv[7]);
        o.dim = atoi(argv[8]);
        o.kron_out = atoi(argv[9]);
        o.kron_in = atoi(argv[10]);
        o.float16 = atoi(argv[11]);
        o.checkpoints = "final";
        o.force = 1;
        infl_index_report rep;
        if (infl_index(ctx, &o, argv[6], &rep) != INFL_OK) return die(ctx, "index");
        fprintf(out, "%.6f %.6f %.6g %.6g %.3f %" PRId64 " %d\n", rep.seconds, rep.seconds_wait, rep.flops_project,
                rep.flops_fb, rep.bytes_per_example, rep.N, rep.k);
    } else if (!strcmp(argv[2], "score") && argc == 8) {
        int Ms[MAXQ], nq = parse_ints(argv[6], Ms, MAXQ), reps = atoi(argv[7]);
        for (int i = 0; i < nq; i++) {
            char qref[4200];
            snprintf(qref, sizeof qref, "%s:/test[0:%d]", argv[5], Ms[i]);
            infl_rank_options o = infl_rank_options_default();
            o.index = argv[4];
            o.query = qref;
            o.method = INFL_METHOD_GRADDOT;
            o.top = 10;
            double tot[64], prep[64], sc[64], flops = 0;
            for (int r = -1; r < reps; r++) {
                infl_rank_result *res;
                double t0 = bench_now();
                if (infl_rank(ctx, &o, &res) != INFL_OK) return die(ctx, "rank --index");
                if (r >= 0) {
                    tot[r] = bench_now() - t0;
                    prep[r] = res->seconds_prepare;
                    sc[r] = res->seconds_score;
                    flops = res->flops;
                }
                infl_rank_result_free(res);
            }
            fprintf(out, "%d %.6f %.6f %.6f %.6g\n", Ms[i], bench_median(tot, reps), bench_median(prep, reps),
                    bench_median(sc, reps), flops);
        }
        // the read alone: every row of the scored checkpoint, in the scorer's chunks, as float32
        infl_ixr *r;
        if (store_index_open(ctx, argv[4], &r) != INFL_OK) return die(ctx, "index");
        const infl_index_info *in = store_index_info(r);
        int R = index_chunk_rows(in->k, in->N);
        float *phi = malloc(sizeof(float) * (size_t)R * in->k), *q = malloc(sizeof(float) * (size_t)R);
        double t[64];
        for (int rep = -1; rep < reps; rep++) {
            double t0 = bench_now();
            for (int64_t r0 = 0; r0 < in->N; r0 += R) {
                int64_t n = in->N - r0 < R ? in->N - r0 : R;
                if (store_index_read(ctx, r, in->nck - 1, r0, n, phi, q) != INFL_OK) return die(ctx, "read");
            }
            if (rep >= 0) t[rep] = bench_now() - t0;
        }
        fprintf(out, "read %.6f\n", bench_median(t, reps));
        free(phi);
        free(q);
        store_index_close_r(r);
    } else {
        fprintf(stderr, "bench_index: bad child arguments\n");
        return 2;
    }
    fprintf(out, "peak %.1f\n", peak_mb());
    fclose(out);
    infl_ctx_free(ctx);
    return 0;
}

// Runs this program as a child with args (NULL-terminated after argv[0]). Returns its exit status.
static int run_child(char *const *args) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// "peak MB" in a child's result file, or 0.
static double result_peak(const char *res) {
    FILE *fp = fopen(res, "r");
    char line[256];
    double v = 0;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "peak ", 5)) v = atof(line + 5);
    if (fp) fclose(fp);
    return v;
}

typedef struct {
    double seconds, wait, flops_p, flops_fb, bytes_ex;
    int64_t N;
    int k;
    double rss_mb;
} build_fig;

static int child_build(const char *dir, const char *run, const char *train, const char *out,
                       const infl_index_options *io, build_fig *f) {
    char res[600], a[5][32];
    snprintf(res, sizeof res, "%s/build.txt", dir);
    snprintf(a[0], 32, "%d", (int)io->projection);
    snprintf(a[1], 32, "%d", io->dim);
    snprintf(a[2], 32, "%d", io->kron_out);
    snprintf(a[3], 32, "%d", io->kron_in);
    snprintf(a[4], 32, "%d", io->float16);
    char *args[] = {"bench_index", "--child", "build", res, (char *)run, (char *)train, (char *)out,
                    a[0], a[1], a[2], a[3], a[4], NULL};
    if (run_child(args) != 0) return 1;
    f->rss_mb = result_peak(res);
    FILE *fp = fopen(res, "r");
    int ok = fp && fscanf(fp, "%lf %lf %lf %lf %lf %" SCNd64 " %d", &f->seconds, &f->wait, &f->flops_p, &f->flops_fb,
                          &f->bytes_ex, &f->N, &f->k) == 7;
    if (fp) fclose(fp);
    return ok ? 0 : 1;
}

typedef struct {
    int M;
    double total, prep, score, flops;
} score_fig;

static int child_score(const char *dir, const char *index, const char *data, const char *qlist, int reps,
                       score_fig *sf, int *nq, double *read_s, double *rss_mb) {
    char res[600], rp[16];
    snprintf(res, sizeof res, "%s/score.txt", dir);
    snprintf(rp, sizeof rp, "%d", reps);
    char *args[] = {"bench_index", "--child", "score", res, (char *)index, (char *)data, (char *)qlist, rp, NULL};
    if (run_child(args) != 0) return 1;
    *rss_mb = result_peak(res);
    FILE *fp = fopen(res, "r");
    if (!fp) return 1;
    *nq = 0;
    char line[256];
    while (fgets(line, sizeof line, fp)) {
        if (!strncmp(line, "read ", 5)) *read_s = atof(line + 5);
        else if (!strncmp(line, "peak ", 5)) continue;
        else if (*nq < MAXQ && sscanf(line, "%d %lf %lf %lf %lf", &sf[*nq].M, &sf[*nq].total, &sf[*nq].prep,
                                      &sf[*nq].score, &sf[*nq].flops) == 5)
            (*nq)++;
    }
    fclose(fp);
    return 0;
}

// ---- the benchmark ----

typedef struct {
    infl_index_options io;
    const char *name;
    int64_t rows;
    // medians
    double ix_s, wait_s, fb_s, proj_s, flops_p, flops_fb, bytes_ex, bytes_file;
    int k;
    double ceil;
} build_cfg;

static infl_status parse_spec(infl_ctx *ctx, const char *layers, infl_mlp_spec *spec) {
    *spec = (infl_mlp_spec){.act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE, .wd = 1e-4};
    int w[INFL_MAX_LAYERS + 1], L = parse_ints(layers, w, INFL_MAX_LAYERS + 1);
    for (int i = 0; i < L; i++) spec->widths[i] = w[i];
    spec->L = L - 1;
    return infl_mlp_spec_check(ctx, spec);
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--child")) return child(argc, argv);
    bench_passive_omp(argv);
    int64_t n = 60000, big = 1000000, dense_rows = 1024, kron_rows = 16384;
    int reps = 3, dims[8], nd, gdim = 1024, kk[16], nk, Ms[MAXQ], nq;
    const char *layers = "784,256,128,10", *json = NULL, *data = NULL, *run = NULL, *qlist = "1,10,100";
    const char *dlist = "256,1024", *klist = "32x32,64x64";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--big")) big = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = argv[i + 1];
        else if (!strcmp(argv[i], "--dims")) dlist = argv[i + 1];
        else if (!strcmp(argv[i], "--gaussian")) gdim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kron")) klist = argv[i + 1];
        else if (!strcmp(argv[i], "--dense-rows")) dense_rows = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--kron-rows")) kron_rows = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--queries")) qlist = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--run")) run = argv[i + 1];
        else if (!strcmp(argv[i], "--data")) data = argv[i + 1];
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_index [--n N] [--big N] [--layers W,..] [--dims K,..] [--gaussian K] "
                            "[--kron OxI,..] [--dense-rows R] [--kron-rows R] [--queries M,..] [--reps R] "
                            "[--run FILE] [--data FILE] [--json FILE]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64) reps = 3;
    nd = parse_ints(dlist, dims, 8);
    nq = parse_ints(qlist, Ms, MAXQ);
    {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", klist);
        nk = 0;
        for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && nk < 16; t = strtok_r(NULL, ",", &sv))
            if (sscanf(t, "%dx%d", &kk[nk], &kk[nk + 1]) == 2) nk += 2;
        nk /= 2;
    }
    int maxM = 1;
    for (int i = 0; i < nq; i++) maxM = Ms[i] > maxM ? Ms[i] : maxM;
    infl_ctx *ctx = NULL;
    if (infl_ctx_create(NULL, &ctx) != INFL_OK) return die(ctx, "context");
    infl_mlp_spec spec;
    if (parse_spec(ctx, layers, &spec) != INFL_OK) return die(ctx, "--layers");
    char dir[256], path[400], runp[400], tref[600], sub[700], ixp[500];
    snprintf(dir, sizeof dir, "/tmp/infl-bench-index-%ld", (long)getpid());
    if (mkdir(dir, 0700) != 0) return fprintf(stderr, "bench_index: cannot create %s\n", dir), 1;
    snprintf(ixp, sizeof ixp, "%s/ix.h5", dir);

    // ---- data and run ----
    double tw = bench_now();
    if (!data) {
        snprintf(path, sizeof path, "%s/data.h5", dir);
        if (write_data(ctx, path, n, spec.widths[0], maxM) != INFL_OK) return die(ctx, "data");
        data = path;
    }
    snprintf(tref, sizeof tref, "%s:/train", data);
    if (!run) {
        snprintf(runp, sizeof runp, "%s/run.h5", dir);
        if (write_run(ctx, runp, &spec, tref) != INFL_OK) return die(ctx, "run");
        run = runp;
    }
    tw = bench_now() - tw;
    {
        infl_dataref ref;
        infl_split *sp;
        if (infl_dataref_parse(ctx, tref, &ref) != INFL_OK || store_split_open(ctx, &ref, &sp) != INFL_OK)
            return die(ctx, "data");
        n = store_split_info(sp)->n;
        store_split_close(sp);
    }
    size_t P = infl_mlp_nparams(&spec);
    double peak_big = be_gemm_rate(ctx, 2048, 2048, 2048, 1);
    printf("machine: %s\n", infl_ctx_backend(ctx));
    printf("model %s (P = %zu parameters), N = %" PRId64 " train rows, 1 checkpoint; data and run written in %.1f s\n",
           layers, P, n, tw);
    printf("sgemm 2048^3: %.1f GFLOP/s\n\n", peak_big);

    // ---- 1, 2: building ----
    build_cfg cf[MAXCFG];
    int nc = 0;
    for (int i = 0; i < nd && nc < MAXCFG; i++, nc++) {
        cf[nc] = (build_cfg){.io = infl_index_options_default(), .name = "rademacher", .rows = dense_rows};
        cf[nc].io.dim = dims[i];
    }
    if (gdim > 0 && nc < MAXCFG) {
        cf[nc] = (build_cfg){.io = infl_index_options_default(), .name = "gaussian", .rows = dense_rows};
        cf[nc].io.projection = INFL_PROJ_GAUSSIAN;
        cf[nc++].io.dim = gdim;
    }
    for (int i = 0; i < nk && nc + 1 < MAXCFG; i++) {
        for (int f32 = 0; f32 < 2; f32++) {
            if (f32 && (kk[2 * i] != 32 || kk[2 * i + 1] != 32)) continue;  // float32 once, for its size
            cf[nc] = (build_cfg){.io = infl_index_options_default(), .name = "kron", .rows = kron_rows};
            cf[nc].io.projection = INFL_PROJ_KRON;
            cf[nc].io.kron_out = kk[2 * i];
            cf[nc].io.kron_in = kk[2 * i + 1];
            cf[nc++].io.float16 = !f32;
        }
    }
    for (int c = 0; c < nc; c++) {
        build_cfg *b = &cf[c];
        if (b->rows > n) b->rows = n;
        snprintf(sub, sizeof sub, "%s[0:%" PRId64 "]", tref, b->rows);
        b->io.run = run;
        b->io.train = sub;
        b->io.checkpoints = "final";
        b->io.force = 1;
        double ix[64], wt[64], fb[64], pj[64];
        for (int r = -1; r < reps; r++) {
            infl_index_report rep;
            double t0 = bench_now();
            if (infl_index(ctx, &b->io, ixp, &rep) != INFL_OK) return die(ctx, "index");
            double t = bench_now() - t0, w;
            if (r < 0) continue;  // the warm-up
            ix[r] = t;
            wt[r] = rep.seconds_wait;
            b->flops_p = rep.flops_project;
            b->flops_fb = rep.flops_fb;
            b->bytes_ex = rep.bytes_per_example;
            b->k = rep.k;
            b->bytes_file = file_bytes(ixp) / (double)b->rows;
            if (stream_split(ctx, run, sub, &b->io, &fb[r], &pj[r], &w) != INFL_OK) return die(ctx, "stream");
        }
        b->ix_s = bench_median(ix, reps);
        b->wait_s = bench_median(wt, reps);
        b->fb_s = bench_median(fb, reps);
        b->proj_s = bench_median(pj, reps);
        int bb = b->rows < 1024 ? (int)b->rows : 1024;
        b->ceil = proj_sgemm_ceiling(ctx, &spec, &b->io, bb, b->k);
        unlink(ixp);
        fprintf(stderr, "built %s k %d: %.2f s\n", b->name, b->k, b->ix_s);
    }

    // ---- 3, 4: scoring, in child processes ----
    build_fig bf[2];
    score_fig sf[2][MAXQ];
    int sq[2] = {0, 0}, nidx = 0;
    double read_s[2] = {0, 0}, srss[2] = {0, 0}, ixbytes[2] = {0, 0};
    char bigdata[500], bigrun[500], bigref[600], bigix[500];
    const char *sdata[2] = {data, bigdata};
    infl_mlp_spec bspec = spec;
    bspec.widths[0] = 32;
    snprintf(bigdata, sizeof bigdata, "%s/big.h5", dir);
    snprintf(bigrun, sizeof bigrun, "%s/bigrun.h5", dir);
    snprintf(bigix, sizeof bigix, "%s/bigix.h5", dir);
    snprintf(bigref, sizeof bigref, "%s:/train", bigdata);
    for (int s = 0; s < (big > 0 ? 2 : 1); s++) {
        infl_index_options io = infl_index_options_default();
        io.projection = INFL_PROJ_KRON;
        const char *ip = s ? bigix : ixp;
        if (s) {
            double t0 = bench_now();
            if (write_data(ctx, bigdata, big, 32, maxM) != INFL_OK) return die(ctx, "big data");
            if (write_run(ctx, bigrun, &bspec, bigref) != INFL_OK) return die(ctx, "big run");
            fprintf(stderr, "big data written in %.1f s\n", bench_now() - t0);
        }
        if (child_build(dir, s ? bigrun : run, s ? bigref : tref, ip, &io, &bf[s]) != 0)
            return fprintf(stderr, "bench_index: the build of %s failed\n", ip), 1;
        ixbytes[s] = file_bytes(ip);
        fprintf(stderr, "index of %" PRId64 " rows built in %.1f s\n", bf[s].N, bf[s].seconds);
        if (child_score(dir, ip, sdata[s], qlist, reps, sf[s], &sq[s], &read_s[s], &srss[s]) != 0)
            return fprintf(stderr, "bench_index: scoring against %s failed\n", ip), 1;
        unlink(ip);
        nidx++;
    }
    int R = index_chunk_rows(bf[0].k, bf[0].N);
    double sg[MAXQ];
    for (int i = 0; i < nq; i++) sg[i] = be_gemm_rate(ctx, Ms[i], R, bf[0].k, 1);

    // ---- tables ----
    printf("## Building (1 checkpoint; index: the whole `infl index`; fb: forward+backward alone on the same stream)\n\n");
    printf("| projection | k | dtype | rows | index ex/s | fb alone ex/s | index / fb | reader wait | projection "
           "GFLOP/s | sgemm at its shapes | share | bytes/ex counted | bytes/ex file |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int c = 0; c < nc; c++) {
        build_cfg *b = &cf[c];
        char kname[32];
        if (b->io.projection == INFL_PROJ_KRON) snprintf(kname, sizeof kname, "%d (%dx%d)", b->k, b->io.kron_out, b->io.kron_in);
        else snprintf(kname, sizeof kname, "%d", b->k);
        double pr = b->flops_p / b->proj_s / 1e9;
        printf("| %s | %s | %s | %" PRId64 " | %.0f | %.0f | %.1f | %.0f%% | %.1f | %.1f | %.2f | %.0f | %.0f |\n",
               b->name, kname, b->io.float16 ? "float16" : "float32", b->rows, b->rows / b->ix_s, b->rows / b->fb_s,
               b->ix_s / b->fb_s, 100 * b->wait_s / b->ix_s, pr, b->ceil, pr / b->ceil, b->bytes_ex, b->bytes_file);
    }
    printf("\n## Scoring (rank --index, graddot, top 10; kron 32x32 float16 index, k = %d; %d rows per chunk)\n\n",
           bf[0].k, R);
    printf("| N | M | rank total (s) | prepare (s) | score (s) | score GFLOP/s | sgemm (M x k)(k x R) | share | "
           "index read GB/s | read alone GB/s | share | queries/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < nidx; s++)
        for (int i = 0; i < sq[s]; i++) {
            score_fig *f = &sf[s][i];
            double rate = f->flops / f->score / 1e9, rd = ixbytes[s] / f->score / 1e9, rc = ixbytes[s] / read_s[s] / 1e9;
            printf("| %" PRId64 " | %d | %.2f | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.1f |\n",
                   bf[s].N, f->M, f->total, f->prep, f->score, rate, sg[i], rate / sg[i], rd, rc, rd / rc,
                   f->M / f->total);
        }
    printf("\n## Memory and size (each a fresh process)\n\n| N | index file (MB) | bytes/ex | build (s) | build ex/s | "
           "build peak RSS (MB) | scoring peak RSS (MB) |\n|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < nidx; s++)
        printf("| %" PRId64 " | %.0f | %.0f | %.1f | %.0f | %.0f | %.0f |\n", bf[s].N, ixbytes[s] / 1e6,
               ixbytes[s] / bf[s].N, bf[s].seconds, bf[s].N / bf[s].seconds, bf[s].rss_mb, srss[s]);
    if (nidx > 1)
    {
        char desc[256];
        infl_model *bm;
        if (infl_model_create(ctx, &(infl_model_spec){.kind = INFL_MODEL_MLP, .mlp = bspec}, 0, &bm) == INFL_OK) {
            infl_model_describe(bm, desc, sizeof desc);
            infl_model_free(bm);
            printf("\n(the %" PRId64 "-row index: model %s, synthetic data of 32 features; same k)\n", bf[1].N, desc);
        }
    }

    FILE *jf = json ? fopen(json, "w") : NULL;
    if (jf) {
        fprintf(jf, "{\"backend\": \"%s\", \"layers\": \"%s\", \"n\": %" PRId64 ", \"sgemm_2048_gflops\": %.3f, \"build\": [",
                infl_ctx_backend(ctx), layers, n, peak_big);
        for (int c = 0; c < nc; c++) {
            build_cfg *b = &cf[c];
            fprintf(jf, "%s{\"projection\": \"%s\", \"k\": %d, \"float16\": %d, \"rows\": %" PRId64 ", \"index_s\": %.4f, "
                        "\"wait_s\": %.4f, \"fb_s\": %.4f, \"project_s\": %.4f, \"project_gflop\": %.3f, "
                        "\"sgemm_shape_gflops\": %.3f, \"bytes_per_example\": %.1f, \"bytes_per_example_file\": %.1f}",
                    c ? ", " : "", b->name, b->k, b->io.float16, b->rows, b->ix_s, b->wait_s, b->fb_s, b->proj_s,
                    b->flops_p / 1e9, b->ceil, b->bytes_ex, b->bytes_file);
        }
        fprintf(jf, "], \"chunk_rows\": %d, \"score\": [", R);
        for (int s = 0, first = 1; s < nidx; s++)
            for (int i = 0; i < sq[s]; i++, first = 0)
                fprintf(jf, "%s{\"n\": %" PRId64 ", \"k\": %d, \"queries\": %d, \"total_s\": %.4f, \"prepare_s\": %.4f, "
                            "\"score_s\": %.4f, \"score_gflop\": %.3f, \"sgemm_shape_gflops\": %.3f, \"index_bytes\": %.0f, "
                            "\"read_alone_s\": %.4f, \"build_s\": %.3f, \"build_rss_mb\": %.1f, \"score_rss_mb\": %.1f}",
                        first ? "" : ", ", bf[s].N, bf[s].k, sf[s][i].M, sf[s][i].total, sf[s][i].prep, sf[s][i].score,
                        sf[s][i].flops / 1e9, sg[i], ixbytes[s], read_s[s], bf[s].seconds, bf[s].rss_mb, srss[s]);
        fprintf(jf, "]}\n");
        fclose(jf);
    }
    if (data == path) unlink(path);
    if (run == runp) unlink(runp);
    unlink(bigdata);
    unlink(bigrun);
    char res[600];
    snprintf(res, sizeof res, "%s/build.txt", dir);
    unlink(res);
    snprintf(res, sizeof res, "%s/score.txt", dir);
    unlink(res);
    rmdir(dir);
    infl_ctx_free(ctx);
    return 0;
}
