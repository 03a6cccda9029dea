/* bpe_train_test: the trainer against hand-checked merges, against a
 * brute-force recount of every pair after every merge (the proof that the
 * incremental bookkeeping is right), and across thread counts.
 *
 * Run from the repository root (as `make test` does): it reads
 * testdata/golden/corpus.txt as its small real text. */
#include "bpe_train.h"
#include "corpus.h"
#include "io.h"
#include "pretok.h"
#include "tap.h"
#include "tok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define CORPUS "testdata/golden/corpus.txt"

/* Train on TEXT as documents starting at STARTS; write up to MAX merges to
 * OUT and return their count. */
static uint32_t train_text(const char *text, const size_t *starts, size_t nstarts, int pretok,
                           uint64_t min_count, uint32_t max, uint32_t (*out)[2])
{
    gk_bpe *b = gk_bpe_new(pretok, 1);
    gk_chunk c = {.bytes = (uint8_t *)text, .len = strlen(text), .starts = (size_t *)starts,
                  .nstarts = nstarts};
    gk_bpe_add_chunk(b, &c);
    uint32_t n = 0;
    while (n < max && gk_bpe_step(b, min_count, out[n]))
        n++;
    gk_bpe_free(b);
    return n;
}

static int same_merges(const uint32_t (*m)[2], uint32_t n, const uint32_t (*want)[2], uint32_t nw)
{
    if (n != nw)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (m[i][0] != want[i][0] || m[i][1] != want[i][1])
            return 0;
    return 1;
}

static void hand_checked(void)
{
    static const size_t start0[] = {0};
    uint32_t m[8][2];

    /* "aaaa": (a,a) occurs 3 times, overlapping; merging left to right gives
     * [256 256], so (256,256) occurs once and (256,a) not at all. */
    gk_bpe *b = gk_bpe_new(GK_PRETOK_NONE, 1);
    gk_chunk c = {.bytes = (uint8_t *)"aaaa", .len = 4, .starts = (size_t *)start0, .nstarts = 1};
    gk_bpe_add_chunk(b, &c);
    gk_bpe_prepare(b);
    ok(gk_bpe_pair_count(b, 'a', 'a') == 3, "aaaa: (a,a) counted 3 times");
    ok(gk_bpe_step(b, 1, m[0]) && m[0][0] == 'a' && m[0][1] == 'a', "aaaa: first merge (a,a)");
    ok(gk_bpe_pair_count(b, 'a', 'a') == 0 && gk_bpe_pair_count(b, 256, 256) == 1 &&
           gk_bpe_pair_count(b, 256, 'a') == 0,
       "aaaa: after it (a,a)=0, (256,256)=1, (256,a)=0");
    ok(gk_bpe_step(b, 1, m[1]) && m[1][0] == 256 && m[1][1] == 256, "aaaa: second merge (256,256)");
    ok(!gk_bpe_step(b, 1, m[2]), "aaaa: then nothing is left to merge");
    gk_bpe_free(b);

    /* Overlaps at odd lengths: "aaa" -> [256 a] twice, "aaaaa" -> [256 256 a];
     * then (256,a) is seen 3 times and wins, leaving only pairs seen once. */
    static const uint32_t want_aaa[][2] = {{'a', 'a'}, {256, 'a'}};
    uint32_t n = train_text("aaa\naaa\naaaaa\n", start0, 1, GK_PRETOK_WS, 2, 8, m);
    ok(same_merges((const uint32_t (*)[2])m, n, want_aaa, 2),
       "aaa aaa aaaaa: (a,a), then (256,a), then nothing seen twice");

    /* Ties: pieces "ab" " ab" " ab" " cd" " cd". (a,b)=3 wins; then (' ',c),
     * (' ',256) and (c,d) all have 2: the smallest (left, right) goes first. */
    static const uint32_t want_tie[][2] = {{'a', 'b'}, {' ', 'c'}, {' ', 256}, {257, 'd'}};
    n = train_text("ab ab ab cd cd", start0, 1, GK_PRETOK_WS, 2, 8, m);
    ok(same_merges((const uint32_t (*)[2])m, n, want_tie, 4),
       "ties: highest count, then smallest (left, right)");

    /* Pieces never cross documents: "ab" + "ab" as two documents has no (b,a). */
    static const size_t two[] = {0, 2};
    b = gk_bpe_new(GK_PRETOK_NONE, 1);
    c = (gk_chunk){.bytes = (uint8_t *)"abab", .len = 4, .starts = (size_t *)two, .nstarts = 2};
    gk_bpe_add_chunk(b, &c);
    gk_bpe_prepare(b);
    ok(gk_bpe_pair_count(b, 'a', 'b') == 2 && gk_bpe_pair_count(b, 'b', 'a') == 0 &&
           gk_bpe_get_stats(b)->documents == 2 && gk_bpe_get_stats(b)->unique_words == 1,
       "documents bound pieces: abab as ab|ab has no (b,a)");
    gk_bpe_free(b);
}

typedef struct {
    uint64_t key;
    int64_t count;
} pc;

static int by_key(const void *x, const void *y)
{
    uint64_t a = ((const pc *)x)->key, b = ((const pc *)y)->key;
    return (a > b) - (a < b);
}

/* Recount every pair from the words and compare with the trainer's counts.
 * Returns the number of disagreements. */
static int recount(const gk_bpe *b)
{
    size_t n = 0, cap = 1024;
    pc *v = gk_malloc(cap * sizeof *v);
    for (size_t w = 0; w < gk_bpe_nwords(b); w++) {
        uint32_t len;
        uint64_t cnt;
        const uint32_t *s = gk_bpe_word(b, w, &len, &cnt);
        for (uint32_t i = 0; i + 1 < len; i++) {
            if (n == cap)
                v = gk_realloc(v, (cap *= 2) * sizeof *v);
            v[n++] = (pc){(uint64_t)s[i] << 32 | s[i + 1], (int64_t)cnt};
        }
    }
    qsort(v, n, sizeof *v, by_key);
    int bad = 0;
    int64_t total = 0, min;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int64_t sum = 0;
        while (j < n && v[j].key == v[i].key)
            sum += v[j++].count;
        total += sum;
        bad += gk_bpe_pair_count(b, (uint32_t)(v[i].key >> 32), (uint32_t)v[i].key) != sum;
        i = j;
    }
    /* Every pair the brute force found agrees; with no negative count, equal
     * sums mean the trainer holds no count the brute force lacks. */
    bad += gk_bpe_pair_sum(b, &min) != total || min < 0;
    free(v);
    return bad;
}

static void incremental_equals_brute_force(const char *text, size_t len)
{
    static const size_t start0[] = {0};
    gk_bpe *b = gk_bpe_new(GK_PRETOK_WS, 1);
    gk_chunk c = {.bytes = (uint8_t *)text, .len = len, .starts = (size_t *)start0, .nstarts = 1};
    gk_bpe_add_chunk(b, &c);
    gk_bpe_prepare(b);
    int bad = recount(b), steps = 0, first_bad = -1;
    uint32_t m[2];
    /* --min-count 1: go on until every piece is one token, through rare pairs
     * and long overlapping runs. */
    while (gk_bpe_step(b, 1, m)) {
        steps++;
        int k = recount(b);
        if (k && first_bad < 0)
            first_bad = steps;
        bad += k;
    }
    ok(bad == 0 && steps > 300,
       "pair counts equal a brute-force recount after each of %d merges (first bad: %d)", steps,
       first_bad);
    int whole = 1;
    for (size_t w = 0; w < gk_bpe_nwords(b); w++) {
        uint32_t wl;
        uint64_t cnt;
        gk_bpe_word(b, w, &wl, &cnt);
        whole &= wl == 1;
    }
    ok(whole, "with --min-count 1 training ends when every piece is a single token");
    gk_bpe_free(b);
}

/* Merges from training on PATH through the corpus reader in small chunks. */
static uint32_t train_file(const char *path, int threads, uint32_t max, uint32_t (*out)[2],
                           gk_bpe_stats *st)
{
    char *paths[] = {(char *)path};
    gk_corpus_opts co = {.doc_end = GK_DOC_BLANK, .pretok = GK_PRETOK_WS, .chunk = 4096};
    gk_corpus *cp = gk_corpus_open(paths, 1, &co);
    gk_bpe *b = gk_bpe_new(GK_PRETOK_WS, threads);
    gk_chunk c;
    while (gk_corpus_next(cp, &c))
        gk_bpe_add_chunk(b, &c);
    gk_corpus_close(cp);
    uint32_t n = 0;
    while (n < max && gk_bpe_step(b, 1, out[n]))
        n++;
    *st = *gk_bpe_get_stats(b);
    gk_bpe_free(b);
    return n;
}

static void threads_agree(const char *path)
{
    enum { MAX = 2000 };
    uint32_t(*m1)[2] = gk_malloc(MAX * sizeof *m1), (*m2)[2] = gk_malloc(MAX * sizeof *m2),
    (*m7)[2] = gk_malloc(MAX * sizeof *m7);
    gk_bpe_stats s1, s2, s7;
    uint32_t n1 = train_file(path, 1, MAX, m1, &s1);
    uint32_t n2 = train_file(path, 2, MAX, m2, &s2);
    uint32_t n7 = train_file(path, 7, MAX, m7, &s7);
    ok(n1 > 0 && same_merges((const uint32_t (*)[2])m1, n1, (const uint32_t (*)[2])m2, n2) &&
           same_merges((const uint32_t (*)[2])m1, n1, (const uint32_t (*)[2])m7, n7),
       "1, 2 and 7 threads learn the same %u merges", n1);
    ok(s1.words == s2.words && s1.words == s7.words && s1.unique_words == s2.unique_words &&
           s1.unique_words == s7.unique_words && s1.documents == s7.documents,
       "and count the same pieces (%llu, %llu unique) and documents (%llu)",
       (unsigned long long)s1.words, (unsigned long long)s1.unique_words,
       (unsigned long long)s1.documents);

    /* Every id has bytes of its own (what the Hugging Face export needs). */
    char *bos[] = {"<|bos|>"};
    gk_tok *t = gk_tok_new((const uint32_t (*)[2])m1, n1, bos, 1, GK_PRETOK_WS);
    int dup = 0;
    for (uint32_t i = 256; i < 256 + n1; i++)
        for (uint32_t j = 0; j < i; j++)
            dup += t->len[i] == t->len[j] && memcmp(t->bytes[i], t->bytes[j], t->len[i]) == 0;
    ok(dup == 0 && s1.skipped == 0, "no two ids share their bytes (%d), no pair skipped (%llu)",
       dup, (unsigned long long)s1.skipped);
    gk_tok_free(t);
    free(m1);
    free(m2);
    free(m7);
}

int main(void)
{
    gk_set_prog("bpe_train_test");
    hand_checked();
    size_t len;
    char *text = (char *)gk_read_file(CORPUS, &len);
    incremental_equals_brute_force(text, len);
    free(text);
    threads_agree(CORPUS);
    return tap_done();
}
