/*
 * bench_gpt.c — the GPT's training throughput beside the machine's own GEMM rate at
 * the step's own shapes, measured in the same run on the same backend, and the
 * memory of a training step against the model and the batch.
 *
 * Usage: bench_gpt [--layers N] [--heads H] [--dim C] [--context T] [--vocab V]
 *                  [--batch B] [--steps S] [--json FILE] [--only-steps 1]
 * (the backend is $INFL_BACKEND, else auto).
 *
 * 1. Work: the trainer's own step (gpt_train_step: forward, backward, the gradient's
 *    norm, AdamW) on B documents of T positions each (no padding), median of S steps
 *    after 2 warm-up steps; tokens/s and the FLOPs of its GEMMs per second.
 * 2. Ceiling: every GEMM the step calls, timed alone through the backend at its shape
 *    (sgemm, or sgemm_batched over the heads of one document as the attention calls
 *    it), best of short samples as `infl bench` times them (bench_time_gemm), summed
 *    with its multiplicity: the time the step would
 *    take if it were nothing but its GEMMs at the rate the BLAS reaches on them. The
 *    ratio ceiling / step is the share of that the step achieves (LayerNorm, softmax,
 *    GELU, cross-entropy, AdamW and copies are outside the ceiling).
 * 3. Memory: the backend buffers of a step (activations and their gradients for B
 *    documents of T positions, parameters, gradient and AdamW's two moments) for
 *    several models and batches, and this process's peak resident memory.
 * The table goes to stdout last; --json writes the same figures.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "benchutil.h"
#include "core/internal.h"
#include "core/rng.h"
#include "models/gpt.h"
#include "pipelines/bench_internal.h"

typedef struct {
    int m, n, k, ta, tb, batch;  // batch > 0: sgemm_batched of `batch` matrices
    double count;                // calls per step
    double seconds;              // one call, measured
} gemm_shape;

static gemm_shape shapes[64];
static int nshapes;

static void add(int m, int n, int k, int ta, int tb, int batch, double count) {
    for (int i = 0; i < nshapes; i++) {
        gemm_shape *g = &shapes[i];
        if (g->m == m && g->n == n && g->k == k && g->ta == ta && g->tb == tb && g->batch == batch) {
            g->count += count;
            return;
        }
    }
    shapes[nshapes++] = (gemm_shape){m, n, k, ta, tb, batch, count, 0};
}

// Best seconds of one call of shape g through the backend (infl bench's timing).
static double time_shape(infl_ctx *ctx, const gemm_shape *g) {
    double t = NAN;
    if (bench_time_gemm(ctx, g->m, g->n, g->k, (infl_trans)g->ta, (infl_trans)g->tb, g->batch, &t) != INFL_OK)
        return NAN;
    return t;
}

// The GEMMs of one training step on B documents of T positions (gpt.c's calls).
static void step_shapes(const infl_gpt_spec *s, int B, int T) {
    int R = B * T, C = s->dim, V = s->vocab, H = s->n_head, hs = C / H;
    double NL = s->n_layer, BL = (double)B * NL;
    nshapes = 0;
    // forward
    add(R, 3 * C, C, 0, 1, 0, NL);            // qkv
    add(T, T, hs, 0, 1, H, BL);               // S = Q Kᵀ per head
    add(T, hs, T, 0, 0, H, BL);               // Y = P V
    add(R, C, C, 0, 1, 0, NL);                // attention projection
    add(R, 4 * C, C, 0, 1, 0, NL);            // fc
    add(R, C, 4 * C, 0, 1, 0, NL);            // mlp projection
    add(R, V, C, 0, 1, 0, 1);                 // logits
    // backward
    add(V, C, R, 1, 0, 0, 1);                 // ∂wte of the head
    add(R, C, V, 0, 0, 0, 1);                 // ∂ LN_f output
    add(C, 4 * C, R, 1, 0, 0, NL);            // ∂W mlp projection
    add(R, 4 * C, C, 0, 0, 0, NL);            // ∂ GELU output
    add(4 * C, C, R, 1, 0, 0, NL);            // ∂W fc
    add(R, C, 4 * C, 0, 0, 0, NL);            // ∂ LN2 output
    add(C, C, R, 1, 0, 0, NL);                // ∂W attention projection
    add(R, C, C, 0, 0, 0, NL);                // ∂Y
    add(T, T, hs, 0, 1, H, BL);               // ∂P = ∂Y Vᵀ
    add(T, hs, T, 1, 0, H, 2 * BL);           // ∂V = Pᵀ ∂Y, ∂K = ∂Sᵀ Q
    add(T, hs, T, 0, 0, H, BL);               // ∂Q = ∂S K
    add(3 * C, C, R, 1, 0, 0, NL);            // ∂W qkv
    add(R, C, 3 * C, 0, 0, 0, NL);            // ∂ LN1 output
}

static double shape_flops(const gemm_shape *g) { return 2.0 * g->m * g->n * g->k * (g->batch > 0 ? g->batch : 1) * g->count; }

static size_t step_bytes(infl_ctx *ctx, const infl_gpt_spec *s, int B) {
    gpt_work *w = NULL;
    if (gpt_work_create(ctx, s, B, &w) != INFL_OK) return 0;
    size_t b = gpt_work_bytes(w) + 4 * infl_spec_nparams(&(infl_model_spec){.kind = INFL_MODEL_GPT, .gpt = *s}) * sizeof(float);
    gpt_work_free(ctx, w);
    return b;
}

int main(int argc, char **argv) {
    bench_passive_omp(argv);
    infl_gpt_spec s = {.n_layer = 2, .n_head = 4, .dim = 64, .context = 128, .vocab = 257, .eot = 256, .wd = 0.1};
    int B = 32, steps = 10, only_steps = 0;
    const char *json = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--layers")) s.n_layer = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--heads")) s.n_head = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim")) s.dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--context")) s.context = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--vocab")) s.vocab = atoi(argv[i + 1]), s.eot = s.vocab - 1;
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else if (!strcmp(argv[i], "--only-steps")) only_steps = atoi(argv[i + 1]);  // for profilers: the steps alone
        else {
            fprintf(stderr, "usage: bench_gpt [--layers N] [--heads H] [--dim C] [--context T] [--vocab V] [--batch B] "
                            "[--steps S] [--json FILE]\n");
            return 2;
        }
    }
    if (steps < 1 || steps > 64) steps = 10;
    infl_ctx *ctx = NULL;
    if (infl_ctx_create(NULL, &ctx) != INFL_OK || infl_gpt_spec_check(ctx, &s) != INFL_OK) {
        fprintf(stderr, "bench_gpt: %s\n", infl_ctx_error(ctx));
        return 1;
    }
    const int T = s.context;
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = s};
    size_t P = infl_spec_nparams(&ms);

    // ---- the work: the trainer's step on documents of T positions (T - 1 tokens + EOT) ----
    float *hp = malloc(P * sizeof(float));
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *len = malloc(sizeof(int32_t) * B);
    infl_gpt_init(&s, 1, hp);
    for (int i = 0; i < B; i++) {
        len[i] = T - 1;
        for (int t = 0; t < T; t++) tok[i * T + t] = (int32_t)infl_rng_below(1, INFL_RNG_SYNTH, (uint64_t)(i * T + t), 0, (uint64_t)s.eot);
    }
    gpt_work *w = NULL;
    gpt_adamw opt;
    if (gpt_work_create(ctx, &s, B, &w) != INFL_OK || gpt_adamw_create(ctx, &s, hp, &opt) != INFL_OK) {
        fprintf(stderr, "bench_gpt: %s\n", infl_ctx_error(ctx));
        return 1;
    }
    double ts[64], loss = 0, gn = 0;
    int64_t ntok = 0;
    int trunc = 0;
    for (int k = -2; k < steps; k++) {
        double t0 = bench_now();
        if (gpt_train_step(ctx, &s, &opt, w, tok, T, len, B, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, k + 3, &loss, &ntok, &gn,
                           &trunc) != INFL_OK) {
            fprintf(stderr, "bench_gpt: %s\n", infl_ctx_error(ctx));
            return 1;
        }
        if (k >= 0) ts[k] = bench_now() - t0;  // the step downloads its loss and norm: synchronised
    }
    double step_s = bench_median(ts, steps), tokens_s = (double)ntok / step_s;
    if (only_steps) {
        printf("%.1f ms per step, %.0f tokens/s\n", 1e3 * step_s, tokens_s);
        return 0;
    }

    // ---- the ceiling: the step's GEMMs alone at their shapes ----
    step_shapes(&s, B, T);
    double gemm_flops = 0, ceiling_s = 0;
    for (int i = 0; i < nshapes; i++) {
        shapes[i].seconds = time_shape(ctx, &shapes[i]);
        gemm_flops += shape_flops(&shapes[i]);
        ceiling_s += shapes[i].seconds * shapes[i].count;
    }
    gemm_shape big = {2048, 2048, 2048, 0, 0, 0, 1, 0};
    double big_gflops = 2.0 * 2048 * 2048 * 2048 / time_shape(ctx, &big) / 1e9;

    // ---- memory of a step ----
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const int dims[3] = {64, 128, 256}, batches[3] = {8, 32, 128};

    printf("machine: %s\n", infl_ctx_backend(ctx));
    printf("model: gpt %d layers, %d heads, dim %d, context %d, vocab %d (%zu parameters); batch %d documents of %d "
           "positions\n\n",
           s.n_layer, s.n_head, s.dim, T, s.vocab, P, B, T);
    printf("| GEMM shape (m x n x k, batch) | per step | GFLOP/s alone |\n|---|---|---|\n");
    for (int i = 0; i < nshapes; i++) {
        const gemm_shape *g = &shapes[i];
        double one = 2.0 * g->m * g->n * g->k * (g->batch > 0 ? g->batch : 1);
        printf("| %s%s %d x %d x %d%s%.0d | %.0f | %.1f |\n", g->ta ? "T" : "N", g->tb ? "T" : "N", g->m, g->n, g->k,
               g->batch > 0 ? ", x" : "", g->batch, g->count, one / g->seconds / 1e9);
    }
    printf("\n| memory of a step (activations + gradients + parameters + AdamW) | batch 8 | batch 32 | batch 128 |\n"
           "|---|---|---|---|\n");
    for (int d = 0; d < 3; d++) {
        infl_gpt_spec m = s;
        m.dim = dims[d];
        printf("| %d layers, dim %d, context %d |", m.n_layer, m.dim, T);
        for (int b = 0; b < 3; b++) printf(" %.1f MiB |", (double)step_bytes(ctx, &m, batches[b]) / 1048576.0);
        printf("\n");
    }
    printf("\npeak resident memory of this process (the timed configuration and the table's allocations): %.1f MiB\n\n",
           ru.ru_maxrss / 1024.0);
    printf("| what | value | ratio |\n|---|---|---|\n");
    printf("| sgemm 2048^3 | %.1f GFLOP/s | |\n", big_gflops);
    printf("| the step's GEMMs alone at their shapes | %.1f GFLOP/s (%.1f ms) | %.2f of 2048^3 |\n",
           gemm_flops / ceiling_s / 1e9, 1e3 * ceiling_s, gemm_flops / ceiling_s / 1e9 / big_gflops);
    printf("| training step (median of %d) | %.1f ms, %.0f tokens/s, %.1f GFLOP/s | %.2f of the step's GEMMs |\n", steps,
           1e3 * step_s, tokens_s, gemm_flops / step_s / 1e9, ceiling_s / step_s);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f,
                    "{\"backend\": \"%s\", \"layers\": %d, \"heads\": %d, \"dim\": %d, \"context\": %d, \"vocab\": %d, "
                    "\"batch\": %d, \"params\": %zu, \"step_ms\": %.3f, \"tokens_per_s\": %.1f, \"step_gflops\": %.3f, "
                    "\"gemm_ceiling_ms\": %.3f, \"ratio\": %.4f, \"sgemm_2048_gflops\": %.3f, \"maxrss_mib\": %.1f}\n",
                    infl_ctx_backend(ctx), s.n_layer, s.n_head, s.dim, T, s.vocab, B, P, 1e3 * step_s, tokens_s,
                    gemm_flops / step_s / 1e9, 1e3 * ceiling_s, ceiling_s / step_s, big_gflops, ru.ru_maxrss / 1024.0);
            fclose(f);
        }
    }
    gpt_adamw_free(ctx, &opt);
    gpt_work_free(ctx, w);
    free(hp);
    free(tok);
    free(len);
    infl_ctx_free(ctx);
    return 0;
}
