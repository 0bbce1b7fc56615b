/*
 * attrib.h — what the attribution pipelines share (rank.c, self.c, loo.c, bench.c): an
 * open run as a model of the seam (models/model.h) with the checkpoints a method uses
 * resident on the backend, the train split, the queries' state, and the per-sub-batch
 * scoring buffers. Nothing here knows an architecture: layers, their shapes and the
 * layer space come from the model.
 */
#ifndef INFL_ATTRIB_H
#define INFL_ATTRIB_H

#include "estimators/ekfac.h"
#include "estimators/representer.h"
#include "estimators/score.h"
#include "models/model.h"
#include "sched/reader.h"
#include "sched/stage.h"
#include "sched/topk.h"
#include "store/store.h"

typedef struct {
    infl_ctx *ctx;
    const infl_rank_options *o;
    infl_run *run;
    infl_model *m;   // the run's model, through the seam
    size_t P;        // parameters of the flat vector
    int L;           // attributed layers
    int nck;         // checkpoints used
    int *ck;         // (nck) their indices in the run
    double *weight;  // (nck) lr for tracin, 1 otherwise
    float **Wd;      // (nck) weights on the backend
    infl_split *train, *query;
    int64_t N;       // train rows
    int64_t D;       // features
    int64_t Kt;      // real-target width (0: class labels)
    int M;           // queries
    // language models (m->tokens): examples of T_i token rows
    int tokens;      // the model's examples are token sequences
    int docs;        // ... given as documents whose tokens the model reads (a gpt; not a captured model,
                     // whose examples' token rows are read from its file)
    int ctxT;        // tokens read per document (the model's context); a captured model's longest example
    double zrows;    // mean token rows of a train document (the layer paths' FLOP counts)
    // the queries as documents, host: tokens (M, ctxT), lengths, loss ranges (M, 2) (a
    // completion's positions; NULL: every position), and their texts for the report
    int32_t *qtok, *qlen, *qrange;
    char **qprompt, **qcompletion;  // (M) text queries' prompt and completion (the greedy one when none was given)
    int RQ;          // the queries' token rows
    float *EQ;       // (M, RQ) backend: sums the queries' token rows per query
    int path[INFL_MAX_LINEAR];  // per layer: ATTRIB_ROWS (ghost or contraction per token row) or ATTRIB_DOCS
    float **qG;      // (nck * L) ghost methods' layers on ATTRIB_DOCS: the queries' gradients (M, pl)
    float *R;        // (M, B ctxT) per-token-row scores, or (B ctxT, M) with --query-rank
    float *EZ;       // (B, B ctxT) backend: sums a sub-batch's token rows per document
    float *hEZ;      // host twin of EZ
    float *Gm;       // (Bm, max pl) per-document gradients of a chunk of Bm documents
    int Bm;
    // query state
    float **qD, **qA;  // (nck * L) factors Δ_Q (M, d_out) and A_Q (M, d_in)
    double *qinv;      // (M) 1/|∇L_q| for gradcos
    float *V;          // (M, lsize) preconditioned query gradients in the layer space (if, ekfac)
    // ekfac, kfac, diagonal
    infl_factors *fac;
    ekfac_pre *pre;
    int lowrank;                     // --query-rank given: score by the rank-r factors
    int rl[INFL_MAX_LINEAR];         // rank kept per layer
    float *LF[INFL_MAX_LINEAR];      // (d_out, M rl) left factors of the preconditioned queries
    float *RF[INFL_MAX_LINEAR];      // (d_in + bias, M rl) right factors
    float *X1, *X2;                  // (B, M max rl) low-rank score blocks
    double energy;
    // representer: the fine-tuned logits layer (attrib_repr_fit) and its λ
    repr_layer *repr;
    double repr_lambda;
    // scoring buffers for sub-batches of B train rows
    int B;
    infl_model_work *work;
    infl_stage st;        // double-buffered train sub-batches (x, labels or targets)
    float *Sd, *T1, *T2;  // (M, B); T1, T2 for the ghost dot product only
    float *Gz;            // (B, max d_in) contraction block (if)
    float *rn;            // (2 max(B, M)) row norms
    float *hrow, *hrow2;  // (max(B, M)) host
    double flops;
} attrib;

enum { ATTRIB_ROWS = 0, ATTRIB_DOCS = 1 };

// The token rows of a sub-batch buffer (a->B examples of up to a->ctxT rows; B for T = 1).
static inline int64_t attrib_max_rows(const attrib *a) { return (int64_t)a->B * (a->tokens ? a->ctxT : 1); }
// Methods scored by contraction with preconditioned queries: if, ekfac, kfac, diagonal;
// and sgd-influence, whose query vectors are the adjoints r_t of every step (sgdinf.h).
static inline int attrib_is_ekfac(infl_method m) { return m >= INFL_METHOD_EKFAC && m <= INFL_METHOD_DIAGONAL; }
static inline int attrib_contracts(infl_method m) {
    return m == INFL_METHOD_IF || attrib_is_ekfac(m) || m == INFL_METHOD_SGD_INFLUENCE;
}
// Opens the run and its model, picks checkpoints, opens the train split (and the
// queries when need_query), uploads the checkpoints' weights. On failure everything
// is closed.
infl_status attrib_open(infl_ctx *ctx, attrib *a, const infl_rank_options *o, int need_query);
void attrib_close(attrib *a);
// Language models: the queries as documents (a->qtok, qlen, qrange, qprompt,
// qcompletion, RQ) from the query split's documents or the text queries (lmquery.c).
infl_status attrib_lm_queries(infl_ctx *ctx, attrib *a);
// Hands the queries' texts (a->qprompt, a->qcompletion: M of each) to the result, for the
// report; nothing unless the queries are documents a language model reads (a->docs).
infl_status attrib_give_query_texts(infl_ctx *ctx, attrib *a, infl_rank_result *res);
// Scoring buffers for M queries (M = 0: none), with the contraction block of
// influence-function scoring when `influence`. Sub-batches of a->B rows (1024 unless
// set before; at most --shard rows, which does not change how rows are batched: a
// shard is then one sub-batch either way).
infl_status attrib_alloc_scoring(infl_ctx *ctx, attrib *a, int M, int influence);
int64_t attrib_shard_rows(const attrib *a);
// Host rows (n) of a rows split (within its range, ascending or not), read a run of
// consecutive rows at a time: x (n, a->D), y (n) class labels (checked against the
// model) or yf (n, a->Kt) real targets; y and yf may be NULL.
infl_status attrib_read_rows(infl_ctx *ctx, attrib *a, infl_split *split, const int64_t *rows, int64_t n, float *x,
                             int32_t *y, float *yf);
// The M queries of a rows split (the range, or o->query_rows of it) into host x, y, yf.
infl_status attrib_read_queries(infl_ctx *ctx, attrib *a, float *x, int32_t *y, float *yf);
// Representer points: fine-tunes the logits layer at the checkpoint on the train split (a->repr;
// after attrib_alloc_scoring, whose sub-batch size it shares).
infl_status attrib_repr_fit(infl_ctx *ctx, attrib *a);
// Forward and backward of a batch at checkpoint c: per-example factors in work.
infl_status attrib_factors(infl_ctx *ctx, attrib *a, int c, const infl_batch *bt, infl_model_work *work);
// Per-example squared gradient norms of the last backward (host out (b)), times wgt,
// added when accumulate.
infl_status attrib_sqnorms(infl_ctx *ctx, attrib *a, infl_model_work *work, int b, double wgt, double *out,
                           int accumulate);
// X (nv, P) = (H + λI)⁻¹ G at the method's checkpoint; *op is created on first use
// and may be reused by the caller (free with infl_hvp_free; the direct solver keeps
// its factorisation on it). check: measure the true residual (one more HVP).
// INFL_E_UNSUPPORTED for a model without Hessian-vector products.
infl_status attrib_solve(infl_ctx *ctx, attrib *a, const float *G, float *X, int nv, int check, infl_hvp **op);

// Writes the attributes of a scores file: method, inputs, checkpoints, and the
// method's parameters (for ekfac the damping and mean eigenvalue per layer).
infl_status attrib_write_attrs(infl_ctx *ctx, infl_scw *w, const infl_rank_options *o, const attrib *a);

// Representer points: the fine-tune's quality (f) as attributes of a scores file.
infl_status attrib_write_repr_fit(infl_ctx *ctx, infl_scw *w, const infl_representer_fit *f);

// Receives each shard's score block (M, n) with leading dimension ld; col0 is the
// shard's first row within the split's range.
typedef infl_status (*attrib_block_fn)(infl_ctx *ctx, void *user, const float *scores, int M, int n, int ld,
                                       int64_t col0);
// A block callback that copies each shard's block into the full matrix S (M, N).
typedef struct {
    float *S;
    int64_t N;
} attrib_full;
infl_status attrib_keep_full(infl_ctx *ctx, void *user, const float *scores, int M, int n, int ld, int64_t col0);

// The queries as a batch of the model (rank.c): rows uploaded with their targets (hy: the
// host labels, or NULL), or the documents' tokens on the host (language models).
typedef struct {
    infl_batch bt;
    int32_t *hy;              // (M) host labels, or NULL
    float *hyf;               // (M, K) host real targets, or NULL
    float *qX, *qyf;          // backend
    int32_t *qy;              // backend
} attrib_qbatch;
infl_status attrib_query_batch(infl_ctx *ctx, attrib *a, attrib_qbatch *q);
void attrib_qbatch_free(infl_ctx *ctx, attrib_qbatch *q);  // accepts a zeroed one

// rank.c's scoring of a sub-batch (the comments there): the queries' state (res gets
// their labels, predictions and losses), the layers' paths, checkpoint c's terms of
// one layer or of all, and the token rows' sum per example.
infl_status attrib_prepare_queries(infl_ctx *ctx, attrib *a, infl_rank_result *res);
// An empty result for M queries and k per query (infl_rank_result_free); NULL when out of memory.
infl_rank_result *attrib_result_new(int M, int k);
// Fills res's top and bottom entries (top per query, res->k = how many) from tk.
void attrib_result_topk(infl_rank_result *res, const infl_topk *tk, int top);
void attrib_choose_paths(attrib *a);
infl_status attrib_score_layer(infl_ctx *ctx, attrib *a, int c, int l, int b, int rows_only);
infl_status attrib_score_block(infl_ctx *ctx, attrib *a, int c, int b, int rows_only);
infl_status attrib_sum_rows(infl_ctx *ctx, attrib *a, int b);
// A sub-batch of listed documents, scored (attrib_score_list): their rows within the
// split's range, tokens (b, ctxT) and lengths; S host: (M, b) scores (gradcos
// normalised), or with rows_only (M, rz) token-row terms, the rows of document i
// [row_off[i], row_off[i+1]); zn (b) squared gradient norms for gradcos.
typedef struct {
    int b;
    const int64_t *rows;
    const int32_t *tok, *len;
    const int *row_off;
    int rz;
    const float *S;
    const double *zn;
} attrib_listed;
typedef infl_status (*attrib_list_fn)(infl_ctx *ctx, void *user, const attrib_listed *L);
// Scores the n listed documents or rows (within the split's range, ascending) against
// the prepared queries, a sub-batch at a time, handing each to fn (candidates.c).
infl_status attrib_score_list(infl_ctx *ctx, attrib *a, const int64_t *rows, int64_t n, int rows_only,
                              attrib_list_fn fn, void *user);
// Per query q the rows cand[q K .. q K + K) (−1: none) are its candidates: scores them
// and fills res's top and bottom res->k from them alone.
infl_status attrib_rank_candidates(infl_ctx *ctx, attrib *a, const int64_t *cand, int K, infl_rank_result *res);
// cand (M, K): each query's K most similar train documents by BM25 over tokens.
infl_status attrib_bm25_candidates(infl_ctx *ctx, attrib *a, int K, int64_t *cand);
// cand (M, K): each query's K nearest train rows (FastIF) by squared Euclidean distance
// of the inputs or, with o->knn_features, the penultimate activations at the last
// checkpoint used (estimators/knn.h), the train split streamed once. Rows models only.
infl_status attrib_knn_candidates(infl_ctx *ctx, attrib *a, int K, int64_t *cand);
// The candidates of the prefilter the options ask for (bm25 or knn): cand (M, K).
infl_status attrib_prefilter_candidates(infl_ctx *ctx, attrib *a, int K, int64_t *cand);
// Language models: the per-token shares of every reported document (shares.c).
infl_status attrib_token_shares(infl_ctx *ctx, attrib *a, infl_rank_result *res);

// rank --index and self --index (index_rank.c): scores from gradient indexes.
infl_status index_rank(infl_ctx *ctx, const infl_rank_options *o, attrib_block_fn block, void *user,
                       infl_rank_result **out);
// index_self: r->N and r->self; data (size) gets the indexed training data reference.
infl_status index_self(infl_ctx *ctx, const infl_rank_options *o, infl_self_result *r, char *data, size_t size);
// The index rows they read and score per chunk, for an index of width k and N rows.
int index_chunk_rows(int k, int64_t N);

// infl_rank with an optional block callback.
infl_status attrib_rank(infl_ctx *ctx, const infl_rank_options *o, attrib_block_fn block, void *user,
                        infl_rank_result **out);

#endif
