/*
 * cmd_attrib.c — the attribution commands: `infl rank` (a table per query on stdout,
 * and on request a scores HDF5, CSV, JSON and a PNG contact sheet), `infl self`
 * (self-influence, with the recall of flipped labels when the data record them) and
 * `infl loo` (influence functions against leave-one-out retraining, with a scatter
 * plot).
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attrib_args.h"
#include "cliutil.h"
#include "cmd_rank_lm.h"
#include "core/internal.h"
#include "render.h"
#include "store/store.h"

// ---- options shared by rank, self, loo and debug (attrib_args.h) ----

int attrib_args_resolve(attrib_args *A, const char *cmd) {
    infl_rank_options *o = &A->o;
    if (!o->run && !o->index) return usage_error(cmd, "no run file (--run run.h5) or index (--index index.h5)");
    if (A->method) {
        if (!strcmp(A->method, "graddot")) o->method = INFL_METHOD_GRADDOT;
        else if (!strcmp(A->method, "gradcos")) o->method = INFL_METHOD_GRADCOS;
        else if (!strcmp(A->method, "tracin")) o->method = INFL_METHOD_TRACIN;
        else if (!strcmp(A->method, "if")) o->method = INFL_METHOD_IF;
        else if (!strcmp(A->method, "ekfac")) o->method = INFL_METHOD_EKFAC;
        else if (!strcmp(A->method, "kfac")) o->method = INFL_METHOD_KFAC;
        else if (!strcmp(A->method, "diagonal")) o->method = INFL_METHOD_DIAGONAL;
        else if (!strcmp(A->method, "trak")) o->method = INFL_METHOD_TRAK;
        else if (!strcmp(A->method, "representer")) o->method = INFL_METHOD_REPRESENTER;
        else if (!strcmp(A->method, "sgd-influence")) o->method = INFL_METHOD_SGD_INFLUENCE;
        else
            return usage_error(cmd, "--method: expected tracin, graddot, gradcos, if, ekfac, kfac, diagonal, trak, "
                                    "representer or sgd-influence");
    }
    if (o->method == INFL_METHOD_TRAK && !o->index) return usage_error(cmd, "--method trak scores from a gradient index: give --index FILE (infl index)");
    bool ek = o->method >= INFL_METHOD_EKFAC && o->method <= INFL_METHOD_DIAGONAL;
    bool rp = o->method == INFL_METHOD_REPRESENTER;
    if (!rp && (A->repr_lambda || A->repr_class))
        return usage_error(cmd, "--representer-lambda and --representer-class go with --method representer");
    if (A->repr_lambda) {
        char *end = NULL;
        o->representer_lambda = strtod(A->repr_lambda, &end);
        if (!*A->repr_lambda || *end || !(o->representer_lambda > 0) || !isfinite(o->representer_lambda))
            return usage_error(cmd, "--representer-lambda: expected λ > 0 (the weight of |W|^2 in the fine-tune)");
    }
    if (A->repr_class) {
        if (!strcmp(A->repr_class, "predicted")) o->representer_class = 0;
        else if (!strcmp(A->repr_class, "true")) o->representer_class = 1;
        else if (!strcmp(A->repr_class, "loss")) o->representer_class = 2;
        else return usage_error(cmd, "--representer-class: expected predicted, true or loss");
    }
    if (!ek && o->factors) return usage_error(cmd, "--factors goes with --method ekfac, kfac or diagonal");
    if (!ek && o->query_rank) return usage_error(cmd, "--query-rank goes with --method ekfac, kfac or diagonal");
    if (ek && !o->factors) return usage_error(cmd, "--method ekfac, kfac and diagonal need --factors FILE (infl fit)");
    // the projected kernels of trak and if --index take auto damping too
    bool ix = o->index && (o->method == INFL_METHOD_TRAK || o->method == INFL_METHOD_IF);
    o->damping_auto = ek || ix;
    if (A->damping) {
        char *end = NULL;
        if (!strncmp(A->damping, "auto:", 5) && ix) {
            // auto:F, the factor of the mean eigenvalue (index kernels)
            o->damping_factor = strtod(A->damping + 5, &end);
            if (!A->damping[5] || *end || !(o->damping_factor > 0) || !isfinite(o->damping_factor))
                return usage_error(cmd, "--damping auto:F: expected a factor F > 0");
        } else if (!strcmp(A->damping, "auto")) {
            if (!ek && !ix)
                return usage_error(cmd, "--damping auto goes with --method ekfac, kfac, diagonal, or trak and if with --index");
        } else {
            o->damping = strtod(A->damping, &end);
            if (!*A->damping || *end || !(o->damping >= 0) || !isfinite(o->damping))
                return usage_error(cmd, "--damping: expected auto or a value >= 0");
            o->damping_auto = 0;
        }
    }
    if (A->hessian) {
        if (!strcmp(A->hessian, "exact")) o->hessian = 0;
        else if (!strcmp(A->hessian, "ggn")) o->hessian = 1;
        else return usage_error(cmd, "--hessian: expected exact or ggn");
    }
    if (A->solver) {
        if (!strcmp(A->solver, "direct")) o->solver = 0;
        else if (!strcmp(A->solver, "cg")) o->solver = 1;
        else if (!strcmp(A->solver, "lissa")) o->solver = 2;
        else return usage_error(cmd, "--solver: expected direct, cg or lissa");
    }
    o->shard_mb = A->shard_mb;
    return 0;
}

// The train reference the command will use: --train or the run's data attribute.
static infl_status train_ref(infl_ctx *ctx, const infl_rank_options *o, char *buf, size_t size) {
    if (o->train && *o->train) {
        snprintf(buf, size, "%s", o->train);
        return INFL_OK;
    }
    infl_run *r;
    FORWARD_IF_ERROR(store_run_open(ctx, o->run, &r));
    const char *data = NULL;
    infl_status st = store_run_find_data(ctx, r, &data);
    if (st == INFL_OK) snprintf(buf, size, "%s", data);
    store_run_close(r);
    return st;
}

static infl_status open_split(infl_ctx *ctx, const char *ref, infl_split **s) {
    infl_dataref d;
    FORWARD_IF_ERROR(infl_dataref_parse(ctx, ref, &d));
    return store_split_open(ctx, &d, s);
}

static void class_text(infl_split *s, int32_t c, char *buf, size_t size) {
    if (c < 0) {
        snprintf(buf, size, "-");
        return;
    }
    char name[64];
    store_split_class_name(s, c, name, sizeof name);
    if (name[0]) snprintf(buf, size, "%s", name);
    else snprintf(buf, size, "%d", (int)c);
}

// Label of row `idx` (index within the split) as text: class name, number or value.
static infl_status row_label(infl_ctx *ctx, infl_split *s, int64_t idx, float *x, char *buf, size_t size) {
    const infl_split_info *in = store_split_info(s);
    int32_t y = 0;
    if (in->kind == INFL_SPLIT_DOCS) {
        int32_t len;
        FORWARD_IF_ERROR(store_split_read_docs(ctx, s, idx - in->begin, 1, 0, 0, NULL, &len, &y));
        class_text(s, y, buf, size);
        return INFL_OK;
    }
    float yf[64];
    float *pyf = in->y_kind == INFL_Y_REAL && in->k <= 64 ? yf : NULL;
    FORWARD_IF_ERROR(store_split_read(ctx, s, idx - in->begin, 1, x, in->y_kind == INFL_Y_CLASS ? &y : NULL, pyf));
    if (in->y_kind == INFL_Y_CLASS) {
        class_text(s, y, buf, size);  // "-" for none (a capture without labels)
    } else {
        snprintf(buf, size, "%.4g", pyf ? pyf[0] : NAN);
    }
    return INFL_OK;
}

// ---- rank ----

typedef struct {
    char label[64];
    float *x;  // (d) pixels, when kept for the picture
} rowinfo;

static int write_text_outputs(common *c, infl_ctx *ctx, const infl_rank_result *r, const infl_rank_options *o,
                              infl_split *train, infl_split *query, rowinfo *top, rowinfo *bot, const char *csv,
                              const char *json, int force) {
    const char *paths[2] = {csv, json};
    for (int f = 0; f < 2; f++) {
        if (!paths[f]) continue;
        char tmp[4200];
        infl_status st = infl_out_begin(ctx, paths[f], force, tmp, sizeof tmp);
        if (st < 0) return fail(c, ctx, st);
        FILE *fp = fopen(tmp, "w");
        if (!fp) return fail(c, ctx, infl_seterr(ctx, INFL_E_IO, "%s: cannot write", paths[f]));
        if (f == 0) {
            fprintf(fp, "query,query_label,query_pred,side,rank,train_index,train_label,score\n");
        } else {
            fprintf(fp, "{\"method\": ");
            put_json(fp, infl_method_name(o->method));
            fprintf(fp, ", \"run\": ");
            put_json(fp, o->run);
            fprintf(fp, ", \"train\": ");
            put_json(fp, store_split_ref(train));
            fprintf(fp, ", \"query\": ");
            put_json(fp, store_split_ref(query));
            fprintf(fp, ", \"queries\": [");
        }
        for (int q = 0; q < r->M; q++) {
            char ql[64], qp[64];
            class_text(query, r->query_label[q], ql, sizeof ql);
            class_text(query, r->query_pred[q], qp, sizeof qp);
            int64_t qidx = r->query_begin + q;
            if (f == 1) {
                fprintf(fp, "%s\n {\"index\": %" PRId64 ", \"label\": ", q ? "," : "", qidx);
                put_json(fp, ql);
                fprintf(fp, ", \"pred\": ");
                put_json(fp, qp);
                fprintf(fp, ", \"loss\": %.6g, ", r->query_loss[q]);
                if (r->query_class) {
                    // representer: the class whose fine-tuned logit the scores split, and that logit
                    char qc[64];
                    class_text(query, r->query_class[q], qc, sizeof qc);
                    fprintf(fp, "\"class\": ");
                    put_json(fp, qc);
                    fprintf(fp, ", \"logit\": %.9g, ", r->query_logit[q]);
                }
            }
            for (int side = 0; side < 2; side++) {
                const int64_t *idx = side ? r->bottom_index : r->top_index;
                const float *sc = side ? r->bottom_score : r->top_score;
                rowinfo *ri = side ? bot : top;
                if (f == 1) fprintf(fp, "%s\"%s\": [", side ? ", " : "", side ? "opponents" : "proponents");
                for (int j = 0; j < r->k; j++) {
                    size_t at = (size_t)q * r->k + j, oi = (size_t)q * o->top + j;
                    if (f == 0) {
                        fprintf(fp, "%" PRId64 ",", qidx);
                        put_csv(fp, ql);
                        fputc(',', fp);
                        put_csv(fp, qp);
                        fprintf(fp, ",%s,%d,%" PRId64 ",", side ? "opponent" : "proponent", j + 1, idx[oi]);
                        put_csv(fp, ri[at].label);
                        fprintf(fp, ",%.9g\n", sc[oi]);
                    } else {
                        fprintf(fp, "%s{\"index\": %" PRId64 ", \"label\": ", j ? ", " : "", idx[oi]);
                        put_json(fp, ri[at].label);
                        fprintf(fp, ", \"score\": %.9g}", sc[oi]);
                    }
                }
                if (f == 1) fprintf(fp, "]");
            }
            if (f == 1) fprintf(fp, "}");
        }
        if (f == 1) fprintf(fp, "\n]}\n");
        int bad = ferror(fp);
        bad |= fclose(fp) != 0;
        if (bad) {
            infl_out_abort(tmp);
            return fail(c, ctx, infl_seterr(ctx, INFL_E_IO, "%s: write failed", paths[f]));
        }
        st = infl_out_commit(ctx, tmp, paths[f]);
        if (st < 0) return fail(c, ctx, st);
    }
    return 0;
}

static infl_status write_png(infl_ctx *ctx, const char *path, int force, const infl_rank_result *r,
                             const infl_rank_options *o, infl_split *train, infl_split *query, rowinfo *top,
                             rowinfo *bot, float *qx) {
    const infl_split_info *ti = store_split_info(train);
    RETURN_IF(ctx, !ti->has_image, INFL_E_ARG,
              "--png: %s has no image_shape attribute; pictures need image data", store_split_ref(train));
    int kp = r->k < 8 ? r->k : 8, cols = 1 + 2 * kp;
    infl_tile *tiles = calloc((size_t)r->M * cols, sizeof(infl_tile));
    const char **hdr = calloc((size_t)cols, sizeof(char *));
    char (*cap)[2][40] = calloc((size_t)r->M * cols, sizeof *cap);
    if (!tiles || !hdr || !cap) {
        free(tiles);
        free(hdr);
        free(cap);
        return infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
    }
    int h = ti->image_shape[0], w = ti->image_shape[1], ch = ti->image_shape[2];
    hdr[0] = "query";
    int rp = o->method == INFL_METHOD_REPRESENTER && o->representer_class != 2;  // a class's logit
    for (int j = 0; j < kp; j++) {
        hdr[1 + j] = rp ? "excitatory (raise its logit)" : "proponents (help)";
        hdr[1 + kp + j] = rp ? "inhibitory (lower it)" : "opponents (hurt)";
    }
    for (int q = 0; q < r->M; q++) {
        infl_tile *t = tiles + (size_t)q * cols;
        char ql[64], qp[64];
        class_text(query, r->query_label[q], ql, sizeof ql);
        class_text(query, r->query_pred[q], qp, sizeof qp);
        int right = r->query_label[q] == r->query_pred[q];
        snprintf(cap[(size_t)q * cols][0], 40, "#%" PRId64 " %.20s", r->query_begin + q, ql);
        if (rp) {
            // the class whose logit the scores split, as the second line
            char qc[64];
            class_text(query, r->query_class[q], qc, sizeof qc);
            snprintf(cap[(size_t)q * cols][1], 40, "%s %.16s", right ? "ok, logit of" : "logit of", qc);
        } else {
            snprintf(cap[(size_t)q * cols][1], 40, "%s %.20s", right ? "ok:" : "predicted", qp);
        }
        t[0] = (infl_tile){qx + (size_t)q * ti->d, h, w, ch, cap[(size_t)q * cols][0], cap[(size_t)q * cols][1],
                           right ? 0x2E9E4Fu : 0xD62728u};
        for (int side = 0; side < 2; side++)
            for (int j = 0; j < kp; j++) {
                size_t at = (size_t)q * r->k + j, ci = (size_t)q * cols + 1 + side * kp + j;
                rowinfo *ri = side ? &bot[at] : &top[at];
                const int64_t idx = (side ? r->bottom_index : r->top_index)[(size_t)q * o->top + j];
                const float sc = (side ? r->bottom_score : r->top_score)[(size_t)q * o->top + j];
                snprintf(cap[ci][0], 40, "#%" PRId64 " %.20s", idx, ri->label);
                snprintf(cap[ci][1], 40, "%+.3g", sc);
                tiles[ci] = (infl_tile){ri->x, h, w, ch, cap[ci][0], cap[ci][1], side ? 0xE8893Au : 0x3A78C8u};
            }
    }
    char title[256];
    snprintf(title, sizeof title, "infl rank --method %s   (%s)", infl_method_name(o->method), store_split_ref(train));
    infl_status st = infl_png_contact_sheet(ctx, path, force, tiles, r->M, cols, title, hdr);
    free(tiles);
    free(hdr);
    free(cap);
    return st;
}

// Representer points: how the fine-tuned last layer came out and how close it stays to the run's.
static void print_repr_fit(const infl_representer_fit *f) {
    printf("representer: last layer fine-tuned with lambda %.3g in %.2f s (%d Newton iterations, %d CG steps), "
           "|grad| %.2e (W within %.1e of sum_i alpha_i f_i')\n",
           f->lambda, f->seconds, f->iters, f->cg_iters, f->grad_norm, f->decomposition_bound);
    printf("representer: fine-tuned vs the run's logits: Pearson %.6f over the train split, accuracy %.2f%% -> "
           "%.2f%%",
           f->train_pearson, 100 * f->train_acc_before, 100 * f->train_acc_after);
    if (!isnan(f->query_pearson))
        printf("; queries: Pearson %.6f, accuracy %.2f%% -> %.2f%%", f->query_pearson, 100 * f->query_acc_before,
               100 * f->query_acc_after);
    printf("\n");
}

// Prints the table of one query: proponents beside opponents.
static void print_query(const infl_rank_result *r, const infl_rank_options *o, infl_split *query, int q,
                        rowinfo *top, rowinfo *bot) {
    char ql[64], qp[64];
    class_text(query, r->query_label[q], ql, sizeof ql);
    class_text(query, r->query_pred[q], qp, sizeof qp);
    printf("\nquery %" PRId64 ": label %s, predicted %s%s, loss %.4g\n", r->query_begin + q, ql, qp,
           r->query_label[q] >= 0 && r->query_pred[q] >= 0 && r->query_label[q] != r->query_pred[q] ? " (wrong)" : "", r->query_loss[q]);
    if (r->query_class && o->representer_class == 2) {
        // representer for the loss: the scores split −∂ℓ/∂Φ · Φ at the fine-tuned layer
        printf("  -dl/dlogits . logits at the fine-tuned layer, %.6g, is the sum of the scores over the training set\n",
               r->query_logit[q]);
        printf("  %3s  %-36s  %-36s\n", "", "proponents (lower the loss)", "opponents (raise the loss)");
    } else if (r->query_class) {
        // representer: the scores split the fine-tuned logit of one class
        char qc[64];
        class_text(query, r->query_class[q], qc, sizeof qc);
        printf("  the fine-tuned logit of %s, %.6g, is the sum of the scores over the training set\n", qc,
               r->query_logit[q]);
        printf("  %3s  %-36s  %-36s\n", "", "excitatory (raise that logit)", "inhibitory (lower it)");
    } else {
        printf("  %3s  %-36s  %-36s\n", "", "proponents (lower the loss)", "opponents (raise the loss)");
    }
    printf("  %3s  %8s %-14s %12s  %8s %-14s %12s\n", "#", "train", "label", "score", "train", "label", "score");
    for (int j = 0; j < r->k; j++) {
        size_t at = (size_t)q * r->k + j, oi = (size_t)q * o->top + j;
        printf("  %3d  %8" PRId64 " %-14.14s %+12.4e  %8" PRId64 " %-14.14s %+12.4e\n", j + 1, r->top_index[oi],
               top[at].label, r->top_score[oi], r->bottom_index[oi], bot[at].label, r->bottom_score[oi]);
    }
}

int cmd_rank(int argc, char **argv) {
    common c = COMMON_INIT("infl rank");
    attrib_args A = {.o = infl_rank_options_default()};
    A.shard_mb = A.o.shard_mb;
    const char *csv = NULL, *json = NULL, *png = NULL, *html = NULL, *prompt = NULL, *completion = NULL,
               *queries = NULL, *prefilter = NULL, *knn_features = NULL, *sgd_variant = NULL;
    int spans = 0;
    A.o.complete_tokens = 20;
    const cli_opt opts[] = {
        ATTRIB_OPTS(A),
        {"query", 0, ARG_STR, &A.o.query, "FILE:/split[a:b]",
         "the queries, e.g. fmnist.h5:/test[0:16] (or a gpt's documents, measured by their whole loss)"},
        {"prompt", 0, ARG_STR, &prompt, "TEXT", "gpt: a prompt; the query is log p(completion | prompt)"},
        {"completion", 0, ARG_STR, &completion, "TEXT",
         "gpt: the completion measured (default: the model's greedy completion of --gen-tokens)"},
        {"queries", 0, ARG_STR, &queries, "FILE.jsonl",
         "gpt: several queries, one {\"prompt\": ..., \"completion\": ...} a line (completion optional)"},
        {"gen-tokens", 0, ARG_INT, &A.o.complete_tokens, "N", "gpt: tokens of a greedy completion (default 20)", ">=1"},
        {"tokens", 0, ARG_FLAG, &spans, NULL, "gpt: mark each document's most influential tokens in the table"},
        {"html", 0, ARG_STR, &html, "FILE", "gpt: a report with every token shaded by its share of the score"},
        {"prefilter", 0, ARG_STR, &prefilter, "bm25:K|knn:K",
         "score each query only against its K candidates: bm25 (gpt) the most similar training documents by BM25 "
         "over tokens; knn (mlp, FastIF) the nearest training rows by squared Euclidean distance"},
        {"knn-features", 0, ARG_STR, &knn_features, "F",
         "--prefilter knn's space: inputs (default) or penultimate (the last layer's inputs at the checkpoint)"},
        {"rerank", 0, ARG_INT, &A.o.rerank, "K",
         "gpt, with --query-rank: score every document at that rank, then the best K of each side at full rank", ">=1"},
        {"method", 'm', ARG_STR, &A.method, "M",
         "tracin (default), graddot, gradcos, if, ekfac, kfac, diagonal, representer, sgd-influence; trak (with "
         "--index)"},
        {"sgd-variant", 0, ARG_STR, &sgd_variant, "V",
         "sgd-influence: replay (default: every step at its own weights, replayed from the seed) or checkpoints "
         "(each step at the nearest checkpoint's weights: no replay, no per-step memory, approximate)"},
        {"sgd-segment", 0, ARG_INT, &A.o.sgd_segment, "K",
         "sgd-influence, replay: steps whose weights are held at once (K x the parameters; default about "
         "sqrt(steps) within 256 MiB)", ">=1"},
        {"query-rank", 0, ARG_INT, &A.o.query_rank, "R",
         "ekfac, kfac, diagonal: score by the rank-R SVD of each preconditioned query matrix", ">=1"},
        {"top", 'k', ARG_INT, &A.o.top, "K", "proponents and opponents per query (default 10)", ">=1"},
        {"output", 'o', ARG_STR, &A.o.output, "FILE", "write a scores HDF5 (/topk, /bottomk)"},
        {"save-scores", 0, ARG_FLAG, &A.o.save_scores, NULL, "with -o: also the full matrix /scores [M, N]"},
        {"csv", 0, ARG_STR, &csv, "FILE", "write the rankings as CSV"},
        {"json", 0, ARG_STR, &json, "FILE", "write the rankings as JSON"},
        {"png", 0, ARG_STR, &png, "FILE", "write a contact sheet: each query beside its proponents and opponents"},
        {"force", 'f', ARG_FLAG, &A.o.force, NULL, "overwrite outputs that exist"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl rank",
                     "--run run.h5 --query FILE:/split[a:b] [--method M] [--top K] [options]\n"
                     "       infl rank --run gpt.h5 --prompt TEXT [--completion TEXT] [--tokens] [--html F] [options]",
                     "Ranks the training examples by their influence on each query's loss:\n"
                     "  score(q, z) = grad L_q' (H + lambda I)^-1 grad l_z   (if; H = I for graddot)\n"
                     "  tracin: sum over checkpoints of lr_c grad L_q(w_c)' grad l_z(w_c)\n"
                     "  ekfac, kfac, diagonal: H from the factors of infl fit, (H + lambda I)^-1 in their eigenbasis\n"
                     "  representer: the last layer fine-tuned to the optimum of (1/n) sum l_i + lambda |W|^2 (bias\n"
                     "    folded in), then score = alpha_zc (f_z' f_q + 1), alpha_z = -(1/(2 lambda n)) dl_z/dlogits:\n"
                     "    z's exact part of the query's fine-tuned logit of class c (--representer-class)\n"
                     "  sgd-influence (Hara et al. 2019, with momentum): the run's SGD steps replayed backwards with\n"
                     "    minibatch Hessian-vector products; N x the change of L_q had z been left out of its batches\n"
                     "    (an MLP trained by SGD; its training options and seed, recorded in the run, fix the batches)\n"
                     "Positive = proponent: up-weighting z lowers the query's loss (removing it raises the loss by\n"
                     "about score/N); representer: positive = excitatory (raises the class's logit). Train indices\n"
                     "are rows of the train split.\n"
                     "A gpt run: a query is log p(completion | prompt) (the completion's tokens carry the loss) or a\n"
                     "document's whole loss; each reported document's score splits over its tokens (--tokens, --html).\n"
                     "A captured file (a PyTorch model's layer gradients, python/infl/torch.py) is a run and its own\n"
                     "data: --run cap.h5 --query cap.h5:/test (tracin, graddot, gradcos, ekfac, kfac, diagonal).",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    int u = attrib_args_resolve(&A, spec.cmd);
    if (u) return u;
    if (!A.o.query && !prompt && !queries)
        return usage_error(spec.cmd, "no queries (--query FILE:/split[begin:end], or --prompt TEXT for a gpt)");
    if (!!A.o.query + !!prompt + !!queries > 1)
        return usage_error(spec.cmd, "give one of --query, --prompt and --queries");
    if (completion && !prompt) return usage_error(spec.cmd, "--completion goes with --prompt");
    if (prefilter) {
        char *end = NULL;
        int bm25 = strncmp(prefilter, "bm25:", 5) == 0, knn = strncmp(prefilter, "knn:", 4) == 0;
        long k = bm25 || knn ? strtol(prefilter + (bm25 ? 5 : 4), &end, 10) : -1;
        if (k < 1 || k > 1 << 30 || !end || *end || end == prefilter + (bm25 ? 5 : 4))
            return usage_error(spec.cmd, "--prefilter: expected bm25:K or knn:K with K >= 1 (e.g. knn:1000)");
        *(bm25 ? &A.o.prefilter_bm25 : &A.o.prefilter_knn) = (int)k;
    }
    if (knn_features) {
        if (!A.o.prefilter_knn) return usage_error(spec.cmd, "--knn-features goes with --prefilter knn:K");
        if (strcmp(knn_features, "inputs") && strcmp(knn_features, "penultimate"))
            return usage_error(spec.cmd, "--knn-features: expected inputs or penultimate");
        A.o.knn_features = strcmp(knn_features, "penultimate") == 0;
    }
    if (sgd_variant) {
        if (!strcmp(sgd_variant, "replay")) A.o.sgd_variant = 0;
        else if (!strcmp(sgd_variant, "checkpoints")) A.o.sgd_variant = 1;
        else return usage_error(spec.cmd, "--sgd-variant: expected replay or checkpoints");
    }
    if ((sgd_variant || A.o.sgd_segment) && A.o.method != INFL_METHOD_SGD_INFLUENCE)
        return usage_error(spec.cmd, "--sgd-variant and --sgd-segment go with --method sgd-influence");
    if (A.o.save_scores && !A.o.output) return usage_error(spec.cmd, "--save-scores goes with -o FILE");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    const char *outs[] = {A.o.output, csv, json, png, html};
    infl_status ost = refuse_existing(ctx, outs, 5, A.o.force);
    char ixrun[4096], ixdata[4416];
    if (ost == INFL_OK && A.o.index && !A.o.run) {
        // the first index's run and training data stand for --run and --train
        ost = store_index_run(ctx, A.o.index, ixrun, sizeof ixrun, ixdata, sizeof ixdata);
        A.o.run = ixrun;
        if (!A.o.train) A.o.train = ixdata;
    }
    // a language model (a gpt run): text queries, token shares, its own report
    int lm = 0;
    lm_queries lq = {0};
    const char *pq[1] = {prompt}, *cq[1] = {completion};
    if (ost == INFL_OK) {
        infl_run *run = NULL;
        ost = store_run_open(ctx, A.o.run, &run);
        if (ost == INFL_OK) lm = store_run_spec(run)->kind == INFL_MODEL_GPT;
        store_run_close(run);
    }
    if (ost == INFL_OK && !lm && (prompt || queries || spans || html))
        ost = infl_seterr(ctx, INFL_E_ARG, "%s: %s for language models (a gpt run); this run is not one", A.o.run,
                          prompt || queries ? "--prompt and --queries are" : "--tokens and --html are");
    if (ost == INFL_OK && lm && png)
        ost = infl_seterr(ctx, INFL_E_ARG, "--png draws image data; for a gpt run use --html FILE");
    if (ost == INFL_OK && queries) ost = lm_queries_read(ctx, queries, &lq);
    if (ost == INFL_OK && queries) {
        A.o.ntext = lq.n;
        A.o.prompt = (const char *const *)lq.prompt;
        A.o.completion = (const char *const *)lq.completion;
    } else if (prompt) {
        A.o.ntext = 1;
        A.o.prompt = pq;
        A.o.completion = cq;
    }
    A.o.token_shares = lm;
    if (ost == INFL_OK && png) {
        // pictures need image data: say so before the work, not after it
        char tref0[4096];
        infl_split *t0 = NULL;
        ost = train_ref(ctx, &A.o, tref0, sizeof tref0);
        if (ost == INFL_OK) ost = open_split(ctx, tref0, &t0);
        if (ost == INFL_OK && !store_split_info(t0)->has_image)
            ost = infl_seterr(ctx, INFL_E_ARG, "--png: %s has no image_shape attribute; pictures need image data",
                              tref0);
        store_split_close(t0);
    }
    if (ost < 0) {
        lm_queries_free(&lq);
        return finish(&c, ctx, ost);
    }
    infl_rank_result *r = NULL;
    infl_status st = infl_rank(ctx, &A.o, &r);
    end_progress(&c);
    if (!cli_root()) {
        // rank 0 reports and writes for the job
        infl_rank_result_free(r);
        lm_queries_free(&lq);
        return finish(&c, ctx, st);
    }
    if (st == INFL_OK && lm) {
        char tref[4096];
        st = train_ref(ctx, &A.o, tref, sizeof tref);
        if (st == INFL_OK) {
            printf("%s: %d queries, %" PRId64 " training documents, %d checkpoint(s); %.2f s preparing, %.2f s "
                   "scoring",
                   infl_method_name(A.o.method), r->M, r->N, r->checkpoints, r->seconds_prepare, r->seconds_score);
            if (A.o.prefilter_bm25) printf(" (only each query's %d BM25 candidates)", A.o.prefilter_bm25);
            if (A.o.rerank) printf(" at rank %d, %.2f s rescoring the best %d of each side", A.o.query_rank,
                                   r->seconds_rerank, A.o.rerank);
            printf("\n");
            if (c.verbose) {
                printf("layers scored by");
                for (int l = 0; l < r->layer_paths; l++)
                    printf("%s %s", l ? "," : "", r->layer_path[l] ? "documents' gradients" : "token rows");
                printf("\n");
            }
            lm_report_opts ro = {.csv = csv, .json = json, .html = html, .spans = spans,
                                 .ansi = isatty(fileno(stdout)), .width = 120};
            st = rank_lm_report(ctx, r, &A.o, tref, &ro);
            if (st == INFL_OK && html && !c.quiet) fprintf(stderr, "wrote %s\n", html);
        }
        infl_rank_result_free(r);
        lm_queries_free(&lq);
        return finish(&c, ctx, st);
    }
    lm_queries_free(&lq);
    if (st < 0) return finish(&c, ctx, st);

    // Labels (and pixels for the picture) of the ranked training examples.
    char tref[4096];
    infl_split *train = NULL, *query = NULL;
    rowinfo *top = calloc((size_t)r->M * r->k, sizeof(rowinfo)), *bot = calloc((size_t)r->M * r->k, sizeof(rowinfo));
    float *qx = NULL;
    int rc = 0;
    st = train_ref(ctx, &A.o, tref, sizeof tref);
    if (st == INFL_OK) st = open_split(ctx, tref, &train);
    if (st == INFL_OK) st = open_split(ctx, A.o.query, &query);
    if (st == INFL_OK && (!top || !bot)) st = infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
    int64_t d = st == INFL_OK ? store_split_info(train)->d : 0;
    for (int q = 0; q < r->M && st == INFL_OK; q++)
        for (int j = 0; j < r->k && st == INFL_OK; j++)
            for (int side = 0; side < 2 && st == INFL_OK; side++) {
                rowinfo *ri = side ? &bot[(size_t)q * r->k + j] : &top[(size_t)q * r->k + j];
                int64_t idx = (side ? r->bottom_index : r->top_index)[(size_t)q * A.o.top + j];
                ri->x = malloc((size_t)d * sizeof(float));
                if (!ri->x) st = infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
                else st = row_label(ctx, train, idx, ri->x, ri->label, sizeof ri->label);
            }
    if (st == INFL_OK) {
        printf("%s: %d queries, %" PRId64 " training examples, %d checkpoint(s); %.2f s preparing, %.2f s scoring",
               infl_method_name(A.o.method), r->M, r->N, r->checkpoints, r->seconds_prepare, r->seconds_score);
        if (A.o.prefilter_knn)
            printf(" (of which %.2f s the k-NN search; each query's %d nearest by its %s, %" PRId64
                   " distinct candidates scored)",
                   r->seconds_prefilter, A.o.prefilter_knn, A.o.knn_features ? "penultimate activations" : "inputs",
                   r->candidates);
        printf("\n");
        if (r->layers > 0) {
            printf("curvature per layer: damping");
            for (int l = 0; l < r->layers; l++) printf("%s %.3g", l ? "," : "", r->layer_damping[l]);
            printf(" (%s); mean eigenvalue", A.o.damping_auto ? "auto: 0.1 x mean eigenvalue" : "given");
            for (int l = 0; l < r->layers; l++) printf("%s %.3g", l ? "," : "", r->layer_mean_eigenvalue[l]);
            printf("; the run's weight decay %g is added to every eigenvalue too\n", r->weight_decay);
        }
        if (r->query_class) print_repr_fit(&r->representer);
        if (A.o.query_rank > 0)
            printf("query rank %d: the rank-%d factors keep %.2f%% of the preconditioned queries' squared norm "
                   "(mean over queries and layers)\n",
                   A.o.query_rank, A.o.query_rank, 100.0 * r->query_rank_energy);
        if (A.o.method == INFL_METHOD_SGD_INFLUENCE) {
            if (A.o.sgd_variant == 0)
                printf("sgd-influence: %" PRId64 " steps replayed (%.2f s) and walked backwards, %d at a time; the "
                       "replay matches the run's checkpoints to a relative %.2g\n",
                       r->sgd_steps, r->seconds_replay, r->sgd_segment, r->sgd_replay_dev);
            else
                printf("sgd-influence: %" PRId64 " steps walked backwards, each at the nearest checkpoint's weights\n",
                       r->sgd_steps);
        }
        for (int q = 0; q < r->M; q++) print_query(r, &A.o, query, q, top, bot);
        rc = write_text_outputs(&c, ctx, r, &A.o, train, query, top, bot, csv, json, A.o.force);
        if (rc == 0 && png) {
            qx = malloc((size_t)r->M * d * sizeof(float));
            st = qx ? store_split_read(ctx, query, 0, r->M, qx, NULL, NULL)
                    : infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
            if (st == INFL_OK) st = write_png(ctx, png, A.o.force, r, &A.o, train, query, top, bot, qx);
            fflush(stdout);
            if (st == INFL_OK && !c.quiet) fprintf(stderr, "wrote %s\n", png);
        }
    }
    for (int i = 0; top && bot && i < r->M * r->k; i++) {
        free(top[i].x);
        free(bot[i].x);
    }
    free(top);
    free(bot);
    free(qx);
    store_split_close(train);
    store_split_close(query);
    infl_rank_result_free(r);
    if (rc) {
        say_notes(&c, ctx);
        infl_ctx_free(ctx);
        return rc;
    }
    return finish(&c, ctx, st);
}

// ---- self ----

int cmd_self(int argc, char **argv) {
    common c = COMMON_INIT("infl self");
    attrib_args A = {.o = infl_rank_options_default()};
    A.shard_mb = A.o.shard_mb;
    const char *csv = NULL;
    int top = 20;
    const cli_opt opts[] = {
        ATTRIB_OPTS(A),
        {"method", 'm', ARG_STR, &A.method, "M",
         "tracin (default), graddot, if (with --solver direct), ekfac, kfac or diagonal (with --factors), "
         "representer; trak (with --index)"},
        {"top", 'k', ARG_INT, &top, "K", "examples to list, highest self-influence first (default 20)", ">=0"},
        {"output", 'o', ARG_STR, &A.o.output, "FILE", "write /self and /self_order to an HDF5 file"},
        {"csv", 0, ARG_STR, &csv, "FILE", "write rank,train_index,label,self_influence for every example"},
        {"force", 'f', ARG_FLAG, &A.o.force, NULL, "overwrite outputs that exist"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl self", "--run run.h5 [--method M] [options]",
                     "Self-influence of every training example, grad l_z' (H + lambda I)^-1 grad l_z (tracin: sum of\n"
                     "lr_c |grad l_z(w_c)|^2): mislabelled or atypical examples pull hardest on themselves. When the\n"
                     "data record flipped labels (/train/flipped, from infl import --flip-labels), prints the share\n"
                     "of them found among the top 5%, 10% and 20%. representer: alpha_z,y_z (|f_z|^2 + 1), z's part\n"
                     "of its own label's logit at the fine-tuned last layer.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    int u = attrib_args_resolve(&A, spec.cmd);
    if (u) return u;
    if (A.repr_class)
        return usage_error(spec.cmd, "--representer-class is rank's: self scores each example's own label");
    if (A.o.method == INFL_METHOD_IF && !A.solver) A.o.solver = 0;
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    const char *outs[] = {A.o.output, csv};
    infl_status ost = refuse_existing(ctx, outs, 2, A.o.force);
    char ixrun[4096], ixdata[4416];
    if (ost == INFL_OK && A.o.index && !A.o.run) {
        // the first index's run and training data stand for --run and --train
        ost = store_index_run(ctx, A.o.index, ixrun, sizeof ixrun, ixdata, sizeof ixdata);
        A.o.run = ixrun;
        if (!A.o.train) A.o.train = ixdata;
    }
    if (ost < 0) return finish(&c, ctx, ost);
    infl_self_result *r = NULL;
    infl_status st = infl_self(ctx, &A.o, &r);
    end_progress(&c);
    if (st < 0 || !cli_root()) {  // rank 0 reports and writes for the job
        infl_self_result_free(r);
        return finish(&c, ctx, st);
    }
    char tref[4096];
    infl_split *train = NULL;
    float *x = NULL;
    tok_codec *codec = NULL;  // documents: their text beside the label, decoded once
    st = train_ref(ctx, &A.o, tref, sizeof tref);
    if (st == INFL_OK) st = open_split(ctx, tref, &train);
    if (st == INFL_OK) {
        x = malloc((size_t)store_split_info(train)->d * sizeof(float));
        if (!x) st = infl_seterr(ctx, INFL_E_NOMEM, "out of memory");
    }
    if (st == INFL_OK && store_split_info(train)->kind == INFL_SPLIT_DOCS)
        st = tok_codec_create(ctx, store_split_tokenizer(train), &codec);
    if (st == INFL_OK) {
        int64_t begin = store_split_info(train)->begin;
        printf("self-influence by %s of %" PRId64 " training examples (%.2f s)\n", infl_method_name(A.o.method), r->N,
               r->seconds);
        if (A.o.method == INFL_METHOD_REPRESENTER) print_repr_fit(&r->representer);
        if (r->has_flipped)
            printf("flipped labels: %" PRId64 " (%.1f%%); found in the top 5%%: %.1f%%, top 10%%: %.1f%%, top 20%%: "
                   "%.1f%% (random: 5, 10, 20%%)\n",
                   r->flipped, 100.0 * (double)r->flipped / (double)r->N, 100 * r->recall[0], 100 * r->recall[1],
                   100 * r->recall[2]);
        printf("%5s %8s %-14s %14s\n", "rank", "train", "label", "self");
        for (int64_t i = 0; i < top && i < r->N && st == INFL_OK; i++) {
            char lab[64];
            st = row_label(ctx, train, r->order[i], x, lab, sizeof lab);
            char text[512] = "";
            if (st == INFL_OK && codec) st = lm_doc_line(ctx, train, codec, r->order[i], 80, text, sizeof text);
            if (st == INFL_OK)
                printf("%5" PRId64 " %8" PRId64 " %-14.14s %14.6e  %s\n", i + 1, r->order[i], lab,
                       r->self[r->order[i] - begin], text);
        }
        if (st == INFL_OK && csv) {
            char tmp[4200];
            st = infl_out_begin(ctx, csv, A.o.force, tmp, sizeof tmp);
            FILE *fp = st == INFL_OK ? fopen(tmp, "w") : NULL;
            if (st == INFL_OK && !fp) st = infl_seterr(ctx, INFL_E_IO, "%s: cannot write", csv);
            if (fp) {
                fprintf(fp, "rank,train_index,label,self_influence\n");
                for (int64_t i = 0; i < r->N && st == INFL_OK; i++) {
                    char lab[64];
                    st = row_label(ctx, train, r->order[i], x, lab, sizeof lab);
                    if (st != INFL_OK) break;
                    fprintf(fp, "%" PRId64 ",%" PRId64 ",", i + 1, r->order[i]);
                    put_csv(fp, lab);
                    fprintf(fp, ",%.9g\n", r->self[r->order[i] - begin]);
                }
                int bad = ferror(fp) | (fclose(fp) != 0);
                if (st == INFL_OK && bad) st = infl_seterr(ctx, INFL_E_IO, "%s: write failed", csv);
                if (st == INFL_OK) st = infl_out_commit(ctx, tmp, csv);
                else infl_out_abort(tmp);
            }
        }
    }
    free(x);
    tok_codec_free(codec);
    store_split_close(train);
    infl_self_result_free(r);
    return finish(&c, ctx, st);
}

// ---- loo ----

int cmd_loo(int argc, char **argv) {
    common c = COMMON_INIT("infl loo");
    attrib_args A = {.o = infl_rank_options_default()};
    A.o.damping = 0;
    A.o.solver = 0;
    A.shard_mb = A.o.shard_mb;
    infl_loo_options lo = infl_loo_options_default();
    const char *png = NULL;
    const cli_opt opts[] = {
        ATTRIB_OPTS(A),
        {"query", 0, ARG_STR, &A.o.query, "FILE:/split[a:b]", "the queries (required)"},
        {"remove-top", 0, ARG_INT, &lo.remove_top, "N", "per query, remove the N highest-scored (default 20)", ">=0"},
        {"remove-bottom", 0, ARG_INT, &lo.remove_bottom, "N", "... the N lowest-scored (default 20)", ">=0"},
        {"remove-random", 0, ARG_INT, &lo.remove_random, "N", "... N more at random (--seed; default 20)", ">=0"},
        {"tol", 0, ARG_DOUBLE, &lo.tol, "T", "retraining: gradient-norm target (default 1e-10)", ">0"},
        {"png", 0, ARG_STR, &png, "FILE", "scatter plot of predicted against actual loss changes"},
        {"force", 'f', ARG_FLAG, &A.o.force, NULL, "overwrite the picture if it exists"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl loo", "--run run.h5 --query FILE:/split[a:b] [options]",
                     "Checks influence functions against the truth they predict, on a convex model (no hidden\n"
                     "layer, weight decay > 0, trained by Newton to its optimum): removes training examples one at a\n"
                     "time, retrains from the optimum, and correlates the actual change of each query's loss with\n"
                     "the predicted score/N. Defaults here: --solver direct --damping 0 (the exact Hessian).",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    A.method = "if";
    int u = attrib_args_resolve(&A, spec.cmd);
    if (u) return u;
    if (!A.o.query) return usage_error(spec.cmd, "no queries (--query FILE:/split[begin:end])");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_status ost = refuse_existing(ctx, &png, 1, A.o.force);
    if (ost < 0) return finish(&c, ctx, ost);
    infl_loo_result *r = NULL;
    infl_status st = infl_loo(ctx, &A.o, &lo, &r);
    end_progress(&c);
    if (st < 0) return finish(&c, ctx, st);
    printf("leave-one-out: %d removals, %.1f s (hessian %s, solver %s, damping %g)\n", r->n, r->seconds,
           A.o.hessian ? "ggn" : "exact", A.o.solver == 0 ? "direct" : A.o.solver == 1 ? "cg" : "lissa",
           A.o.damping);
    printf("%6s %8s %14s %14s\n", "query", "removed", "predicted", "actual");
    for (int i = 0; i < r->n; i++)
        printf("%6" PRId64 " %8" PRId64 " %+14.6e %+14.6e\n", r->query_begin + r->query[i], r->removed[i],
               r->predicted[i], r->actual[i]);
    printf("Pearson %.4f  Spearman %.4f  (predicted = score/N against the actual change in query loss)\n",
           r->pearson, r->spearman);
    if (png) {
        char sub[128];
        snprintf(sub, sizeof sub, "Pearson %.3f   Spearman %.3f   n = %d", r->pearson, r->spearman, r->n);
        st = infl_png_scatter(ctx, png, A.o.force, r->actual, r->predicted, r->n, "actual change of query loss",
                              "predicted (score / N)", "influence functions vs leave-one-out retraining", sub, 1);
        fflush(stdout);
        if (st == INFL_OK && !c.quiet) fprintf(stderr, "wrote %s\n", png);
    }
    infl_loo_result_free(r);
    return finish(&c, ctx, st);
}
