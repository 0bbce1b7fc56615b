/*
 * compare.c — `infl compare`: how two methods' (or two settings') score matrices
 * agree, query by query: Pearson and Spearman over the training examples, and the
 * overlap of their top-k proponents and opponents. Used to report what a cheaper
 * setting (a low query rank, fewer samples, a peer library) changes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "estimators/stats.h"

void infl_compare_result_free(infl_compare_result *r) {
    if (!r) return;
    free(r->pearson);
    free(r->spearman);
    free(r->top_overlap);
    free(r->bottom_overlap);
    free(r);
}

// Marks the k highest (bit 1) and k lowest (bit 2) of a row from its sorted order
// (tmp of stats_ranks: by value, ties by index).
static void mark_ends(const stats_pair *sorted, int64_t N, int k, unsigned char *mark) {
    if (N > 0) memset(mark, 0, (size_t)N);
    for (int64_t j = 0; j < k && j < N; j++) {
        mark[sorted[N - 1 - j].i] |= 1;
        mark[sorted[j].i] |= 2;
    }
}

// Shares of the k highest (top) and k lowest (bottom) in common, from the marks.
static void overlaps(const unsigned char *ma, const unsigned char *mb, int64_t N, int k, double *top, double *bot) {
    int64_t t = 0, b = 0;
    for (int64_t i = 0; i < N; i++) {
        t += (ma[i] & mb[i] & 1) != 0;
        b += (ma[i] & mb[i] & 2) != 0;
    }
    *top = (double)t / k;
    *bot = (double)b / k;
}

infl_status infl_compare(infl_ctx *ctx, const char *a, const char *b, int k, infl_compare_result **out) {
    *out = NULL;
    RETURN_IF(ctx, k < 1, INFL_E_ARG, "--top: expected at least 1");
    infl_scr *sa = NULL, *sb = NULL;
    infl_compare_result *r = NULL;
    float *ra = NULL, *rb = NULL;
    double *xa = NULL, *xb = NULL, *ka = NULL, *kb = NULL;
    stats_pair *t = NULL;
    unsigned char *mka = NULL, *mkb = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_scores_open(ctx, a, &sa));
    CHECK(store_scores_open(ctx, b, &sb));
    int M, Mb;
    int64_t N, Nb;
    store_scores_shape(sa, &M, &N);
    store_scores_shape(sb, &Mb, &Nb);
    GOTO_IF(ctx, M != Mb || N != Nb, INFL_E_SHAPE, "%s has /scores [%d, %lld] but %s has [%d, %lld]", a, M,
            (long long)N, b, Mb, (long long)Nb);
    GOTO_IF(ctx, k > N, INFL_E_ARG, "--top %d is larger than the %lld training examples", k, (long long)N);
    r = infl_calloc(ctx, 1, sizeof *r, "the comparison");
    GOTO_NOMEM_IF(!r);
    r->M = M;
    r->N = N;
    r->k = k;
    snprintf(r->method_a, sizeof r->method_a, "%s", store_scores_attr(sa, "method"));
    snprintf(r->method_b, sizeof r->method_b, "%s", store_scores_attr(sb, "method"));
    r->pearson = calloc((size_t)M, sizeof(double));
    r->spearman = calloc((size_t)M, sizeof(double));
    r->top_overlap = calloc((size_t)M, sizeof(double));
    r->bottom_overlap = calloc((size_t)M, sizeof(double));
    ra = malloc((size_t)N * sizeof(float));
    rb = malloc((size_t)N * sizeof(float));
    xa = malloc((size_t)N * sizeof(double));
    xb = malloc((size_t)N * sizeof(double));
    ka = malloc((size_t)N * sizeof(double));
    kb = malloc((size_t)N * sizeof(double));
    t = malloc((size_t)N * sizeof(stats_pair));
    mka = malloc((size_t)N);
    mkb = malloc((size_t)N);
    GOTO_IF(ctx, !r->pearson || !r->spearman || !r->top_overlap || !r->bottom_overlap || !ra || !rb || !xa || !xb ||
                     !ka || !kb || !t || !mka || !mkb,
            INFL_E_NOMEM, "out of memory for rows of %lld scores", (long long)N);
    for (int q = 0; q < M; q++) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        CHECK(store_scores_read_row(ctx, sa, q, ra));
        CHECK(store_scores_read_row(ctx, sb, q, rb));
        for (int64_t i = 0; i < N; i++)
            GOTO_IF(ctx, !isfinite(ra[i]) || !isfinite(rb[i]), INFL_E_VALUE,
                    "%s: /scores row %d column %lld is %s; expected finite scores", isfinite(ra[i]) ? b : a, q,
                    (long long)i, isnan(isfinite(ra[i]) ? rb[i] : ra[i]) ? "NaN" : "Inf");
        for (int64_t i = 0; i < N; i++) {
            xa[i] = ra[i];
            xb[i] = rb[i];
        }
        r->pearson[q] = stats_pearson(xa, xb, N);
        stats_ranks(xa, N, ka, t);
        mark_ends(t, N, k, mka);
        stats_ranks(xb, N, kb, t);
        mark_ends(t, N, k, mkb);
        r->spearman[q] = stats_pearson(ka, kb, N);
        overlaps(mka, mkb, N, k, &r->top_overlap[q], &r->bottom_overlap[q]);
        // a constant row has no correlation (NaN): it counts as 0 in the means
        r->mean_pearson += (isfinite(r->pearson[q]) ? r->pearson[q] : 0) / M;
        r->mean_spearman += (isfinite(r->spearman[q]) ? r->spearman[q] : 0) / M;
        r->mean_top += r->top_overlap[q] / M;
        r->mean_bottom += r->bottom_overlap[q] / M;
    }
    *out = r;
    r = NULL;
done:
    store_scores_close(sa);
    store_scores_close(sb);
    infl_compare_result_free(r);
    free(ra);
    free(rb);
    free(xa);
    free(xb);
    free(ka);
    free(kb);
    free(t);
    free(mka);
    free(mkb);
    return rc;
}
