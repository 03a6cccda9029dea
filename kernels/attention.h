/* attention: causal grouped-query attention on the GPU, forward and backward,
 * float32, with the contract of gk_attention_fwd_f32 / gk_attention_bwd_f32 in
 * lib/ops.h so kernels/check_attention.cu compares them 1:1.
 *
 * q [B,T,H,D], k, v [B,T,KV,D], H a multiple of KV, query head h reads kv head
 * h / (H/KV), scores q.k / sqrt(D), token t sees tokens 0..t. The forward
 * writes out [B,T,H,D] and lse [B,T,H] (the row's log-sum-exp of the scaled
 * scores; lse may be NULL when no backward follows); the backward ADDS the
 * gradients into dq, dk, dv, rebuilding the probabilities from lse. Flash-style
 * (FlashAttention-2's structure): no T x T matrix is ever in memory, so memory
 * is linear in T. D must be 16, 32, 64 or 128 (the kernels are templates on D);
 * any other D, or H not a multiple of KV, returns cudaErrorInvalidValue and
 * launches nothing. All pointers are device pointers; the launchers enqueue on
 * STREAM, allocate nothing (the backward's scratch is a caller-owned workspace
 * of gk_cu_attention_bwd_workspace bytes) and return cudaGetLastError().
 * Deterministic: no atomics, every sum in a fixed order, the same bits on
 * every run. */
#ifndef GK_ATTENTION_H
#define GK_ATTENTION_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ops.h"

/* As gk_attention_fwd_f32: out = softmax(q k^T / sqrt(D), causal) v, and lse
 * (NULL: not written). */
cudaError_t gk_cu_attention_fwd(float *out, float *lse, const float *q, const float *k,
                                const float *v, int B, int T, int H, int KV, int D,
                                cudaStream_t stream);

/* Bytes of workspace gk_cu_attention_bwd needs: delta = rowsum(dout o out),
 * one float per (b, t, h). */
size_t gk_cu_attention_bwd_workspace(int B, int T, int H);

/* As gk_attention_bwd_f32: dq, dk, dv += the gradients, from dout, the
 * forward's out and lse, and q, k, v. WORKSPACE holds
 * gk_cu_attention_bwd_workspace(B, T, H) bytes, 4-byte aligned. */
cudaError_t gk_cu_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                                const float *out, const float *lse, const float *q,
                                const float *k, const float *v, int B, int T, int H, int KV,
                                int D, void *workspace, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
