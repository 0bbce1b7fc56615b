/*
 * infl.h — the public API of libinfl, an influence-function engine.
 *
 * Everything a program needs to import data, train an MLP with checkpoints and
 * evaluate it, through an opaque context that carries the chosen backend (CPU or
 * CUDA), the last error's detail, a progress callback and a cancel flag.
 *
 * Conventions (all functions):
 *  - Every function that can fail returns an infl_status: INFL_OK (0) or a negative
 *    code. On failure the context's detail string (infl_ctx_error) says what went
 *    wrong, naming the file, the object and what was expected.
 *  - The library never calls exit() and never prints unless given a FILE* to print to.
 *  - Strings passed in are borrowed for the duration of the call; nothing returned
 *    needs freeing unless the function says so.
 *  - A context is not thread-safe: use one context per thread. Different contexts may
 *    be used concurrently, except that HDF5 itself (serial build) is not thread-safe:
 *    do not read HDF5 files from two contexts at once.
 */
#ifndef INFL_H
#define INFL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* libinfl.so is built with hidden visibility: what this header declares is its whole
 * exported interface (checked by tests/install_test.sh), the rest stays inside. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

// ---- version ----

#define INFL_VERSION_MAJOR 0
#define INFL_VERSION_MINOR 1
#define INFL_VERSION_PATCH 0
#define INFL_VERSION_NUMBER (INFL_VERSION_MAJOR * 10000 + INFL_VERSION_MINOR * 100 + INFL_VERSION_PATCH)
#define INFL_STR_(x) #x
#define INFL_STR(x) INFL_STR_(x)
#define INFL_VERSION_STRING \
    INFL_STR(INFL_VERSION_MAJOR) "." INFL_STR(INFL_VERSION_MINOR) "." INFL_STR(INFL_VERSION_PATCH)

/* The HDF5 schema version this library reads and writes (DESIGN.md, "Files"). */
#define INFL_FORMAT_VERSION 1

/* Returns INFL_VERSION_NUMBER of the library actually linked. */
unsigned infl_version_number(void);
/* Returns the version string of the library linked ("0.1.0"); static, never NULL. */
const char *infl_version_string(void);
/* Returns a static, multi-line description of the build: compiler, BLAS, OpenMP,
 * HDF5 version, which backends were compiled in. Never NULL. */
const char *infl_build_info(void);

// ---- status codes ----

/* One table gives the enum, the names and the messages. Values are pinned. */
#define INFL_STATUS_TABLE(X)                                                          \
    X(INFL_OK, 0, "success")                                                          \
    X(INFL_E_NOMEM, -1, "out of memory")                                              \
    X(INFL_E_ARG, -2, "invalid argument")                                             \
    X(INFL_E_IO, -3, "input/output error")                                            \
    X(INFL_E_FORMAT, -4, "file is not in the expected format")                        \
    X(INFL_E_SHAPE, -5, "shapes do not match")                                        \
    X(INFL_E_VALUE, -6, "invalid value in data (NaN, Inf or out of range)")           \
    X(INFL_E_EXISTS, -7, "output exists (use --force to overwrite)")                  \
    X(INFL_E_BACKEND, -8, "backend unavailable or failed")                            \
    X(INFL_E_NUMERIC, -9, "numerical failure (divergence, not positive definite)")    \
    X(INFL_E_UNSUPPORTED, -10, "not supported")                                       \
    X(INFL_E_INTERRUPTED, -11, "interrupted")                                         \
    X(INFL_E_INTERNAL, -12, "internal error")

typedef enum {
#define INFL_X_ENUM(name, value, msg) name = value,
    INFL_STATUS_TABLE(INFL_X_ENUM)
#undef INFL_X_ENUM
} infl_status;

/* Returns the symbolic name of a status ("INFL_E_IO"); "INFL_E_UNKNOWN" for a value
 * not in the table. Static, never NULL. */
const char *infl_status_name(infl_status s);
/* Returns a one-line message for a status; "unknown status" for a value not in the
 * table. Static, never NULL. */
const char *infl_status_str(infl_status s);

// ---- context ----

typedef struct infl_ctx infl_ctx;

/* Progress callback: `what` names the phase ("train", "import"), done/total count
 * its units (examples, steps); `info` is an optional short text (loss, rate) or NULL.
 * Called from the thread that called the library function. */
typedef void (*infl_progress_fn)(void *user, const char *what, uint64_t done, uint64_t total,
                                 const char *info);

typedef struct {
    const char *backend;  /* "auto" | "cpu" | "cuda" | "cuda:N"; NULL reads the
                             INFL_BACKEND environment variable, else "auto". */
    int threads;          /* CPU threads for OpenMP and BLAS; 0 = the runtime default. */
    int deterministic;    /* 1: the CPU backend's results are the same bits at every thread
                             count (GEMMs cut into tiles by their shapes, each tile on one
                             thread; README "Reproducibility"); 0: GEMMs on OpenBLAS's own
                             threads, whose last bits may depend on the thread count;
                             -1: the environment variable INFL_DETERMINISTIC (0 or 1), else 0. */
} infl_ctx_options;

/* Returns the defaults: backend NULL (INFL_BACKEND or auto), threads 0, deterministic -1. */
infl_ctx_options infl_ctx_options_default(void);

/* Creates a context with the backend the options ask for. `opts` may be NULL for the
 * defaults. On success *out owns the context (free with infl_ctx_free). On failure
 * *out is still set when a context could be allocated, so that infl_ctx_error can say
 * why (e.g. "this build has no CUDA backend"); free it too. Also silences HDF5's own
 * error printing (a process-wide HDF5 setting). */
infl_status infl_ctx_create(const infl_ctx_options *opts, infl_ctx **out);
/* Frees a context and everything it owns. Accepts NULL. */
void infl_ctx_free(infl_ctx *ctx);
/* Returns the detail of the last error on this context ("" when none). The pointer
 * stays valid until the next call on the context. Accepts NULL (returns ""). */
const char *infl_ctx_error(const infl_ctx *ctx);
/* Returns the backend the context runs on, e.g. "cpu (OpenBLAS 0.3.21, 2 threads)".
 * Static to the context; never NULL. */
const char *infl_ctx_backend(const infl_ctx *ctx);
/* Returns what backend "auto" chose and why, one line without a newline (e.g.
 * "no usable CUDA device (driver older than the runtime); using the CPU"), for the caller to
 * show; "" when the context was not created with "auto" or the build has no CUDA
 * backend. Static to the context; never NULL. Accepts NULL (returns ""). */
const char *infl_ctx_backend_note(const infl_ctx *ctx);
/* Returns what the library did on the caller's behalf that the caller may want to
 * say, one line per note, each ending in '\n' — e.g. "removed stale temporary
 * out.h5.tmp.4242 (process 4242 is gone)\n" when an output's temporary left by a
 * killed run was cleaned up; "" when none. Notes accumulate until
 * infl_ctx_clear_notes. Static to the context; never NULL. Accepts NULL. */
const char *infl_ctx_notes(const infl_ctx *ctx);
/* Forgets the notes (after showing them). Accepts NULL. */
void infl_ctx_clear_notes(infl_ctx *ctx);
/* Sets the progress callback (NULL to turn progress off). */
void infl_ctx_set_progress(infl_ctx *ctx, infl_progress_fn fn, void *user);
/* Sets a flag the library polls during long work; when *flag becomes non-zero the
 * work stops, leaves no output under its final name and returns INFL_E_INTERRUPTED.
 * The flag is read only (it may be a signal handler's volatile sig_atomic_t). */
void infl_ctx_set_cancel(infl_ctx *ctx, const volatile int *flag);

// ---- several processes (MPI) ----

/* How the processes of one job talk, e.g. the ranks of `mpirun -np R infl rank ...`.
 * The library never links MPI: whoever runs it on several processes fills this table
 * (the infl CLI does, with MPI, when it is built with it) and sets it on every process's
 * context with infl_ctx_set_comm. Then infl_rank, infl_self and infl_index split the
 * training rows into `size` contiguous ranges (rank r: rows [r N / size, (r + 1) N / size)
 * of the train split's range) and infl_fit deals out whole shards of the one-process
 * stream (so its float32 per-shard sums are the same; with fewer shards than processes
 * some get none); each process streams its own and the results are combined: top-k lists merged, covariances and eigenvalue corrections
 * summed in float64, self-influences and index rows gathered; infl_lds spreads its
 * retrainings over the processes. Every process gets the same result; only rank 0 writes
 * output files. A failure on one process ends the call on every process with that
 * status and its detail ("rank R: ...").
 *
 * Every function is collective: every process calls it, in the same order. Each returns
 * 0 on success and non-zero when the transport failed (the library then returns
 * INFL_E_IO). Buffers are the caller's; sizes are bytes or element counts of any size. */
/* The functions of the table (see infl_comm below for what each does). */
typedef int (*infl_comm_agree_fn)(void *user, int *status, char *detail, size_t detail_size);
typedef int (*infl_comm_sum_f64_fn)(void *user, double *buf, size_t n);
typedef int (*infl_comm_sum_i64_fn)(void *user, int64_t *buf, size_t n);
typedef int (*infl_comm_bcast_fn)(void *user, void *buf, size_t bytes, int root);
/* What root does with each process's block in a gather (arg is the gather's). */
typedef int (*infl_comm_take_fn)(void *arg, int from, const void *block);
typedef int (*infl_comm_gather_fn)(void *user, const void *buf, size_t bytes, int root,
                                   infl_comm_take_fn take, void *arg);

typedef struct {
    int rank;    /* this process: 0 .. size - 1 */
    int size;    /* processes in the job, >= 1 */
    void *user;  /* passed to every function */
    /* The status agreement. *status: in, this process's (0 or a negative infl_status);
     * out, the job's: 0 when every process's was 0, else that of the failing process of
     * lowest rank, whose detail (NUL-terminated, at most detail_size bytes) is then copied
     * into `detail` on every other process, prefixed "rank R: ". Once an agreement has
     * failed, every later call returns the same failure at once, without communicating:
     * processes that stopped at different points stay in step. */
    infl_comm_agree_fn agree;
    /* Sums n values element-wise across the processes, in place, on every process. */
    infl_comm_sum_f64_fn sum_f64;
    infl_comm_sum_i64_fn sum_i64;
    /* Copies root's `bytes` bytes at buf into buf on every other process. */
    infl_comm_bcast_fn bcast;
    /* Hands every process's `bytes` bytes at buf to root, one process at a time in rank
     * order (root's own first when root is 0): on root, take(arg, from, block) is called
     * for each; after take returns non-zero the rest are received but not taken, and
     * gather returns that value (another non-zero one when the transport failed).
     * Elsewhere take is not called. */
    infl_comm_gather_fn gather;
} infl_comm;

/* Sets the communicator the context's work runs under (NULL: a single process, the
 * default). The table is borrowed: it must outlive the context's use of it. A table of
 * size 1 behaves as NULL. */
void infl_ctx_set_comm(infl_ctx *ctx, const infl_comm *comm);

// ---- data references ----

/* A data reference is "FILE:/split" with an optional row range: "f.h5:/test[0:16]",
 * "f.h5:/train[100:]", "f.h5:/test[7]". Rows are [begin, end). */
typedef struct {
    char path[4096];
    char split[256];  /* without the leading '/' */
    int64_t begin;    /* first row (0 when no range) */
    int64_t end;      /* one past the last row; -1 = to the end of the split */
} infl_dataref;

/* Parses a data reference. Returns INFL_E_ARG with a detail naming what is wrong. */
infl_status infl_dataref_parse(infl_ctx *ctx, const char *text, infl_dataref *out);

// ---- import ----

typedef struct {
    const char *dir;      /* folder with the four gzip'd IDX files;
                             default /usr/share/datasets/fashion-mnist */
    int64_t limit;        /* keep the first `limit` rows of each split; 0 = all */
    double flip_labels;   /* fraction of training labels replaced by another class,
                             chosen by the counter-based generator; 0 = none */
    uint64_t seed;        /* seed for flip_labels; default 0 */
    int pool;             /* average-pool factor: 1 (28x28), 2 (14x14), 4 (7x7) */
    int force;            /* overwrite an existing output */
} infl_import_fmnist_options;

/* Returns the defaults documented above. */
infl_import_fmnist_options infl_import_fmnist_options_default(void);

/* Reads Fashion-MNIST's IDX files and writes a `dataset` file with /train and /test
 * (x float32 [N, D] in [0,1], y int32 [N], image_shape, /classes; /train/flipped
 * int32 [N] (1 where the label was flipped) and /train/y_clean when flip_labels > 0).
 * The output is written to a temporary name and renamed when complete. */
infl_status infl_import_fashion_mnist(infl_ctx *ctx, const infl_import_fmnist_options *opts,
                                      const char *out_path);

typedef struct {
    const char *label;     /* label column: a header name, or a 0-based index; required */
    char delimiter;        /* ',' default */
    int header;            /* 1: first row is a header (default); 0: no header */
    int regression;        /* 1: label is a float target (y float32 [N,1]);
                              0: integer class labels (y int32 [N]), default */
    double test_fraction;  /* share of rows put in /test (seeded shuffle); 0 = all train */
    uint64_t seed;         /* for test_fraction; default 0 */
    int force;             /* overwrite an existing output */
} infl_import_csv_options;

infl_import_csv_options infl_import_csv_options_default(void);

/* Reads a numeric CSV file (every column a number) into a `dataset` file: /train
 * (and /test with test_fraction > 0). Errors name the line and column. */
infl_status infl_import_csv(infl_ctx *ctx, const char *csv_path, const infl_import_csv_options *opts,
                            const char *out_path);

typedef struct {
    const char *dir;          /* the fortunes folder, read when nfiles is 0: every regular file directly in
                                 it is a topic (names ending .dat or .u8, hidden files and folders are skipped);
                                 default /usr/share/games/fortunes (Debian's package fortunes) */
    const char *const *files; /* UTF-8 text files to read instead; each one's base name is its class */
    int nfiles;               /* entries of files; 0 (default): the fortunes in dir */
    const char *sep;          /* what ends a document: "%" (default, the fortune format: a line holding only
                                 "%"), "line" (every line is a document), "paragraph" (blank lines separate
                                 documents), or any other text: a line holding only that text */
    int bpe_vocab;            /* 0 (default): the bytes tokenizer (vocabulary 257: 256 bytes and EOT); else
                                 learn byte-level BPE on the train split up to this vocabulary (258 to
                                 1048576; fewer when no pair of tokens occurs at least twice) */
    int64_t max_len;          /* documents longer than this many tokens are cut to it; 0 (default) = no limit */
    int64_t limit;            /* keep the first `limit` documents (in file order); 0 (default) = all */
    double test_fraction;     /* share of documents put in /test, drawn by the counter-based generator from
                                 (seed, document index); default 0.1; 0 = no /test */
    uint64_t seed;            /* for test_fraction; default 0 */
    int force;                /* overwrite an existing output; default 0 */
} infl_import_text_options;

/* Returns the defaults documented above. */
infl_import_text_options infl_import_text_options_default(void);

typedef struct {
    int64_t docs_train, docs_test;     /* documents in /train and /test */
    int64_t tokens_train, tokens_test; /* tokens stored (after max_len) */
    int64_t bytes_train, bytes_test;   /* bytes of the documents as read (before max_len) */
    int64_t empty;                     /* documents skipped because they were empty */
    int64_t truncated;                 /* documents cut to max_len tokens */
    int64_t longest;                   /* tokens of the longest stored document */
    int files;                         /* files read */
    int classes;                       /* entries of /classes */
    int vocab;                         /* the tokenizer's vocabulary (EOT included) */
    int bpe;                           /* 1 when BPE was learned */
    double unigram_bits;               /* entropy of the train split's token unigram distribution, bits per */
    double unigram_nats;               /*   token, and the same in nats (the loss of the best model that */
                                       /*   ignores context); bytes tokenizer: the byte-level entropy */
    double byte_unigram_bits;          /* entropy of the train split's byte distribution, bits per byte */
    double seconds_learn;              /* learning BPE */
    double seconds;                    /* the whole import */
} infl_import_text_result;

/* Reads documents (Debian's fortunes, or text files) into a `dataset` file of documents:
 * /train and /test hold tokens int32 [T] and offsets int64 [N+1] (document i is
 * tokens[offsets[i]:offsets[i+1]]) and y int32 [N] (the class: the fortune's topic or
 * the file), /classes, and the tokenizer in /tokenizer (README.md, "File formats").
 * Documents are trimmed of their trailing line breaks; empty ones are skipped. Text that
 * is not valid UTF-8 is INFL_E_VALUE naming the file and the byte offset. An existing
 * output without force is INFL_E_EXISTS before any work; the output is written under a
 * temporary name and renamed when complete. `res` may be NULL. */
infl_status infl_import_text(infl_ctx *ctx, const infl_import_text_options *opts, const char *out_path,
                             infl_import_text_result *res);

// ---- models and training ----

typedef enum { INFL_ACT_RELU = 0, INFL_ACT_TANH = 1, INFL_ACT_GELU = 2 } infl_activation;
typedef enum { INFL_LOSS_SOFTMAX_CE = 0, INFL_LOSS_SIGMOID_CE = 1, INFL_LOSS_MSE = 2 } infl_loss;
typedef enum { INFL_SCHED_CONSTANT = 0, INFL_SCHED_COSINE = 1 } infl_schedule;
typedef enum { INFL_OPT_AUTO = 0, INFL_OPT_SGD = 1, INFL_OPT_NEWTON = 2 } infl_optimizer;
/* The models infl trains and explains: an MLP on feature rows, or a GPT (GPT-2's
 * architecture) on token documents (infl import text). */
/* mlp and gpt are trained by infl; captured is a model whose layer inputs and output
   gradients were recorded elsewhere (PyTorch: python/infl/torch.py) in a `captured` file. */
typedef enum { INFL_MODEL_MLP = 0, INFL_MODEL_GPT = 1, INFL_MODEL_CAPTURED = 2 } infl_model_kind;

#define INFL_MAX_LAYERS 16

typedef struct {
    const char *data;            /* data reference of the training split; required */
    infl_model_kind model;       /* mlp (default) or gpt */
    int nlayers;                 /* mlp: number of weight layers L (widths has L+1 entries); gpt: blocks */
    int widths[INFL_MAX_LAYERS + 1]; /* mlp: d0 (input width), d1, ..., dL (outputs) */
    infl_activation activation;  /* between layers; default relu */
    infl_loss loss;              /* default softmax_ce */
    infl_optimizer optimizer;    /* auto: newton for a convex model (L = 1), else sgd */
    int epochs;                  /* default 5 */
    int batch;                   /* default 128 */
    double lr;                   /* default 0.1 */
    double momentum;             /* default 0.9 */
    double weight_decay;         /* wd of R(w) = mean loss + wd/2 |w|^2 (all params); 1e-4 */
    infl_schedule schedule;      /* default constant */
    uint64_t seed;               /* initialisation and shuffling; default 1 */
    int checkpoint_every;        /* steps between checkpoints; 0 = final only; default 500 */
    int64_t shard_rows;          /* rows read at once; 0 = from shard_mb */
    double shard_mb;             /* memory budget of one shard in MiB; default 256 */
    double tol;                  /* newton: gradient-norm target; default 1e-8 */
    int max_iters;               /* newton: iteration cap; default 100 */
    double subset_fraction;      /* > 0: train on a seeded random subset: row (a gpt's: document) i of the
                                    split is kept when uniform(subset_seed, i, subset_draw) < subset_fraction
                                    (LDS); 0 = all */
    uint64_t subset_seed;
    int subset_draw;
    const int64_t *exclude;      /* rows (gpt: documents) of the split left out, absolute within it, ascending
                                    (infl debug); recorded in the run as /train_excluded. NULL: none */
    int64_t nexclude;
    int force;                   /* overwrite an existing output */
    /* gpt (infl_train_options_gpt_default): its architecture and AdamW. lr, weight_decay
     * (decoupled, matrices and embeddings only), schedule, epochs, batch (documents per
     * step), seed and checkpoint_every above apply too. */
    int heads;                   /* attention heads (dividing dim); default 4 */
    int dim;                     /* the residual stream's width; default 128 */
    int context;                 /* positions: a document is read as EOT + its first context - 1 tokens; 256 */
    double beta1, beta2;         /* AdamW's moment decays; default 0.9, 0.95 */
    double adam_eps;             /* default 1e-8 */
    double clip;                 /* clip the gradient's global norm to this; 0 = never; default 1 */
    int warmup;                  /* steps of linear warm-up before the schedule; default 100 */
} infl_train_options;

/* The MLP's defaults (documented above; model mlp). */
infl_train_options infl_train_options_default(void);
/* The GPT's: model gpt, 4 blocks, 4 heads, dim 128, context 256, epochs 1, batch 32
 * documents, lr 1e-3 with 100 warm-up steps then cosine, weight decay 0.1, AdamW
 * β = (0.9, 0.95), eps 1e-8, clip 1, seed 1, a checkpoint every 500 steps. */
infl_train_options infl_train_options_gpt_default(void);

typedef struct {
    int64_t steps;          /* optimiser steps taken */
    int checkpoints;        /* checkpoints written */
    double final_loss;      /* training objective R(w) (sgd: mean over the last epoch; gpt: loss per
                               token over the last epoch) */
    double grad_norm;       /* newton: |grad R| at the end; sgd: NaN; gpt: the last step's, before clipping */
    double seconds;         /* wall time of the optimisation */
    double examples_per_s;  /* sgd, gpt: examples (documents) processed per second */
    int64_t tokens;         /* gpt: positions trained on (with a loss), all epochs */
    double tokens_per_s;    /* gpt */
    double flops;           /* gpt: floating-point operations of the steps, counted from the shapes of
                               the padded batches (infl_gpt_train_flops) */
    int64_t truncated;      /* gpt: documents longer than the context, truncated (per epoch) */
    int diverged;           /* 1 when training stopped at a non-finite loss or gradient (the status is
                               INFL_E_NUMERIC); the run keeps the checkpoints written before, if any */
    int64_t diverged_step;
} infl_train_report;

/* Trains the model the options describe (an MLP on feature rows, or a GPT on token
 * documents) and writes a `run` file with its checkpoints. The output is written to a
 * temporary name and renamed when complete. When a GPT's training diverges (a
 * non-finite loss or gradient) it stops, names the step and returns INFL_E_NUMERIC;
 * the run is still committed with the checkpoints written before, when there are
 * any (rep->diverged). `rep` may be NULL. */
infl_status infl_train(infl_ctx *ctx, const infl_train_options *opts, const char *out_path,
                       infl_train_report *rep);

typedef struct {
    int64_t n;          /* examples evaluated (documents for a gpt) */
    double loss;        /* mean loss (no weight-decay term); gpt: per token (nats) */
    double accuracy;    /* share correct; NaN for mse, gpt and captured (the loss recorded with the capture) */
    int64_t tokens;     /* gpt: positions with a loss (each document's tokens and its end) */
    double perplexity;  /* gpt: exp(loss per token); NaN for an mlp */
    int64_t truncated;  /* gpt: documents longer than the context, truncated */
} infl_eval_result;

/* Evaluates a checkpoint ("final" or NULL for the last one, or its name) of a run on
 * a data reference, streaming it in shards. */
infl_status infl_eval(infl_ctx *ctx, const char *run_path, const char *checkpoint, const char *data,
                      infl_eval_result *res);

// ---- generation (gpt runs) ----

typedef struct {
    const char *run;          /* a gpt run file; required */
    const char *checkpoint;   /* NULL or "final", a name or a step */
    const char *prompt;       /* UTF-8 text the completion continues ("" starts a new document) */
    int tokens;               /* most tokens to generate; default 200 (stops early at end-of-text; past
                                 a full context the window slides: EOT, then the last context - 1 tokens) */
    double temperature;       /* 0: greedy (the most likely token); default 0.8 */
    int top_k;                /* sample among the k most likely tokens; 0 = all; default 40 */
    uint64_t seed;            /* the sampling's counter generator; default 0 */
} infl_generate_options;

infl_generate_options infl_generate_options_default(void);

typedef struct {
    char *completion;         /* the generated bytes, NUL-terminated (may end inside a UTF-8 character
                                 when a byte-level token stops it there) */
    size_t length;            /* bytes of completion */
    int prompt_tokens;        /* tokens of the prompt */
    int tokens;               /* tokens generated */
    int ended;                /* 1: the model ended the document (end-of-text) */
} infl_generate_result;

/* Continues a prompt with a gpt run's model: tokenizes it with the run's tokenizer,
 * then repeatedly samples the next token from softmax(logits / temperature) among
 * the top_k, keyed by (seed, position) in the counter generator, so a seed gives the
 * same completion every time on a backend (the CPU and CUDA agree to float32
 * round-off in the logits, so a near tie can differ between them). *out is the
 * caller's (infl_generate_result_free). */
infl_status infl_generate(infl_ctx *ctx, const infl_generate_options *o, infl_generate_result **out);
void infl_generate_result_free(infl_generate_result *r);  /* accepts NULL */

// ---- gradient index ----

typedef enum { INFL_PROJ_GAUSSIAN = 0, INFL_PROJ_RADEMACHER = 1, INFL_PROJ_KRON = 2 } infl_projection;

/* "gaussian", "rademacher", "kron"; "?" for others. */
const char *infl_projection_name(infl_projection p);

typedef struct {
    const char *run;          /* run file; required */
    const char *train;        /* training data reference; NULL: the run's own data attribute */
    const char *checkpoints;  /* NULL or "all" (default): every checkpoint; else comma-separated names or steps
                                 ("final" the last) */
    infl_projection projection; /* default rademacher */
    int dim;                  /* gaussian, rademacher: the projected width k (at most the gradient's); default 2048 */
    int kron_out, kron_in;    /* kron: each layer's k_out x k_in (capped at its d_out and d_in + 1); default 32 x 32 */
    uint64_t seed;            /* keys the projection; default 0 */
    int float16;              /* store φ as float16 (default 1) or float32 (0) */
    int64_t shard_rows;       /* train rows per shard; 0 = from shard_mb */
    double shard_mb;          /* default 64 */
    int force;                /* overwrite the output; start afresh over a partial index of other settings */
} infl_index_options;

/* Returns the defaults documented above. */
infl_index_options infl_index_options_default(void);

typedef struct {
    int64_t N;                /* training examples indexed */
    int k;                    /* projected width */
    int checkpoints;
    int64_t resumed_rows;     /* rows a partial index already held (0: started afresh) */
    double seconds;           /* this call */
    double seconds_wait;      /* of which waiting for the reader */
    double flops_project;     /* floating-point operations of the projections (this call) */
    double flops_fb;          /* of the forward and backward passes (this call) */
    double bytes_per_example; /* stored per training example, every checkpoint */
} infl_index_report;

/* Writes a gradient index (DESIGN.md "Files", "Projection"): for every training
 * example and checkpoint the projected gradient φ = P g (the margin's for a softmax or
 * sigmoid classifier, with q = 1 − p_y, so that q φ is the loss's; the loss's for other
 * models) into out_path, streamed shard by shard. P is generated from the seed, never
 * stored. The work goes to out_path.partial, flushed after every shard: a call that is
 * interrupted or killed resumes from it when called again with the same options. */
infl_status infl_index(infl_ctx *ctx, const infl_index_options *o, const char *out_path, infl_index_report *rep);

// ---- attribution ----

typedef enum {
    INFL_METHOD_GRADDOT = 0,  /* ∇L_qᵀ ∇ℓ_z at one checkpoint */
    INFL_METHOD_GRADCOS = 1,  /* the same, both gradients normalised */
    INFL_METHOD_TRACIN = 2,   /* Σ_c lr_c ∇L_q(w_c)ᵀ ∇ℓ_z(w_c) over checkpoints */
    INFL_METHOD_IF = 3,       /* ∇L_qᵀ (H + λI)⁻¹ ∇ℓ_z at one checkpoint */
    INFL_METHOD_EKFAC = 4,    /* ∇L_qᵀ P(∇ℓ_z), P the EK-FAC inverse of fitted factors (infl_fit) */
    INFL_METHOD_KFAC = 5,     /* the same with the KFAC eigenvalues λ_S ⊗ λ_A */
    INFL_METHOD_DIAGONAL = 6, /* the same with the diagonal Fisher */
    INFL_METHOD_REPRESENTER = 7, /* representer points (Yeh et al. 2018): α_ic f̃_iᵀ f̃_q, the last layer fine-tuned
                                    to a stationary point of (1/n) Σ ℓ_i + λ |W̃|² (infl_rank_options) */
    INFL_METHOD_SGD_INFLUENCE = 8, /* SGD-influence (Hara et al. 2019), with momentum: the run's SGD
                                      trajectory replayed backwards; n × the change of the query's loss
                                      had z been left out of its batches (rank options sgd_*) */
    INFL_METHOD_TRAK = 9,     /* TRAK over a gradient index (rank_options.index): φ_q (ΦᵀΦ + λI)⁻¹ φ_z ·
                                 mean(1 − p_z), averaged over checkpoints and runs */
} infl_method;

/* "graddot", "gradcos", "tracin", "if", "ekfac", "kfac", "diagonal", "representer", "sgd-influence", "trak";
 * "?" for others. */
const char *infl_method_name(infl_method m);

typedef struct {
    const char *run;          /* run file; required */
    const char *train;        /* training data reference; NULL: the run's own data attribute */
    const char *query;        /* query data reference, e.g. "fmnist.h5:/test[0:16]" (rank, loo) */
    infl_method method;       /* default tracin */
    const char *checkpoint;   /* graddot, gradcos, if: NULL or "final", a name or a step */
    const char *checkpoints;  /* tracin: NULL or "all", else comma-separated names or steps */
    int top;                  /* k proponents and k opponents per query; default 10 */
    int hessian;              /* if: 0 exact (R-operator), 1 Gauss-Newton; default 0 */
    int solver;               /* if: 0 direct (Cholesky), 1 cg, 2 lissa; default 1 */
    double damping;           /* if, ekfac: λ added to H (which already has the weight decay); default 0.001 */
    int damping_auto;         /* ekfac, kfac, diagonal: λ_l = 0.1 × mean(Λ_l) per layer instead of damping
                                 (default 0 here; the CLI sets it unless --damping VALUE is given) */
    double damping_factor;    /* trak and if over an index, with damping_auto: λ = this × the mean eigenvalue of
                                 each kernel block; default 0.1 */
    const char *factors;      /* ekfac, kfac, diagonal: factors file from infl_fit; required */
    int query_rank;           /* ekfac, kfac, diagonal: rank-r SVD of each preconditioned query matrix per
                                 layer (layers of smaller rank keep their full rank); 0 = full */
    int64_t hessian_samples;  /* if: rows of the train split H averages over; 0 = all */
    int cg_iters;             /* default 100 */
    double cg_tol;            /* relative residual; default 1e-6 */
    int lissa_depth;          /* default 1000 */
    double lissa_scale;       /* default 10 */
    int lissa_repeats;        /* default 1 */
    uint64_t seed;            /* lissa batches, loo's random sample; default 0 */
    int64_t shard_rows;       /* train rows per shard; 0 = from shard_mb */
    double shard_mb;          /* memory budget of one shard (x rows) in MiB; default 64 */
    const char *output;       /* scores HDF5 to write, or NULL */
    int save_scores;          /* also write the full score matrix /scores [M, N] */
    int force;                /* overwrite outputs */
    /* language models (a gpt run): queries as text instead of `query` documents */
    int ntext;                /* text queries (0: `query` names documents of a split) */
    const char *const *prompt;      /* (ntext) prompts (non-empty) */
    const char *const *completion;  /* (ntext) completions; NULL or an entry NULL: the model's greedy completion
                                       of complete_tokens tokens. The measurement is log p(completion | prompt):
                                       only the completion's tokens carry a loss */
    int complete_tokens;      /* tokens of a greedy completion; default 20 */
    int token_shares;         /* language models: each reported document's score split over its tokens */
    int prefilter_bm25;       /* language models: K > 0 scores each query only against its K training documents
                                 most similar by BM25 over tokens (Grosse et al.'s search-space reduction) */
    int rerank;               /* K > 0 with query_rank: every document at rank query_rank, then the best K of each
                                 side (proponents, opponents) again at full rank */
    int score_form;           /* language models: 0 picks per layer by FLOP count (default); 1 every layer by
                                 token rows (ghost pairs or contraction); 2 by forming documents' gradients */
    /* representer points: the last layer W̃ = [W | b] (its output the logits Φ) is fine-tuned, on the features
     * f̃ = [f; 1] it reads, to the optimum of (1/n) Σ ℓ_i + λ |W̃|² (float64 Newton); then exactly
     * Φ(x_q) = Σ_i α_i f̃_iᵀ f̃_q with α_i = −(1/(2λn)) ∂ℓ_i/∂Φ_i, and z's score for query q is
     * α_{z,c} f̃_zᵀ f̃_q for the class c scored: its part of q's logit of class c (positive: excitatory) */
    double representer_lambda; /* λ > 0; 0 (default): the run's weight decay / 2, the training objective's own
                                  weight on the last layer (an error when the run has none) */
    int representer_class;    /* the class scored: 0 the fine-tuned model's prediction (default), 1 the query's label;
                                 2 (loss) every class weighted by −∂ℓ_q/∂Φ_qc at the label: z's part of the
                                 query's loss decrease to first order in the fine-tuned logits, Σ_c −∂ℓ_q/∂Φ_qc α_zc f̃_zᵀ f̃_q */
    const char *index;        /* gradient index files (infl_index), comma-separated: scores from the stored
                                 projected gradients, with no pass over the training data. Methods: graddot,
                                 gradcos, tracin (the index's checkpoints, or `checkpoints`), trak, if (the
                                 projected Fisher, exact per layer block: LoGra's preconditioning). Several files
                                 (indexes of independently trained runs of one training set) are TRAK's ensemble.
                                 run may then be NULL: each index names its run */
    /* FastIF (Guo et al. 2020) */
    int prefilter_knn;        /* models of feature rows (an mlp run): K > 0 scores each query only against its K
                                 nearest training examples by squared Euclidean distance in the knn_features
                                 space (exact k-NN, one GEMM per sub-batch of the streamed split) */
    int knn_features;         /* 0: the inputs x (default); 1: the penultimate activations (the last layer's
                                 inputs) at the method's last checkpoint */
    const int64_t *query_rows;/* optional (nquery_rows > 0): the queries are these rows of `query`'s range, in
                                 this order, instead of all of it (infl debug's misclassified examples) */
    int nquery_rows;
    /* sgd-influence (an MLP run trained by SGD; `hessian` picks exact or Gauss-Newton minibatch HVPs) */
    int sgd_variant;          /* 0 (default): every step at its own parameters, replayed from the seed (bit-exact
                                 on the build, backend and thread count that trained the run; checked against
                                 every checkpoint); 1: checkpoints only: each step at the parameters of the
                                 nearest checkpoint (or the initial ones), no replay: no per-step memory, the
                                 same minibatch HVPs, an approximation within each interval */
    int sgd_segment;          /* steps whose parameters the full replay holds at once (memory: that many times
                                 the parameters); 0 = automatic: about sqrt(steps), within 256 MiB */
} infl_rank_options;

/* Returns the defaults documented above. */
infl_rank_options infl_rank_options_default(void);

/* A document's score split over its token positions (language models): position t
 * predicts token t of the document (the end-of-text at t = length); share[t] is the
 * terms of Σ_t of the document's gradient that position t contributes, and the shares
 * add up to the document's score (to float round-off). */
typedef struct {
    int n;                    /* positions: min(length + 1, context) */
    int32_t *token;           /* (n) the token each position predicts */
    float *share;             /* (n) */
} infl_token_shares;

/* How the representer's fine-tuned last layer came out and how close it stays to the run's
 * (Yeh et al. 2018 report the logits' correlation and the accuracy). */
typedef struct {
    double lambda;            /* λ of (1/n) Σ ℓ_i + λ |W̃|² */
    double grad_norm;         /* |∇| of that objective at the fine-tuned W̃: the decomposition is exact up to */
    double decomposition_bound; /* |∇| / (2λ), the Frobenius distance between W̃ and Σ_i α_i f̃_iᵀ */
    int iters, cg_iters;      /* Newton iterations and CG steps */
    double seconds;           /* the fine-tune, the features' passes included */
    int64_t n;                /* training rows */
    double train_pearson;     /* Pearson of the original and the fine-tuned logits over the train split (n·K values) */
    double train_acc_before, train_acc_after; /* accuracy on the train split, original and fine-tuned last layer */
    double query_pearson;     /* (rank) the same over the queries' logits (M·K values) */
    double query_acc_before, query_acc_after; /* (rank) on the queries with labels; NaN when none */
} infl_representer_fit;

typedef struct {
    int M;                    /* queries */
    int k;                    /* entries per side (min(top, N)) */
    int64_t N;                /* training examples scored */
    int64_t query_begin;      /* first query row within its split */
    int64_t *top_index;       /* (M, k): proponents, highest score first */
    float *top_score;
    int64_t *bottom_index;    /* (M, k): opponents, lowest score first */
    float *bottom_score;
    int32_t *query_label;     /* (M) class label, -1 for real targets */
    int32_t *query_pred;      /* (M) predicted class at the (last) checkpoint, -1 for mse */
    double *query_loss;       /* (M) loss at the (last) checkpoint */
    int checkpoints;          /* checkpoints used */
    double seconds_prepare;   /* query gradients (and the iHVP solve for if) */
    double seconds_score;     /* streaming the train split and scoring */
    double seconds_wait;      /* of which waiting for the reader */
    double seconds_rerank;    /* --rerank: the second pass at full rank (--prefilter's scoring is seconds_score) */
    double flops;             /* floating-point operations of the score phase, counted from shapes */
    double query_rank_energy; /* with query_rank: share of the preconditioned queries' squared Frobenius
                                 norm the rank-r factors keep (mean over queries and layers); else 1 */
    int layers;               /* ekfac, kfac, diagonal: attributed layers, and per layer the damping λ_l used */
    double *layer_damping;    /* (layers) (auto or given) and the mean eigenvalue; the objective's weight */
    double *layer_mean_eigenvalue; /* (layers) decay is added to every eigenvalue as well (it is part of H) */
    double weight_decay;
    /* language models */
    char **query_prompt;      /* (M) text queries: the prompt; documents of a split: "" (NULL when not a language model) */
    char **query_completion;  /* (M) the completion measured (given, greedy, or the document's text) */
    infl_token_shares *top_shares;    /* (M, k) with token_shares: the proponents' per-token shares; else NULL */
    infl_token_shares *bottom_shares; /* (M, k) the opponents' */
    double seconds_prefilter; /* --prefilter: finding the candidates (part of seconds_score) */
    int64_t candidates;       /* --prefilter, --rerank: distinct training examples scored (the union of the
                                 queries' candidates); else N */
    int layer_paths;          /* layers below, for the record: 1 = scored by forming per-document gradients, */
    int *layer_path;          /* (layer_paths) 0 = by the token-pair (ghost) or per-token contraction form */
    /* representer (NULL arrays otherwise) */
    infl_representer_fit representer;
    int32_t *query_class;     /* (M) the class scored (the fine-tuned prediction, or the label) */
    double *query_logit;      /* (M) the sum of the query's scores over the train split, float64: the class's fine-tuned
                                 logit (sigmoid_ce: −z for class 0); with representer_class 2, −∇_Φ ℓ_qᵀ Φ_q */
    /* sgd-influence */
    int64_t sgd_steps;        /* the run's SGD steps, each replayed backwards */
    int sgd_segment;          /* steps whose parameters were held at once (full replay) */
    double sgd_replay_dev;    /* full replay: the largest relative difference |w - w_c| / |w_c| between the
                                 replayed weights and the run's checkpoints (0: bit-exact); NaN: not replayed */
    double seconds_replay;    /* replaying the steps forwards (the rest of seconds_score is the backward pass) */
} infl_rank_result;

/* Ranks the training examples by their influence on each query (DESIGN.md, "The
 * math": positive = proponent). Streams the train split in shards on a reader
 * thread and keeps a running top-k and bottom-k per query; with opts->output writes
 * a scores file. *out is owned by the caller (infl_rank_result_free). */
infl_status infl_rank(infl_ctx *ctx, const infl_rank_options *opts, infl_rank_result **out);
void infl_rank_result_free(infl_rank_result *r);  /* accepts NULL */

typedef struct {
    int64_t N;                /* training examples */
    float *self;              /* (N) self-influence */
    int64_t *order;           /* (N) indices by decreasing self-influence */
    int has_flipped;          /* the train split has /flipped */
    int64_t flipped;          /* how many are flipped */
    double recall[3];         /* share of the flipped found in the top 5%, 10%, 20% */
    double seconds;
    infl_representer_fit representer; /* representer: the fine-tune (its query fields NaN) */
} infl_self_result;

/* Self-influence of every training example: tracin Σ_c lr_c |∇ℓ_z(w_c)|², graddot
 * |∇ℓ_z|², if ∇ℓ_zᵀ (H + λI)⁻¹ ∇ℓ_z (solver direct only: one factorisation serves
 * every example), representer α_{z,y_z} |f̃_z|² (z's part of its own label's logit, ≥ 0 for
 * softmax_ce: (1 − p_y) |f̃_z|² / (2λn)). opts->output writes /self and /self_order. */
infl_status infl_self(infl_ctx *ctx, const infl_rank_options *opts, infl_self_result **out);
void infl_self_result_free(infl_self_result *r);  /* accepts NULL */

typedef struct {
    int remove_top;           /* per query: the top-scored training examples removed; default 20 */
    int remove_bottom;        /* ... the bottom-scored; default 20 */
    int remove_random;        /* ... a seeded random sample (opts->seed); default 20 */
    double tol;               /* retraining: gradient-norm target; default 1e-10 */
} infl_loo_options;

infl_loo_options infl_loo_options_default(void);

typedef struct {
    int n;                    /* (query, removed example) pairs */
    int32_t *query;           /* (n) query number (0-based within the query range) */
    int64_t query_begin;      /* first query row within its split */
    int64_t *removed;         /* (n) training index removed */
    double *predicted;        /* (n) score / N: the predicted change of the query loss */
    double *actual;           /* (n) the change after retraining without the example */
    double pearson, spearman;
    double seconds;
} infl_loo_result;

/* Leave-one-out check of influence functions on a convex model (no hidden layer,
 * weight decay > 0): for each query, removes training examples one at a time,
 * retrains from the optimum to the gradient-norm target, and compares the actual
 * change of the query loss with the prediction score/N (DESIGN.md sign convention). */
infl_status infl_loo(infl_ctx *ctx, const infl_rank_options *opts, const infl_loo_options *lo,
                     infl_loo_result **out);
void infl_loo_result_free(infl_loo_result *r);  /* accepts NULL */

// ---- EK-FAC factors ----

typedef enum {
    INFL_STRATEGY_EKFAC = 0,    /* Kronecker eigenbases of A = E[ã ãᵀ], S = E[δ δᵀ], corrected eigenvalues Λ */
    INFL_STRATEGY_KFAC = 1,     /* the same eigenbases, Λ = λ_S ⊗ λ_A */
    INFL_STRATEGY_DIAGONAL = 2, /* the diagonal of the Fisher, E[(δ ãᵀ)^∘2] */
    INFL_STRATEGY_IDENTITY = 3, /* no curvature: Λ = 1 (scores are grad-dot) */
} infl_strategy;

typedef struct {
    const char *run;          /* run file; required */
    const char *checkpoint;   /* NULL or "final", a name or a step */
    const char *data;         /* training data reference; NULL: the run's own */
    infl_strategy strategy;   /* default ekfac */
    int fisher_empirical;     /* 0: labels sampled from the model (true Fisher, default); 1: the data's labels */
    uint64_t seed;            /* label sampling; default 0 */
    int samples;              /* true Fisher: labels drawn per example (Monte Carlo); default 1 */
    int64_t shard_rows;       /* rows per shard; 0 = from shard_mb */
    double shard_mb;          /* default 64 */
    int force;                /* overwrite the output */
} infl_fit_options;

infl_fit_options infl_fit_options_default(void);

typedef struct {
    int64_t examples;         /* rows seen per pass */
    double seconds_cov;       /* pass 1: covariances A and S */
    double seconds_eig;       /* eigendecompositions (float64) */
    double seconds_lambda;    /* pass 2: eigenvalue correction Λ */
    double flops_cov;         /* floating-point operations of pass 1 (forward/backward included) */
    double flops_lambda;      /* ... of pass 2 */
    double seconds_wait;      /* of the passes, waiting for the reader */
} infl_fit_report;

/* Fits EK-FAC (or KFAC, diagonal, identity) factors of a checkpoint over a training
 * split (DESIGN.md): one streamed pass accumulates per layer A = E[ã ãᵀ] and
 * S = E[δ δᵀ] in float64, eigendecomposes them, a second pass accumulates the
 * eigenvalue correction Λ; writes a `factors` file. `rep` may be NULL. */
infl_status infl_fit(infl_ctx *ctx, const infl_fit_options *opts, const char *out_path, infl_fit_report *rep);

// ---- linear datamodeling score ----

typedef struct {
    const char *run;          /* the run whose training is repeated on subsets; required */
    const char *query;        /* the queries the scores files were made for; required */
    const char *state;        /* state file: the retrained outputs, resumable; required */
    int models;               /* subsets (one model each); default 20 */
    double fraction;          /* share of the train split in each subset; default 0.5 */
    uint64_t seed;            /* subsets; default 0 */
    int output_margin;        /* 0: the query's loss (default); 1: its margin (true logit − best other) */
    int epochs;               /* 0: the run's own training options (train_epochs), else this */
    const char *const *scores;/* scores files with /scores [M, N] (infl rank -o F --save-scores) */
    int nscores;
    int force;                /* start the state file afresh */
} infl_lds_options;

infl_lds_options infl_lds_options_default(void);

typedef struct {
    int models;               /* subsets trained and evaluated */
    int trained_now;          /* of which trained in this call (the rest came from the state file) */
    int M;                    /* queries */
    double *outputs;          /* (models, M) the retrained query outputs */
    int nmethods;
    char (*method)[64];       /* (nmethods) the scores files' method attribute */
    double *lds;              /* (nmethods) mean over queries of the Spearman correlation */
    double *ci;               /* (nmethods) half-width of its 95% interval (1.96 sd / sqrt(M)) */
    double *per_query;        /* (nmethods, M) */
    int *valid;               /* (nmethods) queries with a defined correlation (the rest have constant
                                 predictions or outputs and are left out of the mean) */
    double seconds_train;     /* training in this call */
} infl_lds_result;

/* The linear datamodeling score (Park et al. 2023): trains `models` copies of the
 * run's model on random subsets of its training split (each row in with probability
 * `fraction`, seeded), records each query's output (an MLP's or a GPT's run: a GPT's
 * rows are documents, its output a query document's loss, summed over its tokens;
 * margin is for an MLP's classes), and scores each method by the
 * Spearman correlation over subsets between the retrained output and the sum of the
 * method's scores over the subset (predicted loss: −Σ score; margin: +Σ score), mean
 * over queries. Models already in the state file are not trained again: an
 * interrupted call resumes, and a larger `models` extends a finished state. */
infl_status infl_lds(infl_ctx *ctx, const infl_lds_options *opts, infl_lds_result **out);
void infl_lds_result_free(infl_lds_result *r);  /* accepts NULL */

// ---- model debugging (FastIF, Guo et al. 2020) ----

typedef struct {
    infl_rank_options rank;   /* the run, its train data, the method and its settings (infl_rank_options_default;
                                 rank.query and rank.top are set here) */
    const char *val;          /* validation split, e.g. "fmnist.h5:/test[0:2000]": the misclassified examples
                                 are chosen here; required */
    const char *test;         /* the split accuracy is reported on; NULL: val's whole split */
    int fix;                  /* M: the first M misclassified validation examples; default 100 */
    int per_example;          /* opponents removed per example (the k most negative scores; only negative ones);
                                 default 10 */
    int random;               /* controls: as many random training rows removed, each seed a model; default 3 */
    uint64_t seed;            /* the random controls' rows; default 0 (retraining uses the run's own seed) */
    int epochs;               /* 0: the run's recorded training options (train_epochs), else this */
    const char *keep_prefix;  /* NULL: retrained runs are deleted; else kept as PREFIX-removed.h5 and
                                 PREFIX-random-S.h5 (S = 0, 1, ...) */
    int force;                /* overwrite kept runs */
} infl_debug_options;

infl_debug_options infl_debug_options_default(void);

typedef struct {
    int64_t val_n;            /* validation examples */
    int64_t val_wrong;        /* of which the run's final model misclassifies */
    int M;                    /* misclassified examples fixed (min(fix, val_wrong)) */
    int64_t *fixed;           /* (M) their rows within val's range (row 0 = its first) */
    int64_t nremoved;         /* training rows removed: the union of their opponents */
    int64_t *removed;         /* (nremoved) ascending, rows within the train split */
    double before_fixed;      /* accuracy on the M examples: the run (0 by construction), */
    double after_fixed;       /*   after retraining without the opponents */
    double before_test, after_test;  /* accuracy on the test split */
    int nrandom;
    double *random_fixed;     /* (nrandom) the controls: as many random rows removed */
    double *random_test;      /* (nrandom) */
    double seconds_rank, seconds_train;
    char test[4400];          /* the test split's reference (val's whole split when none was given) */
} infl_debug_result;

/* Model debugging (FastIF's experiment, Guo et al. 2020): takes the first M examples of
 * the validation split the run's final model misclassifies, ranks the training data for
 * them with the options' method, removes the union of their k strongest opponents (the
 * most negative scores: removing an opponent is predicted to lower the example's loss),
 * retrains the model with the run's recorded training options and seed, and reports the
 * accuracy on the M examples and on the test split, before and after, beside controls
 * that remove as many random training rows (one model per seed). MLP runs of class
 * labels only. *out is the caller's (infl_debug_result_free). */
infl_status infl_debug(infl_ctx *ctx, const infl_debug_options *o, infl_debug_result **out);
void infl_debug_result_free(infl_debug_result *r);  /* accepts NULL */

// ---- comparing two methods ----

typedef struct {
    int M;                    /* queries */
    int64_t N;                /* training examples */
    int k;                    /* top-k of the overlaps */
    double *pearson, *spearman;       /* (M) per query, over the N training examples */
    double *top_overlap, *bottom_overlap; /* (M) share of the k proponents (opponents) in common */
    double mean_pearson, mean_spearman, mean_top, mean_bottom;
    char method_a[64], method_b[64];
} infl_compare_result;

/* Compares the full score matrices (/scores [M, N]) of two scores files of the same
 * queries and training data, query by query: Pearson, Spearman (ties share their
 * mean rank), and the overlap of the top-k proponents and opponents (the k first by
 * score, ties by index). A query whose scores are constant has no correlation: it
 * counts as 0 in the means. Non-finite scores are INFL_E_VALUE naming the file, row
 * and column. Memory: two rows of N. */
infl_status infl_compare(infl_ctx *ctx, const char *a, const char *b, int k, infl_compare_result **out);
void infl_compare_result_free(infl_compare_result *r);  /* accepts NULL */

// ---- Data Shapley ----

typedef enum {
    INFL_SHAPLEY_TMC = 0,       /* Truncated Monte Carlo over permutations (Ghorbani & Zou 2019) */
    INFL_SHAPLEY_GSHAPLEY = 1,  /* G-Shapley: one SGD pass per permutation, in its order */
    INFL_SHAPLEY_KNN = 2,       /* exact KNN-Shapley (Jia et al. 2019) on a feature space, streamed */
    INFL_SHAPLEY_EXACT = 3,     /* enumeration of every subset (at most 16 training rows) */
} infl_shapley_method;

/* "tmc", "gshapley", "knn", "exact"; "?" for others. */
const char *infl_shapley_method_name(infl_shapley_method m);

typedef struct {
    const char *train;        /* the rows valued, e.g. "f.h5:/train[0:500]"; required */
    const char *valid;        /* the utility's split (class labels, at least two classes); required */
    const char *test;         /* the removal curves' split; NULL: valid */
    infl_shapley_method method;   /* default tmc */
    int utility_loss;         /* 0: validation accuracy (default); 1: minus the mean validation cross-entropy */
    int model_mlp;            /* utility model: 0 the convex one (softmax regression, Newton, warm started;
                                 default); 1 an MLP with one tanh hidden layer (per-example SGD) */
    int hidden;               /* the MLP's hidden width; default 32 */
    int epochs;               /* the MLP's SGD passes per fit; default 5 */
    double weight_decay;      /* both models; default 1e-3 */
    double lr;                /* SGD's rate (the MLP; G-Shapley's steps); 0: G-Shapley picks the best one-pass
                                 rate of 1, 0.3, 0.1, 0.03, 0.01 on the validation split, the MLP takes 0.1 */
    double newton_tol;        /* the convex model's |grad| target; default 1e-6 */
    const char *run;          /* features: NULL = the inputs; else the penultimate activations (the last
                                 layer's inputs) of this MLP run, through the model seam's forward */
    const char *checkpoint;   /* NULL or "final", a name or a step of run */
    int permutations;         /* tmc, gshapley: at most this many permutations in all; default 500 */
    double tolerance;         /* tmc, gshapley: truncation once the prefix's utility is within tolerance ·
                                 |U(all)| of U(all) for 5 prefixes in a row; default 0.01; 0 = never */
    double converge;          /* stop when the convergence criterion (relative change of the values over the
                                 last `window` permutations) is below this; default 0.05; 0 = run them all */
    int window;               /* permutations the criterion looks back; default 100 */
    int knn_k;                /* knn: K; default 10 */
    uint64_t seed;            /* permutations, the MLP's initialisation, random removal; default 0 */
    int threads;              /* permutations (subsets, validation points) in parallel; 0 = OpenMP's default */
    const char *state;        /* tmc, gshapley: state file (resumable; more permutations extend it), or NULL */
    const char *output;       /* HDF5 values file, or NULL */
    int curve_points;         /* removal curves: points from 0 to curve_max removed; default 11; 0 = none */
    double curve_max;         /* the largest share removed; default 0.5 */
    int64_t shard_rows;       /* knn and features: rows per shard; 0 = from shard_mb */
    double shard_mb;          /* default 64 */
    double block_mb;          /* knn: memory for the distance block, validation points × N distances of 8 bytes
                                 (a float on the backend, one on the host); default 512 */
    FILE *log;                /* a line per round of permutations (the convergence as it runs); NULL: none */
    int force;                /* overwrite the output; start the state afresh */
} infl_shapley_options;

infl_shapley_options infl_shapley_options_default(void);

typedef struct {
    int64_t n;                /* training rows valued */
    int64_t begin;            /* the first one's row within its split */
    int classes;              /* K */
    int64_t features;         /* the feature space's width */
    double *values;           /* (n) */
    double *se;               /* (n) standard error over permutations (tmc, gshapley); 0 for exact and knn */
    int32_t *label;           /* (n) */
    int64_t *order;           /* (n) positions 0..n-1 by increasing value (the lowest-valued first) */
    int32_t *flipped;         /* (n) /flipped of the train split, or NULL when it has none */
    int64_t nflipped;
    double recall[2];         /* share of the flipped among the lowest-valued 10% and 20% (NaN without) */
    int permutations;         /* tmc, gshapley: done in all (the state file's included) */
    int permutations_now;     /* of which in this call */
    int64_t fits;             /* utility evaluations (model fits for tmc and exact) in this call */
    double truncated;         /* tmc, gshapley: share of marginal contributions truncated */
    double convergence;       /* the last criterion; NaN before `window` permutations */
    double u_all, u_empty;    /* U(all rows), U(∅) */
    double sum;               /* Σ values (efficiency: ≈ u_all − u_empty; exact for exact and knn) */
    double lr;                /* the SGD rate used (gshapley, mlp) */
    int curve_points;
    double *curve_fraction;   /* (curve_points) share removed */
    double *curve_high;       /* (curve_points) test accuracy after removing the highest-valued first */
    double *curve_low;        /* ... the lowest-valued first */
    double *curve_random;     /* ... a seeded random sample (mean of 3 draws) */
    double seconds, seconds_curves;
} infl_shapley_result;

/* Data Shapley values of the training rows (README "Data Shapley"): tmc and gshapley run
 * permutations in parallel rounds and print a line per round to o->log; with a state
 * file they resume, and a larger permutations extends a finished state. knn streams the
 * train split in shards, its distances by the backend's sgemm (memory: the block of
 * validation points × N distances, block_mb, plus O(N) for the values). Writes o->output when given. *out is the caller's. */
infl_status infl_shapley(infl_ctx *ctx, const infl_shapley_options *o, infl_shapley_result **out);
void infl_shapley_result_free(infl_shapley_result *r);  /* accepts NULL */

// ---- inspection ----

/* Writes a human-readable description of an infl file (format, splits, shapes,
 * layers, checkpoints, attributes) to `out`. */
infl_status infl_info(infl_ctx *ctx, const char *path, FILE *out);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* INFL_H */
