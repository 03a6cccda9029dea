/* generate_test: TAP proof that the KV-cache decoder of generate.h computes
 * the model's forward, and that the sampler of sample.h does what it says.
 *
 * The decoder: for tiny random models (the shapes of model_test: vocab 32,
 * 4 layers so the U-Net skips are live, width 16, 4 heads over 2 KV heads)
 * in each variant the step has a branch for (relu^2 tied, partial RoPE,
 * SwiGLU with an untied head and an odd layer count, MoE 4+1 top-2 with the
 * sigmoid router, MoE top-1 with the token router), with every weight
 * perturbed so no path is dead, the logits of incremental decoding at every
 * position of a random sequence against the full forward's
 * (gk_model_logits_f32, softcapped) on the whole sequence, within 1e-5
 * relative to the row's largest logit. Then greedy generation against the
 * argmax of a full recomputation of the growing sequence at each step, the
 * context limit, and a reset.
 *
 * The sampler: same seed same tokens (and another seed other tokens), top-k 1
 * and a tiny top-p are greedy whatever the draw, top-k never leaves the k
 * best, the frequencies of plain sampling follow the softmax (and the
 * temperature), and the repetition penalty turns the argmax in a
 * constructed case, for positive and negative logits, once per id. */
#include "generate.h"
#include "model.h"
#include "sample.h"
#include "tap.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static gk_config tiny(void)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = 32, c.model.n_layer = 4, c.model.d_model = 16;
    c.model.n_head = 4, c.model.n_kv_head = 2, c.model.seq_len = 12;
    c.train.grad_accum = 1, c.train.batch_tokens = 12;
    gk_config_check(&c, "tiny");
    return c;
}

/* Initial weights for seed 1, every coordinate moved by N(0, 0.3^2) (router
 * biases by N(0, 0.05^2)), as model_test perturbs them. */
static float *perturbed(const gk_layout *l)
{
    float *p = gk_malloc(l->numel * sizeof *p);
    gk_model_init_params(l, p, 1);
    for (int j = 0; j < l->n_params; j++) {
        const gk_param *t = &l->params[j];
        double sd = t->group == GK_GROUP_BUFFER ? 0.05 : 0.3;
        for (size_t i = t->offset; i < t->offset + t->numel; i++)
            p[i] = (float)(p[i] + sd * tap_normal());
    }
    return p;
}

/* The softcapped logits [T,V] of the full forward on tokens [T]. */
static float *full_logits(const gk_layout *l, const float *p, const int *tok, int T)
{
    int V = l->cfg.model.vocab;
    gk_model_f32 *m = gk_model_new_f32(l, 1, T);
    int *tgt = gk_calloc((size_t)T, sizeof *tgt);
    gk_model_forward_rows_f32(m, p, tok, tgt, NULL);
    float *z = gk_malloc((size_t)T * V * sizeof *z);
    memcpy(z, gk_model_logits_f32(m), (size_t)T * V * sizeof *z);
    gk_gen_softcap(z, T * V, l->cfg.model.logit_softcap);
    gk_model_free_f32(m);
    free(tgt);
    return z;
}

/* Incremental against full logits at every position; greedy generation
 * against full recomputation. */
static void check_model(const char *what, const gk_config *c)
{
    gk_layout l;
    gk_layout_init(&l, c);
    int T = c->model.seq_len, V = c->model.vocab;
    float *p = perturbed(&l);
    int tok[64];
    for (int t = 0; t < T; t++)
        tok[t] = (int)(tap_uniform() * V);
    float *full = full_logits(&l, p, tok, T);
    gk_gen *g = gk_gen_new(&l, p, 0);
    double err = 0;
    for (int t = 0; t < T; t++) {
        const float *z = gk_gen_step(g, tok[t]), *f = full + (size_t)t * V;
        double d = 0, s = 0;
        for (int v = 0; v < V; v++)
            d = fmax(d, fabs(z[v] - f[v])), s = fmax(s, fabs(f[v]));
        err = fmax(err, d / s);
    }
    ok(err < 1e-5, "%s: incremental logits = full forward at all %d positions (max rel err %.2e)",
       what, T, err);
    ok(gk_gen_room(g) == 0 && gk_gen_pos(g) == T, "%s: the cache is full after seq_len steps",
       what);

    /* greedy: 3 prompt tokens, then the argmax until the context is full */
    gk_gen_reset(g);
    gk_sample_opts so = gk_sample_defaults();
    so.temperature = 0;
    gk_sampler *s = gk_sampler_new(V, &so, 1);
    int n = 3, same = 1;
    float *z = NULL;
    for (int t = 0; t < n; t++)
        z = gk_gen_step(g, tok[t]);
    while (n < T) {
        int next = gk_sample(s, z, tok, n);
        float *ref = full_logits(&l, p, tok, n);
        same &= next == gk_argmax(ref + (size_t)(n - 1) * V, V);
        free(ref);
        tok[n++] = next;
        if (n < T)
            z = gk_gen_step(g, next);
    }
    ok(same, "%s: greedy generation = argmax of full recomputation at each of %d steps", what,
       T - 3);
    gk_sampler_free(s);
    gk_gen_free(g);
    free(full);
    free(p);
    gk_layout_free(&l);
}

/* ---- the context limit ------------------------------------------------------------ */

static void step_past_end(const char *unused)
{
    (void)unused;
    gk_config c = tiny();
    c.model.seq_len = 2;
    gk_config_check(&c, "two");
    gk_layout l;
    gk_layout_init(&l, &c);
    float *p = gk_calloc(l.numel, sizeof *p);
    gk_gen *g = gk_gen_new(&l, p, 0);
    for (int t = 0; t < 3; t++)
        gk_gen_step(g, 1);
}

static void context_limit(void)
{
    char err[512];
    int st = tap_child(step_past_end, NULL, err, sizeof err);
    ok(st == 1 && strstr(err, "context is full (2 tokens") != NULL,
       "a step past seq_len dies in one line (exit %d: %s)", st, err);
}

/* ---- the sampler ------------------------------------------------------------------ */

static void random_logits(float *z, int V)
{
    for (int v = 0; v < V; v++)
        z[v] = (float)(2 * tap_normal());
}

/* N draws with options O and SEED from the same logits into OUT. */
static void draws(const gk_sample_opts *o, uint64_t seed, const float *z, int V, int *out,
                  int n)
{
    gk_sampler *s = gk_sampler_new(V, o, seed);
    float *w = gk_malloc((size_t)V * sizeof *w);
    for (int i = 0; i < n; i++) {
        memcpy(w, z, (size_t)V * sizeof *w);
        out[i] = gk_sample(s, w, out, i);
    }
    free(w);
    gk_sampler_free(s);
}

static void sampler(void)
{
    enum { V = 50, N = 200 };
    float z[V];
    random_logits(z, V);
    int a[N], b[N], c[N];
    gk_sample_opts o = gk_sample_defaults();
    o.top_p = 0.9, o.top_k = 20, o.repetition_penalty = 1.1;
    draws(&o, 42, z, V, a, N);
    draws(&o, 42, z, V, b, N);
    draws(&o, 43, z, V, c, N);
    ok(memcmp(a, b, sizeof a) == 0, "same seed: the same %d tokens", N);
    ok(memcmp(a, c, sizeof a) != 0, "another seed: other tokens");

    /* top-k 1 and a tiny top-p are the argmax, ties included */
    int greedy_k = 1, greedy_p = 1, in_top = 1;
    for (int trial = 0; trial < 50; trial++) {
        random_logits(z, V);
        if (trial % 5 == 0)
            z[7] = z[3] = 9; /* a tie for the maximum: the lower id wins */
        int best = gk_argmax(z, V), id;
        o = gk_sample_defaults(), o.top_k = 1;
        draws(&o, (uint64_t)trial, z, V, &id, 1);
        greedy_k &= id == best;
        o = gk_sample_defaults(), o.top_p = 1e-9;
        draws(&o, (uint64_t)trial, z, V, &id, 1);
        greedy_p &= id == best;
        /* top-k 3: the draw is one of the three largest logits */
        o = gk_sample_defaults(), o.top_k = 3;
        draws(&o, (uint64_t)trial, z, V, &id, 1);
        int above = 0;
        for (int v = 0; v < V; v++) {
            float zv = z[v], zi = z[id];
            above += zv > zi || (v < id && zv == zi);
        }
        in_top &= above < 3;
    }
    ok(greedy_k, "top-k 1 = greedy (argmax, ties to the lower id) in 50 trials");
    ok(greedy_p, "top-p 1e-9 = greedy in 50 trials");
    ok(in_top, "top-k 3 draws only among the 3 most likely");

    /* plain sampling follows the softmax: logits 0, ln 2, ln 4 -> 1/7, 2/7, 4/7;
     * temperature 2 -> proportional to 1, sqrt 2, 2 */
    float w3[3] = {0, (float)log(2), (float)log(4)};
    static int d[20000];
    double want[2][3] = {{1 / 7., 2 / 7., 4 / 7.}, {0, 0, 0}};
    double tot = 1 + sqrt(2) + 2;
    want[1][0] = 1 / tot, want[1][1] = sqrt(2) / tot, want[1][2] = 2 / tot;
    for (int k = 0; k < 2; k++) {
        o = gk_sample_defaults(), o.temperature = k ? 2 : 1;
        draws(&o, 5, w3, 3, d, 20000);
        double f[3] = {0}, worst = 0;
        for (int i = 0; i < 20000; i++)
            f[d[i]] += 1 / 20000.;
        for (int v = 0; v < 3; v++)
            worst = fmax(worst, fabs(f[v] - want[k][v]));
        ok(worst < 0.015, "temperature %d: frequencies within 0.015 of the softmax (%.4f)",
           k ? 2 : 1, worst);
    }

    /* the repetition penalty turns the argmax: 2.0 / 1.5 < 1.9, and
     * -1.0 x 1.5 < -1.2; a repeated id is penalised once (2.0 / 1.5 > 1.2) */
    o = gk_sample_defaults(), o.temperature = 0;
    gk_sampler *s = gk_sampler_new(4, &o, 0);
    float pos[4] = {2.0f, 1.9f, -3, -3}, neg[4] = {-1.0f, -1.2f, -3, -3};
    float once[4] = {2.0f, 1.2f, -3, -3};
    int ctx0[3] = {0, 0, 0};
    ok(gk_sample(s, (float[4]){2.0f, 1.9f, -3, -3}, ctx0, 0) == 0,
       "no context: the argmax is id 0");
    gk_sampler_free(s);
    o.repetition_penalty = 1.5;
    s = gk_sampler_new(4, &o, 0);
    ok(gk_sample(s, pos, ctx0, 1) == 1 && fabsf(pos[0] - 2.0f / 1.5f) < 1e-6f,
       "penalty 1.5 on a positive logit: 2.0 -> %.4f, the argmax moves to id 1", pos[0]);
    ok(gk_sample(s, neg, ctx0, 1) == 1 && neg[0] == -1.5f,
       "penalty 1.5 on a negative logit: -1.0 -> %.2f, the argmax moves to id 1", neg[0]);
    ok(gk_sample(s, once, ctx0, 3) == 0 && fabsf(once[0] - 2.0f / 1.5f) < 1e-6f,
       "an id three times in the context is penalised once (%.4f)", once[0]);
    gk_sampler_free(s);
}

int main(void)
{
    /* first: its forked child runs OpenMP, which a fork after this process
     * started its own OpenMP and OpenBLAS threads would deadlock */
    context_limit();
    tap_seed(7);
    gk_config c = tiny();
    check_model("relu^2, tied, GQA 4/2", &c);
    c = tiny(), c.model.rope_dims = 2;
    check_model("partial RoPE (2 of 4 dims)", &c);
    c = tiny(), c.model.activation = GK_ACT_SWIGLU, c.model.tie_embeddings = false;
    c.model.n_layer = 3;
    check_model("swiglu, untied head, 3 layers", &c);
    c = tiny();
    c.moe.n_experts = 4, c.moe.n_shared = 1, c.moe.expert_hidden = 8, c.moe.top_k = 2;
    c.moe.router = GK_ROUTER_SIGMOID_BIAS;
    gk_config_check(&c, "moe");
    check_model("MoE 4+1 top-2, sigmoid_bias router", &c);
    c.moe.router = GK_ROUTER_TOKEN, c.moe.top_k = 1;
    gk_config_check(&c, "moe");
    check_model("MoE 4+1 top-1, token router", &c);
    sampler();
    return tap_done();
}
