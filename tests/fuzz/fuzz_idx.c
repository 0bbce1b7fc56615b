/*
 * fuzz_idx.c — libFuzzer harness: Fashion-MNIST's IDX files (gzip'd or plain) through
 * the IDX reader (idx_open with 1 to 4 dimensions, idx_read to the end) and the whole
 * import (infl_import_fashion_mnist: both splits, pooling, label flips, the dataset
 * writer). Input: an options byte, the images file's length (2 bytes, little-endian),
 * the images file, then the labels file; both splits get the same pair.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/idx.h"
#include "fuzzutil.h"

static char dir[4096], out[4200], paths[4][4400];

static void cleanup(void) {
    for (int i = 0; i < 4; i++) unlink(paths[i]);
    unlink(out);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    infl_ctx *ctx = fz_ctx();
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s", fz_tmp("idx"));
        mkdir(dir, 0700);
        static const char *const names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
        for (int i = 0; i < 4; i++) snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
        snprintf(out, sizeof out, "%s.h5", dir);
        atexit(cleanup);
    }
    fz_in in = fz_in_make(data, size);
    uint8_t opt = fz_u8(&in);
    size_t ni = fz_u8(&in);
    ni |= (size_t)fz_u8(&in) << 8;
    if (ni > fz_left(&in)) ni = fz_left(&in);
    const uint8_t *img = in.p + in.at, *lab = img + ni;
    size_t nl = fz_left(&in) - ni;
    fz_write_file(paths[0], img, ni);
    fz_write_file(paths[1], lab, nl);
    fz_write_file(paths[2], img, ni);
    fz_write_file(paths[3], lab, nl);

    // the reader alone, at any rank
    infl_idx *f = NULL;
    fz_before(ctx);
    infl_status rc = idx_open(ctx, paths[0], opt % 4 + 1, "images", &f);
    fz_after(ctx, rc, "idx_open");
    if (rc == INFL_OK) {
        uint8_t buf[4096];
        uint64_t left = idx_data_bytes(f), total = 0;
        while (left > 0 && total < (1u << 20) && rc == INFL_OK) {
            uint64_t k = left < sizeof buf ? left : sizeof buf;
            fz_before(ctx);
            rc = idx_read(ctx, f, buf, k);
            fz_after(ctx, rc, "idx_read");
            left -= k;
            total += k;
        }
        idx_close(f);
    }

    // the import
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = dir;
    o.pool = (int[]){1, 2, 4, 4}[(opt >> 2) % 4];
    o.limit = (opt >> 4) % 4 == 0 ? 0 : (opt >> 4) % 4 * 7;
    o.flip_labels = opt & 0x40 ? 0.3 : 0.0;
    o.seed = opt >> 7;
    o.force = 1;
    fz_before(ctx);
    fz_after(ctx, infl_import_fashion_mnist(ctx, &o, out), "infl_import_fashion_mnist");
    fz_check_closed("infl_import_fashion_mnist");
    return 0;
}
