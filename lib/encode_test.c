/* encode_test: the encoder, the pre-tokenizer and the corpus reader against
 * hand-checked cases and brute-force references on random inputs.
 *
 * The references are the slow, obvious versions: BPE as "for each merge in rank
 * order, replace its pairs left to right" per piece; safe cuts checked by
 * pre-tokenizing both halves alone; chunked corpus reading checked against the
 * bytes and document starts found in one pass over the whole input. */
#include "corpus.h"
#include "encode.h"
#include "pretok.h"
#include "tap.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static char *bos_name[] = {"<|bos|>"};

static int ids_eq(const gk_ids *ids, const uint16_t *want, size_t n)
{
    return ids->n == n && memcmp(ids->v, want, n * sizeof *want) == 0;
}

static void test_hand_cases(void)
{
    const uint32_t m[][2] = {{'a', 'b'}, {256, 'c'}, {'a', 'a'}, {' ', 'a'}};
    gk_tok *t = gk_tok_new(m, 4, bos_name, 1, GK_PRETOK_WS);
    gk_encoder *e = gk_encoder_new(t);
    gk_ids ids = {0};
    gk_encode_text(e, (const uint8_t *)"abc", 3, &ids);
    ok(ids_eq(&ids, (uint16_t[]){257}, 1), "abc -> one token through two merges");
    ids.n = 0;
    gk_encode_text(e, (const uint8_t *)"aaaaa", 5, &ids);
    ok(ids_eq(&ids, (uint16_t[]){258, 258, 'a'}, 3), "aaaaa -> aa aa a (leftmost first)");
    ids.n = 0;
    gk_encode_text(e, (const uint8_t *)" abab", 5, &ids);
    ok(ids_eq(&ids, (uint16_t[]){' ', 256, 256}, 3), "' abab': (a,b) outranks (' ',a)");
    ids.n = 0;
    gk_encode_text(e, (const uint8_t *)"x aab", 5, &ids);
    ok(ids_eq(&ids, (uint16_t[]){'x', 259, 256}, 3), "'x aab': pieces 'x' and ' aab'");
    ids.n = 0;
    gk_encode_text(e, (const uint8_t *)"abc", 3, &ids); /* now a cache hit */
    ok(ids_eq(&ids, (uint16_t[]){257}, 1), "cached piece gives the same ids");
    gk_ids_free(&ids);
    gk_encoder_free(e);
    gk_tok_free(t);
}

/* Reference: apply merges in rank order, each left to right without overlap. */
static size_t naive_bpe(const gk_tok *t, const uint8_t *s, size_t n, uint32_t *sym)
{
    for (size_t i = 0; i < n; i++)
        sym[i] = s[i];
    for (uint32_t r = 0; r < t->n_merges; r++) {
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && sym[i] == t->merges[r][0] && sym[i + 1] == t->merges[r][1]) {
                sym[w++] = 256 + r;
                i++;
            } else {
                sym[w++] = sym[i];
            }
        }
        n = w;
    }
    return n;
}

/* ALPHABET is a string literal; sizeof - 1 lets it hold NUL bytes. */
#define random_text(s, n, alphabet) random_bytes(s, n, alphabet, sizeof(alphabet) - 1)
static void random_bytes(uint8_t *s, size_t n, const char *alphabet, size_t k)
{
    for (size_t i = 0; i < n; i++)
        s[i] = (uint8_t)alphabet[rnd((uint32_t)k)];
}

static void test_against_naive(void)
{
    int bad = 0;
    for (int trial = 0; trial < 200 && !bad; trial++) {
        /* Random merges over a small alphabet, each from existing ids. */
        uint32_t m[40][2];
        uint32_t nm = 1 + rnd(40);

        for (uint32_t i = 0; i < nm; i++) {
            uint32_t pool = 5 + i;
            for (int side = 0; side < 2; side++) {
                uint32_t x = rnd(pool);
                m[i][side] = x < 5 ? (uint32_t)"ab \n1"[x] : 256 + (x - 5);
            }
        }
        /* The tokenizer rejects nothing here: merges may repeat; keep it so. */
        gk_tok *t = gk_tok_new((const uint32_t(*)[2])m, nm, bos_name, 1, (int)rnd(3));
        gk_encoder *e = gk_encoder_new(t);
        uint8_t s[300];
        uint32_t sym[300];
        for (int k = 0; k < 20 && !bad; k++) {
            size_t n = 1 + rnd(300);
            random_text(s, n, "ab ab\n1");
            gk_ids got = {0};
            gk_encode_text(e, s, n, &got);
            gk_ids want = {0};
            for (size_t i = 0; i < n;) {
                size_t j = gk_pretok_next(t->pretok, s, n, i);
                size_t w = naive_bpe(t, s + i, j - i, sym);
                for (size_t q = 0; q < w; q++)
                    gk_ids_push(&want, (uint16_t)sym[q]);
                i = j;
            }
            bad = got.n != want.n || memcmp(got.v, want.v, got.n * 2) != 0;
            gk_ids_free(&got);
            gk_ids_free(&want);
        }
        gk_encoder_free(e);
        gk_tok_free(t);
    }
    ok(!bad, "heap encoder equals rank-order reference on 4000 random texts");
}

static size_t pieces(int mode, const uint8_t *s, size_t n, size_t *ends)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i = ends[k++])
        ends[k] = gk_pretok_next(mode, s, n, i);
    return k;
}

static int pieces_are(int mode, const char *text, const char *const *want)
{
    size_t n = strlen(text), ends[64];
    size_t k = pieces(mode, (const uint8_t *)text, n, ends);
    size_t start = 0;
    for (size_t i = 0; i < k; i++) {
        if (!want[i] || strlen(want[i]) != ends[i] - start ||
            memcmp(want[i], text + start, ends[i] - start) != 0)
            return 0;
        start = ends[i];
    }
    return want[k] == NULL;
}

static void test_pretok(void)
{
    const char *text = "Hello world  123\n\nfoo.\t";
    ok(pieces_are(GK_PRETOK_WS, text,
                  (const char *const[]){"Hello", " world", " ", " 123", "\n", "\n", "foo", ".",
                                        "\t", NULL}),
       "ws pieces of a hand-checked line");
    ok(pieces_are(GK_PRETOK_DIGITS, "a 123",
                  (const char *const[]){"a", " 1", "2", "3", NULL}),
       "digits mode splits every digit");
    ok(pieces_are(GK_PRETOK_NONE, "one two\nthree",
                  (const char *const[]){"one two\n", "three", NULL}),
       "none mode keeps whole lines");
    ok(pieces_are(GK_PRETOK_WS, "caf\xc3\xa9 \xe6\x97\xa5!",
                  (const char *const[]){"caf\xc3\xa9", " \xe6\x97\xa5", "!", NULL}),
       "UTF-8 bytes count as letters");

    int bad = 0;
    uint8_t s[400];
    size_t whole[400], left[400], right[400];
    for (int trial = 0; trial < 3000 && !bad; trial++) {
        int mode = trial % 3;
        size_t n = 2 + rnd(398);
        random_text(s, n, "ab 1.\n\t  \n");
        size_t cut = gk_pretok_safe_cut(mode, s, n, 1 + rnd((uint32_t)n - 1));
        if (cut == n)
            continue;
        size_t kw = pieces(mode, s, n, whole), kl = pieces(mode, s, cut, left);
        size_t kr = pieces(mode, s + cut, n - cut, right);
        bad = kl + kr != kw;
        for (size_t i = 0; !bad && i < kl; i++)
            bad = left[i] != whole[i];
        for (size_t i = 0; !bad && i < kr; i++)
            bad = right[i] + cut != whole[kl + i];
    }
    ok(!bad, "safe cuts never change the pieces (3000 random texts, all modes)");
}

/* One-pass reference: starts of documents in the whole text under RULE. */
static size_t ref_starts(int rule, const uint8_t *s, size_t n, size_t *st)
{
    size_t k = 0, i = 0;
    st[k++] = 0;
    while (i < n) {
        size_t e = i;
        if (rule == GK_DOC_LINE || rule == GK_DOC_NUL) {
            uint8_t sep = rule == GK_DOC_LINE ? '\n' : 0;
            while (e < n && s[e] != sep)
                e++;
            e = e < n ? e + 1 : n;
        } else if (rule == GK_DOC_BLANK) {
            while (e < n && !(s[e] == '\n' && e + 1 < n && s[e + 1] == '\n'))
                e++;
            while (e < n && s[e] == '\n')
                e++;
        } else {
            e = n;
        }
        if (e < n)
            st[k++] = e;
        i = e;
    }
    return k;
}

static void test_corpus_chunks(void)
{
    size_t n = 60000;
    uint8_t *s = gk_malloc(n);
    random_text(s, n, "abc  de\n\n\n\n\0x");
    char path[] = "/tmp/gk_corpus_testXXXXXX";
    int fd = mkstemp(path);
    ok(fd >= 0 && write(fd, s, n) == (ssize_t)n, "wrote a 60 kB random corpus");
    close(fd);
    size_t *want = gk_malloc(n * sizeof *want);
    for (int rule = 0; rule < GK_DOC_COUNT; rule++) {
        size_t kw = ref_starts(rule, s, n, want);
        gk_corpus_opts o = {.doc_end = rule, .pretok = GK_PRETOK_WS, .chunk = 4096};
        char *paths[] = {path};
        gk_corpus *cp = gk_corpus_open(paths, 1, &o);
        gk_chunk c;
        size_t off = 0, k = 0;
        int bad = 0, chunks = 0;
        while (gk_corpus_next(cp, &c)) {
            chunks++;
            bad |= off + c.len > n || memcmp(s + off, c.bytes, c.len) != 0;
            for (size_t i = 0; i < c.nstarts && !bad; i++)
                bad = k >= kw || want[k++] != off + c.starts[i];
            off += c.len;
        }
        gk_corpus_close(cp);
        ok(!bad && off == n && k == kw, "doc-end %s: %d chunks give back every byte and the "
           "%zu document starts", gk_doc_end_name(rule), chunks, kw);
    }
    unlink(path);
    free(want);
    free(s);
}

int main(void)
{
    test_hand_cases();
    test_against_naive();
    test_pretok();
    test_corpus_chunks();
    return tap_done();
}
