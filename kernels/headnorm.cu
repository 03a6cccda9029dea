/* headnorm: the kernels of headnorm.h. G = D/4 lanes of a warp hold one head
 * row, four consecutive channels a lane (one 16-byte load of fp32 x, or one
 * 8-byte load of bf16 x widened to float, exactly: the _bx forms are the same
 * kernels templated on x's type, and from there the same arithmetic), so the
 * row's sum of squares is gk_cu_rmsnorm_fwd's at width D: each lane's four
 * squares in order, then the xor tree over G lanes. Rotary pairs channel j with
 * j + rope_dims/2; with rope_dims a multiple of 8 both halves start on a
 * lane boundary and the partner of a lane's four channels is the same four
 * slots of lane +- rope_dims/8, fetched by a shuffle. */
#include "cuda_util.h"
#include "elementwise.h" /* gk_cu_column_sums */
#include "headnorm.h"
#include "vec.h" /* group_sum */

#define THREADS 256      /* a block: THREADS / G head rows */

int gk_cu_head_prep_ok(int D, int rope_dims)
{
    return (D == 32 || D == 64 || D == 128) && rope_dims >= 8 && rope_dims <= D &&
           rope_dims % 8 == 0;
}

/* One head row's place: its lane, its row (live: inside the tensor), the
 * row's token, position t and head h. */
template <int G> struct head_row {
    int lane, t, h;
    size_t row, tok;
    bool live;
    __device__ head_row(size_t rows, int T, int H)
    {
        lane = threadIdx.x & (G - 1);
        row = ((size_t)blockIdx.x * THREADS + threadIdx.x) / G;
        live = row < rows;
        size_t r = live ? row : 0;
        tok = r / H, h = (int)(r % H), t = (int)(tok % T);
    }
    /* The offset of this lane's four channels in a tensor whose tokens are
     * LD elements apart. */
    __device__ size_t at(size_t ld) const { return tok * ld + (size_t)h * (4 * G) + lane * 4; }
};

/* The four values of the rotary partner lane (this lane's own beyond the
 * rotated channels). Every lane of the warp calls it. */
template <int G> __device__ __forceinline__ float4 partner(float4 v, int lane, int half)
{
    int c = lane * 4, src = c < half ? lane + half / 4 : c < 2 * half ? lane - half / 4 : lane;
    float4 p;
    p.x = __shfl_sync(0xffffffffu, v.x, src, G);
    p.y = __shfl_sync(0xffffffffu, v.y, src, G);
    p.z = __shfl_sync(0xffffffffu, v.z, src, G);
    p.w = __shfl_sync(0xffffffffu, v.w, src, G);
    return p;
}

static __device__ __forceinline__ float &at(float4 &v, int e)
{
    return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w;
}

/* Rotary of the lane's four values v (its partner's p) at position t, with
 * gk_rope_fwd_f32's expressions: the low half gets x1 c + x2 s, the high half
 * -x1 s + x2 c; or, TRANSPOSED, gk_rope_bwd_f32's: d1 c - d2 s (low) and
 * d1 s + d2 c (high). Channels past rope_dims pass through. */
template <bool TRANSPOSED>
static __device__ __forceinline__ float4 rope4(float4 v, float4 p, int c, int t, int half,
                                               const float *cos_t, const float *sin_t)
{
    if (c >= 2 * half)
        return v;
    size_t tj = (size_t)t * half + (c < half ? c : c - half);
    float4 cs = *(const float4 *)(cos_t + tj), sn = *(const float4 *)(sin_t + tj), y;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float co = at(cs, e), si = at(sn, e), own = at(v, e), other = at(p, e);
        if (c < half)
            at(y, e) = TRANSPOSED ? __fsub_rn(__fmul_rn(own, co), __fmul_rn(other, si))
                                  : __fadd_rn(__fmul_rn(own, co), __fmul_rn(other, si));
        else
            at(y, e) = __fadd_rn(__fmul_rn(TRANSPOSED ? other : -other, si), __fmul_rn(own, co));
    }
    return y;
}

/* A lane's four consecutive values at p as floats: one 16-byte load of fp32
 * (p 16-byte aligned), or one 8-byte load of bf16 (p 8-byte aligned) widened
 * exactly. */
static __device__ __forceinline__ float4 load4(const float *p) { return *(const float4 *)p; }
static __device__ __forceinline__ float4 load4(const gk_bf16 *p)
{
    uint2 u = *(const uint2 *)p;
    __nv_bfloat162 lo, hi;
    memcpy(&lo, &u.x, 4);
    memcpy(&hi, &u.y, 4);
    float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
    return make_float4(a.x, a.y, b.x, b.y);
}

static __device__ __forceinline__ void store_bf16x4(gk_bf16 *p, float4 v)
{
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 u;
    u.x = *(unsigned *)&lo, u.y = *(unsigned *)&hi;
    *(uint2 *)p = u;
}

/* The normalized row of the forward: the lane's x times the row's 1/rms. */
static __device__ __forceinline__ float4 scaled(float4 x, float r)
{
    return make_float4(x.x * r, x.y * r, x.z * r, x.w * r);
}

template <int G, typename X>
__global__ void __launch_bounds__(THREADS)
    head_prep_fwd_k(gk_bf16 *y, float *rstd, const X *x, int ldx, const float *cos_t,
                    const float *sin_t, const float *gain, size_t rows, int T, int H, int half,
                    double eps)
{
    constexpr int D = 4 * G;
    head_row<G> w(rows, T, H);
    int c = w.lane * 4;
    float4 v = w.live ? load4(x + w.at(ldx)) : make_float4(0, 0, 0, 0);
    double ss = 0;
#pragma unroll
    for (int e = 0; e < 4; e++)
        ss += (double)at(v, e) * at(v, e);
    ss = group_sum<G>(ss);
    float r = (float)(1 / sqrt(ss / D + eps));
    float4 n = scaled(v, r);
    float4 q = rope4<false>(n, partner<G>(n, w.lane, half), c, w.t, half, cos_t, sin_t);
    if (gain) {
        float s = gain[w.h];
#pragma unroll
        for (int e = 0; e < 4; e++)
            at(q, e) = __fmul_rn(s, at(q, e));
    }
    if (w.live) {
        store_bf16x4(y + w.at((size_t)H * D), q);
        if (rstd && w.lane == 0)
            rstd[w.row] = r;
    }
}

/* part[row] = the row's sum of dy times the rotated row (the gain's input),
 * in double, when GAIN. */
template <int G, typename X>
__global__ void __launch_bounds__(THREADS)
    head_prep_bwd_k(gk_bf16 *dxb, int ldd, double *part, const float *dy, const X *x,
                    int ldx, const float *rstd, const float *cos_t, const float *sin_t,
                    const float *gain, size_t rows, int T, int H, int half)
{
    constexpr int D = 4 * G;
    head_row<G> w(rows, T, H);
    int c = w.lane * 4;
    float4 z = make_float4(0, 0, 0, 0);
    float4 g = w.live ? load4(dy + w.at((size_t)H * D)) : z;
    float4 xv = w.live ? load4(x + w.at(ldx)) : z;
    float r = w.live ? rstd[w.row] : 0;
    float4 n = scaled(xv, r);
    if (gain) {
        float4 q = rope4<false>(n, partner<G>(n, w.lane, half), c, w.t, half, cos_t, sin_t);
        double acc = 0;
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc += (double)at(q, e) * at(g, e);
        acc = group_sum<G>(acc);
        float s = gain[w.h];
#pragma unroll
        for (int e = 0; e < 4; e++)
            at(g, e) = __fmul_rn(s, at(g, e));
        if (w.live && w.lane == 0)
            part[w.row] = acc;
    }
    g = rope4<true>(g, partner<G>(g, w.lane, half), c, w.t, half, cos_t, sin_t);
    /* RMSNorm's backward: r (g - n m), m = mean of g n; no FMA where it cancels */
    double acc = 0;
#pragma unroll
    for (int e = 0; e < 4; e++)
        acc += (double)at(g, e) * at(n, e);
    acc = group_sum<G>(acc);
    float m = (float)(acc / D);
    float4 d;
#pragma unroll
    for (int e = 0; e < 4; e++)
        at(d, e) = __fmul_rn(r, __fsub_rn(at(g, e), __fmul_rn(at(n, e), m)));
    if (w.live)
        store_bf16x4(dxb + w.at(ldd), d);
}

static unsigned grid_of(size_t rows, int D)
{
    return (unsigned)((rows * (D / 4) + THREADS - 1) / THREADS);
}

/* Whether the shape takes the kernels: D and rope_dims as gk_cu_head_prep_ok
 * says, and a token stride LD that is a multiple of 4, so that each lane's
 * four values are aligned for one load or store (16 bytes of fp32, 8 of bf16)
 * wherever the base pointer is. The backward's LDD must be one too. */
static bool shape_ok(int D, int rope_dims, int ld)
{
    return gk_cu_head_prep_ok(D, rope_dims) && ld % 4 == 0;
}

template <typename X>
static cudaError_t fwd_launch(gk_bf16 *y, float *rstd, const X *x, int ldx, const float *cos,
                              const float *sin, const float *gain, int B, int T, int H, int D,
                              int rope_dims, double eps, cudaStream_t stream)
{
    size_t rows = (size_t)B * T * H;
    if (!shape_ok(D, rope_dims, ldx))
        return cudaErrorInvalidValue;
    if (!rows)
        return cudaGetLastError();
    unsigned grid = grid_of(rows, D);
    int half = rope_dims / 2;
    auto k = D == 32   ? head_prep_fwd_k<8, X>
             : D == 64 ? head_prep_fwd_k<16, X>
                       : head_prep_fwd_k<32, X>;
    k<<<grid, THREADS, 0, stream>>>(y, rstd, x, ldx, cos, sin, gain, rows, T, H, half, eps);
    return cudaGetLastError();
}

template <typename X>
static cudaError_t bwd_launch(gk_bf16 *dxb, int ldd, float *dgain, const float *dy, const X *x,
                              int ldx, const float *rstd, const float *cos, const float *sin,
                              const float *gain, int B, int T, int H, int D, int rope_dims,
                              void *work, cudaStream_t stream)
{
    size_t rows = (size_t)B * T * H;
    if (!shape_ok(D, rope_dims, ldx) || ldd % 4 || !gain != !dgain)
        return cudaErrorInvalidValue;
    if (!rows)
        return cudaGetLastError();
    unsigned grid = grid_of(rows, D);
    int half = rope_dims / 2;
    double *part = (double *)work;
    auto k = D == 32   ? head_prep_bwd_k<8, X>
             : D == 64 ? head_prep_bwd_k<16, X>
                       : head_prep_bwd_k<32, X>;
    k<<<grid, THREADS, 0, stream>>>(dxb, ldd, part, dy, x, ldx, rstd, cos, sin, gain, rows, T, H,
                                    half);
    if (gain) /* part is [B T, H]: the gain's gradient is its column sums */
        return gk_cu_column_sums(dgain, part, B * T, H, stream);
    return cudaGetLastError();
}

size_t gk_cu_head_prep_bwd_workspace(int B, int T, int H)
{
    return (size_t)B * T * H * sizeof(double);
}

cudaError_t gk_cu_head_prep_fwd(gk_bf16 *y, float *rstd, const float *x, int ldx, const float *cos,
                                const float *sin, const float *gain, int B, int T, int H, int D,
                                int rope_dims, double eps, cudaStream_t stream)
{
    return fwd_launch(y, rstd, x, ldx, cos, sin, gain, B, T, H, D, rope_dims, eps, stream);
}

cudaError_t gk_cu_head_prep_fwd_bx(gk_bf16 *y, float *rstd, const gk_bf16 *x, int ldx,
                                   const float *cos, const float *sin, const float *gain, int B,
                                   int T, int H, int D, int rope_dims, double eps,
                                   cudaStream_t stream)
{
    return fwd_launch(y, rstd, x, ldx, cos, sin, gain, B, T, H, D, rope_dims, eps, stream);
}

cudaError_t gk_cu_head_prep_bwd(gk_bf16 *dxb, int ldd, float *dgain, const float *dy,
                                const float *x, int ldx, const float *rstd, const float *cos,
                                const float *sin, const float *gain, int B, int T, int H, int D,
                                int rope_dims, void *work, cudaStream_t stream)
{
    return bwd_launch(dxb, ldd, dgain, dy, x, ldx, rstd, cos, sin, gain, B, T, H, D, rope_dims,
                      work, stream);
}

cudaError_t gk_cu_head_prep_bwd_bx(gk_bf16 *dxb, int ldd, float *dgain, const float *dy,
                                   const gk_bf16 *x, int ldx, const float *rstd, const float *cos,
                                   const float *sin, const float *gain, int B, int T, int H,
                                   int D, int rope_dims, void *work, cudaStream_t stream)
{
    return bwd_launch(dxb, ldd, dgain, dy, x, ldx, rstd, cos, sin, gain, B, T, H, D, rope_dims,
                      work, stream);
}
