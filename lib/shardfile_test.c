/* shardfile_test: TAP unit tests of the shard header (byte offsets, every
 * validation message) and of split / --cat / --info end to end in a temporary
 * directory. Failures that must die (exit 1) are covered by cmd/shard_test.sh;
 * here gk_shard_header_decode's error strings are checked directly. */
#include "shardfile.h"
#include "tap.h"
#include "tstream.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

static unsigned char hb[GK_SHARD_HEADER_BYTES];
static char err[256];

static int decode(int64_t size, gk_shard_header *h)
{
    err[0] = 0;
    return gk_shard_header_decode(hb, size, h, err, sizeof err);
}

static void reseal(void) /* recompute the header checksum after editing words 0..7 */
{
    gk_put64(hb + 32, XXH64(hb, 32, 0));
}

static void test_header(void)
{
    gk_shard_header h = {.tokens = 3, .vocab = 1024, .bos = 1023,
                         .checksum = 0x1122334455667788ull}, d;
    gk_shard_header_encode(&h, hb);
    ok(gk_get32(hb) == 20240520 && gk_get32(hb + 4) == 1 && gk_get32(hb + 8) == 3,
       "words 0..2: magic, version, count");
    ok(memcmp(hb + 12, "GKSH", 4) == 0, "word 3: the bytes GKSH");
    ok(gk_get32(hb + 16) == 1024 && gk_get32(hb + 28) == 1023, "words 4 and 7: vocab, BOS");
    ok(gk_get32(hb + 20) == 0x55667788u && gk_get32(hb + 24) == 0x11223344u,
       "words 5, 6: token checksum low, high");
    ok(gk_get64(hb + 32) == XXH64(hb, 32, 0), "words 8, 9: xxh64 of bytes 0..31");
    int zero = 1;
    for (unsigned i = 40; i < GK_SHARD_HEADER_BYTES; i++)
        zero &= hb[i] == 0;
    ok(zero, "words 10..255 are zero");

    ok(decode(1030, &d) == 0 && d.extras && d.tokens == 3 && d.vocab == 1024 &&
       d.bos == 1023 && d.checksum == h.checksum, "decode gives back what was encoded");
    ok(decode(-1, &d) == 0 && d.tokens == 3, "size unknown (a pipe): accepted");
    ok(decode(1032, &d) != 0 &&
       strcmp(err, "offset 8: expected 4 tokens (file size 1032), found header count 3") == 0,
       "count vs size: %s", err);
    ok(decode(1031, &d) != 0 && strstr(err, "offset 1024: expected whole uint16 tokens"),
       "odd size: %s", err);
    ok(decode(100, &d) != 0 && strstr(err, "offset 0: expected a 1024-byte shard header"),
       "short file: %s", err);

    gk_put32(hb + 16, 1025);
    ok(decode(1030, &d) != 0 && strstr(err, "offset 32: expected header checksum"),
       "vocab changed, checksum not: %s", err);
    gk_put32(hb + 16, 0);
    reseal();
    ok(decode(1030, &d) != 0 && strcmp(err, "offset 16: expected vocab in 1..65536, found 0") == 0,
       "vocab 0: %s", err);
    gk_put32(hb + 16, 1023);
    reseal();
    ok(decode(1030, &d) != 0 && strstr(err, "offset 28: expected a BOS id below vocab 1023"),
       "BOS >= vocab: %s", err);
    gk_put32(hb + 28, GK_SHARD_NO_BOS);
    reseal();
    ok(decode(1030, &d) == 0 && d.bos == GK_SHARD_NO_BOS, "no BOS (0xffffffff) is fine");

    gk_put32(hb + 4, 2);
    ok(decode(1030, &d) != 0 && strcmp(err, "offset 4: expected version 1 (uint16 tokens), found 2") == 0,
       "version: %s", err);
    gk_put32(hb, 20240521);
    ok(decode(1030, &d) != 0 && strstr(err, "offset 0: expected magic 20240520"), "magic: %s",
       err);
    gk_put32(hb + 8, 0x80000000u);
    gk_put32(hb, GK_SHARD_MAGIC);
    gk_put32(hb + 4, 1);
    ok(decode(-1, &d) != 0 && strstr(err, "found -2147483648"),
       "negative count, size unknown: %s", err);

    /* A parameter-golf shard: words beyond 2 carry nothing we know. */
    memset(hb, 0, sizeof hb);
    gk_put32(hb, GK_SHARD_MAGIC);
    gk_put32(hb + 4, 1);
    gk_put32(hb + 8, 5);
    gk_put32(hb + 16, 77); /* stray words are ignored without the marker */
    ok(decode(1034, &d) == 0 && !d.extras && d.tokens == 5 && d.bos == GK_SHARD_NO_BOS,
       "no marker: accepted, extras absent");
}

static char dir[] = "/tmp/shardfile_test.XXXXXX";

static char *path(const char *name)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* A stream of DOCS documents: BOS then i % 7 + 1 tokens of ids 1.. . */
static uint64_t write_stream(const char *name, int docs, uint16_t *all)
{
    gk_out *o = gk_out_open(path(name));
    gk_ts_writer *w = gk_ts_writer_new(o, 300, 299);
    uint64_t n = 0;
    for (int i = 0; i < docs; i++) {
        all[n++] = 299;
        for (int k = 0; k < i % 7 + 1; k++)
            all[n++] = (uint16_t)((i * 31 + k) % 299);
    }
    gk_ts_write(w, all, n);
    gk_ts_finish(w);
    gk_out_commit(o);
    return n;
}

/* Read a shard whole; returns its token count, tokens appended at *dst. */
static uint32_t read_shard(const char *name, uint16_t **dst, const gk_shard_header **hdr,
                           gk_shard_header *copy)
{
    gk_shard_reader *r = gk_shard_open(path(name));
    *copy = *gk_shard_hdr(r);
    *hdr = copy;
    const uint16_t *tok;
    size_t n;
    uint32_t total = 0;
    while ((n = gk_shard_read(r, &tok))) {
        memcpy(*dst, tok, n * sizeof *tok);
        *dst += n;
        total += (uint32_t)n;
    }
    gk_shard_close(r);
    return total;
}

static void test_split(void)
{
    enum { DOCS = 40 };
    uint16_t all[DOCS * 8], back[DOCS * 8];
    uint64_t n = write_stream("s.ts", DOCS, all);
    FILE *res = fopen("/dev/null", "w");
    gk_split_opts o = {.dir = dir, .prefix = "t", .shard_tokens = 50, .val_docs = 10};
    gk_shard_split(path("s.ts"), &o, res);

    /* val ends where the 11th BOS starts document 10. */
    uint32_t nval = 0;
    for (int bos = 0; nval < n && (all[nval] != 299 || ++bos <= 10); nval++)
        ;
    uint16_t *p = back;
    const gk_shard_header *h;
    gk_shard_header copy;
    uint32_t v = read_shard("t_val_000000.bin", &p, &h, &copy);
    ok(v == nval && nval == 44 && h->extras && h->vocab == 300 && h->bos == 299,
       "val shard: the first 10 documents (44 tokens), vocab and BOS in the extras");
    ok(back[0] == 299 && p[-1] != 299, "val starts at a BOS and holds whole documents");
    ok(access(path("t_val_000001.bin"), F_OK) != 0, "one val shard");
    uint32_t counts[8] = {0};
    int k = 0;
    char nm[64];
    for (;; k++) {
        snprintf(nm, sizeof nm, "t_train_%06d.bin", k);
        if (access(path(nm), F_OK) != 0)
            break;
        counts[k] = read_shard(nm, &p, &h, &copy);
    }
    ok(k == 4 && counts[0] == 50 && counts[1] == 50 && counts[2] == 50 &&
       counts[3] == n - nval - 150, "train: 3 full shards of 50 and the rest (%u)", counts[3]);
    ok((uint64_t)(p - back) == n && memcmp(all, back, n * sizeof *all) == 0,
       "val then train shards give back the stream's tokens in order");

    gk_split_opts f = {.dir = dir, .prefix = "f", .shard_tokens = 1000, .val_docs = -1,
                       .val_frac = 0.25};
    gk_shard_split(path("s.ts"), &f, res); /* a regular file: read twice */
    p = back;
    v = read_shard("f_val_000000.bin", &p, &h, &copy);
    ok(v == nval, "--val-frac 0.25 of 40 documents: the same 10 documents");

    char *shards[] = {path("t_val_000000.bin"), NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++) {
        snprintf(nm, sizeof nm, "%s/t_train_%06d.bin", dir, i);
        shards[i + 1] = gk_strdup(nm);
    }
    shards[0] = gk_strdup(shards[0]);
    gk_shard_cat(shards, 5, path("back.ts"), 0, GK_SHARD_NO_BOS, res);
    size_t la, lb;
    unsigned char *a = gk_read_file(path("s.ts"), &la), *b = gk_read_file(path("back.ts"), &lb);
    ok(la == lb && memcmp(a, b, la) == 0, "--cat of the shards gives back the stream's bytes");
    free(a);
    free(b);

    char *out;
    size_t outlen;
    FILE *mem = open_memstream(&out, &outlen);
    gk_shard_info(shards[0], 0, GK_SHARD_NO_BOS, mem);
    fclose(mem);
    ok(strstr(out, "\"tokens\":44,\"bytes\":1112,") && strstr(out, "\"documents\":10,") &&
       strstr(out, "\"checksum\":\"ok\""), "--info: %.*s", (int)outlen - 1, out);
    free(out);
    for (int i = 0; i < 5; i++)
        free(shards[i]);
    fclose(res);
}

int main(int argc, char **argv)
{
    (void)argc;
    gk_set_prog(argv[0]);
    test_header();
    if (!mkdtemp(dir))
        gk_die("%s: cannot create: expected a temporary directory", dir);
    test_split();
    tap_remove_dir(dir);
    return tap_done();
}
