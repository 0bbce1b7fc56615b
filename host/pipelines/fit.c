/*
 * fit.c — `infl fit`: EK-FAC factors of a checkpoint (estimators/ekfac.h applies
 * them), written against the model seam: per attributed layer with per-example
 * factors δ (d_out) and ã = [a; 1] (d_in + 1; a alone for a layer without a bias):
 *   pass 1   A = (1/N) Σ ã ãᵀ = (1/N) [AᵀA, Aᵀ1; 1ᵀA, N]   and   S = (1/N) Σ δ δᵀ
 *            (one GEMM each per sub-batch, accumulated in float over a shard on the
 *            backend and in float64 across shards on the host)
 *   eig      symmetrise (C + Cᵀ)/2 and eigendecompose in float64 (backend syevd)
 *   pass 2   Λ = (1/N) (Δ Q_S)^∘2ᵀ (Ã Q_A)^∘2, one GEMM of squares per sub-batch
 * δ is the gradient of the loss at targets drawn from the model (true Fisher: the
 * model samples them, keyed by seed and example index so a shard size or a backend
 * never changes them; with `samples` > 1 each example draws that many, draw d under
 * the key seed ⊕ d·0x9E3779B97F4A7C15, and S and Λ average over them) or at the
 * data's targets (empirical Fisher). Strategies: kfac stops after the
 * eigendecomposition (Λ = λ_S ⊗ λ_A, times the mean token rows of a document for a
 * language model, so that Λ is per document as EK-FAC's is); diagonal skips pass 1 (identity bases, so
 * pass 2 gives the Fisher's diagonal); identity needs no data (Λ = 1).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/comm.h"
#include "estimators/ekfac.h"
#include "estimators/score.h"
#include "models/model.h"
#include "models/train.h"
#include "sched/stage.h"
#include "store/store.h"


infl_fit_options infl_fit_options_default(void) {
    infl_fit_options o;
    memset(&o, 0, sizeof o);
    o.strategy = INFL_STRATEGY_EKFAC;
    o.samples = 1;
    o.shard_mb = 64;
    return o;
}

typedef struct {
    infl_ctx *ctx;
    const infl_fit_options *o;
    const infl_model *m;            // the run's model, through the seam
    infl_split *split;
    int64_t N, D, Kt;
    int B;
    int draws;                      // labels per example (1 for the empirical Fisher)
    float *W;                       // checkpoint weights (backend)
    const char *ckpt;               // its name (a captured model reads that checkpoint's capture)
    infl_model_work *work;
    infl_stage st;                  // double-buffered sub-batches (stage.h)
    float *accA[INFL_MAX_LINEAR];   // (ni, ni) pass 1; rows < din and, with a bias, row din (column sums)
    float *accS[INFL_MAX_LINEAR];   // (dout, dout)
    float *accL[INFL_MAX_LINEAR];   // (dout, ni) pass 2
    float *DQ, *AQ;                 // (rows, max dout), (rows, max ni): rows = B, or B · context for documents
    int tokens, ctxT;               // examples of token rows: at most ctxT of them (a gpt's context, a
    int docs;                       // captured model's longest example); docs: documents the model reads
    int64_t rows_seen;              // pass 1: token rows (examples for T = 1), the covariances' count
    float *Gd;                      // (Bm, max dout·ni) documents' rotated gradients (pass 2, documents)
    int Bm;
    float *hbuf;                    // host (max block)
    double flops;
    double wait;
} fitter;

static uint64_t draw_seed(uint64_t seed, int draw) { return seed ^ ((uint64_t)draw * 0x9E3779B97F4A7C15ull); }

// Forward (draw 0 only) and backward of a batch at sampled targets (keyed by seed,
// draw and example index) or at the data's (empirical Fisher): the factors in F->work.
static infl_status fit_factors(fitter *F, const infl_batch *bt0, int draw) {
    infl_ctx *ctx = F->ctx;
    infl_batch b = *bt0;
    b.ckpt = F->ckpt;
    const infl_batch *bt = &b;
    if (draw == 0) {
        FORWARD_IF_ERROR(infl_model_forward(ctx, F->m, F->W, bt, F->work));
        F->flops += infl_model_fb_flops(F->m, F->work->rows) / 2;
    }
    infl_targets tg = {.sampled = !F->o->fisher_empirical, .seed = draw_seed(F->o->seed, draw)};
    FORWARD_IF_ERROR(infl_model_backward(ctx, F->m, F->W, bt, &tg, F->work, NULL, 1.0f));
    F->flops += infl_model_fb_flops(F->m, F->work->rows) / 2;
    return INFL_OK;
}

// Adds the device accumulators into the host sums (float64) and clears them.
static infl_status flush(fitter *F, int pass, double **hA, double **hS, double **hL) {
    infl_ctx *ctx = F->ctx;
    for (int l = 0; l < F->m->nlayers; l++) {
        size_t ni = (size_t)infl_linear_ni(&F->m->layer[l]), no = (size_t)F->m->layer[l].d_out;
        float *acc[2] = {pass == 1 ? F->accA[l] : F->accL[l], pass == 1 ? F->accS[l] : NULL};
        double *dst[2] = {pass == 1 ? hA[l] : hL[l], pass == 1 ? hS[l] : NULL};
        size_t n[2] = {pass == 1 ? ni * ni : no * ni, no * no};
        for (int i = 0; i < 2; i++) {
            if (!acc[i]) continue;
            FORWARD_IF_ERROR(ctx->be->download(ctx, F->hbuf, acc[i], n[i] * sizeof(float)));
            for (size_t j = 0; j < n[i]; j++) dst[i][j] += F->hbuf[j];
            FORWARD_IF_ERROR(ctx->be->fill(ctx, acc[i], 0.0f, n[i]));
        }
    }
    return INFL_OK;
}

// One streamed sub-batch of a pass (infl_stage_stream): its terms into the backend
// accumulators; each shard's flush adds them to the float64 sums.
typedef struct {
    fitter *F;
    int pass;
    const ekfac_pre *p;
    double **hA, **hS, **hL;
} fit_stream;

static infl_status fit_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    (void)sh;
    (void)r0;
    fit_stream *fs = user;
    fitter *F = fs->F;
    const infl_backend *be = ctx->be;
    const infl_model *m = F->m;
    const int pass = fs->pass, b = bt->b;
    const ekfac_pre *p = fs->p;
    for (int draw = 0; draw < F->draws; draw++) {
        FORWARD_IF_ERROR(fit_factors(F, bt, draw));
        // covariances over token rows; Λ over the examples' (documents') gradients
        const int rows = F->work->rows;
        if (pass == 1 && draw == 0) F->rows_seen += rows;
        for (int l = 0; l < m->nlayers; l++) {
            const infl_linear *ly = &m->layer[l];
            int din = ly->d_in, ni = infl_linear_ni(ly), dout = ly->d_out;
            const float *Dl = F->work->D[l], *Al = F->work->A[l];
            if (pass == 1) {
                // S += ΔᵀΔ / draws; A[:din, :din] += AᵀA; with a bias A[din, :din] += 1ᵀA (once)
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, dout, rows, 1.0f / F->draws, Dl, dout, Dl, dout,
                                           1.0f, F->accS[l], dout));
                F->flops += 2.0 * rows * (double)dout * dout;
                if (draw == 0) {
                    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, din, din, rows, 1.0f, Al, din, Al, din, 1.0f,
                                               F->accA[l], ni));
                    if (ly->bias)
                        FORWARD_IF_ERROR(be->col_sum(ctx, F->accA[l] + (size_t)din * ni, Al, rows, din, 1.0f, 1.0f));
                    F->flops += 2.0 * rows * (double)din * din + (double)rows * din;
                }
            } else {
                float *DQ = F->DQ, *AQ = F->AQ;
                if (p) {
                    FORWARD_IF_ERROR(ekfac_rotate(ctx, DQ, AQ, p, l, Dl, Al, rows));
                    F->flops += 2.0 * rows * ((double)dout * dout + (double)din * ni);
                } else {
                    FORWARD_IF_ERROR(ekfac_identity_factors(ctx, DQ, AQ, ly, Dl, Al, rows));
                }
                if (F->tokens) {
                    // Λ += Σ_docs (Q_Sᵀ G_z Q_A)^∘2 with G_z = Σ_t δ_t ã_tᵀ: each document's rotated
                    // gradient DQ_zᵀ AQ_z (d_out, ni), squared, summed over the documents
                    infl_linear rot = {.d_in = ni, .d_out = dout, .bias = 0};
                    size_t n2 = (size_t)dout * ni;
                    for (int i0 = 0; i0 < b; i0 += F->Bm) {
                        int n = b - i0 < F->Bm ? b - i0 : F->Bm;
                        FORWARD_IF_ERROR(
                            score_doc_grads_layer(ctx, F->Gd, n2, NULL, &rot, DQ, AQ, F->work->row_off, i0, n));
                        FORWARD_IF_ERROR(be->mul(ctx, F->Gd, F->Gd, F->Gd, (size_t)n * n2));
                        FORWARD_IF_ERROR(be->col_sum(ctx, F->accL[l], F->Gd, n, (int)n2, 1.0f / F->draws, 1.0f));
                    }
                    F->flops += 2.0 * rows * (double)n2 + 2.0 * b * (double)n2;
                    continue;
                }
                FORWARD_IF_ERROR(be->mul(ctx, DQ, DQ, DQ, (size_t)b * dout));
                FORWARD_IF_ERROR(be->mul(ctx, AQ, AQ, AQ, (size_t)b * ni));
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, ni, b, 1.0f / F->draws, DQ, dout, AQ, ni, 1.0f,
                                           F->accL[l], ni));
                F->flops += 2.0 * b * (double)dout * ni + (double)b * (dout + ni);
            }
        }
    }
    return INFL_OK;
}

static infl_status fit_shard(infl_ctx *ctx, void *user, const infl_shard *sh) {
    (void)ctx;
    (void)sh;
    fit_stream *fs = user;
    return flush(fs->F, fs->pass, fs->hA, fs->hS, fs->hL);
}

// One streamed pass over the split: pass 1 accumulates A and S, pass 2 Λ with the
// rotation p (identity bases for diagonal: p NULL means Q = I). Sub-batches are double-
// buffered; nothing waits on the host until flush's downloads, once a shard.
static infl_status fit_pass(fitter *F, int pass, const ekfac_pre *p, double **hA, double **hS, double **hL) {
    int64_t width = F->docs ? (int64_t)F->ctxT + 2 : F->D;
    int64_t S = F->o->shard_rows > 0 ? (F->o->shard_rows < F->N ? F->o->shard_rows : F->N)
                                     : infl_shard_rows(F->N, width, F->Kt, F->o->shard_mb > 0 ? F->o->shard_mb : 64, F->B);
    fit_stream fs = {.F = F, .pass = pass, .p = p, .hA = hA, .hS = hS, .hL = hL};
    infl_stream_fns fns = {.batch = fit_batch, .shard = fit_shard, .user = &fs, .ranks = INFL_STREAM_SHARDS};
    double wait_s = 0;
    // the data's labels for the empirical Fisher; else the model samples them itself
    FORWARD_IF_ERROR(infl_stage_stream(F->ctx, &F->st, F->split, S, F->docs ? F->ctxT : 0, F->o->fisher_empirical,
                                       &fns, pass == 1 ? "fit: covariances" : "fit: eigenvalue correction",
                                       ekfac_strategy_name(F->o->strategy), &wait_s));
    F->wait += wait_s;
    return INFL_OK;
}

// Symmetrises C (n, n) in place, scales by 1/N, eigendecomposes on the backend:
// C becomes the eigenvectors (rows), vals the eigenvalues ascending.
static infl_status eig(infl_ctx *ctx, double *C, double *vals, int n, double N, const char *what, int layer) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) {
            double v = 0.5 * (C[(size_t)i * n + j] + C[(size_t)j * n + i]) / N;
            C[(size_t)i * n + j] = C[(size_t)j * n + i] = v;
        }
    for (int i = 0; i < n; i++) C[(size_t)i * n + i] /= N;
    for (size_t i = 0; i < (size_t)n * n; i++)
        RETURN_IF(ctx, !isfinite(C[i]), INFL_E_NUMERIC,
                  "layer %d: the covariance %s has a non-finite entry: the checkpoint may have diverged", layer, what);
    double *dA = NULL, *dw = NULL;
    infl_status rc = INFL_OK;
    CHECK(ctx->be->alloc(ctx, (size_t)n * n * sizeof(double), (void **)&dA));
    CHECK(ctx->be->alloc(ctx, (size_t)n * sizeof(double), (void **)&dw));
    CHECK(ctx->be->upload(ctx, dA, C, (size_t)n * n * sizeof(double)));
    rc = ctx->be->syevd(ctx, dA, dw, n);
    if (rc < 0) {
        infl_errprefix(ctx, "layer %d, covariance %s (%d x %d)", layer, what, n, n);
        goto done;
    }
    CHECK(ctx->be->download(ctx, C, dA, (size_t)n * n * sizeof(double)));
    CHECK(ctx->be->download(ctx, vals, dw, (size_t)n * sizeof(double)));
    for (int i = 0; i < n; i++)
        GOTO_IF(ctx, !isfinite(vals[i]), INFL_E_NUMERIC, "layer %d: an eigenvalue of %s is not finite", layer, what);
done:
    infl_be_free(ctx, dA);
    infl_be_free(ctx, dw);
    return rc;
}

static void set_identity(double *Q, int n) {
    memset(Q, 0, (size_t)n * n * sizeof(double));
    for (int i = 0; i < n; i++) Q[(size_t)i * n + i] = 1.0;
}

static void fitter_free(fitter *F) {
    infl_ctx *ctx = F->ctx;
    for (int l = 0; l < INFL_MAX_LINEAR; l++) {
        infl_be_free(ctx, F->accA[l]);
        infl_be_free(ctx, F->accS[l]);
        infl_be_free(ctx, F->accL[l]);
    }
    infl_be_free(ctx, F->W);
    infl_stage_free(ctx, &F->st);
    infl_be_free(ctx, F->DQ);
    infl_be_free(ctx, F->AQ);
    infl_be_free(ctx, F->Gd);
    if (F->m) infl_model_work_free(ctx, F->m, F->work);
    free(F->hbuf);
    store_split_close(F->split);
}

// Several processes (core/comm.h): each one's float64 sums of a pass (n values per layer in
// sums[l]) added up on every process.
static infl_status sum_layers(infl_ctx *ctx, const infl_model *m, double **sums, int what) {
    for (int l = 0; l < m->nlayers; l++) {
        size_t ni = (size_t)infl_linear_ni(&m->layer[l]), no = (size_t)m->layer[l].d_out;
        size_t n = what == 'A' ? ni * ni : what == 'S' ? no * no : no * ni;
        FORWARD_IF_ERROR(infl_comm_sum_f64(ctx, sums[l], n));
    }
    return INFL_OK;
}

// Rank 0's eigenbases and eigenvalues of every layer to every process: each process rotates
// by the same bases in pass 2 whatever its LAPACK would give.
static infl_status bcast_bases(infl_ctx *ctx, const infl_model *m, infl_factors *f) {
    for (int l = 0; l < m->nlayers; l++) {
        size_t ni = (size_t)infl_linear_ni(&m->layer[l]), no = (size_t)m->layer[l].d_out;
        FORWARD_IF_ERROR(infl_comm_bcast(ctx, f->A_vecs[l], ni * ni * sizeof(double)));
        FORWARD_IF_ERROR(infl_comm_bcast(ctx, f->A_vals[l], ni * sizeof(double)));
        FORWARD_IF_ERROR(infl_comm_bcast(ctx, f->S_vecs[l], no * no * sizeof(double)));
        FORWARD_IF_ERROR(infl_comm_bcast(ctx, f->S_vals[l], no * sizeof(double)));
    }
    return INFL_OK;
}

static infl_status fit_run(infl_ctx *ctx, const infl_fit_options *o, const char *out_path, infl_fit_report *rep);

infl_status infl_fit(infl_ctx *ctx, const infl_fit_options *o, const char *out_path, infl_fit_report *rep) {
    // every process leaves with the job's status (core/comm.h)
    return infl_comm_sync(ctx, fit_run(ctx, o, out_path, rep));
}

static infl_status fit_run(infl_ctx *ctx, const infl_fit_options *o, const char *out_path, infl_fit_report *rep) {
    RETURN_IF(ctx, !o || !o->run || !*o->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "no output file given (-o factors.h5)");
    RETURN_IF(ctx, (unsigned)o->strategy > INFL_STRATEGY_IDENTITY, INFL_E_ARG,
              "--strategy: expected ekfac, kfac, diagonal or identity");
    RETURN_IF(ctx, o->shard_rows < 0, INFL_E_ARG, "--shard: expected a number of rows >= 1");
    RETURN_IF(ctx, o->samples < 0 || o->samples > 1000, INFL_E_ARG, "--samples: expected 1 to 1000 labels per example");
    RETURN_IF(ctx, o->fisher_empirical && o->samples > 1, INFL_E_ARG,
              "--samples draws labels for the true Fisher; the empirical Fisher uses the data's one label");
    {
        char tmp[4200];  // refuse an existing output before the work
        FORWARD_IF_ERROR(infl_out_begin(ctx, out_path, o->force, tmp, sizeof tmp));
    }
    infl_fit_report r;
    memset(&r, 0, sizeof r);
    fitter F;
    memset(&F, 0, sizeof F);
    F.ctx = ctx;
    F.o = o;
    F.draws = o->samples > 1 ? o->samples : 1;
    infl_run *run = NULL;
    infl_model *m = NULL;
    infl_factors *f = NULL;
    ekfac_pre *pre = NULL;
    float *hp = NULL;
    infl_status rc = INFL_OK;
    const infl_backend *be = ctx->be;

    CHECK(store_run_open(ctx, o->run, &run));
    CHECK(infl_model_create(ctx, store_run_spec(run), 0, &m));
    m->tokenizer = store_run_tokenizer(run);
    F.m = m;
    F.tokens = m->tokens;
    F.docs = F.tokens && m->spec.kind == INFL_MODEL_GPT;
    GOTO_IF(ctx, m->spec.kind == INFL_MODEL_CAPTURED && !o->fisher_empirical && F.draws > 1, INFL_E_ARG,
            "%s: --samples %d: a capture holds one draw of sampled targets (layer{l}/Ds); expected --samples 1",
            o->run, F.draws);
    if (F.docs) F.ctxT = m->spec.gpt.context;
    const int L = m->nlayers;
    int ck;
    CHECK(store_run_find(ctx, run, o->checkpoint, &ck));
    size_t P = m->nparams;
    hp = infl_malloc(ctx, P * sizeof(float), "the parameters");
    GOTO_NOMEM_IF(!hp);
    CHECK(store_run_load(ctx, run, ck, hp));
    F.ckpt = store_run_checkpoint(run, ck)->name;
    CHECK(infl_be_alloc_f(ctx, &F.W, P, "checkpoint weights"));
    CHECK(be->upload(ctx, F.W, hp, P * sizeof(float)));
    CHECK(infl_factors_alloc(ctx, L, m->layer, &f));
    snprintf(f->strategy, sizeof f->strategy, "%s", ekfac_strategy_name(o->strategy));
    snprintf(f->fisher, sizeof f->fisher, "%s", o->fisher_empirical ? "empirical" : "true");
    snprintf(f->run, sizeof f->run, "%s", o->run);
    snprintf(f->checkpoint, sizeof f->checkpoint, "%s", store_run_checkpoint(run, ck)->name);
    f->step = store_run_checkpoint(run, ck)->step;
    f->weights_hash = infl_weights_hash(hp, P);
    f->seed = o->seed;
    f->samples = o->fisher_empirical ? 1 : (o->samples > 1 ? o->samples : 1);

    const char *data = o->data;
    if (!data || !*data) CHECK(store_run_find_data(ctx, run, &data));
    snprintf(f->data, sizeof f->data, "%s", data);
    if (o->strategy == INFL_STRATEGY_IDENTITY) {
        for (int l = 0; l < L; l++) {
            int ni = infl_linear_ni(&m->layer[l]), no = m->layer[l].d_out;
            set_identity(f->A_vecs[l], ni);
            set_identity(f->S_vecs[l], no);
            for (int i = 0; i < ni; i++) f->A_vals[l][i] = 1;
            for (int i = 0; i < no; i++) f->S_vals[l][i] = 1;
            for (size_t i = 0; i < (size_t)ni * no; i++) f->lambda[l][i] = 1;
        }
        CHECK(infl_comm_sync(ctx, INFL_OK));
        if (infl_comm_root(ctx)) CHECK(store_factors_write(ctx, out_path, o->force, f));  // rank 0 writes
        goto finish;
    }
    infl_dataref ref;
    CHECK(infl_dataref_parse(ctx, data, &ref));
    CHECK(store_split_open(ctx, &ref, &F.split));
    CHECK(infl_model_check_data(ctx, m, F.split));
    const infl_split_info *si = store_split_info(F.split);
    if (F.tokens && !F.docs) F.ctxT = si->max_len > 0 ? (int)si->max_len : 1;  // captured token rows
    F.N = si->n;
    F.D = si->d;
    F.Kt = si->y_kind == INFL_Y_REAL ? si->k : 0;
    f->examples = F.N;
    r.examples = F.N;
    // sub-batches of 1024 rows (documents: about 8192 token rows), at most --shard rows
    // (which batches the rows the same: a shard is then one sub-batch either way)
    int B0 = F.tokens ? (8192 / F.ctxT > 1 ? 8192 / F.ctxT : 1) : 1024;
    F.B = o->shard_rows > 0 && o->shard_rows < B0 ? (int)o->shard_rows : B0;
    const int64_t maxrows = (int64_t)F.B * (F.tokens ? F.ctxT : 1);
    CHECK(infl_model_work_create(ctx, m, F.B, &F.work));
    // targets: the data's (empirical Fisher) or sampled by the model into its own buffers
    CHECK(infl_stage_alloc(ctx, &F.st, F.split, m, F.B, F.D, F.Kt, F.Kt));
    int maxo = 0, maxi = 0;
    size_t maxblk = 0;
    for (int l = 0; l < L; l++) {
        int ni = infl_linear_ni(&m->layer[l]), no = m->layer[l].d_out;
        maxo = no > maxo ? no : maxo;
        maxi = ni > maxi ? ni : maxi;
        size_t m = (size_t)ni * ni;
        m = (size_t)no * no > m ? (size_t)no * no : m;
        m = (size_t)no * ni > m ? (size_t)no * ni : m;
        maxblk = m > maxblk ? m : maxblk;
    }
    F.hbuf = infl_malloc(ctx, maxblk * sizeof(float), "factor accumulators");
    GOTO_NOMEM_IF(!F.hbuf);

    double t0 = infl_now();
    if (o->strategy != INFL_STRATEGY_DIAGONAL) {
        for (int l = 0; l < L; l++) {
            size_t ni = (size_t)infl_linear_ni(&m->layer[l]), no = (size_t)m->layer[l].d_out;
            CHECK(infl_be_alloc_f(ctx, &F.accA[l], ni * ni, "the covariance A"));
            CHECK(infl_be_alloc_f(ctx, &F.accS[l], no * no, "the covariance S"));
            CHECK(be->fill(ctx, F.accA[l], 0.0f, ni * ni));
            CHECK(be->fill(ctx, F.accS[l], 0.0f, no * no));
        }
        CHECK(fit_pass(&F, 1, NULL, f->A_vecs, f->S_vecs, NULL));
        // every process's sums, then the bias column and the count
        CHECK(sum_layers(ctx, m, f->A_vecs, 'A'));
        CHECK(sum_layers(ctx, m, f->S_vecs, 'S'));
        CHECK(infl_comm_sum_i64(ctx, &F.rows_seen, 1));
        for (int l = 0; l < L; l++) {
            // with a bias: the bias column of A mirrors its row; the corner counts the rows
            int din = m->layer[l].d_in, ni = infl_linear_ni(&m->layer[l]);
            double *A = f->A_vecs[l];
            if (m->layer[l].bias) {
                for (int i = 0; i < din; i++) A[(size_t)i * ni + din] = A[(size_t)din * ni + i];
                A[(size_t)din * ni + din] = (double)F.rows_seen;
            }
            infl_be_free(ctx, F.accA[l]);
            infl_be_free(ctx, F.accS[l]);
            F.accA[l] = F.accS[l] = NULL;
        }
        r.seconds_cov = infl_now() - t0;
        r.flops_cov = F.flops;
        double t1 = infl_now();
        for (int l = 0; l < L && infl_comm_root(ctx); l++) {
            int ni = infl_linear_ni(&m->layer[l]), no = m->layer[l].d_out;
            CHECK(eig(ctx, f->A_vecs[l], f->A_vals[l], ni, (double)F.rows_seen, "A", l));
            CHECK(eig(ctx, f->S_vecs[l], f->S_vals[l], no, (double)F.rows_seen, "S", l));
        }
        CHECK(bcast_bases(ctx, m, f));
        r.seconds_eig = infl_now() - t1;
    } else {
        for (int l = 0; l < L; l++) {
            set_identity(f->A_vecs[l], infl_linear_ni(&m->layer[l]));
            set_identity(f->S_vecs[l], m->layer[l].d_out);
        }
    }
    if (o->strategy == INFL_STRATEGY_KFAC) {
        // documents: the covariances are per token, Λ per document (as EK-FAC's is): a
        // document's gradient sums T tokens' outer products, so under K-FAC's independence
        // E[(q_Sᵀ G q_A)²] ≈ T̄ λ_S λ_A with T̄ the mean token rows of a document (1 for rows)
        double tbar = F.tokens && F.N > 0 ? (double)F.rows_seen / (double)F.N : 1.0;
        for (int l = 0; l < L; l++) {
            int ni = infl_linear_ni(&m->layer[l]), no = m->layer[l].d_out;
            for (int i = 0; i < no; i++)
                for (int j = 0; j < ni; j++)
                    f->lambda[l][(size_t)i * ni + j] = tbar * f->S_vals[l][i] * f->A_vals[l][j];
        }
    } else {
        // pass 2: Λ in the eigenbases (identity for diagonal)
        double t2 = infl_now(), f0 = F.flops;
        if (o->strategy == INFL_STRATEGY_EKFAC) {
            // the rotation only (no damping used): a temporary preconditioner over the bases
            for (int l = 0; l < L; l++) {
                size_t n = infl_linear_size(&m->layer[l]);
                for (size_t i = 0; i < n; i++) f->lambda[l][i] = 1;
            }
            snprintf(f->strategy, sizeof f->strategy, "ekfac");
            CHECK(ekfac_pre_create(ctx, f, out_path, m, INFL_METHOD_EKFAC, 1.0, 0, &pre));
        }
        CHECK(infl_be_alloc_f(ctx, &F.DQ, (size_t)maxrows * maxo, "rotated factors"));
        CHECK(infl_be_alloc_f(ctx, &F.AQ, (size_t)maxrows * maxi, "rotated factors"));
        if (F.tokens) {
            // the documents' rotated gradients, a chunk within 16 Mi floats
            size_t big = 0;
            for (int l = 0; l < L; l++) {
                size_t n = (size_t)infl_linear_ni(&m->layer[l]) * m->layer[l].d_out;
                big = n > big ? n : big;
            }
            int64_t bm = (int64_t)(16777216 / big);
            F.Bm = (int)(bm < 1 ? 1 : bm < F.B ? bm : F.B);
            CHECK(infl_be_alloc_f(ctx, &F.Gd, (size_t)F.Bm * big, "documents' rotated gradients"));
        }
        for (int l = 0; l < L; l++) {
            size_t n = infl_linear_size(&m->layer[l]);
            memset(f->lambda[l], 0, n * sizeof(double));
            CHECK(infl_be_alloc_f(ctx, &F.accL[l], n, "the eigenvalue correction"));
            CHECK(be->fill(ctx, F.accL[l], 0.0f, n));
        }
        CHECK(fit_pass(&F, 2, pre, NULL, NULL, f->lambda));
        CHECK(sum_layers(ctx, m, f->lambda, 'L'));
        for (int l = 0; l < L; l++) {
            int ni = infl_linear_ni(&m->layer[l]), no = m->layer[l].d_out;
            size_t n = (size_t)no * ni;
            for (size_t i = 0; i < n; i++) f->lambda[l][i] /= (double)F.N;
            if (o->strategy == INFL_STRATEGY_DIAGONAL) {
                // for the record: the marginal sums as "eigenvalues" of the identity bases
                for (int i = 0; i < no; i++) f->S_vals[l][i] = 1;
                for (int j = 0; j < ni; j++) f->A_vals[l][j] = 1;
            }
        }
        r.seconds_lambda = infl_now() - t2;
        r.flops_lambda = F.flops - f0;
    }
    for (int l = 0; l < L; l++) {
        size_t n = infl_linear_size(&m->layer[l]);
        for (size_t i = 0; i < n; i++)
            GOTO_IF(ctx, !isfinite(f->lambda[l][i]), INFL_E_NUMERIC,
                    "layer %d (%s): eigenvalue correction entry %zu is not finite: the checkpoint may have diverged", l,
                    m->layer[l].name, i);
    }
    r.seconds_wait = F.wait;
    CHECK(infl_comm_sync(ctx, INFL_OK));  // rank 0 writes once every process has done its part
    if (infl_comm_root(ctx)) CHECK(store_factors_write(ctx, out_path, o->force, f));
finish:
    if (rep) *rep = r;
done:
    ekfac_pre_free(ctx, pre);
    free(hp);
    infl_factors_free(f);
    fitter_free(&F);
    infl_model_free(m);
    store_run_close(run);
    return rc;
}
