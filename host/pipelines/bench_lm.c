/*
 * bench_lm.c — `infl bench --run gpt.h5`: a language model's attribution over its
 * documents, phase by phase, beside the sgemm rate at each phase's own GEMM shapes
 * (bench.c's driver times the phases of the table below and their ceilings).
 *
 * The fixture is the run's own model (its last checkpoint, or the one the fit picks)
 * and documents: the first N of the data split for the streamed phases, the first R
 * of them in host memory for the others, and M query documents.
 *
 * Phases:
 *  - factors: per-token factors (forward, and backward without weight gradients) of
 *    the R documents in sub-batches of 8192 / context documents, as fit and rank
 *    batch them. Ceiling: the linear layers' GEMMs (rows × d_in × d_out, rows the
 *    positions computed: a sub-batch's documents padded to its longest) and the
 *    attention's per-head GEMMs, at the sub-batches' mean shapes.
 *  - ekfac_cov, ekfac_eig, ekfac_lambda: infl_fit over the N documents streamed from
 *    HDF5, one part timed from its report (bench_ekfac.c's bodies); the shapes of N
 *    documents extrapolated from the R in memory.
 *  - ghost_{rows,docs,auto}, ekfac_{rows,docs,auto}: rank's layer kernels
 *    (attrib_score_layer, attrib_sum_rows) on one sub-batch's factors, scored R / b
 *    times, every layer in the token-row form, in the documents'-gradients form, or
 *    as attrib_choose_paths picks by FLOP count. The rows and docs phases time every
 *    layer on its own (synchronised after each) into the report's per-layer table,
 *    beside that layer's GEMMs at their shapes, so that the table shows whether the
 *    FLOP count picked the faster form. The token-row form's per-document sum (one
 *    GEMM with an indicator per sub-batch, whatever the number of row-form layers) is
 *    timed apart.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_internal.h"
#include "estimators/score.h"

#define LM_ROWS_DEFAULT 512  // documents in memory when --rows is not given
#define LM_MAX_RUNS 65       // timed runs a phase keeps per layer (the warm-up and up to 64 repetitions)

// Adds `count` calls of a GEMM shape and their FLOPs.
static void lm_gemm(bench_work *w, int m, int n, int k, infl_trans ta, infl_trans tb, int batch, double count) {
    bench_add_gemm_batched(w, m, n, k, ta, tb, batch, count);
    w->flops += 2.0 * m * n * (double)k * (batch > 0 ? batch : 1) * count;
}

static double median_of(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- the fixture ----

infl_status bench_lm_open(infl_ctx *ctx, bench_fix *f, const infl_bench_options *o, infl_bench_report *rep) {
    f->o = o;
    f->lm = 1;
    f->rep = rep;
    rep->lm = 1;
    snprintf(f->run, sizeof f->run, "%s", o->run);
    FORWARD_IF_ERROR(store_run_open(ctx, o->run, &f->lrun));
    FORWARD_IF_ERROR(infl_model_create(ctx, store_run_spec(f->lrun), 0, &f->m));
    RETURN_IF(ctx, !f->m->tokens, INFL_E_ARG,
              "%s: a %s run; --run benchmarks a language model's attribution (a gpt run); without --run infl bench "
              "measures an MLP of random weights",
              o->run, infl_model_kind_of(f->m));
    f->L = f->m->nlayers;
    RETURN_IF(ctx, f->L > INFL_BENCH_MAX_LAYERS, INFL_E_ARG, "%s: %d layers; the benchmark reports at most %d", o->run,
              f->L, INFL_BENCH_MAX_LAYERS);
    f->P = f->m->nparams;
    f->C = 1;
    f->ctxT = f->m->spec.gpt.context;
    const char *dir = o->workdir && *o->workdir ? o->workdir : getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(f->factors, sizeof f->factors, "%s/infl-bench-%ld.factors.h5", dir, (long)getpid());

    // the train documents (the first n) and the queries
    const char *data = o->data;
    if (!data || !*data) FORWARD_IF_ERROR(store_run_find_data(ctx, f->lrun, &data));
    char base[4200];
    snprintf(base, sizeof base, strchr(data, ':') ? "%s" : "%s:/train", data);
    infl_dataref ref;
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, base, &ref));
    FORWARD_IF_ERROR(store_split_open(ctx, &ref, &f->train));
    FORWARD_IF_ERROR(infl_model_check_data(ctx, f->m, f->train));
    snprintf(f->train_ref, sizeof f->train_ref, "%s", base);
    int64_t total = store_split_info(f->train)->n;
    if (o->n > 0 && o->n < total) {
        store_split_close(f->train);
        f->train = NULL;
        int64_t b0 = ref.begin;
        snprintf(f->train_ref, sizeof f->train_ref, "%.4000s:/%.200s[%" PRId64 ":%" PRId64 "]", ref.path, ref.split, b0,
                 b0 + o->n);
        FORWARD_IF_ERROR(infl_dataref_parse(ctx, f->train_ref, &ref));
        FORWARD_IF_ERROR(store_split_open(ctx, &ref, &f->train));
    }
    const infl_split_info *ti = store_split_info(f->train);
    f->N = ti->n;
    RETURN_IF(ctx, f->N < 1, INFL_E_ARG, "%s: no documents", f->train_ref);
    if (o->query && *o->query)
        snprintf(f->query_ref, sizeof f->query_ref, "%s", o->query);
    else
        snprintf(f->query_ref, sizeof f->query_ref, "%.4000s:/test[0:%d]", ref.path, o->queries);
    infl_dataref qref;
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, f->query_ref, &qref));
    FORWARD_IF_ERROR(store_split_open(ctx, &qref, &f->query));
    FORWARD_IF_ERROR(infl_model_check_data(ctx, f->m, f->query));
    f->M = (int)store_split_info(f->query)->n;

    // the first R documents in host memory; each computes min(len + 1, context) rows
    // (EOT first), a sub-batch pads its documents to its longest
    f->R = o->rows > 0 ? o->rows : LM_ROWS_DEFAULT;
    if (f->R > f->N) f->R = f->N;
    f->B = 8192 / f->ctxT > 1 ? 8192 / f->ctxT : 1;
    if (f->B > f->R) f->B = (int)f->R;
    f->dtok = infl_malloc(ctx, (size_t)f->R * f->ctxT * sizeof(int32_t), "documents");
    f->dlen = infl_malloc(ctx, (size_t)f->R * sizeof(int32_t), "documents");
    if (!f->dtok || !f->dlen) return INFL_E_NOMEM;
    FORWARD_IF_ERROR(store_split_read_docs(ctx, f->train, 0, f->R, f->ctxT, 0, f->dtok, f->dlen, NULL));
    double real = 0, pad = 0;
    for (int64_t r0 = 0; r0 < f->R; r0 += f->B) {
        int b = (int)(r0 + f->B <= f->R ? f->B : f->R - r0), longest = 1;
        for (int i = 0; i < b; i++) {
            int n = f->dlen[r0 + i] + 1 < f->ctxT ? f->dlen[r0 + i] + 1 : f->ctxT;
            real += n;
            longest = n > longest ? n : longest;
        }
        pad += (double)b * longest;
    }
    f->zreal = real / (double)f->R;
    f->zpad = pad / (double)f->R;
    f->tokens = f->zreal * (double)f->N;

    // the weights (the run's last checkpoint) on the backend, a sub-batch's work
    int ck = store_run_ncheckpoints(f->lrun) - 1;
    float *hp = infl_malloc(ctx, f->P * sizeof(float), "the parameters");
    f->Wd = infl_calloc(ctx, 1, sizeof(float *), "the weights");
    if (!hp || !f->Wd) {
        free(hp);
        return INFL_E_NOMEM;
    }
    infl_status rc = store_run_load(ctx, f->lrun, ck, hp);
    if (rc == INFL_OK) rc = infl_be_alloc_f(ctx, &f->Wd[0], f->P, "the weights");
    if (rc == INFL_OK) rc = ctx->be->upload(ctx, f->Wd[0], hp, f->P * sizeof(float));
    free(hp);
    FORWARD_IF_ERROR(rc);
    FORWARD_IF_ERROR(infl_model_work_create(ctx, f->m, f->B, &f->work));
    FORWARD_IF_ERROR(ctx->be->alloc(ctx, sizeof(float), (void **)&f->one));
    FORWARD_IF_ERROR(ctx->be->fill(ctx, f->one, 0.0f, 1));
    f->lt = infl_calloc(ctx, LM_MAX_RUNS, sizeof *f->lt, "layer timings");
    if (!f->lt) return INFL_E_NOMEM;

    infl_model_describe(f->m, rep->model, sizeof rep->model);
    snprintf(rep->data, sizeof rep->data, "%.2000s; queries %.2000s", f->train_ref, f->query_ref);
    rep->params = f->P;
    rep->n = f->N;
    rep->tokens = ti->tokens;
    rep->queries = f->M;
    rep->checkpoints = 1;
    rep->rows = f->R;
    rep->nlayers = f->L;
    for (int fam = 0; fam < 2; fam++)
        for (int l = 0; l < f->L; l++) {
            infl_bench_layer *y = &rep->layer[fam][l];
            snprintf(y->name, sizeof y->name, "%.*s", (int)sizeof y->name - 1, f->m->layer[l].name);
            y->d_in = f->m->layer[l].d_in;
            y->d_out = f->m->layer[l].d_out;
        }
    return INFL_OK;
}

void bench_lm_close(infl_ctx *ctx, bench_fix *f) {
    if (f->a) attrib_close(f->a);
    free(f->a);
    f->a = NULL;
    free(f->dtok);
    free(f->dlen);
    free(f->lt);
    store_run_close(f->lrun);
    f->C = f->Wd ? 1 : 0;
    f->L = 0;     // fix_free's per-layer factors are the MLP's
    f->run[0] = 0;  // the user's run: not removed
    (void)ctx;
}

// The batch of documents [r0, r0 + b) of those in memory.
static infl_batch docs_batch(const bench_fix *f, int64_t r0, int b) {
    const infl_split_info *ti = store_split_info(f->train);
    return (infl_batch){.b = b, .index0 = ti->begin + r0, .tok = f->dtok + (size_t)r0 * f->ctxT, .T = f->ctxT,
                        .len = f->dlen + r0};
}

// ---- phase: per-token factors (forward, backward without weight gradients) ----

// The GEMMs of forward and backward (input gradients only, as gpt.c calls them) over
// `docs` documents in nsub sub-batches of `rows` computed positions each, documents
// of Tb positions: per block qkv, the attention per head, the projection, fc and the
// MLP's projection, forward and back; the tied head once.
static void fb_work(const bench_fix *f, bench_work *w, double nsub, int rows, int Tb, double docs) {
    const infl_gpt_spec *s = &f->m->spec.gpt;
    int C = s->dim, V = s->vocab, H = s->n_head, hs = C / H;
    double NL = s->n_layer;
    lm_gemm(w, rows, 3 * C, C, INFL_N, INFL_T, 0, nsub * NL);   // qkv
    lm_gemm(w, Tb, Tb, hs, INFL_N, INFL_T, H, docs * NL);        // S = Q Kᵀ per head
    lm_gemm(w, Tb, hs, Tb, INFL_N, INFL_N, H, docs * NL);        // Y = P V
    lm_gemm(w, rows, C, C, INFL_N, INFL_T, 0, nsub * NL);       // attention projection
    lm_gemm(w, rows, 4 * C, C, INFL_N, INFL_T, 0, nsub * NL);   // fc
    lm_gemm(w, rows, C, 4 * C, INFL_N, INFL_T, 0, nsub * NL);   // MLP projection
    lm_gemm(w, rows, V, C, INFL_N, INFL_T, 0, nsub);            // logits
    lm_gemm(w, rows, C, V, INFL_N, INFL_N, 0, nsub);            // ∂ LN_f output
    lm_gemm(w, rows, 4 * C, C, INFL_N, INFL_N, 0, nsub * NL);   // ∂ GELU output
    lm_gemm(w, rows, C, 4 * C, INFL_N, INFL_N, 0, nsub * NL);   // ∂ LN2 output
    lm_gemm(w, rows, C, C, INFL_N, INFL_N, 0, nsub * NL);       // ∂Y
    lm_gemm(w, Tb, Tb, hs, INFL_N, INFL_T, H, docs * NL);        // ∂P = ∂Y Vᵀ
    lm_gemm(w, Tb, hs, Tb, INFL_T, INFL_N, H, 2 * docs * NL);    // ∂V = Pᵀ ∂Y, ∂K = ∂Sᵀ Q
    lm_gemm(w, Tb, hs, Tb, INFL_N, INFL_N, H, docs * NL);        // ∂Q = ∂S K
    lm_gemm(w, rows, C, 3 * C, INFL_N, INFL_N, 0, nsub * NL);   // ∂ LN1 output
}

// fb_work for `docs` documents in sub-batches of f->B, at the in-memory documents' mean
// shapes.
static void fb_work_docs(const bench_fix *f, bench_work *w, double docs) {
    double nsub = ceil(docs / f->B);
    int rows = (int)lround(f->zpad * docs / nsub), Tb = (int)lround(f->zpad);
    fb_work(f, w, nsub, rows > 0 ? rows : 1, Tb > 0 ? Tb : 1, docs);
}

static infl_status factors_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    fb_work_docs(f, w, (double)f->R);
    char r[32], t[32];
    snprintf(w->what, sizeof w->what, "%s documents, %s tokens (%.0f%% padding), sub-batches of %d",
             bench_group_digits(r, sizeof r, f->R), bench_group_digits(t, sizeof t, llround(f->zreal * f->R)),
             100.0 * (1.0 - f->zreal / f->zpad), f->B);
    w->examples = f->zreal * (double)f->R;
    w->ceiling_name = "sgemm at its shapes (positions as computed, padded)";
    return INFL_OK;
}

static infl_status factors_run(infl_ctx *ctx, bench_fix *f) {
    for (int64_t r0 = 0; r0 < f->R; r0 += f->B) {
        int b = (int)(r0 + f->B <= f->R ? f->B : f->R - r0);
        infl_batch bt = docs_batch(f, r0, b);
        FORWARD_IF_ERROR(infl_model_factors(ctx, f->m, f->Wd[0], &bt, f->work));
    }
    return bench_sync(ctx, f);
}

// ---- phases: the EK-FAC fit over the N documents (bench_ekfac.c's bodies) ----

static void fit_what(const bench_fix *f, bench_work *w, const char *pass) {
    char n[32], t[32];
    snprintf(w->what, sizeof w->what, "%s, %s documents (~%s tokens) from HDF5", pass, bench_group_digits(n, sizeof n, f->N),
             bench_group_digits(t, sizeof t, llround(f->tokens)));
    w->examples = f->tokens;
    w->ceiling_name = "sgemm at its shapes (from the first documents' lengths)";
}

static infl_status cov_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    double N = (double)f->N, nsub = ceil(N / f->B);
    int real = (int)lround(f->zreal * N / nsub);
    fb_work_docs(f, w, N);
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, dout = f->m->layer[l].d_out;
        lm_gemm(w, dout, dout, real, INFL_T, INFL_N, 0, nsub);  // Δᵀ Δ over the token rows
        lm_gemm(w, din, din, real, INFL_T, INFL_N, 0, nsub);    // Aᵀ A
    }
    fit_what(f, w, "A and S over token rows");
    return INFL_OK;
}

static infl_status eig_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    FORWARD_IF_ERROR(bench_ekeig_setup(ctx, f, w));
    w->examples = 2.0 * f->L;
    return INFL_OK;
}

static infl_status lambda_setup(infl_ctx *ctx, bench_fix *f, bench_work *w) {
    (void)ctx;
    double N = (double)f->N, nsub = ceil(N / f->B);
    int real = (int)lround(f->zreal * N / nsub), z = (int)lround(f->zreal);
    fb_work_docs(f, w, N);
    for (int l = 0; l < f->L; l++) {
        int din = f->m->layer[l].d_in, ni = infl_linear_ni(&f->m->layer[l]), dout = f->m->layer[l].d_out;
        lm_gemm(w, real, dout, dout, INFL_N, INFL_T, 0, nsub);  // Δ Q_S
        lm_gemm(w, real, ni, din, INFL_N, INFL_T, 0, nsub);     // Ã Q_A
        lm_gemm(w, dout, ni, z, INFL_T, INFL_N, 0, N);          // each document's rotated gradient
        w->flops += 2.0 * N * dout * (double)ni;                  // squared and summed
    }
    fit_what(f, w, "eigenvalue correction, per document");
    return INFL_OK;
}

// ---- phases: scoring, both forms, per layer ----

// The GEMMs and FLOPs of layer l in form `docs` (0: token rows, 1: documents'
// gradients) for one sub-batch of b documents of rz token rows against M queries of
// rq token rows, times nsub.
static void layer_work(const bench_fix *f, bench_work *w, int l, int docs, int b, int rz, double nsub) {
    const attrib *a = f->a;
    const infl_linear *ly = &f->m->layer[l];
    int M = a->M, rq = a->RQ, din = ly->d_in, dout = ly->d_out;
    if (docs) {
        int pl = (int)infl_linear_size(ly), z = (int)lround((double)rz / b);
        bench_add_gemm(w, dout, din, z > 0 ? z : 1, INFL_T, INFL_N, nsub * b);  // a document's Δᵀ A
        for (int i0 = 0; i0 < b; i0 += a->Bm)
            bench_add_gemm(w, M, b - i0 < a->Bm ? b - i0 : a->Bm, pl, INFL_N, INFL_T, nsub);  // G_Q G_Zᵀ
        w->flops += nsub * (score_doc_grads_flops(ly, rz) + 2.0 * M * b * (double)pl);
    } else if (f->family == 0) {
        bench_add_gemm(w, rq, rz, dout, INFL_N, INFL_T, nsub);  // Δ_Q Δ_Zᵀ
        bench_add_gemm(w, rq, rz, din, INFL_N, INFL_T, nsub);   // A_Q A_Zᵀ
        if (rq > M) bench_add_gemm(w, M, rz, rq, INFL_N, INFL_N, nsub);  // the queries' rows summed
        w->flops += nsub * score_ghost_rows_flops(ly, M, rq, rz);
    } else {
        if (ly->bias) bench_add_gemm(w, M, rz, dout, INFL_N, INFL_T, nsub);  // v_b Δ_Zᵀ
        bench_add_gemm(w, rz, din, dout, INFL_N, INFL_N, nsub * M);          // Δ_Z V_q,W per query
        w->flops += nsub * score_contract_flops(ly, M, rz);
    }
}

static void add_work(bench_work *to, const bench_work *from) {
    for (int i = 0; i < from->ngemm; i++) {
        const bench_gemm *g = &from->gemm[i];
        bench_add_gemm_batched(to, g->m, g->n, g->k, g->ta, g->tb, g->batch, g->count);
    }
    to->flops += from->flops;
}

// Opens the attribution of the family (0: graddot, 1: ekfac on factors fitted on the
// documents in memory), prepares the queries with every layer's gradients, computes
// one sub-batch's factors and counts the form's work (2: the FLOP count's choice).
static infl_status score_setup(infl_ctx *ctx, bench_fix *f, bench_work *w, int family, int form) {
    f->family = family;
    f->form = form;
    f->nrun = 0;
    infl_rank_options *ro = &f->ro;
    *ro = infl_rank_options_default();
    ro->run = f->run;
    ro->train = f->train_ref;
    ro->query = f->query_ref;
    ro->top = 1;
    ro->method = family ? INFL_METHOD_EKFAC : INFL_METHOD_GRADDOT;
    ro->score_form = 2;  // the queries' gradients of every layer, for the documents' form
    if (family) {
        {
            // EK-FAC factors fitted on the documents in memory (the scoring's cost does not depend on them)
            char ref[4400];
            infl_dataref tr;
            FORWARD_IF_ERROR(infl_dataref_parse(ctx, f->train_ref, &tr));
            snprintf(ref, sizeof ref, "%.4000s:/%.200s[%" PRId64 ":%" PRId64 "]", tr.path, tr.split, tr.begin, tr.begin + f->R);
            infl_fit_options fo = infl_fit_options_default();
            fo.run = f->run;
            fo.data = ref;
            fo.force = 1;
            FORWARD_IF_ERROR(infl_fit(ctx, &fo, f->factors, NULL));
        }
        ro->factors = f->factors;
    }
    f->a = infl_calloc(ctx, 1, sizeof *f->a, "the attribution");
    if (!f->a) return INFL_E_NOMEM;
    attrib *a = f->a;
    FORWARD_IF_ERROR(attrib_open(ctx, a, ro, 1));
    attrib_choose_paths(a);
    FORWARD_IF_ERROR(attrib_alloc_scoring(ctx, a, a->M, family));
    infl_rank_result *res = attrib_result_new(a->M, 1);
    if (!res) return INFL_E_NOMEM;
    infl_status rc = attrib_prepare_queries(ctx, a, res);
    infl_rank_result_free(res);
    FORWARD_IF_ERROR(rc);
    ro->score_form = 0;
    attrib_choose_paths(a);  // the FLOP count's choice
    int chosen[INFL_MAX_LINEAR], anyrows = 0;
    for (int l = 0; l < f->L; l++) {
        chosen[l] = a->path[l];
        a->path[l] = form == 2 ? chosen[l] : form == 1 ? ATTRIB_DOCS : ATTRIB_ROWS;
        anyrows |= a->path[l] == ATTRIB_ROWS;
        f->rep->layer[family][l].chosen = chosen[l] == ATTRIB_DOCS;
    }

    // one sub-batch's factors, scored R / b times
    int b = a->B < f->R ? a->B : (int)f->R;
    infl_batch bt = docs_batch(f, 0, b);
    FORWARD_IF_ERROR(attrib_factors(ctx, a, 0, &bt, a->work));
    f->bsub = b;
    f->nsub = (int)((f->R + b - 1) / b);
    int rz = a->work->rows, M = a->M;
    double nsub = f->nsub;
    f->rep->score_docs = b;
    f->rep->score_queries = M;
    f->rep->score_query_rows = a->RQ;
    f->rep->score_rows = rz;

    int ndocs = 0;
    for (int l = 0; l < f->L; l++) {
        bench_work lw;
        memset(&lw, 0, sizeof lw);
        layer_work(f, &lw, l, a->path[l] == ATTRIB_DOCS, b, rz, nsub);
        if (form < 2) {
            infl_bench_layer *y = &f->rep->layer[family][l];
            FORWARD_IF_ERROR(bench_gemms_seconds(ctx, f, &lw, &y->ceiling_seconds[form]));
            y->flops[form] = lw.flops;
        }
        add_work(w, &lw);
        ndocs += a->path[l] == ATTRIB_DOCS;
    }
    if (anyrows) {
        // the token rows' per-document sum: R E_Zᵀ
        bench_work sw;
        memset(&sw, 0, sizeof sw);
        lm_gemm(&sw, M, b, rz, INFL_N, INFL_T, 0, nsub);
        if (form == 0) {
            FORWARD_IF_ERROR(bench_gemms_seconds(ctx, f, &sw, &f->rep->sum_rows_ceiling[family]));
            f->rep->sum_rows_flops[family] = sw.flops;
        }
        add_work(w, &sw);
    }
    char d[32], t[32];
    char how[64];
    snprintf(how, sizeof how, "documents' gradients for %d of %d layers", ndocs, f->L);
    snprintf(w->what, sizeof w->what, "%s documents (%s token rows) x %d queries (%d rows), %s",
             bench_group_digits(d, sizeof d, (int64_t)b * f->nsub), bench_group_digits(t, sizeof t, (int64_t)rz * f->nsub),
             M, a->RQ, form == 0 ? "token rows" : form == 1 ? "documents' gradients" : how);
    w->examples = (double)rz * f->nsub;
    return INFL_OK;
}

// Every layer's kernels over the nsub sub-batches, each layer timed on its own; then,
// when a layer is in the token-row form, the rows' per-document sum.
static infl_status score_run(infl_ctx *ctx, bench_fix *f) {
    attrib *a = f->a;
    int run = f->nrun < LM_MAX_RUNS ? f->nrun : LM_MAX_RUNS - 1, anyrows = 0;
    f->nrun++;
    for (int l = 0; l < f->L; l++) {
        anyrows |= a->path[l] == ATTRIB_ROWS;
        double t0 = infl_now();
        for (int s = 0; s < f->nsub; s++) FORWARD_IF_ERROR(attrib_score_layer(ctx, a, 0, l, f->bsub, 0));
        FORWARD_IF_ERROR(bench_sync(ctx, f));
        f->lt[run][l] = infl_now() - t0;
    }
    if (anyrows) {
        double t0 = infl_now();
        for (int s = 0; s < f->nsub; s++) {
            FORWARD_IF_ERROR(ctx->be->fill(ctx, a->R, 0.0f, (size_t)a->M * a->work->rows));
            FORWARD_IF_ERROR(attrib_sum_rows(ctx, a, f->bsub));
        }
        FORWARD_IF_ERROR(bench_sync(ctx, f));
        f->lt[run][f->L] = infl_now() - t0;
    }
    return INFL_OK;
}

// The per-layer medians (runs after the warm-up) into the report; closes the attribution.
static void score_teardown(infl_ctx *ctx, bench_fix *f) {
    (void)ctx;
    int n = (f->nrun < LM_MAX_RUNS ? f->nrun : LM_MAX_RUNS) - 1;
    if (n >= 1 && f->form < 2) {
        double v[LM_MAX_RUNS];
        for (int l = 0; l <= f->L; l++) {
            for (int r = 0; r < n; r++) v[r] = f->lt[r + 1][l];
            double m = median_of(v, n);
            if (l < f->L) f->rep->layer[f->family][l].seconds[f->form] = m;
            else if (f->form == 0) f->rep->sum_rows_seconds[f->family] = m;
        }
    }
    if (f->a) attrib_close(f->a);
    free(f->a);
    f->a = NULL;
}

#define SCORE_PHASE(fn, fam, form)                                                                                   \
    static infl_status fn(infl_ctx *ctx, bench_fix *f, bench_work *w) { return score_setup(ctx, f, w, fam, form); }
SCORE_PHASE(ghost_rows_setup, 0, 0)
SCORE_PHASE(ghost_docs_setup, 0, 1)
SCORE_PHASE(ghost_auto_setup, 0, 2)
SCORE_PHASE(ekfac_rows_setup, 1, 0)
SCORE_PHASE(ekfac_docs_setup, 1, 1)
SCORE_PHASE(ekfac_auto_setup, 1, 2)

// ---- the phase table ----

const bench_phase_def bench_lm_phases[] = {
    {"factors", "per-token factors (forward + backward, no weight gradients)", factors_setup, factors_run, NULL},
    {"ekfac_cov", "EK-FAC covariance pass (A, S over token rows), from HDF5", cov_setup, bench_ekcov_run, NULL},
    {"ekfac_eig", "EK-FAC eigendecomposition (float64)", eig_setup, bench_ekeig_run, NULL},
    {"ekfac_lambda", "EK-FAC eigenvalue correction (per document), from HDF5", lambda_setup, bench_eklam_run, NULL},
    {"ghost_rows", "graddot scoring, token-row form (ghost pairs)", ghost_rows_setup, score_run, score_teardown},
    {"ghost_docs", "graddot scoring, documents' gradients form", ghost_docs_setup, score_run, score_teardown},
    {"ghost_auto", "graddot scoring, form per layer by FLOP count", ghost_auto_setup, score_run, score_teardown},
    {"ekfac_rows", "EK-FAC scoring, token-row form (contraction)", ekfac_rows_setup, score_run, score_teardown},
    {"ekfac_docs", "EK-FAC scoring, documents' gradients form", ekfac_docs_setup, score_run, score_teardown},
    {"ekfac_auto", "EK-FAC scoring, form per layer by FLOP count", ekfac_auto_setup, score_run, score_teardown},
};
const int bench_lm_nphases = (int)(sizeof bench_lm_phases / sizeof bench_lm_phases[0]);
