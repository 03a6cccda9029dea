/* optim (CUDA): the optimizer step of lib/optim.h on the GPU, for the model's
 * device parameter and gradient buffers (fp32, lib/model.h's layout offsets):
 * global-norm gradient clipping, Muon with Newton-Schulz in bf16 matrix
 * products, and Adam. It is the CPU optimizer's contract (lib/optim.h) on
 * device memory, and kernels/check_optim.cu holds it to lib/optim.c.
 *
 * Per step, after the gradients are accumulated:
 *
 *     double scale = gk_lr_scale(cfg, steps, elapsed);
 *     double norm = gk_cu_optim_clip(o, grads);
 *     gk_cu_optim_step(o, params, grads, scale);
 *
 * Precision. Clipping and Adam do lib/optim.c's arithmetic (the norm in
 * double; Adam's moments in float, its update in double, operation for
 * operation), and Muon's momentum buffers are float with the CPU's unfused
 * operations, so all of these match the CPU to the last bit or so. Newton-
 * Schulz is where the GPU departs from the CPU's float32 on purpose: like
 * train_gpt.py's zeropower_via_newtonschulz5, its matrices are bf16 and its
 * products accumulate in fp32 (cuBLASLt), so an update is within about 1% of
 * the CPU's per element (the check states the bound).
 *
 * Cost. A 9-layer 512-wide model has 54 Muon matrices of three shapes once
 * each is taken on its shorter side (c_q and attn.proj 512x512, c_k and c_v
 * 256x512, mlp.fc 1024x512 transposed and mlp.proj 512x1024 both 512x1024).
 * Matrices of one shape are stacked and every Newton-Schulz product is one
 * strided-batched cuBLASLt call over the stack, with the quintic's
 * combinations folded into the products' alpha and beta, so an iteration is
 * three calls per shape and nothing else: a step is 3 element-wise kernels
 * before Newton-Schulz, 3 x 5 x (number of shapes) products, 1 kernel that
 * applies the updates and 1 Adam kernel, whatever the number of layers.
 * Measured on one H100 (bin/check-cuda optim, the baseline's 17.1M
 * parameters, means of 20): a step 1.0 ms, of which each Newton-Schulz
 * iteration 0.14 ms (its 41 GFLOP at about 300 TFLOP/s), so 0.69 ms for
 * the five and 0.31 ms for the element-wise kernels and Adam; the clip 0.07
 * to 0.16 ms, its read-back to the host included. 51 launches a step.
 *
 * Determinism: no floating-point atomics; every sum is a fixed-shape tree
 * over a fixed partition, and each product's cuBLASLt algorithm is chosen
 * once, in gk_cu_optim_new, so two runs give the same bits.
 *
 * Memory: everything (state, scratch, the tables the kernels walk) is carved
 * from the caller's arena by gk_cu_optim_new, gk_cu_optim_bytes(l) bytes at
 * most; nothing is allocated after that. Every call enqueues on the gemm
 * handle's stream; only gk_cu_optim_clip (which returns the norm) and the
 * state exchange wait for it.
 *
 * Requirement: every Muon matrix has both sides multiples of 8 (gemm.h's
 * requirement for bf16 tensor-core products); gk_cu_optim_new dies naming the
 * tensor otherwise. The model's widths all qualify. */
#ifndef GK_CU_OPTIM_H
#define GK_CU_OPTIM_H

#include <stddef.h>

#include "cuda_util.h"
#include "gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* lib/optim.h by path: plain "optim.h" is this file from kernels/. */
#include "../lib/optim.h"

typedef struct gk_cu_optim gk_cu_optim;

/* Device bytes gk_cu_optim_new carves for layout L (state, scratch, tables),
 * alignment included, for the caller's arena plan. */
size_t gk_cu_optim_bytes(const gk_layout *l);

/* An optimizer for the tensors of L with L->cfg's train section: state zero,
 * step count 0, as gk_optim_new. Carves its memory from ARENA; enqueues on
 * G's stream and uses G's workspace. L and G must outlive it. */
gk_cu_optim *gk_cu_optim_new(const gk_layout *l, gk_cu_arena *arena, gk_gemm *g);
/* Free the host struct (the device memory belongs to the arena). */
void gk_cu_optim_free(gk_cu_optim *o);

/* As gk_optim_clip on the device gradients GRADS [l->numel]: the global L2
 * norm of every trained tensor (not GK_GROUP_BUFFER), in double, by a tree of
 * fixed shape; when grad_clip_norm > 0 and max / (norm + 1e-6) < 1, every
 * trained gradient is multiplied by that factor (rounded to float). Returns
 * the norm before clipping; waits for the stream once, to read it. */
double gk_cu_optim_clip(gk_cu_optim *o, float *grads);

/* As gk_optim_step: Muon (momentum gk_muon_momentum of the steps taken,
 * Newton-Schulz in bf16, scale sqrt(max(1, rows / cols)), decoupled weight
 * decay) on the matrices, then Adam (t = steps taken + 1) on the rest, with
 * the configured learning rates times LR_SCALE. grads is not modified.
 * Increments the step count. Enqueued only: returns without waiting. */
void gk_cu_optim_step(gk_cu_optim *o, float *params, const float *grads, double lr_scale);

/* Steps taken so far. */
long long gk_cu_optim_steps(const gk_cu_optim *o);

/* State exchange with the CPU optimizer CPU (built by gk_optim_new on the
 * same layout), for checkpoints and resume: every state tensor
 * (gk_optim_state_get) and the step count, copied exactly. Both wait for the
 * stream. */
void gk_cu_optim_download(const gk_cu_optim *o, gk_optim *cpu);
void gk_cu_optim_upload(gk_cu_optim *o, const gk_optim *cpu);

#ifdef __cplusplus
}
#endif

#endif
