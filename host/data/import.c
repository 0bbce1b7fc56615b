/*
 * import.c — `infl import`: Fashion-MNIST's gzip'd IDX files and numeric CSV files
 * into a `dataset` file (DESIGN.md "Files"). Reads through idx.c (IDX) or from memory
 * (CSV), writes through the store writer (host/store), so the output appears under
 * its final name only when complete.
 *
 * Random choices (label flips, the CSV train/test split) come from the counter-based
 * generator keyed by (seed, stream, row index, draw): the result does not depend on
 * the order or block size in which rows are processed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "core/rng.h"
#include "idx.h"
#include "store/store.h"

#define FM_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define FM_SIDE 28
#define FM_CLASSES 10
#define IMPORT_BLOCK 4096  // rows read, converted and written at once

// ---- Fashion-MNIST ----

static const char *const fm_class_names[FM_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

infl_import_fmnist_options infl_import_fmnist_options_default(void) {
    infl_import_fmnist_options o;
    memset(&o, 0, sizeof o);
    o.dir = FM_DEFAULT_DIR;  // NULL or "" also mean this folder
    o.limit = 0;             // all rows
    o.flip_labels = 0.0;     // no label noise
    o.seed = 0;
    o.pool = 1;              // 28x28
    o.force = 0;
    return o;
}

// One split's pair of IDX files.
typedef struct {
    const char *name;  // "train", "test"
    infl_idx *img;     // images: (N, 28, 28) unsigned bytes
    infl_idx *lab;     // labels: (N) unsigned bytes
    int64_t n;         // rows kept (after limit)
} fm_split;

// Opens and checks <dir>/<prefix>-images-idx3-ubyte.gz and the labels beside it.
static infl_status fm_open(infl_ctx *ctx, const char *dir, const char *prefix, int64_t limit,
                           fm_split *s) {
    char ip[4096], lp[4096];
    int n1 = snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    int n2 = snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    RETURN_IF(ctx, n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof ip || (size_t)n2 >= sizeof lp,
              INFL_E_ARG, "%s: path too long", dir);
    FORWARD_IF_ERROR(idx_open(ctx, ip, 3, "images", &s->img));
    FORWARD_IF_ERROR(idx_open(ctx, lp, 1, "labels", &s->lab));
    uint32_t n = idx_dim(s->img, 0), h = idx_dim(s->img, 1), w = idx_dim(s->img, 2);
    RETURN_IF(ctx, h != FM_SIDE || w != FM_SIDE, INFL_E_SHAPE,
              "%s: images are %" PRIu32 " x %" PRIu32 ", expected %d x %d (Fashion-MNIST)", ip, h,
              w, FM_SIDE, FM_SIDE);
    uint32_t nl = idx_dim(s->lab, 0);
    RETURN_IF(ctx, nl != n, INFL_E_SHAPE,
              "%s: %" PRIu32 " labels, expected %" PRIu32 " (one per image of %s)", lp, nl, n, ip);
    s->n = (limit > 0 && limit < (int64_t)n) ? limit : (int64_t)n;
    return INFL_OK;
}

// Average-pools P x P blocks of bytes and scales to [0, 1].
// x is (rows, S*S) with S = 28/P, row-major; px is (rows, 28*28) bytes.
static void fm_pool(float *x, const uint8_t *px, int64_t rows, int P) {
    const int S = FM_SIDE / P;
    const double scale = 1.0 / (255.0 * P * P);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *img = px + r * FM_SIDE * FM_SIDE;
        float *out = x + r * S * S;
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                // sum of the P x P block whose top-left pixel is (i*P, j*P)
                unsigned sum = 0;
                for (int a = 0; a < P; a++)
                    for (int b = 0; b < P; b++) sum += img[(i * P + a) * FM_SIDE + j * P + b];
                out[i * S + j] = (float)(sum * scale);
            }
    }
}

// Reads one split block by block and writes it. For the training split with flip > 0,
// also fills flipped (n) and y_clean (n). *done counts rows over both splits.
static infl_status fm_copy(infl_ctx *ctx, infl_dsw *w, fm_split *s, int P, double flip,
                           uint64_t seed, int32_t *flipped, int32_t *y_clean, uint64_t *done,
                           uint64_t total) {
    infl_status rc = INFL_OK;
    const int64_t D = (int64_t)(FM_SIDE / P) * (FM_SIDE / P);
    int64_t B = s->n < IMPORT_BLOCK ? s->n : IMPORT_BLOCK;
    uint8_t *px = infl_malloc(ctx, (size_t)B * FM_SIDE * FM_SIDE, "a block of images");
    uint8_t *lab = infl_malloc(ctx, (size_t)B, "a block of labels");
    float *x = infl_malloc(ctx, (size_t)B * (size_t)D * sizeof(float), "a block of pixels");
    int32_t *y = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "a block of labels");
    GOTO_NOMEM_IF(!px || !lab || !x || !y);
    for (int64_t r0 = 0; r0 < s->n; r0 += B) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
        int64_t rows = s->n - r0 < B ? s->n - r0 : B;
        CHECK(idx_read(ctx, s->img, px, (uint64_t)rows * FM_SIDE * FM_SIDE));
        CHECK(idx_read(ctx, s->lab, lab, (uint64_t)rows));
        for (int64_t r = 0; r < rows; r++) {
            GOTO_IF(ctx, lab[r] >= FM_CLASSES, INFL_E_VALUE,
                    "%s: label %u at row %" PRId64 ", expected 0..%d (Fashion-MNIST has %d classes)",
                    idx_path(s->lab), lab[r], r0 + r, FM_CLASSES - 1, FM_CLASSES);
            int32_t label = lab[r];
            if (flipped) {
                // row i flips with probability `flip`, to one of the 9 other classes
                uint64_t i = (uint64_t)(r0 + r);
                int f = infl_rng_uniform(seed, INFL_RNG_FLIP, i, 0) < flip;
                y_clean[i] = label;
                flipped[i] = f;
                if (f) {
                    int32_t k = (int32_t)infl_rng_below(seed, INFL_RNG_FLIP, i, 1, FM_CLASSES - 1);
                    label = k + (k >= label);  // skips the original class
                }
            }
            y[r] = label;
        }
        fm_pool(x, px, rows, P);
        CHECK(store_dataset_write_rows(ctx, w, s->name, r0, rows, x, y, NULL));
        *done += (uint64_t)rows;
        infl_progress(ctx, "import", *done, total, NULL);
    }
done:
    free(px);
    free(lab);
    free(x);
    free(y);
    return rc;
}

infl_status infl_import_fashion_mnist(infl_ctx *ctx, const infl_import_fmnist_options *opts,
                                      const char *out_path) {
    infl_import_fmnist_options o = opts ? *opts : infl_import_fmnist_options_default();
    const char *dir = (o.dir && *o.dir) ? o.dir : FM_DEFAULT_DIR;
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "import: no output file given");
    RETURN_IF(ctx, o.pool != 1 && o.pool != 2 && o.pool != 4, INFL_E_ARG,
              "import: pool %d, expected 1 (28x28), 2 (14x14) or 4 (7x7)", o.pool);
    RETURN_IF(ctx, !(o.flip_labels >= 0.0 && o.flip_labels < 1.0), INFL_E_ARG,
              "import: flip_labels %g, expected a fraction in [0, 1)", o.flip_labels);
    RETURN_IF(ctx, o.limit < 0, INFL_E_ARG, "import: limit %" PRId64 ", expected >= 0 (0 = all)",
              o.limit);
    struct stat st;
    RETURN_IF(ctx, stat(dir, &st) != 0, INFL_E_IO,
              "%s: %s; expected a folder with Fashion-MNIST's train-images-idx3-ubyte.gz, "
              "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
              "(Debian: apt install dataset-fashion-mnist)",
              dir, strerror(errno));
    RETURN_IF(ctx, !S_ISDIR(st.st_mode), INFL_E_ARG,
              "%s: not a folder; expected the folder holding Fashion-MNIST's IDX files", dir);

    infl_status rc = INFL_OK;
    infl_dsw *w = NULL;
    int32_t *flipped = NULL, *y_clean = NULL;
    fm_split tr = {.name = "train"}, te = {.name = "test"};
    CHECK(fm_open(ctx, dir, "train", o.limit, &tr));
    CHECK(fm_open(ctx, dir, "t10k", o.limit, &te));

    const int P = o.pool, S = FM_SIDE / o.pool;
    const int shape[3] = {S, S, 1};
    CHECK(store_dataset_create(ctx, out_path, o.force, &w));
    CHECK(store_dataset_add_split(ctx, w, "train", tr.n, (int64_t)S * S, INFL_Y_CLASS, 1, shape));
    CHECK(store_dataset_add_split(ctx, w, "test", te.n, (int64_t)S * S, INFL_Y_CLASS, 1, shape));
    if (o.flip_labels > 0) {
        flipped = infl_malloc(ctx, (size_t)tr.n * sizeof(int32_t), "the flipped flags");
        y_clean = infl_malloc(ctx, (size_t)tr.n * sizeof(int32_t), "the clean labels");
        GOTO_NOMEM_IF(!flipped || !y_clean);
    }
    uint64_t done_rows = 0, total = (uint64_t)(tr.n + te.n);
    infl_progress(ctx, "import", 0, total, NULL);
    CHECK(fm_copy(ctx, w, &tr, P, o.flip_labels, o.seed, flipped, y_clean, &done_rows, total));
    CHECK(fm_copy(ctx, w, &te, P, 0.0, o.seed, NULL, NULL, &done_rows, total));
    if (flipped) {
        CHECK(store_dataset_write_int(ctx, w, "train", "flipped", tr.n, flipped));
        CHECK(store_dataset_write_int(ctx, w, "train", "y_clean", tr.n, y_clean));
    }
    CHECK(store_dataset_set_classes(ctx, w, fm_class_names, FM_CLASSES));

    char src[4096 + 256];
    int off = snprintf(src, sizeof src, "fashion-mnist %s; pool %d", dir, P);
    if (o.limit > 0 && off > 0 && (size_t)off < sizeof src)
        off += snprintf(src + off, sizeof src - (size_t)off, "; limit %" PRId64, o.limit);
    if (o.flip_labels > 0 && off > 0 && (size_t)off < sizeof src)
        snprintf(src + off, sizeof src - (size_t)off, "; flip %g seed %" PRIu64, o.flip_labels,
                 o.seed);
    CHECK(store_dataset_set_attr(ctx, w, "source", src));
    GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
    rc = store_dataset_commit(ctx, w);  // frees w, also on failure
    w = NULL;
done:
    if (w) store_dataset_abort(w);
    idx_close(tr.img);
    idx_close(tr.lab);
    idx_close(te.img);
    idx_close(te.lab);
    free(flipped);
    free(y_clean);
    return rc;
}

// ---- CSV ----

#define CSV_MAX_CLASS 65535  // class labels are 0..CSV_MAX_CLASS

infl_import_csv_options infl_import_csv_options_default(void) {
    infl_import_csv_options o;
    memset(&o, 0, sizeof o);
    o.label = NULL;          // required
    o.delimiter = ',';
    o.header = 1;            // the first row names the columns
    o.regression = 0;        // integer class labels
    o.test_fraction = 0.0;   // everything in /train
    o.seed = 0;
    o.force = 0;
    return o;
}

typedef struct {
    char *text;  // the field, trimmed and unquoted, NUL-terminated (in the line's buffer)
    int col;     // 1-based character column where it starts
} csv_field;

static int csv_space(char c, char delim) { return (c == ' ' || c == '\t') && c != delim; }

// Splits the NUL-terminated `line` in place at `delim`. Fields may be "quoted" (with ""
// for a quote inside); surrounding spaces are trimmed. Fills at most `cap` fields and
// returns how many the line holds, or -1 with *bad_col set for a malformed quote.
static int csv_split(char *line, char delim, csv_field *f, int cap, int *bad_col) {
    int n = 0;
    char *p = line;
    for (;;) {
        while (csv_space(*p, delim)) p++;
        char *start = p, *end;
        int col = (int)(p - line) + 1;
        if (*p == '"') {
            // quoted: unescape into place
            char *q = ++p;
            start = q;
            for (;;) {
                if (*p == 0) {
                    *bad_col = col;
                    return -1;  // unterminated
                }
                if (*p == '"') {
                    if (p[1] == '"') {
                        *q++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *q++ = *p++;
            }
            end = q;
            while (csv_space(*p, delim)) p++;
            if (*p != delim && *p != 0) {
                *bad_col = (int)(p - line) + 1;
                return -1;  // text after the closing quote
            }
        } else {
            while (*p != delim && *p != 0) p++;
            end = p;
            while (end > start && csv_space(end[-1], delim)) end--;
        }
        char sep = *p;
        *end = 0;
        if (n < cap) {
            f[n].text = start;
            f[n].col = col;
        }
        n++;
        if (sep == 0) break;
        p++;  // past the delimiter
    }
    return n;
}

static int csv_blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t') return 0;
    return 1;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

// Parses a whole field as a finite number that fits float32. 0 ok; -1 empty; -2 not a
// number; -3 not finite or beyond the float32 range.
static int csv_number(const char *s, double *v) {
    if (!*s) return -1;
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end) return -2;
    if (!isfinite(d) || fabs(d) > FLT_MAX) return -3;
    *v = d;
    return 0;
}

// Reads a whole file into a NUL-terminated buffer.
static infl_status read_all(infl_ctx *ctx, const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    RETURN_IF(ctx, !fp, INFL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    infl_status rc = INFL_OK;
    size_t cap = 1 << 16, n = 0;
    char *buf = infl_malloc(ctx, cap, "the CSV text");
    GOTO_NOMEM_IF(!buf);
    for (;;) {
        if (cap - n < 2) {
            char *nb = realloc(buf, cap * 2);
            GOTO_IF(ctx, !nb, INFL_E_NOMEM, "%s: out of memory reading %zu bytes", path, cap * 2);
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0) break;
    }
    GOTO_IF(ctx, ferror(fp), INFL_E_IO, "%s: read error: %s", path, strerror(errno));
    buf[n] = 0;
    GOTO_IF(ctx, memchr(buf, 0, n) != NULL, INFL_E_FORMAT,
            "%s: holds NUL bytes; expected a text CSV file", path);
    *out = buf;
    *len = n;
    buf = NULL;
done:
    free(buf);
    fclose(fp);
    return rc;
}

// The parsed table: x (n, d) row-major in file order; y (n) class labels or yf (n)
// real targets; is_test (n) the split of each row.
typedef struct {
    int64_t n, cap;
    int d;
    float *x;
    int32_t *y;
    float *yf;
    uint8_t *is_test;
    int max_label;
} csv_table;

// Copies the rows of one split in blocks and writes them.
static infl_status csv_write_split(infl_ctx *ctx, infl_dsw *w, const csv_table *t,
                                   const char *split, int want_test, int regression,
                                   uint64_t *done, uint64_t total) {
    infl_status rc = INFL_OK;
    const int64_t B = IMPORT_BLOCK;
    float *x = infl_malloc(ctx, (size_t)B * (size_t)t->d * sizeof(float), "a block of rows");
    int32_t *y = infl_malloc(ctx, (size_t)B * sizeof(int32_t), "a block of labels");
    float *yf = infl_malloc(ctx, (size_t)B * sizeof(float), "a block of targets");
    GOTO_NOMEM_IF(!x || !y || !yf);
    int64_t out_row = 0, k = 0;
    for (int64_t i = 0; i <= t->n; i++) {
        // flush a full block, or the last partial one
        if (k == B || (i == t->n && k > 0)) {
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
            CHECK(store_dataset_write_rows(ctx, w, split, out_row, k, x, regression ? NULL : y,
                                           regression ? yf : NULL));
            out_row += k;
            *done += (uint64_t)k;
            infl_progress(ctx, "import", *done, total, NULL);
            k = 0;
        }
        if (i == t->n) break;
        if (t->is_test[i] != want_test) continue;
        memcpy(x + k * t->d, t->x + i * t->d, (size_t)t->d * sizeof(float));
        if (regression)
            yf[k] = t->yf[i];
        else
            y[k] = t->y[i];
        k++;
    }
done:
    free(x);
    free(y);
    free(yf);
    return rc;
}

infl_status infl_import_csv(infl_ctx *ctx, const char *csv_path, const infl_import_csv_options *opts,
                            const char *out_path) {
    RETURN_IF(ctx, !csv_path || !*csv_path, INFL_E_ARG, "import csv: no input file given");
    RETURN_IF(ctx, !out_path || !*out_path, INFL_E_ARG, "import csv: no output file given");
    RETURN_IF(ctx, !opts || !opts->label || !*opts->label, INFL_E_ARG,
              "%s: no label column given; expected a header name or a 0-based column index",
              csv_path);
    const infl_import_csv_options o = *opts;
    const char delim = o.delimiter;
    RETURN_IF(ctx, delim == 0 || delim == '\n' || delim == '\r' || delim == '"', INFL_E_ARG,
              "import csv: delimiter 0x%02X cannot separate fields; expected e.g. ',' ';' or tab",
              (unsigned char)delim);
    RETURN_IF(ctx, !(o.test_fraction >= 0.0 && o.test_fraction < 1.0), INFL_E_ARG,
              "import csv: test_fraction %g, expected a fraction in [0, 1)", o.test_fraction);

    infl_status rc = INFL_OK;
    char *text = NULL;
    size_t len = 0;
    csv_field *fields = NULL;
    char **hdr = NULL;  // header names (ncols) when there is a header
    csv_table t;
    memset(&t, 0, sizeof t);
    infl_dsw *w = NULL;
    char **class_names = NULL;
    char *class_buf = NULL;

    CHECK(read_all(ctx, csv_path, &text, &len));
    char *p = text;
    if ((unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
        p += 3;  // UTF-8 byte-order mark

    // An upper bound on the rows: the number of lines.
    int64_t nlines = 1;
    for (const char *q = p; *q; q++) nlines += *q == '\n';

    int ncols = 0;         // fields per row
    int label_col = -1;    // 0-based
    char label_desc[320];  // how messages name the label column
    int64_t line_no = 0, blank_line = 0;
    char *next = p;
    while (*next) {
        // one line: [line, eol), NUL-terminated in place, without its "\r\n"
        char *line = next, *eol = strchr(line, '\n');
        if (eol) {
            next = eol + 1;
        } else {
            eol = line + strlen(line);
            next = eol;
        }
        if (eol > line && eol[-1] == '\r') eol--;
        *eol = 0;
        line_no++;
        if ((line_no & 4095) == 0)
            GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
        if (csv_blank(line)) {
            if (!blank_line) blank_line = line_no;
            continue;
        }
        GOTO_IF(ctx, blank_line, INFL_E_FORMAT,
                "%s:%" PRId64 ": blank line among the rows (only blank lines at the end are allowed)",
                csv_path, blank_line);

        int split_done = 0;  // the first line is split while looking at the columns
        if (ncols == 0) {
            // the first line fixes the number of columns and finds the label column
            int cap = 1;
            for (const char *q = line; *q; q++) cap += *q == delim;
            fields = infl_malloc(ctx, (size_t)cap * sizeof *fields, "the CSV fields");
            GOTO_NOMEM_IF(!fields);
            int bad = 0;
            ncols = csv_split(line, delim, fields, cap, &bad);
            GOTO_IF(ctx, ncols < 0, INFL_E_FORMAT,
                    "%s:%" PRId64 ":%d: malformed quoted field (unterminated, or text after the "
                    "closing quote)",
                    csv_path, line_no, bad);
            GOTO_IF(ctx, ncols < 2, INFL_E_FORMAT,
                    "%s:%" PRId64 ": %d column (delimiter '%c'); expected a label column and at "
                    "least one feature column",
                    csv_path, line_no, ncols, delim);
            if (o.header) {
                for (int j = 0; j < ncols; j++) {
                    if (strcmp(fields[j].text, o.label) != 0) continue;
                    GOTO_IF(ctx, label_col >= 0, INFL_E_ARG,
                            "%s:%" PRId64 ": the header names the label column '%s' twice (columns "
                            "%d and %d, 0-based)",
                            csv_path, line_no, o.label, label_col, j);
                    label_col = j;
                }
            }
            if (label_col < 0 && all_digits(o.label)) {
                long v = strtol(o.label, NULL, 10);
                GOTO_IF(ctx, v >= ncols, INFL_E_ARG,
                        "%s:%" PRId64 ": label column index %s, but the rows have %d columns "
                        "(indices 0..%d)",
                        csv_path, line_no, o.label, ncols, ncols - 1);
                label_col = (int)v;
            }
            if (label_col < 0) {
                if (!o.header)
                    rc = infl_seterr(ctx, INFL_E_ARG,
                                     "%s: label column '%s': without a header the label column is "
                                     "a 0-based index (0..%d)",
                                     csv_path, o.label, ncols - 1);
                else {
                    char names[1024];
                    size_t off = 0;
                    for (int j = 0; j < ncols && off < sizeof names; j++) {
                        int n = snprintf(names + off, sizeof names - off, "%s'%s'", j ? ", " : "",
                                         fields[j].text);
                        if (n < 0) break;
                        off += (size_t)n;
                    }
                    rc = infl_seterr(ctx, INFL_E_ARG,
                                     "%s:%" PRId64 ": no label column '%s' in the header; the "
                                     "columns are %s",
                                     csv_path, line_no, o.label, names);
                }
                goto done;
            }
            if (o.header) {
                hdr = infl_malloc(ctx, (size_t)ncols * sizeof *hdr, "the CSV header");
                GOTO_NOMEM_IF(!hdr);
                for (int j = 0; j < ncols; j++) hdr[j] = fields[j].text;
            }
            if (o.header)
                snprintf(label_desc, sizeof label_desc, "label column %d ('%.256s')", label_col,
                         fields[label_col].text);
            else
                snprintf(label_desc, sizeof label_desc, "label column %d", label_col);

            t.d = ncols - 1;
            t.cap = nlines;
            t.x = infl_malloc(ctx, (size_t)t.cap * (size_t)t.d * sizeof(float), "the CSV features");
            t.y = infl_malloc(ctx, (size_t)t.cap * sizeof(int32_t), "the CSV labels");
            t.yf = infl_malloc(ctx, (size_t)t.cap * sizeof(float), "the CSV targets");
            t.is_test = infl_malloc(ctx, (size_t)t.cap, "the CSV split");
            GOTO_NOMEM_IF(!t.x || !t.y || !t.yf || !t.is_test);
            if (o.header) continue;  // the header holds no data
            split_done = 1;
        }

        // a data row
        int bad = 0;
        int nf = split_done ? ncols : csv_split(line, delim, fields, ncols, &bad);
        GOTO_IF(ctx, nf < 0, INFL_E_FORMAT,
                "%s:%" PRId64 ":%d: malformed quoted field (unterminated, or text after the closing "
                "quote)",
                csv_path, line_no, bad);
        GOTO_IF(ctx, nf != ncols, INFL_E_FORMAT,
                "%s:%" PRId64 ": %d fields, expected %d (as in %s)", csv_path, line_no, nf, ncols,
                o.header ? "the header" : "the first row");
        int64_t i = t.n;
        float *xr = t.x + i * t.d;
        for (int j = 0; j < ncols; j++) {
            double v = 0;
            int e = csv_number(fields[j].text, &v);
            const char *why = e == -1   ? "empty field, expected a number"
                              : e == -2 ? "not a number"
                                        : "not a finite number (NaN, Inf or beyond float32)";
            if (e != 0) {
                char name[160] = "", shown[80] = "";
                if (hdr) snprintf(name, sizeof name, " ('%.120s')", hdr[j]);
                if (e != -1) snprintf(shown, sizeof shown, ": '%.60s'", fields[j].text);
                rc = infl_seterr(ctx, e == -3 ? INFL_E_VALUE : INFL_E_FORMAT,
                                 "%s:%" PRId64 ":%d: column %d%s%s: %s%s", csv_path, line_no,
                                 fields[j].col, j, name, j == label_col ? ", the label" : "", why,
                                 shown);
                goto done;
            }
            if (j == label_col) {
                if (o.regression) {
                    t.yf[i] = (float)v;
                } else {
                    GOTO_IF(ctx, v < 0 || v != floor(v) || v > CSV_MAX_CLASS, INFL_E_VALUE,
                            "%s:%" PRId64 ":%d: %s: class label '%.60s', expected a whole number "
                            "in 0..%d (for real-valued targets import as regression)",
                            csv_path, line_no, fields[j].col, label_desc, fields[j].text,
                            CSV_MAX_CLASS);
                    t.y[i] = (int32_t)v;
                    if (t.y[i] > t.max_label) t.max_label = t.y[i];
                }
            } else {
                xr[j - (j > label_col)] = (float)v;
            }
        }
        t.is_test[i] = o.test_fraction > 0 &&
                       infl_rng_uniform(o.seed, INFL_RNG_SPLIT, (uint64_t)i, 0) < o.test_fraction;
        t.n++;
    }
    GOTO_IF(ctx, ncols == 0, INFL_E_FORMAT, "%s: empty file; expected %s CSV rows", csv_path,
            o.header ? "a header and" : "numeric");
    GOTO_IF(ctx, t.n == 0, INFL_E_FORMAT, "%s: a header but no data rows", csv_path);

    int64_t n_test = 0;
    for (int64_t i = 0; i < t.n; i++) n_test += t.is_test[i];
    int64_t n_train = t.n - n_test;
    GOTO_IF(ctx, o.test_fraction > 0 && (n_test == 0 || n_train == 0), INFL_E_ARG,
            "%s: test_fraction %g (seed %" PRIu64 ") puts %" PRId64 " of the %" PRId64
            " rows in /test and %" PRId64
            " in /train; both must be non-empty: use more rows or another fraction",
            csv_path, o.test_fraction, o.seed, n_test, t.n, n_train);

    // ---- write ----
    const infl_ykind kind = o.regression ? INFL_Y_REAL : INFL_Y_CLASS;
    CHECK(store_dataset_create(ctx, out_path, o.force, &w));
    CHECK(store_dataset_add_split(ctx, w, "train", n_train, t.d, kind, 1, NULL));
    if (n_test > 0) CHECK(store_dataset_add_split(ctx, w, "test", n_test, t.d, kind, 1, NULL));
    uint64_t done_rows = 0, total = (uint64_t)t.n;
    CHECK(csv_write_split(ctx, w, &t, "train", 0, o.regression, &done_rows, total));
    if (n_test > 0) CHECK(csv_write_split(ctx, w, &t, "test", 1, o.regression, &done_rows, total));
    if (!o.regression) {
        // /classes: "0" .. "K-1"
        int K = t.max_label + 1;
        class_names = infl_malloc(ctx, (size_t)K * sizeof *class_names, "the class names");
        class_buf = infl_malloc(ctx, (size_t)K * 12, "the class names");
        GOTO_NOMEM_IF(!class_names || !class_buf);
        for (int k = 0; k < K; k++) {
            class_names[k] = class_buf + (size_t)k * 12;
            snprintf(class_names[k], 12, "%d", k);
        }
        CHECK(store_dataset_set_classes(ctx, w, (const char *const *)class_names, K));
    }
    char src[4096 + 512];
    int off = snprintf(src, sizeof src, "csv %s; %s; header %s; %s", csv_path, label_desc,
                       o.header ? "yes" : "no", o.regression ? "regression" : "classes");
    if (o.test_fraction > 0 && off > 0 && (size_t)off < sizeof src)
        snprintf(src + off, sizeof src - (size_t)off, "; test_fraction %g seed %" PRIu64,
                 o.test_fraction, o.seed);
    CHECK(store_dataset_set_attr(ctx, w, "source", src));
    GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "import interrupted");
    rc = store_dataset_commit(ctx, w);  // frees w, also on failure
    w = NULL;
done:
    if (w) store_dataset_abort(w);
    free(text);
    free(fields);
    free(hdr);
    free(t.x);
    free(t.y);
    free(t.yf);
    free(t.is_test);
    free(class_names);
    free(class_buf);
    return rc;
}
