/* elementwise: the CUDA kernels of the layers that are not matrix products
 * (embedding, RMSNorm, rotary, the feed-forward activations, the softcapped
 * cross-entropy, scale-and-add, Adam), float32 in and out, with bf16 side
 * outputs for the products that read them. The *_bx variants read an input
 * that a product wrote in bf16 (half its bytes); each gives exactly what its
 * fp32 twin gives on the fp32 widening of that input (widening is exact), so
 * the checks hold them to their twin bit for bit.
 *
 * Every launcher has the contract of its CPU twin in lib/ops.h (or, for Adam,
 * lib/optim.c's adam_tensor), so kernels/check_elementwise.cu compares them
 * 1:1: same shapes, same "overwrites" or "adds into", same aliasing rules,
 * same NULL gradients. All pointers are device pointers; every launcher
 * enqueues on STREAM, allocates nothing (the few that need scratch take a
 * caller-owned workspace whose size a *_workspace function gives, so the
 * training loop's memory plan is sized once) and returns cudaGetLastError()
 * after its launches, so the caller names the failing call in its error check.
 *
 * Determinism: no kernel uses floating-point atomics. Every sum is computed by
 * one thread in a fixed order or by a tree whose shape depends only on the
 * problem size, never on scheduling, so two runs give the same bits. The sums
 * that feed the loss or a parameter gradient accumulate in double, as the CPU
 * reference does. Where the reference's float arithmetic is cheap to mirror,
 * the kernels use round-to-nearest intrinsics (__fmul_rn, __fadd_rn) so nvcc
 * does not contract a*b+c into one FMA: the CPU build has no FMA, and a fused
 * rounding shows up as a large relative error where the sum cancels (rotary,
 * the RMSNorm backward). */
#ifndef GK_ELEMENTWISE_H
#define GK_ELEMENTWISE_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "gemm.h" /* gk_bf16 */

/* ops.h has no extern "C" of its own: included from C++ (nvcc), its
 * declarations must still name the C functions of lib/ops.c. */
#ifdef __cplusplus
extern "C" {
#endif

#include "ops.h"

/* Token embedding, as gk_embed_fwd_f32: y [N,C] = wte[tokens[n]]. */
cudaError_t gk_cu_embed_fwd(float *y, const float *wte, const int *tokens, int N, int C,
                            cudaStream_t stream);

/* Embedding backward, as gk_embed_bwd_f32: dwte[tokens[n]] += dy[n], tokens
 * in 0..vocab-1, the rows with the same token added in row order (so the
 * result equals the CPU's bit for bit). It stably sorts the positions by token
 * (cub's radix sort), then one block per distinct token walks its positions in
 * order; no atomics. work holds gk_cu_embed_bwd_workspace(N, vocab) bytes. */
size_t gk_cu_embed_bwd_workspace(int N, int vocab);
cudaError_t gk_cu_embed_bwd(float *dwte, const float *dy, const int *tokens, int N, int C,
                            int vocab, void *work, cudaStream_t stream);

/* RMSNorm without weight, as gk_rmsnorm_fwd_f32 / gk_rmsnorm_bwd_f32: a
 * group of lanes of one warp per row (the row held in registers, several
 * rows a block), the sum of squares (and of dy y) in double by a fixed
 * shuffle tree. y may alias x; rstd [N] may be NULL in the forward; yb, when
 * not NULL, also receives y rounded to bf16 (what a product reads next). The
 * backward adds into dx when dxb is NULL; otherwise it writes its gradient,
 * rounded to bf16, into dxb (dx not used). */
cudaError_t gk_cu_rmsnorm_fwd(float *y, gk_bf16 *yb, float *rstd, const float *x, int N,
                              int C, double eps, cudaStream_t stream);
cudaError_t gk_cu_rmsnorm_bwd(float *dx, gk_bf16 *dxb, const float *dy, const float *y,
                              const float *rstd, int N, int C, cudaStream_t stream);

/* A residual update and the RMSNorm after it, in one pass over the row (the
 * forward's kernel with a prologue): xo[n,c] = A + s2[c] x2[n,c] with
 * A = s1[c] x1[n,c], or A = x1[n,c] when s1 is NULL (s1, s2 [C]), rounded as
 * gk_cu_resid_mix (s1 given: x1 xin, x2 x0, s1 s2 the two halves of mix) and
 * gk_cu_scale_add_fwd with group 1 (s1 NULL: x1 += s2 x2) round it, stored
 * into xo; then y, yb and rstd are what gk_cu_rmsnorm_fwd(y, yb, rstd, xo, N,
 * C, eps) gives, bit for bit. xo may alias x1, not y or x2. y may be NULL
 * (yb alone wanted); yb and rstd may be NULL. The _bx variant reads x2 in
 * bf16 (a product's output), as the fp32 one on its widening. */
cudaError_t gk_cu_mix_rmsnorm(float *xo, float *y, gk_bf16 *yb, float *rstd, const float *x1,
                              const float *s1, const float *x2, const float *s2, int N, int C,
                              double eps, cudaStream_t stream);
cudaError_t gk_cu_mix_rmsnorm_bx(float *xo, float *y, gk_bf16 *yb, float *rstd,
                                 const float *x1, const float *s1, const gk_bf16 *x2,
                                 const float *s2, int N, int C, double eps, cudaStream_t stream);

/* Rotary embedding, half-split with partial rope_dims, as gk_rope_fwd_f32 /
 * gk_rope_bwd_f32, on the tables of gk_rope_table_f32 (copied to the device).
 * y may alias x; dx must not alias dy. The backward adds into dx, or, with
 * SET, writes it (no clear needed first). */
cudaError_t gk_cu_rope_fwd(float *y, const float *x, const float *cos, const float *sin,
                           int B, int T, int H, int D, int rope_dims, cudaStream_t stream);
cudaError_t gk_cu_rope_bwd(float *dx, const float *dy, const float *cos, const float *sin,
                           int B, int T, int H, int D, int rope_dims, int set,
                           cudaStream_t stream);

/* Feed-forward activation, as gk_act_fwd_f32 / gk_act_bwd_f32 (x [N,2F] for
 * swiglu, gate first). The forward writes y in fp32 and/or in bf16 into yb
 * (either may be NULL; the bf16 is the round-to-nearest of the fp32). The
 * backward adds into dx (fp32) when dxb is NULL; otherwise it writes
 * f'(x) dy, rounded to bf16, into dxb (what the product before it reads),
 * and dx is not used. */
cudaError_t gk_cu_act_fwd(float *y, gk_bf16 *yb, const float *x, int N, int F, gk_act act,
                          cudaStream_t stream);
cudaError_t gk_cu_act_bwd(float *dx, gk_bf16 *dxb, const float *dy, const float *x, int N,
                          int F, gk_act act, cudaStream_t stream);
/* The same with the pre-activation x in bf16 (the product's output), bf16
 * out: gk_cu_act_fwd(NULL, yb, ...) and gk_cu_act_bwd(NULL, dxb, ...) on the
 * fp32 widening of x, bit for bit. yb and dxb are required
 * (cudaErrorInvalidValue without). */
cudaError_t gk_cu_act_fwd_bx(gk_bf16 *yb, const gk_bf16 *x, int N, int F, gk_act act,
                             cudaStream_t stream);
cudaError_t gk_cu_act_bwd_bx(gk_bf16 *dxb, const float *dy, const gk_bf16 *x, int N, int F,
                             gk_act act, cudaStream_t stream);
/* The same with dy in bf16 too (the product before it wrote d(act) in bf16,
 * as autocast's does): gk_cu_act_bwd_bx on the fp32 widening of dy, bit for
 * bit. */
cudaError_t gk_cu_act_bwd_bb(gk_bf16 *dxb, const gk_bf16 *dy, const gk_bf16 *x, int N, int F,
                             gk_act act, cudaStream_t stream);

/* Softcapped cross-entropy, forward and backward fused, as gk_softcap_ce_f32:
 * one block per row. losses [N] (required) receives each row's loss in
 * double; dz [N,V] (NULL for the loss alone) receives dloss * d(mean)/dz and
 * may alias z. When mean is not NULL, a second one-block kernel writes the
 * mean of losses into *mean (one double on the device), summed by a tree of
 * fixed shape: the same bits every run, within rounding of the CPU's
 * sequential sum. */
cudaError_t gk_cu_softcap_ce(float *dz, double *losses, double *mean, const float *z,
                             const int *targets, int N, int V, double cap, double dloss,
                             cudaStream_t stream);
/* The same with the gradient written only in bf16 (what the head's products
 * read), into dzb [N,V] (required: cudaErrorInvalidValue without), each
 * element the round-to-nearest of exactly the fp32 value gk_cu_softcap_ce
 * writes into dz; losses and *mean the same bits as its. z is not modified
 * (dzb must not overlap it). */
cudaError_t gk_cu_softcap_ce_bf16(gk_bf16 *dzb, double *losses, double *mean, const float *z,
                                  const int *targets, int N, int V, double cap, double dloss,
                                  cudaStream_t stream);

/* y[n,c] += s[c/group] x[n,c], as gk_scale_add_fwd_f32. The _bx variant
 * reads x in bf16 (a branch's product output), as the fp32 one on its
 * widening. */
cudaError_t gk_cu_scale_add_fwd(float *y, const float *x, const float *s, int N, int C,
                                int group, cudaStream_t stream);
cudaError_t gk_cu_scale_add_fwd_bx(float *y, const gk_bf16 *x, const float *s, int N, int C,
                                   int group, cudaStream_t stream);
/* resid_mix: x[n,c] = mix[c] xin[n,c] + mix[C+c] x0[n,c] (mix [2,C]), what
 * model_impl.h computes as two gk_scale_add_fwd_f32 into zeros, with the
 * same roundings. x must not alias xin or x0. */
cudaError_t gk_cu_resid_mix(float *x, const float *xin, const float *x0, const float *mix,
                            int N, int C, cudaStream_t stream);
/* Backward, as gk_scale_add_bwd_f32: dx += s dy (dx may be NULL), ds[j] +=
 * sum of x dy over its channels (ds may be NULL). ds is reduced in two
 * passes: partial sums of fixed chunks of rows per channel (in double; each
 * chunk's rows in a fixed number of phases, in order within a phase, the
 * phases added in order), then the chunks and channels of each entry of s
 * by a fixed tree; dx is updated in the first pass, so dy is read once. work holds gk_cu_scale_add_bwd_workspace(N, C) bytes. */
size_t gk_cu_scale_add_bwd_workspace(int N, int C);
cudaError_t gk_cu_scale_add_bwd(float *dx, float *ds, const float *dy, const float *x,
                                const float *s, int N, int C, int group, void *work,
                                cudaStream_t stream);

/* ds[j] += the sum over the ROWS rows of part[r][j] (part [rows, C] doubles
 * on the device), by the fixed tree of the scale gradients' second pass:
 * the column sums of partial sums a kernel of its own wrote (head_prep's
 * per-row gain terms). */
cudaError_t gk_cu_column_sums(float *ds, const double *part, int rows, int C,
                              cudaStream_t stream);

/* The backward of a scale-add into zeros (y = s x written, not added: a
 * residual branch, q_gain): d(x) = s dy WRITTEN as fp32 into dx and/or as
 * bf16 into dxb (either may be NULL; the bf16 is the round-to-nearest of the
 * fp32), ds[j] += as gk_cu_scale_add_bwd, all in ds's one pass over dy and
 * x. ds is required (cudaErrorInvalidValue without it). */
cudaError_t gk_cu_scale_bwd_set(float *dx, gk_bf16 *dxb, float *ds, const float *dy,
                                const float *x, const float *s, int N, int C, int group,
                                void *work, cudaStream_t stream);
/* The same with the forward's x in bf16: gk_cu_scale_bwd_set on its fp32
 * widening, bit for bit (ds reduced in the same order; the same workspace,
 * gk_cu_scale_add_bwd_workspace(N, C) bytes). */
cudaError_t gk_cu_scale_bwd_set_bx(float *dx, gk_bf16 *dxb, float *ds, const float *dy,
                                   const gk_bf16 *x, const float *s, int N, int C, int group,
                                   void *work, cudaStream_t stream);

/* One Adam step over a flat buffer of n parameters at step t (1-based), as
 * lib/optim.c's adam_tensor (torch's fused Adam): m, v updated and stored in
 * float, the parameter update formed in double from the stored moments,
 * w *= 1 - lr wd first (AdamW's decoupled decay; wd 0 is torch's Adam). */
cudaError_t gk_cu_adam(float *w, const float *g, float *m, float *v, size_t n, double lr,
                       double beta1, double beta2, double eps, double wd, long long t,
                       cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
