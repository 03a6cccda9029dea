/* tok: reading, verifying and writing .tok files, and the derived tables (token
 * bytes, merge lookup) that encoding and decoding use. Layout in tok.h. */
#include "tok.h"
#include "io.h"
#include "pretok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static inline uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t)a << 32 | b; }

/* Fibonacci hashing: one multiply on the hot path of every encode. The table
 * is a power of two at most half full, so the top bits spread keys well. */
static inline size_t slot_of(uint64_t key, size_t cap)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

uint32_t gk_tok_merge_rank(const gk_tok *t, uint32_t left, uint32_t right)
{
    uint64_t key = pair_key(left, right) + 1; /* +1: key 0 marks an empty slot */
    for (size_t i = slot_of(key, t->mcap);; i = (i + 1) & (t->mcap - 1)) {
        if (t->mkey[i] == key)
            return t->mval[i];
        if (t->mkey[i] == 0)
            return UINT32_MAX;
    }
}

/* Token bytes and the merge table. */
static void tok_index(gk_tok *t)
{
    t->bytes = gk_calloc(t->vocab, sizeof *t->bytes);
    t->len = gk_calloc(t->vocab, sizeof *t->len);
    for (uint32_t b = 0; b < 256; b++) {
        t->bytes[b] = gk_malloc(1);
        t->bytes[b][0] = (uint8_t)b;
        t->len[b] = 1;
    }
    for (uint32_t i = 0; i < t->n_merges; i++) {
        uint32_t a = t->merges[i][0], b = t->merges[i][1], id = 256 + i;
        t->len[id] = t->len[a] + t->len[b];
        t->bytes[id] = gk_malloc(t->len[id]);
        memcpy(t->bytes[id], t->bytes[a], t->len[a]);
        memcpy(t->bytes[id] + t->len[a], t->bytes[b], t->len[b]);
    }
    for (uint32_t id = 256 + t->n_merges; id < t->vocab; id++)
        t->bytes[id] = gk_malloc(1); /* specials decode to nothing */
    t->mcap = 16;
    while (t->mcap < 2 * (size_t)t->n_merges + 2)
        t->mcap *= 2;
    t->mkey = gk_calloc(t->mcap, sizeof *t->mkey);
    t->mval = gk_calloc(t->mcap, sizeof *t->mval);
    for (uint32_t r = 0; r < t->n_merges; r++) {
        uint64_t key = pair_key(t->merges[r][0], t->merges[r][1]) + 1;
        size_t i = slot_of(key, t->mcap);
        while (t->mkey[i] && t->mkey[i] != key)
            i = (i + 1) & (t->mcap - 1);
        if (t->mkey[i] == 0) { /* a repeated pair keeps its first (lowest) rank */
            t->mkey[i] = key;
            t->mval[i] = r;
        }
    }
}

/* Shared validation for files and for gk_tok_new; WHERE prefixes messages. */
static void check_parts(const char *where, const uint32_t (*merges)[2], uint32_t n_merges,
                        char **special, uint32_t n_special, int pretok)
{
    uint64_t vocab = 256ull + n_merges + n_special;
    if (vocab > GK_TOK_MAX_VOCAB || n_special < 1)
        gk_die("%s: field vocab: expected 257..%u ids with at least one special, found %llu "
               "(%u merges, %u specials)", where, GK_TOK_MAX_VOCAB, (unsigned long long)vocab,
               n_merges, n_special);
    if (pretok < 0 || pretok >= GK_PRETOK_COUNT)
        gk_die("%s: field pretok: expected 0..%d, found %d", where, GK_PRETOK_COUNT - 1, pretok);
    for (uint32_t i = 0; i < n_merges; i++)
        if (merges[i][0] >= 256 + i || merges[i][1] >= 256 + i)
            gk_die("%s: merge %u: expected parts below %u, found %u %u", where, i, 256 + i,
                   merges[i][0], merges[i][1]);
    for (uint32_t i = 0; i < n_special; i++) {
        size_t n = strlen(special[i]);
        if (n < 1 || n > GK_TOK_MAX_SPECIAL_LEN)
            gk_die("%s: special %u: expected a name of 1..%u bytes, found %zu", where, i,
                   GK_TOK_MAX_SPECIAL_LEN, n);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(special[i], special[j]) == 0)
                gk_die("%s: special %u: expected a unique name, found \"%s\" again", where, i,
                       special[i]);
    }
}

gk_tok *gk_tok_new(const uint32_t (*merges)[2], uint32_t n_merges, char **special,
                   uint32_t n_special, int pretok)
{
    check_parts("tokenizer", merges, n_merges, special, n_special, pretok);
    gk_tok *t = gk_calloc(1, sizeof *t);
    t->n_merges = n_merges;
    t->n_special = n_special;
    t->vocab = 256 + n_merges + n_special;
    t->pretok = pretok;
    t->merges = gk_malloc((n_merges ? n_merges : 1) * sizeof *t->merges);
    memcpy(t->merges, merges, n_merges * sizeof *t->merges);
    t->special = gk_calloc(n_special, sizeof *t->special);
    for (uint32_t i = 0; i < n_special; i++)
        t->special[i] = gk_strdup(special[i]);
    tok_index(t);
    return t;
}

/* The parts being read, for a die on the way (gk_cleanup_push) and the end. */
typedef struct {
    uint32_t (*merges)[2];
    char **special;
    uint32_t n_special;
} parts;

static void parts_free(void *arg)
{
    parts *p = arg;
    for (uint32_t i = 0; p->special && i < p->n_special; i++)
        free(p->special[i]);
    free(p->special);
    free(p->merges);
}

gk_tok *gk_tok_load_mem(const unsigned char *f, size_t size, const char *path)
{
    if (size < 4 || memcmp(f, GK_TOK_MAGIC, 4) != 0)
        gk_die("%s: offset 0: expected magic \"GKTK\" (a tokenizer from tok-train), found %s",
               path, size < 4 ? "a file shorter than 4 bytes" : "other bytes");
    if (size < 32)
        gk_die("%s: offset %zu: expected at least 32 bytes, found end of file (truncated)",
               path, size);
    if (gk_get32(f + 4) != GK_TOK_VERSION)
        gk_die("%s: offset 4: expected version %u, found %u", path, GK_TOK_VERSION,
               gk_get32(f + 4));
    uint32_t vocab = gk_get32(f + 8), n_merges = gk_get32(f + 12), n_special = gk_get32(f + 16);
    /* Bound the declared sizes by the file before anything is allocated. */
    uint64_t need = 24 + 8ull * n_merges + 5ull * n_special + 8;
    if (need > size)
        gk_die("%s: offset %zu: expected at least %llu bytes for %u merges and %u specials, "
               "found end of file (truncated)", path, size, (unsigned long long)need,
               n_merges, n_special);
    uint64_t sum = XXH64(f, size - 8, 0);
    if (gk_get64(f + size - 8) != sum)
        gk_die("%s: offset %zu: expected checksum %016llx, found %016llx (corrupt file)", path,
               size - 8, (unsigned long long)sum, (unsigned long long)gk_get64(f + size - 8));
    if (vocab < 257 || vocab > GK_TOK_MAX_VOCAB || vocab != 256ull + n_merges + n_special)
        gk_die("%s: offset 8: expected vocab = 256 + merges + specials in 257..%u, found %u "
               "(%u merges, %u specials)", path, GK_TOK_MAX_VOCAB, vocab, n_merges, n_special);
    uint32_t (*merges)[2] = gk_malloc((n_merges ? n_merges : 1) * sizeof *merges);
    parts held = {merges, NULL, 0};
    gk_cleanup_push(parts_free, &held);
    size_t off = 24;
    for (uint32_t i = 0; i < n_merges; i++, off += 8) {
        merges[i][0] = gk_get32(f + off);
        merges[i][1] = gk_get32(f + off + 4);
        if (merges[i][0] >= 256 + i || merges[i][1] >= 256 + i)
            gk_die("%s: offset %zu: merge %u: expected parts below %u, found %u %u", path, off,
                   i, 256 + i, merges[i][0], merges[i][1]);
    }
    char **special = gk_calloc(n_special, sizeof *special);
    held.special = special;
    held.n_special = n_special;
    for (uint32_t i = 0; i < n_special; i++) {
        if (off + 4 > size - 8)
            gk_die("%s: offset %zu: expected special %u, found the checksum", path, off, i);
        uint32_t n = gk_get32(f + off);
        if (n < 1 || n > GK_TOK_MAX_SPECIAL_LEN || off + 4 + n > size - 8)
            gk_die("%s: offset %zu: special %u: expected a length of 1..%u bytes within the "
                   "file, found %u", path, off, i, GK_TOK_MAX_SPECIAL_LEN, n);
        if (memchr(f + off + 4, 0, n))
            gk_die("%s: offset %zu: special %u: expected a name without NUL bytes", path,
                   off + 4, i);
        special[i] = gk_malloc(n + 1);
        memcpy(special[i], f + off + 4, n);
        special[i][n] = 0;
        off += 4 + n;
    }
    if (off != size - 8)
        gk_die("%s: offset %zu: expected the checksum, found %zu more bytes", path, off,
               size - 8 - off);
    int pretok = (int)gk_get32(f + 20);
    check_parts(path, (const uint32_t (*)[2])merges, n_merges, special, n_special, pretok);
    gk_tok *t = gk_tok_new((const uint32_t (*)[2])merges, n_merges, special, n_special, pretok);
    gk_cleanup_pop(&held);
    parts_free(&held);
    return t;
}

gk_tok *gk_tok_load(const char *path)
{
    size_t size;
    uint8_t *f = gk_read_file(path, &size);
    gk_cleanup_push(free, f);
    gk_tok *t = gk_tok_load_mem(f, size, path);
    gk_cleanup_pop(f);
    free(f);
    return t;
}

void gk_tok_save(const gk_tok *t, const char *path)
{
    size_t size = 24 + 8 * (size_t)t->n_merges + 8;
    for (uint32_t i = 0; i < t->n_special; i++)
        size += 4 + strlen(t->special[i]);
    uint8_t *f = gk_malloc(size);
    memcpy(f, GK_TOK_MAGIC, 4);
    gk_put32(f + 4, GK_TOK_VERSION);
    gk_put32(f + 8, t->vocab);
    gk_put32(f + 12, t->n_merges);
    gk_put32(f + 16, t->n_special);
    gk_put32(f + 20, (uint32_t)t->pretok);
    size_t off = 24;
    for (uint32_t i = 0; i < t->n_merges; i++, off += 8) {
        gk_put32(f + off, t->merges[i][0]);
        gk_put32(f + off + 4, t->merges[i][1]);
    }
    for (uint32_t i = 0; i < t->n_special; i++) {
        uint32_t n = (uint32_t)strlen(t->special[i]);
        gk_put32(f + off, n);
        memcpy(f + off + 4, t->special[i], n);
        off += 4 + n;
    }
    gk_put64(f + off, XXH64(f, off, 0));
    gk_out *o = gk_out_open(path);
    gk_out_write(o, f, size);
    gk_out_commit(o);
    free(f);
}

void gk_tok_free(gk_tok *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->vocab; i++)
        free(t->bytes[i]);
    for (uint32_t i = 0; i < t->n_special; i++)
        free(t->special[i]);
    free(t->bytes);
    free(t->len);
    free(t->mkey);
    free(t->mval);
    free(t->special);
    free(t->merges);
    free(t);
}
