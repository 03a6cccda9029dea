/* tok-encode: text -> token stream with a .tok tokenizer, and back (-d).
 *
 * Encoding reads the inputs as documents (lib/corpus.h), cuts each chunk into
 * one part per thread at document starts or pre-tokenizer boundaries, encodes
 * the parts in parallel, and writes them in input order, BOS before every
 * document. The output is a token stream (man5/tstream.5) or, with --ids, one
 * JSON array of ids per document for other programs to compare against.
 * Decoding writes each token's bytes; BOS and other specials give none, so
 * decode(encode(x)) = x for any bytes x. */
#include "corpus.h"
#include "encode.h"
#include "io.h"
#include "jsonl.h"
#include "progress.h"
#include "tok.h"
#include "tstream.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    printf("usage: tok-encode -t TOK [options] [FILE...]   text -> token stream\n"
           "       tok-encode -d -t TOK [options] [STREAM]  token stream -> text\n"
           "\n"
           "  -t, --tokenizer FILE  the .tok file from tok-train (required)\n"
           "  -o, --output FILE     output file (default: standard output)\n"
           "  -d, --decode          decode a token stream back to bytes\n"
           "      --jsonl FIELD     inputs are JSON lines; FIELD of each is a document\n"
           "      --doc-end RULE    plain-text documents end: blank (default), line, nul, file\n"
           "      --ids             write one JSON array of ids per document (no BOS)\n"
           "      --threads N       encoding threads (default: number of CPUs)\n"
           "      --stats           print a JSON line of statistics on stderr\n"
           "      --progress        show progress even when stderr is not a terminal\n"
           "  -q, --quiet           no progress\n"
           "  -h, --help            this help\n"
           "\n"
           "With no FILE, or FILE -, standard input is read. See tok-encode(1).\n");
    exit(0);
}

/* What one encoding thread owns. */
typedef struct {
    const gk_tok *t;
    gk_encoder *enc;
    gk_ids ids;
} part;

/* Encode [lo, hi) of the chunk, a BOS at each document start inside it. A part
 * owns the starts in [lo, hi); the last part also owns those at the chunk's end
 * (empty documents, as an empty JSONL text makes). */
static void encode_part(const gk_part *gp)
{
    part *p = gp->arg;
    const gk_chunk *c = gp->c;
    int last = gp->k == gp->n - 1;
    uint16_t bos = (uint16_t)gk_tok_bos(p->t);
    size_t d = 0, pos = gp->lo;
    p->ids.n = 0;
    while (d < c->nstarts && c->starts[d] < gp->lo)
        d++;
    for (;;) {
        while (d < c->nstarts && c->starts[d] == pos && (pos < gp->hi || last)) {
            gk_ids_push(&p->ids, bos);
            d++;
        }
        if (pos >= gp->hi)
            break;
        size_t end = d < c->nstarts && c->starts[d] < gp->hi ? c->starts[d] : gp->hi;
        gk_encode_text(p->enc, c->bytes + pos, end - pos, &p->ids);
        pos = end;
    }
}

typedef struct {
    uint64_t bytes, tokens, docs;
} totals;

/* --ids output: a document's ids may arrive across parts and chunks, so they
 * gather in DOC until the next BOS or the end. */
typedef struct {
    gk_ids doc;
    int open;
} json_docs;

static void json_docs_flush(json_docs *jd, gk_out *out)
{
    if (!jd->open)
        return;
    jv a = jv_array();
    for (size_t i = 0; i < jd->doc.n; i++)
        a = jv_array_append(a, jv_number(jd->doc.v[i]));
    jv s = jv_dump_string(a, 0);
    gk_out_write(out, jv_string_value(s), (size_t)jv_string_length_bytes(jv_copy(s)));
    gk_out_write(out, "\n", 1);
    jv_free(s);
    jd->doc.n = 0;
}

static void json_docs_feed(json_docs *jd, gk_out *out, const gk_ids *ids, uint16_t bos)
{
    for (size_t i = 0; i < ids->n; i++) {
        if (ids->v[i] == bos) {
            json_docs_flush(jd, out);
            jd->open = 1;
        } else {
            gk_ids_push(&jd->doc, ids->v[i]);
        }
    }
}

static void encode_main(const gk_tok *t, gk_corpus *cp, gk_out *out, int threads, int ids_json,
                        totals *tot)
{
    gk_ts_writer *w = ids_json ? NULL : gk_ts_writer_new(out, t->vocab, gk_tok_bos(t));
    part *parts = gk_calloc((size_t)threads, sizeof *parts);
    for (int k = 0; k < threads; k++) {
        parts[k].t = t;
        parts[k].enc = gk_encoder_new(t);
    }
    uint16_t bos = (uint16_t)gk_tok_bos(t);
    json_docs jd = {0};
    gk_progress pg;
    gk_progress_start(&pg, "tok-encode", "B", gk_corpus_total(cp));
    gk_chunk c;
    while (gk_corpus_next(cp, &c)) {
        gk_chunk_run(&c, t->pretok, threads, encode_part, parts, sizeof *parts);
        for (int k = 0; k < threads; k++) {
            gk_ids *ids = &parts[k].ids;
            if (ids_json)
                json_docs_feed(&jd, out, ids, bos);
            else
                gk_ts_write(w, ids->v, ids->n);
            tot->tokens += ids->n;
        }
        tot->bytes += c.len;
        tot->docs += c.nstarts;
        gk_progress_update(&pg, gk_corpus_consumed(cp));
    }
    gk_progress_end(&pg, gk_corpus_consumed(cp));
    if (w)
        gk_ts_finish(w);
    json_docs_flush(&jd, out);
    gk_ids_free(&jd.doc);
    for (int k = 0; k < threads; k++) {
        gk_encoder_free(parts[k].enc);
        gk_ids_free(&parts[k].ids);
    }
    free(parts);
}

static void decode_main(const gk_tok *t, const char *path, gk_out *out, totals *tot)
{
    gk_ts_reader *r = gk_ts_reader_open(path);
    if (gk_ts_vocab(r) != t->vocab)
        gk_die("%s: offset 8: expected vocab %u (the tokenizer's), found %u", path, t->vocab,
               gk_ts_vocab(r));
    uint8_t *buf = gk_malloc(1 << 20);
    size_t n = 0;
    const uint16_t *tok;
    size_t k;
    gk_progress pg;
    gk_progress_start(&pg, "tok-encode -d", "tok", 0);
    while ((k = gk_ts_read(r, &tok))) {
        for (size_t i = 0; i < k; i++) {
            uint32_t len = t->len[tok[i]];
            if (n + len > (1 << 20)) {
                gk_out_write(out, buf, n);
                n = 0;
            }
            memcpy(buf + n, t->bytes[tok[i]], len);
            n += len;
            tot->bytes += len;
        }
        gk_progress_update(&pg, gk_ts_tokens(r));
    }
    gk_out_write(out, buf, n);
    gk_progress_end(&pg, gk_ts_tokens(r));
    tot->tokens = gk_ts_tokens(r);
    tot->docs = gk_ts_docs(r);
    free(buf);
    gk_ts_reader_close(r);
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    const char *tok_path = NULL, *out_path = "-";
    gk_corpus_opts co = {.doc_end = GK_DOC_BLANK, .chunk = 16u << 20};
    int decode = 0, ids_json = 0, stats = 0, threads = gk_ncpu();
    enum { O_JSONL = 256, O_DOC_END, O_IDS, O_THREADS, O_STATS, O_PROGRESS };
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"output", required_argument, 0, 'o'},
        {"decode", no_argument, 0, 'd'},          {"jsonl", required_argument, 0, O_JSONL},
        {"doc-end", required_argument, 0, O_DOC_END}, {"ids", no_argument, 0, O_IDS},
        {"threads", required_argument, 0, O_THREADS}, {"stats", no_argument, 0, O_STATS},
        {"progress", no_argument, 0, O_PROGRESS}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int ch;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":t:o:dqh", opts, NULL)) != -1) {
        switch (ch) {
        case 't': tok_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'd': decode = 1; break;
        case O_JSONL: co.jsonl = optarg; break;
        case O_DOC_END:
            if ((co.doc_end = gk_doc_end_parse(optarg)) < 0)
                gk_usage("--doc-end: expected blank, line, nul or file, found '%s'", optarg);
            break;
        case O_IDS: ids_json = 1; break;
        case O_THREADS: threads = (int)gk_parse_int("--threads", optarg, 1, 256); break;
        case O_STATS: stats = 1; break;
        case O_PROGRESS: gk_progress_force(1); break;
        case 'q': gk_progress_force(-1); break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    if (!tok_path)
        gk_usage("expected a tokenizer (-t FILE.tok), found none");
    if (decode && (ids_json || co.jsonl))
        gk_usage("-d takes a token stream; --ids and --jsonl are for encoding");
    if (decode && argc - optind > 1)
        gk_usage("-d: expected at most one token stream, found %d", argc - optind);
    if (!decode && !ids_json && strcmp(out_path, "-") == 0 && isatty(1))
        gk_usage("refusing to write a binary token stream to a terminal; use -o FILE or a pipe");

    double t0 = gk_now();
    gk_tok *t = gk_tok_load(tok_path);
    co.pretok = t->pretok;
    gk_out *out = gk_out_open(out_path);
    totals tot = {0};
    if (decode) {
        decode_main(t, optind < argc ? argv[optind] : "-", out, &tot);
    } else {
        gk_corpus *cp = gk_corpus_open(argv + optind, argc - optind, &co);
        encode_main(t, cp, out, threads, ids_json, &tot);
        gk_corpus_close(cp);
        if (tot.bytes == 0 && tot.docs == 0)
            gk_die("%s: expected at least one document, found empty input",
                   optind < argc ? argv[optind] : "stdin");
    }
    gk_out_commit(out);
    double dt = gk_now() - t0;
    if (stats) {
        uint64_t text_tokens = tot.tokens - tot.docs; /* BOS carry no bytes */
        jv o = jv_object();
        o = jv_object_set(o, jv_string("mode"), jv_string(decode ? "decode" : "encode"));
        o = jv_object_set(o, jv_string("bytes"), jv_number((double)tot.bytes));
        o = jv_object_set(o, jv_string("tokens"), jv_number((double)tot.tokens));
        o = jv_object_set(o, jv_string("documents"), jv_number((double)tot.docs));
        o = jv_object_set(o, jv_string("bytes_per_token"),
                          jv_number(text_tokens ? (double)tot.bytes / (double)text_tokens : 0));
        o = jv_object_set(o, jv_string("seconds"), jv_number(dt));
        o = jv_object_set(o, jv_string("mb_per_s"), jv_number(dt > 0 ? (double)tot.bytes / dt / 1e6 : 0));
        o = jv_object_set(o, jv_string("threads"), jv_number(decode ? 1 : threads));
        gk_emit(stderr, o);
    }
    gk_tok_free(t);
    return 0;
}
