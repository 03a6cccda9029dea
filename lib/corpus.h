/* corpus: raw text in, documents out, in chunks a worker pool can share.
 *
 * Inputs are files or standard input ("-"), read in order. Plain text is cut
 * into documents by one of these rules (--doc-end):
 *
 *   blank  a document ends after a blank line: the first run of two or more
 *          newlines closes it and stays with it (the default)
 *   line   every line is a document, its newline included
 *   nul    a document ends after each NUL byte, the NUL included
 *   file   each input file is one document
 *
 * Every input file also ends its last document. Because no byte is dropped or
 * added, concatenating the documents gives back the input bytes exactly.
 *
 * With a JSONL field name, each non-empty input line must be a JSON object whose
 * FIELD is a string; that string is one document (parameter golf's
 * docs_selected.jsonl shape).
 *
 * gk_corpus_next() hands out chunks of about CHUNK bytes. A chunk ends at a
 * document end when there is one; otherwise (a document longer than a chunk) at
 * a pre-tokenizer boundary, so that no piece is split. starts[] lists the
 * offsets in the chunk where a document begins; a chunk whose first byte
 * continues the previous chunk's document has no start at offset 0. */
#ifndef GK_CORPUS_H
#define GK_CORPUS_H

#include <stddef.h>
#include <stdint.h>

enum { GK_DOC_BLANK, GK_DOC_LINE, GK_DOC_NUL, GK_DOC_FILE, GK_DOC_COUNT };

typedef struct {
    int doc_end;            /* GK_DOC_* for plain text */
    const char *jsonl;      /* field name, or NULL for plain text */
    int pretok;             /* GK_PRETOK_* used for cuts inside long documents */
    size_t chunk;           /* target chunk size in bytes */
} gk_corpus_opts;

typedef struct {
    uint8_t *bytes;
    size_t len;
    size_t *starts;
    size_t nstarts;
} gk_chunk;

typedef struct gk_corpus gk_corpus;

/* PATHS may be empty: then standard input is read. */
gk_corpus *gk_corpus_open(char **paths, int npaths, const gk_corpus_opts *opts);
/* Fill *c with the next chunk (owned by the corpus until the next call). Returns 0
 * at the end of all inputs. */
int gk_corpus_next(gk_corpus *cp, gk_chunk *c);
/* Raw input bytes consumed so far, and the total when all inputs are regular
 * files (0 otherwise), for progress meters. */
uint64_t gk_corpus_consumed(const gk_corpus *cp);
uint64_t gk_corpus_total(const gk_corpus *cp);
void gk_corpus_close(gk_corpus *cp);

const char *gk_doc_end_name(int rule);
int gk_doc_end_parse(const char *name);

/* Split [0, c->len) into at most N parts at document starts or safe pre-token
 * cuts, each about len/N bytes; writes N+1 bounds (bounds[0] = 0, bounds[N] =
 * len; empty parts allowed). */
void gk_chunk_split(const gk_chunk *c, int pretok, int n, size_t *bounds);

/* One part of a chunk handed to a worker: [lo, hi) of C, part K of N, and the
 * caller's own state for that part. */
typedef struct {
    const gk_chunk *c;
    int k, n;
    size_t lo, hi;
    void *arg;
} gk_part;

/* Split C as gk_chunk_split does and run FN on every part, part 0 on the
 * calling thread and the others on threads of their own; returns when all are
 * done. Part k's arg is (char *)ARGS + k * STRIDE: an array of per-part states. */
void gk_chunk_run(const gk_chunk *c, int pretok, int n, void (*fn)(const gk_part *),
                  void *args, size_t stride);

#endif
