/* tstream: the token stream, what tok-encode writes and shard reads.
 *
 * A header, then blocks of little-endian uint16 token ids, then an end record;
 * man5/tstream.5 is the full description. It is built to be piped: a writer
 * never seeks, and a reader verifies each block's xxh64 before handing its
 * tokens on, so corruption is caught where it happens rather than after a whole
 * training set went by. Token ids are uint16, so the vocabulary is at most
 * 65536; a tokenizer with more ids is refused by tok-train itself.
 *
 *   header  24 bytes: "GKTS", u32 version (1), u32 vocab, u32 bos id
 *           (0xFFFFFFFF: none), u64 xxh64 of the first 16 bytes
 *   block   u32 n (1..GK_TS_MAX_BLOCK), n x u16 tokens,
 *           u64 xxh64 of the 2n token bytes with seed = block index (0, 1, ...)
 *   end     u32 0, u32 0, u64 token count, u64 document count (BOS tokens),
 *           u64 xxh64 of those 16 count bytes with seed = number of blocks
 *
 * Readers check every token id < vocab and that the counts in the end record
 * agree with what they read; a stream without its end record is truncated. */
#ifndef GK_TSTREAM_H
#define GK_TSTREAM_H

#include "io.h"

#include <stddef.h>
#include <stdint.h>

#define GK_TS_MAGIC "GKTS"
#define GK_TS_VERSION 1u
#define GK_TS_NO_BOS 0xFFFFFFFFu
#define GK_TS_MAX_BLOCK (1u << 20)
#define GK_TS_WRITE_BLOCK (1u << 16) /* block size the writer uses */

typedef struct gk_ts_writer gk_ts_writer;

/* Start a stream on OUT (which the caller commits after gk_ts_finish). */
gk_ts_writer *gk_ts_writer_new(gk_out *out, uint32_t vocab, uint32_t bos);
/* Append tokens; dies if one is >= vocab (a bug upstream, named as such). */
void gk_ts_write(gk_ts_writer *w, const uint16_t *tok, size_t n);
/* Flush the last block, write the end record, free the writer. */
void gk_ts_finish(gk_ts_writer *w);

typedef struct gk_ts_reader gk_ts_reader;

/* Open PATH ("-" = stdin) and verify the header. */
gk_ts_reader *gk_ts_reader_open(const char *path);
uint32_t gk_ts_vocab(const gk_ts_reader *r);
uint32_t gk_ts_bos(const gk_ts_reader *r);
/* Next verified block: *tok points into the reader's buffer, valid until the
 * next call. Returns 0 after the end record was read and checked. */
size_t gk_ts_read(gk_ts_reader *r, const uint16_t **tok);
/* Totals so far (after the last gk_ts_read returned 0: the whole stream). */
uint64_t gk_ts_tokens(const gk_ts_reader *r);
uint64_t gk_ts_docs(const gk_ts_reader *r);
void gk_ts_reader_close(gk_ts_reader *r);

#endif
