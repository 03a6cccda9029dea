/* optim: the optimizers of moe-train on the CPU, the split train_gpt.py
 * (openai/parameter-golf) makes: Muon for the block matrices, Adam for the
 * token embedding, the untied head and the scalar/control tensors, and
 * clipping of the gradient by its global norm.
 *
 * The optimizer walks the model's layout (model.h): every tensor's group says
 * how it is updated; GK_GROUP_BUFFER tensors (not trained by gradient) are
 * left alone by the step and by clipping. Parameters and gradients are the model's single
 * buffers of layout->numel floats.
 *
 * Muon (GK_GROUP_MATRIX, lr matrix_lr): Nesterov momentum buf = mu buf + g,
 * direction g + mu buf (buf alone without nesterov), orthogonalised by
 * Newton-Schulz (quintic, muon_backend_steps iterations), scaled by
 * sqrt(max(1, rows / cols)); then p *= 1 - lr muon_weight_decay (when > 0)
 * and p -= lr update. train_gpt.py runs Newton-Schulz in bfloat16; this is
 * the float32 reference, so its updates are more precise than the GPU's.
 *
 * Adam (EMBED: tied_embed_lr when embeddings are tied, else embed_lr; HEAD:
 * head_lr; SCALAR: scalar_lr): torch.optim.Adam as train_gpt.py builds it
 * (betas (beta1, beta2), eps adam_eps, bias correction 1 - beta^t, eps added
 * after dividing sqrt(v) by sqrt(1 - beta2^t)). adam_weight_decay > 0 adds
 * AdamW's decoupled decay p *= 1 - lr wd; train_gpt.py passes none (default 0).
 *
 * Per step the trainer does, after accumulating the gradient:
 *
 *     double scale = gk_lr_scale(cfg, gk_optim_steps(o), elapsed);  // schedule.h
 *     double norm = gk_optim_clip(o, grads);   // no-op when grad_clip_norm is 0
 *     gk_optim_step(o, params, grads, scale);
 *
 * the order of train_gpt.py's loop (schedule, clip_grad_norm_, opt.step()).
 * The momentum of Muon comes from the optimizer's own step count through
 * gk_muon_momentum (schedule.h), which is train_gpt.py's step as long as the
 * trainer counts optimizer steps only (priming steps are undone by restoring
 * the state, as train_gpt.py restores its optimizers' state_dicts).
 *
 * Every state tensor (per trained tensor: a Muon momentum buffer, or Adam's
 * first and second moments) and the step count are exposed for checkpoints;
 * restoring them reproduces the next step bit for bit. All arithmetic is
 * deterministic: element-wise loops have no order to vary, and sums run over
 * fixed chunks added in order, so only OpenBLAS's sgemm could depend on the
 * thread count. */
#ifndef GK_OPTIM_H
#define GK_OPTIM_H

#include "model.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gk_optim gk_optim;

/* An optimizer for the tensors of L, with the train section of L->cfg; all
 * state zero, step count 0 (torch's lazily created zero state). L must
 * outlive it. Dies when a Muon tensor is not two-dimensional. */
gk_optim *gk_optim_new(const gk_layout *l);
void gk_optim_free(gk_optim *o);

/* Scale grads [numel] in place so that the global L2 norm over every trained
 * tensor is at most grad_clip_norm, as torch.nn.utils.clip_grad_norm_: the
 * norm is computed (here in double), and when max / (norm + 1e-6) < 1 every
 * trained gradient is multiplied by that factor. Returns the norm before
 * clipping; does nothing and returns it when grad_clip_norm is 0. */
double gk_optim_clip(const gk_optim *o, float *grads);

/* One step of every optimizer with the learning rates base_lr * LR_SCALE:
 * Muon with momentum gk_muon_momentum(cfg, steps taken), then Adam with
 * t = steps taken + 1. grads is not modified. Increments the step count. */
void gk_optim_step(gk_optim *o, float *params, const float *grads, double lr_scale);

/* Optimizer steps taken so far (train_gpt.py's step at the next step). */
int64_t gk_optim_steps(const gk_optim *o);
/* Set it, when restoring from a checkpoint. */
void gk_optim_set_steps(gk_optim *o, int64_t steps);

/* The pieces of a Muon step, for a caller that shares the work across ranks
 * as train_gpt.py's Muon does (matrix k of the group is done by rank k %
 * world, the updates are summed by an all-reduce, every rank applies all).
 * Matrices are numbered 0..gk_optim_muon_count()-1 in layout order; each has
 * a place in a flat update buffer of gk_optim_muon_numel() floats at
 * gk_optim_muon_offset(k). */
int gk_optim_muon_count(const gk_optim *o);
size_t gk_optim_muon_numel(const gk_optim *o);
size_t gk_optim_muon_offset(const gk_optim *o, int k);
/* Advance matrix K's momentum buffer with its gradient (grads is the whole
 * gradient buffer) and write its orthogonalised, scaled update into
 * update [its numel]. */
void gk_optim_muon_update(gk_optim *o, int k, const float *grads, double momentum,
                          float *update);
/* p (*= 1 - lr wd) -= lr update for every matrix, from the flat buffer
 * updates [gk_optim_muon_numel()], with lr = matrix_lr * LR_SCALE. */
void gk_optim_muon_apply(const gk_optim *o, float *params, const float *updates,
                         double lr_scale);

/* Orthogonalise x [rows, cols] in place by STEPS Newton-Schulz iterations
 * with train_gpt.py's quintic (a, b, c) = (3.4445, -4.7750, 2.0315), after
 * dividing by its Frobenius norm + 1e-7; works on the Gram matrix of the
 * shorter side. work holds gk_newton_schulz_work(rows, cols) floats. */
size_t gk_newton_schulz_work(int rows, int cols);
void gk_newton_schulz(float *x, int rows, int cols, int steps, float *work);

/* One Adam step of torch's fused Adam (adam_math in fused_adam_utils.cuh) on
 * n elements at step t (from 1): the moments m, v are updated and stored in
 * float, the parameter update is formed in double from the stored moments and
 * rounded once; wd > 0 decays w decoupled (AdamW). The CUDA kernel is checked
 * against this function. */
void gk_adam_step(float *w, const float *g, float *m, float *v, size_t n, double lr,
                  double b1, double b2, double eps, double wd, int64_t t);

/* One state tensor: "optim.muon_buf.<param>", "optim.adam_m.<param>" or
 * "optim.adam_v.<param>", of the shape and numel of PARAM. data points into
 * the optimizer and may be written to restore it. */
typedef struct {
    char name[80];
    const gk_param *param;
    float *data;
    size_t numel;
} gk_optim_state;

/* State tensors, in layout order of their parameters (Muon's buffer, or
 * Adam's m then v). */
int gk_optim_state_count(const gk_optim *o);
gk_optim_state gk_optim_state_get(const gk_optim *o, int i);

#endif
