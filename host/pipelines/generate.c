/*
 * generate.c — `infl generate`: a GPT run's completion of a prompt. The prompt is
 * tokenized with the run's own tokenizer and read as a document (EOT first, as in
 * training); each step runs the forward pass over the sequence so far and draws the
 * next token from softmax(logits / temperature) restricted to the top_k, with a
 * uniform from the counter generator keyed by (seed, INFL_RNG_GENERATE, step), until
 * end-of-text or the token budget. The model reads at most context positions (EOT and
 * context − 1 tokens): past that the window slides, and the model then reads EOT
 * before the last context − 1 tokens. No key-value cache: the models infl trains are
 * small and the forward pass is the reference one.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "data/tokenizer.h"
#include "models/gpt.h"
#include "store/store.h"

infl_generate_options infl_generate_options_default(void) {
    infl_generate_options o;
    memset(&o, 0, sizeof o);
    o.prompt = "";
    o.tokens = 200;
    o.temperature = 0.8;
    o.top_k = 40;
    return o;
}

void infl_generate_result_free(infl_generate_result *r) {
    if (!r) return;
    free(r->completion);
    free(r);
}

typedef struct {
    float v;
    int id;
} scored;

static int by_value_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id - y->id;
}

// The next token from logits z (V): the argmax at temperature 0, else a draw from the
// top-k softmax of z / temperature by the uniform u. top (V) is scratch.
static int pick(const float *z, int V, double temperature, int top_k, double u, scored *top) {
    if (!(temperature > 0)) {
        int arg = 0;
        for (int j = 1; j < V; j++)
            if (z[j] > z[arg]) arg = j;
        return arg;
    }
    for (int j = 0; j < V; j++) top[j] = (scored){z[j], j};
    qsort(top, (size_t)V, sizeof *top, by_value_desc);
    int k = top_k > 0 && top_k < V ? top_k : V;
    double sum = 0;
    for (int j = 0; j < k; j++) sum += exp(((double)top[j].v - top[0].v) / temperature);
    double acc = 0, target = u * sum;
    for (int j = 0; j < k; j++) {
        acc += exp(((double)top[j].v - top[0].v) / temperature);
        if (target < acc) return top[j].id;
    }
    return top[k - 1].id;
}

infl_status infl_generate(infl_ctx *ctx, const infl_generate_options *o, infl_generate_result **out) {
    *out = NULL;
    RETURN_IF(ctx, !o || !o->run || !*o->run, INFL_E_ARG, "no run file given (--run run.h5)");
    RETURN_IF(ctx, o->tokens < 0, INFL_E_ARG, "--tokens: expected 0 or more");
    RETURN_IF(ctx, !(o->temperature >= 0) || !isfinite(o->temperature), INFL_E_ARG,
              "--temperature: expected 0 (greedy) or a value > 0");
    RETURN_IF(ctx, o->top_k < 0, INFL_E_ARG, "--top-k: expected 0 (all tokens) or more");
    infl_run *run = NULL;
    tok_codec *codec = NULL;
    gpt_work *w = NULL;
    float *hp = NULL, *W = NULL, *z = NULL;
    int32_t *seq = NULL, *gen = NULL;
    scored *top = NULL;
    infl_generate_result *r = NULL;
    infl_status rc = INFL_OK;
    CHECK(store_run_open(ctx, o->run, &run));
    const infl_model_spec *ms = store_run_spec(run);
    GOTO_IF(ctx, ms->kind != INFL_MODEL_GPT, INFL_E_ARG,
            "%s: a %s run; infl generate continues the text of a gpt run (infl train --model gpt)", o->run,
            infl_model_kind_name(ms->kind));
    const infl_gpt_spec *s = &ms->gpt;
    int ci;
    CHECK(store_run_find(ctx, run, o->checkpoint, &ci));
    size_t P = infl_spec_nparams(ms);
    const int T = s->context, V = s->vocab;
    size_t plen = o->prompt ? strlen(o->prompt) : 0;
    hp = infl_malloc(ctx, P * sizeof(float), "the parameters");
    seq = infl_malloc(ctx, ((size_t)T + plen + 1) * sizeof(int32_t), "the sequence");
    gen = infl_malloc(ctx, ((size_t)o->tokens + 1) * sizeof(int32_t), "the completion");
    z = infl_malloc(ctx, (size_t)V * sizeof(float), "logits");
    top = infl_malloc(ctx, (size_t)V * sizeof(scored), "logits");
    r = infl_calloc(ctx, 1, sizeof *r, "the result");
    GOTO_NOMEM_IF(!hp || !seq || !gen || !z || !top || !r);
    CHECK(store_run_load(ctx, run, ci, hp));
    CHECK(infl_be_alloc_f(ctx, &W, P, "the parameters"));
    CHECK(ctx->be->upload(ctx, W, hp, P * sizeof(float)));
    CHECK(tok_codec_create(ctx, store_run_tokenizer(run), &codec));
    int64_t np = 0;
    CHECK(tok_encode(ctx, codec, (const uint8_t *)(o->prompt ? o->prompt : ""), (int64_t)plen, seq, &np));
    r->prompt_tokens = (int)np;
    CHECK(gpt_work_create(ctx, s, 1, &w));
    // the window: the last T - 1 tokens at most (the model reads EOT before them)
    int64_t len = np > T - 1 ? T - 1 : np;
    if (len < np) memmove(seq, seq + (np - len), (size_t)len * sizeof(int32_t));
    int ngen = 0;
    for (; ngen < o->tokens; ngen++) {
        GOTO_IF(ctx, infl_cancelled(ctx), INFL_E_INTERRUPTED, "interrupted");
        if (len > T - 1) {  // past a full context: slide it by one token
            memmove(seq, seq + 1, (size_t)(len - 1) * sizeof(int32_t));
            len--;
        }
        int32_t L = (int32_t)len;
        CHECK(gpt_forward(ctx, s, W, seq, T, &L, 1, w, NULL, NULL));
        CHECK(gpt_logits_at(ctx, s, w, 0, (int)len, z));
        int next = pick(z, V, o->temperature, o->top_k, infl_rng_uniform(o->seed, INFL_RNG_GENERATE, (uint64_t)ngen, 0),
                        top);
        if (next == s->eot) {
            r->ended = 1;
            break;
        }
        gen[ngen] = next;
        seq[len++] = next;
        infl_progress(ctx, "generate", (uint64_t)ngen + 1, (uint64_t)o->tokens, NULL);
    }
    r->tokens = ngen;
    size_t nbytes = 0;
    CHECK(tok_decode(ctx, codec, gen, ngen, NULL, 0, &nbytes));
    r->completion = infl_malloc(ctx, nbytes + 1, "the completion");
    GOTO_NOMEM_IF(!r->completion);
    CHECK(tok_decode(ctx, codec, gen, ngen, (uint8_t *)r->completion, nbytes, &nbytes));
    r->completion[nbytes] = 0;
    r->length = nbytes;
    *out = r;
    r = NULL;
done:
    infl_generate_result_free(r);
    tok_codec_free(codec);
    gpt_work_free(ctx, w);
    infl_be_free(ctx, W);
    free(hp);
    free(seq);
    free(gen);
    free(z);
    free(top);
    store_run_close(run);
    return rc;
}
