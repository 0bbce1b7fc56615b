/*
 * rng.h — the counter-based random generator of DESIGN.md: Philox4x32-10 (Salmon et
 * al., SC'11) keyed by the seed, with the counter (stream, index, draw). Pure
 * functions of their arguments, written once for host and device (INFL_HD marks them
 * __host__ __device__ under nvcc), so CPU and GPU runs draw the same numbers
 * whatever the order, thread or shard in which they are asked for.
 *
 * Streams keep different uses apart: the same (seed, index, draw) in two streams
 * gives unrelated numbers.
 */
#ifndef INFL_RNG_H
#define INFL_RNG_H

#include <stdint.h>

#ifdef __CUDACC__
#define INFL_HD __host__ __device__
#else
#define INFL_HD
#endif

enum {
    INFL_RNG_INIT = 1,      // weight initialisation: index = parameter, draw = 0
    INFL_RNG_SHUFFLE = 2,   // shard order and in-shard shuffles
    INFL_RNG_FLIP = 3,      // label noise at import
    INFL_RNG_LABELS = 4,    // labels sampled from the model (true Fisher)
    INFL_RNG_SPLIT = 5,     // train/test split at import
    INFL_RNG_SUBSET = 6,    // subsets (LDS, LOO samples)
    INFL_RNG_SYNTH = 7,     // synthetic data sets (infl synth): class means, labels, noise
    INFL_RNG_GENERATE = 8,  // sampling a language model's completion: index = position
};

typedef struct {
    uint32_t v[4];
} infl_rng4;

static inline INFL_HD uint32_t infl_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

// Philox4x32-10 of counter (c0..c3) under key (k0, k1).
static inline INFL_HD infl_rng4 infl_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                            uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = infl_mulhilo32(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = infl_mulhilo32(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    infl_rng4 out = {{c0, c1, c2, c3}};
    return out;
}

// Four 32-bit words for (seed, stream, index, draw).
static inline INFL_HD infl_rng4 infl_rng_words(uint64_t seed, uint32_t stream, uint64_t index,
                                               uint32_t draw) {
    return infl_philox((uint32_t)index, (uint32_t)(index >> 32), draw, stream, (uint32_t)seed,
                       (uint32_t)(seed >> 32));
}

// A double uniform in [0, 1) with 53 random bits.
static inline INFL_HD double infl_rng_uniform(uint64_t seed, uint32_t stream, uint64_t index,
                                              uint32_t draw) {
    infl_rng4 w = infl_rng_words(seed, stream, index, draw);
    uint64_t bits = ((uint64_t)w.v[0] << 21) ^ ((uint64_t)w.v[1] >> 11);
    return (double)(bits & ((1ull << 53) - 1)) * 0x1.0p-53;
}

// A whole number uniform in [0, n) (n >= 1), by the multiply-shift of 64 random bits.
static inline INFL_HD uint64_t infl_rng_below(uint64_t seed, uint32_t stream, uint64_t index,
                                              uint32_t draw, uint64_t n) {
    infl_rng4 w = infl_rng_words(seed, stream, index, draw);
    uint64_t x = ((uint64_t)w.v[2] << 32) | w.v[3];
#ifdef __CUDA_ARCH__
    return __umul64hi(x, n);  // the same high word, without a 128-bit type on the device
#else
    return (uint64_t)(((unsigned __int128)x * n) >> 64);
#endif
}

// A standard normal by Box-Muller from two uniforms of the same counter.
static inline INFL_HD double infl_rng_normal(uint64_t seed, uint32_t stream, uint64_t index,
                                             uint32_t draw);

#ifndef __CUDACC__
#include <math.h>
#endif
static inline INFL_HD double infl_rng_normal(uint64_t seed, uint32_t stream, uint64_t index,
                                             uint32_t draw) {
    infl_rng4 w = infl_rng_words(seed, stream, index, draw);
    double u1 = ((double)w.v[0] + 1.0) * 0x1.0p-32;  // (0, 1]
    double u2 = (double)w.v[1] * 0x1.0p-32;          // [0, 1)
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
