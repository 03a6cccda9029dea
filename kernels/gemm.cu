/* gemm: the linear layer's matrix products through cuBLASLt and the fp32 <->
 * bf16 conversions; the contract is in gemm.h.
 *
 * cuBLASLt is column-major and our arrays are row-major. A row-major [r,c]
 * matrix is, read column-major, its transpose [c,r] with leading dimension c,
 * so each row-major product C = A B is issued as C^T = B^T A^T on the same
 * memory, and no data is ever transposed. Each wrapper below spells out its
 * column-major form.
 *
 * Compute type CUBLAS_COMPUTE_32F with bf16 A and B: products and sums in
 * fp32, as torch's bf16 autocast does; alpha and beta are fp32. The algorithm
 * is cuBLASLt's first heuristic choice for the shape, asked once per shape
 * class and remembered in the handle's plans (gemm.h): the query costs tens
 * of microseconds of host time, which the MoE's per-expert products (about
 * 560 a micro-batch, each expert's row count new at every step) paid in full
 * after each host wait for the counts. The token count, which is n of the
 * column-major forward and dx products and k of dW's, is rounded up to a
 * multiple of 4096 above 4096 for the question, and the answer is used for
 * every count in that bucket: cuBLASLt's algorithms are tile configurations
 * valid for any size at the same alignment and types, and the choice stays a
 * function of the shape alone, so runs still repeat bit for bit. */
#include <stdint.h>
#include <string.h>

#include "gemm.h"

void gk_gemm_init(gk_gemm *g, gk_cu_arena *arena, cudaStream_t stream)
{
    GK_CUBLAS(cublasLtCreate(&g->lt));
    g->stream = stream;
    g->workspace = gk_cu_arena_alloc(arena, GK_GEMM_WORKSPACE);
    for (int i = 0; i < GK_GEMM_PLANS; i++)
        g->plan[i].key[0] = -1;
    g->asked = 0;
}

void gk_gemm_destroy(gk_gemm *g) { GK_CUBLAS(cublasLtDestroy(g->lt)); }

int gk_gemm_dims_ok(int in, int out) { return in > 0 && out > 0 && in % 8 == 0 && out % 8 == 0; }

/* Die unless the shape and the pointers meet gemm.h's requirement. */
static void require(const char *fn, int N, int in, int out, const void *a, const void *b,
                    const void *c)
{
    char why[200];
    if (N < 1 || !gk_gemm_dims_ok(in, out)) {
        snprintf(why, sizeof why,
                 "N %d, in %d, out %d: N must be positive, in and out multiples of 8 "
                 "(the bf16 tensor-core kernels' leading dimensions)",
                 N, in, out);
        gk_cu_fail(fn, __FILE__, __LINE__, why);
    }
    if (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % 16) {
        snprintf(why, sizeof why, "operands %p, %p, %p: each must be 16-byte aligned", a, b, c);
        gk_cu_fail(fn, __FILE__, __LINE__, why);
    }
}

cublasLtMatmulDesc_t gk_gemm_desc(cublasOperation_t ta, cublasOperation_t tb)
{
    cublasLtMatmulDesc_t op;
    GK_CUBLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    GK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    GK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    return op;
}

cublasLtMatmulAlgo_t gk_gemm_algo(const gk_gemm *g, cublasLtMatmulDesc_t op,
                                  cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                                  cublasLtMatrixLayout_t lc, int m, int n, int k)
{
    cublasLtMatmulPreference_t pref;
    size_t ws = GK_GEMM_WORKSPACE;
    GK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    GK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    GK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(g->lt, op, la, lb, lc, lc, pref, 1, &heur, &found));
    GK_CUBLAS(cublasLtMatmulPreferenceDestroy(pref));
    if (found < 1) {
        char why[120];
        snprintf(why, sizeof why, "no algorithm for m %d, n %d, k %d", m, n, k);
        gk_cu_fail("cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__, why);
    }
    return heur.algo;
}

/* The layouts of column-major D [m,n] = op(A) op(B), op(A) [m,k], op(B)
 * [k,n]; a layout describes the stored matrix, before op(). */
static void layouts(cublasLtMatrixLayout_t l[3], cublasOperation_t ta, cublasOperation_t tb,
                    int m, int n, int k, int lda, int ldb, int ldd, gk_out_type dt)
{
    int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
    int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
    cudaDataType_t dtype = dt == GK_OUT_F32 ? CUDA_R_32F : CUDA_R_16BF;
    GK_CUBLAS(cublasLtMatrixLayoutCreate(&l[0], CUDA_R_16BF, a_rows, a_cols, lda));
    GK_CUBLAS(cublasLtMatrixLayoutCreate(&l[1], CUDA_R_16BF, b_rows, b_cols, ldb));
    GK_CUBLAS(cublasLtMatrixLayoutCreate(&l[2], dtype, m, n, ldd));
}

static void layouts_destroy(cublasLtMatrixLayout_t l[3])
{
    for (int i = 2; i >= 0; i--)
        GK_CUBLAS(cublasLtMatrixLayoutDestroy(l[i]));
}

/* A token count's bucket (see the top of the file). */
static int bucket(int n) { return n <= 4096 ? n : (n + 4095) / 4096 * 4096; }

/* The algo for the shape class of KEY, asked of the heuristic on a miss. */
static cublasLtMatmulAlgo_t planned(gk_gemm *g, cublasLtMatmulDesc_t op, const int key[9])
{
    unsigned h = 2166136261u;
    for (int i = 0; i < 9; i++)
        h = (h ^ (unsigned)key[i]) * 16777619u;
    gk_gemm_plan *p = &g->plan[h % GK_GEMM_PLANS];
    if (memcmp(p->key, key, sizeof p->key) != 0) {
        cublasLtMatrixLayout_t l[3];
        layouts(l, (cublasOperation_t)key[0], (cublasOperation_t)key[1], key[2], key[3], key[4],
                key[5], key[6], key[7], (gk_out_type)key[8]);
        p->algo = gk_gemm_algo(g, op, l[0], l[1], l[2], key[2], key[3], key[4]);
        layouts_destroy(l);
        memcpy(p->key, key, sizeof p->key);
        g->asked++;
    }
    return p->algo;
}

/* Column-major D [m,n] (=|+=) op(A) op(B), op(A) [m,k], op(B) [k,n], with
 * leading dimensions lda, ldb, ldd. */
static void lt_matmul(gk_gemm *g, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                      int k, const gk_bf16 *A, int lda, const gk_bf16 *B, int ldb, void *D,
                      gk_out_type dt, int ldd, int accumulate)
{
    cublasLtMatmulDesc_t op = gk_gemm_desc(ta, tb);
    const int key[9] = {(int)ta, (int)tb, m, bucket(n), bucket(k), lda, ldb, ldd, (int)dt};
    cublasLtMatmulAlgo_t algo = planned(g, op, key);
    cublasLtMatrixLayout_t l[3];
    layouts(l, ta, tb, m, n, k, lda, ldb, ldd, dt);
    cublasLtMatrixLayout_t la = l[0], lb = l[1], ld = l[2];

    /* D is also C: beta 1 reads it back, which is how "adds into" is done. */
    float alpha = 1, beta = accumulate ? 1 : 0;
    GK_CUBLAS(cublasLtMatmul(g->lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &algo,
                             g->workspace, GK_GEMM_WORKSPACE, g->stream));

    /* Descriptors are host objects, read at enqueue time: free to go now. */
    layouts_destroy(l);
    GK_CUBLAS(cublasLtMatmulDescDestroy(op));
}

void gk_gemm_linear_fwd(gk_gemm *g, void *y, gk_out_type yt, const gk_bf16 *x,
                        const gk_bf16 *w, int N, int in, int out, int accumulate)
{
    require("gk_gemm_linear_fwd", N, in, out, y, x, w);
    /* y^T [out,N] = W [out,in] x^T [in,N]: W is stored as W^T [in,out], ld in. */
    lt_matmul(g, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, w, in, x, in, y, yt, out, accumulate);
}

void gk_gemm_linear_bwd_dx(gk_gemm *g, void *dx, gk_out_type dxt, const gk_bf16 *dy,
                           const gk_bf16 *w, int N, int in, int out, int accumulate)
{
    require("gk_gemm_linear_bwd_dx", N, in, out, dx, dy, w);
    /* dx^T [in,N] = W^T [in,out] dy^T [out,N]: both as stored. */
    lt_matmul(g, CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, w, in, dy, out, dx, dxt, in, accumulate);
}

void gk_gemm_linear_bwd_dw(gk_gemm *g, void *dw, gk_out_type dwt, const gk_bf16 *dy,
                           const gk_bf16 *x, int N, int in, int out, int accumulate)
{
    require("gk_gemm_linear_bwd_dw", N, in, out, dw, dy, x);
    /* dW^T [in,out] = x^T [in,N] dy [N,out]: dy is stored as dy^T [out,N], ld out. */
    lt_matmul(g, CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, x, in, dy, out, dw, dwt, in, accumulate);
}

/* Conversions: pure copies with a change of width, so their only cost is
 * bytes. Each thread converts 4 values a step, a 16-byte float access and an
 * 8-byte bf16 access (the widest each side allows for 4 values), when both
 * pointers are aligned for them (the model's buffers are: its arena aligns
 * to 256 bytes); otherwise VEC 1, one value a step. The n % VEC values past
 * the last whole vector go to the grid's first threads. One step per thread
 * at the model's sizes (a grid of up to 2^20 blocks, grid-stride beyond):
 * many short-lived threads keep more loads in flight than a small grid
 * looping (the earlier 1056 blocks of one value a step). */
#define CONV_THREADS 256
#define CONV_MAX_BLOCKS (1u << 20)

static unsigned conv_blocks(size_t nvec)
{
    size_t b = (nvec + CONV_THREADS - 1) / CONV_THREADS;
    return (unsigned)(b < 1 ? 1 : b < CONV_MAX_BLOCKS ? b : CONV_MAX_BLOCKS);
}

/* Four bf16, stored or loaded as one 8-byte access. */
struct __align__(8) bf16x4 {
    __nv_bfloat162 lo, hi;
};

template <int VEC> static __global__ void f32_to_bf16_kernel(gk_bf16 *dst, const float *src,
                                                             size_t n)
{
    size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x, nv = n / VEC;
    for (size_t i = first; i < nv; i += (size_t)gridDim.x * blockDim.x) {
        if constexpr (VEC == 4) {
            float4 f = ((const float4 *)src)[i];
            /* __floats2bfloat162_rn rounds each half to nearest even, as
             * __float2bfloat16_rn does; .x (the lower address) is its first. */
            ((bf16x4 *)dst)[i] = {__floats2bfloat162_rn(f.x, f.y), __floats2bfloat162_rn(f.z, f.w)};
        } else {
            dst[i] = __float2bfloat16_rn(src[i]);
        }
    }
    if (first < n - nv * VEC)
        dst[nv * VEC + first] = __float2bfloat16_rn(src[nv * VEC + first]);
}

template <int VEC> static __global__ void bf16_to_f32_kernel(float *dst, const gk_bf16 *src,
                                                             size_t n)
{
    size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x, nv = n / VEC;
    for (size_t i = first; i < nv; i += (size_t)gridDim.x * blockDim.x) {
        if constexpr (VEC == 4) {
            bf16x4 b = ((const bf16x4 *)src)[i];
            float2 lo = __bfloat1622float2(b.lo), hi = __bfloat1622float2(b.hi);
            ((float4 *)dst)[i] = make_float4(lo.x, lo.y, hi.x, hi.y);
        } else {
            dst[i] = __bfloat162float(src[i]);
        }
    }
    if (first < n - nv * VEC)
        dst[nv * VEC + first] = __bfloat162float(src[nv * VEC + first]);
}

void gk_f32_to_bf16(gk_bf16 *dst, const float *src, size_t n, cudaStream_t stream)
{
    if (!n)
        return; /* a launch of 0 blocks is an error */
    if ((uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0)
        f32_to_bf16_kernel<4><<<conv_blocks(n / 4), CONV_THREADS, 0, stream>>>(dst, src, n);
    else
        f32_to_bf16_kernel<1><<<conv_blocks(n), CONV_THREADS, 0, stream>>>(dst, src, n);
    GK_CU(cudaGetLastError());
}

void gk_bf16_to_f32(float *dst, const gk_bf16 *src, size_t n, cudaStream_t stream)
{
    if (!n)
        return;
    if ((uintptr_t)src % 8 == 0 && (uintptr_t)dst % 16 == 0)
        bf16_to_f32_kernel<4><<<conv_blocks(n / 4), CONV_THREADS, 0, stream>>>(dst, src, n);
    else
        bf16_to_f32_kernel<1><<<conv_blocks(n), CONV_THREADS, 0, stream>>>(dst, src, n);
    GK_CU(cudaGetLastError());
}
