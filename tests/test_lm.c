/*
 * test_lm.c — attribution over token sequences (a tiny GPT): every method's scores
 * against a float64 reference built from each document's gradient (the model's own
 * backward, per document, mapped to the layer space), EK-FAC factors against token
 * covariances and per-document Λ computed naively, both scoring forms (token rows and
 * documents' gradients), sub-batches that cut documents apart, token shares that add
 * up to the score, completion queries (the prompt's positions carry no loss), and the
 * bad input a user can give.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "models/model.h"
#include "pipelines/attrib.h"
#include "store/h5util.h"
#include "store/store.h"
#include "cudapair.h"
#include "testutil.h"

#define CTX 16

static char data_path[512], run_path[512], fac_path[512];

// Fits the tiny GPT's factors by a strategy (empirical Fisher) into path (on ctx's
// backend); with out, reads them back.
static void fit_lm(infl_ctx *ctx, infl_strategy strategy, const char *path, infl_factors **out) {
    infl_fit_options fo = infl_fit_options_default();
    fo.run = run_path;
    fo.fisher_empirical = 1;
    fo.strategy = strategy;
    fo.force = 1;
    cr_assert_eq(infl_fit(ctx, &fo, path, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    if (out) cr_assert_eq(store_factors_read(ctx, path, out), INFL_OK, "%s", infl_ctx_error(ctx));
}

// Documents of 3 to 40 bytes (some longer than the context), imported with the bytes
// tokenizer; a 1-block GPT trained briefly with 3 checkpoints; its EK-FAC factors
// (empirical Fisher, so the reference can use the data's targets).
static void setup_lm(void) {
    snprintf(data_path, sizeof data_path, "%s", tu_path("lm_docs.h5"));
    snprintf(run_path, sizeof run_path, "%s", tu_path("lm_gpt.h5"));
    snprintf(fac_path, sizeof fac_path, "%s", tu_path("lm_fac.h5"));
    const char *txt = tu_path("lm_corpus.txt");
    FILE *f = fopen(txt, "w");
    cr_assert(f);
    const char *words[] = {"cat", "dog ran far", "sun", "tea is hot", "we", "it is late at night again", "ok"};
    uint64_t st = 7;
    for (int i = 0; i < 44; i++) {
        int n = 1 + (int)(tu_uniform(&st) * 3);
        for (int j = 0; j < n; j++) fprintf(f, "%s%s", j ? " " : "", words[(int)(tu_uniform(&st) * 7)]);
        fprintf(f, "\n");
    }
    fclose(f);
    tu_import_lines(txt, data_path, 0, infl_import_text_options_default().test_fraction);
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_gpt_default();
    o.data = tu_ref(0, data_path, "train");
    o.nlayers = 1;
    o.heads = 2;
    o.dim = 8;
    o.context = CTX;
    o.epochs = 2;
    o.batch = 8;
    o.lr = 1e-2;
    o.warmup = 2;
    o.checkpoint_every = 4;
    o.force = 1;
    cr_assert_eq(infl_train(ctx, &o, run_path, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    fit_lm(ctx, INFL_STRATEGY_EKFAC, fac_path, NULL);
    infl_ctx_free(ctx);
}

// ---- the reference ----

typedef struct {
    infl_model *m;
    size_t P, S;      // parameters, layer space
    int ncheck;
    double lr[8];
    float *W[8];      // backend weights per checkpoint
    infl_model_work *w;
    float *grad;      // backend (P)
    float *hg;        // host (P)
} ref;

static void ref_open(infl_ctx *ctx, ref *r) {
    memset(r, 0, sizeof *r);
    infl_run *run;
    cr_assert_eq(store_run_open(ctx, run_path, &run), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_model_create(ctx, store_run_spec(run), 0, &r->m), INFL_OK);
    r->P = r->m->nparams;
    r->S = r->m->lsize;
    r->ncheck = store_run_ncheckpoints(run);
    cr_assert(r->ncheck >= 2 && r->ncheck <= 8, "%d checkpoints", r->ncheck);
    float *hp = malloc(r->P * sizeof(float));
    for (int c = 0; c < r->ncheck; c++) {
        cr_assert_eq(store_run_load(ctx, run, c, hp), INFL_OK);
        r->lr[c] = store_run_checkpoint(run, c)->lr;
        r->W[c] = tu_upload(ctx, hp, r->P * sizeof(float));
    }
    free(hp);
    store_run_close(run);
    cr_assert_eq(infl_model_work_create(ctx, r->m, 1, &r->w), INFL_OK);
    cr_assert_eq(infl_be_alloc_f(ctx, &r->grad, r->P, "grad"), INFL_OK);
    r->hg = malloc(r->P * sizeof(float));
}

static void ref_close(infl_ctx *ctx, ref *r) {
    for (int c = 0; c < r->ncheck; c++) infl_be_free(ctx, r->W[c]);
    infl_be_free(ctx, r->grad);
    infl_model_work_free(ctx, r->m, r->w);
    infl_model_free(r->m);
    free(r->hg);
}

// Document (tok, len)'s gradient at checkpoint c in the layer space (g, S doubles), from
// the model's parameter gradient of a one-document batch; range: its loss positions.
static void ref_grad(infl_ctx *ctx, ref *r, int c, const int32_t *tok, int32_t len, const int32_t *range,
                     double *g) {
    infl_batch bt = {.b = 1, .tok = tok, .T = CTX, .len = &len, .loss_range = range};
    cr_assert_eq(infl_model_forward(ctx, r->m, r->W[c], &bt, r->w), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_model_backward(ctx, r->m, r->W[c], &bt, NULL, r->w, r->grad, 1.0f), INFL_OK);
    cr_assert_eq(ctx->be->download(ctx, r->hg, r->grad, r->P * sizeof(float)), INFL_OK);
    for (int l = 0; l < r->m->nlayers; l++) {
        const infl_linear *ly = &r->m->layer[l];
        double *gl = g + r->m->loff[l];
        for (size_t i = 0; i < (size_t)ly->d_out * ly->d_in; i++) gl[i] = r->hg[ly->w_off + i];
        if (ly->bias)
            for (int i = 0; i < ly->d_out; i++) gl[(size_t)ly->d_out * ly->d_in + i] = r->hg[ly->b_off + i];
    }
}

// Every document of a split: tokens (n, CTX) and lengths.
static int64_t read_docs(infl_ctx *ctx, const char *ref_, int32_t **tok, int32_t **len) {
    infl_split *s = tu_open_split(ctx, ref_);
    int64_t n = store_split_info(s)->n;
    *tok = calloc((size_t)n * CTX, sizeof(int32_t));
    *len = calloc((size_t)n, sizeof(int32_t));
    cr_assert_eq(store_split_read_docs(ctx, s, 0, n, CTX, 0, *tok, *len, NULL), INFL_OK);
    store_split_close(s);
    return n;
}

// All gradients: G (n, S) at checkpoint c.
static double *all_grads(infl_ctx *ctx, ref *r, int c, const int32_t *tok, const int32_t *len, int64_t n) {
    double *G = malloc((size_t)n * r->S * sizeof(double));
    for (int64_t i = 0; i < n; i++) ref_grad(ctx, r, c, tok + i * CTX, len[i], NULL, G + (size_t)i * r->S);
    return G;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// Full score matrix (M, N) of a ranking through attrib_rank's block callback.
static float *rank_full(infl_ctx *ctx, infl_rank_options *o, int M, int64_t N, infl_rank_result **res) {
    attrib_full full = {.S = calloc((size_t)M * N, sizeof(float)), .N = N};
    infl_rank_result *r = NULL;
    cr_assert_eq(attrib_rank(ctx, o, attrib_keep_full, &full, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    if (res) *res = r;
    else infl_rank_result_free(r);
    return full.S;
}

static void assert_close(const float *got, const double *want, size_t n, double tol, const char *what) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fabs(want[i]) > mx ? fabs(want[i]) : mx;
    cr_assert(mx > 0, "%s: the reference is all zero", what);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * mx, "%s: entry %zu: %.8g, reference %.8g (max %.4g)", what, i,
                  got[i], want[i], mx);
}

static infl_rank_options lm_opts(infl_method m) {
    infl_rank_options o = infl_rank_options_default();
    o.run = run_path;
    o.query = tu_ref(1, data_path, "test[0:3]");
    o.method = m;
    o.top = 5;
    return o;
}

// ---- graddot, gradcos, tracin ----

static void check_dot_methods(int form, int64_t shard) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    ref r;
    ref_open(ctx, &r);
    int32_t *ztok, *zlen, *qtok, *qlen;
    int64_t N = read_docs(ctx, tu_ref(2, data_path, "train"), &ztok, &zlen);
    int64_t M = read_docs(ctx, tu_ref(3, data_path, "test[0:3]"), &qtok, &qlen);
    double *want = calloc((size_t)M * N, sizeof(double)), *cosw = calloc((size_t)M * N, sizeof(double)),
           *tw = calloc((size_t)M * N, sizeof(double));
    for (int c = 0; c < r.ncheck; c++) {
        double *GZ = all_grads(ctx, &r, c, ztok, zlen, N), *GQ = all_grads(ctx, &r, c, qtok, qlen, M);
        for (int64_t q = 0; q < M; q++)
            for (int64_t z = 0; z < N; z++) {
                double d = dot(GQ + q * r.S, GZ + z * r.S, r.S);
                tw[q * N + z] += r.lr[c] * d;
                if (c == r.ncheck - 1) {
                    want[q * N + z] = d;
                    cosw[q * N + z] =
                        d / sqrt(dot(GQ + q * r.S, GQ + q * r.S, r.S) * dot(GZ + z * r.S, GZ + z * r.S, r.S));
                }
            }
        free(GZ);
        free(GQ);
    }
    const infl_method ms[3] = {INFL_METHOD_GRADDOT, INFL_METHOD_GRADCOS, INFL_METHOD_TRACIN};
    const double *ws[3] = {want, cosw, tw};
    for (int i = 0; i < 3; i++) {
        infl_rank_options o = lm_opts(ms[i]);
        o.score_form = form;
        o.shard_rows = shard;
        float *S = rank_full(ctx, &o, (int)M, N, NULL);
        assert_close(S, ws[i], (size_t)M * N, 2e-4, infl_method_name(ms[i]));
        free(S);
    }
    free(want);
    free(cosw);
    free(tw);
    free(ztok), free(zlen), free(qtok), free(qlen);
    ref_close(ctx, &r);
    infl_ctx_free(ctx);
}

Test(lm, dot_methods_by_token_rows_match_the_reference, .timeout = 300) { check_dot_methods(1, 0); }
Test(lm, dot_methods_by_documents_gradients_match_the_reference, .timeout = 300) { check_dot_methods(2, 0); }
Test(lm, shards_that_cut_the_documents_give_the_same_scores, .timeout = 300) {
    check_dot_methods(0, 3);  // 3 documents a shard: every sub-batch boundary cuts the token rows apart
}

// ---- EK-FAC ----

// The factors: Q_A (A_ref) Q_Aᵀ diagonal with A_vals on it (and S likewise), A and S the
// token covariances of the seam's rows; Λ = mean over documents of (Q_Sᵀ G Q_A)^∘2.
Test(lm, ekfac_factors_are_token_covariances_and_document_lambda, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    ref r;
    ref_open(ctx, &r);
    infl_factors *fac;
    cr_assert_eq(store_factors_read(ctx, fac_path, &fac), INFL_OK, "%s", infl_ctx_error(ctx));
    int c = r.ncheck - 1;  // fitted on the final checkpoint
    int32_t *ztok, *zlen;
    int64_t N = read_docs(ctx, tu_ref(2, data_path, "train"), &ztok, &zlen);
    double *G = all_grads(ctx, &r, c, ztok, zlen, N);
    for (int l = 0; l < r.m->nlayers; l++) {
        const infl_linear *ly = &r.m->layer[l];
        int din = ly->d_in, dout = ly->d_out, ni = infl_linear_ni(ly);
        double *A = calloc((size_t)ni * ni, sizeof(double)), *S = calloc((size_t)dout * dout, sizeof(double));
        float *ha = malloc((size_t)CTX * din * sizeof(float)), *hd = malloc((size_t)CTX * dout * sizeof(float));
        int64_t ntok = 0;
        for (int64_t z = 0; z < N; z++) {
            infl_batch bt = {.b = 1, .tok = ztok + z * CTX, .T = CTX, .len = &zlen[z]};
            cr_assert_eq(infl_model_factors(ctx, r.m, r.W[c], &bt, r.w), INFL_OK);
            int rows = r.w->rows;
            ctx->be->download(ctx, ha, r.w->A[l], (size_t)rows * din * sizeof(float));
            ctx->be->download(ctx, hd, r.w->D[l], (size_t)rows * dout * sizeof(float));
            for (int t = 0; t < rows; t++) {
                for (int i = 0; i < ni; i++)
                    for (int j = 0; j < ni; j++)
                        A[i * ni + j] += (i < din ? ha[t * din + i] : 1.0) * (j < din ? ha[t * din + j] : 1.0);
                for (int i = 0; i < dout; i++)
                    for (int j = 0; j < dout; j++) S[i * dout + j] += (double)hd[t * dout + i] * hd[t * dout + j];
            }
            ntok += rows;
        }
        // Q C Qᵀ = diag(vals): checks the covariance and its eigenvectors together
        struct {
            double *C, *Q, *vals;
            int n;
            const char *name;
        } cv[2] = {{A, fac->A_vecs[l], fac->A_vals[l], ni, "A"}, {S, fac->S_vecs[l], fac->S_vals[l], dout, "S"}};
        for (int k = 0; k < 2; k++) {
            int n = cv[k].n;
            double mx = 0;
            for (int i = 0; i < n * n; i++) mx = fmax(mx, fabs(cv[k].C[i] / ntok));
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    double v = 0;
                    for (int a = 0; a < n; a++)
                        for (int b = 0; b < n; b++) v += cv[k].Q[i * n + a] * cv[k].C[a * n + b] / ntok * cv[k].Q[j * n + b];
                    double wantv = i == j ? cv[k].vals[i] : 0.0;
                    cr_assert(fabs(v - wantv) <= 1e-4 * mx, "layer %d %s: (Q C Qt)[%d,%d] = %.6g, expected %.6g", l,
                              cv[k].name, i, j, v, wantv);
                }
        }
        // Λ from the documents' gradients rotated by the file's bases
        double *lam = calloc((size_t)dout * ni, sizeof(double)), *Gm = malloc((size_t)dout * ni * sizeof(double));
        for (int64_t z = 0; z < N; z++) {
            const double *gl = G + z * r.S + r.m->loff[l];
            for (int i = 0; i < dout; i++)
                for (int j = 0; j < ni; j++) Gm[i * ni + j] = j < din ? gl[(size_t)i * din + j] : gl[(size_t)dout * din + i];
            for (int a = 0; a < dout; a++)
                for (int b = 0; b < ni; b++) {
                    double v = 0;
                    for (int i = 0; i < dout; i++)
                        for (int j = 0; j < ni; j++) v += fac->S_vecs[l][a * dout + i] * Gm[i * ni + j] * fac->A_vecs[l][b * ni + j];
                    lam[a * ni + b] += v * v / N;
                }
        }
        float *got = malloc((size_t)dout * ni * sizeof(float));
        for (int i = 0; i < dout * ni; i++) got[i] = (float)fac->lambda[l][i];
        assert_close(got, lam, (size_t)dout * ni, 1e-4, "lambda");
        free(got), free(lam), free(Gm), free(A), free(S), free(ha), free(hd);
    }
    free(G), free(ztok), free(zlen);
    infl_factors_free(fac);
    ref_close(ctx, &r);
    infl_ctx_free(ctx);
}

// The diagonal strategy: Λ = the mean over documents of each gradient entry squared,
// in the layer's (d_out, d_in + 1) layout.
Test(lm, diagonal_factors_are_the_mean_squared_document_gradient, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    infl_factors *fac;
    fit_lm(ctx, INFL_STRATEGY_DIAGONAL, tu_path("lm_diag.h5"), &fac);
    ref r;
    ref_open(ctx, &r);
    int32_t *ztok, *zlen;
    int64_t N = read_docs(ctx, tu_ref(2, data_path, "train"), &ztok, &zlen);
    double *G = all_grads(ctx, &r, r.ncheck - 1, ztok, zlen, N);
    for (int l = 0; l < r.m->nlayers; l++) {
        const infl_linear *ly = &r.m->layer[l];
        int din = ly->d_in, dout = ly->d_out, ni = infl_linear_ni(ly);
        double *want = calloc((size_t)dout * ni, sizeof(double));
        float *got = malloc((size_t)dout * ni * sizeof(float));
        for (int64_t z = 0; z < N; z++) {
            const double *gl = G + z * r.S + r.m->loff[l];
            for (int i = 0; i < dout; i++)
                for (int j = 0; j < ni; j++) {
                    double v = j < din ? gl[(size_t)i * din + j] : gl[(size_t)dout * din + i];
                    want[i * ni + j] += v * v / N;
                }
        }
        for (int i = 0; i < dout * ni; i++) got[i] = (float)fac->lambda[l][i];
        assert_close(got, want, (size_t)dout * ni, 1e-4, "diagonal lambda");
        free(want), free(got);
    }
    free(G), free(ztok), free(zlen);
    infl_factors_free(fac);
    ref_close(ctx, &r);
    infl_ctx_free(ctx);
}

// K-FAC's Λ over documents: λ_S ⊗ λ_A of the per-token covariances times the mean token
// positions of a document, so that it is per document as EK-FAC's is.
Test(lm, kfac_lambda_is_per_document, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    infl_factors *f;
    fit_lm(ctx, INFL_STRATEGY_KFAC, tu_path("lm_kfac.h5"), &f);
    int32_t *tok, *len;
    int64_t N = read_docs(ctx, tu_ref(2, data_path, "train"), &tok, &len), rows = 0;
    for (int64_t i = 0; i < N; i++) rows += len[i] + 1 < CTX ? len[i] + 1 : CTX;
    double tbar = (double)rows / (double)N;
    cr_assert(tbar > 2, "documents of %.2f positions", tbar);
    for (int l = 0; l < f->L; l++) {
        int ni = infl_linear_ni(&f->layer[l]), no = f->layer[l].d_out;
        for (int i = 0; i < no; i++)
            for (int j = 0; j < ni; j++) {
                double want = tbar * f->S_vals[l][i] * f->A_vals[l][j], got = f->lambda[l][(size_t)i * ni + j];
                cr_assert(fabs(got - want) <= 1e-9 * fabs(want) + 1e-300, "layer %d (%d, %d): %g, expected %g", l, i, j,
                          got, want);
            }
    }
    free(tok), free(len);
    infl_factors_free(f);
    infl_ctx_free(ctx);
}

// P(V) = Q_S [(Q_Sᵀ V Q_A) ⊘ (Λ + wd + λ)] Q_Aᵀ per layer, in the layer space, float64.
static void ref_precondition(const ref *r, const infl_factors *f, double lambda, const double *g, double *out) {
    for (int l = 0; l < r->m->nlayers; l++) {
        const infl_linear *ly = &r->m->layer[l];
        int din = ly->d_in, dout = ly->d_out, ni = infl_linear_ni(ly);
        const double *gl = g + r->m->loff[l];
        double *V = malloc((size_t)dout * ni * sizeof(double)), *Rt = calloc((size_t)dout * ni, sizeof(double));
        for (int i = 0; i < dout; i++)
            for (int j = 0; j < ni; j++) V[i * ni + j] = j < din ? gl[(size_t)i * din + j] : gl[(size_t)dout * din + i];
        for (int a = 0; a < dout; a++)
            for (int b = 0; b < ni; b++) {
                double v = 0;
                for (int i = 0; i < dout; i++)
                    for (int j = 0; j < ni; j++) v += f->S_vecs[l][a * dout + i] * V[i * ni + j] * f->A_vecs[l][b * ni + j];
                Rt[a * ni + b] = v / (f->lambda[l][a * ni + b] + r->m->wd + lambda);
            }
        double *ol = out + r->m->loff[l];
        for (int i = 0; i < dout; i++)
            for (int j = 0; j < ni; j++) {
                double v = 0;
                for (int a = 0; a < dout; a++)
                    for (int b = 0; b < ni; b++) v += f->S_vecs[l][a * dout + i] * Rt[a * ni + b] * f->A_vecs[l][b * ni + j];
                if (j < din) ol[(size_t)i * din + j] = v;
                else ol[(size_t)dout * din + i] = v;
            }
        free(V), free(Rt);
    }
}

static void check_ekfac(int form) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    ref r;
    ref_open(ctx, &r);
    infl_factors *fac;
    cr_assert_eq(store_factors_read(ctx, fac_path, &fac), INFL_OK);
    int c = r.ncheck - 1;
    int32_t *ztok, *zlen, *qtok, *qlen;
    int64_t N = read_docs(ctx, tu_ref(2, data_path, "train"), &ztok, &zlen);
    int64_t M = read_docs(ctx, tu_ref(3, data_path, "test[0:3]"), &qtok, &qlen);
    double *GZ = all_grads(ctx, &r, c, ztok, zlen, N), *GQ = all_grads(ctx, &r, c, qtok, qlen, M);
    double *PQ = malloc((size_t)M * r.S * sizeof(double)), *want = malloc((size_t)M * N * sizeof(double));
    const double lambda = 0.05;
    for (int64_t q = 0; q < M; q++) ref_precondition(&r, fac, lambda, GQ + q * r.S, PQ + q * r.S);
    for (int64_t q = 0; q < M; q++)
        for (int64_t z = 0; z < N; z++) want[q * N + z] = dot(PQ + q * r.S, GZ + z * r.S, r.S);
    infl_rank_options o = lm_opts(INFL_METHOD_EKFAC);
    o.factors = fac_path;
    o.damping = lambda;
    o.score_form = form;
    infl_rank_result *res;
    float *S = rank_full(ctx, &o, (int)M, N, &res);
    assert_close(S, want, (size_t)M * N, 2e-4, "ekfac");
    // --query-rank at every layer's full rank (min(d_out, d_in + 1) <= 9 here): the low-rank
    // contraction over token rows gives the same scores
    o.query_rank = 9;
    float *SL = rank_full(ctx, &o, (int)M, N, NULL);
    assert_close(SL, want, (size_t)M * N, 2e-4, "ekfac --query-rank 9");
    free(SL);
    o.query_rank = 0;
    // self-influence: g_zᵀ P(g_z)
    infl_self_result *sr;
    o.query = NULL;
    cr_assert_eq(infl_self(ctx, &o, &sr), INFL_OK, "%s", infl_ctx_error(ctx));
    double *ws = malloc((size_t)N * sizeof(double)), *pz = malloc(r.S * sizeof(double));
    for (int64_t z = 0; z < N; z++) {
        ref_precondition(&r, fac, lambda, GZ + z * r.S, pz);
        ws[z] = dot(pz, GZ + z * r.S, r.S);
    }
    assert_close(sr->self, ws, (size_t)N, 2e-4, "ekfac self");
    infl_self_result_free(sr);
    o.method = INFL_METHOD_GRADDOT;
    o.factors = NULL;
    cr_assert_eq(infl_self(ctx, &o, &sr), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int64_t z = 0; z < N; z++) ws[z] = dot(GZ + z * r.S, GZ + z * r.S, r.S);
    assert_close(sr->self, ws, (size_t)N, 2e-4, "graddot self");
    infl_self_result_free(sr);
    infl_rank_result_free(res);
    free(S), free(want), free(PQ), free(GZ), free(GQ), free(ws), free(pz);
    free(ztok), free(zlen), free(qtok), free(qlen);
    infl_factors_free(fac);
    ref_close(ctx, &r);
    infl_ctx_free(ctx);
}

Test(lm, ekfac_scores_and_self_by_token_rows_match_the_reference, .timeout = 300) { check_ekfac(1); }
Test(lm, ekfac_scores_by_documents_gradients_match_the_reference, .timeout = 300) { check_ekfac(2); }

// ---- token shares, completion queries ----

Test(lm, token_shares_add_up_to_each_documents_score, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    infl_method ms[2] = {INFL_METHOD_TRACIN, INFL_METHOD_EKFAC};
    for (int i = 0; i < 2; i++) {
        infl_rank_options o = lm_opts(ms[i]);
        o.token_shares = 1;
        if (ms[i] == INFL_METHOD_EKFAC) o.factors = fac_path, o.damping = 0.05, o.score_form = 2;
        infl_rank_result *r;
        cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
        cr_assert(r->top_shares && r->bottom_shares);
        for (int side = 0; side < 2; side++)
            for (int j = 0; j < r->M * r->k; j++) {
                const infl_token_shares *sh = &(side ? r->bottom_shares : r->top_shares)[j];
                float score = (side ? r->bottom_score : r->top_score)[j];
                double sum = 0, mag = 0;
                cr_assert(sh->n >= 1 && sh->n <= CTX, "%d positions", sh->n);
                for (int t = 0; t < sh->n; t++) sum += sh->share[t], mag += fabs(sh->share[t]);
                cr_assert(fabs(sum - score) <= 1e-4 * (mag + fabs(score)), "%s: shares sum to %.8g, score %.8g",
                          infl_method_name(ms[i]), sum, score);
                // the last position of a document the context holds whole predicts its end-of-text
                if (sh->n < CTX) cr_assert_eq(sh->token[sh->n - 1], 256, "position %d predicts %d", sh->n - 1,
                                              sh->token[sh->n - 1]);
            }
        infl_rank_result_free(r);
    }
    infl_ctx_free(ctx);
}

// The loss positions partition a document's gradient: the prompt's, the completion's and
// the end-of-text's add up to the whole document's; a text query's scores are the
// reference's at the completion's positions only.
Test(lm, completion_queries_measure_only_the_completion, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    ref r;
    ref_open(ctx, &r);
    int c = r.ncheck - 1;
    int32_t *qtok, *qlen, *ztok, *zlen;
    read_docs(ctx, tu_ref(3, data_path, "test[0:3]"), &qtok, &qlen);
    int64_t N = read_docs(ctx, tu_ref(2, data_path, "train"), &ztok, &zlen);
    int q = 0;
    while (qlen[q] < 6) q++;  // a document of a few words
    int len = qlen[q] < CTX ? qlen[q] : CTX - 1, p = 3;
    double *gall = malloc(r.S * sizeof(double)), *gp = malloc(r.S * sizeof(double)), *gc = malloc(r.S * sizeof(double)),
           *ge = malloc(r.S * sizeof(double));
    int32_t rall[2] = {0, len + 1}, rp[2] = {0, p}, rc_[2] = {p, len}, re[2] = {len, len + 1};
    ref_grad(ctx, &r, c, qtok + q * CTX, len, rall, gall);
    ref_grad(ctx, &r, c, qtok + q * CTX, len, rp, gp);
    ref_grad(ctx, &r, c, qtok + q * CTX, len, rc_, gc);
    ref_grad(ctx, &r, c, qtok + q * CTX, len, re, ge);
    double mx = 0;
    for (size_t i = 0; i < r.S; i++) mx = fmax(mx, fabs(gall[i]));
    for (size_t i = 0; i < r.S; i++)
        cr_assert(fabs(gp[i] + gc[i] + ge[i] - gall[i]) <= 1e-5 * mx, "entry %zu: %.8g + %.8g + %.8g != %.8g", i,
                  gp[i], gc[i], ge[i], gall[i]);
    // the same text as --prompt (its first p bytes) and --completion (the rest)
    char prompt[CTX + 1], completion[CTX + 1];
    for (int t = 0; t < p; t++) prompt[t] = (char)qtok[q * CTX + t];
    prompt[p] = 0;
    for (int t = p; t < len; t++) completion[t - p] = (char)qtok[q * CTX + t];
    completion[len - p] = 0;
    const char *pp[1] = {prompt}, *cc[1] = {completion};
    infl_rank_options o = lm_opts(INFL_METHOD_GRADDOT);
    o.query = NULL;
    o.ntext = 1;
    o.prompt = pp;
    o.completion = cc;
    o.output = tu_path("lm_text_scores.h5");
    o.force = 1;
    infl_rank_result *res;
    float *S = rank_full(ctx, &o, 1, N, &res);
    // the scores file records what was measured
    hid_t h = H5Fopen(o.output, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(h >= 0);
    char got[64];
    cr_assert_eq(h5u_attr_str(ctx, o.output, h, "/", "prompt_0", got, sizeof got), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_str_eq(got, prompt);
    cr_assert_eq(h5u_attr_str(ctx, o.output, h, "/", "completion_0", got, sizeof got), INFL_OK);
    cr_assert_str_eq(got, completion);
    H5Fclose(h);
    double *GZ = all_grads(ctx, &r, c, ztok, zlen, N), *want = malloc((size_t)N * sizeof(double));
    for (int64_t z = 0; z < N; z++) want[z] = dot(gc, GZ + z * r.S, r.S);
    assert_close(S, want, (size_t)N, 2e-4, "completion query");
    cr_assert_str_eq(res->query_prompt[0], prompt);
    cr_assert_str_eq(res->query_completion[0], completion);
    infl_rank_result_free(res);
    free(S), free(GZ), free(want), free(gall), free(gp), free(gc), free(ge);
    free(qtok), free(qlen), free(ztok), free(zlen);
    ref_close(ctx, &r);
    infl_ctx_free(ctx);
}

Test(lm, bad_queries_get_clear_errors, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    infl_rank_result *r = NULL;
    const char *empty[1] = {""}, *some[1] = {"cat"}, *longp[1] = {"the cat and the dog ran far away today"};
    struct {
        const char *const *p, *const *c;
        const char *msg;
    } cases[] = {
        {empty, some, "an empty prompt"},
        {some, empty, "an empty completion"},
        {longp, some, "too many"},
    };
    for (int i = 0; i < 3; i++) {
        infl_rank_options o = lm_opts(INFL_METHOD_GRADDOT);
        o.query = NULL;
        o.ntext = 1;
        o.prompt = cases[i].p;
        o.completion = cases[i].c;
        cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG, "case %d", i);
        cr_assert(strstr(infl_ctx_error(ctx), cases[i].msg), "case %d: %s", i, infl_ctx_error(ctx));
    }
    // an MLP run is not a language model
    const char *blobs = tu_path("lm_blobs.h5");
    tu_make_blobs(blobs, 60, 4, 3, 1);
    infl_train_options to = infl_train_options_default();
    to.data = tu_ref(0, blobs, "train");
    to.nlayers = 1;
    to.widths[0] = 4;
    to.widths[1] = 3;
    to.epochs = 1;
    to.force = 1;
    const char *mlp = tu_path("lm_mlp.h5");
    cr_assert_eq(infl_train(ctx, &to, mlp, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_options o = infl_rank_options_default();
    o.run = mlp;
    o.query = tu_ref(1, blobs, "test[0:2]");
    o.token_shares = 1;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "language models"), "%s", infl_ctx_error(ctx));
    o.token_shares = 0;
    o.method = INFL_METHOD_GRADDOT;  // a convex run has no learning rate for TracIn
    o.top = 2;
    o.prefilter_bm25 = 5;
    infl_status st = infl_rank(ctx, &o, &r);
    cr_assert_eq(st, INFL_E_ARG, "%s: %s", infl_status_name(st), infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "language models"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// ---- candidate filtering ----

// Every reported (index, score) is the full method's score of that document, and the
// k best (worst) scores are the full method's k best (worst).
static void assert_ranking_of(const infl_rank_result *r, const float *full, int64_t N, const char *what) {
    float *sorted = malloc((size_t)N * sizeof(float));
    for (int q = 0; q < r->M; q++) {
        const float *fq = full + (size_t)q * N;
        double mx = 0;
        for (int64_t i = 0; i < N; i++) mx = fmax(mx, fabs(fq[i]));
        memcpy(sorted, fq, (size_t)N * sizeof(float));
        for (int64_t i = 1; i < N; i++)  // descending insertion sort: N is small
            for (int64_t j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
                float t = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = t;
            }
        for (int j = 0; j < r->k; j++) {
            size_t at = (size_t)q * r->k + j;
            cr_assert(fabs(r->top_score[at] - fq[r->top_index[at]]) <= 1e-4 * mx, "%s: query %d top %d", what, q, j);
            cr_assert(fabs(r->bottom_score[at] - fq[r->bottom_index[at]]) <= 1e-4 * mx, "%s: bottom %d", what, j);
            cr_assert(fabs(r->top_score[at] - sorted[j]) <= 1e-4 * mx, "%s: query %d: top %d is %g, full %g", what, q, j,
                      r->top_score[at], sorted[j]);
            cr_assert(fabs(r->bottom_score[at] - sorted[N - 1 - j]) <= 1e-4 * mx, "%s: bottom %d", what, j);
        }
    }
    free(sorted);
}

Test(lm, prefilter_and_rerank_over_every_document_equal_the_full_method, .timeout = 300) {
    setup_lm();
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(2, data_path, "train"));
    int64_t N = store_split_info(s)->n;
    store_split_close(s);
    infl_rank_options o = lm_opts(INFL_METHOD_EKFAC);
    o.factors = fac_path;
    float *full = rank_full(ctx, &o, 3, N, NULL);
    infl_rank_result *r;
    o.prefilter_bm25 = (int)N;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    assert_ranking_of(r, full, N, "prefilter bm25:N");
    infl_rank_result_free(r);
    o.prefilter_bm25 = 0;
    o.query_rank = 2;
    o.rerank = (int)N;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    assert_ranking_of(r, full, N, "rerank N");
    infl_rank_result_free(r);
    // a prefilter of K: every reported document is among the query's K BM25 candidates,
    // scored as the full method scores it
    o.rerank = 0;
    o.query_rank = 0;
    o.prefilter_bm25 = 8;
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    for (int q = 0; q < r->M; q++)
        for (int j = 0; j < r->k; j++) {
            size_t at = (size_t)q * r->k + j;
            cr_assert(fabs(r->top_score[at] - full[(size_t)q * N + r->top_index[at]]) <= 1e-4 * fabs(full[(size_t)q * N + r->top_index[at]]) + 1e-6);
        }
    infl_rank_result_free(r);
    o.prefilter_bm25 = 3;  // fewer candidates than --top
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG);
    free(full);
    infl_ctx_free(ctx);
}

// ---- the command line ----

#define LMCLI(...)                                        \
    ({                                                    \
        const char *argv_[] = {"infl", __VA_ARGS__, NULL}; \
        tu_cli(argv_);                                    \
    })

Test(lm, the_command_line_report_and_its_bad_input, .timeout = 300) {
    setup_lm();
    const char *q = tu_ref(1, data_path, "test[0:2]"), *html = tu_path("lm.html"), *json = tu_path("lm.json"),
               *jl = tu_path("lm_queries.jsonl");
    cr_assert_eq(LMCLI("rank", "--run", run_path, "--query", q, "--method", "tracin", "--top", "2", "--tokens",
                       "--html", html, "--json", json, "--force", "-q"),
                 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "proponents") && strstr(tu_out(), "log p ="), "%s", tu_out());
    cr_assert(strstr(tu_out(), "\u27e6"), "the spans are marked: %s", tu_out());
    size_t n;
    char *page = tu_read_file(html, &n), *js = tu_read_file(json, &n);
    cr_assert(page && strstr(page, "<html") && strstr(page, "title="), "the report");
    cr_assert(js && strstr(js, "\"shares\": [") && strstr(js, "\"logprob\""), "the json");
    free(page), free(js);
    // text queries from a file, one with its completion and one greedy
    const char *good = "{\"prompt\": \"the cat\", \"completion\": \" sat\"}\n\n{\"prompt\": \"we\"}\n";
    tu_write_file(jl, good, strlen(good));
    cr_assert_eq(LMCLI("rank", "--run", run_path, "--queries", jl, "--method", "graddot", "--top", "2", "--gen-tokens", "5", "-q"), 0,
                 "%s", tu_err());
    cr_assert(strstr(tu_out(), "completion \" sat\""), "%s", tu_out());
    // bad input: a malformed line, an empty prompt, text longer than the context, --png
    const char *bad = "{\"prompt\": \"ok\"}\n{\"prompt\": \"x\\q\"}\n";
    tu_write_file(jl, bad, strlen(bad));
    cr_assert_neq(LMCLI("rank", "--run", run_path, "--queries", jl, "-q"), 0);
    cr_assert(strstr(tu_err(), ":2:") && strstr(tu_err(), "escape"), "%s", tu_err());
    cr_assert_neq(LMCLI("rank", "--run", run_path, "--prompt", "", "--completion", "x", "-q"), 0);
    cr_assert(strstr(tu_err(), "empty prompt"), "%s", tu_err());
    cr_assert_neq(LMCLI("rank", "--run", run_path, "--prompt", "a long prompt of many words", "--completion",
                        "and a completion", "-q"),
                  0);
    cr_assert(strstr(tu_err(), "too many"), "%s", tu_err());
    cr_assert_neq(LMCLI("rank", "--run", run_path, "--query", q, "--png", tu_path("lm.png"), "-q"), 0);
    cr_assert(strstr(tu_err(), "--html"), "%s", tu_err());
    // --tokens and --html with a model that is not a language model
    const char *blobs = tu_path("lm_blobs2.h5"), *mlp = tu_path("lm_mlp2.h5");
    tu_make_blobs(blobs, 60, 4, 3, 1);
    cr_assert_eq(LMCLI("train", "--data", tu_ref(2, blobs, "train"), "--layers", "4,3", "--epochs", "1", "-o", mlp,
                       "--force", "-q"),
                 0, "%s", tu_err());
    cr_assert_neq(LMCLI("rank", "--run", mlp, "--query", tu_ref(3, blobs, "test[0:2]"), "--tokens", "-q"), 0);
    cr_assert(strstr(tu_err(), "language models"), "%s", tu_err());
    cr_assert_neq(LMCLI("rank", "--run", mlp, "--query", tu_ref(3, blobs, "test[0:2]"), "--html", html, "--force",
                        "-q"),
                  0);
    cr_assert(strstr(tu_err(), "language models"), "%s", tu_err());
}

// ---- the CUDA backend ----

// fit, rank (every method family, both scoring forms, token shares) and self on the
// CUDA backend against the CPU's, ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-4 (skips without a device).
Test(lm_cuda, fit_rank_and_self_match_cpu, .timeout = 300) {
    setup_lm();
    pair p = open_pair();
    infl_split *s = tu_open_split(p.c[0], tu_ref(2, data_path, "train"));
    int64_t N = store_split_info(s)->n;
    store_split_close(s);
    char fac2[600];
    snprintf(fac2, sizeof fac2, "%s", tu_path("lm_fac_cuda.h5"));
    fit_lm(p.c[1], INFL_STRATEGY_EKFAC, fac2, NULL);
    const struct {
        infl_method m;
        int form, rank;
        const char *fac;
    } cases[] = {{INFL_METHOD_TRACIN, 1, 0, NULL}, {INFL_METHOD_TRACIN, 2, 0, NULL}, {INFL_METHOD_GRADCOS, 0, 0, NULL},
                 {INFL_METHOD_EKFAC, 1, 0, NULL},  {INFL_METHOD_EKFAC, 2, 0, NULL},  {INFL_METHOD_EKFAC, 0, 2, NULL}};
    for (int i = 0; i < 6; i++) {
        float *S[2];
        for (int b = 0; b < 2; b++) {
            infl_rank_options o = lm_opts(cases[i].m);
            o.score_form = cases[i].form;
            o.query_rank = cases[i].rank;
            // the CPU's factors for both: the scores compare, not the fits
            if (cases[i].m == INFL_METHOD_EKFAC) o.factors = fac_path, o.damping = 0.05;
            S[b] = rank_full(p.c[b], &o, 3, N, NULL);
        }
        double num = 0, den = 0;
        for (size_t j = 0; j < (size_t)3 * N; j++) num += pow(S[1][j] - S[0][j], 2), den += pow(S[0][j], 2);
        cr_assert(sqrt(num / den) <= 1e-4, "case %d (%s): relative error %.3g", i, infl_method_name(cases[i].m),
                  sqrt(num / den));
        free(S[0]), free(S[1]);
    }
    // the CUDA fit against the CPU's: the same eigenvalues and corrections
    infl_factors *f[2];
    OK(p.c[0], store_factors_read(p.c[0], fac_path, &f[0]));
    OK(p.c[0], store_factors_read(p.c[0], fac2, &f[1]));
    for (int l = 0; l < f[0]->L; l++) {
        size_t n = infl_linear_size(&f[0]->layer[l]);
        double num = 0, den = 0;
        for (size_t j = 0; j < n; j++) num += pow(f[1]->lambda[l][j] - f[0]->lambda[l][j], 2), den += pow(f[0]->lambda[l][j], 2);
        cr_assert(sqrt(num / den) <= 1e-4, "layer %d: lambda relative error %.3g", l, sqrt(num / den));
    }
    infl_factors_free(f[0]);
    infl_factors_free(f[1]);
    close_pair(&p);
}
