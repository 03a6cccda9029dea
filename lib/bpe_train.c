/* bpe_train: counting pieces on threads, then merges from incrementally kept
 * pair counts. The contract and the tie rule are in bpe_train.h.
 *
 * Data, and why it is shaped so:
 * - Word maps (one per counting thread): open addressing on an xxh3 hash of
 *   the piece bytes, the bytes themselves in an arena. Pieces repeat so much
 *   in text that a map of a few hundred thousand entries holds millions of
 *   pieces.
 * - Words: after sorting, one uint32 symbol array per word in one arena, with
 *   its count. A merge rewrites a word in place (it only gets shorter).
 * - Pairs: a hash map from (left << 32 | right) to a pair record holding the
 *   current count and the list of words that hold (or once held) the pair. The
 *   lists only grow: a word that lost the pair stays listed and visiting it is
 *   a no-op, which is cheaper than deleting from lists.
 * - A max-heap of (count, pair) with lazy invalidation: counts of old pairs
 *   only fall, so an entry whose stored count differs from the current one is
 *   re-pushed with the current count when it reaches the top. Pairs that hold
 *   the new token are the only ones whose counts rise, and they are new pairs,
 *   pushed once the merge that made them is done.
 * - Token bytes in a hash set, to refuse a pair whose bytes some token has. */
#include "bpe_train.h"
#include "pretok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* ---- counting ---------------------------------------------------------- */

typedef struct {
    uint64_t hash, count; /* count 0: empty slot */
    size_t off;           /* the piece's bytes in the arena */
    uint32_t len;
} wslot;

typedef struct {
    wslot *slot;
    size_t cap, n;
    uint8_t *arena;
    size_t alen, acap;
} wmap;

static void wmap_init(wmap *m)
{
    m->cap = 1 << 12;
    m->slot = gk_calloc(m->cap, sizeof *m->slot);
    m->acap = 1 << 16;
    m->arena = gk_malloc(m->acap);
}

static void wmap_free(wmap *m)
{
    free(m->slot);
    free(m->arena);
}

static void wmap_grow(wmap *m)
{
    size_t cap = 2 * m->cap;
    wslot *s = gk_calloc(cap, sizeof *s);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slot[i].count)
            continue;
        size_t j = m->slot[i].hash & (cap - 1);
        while (s[j].count)
            j = (j + 1) & (cap - 1);
        s[j] = m->slot[i];
    }
    free(m->slot);
    m->slot = s;
    m->cap = cap;
}

static void wmap_add(wmap *m, const uint8_t *p, uint32_t len, uint64_t hash, uint64_t count)
{
    size_t i = hash & (m->cap - 1);
    for (; m->slot[i].count; i = (i + 1) & (m->cap - 1)) {
        wslot *s = &m->slot[i];
        if (s->hash == hash && s->len == len && memcmp(m->arena + s->off, p, len) == 0) {
            s->count += count;
            return;
        }
    }
    if (m->alen + len > m->acap) {
        while (m->alen + len > m->acap)
            m->acap *= 2;
        m->arena = gk_realloc(m->arena, m->acap);
    }
    memcpy(m->arena + m->alen, p, len);
    m->slot[i] = (wslot){.hash = hash, .count = count, .off = m->alen, .len = len};
    m->alen += len;
    if (++m->n * 2 > m->cap)
        wmap_grow(m);
}

typedef struct {
    wmap map;
    int pretok;
    uint64_t words;
} counter;

/* Count the pieces of [lo, hi) of the chunk, cutting at every document start. */
static void count_part(const gk_part *p)
{
    counter *k = p->arg;
    const gk_chunk *c = p->c;
    size_t d = 0, hi = c->nstarts; /* bisect for the first start > p->lo */
    while (d < hi) {
        size_t mid = d + (hi - d) / 2;
        if (c->starts[mid] <= p->lo)
            d = mid + 1;
        else
            hi = mid;
    }
    for (size_t pos = p->lo; pos < p->hi;) {
        size_t end = d < c->nstarts && c->starts[d] < p->hi ? c->starts[d++] : p->hi;
        const uint8_t *s = c->bytes + pos;
        size_t n = end - pos;
        for (size_t i = 0; i < n;) {
            size_t e = gk_pretok_next(k->pretok, s, n, i);
            if (e - i > UINT32_MAX)
                gk_die("a piece of %zu bytes: expected at most 4 GiB in one piece (a line "
                       "that long needs --pretok ws)", e - i);
            wmap_add(&k->map, s + i, (uint32_t)(e - i), XXH3_64bits(s + i, e - i), 1);
            k->words++;
            i = e;
        }
        pos = end;
    }
}

/* ---- merging ----------------------------------------------------------- */

/* The key is kept both here and in the hash table's own key array: probing
 * then touches one array instead of a record per probe. */
typedef struct {
    int64_t count;
    uint64_t key;
    uint32_t *w; /* words holding (or once holding) the pair */
    uint32_t n, cap;
    uint32_t last; /* the word appended last, so a word is listed once in a row */
} pairrec;

typedef struct {
    int64_t count;
    uint64_t key;
    uint32_t idx;
} hent;

struct gk_bpe {
    int pretok, threads, prepared;
    gk_bpe_stats st;
    counter *cnt;
    /* words */
    size_t nwords;
    uint32_t *sym, *wlen;
    size_t *woff;
    uint64_t *wcount;
    /* pairs: open addressing, key -> index into pairs */
    uint64_t *pkey;
    uint32_t *pidx;
    size_t pcap, pbits;
    pairrec *pairs;
    size_t npairs, pairs_cap;
    /* heap */
    hent *heap;
    size_t nheap, heap_cap;
    /* tokens: bytes and a set of them */
    uint8_t *tb;
    size_t tblen, tbcap;
    size_t *toff;
    uint32_t *tlen, ntok, tokcap;
    uint32_t *tset; /* token id + 1, 0 empty */
    size_t tsetcap;
    uint8_t *scratch;
    size_t scratch_cap;
};

gk_bpe *gk_bpe_new(int pretok, int threads)
{
    gk_bpe *b = gk_calloc(1, sizeof *b);
    b->pretok = pretok;
    b->threads = threads < 1 ? 1 : threads;
    b->cnt = gk_calloc((size_t)b->threads, sizeof *b->cnt);
    for (int k = 0; k < b->threads; k++) {
        wmap_init(&b->cnt[k].map);
        b->cnt[k].pretok = pretok;
    }
    return b;
}

void gk_bpe_add_chunk(gk_bpe *b, const gk_chunk *c)
{
    gk_chunk_run(c, b->pretok, b->threads, count_part, b->cnt, sizeof *b->cnt);
    b->st.corpus_bytes += c->len;
    b->st.documents += c->nstarts;
}

static inline size_t pair_slot(const gk_bpe *b, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - b->pbits));
}

static void pairs_grow(gk_bpe *b)
{
    size_t oldcap = b->pcap;
    uint64_t *ok = b->pkey;
    uint32_t *oi = b->pidx;
    b->pbits = b->pbits ? b->pbits + 1 : 16;
    b->pcap = (size_t)1 << b->pbits;
    b->pkey = gk_malloc(b->pcap * sizeof *b->pkey);
    b->pidx = gk_malloc(b->pcap * sizeof *b->pidx);
    memset(b->pidx, 0xff, b->pcap * sizeof *b->pidx);
    for (size_t i = 0; i < oldcap; i++) {
        if (oi[i] == UINT32_MAX)
            continue;
        size_t j = pair_slot(b, ok[i]);
        while (b->pidx[j] != UINT32_MAX)
            j = (j + 1) & (b->pcap - 1);
        b->pkey[j] = ok[i];
        b->pidx[j] = oi[i];
    }
    free(ok);
    free(oi);
}

static uint32_t pair_find(const gk_bpe *b, uint64_t key)
{
    for (size_t i = pair_slot(b, key);; i = (i + 1) & (b->pcap - 1))
        if (b->pidx[i] == UINT32_MAX || b->pkey[i] == key)
            return b->pidx[i];
}

static uint32_t pair_get(gk_bpe *b, uint32_t l, uint32_t r)
{
    uint64_t key = (uint64_t)l << 32 | r;
    size_t i = pair_slot(b, key);
    for (; b->pidx[i] != UINT32_MAX; i = (i + 1) & (b->pcap - 1))
        if (b->pkey[i] == key)
            return b->pidx[i];
    if (b->npairs == b->pairs_cap) {
        b->pairs_cap = b->pairs_cap ? 2 * b->pairs_cap : 1 << 16;
        b->pairs = gk_realloc(b->pairs, b->pairs_cap * sizeof *b->pairs);
    }
    uint32_t idx = (uint32_t)b->npairs++;
    b->pairs[idx] = (pairrec){.key = key, .last = UINT32_MAX};
    b->pkey[i] = key;
    b->pidx[i] = idx;
    if (b->npairs * 2 > b->pcap)
        pairs_grow(b);
    return idx;
}

/* Change the count of (l, r) by DELTA for word W; a word gaining the pair is
 * listed under it. */
static void pair_add(gk_bpe *b, uint32_t l, uint32_t r, int64_t delta, uint32_t w)
{
    uint32_t idx = pair_get(b, l, r); /* before taking the address: it may move */
    pairrec *p = &b->pairs[idx];
    p->count += delta;
    if (delta > 0 && p->last != w) {
        if (p->n == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 4;
            p->w = gk_realloc(p->w, p->cap * sizeof *p->w);
        }
        p->w[p->n++] = w;
        p->last = w;
    }
}

/* Heap order: higher count first, then the smaller key, i.e. (left, right). */
static inline int above(const hent *x, const hent *y)
{
    return x->count > y->count || (x->count == y->count && x->key < y->key);
}

static void heap_push(gk_bpe *b, hent e)
{
    if (b->nheap == b->heap_cap) {
        b->heap_cap = b->heap_cap ? 2 * b->heap_cap : 1 << 16;
        b->heap = gk_realloc(b->heap, b->heap_cap * sizeof *b->heap);
    }
    size_t i = b->nheap++;
    while (i > 0 && above(&e, &b->heap[(i - 1) / 2])) {
        b->heap[i] = b->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    b->heap[i] = e;
}

static void heap_pop(gk_bpe *b)
{
    hent e = b->heap[--b->nheap];
    size_t i = 0, n = b->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && above(&b->heap[c + 1], &b->heap[c]))
            c++;
        if (!above(&b->heap[c], &e))
            break;
        b->heap[i] = b->heap[c];
        i = c;
    }
    if (n)
        b->heap[i] = e;
}

static void push_pair(gk_bpe *b, uint32_t idx)
{
    heap_push(b, (hent){.count = b->pairs[idx].count, .key = b->pairs[idx].key, .idx = idx});
}

/* Token id holding bytes P[0..N), or UINT32_MAX. */
static uint32_t token_find(const gk_bpe *b, const uint8_t *p, uint32_t n, uint64_t h)
{
    for (size_t i = h & (b->tsetcap - 1); b->tset[i]; i = (i + 1) & (b->tsetcap - 1)) {
        uint32_t id = b->tset[i] - 1;
        if (b->tlen[id] == n && memcmp(b->tb + b->toff[id], p, n) == 0)
            return id;
    }
    return UINT32_MAX;
}

static void token_add(gk_bpe *b, const uint8_t *p, uint32_t n)
{
    if (b->ntok == b->tokcap) {
        b->tokcap = b->tokcap ? 2 * b->tokcap : 1024;
        b->toff = gk_realloc(b->toff, b->tokcap * sizeof *b->toff);
        b->tlen = gk_realloc(b->tlen, b->tokcap * sizeof *b->tlen);
    }
    if (b->tblen + n > b->tbcap) {
        while (b->tblen + n > b->tbcap)
            b->tbcap = b->tbcap ? 2 * b->tbcap : 1 << 16;
        b->tb = gk_realloc(b->tb, b->tbcap);
    }
    uint32_t id = b->ntok++;
    memcpy(b->tb + b->tblen, p, n);
    b->toff[id] = b->tblen;
    b->tlen[id] = n;
    b->tblen += n;
    if (2 * (size_t)b->ntok > b->tsetcap) { /* rebuild at twice the size */
        b->tsetcap = b->tsetcap ? 2 * b->tsetcap : 1024;
        free(b->tset);
        b->tset = gk_calloc(b->tsetcap, sizeof *b->tset);
        for (uint32_t t = 0; t < b->ntok; t++) {
            size_t i = XXH3_64bits(b->tb + b->toff[t], b->tlen[t]) & (b->tsetcap - 1);
            while (b->tset[i])
                i = (i + 1) & (b->tsetcap - 1);
            b->tset[i] = t + 1;
        }
        return;
    }
    size_t i = XXH3_64bits(p, n) & (b->tsetcap - 1);
    while (b->tset[i])
        i = (i + 1) & (b->tsetcap - 1);
    b->tset[i] = id + 1;
}

static const wmap *sort_map; /* qsort has no context argument */

static int by_bytes(const void *x, const void *y)
{
    const wslot *a = *(wslot *const *)x, *c = *(wslot *const *)y;
    uint32_t n = a->len < c->len ? a->len : c->len;
    int r = memcmp(sort_map->arena + a->off, sort_map->arena + c->off, n);
    if (r)
        return r;
    return (a->len > c->len) - (a->len < c->len);
}

void gk_bpe_prepare(gk_bpe *b)
{
    if (b->prepared)
        return;
    b->prepared = 1;
    wmap *m = &b->cnt[0].map;
    for (int k = 0; k < b->threads; k++) {
        b->st.words += b->cnt[k].words;
        if (k == 0)
            continue;
        const wmap *o = &b->cnt[k].map;
        for (size_t i = 0; i < o->cap; i++)
            if (o->slot[i].count)
                wmap_add(m, o->arena + o->slot[i].off, o->slot[i].len, o->slot[i].hash,
                         o->slot[i].count);
        wmap_free(&b->cnt[k].map);
    }
    /* Words in byte order, so that word numbers do not depend on threads. */
    wslot **ws = gk_malloc(m->n * sizeof *ws);
    size_t n = 0, total = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].count) {
            ws[n++] = &m->slot[i];
            total += m->slot[i].len;
        }
    sort_map = m;
    qsort(ws, n, sizeof *ws, by_bytes);
    if (n > UINT32_MAX)
        gk_die("%zu distinct pieces: expected at most %u", n, UINT32_MAX);
    b->nwords = n;
    b->st.unique_words = n;
    b->sym = gk_malloc(total * sizeof *b->sym);
    b->woff = gk_malloc(n * sizeof *b->woff);
    b->wlen = gk_malloc(n * sizeof *b->wlen);
    b->wcount = gk_malloc(n * sizeof *b->wcount);
    size_t off = 0;
    for (size_t w = 0; w < n; w++) {
        const uint8_t *p = m->arena + ws[w]->off;
        b->woff[w] = off;
        b->wlen[w] = ws[w]->len;
        b->wcount[w] = ws[w]->count;
        for (uint32_t i = 0; i < ws[w]->len; i++)
            b->sym[off + i] = p[i];
        off += ws[w]->len;
    }
    free(ws);
    wmap_free(m);
    free(b->cnt);
    b->cnt = NULL;

    pairs_grow(b);
    for (uint32_t w = 0; w < b->nwords; w++) {
        const uint32_t *s = b->sym + b->woff[w];
        for (uint32_t i = 0; i + 1 < b->wlen[w]; i++)
            pair_add(b, s[i], s[i + 1], (int64_t)b->wcount[w], w);
    }
    for (uint32_t i = 0; i < b->npairs; i++)
        push_pair(b, i);
    for (uint32_t t = 0; t < 256; t++) {
        uint8_t c = (uint8_t)t;
        token_add(b, &c, 1);
    }
}

/* Replace every (l, r) in the words listed under pair IDX by NEW. */
static void merge_pair(gk_bpe *b, uint32_t idx, uint32_t l, uint32_t r, uint32_t new)
{
    /* Keep the list itself: records move when new pairs are added, the list
     * does not, and no new pair is (l, r). */
    uint32_t *list = b->pairs[idx].w, nlist = b->pairs[idx].n;
    for (uint32_t k = 0; k < nlist; k++) {
        uint32_t w = list[k], len = b->wlen[w];
        uint32_t *s = b->sym + b->woff[w];
        int64_t c = (int64_t)b->wcount[w];
        uint32_t i = 0, j = 0;
        /* In place: the output index j never passes the input index i. For an
         * occurrence at i, the previous symbol is the output's last (already
         * merged, so "aaaa" is right) and the next is the input's i + 2. */
        while (i < len) {
            if (i + 1 < len && s[i] == l && s[i + 1] == r) {
                if (j > 0) {
                    pair_add(b, s[j - 1], l, -c, w);
                    pair_add(b, s[j - 1], new, c, w);
                }
                if (i + 2 < len) {
                    pair_add(b, r, s[i + 2], -c, w);
                    pair_add(b, new, s[i + 2], c, w);
                }
                b->pairs[idx].count -= c;
                s[j++] = new;
                i += 2;
            } else {
                s[j++] = s[i++];
            }
        }
        b->wlen[w] = j;
    }
    /* Every occurrence is gone now: merging left to right leaves no (l, r). */
    free(b->pairs[idx].w);
    b->pairs[idx].w = NULL;
    b->pairs[idx].n = b->pairs[idx].cap = 0;
}

int gk_bpe_step(gk_bpe *b, uint64_t min_count, uint32_t pair[2])
{
    gk_bpe_prepare(b);
    while (b->nheap) {
        hent top = b->heap[0];
        int64_t now = b->pairs[top.idx].count;
        if (now != top.count) { /* stale: put it back with its current count */
            heap_pop(b);
            if (now > 0)
                push_pair(b, top.idx);
            continue;
        }
        if ((uint64_t)top.count < min_count)
            return 0;
        heap_pop(b);
        uint32_t l = (uint32_t)(top.key >> 32), r = (uint32_t)top.key;
        uint32_t n = b->tlen[l] + b->tlen[r];
        if (n > b->scratch_cap) {
            b->scratch_cap = 2 * (size_t)n;
            b->scratch = gk_realloc(b->scratch, b->scratch_cap);
        }
        memcpy(b->scratch, b->tb + b->toff[l], b->tlen[l]);
        memcpy(b->scratch + b->tlen[l], b->tb + b->toff[r], b->tlen[r]);
        if (token_find(b, b->scratch, n, XXH3_64bits(b->scratch, n)) != UINT32_MAX) {
            /* A guard, not a path training takes: two adjacent tokens whose
             * outer boundaries were never crossed were segmented exactly as
             * their bytes alone are, so the first time those bytes were made
             * into a token these two would have been merged too. The guard
             * keeps the one-text-one-id invariant for any future change. The
             * pair's counts stay exact; it is never pushed again, since only
             * pairs holding the newest token are pushed after a merge. */
            b->st.skipped++;
            continue;
        }
        uint32_t new = b->ntok;
        token_add(b, b->scratch, n);
        size_t first_new = b->npairs;
        merge_pair(b, top.idx, l, r, new);
        for (size_t i = first_new; i < b->npairs; i++) /* the pairs this merge made */
            if (b->pairs[i].count > 0)
                push_pair(b, (uint32_t)i);
        pair[0] = l;
        pair[1] = r;
        return 1;
    }
    return 0;
}

const gk_bpe_stats *gk_bpe_get_stats(const gk_bpe *b) { return &b->st; }

size_t gk_bpe_nwords(const gk_bpe *b) { return b->nwords; }

const uint32_t *gk_bpe_word(const gk_bpe *b, size_t i, uint32_t *len, uint64_t *count)
{
    *len = b->wlen[i];
    *count = b->wcount[i];
    return b->sym + b->woff[i];
}

int64_t gk_bpe_pair_count(const gk_bpe *b, uint32_t left, uint32_t right)
{
    uint32_t idx = pair_find(b, (uint64_t)left << 32 | right);
    return idx == UINT32_MAX ? 0 : b->pairs[idx].count;
}

int64_t gk_bpe_pair_sum(const gk_bpe *b, int64_t *min)
{
    int64_t sum = 0;
    *min = 0;
    for (size_t i = 0; i < b->npairs; i++) {
        sum += b->pairs[i].count;
        if (b->pairs[i].count < *min)
            *min = b->pairs[i].count;
    }
    return sum;
}

void gk_bpe_free(gk_bpe *b)
{
    if (!b)
        return;
    if (b->cnt) {
        for (int k = 0; k < b->threads; k++)
            wmap_free(&b->cnt[k].map);
        free(b->cnt);
    }
    for (size_t i = 0; i < b->npairs; i++)
        free(b->pairs[i].w);
    free(b->pairs);
    free(b->pkey);
    free(b->pidx);
    free(b->heap);
    free(b->sym);
    free(b->woff);
    free(b->wlen);
    free(b->wcount);
    free(b->tb);
    free(b->toff);
    free(b->tlen);
    free(b->tset);
    free(b->scratch);
    free(b);
}
