/* vec: the row and vector access helpers shared by the memory-bound kernels
 * of kernels/ (elementwise.cu, residual.cu): VEC-wide loads and stores of
 * fp32 and bf16 (one 16- or 8-byte access for VEC 4), the alignment tests
 * that choose them, and the row layout of the one-warp-group-per-row kernels
 * (row_shape) with its fixed shuffle sum. Device code, for .cu files only;
 * everything is static or a template, so each file gets its own copy. */
#ifndef GK_VEC_H
#define GK_VEC_H

#include <stdint.h>
#include <string.h>

#include <cuda_bf16.h>

#include "gemm.h" /* gk_bf16 */

/* ---- 16-byte accesses ------------------------------------------------------ */

template <int VEC> struct fvec;

/* VEC values of r rounded to bf16 (nearest, ties to even) at p; for VEC 4 one
 * 8-byte store when WIDE (p 8-byte aligned), else scalar stores. */
template <int VEC>
__device__ __forceinline__ void bstore(gk_bf16 *p, const fvec<VEC> &r, bool wide = true)
{
    if constexpr (VEC == 4) {
        if (!wide) {
#pragma unroll
            for (int e = 0; e < VEC; e++)
                p[e] = __float2bfloat16_rn(r.v[e]);
            return;
        }
        __nv_bfloat162 lo = __floats2bfloat162_rn(r.v[0], r.v[1]);
        __nv_bfloat162 hi = __floats2bfloat162_rn(r.v[2], r.v[3]);
        uint2 u;
        memcpy(&u.x, &lo, 4);
        memcpy(&u.y, &hi, 4);
        *(uint2 *)p = u;
    } else {
        (void)wide;
#pragma unroll
        for (int e = 0; e < VEC; e++)
            p[e] = __float2bfloat16_rn(r.v[e]);
    }
}

/* The kernels of the training step are memory-bound: their time is the bytes
 * they move over HBM bandwidth, approached only with wide accesses and many of
 * them in flight. Most move VEC floats per access: 4, one 16-byte load or
 * store (the widest a thread issues), where the widths allow it and every
 * pointer is 16-byte aligned, else 1. The model's arrays come from an arena
 * aligned to 256 bytes at the baseline's widths, so the VEC 1 variants serve
 * odd widths and odd offsets, as in the checks. The element-wise kernels run
 * one vector per thread at the model's sizes (gk_cu_grid's cap of 2^20 blocks
 * is not reached), so each thread issues its loads at once and the grid-stride
 * loop only covers larger arrays. */
template <int VEC> struct fvec {
    float v[VEC];
};

/* VEC floats from p; for VEC 4, one 16-byte load when WIDE, else four scalar
 * loads of the same values (p not 16-byte aligned). */
template <int VEC> __device__ __forceinline__ fvec<VEC> vload(const float *p, bool wide = true)
{
    fvec<VEC> r;
    if constexpr (VEC == 4) {
        if (wide) {
            float4 t = *(const float4 *)p;
            r.v[0] = t.x, r.v[1] = t.y, r.v[2] = t.z, r.v[3] = t.w;
            return r;
        }
    }
#pragma unroll
    for (int e = 0; e < VEC; e++)
        r.v[e] = p[e];
    return r;
}

/* The same from bf16, widened to float (exactly): the kernels that read a
 * product's bf16 output do the fp32 kernel's arithmetic on the widened values.
 * For VEC 4, one 8-byte load when WIDE (p 8-byte aligned). */
template <int VEC>
__device__ __forceinline__ fvec<VEC> vload(const gk_bf16 *p, bool wide = true)
{
    fvec<VEC> r;
    if constexpr (VEC == 4) {
        if (wide) {
            uint2 u = *(const uint2 *)p;
            __nv_bfloat162 lo, hi;
            memcpy(&lo, &u.x, 4);
            memcpy(&hi, &u.y, 4);
            float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
            r.v[0] = a.x, r.v[1] = a.y, r.v[2] = b.x, r.v[3] = b.y;
            return r;
        }
    }
#pragma unroll
    for (int e = 0; e < VEC; e++)
        r.v[e] = __bfloat162float(p[e]);
    return r;
}

template <int VEC>
__device__ __forceinline__ void vstore(float *p, const fvec<VEC> &r, bool wide = true)
{
    if constexpr (VEC == 4) {
        if (wide) {
            *(float4 *)p = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
            return;
        }
    }
#pragma unroll
    for (int e = 0; e < VEC; e++)
        p[e] = r.v[e];
}

static bool al16(const void *p) { return (uintptr_t)p % 16 == 0; }

/* Whether 4 values of p's type can be moved at once (NULL can): 16 bytes of
 * fp32, 8 of bf16. */
static bool al4(const float *p) { return al16(p); }
static bool al4(const gk_bf16 *p) { return (uintptr_t)p % 8 == 0; }

/* VEC 4 for rows of WIDTH values (a vector never straddles two), every array
 * aligned for it. */
template <typename... T> static bool vec4_ok(size_t width, const T *...p)
{
    return width % 4 == 0 && (al4(p) && ...);
}

/* ---- rows ------------------------------------------------------------------ */

/* A group of G lanes of one warp per row (G a power of two, 4 to 32), several
 * rows per block. The rows are short (d_model 512, and 64 for the
 * per-head QK norm on [N H, 64]): a block per row left three quarters of its
 * threads idle on a 64-wide row and paid three __syncthreads per row, while a
 * lane group keeps its whole row in registers (PER slots of VEC floats per
 * lane, read once with 16-byte loads), sums it by a shuffle tree without
 * shared memory or barriers, and writes it back: x is read once. Slot k of
 * lane l holds channels (k G + l) VEC to (k G + l) VEC + VEC - 1, so a
 * group's slot k is one contiguous run, coalesced. PER 0 is the fallback for
 * rows of more than 8 slots a lane (wider than 1024 at VEC 4): a loop over
 * the row that reads it again after the sum, mostly from cache.
 *
 * The sums stay in double, as the CPU's do: in float, a 512-term sum of
 * squares rounds off by ~sqrt(512) 2^-24 ~ 1.4e-6 relative, past the check's
 * 1e-6 bound on y and rstd (and the backward's sum of dy y cancels, so its
 * float rounding would be relatively larger still); a double add per element
 * costs nothing next to the memory traffic. The sum's shape (each lane's
 * slots in order, then the xor tree over the group's lanes) depends on C
 * alone: VEC, G and PER are functions of C (row_shape), and WIDE (all
 * pointers 16-byte aligned) only picks 16-byte or scalar loads of the same
 * slots. The butterfly adds the same two values in both lanes of each pair,
 * so every lane of the group ends with the same sum. */
struct row_shape {
    int vec, g, per;
};

static row_shape row_shape_of(int C)
{
    row_shape rs;
    rs.vec = C % 4 == 0 ? 4 : 1;
    int slots = C / rs.vec;
    rs.g = 4, rs.per = 1;
    while (rs.g < 32 && rs.g < slots)
        rs.g *= 2;
    while (rs.per <= 8 && rs.per * 32 < slots)
        rs.per *= 2;
    if (rs.per > 8)
        rs.per = 0;
    return rs;
}

/* The sum of v over the G lanes of this lane's group, in every lane. */
template <int G> __device__ __forceinline__ double group_sum(double v)
{
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* One element of the RMSNorm backward added into d: d + r (g - y m), with m
 * the row's mean of g y. g - y m cancels where g is nearly parallel to y:
 * round-to-nearest intrinsics, no FMA (the CPU build has none). */
__device__ __forceinline__ float rms_bwd_elem(float d, float g, float y, float m, float r)
{
    return __fadd_rn(d, __fmul_rn(r, __fsub_rn(g, __fmul_rn(y, m))));
}

/* The RMSNorm backward of one row, in the registers of its group of lanes:
 * loads this lane's slots of dy (g) and y, and of dx into d (zeros when dx
 * is NULL), sums g y over the row in double by the group's tree, and leaves
 * d = rms_bwd_elem(d, g, y, m, r) in the slots inside the row (live, c < C).
 * MORE(k, on, c) runs beside each slot's loads, so a caller's own loads of
 * the row are in flight with them, before the shuffles. Every lane of the
 * warp must call it (the shuffles); r is the row's 1/rms (0 when !live). */
template <int VEC, int G, int PER, typename DY, typename Y, typename F>
__device__ __forceinline__ void rms_bwd_row(fvec<VEC> (&d)[PER], const DY *dy, const Y *y,
                                            const float *dx, float r, bool live, size_t off,
                                            int C, int lane, bool wide, F &&more)
{
    fvec<VEC> g[PER], yv[PER];
    double acc = 0;
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int c = (k * G + lane) * VEC;
        bool on = live && c < C;
        g[k] = on ? vload<VEC>(dy + off + c, wide) : fvec<VEC>{};
        yv[k] = on ? vload<VEC>(y + off + c, wide) : fvec<VEC>{};
        d[k] = on && dx ? vload<VEC>(dx + off + c, wide) : fvec<VEC>{};
        more(k, on, c);
#pragma unroll
        for (int e = 0; e < VEC; e++)
            acc += (double)g[k].v[e] * yv[k].v[e];
    }
    acc = group_sum<G>(acc);
    float m = (float)(acc / C);
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int c = (k * G + lane) * VEC;
        if (live && c < C) {
#pragma unroll
            for (int e = 0; e < VEC; e++)
                d[k].v[e] = rms_bwd_elem(d[k].v[e], g[k].v[e], yv[k].v[e], m, r);
        }
    }
}

/* The kernel instance for a row_shape: K<VEC, G, PER>::fn names each one. */
template <template <int, int, int> class K, int VEC> static auto pick_rows_vec(row_shape rs)
{
    switch (rs.per) {
    case 0:
        return K<VEC, 32, 0>::fn;
    case 2:
        return K<VEC, 32, 2>::fn;
    case 4:
        return K<VEC, 32, 4>::fn;
    case 8:
        return K<VEC, 32, 8>::fn;
    }
    switch (rs.g) {
    case 4:
        return K<VEC, 4, 1>::fn;
    case 8:
        return K<VEC, 8, 1>::fn;
    case 16:
        return K<VEC, 16, 1>::fn;
    }
    return K<VEC, 32, 1>::fn;
}

template <template <int, int, int> class K> static auto pick_rows(row_shape rs)
{
    return rs.vec == 4 ? pick_rows_vec<K, 4>(rs) : pick_rows_vec<K, 1>(rs);
}

#endif
