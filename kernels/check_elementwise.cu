/* check_elementwise: the kernels of elementwise.cu against their CPU twins in
 * lib/ops.h, registered in check.h's GK_CHECKS and run by bin/check-cuda.
 *
 * Each check runs the CPU function and the kernel on the same random values
 * (normal, never zero), on several shapes, among them widths that are not
 * multiples of the block (256) or the warp, single rows and single tokens.
 * Outputs that a kernel overwrites start poisoned (NaN); outputs it adds into
 * start from random values on both sides; where the contract lets an output
 * alias an input, the aliased call is checked too.
 *
 * Bounds (max relative error per element, floored by the output's RMS, as
 * gk_check_rel_err measures it):
 * - 0, bit-identical, where both sides do the same float operations in the
 *   same order: the embedding (copies, and the adds of a token's rows in row
 *   order), and rotary, relu^2/leaky^2, scale-and-add's y and dx, where the
 *   kernels spell the reference's products and sums unfused (__fmul_rn...).
 * - 1e-6 for RMSNorm and scale-and-add's ds: their sums are in double on
 *   both sides but in different orders, so a rounded float may differ by an
 *   ulp (1.2e-7 relative). Adam does the CPU's double operations one for one,
 *   unfused, and should match bit for bit; it too is held to 1e-6, and its
 *   TAP line prints the error, so a 0 there confirms it.
 * - 1e-5 for SwiGLU: CUDA's expf is within 2 ulp of glibc's, and the
 *   quotient and products that follow add a few ulp more.
 * - softcap cross-entropy, 1e-5 for the losses and 1e-4 for dz: tanhf and
 *   expf differ from glibc's by up to 2 ulp; the exponent l - lse has an
 *   absolute size up to twice the cap (30), so an ulp of l (about 2e-6 there)
 *   becomes a relative error of that size in exp, and 1 - th^2 amplifies
 *   errors in th by up to 1 / (1 - th^2) for the largest logits. dz is held
 *   to that bound beyond an absolute allowance of 4 2^-24 |dloss| / N, the
 *   float resolution of the reference itself where the target's probability
 *   p is near 1 (see gk_check_softcap_ce).
 * - A bf16 output: one rounding (2^-8 relative) beyond its fp32 value's
 *   bound, compared with the CPU's fp32 value itself; where that bound is 0
 *   the fp32 values are equal, so are their roundings, and the bf16 is held
 *   to 0 against the CPU's value rounded.
 *
 * The fused and bf16-input variants (gk_cu_mix_rmsnorm(_bx), the *_bx
 * kernels, gk_cu_softcap_ce_bf16) are checked in their families' checks on
 * shapes of their own, the baseline's among them, each on fresh inputs,
 * against the CPU with the bounds above (a bf16 input rounded on the host
 * first, so the CPU sees what the kernel reads) and against the fp32
 * kernel(s) they replace, run on the same (widened) values: there the bound
 * is 0 in the strict sense, every value's bits equal (a count of values that
 * differ, in the TAP line). These checks reset the arena between their
 * phases; the baseline's shapes take up to 768 MiB of it.
 *
 * After its comparisons, each check of a kernel in the golf baseline's training
 * step times it at the baseline's shapes (micro-batch N 65536 tokens, d_model
 * 512, 8 heads of 64, 4 kv heads, relu^2 hidden 1024) and prints one TAP
 * comment per kernel, "# timing ...": the median of 9 runs after a warm-up,
 * with the bandwidth of the fewest bytes the call must move (each input read
 * once, each output written once). Informational, never asserted. The embed
 * check also times gemm.cu's fp32 <-> bf16 conversions, whose check lives in
 * check_main.cu. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "elementwise.h"
extern "C" {
#include "optim.h" /* gk_adam_step: the reference of the Adam kernel */
}

/* Compare device floats with the host's, free the download, return the error. */
static double err_of(const float *dev, const float *want, size_t n)
{
    float *got = gk_check_down(dev, n);
    double e = gk_check_rel_err(got, want, n);
    free(got);
    return e;
}

/* The error of the device's bf16 values DEV against the host floats WANT,
 * which it rounds to bf16 in place first. */
static double bf16_err(const gk_bf16 *dev, float *want, size_t n)
{
    float *got = gk_check_download(dev, n, GK_OUT_BF16);
    gk_check_round_bf16(want, n);
    double e = gk_check_rel_err(got, want, n);
    free(got);
    return e;
}

/* The error of a kernel's bf16 side output YB against its own fp32 output Y:
 * 0 when yb is round-to-nearest of y everywhere. */
static double bf16_side_err(const gk_bf16 *yb, const float *y, size_t n)
{
    float *gy = gk_check_down(y, n);
    double e = bf16_err(yb, gy, n);
    free(gy);
    return e;
}

/* A copy of n host floats. */
static float *dup_f(const float *h, size_t n)
{
    float *c = (float *)gk_check_xalloc(n * sizeof *c);
    memcpy(c, h, n * sizeof *c);
    return c;
}

/* How many of the N values of SIZE bytes at A and B differ in their bits. */
static size_t bits_differ(const void *a, const void *b, size_t n, size_t size)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += memcmp((const char *)a + i * size, (const char *)b + i * size, size) != 0;
    return k;
}

/* The bound of a bf16 output whose fp32 value is held to BOUND (see the
 * header). */
static double bf16_bound(double bound) { return bound > 0 ? bound + 1.0 / 256 : 0; }

/* A variant's output DEV, N values of TYPE (NULL: not asked for, nothing to
 * compare, 0), against the CPU's fp32 WANT and against TWIN, the same output
 * of the fp32 kernel(s) it replaces, downloaded in TYPE. Adds to *BITS the
 * number of values whose bits differ from TWIN's; returns the relative error
 * against WANT, to be held to BOUND (fp32) or bf16_bound(BOUND) (bf16). */
static double compare(const void *dev, gk_out_type type, const float *want, const float *twin,
                      size_t n, double bound, size_t *bits)
{
    if (!dev)
        return 0;
    float *got = gk_check_download(dev, n, type);
    *bits += bits_differ(got, twin, n, sizeof *got);
    double e;
    if (type == GK_OUT_BF16 && bound == 0) {
        float *w = dup_f(want, n);
        gk_check_round_bf16(w, n);
        e = gk_check_rel_err(got, w, n);
        free(w);
    } else {
        e = gk_check_rel_err(got, want, n);
    }
    free(got);
    return e;
}

/* N tokens in 0..V-1, drawn from the normal generator; about a third are
 * token V/2, so the embedding backward sees a long run of one token (the
 * serial case) besides short ones. */
static int *rand_tokens(int N, int V)
{
    float *r = gk_check_randn((size_t)N, 1.0);
    int *t = (int *)gk_check_xalloc((size_t)N * sizeof *t);
    for (int n = 0; n < N; n++)
        t[n] = fabsf(r[n]) < 0.43f ? V / 2 : (int)(fabsf(r[n]) * 7919.0f) % V;
    free(r);
    return t;
}

/* ---- timing ---------------------------------------------------------------- */

/* The golf baseline's shapes. */
enum {
    TIME_N = 65536,
    TIME_C = 512,
    TIME_H = 8,
    TIME_KV = 4,
    TIME_D = 64,
    TIME_F = 1024,
    TIME_V = 1024
};

/* N uniform values of variance 1 from a hash of the index and SEED: timing
 * inputs without a host round trip, and never the zeros that can run faster
 * than real data. T is float, or gk_bf16 (rounded to nearest). */
template <typename T> static __global__ void time_fill_k(T *p, size_t n, uint32_t seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 0x9E3779B9u ^ seed;
        x ^= x >> 16, x *= 0x7FEB352Du, x ^= x >> 15, x *= 0x846CA68Bu, x ^= x >> 16;
        p[i] = (T)(1.7320508f * (2.f * (float)(x >> 8) / 16777216.f - 1.f));
    }
}

template <typename T = float> static T *time_filled(gk_cu_arena *a, size_t n, uint32_t seed)
{
    T *p = (T *)gk_cu_arena_alloc(a, n * sizeof(T));
    time_fill_k<<<1024, 256>>>(p, n, seed);
    GK_CU(cudaGetLastError());
    return p;
}

/* Time RUN (the median of 9 after a warm-up) and print one "# timing" line
 * naming WHAT, with the bandwidth of BYTES moved. */
template <typename F> static void time_it(const char *what, double bytes, F run)
{
    float ms = gk_check_median_ms(run);
    printf("# timing %s: %.4f ms, %.0f GB/s (median of 9)\n", what, ms, bytes / ms * 1e-6);
}

/* ---- embedding ------------------------------------------------------------- */

/* gemm.cu's conversions on an activation of the baseline, [N, 512]. */
static void time_convert(gk_cu_arena *arena)
{
    size_t n = (size_t)TIME_N * TIME_C;
    float *f = time_filled(arena, n, 1);
    gk_bf16 *b = (gk_bf16 *)gk_cu_arena_alloc(arena, n * sizeof(gk_bf16));
    time_it("gk_f32_to_bf16 n 65536*512", 6.0 * n, [&] { gk_f32_to_bf16(b, f, n, 0); });
    time_it("gk_bf16_to_f32 n 65536*512", 6.0 * n, [&] { gk_bf16_to_f32(f, b, n, 0); });
}

void gk_check_embed(gk_cu_arena *arena)
{
    static const struct {
        int N, C, V;
    } shapes[] = {{1, 8, 5}, {37, 100, 13}, {1000, 512, 1024}, {4099, 257, 50}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, C = shapes[s].C, V = shapes[s].V;
        size_t ny = (size_t)N * C, nw = (size_t)V * C;
        float *wte = gk_check_randn(nw, 1.0), *dy = gk_check_randn(ny, 1.0);
        float *dwte = gk_check_randn(nw, 1.0), *y = (float *)gk_check_xalloc(ny * sizeof *y);
        int *tok = rand_tokens(N, V);
        int *dtok = (int *)gk_check_up_bytes(arena, tok, (size_t)N * sizeof *tok);

        float *d_wte = gk_check_up(arena, wte, nw), *d_y = (float *)gk_check_poisoned(arena, ny * 4);
        gk_embed_fwd_f32(y, wte, tok, N, C);
        GK_CU(gk_cu_embed_fwd(d_y, d_wte, dtok, N, C, 0));
        double e = err_of(d_y, y, ny);
        GK_OK(e == 0, "embed fwd, N %d C %d vocab %d: max rel err %.3g (bound 0)", N, C, V, e);

        float *d_dwte = gk_check_up(arena, dwte, nw), *d_dy = gk_check_up(arena, dy, ny);
        void *work = gk_cu_arena_alloc(arena, gk_cu_embed_bwd_workspace(N, V));
        gk_embed_bwd_f32(dwte, dy, tok, N, C);
        GK_CU(gk_cu_embed_bwd(d_dwte, d_dy, dtok, N, C, V, work, 0));
        e = err_of(d_dwte, dwte, nw);
        GK_OK(e == 0, "embed bwd (+=), N %d C %d vocab %d: max rel err %.3g (bound 0)", N, C, V,
              e);
        free(wte), free(dy), free(dwte), free(y), free(tok);
    }
    time_convert(arena);
}

/* ---- rmsnorm --------------------------------------------------------------- */

/* The block norms on [N, 512] and the per-head QK norm on [N H, 64]; the
 * backward's dy is x's buffer (the values do not matter, only that they are
 * finite and not zero). */
static void time_rmsnorm(gk_cu_arena *arena)
{
    static const struct {
        int N, C;
        const char *fwd, *bwd;
    } shapes[] = {{TIME_N, TIME_C, "rmsnorm fwd [65536,512]", "rmsnorm bwd [65536,512]"},
                  {TIME_N * TIME_H, TIME_D, "rmsnorm fwd [65536*8,64]",
                   "rmsnorm bwd [65536*8,64]"}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, C = shapes[s].C;
        size_t n = (size_t)N * C;
        float *x = time_filled(arena, n, 2), *y = time_filled(arena, n, 3);
        float *dx = time_filled(arena, n, 4), *r = time_filled(arena, (size_t)N, 5);
        time_it(shapes[s].fwd, 8.0 * n + 4.0 * N,
                [&] { GK_CU(gk_cu_rmsnorm_fwd(y, NULL, r, x, N, C, GK_RMSNORM_EPS, 0)); });
        time_it(shapes[s].bwd, 16.0 * n + 4.0 * N,
                [&] { GK_CU(gk_cu_rmsnorm_bwd(dx, NULL, x, y, r, N, C, 0)); });
        gk_cu_arena_reset(arena);
    }
    /* The residual update and the block norm after it, fused: resid_mix's
     * form (x1 and x2 read; xo, y, yb written), then the residual add of a
     * bf16 branch in place (x1 read and written, x2 read in bf16; y, yb
     * written). */
    const int N = TIME_N, C = TIME_C;
    size_t n = (size_t)N * C;
    float *x1 = time_filled(arena, n, 18), *x2 = time_filled(arena, n, 19);
    float *xo = time_filled(arena, n, 20), *y = time_filled(arena, n, 21);
    float *mix = time_filled(arena, 2 * (size_t)C, 22), *r = time_filled(arena, (size_t)N, 23);
    gk_bf16 *yb = time_filled<gk_bf16>(arena, n, 24), *x2b = time_filled<gk_bf16>(arena, n, 25);
    time_it("mix_rmsnorm (resid_mix form) [65536,512]", 18.0 * n + 4.0 * N, [&] {
        GK_CU(gk_cu_mix_rmsnorm(xo, y, yb, r, x1, mix, x2, mix + C, N, C, GK_RMSNORM_EPS, 0));
    });
    time_it("mix_rmsnorm_bx (x += s x2 in place) [65536,512]", 16.0 * n + 4.0 * N, [&] {
        GK_CU(gk_cu_mix_rmsnorm_bx(x1, y, yb, r, x1, NULL, x2b, mix + C, N, C, GK_RMSNORM_EPS,
                                   0));
    });
}

/* gk_cu_mix_rmsnorm(_bx) on [N, C] in four forms, each against the CPU (the
 * residual formed by gk_scale_add_fwd_f32, into zeros when s1 is given, as
 * model_impl.h forms resid_mix, then gk_rmsnorm_fwd_f32) and against the
 * fp32 kernels it fuses, gk_cu_resid_mix (s1 given) or gk_cu_scale_add_fwd
 * group 1 (s1 NULL), then gk_cu_rmsnorm_fwd on their xo, bit for bit. The
 * forms cover x2 in fp32 and in bf16 (rounded on the host: the CPU and the
 * fp32 kernels see what the bf16 holds), s1 given and NULL, xo in place of x1
 * and apart, and y, yb and rstd each left NULL by one form. */
static void check_mix_rmsnorm(gk_cu_arena *arena, int N, int C)
{
    static const struct {
        int bx, s1, in_place, y, yb, rstd;
    } forms[] = {{0, 1, 1, 1, 1, 1}, {1, 0, 0, 0, 1, 0}, {1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 0, 1}};
    const double bound = 1e-6, eps = GK_RMSNORM_EPS;
    size_t n = (size_t)N * C;
    float *x1 = gk_check_randn(n, 3.0), *x2 = gk_check_randn(n, 1.0);
    float *mix = gk_check_randn(2 * (size_t)C, 1.0); /* s1 then s2: resid_mix's [2, C] */
    float *x2b = dup_f(x2, n);
    gk_check_round_bf16(x2b, n);
    float *xo = (float *)gk_check_xalloc(n * 4), *y = (float *)gk_check_xalloc(n * 4);
    float *rstd = (float *)gk_check_xalloc((size_t)N * 4);
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        const float *x2v = forms[f].bx ? x2b : x2;
        memset(xo, 0, n * 4);
        if (forms[f].s1)
            gk_scale_add_fwd_f32(xo, x1, mix, N, C, 1);
        else
            memcpy(xo, x1, n * 4);
        gk_scale_add_fwd_f32(xo, x2v, mix + C, N, C, 1);
        gk_rmsnorm_fwd_f32(y, rstd, xo, N, C, eps);

        /* The fp32 kernels, every output asked for. */
        gk_cu_arena_reset(arena);
        float *d_x1 = gk_check_up(arena, x1, n), *d_x2 = gk_check_up(arena, x2v, n);
        float *d_mix = gk_check_up(arena, mix, 2 * (size_t)C), *d_xo = d_x1;
        if (forms[f].s1) {
            d_xo = (float *)gk_check_poisoned(arena, n * 4);
            GK_CU(gk_cu_resid_mix(d_xo, d_x1, d_x2, d_mix, N, C, 0));
        } else {
            GK_CU(gk_cu_scale_add_fwd(d_x1, d_x2, d_mix + C, N, C, 1, 0));
        }
        float *d_y = (float *)gk_check_poisoned(arena, n * 4);
        float *d_r = (float *)gk_check_poisoned(arena, (size_t)N * 4);
        gk_bf16 *d_yb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
        GK_CU(gk_cu_rmsnorm_fwd(d_y, d_yb, d_r, d_xo, N, C, eps, 0));
        float *t_xo = gk_check_down(d_xo, n), *t_y = gk_check_down(d_y, n);
        float *t_yb = gk_check_download(d_yb, n, GK_OUT_BF16);
        float *t_r = gk_check_down(d_r, (size_t)N);

        /* The fused kernel, the form's outputs poisoned, the others NULL. */
        gk_cu_arena_reset(arena);
        d_x1 = gk_check_up(arena, x1, n), d_mix = gk_check_up(arena, mix, 2 * (size_t)C);
        d_xo = forms[f].in_place ? d_x1 : (float *)gk_check_poisoned(arena, n * 4);
        d_y = forms[f].y ? (float *)gk_check_poisoned(arena, n * 4) : NULL;
        d_yb = forms[f].yb ? (gk_bf16 *)gk_check_poisoned(arena, n * 2) : NULL;
        d_r = forms[f].rstd ? (float *)gk_check_poisoned(arena, (size_t)N * 4) : NULL;
        const float *d_s1 = forms[f].s1 ? d_mix : NULL;
        if (forms[f].bx)
            GK_CU(gk_cu_mix_rmsnorm_bx(
                d_xo, d_y, d_yb, d_r, d_x1, d_s1,
                (const gk_bf16 *)gk_check_upload(arena, x2b, n, GK_OUT_BF16), d_mix + C, N, C,
                eps, 0));
        else
            GK_CU(gk_cu_mix_rmsnorm(d_xo, d_y, d_yb, d_r, d_x1, d_s1, gk_check_up(arena, x2, n),
                                    d_mix + C, N, C, eps, 0));
        size_t bits = 0;
        double exo = compare(d_xo, GK_OUT_F32, xo, t_xo, n, 0, &bits);
        double ey = compare(d_y, GK_OUT_F32, y, t_y, n, bound, &bits);
        double eb = compare(d_yb, GK_OUT_BF16, y, t_yb, n, bound, &bits);
        double er = compare(d_r, GK_OUT_F32, rstd, t_r, (size_t)N, bound, &bits);
        GK_OK(exo == 0 && ey <= bound && er <= bound && eb <= bf16_bound(bound) && bits == 0,
              "mix_rmsnorm%s, N %d C %d, s1 %s, xo %s,%s%s%s: max rel err against the CPU xo "
              "%.3g (bound 0) y %.3g rstd %.3g (bound %g) yb %.3g (bound %g); %zu values differ "
              "from gk_cu_%s then gk_cu_rmsnorm_fwd (bound 0: bit-identical)",
              forms[f].bx ? "_bx" : "", N, C, forms[f].s1 ? "given" : "NULL",
              forms[f].in_place ? "in place of x1" : "apart", forms[f].y ? " y" : "",
              forms[f].yb ? " yb" : "", forms[f].rstd ? " rstd" : "", exo, ey, er, bound, eb,
              bf16_bound(bound), bits, forms[f].s1 ? "resid_mix" : "scale_add_fwd");
        free(t_xo), free(t_y), free(t_yb), free(t_r);
    }
    free(x1), free(x2), free(mix), free(x2b), free(xo), free(y), free(rstd);
}

void gk_check_rmsnorm(gk_cu_arena *arena)
{
    static const struct {
        int N, C;
    } shapes[] = {{1, 8}, {7, 100}, {300, 512}, {33, 1000}, {64, 2049}};
    const double bound = 1e-6;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, C = shapes[s].C;
        size_t n = (size_t)N * C;
        float *x = gk_check_randn(n, 3.0), *dy = gk_check_randn(n, 1.0);
        float *dx = gk_check_randn(n, 1.0), *y = (float *)gk_check_xalloc(n * 4);
        float *rstd = (float *)gk_check_xalloc((size_t)N * 4);
        gk_rmsnorm_fwd_f32(y, rstd, x, N, C, GK_RMSNORM_EPS);

        float *d_x = gk_check_up(arena, x, n), *d_y = (float *)gk_check_poisoned(arena, n * 4);
        float *d_r = (float *)gk_check_poisoned(arena, (size_t)N * 4);
        gk_bf16 *d_yb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
        GK_CU(gk_cu_rmsnorm_fwd(d_y, d_yb, d_r, d_x, N, C, GK_RMSNORM_EPS, 0));
        double ey = err_of(d_y, y, n), er = err_of(d_r, rstd, (size_t)N);
        double eb = bf16_side_err(d_yb, d_y, n);
        GK_OK(ey <= bound && er <= bound && eb == 0,
              "rmsnorm fwd, N %d C %d: max rel err y %.3g rstd %.3g (bound %g), bf16 y against "
              "its fp32 %.3g (bound 0)", N, C, ey, er, bound, eb);
        /* In place (y = x), without rstd. */
        GK_CU(gk_cu_rmsnorm_fwd(d_x, NULL, NULL, d_x, N, C, GK_RMSNORM_EPS, 0));
        ey = err_of(d_x, y, n);
        GK_OK(ey <= bound, "rmsnorm fwd in place, N %d C %d: max rel err %.3g (bound %g)", N, C,
              ey, bound);

        /* The backward from the CPU's y and rstd, so both sides see the same. */
        float *d_dx = gk_check_up(arena, dx, n), *d_dy = gk_check_up(arena, dy, n);
        float *d_yc = gk_check_up(arena, y, n), *d_rc = gk_check_up(arena, rstd, (size_t)N);
        gk_rmsnorm_bwd_f32(dx, dy, y, rstd, N, C);
        GK_CU(gk_cu_rmsnorm_bwd(d_dx, NULL, d_dy, d_yc, d_rc, N, C, 0));
        double e = err_of(d_dx, dx, n);
        GK_OK(e <= bound, "rmsnorm bwd (+=), N %d C %d: max rel err %.3g (bound %g)", N, C, e,
              bound);
        /* Written as bf16: the CPU's gradient into zeros, rounded; one bf16
         * rounding (2^-8 relative) on top of the bound. */
        float *dxz = (float *)gk_check_xalloc(n * 4);
        gk_bf16 *d_dxb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
        gk_rmsnorm_bwd_f32(dxz, dy, y, rstd, N, C);
        GK_CU(gk_cu_rmsnorm_bwd(NULL, d_dxb, d_dy, d_yc, d_rc, N, C, 0));
        e = bf16_err(d_dxb, dxz, n);
        GK_OK(e <= bound + 1.0 / 256, "rmsnorm bwd written as bf16, N %d C %d: max rel err %.3g "
              "(bound %g)", N, C, e, bound + 1.0 / 256);
        free(dxz);
        free(x), free(dy), free(dx), free(y), free(rstd);
    }
    /* The fused residual update: the widths above, 37 (scalar, two slots a
     * lane), 2048 (the fallback that reads the row twice, as 2049 on the
     * scalar path) and the baseline's. */
    static const struct {
        int N, C;
    } mix_shapes[] = {{1, 8}, {5, 37}, {7, 100}, {300, 512}, {33, 1000}, {64, 2049}, {9, 2048},
                      {TIME_N, TIME_C}};
    for (size_t s = 0; s < sizeof mix_shapes / sizeof mix_shapes[0]; s++)
        check_mix_rmsnorm(arena, mix_shapes[s].N, mix_shapes[s].C);
    gk_cu_arena_reset(arena);
    time_rmsnorm(arena);
}

/* ---- rotary ---------------------------------------------------------------- */

/* The query's rotary, B 64 T 1024 H 8 D 64, rotating the whole head. */
static void time_rope(gk_cu_arena *arena)
{
    const int B = TIME_N / 1024, T = 1024, H = TIME_H, D = TIME_D;
    size_t n = (size_t)B * T * H * D, nt = (size_t)T * (D / 2);
    float *cs = time_filled(arena, nt, 6), *sn = time_filled(arena, nt, 7);
    float *x = time_filled(arena, n, 8), *y = time_filled(arena, n, 9);
    time_it("rope fwd [65536*8,64]", 8.0 * n,
            [&] { GK_CU(gk_cu_rope_fwd(y, x, cs, sn, B, T, H, D, D, 0)); });
    time_it("rope bwd [65536*8,64]", 12.0 * n,
            [&] { GK_CU(gk_cu_rope_bwd(y, x, cs, sn, B, T, H, D, D, 0, 0)); });
}

void gk_check_rope(gk_cu_arena *arena)
{
    static const struct {
        int B, T, H, D, r;
    } shapes[] = {{1, 1, 1, 8, 8}, {2, 5, 3, 16, 8}, {2, 37, 4, 64, 64}, {1, 100, 6, 66, 32},
                  {3, 129, 2, 128, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s].B, T = shapes[s].T, H = shapes[s].H, D = shapes[s].D,
            r = shapes[s].r;
        size_t n = (size_t)B * T * H * D, nt = (size_t)T * (r / 2);
        float *cs = (float *)gk_check_xalloc(nt * 4), *sn = (float *)gk_check_xalloc(nt * 4);
        gk_rope_table_f32(cs, sn, T, r, 10000.0);
        float *x = gk_check_randn(n, 1.0), *dy = gk_check_randn(n, 1.0);
        float *dx = gk_check_randn(n, 1.0), *y = (float *)gk_check_xalloc(n * 4);
        gk_rope_fwd_f32(y, x, cs, sn, B, T, H, D, r);

        float *d_cs = gk_check_up(arena, cs, nt), *d_sn = gk_check_up(arena, sn, nt), *d_x = gk_check_up(arena, x, n);
        float *d_y = (float *)gk_check_poisoned(arena, n * 4);
        GK_CU(gk_cu_rope_fwd(d_y, d_x, d_cs, d_sn, B, T, H, D, r, 0));
        double e = err_of(d_y, y, n);
        GK_OK(e == 0, "rope fwd, B %d T %d H %d D %d rope_dims %d: max rel err %.3g (bound 0)",
              B, T, H, D, r, e);
        GK_CU(gk_cu_rope_fwd(d_x, d_x, d_cs, d_sn, B, T, H, D, r, 0));
        e = err_of(d_x, y, n);
        GK_OK(e == 0, "rope fwd in place, B %d T %d H %d D %d rope_dims %d: max rel err %.3g "
                      "(bound 0)", B, T, H, D, r, e);

        float *d_dx = gk_check_up(arena, dx, n), *d_dy = gk_check_up(arena, dy, n);
        gk_rope_bwd_f32(dx, dy, cs, sn, B, T, H, D, r);
        GK_CU(gk_cu_rope_bwd(d_dx, d_dy, d_cs, d_sn, B, T, H, D, r, 0, 0));
        e = err_of(d_dx, dx, n);
        GK_OK(e == 0, "rope bwd (+=), B %d T %d H %d D %d rope_dims %d: max rel err %.3g "
                      "(bound 0)", B, T, H, D, r, e);
        /* Written: the CPU's gradient into zeros, from a poisoned start. */
        float *dxz = (float *)gk_check_xalloc(n * 4);
        float *d_dxs = (float *)gk_check_poisoned(arena, n * 4);
        gk_rope_bwd_f32(dxz, dy, cs, sn, B, T, H, D, r);
        GK_CU(gk_cu_rope_bwd(d_dxs, d_dy, d_cs, d_sn, B, T, H, D, r, 1, 0));
        e = err_of(d_dxs, dxz, n);
        GK_OK(e == 0, "rope bwd written, B %d T %d H %d D %d rope_dims %d: max rel err %.3g "
                      "(bound 0)", B, T, H, D, r, e);
        free(dxz);
        free(cs), free(sn), free(x), free(dy), free(dx), free(y);
    }
    time_rope(arena);
}

/* ---- activations ----------------------------------------------------------- */

/* relu^2 on [N/2, 1024]: the backward's three [N, 1024] arrays would not fit
 * the check arena at the whole micro-batch. */
static void time_act(gk_cu_arena *arena)
{
    const int N = TIME_N / 2, F = TIME_F;
    size_t n = (size_t)N * F;
    float *x = time_filled(arena, n, 10), *y = time_filled(arena, n, 11);
    float *dx = time_filled(arena, n, 12);
    time_it("relu2 fwd [32768,1024]", 8.0 * n,
            [&] { GK_CU(gk_cu_act_fwd(y, NULL, x, N, F, GK_OP_RELU2, 0)); });
    time_it("relu2 bwd [32768,1024]", 16.0 * n,
            [&] { GK_CU(gk_cu_act_bwd(dx, NULL, y, x, N, F, GK_OP_RELU2, 0)); });
    /* The bf16-input forms, as the training step runs them, at the whole
     * micro-batch: x in bf16, y and d(x) out in bf16. */
    gk_cu_arena_reset(arena);
    size_t nb = (size_t)TIME_N * F;
    gk_bf16 *xb = time_filled<gk_bf16>(arena, nb, 26), *yb = time_filled<gk_bf16>(arena, nb, 27);
    gk_bf16 *dxb = time_filled<gk_bf16>(arena, nb, 28);
    float *dy = time_filled(arena, nb, 29);
    time_it("relu2 fwd bx [65536,1024]", 4.0 * nb,
            [&] { GK_CU(gk_cu_act_fwd_bx(yb, xb, TIME_N, F, GK_OP_RELU2, 0)); });
    time_it("relu2 bwd bx [65536,1024]", 8.0 * nb,
            [&] { GK_CU(gk_cu_act_bwd_bx(dxb, dy, xb, TIME_N, F, GK_OP_RELU2, 0)); });
}

/* gk_cu_act_fwd_bx and gk_cu_act_bwd_bx on [N, F] against the CPU (x rounded
 * to bf16 first: what the kernels read; the gradient into zeros: written)
 * and against gk_cu_act_fwd(NULL, yb, ...) and gk_cu_act_bwd(NULL, dxb, ...)
 * on the widened x, bit for bit; then gk_cu_act_bwd_bb (dy rounded to bf16
 * too) likewise against gk_cu_act_bwd_bx on the widened dy. */
static void check_act_bx(gk_cu_arena *arena, gk_act act, const char *name, double bound, int N,
                         int F)
{
    size_t ny = (size_t)N * F, nx = act == GK_OP_SWIGLU ? 2 * ny : ny;
    float *x = gk_check_randn(nx, 2.0), *dy = gk_check_randn(ny, 1.0);
    gk_check_round_bf16(x, nx);
    float *y = (float *)gk_check_xalloc(ny * 4), *dx = (float *)gk_check_xalloc(nx * 4);
    gk_act_fwd_f32(y, x, N, F, act);
    gk_act_bwd_f32(dx, dy, x, N, F, act);

    gk_cu_arena_reset(arena);
    float *d_x = gk_check_up(arena, x, nx), *d_dy = gk_check_up(arena, dy, ny);
    gk_bf16 *d_yb = (gk_bf16 *)gk_check_poisoned(arena, ny * 2);
    gk_bf16 *d_dxb = (gk_bf16 *)gk_check_poisoned(arena, nx * 2);
    GK_CU(gk_cu_act_fwd(NULL, d_yb, d_x, N, F, act, 0));
    GK_CU(gk_cu_act_bwd(NULL, d_dxb, d_dy, d_x, N, F, act, 0));
    float *t_yb = gk_check_download(d_yb, ny, GK_OUT_BF16);
    float *t_dxb = gk_check_download(d_dxb, nx, GK_OUT_BF16);

    gk_cu_arena_reset(arena);
    gk_bf16 *d_xb = (gk_bf16 *)gk_check_upload(arena, x, nx, GK_OUT_BF16);
    d_dy = gk_check_up(arena, dy, ny);
    d_yb = (gk_bf16 *)gk_check_poisoned(arena, ny * 2);
    d_dxb = (gk_bf16 *)gk_check_poisoned(arena, nx * 2);
    GK_CU(gk_cu_act_fwd_bx(d_yb, d_xb, N, F, act, 0));
    GK_CU(gk_cu_act_bwd_bx(d_dxb, d_dy, d_xb, N, F, act, 0));
    size_t bf = 0, bb = 0;
    double ef = compare(d_yb, GK_OUT_BF16, y, t_yb, ny, bound, &bf);
    double eb = compare(d_dxb, GK_OUT_BF16, dx, t_dxb, nx, bound, &bb);
    GK_OK(ef <= bf16_bound(bound) && bf == 0,
          "%s fwd bx, N %d F %d: bf16 y max rel err against the CPU %.3g (bound %g); %zu of %zu "
          "differ from gk_cu_act_fwd's on the widened x (bound 0: bit-identical)", name, N, F,
          ef, bf16_bound(bound), bf, ny);
    GK_OK(eb <= bf16_bound(bound) && bb == 0,
          "%s bwd bx, N %d F %d: bf16 dx max rel err against the CPU %.3g (bound %g); %zu of %zu "
          "differ from gk_cu_act_bwd's on the widened x (bound 0: bit-identical)", name, N, F,
          eb, bf16_bound(bound), bb, nx);

    /* The _bb form: dy rounded to bf16 as well, against the CPU on the
     * rounded dy and against gk_cu_act_bwd_bx on its widening. */
    gk_check_round_bf16(dy, ny);
    memset(dx, 0, nx * 4);
    gk_act_bwd_f32(dx, dy, x, N, F, act);
    d_dy = gk_check_up(arena, dy, ny);
    gk_bf16 *d_dyb = (gk_bf16 *)gk_check_upload(arena, dy, ny, GK_OUT_BF16);
    GK_CU(gk_cu_act_bwd_bx(d_dxb, d_dy, d_xb, N, F, act, 0));
    free(t_dxb);
    t_dxb = gk_check_download(d_dxb, nx, GK_OUT_BF16);
    d_dxb = (gk_bf16 *)gk_check_poisoned(arena, nx * 2);
    GK_CU(gk_cu_act_bwd_bb(d_dxb, d_dyb, d_xb, N, F, act, 0));
    bb = 0;
    eb = compare(d_dxb, GK_OUT_BF16, dx, t_dxb, nx, bound, &bb);
    GK_OK(eb <= bf16_bound(bound) && bb == 0,
          "%s bwd bb (dy in bf16 too), N %d F %d: bf16 dx max rel err against the CPU %.3g "
          "(bound %g); %zu of %zu differ from gk_cu_act_bwd_bx's on the widened dy (bound 0)",
          name, N, F, eb, bf16_bound(bound), bb, nx);
    free(t_yb), free(t_dxb);
    free(x), free(dy), free(y), free(dx);
}

void gk_check_act(gk_cu_arena *arena)
{
    static const struct {
        int N, F;
    } shapes[] = {{1, 1}, {7, 100}, {300, 1536}, {33, 257}};
    static const struct {
        gk_act act;
        const char *name;
        double bound;
    } acts[] = {{GK_OP_RELU2, "relu2", 0}, {GK_OP_LEAKY2, "leaky2", 0},
                {GK_OP_SWIGLU, "swiglu", 1e-5}};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            gk_act act = acts[a].act;
            int N = shapes[s].N, F = shapes[s].F;
            size_t ny = (size_t)N * F, nx = act == GK_OP_SWIGLU ? 2 * ny : ny;
            float *x = gk_check_randn(nx, 2.0), *dy = gk_check_randn(ny, 1.0);
            float *dx = gk_check_randn(nx, 1.0), *y = (float *)gk_check_xalloc(ny * 4);
            gk_act_fwd_f32(y, x, N, F, act);
            float *d_x = gk_check_up(arena, x, nx);
            float *d_y = (float *)gk_check_poisoned(arena, ny * 4);
            gk_bf16 *d_yb = (gk_bf16 *)gk_check_poisoned(arena, ny * 2);
            GK_CU(gk_cu_act_fwd(d_y, d_yb, d_x, N, F, act, 0));
            double e = err_of(d_y, y, ny), bound = acts[a].bound;
            double eb = bf16_side_err(d_yb, d_y, ny);
            GK_OK(e <= bound && eb == 0,
                  "%s fwd, N %d F %d: max rel err %.3g (bound %g), bf16 y against its fp32 %.3g "
                  "(bound 0)", acts[a].name, N, F, e, bound, eb);

            float *d_dx = gk_check_up(arena, dx, nx), *d_dy = gk_check_up(arena, dy, ny);
            gk_act_bwd_f32(dx, dy, x, N, F, act);
            GK_CU(gk_cu_act_bwd(d_dx, NULL, d_dy, d_x, N, F, act, 0));
            e = err_of(d_dx, dx, nx);
            GK_OK(e <= bound, "%s bwd (+=), N %d F %d: max rel err %.3g (bound %g)",
                  acts[a].name, N, F, e, bound);

            /* Written as bf16: the CPU's gradient added into zeros, rounded. */
            float *dxz = (float *)gk_check_xalloc(nx * 4);
            gk_bf16 *d_dxb = (gk_bf16 *)gk_check_poisoned(arena, nx * 2);
            gk_act_bwd_f32(dxz, dy, x, N, F, act);
            GK_CU(gk_cu_act_bwd(NULL, d_dxb, d_dy, d_x, N, F, act, 0));
            e = bf16_err(d_dxb, dxz, nx);
            double bound_b = bound + 1.0 / 256; /* one bf16 rounding on top */
            GK_OK(e <= bound_b, "%s bwd written as bf16, N %d F %d: max rel err %.3g (bound %g)",
                  acts[a].name, N, F, e, bound_b);
            free(dxz);
            free(x), free(dy), free(dx), free(y);
        }
    /* The bf16-input forms on the same shapes (1 and 257 on the scalar path),
     * then relu^2 at the baseline's. */
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_act_bx(arena, acts[a].act, acts[a].name, acts[a].bound, shapes[s].N,
                         shapes[s].F);
    check_act_bx(arena, GK_OP_RELU2, "relu2", 0, TIME_N, TIME_F);
    gk_cu_arena_reset(arena);
    time_act(arena);
}

/* ---- softcapped cross-entropy ---------------------------------------------- */

/* gk_check_rel_err for doubles: |got - want| / (|want| + rms(want)). */
static double rel_err_d(const double *got, const double *want, size_t n)
{
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        ss += want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (fabs(want[i]) + rms);
        if (!(e <= worst))
            worst = isfinite(e) ? e : INFINITY;
    }
    return worst;
}

/* gk_check_rel_err beyond an absolute allowance: the max over i of
 * max(|got - want| - allow, 0) / (|want| + rms(want)), infinite where got is
 * not finite. */
static double rel_err_beyond(const float *got, const float *want, size_t n, double allow)
{
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) - allow;
        double e = d <= 0 ? 0 : d / (fabs((double)want[i]) + rms);
        if (!(e <= worst)) /* NaN too */
            worst = isfinite(e) ? e : INFINITY;
    }
    return worst;
}

/* The gradient's absolute allowance. Both sides compute the target's
 * g = p - 1 as expf(l - lse) - 1 in float, lse rounded to float first. When
 * the target takes nearly all the probability, the subtraction is exact and
 * cancels, and what is left of expf's rounding, an absolute error of up to
 * half an ulp of p (2^-25 below 1) in glibc and 2 ulp (2^-23) in CUDA's expf,
 * is all of g's error: the reference is ill-conditioned there, not the
 * kernel wrong. (GK_CHECK_SEED=9354842724836088685, all checks: the row of 5
 * logits has p = 1 - 5.8e-6, the CPU's dz at the target -8.234e-6 against
 * -8.401e-6 computed in long double, 2% off; the kernel's expf one ulp from
 * glibc's made it 6.3e-3 relative.) So dz may differ by 2.5 ulp of 1 in g,
 * times dloss / N and 1 - th^2 <= 1, whatever its size; 4 ulp is allowed.
 * Not covered: lse within a last-bit rounding tie of a float, where the two
 * sides' different summation orders round it apart (an ulp of lse, 1e-6). */
static double softcap_dz_allowance(double dloss, int N)
{
    return 4 * 0x1p-24 * fabs(dloss) / N;
}

/* gk_cu_softcap_ce_bf16 on [N, V] against the CPU and against
 * gk_cu_softcap_ce run in place on the same logits (as the training step
 * runs it): its dz rounded on the host (bit for bit the device's rounding),
 * its losses and mean, bit for bit; and z is left as it was. */
static void check_softcap_ce_bf16(gk_cu_arena *arena, int N, int V)
{
    const double cap = 30, dloss = 1.7, bound_loss = 1e-5, bound_dz = 1e-4;
    size_t n = (size_t)N * V;
    float *z = gk_check_randn(n, 10.0), *dz = (float *)gk_check_xalloc(n * 4);
    double *loss = (double *)gk_check_xalloc((size_t)N * 8);
    double *t_loss = (double *)gk_check_xalloc((size_t)N * 8);
    double *g_loss = (double *)gk_check_xalloc((size_t)N * 8), t_mean, g_mean;
    int *tgt = rand_tokens(N, V);
    double mean = gk_softcap_ce_f32(dz, loss, z, tgt, N, V, cap, dloss);

    gk_cu_arena_reset(arena);
    int *d_t = (int *)gk_check_up_bytes(arena, tgt, (size_t)N * sizeof *tgt);
    float *d_z = gk_check_up(arena, z, n);
    double *d_loss = (double *)gk_check_poisoned(arena, (size_t)N * 8);
    double *d_mean = (double *)gk_check_poisoned(arena, 8);
    GK_CU(gk_cu_softcap_ce(d_z, d_loss, d_mean, d_z, d_t, N, V, cap, dloss, 0));
    float *t_dz = gk_check_down(d_z, n);
    gk_check_round_bf16(t_dz, n);
    GK_CU(cudaMemcpy(t_loss, d_loss, (size_t)N * 8, cudaMemcpyDeviceToHost));
    GK_CU(cudaMemcpy(&t_mean, d_mean, 8, cudaMemcpyDeviceToHost));

    gk_cu_arena_reset(arena);
    d_t = (int *)gk_check_up_bytes(arena, tgt, (size_t)N * sizeof *tgt);
    d_z = gk_check_up(arena, z, n);
    gk_bf16 *d_dzb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
    d_loss = (double *)gk_check_poisoned(arena, (size_t)N * 8);
    d_mean = (double *)gk_check_poisoned(arena, 8);
    GK_CU(gk_cu_softcap_ce_bf16(d_dzb, d_loss, d_mean, d_z, d_t, N, V, cap, dloss, 0));
    float *g_dz = gk_check_download(d_dzb, n, GK_OUT_BF16), *g_z = gk_check_down(d_z, n);
    GK_CU(cudaMemcpy(g_loss, d_loss, (size_t)N * 8, cudaMemcpyDeviceToHost));
    GK_CU(cudaMemcpy(&g_mean, d_mean, 8, cudaMemcpyDeviceToHost));

    double allow = softcap_dz_allowance(dloss, N), b = bf16_bound(bound_dz);
    double e = rel_err_beyond(g_dz, dz, n, allow);
    double el = rel_err_d(g_loss, loss, (size_t)N), em = rel_err_d(&g_mean, &mean, 1);
    GK_OK(e <= b && el <= bound_loss && em <= bound_loss,
          "softcap ce bf16, N %d V %d: max rel err against the CPU, bf16 dz %.3g beyond %.3g "
          "absolute (bound %g), row losses %.3g mean %.3g (bound %g)", N, V, e, allow, b, el,
          em, bound_loss);
    size_t bd = bits_differ(g_dz, t_dz, n, sizeof *g_dz);
    size_t bl = bits_differ(g_loss, t_loss, (size_t)N, sizeof *g_loss);
    size_t bm = bits_differ(&g_mean, &t_mean, 1, sizeof g_mean);
    size_t bz = bits_differ(g_z, z, n, sizeof *z);
    GK_OK(bd == 0 && bl == 0 && bm == 0 && bz == 0,
          "softcap ce bf16, N %d V %d: %zu of %zu dz differ from gk_cu_softcap_ce's rounded, "
          "%zu of %d losses and %zu mean from its (bound 0: bit-identical); %zu of z changed "
          "(bound 0)", N, V, bd, n, bl, N, bm, bz);
    free(t_dz), free(g_dz), free(g_z);
    free(z), free(dz), free(loss), free(t_loss), free(g_loss), free(tgt);
}

/* The head at the baseline: logits [65536, 1024], the bf16 gradient form
 * (z read, dzb written), then the fp32 one in place (z read, dz written
 * over it), as the training step ran it before. */
static void time_softcap_ce(gk_cu_arena *arena)
{
    const int N = TIME_N, V = TIME_V;
    const double cap = 30;
    size_t n = (size_t)N * V;
    int *tgt = rand_tokens(N, V);
    int *d_t = (int *)gk_check_up_bytes(arena, tgt, (size_t)N * sizeof *tgt);
    float *z = time_filled(arena, n, 30);
    gk_bf16 *dzb = time_filled<gk_bf16>(arena, n, 31);
    double *loss = (double *)gk_cu_arena_alloc(arena, (size_t)N * 8);
    double *mean = (double *)gk_cu_arena_alloc(arena, 8);
    time_it("softcap_ce_bf16 [65536,1024]", 6.0 * n + 12.0 * N, [&] {
        GK_CU(gk_cu_softcap_ce_bf16(dzb, loss, mean, z, d_t, N, V, cap, 1.0, 0));
    });
    time_it("softcap_ce in place [65536,1024]", 8.0 * n + 12.0 * N,
            [&] { GK_CU(gk_cu_softcap_ce(z, loss, mean, z, d_t, N, V, cap, 1.0, 0)); });
    free(tgt);
}

void gk_check_softcap_ce(gk_cu_arena *arena)
{
    static const struct {
        int N, V;
    } shapes[] = {{1, 5}, {7, 1024}, {300, 1000}, {64, 50257}};
    const double cap = 30, dloss = 1.7, bound_loss = 1e-5, bound_dz = 1e-4;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, V = shapes[s].V;
        size_t n = (size_t)N * V;
        /* Logits of scale 10: tanh's curve matters, some reach past the cap. */
        float *z = gk_check_randn(n, 10.0), *dz = (float *)gk_check_xalloc(n * 4);
        double *loss = (double *)gk_check_xalloc((size_t)N * 8), *got = (double *)gk_check_xalloc((size_t)N * 8);
        int *tgt = rand_tokens(N, V);
        double mean = gk_softcap_ce_f32(dz, loss, z, tgt, N, V, cap, dloss);

        int *d_t = (int *)gk_check_up_bytes(arena, tgt, (size_t)N * sizeof *tgt);
        float *d_z = gk_check_up(arena, z, n), *d_dz = (float *)gk_check_poisoned(arena, n * 4);
        double *d_loss = (double *)gk_check_poisoned(arena, (size_t)N * 8);
        double *d_mean = (double *)gk_check_poisoned(arena, 8), gmean;

        /* The loss alone (dz NULL), then dz in a separate buffer, then in place. */
        GK_CU(gk_cu_softcap_ce(NULL, d_loss, d_mean, d_z, d_t, N, V, cap, dloss, 0));
        GK_CU(cudaMemcpy(got, d_loss, (size_t)N * 8, cudaMemcpyDeviceToHost));
        GK_CU(cudaMemcpy(&gmean, d_mean, 8, cudaMemcpyDeviceToHost));
        double el = rel_err_d(got, loss, (size_t)N), em = rel_err_d(&gmean, &mean, 1);
        GK_OK(el <= bound_loss && em <= bound_loss,
              "softcap ce loss only, N %d V %d: max rel err row losses %.3g mean %.3g (bound %g)",
              N, V, el, em, bound_loss);

        GK_CU(gk_cu_softcap_ce(d_dz, d_loss, NULL, d_z, d_t, N, V, cap, dloss, 0));
        double allow = softcap_dz_allowance(dloss, N);
        float *gdz = gk_check_down(d_dz, n);
        double e = rel_err_beyond(gdz, dz, n, allow), eraw = gk_check_rel_err(gdz, dz, n);
        GK_OK(e <= bound_dz,
              "softcap ce dz, N %d V %d: max rel err %.3g beyond %.3g absolute (bound %g; "
              "%.3g without the allowance)", N, V, e, allow, bound_dz, eraw);
        free(gdz);

        GK_CU(gk_cu_softcap_ce(d_z, d_loss, NULL, d_z, d_t, N, V, cap, dloss, 0));
        GK_CU(cudaMemcpy(got, d_loss, (size_t)N * 8, cudaMemcpyDeviceToHost));
        gdz = gk_check_down(d_z, n);
        e = rel_err_beyond(gdz, dz, n, allow);
        el = rel_err_d(got, loss, (size_t)N);
        GK_OK(e <= bound_dz && el <= bound_loss,
              "softcap ce dz in place of z, N %d V %d: max rel err dz %.3g beyond %.3g "
              "absolute (bound %g) losses %.3g (bound %g)", N, V, e, allow, bound_dz, el,
              bound_loss);
        free(gdz);
        free(z), free(dz), free(loss), free(got), free(tgt);
    }
    /* The bf16 gradient on the same shapes, then the baseline's logits. */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_softcap_ce_bf16(arena, shapes[s].N, shapes[s].V);
    check_softcap_ce_bf16(arena, TIME_N, TIME_V);
    gk_cu_arena_reset(arena);
    time_softcap_ce(arena);
}

/* ---- scale by a vector ----------------------------------------------------- */

/* The residual mix on [N, 512] (s per channel): the forward, the backward
 * with both gradients, with ds alone; and ds alone per head (group 64, the
 * query gain). */
static void time_scale_add(gk_cu_arena *arena)
{
    const int N = TIME_N, C = TIME_C;
    size_t n = (size_t)N * C;
    float *x = time_filled(arena, n, 13), *y = time_filled(arena, n, 14);
    float *dy = time_filled(arena, n, 15), *s = time_filled(arena, (size_t)C, 16);
    float *ds = time_filled(arena, (size_t)C, 17);
    void *work = gk_cu_arena_alloc(arena, gk_cu_scale_add_bwd_workspace(N, C));
    time_it("scale_add fwd [65536,512]", 12.0 * n,
            [&] { GK_CU(gk_cu_scale_add_fwd(y, x, s, N, C, 1, 0)); });
    time_it("scale_add bwd dx+ds [65536,512]", 16.0 * n,
            [&] { GK_CU(gk_cu_scale_add_bwd(y, ds, dy, x, s, N, C, 1, work, 0)); });
    time_it("scale_add bwd ds only [65536,512]", 8.0 * n,
            [&] { GK_CU(gk_cu_scale_add_bwd(NULL, ds, dy, x, s, N, C, 1, work, 0)); });
    time_it("scale_add bwd ds only [65536,512] group 64", 8.0 * n,
            [&] { GK_CU(gk_cu_scale_add_bwd(NULL, ds, dy, x, s, N, C, 64, work, 0)); });
    /* The residual add of a branch whose product wrote it in bf16, and the
     * branch's backward (d(x) as the bf16 its product reads, and ds) from an
     * fp32 and from a bf16 x. */
    gk_bf16 *xb = time_filled<gk_bf16>(arena, n, 32), *dxb = time_filled<gk_bf16>(arena, n, 33);
    time_it("scale_add fwd bx [65536,512]", 10.0 * n,
            [&] { GK_CU(gk_cu_scale_add_fwd_bx(y, xb, s, N, C, 1, 0)); });
    time_it("scale bwd set dxb+ds [65536,512]", 10.0 * n,
            [&] { GK_CU(gk_cu_scale_bwd_set(NULL, dxb, ds, dy, x, s, N, C, 1, work, 0)); });
    time_it("scale bwd set bx dxb+ds [65536,512]", 8.0 * n,
            [&] { GK_CU(gk_cu_scale_bwd_set_bx(NULL, dxb, ds, dy, xb, s, N, C, 1, work, 0)); });
}

/* gk_cu_scale_add_fwd_bx and gk_cu_scale_bwd_set_bx on [N, C] against the CPU
 * (x rounded to bf16 first; d(x) into zeros: written) and against
 * gk_cu_scale_add_fwd and gk_cu_scale_bwd_set on the widened x, bit for bit;
 * the backward with both d(x) outputs, then with the bf16 one alone (as the
 * training step asks for it). */
static void check_scale_add_bx(gk_cu_arena *arena, int N, int C, int g)
{
    const double bound_ds = 1e-6;
    size_t n = (size_t)N * C, ns = (size_t)(C / g);
    float *x = gk_check_randn(n, 1.0), *y0 = gk_check_randn(n, 1.0);
    float *sc = gk_check_randn(ns, 1.0), *dy = gk_check_randn(n, 1.0);
    float *ds0 = gk_check_randn(ns, 1.0);
    gk_check_round_bf16(x, n);
    float *y = dup_f(y0, n), *dx = (float *)gk_check_xalloc(n * 4), *ds = dup_f(ds0, ns);
    gk_scale_add_fwd_f32(y, x, sc, N, C, g);
    gk_scale_add_bwd_f32(dx, ds, dy, x, sc, N, C, g);

    gk_cu_arena_reset(arena);
    void *work = gk_cu_arena_alloc(arena, gk_cu_scale_add_bwd_workspace(N, C));
    float *d_x = gk_check_up(arena, x, n), *d_y = gk_check_up(arena, y0, n);
    float *d_s = gk_check_up(arena, sc, ns), *d_dy = gk_check_up(arena, dy, n);
    float *d_ds = gk_check_up(arena, ds0, ns), *d_dx = (float *)gk_check_poisoned(arena, n * 4);
    gk_bf16 *d_dxb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
    GK_CU(gk_cu_scale_add_fwd(d_y, d_x, d_s, N, C, g, 0));
    GK_CU(gk_cu_scale_bwd_set(d_dx, d_dxb, d_ds, d_dy, d_x, d_s, N, C, g, work, 0));
    float *t_y = gk_check_down(d_y, n), *t_dx = gk_check_down(d_dx, n);
    float *t_dxb = gk_check_download(d_dxb, n, GK_OUT_BF16), *t_ds = gk_check_down(d_ds, ns);

    gk_cu_arena_reset(arena);
    work = gk_cu_arena_alloc(arena, gk_cu_scale_add_bwd_workspace(N, C));
    gk_bf16 *d_xb = (gk_bf16 *)gk_check_upload(arena, x, n, GK_OUT_BF16);
    d_y = gk_check_up(arena, y0, n), d_s = gk_check_up(arena, sc, ns);
    d_dy = gk_check_up(arena, dy, n), d_ds = gk_check_up(arena, ds0, ns);
    d_dx = (float *)gk_check_poisoned(arena, n * 4);
    d_dxb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
    GK_CU(gk_cu_scale_add_fwd_bx(d_y, d_xb, d_s, N, C, g, 0));
    size_t bits = 0;
    double e = compare(d_y, GK_OUT_F32, y, t_y, n, 0, &bits);
    GK_OK(e == 0 && bits == 0,
          "scale_add fwd bx (+=), N %d C %d group %d: max rel err against the CPU %.3g (bound "
          "0); %zu of %zu differ from gk_cu_scale_add_fwd's on the widened x (bound 0: "
          "bit-identical)", N, C, g, e, bits, n);

    GK_CU(gk_cu_scale_bwd_set_bx(d_dx, d_dxb, d_ds, d_dy, d_xb, d_s, N, C, g, work, 0));
    bits = 0;
    double ex = compare(d_dx, GK_OUT_F32, dx, t_dx, n, 0, &bits);
    double eb = compare(d_dxb, GK_OUT_BF16, dx, t_dxb, n, 0, &bits);
    double es = compare(d_ds, GK_OUT_F32, ds, t_ds, ns, bound_ds, &bits);
    GK_CU(cudaMemcpy(d_ds, ds0, ns * 4, cudaMemcpyHostToDevice));
    GK_CU(cudaMemset(d_dxb, 0xFF, n * 2));
    GK_CU(gk_cu_scale_bwd_set_bx(NULL, d_dxb, d_ds, d_dy, d_xb, d_s, N, C, g, work, 0));
    double eb1 = compare(d_dxb, GK_OUT_BF16, dx, t_dxb, n, 0, &bits);
    double es1 = compare(d_ds, GK_OUT_F32, ds, t_ds, ns, bound_ds, &bits);
    GK_OK(ex == 0 && eb == 0 && eb1 == 0 && es <= bound_ds && es1 <= bound_ds && bits == 0,
          "scale bwd set bx, N %d C %d group %d: max rel err against the CPU dx %.3g, bf16 dx "
          "%.3g, alone %.3g (bound 0), ds %.3g, %.3g (bound %g); %zu values differ from "
          "gk_cu_scale_bwd_set's on the widened x (bound 0: bit-identical)", N, C, g, ex, eb,
          eb1, es, es1, bound_ds, bits);
    free(t_y), free(t_dx), free(t_dxb), free(t_ds);
    free(x), free(y0), free(sc), free(dy), free(ds0), free(y), free(dx), free(ds);
}

void gk_check_scale_add(gk_cu_arena *arena)
{
    static const struct {
        int N, C, group;
    } shapes[] = {{1, 8, 1}, {37, 100, 1}, {300, 512, 1}, {1000, 512, 64}, {257, 96, 32},
                  {4099, 300, 3}};
    const double bound_ds = 1e-6;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, C = shapes[s].C, g = shapes[s].group;
        size_t n = (size_t)N * C, ns = (size_t)(C / g);
        float *x = gk_check_randn(n, 1.0), *y = gk_check_randn(n, 1.0);
        float *sc = gk_check_randn(ns, 1.0), *dy = gk_check_randn(n, 1.0);
        float *dx = gk_check_randn(n, 1.0), *ds = gk_check_randn(ns, 1.0);
        float *d_x = gk_check_up(arena, x, n), *d_y = gk_check_up(arena, y, n), *d_s = gk_check_up(arena, sc, ns);
        gk_scale_add_fwd_f32(y, x, sc, N, C, g);
        GK_CU(gk_cu_scale_add_fwd(d_y, d_x, d_s, N, C, g, 0));
        double e = err_of(d_y, y, n);
        GK_OK(e == 0, "scale_add fwd (+=), N %d C %d group %d: max rel err %.3g (bound 0)", N,
              C, g, e);

        /* Both gradients, then each alone (the other NULL). */
        void *work = gk_cu_arena_alloc(arena, gk_cu_scale_add_bwd_workspace(N, C));
        float *d_dy = gk_check_up(arena, dy, n), *d_dx = gk_check_up(arena, dx, n), *d_ds = gk_check_up(arena, ds, ns);
        float *dx1 = dup_f(dx, n), *ds1 = dup_f(ds, ns);
        gk_scale_add_bwd_f32(dx, ds, dy, x, sc, N, C, g);
        GK_CU(gk_cu_scale_add_bwd(d_dx, d_ds, d_dy, d_x, d_s, N, C, g, work, 0));
        double ex = err_of(d_dx, dx, n), es = err_of(d_ds, ds, ns);
        GK_OK(ex == 0 && es <= bound_ds,
              "scale_add bwd (+=), N %d C %d group %d: max rel err dx %.3g (bound 0) ds %.3g "
              "(bound %g)", N, C, g, ex, es, bound_ds);

        GK_CU(cudaMemcpy(d_dx, dx1, n * 4, cudaMemcpyHostToDevice));
        GK_CU(cudaMemcpy(d_ds, ds1, ns * 4, cudaMemcpyHostToDevice));
        gk_scale_add_bwd_f32(dx1, NULL, dy, x, sc, N, C, g);
        gk_scale_add_bwd_f32(NULL, ds1, dy, x, sc, N, C, g);
        GK_CU(gk_cu_scale_add_bwd(d_dx, NULL, d_dy, d_x, d_s, N, C, g, work, 0));
        GK_CU(gk_cu_scale_add_bwd(NULL, d_ds, d_dy, d_x, d_s, N, C, g, work, 0));
        ex = err_of(d_dx, dx1, n), es = err_of(d_ds, ds1, ns);
        GK_OK(ex == 0 && es <= bound_ds,
              "scale_add bwd, one gradient at a time, N %d C %d group %d: max rel err dx %.3g "
              "ds %.3g", N, C, g, ex, es);

        /* The set variant: d(x) written, fp32 and bf16 both from poison, ds added. */
        float *dxz = (float *)gk_check_xalloc(n * 4), *ds3 = gk_check_randn(ns, 1.0);
        float *d_ds3 = gk_check_up(arena, ds3, ns);
        float *d_dx3 = (float *)gk_check_poisoned(arena, n * 4);
        gk_bf16 *d_dxb = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
        gk_scale_add_bwd_f32(dxz, ds3, dy, x, sc, N, C, g);
        GK_CU(gk_cu_scale_bwd_set(d_dx3, d_dxb, d_ds3, d_dy, d_x, d_s, N, C, g, work, 0));
        ex = err_of(d_dx3, dxz, n), es = err_of(d_ds3, ds3, ns);
        double eb = bf16_err(d_dxb, dxz, n);
        GK_OK(ex == 0 && eb == 0 && es <= bound_ds,
              "scale bwd set (dx = s dy), N %d C %d group %d: max rel err dx %.3g, bf16 dx %.3g "
              "(bound 0), ds %.3g (bound %g)", N, C, g, ex, eb, es, bound_ds);
        free(dxz), free(ds3);
        free(x), free(y), free(sc), free(dy), free(dx), free(ds), free(dx1), free(ds1);
    }
    /* The bf16-x forms: the shapes above, 257 on the scalar path, and the
     * baseline's residual add. */
    static const struct {
        int N, C, group;
    } bx_shapes[] = {{1, 8, 1},     {37, 100, 1},     {300, 512, 1}, {1000, 512, 64},
                     {257, 96, 32}, {4099, 300, 3},   {33, 257, 1},  {TIME_N, TIME_C, 1}};
    for (size_t s = 0; s < sizeof bx_shapes / sizeof bx_shapes[0]; s++)
        check_scale_add_bx(arena, bx_shapes[s].N, bx_shapes[s].C, bx_shapes[s].group);
    gk_cu_arena_reset(arena);
    time_scale_add(arena);
}

/* ---- Adam ------------------------------------------------------------------ */

/* Three steps from zero moments, a fresh gradient each, with and without
 * weight decay; parameters and both moments compared. */
void gk_check_adam(gk_cu_arena *arena)
{
    static const size_t sizes[] = {1, 1000, 1000003};
    const double lr = 0.05, b1 = 0.9, b2 = 0.95, eps = 1e-8, bound = 1e-6;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int dec = 0; dec < 2; dec++) {
            size_t n = sizes[s];
            double wd = dec ? 0.1 : 0;
            float *w = gk_check_randn(n, 1.0), *m = (float *)gk_check_xalloc(n * 4),
                  *v = (float *)gk_check_xalloc(n * 4);
            float *d_w = gk_check_up(arena, w, n), *d_m = gk_check_up(arena, m, n), *d_v = gk_check_up(arena, v, n);
            for (long long t = 1; t <= 3; t++) {
                float *g = gk_check_randn(n, 0.1);
                float *d_g = gk_check_up(arena, g, n);
                gk_adam_step(w, g, m, v, n, lr, b1, b2, eps, wd, t);
                GK_CU(gk_cu_adam(d_w, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, t, 0));
                free(g);
            }
            double ew = err_of(d_w, w, n), em = err_of(d_m, m, n), ev = err_of(d_v, v, n);
            GK_OK(ew <= bound && em <= bound && ev <= bound,
                  "adam, 3 steps, n %zu wd %g: max rel err w %.3g m %.3g v %.3g (bound %g)", n,
                  wd, ew, em, ev, bound);
            free(w), free(m), free(v);
        }
}
