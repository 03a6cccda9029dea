/* moe-eval: val_loss and val_bpb of a trained model over validation shards,
 * as one JSON line.
 *
 * By default the pass is train_gpt.py's eval_val, the number a parameter-golf
 * record reports and the one moe-train logs: the val tokens cut to whole
 * sequences of the model's seq_len, scored as contiguous non-overlapping
 * sequences (lib/loader.h's gk_val_run, with moe-train's batches, so the two
 * agree to the last bit). --stride S --context T is the sliding-window pass
 * of lib/evalwin.h over the same targets: each scored once, most of them with
 * T - S or more tokens of context instead of 0..seq_len-1.
 *
 * The model is a moe-train or moe-avg checkpoint, a moe-quant .qst or a
 * moe-pack artifact, told by its content (the first two are safetensors files
 * whose golfkit.format says which; a .pack starts with its magic), not by its
 * name (lib/modelfile.h). A .qst is dequantized to the float parameters and evaluated by the
 * same code, so its val_bpb next to the checkpoint's is the quantization tax.
 * A .pack is evaluated from what it holds, the .qst and the tokenizer: the
 * number a record is judged by.
 *
 * --device cuda runs the forwards on the GPU backend (lib/gpu.h): bf16
 * matrix products, so the loss differs from the CPU's by bf16 rounding (the
 * CPU stays the reference); the windows and the float64 sums are the same. */
#include "config.h"
#include "gpu.h"
#include "evalwin.h"
#include "jsonl.h"
#include "loader.h"
#include "model.h"
#include "modelfile.h"
#include "progress.h"
#include "tok.h"
#include "util.h"

#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: moe-eval [options] MODEL --val GLOB\n"
           "\n"
           "  MODEL                 a moe-train or moe-avg checkpoint, a moe-quant .qst or\n"
           "                        a moe-pack .pack\n"
           "      --val GLOB        validation shards (repeatable)\n"
           "  -t, --tokenizer TOK   the .tok of the shards, for val_bpb (default: the one in\n"
           "                        a .pack; else val_bpb is null)\n"
           "      --stride S        sliding-window evaluation: S new targets per window\n"
           "      --context T       window length, S <= T <= seq_len (default: seq_len)\n"
           "      --max-tokens N    only the first N targets (cut to whole sequences)\n"
           "      --batch-tokens N  tokens per forward (default: train.val_batch_tokens /\n"
           "                        train.grad_accum of the model's config)\n"
           "      --threads N       OpenMP and OpenBLAS threads (default: number of CPUs)\n"
           "      --device DEV      cpu (the reference, default) or cuda (the first GPU)\n"
           "      --progress        show progress even when stderr is not a terminal\n"
           "  -q, --quiet           no progress\n"
           "  -h, --help            this help\n"
           "\n"
           "See moe-eval(1).\n");
    exit(0);
}

typedef struct {
    const char *model, *tokenizer;
    char **val;
    int nval, threads, stride, context, cuda;
    int64_t max_tokens, batch_tokens;
} options;

static void parse_args(int argc, char **argv, options *o)
{
    enum { O_VAL = 256, O_STRIDE, O_CONTEXT, O_MAX, O_BATCH, O_THREADS, O_PROGRESS, O_DEVICE };
    static const struct option opts[] = {
        {"val", required_argument, 0, O_VAL},         {"tokenizer", required_argument, 0, 't'},
        {"stride", required_argument, 0, O_STRIDE},   {"context", required_argument, 0, O_CONTEXT},
        {"max-tokens", required_argument, 0, O_MAX},  {"batch-tokens", required_argument, 0, O_BATCH},
        {"threads", required_argument, 0, O_THREADS}, {"progress", no_argument, 0, O_PROGRESS},
        {"device", required_argument, 0, O_DEVICE},
        {"quiet", no_argument, 0, 'q'},               {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    *o = (options){.threads = gk_ncpu()};
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":t:qh", opts, NULL)) != -1) {
        switch (ch) {
        case O_VAL:
            o->val = gk_realloc(o->val, (size_t)(o->nval + 1) * sizeof *o->val);
            o->val[o->nval++] = optarg;
            break;
        case 't': o->tokenizer = optarg; break;
        case O_STRIDE: o->stride = (int)gk_parse_int("--stride", optarg, 1, INT32_MAX); break;
        case O_CONTEXT: o->context = (int)gk_parse_int("--context", optarg, 1, INT32_MAX); break;
        case O_MAX: o->max_tokens = gk_parse_int("--max-tokens", optarg, 1, INT64_MAX); break;
        case O_BATCH:
            o->batch_tokens = gk_parse_int("--batch-tokens", optarg, 1, INT32_MAX);
            break;
        case O_THREADS: o->threads = (int)gk_parse_int("--threads", optarg, 1, 1024); break;
        case O_PROGRESS: gk_progress_force(1); break;
        case O_DEVICE: o->cuda = gk_parse_device(optarg); break;
        case 'q': gk_progress_force(-1); break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    if (optind != argc - 1)
        gk_usage("expected one MODEL, found %d", argc - optind);
    o->model = argv[optind];
    if (!o->nval)
        gk_usage("expected validation shards (--val GLOB), found none");
    if (o->context && !o->stride)
        gk_usage("--context: expected it with --stride, found it alone");
}

/* gk_val_run's forward: the GPU model when there is one, else the CPU model
 * (as gk_val_run_cpu's, so the losses are moe-train's bit for bit), one
 * model object per batch shape; and the progress meter after each batch. */
typedef struct {
    gk_model_cache cache;
    const float *params;
    gk_gpu *gpu;
    gk_progress *pg;
    uint64_t done;
} flat_ctx;

static double flat_forward(void *ctx, int B, int T, const int *tokens, const int *targets)
{
    flat_ctx *c = ctx;
    double loss = c->gpu ? gk_gpu_forward_rows(c->gpu, B, tokens, targets, NULL)
                         : gk_model_forward_f32(gk_model_cache_get(&c->cache, B, T), c->params,
                                                tokens, targets);
    c->done += (uint64_t)B * (uint64_t)T;
    gk_progress_update(c->pg, c->done);
    return loss;
}

static double gpu_rows(void *ctx, int B, int T, const int *tokens, const int *targets,
                       double *losses)
{
    (void)T; /* the context the GPU model was made for */
    return gk_gpu_forward_rows(ctx, B, tokens, targets, losses);
}

static void window_progress(void *ctx, int64_t done)
{
    gk_progress_update(ctx, (uint64_t)done);
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    options o;
    parse_args(argc, argv, &o);

    /* the model and its tokenizer (-t, else a .pack's own), told by content */
    gk_modelfile mf;
    gk_modelfile_load(&mf, o.model, o.tokenizer);
    const gk_config cfg = mf.cfg;
    const gk_layout *lp = &mf.l;
    const float *params = mf.params;
    const gk_tok *tok = mf.tok;
    const char *kind = mf.kind;

    int T = cfg.model.seq_len;
    if (o.stride) {
        int ctx = o.context ? o.context : T;
        if (ctx > T)
            gk_usage("--context: expected at most the model's seq_len %d, found %d", T, ctx);
        if (o.stride > ctx)
            gk_usage("--stride: expected at most the context %d, found %d", ctx, o.stride);
    }
    if (o.max_tokens && o.max_tokens < T)
        gk_usage("--max-tokens: expected at least the model's seq_len %d, found %lld", T,
                 (long long)o.max_tokens);
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
    gk_val *val = gk_val_load((const char *const *)o.val, o.nval, (uint32_t)cfg.model.vocab, T,
                              o.max_tokens);
    int64_t batch = o.batch_tokens ? o.batch_tokens
                                   : cfg.train.val_batch_tokens / cfg.train.grad_accum;

    double t0 = gk_now();
    gk_progress pg;
    gk_progress_start(&pg, "moe-eval", "tokens", (uint64_t)(val->n - 1));
    gk_val_sums s;
    gk_gpu *gpu = NULL;
    const char *prog = "moe-eval --device cuda";
    int context = T, stride = T;
    if (o.stride) {
        context = o.context ? o.context : T;
        stride = o.stride;
        if (o.cuda) {
            gpu = gk_gpu_new(lp, gk_evalwin_per_batch(val, context, stride, batch), context, 0,
                             prog);
            gk_gpu_set_params(gpu, params);
            s = gk_evalwin_run(val, lp, gpu_rows, gpu, tok, context, stride, batch,
                               window_progress, &pg);
        } else {
            s = gk_evalwin_run_cpu(val, lp, params, tok, context, stride, batch,
                                   window_progress, &pg);
        }
    } else {
        /* eval_val's batches of whole sequences; a batch smaller than one
         * sequence would hold none: one sequence per forward then. */
        if (batch < T)
            batch = T;
        if (o.cuda) {
            gpu = gk_gpu_new(lp, (int)(batch / T), T, 0, prog);
            gk_gpu_set_params(gpu, params);
        }
        flat_ctx c = {{.l = lp}, params, gpu, &pg, 0};
        s = gk_val_run(val, flat_forward, &c, tok, batch, 1, 0, 1);
        gk_model_cache_free(&c.cache);
    }
    const char *device = gpu ? gk_gpu_device_name(gpu) : "cpu";
    gk_progress_end(&pg, (uint64_t)s.tokens);
    double secs = gk_now() - t0, loss, bpb;
    gk_val_result(&s, &loss, &bpb);

    jv r = jv_object();
    r = jv_object_set(r, jv_string("model"), jv_string(o.model));
    r = jv_object_set(r, jv_string("kind"), jv_string(kind));
    r = jv_object_set(r, jv_string("val_loss"), jv_number(loss));
    r = jv_object_set(r, jv_string("val_bpb"), isnan(bpb) ? jv_null() : jv_number(bpb));
    r = jv_object_set(r, jv_string("tokens"), jv_number(s.tokens));
    r = jv_object_set(r, jv_string("bytes"), tok ? jv_number(s.bytes) : jv_null());
    r = jv_object_set(r, jv_string("seconds"), jv_number(round(secs * 1e3) / 1e3));
    r = jv_object_set(r, jv_string("eval"), jv_string(o.stride ? "sliding" : "non-overlapping"));
    r = jv_object_set(r, jv_string("context"), jv_number(context));
    r = jv_object_set(r, jv_string("stride"), jv_number(stride));
    r = jv_object_set(r, jv_string("batch_tokens"), jv_number((double)batch));
    r = jv_object_set(r, jv_string("device"), jv_string(device));
    gk_emit(stdout, r);
    gk_gpu_free(gpu);

    gk_val_free(val);
    gk_modelfile_free(&mf);
    free(o.val);
    return 0;
}
