/* attention: the CUDA kernels of kernels/attention.h, causal grouped-query
 * attention in float32, tiled as FlashAttention-2: the forward streams K/V
 * tiles through shared memory past a tile of queries with an online softmax
 * (running max and sum), and the backward rebuilds the probabilities from the
 * saved log-sum-exp, so no T x T matrix is ever stored.
 *
 * Float32 throughout, with CUDA-core FMAs: this is the reference-accurate
 * first version. The later optimisation is bf16 inputs through tensor-core
 * MMA (mma.sync / wgmma) with fp32 accumulation; the tiling below is already
 * the one that version needs, only the inner products change.
 *
 * Thread layout, the same in all three main kernels: a "row" (one query in the
 * forward and the dq pass, one key in the dk/dv pass) belongs to a quad of 4
 * adjacent lanes; lane l of the quad holds columns l, l+4, l+8, ... of the
 * row's D-vectors in registers (D/4 each). A dot product with a row of a
 * shared tile is 4 partial sums combined by two xor-shuffles; every lane of the
 * quad ends with the same bits (the butterfly adds the same pairs), so the
 * softmax state is replicated, not communicated. Within a warp all 8 quads
 * read the same shared row at 4 consecutive columns: broadcasts, no bank
 * conflicts, and no padding needed.
 *
 * Determinism: no atomics. The forward writes each output row from one quad.
 * The backward is three kernels on one stream:
 *  1. delta[b,t,h] = dout . out, one warp per row (a fixed shuffle tree);
 *  2. dk, dv: one block per (b, kv head, key tile); each key's quad loops over
 *     every query head of its group and every query at or after the key, in
 *     order, accumulating dk and dv in registers, and adds them to memory once;
 *  3. dq: one block per (b, head, query tile); each query's quad loops over the
 *     keys up to the diagonal in order and adds dq to memory once.
 * Every output element has one writer and a fixed summation order, so the
 * results are the same bits on every run. The price is that S and P are
 * computed twice in the backward (once per pass), as FlashAttention-2's
 * deterministic mode does.
 *
 * Against the CPU reference the differences are summation order (the CPU's
 * GEMMs block differently), expf/logf (within 2 ulp of glibc's exp in double
 * rounded to float), and the online rescaling; check_attention.cu states the
 * bounds. */
#include "attention.h"

#include <math.h>

/* Lanes per row. */
#define QUAD 4
/* Forward: queries per block (block = FWD_BQ * QUAD = 256 threads) and keys
 * per shared K/V tile. A tile of 32 keys keeps the 32 scores of a row in
 * registers; with D = 128 the K and V tiles take 32 KiB of shared memory. */
#define FWD_BQ 64
#define FWD_BK 32
/* dk/dv pass: keys per block (256 threads), queries per shared Q/dO tile. */
#define DKV_BK 64
#define DKV_BQ 32
/* dq pass: queries per block (256 threads), keys per shared K/V tile. */
#define DQ_BQ 64
#define DQ_BK 32
/* delta kernel: rows per block, one warp each. */
#define DELTA_ROWS 8

/* The sum of a partial dot product over the 4 lanes of a quad, the same bits
 * in each lane. Every lane of the warp must call it. */
__device__ __forceinline__ float quad_sum(float x)
{
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

/* Offset of element (b, t, head, 0) of a [B,T,NH,D] tensor. */
__device__ __forceinline__ size_t at(int b, int t, int head, int T, int NH, int D)
{
    return (((size_t)b * T + t) * NH + head) * D;
}

/* Rows r0 .. r0+ROWS-1 of head HEAD of a [B,T,NH,D] tensor into the shared
 * tile dst[ROWS][D], as float4s by the whole block; rows at or past T are
 * zeros. */
template <int D, int ROWS>
__device__ __forceinline__ void load_tile(float (*dst)[D], const float *src, int b, int r0,
                                          int head, int T, int NH)
{
    constexpr int V4 = D / 4;
    for (int e = threadIdx.x; e < ROWS * V4; e += blockDim.x) {
        int r = e / V4, c = (e % V4) * 4, t = r0 + r;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (t < T)
            x = *(const float4 *)(src + at(b, t, head, T, NH, D) + c);
        *(float4 *)&dst[r][c] = x;
    }
}

/* ---- forward ---------------------------------------------------------------- */

/* One block per (query tile, h, b); the tiles are taken last first, so the
 * longest (nearest the end of the sequence, most keys) start earliest. Each
 * row keeps the running max m and sum l of its exponentials and an output
 * accumulator scaled to m; a new K/V tile rescales them by exp(m_old - m_new).
 * Key tiles run from 0 up to the one holding the block's last query, so only
 * the diagonal tile has masked keys (past the row's own position). Rows past
 * T compute on zero queries, finite, and write nothing. */
template <int D>
__global__ void __launch_bounds__(FWD_BQ *QUAD)
    attn_fwd_k(float *out, float *lse, const float *q, const float *k, const float *v, int T,
               int H, int KV, float scale)
{
    constexpr int C = D / QUAD;
    __shared__ __align__(16) float ks[FWD_BK][D];
    __shared__ __align__(16) float vs[FWD_BK][D];
    int q0 = (gridDim.x - 1 - blockIdx.x) * FWD_BQ, h = blockIdx.y, b = blockIdx.z;
    int kh = h / (H / KV), lane = threadIdx.x % QUAD, i = q0 + threadIdx.x / QUAD;
    bool live = i < T;

    float qr[C], acc[C];
#pragma unroll
    for (int m = 0; m < C; m++) {
        qr[m] = live ? q[at(b, i, h, T, H, D) + lane + QUAD * m] : 0.f;
        acc[m] = 0.f;
    }
    float mrow = -INFINITY, lrow = 0.f;
    int nk = min(q0 + FWD_BQ, T); /* keys 0 .. nk-1 reach some row of the block */
    for (int k0 = 0; k0 < nk; k0 += FWD_BK) {
        __syncthreads(); /* the previous tile is consumed */
        load_tile<D, FWD_BK>(ks, k, b, k0, kh, T, KV);
        load_tile<D, FWD_BK>(vs, v, b, k0, kh, T, KV);
        __syncthreads();

        float s[FWD_BK], mt = -INFINITY;
#pragma unroll
        for (int j = 0; j < FWD_BK; j++) {
            float d = 0.f;
#pragma unroll
            for (int m = 0; m < C; m++)
                d = fmaf(qr[m], ks[j][lane + QUAD * m], d);
            d = quad_sum(d);
            s[j] = k0 + j <= i ? d * scale : -INFINITY;
            mt = fmaxf(mt, s[j]);
        }
        /* Key 0 is in the first tile and visible to every row, so mnew is
         * finite from there on; the first alpha is exp(-inf) = 0. */
        float mnew = fmaxf(mrow, mt), alpha = expf(mrow - mnew);
        lrow *= alpha;
#pragma unroll
        for (int m = 0; m < C; m++)
            acc[m] *= alpha;
#pragma unroll
        for (int j = 0; j < FWD_BK; j++) {
            float p = expf(s[j] - mnew); /* 0 for the masked keys */
            lrow += p;
#pragma unroll
            for (int m = 0; m < C; m++)
                acc[m] = fmaf(p, vs[j][lane + QUAD * m], acc[m]);
        }
        mrow = mnew;
    }
    if (!live)
        return;
#pragma unroll
    for (int m = 0; m < C; m++)
        out[at(b, i, h, T, H, D) + lane + QUAD * m] = acc[m] / lrow;
    if (lse && lane == 0)
        lse[((size_t)b * T + i) * H + h] = mrow + logf(lrow);
}

/* ---- backward --------------------------------------------------------------- */

/* delta = rowsum(dout o out) over D, one warp per (b, t, h) row: lane-strided
 * partial sums, then a shuffle tree. */
__global__ void __launch_bounds__(DELTA_ROWS * 32)
    attn_delta_k(float *delta, const float *dout, const float *out, size_t rows, int D)
{
    size_t r = (size_t)blockIdx.x * DELTA_ROWS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) /* a whole warp leaves together */
        return;
    float s = 0.f;
    for (int c = lane; c < D; c += 32)
        s = fmaf(dout[r * D + c], out[r * D + c], s);
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0)
        delta[r] = s;
}

/* dk, dv: one block per (key tile, kv head, b), the tiles first first (key
 * tile 0 sees every query, the longest). A key's quad holds its k and v rows
 * and its dk, dv accumulators. For each query head of the group, Q and dO
 * tiles stream through shared memory from the tile holding the block's first
 * key to the end; per query i (in order) the quad rebuilds
 *   p = exp(scale q_i.k_j - lse_i) (0 above the diagonal, i < j),
 *   ds = p (dO_i.v_j - delta_i),
 * and adds p dO_i to dv, ds q_i to dk. The scale of dk is applied once at the
 * end. Rows past T (keys) compute on zeros and write nothing. */
template <int D>
__global__ void __launch_bounds__(DKV_BK *QUAD)
    attn_bwd_dkdv_k(float *dk, float *dv, const float *dout, const float *q, const float *k,
                    const float *v, const float *lse, const float *delta, int T, int H,
                    int KV, float scale)
{
    constexpr int C = D / QUAD;
    __shared__ __align__(16) float qs[DKV_BQ][D];
    __shared__ __align__(16) float dos[DKV_BQ][D];
    __shared__ float ls[DKV_BQ], dls[DKV_BQ];
    int k0 = blockIdx.x * DKV_BK, kh = blockIdx.y, b = blockIdx.z, group = H / KV;
    int lane = threadIdx.x % QUAD, j = k0 + threadIdx.x / QUAD;
    bool live = j < T;

    float kr[C], vr[C], dka[C], dva[C];
#pragma unroll
    for (int m = 0; m < C; m++) {
        kr[m] = live ? k[at(b, j, kh, T, KV, D) + lane + QUAD * m] : 0.f;
        vr[m] = live ? v[at(b, j, kh, T, KV, D) + lane + QUAD * m] : 0.f;
        dka[m] = dva[m] = 0.f;
    }
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        for (int i0 = k0 / DKV_BQ * DKV_BQ; i0 < T; i0 += DKV_BQ) {
            __syncthreads(); /* the previous tile is consumed */
            load_tile<D, DKV_BQ>(qs, q, b, i0, h, T, H);
            load_tile<D, DKV_BQ>(dos, dout, b, i0, h, T, H);
            if (threadIdx.x < DKV_BQ && i0 + (int)threadIdx.x < T) {
                size_t r = ((size_t)b * T + i0 + threadIdx.x) * H + h;
                ls[threadIdx.x] = lse[r];
                dls[threadIdx.x] = delta[r];
            }
            __syncthreads();
            int nq = min(DKV_BQ, T - i0); /* the same for the whole block */
            for (int r = 0; r < nq; r++) {
                float s = 0.f, dp = 0.f;
#pragma unroll
                for (int m = 0; m < C; m++) {
                    s = fmaf(kr[m], qs[r][lane + QUAD * m], s);
                    dp = fmaf(vr[m], dos[r][lane + QUAD * m], dp);
                }
                s = quad_sum(s);
                dp = quad_sum(dp);
                float p = i0 + r >= j ? expf(s * scale - ls[r]) : 0.f;
                float ds = p * (dp - dls[r]);
#pragma unroll
                for (int m = 0; m < C; m++) {
                    dva[m] = fmaf(p, dos[r][lane + QUAD * m], dva[m]);
                    dka[m] = fmaf(ds, qs[r][lane + QUAD * m], dka[m]);
                }
            }
        }
    }
    if (!live)
        return;
#pragma unroll
    for (int m = 0; m < C; m++) {
        size_t o = at(b, j, kh, T, KV, D) + lane + QUAD * m;
        dk[o] += scale * dka[m];
        dv[o] += dva[m];
    }
}

/* dq: one block per (query tile, h, b), tiles last first. A query's quad holds
 * its q and dO rows, lse, delta and the dq accumulator; K/V tiles of the kv
 * head stream through shared memory up to the block's last query, and per key
 * j (in order) the quad rebuilds p and ds as the dk/dv pass does and adds
 * ds k_j to dq, scaled once at the end. Rows past T write nothing. */
template <int D>
__global__ void __launch_bounds__(DQ_BQ *QUAD)
    attn_bwd_dq_k(float *dq, const float *dout, const float *q, const float *k, const float *v,
                  const float *lse, const float *delta, int T, int H, int KV, float scale)
{
    constexpr int C = D / QUAD;
    __shared__ __align__(16) float ks[DQ_BK][D];
    __shared__ __align__(16) float vs[DQ_BK][D];
    int q0 = (gridDim.x - 1 - blockIdx.x) * DQ_BQ, h = blockIdx.y, b = blockIdx.z;
    int kh = h / (H / KV), lane = threadIdx.x % QUAD, i = q0 + threadIdx.x / QUAD;
    bool live = i < T;

    float qr[C], dor[C], dqa[C];
#pragma unroll
    for (int m = 0; m < C; m++) {
        qr[m] = live ? q[at(b, i, h, T, H, D) + lane + QUAD * m] : 0.f;
        dor[m] = live ? dout[at(b, i, h, T, H, D) + lane + QUAD * m] : 0.f;
        dqa[m] = 0.f;
    }
    size_t row = ((size_t)b * T + i) * H + h;
    float l = live ? lse[row] : 0.f, dl = live ? delta[row] : 0.f;
    int nk = min(q0 + DQ_BQ, T);
    for (int k0 = 0; k0 < nk; k0 += DQ_BK) {
        __syncthreads(); /* the previous tile is consumed */
        load_tile<D, DQ_BK>(ks, k, b, k0, kh, T, KV);
        load_tile<D, DQ_BK>(vs, v, b, k0, kh, T, KV);
        __syncthreads();
        int nj = min(DQ_BK, nk - k0); /* the same for the whole block */
        for (int jj = 0; jj < nj; jj++) {
            float s = 0.f, dp = 0.f;
#pragma unroll
            for (int m = 0; m < C; m++) {
                s = fmaf(qr[m], ks[jj][lane + QUAD * m], s);
                dp = fmaf(dor[m], vs[jj][lane + QUAD * m], dp);
            }
            s = quad_sum(s);
            dp = quad_sum(dp);
            float p = k0 + jj <= i ? expf(s * scale - l) : 0.f;
            float ds = p * (dp - dl);
#pragma unroll
            for (int m = 0; m < C; m++)
                dqa[m] = fmaf(ds, ks[jj][lane + QUAD * m], dqa[m]);
        }
    }
    if (!live)
        return;
#pragma unroll
    for (int m = 0; m < C; m++)
        dq[at(b, i, h, T, H, D) + lane + QUAD * m] += scale * dqa[m];
}

/* ---- launchers -------------------------------------------------------------- */

static bool shape_ok(int B, int T, int H, int KV, int D)
{
    return B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0 &&
           (D == 16 || D == 32 || D == 64 || D == 128);
}

template <int D>
static void fwd_launch(float *out, float *lse, const float *q, const float *k, const float *v,
                       int B, int T, int H, int KV, cudaStream_t stream)
{
    dim3 grid((T + FWD_BQ - 1) / FWD_BQ, H, B);
    attn_fwd_k<D><<<grid, FWD_BQ * QUAD, 0, stream>>>(out, lse, q, k, v, T, H, KV,
                                                      (float)(1 / sqrt((double)D)));
}

extern "C" cudaError_t gk_cu_attention_fwd(float *out, float *lse, const float *q,
                                           const float *k, const float *v, int B, int T,
                                           int H, int KV, int D, cudaStream_t stream)
{
    if (!shape_ok(B, T, H, KV, D))
        return cudaErrorInvalidValue;
    if (B == 0 || T == 0)
        return cudaGetLastError();
    switch (D) {
    case 16: fwd_launch<16>(out, lse, q, k, v, B, T, H, KV, stream); break;
    case 32: fwd_launch<32>(out, lse, q, k, v, B, T, H, KV, stream); break;
    case 64: fwd_launch<64>(out, lse, q, k, v, B, T, H, KV, stream); break;
    default: fwd_launch<128>(out, lse, q, k, v, B, T, H, KV, stream); break;
    }
    return cudaGetLastError();
}

extern "C" size_t gk_cu_attention_bwd_workspace(int B, int T, int H)
{
    return (size_t)B * T * H * sizeof(float);
}

template <int D>
static void bwd_launch(float *dq, float *dk, float *dv, const float *dout, const float *lse,
                       const float *q, const float *k, const float *v, const float *delta,
                       int B, int T, int H, int KV, cudaStream_t stream)
{
    float scale = (float)(1 / sqrt((double)D));
    dim3 gkv((T + DKV_BK - 1) / DKV_BK, KV, B), gq((T + DQ_BQ - 1) / DQ_BQ, H, B);
    attn_bwd_dkdv_k<D><<<gkv, DKV_BK * QUAD, 0, stream>>>(dk, dv, dout, q, k, v, lse, delta, T,
                                                          H, KV, scale);
    attn_bwd_dq_k<D><<<gq, DQ_BQ * QUAD, 0, stream>>>(dq, dout, q, k, v, lse, delta, T, H, KV,
                                                      scale);
}

extern "C" cudaError_t gk_cu_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                                           const float *out, const float *lse, const float *q,
                                           const float *k, const float *v, int B, int T, int H,
                                           int KV, int D, void *workspace, cudaStream_t stream)
{
    if (!shape_ok(B, T, H, KV, D))
        return cudaErrorInvalidValue;
    if (B == 0 || T == 0)
        return cudaGetLastError();
    float *delta = (float *)workspace;
    size_t rows = (size_t)B * T * H;
    attn_delta_k<<<(unsigned)((rows + DELTA_ROWS - 1) / DELTA_ROWS), DELTA_ROWS * 32, 0,
                   stream>>>(delta, dout, out, rows, D);
    switch (D) {
    case 16: bwd_launch<16>(dq, dk, dv, dout, lse, q, k, v, delta, B, T, H, KV, stream); break;
    case 32: bwd_launch<32>(dq, dk, dv, dout, lse, q, k, v, delta, B, T, H, KV, stream); break;
    case 64: bwd_launch<64>(dq, dk, dv, dout, lse, q, k, v, delta, B, T, H, KV, stream); break;
    default: bwd_launch<128>(dq, dk, dv, dout, lse, q, k, v, delta, B, T, H, KV, stream); break;
    }
    return cudaGetLastError();
}
