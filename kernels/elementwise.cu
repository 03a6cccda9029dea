/* elementwise: the CUDA kernels of kernels/elementwise.h, the layers between
 * the matrix products, each a plain __global__ and a host launcher with the
 * contract of its CPU twin in lib/ops.h (Adam: lib/optim.c's adam_tensor).
 *
 * Two rules shape every kernel here.
 * - Deterministic results: no floating-point atomics anywhere. A value that
 *   sums many terms is summed either by one thread in a fixed order (the
 *   embedding backward, the row chunks of ds) or by a block-wide tree
 *   (block_sum) whose shape depends only on the block size, a constant of
 *   this file. The result is the same bits on every run and every GPU model.
 * - Close to the reference: the sums that the CPU does in double (RMSNorm's,
 *   the cross-entropy's sum of exponentials and losses, ds) are in double here
 *   too; where the CPU's float expression cancels (rotary, the RMSNorm and
 *   activation backwards, softcap's 1 - th^2, Adam), the same operations are
 *   spelled with round-to-nearest intrinsics so nvcc cannot fuse a*b+c into an
 *   FMA the CPU build does not do. The remaining differences are the CUDA
 *   math library's expf/tanhf/logf (within 2 ulp of glibc's) and the order of
 *   the double sums. */
#include "cuda_util.h"
#include "elementwise.h"
#include "vec.h"

#include <stdint.h>
#include <string.h>

#include <type_traits>

#include <cub/device/device_radix_sort.cuh>

/* Threads of a block, for the element-wise kernels and for the one-block-per-
 * row kernels. It is also the shape of every reduction tree (block_sum), so
 * changing it changes the last bits of the results (never their run-to-run
 * reproducibility). A multiple of 32. */
#define THREADS 256

struct op_sum {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct op_max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

/* Reduce v over the block: a shuffle tree within each warp, then warp 0
 * reduces the warps' results in the same tree, lanes past the last warp
 * padded with the identity ID. Every thread gets the result. sh holds 33
 * values (a warp's each, then the result); the final barrier lets the caller
 * reuse it. */
template <typename T, typename Op> __device__ T block_reduce(T v, T *sh, Op op, T id)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? sh[lane] : id;
        for (int o = 16; o > 0; o >>= 1)
            v = op(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0)
            sh[32] = v;
    }
    __syncthreads();
    v = sh[32];
    __syncthreads();
    return v;
}


/* ---- embedding ------------------------------------------------------------- */

__global__ void embed_fwd_k(float *y, const float *wte, const int *tokens, int N, int C)
{
    GK_GRID_STRIDE(i, (size_t)N * C)
    {
        size_t n = i / C, c = i % C;
        y[i] = wte[(size_t)tokens[n] * C + c];
    }
}

cudaError_t gk_cu_embed_fwd(float *y, const float *wte, const int *tokens, int N, int C,
                            cudaStream_t stream)
{
    embed_fwd_k<<<gk_cu_grid((size_t)N * C, THREADS), THREADS, 0, stream>>>(y, wte, tokens, N, C);
    return cudaGetLastError();
}

__global__ void iota_k(unsigned *v, int N)
{
    GK_GRID_STRIDE(i, (size_t)N)
    {
        v[i] = (unsigned)i;
    }
}

/* One block per sorted position; only the first position of each token's run
 * works. Its threads split the channels, and each thread adds the run's rows
 * in ascending row order (the sort is stable), the CPU's order: dwte comes
 * out bit-identical to gk_embed_bwd_f32's. A very frequent token makes one
 * long serial run; its block still reads dy coalesced across channels. */
__global__ void embed_bwd_k(float *dwte, const float *dy, const unsigned *keys,
                            const unsigned *rows, int N, int C)
{
    int i = blockIdx.x;
    unsigned tok = keys[i];
    if (i > 0 && keys[i - 1] == tok)
        return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = dwte[(size_t)tok * C + c];
        for (int k = i; k < N && keys[k] == tok; k++)
            acc += dy[(size_t)rows[k] * C + c];
        dwte[(size_t)tok * C + c] = acc;
    }
}

/* Bits the radix sort looks at: enough for vocab - 1. */
static int vocab_bits(int vocab)
{
    int b = 1;
    while (b < 31 && (1u << b) < (unsigned)vocab)
        b++;
    return b;
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* The workspace: sorted keys, row numbers before and after the sort, then
 * cub's own temporary storage. */
static size_t cub_sort_bytes(int N, int vocab)
{
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairs(NULL, bytes, (const unsigned *)NULL, (unsigned *)NULL,
                                    (const unsigned *)NULL, (unsigned *)NULL, N, 0,
                                    vocab_bits(vocab));
    return bytes;
}

size_t gk_cu_embed_bwd_workspace(int N, int vocab)
{
    return 3 * align256((size_t)N * sizeof(unsigned)) + cub_sort_bytes(N, vocab);
}

cudaError_t gk_cu_embed_bwd(float *dwte, const float *dy, const int *tokens, int N, int C,
                            int vocab, void *work, cudaStream_t stream)
{
    if (N <= 0)
        return cudaSuccess;
    size_t part = align256((size_t)N * sizeof(unsigned));
    char *w = (char *)work;
    unsigned *keys = (unsigned *)w, *rows_in = (unsigned *)(w + part),
             *rows = (unsigned *)(w + 2 * part);
    size_t tmp_bytes = cub_sort_bytes(N, vocab);
    iota_k<<<gk_cu_grid((size_t)N, THREADS), THREADS, 0, stream>>>(rows_in, N);
    /* Tokens are in 0..vocab-1, so reading them as unsigned sorts the same. */
    cudaError_t e = cub::DeviceRadixSort::SortPairs(
        w + 3 * part, tmp_bytes, (const unsigned *)tokens, keys, rows_in, rows, N, 0,
        vocab_bits(vocab), stream);
    if (e != cudaSuccess)
        return e;
    embed_bwd_k<<<N, THREADS, 0, stream>>>(dwte, dy, keys, rows, N, C);
    return cudaGetLastError();
}

/* ---- rmsnorm --------------------------------------------------------------- */

/* The forward's optional prologue (gk_cu_mix_rmsnorm): the row it normalizes
 * is first formed as xo = s1 x + s2 x2 per channel (x + s2 x2 when s1 is
 * NULL), stored into xo and kept in registers, so the residual update and
 * the norm after it read the row once; no_mix is the plain forward. The
 * roundings are resid_mix_k's and scale_add_k's (group 1): xo has their bits.
 * s1 and s2 [C] are tiny and stay in L1: scalar loads, no alignment asked. */
struct no_mix {};
template <typename X2> struct mix_in {
    float *xo;
    const float *s1, *s2;
    const X2 *x2;
};

/* Channels c..c+VEC-1 of the row at OFF as the norm sees them: the loaded x
 * as is, or mixed (and stored into xo). */
template <int VEC>
__device__ __forceinline__ fvec<VEC> mixed(no_mix, fvec<VEC> v, size_t, int, bool)
{
    return v;
}

template <int VEC, typename X2>
__device__ __forceinline__ fvec<VEC> mixed(const mix_in<X2> &m, fvec<VEC> v, size_t off, int c,
                                           bool wide)
{
    fvec<VEC> b = vload<VEC>(m.x2 + off + c, wide);
#pragma unroll
    for (int e = 0; e < VEC; e++) {
        float a = m.s1 ? __fmul_rn(m.s1[c + e], v.v[e]) : v.v[e];
        v.v[e] = __fadd_rn(a, __fmul_rn(m.s2[c + e], b.v[e]));
    }
    vstore<VEC>(m.xo + off + c, v, wide);
    return v;
}

/* Where the fallback (PER 0) reads the row again after the sum: x, or xo
 * once the prologue has stored it. */
__device__ __forceinline__ const float *mixed_row(no_mix, const float *xr, size_t)
{
    return xr;
}

template <typename X2>
__device__ __forceinline__ const float *mixed_row(const mix_in<X2> &m, const float *, size_t off)
{
    return m.xo + off;
}

/* No __restrict__: y may alias x, and xo may alias x. Each lane reads its
 * slots before it writes them and never touches another lane's. Groups past
 * the last row run with zeros, so every lane of a warp reaches the shuffles.
 * y may be NULL (yb alone wanted). */
template <int VEC, int G, int PER, typename M>
__global__ void __launch_bounds__(THREADS)
    rmsnorm_fwd_k(float *y, gk_bf16 *yb, float *rstd, const float *x, size_t N, int C, double eps,
                  bool wide, M mix)
{
    int lane = threadIdx.x & (G - 1);
    size_t row = ((size_t)blockIdx.x * THREADS + threadIdx.x) / G;
    bool live = row < N;
    size_t off = (live ? row : 0) * C;
    const float *xr = x + off;
    float *yr = y ? y + off : NULL;
    gk_bf16 *ybr = yb ? yb + off : NULL;
    double ss = 0;
    if constexpr (PER > 0) {
        fvec<VEC> v[PER];
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int c = (k * G + lane) * VEC;
            v[k] = live && c < C ? mixed<VEC>(mix, vload<VEC>(xr + c, wide), off, c, wide)
                                 : fvec<VEC>{};
#pragma unroll
            for (int e = 0; e < VEC; e++)
                ss += (double)v[k].v[e] * v[k].v[e];
        }
        ss = group_sum<G>(ss);
        float r = (float)(1 / sqrt(ss / C + eps));
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int c = (k * G + lane) * VEC;
            if (live && c < C) {
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[k].v[e] *= r;
                if (yr)
                    vstore<VEC>(yr + c, v[k], wide);
                if (ybr)
                    bstore<VEC>(ybr + c, v[k], wide);
            }
        }
        if (live && lane == 0 && rstd)
            rstd[row] = r;
    } else {
        for (int c = lane * VEC; live && c < C; c += G * VEC) {
            fvec<VEC> v = mixed<VEC>(mix, vload<VEC>(xr + c, wide), off, c, wide);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                ss += (double)v.v[e] * v.v[e];
        }
        ss = group_sum<G>(ss);
        float r = (float)(1 / sqrt(ss / C + eps));
        const float *src = mixed_row(mix, xr, off);
        for (int c = lane * VEC; live && c < C; c += G * VEC) {
            fvec<VEC> v = vload<VEC>(src + c, wide);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                v.v[e] *= r;
            if (yr)
                vstore<VEC>(yr + c, v, wide);
            if (ybr)
                bstore<VEC>(ybr + c, v, wide);
        }
        if (live && lane == 0 && rstd)
            rstd[row] = r;
    }
}

/* The same layout; dy and y (and dx, whose load need not wait for the sum)
 * are read once into registers. */
template <int VEC, int G, int PER>
__global__ void __launch_bounds__(THREADS)
    rmsnorm_bwd_k(float *dx, gk_bf16 *dxb, const float *dy, const float *y, const float *rstd,
                  size_t N, int C, bool wide)
{
    int lane = threadIdx.x & (G - 1);
    size_t row = ((size_t)blockIdx.x * THREADS + threadIdx.x) / G;
    bool live = row < N;
    size_t off = (live ? row : 0) * C;
    if constexpr (PER > 0) {
        fvec<VEC> d[PER];
        float r = live ? rstd[row] : 0;
        rms_bwd_row<VEC, G, PER>(d, dy, y, dxb ? NULL : dx, r, live, off, C, lane, wide,
                                 [](int, bool, int) {});
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int c = (k * G + lane) * VEC;
            if (live && c < C) {
                if (dxb)
                    bstore<VEC>(dxb + off + c, d[k], wide);
                else
                    vstore<VEC>(dx + off + c, d[k], wide);
            }
        }
    } else {
        double acc = 0;
        for (int c = lane * VEC; live && c < C; c += G * VEC) {
            fvec<VEC> g = vload<VEC>(dy + off + c, wide), yv = vload<VEC>(y + off + c, wide);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                acc += (double)g.v[e] * yv.v[e];
        }
        acc = group_sum<G>(acc);
        float m = (float)(acc / C), r = live ? rstd[row] : 0;
        for (int c = lane * VEC; live && c < C; c += G * VEC) {
            fvec<VEC> g = vload<VEC>(dy + off + c, wide), yv = vload<VEC>(y + off + c, wide);
            fvec<VEC> d = dxb ? fvec<VEC>{} : vload<VEC>(dx + off + c, wide);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                d.v[e] = rms_bwd_elem(d.v[e], g.v[e], yv.v[e], m, r);
            if (dxb)
                bstore<VEC>(dxb + off + c, d, wide);
            else
                vstore<VEC>(dx + off + c, d, wide);
        }
    }
}

/* The K of vec.h's pick_rows: K<VEC, G, PER>::fn names each instance (the
 * forward's for each prologue M). */
template <typename M> struct rms_fwd {
    template <int VEC, int G, int PER> struct k {
        static constexpr auto fn = &rmsnorm_fwd_k<VEC, G, PER, M>;
    };
};
template <int VEC, int G, int PER> struct rms_bwd {
    static constexpr auto fn = &rmsnorm_bwd_k<VEC, G, PER>;
};

static unsigned rows_grid(size_t N, row_shape rs)
{
    size_t per_block = THREADS / rs.g;
    return (unsigned)((N + per_block - 1) / per_block);
}

/* The forward with prologue MIX; WIDE when every row array is aligned for
 * VEC 4's wide accesses. */
template <typename M>
static cudaError_t rmsnorm_fwd_launch(float *y, gk_bf16 *yb, float *rstd, const float *x, int N,
                                      int C, double eps, bool wide, M mix, cudaStream_t stream)
{
    if (N > 0) {
        row_shape rs = row_shape_of(C);
        pick_rows<rms_fwd<M>::template k>(rs)<<<rows_grid((size_t)N, rs), THREADS, 0, stream>>>(
            y, yb, rstd, x, (size_t)N, C, eps, wide, mix);
    }
    return cudaGetLastError();
}

cudaError_t gk_cu_rmsnorm_fwd(float *y, gk_bf16 *yb, float *rstd, const float *x, int N,
                              int C, double eps, cudaStream_t stream)
{
    return rmsnorm_fwd_launch(y, yb, rstd, x, N, C, eps, al4(y) && al4(x) && al4(yb), no_mix{},
                              stream);
}

template <typename X2>
static cudaError_t mix_rmsnorm_launch(float *xo, float *y, gk_bf16 *yb, float *rstd,
                                      const float *x1, const float *s1, const X2 *x2,
                                      const float *s2, int N, int C, double eps,
                                      cudaStream_t stream)
{
    bool wide = al4(xo) && al4(y) && al4(yb) && al4(x1) && al4(x2);
    return rmsnorm_fwd_launch(y, yb, rstd, x1, N, C, eps, wide, mix_in<X2>{xo, s1, s2, x2},
                              stream);
}

cudaError_t gk_cu_mix_rmsnorm(float *xo, float *y, gk_bf16 *yb, float *rstd, const float *x1,
                              const float *s1, const float *x2, const float *s2, int N, int C,
                              double eps, cudaStream_t stream)
{
    return mix_rmsnorm_launch(xo, y, yb, rstd, x1, s1, x2, s2, N, C, eps, stream);
}

cudaError_t gk_cu_mix_rmsnorm_bx(float *xo, float *y, gk_bf16 *yb, float *rstd,
                                 const float *x1, const float *s1, const gk_bf16 *x2,
                                 const float *s2, int N, int C, double eps, cudaStream_t stream)
{
    return mix_rmsnorm_launch(xo, y, yb, rstd, x1, s1, x2, s2, N, C, eps, stream);
}

cudaError_t gk_cu_rmsnorm_bwd(float *dx, gk_bf16 *dxb, const float *dy, const float *y,
                              const float *rstd, int N, int C, cudaStream_t stream)
{
    if (N > 0) {
        row_shape rs = row_shape_of(C);
        bool wide = al16(dxb ? y : dx) && al16(dy) && al16(y) && (uintptr_t)dxb % 8 == 0;
        pick_rows<rms_bwd>(rs)<<<rows_grid((size_t)N, rs), THREADS, 0, stream>>>(
            dx, dxb, dy, y, rstd, (size_t)N, C, wide);
    }
    return cudaGetLastError();
}

/* ---- rotary ---------------------------------------------------------------- */

/* Work items per head row: one per VEC rotated pairs (i..i+VEC-1 with
 * i+half..), then one per VEC pass-through channels. VEC 4 needs half and
 * D - rope_dims multiples of 4 (rope_dims % 8 == 0, D % 4 == 0) and 16-byte
 * aligned arrays, the tables included. A thread owns all the channels of its
 * item, so y may alias x with no thread reading another's output. The
 * arithmetic is the reference's per element, unfused, so the result is the
 * same bits whatever VEC. */
template <int VEC>
__global__ void rope_fwd_k(float *y, const float *x, const float *cos_t, const float *sin_t,
                           size_t rows, int T, int H, int D, int rope_dims)
{
    int half = rope_dims / 2, per = (half + D - rope_dims) / VEC;
    GK_GRID_STRIDE(i, rows * per)
    {
        size_t row = i / per;
        int j = (int)(i % per) * VEC;
        const float *xr = x + row * D;
        float *yr = y + row * D;
        if (j < half) {
            size_t tj = (size_t)(row / H % T) * half + j;
            fvec<VEC> c = vload<VEC>(cos_t + tj), s = vload<VEC>(sin_t + tj);
            fvec<VEC> x1 = vload<VEC>(xr + j), x2 = vload<VEC>(xr + j + half), y1, y2;
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                y1.v[e] = __fadd_rn(__fmul_rn(x1.v[e], c.v[e]), __fmul_rn(x2.v[e], s.v[e]));
                y2.v[e] = __fadd_rn(__fmul_rn(-x1.v[e], s.v[e]), __fmul_rn(x2.v[e], c.v[e]));
            }
            vstore<VEC>(yr + j, y1);
            vstore<VEC>(yr + j + half, y2);
        } else {
            int d = rope_dims + (j - half);
            vstore<VEC>(yr + d, vload<VEC>(xr + d));
        }
    }
}

template <int VEC>
__global__ void rope_bwd_k(float *dx, const float *dy, const float *cos_t, const float *sin_t,
                           size_t rows, int T, int H, int D, int rope_dims, bool set)
{
    int half = rope_dims / 2, per = (half + D - rope_dims) / VEC;
    GK_GRID_STRIDE(i, rows * per)
    {
        size_t row = i / per;
        int j = (int)(i % per) * VEC;
        const float *dyr = dy + row * D;
        float *dxr = dx + row * D;
        if (j < half) {
            size_t tj = (size_t)(row / H % T) * half + j;
            fvec<VEC> c = vload<VEC>(cos_t + tj), s = vload<VEC>(sin_t + tj);
            fvec<VEC> d1 = vload<VEC>(dyr + j), d2 = vload<VEC>(dyr + j + half);
            fvec<VEC> a = set ? fvec<VEC>{} : vload<VEC>(dxr + j);
            fvec<VEC> b = set ? fvec<VEC>{} : vload<VEC>(dxr + j + half);
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                a.v[e] = __fadd_rn(a.v[e], __fsub_rn(__fmul_rn(d1.v[e], c.v[e]),
                                                     __fmul_rn(d2.v[e], s.v[e])));
                b.v[e] = __fadd_rn(b.v[e], __fadd_rn(__fmul_rn(d1.v[e], s.v[e]),
                                                     __fmul_rn(d2.v[e], c.v[e])));
            }
            vstore<VEC>(dxr + j, a);
            vstore<VEC>(dxr + j + half, b);
        } else {
            int d = rope_dims + (j - half);
            fvec<VEC> a = set ? fvec<VEC>{} : vload<VEC>(dxr + d), g = vload<VEC>(dyr + d);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                a.v[e] += g.v[e];
            vstore<VEC>(dxr + d, a);
        }
    }
}

static bool rope_vec4(int D, int rope_dims, const void *a, const void *b, const float *cos,
                      const float *sin)
{
    return rope_dims % 8 == 0 && D % 4 == 0 && al16(a) && al16(b) && al16(cos) && al16(sin);
}

cudaError_t gk_cu_rope_fwd(float *y, const float *x, const float *cos, const float *sin,
                           int B, int T, int H, int D, int rope_dims, cudaStream_t stream)
{
    size_t rows = (size_t)B * T * H, items = rows * (rope_dims / 2 + D - rope_dims);
    if (rope_vec4(D, rope_dims, y, x, cos, sin))
        rope_fwd_k<4><<<gk_cu_grid(items / 4, THREADS), THREADS, 0, stream>>>(y, x, cos, sin, rows,
                                                                              T, H, D, rope_dims);
    else
        rope_fwd_k<1><<<gk_cu_grid(items, THREADS), THREADS, 0, stream>>>(y, x, cos, sin, rows, T,
                                                                          H, D, rope_dims);
    return cudaGetLastError();
}

cudaError_t gk_cu_rope_bwd(float *dx, const float *dy, const float *cos, const float *sin,
                           int B, int T, int H, int D, int rope_dims, int set,
                           cudaStream_t stream)
{
    size_t rows = (size_t)B * T * H, items = rows * (rope_dims / 2 + D - rope_dims);
    if (rope_vec4(D, rope_dims, dx, dy, cos, sin))
        rope_bwd_k<4><<<gk_cu_grid(items / 4, THREADS), THREADS, 0, stream>>>(
            dx, dy, cos, sin, rows, T, H, D, rope_dims, set != 0);
    else
        rope_bwd_k<1><<<gk_cu_grid(items, THREADS), THREADS, 0, stream>>>(
            dx, dy, cos, sin, rows, T, H, D, rope_dims, set != 0);
    return cudaGetLastError();
}

/* ---- activations ----------------------------------------------------------- */

/* VEC consecutive outputs per thread: VEC 4 needs N F (relu^2, leaky^2:
 * flat arrays) or F (SwiGLU: gate and up halves of each row) a multiple of 4
 * and aligned arrays. The arithmetic is per element as before. X is x's type:
 * fp32, or the bf16 of a product's output, widened on load (the same
 * arithmetic on the widened values). */
template <int VEC, typename X>
__global__ void act_fwd_k(float *y, gk_bf16 *yb, const X *x, size_t N, int F, gk_act act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    GK_GRID_STRIDE(i, N * F / VEC)
    {
        size_t k = i * VEC;
        fvec<VEC> out;
        if (act == GK_OP_SWIGLU) {
            size_t n = k / F, f = k % F;
            fvec<VEC> g = vload<VEC>(x + n * 2 * F + f), up = vload<VEC>(x + n * 2 * F + F + f);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                out.v[e] = g.v[e] / (1 + expf(-g.v[e])) * up.v[e];
        } else {
            fvec<VEC> v = vload<VEC>(x + k);
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                float a = v.v[e] > 0 ? v.v[e] : act == GK_OP_LEAKY2 ? slope * v.v[e] : 0;
                out.v[e] = a * a;
            }
        }
        if (y)
            vstore<VEC>(y + k, out);
        if (yb)
            bstore<VEC>(yb + k, out);
    }
}

/* The products in the reference's left-to-right order, unfused: the SwiGLU
 * gate derivative 1 + g (1 - sig) crosses zero near g = -1.28, where a fused
 * rounding would be a large relative error. relu^2 writes back dx unchanged
 * where x <= 0 (the vector is stored whole): the same bits as skipping it. */
template <int VEC, typename X, typename DY>
__global__ void act_bwd_k(float *dx, gk_bf16 *dxb, const DY *dy, const X *x, size_t N, int F,
                          gk_act act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    GK_GRID_STRIDE(i, N * F / VEC)
    {
        size_t k = i * VEC;
        fvec<VEC> d = vload<VEC>(dy + k);
        if (act == GK_OP_SWIGLU) {
            size_t n = k / F, f = k % F, ig = n * 2 * F + f, iu = ig + F;
            fvec<VEC> g = vload<VEC>(x + ig), up = vload<VEC>(x + iu);
            fvec<VEC> dg = dxb ? fvec<VEC>{} : vload<VEC>(dx + ig);
            fvec<VEC> du = dxb ? fvec<VEC>{} : vload<VEC>(dx + iu);
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                float sig = 1 / (1 + expf(-g.v[e]));
                float dgate = __fmul_rn(__fmul_rn(__fmul_rn(d.v[e], up.v[e]), sig),
                                        __fadd_rn(1.0f, __fmul_rn(g.v[e], __fsub_rn(1.0f, sig))));
                dg.v[e] = __fadd_rn(dg.v[e], dgate);
                du.v[e] = __fadd_rn(du.v[e], __fmul_rn(__fmul_rn(d.v[e], g.v[e]), sig));
            }
            if (dxb) {
                bstore<VEC>(dxb + ig, dg);
                bstore<VEC>(dxb + iu, du);
            } else {
                vstore<VEC>(dx + ig, dg);
                vstore<VEC>(dx + iu, du);
            }
        } else {
            fvec<VEC> v = vload<VEC>(x + k), a = dxb ? fvec<VEC>{} : vload<VEC>(dx + k);
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                if (v.v[e] > 0)
                    a.v[e] = __fadd_rn(a.v[e], __fmul_rn(2 * v.v[e], d.v[e]));
                else if (act == GK_OP_LEAKY2)
                    a.v[e] = __fadd_rn(a.v[e], __fmul_rn(2 * slope * slope * v.v[e], d.v[e]));
            }
            if (dxb)
                bstore<VEC>(dxb + k, a);
            else
                vstore<VEC>(dx + k, a);
        }
    }
}

/* The width a 4-vector must not straddle: the flat array, or SwiGLU's row
 * halves. */
static size_t act_width(int N, int F, gk_act act)
{
    return act == GK_OP_SWIGLU ? (size_t)F : (size_t)N * F;
}

template <typename X>
static cudaError_t act_fwd_launch(float *y, gk_bf16 *yb, const X *x, int N, int F, gk_act act,
                                  cudaStream_t stream)
{
    size_t n = (size_t)N * F;
    if (vec4_ok(act_width(N, F, act), y, yb, x))
        act_fwd_k<4><<<gk_cu_grid(n / 4, THREADS), THREADS, 0, stream>>>(y, yb, x, (size_t)N, F,
                                                                         act);
    else
        act_fwd_k<1><<<gk_cu_grid(n, THREADS), THREADS, 0, stream>>>(y, yb, x, (size_t)N, F, act);
    return cudaGetLastError();
}

/* dx's alignment matters only when it is used (dxb NULL). DY is dy's type:
 * fp32, or the bf16 a product wrote, widened on load like X. */
template <typename X, typename DY>
static cudaError_t act_bwd_launch(float *dx, gk_bf16 *dxb, const DY *dy, const X *x, int N,
                                  int F, gk_act act, cudaStream_t stream)
{
    size_t n = (size_t)N * F;
    if (vec4_ok(act_width(N, F, act), dxb, dy, x) && (dxb || al4(dx)))
        act_bwd_k<4><<<gk_cu_grid(n / 4, THREADS), THREADS, 0, stream>>>(dx, dxb, dy, x,
                                                                         (size_t)N, F, act);
    else
        act_bwd_k<1><<<gk_cu_grid(n, THREADS), THREADS, 0, stream>>>(dx, dxb, dy, x, (size_t)N,
                                                                     F, act);
    return cudaGetLastError();
}

cudaError_t gk_cu_act_fwd(float *y, gk_bf16 *yb, const float *x, int N, int F, gk_act act,
                          cudaStream_t stream)
{
    return act_fwd_launch(y, yb, x, N, F, act, stream);
}

cudaError_t gk_cu_act_bwd(float *dx, gk_bf16 *dxb, const float *dy, const float *x, int N,
                          int F, gk_act act, cudaStream_t stream)
{
    return act_bwd_launch(dx, dxb, dy, x, N, F, act, stream);
}

cudaError_t gk_cu_act_fwd_bx(gk_bf16 *yb, const gk_bf16 *x, int N, int F, gk_act act,
                             cudaStream_t stream)
{
    if (!yb)
        return cudaErrorInvalidValue;
    return act_fwd_launch((float *)NULL, yb, x, N, F, act, stream);
}

cudaError_t gk_cu_act_bwd_bx(gk_bf16 *dxb, const float *dy, const gk_bf16 *x, int N, int F,
                             gk_act act, cudaStream_t stream)
{
    if (!dxb)
        return cudaErrorInvalidValue;
    return act_bwd_launch((float *)NULL, dxb, dy, x, N, F, act, stream);
}

cudaError_t gk_cu_act_bwd_bb(gk_bf16 *dxb, const gk_bf16 *dy, const gk_bf16 *x, int N, int F,
                             gk_act act, cudaStream_t stream)
{
    if (!dxb)
        return cudaErrorInvalidValue;
    return act_bwd_launch((float *)NULL, dxb, dy, x, N, F, act, stream);
}

/* ---- softcapped cross-entropy ---------------------------------------------- */

/* l = cap tanh(z / cap) rounded on its own, as the CPU's float l is: a
 * product fused into the subtraction l - lmax would shift every exponent. */
__device__ __forceinline__ float softcap(float z, float cap)
{
    return __fmul_rn(cap, tanhf(z / cap));
}

/* dz's element in its type: fp32 as is, bf16 rounded to nearest. */
__device__ __forceinline__ void put(float *p, float v) { *p = v; }
__device__ __forceinline__ void put(gk_bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* One block per row, the reference's three passes: the maximum of z, the sum
 * of exp(l - lmax) in double, the gradient. In fp32 (T float) l is stored
 * into dz on the way and read back by pass 3; dz may alias z: the target's
 * logit is read before the first barrier, and in passes 2 and 3 each thread
 * reads and writes only its own channels. In bf16, dz cannot hold l, so pass
 * 3 computes it again from z, the same function of the same value: the same
 * bits, and the gradient is the round-to-nearest of the fp32 one. */
template <typename T>
__global__ void softcap_ce_k(T *dz, double *losses, const float *z, const int *targets, int V,
                             float rcap, float gscale)
{
    __shared__ float shf[33];
    __shared__ double shd[33];
    size_t n = blockIdx.x;
    const float *zr = z + n * V;
    T *dr = dz ? dz + n * V : NULL;
    int tgt = targets[n];
    float zt = zr[tgt], zmax = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        zmax = fmaxf(zmax, zr[j]);
    zmax = block_reduce(zmax, shf, op_max(), -INFINITY);
    float lmax = softcap(zmax, rcap), lt = softcap(zt, rcap);
    double sum = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float l = softcap(zr[j], rcap);
        sum += expf(l - lmax);
        if constexpr (std::is_same_v<T, float>) {
            if (dr)
                dr[j] = l;
        }
    }
    sum = block_reduce(sum, shd, op_sum(), 0.0);
    double lse = lmax + log(sum); /* sum >= 1: the maximum's own term is 1 */
    if (threadIdx.x == 0)
        losses[n] = lse - lt;
    if (!dr)
        return;
    float rlse = (float)lse;
    /* 1 - th^2 cancels for large logits (th near +-1): unfused. */
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float l;
        if constexpr (std::is_same_v<T, float>)
            l = dr[j];
        else
            l = softcap(zr[j], rcap);
        float th = l / rcap, g = expf(l - rlse) - (j == tgt);
        put(dr + j, __fmul_rn(__fmul_rn(g, gscale), __fsub_rn(1.0f, __fmul_rn(th, th))));
    }
}

/* The mean of the row losses: each thread sums a fixed stride of rows in
 * order, then one fixed tree; a single block, so the order never varies. */
__global__ void mean_k(double *mean, const double *losses, int N)
{
    __shared__ double sh[33];
    double s = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x)
        s += losses[n];
    s = block_reduce(s, sh, op_sum(), 0.0);
    if (threadIdx.x == 0)
        *mean = s / N;
}

template <typename T>
static cudaError_t softcap_ce_launch(T *dz, double *losses, double *mean, const float *z,
                                     const int *targets, int N, int V, double cap, double dloss,
                                     cudaStream_t stream)
{
    if (N > 0)
        softcap_ce_k<<<N, THREADS, 0, stream>>>(dz, losses, z, targets, V, (float)cap,
                                                 (float)(dloss / N));
    if (mean)
        mean_k<<<1, 1024, 0, stream>>>(mean, losses, N);
    return cudaGetLastError();
}

cudaError_t gk_cu_softcap_ce(float *dz, double *losses, double *mean, const float *z,
                             const int *targets, int N, int V, double cap, double dloss,
                             cudaStream_t stream)
{
    return softcap_ce_launch(dz, losses, mean, z, targets, N, V, cap, dloss, stream);
}

cudaError_t gk_cu_softcap_ce_bf16(gk_bf16 *dzb, double *losses, double *mean, const float *z,
                                  const int *targets, int N, int V, double cap, double dloss,
                                  cudaStream_t stream)
{
    if (!dzb)
        return cudaErrorInvalidValue;
    return softcap_ce_launch(dzb, losses, mean, z, targets, N, V, cap, dloss, stream);
}

/* ---- scale by a vector ----------------------------------------------------- */

/* ds's partial sums: one per DS_ROWS rows and channel, each from DS_PHASES
 * threads (rows phase, phase + DS_PHASES, ... of the chunk, in order) whose
 * sums are then added in phase order. Constants, so the tree (and the bits of
 * ds) depend on N alone. 512 rows and 8 phases: ds_part_k<4> takes 64
 * registers a thread, so 4 blocks of 256 fit an SM, 528 on an H100, and the
 * baseline's [65536, 512] makes 128 chunks x 4 channel tiles = 512 blocks,
 * one wave, 64 rows a thread. (256 rows, two waves, timed the same for group
 * 1 and 4% slower for group 64, whose pass 2 sums twice the partials.) */
#define DS_ROWS 512
#define DS_PHASES 8

/* y += s[c / group] x, VEC channels per thread; VEC 4 needs C % 4 == 0 (a
 * vector never straddles two rows) and aligned y and x. s is tiny and stays
 * in L1. X is x's type: fp32, or bf16 widened on load. */
template <int VEC, typename X>
__global__ void scale_add_k(float *y, const X *x, const float *s, size_t nvec, int C, int group)
{
    GK_GRID_STRIDE(i, nvec)
    {
        int c = (int)(i % (size_t)(C / VEC)) * VEC;
        fvec<VEC> a = vload<VEC>(y + i * VEC), b = vload<VEC>(x + i * VEC);
#pragma unroll
        for (int e = 0; e < VEC; e++)
            a.v[e] = __fadd_rn(a.v[e], __fmul_rn(s[(c + e) / group], b.v[e]));
        vstore<VEC>(y + i * VEC, a);
    }
}

template <typename X>
static cudaError_t scale_add_launch(float *y, const X *x, const float *s, int N, int C,
                                    int group, cudaStream_t stream)
{
    size_t n = (size_t)N * C;
    if (vec4_ok((size_t)C, y, x))
        scale_add_k<4>
            <<<gk_cu_grid(n / 4, THREADS), THREADS, 0, stream>>>(y, x, s, n / 4, C, group);
    else
        scale_add_k<1><<<gk_cu_grid(n, THREADS), THREADS, 0, stream>>>(y, x, s, n, C, group);
    return cudaGetLastError();
}

cudaError_t gk_cu_scale_add_fwd(float *y, const float *x, const float *s, int N, int C,
                                int group, cudaStream_t stream)
{
    return scale_add_launch(y, x, s, N, C, group, stream);
}

cudaError_t gk_cu_scale_add_fwd_bx(float *y, const gk_bf16 *x, const float *s, int N, int C,
                                   int group, cudaStream_t stream)
{
    return scale_add_launch(y, x, s, N, C, group, stream);
}

/* x = mix[0] xin + mix[1] x0 per channel. model_impl.h forms resid_mix as
 * two scale-adds into zeros; 0 + a is a, so one pass gives the same
 * roundings without the clear and the second read-modify-write. */
__global__ void resid_mix_k(float *x, const float *xin, const float *x0, const float *mix,
                            size_t n, int C)
{
    GK_GRID_STRIDE(i, n)
    {
        int c = (int)(i % (size_t)C);
        x[i] = __fadd_rn(__fmul_rn(mix[c], xin[i]), __fmul_rn(mix[C + c], x0[i]));
    }
}

cudaError_t gk_cu_resid_mix(float *x, const float *xin, const float *x0, const float *mix,
                            int N, int C, cudaStream_t stream)
{
    size_t n = (size_t)N * C;
    resid_mix_k<<<gk_cu_grid(n, THREADS), THREADS, 0, stream>>>(x, xin, x0, mix, n, C);
    return cudaGetLastError();
}

/* Pass 1 of ds, fused with dx += s dy when dx is wanted, so dy is read once
 * for both (the two passes apart moved 5 arrays' worth of bytes, this one 4;
 * 2 for ds alone). With SET, d(x) = s dy is written instead (dx not read),
 * into dx as fp32 and/or into dxb as bf16, whichever is not NULL. Block (32, DS_PHASES): 32 slots of VEC channels by the
 * phases of one chunk of DS_ROWS rows. Each thread accumulates x dy of its
 * channels in double, rows in order, two rows a step so that 2 rows' loads are
 * in flight before the first add (the dx stores would otherwise keep the
 * compiler from hoisting the next row's loads); phase 0 then adds the
 * phases' sums in order into part[chunk][c]. */
template <int VEC, typename X>
__global__ void __launch_bounds__(32 * DS_PHASES)
    ds_part_k(float *dx, gk_bf16 *dxb, bool set, double *part, const float *dy, const X *x,
              const float *s, int N, int C, int group)
{
    __shared__ double sh[DS_PHASES][32 * VEC];
    int c0 = (blockIdx.y * 32 + threadIdx.x) * VEC, k = blockIdx.x;
    bool on = c0 < C;
    double acc[VEC] = {};
    float sv[VEC] = {};
    int n1 = (k + 1) * DS_ROWS < N ? (k + 1) * DS_ROWS : N;
    if (on) {
        if (dx || dxb) {
#pragma unroll
            for (int e = 0; e < VEC; e++)
                sv[e] = s[(c0 + e) / group];
        }
        for (int n = k * DS_ROWS + threadIdx.y; n < n1; n += 2 * DS_PHASES) {
            bool two = n + DS_PHASES < n1;
            size_t o0 = (size_t)n * C + c0, o1 = two ? o0 + (size_t)DS_PHASES * C : o0;
            fvec<VEC> g0 = vload<VEC>(dy + o0), x0 = vload<VEC>(x + o0);
            fvec<VEC> g1 = vload<VEC>(dy + o1), x1 = vload<VEC>(x + o1), d0, d1;
            if (set) {
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    d0.v[e] = __fmul_rn(sv[e], g0.v[e]);
                    d1.v[e] = __fmul_rn(sv[e], g1.v[e]);
                }
            } else if (dx) {
                d0 = vload<VEC>(dx + o0), d1 = vload<VEC>(dx + o1);
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    d0.v[e] = __fadd_rn(d0.v[e], __fmul_rn(sv[e], g0.v[e]));
                    d1.v[e] = __fadd_rn(d1.v[e], __fmul_rn(sv[e], g1.v[e]));
                }
            }
            if (dx) {
                vstore<VEC>(dx + o0, d0);
                if (two)
                    vstore<VEC>(dx + o1, d1);
            }
            if (dxb) {
                bstore<VEC>(dxb + o0, d0);
                if (two)
                    bstore<VEC>(dxb + o1, d1);
            }
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                acc[e] += (double)x0.v[e] * g0.v[e];
                if (two)
                    acc[e] += (double)x1.v[e] * g1.v[e];
            }
        }
    }
#pragma unroll
    for (int e = 0; e < VEC; e++)
        sh[threadIdx.y][threadIdx.x * VEC + e] = acc[e];
    __syncthreads();
    if (threadIdx.y == 0 && on) {
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            double t = sh[0][threadIdx.x * VEC + e];
            for (int p = 1; p < DS_PHASES; p++)
                t += sh[p][threadIdx.x * VEC + e];
            part[(size_t)k * C + c0 + e] = t;
        }
    }
}

/* Pass 2: one block per entry j of s sums its chunks x channels by
 * block_reduce, each thread a fixed stride of the terms in order. The block
 * has a warp per 32 terms, up to 1024 threads (ds_sum_threads, a function of
 * N and group alone, so the tree is fixed): a per-head s (group 64) has
 * 8192 terms an entry at the baseline and only C / group = 8 blocks; with 256
 * threads reading theirs one after another, pass 2 added ~25 us to group 64's
 * backward (0.127 ms against group 1's 0.101 on an H100), with 1024 threads
 * and the loop unrolled, each thread's 8 reads are in flight together (0.102
 * against 0.099). */
static unsigned ds_sum_threads(int terms)
{
    int t = (terms + 31) / 32 * 32;
    return (unsigned)(t < 1024 ? t : 1024);
}

__global__ void ds_sum_k(float *ds, const double *part, int nchunk, int C, int group)
{
    __shared__ double sh[33];
    int j = blockIdx.x;
    double acc = 0;
#pragma unroll 4
    for (int e = threadIdx.x; e < nchunk * group; e += blockDim.x)
        acc += part[(size_t)(e / group) * C + (size_t)j * group + e % group];
    acc = block_reduce(acc, sh, op_sum(), 0.0);
    if (threadIdx.x == 0)
        ds[j] += (float)acc;
}

cudaError_t gk_cu_column_sums(float *ds, const double *part, int rows, int C,
                              cudaStream_t stream)
{
    if (rows > 0 && C > 0)
        ds_sum_k<<<C, ds_sum_threads(rows), 0, stream>>>(ds, part, rows, C, 1);
    return cudaGetLastError();
}

size_t gk_cu_scale_add_bwd_workspace(int N, int C)
{
    return (size_t)((N + DS_ROWS - 1) / DS_ROWS) * C * sizeof(double);
}

/* Both passes of ds, with ds_part_k's d(x) outputs. */
template <typename X>
static void ds_launch(float *dx, gk_bf16 *dxb, bool set, float *ds, const float *dy, const X *x,
                      const float *s, int N, int C, int group, void *work, cudaStream_t stream)
{
    int nchunk = (N + DS_ROWS - 1) / DS_ROWS;
    dim3 block(32, DS_PHASES);
    /* Chunks along x, whose limit is 2^31 - 1 blocks (y's is 65535); VEC 4
     * stores 4 bf16, 8 bytes, when dxb is 8-byte aligned (reads them from a
     * bf16 x likewise). */
    if (vec4_ok((size_t)C, dx, dxb, dy, x))
        ds_part_k<4><<<dim3((unsigned)nchunk, (unsigned)((C / 4 + 31) / 32)), block, 0,
                       stream>>>(dx, dxb, set, (double *)work, dy, x, s, N, C, group);
    else
        ds_part_k<1><<<dim3((unsigned)nchunk, (unsigned)((C + 31) / 32)), block, 0, stream>>>(
            dx, dxb, set, (double *)work, dy, x, s, N, C, group);
    ds_sum_k<<<C / group, ds_sum_threads(nchunk * group), 0, stream>>>(ds, (const double *)work,
                                                                       nchunk, C, group);
}

cudaError_t gk_cu_scale_add_bwd(float *dx, float *ds, const float *dy, const float *x,
                                const float *s, int N, int C, int group, void *work,
                                cudaStream_t stream)
{
    if (ds && N > 0) {
        ds_launch(dx, NULL, false, ds, dy, x, s, N, C, group, work, stream);
    } else if (dx) { /* dx += s dy alone is the forward with dy in place of x */
        scale_add_launch(dx, dy, s, N, C, group, stream);
    }
    return cudaGetLastError();
}

template <typename X>
static cudaError_t scale_bwd_set_launch(float *dx, gk_bf16 *dxb, float *ds, const float *dy,
                                        const X *x, const float *s, int N, int C, int group,
                                        void *work, cudaStream_t stream)
{
    if (!ds)
        return cudaErrorInvalidValue;
    if (N > 0)
        ds_launch(dx, dxb, true, ds, dy, x, s, N, C, group, work, stream);
    return cudaGetLastError();
}

cudaError_t gk_cu_scale_bwd_set(float *dx, gk_bf16 *dxb, float *ds, const float *dy,
                                const float *x, const float *s, int N, int C, int group,
                                void *work, cudaStream_t stream)
{
    return scale_bwd_set_launch(dx, dxb, ds, dy, x, s, N, C, group, work, stream);
}

cudaError_t gk_cu_scale_bwd_set_bx(float *dx, gk_bf16 *dxb, float *ds, const float *dy,
                                   const gk_bf16 *x, const float *s, int N, int C, int group,
                                   void *work, cudaStream_t stream)
{
    return scale_bwd_set_launch(dx, dxb, ds, dy, x, s, N, C, group, work, stream);
}

/* ---- Adam ------------------------------------------------------------------ */

/* adam_tensor's double arithmetic, operation for operation, unfused, so the
 * stored moments and parameters round as the CPU's do. */
__global__ void adam_k(float *w, const float *g, float *m, float *v, size_t n, double b1,
                       double b2, double eps, double decay, double step_size,
                       double bc2_sqrt)
{
    GK_GRID_STRIDE(i, n)
    {
        double gi = g[i];
        float mi = (float)__dadd_rn(__dmul_rn(b1, m[i]), __dmul_rn(1 - b1, gi));
        float vi = (float)__dadd_rn(__dmul_rn(b2, v[i]), __dmul_rn(__dmul_rn(1 - b2, gi), gi));
        double denom = __dadd_rn(sqrt((double)vi) / bc2_sqrt, eps);
        double x = __dmul_rn((double)w[i], decay);
        x = __dsub_rn(x, __dmul_rn(step_size, (double)mi) / denom);
        m[i] = mi;
        v[i] = vi;
        w[i] = (float)x;
    }
}

cudaError_t gk_cu_adam(float *w, const float *g, float *m, float *v, size_t n, double lr,
                       double beta1, double beta2, double eps, double wd, long long t,
                       cudaStream_t stream)
{
    /* The step's scalars on the host, in double, as adam_tensor computes them. */
    double step_size = lr / (1 - pow(beta1, (double)t));
    double bc2_sqrt = sqrt(1 - pow(beta2, (double)t));
    adam_k<<<gk_cu_grid(n, THREADS), THREADS, 0, stream>>>(w, g, m, v, n, beta1, beta2, eps,
                                                1 - lr * wd, step_size, bc2_sqrt);
    return cudaGetLastError();
}
