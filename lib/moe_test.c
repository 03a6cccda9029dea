/* moe_test: TAP proof of the mixture-of-experts feed-forward of moe.h, around
 * the whole-model gradient checks of each router, which live in model_test
 * with the model's other gradient checks.
 *
 * - The dense model is the case n_experts 1, n_shared 0: same layout, no MoE
 *   tensors. And a MoE whose experts all equal the dense MLP gives the dense
 *   model's loss for the softmax and the sigmoid routers, whose weights sum
 *   to 1 whatever they choose: this ties the dispatch (sort, gather, expert
 *   products, weighted scatter) to the dense MLP that model_test checks.
 * - Float against double, and bitwise repeatability of the float passes and
 *   of the load counts.
 * - Load counts: a back-propagated forward adds N top_k routed tokens per
 *   layer, a forward alone nothing; the token router sends token t to expert
 *   t mod E.
 * - The aux-loss-free bias step: on a layer skewed by its bias toward one
 *   expert, the step moves the bias against the load and repeated steps
 *   bring the load toward balance.
 * - Parameter counts of testdata/config/moe.json against gk_config_params
 *   (total and active), the names and groups of the MoE tensors. */
#include "model.h"
#include "moe.h"
#include "tap.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A tiny model: vocab 32, 2 layers, width 16, 2 sequences of 8 tokens; with
 * E routed experts (hidden 8), S shared ones, top_k K and ROUTER. */
static gk_config tiny(int E, int S, int K, gk_router router)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = 32, c.model.n_layer = 2, c.model.d_model = 16, c.model.mlp_hidden = 8;
    c.model.n_head = 4, c.model.n_kv_head = 2, c.model.seq_len = 8;
    c.moe.n_experts = E, c.moe.n_shared = S, c.moe.top_k = K, c.moe.router = router;
    c.train.grad_accum = 1, c.train.batch_tokens = 16;
    gk_config_check(&c, "tiny");
    return c;
}

enum { B = 2, T = 8, N = B * T };

static void random_tokens(int *x, int vocab)
{
    for (int i = 0; i < N; i++)
        x[i] = (int)(tap_uniform() * vocab);
}

/* Initial weights for seed 7, every coordinate of a non-buffer tensor moved
 * by N(0, 0.3^2) so that no path is dead (the projections start at zero). */
static float *perturbed(const gk_layout *l)
{
    float *p = gk_malloc(l->numel * sizeof *p);
    gk_model_init_params(l, p, 7);
    for (int j = 0; j < l->n_params; j++)
        for (size_t i = 0; l->params[j].group != GK_GROUP_BUFFER && i < l->params[j].numel; i++)
            p[l->params[j].offset + i] += (float)(0.3 * tap_normal());
    return p;
}

static double *to_double(const float *p, size_t n)
{
    double *d = gk_malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = p[i];
    return d;
}

/* ---- the dense model as a special case ------------------------------------------- */

static void dense_case(void)
{
    gk_config c = tiny(1, 0, 1, GK_ROUTER_SIGMOID_BIAS);
    gk_layout l;
    gk_layout_init(&l, &c);
    int moe_names = 0;
    for (int j = 0; j < l.n_params; j++)
        moe_names += strstr(l.params[j].name, "moe.") != NULL;
    ok(!l.moe && !moe_names && l.n_buffer == 0 && gk_layout_find(&l, "blocks.1.mlp.fc.weight") &&
           l.n_params == 1 + 2 * GK_BLK_COUNT + 1,
       "n_experts 1, n_shared 0 is the dense model: mlp.fc/mlp.proj, no MoE tensor or buffer");
    gk_layout_free(&l);
}

/* Every expert a copy of the dense block's MLP, the router random: the loss
 * (in double and in float) is the dense model's. */
static void identical_experts(gk_router router)
{
    gk_config cd = tiny(1, 0, 1, router), cm = tiny(4, 0, 2, router);
    gk_layout ld, lm;
    gk_layout_init(&ld, &cd);
    gk_layout_init(&lm, &cm);
    float *pd = perturbed(&ld), *pm = perturbed(&lm);
    for (int j = 0; j < lm.n_params; j++) {
        const gk_param *t = &lm.params[j];
        const gk_param *same = gk_layout_find(&ld, t->name);
        if (same)
            memcpy(pm + t->offset, pd + same->offset, t->numel * sizeof *pm);
    }
    for (int b = 0; b < 2; b++)
        for (int e = 0; e < 4; e++) {
            const gk_param *fc = gk_layout_block(&ld, b, GK_BLK_FC);
            const gk_param *pr = gk_layout_block(&ld, b, GK_BLK_MLP_PROJ);
            memcpy(pm + lm.params[lm.moe[b].fc[e]].offset, pd + fc->offset,
                   fc->numel * sizeof *pm);
            memcpy(pm + lm.params[lm.moe[b].proj[e]].offset, pd + pr->offset,
                   pr->numel * sizeof *pm);
        }
    int tok[N], tgt[N];
    random_tokens(tok, 32);
    random_tokens(tgt, 32);
    double *qd = to_double(pd, ld.numel), *qm = to_double(pm, lm.numel);
    gk_model_f64 *md = gk_model_new_f64(&ld, B, T), *mm = gk_model_new_f64(&lm, B, T);
    double a = gk_model_forward_f64(md, qd, tok, tgt), b = gk_model_forward_f64(mm, qm, tok, tgt);
    gk_model_f32 *fd = gk_model_new_f32(&ld, B, T), *fm = gk_model_new_f32(&lm, B, T);
    double af = gk_model_forward_f32(fd, pd, tok, tgt), bf = gk_model_forward_f32(fm, pm, tok, tgt);
    const char *name = router == GK_ROUTER_SOFTMAX ? "softmax" : "sigmoid_bias";
    ok(fabs(a - b) < 1e-6 * a && fabs(af - bf) < 1e-6 * af,
       "4 identical experts, top-2, %s router = the dense MLP: loss %.12f vs %.12f (double), "
       "%.9f vs %.9f (float)", name, b, a, bf, af);
    gk_model_free_f64(md), gk_model_free_f64(mm), gk_model_free_f32(fd), gk_model_free_f32(fm);
    free(pd), free(pm), free(qd), free(qm);
    gk_layout_free(&ld), gk_layout_free(&lm);
}

/* ---- float, double, repeatability, load --------------------------------------- */

static void passes(gk_router router, int K)
{
    gk_config c = tiny(4, 1, K, router);
    gk_layout l;
    gk_layout_init(&l, &c);
    int tok[N], tgt[N];
    random_tokens(tok, 32);
    random_tokens(tgt, 32);
    float *p = perturbed(&l);
    double *pd = to_double(p, l.numel);
    float *g1 = gk_calloc(l.numel, sizeof *g1), *g2 = gk_calloc(l.numel, sizeof *g2);
    double *gd = gk_calloc(l.numel, sizeof *gd);
    gk_model_f32 *m1 = gk_model_new_f32(&l, B, T), *m2 = gk_model_new_f32(&l, B, T);
    gk_model_f64 *md = gk_model_new_f64(&l, B, T);
    const char *name = router == GK_ROUTER_SOFTMAX ? "softmax"
                       : router == GK_ROUTER_TOKEN ? "token" : "sigmoid_bias";

    double l1 = gk_model_forward_f32(m1, p, tok, tgt);
    int64_t *load = gk_model_expert_load_f32(m1);
    int untouched = 1;
    for (int i = 0; i < 2 * 4; i++)
        untouched &= load[i] == 0;
    gk_model_backward_f32(m1, g1, 1);
    double l2 = gk_model_forward_f32(m2, p, tok, tgt);
    gk_model_backward_f32(m2, g2, 1);
    ok(l1 == l2 && memcmp(g1, g2, l.numel * sizeof *g1) == 0 &&
           memcmp(load, gk_model_expert_load_f32(m2), 8 * sizeof *load) == 0,
       "%s: loss, gradients and load repeat bitwise", name);

    int sums = 1;
    for (int b = 0; b < 2; b++) {
        int64_t s = 0;
        for (int e = 0; e < 4; e++)
            s += load[b * 4 + e];
        sums &= s == (int64_t)N * K;
    }
    ok(untouched && sums, "%s: a forward alone counts nothing; a backward adds N x top_k = %d "
                          "per layer", name, N * K);
    if (router == GK_ROUTER_TOKEN) {
        int64_t want[4] = {0};
        for (int i = 0; i < N; i++)
            want[tok[i] % 4]++;
        ok(memcmp(load, want, sizeof want) == 0 && memcmp(load + 4, want, sizeof want) == 0,
           "token router: expert = token_id mod 4 in every layer");
    }

    double ld = gk_model_forward_f64(md, pd, tok, tgt);
    gk_model_backward_f64(md, gd, 1);
    double err = 0, scale = 0;
    for (size_t i = 0; i < l.numel; i++)
        err = fmax(err, fabs(g1[i] - gd[i])), scale = fmax(scale, fabs(gd[i]));
    ok(fabs(l1 - ld) < 1e-5 * ld && err < 1e-4 * scale,
       "%s: float vs double, loss rel diff %.1e, gradient max diff / max %.1e", name,
       fabs(l1 - ld) / ld, err / scale);
    gk_model_free_f32(m1), gk_model_free_f32(m2), gk_model_free_f64(md);
    free(p), free(pd), free(g1), free(g2), free(gd);
    gk_layout_free(&l);
}

/* ---- the bias step ------------------------------------------------------------------ */

static double max_fraction(const gk_layout *l, const int64_t *load)
{
    double frac[8], mx = 0;
    gk_moe_load_fractions(l, load, frac);
    for (int i = 0; i < 8; i++)
        mx = fmax(mx, frac[i]);
    return mx;
}

static void bias_update(void)
{
    gk_config c = tiny(4, 1, 2, GK_ROUTER_SIGMOID_BIAS);
    gk_layout l;
    gk_layout_init(&l, &c);
    int tok[N], tgt[N];
    random_tokens(tok, 32);
    random_tokens(tgt, 32);
    float *p = perturbed(&l), *g = gk_calloc(l.numel, sizeof *g);
    /* skew: a bias of 1 on expert 0 beats any difference of sigmoid scores,
     * so every token takes expert 0 (half of all routed slots at top-2) */
    for (int b = 0; b < 2; b++)
        p[l.params[l.moe[b].router_bias].offset] = 1;
    gk_model_f32 *m = gk_model_new_f32(&l, B, T);
    int64_t *load = gk_model_expert_load_f32(m);
    gk_model_forward_f32(m, p, tok, tgt);
    gk_model_backward_f32(m, g, 1);
    double first = max_fraction(&l, load);
    float before[4], *bias = p + l.params[l.moe[0].router_bias].offset;
    memcpy(before, bias, sizeof before);
    int64_t l0[4];
    memcpy(l0, load, sizeof l0);
    const double rate = 0.05;
    gk_moe_router_update(&l, p, load, rate);
    int signs = 1;
    for (int e = 0; e < 4; e++) {
        double d = bias[e] - before[e], mean = N * 2 / 4.0;
        signs &= l0[e] > mean ? fabs(d + rate) < 1e-6 : l0[e] < mean ? fabs(d - rate) < 1e-6 : d == 0;
    }
    ok(first == 0.5 && signs,
       "skewed layer: expert 0 takes %.2f of the load; one step moves each bias by %g "
       "against its load (-rate overloaded, +rate underloaded)", first, rate);
    double last = first;
    for (int step = 0; step < 40; step++) {
        memset(load, 0, 8 * sizeof *load);
        gk_model_forward_f32(m, p, tok, tgt);
        gk_model_backward_f32(m, g, 1);
        last = max_fraction(&l, load);
        gk_moe_router_update(&l, p, load, rate);
    }
    ok(last < 0.4, "40 bias steps at rate %g: the largest expert share goes %.2f -> %.2f "
                   "(balanced: 0.25)", rate, first, last);
    gk_model_free_f32(m);
    free(p), free(g);
    gk_layout_free(&l);
}

/* ---- layout and counts ------------------------------------------------------------- */

static void counts(void)
{
    gk_config c;
    gk_config_load(&c, "testdata/config/moe.json");
    gk_layout l;
    gk_layout_init(&l, &c);
    int64_t total, active, skipped = 0;
    gk_config_params(&c, &total, &active);
    /* what one token skips: n_experts - top_k routed experts per layer */
    for (int b = 0; b < c.model.n_layer; b++)
        skipped += (int64_t)(c.moe.n_experts - c.moe.top_k) *
                   (int64_t)(l.params[l.moe[b].fc[0]].numel + l.params[l.moe[b].proj[0]].numel);
    int64_t mine = (int64_t)(l.n_weights - l.n_buffer);
    ok(mine == total && mine - skipped == active && l.n_buffer == (size_t)(4 * 8),
       "moe.json: %lld trained parameters (gk_config_params %lld), %lld active (%lld), "
       "%zu buffer elements", (long long)mine, (long long)total, (long long)(mine - skipped),
       (long long)active, l.n_buffer);
    const gk_param *r = gk_layout_find(&l, "blocks.2.moe.router.weight");
    const gk_param *bias = gk_layout_find(&l, "blocks.2.moe.router_bias");
    const gk_param *fc = gk_layout_find(&l, "blocks.3.moe.experts.7.fc.weight");
    const gk_param *sh = gk_layout_find(&l, "blocks.0.moe.shared.0.proj.weight");
    ok(r && r->shape[0] == 8 && r->shape[1] == 256 && r->group == GK_GROUP_SCALAR &&
           r->init == GK_INIT_UNIFORM && bias && bias->ndim == 1 && bias->shape[0] == 8 &&
           bias->group == GK_GROUP_BUFFER && bias->init == GK_INIT_CONST && fc &&
           fc->shape[0] == 512 && fc->shape[1] == 256 && fc->group == GK_GROUP_MATRIX && sh &&
           sh->shape[0] == 256 && sh->shape[1] == 256 && sh->init == GK_INIT_CONST &&
           sh->init_arg == 0 && !gk_layout_find(&l, "blocks.0.mlp.fc.weight"),
       "moe.json layout: router [8,256] scalar Adam, router_bias [8] buffer at 0, swiglu "
       "experts fc [512,256] Muon, proj zero-init");
    gk_layout_free(&l);

    c = tiny(4, 1, 1, GK_ROUTER_TOKEN);
    gk_layout_init(&l, &c);
    gk_config_params(&c, &total, &active);
    ok((int64_t)l.n_weights == total && l.n_buffer == 0 && l.moe[0].router < 0 &&
           !gk_layout_find(&l, "blocks.0.moe.router.weight"),
       "token router: no router weight, no bias, %zu parameters = gk_config_params",
       l.n_weights);
    gk_layout_free(&l);
}

int main(void)
{
    tap_seed(0x6A09E667F3BCC909ull);
    dense_case();
    identical_experts(GK_ROUTER_SOFTMAX);
    identical_experts(GK_ROUTER_SIGMOID_BIAS);
    passes(GK_ROUTER_SIGMOID_BIAS, 2);
    passes(GK_ROUTER_SOFTMAX, 2);
    passes(GK_ROUTER_TOKEN, 1);
    bias_update();
    counts();
    return tap_done();
}
