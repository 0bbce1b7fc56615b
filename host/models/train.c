/*
 * train.c — what the trainers share (train.h): shard sizes for a memory budget, the
 * seeded shuffles of shards and rows, the learning-rate schedule, and training on a
 * seeded subset (infl lds): the steps an epoch takes, and a shard's rows compacted
 * to the subset's where the trainer reads it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

int64_t infl_shard_rows(int64_t n, int64_t d, int64_t k, double budget_mb, int64_t min_rows) {
    double bytes_per_row = 4.0 * (double)(d + k + 1);
    int64_t rows = (int64_t)(budget_mb * 1048576.0 / bytes_per_row);
    if (rows < min_rows) rows = min_rows;
    if (rows > n) rows = n;
    return rows < 1 ? 1 : rows;
}

void infl_train_permute(int64_t *p, int64_t n, uint64_t seed, uint64_t key) {
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)infl_rng_below(seed, INFL_RNG_SHUFFLE, key, (uint32_t)i, (uint64_t)(i + 1));
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

double infl_train_lr(const infl_train_options *o, int64_t step, int64_t total) {
    int64_t warm = o->warmup > 0 ? o->warmup : 0;
    if (step < warm) return o->lr * (double)(step + 1) / (double)warm;
    if (o->schedule == INFL_SCHED_COSINE && total > warm)
        return o->lr * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)(step - warm) / (double)(total - warm)));
    return o->lr;
}

// ---- subsets ----

infl_status infl_train_epoch_steps(infl_ctx *ctx, const infl_train_options *o, int64_t begin, int64_t n, int64_t S,
                                   int B, int64_t *steps, int64_t *n_used) {
    *steps = 0;
    *n_used = 0;
    for (int64_t row0 = 0; row0 < n; row0 += S) {
        int64_t len = row0 + S <= n ? S : n - row0, kept = len;
        if (infl_subset_active(o)) {
            kept = 0;
            for (int64_t r = 0; r < len; r++) kept += infl_subset_keeps(o, begin + row0 + r);
        }
        *steps += (kept + B - 1) / B;
        *n_used += kept;
    }
    RETURN_IF(ctx, *n_used == 0, INFL_E_ARG, "the training subset is empty (fraction %g of %" PRId64 " rows)",
              o->subset_fraction, n);
    return INFL_OK;
}

int64_t infl_subset_compact(const infl_train_options *o, int64_t index0, int64_t len, int narrays,
                            void *const *arrays, const size_t *row_bytes) {
    if (!infl_subset_active(o)) return len;
    int64_t m = 0;
    for (int64_t r = 0; r < len; r++) {
        if (!infl_subset_keeps(o, index0 + r)) continue;
        for (int a = 0; a < narrays && m != r; a++)
            if (arrays[a]) {
                char *base = arrays[a];
                memcpy(base + (size_t)m * row_bytes[a], base + (size_t)r * row_bytes[a], row_bytes[a]);
            }
        m++;
    }
    return m;
}

double infl_subset_cut(uint64_t seed, int draw, int64_t begin, int64_t n, double fraction) {
    int64_t m = llround(fraction * (double)n);
    m = m < 1 ? 1 : m > n ? n : m;
    if (m == n) return 1.0;
    // bisection on the cut t: count(t) = #{i : u_i < t} is a step function of t that
    // climbs by one at each (distinct) draw; stop where it is m
    double lo = 0.0, hi = 1.0;
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        int64_t c = 0;
        for (int64_t i = 0; i < n; i++)
            c += infl_rng_uniform(seed, INFL_RNG_SUBSET, (uint64_t)(begin + i), (uint32_t)draw) < mid;
        if (c == m) return mid;
        if (c < m) lo = mid;
        else hi = mid;
    }
    return hi;  // two draws equal to the last bit: the subset holds one more
}

// ---- the SGD trainer's walk over its minibatches ----

void infl_sgd_shape(const infl_train_options *o, int64_t n, int64_t d, int64_t k, int64_t *S, int *B) {
    *S = o->shard_rows > 0 ? (o->shard_rows < n ? o->shard_rows : n) : infl_shard_rows(n, d, k, o->shard_mb, o->batch);
    *B = (int)(o->batch < *S ? o->batch : *S);
}

void infl_sgd_walk_free(infl_sgd_walk *w) {
    free(w->order);
    free(w->kept);
    free(w->perm);
    memset(w, 0, sizeof *w);
}

// The shard at place si of epoch ep's order: its rows, the subset's among them and
// their permutation.
static void walk_load_shard(infl_sgd_walk *w) {
    const infl_train_options *o = w->o;
    int64_t s = w->order[w->si];
    w->row0 = s * w->S;
    w->len = w->row0 + w->S <= w->n ? w->S : w->n - w->row0;
    w->nkept = 0;
    for (int64_t r = 0; r < w->len; r++)
        if (infl_subset_keeps(o, w->begin + w->row0 + r)) w->kept[w->nkept++] = r;
    infl_train_permute(w->perm, w->nkept, o->seed, ((uint64_t)(w->ep + 1) << 32) | (uint64_t)s);
    w->b0 = 0;
    w->fresh = 1;
}

// Rows of the subset in the shard at place si of the current order (without permuting).
static int64_t walk_kept(const infl_sgd_walk *w, int64_t si) {
    int64_t row0 = w->order[si] * w->S, len = row0 + w->S <= w->n ? w->S : w->n - row0, kept = 0;
    if (!(w->o->subset_fraction > 0)) return len;
    for (int64_t r = 0; r < len; r++) kept += infl_subset_keeps(w->o, w->begin + row0 + r);
    return kept;
}

infl_status infl_sgd_walk_init(infl_ctx *ctx, infl_sgd_walk *w, const infl_train_options *o, int64_t begin,
                               int64_t n, int64_t S, int B, int64_t start) {
    memset(w, 0, sizeof *w);
    w->o = o;
    w->n = n;
    w->S = S;
    w->B = B;
    w->begin = begin;
    w->nshards = (n + S - 1) / S;
    FORWARD_IF_ERROR(infl_train_epoch_steps(ctx, o, begin, n, S, B, &w->steps_per_epoch, &w->n_used));
    w->total = w->steps_per_epoch * o->epochs;
    RETURN_IF(ctx, start < 0 || start >= w->total, INFL_E_ARG, "step %" PRId64 " is not within the %" PRId64 " steps",
              start, w->total);
    w->order = malloc((size_t)w->nshards * sizeof(int64_t));
    w->kept = malloc((size_t)S * sizeof(int64_t));
    w->perm = malloc((size_t)S * sizeof(int64_t));
    if (!w->order || !w->kept || !w->perm) {
        infl_sgd_walk_free(w);
        return infl_seterr(ctx, INFL_E_NOMEM, "out of memory for the batch order (%" PRId64 " rows a shard)", S);
    }
    // the shard of step `start`, found by counting steps (only its rows are permuted)
    w->ep = (int)(start / w->steps_per_epoch);
    int64_t left = start - (int64_t)w->ep * w->steps_per_epoch;
    infl_train_permute(w->order, w->nshards, o->seed, (uint64_t)w->ep);
    for (w->si = 0;; w->si++) {
        int64_t kept = walk_kept(w, w->si), steps = (kept + B - 1) / B;
        if (left < steps) break;
        left -= steps;
        w->ep_rows += kept;
    }
    walk_load_shard(w);
    w->b0 = left * B;
    w->step = start;
    return INFL_OK;
}

int infl_sgd_walk_next(infl_sgd_walk *w) {
    if (w->started) {
        w->fresh = 0;
        w->b0 += w->B;
        w->step++;
        if (w->step >= w->total) return 0;
        while (w->b0 >= w->nkept) {
            // the next shard with rows of the subset, in this epoch or the next
            w->ep_rows += w->nkept;
            if (++w->si >= w->nshards) {
                w->ep++;
                w->si = 0;
                w->ep_rows = 0;
                infl_train_permute(w->order, w->nshards, w->o->seed, (uint64_t)w->ep);
            }
            walk_load_shard(w);
        }
    }
    w->started = 1;
    int64_t left = w->nkept - w->b0;
    w->nb = (int)(left < w->B ? left : w->B);
    return 1;
}

infl_status infl_sgd_step(infl_ctx *ctx, const infl_model *m, infl_model_work *mw, float *W, float *V, float *G,
                          const infl_batch *bt, int divisor, double lr, double mu) {
    if (bt->b > 0) {
        FORWARD_IF_ERROR(infl_model_forward(ctx, m, W, bt, mw));
        FORWARD_IF_ERROR(infl_model_backward(ctx, m, W, bt, NULL, mw, G, 1.0f / (float)divisor));
    } else {
        FORWARD_IF_ERROR(ctx->be->fill(ctx, G, 0.0f, m->nparams));
    }
    return ctx->be->sgd_step(ctx, W, V, G, (float)lr, (float)mu, (float)m->wd, m->nparams);
}
