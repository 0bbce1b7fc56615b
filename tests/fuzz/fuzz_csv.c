/*
 * fuzz_csv.c — libFuzzer harness: numeric CSV text through infl_import_csv (fields,
 * quotes, the header, the label column by name or index, classes or regression, the
 * train/test split) into a dataset file. Input: three option bytes (delimiter; header,
 * regression, test fraction and seed; the label column), then the CSV text.
 */
#include <stdlib.h>
#include <unistd.h>

#include "fuzzutil.h"

static char csv[4096], out[4200];

static void cleanup(void) {
    unlink(csv);
    unlink(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    infl_ctx *ctx = fz_ctx();
    if (!csv[0]) {
        snprintf(csv, sizeof csv, "%s", fz_tmp("in.csv"));
        snprintf(out, sizeof out, "%s", fz_tmp("csv.h5"));
        atexit(cleanup);
    }
    fz_in in = fz_in_make(data, size);
    uint8_t d = fz_u8(&in), flags = fz_u8(&in), lab = fz_u8(&in);
    static const char delims[] = {',', ';', '\t', ' ', '|', ':'};
    static const char *const labels[] = {"0", "1", "2", "4", "label", "y", "class", "99"};
    fz_write_file(csv, in.p + in.at, fz_left(&in));
    infl_import_csv_options o = infl_import_csv_options_default();
    o.delimiter = delims[d % sizeof delims];
    o.header = flags & 1;
    o.regression = (flags >> 1) & 1;
    o.test_fraction = (double[]){0.0, 0.25, 0.5, 0.9}[(flags >> 2) % 4];
    o.seed = flags >> 4;
    o.label = labels[lab % 8];
    o.force = 1;
    fz_before(ctx);
    fz_after(ctx, infl_import_csv(ctx, csv, &o, out), "infl_import_csv");
    fz_check_closed("infl_import_csv");
    return 0;
}
