/* model: the parameter layout and initialisation of model.h, and the forward
 * and backward passes of lib/model_impl.h instantiated in float and double.
 *
 * The layout mirrors train_gpt.py's GPT module by module (names, shapes, the
 * optimizer split of main(), the init of _init_weights and the constructors);
 * the one departure is SwiGLU, which train_gpt.py does not have: its gate and
 * up projections are one mlp.fc.weight [2 x hidden, d_model] (gate rows
 * first), the layout ops.h's activation reads, as the records' gate_up.
 * A mixture-of-experts block has the tensors of moe.h's experts and router in
 * place of mlp.fc and mlp.proj (gk_moe_block in model.h). */

#include "config.h"
#include "model.h"
#include "moe.h"
#include "ops.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- layout ------------------------------------------------------------------- */

/* Append tensor "blocks.B.NAME" (NAME alone when B < 0), [rows, cols] or
 * [rows] when cols is 0; returns its index. */
static int add(gk_layout *l, int *cap, gk_param_group group, gk_param_init init,
               double arg, int rows, int cols, int b, const char *name)
{
    if (l->n_params == *cap)
        l->params = gk_realloc(l->params, (size_t)(*cap = *cap * 2 + 16) * sizeof *l->params);
    gk_param *p = &l->params[l->n_params];
    memset(p, 0, sizeof *p);
    if (b < 0)
        snprintf(p->name, sizeof p->name, "%s", name);
    else
        snprintf(p->name, sizeof p->name, "blocks.%d.%s", b, name);
    p->ndim = cols ? 2 : 1;
    p->shape[0] = rows, p->shape[1] = cols ? cols : 1;
    p->numel = (size_t)rows * p->shape[1];
    p->offset = (l->numel + GK_TENSOR_ALIGN - 1) / GK_TENSOR_ALIGN * GK_TENSOR_ALIGN;
    p->group = group, p->init = init, p->init_arg = arg;
    l->numel = p->offset + p->numel;
    l->n_weights += p->numel;
    if (group == GK_GROUP_BUFFER)
        l->n_buffer += p->numel;
    return l->n_params++;
}

/* The feed-forward tensors of MoE block b (gk_moe_block in model.h). Experts
 * start as the dense MLP does (fc as nn.Linear, proj zero); the router as an
 * nn.Linear(d_model, E) without bias; the bias at zero. The router goes to
 * the scalar Adam, not Muon: moe.h says why. */
static void add_moe(gk_layout *l, int *cap, int b, double uc)
{
    const gk_config *c = &l->cfg;
    int E = c->moe.n_experts, S = c->moe.n_shared, C = c->model.d_model;
    int F = gk_config_expert_hidden(c);
    gk_moe_block *t = &l->moe[b];
    int learned = E > 1 && c->moe.router != GK_ROUTER_TOKEN;
    t->router = learned ? add(l, cap, GK_GROUP_SCALAR, GK_INIT_UNIFORM, uc, E, C, b,
                              "moe.router.weight")
                        : -1;
    t->router_bias = learned && c->moe.router == GK_ROUTER_SIGMOID_BIAS
                         ? add(l, cap, GK_GROUP_BUFFER, GK_INIT_CONST, 0, E, 0, b,
                               "moe.router_bias")
                         : -1;
    t->fc = gk_malloc((size_t)(E + S) * sizeof *t->fc);
    t->proj = gk_malloc((size_t)(E + S) * sizeof *t->proj);
    for (int j = 0; j < E + S; j++) {
        const char *kind = j < E ? "experts" : "shared";
        int i = j < E ? j : j - E;
        char name[40];
        snprintf(name, sizeof name, "moe.%s.%d.fc.weight", kind, i);
        t->fc[j] = add(l, cap, GK_GROUP_MATRIX, GK_INIT_UNIFORM, uc, l->fc_rows, C, b, name);
        snprintf(name, sizeof name, "moe.%s.%d.proj.weight", kind, i);
        t->proj[j] = add(l, cap, GK_GROUP_MATRIX, GK_INIT_CONST, 0, C, F, b, name);
    }
}

void gk_layout_init(gk_layout *l, const gk_config *c)
{
    if (c->model.logit_softcap <= 0)
        gk_die("model: model.logit_softcap 0 (off) is not supported: the head's fused "
               "loss (gk_softcap_ce) needs a positive cap");
    memset(l, 0, sizeof *l);
    l->cfg = *c;
    int cap = 0, L = c->model.n_layer, C = c->model.d_model, V = c->model.vocab;
    int KVD = c->model.n_kv_head * gk_config_head_dim(c);
    /* the dense MLP is the one expert, so its width is the expert width */
    int F = gk_config_expert_hidden(c);
    l->fc_rows = c->model.activation == GK_ACT_SWIGLU ? 2 * F : F;
    if (c->moe.n_experts > 1 || c->moe.n_shared > 0)
        l->moe = gk_calloc((size_t)L, sizeof *l->moe);
    l->n_enc = L / 2, l->n_dec = L - l->n_enc;
    l->n_skip = l->n_enc < l->n_dec ? l->n_enc : l->n_dec;
    /* nn.Linear's default init, kaiming_uniform_(a=sqrt(5)), is U(-1/sqrt(in), 1/sqrt(in)) */
    double uc = 1 / sqrt((double)C);
    /* tok_emb: N(0, tied_embed_init_std) when tied (_init_weights), else
     * nn.Embedding's default N(0, 1) */
    l->tok_emb = add(l, &cap, GK_GROUP_EMBED, GK_INIT_NORMAL,
                     c->model.tie_embeddings ? c->model.tied_embed_init_std : 1.0, V, C,
                     -1, "tok_emb.weight");
    l->blocks = gk_malloc((size_t)L * GK_BLK_COUNT * sizeof *l->blocks);
    for (int b = 0; b < L; b++) {
        int *k = l->blocks + b * GK_BLK_COUNT;
        /* attn.proj and mlp.proj are marked _zero_init; q_gain starts at
         * qk_gain_init; attn_scale, mlp_scale ones; resid_mix (ones, zeros) */
        k[GK_BLK_C_Q] = add(l, &cap, GK_GROUP_MATRIX, GK_INIT_UNIFORM, uc, C, C,
                            b, "attn.c_q.weight");
        k[GK_BLK_C_K] = add(l, &cap, GK_GROUP_MATRIX, GK_INIT_UNIFORM, uc, KVD, C,
                            b, "attn.c_k.weight");
        k[GK_BLK_C_V] = add(l, &cap, GK_GROUP_MATRIX, GK_INIT_UNIFORM, uc, KVD, C,
                            b, "attn.c_v.weight");
        k[GK_BLK_ATTN_PROJ] = add(l, &cap, GK_GROUP_MATRIX, GK_INIT_CONST, 0, C, C,
                                  b, "attn.proj.weight");
        k[GK_BLK_Q_GAIN] = add(l, &cap, GK_GROUP_SCALAR, GK_INIT_CONST, c->model.qk_gain_init,
                               c->model.n_head, 0, b, "attn.q_gain");
        if (l->moe) {
            k[GK_BLK_FC] = k[GK_BLK_MLP_PROJ] = -1;
            add_moe(l, &cap, b, uc);
        } else {
            k[GK_BLK_FC] = add(l, &cap, GK_GROUP_MATRIX, GK_INIT_UNIFORM, uc, l->fc_rows, C,
                               b, "mlp.fc.weight");
            k[GK_BLK_MLP_PROJ] = add(l, &cap, GK_GROUP_MATRIX, GK_INIT_CONST, 0, C, F,
                                     b, "mlp.proj.weight");
        }
        k[GK_BLK_ATTN_SCALE] = add(l, &cap, GK_GROUP_SCALAR, GK_INIT_CONST, 1, C, 0,
                                   b, "attn_scale");
        k[GK_BLK_MLP_SCALE] = add(l, &cap, GK_GROUP_SCALAR, GK_INIT_CONST, 1, C, 0,
                                  b, "mlp_scale");
        k[GK_BLK_RESID_MIX] = add(l, &cap, GK_GROUP_SCALAR, GK_INIT_RESID_MIX, 0, 2, C,
                                  b, "resid_mix");
    }
    /* skip_weights [n_skip, C], ones; train_gpt.py's scalar Adam takes it */
    l->skip_weights = l->n_skip ? add(l, &cap, GK_GROUP_SCALAR, GK_INIT_CONST, 1, l->n_skip,
                                      C, -1, "skip_weights")
                                : -1;
    /* untied lm_head is marked _zero_init and has its own Adam (head_lr) */
    l->lm_head = c->model.tie_embeddings ? -1
                                         : add(l, &cap, GK_GROUP_HEAD, GK_INIT_CONST, 0, V, C,
                                               -1, "lm_head.weight");
}

void gk_layout_free(gk_layout *l)
{
    for (int b = 0; l->moe && b < l->cfg.model.n_layer; b++)
        free(l->moe[b].fc), free(l->moe[b].proj);
    free(l->moe);
    free(l->params);
    free(l->blocks);
    memset(l, 0, sizeof *l);
}

const gk_param *gk_layout_find(const gk_layout *l, const char *name)
{
    for (int i = 0; i < l->n_params; i++)
        if (strcmp(l->params[i].name, name) == 0)
            return &l->params[i];
    return NULL;
}

/* ---- init ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; }

void gk_model_init_params(const gk_layout *l, float *params, uint64_t seed)
{
    for (int j = 0; j < l->n_params; j++) {
        const gk_param *p = &l->params[j];
        float *w = params + p->offset;
        uint64_t s = seed + (uint64_t)(j + 1) * 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < p->numel; i++) {
            double v;
            switch (p->init) {
            case GK_INIT_UNIFORM: v = p->init_arg * (2 * uniform01(&s) - 1); break;
            case GK_INIT_NORMAL: {
                double u1 = uniform01(&s), u2 = uniform01(&s);
                v = p->init_arg * sqrt(-2 * log(1 - u1)) * cos(2 * M_PI * u2);
                break;
            }
            case GK_INIT_RESID_MIX: v = i < (size_t)p->shape[1] ? 1 : 0; break;
            default: v = p->init_arg; break;
            }
            w[i] = (float)v;
        }
    }
}

/* ---- the passes, in float and in double ------------------------------------------- */

#define REAL float
#define OP(name) name##_f32
#define MODEL gk_model_f32
#define MOE gk_moe_f32
#include "model_impl.h"
#undef REAL
#undef OP
#undef MODEL
#undef MOE

#define REAL double
#define OP(name) name##_f64
#define MODEL gk_model_f64
#define MOE gk_moe_f64
#include "model_impl.h"
#undef REAL
#undef OP
#undef MODEL
#undef MOE

gk_model_f32 *gk_model_cache_get(gk_model_cache *c, int B, int T)
{
    for (int k = 0; k < 2; k++)
        if (c->m[k] && c->B[k] == B && c->T[k] == T)
            return c->m[k];
    if (c->m[0] && c->m[1]) { /* a third shape: drop the older slot */
        gk_model_free_f32(c->m[0]);
        c->m[0] = c->m[1], c->B[0] = c->B[1], c->T[0] = c->T[1];
        c->m[1] = NULL;
    }
    int k = c->m[0] ? 1 : 0;
    c->m[k] = gk_model_new_f32(c->l, B, T);
    c->B[k] = B, c->T[k] = T;
    return c->m[k];
}

void gk_model_cache_free(gk_model_cache *c)
{
    gk_model_free_f32(c->m[0]);
    gk_model_free_f32(c->m[1]);
    c->m[0] = c->m[1] = NULL;
}
