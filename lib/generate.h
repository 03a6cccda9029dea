/* generate: incremental decoding of the CPU model (lib/model.h) with a KV
 * cache, one token at a time, in float: what moe-rollout runs.
 *
 * The full forward of model_impl.h recomputes every position of a sequence;
 * generating N tokens that way costs O(N^2) block passes. A decoder instead
 * keeps, for every layer, the rotated keys and the values of the positions it
 * has seen ([T_max, KV, D] each), so feeding token t runs each block on one
 * row and attends over the t + 1 cached rows: O(N) block passes in all.
 *
 * gk_gen_step computes, for its one position, exactly the function the full
 * forward computes there, step for step and with the same ops.h layers on
 * one row (N = 1): embedding and RMSNorm (x0), per block resid_mix with x0,
 * attn_norm, the q/k/v projections, per-head QK RMSNorm, (partial) rotary at
 * position t, q_gain, causal GQA attention over the cache, attn.proj and
 * attn_scale, mlp_norm, the dense MLP or the mixture of experts of moe.h
 * (gk_moe_fwd_f32 on the one row), mlp_scale; the U-Net skips with
 * skip_weights, final_norm, the tied or untied head and the softcap. Results
 * agree with gk_model_forward_rows_f32's logits (gk_model_logits_f32) up to
 * float rounding of the different product shapes (lib/generate_test.c checks
 * 1e-5 relative). Only the attention of one query over the cache is written
 * here: ops.h's attention computes all T queries of a sequence.
 *
 * Context: positions 0 .. T_max - 1 with T_max <= model.seq_len, the length
 * the model was trained at and its rotary table's. The decoder does not
 * slide: once T_max tokens are in the cache it is full (gk_gen_room is 0) and
 * a caller stops (moe-rollout reports stop_reason "context"); a further step
 * dies. */
#ifndef GK_GENERATE_H
#define GK_GENERATE_H

#include "model.h"

typedef struct gk_gen gk_gen;

/* A decoder for layout L (which must outlive it) and the float weights
 * PARAMS [l->numel] (read at every step, not copied), holding up to T_MAX
 * tokens (1 .. seq_len; 0 means seq_len). The cache starts empty. */
gk_gen *gk_gen_new(const gk_layout *l, const float *params, int t_max);
void gk_gen_free(gk_gen *g);

/* Feed TOKEN (0 .. vocab-1) at position gk_gen_pos(g) and return the
 * model's output there: the softcapped logits [vocab], l = cap tanh(z / cap),
 * the distribution of the next token. The buffer is the decoder's, valid
 * until the next step. Dies when the cache is full. */
float *gk_gen_step(gk_gen *g, int token);

/* Tokens in the cache (the position the next step takes), and the steps
 * left before it is full. */
int gk_gen_pos(const gk_gen *g);
int gk_gen_room(const gk_gen *g);

/* Empty the cache (a new sequence from position 0), keeping the buffers. */
void gk_gen_reset(gk_gen *g);

/* The model's softcap on raw logits z [n], in place: z = cap tanh(z / cap)
 * in float, as gk_softcap_ce computes it. */
void gk_gen_softcap(float *z, int n, double cap);

#endif
