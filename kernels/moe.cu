/* moe: the mixture-of-experts feed-forward of kernels/moe.h on the GPU, the
 * steps of lib/moe_impl.h one for one: route, sort, gather, two GEMMs per
 * expert around the activation, combine; and the backward in reverse.
 *
 * Rows. As on the CPU, the forward lays out R = N top_k + S N rows, one per
 * (token, expert) pair: routed expert e's rows are start[e] .. start[e+1]-1
 * (its tokens in token order), then shared expert s's N rows at N top_k +
 * s N, in token order (so a shared row's token is its index, and the sort
 * never touches them). Every per-row buffer (xg, hpre, hact, out and their
 * gradients) has this order, so an expert's rows are one matrix for the GEMM.
 *
 * The sort is a counting sort whose result is a function of the choices only:
 * slot i of the N top_k (token, choice) slots goes to row start[e] + the
 * slots before i that chose the same expert e (a stable sort, so expert e's
 * rows hold its tokens in ascending token order, as the CPU's sequential
 * fill). The slots are cut into chunks of SORT_CHUNK, one block each: a
 * thread per slot finds its rank among the chunk's earlier slots of its
 * expert (a warp match, then the earlier warps' slots from shared memory)
 * and the block counts each expert's slots (integer shared-memory atomics:
 * the count does not depend on their order); one block scans the counts,
 * expert-major, into each (expert, chunk)'s first row; a last pass adds it
 * to each slot's rank. All integer, so any schedule gives the same rows.
 *
 * Speed. Apart from the GEMMs the pass is memory-bound: the kernels that move
 * rows (gather, activation, combine, ungather) run one warp per row or per
 * token, 16-byte loads and stores where the widths and pointers allow (VEC 4
 * fp32 or 8 bf16 a lane; a VEC 1 instance serves odd widths), with no 64-bit
 * division: a warp's row comes from its index, a lane's channels from its
 * lane. The gather and the combines go by token, so x is read once for its
 * K + S rows and each output row written once. Two kernels sum in double
 * and keep the lane-strided order of their sums (lane l adds channels l,
 * l + 32, ... in order, then a butterfly over the warp), which makes their
 * results the bits of the first version of this file: the router's logits
 * (so the routing is the same) and the dot products dgate of the combine's
 * backward; there the loads are 4-byte but coalesced, a batch of them in
 * flight per lane before the sums. The router's weight gradient keeps its
 * chunked token-order sums in double too, its blocks reading x once for all
 * experts. Every launch is followed by GK_CU(cudaGetLastError()). */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <cub/block/block_scan.cuh>

#include "moe.h"
extern "C" {
#include "ops.h" /* GK_LEAKY_SLOPE; no extern "C" of its own */
#include "../lib/moe.h" /* GK_MOE_GATE_EPS; plain "moe.h" is kernels/moe.h from here */
}

/* Threads of a block for the element-wise and per-row kernels; a multiple
 * of 32 (the per-row kernels run one warp per row). */
#define THREADS 256
/* Slots of a chunk of the counting sort: one block, a thread a slot. */
#define SORT_CHUNK 256
/* Threads of the one block that scans the sort's counts. */
#define SCAN_THREADS 1024
/* Tokens per partial sum of the router weight gradient (one double per
 * chunk, expert and channel, then summed over chunks in order). */
#define ROUTER_CHUNK 256
/* The router's warps: RT tokens and RE experts at a time, RT RE = 32 logits,
 * one a lane after the reduction (route_k). */
#define RT 4
#define RE 8
/* Experts per block, threads per block of the router weight gradient. */
#define RDW_E 8
#define RDW_THREADS 128
/* Channels a lane loads before it sums, in the order-keeping kernels. */
#define CB 8

struct gk_cu_moe {
    const gk_layout *l;
    const gk_moe_block *t;
    int N, C, E, S, K, F, FR; /* tokens, width, routed, shared, top_k, hidden, fc rows */
    int cap;                  /* the N the buffers were carved for */
    int NK, R;                /* routed slots N K; rows N K + S N */
    int act;                  /* gk_activation */
    int learned, sigmoid, token; /* a router weight; its bias; the token router */
    int n_sort, n_rchunk;     /* chunks of the sort, of the router gradient */
    /* device */
    int *sel, *slot_row, *start, *cnt;           /* [NK] x2, [E+1], [E, n_sort] */
    float *gate, *dgate, *score, *dz;            /* [NK] x2; [N,E] logits (sigmoid
                                                  * scores for sigmoid_bias), their grad */
    double *rpart;                               /* [n_rchunk, E, C] */
    gk_bf16 *xg, *hact, *dout, *dhpre;           /* [R,C], [R,F], [R,C], [R,FR] */
    float *hpre, *out, *dhact;                   /* [R,FR], [R,C] (dxg in the bwd), [R,F] */
    /* host */
    int *hstart;                                 /* [E+1] the forward's row offsets */
    const float *x, *params;                     /* of the last forward */
    const gk_bf16 *wbf;
};

/* Blocks of THREADS for one warp per item, N items (the loop covers any
 * past gk_cu_grid's cap). */
static unsigned warps_grid(size_t n) { return gk_cu_grid(n * 32, THREADS); }

/* The warps of the grid take items w, w + warps, ... < N; W is warp-uniform,
 * so the shuffles inside see every lane. */
#define WARP_LOOP(w, n)                                                                 \
    for (size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < (n);      \
         w += ((size_t)gridDim.x * blockDim.x) >> 5)

static bool al16(const void *p) { return (uintptr_t)p % 16 == 0; }

/* The warp's sum of v, every lane getting it: a butterfly of fixed shape. */
__device__ double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- vector accesses ---------------------------------------------------------- */

/* VEC floats from p: 16-byte loads when VEC is a multiple of 4 and WIDE (p
 * 16-byte aligned), else scalar loads of the same values. */
template <int VEC> __device__ __forceinline__ void ldf(float (&v)[VEC], const float *p,
                                                       bool wide = true)
{
    if constexpr (VEC % 4 == 0) {
        if (wide) {
#pragma unroll
            for (int i = 0; i < VEC / 4; i++) {
                float4 t = ((const float4 *)p)[i];
                v[4 * i] = t.x, v[4 * i + 1] = t.y, v[4 * i + 2] = t.z, v[4 * i + 3] = t.w;
            }
            return;
        }
    }
#pragma unroll
    for (int e = 0; e < VEC; e++)
        v[e] = p[e];
}

template <int VEC> __device__ __forceinline__ void stf(float *p, const float (&v)[VEC])
{
    if constexpr (VEC % 4 == 0) {
#pragma unroll
        for (int i = 0; i < VEC / 4; i++)
            ((float4 *)p)[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
    } else {
#pragma unroll
        for (int e = 0; e < VEC; e++)
            p[e] = v[e];
    }
}

/* The VEC floats rounded to bf16 at p: one 16-byte store for VEC 8 (the
 * lower address in the low half of each word). */
template <int VEC> __device__ __forceinline__ void stb(gk_bf16 *p, const float (&v)[VEC])
{
    if constexpr (VEC == 8) {
        unsigned u[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            u[i] = (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(v[2 * i])) |
                   (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(v[2 * i + 1])) << 16;
        *(uint4 *)p = make_uint4(u[0], u[1], u[2], u[3]);
    } else {
#pragma unroll
        for (int e = 0; e < VEC; e++)
            p[e] = __float2bfloat16_rn(v[e]);
    }
}

/* ---- routing ------------------------------------------------------------------ */

/* One routed expert, or the token router: expert token mod E, weight 1 (K 1). */
__global__ void route_fixed_k(int *sel, float *gate, const int *tokens, int N, int E,
                              int token)
{
    GK_GRID_STRIDE(n, (size_t)N)
    {
        sel[n] = token ? tokens[n] % E : 0;
        gate[n] = 1;
    }
}

/* Sum each of the M values of V over the warp, leaving value LANE's sum in
 * v[0] of lane LANE (M 32): at the level of shuffle distance H = M / 2, the
 * lanes with bit H keep the upper half of their values and send the lower,
 * the others the reverse, each adding what its partner sent to what it kept.
 * That is warp_sum's butterfly for every value (the same pairs of partial
 * sums at each level, and a + b is b + a), so the same bits, in 31 shuffles
 * for the 32 values instead of 160. */
template <int M> __device__ __forceinline__ void fold(double *v, int lane)
{
    constexpr int H = M / 2;
    bool up = lane & H;
#pragma unroll
    for (int i = 0; i < H; i++) {
        double send = up ? v[i] : v[i + H], keep = up ? v[i + H] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, H);
    }
    if constexpr (H > 1)
        fold<H>(v, lane);
}

/* The learned routers, one warp per RT tokens, moe_impl.h's route().
 * Logits: lane l sums x[n,c] Wr[e,c] over c = l, l + 32, ... in order in
 * double (the products are exact), then the warp adds the lanes' sums in
 * warp_sum's tree (fold), RT tokens times RE experts at once: each Wr load
 * serves RT tokens, and lane t RE + u ends with token t's logit of expert
 * u, which it stores (score keeps s = sigmoid(z) for sigmoid_bias). Then
 * each token's RE lanes pick its top_k: K rounds, each taking the first of
 * the serial scan over the experts not yet taken (strict >, so ties go to
 * the lower index, a NaN key never wins but is kept when it comes first), the
 * lanes taking experts g, g + RE, ... and reducing; then the first lane does
 * the weights as the CPU: sigmoid_bias picks the top_k of s + bias and weighs
 * by s normalised, softmax the top_k of z weighed by the softmax of the
 * chosen. */
__global__ void __launch_bounds__(THREADS)
    route_k(int *sel, float *gate, float *score, const float *__restrict__ x,
            const float *__restrict__ wr, const float *__restrict__ bias, int N, int C, int E,
            int K)
{
    int lane = threadIdx.x & 31, g = lane % RE;
    WARP_LOOP(w, ((size_t)N + RT - 1) / RT)
    {
        size_t n0 = w * RT;
        const float *xr[RT];
#pragma unroll
        for (int t = 0; t < RT; t++)
            xr[t] = x + (n0 + t < (size_t)N ? n0 + t : n0) * C;
        size_t n = n0 + lane / RE; /* the token of this lane's logit and group */
        bool live = n < (size_t)N;
        for (int e0 = 0; e0 < E; e0 += RE) {
            double acc[RT * RE];
#pragma unroll
            for (int i = 0; i < RT * RE; i++)
                acc[i] = 0;
#pragma unroll 2
            for (int c = lane; c < C; c += 32) {
                float xv[RT];
#pragma unroll
                for (int t = 0; t < RT; t++)
                    xv[t] = xr[t][c];
#pragma unroll
                for (int u = 0; u < RE; u++) {
                    double wv = e0 + u < E ? wr[(size_t)(e0 + u) * C + c] : 0;
#pragma unroll
                    for (int t = 0; t < RT; t++)
                        acc[t * RE + u] += (double)xv[t] * wv;
                }
            }
            fold<RT * RE>(acc, lane);
            if (live && e0 + g < E) {
                float z = (float)acc[0];
                score[n * E + e0 + g] = bias ? 1 / (1 + expf(-z)) : z;
            }
        }
        __syncwarp();
        const float *z = score + (live ? n : n0) * E;
        int *s = sel + (live ? n : n0) * K;
        int El = live ? E : 0; /* a dead token's lanes still shuffle */
        for (int k = 0; k < K; k++) {
            int first = INT_MAX, best = INT_MAX;
            float fkey = 0, bkey = 0;
            for (int e = g; e < El; e += RE) {
                int taken = 0;
                for (int i = 0; i < k; i++)
                    taken |= s[i] == e;
                if (taken)
                    continue;
                float key = bias ? __fadd_rn(z[e], bias[e]) : z[e];
                if (first == INT_MAX)
                    first = e, fkey = key;
                if (!isnan(key) && (best == INT_MAX || key > bkey))
                    best = e, bkey = key;
            }
            for (int o = RE / 2; o > 0; o >>= 1) {
                int f2 = __shfl_xor_sync(0xffffffffu, first, o);
                float fk2 = __shfl_xor_sync(0xffffffffu, fkey, o);
                int b2 = __shfl_xor_sync(0xffffffffu, best, o);
                float bk2 = __shfl_xor_sync(0xffffffffu, bkey, o);
                if (f2 < first)
                    first = f2, fkey = fk2;
                if (b2 != INT_MAX && (best == INT_MAX || bk2 > bkey || (bk2 == bkey && b2 < best)))
                    best = b2, bkey = bk2;
            }
            if (live && g == 0)
                s[k] = isnan(fkey) ? first : best;
            __syncwarp();
        }
        if (!live || g != 0)
            continue;
        float *gt = gate + n * K, sum = 0;
        if (bias) {
            sum = GK_MOE_GATE_EPS;
            for (int k = 0; k < K; k++)
                sum += z[s[k]];
            for (int k = 0; k < K; k++)
                gt[k] = z[s[k]] / sum;
        } else {
            float max = z[s[0]];
            for (int k = 0; k < K; k++)
                sum += gt[k] = expf(z[s[k]] - max);
            for (int k = 0; k < K; k++)
                gt[k] /= sum;
        }
    }
}

/* ---- the counting sort ---------------------------------------------------------- */

/* Block ch: slot_row[i] = the rank of slot i among its chunk's earlier slots
 * of the same expert, cnt[e, ch] = the chunk's slots of expert e. Shared
 * memory: the chunk's experts, then E counts. */
__global__ void __launch_bounds__(SORT_CHUNK)
    sort_rank_k(int *slot_row, int *cnt, const int *sel, int NK, int E, int n_sort)
{
    extern __shared__ int sh[];
    int *se = sh, *h = sh + SORT_CHUNK;
    int t = threadIdx.x, lane = t & 31, ch = blockIdx.x;
    size_t i = (size_t)ch * SORT_CHUNK + t;
    int e = i < (size_t)NK ? sel[i] : -1;
    se[t] = e;
    for (int j = t; j < E; j += SORT_CHUNK)
        h[j] = 0;
    unsigned same = __match_any_sync(0xffffffffu, e);
    __syncthreads();
    if (e >= 0) {
        int rank = __popc(same & ((1u << lane) - 1));
        for (int j = 0; j < (t & ~31); j++)
            rank += se[j] == e;
        slot_row[i] = rank;
        atomicAdd(&h[e], 1);
    }
    __syncthreads();
    for (int j = t; j < E; j += SORT_CHUNK)
        cnt[(size_t)j * n_sort + ch] = h[j];
}

/* One block: cnt [E, n_sort] becomes its exclusive prefix sum, in that
 * (expert-major) order each (expert, chunk)'s first row; start[e] = expert
 * e's first row, start[E] = N K. Each thread scans a run of entries. */
__global__ void __launch_bounds__(SCAN_THREADS) sort_scan_k(int *cnt, int *start, int E, int n_sort)
{
    typedef cub::BlockScan<int, SCAN_THREADS> scan_t;
    __shared__ typename scan_t::TempStorage tmp;
    size_t M = (size_t)E * n_sort, per = (M + SCAN_THREADS - 1) / SCAN_THREADS;
    size_t lo = min(M, threadIdx.x * per), hi = min(M, lo + per);
    int sum = 0, run, total;
    for (size_t i = lo; i < hi; i++)
        sum += cnt[i];
    scan_t(tmp).ExclusiveSum(sum, run, total);
    for (size_t i = lo; i < hi; i++) {
        int v = cnt[i];
        cnt[i] = run;
        if (i % n_sort == 0)
            start[i / n_sort] = run;
        run += v;
    }
    if (threadIdx.x == 0)
        start[E] = total;
}

/* slot_row[i] += the first row of slot i's (expert, chunk). */
__global__ void sort_place_k(int *slot_row, const int *cnt, const int *sel, int NK, int n_sort)
{
    GK_GRID_STRIDE(i, (size_t)NK)
    {
        slot_row[i] += cnt[(size_t)sel[i] * n_sort + i / SORT_CHUNK];
    }
}

/* ---- gather, activation, combine ------------------------------------------------ */

/* By token: each of token n's rows of xg [R,C] (its K routed rows, its S
 * shared rows) = bf16 of x[n]. VEC 8 needs C % 8 == 0 and x, xg aligned. */
template <int VEC>
__global__ void __launch_bounds__(THREADS)
    gather_k(gk_bf16 *__restrict__ xg, const float *__restrict__ x,
             const int *__restrict__ slot_row, int N, int C, int S, int K)
{
    int lane = threadIdx.x & 31;
    size_t NK = (size_t)N * K;
    WARP_LOOP(n, (size_t)N)
    {
        for (int c = lane * VEC; c < C; c += 32 * VEC) {
            float v[VEC];
            ldf<VEC>(v, x + n * C + c);
            for (int k = 0; k < K; k++)
                stb<VEC>(xg + (size_t)slot_row[n * K + k] * C + c, v);
            for (int s = 0; s < S; s++)
                stb<VEC>(xg + (NK + (size_t)s * N + n) * C + c, v);
        }
    }
}

/* hact [R,F] (bf16, the proj GEMM's input) = act(hpre [R,FR]), the
 * expressions of gk_act_fwd (elementwise.cu's act_fwd_k, rounded once). A
 * warp per row; VEC 8 needs F % 8 == 0. */
template <int VEC>
__global__ void __launch_bounds__(THREADS)
    act_fwd_k(gk_bf16 *__restrict__ y, const float *__restrict__ x, size_t R, int F, int FR,
              int act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    int lane = threadIdx.x & 31;
    WARP_LOOP(r, R)
    {
        const float *xr = x + r * FR;
        for (int f = lane * VEC; f < F; f += 32 * VEC) {
            float v[VEC];
            if (act == GK_ACT_SWIGLU) {
                float g[VEC], up[VEC];
                ldf<VEC>(g, xr + f), ldf<VEC>(up, xr + F + f);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = g[e] / (1 + expf(-g[e])) * up[e];
            } else {
                float u[VEC];
                ldf<VEC>(u, xr + f);
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    float a = u[e] > 0 ? u[e] : act == GK_ACT_LEAKY_RELU2 ? slope * u[e] : 0;
                    v[e] = a * a;
                }
            }
            stb<VEC>(y + r * F + f, v);
        }
    }
}

/* dx [R,FR] (bf16, the fc GEMMs' input) = the activation's gradient at x
 * [R,FR] times dy [R,F], overwriting (the CPU adds into zeros). */
template <int VEC>
__global__ void __launch_bounds__(THREADS)
    act_bwd_k(gk_bf16 *__restrict__ dx, const float *__restrict__ dy,
              const float *__restrict__ x, size_t R, int F, int FR, int act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    int lane = threadIdx.x & 31;
    WARP_LOOP(r, R)
    {
        const float *xr = x + r * FR;
        gk_bf16 *dxr = dx + r * FR;
        for (int f = lane * VEC; f < F; f += 32 * VEC) {
            float d[VEC];
            ldf<VEC>(d, dy + r * F + f);
            if (act == GK_ACT_SWIGLU) {
                float g[VEC], up[VEC], dg[VEC], du[VEC];
                ldf<VEC>(g, xr + f), ldf<VEC>(up, xr + F + f);
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    float sig = 1 / (1 + expf(-g[e]));
                    dg[e] = d[e] * up[e] * sig * (1 + g[e] * (1 - sig));
                    du[e] = d[e] * g[e] * sig;
                }
                stb<VEC>(dxr + f, dg), stb<VEC>(dxr + F + f, du);
            } else {
                float u[VEC], v[VEC];
                ldf<VEC>(u, xr + f);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = u[e] > 0 ? 2 * u[e] * d[e]
                           : act == GK_ACT_LEAKY_RELU2 ? 2 * slope * slope * u[e] * d[e]
                                                       : 0;
                stb<VEC>(dxr + f, v);
            }
        }
    }
}

/* y [N,C] = each token's shared rows, then its routed rows times their
 * weights, in the CPU's order and roundings (unfused). A warp per token; VEC
 * 4 needs C % 4 == 0 and y, out aligned. */
template <int VEC>
__global__ void __launch_bounds__(THREADS)
    combine_k(float *__restrict__ y, const float *__restrict__ out,
              const float *__restrict__ gate, const int *__restrict__ slot_row, int N, int C,
              int S, int K)
{
    int lane = threadIdx.x & 31;
    size_t NK = (size_t)N * K;
    WARP_LOOP(n, (size_t)N)
    {
        for (int c = lane * VEC; c < C; c += 32 * VEC) {
            float v[VEC], o[VEC];
#pragma unroll
            for (int e = 0; e < VEC; e++)
                v[e] = 0;
            for (int s = 0; s < S; s++) {
                ldf<VEC>(o, out + (NK + (size_t)s * N + n) * C + c);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = __fadd_rn(v[e], o[e]);
            }
            for (int k = 0; k < K; k++) {
                float g = gate[n * K + k];
                ldf<VEC>(o, out + (size_t)slot_row[n * K + k] * C + c);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = __fadd_rn(v[e], __fmul_rn(g, o[e]));
            }
            stf<VEC>(y + n * C + c, v);
        }
    }
}

/* ---- backward kernels --------------------------------------------------------- */

/* One warp per token: for each choice k, dgate = dy . out (double, lane
 * l's channels l, l + 32, ... in order, then warp_sum) and the routed row's
 * output gradient dout = gate dy (bf16); the shared rows' dout = dy; then,
 * for a learned router, lane 0 turns the dgates into the logits' gradient dz
 * [N,E] (moe_impl.h's router_bwd: zero for the experts not chosen;
 * sigmoid_bias through s / sum s and the sigmoid, softmax through the
 * softmax of the chosen). Each lane loads CB channels of dy and out before it
 * sums them. */
__global__ void __launch_bounds__(THREADS)
    combine_bwd_k(gk_bf16 *__restrict__ dout, float *dgate, float *dz,
                  const float *__restrict__ dy, const float *__restrict__ out,
                  const float *gate, const float *score, const int *sel, const int *slot_row,
                  int N, int C, int E, int S, int K, int learned, int sigmoid)
{
    int lane = threadIdx.x & 31;
    size_t NK = (size_t)N * K;
    WARP_LOOP(n, (size_t)N)
    {
        const float *dyn = dy + n * C;
        for (int k = 0; k < K; k++) {
            size_t r = (size_t)slot_row[n * K + k];
            float g = gate[n * K + k];
            double acc = 0;
            for (int c0 = 0; c0 < C; c0 += 32 * CB) {
                float d[CB], o[CB];
#pragma unroll
                for (int u = 0; u < CB; u++) {
                    int c = c0 + 32 * u + lane;
                    d[u] = c < C ? dyn[c] : 0, o[u] = c < C ? out[r * C + c] : 0;
                }
#pragma unroll
                for (int u = 0; u < CB; u++) {
                    int c = c0 + 32 * u + lane;
                    if (c < C) {
                        acc += (double)d[u] * o[u];
                        dout[r * C + c] = __float2bfloat16_rn(g * d[u]);
                    }
                }
            }
            acc = warp_sum(acc);
            if (lane == 0)
                dgate[n * K + k] = (float)acc;
        }
        for (int s = 0; s < S; s++)
            for (int c = lane; c < C; c += 32)
                dout[(NK + (size_t)s * N + n) * C + c] = __float2bfloat16_rn(dyn[c]);
        if (!learned)
            continue;
        float *dzn = dz + n * E;
        for (int e = lane; e < E; e += 32)
            dzn[e] = 0;
        __syncwarp();
        if (lane != 0)
            continue;
        const float *gn = gate + n * K, *dg = dgate + n * K;
        const float *sn = score + n * E;
        const int *seln = sel + n * K;
        float gdg = 0, sum = GK_MOE_GATE_EPS;
        for (int k = 0; k < K; k++)
            gdg += gn[k] * dg[k], sum += sn[seln[k]];
        for (int k = 0; k < K; k++) {
            float sk = sn[seln[k]];
            dzn[seln[k]] = sigmoid ? (dg[k] - gdg) / sum * sk * (1 - sk) : gn[k] * (dg[k] - gdg);
        }
    }
}

/* dx [N,C] += each token's rows' input gradients (shared, then routed, the
 * CPU's order), then the router's dz Wr. A warp per token; VEC 4 needs C %
 * 4 == 0 and dx, dxg aligned; WIDE says whether wr is too. */
template <int VEC>
__global__ void __launch_bounds__(THREADS)
    ungather_k(float *__restrict__ dx, const float *__restrict__ dxg,
               const int *__restrict__ slot_row, const float *__restrict__ dz,
               const float *__restrict__ wr, int N, int C, int E, int S, int K, bool wide)
{
    int lane = threadIdx.x & 31;
    size_t NK = (size_t)N * K;
    WARP_LOOP(n, (size_t)N)
    {
        for (int c = lane * VEC; c < C; c += 32 * VEC) {
            float v[VEC], o[VEC];
            ldf<VEC>(v, dx + n * C + c);
            for (int s = 0; s < S; s++) {
                ldf<VEC>(o, dxg + (NK + (size_t)s * N + n) * C + c);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = __fadd_rn(v[e], o[e]);
            }
            for (int k = 0; k < K; k++) {
                ldf<VEC>(o, dxg + (size_t)slot_row[n * K + k] * C + c);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = __fadd_rn(v[e], o[e]);
            }
            if (dz) {
                float t[VEC];
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    t[e] = 0;
                for (int j = 0; j < E; j++) {
                    float d = dz[n * E + j];
                    ldf<VEC>(o, wr + (size_t)j * C + c, wide);
#pragma unroll
                    for (int e = 0; e < VEC; e++)
                        t[e] += d * o[e];
                }
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    v[e] = __fadd_rn(v[e], t[e]);
            }
            stf<VEC>(dx + n * C + c, v);
        }
    }
}

/* part [ch, e, c] = the sum over chunk ch's tokens of dz[n,e] x[n,c], in
 * token order, in double. Grid (chunks, E / RDW_E): a block's threads take
 * VEC channels each and all RDW_E experts of the block, so x is read once
 * per RDW_E experts; the chunk's dz, in double, waits in shared memory. */
template <int VEC>
__global__ void __launch_bounds__(RDW_THREADS)
    router_dw_part_k(double *part, const float *__restrict__ dz, const float *__restrict__ x,
                     int N, int C, int E)
{
    __shared__ double sdz[ROUTER_CHUNK][RDW_E];
    int ch = blockIdx.x, e0 = blockIdx.y * RDW_E;
    int n0 = ch * ROUTER_CHUNK, nn = min(N - n0, ROUTER_CHUNK);
    for (int i = threadIdx.x; i < ROUTER_CHUNK * RDW_E; i += blockDim.x) {
        int j = i / RDW_E, u = i % RDW_E;
        sdz[j][u] = j < nn && e0 + u < E ? (double)dz[(size_t)(n0 + j) * E + e0 + u] : 0;
    }
    __syncthreads();
    for (int c = threadIdx.x * VEC; c < C; c += blockDim.x * VEC) {
        double acc[RDW_E][VEC];
#pragma unroll
        for (int u = 0; u < RDW_E; u++)
#pragma unroll
            for (int e = 0; e < VEC; e++)
                acc[u][e] = 0;
        const float *xp = x + (size_t)n0 * C + c;
#pragma unroll 4
        for (int j = 0; j < nn; j++) {
            float xv[VEC];
            ldf<VEC>(xv, xp + (size_t)j * C);
#pragma unroll
            for (int u = 0; u < RDW_E; u++)
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    acc[u][e] += sdz[j][u] * xv[e];
        }
        for (int u = 0; u < RDW_E && e0 + u < E; u++)
#pragma unroll
            for (int e = 0; e < VEC; e++)
                part[((size_t)ch * E + e0 + u) * C + c + e] = acc[u][e];
    }
}

/* dw [E,C] += the chunks' partial sums, chunks in order. */
__global__ void router_dw_sum_k(float *dw, const double *part, int n_chunk, size_t EC)
{
    GK_GRID_STRIDE(i, EC)
    {
        double s = 0;
        for (int ch = 0; ch < n_chunk; ch++)
            s += part[ch * EC + i];
        dw[i] = __fadd_rn(dw[i], (float)s);
    }
}

/* load [E] += each routed expert's rows. */
__global__ void load_k(long long *load, const int *start, int E)
{
    GK_GRID_STRIDE(e, (size_t)E)
    {
        load[e] += start[e + 1] - start[e];
    }
}

/* lib/moe.c's gk_moe_router_update for one layer, in the same integer and
 * double arithmetic: the bias moves by rate sign(sum - E load[e]). */
__global__ void router_update_k(float *bias, const long long *load, int E, double rate)
{
    GK_GRID_STRIDE(e, (size_t)E)
    {
        long long sum = 0;
        for (int i = 0; i < E; i++)
            sum += load[i];
        long long d = sum - (long long)E * load[e];
        bias[e] = __fadd_rn(bias[e], (float)(rate * (double)((d > 0) - (d < 0))));
    }
}

/* ---- the plan ----------------------------------------------------------------- */

/* The shape of block b for N tokens, from the layout. */
static void setup(gk_cu_moe *m, const gk_layout *l, int b, int N)
{
    const gk_config *c = &l->cfg;
    m->l = l, m->t = &l->moe[b];
    m->N = N, m->C = c->model.d_model, m->E = c->moe.n_experts, m->S = c->moe.n_shared;
    m->K = c->moe.top_k, m->F = gk_config_expert_hidden(c), m->FR = l->fc_rows;
    m->NK = N * m->K, m->R = m->NK + m->S * N;
    m->act = (int)c->model.activation;
    m->learned = m->t->router >= 0, m->sigmoid = m->t->router_bias >= 0;
    m->token = c->moe.router == GK_ROUTER_TOKEN;
    m->n_sort = (m->NK + SORT_CHUNK - 1) / SORT_CHUNK;
    m->n_rchunk = (N + ROUTER_CHUNK - 1) / ROUTER_CHUNK;
}

/* *ptr = N elements carved from A, or NULL when A is NULL (counting only);
 * *total += the bytes, rounded up to the arena's alignment. */
template <typename T> static void take(T **ptr, size_t n, gk_cu_arena *a, size_t *total)
{
    size_t bytes = n * sizeof **ptr;
    *total += (bytes + GK_CU_ALIGN - 1) / GK_CU_ALIGN * GK_CU_ALIGN;
    *ptr = a ? (T *)gk_cu_arena_alloc(a, bytes) : NULL;
}

/* Carve the device buffers from A, or only count their bytes when A is NULL;
 * returns the bytes. */
static size_t plan(gk_cu_moe *m, gk_cu_arena *a)
{
    size_t t = 0, NK = (size_t)m->NK, NE = (size_t)m->N * m->E, R = (size_t)m->R;
    size_t C = (size_t)m->C, F = (size_t)m->F, FR = (size_t)m->FR;
    take(&m->sel, NK, a, &t), take(&m->slot_row, NK, a, &t);
    take(&m->start, (size_t)m->E + 1, a, &t);
    take(&m->cnt, (size_t)m->n_sort * m->E, a, &t);
    take(&m->gate, NK, a, &t), take(&m->dgate, NK, a, &t);
    take(&m->score, m->learned ? NE : 0, a, &t), take(&m->dz, m->learned ? NE : 0, a, &t);
    take(&m->rpart, m->learned ? (size_t)m->n_rchunk * m->E * C : 0, a, &t);
    take(&m->xg, R * C, a, &t), take(&m->hact, R * F, a, &t);
    take(&m->dout, R * C, a, &t), take(&m->dhpre, R * FR, a, &t);
    take(&m->hpre, R * FR, a, &t), take(&m->out, R * C, a, &t), take(&m->dhact, R * F, a, &t);
    return t;
}

extern "C" size_t gk_cu_moe_bytes(const gk_layout *l, int N)
{
    size_t most = 0;
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        gk_cu_moe m;
        memset(&m, 0, sizeof m);
        setup(&m, l, b, N);
        size_t bytes = plan(&m, NULL);
        most = bytes > most ? bytes : most;
    }
    /* the arena may start unaligned: the first piece's padding */
    return most + GK_CU_ALIGN;
}

extern "C" gk_cu_moe *gk_cu_moe_new(const gk_layout *l, int b, int N, gk_cu_arena *arena)
{
    gk_cu_moe *m = (gk_cu_moe *)calloc(1, sizeof *m);
    if (!m)
        gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
    setup(m, l, b, N);
    plan(m, arena);
    m->cap = N;
    m->hstart = (int *)calloc((size_t)m->E + 1, sizeof *m->hstart);
    if (!m->hstart)
        gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
    return m;
}

extern "C" void gk_cu_moe_rows(gk_cu_moe *m, int N)
{
    if (N < 0 || N > m->cap) {
        char why[96];
        snprintf(why, sizeof why, "expected 0..%d rows, found %d", m->cap, N);
        gk_cu_fail("gk_cu_moe_rows", __FILE__, __LINE__, why);
    }
    setup(m, m->l, (int)(m->t - m->l->moe), N); /* the shapes only; buffers stay */
}

extern "C" void gk_cu_moe_free(gk_cu_moe *m)
{
    if (!m)
        return;
    free(m->hstart);
    free(m);
}

/* The bf16 weight, the fp32 gradient of tensor IDX (an expert's): 16-byte
 * aligned, as every tensor of the layout (GK_TENSOR_ALIGN). */
static const gk_bf16 *expert_w(const gk_cu_moe *m, int idx)
{
    return m->wbf + m->l->params[idx].offset;
}

static float *expert_g(float *grads, const gk_cu_moe *m, int idx)
{
    return grads + m->l->params[idx].offset;
}

/* ---- the passes ----------------------------------------------------------------- */

extern "C" void gk_cu_moe_fwd(gk_cu_moe *m, gk_gemm *g, float *y, const float *x,
                              const float *params, const gk_bf16 *wbf, const int *tokens)
{
    int N = m->N, C = m->C, E = m->E, S = m->S, K = m->K, F = m->F, FR = m->FR, NK = m->NK;
    cudaStream_t st = g->stream;
    m->x = x, m->params = params, m->wbf = wbf;
    if (N == 0)
        return;
    if (m->learned) {
        const float *wr = params + m->l->params[m->t->router].offset;
        const float *bias = m->sigmoid ? params + m->l->params[m->t->router_bias].offset : NULL;
        route_k<<<warps_grid(((size_t)N + RT - 1) / RT), THREADS, 0, st>>>(
            m->sel, m->gate, m->score, x, wr, bias, N, C, E, K);
    } else {
        route_fixed_k<<<gk_cu_grid((size_t)N, THREADS), THREADS, 0, st>>>(m->sel, m->gate, tokens,
                                                                          N, E, m->token);
    }
    GK_CU(cudaGetLastError());
    sort_rank_k<<<(unsigned)m->n_sort, SORT_CHUNK, (SORT_CHUNK + (size_t)E) * sizeof(int), st>>>(
        m->slot_row, m->cnt, m->sel, NK, E, m->n_sort);
    GK_CU(cudaGetLastError());
    sort_scan_k<<<1, SCAN_THREADS, 0, st>>>(m->cnt, m->start, E, m->n_sort);
    GK_CU(cudaGetLastError());
    sort_place_k<<<gk_cu_grid((size_t)NK, THREADS), THREADS, 0, st>>>(m->slot_row, m->cnt,
                                                                      m->sel, NK, m->n_sort);
    GK_CU(cudaGetLastError());
    GK_CU(cudaMemcpyAsync(m->hstart, m->start, (size_t)(E + 1) * sizeof *m->hstart,
                          cudaMemcpyDeviceToHost, st));
    size_t R = (size_t)m->R;
    if (C % 8 == 0 && al16(x))
        gather_k<8><<<warps_grid((size_t)N), THREADS, 0, st>>>(m->xg, x, m->slot_row, N, C, S, K);
    else
        gather_k<1><<<warps_grid((size_t)N), THREADS, 0, st>>>(m->xg, x, m->slot_row, N, C, S, K);
    GK_CU(cudaGetLastError());
    /* the counts size the GEMMs: the one wait of the pass */
    GK_CU(cudaStreamSynchronize(st));
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows > 0)
            gk_gemm_linear_fwd(g, m->hpre + r0 * FR, GK_OUT_F32, m->xg + r0 * C,
                               expert_w(m, m->t->fc[j]), rows, C, FR, 0);
    }
    /* the row buffers come from the arena, aligned: the widths decide */
    if (F % 8 == 0)
        act_fwd_k<8><<<warps_grid(R), THREADS, 0, st>>>(m->hact, m->hpre, R, F, FR, m->act);
    else
        act_fwd_k<1><<<warps_grid(R), THREADS, 0, st>>>(m->hact, m->hpre, R, F, FR, m->act);
    GK_CU(cudaGetLastError());
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows > 0)
            gk_gemm_linear_fwd(g, m->out + r0 * C, GK_OUT_F32, m->hact + r0 * F,
                               expert_w(m, m->t->proj[j]), rows, F, C, 0);
    }
    if (C % 4 == 0 && al16(y))
        combine_k<4><<<warps_grid((size_t)N), THREADS, 0, st>>>(y, m->out, m->gate, m->slot_row,
                                                                N, C, S, K);
    else
        combine_k<1><<<warps_grid((size_t)N), THREADS, 0, st>>>(y, m->out, m->gate, m->slot_row,
                                                                N, C, S, K);
    GK_CU(cudaGetLastError());
}

extern "C" void gk_cu_moe_bwd(gk_cu_moe *m, gk_gemm *g, float *dx, float *grads,
                              const float *dy, long long *load)
{
    int N = m->N, C = m->C, E = m->E, S = m->S, K = m->K, F = m->F, FR = m->FR, NK = m->NK;
    cudaStream_t st = g->stream;
    if (N == 0)
        return;
    size_t R = (size_t)m->R;
    combine_bwd_k<<<warps_grid((size_t)N), THREADS, 0, st>>>(m->dout, m->dgate, m->dz, dy, m->out,
                                                     m->gate, m->score, m->sel, m->slot_row,
                                                     N, C, E, S, K, m->learned, m->sigmoid);
    GK_CU(cudaGetLastError());
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows == 0)
            continue;
        gk_gemm_linear_bwd_dx(g, m->dhact + r0 * F, GK_OUT_F32, m->dout + r0 * C,
                              expert_w(m, m->t->proj[j]), rows, F, C, 0);
        gk_gemm_linear_bwd_dw(g, expert_g(grads, m, m->t->proj[j]), GK_OUT_F32,
                              m->dout + r0 * C, m->hact + r0 * F, rows, F, C, 1);
    }
    if (F % 8 == 0)
        act_bwd_k<8><<<warps_grid(R), THREADS, 0, st>>>(m->dhpre, m->dhact, m->hpre, R, F, FR,
                                                        m->act);
    else
        act_bwd_k<1><<<warps_grid(R), THREADS, 0, st>>>(m->dhpre, m->dhact, m->hpre, R, F, FR,
                                                        m->act);
    GK_CU(cudaGetLastError());
    /* out is dead after combine_bwd_k: the input gradients of the rows
     * (dxg [R,C]) take its place */
    float *dxg = m->out;
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows == 0)
            continue;
        gk_gemm_linear_bwd_dx(g, dxg + r0 * C, GK_OUT_F32, m->dhpre + r0 * FR,
                              expert_w(m, m->t->fc[j]), rows, C, FR, 0);
        gk_gemm_linear_bwd_dw(g, expert_g(grads, m, m->t->fc[j]), GK_OUT_F32,
                              m->dhpre + r0 * FR, m->xg + r0 * C, rows, C, FR, 1);
    }
    const float *wr = m->learned ? m->params + m->l->params[m->t->router].offset : NULL;
    const float *dz = m->learned ? m->dz : NULL;
    if (C % 4 == 0 && al16(dx))
        ungather_k<4><<<warps_grid((size_t)N), THREADS, 0, st>>>(dx, dxg, m->slot_row, dz, wr, N,
                                                                 C, E, S, K, al16(wr));
    else
        ungather_k<1><<<warps_grid((size_t)N), THREADS, 0, st>>>(dx, dxg, m->slot_row, dz, wr, N,
                                                                 C, E, S, K, false);
    GK_CU(cudaGetLastError());
    if (m->learned) {
        dim3 grid((unsigned)m->n_rchunk, (unsigned)((E + RDW_E - 1) / RDW_E));
        if (C % 4 == 0 && al16(m->x))
            router_dw_part_k<4><<<grid, RDW_THREADS, 0, st>>>(m->rpart, m->dz, m->x, N, C, E);
        else
            router_dw_part_k<1><<<grid, RDW_THREADS, 0, st>>>(m->rpart, m->dz, m->x, N, C, E);
        GK_CU(cudaGetLastError());
        size_t EC = (size_t)E * C;
        router_dw_sum_k<<<gk_cu_grid(EC, THREADS), THREADS, 0, st>>>(
            grads + m->l->params[m->t->router].offset, m->rpart, m->n_rchunk, EC);
        GK_CU(cudaGetLastError());
    }
    load_k<<<gk_cu_grid((size_t)E, THREADS), THREADS, 0, st>>>(load, m->start, E);
    GK_CU(cudaGetLastError());
}

extern "C" void gk_cu_moe_router_update(const gk_layout *l, float *params,
                                        const long long *load, double rate,
                                        cudaStream_t stream)
{
    if (!l->moe || l->cfg.moe.router != GK_ROUTER_SIGMOID_BIAS)
        return;
    int E = l->cfg.moe.n_experts;
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        if (l->moe[b].router_bias < 0)
            continue;
        router_update_k<<<gk_cu_grid((size_t)E, THREADS), THREADS, 0, stream>>>(
            params + l->params[l->moe[b].router_bias].offset, load + (size_t)b * E, E, rate);
        GK_CU(cudaGetLastError());
    }
}
