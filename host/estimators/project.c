/*
 * project.c — random projections of per-example gradients on the backend (project.h):
 * the dense (gaussian, rademacher) projection by chunks of each layer's output rows,
 * and LoGra's Kronecker projection per layer. Both go through score.c's
 * per-document gradient former, so examples of T token rows and of one row take the
 * same path.
 */
#include "estimators/project.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/projgen.h"
#include "estimators/score.h"

// Columns of the layer space projected per dense chunk (its block of Pᵀ is chunk × k).
#define PROJ_CHUNK_COLS 8192
#define PROJ_CHUNK_BYTES (64u << 20)

struct infl_proj {
    infl_projection kind;
    uint64_t seed;
    int k;
    int L;
    int maxB, maxrows;
    int no[INFL_MAX_LINEAR];          // dense: output rows per chunk of layer l
    int kout[INFL_MAX_LINEAR], kin[INFL_MAX_LINEAR];  // kron
    int koff[INFL_MAX_LINEAR];        // kron: layer l's first entry of φ
    float *PoT[INFL_MAX_LINEAR];      // kron: (d_out, k_out) backend: P_outᵀ
    float *PiT[INFL_MAX_LINEAR];      // kron: (d_in + bias, k_in) backend: P_inᵀ
    float *Pc;    // dense: (chunk, k) a block of Pᵀ
    float *Gc;    // dense: (maxB, chunk) the examples' gradients of a chunk
    float *Dc;    // dense: (maxrows, max no) a chunk of Δ's columns; kron: (maxrows, max k_out) Δ P_outᵀ
    float *Ac;    // kron: (maxrows, max k_in) Ã P_inᵀ
    float *tmp;   // the outer products of one-row examples: (maxB, max width (d_in + 1))
};

int proj_dim(const infl_proj *p) { return p->k; }

void proj_layer_dims(const infl_proj *p, int l, int *kout, int *kin) {
    *kout = p->kind == INFL_PROJ_KRON ? p->kout[l] : 0;
    *kin = p->kind == INFL_PROJ_KRON ? p->kin[l] : 0;
}

void proj_free(infl_ctx *ctx, infl_proj *p) {
    if (!p) return;
    const infl_backend *be = ctx->be;
    for (int l = 0; l < p->L; l++) {
        be->release(ctx, p->PoT[l]);
        be->release(ctx, p->PiT[l]);
    }
    be->release(ctx, p->Pc);
    be->release(ctx, p->Gc);
    be->release(ctx, p->Dc);
    be->release(ctx, p->Ac);
    be->release(ctx, p->tmp);
    free(p);
}

infl_status proj_create(infl_ctx *ctx, const infl_model *m, infl_projection kind, int dim, int kout, int kin,
                        uint64_t seed, int maxB, int maxrows, infl_proj **out) {
    const infl_backend *be = ctx->be;
    infl_status rc = INFL_OK;
    *out = NULL;
    RETURN_IF(ctx, kind != INFL_PROJ_GAUSSIAN && kind != INFL_PROJ_RADEMACHER && kind != INFL_PROJ_KRON, INFL_E_ARG,
              "unknown projection %d", (int)kind);
    RETURN_IF(ctx, maxB < 1 || maxrows < maxB, INFL_E_ARG, "projection: %d examples of %d rows", maxB, maxrows);
    infl_proj *p = infl_calloc(ctx, 1, sizeof *p, "a projection");
    if (!p) return INFL_E_NOMEM;
    p->kind = kind;
    p->seed = seed;
    p->L = m->nlayers;
    p->maxB = maxB;
    p->maxrows = maxrows;
    const char *hint = "a smaller --dim, or a smaller --shard";
    if (kind == INFL_PROJ_KRON) {
        GOTO_IF(ctx, kout < 1 || kin < 1, INFL_E_ARG, "kron projection: k_out and k_in must be at least 1 (got %d x %d)",
                kout, kin);
        int64_t k = 0;
        int mo = 0, mi = 0;
        size_t tw = 0;
        for (int l = 0; l < p->L; l++) {
            const infl_linear *ly = &m->layer[l];
            int ni = infl_linear_ni(ly);
            p->kout[l] = kout < ly->d_out ? kout : ly->d_out;
            p->kin[l] = kin < ni ? kin : ni;
            p->koff[l] = (int)k;
            k += (int64_t)p->kout[l] * p->kin[l];
            if (p->kout[l] > mo) mo = p->kout[l];
            if (p->kin[l] > mi) mi = p->kin[l];
            size_t w = (size_t)p->kout[l] * (p->kin[l] + 1);
            if (w > tw) tw = w;
            // P_outᵀ (d_out, k_out) and P_inᵀ (ni, k_in), generated once
            CHECK(infl_be_alloc_hint(ctx, (void **)&p->PoT[l], (size_t)ly->d_out * p->kout[l] * sizeof(float),
                                     "the projection", hint));
            CHECK(infl_be_alloc_hint(ctx, (void **)&p->PiT[l], (size_t)ni * p->kin[l] * sizeof(float),
                                     "the projection", hint));
            CHECK(be->proj_gen(ctx, p->PoT[l], INFL_PROJ_RADEMACHER_, seed,
                               (uint32_t)(3 * l + 1), 0, ly->d_out, p->kout[l], 1.0f / sqrtf((float)p->kout[l])));
            CHECK(be->proj_gen(ctx, p->PiT[l], INFL_PROJ_RADEMACHER_, seed, (uint32_t)(3 * l + 2), 0, ni, p->kin[l],
                               1.0f / sqrtf((float)p->kin[l])));
        }
        GOTO_IF(ctx, k > (1 << 30), INFL_E_ARG, "kron projection: %" PRId64 " entries per example is too many", k);
        p->k = (int)k;
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->Dc, (size_t)maxrows * mo * sizeof(float), "projection buffers", hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->Ac, (size_t)maxrows * mi * sizeof(float), "projection buffers", hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->tmp, (size_t)maxB * tw * sizeof(float), "projection buffers", hint));
    } else {
        GOTO_IF(ctx, dim < 1, INFL_E_ARG, "projection dimension %d: must be at least 1", dim);
        GOTO_IF(ctx, (size_t)dim > m->lsize, INFL_E_ARG,
                "projection dimension %d is larger than the gradient (%zu entries): a %s projection cannot be wider "
                "than what it projects",
                dim, m->lsize, kind == INFL_PROJ_GAUSSIAN ? "gaussian" : "rademacher");
        p->k = dim;
        // chunks of whole output rows: about PROJ_CHUNK_COLS columns, the block of Pᵀ at most PROJ_CHUNK_BYTES
        size_t target = PROJ_CHUNK_COLS, cap = PROJ_CHUNK_BYTES / ((size_t)dim * sizeof(float));
        if (cap < target) target = cap;
        size_t chunk = 0, tw = 0;
        int mno = 0;
        for (int l = 0; l < p->L; l++) {
            const infl_linear *ly = &m->layer[l];
            size_t ni = (size_t)infl_linear_ni(ly);
            size_t no = target / ni;
            if (no < 1) no = 1;
            if (no > (size_t)ly->d_out) no = (size_t)ly->d_out;
            p->no[l] = (int)no;
            if (no * ni > chunk) chunk = no * ni;
            if (no * (ly->d_in + 1) > tw) tw = no * (ly->d_in + 1);
            if ((int)no > mno) mno = (int)no;
        }
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->Pc, chunk * dim * sizeof(float), "a block of the projection", hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->Gc, (size_t)maxB * chunk * sizeof(float), "projection buffers",
                                 hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->Dc, (size_t)maxrows * mno * sizeof(float), "projection buffers",
                                 hint));
        CHECK(infl_be_alloc_hint(ctx, (void **)&p->tmp, (size_t)maxB * tw * sizeof(float), "projection buffers", hint));
    }
    *out = p;
    return INFL_OK;
done:
    proj_free(ctx, p);
    return rc;
}

// Dense: φ (b, k) = Σ over layers and chunks of output rows [o0, o0 + no) of G_chunk Pᵀ_chunk,
// G_chunk = [vec(Δ_chunkᵀ Ã) | Σ_t δ_chunk] per example, the layer-space columns
// {o·d_in + i} ∪ {d_out·d_in + o} of the chunk's rows o.
static infl_status proj_dense(infl_ctx *ctx, infl_proj *p, const infl_model *m, const infl_model_work *w, int b,
                              float *phi) {
    const infl_backend *be = ctx->be;
    float s = 1.0f / sqrtf((float)p->k);
    int kind = p->kind == INFL_PROJ_GAUSSIAN ? INFL_PROJ_GAUSSIAN_ : INFL_PROJ_RADEMACHER_;
    int rows = w->row_off[b], first = 1;
    for (int l = 0; l < p->L; l++) {
        const infl_linear *ly = &m->layer[l];
        int din = ly->d_in, dout = ly->d_out;
        for (int o0 = 0; o0 < dout; o0 += p->no[l]) {
            int no = dout - o0 < p->no[l] ? dout - o0 : p->no[l];
            infl_linear lc = *ly;
            lc.d_out = no;
            int nc = (int)infl_linear_size(&lc);
            // Δ's columns of the chunk (rows, no), then the examples' gradients of the chunk (b, nc)
            FORWARD_IF_ERROR(be->copy_2d(ctx, p->Dc, no, w->D[l] + o0, dout, rows, no));
            FORWARD_IF_ERROR(score_doc_grads_layer(ctx, p->Gc, (size_t)nc, p->tmp, &lc, p->Dc, w->A[l], w->row_off, 0,
                                                   b));
            // the chunk's block of Pᵀ: W columns o·d_in + i, then the bias's d_out·d_in + o
            FORWARD_IF_ERROR(be->proj_gen(ctx, p->Pc, kind, p->seed, (uint32_t)(3 * l), (uint64_t)o0 * din, no * din,
                                          p->k, s));
            if (ly->bias)
                FORWARD_IF_ERROR(be->proj_gen(ctx, p->Pc + (size_t)no * din * p->k, kind, p->seed, (uint32_t)(3 * l),
                                              (uint64_t)dout * din + o0, no, p->k, s));
            FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, b, p->k, nc, 1.0f, p->Gc, nc, p->Pc, p->k,
                                       first ? 0.0f : 1.0f, phi, p->k));
            first = 0;
        }
    }
    return INFL_OK;
}

// Kron: per layer Δ' = Δ P_outᵀ (rows, k_out), Ã' = Ã P_inᵀ (rows, k_in), then each example's
// Σ_t δ'_t a'_tᵀ (k_out, k_in) into φ's entries of the layer.
static infl_status proj_kron(infl_ctx *ctx, infl_proj *p, const infl_model *m, const infl_model_work *w, int b,
                             float *phi) {
    const infl_backend *be = ctx->be;
    int rows = w->row_off[b];
    for (int l = 0; l < p->L; l++) {
        const infl_linear *ly = &m->layer[l];
        int din = ly->d_in, dout = ly->d_out, ko = p->kout[l], ki = p->kin[l];
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, rows, ko, dout, 1.0f, w->D[l], dout, p->PoT[l], ko, 0.0f, p->Dc,
                                   ko));
        FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_N, rows, ki, din, 1.0f, w->A[l], din, p->PiT[l], ki, 0.0f, p->Ac,
                                   ki));
        if (ly->bias) FORWARD_IF_ERROR(be->add_row(ctx, p->Ac, p->PiT[l] + (size_t)din * ki, rows, ki));
        infl_linear lk = {.d_in = ki, .d_out = ko, .bias = 0};
        FORWARD_IF_ERROR(
            score_doc_grads_layer(ctx, phi + p->koff[l], (size_t)p->k, p->tmp, &lk, p->Dc, p->Ac, w->row_off, 0, b));
    }
    return INFL_OK;
}

infl_status proj_batch(infl_ctx *ctx, infl_proj *p, const infl_model *m, const infl_model_work *w, int b,
                       float *phi) {
    RETURN_IF(ctx, b < 0 || b > p->maxB || w->row_off[b] > p->maxrows, INFL_E_INTERNAL,
              "projection of %d examples (%d rows) into buffers of %d (%d)", b, b > 0 ? w->row_off[b] : 0, p->maxB,
              p->maxrows);
    if (b == 0) return INFL_OK;
    return p->kind == INFL_PROJ_KRON ? proj_kron(ctx, p, m, w, b, phi) : proj_dense(ctx, p, m, w, b, phi);
}

double proj_flops(const infl_proj *p, const infl_model *m, int b, double rows) {
    double f = 0;
    for (int l = 0; l < p->L; l++) {
        const infl_linear *ly = &m->layer[l];
        if (p->kind == INFL_PROJ_KRON) {
            f += 2.0 * rows * ((double)ly->d_out * p->kout[l] + (double)ly->d_in * p->kin[l]);
            f += 2.0 * rows * p->kout[l] * p->kin[l];
        } else {
            f += score_doc_grads_flops(ly, rows) + 2.0 * b * (double)infl_linear_size(ly) * p->k;
        }
    }
    return f;
}
