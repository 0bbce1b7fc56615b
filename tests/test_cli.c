/*
 * test_cli.c — the command line end to end, in-process: help and version, import,
 * train, eval and info on small data, and the exits of bad input (1 for a failure of
 * the work, 2 for usage), with messages on stderr and nothing half-written.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define CLI(...)                                        \
    ({                                                  \
        const char *argv_[] = {"infl", __VA_ARGS__, NULL}; \
        tu_cli(argv_);                                  \
    })

Test(cli, help_and_version) {
    cr_assert_eq(CLI("--version"), 0);
    cr_assert(strstr(tu_out(), INFL_VERSION_STRING) != NULL);
    cr_assert_eq(CLI("--help"), 0);
    cr_assert(strstr(tu_out(), "train") != NULL);
    const char *cmds[] = {"import", "train", "eval", "info"};
    for (int i = 0; i < 4; i++) {
        const char *argv[] = {"infl", cmds[i], "--help", NULL};
        cr_assert_eq(tu_cli(argv), 0);
        cr_assert(strstr(tu_out(), "usage: infl") != NULL, "%s --help: %s", cmds[i], tu_out());
        cr_assert(strstr(tu_out(), "--backend") != NULL);
    }
    cr_assert_eq(CLI("info"), 0);
    cr_assert(strstr(tu_out(), "backend") != NULL);
    cr_assert(strstr(tu_out(), "HDF5") != NULL);
}

Test(cli, usage_errors_exit_2) {
    cr_assert_eq(CLI("frobnicate"), 2);
    cr_assert(strstr(tu_err(), "unknown command") != NULL);
    cr_assert_eq(CLI("train", "--layers", "4,2", "-o", "x.h5"), 2);
    cr_assert(strstr(tu_err(), "--data") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("train", "--data", "a.h5:/train", "--layers", "4", "-o", "x.h5"), 2);
    cr_assert_eq(CLI("train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--epochs", "many"), 2);
    cr_assert(strstr(tu_err(), "--epochs") != NULL);
    cr_assert_eq(CLI("train", "--bogus"), 2);
    cr_assert_eq(CLI("eval", "--run", "r.h5"), 2);
    cr_assert_eq(CLI("import", "-o", "x.h5"), 2);
    cr_assert_eq(CLI("import", "csv", "-o", "x.h5"), 2);
    cr_assert_eq(CLI("info", "--backend", "tpu"), 1);
}

Test(cli, train_eval_info_end_to_end) {
    const char *data = tu_path("blobs.h5"), *run = tu_path("run.h5");
    tu_make_blobs(data, 400, 8, 3, 9);
    char train_ref[1200], test_ref[1200];
    snprintf(train_ref, sizeof train_ref, "%s:/train", data);
    snprintf(test_ref, sizeof test_ref, "%s:/test", data);
    cr_assert_eq(CLI("train", "--data", train_ref, "--layers", "8,12,3", "--epochs", "3", "--batch", "16", "--lr",
                     "0.05", "--checkpoint-every", "25", "-o", run, "--quiet"),
                 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "checkpoints") != NULL, "%s", tu_out());
    cr_assert_str_eq(tu_err(), "");  // no progress when stderr is not a terminal
    cr_assert_eq(CLI("eval", "--run", run, "--data", test_ref), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "accuracy") != NULL);
    double acc = 0;
    const char *p = strstr(tu_out(), "accuracy ");
    cr_assert(p && sscanf(p, "accuracy %lf", &acc) == 1);
    cr_assert(acc > 80, "accuracy %g%%", acc);
    cr_assert_eq(CLI("eval", "--run", run, "--data", test_ref, "--checkpoint", "25"), 0, "%s", tu_err());
    cr_assert_eq(CLI("info", run), 0);
    cr_assert(strstr(tu_out(), "relu") != NULL, "%s", tu_out());
    cr_assert(strstr(tu_out(), "000025") != NULL, "%s", tu_out());
    cr_assert_eq(CLI("info", data), 0);
    cr_assert(strstr(tu_out(), "train") != NULL);

    // --progress shows progress on stderr even when it is not a terminal
    cr_assert_eq(CLI("eval", "--run", run, "--data", test_ref, "--progress"), 0);
    cr_assert(strstr(tu_err(), "eval") != NULL, "%s", tu_err());

    // the output exists: refused without --force, replaced with it
    cr_assert_eq(CLI("train", "--data", train_ref, "--layers", "8,3", "-o", run), 1);
    cr_assert(strstr(tu_err(), "--force") != NULL, "%s", tu_err());
    cr_assert_eq(CLI("train", "--data", train_ref, "--layers", "8,3", "-o", run, "--force", "--wd", "1e-3"), 0,
                 "%s", tu_err());
    cr_assert(strstr(tu_out(), "Newton") != NULL, "%s", tu_out());
}

Test(cli, bad_files_exit_1_with_a_message) {
    const char *junk = tu_path("junk.h5");
    tu_write_file(junk, "not hdf5 at all", 15);
    char ref[1200];
    snprintf(ref, sizeof ref, "%s:/train", junk);
    cr_assert_eq(CLI("train", "--data", ref, "--layers", "4,2", "-o", tu_path("r.h5")), 1);
    cr_assert(strstr(tu_err(), "junk.h5") != NULL, "%s", tu_err());
    cr_assert(!tu_exists(tu_path("r.h5")));
    cr_assert_eq(CLI("info", junk), 1);
    cr_assert(strstr(tu_err(), "junk.h5") != NULL);
    cr_assert_eq(CLI("eval", "--run", tu_path("missing.h5"), "--data", ref), 1);
    cr_assert(strstr(tu_err(), "missing.h5") != NULL, "%s", tu_err());
    const char *data = tu_path("blobs.h5");
    tu_make_blobs(data, 50, 4, 2, 1);
    snprintf(ref, sizeof ref, "%s:/train", data);
    // a data set is not a run
    cr_assert_eq(CLI("eval", "--run", data, "--data", ref), 1);
    cr_assert(strstr(tu_err(), "infl_format") != NULL || strstr(tu_err(), "run") != NULL, "%s", tu_err());
}

Test(cli, csv_import_and_train) {
    const char *csv = tu_path("d.csv");
    FILE *f = fopen(csv, "w");
    fprintf(f, "a,b,label\n");
    uint64_t s = 3;
    for (int i = 0; i < 200; i++) {
        int c = i % 2;
        fprintf(f, "%.4f,%.4f,%d\n", c * 2.0 + tu_uniform(&s), -c * 1.5 + tu_uniform(&s), c);
    }
    fclose(f);
    const char *out = tu_path("d.h5");
    cr_assert_eq(CLI("import", "csv", csv, "--label", "label", "--test-fraction", "0.25", "-o", out), 0, "%s",
                 tu_err());
    char ref[1200];
    snprintf(ref, sizeof ref, "%s:/train", out);
    cr_assert_eq(CLI("train", "--data", ref, "--layers", "2,2", "--wd", "1e-3", "-o", tu_path("r.h5")), 0, "%s",
                 tu_err());
    snprintf(ref, sizeof ref, "%s:/test", out);
    cr_assert_eq(CLI("eval", "--run", tu_path("r.h5"), "--data", ref), 0, "%s", tu_err());
    double acc = 0;
    const char *p = strstr(tu_out(), "accuracy ");
    cr_assert(p && sscanf(p, "accuracy %lf", &acc) == 1);
    cr_assert(acc > 90, "accuracy %g%%", acc);
}

// The real Fashion-MNIST, small: import a pooled subset, train, evaluate.
Test(cli, fashion_mnist_subset, .timeout = 600) {
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("dataset-fashion-mnist is not installed");
    const char *data = tu_path("fm.h5"), *run = tu_path("fm-run.h5");
    cr_assert_eq(CLI("import", "fashion-mnist", "--limit", "3000", "--pool", "2", "-o", data), 0, "%s", tu_err());
    char tr[1200], te[1200];
    snprintf(tr, sizeof tr, "%s:/train", data);
    snprintf(te, sizeof te, "%s:/test[0:1000]", data);
    cr_assert_eq(CLI("train", "--data", tr, "--layers", "196,64,10", "--epochs", "5", "--batch", "64", "--lr", "0.05",
                     "--checkpoint-every", "100", "-o", run),
                 0, "%s", tu_err());
    cr_assert_eq(CLI("eval", "--run", run, "--data", te), 0, "%s", tu_err());
    double acc = 0;
    const char *p = strstr(tu_out(), "accuracy ");
    cr_assert(p && sscanf(p, "accuracy %lf", &acc) == 1);
    cr_assert(acc > 70, "accuracy %g%% on 1000 test images", acc);
}

Test(cli, rank_self_loo_end_to_end) {
    // tu_path's buffers rotate: keep copies of the paths used throughout
    char data[1100], run[1100], cvx[1100], csv[1100], json[1100], h5[1100];
    snprintf(data, sizeof data, "%s", tu_path("blobs.h5"));
    snprintf(run, sizeof run, "%s", tu_path("run.h5"));
    snprintf(cvx, sizeof cvx, "%s", tu_path("cvx.h5"));
    snprintf(csv, sizeof csv, "%s", tu_path("r.csv"));
    snprintf(json, sizeof json, "%s", tu_path("r.json"));
    snprintf(h5, sizeof h5, "%s", tu_path("s.h5"));
    tu_make_blobs(data, 300, 6, 3, 4);
    char tr[1200], te[1200];
    snprintf(tr, sizeof tr, "%s:/train", data);
    snprintf(te, sizeof te, "%s:/test[0:5]", data);
    cr_assert_eq(CLI("train", "--data", tr, "--layers", "6,8,3", "--epochs", "2", "--batch", "32",
                     "--checkpoint-every", "5", "-o", run),
                 0, "%s", tu_err());
    cr_assert_eq(CLI("rank", "--run", run, "--query", te, "--top", "4", "--csv", csv, "--json", json, "-o", h5,
                     "--save-scores"),
                 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "proponents") != NULL);
    cr_assert(strstr(tu_out(), "query 4:") != NULL, "%s", tu_out());
    char *s = tu_read_file(csv, NULL);
    int lines = 0;
    for (char *p = s; *p; p++) lines += *p == '\n';
    cr_assert_eq(lines, 1 + 5 * 2 * 4, "%d CSV lines", lines);
    free(s);
    s = tu_read_file(json, NULL);
    cr_assert(strstr(s, "\"opponents\"") != NULL && strstr(s, "\"method\": \"tracin\"") != NULL);
    free(s);
    cr_assert_eq(CLI("info", h5), 0);
    cr_assert(strstr(tu_out(), "scores") != NULL, "%s", tu_out());
    // outputs that exist are refused before the work; --force replaces them
    cr_assert_eq(CLI("rank", "--run", run, "--query", te, "--csv", csv), 1);
    cr_assert(strstr(tu_err(), "--force") != NULL);
    cr_assert_eq(CLI("rank", "--run", run, "--query", te, "--csv", csv, "--force", "--method", "gradcos"), 0, "%s",
                 tu_err());
    // pictures need image data
    cr_assert_eq(CLI("rank", "--run", run, "--query", te, "--png", tu_path("x.png")), 1);
    cr_assert(strstr(tu_err(), "image_shape") != NULL, "%s", tu_err());
    cr_assert(!tu_exists(tu_path("x.png")));
    cr_assert_eq(CLI("rank", "--run", run, "--query", te, "--method", "magic"), 2);
    cr_assert_eq(CLI("rank", "--run", run), 2);
    cr_assert_eq(CLI("rank", "--run", run, "--query", te, "--top", "301"), 1);

    cr_assert_eq(CLI("self", "--run", run, "--top", "3", "--csv", tu_path("self.csv")), 0, "%s", tu_err());
    cr_assert(strstr(tu_out(), "self-influence by tracin") != NULL);
    s = tu_read_file(tu_path("self.csv"), NULL);
    lines = 0;
    for (char *p = s; *p; p++) lines += *p == '\n';
    cr_assert_eq(lines, 301);
    free(s);

    cr_assert_eq(CLI("train", "--data", tr, "--layers", "6,3", "--wd", "1e-2", "-o", cvx), 0, "%s", tu_err());
    cr_assert_eq(CLI("loo", "--run", cvx, "--query", te, "--remove-top", "3", "--remove-bottom", "3", "--remove-random",
                     "3", "--png", tu_path("loo.png")),
                 0, "%s", tu_err());
    double pearson = 0;
    const char *p = strstr(tu_out(), "Pearson ");
    cr_assert(p && sscanf(p, "Pearson %lf", &pearson) == 1);
    cr_assert(pearson > 0.9, "Pearson %g", pearson);
    cr_assert(tu_exists(tu_path("loo.png")));
    cr_assert_eq(CLI("loo", "--run", run, "--query", te), 1);
    cr_assert(strstr(tu_err(), "convex") != NULL, "%s", tu_err());
}

// Every numeric option whose value would mean nothing is refused by the parser's one
// range check (cli_opt.range): exit 2, the option and what it expects on stderr.
Test(cli, meaningless_values_are_usage_errors) {
    static const char *const cases[][12] = {
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--shard", "0", NULL, "--shard"},
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--epochs", "0", NULL, "--epochs"},
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--batch", "-3", NULL, "--batch"},
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--lr", "0", NULL, "--lr"},
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--momentum", "1", NULL, "--momentum"},
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--shard-mb", "0", NULL, "--shard-mb"},
        {"train", "--data", "a.h5:/train", "--layers", "4,2", "-o", "x.h5", "--threads", "0", NULL, "--threads"},
        {"rank", "--run", "r.h5", "--query", "a.h5:/test", "--top", "0", NULL, NULL, NULL, "--top"},
        {"rank", "--run", "r.h5", "--query", "a.h5:/test", "--shard", "0", NULL, NULL, NULL, "--shard"},
        {"rank", "--run", "r.h5", "--query", "a.h5:/test", "--cg-iters", "0", NULL, NULL, NULL, "--cg-iters"},
        {"rank", "--run", "r.h5", "--query", "a.h5:/test", "--gen-tokens", "0", NULL, NULL, NULL, "--gen-tokens"},
        {"self", "--run", "r.h5", "--top", "-1", NULL, NULL, NULL, NULL, NULL, "--top"},
        {"fit", "--run", "r.h5", "-o", "f.h5", "--samples", "0", NULL, NULL, NULL, "--samples"},
        {"lds", "--run", "r.h5", "--query", "q", "--fraction", "1", "s.h5", NULL, NULL, "--fraction"},
        {"lds", "--run", "r.h5", "--query", "q", "--models", "1", "s.h5", NULL, NULL, "--models"},
        {"generate", "--run", "g.h5", "--tokens", "0", NULL, NULL, NULL, NULL, NULL, "--tokens"},
        {"import", "fashion-mnist", "-o", "x.h5", "--test-fraction", "1", NULL, NULL, NULL, NULL, "--test-fraction"},
        {"synth", "-o", "x.h5", "--classes", "1", NULL, NULL, NULL, NULL, NULL, "--classes"},
        {"compare", "a.h5", "b.h5", "--top", "0", NULL, NULL, NULL, NULL, NULL, "--top"},
        {"info", "--deterministic", "2", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "--deterministic"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[12] = {"infl"};
        int n = 1;
        while (n <= 10 && cases[i][n - 1]) argv[n] = cases[i][n - 1], n++;
        argv[n] = NULL;
        const char *opt = cases[i][10];
        cr_assert_eq(tu_cli(argv), 2, "infl %s ... %s: exit not 2; stderr: %s", cases[i][0], opt, tu_err());
        cr_assert(strstr(tu_err(), opt) && strstr(tu_err(), "expected"), "infl %s: %s", cases[i][0], tu_err());
    }
    // the edges of the ranges are accepted (parsing goes on to the next check)
    cr_assert_eq(CLI("train", "--layers", "4,2", "-o", "x.h5", "--shard", "1", "--momentum", "0"), 2);
    cr_assert(strstr(tu_err(), "--data") != NULL, "%s", tu_err());
}

// A run records its data as given (demo/d.h5); from another folder the file is found
// beside the run, and when it is nowhere the error names every path tried.
Test(cli, run_finds_its_data_from_another_folder) {
    char dir[1100], demo[1200], other[1200];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    snprintf(demo, sizeof demo, "%s/demo", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    cr_assert_eq(mkdir(demo, 0755), 0);
    cr_assert_eq(mkdir(other, 0755), 0);
    char d[1300];
    snprintf(d, sizeof d, "%s/d.h5", demo);
    tu_make_blobs(d, 200, 6, 3, 4);
    cr_assert_eq(chdir(dir), 0);
    cr_assert_eq(CLI("train", "--data", "demo/d.h5:/train", "--layers", "6,3", "--optimizer", "sgd", "--epochs", "1",
                     "-o", "demo/run.h5", "-q"),
                 0, "%s", tu_err());
    cr_assert_eq(chdir(other), 0);
    cr_assert_eq(CLI("rank", "--run", "../demo/run.h5", "--query", "../demo/d.h5:/test[0:2]", "--method", "graddot",
                     "-q"),
                 0, "%s", tu_err());
    cr_assert_eq(CLI("rank", "--run", "../demo/run.h5", "--query", "../demo/d.h5:/test[0:2]", "--method", "graddot",
                     "--png", "x.png", "-q"),
                 1);  // the picture needs image data: the train split was found (and has none)
    cr_assert(strstr(tu_err(), "image") != NULL, "%s", tu_err());
    char moved[1300];
    snprintf(moved, sizeof moved, "%s/e.h5", demo);
    cr_assert_eq(rename(d, moved), 0);
    cr_assert_eq(CLI("rank", "--run", "../demo/run.h5", "--query", "../demo/e.h5:/test[0:2]", "--method", "graddot",
                     "-q"),
                 1);
    cr_assert(strstr(tu_err(), "demo/d.h5 (from the current folder)") && strstr(tu_err(), "../demo/d.h5") &&
                  strstr(tu_err(), "../demo/demo/d.h5"),
              "%s", tu_err());
}
