/* model_test: TAP proof that the whole CPU model of model.h is right.
 *
 * The heart is the whole-model gradient check: a tiny model (vocab 32, 4
 * layers so the U-Net skips are live, width 16, 4 heads over 2 KV heads,
 * 2 sequences of 6 tokens), its parameters perturbed at random so that no
 * path is dead (the zero-init projections would otherwise zero most
 * gradients), the analytic double gradient against central finite
 * differences of the double loss on a random sample of coordinates of every
 * tensor. The error of a tensor is max |analytic - numeric| over the sample,
 * relative to the sample's largest numeric gradient, as ops_test measures.
 * The same check runs for partial RoPE, LeakyReLU(0.5)^2, SwiGLU, an untied
 * head and an odd layer count (a decoder block without a skip), and for the
 * mixture of experts of moe.h with each router (4 routed experts and 1
 * shared, top-2; top-1 for the token router). The top-k choice is piecewise
 * constant in the weights: a step h = 1e-5 could flip a near-tie and make one
 * difference quotient meaningless, which would show as a large error; the
 * pinned test seed gives inputs without such a tie. The sigmoid router's
 * bias is a buffer: its gradient must be exactly zero, and it is not
 * differentiated (it moves the choice only).
 *
 * Around it: float against double (loss and gradients), the initial loss of
 * the baseline init (about ln(vocab): the tied embedding is small, so the
 * logits are near zero), parameter counts against gk_config_params, the
 * layout's names, shapes, groups and init, bitwise determinism of the init
 * and of the passes, and gradient accumulation. */
#include "model.h"
#include "tap.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- configs ------------------------------------------------------------------- */

/* The tiny model of the gradient checks, with a consistent train section so
 * gk_config_check accepts it. */
static gk_config tiny(void)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = 32, c.model.n_layer = 4, c.model.d_model = 16;
    c.model.n_head = 4, c.model.n_kv_head = 2, c.model.seq_len = 6;
    c.train.grad_accum = 1, c.train.batch_tokens = 12;
    gk_config_check(&c, "tiny");
    return c;
}

static void random_tokens(int *x, int n, int vocab)
{
    for (int i = 0; i < n; i++)
        x[i] = (int)(tap_uniform() * vocab);
}

/* Initial weights for seed 1, then every coordinate moved by N(0, 0.3^2), in
 * double (and the same values in float when pf is not NULL). A buffer (the
 * router bias) moves by N(0, 0.05^2) only: enough that the choice differs
 * from the choice by scores, little enough that every expert keeps tokens. */
static double *perturbed(const gk_layout *l, float *pf)
{
    float *p = gk_malloc(l->numel * sizeof *p);
    gk_model_init_params(l, p, 1);
    double *pd = gk_malloc(l->numel * sizeof *pd);
    for (int j = 0; j < l->n_params; j++) {
        const gk_param *t = &l->params[j];
        double sd = t->group == GK_GROUP_BUFFER ? 0.05 : 0.3;
        for (size_t i = t->offset; i < t->offset + t->numel; i++) {
            p[i] = (float)(p[i] + sd * tap_normal());
            pd[i] = p[i];
        }
    }
    if (pf)
        memcpy(pf, p, l->numel * sizeof *p);
    free(p);
    return pd;
}

/* ---- the gradient check ------------------------------------------------------------ */

/* Whole-model gradient of config C against central differences on up to
 * SAMPLE coordinates per tensor; returns the worst tensor's error and copies
 * its name into worst. */
static double grad_check(const gk_config *c, int B, int sample, char worst[48])
{
    gk_layout l;
    gk_layout_init(&l, c);
    int T = c->model.seq_len, N = B * T;
    int *tok = gk_malloc((size_t)N * sizeof *tok), *tgt = gk_malloc((size_t)N * sizeof *tgt);
    random_tokens(tok, N, c->model.vocab);
    random_tokens(tgt, N, c->model.vocab);
    double *p = perturbed(&l, NULL);
    double *g = gk_calloc(l.numel, sizeof *g);
    gk_model_f64 *m = gk_model_new_f64(&l, B, T);
    gk_model_forward_f64(m, p, tok, tgt);
    gk_model_backward_f64(m, g, 1);
    const double h = 1e-5;
    double max_err = 0;
    worst[0] = 0;
    for (int j = 0; j < l.n_params; j++) {
        const gk_param *t = &l.params[j];
        if (t->group == GK_GROUP_BUFFER) {
            for (size_t i = 0; i < t->numel; i++)
                if (g[t->offset + i] != 0)
                    max_err = INFINITY, strcpy(worst, t->name);
            continue;
        }
        int n = t->numel < (size_t)sample ? (int)t->numel : sample;
        double err = 0, scale = 0;
        for (int s = 0; s < n; s++) {
            size_t i = t->offset + (n == (int)t->numel ? (size_t)s
                                                       : (size_t)(tap_uniform() * t->numel));
            double save = p[i];
            p[i] = save + h;
            double lp = gk_model_forward_f64(m, p, tok, tgt);
            p[i] = save - h;
            double lm = gk_model_forward_f64(m, p, tok, tgt);
            p[i] = save;
            double num = (lp - lm) / (2 * h);
            err = fmax(err, fabs(num - g[i]));
            scale = fmax(scale, fabs(num));
        }
        err = scale > 0 ? err / scale : err;
        if (err >= max_err)
            max_err = err, strcpy(worst, t->name);
        if (scale == 0) /* a dead tensor would pass vacuously */
            max_err = INFINITY, strcpy(worst, t->name);
    }
    gk_model_free_f64(m);
    free(p), free(g), free(tok), free(tgt);
    gk_layout_free(&l);
    return max_err;
}

static void check_grad(const char *what, const gk_config *c, int B, int sample)
{
    char worst[48];
    double e = grad_check(c, B, sample, worst);
    ok(e < 1e-5, "whole-model gradient vs central differences, %s: max rel err %.2e (%s)", what,
       e, worst);
}

/* ---- float against double ---------------------------------------------------------- */

static void float_vs_double(void)
{
    gk_config c = tiny();
    gk_layout l;
    gk_layout_init(&l, &c);
    int B = 2, T = c.model.seq_len, N = B * T, tok[12], tgt[12];
    random_tokens(tok, N, c.model.vocab);
    random_tokens(tgt, N, c.model.vocab);
    float *pf = gk_malloc(l.numel * sizeof *pf), *gf = gk_calloc(l.numel, sizeof *gf);
    double *pd = perturbed(&l, pf), *gd = gk_calloc(l.numel, sizeof *gd);
    gk_model_f32 *mf = gk_model_new_f32(&l, B, T);
    gk_model_f64 *md = gk_model_new_f64(&l, B, T);
    double lf = gk_model_forward_f32(mf, pf, tok, tgt);
    double ld = gk_model_forward_f64(md, pd, tok, tgt);
    gk_model_backward_f32(mf, gf, 1);
    gk_model_backward_f64(md, gd, 1);
    ok(fabs(lf - ld) / ld < 1e-5, "float loss %.9f vs double %.9f: rel diff %.2e", lf, ld,
       fabs(lf - ld) / ld);
    double err = 0, scale = 0;
    for (size_t i = 0; i < l.numel; i++)
        err = fmax(err, fabs(gf[i] - gd[i])), scale = fmax(scale, fabs(gd[i]));
    ok(err / scale < 1e-4, "float gradient vs double: max diff / max |grad| %.2e", err / scale);

    /* gradient accumulation: a second backward of the same forward adds the same */
    gk_model_forward_f64(md, pd, tok, tgt);
    double *g2 = gk_calloc(l.numel, sizeof *g2);
    memcpy(g2, gd, l.numel * sizeof *g2);
    gk_model_backward_f64(md, g2, 0.5);
    double acc = 0;
    for (size_t i = 0; i < l.numel; i++)
        acc = fmax(acc, fabs(g2[i] - 1.5 * gd[i]));
    ok(acc <= 1e-12 * scale, "backward accumulates: grads + 0.5 x grads = 1.5 x grads (%.1e)",
       acc);

    /* the passes are repeatable bit for bit */
    double lf2 = gk_model_forward_f32(mf, pf, tok, tgt);
    ok(lf2 == lf, "float forward repeats bitwise");
    gk_model_free_f32(mf), gk_model_free_f64(md);
    free(pf), free(gf), free(pd), free(gd), free(g2);
    gk_layout_free(&l);
}

/* ---- init, layout, counts ------------------------------------------------------------ */

static void initial_loss(void)
{
    /* The baseline at width 64: vocab 1024, tied, std 0.005. The logits are
     * about N(0, (0.005 sqrt(64))^2), so the loss is ln(1024) + 0.0008 give or
     * take a sampling noise of a few 1e-3 over 256 random targets. */
    gk_config c;
    gk_config_defaults(&c);
    c.model.n_layer = 3, c.model.d_model = 64, c.model.seq_len = 64;
    gk_layout l;
    gk_layout_init(&l, &c);
    int B = 4, T = 64, N = B * T, tok[256], tgt[256];
    random_tokens(tok, N, c.model.vocab);
    random_tokens(tgt, N, c.model.vocab);
    float *p = gk_malloc(l.numel * sizeof *p);
    gk_model_init_params(&l, p, 1337);
    gk_model_f32 *m = gk_model_new_f32(&l, B, T);
    double loss = gk_model_forward_f32(m, p, tok, tgt);
    ok(fabs(loss - log(1024)) < 0.01, "initial loss %.5f ~ ln(1024) = %.5f", loss, log(1024));
    double *rows = gk_malloc((size_t)N * sizeof *rows), mean = 0;
    double again = gk_model_forward_rows_f32(m, p, tok, tgt, rows);
    for (int i = 0; i < N; i++)
        mean += rows[i] / N;
    ok(again == loss && fabs(mean - loss) < 1e-9 * loss,
       "per-position losses average to the forward's loss (%.9f vs %.9f)", mean, loss);
    int cols = 0, cq = l.blocks[0 * GK_BLK_COUNT + GK_BLK_C_Q];
    const float *in = gk_model_matrix_input_f32(m, &l, cq, &cols);
    double ss = 0; /* the attention norm's output has unit RMS per row */
    for (int i = 0; in && i < cols; i++)
        ss += (double)in[i] * in[i];
    ok(in && cols == c.model.d_model && fabs(ss / cols - 1) < 1e-3 &&
           !gk_model_matrix_input_f32(m, &l, l.blocks[GK_BLK_Q_GAIN], &cols),
       "c_q's calibration input is the RMS-normed rows (mean square %.6f); vectors have none",
       ss / (cols ? cols : 1));
    free(rows);
    gk_model_free_f32(m);
    free(p);
    gk_layout_free(&l);
}

static void param_count(const char *what, const gk_config *c, int64_t expect)
{
    gk_layout l;
    gk_layout_init(&l, c);
    int64_t total, active;
    gk_config_params(c, &total, &active);
    ok((int64_t)l.n_weights == total && l.numel >= l.n_weights && (expect == 0 || total == expect),
       "%s: %zu parameters (%zu elements with the padding), gk_config_params %lld", what,
       l.n_weights, l.numel, (long long)total);
    gk_layout_free(&l);
}

static void counts(void)
{
    gk_config c = tiny();
    param_count("tiny", &c, 0);
    c.model.n_layer = 3, c.model.tie_embeddings = false, c.model.activation = GK_ACT_SWIGLU;
    param_count("tiny, 3 layers, untied, swiglu", &c, 0);
    gk_config_defaults(&c);
    param_count("baseline (train_gpt.py logs model_params:17059912)", &c, 17059912);
}

static void layout_and_init(void)
{
    gk_config c;
    gk_config_defaults(&c);
    gk_layout l;
    gk_layout_init(&l, &c);
    const gk_param *q = gk_layout_find(&l, "blocks.3.attn.c_q.weight");
    const gk_param *k = gk_layout_find(&l, "blocks.8.attn.c_k.weight");
    const gk_param *sw = gk_layout_find(&l, "skip_weights");
    const gk_param *rm = gk_layout_find(&l, "blocks.0.resid_mix");
    const gk_param *qg = gk_layout_find(&l, "blocks.0.attn.q_gain");
    ok(q && q->shape[0] == 512 && q->shape[1] == 512 && q->group == GK_GROUP_MATRIX &&
           k && k->shape[0] == 256 && k->shape[1] == 512 && sw && sw->shape[0] == 4 &&
           sw->shape[1] == 512 && sw->group == GK_GROUP_SCALAR && rm && rm->ndim == 2 &&
           rm->group == GK_GROUP_SCALAR && qg && qg->ndim == 1 && qg->shape[0] == 8 &&
           !gk_layout_find(&l, "lm_head.weight") && l.n_params == 1 + 9 * GK_BLK_COUNT + 1,
       "baseline layout: names, shapes, groups as train_gpt.py (%d tensors)", l.n_params);
    size_t off = 0;
    int contiguous = 1;
    for (int j = 0; j < l.n_params; j++) {
        size_t at = (off + GK_TENSOR_ALIGN - 1) / GK_TENSOR_ALIGN * GK_TENSOR_ALIGN;
        contiguous &= l.params[j].offset == at, off = at + l.params[j].numel;
    }
    ok(contiguous && off == l.numel && l.numel == l.n_weights,
       "tensors tile the buffer in order, each at the next multiple of %d elements (none "
       "needed in the baseline)", GK_TENSOR_ALIGN);

    float *a = gk_malloc(l.numel * sizeof *a), *b = gk_malloc(l.numel * sizeof *b);
    gk_model_init_params(&l, a, 1337);
    gk_model_init_params(&l, b, 1337);
    ok(memcmp(a, b, l.numel * sizeof *a) == 0, "same seed, same weights, bitwise");
    gk_model_init_params(&l, b, 1338);
    ok(memcmp(a, b, l.numel * sizeof *a) != 0, "another seed, other weights");

    /* the init rules, tensor by tensor */
    const gk_param *e = &l.params[l.tok_emb];
    double ss = 0;
    for (size_t i = 0; i < e->numel; i++)
        ss += (double)a[e->offset + i] * a[e->offset + i];
    double sd = sqrt(ss / (double)e->numel);
    ok(fabs(sd - 0.005) < 0.0001, "tok_emb ~ N(0, 0.005^2): std %.6f", sd);
    float qmax = 0, qmin = 0;
    for (size_t i = 0; i < q->numel; i++)
        qmax = fmaxf(qmax, a[q->offset + i]), qmin = fminf(qmin, a[q->offset + i]);
    float bound = (float)(1 / sqrt(512.0));
    ok(qmax <= bound && qmin >= -bound && qmax > 0.99f * bound && qmin < -0.99f * bound,
       "c_q ~ U(-1/sqrt(512), 1/sqrt(512)): range [%.5f, %.5f]", qmin, qmax);
    int zeros = 1, ones = 1;
    for (int b_ = 0; b_ < 9; b_++) {
        const gk_param *pr[] = {gk_layout_block(&l, b_, GK_BLK_ATTN_PROJ),
                                gk_layout_block(&l, b_, GK_BLK_MLP_PROJ)};
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < pr[t]->numel; i++)
                zeros &= a[pr[t]->offset + i] == 0;
        const gk_param *s1 = gk_layout_block(&l, b_, GK_BLK_ATTN_SCALE);
        const gk_param *s2 = gk_layout_block(&l, b_, GK_BLK_MLP_SCALE);
        for (size_t i = 0; i < s1->numel; i++)
            ones &= a[s1->offset + i] == 1 && a[s2->offset + i] == 1;
        const gk_param *r = gk_layout_block(&l, b_, GK_BLK_RESID_MIX);
        for (size_t i = 0; i < r->numel; i++)
            ones &= a[r->offset + i] == (i < 512 ? 1 : 0);
        const gk_param *g = gk_layout_block(&l, b_, GK_BLK_Q_GAIN);
        for (size_t i = 0; i < g->numel; i++)
            ones &= a[g->offset + i] == 1.5f;
    }
    for (size_t i = 0; i < sw->numel; i++)
        ones &= a[sw->offset + i] == 1;
    ok(zeros && ones, "zero-init projections; scales, skip_weights 1; resid_mix (1, 0); q_gain 1.5");
    free(a), free(b);
    gk_layout_free(&l);
}

int main(void)
{
    tap_seed(0x2545F4914F6CDD1Dull);
    counts();
    layout_and_init();
    initial_loss();
    float_vs_double();

    gk_config c = tiny();
    check_grad("baseline shape (relu^2, 4 layers, GQA 4/2, tied)", &c, 2, 200);
    c = tiny(), c.model.rope_dims = 2;
    check_grad("partial RoPE (2 of 4 dims)", &c, 2, 60);
    c = tiny(), c.model.activation = GK_ACT_LEAKY_RELU2;
    check_grad("leaky_relu(0.5)^2", &c, 2, 60);
    c = tiny(), c.model.activation = GK_ACT_SWIGLU;
    check_grad("swiglu", &c, 2, 60);
    c = tiny(), c.model.tie_embeddings = false, c.model.n_layer = 3;
    check_grad("untied head, 3 layers (a decoder block without a skip)", &c, 2, 60);

    const gk_router routers[] = {GK_ROUTER_SIGMOID_BIAS, GK_ROUTER_SOFTMAX, GK_ROUTER_TOKEN};
    const char *names[] = {"MoE 4+1 top-2, sigmoid_bias router", "MoE 4+1 top-2, softmax router",
                           "MoE 4+1 top-1, token router"};
    for (int i = 0; i < 3; i++) {
        c = tiny();
        c.moe.n_experts = 4, c.moe.n_shared = 1, c.moe.expert_hidden = 8;
        c.moe.router = routers[i], c.moe.top_k = routers[i] == GK_ROUTER_TOKEN ? 1 : 2;
        gk_config_check(&c, "moe");
        /* 4 sequences, so that every expert of every layer gets tokens */
        check_grad(names[i], &c, 4, 24);
    }
    return tap_done();
}
