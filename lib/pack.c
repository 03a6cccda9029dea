/* pack: writer and checking reader of the .pack artifact (see pack.h and
 * pack(5)). The whole artifact lives in memory: it is at most a few tens of
 * megabytes decoded, and one-shot coding lets the decoders be given an output
 * buffer of exactly the header's decoded size, which is the bound on what they
 * may write. */
#include "pack.h"

#include "io.h"
#include "util.h"

#include <lzma.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

/* Stored order: the small text parts first, then the model. */
static const char *const NAMES[3] = {GK_PACK_CONFIG, GK_PACK_TOKENIZER, GK_PACK_MODEL};
/* The xz decoder's memory limit: preset 9e needs about 65 MiB (a 64 MiB
 * dictionary); a header asking for much more is not one we wrote. */
#define XZ_MEMLIMIT (256ull << 20)

struct gk_pack {
    gk_pack_header h;
    unsigned char *raw; /* the decoded payload */
    size_t n;
    const char *name[3];
    const unsigned char *data[3];
    size_t len[3];
};

static int name_rank(const char *s, size_t n)
{
    for (int i = 0; i < 3; i++)
        if (strlen(NAMES[i]) == n && memcmp(NAMES[i], s, n) == 0)
            return i;
    return -1;
}

/* The N bytes at S, found where a part name belongs, as they can appear in a
 * one-line message: printable ASCII as is, any other byte as \xNN (a name is
 * at most 255 bytes, so OUT needs 4 x 255 + 1). */
static const char *shown(char *out, const unsigned char *s, size_t n)
{
    char *o = out;
    for (size_t i = 0; i < n; i++)
        o += s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' ? sprintf(o, "%c", s[i])
                                                          : sprintf(o, "\\x%02x", s[i]);
    *o = 0;
    return out;
}

const char *gk_pack_codec_name(int codec)
{
    return codec == GK_PACK_ZSTD ? "zstd" : codec == GK_PACK_XZ ? "xz" : "unknown";
}

int gk_pack_codec_parse(const char *s)
{
    return !strcmp(s, "zstd") ? GK_PACK_ZSTD : !strcmp(s, "xz") ? GK_PACK_XZ : 0;
}

static int level_ok(int codec, long long level)
{
    return codec == GK_PACK_ZSTD ? level >= 1 && level <= 22 : level >= 0 && level <= 9;
}

/* The whole payload in one zstd frame. The window covers the whole payload
 * (never less than level 22 would pick, at most 2^30), and long-distance
 * matching is on, so a repeat anywhere in the model can be referenced. The
 * frame carries its content size and no checksum of its own (the header has
 * ours). */
static unsigned char *zstd_encode(const unsigned char *src, size_t n, int level, size_t *out)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (!c)
        gk_die("zstd: expected a compression context, found no memory");
    int wlog = 10;
    while (wlog < 30 && ((size_t)1 << wlog) < n)
        wlog++;
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    if (wlog > 27) /* level 22 already uses 2^27 for payloads that large */
        ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, wlog);
    ZSTD_CCtx_setParameter(c, ZSTD_c_enableLongDistanceMatching, 1);
    size_t cap = ZSTD_compressBound(n);
    unsigned char *dst = gk_malloc(cap ? cap : 1);
    size_t r = ZSTD_compress2(c, dst, cap, src, n);
    ZSTD_freeCCtx(c);
    if (ZSTD_isError(r))
        gk_die("zstd: expected to compress %zu bytes, found error %s", n, ZSTD_getErrorName(r));
    *out = r;
    return dst;
}

/* One xz stream, preset LEVEL|extreme ("-9e"), with no integrity check of its
 * own (CHECK_NONE: the header's xxh64 covers it), which saves xz's 8-byte CRC64. */
static unsigned char *xz_encode(const unsigned char *src, size_t n, int level, size_t *out)
{
    size_t cap = lzma_stream_buffer_bound(n), pos = 0;
    unsigned char *dst = gk_malloc(cap);
    lzma_ret r = lzma_easy_buffer_encode((uint32_t)level | LZMA_PRESET_EXTREME, LZMA_CHECK_NONE,
                                         NULL, src, n, dst, &pos, cap);
    if (r != LZMA_OK)
        gk_die("xz: expected to compress %zu bytes, found liblzma error %d", n, (int)r);
    *out = pos;
    return dst;
}

unsigned char *gk_pack_build(const gk_pack_item *items, size_t n, int codec, int level,
                             size_t *len)
{
    const gk_pack_item *slot[3] = {NULL, NULL, NULL};
    for (size_t i = 0; i < n; i++) {
        int r = name_rank(items[i].name, strlen(items[i].name));
        if (r < 0)
            gk_die("pack: expected a part named config.json, tokenizer.tok or model.qst, "
                   "found '%s'", items[i].name);
        if (slot[r])
            gk_die("pack: expected one part named %s, found two", items[i].name);
        slot[r] = &items[i];
    }
    if (!slot[1] || !slot[2])
        gk_die("pack: expected a model and a tokenizer part, found %s missing",
               slot[2] ? GK_PACK_TOKENIZER : GK_PACK_MODEL);
    if (!level_ok(codec, level))
        gk_die("pack: expected a level valid for %s, found %d", gk_pack_codec_name(codec), level);

    /* The decoded payload: parts table, then the parts in stored order. */
    uint32_t np = 0;
    size_t table = 4, total;
    for (int r = 0; r < 3; r++)
        if (slot[r])
            np++, table += 1 + strlen(NAMES[r]) + 8;
    total = table;
    for (int r = 0; r < 3; r++)
        if (slot[r])
            total += slot[r]->len;
    if ((uint64_t)total > GK_PACK_MAX_RAW)
        gk_die("pack: expected at most %llu bytes of parts, found %zu", GK_PACK_MAX_RAW, total);
    unsigned char *raw = gk_malloc(total), *p = raw;
    gk_put32(p, np), p += 4;
    for (int r = 0; r < 3; r++) {
        if (!slot[r])
            continue;
        size_t nl = strlen(NAMES[r]);
        *p++ = (unsigned char)nl;
        memcpy(p, NAMES[r], nl), p += nl;
        gk_put64(p, slot[r]->len), p += 8;
    }
    for (int r = 0; r < 3; r++)
        if (slot[r] && slot[r]->len)
            memcpy(p, slot[r]->data, slot[r]->len), p += slot[r]->len;

    size_t clen;
    unsigned char *comp = codec == GK_PACK_ZSTD ? zstd_encode(raw, total, level, &clen)
                                                : xz_encode(raw, total, level, &clen);
    unsigned char *out = gk_malloc(GK_PACK_HEADER + clen);
    memcpy(out, GK_PACK_MAGIC, 8);
    gk_put32(out + 8, GK_PACK_VERSION);
    gk_put32(out + 12, (uint32_t)codec);
    gk_put32(out + 16, (uint32_t)level);
    gk_put32(out + 20, np);
    gk_put64(out + 24, clen);
    gk_put64(out + 32, total);
    gk_put64(out + 40, XXH64(comp, clen, 0));
    gk_put64(out + 48, XXH64(raw, total, 0));
    gk_put64(out + 56, XXH64(out, 56, 0));
    memcpy(out + GK_PACK_HEADER, comp, clen);
    free(comp);
    free(raw);
    *len = GK_PACK_HEADER + clen;
    return out;
}

static gk_pack *fail(gk_pack *p, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static gk_pack *fail(gk_pack *p, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    gk_pack_free(p);
    return NULL;
}

/* Decode the frame into exactly h->uncompressed bytes, or say why not (into
 * ERR, returning 0). Each decoder must consume the whole payload as a single
 * frame and produce exactly the promised size. */
static int decode(const gk_pack_header *h, const unsigned char *src, unsigned char *dst,
                  char *what, size_t wn)
{
    size_t cn = (size_t)h->compressed, un = (size_t)h->uncompressed;
    if (h->codec == GK_PACK_ZSTD) {
        size_t fsz = ZSTD_findFrameCompressedSize(src, cn);
        if (ZSTD_isError(fsz) || fsz != cn) {
            snprintf(what, wn, "one zstd frame of %zu bytes, found %s", cn,
                     ZSTD_isError(fsz) ? ZSTD_getErrorName(fsz) : "a shorter frame and more data");
            return 0;
        }
        unsigned long long cs = ZSTD_getFrameContentSize(src, cn);
        if (cs != (unsigned long long)un) {
            snprintf(what, wn, "a zstd frame of content size %zu, found %s", un,
                     cs == ZSTD_CONTENTSIZE_UNKNOWN || cs == ZSTD_CONTENTSIZE_ERROR
                         ? "none" : "another size");
            return 0;
        }
        ZSTD_DCtx *d = ZSTD_createDCtx();
        if (!d)
            gk_die("zstd: expected a decompression context, found no memory");
        /* Our writer may use a window up to 2^30; decoding is one-shot into a
         * buffer of the promised size, so the window costs no memory. */
        ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, ZSTD_dParam_getBounds(ZSTD_d_windowLogMax).upperBound);
        size_t r = ZSTD_decompressDCtx(d, dst, un, src, cn);
        ZSTD_freeDCtx(d);
        if (ZSTD_isError(r) || r != un) {
            snprintf(what, wn, "a zstd frame decoding to %zu bytes, found %s", un,
                     ZSTD_isError(r) ? ZSTD_getErrorName(r) : "fewer bytes");
            return 0;
        }
        return 1;
    }
    uint64_t memlimit = XZ_MEMLIMIT;
    size_t ip = 0, op = 0;
    lzma_ret r = lzma_stream_buffer_decode(&memlimit, 0, NULL, src, &ip, cn, dst, &op, un);
    if (r != LZMA_OK || ip != cn || op != un) {
        snprintf(what, wn, "one xz stream of %zu bytes decoding to %zu bytes, found %s", cn, un,
                 r == LZMA_BUF_ERROR ? "more output than that, or a cut stream"
                 : r == LZMA_MEMLIMIT_ERROR ? "a stream needing over 256 MiB to decode"
                 : r != LZMA_OK ? "corrupt data" : "a stream of another size");
        return 0;
    }
    return 1;
}

gk_pack *gk_pack_parse(const char *name, const unsigned char *buf, size_t len, char *err,
                       size_t errlen)
{
    if (len < GK_PACK_HEADER)
        return fail(NULL, err, errlen, "%s: offset 0: expected a %d-byte header, found %zu bytes",
                    name, GK_PACK_HEADER, len);
    if (memcmp(buf, GK_PACK_MAGIC, 8))
        return fail(NULL, err, errlen, "%s: offset 0: expected magic \"GKPACK\\r\\n\", found "
                    "other bytes (not a .pack)", name);
    uint64_t hx = gk_get64(buf + 56), hc = XXH64(buf, 56, 0);
    if (hx != hc)
        return fail(NULL, err, errlen, "%s: offset 56: expected header xxh64 %016llx, found "
                    "%016llx (damaged header)", name, (unsigned long long)hc,
                    (unsigned long long)hx);
    gk_pack *p = gk_calloc(1, sizeof *p);
    gk_pack_header *h = &p->h;
    h->version = gk_get32(buf + 8);
    h->codec = gk_get32(buf + 12);
    h->level = gk_get32(buf + 16);
    h->nparts = gk_get32(buf + 20);
    h->file_bytes = len;
    h->compressed = gk_get64(buf + 24);
    h->uncompressed = gk_get64(buf + 32);
    h->xxh_compressed = gk_get64(buf + 40);
    h->xxh_uncompressed = gk_get64(buf + 48);
    if (h->version != GK_PACK_VERSION)
        return fail(p, err, errlen, "%s: offset 8: expected version %d, found %u", name,
                    GK_PACK_VERSION, h->version);
    if (h->codec != GK_PACK_ZSTD && h->codec != GK_PACK_XZ)
        return fail(p, err, errlen, "%s: offset 12: expected codec 1 (zstd) or 2 (xz), found %u",
                    name, h->codec);
    if (!level_ok((int)h->codec, h->level))
        return fail(p, err, errlen, "%s: offset 16: expected a %s level, found %u", name,
                    gk_pack_codec_name((int)h->codec), h->level);
    if (h->nparts < 2 || h->nparts > 3)
        return fail(p, err, errlen, "%s: offset 20: expected 2 or 3 parts, found %u", name,
                    h->nparts);
    if (h->compressed != len - GK_PACK_HEADER)
        return fail(p, err, errlen, "%s: offset 24: expected a compressed size of %zu (the "
                    "file's size less the header), found %llu", name, len - GK_PACK_HEADER,
                    (unsigned long long)h->compressed);
    if (h->uncompressed < 4 || h->uncompressed > GK_PACK_MAX_RAW)
        return fail(p, err, errlen, "%s: offset 32: expected a decoded size in 4..%llu, found "
                    "%llu", name, GK_PACK_MAX_RAW, (unsigned long long)h->uncompressed);
    const unsigned char *src = buf + GK_PACK_HEADER;
    uint64_t cx = XXH64(src, (size_t)h->compressed, 0);
    if (cx != h->xxh_compressed)
        return fail(p, err, errlen, "%s: offset %d: expected payload xxh64 %016llx, found "
                    "%016llx (damaged payload)", name, GK_PACK_HEADER,
                    (unsigned long long)h->xxh_compressed, (unsigned long long)cx);
    p->n = (size_t)h->uncompressed;
    p->raw = gk_malloc(p->n);
    char what[200];
    if (!decode(h, src, p->raw, what, sizeof what))
        return fail(p, err, errlen, "%s: offset %d: expected %s", name, GK_PACK_HEADER, what);
    uint64_t ux = XXH64(p->raw, p->n, 0);
    if (ux != h->xxh_uncompressed)
        return fail(p, err, errlen, "%s: decoded payload: expected xxh64 %016llx, found %016llx",
                    name, (unsigned long long)h->xxh_uncompressed, (unsigned long long)ux);

    /* The parts table; offsets below are into the decoded payload. Every
     * length is bounded by what is left of it. */
    const unsigned char *r = p->raw;
    size_t n = p->n, at = 4, lens[3];
    int ranks[3], last = -1;
    if (gk_get32(r) != h->nparts)
        return fail(p, err, errlen, "%s: decoded offset 0: expected a part count of %u (as the "
                    "header), found %u", name, h->nparts, gk_get32(r));
    for (uint32_t i = 0; i < h->nparts; i++) {
        if (n - at < 1 || n - at < 1 + (size_t)r[at] + 8)
            return fail(p, err, errlen, "%s: decoded offset %zu: expected a table entry, found "
                        "the end of the payload", name, at);
        size_t nl = r[at];
        int rk = name_rank((const char *)r + at + 1, nl);
        char found[4 * 255 + 1];
        if (rk < 0)
            return fail(p, err, errlen, "%s: decoded offset %zu: expected part name config.json, "
                        "tokenizer.tok or model.qst, found '%s'", name, at + 1,
                        shown(found, r + at + 1, nl));
        if (rk <= last)
            return fail(p, err, errlen, "%s: decoded offset %zu: expected parts in the order "
                        "config.json, tokenizer.tok, model.qst, each once, found %s after %s",
                        name, at + 1, NAMES[rk], NAMES[last]);
        ranks[i] = last = rk;
        uint64_t l = gk_get64(r + at + 1 + nl);
        if (l > n)
            return fail(p, err, errlen, "%s: decoded offset %zu: expected a part length of at "
                        "most %zu, found %llu", name, at + 1 + nl, n, (unsigned long long)l);
        lens[i] = (size_t)l;
        at += 1 + nl + 8;
    }
    if (ranks[h->nparts - 1] != 2 || ranks[h->nparts - 2] != 1)
        return fail(p, err, errlen, "%s: decoded offset 4: expected parts tokenizer.tok and "
                    "model.qst, found config.json with only one of them", name);
    for (uint32_t i = 0; i < h->nparts; i++) {
        if (lens[i] > n - at)
            return fail(p, err, errlen, "%s: decoded offset %zu: expected %zu bytes of %s, found "
                        "%zu", name, at, lens[i], NAMES[ranks[i]], n - at);
        p->name[i] = NAMES[ranks[i]];
        p->data[i] = r + at;
        p->len[i] = lens[i];
        at += lens[i];
    }
    if (at != n)
        return fail(p, err, errlen, "%s: decoded offset %zu: expected the end of the payload "
                    "after the last part, found %zu more bytes", name, at, n - at);
    return p;
}

gk_pack *gk_pack_open(const char *path)
{
    size_t len;
    unsigned char *buf = gk_read_file(path, &len);
    char err[512];
    gk_pack *p = gk_pack_parse(path, buf, len, err, sizeof err);
    free(buf);
    if (!p)
        gk_die("%s", err);
    return p;
}

size_t gk_pack_nparts(const gk_pack *p) { return p->h.nparts; }

const unsigned char *gk_pack_part(const gk_pack *p, const char *name, size_t *len)
{
    for (uint32_t i = 0; i < p->h.nparts; i++)
        if (!strcmp(p->name[i], name)) {
            *len = p->len[i];
            return p->data[i];
        }
    return NULL;
}

const unsigned char *gk_pack_part_at(const gk_pack *p, size_t i, const char **name,
                                     size_t *len)
{
    *name = p->name[i];
    *len = p->len[i];
    return p->data[i];
}

const gk_pack_header *gk_pack_info(const gk_pack *p) { return &p->h; }

void gk_pack_free(gk_pack *p)
{
    if (!p)
        return;
    free(p->raw);
    free(p);
}
