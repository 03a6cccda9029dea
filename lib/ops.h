/* ops: the layers of the transformer on the CPU, forward and backward, the
 * reference that every faster path (the CUDA kernels) is checked against.
 *
 * Each layer is one forward function and one backward function in the style of
 * llm.c's train_gpt2.c: plain arrays, row-major, no allocation of activations
 * (the caller owns every buffer), OpenBLAS for matrix products and OpenMP for
 * the rest. The conventions are those of openai/parameter-golf train_gpt.py,
 * the baseline we must reproduce; each function says where it follows it.
 *
 * Every function exists twice, with the same code (lib/ops_impl.h compiled
 * once per type): _f32 in float, what the trainer runs, and _f64 in double,
 * what the tests differentiate by finite differences. Checking the double one
 * checks the float one, and the test also checks that the two agree.
 *
 * Contract, for every function below:
 * - Shapes are in brackets, row-major; N is the number of rows (B*T tokens);
 *   [B,T,H,D] means token (b,t), head h, channel d at ((b*T+t)*H+h)*D+d.
 * - A forward function overwrites its outputs unless it says "adds".
 * - A backward function adds into its gradient buffers (d... += ...), so
 *   gradients of a tensor used twice (the tied embedding, the residual stream)
 *   accumulate; the caller zeroes them once per step. A gradient pointer may
 *   be NULL where the caller does not need it, where the function says so.
 * - Outputs do not alias inputs unless the function says they may.
 * - Results are deterministic: no floating-point reduction depends on the
 *   number of threads, except inside OpenBLAS's matrix products. */
#ifndef GK_OPS_H
#define GK_OPS_H

#include <stddef.h>

/* F.rms_norm(x, eps=None) uses torch.finfo(x.dtype).eps; train_gpt.py runs it
 * on float32 (and bf16 under autocast on the GPU), so the epsilon that defines
 * the model is float32's. The double build gets the same epsilon, so both
 * compute the same function. */
#define GK_RMSNORM_EPS 1.1920928955078125e-07

/* Negative slope of the LeakyReLU(0.5)^2 activation of the records. */
#define GK_LEAKY_SLOPE 0.5

/* The feed-forward activations. */
typedef enum {
    GK_OP_RELU2,  /* relu(x)^2: train_gpt.py's MLP (from modded-nanogpt) */
    GK_OP_LEAKY2, /* leaky_relu(x, 0.5)^2: the records' MLP */
    GK_OP_SWIGLU, /* silu(gate) * up: gate and up are the two halves of a row */
} gk_act;

/* ---- float32: what the trainer runs -------------------------------------- */

/* Linear layer as torch.nn.Linear stores it: W [out,in], y = x W^T + b.
 * x [N,in], y [N,out], bias [out] or NULL (the baseline has none).
 * Backward: dx [N,in] += dy W (dx may be NULL), dW [out,in] += dy^T x,
 * dbias [out] += column sums of dy (NULL when there is no bias). */
void gk_linear_fwd_f32(float *y, const float *x, const float *w, const float *bias,
                       int N, int in, int out);
void gk_linear_bwd_f32(float *dx, float *dw, float *dbias, const float *dy,
                       const float *x, const float *w, int N, int in, int out);

/* RMSNorm without weight over the last dimension, as F.rms_norm:
 * y = x / sqrt(mean(x^2) + eps). x, y [N,C]; rstd [N] receives
 * 1/sqrt(mean(x^2) + eps) for the backward (NULL when there is none).
 * y may alias x. Per-head QK-norm is the same call on [N*H, D].
 * Backward needs the output y, not x: dx [N,C] += rstd * (dy - y mean(dy y)). */
void gk_rmsnorm_fwd_f32(float *y, float *rstd, const float *x, int N, int C, double eps);
void gk_rmsnorm_bwd_f32(float *dx, const float *dy, const float *y, const float *rstd,
                        int N, int C);

/* Rotary tables for positions 0..T-1 and the first rope_dims channels of a
 * head (rope_dims even): cos, sin [T, rope_dims/2], angle t * inv_freq[i] with
 * inv_freq[i] = 1 / base^(2i/rope_dims). Computed in float32 whatever the
 * type, as train_gpt.py's Rotary does (its inv_freq and positions are float32
 * tensors), so both builds see the same table values. */
void gk_rope_table_f32(float *cos, float *sin, int T, int rope_dims, double base);

/* Rotary embedding, half-split (train_gpt.py's apply_rotary_emb): in each head
 * of x [B,T,H,D], with r = rope_dims, x1 = x[0 : r/2], x2 = x[r/2 : r],
 *   y1 = x1 cos + x2 sin,   y2 = -x1 sin + x2 cos,
 * at the token's position t within its sequence; channels r..D-1 pass through
 * (partial RoPE of the records; r = D is the baseline). y may alias x.
 * Backward: dx += the rotation by -angle of dy (dx must not alias dy). */
void gk_rope_fwd_f32(float *y, const float *x, const float *cos, const float *sin,
                     int B, int T, int H, int D, int rope_dims);
void gk_rope_bwd_f32(float *dx, const float *dy, const float *cos, const float *sin,
                     int B, int T, int H, int D, int rope_dims);

/* Causal grouped-query attention, as F.scaled_dot_product_attention with
 * is_causal and enable_gqa: q [B,T,H,D], k, v [B,T,KV,D], H a multiple of KV,
 * query head h reads kv head h / (H/KV) (repeat_interleave), scores
 * q.k / sqrt(D), token t sees tokens 0..t of its sequence. out [B,T,H,D];
 * lse [B,T,H] receives each row's log-sum-exp of the scaled scores, which is
 * all the backward needs to rebuild the probabilities (no [T,T] matrix is
 * kept between the passes; NULL when there is no backward). Computed as
 * matrix products per (b, h) with a T x T scratch per thread; threads split
 * (b, h).
 * Backward: dq [B,T,H,D], dk, dv [B,T,KV,D] += the gradients, rebuilt from
 * dout, the forward's out and lse, and q, k, v; threads split (b, kv head),
 * so every element of dk and dv has one writer. */
void gk_attention_fwd_f32(float *out, float *lse, const float *q, const float *k,
                          const float *v, int B, int T, int H, int KV, int D);
void gk_attention_bwd_f32(float *dq, float *dk, float *dv, const float *dout,
                          const float *out, const float *lse, const float *q,
                          const float *k, const float *v, int B, int T, int H, int KV,
                          int D);

/* Scale by a vector and add: y[n,c] += s[c / group] * x[n,c], x, y [N,C],
 * s [C/group]. With group 1 it is train_gpt.py's attn_scale, mlp_scale and
 * skip_weights (y the residual stream) and, twice into a zeroed y, resid_mix
 * (y = mix[0] x + mix[1] x0); with group D on [N, H*D] it is the per-head
 * q_gain (into a zeroed y). Backward: dx += s dy (dx may be NULL),
 * ds[j] += sum of x dy over its channels (ds may be NULL). */
void gk_scale_add_fwd_f32(float *y, const float *x, const float *s, int N, int C, int group);
void gk_scale_add_bwd_f32(float *dx, float *ds, const float *dy, const float *x,
                          const float *s, int N, int C, int group);

/* Feed-forward activation: y [N,F]. For relu2 and leaky2, x is [N,F]; for
 * swiglu, x is the up projection's output [N,2F] whose row holds the gate in
 * channels 0..F-1 and the up values in F..2F-1 (torch's chunk(2, dim=-1), as
 * the records' gate_up), y = silu(gate) * up. Backward: dx += f'(x) dy, same
 * shape as x. */
void gk_act_fwd_f32(float *y, const float *x, int N, int F, gk_act act);
void gk_act_bwd_f32(float *dx, const float *dy, const float *x, int N, int F, gk_act act);

/* Tied (or untied) head with tanh softcap and mean cross-entropy, fused:
 * l = cap tanh(z / cap), loss = mean over the N rows of logsumexp(l) - l[target].
 * z [N,V] is x W^T from gk_linear_fwd; targets [N] in 0..V-1. Returns the mean
 * loss, accumulated in double. When dz is not NULL it receives (overwrites)
 * dloss * d(mean loss)/dz [N,V]; dz may alias z, so a logits buffer turns into
 * its own gradient and the probabilities are never stored. losses [N]
 * receives each row's loss (NULL when not wanted). */
double gk_softcap_ce_f32(float *dz, double *losses, const float *z, const int *targets,
                         int N, int V, double cap, double dloss);

/* Token embedding: y [N,C] = wte[tokens[n]], wte [vocab,C].
 * Backward: dwte[tokens[n]] += dy[n] (scatter-add, in row order). */
void gk_embed_fwd_f32(float *y, const float *wte, const int *tokens, int N, int C);
void gk_embed_bwd_f32(float *dwte, const float *dy, const int *tokens, int N, int C);

/* ---- float64: the same functions in double, for the gradient checks ------- */

void gk_linear_fwd_f64(double *y, const double *x, const double *w, const double *bias,
                       int N, int in, int out);
void gk_linear_bwd_f64(double *dx, double *dw, double *dbias, const double *dy,
                       const double *x, const double *w, int N, int in, int out);
void gk_rmsnorm_fwd_f64(double *y, double *rstd, const double *x, int N, int C, double eps);
void gk_rmsnorm_bwd_f64(double *dx, const double *dy, const double *y, const double *rstd,
                        int N, int C);
void gk_rope_table_f64(double *cos, double *sin, int T, int rope_dims, double base);
void gk_rope_fwd_f64(double *y, const double *x, const double *cos, const double *sin,
                     int B, int T, int H, int D, int rope_dims);
void gk_rope_bwd_f64(double *dx, const double *dy, const double *cos, const double *sin,
                     int B, int T, int H, int D, int rope_dims);
void gk_attention_fwd_f64(double *out, double *lse, const double *q, const double *k,
                          const double *v, int B, int T, int H, int KV, int D);
void gk_attention_bwd_f64(double *dq, double *dk, double *dv, const double *dout,
                          const double *out, const double *lse, const double *q,
                          const double *k, const double *v, int B, int T, int H, int KV,
                          int D);
void gk_scale_add_fwd_f64(double *y, const double *x, const double *s, int N, int C,
                          int group);
void gk_scale_add_bwd_f64(double *dx, double *ds, const double *dy, const double *x,
                          const double *s, int N, int C, int group);
void gk_act_fwd_f64(double *y, const double *x, int N, int F, gk_act act);
void gk_act_bwd_f64(double *dx, const double *dy, const double *x, int N, int F,
                    gk_act act);
double gk_softcap_ce_f64(double *dz, double *losses, const double *z, const int *targets,
                         int N, int V, double cap, double dloss);
void gk_embed_fwd_f64(double *y, const double *wte, const int *tokens, int N, int C);
void gk_embed_bwd_f64(double *dwte, const double *dy, const int *tokens, int N, int C);

#endif
