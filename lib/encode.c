/* encode: BPE encoding of pre-tokenized text with a per-encoder piece cache.
 *
 * A piece is merged with a min-heap of candidate pairs keyed by (rank,
 * position) over a linked list of symbols, O(n log n) in the piece length, so a
 * pathological piece (a megabyte without a space) costs no more than it must.
 * Cached pieces skip all of that: the cache maps piece bytes to ids, holds
 * pieces up to CACHE_MAX_PIECE bytes, and is emptied when its arena fills. */
#include "encode.h"
#include "pretok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CACHE_MAX_PIECE 64
#define CACHE_SLOTS (1u << 18)        /* power of two */
#define CACHE_ARENA (48u << 20)       /* bytes of keys and ids before a reset */

void gk_ids_push(gk_ids *ids, uint16_t id)
{
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? 2 * ids->cap : 4096;
        ids->v = gk_realloc(ids->v, ids->cap * sizeof *ids->v);
    }
    ids->v[ids->n++] = id;
}

void gk_ids_free(gk_ids *ids)
{
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

typedef struct {
    uint64_t hash;
    uint32_t off;       /* into the arena: key bytes, then ids */
    uint16_t klen, nids; /* klen 0: empty slot */
} cache_slot;

typedef struct {
    uint32_t rank, pos;
} cand;

struct gk_encoder {
    const gk_tok *t;
    cache_slot *slots;
    size_t used;
    uint8_t *arena;
    size_t arena_len;
    /* scratch for merging one piece */
    uint32_t *sym, *next, *prev;
    cand *heap;
    size_t scratch_cap, nheap;
};

gk_encoder *gk_encoder_new(const gk_tok *t)
{
    gk_encoder *e = gk_calloc(1, sizeof *e);
    e->t = t;
    e->slots = gk_calloc(CACHE_SLOTS, sizeof *e->slots);
    e->arena = gk_malloc(CACHE_ARENA);
    return e;
}

void gk_encoder_free(gk_encoder *e)
{
    if (!e)
        return;
    free(e->slots);
    free(e->arena);
    free(e->sym);
    free(e->next);
    free(e->prev);
    free(e->heap);
    free(e);
}

static inline int cand_less(cand a, cand b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(gk_encoder *e, cand c)
{
    size_t i = e->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(c, e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = c;
}

static cand heap_pop(gk_encoder *e)
{
    cand top = e->heap[0], last = e->heap[--e->nheap];
    size_t i = 0, n = e->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cand_less(e->heap[c + 1], e->heap[c]))
            c++;
        if (!cand_less(e->heap[c], last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

#define NONE UINT32_MAX

static void push_pair(gk_encoder *e, uint32_t i)
{
    uint32_t j = e->next[i];
    if (j == NONE)
        return;
    uint32_t r = gk_tok_merge_rank(e->t, e->sym[i], e->sym[j]);
    if (r != NONE)
        heap_push(e, (cand){r, i});
}

/* Merge one piece; append its ids. */
static void merge_piece(gk_encoder *e, const uint8_t *s, size_t n, gk_ids *out)
{
    if (n > e->scratch_cap) {
        e->scratch_cap = n;
        e->sym = gk_realloc(e->sym, n * sizeof *e->sym);
        e->next = gk_realloc(e->next, n * sizeof *e->next);
        e->prev = gk_realloc(e->prev, n * sizeof *e->prev);
        e->heap = gk_realloc(e->heap, 2 * n * sizeof *e->heap);
    }
    for (uint32_t i = 0; i < n; i++) {
        e->sym[i] = s[i];
        e->next[i] = i + 1 < n ? i + 1 : NONE;
        e->prev[i] = i ? i - 1 : NONE;
    }
    e->nheap = 0;
    for (uint32_t i = 0; i + 1 < n; i++)
        push_pair(e, i);
    /* n - 1 candidates to start, and each of at most n - 1 merges pops one and
     * pushes two: the heap never holds more than 2n entries. */
    while (e->nheap) {
        cand c = heap_pop(e);
        uint32_t i = c.pos, j = e->next[i];
        if (e->sym[i] == NONE || j == NONE ||
            gk_tok_merge_rank(e->t, e->sym[i], e->sym[j]) != c.rank)
            continue; /* stale: the pair changed since it was pushed */
        e->sym[i] = 256 + c.rank;
        e->sym[j] = NONE;
        e->next[i] = e->next[j];
        if (e->next[j] != NONE)
            e->prev[e->next[j]] = i;
        if (e->prev[i] != NONE)
            push_pair(e, e->prev[i]);
        push_pair(e, i);
    }
    for (uint32_t i = 0; i != NONE; i = e->next[i])
        gk_ids_push(out, (uint16_t)e->sym[i]);
}

static void cache_reset(gk_encoder *e)
{
    memset(e->slots, 0, CACHE_SLOTS * sizeof *e->slots);
    e->used = 0;
    e->arena_len = 0;
}

static void encode_piece(gk_encoder *e, const uint8_t *s, size_t n, gk_ids *out)
{
    if (n == 1) {
        gk_ids_push(out, s[0]);
        return;
    }
    if (n > CACHE_MAX_PIECE) {
        merge_piece(e, s, n, out);
        return;
    }
    uint64_t h = XXH3_64bits(s, n);
    size_t i = h & (CACHE_SLOTS - 1);
    for (; e->slots[i].klen; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *c = &e->slots[i];
        if (c->hash == h && c->klen == n && memcmp(e->arena + c->off, s, n) == 0) {
            const uint8_t *p = e->arena + c->off + n;
            for (uint16_t k = 0; k < c->nids; k++)
                gk_ids_push(out, (uint16_t)(p[2 * k] | p[2 * k + 1] << 8));
            return;
        }
    }
    size_t before = out->n;
    merge_piece(e, s, n, out);
    size_t nids = out->n - before, need = n + 2 * nids;
    if (e->used >= CACHE_SLOTS / 2 || e->arena_len + need > CACHE_ARENA) {
        cache_reset(e);
        i = h & (CACHE_SLOTS - 1); /* the table is empty now */
    }
    cache_slot *c = &e->slots[i];
    c->hash = h;
    c->off = (uint32_t)e->arena_len;
    c->klen = (uint16_t)n;
    c->nids = (uint16_t)nids;
    uint8_t *p = e->arena + e->arena_len;
    memcpy(p, s, n);
    for (size_t k = 0; k < nids; k++) {
        p[n + 2 * k] = (uint8_t)out->v[before + k];
        p[n + 2 * k + 1] = (uint8_t)(out->v[before + k] >> 8);
    }
    e->arena_len += need;
    e->used++;
}

void gk_encode_text(gk_encoder *e, const uint8_t *text, size_t n, gk_ids *out)
{
    for (size_t i = 0; i < n;) {
        size_t j = gk_pretok_next(e->t->pretok, text, n, i);
        encode_piece(e, text + i, j - i, out);
        i = j;
    }
}
