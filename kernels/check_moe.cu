/* check_moe: the mixture-of-experts feed-forward of moe.cu against
 * gk_moe_fwd_f32 / gk_moe_bwd_f32 of lib/moe.h, and the router bias step
 * against gk_moe_router_update; registered in check.h's GK_CHECKS, run by
 * bin/check-cuda.
 *
 * Cases: each router with one activation (sigmoid_bias with relu2, softmax
 * with leaky_relu2, token with swiglu), d_model 64, 4 routed experts and 1
 * shared, top_k 2 (1 for the token router), expert hidden 64, N 300 tokens,
 * one block of a 2-layer layout. The weights are the initial ones of a random
 * seed moved by N(0, 1/in) so that no path is dead (the projections start at
 * zero), the sigmoid router's biases N(0, 0.1^2), and:
 * - sigmoid_bias: expert 3's bias is -10, so no token picks it: an empty
 *   expert, whose GEMMs are skipped.
 * - softmax: router row 3 is a copy of row 1, so experts 1 and 3 tie exactly
 *   on every token (both sides compute a logit the same way for equal rows):
 *   the tie goes to the lower index, on both sides.
 * - Blocks 0 and 1 are checked: q_gain (4 here) and the router bias
 *   before the experts would put their tensors off a multiple of 8 elements
 *   but for the layout's padding (GK_TENSOR_ALIGN); the line gives the
 *   experts' offset.
 *
 * Same numbers on both sides: x, dy and every parameter are rounded to bf16
 * first (gk_check_round_bf16), so the GPU's bf16 copies of x and of the
 * weights hold exactly what the CPU computes with.
 *
 * Routing. The GPU sums the router logits in double, the CPU in float
 * (OpenBLAS), a few float ulp apart (about 1e-6 here); where two experts'
 * keys are that close the two could choose differently, and a token with
 * other experts has an output nothing like the reference's. So the inputs
 * have no near-ties: the check computes every token's keys in double and
 * redraws a token's x while the K-th and (K+1)-th keys are within 1e-4
 * (exact ties, which are the copied router row, are kept: both sides break
 * them the same way). The routing is then the same on both sides, which the
 * loads (exact) and y (a different expert gives an O(1) error) confirm.
 *
 * Bounds (max relative error per element, floored by the output's RMS, as
 * gk_check_rel_err measures it). The GPU rounds to bf16 what the CPU keeps in
 * fp32 between the GEMMs: the activation (the proj GEMM's input) in the
 * forward; the output gradient gate dy and the activation's gradient (the
 * backward GEMMs' inputs) in the backward. Each rounding is at most 2^-8
 * relative (half an ulp of bf16's 8-bit significand at the bottom of a
 * binade); a chain of up to three of them, where an output is dominated by
 * a few terms (relu^2 is heavy-tailed) so that they do not average out,
 * reaches about 1%: over six seeds on an H100 the maxima were 0.6% to 1.1%
 * for y and dx and 0.9% to 1.3% for the expert gradients. So y, dx, the
 * expert and the router weight gradients are held to 3e-2, over twice the
 * worst seen (the router gradient goes through dgate = dy . out, which
 * cancels in dz = g (dg_k - sum g dg), but its sum over the tokens is floored
 * by its RMS; it measured under 0.5%). The loads, the parameters the backward
 * must not touch and the router bias step are exact (bound 0). A second GPU
 * run of the same inputs must repeat every output bit for bit (no atomics).
 *
 * Last, a "# timing" line: the forward and the backward at golf-moe.json's
 * shape on a training micro-batch (time_golf). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "moe.h" /* kernels/moe.h: first, it includes model.h inside extern "C" */
extern "C" {
#include "../lib/moe.h" /* the CPU reference; "moe.h" alone is kernels/moe.h */
}

/* The relative error of the change a backward made: got - init against
 * want - init (both sides added into the same init). */
static double delta_err(const float *got, const float *want, const float *init, size_t n)
{
    float *dg = (float *)gk_check_xalloc(n * sizeof *dg), *dw = (float *)gk_check_xalloc(n * sizeof *dw);
    for (size_t i = 0; i < n; i++)
        dg[i] = (float)((double)got[i] - init[i]), dw[i] = (float)((double)want[i] - init[i]);
    double e = gk_check_rel_err(dg, dw, n);
    free(dg), free(dw);
    return e;
}

enum { NTOK = 300 };

/* Whether token row xr [C] has a near-tie at the top_k boundary of its
 * router keys, computed in double (see the file comment). */
static int near_tie(const gk_layout *l, int b, const float *params, const float *xr)
{
    const gk_config *c = &l->cfg;
    const gk_moe_block *t = &l->moe[b];
    int C = c->model.d_model, E = c->moe.n_experts, K = c->moe.top_k;
    const float *wr = params + l->params[t->router].offset;
    const float *bias = t->router_bias >= 0 ? params + l->params[t->router_bias].offset : NULL;
    double key[64];
    for (int e = 0; e < E; e++) {
        double z = 0;
        for (int i = 0; i < C; i++)
            z += (double)xr[i] * wr[(size_t)e * C + i];
        key[e] = bias ? 1 / (1 + exp(-z)) + bias[e] : z;
    }
    /* sort descending (insertion; E is small) */
    for (int i = 1; i < E; i++)
        for (int j = i; j > 0 && key[j] > key[j - 1]; j--) {
            double s = key[j];
            key[j] = key[j - 1], key[j - 1] = s;
        }
    double gap = key[K - 1] - key[K];
    return gap != 0 && gap < 1e-4;
}

/* One router and activation: the forward, the backward, a repeat, the bias
 * step. */
static void check_case(gk_cu_arena *arena, gk_gemm *g, gk_router router, gk_activation act,
                       int b, const char *name)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = 64, c.model.n_layer = 2, c.model.d_model = 64;
    c.model.n_head = 4, c.model.n_kv_head = 2;
    c.model.activation = act;
    c.moe.n_experts = 4, c.moe.n_shared = 1, c.moe.expert_hidden = 64;
    c.moe.top_k = router == GK_ROUTER_TOKEN ? 1 : 2, c.moe.router = router;
    gk_config_check(&c, "check_moe");
    gk_layout l;
    gk_layout_init(&l, &c);
    const gk_moe_block *t = &l.moe[b];
    int N = NTOK, C = c.model.d_model, E = c.moe.n_experts;
    size_t P = l.numel, NC = (size_t)N * C;

    /* parameters */
    float *params = gk_check_random_params(&l);
    if (t->router_bias >= 0)
        params[l.params[t->router_bias].offset + (size_t)E - 1] = -10;
    if (router == GK_ROUTER_SOFTMAX) {
        float *wr = params + l.params[t->router].offset;
        memcpy(wr + (size_t)(E - 1) * C, wr + (size_t)C, (size_t)C * sizeof *wr);
    }
    gk_check_round_bf16(params, P);

    /* inputs: x without near-ties, tokens, dy */
    float *x = gk_check_randn(NC, 1.0);
    gk_check_round_bf16(x, NC);
    int redrawn = 0;
    for (int n = 0; t->router >= 0 && n < N; n++)
        while (near_tie(&l, b, params, x + (size_t)n * C)) {
            float *r = gk_check_randn((size_t)C, 1.0);
            gk_check_round_bf16(r, (size_t)C);
            memcpy(x + (size_t)n * C, r, (size_t)C * sizeof *r);
            free(r);
            redrawn++;
        }
    int *tokens = (int *)gk_check_xalloc((size_t)N * sizeof *tokens);
    for (int n = 0; n < N; n++)
        tokens[n] = gk_check_rand_int(c.model.vocab);
    float *dy = gk_check_randn(NC, 1.0);
    gk_check_round_bf16(dy, NC);
    float *dx0 = gk_check_randn(NC, 1.0), *grads0 = gk_check_randn(P, 1.0);
    int64_t load0[4];
    for (int e = 0; e < E; e++)
        load0[e] = gk_check_rand_int(100);

    /* the CPU */
    float *y = (float *)gk_check_xalloc(NC * sizeof *y), *dx = (float *)gk_check_xalloc(NC * sizeof *dx);
    float *grads = (float *)gk_check_xalloc(P * sizeof *grads);
    int64_t load[4];
    memcpy(dx, dx0, NC * sizeof *dx), memcpy(grads, grads0, P * sizeof *grads);
    memcpy(load, load0, sizeof load);
    gk_moe_f32 *cpu = gk_moe_new_f32(&l, b, N);
    gk_moe_fwd_f32(cpu, y, x, params, tokens);
    gk_moe_bwd_f32(cpu, dx, grads, dy, load);
    gk_moe_free_f32(cpu);

    /* the GPU, twice on the same inputs */
    float *d_params = gk_check_up(arena, params, P);
    gk_bf16 *d_wbf = (gk_bf16 *)gk_check_upload(arena, params, P, GK_OUT_BF16);
    float *d_x = gk_check_up(arena, x, NC), *d_dy = gk_check_up(arena, dy, NC);
    int *d_tok = (int *)gk_check_up_bytes(arena, tokens, (size_t)N * sizeof *tokens);
    size_t used = arena->used;
    gk_cu_moe *m = gk_cu_moe_new(&l, b, N, arena);
    size_t took = arena->used - used, plan = gk_cu_moe_bytes(&l, N);
    float *got[2][3];
    int64_t gload[2][4];
    for (int run = 0; run < 2; run++) {
        float *d_y = (float *)gk_check_poisoned(arena, NC * sizeof(float));
        float *d_dx = gk_check_up(arena, dx0, NC), *d_g = gk_check_up(arena, grads0, P);
        long long *d_load = (long long *)gk_check_up_bytes(arena, load0, (size_t)E * sizeof *load0);
        gk_cu_moe_fwd(m, g, d_y, d_x, d_params, d_wbf, d_tok);
        gk_cu_moe_bwd(m, g, d_dx, d_g, d_dy, d_load);
        GK_CU(cudaStreamSynchronize(g->stream));
        got[run][0] = gk_check_down(d_y, NC), got[run][1] = gk_check_down(d_dx, NC), got[run][2] = gk_check_down(d_g, P);
        GK_CU(cudaMemcpy(gload[run], d_load, (size_t)E * sizeof *load0, cudaMemcpyDeviceToHost));
    }
    gk_cu_moe_free(m);

    GK_OK(took <= plan, "moe %s: gk_cu_moe_new carved %zu bytes, gk_cu_moe_bytes says %zu",
          name, took, plan);
    int load_ok = memcmp(gload[0], load, (size_t)E * sizeof *load) == 0;
    size_t off = l.params[t->fc[0]].offset;
    GK_OK(load_ok, "moe %s, block %d (experts at offset %zu), N %d E %d S %d top_k %d: load "
          "(+=) %lld %lld %lld %lld, CPU %lld %lld %lld %lld (%d rows redrawn off near-ties)",
          name, b, off, N, E, c.moe.n_shared, c.moe.top_k,
          (long long)gload[0][0] - load0[0], (long long)gload[0][1] - load0[1],
          (long long)gload[0][2] - load0[2], (long long)gload[0][3] - load0[3],
          (long long)(load[0] - load0[0]), (long long)(load[1] - load0[1]),
          (long long)(load[2] - load0[2]), (long long)(load[3] - load0[3]), redrawn);

    const double bound = 3e-2;
    double ey = gk_check_rel_err(got[0][0], y, NC), edx = delta_err(got[0][1], dx, dx0, NC);
    GK_OK(ey <= bound && edx <= bound, "moe %s fwd y, bwd dx (+=): max rel err %.3g %.3g (bound %g)",
          name, ey, edx, bound);

    /* the expert span, the router weight, and everything else untouched */
    size_t lo = l.params[t->fc[0]].offset;
    size_t hi = l.params[t->proj[E + c.moe.n_shared - 1]].offset +
                l.params[t->proj[E + c.moe.n_shared - 1]].numel;
    double eexp = delta_err(got[0][2] + lo, grads + lo, grads0 + lo, hi - lo), erw = 0;
    size_t rlo = lo, rhi = lo;
    if (t->router >= 0) {
        rlo = l.params[t->router].offset, rhi = rlo + l.params[t->router].numel;
        erw = delta_err(got[0][2] + rlo, grads + rlo, grads0 + rlo, rhi - rlo);
    }
    size_t moved = 0;
    for (size_t i = 0; i < P; i++)
        if (!(i >= lo && i < hi) && !(i >= rlo && i < rhi))
            moved += memcmp(&got[0][2][i], &grads0[i], sizeof(float)) != 0;
    GK_OK(eexp <= bound && erw <= bound && moved == 0,
          "moe %s bwd grads (+=): max rel err experts %.3g router %.3g (bound %g), %zu other "
          "entries changed (bound 0)%s", name, eexp, erw, bound, moved,
          t->router >= 0 ? "" : " (no router)");

    int same = memcmp(gload[0], gload[1], (size_t)E * sizeof *load) == 0;
    for (int k = 0; k < 3; k++)
        same &= memcmp(got[0][k], got[1][k], (k == 2 ? P : NC) * sizeof(float)) == 0;
    GK_OK(same, "moe %s: a second run gives the same bits (y, dx, grads, load)", name);

    /* the bias step, from loads with a balanced layer (no move) and a skewed one */
    int L = c.model.n_layer;
    int64_t *bl = (int64_t *)gk_check_xalloc((size_t)L * E * sizeof *bl);
    for (int i = 0; i < L * E; i++)
        bl[i] = i < E ? 7 : gk_check_rand_int(50);
    float *d_p = gk_check_up(arena, params, P);
    long long *d_bl = (long long *)gk_check_up_bytes(arena, bl, (size_t)L * E * sizeof *bl);
    gk_moe_router_update(&l, params, bl, 1e-3);
    gk_cu_moe_router_update(&l, d_p, d_bl, 1e-3, 0);
    float *gp = gk_check_down(d_p, P);
    size_t diff = 0;
    for (size_t i = 0; i < P; i++)
        diff += memcmp(&gp[i], &params[i], sizeof(float)) != 0;
    GK_OK(diff == 0, "moe %s router bias step: %zu of %zu parameters differ (bound 0)", name,
          diff, P);

    free(gp), free(bl);
    for (int run = 0; run < 2; run++)
        for (int k = 0; k < 3; k++)
            free(got[run][k]);
    free(y), free(dx), free(grads), free(dx0), free(grads0), free(dy), free(tokens), free(x);
    free(params);
    gk_layout_free(&l);
}

/* The time of one forward and of one backward at the shape of
 * testdata/config/golf-moe.json (d_model 512, 8 routed experts and 1 shared,
 * top_k 2 of a sigmoid_bias router, expert hidden 344, relu2) on a training
 * micro-batch of N 65536 tokens: informational, a "# timing" line. The
 * passes at this N need about 2.2 GB, past check_main.cu's 512 MiB arena
 * (which holds the GEMM workspace and the cases above, and could not hold
 * even N 16384: 0.55 GB), so the timing reserves an arena of its own for
 * them, halving N until the device has the memory, and gives it back. One
 * block of a 1-layer layout; dy is x (the same buffer) and dx is y, values
 * that do not change what the passes do. */
static void time_golf(gk_gemm *g)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = 64, c.model.n_layer = 1, c.model.d_model = 512;
    c.model.activation = GK_ACT_RELU2;
    c.moe.n_experts = 8, c.moe.n_shared = 1, c.moe.expert_hidden = 344, c.moe.top_k = 2;
    c.moe.router = GK_ROUTER_SIGMOID_BIAS;
    gk_config_check(&c, "check_moe");
    gk_layout l;
    gk_layout_init(&l, &c);
    int N = 65536, C = c.model.d_model;
    size_t P = l.numel, need = 0, free_b = 0, total_b = 0;
    GK_CU(cudaMemGetInfo(&free_b, &total_b));
    for (; N > 256; N /= 2) {
        /* the pieces below, each rounded up to the arena's alignment */
        need = gk_cu_moe_bytes(&l, N) + 2 * (size_t)N * C * sizeof(float) +
               P * (2 * sizeof(float) + sizeof(gk_bf16)) + 8 * GK_CU_ALIGN;
        if (need + ((size_t)256 << 20) <= free_b) /* leave cuBLASLt its headroom */
            break;
    }
    gk_cu_arena a;
    gk_cu_arena_reserve(&a, need);
    float *params = gk_check_random_params(&l), *x = gk_check_randn((size_t)N * C, 1.0);
    float *d_params = gk_check_up(&a, params, P);
    gk_bf16 *d_wbf = (gk_bf16 *)gk_check_upload(&a, params, P, GK_OUT_BF16);
    float *d_x = gk_check_up(&a, x, (size_t)N * C);
    float *d_y = (float *)gk_cu_arena_alloc(&a, (size_t)N * C * sizeof(float));
    float *d_g = (float *)gk_cu_arena_alloc(&a, P * sizeof(float));
    GK_CU(cudaMemset(d_g, 0, P * sizeof(float)));
    long long *d_load = (long long *)gk_cu_arena_alloc(&a, (size_t)c.moe.n_experts * sizeof(long long));
    GK_CU(cudaMemset(d_load, 0, (size_t)c.moe.n_experts * sizeof(long long)));
    gk_cu_moe *m = gk_cu_moe_new(&l, 0, N, &a);
    /* tokens NULL: only the token router reads them */
    float fwd = gk_check_median_ms([&] { gk_cu_moe_fwd(m, g, d_y, d_x, d_params, d_wbf, NULL); });
    float bwd = gk_check_median_ms([&] { gk_cu_moe_bwd(m, g, d_y, d_g, d_x, d_load); });
    printf("# timing moe fwd %.3f ms, bwd %.3f ms (N %d C %d E %d S %d top_k %d hidden %d, "
           "sigmoid_bias relu2; median of 9)\n", fwd, bwd, N, C, c.moe.n_experts,
           c.moe.n_shared, c.moe.top_k, c.moe.expert_hidden);
    gk_cu_moe_free(m);
    gk_cu_arena_release(&a);
    free(x), free(params);
    gk_layout_free(&l);
}

void gk_check_moe(gk_cu_arena *arena)
{
    gk_gemm g;
    gk_gemm_init(&g, arena, 0);
    check_case(arena, &g, GK_ROUTER_SIGMOID_BIAS, GK_ACT_RELU2, 1, "sigmoid_bias relu2");
    check_case(arena, &g, GK_ROUTER_SOFTMAX, GK_ACT_LEAKY_RELU2, 0, "softmax leaky_relu2");
    check_case(arena, &g, GK_ROUTER_TOKEN, GK_ACT_SWIGLU, 0, "token swiglu");
    time_golf(&g);
    gk_gemm_destroy(&g);
}
