/*
 * hvp.c — Hessian-vector products on the backend (see hvp.h): Pearlmutter's
 * R-operator for the exact Hessian and the Gauss-Newton product Jᵀ H_out J.
 *
 * Layer l (0-based, as mlp.h): Z_l = A_{l-1} W_lᵀ + b_l, A_l = φ(Z_l), A_{-1} = X,
 * logits Z_{L-1}; Δ_l = ∂ℓ/∂Z_l per row. For a direction V = (V_l, v_l) the
 * R-operator R(·) = d/dt (·)(w + tV) at t = 0 gives, per shard of B rows:
 *
 *   forward   RZ_l = A_{l-1} V_lᵀ + RA_{l-1} W_lᵀ + v_l      (RA_{-1} = 0)
 *             RA_l = φ'(Z_l) ∘ RZ_l
 *   backward  RΔ_{L-1} = H_out(Z_{L-1}) RZ_{L-1}               (loss_hvp, per row)
 *             RΔ_{l-1} = φ'(Z_{l-1}) ∘ (RΔ_l W_l + Δ_l V_l) + φ''(Z_{l-1}) ∘ RZ_{l-1} ∘ (Δ_l W_l)
 *   gradient  R∇W_l = RΔ_lᵀ A_{l-1} + Δ_lᵀ RA_{l-1},  R∇b_l = Σ_rows RΔ_l
 *
 * summed over the rows, divided by the rows, plus wd·V. The Gauss-Newton product
 * keeps the same forward R-pass and drops the Δ terms and the φ'' term:
 * RΔ_{l-1} = φ'(Z_{l-1}) ∘ (RΔ_l W_l), R∇W_l = RΔ_lᵀ A_{l-1}.
 *
 * Everything that does not depend on V — the forward pass, the Δ_l of backprop and
 * Φ_{l-1} = φ''(Z_{l-1}) ∘ (Δ_l W_l) — is computed once per shard ("prepare") and
 * reused by every vector; per vector and layer the work is 2 GEMMs forward and 2–4
 * backward over the shard's rows (the exact Hessian of a layer with a hidden input:
 * 4; GGN: 2), all through the backend table.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"
#include "train.h"
#include "hvp.h"

struct infl_hvp {
    infl_mlp_spec spec;
    const float *params;  // (P) backend, borrowed
    infl_split *split;    // borrowed
    infl_hessian kind;
    size_t P;
    int64_t n;            // rows the Hessian averages over
    int64_t S;            // rows per shard
    int D, K;             // input width, output width
    int real_y;           // mse: targets yf (rows, K); else labels y (rows)
    int cached;           // X, y, yf hold all n rows
    int second;           // the φ'' term is needed (exact Hessian, φ'' ≠ 0, L >= 2)

    // data in backend memory: (n or S, D), (n or S), (n or S, K)
    float *X;
    int32_t *y;
    float *yf;
    int64_t data_row0, data_len;  // rows held when not cached (len 0: none)
    // host staging for reads: (S, D), (S), (S, K)
    float *hx, *hyf;
    int32_t *hy;

    // forward state of one shard
    infl_mlp_work *work;          // Z, A, Δ for S rows
    int64_t fwd_row0, fwd_len;    // rows of the prepared forward (len 0: none)
    const float *fwd_X;           // their input rows (backend)

    // R-pass buffers, (S, d_{l+1}) each
    float *RZ[INFL_MAX_LAYERS];
    float *RA[INFL_MAX_LAYERS];   // l < L-1
    float *Phi[INFL_MAX_LAYERS];  // l < L-1, only when `second`: φ''(Z_l) ∘ (Δ_{l+1} W_{l+1})
    float *RD[2];                 // (S, maxw) ping-pong for RΔ
    float *T;                     // (S, maxw) scratch

    // the direct solver's Cholesky factor of H + λI (host, P × P), kept for reuse
    double *chol;
    double chol_lambda;
};

const double *infl_hvp_factor(const infl_hvp *op, double lambda) {
    return op->chol && op->chol_lambda == lambda ? op->chol : NULL;
}

void infl_hvp_set_factor(infl_hvp *op, double lambda, double *L) {
    free(op->chol);
    op->chol = L;
    op->chol_lambda = lambda;
}

// ---- set-up ----

// Backend floats per row of a shard: the MLP work (Z, Δ, A, scratch, loss, correct)
// and the R-pass buffers (RZ, RA, Φ, RΔ×2, T).
static int64_t work_floats_per_row(const infl_mlp_spec *s) {
    int64_t sum = 0, hidden = 0, maxw = 0;
    for (int l = 0; l <= s->L; l++) maxw = s->widths[l] > maxw ? s->widths[l] : maxw;
    for (int l = 0; l < s->L; l++) {
        sum += s->widths[l + 1];
        if (l < s->L - 1) hidden += s->widths[l + 1];
    }
    return 3 * sum + 3 * hidden + 4 * maxw + 2;
}

int64_t infl_hvp_rows(const infl_hvp *op) { return op->n; }
size_t infl_hvp_nparams(const infl_hvp *op) { return op->P; }
int64_t infl_hvp_shard_rows(const infl_hvp *op) { return op->S; }
int infl_hvp_cached(const infl_hvp *op) { return op->cached; }

void infl_hvp_free(infl_ctx *ctx, infl_hvp *op) {
    if (!op) return;
    infl_be_free(ctx, op->X);
    infl_be_free(ctx, op->y);
    infl_be_free(ctx, op->yf);
    free(op->hx);
    free(op->hy);
    free(op->hyf);
    infl_mlp_work_free(ctx, op->work);
    for (int l = 0; l < op->spec.L; l++) {
        infl_be_free(ctx, op->RZ[l]);
        infl_be_free(ctx, op->RA[l]);
        infl_be_free(ctx, op->Phi[l]);
    }
    infl_be_free(ctx, op->RD[0]);
    infl_be_free(ctx, op->RD[1]);
    infl_be_free(ctx, op->T);
    free(op->chol);
    free(op);
}

// Reads rows [row0, row0 + len) of the operator's rows through the host staging
// buffers into backend memory at X, y, yf (each pointing at the rows' place), in
// pieces of at most S rows; checks class labels against the model.
static infl_status read_rows(infl_ctx *ctx, infl_hvp *op, int64_t row0, int64_t len, float *X, int32_t *y,
                             float *yf) {
    const infl_backend *be = ctx->be;
    int hi = op->spec.loss == INFL_LOSS_SIGMOID_CE ? 2 : op->K;
    for (int64_t r = 0; r < len; r += op->S) {
        int64_t m = len - r < op->S ? len - r : op->S;
        FORWARD_IF_ERROR(store_split_read(ctx, op->split, row0 + r, m, op->hx, op->real_y ? NULL : op->hy,
                                          op->real_y ? op->hyf : NULL));
        FORWARD_IF_ERROR(be->upload(ctx, X + (size_t)r * op->D, op->hx, (size_t)m * op->D * sizeof(float)));
        if (op->real_y) {
            FORWARD_IF_ERROR(be->upload(ctx, yf + (size_t)r * op->K, op->hyf, (size_t)m * op->K * sizeof(float)));
        } else {
            for (int64_t i = 0; i < m; i++)
                RETURN_IF(ctx, op->hy[i] < 0 || op->hy[i] >= hi, INFL_E_VALUE,
                          "%s: row %" PRId64 ": label %d is out of range for a model with %d classes",
                          store_split_ref(op->split), store_split_info(op->split)->begin + row0 + r + i,
                          (int)op->hy[i], hi);
            FORWARD_IF_ERROR(be->upload(ctx, y + r, op->hy, (size_t)m * sizeof(int32_t)));
        }
    }
    return INFL_OK;
}

infl_status infl_hvp_create(infl_ctx *ctx, const infl_mlp_spec *spec, const float *params, infl_split *split,
                            int64_t samples, infl_hessian kind, int64_t shard_rows, double cache_mb, infl_hvp **out) {
    *out = NULL;
    FORWARD_IF_ERROR(infl_mlp_spec_check(ctx, spec));
    RETURN_IF(ctx, split && !params, INFL_E_ARG, "Hessian-vector product: no parameters");
    RETURN_IF(ctx, !split && samples < 1, INFL_E_ARG, "a batch Hessian-vector operator needs its largest batch (samples >= 1)");
    RETURN_IF(ctx, kind != INFL_HESS_EXACT && kind != INFL_HESS_GGN, INFL_E_ARG, "unknown Hessian kind %d",
              (int)kind);
    RETURN_IF(ctx, shard_rows < 0, INFL_E_ARG, "shard rows: expected 0 (automatic) or more, got %" PRId64,
              shard_rows);
    if (split) FORWARD_IF_ERROR(infl_check_data_for_model(ctx, split, spec));
    // a batch operator (no split): rows come with each call, up to `samples` of them
    const infl_split_info batch_info = {.n = samples, .n_total = samples};
    const infl_split_info *in = split ? store_split_info(split) : &batch_info;
    infl_status rc = INFL_OK;
    infl_hvp *op = infl_calloc(ctx, 1, sizeof *op, "the Hessian-vector operator");
    if (!op) return INFL_E_NOMEM;
    op->spec = *spec;
    op->params = params;
    op->split = split;
    op->kind = kind;
    op->P = infl_mlp_nparams(spec);
    op->n = samples > 0 && samples < in->n ? samples : in->n;
    op->D = spec->widths[0];
    op->K = spec->widths[spec->L];
    op->real_y = spec->loss == INFL_LOSS_MSE;
    op->second = kind == INFL_HESS_EXACT && spec->act != INFL_ACT_RELU && spec->L >= 2;
    int64_t ky = op->real_y ? op->K : 1;
    op->S = !split ? op->n
            : shard_rows > 0 ? (shard_rows < op->n ? shard_rows : op->n)
                             : infl_shard_rows(op->n, op->D + work_floats_per_row(spec), ky, 256.0, 1);
    GOTO_IF(ctx, op->S > INT32_MAX / 4, INFL_E_ARG, "shard of %" PRId64 " rows is too large", op->S);
    double data_bytes = 4.0 * (double)op->n * (double)(op->D + ky);
    op->cached = split && cache_mb > 0 && data_bytes <= cache_mb * 1048576.0;
    const size_t S = (size_t)op->S, rows = op->cached ? (size_t)op->n : S;

    // data buffers (backend) and staging (host); a batch operator's rows are the caller's
    if (!split) goto buffers;
    CHECK(infl_be_alloc_f(ctx, &op->X, rows * op->D, "the Hessian's data rows"));
    if (op->real_y) {
        CHECK(infl_be_alloc_f(ctx, &op->yf, rows * op->K, "the Hessian's targets"));
    } else {
        CHECK(ctx->be->alloc(ctx, rows * sizeof(int32_t), (void **)&op->y));
    }
    op->hx = infl_malloc(ctx, S * op->D * sizeof(float), "a shard of data");
    GOTO_NOMEM_IF(!op->hx);
    if (op->real_y) {
        op->hyf = infl_malloc(ctx, S * op->K * sizeof(float), "a shard of targets");
        GOTO_NOMEM_IF(!op->hyf);
    } else {
        op->hy = infl_malloc(ctx, S * sizeof(int32_t), "a shard of labels");
        GOTO_NOMEM_IF(!op->hy);
    }

buffers:
    // forward and R-pass buffers
    CHECK(infl_mlp_work_create(ctx, spec, (int)S, &op->work));
    int maxw = 0;
    for (int l = 0; l <= spec->L; l++) maxw = spec->widths[l] > maxw ? spec->widths[l] : maxw;
    for (int l = 0; l < spec->L; l++) {
        size_t m = S * spec->widths[l + 1];
        CHECK(infl_be_alloc_f(ctx, &op->RZ[l], m, "R-pass pre-activations"));
        if (l < spec->L - 1) {
            CHECK(infl_be_alloc_f(ctx, &op->RA[l], m, "R-pass activations"));
            if (op->second) CHECK(infl_be_alloc_f(ctx, &op->Phi[l], m, "second-derivative terms"));
        }
    }
    CHECK(infl_be_alloc_f(ctx, &op->RD[0], S * maxw, "R-pass deltas"));
    CHECK(infl_be_alloc_f(ctx, &op->RD[1], S * maxw, "R-pass deltas"));
    CHECK(infl_be_alloc_f(ctx, &op->T, S * maxw, "R-pass scratch"));

    if (op->cached) CHECK(read_rows(ctx, op, 0, op->n, op->X, op->y, op->yf));
    *out = op;
    return INFL_OK;
done:
    infl_hvp_free(ctx, op);
    return rc;
}

// ---- one shard ----

// The forward state of B rows X, y, yf (backend) at op->params: Z_l, A_l, and for the
// exact Hessian Δ_l and Φ_l.
static infl_status prepare_rows(infl_ctx *ctx, infl_hvp *op, const float *X, const int32_t *y, const float *yf,
                                int B) {
    const infl_backend *be = ctx->be;
    const infl_mlp_spec *s = &op->spec;
    infl_mlp_work *w = op->work;
    FORWARD_IF_ERROR(infl_mlp_forward(ctx, op->params, X, B, w));
    if (op->kind == INFL_HESS_EXACT) {
        // Δ_l for every layer (the δ terms of the exact R-pass)
        FORWARD_IF_ERROR(infl_mlp_backward(ctx, op->params, y, yf, w, NULL, 0.0f));
        if (op->second)
            for (int l = 0; l < s->L - 1; l++) {
                int d = s->widths[l + 1], dn = s->widths[l + 2];
                // Φ_l (B, d) = φ''(Z_l) ∘ (Δ_{l+1} (B, dn) · W_{l+1} (dn, d))
                FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, B, d, dn, 1.0f, w->D[l + 1], dn,
                                           op->params + infl_mlp_woff(s, l + 1), d, 0.0f, op->Phi[l], d));
                FORWARD_IF_ERROR(be->act_second(ctx, s->act, op->Phi[l], op->Phi[l], w->Z[l], (size_t)B * d));
            }
    }
    op->fwd_X = X;
    return INFL_OK;
}

// Makes rows [row0, row0 + len) (len <= S) of the split resident and their forward
// state ready (prepare_rows). Skips what is already there.
static infl_status prepare(infl_ctx *ctx, infl_hvp *op, int64_t row0, int64_t len) {
    if (op->fwd_len == len && op->fwd_row0 == row0) return INFL_OK;
    const float *X;
    const int32_t *y = NULL;
    const float *yf = NULL;
    op->fwd_len = 0;  // invalid until done
    if (op->cached) {
        X = op->X + (size_t)row0 * op->D;
        if (op->real_y) yf = op->yf + (size_t)row0 * op->K;
        else y = op->y + row0;
    } else {
        if (op->data_len != len || op->data_row0 != row0) {
            op->data_len = 0;
            FORWARD_IF_ERROR(read_rows(ctx, op, row0, len, op->X, op->y, op->yf));
            op->data_row0 = row0;
            op->data_len = len;
        }
        X = op->X;
        y = op->y;
        yf = op->yf;
    }
    FORWARD_IF_ERROR(prepare_rows(ctx, op, X, y, yf, (int)len));
    op->fwd_row0 = row0;
    op->fwd_len = len;
    return INFL_OK;
}

// HV (P) += scale · Σ_rows of the prepared shard of the per-row H v (no wd term).
static infl_status rpass(infl_ctx *ctx, infl_hvp *op, const float *V, float *HV, float scale) {
    const infl_backend *be = ctx->be;
    const infl_mlp_spec *s = &op->spec;
    const infl_mlp_work *w = op->work;
    const float *W = op->params;
    const int B = (int)op->fwd_len, L = s->L, exact = op->kind == INFL_HESS_EXACT;

    // forward R-pass: RZ_l (B, dout), RA_l (B, dout)
    for (int l = 0; l < L; l++) {
        int din = s->widths[l], dout = s->widths[l + 1];
        const float *in = l == 0 ? op->fwd_X : w->A[l - 1];  // (B, din)
        // RZ_l = A_{l-1} V_lᵀ (+ RA_{l-1} W_lᵀ) + v_l
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, B, dout, din, 1.0f, in, din, V + infl_mlp_woff(s, l), din,
                                   0.0f, op->RZ[l], dout));
        if (l > 0)
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, B, dout, din, 1.0f, op->RA[l - 1], din,
                                       W + infl_mlp_woff(s, l), din, 1.0f, op->RZ[l], dout));
        FORWARD_IF_ERROR(be->add_row(ctx, op->RZ[l], V + infl_mlp_boff(s, l), B, dout));
        if (l < L - 1)  // RA_l = φ'(Z_l) ∘ RZ_l
            FORWARD_IF_ERROR(be->act_backward(ctx, s->act, op->RA[l], op->RZ[l], w->Z[l], (size_t)B * dout));
    }

    // backward R-pass: RΔ_{L-1} (B, K) = H_out(Z_{L-1}) RZ_{L-1}
    int cur = 0;
    FORWARD_IF_ERROR(be->loss_hvp(ctx, s->loss, w->Z[L - 1], op->RZ[L - 1], B, op->K, op->RD[cur]));
    for (int l = L - 1; l >= 0; l--) {
        int din = s->widths[l], dout = s->widths[l + 1];
        const float *in = l == 0 ? op->fwd_X : w->A[l - 1];  // (B, din)
        const float *RDl = op->RD[cur];                       // (B, dout)
        float *gW = HV + infl_mlp_woff(s, l), *gb = HV + infl_mlp_boff(s, l);
        // R∇W_l (dout, din) += scale · (RΔ_lᵀ A_{l-1} + Δ_lᵀ RA_{l-1});  R∇b_l += scale · Σ RΔ_l
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_T, INFL_N, dout, din, B, scale, RDl, dout, in, din, 1.0f, gW, din));
        if (exact && l > 0)
            FORWARD_IF_ERROR(
                be->sgemm(ctx, INFL_T, INFL_N, dout, din, B, scale, w->D[l], dout, op->RA[l - 1], din, 1.0f, gW, din));
        FORWARD_IF_ERROR(be->col_sum(ctx, gb, RDl, B, dout, scale, 1.0f));
        if (l == 0) break;
        // RΔ_{l-1} (B, din) = φ'(Z_{l-1}) ∘ (RΔ_l W_l [+ Δ_l V_l]) [+ Φ_{l-1} ∘ RZ_{l-1}]
        float *nxt = op->RD[1 - cur];
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, B, din, dout, 1.0f, RDl, dout, W + infl_mlp_woff(s, l), din,
                                   0.0f, nxt, din));
        if (exact)
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, B, din, dout, 1.0f, w->D[l], dout,
                                       V + infl_mlp_woff(s, l), din, 1.0f, nxt, din));
        FORWARD_IF_ERROR(be->act_backward(ctx, s->act, nxt, nxt, w->Z[l - 1], (size_t)B * din));
        if (op->second) {
            FORWARD_IF_ERROR(be->mul(ctx, op->T, op->Phi[l - 1], op->RZ[l - 1], (size_t)B * din));
            FORWARD_IF_ERROR(be->axpby(ctx, nxt, op->T, 1.0f, 1.0f, (size_t)B * din));
        }
        cur = 1 - cur;
    }
    return INFL_OK;
}

// ---- apply ----

infl_status infl_hvp_apply_rows(infl_ctx *ctx, infl_hvp *op, int64_t row0, int64_t nrows, const float *V, float *HV,
                                int nv) {
    RETURN_IF(ctx, row0 < 0 || nrows < 1 || row0 + nrows > op->n, INFL_E_ARG,
              "Hessian rows [%" PRId64 ", %" PRId64 ") are not within the operator's %" PRId64 " rows", row0,
              row0 + nrows, op->n);
    if (nv <= 0) return INFL_OK;
    const infl_backend *be = ctx->be;
    const size_t P = op->P, total = (size_t)nv * P;
    const float scale = (float)(1.0 / (double)nrows);
    FORWARD_IF_ERROR(be->fill(ctx, HV, 0.0f, total));
    // Shards are aligned to multiples of S from row 0, so that the shard of a previous
    // call (its data and forward state) is found again by the next one.
    for (int64_t r = row0; r < row0 + nrows;) {
        RETURN_IF_CANCELLED(ctx);
        int64_t s0 = (r / op->S) * op->S, s1 = s0 + op->S < op->n ? s0 + op->S : op->n;
        int64_t a = r, b = row0 + nrows < s1 ? row0 + nrows : s1;
        if (a == s0 && b == s1) {
            FORWARD_IF_ERROR(prepare(ctx, op, s0, s1 - s0));  // a whole shard: keep it aligned
        } else {
            FORWARD_IF_ERROR(prepare(ctx, op, a, b - a));
        }
        for (int v = 0; v < nv; v++) FORWARD_IF_ERROR(rpass(ctx, op, V + (size_t)v * P, HV + (size_t)v * P, scale));
        r = b;
    }
    // + wd V
    if (op->spec.wd != 0) FORWARD_IF_ERROR(be->axpby(ctx, HV, V, (float)op->spec.wd, 1.0f, total));
    return INFL_OK;
}

infl_status infl_hvp_apply(infl_ctx *ctx, infl_hvp *op, const float *V, float *HV, int nv) {
    RETURN_IF(ctx, !op->split, INFL_E_ARG, "a batch Hessian-vector operator has no rows of its own (apply_batch)");
    return infl_hvp_apply_rows(ctx, op, 0, op->n, V, HV, nv);
}

// ---- batches given to each call ----

infl_status infl_hvp_apply_batch(infl_ctx *ctx, infl_hvp *op, const float *params, const float *X, const int32_t *y,
                                 const float *yf, int b, const float *V, float *HV, int nv) {
    RETURN_IF(ctx, b < 1 || b > op->S, INFL_E_ARG, "a Hessian-vector product of %d rows; the operator holds 1 to %" PRId64,
              b, op->S);
    if (nv <= 0) return INFL_OK;
    const size_t P = op->P, total = (size_t)nv * P;
    op->params = params;
    op->fwd_len = 0;  // the forward state below is the batch's, not a shard's of the split
    FORWARD_IF_ERROR(ctx->be->fill(ctx, HV, 0.0f, total));
    FORWARD_IF_ERROR(prepare_rows(ctx, op, X, y, yf, b));
    op->fwd_len = b;
    infl_status rc = INFL_OK;
    const float scale = (float)(1.0 / (double)b);
    for (int v = 0; v < nv && rc == INFL_OK; v++) rc = rpass(ctx, op, V + (size_t)v * P, HV + (size_t)v * P, scale);
    op->fwd_len = 0;
    FORWARD_IF_ERROR(rc);
    if (op->spec.wd != 0) FORWARD_IF_ERROR(ctx->be->axpby(ctx, HV, V, (float)op->spec.wd, 1.0f, total));
    return INFL_OK;
}
