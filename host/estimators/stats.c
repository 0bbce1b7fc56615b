/*
 * stats.c — Pearson and Spearman correlations (see stats.h).
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

double stats_pearson(const double *x, const double *y, int64_t n) {
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int64_t i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

void stats_corr_add(stats_corr *s, double x, double y) {
    s->n += 1;
    double dx = x - s->mx, dy = y - s->my;
    s->mx += dx / s->n;
    s->my += dy / s->n;
    s->cxx += dx * (x - s->mx);
    s->cyy += dy * (y - s->my);
    s->cxy += dx * (y - s->my);
}

double stats_corr_pearson(const stats_corr *s) {
    return s->cxx > 0 && s->cyy > 0 ? s->cxy / sqrt(s->cxx * s->cyy) : NAN;
}

static int by_value(const void *a, const void *b) {
    const stats_pair *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

void stats_ranks(const double *x, int64_t n, double *r, stats_pair *tmp) {
    for (int64_t i = 0; i < n; i++) tmp[i] = (stats_pair){x[i], i};
    qsort(tmp, (size_t)n, sizeof(stats_pair), by_value);
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j + 1 < n && tmp[j + 1].v == tmp[i].v) j++;
        for (int64_t t = i; t <= j; t++) r[tmp[t].i] = 0.5 * (double)(i + j);
        i = j + 1;
    }
}

double stats_spearman(const double *x, const double *y, int64_t n, double *rx, double *ry, stats_pair *tmp) {
    stats_ranks(x, n, rx, tmp);
    stats_ranks(y, n, ry, tmp);
    return stats_pearson(rx, ry, n);
}
