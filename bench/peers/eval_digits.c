/*
 * eval_digits.c — `infl eval` with every digit: the loss per token of a checkpoint on a
 * data split through the public API (infl_eval), printed with %.9g, so that
 * export_gpt.py's loss can be checked to 1e-6 relative rather than the CLI's four
 * decimals. Optional tooling of bench/peers (run_gpt.sh compiles it against a build's
 * static libraries); not part of the build.
 *
 *   eval_digits RUN DATA [CHECKPOINT] [THREADS]
 */
#include <stdio.h>
#include <stdlib.h>

#include "infl.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s RUN FILE:/split[a:b] [CHECKPOINT] [THREADS]\n", argv[0]);
        return 2;
    }
    infl_ctx_options o = infl_ctx_options_default();
    o.backend = "cpu";
    o.threads = argc > 4 ? atoi(argv[4]) : 0;
    infl_ctx *ctx = NULL;
    infl_status rc = infl_ctx_create(&o, &ctx);
    if (rc != INFL_OK) {
        fprintf(stderr, "eval_digits: %s\n", infl_status_str(rc));
        return 1;
    }
    infl_eval_result r;
    rc = infl_eval(ctx, argv[1], argc > 3 ? argv[3] : NULL, argv[2], &r);
    if (rc != INFL_OK) {
        fprintf(stderr, "eval_digits: %s: %s\n", infl_status_str(rc), infl_ctx_error(ctx));
        infl_ctx_free(ctx);
        return 1;
    }
    printf("%s on %s: loss %.9g per token (%lld documents, %lld tokens, %lld truncated)\n", argv[1], argv[2], r.loss,
           (long long)r.n, (long long)r.tokens, (long long)r.truncated);
    infl_ctx_free(ctx);
    return 0;
}
