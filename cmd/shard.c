/* shard: split a token stream into llm.c / parameter-golf training shards
 * (validation documents first), report on shards (--info), or stream shards
 * back out as a token stream (--cat). Flags only; the work is in
 * lib/shardfile.c, the manual in man1/shard.1, the format in man5/shard.5. */
#include "progress.h"
#include "shardfile.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: shard [options] [STREAM]       token stream -> DIR/PREFIX_{val,train}_NNNNNN.bin\n"
           "       shard --info [options] SHARD...  one JSON line per shard\n"
           "       shard --cat [options] SHARD...   shards -> one token stream\n"
           "\n"
           "STREAM is a token stream from tok-encode (default: standard input).\n"
           "\n"
           "  -o DIR               directory for the shards (default .; with --cat: the\n"
           "                       output FILE, default standard output)\n"
           "      --prefix NAME    shard file names start with NAME (default data)\n"
           "      --shard-tokens N at most N tokens a shard (default 100000000)\n"
           "      --val-docs N     the first N documents go to the val shards (default 0:\n"
           "                       no validation split)\n"
           "      --val-frac F     the first round(F x documents) documents go to val\n"
           "      --info           report on each SHARD as JSON (checksum, counts)\n"
           "      --cat            write the SHARDs, in order, as one token stream\n"
           "      --vocab N        vocab for shards without golfkit extras (--info, --cat)\n"
           "      --bos ID         BOS id for shards without golfkit extras (--info, --cat)\n"
           "  -q, --quiet          no progress on stderr\n"
           "      --progress       progress on stderr even when it is not a terminal\n"
           "  -h, --help           this help\n"
           "\n"
           "Results are JSON lines on stdout. Exit 0 on success, 1 on bad input, 2 on bad\n"
           "usage. See shard(1) and shard(5).\n");
}

enum { OPT_PREFIX = 256, OPT_SHARD_TOKENS, OPT_VAL_DOCS, OPT_VAL_FRAC, OPT_INFO, OPT_CAT,
       OPT_VOCAB, OPT_BOS, OPT_PROGRESS };

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    static const struct option longopts[] = {
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"shard-tokens", required_argument, NULL, OPT_SHARD_TOKENS},
        {"val-docs", required_argument, NULL, OPT_VAL_DOCS},
        {"val-frac", required_argument, NULL, OPT_VAL_FRAC},
        {"info", no_argument, NULL, OPT_INFO},
        {"cat", no_argument, NULL, OPT_CAT},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"bos", required_argument, NULL, OPT_BOS},
        {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    gk_split_opts so = {.dir = NULL, .prefix = "data", .shard_tokens = 100000000u,
                        .val_docs = 0, .val_frac = 0};
    int info = 0, cat = 0, have_docs = 0, have_frac = 0;
    uint32_t vocab = 0, bos = GK_SHARD_NO_BOS;
    int c;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((c = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': so.dir = optarg; break;
        case OPT_PREFIX: so.prefix = optarg; break;
        case OPT_SHARD_TOKENS:
            so.shard_tokens = (uint32_t)gk_parse_int("--shard-tokens", optarg, 1,
                                                     GK_SHARD_MAX_TOKENS);
            break;
        case OPT_VAL_DOCS:
            so.val_docs = gk_parse_int("--val-docs", optarg, 0, (long long)1 << 62);
            have_docs = 1;
            break;
        case OPT_VAL_FRAC:
            so.val_frac = gk_parse_double("--val-frac", optarg, 0, 1);
            have_frac = 1;
            break;
        case OPT_INFO: info = 1; break;
        case OPT_CAT: cat = 1; break;
        case OPT_VOCAB: vocab = (uint32_t)gk_parse_int("--vocab", optarg, 1, 65536); break;
        case OPT_BOS: bos = (uint32_t)gk_parse_int("--bos", optarg, 0, 65535); break;
        case 'q': gk_progress_force(-1); break;
        case OPT_PROGRESS: gk_progress_force(1); break;
        case 'h': help(); return 0;
        default: gk_bad_option(c, argv);
        }
    }
    int nargs = argc - optind;
    if (info + cat > 1)
        gk_usage("--info and --cat: expected one of them, found both");
    if (info || cat) {
        if (have_docs || have_frac || so.shard_tokens != 100000000u || strcmp(so.prefix, "data"))
            gk_usage("--val-docs, --val-frac, --shard-tokens and --prefix: expected only "
                     "when splitting a stream, found them with --%s", info ? "info" : "cat");
        if (nargs < 1)
            gk_usage("--%s: expected at least one SHARD file, found none", info ? "info" : "cat");
        if (vocab && bos != GK_SHARD_NO_BOS && bos >= vocab)
            gk_usage("--bos: expected an id below --vocab %u, found %u", vocab, bos);
        if (info) {
            if (so.dir)
                gk_usage("-o: expected no output with --info (results go to stdout), found %s",
                         so.dir);
            for (int i = optind; i < argc; i++)
                gk_shard_info(argv[i], vocab, bos, stdout);
        } else {
            gk_shard_cat(argv + optind, nargs, so.dir ? so.dir : "-", vocab, bos, stdout);
        }
        return 0;
    }
    if (vocab || bos != GK_SHARD_NO_BOS)
        gk_usage("--vocab and --bos: expected only with --info or --cat (a stream names its "
                 "own), found them when splitting");
    if (have_docs && have_frac)
        gk_usage("--val-docs and --val-frac: expected one of them, found both");
    if (nargs > 1)
        gk_usage("expected at most one STREAM, found %d arguments", nargs);
    /* --val-frac 0 asks for no validation split, as --val-docs 0 does. */
    if (have_frac && so.val_frac > 0)
        so.val_docs = -1;
    if (!so.dir)
        so.dir = ".";
    gk_shard_split(nargs ? argv[optind] : "-", &so, stdout);
    return 0;
}
