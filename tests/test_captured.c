/*
 * test_captured.c — the seam's captured model (models/captured.c) and its file
 * (store/store_captured.c) against infl's own MLP: an MLP run's layer inputs and output
 * gradients are recorded through the seam into a captured file (what python/infl/torch.py
 * records from PyTorch), and then
 *  - rank by tracin (every checkpoint), graddot, gradcos, ekfac and kfac (factors fitted
 *    on the captured file with the empirical Fisher), and self-influence, on the captured
 *    file equal the same on the run: the same top-k indices, scores to float precision;
 *  - bad input: a layer's Δ with fewer rows than A, a missing layer, a NaN, offsets that do
 *    not start at 0, a run and split captured from other layers; methods that need a
 *    forward pass or HVPs (if, representer) and the true Fisher without sampled Δ are
 *    refused with the reason.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "models/model.h"
#include "store/store.h"
#include "testutil.h"

static const int W[] = {5, 7, 3};
static char g_data[512], g_run[512], g_cap[512];

static void small_run(infl_train_options *o, void *u) {
    (void)u;
    o->epochs = 2;
    o->batch = 16;
    o->lr = 0.05;
    o->weight_decay = 1e-2;
    o->checkpoint_every = 6;
    o->seed = 4;
}

static void setup(void) {
    snprintf(g_data, sizeof g_data, "%s", tu_path("blobs.h5"));
    snprintf(g_run, sizeof g_run, "%s", tu_path("run.h5"));
    snprintf(g_cap, sizeof g_cap, "%s", tu_path("cap.h5"));
    tu_make_blobs(g_data, 90, W[0], W[2], 11);
    tu_train_mlp(g_data, g_run, 2, W, small_run, NULL);
    tu_capture_run(g_run, g_data, g_cap, TU_CAP_OK);
}

static infl_rank_options rank_opts(int captured, infl_method method, const char *factors) {
    infl_rank_options o = infl_rank_options_default();
    static char tr[2][600], q[2][600];
    snprintf(tr[captured], sizeof tr[0], "%s:/train", captured ? g_cap : g_data);
    snprintf(q[captured], sizeof q[0], "%s:/test[0:6]", captured ? g_cap : g_data);
    o.run = captured ? g_cap : g_run;
    o.train = tr[captured];
    o.query = q[captured];
    o.method = method;
    o.factors = factors;
    o.top = 8;
    o.shard_rows = 25;  // several shards
    return o;
}

// 1 when example z is among a query's k entries (from q0) with score v (to float precision),
// or v ties with the last entry kept.
static int tied(const int64_t *idx, const float *score, int q0, int k, int64_t z, float v, double scale) {
    for (int j = q0; j < q0 + k; j++)
        if (idx[j] == z && fabs(score[j] - v) <= 1e-5 * scale) return 1;
    return fabs(score[q0 + k - 1] - v) <= 1e-5 * scale;  // tied with the last kept: either may be cut
}

// The same top-k and bottom-k indices, scores within float precision of their scale.
static void same_rank(const infl_rank_result *a, const infl_rank_result *b, const char *what) {
    cr_assert_eq(a->M, b->M);
    cr_assert_eq(a->k, b->k);
    for (int i = 0; i < a->M * a->k; i++) {
        int q0 = (i / a->k) * a->k;  // the query's largest scores of either sign set its scale
        double scale = fabs(a->top_score[q0]) + fabs(a->bottom_score[q0]) + 1e-12;
        // the same example, or one whose score ties with it (a corpus may repeat a document)
        cr_assert(a->top_index[i] == b->top_index[i] || tied(b->top_index, b->top_score, q0, a->k, a->top_index[i],
                                                              a->top_score[i], scale),
                  "%s: proponent %d: %ld vs %ld", what, i, (long)a->top_index[i], (long)b->top_index[i]);
        cr_assert(a->bottom_index[i] == b->bottom_index[i] ||
                      tied(b->bottom_index, b->bottom_score, q0, a->k, a->bottom_index[i], a->bottom_score[i], scale),
                  "%s: opponent %d: %ld vs %ld (%g vs %g, scale %g)", what, i, (long)a->bottom_index[i],
                  (long)b->bottom_index[i], a->bottom_score[i], b->bottom_score[i], scale);
        cr_assert(fabs(a->top_score[i] - b->top_score[i]) <= 1e-5 * scale, "%s: score %d: %g vs %g", what, i,
                  a->top_score[i], b->top_score[i]);
        cr_assert(fabs(a->bottom_score[i] - b->bottom_score[i]) <= 1e-5 * scale, "%s: score %d", what, i);
    }
}

static void rank_both(infl_method method, const char *fac_run, const char *fac_cap, const char *what) {
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o0 = rank_opts(0, method, fac_run), o1 = rank_opts(1, method, fac_cap);
    infl_rank_result *r0 = NULL, *r1 = NULL;
    cr_assert_eq(infl_rank(ctx, &o0, &r0), INFL_OK, "%s run: %s", what, infl_ctx_error(ctx));
    cr_assert_eq(infl_rank(ctx, &o1, &r1), INFL_OK, "%s captured: %s", what, infl_ctx_error(ctx));
    same_rank(r0, r1, what);
    infl_rank_result_free(r0);
    infl_rank_result_free(r1);
    infl_ctx_free(ctx);
}

Test(captured, rank_equals_the_runs, .init = setup) {
    rank_both(INFL_METHOD_TRACIN, NULL, NULL, "tracin");
    rank_both(INFL_METHOD_GRADDOT, NULL, NULL, "graddot");
    rank_both(INFL_METHOD_GRADCOS, NULL, NULL, "gradcos");
}

Test(captured, ekfac_fitted_on_the_capture_equals_the_runs, .init = setup) {
    infl_ctx *ctx = tu_ctx();
    char fr[600], fc[600];
    snprintf(fr, sizeof fr, "%s", tu_path("fr.h5"));
    snprintf(fc, sizeof fc, "%s", tu_path("fc.h5"));
    for (int strat = 0; strat < 2; strat++) {
        infl_fit_options f = infl_fit_options_default();
        f.fisher_empirical = 1;
        f.strategy = strat ? INFL_STRATEGY_KFAC : INFL_STRATEGY_EKFAC;
        f.force = 1;
        f.shard_rows = 25;
        f.run = g_run;
        cr_assert_eq(infl_fit(ctx, &f, fr, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
        f.run = g_cap;
        cr_assert_eq(infl_fit(ctx, &f, fc, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
        rank_both(strat ? INFL_METHOD_KFAC : INFL_METHOD_EKFAC, fr, fc, strat ? "kfac" : "ekfac");
        // the true Fisher needs Δ at sampled targets, which this capture has not
        f.fisher_empirical = 0;
        cr_assert_eq(infl_fit(ctx, &f, fc, NULL), INFL_E_UNSUPPORTED);
        cr_assert(strstr(infl_ctx_error(ctx), "--fisher empirical"), "%s", infl_ctx_error(ctx));
    }
    infl_ctx_free(ctx);
}

Test(captured, self_influence_equals_the_runs, .init = setup) {
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o0 = rank_opts(0, INFL_METHOD_TRACIN, NULL), o1 = rank_opts(1, INFL_METHOD_TRACIN, NULL);
    infl_self_result *s0 = NULL, *s1 = NULL;
    cr_assert_eq(infl_self(ctx, &o0, &s0), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_self(ctx, &o1, &s1), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(s0->N, s1->N);
    for (int64_t i = 0; i < s0->N; i++) {
        cr_assert(fabs(s0->self[i] - s1->self[i]) <= 1e-5 * fabs(s0->self[i]) + 1e-9, "row %ld: %g vs %g", (long)i,
                  s0->self[i], s1->self[i]);
        cr_assert_eq(s0->order[i], s1->order[i]);
    }
    infl_self_result_free(s0);
    infl_self_result_free(s1);
    infl_ctx_free(ctx);
}

Test(captured, methods_needing_a_forward_pass_are_refused, .init = setup) {
    infl_ctx *ctx = tu_ctx();
    infl_rank_result *r = NULL;
    infl_rank_options o = rank_opts(1, INFL_METHOD_IF, NULL);
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_UNSUPPORTED);
    cr_assert(strstr(infl_ctx_error(ctx), "captured"), "%s", infl_ctx_error(ctx));
    // the run's data with the captured model, and the captured data with the run's model
    o = rank_opts(1, INFL_METHOD_GRADDOT, NULL);
    o.train = tu_ref(1, g_data, "train");
    cr_assert_eq(infl_rank(ctx, &o, &r), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "captured file"), "%s", infl_ctx_error(ctx));
    o = rank_opts(0, INFL_METHOD_GRADDOT, NULL);
    o.train = tu_ref(1, g_cap, "train");
    cr_assert_neq(infl_rank(ctx, &o, &r), INFL_OK);
    infl_ctx_free(ctx);
}

// A damaged capture: the error names the file and what is wrong.
static void bad_capture(tu_cap_fault fault, infl_status want, const char *says) {
    char bad[600];
    snprintf(bad, sizeof bad, "%s", tu_path("bad.h5"));
    tu_capture_run(g_run, g_data, bad, fault);
    infl_ctx *ctx = tu_ctx();
    infl_rank_options o = rank_opts(1, INFL_METHOD_GRADDOT, NULL);
    char tr[700];
    snprintf(tr, sizeof tr, "%s:/train", bad);
    o.run = bad;
    o.train = tr;
    o.query = tu_ref(1, g_cap, "test");
    infl_rank_result *r = NULL;
    cr_assert_eq(infl_rank(ctx, &o, &r), want, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), says) && strstr(infl_ctx_error(ctx), "bad.h5"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(captured, bad_captures_are_named, .init = setup) {
    bad_capture(TU_CAP_SHORT_D, INFL_E_SHAPE, "layer0/D");
    bad_capture(TU_CAP_NO_LAYER, INFL_E_FORMAT, "layer1/A: missing");
    bad_capture(TU_CAP_NAN, INFL_E_VALUE, "NaN");
    bad_capture(TU_CAP_BAD_OFFSETS, INFL_E_FORMAT, "offsets[0]");
    bad_capture(TU_CAP_EMPTY_EXAMPLE, INFL_E_FORMAT, "tokens = 0");
}

// A capture without labels ranks as well; its labels read as -1 (none), not class 0.
Test(captured, no_labels, .init = setup) {
    char nol[600];
    snprintf(nol, sizeof nol, "%s", tu_path("nolabels.h5"));
    tu_capture_run(g_run, g_data, nol, TU_CAP_NO_LABELS);
    infl_ctx *ctx = tu_ctx();
    infl_split *s = tu_open_split(ctx, tu_ref(0, nol, "train"));
    int32_t y[3];
    cr_assert_eq(store_split_read(ctx, s, 0, 3, NULL, y, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert(y[0] == -1 && y[1] == -1 && y[2] == -1, "labels %d %d %d", y[0], y[1], y[2]);
    store_split_close(s);
    infl_rank_options o = rank_opts(1, INFL_METHOD_GRADDOT, NULL);
    char tr[700];
    snprintf(tr, sizeof tr, "%s:/train", nol);
    o.run = nol;
    o.train = tr;
    infl_rank_result *r0 = NULL, *r1 = NULL;
    cr_assert_eq(infl_rank(ctx, &o, &r0), INFL_OK, "%s", infl_ctx_error(ctx));
    o = rank_opts(1, INFL_METHOD_GRADDOT, NULL);
    cr_assert_eq(infl_rank(ctx, &o, &r1), INFL_OK, "%s", infl_ctx_error(ctx));
    same_rank(r0, r1, "no labels");
    infl_rank_result_free(r0);
    infl_rank_result_free(r1);
    infl_ctx_free(ctx);
}

// A language model's capture: infl's GPT recorded per token row (several rows an example)
// ranks its documents as the GPT run does.
Test(captured, token_rows_of_a_gpt_rank_as_the_run) {
    snprintf(g_data, sizeof g_data, "%s", tu_path("docs.h5"));
    snprintf(g_run, sizeof g_run, "%s", tu_path("gpt.h5"));
    snprintf(g_cap, sizeof g_cap, "%s", tu_path("gcap.h5"));
    tu_tiny_gpt(g_data, g_run, 0.25, 2, 3);
    infl_ctx *ctx;
    tu_capture_run(g_run, g_data, g_cap, TU_CAP_OK);
    rank_both(INFL_METHOD_TRACIN, NULL, NULL, "gpt tracin");
    rank_both(INFL_METHOD_GRADCOS, NULL, NULL, "gpt gradcos");
    ctx = tu_ctx();
    char fr[600], fc[600];
    snprintf(fr, sizeof fr, "%s", tu_path("fr.h5"));
    snprintf(fc, sizeof fc, "%s", tu_path("fc.h5"));
    infl_fit_options fo = infl_fit_options_default();
    fo.fisher_empirical = 1;
    fo.force = 1;
    fo.run = g_run;
    cr_assert_eq(infl_fit(ctx, &fo, fr, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    fo.run = g_cap;
    cr_assert_eq(infl_fit(ctx, &fo, fc, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    rank_both(INFL_METHOD_EKFAC, fr, fc, "gpt ekfac");
    // a gradient index of the capture ranks as the run's (one projection of the same gradients)
    ctx = tu_ctx();
    char ir[600], ic[600];
    snprintf(ir, sizeof ir, "%s", tu_path("ir.h5"));
    snprintf(ic, sizeof ic, "%s", tu_path("ic.h5"));
    infl_index_options io = infl_index_options_default();
    io.dim = 24;
    io.float16 = 0;
    io.force = 1;
    io.run = g_run;
    cr_assert_eq(infl_index(ctx, &io, ir, &(infl_index_report){0}), INFL_OK, "%s", infl_ctx_error(ctx));
    io.run = g_cap;
    cr_assert_eq(infl_index(ctx, &io, ic, &(infl_index_report){0}), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_rank_options o0 = rank_opts(0, INFL_METHOD_TRACIN, NULL), o1 = rank_opts(1, INFL_METHOD_TRACIN, NULL);
    o0.index = ir;
    o1.index = ic;
    o0.run = o1.run = NULL;
    infl_rank_result *r0 = NULL, *r1 = NULL;
    cr_assert_eq(infl_rank(ctx, &o0, &r0), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_rank(ctx, &o1, &r1), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_null(r1->query_prompt);  // token rows of a capture carry no text
    same_rank(r0, r1, "gpt index tracin");
    infl_rank_result_free(r0);
    infl_rank_result_free(r1);
    infl_ctx_free(ctx);
}

// From the command line: info describes the capture, rank and self run on it alone (the run
// file is its own training data), and what a capture cannot serve says why.
Test(captured, command_line, .init = setup) {
    const char *info[] = {"infl", "info", g_cap, NULL};
    cr_assert_eq(tu_cli(info), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "captured") && strstr(tu_out(), "layer1") && strstr(tu_out(), "split /train") &&
                  strstr(tu_out(), "token rows"),
              "%s", tu_out());
    char q[700], out[600];
    snprintf(q, sizeof q, "%s:/test[0:3]", g_cap);
    snprintf(out, sizeof out, "%s", tu_path("scores.h5"));
    const char *rank[] = {"infl", "rank", "--run", g_cap, "--query", q, "--method", "tracin", "--top", "3", "-o", out, NULL};
    cr_assert_eq(tu_cli(rank), 0, "%s", tu_err());
    cr_assert(tu_exists(out));
    const char *self[] = {"infl", "self", "--run", g_cap, "--method", "graddot", NULL};
    cr_assert_eq(tu_cli(self), 0, "%s", tu_err());
    // eval: the mean of the captured losses is the run's own mean loss
    char dref[700], cref[700];
    snprintf(dref, sizeof dref, "%s:/test", g_data);
    snprintf(cref, sizeof cref, "%s:/test", g_cap);
    const char *ev0[] = {"infl", "eval", "--run", g_run, "--data", dref, NULL};
    cr_assert_eq(tu_cli(ev0), 0, "%s", tu_err());
    double l0 = atof(strstr(tu_out(), "loss ") + 5);
    const char *ev1[] = {"infl", "eval", "--run", g_cap, "--data", cref, NULL};
    cr_assert_eq(tu_cli(ev1), 0, "%s", tu_err());
    double l1 = atof(strstr(tu_out(), "loss ") + 5);
    cr_assert(l0 > 0 && fabs(l0 - l1) <= 1e-4 * l0, "eval: run %g, capture %g", l0, l1);
    const char *bad[] = {"infl", "rank", "--run", g_cap, "--query", q, "--method", "if", NULL};
    cr_assert_neq(tu_cli(bad), 0);
    cr_assert(strstr(tu_err(), "captured"), "%s", tu_err());
}
