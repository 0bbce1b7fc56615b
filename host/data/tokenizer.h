/*
 * tokenizer.h — the tokenizers of documents datasets (infl import text) and, later,
 * of the GPT: bytes (every byte a token) and byte-level BPE, working on the plain
 * infl_tokenizer of the store's schema (host/store/store.h: ids 0..255 the bytes,
 * 256 = EOT, merge i creates 257 + i).
 *
 * Learning BPE: start from the bytes of the training documents and repeatedly merge
 * the most frequent adjacent pair of tokens within a document (pairs never cross two
 * documents), every occurrence of it left to right; among pairs of equal count the
 * smallest (first id, then second id) wins, so the result is deterministic. Counts
 * are kept incrementally (a pair → count table, per-pair position lists, a lazy max-
 * heap), so each merge costs about the occurrences it touches, not the corpus.
 * Encoding applies the merges in rank order (the lowest-ranked adjacent pair first,
 * leftmost first), which reproduces the learner's segmentation of its own training
 * text. Decoding concatenates each token's bytes, so a sequence that splits a
 * multi-byte UTF-8 character still decodes to exactly its bytes. Internal to the
 * library (not in infl.h).
 */
#ifndef INFL_DATA_TOKENIZER_H
#define INFL_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"
#include "store/store.h"

// Fills t with the bytes tokenizer (vocab 257, no merges); frees nothing (t holds no merges).
void tok_init_bytes(infl_tokenizer *t);

typedef struct {
    int merges;            // merges learned (the vocabulary is 257 + merges)
    int64_t last_count;    // occurrences of the last pair merged (0 when none)
    int64_t tokens_before; // tokens of the training documents as bytes
    int64_t tokens_after;  // ... after every merge
    double seconds;
} tok_learn_stats;

// Learns a BPE tokenizer of up to V tokens (EOT included; 258 <= V <= INFL_TOK_MAX_VOCAB)
// on ndocs documents: document i is text[offsets[i] : offsets[i+1]] (offsets has ndocs+1
// entries, non-decreasing). Stops early, with fewer merges, when no pair occurs at least
// min_count times (min_count >= 1; 2 leaves out pairs seen once). The training text may
// hold at most 2^31 - 2 bytes. *t gets kind bpe and malloc'd merges (store_tok_clear).
// `st` may be NULL. Polls the context's cancel flag.
infl_status tok_learn_bpe(infl_ctx *ctx, const uint8_t *text, const int64_t *offsets, int64_t ndocs, int V,
                          int64_t min_count, infl_tokenizer *t, tok_learn_stats *st);

// An encoder/decoder built from a tokenizer: the merge table as a hash map and every
// token's bytes. Used by one thread at a time (it keeps scratch buffers).
typedef struct tok_codec tok_codec;

// Checks t (store_tok_check) and builds the codec; the codec does not keep t.
infl_status tok_codec_create(infl_ctx *ctx, const infl_tokenizer *t, tok_codec **out);
void tok_codec_free(tok_codec *c);  // accepts NULL
int tok_codec_vocab(const tok_codec *c);

// Encodes len bytes of text into ids (capacity len: never more tokens than bytes);
// *n gets the number of tokens. No EOT is added.
infl_status tok_encode(infl_ctx *ctx, tok_codec *c, const uint8_t *text, int64_t len, int32_t *ids, int64_t *n);
// Decodes n ids into out (cap bytes): *nbytes gets the length of the whole decoding,
// which may exceed cap (then out holds its first cap bytes; call again with more room).
// EOT decodes to no bytes. INFL_E_VALUE naming the position for an id outside the vocabulary.
infl_status tok_decode(infl_ctx *ctx, const tok_codec *c, const int32_t *ids, int64_t n, uint8_t *out, size_t cap,
                       size_t *nbytes);
// The bytes of one token (*len of them; 0 for EOT), or NULL for an id outside the vocabulary.
const uint8_t *tok_token_bytes(const tok_codec *c, int32_t id, int *len);

#endif
