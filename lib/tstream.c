/* tstream: writer and verifying reader of the token stream; the layout is in
 * tstream.h and man5/tstream.5. */
#include "tstream.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct gk_ts_writer {
    gk_out *out;
    uint32_t vocab, bos;
    uint16_t *buf;
    size_t n;
    uint64_t blocks, tokens, docs;
};

static void put_tokens_le(unsigned char *dst, const uint16_t *tok, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = (unsigned char)tok[i];
        dst[2 * i + 1] = (unsigned char)(tok[i] >> 8);
    }
}

gk_ts_writer *gk_ts_writer_new(gk_out *out, uint32_t vocab, uint32_t bos)
{
    gk_ts_writer *w = gk_calloc(1, sizeof *w);
    w->out = out;
    w->vocab = vocab;
    w->bos = bos;
    w->buf = gk_malloc(GK_TS_WRITE_BLOCK * sizeof *w->buf);
    unsigned char h[24];
    memcpy(h, GK_TS_MAGIC, 4);
    gk_put32(h + 4, GK_TS_VERSION);
    gk_put32(h + 8, vocab);
    gk_put32(h + 12, bos);
    gk_put64(h + 16, XXH64(h, 16, 0));
    gk_out_write(out, h, sizeof h);
    return w;
}

static void flush_block(gk_ts_writer *w)
{
    if (!w->n)
        return;
    unsigned char *bytes = gk_malloc(4 + 2 * w->n + 8);
    gk_put32(bytes, (uint32_t)w->n);
    put_tokens_le(bytes + 4, w->buf, w->n);
    gk_put64(bytes + 4 + 2 * w->n, XXH64(bytes + 4, 2 * w->n, w->blocks));
    gk_out_write(w->out, bytes, 4 + 2 * w->n + 8);
    free(bytes);
    w->blocks++;
    w->n = 0;
}

void gk_ts_write(gk_ts_writer *w, const uint16_t *tok, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tok[i] >= w->vocab)
            gk_die("%s: token %zu of this write: expected an id below vocab %u, found %u "
                   "(internal error)", gk_out_path(w->out), i, w->vocab, tok[i]);
        w->docs += tok[i] == w->bos;
        w->buf[w->n++] = tok[i];
        if (w->n == GK_TS_WRITE_BLOCK)
            flush_block(w);
    }
    w->tokens += n;
}

void gk_ts_finish(gk_ts_writer *w)
{
    flush_block(w);
    unsigned char e[32];
    gk_put32(e, 0);
    gk_put32(e + 4, 0);
    gk_put64(e + 8, w->tokens);
    gk_put64(e + 16, w->docs);
    gk_put64(e + 24, XXH64(e + 8, 16, w->blocks));
    gk_out_write(w->out, e, sizeof e);
    free(w->buf);
    free(w);
}

struct gk_ts_reader {
    gk_in *in;
    uint32_t vocab, bos;
    unsigned char *raw;
    uint16_t *tok;
    uint64_t blocks, tokens, docs;
    int ended;
};

static void reader_close(void *r) { gk_ts_reader_close(r); }

gk_ts_reader *gk_ts_reader_open(const char *path)
{
    gk_ts_reader *r = gk_calloc(1, sizeof *r);
    r->in = gk_in_open(path);
    gk_cleanup_push(reader_close, r);
    const char *name = gk_in_path(r->in);
    unsigned char h[24];
    size_t got = gk_in_read(r->in, h, sizeof h);
    if (got == 0)
        gk_die("%s: offset 0: expected a token stream header, found empty input", name);
    if (got < 4 || memcmp(h, GK_TS_MAGIC, 4) != 0)
        gk_die("%s: offset 0: expected magic \"GKTS\" (a token stream from tok-encode), "
               "found %02x %02x %02x %02x", name, h[0], got > 1 ? h[1] : 0,
               got > 2 ? h[2] : 0, got > 3 ? h[3] : 0);
    if (got < sizeof h)
        gk_die("%s: offset %zu: expected a 24-byte header, found end of input (truncated)",
               name, got);
    if (gk_get32(h + 4) != GK_TS_VERSION)
        gk_die("%s: offset 4: expected version %u, found %u", name, GK_TS_VERSION,
               gk_get32(h + 4));
    if (gk_get64(h + 16) != XXH64(h, 16, 0))
        gk_die("%s: offset 16: expected the header checksum %016llx, found %016llx", name,
               (unsigned long long)XXH64(h, 16, 0), (unsigned long long)gk_get64(h + 16));
    r->vocab = gk_get32(h + 8);
    r->bos = gk_get32(h + 12);
    if (r->vocab < 1 || r->vocab > 65536)
        gk_die("%s: offset 8: expected vocab in 1..65536, found %u", name, r->vocab);
    if (r->bos != GK_TS_NO_BOS && r->bos >= r->vocab)
        gk_die("%s: offset 12: expected a BOS id below vocab %u, found %u", name, r->vocab,
               r->bos);
    r->raw = gk_malloc(2 * (size_t)GK_TS_MAX_BLOCK + 8);
    r->tok = gk_malloc(GK_TS_MAX_BLOCK * sizeof *r->tok);
    gk_cleanup_pop(r);
    return r;
}

uint32_t gk_ts_vocab(const gk_ts_reader *r) { return r->vocab; }
uint32_t gk_ts_bos(const gk_ts_reader *r) { return r->bos; }
uint64_t gk_ts_tokens(const gk_ts_reader *r) { return r->tokens; }
uint64_t gk_ts_docs(const gk_ts_reader *r) { return r->docs; }

static void read_end(gk_ts_reader *r, uint64_t at)
{
    const char *name = gk_in_path(r->in);
    unsigned char e[28];
    gk_in_read_exact(r->in, e, sizeof e, "end record");
    uint64_t tokens = gk_get64(e + 4), docs = gk_get64(e + 12);
    if (gk_get32(e) != 0)
        gk_die("%s: offset %llu: expected 0 in the end record, found %u", name,
               (unsigned long long)at + 4, gk_get32(e));
    if (gk_get64(e + 20) != XXH64(e + 4, 16, r->blocks))
        gk_die("%s: offset %llu: expected end-record checksum %016llx, found %016llx", name,
               (unsigned long long)at + 24, (unsigned long long)XXH64(e + 4, 16, r->blocks),
               (unsigned long long)gk_get64(e + 20));
    if (tokens != r->tokens || docs != r->docs)
        gk_die("%s: offset %llu: expected %llu tokens and %llu documents as read, found "
               "%llu and %llu in the end record", name, (unsigned long long)at + 8,
               (unsigned long long)r->tokens, (unsigned long long)r->docs,
               (unsigned long long)tokens, (unsigned long long)docs);
    unsigned char extra;
    if (gk_in_read(r->in, &extra, 1) != 0)
        gk_die("%s: offset %llu: expected end of input after the end record, found more bytes",
               name, (unsigned long long)at + 32);
    r->ended = 1;
}

size_t gk_ts_read(gk_ts_reader *r, const uint16_t **tok)
{
    if (r->ended)
        return 0;
    const char *name = gk_in_path(r->in);
    uint64_t at = gk_in_offset(r->in);
    unsigned char nb[4];
    size_t got = gk_in_read(r->in, nb, 4);
    if (got != 4)
        gk_die("%s: offset %llu: expected a block or the end record, found end of input "
               "(truncated stream)", name, (unsigned long long)at);
    uint32_t n = gk_get32(nb);
    if (n == 0) {
        read_end(r, at);
        return 0;
    }
    if (n > GK_TS_MAX_BLOCK)
        gk_die("%s: offset %llu: expected a block of 1..%u tokens, found %u", name,
               (unsigned long long)at, GK_TS_MAX_BLOCK, n);
    gk_in_read_exact(r->in, r->raw, 2 * (size_t)n + 8, "token block");
    uint64_t want = XXH64(r->raw, 2 * (size_t)n, r->blocks);
    if (gk_get64(r->raw + 2 * (size_t)n) != want)
        gk_die("%s: offset %llu: expected block %llu checksum %016llx, found %016llx", name,
               (unsigned long long)(at + 4 + 2 * (uint64_t)n), (unsigned long long)r->blocks,
               (unsigned long long)want, (unsigned long long)gk_get64(r->raw + 2 * (size_t)n));
    for (uint32_t i = 0; i < n; i++) {
        uint16_t t = (uint16_t)(r->raw[2 * i] | r->raw[2 * i + 1] << 8);
        if (t >= r->vocab)
            gk_die("%s: offset %llu: expected a token id below vocab %u, found %u", name,
                   (unsigned long long)(at + 4 + 2 * (uint64_t)i), r->vocab, t);
        r->docs += t == r->bos;
        r->tok[i] = t;
    }
    r->blocks++;
    r->tokens += n;
    *tok = r->tok;
    return n;
}

void gk_ts_reader_close(gk_ts_reader *r)
{
    gk_in_close(r->in);
    free(r->raw);
    free(r->tok);
    free(r);
}
