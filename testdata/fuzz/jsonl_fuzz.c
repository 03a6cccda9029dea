/* jsonl_fuzz: the corpus reader of tok-train and tok-encode (lib/corpus:
 * gk_corpus_open, gk_corpus_next to the end), in its JSONL mode (--jsonl
 * text: each non-empty line a JSON object whose "text" is a document) and in
 * its four plain-text modes (--doc-end blank, line, nul, file). Each input is
 * written to a file and read once per mode, in chunks of the smallest size
 * the reader allows (4096 bytes), so that documents and lines straddle
 * chunk ends, and with a pre-tokenizer for the cuts inside long documents
 * that changes with the mode (none, ws, digits, none). Every chunk's
 * document starts must lie inside it in order (JSONL: empty documents share
 * an offset); in the plain modes the chunks together must be the input byte
 * for byte (corpus.h: no byte is dropped or added), with a document starting
 * at offset 0. */
#include "fuzz.h"
#include "corpus.h"
#include "pretok.h"
#include "util.h"

#include <string.h>

typedef struct {
    fuzz_input in;
    const char *jsonl; /* field name, or NULL for plain text */
    int doc_end;
} job;

static void corpus_close(void *cp) { gk_corpus_close(cp); }

static void read_all(void *arg)
{
    const job *j = arg;
    char *path = (char *)fuzz_file(j->in.data, j->in.size);
    gk_corpus_opts o = {.doc_end = j->doc_end, .jsonl = j->jsonl,
                        .pretok = j->doc_end % GK_PRETOK_COUNT, .chunk = 4096};
    gk_corpus *cp = gk_corpus_open(&path, 1, &o);
    gk_cleanup_push(corpus_close, cp);
    gk_chunk c;
    size_t at = 0, docs = 0;
    while (gk_corpus_next(cp, &c)) {
        for (size_t i = 0; i < c.nstarts; i++)
            if (j->jsonl ? c.starts[i] > c.len || (i && c.starts[i] < c.starts[i - 1])
                         : c.starts[i] >= c.len || (i && c.starts[i] <= c.starts[i - 1]))
                fuzz_fail("chunk at %zu: expected document starts inside it in order, found %zu "
                          "(start %zu of %zu, chunk of %zu bytes)", at, c.starts[i], i,
                          c.nstarts, c.len);
        docs += c.nstarts;
        if (!j->jsonl) {
            if (c.len == 0 || c.len > j->in.size - at ||
                memcmp(c.bytes, j->in.data + at, c.len) != 0)
                fuzz_fail("chunk at %zu: expected the next %zu input bytes, found others", at,
                          c.len);
            if (at == 0 && (c.nstarts == 0 || c.starts[0] != 0))
                fuzz_fail("expected a document to start at offset 0, found none");
        }
        at += c.len;
    }
    if (!j->jsonl && at != j->in.size)
        fuzz_fail("expected chunks of all %zu input bytes, found %zu", j->in.size, at);
    if (docs > j->in.size)
        fuzz_fail("expected at most one document a byte, found %zu in %zu", docs, j->in.size);
    gk_cleanup_pop(cp);
    gk_corpus_close(cp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    job j = {{data, size}, "text", GK_DOC_BLANK};
    fuzz_try(read_all, &j);
    j.jsonl = NULL;
    for (j.doc_end = 0; j.doc_end < GK_DOC_COUNT; j.doc_end++)
        fuzz_try(read_all, &j);
    return 0;
}
