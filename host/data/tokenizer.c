/*
 * tokenizer.c — bytes and byte-level BPE tokenizers (see tokenizer.h): the BPE
 * learner with incremental pair counts, and the codec that encodes by merge rank
 * and decodes token by token.
 */
#define _POSIX_C_SOURCE 200809L
#include "data/tokenizer.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void tok_init_bytes(infl_tokenizer *t) {
    memset(t, 0, sizeof *t);
    t->kind = INFL_TOK_BYTES;
    t->vocab = INFL_TOK_BASE_VOCAB;
    t->eot = INFL_TOK_EOT;
}

// ---- a hash map from a pair of token ids to an int32 ----

#define EMPTY_KEY UINT64_MAX

typedef struct {
    uint64_t *keys;  // (cap) (a << 32) | b, EMPTY_KEY when free
    int32_t *vals;   // (cap)
    size_t cap, n;   // cap a power of two, kept at least twice n
} pmap;

static inline uint64_t pkey(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static inline size_t phash(uint64_t k, size_t cap) {
    // splitmix64's finaliser
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ull;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebull;
    k ^= k >> 31;
    return (size_t)k & (cap - 1);
}

static int pmap_init(pmap *m, size_t want) {
    size_t cap = 1024;
    while (cap < 2 * want) cap *= 2;
    m->keys = malloc(cap * sizeof *m->keys);
    m->vals = malloc(cap * sizeof *m->vals);
    if (!m->keys || !m->vals) return -1;
    for (size_t i = 0; i < cap; i++) m->keys[i] = EMPTY_KEY;
    m->cap = cap;
    m->n = 0;
    return 0;
}

static void pmap_free(pmap *m) {
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
}

// The value of key k, or -1.
static inline int32_t pmap_get(const pmap *m, uint64_t k) {
    for (size_t i = phash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == k) return m->vals[i];
        if (m->keys[i] == EMPTY_KEY) return -1;
    }
}

static int pmap_grow(pmap *m) {
    pmap g;
    if (pmap_init(&g, m->cap) < 0) {
        pmap_free(&g);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == EMPTY_KEY) continue;
        size_t j = phash(m->keys[i], g.cap);
        while (g.keys[j] != EMPTY_KEY) j = (j + 1) & (g.cap - 1);
        g.keys[j] = m->keys[i];
        g.vals[j] = m->vals[i];
    }
    g.n = m->n;
    pmap_free(m);
    *m = g;
    return 0;
}

// Inserts k → v (k must be absent); -1 when out of memory.
static int pmap_put(pmap *m, uint64_t k, int32_t v) {
    if (2 * (m->n + 1) > m->cap && pmap_grow(m) < 0) return -1;
    size_t i = phash(k, m->cap);
    while (m->keys[i] != EMPTY_KEY) i = (i + 1) & (m->cap - 1);
    m->keys[i] = k;
    m->vals[i] = v;
    m->n++;
    return 0;
}

// ---- learning BPE ----

typedef struct {
    int32_t a, b;     // the pair
    int32_t cnt;      // its occurrences now
    int32_t npos, cap;
    int32_t stamp;    // the merge that last created occurrences of it (+1)
    int32_t *pos;     // (npos) positions of its left token, some stale
} pair_t;

typedef struct {
    int32_t cnt, pair;
} hent;

typedef struct {
    infl_ctx *ctx;
    int32_t *sym, *prv, *nxt;  // (n): token at each position (-1: merged away), its neighbours (-1: none)
    pair_t *P;
    int32_t np, pcap;
    pmap map;
    hent *heap;
    size_t hn, hcap;
    int32_t *fresh;            // pairs created by the current merge
    int32_t nfresh, freshcap;
} learner;

// Heap order: more occurrences first, then the smaller pair (first id, then second).
static inline int hbefore(const learner *L, hent x, hent y) {
    if (x.cnt != y.cnt) return x.cnt > y.cnt;
    const pair_t *p = &L->P[x.pair], *q = &L->P[y.pair];
    return p->a != q->a ? p->a < q->a : p->b < q->b;
}

static int hpush(learner *L, int32_t cnt, int32_t pair) {
    if (L->hn == L->hcap) {
        size_t cap = L->hcap ? 2 * L->hcap : 4096;
        hent *h = realloc(L->heap, cap * sizeof *h);
        if (!h) return -1;
        L->heap = h;
        L->hcap = cap;
    }
    hent e = {cnt, pair};
    size_t i = L->hn++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!hbefore(L, e, L->heap[up])) break;
        L->heap[i] = L->heap[up];
        i = up;
    }
    L->heap[i] = e;
    return 0;
}

static hent hpop(learner *L) {
    hent top = L->heap[0], e = L->heap[--L->hn];
    size_t i = 0, n = L->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && hbefore(L, L->heap[c + 1], L->heap[c])) c++;
        if (!hbefore(L, L->heap[c], e)) break;
        L->heap[i] = L->heap[c];
        i = c;
    }
    if (n) L->heap[i] = e;
    return top;
}

// One more occurrence of (a, b) at position `at`; the pair is created when new.
// Returns its index, or -1 when out of memory.
static int32_t pair_inc(learner *L, int32_t a, int32_t b, int32_t at, int32_t stamp) {
    uint64_t k = pkey(a, b);
    int32_t p = pmap_get(&L->map, k);
    if (p < 0) {
        if (L->np == L->pcap) {
            int32_t cap = L->pcap ? 2 * L->pcap : 4096;
            pair_t *q = realloc(L->P, (size_t)cap * sizeof *q);
            if (!q) return -1;
            L->P = q;
            L->pcap = cap;
        }
        p = L->np++;
        L->P[p] = (pair_t){a, b, 0, 0, 0, 0, NULL};
        if (pmap_put(&L->map, k, p) < 0) return -1;
    }
    pair_t *q = &L->P[p];
    if (q->npos == q->cap) {
        int32_t cap = q->cap ? 2 * q->cap : 4;
        int32_t *v = realloc(q->pos, (size_t)cap * sizeof *v);
        if (!v) return -1;
        q->pos = v;
        q->cap = cap;
    }
    q->pos[q->npos++] = at;
    q->cnt++;
    if (stamp && q->stamp != stamp) {
        // first new occurrence in this merge: remember to push it once the merge is done
        q->stamp = stamp;
        if (L->nfresh == L->freshcap) {
            int32_t cap = L->freshcap ? 2 * L->freshcap : 256;
            int32_t *f = realloc(L->fresh, (size_t)cap * sizeof *f);
            if (!f) return -1;
            L->fresh = f;
            L->freshcap = cap;
        }
        L->fresh[L->nfresh++] = p;
    }
    return p;
}

static inline void pair_dec(learner *L, int32_t a, int32_t b) {
    int32_t p = pmap_get(&L->map, pkey(a, b));
    if (p >= 0) L->P[p].cnt--;
}

static int cmp_i32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

static void learner_free(learner *L) {
    free(L->sym);
    free(L->prv);
    free(L->nxt);
    for (int32_t i = 0; i < L->np; i++) free(L->P[i].pos);
    free(L->P);
    pmap_free(&L->map);
    free(L->heap);
    free(L->fresh);
}

infl_status tok_learn_bpe(infl_ctx *ctx, const uint8_t *text, const int64_t *offsets, int64_t ndocs, int V,
                          int64_t min_count, infl_tokenizer *t, tok_learn_stats *st) {
    RETURN_IF(ctx, !t, INFL_E_ARG, "tok_learn_bpe: no tokenizer to fill");
    memset(t, 0, sizeof *t);
    RETURN_IF(ctx, V <= INFL_TOK_BASE_VOCAB || V > INFL_TOK_MAX_VOCAB, INFL_E_ARG,
              "BPE vocabulary %d: expected %d to %d (256 bytes, EOT and at least one merge)", V,
              INFL_TOK_BASE_VOCAB + 1, INFL_TOK_MAX_VOCAB);
    RETURN_IF(ctx, min_count < 1, INFL_E_ARG, "BPE: min_count %" PRId64 ", expected >= 1", min_count);
    RETURN_IF(ctx, ndocs < 0 || (ndocs > 0 && (!offsets || !text)), INFL_E_ARG, "BPE: no training documents given");
    const int64_t n = ndocs > 0 ? offsets[ndocs] - offsets[0] : 0;
    RETURN_IF(ctx, n > INT32_MAX - 1, INFL_E_ARG,
              "BPE: %" PRId64 " bytes of training text; at most %d can be learned on (use --limit)", n, INT32_MAX - 1);
    for (int64_t d = 0; d < ndocs; d++)
        RETURN_IF(ctx, offsets[d + 1] < offsets[d], INFL_E_ARG, "BPE: document %" PRId64 " has a negative length", d);
    double t0 = infl_now();
    infl_status rc = INFL_OK;
    learner L;
    memset(&L, 0, sizeof L);
    L.ctx = ctx;
    const int max_merges = V - INFL_TOK_BASE_VOCAB;
    t->merges = infl_malloc(ctx, (size_t)max_merges * 2 * sizeof(int32_t), "the BPE merges");
    L.sym = infl_malloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(int32_t), "the BPE training tokens");
    L.prv = infl_malloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(int32_t), "the BPE training tokens");
    L.nxt = infl_malloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(int32_t), "the BPE training tokens");
    GOTO_NOMEM_IF(!t->merges || !L.sym || !L.prv || !L.nxt);
    GOTO_IF(ctx, pmap_init(&L.map, 1 << 16) < 0, INFL_E_NOMEM, "out of memory for the BPE pair table");

    // the bytes, linked within each document, and every adjacent pair counted
    const uint8_t *base = ndocs > 0 ? text + offsets[0] : text;  // no documents: text may be NULL
    for (int64_t d = 0; d < ndocs; d++) {
        int32_t b = (int32_t)(offsets[d] - offsets[0]), e = (int32_t)(offsets[d + 1] - offsets[0]);
        for (int32_t i = b; i < e; i++) {
            L.sym[i] = base[i];
            L.prv[i] = i > b ? i - 1 : -1;
            L.nxt[i] = i + 1 < e ? i + 1 : -1;
            if (i + 1 < e) GOTO_IF(ctx, pair_inc(&L, base[i], base[i + 1], i, 0) < 0, INFL_E_NOMEM,
                                   "out of memory counting BPE pairs");
        }
    }
    for (int32_t p = 0; p < L.np; p++)
        GOTO_IF(ctx, hpush(&L, L.P[p].cnt, p) < 0, INFL_E_NOMEM, "out of memory for the BPE heap");

    int64_t tokens = n, last = 0;
    int m = 0;
    while (m < max_merges) {
        if ((m & 63) == 0) GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "BPE learning interrupted");
        // the most frequent pair: entries whose count has dropped since are pushed again
        int32_t p = -1;
        while (L.hn) {
            hent e = hpop(&L);
            if (L.P[e.pair].cnt == e.cnt) {
                p = e.pair;
                break;
            }
            if (L.P[e.pair].cnt > 0) GOTO_IF(ctx, hpush(&L, L.P[e.pair].cnt, e.pair) < 0, INFL_E_NOMEM,
                                            "out of memory for the BPE heap");
        }
        if (p < 0 || L.P[p].cnt < min_count) break;
        const int32_t a = L.P[p].a, b = L.P[p].b, c = INFL_TOK_BASE_VOCAB + m;
        t->merges[2 * m] = a;
        t->merges[2 * m + 1] = b;
        last = L.P[p].cnt;
        // every occurrence left to right; the position list goes (the pair never forms again)
        int32_t *pos = L.P[p].pos, npos = L.P[p].npos;
        L.P[p].pos = NULL;
        L.P[p].npos = L.P[p].cap = 0;
        qsort(pos, (size_t)npos, sizeof *pos, cmp_i32);
        L.nfresh = 0;
        for (int32_t k = 0; k < npos; k++) {
            int32_t i = pos[k];
            if (L.sym[i] != a) continue;  // stale: merged away, or into another token
            int32_t j = L.nxt[i];
            if (j < 0 || L.sym[j] != b) continue;
            int32_t pi = L.prv[i], nj = L.nxt[j];
            if (pi >= 0) pair_dec(&L, L.sym[pi], a);
            if (nj >= 0) pair_dec(&L, b, L.sym[nj]);
            L.P[p].cnt--;
            L.sym[i] = c;
            L.sym[j] = -1;
            L.nxt[i] = nj;
            if (nj >= 0) L.prv[nj] = i;
            int bad = (pi >= 0 && pair_inc(&L, L.sym[pi], c, pi, m + 1) < 0) ||
                      (nj >= 0 && pair_inc(&L, c, L.sym[nj], i, m + 1) < 0);
            if (bad) {
                free(pos);
                GOTO_IF(ctx, 1, INFL_E_NOMEM, "out of memory counting BPE pairs");
            }
            tokens--;
        }
        free(pos);
        for (int32_t k = 0; k < L.nfresh; k++) {
            int32_t q = L.fresh[k];
            if (L.P[q].cnt > 0)
                GOTO_IF(ctx, hpush(&L, L.P[q].cnt, q) < 0, INFL_E_NOMEM, "out of memory for the BPE heap");
        }
        m++;
    }
    t->kind = INFL_TOK_BPE;
    t->eot = INFL_TOK_EOT;
    t->n_merges = m;
    t->vocab = INFL_TOK_BASE_VOCAB + m;
    if (m == 0) {
        free(t->merges);
        t->merges = NULL;
    }
    if (st) {
        st->merges = m;
        st->last_count = last;
        st->tokens_before = n;
        st->tokens_after = tokens;
        st->seconds = infl_now() - t0;
    }
done:
    learner_free(&L);
    if (rc < 0) store_tok_clear(t);
    return rc;
}

// ---- the codec ----

struct tok_codec {
    int kind, vocab, n_merges;
    pmap rank;          // pair → merge rank
    int64_t *off;       // (vocab) start of each token's bytes in `bytes`
    int32_t *len;       // (vocab) their length
    uint8_t *bytes;
    // encoding scratch
    int32_t *sym, *prv, *nxt;
    uint64_t *heap;     // (rank << 32) | position, a min-heap
    size_t scap;        // positions the scratch holds
};

int tok_codec_vocab(const tok_codec *c) { return c->vocab; }

void tok_codec_free(tok_codec *c) {
    if (!c) return;
    pmap_free(&c->rank);
    free(c->off);
    free(c->len);
    free(c->bytes);
    free(c->sym);
    free(c->prv);
    free(c->nxt);
    free(c->heap);
    free(c);
}

infl_status tok_codec_create(infl_ctx *ctx, const infl_tokenizer *t, tok_codec **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "tok_codec_create: out is NULL");
    *out = NULL;
    FORWARD_IF_ERROR(store_tok_check(ctx, "tokenizer", t));
    infl_status rc = INFL_OK;
    tok_codec *c = infl_calloc(ctx, 1, sizeof *c, "a tokenizer");
    if (!c) return INFL_E_NOMEM;
    c->kind = t->kind;
    c->vocab = t->vocab;
    c->n_merges = t->n_merges;
    c->off = infl_malloc(ctx, (size_t)t->vocab * sizeof *c->off, "the token table");
    c->len = infl_malloc(ctx, (size_t)t->vocab * sizeof *c->len, "the token table");
    GOTO_NOMEM_IF(!c->off || !c->len);
    GOTO_IF(ctx, pmap_init(&c->rank, (size_t)t->n_merges) < 0, INFL_E_NOMEM, "out of memory for the merge table");
    // each token's bytes: a byte, EOT none, a merge its two parts'
    int64_t total = 256;
    for (int v = 0; v < t->vocab; v++) {
        int64_t l = v < 256 ? 1 : v == INFL_TOK_EOT ? 0
                                                   : (int64_t)c->len[t->merges[2 * (v - INFL_TOK_BASE_VOCAB)]] +
                                                         c->len[t->merges[2 * (v - INFL_TOK_BASE_VOCAB) + 1]];
        GOTO_IF(ctx, l > INT32_MAX || total + l > INT32_MAX, INFL_E_ARG,
                "tokenizer: the bytes of its %d tokens exceed 2 GiB (token %d)", t->vocab, v);
        c->len[v] = (int32_t)l;
        c->off[v] = v < 256 ? v : total;
        if (v >= 256) total += l;
    }
    c->bytes = infl_malloc(ctx, (size_t)total, "the token bytes");
    GOTO_NOMEM_IF(!c->bytes);
    for (int v = 0; v < 256; v++) c->bytes[v] = (uint8_t)v;
    for (int i = 0; i < t->n_merges; i++) {
        int32_t a = t->merges[2 * i], b = t->merges[2 * i + 1], v = INFL_TOK_BASE_VOCAB + i;
        memcpy(c->bytes + c->off[v], c->bytes + c->off[a], (size_t)c->len[a]);
        memcpy(c->bytes + c->off[v] + c->len[a], c->bytes + c->off[b], (size_t)c->len[b]);
        uint64_t k = pkey(a, b);
        // a pair merged twice keeps its first (lowest) rank; the later token is then never produced
        if (pmap_get(&c->rank, k) < 0)
            GOTO_IF(ctx, pmap_put(&c->rank, k, i) < 0, INFL_E_NOMEM, "out of memory for the merge table");
    }
done:
    if (rc < 0) {
        tok_codec_free(c);
        return rc;
    }
    *out = c;
    return INFL_OK;
}

static inline void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (h[up] <= v) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = v;
}

static inline uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = v;
    return top;
}

infl_status tok_encode(infl_ctx *ctx, tok_codec *c, const uint8_t *text, int64_t len, int32_t *ids, int64_t *n) {
    RETURN_IF(ctx, !c || !n || len < 0 || (len > 0 && (!text || !ids)), INFL_E_ARG, "tok_encode: bad arguments");
    *n = 0;
    if (c->n_merges == 0) {
        for (int64_t i = 0; i < len; i++) ids[i] = text[i];
        *n = len;
        return INFL_OK;
    }
    RETURN_IF(ctx, len > INT32_MAX - 1, INFL_E_ARG, "tok_encode: a text of %" PRId64 " bytes; at most %d", len,
              INT32_MAX - 1);
    if ((size_t)len > c->scap) {
        size_t cap = (size_t)len + (size_t)len / 2 + 64;
        int32_t *s = realloc(c->sym, cap * sizeof *s);
        if (s) c->sym = s;
        int32_t *p = realloc(c->prv, cap * sizeof *p);
        if (p) c->prv = p;
        int32_t *x = realloc(c->nxt, cap * sizeof *x);
        if (x) c->nxt = x;
        uint64_t *h = realloc(c->heap, 3 * cap * sizeof *h);
        if (h) c->heap = h;
        RETURN_IF(ctx, !s || !p || !x || !h, INFL_E_NOMEM, "out of memory encoding %" PRId64 " bytes", len);
        c->scap = cap;
    }
    int32_t *sym = c->sym, *prv = c->prv, *nxt = c->nxt;
    uint64_t *h = c->heap;
    size_t hn = 0;
    const int32_t L = (int32_t)len;
    for (int32_t i = 0; i < L; i++) {
        sym[i] = text[i];
        prv[i] = i - 1;
        nxt[i] = i + 1 < L ? i + 1 : -1;
    }
    for (int32_t i = 0; i + 1 < L; i++) {
        int32_t r = pmap_get(&c->rank, pkey(sym[i], sym[i + 1]));
        if (r >= 0) heap_push(h, &hn, ((uint64_t)r << 32) | (uint32_t)i);
    }
    // the lowest-ranked adjacent pair first, leftmost first; a merge's new pairs rank later
    while (hn) {
        uint64_t e = heap_pop(h, &hn);
        int32_t r = (int32_t)(e >> 32), i = (int32_t)(uint32_t)e;
        if (sym[i] < 0) continue;
        int32_t j = nxt[i];
        if (j < 0 || pmap_get(&c->rank, pkey(sym[i], sym[j])) != r) continue;  // stale
        int32_t v = INFL_TOK_BASE_VOCAB + r, nj = nxt[j], pi = prv[i];
        sym[i] = v;
        sym[j] = -1;
        nxt[i] = nj;
        if (nj >= 0) prv[nj] = i;
        if (pi >= 0) {
            int32_t r2 = pmap_get(&c->rank, pkey(sym[pi], v));
            if (r2 >= 0) heap_push(h, &hn, ((uint64_t)r2 << 32) | (uint32_t)pi);
        }
        if (nj >= 0) {
            int32_t r2 = pmap_get(&c->rank, pkey(v, sym[nj]));
            if (r2 >= 0) heap_push(h, &hn, ((uint64_t)r2 << 32) | (uint32_t)i);
        }
    }
    int64_t k = 0;
    for (int32_t i = L > 0 ? 0 : -1; i >= 0; i = nxt[i]) ids[k++] = sym[i];
    *n = k;
    return INFL_OK;
}

infl_status tok_decode(infl_ctx *ctx, const tok_codec *c, const int32_t *ids, int64_t n, uint8_t *out, size_t cap,
                       size_t *nbytes) {
    RETURN_IF(ctx, !c || !nbytes || n < 0 || (n > 0 && !ids) || (cap > 0 && !out), INFL_E_ARG,
              "tok_decode: bad arguments");
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        RETURN_IF(ctx, ids[i] < 0 || ids[i] >= c->vocab, INFL_E_VALUE,
                  "decoding: token %" PRId32 " at position %" PRId64 " is outside the vocabulary [0, %d)", ids[i], i,
                  c->vocab);
        size_t l = (size_t)c->len[ids[i]];
        if (at < cap) memcpy(out + at, c->bytes + c->off[ids[i]], at + l <= cap ? l : cap - at);
        at += l;
    }
    *nbytes = at;
    return INFL_OK;
}

const uint8_t *tok_token_bytes(const tok_codec *c, int32_t id, int *len) {
    if (!c || id < 0 || id >= c->vocab) return NULL;
    if (len) *len = c->len[id];
    return c->bytes + c->off[id];
}
