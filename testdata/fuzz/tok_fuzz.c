/* tok_fuzz: the tokenizer reader, gk_tok_load (what every tool given -t
 * calls; the tokenizer inside a .pack takes gk_tok_load_mem, the same checks
 * on bytes in memory). Each input is written to a file and loaded twice: as
 * it is, and with its last 8 bytes replaced by the xxh64 of the rest, as
 * tok-train writes them, so that mutations reach the header, merge and
 * special checks behind the checksum instead of stopping there. A tokenizer
 * that loads must then encode the input's own bytes to ordinary ids that
 * decode back to them exactly (a table the reader accepts but the encoder
 * cannot use would be a finding too). */
#include "fuzz.h"
#include "encode.h"
#include "tok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static void round_trip(const gk_tok *t, const uint8_t *text, size_t n)
{
    gk_encoder *e = gk_encoder_new(t);
    gk_ids ids = {0};
    gk_encode_text(e, text, n, &ids);
    size_t at = 0;
    for (size_t i = 0; i < ids.n; i++) {
        uint32_t id = ids.v[i];
        if (id >= gk_tok_bos(t))
            fuzz_fail("id %zu: expected a byte or a merge, found %u (merges end at %u)", i, id,
                      gk_tok_bos(t));
        if (t->len[id] > n - at || memcmp(t->bytes[id], text + at, t->len[id]) != 0)
            fuzz_fail("id %zu (%u): expected the bytes at offset %zu, found others", i, id, at);
        at += t->len[id];
    }
    if (at != n)
        fuzz_fail("expected ids for all %zu bytes, found them for %zu", n, at);
    gk_ids_free(&ids);
    gk_encoder_free(e);
}

static void load(void *arg)
{
    const fuzz_input *in = arg;
    gk_tok *t = gk_tok_load(fuzz_file(in->data, in->size));
    if (t->vocab != 256 + t->n_merges + t->n_special)
        fuzz_fail("expected vocab 256 + %u merges + %u specials, found %u", t->n_merges,
                  t->n_special, t->vocab);
    round_trip(t, in->data, in->size);
    gk_tok_free(t);
}

/* The trailing xxh64 over everything before it, recomputed. */
static void fix_trailer(uint8_t *b, size_t n)
{
    if (n >= 8)
        gk_put64(b + n - 8, XXH64(b, n - 8, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_raw_and_fixed(data, size, fix_trailer, load);
    return 0;
}
