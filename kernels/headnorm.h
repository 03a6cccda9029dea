/* headnorm: the attention's per-head input preparation in one pass each way.
 *
 * The model turns c_q's and c_k's raw products into what the attention reads
 * by four layers in a row (lib/model_impl.h's block_fwd): RMSNorm of each
 * head's D channels, rotary on its first rope_dims, q_gain (queries only),
 * and the cast to bf16. Run one kernel each, they read and write the
 * [N, heads, D] tensor in fp32 five times over; here one warp-group per head
 * row does all four in registers, reading the raw product once and writing
 * the bf16 the attention reads and the row's 1/rms. The backward recomputes
 * the normalized and rotated row from the same raw product and 1/rms (the
 * same float operations, so the same bits as the forward's), so nothing but
 * the raw product and rstd is kept between the passes. The _bx forms read
 * the raw product in bf16 (a product that writes bf16 moves half the bytes):
 * each value is widened to float exactly and then goes through the same
 * arithmetic, so on the same values their outputs are the fp32 forms' bits.
 *
 * The arithmetic is the kernels' of elementwise.cu (and so the CPU's) one
 * operation for one: the sum of squares in double over the same lanes and
 * shuffle tree as gk_cu_rmsnorm_fwd at width D, rotary's and the norm
 * backward's products and sums unfused (__fmul_rn, __fadd_rn), the gain as
 * one rounded product. The forward's bf16 output and the backward's bf16
 * gradient are therefore bit-identical to the chain of those kernels; only the
 * gain's gradient sums its terms in another (fixed) order: per row in double,
 * then per head by elementwise.h's gk_cu_column_sums, a fixed tree (no
 * atomics: repeatable bits).
 *
 * Shapes: x is [B, T, H, D] as the products write it, its tokens LDX
 * elements apart (H D when it is a tensor of its own, more when it is a block
 * of columns of a wider product); y and dy are [B, T, H, D] packed; dxb's
 * tokens are LDD elements apart (so the gradients of q, k and v can fill one
 * [N, C + 2 KV D] matrix that a single product reads). D is 32, 64 or 128 and
 * rope_dims (8 to D) a multiple of 8, which gk_cu_head_prep_ok tells; the
 * tables are gk_rope_table_f32's, [T, rope_dims/2], on the device.
 * Alignment: each lane moves four consecutive values in one access (16
 * bytes of fp32, 8 of bf16), so LDX and LDD must be multiples of 4, in the
 * fp32 forms as in the _bx ones (y's and dy's H D always is); a launcher
 * returns cudaErrorInvalidValue, enqueuing nothing, when one is not. All
 * pointers are device pointers, 16-byte aligned (the arena's are), except a
 * _bx form's x, which needs only 8 (a column offset that is a multiple of 4
 * into a bf16 product). Every launcher enqueues on STREAM, allocates nothing
 * and returns cudaGetLastError(). */
#ifndef GK_HEADNORM_H
#define GK_HEADNORM_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "gemm.h" /* gk_bf16 */

/* Whether head dim D and rope_dims take these kernels. */
int gk_cu_head_prep_ok(int D, int rope_dims);

/* y [B,T,H,D] = bf16(gain[h] rope(rmsnorm(x))) (no gain when GAIN is NULL),
 * rstd [B*T*H] = each row's 1/rms (rstd may be NULL). */
cudaError_t gk_cu_head_prep_fwd(gk_bf16 *y, float *rstd, const float *x, int ldx,
                                const float *cos, const float *sin, const float *gain, int B,
                                int T, int H, int D, int rope_dims, double eps,
                                cudaStream_t stream);
/* The same from the raw product in bf16. */
cudaError_t gk_cu_head_prep_fwd_bx(gk_bf16 *y, float *rstd, const gk_bf16 *x, int ldx,
                                   const float *cos, const float *sin, const float *gain, int B,
                                   int T, int H, int D, int rope_dims, double eps,
                                   cudaStream_t stream);

/* The backward from dy = d(y) (fp32, as the attention's backward writes it):
 * dxb = d(x) written in bf16 (what the product's backward reads), and, with
 * GAIN, dgain[h] += the gain's gradient (DGAIN NULL without GAIN). x and rstd
 * are the forward's. work holds gk_cu_head_prep_bwd_workspace bytes. */
size_t gk_cu_head_prep_bwd_workspace(int B, int T, int H);
cudaError_t gk_cu_head_prep_bwd(gk_bf16 *dxb, int ldd, float *dgain, const float *dy,
                                const float *x, int ldx, const float *rstd, const float *cos,
                                const float *sin, const float *gain, int B, int T, int H, int D,
                                int rope_dims, void *work, cudaStream_t stream);
/* The same with the forward's x in bf16 (what gk_cu_head_prep_fwd_bx read). */
cudaError_t gk_cu_head_prep_bwd_bx(gk_bf16 *dxb, int ldd, float *dgain, const float *dy,
                                   const gk_bf16 *x, int ldx, const float *rstd, const float *cos,
                                   const float *sin, const float *gain, int B, int T, int H,
                                   int D, int rope_dims, void *work, cudaStream_t stream);

#endif
