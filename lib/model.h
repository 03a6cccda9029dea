/* model: the whole transformer of moe-train on the CPU (the dense golf
 * baseline of openai/parameter-golf train_gpt.py), its parameters, their
 * initialisation, and the forward and backward passes over a batch.
 *
 * The parameters live in one contiguous buffer; a layout (gk_layout) names
 * every tensor in it with train_gpt.py's state_dict names and shapes, says
 * which optimizer group train_gpt.py puts it in and how it is initialised.
 * One buffer keeps the optimizer, the gradient all-reduce and the checkpoint
 * code simple: each walks the same table, and a gradient buffer has the same
 * layout as the parameters.
 *
 * The passes are written once (lib/model_impl.h) and compiled in float (_f32,
 * what the trainer runs) and in double (_f64, what the tests differentiate by
 * finite differences), as the layers of ops.h are. A gk_model_* object owns
 * the activations of one micro-batch shape [B,T], allocated once.
 *
 * The feed-forward is the dense MLP when moe.n_experts is 1 and moe.n_shared
 * 0 (the baseline, with train_gpt.py's names), and otherwise the mixture of
 * experts of lib/moe.h, which replaces the block's feed-forward step (ffn_fwd
 * / ffn_bwd in model_impl.h) and nothing else. */
#ifndef GK_MODEL_H
#define GK_MODEL_H

#include "config.h"

#include <stddef.h>
#include <stdint.h>

/* The optimizer groups of train_gpt.py's main(): block matrices go to Muon,
 * the token embedding and the untied head to their own Adam, and every
 * vector or control tensor (q_gain, attn_scale, mlp_scale, resid_mix,
 * skip_weights: CONTROL_TENSOR_NAME_PATTERNS) to the scalar Adam. */
typedef enum {
    GK_GROUP_MATRIX, /* Muon, matrix_lr */
    GK_GROUP_EMBED,  /* Adam, tied_embed_lr (tied) or embed_lr (untied) */
    GK_GROUP_HEAD,   /* Adam, head_lr (untied lm_head only) */
    GK_GROUP_SCALAR, /* Adam, scalar_lr */
    GK_GROUP_BUFFER, /* not trained by gradient, but saved in checkpoints: the
                      * sigmoid router's load bias, moved by gk_moe_router_update */
} gk_param_group;

/* How a tensor starts (train_gpt.py's GPT._init_weights and the modules'
 * constructors); init_arg is the constant, the bound or the std. */
typedef enum {
    GK_INIT_CONST,     /* every element init_arg (zero-init projections, scales, q_gain) */
    GK_INIT_UNIFORM,   /* U(-init_arg, init_arg), init_arg = 1/sqrt(in): nn.Linear's default */
    GK_INIT_NORMAL,    /* N(0, init_arg^2) */
    GK_INIT_RESID_MIX, /* [2,C]: row 0 ones, row 1 zeros */
} gk_param_init;

typedef struct {
    char name[48];   /* state_dict name, e.g. "blocks.3.attn.c_q.weight" */
    int ndim;        /* 1 or 2 */
    int shape[2];    /* [rows, cols] (torch's shape); shape[1] = 1 when ndim is 1 */
    size_t offset;   /* first element in the parameter buffer */
    size_t numel;
    gk_param_group group;
    gk_param_init init;
    double init_arg;
} gk_param;

/* The tensors of one block, as indices into gk_layout.params. GK_BLK_FC and
 * GK_BLK_MLP_PROJ are the dense MLP's: -1 in a mixture-of-experts block, whose
 * feed-forward tensors gk_layout.moe lists instead. */
enum {
    GK_BLK_C_Q, GK_BLK_C_K, GK_BLK_C_V, GK_BLK_ATTN_PROJ, GK_BLK_Q_GAIN,
    GK_BLK_FC, GK_BLK_MLP_PROJ, GK_BLK_ATTN_SCALE, GK_BLK_MLP_SCALE, GK_BLK_RESID_MIX,
    GK_BLK_COUNT
};

/* The feed-forward tensors of a mixture-of-experts block, as indices into
 * gk_layout.params, in the block in this order after attn.q_gain (where the
 * dense mlp sits):
 *   blocks.B.moe.router.weight        [E, C]  learned routers (E > 1, not token)
 *   blocks.B.moe.router_bias          [E]     sigmoid_bias only (E > 1), a buffer
 *   blocks.B.moe.experts.J.fc.weight  [fc_rows, F], .proj.weight [C, F], J < E
 *   blocks.B.moe.shared.J.fc.weight   ...,                              J < S */
typedef struct {
    int router, router_bias; /* -1 when absent */
    int *fc, *proj;          /* [E + S]: the routed experts, then the shared ones */
} gk_moe_block;

/* Every tensor starts at a multiple of GK_TENSOR_ALIGN elements of the flat
 * buffer: 32 bytes in fp32, 16 in a bf16 copy, what the GPU's vector loads
 * and cuBLASLt's bf16 tensor-core products need of every operand (a
 * 4-element q_gain would otherwise shift every tensor after it). The
 * padding between tensors holds zeros, belongs to no tensor and is never
 * trained or written to a file (checkpoints store tensors by name). */
#define GK_TENSOR_ALIGN 8

/* Where everything is. Tensors are in the order tok_emb.weight, then each
 * block's GK_BLK_* tensors in enum order (with the gk_moe_block tensors in
 * place of mlp.fc and mlp.proj in a MoE model), then skip_weights (absent
 * when n_layer is 1), then lm_head.weight when untied. */
typedef struct {
    gk_config cfg;
    int n_params;      /* tensors */
    gk_param *params;  /* [n_params] */
    size_t numel;      /* elements of the whole buffer, padding included */
    size_t n_weights;  /* elements of the tensors: numel less the padding */
    int tok_emb, skip_weights, lm_head; /* indices into params; -1 when absent */
    int *blocks;       /* [n_layer][GK_BLK_COUNT] indices into params */
    /* U-Net split as train_gpt.py's GPT: n_enc = n_layer / 2 blocks push their
     * outputs, the others pop; decoder block i < n_skip adds skip_weights[i]
     * times the output of encoder block n_enc - 1 - i. */
    int n_enc, n_dec, n_skip;
    int fc_rows;       /* rows of mlp.fc.weight: hidden, or 2 x hidden for SwiGLU */
    gk_moe_block *moe; /* [n_layer]; NULL in the dense model */
    size_t n_buffer;   /* elements in GK_GROUP_BUFFER tensors (not parameters) */
} gk_layout;

/* Build the layout of a checked config; dies naming the setting when the
 * model cannot be built here (logit_softcap 0). */
void gk_layout_init(gk_layout *l, const gk_config *c);
void gk_layout_free(gk_layout *l);
/* The tensor called NAME, or NULL. */
const gk_param *gk_layout_find(const gk_layout *l, const char *name);
/* The tensor of kind K (GK_BLK_*) of block B; not GK_BLK_FC or
 * GK_BLK_MLP_PROJ in a MoE model, which has none (see gk_layout.moe). */
static inline const gk_param *gk_layout_block(const gk_layout *l, int b, int k)
{
    return &l->params[l->blocks[b * GK_BLK_COUNT + k]];
}

/* Fill params [l->numel] with the initial weights for SEED. Every tensor j (in
 * layout order) draws from its own splitmix64 stream whose state starts at
 * seed + (j + 1) * 0x9E3779B97F4A7C15; a uniform u in [0,1) is the top 53 bits
 * of the next output times 2^-53; U(-a,a) is a (2u - 1); a normal is
 * Box-Muller's sqrt(-2 ln(1 - u1)) cos(2 pi u2), one per two uniforms. Values
 * are computed in double and rounded to float. So a tensor's values depend on
 * the seed and its position only, and runs are bitwise repeatable. */
void gk_model_init_params(const gk_layout *l, float *params, uint64_t seed);

/* The activations of one micro-batch shape, in float or in double. */
typedef struct gk_model_f32 gk_model_f32;
typedef struct gk_model_f64 gk_model_f64;

/* Allocate the activations for B sequences of T tokens (positions 0..T-1 of
 * each sequence). The layout must outlive the model. */
gk_model_f32 *gk_model_new_f32(const gk_layout *l, int B, int T);
gk_model_f64 *gk_model_new_f64(const gk_layout *l, int B, int T);
void gk_model_free_f32(gk_model_f32 *m);
void gk_model_free_f64(gk_model_f64 *m);

/* Forward pass over tokens and targets [B,T] (values in 0..vocab-1): returns
 * the mean cross-entropy of the softcapped logits, train_gpt.py's GPT.forward.
 * Keeps pointers to params, tokens and targets for the backward. */
double gk_model_forward_f32(gk_model_f32 *m, const float *params, const int *tokens,
                            const int *targets);
double gk_model_forward_f64(gk_model_f64 *m, const double *params, const int *tokens,
                            const int *targets);

/* The same forward, also writing each position's cross-entropy (nats) to
 * losses [B*T] (NULL: none), for sliding-window evaluation. */
double gk_model_forward_rows_f32(gk_model_f32 *m, const float *params, const int *tokens,
                                 const int *targets, double *losses);
double gk_model_forward_rows_f64(gk_model_f64 *m, const double *params, const int *tokens,
                                 const int *targets, double *losses);

/* The logits of the last forward, [B*T, vocab], x W^T before the softcap
 * (l = cap tanh(z / cap) is the model's output): what an incremental decoder
 * (lib/generate.h) is checked against. Valid until the next forward or
 * backward (the backward turns them into their gradient in place). */
const float *gk_model_logits_f32(const gk_model_f32 *m);
const double *gk_model_logits_f64(const gk_model_f64 *m);

/* The [B*T, *cols] rows that tensor J (an index into l->params) multiplied in
 * the last forward, for GPTQ's calibration Hessian: the attention norm output
 * for c_q, c_k, c_v; the attention output for attn.proj; the MLP norm output
 * for mlp.fc; the activation for mlp.proj; the final norm output for the head
 * (tok_emb when tied). NULL for vectors, buffers and expert matrices (the
 * mixture gathers their rows internally). Valid until the next forward. */
const float *gk_model_matrix_input_f32(const gk_model_f32 *m, const gk_layout *l, int j,
                                       int *cols);
const double *gk_model_matrix_input_f64(const gk_model_f64 *m, const gk_layout *l, int j,
                                        int *cols);

/* Backward pass of the last forward: grads [l->numel] += dloss * d(loss)/d(params)
 * (dloss = 1 / grad_accum gives train_gpt.py's scaled micro-batch loss). The
 * caller zeroes grads once per step, so micro-batches accumulate. params,
 * tokens and targets must be unchanged since the forward. Consumes the
 * forward's logits, so it runs at most once per forward. */
void gk_model_backward_f32(gk_model_f32 *m, float *grads, double dloss);
void gk_model_backward_f64(gk_model_f64 *m, double *grads, double dloss);

/* Float models for the batch shapes an evaluation pass meets: full batches of
 * B sequences and one shorter last batch. Two slots, so neither shape is
 * rebuilt per batch; a third shape replaces the older slot.
 * Start it as {.l = layout}; free it with gk_model_cache_free. */
typedef struct {
    const gk_layout *l;
    gk_model_f32 *m[2];
    int B[2], T[2];
} gk_model_cache;

/* The cached model for [B, T], made when missing. */
gk_model_f32 *gk_model_cache_get(gk_model_cache *c, int B, int T);
void gk_model_cache_free(gk_model_cache *c);

/* The expert load of a MoE model: [n_layer][n_experts] tokens routed to each
 * routed expert (top_k per token) by the forwards that were back-propagated
 * since the caller last zeroed it (validation forwards do not count). The
 * trainer sums it over its micro-batches (and ranks), logs it with
 * gk_moe_load_fractions, feeds it to gk_moe_router_update after each
 * optimizer step, and zeroes it. NULL in the dense model. */
int64_t *gk_model_expert_load_f32(gk_model_f32 *m);
int64_t *gk_model_expert_load_f64(gk_model_f64 *m);

#endif
