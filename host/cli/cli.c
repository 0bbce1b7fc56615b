/*
 * cli.c — the infl command line: dispatch, the options every command shares
 * (--backend, --threads, --quiet, --progress), progress on stderr, Ctrl-C, and the
 * commands import, train, eval, generate and info. Results go to stdout, progress and errors
 * to stderr; the library underneath never prints or exits.
 */
#define _POSIX_C_SOURCE 200809L
#include <time.h>
#include "cli.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "infl.h"
#include "core/spec.h"

#include "cliutil.h"

// ---- import ----

// "12345" as "12,345" into buf.
static const char *grouped(int64_t v, char *buf, size_t size) {
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%lld", (long long)(v < 0 ? -v : v)), at = 0;
    if (v < 0 && at + 1 < (int)size) buf[at++] = '-';
    for (int i = 0; i < n && at + 2 < (int)size; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[at++] = ',';
        buf[at++] = raw[i];
    }
    buf[at] = 0;
    return buf;
}

// infl import text's summary on stdout.
static void print_text_result(const char *out, const infl_import_text_result *r, const infl_import_text_options *o) {
    char a[32], b[32], c[32], d[32];
    printf("wrote %s\n", out);
    printf("documents  %s in /train, %s in /test (from %d files; %s empty skipped)\n", grouped(r->docs_train, a, sizeof a),
           grouped(r->docs_test, b, sizeof b), r->files, grouped(r->empty, c, sizeof c));
    printf("tokens     %s in /train, %s in /test; longest document %s", grouped(r->tokens_train, a, sizeof a),
           grouped(r->tokens_test, b, sizeof b), grouped(r->longest, c, sizeof c));
    if (o->max_len > 0)
        printf(" (%s truncated to --max-len %s)", grouped(r->truncated, d, sizeof d), grouped(o->max_len, c, sizeof c));
    printf("\n");
    if (r->bpe)
        printf("tokenizer  bpe, vocabulary %d (EOT = %d), learned on /train in %.2f s; %.2f bytes per token\n", r->vocab,
               256, r->seconds_learn, r->tokens_train ? (double)r->bytes_train / (double)r->tokens_train : 0.0);
    else
        printf("tokenizer  bytes, vocabulary %d (EOT = %d)\n", r->vocab, 256);
    printf("classes    %d\n", r->classes);
    printf("unigram    %.4f bits = %.4f nats per token on /train (bytes: %.4f bits per byte)\n", r->unigram_bits,
           r->unigram_nats, r->byte_unigram_bits);
}

static int cmd_import(int argc, char **argv) {
    common c = COMMON_INIT("infl import");
    infl_import_fmnist_options fo = infl_import_fmnist_options_default();
    infl_import_csv_options co = infl_import_csv_options_default();
    infl_import_text_options to = infl_import_text_options_default();
    const char *out = NULL, *delim = NULL, *dir = NULL, *sep = NULL;
    int force = 0, no_header = 0, bpe = 0;
    double flip = 0, test_fraction = NAN;
    uint64_t seed = 0;
    int64_t limit = 0, max_len = 0;
    int pool = 1;
    const cli_opt opts[] = {
        {"output", 'o', ARG_STR, &out, "FILE", "the dataset file to write (required)"},
        {"force", 'f', ARG_FLAG, &force, NULL, "overwrite the output if it exists"},
        {"dir", 0, ARG_STR, &dir, "DIR", "fashion-mnist: folder of the IDX .gz files (default /usr/share/datasets/fashion-mnist); text: folder of fortune files (default /usr/share/games/fortunes)"},
        {"limit", 0, ARG_I64, &limit, "N", "fashion-mnist: keep the first N rows of each split; text: the first N documents; 0: all (default)", ">=0"},
        {"pool", 0, ARG_INT, &pool, "P", "fashion-mnist: average-pool PxP blocks: 1 (28x28), 2 (14x14), 4 (7x7)", "[1,4]"},
        {"flip-labels", 0, ARG_DOUBLE, &flip, "F", "fashion-mnist: replace a fraction F of training labels (recorded in /train/flipped)", "[0,1]"},
        {"seed", 0, ARG_U64, &seed, "S", "seed for --flip-labels and --test-fraction (default 0)"},
        {"label", 0, ARG_STR, &co.label, "COL", "csv: the label column, by header name or 0-based index (required)"},
        {"delimiter", 0, ARG_STR, &delim, "C", "csv: field separator (default ',')"},
        {"no-header", 0, ARG_FLAG, &no_header, NULL, "csv: the first line is data, not column names"},
        {"regression", 0, ARG_FLAG, &co.regression, NULL, "csv: the label is a real target (y float32 [N,1])"},
        {"test-fraction", 0, ARG_DOUBLE, &test_fraction, "F", "csv, text: put a seeded random share F of rows (documents) in /test (default: csv 0, text 0.1)", "[0,1)"},
        {"sep", 0, ARG_STR, &sep, "S", "text: % (default: a line holding only %), line, paragraph, or any separator line's text"},
        {"bpe", 0, ARG_INT, &bpe, "V", "text: learn a byte-level BPE tokenizer of V > 257 tokens on /train; 0: bytes, V = 257 (default)", ">=0"},
        {"max-len", 0, ARG_I64, &max_len, "N", "text: cut documents longer than N tokens; 0: no limit (default)", ">=0"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl import", "fashion-mnist|csv|text [FILES...] -o FILE.h5 [options]",
                     "Imports data into an infl dataset file (HDF5): /train and /test splits with x float32 [N, D]\n"
                     "and y int32 [N] (classes) or float32 [N, K]; text becomes documents (tokens int32 [T],\n"
                     "offsets int64 [N+1], y int32 [N] the topic or file) with the tokenizer in /tokenizer.\n"
                     "  infl import fashion-mnist -o fmnist.h5          (Debian package dataset-fashion-mnist)\n"
                     "  infl import csv data.csv --label target -o data.h5\n"
                     "  infl import text -o fortunes.h5 --bpe 1024      (Debian package fortunes: one class per topic)\n"
                     "  infl import text a.txt b.txt --sep paragraph -o docs.h5   (one class per file)",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    enum { MAXPOS = 4097 };
    const char **pos = malloc(MAXPOS * sizeof *pos);
    if (!pos) return usage_error(spec.cmd, "out of memory");
    int npos = 0;
    int pr = cli_parse(&spec, argc, argv, pos, MAXPOS, &npos);
    if (pr != 0) {
        free(pos);
        return pr == 1 ? 0 : 2;
    }
    const char *why = NULL;
    if (npos < 1) why = "which source? fashion-mnist, csv or text";
    else if (!out) why = "no output file (-o FILE.h5)";
    else if (strcmp(pos[0], "fashion-mnist") == 0 && npos > 1) why = "fashion-mnist takes no file argument (use --dir)";
    else if (strcmp(pos[0], "csv") == 0 && npos != 2) why = "csv needs one CSV file";
    else if (strcmp(pos[0], "csv") == 0 && !co.label) why = "csv needs --label COL";
    else if (delim && strlen(delim) != 1) why = "--delimiter takes one character";
    else if (strcmp(pos[0], "text") == 0 && npos > 1 && dir) why = "text: give files or --dir, not both";
    else if (strcmp(pos[0], "fashion-mnist") != 0 && strcmp(pos[0], "csv") != 0 && strcmp(pos[0], "text") != 0)
        why = "unknown source; expected fashion-mnist, csv or text";
    if (why) {
        free(pos);
        return usage_error(spec.cmd, why);
    }
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) {
        free(pos);
        return 1;
    }
    infl_status st;
    if (strcmp(pos[0], "fashion-mnist") == 0) {
        if (dir) fo.dir = dir;
        fo.limit = limit;
        fo.pool = pool;
        fo.flip_labels = flip;
        fo.seed = seed;
        fo.force = force;
        st = infl_import_fashion_mnist(ctx, &fo, out);
        if (st == INFL_OK && !c.quiet) fprintf(stdout, "wrote %s\n", out);
    } else if (strcmp(pos[0], "csv") == 0) {
        if (delim) co.delimiter = delim[0];
        co.header = !no_header;
        co.test_fraction = isnan(test_fraction) ? 0.0 : test_fraction;
        co.seed = seed;
        co.force = force;
        st = infl_import_csv(ctx, pos[1], &co, out);
        if (st == INFL_OK && !c.quiet) fprintf(stdout, "wrote %s\n", out);
    } else {
        if (dir) to.dir = dir;
        to.files = pos + 1;
        to.nfiles = npos - 1;
        if (sep) to.sep = sep;
        to.bpe_vocab = bpe;
        to.max_len = max_len;
        to.limit = limit;
        if (!isnan(test_fraction)) to.test_fraction = test_fraction;
        to.seed = seed;
        to.force = force;
        infl_import_text_result r;
        st = infl_import_text(ctx, &to, out, &r);
        if (st == INFL_OK) {
            end_progress(&c);
            print_text_result(out, &r, &to);
        }
    }
    free(pos);
    return finish(&c, ctx, st);
}

// ---- train ----

// The --model an argument list asks for (before parsing: it picks the defaults); the
// last one counts, as in the parser, which checks the two agree.
static infl_model_kind model_asked(int argc, char **argv) {
    infl_model_kind k = INFL_MODEL_MLP;
    for (int i = 1; i < argc; i++) {
        const char *v = strncmp(argv[i], "--model=", 8) == 0 ? argv[i] + 8
                        : strcmp(argv[i], "--model") == 0 && i + 1 < argc ? argv[i + 1]
                                                                          : NULL;
        if (v) k = strcmp(v, "gpt") == 0 ? INFL_MODEL_GPT : INFL_MODEL_MLP;
    }
    return k;
}

static int cmd_train(int argc, char **argv) {
    common c = COMMON_INIT("infl train");
    infl_model_kind kind = model_asked(argc, argv);
    infl_train_options o = kind == INFL_MODEL_GPT ? infl_train_options_gpt_default() : infl_train_options_default();
    const char *out = NULL, *layers = NULL, *act = "relu", *loss = "softmax_ce", *optimizer = "auto", *model = "mlp";
    const char *sched = o.schedule == INFL_SCHED_COSINE ? "cosine" : "constant";
    double shard_mb = o.shard_mb;
    const cli_opt opts[] = {
        {"data", 0, ARG_STR, &o.data, "FILE:/split", "training data: fmnist.h5:/train (mlp), docs.h5:/train (gpt) (required)"},
        {"model", 0, ARG_STR, &model, "M", "mlp (default) | gpt"},
        {"layers", 0, ARG_STR, &layers, "W,W,..|N", "mlp: widths from input to output, e.g. 784,256,128,10 (required); gpt: blocks (default 4)"},
        {"output", 'o', ARG_STR, &out, "FILE", "the run file to write (required)"},
        {"force", 'f', ARG_FLAG, &o.force, NULL, "overwrite the output if it exists"},
        {"activation", 0, ARG_STR, &act, "A", "mlp: relu | tanh | gelu (default relu)"},
        {"loss", 0, ARG_STR, &loss, "L", "mlp: softmax_ce | sigmoid_ce | mse (default softmax_ce)"},
        {"optimizer", 0, ARG_STR, &optimizer, "O", "mlp: auto | sgd | newton (auto: newton for a model without hidden layer); gpt: AdamW"},
        {"heads", 0, ARG_INT, &o.heads, "H", "gpt: attention heads, dividing --dim (default 4)", ">=1"},
        {"dim", 0, ARG_INT, &o.dim, "C", "gpt: the residual stream's width (default 128)", ">=1"},
        {"context", 0, ARG_INT, &o.context, "T", "gpt: positions (EOT and T - 1 tokens read, T targets); longer documents are truncated (default 256)", ">=2"},
        {"epochs", 0, ARG_INT, &o.epochs, "N", "passes over the data (default 5; gpt 1)", ">=1"},
        {"batch", 0, ARG_INT, &o.batch, "N", "minibatch size: rows (default 128); gpt: documents (default 32)", ">=1"},
        {"lr", 0, ARG_DOUBLE, &o.lr, "R", "learning rate (default 0.1; gpt 1e-3)", ">0"},
        {"momentum", 0, ARG_DOUBLE, &o.momentum, "M", "mlp: momentum (default 0.9)", "[0,1)"},
        {"wd", 0, ARG_DOUBLE, &o.weight_decay, "W", "mlp: weight decay, R(w) = mean loss + W/2 |w|^2 (default 1e-4); gpt: AdamW's decoupled decay of matrices and embeddings (default 0.1)", ">=0"},
        {"schedule", 0, ARG_STR, &sched, "S", "constant | cosine learning rate (default constant; gpt cosine)"},
        {"warmup", 0, ARG_INT, &o.warmup, "N", "steps of linear warm-up before the schedule (default 0; gpt 100)", ">=0"},
        {"beta1", 0, ARG_DOUBLE, &o.beta1, "B", "gpt: AdamW's first-moment decay (default 0.9)", "[0,1)"},
        {"beta2", 0, ARG_DOUBLE, &o.beta2, "B", "gpt: AdamW's second-moment decay (default 0.95)", "[0,1)"},
        {"adam-eps", 0, ARG_DOUBLE, &o.adam_eps, "E", "gpt: AdamW's epsilon (default 1e-8)", ">0"},
        {"clip", 0, ARG_DOUBLE, &o.clip, "G", "gpt: clip the gradient's global norm to G; 0: never (default 1)", ">=0"},
        {"seed", 0, ARG_U64, &o.seed, "S", "initialisation and shuffling (default 1)"},
        {"checkpoint-every", 0, ARG_INT, &o.checkpoint_every, "N", "steps between checkpoints; 0: final only (default 500)", ">=0"},
        {"shard", 0, ARG_I64, &o.shard_rows, "ROWS", "rows (documents) read at once (default: from --shard-mb)", ">=1"},
        {"shard-mb", 0, ARG_DOUBLE, &shard_mb, "MB", "memory budget of one shard (default 256)", ">0"},
        {"tol", 0, ARG_DOUBLE, &o.tol, "T", "newton: stop at |grad R| <= T (default 1e-8)", ">0"},
        {"max-iters", 0, ARG_INT, &o.max_iters, "N", "newton: iteration limit (default 100)", ">=1"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl train", "--data FILE:/split [--model mlp --layers W,W,.. | --model gpt] -o run.h5 [options]",
                     "Trains a model and writes a run file with its checkpoints; each records step, epoch and lr,\n"
                     "the mean learning rate since the previous one (TracIn's weight).\n"
                     "  mlp  dense layers with the activation between them, on feature rows: minibatch SGD with\n"
                     "       momentum and weight decay, or for a model without hidden layer (convex) Newton-CG in\n"
                     "       float64 to the optimum.\n"
                     "  gpt  GPT-2's architecture on token documents (infl import text): token and position\n"
                     "       embeddings, pre-LayerNorm blocks of causal multi-head attention and a GELU MLP of 4x\n"
                     "       width, a final LayerNorm, the output head tied to the token embedding; AdamW with\n"
                     "       warm-up, cosine or constant rate and gradient clipping, on the next-token loss of\n"
                     "       each document (EOT first, EOT last). The run keeps the documents' tokenizer. Attribution\n"
                     "       will see per block the QKV projection, the attention output projection and the MLP's\n"
                     "       two layers (embeddings and LayerNorms are not attributed).",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!o.data) return usage_error(spec.cmd, "no training data (--data FILE:/split)");
    if (!out) return usage_error(spec.cmd, "no output file (-o run.h5)");
    if (strcmp(model, "mlp") != 0 && strcmp(model, "gpt") != 0) return usage_error(spec.cmd, "--model: expected mlp or gpt");
    if ((strcmp(model, "gpt") == 0) != (kind == INFL_MODEL_GPT))
        return usage_error(spec.cmd, "--model: give it once, as --model mlp|gpt or --model=mlp|gpt");
    if (kind == INFL_MODEL_GPT) {
        if (layers) {
            char *end = NULL;
            long n = strtol(layers, &end, 10);
            if (end == layers || *end || n < 1 || n > 60)
                return usage_error(spec.cmd, "--layers: a gpt takes the number of blocks, 1 to 60");
            o.nlayers = (int)n;
        }
    } else {
        if (!layers) return usage_error(spec.cmd, "no model (--layers W,W,.., e.g. 784,256,128,10)");
        if (parse_widths(layers, o.widths, &o.nlayers) != 0)
            return usage_error(spec.cmd, "--layers: expected 2 to 17 comma-separated widths >= 1, e.g. 784,256,10");
    }
    if (infl_act_parse(act, &o.activation) != 0)
        return usage_error(spec.cmd, "--activation: expected relu, tanh or gelu");
    if (infl_loss_parse(loss, &o.loss) != 0)
        return usage_error(spec.cmd, "--loss: expected softmax_ce, sigmoid_ce or mse");
    if (strcmp(sched, "constant") == 0) o.schedule = INFL_SCHED_CONSTANT;
    else if (strcmp(sched, "cosine") == 0) o.schedule = INFL_SCHED_COSINE;
    else return usage_error(spec.cmd, "--schedule: expected constant or cosine");
    if (strcmp(optimizer, "auto") == 0) o.optimizer = INFL_OPT_AUTO;
    else if (strcmp(optimizer, "sgd") == 0) o.optimizer = INFL_OPT_SGD;
    else if (strcmp(optimizer, "newton") == 0) o.optimizer = INFL_OPT_NEWTON;
    else return usage_error(spec.cmd, "--optimizer: expected auto, sgd or newton");
    o.shard_mb = shard_mb;

    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_train_report rep;
    infl_status st = infl_train(ctx, &o, out, &rep);
    if (st == INFL_OK && kind == INFL_MODEL_GPT) {
        if (c.printed) fputc('\n', stderr);
        printf("trained a gpt (%d blocks, %d heads, dim %d, context %d): %lld steps, %d epochs, %d checkpoints -> %s\n"
               "training loss %.4f nats/token (%.4f bits; last epoch)   %.1f s   %.0f tokens/s   %.2f GFLOP/s\n",
               o.nlayers, o.heads, o.dim, o.context, (long long)rep.steps, o.epochs, rep.checkpoints, out,
               rep.final_loss, rep.final_loss / log(2.0), rep.seconds, rep.tokens_per_s,
               rep.seconds > 0 ? rep.flops / rep.seconds / 1e9 : 0.0);
        if (rep.truncated)
            printf("%lld documents were longer than the context and truncated to %d tokens\n", (long long)rep.truncated,
                   o.context - 1);
    } else if (st == INFL_OK) {
        if (c.printed) fputc('\n', stderr);
        char w[256] = "";
        for (int l = 0; l <= o.nlayers; l++)
            snprintf(w + strlen(w), sizeof w - strlen(w), "%s%d", l ? "-" : "", o.widths[l]);
        if (isnan(rep.grad_norm))
            printf("trained %s (%s, %s): %lld steps, %d epochs, %d checkpoints -> %s\n"
                   "training loss %.4f (last epoch)   %.1f s   %.0f examples/s\n",
                   w, act, loss, (long long)rep.steps, o.epochs, rep.checkpoints, out, rep.final_loss, rep.seconds,
                   rep.examples_per_s);
        else
            printf("trained %s (%s) by Newton-CG: %lld iterations -> %s\n"
                   "objective %.10f   |grad| %.3e   %.1f s\n",
                   w, loss, (long long)rep.steps, out, rep.final_loss, rep.grad_norm, rep.seconds);
    }
    return finish(&c, ctx, st);
}

// ---- eval ----

static int cmd_eval(int argc, char **argv) {
    common c = COMMON_INIT("infl eval");
    const char *run = NULL, *data = NULL, *ckpt = NULL;
    const cli_opt opts[] = {
        {"run", 0, ARG_STR, &run, "FILE", "the run file (required)"},
        {"data", 0, ARG_STR, &data, "FILE:/split", "data to evaluate on, e.g. fmnist.h5:/test (required)"},
        {"checkpoint", 0, ARG_STR, &ckpt, "NAME", "final (default), a checkpoint name or step"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl eval", "--run run.h5 --data FILE:/split [--checkpoint NAME]",
                     "Prints the mean loss and the accuracy of a checkpoint on a data split; for a gpt, the loss\n"
                     "per token (each document's tokens and its end) and the perplexity.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!run) return usage_error(spec.cmd, "no run file (--run run.h5)");
    if (!data) return usage_error(spec.cmd, "no data (--data FILE:/split)");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_eval_result r;
    infl_status st = infl_eval(ctx, run, ckpt, data, &r);
    if (st == INFL_OK) {
        if (!isnan(r.perplexity))
            printf("%s on %s: loss %.4f nats/token (%.4f bits)  perplexity %.3f (%lld documents, %lld tokens)\n", run,
                   data, r.loss, r.loss / log(2.0), r.perplexity, (long long)r.n, (long long)r.tokens);
        else if (isnan(r.accuracy))
            printf("%s on %s: loss %.4f (%lld examples)\n", run, data, r.loss, (long long)r.n);
        else
            printf("%s on %s: loss %.4f  accuracy %.2f%% (%lld examples)\n", run, data, r.loss, 100.0 * r.accuracy,
                   (long long)r.n);
        if (r.truncated)
            printf("%lld documents were longer than the model's context and were truncated\n", (long long)r.truncated);
    }
    return finish(&c, ctx, st);
}

// ---- generate ----

static int cmd_generate(int argc, char **argv) {
    common c = COMMON_INIT("infl generate");
    infl_generate_options o = infl_generate_options_default();
    const cli_opt opts[] = {
        {"run", 0, ARG_STR, &o.run, "FILE", "a gpt run file (required)"},
        {"prompt", 0, ARG_STR, &o.prompt, "TEXT", "the text to continue (default: none, a new document)"},
        {"checkpoint", 0, ARG_STR, &o.checkpoint, "NAME", "final (default), a checkpoint name or step"},
        {"tokens", 0, ARG_INT, &o.tokens, "N", "most tokens to generate (default 200; stops at end-of-text)", ">=1"},
        {"temperature", 0, ARG_DOUBLE, &o.temperature, "T", "softmax temperature; 0: greedy (default 0.8)", ">=0"},
        {"top-k", 0, ARG_INT, &o.top_k, "K", "sample among the K most likely tokens; 0: all (default 40)", ">=0"},
        {"seed", 0, ARG_U64, &o.seed, "S", "the sampling's seed (default 0)"},
        COMMON_OPTS(c),
    };
    cli_spec spec = {"infl generate", "--run gpt.h5 --prompt TEXT [--tokens N --temperature T --top-k K --seed S]",
                     "Prints a gpt run's completion of a prompt: the prompt as it was given, then the generated\n"
                     "text. Seeded: the same seed gives the same completion.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 0, &npos);
    if (!o.run) return usage_error(spec.cmd, "no run file (--run gpt.h5)");
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_generate_result *r = NULL;
    infl_status st = infl_generate(ctx, &o, &r);
    if (st == INFL_OK) {
        if (c.printed) fputc('\n', stderr);
        fputs(o.prompt ? o.prompt : "", stdout);
        fwrite(r->completion, 1, r->length, stdout);
        printf("\n");
        if (!c.quiet)
            fprintf(stderr, "(%d prompt tokens, %d generated%s)\n", r->prompt_tokens, r->tokens,
                    r->ended ? ", then end-of-text" : "");
    }
    infl_generate_result_free(r);
    return finish(&c, ctx, st);
}

// ---- info ----

static int cmd_info(int argc, char **argv) {
    common c = COMMON_INIT("infl info");
    const cli_opt opts[] = {COMMON_OPTS(c)};
    cli_spec spec = {"infl info", "[FILE]",
                     "Describes an infl file (format, splits, shapes, layers, checkpoints, attributes); without a\n"
                     "file, the version, the build and the backend this machine would use.",
                     opts, (int)(sizeof opts / sizeof opts[0])};
    const char *pos[1];
    int npos;
    PARSE_OR_RETURN(spec, argc, argv, pos, 1, &npos);
    infl_ctx *ctx = open_ctx(&c);
    if (!ctx) return 1;
    infl_status st = INFL_OK;
    if (npos == 0) {
        fputs(infl_build_info(), stdout);
        const char *exe = cli_exe_build();
        printf("processes  %s\n", exe ? exe : "one (built without MPI: apt-get install libopenmpi-dev openmpi-bin, rebuild)");
        printf("backend    %s\n", infl_ctx_backend(ctx));
    } else {
        st = infl_info(ctx, pos[0], stdout);
    }
    return finish(&c, ctx, st);
}

// ---- dispatch ----

// Under mpirun with two or more processes (cli_set_comm): whether the command runs across
// them (rank, self, fit, index, lds); the others refuse (rank 0 says why).
static int cli_mpi_command(const char *cmd) {
    static const char *const across[] = {"rank", "self", "fit", "index", "lds"};
    if (cli_job_size() == 1) return 1;
    for (size_t i = 0; i < sizeof across / sizeof across[0]; i++)
        if (strcmp(cmd, across[i]) == 0) return 1;
    if (cli_root())
        fprintf(stderr,
                "infl %s: runs in one process; under mpirun (-np %d) infl runs rank, self, fit, index and lds\n", cmd,
                cli_job_size());
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"import", cmd_import, "import Fashion-MNIST, a CSV file or text (Debian's fortunes) into an HDF5 dataset"},
    {"train", cmd_train, "train an MLP (SGD; Newton for convex models) or a GPT (AdamW) with checkpoints"},
    {"eval", cmd_eval, "loss and accuracy of a checkpoint on a split (a GPT: loss per token, perplexity)"},
    {"generate", cmd_generate, "a GPT run's seeded completion of a prompt"},
    {"rank", cmd_rank, "rank the training examples that influenced each query (tracin, graddot, gradcos, if, ekfac, kfac, diagonal)"},
    {"self", cmd_self, "self-influence of every training example (finds mislabelled data)"},
    {"fit", cmd_fit, "fit EK-FAC factors of a checkpoint (for rank --method ekfac)"},
    {"index", cmd_index, "project every training example's gradient once (TRAK, LoGra), for rank --index"},
    {"lds", cmd_lds, "linear datamodeling score of methods' scores, by retraining on subsets"},
    {"debug", cmd_debug, "remove the opponents of misclassified examples, retrain, compare with random removal"},
    {"compare", cmd_compare, "how two scores files agree: Pearson, Spearman, top-k overlap per query"},
    {"loo", cmd_loo, "check influence functions against leave-one-out retraining (convex models)"},
    {"shapley", cmd_shapley, "Data Shapley values of training rows (tmc, gshapley, knn, exact), removal curves"},
    {"synth", cmd_synth, "write a synthetic class-structured dataset of any size"},
    {"bench", cmd_bench, "time every phase of attribution against this machine's own ceilings"},
    {"info", cmd_info, "describe a file, or the build and backends"},
};

static void main_help(FILE *out) {
    fprintf(out,
            "infl %s — which training examples made the model do this?\n\n"
            "usage: infl COMMAND [options]     (infl COMMAND --help for its options)\n\ncommands:\n",
            infl_version_string());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out,
            "\ncommon options: --backend auto|cpu|cuda[:N] (or $INFL_BACKEND), --threads N, --quiet, --progress\n"
            "data references: FILE:/split with an optional row range, e.g. fmnist.h5:/test[0:16]\n"
            "a PyTorch model: capture its gradients with python/infl/torch.py, then --run cap.h5 (infl info cap.h5)\n"
            "many processes (a build with MPI, infl info says): mpirun -np R infl rank|self|fit|index|lds ...\n");
}

int infl_cli_main(int argc, char **argv) {
    if (argc < 2) {
        main_help(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        main_help(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("infl %s\n", infl_version_string());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0) {
            if (!cli_mpi_command(cmd)) return 2;
            cli_signals_install();
            int rc = commands[i].fn(argc - 1, argv + 1);
            cli_signals_restore();
            fflush(stdout);
            return rc;
        }
    fprintf(stderr, "infl: unknown command '%s' (see infl --help)\n", cmd);
    return 2;
}
