/* shard_fuzz: the shard reader, gk_shard_open then gk_shard_read to the end,
 * as moe-train's loader, shard --info and shard --cat read .bin shards. Each
 * input is written to a file and read twice: as it is, and with the header's
 * token count set from the file size and, when the golfkit extras marker is
 * there, both xxh64 recomputed (the tokens', then the header's), so that
 * mutations get past the checksums to the vocabulary, BOS and token checks
 * behind them. The reader must hand out exactly the header's count of
 * tokens, each below the vocabulary when the extras give one. */
#include "fuzz.h"
#include "shardfile.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static void reader_close(void *r) { gk_shard_close(r); }

static void read_all(void *arg)
{
    const fuzz_input *in = arg;
    gk_shard_reader *r = gk_shard_open(fuzz_file(in->data, in->size));
    gk_cleanup_push(reader_close, r);
    const gk_shard_header *h = gk_shard_hdr(r);
    uint64_t tokens = 0;
    const uint16_t *tok;
    size_t n;
    while ((n = gk_shard_read(r, &tok))) {
        for (size_t i = 0; h->extras && i < n; i++)
            if (tok[i] >= h->vocab)
                fuzz_fail("token %llu: expected an id below vocab %u, found %u",
                          (unsigned long long)(tokens + i), h->vocab, tok[i]);
        tokens += n;
    }
    if (tokens != h->tokens)
        fuzz_fail("expected the header's %u tokens, found %llu", h->tokens,
                  (unsigned long long)tokens);
    gk_cleanup_pop(r);
    gk_shard_close(r);
}

/* Make the header of B [N] agree with the rest, as shardfile.h lays it out. */
static void fix(uint8_t *b, size_t n)
{
    if (n < GK_SHARD_HEADER_BYTES)
        return;
    size_t body = n - GK_SHARD_HEADER_BYTES;
    gk_put32(b + 8, (uint32_t)(body / 2));
    if (gk_get32(b + 12) != GK_SHARD_EXTRAS)
        return;
    gk_put64(b + 20, XXH64(b + GK_SHARD_HEADER_BYTES, body - body % 2, 0));
    gk_put64(b + 32, XXH64(b, 32, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_raw_and_fixed(data, size, fix, read_all);
    return 0;
}
