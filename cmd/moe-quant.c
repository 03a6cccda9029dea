/* moe-quant: a moe-train checkpoint -> a quantized model (.qst, man5/qst.5).
 *
 * Every tensor gets a scheme from the rules (a rules file, first matching
 * glob wins, then the per-group defaults of the flags: block matrices int6,
 * embedding and head int8, control tensors float32). Integer tensors are
 * quantized per row (lib/quant.h), with clip search when asked, and with
 * GPTQ (lib/gptq.h) for the block matrices and the untied head when asked:
 * the dense float model runs over calibration tokens from the train shards
 * and each matrix's Hessian 2 X^T X is summed from the rows it multiplied.
 * Expert matrices (whose inputs the model does not expose) and the embedding
 * (a lookup table as much as a head) keep round-to-nearest. */
#include "ckpt.h"
#include "gptq.h"
#include "io.h"
#include "jsonl.h"
#include "loader.h"
#include "model.h"
#include "qst.h"
#include "quant.h"
#include "util.h"

#include <cblas.h>
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef GK_VERSION
#define GK_VERSION "unknown"
#endif

static void usage(void)
{
    printf("usage: moe-quant [options] CKPT -o MODEL.qst\n"
           "  -o, --output FILE     the quantized model (.qst)\n"
           "      --rules FILE      \"PATTERN SCHEME\" lines, first match wins\n"
           "      --matrix S        block matrices (default int6)\n"
           "      --embed S         embedding and untied head (default int8)\n"
           "      --control S       vectors and control tensors (default f32)\n"
           "                        S: int8 int6 int5 int4 ternary binary f16 f32\n"
           "      --layout L        integer storage: i8 (default) or bits\n"
           "      --clip-search     per-row clip ratio of least squared error\n"
           "      --gptq            GPTQ with a Hessian from calibration tokens\n"
           "      --calib GLOB      train shards for calibration (with --gptq)\n"
           "      --calib-tokens N  calibration tokens (default 65536)\n"
           "      --damp X          damping, fraction of the mean diagonal (default 0.01)\n"
           "      --block N         GPTQ block of columns (default 128)\n"
           "      --act-order       GPTQ columns by decreasing Hessian diagonal\n"
           "      --report          per-tensor JSON lines and a summary on stdout\n"
           "      --threads N       OpenMP and OpenBLAS threads (default: number of CPUs)\n"
           "  -q, --quiet           no progress on stderr\n"
           "  -h, --help            this help\n");
    exit(0);
}

typedef struct {
    char *pattern;
    gk_scheme scheme;
} rule;

typedef struct {
    const char *ckpt, *out, *rules, *calib;
    gk_scheme matrix, embed, control;
    gk_qlayout layout;
    int clip_search, gptq, report, quiet, threads;
    long long calib_tokens;
    gk_gptq_opts go;
    rule *r;
    int nr;
} options;

static gk_scheme parse_scheme(const char *flag, const char *s)
{
    int v = gk_scheme_parse(s);
    if (v < 0)
        gk_usage("%s: expected a scheme (int8, int6, int5, int4, ternary, binary, f16, f32), "
                 "found '%s'", flag, s);
    return (gk_scheme)v;
}

/* The rules file: one "PATTERN SCHEME" per line; blank lines and lines
 * starting with '#' are skipped. */
static void read_rules(options *o)
{
    size_t len;
    char *text = (char *)gk_read_file(o->rules, &len); /* checked reads, NUL after */
    char *line = text, *next;
    for (int ln = 1; line < text + len; ln++, line = next) {
        next = line + strcspn(line, "\n"); /* a NUL byte ends a line too */
        if (next < text + len)
            *next++ = 0;
        char pat[512], sch[64], extra[2];
        char *s = line + strspn(line, " \t");
        if (*s == '#' || *s == 0)
            continue;
        if (sscanf(s, "%511s %63s %1s", pat, sch, extra) != 2)
            gk_die("%s:%d: expected \"PATTERN SCHEME\", found \"%s\"", o->rules, ln, s);
        int v = gk_scheme_parse(sch);
        if (v < 0)
            gk_die("%s:%d: expected a scheme (int8, int6, int5, int4, ternary, binary, f16, "
                   "f32), found \"%s\"", o->rules, ln, sch);
        o->r = gk_realloc(o->r, (size_t)(o->nr + 1) * sizeof *o->r);
        o->r[o->nr++] = (rule){gk_strdup(pat), (gk_scheme)v};
    }
    free(text);
}

static void parse_args(options *o, int argc, char **argv)
{
    enum { O_RULES = 256, O_MATRIX, O_EMBED, O_CONTROL, O_LAYOUT, O_CLIP, O_GPTQ, O_CALIB,
           O_CTOK, O_DAMP, O_BLOCK, O_ACT, O_REPORT, O_THREADS };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"rules", required_argument, 0, O_RULES},
        {"matrix", required_argument, 0, O_MATRIX}, {"embed", required_argument, 0, O_EMBED},
        {"control", required_argument, 0, O_CONTROL},
        {"layout", required_argument, 0, O_LAYOUT}, {"clip-search", no_argument, 0, O_CLIP},
        {"gptq", no_argument, 0, O_GPTQ}, {"calib", required_argument, 0, O_CALIB},
        {"calib-tokens", required_argument, 0, O_CTOK},
        {"damp", required_argument, 0, O_DAMP}, {"block", required_argument, 0, O_BLOCK},
        {"act-order", no_argument, 0, O_ACT}, {"report", no_argument, 0, O_REPORT},
        {"threads", required_argument, 0, O_THREADS}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    *o = (options){.matrix = GK_Q_INT6, .embed = GK_Q_INT8, .control = GK_Q_F32,
                   .calib_tokens = 65536, .threads = gk_ncpu(),
                   .go = {.damp = 0.01, .block = 128}};
    int ch;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((ch = getopt_long(argc, argv, ":o:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': o->out = optarg; break;
        case O_RULES: o->rules = optarg; break;
        case O_MATRIX: o->matrix = parse_scheme("--matrix", optarg); break;
        case O_EMBED: o->embed = parse_scheme("--embed", optarg); break;
        case O_CONTROL: o->control = parse_scheme("--control", optarg); break;
        case O_LAYOUT: {
            int v = gk_layout_parse(optarg);
            if (v < 0)
                gk_usage("--layout: expected i8 or bits, found '%s'", optarg);
            o->layout = (gk_qlayout)v;
            break;
        }
        case O_CLIP: o->clip_search = 1; break;
        case O_GPTQ: o->gptq = 1; break;
        case O_CALIB: o->calib = optarg; break;
        case O_CTOK: o->calib_tokens = gk_parse_int("--calib-tokens", optarg, 1, 1LL << 40); break;
        case O_DAMP: o->go.damp = gk_parse_double("--damp", optarg, 0, 10); break;
        case O_BLOCK: o->go.block = (int)gk_parse_int("--block", optarg, 1, 1 << 20); break;
        case O_ACT: o->go.act_order = 1; break;
        case O_REPORT: o->report = 1; break;
        case O_THREADS: o->threads = (int)gk_parse_int("--threads", optarg, 1, 1024); break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(); break;
        default: gk_bad_option(ch, argv);
        }
    }
    if (optind != argc - 1)
        gk_usage("expected one checkpoint, found %d arguments", argc - optind);
    o->ckpt = argv[optind];
    if (!o->out)
        gk_usage("expected an output file (-o MODEL.qst), found none");
    if (o->gptq && !o->calib)
        gk_usage("--gptq: expected calibration shards (--calib GLOB), found none");
    if (o->calib && !o->gptq)
        gk_usage("--calib: expected --gptq with it, found none");
}

/* First matching rule, else the default of the tensor's group. */
static gk_scheme scheme_of(const options *o, const gk_param *p)
{
    for (int i = 0; i < o->nr; i++)
        if (fnmatch(o->r[i].pattern, p->name, 0) == 0)
            return o->r[i].scheme;
    if (p->ndim == 2 && p->group == GK_GROUP_MATRIX)
        return o->matrix;
    if (p->ndim == 2 && (p->group == GK_GROUP_EMBED || p->group == GK_GROUP_HEAD))
        return o->embed;
    return o->control;
}

/* Which tensors GPTQ takes: integer block matrices and the untied head. */
static int gptq_wants(const gk_param *p, gk_scheme s)
{
    return gk_scheme_is_int(s) && p->ndim == 2 &&
           (p->group == GK_GROUP_MATRIX || p->group == GK_GROUP_HEAD);
}

/* Sum each wanted matrix's Hessian over the calibration tokens; h[j] is NULL
 * for the tensors whose inputs the model does not expose. */
static double **hessians(const options *o, const gk_layout *l, const float *params,
                         const gk_scheme *sch)
{
    double **h = gk_calloc((size_t)l->n_params, sizeof *h);
    int T = (int)l->cfg.model.seq_len;
    int B = (int)(o->calib_tokens / T < 8 ? o->calib_tokens / T : 8);
    B = B < 1 ? 1 : B;
    long long nb = (o->calib_tokens + (long long)B * T - 1) / ((long long)B * T);
    const char *pat = o->calib;
    gk_loader *ld = gk_loader_open(&pat, 1, (uint32_t)l->cfg.model.vocab, 0, 1);
    gk_model_f32 *m = gk_model_new_f32(l, B, T);
    double t0 = gk_now();
    for (long long b = 0; b < nb; b++) {
        gk_batch bt = gk_loader_next(ld, (int64_t)B * T, T, 1);
        gk_model_forward_f32(m, params, bt.tokens, bt.targets);
        for (int j = 0; j < l->n_params; j++) {
            int cols;
            if (!gptq_wants(&l->params[j], sch[j]))
                continue;
            const float *x = gk_model_matrix_input_f32(m, l, j, &cols);
            if (!x)
                continue;
            if (!h[j])
                h[j] = gk_calloc((size_t)cols * cols, sizeof *h[j]);
            gk_gptq_accumulate(h[j], x, B * T, cols);
        }
        if (!o->quiet)
            fprintf(stderr, "\rmoe-quant: calibration %lld/%lld batches, %.1f s", b + 1, nb,
                    gk_now() - t0);
    }
    if (!o->quiet)
        fprintf(stderr, "\n");
    gk_model_free_f32(m);
    gk_loader_close(ld);
    return h;
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    options o;
    parse_args(&o, argc, argv);
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
    if (o.rules)
        read_rules(&o);

    gk_ckpt *ck = gk_ckpt_open(o.ckpt);
    gk_layout l;
    gk_layout_init(&l, gk_ckpt_config(ck));
    float *params = gk_malloc(l.numel * sizeof *params);
    gk_ckpt_read_params(ck, &l, params);
    gk_ckpt_close(ck);

    gk_scheme *sch = gk_malloc((size_t)l.n_params * sizeof *sch);
    for (int j = 0; j < l.n_params; j++)
        sch[j] = scheme_of(&o, &l.params[j]);
    double **h = o.gptq ? hessians(&o, &l, params, sch) : NULL;

    gk_qtensor *qt = gk_calloc((size_t)l.n_params, sizeof *qt);
    double payload = 0, t0 = gk_now();
    for (int j = 0; j < l.n_params; j++) {
        const gk_param *p = &l.params[j];
        gk_qtensor *t = &qt[j];
        const float *w = params + p->offset;
        size_t n = p->numel;
        t->scheme = sch[j];
        t->rows = p->ndim == 2 ? p->shape[0] : 1;
        t->cols = p->ndim == 2 ? p->shape[1] : (int)n;
        int used_gptq = 0;
        if (t->scheme == GK_Q_F32) {
            t->f32 = gk_malloc(n * sizeof *t->f32);
            memcpy(t->f32, w, n * sizeof *w);
        } else if (t->scheme == GK_Q_F16) {
            t->f16 = gk_malloc(n * sizeof *t->f16);
            for (size_t k = 0; k < n; k++)
                t->f16[k] = gk_f16_from_float(w[k]);
        } else {
            t->layout = o.layout;
            t->q = gk_malloc(n);
            t->scale = gk_malloc((size_t)t->rows * sizeof *t->scale);
            gk_quant_matrix(t->scheme, w, t->rows, t->cols, o.clip_search, t->q, t->scale);
            if (h && h[j]) {
                float *wc = gk_malloc(n * sizeof *wc);
                memcpy(wc, w, n * sizeof *w);
                int8_t *q2 = gk_malloc(n);
                if (gk_gptq(t->scheme, wc, t->rows, t->cols, h[j], t->scale, &o.go, q2) == 0) {
                    memcpy(t->q, q2, n);
                    used_gptq = 1;
                } else {
                    gk_warn("%s: GPTQ: the damped Hessian is not positive definite; kept "
                            "round-to-nearest (try a larger --damp)", p->name);
                }
                free(q2);
                free(wc);
            }
        }
        int bits = gk_scheme_bits(t->scheme);
        double bytes = gk_scheme_is_int(t->scheme)
                           ? (o.layout == GK_LAYOUT_BITS
                                  ? (double)gk_pack_row_bytes(t->scheme, t->cols) * t->rows
                                  : (double)n) + 2.0 * t->rows
                           : (double)n * bits / 8;
        payload += bytes;
        if (o.report) {
            float *dq = gk_malloc(n * sizeof *dq);
            gk_qtensor_dequantize(t, dq);
            double e2 = 0, w2 = 0;
            for (size_t k = 0; k < n; k++) {
                e2 += ((double)w[k] - dq[k]) * ((double)w[k] - dq[k]);
                w2 += (double)w[k] * w[k];
            }
            free(dq);
            double bpw = gk_scheme_is_int(t->scheme)
                             ? ((double)n * bits + 16.0 * t->rows) / (double)n : bits;
            jv r = jv_object();
            r = jv_object_set(r, jv_string("name"), jv_string(p->name));
            r = jv_object_set(r, jv_string("scheme"), jv_string(gk_scheme_name(t->scheme)));
            r = jv_object_set(r, jv_string("gptq"), jv_bool(used_gptq));
            r = jv_object_set(r, jv_string("shape"),
                              p->ndim == 2 ? JV_ARRAY(jv_number(p->shape[0]),
                                                      jv_number(p->shape[1]))
                                           : JV_ARRAY(jv_number((double)n)));
            r = jv_object_set(r, jv_string("bits_per_weight"), jv_number(bpw));
            r = jv_object_set(r, jv_string("bytes"), jv_number(bytes));
            r = jv_object_set(r, jv_string("rel_err"),
                              jv_number(w2 > 0 ? sqrt(e2 / w2) : sqrt(e2)));
            gk_emit(stdout, r);
        }
        if (!o.quiet)
            fprintf(stderr, "\rmoe-quant: %d/%d tensors, %.1f s", j + 1, l.n_params,
                    gk_now() - t0);
    }
    if (!o.quiet)
        fprintf(stderr, "\n");
    gk_qst_write(o.out, &l, qt, GK_VERSION);
    if (o.report) {
        struct stat sb;
        jv r = jv_object();
        r = jv_object_set(r, jv_string("event"), jv_string("summary"));
        r = jv_object_set(r, jv_string("params"), jv_number((double)(l.n_weights - l.n_buffer)));
        r = jv_object_set(r, jv_string("weights"), jv_number((double)l.n_weights));
        r = jv_object_set(r, jv_string("total_bytes"), jv_number(payload));
        r = jv_object_set(r, jv_string("mean_bits_per_weight"),
                          jv_number(8 * payload / (double)l.n_weights));
        r = jv_object_set(r, jv_string("file_bytes"),
                          jv_number(stat(o.out, &sb) == 0 ? (double)sb.st_size : 0));
        gk_emit(stdout, r);
    }
    for (int j = 0; j < l.n_params; j++) {
        gk_qtensor_free(&qt[j]);
        if (h)
            free(h[j]);
    }
    for (int i = 0; i < o.nr; i++)
        free(o.r[i].pattern);
    free(o.r);
    free(h);
    free(qt);
    free(sch);
    free(params);
    gk_layout_free(&l);
    return 0;
}
