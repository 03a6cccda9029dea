/* residual: the backward of the residual stream's RMSNorms fused with the
 * scale gradients on either side of them, one pass over the rows where the
 * model ran three (kernels/model.cu's fused path).
 *
 * In a block's backward the gradient of the residual stream, dres (fp32),
 * meets each RMSNorm twice: the norm's backward adds into it, and then a
 * scale's backward reads it (attn_scale after mlp_norm's; resid_mix's two
 * halves after attn_norm's). Run apart, dres is written by one kernel and read
 * back by the next two. Here a group of lanes holds the row in registers
 * (vec.h's row layout), forms the norm's backward, and applies the scales'
 * backward to it before it leaves: d(input) of each scale written, and each
 * scale's gradient summed over the rows.
 *
 * The norm reads its output y in bf16, the copy the product after it read
 * (the forward keeps no fp32 copy): its backward is RMSNorm's with y rounded
 * to bf16, 2^-9 relative in the y m term. Given that y, every written element
 * is bit for bit what elementwise.h's chain (gk_cu_rmsnorm_bwd, then
 * gk_cu_scale_bwd_set / gk_cu_scale_add_bwd) writes on the widened values.
 * The scales' gradients are sums in double, in a fixed order that depends on
 * N and C alone (rows in chunks of a block's, the chunks' partial sums then
 * added by gk_cu_column_sums), another order than the chain's: equal to it
 * within the float rounding of the result.
 *
 * Shapes: C a multiple of 4 and at most 512 (gk_cu_resid_bwd_ok), the rows
 * that fit a group of lanes in registers with the gradients' partial sums
 * beside them; other widths run the chain. Pointers 16-byte aligned (8 for
 * bf16), N any. All pointers are device pointers; launchers enqueue on STREAM
 * and return cudaGetLastError() (cudaErrorInvalidValue for a shape or
 * alignment they refuse). */
#ifndef GK_RESIDUAL_H
#define GK_RESIDUAL_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "gemm.h" /* gk_bf16 */

/* Whether the fused kernels take rows of C values. */
int gk_cu_resid_bwd_ok(int C);

/* Bytes of the scratch every launcher below takes in WORK. */
size_t gk_cu_resid_bwd_workspace(int N, int C);

/* mlp_norm's backward and attn_scale's (x += s a, a a bf16 branch output):
 *   dres[n,c] += rmsnorm_bwd(dy, y, rstd)[n,c]   (stored)
 *   da[n,c]    = s[c] dres[n,c]                  (bf16, what the product reads)
 *   ds[c]     += sum_n a[n,c] dres[n,c]
 * dy fp32 (the mixture's output gradient) or, in the _bdy form, bf16 (a
 * product's). */
cudaError_t gk_cu_norm_bwd_scale(float *dres, gk_bf16 *da, float *ds, const float *dy,
                                 const gk_bf16 *y, const float *rstd, const gk_bf16 *a,
                                 const float *s, int N, int C, void *work, cudaStream_t stream);
cudaError_t gk_cu_norm_bwd_scale_bdy(float *dres, gk_bf16 *da, float *ds, const gk_bf16 *dy,
                                     const gk_bf16 *y, const float *rstd, const gk_bf16 *a,
                                     const float *s, int N, int C, void *work,
                                     cudaStream_t stream);

/* attn_norm's backward and resid_mix's (x = mix[c] xin + mix[C+c] x0, mix
 * [2,C]), dy in bf16 (the q/k/v products'):
 *   d          = dres + rmsnorm_bwd(dy, y, rstd)  (not stored)
 *   dxin[n,c]  = mix[c] d[n,c]                    (written; may alias dres)
 *   dx0[n,c]  += mix[C+c] d[n,c]
 *   dmix[c]   += sum_n xin[n,c] d[n,c],  dmix[C+c] += sum_n x0[n,c] d[n,c] */
cudaError_t gk_cu_norm_bwd_mix(float *dxin, float *dx0, float *dmix, const float *dres,
                               const gk_bf16 *dy, const gk_bf16 *y, const float *rstd,
                               const float *xin, const float *x0, const float *mix, int N, int C,
                               void *work, cudaStream_t stream);

#endif
