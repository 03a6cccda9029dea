/* tok: the tokenizer file (.tok) and the tokenizer in memory.
 *
 * A byte-level BPE: ids 0..255 are the bytes, id 256+i is merge i (the
 * concatenation of its two parts, learned in that order), and the special
 * tokens follow the merges; special 0 is BOS. Specials never come out of
 * encoding text: tok-encode places BOS before each document, and decoding a
 * special gives no bytes. man5/tok.5 has the layout:
 *
 *   0   "GKTK"            magic
 *   4   u32 version       1
 *   8   u32 vocab         256 + n_merges + n_special, in 257..65536
 *   12  u32 n_merges
 *   16  u32 n_special     >= 1
 *   20  u32 pretok        GK_PRETOK_* (0 none, 1 ws, 2 digits)
 *   24  n_merges x (u32 left, u32 right), each id < 256 + its own index
 *   ..  n_special x (u32 length 1..255, bytes), names unique
 *   ..  u64 xxh64 (seed 0) of every byte before it; the file ends there
 *
 * All integers little-endian. */
#ifndef GK_TOK_H
#define GK_TOK_H

#include <stddef.h>
#include <stdint.h>

#define GK_TOK_MAGIC "GKTK"
#define GK_TOK_VERSION 1u
#define GK_TOK_MAX_VOCAB 65536u
#define GK_TOK_MAX_SPECIAL_LEN 255u

typedef struct {
    uint32_t vocab, n_merges, n_special;
    int pretok;
    uint32_t (*merges)[2];   /* merges[i] = {left, right} makes id 256 + i */
    char **special;          /* NUL-terminated names; special[0] is BOS */
    /* Derived by gk_tok_index(): */
    uint8_t **bytes;         /* bytes of each id (specials: empty) */
    uint32_t *len;
    uint64_t *mkey;          /* open-addressing table: pair key -> merge rank */
    uint32_t *mval;
    size_t mcap;
} gk_tok;

/* Build a tokenizer from parts (copied); dies on an invalid combination. */
gk_tok *gk_tok_new(const uint32_t (*merges)[2], uint32_t n_merges, char **special,
                   uint32_t n_special, int pretok);
/* Load and verify PATH; every defect dies with "PATH: offset N: expected .., found ..". */
gk_tok *gk_tok_load(const char *path);
/* The same from the SIZE bytes at F (a tokenizer inside a .pack), PATH naming
 * them in messages. Nothing of F is kept. */
gk_tok *gk_tok_load_mem(const unsigned char *f, size_t size, const char *path);
/* Serialize (atomically) to PATH. */
void gk_tok_save(const gk_tok *t, const char *path);
void gk_tok_free(gk_tok *t);

static inline uint32_t gk_tok_bos(const gk_tok *t) { return 256 + t->n_merges; }

/* Rank of the merge (left, right), or UINT32_MAX when there is none. */
uint32_t gk_tok_merge_rank(const gk_tok *t, uint32_t left, uint32_t right);

#endif
