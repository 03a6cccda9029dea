/* moe: the mixture-of-experts feed-forward of one block on the GPU, forward
 * and backward, with the contract of gk_moe_fwd_f32 / gk_moe_bwd_f32 in
 * lib/moe.h (read its comment for the model: E routed experts chosen top_k
 * per token by the sigmoid_bias, softmax or token router, S shared experts
 * every token takes, each expert an MLP fc -> activation -> proj), so
 * kernels/check_moe.cu compares them 1:1.
 *
 * The steps are lib/moe_impl.h's, in its row order (the routed experts'
 * rows first, each expert's tokens in token order, then each shared expert's
 * N rows): route (the router in fp32, the top_k with ties to the lower
 * index), a counting sort of the (token, choice) slots by expert that never
 * depends on thread timing, a gather of the token rows into one contiguous
 * bf16 block per expert, two bf16 GEMMs per expert (kernels/gemm.h, fp32
 * accumulation) around the activation, and a combine that sums each token's
 * shared rows, then its routed rows weighted, in that fixed order. The
 * backward runs the same steps in reverse and sends the gradient into the
 * router through the weights of the chosen experts (the choice is a constant
 * of the forward), as the CPU does.
 *
 * Precision, as torch's bf16 autocast: every input of an expert GEMM is bf16
 * (x gathered, the activation, the output gradient, the activation's
 * gradient), every GEMM output fp32 (the pre-activation and the expert
 * output are kept in fp32 for the backward); the router (logits, top_k,
 * weights and its gradients) is fp32 throughout, as DeepSeek-V3 keeps it.
 *
 * One host synchronization per forward: the GEMMs of an expert are sized by
 * its token count, which the sort computes on the device; the forward copies
 * the E + 1 row offsets back to the host (a cudaStreamSynchronize on
 * g->stream) before the first expert GEMM. So a forward cannot be captured in
 * a CUDA graph; the backward reuses the counts and does not wait.
 *
 * Memory: everything is carved from the arena by gk_cu_moe_new (the sizes of
 * gk_cu_moe_bytes), nothing is allocated in the passes. The experts' bf16
 * weights and fp32 gradients are read in place: the layout starts every
 * tensor at a multiple of 8 elements (GK_TENSOR_ALIGN in lib/model.h), the
 * 16 bytes the GEMMs need.
 *
 * Determinism: no floating-point atomics. Each sum is done by one thread in a
 * fixed order or by a warp shuffle tree of fixed shape, and the GEMMs see the
 * same shapes for the same routing, so a run repeats bit for bit.
 *
 * Everything is enqueued on g->stream; CUDA failures are fatal (GK_CU). */
#ifndef GK_CU_MOE_H
#define GK_CU_MOE_H

#include <stddef.h>

#include "cuda_util.h"
#include "gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "model.h"

typedef struct gk_cu_moe gk_cu_moe;

/* Device bytes one block's MoE of layout L needs for N tokens (its
 * activations, kept for the backward, and its scratch), so the caller can
 * reserve the arena once: n_layer times this, plus what else it carves. */
size_t gk_cu_moe_bytes(const gk_layout *l, int N);

/* Block B of a MoE layout (l->moe not NULL) for N tokens per forward (N >= 0;
 * 0 makes the passes do nothing); its device memory is carved from ARENA,
 * the host struct malloc'd. The layout must outlive it. */
gk_cu_moe *gk_cu_moe_new(const gk_layout *l, int b, int N, gk_cu_arena *arena);
/* The host struct only (the arena owns the device memory). */
void gk_cu_moe_free(gk_cu_moe *m);
/* Run the next passes on N rows, 0 <= N <= the N it was made for (an
 * evaluation's last, shorter batch); the forward and its backward must see
 * the same N. */
void gk_cu_moe_rows(gk_cu_moe *m, int N);

/* y [N,C] fp32 = moe(x [N,C] fp32), overwriting y (y must not alias x).
 * params: the fp32 master parameters on the device (lib/model.h's layout
 * offsets: the router and its bias are read from here); wbf: a bf16 copy of
 * the same buffer, same offsets (the expert weights the GEMMs read);
 * tokens [N]: the input token ids (the token router reads them). Keeps the
 * pointers x, params and wbf for the backward: they must hold the same
 * values until it ran. */
void gk_cu_moe_fwd(gk_cu_moe *m, gk_gemm *g, float *y, const float *x, const float *params,
                   const gk_bf16 *wbf, const int *tokens);

/* Backward of the last forward: dx [N,C] += dy d(y)/d(x); grads (fp32, the
 * layout's offsets) += the expert and router weight gradients; load [E]
 * (int64) += the tokens the forward routed to each routed expert. */
void gk_cu_moe_bwd(gk_cu_moe *m, gk_gemm *g, float *dx, float *grads, const float *dy,
                   long long *load);

/* gk_moe_router_update of lib/moe.h on the device, bit for bit: for every
 * block of a sigmoid_bias layout, router_bias[e] of params += rate sign(mean
 * load - load[e]) from load [n_layer][E] (device). Nothing for other routers.
 * One small kernel per layer on STREAM. */
void gk_cu_moe_router_update(const gk_layout *l, float *params, const long long *load,
                             double rate, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
