/* loader: training batches and validation over llm.c / parameter-golf shards,
 * mirroring openai/parameter-golf train_gpt.py (TokenStream,
 * DistributedTokenLoader, load_validation_tokens, eval_val). The contract is
 * in loader.h.
 *
 * The stream position is two numbers (shard, offset) and the shard in memory
 * is a cache of it: the stream advances by arithmetic over the token counts
 * read from the headers at open, and a shard is loaded only when this rank
 * copies tokens out of it. So restoring a checkpoint is setting two numbers,
 * and a rank never loads a shard that only other ranks' spans touch. */
#include "loader.h"
#include "shardfile.h"
#include "util.h"

#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the shard set ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* train_gpt.py: sorted(glob.glob(pattern)). Several patterns are merged into
 * one sorted list; a file named twice is read once. */
static char **expand(const char *const *patterns, int n, int *count)
{
    char **paths = NULL;
    size_t np = 0;
    for (int i = 0; i < n; i++) {
        glob_t g;
        int rc = glob(patterns[i], 0, NULL, &g);
        if (rc == GLOB_NOMATCH)
            continue;
        if (rc != 0)
            gk_die("%s: expected a readable shard pattern, found a glob error (%s)",
                   patterns[i], rc == GLOB_NOSPACE ? "out of memory" : "read error");
        paths = gk_realloc(paths, (np + g.gl_pathc) * sizeof *paths);
        for (size_t j = 0; j < g.gl_pathc; j++)
            paths[np++] = gk_strdup(g.gl_pathv[j]);
        globfree(&g);
    }
    if (!paths) /* nothing matched */
        gk_die("%s%s: expected shard files matching it, found none", n ? patterns[0] : "",
               n > 1 ? " (and the other patterns)" : "");
    // cppcheck-suppress nullPointer ; gk_die does not return
    qsort(paths, np, sizeof *paths, cmp_str);
    size_t k = 0;
    for (size_t j = 0; j < np; j++) {
        if (k && strcmp(paths[k - 1], paths[j]) == 0)
            free(paths[j]);
        else
            paths[k++] = paths[j];
    }
    if (k > INT32_MAX)
        gk_die("%s: expected at most %d shard files, found %zu", patterns[0], INT32_MAX, k);
    *count = (int)k;
    return paths;
}

/* Open a shard and hold it to the model's vocab: extras must name that vocab,
 * and every token read must be below it (gk_shard_read dies naming the file
 * and offset otherwise). */
static gk_shard_reader *open_checked(const char *path, uint32_t vocab)
{
    gk_shard_reader *r = gk_shard_open(path);
    const gk_shard_header *h = gk_shard_hdr(r);
    if (h->extras && h->vocab != vocab)
        gk_die("%s: offset 16: expected vocab %u (the model's), found %u in the shard's "
               "golfkit header", path, vocab, h->vocab);
    gk_shard_limit(r, vocab);
    return r;
}

/* Read all of an open shard into BUF (room for its count). Every token is
 * checked as it arrives and the checksum at the end, before the caller uses
 * any token: train_gpt.py's load_data_shard also reads a shard whole. */
static void read_all(gk_shard_reader *r, uint16_t *buf)
{
    const uint16_t *t;
    size_t k, at = 0;
    while ((k = gk_shard_read(r, &t)) > 0) {
        memcpy(buf + at, t, k * sizeof *t);
        at += k;
    }
}

/* ---- training ---- */

struct gk_loader {
    int n;            /* shards */
    char **paths;
    int64_t *count;   /* tokens of each, from its header */
    uint32_t vocab;
    int rank, world;
    int64_t shard, pos;    /* the stream position (TokenStream's file_idx, pos) */
    int loaded;            /* the shard in buf, -1 when none */
    uint16_t *buf;
    int64_t cap;
    uint16_t *span;        /* this rank's local + 1 tokens */
    int *x, *y;
    int64_t span_cap;
};

gk_loader *gk_loader_open(const char *const *patterns, int n, uint32_t vocab, int rank,
                          int world)
{
    if (world < 1 || rank < 0 || rank >= world)
        gk_die("loader: expected 0 <= rank < world, found rank %d, world %d", rank, world);
    gk_loader *ld = gk_calloc(1, sizeof *ld);
    ld->paths = expand(patterns, n, &ld->n);
    ld->count = gk_malloc((size_t)ld->n * sizeof *ld->count);
    ld->vocab = vocab, ld->rank = rank, ld->world = world;
    ld->loaded = -1;
    int64_t total = 0;
    for (int i = 0; i < ld->n; i++) {
        gk_shard_reader *r = open_checked(ld->paths[i], vocab);
        ld->count[i] = gk_shard_hdr(r)->tokens;
        total += ld->count[i];
        gk_shard_close(r);
    }
    /* TokenStream would spin forever on a set of empty shards. */
    if (total == 0)
        gk_die("%s: offset 8: expected a shard set holding tokens, found %d shards of 0 "
               "tokens", ld->paths[0], ld->n);
    return ld;
}

void gk_loader_close(gk_loader *ld)
{
    if (!ld)
        return;
    for (int i = 0; i < ld->n; i++)
        free(ld->paths[i]);
    free(ld->paths);
    free(ld->count);
    free(ld->buf);
    free(ld->span);
    free(ld->x);
    free(ld->y);
    free(ld);
}

int gk_loader_shards(const gk_loader *ld) { return ld->n; }
const char *gk_loader_shard_path(const gk_loader *ld, int i) { return ld->paths[i]; }
int64_t gk_loader_shard_tokens(const gk_loader *ld, int i) { return ld->count[i]; }

static void load_shard(gk_loader *ld, int i)
{
    if (ld->loaded == i)
        return;
    gk_shard_reader *r = open_checked(ld->paths[i], ld->vocab);
    int64_t c = gk_shard_hdr(r)->tokens;
    if (c != ld->count[i])
        gk_die("%s: offset 8: expected %lld tokens (as when the loader opened), found %lld: "
               "the shard changed during training", ld->paths[i], (long long)ld->count[i],
               (long long)c);
    if (c > ld->cap) {
        free(ld->buf);
        ld->buf = gk_malloc((size_t)c * sizeof *ld->buf);
        ld->cap = c;
    }
    read_all(r, ld->buf);
    gk_shard_close(r);
    ld->loaded = i;
}

/* TokenStream.take(n), copying into OUT, or only advancing when OUT is NULL.
 * As there, a shard is left only when more tokens are wanted and none remain
 * in it (so a take that ends exactly at a shard's end leaves pos == count),
 * and after the last shard comes the first again. */
static void take(gk_loader *ld, int64_t n, uint16_t *out)
{
    while (n > 0) {
        int64_t avail = ld->count[ld->shard] - ld->pos;
        if (avail <= 0) {
            ld->shard = (ld->shard + 1) % ld->n;
            ld->pos = 0;
            continue;
        }
        int64_t k = n < avail ? n : avail;
        if (out) {
            load_shard(ld, (int)ld->shard);
            memcpy(out, ld->buf + ld->pos, (size_t)k * sizeof *out);
            out += k;
        }
        ld->pos += k;
        n -= k;
    }
}

gk_batch gk_loader_next(gk_loader *ld, int64_t global_tokens, int seq_len, int grad_accum)
{
    if (global_tokens < 1 || seq_len < 1 || grad_accum < 1)
        gk_die("loader: expected positive global_tokens, seq_len and grad_accum, found %lld, "
               "%d, %d", (long long)global_tokens, seq_len, grad_accum);
    /* DistributedTokenLoader.next_batch: local_tokens = global // (world * accum),
     * a span of local + 1 per rank from a chunk of world spans. */
    int64_t local = global_tokens / ((int64_t)ld->world * grad_accum);
    if (local < seq_len || local % seq_len || local / seq_len > INT32_MAX)
        gk_die("loader: expected global_tokens %lld / (world %d x grad_accum %d) = %lld to be "
               "a positive multiple of seq_len %d, found it is not", (long long)global_tokens,
               ld->world, grad_accum, (long long)local, seq_len);
    int64_t span = local + 1;
    if (span > ld->span_cap) {
        free(ld->span), free(ld->x), free(ld->y);
        ld->span = gk_malloc((size_t)span * sizeof *ld->span);
        ld->x = gk_malloc((size_t)local * sizeof *ld->x);
        ld->y = gk_malloc((size_t)local * sizeof *ld->y);
        ld->span_cap = span;
    }
    take(ld, ld->rank * span, NULL);
    take(ld, span, ld->span);
    take(ld, (int64_t)(ld->world - 1 - ld->rank) * span, NULL);
    for (int64_t i = 0; i < local; i++) {
        ld->x[i] = ld->span[i];
        ld->y[i] = ld->span[i + 1];
    }
    return (gk_batch){ld->x, ld->y, (int)(local / seq_len), seq_len};
}

gk_loader_pos gk_loader_tell(const gk_loader *ld)
{
    return (gk_loader_pos){ld->shard, ld->pos};
}

void gk_loader_seek(gk_loader *ld, gk_loader_pos p, const char *where)
{
    if (p.shard < 0 || p.shard >= ld->n)
        gk_die("%s: shard: expected 0..%d (the shard set has %d files), found %lld", where,
               ld->n - 1, ld->n, (long long)p.shard);
    if (p.offset < 0 || p.offset > ld->count[p.shard])
        gk_die("%s: offset: expected 0..%lld (the tokens of %s), found %lld", where,
               (long long)ld->count[p.shard], ld->paths[p.shard], (long long)p.offset);
    ld->shard = p.shard;
    ld->pos = p.offset;
}

/* ---- validation ---- */

gk_val *gk_val_load(const char *const *patterns, int n, uint32_t vocab, int seq_len,
                    int64_t max_tokens)
{
    if (seq_len < 1)
        gk_die("val: seq_len: expected a positive number, found %d", seq_len);
    int np;
    char **paths = expand(patterns, n, &np);
    /* The first MAX_TOKENS targets need MAX_TOKENS + 1 tokens. */
    int64_t want = max_tokens > 0 ? max_tokens + 1 : INT64_MAX;
    uint16_t *tokens = NULL;
    int64_t have = 0;
    for (int i = 0; i < np && have < want; i++) {
        gk_shard_reader *r = open_checked(paths[i], vocab);
        int64_t c = gk_shard_hdr(r)->tokens;
        /* + 1: never a zero-size allocation */
        tokens = gk_realloc(tokens, (size_t)(have + c + 1) * sizeof *tokens);
        read_all(r, tokens + have);
        gk_shard_close(r);
        have += c;
    }
    if (have > want)
        have = want;
    /* load_validation_tokens: usable = ((n - 1) // seq_len) * seq_len, keep usable + 1. */
    int64_t seqs = have > 0 ? (have - 1) / seq_len : 0;
    if (seqs == 0)
        gk_die("%s: expected at least seq_len + 1 = %lld validation tokens (one sequence), "
               "found %lld%s", patterns[0], (long long)seq_len + 1, (long long)have,
               max_tokens > 0 ? " after the val_tokens limit" : "");
    gk_val *v = gk_calloc(1, sizeof *v);
    v->tokens = tokens;
    v->seqs = seqs;
    v->n = seqs * seq_len + 1;
    v->seq_len = seq_len;
    v->vocab = vocab;
    for (int i = 0; i < np; i++)
        free(paths[i]);
    free(paths);
    return v;
}

void gk_val_free(gk_val *v)
{
    if (!v)
        return;
    free(v->tokens);
    free(v);
}

gk_val_sums gk_val_run(const gk_val *v, gk_val_forward fwd, void *ctx, const gk_tok *tok,
                       int64_t val_batch_tokens, int grad_accum, int rank,
                       int world)
{
    int T = v->seq_len;
    if (world < 1 || rank < 0 || rank >= world || grad_accum < 1)
        gk_die("val: expected 0 <= rank < world and grad_accum >= 1, found rank %d, world %d, "
               "grad_accum %d", rank, world, grad_accum);
    if (tok && tok->vocab != v->vocab)
        gk_die("val: tokenizer vocab: expected %u (the model's), found %u", v->vocab,
               tok->vocab);
    /* eval_val: local_batch_tokens = val_batch_size // (world * grad_accum),
     * whole sequences of it per forward. */
    int64_t local = val_batch_tokens / ((int64_t)world * grad_accum);
    if (local < T)
        gk_die("val: val_batch_tokens: expected at least world %d x grad_accum %d x seq_len "
               "%d = %lld (one sequence per rank), found %lld", world, grad_accum, T,
               (long long)world * grad_accum * T, (long long)val_batch_tokens);
    int64_t per = local / T;
    int64_t s0 = v->seqs * rank / world, s1 = v->seqs * (rank + 1) / world;
    int64_t bmax = per < s1 - s0 ? per : s1 - s0;
    if (bmax * T > INT32_MAX)
        gk_die("val: expected a validation batch of at most %d tokens, found %lld", INT32_MAX,
               (long long)(bmax * T));
    int *x = gk_malloc((size_t)(bmax > 0 ? bmax : 1) * T * sizeof *x);
    int *y = gk_malloc((size_t)(bmax > 0 ? bmax : 1) * T * sizeof *y);
    gk_val_sums s = {0, 0, 0};
    for (int64_t b = s0; b < s1; b += per) {
        int64_t e = b + per < s1 ? b + per : s1;
        int64_t nt = (e - b) * T;
        const uint16_t *src = v->tokens + b * T;
        for (int64_t i = 0; i < nt; i++) {
            x[i] = src[i];
            y[i] = src[i + 1];
        }
        double loss = fwd(ctx, (int)(e - b), T, x, y);
        s.loss_sum += loss * (double)nt;
        s.tokens += (double)nt;
        /* train_gpt.py counts a target's bytes from sentencepiece pieces: the
         * piece's UTF-8 length, plus one for a leading "▁" unless the token
         * before is a boundary, because sentencepiece turns spaces into "▁" and
         * normalizes the text, so pieces are not the raw bytes. Our byte-level
         * BPE never normalizes and has no implicit space: every token decodes
         * to exactly its t->len bytes of the original text, specials (BOS) to
         * none, and the decoded tokens concatenate to the text byte for byte.
         * So the sum of len over the targets is the exact raw byte count of the
         * text they cover, whatever the token before. */
        if (tok) {
            int64_t bytes = 0;
            for (int64_t i = 0; i < nt; i++)
                bytes += tok->len[y[i]];
            s.bytes += (double)bytes;
        }
    }
    free(x);
    free(y);
    return s;
}

/* The CPU model for gk_val_run: one model object per batch shape, kept for the
 * whole pass. */
typedef struct {
    gk_model_cache cache;
    const float *params;
} cpu_ctx;

static double cpu_forward(void *ctx, int B, int T, const int *tokens, const int *targets)
{
    cpu_ctx *c = ctx;
    return gk_model_forward_f32(gk_model_cache_get(&c->cache, B, T), c->params, tokens,
                                targets);
}

gk_val_sums gk_val_run_cpu(const gk_val *v, const gk_layout *l, const float *params,
                           const gk_tok *tok, int64_t val_batch_tokens, int grad_accum,
                           int rank, int world)
{
    if ((uint32_t)l->cfg.model.vocab != v->vocab)
        gk_die("val: model.vocab: expected %u (the vocab the val tokens were checked "
               "against), found %d", v->vocab, l->cfg.model.vocab);
    cpu_ctx c = {{.l = l}, params};
    gk_val_sums s = gk_val_run(v, cpu_forward, &c, tok, val_batch_tokens, grad_accum, rank, world);
    gk_model_cache_free(&c.cache);
    return s;
}

void gk_val_result(const gk_val_sums *s, double *val_loss, double *val_bpb)
{
    /* eval_val's order of operations: loss per token, bits per token, times
     * tokens per byte. */
    *val_loss = s->loss_sum / s->tokens;
    *val_bpb = s->bytes > 0 ? *val_loss / log(2.0) * (s->tokens / s->bytes) : NAN;
}
