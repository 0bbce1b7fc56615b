/*
 * h5harness.h — the entry point every HDF5 harness shares (included once, by the
 * harness's own file, after it defines FUZZ_NAME, FUZZ_HDR and fuzz_read).
 *
 * Structure-aware (the default): the input is FUZZ_HDR bytes for the harness (which
 * split, range, sizes to ask for) and then a program for the HDF5 builder
 * (fuzzutil.h), which writes a well-formed file with hostile contents; fuzz_read runs
 * infl's reader on it. Raw (built with FUZZ_RAW, for the long run only): the input is
 * the file's bytes as they are, so libhdf5's own parser is fuzzed too, and crashes
 * whose stack lies inside libhdf5 are sorted out (tests/fuzz/long-run.sh).
 */
#include <stdlib.h>
#include <unistd.h>

static char fuzz_path[4096];

static void fuzz_cleanup(void) { unlink(fuzz_path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    infl_ctx *ctx = fz_ctx();
    if (!fuzz_path[0]) {
        snprintf(fuzz_path, sizeof fuzz_path, "%s", fz_tmp(FUZZ_NAME ".h5"));
        atexit(fuzz_cleanup);
    }
#ifdef FUZZ_RAW
    static const uint8_t zero[FUZZ_HDR];
    fz_in hdr = fz_in_make(zero, FUZZ_HDR);
    fz_write_file(fuzz_path, data, size);
#else
    size_t h = size < FUZZ_HDR ? size : FUZZ_HDR;
    fz_in hdr = fz_in_make(data, h);
    if (h5b_build(fuzz_path, data + h, size - h) < 0) return 0;
    fz_check_closed("building the file");
#endif
    fuzz_read(ctx, fuzz_path, &hdr);
    fz_check_closed(FUZZ_NAME);
    return 0;
}
