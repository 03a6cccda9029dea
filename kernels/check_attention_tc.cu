/* check_attention_tc: the bf16 tensor-core attention of attention_tc.cu
 * against gk_attention_fwd_f32 / gk_attention_bwd_f32 of lib/ops.h,
 * registered in check.h's GK_CHECKS and run by bin/check-cuda; then a timing
 * of it beside the fp32 kernels of attention.cu, printed as a TAP comment
 * (informational, not asserted).
 *
 * Shapes: three tokens (one partial tile; not T 1, where dq and dk are 0,
 * dP = v . dout = delta, and both sides give only their rounding noise),
 * T 77 (one partial tile of every kernel), T 300 with H == KV and D 32
 * (several tiles and a tail), the golf baseline B 2 T 1024 H 8 KV 4 D 64
 * (whole tiles: the online softmax's rescaling and the dk/dv pass's long
 * query loop), T 300 with D 128 and 3
 * query heads per kv head. Inputs (q, k, v and dout) are rounded to bf16 on the
 * host, so the fp32 CPU reference sees exactly the kernel's inputs; the
 * backward of both sides runs from the CPU's out (rounded to bf16, as the
 * kernel's own out is) and lse, so it is compared on identical inputs. Every
 * output starts poisoned (NaN), so an unwritten element fails; the backward
 * runs twice into fresh poison and must give the same bits (determinism). An
 * unsupported D must be refused.
 *
 * Bounds (max relative error per element, floored by the output's RMS, as
 * gk_check_rel_err measures it). The products of bf16 inputs are exact in
 * fp32 and both sides sum in fp32, so what separates them is the kernel's
 * rounding of P (before P V and P^T dO) and of dS (before dS K and dS^T Q) to
 * bf16, 2^-9 of each value at most, and out's own rounding to bf16:
 * - lse 1e-4: fp32 throughout (the hardware exp2 within ~2^-22, sums of 1024
 *   terms in another order): about 1e-6 of |lse| ~ log T.
 * - out 3e-2, dq, dk, dv 6e-2 (dv is written in bf16: one more rounding,
 *   2^-9, inside the bound): rounding P moves an element of out by up to
 *   2^-9 sum_j p_j |v_j|, an absolute error, largest in a sequence's first
 *   rows, where a few keys share the weight (p near 1/2), while the RMS floor
 *   is set by the many later rows that average hundreds of keys (about 0.15
 *   at T 1024 with unit normal inputs). An early row's element that cancels
 *   to near 0 is then off by up to 2^-9 |v| / 0.15, ~1.3e-2 per unit of |v|
 *   (random signs keep most far below). The gradients carry the same error
 *   through P and dS, twice over: dS = P (dP - delta) holds P's error and adds
 *   its own rounding. Observed on an H100 at T 1024 over 8 seeds: out
 *   1.2e-2..1.7e-2, gradients 1.7e-2..3.7e-2; a wrong mask or tile gives
 *   errors of order 1. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h" /* first: it includes ops.h inside extern "C" */
#include "attention_tc.h"
#include "check.h"

/* Compare device values of TYPE with the host's, free the download, return the
 * error. */
static double err_of(const void *dev, const float *want, size_t n, gk_out_type type)
{
    float *got = gk_check_download(dev, n, type);
    double e = gk_check_rel_err(got, want, n);
    free(got);
    return e;
}

/* Whether N floats at device A and B have the same bits. */
static int same_bits(const float *a, const float *b, size_t n)
{
    float *ha = gk_check_download(a, n, GK_OUT_F32), *hb = gk_check_download(b, n, GK_OUT_F32);
    int same = memcmp(ha, hb, n * sizeof(float)) == 0;
    free(ha), free(hb);
    return same;
}

static float *host_copy(const float *x, size_t n)
{
    float *y = (float *)malloc(n * sizeof *y);
    if (!y)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    memcpy(y, x, n * sizeof *y);
    return y;
}

static void check_shape(gk_cu_arena *arena, int B, int T, int H, int KV, int D)
{
    const double out_bound = 3e-2, lse_bound = 1e-4, grad_bound = 6e-2;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D, nl = (size_t)B * T * H;
    float *q = gk_check_randn(nq, 1.0), *k = gk_check_randn(nk, 1.0);
    float *v = gk_check_randn(nk, 1.0), *dout = gk_check_randn(nq, 1.0);
    gk_check_round_bf16(q, nq), gk_check_round_bf16(k, nk), gk_check_round_bf16(v, nk);
    gk_check_round_bf16(dout, nq);
    float *out = (float *)malloc(nq * sizeof(float)), *lse = (float *)malloc(nl * sizeof(float));
    float *dq = (float *)calloc(nq, sizeof(float)), *dk = (float *)calloc(nk, sizeof(float));
    float *dv = (float *)calloc(nk, sizeof(float));
    if (!out || !lse || !dq || !dk || !dv)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    gk_attention_fwd_f32(out, lse, q, k, v, B, T, H, KV, D);

    gk_bf16 *d_q = (gk_bf16 *)gk_check_upload(arena, q, nq, GK_OUT_BF16);
    gk_bf16 *d_k = (gk_bf16 *)gk_check_upload(arena, k, nk, GK_OUT_BF16);
    gk_bf16 *d_v = (gk_bf16 *)gk_check_upload(arena, v, nk, GK_OUT_BF16);
    gk_bf16 *d_out = (gk_bf16 *)gk_check_poisoned(arena, nq * 2);
    float *d_lse = (float *)gk_check_poisoned(arena, nl * 4);
    GK_CU(gk_cu_attention_tc_fwd(d_out, d_lse, d_q, d_k, d_v, B, T, H, KV, D, 0));
    double eo = err_of(d_out, out, nq, GK_OUT_BF16), el = err_of(d_lse, lse, nl, GK_OUT_F32);
    GK_OK(eo <= out_bound && el <= lse_bound,
          "attention_tc fwd, B %d T %d H %d KV %d D %d: max rel err out %.3g (bound %g) "
          "lse %.3g (bound %g)", B, T, H, KV, D, eo, out_bound, el, lse_bound);

    /* The backward from the CPU's out, rounded to bf16 on both sides, and lse. */
    float *outr = host_copy(out, nq);
    gk_check_round_bf16(outr, nq);
    gk_attention_bwd_f32(dq, dk, dv, dout, outr, lse, q, k, v, B, T, H, KV, D);
    gk_bf16 *d_dout = (gk_bf16 *)gk_check_upload(arena, dout, nq, GK_OUT_BF16);
    gk_bf16 *d_outr = (gk_bf16 *)gk_check_upload(arena, outr, nq, GK_OUT_BF16);
    float *d_lsec = (float *)gk_check_upload(arena, lse, nl, GK_OUT_F32);
    void *work = gk_cu_arena_alloc(arena, gk_cu_attention_tc_bwd_workspace(B, T, H));
    float *g[2][3];
    for (int run = 0; run < 2; run++) {
        g[run][0] = (float *)gk_check_poisoned(arena, nq * 4);
        g[run][1] = (float *)gk_check_poisoned(arena, nk * 4);
        g[run][2] = (float *)gk_check_poisoned(arena, nk * 2); /* dv: bf16 */
        GK_CU(gk_cu_attention_tc_bwd(g[run][0], g[run][1], (gk_bf16 *)g[run][2], KV * D, d_dout,
                                     d_outr, d_lsec,
                                     d_q, d_k, d_v, B, T, H, KV, D, work, 0));
    }
    double eq = err_of(g[0][0], dq, nq, GK_OUT_F32), ek = err_of(g[0][1], dk, nk, GK_OUT_F32),
           ev = err_of(g[0][2], dv, nk, GK_OUT_BF16);
    GK_OK(eq <= grad_bound && ek <= grad_bound && ev <= grad_bound,
          "attention_tc bwd, B %d T %d H %d KV %d D %d: max rel err dq %.3g dk %.3g dv %.3g "
          "(bound %g)", B, T, H, KV, D, eq, ek, ev, grad_bound);
    GK_OK(same_bits(g[0][0], g[1][0], nq) && same_bits(g[0][1], g[1][1], nk) &&
              same_bits(g[0][2], g[1][2], nk / 2),
          "attention_tc bwd, B %d T %d H %d KV %d D %d: two runs give the same bits", B, T, H,
          KV, D);
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(outr), free(dq),
        free(dk), free(dv);
}

/* ---- timing ------------------------------------------------------------------ */

/* N values, uniform with variance 1 from a hash of the index and SEED, as
 * bf16 (BF16) or fp32: timing inputs without a host round trip. */
__global__ void fill_k(void *p, size_t n, int bf16, uint32_t seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 0x9E3779B9u ^ seed;
        x ^= x >> 16, x *= 0x7FEB352Du, x ^= x >> 15, x *= 0x846CA68Bu, x ^= x >> 16;
        float u = 1.7320508f * (2.f * (float)(x >> 8) / 16777216.f - 1.f);
        if (bf16)
            ((gk_bf16 *)p)[i] = __float2bfloat16(u);
        else
            ((float *)p)[i] = u;
    }
}

static void *carve_filled(char **at, size_t n, int bf16, uint32_t seed)
{
    void *p = *at;
    *at += (n * (bf16 ? 2 : 4) + GK_CU_ALIGN - 1) / GK_CU_ALIGN * GK_CU_ALIGN;
    fill_k<<<1024, 256>>>(p, n, bf16, seed);
    GK_CU(cudaGetLastError());
    return p;
}

/* The baseline's attention at B 32 (T 1024, H 8, KV 4, D 64): the fp32
 * kernels' buffers at B 64 would not fit the check arena's 512 MiB. One
 * region holds the bf16 set, then the fp32 set; the values are irrelevant
 * to the speed as long as they are finite. */
static void time_baseline(gk_cu_arena *arena)
{
    const int B = 32, T = 1024, H = 8, KV = 4, D = 64;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D, nl = (size_t)B * T * H;
    /* the larger, fp32, set: q out dout dq, k v dk dv, lse workspace */
    char *region = (char *)gk_cu_arena_alloc(arena, 4 * (4 * nq + 4 * nk + 2 * nl) +
                                                        16 * GK_CU_ALIGN);
    double flop = 2.0 * B * H * (double)T * T * D; /* 4 B H T^2 D / 2 (causal) */
    float fwd_ms, bwd_ms, fwd32_ms, bwd32_ms;
    {
        char *at = region;
        gk_bf16 *q = (gk_bf16 *)carve_filled(&at, nq, 1, 1), *k = (gk_bf16 *)carve_filled(&at, nk, 1, 2);
        gk_bf16 *v = (gk_bf16 *)carve_filled(&at, nk, 1, 3), *dout = (gk_bf16 *)carve_filled(&at, nq, 1, 4);
        gk_bf16 *out = (gk_bf16 *)carve_filled(&at, nq, 1, 5);
        float *lse = (float *)carve_filled(&at, nl, 0, 6), *dq = (float *)carve_filled(&at, nq, 0, 7);
        float *dk = (float *)carve_filled(&at, nk, 0, 8);
        gk_bf16 *dv = (gk_bf16 *)carve_filled(&at, nk, 1, 9);
        void *work = carve_filled(&at, 2 * nl, 0, 10);
        fwd_ms = gk_check_median_ms([&] {
            GK_CU(gk_cu_attention_tc_fwd(out, lse, q, k, v, B, T, H, KV, D, 0));
        });
        bwd_ms = gk_check_median_ms([&] {
            GK_CU(gk_cu_attention_tc_bwd(dq, dk, dv, KV * D, dout, out, lse, q, k, v, B, T, H, KV, D,
                                         work, 0));
        });
    }
    {
        char *at = region;
        float *q = (float *)carve_filled(&at, nq, 0, 1), *k = (float *)carve_filled(&at, nk, 0, 2);
        float *v = (float *)carve_filled(&at, nk, 0, 3), *dout = (float *)carve_filled(&at, nq, 0, 4);
        float *out = (float *)carve_filled(&at, nq, 0, 5), *lse = (float *)carve_filled(&at, nl, 0, 6);
        float *dq = (float *)carve_filled(&at, nq, 0, 7), *dk = (float *)carve_filled(&at, nk, 0, 8);
        float *dv = (float *)carve_filled(&at, nk, 0, 9);
        void *work = carve_filled(&at, nl, 0, 10);
        fwd32_ms = gk_check_median_ms([&] {
            GK_CU(gk_cu_attention_fwd(out, lse, q, k, v, B, T, H, KV, D, 0));
        });
        bwd32_ms = gk_check_median_ms([&] {
            GK_CU(gk_cu_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KV, D, work,
                                      0));
        });
    }
    printf("# attention_tc fwd %.3f ms %.0f TFLOP/s, bwd %.3f ms %.0f TFLOP/s (B %d T %d H %d "
           "KV %d D %d, median of 9)\n",
           fwd_ms, flop / fwd_ms * 1e-9, bwd_ms, 2.5 * flop / bwd_ms * 1e-9, B, T, H, KV, D);
    printf("# attention (fp32) fwd %.3f ms %.1f TFLOP/s, bwd %.3f ms %.1f TFLOP/s: "
           "tensor cores %.1fx fwd, %.1fx bwd\n",
           fwd32_ms, flop / fwd32_ms * 1e-9, bwd32_ms, 2.5 * flop / bwd32_ms * 1e-9,
           fwd32_ms / fwd_ms, bwd32_ms / bwd_ms);
}

void gk_check_attention_tc(gk_cu_arena *arena)
{
    static const struct {
        int B, T, H, KV, D;
    } shapes[] = {{1, 3, 2, 1, 64},
                  {2, 77, 4, 2, 64},
                  {1, 300, 4, 4, 32},
                  {2, 1024, 8, 4, 64},
                  {1, 300, 6, 2, 128}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_shape(arena, shapes[s].B, shapes[s].T, shapes[s].H, shapes[s].KV, shapes[s].D);
    GK_OK(gk_cu_attention_tc_fwd(NULL, NULL, NULL, NULL, NULL, 1, 8, 2, 1, 48, 0) ==
                  cudaErrorInvalidValue &&
              gk_cu_attention_tc_bwd(NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, 1, 8,
                                     2, 1, 48, NULL, 0) == cudaErrorInvalidValue,
          "attention_tc refuses D 48 with cudaErrorInvalidValue");
    time_baseline(arena);
}
