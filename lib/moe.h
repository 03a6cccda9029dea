/* moe: the mixture-of-experts feed-forward of a block on the CPU, which
 * replaces the dense MLP when moe.n_experts > 1 or moe.n_shared > 0.
 *
 * E routed experts and S shared experts, each an MLP of the model's
 * activation with hidden width gk_config_expert_hidden (fc then proj, as the
 * dense MLP). Every token goes through the S shared experts with weight 1 and
 * through top_k routed experts with the router's weights; the outputs add up.
 * This is the moe100m seed's shape (8 routed + 1 shared, top-2) and
 * DeepSeek-V3's (DeepSeekMoE: fine-grained routed experts plus always-on
 * shared ones). The routers (config moe.router):
 *
 *   sigmoid_bias  DeepSeek-V3's auxiliary-loss-free balancing (arXiv
 *                 2412.19437, section 2.1.2): scores s = sigmoid(x Wr^T); a
 *                 token picks the top_k experts by s + bias, where bias is a
 *                 per-expert buffer that no gradient touches; the weights
 *                 are the picked s normalised to sum 1 (without the bias),
 *                 s_k / (sum s + GK_MOE_GATE_EPS).
 *                 After each optimizer step bias_e += rate sign(mean load -
 *                 load_e) (gk_moe_router_update): overloaded experts become
 *                 less attractive, with no balancing term in the loss.
 *   softmax       p = softmax(x Wr^T), top_k by p, the picked p renormalised.
 *   token         expert token_id mod E, weight 1 (the Complexity MoE PR's
 *                 token routing): deterministic, no router weights.
 * With one routed expert (E 1, S > 0) there is nothing to choose: every token
 * takes it with weight 1 and no router exists, as gk_config_params counts.
 *
 * Note that with top_k 1 the normalised weight of the sigmoid and softmax
 * routers is always 1, so their router receives no gradient; they are meant
 * for top_k >= 2 (top_k 1 wants the token router).
 *
 * The router weight [E, C] is a matrix, but the layout puts it in the scalar
 * Adam group, not Muon: it is small and very wide (E rows of C), and Muon's
 * orthogonalisation would set all its singular values alike, fixing the
 * scale of the router logits instead of letting it be learned; DeepSeek-V3
 * trains its gate with AdamW and keeps it, and the routing, in fp32 (the
 * float build here is fp32 throughout).
 *
 * Dispatch, as the CUDA path will do it: the top-k choice of every token
 * (ties to the lower expert index), then the token rows sorted by expert (a
 * counting sort, tokens in order within an expert, so the order never depends
 * on threads), gathered into one contiguous block per expert; each expert is
 * then two matrix products on its rows (gk_linear of ops.h), and each token
 * sums its weighted expert rows in a fixed order. The backward runs the same
 * steps in reverse; the choice of experts is a constant of the forward, and
 * the gradient reaches the router through the weights of the chosen experts.
 *
 * Like the layers of ops.h and the passes of model.h, the code is written once
 * (lib/moe_impl.h) and compiled in float (_f32) and double (_f64). */
#ifndef GK_MOE_H
#define GK_MOE_H

/* Added to the sum of a token's picked sigmoid scores before it divides
 * them, as DeepSeek-V3 does: the bias can make a token pick experts whose
 * scores have underflowed to 0 in float (router logits below about -100),
 * and 0 / 0 turned a whole training run to NaN (seen at step 283-421 of an
 * 8 x 384 physics MoE on the GPU). Negligible otherwise: 1e-20 against sums
 * of order 0.1 to 2. */
#define GK_MOE_GATE_EPS 1e-20

#include "model.h"
#include "ops.h"
#include "util.h"

#include <stdint.h>

/* The ops.h activation of a config's model.activation (the dense MLP's and
 * every expert's). */
static inline gk_act gk_ffn_act(gk_activation a)
{
    switch (a) {
    case GK_ACT_RELU2: return GK_OP_RELU2;
    case GK_ACT_LEAKY_RELU2: return GK_OP_LEAKY2;
    case GK_ACT_SWIGLU: return GK_OP_SWIGLU;
    }
    gk_die("model: unknown activation %d", (int)a);
}

/* The state of one block's MoE for N tokens: the routing of the last forward
 * and the activations its backward needs. */
typedef struct gk_moe_f32 gk_moe_f32;
typedef struct gk_moe_f64 gk_moe_f64;

/* For block B of a MoE layout (l->moe not NULL), N tokens per forward. */
gk_moe_f32 *gk_moe_new_f32(const gk_layout *l, int b, int N);
gk_moe_f64 *gk_moe_new_f64(const gk_layout *l, int b, int N);
void gk_moe_free_f32(gk_moe_f32 *m);
void gk_moe_free_f64(gk_moe_f64 *m);

/* y [N,C] = moe(x [N,C]) (overwrites y); tokens [N] are the input token ids
 * (read by the token router). Keeps pointers to x, params and tokens for the
 * backward, which need to stay unchanged until then. */
void gk_moe_fwd_f32(gk_moe_f32 *m, float *y, const float *x, const float *params,
                    const int *tokens);
void gk_moe_fwd_f64(gk_moe_f64 *m, double *y, const double *x, const double *params,
                    const int *tokens);

/* Backward of the last forward: dx [N,C] += dy d(y)/d(x), grads += dy
 * d(y)/d(params) (experts and router), and load [E] += the tokens the
 * forward routed to each routed expert. */
void gk_moe_bwd_f32(gk_moe_f32 *m, float *dx, float *grads, const float *dy, int64_t *load);
void gk_moe_bwd_f64(gk_moe_f64 *m, double *dx, double *grads, const double *dy,
                    int64_t *load);

/* frac [n_layer][E] = each routed expert's share of its layer's routed
 * tokens in load [n_layer][E] (gk_model_expert_load_*); 0 where a layer
 * routed nothing. A balanced layer is 1/E everywhere. */
void gk_moe_load_fractions(const gk_layout *l, const int64_t *load, double *frac);

/* The auxiliary-loss-free bias step of DeepSeek-V3, for every block of a
 * sigmoid_bias layout: router_bias[e] += rate sign(mean_e' load - load[e]),
 * from load [n_layer][E] of the step just taken (rate:
 * moe.bias_update_rate). Other routers have no bias: nothing happens. */
void gk_moe_router_update(const gk_layout *l, float *params, const int64_t *load,
                          double rate);

#endif
