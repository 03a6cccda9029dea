/* pack_fuzz: the artifact reader, gk_pack_parse (under gk_pack_open, which
 * moe-eval, moe-rollout and moe-pack --verify call), then the parts as
 * moe-eval reads them: model.qst with gk_qst_load_mem, tokenizer.tok with
 * gk_tok_load_mem, and config.json, when there, applied and checked as a
 * model config. Each input is parsed twice. First as it is. Then, when it is
 * at least a header long, with the bytes after the header taken as the
 * decoded payload: compressed (xz when the header's codec field says 2, else
 * zstd) behind the input's first 24 header bytes (magic, version, codec,
 * level, part count) with sizes and all three xxh64 recomputed, so that
 * mutations reach the parts table and the parts themselves rather than
 * stopping at a checksum or a corrupt frame. The seeds hold real .pack files
 * from moe-pack and, as *.payload, the same packs with their frame decoded. */
#include "fuzz.h"
#include "config.h"
#include "pack.h"
#include "qst.h"
#include "tok.h"
#include "util.h"

#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

static void pack_free(void *p) { gk_pack_free(p); }

static void load_parts(const gk_pack *p)
{
    size_t n;
    const unsigned char *part = gk_pack_part(p, GK_PACK_MODEL, &n);
    gk_qst_free(gk_qst_load_mem(part, n, "fuzz.pack:" GK_PACK_MODEL));
    part = gk_pack_part(p, GK_PACK_TOKENIZER, &n);
    gk_tok_free(gk_tok_load_mem(part, n, "fuzz.pack:" GK_PACK_TOKENIZER));
    part = gk_pack_part(p, GK_PACK_CONFIG, &n);
    if (part) {
        gk_config c;
        gk_config_defaults(&c);
        gk_config_apply_text(&c, (const char *)part, n, "fuzz.pack:" GK_PACK_CONFIG);
        gk_config_check(&c, "fuzz.pack:" GK_PACK_CONFIG);
    }
}

static void parse(void *arg)
{
    const fuzz_input *in = arg;
    char err[512];
    gk_pack *p = gk_pack_parse("fuzz.pack", in->data, in->size, err, sizeof err);
    if (!p) {
        if (strncmp(err, "fuzz.pack: ", 11) != 0 || strchr(err, '\n'))
            fuzz_fail("expected a one-line message naming the file, found \"%.80s\"", err);
        return;
    }
    if (!gk_pack_part(p, GK_PACK_MODEL, &(size_t){0}) ||
        !gk_pack_part(p, GK_PACK_TOKENIZER, &(size_t){0}))
        fuzz_fail("expected a parsed pack to hold model and tokenizer, found %zu parts",
                  gk_pack_nparts(p));
    gk_cleanup_push(pack_free, p);
    load_parts(p);
    gk_cleanup_pop(p);
    gk_pack_free(p);
}

/* A pack around the payload DATA [SIZE] after the 64 header bytes, as above;
 * NULL when the compressor refuses. */
static uint8_t *repack(const uint8_t *data, size_t size, size_t *len)
{
    const uint8_t *raw = data + GK_PACK_HEADER;
    size_t n = size - GK_PACK_HEADER, cap = ZSTD_compressBound(n) + lzma_stream_buffer_bound(n);
    uint8_t *out = malloc(GK_PACK_HEADER + cap), *frame = out + GK_PACK_HEADER;
    size_t clen = 0;
    if (gk_get32(data + 12) == GK_PACK_XZ) {
        if (lzma_easy_buffer_encode(0, LZMA_CHECK_NONE, NULL, raw, n, frame, &clen, cap) !=
            LZMA_OK)
            clen = 0;
    } else {
        clen = ZSTD_compress(frame, cap, raw, n, 1);
        if (ZSTD_isError(clen))
            clen = 0;
    }
    if (!clen) {
        free(out);
        return NULL;
    }
    memcpy(out, data, 24);
    gk_put64(out + 24, clen);
    gk_put64(out + 32, n);
    gk_put64(out + 40, XXH64(frame, clen, 0));
    gk_put64(out + 48, XXH64(raw, n, 0));
    gk_put64(out + 56, XXH64(out, 56, 0));
    *len = GK_PACK_HEADER + clen;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input raw = {data, size};
    fuzz_try(parse, &raw);
    if (size < GK_PACK_HEADER)
        return 0;
    size_t len;
    uint8_t *packed = repack(data, size, &len);
    if (packed) {
        fuzz_input in = {packed, len};
        fuzz_try(parse, &in);
        free(packed);
    }
    return 0;
}
