/* attention_tc: causal grouped-query flash attention on the tensor cores, bf16
 * inputs with fp32 accumulation, forward and deterministic backward: the
 * training hot path's attention. kernels/attention.h is the fp32 reference
 * version on CUDA cores; this one has the same math (and lib/ops.h's
 * gk_attention_fwd_f32 / gk_attention_bwd_f32 contract, up to the precision
 * and the overwrite below), checked against the CPU by check_attention_tc.cu.
 *
 * q [B,T,H,D], k, v [B,T,KV,D] bf16, H a multiple of KV, query head h reads
 * kv head h / (H/KV), scores q.k / sqrt(D), token t sees tokens 0..t. D is 32,
 * 64 or 128; any other D, H not a multiple of KV or a negative size returns
 * cudaErrorInvalidValue and launches nothing. T is any positive value (the
 * last tile is masked). All pointers are device pointers, 16-byte aligned;
 * the launchers enqueue on STREAM, allocate nothing (they may raise the
 * kernels' shared-memory limit, a host-side attribute) and return
 * cudaGetLastError(). No T x T matrix is ever in memory. */
#ifndef GK_ATTENTION_TC_H
#define GK_ATTENTION_TC_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "gemm.h" /* gk_bf16 */

#ifdef __cplusplus
extern "C" {
#endif

/* out [B,T,H,D] bf16 = softmax(q k^T / sqrt(D), causal) v (what the output
 * projection GEMM reads); lse [B,T,H] fp32, each row's natural log-sum-exp of
 * the scaled scores (what the backward rebuilds the probabilities from). */
cudaError_t gk_cu_attention_tc_fwd(gk_bf16 *out, float *lse, const gk_bf16 *q, const gk_bf16 *k,
                                   const gk_bf16 *v, int B, int T, int H, int KV, int D,
                                   cudaStream_t stream);

/* Bytes of workspace gk_cu_attention_tc_bwd needs: per (b, h, t) the row's
 * delta = dout . out and its lse in base 2, as floats. */
size_t gk_cu_attention_tc_bwd_workspace(int B, int T, int H);

/* The gradients from dout [B,T,H,D] bf16, the forward's out and lse, and q, k,
 * v: dq [B,T,H,D], dk [B,T,KV,D] fp32 (what the QK norms' backward reads) and
 * dv [B,T,KV,D] bf16 (what c_v's product reads) with its tokens LDV elements
 * apart (KV D packed; more when dv is a block of columns of a wider matrix),
 * OVERWRITTEN (not added); a gap between dv's tokens is not written.
 * WORKSPACE holds gk_cu_attention_tc_bwd_workspace(B, T, H) bytes, 16-byte
 * aligned. Deterministic: no atomics, every sum in a fixed order, the same
 * bits on every run. */
cudaError_t gk_cu_attention_tc_bwd(float *dq, float *dk, gk_bf16 *dv, int ldv,
                                   const gk_bf16 *dout, const gk_bf16 *out, const float *lse,
                                   const gk_bf16 *q, const gk_bf16 *k, const gk_bf16 *v, int B,
                                   int T, int H, int KV, int D, void *workspace,
                                   cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
