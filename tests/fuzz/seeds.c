/*
 * seeds.c — fuzz_seeds OUTDIR: the seed corpora of every harness, made at test time
 * from small real files (no binaries in git). It builds Fashion-MNIST IDX files of 20
 * images (the first of Debian's dataset-fashion-mnist when installed, else drawn from
 * a pattern), imports them (pool 4: 7×7), a tiny CSV and a few fortunes (Debian's
 * fortunes when installed, else a few lines of its own), learns BPE, trains a tiny MLP
 * and a tiny GPT, fits EK-FAC factors, ranks with the full score matrix and writes an
 * lds state; then writes each harness's inputs: options bytes and the text or IDX
 * files, and for the HDF5 harnesses a header and the builder's program of each file
 * (h5b_encode) with its variants, one dataset reshaped each. OUTDIR/<harness>/ holds
 * them; OUTDIR/raw/<harness>/ the HDF5 files as they are, for the raw harnesses of the
 * long run.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fuzzutil.h"
#include "store/store.h"

#define FM_N 20
#define FM_DIR "/usr/share/datasets/fashion-mnist"
#define FORTUNES "/usr/share/games/fortunes"

static const char *outdir;
static char work[4096];

static void die(const char *what, infl_ctx *ctx) {
    fprintf(stderr, "fuzz_seeds: %s%s%s\n", what, ctx ? ": " : "", ctx ? infl_ctx_error(ctx) : "");
    exit(1);
}

static const char *wpath(const char *name) {
    static char buf[4][4400];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", work, name);
    return buf[slot];
}

static void mkdirs(const char *a, const char *b) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", outdir, a);
    mkdir(p, 0755);
    if (b) {
        snprintf(p, sizeof p, "%s/%s/%s", outdir, a, b);
        mkdir(p, 0755);
    }
}

// Writes OUTDIR/<dir>/<name>: head (nh bytes), then body.
static void seed(const char *dir, const char *name, const void *head, size_t nh, const void *body, size_t nb) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s/%s", outdir, dir, name);
    fz_out o = {0};
    fz_put(&o, head, nh);
    fz_put(&o, body, nb);
    fz_write_file(p, o.p, o.n);
    fz_out_free(&o);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) die(path, NULL);
    fclose(f);
    *n = (size_t)len;
    return b;
}

#define MAX_VARIANTS 32  // reshaped variants of a file (h5b_encode)

// An HDF5 harness's seed: header then the program that rebuilds file, and with
// `variants` one seed per dataset (up to MAX_VARIANTS) that reshapes it; and the raw file.
static void h5seed(const char *harness, const char *name, const uint8_t *hdr, size_t nh, const char *file,
                   int variants) {
    fz_out prog = {0};
    int nd = h5b_encode(file, -1, &prog);
    if (nd < 0) die(file, NULL);
    seed(harness, name, hdr, nh, prog.p, prog.n);
    for (int k = 0; variants && k < nd && k < MAX_VARIANTS; k++) {
        char vname[128];
        snprintf(vname, sizeof vname, "%s-reshape-%d", name, k);
        prog.n = 0;
        h5b_encode(file, k, &prog);
        seed(harness, vname, hdr, nh, prog.p, prog.n);
    }
    fz_out_free(&prog);
    size_t n;
    uint8_t *raw = slurp(file, &n);
    char dir[64];
    snprintf(dir, sizeof dir, "raw/%s", harness);
    seed(dir, name, NULL, 0, raw, n);
    free(raw);
}

// ---- IDX ----

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

// The first FM_N images and labels as IDX files (header counts rewritten).
static void fm_bytes(uint8_t *img, uint8_t *lab) {
    const size_t ni = 16 + FM_N * 784, nl = 8 + FM_N;
    char p[256];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", FM_DIR);
    gzFile a = gzopen(p, "rb");
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", FM_DIR);
    gzFile b = gzopen(p, "rb");
    int real = a && b && gzread(a, img, (unsigned)ni) == (int)ni && gzread(b, lab, (unsigned)nl) == (int)nl;
    if (a) gzclose(a);
    if (b) gzclose(b);
    if (!real) {  // a pattern: a bright square whose size is the class
        memset(img, 0, ni);
        for (int i = 0; i < FM_N; i++) {
            lab[8 + i] = (uint8_t)(i % 10);
            for (int r = 0; r < 28; r++)
                for (int c = 0; c < 28; c++)
                    img[16 + i * 784 + r * 28 + c] = (r < 3 + 2 * (i % 10) && c < 3 + 2 * (i % 10)) ? 200 : 10;
        }
    }
    put_be32(img, 0x803);
    put_be32(img + 4, FM_N);
    put_be32(img + 8, 28);
    put_be32(img + 12, 28);
    put_be32(lab, 0x801);
    put_be32(lab + 4, FM_N);
}

static void gz_file(const char *path, const uint8_t *p, size_t n) {
    gzFile g = gzopen(path, "wb");
    if (!g || gzwrite(g, p, (unsigned)n) != (int)n || gzclose(g) != Z_OK) die(path, NULL);
}

static void idx_seeds(infl_ctx *ctx) {
    const size_t ni = 16 + FM_N * 784, nl = 8 + FM_N;
    uint8_t *img = malloc(ni), lab[8 + FM_N];
    if (!img) die("out of memory", NULL);
    fm_bytes(img, lab);
    // the files infl imports from (gzip'd), then the seeds: plain and gzip'd
    const char *names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                            "t10k-labels-idx1-ubyte.gz"};
    for (int i = 0; i < 4; i++) gz_file(wpath(names[i]), i % 2 ? lab : img, i % 2 ? nl : ni);
    size_t gi, gl;
    uint8_t *zi = slurp(wpath(names[0]), &gi), *zl = slurp(wpath(names[1]), &gl);
    static const uint8_t opts[] = {0x00, 0x14, 0x28, 0x4c};
    for (int k = 0; k < 4; k++) {
        int gz = k % 2;
        const uint8_t *I = gz ? zi : img, *L = gz ? zl : lab;
        size_t n1 = gz ? gi : ni, n2 = gz ? gl : nl;
        uint8_t head[3] = {opts[k], (uint8_t)n1, (uint8_t)(n1 >> 8)};
        fz_out o = {0};
        fz_put(&o, I, n1);
        fz_put(&o, L, n2);
        char name[32];
        snprintf(name, sizeof name, "fm-%s-%d", gz ? "gz" : "plain", k);
        seed("idx", name, head, 3, o.p, o.n);
        fz_out_free(&o);
    }
    free(zi);
    free(zl);
    free(img);
    infl_import_fmnist_options o = infl_import_fmnist_options_default();
    o.dir = work;
    o.limit = FM_N;
    o.pool = 4;
    if (infl_import_fashion_mnist(ctx, &o, wpath("fm.h5")) < 0) die("import fashion-mnist", ctx);
    o.flip_labels = 0.2;
    o.seed = 3;
    if (infl_import_fashion_mnist(ctx, &o, wpath("fmflip.h5")) < 0) die("import fashion-mnist --flip", ctx);
}

// ---- CSV ----

static void csv_seeds(infl_ctx *ctx) {
    static const struct {
        uint8_t opt[3];
        const char *text;
    } c[] = {
        {{0, 1, 4}, "f1,f2,label\n0.5,1,0\n-2,3.25,1\n7,8,2\n1e3,-0.5,1\n"},
        {{1, 0, 0}, "1;0.1;0.2\n0;0.3;0.4\n2;0.5;0.6\n"},
        {{0, 1 | 2 | 8, 5}, "\"a\",\"b, c\",y\n1,2,3.5\n4,5,-6.25\n\"7\",8,9\n10,11,12\n"},
        {{2, 1, 1}, "x\tlabel\tz\n1\t0\t2\n3\t1\t4\n\n"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "csv-%zu", i);
        seed("csv", name, c[i].opt, 3, c[i].text, strlen(c[i].text));
    }
    fz_write_file(wpath("in.csv"), c[0].text, strlen(c[0].text));
    infl_import_csv_options o = infl_import_csv_options_default();
    o.label = "label";
    if (infl_import_csv(ctx, wpath("in.csv"), &o, wpath("csv.h5")) < 0) die("import csv", ctx);
    fz_write_file(wpath("reg.csv"), c[2].text, strlen(c[2].text));
    o.label = "y";
    o.regression = 1;
    o.test_fraction = 0.5;
    o.seed = 2;
    if (infl_import_csv(ctx, wpath("reg.csv"), &o, wpath("csvreg.h5")) < 0) die("import csv --regression", ctx);
}

// ---- text and tokenizers ----

// Up to max bytes of a fortune file, cut after a "%" line (or a text of its own).
static size_t fortunes(const char *topic, char *buf, size_t max) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", FORTUNES, topic);
    FILE *f = fopen(p, "rb");
    size_t n = f ? fread(buf, 1, max - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    char *cut = NULL;
    for (char *q = buf; (q = strstr(q, "\n%\n")) != NULL; q += 3) cut = q + 3;
    if (cut) {
        *cut = 0;
        return (size_t)(cut - buf);
    }
    static const char own[] = "You will be successful in your work.\n%\nThe computer is down.\n%\n"
                              "A bird in the hand is worth two in the bush.\n%\nQ: Why?\nA: Because.\n%\n";
    snprintf(buf, max, "%s", own);
    return strlen(buf);
}

static void text_seeds(infl_ctx *ctx) {
    char a[1600], b[1600];
    size_t na = fortunes("fortunes", a, sizeof a), nb = fortunes("computers", b, sizeof b);
    fz_write_file(wpath("fortunes"), a, na);
    fz_write_file(wpath("computers"), b, nb);
    fz_out both = {0};
    fz_put(&both, a, na);
    fz_put_u8(&both, 0xFF);
    fz_put(&both, b, nb);
    static const uint8_t opts[][4] = {{0, 0, 0, 0}, {0, 2 * 40 + 1, 0, 2}, {1, 0, 4 * 6 + 1, 0}, {2, 0, 0, 4 * 3 + 1}};
    for (int k = 0; k < 4; k++) {
        char name[16];
        snprintf(name, sizeof name, "text-%d", k);
        seed("text", name, opts[k], 4, both.p, k == 2 ? na : both.n);
    }
    fz_out_free(&both);
    const char *files[2] = {wpath("fortunes"), wpath("computers")};
    infl_import_text_options o = infl_import_text_options_default();
    o.files = files;
    o.nfiles = 2;
    o.test_fraction = 0.3;
    o.seed = 1;
    if (infl_import_text(ctx, &o, wpath("docs.h5"), NULL) < 0) die("import text", ctx);
    o.bpe_vocab = 300;
    if (infl_import_text(ctx, &o, wpath("docsbpe.h5"), NULL) < 0) die("import text --bpe", ctx);

    // tokenizer seeds: no table, and the learned table, each with the text
    infl_split *s = NULL;
    infl_dataref r;
    char ref[4400];
    snprintf(ref, sizeof ref, "%s:/train", wpath("docsbpe.h5"));
    if (infl_dataref_parse(ctx, ref, &r) < 0 || store_split_open(ctx, &r, &s) < 0) die("docsbpe.h5", ctx);
    const infl_tokenizer *t = store_split_tokenizer(s);
    uint8_t head[3] = {40, 1, 0};
    seed("tok", "tok-none", head, 3, a, na);
    fz_out m = {0};
    int nm = t->n_merges < 254 ? t->n_merges : 254;
    for (int i = 0; i < 2 * nm; i++) {
        uint16_t v = (uint16_t)(t->merges[i] + 8);
        fz_put(&m, &v, 2);  // little-endian machines, as the harness reads
    }
    fz_put(&m, b, nb);
    head[2] = (uint8_t)nm;
    seed("tok", "tok-bpe", head, 3, m.p, m.n);
    fz_out_free(&m);
    store_split_close(s);
}

// ---- runs, factors, scores, lds ----

static void captured_seed(infl_ctx *ctx);

static void model_seeds(infl_ctx *ctx) {
    char data[4400];
    snprintf(data, sizeof data, "%s:/train", wpath("fm.h5"));
    infl_train_options t = infl_train_options_default();
    t.data = data;
    t.nlayers = 2;
    t.widths[0] = 49, t.widths[1] = 8, t.widths[2] = 10;
    t.epochs = 2;
    t.batch = 8;
    t.checkpoint_every = 2;
    if (infl_train(ctx, &t, wpath("run.h5"), NULL) < 0) die("train an MLP", ctx);

    char docs[4400];
    snprintf(docs, sizeof docs, "%s:/train", wpath("docsbpe.h5"));
    infl_train_options g = infl_train_options_gpt_default();
    g.data = docs;
    g.nlayers = 1;
    g.heads = 2;
    g.dim = 8;
    g.context = 16;
    g.epochs = 1;
    g.batch = 4;
    g.warmup = 1;
    g.checkpoint_every = 0;
    if (infl_train(ctx, &g, wpath("gpt.h5"), NULL) < 0) die("train a GPT", ctx);

    infl_fit_options f = infl_fit_options_default();
    f.run = wpath("run.h5");
    if (infl_fit(ctx, &f, wpath("factors.h5"), NULL) < 0) die("fit", ctx);
    f.run = wpath("gpt.h5");
    if (infl_fit(ctx, &f, wpath("gptfactors.h5"), NULL) < 0) die("fit a GPT", ctx);

    char query[4400];
    snprintf(query, sizeof query, "%s:/test[0:3]", wpath("fm.h5"));
    infl_rank_options r = infl_rank_options_default();
    r.run = wpath("run.h5");
    r.query = query;
    r.top = 3;
    r.output = wpath("scores.h5");
    r.save_scores = 1;
    infl_rank_result *res = NULL;
    if (infl_rank(ctx, &r, &res) < 0) die("rank", ctx);
    infl_rank_result_free(res);
    r.output = wpath("self.h5");
    r.save_scores = 0;
    infl_self_result *sr = NULL;
    if (infl_self(ctx, &r, &sr) < 0) die("self", ctx);
    infl_self_result_free(sr);

    infl_lds_state s;
    fuzz_lds_settings(&s);
    double out[12];
    int32_t done[4] = {1, 1, 0, 1};
    for (int i = 0; i < 12; i++) out[i] = 0.25 * i - 1;
    s.outputs = out;
    s.done = done;
    if (store_lds_write(ctx, wpath("lds.h5"), &s) < 0) die("lds state", ctx);

    // gradient indexes: a kron one in float16 of every checkpoint, a dense float32 one of the GPT's
    infl_index_options io = infl_index_options_default();
    io.run = wpath("run.h5");
    io.projection = INFL_PROJ_KRON;
    io.kron_out = 3;
    io.kron_in = 4;
    if (infl_index(ctx, &io, wpath("index.h5"), &(infl_index_report){0}) < 0) die("index", ctx);
    io.run = wpath("gpt.h5");
    io.projection = INFL_PROJ_RADEMACHER;
    io.dim = 16;
    io.float16 = 0;
    if (infl_index(ctx, &io, wpath("gptindex.h5"), &(infl_index_report){0}) < 0) die("index a GPT", ctx);
    captured_seed(ctx);
}

// A captured file of two layers (the second without a bias), examples of 1 to 3 token rows,
// two checkpoints, Ds at the first: what python/infl/torch.py writes, with made-up values.
static void captured_seed(infl_ctx *ctx) {
    infl_captured_spec cs = {.L = 2, .d_in = {4, 5}, .d_out = {5, 3}, .bias = {1, 0}, .outputs = 3, .tokens = 1};
    snprintf(cs.names[0], sizeof cs.names[0], "fc1");
    snprintf(cs.names[1], sizeof cs.names[1], "transformer.h.0.mlp.c_proj");
    infl_capw *w = NULL;
    if (store_captured_create(ctx, wpath("captured.h5"), 1, &cs, &w) < 0) die("captured", ctx);
    float p[64], v[64];
    int64_t offs[2][7] = {{0, 1, 3, 6, 7, 9, 10}, {0, 2, 3, 5, 0, 0, 0}};
    int32_t y[6] = {0, 2, 1, 1, 0, 2};
    for (int i = 0; i < 64; i++) p[i] = v[i] = 0.125f * (float)(i % 13) - 0.5f;
    const char *sp[2] = {"train", "test"};
    int ns[2] = {6, 3};
    char rel[128], name[32];
    for (int s = 0; s < 2; s++) {
        snprintf(rel, sizeof rel, "%s/offsets", sp[s]);
        if (store_captured_put(ctx, w, rel, 8, ns[s] + 1, 0, offs[s]) < 0) die("captured", ctx);
        snprintf(rel, sizeof rel, "%s/y", sp[s]);
        if (store_captured_put(ctx, w, rel, 4, ns[s], 0, y) < 0) die("captured", ctx);
    }
    for (int c = 0; c < 2; c++) {
        if (store_captured_checkpoint(ctx, w, 10 * (c + 1), c + 1, 0.1, p, name, sizeof name) < 0) die("captured", ctx);
        for (int s = 0; s < 2; s++) {
            int64_t R = offs[s][ns[s]];
            snprintf(rel, sizeof rel, "checkpoints/%s/%s/loss", name, sp[s]);
            if (store_captured_put(ctx, w, rel, 0, ns[s], 0, v) < 0) die("captured", ctx);
            for (int l = 0; l < 2; l++)
                for (int part = 0; part < (c == 0 ? 3 : 2); part++) {
                    static const char *const pn[] = {"A", "D", "Ds"};
                    snprintf(rel, sizeof rel, "checkpoints/%s/%s/layer%d/%s", name, sp[s], l, pn[part]);
                    if (store_captured_put(ctx, w, rel, 0, R, part ? cs.d_out[l] : cs.d_in[l], v) < 0)
                        die("captured", ctx);
                }
        }
    }
    if (store_captured_commit(ctx, w) < 0) die("captured", ctx);
}

static void h5_seeds(void) {
    static const uint8_t d0[] = {0, 0, 0, 16}, d1[] = {1, 0, 0, 8}, d2[] = {(2 << 2) | 0, 2, 9, 32};
    static const char *const ds[] = {"fm.h5", "fmflip.h5", "csv.h5", "csvreg.h5", "docs.h5", "docsbpe.h5"};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s-train", ds[i]);
        h5seed("dataset", name, d0, 4, wpath(ds[i]), 1);
        snprintf(name, sizeof name, "%s-test", ds[i]);
        h5seed("dataset", name, d1, 4, wpath(ds[i]), 0);
        snprintf(name, sizeof name, "%s-range", ds[i]);
        h5seed("dataset", name, d2, 4, wpath(ds[i]), 0);
    }
    static const uint8_t r0[] = {0, 1};
    h5seed("run", "mlp", r0, 2, wpath("run.h5"), 1);
    h5seed("run", "gpt", r0, 2, wpath("gpt.h5"), 1);
    static const uint8_t z[] = {0};
    h5seed("factors", "mlp", z, 1, wpath("factors.h5"), 1);
    h5seed("factors", "gpt", z, 1, wpath("gptfactors.h5"), 1);
    static const uint8_t s0[] = {5, 3};
    h5seed("scores", "rank", s0, 2, wpath("scores.h5"), 1);
    h5seed("scores", "self", s0, 2, wpath("self.h5"), 1);
    static const uint8_t l0[] = {3, 2};  // 4 models, 3 queries: the state's own
    h5seed("lds", "state", l0, 2, wpath("lds.h5"), 1);
    static const uint8_t x0[] = {1, 5};
    h5seed("index", "kron", x0, 2, wpath("index.h5"), 1);
    h5seed("index", "gpt", x0, 2, wpath("gptindex.h5"), 1);
    static const uint8_t c0[] = {0, 1, 4}, c1[] = {1, 0, 3};
    h5seed("captured", "train", c0, 3, wpath("captured.h5"), 1);
    h5seed("captured", "test", c1, 3, wpath("captured.h5"), 0);
    h5seed("run", "captured", r0, 2, wpath("captured.h5"), 0);
    static const char *const all[] = {"fm.h5",  "fmflip.h5",  "csv.h5",     "csvreg.h5", "docs.h5", "docsbpe.h5",
                                      "run.h5", "gpt.h5",     "factors.h5", "gptfactors.h5", "scores.h5",
                                      "self.h5", "lds.h5", "index.h5", "captured.h5"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) h5seed("info", all[i], z, 1, wpath(all[i]), 0);
}

static void rm_work(void) {
    DIR *d = opendir(work);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') unlink(wpath(e->d_name));
    closedir(d);
    rmdir(work);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds OUTDIR\n");
        return 2;
    }
    outdir = argv[1];
    mkdir(outdir, 0755);
    snprintf(work, sizeof work, "%s/work-XXXXXX", outdir);
    if (!mkdtemp(work)) die("cannot make a work folder", NULL);
    atexit(rm_work);
    static const char *const harnesses[] = {"idx", "csv", "text", "tok", "dataset", "run", "factors", "scores",
                                            "lds", "index", "info", "captured"};
    mkdirs("raw", NULL);
    for (size_t i = 0; i < sizeof harnesses / sizeof harnesses[0]; i++) {
        mkdirs(harnesses[i], NULL);
        if (i >= 4) mkdirs("raw", harnesses[i]);
    }
    infl_ctx *ctx = fz_ctx();
    idx_seeds(ctx);
    csv_seeds(ctx);
    text_seeds(ctx);
    model_seeds(ctx);
    h5_seeds();
    infl_ctx_free(ctx);
    printf("fuzz_seeds: seed corpora in %s\n", outdir);
    return 0;
}
