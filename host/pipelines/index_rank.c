/*
 * index_rank.c — `infl rank --index` and `infl self --index`: scores from a gradient
 * index (index.c), with no pass over the training data. The queries' gradients are
 * projected with the index's own projection (the same generator, seed and sizes), then
 * every index row is scored by GEMM, streamed in chunks of rows, top-k kept per query.
 *
 * With φ the stored margin gradient and q = 1 − p_y (index.c; the loss's gradient is
 * q φ), for checkpoint c of index f:
 *   graddot  (q_Q φ_Q) · (q_z φ_z)                   tracin: Σ_c lr_c of the same
 *   gradcos  the same with both normalised
 *   trak     Σ_{f,c} φ_Q (K_fc + λI)⁻¹ φ_z / C  ·  mean_{f,c} q_z,  K_fc = Σ_z φ_z φ_zᵀ
 *            (Park et al. 2023: the kernel of the margins' features, the loss weights
 *            averaged apart; several index files are its ensemble of runs)
 *   if       (q_Q φ_Q) (F + λI)⁻¹ (q_z φ_z), F = (1/N) Σ_z q_z² φ_z φ_zᵀ per block (the
 *            whole φ, or each layer's k_out k_in entries of a kron index): the projected
 *            empirical Fisher exactly, the matrix K-FAC/EK-FAC approximate (LoGra)
 * (K + λI)⁻¹ comes from a float64 eigendecomposition (the backend's syevd); λ is the
 * given damping, or with damping_auto 0.1 × the mean eigenvalue (per block). Signs as
 * DESIGN.md: positive = proponent.
 */
#define _POSIX_C_SOURCE 200809L  // strtok_r
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "backend.h"
#include "estimators/project.h"
#include "sched/topk.h"

int index_has_margin(const infl_model *m);
void index_margin_rows(float *phi, float *q, const float *loss, int b, int k, int margin);

#define IX_MAX_FILES 64
// Rows per chunk (index_chunk_rows): about 1 MiB of float32 φ, so that a chunk stays in cache through
// its passes (read, float16 conversion, row factors, upload, the GEMM's packing): 16x the rows made
// scoring 1.6-3.5x slower on the CPU (bench_index).
#define IX_CHUNK_FLOATS 262144
#define IX_KERNEL_FLOATS 4194304  // the kernel's float GEMMs (trak, if): about 4 Mi entries of φ each

// The preconditioner of one checkpoint: per block [b0, b0 + bn) of φ, Vt (bn, bn) backend (rows
// the eigenvectors) and d (bn) = 1/(w + λ) backend.
typedef struct {
    int nb;
    int b0[INFL_MAX_LINEAR], bn[INFL_MAX_LINEAR];
    float *Vt[INFL_MAX_LINEAR], *d[INFL_MAX_LINEAR];
    double lambda[INFL_MAX_LINEAR], mean[INFL_MAX_LINEAR];
} ix_pre;

typedef struct {
    infl_ixr *r;
    const infl_index_info *in;
    int nck;
    int ck[INFL_INDEX_MAX_CK];        // the index's checkpoints used
    double weight[INFL_INDEX_MAX_CK];
    float *psi[INFL_INDEX_MAX_CK];    // rank: (M, k) backend, the query side of the scores
    ix_pre *pre;                      // (nck) trak, if
} ix_file;

typedef struct {
    infl_ctx *ctx;
    const infl_rank_options *o;
    int nf;
    ix_file *f;    // (IX_MAX_FILES)
    int64_t N;
    int M, C;      // queries; checkpoints over all files
    int R;         // rows per chunk
    float *hphi;   // (R, max k) host
    float *hq;     // (R) host
    float *dphi;   // (R, max k) backend
    float *T;      // (R, max k) backend scratch
    float *rsum;   // (R) backend
    double *qbar;  // (R) host: trak's mean q
} ix_state;

static void ix_pre_free(infl_ctx *ctx, ix_pre *p) {
    for (int b = 0; b < p->nb; b++) {
        infl_be_free(ctx, p->Vt[b]);
        infl_be_free(ctx, p->d[b]);
    }
    memset(p, 0, sizeof *p);
}

static void ix_close(ix_state *s) {
    for (int i = 0; i < s->nf; i++) {
        for (int c = 0; c < s->f[i].nck; c++) {
            infl_be_free(s->ctx, s->f[i].psi[c]);
            if (s->f[i].pre) ix_pre_free(s->ctx, &s->f[i].pre[c]);
        }
        free(s->f[i].pre);
        store_index_close_r(s->f[i].r);
    }
    free(s->f);
    free(s->hphi);
    free(s->hq);
    free(s->qbar);
    infl_be_free(s->ctx, s->dphi);
    infl_be_free(s->ctx, s->T);
    infl_be_free(s->ctx, s->rsum);
}

// The rows' factor on the train side of checkpoint c for method m: graddot, tracin, if: q_z
// (the loss's gradient); gradcos: 1/|φ_z|; trak: 1 (q enters as the mean afterwards).
static void ix_row_factors(infl_method m, float *phi, const float *q, int n, int k) {
    for (int i = 0; i < n; i++) {
        float *p = phi + (size_t)i * k;
        double f = q[i];
        if (m == INFL_METHOD_TRAK) f = 1.0;
        if (m == INFL_METHOD_GRADCOS) {
            double s = 0;
            for (int j = 0; j < k; j++) s += (double)p[j] * p[j];
            f = s > 0 ? 1.0 / sqrt(s) : 0.0;
        }
        if (f != 1.0)
            for (int j = 0; j < k; j++) p[j] = (float)(p[j] * f);
    }
}

// Reads rows [r0, r0 + n) of checkpoint c of file f, scaled by method m's row factors, into
// s->dphi (n, k) backend; q into s->hq.
static infl_status ix_load(ix_state *s, ix_file *f, int c, int64_t r0, int n, infl_method m) {
    int k = f->in->k;
    FORWARD_IF_ERROR(store_index_read(s->ctx, f->r, f->ck[c], r0, n, s->hphi, s->hq));
    ix_row_factors(m, s->hphi, s->hq, n, k);
    return s->ctx->be->upload(s->ctx, s->dphi, s->hphi, (size_t)n * k * sizeof(float));
}

// trak, if: the kernel of checkpoint c per block, eigendecomposed: (K + λI)⁻¹ = Vtᵀ diag(d) Vt.
static infl_status ix_fit_pre(ix_state *s, ix_file *f, int c) {
    infl_ctx *ctx = s->ctx;
    const infl_backend *be = ctx->be;
    const infl_rank_options *o = s->o;
    const infl_index_info *in = f->in;
    ix_pre *p = &f->pre[c];
    int k = in->k;
    infl_status rc = INFL_OK;
    float *K = NULL, *hK = NULL;
    double *dK = NULL, *dw = NULL, *w = NULL;
    // blocks: the whole φ, or (if on a kron index) each layer's entries
    p->nb = 0;
    if (o->method == INFL_METHOD_IF && in->L > 0) {
        int off = 0;
        for (int l = 0; l < in->L; l++) {
            p->b0[p->nb] = off;
            p->bn[p->nb++] = in->kdims[2 * l] * in->kdims[2 * l + 1];
            off += in->kdims[2 * l] * in->kdims[2 * l + 1];
        }
        GOTO_IF(ctx, off != k, INFL_E_FORMAT, "%s: kdims add up to %d entries, not dim %d", store_index_path(f->r), off,
                k);
    } else {
        p->b0[0] = 0;
        p->bn[0] = k;
        p->nb = 1;
    }
    int mb = 0;
    for (int b = 0; b < p->nb; b++) mb = p->bn[b] > mb ? p->bn[b] : mb;
    GOTO_IF(ctx, mb > 8192, INFL_E_ARG,
            "%s: --method %s inverts a %d x %d kernel: at most 8192 (an index of smaller --dim, or a kron index)",
            store_index_path(f->r), infl_method_name(o->method), mb, mb);
    // K_b (bn, bn) = Σ over groups of G row chunks of Φ_bᵀ Φ_b: float GEMMs accumulated on the backend over
    // about IX_KERNEL_FLOATS entries of φ (G chunks), added in float64 per group
    size_t kk = 0;
    for (int b = 0; b < p->nb; b++) kk += (size_t)p->bn[b] * p->bn[b];
    int G = (int)(IX_KERNEL_FLOATS / k / s->R), g = 0;
    G = G < 1 ? 1 : G;
    CHECK(infl_be_alloc_hint(ctx, (void **)&K, kk * sizeof(float), "the kernel", NULL));
    hK = infl_malloc(ctx, (size_t)mb * mb * sizeof(float), "a kernel block");
    dK = infl_calloc(ctx, kk, sizeof(double), "the kernel");
    GOTO_NOMEM_IF(!hK || !dK);
    // the kernel's rows: if's the loss's gradients (scaled by q, as graddot's), trak's the margins'
    infl_method rows = o->method == INFL_METHOD_IF ? INFL_METHOD_GRADDOT : o->method;
    for (int64_t r0 = 0; r0 < s->N; r0 += s->R) {
        int n = (int)(s->N - r0 < s->R ? s->N - r0 : s->R);
        rc = ix_load(s, f, c, r0, n, rows);
        if (rc < 0) break;
        size_t at = 0;
        bool first = g == 0, last = ++g == G || r0 + n >= s->N;
        for (int b = 0; b < p->nb && rc == INFL_OK; b++) {
            int bn = p->bn[b];
            rc = be->sgemm(ctx, INFL_T, INFL_N, bn, bn, n, 1.0f, s->dphi + p->b0[b], k, s->dphi + p->b0[b], k,
                           first ? 0.0f : 1.0f, K + at, bn);
            if (rc == INFL_OK && last) rc = be->download(ctx, hK, K + at, (size_t)bn * bn * sizeof(float));
            for (size_t i = 0; rc == INFL_OK && last && i < (size_t)bn * bn; i++) dK[at + i] += hK[i];
            at += (size_t)bn * bn;
        }
        if (last) g = 0;
        if (rc == INFL_OK && infl_cancelled(ctx)) rc = infl_seterr(ctx, INFL_E_INTERRUPTED, "interrupted");
        if (rc < 0) break;
        infl_progress(ctx, "kernel", (uint64_t)(r0 + n), (uint64_t)s->N, infl_method_name(o->method));
    }
    CHECK(rc);
    // per block: symmetrise, eigendecompose on the backend (float64), d = 1/(w + λ)
    size_t at = 0;
    for (int b = 0; b < p->nb; b++) {
        int bn = p->bn[b];
        double *Kb = dK + at;
        double scale = o->method == INFL_METHOD_IF ? 1.0 / (double)s->N : 1.0;
        for (int i = 0; i < bn; i++)
            for (int j = 0; j <= i; j++) {
                double v = 0.5 * (Kb[(size_t)i * bn + j] + Kb[(size_t)j * bn + i]) * scale;
                Kb[(size_t)i * bn + j] = Kb[(size_t)j * bn + i] = v;
            }
        CHECK(be->alloc(ctx, (size_t)bn * bn * sizeof(double), (void **)&dw));
        CHECK(be->alloc(ctx, (size_t)bn * sizeof(double), (void **)&w));
        CHECK(be->upload(ctx, dw, Kb, (size_t)bn * bn * sizeof(double)));
        CHECK(be->syevd(ctx, dw, w, bn));
        CHECK(be->download(ctx, Kb, dw, (size_t)bn * bn * sizeof(double)));
        double *hw = infl_malloc(ctx, (size_t)bn * sizeof(double), "eigenvalues");
        float *hf = infl_malloc(ctx, (size_t)bn * bn * sizeof(float), "eigenvectors");
        float *hd = infl_malloc(ctx, (size_t)bn * sizeof(float), "eigenvalues");
        if (!hw || !hf || !hd) {
            free(hw), free(hf), free(hd);
            GOTO_NOMEM_IF(1);
        }
        rc = be->download(ctx, hw, w, (size_t)bn * sizeof(double));
        double mean = 0;
        for (int i = 0; i < bn; i++) mean += hw[i] > 0 ? hw[i] : 0;
        mean /= bn;
        double lambda = o->damping_auto ? (o->damping_factor > 0 ? o->damping_factor : 0.1) * mean : o->damping;
        p->mean[b] = mean;
        p->lambda[b] = lambda;
        for (size_t i = 0; i < (size_t)bn * bn; i++) hf[i] = (float)Kb[i];
        for (int i = 0; i < bn; i++) {
            double e = (hw[i] > 0 ? hw[i] : 0) + lambda;
            hd[i] = e > 0 ? (float)(1.0 / e) : 0.0f;
        }
        if (rc == INFL_OK) rc = infl_be_alloc_f(ctx, &p->Vt[b], (size_t)bn * bn, "eigenvectors");
        if (rc == INFL_OK) rc = infl_be_alloc_f(ctx, &p->d[b], (size_t)bn, "eigenvalues");
        if (rc == INFL_OK) rc = be->upload(ctx, p->Vt[b], hf, (size_t)bn * bn * sizeof(float));
        if (rc == INFL_OK) rc = be->upload(ctx, p->d[b], hd, (size_t)bn * sizeof(float));
        free(hw);
        free(hf);
        free(hd);
        be->release(ctx, dw);
        be->release(ctx, w);
        dw = w = NULL;
        CHECK(rc);
        GOTO_IF(ctx, !(lambda > 0) && !(mean > 0), INFL_E_NUMERIC,
                "%s: the kernel of checkpoint %s is zero and the damping 0: give --damping > 0",
                store_index_path(f->r), in->ck[f->ck[c]].name);
        at += (size_t)bn * bn;
    }
done:
    if (dw) be->release(ctx, dw);
    if (w) be->release(ctx, w);
    infl_be_free(ctx, K);
    free(hK);
    free(dK);
    return rc;
}

// Y (n, k) backend = X (K + λI)⁻¹ per block; with self (Y NULL) instead out (n) += w Σ_j (X Vtᵀ)_j² d_j.
// T (n, k) scratch.
static infl_status ix_pre_apply(infl_ctx *ctx, const ix_pre *p, const float *X, int n, int k, float *Y, float *T,
                                float *out, float w) {
    const infl_backend *be = ctx->be;
    for (int b = 0; b < p->nb; b++) {
        int b0 = p->b0[b], bn = p->bn[b];
        // T = X_b Vtᵀ (the eigenbasis), then the columns scaled by d
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, n, bn, bn, 1.0f, X + b0, k, p->Vt[b], bn, 0.0f, T, bn));
        if (Y) {
            // T ∘ d per row: a GEMM with diag(d) would cost bn² per row; scale by rows of a broadcast
            for (int i = 0; i < n; i++) FORWARD_IF_ERROR(be->mul(ctx, T + (size_t)i * bn, T + (size_t)i * bn, p->d[b], bn));
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, n, bn, bn, 1.0f, T, bn, p->Vt[b], bn, 0.0f, Y + b0, k));
        } else {
            // Σ_j T_j² d_j: square, then one GEMV by d
            FORWARD_IF_ERROR(be->mul(ctx, T, T, T, (size_t)n * bn));
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, n, 1, bn, w, T, bn, p->d[b], 1, 1.0f, out, 1));
        }
    }
    return INFL_OK;
}

// ---- opening ----

// The checkpoints of file f the method uses: tracin and trak every one (or o->checkpoints),
// the others one (o->checkpoint, else the last).
static infl_status ix_pick(infl_ctx *ctx, const infl_rank_options *o, ix_file *f) {
    const infl_index_info *in = f->in;
    const char *path = store_index_path(f->r);
    bool many = o->method == INFL_METHOD_TRACIN || o->method == INFL_METHOD_TRAK;
    const char *list = many ? o->checkpoints : o->checkpoint;
    f->nck = 0;
    if (!list || !*list || !strcmp(list, "all") || (!many && !strcmp(list, "final"))) {
        if (many)
            for (int c = 0; c < in->nck; c++) f->ck[f->nck++] = c;
        else
            f->ck[f->nck++] = in->nck - 1;
    } else {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", list);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int hit = -1;
            char *end;
            long long step = strtoll(t, &end, 10);
            for (int c = 0; c < in->nck && hit < 0; c++)
                if (!strcmp(in->ck[c].name, t) || (*end == 0 && in->ck[c].step == step) ||
                    (!strcmp(t, "final") && c == in->nck - 1))
                    hit = c;
            RETURN_IF(ctx, hit < 0, INFL_E_ARG, "%s: the index holds no checkpoint '%s' (it has %d: %s ... %s)", path,
                      t, in->nck, in->ck[0].name, in->ck[in->nck - 1].name);
            RETURN_IF(ctx, f->nck >= INFL_INDEX_MAX_CK, INFL_E_ARG, "--checkpoints: too many");
            f->ck[f->nck++] = hit;
        }
    }
    for (int c = 0; c < f->nck; c++) {
        f->weight[c] = o->method == INFL_METHOD_TRACIN ? in->ck[f->ck[c]].lr : 1.0;
        RETURN_IF(ctx, o->method == INFL_METHOD_TRACIN && !(f->weight[c] > 0), INFL_E_FORMAT,
                  "%s: checkpoint %s has lr = %g; TracIn weighs checkpoints by their learning rate and needs lr > 0",
                  path, in->ck[f->ck[c]].name, f->weight[c]);
    }
    return INFL_OK;
}

// The options that open file f's run as attrib_open wants it: the run (o->run for the first
// file when given, else the index's own, resolved beside the index), the indexed training
// data, and the index's checkpoints used (method trak lists them whatever their lr).
typedef struct {
    infl_rank_options ro;
    char run[4096], names[4096];
} ix_runopts;

static void ix_run_options(const ix_state *s, const ix_file *f, int first, ix_runopts *r) {
    const infl_rank_options *o = s->o;
    const infl_index_info *in = f->in;
    store_resolve_beside(first && o->run && *o->run ? o->run : in->run, store_index_path(f->r), r->run, sizeof r->run);
    r->names[0] = 0;
    for (int c = 0; c < f->nck && strlen(r->names) < sizeof r->names - 40; c++)
        snprintf(r->names + strlen(r->names), sizeof r->names - strlen(r->names), "%s%s", c ? "," : "",
                 in->ck[f->ck[c]].name);
    r->ro = *o;
    r->ro.run = r->run;
    r->ro.train = in->data;
    r->ro.method = INFL_METHOD_TRAK;
    r->ro.checkpoints = r->names;
    r->ro.index = NULL;
    r->ro.factors = NULL;
}

static infl_projection ix_kind(const infl_index_info *in) {
    return !strcmp(in->projection, "kron")       ? INFL_PROJ_KRON
           : !strcmp(in->projection, "gaussian") ? INFL_PROJ_GAUSSIAN
                                                 : INFL_PROJ_RADEMACHER;
}

// Opens file f's run and projects the queries with the index's projection: the query side
// psi of every checkpoint (after the kernels of trak and if). first: fills res's queries.
static infl_status ix_queries(ix_state *s, ix_file *f, int first, infl_rank_result **resp) {
    infl_ctx *ctx = s->ctx;
    const infl_backend *be = ctx->be;
    const infl_rank_options *o = s->o;
    const infl_index_info *in = f->in;
    const char *path = store_index_path(f->r);
    infl_status rc = INFL_OK;
    ix_runopts ro;
    ix_run_options(s, f, first, &ro);
    const char *run = ro.run;
    attrib a;
    FORWARD_IF_ERROR(attrib_open(ctx, &a, &ro.ro, 1));
    infl_proj *p = NULL;
    infl_model_work *qw = NULL;
    attrib_qbatch qb = {0};
    float *hp = NULL, *hphi = NULL, *hq = NULL, *hl = NULL, *X = NULL, *T = NULL;
    int32_t *pred = NULL;
    int M = a.M, k = in->k;
    char model[256];
    infl_model_describe(a.m, model, sizeof model);
    GOTO_IF(ctx, strcmp(model, in->model), INFL_E_ARG, "%s: an index of model %s, but %s is %s", path, in->model, run,
            model);
    GOTO_IF(ctx, a.N != in->N, INFL_E_SHAPE, "%s: an index of %" PRId64 " rows, but %s has %" PRId64, path, in->N,
            in->data, a.N);
    GOTO_IF(ctx, s->M > 0 && M != s->M, INFL_E_INTERNAL, "queries differ between indexes");
    s->M = M;
    infl_rank_result *res = NULL;
    if (first) {
        res = *resp = attrib_result_new(M, o->top);
        GOTO_IF(ctx, !res, INFL_E_NOMEM, "out of memory for the results");
    }
    // the weights the index was made from
    hp = infl_malloc(ctx, a.P * sizeof(float), "the parameters");
    GOTO_NOMEM_IF(!hp);
    for (int c = 0; c < f->nck; c++) {
        CHECK(store_run_load(ctx, a.run, a.ck[c], hp));
        GOTO_IF(ctx, infl_weights_hash(hp, a.P) != in->ck_hash[f->ck[c]], INFL_E_ARG,
                "%s: the index was made from other weights than %s checkpoint %s (another run, or the run was "
                "retrained): make the index again (infl index --run %s)",
                path, run, in->ck[f->ck[c]].name, run);
    }
    infl_projection kind = ix_kind(in);
    int rows = a.tokens ? a.RQ : M;
    CHECK(proj_create(ctx, a.m, kind, in->k, in->kron_out, in->kron_in, in->seed, M, rows > M ? rows : M, &p));
    GOTO_IF(ctx, proj_dim(p) != k, INFL_E_FORMAT, "%s: dim %d, but its projection of %s gives %d", path, k, run,
            proj_dim(p));
    int margin = index_has_margin(a.m);
    GOTO_IF(ctx, margin != !strcmp(in->target, "margin"), INFL_E_FORMAT, "%s: target '%s' does not fit model %s", path,
            in->target, model);
    CHECK(attrib_query_batch(ctx, &a, &qb));
    CHECK(infl_model_work_create(ctx, a.m, M, &qw));
    hphi = infl_malloc(ctx, (size_t)M * k * sizeof(float), "projected queries");
    hq = infl_malloc(ctx, (size_t)M * sizeof(float), "query margins");
    hl = infl_malloc(ctx, (size_t)M * sizeof(float), "query losses");
    pred = infl_malloc(ctx, (size_t)M * sizeof(int32_t), "query predictions");
    GOTO_NOMEM_IF(!hphi || !hq || !hl || !pred);
    CHECK(infl_be_alloc_f(ctx, &X, (size_t)M * k, "projected queries"));
    CHECK(infl_be_alloc_f(ctx, &T, (size_t)M * k, "projected queries"));
    for (int c = 0; c < f->nck; c++) {
        if (o->method == INFL_METHOD_TRAK || o->method == INFL_METHOD_IF) CHECK(ix_fit_pre(s, f, c));
        CHECK(attrib_factors(ctx, &a, c, &qb.bt, qw));
        CHECK(proj_batch(ctx, p, a.m, qw, M, X));
        CHECK(be->download(ctx, hphi, X, (size_t)M * k * sizeof(float)));
        CHECK(be->download(ctx, hl, qw->loss, (size_t)M * sizeof(float)));
        for (int q = 0; q < M; q++)
            GOTO_IF(ctx, !isfinite(hl[q]), INFL_E_NUMERIC, "%s: checkpoint %s: query %d's loss is not finite", run,
                    in->ck[f->ck[c]].name, q);
        index_margin_rows(hphi, hq, hl, M, k, margin);
        // the query side: (w q_Q) φ_Q, φ_Q/|φ_Q| (gradcos), φ_Q for trak
        for (int q = 0; q < M; q++) {
            float *r = hphi + (size_t)q * k;
            double sc = f->weight[c] * hq[q];
            if (o->method == INFL_METHOD_TRAK) sc = 1.0 / s->C;
            if (o->method == INFL_METHOD_GRADCOS) {
                double n2 = 0;
                for (int j = 0; j < k; j++) n2 += (double)r[j] * r[j];
                sc = n2 > 0 ? 1.0 / sqrt(n2) : 0.0;
            }
            for (int j = 0; j < k; j++) r[j] = (float)(r[j] * sc);
        }
        CHECK(infl_be_alloc_f(ctx, &f->psi[c], (size_t)M * k, "the queries' side"));
        CHECK(be->upload(ctx, X, hphi, (size_t)M * k * sizeof(float)));
        if (f->pre[c].nb)
            CHECK(ix_pre_apply(ctx, &f->pre[c], X, M, k, f->psi[c], T, NULL, 0));
        else
            CHECK(be->copy(ctx, f->psi[c], X, (size_t)M * k * sizeof(float)));
    }
    if (res) {
        // labels, predictions and losses at the last checkpoint (qw holds its forward)
        CHECK(infl_model_predict(ctx, a.m, qw, pred));
        for (int q = 0; q < M; q++) {
            res->query_loss[q] = hl[q];
            res->query_label[q] = qb.hy ? qb.hy[q] : -1;
            res->query_pred[q] = pred[q];
        }
        res->query_begin = a.query ? store_split_info(a.query)->begin : 0;
        res->weight_decay = a.m->wd;
        CHECK(attrib_give_query_texts(ctx, &a, res));
    }
done:
    free(hp);
    free(hphi);
    free(hq);
    free(hl);
    free(pred);
    infl_be_free(ctx, X);
    infl_be_free(ctx, T);
    attrib_qbatch_free(ctx, &qb);
    infl_model_work_free(ctx, a.m, qw);
    proj_free(ctx, p);
    attrib_close(&a);
    return rc;
}

int index_chunk_rows(int k, int64_t N) {
    int64_t R = IX_CHUNK_FLOATS / k;
    R = R < 64 ? 64 : R > 16384 ? 16384 : R;
    return (int)(R > N ? N : R);
}

// Opens the index files of o->index and checks that they index the same training rows.
static infl_status ix_open(infl_ctx *ctx, ix_state *s, const infl_rank_options *o) {
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->o = o;
    infl_method m = o->method;
    RETURN_IF(ctx,
              m != INFL_METHOD_GRADDOT && m != INFL_METHOD_GRADCOS && m != INFL_METHOD_TRACIN && m != INFL_METHOD_TRAK &&
                  m != INFL_METHOD_IF,
              INFL_E_ARG, "--index serves --method graddot, gradcos, tracin, trak or if (not %s)", infl_method_name(m));
    RETURN_IF(ctx, o->query_rank || o->prefilter_bm25 || o->rerank || o->factors, INFL_E_ARG,
              "--index scores stored projections: --query-rank, --prefilter, --rerank and --factors do not apply");
    char buf[8192];
    snprintf(buf, sizeof buf, "%s", o->index);
    int kmax = 0;
    s->f = infl_calloc(ctx, IX_MAX_FILES, sizeof(ix_file), "the indexes");
    if (!s->f) return INFL_E_NOMEM;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        RETURN_IF(ctx, s->nf >= IX_MAX_FILES, INFL_E_ARG, "--index: at most %d files", IX_MAX_FILES);
        ix_file *f = &s->f[s->nf];
        FORWARD_IF_ERROR(store_index_open(ctx, t, &f->r));
        s->nf++;
        f->in = store_index_info(f->r);
        FORWARD_IF_ERROR(ix_pick(ctx, o, f));
        f->pre = infl_calloc(ctx, (size_t)f->nck, sizeof(ix_pre), "the preconditioners");
        if (!f->pre) return INFL_E_NOMEM;
        s->C += f->nck;
        if (f->in->k > kmax) kmax = f->in->k;
        if (s->nf > 1) {
            const infl_index_info *a = s->f[0].in, *b = f->in;
            RETURN_IF(ctx, a->N != b->N || strcmp(a->data, b->data), INFL_E_ARG,
                      "%s indexes %s (%" PRId64 " rows) but %s indexes %s (%" PRId64
                      " rows): an ensemble's indexes must cover the same training rows",
                      store_index_path(f->r), b->data, b->N, store_index_path(s->f[0].r), a->data, a->N);
        }
    }
    RETURN_IF(ctx, s->nf == 0, INFL_E_ARG, "--index: no file given");
    RETURN_IF(ctx, s->nf > 1 && m != INFL_METHOD_TRAK, INFL_E_ARG,
              "%d index files: several indexes (of independently trained runs) are TRAK's ensemble; use --method trak "
              "or one index",
              s->nf);
    s->N = s->f[0].in->N;
    s->R = index_chunk_rows(kmax, s->N);
    s->hphi = infl_malloc(ctx, (size_t)s->R * kmax * sizeof(float), "index rows");
    s->hq = infl_malloc(ctx, (size_t)s->R * sizeof(float), "index rows");
    s->qbar = infl_malloc(ctx, (size_t)s->R * sizeof(double), "index rows");
    if (!s->hphi || !s->hq || !s->qbar) return INFL_E_NOMEM;
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &s->dphi, (size_t)s->R * kmax, "index rows"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &s->T, (size_t)s->R * kmax, "index rows"));
    FORWARD_IF_ERROR(infl_be_alloc_f(ctx, &s->rsum, (size_t)s->R, "index rows"));
    return INFL_OK;
}

// The scores file's attributes of a ranking from indexes.
static infl_status ix_attrs(infl_ctx *ctx, infl_scw *w, const ix_state *s, const char *query) {
    const infl_rank_options *o = s->o;
    const infl_index_info *in = s->f[0].in;
    char run[4096], names[4096] = "";
    store_resolve_beside(o->run && *o->run ? o->run : in->run, store_index_path(s->f[0].r), run, sizeof run);
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "method", infl_method_name(o->method)));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "run", run));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "train", in->data));
    if (query) FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "query", query));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "index", o->index));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "projection", in->projection));
    FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "dim", in->k));
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "infl_version_string", INFL_VERSION_STRING));
    for (int c = 0; c < s->f[0].nck && strlen(names) < sizeof names - 40; c++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", c ? "," : "",
                 in->ck[s->f[0].ck[c]].name);
    FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "checkpoints", names));
    if (o->method == INFL_METHOD_TRAK || o->method == INFL_METHOD_IF) {
        char rule[64];
        snprintf(rule, sizeof rule, "auto: %g x mean eigenvalue per block", o->damping_factor > 0 ? o->damping_factor : 0.1);
        FORWARD_IF_ERROR(store_scores_attr_str(ctx, w, "damping_rule", o->damping_auto ? rule : "given"));
        FORWARD_IF_ERROR(store_scores_attr_f64(ctx, w, "damping", s->f[0].pre[0].lambda[0]));
    }
    return INFL_OK;
}

// One chunk of rows [r0, r0 + n): S (M, n) host = the queries' scores.
static infl_status ix_score_chunk(ix_state *s, int64_t r0, int n, float *Sd, float *hS) {
    infl_ctx *ctx = s->ctx;
    const infl_backend *be = ctx->be;
    int M = s->M, first = 1;
    bool trak = s->o->method == INFL_METHOD_TRAK;
    if (trak)
        for (int i = 0; i < n; i++) s->qbar[i] = 0;
    for (int i = 0; i < s->nf; i++) {
        ix_file *f = &s->f[i];
        int k = f->in->k;
        for (int c = 0; c < f->nck; c++) {
            FORWARD_IF_ERROR(ix_load(s, f, c, r0, n, s->o->method));
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, M, n, k, 1.0f, f->psi[c], k, s->dphi, k, first ? 0.0f : 1.0f,
                                       Sd, n));
            first = 0;
            if (trak)
                for (int j = 0; j < n; j++) s->qbar[j] += (double)s->hq[j] / s->C;
        }
    }
    FORWARD_IF_ERROR(be->download(ctx, hS, Sd, (size_t)M * n * sizeof(float)));
    if (trak)
        for (int q = 0; q < M; q++)
            for (int j = 0; j < n; j++) hS[(size_t)q * n + j] = (float)(hS[(size_t)q * n + j] * s->qbar[j]);
    return INFL_OK;
}

// Language models: each reported document's score split over its token positions. The
// projection is linear, so a document's φ is the sum of its token rows' (each row projected
// as an example of its own) and its score the sum of ψ_Q · φ_t over the rows t, file f and
// checkpoint c (documents carry the loss's gradient: q = 1; gradcos divides by |φ|).
static infl_status ix_token_shares(ix_state *s, infl_rank_result *res) {
    infl_ctx *ctx = s->ctx;
    const infl_backend *be = ctx->be;
    const infl_rank_options *o = s->o;
    int M = s->M, k = res->k;
    size_t nd = (size_t)M * (k > 0 ? k : 1);
    res->top_shares = calloc(nd, sizeof(infl_token_shares));
    res->bottom_shares = calloc(nd, sizeof(infl_token_shares));
    RETURN_IF(ctx, !res->top_shares || !res->bottom_shares, INFL_E_NOMEM, "out of memory for token shares");
    infl_status rc = INFL_OK;
    for (int i = 0; i < s->nf && rc == INFL_OK; i++) {
        ix_file *f = &s->f[i];
        const infl_index_info *in = f->in;
        ix_runopts ro;
        ix_run_options(s, f, i == 0, &ro);
        attrib a;
        FORWARD_IF_ERROR(attrib_open(ctx, &a, &ro.ro, 0));
        int T = a.ctxT, kk = in->k;
        infl_proj *p = NULL;
        infl_model_work *w = NULL;
        int32_t *tok = malloc((size_t)T * sizeof(int32_t)), *ident = malloc((size_t)(T + 1) * sizeof(int32_t));
        float *hrow = malloc((size_t)T * M * sizeof(float)), *hphi = malloc((size_t)T * kk * sizeof(float));
        float *phi = NULL, *St = NULL;
        infl_projection kind = ix_kind(in);
        const int64_t begin = store_split_info(a.train)->begin;
        GOTO_IF(ctx, !tok || !ident || !hrow || !hphi, INFL_E_NOMEM, "out of memory for token shares");
        for (int t = 0; t <= T; t++) ident[t] = t;
        CHECK(proj_create(ctx, a.m, kind, kk, in->kron_out, in->kron_in, in->seed, T, T, &p));
        CHECK(infl_model_work_create(ctx, a.m, 1, &w));
        CHECK(infl_be_alloc_f(ctx, &phi, (size_t)T * kk, "token projections"));
        CHECK(infl_be_alloc_f(ctx, &St, (size_t)T * M, "token shares"));
        for (int q = 0; q < M; q++)
            for (int side = 0; side < 2; side++)
                for (int j = 0; j < k; j++) {
                    size_t at = (size_t)q * k + j;
                    infl_token_shares *sh = &(side ? res->bottom_shares : res->top_shares)[at];
                    int64_t row = (side ? res->bottom_index : res->top_index)[at] - begin;
                    int32_t len;
                    CHECK(store_split_read_docs(ctx, a.train, row, 1, T, 0, tok, &len, NULL));
                    infl_batch bt = {.b = 1, .index0 = begin + row, .tok = tok, .T = T, .len = &len};
                    double norm2 = 0;
                    for (int c = 0; c < f->nck; c++) {
                        CHECK(attrib_factors(ctx, &a, c, &bt, w));
                        int rows = w->rows;
                        if (!sh->share) {
                            sh->n = rows;
                            sh->token = malloc((size_t)(rows ? rows : 1) * sizeof(int32_t));
                            sh->share = calloc((size_t)(rows ? rows : 1), sizeof(float));
                            GOTO_IF(ctx, !sh->token || !sh->share, INFL_E_NOMEM, "out of memory for token shares");
                            for (int t = 0; t < rows; t++) sh->token[t] = t < len ? tok[t] : a.m->spec.gpt.eot;
                        }
                        // every token row as an example of its own
                        infl_model_work view = *w;
                        view.row_off = ident;
                        CHECK(proj_batch(ctx, p, a.m, &view, rows, phi));
                        CHECK(be->sgemm(ctx, INFL_N, INFL_T, rows, M, kk, 1.0f, phi, kk, f->psi[c], kk, 0.0f, St, M));
                        CHECK(be->download(ctx, hrow, St, (size_t)rows * M * sizeof(float)));
                        for (int t = 0; t < rows && t < sh->n; t++) sh->share[t] += hrow[(size_t)t * M + q];
                        if (o->method == INFL_METHOD_GRADCOS) {
                            CHECK(be->download(ctx, hphi, phi, (size_t)rows * kk * sizeof(float)));
                            for (int e = 0; e < kk; e++) {
                                double v = 0;
                                for (int t = 0; t < rows; t++) v += hphi[(size_t)t * kk + e];
                                norm2 += v * v;
                            }
                        }
                    }
                    if (o->method == INFL_METHOD_GRADCOS)
                        for (int t = 0; t < sh->n; t++) sh->share[t] = (float)(sh->share[t] * (norm2 > 0 ? 1.0 / sqrt(norm2) : 0.0));
                }
    done:
        free(tok);
        free(ident);
        free(hrow);
        free(hphi);
        infl_be_free(ctx, phi);
        infl_be_free(ctx, St);
        infl_model_work_free(ctx, a.m, w);
        proj_free(ctx, p);
        attrib_close(&a);
    }
    return rc;
}

infl_status index_rank(infl_ctx *ctx, const infl_rank_options *o, attrib_block_fn block, void *user,
                       infl_rank_result **out) {
    *out = NULL;
    ix_state s;
    infl_status rc = ix_open(ctx, &s, o);
    infl_rank_result *res = NULL;
    infl_topk *tk = NULL;
    infl_scw *scw = NULL;
    float *Sd = NULL, *hS = NULL;
    CHECK(rc);
    GOTO_IF(ctx, o->top > s.N, INFL_E_ARG, "--top %d is larger than the %" PRId64 " training examples", o->top, s.N);
    double t0 = infl_now();
    for (int i = 0; i < s.nf; i++) CHECK(ix_queries(&s, &s.f[i], i == 0, &res));
    res->seconds_prepare = infl_now() - t0;
    res->N = s.N;
    res->checkpoints = s.C;
    int M = s.M;
    infl_dataref tref;
    CHECK(infl_dataref_parse(ctx, s.f[0].in->data, &tref));
    const int64_t begin = tref.begin;
    if (o->output) {
        CHECK(store_scores_create(ctx, o->output, o->force, M, o->top, s.N, o->save_scores, &scw));
        CHECK(ix_attrs(ctx, scw, &s, o->query));
    }
    double t1 = infl_now();
    CHECK(infl_topk_create(ctx, M, o->top, &tk));
    CHECK(infl_be_alloc_f(ctx, &Sd, (size_t)M * s.R, "a score block"));
    hS = infl_malloc(ctx, (size_t)M * s.R * sizeof(float), "a score block");
    GOTO_NOMEM_IF(!hS);
    for (int64_t r0 = 0; r0 < s.N; r0 += s.R) {
        int n = (int)(s.N - r0 < s.R ? s.N - r0 : s.R);
        CHECK(ix_score_chunk(&s, r0, n, Sd, hS));
        CHECK(infl_topk_push(ctx, tk, hS, M, n, n, begin + r0));
        if (block) CHECK(block(ctx, user, hS, M, n, n, r0));
        if (scw && o->save_scores) CHECK(store_scores_write_block(ctx, scw, hS, n, n, r0));
        for (int i = 0; i < s.nf; i++) res->flops += 2.0 * M * n * (double)s.f[i].in->k * s.f[i].nck;
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        infl_progress(ctx, "rank", (uint64_t)(r0 + n), (uint64_t)s.N, infl_method_name(o->method));
    }
    res->seconds_score = infl_now() - t1;
    attrib_result_topk(res, tk, o->top);
    if (o->token_shares) CHECK(ix_token_shares(&s, res));
    if (scw) {
        CHECK(store_scores_write_topk(ctx, scw, res->top_index, res->top_score, res->bottom_index, res->bottom_score));
        rc = store_scores_commit(ctx, scw);
        scw = NULL;
        CHECK(rc);
    }
    *out = res;
    res = NULL;
done:
    store_scores_abort(scw);
    infl_topk_free(tk);
    infl_be_free(ctx, Sd);
    free(hS);
    infl_rank_result_free(res);
    ix_close(&s);
    return rc;
}

infl_status index_self(infl_ctx *ctx, const infl_rank_options *o, infl_self_result *r, char *data, size_t size) {
    ix_state s;
    infl_status rc = ix_open(ctx, &s, o);
    float *sd = NULL, *hs = NULL;
    double *acc = NULL;
    CHECK(rc);
    GOTO_IF(ctx, o->method == INFL_METHOD_GRADCOS, INFL_E_ARG,
            "self-influence by gradcos is 1 for every example; use tracin, graddot, trak or if");
    r->N = s.N;
    snprintf(data, size, "%s", s.f[0].in->data);
    r->self = malloc((size_t)s.N * sizeof(float));
    acc = calloc((size_t)s.N, sizeof(double));
    hs = malloc((size_t)s.R * sizeof(float));
    GOTO_IF(ctx, !r->self || !acc || !hs, INFL_E_NOMEM, "out of memory for %" PRId64 " self-influences", s.N);
    CHECK(infl_be_alloc_f(ctx, &sd, (size_t)s.R, "self-influences"));
    bool trak = o->method == INFL_METHOD_TRAK, pre = trak || o->method == INFL_METHOD_IF;
    for (int i = 0; i < s.nf; i++) {
        ix_file *f = &s.f[i];
        int k = f->in->k;
        for (int c = 0; c < f->nck; c++) {
            if (pre) CHECK(ix_fit_pre(&s, f, c));
            for (int64_t r0 = 0; r0 < s.N; r0 += s.R) {
                int n = (int)(s.N - r0 < s.R ? s.N - r0 : s.R);
                CHECK(ix_load(&s, f, c, r0, n, o->method));
                if (pre) {
                    CHECK(ctx->be->fill(ctx, sd, 0.0f, (size_t)n));
                    CHECK(ix_pre_apply(ctx, &f->pre[c], s.dphi, n, k, NULL, s.T, sd, 1.0f));
                } else {
                    CHECK(ctx->be->row_dot(ctx, sd, s.dphi, s.dphi, n, k, 1.0f, 0.0f));
                }
                CHECK(ctx->be->download(ctx, hs, sd, (size_t)n * sizeof(float)));
                // trak: φ K⁻¹ φ averaged, times the mean q (accumulated below as Σ q / C)
                for (int j = 0; j < n; j++)
                    acc[r0 + j] += trak ? (double)hs[j] / s.C * 1.0 : f->weight[c] * (double)hs[j];
                if (trak) {
                    // the mean q of the row, kept in r->self until the end
                    for (int j = 0; j < n; j++)
                        r->self[r0 + j] = (i == 0 && c == 0 ? 0.0f : r->self[r0 + j]) + s.hq[j] / (float)s.C;
                }
                GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
            }
            ix_pre_free(ctx, &f->pre[c]);
        }
    }
    for (int64_t j = 0; j < s.N; j++) r->self[j] = (float)(trak ? acc[j] * r->self[j] : acc[j]);
done:
    infl_be_free(ctx, sd);
    free(hs);
    free(acc);
    ix_close(&s);
    return rc;
}
