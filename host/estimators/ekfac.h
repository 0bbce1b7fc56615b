/*
 * ekfac.h — EK-FAC (George et al. 2018; Grosse et al. 2023), DESIGN.md "The math":
 * applying fitted factors (the fit itself is the pipeline pipelines/fit.c): the
 * preconditioner P(V) = Q_S [(Q_Sᵀ V Q_A) ⊘ (Λ + wd + λ)] Q_Aᵀ per attributed layer,
 * the rotation of per-example factors into the eigenbases, and the rank-r
 * factorisation of preconditioned query matrices for low-rank scoring.
 *
 * Layers are the model seam's (models/model.h): layer l has ni = d_in + bias inputs
 * (ã = [a; 1] with a bias, a without) and d_out outputs; gradients live in the layer
 * space ([W | b] per layer at m->loff[l]). The objective's weight decay wd (the MLP's;
 * none for the GPT) is part of the Hessian and isotropic, so it adds exactly to every
 * eigenvalue; λ is the damping (auto: 0.1 × mean(Λ_l) per layer). Arrays are backend
 * memory unless said otherwise.
 */
#ifndef INFL_EKFAC_H
#define INFL_EKFAC_H

#include "models/model.h"
#include "store/store.h"

typedef struct {
    int L;
    infl_linear layer[INFL_MAX_LINEAR];  // the model's layers (shapes, bias)
    float *RA[INFL_MAX_LINEAR];      // (ni, ni) rows: eigenvectors of A (Q_Aᵀ)
    float *RAlast[INFL_MAX_LINEAR];  // (ni) with a bias: the last column of RA, the bias input's coordinates
    float *RS[INFL_MAX_LINEAR];      // (d_out, d_out) rows: eigenvectors of S (Q_Sᵀ)
    float *inv[INFL_MAX_LINEAR];     // (d_out, ni) 1 / (Λ + wd + λ)
    double damping[INFL_MAX_LINEAR]; // λ per layer
    double mean_lambda[INFL_MAX_LINEAR];
    float *T1, *T2;                  // scratch for preconditioning (queries · max layer size)
    int scratch_rows;
    int identity;                    // diagonal and identity factors: Q_A = Q_S = I, rotations skipped
} ekfac_pre;

// The names of the strategies (infl_strategy of infl.h): "ekfac", "kfac", "diagonal", "identity".
const char *ekfac_strategy_name(infl_strategy s);

// INFL_E_SHAPE unless the factors were fitted for the model's layers (names, shapes, bias).
infl_status ekfac_check_shape(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_model *m);
// Checks the factors against the model (layers) and the method (ekfac needs ekfac
// factors; kfac takes ekfac or kfac factors; diagonal needs diagonal factors; identity
// factors serve every method), then uploads the eigenbases and the inverse
// eigenvalues. damping_auto: λ_l = 0.1 × mean(Λ_l); else λ = damping (> 0 needed when
// some Λ + wd is 0).
infl_status ekfac_pre_create(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_model *m,
                             infl_method method, double damping, int damping_auto, ekfac_pre **out);
void ekfac_pre_free(infl_ctx *ctx, ekfac_pre *p);  // accepts NULL

// The factors of layer l in the eigenbases: DQ (b, d_out) = Δ Q_S and AQ (b, ni) = Ã Q_A
// (identity bases: DQ = Δ, AQ = Ã). Δ (b, d_out), A (b, d_in).
infl_status ekfac_rotate(infl_ctx *ctx, float *DQ, float *AQ, const ekfac_pre *p, int l, const float *Delta,
                         const float *A, int b);
// The same in identity bases, without a preconditioner (the diagonal fit).
infl_status ekfac_identity_factors(infl_ctx *ctx, float *DQ, float *AQ, const infl_linear *ly, const float *Delta,
                                   const float *A, int b);

// V (M, lsize) = P(G) for M gradients G (M, lsize) in the model's layer space. V may
// not alias G.
infl_status ekfac_precondition(infl_ctx *ctx, float *V, ekfac_pre *p, const infl_model *m, const float *G, int M);

// Rank-r factors of the preconditioned query matrices V_q,l (d_out, ni) of V (M, lsize):
// V_q,l ≈ LF_q RF_qᵀ, the best rank-r_l approximation (truncated SVD, through the
// eigendecomposition in float64 of the smaller Gram matrix), r_l = min(r, d_out, ni).
// LF[l] (d_out, M·r_l) and RF[l] (ni, M·r_l) hold query q in columns [q r_l, (q+1) r_l);
// they are allocated here (backend memory, caller frees). energy: mean over queries
// and layers of the share of |V_q,l|²_F the factors keep.
infl_status ekfac_lowrank(infl_ctx *ctx, float **LF, float **RF, int *rl, double *energy, const infl_model *m,
                          const float *V, int M, int r);

#endif
