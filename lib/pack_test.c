/* pack_test: the .pack container as TAP. Round trips of random (incompressible)
 * and text (compressible) parts through both codecs; every single-byte flip
 * and every truncation of a small pack must be refused by the reader (it never
 * dies, so each case is one call); a frame whose decoded size disagrees with
 * the header is refused; gk_pack_open dies with one line on a damaged file.
 * The size limit is moe-pack's, tested in cmd/moe-pack_test.sh. */
#include "pack.h"
#include "tap.h"
#include "util.h"

#include <xxhash.h>

static unsigned char *random_bytes(size_t n)
{
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tap_uniform() * 256);
    return p;
}

static unsigned char *text_bytes(size_t n)
{
    static const char *w[] = {"the ", "model ", "fits ", "in ", "sixteen ", "megabytes\n"};
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n;) {
        const char *s = w[(int)(tap_uniform() * 6)];
        for (; *s && i < n; s++)
            p[i++] = (unsigned char)*s;
    }
    return p;
}

static int same_part(const gk_pack *p, const char *name, const unsigned char *d, size_t n)
{
    size_t len = 0;
    const unsigned char *got = gk_pack_part(p, name, &len);
    return got && len == n && (n == 0 || memcmp(got, d, n) == 0);
}

static void round_trip(int codec, int level, size_t nmodel, int with_config)
{
    unsigned char *model = random_bytes(nmodel), *tok = text_bytes(3000);
    const char *cfg = "{\"model\": {\"vocab\": 1024, \"dim\": 512}}";
    gk_pack_item it[3] = {{GK_PACK_MODEL, model, nmodel}, {GK_PACK_TOKENIZER, tok, 3000},
                          {GK_PACK_CONFIG, (const unsigned char *)cfg, strlen(cfg)}};
    size_t len;
    unsigned char *buf = gk_pack_build(it, with_config ? 3 : 2, codec, level, &len);
    char err[512] = "";
    gk_pack *p = gk_pack_parse("t.pack", buf, len, err, sizeof err);
    const char *cn = gk_pack_codec_name(codec);
    ok(p != NULL, "%s -%d: a pack of %zu model bytes parses (%s)", cn, level, nmodel, err);
    if (p) {
        ok(gk_pack_nparts(p) == (with_config ? 3u : 2u), "%s: part count", cn);
        ok(same_part(p, GK_PACK_MODEL, model, nmodel) && same_part(p, GK_PACK_TOKENIZER, tok, 3000),
           "%s: model and tokenizer come back byte for byte", cn);
        size_t l;
        ok(with_config ? same_part(p, GK_PACK_CONFIG, (const unsigned char *)cfg, strlen(cfg))
                       : gk_pack_part(p, GK_PACK_CONFIG, &l) == NULL,
           "%s: config %s", cn, with_config ? "comes back" : "is absent (NULL)");
        const char *first;
        gk_pack_part_at(p, 0, &first, &l);
        ok(!strcmp(first, with_config ? GK_PACK_CONFIG : GK_PACK_TOKENIZER),
           "%s: parts are stored config, tokenizer, model whatever the order given", cn);
        ok(gk_pack_info(p)->codec == (uint32_t)codec && gk_pack_info(p)->level == (uint32_t)level,
           "%s: header records codec and level", cn);
    }
    gk_pack_free(p);
    free(buf);
    free(model);
    free(tok);
}

int main(void)
{
    tap_seed(5);
    round_trip(GK_PACK_ZSTD, 22, 100000, 1);
    round_trip(GK_PACK_ZSTD, 3, 0, 0);
    round_trip(GK_PACK_XZ, 9, 100000, 1);
    round_trip(GK_PACK_XZ, 1, 5000, 0);

    /* Compressible text compresses: one frame over all parts works. */
    unsigned char *text = text_bytes(200000), *tok = text_bytes(500);
    gk_pack_item it[2] = {{GK_PACK_MODEL, text, 200000}, {GK_PACK_TOKENIZER, tok, 500}};
    size_t len;
    unsigned char *buf = gk_pack_build(it, 2, GK_PACK_ZSTD, 22, &len);
    ok(len < 200000 / 4, "200000 bytes of text pack into %zu bytes", len);
    free(buf);

    /* Every byte of a small pack set to each of its 255 other values (every
     * single-bit flip among them), for both codecs: each is refused, with one
     * line naming the file and an offset. */
    for (int codec = GK_PACK_ZSTD; codec <= GK_PACK_XZ; codec++) {
        it[0].len = 300;
        it[1].len = 100;
        buf = gk_pack_build(it, 2, codec, codec == GK_PACK_ZSTD ? 22 : 9, &len);
        size_t missed = 0, pos_missed = 0, vague = 0;
        char err[512], vague_err[512] = "";
        for (size_t i = 0; i < len; i++)
            for (unsigned x = 1; x < 256; x++) {
                buf[i] ^= (unsigned char)x;
                err[0] = 0;
                gk_pack *p = gk_pack_parse("t.pack", buf, len, err, sizeof err);
                if (p)
                    missed++, pos_missed = i, gk_pack_free(p);
                else if (strncmp(err, "t.pack: offset ", 15) != 0 || strchr(err, '\n'))
                    vague++, snprintf(vague_err, sizeof vague_err, "%s", err);
                buf[i] ^= (unsigned char)x;
            }
        ok(missed == 0, "%s: all %zu changed bytes (255 values at each of %zu offsets) are "
           "refused (%zu missed, last at %zu)", gk_pack_codec_name(codec), len * 255, len,
           missed, pos_missed);
        ok(vague == 0, "%s: each refusal is one line naming the file and an offset (%zu not: %s)",
           gk_pack_codec_name(codec), vague, vague_err);
        size_t cut_missed = 0;
        for (size_t n = 0; n < len; n++) {
            gk_pack *p = gk_pack_parse("t.pack", buf, n, err, sizeof err);
            if (p)
                cut_missed++, gk_pack_free(p);
        }
        ok(cut_missed == 0, "%s: every truncation (0..%zu bytes) is refused",
           gk_pack_codec_name(codec), len - 1);
        gk_pack_parse("t.pack", buf, len - 1, err, sizeof err);
        ok(strstr(err, "t.pack: offset 24: expected a compressed size") != NULL,
           "a truncated file is named by offset: %s", err);
        buf[100] ^= 0xff;
        gk_pack_parse("t.pack", buf, len, err, sizeof err);
        ok(strstr(err, "t.pack: offset 64: expected payload xxh64") != NULL,
           "a flipped payload byte: %s", err);
        buf[100] ^= 0xff;
        buf[20] ^= 1;
        gk_pack_parse("t.pack", buf, len, err, sizeof err);
        ok(strstr(err, "t.pack: offset 56: expected header xxh64") != NULL,
           "a flipped header byte: %s", err);
        buf[20] ^= 1;

        /* A header that promises fewer decoded bytes than the frame holds (with
         * both checksums made to match) is refused by the decoder's bound. */
        gk_put64(buf + 32, gk_get64(buf + 32) - 1);
        gk_put64(buf + 56, XXH64(buf, 56, 0));
        ok(gk_pack_parse("t.pack", buf, len, err, sizeof err) == NULL && strstr(err, "offset 64"),
           "%s: a frame decoding past the header's size is refused: %s",
           gk_pack_codec_name(codec), err);
        free(buf);
    }
    free(text);
    free(tok);
    return tap_done();
}
