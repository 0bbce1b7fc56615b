/*
 * train.c — what the trainers share (train.h): shard sizes for a memory budget, the
 * seeded shuffles of shards and rows, the learning-rate schedule, and training on a
 * seeded subset (infl lds): the steps an epoch takes, and a shard's rows compacted
 * to the subset's where the trainer reads it.
 */
#include <inttypes.h>
#include <math.h>
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
