/* tstream_fuzz: the token stream reader, gk_ts_reader_open then gk_ts_read
 * to the end record, as shard reads what tok-encode writes. Each input is
 * written to a file and read twice: as it is, and with every xxh64 it
 * carries recomputed along the blocks it declares (the header's, each
 * block's with its index as seed, the end record's over counts set to what
 * the blocks hold), so that mutations get past the checksums to the framing,
 * ids and counts behind them. What the reader hands out must be ids below
 * the vocabulary, and its totals must be the tokens and BOS ids it handed
 * out. */
#include "fuzz.h"
#include "tstream.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static void reader_close(void *r) { gk_ts_reader_close(r); }

static void read_all(void *arg)
{
    const fuzz_input *in = arg;
    gk_ts_reader *r = gk_ts_reader_open(fuzz_file(in->data, in->size));
    gk_cleanup_push(reader_close, r);
    uint32_t vocab = gk_ts_vocab(r), bos = gk_ts_bos(r);
    uint64_t tokens = 0, docs = 0;
    const uint16_t *tok;
    size_t n;
    while ((n = gk_ts_read(r, &tok))) {
        for (size_t i = 0; i < n; i++) {
            if (tok[i] >= vocab)
                fuzz_fail("token %llu: expected an id below vocab %u, found %u",
                          (unsigned long long)(tokens + i), vocab, tok[i]);
            docs += tok[i] == bos;
        }
        tokens += n;
    }
    if (gk_ts_tokens(r) != tokens || gk_ts_docs(r) != docs)
        fuzz_fail("expected totals of %llu tokens and %llu documents, found %llu and %llu",
                  (unsigned long long)tokens, (unsigned long long)docs,
                  (unsigned long long)gk_ts_tokens(r), (unsigned long long)gk_ts_docs(r));
    gk_cleanup_pop(r);
    gk_ts_reader_close(r);
}

/* Recompute the checksums of B [N] in place, walking the layout of tstream.h
 * as far as it holds together. */
static void fix(uint8_t *b, size_t n)
{
    if (n < 24)
        return;
    gk_put64(b + 16, XXH64(b, 16, 0));
    uint32_t bos = gk_get32(b + 12);
    uint64_t blocks = 0, tokens = 0, docs = 0;
    for (size_t at = 24; at + 4 <= n;) {
        size_t k = gk_get32(b + at);
        if (k == 0) {
            if (at + 32 <= n) {
                gk_put64(b + at + 8, tokens);
                gk_put64(b + at + 16, docs);
                gk_put64(b + at + 24, XXH64(b + at + 8, 16, blocks));
            }
            return;
        }
        if (k > GK_TS_MAX_BLOCK || n - at - 4 < 2 * k + 8)
            return;
        for (const uint8_t *t = b + at + 4; t < b + at + 4 + 2 * k; t += 2)
            docs += (uint32_t)(t[0] | t[1] << 8) == bos;
        gk_put64(b + at + 4 + 2 * k, XXH64(b + at + 4, 2 * k, blocks));
        blocks++;
        tokens += k;
        at += 4 + 2 * k + 8;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_raw_and_fixed(data, size, fix, read_all);
    return 0;
}
