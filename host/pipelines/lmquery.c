/*
 * lmquery.c — the queries of a language model's attribution (attrib.h; DESIGN.md
 * "Language-model queries"): documents of a split, measured by their whole next-token
 * loss as training documents are, or a prompt and a completion given as text (or the
 * model's greedy completion of the prompt), measured by log p(completion | prompt):
 * the completion's token positions carry the loss, the prompt's and the end-of-text's
 * none (a loss range per query, models/model.h infl_batch).
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrib.h"
#include "data/tokenizer.h"

static char *dup_bytes(const uint8_t *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

// The text of n tokens, malloc'd.
static infl_status decode(infl_ctx *ctx, const tok_codec *c, const int32_t *ids, int64_t n, char **out) {
    size_t need = 0;
    uint8_t probe[1];
    FORWARD_IF_ERROR(tok_decode(ctx, c, ids, n, probe, 0, &need));
    uint8_t *buf = infl_malloc(ctx, need + 1, "query text");
    if (!buf) return INFL_E_NOMEM;
    infl_status rc = tok_decode(ctx, c, ids, n, buf, need + 1, &need);
    if (rc == INFL_OK) {
        *out = dup_bytes(buf, need);
        if (!*out) rc = infl_seterr(ctx, INFL_E_NOMEM, "out of memory for query text");
    }
    free(buf);
    return rc;
}

// The model's greedy completion of prompt i (the last checkpoint used).
static infl_status greedy(infl_ctx *ctx, attrib *a, const char *prompt, int q, char **out) {
    infl_generate_options g = infl_generate_options_default();
    g.run = a->o->run;
    g.checkpoint = store_run_checkpoint(a->run, a->ck[a->nck - 1])->name;
    g.prompt = prompt;
    g.tokens = a->o->complete_tokens > 0 ? a->o->complete_tokens : 20;
    g.temperature = 0;
    g.top_k = 0;
    infl_generate_result *r = NULL;
    FORWARD_IF_ERROR(infl_generate(ctx, &g, &r));
    infl_status rc = INFL_OK;
    if (r->length == 0)
        rc = infl_seterr(ctx, INFL_E_ARG,
                         "query %d: the model's greedy completion of the prompt is empty (it ends the text there); "
                         "give one with --completion",
                         q);
    else if (!(*out = dup_bytes((const uint8_t *)r->completion, r->length)))
        rc = infl_seterr(ctx, INFL_E_NOMEM, "out of memory for a completion");
    infl_generate_result_free(r);
    return rc;
}

// Text query q: its prompt and completion (a->qcompletion[q], set before) tokenized one
// after the other into row q of qtok, the completion's positions its loss range.
static infl_status text_query(infl_ctx *ctx, attrib *a, tok_codec *c, int q) {
    const char *p = a->o->prompt[q], *cpl = a->qcompletion[q];
    a->qprompt[q] = strdup(p);
    RETURN_IF(ctx, !a->qprompt[q], INFL_E_NOMEM, "out of memory for a prompt");
    int64_t np = 0, nc = 0, pl = (int64_t)strlen(p), cl = (int64_t)strlen(cpl);
    int32_t *buf = infl_malloc(ctx, ((size_t)pl + (size_t)cl + 1) * sizeof(int32_t), "query tokens");
    if (!buf) return INFL_E_NOMEM;
    infl_status rc = INFL_OK;
    CHECK(tok_encode(ctx, c, (const uint8_t *)p, pl, buf, &np));
    CHECK(tok_encode(ctx, c, (const uint8_t *)cpl, cl, buf + np, &nc));
    GOTO_IF(ctx, np + nc > a->ctxT, INFL_E_ARG,
            "query %d: the prompt and completion are %" PRId64 " + %" PRId64 " tokens; the model reads %d (%" PRId64
            " too many)",
            q, np, nc, a->ctxT, np + nc - a->ctxT);
    memcpy(a->qtok + (size_t)q * a->ctxT, buf, (size_t)(np + nc) * sizeof(int32_t));
    a->qlen[q] = (int32_t)(np + nc);
    a->qrange[2 * q] = (int32_t)np;
    a->qrange[2 * q + 1] = (int32_t)(np + nc);
done:
    free(buf);
    return rc;
}

infl_status attrib_lm_queries(infl_ctx *ctx, attrib *a) {
    const infl_rank_options *o = a->o;
    int M = a->M, T = a->ctxT;
    tok_codec *c = NULL;
    infl_status rc = INFL_OK;
    a->qtok = infl_calloc(ctx, (size_t)M * T, sizeof(int32_t), "query tokens");
    a->qlen = infl_calloc(ctx, (size_t)M, sizeof(int32_t), "query tokens");
    a->qprompt = infl_calloc(ctx, (size_t)M, sizeof(char *), "query texts");
    a->qcompletion = infl_calloc(ctx, (size_t)M, sizeof(char *), "query texts");
    GOTO_NOMEM_IF(!a->qtok || !a->qlen || !a->qprompt || !a->qcompletion);
    const infl_tokenizer *tk = store_run_tokenizer(a->run);
    GOTO_IF(ctx, !tk, INFL_E_FORMAT, "%s: the gpt run holds no tokenizer (/model/tokenizer)", o->run);
    CHECK(tok_codec_create(ctx, tk, &c));
    if (o->ntext > 0) {
        a->qrange = infl_calloc(ctx, (size_t)M * 2, sizeof(int32_t), "query loss ranges");
        GOTO_NOMEM_IF(!a->qrange);
        for (int q = 0; q < M; q++) {
            const char *p = o->prompt[q], *cpl = o->completion ? o->completion[q] : NULL;
            GOTO_IF(ctx, !p || !*p, INFL_E_ARG, "query %d: an empty prompt; a completion is measured given a prompt",
                    q);
            GOTO_IF(ctx, cpl && !*cpl, INFL_E_ARG,
                    "query %d: an empty completion (leave it out for the model's own greedy completion)", q);
            if (cpl) {
                a->qcompletion[q] = strdup(cpl);
                GOTO_NOMEM_IF(!a->qcompletion[q]);
            } else {
                CHECK(greedy(ctx, a, p, q, &a->qcompletion[q]));
            }
            CHECK(text_query(ctx, a, c, q));
        }
    } else {
        CHECK(store_split_read_docs(ctx, a->query, 0, M, T, 0, a->qtok, a->qlen, NULL));
        for (int q = 0; q < M; q++) {
            int n = a->qlen[q] < T ? a->qlen[q] : T;
            a->qprompt[q] = strdup("");
            GOTO_NOMEM_IF(!a->qprompt[q]);
            CHECK(decode(ctx, c, a->qtok + (size_t)q * T, n, &a->qcompletion[q]));
        }
    }
    a->RQ = 0;
    for (int q = 0; q < M; q++) a->RQ += a->qlen[q] + 1 < T ? a->qlen[q] + 1 : T;
done:
    tok_codec_free(c);
    return rc;
}
