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
 * --physics is a second mode beside generate_text(): score_physics() prompts
 * with each phys-gen scene's header and first frames, generates frames
 * greedily with the same decoder, reads them back with lib/physparse.h's
 * strict grammar and reports each scene's position error against phys-gen's
 * ground truth, then a summary (moe-rollout(1), PHYSICS). */
#include "encode.h"
#include "generate.h"
#include "gpu.h"
#include "io.h"
#include "jsonl.h"
#include "modelfile.h"
#include "physparse.h"
#include "sample.h"
#include "tok.h"
#include "util.h"

#include <cblas.h>
#include <getopt.h>
#include <limits.h>
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
           "      --device D          cpu or cuda: where the decoder runs (default cpu)\n"
           "      --physics FILE      score frame rollouts of phys-gen's JSONL scenes (greedy)\n"
           "      --prompt-frames K   --physics: frames of each scene in the prompt (default 1)\n"
           "      --frames F          --physics: frames to generate and score (default 15)\n"
           "      --report-frames L   --physics: frames the summary reports (default 1,5,15)\n"
           "      --batch N           --physics: scenes rolled out together (default 1 on\n"
           "                          the CPU, 64 on cuda)\n"
           "  -q, --quiet             no statistics line on stderr\n"
           "  -h, --help              this help\n"
           "\n"
           "See moe-rollout(1).\n");
    exit(0);
}

typedef struct {
    const char *model, *tokenizer, *prompt, *prompt_file, *physics;
    char **stop;
    int prompt_frames, frames, nreport, report[64];
    int nstop, chat, quiet, threads, cuda, batch;
    long long max_tokens;
    uint64_t seed;
    gk_sample_opts so;
} options;

/* --report-frames LIST into o->report: frame numbers 1 .. --frames, comma
 * separated; without the flag, those of 1, 5, 15 that --frames reaches. */
static void parse_report(options *o, const char *list)
{
    if (!list) {
        static const int dflt[] = {1, 5, 15};
        for (int i = 0; i < 3; i++)
            if (dflt[i] <= o->frames)
                o->report[o->nreport++] = dflt[i];
        return;
    }
    char *copy = gk_strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nreport == 64)
            gk_usage("--report-frames: expected at most 64 frames, found more in '%s'", list);
        o->report[o->nreport++] = (int)gk_parse_int("--report-frames", t, 1, o->frames);
    }
    free(copy);
    if (!o->nreport)
        gk_usage("--report-frames: expected frame numbers like 1,5,15, found '%s'", list);
}

static void parse_args(int argc, char **argv, options *o)
{
    enum { O_TEMP = 256, O_TOPK, O_TOPP, O_REP, O_STOP, O_CHAT, O_THREADS, O_PHYS, O_PF, O_FR,
           O_RF, O_DEV, O_BATCH };
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 't'},   {"prompt", required_argument, 0, 'p'},
        {"prompt-file", required_argument, 0, 'f'}, {"max-tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},
        {"repetition-penalty", required_argument, 0, O_REP},
        {"seed", required_argument, 0, 's'},        {"stop", required_argument, 0, O_STOP},
        {"chat", no_argument, 0, O_CHAT},           {"threads", required_argument, 0, O_THREADS},
        {"physics", required_argument, 0, O_PHYS}, {"prompt-frames", required_argument, 0, O_PF},
        {"frames", required_argument, 0, O_FR},     {"report-frames", required_argument, 0, O_RF},
        {"device", required_argument, 0, O_DEV},    {"batch", required_argument, 0, O_BATCH},
        {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *o = (options){.threads = gk_ncpu(), .max_tokens = 256, .so = gk_sample_defaults(),
                   .prompt_frames = 1, .frames = 15};
    const char *report = NULL;
    int ch;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":t:p:f:n:s:qh", opts, NULL)) != -1) {
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
        case O_PHYS: o->physics = optarg; break;
        case O_PF: o->prompt_frames = (int)gk_parse_int("--prompt-frames", optarg, 1, 100000); break;
        case O_FR: o->frames = (int)gk_parse_int("--frames", optarg, 1, 100000); break;
        case O_RF: report = optarg; break;
        case O_DEV: o->cuda = gk_parse_device(optarg); break;
        case O_BATCH: o->batch = (int)gk_parse_int("--batch", optarg, 1, 4096); break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    if (optind != argc - 1)
        gk_usage("expected one MODEL, found %d", argc - optind);
    o->model = argv[optind];
    if (o->prompt && o->prompt_file)
        gk_usage("--prompt and --prompt-file: expected one of them, found both");
    if (o->physics && (o->prompt || o->prompt_file || o->chat))
        gk_usage("--physics: expected no --prompt, --prompt-file or --chat, found one");
    parse_report(o, report);
    if (o->batch && !o->physics)
        gk_usage("--batch: expected with --physics only, found it without");
    if (!o->batch)
        o->batch = o->cuda ? 64 : 1;
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

/* The decoder: S streams of lib/generate.h's CPU decoder (one gk_gen each,
 * stepped in turn) or of lib/gpu.h's (one gk_gpu_dec, a step is one batch of
 * rows). A step feeds tokens[i] to stream streams[i] and gives the logits
 * [n][vocab] in that order. */
typedef struct {
    gk_gen **cpu;      /* [S] on the CPU, else NULL */
    gk_gpu_dec *gpu;   /* on the GPU, else NULL */
    int S, V, T;
    float *rows;       /* [S][V]: the CPU step's logits */
} decoder;

static decoder dec_new(const gk_modelfile *mf, int streams, int cuda)
{
    decoder d = {.S = streams, .V = mf->cfg.model.vocab, .T = mf->cfg.model.seq_len};
    if (cuda) {
        d.gpu = gk_gpu_dec_new(&mf->l, mf->params, streams, d.T, "moe-rollout --device cuda");
        return d;
    }
    d.cpu = gk_calloc((size_t)streams, sizeof *d.cpu);
    for (int s = 0; s < streams; s++)
        d.cpu[s] = gk_gen_new(&mf->l, mf->params, d.T);
    d.rows = gk_malloc((size_t)streams * d.V * sizeof *d.rows);
    return d;
}

static float *dec_step(decoder *d, int n, const int *streams, const int *tokens)
{
    if (d->gpu)
        return gk_gpu_dec_step(d->gpu, n, streams, tokens);
    for (int i = 0; i < n; i++)
        memcpy(d->rows + (size_t)i * d->V, gk_gen_step(d->cpu[streams[i]], tokens[i]),
               (size_t)d->V * sizeof *d->rows);
    return d->rows;
}

static void dec_reset(decoder *d, int s)
{
    if (d->gpu)
        gk_gpu_dec_reset(d->gpu, s);
    else
        gk_gen_reset(d->cpu[s]);
}

static void dec_free(decoder *d)
{
    for (int s = 0; d->cpu && s < d->S; s++)
        gk_gen_free(d->cpu[s]);
    gk_gpu_dec_free(d->gpu);
    free(d->cpu);
    free(d->rows);
}

/* Why generation in stream S must stop before its next step, or NULL:
 * GENERATED tokens reached the CAP, or the context is full. */
static const char *limit_reason(const decoder *d, int s, long long generated, long long cap)
{
    if (generated == cap)
        return "max_tokens";
    int pos = d->gpu ? gk_gpu_dec_pos(d->gpu, s) : gk_gen_pos(d->cpu[s]);
    return pos == d->T ? "context" : NULL;
}

/* Generate from the prompt, streaming to stdout; the statistics line at the
 * end (unless -q). */
/* The mean floating-point operations of one decoding step at positions
 * FIRST .. LAST of the model of C: 2 per active weight (the products of one
 * row: q, k, v, proj, the chosen experts' or the dense MLP, the head), and
 * the attention over the t + 1 cached rows at position t, 2 (H D) (t + 1)
 * for the scores and as many for the sum of values, per layer. The norms,
 * rotary and the softcap are left out (a few per width, not per weight). */
static double decode_flops(const gk_config *c, long long first, long long last)
{
    int64_t total, active;
    gk_config_params(c, &total, &active);
    double hd = (double)c->model.n_head * gk_config_head_dim(c);
    double mean_rows = (first + last) / 2.0 + 1;
    return 2.0 * (double)active + 4.0 * hd * mean_rows * c->model.n_layer;
}

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
    decoder d = dec_new(mf, 1, o->cuda);
    gk_sampler *s = gk_sampler_new(mf->cfg.model.vocab, &o->so, o->seed);
    double t0 = gk_now();
    float *logits = NULL;
    const int stream = 0;
    for (int i = 0; i < n; i++)
        logits = dec_step(&d, 1, &stream, &ctx[i]);
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
        const char *limit = limit_reason(&d, 0, generated, o->max_tokens);
        if (limit) {
            reason = limit;
            break;
        }
        logits = dec_step(&d, 1, &stream, &id);
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
        r = jv_object_set(r, jv_string("device"), jv_string(o->cuda ? "cuda" : "cpu"));
        r = jv_object_set(r, jv_string("prompt_tokens"), jv_number((double)pr.n));
        r = jv_object_set(r, jv_string("generated"), jv_number((double)generated));
        r = jv_object_set(r, jv_string("stop_reason"), jv_string(reason));
        r = jv_object_set(r, jv_string("prompt_s"), jv_number(round((t1 - t0) * 1e3) / 1e3));
        r = jv_object_set(r, jv_string("tokens_per_s"),
                          jv_number(secs > 0 ? round(generated / secs * 10) / 10 : 0));
        r = jv_object_set(r, jv_string("flops_per_token"),
                          jv_number(round(decode_flops(&mf->cfg, n - generated, n - 1))));
        r = jv_object_set(r, jv_string("peak_rss_bytes"), jv_number((double)gk_peak_rss()));
        gk_emit(stderr, r);
    }
    free(text.b);
    gk_sampler_free(s);
    dec_free(&d);
    free(ctx);
    gk_ids_free(&pr);
}

/* --physics: the summary's accumulators. A bucket is a set of scenes (a
 * type, a split, everything) counted over all its scenes or over the
 * fittable ones only: per frame the sum and count of the errors of scenes
 * with a well-formed frame there. */
typedef struct {
    long long scenes, malformed, *cnt;
    double *sum;
} bucket;

typedef struct {
    char *name;
    bucket b[2]; /* [0] all scenes, [1] the fittable ones */
    int heldout;
} type_acc;

typedef struct {
    int ntypes;
    type_acc *types;
    bucket split[2][2], total[2]; /* split[heldout][fittable?] */
} summary;

static void bucket_init(bucket *b, int frames)
{
    *b = (bucket){.cnt = gk_calloc((size_t)frames, sizeof *b->cnt),
                  .sum = gk_calloc((size_t)frames, sizeof *b->sum)};
}

static void bucket_add(bucket *b, const double *err, int frames)
{
    b->scenes++;
    for (int j = 0; j < frames; j++) {
        if (isnan(err[j])) {
            b->malformed++;
        } else {
            b->sum[j] += err[j];
            b->cnt[j]++;
        }
    }
}

static double round4(double x) { return round(x * 1e4) / 1e4; }

/* {"scenes", "malformed_frames", "err": {"F": mean}, "n": {"F": count}} at
 * the report frames; a mean over no scene is null. */
static jv bucket_json(const bucket *b, const options *o)
{
    jv err = jv_object(), n = jv_object();
    for (int i = 0; i < o->nreport; i++) {
        int j = o->report[i] - 1;
        char key[16];
        snprintf(key, sizeof key, "%d", o->report[i]);
        err = jv_object_set(err, jv_string(key),
                            b->cnt[j] ? jv_number(round4(b->sum[j] / b->cnt[j])) : jv_null());
        n = jv_object_set(n, jv_string(key), jv_number((double)b->cnt[j]));
    }
    jv r = jv_object();
    r = jv_object_set(r, jv_string("scenes"), jv_number((double)b->scenes));
    r = jv_object_set(r, jv_string("malformed_frames"), jv_number((double)b->malformed));
    r = jv_object_set(r, jv_string("err"), err);
    return jv_object_set(r, jv_string("n"), n);
}

static jv pair_json(const bucket b[2], const options *o)
{
    jv r = jv_object_set(jv_object(), jv_string("all"), bucket_json(&b[0], o));
    return jv_object_set(r, jv_string("fittable"), bucket_json(&b[1], o));
}

static void bucket_free(bucket *b)
{
    free(b->cnt);
    free(b->sum);
}

/* Field KEY of OBJ (consumed: the result is its own reference) of kind
 * KIND, or die naming WHERE and the field. */
static jv field(jv obj, const char *key, jv_kind kind, const char *where)
{
    jv v = jv_object_get(obj, jv_string(key));
    if (jv_get_kind(v) == JV_KIND_INVALID) /* no such field */
        gk_die("%s: field %s: expected a %s, found none", where, key, jv_kind_name(kind));
    if (jv_get_kind(v) != kind)
        gk_die("%s: field %s: expected a %s, found a %s", where, key, jv_kind_name(kind),
               jv_kind_name(jv_get_kind(v)));
    return v;
}

/* The point [x, y] at V (consumed) into XY, or die. */
static void truth_point(jv v, double xy[2], const char *where, int frame, int obj)
{
    for (int c = 0; c < 2; c++) {
        jv x = jv_get_kind(v) == JV_KIND_ARRAY && jv_array_length(jv_copy(v)) == 2
                   ? jv_array_get(jv_copy(v), c)
                   : jv_invalid();
        if (jv_get_kind(x) != JV_KIND_NUMBER)
            gk_die("%s: field truth.frames[%d][%d]: expected a point [x, y], found other JSON",
                   where, frame, obj);
        xy[c] = jv_number_value(x);
        jv_free(x);
    }
    jv_free(v);
}

/* One scene of --physics: what its JSON line gave (the prompt, the truth of
 * the frames to score) and its rollout's state. */
typedef struct {
    jv type, split, index;
    int heldout, nobj, fittable;
    double wh[2], *tr;   /* world size; truth [F][nobj][2] */
    gk_ids ids;          /* the prompt's tokens */
    size_t truth_tokens; /* the prompt and the true frames, as tokens */
    size_t fed;          /* prompt tokens fed so far */
    int next;            /* the token the next step feeds once the prompt is in */
    char *gen;           /* the generated bytes */
    size_t gn, gcap;
    long long lines, generated, want, cap;
    const char *reason;  /* why the rollout ended; NULL while it runs */
} scene;

/* Read scene SC (consumed), the JSON line WHERE names, into *S: its fields,
 * the truth of frames K+1 .. K+F, the prompt (the header and frames 1..K)
 * and the fittable test (the text through frame K+F fits the context). */
static void scene_open(const options *o, const gk_modelfile *mf, jv sc, const char *where,
                       scene *s)
{
    const int K = o->prompt_frames, F = o->frames, seq = mf->cfg.model.seq_len;
    *s = (scene){0};
    s->type = field(jv_copy(sc), "type", JV_KIND_STRING, where);
    s->split = field(jv_copy(sc), "split", JV_KIND_STRING, where);
    s->index = field(jv_copy(sc), "scene", JV_KIND_NUMBER, where);
    jv text = field(jv_copy(sc), "text", JV_KIND_STRING, where);
    jv truth = field(jv_copy(sc), "truth", JV_KIND_OBJECT, where);
    jv world = field(jv_copy(truth), "world", JV_KIND_ARRAY, where);
    jv frames = field(jv_copy(truth), "frames", JV_KIND_ARRAY, where);
    const char *sp = jv_string_value(s->split);
    s->heldout = !strcmp(sp, "heldout");
    if (!s->heldout && strcmp(sp, "trained"))
        gk_die("%s: field split: expected \"trained\" or \"heldout\", found \"%s\"", where, sp);
    truth_point(jv_copy(world), s->wh, where, -1, -1);
    if (!(s->wh[0] > 0 && s->wh[1] > 0))
        gk_die("%s: field truth.world: expected a positive width and height, found %g, %g",
               where, s->wh[0], s->wh[1]);

    const char *t = jv_string_value(text);
    size_t len = (size_t)jv_string_length_bytes(jv_copy(text)), p = 0, prompt_len = 0;
    int nobj = s->nobj = gk_phys_header(t, len, &p);
    if (nobj < 1)
        gk_die("%s: field text: expected a phys-gen scene (a header with objects, then Frame "
               "lines), found %s", where, nobj < 0 ? "no Frame line" : "no object");
    for (int f = 1; f <= K + F; f++) {
        size_t k = gk_phys_parse_frame(t + p, len - p, f, nobj, NULL, NULL, NULL);
        if (!k)
            gk_die("%s: field text: expected frame %d of %d objects by phys-gen(1)'s grammar "
                   "(--prompt-frames %d + --frames %d), found other text", where, f, nobj, K, F);
        p += k;
        if (f == K)
            prompt_len = p;
    }
    if (jv_array_length(jv_copy(frames)) < K + F)
        gk_die("%s: field truth.frames: expected at least %d frames, found %d", where, K + F,
               jv_array_length(jv_copy(frames)));
    s->tr = gk_malloc((size_t)F * nobj * 2 * sizeof *s->tr);
    for (int j = 0; j < F; j++) { /* generated frame j+1 is frame K+j+1: truth.frames[K+j] */
        jv fr = jv_array_get(jv_copy(frames), K + j);
        if (jv_get_kind(fr) != JV_KIND_ARRAY || jv_array_length(jv_copy(fr)) != nobj)
            gk_die("%s: field truth.frames[%d]: expected %d points (the header's objects), "
                   "found other JSON", where, K + j, nobj);
        for (int i = 0; i < nobj; i++)
            truth_point(jv_array_get(jv_copy(fr), i), s->tr + ((size_t)j * nobj + i) * 2, where,
                        K + j, i);
        jv_free(fr);
    }
    gk_ids full = {0};
    const gk_tok *tok = mf->tok;
    gk_ids_push(&s->ids, (uint16_t)gk_tok_bos(tok));
    gk_ids_push(&full, (uint16_t)gk_tok_bos(tok));
    gk_encoder *enc = gk_encoder_new(tok);
    gk_encode_text(enc, (const uint8_t *)t, prompt_len, &s->ids);
    gk_encode_text(enc, (const uint8_t *)t, p, &full);
    gk_encoder_free(enc);
    s->truth_tokens = full.n;
    s->fittable = full.n <= (size_t)seq;
    gk_ids_free(&full);
    /* greedy rollout until F frames' lines are written (F (NOBJ + 1)
     * newlines), a BOS, a full context, or the cap of 64 tokens a line */
    s->want = (long long)F * (nobj + 1), s->cap = 64 * s->want;
    if (s->ids.n > (size_t)seq)
        s->reason = "prompt_too_long";
    jv_free(text), jv_free(truth), jv_free(world), jv_free(frames), jv_free(sc);
}

/* Scene S, in stream I of D, after the step that gave LOGITS at its newest
 * position: past the prompt, take the greedy token, append its bytes, and
 * end the rollout (s->reason) at a BOS, at the last wanted line or at a
 * limit; else it is the next token to feed. */
static void scene_advance(const gk_modelfile *mf, const decoder *d, int i, scene *s,
                          const float *logits)
{
    const gk_tok *tok = mf->tok;
    if (s->fed < s->ids.n)
        return;
    int id = gk_argmax(logits, mf->cfg.model.vocab);
    s->generated++;
    if (id == (int)gk_tok_bos(tok)) {
        s->reason = "bos";
        return;
    }
    if (s->gn + tok->len[id] + 1 > s->gcap) {
        s->gcap = 2 * (s->gn + tok->len[id] + 1);
        s->gen = gk_realloc(s->gen, s->gcap);
    }
    for (uint32_t b = 0; b < tok->len[id]; b++)
        s->lines += (s->gen[s->gn++] = (char)tok->bytes[id][b]) == '\n';
    if (s->lines >= s->want)
        s->reason = "frames";
    else
        s->reason = limit_reason(d, i, s->generated, s->cap);
    s->next = id;
}

/* Roll out the N scenes SC together, scene i in stream i of D: each step
 * feeds every running scene its next token (prompt tokens first, then what
 * it generated), one row each; *FED counts the tokens fed. */
static void rollout(const gk_modelfile *mf, decoder *d, scene *sc, int n, long long *fed)
{
    int *streams = gk_malloc((size_t)n * sizeof *streams);
    int *tokens = gk_malloc((size_t)n * sizeof *tokens);
    for (int i = 0; i < n; i++)
        dec_reset(d, i);
    for (;;) {
        int rows = 0;
        for (int i = 0; i < n; i++) {
            scene *s = &sc[i];
            if (s->reason)
                continue;
            streams[rows] = i;
            tokens[rows++] = s->fed < s->ids.n ? s->ids.v[s->fed++] : s->next;
        }
        if (!rows)
            break;
        const float *logits = dec_step(d, rows, streams, tokens);
        *fed += rows;
        for (int r = 0; r < rows; r++)
            scene_advance(mf, d, streams[r], &sc[streams[r]], logits + (size_t)r * d->V);
    }
    free(streams);
    free(tokens);
}

/* Score scene S's rollout: one JSON line on stdout, the errors into SUM;
 * frees the scene. */
static void scene_close(const options *o, scene *s, summary *sum)
{
    const int K = o->prompt_frames, F = o->frames;
    double *err = gk_malloc((size_t)F * sizeof *err);
    int good = gk_phys_score(s->gen ? s->gen : "", s->gn, K + 1, F, s->nobj, s->tr, s->wh, err);
    jv r = jv_object();
    r = jv_object_set(r, jv_string("scene"), jv_copy(s->index));
    r = jv_object_set(r, jv_string("type"), jv_copy(s->type));
    r = jv_object_set(r, jv_string("split"), jv_copy(s->split));
    r = jv_object_set(r, jv_string("fittable"), jv_bool(s->fittable));
    r = jv_object_set(r, jv_string("malformed_at"), good < F ? jv_number(good + 1) : jv_null());
    jv ea = jv_array();
    for (int j = 0; j < F; j++)
        ea = jv_array_append(ea, isnan(err[j]) ? jv_null() : jv_number(round4(err[j])));
    r = jv_object_set(r, jv_string("err"), ea);
    r = jv_object_set(r, jv_string("prompt_tokens"), jv_number((double)s->ids.n));
    r = jv_object_set(r, jv_string("truth_tokens"), jv_number((double)s->truth_tokens));
    r = jv_object_set(r, jv_string("generated"), jv_number((double)s->generated));
    r = jv_object_set(r, jv_string("stop_reason"), jv_string(s->reason));
    gk_emit(stdout, r);

    const char *name = jv_string_value(s->type);
    int ti = 0;
    while (ti < sum->ntypes && strcmp(sum->types[ti].name, name))
        ti++;
    if (ti == sum->ntypes) {
        sum->types = gk_realloc(sum->types, (size_t)(ti + 1) * sizeof *sum->types);
        type_acc *a = &sum->types[sum->ntypes++];
        a->name = gk_strdup(name);
        a->heldout = s->heldout;
        bucket_init(&a->b[0], F);
        bucket_init(&a->b[1], F);
    }
    for (int fit = 0; fit <= s->fittable; fit++) {
        bucket_add(&sum->types[ti].b[fit], err, F);
        bucket_add(&sum->split[s->heldout][fit], err, F);
        bucket_add(&sum->total[fit], err, F);
    }
    free(err);
    free(s->gen);
    free(s->tr);
    gk_ids_free(&s->ids);
    jv_free(s->type), jv_free(s->split), jv_free(s->index);
}

/* --physics: every scene of the JSONL file, then the summary line. */
static void score_physics(const options *o, const gk_modelfile *mf)
{
    size_t n = 0;
    char *file = (char *)gk_read_file(o->physics, &n);
    summary sum = {0};
    for (int h = 0; h < 2; h++)
        for (int f = 0; f < 2; f++)
            bucket_init(&sum.split[h][f], o->frames);
    bucket_init(&sum.total[0], o->frames);
    bucket_init(&sum.total[1], o->frames);
    decoder d = dec_new(mf, o->batch, o->cuda);
    scene *group = gk_calloc((size_t)o->batch, sizeof *group);
    int ng = 0;
    long long lineno = 0, fed = 0;
    double t0 = gk_now();
    for (size_t p = 0; p < n;) {
        char *nl = memchr(file + p, '\n', n - p);
        size_t end = nl ? (size_t)(nl - file) : n;
        lineno++;
        char where[4200];
        snprintf(where, sizeof where, "%s: line %lld", o->physics, lineno);
        if (end > p) { /* a blank line (the file's last) is no scene */
            if (end - p > INT_MAX)
                gk_die("%s: expected a JSON line under 2 GiB, found %zu bytes", where, end - p);
            jv sc = jv_parse_sized(file + p, (int)(end - p));
            if (jv_get_kind(sc) != JV_KIND_OBJECT)
                gk_die("%s: expected a phys-gen JSON object, found %s", where,
                       jv_get_kind(sc) == JV_KIND_INVALID ? "invalid JSON"
                                                         : jv_kind_name(jv_get_kind(sc)));
            scene_open(o, mf, sc, where, &group[ng++]);
        }
        p = end + 1;
        if (ng == o->batch || (p >= n && ng)) { /* a full group, or the last one */
            rollout(mf, &d, group, ng, &fed);
            for (int i = 0; i < ng; i++)
                scene_close(o, &group[i], &sum);
            ng = 0;
        }
    }
    double secs = gk_now() - t0;
    if (!sum.total[0].scenes)
        gk_die("%s: expected phys-gen JSON lines, found no scene", o->physics);
    jv types = jv_object(), reps = jv_array();
    for (int i = 0; i < sum.ntypes; i++) {
        jv t = pair_json(sum.types[i].b, o);
        t = jv_object_set(t, jv_string("split"),
                          jv_string(sum.types[i].heldout ? "heldout" : "trained"));
        types = jv_object_set(types, jv_string(sum.types[i].name), t);
    }
    for (int i = 0; i < o->nreport; i++)
        reps = jv_array_append(reps, jv_number(o->report[i]));
    long long total = sum.total[0].scenes * o->frames;
    jv s = jv_object();
    s = jv_object_set(s, jv_string("model"), jv_string(o->model));
    s = jv_object_set(s, jv_string("prompt_frames"), jv_number(o->prompt_frames));
    s = jv_object_set(s, jv_string("frames"), jv_number(o->frames));
    s = jv_object_set(s, jv_string("report_frames"), reps);
    s = jv_object_set(s, jv_string("scenes"), jv_number((double)sum.total[0].scenes));
    s = jv_object_set(s, jv_string("fittable_scenes"), jv_number((double)sum.total[1].scenes));
    s = jv_object_set(s, jv_string("malformed_frames"), jv_number((double)sum.total[0].malformed));
    s = jv_object_set(s, jv_string("malformed_rate"),
                      jv_number(round4((double)sum.total[0].malformed / (double)total)));
    s = jv_object_set(s, jv_string("all"), pair_json(sum.total, o));
    s = jv_object_set(s, jv_string("trained"), pair_json(sum.split[0], o));
    s = jv_object_set(s, jv_string("heldout"), pair_json(sum.split[1], o));
    s = jv_object_set(s, jv_string("types"), types);
    s = jv_object_set(s, jv_string("device"), jv_string(o->cuda ? "cuda" : "cpu"));
    s = jv_object_set(s, jv_string("batch"), jv_number(o->batch));
    s = jv_object_set(s, jv_string("fed_tokens"), jv_number((double)fed));
    s = jv_object_set(s, jv_string("tokens_per_s"),
                      jv_number(secs > 0 ? round(fed / secs * 10) / 10 : 0));
    s = jv_object_set(s, jv_string("peak_rss_bytes"), jv_number((double)gk_peak_rss()));
    gk_emit(stdout, jv_object_set(jv_object(), jv_string("summary"), s));
    for (int i = 0; i < sum.ntypes; i++) {
        free(sum.types[i].name);
        bucket_free(&sum.types[i].b[0]);
        bucket_free(&sum.types[i].b[1]);
    }
    free(sum.types);
    for (int h = 0; h < 2; h++)
        for (int f = 0; f < 2; f++)
            bucket_free(&sum.split[h][f]);
    bucket_free(&sum.total[0]);
    bucket_free(&sum.total[1]);
    dec_free(&d);
    free(group);
    free(file);
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
    if (o.physics)
        score_physics(&o, &mf);
    else
        generate_text(&o, &mf);
    gk_modelfile_free(&mf);
    free(o.stop);
    return 0;
}
