/*
 * stats.h — the correlations the estimators report (loo, lds, compare), written once.
 */
#ifndef INFL_STATS_H
#define INFL_STATS_H

#include <stdint.h>

// Scratch of stats_ranks: a value and its index.
typedef struct {
    double v;
    int64_t i;
} stats_pair;

// Pearson correlation of x and y (n); NaN when either is constant.
double stats_pearson(const double *x, const double *y, int64_t n);
// Pearson correlation accumulated a pair at a time, in one pass over data that is never
// held (Welford's co-moments: stable where the sums of squares would cancel).
typedef struct {
    double n, mx, my, cxx, cyy, cxy;
} stats_corr;
void stats_corr_add(stats_corr *s, double x, double y);
// NaN when either side is constant (or no pair was added).
double stats_corr_pearson(const stats_corr *s);
// Ranks of x (n) into r, ties sharing their mean rank (0-based). tmp (n) is scratch;
// on return it holds the values in ascending order, ties by index (tmp[j].i: the
// index of the j-th smallest).
void stats_ranks(const double *x, int64_t n, double *r, stats_pair *tmp);
// Spearman correlation: Pearson of the ranks. rx, ry and tmp (n) are scratch.
double stats_spearman(const double *x, const double *y, int64_t n, double *rx, double *ry, stats_pair *tmp);

#endif
