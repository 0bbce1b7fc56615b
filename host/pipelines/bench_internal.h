/*
 * bench_internal.h — what the files of `infl bench` share (bench.c: the fixture, the
 * ceilings, the driver and the phases of scoring; bench_ekfac.c: the EK-FAC phases):
 * the work a phase declares, the phase table's entries, the fixture, and the helpers
 * the phases call. Internal to pipelines/.
 */
#ifndef INFL_BENCH_INTERNAL_H
#define INFL_BENCH_INTERNAL_H

#include <stdint.h>

#include "attrib.h"
#include "backend.h"
#include "bench.h"

#define BENCH_B 1024            // train rows per sub-batch, as rank.c uses
#define BENCH_MAX_GEMMS 64      // GEMM shapes one phase may list
#define BENCH_GEMM_SAMPLE 5e-4  // seconds one timing sample of a GEMM shape lasts at least
#define BENCH_GEMM_BUDGET 0.3   // seconds of samples per GEMM shape (at least 3 samples)
#define BENCH_READ_MB 64.0      // shard of the HDF5 read ceiling, as rank reads
#define BENCH_TOPK_MB 256.0     // most host memory the top-k phase's score blocks take


// ---- what a phase declares ----

typedef struct {
    int m, n, k;
    infl_trans ta, tb;
    int batch;     // > 0: sgemm_batched of `batch` matrices (the GPT's attention per head)
    double count;  // calls at this shape (may be fractional: an average)
} bench_gemm;

typedef struct bench_fix bench_fix;

typedef struct {
    char what[160];     // sizes, for the report
    double flops;       // counted from the shapes
    double bytes;       // bytes it must move
    double examples;    // examples (or queries) processed
    bench_gemm gemm[BENCH_MAX_GEMMS];  // its GEMMs: ceiling (a)
    int ngemm;
    double io_bytes;    // bytes read from HDF5: ceiling (b)
    // ceiling (c): a body timed like run (the best of reps after a warm-up), or NULL
    infl_status (*ceiling_run)(infl_ctx *ctx, bench_fix *f);
    const char *ceiling_name;  // overrides the generated name of the ceiling, or NULL
    int rate_is_flops;  // report GFLOP/s (1) or GB/s (0)
} bench_work;

typedef struct {
    const char *name;
    const char *title;
    // Allocates what the phase needs and counts its work into w.
    infl_status (*setup)(infl_ctx *ctx, bench_fix *f, bench_work *w);
    // The timed body: returns with its results complete (synchronised).
    infl_status (*run)(infl_ctx *ctx, bench_fix *f);
    // Frees what setup allocated (may be NULL); called also after a failed setup.
    void (*teardown)(infl_ctx *ctx, bench_fix *f);
} bench_phase_def;


typedef struct {
    int m, n, k;
    infl_trans ta, tb;
    int batch;
    double seconds;  // one call
} gemm_rate;

struct bench_fix {
    const infl_bench_options *o;
    infl_model_spec spec;     // the benchmark's MLP
    infl_model *m;            // ... through the seam
    size_t P;
    int L, C, M, B;
    int b;                    // rows of a sub-batch of the in-memory phases: min(R, B)
    int64_t N, R, D;          // train rows, rows of the in-memory phases, features
    char data[4096], run[4200], train_ref[4300], query_ref[4300], synth_path[4200];
    infl_split *train, *query;
    float **Wd;               // (C) weights on the backend
    float *X;                 // (R, D) train rows
    int32_t *y;               // (R) their labels
    float *qX;                // (M, D) queries
    int32_t *qy;              // (M)
    infl_model_work *work;    // B rows
    infl_model_work *qwork;   // M rows
    float **qD, **qA;         // (C·L) query factors Δ_Q (M, d_out), A_Q (M, d_in)
    float **tD, **tA;         // (C·L) factors of train sub-batch 0: (B, d_out), (B, d_in)
    float *Sd, *T1, *T2;      // (M, B) score block and temporaries
    float *one;               // (1) for synchronising
    // phase-owned
    float *V, *Gz;            // if_score: (M, P) queries, (B, max d_in) contraction block
    infl_hvp *op;             // if_prepare: the GGN operator
    float *G, *Xs;            // if_prepare: (M, P) query gradients and solutions
    float *hs;                // topk: (G, M, S) host score blocks
    int64_t S;                // topk: columns per block
    int nblocks;              // topk: distinct blocks
    volatile double sink;     // topk ceiling: keeps the reads
    double timed;             // a run may set this (>= 0) to the seconds of its part of a
                              // larger call (e.g. one pass of infl_fit from its report);
                              // reset to -1 before each run, when < 0 the wall time counts
    // EK-FAC phases
    char factors[4300];       // the factors file the fit phases write (removed at the end)
    infl_factors *fac;        // identity factors of the model's shapes (preconditioning costs the same)
    ekfac_pre *pre;
    float *LF[INFL_MAX_LINEAR], *RF[INFL_MAX_LINEAR];
    int rl[INFL_MAX_LINEAR];
    float *X1, *X2;           // (B, M r) low-rank score blocks
    gemm_rate rates[256];     // measured GEMM shapes
    int nrates;
    // language models (bench_lm.c)
    int lm;
    infl_bench_report *rep;   // the report the scoring phases add their layers to
    infl_run *lrun;           // the run, open
    int ctxT;                 // the model's context
    int32_t *dtok, *dlen;     // (R, ctxT), (R) host: the first R documents
    double zreal, zpad;       // token rows per document of those: real, and as computed (padded to a sub-batch's longest)
    double tokens;            // tokens of the N documents (as rows: +1 EOT each, cut at the context)
    infl_rank_options ro;     // a scoring phase's rank options
    attrib *a;                // ... and its open attribution (graddot or ekfac), one sub-batch's factors in a->work
    int family, form;         // the running scoring phase: family 0 ghost, 1 ekfac; form 0 rows, 1 docs, 2 auto
    int bsub, nsub;           // documents of the scored sub-batch, sub-batches scored per run
    double (*lt)[INFL_BENCH_MAX_LAYERS + 1];  // (65, L + 1) seconds per run and layer (L: the row sums)
    int nrun;
};


// ---- the helpers the phases share (bench.c) ----

// The best seconds of one GEMM call of the shape through the backend: sgemm, or with
// batch > 0 sgemm_batched of `batch` matrices one after the other; the best of short
// samples (BENCH_GEMM_SAMPLE each, BENCH_GEMM_BUDGET in all), after a warm-up.
infl_status bench_time_gemm(infl_ctx *ctx, int m, int n, int k, infl_trans ta, infl_trans tb, int batch, double *out);
// Adds `count` calls of a GEMM shape to a phase's ceiling (batched: of `batch` matrices).
// The phase counts its FLOPs itself.
void bench_add_gemm(bench_work *w, int m, int n, int k, infl_trans ta, infl_trans tb, double count);
void bench_add_gemm_batched(bench_work *w, int m, int n, int k, infl_trans ta, infl_trans tb, int batch,
                            double count);
// bench_time_gemm of a shape, cached per shape for the run.
infl_status bench_gemm_seconds(infl_ctx *ctx, bench_fix *f, const bench_gemm *g, double *out);
// The seconds of w's GEMMs at the ceiling: Σ count · one call.
infl_status bench_gemms_seconds(infl_ctx *ctx, bench_fix *f, const bench_work *w, double *out);
// Waits for the backend's queued work (a download synchronises).
infl_status bench_sync(infl_ctx *ctx, bench_fix *f);
// "12,345" into buf.
const char *bench_group_digits(char *buf, size_t size, int64_t v);
// Per-example factors of rows X (b, D) at checkpoint c into work (forward, backward).
infl_status bench_factors(infl_ctx *ctx, bench_fix *f, int c, const float *X, const int32_t *y, int b,
                          infl_model_work *work);
// The work of forward and backward over `rows` rows in sub-batches of b.
void bench_fb_work(const bench_fix *f, bench_work *w, double rows, int b);
// The query gradients f->G (M, lsize) at checkpoint 0 and room for f->Xs.
infl_status bench_query_grads(infl_ctx *ctx, bench_fix *f);
void bench_ifprep_teardown(infl_ctx *ctx, bench_fix *f);
// The contraction phase (IF scoring), which the full-rank EK-FAC scoring shares.
infl_status bench_ifscore_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_ifscore_run(infl_ctx *ctx, bench_fix *f);
void bench_ifscore_teardown(infl_ctx *ctx, bench_fix *f);

// ---- the EK-FAC phases (bench_ekfac.c) ----

infl_status bench_ekcov_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_ekcov_run(infl_ctx *ctx, bench_fix *f);
infl_status bench_ekeig_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_ekeig_run(infl_ctx *ctx, bench_fix *f);
infl_status bench_eklam_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_eklam_run(infl_ctx *ctx, bench_fix *f);
infl_status bench_ekprep_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_ekprep_run(infl_ctx *ctx, bench_fix *f);
infl_status bench_eklow_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_eklow_run(infl_ctx *ctx, bench_fix *f);
infl_status bench_ekscore_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_ekscorer_setup(infl_ctx *ctx, bench_fix *f, bench_work *w);
infl_status bench_ekscorer_run(infl_ctx *ctx, bench_fix *f);
void bench_ekpre_teardown(infl_ctx *ctx, bench_fix *f);

// ---- language models (bench_lm.c) ----

// Opens the fixture of a gpt run's attribution (the options' run, data, n, rows,
// queries, query) and fills the report's header fields; bench_lm_close frees what only
// it made (then the driver's fixture free).
infl_status bench_lm_open(infl_ctx *ctx, bench_fix *f, const infl_bench_options *o, infl_bench_report *rep);
void bench_lm_close(infl_ctx *ctx, bench_fix *f);
extern const bench_phase_def bench_lm_phases[];
extern const int bench_lm_nphases;

#endif
