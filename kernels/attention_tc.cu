/* attention_tc: the kernels of kernels/attention_tc.h, causal GQA flash
 * attention with bf16 operands on the tensor cores (mma.sync m16n8k16, fp32
 * accumulation) and the online softmax in fp32, tiled as FlashAttention-2.
 *
 * Building blocks. Every block is 4 warps; a warp owns whole 16-row m-tiles
 * (queries in the forward and the dq pass, keys in the dk/dv pass), so the
 * softmax state and the accumulators of a row live in the registers of one
 * quad of lanes and no warp ever waits for another's partial sums. Tiles
 * stream from global to shared memory with cp.async (16-byte chunks, zero-
 * filled past T), double-buffered: the copy of tile n+1 runs under the
 * products of tile n, with one __syncthreads per tile. Shared rows are padded
 * by 16 bytes (stride D+8 elements, an odd number of 16-byte chunks), so the
 * 8 row addresses of every ldmatrix phase fall in distinct bank groups.
 * Operands reach the MMAs by ldmatrix: A (16x16, row-major) and B^T (rows are
 * the n index: K for S = Q K^T) straight, B stored [k][n] (V for P V, dO for
 * P^T dO) with .trans. The fp32 accumulator of one product becomes the A
 * operand of the next in registers (the m16n8 C layout of two adjacent
 * n-tiles is the m16k16 A layout), rounded to bf16: P before P V in the
 * forward, P and dS before their products in the backward.
 *
 * Forward: one block per (query tile, h, b), tiles last first (the longest
 * start earliest). For D <= 64 a warp holds two m-tiles (32 queries, 128 per
 * block), so each K/V fragment read from shared memory feeds two MMAs (one
 * m-tile per warp at 3 blocks per SM measured 8% slower on an H100). D = 128
 * keeps one m-tile (its O accumulator alone is 64 registers). Q fragments
 * stay in registers; K/V tiles of 64 keys run from 0 to the diagonal; only
 * tiles crossing the diagonal or T carry masking instructions (mask_tile),
 * and a warp skips tiles wholly above its rows.
 *
 * Backward, deterministic with no atomics, three kernels on one stream:
 *  1. prep: per row delta = dout . out (fp32 from the bf16 values) and the
 *     lse in base 2, both written [B,H,T] into the workspace so the tile
 *     loads below are contiguous.
 *  2. dk, dv: one block per (key tile of 64, kv head, b); each warp owns 16
 *     keys. Q, dO, lse and delta tiles of the group's query heads stream
 *     through shared memory, head by head in order and query tile by tile
 *     from the diagonal on; per tile the warp forms S^T = K Q^T and
 *     dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta), and
 *     accumulates dV += P^T dO, dK += dS^T Q in registers: a fixed order,
 *     one writer per element. dV leaves in bf16, the type c_v's product reads.
 *  3. dq: one block per (query tile of 64, h, b); each warp owns 16 queries,
 *     K/V tiles stream from 0 to the diagonal, and the warp rebuilds P and dS
 *     as above and accumulates dQ += dS K.
 * S and dP are thus formed twice (7 matrix products instead of 5), the price
 * of determinism without a T x T scratch, as in FlashAttention-2's
 * deterministic mode. The softmax scale is folded into the exponent
 * (exp2 of s * scale * log2 e - lse * log2 e) and applied to dq and dk once
 * at the end.
 *
 * Speed, H100, B 32 T 1024 H 8 KV 4 D 64 (check_attention_tc.cu's timing):
 * forward 0.165 ms, 208 TFLOP/s counting 4 B H T^2 D / 2; backward 0.61 ms,
 * 141 TFLOP/s counting 2.5 times that; 16x and 12x the fp32 kernels of
 * attention.cu. Nsight Compute puts the forward at 2 warps per scheduler
 * (registers and shared memory), issuing on 45% of cycles, most stalls on
 * fixed-latency dependencies: latency-bound, not tensor-core-bound. 8-warp
 * blocks and higher occupancy (smaller tiles) measured no faster; keeping the
 * masks off the inner tiles and a one-instruction exp2 gave 30% on the
 * forward. The next step is wgmma (sm_90a) with warp-specialised TMA loads,
 * as FlashAttention-3. */
#include "attention_tc.h"

#include <math.h>
#include <stdint.h>

#define NWARPS 4
#define THREADS (NWARPS * 32)
/* Padding of each shared row, in elements: 16 bytes. */
#define PAD 8
/* Forward: m-tiles per warp, keys per K/V tile. */
#define FWD_MT(D) ((D) <= 64 ? 2 : 1)
#define FWD_BK 64
/* dk/dv pass: keys per block (16 per warp), queries per Q/dO tile; D = 128
 * halves the query tile to keep S^T, dP^T, dK and dV in registers. */
#define DKV_BK (16 * NWARPS)
#define DKV_BQ(D) ((D) <= 64 ? 64 : 32)
/* dq pass: queries per block (16 per warp), keys per K/V tile, and the
 * blocks per SM its register budget is capped for: 3 (168 registers, no
 * spills) where D <= 64, measured faster on an H100 than the 2 that the
 * compiler's own choice allows. */
#define DQ_BQ (16 * NWARPS)
#define DQ_BK(D) ((D) <= 64 ? 64 : 32)
#define DQ_MINB(D) ((D) <= 64 ? 3 : 1)
/* prep kernel: threads a block; a row of D values is D / 8 lanes' (one
 * 16-byte load of each operand a lane). */
#define PREP_THREADS 256

#define LOG2E 1.4426950408889634
#define LN2 0.69314718055994531f

/* ---- PTX wrappers -------------------------------------------------------------- */

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, asynchronous; zeros when !valid (src unread). */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void cp_async4(void *dst, const void *src, bool valid)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(valid ? 4 : 0));
}

__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

__device__ __forceinline__ void cp_wait_all()
{
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

/* Four 8x8 bf16 matrices; lanes 8i..8i+7 give the row addresses of matrix i. */
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* c (16x8 fp32) += a (16x16 bf16) b (16x8 bf16). */
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 2^x, one MUFU.EX2: flushing results below 2^-126 to 0 drops nothing a
 * softmax sum of fp32 terms of at most 1 would keep (exp2f, which keeps
 * them, adds a range check and two multiplies around it); exp2(-inf) = 0. */
__device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Two floats as a bf16 pair, round to nearest; LO in the low half (the lower
 * column of an MMA fragment). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    uint32_t u;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(u) : "f"(hi), "f"(lo));
    return u;
}

/* ---- fragments from shared tiles (row stride SD elements) ------------------------ */

/* The A fragment of rows row0..row0+15, columns col0..col0+15. */
template <int SD>
__device__ __forceinline__ void ld_a(uint32_t (&a)[4], const gk_bf16 *t, int row0, int col0,
                                     int lane)
{
    ldsm_x4(a, t + (row0 + (lane & 7) + (lane >> 3 & 1) * 8) * SD + col0 + (lane >> 4) * 8);
}

/* B fragments of two n-tiles from a tile stored [n][k]: rows n0..n0+15,
 * columns (k) k0..k0+15; b[0], b[1] for rows n0.., b[2], b[3] for n0+8... */
template <int SD>
__device__ __forceinline__ void ld_bt(uint32_t (&b)[4], const gk_bf16 *t, int n0, int k0,
                                      int lane)
{
    ldsm_x4(b, t + (n0 + (lane & 7) + (lane >> 4) * 8) * SD + k0 + (lane >> 3 & 1) * 8);
}

/* B fragments of two n-tiles from a tile stored [k][n]: rows (k) k0..k0+15,
 * columns n0..n0+15, transposed by ldmatrix. */
template <int SD>
__device__ __forceinline__ void ld_b(uint32_t (&b)[4], const gk_bf16 *t, int k0, int n0,
                                     int lane)
{
    ldsm_x4_t(b, t + (k0 + (lane & 7) + (lane >> 3 & 1) * 8) * SD + n0 + (lane >> 4) * 8);
}

/* acc (16 x 8NT) += A[arow..arow+15][0..16KS) Bt[0..8NT)[0..16KS)^T, both
 * operands in shared memory. */
template <int SD, int NT, int KS>
__device__ __forceinline__ void mma_abt(float (&acc)[NT][4], const gk_bf16 *a, int arow,
                                        const gk_bf16 *bt, int lane)
{
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t af[4];
        ld_a<SD>(af, a, arow, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t bf[4];
            ld_bt<SD>(bf, bt, np * 16, kk * 16, lane);
            mma(acc[2 * np], af, bf[0], bf[1]);
            mma(acc[2 * np + 1], af, bf[2], bf[3]);
        }
    }
}

/* The A fragment of columns 16kk..16kk+15 of a 16-row fp32 accumulator, as
 * bf16. */
template <int NT>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&p)[NT][4], int kk)
{
    a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
    a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
    a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
}

/* acc (16 x 8DT) += P (16 x 8PT, an accumulator, rounded to bf16) B, B the
 * shared tile [8PT][8DT] stored [k][n]. */
template <int SD, int PT, int DT>
__device__ __forceinline__ void mma_pb(float (&acc)[DT][4], const float (&p)[PT][4],
                                       const gk_bf16 *b, int lane)
{
#pragma unroll
    for (int kk = 0; kk < PT / 2; kk++) {
        uint32_t a[4];
        acc_to_a<PT>(a, p, kk);
#pragma unroll
        for (int dp = 0; dp < DT / 2; dp++) {
            uint32_t bf[4];
            ld_b<SD>(bf, b, kk * 16, dp * 16, lane);
            mma(acc[2 * dp], a, bf[0], bf[1]);
            mma(acc[2 * dp + 1], a, bf[2], bf[3]);
        }
    }
}

/* Set to X the elements of a 16 x 8NT accumulator tile (element (i, j) at
 * row r0 + i, column c0 + j) that the causal mask or the sequence's end
 * hides: a column at or past T, or a column after its row (KEYS_IN_COLS:
 * columns are keys, as in the forward and the dq pass) or before it (rows
 * are keys, as in the dk/dv pass). Called only on the tiles that cross the
 * diagonal or T, so the others carry no masking instructions. */
template <bool KEYS_IN_COLS, int NT>
__device__ __forceinline__ void mask_tile(float (&acc)[NT][4], int r0, int c0, int T, float x,
                                          int lane)
{
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int c = c0 + j * 8 + (lane & 3) * 2 + (e & 1), r = r0 + (lane >> 2) + (e >> 1) * 8;
            if (c >= T || (KEYS_IN_COLS ? c > r : c < r))
                acc[j][e] = x;
        }
}

/* Rows r0..r0+ROWS-1 of head HEAD of a [B,T,NH,D] bf16 tensor into the shared
 * tile dst[ROWS][D+PAD], by the whole block, asynchronously; rows at or past T
 * are zeros (finite, so masked probabilities of 0 times them stay 0). */
template <int D, int ROWS>
__device__ __forceinline__ void load_rows(gk_bf16 *dst, const gk_bf16 *src, int b, int r0,
                                          int head, int T, int NH)
{
    constexpr int CH = D / 8; /* 16-byte chunks per row */
    static_assert(ROWS * CH % THREADS == 0, "whole rounds of chunks");
#pragma unroll
    for (int i = 0; i < ROWS * CH / THREADS; i++) {
        int e = threadIdx.x + i * THREADS, r = e / CH, c = e % CH, t = r0 + r;
        bool ok = t < T;
        const gk_bf16 *g = ok ? src + (((size_t)b * T + t) * NH + head) * D + c * 8 : src;
        cp_async16(dst + r * (D + PAD) + c * 8, g, ok);
    }
}

/* ---- forward ------------------------------------------------------------------- */

template <int D>
__global__ void __launch_bounds__(THREADS, 1)
    attn_tc_fwd_k(gk_bf16 *out, float *lse, const gk_bf16 *q, const gk_bf16 *k,
                  const gk_bf16 *v, int T, int H, int KV, float sl2)
{
    constexpr int MT = FWD_MT(D), BM = 16 * MT * NWARPS, SD = D + PAD, NT = FWD_BK / 8,
                  DT = D / 8, KS = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    gk_bf16 *qsm = (gk_bf16 *)smem, *ksm = qsm + BM * SD, *vsm = ksm + 2 * FWD_BK * SD;
    int q0 = (gridDim.x - 1 - blockIdx.x) * BM, h = blockIdx.y, b = blockIdx.z;
    int kh = h / (H / KV), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int w0 = q0 + warp * 16 * MT; /* the warp's first query */
    int nkt = (min(q0 + BM, T) + FWD_BK - 1) / FWD_BK;

    load_rows<D, BM>(qsm, q, b, q0, h, T, H);
    load_rows<D, FWD_BK>(ksm, k, b, 0, kh, T, KV);
    load_rows<D, FWD_BK>(vsm, v, b, 0, kh, T, KV);
    cp_commit();

    /* Per m-tile, lane holds rows lane/4 and lane/4 + 8 (index r = 0, 1):
     * the running max m (raw score units), this lane's share of the running
     * sum l (the quad's shares are added at the end), and O unnormalised. */
    uint32_t qf[MT][KS][4];
    float o[MT][DT][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int d = 0; d < DT; d++)
            o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }

    for (int kt = 0; kt < nkt; kt++) {
        cp_wait_all();
        __syncthreads(); /* tile kt is in; every warp is done with tile kt-1 */
        if (kt + 1 < nkt) {
            int nb = (kt + 1) & 1;
            load_rows<D, FWD_BK>(ksm + nb * FWD_BK * SD, k, b, (kt + 1) * FWD_BK, kh, T, KV);
            load_rows<D, FWD_BK>(vsm + nb * FWD_BK * SD, v, b, (kt + 1) * FWD_BK, kh, T, KV);
            cp_commit();
        }
        if (kt == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < KS; kk++)
                    ld_a<SD>(qf[mt][kk], qsm, warp * 16 * MT + mt * 16, kk * 16, lane);
        }
        int k0 = kt * FWD_BK;
        if (k0 > w0 + 16 * MT - 1) /* every key of the tile is after every row */
            continue;
        const gk_bf16 *kb = ksm + (kt & 1) * FWD_BK * SD, *vb = vsm + (kt & 1) * FWD_BK * SD;

        /* S = Q K^T, each K fragment feeding MT m-tiles. */
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NT; j++)
                s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bf[4];
                ld_bt<SD>(bf, kb, np * 16, kk * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma(s[mt][2 * np], qf[mt][kk], bf[0], bf[1]);
                    mma(s[mt][2 * np + 1], qf[mt][kk], bf[2], bf[3]);
                }
            }

        /* Online softmax. Key 0 is visible to every row and in tile 0, so the
         * max is finite from the first tile on and the first rescale factor
         * is exp2(-inf) = 0. */
        if (k0 + FWD_BK - 1 > w0 || k0 + FWD_BK > T)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                mask_tile<true, NT>(s[mt], w0 + mt * 16, k0, T, -INFINITY, lane);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float mx[2] = {m[mt][0], m[mt][1]}, msc[2];
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][j][e]);
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                msc[r] = mx[r] * sl2;
                float alpha = ex2(m[mt][r] * sl2 - msc[r]);
                m[mt][r] = mx[r];
                l[mt][r] *= alpha;
#pragma unroll
                for (int d = 0; d < DT; d++) {
                    o[mt][d][2 * r] *= alpha;
                    o[mt][d][2 * r + 1] *= alpha;
                }
            }
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = ex2(fmaf(s[mt][j][e], sl2, -msc[e >> 1]));
                    s[mt][j][e] = p;
                    l[mt][e >> 1] += p;
                }
        }

        /* O += P V, each V fragment feeding MT m-tiles. */
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                acc_to_a<NT>(pa[mt], s[mt], kk);
#pragma unroll
            for (int dp = 0; dp < DT / 2; dp++) {
                uint32_t bf[4];
                ld_b<SD>(bf, vb, kk * 16, dp * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma(o[mt][2 * dp], pa[mt], bf[0], bf[1]);
                    mma(o[mt][2 * dp + 1], pa[mt], bf[2], bf[3]);
                }
            }
        }
    }

    /* out = O / l as bf16 pairs, lse = ln(sum exp(scaled s)) = (m sl2 + log2 l) ln 2. */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float sum = l[mt][r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            int row = w0 + mt * 16 + (lane >> 2) + r * 8;
            if (row >= T)
                continue;
            float inv = 1.f / sum;
            gk_bf16 *op = out + (((size_t)b * T + row) * H + h) * D + (lane & 3) * 2;
#pragma unroll
            for (int d = 0; d < DT; d++)
                *(__nv_bfloat162 *)(op + d * 8) =
                    __floats2bfloat162_rn(o[mt][d][2 * r] * inv, o[mt][d][2 * r + 1] * inv);
            if (lse && (lane & 3) == 0)
                lse[((size_t)b * T + row) * H + h] = (m[mt][r] * sl2 + log2f(sum)) * LN2;
        }
}

/* ---- backward ------------------------------------------------------------------ */

/* Row r = (b, t, h) of dout and out: delta = dout . out and lse * log2 e, both
 * written at (b, h, t). L = D / 8 lanes per row, eight bf16 of each operand a
 * lane by one 16-byte load (a warp-per-row version with 4-byte loads ran at
 * about 40% of the bandwidth), then a shuffle tree over the L lanes. Groups
 * past the last row run with zeros so every lane reaches the shuffles. */
template <int L>
__global__ void __launch_bounds__(PREP_THREADS)
    attn_tc_prep_k(float *lse2, float *delta, const gk_bf16 *dout, const gk_bf16 *out,
                   const float *lse, int T, int H, size_t rows)
{
    size_t r = ((size_t)blockIdx.x * PREP_THREADS + threadIdx.x) / L;
    int lane = threadIdx.x % L;
    bool live = r < rows;
    float s = 0.f;
    if (live) {
        uint4 a = *(const uint4 *)(dout + r * (8 * L) + lane * 8);
        uint4 o = *(const uint4 *)(out + r * (8 * L) + lane * 8);
        const __nv_bfloat162 *ap = (const __nv_bfloat162 *)&a, *op = (const __nv_bfloat162 *)&o;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float2 x = __bfloat1622float2(ap[j]), y = __bfloat1622float2(op[j]);
            s = fmaf(x.x, y.x, s);
            s = fmaf(x.y, y.y, s);
        }
    }
#pragma unroll
    for (int x = L / 2; x > 0; x >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, x);
    if (live && lane == 0) {
        size_t h = r % H, t = r / H % T, b = r / H / T, i = (b * H + h) * T + t;
        lse2[i] = lse[r] * (float)LOG2E;
        delta[i] = s;
    }
}

template <int D>
static void prep_launch(float *lse2, float *delta, const gk_bf16 *dout, const gk_bf16 *out,
                        const float *lse, int T, int H, size_t rows, cudaStream_t stream)
{
    constexpr int L = D / 8, PER_BLOCK = PREP_THREADS / L;
    attn_tc_prep_k<L><<<(unsigned)((rows + PER_BLOCK - 1) / PER_BLOCK), PREP_THREADS, 0,
                        stream>>>(lse2, delta, dout, out, lse, T, H, rows);
}

/* The Q, dO, lse2 and delta tiles of query tile I0 of head H, into buffer BUF. */
template <int D, int BQ>
__device__ __forceinline__ void dkdv_load(gk_bf16 *qsm, gk_bf16 *dosm, float *lsm, float *dlsm,
                                          const gk_bf16 *q, const gk_bf16 *dout,
                                          const float *lse2, const float *delta, int b, int h,
                                          int i0, int T, int H)
{
    load_rows<D, BQ>(qsm, q, b, i0, h, T, H);
    load_rows<D, BQ>(dosm, dout, b, i0, h, T, H);
    int x = threadIdx.x % BQ, t = i0 + x;
    const float *src = threadIdx.x < BQ ? lse2 : delta;
    float *dst = threadIdx.x < BQ ? lsm : dlsm;
    if (threadIdx.x < 2 * BQ)
        cp_async4(dst + x, src + ((size_t)b * H + h) * T + (t < T ? t : 0), t < T);
}

template <int D>
__global__ void __launch_bounds__(THREADS, 1)
    attn_tc_dkdv_k(float *dk, gk_bf16 *dv, int ldv, const gk_bf16 *dout, const gk_bf16 *q,
                   const gk_bf16 *k, const gk_bf16 *v, const float *lse2, const float *delta,
                   int T, int H, int KV, float sl2, float scale)
{
    constexpr int BQ = DKV_BQ(D), SD = D + PAD, NT = BQ / 8, DT = D / 8, KS = D / 16;
    static_assert(2 * BQ <= THREADS, "one thread per lse and delta value");
    extern __shared__ __align__(16) unsigned char smem[];
    float *lsm = (float *)smem, *dlsm = lsm + 2 * BQ; /* [2][BQ] each */
    gk_bf16 *ksm = (gk_bf16 *)(dlsm + 2 * BQ), *vsm = ksm + DKV_BK * SD;
    gk_bf16 *qsm = vsm + DKV_BK * SD, *dosm = qsm + 2 * BQ * SD; /* [2][BQ][SD] each */
    int k0 = blockIdx.x * DKV_BK, kh = blockIdx.y, b = blockIdx.z, group = H / KV;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, w0 = k0 + warp * 16;
    /* Query tiles from the one holding key k0 to the end, for each head of
     * the group in order: n iterations in all. */
    int qt0 = k0 / BQ, nqt = (T + BQ - 1) / BQ - qt0, n = group * nqt;

    load_rows<D, DKV_BK>(ksm, k, b, k0, kh, T, KV);
    load_rows<D, DKV_BK>(vsm, v, b, k0, kh, T, KV);
    dkdv_load<D, BQ>(qsm, dosm, lsm, dlsm, q, dout, lse2, delta, b, kh * group, qt0 * BQ, T, H);
    cp_commit();

    float dva[DT][4], dka[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dva[d][e] = dka[d][e] = 0.f;

    for (int it = 0; it < n; it++) {
        cp_wait_all();
        __syncthreads(); /* tile it is in; every warp is done with tile it-1 */
        if (it + 1 < n) {
            int nb = (it + 1) & 1;
            dkdv_load<D, BQ>(qsm + nb * BQ * SD, dosm + nb * BQ * SD, lsm + nb * BQ,
                             dlsm + nb * BQ, q, dout, lse2, delta, b,
                             kh * group + (it + 1) / nqt, (qt0 + (it + 1) % nqt) * BQ, T, H);
            cp_commit();
        }
        int buf = it & 1, i0 = (qt0 + it % nqt) * BQ;
        if (i0 + BQ - 1 < w0) /* every query of the tile is before every key */
            continue;
        const gk_bf16 *qb = qsm + buf * BQ * SD, *dob = dosm + buf * BQ * SD;
        const float *lb = lsm + buf * BQ, *db = dlsm + buf * BQ;

        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[j][e] = dp[j][e] = 0.f;
        mma_abt<SD, NT, KS>(s, ksm, warp * 16, qb, lane);  /* S^T = K Q^T */
        mma_abt<SD, NT, KS>(dp, vsm, warp * 16, dob, lane); /* dP^T = V dO^T */

        /* Row = key, column = query: P^T = exp2(s sl2 - lse2), 0 where the
         * query precedes the key or is past T; dS^T = P^T (dP^T - delta). */
#pragma unroll
        for (int j = 0; j < NT; j++) {
            float2 lv = *(const float2 *)(lb + j * 8 + (lane & 3) * 2);
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[j][e] = ex2(fmaf(s[j][e], sl2, -(e & 1 ? lv.y : lv.x)));
        }
        if (i0 < w0 + 15 || i0 + BQ > T)
            mask_tile<false, NT>(s, w0, i0, T, 0.f, lane);
#pragma unroll
        for (int j = 0; j < NT; j++) {
            float2 dl = *(const float2 *)(db + j * 8 + (lane & 3) * 2);
#pragma unroll
            for (int e = 0; e < 4; e++)
                dp[j][e] = s[j][e] * (dp[j][e] - (e & 1 ? dl.y : dl.x));
        }
        mma_pb<SD, NT, DT>(dva, s, dob, lane); /* dV += P^T dO */
        mma_pb<SD, NT, DT>(dka, dp, qb, lane); /* dK += dS^T Q */
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        int kj = w0 + (lane >> 2) + r * 8;
        if (kj >= T)
            continue;
        size_t o = (((size_t)b * T + kj) * KV + kh) * D + (lane & 3) * 2;
        size_t ov = ((size_t)b * T + kj) * ldv + (size_t)kh * D + (lane & 3) * 2;
#pragma unroll
        for (int d = 0; d < DT; d++) {
            *(__nv_bfloat162 *)(dv + ov + d * 8) =
                __floats2bfloat162_rn(dva[d][2 * r], dva[d][2 * r + 1]);
            *(float2 *)(dk + o + d * 8) =
                make_float2(scale * dka[d][2 * r], scale * dka[d][2 * r + 1]);
        }
    }
}

template <int D>
__global__ void __launch_bounds__(THREADS, DQ_MINB(D))
    attn_tc_dq_k(float *dq, const gk_bf16 *dout, const gk_bf16 *q, const gk_bf16 *k,
                 const gk_bf16 *v, const float *lse2, const float *delta, int T, int H, int KV,
                 float sl2, float scale)
{
    constexpr int BK = DQ_BK(D), SD = D + PAD, NT = BK / 8, DT = D / 8, KS = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    gk_bf16 *qsm = (gk_bf16 *)smem, *dosm = qsm + DQ_BQ * SD;
    gk_bf16 *ksm = dosm + DQ_BQ * SD, *vsm = ksm + 2 * BK * SD; /* [2][BK][SD] each */
    int q0 = (gridDim.x - 1 - blockIdx.x) * DQ_BQ, h = blockIdx.y, b = blockIdx.z;
    int kh = h / (H / KV), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int w0 = q0 + warp * 16, nkt = (min(q0 + DQ_BQ, T) + BK - 1) / BK;

    load_rows<D, DQ_BQ>(qsm, q, b, q0, h, T, H);
    load_rows<D, DQ_BQ>(dosm, dout, b, q0, h, T, H);
    load_rows<D, BK>(ksm, k, b, 0, kh, T, KV);
    load_rows<D, BK>(vsm, v, b, 0, kh, T, KV);
    cp_commit();

    float lr[2], dr[2], dqa[DT][4];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = w0 + (lane >> 2) + r * 8;
        size_t i = ((size_t)b * H + h) * T + row;
        lr[r] = row < T ? lse2[i] : 0.f;
        dr[r] = row < T ? delta[i] : 0.f;
    }
#pragma unroll
    for (int d = 0; d < DT; d++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dqa[d][e] = 0.f;

    for (int kt = 0; kt < nkt; kt++) {
        cp_wait_all();
        __syncthreads(); /* tile kt is in; every warp is done with tile kt-1 */
        if (kt + 1 < nkt) {
            int nb = (kt + 1) & 1;
            load_rows<D, BK>(ksm + nb * BK * SD, k, b, (kt + 1) * BK, kh, T, KV);
            load_rows<D, BK>(vsm + nb * BK * SD, v, b, (kt + 1) * BK, kh, T, KV);
            cp_commit();
        }
        int k0 = kt * BK;
        if (k0 > w0 + 15) /* every key of the tile is after every row */
            continue;
        const gk_bf16 *kb = ksm + (kt & 1) * BK * SD, *vb = vsm + (kt & 1) * BK * SD;

        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[j][e] = dp[j][e] = 0.f;
        mma_abt<SD, NT, KS>(s, qsm, warp * 16, kb, lane);   /* S = Q K^T */
        mma_abt<SD, NT, KS>(dp, dosm, warp * 16, vb, lane); /* dP = dO V^T */

#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[j][e] = ex2(fmaf(s[j][e], sl2, -lr[e >> 1])); /* P */
        if (k0 + BK - 1 > w0 || k0 + BK > T)
            mask_tile<true, NT>(s, w0, k0, T, 0.f, lane);
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[j][e] *= dp[j][e] - dr[e >> 1]; /* dS */
        mma_pb<SD, NT, DT>(dqa, s, kb, lane); /* dQ += dS K */
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = w0 + (lane >> 2) + r * 8;
        if (row >= T)
            continue;
        float *op = dq + (((size_t)b * T + row) * H + h) * D + (lane & 3) * 2;
#pragma unroll
        for (int d = 0; d < DT; d++)
            *(float2 *)(op + d * 8) = make_float2(scale * dqa[d][2 * r], scale * dqa[d][2 * r + 1]);
    }
}

/* ---- launchers ----------------------------------------------------------------- */

static bool shape_ok(int B, int T, int H, int KV, int D)
{
    return B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0 &&
           (D == 32 || D == 64 || D == 128);
}

/* Launch KERNEL with THREADS threads and SMEM bytes of dynamic shared
 * memory, raising its limit past the default 48 KiB first. */
template <typename... P, typename... A>
static cudaError_t launch(void (*kernel)(P...), dim3 grid, int threads, size_t smem,
                          cudaStream_t stream, A... args)
{
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return e;
    kernel<<<grid, threads, smem, stream>>>(args...);
    return cudaGetLastError();
}

template <int D>
static cudaError_t fwd_launch(gk_bf16 *out, float *lse, const gk_bf16 *q, const gk_bf16 *k,
                              const gk_bf16 *v, int B, int T, int H, int KV, cudaStream_t stream)
{
    constexpr int MT = FWD_MT(D), BM = 16 * MT * NWARPS;
    size_t smem = (size_t)(BM + 4 * FWD_BK) * (D + PAD) * sizeof(gk_bf16);
    dim3 grid((T + BM - 1) / BM, H, B);
    return launch(attn_tc_fwd_k<D>, grid, THREADS, smem, stream, out, lse, q, k,
                  v, T, H, KV, (float)(LOG2E / sqrt((double)D)));
}

extern "C" cudaError_t gk_cu_attention_tc_fwd(gk_bf16 *out, float *lse, const gk_bf16 *q,
                                              const gk_bf16 *k, const gk_bf16 *v, int B, int T,
                                              int H, int KV, int D, cudaStream_t stream)
{
    if (!shape_ok(B, T, H, KV, D))
        return cudaErrorInvalidValue;
    if (B == 0 || T == 0)
        return cudaGetLastError();
    switch (D) {
    case 32: return fwd_launch<32>(out, lse, q, k, v, B, T, H, KV, stream);
    case 64: return fwd_launch<64>(out, lse, q, k, v, B, T, H, KV, stream);
    default: return fwd_launch<128>(out, lse, q, k, v, B, T, H, KV, stream);
    }
}

extern "C" size_t gk_cu_attention_tc_bwd_workspace(int B, int T, int H)
{
    return 2 * (size_t)B * T * H * sizeof(float);
}

template <int D>
static cudaError_t bwd_launch(float *dq, float *dk, gk_bf16 *dv, int ldv, const gk_bf16 *dout,
                              const gk_bf16 *q, const gk_bf16 *k, const gk_bf16 *v,
                              const float *lse2, const float *delta, int B, int T, int H, int KV,
                              cudaStream_t stream)
{
    float scale = (float)(1 / sqrt((double)D)), sl2 = (float)(LOG2E / sqrt((double)D));
    constexpr int SD = D + PAD, BQ = DKV_BQ(D), BK = DQ_BK(D);
    size_t skv = 4 * BQ * sizeof(float) + (size_t)(2 * DKV_BK + 4 * BQ) * SD * sizeof(gk_bf16);
    size_t sq = (size_t)(2 * DQ_BQ + 4 * BK) * SD * sizeof(gk_bf16);
    cudaError_t e = launch(attn_tc_dkdv_k<D>, dim3((T + DKV_BK - 1) / DKV_BK, KV, B),
                           THREADS, skv, stream, dk, dv, ldv, dout, q, k, v, lse2, delta, T, H, KV,
                           sl2, scale);
    if (e != cudaSuccess)
        return e;
    return launch(attn_tc_dq_k<D>, dim3((T + DQ_BQ - 1) / DQ_BQ, H, B),
                  THREADS, sq, stream, dq, dout, q, k, v, lse2, delta, T, H, KV, sl2, scale);
}

extern "C" cudaError_t gk_cu_attention_tc_bwd(float *dq, float *dk, gk_bf16 *dv, int ldv,
                                              const gk_bf16 *dout, const gk_bf16 *out,
                                              const float *lse, const gk_bf16 *q,
                                              const gk_bf16 *k, const gk_bf16 *v, int B, int T,
                                              int H, int KV, int D, void *workspace,
                                              cudaStream_t stream)
{
    if (!shape_ok(B, T, H, KV, D))
        return cudaErrorInvalidValue;
    if (B == 0 || T == 0)
        return cudaGetLastError();
    size_t rows = (size_t)B * T * H;
    float *lse2 = (float *)workspace, *delta = lse2 + rows;
    switch (D) {
    case 32: prep_launch<32>(lse2, delta, dout, out, lse, T, H, rows, stream); break;
    case 64: prep_launch<64>(lse2, delta, dout, out, lse, T, H, rows, stream); break;
    default: prep_launch<128>(lse2, delta, dout, out, lse, T, H, rows, stream); break;
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    switch (D) {
    case 32: return bwd_launch<32>(dq, dk, dv, ldv, dout, q, k, v, lse2, delta, B, T, H, KV, stream);
    case 64: return bwd_launch<64>(dq, dk, dv, ldv, dout, q, k, v, lse2, delta, B, T, H, KV, stream);
    default: return bwd_launch<128>(dq, dk, dv, ldv, dout, q, k, v, lse2, delta, B, T, H, KV, stream);
    }
}
