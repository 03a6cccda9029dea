/* shardfile: the training shard (.bin), its reader and writer, and the three
 * things the shard tool does with it (split a token stream into shards, report
 * on shards, stream shards back out).
 *
 * The layout is llm.c's and parameter golf's, byte for byte, so their loaders
 * read our shards and we read theirs (man5/shard.5 is the full description):
 *
 *   header  256 little-endian int32 words (1024 bytes)
 *           [0] 20240520 magic   [1] 1 version   [2] token count (0..INT32_MAX)
 *           golfkit extras, present when [3] holds the marker "GKSH":
 *           [4] vocab (1..65536)  [5],[6] xxh64 (low, high word) of the token
 *           bytes, seed 0   [7] BOS id (0xFFFFFFFF: none)   [8],[9] xxh64 of
 *           header bytes 0..31 (words 0..7), seed 0   [10..255] zero
 *   tokens  count x uint16 little endian; the file ends there
 *
 * The extras live in words the published loaders ignore, so a shard with them
 * is still a plain parameter-golf shard. Readers accept shards without the
 * marker (the published fineweb10B_sp1024 shards): nothing beyond [2] is
 * trusted then, and the checksum is reported "absent".
 *
 * Every error dies through gk_die with one line "FILE: offset N: expected X,
 * found Y" and removes every uncommitted output. */
#ifndef GK_SHARDFILE_H
#define GK_SHARDFILE_H

#include "io.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GK_SHARD_MAGIC 20240520u
#define GK_SHARD_VERSION 1u
#define GK_SHARD_HEADER_BYTES 1024u
#define GK_SHARD_EXTRAS 0x48534B47u /* the bytes "GKSH" read as a little-endian word */
#define GK_SHARD_MAX_TOKENS 2147483647u /* the count is an int32 in the loaders */
#define GK_SHARD_NO_BOS 0xFFFFFFFFu     /* same value as the token stream's */

typedef struct {
    uint32_t tokens;
    int extras;        /* 1 when the marker is present; the fields below need it */
    uint32_t vocab;
    uint32_t bos;      /* GK_SHARD_NO_BOS when none */
    uint64_t checksum; /* xxh64 of the 2 * tokens token bytes, seed 0 */
} gk_shard_header;

/* Encode H into the 1024 header bytes, with extras (H->extras is ignored:
 * golfkit always writes them) and the header checksum. */
void gk_shard_header_encode(const gk_shard_header *h, unsigned char out[GK_SHARD_HEADER_BYTES]);

/* Decode and validate a header read from a file of SIZE bytes (-1 when the size
 * is unknown, e.g. a pipe: then the count is checked once the tokens are read).
 * Returns 0, or -1 with "offset N: expected X, found Y" in ERR (the caller puts
 * the file name in front). Pure: the unit tests drive it. */
int gk_shard_header_decode(const unsigned char in[GK_SHARD_HEADER_BYTES], int64_t size,
                           gk_shard_header *h, char *err, size_t errlen);

/* Sequential reader. gk_shard_open reads and validates the header (dies on a
 * defect). gk_shard_read hands out the next tokens (pointer valid until the
 * next call), each checked below the vocabulary limit (the extras' vocab, or
 * the one set with gk_shard_limit; none when neither is known). It returns 0
 * at the end, after checking the token checksum when the extras carry one:
 * tokens handed out before that are not yet verified, so a caller commits no
 * output until it saw the 0. */
typedef struct gk_shard_reader gk_shard_reader;
gk_shard_reader *gk_shard_open(const char *path);
const gk_shard_header *gk_shard_hdr(const gk_shard_reader *r);
void gk_shard_limit(gk_shard_reader *r, uint32_t vocab);
size_t gk_shard_read(gk_shard_reader *r, const uint16_t **tok);
void gk_shard_close(gk_shard_reader *r);

/* Splitting a token stream into shards (the tool's main mode). */
typedef struct {
    const char *dir, *prefix; /* shards are DIR/PREFIX_{val,train}_NNNNNN.bin */
    uint32_t shard_tokens;    /* at most this many tokens a shard, 1..GK_SHARD_MAX_TOKENS */
    long long val_docs;       /* first N documents to val; -1 when --val-frac decides */
    double val_frac;          /* used when val_docs is -1 */
} gk_split_opts;

/* Read the token stream STREAM ("-": stdin) and write its shards: validation
 * documents first (a document starts at each BOS; tokens before the first BOS
 * go with the first document), then training. Each shard is buffered in memory
 * (2 bytes a token) and written to its NAME.tmp when full; all are committed
 * together once the stream was read and verified to its end record. Existing
 * shards of the same name pattern beyond those written are refused (a loader's
 * glob would mix them in). --val-frac needs the document count before the first
 * token goes out: a regular file is read twice, a pipe is spooled to an
 * unlinked temporary file in DIR. One JSON line per shard and a summary go to
 * RESULTS. */
void gk_shard_split(const char *stream, const gk_split_opts *o, FILE *results);

/* One JSON line per shard on RESULTS: file, tokens, bytes, version, vocab, bos,
 * max_token, distinct_tokens, documents, checksum ("ok" or "absent"). VOCAB and
 * BOS (0 and GK_SHARD_NO_BOS: not given) stand in for absent extras and must
 * agree with present ones. */
void gk_shard_info(const char *path, uint32_t vocab, uint32_t bos, FILE *results);

/* Stream the shards PATHS[0..n) back out as one token stream to OUT ("-":
 * stdout). The stream's vocab and BOS come from VOCAB and BOS when given, else
 * from the shards' extras, which must all agree; with neither, it dies (a
 * vocabulary guessed from the largest id would be wrong in every tokenizer but
 * one). When OUT is a file, a JSON summary goes to RESULTS. */
void gk_shard_cat(char *const *paths, int n, const char *out, uint32_t vocab, uint32_t bos,
                  FILE *results);

#endif
