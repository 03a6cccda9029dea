/* shardfile: the shard header, a verifying shard reader, and the shard tool's
 * three modes (split a token stream, --info, --cat). The layout and the
 * contract are in shardfile.h; man5/shard.5 describes the format for readers
 * in other languages. */
#include "shardfile.h"
#include "jsonl.h"
#include "progress.h"
#include "tstream.h"
#include "util.h"

#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define CHUNK (1u << 16) /* tokens handed on at a time by every reader here */

/* ---- the header ---- */

void gk_shard_header_encode(const gk_shard_header *h, unsigned char out[GK_SHARD_HEADER_BYTES])
{
    memset(out, 0, GK_SHARD_HEADER_BYTES);
    gk_put32(out, GK_SHARD_MAGIC);
    gk_put32(out + 4, GK_SHARD_VERSION);
    gk_put32(out + 8, h->tokens);
    gk_put32(out + 12, GK_SHARD_EXTRAS);
    gk_put32(out + 16, h->vocab);
    gk_put64(out + 20, h->checksum); /* low word at [5], high word at [6] */
    gk_put32(out + 28, h->bos);
    gk_put64(out + 32, XXH64(out, 32, 0));
}

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

int gk_shard_header_decode(const unsigned char in[GK_SHARD_HEADER_BYTES], int64_t size,
                           gk_shard_header *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    h->bos = GK_SHARD_NO_BOS;
    if (size >= 0 && size < GK_SHARD_HEADER_BYTES)
        return fail(err, errlen, "offset 0: expected a %u-byte shard header, found a file of "
                    "%lld bytes", GK_SHARD_HEADER_BYTES, (long long)size);
    /* Printed as int32, as the Python loaders see them. */
    int32_t magic = (int32_t)gk_get32(in), version = (int32_t)gk_get32(in + 4);
    int32_t count = (int32_t)gk_get32(in + 8);
    if ((uint32_t)magic != GK_SHARD_MAGIC)
        return fail(err, errlen, "offset 0: expected magic %u (an llm.c / parameter-golf "
                    "shard), found %d", GK_SHARD_MAGIC, magic);
    if ((uint32_t)version != GK_SHARD_VERSION)
        return fail(err, errlen, "offset 4: expected version %u (uint16 tokens), found %d",
                    GK_SHARD_VERSION, version);
    if (size >= 0) {
        uint64_t body = (uint64_t)size - GK_SHARD_HEADER_BYTES;
        if (body % 2)
            return fail(err, errlen, "offset %u: expected whole uint16 tokens after the "
                        "header, found %llu bytes (an odd number)", GK_SHARD_HEADER_BYTES,
                        (unsigned long long)body);
        if (count < 0 || (uint64_t)count != body / 2)
            return fail(err, errlen, "offset 8: expected %llu tokens (file size %lld), found "
                        "header count %d", (unsigned long long)(body / 2), (long long)size,
                        count);
    } else if (count < 0) {
        return fail(err, errlen, "offset 8: expected a token count in 0..%u, found %d",
                    GK_SHARD_MAX_TOKENS, count);
    }
    h->tokens = (uint32_t)count;
    if (gk_get32(in + 12) != GK_SHARD_EXTRAS)
        return 0; /* a plain llm.c / parameter-golf shard: nothing more to trust */
    /* The header checksum comes first: vocab and BOS are used only once it holds. */
    uint64_t want = XXH64(in, 32, 0), got = gk_get64(in + 32);
    if (got != want)
        return fail(err, errlen, "offset 32: expected header checksum %016llx (xxh64 of "
                    "bytes 0..31), found %016llx", (unsigned long long)want,
                    (unsigned long long)got);
    uint32_t vocab = gk_get32(in + 16), bos = gk_get32(in + 28);
    if (vocab < 1 || vocab > 65536)
        return fail(err, errlen, "offset 16: expected vocab in 1..65536, found %u", vocab);
    if (bos != GK_SHARD_NO_BOS && bos >= vocab)
        return fail(err, errlen, "offset 28: expected a BOS id below vocab %u or 0xffffffff "
                    "(none), found %u", vocab, bos);
    h->extras = 1;
    h->vocab = vocab;
    h->bos = bos;
    h->checksum = gk_get64(in + 20);
    return 0;
}

/* ---- the reader ---- */

struct gk_shard_reader {
    gk_in *in;
    gk_shard_header h;
    uint32_t limit; /* token ids must be below this; 0: unchecked */
    uint32_t done;  /* tokens handed out */
    int ended;
    XXH64_state_t *xs;
    unsigned char *raw;
    uint16_t *tok;
};

static void reader_close(void *r) { gk_shard_close(r); }

gk_shard_reader *gk_shard_open(const char *path)
{
    gk_shard_reader *r = gk_calloc(1, sizeof *r);
    r->in = gk_in_open(path);
    gk_cleanup_push(reader_close, r);
    const char *name = gk_in_path(r->in);
    unsigned char hb[GK_SHARD_HEADER_BYTES];
    size_t got = gk_in_read(r->in, hb, sizeof hb);
    if (got == 0)
        gk_die("%s: offset 0: expected a shard header, found an empty file", name);
    /* A short file that is not a shard at all is better named by its magic. */
    if (got >= 4 && gk_get32(hb) != GK_SHARD_MAGIC)
        gk_die("%s: offset 0: expected magic %u (an llm.c / parameter-golf shard), found %d",
               name, GK_SHARD_MAGIC, (int32_t)gk_get32(hb));
    if (got < sizeof hb)
        gk_die("%s: offset 0: expected a %u-byte shard header, found end of file after %zu "
               "bytes", name, GK_SHARD_HEADER_BYTES, got);
    char err[256];
    if (gk_shard_header_decode(hb, gk_in_size(r->in), &r->h, err, sizeof err) != 0)
        gk_die("%s: %s", name, err);
    r->limit = r->h.extras ? r->h.vocab : 0;
    r->xs = XXH64_createState();
    if (!r->xs)
        gk_die("out of memory: expected an xxh64 state, found none");
    XXH64_reset(r->xs, 0);
    r->raw = gk_malloc(2 * (size_t)CHUNK);
    r->tok = gk_malloc(CHUNK * sizeof *r->tok);
    gk_cleanup_pop(r);
    return r;
}

const gk_shard_header *gk_shard_hdr(const gk_shard_reader *r) { return &r->h; }
void gk_shard_limit(gk_shard_reader *r, uint32_t vocab) { r->limit = vocab; }

/* The end of a shard: nothing may follow the counted tokens (a pipe's size was
 * not known up front), and the checksum must hold. */
static void shard_end(gk_shard_reader *r)
{
    const char *name = gk_in_path(r->in);
    unsigned char extra;
    if (gk_in_read(r->in, &extra, 1) != 0)
        gk_die("%s: offset %llu: expected end of file after the %u tokens of header word 2, "
               "found more bytes", name, (unsigned long long)gk_in_offset(r->in) - 1,
               r->h.tokens);
    uint64_t sum = XXH64_digest(r->xs);
    if (r->h.extras && sum != r->h.checksum)
        gk_die("%s: offset 20: expected token checksum %016llx, found %016llx computed from "
               "the %u tokens (corrupt shard)", name, (unsigned long long)r->h.checksum,
               (unsigned long long)sum, r->h.tokens);
    r->ended = 1;
}

size_t gk_shard_read(gk_shard_reader *r, const uint16_t **tok)
{
    if (r->ended)
        return 0;
    if (r->done == r->h.tokens) {
        shard_end(r);
        return 0;
    }
    uint32_t n = r->h.tokens - r->done < CHUNK ? r->h.tokens - r->done : CHUNK;
    uint64_t at = gk_in_offset(r->in);
    gk_in_read_exact(r->in, r->raw, 2 * (size_t)n, "shard tokens");
    XXH64_update(r->xs, r->raw, 2 * (size_t)n);
    for (uint32_t i = 0; i < n; i++) {
        uint16_t t = (uint16_t)(r->raw[2 * i] | r->raw[2 * i + 1] << 8);
        if (r->limit && t >= r->limit)
            gk_die("%s: offset %llu: expected a token id below vocab %u, found %u",
                   gk_in_path(r->in), (unsigned long long)(at + 2 * (uint64_t)i), r->limit, t);
        r->tok[i] = t;
    }
    r->done += n;
    *tok = r->tok;
    return n;
}

void gk_shard_close(gk_shard_reader *r)
{
    gk_in_close(r->in);
    XXH64_freeState(r->xs);
    free(r->raw);
    free(r->tok);
    free(r);
}

/* ---- split: token stream -> shards ---- */

typedef struct {
    char *path;
    int split; /* 0 val, 1 train */
    uint32_t tokens;
    uint64_t docs;
    gk_out *out;
} shard_rec;

static const char *const split_name[2] = {"val", "train"};

typedef struct {
    const gk_split_opts *o;
    uint32_t vocab, bos;
    unsigned char *buf; /* little-endian token bytes of the shard being filled */
    uint32_t cap, n;    /* tokens buf holds, tokens in it */
    uint64_t docs_in_buf, docs_seen, val_docs;
    int split;          /* where the tokens go now: 0 val, 1 train */
    uint32_t count[2];  /* shards written per split */
    uint64_t tokens[2], docs[2];
    shard_rec *recs;
    size_t nrecs, recs_cap;
} sharder;

static char *shard_path(const char *dir, const char *prefix, int split, uint32_t index)
{
    size_t dl = strlen(dir);
    int slash = strcmp(dir, ".") != 0 && dl && dir[dl - 1] != '/';
    const char *d = strcmp(dir, ".") == 0 ? "" : dir; /* "data_train_000000.bin", not "./..." */
    size_t n = dl + strlen(prefix) + 32;
    char *p = gk_malloc(n);
    snprintf(p, n, "%s%s%s_%s_%06u.bin", d, slash ? "/" : "", prefix, split_name[split], index);
    return p;
}

/* Write the buffered tokens as the next shard of the current split. It stays
 * an uncommitted NAME.tmp until the whole stream was verified. */
static void flush_shard(sharder *s)
{
    if (!s->n)
        return;
    shard_rec *rec;
    if (s->nrecs == s->recs_cap) {
        s->recs_cap = s->recs_cap ? 2 * s->recs_cap : 16;
        s->recs = gk_realloc(s->recs, s->recs_cap * sizeof *s->recs);
    }
    rec = &s->recs[s->nrecs++];
    rec->split = s->split;
    rec->path = shard_path(s->o->dir, s->o->prefix, s->split, s->count[s->split]++);
    rec->tokens = s->n;
    rec->docs = s->docs_in_buf;
    rec->out = gk_out_open(rec->path);
    gk_shard_header h = {.tokens = s->n, .extras = 1, .vocab = s->vocab, .bos = s->bos,
                         .checksum = XXH64(s->buf, 2 * (size_t)s->n, 0)};
    unsigned char hb[GK_SHARD_HEADER_BYTES];
    gk_shard_header_encode(&h, hb);
    gk_out_write(rec->out, hb, sizeof hb);
    gk_out_write(rec->out, s->buf, 2 * (size_t)s->n);
    gk_out_close(rec->out);
    s->tokens[s->split] += s->n;
    s->docs[s->split] += s->docs_in_buf;
    s->n = 0;
    s->docs_in_buf = 0;
}

static void sharder_add(sharder *s, const uint16_t *tok, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t t = tok[i];
        if (t == s->bos) {
            /* The BOS that opens document val_docs + 1 is the first training token.
             * Documents are counted only while in val: that is all the split needs. */
            if (s->split == 0 && ++s->docs_seen > s->val_docs) {
                flush_shard(s);
                s->split = 1;
            }
            s->docs_in_buf++;
        }
        if (s->n == s->cap) {
            /* Grow toward one whole shard, so a small stream takes little memory. */
            uint32_t max = s->o->shard_tokens;
            s->cap = !s->cap ? (max < CHUNK ? max : CHUNK) : s->cap > max / 2 ? max : 2 * s->cap;
            s->buf = gk_realloc(s->buf, 2 * (size_t)s->cap);
        }
        s->buf[2 * (size_t)s->n] = (unsigned char)t;
        s->buf[2 * (size_t)s->n + 1] = (unsigned char)(t >> 8);
        if (++s->n == s->o->shard_tokens)
            flush_shard(s);
    }
}

/* A loader globs PREFIX_train_*.bin: a shard left from an earlier, longer run
 * would silently join this one. Refuse rather than delete someone's file. */
static void refuse_stale(const sharder *s)
{
    DIR *d = opendir(s->o->dir);
    if (!d)
        gk_die("%s: cannot list: %s", s->o->dir, strerror(errno));
    size_t pl = strlen(s->o->prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, s->o->prefix, pl) != 0 || nm[pl] != '_')
            continue;
        for (int sp = 0; sp < 2; sp++) {
            size_t sl = strlen(split_name[sp]);
            const char *q = nm + pl + 1;
            if (strncmp(q, split_name[sp], sl) != 0 || q[sl] != '_')
                continue;
            char *end;
            q += sl + 1;
            if (*q < '0' || *q > '9')
                continue;
            unsigned long idx = strtoul(q, &end, 10);
            if (strcmp(end, ".bin") == 0 && idx >= s->count[sp])
                gk_die("%s/%s: expected no %s shard beyond the %u this run writes, found one "
                       "from an earlier run (remove it, or use another -o or --prefix)",
                       s->o->dir, nm, split_name[sp], s->count[sp]);
        }
    }
    closedir(d);
}

static void sharder_finish(sharder *s, const char *name, FILE *results)
{
    flush_shard(s);
    uint64_t total = s->tokens[0] + s->tokens[1];
    if (total == 0)
        gk_die("%s: expected at least one token, found an empty stream", name);
    if (s->split == 0 && s->val_docs > 0)
        gk_die("%s: expected more than %llu documents (%llu for validation and at least one "
               "for training), found %llu", name, (unsigned long long)s->val_docs,
               (unsigned long long)s->val_docs, (unsigned long long)s->docs_seen);
    refuse_stale(s);
    for (size_t i = 0; i < s->nrecs; i++)
        gk_out_commit(s->recs[i].out);
    for (size_t i = 0; i < s->nrecs; i++) {
        jv o = jv_object();
        o = jv_object_set(o, jv_string("file"), jv_string(s->recs[i].path));
        o = jv_object_set(o, jv_string("split"), jv_string(split_name[s->recs[i].split]));
        o = jv_object_set(o, jv_string("tokens"), jv_number(s->recs[i].tokens));
        o = jv_object_set(o, jv_string("documents"), jv_number((double)s->recs[i].docs));
        gk_emit(results, o);
        free(s->recs[i].path);
    }
    jv o = jv_object();
    o = jv_object_set(o, jv_string("stream"), jv_string(name));
    o = jv_object_set(o, jv_string("vocab"), jv_number(s->vocab));
    o = jv_object_set(o, jv_string("bos"),
                      s->bos == GK_SHARD_NO_BOS ? jv_null() : jv_number(s->bos));
    o = jv_object_set(o, jv_string("tokens"), jv_number((double)total));
    o = jv_object_set(o, jv_string("documents"), jv_number((double)(s->docs[0] + s->docs[1])));
    for (int sp = 0; sp < 2; sp++) {
        char k[32];
        snprintf(k, sizeof k, "%s_shards", split_name[sp]);
        o = jv_object_set(o, jv_string(k), jv_number(s->count[sp]));
        snprintf(k, sizeof k, "%s_tokens", split_name[sp]);
        o = jv_object_set(o, jv_string(k), jv_number((double)s->tokens[sp]));
        snprintf(k, sizeof k, "%s_documents", split_name[sp]);
        o = jv_object_set(o, jv_string(k), jv_number((double)s->docs[sp]));
    }
    gk_emit(results, o);
    free(s->recs);
    free(s->buf);
}

/* The spool for --val-frac on a pipe: a file in DIR (which has room for the
 * shards anyway), unlinked at once so that no exit, not even a kill, leaves it. */
static FILE *spool_open(const char *dir)
{
    size_t n = strlen(dir) + 32;
    char *p = gk_malloc(n);
    snprintf(p, n, "%s/.shard-spool-XXXXXX", dir);
    int fd = mkstemp(p);
    if (fd < 0)
        gk_die("%s: cannot create a spool file for --val-frac: %s", p, strerror(errno));
    unlink(p);
    free(p);
    FILE *fp = fdopen(fd, "w+b");
    if (!fp)
        gk_die("%s: cannot open the spool file: %s", dir, strerror(errno));
    return fp;
}

static int is_regular(const char *stream)
{
    struct stat st;
    return strcmp(stream, "-") != 0 && stat(stream, &st) == 0 && S_ISREG(st.st_mode);
}

static uint64_t estimate_tokens(const char *stream)
{
    struct stat st;
    if (!is_regular(stream) || stat(stream, &st) != 0)
        return 0;
    /* Header and end record take 56 bytes, blocks 12 per 2^16 tokens: close
     * enough for an ETA. */
    return st.st_size > 56 ? (uint64_t)(st.st_size - 56) / 2 : 0;
}

/* First pass for --val-frac: read R to its end to learn the document count,
 * copying the tokens to SPOOL (when not NULL) for the second pass. */
static uint64_t count_docs(gk_ts_reader *r, uint64_t est, FILE *spool, const char *dir,
                           uint64_t *tokens)
{
    gk_progress p;
    gk_progress_start(&p, "counting documents", "tokens", est);
    const uint16_t *tok;
    size_t n;
    while ((n = gk_ts_read(r, &tok))) {
        /* Host byte order: this same process reads it back. */
        if (spool && fwrite(tok, sizeof *tok, n, spool) != n)
            gk_die("%s: spool write failed: %s", dir, strerror(errno));
        gk_progress_update(&p, gk_ts_tokens(r));
    }
    gk_progress_end(&p, gk_ts_tokens(r));
    if (spool && (fflush(spool) != 0 || fseek(spool, 0, SEEK_SET) != 0))
        gk_die("%s: spool write failed: %s", dir, strerror(errno));
    *tokens = gk_ts_tokens(r);
    return gk_ts_docs(r);
}

void gk_shard_split(const char *stream, const gk_split_opts *o, FILE *results)
{
    const char *name = strcmp(stream, "-") == 0 ? "stdin" : stream;
    gk_out_mkdir(o->dir, "the shards");
    gk_ts_reader *r = gk_ts_reader_open(stream);
    sharder s = {.o = o, .vocab = gk_ts_vocab(r), .bos = gk_ts_bos(r)};
    if (o->val_docs != 0 && s.bos == GK_TS_NO_BOS)
        gk_die("%s: offset 12: expected a BOS id (document boundaries for --val-docs or "
               "--val-frac), found none (0xffffffff)", name);
    uint64_t total = estimate_tokens(stream);
    FILE *spool = NULL;
    if (o->val_docs < 0) {
        /* A regular file is read twice; anything else is spooled as it goes by. */
        int regular = is_regular(stream);
        spool = regular ? NULL : spool_open(o->dir);
        uint64_t docs = count_docs(r, total, spool, o->dir, &total);
        gk_ts_reader_close(r);
        r = regular ? gk_ts_reader_open(stream) : NULL;
        s.val_docs = (uint64_t)floor(o->val_frac * (double)docs + 0.5);
        if (s.val_docs == 0)
            gk_die("%s: expected --val-frac %g of %llu documents to give at least one, found "
                   "0 (use --val-docs)", name, o->val_frac, (unsigned long long)docs);
    } else {
        s.val_docs = (uint64_t)o->val_docs;
    }
    s.split = s.val_docs > 0 ? 0 : 1;
    gk_progress p;
    gk_progress_start(&p, "shard", "tokens", total);
    uint64_t done = 0;
    const uint16_t *tok;
    uint16_t *sbuf = spool ? gk_malloc(CHUNK * sizeof *sbuf) : NULL;
    for (;;) {
        size_t n;
        if (spool) {
            n = fread(sbuf, sizeof *sbuf, CHUNK, spool);
            if (n == 0 && ferror(spool))
                gk_die("%s: spool read failed: %s", o->dir, strerror(errno));
            tok = sbuf;
        } else {
            n = gk_ts_read(r, &tok);
        }
        if (n == 0)
            break;
        sharder_add(&s, tok, n);
        done += n;
        gk_progress_update(&p, done);
    }
    gk_progress_end(&p, done);
    if (spool) {
        fclose(spool);
        free(sbuf);
    } else {
        gk_ts_reader_close(r);
    }
    sharder_finish(&s, name, results);
}

/* ---- --info and --cat ---- */

/* Vocab and BOS as known so far, and who said so, for the messages. */
typedef struct {
    uint32_t vocab, bos;
    const char *vfrom, *bfrom; /* NULL: not known yet */
} meta;

static void meta_init(meta *m, uint32_t vocab, uint32_t bos)
{
    m->vocab = vocab;
    m->bos = bos;
    m->vfrom = vocab ? "--vocab" : NULL;
    m->bfrom = bos != GK_SHARD_NO_BOS ? "--bos" : NULL;
}

/* Fold a shard's extras into M; a disagreement is an error, not a guess. */
static void meta_agree(meta *m, const char *path, const gk_shard_header *h)
{
    if (!h->extras)
        return;
    if (m->vfrom && m->vocab != h->vocab)
        gk_die("%s: offset 16: expected vocab %u as %s says, found %u", path, m->vocab,
               m->vfrom, h->vocab);
    if (m->bfrom && m->bos != h->bos)
        gk_die("%s: offset 28: expected BOS id %d as %s says, found %d", path, (int)m->bos,
               m->bfrom, (int)h->bos); /* int: 0xffffffff reads as -1, "none" */
    m->vocab = h->vocab;
    m->bos = h->bos;
    if (!m->vfrom)
        m->vfrom = path;
    if (!m->bfrom)
        m->bfrom = path;
}

void gk_shard_info(const char *path, uint32_t vocab, uint32_t bos, FILE *results)
{
    meta m;
    meta_init(&m, vocab, bos);
    gk_shard_reader *r = gk_shard_open(path);
    const gk_shard_header *h = gk_shard_hdr(r);
    meta_agree(&m, path, h);
    gk_shard_limit(r, m.vocab);
    uint64_t seen[65536 / 64] = {0};
    uint64_t docs = 0, distinct = 0, done = 0;
    uint32_t max = 0;
    gk_progress p;
    gk_progress_start(&p, path, "tokens", h->tokens);
    const uint16_t *tok;
    size_t n;
    while ((n = gk_shard_read(r, &tok))) {
        for (size_t i = 0; i < n; i++) {
            uint16_t t = tok[i];
            docs += t == m.bos;
            max = t > max ? t : max;
            if (!(seen[t / 64] >> (t % 64) & 1)) {
                seen[t / 64] |= 1ull << (t % 64);
                distinct++;
            }
        }
        done += n;
        gk_progress_update(&p, done);
    }
    gk_progress_end(&p, done);
    jv o = jv_object();
    o = jv_object_set(o, jv_string("file"), jv_string(path));
    o = jv_object_set(o, jv_string("tokens"), jv_number(h->tokens));
    o = jv_object_set(o, jv_string("bytes"),
                      jv_number(GK_SHARD_HEADER_BYTES + 2.0 * (double)h->tokens));
    o = jv_object_set(o, jv_string("version"), jv_number(GK_SHARD_VERSION));
    o = jv_object_set(o, jv_string("vocab"), m.vocab ? jv_number(m.vocab) : jv_null());
    o = jv_object_set(o, jv_string("bos"),
                      m.bos == GK_SHARD_NO_BOS ? jv_null() : jv_number(m.bos));
    o = jv_object_set(o, jv_string("max_token"), h->tokens ? jv_number(max) : jv_null());
    o = jv_object_set(o, jv_string("distinct_tokens"), jv_number((double)distinct));
    o = jv_object_set(o, jv_string("documents"),
                      m.bos == GK_SHARD_NO_BOS ? jv_null() : jv_number((double)docs));
    o = jv_object_set(o, jv_string("checksum"), jv_string(h->extras ? "ok" : "absent"));
    gk_shard_close(r);
    gk_emit(results, o);
}

void gk_shard_cat(char *const *paths, int n, const char *out, uint32_t vocab, uint32_t bos,
                  FILE *results)
{
    meta m;
    meta_init(&m, vocab, bos);
    uint64_t total = 0;
    /* Every header first: a disagreement is found before any output. */
    for (int i = 0; i < n; i++) {
        gk_shard_reader *r = gk_shard_open(paths[i]);
        meta_agree(&m, paths[i], gk_shard_hdr(r));
        total += gk_shard_hdr(r)->tokens;
        gk_shard_close(r);
    }
    if (!m.vocab)
        gk_die("%s: offset 12: expected golfkit extras (the vocab size) in the header, found "
               "none; give --vocab N", paths[0]);
    gk_out *o = gk_out_open(out);
    gk_ts_writer *w = gk_ts_writer_new(o, m.vocab, m.bos);
    gk_progress p;
    gk_progress_start(&p, "cat", "tokens", total);
    uint64_t done = 0, docs = 0;
    for (int i = 0; i < n; i++) {
        gk_shard_reader *r = gk_shard_open(paths[i]);
        gk_shard_limit(r, m.vocab);
        const uint16_t *tok;
        size_t k;
        while ((k = gk_shard_read(r, &tok))) {
            for (size_t j = 0; j < k; j++)
                docs += tok[j] == m.bos;
            gk_ts_write(w, tok, k);
            done += k;
            gk_progress_update(&p, done);
        }
        gk_shard_close(r);
    }
    gk_progress_end(&p, done);
    gk_ts_finish(w);
    gk_out_commit(o);
    if (strcmp(out, "-") == 0)
        return; /* stdout carries the stream itself */
    jv j = jv_object();
    j = jv_object_set(j, jv_string("file"), jv_string(out));
    j = jv_object_set(j, jv_string("shards"), jv_number(n));
    j = jv_object_set(j, jv_string("tokens"), jv_number((double)done));
    j = jv_object_set(j, jv_string("documents"),
                      m.bos == GK_SHARD_NO_BOS ? jv_null() : jv_number((double)docs));
    j = jv_object_set(j, jv_string("vocab"), jv_number(m.vocab));
    j = jv_object_set(j, jv_string("bos"),
                      m.bos == GK_SHARD_NO_BOS ? jv_null() : jv_number(m.bos));
    gk_emit(results, j);
}
