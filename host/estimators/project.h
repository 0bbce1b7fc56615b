/*
 * project.h — random projections of per-example gradients (DESIGN.md "Projection";
 * TRAK, Park et al. 2023; LoGra, Choe et al. 2024), the estimator behind a gradient
 * index: φ = P g for every example of a batch, from the factors the model seam hands
 * out (models/model.h), on the backend. P is never stored: its blocks come from the
 * counter-based generator (core/projgen.h, the backend's proj_gen), so a projection is
 * the same matrix for any batch or shard size and on every backend.
 *
 *   gaussian, rademacher  one P (k, lsize) over the whole layer space: layer l's block
 *       of columns is matrix `3l`. Each example's gradient is formed a chunk of output
 *       rows at a time (b, chunk) — never whole — and multiplied by the chunk's block of
 *       Pᵀ, generated once per batch: φ (b, k) += G_chunk Pᵀ_chunk. (The rank-one form
 *       Σ_o δ_o (P_o ã) costs the same multiply-adds and moves more memory when k > d_in,
 *       so the chunked outer products are used for T = 1 too.)
 *   kron  LoGra's per layer: (P_out ⊗ P_in) vec(Σ_t δ_t ã_tᵀ) = vec(P_out Δᵀ Ã P_inᵀ),
 *       P_out (k_out, d_out) matrix 3l+1, P_in (k_in, d_in + bias) matrix 3l+2 (ã = [a; 1]),
 *       kept on the backend; layer l fills φ's entries [koff_l, koff_l + k_out k_in),
 *       row-major (k_out, k_in). k_out, k_in are capped at the layer's d_out and d_in + bias.
 * Scales make E[PᵀP] = I (1/√k; kron 1/√k_out and 1/√k_in).
 */
#ifndef INFL_PROJECT_H
#define INFL_PROJECT_H

#include "models/model.h"

typedef struct infl_proj infl_proj;

// A projection for the model's layers and batches of up to maxB examples of up to
// maxrows token rows. kind: INFL_PROJ_GAUSSIAN | RADEMACHER (k = dim) or KRON (per
// layer kout x kin, capped). *out owns it (proj_free).
infl_status proj_create(infl_ctx *ctx, const infl_model *m, infl_projection kind, int dim, int kout, int kin,
                        uint64_t seed, int maxB, int maxrows, infl_proj **out);
void proj_free(infl_ctx *ctx, infl_proj *p);  // accepts NULL
// The projected width k (kron: Σ_l k_out,l k_in,l).
int proj_dim(const infl_proj *p);
// kron: layer l's k_out and k_in (the caps applied); dense: 0.
void proj_layer_dims(const infl_proj *p, int l, int *kout, int *kin);
// phi (b, k) backend = P g_i for the b examples of the last backward in w (row i: example
// i's gradient Σ_t δ_t ã_tᵀ of every layer, projected).
infl_status proj_batch(infl_ctx *ctx, infl_proj *p, const infl_model *m, const infl_model_work *w, int b,
                       float *phi);
// Floating-point operations of proj_batch for b examples of `rows` token rows.
double proj_flops(const infl_proj *p, const infl_model *m, int b, double rows);

#endif
