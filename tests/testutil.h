/*
 * testutil.h — helpers shared by the Criterion tests: temporary folders, a CPU
 * context, file helpers, and running the CLI in-process.
 */
#ifndef INFL_TESTUTIL_H
#define INFL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "infl.h"

// A fresh temporary folder for this test (mkdtemp under $TMPDIR or /tmp); the path
// is static storage valid for the test's life. Criterion runs each test in its own
// process, so the folder is the test's own.
const char *tu_tmpdir(void);
// "<tmpdir>/<name>" in a static rotating buffer (8 slots).
const char *tu_path(const char *name);
// A context on the CPU backend; asserts on failure.
infl_ctx *tu_ctx(void);
// Writes bytes to a file; asserts on failure.
void tu_write_file(const char *path, const void *data, size_t n);
// Reads a whole file (malloc'd, NUL-terminated); NULL when it cannot be read.
char *tu_read_file(const char *path, size_t *n);
int tu_exists(const char *path);
// Runs the CLI in-process with argv (NULL-terminated) and returns its exit code;
// stdout and stderr of the command are captured into tu_out() / tu_err().
int tu_cli(const char *const *argv);
const char *tu_out(void);
const char *tu_err(void);
// Deterministic uniform [0,1) for fixtures.
double tu_uniform(uint64_t *state);

// ---- a float64 reference MLP (plain loops), checked against finite differences in
// test_mlp.c and used as the oracle of other tests ----
#include "core/spec.h"

// An MLP spec as the model spec the store takes (a pointer to a compound literal).
#define TU_MS(s) (&(infl_model_spec){.kind = INFL_MODEL_MLP, .mlp = (s)})
double tu_ref_act(infl_activation a, double z);
double tu_ref_dact(infl_activation a, double z);
// Loss of one example (x (d_0), class y or targets yf (d_L)); when g != NULL adds
// ∇_w ℓ into g (nparams, spec.h layout); when delta != NULL stores δ_l of every
// layer, concatenated.
double tu_ref_example(const infl_mlp_spec *s, const double *w, const double *x, int y, const double *yf, double *g,
                      double *delta);

// A damage to put in a capture (tu_capture_run): none, layer 0's D one row short, layer 1
// missing, a NaN in layer 1's A, offsets from 1, an example of no row in a capture of one
// row per example; or no labels (valid: they read as -1).
typedef enum {
    TU_CAP_OK,
    TU_CAP_SHORT_D,
    TU_CAP_NO_LAYER,
    TU_CAP_NAN,
    TU_CAP_BAD_OFFSETS,
    TU_CAP_EMPTY_EXAMPLE,
    TU_CAP_NO_LABELS
} tu_cap_fault;
// The run's captured twin out (what python/infl/torch.py records from PyTorch): every
// checkpoint's layer inputs, output gradients and losses of data's /train (with `fault`) and
// /test, recorded through the seam on the CPU, and the layers' weights in the captured layout.
void tu_capture_run(const char *run, const char *data, const char *out, tu_cap_fault fault);

#endif

// "file:/split" in one of 4 rotating buffers (slot 0..3): data references for options.
const char *tu_ref(int slot, const char *file, const char *split);
// A backend buffer holding a copy of `bytes` bytes of host memory h; asserts on failure.
void *tu_upload(infl_ctx *ctx, const void *h, size_t bytes);
// Opens the split a data reference ("file:/split[a:b]") names; asserts on failure.
struct infl_split *tu_open_split(infl_ctx *ctx, const char *ref);
// Whether Debian's dataset-fashion-mnist is installed (tests that need it skip).
int tu_have_fmnist(void);
// Imports the first `limit` rows of each Fashion-MNIST split pooled to 7×7 into path,
// flipping a share `flip` of the training labels (seed); asserts on failure.
void tu_import_fm7(const char *path, int64_t limit, double flip, uint64_t seed);

// Writes a synthetic dataset file with /train (n rows) and /test (n/2 rows): d
// features, k classes drawn as Gaussian blobs around random centres (k = 0: real
// targets y float32 [N, 1], a noisy linear function of x). Asserts on failure.
void tu_make_blobs(const char *path, int64_t n, int d, int k, uint64_t seed);
// Trains an MLP (widths w[0..L]) by SGD on the /train split of data into run (overwriting it): the
// library's defaults but for o's fields the caller sets in `tweak` (NULL: none), e.g. epochs or lr.
// Asserts on failure.
void tu_train_mlp(const char *data, const char *run, int L, const int *w, void (*tweak)(infl_train_options *o, void *u),
                  void *u);
// Imports the text file txt, one document a line, into the documents file out: the bytes
// tokenizer (or BPE of bpe tokens), test_fraction of the documents in /test.
void tu_import_lines(const char *txt, const char *out, int bpe, double test_fraction);
// A tiny corpus of 40 short lines of five phrases (some repeated) into the documents file
// data (test_fraction of them in /test), and a GPT of one block (2 heads, dim 8,
// context 16) trained on it for `epochs` with a checkpoint every `every` steps (0: the end).
void tu_tiny_gpt(const char *data, const char *run, double test_fraction, int epochs, int every);
