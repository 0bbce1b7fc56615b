/*
 * pool.cu — the context-owned caching allocator of device memory behind the CUDA
 * backend's alloc and release. cudaMalloc and cudaFree synchronise the device and
 * cost tens of microseconds, and the estimators allocate scratch per shard, so
 * released blocks are kept in free lists by size class and handed out again;
 * cudaMalloc is called only when no cached block fits, and cudaFree only when the
 * device runs out (the cached blocks are given back and the allocation retried) and
 * at shutdown.
 *
 * Size classes: 512 bytes, then four steps per octave (waste at most 25%) up to
 * 32 MiB; larger blocks are rounded to 2 MiB and reused best-fit when at most 1/8
 * larger than asked for. Every block is in one open-addressing hash keyed by its
 * pointer, so release finds its size in O(1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define CU_TOMB ((void *)1)

// ---- size classes ----

// The class of a request of `bytes` (<= CU_POOL_LARGE) and the size it rounds to.
static int cls_of(size_t bytes, size_t *size) {
    if (bytes <= 512) {
        *size = 512;
        return 0;
    }
    int e = 63 - __builtin_clzll((unsigned long long)(bytes - 1));  // 2^e <= bytes-1 < 2^(e+1), e >= 9
    size_t base = (size_t)1 << e, step = base >> 2;
    size_t q = (bytes - base + step - 1) / step;  // 1..4
    *size = base + q * step;
    return 1 + (e - 9) * 4 + (int)(q - 1);
}

// ---- the block table ----

static size_t slot_of(const cu_pool *p, const void *ptr) {
    uint64_t h = (uint64_t)(uintptr_t)ptr >> 8;  // blocks are at least 256-byte aligned
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29)) & (p->cap - 1);
}

static cu_block *find(const cu_pool *p, const void *ptr) {
    if (!p->cap) return NULL;
    for (size_t i = slot_of(p, ptr), n = 0; n < p->cap; i = (i + 1) & (p->cap - 1), n++) {
        if (p->tab[i].ptr == NULL) return NULL;
        if (p->tab[i].ptr == ptr) return &p->tab[i];
    }
    return NULL;
}

// Grows (or just cleans of deleted slots) the table; false when out of host memory.
static bool rehash(cu_pool *p, size_t cap) {
    cu_block *old = p->tab;
    size_t ocap = p->cap;
    cu_block *tab = (cu_block *)calloc(cap, sizeof *tab);
    if (!tab) return false;
    p->tab = tab;
    p->cap = cap;
    p->used = 0;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].ptr == NULL || old[i].ptr == CU_TOMB) continue;
        size_t j = slot_of(p, old[i].ptr);
        while (tab[j].ptr) j = (j + 1) & (cap - 1);
        tab[j] = old[i];
        p->used++;
    }
    free(old);
    return true;
}

static bool insert(cu_pool *p, void *ptr, size_t bytes) {
    if ((p->used + 1) * 2 > p->cap) {
        size_t live = 0;
        for (size_t i = 0; i < p->cap; i++) live += p->tab[i].ptr && p->tab[i].ptr != CU_TOMB;
        size_t cap = p->cap ? p->cap : 64;
        while ((live + 1) * 2 > cap / 2) cap *= 2;  // at most a quarter full after
        if (!rehash(p, cap)) return false;
    }
    size_t i = slot_of(p, ptr);
    while (p->tab[i].ptr && p->tab[i].ptr != CU_TOMB) i = (i + 1) & (p->cap - 1);
    if (!p->tab[i].ptr) p->used++;
    p->tab[i].ptr = ptr;
    p->tab[i].bytes = bytes;
    p->tab[i].state = CU_BLOCK_LIVE;
    return true;
}

static bool push(cu_stack *s, void *ptr) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        void **np = (void **)realloc(s->ptr, cap * sizeof *np);
        if (!np) return false;
        s->ptr = np;
        s->cap = cap;
    }
    s->ptr[s->n++] = ptr;
    return true;
}

// ---- freeing ----

// cudaFree where no error can be returned (release, destroy): a failure is cleared so
// that it is not reported later by an unrelated call. (A sticky error, from a kernel
// that faulted, stays: every later call then reports it, with its own name.)
static void free_quiet(void *ptr) {
    if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

// ---- the pool ----

void cu_pool_init(cu_pool *p) { memset(p, 0, sizeof *p); }

infl_status cu_pool_alloc(infl_ctx *ctx, cu_pool *p, size_t bytes, void **out) {
    size_t size;
    int c = -1;
    if (bytes <= CU_POOL_LARGE) {
        c = cls_of(bytes, &size);
    } else {
        RETURN_IF(ctx, bytes > SIZE_MAX - CU_POOL_LARGE_ROUND, INFL_E_NOMEM,
                  "CUDA: cannot allocate %zu bytes of device memory", bytes);
        size = (bytes + CU_POOL_LARGE_ROUND - 1) / CU_POOL_LARGE_ROUND * CU_POOL_LARGE_ROUND;
    }
    // a cached block of the class, or the best-fitting cached large block
    void *ptr = NULL;
    if (c >= 0 && p->cls[c].n) {
        ptr = p->cls[c].ptr[--p->cls[c].n];
    } else if (c < 0) {
        size_t best = (size_t)-1, bi = 0;
        for (size_t i = 0; i < p->large.n; i++) {
            const cu_block *b = find(p, p->large.ptr[i]);
            if (b && b->bytes >= size && b->bytes - size <= size / 8 && b->bytes < best) {
                best = b->bytes;
                bi = i;
            }
        }
        if (best != (size_t)-1) {
            ptr = p->large.ptr[bi];
            p->large.ptr[bi] = p->large.ptr[--p->large.n];
        }
    }
    if (ptr) {
        cu_block *b = find(p, ptr);
        b->state = CU_BLOCK_LIVE;
        p->bytes_cached -= b->bytes;
        p->bytes_live += b->bytes;
        *out = ptr;
        return INFL_OK;
    }
    // none cached: ask the device, and once more after giving the cache back
    cudaError_t e = cudaMalloc(&ptr, size);
    if (e == cudaErrorMemoryAllocation && p->bytes_cached) {
        (void)cudaGetLastError();  // clear the (non-sticky) error
        cudaError_t et = cu_pool_trim(p);
        if (et != cudaSuccess) return cu_fail_rt(ctx, et, "cudaFree (giving cached blocks back)", __FILE__, __LINE__);
        e = cudaMalloc(&ptr, size);
    }
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) (void)cudaGetLastError();
        return infl_seterr(ctx, INFL_E_NOMEM,
                           "CUDA device out of memory allocating %zu bytes (%.1f MiB; %.1f MiB in use by this "
                           "context, %.1f of %.1f MiB free on the device)",
                           bytes, bytes / 1048576.0, p->bytes_live / 1048576.0, fr / 1048576.0, tot / 1048576.0);
    }
    if (e != cudaSuccess) return cu_fail_rt(ctx, e, "cudaMalloc(&ptr, size)", __FILE__, __LINE__);
    if (!insert(p, ptr, size)) {
        free_quiet(ptr);
        return infl_seterr(ctx, INFL_E_NOMEM, "out of host memory recording a device block of %zu bytes", bytes);
    }
    p->n_malloc++;
    p->bytes_live += size;
    *out = ptr;
    return INFL_OK;
}

void cu_pool_release(cu_pool *p, void *ptr) {
    if (!ptr) return;
    cu_block *b = find(p, ptr);
    if (!b || b->state != CU_BLOCK_LIVE) return;  // not ours, or released twice: ignore
    size_t size;
    cu_stack *s = b->bytes <= CU_POOL_LARGE ? &p->cls[cls_of(b->bytes, &size)] : &p->large;
    p->bytes_live -= b->bytes;
    if (!push(s, ptr)) {  // no host memory for the free list: give the block back instead
        free_quiet(ptr);
        b->ptr = CU_TOMB;
        return;
    }
    b->state = CU_BLOCK_CACHED;
    p->bytes_cached += b->bytes;
}

void cu_pool_discard(cu_pool *p, void *ptr) {
    cu_block *b = ptr ? find(p, ptr) : NULL;
    if (!b || b->state != CU_BLOCK_LIVE) return;
    p->bytes_live -= b->bytes;
    free_quiet(ptr);  // cudaFree waits for the device's work on the block first
    b->ptr = CU_TOMB;
}

size_t cu_pool_block_bytes(const cu_pool *p, const void *ptr) {
    const cu_block *b = ptr ? find(p, ptr) : NULL;
    return b && b->state == CU_BLOCK_LIVE ? b->bytes : 0;
}

cudaError_t cu_pool_trim(cu_pool *p) {
    cudaError_t first = cudaSuccess;
    for (size_t i = 0; i < p->cap; i++) {
        cu_block *b = &p->tab[i];
        if (b->ptr && b->ptr != CU_TOMB && b->state == CU_BLOCK_CACHED) {
            cudaError_t e = cudaFree(b->ptr);
            if (e != cudaSuccess && first == cudaSuccess) first = e;
            b->ptr = CU_TOMB;
        }
    }
    if (first != cudaSuccess) (void)cudaGetLastError();  // reported by the caller, not by the next call
    for (int c = 0; c < CU_POOL_CLASSES; c++) p->cls[c].n = 0;
    p->large.n = 0;
    p->bytes_cached = 0;
    return first;
}

void cu_pool_destroy(cu_pool *p) {
    for (size_t i = 0; i < p->cap; i++)
        if (p->tab[i].ptr && p->tab[i].ptr != CU_TOMB) free_quiet(p->tab[i].ptr);
    free(p->tab);
    for (int c = 0; c < CU_POOL_CLASSES; c++) free(p->cls[c].ptr);
    free(p->large.ptr);
    memset(p, 0, sizeof *p);
}
