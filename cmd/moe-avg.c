/* moe-avg: average the weights of moe-train checkpoints into one plain
 * checkpoint for moe-quant and moe-eval: the uniform average of N
 * checkpoints (stochastic weight averaging over the end of a run), a weighted
 * average, or the exponential moving average moe-train keeps
 * (train.ema_decay) written out on its own.
 *
 * The output is a moe-train checkpoint without optimizer state (nothing
 * trains on from an average; gk_ckpt_open and gk_ckpt_read_params read it),
 * with the config, seed, step and data position of the last input and
 * golfkit.avg saying what was averaged. Inputs must share every config key:
 * the first that differs is named. Each input is read and added in turn, so
 * memory is two copies of the model whatever N is. */
#include "avg.h"
#include "ckpt.h"
#include "config.h"
#include "jsonl.h"
#include "model.h"
#include "progress.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GK_VERSION
#define GK_VERSION "unknown"
#endif

static void usage(void)
{
    printf("usage: moe-avg [options] -o OUT CKPT...\n"
           "       moe-avg [options] -o OUT --ema CKPT\n"
           "\n"
           "  -o, --out FILE        the averaged checkpoint (.safetensors)\n"
           "  -w, --weights LIST    weights w1,w2,... one per CKPT (normalized; default: equal)\n"
           "      --ema CKPT        write CKPT's moving average (train.ema_decay) instead\n"
           "      --progress        show progress even when stderr is not a terminal\n"
           "  -q, --quiet           no progress\n"
           "  -h, --help            this help\n"
           "\n"
           "See moe-avg(1) and moe-ckpt(5).\n");
    exit(0);
}

typedef struct {
    const char *out, *ema;
    const char *const *inputs;
    int n;
    double *weights; /* [n], or NULL: equal */
} options;

/* "w1,w2,...": exactly N numbers >= 0, not all 0. */
static double *parse_weights(const char *text, int n)
{
    double *w = gk_calloc((size_t)n, sizeof *w);
    char *copy = gk_strdup(text), *save = NULL;
    int k = 0;
    double total = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save), k++) {
        double v = gk_parse_double("--weights", tok, 0, 1e300);
        if (k < n) { /* past N only counted, for the message */
            w[k] = v;
            total += v;
        }
    }
    if (k != n)
        gk_usage("--weights: expected %d weights (one per checkpoint), found %d", n, k);
    if (!(total > 0))
        gk_usage("--weights: expected a positive sum, found 0");
    free(copy);
    return w;
}

static void parse_args(int argc, char **argv, options *o)
{
    enum { O_EMA = 256, O_PROGRESS };
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},   {"weights", required_argument, 0, 'w'},
        {"ema", required_argument, 0, O_EMA}, {"progress", no_argument, 0, O_PROGRESS},
        {"quiet", no_argument, 0, 'q'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *weights = NULL;
    int ch;
    *o = (options){0};
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":o:w:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': o->out = optarg; break;
        case 'w': weights = optarg; break;
        case O_EMA: o->ema = optarg; break;
        case O_PROGRESS: gk_progress_force(1); break;
        case 'q': gk_progress_force(-1); break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    o->inputs = (const char *const *)argv + optind;
    o->n = argc - optind;
    if (!o->out)
        gk_usage("expected an output checkpoint (-o FILE), found none");
    if (o->ema && (o->n || weights))
        gk_usage("--ema takes one checkpoint; expected no other inputs or --weights, found %s",
                 weights ? "--weights" : o->inputs[0]);
    if (!o->ema && !o->n)
        gk_usage("expected checkpoints to average (or --ema CKPT), found none");
    if (weights)
        o->weights = parse_weights(weights, o->n);
}

/* Die unless C has the config of the first input FIRST (named FIRST_PATH). */
static void same_config(const gk_config *first, const char *first_path, const gk_config *c,
                        const char *path)
{
    char key[256], va[256], vb[256];
    if (gk_config_diff(first, c, key, va, vb, sizeof key))
        gk_die("%s: field %s: expected %s (as in %s), found %s", path, key, va, first_path, vb);
}

static jv strings_jv(const char *const *v, int n)
{
    jv a = jv_array();
    for (int i = 0; i < n; i++)
        a = jv_array_append(a, jv_string(v[i]));
    return a;
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    options o;
    parse_args(argc, argv, &o);
    const char *const *inputs = o.ema ? &o.ema : o.inputs;
    int n = o.ema ? 1 : o.n;

    gk_ckpt *c = gk_ckpt_open(inputs[0]);
    gk_config cfg = *gk_ckpt_config(c);
    gk_layout l;
    gk_layout_init(&l, &cfg);
    float *params = gk_malloc(l.numel * sizeof *params);
    float *out = gk_malloc(l.numel * sizeof *out);
    gk_train_state last;
    const char *method;
    jv weights = jv_array();
    gk_progress pg;
    gk_progress_start(&pg, "moe-avg", "checkpoints", (uint64_t)n);
    if (o.ema) {
        method = "ema";
        if (!gk_ckpt_has_ema(c, &l))
            gk_die("%s: expected ema.* tensors (a run with train.ema_decay > 0), found none "
                   "(train.ema_decay is %g)", o.ema, cfg.train.ema_decay);
        gk_ckpt_read_ema(c, &l, out);
        last = gk_ckpt_state(c);
        gk_ckpt_close(c);
        weights = jv_array_append(weights, jv_number(1));
    } else {
        method = o.weights ? "weighted" : "uniform";
        double total = 0;
        for (int i = 0; i < n; i++)
            total += o.weights ? o.weights[i] : 1;
        gk_avg avg;
        gk_avg_init(&avg, &l);
        for (int i = 0; i < n; i++) {
            if (i) {
                c = gk_ckpt_open(inputs[i]);
                same_config(&cfg, inputs[0], gk_ckpt_config(c), inputs[i]);
            }
            gk_ckpt_read_params(c, &l, params);
            last = gk_ckpt_state(c);
            gk_ckpt_close(c);
            double w = o.weights ? o.weights[i] : 1;
            gk_avg_add(&avg, params, w);
            weights = jv_array_append(weights, jv_number(w / total));
            gk_progress_update(&pg, (uint64_t)i + 1);
        }
        /* Buffers come from the last checkpoint as they are: the router load
         * bias is a controller's state tuned to the weights it ran with (it
         * steers load toward balance step by step), not a weight whose
         * average means anything; the latest one is the best-tuned. */
        memcpy(out, params, l.numel * sizeof *out);
        gk_avg_result(&avg, out);
        gk_avg_free(&avg);
    }
    gk_progress_end(&pg, (uint64_t)n);

    jv note = jv_object();
    note = jv_object_set(note, jv_string("method"), jv_string(method));
    note = jv_object_set(note, jv_string("inputs"), strings_jv(inputs, n));
    note = jv_object_set(note, jv_string("weights"), jv_copy(weights));
    jv note_text = jv_dump_string(jv_copy(note), 0);
    gk_ckpt_save_ex(o.out, &l, out, NULL, NULL, &last, GK_VERSION, jv_string_value(note_text));
    jv_free(note_text);
    note = jv_object_set(note, jv_string("step"), jv_number((double)last.step));
    note = jv_object_set(note, jv_string("output"), jv_string(o.out));
    gk_emit(stdout, note);
    jv_free(weights);
    gk_layout_free(&l);
    free(params);
    free(out);
    free(o.weights);
    return 0;
}
