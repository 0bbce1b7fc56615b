/*
 * topk.c — the scheduler's running top-k and bottom-k per query (see topk.h).
 *
 * Each query keeps two bounded binary heaps of k entries whose root is the weakest
 * entry kept; a new score enters only when it beats the root (O(1) to reject, O(log k)
 * to enter), so a block of nb scores costs O(nb log k) per query. The bottom side
 * stores negated scores so that one "beats" order serves both sides. Queries are
 * independent: a block is merged in parallel over them with OpenMP.
 */
#define _POSIX_C_SOURCE 200809L
#include "topk.h"

#include "core/comm.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Below this many scores in a block, threads cost more than they save.
#define PAR_MIN_WORK (1 << 15)

typedef struct {
    float s;    // the score (negated on the bottom side)
    int64_t i;  // the training index
} entry;

struct infl_topk {
    int M, k;
    int64_t seen;  // training examples pushed
    int n;         // entries held per heap: min(k, seen)
    entry *top;    // (M, k): query q's heap at top + q·k, root = weakest of the top k
    entry *bot;    // (M, k): likewise on negated scores
};

// ---- the order ----

// a ranks above b: the larger score, and on equal scores the smaller index.
static inline int beats(entry a, entry b) { return a.s > b.s || (a.s == b.s && a.i < b.i); }

// ---- bounded heaps (root = the weakest entry, which every other entry beats) ----

static void sift_up(entry *h, int i) {
    entry e = h[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!beats(h[p], e)) break;  // parent is weaker: e may rise no further
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static void sift_down(entry *h, int n, int i) {
    entry e = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && beats(h[c], h[c + 1])) c++;  // the weaker child
        if (!beats(e, h[c])) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

// Offers e to heap h of *n entries, capacity k.
static inline void offer(entry *h, int *n, int k, entry e) {
    if (*n < k) {
        h[*n] = e;
        sift_up(h, (*n)++);
    } else if (beats(e, h[0])) {
        h[0] = e;
        sift_down(h, k, 0);
    }
}

// ---- create / free ----

infl_status infl_topk_create(infl_ctx *ctx, int M, int k, infl_topk **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "infl_topk_create: out is NULL");
    *out = NULL;
    RETURN_IF(ctx, M < 1 || k < 1, INFL_E_ARG, "top-k: expected M >= 1 queries and k >= 1, got M = %d, k = %d", M, k);
    RETURN_IF(ctx, (size_t)M > SIZE_MAX / 2 / sizeof(entry) / (size_t)k, INFL_E_NOMEM,
              "top-k: M = %d queries x k = %d entries do not fit in memory", M, k);
    infl_topk *t = infl_calloc(ctx, 1, sizeof *t, "a top-k");
    if (!t) return INFL_E_NOMEM;
    t->M = M;
    t->k = k;
    size_t n = (size_t)M * (size_t)k;
    t->top = infl_malloc(ctx, n * sizeof(entry), "the top-k heaps");
    t->bot = t->top ? infl_malloc(ctx, n * sizeof(entry), "the bottom-k heaps") : NULL;
    if (!t->bot) {
        infl_topk_free(t);
        return INFL_E_NOMEM;
    }
    *out = t;
    return INFL_OK;
}

void infl_topk_free(infl_topk *t) {
    if (!t) return;
    free(t->top);
    free(t->bot);
    free(t);
}

int infl_topk_k(const infl_topk *t) { return t->k; }
int infl_topk_m(const infl_topk *t) { return t->M; }
int64_t infl_topk_seen(const infl_topk *t) { return t->seen; }

// ---- merging a block ----

infl_status infl_topk_push(infl_ctx *ctx, infl_topk *t, const float *scores, int M, int nb, int ld,
                           int64_t index0) {
    // scores is (M, nb), row-major with leading dimension ld
    RETURN_IF(ctx, !t, INFL_E_ARG, "infl_topk_push: no top-k");
    RETURN_IF(ctx, M != t->M, INFL_E_SHAPE, "top-k: a block of %d query rows for a top-k of %d queries", M, t->M);
    RETURN_IF(ctx, nb < 0 || ld < nb || index0 < 0, INFL_E_ARG,
              "top-k: bad block: nb = %d columns, ld = %d, first index %" PRId64 " (need 0 <= nb <= ld, index >= 0)",
              nb, ld, index0);
    if (nb == 0) return INFL_OK;
    RETURN_IF(ctx, !scores, INFL_E_ARG, "top-k: no scores given for a block of %d columns", nb);
    int par = (int64_t)M * nb >= PAR_MIN_WORK && M > 1;

    // Check the whole block first, so that a bad block leaves the state untouched; the
    // first non-finite value in row-major order is the one reported.
    int64_t bad = INT64_MAX;  // q·nb + j of the first non-finite score
#pragma omp parallel for reduction(min : bad) schedule(static) if (par)
    for (int q = 0; q < M; q++) {
        const float *row = scores + (size_t)q * (size_t)ld;
        for (int j = 0; j < nb; j++)
            if (!isfinite(row[j])) {
                int64_t at = (int64_t)q * nb + j;
                if (at < bad) bad = at;
                break;
            }
    }
    if (bad != INT64_MAX) {
        int q = (int)(bad / nb), j = (int)(bad % nb);
        float v = scores[(size_t)q * (size_t)ld + (size_t)j];
        return infl_seterr(ctx, INFL_E_NUMERIC,
                           "score of query %d against training example %" PRId64
                           " is %s: the model or checkpoint has diverged (non-finite scores cannot be ranked)",
                           q, index0 + j, isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf");
    }

    // Merge, query by query: every heap holds t->n entries before this block.
    int k = t->k, n0 = t->n;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int q = 0; q < M; q++) {
        const float *row = scores + (size_t)q * (size_t)ld;
        entry *top = t->top + (size_t)q * (size_t)k, *bot = t->bot + (size_t)q * (size_t)k;
        int nt = n0, nbt = n0;
        for (int j = 0; j < nb; j++) {
            entry e = {row[j], index0 + j};
            offer(top, &nt, k, e);
            e.s = -e.s;
            offer(bot, &nbt, k, e);
        }
    }
    t->seen += nb;
    t->n = t->seen < k ? (int)t->seen : k;
    return INFL_OK;
}

// ---- across processes ----

// Offers another top-k's heaps (src->n entries per query and side, from src->seen examples
// none of which were pushed into t) to t's, as if they had been pushed.
static void merge_heaps(infl_topk *t, const entry *top, const entry *bot, int n, int64_t seen) {
    int k = t->k, n0 = t->n;
    for (int q = 0; q < t->M; q++) {
        entry *ht = t->top + (size_t)q * (size_t)k, *hb = t->bot + (size_t)q * (size_t)k;
        int nt = n0, nbt = n0;
        for (int j = 0; j < n; j++) {
            offer(ht, &nt, k, top[(size_t)q * (size_t)k + j]);
            offer(hb, &nbt, k, bot[(size_t)q * (size_t)k + j]);
        }
    }
    t->seen += seen;
    t->n = t->seen < k ? (int)t->seen : k;
}

// A top-k as bytes: seen, n, then both heaps (M, k) whole.
typedef struct {
    int64_t seen;
    int64_t n;
} topk_head;

static infl_status take_topk(infl_ctx *ctx, void *user, int from, const void *block) {
    (void)ctx;
    infl_topk *t = user;
    if (from == 0) return INFL_OK;  // rank 0's own heaps are t's
    topk_head h;
    memcpy(&h, block, sizeof h);
    const entry *top = (const entry *)((const char *)block + sizeof h);
    merge_heaps(t, top, top + (size_t)t->M * (size_t)t->k, (int)h.n, h.seen);
    return INFL_OK;
}

// t as bytes into buf (sizeof(topk_head) + 2 heaps).
static void pack(const infl_topk *t, char *buf) {
    size_t heap = (size_t)t->M * (size_t)t->k * sizeof(entry);
    topk_head h = {t->seen, t->n};
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, t->top, heap);
    memcpy(buf + sizeof h + heap, t->bot, heap);
}

infl_status infl_topk_reduce(infl_ctx *ctx, infl_topk *t) {
    if (infl_comm_size(ctx) == 1) return INFL_OK;
    size_t heap = (size_t)t->M * (size_t)t->k * sizeof(entry), bytes = sizeof(topk_head) + 2 * heap;
    char *buf = infl_malloc(ctx, bytes, "a top-k to merge across processes");
    if (!buf) return INFL_E_NOMEM;
    pack(t, buf);
    infl_status rc = infl_comm_gather(ctx, buf, bytes, take_topk, t);
    // rank 0's merged heaps to every process
    if (rc == INFL_OK && infl_comm_root(ctx)) pack(t, buf);
    if (rc == INFL_OK) rc = infl_comm_bcast(ctx, buf, bytes);
    if (rc == INFL_OK) {
        topk_head h;
        memcpy(&h, buf, sizeof h);
        t->seen = h.seen;
        t->n = (int)h.n;
        memcpy(t->top, buf + sizeof h, heap);
        memcpy(t->bot, buf + sizeof h + heap, heap);
    }
    free(buf);
    return rc;
}

// ---- results ----

// Best first: a before b when a beats b.
static int cmp_best_first(const void *pa, const void *pb) {
    entry a = *(const entry *)pa, b = *(const entry *)pb;
    return beats(a, b) ? -1 : beats(b, a) ? 1 : 0;
}

// Writes heap h of n entries best first into idx / score (either may be NULL);
// `sign` undoes the bottom side's negation.
static void emit_sorted(const entry *h, int n, float sign, int64_t *idx, float *score) {
    if (!idx && !score) return;
    entry *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (tmp) {
        memcpy(tmp, h, (size_t)n * sizeof *tmp);
        qsort(tmp, (size_t)n, sizeof *tmp, cmp_best_first);
        for (int r = 0; r < n; r++) {
            if (idx) idx[r] = tmp[r].i;
            if (score) score[r] = sign * tmp[r].s;
        }
        free(tmp);
        return;
    }
    // Out of memory: the same order by selection, O(n²) but allocation-free. Entries
    // are distinct (distinct indices), so "the best entry that `last` beats" is
    // well defined.
    entry last = {0, 0};
    for (int r = 0; r < n; r++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if ((r == 0 || beats(last, h[i])) && (best < 0 || beats(h[i], h[best]))) best = i;
        last = h[best];
        if (idx) idx[r] = last.i;
        if (score) score[r] = sign * last.s;
    }
}

void infl_topk_get(const infl_topk *t, int q, int64_t *top_idx, float *top_score, int64_t *bot_idx,
                   float *bot_score, int *count) {
    if (count) *count = 0;
    if (!t || q < 0 || q >= t->M) return;
    int n = t->n;
    if (count) *count = n;
    emit_sorted(t->top + (size_t)q * (size_t)t->k, n, 1.0f, top_idx, top_score);
    emit_sorted(t->bot + (size_t)q * (size_t)t->k, n, -1.0f, bot_idx, bot_score);
}
