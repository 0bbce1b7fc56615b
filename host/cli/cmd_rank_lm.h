/*
 * cmd_rank_lm.h — `infl rank` on a language model (cmd_rank_lm.c): the queries file
 * and the report of a ranking with token shares.
 */
#ifndef INFL_CMD_RANK_LM_H
#define INFL_CMD_RANK_LM_H

#include "cliutil.h"
#include "data/tokenizer.h"
#include "infl.h"
#include "store/store.h"

// Text queries from a JSON-lines file: one object a line with a "prompt" (required)
// and a "completion" (optional: the model's greedy completion when absent); other
// fields are ignored, blank lines skipped. INFL_E_FORMAT naming the file and line.
typedef struct {
    int n;
    char **prompt, **completion;  // (n) malloc'd; completion entries may be NULL
} lm_queries;
infl_status lm_queries_read(infl_ctx *ctx, const char *path, lm_queries *q);
void lm_queries_free(lm_queries *q);

typedef struct {
    const char *csv, *json, *html;  // outputs, or NULL
    int spans;                      // mark the most influential span of every line (--tokens)
    int ansi;                       // ... by colour (a terminal) rather than brackets
    int width;                      // terminal columns
} lm_report_opts;

// The start of document idx (within the split) as one line of at most `width`
// characters (newlines as ⏎, "…" when cut), into buf; codec: the split's tokenizer's.
infl_status lm_doc_line(infl_ctx *ctx, infl_split *split, const tok_codec *codec, int64_t idx, int width, char *buf,
                        size_t size);

// Prints the ranking of a language model (every document with its token shares:
// r->top_shares) and writes the files asked for.
infl_status rank_lm_report(infl_ctx *ctx, const infl_rank_result *r, const infl_rank_options *o,
                           const char *train_ref, const lm_report_opts *ro);

#endif
