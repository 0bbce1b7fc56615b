/*
 * ekfac.h — EK-FAC (George et al. 2018; Grosse et al. 2023), DESIGN.md "The math":
 * fitting the factors (infl_fit, in ekfac.c) and applying them: the preconditioner
 * P(V) = Q_S [(Q_Sᵀ V Q_A) ⊘ (Λ + wd + λ)] Q_Aᵀ per layer, the rotation of
 * per-example factors into the eigenbases, and the rank-r factorisation of
 * preconditioned query matrices for low-rank scoring.
 *
 * The run's weight decay wd is part of the Hessian of R(w) = mean loss + wd/2 |w|²
 * and is isotropic, so it adds exactly to every eigenvalue; λ is the damping
 * (auto: 0.1 × mean(Λ_l) per layer). Arrays are backend memory unless said otherwise.
 */
#ifndef INFL_EKFAC_H
#define INFL_EKFAC_H

#include "core/spec.h"
#include "store/store.h"

typedef struct {
    int L;
    int widths[INFL_MAX_LAYERS + 1];
    float *RA[INFL_MAX_LAYERS];      // (d_in+1, d_in+1) rows: eigenvectors of A (Q_Aᵀ)
    float *RAlast[INFL_MAX_LAYERS];  // (d_in+1) the last column of RA: the bias input's coordinates
    float *RS[INFL_MAX_LAYERS];      // (d_out, d_out) rows: eigenvectors of S (Q_Sᵀ)
    float *inv[INFL_MAX_LAYERS];     // (d_out, d_in+1) 1 / (Λ + wd + λ)
    double damping[INFL_MAX_LAYERS]; // λ per layer
    double mean_lambda[INFL_MAX_LAYERS];
    float *T1, *T2;                  // scratch for preconditioning (M·max d_out, max d_in+1)
    int scratch_rows;
    int identity;                    // diagonal and identity factors: Q_A = Q_S = I, rotations skipped
} ekfac_pre;

// INFL_E_SHAPE unless the factors were fitted for the model's layer widths.
infl_status ekfac_check_shape(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_mlp_spec *spec);
// Checks the factors against the model (layer widths) and the method (ekfac needs
// ekfac factors; kfac takes ekfac or kfac factors; diagonal needs diagonal factors),
// then uploads the eigenbases and the inverse eigenvalues. damping_auto: λ_l =
// 0.1 × mean(Λ_l); else λ = damping (> 0 needed when some Λ + wd is 0).
infl_status ekfac_pre_create(infl_ctx *ctx, const infl_factors *f, const char *fpath, const infl_mlp_spec *spec,
                             infl_method method, double damping, int damping_auto, ekfac_pre **out);
void ekfac_pre_free(infl_ctx *ctx, ekfac_pre *p);  // accepts NULL

// Rotates the per-example factors of layer l into the eigenbases: DQ (b, d_out) =
// Δ Q_S and AQ (b, d_in+1) = Ã Q_A with ã = [a; 1].
infl_status ekfac_rotate(infl_ctx *ctx, const ekfac_pre *p, int l, const float *Delta, const float *A, int b,
                         float *DQ, float *AQ);

// V (M, P) = P(G) for M flat gradients G (M, P) (spec.h layout). V may not alias G.
infl_status ekfac_precondition(infl_ctx *ctx, ekfac_pre *p, const infl_mlp_spec *spec, const float *G, float *V,
                               int M);

// Rank-r factors of the preconditioned query matrices V_q,l (d_out, d_in+1) of V
// (M, P): V_q,l ≈ LF_q RF_qᵀ, the best rank-r_l approximation (truncated SVD, through
// the eigendecomposition in float64 of the smaller Gram matrix), r_l = min(r, d_out,
// d_in+1). LF[l] (d_out, M·r_l) and RF[l] (d_in+1, M·r_l) hold query q in columns
// [q r_l, (q+1) r_l); they are allocated here (backend memory, caller frees).
// energy: mean over queries and layers of the share of |V_q,l|²_F the factors keep.
infl_status ekfac_lowrank(infl_ctx *ctx, const infl_mlp_spec *spec, const float *V, int M, int r, float **LF,
                          float **RF, int *rl, double *energy);

#endif
