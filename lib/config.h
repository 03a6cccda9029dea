/* config: the JSON configuration of moe-train (model shape, mixture of
 * experts, training), its defaults, validation, printing and derived sizes.
 *
 * One config file sets everything the trainer does, so a run can be repeated
 * from the file alone and a checkpoint can carry the exact config it was
 * trained with. The defaults are the parameter-golf baseline (openai/
 * parameter-golf train_gpt.py, class Hyperparameters and the model it builds):
 * an empty file "{}" trains that baseline. A file overrides any subset of keys.
 *
 * The file is one JSON object with three sections, each an object:
 *
 *   {"model": {...}, "moe": {...}, "train": {...}}
 *
 * Sections, and keys within them, may be left out or given in any order. The
 * architecture is split from the optimiser so a checkpoint reader only needs
 * "model" and "moe"; "moe" is its own section because a dense model ignores it
 * whole. man5/moe-config.5 lists every key with its type, default, range and
 * meaning; the table in config.c is the one source of that list (the printed
 * order is the table's order).
 *
 * Validation happens in two places. Each key is checked when it is applied
 * (known key, JSON type, range): an unknown key names the nearest valid key by
 * edit distance. Rules that tie keys together (heads divide the width, top_k
 * within n_experts, whole sequences per micro-batch...) are checked by
 * gk_config_check() once every source was applied, so a file and later --set
 * assignments can fix each other's shapes. Every error is one line through
 * gk_die() (exit 1) naming the source (file name or "--set") and the field.
 *
 * Sentinel 0 values ("derive this from the others") stay 0 in the struct and
 * in the printed config, so a printed config still composes with a later
 * change of d_model or n_head; the gk_config_* helpers below resolve them. */
#ifndef GK_CONFIG_H
#define GK_CONFIG_H

#include <jv.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    GK_ACT_RELU2,       /* relu(x)^2, the baseline's MLP */
    GK_ACT_LEAKY_RELU2, /* leaky_relu(x, 0.5)^2, from the records */
    GK_ACT_SWIGLU,      /* silu(x W_gate) * (x W_up), then W_down: three matrices */
} gk_activation;

typedef enum {
    GK_ROUTER_SIGMOID_BIAS, /* sigmoid scores + per-expert bias from load (aux-loss free) */
    GK_ROUTER_SOFTMAX,      /* softmax over experts, top-k */
    GK_ROUTER_TOKEN,        /* expert = token_id mod n_experts; no router weights */
} gk_router;

typedef enum {
    GK_SCHED_LINEAR_WARMDOWN, /* 1, then linear to lr_final_scale over the last warmdown_steps */
    GK_SCHED_COSINE,          /* half cosine from 1 to lr_final_scale after the warmup */
    GK_SCHED_CONSTANT,        /* 1 after the warmup */
} gk_lr_schedule;

typedef enum {
    GK_CLOCK_AUTO,      /* wallclock when max_seconds > 0, else steps (the baseline's rule) */
    GK_CLOCK_STEPS,     /* schedule progress = step / steps */
    GK_CLOCK_WALLCLOCK, /* schedule progress measured against max_seconds */
} gk_clock;

typedef struct {
    struct {
        int vocab, n_layer, d_model, n_head, n_kv_head;
        int mlp_mult;
        int mlp_hidden; /* 0: mlp_mult * d_model */
        gk_activation activation;
        bool tie_embeddings;
        double tied_embed_init_std, logit_softcap, rope_base;
        int rope_dims; /* 0: the whole head */
        double qk_gain_init;
        int seq_len;
    } model;
    struct {
        int n_experts, n_shared, top_k;
        int expert_hidden; /* 0: the dense MLP's hidden width */
        gk_router router;
        double bias_update_rate;
    } moe;
    struct {
        int64_t steps;
        double max_seconds;
        int64_t batch_tokens;
        int grad_accum;
        int prime_steps;
        gk_lr_schedule lr_schedule;
        gk_clock schedule_clock;
        int64_t lr_warmup_steps, warmdown_steps;
        double lr_final_scale;
        double embed_lr, head_lr, tied_embed_lr, matrix_lr, scalar_lr;
        double muon_momentum, muon_momentum_warmup_start;
        int64_t muon_momentum_warmup_steps;
        int muon_backend_steps;
        bool muon_nesterov;
        double muon_weight_decay;
        double beta1, beta2, adam_eps, adam_weight_decay;
        double grad_clip_norm;
        int64_t seed;
        int64_t val_every, val_batch_tokens, val_tokens;
        int64_t log_every, ckpt_every;
        double ema_decay; /* 0: off; else the float32 EMA of the weights, saved as ema.NAME */
    } train;
} gk_config;

/* The parameter-golf baseline. */
void gk_config_defaults(gk_config *c);

/* Parse the JSON text (len bytes) as a config object and apply every key it
 * holds over *c; WHERE names the source in errors (a file name). Per-key
 * checks only; dies on the first error. */
void gk_config_apply_text(gk_config *c, const char *text, size_t len, const char *where);
/* Read PATH ("-": stdin) and apply it as gk_config_apply_text does. */
void gk_config_apply_file(gk_config *c, const char *path);
/* Apply one "SECTION.KEY=VALUE" assignment (moe-train --set). VALUE is read as
 * JSON when it parses as JSON and as a bare string otherwise, so both
 * model.activation=swiglu and model.n_layer=4 work. WHERE names the source
 * ("--set") in errors. */
void gk_config_set(gk_config *c, const char *assignment, const char *where);
/* The rules across keys; dies naming WHERE and the first broken rule. */
void gk_config_check(const gk_config *c, const char *where);
/* Defaults, then PATH, then gk_config_check: the whole of a plain load. */
void gk_config_load(gk_config *c, const char *path);

/* Every key, sections and keys in the documented order (that of
 * man5/moe-config.5). The caller owns the result. Applying it to any config
 * gives back *c exactly. */
jv gk_config_to_jv(const gk_config *c);
/* The same as indented JSON text with a final newline; free() it. */
char *gk_config_to_json(const gk_config *c);

/* Derived quantities (valid after gk_config_check). */
static inline int gk_config_head_dim(const gk_config *c)
{
    return c->model.d_model / c->model.n_head;
}
static inline int gk_config_rope_dims(const gk_config *c)
{
    return c->model.rope_dims ? c->model.rope_dims : gk_config_head_dim(c);
}
static inline int gk_config_mlp_hidden(const gk_config *c)
{
    return c->model.mlp_hidden ? c->model.mlp_hidden : c->model.mlp_mult * c->model.d_model;
}
static inline int gk_config_expert_hidden(const gk_config *c)
{
    return c->moe.expert_hidden ? c->moe.expert_hidden : gk_config_mlp_hidden(c);
}

/* Trainable parameters as the model is built: token embedding (and a head
 * when untied); per block c_q, c_k, c_v, proj, q_gain (one per head),
 * attn_scale, mlp_scale, resid_mix (2 x d_model), (n_experts + n_shared)
 * feed-forward experts (2 matrices, 3 for SwiGLU) and, when n_experts > 1
 * and the router is learned, a d_model x n_experts router; skip_weights
 * (n_layer / 2 rows of d_model). RMSNorms carry no weights; the sigmoid
 * router's load bias is a buffer, not trained by gradient, so not counted.
 * *active counts what one token uses: total less the n_experts - top_k
 * routed experts it skips. */
void gk_config_params(const gk_config *c, int64_t *total, int64_t *active);

#endif
