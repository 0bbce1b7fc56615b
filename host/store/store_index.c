/*
 * store_index.c — gradient index files (format "index", store.h): a writer that
 * resumes from its own partial file (path.partial, with a rows_done attribute flushed
 * after every shard) and a reader of complete indexes. φ is stored as IEEE half (a
 * 2-byte HDF5 float that h5py reads as float16) or float32, chunked by rows; whole rows
 * convert by the CPU's F16C instructions where it has them (x86-64), else one value at a time.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"
#include "store_private.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define INFL_F16C 1
#endif

#define INDEX_CHUNK_BYTES (1u << 20)

// ---- float16 ----

uint16_t infl_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0));  // Inf, NaN
    if (mag >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds beyond 65504: Inf
    if (mag < 0x38800000u) {
        // subnormal half (or zero): the value in units of 2^-24, rounded to nearest even
        if (mag < 0x33000000u) return (uint16_t)sign;  // below half the smallest subnormal
        uint32_t e = mag >> 23, m = (mag & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e;  // v / 2^-24 = m · 2^(e − 126), e in [102, 112]: shift 14 to 24
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    // normal: rebias the exponent (127 → 15), round the mantissa to 10 bits
    uint32_t h = ((mag - 0x38000000u) >> 13), rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float infl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, x;
    if (e == 0) {
        float v = (float)m * 0x1.0p-24f;  // zero or subnormal
        return sign ? -v : v;
    }
    if (e == 31) x = sign | 0x7f800000u | (m << 13);
    else x = sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#ifdef INFL_F16C
// F16C converts 8 values at a time, rounding to nearest even as infl_f32_to_f16 does (the same
// bits for every non-NaN float; a NaN stays a NaN), and back exactly.
__attribute__((target("avx,f16c"))) static size_t f32_to_f16_x86(uint16_t *out, const float *in, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
__attribute__((target("avx,f16c"))) static size_t f16_to_f32_x86(float *out, const uint16_t *in, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    return i;
}
// CPUID leaf 1: ECX bit 29 F16C, bit 28 AVX, bit 27 OSXSAVE; and the OS saves the YMM state
// (XCR0 bits 1 and 2). (gcc's __builtin_cpu_supports knows "f16c", clang 14's does not.)
static int have_f16c(void) {
    static int known = -1;
    if (known >= 0) return known;
    unsigned a, b, c, d;
    int ok = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1) && (c >> 28 & 1) && (c >> 27 & 1);
    if (ok) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        ok = (lo & 6u) == 6u;
    }
    known = ok;
    return known;
}
#endif

void infl_f32_to_f16_n(uint16_t *out, const float *in, size_t n) {
    size_t i = 0;
#ifdef INFL_F16C
    if (have_f16c()) i = f32_to_f16_x86(out, in, n);
#endif
    for (; i < n; i++) out[i] = infl_f32_to_f16(in[i]);
}

void infl_f16_to_f32_n(float *out, const uint16_t *in, size_t n) {
    size_t i = 0;
#ifdef INFL_F16C
    if (have_f16c()) i = f16_to_f32_x86(out, in, n);
#endif
    for (; i < n; i++) out[i] = infl_f16_to_f32(in[i]);
}

// The file type of IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
static hid_t half_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

// ---- attributes shared by the writer's check and the reader ----

static infl_status write_info(infl_ctx *ctx, const char *path, hid_t f, const infl_index_info *in) {
    FORWARD_IF_ERROR(h5u_wattr_str(ctx, path, f, "root", "run", in->run));
    FORWARD_IF_ERROR(h5u_wattr_str(ctx, path, f, "root", "data", in->data));
    FORWARD_IF_ERROR(h5u_wattr_str(ctx, path, f, "root", "model", in->model));
    FORWARD_IF_ERROR(h5u_wattr_str(ctx, path, f, "root", "projection", in->projection));
    FORWARD_IF_ERROR(h5u_wattr_u64(ctx, path, f, "root", "seed", in->seed));
    FORWARD_IF_ERROR(h5u_wattr_i64(ctx, path, f, "root", "dim", in->k));
    FORWARD_IF_ERROR(h5u_wattr_i64(ctx, path, f, "root", "kron_out", in->kron_out));
    FORWARD_IF_ERROR(h5u_wattr_i64(ctx, path, f, "root", "kron_in", in->kron_in));
    if (in->L > 0) FORWARD_IF_ERROR(h5u_wattr_i32s(ctx, path, f, "root", "kdims", in->kdims, 2 * in->L));
    FORWARD_IF_ERROR(h5u_wattr_str(ctx, path, f, "root", "target", in->target));
    FORWARD_IF_ERROR(h5u_wattr_str(ctx, path, f, "root", "dtype", in->float16 ? "float16" : "float32"));
    FORWARD_IF_ERROR(h5u_wattr_i64(ctx, path, f, "root", "rows", in->N));
    return INFL_OK;
}

// Reads the root attributes and the checkpoints' into *in (their datasets are checked by the caller).
static infl_status read_info(infl_ctx *ctx, const char *path, hid_t f, infl_index_info *in) {
    int64_t v, kd[2 * INFL_MAX_LINEAR];
    char dtype[16];
    memset(in, 0, sizeof *in);
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, f, "root", "run", in->run, sizeof in->run));
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, f, "root", "data", in->data, sizeof in->data));
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, f, "root", "model", in->model, sizeof in->model));
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, f, "root", "projection", in->projection, sizeof in->projection));
    FORWARD_IF_ERROR(h5u_attr_u64(ctx, path, f, "root", "seed", &in->seed));
    // sizes: dim (and rows, below) are borne out by the datasets' dims when the index is
    // opened (store_index_open); the kron dims must add up to dim
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, path, f, "root", "dim", &v));
    FORWARD_IF_ERROR(h5u_claim(ctx, path, "root", "attribute dim", v, 1, 1 << 30));
    in->k = (int)v;
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, path, f, "root", "kron_out", &v));
    FORWARD_IF_ERROR(h5u_claim(ctx, path, "root", "attribute kron_out", v, 0, 1 << 30));
    in->kron_out = (int)v;
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, path, f, "root", "kron_in", &v));
    FORWARD_IF_ERROR(h5u_claim(ctx, path, "root", "attribute kron_in", v, 0, 1 << 30));
    in->kron_in = (int)v;
    int n = 0;
    if (h5u_has_attr(f, "kdims") == 1) {
        FORWARD_IF_ERROR(h5u_attr_ints(ctx, path, f, "root", "kdims", 0, 2 * INFL_MAX_LINEAR, kd, &n));
        RETURN_IF(ctx, n % 2, INFL_E_FORMAT, "%s: attribute kdims has %d entries: expected pairs", path, n);
        int64_t sum = 0;
        for (int i = 0; i < n; i++) {
            FORWARD_IF_ERROR(h5u_claim(ctx, path, "root", "an entry of attribute kdims", kd[i], 1, in->k));
            in->kdims[i] = (int32_t)kd[i];
            if (i % 2) sum += kd[i - 1] * kd[i];
        }
        RETURN_IF(ctx, n > 0 && sum != in->k, INFL_E_FORMAT,
                  "%s: attribute kdims: its layers' k_out x k_in add up to %" PRId64 " entries, not dim %d", path, sum,
                  in->k);
    }
    in->L = n / 2;
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, f, "root", "target", in->target, sizeof in->target));
    RETURN_IF(ctx, strcmp(in->target, "margin") && strcmp(in->target, "loss"), INFL_E_FORMAT,
              "%s: attribute target = '%s': expected 'margin' or 'loss'", path, in->target);
    FORWARD_IF_ERROR(h5u_attr_str(ctx, path, f, "root", "dtype", dtype, sizeof dtype));
    RETURN_IF(ctx, strcmp(dtype, "float16") && strcmp(dtype, "float32"), INFL_E_FORMAT,
              "%s: attribute dtype = '%s': expected 'float16' or 'float32'", path, dtype);
    in->float16 = !strcmp(dtype, "float16");
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, path, f, "root", "rows", &in->N));
    RETURN_IF(ctx, in->N < 1, INFL_E_FORMAT, "%s: attribute rows = %" PRId64 ": expected at least 1", path, in->N);
    // the checkpoints, in step order (their names are zero-padded steps)
    hid_t g = H5Gopen2(f, "checkpoints", H5P_DEFAULT);
    RETURN_IF(ctx, g < 0, INFL_E_FORMAT, "%s: no group /checkpoints", path);
    char **names = NULL;
    int nn = 0;
    infl_status rc = h5u_list(ctx, path, g, "/checkpoints", &names, &nn);
    if (rc == INFL_OK && (nn < 1 || nn > INFL_INDEX_MAX_CK))
        rc = infl_seterr(ctx, INFL_E_FORMAT, "%s: /checkpoints holds %d groups: expected 1 to %d", path, nn,
                         INFL_INDEX_MAX_CK);
    for (int c = 0; rc == INFL_OK && c < nn; c++) {
        char where[96];
        snprintf(where, sizeof where, "/checkpoints/%.40s", names[c]);
        hid_t cg = H5Gopen2(g, names[c], H5P_DEFAULT);
        if (cg < 0) {
            rc = infl_seterr(ctx, INFL_E_FORMAT, "%s: %s is not a group", path, where);
            break;
        }
        infl_ckpt_info *ck = &in->ck[c];
        snprintf(ck->name, sizeof ck->name, "%s", names[c]);
        rc = h5u_attr_i64(ctx, path, cg, where, "step", &ck->step);
        if (rc == INFL_OK) rc = h5u_attr_f64(ctx, path, cg, where, "lr", &ck->lr);
        if (rc == INFL_OK) rc = h5u_attr_u64(ctx, path, cg, where, "weights_hash", &in->ck_hash[c]);
        H5Gclose(cg);
    }
    in->nck = nn;
    h5u_list_free(names, nn);
    H5Gclose(g);
    return rc;
}

// The first setting in which two infos differ, or NULL.
static const char *info_diff(const infl_index_info *a, const infl_index_info *b) {
    if (strcmp(a->run, b->run)) return "run";
    if (strcmp(a->data, b->data)) return "data";
    if (strcmp(a->model, b->model)) return "model";
    if (strcmp(a->projection, b->projection)) return "projection";
    if (a->seed != b->seed) return "seed";
    if (a->k != b->k || a->kron_out != b->kron_out || a->kron_in != b->kron_in || a->L != b->L ||
        memcmp(a->kdims, b->kdims, 2 * a->L * sizeof(int32_t)))
        return "dimensions";
    if (strcmp(a->target, b->target)) return "target";
    if (a->float16 != b->float16) return "dtype";
    if (a->N != b->N) return "rows";
    if (a->nck != b->nck) return "checkpoints";
    for (int c = 0; c < a->nck; c++)
        if (strcmp(a->ck[c].name, b->ck[c].name) || a->ck_hash[c] != b->ck_hash[c]) return "checkpoints";
    return NULL;
}

// ---- writing ----

struct infl_ixw {
    char path[4096];
    char partial[4096 + 16];
    hid_t file, ftype;
    hid_t phi[INFL_INDEX_MAX_CK], q[INFL_INDEX_MAX_CK];
    infl_index_info info;
    uint16_t *half;   // conversion buffer
    size_t half_cap;
};

static void ixw_close_ids(infl_ixw *w) {
    for (int c = 0; c < w->info.nck; c++) {
        if (w->phi[c] >= 0) H5Dclose(w->phi[c]);
        if (w->q[c] >= 0) H5Dclose(w->q[c]);
        w->phi[c] = w->q[c] = H5I_INVALID_HID;
    }
    if (w->ftype >= 0) H5Tclose(w->ftype);
    if (w->file >= 0) H5Fclose(w->file);
    w->ftype = w->file = H5I_INVALID_HID;
}

static infl_status ixw_create(infl_ctx *ctx, infl_ixw *w) {
    const infl_index_info *in = &w->info;
    infl_status rc = INFL_OK;
    hid_t g = H5I_INVALID_HID, cg = H5I_INVALID_HID, sp = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    CHECK(h5u_create_infl(ctx, w->path, w->partial, "index", &w->file));
    CHECK(write_info(ctx, w->path, w->file, in));
    CHECK(h5u_wattr_i64(ctx, w->path, w->file, "root", "rows_done", 0));
    g = H5Gcreate2(w->file, "checkpoints", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    GOTO_IF(ctx, g < 0, INFL_E_IO, "%s: cannot create /checkpoints", w->partial);
    size_t es = in->float16 ? 2 : 4;
    hsize_t rows = INDEX_CHUNK_BYTES / ((size_t)in->k * es);
    if (rows < 1) rows = 1;
    if (rows > (hsize_t)in->N) rows = (hsize_t)in->N;
    hsize_t dims[2] = {(hsize_t)in->N, (hsize_t)in->k}, chunk[2] = {rows, (hsize_t)in->k};
    for (int c = 0; c < in->nck; c++) {
        char where[96];
        snprintf(where, sizeof where, "/checkpoints/%s", in->ck[c].name);
        cg = H5Gcreate2(g, in->ck[c].name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        GOTO_IF(ctx, cg < 0, INFL_E_IO, "%s: cannot create %s", w->partial, where);
        CHECK(h5u_wattr_i64(ctx, w->path, cg, where, "step", in->ck[c].step));
        CHECK(h5u_wattr_f64(ctx, w->path, cg, where, "lr", in->ck[c].lr));
        CHECK(h5u_wattr_u64(ctx, w->path, cg, where, "weights_hash", in->ck_hash[c]));
        sp = H5Screate_simple(2, dims, NULL);
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        GOTO_IF(ctx, sp < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 2, chunk) < 0, INFL_E_IO, "%s: %s/phi: cannot set up",
                w->partial, where);
        w->phi[c] = H5Dcreate2(cg, "phi", w->ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Sclose(sp);
        sp = H5Screate_simple(1, dims, NULL);
        H5Pset_chunk(dcpl, 1, chunk);
        w->q[c] = sp < 0 ? -1 : H5Dcreate2(cg, "q", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Sclose(sp);
        H5Pclose(dcpl);
        sp = dcpl = H5I_INVALID_HID;
        GOTO_IF(ctx, w->phi[c] < 0 || w->q[c] < 0, INFL_E_IO, "%s: cannot create the datasets of %s", w->partial,
                where);
        H5Gclose(cg);
        cg = H5I_INVALID_HID;
    }
    GOTO_IF(ctx, H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0, INFL_E_IO, "%s: cannot flush", w->partial);
done:
    if (cg >= 0) H5Gclose(cg);
    if (g >= 0) H5Gclose(g);
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

// Opens the partial file for writing when it holds the same settings: *rows_done.
static infl_status ixw_resume(infl_ctx *ctx, infl_ixw *w, int64_t *rows_done) {
    hid_t f = H5Fopen(w->partial, H5F_ACC_RDWR, H5P_DEFAULT);
    RETURN_IF(ctx, f < 0, INFL_E_FORMAT, "%s: cannot be opened", w->partial);
    w->file = f;
    infl_index_info *got = malloc(sizeof *got);
    RETURN_IF(ctx, !got, INFL_E_NOMEM, "out of memory");
    infl_status rc = h5u_check_format(ctx, w->partial, f, "index");
    if (rc == INFL_OK) rc = read_info(ctx, w->partial, f, got);
    const char *diff = rc == INFL_OK ? info_diff(got, &w->info) : NULL;
    free(got);
    FORWARD_IF_ERROR(rc);
    RETURN_IF(ctx, diff, INFL_E_ARG,
              "%s: a partial index made with other settings (its %s differs); use --force to start again, or the "
              "same settings to resume it",
              w->partial, diff);
    FORWARD_IF_ERROR(h5u_attr_i64(ctx, w->partial, f, "root", "rows_done", rows_done));
    RETURN_IF(ctx, *rows_done < 0 || *rows_done > w->info.N, INFL_E_FORMAT,
              "%s: rows_done = %" PRId64 ": expected 0 to %" PRId64, w->partial, *rows_done, w->info.N);
    for (int c = 0; c < w->info.nck; c++) {
        char where[96];
        snprintf(where, sizeof where, "checkpoints/%s/phi", w->info.ck[c].name);
        w->phi[c] = H5Dopen2(f, where, H5P_DEFAULT);
        snprintf(where, sizeof where, "checkpoints/%s/q", w->info.ck[c].name);
        w->q[c] = H5Dopen2(f, where, H5P_DEFAULT);
        RETURN_IF(ctx, w->phi[c] < 0 || w->q[c] < 0, INFL_E_FORMAT, "%s: /checkpoints/%s lacks phi or q", w->partial,
                  w->info.ck[c].name);
    }
    return INFL_OK;
}

infl_status store_index_begin(infl_ctx *ctx, const char *path, int force, const infl_index_info *info, infl_ixw **out,
                              int64_t *rows_done) {
    *out = NULL;
    *rows_done = 0;
    struct stat stt;
    RETURN_IF(ctx, !force && stat(path, &stt) == 0, INFL_E_EXISTS, "%s exists (use --force to overwrite)", path);
    infl_ixw *w = infl_calloc(ctx, 1, sizeof *w, "an index writer");
    if (!w) return INFL_E_NOMEM;
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->partial, sizeof w->partial, "%s.partial", path);
    w->info = *info;
    w->file = w->ftype = H5I_INVALID_HID;
    for (int c = 0; c < INFL_INDEX_MAX_CK; c++) w->phi[c] = w->q[c] = H5I_INVALID_HID;
    h5u_lock();
    infl_status rc = INFL_OK;
    w->ftype = info->float16 ? half_type() : H5Tcopy(H5T_IEEE_F32LE);
    GOTO_IF(ctx, w->ftype < 0, INFL_E_INTERNAL, "cannot make the float16 type");
    if (stat(w->partial, &stt) == 0) {
        rc = ixw_resume(ctx, w, rows_done);
        if (rc < 0 && force) {
            // start afresh over a partial file of other settings (or a damaged one)
            for (int c = 0; c < info->nck; c++) {
                if (w->phi[c] >= 0) H5Dclose(w->phi[c]);
                if (w->q[c] >= 0) H5Dclose(w->q[c]);
                w->phi[c] = w->q[c] = H5I_INVALID_HID;
            }
            if (w->file >= 0) H5Fclose(w->file);
            w->file = H5I_INVALID_HID;
            *rows_done = 0;
            rc = INFL_OK;
        } else if (rc < 0 && rc != INFL_E_ARG) {
            infl_errprefix(ctx, "cannot resume from the partial index (use --force to start again)");
        }
        CHECK(rc);
    }
    if (w->file < 0) CHECK(ixw_create(ctx, w));
    h5u_unlock();
    *out = w;
    return INFL_OK;
done:
    ixw_close_ids(w);
    rc = h5u_unlock_rc(ctx, rc);
    free(w);
    return rc;
}

infl_status store_index_write(infl_ctx *ctx, infl_ixw *w, int c, int64_t row0, int64_t n, const float *phi,
                              const float *q) {
    const infl_index_info *in = &w->info;
    RETURN_IF(ctx, c < 0 || c >= in->nck || row0 < 0 || n < 0 || row0 + n > in->N, INFL_E_INTERNAL,
              "%s: rows %" PRId64 "+%" PRId64 " of checkpoint %d out of range", w->partial, row0, n, c);
    if (n == 0) return INFL_OK;
    size_t cnt = (size_t)n * in->k;
    const void *buf = phi;
    if (in->float16) {
        if (cnt > w->half_cap) {
            uint16_t *h = realloc(w->half, cnt * sizeof(uint16_t));
            RETURN_IF(ctx, !h, INFL_E_NOMEM, "out of memory converting to float16");
            w->half = h;
            w->half_cap = cnt;
        }
        infl_f32_to_f16_n(w->half, phi, cnt);
        unsigned over = 0;  // any Inf or NaN half (one pass without branches; which one is looked for after)
        for (size_t i = 0; i < cnt; i++) over |= (w->half[i] & 0x7c00u) == 0x7c00u;
        for (size_t i = 0; over && i < cnt; i++)
            RETURN_IF(ctx, isfinite(phi[i]) && (w->half[i] & 0x7c00u) == 0x7c00u, INFL_E_VALUE,
                      "%s: row %" PRId64 " of checkpoint %s has the value %g, beyond float16's range (±65504): use "
                      "--dtype float32",
                      w->path, row0 + (int64_t)(i / in->k), in->ck[c].name, (double)phi[i]);
        buf = w->half;
    }
    h5u_lock();
    char where[96];
    snprintf(where, sizeof where, "/checkpoints/%s/phi", in->ck[c].name);
    infl_status rc = store_rows_io(ctx, w->partial, w->phi[c], where, w->ftype, row0, n, in->k, (void *)buf, 1);
    snprintf(where, sizeof where, "/checkpoints/%s/q", in->ck[c].name);
    if (rc == INFL_OK) rc = store_rows_io(ctx, w->partial, w->q[c], where, H5T_NATIVE_FLOAT, row0, n, 0, (void *)q, 1);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_index_mark(infl_ctx *ctx, infl_ixw *w, int64_t rows) {
    h5u_lock();
    infl_status rc = h5u_wattr_i64(ctx, w->path, w->file, "root", "rows_done", rows);
    if (rc == INFL_OK && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
        rc = infl_seterr(ctx, INFL_E_IO, "%s: cannot flush", w->partial);
    return h5u_unlock_rc(ctx, rc);
}

infl_status store_index_commit(infl_ctx *ctx, infl_ixw *w) {
    h5u_lock();
    infl_status rc = INFL_OK;
    if (H5Aexists(w->file, "rows_done") > 0 && H5Adelete(w->file, "rows_done") < 0)
        rc = infl_seterr(ctx, INFL_E_IO, "%s: cannot finish", w->partial);
    for (int c = 0; c < w->info.nck; c++) {
        if (w->phi[c] >= 0) H5Dclose(w->phi[c]);
        if (w->q[c] >= 0) H5Dclose(w->q[c]);
        w->phi[c] = w->q[c] = H5I_INVALID_HID;
    }
    if (w->ftype >= 0) H5Tclose(w->ftype);
    w->ftype = H5I_INVALID_HID;
    if (H5Fclose(w->file) < 0 && rc == INFL_OK) rc = infl_seterr(ctx, INFL_E_IO, "%s: cannot close", w->partial);
    w->file = H5I_INVALID_HID;
    h5u_unlock();
    if (rc == INFL_OK) rc = infl_out_commit(ctx, w->partial, w->path);
    free(w->half);
    free(w);
    return rc;
}

void store_index_close(infl_ixw *w) {
    if (!w) return;
    h5u_lock();
    ixw_close_ids(w);
    h5u_unlock();
    free(w->half);
    free(w);
}

// ---- reading ----

struct infl_ixr {
    char path[4096];
    hid_t file, half;
    hid_t phi[INFL_INDEX_MAX_CK], q[INFL_INDEX_MAX_CK];
    infl_index_info info;
    uint16_t *buf;
    size_t cap;
};

const infl_index_info *store_index_info(const infl_ixr *r) { return &r->info; }
const char *store_index_path(const infl_ixr *r) { return r->path; }

void store_index_close_r(infl_ixr *r) {
    if (!r) return;
    h5u_lock();
    for (int c = 0; c < r->info.nck; c++) {
        if (r->phi[c] >= 0) H5Dclose(r->phi[c]);
        if (r->q[c] >= 0) H5Dclose(r->q[c]);
    }
    if (r->half >= 0) H5Tclose(r->half);
    if (r->file >= 0) H5Fclose(r->file);
    h5u_unlock();
    free(r->buf);
    free(r);
}

infl_status store_index_open(infl_ctx *ctx, const char *path, infl_ixr **out) {
    *out = NULL;
    infl_ixr *r = infl_calloc(ctx, 1, sizeof *r, "an index reader");
    if (!r) return INFL_E_NOMEM;
    snprintf(r->path, sizeof r->path, "%s", path);
    r->file = r->half = H5I_INVALID_HID;
    for (int c = 0; c < INFL_INDEX_MAX_CK; c++) r->phi[c] = r->q[c] = H5I_INVALID_HID;
    h5u_lock();
    infl_status rc = INFL_OK;
    CHECK(h5u_open_infl(ctx, path, "index", &r->file));
    GOTO_IF(ctx, h5u_has_attr(r->file, "rows_done") == 1, INFL_E_FORMAT,
            "%s: an unfinished index (rows_done is set): run the `infl index` that made it again to complete it", path);
    CHECK(read_info(ctx, path, r->file, &r->info));
    r->half = half_type();
    GOTO_IF(ctx, r->half < 0, INFL_E_INTERNAL, "cannot make the float16 type");
    for (int c = 0; c < r->info.nck; c++) {
        char name[96], where[100], exp[96];
        h5u_dinfo di;
        snprintf(name, sizeof name, "checkpoints/%s/phi", r->info.ck[c].name);
        snprintf(where, sizeof where, "/%s", name);
        snprintf(exp, sizeof exp, "%s [%" PRId64 ", %d]", r->info.float16 ? "float16" : "float32", r->info.N,
                 r->info.k);
        // streamed: its dims are borne out by what the file stores (h5u_open_dset)
        CHECK(h5u_open_dset(ctx, path, r->file, name, where, exp, H5P_DEFAULT, UINT64_MAX, &r->phi[c], &di));
        GOTO_IF(ctx,
                di.cls != H5T_FLOAT || di.size != (r->info.float16 ? 2u : 4u) || di.rank != 2 ||
                    di.dims[0] != (hsize_t)r->info.N || di.dims[1] != (hsize_t)r->info.k,
                INFL_E_FORMAT, "%s: %s is %s: expected %s", path, where, di.desc, exp);
        snprintf(name, sizeof name, "checkpoints/%s/q", r->info.ck[c].name);
        snprintf(where, sizeof where, "/%s", name);
        snprintf(exp, sizeof exp, "float32 [%" PRId64 "]", r->info.N);
        CHECK(h5u_open_dset(ctx, path, r->file, name, where, exp, H5P_DEFAULT, UINT64_MAX, &r->q[c], &di));
        GOTO_IF(ctx, !h5u_is_f32(&di) || di.rank != 1 || di.dims[0] != (hsize_t)r->info.N, INFL_E_FORMAT,
                "%s: %s is %s: expected %s", path, where, di.desc, exp);
    }
    h5u_unlock();
    *out = r;
    return INFL_OK;
done:
    rc = h5u_unlock_rc(ctx, rc);
    store_index_close_r(r);
    return rc;
}

infl_status store_index_read(infl_ctx *ctx, infl_ixr *r, int c, int64_t row0, int64_t n, float *phi, float *q) {
    const infl_index_info *in = &r->info;
    RETURN_IF(ctx, c < 0 || c >= in->nck || row0 < 0 || n < 0 || row0 + n > in->N, INFL_E_INTERNAL,
              "%s: rows %" PRId64 "+%" PRId64 " of checkpoint %d out of range", r->path, row0, n, c);
    if (n == 0) return INFL_OK;
    size_t cnt = (size_t)n * in->k;
    char where[96];
    infl_status rc = INFL_OK;
    h5u_lock();
    if (phi) {
        snprintf(where, sizeof where, "/checkpoints/%s/phi", in->ck[c].name);
        if (in->float16) {
            if (cnt > r->cap) {
                uint16_t *b = realloc(r->buf, cnt * sizeof(uint16_t));
                GOTO_IF(ctx, !b, INFL_E_NOMEM, "out of memory reading %s", r->path);
                r->buf = b;
                r->cap = cnt;
            }
            CHECK(store_rows_io(ctx, r->path, r->phi[c], where, r->half, row0, n, in->k, r->buf, 0));
            infl_f16_to_f32_n(phi, r->buf, cnt);
        } else {
            CHECK(store_rows_io(ctx, r->path, r->phi[c], where, H5T_NATIVE_FLOAT, row0, n, in->k, phi, 0));
        }
    }
    if (q) {
        snprintf(where, sizeof where, "/checkpoints/%s/q", in->ck[c].name);
        CHECK(store_rows_io(ctx, r->path, r->q[c], where, H5T_NATIVE_FLOAT, row0, n, 0, q, 0));
    }
done:
    return h5u_unlock_rc(ctx, rc);
}

void store_resolve_beside(const char *name, const char *file, char *out, size_t size) {
    struct stat st;
    snprintf(out, size, "%s", name);
    if (name[0] == '/' || stat(name, &st) == 0) return;
    const char *slash = strrchr(file, '/');
    if (!slash) return;
    char cand[8192];
    snprintf(cand, sizeof cand, "%.*s/%s", (int)(slash - file), file, name);
    if (strlen(cand) < size && stat(cand, &st) == 0) memcpy(out, cand, strlen(cand) + 1);
}

infl_status store_index_run(infl_ctx *ctx, const char *list, char *run, size_t rsize, char *data, size_t dsize) {
    char first[4096];
    snprintf(first, sizeof first, "%s", list);
    char *comma = strchr(first, ',');
    if (comma) *comma = 0;
    infl_ixr *r;
    FORWARD_IF_ERROR(store_index_open(ctx, first, &r));
    store_resolve_beside(r->info.run, first, run, rsize);
    snprintf(data, dsize, "%s", r->info.data);
    store_index_close_r(r);
    return INFL_OK;
}
