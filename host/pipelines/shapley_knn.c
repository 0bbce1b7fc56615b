/*
 * shapley_knn.c — the streamed half of `infl shapley`: the feature space (inputs, or an
 * MLP run's penultimate activations by the model seam's forward) over a split through
 * the scheduler's one streaming loop (infl_stage_stream), and the exact KNN-Shapley of
 * Jia et al. (2019) for a train split of any length.
 *
 * KNN-Shapley needs, for every validation point, the complete order of the N training
 * points by distance (the recursion runs from the farthest to the nearest and gives
 * every point a value, not only the K nearest). So the validation points go in blocks
 * of Mb: for a block, the train split streams once in shards and its squared distances
 * |a|² − 2 v·a (on the backend: one sgemm per sub-batch) fill a block of Mb × N floats;
 * then the block is downloaded and each validation point of it is sorted (distance, then
 * index) and its recursion added into the values, in parallel over the block's points.
 * Memory: the block on the backend and on the host (Mb · N · 8 bytes, Mb from block_mb,
 * at least one point), per thread N sort entries and N values, the labels (N), and the
 * reader's shards: O(N) per validation point, not O(N · M). The train split is read
 * ceil(M / Mb) times.
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "estimators/shapley.h"
#include "shapley_internal.h"

void shap_thread_ctx(infl_ctx *t, const infl_ctx *parent) {
    memset(t, 0, sizeof *t);
    t->be = parent->be;
    t->be_ctx = parent->be_ctx;
    t->cancel = parent->cancel;
}

// ---- the feature space ----

infl_status shap_feat_open(infl_ctx *ctx, shap_feat *f, const char *run, const char *checkpoint, int64_t D) {
    memset(f, 0, sizeof *f);
    f->B = 256;
    f->d = D;
    if (!run || !*run) return INFL_OK;
    float *hp = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_run_open(ctx, run, &f->run));
    const infl_model_spec *ms = store_run_spec(f->run);
    GOTO_IF(ctx, ms->kind != INFL_MODEL_MLP, INFL_E_UNSUPPORTED,
            "%s: a %s run: shapley's features are an MLP's penultimate activations", run, infl_model_kind_name(ms->kind));
    CHECK(infl_model_create(ctx, ms, 0, &f->m));
    int ci;
    CHECK(store_run_find(ctx, f->run, checkpoint, &ci));
    hp = infl_malloc(ctx, f->m->nparams * sizeof(float), "the parameters");
    GOTO_NOMEM_IF(!hp);
    CHECK(store_run_load(ctx, f->run, ci, hp));
    CHECK(infl_be_alloc_f(ctx, &f->params, f->m->nparams, "the run's parameters"));
    CHECK(ctx->be->upload(ctx, f->params, hp, f->m->nparams * sizeof(float)));
    CHECK(infl_model_work_create(ctx, f->m, f->B, &f->work));
    f->d = f->m->layer[f->m->nlayers - 1].d_in;
    f->host = infl_malloc(ctx, (size_t)f->B * f->d * sizeof(float), "a sub-batch's features");
    GOTO_NOMEM_IF(!f->host);
done:
    free(hp);
    return rc;
}

void shap_feat_close(infl_ctx *ctx, shap_feat *f) {
    if (f->m) infl_model_work_free(ctx, f->m, f->work);
    infl_be_free(ctx, f->params);
    infl_model_free(f->m);
    store_run_close(f->run);
    free(f->host);
    memset(f, 0, sizeof *f);
}

typedef struct {
    shap_feat *f;
    int64_t D;
    int host;
    shap_feat_fn fn;
    void *user;
} feat_stream;

static infl_status feat_batch(infl_ctx *ctx, void *user, const infl_shard *sh, int64_t r0, const infl_batch *bt) {
    feat_stream *fs = user;
    shap_feat *f = fs->f;
    const float *F = sh->x + (size_t)r0 * fs->D, *Fdev = bt->x;  // the inputs, on the host and the backend
    if (f->m) {
        FORWARD_IF_ERROR(infl_model_forward(ctx, f->m, f->params, bt, f->work));
        Fdev = f->work->A[f->m->nlayers - 1];
        if (fs->host) FORWARD_IF_ERROR(ctx->be->download(ctx, f->host, Fdev, (size_t)bt->b * f->d * sizeof(float)));
        F = f->host;
    }
    return fs->fn(ctx, fs->user, sh->row0 + r0, bt->b, fs->host ? F : NULL, Fdev, sh->y + r0);
}

infl_status shap_feat_stream(infl_ctx *ctx, shap_feat *f, infl_split *split, int64_t shard_rows, int host,
                             shap_feat_fn fn, void *user, const char *what) {
    const infl_split_info *in = store_split_info(split);
    RETURN_IF(ctx, in->kind != INFL_SPLIT_ROWS || in->y_kind != INFL_Y_CLASS, INFL_E_ARG,
              "%s: shapley takes rows with class labels", store_split_ref(split));
    if (f->m) FORWARD_IF_ERROR(infl_model_check_data(ctx, f->m, split));
    infl_stage st;
    memset(&st, 0, sizeof st);
    feat_stream fs = {.f = f, .D = in->d, .host = host, .fn = fn, .user = user};
    infl_stream_fns fns = {.batch = feat_batch, .shard = NULL, .user = &fs};
    infl_status rc = infl_stage_alloc(ctx, &st, split, f->m, f->B, in->d, 0, 0);
    if (rc == INFL_OK) rc = infl_stage_stream(ctx, &st, split, shard_rows, 0, 0, &fns, what, NULL, NULL);
    infl_stage_free(ctx, &st);
    return rc;
}

typedef struct {
    float *F;
    int32_t *y;
    int64_t d;
} gather;

static infl_status gather_rows(infl_ctx *ctx, void *user, int64_t row, int b, const float *F, const float *Fdev,
                               const int32_t *y) {
    (void)ctx, (void)Fdev;
    gather *g = user;
    memcpy(g->F + (size_t)row * g->d, F, (size_t)b * g->d * sizeof(float));
    memcpy(g->y + row, y, (size_t)b * sizeof(int32_t));
    return INFL_OK;
}

infl_status shap_feat_gather(infl_ctx *ctx, shap_feat *f, infl_split *split, int64_t shard_rows, float *F,
                             int32_t *y) {
    gather g = {.F = F, .y = y, .d = f->d};
    return shap_feat_stream(ctx, f, split, shard_rows, 1, gather_rows, &g, "features");
}

// ---- distances of a block of validation points to the streamed train split ----

// On the backend: a sub-batch's block S (mb, b) = |a_i|² − 2 v_q·a_i (one sgemm, the row
// norms, a row added), copied into its columns of the block (mb, N). The validation
// point's own |v_q|² is left out: it does not change the order of its neighbours.
typedef struct {
    const float *V;     // (mb, d) backend: the block's features
    int mb;
    int64_t N, d;
    float *dist;        // (mb, N) backend
    float *S;           // (mb, B) backend scratch
    float *an;          // (B) backend scratch: the sub-batch's squared norms
    int32_t *labels;    // (N) host: the train labels
} dist_block;

static infl_status dist_rows(infl_ctx *ctx, void *user, int64_t row, int b, const float *F, const float *Fdev,
                             const int32_t *y) {
    (void)F;
    dist_block *db = user;
    const infl_backend *be = ctx->be;
    const int d = (int)db->d;
    FORWARD_IF_ERROR(be->row_dot(ctx, db->an, Fdev, Fdev, b, d, 1.0f, 0.0f));
    FORWARD_IF_ERROR(be->sgemm(ctx, INFL_N, INFL_T, db->mb, b, d, -2.0f, db->V, d, Fdev, d, 0.0f, db->S, b));
    FORWARD_IF_ERROR(be->add_row(ctx, db->S, db->an, db->mb, b));
    FORWARD_IF_ERROR(be->copy_2d(ctx, db->dist + row, (int)db->N, db->S, b, db->mb, b));
    memcpy(db->labels + row, y, (size_t)b * sizeof(int32_t));
    return INFL_OK;
}

typedef struct {
    float d;
    int64_t i;
} nb;

static int by_dist(const void *x, const void *y) {
    const nb *a = x, *b = y;
    if (a->d != b->d) return a->d < b->d ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

// What a pass does with each sorted validation point, on thread t.
typedef void (*point_fn)(void *user, int t, int64_t q, const nb *sorted, const int32_t *labels, int64_t N);

// Streams the train split once per block of the points P (M, d, host), sorts every
// point's neighbours and hands them to fn (in parallel over a block's points).
static infl_status knn_pass(infl_ctx *ctx, shap_feat *f, infl_split *train, const shap_knn_job *job, const float *P,
                            int64_t M, int32_t *labels, point_fn fn, void *user, const char *what) {
    const int64_t N = store_split_info(train)->n, d = f->d;
    const int nt = job->threads;
    // the block twice (on the backend, then downloaded to sort): 8 bytes per distance
    int64_t mb = (int64_t)(job->block_mb * 1048576.0 / (8.0 * (double)N));
    mb = mb < 1 ? 1 : mb > M ? M : mb;
    infl_status rc = INFL_OK;
    float *dist = infl_malloc(ctx, (size_t)mb * N * sizeof(float), "the distance block (validation points x N)");
    nb *sorted = infl_malloc(ctx, (size_t)nt * N * sizeof(nb), "the neighbours' order, per thread");
    dist_block db = {.mb = (int)mb, .N = N, .d = d, .labels = labels};
    GOTO_NOMEM_IF(!dist || !sorted);
    CHECK(infl_be_alloc_f(ctx, &db.dist, (size_t)mb * N, "the distance block (validation points x N)"));
    CHECK(infl_be_alloc_f(ctx, (float **)&db.V, (size_t)mb * d, "a block of validation features"));
    CHECK(infl_be_alloc_f(ctx, &db.S, (size_t)mb * f->B, "a sub-batch's distances"));
    CHECK(infl_be_alloc_f(ctx, &db.an, (size_t)f->B, "norms"));
    for (int64_t q0 = 0; q0 < M; q0 += mb) {
        int m = (int)(q0 + mb <= M ? mb : M - q0);
        db.mb = m;
        CHECK(ctx->be->upload(ctx, (float *)db.V, P + q0 * d, (size_t)m * d * sizeof(float)));
        CHECK(shap_feat_stream(ctx, f, train, job->shard_rows, 0, dist_rows, &db, what));
        CHECK(ctx->be->download(ctx, dist, db.dist, (size_t)m * N * sizeof(float)));
#pragma omp parallel for num_threads(nt) schedule(dynamic)
        for (int q = 0; q < m; q++) {
            nb *s = sorted + (size_t)omp_get_thread_num() * N;
            const float *dq = dist + (size_t)q * N;
            for (int64_t i = 0; i < N; i++) s[i] = (nb){dq[i], i};
            qsort(s, (size_t)N, sizeof(nb), by_dist);
            fn(user, omp_get_thread_num(), q0 + q, s, labels, N);
        }
        char info[64];
        snprintf(info, sizeof info, "%" PRId64 " of %" PRId64 " points", q0 + m, M);
        infl_progress(ctx, what, (uint64_t)(q0 + m), (uint64_t)M, info);
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
    }
done:
    infl_be_free(ctx, db.dist);
    infl_be_free(ctx, (float *)db.V);
    infl_be_free(ctx, db.S);
    infl_be_free(ctx, db.an);
    free(dist);
    free(sorted);
    return rc;
}

// ---- values ----

typedef struct {
    const shap_knn_job *job;
    double *acc;      // (threads, N) values
    double *s;        // (threads, N) one point's recursion
    uint8_t *match;   // (threads, N)
    double *uacc;     // (threads) Σ of the points' utility
} values_pass;

static void values_point(void *user, int t, int64_t q, const nb *sorted, const int32_t *labels, int64_t N) {
    values_pass *vp = user;
    const int K = vp->job->K;
    uint8_t *match = vp->match + (size_t)t * N;
    double *s = vp->s + (size_t)t * N, *acc = vp->acc + (size_t)t * N;
    int32_t yq = vp->job->vy[q];
    for (int64_t r = 0; r < N; r++) match[r] = labels[sorted[r].i] == yq;
    shap_knn_recursion(s, match, N, K);
    double u = 0;
    for (int64_t r = 0; r < N; r++) acc[sorted[r].i] += s[r];
    for (int64_t r = 0; r < N && r < K; r++) u += match[r];
    vp->uacc[t * 8] += u / K;
}

infl_status shap_knn_values(infl_ctx *ctx, shap_feat *f, infl_split *train, const shap_knn_job *job, double *values,
                            int32_t *labels, double *u_all) {
    const int64_t N = store_split_info(train)->n;
    const int nt = job->threads;
    values_pass vp = {.job = job};
    vp.acc = infl_calloc(ctx, (size_t)nt * N, sizeof(double), "the values, per thread");
    vp.s = infl_malloc(ctx, (size_t)nt * N * sizeof(double), "the recursion, per thread");
    vp.match = infl_malloc(ctx, (size_t)nt * N, "the label matches, per thread");
    vp.uacc = infl_calloc(ctx, (size_t)nt * 8, sizeof(double), "utilities");
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!vp.acc || !vp.s || !vp.match || !vp.uacc);
    CHECK(knn_pass(ctx, f, train, job, job->V, job->M, labels, values_point, &vp, "knn-shapley"));
    double u = 0;
    for (int64_t i = 0; i < N; i++) {
        double v = 0;
        for (int t = 0; t < nt; t++) v += vp.acc[(size_t)t * N + i];
        values[i] = v / (double)job->M;
    }
    for (int t = 0; t < nt; t++) u += vp.uacc[t * 8];
    *u_all = u / (double)job->M;
done:
    free(vp.acc);
    free(vp.s);
    free(vp.match);
    free(vp.uacc);
    return rc;
}

// ---- removal curves: the KNN classifier without the removed rows ----

typedef struct {
    const shap_knn_job *job;
    int64_t *correct;  // (threads, ncurves, npoints)
    int *votes;        // (threads, npoints · classes + 2 npoints): votes, counts, leaders per point
} curves_pass;

static void curves_point(void *user, int t, int64_t q, const nb *sorted, const int32_t *labels, int64_t N) {
    curves_pass *cp = user;
    const shap_knn_job *job = cp->job;
    const int C = job->classes, K = job->K, P = job->npoints;
    int *votes = cp->votes + (size_t)t * (P * C + 2 * P), *got = votes + P * C, *best = got + P;
    int64_t *correct = cp->correct + (size_t)t * job->ncurves * P;
    for (int c = 0; c < job->ncurves; c++) {
        // one walk out from the point serves every point of the curve: a row of removal rank
        // rk is kept where cut[j] <= rk (the cuts grow with j). The K nearest kept rows vote;
        // a tie goes to the class that reached the count first.
        const int64_t *rank = job->rank + (size_t)c * N;
        memset(votes, 0, (size_t)(P * C + 2 * P) * sizeof(int));
        for (int j = 0; j < P; j++) best[j] = -1;
        int open = P;
        for (int64_t r = 0; r < N && open > 0; r++) {
            int64_t i = sorted[r].i, rk = rank[i];
            int y = labels[i];
            if (y < 0 || y >= C) continue;
            for (int j = 0; j < P && job->cut[j] <= rk; j++) {
                if (got[j] == K) continue;
                int *v = votes + j * C;
                v[y]++;
                if (best[j] < 0 || v[y] > v[best[j]]) best[j] = y;
                if (++got[j] == K) open--;
            }
        }
        for (int j = 0; j < P; j++) correct[c * P + j] += best[j] == job->ty[q];
    }
}

infl_status shap_knn_curves(infl_ctx *ctx, shap_feat *f, infl_split *train, const shap_knn_job *job, double *acc) {
    const int64_t N = store_split_info(train)->n;
    const int nt = job->threads, cells = job->ncurves * job->npoints;
    curves_pass cp = {.job = job};
    cp.correct = infl_calloc(ctx, (size_t)nt * cells, sizeof(int64_t), "the curves' counts");
    cp.votes = infl_malloc(ctx, (size_t)nt * (job->npoints * job->classes + 2 * job->npoints) * sizeof(int), "votes");
    int32_t *labels = infl_malloc(ctx, (size_t)N * sizeof(int32_t), "the train labels");
    infl_status rc = INFL_OK;
    GOTO_NOMEM_IF(!cp.correct || !cp.votes || !labels);
    CHECK(knn_pass(ctx, f, train, job, job->T, job->MT, labels, curves_point, &cp, "knn removal curves"));
    for (int c = 0; c < cells; c++) {
        int64_t s = 0;
        for (int t = 0; t < nt; t++) s += cp.correct[(size_t)t * cells + c];
        acc[c] = (double)s / (double)job->MT;
    }
done:
    free(cp.correct);
    free(cp.votes);
    free(labels);
    return rc;
}
