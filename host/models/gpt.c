/*
 * gpt.c — the GPT's forward and backward passes on the backend (gpt.h), and the GPT
 * as an implementation of the model seam (model.h).
 *
 * Shapes: B documents padded to Tb positions, rows = B·Tb, C the width, H heads of
 * hs = C/H, V the vocabulary, NL blocks. Block l, with x its input (rows, C):
 *   a   = LN1(x)                              (rows, C)
 *   qkv = a W_attnᵀ + b_attn                  (rows, 3C): q | k | v, head h at columns h·hs
 *   P   = softmax_causal(q kᵀ / √hs)          (B, H, Tb, Tb) per document and head
 *   y   = P v                                 (rows, C)
 *   m   = x + y W_projᵀ + b_proj              the residual after attention
 *   u   = LN2(m); f = u W_fcᵀ + b_fc; g = GELU(f)   (rows, 4C)
 *   x'  = m + g W_fcpᵀ + b_fcp                the block's output
 * then logits = LN_f(x_NL) wteᵀ (the head tied to the token embedding) and the
 * next-token cross-entropy per position. Heads are addressed in place by strides
 * (strided-batched GEMMs over the heads of one document), never permuted.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "gpt.h"

#define MAXNL 60

struct gpt_work {
    infl_gpt_spec s;
    infl_gpt_layout y;
    int maxB, ctxT;                 // documents and positions the buffers hold
    int B, Tb, rows;                // the last forward: documents, padded positions, B·Tb
    size_t bytes;                   // backend memory of the buffers
    int *n;                         // (maxB) host: positions of each document
    int32_t *h_inp, *h_tgt;         // (maxB ctxT) host staging
    float *h_rowloss;               // (maxB ctxT) host
    int32_t *inp, *tgt, *tgt_s;     // (maxB ctxT) backend: inputs, targets (−1 = padding), sampled targets
    const int32_t *range;           // (maxB, 2) host or NULL: the next forward's positions with a loss
    const int32_t *rowloss_tgt;     // the targets rowloss holds the losses at (tgt or tgt_s); NULL: none since
                                    // the last forward (gpt_doc_losses computes them at tgt)
    // activations (rows = maxB ctxT at most)
    float *x0;                      // (rows, C) embeddings: block 0's input
    float *res_mid[MAXNL], *res_out[MAXNL];  // (rows, C)
    float *ln1[MAXNL], *ln1_mean[MAXNL], *ln1_rstd[MAXNL];
    float *qkv[MAXNL];              // (rows, 3C)
    float *att[MAXNL];              // (B, H, Tb, Tb)
    float *atty[MAXNL];             // (rows, C)
    float *ln2[MAXNL], *ln2_mean[MAXNL], *ln2_rstd[MAXNL];
    float *fc[MAXNL], *fca[MAXNL];  // (rows, 4C) before and after GELU
    float *lnf, *lnf_mean, *lnf_rstd;
    float *logits, *dlogits;        // (rows, V)
    float *rowloss;                 // (rows)
    // gradients: per block, so that the seam can hand every layer's Δ out at once
    float *d_qkv[MAXNL];            // (rows, 3C)  Δ of c_attn
    float *d_ap[MAXNL];             // (rows, C)   Δ of attn.c_proj = ∂/∂m
    float *d_fc[MAXNL];             // (rows, 4C)  Δ of c_fc
    float *d_fcp[MAXNL];            // (rows, C)   Δ of mlp.c_proj = ∂/∂x'
    float *d_x0;                    // (rows, C)
    float *t_c;                     // (rows, C) scratch
    float *dS;                      // (B, H, Tb, Tb) scratch
};

// ---- buffers ----

void gpt_work_free(infl_ctx *ctx, gpt_work *w) {
    if (!w) return;
    float **bufs[] = {w->res_mid, w->res_out, w->ln1, w->ln1_mean, w->ln1_rstd, w->qkv, w->att, w->atty, w->ln2,
                      w->ln2_mean, w->ln2_rstd, w->fc, w->fca, w->d_qkv, w->d_ap, w->d_fc, w->d_fcp};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        for (int l = 0; l < MAXNL; l++) infl_be_free(ctx, bufs[k][l]);
    float *one[] = {w->x0, w->lnf, w->lnf_mean, w->lnf_rstd, w->logits, w->dlogits, w->rowloss, w->d_x0, w->t_c, w->dS};
    for (size_t k = 0; k < sizeof one / sizeof one[0]; k++) infl_be_free(ctx, one[k]);
    infl_be_free(ctx, w->inp);
    infl_be_free(ctx, w->tgt);
    infl_be_free(ctx, w->tgt_s);
    free(w->n);
    free(w->h_inp);
    free(w->h_tgt);
    free(w->h_rowloss);
    free(w);
}

infl_status gpt_work_create(infl_ctx *ctx, const infl_gpt_spec *s, int maxB, gpt_work **out) {
    *out = NULL;
    FORWARD_IF_ERROR(infl_gpt_spec_check(ctx, s));
    RETURN_IF(ctx, maxB < 1, INFL_E_ARG, "a batch of %d documents; expected at least 1", maxB);
    gpt_work *w = infl_calloc(ctx, 1, sizeof *w, "the GPT's buffers");
    if (!w) return INFL_E_NOMEM;
    w->s = *s;
    w->y = infl_gpt_layout_of(s);
    w->maxB = maxB;
    w->ctxT = s->context;
    size_t R = (size_t)maxB * s->context, C = (size_t)s->dim, V = (size_t)s->vocab;
    size_t A = (size_t)maxB * s->n_head * s->context * s->context;
    infl_status rc = INFL_OK;
    const char *hint = "a smaller --batch (documents per step) or --context";
    w->n = infl_calloc(ctx, (size_t)maxB, sizeof(int), "positions");
    w->h_inp = infl_malloc(ctx, R * sizeof(int32_t), "tokens");
    w->h_tgt = infl_malloc(ctx, R * sizeof(int32_t), "targets");
    w->h_rowloss = infl_malloc(ctx, R * sizeof(float), "losses");
    GOTO_NOMEM_IF(!w->n || !w->h_inp || !w->h_tgt || !w->h_rowloss);
#define ALLOC(p, count, what)                                                                     \
    do {                                                                                          \
        CHECK(infl_be_alloc_hint(ctx, (void **)&(p), (size_t)(count) * sizeof(float), what, hint)); \
        w->bytes += (size_t)(count) * sizeof(float);                                              \
    } while (0)
    CHECK(ctx->be->alloc(ctx, R * sizeof(int32_t), (void **)&w->inp));
    CHECK(ctx->be->alloc(ctx, R * sizeof(int32_t), (void **)&w->tgt));
    CHECK(ctx->be->alloc(ctx, R * sizeof(int32_t), (void **)&w->tgt_s));
    w->bytes += 3 * R * sizeof(int32_t);
    ALLOC(w->x0, R * C, "embeddings");
    for (int l = 0; l < s->n_layer; l++) {
        ALLOC(w->res_mid[l], R * C, "residual stream");
        ALLOC(w->res_out[l], R * C, "residual stream");
        ALLOC(w->ln1[l], R * C, "LayerNorm outputs");
        ALLOC(w->ln1_mean[l], R, "LayerNorm statistics");
        ALLOC(w->ln1_rstd[l], R, "LayerNorm statistics");
        ALLOC(w->qkv[l], R * 3 * C, "queries, keys and values");
        ALLOC(w->att[l], A, "attention probabilities");
        ALLOC(w->atty[l], R * C, "attention outputs");
        ALLOC(w->ln2[l], R * C, "LayerNorm outputs");
        ALLOC(w->ln2_mean[l], R, "LayerNorm statistics");
        ALLOC(w->ln2_rstd[l], R, "LayerNorm statistics");
        ALLOC(w->fc[l], R * 4 * C, "MLP activations");
        ALLOC(w->fca[l], R * 4 * C, "MLP activations");
        ALLOC(w->d_qkv[l], R * 3 * C, "gradients");
        ALLOC(w->d_ap[l], R * C, "gradients");
        ALLOC(w->d_fc[l], R * 4 * C, "gradients");
        ALLOC(w->d_fcp[l], R * C, "gradients");
    }
    ALLOC(w->lnf, R * C, "LayerNorm outputs");
    ALLOC(w->lnf_mean, R, "LayerNorm statistics");
    ALLOC(w->lnf_rstd, R, "LayerNorm statistics");
    ALLOC(w->logits, R * V, "logits");
    ALLOC(w->dlogits, R * V, "logit gradients");
    ALLOC(w->rowloss, R, "losses");
    ALLOC(w->d_x0, R * C, "gradients");
    ALLOC(w->t_c, R * C, "gradients");
    ALLOC(w->dS, A, "attention gradients");
#undef ALLOC
    *out = w;
    return INFL_OK;
done:
    gpt_work_free(ctx, w);
    return rc;
}

// ---- attention ----

// For every document b < nb and head h < H: C_bh (m, n) = op(A_bh) op(B_bh), where
// X_bh = X + b·dX + h·hX (X = A, B, C). The strided-batched GEMM takes one stride, so
// the loop runs over the smaller of the two and batches the other.
static infl_status per_head(infl_ctx *ctx, infl_trans ta, infl_trans tb, int m, int n, int k, const float *A, int lda,
                            int64_t dA, int64_t hA, const float *B, int ldb, int64_t dB, int64_t hB, float *C, int ldc,
                            int64_t dC, int64_t hC, int nb, int H) {
    const infl_backend *be = ctx->be;
    if (H <= nb) {
        for (int h = 0; h < H; h++)
            FORWARD_IF_ERROR(be->sgemm_batched(ctx, ta, tb, m, n, k, 1.0f, A + h * hA, lda, dA, B + h * hB, ldb, dB, 0.0f,
                                               C + h * hC, ldc, dC, nb));
    } else {
        for (int b = 0; b < nb; b++)
            FORWARD_IF_ERROR(be->sgemm_batched(ctx, ta, tb, m, n, k, 1.0f, A + b * dA, lda, hA, B + b * dB, ldb, hB, 0.0f,
                                               C + b * dC, ldc, hC, H));
    }
    return INFL_OK;
}

// y (rows, C) = softmax_causal(q kᵀ / √hs) v per document and head; P (B, H, Tb, Tb) kept.
static infl_status attention_forward(infl_ctx *ctx, float *y, float *P, const float *qkv, int B, int Tb, int C, int H) {
    int hs = C / H;
    int64_t TT = (int64_t)Tb * Tb, dq = (int64_t)Tb * 3 * C, dP = H * TT, dy = (int64_t)Tb * C;
    // S = Q Kᵀ: (Tb, hs) (hs, Tb) per document and head, heads hs columns apart
    FORWARD_IF_ERROR(per_head(ctx, INFL_N, INFL_T, Tb, Tb, hs, qkv, 3 * C, dq, hs, qkv + C, 3 * C, dq, hs, P, Tb, dP, TT,
                              B, H));
    FORWARD_IF_ERROR(ctx->be->softmax_causal(ctx, P, P, B * H, Tb, 1.0f / sqrtf((float)hs)));
    // Y = P V: (Tb, Tb) (Tb, hs), into columns h·hs of y
    return per_head(ctx, INFL_N, INFL_N, Tb, hs, Tb, P, Tb, dP, TT, qkv + 2 * C, 3 * C, dq, hs, y, C, dy, hs, B, H);
}

// dqkv (rows, 3C) from dy (rows, C): dP = dY Vᵀ, dV = Pᵀ dY, dS = softmax'(dP), dQ = dS K
// / √hs, dK = dSᵀ Q / √hs (the 1/√hs inside softmax_causal_backward). dS (B, H, Tb, Tb) scratch.
static infl_status attention_backward(infl_ctx *ctx, float *dqkv, float *dS, const float *dy, const float *qkv,
                                      const float *P, int B, int Tb, int C, int H) {
    int hs = C / H;
    int64_t TT = (int64_t)Tb * Tb, dq = (int64_t)Tb * 3 * C, dP = H * TT, ddy = (int64_t)Tb * C;
    FORWARD_IF_ERROR(per_head(ctx, INFL_N, INFL_T, Tb, Tb, hs, dy, C, ddy, hs, qkv + 2 * C, 3 * C, dq, hs, dS, Tb, dP,
                              TT, B, H));
    FORWARD_IF_ERROR(per_head(ctx, INFL_T, INFL_N, Tb, hs, Tb, P, Tb, dP, TT, dy, C, ddy, hs, dqkv + 2 * C, 3 * C, dq,
                              hs, B, H));
    FORWARD_IF_ERROR(ctx->be->softmax_causal_backward(ctx, dS, dS, P, B * H, Tb, 1.0f / sqrtf((float)hs)));
    FORWARD_IF_ERROR(per_head(ctx, INFL_N, INFL_N, Tb, hs, Tb, dS, Tb, dP, TT, qkv + C, 3 * C, dq, hs, dqkv, 3 * C, dq,
                              hs, B, H));
    return per_head(ctx, INFL_T, INFL_N, Tb, hs, Tb, dS, Tb, dP, TT, qkv, 3 * C, dq, hs, dqkv + C, 3 * C, dq, hs, B, H);
}

// y = β·y + x Wᵀ (+ b): a linear layer over rows; x (rows, din), W (dout, din), b (dout) or NULL.
static infl_status dense_forward(infl_ctx *ctx, float *y, float beta, const float *x, const float *W, const float *b,
                                 int rows, int din, int dout) {
    FORWARD_IF_ERROR(ctx->be->sgemm(ctx, INFL_N, INFL_T, rows, dout, din, 1.0f, x, din, W, din, beta, y, dout));
    return b ? ctx->be->add_row(ctx, y, b, rows, dout) : INFL_OK;
}

// dense_forward's backward at the output gradient dy (rows, dout): dx = dy W; with gW
// also gW += dyᵀ x and (with gb) gb += Σ_rows dy.
static infl_status dense_backward(infl_ctx *ctx, float *dx, const float *dy, const float *x, const float *W, float *gW,
                                  float *gb, int rows, int din, int dout) {
    const infl_backend *be = ctx->be;
    if (gW) {
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, din, rows, 1.0f, dy, dout, x, din, 1.0f, gW, din));
        if (gb) FORWARD_IF_ERROR(be->col_sum(ctx, gb, dy, rows, dout, 1.0f, 1.0f));
    }
    return be->sgemm(ctx, INFL_N, INFL_N, rows, din, dout, 1.0f, dy, dout, W, din, 0.0f, dx, din);
}

// ---- forward ----

void gpt_set_loss_ranges(gpt_work *w, const int32_t *range) { w->range = range; }

infl_status gpt_forward(infl_ctx *ctx, const infl_gpt_spec *s, const float *params, const int32_t *tok, int T,
                        const int32_t *len, int B, gpt_work *w, int64_t *tokens, int *truncated) {
    const infl_backend *be = ctx->be;
    const infl_gpt_layout *y = &w->y;
    int C = s->dim, V = s->vocab, ctxT = s->context, eot = s->eot;
    RETURN_IF(ctx, B < 1 || B > w->maxB, INFL_E_ARG, "a batch of %d documents; the buffers hold 1 to %d", B, w->maxB);
    RETURN_IF(ctx, T < ctxT, INFL_E_ARG, "documents given in %d tokens; the model reads %d", T, ctxT);
    // inputs [EOT, t_0, ...] and targets [t_0, ..., EOT] of n_i = min(L_i + 1, context) positions
    int Tb = 1, trunc = 0;
    int64_t ntok = 0;
    for (int i = 0; i < B; i++) {
        RETURN_IF(ctx, len[i] < 0, INFL_E_ARG, "document %d has length %d", i, (int)len[i]);
        w->n[i] = len[i] + 1 <= ctxT ? len[i] + 1 : ctxT;
        trunc += len[i] + 1 > ctxT;
        Tb = w->n[i] > Tb ? w->n[i] : Tb;
        ntok += w->n[i];
    }
    for (int i = 0; i < B; i++) {
        int32_t *in = w->h_inp + (size_t)i * Tb, *tg = w->h_tgt + (size_t)i * Tb;
        const int32_t *d = tok + (size_t)i * T;
        // the tokens read (the store checked them against its tokenizer; this is the model's own check)
        for (int t = 0; t < w->n[i] && t < len[i]; t++)
            RETURN_IF(ctx, d[t] < 0 || d[t] >= V, INFL_E_VALUE,
                      "document %d, token %d: id %d is outside the model's vocabulary of %d", i, t, (int)d[t], V);
        int lo = w->range ? w->range[2 * i] : 0, hi = w->range ? w->range[2 * i + 1] : Tb;
        for (int t = 0; t < Tb; t++) {
            if (t < w->n[i]) {
                in[t] = t == 0 ? eot : d[t - 1];
                tg[t] = t < lo || t >= hi ? -1 : t < len[i] ? d[t] : eot;
            } else {
                in[t] = eot;  // padding: any valid token; its target is masked
                tg[t] = -1;
            }
        }
    }
    w->range = NULL;
    w->B = B;
    w->Tb = Tb;
    w->rows = B * Tb;
    const int rows = w->rows;
    FORWARD_IF_ERROR(be->upload(ctx, w->inp, w->h_inp, (size_t)rows * sizeof(int32_t)));
    FORWARD_IF_ERROR(be->upload(ctx, w->tgt, w->h_tgt, (size_t)rows * sizeof(int32_t)));

    FORWARD_IF_ERROR(be->embed_forward(ctx, w->x0, w->inp, params + y->wte, params + y->wpe, B, Tb, C));
    for (int l = 0; l < s->n_layer; l++) {
        const float *p = params + y->block * (size_t)l, *x = l ? w->res_out[l - 1] : w->x0;
        // attention
        FORWARD_IF_ERROR(be->layernorm_forward(ctx, w->ln1[l], w->ln1_mean[l], w->ln1_rstd[l], x, p + y->ln1_w,
                                               p + y->ln1_b, rows, C, INFL_GPT_LN_EPS));
        FORWARD_IF_ERROR(dense_forward(ctx, w->qkv[l], 0.0f, w->ln1[l], p + y->attn_w, p + y->attn_b, rows, C, 3 * C));
        FORWARD_IF_ERROR(attention_forward(ctx, w->atty[l], w->att[l], w->qkv[l], B, Tb, C, s->n_head));
        FORWARD_IF_ERROR(be->copy(ctx, w->res_mid[l], x, (size_t)rows * C * sizeof(float)));
        FORWARD_IF_ERROR(dense_forward(ctx, w->res_mid[l], 1.0f, w->atty[l], p + y->proj_w, p + y->proj_b, rows, C, C));
        // MLP
        FORWARD_IF_ERROR(be->layernorm_forward(ctx, w->ln2[l], w->ln2_mean[l], w->ln2_rstd[l], w->res_mid[l],
                                               p + y->ln2_w, p + y->ln2_b, rows, C, INFL_GPT_LN_EPS));
        FORWARD_IF_ERROR(dense_forward(ctx, w->fc[l], 0.0f, w->ln2[l], p + y->fc_w, p + y->fc_b, rows, C, 4 * C));
        FORWARD_IF_ERROR(be->act_forward(ctx, INFL_ACT_GELU, w->fca[l], w->fc[l], (size_t)rows * 4 * C));
        FORWARD_IF_ERROR(be->copy(ctx, w->res_out[l], w->res_mid[l], (size_t)rows * C * sizeof(float)));
        FORWARD_IF_ERROR(
            dense_forward(ctx, w->res_out[l], 1.0f, w->fca[l], p + y->fcp_w, p + y->fcp_b, rows, 4 * C, C));
    }
    FORWARD_IF_ERROR(be->layernorm_forward(ctx, w->lnf, w->lnf_mean, w->lnf_rstd, w->res_out[s->n_layer - 1],
                                           params + y->lnf_w, params + y->lnf_b, rows, C, INFL_GPT_LN_EPS));
    // logits = LN_f(x) wteᵀ; their losses come with the backward's gradient, or from
    // gpt_doc_losses when nothing goes backward (one cross-entropy pass, not two)
    FORWARD_IF_ERROR(dense_forward(ctx, w->logits, 0.0f, w->lnf, params + y->wte, NULL, rows, C, V));
    w->rowloss_tgt = NULL;
    if (tokens) *tokens = ntok;
    if (truncated) *truncated = trunc;
    return INFL_OK;
}

int gpt_padded_positions(const gpt_work *w) { return w->Tb; }
size_t gpt_work_bytes(const gpt_work *w) { return w->bytes; }

infl_status gpt_doc_losses(infl_ctx *ctx, gpt_work *w, double *out) {
    if (!w->rowloss_tgt) {  // forward only: the losses at the data's next tokens
        FORWARD_IF_ERROR(ctx->be->xent(ctx, w->rowloss, NULL, w->logits, w->tgt, w->rows, w->s.vocab, 1.0f));
        w->rowloss_tgt = w->tgt;
    }
    FORWARD_IF_ERROR(ctx->be->download(ctx, w->h_rowloss, w->rowloss, (size_t)w->rows * sizeof(float)));
    for (int i = 0; i < w->B; i++) {
        double s = 0;
        for (int t = 0; t < w->n[i]; t++) s += w->h_rowloss[(size_t)i * w->Tb + t];
        out[i] = s;
    }
    return INFL_OK;
}

infl_status gpt_logits_at(infl_ctx *ctx, const infl_gpt_spec *s, gpt_work *w, int i, int pos, float *out) {
    RETURN_IF(ctx, i < 0 || i >= w->B || pos < 0 || pos >= w->n[i], INFL_E_ARG, "no position %d of document %d", pos,
              i);
    return ctx->be->download(ctx, out, w->logits + ((size_t)i * w->Tb + pos) * s->vocab, (size_t)s->vocab * sizeof(float));
}

// ---- backward ----

infl_status gpt_backward(infl_ctx *ctx, const infl_gpt_spec *s, const float *params, gpt_work *w, int sampled,
                         uint64_t seed, int64_t doc_index0, float *grad, float scale) {
    const infl_backend *be = ctx->be;
    const infl_gpt_layout *y = &w->y;
    const int C = s->dim, V = s->vocab, NL = s->n_layer, rows = w->rows, B = w->B, Tb = w->Tb;
    const int32_t *tgt = w->tgt;
    if (sampled) {
        // targets drawn from the model per position, keyed by (document index · context + position)
        FORWARD_IF_ERROR(be->copy(ctx, w->tgt_s, w->tgt, (size_t)rows * sizeof(int32_t)));
        for (int i = 0; i < B; i++)
            FORWARD_IF_ERROR(be->sample_labels(ctx, INFL_LOSS_SOFTMAX_CE, w->logits + (size_t)i * Tb * V, w->n[i], V,
                                               seed, (doc_index0 + i) * (int64_t)s->context, w->tgt_s + (size_t)i * Tb,
                                               NULL));
        tgt = w->tgt_s;
    }
    // δ of the logits: softmax − onehot per position (padding rows 0), and the losses at these targets
    FORWARD_IF_ERROR(be->xent(ctx, w->rowloss, w->dlogits, w->logits, tgt, rows, V, 1.0f));
    w->rowloss_tgt = tgt;
    float *g = grad;
    if (g) FORWARD_IF_ERROR(be->fill(ctx, g, 0.0f, y->total));
    // the tied head: ∂wte += δᵀ LN_f(x); ∂LN_f(x) = δ wte
    FORWARD_IF_ERROR(
        dense_backward(ctx, w->t_c, w->dlogits, w->lnf, params + y->wte, g ? g + y->wte : NULL, NULL, rows, C, V));
    FORWARD_IF_ERROR(be->fill(ctx, w->d_fcp[NL - 1], 0.0f, (size_t)rows * C));
    FORWARD_IF_ERROR(be->layernorm_backward(ctx, w->d_fcp[NL - 1], g ? g + y->lnf_w : NULL, g ? g + y->lnf_b : NULL,
                                            w->t_c, w->res_out[NL - 1], params + y->lnf_w, w->lnf_mean, w->lnf_rstd,
                                            rows, C));
    for (int l = NL - 1; l >= 0; l--) {
        const float *p = params + y->block * (size_t)l, *x = l ? w->res_out[l - 1] : w->x0;
        float *gp = g ? g + y->block * (size_t)l : NULL;
        const float *dout = w->d_fcp[l];  // ∂/∂x' (rows, C)
        // MLP: x' = m + GELU(f) W_fcpᵀ + b_fcp, f = LN2(m) W_fcᵀ + b_fc
        FORWARD_IF_ERROR(dense_backward(ctx, w->d_fc[l], dout, w->fca[l], p + y->fcp_w, gp ? gp + y->fcp_w : NULL,
                                        gp ? gp + y->fcp_b : NULL, rows, 4 * C, C));
        FORWARD_IF_ERROR(be->act_backward(ctx, INFL_ACT_GELU, w->d_fc[l], w->d_fc[l], w->fc[l], (size_t)rows * 4 * C));
        FORWARD_IF_ERROR(dense_backward(ctx, w->t_c, w->d_fc[l], w->ln2[l], p + y->fc_w, gp ? gp + y->fc_w : NULL,
                                        gp ? gp + y->fc_b : NULL, rows, C, 4 * C));
        // ∂/∂m = ∂/∂x' + LN2's backward
        FORWARD_IF_ERROR(be->copy(ctx, w->d_ap[l], dout, (size_t)rows * C * sizeof(float)));
        FORWARD_IF_ERROR(be->layernorm_backward(ctx, w->d_ap[l], gp ? gp + y->ln2_w : NULL, gp ? gp + y->ln2_b : NULL,
                                                w->t_c, w->res_mid[l], p + y->ln2_w, w->ln2_mean[l], w->ln2_rstd[l],
                                                rows, C));
        // attention: m = x + Y W_projᵀ + b_proj
        FORWARD_IF_ERROR(dense_backward(ctx, w->t_c, w->d_ap[l], w->atty[l], p + y->proj_w, gp ? gp + y->proj_w : NULL,
                                        gp ? gp + y->proj_b : NULL, rows, C, C));
        FORWARD_IF_ERROR(
            attention_backward(ctx, w->d_qkv[l], w->dS, w->t_c, w->qkv[l], w->att[l], B, Tb, C, s->n_head));
        FORWARD_IF_ERROR(dense_backward(ctx, w->t_c, w->d_qkv[l], w->ln1[l], p + y->attn_w, gp ? gp + y->attn_w : NULL,
                                        gp ? gp + y->attn_b : NULL, rows, C, 3 * C));
        // ∂/∂x = ∂/∂m + LN1's backward: the gradient at the block below's output
        float *dx = l ? w->d_fcp[l - 1] : w->d_x0;
        FORWARD_IF_ERROR(be->copy(ctx, dx, w->d_ap[l], (size_t)rows * C * sizeof(float)));
        FORWARD_IF_ERROR(be->layernorm_backward(ctx, dx, gp ? gp + y->ln1_w : NULL, gp ? gp + y->ln1_b : NULL, w->t_c,
                                                x, p + y->ln1_w, w->ln1_mean[l], w->ln1_rstd[l], rows, C));
    }
    if (g) {
        FORWARD_IF_ERROR(be->embed_backward(ctx, g + y->wte, g + y->wpe, w->d_x0, w->inp, B, Tb, C));
        if (scale != 1.0f) FORWARD_IF_ERROR(be->axpby(ctx, g, g, scale, 0.0f, y->total));
    }
    return INFL_OK;
}

// ---- initialisation and FLOPs ----

void infl_gpt_init(const infl_gpt_spec *s, uint64_t seed, float *params) {
    infl_gpt_layout y = infl_gpt_layout_of(s);
    size_t C = (size_t)s->dim;
    double sd = 0.02, sd_res = 0.02 / sqrt(2.0 * s->n_layer);
    // everything N(0, 0.02²) first, then the exceptions
    for (size_t i = 0; i < y.total; i++) params[i] = (float)(sd * infl_rng_normal(seed, INFL_RNG_INIT, i, 0));
    for (int l = 0; l < s->n_layer; l++) {
        size_t b = y.block * (size_t)l;
        for (size_t i = 0; i < C; i++) {
            params[b + y.ln1_w + i] = params[b + y.ln2_w + i] = 1.0f;
            params[b + y.ln1_b + i] = params[b + y.ln2_b + i] = 0.0f;
            params[b + y.proj_b + i] = params[b + y.fcp_b + i] = 0.0f;
        }
        for (size_t i = 0; i < 3 * C; i++) params[b + y.attn_b + i] = 0.0f;
        for (size_t i = 0; i < 4 * C; i++) params[b + y.fc_b + i] = 0.0f;
        for (size_t i = 0; i < C * C; i++)
            params[b + y.proj_w + i] = (float)(sd_res * infl_rng_normal(seed, INFL_RNG_INIT, b + y.proj_w + i, 0));
        for (size_t i = 0; i < 4 * C * C; i++)
            params[b + y.fcp_w + i] = (float)(sd_res * infl_rng_normal(seed, INFL_RNG_INIT, b + y.fcp_w + i, 0));
    }
    for (size_t i = 0; i < C; i++) {
        params[y.lnf_w + i] = 1.0f;
        params[y.lnf_b + i] = 0.0f;
    }
}

double infl_gpt_train_flops(const infl_gpt_spec *s, double rows, int T) {
    double C = s->dim, lin = 12.0 * C * C * s->n_layer + (double)s->vocab * C;
    return rows * (6.0 * lin + 12.0 * T * C * s->n_layer);
}

// ---- the model seam ----

typedef struct {
    gpt_work *w;
    int32_t *cidx, *h_cidx;      // (maxB context) the real positions' rows, backend and host
    float *cA[INFL_MAX_LINEAR];  // compacted layer inputs and output gradients (rows, d)
    float *cD[INFL_MAX_LINEAR];
    double *h_loss;              // (maxB)
    float *h_lossf;              // (maxB)
} gpt_seam;

static void gpt_model_free(infl_model *m) { free(m); }

static infl_status gpt_check_data(infl_ctx *ctx, const infl_model *m, const infl_split *split) {
    const infl_split_info *in = store_split_info(split);
    RETURN_IF(ctx, in->kind != INFL_SPLIT_DOCS, INFL_E_SHAPE,
              "%s: the gpt model reads documents (infl import text), not feature rows", store_split_ref(split));
    RETURN_IF(ctx, in->vocab != m->spec.gpt.vocab, INFL_E_SHAPE,
              "%s: the documents' tokenizer has a vocabulary of %d tokens but the model has %d: the data was "
              "tokenized differently",
              store_split_ref(split), in->vocab, m->spec.gpt.vocab);
    const infl_tokenizer *t = store_split_tokenizer(split);
    RETURN_IF(ctx, m->tokenizer && t && !store_tok_same(m->tokenizer, t), INFL_E_SHAPE,
              "%s: the documents were tokenized differently from the model's training data (a %s tokenizer of %d "
              "tokens; the model's: %s of %d, with other merges): import them with the same tokenizer",
              store_split_ref(split), store_tok_kind_name(t->kind), t->vocab, store_tok_kind_name(m->tokenizer->kind),
              m->tokenizer->vocab);
    return INFL_OK;
}

static void gpt_seam_free(infl_ctx *ctx, infl_model_work *mw) {
    gpt_seam *g = mw->impl;
    if (g) {
        gpt_work_free(ctx, g->w);
        infl_be_free(ctx, g->cidx);
        for (int l = 0; l < INFL_MAX_LINEAR; l++) {
            infl_be_free(ctx, g->cA[l]);
            infl_be_free(ctx, g->cD[l]);
        }
        free(g->h_cidx);
        free(g->h_loss);
        free(g->h_lossf);
        free(g);
    }
    infl_be_free(ctx, mw->loss);
}

static infl_status gpt_seam_create(infl_ctx *ctx, const infl_model *m, infl_model_work *mw) {
    const infl_gpt_spec *s = &m->spec.gpt;
    int maxB = mw->maxB;
    size_t R = (size_t)maxB * s->context;
    gpt_seam *g = infl_calloc(ctx, 1, sizeof *g, "model buffers");
    mw->impl = g;
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!g);
    g->h_cidx = infl_malloc(ctx, R * sizeof(int32_t), "row indices");
    g->h_loss = infl_malloc(ctx, (size_t)maxB * sizeof(double), "losses");
    g->h_lossf = infl_malloc(ctx, (size_t)maxB * sizeof(float), "losses");
    GOTO_NOMEM_IF(!g->h_cidx || !g->h_loss || !g->h_lossf);
    CHECK(gpt_work_create(ctx, s, maxB, &g->w));
    CHECK(ctx->be->alloc(ctx, R * sizeof(int32_t), (void **)&g->cidx));
    CHECK(infl_be_alloc_f(ctx, &mw->loss, (size_t)maxB, "losses"));
    for (int l = 0; l < m->nlayers; l++) {
        CHECK(infl_be_alloc_f(ctx, &g->cA[l], R * m->layer[l].d_in, "compacted layer inputs"));
        CHECK(infl_be_alloc_f(ctx, &g->cD[l], R * m->layer[l].d_out, "compacted layer gradients"));
    }
done:
    return rc;
}

static infl_status seam_losses(infl_ctx *ctx, infl_model_work *mw) {
    gpt_seam *g = mw->impl;
    FORWARD_IF_ERROR(gpt_doc_losses(ctx, g->w, g->h_loss));
    for (int i = 0; i < mw->b; i++) g->h_lossf[i] = (float)g->h_loss[i];
    return ctx->be->upload(ctx, mw->loss, g->h_lossf, (size_t)mw->b * sizeof(float));
}

static infl_status gpt_seam_forward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                                    infl_model_work *mw) {
    gpt_seam *g = mw->impl;
    RETURN_IF(ctx, !bt->tok || !bt->len, INFL_E_ARG, "the gpt model needs token documents, not feature rows");
    gpt_set_loss_ranges(g->w, bt->loss_range);
    FORWARD_IF_ERROR(gpt_forward(ctx, &m->spec.gpt, params, bt->tok, bt->T, bt->len, bt->b, g->w, NULL, NULL));
    gpt_work *w = g->w;
    mw->b = bt->b;
    mw->row_off[0] = 0;
    for (int i = 0; i < bt->b; i++) mw->row_off[i + 1] = mw->row_off[i] + w->n[i];
    mw->rows = mw->row_off[bt->b];
    return INFL_OK;
}

static infl_status gpt_seam_backward(infl_ctx *ctx, const infl_model *m, const float *params, const infl_batch *bt,
                                     const infl_targets *tg, infl_model_work *mw, float *grad, float scale) {
    gpt_seam *g = mw->impl;
    gpt_work *w = g->w;
    const infl_gpt_spec *s = &m->spec.gpt;
    int sampled = tg && tg->sampled;
    FORWARD_IF_ERROR(gpt_backward(ctx, s, params, w, sampled, sampled ? tg->seed : 0, bt->index0, grad, scale));
    FORWARD_IF_ERROR(seam_losses(ctx, mw));
    // the layers' factors at the real positions, example by example (padding removed)
    const float *A[INFL_MAX_LINEAR], *D[INFL_MAX_LINEAR];
    for (int l = 0; l < s->n_layer; l++) {
        A[4 * l] = w->ln1[l], D[4 * l] = w->d_qkv[l];
        A[4 * l + 1] = w->atty[l], D[4 * l + 1] = w->d_ap[l];
        A[4 * l + 2] = w->ln2[l], D[4 * l + 2] = w->d_fc[l];
        A[4 * l + 3] = w->fca[l], D[4 * l + 3] = w->d_fcp[l];
    }
    if (m->nlayers > 4 * s->n_layer) A[4 * s->n_layer] = w->lnf, D[4 * s->n_layer] = w->dlogits;  // the tied head
    int packed = mw->rows == w->rows;
    if (!packed) {
        for (int i = 0, r = 0; i < w->B; i++)
            for (int t = 0; t < w->n[i]; t++) g->h_cidx[r++] = i * w->Tb + t;
        FORWARD_IF_ERROR(ctx->be->upload(ctx, g->cidx, g->h_cidx, (size_t)mw->rows * sizeof(int32_t)));
    }
    for (int l = 0; l < m->nlayers; l++) {
        if (packed) {
            mw->A[l] = A[l];
            mw->D[l] = D[l];
            continue;
        }
        FORWARD_IF_ERROR(ctx->be->gather_rows(ctx, g->cA[l], A[l], g->cidx, mw->rows, m->layer[l].d_in));
        FORWARD_IF_ERROR(ctx->be->gather_rows(ctx, g->cD[l], D[l], g->cidx, mw->rows, m->layer[l].d_out));
        mw->A[l] = g->cA[l];
        mw->D[l] = g->cD[l];
    }
    return INFL_OK;
}

static infl_status gpt_seam_predict(infl_ctx *ctx, const infl_model *m, infl_model_work *mw, int32_t *pred) {
    (void)ctx;
    (void)m;
    for (int i = 0; i < mw->b; i++) pred[i] = -1;
    return INFL_OK;
}

// Forward and backward without weight gradients: the linear layers' 2 FLOPs per
// parameter forward and 2 back (the input gradients), attention's 4 T C forward and 8
// back per position and block.
static double gpt_seam_fb_flops(const infl_model *m, double rows) {
    const infl_gpt_spec *s = &m->spec.gpt;
    double C = s->dim, lin = 12.0 * C * C * s->n_layer + (double)s->vocab * C;
    return rows * (4.0 * lin + 12.0 * s->context * C * s->n_layer);
}

static const infl_model_iface gpt_iface = {
    .kind = "gpt",
    .free = gpt_model_free,
    .check_data = gpt_check_data,
    .check_labels = NULL,
    .work_create = gpt_seam_create,
    .work_free = gpt_seam_free,
    .forward = gpt_seam_forward,
    .backward = gpt_seam_backward,
    .predict = gpt_seam_predict,
    .fb_flops = gpt_seam_fb_flops,
    .hvp_create = NULL,
};

infl_status infl_gpt_model_create(infl_ctx *ctx, const infl_model_spec *spec, int head, infl_model **out) {
    *out = NULL;
    RETURN_IF(ctx, spec->kind != INFL_MODEL_GPT, INFL_E_ARG, "infl_gpt_model_create: not a gpt spec");
    FORWARD_IF_ERROR(infl_gpt_spec_check(ctx, &spec->gpt));
    infl_model *m = infl_calloc(ctx, 1, sizeof *m, "the model");
    if (!m) return INFL_E_NOMEM;
    m->iface = &gpt_iface;
    m->spec = *spec;
    infl_model_init_layers(m, head);
    m->tokens = 1;
    m->outputs = spec->gpt.vocab;
    *out = m;
    return INFL_OK;
}
