/*
 * test_gpt.c — the GPT (models/gpt.c) and the model seam with examples of many token
 * rows (models/model.h):
 *  - the whole GPT's gradient against central finite differences of its loss, tensor
 *    by tensor, on a tiny configuration (documents of several lengths, one truncated);
 *  - the factors the seam hands out: Σ_t δ_t ã_tᵀ of each document equals that
 *    document's own gradient of every attributed layer, the head's Δ is softmax minus
 *    the target, padding rows are left out;
 *  - a test model of shared dense layers applied to every token row (T_i rows per
 *    example, loss summed over them): its A and Δ against a float64 reference; and the
 *    MLP through the seam equals the MLP's own forward and backward, bit for bit;
 *  - training lowers the loss and is deterministic for a seed; eval, generate; bad
 *    input (a run of the other kind, another tokenizer, divergence keeps the good
 *    checkpoints).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "models/gpt.h"
#include "models/mlp.h"
#include "models/model.h"
#include "store/store.h"
#include "cudapair.h"
#include "testutil.h"

// ---- fixtures ----

static const infl_gpt_spec tiny = {.n_layer = 2, .n_head = 2, .dim = 8, .context = 12, .vocab = 19, .eot = 18, .wd = 0};

// Three documents of 3, 7 and 15 tokens (the last longer than the context's 11), in
// rows of T = context tokens.
#define NDOC 3
static void tiny_docs(int32_t *tok, int32_t *len) {
    const int L[NDOC] = {3, 7, 15};
    uint64_t st = 5;
    for (int i = 0; i < NDOC; i++) {
        len[i] = L[i];
        for (int t = 0; t < tiny.context; t++) tok[i * tiny.context + t] = t < L[i] ? (int32_t)(tu_uniform(&st) * 18) : 18;
    }
}

// Parameters: the seeded initialisation, with LayerNorm weights and biases moved off
// 1 and 0 so that every path carries a gradient.
static float *tiny_params(size_t *P) {
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = tiny};
    *P = infl_spec_nparams(&ms);
    float *p = malloc(*P * sizeof(float));
    infl_gpt_init(&tiny, 3, p);
    uint64_t st = 11;
    for (size_t i = 0; i < *P; i++) p[i] += (float)(0.05 * (tu_uniform(&st) - 0.5)) + p[i] * 4.0f;
    return p;
}

// Σ over the documents of their losses at parameters hp (host), in float64.
static double tiny_loss(infl_ctx *ctx, gpt_work *w, float *dW, const float *hp, size_t P, const int32_t *tok,
                        const int32_t *len) {
    cr_assert_eq(ctx->be->upload(ctx, dW, hp, P * sizeof(float)), INFL_OK);
    cr_assert_eq(gpt_forward(ctx, &tiny, dW, tok, tiny.context, len, NDOC, w, NULL, NULL), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    double dl[NDOC], s = 0;
    cr_assert_eq(gpt_doc_losses(ctx, w, dl), INFL_OK);
    for (int i = 0; i < NDOC; i++) s += dl[i];
    return s;
}

// ---- the whole GPT's gradient against finite differences ----

Test(gpt, gradient_matches_finite_differences) {
    infl_ctx *ctx = tu_ctx();
    size_t P;
    float *hp = tiny_params(&P), *hg = malloc(P * sizeof(float)), *hq = malloc(P * sizeof(float));
    int32_t tok[NDOC * 12], len[NDOC];
    tiny_docs(tok, len);
    gpt_work *w;
    cr_assert_eq(gpt_work_create(ctx, &tiny, NDOC, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    float *dW = tu_upload(ctx, hp, P * sizeof(float)), *dG;
    cr_assert_eq(infl_be_alloc_f(ctx, &dG, P, "g"), INFL_OK);
    int64_t ntok;
    int trunc;
    cr_assert_eq(gpt_forward(ctx, &tiny, dW, tok, tiny.context, len, NDOC, w, &ntok, &trunc), INFL_OK);
    cr_assert_eq(ntok, 4 + 8 + 12, "positions with a loss: %lld", (long long)ntok);
    cr_assert_eq(trunc, 1);
    cr_assert_eq(gpt_backward(ctx, &tiny, dW, w, 0, 0, 0, dG, 1.0f), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(ctx->be->download(ctx, hg, dG, P * sizeof(float)), INFL_OK);
    // per tensor: the directional derivative along the gradient's own part (must be
    // |g_t|) and along a random direction, by central differences of the float32 loss.
    // Noise: the loss (~70) in float32 varies by ~1e-5 between nearby points, so
    // with eps 1e-3 a difference is good to ~1e-2 absolute; the tolerance is that plus
    // 1% of the derivative.
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = tiny};
    infl_tensor ts[64];
    int nt = infl_spec_tensors(&ms, ts, 64);
    cr_assert_eq(nt, 2 + 12 * tiny.n_layer + 2);
    const double eps = 1e-3;
    uint64_t st = 77;
    int checked = 0;
    for (int t = 0; t < nt; t++) {
        size_t n = (size_t)ts[t].dims[0] * (ts[t].rank == 2 ? (size_t)ts[t].dims[1] : 1), off = ts[t].off;
        double gn = 0;
        for (size_t i = 0; i < n; i++) gn += (double)hg[off + i] * hg[off + i];
        gn = sqrt(gn);
        for (int dir = 0; dir < 2; dir++) {
            double *v = calloc(n, sizeof(double)), vn = 0, gv = 0;
            for (size_t i = 0; i < n; i++) {
                v[i] = dir == 0 ? (gn > 0 ? hg[off + i] / gn : 0) : tu_uniform(&st) * 2 - 1;
                vn += v[i] * v[i];
            }
            vn = sqrt(vn);
            for (size_t i = 0; i < n; i++) v[i] /= vn > 0 ? vn : 1, gv += v[i] * hg[off + i];
            memcpy(hq, hp, P * sizeof(float));
            for (size_t i = 0; i < n; i++) hq[off + i] = (float)(hp[off + i] + eps * v[i]);
            double up = tiny_loss(ctx, w, dW, hq, P, tok, len);
            for (size_t i = 0; i < n; i++) hq[off + i] = (float)(hp[off + i] - eps * v[i]);
            double dn = tiny_loss(ctx, w, dW, hq, P, tok, len);
            double fd = (up - dn) / (2 * eps);
            cr_assert(fabs(fd - gv) <= 1e-2 + 1e-2 * fabs(gv), "%s (%s direction): finite differences %.6g, gradient %.6g",
                      ts[t].name, dir ? "random" : "gradient", fd, gv);
            if (dir == 0 && gn > 1e-3) checked++;
            free(v);
        }
    }
    // every tensor but the padding-free ones carries a gradient here
    cr_assert_geq(checked, nt - 1, "only %d of %d tensors had a gradient to check", checked, nt);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dG);
    gpt_work_free(ctx, w);
    free(hp);
    free(hg);
    free(hq);
    infl_ctx_free(ctx);
}

// ---- the seam: what the GPT hands out ----

// The seam's factors of NDOC documents (tok, len) against each document's own gradient.
static void check_seam(const int32_t *tok, const int32_t *len) {
    infl_ctx *ctx = tu_ctx();
    size_t P;
    float *hp = tiny_params(&P);
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = tiny};
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, &ms, 1, &m), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(m->nlayers, 4 * tiny.n_layer + 1);
    cr_assert_eq(m->tokens, 1);
    cr_assert_str_eq(m->layer[4 * tiny.n_layer].name, "lm_head");
    cr_assert_eq(m->layer[4 * tiny.n_layer].bias, 0);
    float *dW = tu_upload(ctx, hp, P * sizeof(float)), *dG;
    cr_assert_eq(infl_be_alloc_f(ctx, &dG, P, "g"), INFL_OK);
    infl_model_work *mw;
    cr_assert_eq(infl_model_work_create(ctx, m, NDOC, &mw), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_batch bt = {.b = NDOC, .tok = tok, .T = tiny.context, .len = len};
    cr_assert_eq(infl_model_factors(ctx, m, dW, &bt, mw), INFL_OK, "%s", infl_ctx_error(ctx));
    // rows: the real positions only (min(L + 1, context) each), document by document
    for (int i = 0; i < NDOC; i++)
        cr_assert_eq(mw->row_off[i + 1] - mw->row_off[i], len[i] + 1 < tiny.context ? len[i] + 1 : tiny.context);
    float hl[NDOC];
    cr_assert_eq(ctx->be->download(ctx, hl, mw->loss, sizeof hl), INFL_OK);
    // each document alone: its gradient, against Σ_t δ_t ã_tᵀ of its rows
    gpt_work *w1;
    cr_assert_eq(gpt_work_create(ctx, &tiny, 1, &w1), INFL_OK);
    float *g1 = malloc(P * sizeof(float));
    for (int i = 0; i < NDOC; i++) {
        double dl;
        cr_assert_eq(gpt_forward(ctx, &tiny, dW, tok + i * tiny.context, tiny.context, len + i, 1, w1, NULL, NULL),
                     INFL_OK);
        cr_assert_eq(gpt_doc_losses(ctx, w1, &dl), INFL_OK);
        cr_assert(fabs(dl - hl[i]) <= 1e-4 * fabs(dl), "document %d: loss %g through the seam, %g alone", i, hl[i], dl);
        cr_assert_eq(gpt_backward(ctx, &tiny, dW, w1, 0, 0, 0, dG, 1.0f), INFL_OK);
        cr_assert_eq(ctx->be->download(ctx, g1, dG, P * sizeof(float)), INFL_OK);
        int r0 = mw->row_off[i], nr = mw->row_off[i + 1] - r0;
        for (int l = 0; l < 4 * tiny.n_layer; l++) {
            const infl_linear *ly = &m->layer[l];
            float *A = malloc(sizeof(float) * nr * ly->d_in), *D = malloc(sizeof(float) * nr * ly->d_out);
            cr_assert_eq(ctx->be->download(ctx, A, mw->A[l] + (size_t)r0 * ly->d_in, sizeof(float) * nr * ly->d_in),
                         INFL_OK);
            cr_assert_eq(ctx->be->download(ctx, D, mw->D[l] + (size_t)r0 * ly->d_out, sizeof(float) * nr * ly->d_out),
                         INFL_OK);
            double err = 0, ref = 0;
            for (int o = 0; o < ly->d_out; o++) {
                for (int j = 0; j <= ly->d_in; j++) {
                    if (j == ly->d_in && !ly->bias) continue;
                    double s = 0;
                    for (int t = 0; t < nr; t++) s += (double)D[t * ly->d_out + o] * (j < ly->d_in ? A[t * ly->d_in + j] : 1.0);
                    double g = j < ly->d_in ? g1[ly->w_off + (size_t)o * ly->d_in + j] : g1[ly->b_off + o];
                    err = fmax(err, fabs(s - g));
                    ref = fmax(ref, fabs(g));
                }
            }
            cr_assert(err <= 1e-4 * ref + 1e-6, "document %d, layer %s: |sum_t delta a^T - gradient| = %g (of %g)", i,
                      ly->name, err, ref);
            free(A);
            free(D);
        }
    }
    // the head: Δ = softmax(logits) − onehot(target) at each real position
    int lh = 4 * tiny.n_layer, V = tiny.vocab;
    float *Dh = malloc(sizeof(float) * mw->rows * V), *z = malloc(sizeof(float) * V);
    cr_assert_eq(ctx->be->download(ctx, Dh, mw->D[lh], sizeof(float) * mw->rows * V), INFL_OK);
    for (int i = 0; i < NDOC; i++) {
        cr_assert_eq(gpt_forward(ctx, &tiny, dW, tok + i * tiny.context, tiny.context, len + i, 1, w1, NULL, NULL),
                     INFL_OK);
        for (int t = 0; t < mw->row_off[i + 1] - mw->row_off[i]; t++) {
            cr_assert_eq(gpt_logits_at(ctx, &tiny, w1, 0, t, z), INFL_OK);
            int target = t < len[i] ? tok[i * tiny.context + t] : tiny.eot;
            double mx = z[0], s = 0;
            for (int k = 1; k < V; k++) mx = fmax(mx, z[k]);
            for (int k = 0; k < V; k++) s += exp(z[k] - mx);
            for (int k = 0; k < V; k++) {
                double want = exp(z[k] - mx) / s - (k == target);
                float got = Dh[(size_t)(mw->row_off[i] + t) * V + k];
                cr_assert(fabs(got - want) < 1e-5, "document %d position %d token %d: delta %g, want %g", i, t, k, got,
                          want);
            }
        }
    }
    free(Dh);
    free(z);
    free(g1);
    gpt_work_free(ctx, w1);
    infl_model_work_free(ctx, m, mw);
    infl_model_free(m);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dG);
    free(hp);
    infl_ctx_free(ctx);
}

Test(gpt, seam_factors_are_each_documents_gradient) {
    int32_t tok[NDOC * 12], len[NDOC];
    tiny_docs(tok, len);  // 3, 7 and 15 tokens: padded, one truncated
    check_seam(tok, len);
}

Test(gpt, seam_factors_without_padding) {
    int32_t tok[NDOC * 12], len[NDOC];
    tiny_docs(tok, len);
    for (int i = 0; i < NDOC; i++) len[i] = 11 + i;  // every document fills the context: nothing to compact
    uint64_t st = 9;
    for (int i = 0; i < NDOC * 12; i++) tok[i] = (int32_t)(tu_uniform(&st) * 18);
    check_seam(tok, len);
}

// Targets drawn from the model are keyed by (document index × context + position): a
// document draws the same ones in a batch or alone, padding stays masked, and they
// are not the data's.
Test(gpt, sampled_targets_are_keyed_by_document) {
    infl_ctx *ctx = tu_ctx();
    size_t P;
    float *hp = tiny_params(&P);
    float *W = tu_upload(ctx, hp, P * sizeof(float));
    int32_t tok[NDOC * 12], len[NDOC];
    tiny_docs(tok, len);
    gpt_work *w;
    cr_assert_eq(gpt_work_create(ctx, &tiny, NDOC, &w), INFL_OK);
    double all[NDOC], one, data[NDOC], again[NDOC];
    cr_assert_eq(gpt_forward(ctx, &tiny, W, tok, tiny.context, len, NDOC, w, NULL, NULL), INFL_OK);
    cr_assert_eq(gpt_doc_losses(ctx, w, data), INFL_OK);
    cr_assert_eq(gpt_backward(ctx, &tiny, W, w, 1, 77, 100, NULL, 1.0f), INFL_OK);
    cr_assert_eq(gpt_doc_losses(ctx, w, all), INFL_OK);
    cr_assert_eq(gpt_backward(ctx, &tiny, W, w, 1, 78, 100, NULL, 1.0f), INFL_OK);  // another seed
    cr_assert_eq(gpt_doc_losses(ctx, w, again), INFL_OK);
    int differ = 0;
    for (int i = 0; i < NDOC; i++) {
        cr_assert_eq(gpt_forward(ctx, &tiny, W, tok + 12 * i, tiny.context, len + i, 1, w, NULL, NULL), INFL_OK);
        cr_assert_eq(gpt_backward(ctx, &tiny, W, w, 1, 77, 100 + i, NULL, 1.0f), INFL_OK);
        cr_assert_eq(gpt_doc_losses(ctx, w, &one), INFL_OK);
        cr_assert(fabs(one - all[i]) <= 1e-5 * fabs(all[i]), "document %d: sampled loss %g in the batch, %g alone", i,
                  all[i], one);
        cr_assert(fabs(one - data[i]) > 1e-3, "document %d: the sampled targets' loss equals the data's (%g)", i, one);
        differ += fabs(again[i] - all[i]) > 1e-6;
    }
    cr_assert_gt(differ, 0, "seeds 77 and 78 drew the same targets for every document");
    gpt_work_free(ctx, w);
    infl_be_free(ctx, W);
    free(hp);
    infl_ctx_free(ctx);
}

// ---- a test model of T_i token rows per example through the seam ----
//
// Shared dense layers (an MLP's) applied to every token row, the loss of an example
// the sum over its rows. Its batch: x holds the token rows of all examples one after
// another, len[i] the rows of example i, y a class per token row. It implements the
// seam with the MLP's own code, so the seam's contract (row offsets, A and Δ per
// row, losses summed per example) is exercised apart from any one architecture.

typedef struct {
    infl_mlp_work *w;
    float *hl;
} tok_impl;

static void tok_free(infl_model *m) { free(m); }
static infl_status tok_check(infl_ctx *ctx, const infl_model *m, const infl_split *s) {
    (void)ctx, (void)m, (void)s;
    return INFL_OK;
}
static void tok_work_free(infl_ctx *ctx, infl_model_work *mw) {
    tok_impl *t = mw->impl;
    infl_mlp_work_free(ctx, t->w);
    free(t->hl);
    free(t);
    infl_be_free(ctx, mw->loss);
}
static infl_status tok_work_create(infl_ctx *ctx, const infl_model *m, infl_model_work *mw) {
    tok_impl *t = calloc(1, sizeof *t);
    mw->impl = t;
    t->hl = calloc(4096, sizeof(float));
    FORWARD_IF_ERROR(infl_mlp_work_create(ctx, &m->spec.mlp, 4096, &t->w));
    return infl_be_alloc_f(ctx, &mw->loss, (size_t)mw->maxB, "losses");
}
static infl_status tok_losses(infl_ctx *ctx, infl_model_work *mw) {
    tok_impl *t = mw->impl;
    float s[64];
    FORWARD_IF_ERROR(ctx->be->download(ctx, t->hl, t->w->loss, (size_t)mw->rows * sizeof(float)));
    for (int i = 0; i < mw->b; i++) {
        double acc = 0;
        for (int r = mw->row_off[i]; r < mw->row_off[i + 1]; r++) acc += t->hl[r];
        s[i] = (float)acc;
    }
    return ctx->be->upload(ctx, mw->loss, s, (size_t)mw->b * sizeof(float));
}
static infl_status tok_forward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                               infl_model_work *mw) {
    tok_impl *t = mw->impl;
    mw->b = bt->b;
    mw->row_off[0] = 0;
    for (int i = 0; i < bt->b; i++) mw->row_off[i + 1] = mw->row_off[i] + bt->len[i];
    mw->rows = mw->row_off[bt->b];
    FORWARD_IF_ERROR(infl_mlp_forward(ctx, params, bt->x, mw->rows, t->w));
    for (int l = 0; l < m->nlayers; l++) infl_mlp_factors(t->w, l, &mw->D[l], &mw->A[l]);
    FORWARD_IF_ERROR(infl_mlp_loss(ctx, bt->y, NULL, t->w));
    return tok_losses(ctx, mw);
}
static infl_status tok_backward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                                const infl_targets *tg, infl_model_work *mw, float *grad, float scale) {
    (void)m, (void)tg;
    tok_impl *t = mw->impl;
    FORWARD_IF_ERROR(infl_mlp_backward(ctx, params, bt->y, NULL, t->w, grad, scale));
    return tok_losses(ctx, mw);
}
static infl_status tok_predict(infl_ctx *ctx, const infl_model *m, infl_model_work *mw, int32_t *pred) {
    (void)ctx, (void)m;
    for (int i = 0; i < mw->b; i++) pred[i] = -1;
    return INFL_OK;
}
static double tok_flops(const infl_model *m, double rows) { return infl_mlp_fb_flops(&m->spec.mlp, (int)rows); }
static const infl_model_iface tok_iface = {
    .kind = "token-mlp (test)",
    .free = tok_free,
    .check_data = tok_check,
    .work_create = tok_work_create,
    .work_free = tok_work_free,
    .forward = tok_forward,
    .backward = tok_backward,
    .predict = tok_predict,
    .fb_flops = tok_flops,
};

Test(seam, token_rows_model_against_float64_reference) {
    infl_ctx *ctx = tu_ctx();
    const infl_mlp_spec s = {.L = 3, .widths = {5, 7, 6, 4}, .act = INFL_ACT_TANH, .loss = INFL_LOSS_SOFTMAX_CE};
    infl_model *m = calloc(1, sizeof *m);
    m->iface = &tok_iface;
    m->spec = *TU_MS(s);
    infl_model_init_layers(m, 0);
    m->tokens = 1;
    const int B = 4, T[4] = {3, 1, 5, 2}, R = 11, P = (int)m->nparams;
    uint64_t st = 3;
    float *hp = malloc(sizeof(float) * P), *hx = malloc(sizeof(float) * R * 5);
    double *wd = malloc(sizeof(double) * P);
    int32_t hy[11], lens[4];
    for (int i = 0; i < P; i++) wd[i] = hp[i] = (float)(tu_uniform(&st) - 0.5);
    for (int i = 0; i < R * 5; i++) hx[i] = (float)(2 * tu_uniform(&st) - 1);
    for (int r = 0; r < R; r++) hy[r] = (int32_t)(tu_uniform(&st) * 4);
    for (int i = 0; i < B; i++) lens[i] = T[i];
    float *dW = tu_upload(ctx, hp, sizeof(float) * P), *dX = tu_upload(ctx, hx, sizeof(float) * R * 5);
    int32_t *dy = tu_upload(ctx, hy, sizeof hy);
    infl_model_work *mw;
    cr_assert_eq(infl_model_work_create(ctx, m, B, &mw), INFL_OK);
    infl_batch bt = {.b = B, .x = dX, .y = dy, .len = lens};
    cr_assert_eq(infl_model_factors(ctx, m, dW, &bt, mw), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(mw->rows, R);
    float hl[4];
    cr_assert_eq(ctx->be->download(ctx, hl, mw->loss, sizeof hl), INFL_OK);
    // the float64 reference, token row by token row
    for (int i = 0, r = 0; i < B; i++) {
        double loss = 0;
        for (int t = 0; t < T[i]; t++, r++) {
            cr_assert(r >= mw->row_off[i] && r < mw->row_off[i + 1]);
            double x[5], delta[7 + 6 + 4], a[3][8];
            for (int j = 0; j < 5; j++) a[0][j] = x[j] = hx[r * 5 + j];
            double *gs = calloc((size_t)P, sizeof(double));  // tu_ref_example backpropagates into it
            loss += tu_ref_example(&s, wd, x, hy[r], NULL, gs, delta);
            free(gs);
            // the layers' inputs: a_0 = x, a_l = φ(W_{l-1} a_{l-1} + b_{l-1})
            for (int l = 0; l < 2; l++)
                for (int o = 0; o < s.widths[l + 1]; o++) {
                    double z = wd[infl_mlp_boff(&s, l) + o];
                    for (int j = 0; j < s.widths[l]; j++) z += wd[infl_mlp_woff(&s, l) + o * s.widths[l] + j] * a[l][j];
                    a[l + 1][o] = tu_ref_act(s.act, z);
                }
            for (int l = 0, doff = 0; l < 3; doff += s.widths[l + 1], l++) {
                float Ar[8], Dr[8];
                cr_assert_eq(ctx->be->download(ctx, Ar, mw->A[l] + (size_t)r * s.widths[l], sizeof(float) * s.widths[l]),
                             INFL_OK);
                cr_assert_eq(ctx->be->download(ctx, Dr, mw->D[l] + (size_t)r * s.widths[l + 1],
                                               sizeof(float) * s.widths[l + 1]),
                             INFL_OK);
                for (int j = 0; j < s.widths[l]; j++)
                    cr_assert(fabs(Ar[j] - a[l][j]) < 1e-5, "row %d layer %d input %d: %g vs %g", r, l, j, Ar[j], a[l][j]);
                for (int o = 0; o < s.widths[l + 1]; o++)
                    cr_assert(fabs(Dr[o] - delta[doff + o]) < 1e-5, "row %d layer %d delta %d: %g vs %g", r, l, o, Dr[o],
                              delta[doff + o]);
            }
        }
        cr_assert(fabs(hl[i] - loss) < 1e-4 * fabs(loss), "example %d: loss %g, reference %g", i, hl[i], loss);
    }
    infl_model_work_free(ctx, m, mw);
    infl_model_free(m);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    free(hp);
    free(hx);
    free(wd);
    infl_ctx_free(ctx);
}

Test(seam, mlp_through_the_seam_equals_the_mlp) {
    infl_ctx *ctx = tu_ctx();
    const infl_mlp_spec s = {.L = 3, .widths = {6, 9, 5, 3}, .act = INFL_ACT_GELU, .loss = INFL_LOSS_SOFTMAX_CE};
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, TU_MS(s), 0, &m), INFL_OK);
    cr_assert_eq(m->lsize, m->nparams, "the MLP's layer space is its parameter vector");
    const int B = 7, P = (int)m->nparams;
    uint64_t st = 8;
    float *hp = malloc(sizeof(float) * P), hx[7 * 6];
    int32_t hy[7];
    for (int i = 0; i < P; i++) hp[i] = (float)(tu_uniform(&st) - 0.5);
    for (int i = 0; i < B * 6; i++) hx[i] = (float)(tu_uniform(&st) * 2 - 1);
    for (int i = 0; i < B; i++) hy[i] = (int32_t)(tu_uniform(&st) * 3);
    float *dW = tu_upload(ctx, hp, sizeof(float) * P), *dX = tu_upload(ctx, hx, sizeof hx);
    int32_t *dy = tu_upload(ctx, hy, sizeof hy);
    infl_model_work *mw;
    infl_mlp_work *w;
    cr_assert_eq(infl_model_work_create(ctx, m, B, &mw), INFL_OK);
    cr_assert_eq(infl_mlp_work_create(ctx, &s, B, &w), INFL_OK);
    infl_batch bt = {.b = B, .x = dX, .y = dy};
    cr_assert_eq(infl_model_factors(ctx, m, dW, &bt, mw), INFL_OK);
    cr_assert_eq(infl_mlp_forward(ctx, dW, dX, B, w), INFL_OK);
    cr_assert_eq(infl_mlp_backward(ctx, dW, dy, NULL, w, NULL, 1.0f), INFL_OK);
    cr_assert_eq(mw->rows, B);
    for (int i = 0; i <= B; i++) cr_assert_eq(mw->row_off[i], i);
    for (int l = 0; l < s.L; l++) {
        const float *Dl, *Al;
        infl_mlp_factors(w, l, &Dl, &Al);
        float a1[7 * 9], a2[7 * 9];
        size_t na = sizeof(float) * B * s.widths[l], nd = sizeof(float) * B * s.widths[l + 1];
        cr_assert_eq(ctx->be->download(ctx, a1, mw->A[l], na), INFL_OK);
        cr_assert_eq(ctx->be->download(ctx, a2, Al, na), INFL_OK);
        cr_assert_eq(memcmp(a1, a2, na), 0, "layer %d inputs differ", l);
        cr_assert_eq(ctx->be->download(ctx, a1, mw->D[l], nd), INFL_OK);
        cr_assert_eq(ctx->be->download(ctx, a2, Dl, nd), INFL_OK);
        cr_assert_eq(memcmp(a1, a2, nd), 0, "layer %d deltas differ", l);
    }
    infl_mlp_work_free(ctx, w);
    infl_model_work_free(ctx, m, mw);
    infl_model_free(m);
    infl_be_free(ctx, dW);
    infl_be_free(ctx, dX);
    infl_be_free(ctx, dy);
    free(hp);
    infl_ctx_free(ctx);
}

// ---- training, eval, generate ----

// A corpus of short repetitive documents (one per line) imported with the bytes
// tokenizer (or BPE of `bpe` tokens), into `out`.
static void make_docs(const char *out, int bpe) {
    const char *txt = tu_path("corpus.txt");
    FILE *f = fopen(txt, "w");
    cr_assert(f);
    const char *words[] = {"the cat sat", "a dog ran", "the sun is hot", "we like tea", "it is late"};
    uint64_t st = 2;
    for (int i = 0; i < 240; i++) fprintf(f, "%s and %s.\n", words[(int)(tu_uniform(&st) * 5)], words[i % 5]);
    fclose(f);
    tu_import_lines(txt, out, bpe, infl_import_text_options_default().test_fraction);
}

static infl_train_options tiny_train(const char *data) {
    infl_train_options o = infl_train_options_gpt_default();
    o.data = data;
    o.nlayers = 1;
    o.heads = 2;
    o.dim = 16;
    o.context = 48;
    o.epochs = 3;
    o.batch = 16;
    o.lr = 1e-2;
    o.warmup = 5;
    o.checkpoint_every = 20;
    o.force = 1;
    return o;
}

static float *load_final(const char *run, size_t *P) {
    infl_ctx *ctx = tu_ctx();
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    *P = infl_spec_nparams(store_run_spec(r));
    float *p = malloc(*P * sizeof(float));
    int fin;
    cr_assert_eq(store_run_find(ctx, r, NULL, &fin), INFL_OK);
    cr_assert_eq(store_run_load(ctx, r, fin, p), INFL_OK);
    store_run_close(r);
    infl_ctx_free(ctx);
    return p;
}

Test(gpt, training_learns_and_is_deterministic, .timeout = 300) {
    char docs[1100], r1[1100], r2[1100], r3[1100];
    snprintf(docs, sizeof docs, "%s", tu_path("docs.h5"));
    snprintf(r1, sizeof r1, "%s", tu_path("r1.h5"));
    snprintf(r2, sizeof r2, "%s", tu_path("r2.h5"));
    snprintf(r3, sizeof r3, "%s", tu_path("r3.h5"));
    make_docs(docs, 0);
    infl_ctx *ctx = tu_ctx();
    char train[1200], test[1200];
    snprintf(train, sizeof train, "%s:/train", docs);
    snprintf(test, sizeof test, "%s:/test", docs);
    infl_train_options o = tiny_train(train);
    infl_train_report rep;
    cr_assert_eq(infl_train(ctx, &o, r1, &rep), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_gt(rep.checkpoints, 1);
    cr_assert_gt(rep.tokens, 0);
    // the untrained model's loss is about ln 257 = 5.55 nats per token
    infl_eval_result ev;
    cr_assert_eq(infl_eval(ctx, r1, NULL, test, &ev), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_lt(ev.loss, 2.5, "loss per token %g after training", ev.loss);
    cr_assert_lt(fabs(ev.perplexity - exp(ev.loss)), 1e-9 * ev.perplexity);
    infl_eval_result e0;
    infl_run *run;
    cr_assert_eq(store_run_open(ctx, r1, &run), INFL_OK);
    const char *first = store_run_checkpoint(run, 0)->name;
    char firstname[32];
    snprintf(firstname, sizeof firstname, "%s", first);
    store_run_close(run);
    cr_assert_eq(infl_eval(ctx, r1, firstname, test, &e0), INFL_OK);
    cr_assert_gt(e0.loss, ev.loss, "the first checkpoint (%g) should be worse than the last (%g)", e0.loss, ev.loss);
    // the same seed: the same model, bit for bit; another seed: another
    cr_assert_eq(infl_train(ctx, &o, r2, NULL), INFL_OK);
    o.seed = 2;
    cr_assert_eq(infl_train(ctx, &o, r3, NULL), INFL_OK);
    size_t P1, P2, P3;
    float *p1 = load_final(r1, &P1), *p2 = load_final(r2, &P2), *p3 = load_final(r3, &P3);
    cr_assert_eq(P1, P2);
    cr_assert_eq(memcmp(p1, p2, P1 * sizeof(float)), 0, "two runs with seed 1 differ");
    cr_assert_neq(memcmp(p1, p3, P1 * sizeof(float)), 0, "seeds 1 and 2 gave the same model");
    // generate: seeded, the same twice; greedy (temperature 0) is sampling among the top 1
    infl_generate_options go = infl_generate_options_default();
    go.run = r1;
    go.prompt = "the cat";
    go.tokens = 30;
    go.seed = 4;
    infl_generate_result *g1, *g2;
    cr_assert_eq(infl_generate(ctx, &go, &g1), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_generate(ctx, &go, &g2), INFL_OK);
    cr_assert_str_eq(g1->completion, g2->completion);
    cr_assert_eq(g1->prompt_tokens, 7);
    cr_assert(g1->tokens == 30 || (g1->ended && g1->tokens < 30), "%d tokens, ended %d", g1->tokens, g1->ended);
    infl_generate_result_free(g1);
    infl_generate_result_free(g2);
    go.temperature = 0;
    cr_assert_eq(infl_generate(ctx, &go, &g1), INFL_OK);
    go.temperature = 1;
    go.top_k = 1;
    go.seed = 99;
    cr_assert_eq(infl_generate(ctx, &go, &g2), INFL_OK);
    cr_assert_str_eq(g1->completion, g2->completion, "greedy %s vs top-1 %s", g1->completion, g2->completion);
    infl_generate_result_free(g1);
    infl_generate_result_free(g2);
    free(p1);
    free(p2);
    free(p3);
    infl_ctx_free(ctx);
}

// ---- bad input ----

// A documents dataset of 40 short documents in a BPE tokenizer of one merge (a, b) ->
// 257: the same vocabulary for every (a, b), other encodings.
static void make_bpe1_docs(const char *path, int32_t a, int32_t b) {
    infl_ctx *ctx = tu_ctx();
    int32_t merge[2] = {a, b};
    infl_tokenizer t = {.kind = INFL_TOK_BPE, .vocab = 258, .eot = 256, .n_merges = 1, .merges = merge};
    infl_dsw *w;
    cr_assert_eq(store_dataset_create(ctx, path, 1, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_dataset_set_tokenizer(ctx, w, &t), INFL_OK, "%s", infl_ctx_error(ctx));
    const char *splits[2] = {"train", "test"};
    for (int sp = 0; sp < 2; sp++) {
        cr_assert_eq(store_dataset_add_docs_split(ctx, w, splits[sp]), INFL_OK, "%s", infl_ctx_error(ctx));
        int32_t len[40], tok[40 * 6], label[40];
        for (int i = 0; i < 40; i++) {
            len[i] = 6;
            label[i] = 0;
            for (int k = 0; k < 6; k++) tok[i * 6 + k] = k % 3 == 0 ? 257 : 'a' + (i + k) % 5;
        }
        cr_assert_eq(store_dataset_append_docs(ctx, w, splits[sp], 40, len, tok, label), INFL_OK, "%s",
                     infl_ctx_error(ctx));
    }
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(gpt, documents_of_another_tokenizer_of_the_same_size_are_refused) {
    char d1[1100], d2[1100], run[1100], train[1200], test[1200];
    snprintf(d1, sizeof d1, "%s", tu_path("d1.h5"));
    snprintf(d2, sizeof d2, "%s", tu_path("d2.h5"));
    snprintf(run, sizeof run, "%s", tu_path("g.h5"));
    make_bpe1_docs(d1, 'a', 'b');
    make_bpe1_docs(d2, 'b', 'c');
    infl_ctx *ctx = tu_ctx();
    snprintf(train, sizeof train, "%s:/train", d1);
    infl_train_options o = tiny_train(train);
    o.epochs = 1;
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_eval_result ev;
    snprintf(test, sizeof test, "%s:/test", d1);
    cr_assert_eq(infl_eval(ctx, run, NULL, test, &ev), INFL_OK, "%s", infl_ctx_error(ctx));
    snprintf(test, sizeof test, "%s:/test", d2);
    cr_assert_eq(infl_eval(ctx, run, NULL, test, &ev), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "tokenized differently") && strstr(infl_ctx_error(ctx), "merges"), "%s",
              infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(gpt, runs_of_the_other_kind_and_tokenizers_are_refused, .timeout = 300) {
    // (tu_path's buffers rotate: keep the names)
    char docs[1100], bpe[1100], run[1100], blobs[1100], mlp[1100], xo[1100], yo[1100];
    snprintf(docs, sizeof docs, "%s", tu_path("docs.h5"));
    snprintf(bpe, sizeof bpe, "%s", tu_path("bpe.h5"));
    snprintf(run, sizeof run, "%s", tu_path("g.h5"));
    snprintf(blobs, sizeof blobs, "%s", tu_path("b.h5"));
    snprintf(mlp, sizeof mlp, "%s", tu_path("m.h5"));
    snprintf(xo, sizeof xo, "%s", tu_path("x.h5"));
    snprintf(yo, sizeof yo, "%s", tu_path("y.h5"));
    make_docs(docs, 0);
    make_docs(bpe, 300);
    tu_make_blobs(blobs, 40, 4, 3, 1);
    infl_ctx *ctx = tu_ctx();
    char train[1200];
    snprintf(train, sizeof train, "%s:/train", docs);
    infl_train_options o = tiny_train(train);
    o.epochs = 1;
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    // a gpt on feature rows; an mlp on documents
    o.data = tu_ref(0, blobs, "train");
    cr_assert_eq(infl_train(ctx, &o, xo, NULL), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "token documents"), "%s", infl_ctx_error(ctx));
    infl_train_options om = infl_train_options_default();
    om.data = train;
    om.nlayers = 1;
    om.widths[0] = 4;
    om.widths[1] = 3;
    cr_assert_eq(infl_train(ctx, &om, yo, NULL), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "feature rows"), "%s", infl_ctx_error(ctx));
    cr_assert(!tu_exists(xo) && !tu_exists(yo));
    // eval of a gpt on rows, and on documents of another tokenizer
    infl_eval_result ev;
    cr_assert_eq(infl_eval(ctx, run, NULL, tu_ref(0, blobs, "test"), &ev), INFL_E_SHAPE, "%s", infl_ctx_error(ctx));
    cr_assert(strstr(infl_ctx_error(ctx), "documents"), "%s", infl_ctx_error(ctx));
    cr_assert_eq(infl_eval(ctx, run, NULL, tu_ref(0, bpe, "test"), &ev), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "tokeniz"), "%s", infl_ctx_error(ctx));
    // generate with an mlp run; rank with a gpt run
    om.data = tu_ref(0, blobs, "train");
    cr_assert_eq(infl_train(ctx, &om, mlp, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_generate_options go = infl_generate_options_default();
    go.run = mlp;
    infl_generate_result *g = NULL;
    cr_assert_eq(infl_generate(ctx, &go, &g), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "gpt"), "%s", infl_ctx_error(ctx));
    infl_rank_options ro = infl_rank_options_default();
    ro.run = run;
    ro.query = tu_ref(1, docs, "test[0:2]");
    ro.method = INFL_METHOD_GRADDOT;
    infl_rank_result *rr = NULL;
    cr_assert_eq(infl_rank(ctx, &ro, &rr), INFL_OK, "%s", infl_ctx_error(ctx));  // graddot serves a gpt
    infl_rank_result_free(rr);
    rr = NULL;
    ro.method = INFL_METHOD_IF;
    cr_assert_eq(infl_rank(ctx, &ro, &rr), INFL_E_UNSUPPORTED);
    cr_assert(strstr(infl_ctx_error(ctx), "Hessian-vector"), "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

Test(gpt, divergence_names_the_step_and_keeps_good_checkpoints, .timeout = 300) {
    char docs[1100], run[1100];
    snprintf(docs, sizeof docs, "%s", tu_path("docs.h5"));
    snprintf(run, sizeof run, "%s", tu_path("g.h5"));
    make_docs(docs, 0);
    infl_ctx *ctx = tu_ctx();
    char train[1200];
    snprintf(train, sizeof train, "%s:/train", docs);
    infl_train_options o = tiny_train(train);
    o.lr = 1e30;  // the first step throws the weights to ±1e30; the next forward overflows
    o.warmup = 0;
    o.clip = 0;
    o.checkpoint_every = 1;
    infl_train_report rep;
    cr_assert_eq(infl_train(ctx, &o, run, &rep), INFL_E_NUMERIC, "%s", infl_ctx_error(ctx));
    cr_assert_eq(rep.diverged, 1);
    char want[64];
    snprintf(want, sizeof want, "step %lld", (long long)rep.diverged_step);
    cr_assert(strstr(infl_ctx_error(ctx), want) && strstr(infl_ctx_error(ctx), "keeps"), "%s", infl_ctx_error(ctx));
    cr_assert_gt(rep.checkpoints, 0);
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK, "the good checkpoints stay: %s", infl_ctx_error(ctx));
    cr_assert_eq(store_run_ncheckpoints(r), rep.checkpoints);
    store_run_close(r);
    infl_ctx_free(ctx);
}

// ---- CUDA: the GPT on the device against the CPU (skips without a device) ----

Test(gpt_cuda, forward_backward_factors_and_steps_match_cpu) {
    pair p = open_pair();
    size_t P;
    float *hp = tiny_params(&P);
    int32_t tok[NDOC * 12], len[NDOC];
    tiny_docs(tok, len);
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = tiny};
    float *grad[2], *logit[2], *fac[2];
    double loss[2][NDOC];
    int rows = 0;
    for (int b = 0; b < 2; b++) {
        infl_ctx *ctx = p.c[b];
        float *dW = dev(ctx, hp, P * sizeof(float)), *dG = dev(ctx, NULL, P * sizeof(float));
        gpt_work *w;
        OK(ctx, gpt_work_create(ctx, &tiny, NDOC, &w));
        OK(ctx, gpt_forward(ctx, &tiny, dW, tok, tiny.context, len, NDOC, w, NULL, NULL));
        logit[b] = malloc(sizeof(float) * tiny.vocab);
        OK(ctx, gpt_logits_at(ctx, &tiny, w, 2, 7, logit[b]));
        OK(ctx, gpt_backward(ctx, &tiny, dW, w, 0, 0, 0, dG, 0.5f));
        OK(ctx, gpt_doc_losses(ctx, w, loss[b]));
        grad[b] = host(ctx, dG, P * sizeof(float));
        gpt_work_free(ctx, w);
        // the seam's compacted factors of every layer (gather_rows on the device)
        infl_model *m;
        infl_model_work *mw;
        OK(ctx, infl_model_create(ctx, &ms, 1, &m));
        OK(ctx, infl_model_work_create(ctx, m, NDOC, &mw));
        infl_batch bt = {.b = NDOC, .tok = tok, .T = tiny.context, .len = len};
        OK(ctx, infl_model_factors(ctx, m, dW, &bt, mw));
        rows = mw->rows;
        size_t tot = 0;
        for (int l = 0; l < m->nlayers; l++) tot += (size_t)rows * (m->layer[l].d_in + m->layer[l].d_out);
        fac[b] = malloc(tot * sizeof(float));
        size_t at = 0;
        for (int l = 0; l < m->nlayers; l++) {
            size_t na = (size_t)rows * m->layer[l].d_in, nd = (size_t)rows * m->layer[l].d_out;
            OK(ctx, ctx->be->download(ctx, fac[b] + at, mw->A[l], na * sizeof(float)));
            OK(ctx, ctx->be->download(ctx, fac[b] + at + na, mw->D[l], nd * sizeof(float)));
            at += na + nd;
        }
        infl_model_work_free(ctx, m, mw);
        infl_model_free(m);
        rel(ctx, dW);
        rel(ctx, dG);
    }
    for (int i = 0; i < NDOC; i++)
        cr_assert(fabs(loss[1][i] - loss[0][i]) <= 1e-4 * fabs(loss[0][i]), "document %d: loss %g (cuda) vs %g", i,
                  loss[1][i], loss[0][i]);
    cr_assert_leq(relerr(logit[1], logit[0], tiny.vocab), 1e-4);
    cr_assert_leq(relerr(grad[1], grad[0], P), 1e-4, "gradient: relative error %g", relerr(grad[1], grad[0], P));
    size_t tot = 0;
    infl_model *m0;
    cr_assert_eq(infl_model_create(p.c[0], &ms, 1, &m0), INFL_OK);
    for (int l = 0; l < m0->nlayers; l++) tot += (size_t)rows * (m0->layer[l].d_in + m0->layer[l].d_out);
    infl_model_free(m0);
    cr_assert_leq(relerr(fac[1], fac[0], tot), 1e-4, "seam factors: relative error %g", relerr(fac[1], fac[0], tot));
    // three AdamW steps: the parameters after them (Adam's first steps move each weight by
    // about lr·sign(g), so a gradient entry near 0 can differ in sign between the
    // backends: a relative 1e-3 over all the parameters)
    float *after[2];
    for (int b = 0; b < 2; b++) {
        infl_ctx *ctx = p.c[b];
        gpt_work *w;
        gpt_adamw a;
        OK(ctx, gpt_work_create(ctx, &tiny, NDOC, &w));
        OK(ctx, gpt_adamw_create(ctx, &tiny, hp, &a));
        for (int k = 1; k <= 3; k++) {
            double l, gn;
            int64_t nt;
            int tr;
            OK(ctx, gpt_train_step(ctx, &tiny, &a, w, tok, tiny.context, len, NDOC, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, k, &l,
                                   &nt, &gn, &tr));
        }
        after[b] = host(ctx, a.W, P * sizeof(float));
        gpt_adamw_free(ctx, &a);
        gpt_work_free(ctx, w);
    }
    cr_assert_leq(relerr(after[1], after[0], P), 1e-3, "after 3 steps: relative error %g",
                  relerr(after[1], after[0], P));
    for (int b = 0; b < 2; b++) {
        free(grad[b]);
        free(logit[b]);
        free(fac[b]);
        free(after[b]);
    }
    free(hp);
    close_pair(&p);
}
