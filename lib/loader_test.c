/* loader_test: the training loader and the validation pass against a direct
 * reimplementation of openai/parameter-golf train_gpt.py's TokenStream,
 * DistributedTokenLoader and eval_val, on small shards written to a scratch
 * directory (golfkit shards with extras and plain published-style ones mixed,
 * an empty one among them); then the rank split, checkpoint position restore,
 * val_loss / val_bpb of a uniform and of a real tiny model, and the error
 * messages of bad inputs. */
#include "loader.h"
#include "shardfile.h"
#include "tap.h"
#include "util.h"

#include <xxhash.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

static char dir[256];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* A shard of N tokens: with golfkit extras naming VOCAB, or plain (as the
 * published fineweb10B_sp1024 shards) when VOCAB is 0. */
static void write_shard(const char *name, const uint16_t *tok, uint32_t n, uint32_t vocab)
{
    unsigned char hdr[GK_SHARD_HEADER_BYTES];
    unsigned char *body = malloc(2 * (size_t)n + 1);
    for (uint32_t i = 0; i < n; i++)
        body[2 * i] = (unsigned char)tok[i], body[2 * i + 1] = (unsigned char)(tok[i] >> 8);
    if (vocab) {
        gk_shard_header h = {.tokens = n, .vocab = vocab, .bos = GK_SHARD_NO_BOS,
                             .checksum = XXH64(body, 2 * (size_t)n, 0)};
        gk_shard_header_encode(&h, hdr);
    } else {
        memset(hdr, 0, sizeof hdr);
        gk_put32(hdr, GK_SHARD_MAGIC), gk_put32(hdr + 4, 1), gk_put32(hdr + 8, n);
    }
    char p[512];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    fwrite(hdr, 1, sizeof hdr, f);
    fwrite(body, 1, 2 * (size_t)n, f);
    fclose(f);
    free(body);
}

static void random_tokens(uint16_t *t, int n, int vocab)
{
    for (int i = 0; i < n; i++)
        t[i] = (uint16_t)(tap_uniform() * vocab);
}

/* ---- train_gpt.py's loader, written out directly ---- */

typedef struct {
    int nf;
    const uint16_t *const *file; /* the shards in sorted order */
    const int64_t *len;
    int idx;
    int64_t pos;
} ref_stream;

/* TokenStream.take */
static void ref_take(ref_stream *s, int64_t n, uint16_t *out)
{
    int64_t got = 0;
    while (got < n) {
        int64_t avail = s->len[s->idx] - s->pos;
        if (avail <= 0) {
            s->idx = (s->idx + 1) % s->nf;
            s->pos = 0;
            continue;
        }
        int64_t k = n - got < avail ? n - got : avail;
        memcpy(out + got, s->file[s->idx] + s->pos, (size_t)k * 2);
        s->pos += k;
        got += k;
    }
}

/* DistributedTokenLoader.next_batch: x, y hold local tokens; returns local. */
static int64_t ref_next(ref_stream *s, int64_t G, int A, int rank, int world, int *x, int *y)
{
    int64_t local = G / (world * A), span = local + 1;
    uint16_t *chunk = malloc((size_t)(span * world) * 2);
    ref_take(s, span * world, chunk);
    for (int64_t i = 0; i < local; i++)
        x[i] = chunk[rank * span + i], y[i] = chunk[rank * span + i + 1];
    free(chunk);
    return local;
}

/* Train shards: sorted they are a (50, plain), b (37, extras), c (0), d (23). */
enum { V = 64 };
static uint16_t sa[50], sb[37], sd[23];
static const uint16_t *const ref_files[] = {sa, sb, NULL, sd};
static const int64_t ref_len[] = {50, 37, 0, 23};

static void make_train(void)
{
    random_tokens(sa, 50, V), random_tokens(sb, 37, V), random_tokens(sd, 23, V);
    write_shard("tr_b.bin", sb, 37, V);
    write_shard("tr_d.bin", sd, 23, V);
    write_shard("tr_a.bin", sa, 50, 0);
    write_shard("tr_c.bin", NULL, 0, 0);
}

static gk_loader *open_train(int rank, int world)
{
    char p[512];
    path_of(p, sizeof p, "tr_*.bin");
    const char *pat[] = {p};
    return gk_loader_open(pat, 1, V, rank, world);
}

static void test_batches(void)
{
    /* global tokens, seq_len, grad_accum, world: spans inside a shard, across
     * shards and the empty one, and longer than the whole set (300 > 110). */
    static const struct { int64_t G; int T, A, W; } cases[] = {
        {24, 4, 2, 1}, {16, 4, 1, 2}, {60, 5, 3, 2}, {96, 8, 1, 1}, {300, 10, 1, 1}, {90, 3, 1, 3},
    };
    gk_loader *l0 = open_train(0, 1);
    ok(gk_loader_shards(l0) == 4 && strstr(gk_loader_shard_path(l0, 0), "tr_a.bin") &&
       strstr(gk_loader_shard_path(l0, 3), "tr_d.bin") && gk_loader_shard_tokens(l0, 1) == 37,
       "shards sorted by name with their counts");
    gk_loader_close(l0);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (int r = 0; r < cases[c].W; r++) {
            gk_loader *ld = open_train(r, cases[c].W);
            ref_stream s = {4, ref_files, ref_len, 0, 0};
            int *x = malloc(400 * sizeof *x), *y = malloc(400 * sizeof *y);
            int same = 1;
            for (int step = 0; step < 25; step++) {
                int64_t n = ref_next(&s, cases[c].G, cases[c].A, r, cases[c].W, x, y);
                gk_batch b = gk_loader_next(ld, cases[c].G, cases[c].T, cases[c].A);
                same &= b.T == cases[c].T && (int64_t)b.B * b.T == n &&
                        memcmp(b.tokens, x, n * sizeof *x) == 0 &&
                        memcmp(b.targets, y, n * sizeof *y) == 0;
            }
            gk_loader_pos p = gk_loader_tell(ld);
            ok(same && p.shard == s.idx && p.offset == s.pos,
               "G %lld T %d accum %d rank %d/%d: 25 batches as train_gpt.py, same position",
               (long long)cases[c].G, cases[c].T, cases[c].A, r, cases[c].W);
            free(x), free(y);
            gk_loader_close(ld);
        }
    }
}

/* With seq_len 1 and grad_accum 1, world 2 at G = 2k takes spans of k + 1 and
 * world 1 at G = 2k + 1 one span of 2k + 2: the two ranks' spans, in rank
 * order, must be that span. */
static void test_rank_union(void)
{
    enum { K = 20 };
    gk_loader *r0 = open_train(0, 2), *r1 = open_train(1, 2), *w1 = open_train(0, 1);
    int same = 1;
    for (int step = 0; step < 12; step++) {
        gk_batch a = gk_loader_next(r0, 2 * K, 1, 1), b = gk_loader_next(r1, 2 * K, 1, 1);
        gk_batch w = gk_loader_next(w1, 2 * K + 1, 1, 1);
        same &= a.B == K && b.B == K && w.B == 2 * K + 1;
        for (int i = 0; i < K; i++)
            same &= a.tokens[i] == w.tokens[i] && b.tokens[i] == w.tokens[K + 1 + i];
        same &= a.targets[K - 1] == w.tokens[K] && b.targets[K - 1] == w.targets[2 * K];
    }
    ok(same, "two ranks' spans together are the world-1 chunk, 12 steps");
    gk_loader_close(r0), gk_loader_close(r1), gk_loader_close(w1);
}

static void test_resume(void)
{
    gk_loader *a = open_train(1, 2);
    for (int i = 0; i < 7; i++)
        gk_loader_next(a, 24, 4, 1);
    gk_loader_pos p = gk_loader_tell(a);
    int want[9][12];
    for (int i = 0; i < 9; i++)
        memcpy(want[i], gk_loader_next(a, 24, 4, 1).tokens, sizeof want[i]);
    gk_loader *b = open_train(1, 2);
    gk_loader_seek(b, p, "test");
    int same = 1;
    for (int i = 0; i < 9; i++)
        same &= memcmp(want[i], gk_loader_next(b, 24, 4, 1).tokens, sizeof want[i]) == 0;
    ok(same, "seek to a saved position (shard %lld, offset %lld) continues identically",
       (long long)p.shard, (long long)p.offset);
    /* A position at a shard's very end (TokenStream keeps pos == len there). */
    gk_loader_seek(b, (gk_loader_pos){0, 50}, "test");
    ref_stream s = {4, ref_files, ref_len, 0, 50};
    int x[12], y[12];
    ref_next(&s, 24, 1, 1, 2, x, y);
    ok(memcmp(gk_loader_next(b, 24, 4, 1).tokens, x, sizeof x) == 0,
       "a position at the end of a shard goes on into the next");
    gk_loader_close(a), gk_loader_close(b);
}

/* ---- validation ---- */

enum { VV = 260, VT = 8 }; /* the test tokenizer's vocab: 256 bytes, 3 merges, BOS */
static uint16_t val0[30], val1[21];

static gk_tok *test_tok(void)
{
    static const uint32_t m[][2] = {{'a', 'b'}, {256, 'c'}, {' ', 'a'}};
    char *bos[] = {"<bos>"};
    return gk_tok_new(m, 3, bos, 1, 0);
}

static gk_val *load_val(int64_t max_tokens)
{
    char p[512];
    path_of(p, sizeof p, "va_*.bin");
    const char *pat[] = {p};
    return gk_val_load(pat, 1, VV, VT, max_tokens);
}

/* A "model" that predicts uniformly, and records what it was asked. */
typedef struct {
    const gk_val *v;
    int calls, bad, maxB;
    int64_t next; /* the first token the next batch should start at */
} rec_ctx;

static double uniform_forward(void *ctx, int B, int T, const int *x, const int *y)
{
    rec_ctx *c = ctx;
    for (int64_t i = 0; i < (int64_t)B * T; i++)
        c->bad += x[i] != c->v->tokens[c->next + i] || y[i] != c->v->tokens[c->next + i + 1];
    c->next += (int64_t)B * T;
    c->maxB = B > c->maxB ? B : c->maxB;
    c->calls++;
    return log((double)VV);
}

static void test_val(void)
{
    random_tokens(val0, 30, VV), random_tokens(val1, 21, VV);
    val0[0] = val1[3] = val1[20] = VV - 1; /* BOS: no bytes */
    write_shard("va_000.bin", val0, 30, VV);
    write_shard("va_001.bin", val1, 21, 0);
    gk_tok *tok = test_tok();
    gk_val *v = load_val(0);
    int ok_tokens = v->n == 49 && v->seqs == 6;
    for (int i = 0; i < 49; i++)
        ok_tokens &= v->tokens[i] == (i < 30 ? val0[i] : val1[i - 30]);
    ok(ok_tokens, "val tokens: both shards, cut to 6 x 8 + 1 = 49");

    double bytes = 0;
    for (int i = 1; i < 49; i++)
        bytes += tok->len[v->tokens[i]];
    double lnv = log((double)VV), loss, bpb;

    rec_ctx c = {v, 0, 0, 0, 0};
    gk_val_sums s = gk_val_run(v, uniform_forward, &c, tok, 20, 1, 0, 1);
    gk_val_result(&s, &loss, &bpb);
    ok(c.calls == 3 && c.maxB == 2 && c.bad == 0 && c.next == 48,
       "world 1: 3 batches of 2 sequences, contiguous and in order");
    ok(s.tokens == 48 && s.bytes == bytes && fabs(loss - lnv) < 1e-12 &&
       fabs(bpb - lnv / log(2.0) * 48 / bytes) < 1e-12,
       "uniform model: val_loss %.6f = ln %d, val_bpb %.6f = ln V / ln 2 x tokens / bytes",
       loss, VV, bpb);

    /* Two ranks, val_batch_tokens 40 / (2 x 2 accum) = 10: one sequence a batch. */
    rec_ctx c0 = {v, 0, 0, 0, 0}, c1 = {v, 0, 0, 0, 3 * VT};
    gk_val_sums a = gk_val_run(v, uniform_forward, &c0, tok, 40, 2, 0, 2);
    gk_val_sums b = gk_val_run(v, uniform_forward, &c1, tok, 40, 2, 1, 2);
    gk_val_sums sum = {a.loss_sum + b.loss_sum, a.tokens + b.tokens, a.bytes + b.bytes};
    double loss2, bpb2;
    gk_val_result(&sum, &loss2, &bpb2);
    ok(c0.calls == 3 && c1.calls == 3 && c0.maxB == 1 && !c0.bad && !c1.bad &&
       c0.next == 3 * VT && c1.next == 6 * VT && sum.bytes == bytes &&
       fabs(loss2 - loss) < 1e-12 && fabs(bpb2 - bpb) < 1e-12,
       "two ranks split the sequences 3 + 3; summed, the same val_loss and val_bpb");

    rec_ctx c2 = {v, 0, 0, 0, 0};
    s = gk_val_run(v, uniform_forward, &c2, NULL, 20, 1, 0, 1);
    gk_val_result(&s, &loss, &bpb);
    ok(isnan(bpb) && fabs(loss - lnv) < 1e-12, "no tokenizer: val_bpb is NaN");
    gk_val_free(v);

    v = load_val(17);
    ok(v->seqs == 2 && v->n == 17, "val_tokens 17: 2 sequences of 8");
    gk_val_free(v);

    /* A real tiny model: the pass equals one sequence at a time, summed. */
    gk_config cfg;
    gk_config_defaults(&cfg);
    cfg.model.vocab = VV, cfg.model.n_layer = 2, cfg.model.d_model = 16;
    cfg.model.n_head = 2, cfg.model.n_kv_head = 1, cfg.model.seq_len = VT;
    cfg.train.grad_accum = 1, cfg.train.batch_tokens = 2 * VT, cfg.train.val_batch_tokens = 4 * VT;
    gk_config_check(&cfg, "loader_test");
    gk_layout l;
    gk_layout_init(&l, &cfg);
    float *w = calloc(l.numel, sizeof *w);
    v = load_val(0);
    s = gk_val_run_cpu(v, &l, w, tok, 4 * VT, 1, 0, 1);
    gk_val_result(&s, &loss, &bpb);
    ok(fabs(loss - lnv) < 1e-5 && fabs(bpb - lnv / log(2.0) * 48 / bytes) < 1e-5,
       "all-zero model: val_loss %.6f ~ ln V, val_bpb %.6f", loss, bpb);

    gk_model_init_params(&l, w, 7);
    s = gk_val_run_cpu(v, &l, w, tok, 4 * VT, 1, 0, 1);
    gk_val_result(&s, &loss, &bpb);
    gk_model_f32 *m = gk_model_new_f32(&l, 1, VT);
    double direct = 0;
    int x[VT], y[VT];
    for (int q = 0; q < 6; q++) {
        for (int i = 0; i < VT; i++)
            x[i] = v->tokens[q * VT + i], y[i] = v->tokens[q * VT + i + 1];
        direct += gk_model_forward_f32(m, w, x, y) * VT;
    }
    direct /= 48;
    ok(fabs(loss - direct) < 1e-5 * direct &&
       fabs(bpb - direct / log(2.0) * 48 / bytes) < 1e-5 * bpb,
       "seeded model: val_loss %.6f = %.6f one sequence at a time", loss, direct);
    gk_model_free_f32(m);
    gk_val_free(v);
    free(w);
    gk_layout_free(&l);
    gk_tok_free(tok);
}

/* ---- errors ---- */

static void die_no_match(const char *arg)
{
    (void)arg;
    char p[512];
    path_of(p, sizeof p, "none_*.bin");
    const char *pat[] = {p};
    gk_loader_open(pat, 1, V, 0, 1);
}

static void die_open(const char *pattern)
{
    char p[512];
    path_of(p, sizeof p, pattern);
    const char *pat[] = {p};
    gk_loader_next(gk_loader_open(pat, 1, V, 0, 1), 8, 4, 1);
}

static void die_short_val(const char *arg)
{
    (void)arg;
    char p[512];
    path_of(p, sizeof p, "sh_*.bin");
    const char *pat[] = {p};
    gk_val_load(pat, 1, V, 8, 0);
}

static void die_batch(const char *arg)
{
    (void)arg;
    gk_loader_next(open_train(0, 1), 10, 4, 1);
}

static void die_seek(const char *arg)
{
    (void)arg;
    gk_loader_seek(open_train(0, 1), (gk_loader_pos){1, 38}, "ck.st: field golfkit.loader");
}

/* A dying call leaves its allocations behind on purpose: the child stops
 * tracking them, so the leak checker at its exit stays quiet. */
static void (*child_fn)(const char *);
static void in_child(const char *arg)
{
#ifdef __SANITIZE_ADDRESS__
    __lsan_disable();
#endif
    child_fn(arg);
}

static void expect(void (*fn)(const char *), const char *arg, const char *want, const char *what)
{
    char err[1024];
    child_fn = fn;
    int rc = tap_child(in_child, arg, err, sizeof err);
    ok(rc == 1 && strstr(err, want) && !strchr(err, '\n'), "%s: exit 1, one line", what);
    if (rc != 1 || !strstr(err, want))
        printf("#   rc %d, message: %s\n#   wanted: %s\n", rc, err, want);
}

static void test_errors(void)
{
    uint16_t t[8] = {1, 2, 3, 4, 5, 70, 6, 7};
    write_shard("big_000.bin", t, 8, 0);   /* plain: 70 found when read */
    t[5] = 5;
    write_shard("voc_000.bin", t, 8, 100); /* extras disagree */
    write_shard("sh_000.bin", t, 8, 0);
    char want[600];
    path_of(want, sizeof want, "none_*.bin: expected shard files matching it, found none");
    expect(die_no_match, NULL, want, "no shard matches");
    snprintf(want, sizeof want, "%s/big_000.bin: offset %u: expected a token id below vocab "
             "%d, found 70", dir, GK_SHARD_HEADER_BYTES + 10, V);
    expect(die_open, "big_*.bin", want, "a token >= vocab in a published-style shard");
    snprintf(want, sizeof want, "%s/voc_000.bin: offset 16: expected vocab %d (the model's), "
             "found 100", dir, V);
    expect(die_open, "voc_*.bin", want, "shard extras name another vocab");
    expect(die_short_val, NULL, "expected at least seq_len + 1 = 9 validation tokens (one "
           "sequence), found 8", "val set shorter than one sequence");
    expect(die_batch, NULL, "expected global_tokens 10 / (world 1 x grad_accum 1) = 10 to be "
           "a positive multiple of seq_len 4", "a batch of partial sequences");
    expect(die_seek, NULL, "ck.st: field golfkit.loader: offset: expected 0..37", "a position past a shard");
}

int main(void)
{
    gk_set_prog("loader_test");
    snprintf(dir, sizeof dir, "%s/gk_loader_test.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    tap_seed(42);
    make_train();
    test_batches();
    test_rank_union();
    test_resume();
    test_errors(); /* before test_val starts OpenMP threads: fork keeps only one */
    test_val();
    tap_remove_dir(dir);
    return tap_done();
}
