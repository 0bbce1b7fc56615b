/*
 * cpu_nn.h — the CPU backend's transformer primitives (cpu_nn.c), for the table in
 * cpu_backend.c: LayerNorm, causal softmax, embeddings, the
 * vocabulary cross-entropy, AdamW and a row gather. Internal to host/cpu/; the
 * contracts are the slots of the same names in host/backend.h.
 */
#ifndef INFL_CPU_NN_H
#define INFL_CPU_NN_H

#include "backend.h"

infl_status cpu_layernorm_forward(infl_ctx *ctx, float *out, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int N, int C, float eps);
infl_status cpu_layernorm_backward(infl_ctx *ctx, float *dx, float *dw, float *db, const float *dout,
                                   const float *x, const float *w, const float *mean, const float *rstd, int N, int C);
infl_status cpu_softmax_causal(infl_ctx *ctx, float *P, const float *S, int count, int T, float scale);
infl_status cpu_softmax_causal_backward(infl_ctx *ctx, float *dS, const float *dP, const float *P, int count, int T,
                                        float scale);
infl_status cpu_embed_forward(infl_ctx *ctx, float *out, const int32_t *tok, const float *wte, const float *wpe,
                              int B, int T, int C);
infl_status cpu_embed_backward(infl_ctx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tok, int B,
                               int T, int C);
infl_status cpu_xent(infl_ctx *ctx, float *loss, float *dlogits, const float *logits, const int32_t *y, int N, int V,
                     float scale);
infl_status cpu_adamw_step(infl_ctx *ctx, float *w, float *m, float *v, const float *g, size_t n, float lr,
                           float beta1, float beta2, float eps, float wd, int t, float gscale);
infl_status cpu_gather_rows(infl_ctx *ctx, float *out, const float *X, const int32_t *idx, int n, int cols);

#endif
