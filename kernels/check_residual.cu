/* check_residual: the fused RMSNorm-and-scale backwards of residual.cu, run
 * three ways on the same random inputs (y the RMSNorm of a random row,
 * rounded to bf16 as the model keeps it; dy rounded to bf16 where the form
 * reads bf16):
 * - the CPU reference of lib/ops.h (gk_rmsnorm_bwd_f32, then
 *   gk_scale_add_bwd_f32 into zeros or into dx0), on the widened values:
 *   fp32 outputs within 1e-6 relative (the norm's double sum runs in another
 *   order, so its mean may differ by an ulp), bf16 outputs within that plus
 *   one bf16 rounding (2^-8), the scales' gradients within 1e-5;
 * - the chain of elementwise.cu's kernels the model ran before
 *   (gk_cu_rmsnorm_bwd, gk_cu_scale_bwd_set(_bx), gk_cu_scale_add_bwd) on the
 *   same widened values: every written element bit for bit (bound 0), the
 *   gradients within 1e-6 (summed in another fixed order).
 * Outputs that are written start poisoned; dres, dx0 and the gradients start
 * random (they are added into). Shapes cover every row layout the kernels
 * admit (4 to 32 lanes a row, 1 to 4 slots a lane), row counts that leave a
 * block part empty, dxin aliasing dres, and the golf baseline's [65536, 512],
 * which is also timed against the chain (a "# timing" line per form). Widths
 * the kernels refuse (not a multiple of 4, or over 512) are checked to return
 * cudaErrorInvalidValue. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "elementwise.h"
#include "residual.h"

static const double BOUND_CPU = 1e-6, BOUND_DS = 1e-5, BOUND_CHAIN_DS = 1e-6;

/* The inputs of one shape, on the host (bf16-rounded where a kernel reads
 * bf16) and on the device. */
typedef struct {
    int N, C;
    size_t n;
    float *dy, *y, *rstd, *dres, *a, *s, *ds, *xin, *x0, *dx0, *mix, *dmix;
    float *d_dyf, *d_yf, *d_rstd, *d_s, *d_xin, *d_x0, *d_mix;
    gk_bf16 *d_dyb, *d_yb, *d_ab;
    void *work;
} inputs;

static void make_inputs(gk_cu_arena *ar, inputs *in, int N, int C, int dy_bf16)
{
    size_t n = (size_t)N * C;
    in->N = N, in->C = C, in->n = n;
    float *x = gk_check_randn(n, 2.0);
    in->y = (float *)gk_check_xalloc(n * 4), in->rstd = (float *)gk_check_xalloc((size_t)N * 4);
    gk_rmsnorm_fwd_f32(in->y, in->rstd, x, N, C, GK_RMSNORM_EPS);
    free(x);
    gk_check_round_bf16(in->y, n);
    in->dy = gk_check_randn(n, 1.0);
    if (dy_bf16)
        gk_check_round_bf16(in->dy, n);
    in->dres = gk_check_randn(n, 1.0), in->a = gk_check_randn(n, 1.0);
    gk_check_round_bf16(in->a, n);
    in->s = gk_check_randn((size_t)C, 1.0), in->ds = gk_check_randn((size_t)C, 1.0);
    in->xin = gk_check_randn(n, 1.0), in->x0 = gk_check_randn(n, 1.0);
    in->dx0 = gk_check_randn(n, 1.0);
    in->mix = gk_check_randn(2 * (size_t)C, 1.0), in->dmix = gk_check_randn(2 * (size_t)C, 1.0);
    in->d_dyf = gk_check_up(ar, in->dy, n);
    in->d_dyb = (gk_bf16 *)gk_check_upload(ar, in->dy, n, GK_OUT_BF16);
    in->d_yf = gk_check_up(ar, in->y, n);
    in->d_yb = (gk_bf16 *)gk_check_upload(ar, in->y, n, GK_OUT_BF16);
    in->d_rstd = gk_check_up(ar, in->rstd, (size_t)N);
    in->d_ab = (gk_bf16 *)gk_check_upload(ar, in->a, n, GK_OUT_BF16);
    in->d_s = gk_check_up(ar, in->s, (size_t)C);
    in->d_xin = gk_check_up(ar, in->xin, n), in->d_x0 = gk_check_up(ar, in->x0, n);
    in->d_mix = gk_check_up(ar, in->mix, 2 * (size_t)C);
    size_t wb = gk_cu_resid_bwd_workspace(N, C), wc = gk_cu_scale_add_bwd_workspace(N, C);
    in->work = gk_cu_arena_alloc(ar, wb > wc ? wb : wc);
}

static void free_inputs(inputs *in)
{
    free(in->dy), free(in->y), free(in->rstd), free(in->dres), free(in->a), free(in->s);
    free(in->ds), free(in->xin), free(in->x0), free(in->dx0), free(in->mix), free(in->dmix);
}

/* The error of device values DEV (TYPE) against host WANT (rounded to bf16
 * first for a bf16 DEV), or against device values OTHER of the same type. */
static double err_dev(const void *dev, gk_out_type type, const float *want, size_t n)
{
    float *got = gk_check_download(dev, n, type), *w = (float *)gk_check_xalloc(n * 4);
    memcpy(w, want, n * 4);
    if (type == GK_OUT_BF16)
        gk_check_round_bf16(w, n);
    double e = gk_check_rel_err(got, w, n);
    free(got), free(w);
    return e;
}

static double err_pair(const void *dev, const void *other, gk_out_type type, size_t n)
{
    float *w = gk_check_download(other, n, type);
    double e = err_dev(dev, type, w, n);
    free(w);
    return e;
}

/* mlp_norm's backward with attn_scale's, dy fp32 or bf16. */
static void check_scale(gk_cu_arena *ar, int N, int C, int dy_bf16)
{
    inputs in;
    make_inputs(ar, &in, N, C, dy_bf16);
    size_t n = in.n;
    /* CPU: dres += norm backward; da = s dres (into zeros); ds += sum a dres */
    float *dres = (float *)gk_check_xalloc(n * 4), *da = (float *)gk_check_xalloc(n * 4);
    float *ds = (float *)gk_check_xalloc((size_t)C * 4);
    memcpy(dres, in.dres, n * 4), memcpy(ds, in.ds, (size_t)C * 4);
    gk_rmsnorm_bwd_f32(dres, in.dy, in.y, in.rstd, N, C);
    gk_scale_add_bwd_f32(da, ds, dres, in.a, in.s, N, C, 1);

    float *f_dres = gk_check_up(ar, in.dres, n), *c_dres = gk_check_up(ar, in.dres, n);
    float *f_ds = gk_check_up(ar, in.ds, (size_t)C), *c_ds = gk_check_up(ar, in.ds, (size_t)C);
    gk_bf16 *f_da = (gk_bf16 *)gk_check_poisoned(ar, n * 2);
    gk_bf16 *c_da = (gk_bf16 *)gk_check_poisoned(ar, n * 2);
    if (dy_bf16)
        GK_CU(gk_cu_norm_bwd_scale_bdy(f_dres, f_da, f_ds, in.d_dyb, in.d_yb, in.d_rstd,
                                       in.d_ab, in.d_s, N, C, in.work, 0));
    else
        GK_CU(gk_cu_norm_bwd_scale(f_dres, f_da, f_ds, in.d_dyf, in.d_yb, in.d_rstd, in.d_ab,
                                   in.d_s, N, C, in.work, 0));
    GK_CU(gk_cu_rmsnorm_bwd(c_dres, NULL, in.d_dyf, in.d_yf, in.d_rstd, N, C, 0));
    GK_CU(gk_cu_scale_bwd_set_bx(NULL, c_da, c_ds, c_dres, in.d_ab, in.d_s, N, C, 1, in.work,
                                 0));
    double e_r = err_dev(f_dres, GK_OUT_F32, dres, n), e_a = err_dev(f_da, GK_OUT_BF16, da, n);
    double e_s = err_dev(f_ds, GK_OUT_F32, ds, (size_t)C);
    GK_OK(e_r <= BOUND_CPU && e_a <= BOUND_CPU + 1.0 / 256 && e_s <= BOUND_DS,
          "norm_bwd_scale%s against the CPU, N %d C %d: max rel err dres %.3g (bound %g), "
          "bf16 da %.3g (bound %g), ds %.3g (bound %g)", dy_bf16 ? "_bdy" : "", N, C, e_r,
          BOUND_CPU, e_a, BOUND_CPU + 1.0 / 256, e_s, BOUND_DS);
    e_r = err_pair(f_dres, c_dres, GK_OUT_F32, n), e_a = err_pair(f_da, c_da, GK_OUT_BF16, n);
    e_s = err_pair(f_ds, c_ds, GK_OUT_F32, (size_t)C);
    GK_OK(e_r == 0 && e_a == 0 && e_s <= BOUND_CHAIN_DS,
          "norm_bwd_scale%s against the chain, N %d C %d: max rel err dres %.3g, da %.3g "
          "(bound 0), ds %.3g (bound %g)", dy_bf16 ? "_bdy" : "", N, C, e_r, e_a, e_s,
          BOUND_CHAIN_DS);
    free(dres), free(da), free(ds);
    free_inputs(&in);
}

/* attn_norm's backward with resid_mix's; ALIAS writes dxin over dres. */
static void check_mix(gk_cu_arena *ar, int N, int C, int alias)
{
    inputs in;
    make_inputs(ar, &in, N, C, 1);
    size_t n = in.n, C2 = 2 * (size_t)C;
    float *d = (float *)gk_check_xalloc(n * 4), *dxin = (float *)gk_check_xalloc(n * 4);
    float *dx0 = (float *)gk_check_xalloc(n * 4), *dmix = (float *)gk_check_xalloc(C2 * 4);
    memcpy(d, in.dres, n * 4), memcpy(dx0, in.dx0, n * 4), memcpy(dmix, in.dmix, C2 * 4);
    gk_rmsnorm_bwd_f32(d, in.dy, in.y, in.rstd, N, C);
    gk_scale_add_bwd_f32(dxin, dmix, d, in.xin, in.mix, N, C, 1);
    gk_scale_add_bwd_f32(dx0, dmix + C, d, in.x0, in.mix + C, N, C, 1);

    float *f_dres = gk_check_up(ar, in.dres, n), *c_dres = gk_check_up(ar, in.dres, n);
    float *f_dxin = alias ? f_dres : (float *)gk_check_poisoned(ar, n * 4);
    float *c_dxin = (float *)gk_check_poisoned(ar, n * 4);
    float *f_dx0 = gk_check_up(ar, in.dx0, n), *c_dx0 = gk_check_up(ar, in.dx0, n);
    float *f_dm = gk_check_up(ar, in.dmix, C2), *c_dm = gk_check_up(ar, in.dmix, C2);
    GK_CU(gk_cu_norm_bwd_mix(f_dxin, f_dx0, f_dm, f_dres, in.d_dyb, in.d_yb, in.d_rstd,
                             in.d_xin, in.d_x0, in.d_mix, N, C, in.work, 0));
    GK_CU(gk_cu_rmsnorm_bwd(c_dres, NULL, in.d_dyf, in.d_yf, in.d_rstd, N, C, 0));
    GK_CU(gk_cu_scale_bwd_set(c_dxin, NULL, c_dm, c_dres, in.d_xin, in.d_mix, N, C, 1, in.work,
                              0));
    GK_CU(gk_cu_scale_add_bwd(c_dx0, c_dm + C, c_dres, in.d_x0, in.d_mix + C, N, C, 1, in.work,
                              0));
    double e_i = err_dev(f_dxin, GK_OUT_F32, dxin, n), e_0 = err_dev(f_dx0, GK_OUT_F32, dx0, n);
    double e_m = err_dev(f_dm, GK_OUT_F32, dmix, C2);
    GK_OK(e_i <= BOUND_CPU && e_0 <= BOUND_CPU && e_m <= BOUND_DS,
          "norm_bwd_mix%s against the CPU, N %d C %d: max rel err dxin %.3g dx0 %.3g (bound "
          "%g), dmix %.3g (bound %g)", alias ? " (dxin over dres)" : "", N, C, e_i, e_0,
          BOUND_CPU, e_m, BOUND_DS);
    e_i = err_pair(f_dxin, c_dxin, GK_OUT_F32, n), e_0 = err_pair(f_dx0, c_dx0, GK_OUT_F32, n);
    e_m = err_pair(f_dm, c_dm, GK_OUT_F32, C2);
    GK_OK(e_i == 0 && e_0 == 0 && e_m <= BOUND_CHAIN_DS,
          "norm_bwd_mix%s against the chain, N %d C %d: max rel err dxin %.3g, dx0 %.3g (bound "
          "0), dmix %.3g (bound %g)", alias ? " (dxin over dres)" : "", N, C, e_i, e_0, e_m,
          BOUND_CHAIN_DS);
    free(d), free(dxin), free(dx0), free(dmix);
    free_inputs(&in);
}

/* Both forms at the golf baseline against the chains the model ran before
 * (dy and y in fp32 there, as the model kept them). Bytes counted: every
 * array read or written once. */
static void time_golf(gk_cu_arena *ar)
{
    int N = 65536, C = 512;
    inputs in;
    make_inputs(ar, &in, N, C, 1);
    size_t n = in.n;
    float *dres = gk_check_up(ar, in.dres, n), *dx0 = gk_check_up(ar, in.dx0, n);
    float *dxin = (float *)gk_check_poisoned(ar, n * 4), *ds = gk_check_up(ar, in.dmix, 2 * C);
    gk_bf16 *da = (gk_bf16 *)gk_check_poisoned(ar, n * 2);
    float fs = gk_check_median_ms([&] {
        GK_CU(gk_cu_norm_bwd_scale_bdy(dres, da, ds, in.d_dyb, in.d_yb, in.d_rstd, in.d_ab,
                                       in.d_s, N, C, in.work, 0));
    });
    float cs = gk_check_median_ms([&] {
        GK_CU(gk_cu_rmsnorm_bwd(dres, NULL, in.d_dyf, in.d_yf, in.d_rstd, N, C, 0));
        GK_CU(gk_cu_scale_bwd_set_bx(NULL, da, ds, dres, in.d_ab, in.d_s, N, C, 1, in.work, 0));
    });
    float fm = gk_check_median_ms([&] {
        GK_CU(gk_cu_norm_bwd_mix(dxin, dx0, ds, dres, in.d_dyb, in.d_yb, in.d_rstd, in.d_xin,
                                 in.d_x0, in.d_mix, N, C, in.work, 0));
    });
    float cm = gk_check_median_ms([&] {
        GK_CU(gk_cu_rmsnorm_bwd(dres, NULL, in.d_dyf, in.d_yf, in.d_rstd, N, C, 0));
        GK_CU(gk_cu_scale_bwd_set(dxin, NULL, ds, dres, in.d_xin, in.d_mix, N, C, 1, in.work, 0));
        GK_CU(gk_cu_scale_add_bwd(dx0, ds + C, dres, in.d_x0, in.d_mix + C, N, C, 1, in.work,
                                  0));
    });
    /* scale: dy, y, a (bf16), dres read and written, da (bf16); mix: dy, y
     * (bf16), dres, xin, x0, dx0 read, dxin and dx0 written */
    double bs = (double)n * (2 + 2 + 2 + 4 + 4 + 2), bm = (double)n * (2 + 2 + 4 * 4 + 4 * 2);
    printf("# timing norm_bwd_scale_bdy [65536,512]: %.3f ms (%.0f GB/s); the chain "
           "(rmsnorm_bwd + scale_bwd_set_bx, fp32 dy and y): %.3f ms\n",
           fs, bs / fs / 1e6, cs);
    printf("# timing norm_bwd_mix [65536,512]: %.3f ms (%.0f GB/s); the chain (rmsnorm_bwd + "
           "scale_bwd_set + scale_add_bwd, fp32 dy and y): %.3f ms\n",
           fm, bm / fm / 1e6, cm);
    free_inputs(&in);
}

void gk_check_residual(gk_cu_arena *arena)
{
    static const struct {
        int N, C;
    } shapes[] = {{1, 4}, {70, 16}, {129, 64}, {7, 100}, {300, 256}, {1000, 512}, {65, 384}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int N = shapes[i].N, C = shapes[i].C;
        GK_OK(gk_cu_resid_bwd_ok(C), "resid_bwd_ok admits C %d", C);
        check_scale(arena, N, C, 0);
        check_scale(arena, N, C, 1);
        check_mix(arena, N, C, (int)(i % 2));
    }
    static const int refused[] = {6, 516, 1024};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int C = refused[i];
        float *f = (float *)gk_cu_arena_alloc(arena, 64 * (size_t)C * 4);
        gk_bf16 *b = (gk_bf16 *)gk_cu_arena_alloc(arena, 64 * (size_t)C * 2);
        cudaError_t e1 = gk_cu_norm_bwd_scale(f, b, f, f, b, f, b, f, 64, C, f, 0);
        cudaError_t e2 = gk_cu_norm_bwd_mix(f, f, f, f, b, b, f, f, f, f, 64, C, f, 0);
        GK_OK(!gk_cu_resid_bwd_ok(C) && e1 == cudaErrorInvalidValue &&
                  e2 == cudaErrorInvalidValue,
              "C %d is refused: resid_bwd_ok 0, both launchers cudaErrorInvalidValue", C);
    }
    time_golf(arena);
}
