/*
 * reader.c — the scheduler's shard reader thread (see reader.h).
 *
 * A ring of nbuf slots, filled and handed out in stream order: shard s lives in slot
 * s mod nbuf. A slot moves FREE → READING (the thread reads into it, without the
 * lock) → READY → OUT (the consumer holds it) → FREE (released). One mutex guards the
 * slot states and counters; the thread waits on `freed` for its next slot, the
 * consumer on `ready` for its next shard. The thread has a private context for its
 * store calls, so it never writes into the consumer's; an error's status and detail
 * cross over under the mutex, at the stream position where it happened.
 */
#define _POSIX_C_SOURCE 200809L
#include "reader.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BUF 3
// While a cancel flag is installed, next() wakes this often to look at it.
#define CANCEL_POLL_NS 20000000L

enum { SLOT_FREE, SLOT_READING, SLOT_READY, SLOT_OUT };

struct infl_reader {
    infl_split *split;
    int64_t shard_rows;  // rows per shard (the last may be shorter)
    int64_t begin, end;  // rows [begin, end) of the split's selected range
    int nbuf;
    int T;               // documents: tokens kept per document (0: a rows split)
    infl_host_alloc_fn alloc;
    infl_host_free_fn free_fn;
    void *user;
    void *mem[MAX_BUF];         // one allocation per slot: x, then y or yf
    infl_shard slot[MAX_BUF];
    infl_shard end_marker;      // n = 0

    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t ready;  // a slot became READY, or the thread finished
    pthread_cond_t freed;  // a slot became FREE, or stop was asked
    // guarded by mu:
    int state[MAX_BUF];
    int stop;             // asked to stop (infl_reader_stop, or cancelled)
    int cancelled;        // stopped by the cancel flag: next() keeps saying so
    int finished;         // the thread has left its loop
    infl_status err;      // the thread's error, with its detail in tctx
    double read_s, wait_s;
    // consumer only:
    int64_t next_give;    // the next shard (sequence number) to hand out

    struct infl_ctx tctx;  // the thread's private context (only its detail is used)
};

// ---- the thread ----

static void *reader_main(void *arg) {
    infl_reader *r = arg;
    int64_t row = r->begin, seq = 0;
    pthread_mutex_lock(&r->mu);
    while (row < r->end) {
        int s = (int)(seq % r->nbuf);
        while (!r->stop && r->state[s] != SLOT_FREE) pthread_cond_wait(&r->freed, &r->mu);
        if (r->stop) break;
        r->state[s] = SLOT_READING;
        pthread_mutex_unlock(&r->mu);

        // Read rows [row, row + n) into slot s, outside the lock.
        infl_shard *sh = &r->slot[s];
        int64_t n = r->end - row < r->shard_rows ? r->end - row : r->shard_rows;
        double t0 = infl_now();
        infl_status rc = r->T ? store_split_read_docs(&r->tctx, r->split, row, n, r->T, 0, sh->tok, sh->len, sh->y)
                              : store_split_read(&r->tctx, r->split, row, n, sh->x, sh->y, sh->yf);
        double dt = infl_now() - t0;

        pthread_mutex_lock(&r->mu);
        r->read_s += dt;
        if (rc < 0) {
            r->state[s] = SLOT_FREE;
            r->err = rc;
            break;
        }
        sh->row0 = row;
        sh->n = n;
        r->state[s] = SLOT_READY;
        pthread_cond_signal(&r->ready);
        row += n;
        seq++;
    }
    r->finished = 1;
    pthread_cond_broadcast(&r->ready);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

// ---- start / stop ----

static void free_buffers(infl_reader *r) {
    for (int i = 0; i < MAX_BUF; i++) {
        if (!r->mem[i]) continue;
        if (r->alloc)
            r->free_fn(r->mem[i], r->user);
        else
            free(r->mem[i]);
        r->mem[i] = NULL;
    }
}

static infl_status start(infl_ctx *ctx, infl_split *split, int64_t shard_rows, int nbuf, int64_t begin, int64_t end,
                         int T, infl_host_alloc_fn alloc, infl_host_free_fn free_fn, void *user, infl_reader **out) {
    RETURN_IF(ctx, !out, INFL_E_ARG, "infl_reader_start: out is NULL");
    *out = NULL;
    RETURN_IF(ctx, !split, INFL_E_ARG, "infl_reader_start: no split");
    const infl_split_info *in = store_split_info(split);
    const char *ref = store_split_ref(split);
    RETURN_IF(ctx, nbuf < 2 || nbuf > MAX_BUF, INFL_E_ARG, "%s: the shard reader takes 2 or 3 buffers, not %d", ref,
              nbuf);
    RETURN_IF(ctx, shard_rows < 1, INFL_E_ARG, "%s: shards of %" PRId64 " rows; expected at least 1", ref,
              shard_rows);
    RETURN_IF(ctx, !alloc != !free_fn, INFL_E_ARG,
              "infl_reader_start: give both an allocator and its free function, or neither");
    if (end < 0) end = in->n;
    RETURN_IF(ctx, begin < 0 || begin > end || end > in->n, INFL_E_ARG,
              "%s: cannot stream rows [%" PRId64 ":%" PRId64 "] of a range of %" PRId64 " rows", ref, begin, end,
              in->n);

    int docs = in->kind == INFL_SPLIT_DOCS;
    RETURN_IF(ctx, docs != (T > 0), INFL_E_ARG,
              docs ? "%s: a documents split is streamed with infl_reader_start_docs"
                   : "%s: a rows split is streamed with infl_reader_start",
              ref);
    // One buffer: rows × (d + k) values of 4 bytes (x float32, y int32 or yf float32);
    // documents: rows × (T + 2) (tokens, lengths, labels; all int32).
    int64_t rows = end - begin < shard_rows ? end - begin : shard_rows;
    int64_t width = docs ? (int64_t)T + 2 : in->d + in->k;
    RETURN_IF(ctx, rows > 0 && width > (int64_t)(SIZE_MAX / 4 / (uint64_t)rows), INFL_E_NOMEM,
              "%s: shards of %" PRId64 " rows x %" PRId64 " values do not fit in memory", ref, rows, width);
    size_t bytes = (size_t)rows * (size_t)width * 4;

    infl_reader *r = infl_calloc(ctx, 1, sizeof *r, "a shard reader");
    if (!r) return INFL_E_NOMEM;
    r->split = split;
    r->shard_rows = shard_rows;
    r->begin = begin;
    r->end = end;
    r->nbuf = nbuf;
    r->T = T;
    r->alloc = alloc;
    r->free_fn = free_fn;
    r->user = user;
    infl_status rc = INFL_OK;
    int mu_ok = 0, ready_ok = 0, freed_ok = 0;
    pthread_condattr_t ca;
    int ca_ok = 0;

    for (int i = 0; i < nbuf && rows > 0; i++) {
        r->mem[i] = alloc ? alloc(bytes, user) : malloc(bytes);
        GOTO_IF(ctx, !r->mem[i], INFL_E_NOMEM, "%s: out of memory allocating shard buffer %d of %d (%zu bytes)", ref,
                i + 1, nbuf, bytes);
        infl_shard *sh = &r->slot[i];
        if (docs) {
            sh->T = T;
            sh->tok = r->mem[i];
            sh->len = sh->tok + (size_t)rows * (size_t)T;
            sh->y = sh->len + rows;
            continue;
        }
        sh->x = r->mem[i];
        void *tail = sh->x + (size_t)rows * (size_t)in->d;
        if (in->y_kind == INFL_Y_CLASS)
            sh->y = tail;
        else
            sh->yf = tail;
    }

    // `ready` waits with a timeout on the monotonic clock while a cancel flag is set.
    GOTO_IF(ctx, pthread_condattr_init(&ca) != 0, INFL_E_INTERNAL, "shard reader: pthread_condattr_init failed");
    ca_ok = 1;
    GOTO_IF(ctx, pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0, INFL_E_INTERNAL,
            "shard reader: pthread_condattr_setclock failed");
    GOTO_IF(ctx, pthread_mutex_init(&r->mu, NULL) != 0, INFL_E_INTERNAL, "shard reader: pthread_mutex_init failed");
    mu_ok = 1;
    GOTO_IF(ctx, pthread_cond_init(&r->ready, &ca) != 0, INFL_E_INTERNAL, "shard reader: pthread_cond_init failed");
    ready_ok = 1;
    GOTO_IF(ctx, pthread_cond_init(&r->freed, NULL) != 0, INFL_E_INTERNAL, "shard reader: pthread_cond_init failed");
    freed_ok = 1;
    int e = pthread_create(&r->thread, NULL, reader_main, r);
    GOTO_IF(ctx, e != 0, INFL_E_INTERNAL, "%s: cannot start the shard reader thread: %s", ref, strerror(e));
    r->started = 1;
done:
    if (ca_ok) pthread_condattr_destroy(&ca);
    if (rc < 0) {
        if (freed_ok) pthread_cond_destroy(&r->freed);
        if (ready_ok) pthread_cond_destroy(&r->ready);
        if (mu_ok) pthread_mutex_destroy(&r->mu);
        free_buffers(r);
        free(r);
        return rc;
    }
    *out = r;
    return INFL_OK;
}

infl_status infl_reader_start(infl_ctx *ctx, infl_split *split, int64_t shard_rows, int nbuf, int64_t begin,
                              int64_t end, infl_host_alloc_fn alloc, infl_host_free_fn free_fn, void *user,
                              infl_reader **out) {
    return start(ctx, split, shard_rows, nbuf, begin, end, 0, alloc, free_fn, user, out);
}

infl_status infl_reader_start_docs(infl_ctx *ctx, infl_split *split, int64_t shard_rows, int nbuf, int64_t begin,
                                   int64_t end, int T, infl_host_alloc_fn alloc, infl_host_free_fn free_fn,
                                   void *user, infl_reader **out) {
    RETURN_IF(ctx, T < 1, INFL_E_ARG, "%s: documents streamed in %d tokens; expected at least 1",
              split ? store_split_ref(split) : "?", T);
    return start(ctx, split, shard_rows, nbuf, begin, end, T, alloc, free_fn, user, out);
}

void infl_reader_stop(infl_reader *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->freed);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->freed);
    pthread_cond_destroy(&r->ready);
    pthread_mutex_destroy(&r->mu);
    free_buffers(r);
    free(r);
}

// ---- consuming ----

// Waits on `ready` for at most CANCEL_POLL_NS.
static void wait_ready_briefly(infl_reader *r) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += CANCEL_POLL_NS;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&r->ready, &r->mu, &ts);
}

infl_status infl_reader_next(infl_ctx *ctx, infl_reader *r, infl_shard **shard) {
    RETURN_IF(ctx, !shard, INFL_E_ARG, "infl_reader_next: shard is NULL");
    *shard = NULL;
    RETURN_IF(ctx, !r, INFL_E_ARG, "infl_reader_next: no reader");
    const char *ref = store_split_ref(r->split);
    int s = (int)(r->next_give % r->nbuf);
    infl_status rc = INFL_OK;
    double t0 = infl_now();
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (!r->cancelled && infl_cancelled(ctx)) {
            // Stop the thread; it finishes its current read and exits.
            r->cancelled = r->stop = 1;
            pthread_cond_broadcast(&r->freed);
        }
        if (r->cancelled) {
            rc = infl_seterr(ctx, INFL_E_INTERRUPTED, "interrupted while reading %s", ref);
            break;
        }
        if (r->state[s] == SLOT_READY) {
            r->state[s] = SLOT_OUT;
            r->next_give++;
            *shard = &r->slot[s];
            break;
        }
        if (r->state[s] == SLOT_OUT) {
            rc = infl_seterr(ctx, INFL_E_ARG,
                             "%s: all %d shard buffers are held; release one before asking for the next shard", ref,
                             r->nbuf);
            break;
        }
        if (r->finished) {
            if (r->err < 0)
                rc = infl_seterr(ctx, r->err, "%s", r->tctx.detail);
            else if (r->stop)
                rc = infl_seterr(ctx, INFL_E_ARG, "%s: the shard reader was stopped", ref);
            else
                *shard = &r->end_marker;
            break;
        }
        if (ctx->cancel)
            wait_ready_briefly(r);
        else
            pthread_cond_wait(&r->ready, &r->mu);
    }
    r->wait_s += infl_now() - t0;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void infl_reader_release(infl_reader *r, infl_shard *shard) {
    if (!r || !shard || shard == &r->end_marker) return;
    int s = (int)(shard - r->slot);
    if (s < 0 || s >= r->nbuf) return;
    pthread_mutex_lock(&r->mu);
    if (r->state[s] == SLOT_OUT) {
        r->state[s] = SLOT_FREE;
        pthread_cond_signal(&r->freed);
    }
    pthread_mutex_unlock(&r->mu);
}

void infl_reader_stats(const infl_reader *r, double *read_s, double *wait_s) {
    if (read_s) *read_s = 0;
    if (wait_s) *wait_s = 0;
    if (!r) return;
    // The counters are guarded by the mutex; locking does not change what r means.
    infl_reader *m = (infl_reader *)r;
    pthread_mutex_lock(&m->mu);
    if (read_s) *read_s = m->read_s;
    if (wait_s) *wait_s = m->wait_s;
    pthread_mutex_unlock(&m->mu);
}
