/*
 * train.c — what the trainers share (train.h): shard sizes for a memory budget, the
 * seeded shuffles of shards and rows, and the learning-rate schedule.
 */
#include <math.h>

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
