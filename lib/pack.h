/* pack: the .pack artifact, the one file a parameter-golf record is judged by.
 *
 * A .pack is a 64-byte header followed by ONE compressed frame (zstd, level 22
 * by default, or xz preset 9e) whose decoded bytes are a small parts table and
 * then the parts themselves: config.json (optional), tokenizer.tok and
 * model.qst, in that order. One frame over all parts lets the compressor find
 * matches across them and pays one frame header; the layout is in pack(5).
 *
 * Readers trust nothing: the header carries an xxh64 of its own first 56 bytes,
 * of the compressed payload and of the decoded payload, so any flipped byte is
 * found; every size is checked against the file's size before it is used, and
 * decoding is bounded by the header's decoded size (a frame that would decode
 * to more, or less, is refused). The 16,000,000-byte limit of the game is not a
 * rule of the format: moe-pack --verify checks it, gk_pack_open does not, so an
 * oversize experiment can still be evaluated. */
#ifndef GK_PACK_H
#define GK_PACK_H

#include <stddef.h>
#include <stdint.h>

/* The first 8 bytes of every .pack (no NUL: compare 8 bytes). */
#define GK_PACK_MAGIC "GKPACK\r\n"

#define GK_PACK_HEADER 64                 /* bytes before the compressed frame */
#define GK_PACK_VERSION 1
#define GK_PACK_LIMIT 16000000ull         /* the game's artifact limit, decimal bytes */
#define GK_PACK_MAX_RAW (1ull << 30)      /* largest decoded payload a reader accepts */

enum { GK_PACK_ZSTD = 1, GK_PACK_XZ = 2 };

/* The part names a .pack may hold, in the order they are stored. */
#define GK_PACK_CONFIG "config.json"
#define GK_PACK_TOKENIZER "tokenizer.tok"
#define GK_PACK_MODEL "model.qst"

typedef struct {
    const char *name;          /* one of the three names above */
    const unsigned char *data;
    size_t len;
} gk_pack_item;

/* The header's fields, as read (and checked) by gk_pack_parse. */
typedef struct {
    uint32_t version, codec, level, nparts;
    uint64_t file_bytes, compressed, uncompressed, xxh_compressed, xxh_uncompressed;
} gk_pack_header;

typedef struct gk_pack gk_pack;

/* Build a whole .pack in memory from N items (any order: they are stored in the
 * order above; model and tokenizer are required, config optional). CODEC is
 * GK_PACK_ZSTD (LEVEL 1..22) or GK_PACK_XZ (LEVEL 0..9, always "extreme").
 * Returns a malloc'd buffer of *LEN bytes; dies on a bad item. */
unsigned char *gk_pack_build(const gk_pack_item *items, size_t n, int codec, int level,
                             size_t *len);

/* Check and decode the LEN bytes of BUF (named NAME in messages). Returns the
 * pack, or NULL with a one-line "NAME: offset N: expected X, found Y" in ERR.
 * BUF may be freed after the call: the pack owns its decoded bytes. */
gk_pack *gk_pack_parse(const char *name, const unsigned char *buf, size_t len, char *err,
                       size_t errlen);

/* For the evaluator: read PATH, verify header, checksums, decoding and parts
 * table, and keep the decoded parts in memory. Dies (exit 1, one line) on any
 * error, so a non-NULL return is a fully checked pack. */
gk_pack *gk_pack_open(const char *path);
size_t gk_pack_nparts(const gk_pack *p);
/* The bytes of part NAME ("model.qst", "tokenizer.tok", "config.json") and its
 * length in *LEN, or NULL when the pack has no such part. Valid until
 * gk_pack_free. */
const unsigned char *gk_pack_part(const gk_pack *p, const char *name, size_t *len);
/* Part I (0 <= I < nparts), in stored order: its bytes, *NAME and *LEN. */
const unsigned char *gk_pack_part_at(const gk_pack *p, size_t i, const char **name,
                                     size_t *len);
const gk_pack_header *gk_pack_info(const gk_pack *p);
void gk_pack_free(gk_pack *p);

/* "zstd" or "xz"; and the codec named S, or 0. */
const char *gk_pack_codec_name(int codec);
int gk_pack_codec_parse(const char *s);

#endif
