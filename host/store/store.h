/*
 * store.h — the HDF5 store: reading and writing infl's `dataset` and `run` files
 * (schema version 1, DESIGN.md "Files"). Every read checks the root attributes
 * infl_format and infl_version, the shapes and the values, and every error names the
 * file, the object and what was expected. Outputs go to a temporary name beside the
 * final one and are renamed by *_commit; *_abort removes them.
 *
 * Thread safety: every public function that touches HDF5 holds one process-wide
 * recursive lock (h5util.c), because Debian's serial HDF5 need not be thread-safe and the
 * shard reader thread reads while the main thread may write a scores file. A handle
 * (split, run, writer) is still used by one thread at a time.
 */
#ifndef INFL_STORE_H
#define INFL_STORE_H

#include <stdint.h>

#include "core/internal.h"
#include "core/spec.h"

// ---- tokenizers ----
//
// A tokenizer is stored once per file, as a group (the dataset file's /tokenizer; a
// GPT's run file keeps its own): attributes `kind` ("bytes" | "bpe"), `vocab` and `eot`
// (int32), and for BPE a dataset `merges` int32 [M, 2]. Token ids: the bytes are 0..255,
// INFL_TOK_EOT = 256 is the end-of-text token (it has no bytes and is never merged), and
// merge i of a BPE tokenizer joins the tokens merges[i][0], merges[i][1] (both below
// 257 + i, neither EOT) into the new token 257 + i; so vocab = 257 + M (257 for bytes).

#define INFL_TOK_EOT 256
#define INFL_TOK_BASE_VOCAB 257         // the 256 bytes and EOT
#define INFL_TOK_MAX_VOCAB (1 << 20)    // the largest vocabulary a file may declare

typedef enum { INFL_TOK_BYTES = 0, INFL_TOK_BPE = 1 } infl_tok_kind;

typedef struct {
    int kind;          // INFL_TOK_BYTES | INFL_TOK_BPE
    int vocab;         // INFL_TOK_BASE_VOCAB + n_merges
    int eot;           // INFL_TOK_EOT
    int n_merges;      // 0 for bytes
    int32_t *merges;   // (n_merges, 2) row-major, malloc'd (store_tok_clear frees it); NULL when none
} infl_tokenizer;

// Checks a tokenizer against the rules above: INFL_E_ARG naming `what` and the field
// (the merge index) that is wrong.
infl_status store_tok_check(infl_ctx *ctx, const char *what, const infl_tokenizer *t);
// Frees t->merges and zeroes t. Accepts NULL.
void store_tok_clear(infl_tokenizer *t);
// "bytes" | "bpe" | "?"
const char *store_tok_kind_name(int kind);
// 1 when two tokenizers encode every text alike (kind, vocabulary, end-of-text, merges).
int store_tok_same(const infl_tokenizer *a, const infl_tokenizer *b);

// ---- dataset files: reading a split ----

typedef enum { INFL_Y_CLASS = 0, INFL_Y_REAL = 1 } infl_ykind;

// What a split holds: rows (x float32 [N, D], y) or documents (tokens, offsets, y).
// A split of a `captured` file (below) holds examples whose layer factors were captured.
typedef enum { INFL_SPLIT_ROWS = 0, INFL_SPLIT_DOCS = 1, INFL_SPLIT_CAPTURED = 2 } infl_split_kind;

typedef struct {
    int64_t n;            // rows in the selected range
    int64_t n_total;      // rows in the whole split
    int64_t begin;        // first row of the range, within the split
    int64_t d;            // features per row (x is [n_total, d])
    infl_ykind y_kind;    // class labels y int32 [N], or real targets y float32 [N, k]
    int64_t k;            // 1 for class labels, else the target width
    int n_classes;        // entries of /classes when present, else 0
    int has_image;        // image_shape attribute present on the split group
    int image_shape[3];   // H, W, C
    int has_flipped;      // the split has a `flipped` int32 [N] dataset
    // documents splits (kind INFL_SPLIT_DOCS; then d = 0, y_kind class, k = 1, and the
    // rows above are documents):
    infl_split_kind kind; // rows (the default, 0) or documents
    int64_t max_len;      // the longest document of the whole split, in tokens
    int64_t tokens;       // tokens of the documents in the selected range
    int vocab;            // the file's tokenizer's vocabulary (token ids are 0..vocab-1)
} infl_split_info;

// Documents splits (DESIGN.md "documents"; written by infl import text) hold N
// documents of tokens, ragged: /split/tokens int32 [T] (every document's tokens one
// after another, chunked and compressed), /split/offsets int64 [N+1] (document i is
// tokens[offsets[i] : offsets[i+1]]; offsets[0] = 0, offsets[N] = T, non-decreasing),
// /split/y int32 [N] (the class label: an index into /classes), and the attribute
// max_len (the longest document, tokens). The tokens are the documents' text only:
// no EOT is stored (a consumer adds it where it wants one). The file's tokenizer is
// the group /tokenizer. Reading documents [a, b) reads offsets[a..b] and then the one
// token range between them.

typedef struct infl_split infl_split;

// Opens FILE:/split[begin:end] for reading: checks the file is HDF5 with
// infl_format = "dataset" and infl_version = 1, that /split/x is float32 [N, D] and
// /split/y is int32 [N] or float32 [N, K] with the same N, and that the range lies in
// [0, N] and is not empty. *out owns the handle (store_split_close).
// A split with a `tokens` dataset is a documents split: then it checks tokens int32 [T],
// offsets int64 [N+1] with offsets[0] = 0 and offsets[N] = T, y int32 [N], max_len,
// and the file's /tokenizer; the range selects documents.
infl_status store_split_open(infl_ctx *ctx, const infl_dataref *ref, infl_split **out);
const infl_split_info *store_split_info(const infl_split *s);
// Reads rows [row, row + nrows) of the selected range (row is relative to begin) by a
// hyperslab: x is (nrows, d) row-major; y (nrows) for class labels or yf (nrows, k)
// for real targets; either may be NULL to skip. Checks every x and yf value is finite
// and every class label is >= 0 (and < n_classes when /classes exists):
// INFL_E_VALUE naming the file, dataset, row and column otherwise. INFL_E_ARG for a
// documents split (read it with store_split_read_docs).
infl_status store_split_read(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, float *x,
                             int32_t *y, float *yf);
// Documents [row, row + nrows) of the selected range (row relative to begin): document i's
// first min(len_i, T) tokens into tok[i·T ...] (the rest of its T slots filled with `pad`),
// its full length into len[i], its class label into label[i] (label may be NULL; tok may
// be NULL when T is 0). tok is (nrows, T) row-major, len and label (nrows). Checks the
// offsets (non-decreasing, within the tokens, no document longer than max_len:
// INFL_E_FORMAT), every token copied (INFL_E_VALUE naming the file, row and position for
// a token outside [0, vocab)) and every label (>= 0, < n_classes). INFL_E_ARG for a rows
// split. Reads the whole token range when that is at most about twice what is kept,
// else each document's first T tokens.
infl_status store_split_read_docs(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, int T,
                                  int32_t pad, int32_t *tok, int32_t *len, int32_t *label);
// The split's file's tokenizer (documents only; NULL for a rows split). Owned by the split.
const infl_tokenizer *store_split_tokenizer(const infl_split *s);
// Reads rows of an extra int32 [N] dataset of the split (e.g. "flipped").
infl_status store_split_read_int(infl_ctx *ctx, infl_split *s, const char *name, int64_t row,
                                 int64_t nrows, int32_t *out);
// Copies class name i of /classes (when present) into buf; "" when absent.
void store_split_class_name(const infl_split *s, int i, char *buf, size_t size);
// The reference it was opened with, as text ("f.h5:/test[0:16]"), and the file path.
const char *store_split_ref(const infl_split *s);
const char *store_split_path(const infl_split *s);
void store_split_close(infl_split *s);  // accepts NULL

// ---- captured files (store_captured.c; the format: README "File formats", python/infl/captured.py) ----
// A model trained elsewhere, recorded per example: root infl_format "captured"; /model
// (kind captured, d_in/d_out/bias int32 [L], outputs, tokens, /model/names [L]); checkpoints
// /checkpoints/NNNNNN (step, epoch, lr; the layers' weights W{l} [d_out, d_in], b{l}) as in a
// run; per split /NAME/offsets int64 [N+1] (example i's token rows), optional y int32 [N] and
// flipped; per checkpoint and split /checkpoints/C/NAME/loss float32 [N] and layer{l}/A float32
// [R, d_in], layer{l}/D [R, d_out] (δ of the example's own loss), optional layer{l}/Ds (δ at
// targets sampled from the model). store_split_open opens NAME of such a file as a split of
// kind INFL_SPLIT_CAPTURED (d = 0; max_len its longest example, tokens its rows), checking
// the offsets (one row per example unless /model says tokens); the reads below check shapes
// and values as they go. Its labels (store_split_read's y) are -1 when none were captured.
typedef enum { INFL_CAP_A = 0, INFL_CAP_D = 1, INFL_CAP_DS = 2 } infl_captured_part;
// The file's layers (NULL unless a captured split). Owned by the split.
const infl_captured_spec *store_split_captured(const infl_split *s);
// offs (nrows + 1): the token rows (of the whole split) of examples [row, row + nrows) of the range.
infl_status store_captured_offsets(infl_ctx *ctx, infl_split *s, int64_t row, int64_t nrows, int64_t *offs);
// Token rows [r0, r0 + nrows) (of the whole split) of layer l's A (nrows, d_in), D or Ds
// (nrows, d_out) at checkpoint ckpt into out; INFL_E_FORMAT when absent, INFL_E_SHAPE when
// not [R, width], INFL_E_VALUE naming the row and column of a non-finite value.
infl_status store_captured_read(infl_ctx *ctx, infl_split *s, const char *ckpt, int layer, infl_captured_part part,
                                int64_t r0, int64_t nrows, float *out);
// Examples [row, row + nrows) of the range's losses at ckpt into loss (nrows).
infl_status store_captured_loss(infl_ctx *ctx, infl_split *s, const char *ckpt, int64_t row, int64_t nrows,
                                float *loss);
// 1 when the split's capture at ckpt has Δ at sampled targets (Ds).
int store_captured_has_sampled(infl_split *s, const char *ckpt);

// The writer (tests and tools; python/infl/captured.py writes the same from NumPy): whole
// datasets at once, to a temporary name renamed by commit.
typedef struct infl_capw infl_capw;
infl_status store_captured_create(infl_ctx *ctx, const char *path, int force, const infl_captured_spec *spec,
                                  infl_capw **out);
// A checkpoint step (its name, "%06d", into name) with its lr, epoch and the layers' weights
// (params: the layer space, infl_captured_woff); the last one written is /checkpoints' final.
infl_status store_captured_checkpoint(infl_ctx *ctx, infl_capw *w, int64_t step, double epoch, double lr,
                                      const float *params, char *name, size_t nsize);
// Dataset `rel` ("train/offsets", "checkpoints/000010/train/layer0/A"), [rows, cols] (cols 0:
// 1-D) of float32 (is_int 0), int32 (4) or int64 (8), groups made as needed.
infl_status store_captured_put(infl_ctx *ctx, infl_capw *w, const char *rel, int is_int, int64_t rows, int64_t cols,
                               const void *data);
infl_status store_captured_commit(infl_ctx *ctx, infl_capw *w);  // closes, renames, frees
void store_captured_abort(infl_capw *w);                           // removes the temporary; accepts NULL

// ---- dataset files: writing ----

typedef struct infl_dsw infl_dsw;

// Starts a dataset file: fails with INFL_E_EXISTS when `path` exists and !force;
// writes to a temporary name until store_dataset_commit.
infl_status store_dataset_create(infl_ctx *ctx, const char *path, int force, infl_dsw **out);
// Adds group /split with x float32 [n, d] (chunked by rows) and y int32 [n]
// (y_kind class, k must be 1) or float32 [n, k]; image_shape may be NULL.
infl_status store_dataset_add_split(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n,
                                    int64_t d, infl_ykind y_kind, int64_t k,
                                    const int image_shape[3]);
// Writes rows [row, row + nrows) of a split added before; y or yf as its kind says.
infl_status store_dataset_write_rows(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t row,
                                     int64_t nrows, const float *x, const int32_t *y,
                                     const float *yf);
// Writes a whole extra int32 [n] dataset into a split (e.g. "flipped", "y_clean").
infl_status store_dataset_write_int(infl_ctx *ctx, infl_dsw *w, const char *split,
                                    const char *name, int64_t n, const int32_t *v);
// Writes /classes as a string array.
infl_status store_dataset_set_classes(infl_ctx *ctx, infl_dsw *w, const char *const *names,
                                      int count);
// Writes a root string attribute (e.g. "source").
infl_status store_dataset_set_attr(infl_ctx *ctx, infl_dsw *w, const char *name,
                                   const char *value);
// Numeric attributes of the root (split NULL) or of a split added before: int64, uint64
// (e.g. a seed) or float64.
infl_status store_dataset_set_attr_i64(infl_ctx *ctx, infl_dsw *w, const char *split,
                                       const char *name, int64_t v);
infl_status store_dataset_set_attr_u64(infl_ctx *ctx, infl_dsw *w, const char *split,
                                       const char *name, uint64_t v);
infl_status store_dataset_set_attr_f64(infl_ctx *ctx, infl_dsw *w, const char *split,
                                       const char *name, double v);
// Writes the file's tokenizer as /tokenizer (once; checked by store_tok_check). A file
// with documents splits needs one, set before the first documents are appended.
infl_status store_dataset_set_tokenizer(infl_ctx *ctx, infl_dsw *w, const infl_tokenizer *t);
// Adds an empty documents split /split (tokens, offsets, y; see "reading a split"),
// extendible: documents are appended in blocks, so memory is bounded by a block.
infl_status store_dataset_add_docs_split(infl_ctx *ctx, infl_dsw *w, const char *split);
// Appends n documents to a documents split: len (n) their lengths in tokens, tok
// (sum of len) their tokens one after another, label (n) their class labels. Checks
// lengths >= 0, tokens in [0, vocab) of the tokenizer set before, labels >= 0.
// The split's max_len attribute is written at commit.
infl_status store_dataset_append_docs(infl_ctx *ctx, infl_dsw *w, const char *split, int64_t n,
                                      const int32_t *len, const int32_t *tok, const int32_t *label);
// Closes and renames to the final name; frees w (also on failure).
infl_status store_dataset_commit(infl_ctx *ctx, infl_dsw *w);
// Closes, removes the temporary file, frees w. Accepts NULL.
void store_dataset_abort(infl_dsw *w);

// ---- run files ----

typedef struct {
    char name[32];   // "NNNNNN" (the step, zero-padded to 6 digits)
    int64_t step;
    double epoch;
    double lr;       // learning rate over the interval that ends here (TracIn's weight)
} infl_ckpt_info;

typedef struct infl_runw infl_runw;

// Starts a run file with /model attributes: kind (mlp | gpt), the spec (mlp: layers
// int32 [L+1], activation, loss, weight_decay; gpt: n_layer, n_head, dim, context,
// vocab, loss = next_token_ce, weight_decay), data (the training data reference),
// optimizer, seed.
infl_status store_run_create(infl_ctx *ctx, const char *path, int force, const infl_model_spec *spec,
                             const char *data_ref, const char *optimizer, uint64_t seed,
                             infl_runw **out);
// Writes /checkpoints/NNNNNN with the spec's named tensors (core/spec.h: W0 [d1,d0],
// b0 [d1], ...; wte, wpe, h0.ln_1.weight, ...) from the flat host vector `params` and
// attributes step, epoch, lr; grad_norm when finite. A non-finite parameter is
// INFL_E_VALUE naming the tensor, row and column (nothing written).
infl_status store_run_add_checkpoint(infl_ctx *ctx, infl_runw *w, int64_t step, double epoch,
                                     double lr, double grad_norm, const float *params);
// Writes a gpt run's tokenizer as /model/tokenizer (its vocabulary and end-of-text
// token must be the spec's): the one its documents were tokenized with.
infl_status store_run_set_tokenizer(infl_ctx *ctx, infl_runw *w, const infl_tokenizer *t);
// Root attributes of a run being written (the training options, e.g. "train_lr").
infl_status store_run_attr_f64(infl_ctx *ctx, infl_runw *w, const char *name, double v);
infl_status store_run_attr_str(infl_ctx *ctx, infl_runw *w, const char *name, const char *v);
// Writes the int64 dataset /name [n] of a run being written (e.g. train_excluded, the
// training rows left out).
infl_status store_run_write_rows(infl_ctx *ctx, infl_runw *w, const char *name, const int64_t *rows, int64_t n);
// Sets /checkpoints attribute `final` to the last checkpoint, closes, renames; frees w.
infl_status store_run_commit(infl_ctx *ctx, infl_runw *w);
void store_run_abort(infl_runw *w);  // accepts NULL

typedef struct infl_run infl_run;

// Opens a run file: checks format "run" and version, reads /model (kind, absent =
// mlp; every attribute of the kind's spec present and valid) and lists /checkpoints
// sorted by step; a run without checkpoints is INFL_E_FORMAT.
infl_status store_run_open(infl_ctx *ctx, const char *path, infl_run **out);
const infl_model_spec *store_run_spec(const infl_run *r);
// The training data reference the run records (/model attribute data), its file found
// from the current folder or, when relative and not there, from the run file's folder
// (README, "File formats": data_from_run, then the path, then its file name).
const char *store_run_data(const infl_run *r);
// The same, for opening: INFL_E_IO naming every path tried when the file is nowhere,
// INFL_E_ARG when the run records none.
infl_status store_run_find_data(infl_ctx *ctx, const infl_run *r, const char **ref);
// A gpt run's tokenizer (/model/tokenizer, checked against the spec's vocab and eot);
// NULL for an mlp run.
const infl_tokenizer *store_run_tokenizer(const infl_run *r);
const char *store_run_optimizer(const infl_run *r);  // "sgd", "newton" (or "" when unrecorded)
int store_run_ncheckpoints(const infl_run *r);
const infl_ckpt_info *store_run_checkpoint(const infl_run *r, int i);
// Index of the checkpoint named `name`; NULL or "final" gives the one the `final`
// attribute names (else the last). INFL_E_ARG naming the available ones when absent.
infl_status store_run_find(infl_ctx *ctx, const infl_run *r, const char *name, int *index);
// Loads checkpoint i into the flat host vector params (infl_spec_nparams floats):
// checks every named tensor is there, float32 of its shape, and all finite.
infl_status store_run_load(infl_ctx *ctx, infl_run *r, int i, float *params);
const char *store_run_path(const infl_run *r);
// /model attribute seed: the seed the run was trained with.
uint64_t store_run_seed(const infl_run *r);
// Reads the int64 dataset /name [n] (store_run_write_rows) into *rows (malloc'd, the
// caller's); absent: *rows NULL and *n 0.
infl_status store_run_read_rows(infl_ctx *ctx, infl_run *r, const char *name, int64_t **rows, int64_t *n);
// Optional root attributes: 1 and the value when present, 0 when absent.
int store_run_get_f64(infl_run *r, const char *name, double *v);
int store_run_get_str(infl_run *r, const char *name, char *buf, size_t size);
void store_run_close(infl_run *r);  // accepts NULL

// ---- scores files ----

typedef struct infl_scw infl_scw;

// Starts a `scores` file for M queries, top/bottom k: /topk/index int64 [M, k],
// /topk/score float32 [M, k], likewise /bottomk; with full = 1 also /scores float32
// [M, N] chunked, filled block by block. Written under a temporary name until commit.
infl_status store_scores_create(infl_ctx *ctx, const char *path, int force, int M, int k, int64_t N, int full,
                                infl_scw **out);
// Writes columns [col0, col0 + nb) of /scores from a block (M, nb) with leading dimension ld.
infl_status store_scores_write_block(infl_ctx *ctx, infl_scw *w, const float *scores, int nb, int ld, int64_t col0);
// Writes /topk and /bottomk from (M, k) arrays.
infl_status store_scores_write_topk(infl_ctx *ctx, infl_scw *w, const int64_t *top_idx, const float *top_score,
                                    const int64_t *bot_idx, const float *bot_score);
// Writes /self float32 [N] (self-influence) and /self_order int64 [N] (descending).
infl_status store_scores_write_self(infl_ctx *ctx, infl_scw *w, const float *self, const int64_t *order, int64_t N);
// Root attributes (method, parameters, inputs).
infl_status store_scores_attr_str(infl_ctx *ctx, infl_scw *w, const char *name, const char *value);
infl_status store_scores_attr_f64(infl_ctx *ctx, infl_scw *w, const char *name, double value);
infl_status store_scores_commit(infl_ctx *ctx, infl_scw *w);  // closes, renames, frees
void store_scores_abort(infl_scw *w);                          // accepts NULL

// ---- factors files (EK-FAC) ----

// Per attributed linear layer l (the model seam's list, core/spec.h infl_linear: its
// name, d_in, d_out and bias; ni = d_in + bias), all float64 row-major: A_vecs (ni, ni)
// with ROW i the eigenvector of A_vals[i] (ascending), S_vecs (d_out, d_out) and S_vals
// likewise, lambda (d_out, ni) the eigenvalues of the Kronecker-factored curvature in
// the basis Q_S ⊗ Q_A (last column: the bias, when the layer has one). Written as
// /layerL/{A_vecs, A_vals, S_vecs, S_vals, lambda} with the attributes below and the
// layer list (root attributes d_in, d_out, bias int32 [L]; /layer_names).
typedef struct {
    int L;
    infl_linear layer[INFL_MAX_LINEAR];  // names and shapes (offsets not recorded: 0)
    double *A_vecs[INFL_MAX_LINEAR], *A_vals[INFL_MAX_LINEAR];
    double *S_vecs[INFL_MAX_LINEAR], *S_vals[INFL_MAX_LINEAR];
    double *lambda[INFL_MAX_LINEAR];
    char strategy[16];      // ekfac | kfac | diagonal | identity
    char fisher[16];        // true | empirical
    char run[1024];         // the run file they were fitted on
    char checkpoint[32];    // its checkpoint's name
    int64_t step;           // and step
    uint64_t weights_hash;  // FNV-1a of the checkpoint's float32 parameters (infl_weights_hash)
    char data[1024];        // the training data reference
    int64_t examples;       // rows seen
    uint64_t seed;          // label sampling
    int64_t samples;        // labels drawn per example (true Fisher)
} infl_factors;

// Allocates the per-layer arrays for L layers of these shapes; fields otherwise zero.
infl_status infl_factors_alloc(infl_ctx *ctx, int L, const infl_linear *layers, infl_factors **out);
void infl_factors_free(infl_factors *f);  // accepts NULL
// FNV-1a 64 of n floats' bytes: ties factors to the exact checkpoint they came from.
uint64_t infl_weights_hash(const float *params, size_t n);
// Writes a factors file (temporary name, then rename; INFL_E_EXISTS without force).
infl_status store_factors_write(infl_ctx *ctx, const char *path, int force, const infl_factors *f);
// Reads and checks a factors file: format, version, every attribute, every layer's
// datasets with their shapes from the layer list, finite values. INFL_E_FORMAT / SHAPE /
// VALUE naming the file, the object and what was expected.
infl_status store_factors_read(infl_ctx *ctx, const char *path, infl_factors **out);

// ---- scores files: reading the full matrix ----

typedef struct infl_scr infl_scr;

// Opens a scores file that has /scores float32 [M, N]: checks format and version;
// INFL_E_FORMAT naming the file when /scores is missing ("made without
// --save-scores?"). method, query and train are its attributes ("" when absent).
infl_status store_scores_open(infl_ctx *ctx, const char *path, infl_scr **out);
void store_scores_shape(const infl_scr *r, int *M, int64_t *N);
const char *store_scores_attr(const infl_scr *r, const char *name);  // "method", "query", "train", "sgd_variant"
// Reads columns [col0, col0 + n) of /scores into out (M, n).
infl_status store_scores_read_cols(infl_ctx *ctx, infl_scr *r, int64_t col0, int64_t n, float *out);
// Reads row q of /scores (N floats).
infl_status store_scores_read_row(infl_ctx *ctx, infl_scr *r, int q, float *out);
void store_scores_close(infl_scr *r);  // accepts NULL

// ---- gradient indexes (store_index.c) ----
//
// Format "index": root attributes run, data (the train data reference), model (its
// description), projection (gaussian | rademacher | kron), seed, dim k, kron_out,
// kron_in (kron), kdims int32 [L, 2] (kron: each layer's k_out, k_in), target (margin:
// φ is the projected gradient of the margin loss log Σ_{k≠y} e^{z_k} − z_y, whose product
// with q is the loss's; loss: φ is the loss's and q = 1), dtype (float16 | float32), rows
// N, and while being written rows_done (the file is then OUT.partial: a killed `infl
// index` resumes from it). /checkpoints/NAME: attributes step, lr, weights_hash;
// phi [N, k] (float16 or float32, chunked by rows) and q float32 [N].

#define INFL_INDEX_MAX_CK 256

typedef struct {
    char run[4096];
    char data[4416];
    char model[256];
    char projection[16];
    uint64_t seed;
    int k, kron_out, kron_in;
    int L;
    int32_t kdims[2 * INFL_MAX_LINEAR];
    char target[8];
    int float16;
    int64_t N;
    int nck;
    infl_ckpt_info ck[INFL_INDEX_MAX_CK];
    uint64_t ck_hash[INFL_INDEX_MAX_CK];
} infl_index_info;

typedef struct infl_ixw infl_ixw;

// Starts or resumes writing an index at path: the work goes to path.partial. A
// partial file of the same settings (everything in info) resumes: *rows_done gets its
// completed rows. One of other settings, or unreadable, is an error unless force
// (then it starts afresh). An existing path is INFL_E_EXISTS unless force.
infl_status store_index_begin(infl_ctx *ctx, const char *path, int force, const infl_index_info *info, infl_ixw **out,
                              int64_t *rows_done);
// Writes rows [row0, row0 + n) of checkpoint c: phi (n, k) host, q (n) host.
infl_status store_index_write(infl_ctx *ctx, infl_ixw *w, int c, int64_t row0, int64_t n, const float *phi,
                              const float *q);
// Records that rows [0, rows) of every checkpoint are written, and flushes the file.
infl_status store_index_mark(infl_ctx *ctx, infl_ixw *w, int64_t rows);
// Completes the index: drops rows_done, closes, renames path.partial to path; frees w.
infl_status store_index_commit(infl_ctx *ctx, infl_ixw *w);
// Closes a writer, keeping path.partial to resume from. Accepts NULL.
void store_index_close(infl_ixw *w);

typedef struct infl_ixr infl_ixr;

// Opens a complete index (format, version, every attribute and dataset of the shapes
// the attributes give; a partial one says how to complete it).
infl_status store_index_open(infl_ctx *ctx, const char *path, infl_ixr **out);
const infl_index_info *store_index_info(const infl_ixr *r);
const char *store_index_path(const infl_ixr *r);
// Rows [row0, row0 + n) of checkpoint c: phi (n, k) host float32, q (n) host (either may be NULL).
infl_status store_index_read(infl_ctx *ctx, infl_ixr *r, int c, int64_t row0, int64_t n, float *phi, float *q);
void store_index_close_r(infl_ixr *r);  // accepts NULL
// `name` (a path recorded in the file `file`): as given when it exists or is absolute,
// else beside `file` when it exists there (recorded relative to another folder).
void store_resolve_beside(const char *name, const char *file, char *out, size_t size);
// The first file of a comma-separated list of indexes: its run (resolved beside it) and
// training data reference.
infl_status store_index_run(infl_ctx *ctx, const char *list, char *run, size_t rsize, char *data, size_t dsize);
// float32 <-> IEEE half (round to nearest even; values beyond ±65504 become ±Inf).
uint16_t infl_f32_to_f16(float f);
float infl_f16_to_f32(uint16_t h);
// The same over n values: out (n) = each of in (n) converted (F16C's instructions where the CPU has them).
void infl_f32_to_f16_n(uint16_t *out, const float *in, size_t n);
void infl_f16_to_f32_n(float *out, const uint16_t *in, size_t n);

// ---- lds state files ----

// The state of `infl lds` (store_lds.c): its settings, and the outputs of the models
// trained so far.
typedef struct {
    char run[4096], query[4096];
    char fingerprint[512];  // the run's final weights hash, widths and training options
    int models, M, output_margin, epochs;
    double fraction;
    uint64_t seed;
    double *outputs;  // (models, M)
    int32_t *done;    // (models)
} infl_lds_state;

// Writes the whole state (temporary name, then rename; replaces an existing file).
infl_status store_lds_write(infl_ctx *ctx, const char *path, const infl_lds_state *s);
// Reads an existing state file into s, whose settings (and outputs and done, allocated
// for s->models and s->M) are filled: the file's settings must match, else INFL_E_ARG
// naming the one that differs (a file of fewer models fills the first rows: model k
// is keyed by k).
infl_status store_lds_read(infl_ctx *ctx, const char *path, infl_lds_state *s);
// INFL_OK when path is an lds state file (format and version), else the error.
infl_status store_lds_is_state(infl_ctx *ctx, const char *path);

// ---- shapley state and values files ----

// The state of `infl shapley` (tmc, gshapley; store_shapley.c): what makes its
// permutations comparable (the fingerprint) and their running sums.
typedef struct {
    char fingerprint[2048];  // method, data, utility, model and their settings, seed
    int64_t n;               // training rows
    int64_t perms;           // permutations done (0 .. perms-1, keyed by their number)
    int64_t truncated;       // marginal contributions truncated
    double *sum, *sum2;      // (n) Σ and Σ² of each row's marginal contributions
    int nsnap, cap;          // snapshots of the running means (for the convergence criterion)
    int64_t *snap_perms;     // (cap)
    double *snap_values;     // (cap, n)
} infl_shapley_state;

// Writes the whole state (temporary name, then rename; replaces an existing file).
infl_status store_shapley_state_write(infl_ctx *ctx, const char *path, const infl_shapley_state *s);
// Reads an existing state into s (fingerprint and n set by the caller, arrays allocated
// for n and cap snapshots; older snapshots beyond cap are dropped): INFL_E_ARG when the
// fingerprint differs, naming both.
infl_status store_shapley_state_read(infl_ctx *ctx, const char *path, infl_shapley_state *s);
// INFL_OK when path is a shapley state file, else the error.
infl_status store_shapley_is_state(infl_ctx *ctx, const char *path);
// Writes a values file (format "shapley"): /values, /se float64 [n], /index int64 [n]
// (rows of the split), /label int32 [n], /order int64 [n] (rows of the split, the
// lowest-valued first), /flipped when known, /curves/{fraction,high,low,random}; root
// attributes: the settings (attrs: name = value pairs, nattrs of them) and the figures.
infl_status store_shapley_write(infl_ctx *ctx, const char *path, int force, const infl_shapley_result *r,
                                const char *const (*attrs)[2], int nattrs);

// ---- inspection ----

// infl_info's body: describes any infl file (dataset, run; unknown formats listed as
// a plain HDF5 tree) to `out`.
infl_status store_describe(infl_ctx *ctx, const char *path, FILE *out);

#endif
