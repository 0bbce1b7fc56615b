/*
 * bench.c — `infl bench` (see bench.h): ceilings first, then a table of phases, each
 * timed as the median of repetitions after a warm-up and set beside the ceiling of
 * its own work, all on the context's backend.
 *
 * Structure:
 *  - a fixture shared by the phases (bench_fix): the model (a run file of C
 *    checkpoints of seeded random weights, their weights on the backend), `rows`
 *    train rows and the M queries on the backend, the per-example factors of the
 *    queries at every checkpoint and of one train sub-batch (B rows) at every
 *    checkpoint, and the score buffers;
 *  - a table of phases (phase_table below). Each entry has a setup that allocates
 *    what only it needs and counts its work into a bench_work (FLOPs, bytes, examples,
 *    and the ceiling: the GEMM shapes it calls with their counts, the bytes it reads
 *    from HDF5, or a measured ceiling body), a run (the timed body; it returns with
 *    its results complete, i.e. synchronised) and a teardown.
 *
 * Ceilings: a phase's ceiling time is the largest of (a) Σ count · (seconds of one
 * sgemm at that shape, measured here through the backend), (b) its HDF5 bytes at the
 * HDF5 read rate of the same file measured here, (c) its ceiling body (e.g. a streaming
 * read of the same score blocks for the top-k merge). Ceilings take the best of their
 * samples (what the machine can do), phases the median. The ratio is ceiling time /
 * measured time: 1 would be "as fast as its GEMMs alone".
 *
 * The score loops of the tracin/graddot, if and EK-FAC phases call rank's own layer
 * kernels (score_ghost_layer, score_contract_layer, score_lowrank_layer of
 * estimators/score.h) through the model seam,
 * on train factors that are computed once, so that they time scoring alone; the "rank"
 * phase times the whole streamed pipeline (infl_rank).
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"
#include "bench_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attrib.h"
#include "backend.h"
#include "core/rng.h"
#include "data/synth.h"
#include "estimators/ekfac.h"
#include "estimators/ihvp.h"
#include "models/mlp.h"
#include "models/train.h"
#include "sched/topk.h"
#include "store/store.h"

infl_bench_options infl_bench_options_default(void) {
    infl_bench_options o;
    memset(&o, 0, sizeof o);
    o.data = NULL;  // synthesise
    o.workdir = NULL;
    o.nlayers = 3;
    o.widths[0] = 784;
    o.widths[1] = 256;
    o.widths[2] = 128;
    o.widths[3] = 10;
    o.n = 60000;
    o.queries = 100;
    o.reps = 3;
    o.checkpoints = 5;
    o.rows = 0;  // min(n, 8192)
    o.hessian_samples = 1000;
    o.cg_iters = 10;
    o.top = 10;
    o.query_rank = 32;
    o.seed = 1;
    o.phases = NULL;  // all
    return o;
}

// ---- small helpers ----

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// "1,234,567" into buf.
const char *bench_group_digits(char *buf, size_t size, int64_t v) {
    char raw[32];
    snprintf(raw, sizeof raw, "%" PRId64, v < 0 ? -v : v);
    size_t len = strlen(raw), at = 0;
    if (v < 0 && at + 1 < size) buf[at++] = '-';
    for (size_t i = 0; i < len && at + 2 < size; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[at++] = ',';
        buf[at++] = raw[i];
    }
    buf[at] = 0;
    return buf;
}

void bench_add_gemm_batched(bench_work *w, int m, int n, int k, infl_trans ta, infl_trans tb, int batch,
                            double count) {
    for (int i = 0; i < w->ngemm; i++) {
        bench_gemm *g = &w->gemm[i];
        if (g->m == m && g->n == n && g->k == k && g->ta == ta && g->tb == tb && g->batch == batch) {
            g->count += count;
            return;
        }
    }
    if (w->ngemm < BENCH_MAX_GEMMS)
        w->gemm[w->ngemm++] =
            (bench_gemm){.m = m, .n = n, .k = k, .ta = ta, .tb = tb, .batch = batch, .count = count};
}

void bench_add_gemm(bench_work *w, int m, int n, int k, infl_trans ta, infl_trans tb, double count) {
    bench_add_gemm_batched(w, m, n, k, ta, tb, 0, count);
}

// ---- the fixture ----

// Waits for the backend's queued work (a download synchronises).
infl_status bench_sync(infl_ctx *ctx, bench_fix *f) {
    float v;
    return ctx->be->download(ctx, &v, f->one, sizeof v);
}

// One GEMM call of the shape (sgemm, or sgemm_batched of `batch` matrices), finished.
static infl_status gemm_call(infl_ctx *ctx, int m, int n, int k, infl_trans ta, infl_trans tb, int batch,
                             const float *A, const float *B, float *C) {
    int lda = ta == INFL_N ? k : m, ldb = tb == INFL_N ? n : k;
    if (batch > 0)
        return ctx->be->sgemm_batched(ctx, ta, tb, m, n, k, 1.0f, A, lda, (int64_t)m * k, B, ldb, (int64_t)k * n, 0.0f,
                                      C, n, (int64_t)m * n, batch);
    return ctx->be->sgemm(ctx, ta, tb, m, n, k, 1.0f, A, lda, B, ldb, 0.0f, C, n);
}

infl_status bench_time_gemm(infl_ctx *ctx, int m, int n, int k, infl_trans ta, infl_trans tb, int batch, double *out) {
    const infl_backend *be = ctx->be;
    infl_status rc = INFL_OK;
    size_t bt = batch > 0 ? (size_t)batch : 1;
    float *A = NULL, *B = NULL, *Cm = NULL, v;
    CHECK(infl_be_alloc_f(ctx, &A, bt * m * k, "a GEMM ceiling operand"));
    CHECK(infl_be_alloc_f(ctx, &B, bt * k * n, "a GEMM ceiling operand"));
    CHECK(infl_be_alloc_f(ctx, &Cm, bt * m * n, "a GEMM ceiling operand"));
    CHECK(be->fill(ctx, A, 0.01f, bt * m * k));
    CHECK(be->fill(ctx, B, 0.01f, bt * k * n));
    CHECK(be->fill(ctx, Cm, 0.0f, bt * m * n));
    // warm-up, and one call's time to size the samples (a download of C waits for the work)
    CHECK(gemm_call(ctx, m, n, k, ta, tb, batch, A, B, Cm));
    CHECK(be->download(ctx, &v, Cm, sizeof v));
    double t0 = infl_now();
    CHECK(gemm_call(ctx, m, n, k, ta, tb, batch, A, B, Cm));
    CHECK(be->download(ctx, &v, Cm, sizeof v));
    double t1 = infl_now() - t0;
    int inner = t1 > 0 ? (int)ceil(BENCH_GEMM_SAMPLE / t1) : 1000;
    if (inner < 1) inner = 1;
    if (inner > 1000) inner = 1000;
    // the best of many short samples: a ceiling is what the machine can do at this
    // shape (short samples, so that on a shared machine some miss the other work)
    double best = INFINITY, start = infl_now();
    for (int s = 0; s < 31 && (s < 3 || infl_now() - start < BENCH_GEMM_BUDGET); s++) {
        t0 = infl_now();
        for (int i = 0; i < inner; i++) CHECK(gemm_call(ctx, m, n, k, ta, tb, batch, A, B, Cm));
        CHECK(be->download(ctx, &v, Cm, sizeof v));
        double ts = (infl_now() - t0) / inner;
        best = ts < best ? ts : best;
    }
    *out = best;
done:
    infl_be_free(ctx, A);
    infl_be_free(ctx, B);
    infl_be_free(ctx, Cm);
    return rc;
}

infl_status bench_gemm_seconds(infl_ctx *ctx, bench_fix *f, const bench_gemm *g, double *out) {
    for (int i = 0; i < f->nrates; i++) {
        gemm_rate *r = &f->rates[i];
        if (r->m == g->m && r->n == g->n && r->k == g->k && r->ta == g->ta && r->tb == g->tb && r->batch == g->batch) {
            *out = r->seconds;
            return INFL_OK;
        }
    }
    FORWARD_IF_ERROR(bench_time_gemm(ctx, g->m, g->n, g->k, g->ta, g->tb, g->batch, out));
    if (f->nrates < (int)(sizeof f->rates / sizeof f->rates[0]))
        f->rates[f->nrates++] =
            (gemm_rate){.m = g->m, .n = g->n, .k = g->k, .ta = g->ta, .tb = g->tb, .batch = g->batch, .seconds = *out};
    return INFL_OK;
}

infl_status bench_gemms_seconds(infl_ctx *ctx, bench_fix *f, const bench_work *w, double *out) {
    *out = 0;
    for (int i = 0; i < w->ngemm; i++) {
        double s;
        FORWARD_IF_ERROR(bench_gemm_seconds(ctx, f, &w->gemm[i], &s));
        *out += w->gemm[i].count * s;
    }
    return INFL_OK;
}

// Per-example factors of rows X (b, D) at checkpoint c into work (forward, backward).
infl_status bench_factors(infl_ctx *ctx, bench_fix *f, int c, const float *X, const int32_t *y, int b,
                           infl_model_work *work) {
    infl_batch bt = {.b = b, .x = X, .y = y};
    return infl_model_factors(ctx, f->m, f->Wd[c], &bt, work);
}

// Copies the factors of every layer of `work` (b rows) into new buffers D[l], A[l].
static infl_status keep_factors(infl_ctx *ctx, bench_fix *f, const infl_model_work *work, int b, float **D, float **A) {
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        const float *Dl = work->D[l], *Al = work->A[l];
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &D[l], (size_t)b * dout, "factors"));
        FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &A[l], (size_t)b * din, "factors"));
        FORWARD_IF_ERROR(ctx->be->copy(ctx, D[l], Dl, (size_t)b * dout * sizeof(float)));
        FORWARD_IF_ERROR(ctx->be->copy(ctx, A[l], Al, (size_t)b * din * sizeof(float)));
    }
    return INFL_OK;
}

static void fix_free(infl_ctx *ctx, bench_fix *f) {
    if (f->Wd)
        for (int c = 0; c < f->C; c++) infl_be_free(ctx, f->Wd[c]);
    for (int i = 0; i < f->C * f->L; i++) {
        if (f->qD) infl_be_free(ctx, f->qD[i]);
        if (f->qA) infl_be_free(ctx, f->qA[i]);
        if (f->tD) infl_be_free(ctx, f->tD[i]);
        if (f->tA) infl_be_free(ctx, f->tA[i]);
    }
    free(f->Wd);
    free(f->qD);
    free(f->qA);
    free(f->tD);
    free(f->tA);
    infl_be_free(ctx, f->X);
    infl_be_free(ctx, f->y);
    infl_be_free(ctx, f->qX);
    infl_be_free(ctx, f->qy);
    infl_be_free(ctx, f->Sd);
    infl_be_free(ctx, f->T1);
    infl_be_free(ctx, f->T2);
    infl_be_free(ctx, f->one);
    if (f->m) {
        infl_model_work_free(ctx, f->m, f->work);
        infl_model_work_free(ctx, f->m, f->qwork);
    }
    infl_model_free(f->m);
    store_split_close(f->train);
    store_split_close(f->query);
    if (f->run[0]) unlink(f->run);
    if (f->factors[0]) unlink(f->factors);
    if (f->synth_path[0]) unlink(f->synth_path);
}

// Writes the run file: C checkpoints of seeded random weights (He initialisation
// halved), lr 0.1 each; and uploads them.
static infl_status make_run(infl_ctx *ctx, bench_fix *f) {
    infl_status rc = INFL_OK;
    infl_runw *rw = NULL;
    float *p = infl_malloc(ctx, f->P * sizeof(float), "the parameters");
    f->Wd = infl_calloc(ctx, (size_t)f->C, sizeof(float *), "checkpoint weights");
    GOTO_NOMEM_IF(!p || !f->Wd);
    CHECK(store_run_create(ctx, f->run, 1, &f->spec, f->train_ref, "sgd", f->o->seed, &rw));
    for (int c = 0; c < f->C; c++) {
        infl_mlp_init(&f->spec.mlp, f->o->seed + (uint64_t)c, 0, p);
        for (size_t i = 0; i < f->P; i++) p[i] *= 0.5f;
        CHECK(store_run_add_checkpoint(ctx, rw, 100 * (int64_t)(c + 1), c + 1, 0.1, NAN, p));
        CHECK(infl_be_alloc_f(ctx, &f->Wd[c], f->P, "checkpoint weights"));
        CHECK(ctx->be->upload(ctx, f->Wd[c], p, f->P * sizeof(float)));
    }
    rc = store_run_commit(ctx, rw);
    rw = NULL;
done:
    store_run_abort(rw);
    free(p);
    return rc;
}

// Reads rows [0, n) of a split into new backend buffers X (n, D) and y (n).
static infl_status load_rows(infl_ctx *ctx, bench_fix *f, infl_split *s, int64_t n, float **X, int32_t **y) {
    infl_status rc = INFL_OK;
    float *hx = infl_malloc(ctx, (size_t)n * f->D * sizeof(float), "rows");
    int32_t *hy = infl_malloc(ctx, (size_t)n * sizeof(int32_t), "labels");
    GOTO_NOMEM_IF(!hx || !hy);
    CHECK(store_split_read(ctx, s, 0, n, hx, hy, NULL));
    CHECK(infl_model_check_labels(ctx, f->m, s, hy, 0, n));
    CHECK(infl_be_alloc_f(ctx, X, (size_t)n * f->D, "rows"));
    CHECK(ctx->be->alloc(ctx, (size_t)n * sizeof(int32_t), (void **)y));
    CHECK(ctx->be->upload(ctx, *X, hx, (size_t)n * f->D * sizeof(float)));
    CHECK(ctx->be->upload(ctx, *y, hy, (size_t)n * sizeof(int32_t)));
done:
    free(hx);
    free(hy);
    return rc;
}

static infl_status fix_open(infl_ctx *ctx, bench_fix *f, const infl_bench_options *o, infl_bench_report *rep) {
    infl_status rc = INFL_OK;
    const infl_backend *be = ctx->be;
    f->o = o;
    f->spec.kind = INFL_MODEL_MLP;
    f->spec.mlp = (infl_mlp_spec){.L = o->nlayers, .act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE, .wd = 1e-4};
    for (int l = 0; l <= o->nlayers && l <= INFL_MAX_LAYERS; l++) f->spec.mlp.widths[l] = o->widths[l];
    FORWARD_IF_ERROR(infl_model_create(ctx, &f->spec, 0, &f->m));
    f->L = f->m->nlayers;
    f->P = f->m->nparams;
    f->C = o->checkpoints;
    f->M = o->queries;
    f->B = BENCH_B;
    f->D = f->spec.mlp.widths[0];
    const int K = f->m->outputs;

    const char *dir = o->workdir && *o->workdir ? o->workdir : getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(f->run, sizeof f->run, "%s/infl-bench-%ld.run.h5", dir, (long)getpid());
    snprintf(f->factors, sizeof f->factors, "%s/infl-bench-%ld.factors.h5", dir, (long)getpid());
    if (o->data && *o->data) {
        snprintf(f->data, sizeof f->data, "%s", o->data);
        snprintf(rep->data, sizeof rep->data, "%s", o->data);
    } else {
        // synthesise: n train rows of D features, K classes, M test rows
        snprintf(f->data, sizeof f->data, "%s/infl-bench-%ld.h5", dir, (long)getpid());
        infl_synth_options so = infl_synth_options_default();
        so.n = o->n;
        so.d = f->D;
        so.classes = K;
        so.test = f->M;
        so.seed = o->seed;
        so.force = 1;
        double t0 = infl_now();
        snprintf(f->synth_path, sizeof f->synth_path, "%s", f->data);
        FORWARD_IF_ERROR(infl_synth(ctx, &so, f->data));
        rep->synth_seconds = infl_now() - t0;
        snprintf(rep->data, sizeof rep->data, "%.3900s (synthesised: %d classes, seed %" PRIu64 ")", f->data, K, o->seed);
    }

    // the train split (the first n rows) and the queries /test[0:M]
    infl_dataref ref;
    snprintf(f->train_ref, sizeof f->train_ref, "%s:/train", f->data);
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, f->train_ref, &ref));
    FORWARD_IF_ERROR(store_split_open(ctx, &ref, &f->train));
    int64_t total = store_split_info(f->train)->n;
    if (o->n > 0 && o->n < total) {
        store_split_close(f->train);
        f->train = NULL;
        snprintf(f->train_ref, sizeof f->train_ref, "%s:/train[0:%" PRId64 "]", f->data, o->n);
        FORWARD_IF_ERROR(infl_dataref_parse(ctx, f->train_ref, &ref));
        FORWARD_IF_ERROR(store_split_open(ctx, &ref, &f->train));
    }
    FORWARD_IF_ERROR(infl_model_check_data(ctx, f->m, f->train));
    f->N = store_split_info(f->train)->n;
    RETURN_IF(ctx, store_split_info(f->train)->y_kind != INFL_Y_CLASS, INFL_E_FORMAT,
              "%s: the benchmark's model is a classifier (softmax_ce) and needs class labels", f->train_ref);
    snprintf(f->query_ref, sizeof f->query_ref, "%s:/test[0:%d]", f->data, f->M);
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, f->query_ref, &ref));
    FORWARD_IF_ERROR(store_split_open(ctx, &ref, &f->query));
    FORWARD_IF_ERROR(infl_model_check_data(ctx, f->m, f->query));
    RETURN_IF(ctx, o->top > f->N, INFL_E_ARG, "--top %d is larger than the %" PRId64 " training rows", o->top, f->N);

    f->R = o->rows > 0 ? o->rows : 8192;
    if (f->R > f->N) f->R = f->N;
    if (f->R >= f->B) f->R -= f->R % f->B;  // whole sub-batches

    FORWARD_IF_ERROR(be->alloc(ctx, sizeof(float), (void **)&f->one));
    FORWARD_IF_ERROR(be->fill(ctx, f->one, 0.0f, 1));
    FORWARD_IF_ERROR(make_run(ctx, f));
    FORWARD_IF_ERROR(load_rows(ctx, f, f->train, f->R, &f->X, &f->y));
    FORWARD_IF_ERROR(load_rows(ctx, f, f->query, f->M, &f->qX, &f->qy));
    FORWARD_IF_ERROR(infl_model_work_create(ctx, f->m, f->B, &f->work));
    FORWARD_IF_ERROR(infl_model_work_create(ctx, f->m, f->M, &f->qwork));
    size_t cl = (size_t)f->C * f->L;
    f->qD = infl_calloc(ctx, cl, sizeof(float *), "factors");
    f->qA = infl_calloc(ctx, cl, sizeof(float *), "factors");
    f->tD = infl_calloc(ctx, cl, sizeof(float *), "factors");
    f->tA = infl_calloc(ctx, cl, sizeof(float *), "factors");
    if (!f->qD || !f->qA || !f->tD || !f->tA) return INFL_E_NOMEM;
    int b0 = f->b = f->R < f->B ? (int)f->R : f->B;
    for (int c = 0; c < f->C; c++) {
        FORWARD_IF_ERROR(bench_factors(ctx, f, c, f->qX, f->qy, f->M, f->qwork));
        FORWARD_IF_ERROR(keep_factors(ctx, f, f->qwork, f->M, f->qD + c * f->L, f->qA + c * f->L));
        FORWARD_IF_ERROR(bench_factors(ctx, f, c, f->X, f->y, b0, f->work));
        FORWARD_IF_ERROR(keep_factors(ctx, f, f->work, b0, f->tD + c * f->L, f->tA + c * f->L));
    }
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->Sd, (size_t)f->M * f->B, "a score block"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->T1, (size_t)f->M * f->B, "a score block"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->T2, (size_t)f->M * f->B, "a score block"));
    return rc;
}

// ---- ceilings of the whole run ----

// Reads the train split in shards of BENCH_READ_MB on this thread: the best seconds
// of reps reads after a warm-up.
static infl_status hdf5_read_seconds(infl_ctx *ctx, bench_fix *f, double *out) {
    infl_status rc = INFL_OK;
    int64_t S = infl_shard_rows(f->N, f->D, 1, BENCH_READ_MB, 1);
    float *x = infl_malloc(ctx, (size_t)S * f->D * sizeof(float), "a shard");
    int32_t *y = infl_malloc(ctx, (size_t)S * sizeof(int32_t), "a shard");
    double t[64];
    GOTO_NOMEM_IF(!x || !y);
    for (int r = -1; r < f->o->reps; r++) {
        double t0 = infl_now();
        for (int64_t r0 = 0; r0 < f->N; r0 += S) {
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
            CHECK(store_split_read(ctx, f->train, r0, r0 + S <= f->N ? S : f->N - r0, x, y, NULL));
        }
        if (r >= 0) t[r] = infl_now() - t0;
    }
    *out = median(t, f->o->reps);
    *out = t[0];  // median() sorted t: the best
done:
    free(x);
    free(y);
    return rc;
}

// ---- phase: per-example gradient factors (forward + backward) ----

// Forward and backward of `rows` rows in sub-batches of b.
void bench_fb_work(const bench_fix *f, bench_work *w, double rows, int b) {
    double blocks = rows / b;
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        bench_add_gemm(w, b, dout, din, INFL_N, INFL_T, blocks);  // Z_l = A_{l-1} W_lᵀ
        if (l > 0) bench_add_gemm(w, b, din, dout, INFL_N, INFL_N, blocks);  // Δ_l W_l
        w->flops += (l > 0 ? 4.0 : 2.0) * rows * din * dout;
    }
}

static infl_status grad_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    char r[32];
    snprintf(w->what, sizeof w->what, "%s rows, 1 checkpoint", bench_group_digits(r, sizeof r, f->R));
    bench_fb_work(f, w, (double)f->R, f->b);
    w->examples = (double)f->R;
    w->bytes = (double)f->R * f->D * 4;
    return INFL_OK;
}

static infl_status grad_run(infl_ctx *ctx, bench_fix *f) {
    for (int64_t r0 = 0; r0 < f->R; r0 += f->B) {
        int b = (int)(r0 + f->B <= f->R ? f->B : f->R - r0);
        FORWARD_IF_ERROR(bench_factors(ctx, f, 0, f->X + (size_t)r0 * f->D, f->y + r0, b, f->work));
    }
    return bench_sync(ctx, f);
}

// ---- phases: TracIn and graddot scoring by the ghost dot product ----

static void ghost_work(const bench_fix *f, bench_work *w, int nck) {
    char r[32], m[32];
    double blocks = (double)f->R / f->b;
    snprintf(w->what, sizeof w->what, "%s rows x %s queries x %d ckpt%s", bench_group_digits(r, sizeof r, f->R),
             bench_group_digits(m, sizeof m, f->M), nck, nck > 1 ? "s" : "");
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        bench_add_gemm(w, f->M, f->b, dout, INFL_N, INFL_T, blocks * nck);  // Δ_Q Δ_Zᵀ
        bench_add_gemm(w, f->M, f->b, din, INFL_N, INFL_T, blocks * nck);   // A_Q A_Zᵀ
        w->flops += nck * (double)f->R * (2.0 * f->M * (double)(din + dout) + 3.0 * f->M);
    }
    w->examples = (double)f->R;
}

// Score blocks of all R rows against the queries over nck checkpoints, as rank.c's
// score_block: S += w_c (Δ_Q Δ_Zᵀ) ∘ (A_Q A_Zᵀ + 1) per layer (train factors of
// sub-batch 0 stand in for every sub-batch).
static infl_status ghost_run(infl_ctx *ctx, bench_fix *f, int nck) {
    const infl_backend *be = ctx->be;
    const int M = f->M;
    for (int64_t r0 = 0; r0 < f->R; r0 += f->B) {
        int b = (int)(r0 + f->B <= f->R ? f->B : f->R - r0);
        FORWARD_IF_ERROR(be->fill(ctx, f->Sd, 0.0f, (size_t)M * b));
        for (int c = 0; c < nck; c++)
            for (int l = 0; l < f->L; l++) {
                int i = c * f->L + l;
                FORWARD_IF_ERROR(score_ghost_layer(ctx, f->Sd, f->T1, f->T2, &f->m->layer[l], f->qD[i], f->qA[i],
                                                   f->tD[i], f->tA[i], M, b, 0.1f));
            }
    }
    return bench_sync(ctx, f);
}

static infl_status tracin_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    ghost_work(f, w, f->C);
    return INFL_OK;
}
static infl_status tracin_run(infl_ctx *ctx, bench_fix *f) { return ghost_run(ctx, f, f->C); }

static infl_status graddot_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    ghost_work(f, w, 1);
    return INFL_OK;
}
static infl_status graddot_run(infl_ctx *ctx, bench_fix *f) { return ghost_run(ctx, f, 1); }

// ---- phase: IF query preconditioning, (GGN + λI)⁻¹ by CG ----

// The query gradients f->G (M, lsize) at checkpoint 0, in the layer space (the MLP's
// parameter vector), and room for their preconditioned versions f->Xs.
infl_status bench_query_grads(infl_ctx *ctx, bench_fix *f) {
    const int M = f->M;
    size_t P = f->m->lsize;
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->G, (size_t)M * P, "query gradients"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->Xs, (size_t)M * P, "preconditioned query gradients"));
    FORWARD_IF_ERROR(bench_factors(ctx, f, 0, f->qX, f->qy, M, f->qwork));
    float *tmp = NULL;
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &tmp, (size_t)M * score_grad_tmp_cols(f->m), "query layer gradients"));
    infl_status rc = score_full_grads(ctx, f->G, tmp, f->m, f->qwork, M);
    infl_be_free(ctx, tmp);
    return rc;
}

static infl_status ifprep_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    const int M = f->M;
    FORWARD_IF_ERROR(infl_model_hvp_create(ctx, f->m, f->Wd[0], f->train, f->o->hessian_samples, INFL_HESS_GGN, 0,
                                           1024.0, &f->op));
    FORWARD_IF_ERROR(bench_query_grads(ctx, f));

    // work: cg_iters batched GGN-vector products of M vectors over h rows; per row and
    // vector, layer l costs 4 d_in d_out FLOPs (R-forward 2, weight R-gradient 2), plus
    // 4 more for l > 0 (RA W in the R-forward, RΔ W back)
    int64_t h = infl_hvp_rows(f->op), sh = infl_hvp_shard_rows(f->op);
    if (sh > h) sh = h;
    double shards = ceil((double)h / (double)sh), calls = (double)f->o->cg_iters * M * shards;
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        bench_add_gemm(w, (int)sh, dout, din, INFL_N, INFL_T, calls * (l > 0 ? 2 : 1));
        bench_add_gemm(w, dout, din, (int)sh, INFL_T, INFL_N, calls);
        if (l > 0) bench_add_gemm(w, (int)sh, din, dout, INFL_N, INFL_N, calls);
        w->flops += (double)f->o->cg_iters * M * (double)h * (l > 0 ? 8.0 : 4.0) * din * dout;
    }
    char m[32], hr[32];
    snprintf(w->what, sizeof w->what, "%s queries, GGN on %s rows, %d CG iterations", bench_group_digits(m, sizeof m, M),
             bench_group_digits(hr, sizeof hr, h), f->o->cg_iters);
    w->examples = M;
    return INFL_OK;
}

static infl_status ifprep_run(infl_ctx *ctx, bench_fix *f) {
    infl_ihvp_options io = infl_ihvp_options_default();
    io.solver = INFL_SOLVER_CG;
    io.damping = 0.01;
    io.cg_iters = f->o->cg_iters;
    io.cg_tol = 0;  // every iteration, so that the work is what was counted
    io.check_residual = 0;
    FORWARD_IF_ERROR(infl_ihvp_solve(ctx, f->op, &io, f->G, f->Xs, f->M, NULL));
    return bench_sync(ctx, f);
}

void bench_ifprep_teardown(infl_ctx *ctx, bench_fix *f) {
    infl_hvp_free(ctx, f->op);
    infl_be_free(ctx, f->G);
    infl_be_free(ctx, f->Xs);
    f->op = NULL;
    f->G = f->Xs = NULL;
}

// ---- phase: IF scoring by contraction with the preconditioned queries ----

infl_status bench_ifscore_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    int maxin = infl_model_max_in(f->m);
    size_t P = f->m->lsize;
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->V, (size_t)f->M * P, "preconditioned queries"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &f->Gz, (size_t)f->B * maxin, "a contraction block"));
    FORWARD_IF_ERROR(ctx->be->fill(ctx, f->V, 1e-3f, (size_t)f->M * P));
    double blocks = (double)f->R / f->b;
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        bench_add_gemm(w, f->M, f->b, dout, INFL_N, INFL_T, blocks);                  // bias: V_b Δ_Zᵀ
        bench_add_gemm(w, f->b, din, dout, INFL_N, INFL_N, blocks * f->M);             // Δ_Z V_q,W per query
        w->flops += (double)f->R / f->b * score_contract_flops(&f->m->layer[l], f->M, f->b);
    }
    char r[32], m[32];
    snprintf(w->what, sizeof w->what, "%s rows x %s queries", bench_group_digits(r, sizeof r, f->R),
             bench_group_digits(m, sizeof m, f->M));
    w->examples = (double)f->R;
    return INFL_OK;
}

// rank's contraction for if: S[q, :] += rowdot(Δ_Z V_q,W, A_Z) + Δ_Z v_q,b.
infl_status bench_ifscore_run(infl_ctx *ctx, bench_fix *f) {
    const infl_backend *be = ctx->be;
    const int M = f->M;
    for (int64_t r0 = 0; r0 < f->R; r0 += f->B) {
        int b = (int)(r0 + f->B <= f->R ? f->B : f->R - r0);
        FORWARD_IF_ERROR(be->fill(ctx, f->Sd, 0.0f, (size_t)M * b));
        for (int l = 0; l < f->L; l++)
            FORWARD_IF_ERROR(score_contract_layer(ctx, f->Sd, f->Gz, &f->m->layer[l], f->V + f->m->loff[l], f->m->lsize,
                                                  f->tD[l], f->tA[l], M, b));
    }
    return bench_sync(ctx, f);
}

void bench_ifscore_teardown(infl_ctx *ctx, bench_fix *f) {
    infl_be_free(ctx, f->V);
    infl_be_free(ctx, f->Gz);
    f->V = f->Gz = NULL;
}

// ---- phase: top-k merge ----

static infl_status topk_ceiling(infl_ctx *ctx, bench_fix *f);

// Score blocks (M, S) in host memory, as rank pushes them: S = rank's shard rows;
// nblocks distinct blocks of N(0,1) scores (at most BENCH_TOPK_MB), pushed in turn
// until N columns are covered.
static infl_status topk_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    const int M = f->M;
    f->S = infl_shard_rows(f->N, f->D + M, 0, 64, f->B);
    int64_t need = (f->N + f->S - 1) / f->S;
    int64_t cap = (int64_t)(BENCH_TOPK_MB * 1048576.0 / (4.0 * M * (double)f->S));
    if (cap < 1) cap = 1;
    f->nblocks = (int)(need < cap ? need : cap);
    size_t per = (size_t)M * f->S;
    f->hs = infl_malloc(ctx, per * f->nblocks * sizeof(float), "top-k score blocks");
    if (!f->hs) return INFL_E_NOMEM;
    const uint64_t seed = f->o->seed;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)(per * f->nblocks); i++)
        f->hs[i] = (float)infl_rng_normal(seed, INFL_RNG_SUBSET, (uint64_t)i, 77);
    char n[32], m[32], s[32];
    snprintf(w->what, sizeof w->what, "%s columns x %s queries, k = %d, blocks of %s", bench_group_digits(n, sizeof n, f->N),
             bench_group_digits(m, sizeof m, M), f->o->top, bench_group_digits(s, sizeof s, f->S));
    w->bytes = 4.0 * M * (double)f->N;
    w->examples = (double)f->N;
    w->ceiling_run = topk_ceiling;
    w->ceiling_name = "one streaming read of its scores";
    return INFL_OK;
}

static infl_status topk_run(infl_ctx *ctx, bench_fix *f) {
    infl_topk *t = NULL;
    FORWARD_IF_ERROR(infl_topk_create(ctx, f->M, f->o->top, &t));
    infl_status rc = INFL_OK;
    int g = 0;
    for (int64_t c0 = 0; c0 < f->N && rc == INFL_OK; c0 += f->S) {
        int nb = (int)(c0 + f->S <= f->N ? f->S : f->N - c0);
        rc = infl_topk_push(ctx, t, f->hs + (size_t)g * f->M * f->S, f->M, nb, (int)f->S, c0);
        g = (g + 1) % f->nblocks;
    }
    infl_topk_free(t);
    return rc;
}

// Its ceiling: one streaming read of the same blocks, parallel over queries when the
// merge is (topk.c: M·nb >= 2^15 and M > 1): the merge cannot beat reading its input
// once.
static infl_status topk_ceiling(infl_ctx *ctx, bench_fix *f) {
    (void)ctx;
    double total = 0;
    int g = 0;
    for (int64_t c0 = 0; c0 < f->N; c0 += f->S) {
        int nb = (int)(c0 + f->S <= f->N ? f->S : f->N - c0);
        const float *blk = f->hs + (size_t)g * f->M * f->S;
        double sum = 0;
        int par = (int64_t)f->M * nb >= (1 << 15) && f->M > 1;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (par)
        for (int q = 0; q < f->M; q++) {
            float m = -INFINITY;
            const float *row = blk + (size_t)q * f->S;
            for (int j = 0; j < nb; j++) m = row[j] > m ? row[j] : m;
            sum += m;
        }
        total += sum;
        g = (g + 1) % f->nblocks;
    }
    f->sink = total;
    return INFL_OK;
}

static void topk_teardown(infl_ctx *ctx, bench_fix *f) {
    (void)ctx;
    free(f->hs);
    f->hs = NULL;
}

// ---- phase: the whole streamed rank (TracIn over C checkpoints) from HDF5 ----

static infl_status rank_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    // rank.c: per sub-batch of b train rows and per checkpoint, forward + backward and
    // the ghost-dot score block (as bench_fb_work and ghost_work count them)
    int b = f->N < f->B ? (int)f->N : f->B;
    double blocks = (double)f->N / b;
    for (int c = 0; c < f->C; c++) bench_fb_work(f, w, (double)f->N, b);
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        bench_add_gemm(w, f->M, b, dout, INFL_N, INFL_T, blocks * f->C);
        bench_add_gemm(w, f->M, b, din, INFL_N, INFL_T, blocks * f->C);
        w->flops += f->C * (double)f->N * (2.0 * f->M * (double)(din + dout) + 3.0 * f->M);
    }
    w->io_bytes = (double)f->N * (f->D + 1) * 4.0;
    w->bytes = w->io_bytes;
    w->examples = (double)f->N;
    char n[32], m[32];
    snprintf(w->what, sizeof w->what, "tracin, %s rows from HDF5 x %s queries x %d ckpts",
             bench_group_digits(n, sizeof n, f->N), bench_group_digits(m, sizeof m, f->M), f->C);
    return INFL_OK;
}

static infl_status rank_run(infl_ctx *ctx, bench_fix *f) {
    infl_rank_options ro = infl_rank_options_default();
    ro.run = f->run;
    ro.train = f->train_ref;
    ro.query = f->query_ref;
    ro.method = INFL_METHOD_TRACIN;
    ro.top = f->o->top;
    infl_rank_result *res = NULL;
    infl_status rc = infl_rank(ctx, &ro, &res);
    infl_rank_result_free(res);
    return rc;
}


// ---- the phase table ----
//
// Phases run in this order; `infl bench --phases a,b` picks some. To add a phase,
// append an entry: setup counts its work into a bench_work (FLOPs and bytes from the
// shapes, examples processed, and the ceiling: the GEMM shapes it calls with bench_add_gemm,
// the bytes it reads from HDF5 in io_bytes, and/or a ceiling_run body timed like the
// phase), run is the timed body (it must end synchronised: bench_sync; or it sets
// f->timed to the seconds of its part of a larger call), teardown frees what setup
// made. The fixture (bench_fix) offers the random-weight run (f->run, and
// f->Wd[c] on the backend), the train split (f->train, f->train_ref), R = f->R train
// rows on the backend (f->X, f->y), the queries (f->qX, f->qy, f->query_ref), the
// query factors f->qD/f->qA and the factors of train sub-batch 0 f->tD/f->tA at every
// checkpoint (index c * L + l), and (M, B) score buffers f->Sd, f->T1, f->T2.
static const bench_phase_def phase_table[] = {
    {"grad", "per-example gradient factors (forward + backward)", grad_setup, grad_run, NULL},
    {"tracin", "TracIn scoring (ghost dot)", tracin_setup, tracin_run, NULL},
    {"graddot", "graddot scoring (ghost dot)", graddot_setup, graddot_run, NULL},
    {"if_prepare", "IF query preconditioning (GGN + CG)", ifprep_setup, ifprep_run, bench_ifprep_teardown},
    {"if_score", "IF scoring (contraction)", bench_ifscore_setup, bench_ifscore_run, bench_ifscore_teardown},
    {"topk", "top-k merge", topk_setup, topk_run, topk_teardown},
    {"rank", "whole streamed rank from HDF5", rank_setup, rank_run, NULL},
    {"ekfac_cov", "EK-FAC covariance pass (A, S), from HDF5", bench_ekcov_setup, bench_ekcov_run, NULL},
    {"ekfac_eig", "EK-FAC eigendecomposition (float64)", bench_ekeig_setup, bench_ekeig_run, NULL},
    {"ekfac_lambda", "EK-FAC eigenvalue-correction pass, from HDF5", bench_eklam_setup, bench_eklam_run, NULL},
    {"ekfac_prepare", "EK-FAC query preconditioning", bench_ekprep_setup, bench_ekprep_run, bench_ekpre_teardown},
    {"ekfac_lowrank", "EK-FAC rank-r query factors (SVD)", bench_eklow_setup, bench_eklow_run, bench_ekpre_teardown},
    {"ekfac_score", "EK-FAC scoring, full rank (the IF contraction)", bench_ekscore_setup, bench_ifscore_run, bench_ifscore_teardown},
    {"ekfac_score_r", "EK-FAC scoring, rank-r queries", bench_ekscorer_setup, bench_ekscorer_run, bench_ekpre_teardown},
};
#define NPHASES ((int)(sizeof phase_table / sizeof phase_table[0]))

static const char *table_names(const bench_phase_def *table, int n, char *buf, size_t size) {
    if (!size) return buf;
    buf[0] = 0;
    for (int i = 0; i < n; i++) snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? "," : "", table[i].name);
    return buf;
}

const char *infl_bench_phase_names(char *buf, size_t size) { return table_names(phase_table, NPHASES, buf, size); }

const char *infl_bench_lm_phase_names(char *buf, size_t size) {
    return table_names(bench_lm_phases, bench_lm_nphases, buf, size);
}

// Which phases of the table (n of them) to run: sel[i] = 1 for those named in `list`
// (NULL / "all": every one).
static infl_status select_phases(infl_ctx *ctx, const bench_phase_def *table, int n, const char *list, int *sel,
                                 int *count) {
    *count = 0;
    if (!list || !*list || strcmp(list, "all") == 0) {
        for (int i = 0; i < n; i++) sel[i] = 1;
        *count = n;
        return INFL_OK;
    }
    for (int i = 0; i < n; i++) sel[i] = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(t, table[i].name) == 0) found = i;
        char names[512];
        RETURN_IF(ctx, found < 0, INFL_E_ARG, "--phases: unknown phase '%s'; the phases are %s", t,
                  table_names(table, n, names, sizeof names));
        if (!sel[found]) (*count)++;
        sel[found] = 1;
    }
    RETURN_IF(ctx, *count == 0, INFL_E_ARG, "--phases: no phase named");
    return INFL_OK;
}

// Seconds of `body` over reps after one warm-up: the median, or the best when `best`
// (a ceiling is what the machine can do).
static infl_status time_body(infl_ctx *ctx, bench_fix *f, infl_status (*body)(infl_ctx *, bench_fix *), int best,
                             double *out) {
    double t[64];
    for (int r = -1; r < f->o->reps; r++) {
        RETURN_IF_CANCELLED(ctx);
        f->timed = -1;
        double t0 = infl_now();
        FORWARD_IF_ERROR(body(ctx, f));
        double dt = infl_now() - t0;
        if (r >= 0) t[r] = f->timed >= 0 ? f->timed : dt;
    }
    *out = median(t, f->o->reps);
    if (best) *out = t[0];  // median() sorted t
    return INFL_OK;
}

// Sets up, times and tears down one phase into ph.
static infl_status run_phase(infl_ctx *ctx, bench_fix *f, const bench_phase_def *d, double hdf5_bps,
                             infl_bench_phase *ph) {
    bench_work w;
    memset(&w, 0, sizeof w);
    snprintf(ph->name, sizeof ph->name, "%s", d->name);
    snprintf(ph->title, sizeof ph->title, "%s", d->title);
    infl_status rc = d->setup(ctx, f, &w);
    double gemm_s = 0, io_s = 0, own_s = 0;
    if (rc == INFL_OK) rc = time_body(ctx, f, d->run, 0, &ph->seconds);
    if (rc == INFL_OK) rc = bench_gemms_seconds(ctx, f, &w, &gemm_s);
    if (rc == INFL_OK && w.ceiling_run) rc = time_body(ctx, f, w.ceiling_run, 1, &own_s);
    if (d->teardown) d->teardown(ctx, f);
    FORWARD_IF_ERROR(rc);
    if (w.io_bytes > 0 && hdf5_bps > 0) io_s = w.io_bytes / hdf5_bps;
    snprintf(ph->what, sizeof ph->what, "%s", w.what);
    ph->flops = w.flops;
    ph->bytes = w.bytes;
    ph->examples = w.examples;
    ph->rate_is_flops = w.flops > 0;
    ph->ceiling_seconds = fmax(gemm_s, fmax(io_s, own_s));
    ph->ratio = ph->seconds > 0 ? ph->ceiling_seconds / ph->seconds : 0;
    if (w.ceiling_name)
        snprintf(ph->ceiling, sizeof ph->ceiling, "%s", w.ceiling_name);
    else if (gemm_s > 0 && io_s > 0)
        snprintf(ph->ceiling, sizeof ph->ceiling, "max(sgemm at its shapes %.3g s, HDF5 read %.3g s)", gemm_s, io_s);
    else if (gemm_s > 0)
        snprintf(ph->ceiling, sizeof ph->ceiling, "sgemm at its shapes");
    else if (io_s > 0)
        snprintf(ph->ceiling, sizeof ph->ceiling, "HDF5 read");
    else if (own_s > 0)
        snprintf(ph->ceiling, sizeof ph->ceiling, "its ceiling body");
    return INFL_OK;
}

// ---- the pipeline ----

static infl_status check_options(infl_ctx *ctx, const infl_bench_options *o) {
    RETURN_IF(ctx, !o, INFL_E_ARG, "infl_bench: no options");
    RETURN_IF(ctx, o->nlayers < 1 || o->nlayers > INFL_MAX_LAYERS, INFL_E_ARG,
              "--model: expected 2 to %d widths, e.g. 784,256,128,10", INFL_MAX_LAYERS + 1);
    RETURN_IF(ctx, o->n < 0 || (!o->data && !o->run && o->n < 1), INFL_E_ARG, "--n: expected at least 1 training row, got %" PRId64,
              o->n);
    RETURN_IF(ctx, o->queries < 1 || o->queries > 100000, INFL_E_ARG, "--queries: expected 1 to 100000, got %d",
              o->queries);
    RETURN_IF(ctx, o->reps < 1 || o->reps > 64, INFL_E_ARG, "--reps: expected 1 to 64, got %d", o->reps);
    RETURN_IF(ctx, o->checkpoints < 1 || o->checkpoints > 1000, INFL_E_ARG, "--checkpoints: expected 1 to 1000, got %d",
              o->checkpoints);
    RETURN_IF(ctx, o->rows < 0, INFL_E_ARG, "--rows: expected 0 (automatic) or more");
    RETURN_IF(ctx, o->hessian_samples < 1, INFL_E_ARG, "--hessian-samples: expected at least 1");
    RETURN_IF(ctx, o->cg_iters < 1, INFL_E_ARG, "--cg-iters: expected at least 1");
    RETURN_IF(ctx, o->top < 1, INFL_E_ARG, "--top: expected at least 1");
    return INFL_OK;
}

infl_status infl_bench(infl_ctx *ctx, const infl_bench_options *o, infl_bench_report **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "infl_bench: out is NULL");
    *out = NULL;
    FORWARD_IF_ERROR(check_options(ctx, o));
    const int lm = o->run && *o->run;
    const bench_phase_def *table = lm ? bench_lm_phases : phase_table;
    const int ntable = lm ? bench_lm_nphases : NPHASES;
    int sel[INFL_BENCH_MAX_PHASES], count = 0;
    FORWARD_IF_ERROR(select_phases(ctx, table, ntable, o->phases, sel, &count));
    infl_bench_report *rep = infl_calloc(ctx, 1, sizeof *rep, "the report");
    bench_fix *f = infl_calloc(ctx, 1, sizeof *f, "the benchmark's state");
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!rep || !f);
    infl_progress(ctx, "bench", 0, (uint64_t)count + 1, "data, model, ceilings");
    if (lm) {
        CHECK(bench_lm_open(ctx, f, o, rep));
    } else {
        CHECK(fix_open(ctx, f, o, rep));
        infl_model_describe(f->m, rep->model, sizeof rep->model);
        rep->params = f->P;
        rep->n = f->N;
        rep->queries = f->M;
        rep->checkpoints = f->C;
        rep->rows = f->R;
    }
    snprintf(rep->backend, sizeof rep->backend, "%s", infl_ctx_backend(ctx));
    rep->reps = o->reps;

    // ceilings of the whole run (a language model's documents are a few MB of tokens: no HDF5 ceiling)
    double s, hdf5_bps = 0;
    CHECK(bench_gemm_seconds(ctx, f, &(bench_gemm){.m = 2048, .n = 2048, .k = 2048, .ta = INFL_N, .tb = INFL_N}, &s));
    rep->sgemm_peak_gflops = 2.0 * 2048.0 * 2048.0 * 2048.0 / s / 1e9;
    if (!lm) {
        CHECK(hdf5_read_seconds(ctx, f, &s));
        hdf5_bps = (double)f->N * (f->D + 1) * 4.0 / s;
        rep->hdf5_read_gbs = hdf5_bps / 1e9;
    }

    int done = 0;
    for (int i = 0; i < ntable; i++) {
        if (!sel[i]) continue;
        infl_progress(ctx, "bench", (uint64_t)done + 1, (uint64_t)count + 1, table[i].name);
        CHECK(run_phase(ctx, f, &table[i], hdf5_bps, &rep->phase[rep->nphases]));
        rep->nphases++;
        done++;
    }
    infl_progress(ctx, "bench", (uint64_t)count + 1, (uint64_t)count + 1, "done");
    *out = rep;
    rep = NULL;
done:
    if (f && f->lm) bench_lm_close(ctx, f);
    if (f) fix_free(ctx, f);
    free(f);
    free(rep);
    return rc;
}
