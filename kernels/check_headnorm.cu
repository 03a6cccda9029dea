/* check_headnorm: the fused per-head preparation of headnorm.cu against the
 * chain it replaces, run two ways on the same random inputs:
 * - the CPU reference of lib/ops.h (RMSNorm, rotary, q_gain as a scale-add
 *   into zeros, and their backwards), rounded to bf16 where the kernel writes
 *   bf16: bound 2^-7 relative, one bf16 ulp: RMSNorm's double sums run in
 *   another order on the CPU, so an fp32 value may differ by an ulp and then
 *   round to the neighbouring bf16; the gain's gradient 1e-6 (float sums of
 *   doubles in different orders);
 * - the chain of elementwise.cu's kernels the model ran before (rmsnorm,
 *   rope, scale-add, the bf16 conversion; scale_bwd_set, rope_bwd,
 *   rmsnorm_bwd into bf16): bound 0, bit for bit in value, since each fused
 *   step is the same float operation as its kernel's; the gain's gradient 1e-6
 *   (the fused kernel sums its terms in another order).
 * Shapes cover D 32, 64 and 128, partial rotary, positions past one block of
 * rows, with and without the gain, tokens packed and LD apart (a block of
 * columns of a wider product, the gaps checked unwritten), and the golf
 * baseline's query (B 64, T 1024, 8 heads of 64), which is also timed (one
 * "# timing" line each way, against the chain it replaces). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "elementwise.h"
#include "headnorm.h"

/* PAD > 0 runs the fused kernels on x and dxb whose tokens are H D + PAD
 * elements apart, the gaps NaN in x and checked to stay poisoned in dxb. */
typedef struct {
    int B, T, H, D, R, gain, pad;
} shape;

static float *gpu_gain_or_null(gk_cu_arena *a, const float *gain, int H, int on)
{
    return on ? gk_check_up(a, gain, (size_t)H) : NULL;
}

/* The chain of elementwise kernels the model used to run: forward into the
 * bf16 Y (and the fp32 intermediates qn, qr it keeps), backward into the bf16
 * DX and DGAIN. */
static void gpu_chain(gk_cu_arena *a, const shape *s, const float *x, const float *dy,
                      const float *cos, const float *sin, const float *gain, gk_bf16 *y,
                      gk_bf16 *dx, float *dgain)
{
    int N = s->B * s->T, C = s->H * s->D;
    size_t n = (size_t)N * C, rows = (size_t)N * s->H;
    float *qn = (float *)gk_cu_arena_alloc(a, n * 4), *qr = (float *)gk_cu_arena_alloc(a, n * 4);
    float *qg = (float *)gk_cu_arena_alloc(a, n * 4), *rstd = (float *)gk_cu_arena_alloc(a, rows * 4);
    float *d1 = (float *)gk_cu_arena_alloc(a, n * 4), *d2 = (float *)gk_cu_arena_alloc(a, n * 4);
    void *work = gk_cu_arena_alloc(a, gk_cu_scale_add_bwd_workspace(N, C));
    GK_CU(gk_cu_rmsnorm_fwd(qn, NULL, rstd, x, (int)rows, s->D, GK_RMSNORM_EPS, 0));
    GK_CU(gk_cu_rope_fwd(qr, qn, cos, sin, s->B, s->T, s->H, s->D, s->R, 0));
    const float *q = qr;
    if (gain) {
        GK_CU(cudaMemset(qg, 0, n * 4));
        GK_CU(gk_cu_scale_add_fwd(qg, qr, gain, N, C, s->D, 0));
        q = qg;
    }
    gk_f32_to_bf16(y, q, n, 0);
    const float *g = dy;
    if (gain) {
        GK_CU(gk_cu_scale_bwd_set(d2, NULL, dgain, dy, qr, gain, N, C, s->D, work, 0));
        g = d2;
    }
    GK_CU(gk_cu_rope_bwd(d1, g, cos, sin, s->B, s->T, s->H, s->D, s->R, 1, 0));
    GK_CU(gk_cu_rmsnorm_bwd(NULL, dx, d1, qn, rstd, (int)rows, s->D, 0));
}

/* The CPU reference, forward into Y (fp32) and backward into DX, DGAIN. */
static void cpu_ref(const shape *s, const float *x, const float *dy, const float *cos,
                    const float *sin, const float *gain, float *y, float *dx, float *dgain)
{
    int N = s->B * s->T, C = s->H * s->D, rows = N * s->H;
    size_t n = (size_t)N * C;
    float *qn = (float *)gk_check_xalloc(n * 4), *qr = (float *)gk_check_xalloc(n * 4);
    float *rstd = (float *)gk_check_xalloc((size_t)rows * 4);
    float *d1 = (float *)gk_check_xalloc(n * 4), *d2 = (float *)gk_check_xalloc(n * 4);
    gk_rmsnorm_fwd_f32(qn, rstd, x, rows, s->D, GK_RMSNORM_EPS);
    gk_rope_fwd_f32(qr, qn, cos, sin, s->B, s->T, s->H, s->D, s->R);
    if (gain) {
        gk_scale_add_fwd_f32(y, qr, gain, N, C, s->D);
        gk_scale_add_bwd_f32(d2, dgain, dy, qr, gain, N, C, s->D);
    } else {
        memcpy(y, qr, n * 4);
        memcpy(d2, dy, n * 4);
    }
    gk_rope_bwd_f32(d1, d2, cos, sin, s->B, s->T, s->H, s->D, s->R);
    gk_rmsnorm_bwd_f32(dx, d1, qn, rstd, rows, s->D);
    free(qn), free(qr), free(rstd), free(d1), free(d2);
}

static double bf16_vs(const gk_bf16 *dev, const void *other_dev, float *want, size_t n)
{
    float *got = gk_check_download(dev, n, GK_OUT_BF16);
    float *w = want;
    if (other_dev)
        w = gk_check_download(other_dev, n, GK_OUT_BF16);
    else
        gk_check_round_bf16(w, n);
    double e = gk_check_rel_err(got, w, n);
    if (other_dev)
        free(w);
    free(got);
    return e;
}

/* A device copy of the N tokens of C floats of X (device), LD apart, the
 * gaps poisoned. */
static float *spread(gk_cu_arena *a, const float *x, int N, int C, int ld)
{
    float *p = (float *)gk_check_poisoned(a, (size_t)N * ld * 4);
    GK_CU(cudaMemcpy2D(p, (size_t)ld * 4, x, (size_t)C * 4, (size_t)C * 4, N,
                       cudaMemcpyDeviceToDevice));
    return p;
}

/* The N tokens of C bf16 of P (tokens LD apart) packed into a new device
 * array; *gaps_ok tells whether every gap element still holds the poison. */
static gk_bf16 *gather(gk_cu_arena *a, const gk_bf16 *p, int N, int C, int ld, int *gaps_ok)
{
    gk_bf16 *q = (gk_bf16 *)gk_cu_arena_alloc(a, (size_t)N * C * 2);
    GK_CU(cudaMemcpy2D(q, (size_t)C * 2, p, (size_t)ld * 2, (size_t)C * 2, N,
                       cudaMemcpyDeviceToDevice));
    size_t bytes = (size_t)N * ld * 2;
    unsigned char *h = (unsigned char *)gk_check_xalloc(bytes);
    GK_CU(cudaMemcpy(h, p, bytes, cudaMemcpyDeviceToHost));
    *gaps_ok = 1;
    for (size_t i = 0; i < bytes; i++)
        if (i / 2 % ld >= (size_t)C && h[i] != 0xFF)
            *gaps_ok = 0;
    free(h);
    return q;
}

static void check_shape(gk_cu_arena *a, const shape *s)
{
    int N = s->B * s->T, C = s->H * s->D;
    size_t n = (size_t)N * C, rows = (size_t)N * s->H, nt = (size_t)s->T * (s->R / 2);
    float *cos = (float *)gk_check_xalloc(nt * 4), *sin = (float *)gk_check_xalloc(nt * 4);
    gk_rope_table_f32(cos, sin, s->T, s->R, 10000.0);
    float *x = gk_check_randn(n, 3.0), *dy = gk_check_randn(n, 1.0);
    float *gain = gk_check_randn((size_t)s->H, 1.0);
    float *dg0 = gk_check_randn((size_t)s->H, 1.0);
    float *y = (float *)gk_check_xalloc(n * 4), *dx = (float *)gk_check_xalloc(n * 4);
    float *dg = (float *)gk_check_xalloc((size_t)s->H * 4);
    memcpy(dg, dg0, (size_t)s->H * 4);
    cpu_ref(s, x, dy, cos, sin, s->gain ? gain : NULL, y, dx, dg);

    float *d_x = gk_check_up(a, x, n), *d_dy = gk_check_up(a, dy, n);
    float *d_cos = gk_check_up(a, cos, nt), *d_sin = gk_check_up(a, sin, nt);
    float *d_gain = gpu_gain_or_null(a, gain, s->H, s->gain);
    float *d_dg = gpu_gain_or_null(a, dg0, s->H, s->gain);
    float *d_dgc = gpu_gain_or_null(a, dg0, s->H, s->gain);
    gk_bf16 *d_y = (gk_bf16 *)gk_check_poisoned(a, n * 2), *d_dx = (gk_bf16 *)gk_check_poisoned(a, n * 2);
    gk_bf16 *d_yc = (gk_bf16 *)gk_check_poisoned(a, n * 2), *d_dxc = (gk_bf16 *)gk_check_poisoned(a, n * 2);
    float *d_rstd = (float *)gk_check_poisoned(a, rows * 4);
    void *work = gk_cu_arena_alloc(a, gk_cu_head_prep_bwd_workspace(s->B, s->T, s->H));
    int ld = C + s->pad, gaps_ok = 1;
    float *d_xp = s->pad ? spread(a, d_x, N, C, ld) : d_x;
    gk_bf16 *d_dxp = s->pad ? (gk_bf16 *)gk_check_poisoned(a, (size_t)N * ld * 2) : d_dx;
    GK_CU(gk_cu_head_prep_fwd(d_y, d_rstd, d_xp, ld, d_cos, d_sin, d_gain, s->B, s->T, s->H,
                              s->D, s->R, GK_RMSNORM_EPS, 0));
    GK_CU(gk_cu_head_prep_bwd(d_dxp, ld, d_dg, d_dy, d_xp, ld, d_rstd, d_cos, d_sin, d_gain,
                              s->B, s->T, s->H, s->D, s->R, work, 0));
    if (s->pad)
        d_dx = gather(a, d_dxp, N, C, ld, &gaps_ok);
    gpu_chain(a, s, d_x, d_dy, d_cos, d_sin, d_gain, d_yc, d_dxc, d_dgc);

    const double bound = 1.0 / 128;
    char what[128];
    snprintf(what, sizeof what, "B %d T %d H %d D %d rope_dims %d%s, token stride %d", s->B,
             s->T, s->H, s->D, s->R, s->gain ? ", gain" : "", ld);
    double e = bf16_vs(d_y, d_yc, NULL, n);
    GK_OK(e == 0, "head_prep fwd vs the kernel chain, %s: max rel err %.3g (bound 0)", what, e);
    e = bf16_vs(d_y, NULL, y, n);
    GK_OK(e <= bound, "head_prep fwd vs CPU, %s: max rel err %.3g (bound %.3g)", what, e, bound);
    e = bf16_vs(d_dx, d_dxc, NULL, n);
    GK_OK(e == 0, "head_prep bwd vs the kernel chain, %s: max rel err %.3g (bound 0)", what, e);
    e = bf16_vs(d_dx, NULL, dx, n);
    GK_OK(e <= bound, "head_prep bwd vs CPU, %s: max rel err %.3g (bound %.3g)", what, e, bound);
    if (s->pad)
        GK_OK(gaps_ok, "head_prep bwd, %s: the gaps between tokens are not written", what);
    if (s->gain) {
        float *got = gk_check_down(d_dg, (size_t)s->H), *chain = gk_check_down(d_dgc, (size_t)s->H);
        double ec = gk_check_rel_err(got, chain, (size_t)s->H);
        e = gk_check_rel_err(got, dg, (size_t)s->H);
        GK_OK(e <= 1e-6 && ec <= 1e-6, "head_prep d(gain) (+=), %s: max rel err %.3g vs CPU, "
              "%.3g vs the chain (bound 1e-6)", what, e, ec);
        free(got), free(chain);
    }
    free(cos), free(sin), free(x), free(dy), free(gain), free(dg0), free(y), free(dx), free(dg);
}

/* The baseline's query, fused and as the chain, forward and backward. */
static void time_head_prep(gk_cu_arena *a)
{
    const shape s = {64, 1024, 8, 64, 64, 1, 0};
    int N = s.B * s.T, C = s.H * s.D;
    size_t n = (size_t)N * C, nt = (size_t)s.T * (s.R / 2);
    float *h = gk_check_randn(n, 1.0), *tab = gk_check_randn(nt, 0.5), *gain = gk_check_randn(8, 1.0);
    float *x = gk_check_up(a, h, n), *dy = x; /* one buffer: the chain's scratch is 640 MB */
    float *cos = gk_check_up(a, tab, nt), *sin = gk_check_up(a, tab, nt);
    float *d_gain = gk_check_up(a, gain, 8), *dg = gk_check_up(a, gain, 8);
    float *rstd = (float *)gk_cu_arena_alloc(a, n / s.D * 4);
    gk_bf16 *y = (gk_bf16 *)gk_cu_arena_alloc(a, n * 2), *dx = (gk_bf16 *)gk_cu_arena_alloc(a, n * 2);
    void *work = gk_cu_arena_alloc(a, gk_cu_head_prep_bwd_workspace(s.B, s.T, s.H));
    float fwd = gk_check_median_ms([&] {
        GK_CU(gk_cu_head_prep_fwd(y, rstd, x, C, cos, sin, d_gain, s.B, s.T, s.H, s.D, s.R,
                                  GK_RMSNORM_EPS, 0));
    });
    float bwd = gk_check_median_ms([&] {
        GK_CU(gk_cu_head_prep_bwd(dx, C, dg, dy, x, C, rstd, cos, sin, d_gain, s.B, s.T, s.H,
                                  s.D, s.R, work, 0));
    });
    size_t used = a->used;
    float chain = gk_check_median_ms([&] {
        a->used = used;
        gpu_chain(a, &s, x, dy, cos, sin, d_gain, y, dx, dg);
    });
    printf("# timing head_prep [65536*8,64]: fwd %.3f ms (%.0f GB/s), bwd %.3f ms (%.0f GB/s); "
           "the chain it replaces, fwd + bwd: %.3f ms\n",
           fwd, 6.0 * n / fwd / 1e6, bwd, 10.0 * n / bwd / 1e6, chain);
    free(h), free(tab), free(gain);
}

void gk_check_headnorm(gk_cu_arena *arena)
{
    static const shape shapes[] = {{1, 1, 1, 64, 64, 1, 0},    {2, 37, 3, 64, 64, 1, 0},
                                   {1, 5, 2, 32, 16, 0, 0},    {3, 17, 2, 128, 40, 1, 0},
                                   {2, 300, 4, 64, 32, 0, 0},  {1, 1024, 8, 64, 64, 1, 0},
                                   {2, 33, 8, 64, 64, 1, 512}, {1, 40, 4, 64, 16, 0, 260}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        check_shape(arena, &shapes[i]);
        gk_cu_arena_reset(arena);
    }
    time_head_prep(arena);
}
