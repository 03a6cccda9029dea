/* moe-pack: build the .pack artifact from a quantized model, a tokenizer and
 * an optional config (one compressed frame, see pack(5)); --verify checks an
 * artifact against the game's 16,000,000-byte limit and every checksum;
 * --unpack restores its parts as files. Flags only; the format's work is in
 * lib/pack.c, the manual in man1/moe-pack.1. */
#include "io.h"
#include "jsonl.h"
#include "pack.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void help(void)
{
    printf("Usage: moe-pack -o OUT.pack --model M.qst --tokenizer T.tok [--config C.json]\n"
           "                [--codec zstd|xz] [--level N]\n"
           "       moe-pack --verify FILE [--limit N]\n"
           "       moe-pack --unpack FILE -o DIR\n"
           "\n"
           "  -o PATH            the artifact to write; with --unpack, the directory\n"
           "      --model FILE   quantized model (.qst), stored as model.qst\n"
           "      --tokenizer FILE  tokenizer (.tok), stored as tokenizer.tok\n"
           "      --config FILE  model config (JSON), stored as config.json (optional)\n"
           "      --codec NAME   zstd (default) or xz\n"
           "      --level N      zstd 1..22 (default 22), xz 0..9 (default 9, always -e)\n"
           "      --verify FILE  check size, header, checksums, decoding and parts\n"
           "      --limit N      the size limit for --verify (default 16000000 bytes)\n"
           "      --unpack FILE  write the parts of FILE into DIR\n"
           "  -q, --quiet        accepted for symmetry with the other tools (no progress)\n"
           "  -h, --help         this help\n"
           "\n"
           "Results are JSON lines on stdout. Exit 0 on success, 1 on bad input, 2 on bad\n"
           "usage. See moe-pack(1) and pack(5).\n");
}

static jv parts_json(const gk_pack *p)
{
    jv a = jv_array();
    for (size_t i = 0; i < gk_pack_nparts(p); i++) {
        const char *name;
        size_t len;
        gk_pack_part_at(p, i, &name, &len);
        jv o = jv_object();
        o = jv_object_set(o, jv_string("name"), jv_string(name));
        o = jv_object_set(o, jv_string("bytes"), jv_number((double)len));
        a = jv_array_append(a, o);
    }
    return a;
}

static void verify(const char *path, long long limit)
{
    struct stat st;
    if (stat(path, &st) != 0)
        gk_die("%s: expected a readable file, found %s", path, strerror(errno));
    /* The limit comes first: an artifact over it is rejected whatever else. */
    if ((long long)st.st_size > limit)
        gk_die("%s: expected at most %lld bytes, found %lld (over by %lld)", path, limit,
               (long long)st.st_size, (long long)st.st_size - limit);
    gk_pack *p = gk_pack_open(path);
    const gk_pack_header *h = gk_pack_info(p);
    jv o = jv_object();
    o = jv_object_set(o, jv_string("file"), jv_string(path));
    o = jv_object_set(o, jv_string("bytes"), jv_number((double)h->file_bytes));
    o = jv_object_set(o, jv_string("limit"), jv_number((double)limit));
    o = jv_object_set(o, jv_string("ok"), jv_true());
    o = jv_object_set(o, jv_string("codec"), jv_string(gk_pack_codec_name((int)h->codec)));
    o = jv_object_set(o, jv_string("level"), jv_number(h->level));
    o = jv_object_set(o, jv_string("uncompressed_bytes"), jv_number((double)h->uncompressed));
    o = jv_object_set(o, jv_string("parts"), parts_json(p));
    gk_emit(stdout, o);
    gk_pack_free(p);
}

static void unpack(const char *path, const char *dir)
{
    gk_pack *p = gk_pack_open(path); /* fully checked before anything is written */
    gk_out_mkdir(dir, "the parts");
    size_t np = gk_pack_nparts(p);
    gk_out *out[3];
    for (size_t i = 0; i < np; i++) {
        const char *name;
        size_t len;
        const unsigned char *d = gk_pack_part_at(p, i, &name, &len);
        char *fn = gk_malloc(strlen(dir) + strlen(name) + 2);
        sprintf(fn, "%s/%s", dir, name);
        out[i] = gk_out_open(fn);
        gk_out_write(out[i], d, len);
        gk_out_close(out[i]);
        free(fn);
    }
    for (size_t i = 0; i < np; i++) /* the parts appear together or not at all */
        gk_out_commit(out[i]);
    jv o = jv_object();
    o = jv_object_set(o, jv_string("file"), jv_string(path));
    o = jv_object_set(o, jv_string("dir"), jv_string(dir));
    o = jv_object_set(o, jv_string("parts"), parts_json(p));
    gk_emit(stdout, o);
    gk_pack_free(p);
}

static void pack(const char *out_path, const char *model, const char *tok, const char *config,
                 int codec, int level)
{
    double t0 = gk_now();
    gk_pack_item it[3];
    size_t n = 0;
    if (config) {
        it[n].name = GK_PACK_CONFIG;
        it[n].data = gk_read_file(config, &it[n].len);
        /* The config is stored as given, but only if it is JSON. */
        jv j = jv_parse_sized((const char *)it[n].data, (int)it[n].len);
        if (!jv_is_valid(j)) {
            jv m = jv_invalid_get_msg(j);
            gk_die("%s: expected JSON, found %s", config,
                   jv_get_kind(m) == JV_KIND_STRING ? jv_string_value(m) : "invalid text");
        }
        jv_free(j);
        n++;
    }
    it[n].name = GK_PACK_TOKENIZER;
    it[n].data = gk_read_file(tok, &it[n].len);
    n++;
    it[n].name = GK_PACK_MODEL;
    it[n].data = gk_read_file(model, &it[n].len);
    n++;
    size_t len;
    unsigned char *buf = gk_pack_build(it, n, codec, level, &len);
    gk_out *o = gk_out_open(out_path);
    gk_out_write(o, buf, len);
    gk_out_commit(o);

    jv parts = jv_array();
    uint64_t raw = 0;
    for (size_t i = 0; i < n; i++) {
        jv e = jv_object();
        e = jv_object_set(e, jv_string("name"), jv_string(it[i].name));
        e = jv_object_set(e, jv_string("bytes"), jv_number((double)it[i].len));
        parts = jv_array_append(parts, e);
        raw += it[i].len;
        free((void *)it[i].data);
    }
    jv r = jv_object();
    r = jv_object_set(r, jv_string("file"), jv_string(out_path));
    r = jv_object_set(r, jv_string("parts"), parts);
    r = jv_object_set(r, jv_string("parts_bytes"), jv_number((double)raw));
    r = jv_object_set(r, jv_string("uncompressed_bytes"), jv_number((double)gk_get64(buf + 32)));
    r = jv_object_set(r, jv_string("bytes"), jv_number((double)len));
    r = jv_object_set(r, jv_string("codec"), jv_string(gk_pack_codec_name(codec)));
    r = jv_object_set(r, jv_string("level"), jv_number(level));
    r = jv_object_set(r, jv_string("seconds"), jv_number(gk_now() - t0));
    gk_emit(stdout, r);
    free(buf);
}

enum { OPT_MODEL = 256, OPT_TOK, OPT_CONFIG, OPT_CODEC, OPT_LEVEL, OPT_VERIFY, OPT_LIMIT,
       OPT_UNPACK };

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    static const struct option longopts[] = {
        {"model", required_argument, NULL, OPT_MODEL},
        {"tokenizer", required_argument, NULL, OPT_TOK},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"codec", required_argument, NULL, OPT_CODEC},
        {"level", required_argument, NULL, OPT_LEVEL},
        {"verify", required_argument, NULL, OPT_VERIFY},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"unpack", required_argument, NULL, OPT_UNPACK},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *model = NULL, *tok = NULL, *config = NULL, *ver = NULL,
               *unp = NULL, *level_s = NULL;
    int codec = GK_PACK_ZSTD, have_limit = 0;
    long long limit = (long long)GK_PACK_LIMIT;
    int c;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((c = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_MODEL: model = optarg; break;
        case OPT_TOK: tok = optarg; break;
        case OPT_CONFIG: config = optarg; break;
        case OPT_CODEC:
            if (!(codec = gk_pack_codec_parse(optarg)))
                gk_usage("--codec: expected zstd or xz, found '%s'", optarg);
            break;
        case OPT_LEVEL: level_s = optarg; break;
        case OPT_VERIFY: ver = optarg; break;
        case OPT_LIMIT: limit = gk_parse_int("--limit", optarg, 0, (long long)1 << 62); have_limit = 1; break;
        case OPT_UNPACK: unp = optarg; break;
        case 'q': break;
        case 'h': help(); return 0;
        default: gk_bad_option(c, argv);
        }
    }
    if (optind < argc)
        gk_usage("expected no arguments besides the options, found '%s'", argv[optind]);
    if (ver && unp)
        gk_usage("--verify and --unpack: expected one of them, found both");
    if ((ver || unp) && (model || tok || config || level_s))
        gk_usage("--model, --tokenizer, --config and --level: expected only when packing, "
                 "found them with --%s", ver ? "verify" : "unpack");
    if (have_limit && !ver)
        gk_usage("--limit: expected only with --verify");
    if (ver) {
        if (out)
            gk_usage("-o: expected no output with --verify (results go to stdout), found %s", out);
        verify(ver, limit);
        return 0;
    }
    if (unp) {
        if (!out)
            gk_usage("--unpack: expected -o DIR, found none");
        unpack(unp, out);
        return 0;
    }
    if (!out || !model || !tok)
        gk_usage("expected -o OUT, --model and --tokenizer, found %s missing",
                 !out ? "-o" : !model ? "--model" : "--tokenizer");
    int level = codec == GK_PACK_ZSTD ? 22 : 9;
    if (level_s)
        level = (int)gk_parse_int("--level", level_s, codec == GK_PACK_ZSTD ? 1 : 0,
                                  codec == GK_PACK_ZSTD ? 22 : 9);
    pack(out, model, tok, config, codec, level);
    return 0;
}
