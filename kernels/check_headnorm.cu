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
 * The bf16-input forms (gk_cu_head_prep_fwd_bx, _bwd_bx) run on x rounded to
 * bf16, against the CPU reference on the same rounded values (the bounds
 * above) and against the fp32 forms run on those values widened to fp32:
 * bound 0, every bit of y, rstd, dx and the gain's gradient, since widening
 * is exact and the arithmetic after the load is the same code.
 * Shapes cover D 32, 64 and 128, partial rotary, positions past one block of
 * rows, with and without the gain, tokens packed and LD apart (a block of
 * columns of a wider product, the gaps checked unwritten, in both forms),
 * and the golf baseline's query (B 64, T 1024, 8 heads of 64), which is also
 * timed: one "# timing" line for the fp32 forms, each way, against the chain
 * they replace, and one for the _bx forms. Every launcher is also checked to
 * refuse a token stride (ldx or ldd) that is not a multiple of 4. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

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

/* A device copy of the N tokens of C values of ES bytes of X (device), LD
 * apart, the gaps poisoned. */
static void *spread(gk_cu_arena *a, const void *x, size_t es, int N, int C, int ld)
{
    void *p = gk_check_poisoned(a, (size_t)N * ld * es);
    GK_CU(cudaMemcpy2D(p, (size_t)ld * es, x, (size_t)C * es, (size_t)C * es, N,
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

/* How many of the N values of ES bytes at device P and Q differ in their
 * bits. */
static size_t bits_differ(const void *p, const void *q, size_t n, size_t es)
{
    unsigned char *hp = (unsigned char *)gk_check_xalloc(n * es);
    unsigned char *hq = (unsigned char *)gk_check_xalloc(n * es);
    GK_CU(cudaMemcpy(hp, p, n * es, cudaMemcpyDeviceToHost));
    GK_CU(cudaMemcpy(hq, q, n * es, cudaMemcpyDeviceToHost));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += memcmp(hp + i * es, hq + i * es, es) != 0;
    free(hp), free(hq);
    return k;
}

/* The launchers for x of type X: the fp32 forms or the _bx ones. */
template <typename X> struct prep;
template <> struct prep<float> {
    static constexpr auto fwd = gk_cu_head_prep_fwd;
    static constexpr auto bwd = gk_cu_head_prep_bwd;
};
template <> struct prep<gk_bf16> {
    static constexpr auto fwd = gk_cu_head_prep_fwd_bx;
    static constexpr auto bwd = gk_cu_head_prep_bwd_bx;
};

/* What one form of the fused kernels wrote: y, rstd, dx (packed) and the
 * gain's gradient (NULL without the gain); gaps_ok, whether the gaps between
 * dxb's tokens stayed poisoned (1 when packed). */
typedef struct {
    gk_bf16 *y, *dx;
    float *rstd, *dg;
    int gaps_ok;
} fused;

/* The fused forward, then backward, on X (device, [N, H D] packed), with x's
 * and dxb's tokens H D + PAD apart; d(gain) starts from the host DG0. */
template <typename X>
static fused run_fused(gk_cu_arena *a, const shape *s, const X *x, const float *dy,
                       const float *cos, const float *sin, const float *gain, const float *dg0)
{
    int N = s->B * s->T, C = s->H * s->D, ld = C + s->pad;
    size_t n = (size_t)N * C, rows = (size_t)N * s->H;
    fused f;
    f.y = (gk_bf16 *)gk_check_poisoned(a, n * 2);
    f.rstd = (float *)gk_check_poisoned(a, rows * 4);
    f.dg = gpu_gain_or_null(a, dg0, s->H, s->gain);
    f.gaps_ok = 1;
    void *work = gk_cu_arena_alloc(a, gk_cu_head_prep_bwd_workspace(s->B, s->T, s->H));
    const X *xp = s->pad ? (const X *)spread(a, x, sizeof *x, N, C, ld) : x;
    gk_bf16 *dxp = (gk_bf16 *)gk_check_poisoned(a, (size_t)N * ld * 2);
    GK_CU(prep<X>::fwd(f.y, f.rstd, xp, ld, cos, sin, gain, s->B, s->T, s->H, s->D, s->R,
                       GK_RMSNORM_EPS, 0));
    GK_CU(prep<X>::bwd(dxp, ld, f.dg, dy, xp, ld, f.rstd, cos, sin, gain, s->B, s->T, s->H, s->D,
                       s->R, work, 0));
    f.dx = s->pad ? gather(a, dxp, N, C, ld, &f.gaps_ok) : dxp;
    return f;
}

/* F (from launchers NAME) against the CPU's Y and DX on the same x values,
 * and the gaps between dxb's tokens; WHAT names the shape. */
static void vs_cpu(const char *name, const char *what, const shape *s, const fused *f, float *y,
                   float *dx)
{
    const double bound = 1.0 / 128;
    size_t n = (size_t)s->B * s->T * s->H * s->D;
    double e = bf16_vs(f->y, NULL, y, n);
    GK_OK(e <= bound, "%s fwd vs CPU, %s: max rel err %.3g (bound %.3g)", name, what, e, bound);
    e = bf16_vs(f->dx, NULL, dx, n);
    GK_OK(e <= bound, "%s bwd vs CPU, %s: max rel err %.3g (bound %.3g)", name, what, e, bound);
    if (s->pad)
        GK_OK(f->gaps_ok, "%s bwd, %s: the gaps between tokens are not written", name, what);
}

static void check_shape(gk_cu_arena *a, const shape *s)
{
    int N = s->B * s->T, C = s->H * s->D;
    size_t n = (size_t)N * C, rows = (size_t)N * s->H, nt = (size_t)s->T * (s->R / 2);
    float *cos = (float *)gk_check_xalloc(nt * 4), *sin = (float *)gk_check_xalloc(nt * 4);
    gk_rope_table_f32(cos, sin, s->T, s->R, 10000.0);
    float *x = gk_check_randn(n, 3.0), *dy = gk_check_randn(n, 1.0);
    float *gain = gk_check_randn((size_t)s->H, 1.0), *gh = s->gain ? gain : NULL;
    float *dg0 = gk_check_randn((size_t)s->H, 1.0);
    float *xr = (float *)gk_check_xalloc(n * 4); /* x rounded to bf16 */
    memcpy(xr, x, n * 4);
    gk_check_round_bf16(xr, n);
    /* the CPU on x into y, dx, dg, and on xr into yr, dxr, dgr */
    float *y = (float *)gk_check_xalloc(n * 4), *dx = (float *)gk_check_xalloc(n * 4);
    float *yr = (float *)gk_check_xalloc(n * 4), *dxr = (float *)gk_check_xalloc(n * 4);
    float *dg = (float *)gk_check_xalloc((size_t)s->H * 4);
    float *dgr = (float *)gk_check_xalloc((size_t)s->H * 4);
    memcpy(dg, dg0, (size_t)s->H * 4);
    memcpy(dgr, dg0, (size_t)s->H * 4);
    cpu_ref(s, x, dy, cos, sin, gh, y, dx, dg);
    cpu_ref(s, xr, dy, cos, sin, gh, yr, dxr, dgr);

    float *d_x = gk_check_up(a, x, n), *d_dy = gk_check_up(a, dy, n);
    float *d_cos = gk_check_up(a, cos, nt), *d_sin = gk_check_up(a, sin, nt);
    float *d_gain = gpu_gain_or_null(a, gain, s->H, s->gain);
    float *d_dgc = gpu_gain_or_null(a, dg0, s->H, s->gain);
    gk_bf16 *d_yc = (gk_bf16 *)gk_check_poisoned(a, n * 2), *d_dxc = (gk_bf16 *)gk_check_poisoned(a, n * 2);
    fused f = run_fused(a, s, d_x, d_dy, d_cos, d_sin, d_gain, dg0);
    gpu_chain(a, s, d_x, d_dy, d_cos, d_sin, d_gain, d_yc, d_dxc, d_dgc);

    char what[128];
    snprintf(what, sizeof what, "B %d T %d H %d D %d rope_dims %d%s, token stride %d", s->B,
             s->T, s->H, s->D, s->R, s->gain ? ", gain" : "", C + s->pad);
    double e = bf16_vs(f.y, d_yc, NULL, n);
    GK_OK(e == 0, "head_prep fwd vs the kernel chain, %s: max rel err %.3g (bound 0)", what, e);
    e = bf16_vs(f.dx, d_dxc, NULL, n);
    GK_OK(e == 0, "head_prep bwd vs the kernel chain, %s: max rel err %.3g (bound 0)", what, e);
    vs_cpu("head_prep", what, s, &f, y, dx);
    if (s->gain) {
        float *got = gk_check_down(f.dg, (size_t)s->H), *chain = gk_check_down(d_dgc, (size_t)s->H);
        double ec = gk_check_rel_err(got, chain, (size_t)s->H);
        e = gk_check_rel_err(got, dg, (size_t)s->H);
        GK_OK(e <= 1e-6 && ec <= 1e-6, "head_prep d(gain) (+=), %s: max rel err %.3g vs CPU, "
              "%.3g vs the chain (bound 1e-6)", what, e, ec);
        free(got), free(chain);
    }

    /* x in bf16: the _bx forms against the fp32 ones on the same values */
    float *d_xr = gk_check_up(a, xr, n);
    gk_bf16 *d_xb = (gk_bf16 *)gk_check_upload(a, xr, n, GK_OUT_BF16);
    fused r = run_fused(a, s, d_xr, d_dy, d_cos, d_sin, d_gain, dg0);
    fused b = run_fused(a, s, d_xb, d_dy, d_cos, d_sin, d_gain, dg0);
    size_t ky = bits_differ(b.y, r.y, n, 2), kr = bits_differ(b.rstd, r.rstd, rows, 4);
    GK_OK(ky == 0 && kr == 0, "head_prep_bx fwd vs head_prep on the same bf16 values in fp32, "
          "%s: %zu of %zu y and %zu of %zu rstd differ in bits (bound 0)", what, ky, n, kr, rows);
    size_t kd = bits_differ(b.dx, r.dx, n, 2);
    GK_OK(kd == 0, "head_prep_bx bwd vs head_prep on the same bf16 values in fp32, %s: %zu of "
          "%zu dx differ in bits (bound 0)", what, kd, n);
    vs_cpu("head_prep_bx", what, s, &b, yr, dxr);
    if (s->gain) {
        float *got = gk_check_down(b.dg, (size_t)s->H);
        size_t kg = bits_differ(b.dg, r.dg, (size_t)s->H, 4);
        e = gk_check_rel_err(got, dgr, (size_t)s->H);
        GK_OK(e <= 1e-6 && kg == 0, "head_prep_bx d(gain) (+=), %s: max rel err %.3g vs CPU "
              "(bound 1e-6), %zu of %d differ in bits from head_prep's (bound 0)", what, e, kg,
              s->H);
        free(got);
    }
    free(cos), free(sin), free(x), free(xr), free(dy), free(gain), free(dg0);
    free(y), free(dx), free(yr), free(dxr), free(dg), free(dgr);
}

/* Each launcher, fp32 and _bx, refuses ldx or ldd = H D + 2 (not a multiple
 * of 4: the lanes' loads and stores would be misaligned) with
 * cudaErrorInvalidValue and launches nothing (no error is left pending). */
static void check_strides(gk_cu_arena *a)
{
    const int B = 1, T = 2, H = 2, D = 64, R = 64, C = H * D, bad = C + 2;
    size_t n = (size_t)B * T * (bad + 2);
    float *x = (float *)gk_check_poisoned(a, n * 4), *dy = (float *)gk_check_poisoned(a, n * 4);
    float *tab = (float *)gk_check_poisoned(a, (size_t)T * R * 4);
    float *rstd = (float *)gk_check_poisoned(a, (size_t)B * T * H * 4);
    gk_bf16 *xb = (gk_bf16 *)gk_check_poisoned(a, n * 2);
    gk_bf16 *y = (gk_bf16 *)gk_check_poisoned(a, n * 2);
    void *work = gk_cu_arena_alloc(a, gk_cu_head_prep_bwd_workspace(B, T, H));
    cudaError_t got[] = {
        gk_cu_head_prep_fwd(y, rstd, x, bad, tab, tab, NULL, B, T, H, D, R, GK_RMSNORM_EPS, 0),
        gk_cu_head_prep_fwd_bx(y, rstd, xb, bad, tab, tab, NULL, B, T, H, D, R, GK_RMSNORM_EPS,
                               0),
        gk_cu_head_prep_bwd(y, C, NULL, dy, x, bad, rstd, tab, tab, NULL, B, T, H, D, R, work, 0),
        gk_cu_head_prep_bwd(y, bad, NULL, dy, x, C, rstd, tab, tab, NULL, B, T, H, D, R, work, 0),
        gk_cu_head_prep_bwd_bx(y, C, NULL, dy, xb, bad, rstd, tab, tab, NULL, B, T, H, D, R, work,
                               0),
        gk_cu_head_prep_bwd_bx(y, bad, NULL, dy, xb, C, rstd, tab, tab, NULL, B, T, H, D, R, work,
                               0)};
    int refused = 0, k = (int)(sizeof got / sizeof got[0]);
    for (int i = 0; i < k; i++)
        refused += got[i] == cudaErrorInvalidValue;
    cudaError_t pending = cudaGetLastError();
    GK_OK(refused == k && pending == cudaSuccess, "head_prep(_bx) fwd and bwd, token stride %d "
          "(ldx or ldd) for H D %d: %d of %d calls refused (cudaErrorInvalidValue), pending "
          "error: %s", bad, C, refused, k, cudaGetErrorString(pending));
}

/* The bytes one pass moves at N C values, rows of D, x of XS bytes a value:
 * the forward reads x and writes y (bf16) and rstd; the backward reads dy
 * (fp32), x and rstd, writes dx (bf16) and (with the gain) a double per row
 * that gain_sum_k reads back. */
static double fwd_bytes(size_t n, int D, int xs) { return (double)n * (xs + 2) + n / D * 4.0; }
static double bwd_bytes(size_t n, int D, int xs) { return (double)n * (6 + xs) + n / D * 20.0; }

/* The baseline's query: the chain, then the fused forms, fp32 and bf16 x,
 * forward and backward. The chain's scratch (640 MB) makes the arena's peak
 * (about 900 MiB of the 1 GiB), so the chain runs with dy = x, and what the
 * fused forms need beyond it (a dy of its own, so that the backward reads all
 * its bytes from memory, and the bf16 x) takes the scratch's place after. */
static void time_head_prep(gk_cu_arena *a)
{
    const shape s = {64, 1024, 8, 64, 64, 1, 0};
    int N = s.B * s.T, C = s.H * s.D;
    size_t n = (size_t)N * C, nt = (size_t)s.T * (s.R / 2);
    float *h = gk_check_randn(n, 1.0), *tab = gk_check_randn(nt, 0.5), *gain = gk_check_randn(8, 1.0);
    float *x = gk_check_up(a, h, n);
    float *cos = gk_check_up(a, tab, nt), *sin = gk_check_up(a, tab, nt);
    float *d_gain = gk_check_up(a, gain, 8), *dg = gk_check_up(a, gain, 8);
    float *rstd = (float *)gk_cu_arena_alloc(a, n / s.D * 4);
    gk_bf16 *y = (gk_bf16 *)gk_cu_arena_alloc(a, n * 2), *dx = (gk_bf16 *)gk_cu_arena_alloc(a, n * 2);
    void *work = gk_cu_arena_alloc(a, gk_cu_head_prep_bwd_workspace(s.B, s.T, s.H));
    size_t used = a->used;
    float chain = gk_check_median_ms([&] {
        a->used = used;
        gpu_chain(a, &s, x, x, cos, sin, d_gain, y, dx, dg);
    });
    a->used = used;
    float *dy = (float *)gk_cu_arena_alloc(a, n * 4);
    GK_CU(cudaMemcpy(dy, x, n * 4, cudaMemcpyDeviceToDevice));
    gk_bf16 *xb = (gk_bf16 *)gk_check_upload(a, h, n, GK_OUT_BF16);
    /* the median ms of the forward and the backward of the form for x's type */
    auto time_form = [&](auto x_form, float ms[2]) {
        typedef prep<std::remove_const_t<std::remove_pointer_t<decltype(x_form)>>> form;
        ms[0] = gk_check_median_ms([&] {
            GK_CU(form::fwd(y, rstd, x_form, C, cos, sin, d_gain, s.B, s.T, s.H, s.D, s.R,
                            GK_RMSNORM_EPS, 0));
        });
        ms[1] = gk_check_median_ms([&] {
            GK_CU(form::bwd(dx, C, dg, dy, x_form, C, rstd, cos, sin, d_gain, s.B, s.T, s.H, s.D,
                            s.R, work, 0));
        });
    };
    float f32[2], b16[2];
    time_form((const float *)x, f32);
    time_form((const gk_bf16 *)xb, b16);
    printf("# timing head_prep [65536*8,64]: fwd %.3f ms (%.0f GB/s), bwd %.3f ms (%.0f GB/s); "
           "the chain it replaces, fwd + bwd: %.3f ms\n",
           f32[0], fwd_bytes(n, s.D, 4) / f32[0] / 1e6, f32[1],
           bwd_bytes(n, s.D, 4) / f32[1] / 1e6, chain);
    printf("# timing head_prep_bx (x in bf16) [65536*8,64]: fwd %.3f ms (%.0f GB/s), bwd %.3f ms "
           "(%.0f GB/s)\n",
           b16[0], fwd_bytes(n, s.D, 2) / b16[0] / 1e6, b16[1],
           bwd_bytes(n, s.D, 2) / b16[1] / 1e6);
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
    check_strides(arena);
    gk_cu_arena_reset(arena);
    time_head_prep(arena);
}
