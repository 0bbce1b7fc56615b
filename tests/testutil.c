/*
 * testutil.c — helpers shared by the Criterion tests (see testutil.h).
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cli/cli.h"
#include "models/model.h"
#include "store/store.h"

static char g_dir[512];

const char *tu_tmpdir(void) {
    if (!g_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/infl-test-XXXXXX", base && *base ? base : "/tmp");
        cr_assert(mkdtemp(g_dir) != NULL, "mkdtemp failed");
    }
    return g_dir;
}

const char *tu_path(const char *name) {
    static char buf[8][1024];
    static int slot;
    char *b = buf[slot++ & 7];
    snprintf(b, 1024, "%s/%s", tu_tmpdir(), name);
    return b;
}

infl_ctx *tu_ctx(void) {
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = "cpu";
    infl_ctx *ctx = NULL;
    infl_status st = infl_ctx_create(&o, &ctx);
    cr_assert(st == INFL_OK, "infl_ctx_create: %s", infl_ctx_error(ctx));
    return ctx;
}

void tu_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "cannot write %s", path);
    cr_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

char *tu_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = 0;
    if (n) *n = got;
    return buf;
}

int tu_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static char *g_out, *g_err;

int tu_cli(const char *const *argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    char outp[1100], errp[1100];
    snprintf(outp, sizeof outp, "%s/.cli-out", tu_tmpdir());
    snprintf(errp, sizeof errp, "%s/.cli-err", tu_tmpdir());
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    FILE *fo = freopen(outp, "w", stdout);
    FILE *fe = freopen(errp, "w", stderr);
    cr_assert(fo && fe);
    int rc = infl_cli_main(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    free(g_out);
    free(g_err);
    g_out = tu_read_file(outp, NULL);
    g_err = tu_read_file(errp, NULL);
    return rc;
}

const char *tu_out(void) { return g_out ? g_out : ""; }
const char *tu_err(void) { return g_err ? g_err : ""; }

double tu_uniform(uint64_t *s) {
    // splitmix64
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

#include <math.h>

#include "store/store.h"

static void blobs_split(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n, int d, int k, const double *mu,
                        uint64_t *st) {
    cr_assert_eq(store_dataset_add_split(ctx, w, split, n, d, k ? INFL_Y_CLASS : INFL_Y_REAL, 1, NULL), INFL_OK,
                 "%s", infl_ctx_error(ctx));
    float *x = malloc(sizeof(float) * (size_t)n * d), *yf = malloc(sizeof(float) * (size_t)n);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int c = k ? (int)(tu_uniform(st) * k) : 0;
        double t = 0;
        for (int j = 0; j < d; j++) {
            double g = sqrt(-2 * log(1 - tu_uniform(st))) * cos(6.283185307 * tu_uniform(st));
            x[i * d + j] = (float)(mu[c * d + j] + 0.7 * g);
            t += mu[j] * x[i * d + j];
        }
        y[i] = c;
        yf[i] = (float)(t + 0.1 * (tu_uniform(st) - 0.5));
    }
    cr_assert_eq(store_dataset_write_rows(ctx, w, split, 0, n, x, k ? y : NULL, k ? NULL : yf), INFL_OK, "%s",
                 infl_ctx_error(ctx));
    free(x);
    free(y);
    free(yf);
}

void tu_make_blobs(const char *path, int64_t n, int d, int k, uint64_t seed) {
    infl_ctx *ctx = tu_ctx();
    uint64_t st = seed * 7919 + 1;
    int kk = k ? k : 1;
    double *mu = malloc(sizeof(double) * (size_t)kk * d);
    for (int i = 0; i < kk * d; i++) mu[i] = 2 * tu_uniform(&st) - 1;
    infl_dsw *w = NULL;
    cr_assert_eq(store_dataset_create(ctx, path, 1, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    blobs_split(ctx, w, "train", n, d, k, mu, &st);
    blobs_split(ctx, w, "test", n / 2 > 0 ? n / 2 : 1, d, k, mu, &st);
    if (k) {
        char names[64][8];
        const char *ptr[64];
        for (int c = 0; c < k && c < 64; c++) {
            snprintf(names[c], sizeof names[c], "c%d", c);
            ptr[c] = names[c];
        }
        cr_assert_eq(store_dataset_set_classes(ctx, w, ptr, k), INFL_OK);
    }
    cr_assert_eq(store_dataset_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    free(mu);
    infl_ctx_free(ctx);
}

// ---- the float64 reference ----

double tu_ref_act(infl_activation a, double z) {
    switch (a) {
    case INFL_ACT_RELU: return z > 0 ? z : 0;
    case INFL_ACT_TANH: return tanh(z);
    case INFL_ACT_GELU: return 0.5 * z * (1 + erf(z / sqrt(2.0)));
    }
    return z;
}

double tu_ref_dact(infl_activation a, double z) {
    switch (a) {
    case INFL_ACT_RELU: return z > 0 ? 1 : 0;
    case INFL_ACT_TANH: return 1 - tanh(z) * tanh(z);
    case INFL_ACT_GELU: return 0.5 * (1 + erf(z / sqrt(2.0))) + z * exp(-0.5 * z * z) / sqrt(2 * M_PI);
    }
    return 1;
}

// Loss of one example; when g != NULL adds ∇_w ℓ into g (nparams) and, when
// delta != NULL, stores δ_l (concatenated over layers) and a_{l-1}.
double tu_ref_example(const infl_mlp_spec *s, const double *w, const double *x, int y, const double *yf,
                          double *g, double *delta) {
    double z[8][64], a[9][64];
    for (int j = 0; j < s->widths[0]; j++) a[0][j] = x[j];
    for (int l = 0; l < s->L; l++) {
        int din = s->widths[l], dout = s->widths[l + 1];
        const double *W = w + infl_mlp_woff(s, l), *b = w + infl_mlp_boff(s, l);
        for (int o = 0; o < dout; o++) {
            double t = b[o];
            for (int i = 0; i < din; i++) t += W[o * din + i] * a[l][i];
            z[l][o] = t;
            a[l + 1][o] = l < s->L - 1 ? tu_ref_act(s->act, t) : t;
        }
    }
    int K = s->widths[s->L];
    double *zl = z[s->L - 1], d[8][64], loss = 0;
    switch (s->loss) {
    case INFL_LOSS_SOFTMAX_CE: {
        double m = zl[0], sum = 0;
        for (int j = 1; j < K; j++) m = fmax(m, zl[j]);
        for (int j = 0; j < K; j++) sum += exp(zl[j] - m);
        double lse = m + log(sum);
        loss = lse - zl[y];
        for (int j = 0; j < K; j++) d[s->L - 1][j] = exp(zl[j] - lse) - (j == y);
        break;
    }
    case INFL_LOSS_SIGMOID_CE:
        loss = log1p(exp(-fabs(zl[0]))) + fmax(zl[0], 0) - y * zl[0];
        d[s->L - 1][0] = 1 / (1 + exp(-zl[0])) - y;
        break;
    case INFL_LOSS_MSE:
        for (int j = 0; j < K; j++) {
            loss += 0.5 * (zl[j] - yf[j]) * (zl[j] - yf[j]);
            d[s->L - 1][j] = zl[j] - yf[j];
        }
        break;
    }
    if (!g) return loss;
    for (int l = s->L - 1; l >= 0; l--) {
        int din = s->widths[l], dout = s->widths[l + 1];
        double *gW = g + infl_mlp_woff(s, l), *gb = g + infl_mlp_boff(s, l);
        const double *W = w + infl_mlp_woff(s, l);
        for (int o = 0; o < dout; o++) {
            gb[o] += d[l][o];
            for (int i = 0; i < din; i++) gW[o * din + i] += d[l][o] * a[l][i];
        }
        if (l > 0)
            for (int i = 0; i < din; i++) {
                double t = 0;
                for (int o = 0; o < dout; o++) t += d[l][o] * W[o * din + i];
                d[l - 1][i] = t * tu_ref_dact(s->act, z[l - 1][i]);
            }
    }
    if (delta) {
        size_t off = 0;
        for (int l = 0; l < s->L; l++)
            for (int o = 0; o < s->widths[l + 1]; o++) delta[off++] = d[l][o];
    }
    return loss;
}


static char g_tu_refs[4][1200];

const char *tu_ref(int slot, const char *file, const char *split) {
    snprintf(g_tu_refs[slot], sizeof g_tu_refs[slot], "%s:/%s", file, split);
    return g_tu_refs[slot];
}

void *tu_upload(infl_ctx *ctx, const void *h, size_t bytes) {
    void *d = NULL;
    cr_assert_eq(ctx->be->alloc(ctx, bytes ? bytes : 1, &d), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(ctx->be->upload(ctx, d, h, bytes), INFL_OK, "%s", infl_ctx_error(ctx));
    return d;
}

struct infl_split *tu_open_split(infl_ctx *ctx, const char *ref) {
    infl_dataref r;
    cr_assert_eq(infl_dataref_parse(ctx, ref, &r), INFL_OK, "%s: %s", ref, infl_ctx_error(ctx));
    infl_split *s = NULL;
    cr_assert_eq(store_split_open(ctx, &r, &s), INFL_OK, "%s: %s", ref, infl_ctx_error(ctx));
    return s;
}

int tu_have_fmnist(void) {
    struct stat st;
    return stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &st) == 0;
}

void tu_import_fm7(const char *path, int64_t limit, double flip, uint64_t seed) {
    infl_ctx *ctx = tu_ctx();
    infl_import_fmnist_options io = infl_import_fmnist_options_default();
    io.limit = limit;
    io.pool = 4;
    io.flip_labels = flip;
    io.seed = seed;
    cr_assert_eq(infl_import_fashion_mnist(ctx, &io, path), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

void tu_import_lines(const char *txt, const char *out, int bpe, double test_fraction) {
    infl_ctx *ctx = tu_ctx();
    infl_import_text_options o = infl_import_text_options_default();
    const char *files[1] = {txt};
    o.files = files;
    o.nfiles = 1;
    o.sep = "line";
    o.bpe_vocab = bpe;
    o.test_fraction = test_fraction;
    o.force = 1;
    cr_assert_eq(infl_import_text(ctx, &o, out, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

void tu_tiny_gpt(const char *data, const char *run, double test_fraction, int epochs, int every) {
    char txt[4096];
    snprintf(txt, sizeof txt, "%s.txt", data);
    FILE *f = fopen(txt, "w");
    cr_assert_not_null(f);
    const char *words[] = {"cat", "dog ran far", "sun", "tea is hot", "it is late at night again"};
    uint64_t st = 3;
    for (int i = 0; i < 40; i++) fprintf(f, "%s %s\n", words[(int)(tu_uniform(&st) * 5)], words[i % 5]);
    fclose(f);
    tu_import_lines(txt, data, 0, test_fraction);
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_gpt_default();
    o.data = tu_ref(3, data, "train");
    o.nlayers = 1;
    o.heads = 2;
    o.dim = 8;
    o.context = 16;
    o.epochs = epochs;
    o.batch = 8;
    o.checkpoint_every = every;
    o.force = 1;
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

void tu_train_mlp(const char *data, const char *run, int L, const int *w, void (*tweak)(infl_train_options *o, void *u),
                  void *u) {
    infl_ctx *ctx = tu_ctx();
    infl_train_options o = infl_train_options_default();
    o.data = tu_ref(3, data, "train");
    o.nlayers = L;
    for (int l = 0; l <= L; l++) o.widths[l] = w[l];
    o.optimizer = INFL_OPT_SGD;
    o.force = 1;
    if (tweak) tweak(&o, u);
    cr_assert_eq(infl_train(ctx, &o, run, NULL), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_ctx_free(ctx);
}

// ---- captures (store/store_captured.c) of infl's own runs ----


// Records every layer's A, Δ and the losses of split `sp` of data (all of it: rows, or
// documents of a GPT) at checkpoint c of the run into the captured writer, through the
// seam (the CPU backend). The offsets and labels go with the first checkpoint.
static void capture_split(infl_ctx *ctx, infl_run *run, int c, const char *ckname, const char *data, const char *sp,
                          infl_capw *w, tu_cap_fault fault) {
    infl_model *m = NULL;
    cr_assert_eq(infl_model_create(ctx, store_run_spec(run), 0, &m), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_split *s = tu_open_split(ctx, tu_ref(0, data, sp));
    const infl_split_info *in = store_split_info(s);
    int n = (int)in->n, d = (int)in->d, T = m->tokens ? m->spec.gpt.context : 0;
    float *x = malloc(((size_t)n * d + 1) * sizeof(float)), *hp = malloc(m->nparams * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t)), *tok = malloc(((size_t)n * T + 1) * sizeof(int32_t));
    int32_t *len = malloc((size_t)n * sizeof(int32_t));
    if (T)
        cr_assert_eq(store_split_read_docs(ctx, s, 0, n, T, 0, tok, len, y), INFL_OK);
    else
        cr_assert_eq(store_split_read(ctx, s, 0, n, x, y, NULL), INFL_OK);
    cr_assert_eq(store_run_load(ctx, run, c, hp), INFL_OK);
    float *dx = tu_upload(ctx, x, ((size_t)n * d + 1) * sizeof(float)), *dp = tu_upload(ctx, hp, m->nparams * sizeof(float));
    int32_t *dy = tu_upload(ctx, y, (size_t)n * sizeof(int32_t));
    infl_model_work *work = NULL;
    cr_assert_eq(infl_model_work_create(ctx, m, n, &work), INFL_OK);
    infl_batch bt = T ? (infl_batch){.b = n, .tok = tok, .T = T, .len = len} : (infl_batch){.b = n, .x = dx, .y = dy};
    cr_assert_eq(infl_model_factors(ctx, m, dp, &bt, work), INFL_OK, "%s", infl_ctx_error(ctx));
    int R = work->rows;
    char rel[256];
    for (int l = 0; l < m->nlayers; l++) {
        int din = m->layer[l].d_in, dout = m->layer[l].d_out;
        float *A = malloc((size_t)R * din * sizeof(float)), *D = malloc((size_t)R * dout * sizeof(float));
        cr_assert_eq(ctx->be->download(ctx, A, work->A[l], (size_t)R * din * sizeof(float)), INFL_OK);
        cr_assert_eq(ctx->be->download(ctx, D, work->D[l], (size_t)R * dout * sizeof(float)), INFL_OK);
        if (fault == TU_CAP_NAN && l == 1) A[3 * din + 1] = NAN;
        if (!(fault == TU_CAP_NO_LAYER && l == 1)) {
            snprintf(rel, sizeof rel, "checkpoints/%s/%s/layer%d/A", ckname, sp, l);
            cr_assert_eq(store_captured_put(ctx, w, rel, 0, R, din, A), INFL_OK, "%s", infl_ctx_error(ctx));
            snprintf(rel, sizeof rel, "checkpoints/%s/%s/layer%d/D", ckname, sp, l);
            int nd = fault == TU_CAP_SHORT_D && l == 0 ? R - 1 : R;
            cr_assert_eq(store_captured_put(ctx, w, rel, 0, nd, dout, D), INFL_OK, "%s", infl_ctx_error(ctx));
        }
        free(A);
        free(D);
    }
    float *loss = malloc((size_t)n * sizeof(float));
    cr_assert_eq(ctx->be->download(ctx, loss, work->loss, (size_t)n * sizeof(float)), INFL_OK);
    snprintf(rel, sizeof rel, "checkpoints/%s/%s/loss", ckname, sp);
    cr_assert_eq(store_captured_put(ctx, w, rel, 0, n, 0, loss), INFL_OK);
    if (c == 0) {
        int64_t *offs = malloc(((size_t)n + 1) * sizeof(int64_t));
        for (int i = 0; i <= n; i++) offs[i] = work->row_off[i] + (fault == TU_CAP_BAD_OFFSETS ? 1 : 0);
        if (fault == TU_CAP_EMPTY_EXAMPLE)
            for (int i = 2; i <= n; i++) offs[i]--;  // example 1 of no row, the others of one
        snprintf(rel, sizeof rel, "%s/offsets", sp);
        cr_assert_eq(store_captured_put(ctx, w, rel, 8, n + 1, 0, offs), INFL_OK);
        snprintf(rel, sizeof rel, "%s/y", sp);
        if (fault != TU_CAP_NO_LABELS) cr_assert_eq(store_captured_put(ctx, w, rel, 4, n, 0, y), INFL_OK);
        free(offs);
    }
    free(loss);
    infl_model_work_free(ctx, m, work);
    infl_be_free(ctx, dx);
    infl_be_free(ctx, dp);
    infl_be_free(ctx, dy);
    free(x);
    free(y);
    free(tok);
    free(len);
    free(hp);
    store_split_close(s);
    infl_model_free(m);
}

// The run's captured twin: every checkpoint, splits train and test; the checkpoints' weights
// as the captured layout has them (the layer space: each layer's W, then b).
void tu_capture_run(const char *run_path, const char *data, const char *out, tu_cap_fault fault) {
    infl_ctx *ctx = tu_ctx();
    infl_run *run = NULL;
    cr_assert_eq(store_run_open(ctx, run_path, &run), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_model *m = NULL;
    cr_assert_eq(infl_model_create(ctx, store_run_spec(run), 0, &m), INFL_OK, "%s", infl_ctx_error(ctx));
    infl_captured_spec cs = {.L = m->nlayers, .outputs = m->outputs, .tokens = m->tokens, .wd = m->wd};
    for (int l = 0; l < m->nlayers; l++) {
        cs.d_in[l] = m->layer[l].d_in;
        cs.d_out[l] = m->layer[l].d_out;
        cs.bias[l] = m->layer[l].bias;
        snprintf(cs.names[l], sizeof cs.names[l], "%s", m->layer[l].name);
    }
    infl_capw *w = NULL;
    cr_assert_eq(store_captured_create(ctx, out, 1, &cs, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    int nck = store_run_ncheckpoints(run);
    float *hp = malloc(m->nparams * sizeof(float)), *ls = malloc(m->lsize * sizeof(float));
    for (int c = 0; c < nck; c++) {
        const infl_ckpt_info *ci = store_run_checkpoint(run, c);
        char name[32];
        cr_assert_eq(store_run_load(ctx, run, c, hp), INFL_OK);
        for (int l = 0; l < m->nlayers; l++) {
            const infl_linear *ly = &m->layer[l];
            memcpy(ls + m->loff[l], hp + ly->w_off, (size_t)ly->d_out * ly->d_in * sizeof(float));
            if (ly->bias)
                memcpy(ls + m->loff[l] + (size_t)ly->d_out * ly->d_in, hp + ly->b_off, (size_t)ly->d_out * sizeof(float));
        }
        cr_assert_eq(store_captured_checkpoint(ctx, w, ci->step, ci->epoch, ci->lr, ls, name, sizeof name), INFL_OK,
                     "%s", infl_ctx_error(ctx));
        cr_assert_str_eq(name, ci->name);
        capture_split(ctx, run, c, name, data, "train", w, fault);
        capture_split(ctx, run, c, name, data, "test", w, TU_CAP_OK);
    }
    cr_assert_eq(store_captured_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    free(hp);
    free(ls);
    infl_model_free(m);
    store_run_close(run);
    infl_ctx_free(ctx);
}

