/*
 * info.c — infl_info: the public face of the store's file description.
 */
#include "store/store.h"

infl_status infl_info(infl_ctx *ctx, const char *path, FILE *out) {
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no file given");
    return store_describe(ctx, path, out);
}
