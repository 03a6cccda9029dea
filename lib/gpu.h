/* gpu: the CUDA backend as the tools see it, a plain C interface with no CUDA
 * type in it, so cmd/moe-train.c and cmd/moe-eval.c compile with the C
 * compiler and link either the real backend (kernels/model.cu, when nvcc was
 * found at build time) or lib/gpu_none.c, which says the tool was built
 * without CUDA.
 *
 * A gk_gpu holds one model of a layout on the device for micro-batches of at
 * most B sequences of T tokens: the fp32 master weights and a bf16 copy that
 * the matrix products read, the fp32 gradients, the activations of one
 * micro-batch, and, when made for training, the optimizer state (Muon's
 * momentum, Adam's moments), the EMA of the weights and the expert load. All
 * of it is carved from one device allocation sized at gk_gpu_new (the memory
 * plan, gk_gpu_plan_bytes); nothing is allocated afterwards.
 *
 * The passes are lib/model_impl.h's, step for step, with the matrix products
 * in bf16 (fp32 accumulation) and everything else in fp32, as train_gpt.py
 * runs under bf16 autocast. One training step is
 *
 *     gk_gpu_zero_grads(g);
 *     for each micro-batch: gk_gpu_fwd_bwd(g, tokens, targets, 1.0 / grad_accum);
 *     loss = gk_gpu_step(g, lr_scale, &norm, load);
 *
 * the order of moe-train's CPU loop: clip, Muon and Adam, the router biases,
 * the EMA. Only gk_gpu_step waits for the device (to return the loss and the
 * norm); the micro-batches are queued behind one another.
 *
 * Errors: a CUDA or cuBLAS failure is fatal, one line naming the call
 * (kernels/cuda_util.h). gk_gpu_new dies with a clear line when there is no
 * usable device or the tool was built without CUDA. */
#ifndef GK_GPU_H
#define GK_GPU_H

#include "model.h"
#include "optim.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_gpu gk_gpu;

/* A model of L for micro-batches of up to B x T tokens on the first CUDA
 * device; TRAIN also sets up gradients, the optimizer and (when
 * train.ema_decay > 0) the EMA. Weights are undefined until gk_gpu_set_params.
 * PROG names the asking tool and option in the error when no device is
 * usable ("moe-train --device cuda"). */
gk_gpu *gk_gpu_new(const gk_layout *l, int B, int T, int train, const char *prog);
void gk_gpu_free(gk_gpu *g);

/* "NVIDIA H100 80GB HBM3, sm_90" and the bytes of the memory plan. */
const char *gk_gpu_device_name(const gk_gpu *g);
size_t gk_gpu_plan_bytes(const gk_gpu *g);

/* Copy the l->numel weights (and the EMA, the optimizer state) between host
 * and device. set_params also refreshes the bf16 copy. */
void gk_gpu_set_params(gk_gpu *g, const float *params);
void gk_gpu_get_params(gk_gpu *g, float *params);
void gk_gpu_set_ema(gk_gpu *g, const float *ema);
void gk_gpu_get_ema(gk_gpu *g, float *ema);
void gk_gpu_set_optim(gk_gpu *g, const gk_optim *o);
void gk_gpu_get_optim(gk_gpu *g, gk_optim *o);

/* Start a step: gradients, the step's loss and the expert load to zero. */
void gk_gpu_zero_grads(gk_gpu *g);
/* Forward and backward of one micro-batch of B' <= B sequences, tokens and
 * targets [B',T] on the host: adds DLOSS times the gradient of its mean loss
 * into the gradients and DLOSS times the loss into the step's loss. */
void gk_gpu_fwd_bwd(gk_gpu *g, int B, const int *tokens, const int *targets, double dloss);
/* Finish the step: clip (returns the norm before clipping in *norm), Muon and
 * Adam at LR_SCALE, the MoE router biases from the step's load (copied to
 * load [n_layer][n_experts] when not NULL), the EMA; returns the step's
 * loss. */
double gk_gpu_step(gk_gpu *g, double lr_scale, double *norm, int64_t *load);

/* Forward only, for evaluation: the mean loss of B' <= B sequences, and each
 * position's loss in losses [B'*T] when not NULL (host arrays). */
double gk_gpu_forward_rows(gk_gpu *g, int B, const int *tokens, const int *targets,
                           double *losses);

/* ---- decoding (kernels/decode.cu): what moe-rollout --device cuda runs ----
 *
 * A gk_gpu_dec is lib/generate.h's KV-cache decoder on the device, for S
 * independent streams (sequences) at once: a step feeds one token to each of
 * n <= S chosen streams, as n rows of one batch (each block's products are
 * [n, in] x W^T, each row attends over its own stream's cache), so scenes
 * decoded together share every weight read. Each stream holds up to T_MAX
 * tokens (1 .. seq_len; 0 means seq_len) and does not slide, as gk_gen.
 * Products are bf16 with fp32 accumulation, as in training; the rest
 * (norms, rotary, the attention over the fp32 cache, the softcap) is fp32,
 * so logits agree with gk_gen_step's to bf16 tolerance (kernels/
 * check_decode.cu states and checks it). Memory is one arena sized at
 * creation (gk_gpu_dec_plan_bytes). */
typedef struct gk_gpu_dec gk_gpu_dec;

/* A decoder of layout L with the float weights PARAMS [l->numel] (copied to
 * the device; the host copy may go), every stream empty. */
gk_gpu_dec *gk_gpu_dec_new(const gk_layout *l, const float *params, int streams, int t_max,
                           const char *prog);
void gk_gpu_dec_free(gk_gpu_dec *d);
const char *gk_gpu_dec_device_name(const gk_gpu_dec *d);
size_t gk_gpu_dec_plan_bytes(const gk_gpu_dec *d);

/* Feed TOKENS[i] to stream STREAMS[i] (distinct, 0 .. S-1) for i < N, at
 * each stream's next position, and return the softcapped logits [N][vocab]
 * of those rows in that order (a host buffer of the decoder's, valid until
 * the next step; the caller may change it, as a sampler's penalties do). Dies when a stream is full or an argument is out of
 * range. */
float *gk_gpu_dec_step(gk_gpu_dec *d, int n, const int *streams, const int *tokens);
/* Tokens in stream S's cache; empty it (a new sequence from position 0). */
int gk_gpu_dec_pos(const gk_gpu_dec *d, int s);
void gk_gpu_dec_reset(gk_gpu_dec *d, int s);

#ifdef __cplusplus
}
#endif

#endif
