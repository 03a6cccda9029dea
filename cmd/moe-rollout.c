/* moe-rollout: text generation from a trained model, streamed to stdout.
 *
 * The model is a moe-train checkpoint, a moe-quant .qst or a moe-pack .pack,
 * told by its content and read in memory (lib/modelfile.h, as moe-eval
 * does); the tokenizer is -t's or the .pack's own. The prompt is encoded as
 * tok-encode encodes the start of a document (BOS, then the text's ids), fed
 * through the KV-cache decoder of lib/generate.h, and each new token, chosen
 * by lib/sample.h, is written to stdout as soon as it is made.
 *
 * Generation ends at --max-tokens, at a stop string (whose bytes are never
 * printed: bytes that could begin one are held back until they cannot), at a
 * generated BOS (the document separator of the training stream: the model
 * says the document is over), or at the context limit: the decoder does not
 * slide, so once prompt and output fill model.seq_len positions the last
 * token is printed and generation stops. One JSON line of statistics goes to
 * stderr at the end.
 *
 * The physics scoring of issue 7 (--physics: prompt with a scene and its
 * first frames, generate frames greedily, compare positions with phys-gen's
 * ground truth) is a second mode beside generate_text() below, to be added
 * with phys-gen; it reuses the same decoder and sampler. */
#include "encode.h"
#include "generate.h"
#include "io.h"
#include "jsonl.h"
#include "modelfile.h"
#include "sample.h"
#include "tok.h"
#include "util.h"

#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The --chat template: plain-text markers that any byte-level tokenizer
 * encodes, and the marker of the next user turn as a stop string. */
#define CHAT_USER "<|user|>\n"
#define CHAT_ASSISTANT "\n<|assistant|>\n"
#define CHAT_STOP "<|user|>"

static void usage(void)
{
    printf("usage: moe-rollout [options] MODEL\n"
           "\n"
           "  MODEL                   a moe-train checkpoint, a moe-quant .qst or a moe-pack\n"
           "                          .pack\n"
           "  -t, --tokenizer TOK     the .tok of the model (default: the one in a .pack)\n"
           "  -p, --prompt TEXT       the prompt (default: none, generation from BOS)\n"
           "  -f, --prompt-file F     the prompt is the bytes of F (- for stdin)\n"
           "  -n, --max-tokens N      generate at most N tokens (default 256)\n"
           "      --temperature T     0 is greedy (default 1)\n"
           "      --top-k K           sample from the K most likely tokens (default 0: off)\n"
           "      --top-p P           nucleus sampling, 0 < P <= 1 (default 1: off)\n"
           "      --repetition-penalty R  CTRL-style penalty on tokens already seen (default 1)\n"
           "  -s, --seed S            seed of the sampler (default 0)\n"
           "      --stop STRING       stop before STRING is printed (repeatable)\n"
           "      --chat              wrap the prompt in the chat template, stop at \"<|user|>\"\n"
           "      --threads N         OpenMP and OpenBLAS threads (default: number of CPUs)\n"
           "  -q, --quiet             no statistics line on stderr\n"
           "  -h, --help              this help\n"
           "\n"
           "See moe-rollout(1).\n");
    exit(0);
}

typedef struct {
    const char *model, *tokenizer, *prompt, *prompt_file;
    char **stop;
    int nstop, chat, quiet, threads;
    long long max_tokens;
    uint64_t seed;
    gk_sample_opts so;
} options;

static void parse_args(int argc, char **argv, options *o)
{
    enum { O_TEMP = 256, O_TOPK, O_TOPP, O_REP, O_STOP, O_CHAT, O_THREADS };
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 't'},   {"prompt", required_argument, 0, 'p'},
        {"prompt-file", required_argument, 0, 'f'}, {"max-tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},
        {"repetition-penalty", required_argument, 0, O_REP},
        {"seed", required_argument, 0, 's'},        {"stop", required_argument, 0, O_STOP},
        {"chat", no_argument, 0, O_CHAT},           {"threads", required_argument, 0, O_THREADS},
        {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *o = (options){.threads = gk_ncpu(), .max_tokens = 256, .so = gk_sample_defaults()};
    int ch;
    while ((ch = getopt_long(argc, argv, "t:p:f:n:s:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 't': o->tokenizer = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'n': o->max_tokens = gk_parse_int("--max-tokens", optarg, 1, INT32_MAX); break;
        case O_TEMP: o->so.temperature = gk_parse_double("--temperature", optarg, 0, 1e6); break;
        case O_TOPK: o->so.top_k = (int)gk_parse_int("--top-k", optarg, 0, INT32_MAX); break;
        case O_TOPP:
            o->so.top_p = gk_parse_double("--top-p", optarg, 0, 1);
            if (o->so.top_p <= 0)
                gk_usage("--top-p: expected a number in (0, 1], found %s", optarg);
            break;
        case O_REP:
            o->so.repetition_penalty = gk_parse_double("--repetition-penalty", optarg, 0, 1e6);
            if (o->so.repetition_penalty <= 0)
                gk_usage("--repetition-penalty: expected a number > 0, found %s", optarg);
            break;
        case 's': o->seed = (uint64_t)gk_parse_int("--seed", optarg, 0, INT64_MAX); break;
        case O_STOP:
            if (!optarg[0])
                gk_usage("--stop: expected a non-empty string, found \"\"");
            o->stop = gk_realloc(o->stop, (size_t)(o->nstop + 2) * sizeof *o->stop);
            o->stop[o->nstop++] = optarg;
            break;
        case O_CHAT: o->chat = 1; break;
        case O_THREADS: o->threads = (int)gk_parse_int("--threads", optarg, 1, 1024); break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(); break;
        default: gk_usage("unknown option");
        }
    }
    if (optind != argc - 1)
        gk_usage("expected one MODEL, found %d", argc - optind);
    o->model = argv[optind];
    if (o->prompt && o->prompt_file)
        gk_usage("--prompt and --prompt-file: expected one of them, found both");
    if (o->chat) { /* the template's stop string (room was kept above) */
        o->stop = gk_realloc(o->stop, (size_t)(o->nstop + 1) * sizeof *o->stop);
        o->stop[o->nstop++] = (char *)CHAT_STOP;
    }
}

/* The prompt's ids: BOS, then the encoded text (the chat template around it
 * with --chat), as tok-encode starts a document. */
static gk_ids prompt_ids(const options *o, const gk_tok *tok)
{
    size_t n = 0;
    unsigned char *file = NULL;
    const char *text = o->prompt ? o->prompt : "";
    if (o->prompt_file)
        text = (const char *)(file = gk_read_file(o->prompt_file, &n));
    else
        n = strlen(text);
    gk_ids ids = {0};
    gk_ids_push(&ids, (uint16_t)gk_tok_bos(tok));
    gk_encoder *enc = gk_encoder_new(tok);
    if (o->chat)
        gk_encode_text(enc, (const uint8_t *)CHAT_USER, strlen(CHAT_USER), &ids);
    gk_encode_text(enc, (const uint8_t *)text, n, &ids);
    if (o->chat)
        gk_encode_text(enc, (const uint8_t *)CHAT_ASSISTANT, strlen(CHAT_ASSISTANT), &ids);
    gk_encoder_free(enc);
    free(file);
    return ids;
}

/* The generated bytes, and how many of them went to stdout. Bytes that may
 * begin a stop string are held back until the next token tells. */
typedef struct {
    char *b;
    size_t n, cap, shown;
} text_buf;

static void show(text_buf *t, size_t upto)
{
    if (upto > t->shown) {
        fwrite(t->b + t->shown, 1, upto - t->shown, stdout);
        fflush(stdout);
        t->shown = upto;
    }
}

/* Append the bytes of one token (ADD, N) to T; returns 1 when a stop string
 * now occurs in the text, having shown everything before it, else shows what
 * can no longer be part of a stop string and returns 0. */
static int feed_text(text_buf *t, const unsigned char *add, size_t n, char *const *stop,
                     int nstop)
{
    size_t old = t->n;
    if (t->n + n + 1 > t->cap) {
        t->cap = 2 * (t->n + n + 1);
        t->b = gk_realloc(t->b, t->cap);
    }
    memcpy(t->b + t->n, add, n);
    t->n += n;
    /* the earliest occurrence that the new bytes complete */
    size_t at = SIZE_MAX, hold = 0;
    for (int i = 0; i < nstop; i++) {
        size_t sl = strlen(stop[i]), from = old >= sl - 1 ? old - (sl - 1) : 0;
        for (size_t p = from; p + sl <= t->n; p++)
            if (memcmp(t->b + p, stop[i], sl) == 0 && p < at) {
                at = p;
                break;
            }
        /* the longest tail of the text that is a proper prefix of the stop */
        for (size_t k = sl - 1 < t->n ? sl - 1 : t->n; k > hold; k--)
            if (memcmp(t->b + t->n - k, stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    if (at != SIZE_MAX) {
        show(t, at);
        return 1;
    }
    show(t, t->n - hold);
    return 0;
}

/* Generate from the prompt, streaming to stdout; the statistics line at the
 * end (unless -q). */
static void generate_text(const options *o, const gk_modelfile *mf)
{
    const gk_tok *tok = mf->tok;
    int seq = mf->cfg.model.seq_len;
    gk_ids pr = prompt_ids(o, tok);
    if (pr.n > (size_t)seq)
        gk_die("%s: expected a prompt of at most the model's seq_len %d tokens (BOS "
               "included), found %zu", o->prompt_file ? o->prompt_file : "--prompt", seq, pr.n);
    int n = (int)pr.n, bos = (int)gk_tok_bos(tok);
    int *ctx = gk_malloc((size_t)(seq + 1) * sizeof *ctx);
    for (int i = 0; i < n; i++)
        ctx[i] = pr.v[i];
    gk_gen *g = gk_gen_new(&mf->l, mf->params, seq);
    gk_sampler *s = gk_sampler_new(mf->cfg.model.vocab, &o->so, o->seed);
    double t0 = gk_now();
    float *logits = NULL;
    for (int i = 0; i < n; i++)
        logits = gk_gen_step(g, ctx[i]);
    double t1 = gk_now();
    text_buf text = {0};
    long long generated = 0;
    const char *reason;
    for (;;) {
        int id = gk_sample(s, logits, ctx, n);
        ctx[n++] = id;
        generated++;
        if (id == bos) {
            reason = "bos";
            break;
        }
        if (feed_text(&text, tok->bytes[id], tok->len[id], o->stop, o->nstop)) {
            reason = "stop";
            break;
        }
        if (generated == o->max_tokens) {
            reason = "max_tokens";
            break;
        }
        if (gk_gen_room(g) == 0) {
            reason = "context";
            break;
        }
        logits = gk_gen_step(g, id);
    }
    if (strcmp(reason, "stop") != 0)
        show(&text, text.n);
    if (fflush(stdout) != 0 || ferror(stdout))
        gk_die("standard output: expected to write the generated text, found a write error");
    double secs = gk_now() - t1;
    if (!o->quiet) {
        jv r = jv_object();
        r = jv_object_set(r, jv_string("model"), jv_string(o->model));
        r = jv_object_set(r, jv_string("kind"), jv_string(mf->kind));
        r = jv_object_set(r, jv_string("prompt_tokens"), jv_number((double)pr.n));
        r = jv_object_set(r, jv_string("generated"), jv_number((double)generated));
        r = jv_object_set(r, jv_string("stop_reason"), jv_string(reason));
        r = jv_object_set(r, jv_string("prompt_s"), jv_number(round((t1 - t0) * 1e3) / 1e3));
        r = jv_object_set(r, jv_string("tokens_per_s"),
                          jv_number(secs > 0 ? round(generated / secs * 10) / 10 : 0));
        r = jv_object_set(r, jv_string("peak_rss_bytes"), jv_number((double)gk_peak_rss()));
        gk_emit(stderr, r);
    }
    free(text.b);
    gk_sampler_free(s);
    gk_gen_free(g);
    free(ctx);
    gk_ids_free(&pr);
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    options o;
    parse_args(argc, argv, &o);
    gk_modelfile mf;
    gk_modelfile_load(&mf, o.model, o.tokenizer);
    if (!mf.tok)
        gk_usage("%s: a %s holds no tokenizer: expected -t TOK, found none", o.model, mf.kind);
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
    generate_text(&o, &mf);
    gk_modelfile_free(&mf);
    free(o.stop);
    return 0;
}
