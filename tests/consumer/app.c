/*
 * app.c — a program outside infl, built against an installed tree by tests/install_test.sh
 * (pkg-config, CMake's find_package, the static library): it includes only <infl.h>,
 * imports a CSV, trains a small convex model, evaluates it, and shows a failed call's
 * status and detail. Usage: app DIR (a writable folder holding data.csv).
 */
#include <infl.h>
#include <stdio.h>

static int fail(infl_ctx *ctx, const char *what, infl_status st) {
    fprintf(stderr, "app: %s: %s: %s\n", what, infl_status_name(st), infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: app DIR\n");
        return 2;
    }
    char csv[4096], data[4096], run[4096], ref[4200];
    snprintf(csv, sizeof csv, "%s/data.csv", argv[1]);
    snprintf(data, sizeof data, "%s/data.h5", argv[1]);
    snprintf(run, sizeof run, "%s/run.h5", argv[1]);
    printf("version %s (%u, header %s)\n", infl_version_string(), infl_version_number(), INFL_VERSION_STRING);

    infl_ctx_options co = infl_ctx_options_default();
    co.backend = "cpu";
    co.threads = 1;
    infl_ctx *ctx = NULL;
    infl_status st = infl_ctx_create(&co, &ctx);
    if (st != INFL_OK) return fail(ctx, "context", st);

    infl_import_csv_options io = infl_import_csv_options_default();
    io.label = "y";
    io.test_fraction = 0.25;
    io.force = 1;
    if ((st = infl_import_csv(ctx, csv, &io, data)) != INFL_OK) return fail(ctx, "import", st);

    infl_train_options to = infl_train_options_default();
    snprintf(ref, sizeof ref, "%s:/train", data);
    to.data = ref;
    to.nlayers = 1;  // convex: softmax regression, trained by Newton
    to.widths[0] = 2;
    to.widths[1] = 2;
    to.force = 1;
    infl_train_report tr;
    if ((st = infl_train(ctx, &to, run, &tr)) != INFL_OK) return fail(ctx, "train", st);
    printf("trained: %d checkpoint(s), |grad| < 1e-6: %d\n", tr.checkpoints, tr.grad_norm < 1e-6);

    infl_eval_result ev;
    snprintf(ref, sizeof ref, "%s:/test", data);
    if ((st = infl_eval(ctx, run, NULL, ref, &ev)) != INFL_OK) return fail(ctx, "eval", st);
    printf("eval: %lld rows, loss %.6f, accuracy %.4f\n", (long long)ev.n, ev.loss, ev.accuracy);

    st = infl_info(ctx, "/nonexistent/missing.h5", stdout);
    printf("missing file: %s (%d): %s\n", infl_status_name(st), (int)st, infl_ctx_error(ctx));
    infl_ctx_free(ctx);
    return 0;
}
