/* tok-train: raw text -> byte-level BPE tokenizer (.tok), and optionally the
 * same tokenizer as a Hugging Face tokenizer.json.
 *
 * Flags and checks live here; counting and merging are lib/bpe_train.c, the
 * file formats lib/tok.c and lib/hfjson.c. Outputs appear only once training
 * succeeded: the tokenizer.json is built (and checked) before the .tok is
 * saved, and both are written through NAME.tmp and renamed, the .tok's
 * temporary renamed first and the tokenizer.json's only then. */
#include "bpe_train.h"
#include "corpus.h"
#include "hfjson.h"
#include "jsonl.h"
#include "pretok.h"
#include "progress.h"
#include "tok.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SPECIAL 256

static void usage(void)
{
    printf("usage: tok-train -o FILE.tok [options] [FILE...]   text -> BPE tokenizer\n"
           "\n"
           "  -o, --output FILE     the .tok file to write (required)\n"
           "      --vocab N         total ids: 256 bytes + merges + specials, 257..65536\n"
           "                        (default 1024)\n"
           "      --special NAME    one more special token after <|bos|> (repeatable)\n"
           "      --pretok MODE     pre-tokenizer: none (default), ws, digits\n"
           "      --min-count N     merge only pairs seen at least N times (default 2)\n"
           "      --jsonl FIELD     inputs are JSON lines; FIELD of each is a document\n"
           "      --doc-end RULE    plain-text documents end: blank (default), line, nul, file\n"
           "      --threads N       counting threads (default: number of CPUs)\n"
           "      --hf-json FILE    also write a Hugging Face tokenizer.json\n"
           "      --stats           print a JSON line of statistics on stdout\n"
           "      --progress        show progress even when stderr is not a terminal\n"
           "  -q, --quiet           no progress\n"
           "  -h, --help            this help\n"
           "\n"
           "With no FILE, or FILE -, standard input is read. See tok-train(1).\n");
    exit(0);
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    const char *out_path = NULL, *hf_path = NULL;
    char *special[MAX_SPECIAL] = {"<|bos|>"};
    uint32_t n_special = 1, vocab = 1024;
    uint64_t min_count = 2;
    gk_corpus_opts co = {.doc_end = GK_DOC_BLANK, .pretok = GK_PRETOK_DEFAULT};
    int threads = gk_ncpu(), stats = 0;
    enum { O_VOCAB = 256, O_SPECIAL, O_PRETOK, O_MIN, O_JSONL, O_DOC_END, O_THREADS, O_HF,
           O_STATS, O_PROGRESS };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},    {"vocab", required_argument, 0, O_VOCAB},
        {"special", required_argument, 0, O_SPECIAL}, {"pretok", required_argument, 0, O_PRETOK},
        {"min-count", required_argument, 0, O_MIN}, {"jsonl", required_argument, 0, O_JSONL},
        {"doc-end", required_argument, 0, O_DOC_END}, {"threads", required_argument, 0, O_THREADS},
        {"hf-json", required_argument, 0, O_HF},  {"stats", no_argument, 0, O_STATS},
        {"progress", no_argument, 0, O_PROGRESS}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int ch;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":o:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out_path = optarg; break;
        case O_VOCAB: vocab = (uint32_t)gk_parse_int("--vocab", optarg, 257, GK_TOK_MAX_VOCAB); break;
        case O_SPECIAL:
            if (strlen(optarg) < 1 || strlen(optarg) > GK_TOK_MAX_SPECIAL_LEN)
                gk_usage("--special: expected a name of 1..%u bytes, found %zu bytes",
                         GK_TOK_MAX_SPECIAL_LEN, strlen(optarg));
            for (uint32_t i = 0; i < n_special; i++)
                if (strcmp(special[i], optarg) == 0)
                    gk_usage("--special: expected a new name, found '%s' twice", optarg);
            if (n_special >= MAX_SPECIAL)
                gk_usage("--special: expected at most %d specials, found more", MAX_SPECIAL);
            else
                special[n_special++] = optarg;
            break;
        case O_PRETOK:
            if ((co.pretok = gk_pretok_parse(optarg)) < 0)
                gk_usage("--pretok: expected none, ws or digits, found '%s'", optarg);
            break;
        case O_MIN: min_count = (uint64_t)gk_parse_int("--min-count", optarg, 1, INT64_MAX); break;
        case O_JSONL: co.jsonl = optarg; break;
        case O_DOC_END:
            if ((co.doc_end = gk_doc_end_parse(optarg)) < 0)
                gk_usage("--doc-end: expected blank, line, nul or file, found '%s'", optarg);
            break;
        case O_THREADS: threads = (int)gk_parse_int("--threads", optarg, 1, 256); break;
        case O_HF: hf_path = optarg; break;
        case O_STATS: stats = 1; break;
        case O_PROGRESS: gk_progress_force(1); break;
        case 'q': gk_progress_force(-1); break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    if (!out_path)
        gk_usage("expected an output tokenizer (-o FILE.tok), found none");
    else if (strcmp(out_path, "-") == 0 && isatty(1))
        gk_usage("refusing to write a binary tokenizer to a terminal; use -o FILE.tok");
    if (vocab < 256 + n_special)
        gk_usage("--vocab: expected at least %u (256 bytes + %u specials), found %u",
                 256 + n_special, n_special, vocab);
    uint32_t asked = vocab - 256 - n_special;

    double t0 = gk_now();
    /* Chunks of a few MiB per thread: big enough to keep every thread busy,
     * small enough that reading and counting interleave on long inputs. */
    co.chunk = (size_t)threads << 22;
    gk_corpus *cp = gk_corpus_open(argv + optind, argc - optind, &co);
    gk_bpe *b = gk_bpe_new(co.pretok, threads);
    gk_progress pg;
    gk_progress_start(&pg, "tok-train: counting", "B", gk_corpus_total(cp));
    gk_chunk c;
    while (gk_corpus_next(cp, &c)) {
        gk_bpe_add_chunk(b, &c);
        gk_progress_update(&pg, gk_corpus_consumed(cp));
    }
    gk_progress_end(&pg, gk_corpus_consumed(cp));
    gk_corpus_close(cp);
    const gk_bpe_stats *st = gk_bpe_get_stats(b);
    if (st->corpus_bytes == 0)
        gk_die("%s: expected at least one byte of text, found empty input",
               optind < argc && strcmp(argv[optind], "-") != 0 ? argv[optind] : "stdin");

    gk_bpe_prepare(b);
    uint32_t (*merges)[2] = gk_malloc(((size_t)asked + 1) * sizeof *merges);
    uint32_t n = 0;
    gk_progress_start(&pg, "tok-train: merging", "merges", asked);
    while (n < asked && gk_bpe_step(b, min_count, merges[n])) {
        n++;
        gk_progress_update(&pg, n);
    }
    gk_progress_end(&pg, n);
    if (n < asked)
        gk_warn("warning: only %u merges have a pair seen at least %llu times (asked %u): "
                "the vocab is %u, not %u", n, (unsigned long long)min_count, asked,
                256 + n + n_special, vocab);

    gk_tok *t = gk_tok_new((const uint32_t (*)[2])merges, n, special, n_special, co.pretok);
    /* The tokenizer.json is written first and committed last: a failure
     * anywhere leaves both files as they were. */
    gk_out *hf = hf_path ? gk_hfjson_write(gk_hfjson(t), hf_path) : NULL;
    gk_tok_save(t, out_path);
    if (hf)
        gk_out_commit(hf);

    if (stats) {
        jv o = jv_object();
        o = jv_object_set(o, jv_string("corpus_bytes"), jv_number((double)st->corpus_bytes));
        o = jv_object_set(o, jv_string("documents"), jv_number((double)st->documents));
        o = jv_object_set(o, jv_string("words"), jv_number((double)st->words));
        o = jv_object_set(o, jv_string("unique_words"), jv_number((double)st->unique_words));
        o = jv_object_set(o, jv_string("merges"), jv_number(n));
        o = jv_object_set(o, jv_string("merges_asked"), jv_number(asked));
        o = jv_object_set(o, jv_string("skipped_pairs"), jv_number((double)st->skipped));
        o = jv_object_set(o, jv_string("vocab"), jv_number(t->vocab));
        o = jv_object_set(o, jv_string("seconds"), jv_number(gk_now() - t0));
        o = jv_object_set(o, jv_string("peak_rss_bytes"), jv_number((double)gk_peak_rss()));
        o = jv_object_set(o, jv_string("threads"), jv_number(threads));
        o = jv_object_set(o, jv_string("pretok"), jv_string(gk_pretok_name(co.pretok)));
        gk_emit(stdout, o);
    }
    gk_tok_free(t);
    gk_bpe_free(b);
    free(merges);
    return 0;
}
