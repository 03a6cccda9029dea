/* moe-train: train the transformer of a JSON config on token shards, on the
 * CPU (the reference backend) or on a CUDA GPU (--device cuda, lib/gpu.h),
 * writing checkpoints and a JSON-lines log.
 *
 * The loop is train_gpt.py's: each step takes grad_accum micro-batches from
 * the loader, back-propagates each with loss scale 1/grad_accum, clips the
 * global gradient norm, sets the learning-rate scale from the schedule, takes
 * the Muon and Adam steps, and moves the MoE router biases by the step's expert
 * load. Validation runs every val_every steps and at the end; checkpoints are
 * written every ckpt_every steps and at the end, each atomically. A resumed run
 * continues bit for bit: the checkpoint holds the weights, the optimizer state,
 * the step and the data position (and the EMA of the weights, when
 * train.ema_decay > 0, so that too continues bit for bit).
 *
 * On the GPU the weights, gradients, optimizer state and EMA live on the
 * device; the host copies are brought up to date before each checkpoint and
 * validation reads the device model directly, so the loop only waits for the
 * device once per step (the loss and the gradient norm). */
#include "ckpt.h"
#include "config.h"
#include "gpu.h"
#include "io.h"
#include "jsonl.h"
#include "loader.h"
#include "model.h"
#include "moe.h"
#include "optim.h"
#include "progress.h"
#include "schedule.h"
#include "tok.h"
#include "util.h"

#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GK_VERSION
#define GK_VERSION "unknown"
#endif

static void usage(void)
{
    printf("usage: moe-train [options] --train GLOB [--val GLOB] [-o DIR]\n"
           "\n"
           "  -c, --config FILE     JSON config (default: the parameter-golf baseline)\n"
           "      --set KEY=VALUE   override one config key, e.g. model.n_layer=4 (repeatable)\n"
           "      --print-config    print the effective config as JSON and exit\n"
           "      --train GLOB      training shards (repeatable)\n"
           "      --val GLOB        validation shards (repeatable)\n"
           "  -t, --tokenizer TOK   the .tok of the shards, for val_bpb\n"
           "  -o, --out DIR         checkpoint directory (default: ckpt)\n"
           "      --resume CKPT     continue from a checkpoint\n"
           "      --save-init       also write the initial weights as DIR/ckpt_000000.safetensors\n"
           "      --stop-at STEP    stop after STEP optimizer steps (the schedule still counts\n"
           "                        to train.steps)\n"
           "      --max-seconds S   wall-clock cap (train.max_seconds)\n"
           "      --seed N          seed of the initial weights (train.seed)\n"
           "      --device DEV      cpu (the reference, default) or cuda (the first GPU)\n"
           "      --threads N       OpenMP and OpenBLAS threads (default: number of CPUs)\n"
           "      --log FILE        JSON-lines log to FILE (default: standard output)\n"
           "      --progress        show progress even when stderr is not a terminal\n"
           "  -q, --quiet           no progress\n"
           "  -h, --help            this help\n"
           "\n"
           "See moe-train(1), moe-config(5) and moe-ckpt(5).\n");
    exit(0);
}

typedef struct {
    const char *config, *out, *resume, *log, *tokenizer;
    char **sets, **train, **val;
    int nsets, ntrain, nval;
    int print_config, save_init, threads, cuda;
    int64_t stop_at;
} options;

static char **push(char **v, int *n, char *s)
{
    v = gk_realloc(v, (size_t)(*n + 1) * sizeof *v);
    v[(*n)++] = s;
    return v;
}

static void parse_args(int argc, char **argv, options *o)
{
    enum { O_SET = 256, O_PRINT, O_TRAIN, O_VAL, O_RESUME, O_SAVE_INIT, O_STOP_AT, O_MAXSEC,
           O_SEED, O_THREADS, O_LOG, O_PROGRESS, O_DEVICE };
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},     {"set", required_argument, 0, O_SET},
        {"print-config", no_argument, 0, O_PRINT}, {"train", required_argument, 0, O_TRAIN},
        {"val", required_argument, 0, O_VAL},      {"tokenizer", required_argument, 0, 't'},
        {"out", required_argument, 0, 'o'},        {"resume", required_argument, 0, O_RESUME},
        {"save-init", no_argument, 0, O_SAVE_INIT}, {"stop-at", required_argument, 0, O_STOP_AT},
        {"max-seconds", required_argument, 0, O_MAXSEC}, {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS}, {"log", required_argument, 0, O_LOG},
        {"progress", no_argument, 0, O_PROGRESS},  {"quiet", no_argument, 0, 'q'},
        {"device", required_argument, 0, O_DEVICE},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    char buf[64];
    int ch;
    *o = (options){.out = "ckpt", .threads = gk_ncpu(), .stop_at = -1};
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":c:t:o:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config = optarg; break;
        case O_SET: o->sets = push(o->sets, &o->nsets, optarg); break;
        case O_PRINT: o->print_config = 1; break;
        case O_TRAIN: o->train = push(o->train, &o->ntrain, optarg); break;
        case O_VAL: o->val = push(o->val, &o->nval, optarg); break;
        case 't': o->tokenizer = optarg; break;
        case 'o': o->out = optarg; break;
        case O_RESUME: o->resume = optarg; break;
        case O_SAVE_INIT: o->save_init = 1; break;
        case O_STOP_AT: o->stop_at = gk_parse_int("--stop-at", optarg, 0, INT64_MAX); break;
        case O_MAXSEC:
            gk_parse_double("--max-seconds", optarg, 0, 1e9);
            snprintf(buf, sizeof buf, "train.max_seconds=%s", optarg);
            o->sets = push(o->sets, &o->nsets, gk_strdup(buf));
            break;
        case O_SEED:
            gk_parse_int("--seed", optarg, 0, INT64_MAX);
            snprintf(buf, sizeof buf, "train.seed=%s", optarg);
            o->sets = push(o->sets, &o->nsets, gk_strdup(buf));
            break;
        case O_THREADS: o->threads = (int)gk_parse_int("--threads", optarg, 1, 1024); break;
        case O_LOG: o->log = optarg; break;
        case O_PROGRESS: gk_progress_force(1); break;
        case O_DEVICE: o->cuda = gk_parse_device(optarg); break;
        case 'q': gk_progress_force(-1); break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    if (optind < argc)
        gk_usage("expected options only, found '%s' (shards go after --train)", argv[optind]);
    if (o->resume && o->config)
        gk_usage("--resume takes the config from the checkpoint; --config: expected none, "
                 "found '%s' (use --set to change a key)", o->config);
}

/* The effective config: defaults or the checkpoint's, then --config, then --set. */
static void load_config(const options *o, const gk_ckpt *ck, gk_config *c)
{
    if (ck)
        *c = *gk_ckpt_config(ck);
    else
        gk_config_defaults(c);
    if (o->config)
        gk_config_apply_file(c, o->config);
    for (int i = 0; i < o->nsets; i++)
        gk_config_set(c, o->sets[i], "--set");
    gk_config_check(c, o->config ? o->config : "config");
}

static void ckpt_path(char *buf, size_t n, const char *dir, int64_t step)
{
    if (step < 0)
        snprintf(buf, n, "%s/final.safetensors", dir);
    else
        snprintf(buf, n, "%s/ckpt_%06lld.safetensors", dir, (long long)step);
}

/* The log is a record of the run, written a line at a time as it goes (so
 * `tail -f` works and a crash keeps what was logged), not an artifact: no
 * temporary and rename. NULL: standard output. */
static FILE *open_log(const char *path)
{
    if (!path)
        return stdout;
    FILE *fp = fopen(path, "w");
    if (fp)
        return fp;
    gk_die("%s: cannot create the log: %s", path, strerror(errno));
}

/* ema = decay * ema + (1 - decay) * params over the trained tensors, in
 * float32 as the weights are (a double average would double its memory and
 * buy nothing moe-quant keeps). Buffers are state, not weights: moe-avg takes
 * them from the parameters. */
static void ema_update(const gk_layout *l, float *ema, const float *params, double decay)
{
    float d = (float)decay, e = 1.0f - d;
    for (int i = 0; i < l->n_params; i++) {
        const gk_param *p = &l->params[i];
        if (p->group == GK_GROUP_BUFFER)
            continue;
        for (size_t j = p->offset; j < p->offset + p->numel; j++)
            ema[j] = d * ema[j] + e * params[j];
    }
}

static double gpu_val_forward(void *ctx, int B, int T, const int *tokens, const int *targets)
{
    (void)T; /* the device model's, checked by gk_val_load against seq_len */
    return gk_gpu_forward_rows(ctx, B, tokens, targets, NULL);
}

/* One validation pass over VAL, on the GPU model when there is one, else on
 * the CPU with PARAMS, logged as {step, val_loss, val_bpb}. */
static void log_validation(FILE *logfp, const gk_val *val, const gk_layout *l,
                           const float *params, gk_gpu *gpu, const gk_tok *tok, int64_t step)
{
    int64_t vbt = l->cfg.train.val_batch_tokens;
    int accum = l->cfg.train.grad_accum;
    gk_val_sums s = gpu ? gk_val_run(val, gpu_val_forward, gpu, tok, vbt, accum, 0, 1)
                        : gk_val_run_cpu(val, l, params, tok, vbt, accum, 0, 1);
    double vl, vb;
    gk_val_result(&s, &vl, &vb);
    jv v = jv_object();
    v = jv_object_set(v, jv_string("step"), jv_number((double)step));
    v = jv_object_set(v, jv_string("val_loss"), jv_number(vl));
    v = jv_object_set(v, jv_string("val_bpb"), isnan(vb) ? jv_null() : jv_number(vb));
    gk_emit(logfp, v);
}

/* The host copies of what the GPU trains, before a checkpoint. */
static void sync_host(gk_gpu *gpu, float *params, float *ema, gk_optim *opt)
{
    if (!gpu)
        return;
    gk_gpu_get_params(gpu, params);
    gk_gpu_get_optim(gpu, opt);
    if (ema)
        gk_gpu_get_ema(gpu, ema);
}

static jv loads_jv(const gk_layout *l, const int64_t *load)
{
    int E = l->cfg.moe.n_experts;
    double *frac = gk_malloc((size_t)l->cfg.model.n_layer * (size_t)E * sizeof *frac);
    gk_moe_load_fractions(l, load, frac);
    jv layers = jv_array();
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        jv row = jv_array();
        for (int e = 0; e < E; e++)
            row = jv_array_append(row, jv_number(round(frac[b * E + e] * 1e4) / 1e4));
        layers = jv_array_append(layers, row);
    }
    free(frac);
    return layers;
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    options o;
    parse_args(argc, argv, &o);
    gk_ckpt *ck = o.resume ? gk_ckpt_open(o.resume) : NULL;
    gk_config cfg;
    load_config(&o, ck, &cfg);
    if (o.print_config) {
        char *text = gk_config_to_json(&cfg);
        fputs(text, stdout);
        free(text);
        return 0;
    }
    if (!o.ntrain)
        gk_usage("expected training shards (--train GLOB), found none");
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);

    gk_layout l;
    gk_layout_init(&l, &cfg);
    float *params = gk_malloc(l.numel * sizeof *params);
    float *grads = gk_malloc(l.numel * sizeof *grads);
    gk_optim *opt = gk_optim_new(&l);
    float *ema = cfg.train.ema_decay > 0 ? gk_malloc(l.numel * sizeof *ema) : NULL;
    gk_train_state ts = {.seed = (uint64_t)cfg.train.seed};
    if (ck) {
        ts = gk_ckpt_state(ck);
        gk_ckpt_read_params(ck, &l, params);
        gk_ckpt_read_optim(ck, opt);
        if (ema)
            gk_ckpt_read_ema(ck, &l, ema);
        gk_ckpt_close(ck);
    } else {
        gk_model_init_params(&l, params, ts.seed);
        if (ema)
            memcpy(ema, params, l.numel * sizeof *ema);
    }
    gk_tok *tok = o.tokenizer ? gk_tok_load(o.tokenizer) : NULL;
    if (tok && tok->vocab != (uint32_t)cfg.model.vocab)
        gk_die("%s: expected vocab %d (model.vocab), found %u", o.tokenizer, cfg.model.vocab,
               tok->vocab);
    gk_loader *ld = gk_loader_open((const char *const *)o.train, o.ntrain,
                                   (uint32_t)cfg.model.vocab, 0, 1);
    if (ck) {
        char where[4200];
        snprintf(where, sizeof where, "%s: field __metadata__ \"golfkit.loader\"", o.resume);
        gk_loader_seek(ld, ts.pos, where);
    }
    gk_val *val = o.nval ? gk_val_load((const char *const *)o.val, o.nval,
                                       (uint32_t)cfg.model.vocab, cfg.model.seq_len,
                                       cfg.train.val_tokens)
                         : NULL;
    gk_out_mkdir(o.out, "checkpoints");
    FILE *logfp = open_log(o.log);

    int64_t per_micro = cfg.train.batch_tokens / cfg.train.grad_accum;
    int B = (int)(per_micro / cfg.model.seq_len), T = cfg.model.seq_len;
    size_t nload = (size_t)cfg.model.n_layer * (size_t)cfg.moe.n_experts;
    gk_gpu *gpu = NULL;
    gk_model_f32 *m = NULL;
    int64_t *load;
    if (o.cuda) {
        gpu = gk_gpu_new(&l, B, T, 1, "moe-train --device cuda");
        gk_gpu_set_params(gpu, params);
        gk_gpu_set_optim(gpu, opt);
        if (ema)
            gk_gpu_set_ema(gpu, ema);
        load = l.moe ? gk_calloc(nload, sizeof *load) : NULL;
    } else {
        m = gk_model_new_f32(&l, B, T);
        load = gk_model_expert_load_f32(m);
    }
    int64_t total, active;
    gk_config_params(&cfg, &total, &active);
    char path[4200];
    jv start = jv_object();
    start = jv_object_set(start, jv_string("event"), jv_string("start"));
    start = jv_object_set(start, jv_string("version"), jv_string(GK_VERSION));
    start = jv_object_set(start, jv_string("params"), jv_number((double)total));
    start = jv_object_set(start, jv_string("active_params"), jv_number((double)active));
    start = jv_object_set(start, jv_string("step"), jv_number((double)ts.step));
    start = jv_object_set(start, jv_string("device"),
                          jv_string(gpu ? gk_gpu_device_name(gpu) : "cpu"));
    if (gpu)
        start = jv_object_set(start, jv_string("device_bytes"),
                              jv_number((double)gk_gpu_plan_bytes(gpu)));
    start = jv_object_set(start, jv_string("config"), gk_config_to_jv(&cfg));
    gk_emit(logfp, start);
    if (o.save_init && !ck) {
        ckpt_path(path, sizeof path, o.out, 0);
        gk_ckpt_save_ex(path, &l, params, ema, NULL, &ts, GK_VERSION, NULL);
    }

    int64_t last = cfg.train.steps;
    if (o.stop_at >= 0 && o.stop_at < last)
        last = o.stop_at;
    gk_progress pg;
    gk_progress_start(&pg, "moe-train", "steps", (uint64_t)last);
    double t0 = gk_now() - ts.elapsed;
    const char *last_ckpt = o.resume ? o.resume : "none";
    char last_ckpt_buf[4200];
    while (ts.step < last) {
        if (cfg.train.max_seconds > 0 && gk_now() - t0 >= cfg.train.max_seconds)
            break;
        if (val && cfg.train.val_every > 0 && ts.step % cfg.train.val_every == 0 && ts.step)
            log_validation(logfp, val, &l, params, gpu, tok, ts.step);
        double ts0 = gk_now(), loss, norm, scale;
        if (gpu) {
            gk_gpu_zero_grads(gpu);
            for (int k = 0; k < cfg.train.grad_accum; k++) {
                gk_batch b = gk_loader_next(ld, cfg.train.batch_tokens, T, cfg.train.grad_accum);
                gk_gpu_fwd_bwd(gpu, B, b.tokens, b.targets, 1.0 / cfg.train.grad_accum);
            }
            /* The step runs whatever the loss; a non-finite loss stops the
             * run below, before anything is logged or saved. */
            scale = gk_lr_scale(&cfg, ts.step, gk_now() - t0);
            loss = gk_gpu_step(gpu, scale, &norm, load);
        } else {
            memset(grads, 0, l.numel * sizeof *grads);
            if (load)
                memset(load, 0, nload * sizeof *load);
            loss = 0;
            for (int k = 0; k < cfg.train.grad_accum; k++) {
                gk_batch b = gk_loader_next(ld, cfg.train.batch_tokens, T, cfg.train.grad_accum);
                loss += gk_model_forward_f32(m, params, b.tokens, b.targets) /
                        cfg.train.grad_accum;
                gk_model_backward_f32(m, grads, 1.0 / cfg.train.grad_accum);
            }
        }
        if (!isfinite(loss))
            gk_die("step %lld: expected a finite train_loss, found %g; last good checkpoint: %s",
                   (long long)ts.step + 1, loss, last_ckpt);
        if (!gpu) {
            scale = gk_lr_scale(&cfg, ts.step, gk_now() - t0);
            norm = gk_optim_clip(opt, grads);
            gk_optim_step(opt, params, grads, scale);
            if (load)
                gk_moe_router_update(&l, params, load, cfg.moe.bias_update_rate);
            if (ema)
                ema_update(&l, ema, params, cfg.train.ema_decay);
        }
        ts.step++;
        ts.elapsed = gk_now() - t0;
        ts.pos = gk_loader_tell(ld);
        double dt = gk_now() - ts0;
        if (cfg.train.log_every > 0 &&
            (ts.step % cfg.train.log_every == 0 || ts.step == 1 || ts.step == last)) {
            jv e = jv_object();
            e = jv_object_set(e, jv_string("step"), jv_number((double)ts.step));
            e = jv_object_set(e, jv_string("train_loss"), jv_number(loss));
            e = jv_object_set(e, jv_string("lr_scale"), jv_number(scale));
            e = jv_object_set(e, jv_string("grad_norm"), jv_number(norm));
            e = jv_object_set(e, jv_string("tokens_per_s"),
                              jv_number(round((double)cfg.train.batch_tokens / dt)));
            e = jv_object_set(e, jv_string("elapsed"), jv_number(round(ts.elapsed * 1e3) / 1e3));
            if (load)
                e = jv_object_set(e, jv_string("expert_load"), loads_jv(&l, load));
            gk_emit(logfp, e);
        }
        if (cfg.train.ckpt_every > 0 && ts.step % cfg.train.ckpt_every == 0 && ts.step < last) {
            ckpt_path(path, sizeof path, o.out, ts.step);
            sync_host(gpu, params, ema, opt);
            gk_ckpt_save_ex(path, &l, params, ema, opt, &ts, GK_VERSION, NULL);
            snprintf(last_ckpt_buf, sizeof last_ckpt_buf, "%s", path);
            last_ckpt = last_ckpt_buf;
        }
        gk_progress_update(&pg, (uint64_t)ts.step);
    }
    gk_progress_end(&pg, (uint64_t)ts.step);
    if (val)
        log_validation(logfp, val, &l, params, gpu, tok, ts.step);
    ckpt_path(path, sizeof path, o.out, -1);
    sync_host(gpu, params, ema, opt);
    gk_ckpt_save_ex(path, &l, params, ema, opt, &ts, GK_VERSION, NULL);
    jv end = jv_object();
    end = jv_object_set(end, jv_string("event"), jv_string("end"));
    end = jv_object_set(end, jv_string("step"), jv_number((double)ts.step));
    end = jv_object_set(end, jv_string("checkpoint"), jv_string(path));
    end = jv_object_set(end, jv_string("seconds"), jv_number(round(ts.elapsed * 1e3) / 1e3));
    gk_emit(logfp, end);
    if (logfp != stdout && fclose(logfp) != 0)
        gk_die("%s: cannot write the log: %s", o.log, strerror(errno));
    gk_model_free_f32(m);
    gk_gpu_free(gpu);
    if (gpu)
        free(load);
    gk_val_free(val);
    gk_loader_close(ld);
    gk_tok_free(tok);
    gk_optim_free(opt);
    gk_layout_free(&l);
    free(params);
    free(ema);
    free(grads);
    free(o.sets);
    free(o.train);
    free(o.val);
    return 0;
}
