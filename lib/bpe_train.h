/* bpe_train: the byte-level BPE trainer behind tok-train.
 *
 * Training has two phases. Counting: every chunk from gk_corpus_next() is cut
 * into one part per thread (gk_chunk_run), each thread cuts its documents
 * into pre-tokenizer pieces ("words") and counts them in its own hash map; the
 * maps are merged once counting ends. Merging: the unique words are sorted by
 * their bytes, so that word numbers (and so everything after) do not depend on
 * the thread count, then merges are taken one at a time from pair counts that
 * are kept up to date incrementally: a merge visits only the words that hold
 * its pair and changes its neighbours' counts by deltas.
 *
 * The rule for the next merge, which makes training deterministic: the pair
 * with the highest count; among equal counts the smallest (left id, right id).
 * A pair whose concatenated bytes are already some token's bytes is never
 * merged (it is dropped and counted in stats.skipped), so every id has bytes of
 * its own; the Hugging Face export, which maps token text to ids, needs that.
 *
 * Typical use: gk_bpe_new, gk_bpe_add_chunk for every chunk, gk_bpe_prepare,
 * then gk_bpe_step until it returns 0 or enough merges were made. */
#ifndef GK_BPE_TRAIN_H
#define GK_BPE_TRAIN_H

#include "corpus.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gk_bpe gk_bpe;

typedef struct {
    uint64_t corpus_bytes; /* text bytes counted */
    uint64_t documents;    /* documents begun in the counted chunks */
    uint64_t words;        /* pieces the pre-tokenizer made */
    uint64_t unique_words; /* distinct pieces (known after gk_bpe_prepare) */
    uint64_t skipped;      /* pairs dropped because a token had their bytes */
} gk_bpe_stats;

/* A trainer that pre-tokenizes with PRETOK (GK_PRETOK_*) and counts on THREADS
 * threads (>= 1). */
gk_bpe *gk_bpe_new(int pretok, int threads);
/* Count the pieces of one chunk; pieces never cross a document start. */
void gk_bpe_add_chunk(gk_bpe *b, const gk_chunk *c);
/* End counting: merge the maps, sort the words, count the pairs. */
void gk_bpe_prepare(gk_bpe *b);
/* Make the next merge: write its (left, right) to PAIR and return 1, or return
 * 0 when no pair occurs at least MIN_COUNT (>= 1) times. Its new id is 256 plus
 * the number of merges made before it. */
int gk_bpe_step(gk_bpe *b, uint64_t min_count, uint32_t pair[2]);
const gk_bpe_stats *gk_bpe_get_stats(const gk_bpe *b);
void gk_bpe_free(gk_bpe *b);

/* Inspection, for tests: the unique words (in byte order) as their current
 * symbols with their counts, and the trainer's current count of a pair. */
size_t gk_bpe_nwords(const gk_bpe *b);
const uint32_t *gk_bpe_word(const gk_bpe *b, size_t i, uint32_t *len, uint64_t *count);
int64_t gk_bpe_pair_count(const gk_bpe *b, uint32_t left, uint32_t right);
/* Sum of all pair counts the trainer holds; *min gets the smallest one. */
int64_t gk_bpe_pair_sum(const gk_bpe *b, int64_t *min);

#endif
