/* gemm: the linear layer's three matrix products on the GPU, bf16 inputs
 * through cuBLASLt with fp32 accumulation, and the fp32 <-> bf16 conversions
 * that feed them.
 *
 * The layout is lib/ops.h's: row-major, W [out,in] as torch.nn.Linear stores
 * it, x [N,in], y [N,out]. The three products are those of gk_linear_fwd_f32
 * and gk_linear_bwd_f32 (no bias: the models have none):
 *   fwd:    y  [N,out]  = x W^T
 *   bwd_dx: dx [N,in]   = dy W
 *   bwd_dw: dW [out,in] = dy^T x
 * Each writes fp32 (master gradients, logits) or bf16 (activations that the
 * next product reads), and either overwrites its output or adds into it
 * (ACCUMULATE: the CPU contract for gradients is "adds", and beta = 1 in the
 * GEMM epilogue costs nothing). Accumulating into bf16 rounds the sum once.
 *
 * Requirement: in and out are multiples of 8 and every pointer is 16-byte
 * aligned (the arena gives 256). They are the leading dimensions of every
 * operand, and cuBLASLt's bf16 tensor-core kernels read 16-byte vectors along
 * them; with other values it silently falls back to far slower kernels, or
 * finds none. The model's widths (d_model, head and vocab sizes) all qualify;
 * N, the number of tokens, may be anything. The calls die naming the shape
 * when the requirement does not hold, rather than run slowly unnoticed.
 *
 * Everything is enqueued on the handle's stream; nothing is allocated per
 * call (the workspace is carved from the arena once, by gk_gemm_init). */
#ifndef GK_GEMM_H
#define GK_GEMM_H

#include <cuda_bf16.h>
#include <stddef.h>

#include "cuda_util.h"

typedef __nv_bfloat16 gk_bf16;

/* The element type of a product's output. */
typedef enum { GK_OUT_F32, GK_OUT_BF16 } gk_out_type;

/* One remembered heuristic answer: the product's shape class and its algo. */
typedef struct {
    int key[9]; /* ta, tb, m, n, k (n, k in buckets), lda, ldb, ldd, output type; key[0] -1: empty */
    cublasLtMatmulAlgo_t algo;
} gk_gemm_plan;

/* Plans remembered per handle: direct-mapped by a hash of the key. */
#define GK_GEMM_PLANS 256

typedef struct {
    cublasLtHandle_t lt;
    cudaStream_t stream;
    void *workspace; /* cuBLASLt's scratch, GK_GEMM_WORKSPACE bytes */
    gk_gemm_plan plan[GK_GEMM_PLANS];
    long long asked; /* heuristic queries made (a miss of the plans) */
} gk_gemm;

/* 32 MiB: NVIDIA's recommended cuBLASLt workspace for Hopper. */
#define GK_GEMM_WORKSPACE ((size_t)32 << 20)

/* Create the cuBLASLt handle and carve the workspace from ARENA. */
void gk_gemm_init(gk_gemm *g, gk_cu_arena *arena, cudaStream_t stream);
void gk_gemm_destroy(gk_gemm *g);

/* The pieces of a cuBLASLt product, shared with the products of their own
 * that other kernels plan (optim.cu's batched Newton-Schulz): a descriptor
 * with fp32 compute and scale, op(A) = TA, op(B) = TB; and cuBLASLt's first
 * heuristic algorithm for it on layouts LA, LB and LC (C and D both LC)
 * within GK_GEMM_WORKSPACE, dying with the shape M x N x K when there is
 * none. */
cublasLtMatmulDesc_t gk_gemm_desc(cublasOperation_t ta, cublasOperation_t tb);
cublasLtMatmulAlgo_t gk_gemm_algo(const gk_gemm *g, cublasLtMatmulDesc_t op,
                                  cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                                  cublasLtMatrixLayout_t lc, int m, int n, int k);

/* 1 when in and out satisfy the requirement above, else 0. */
int gk_gemm_dims_ok(int in, int out);

/* y [N,out] (=|+=) x [N,in] W^T, W [out,in]. */
void gk_gemm_linear_fwd(gk_gemm *g, void *y, gk_out_type yt, const gk_bf16 *x,
                        const gk_bf16 *w, int N, int in, int out, int accumulate);
/* dx [N,in] (=|+=) dy [N,out] W [out,in]. */
void gk_gemm_linear_bwd_dx(gk_gemm *g, void *dx, gk_out_type dxt, const gk_bf16 *dy,
                           const gk_bf16 *w, int N, int in, int out, int accumulate);
/* dW [out,in] (=|+=) dy^T x, dy [N,out], x [N,in]. */
void gk_gemm_linear_bwd_dw(gk_gemm *g, void *dw, gk_out_type dwt, const gk_bf16 *dy,
                           const gk_bf16 *x, int N, int in, int out, int accumulate);

/* dst[i] = src[i] rounded to nearest bf16 (ties to even; NaN stays NaN). */
void gk_f32_to_bf16(gk_bf16 *dst, const float *src, size_t n, cudaStream_t stream);
/* dst[i] = src[i], exactly. */
void gk_bf16_to_f32(float *dst, const gk_bf16 *src, size_t n, cudaStream_t stream);

#endif
