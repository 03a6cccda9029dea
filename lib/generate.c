/* generate: the KV-cache decoder of generate.h.
 *
 * One step is model_impl.h's forward on one row, with the sequence dimension
 * replaced by the cache: the block code below follows block_fwd line by line
 * (same ops.h calls, N = 1), and the only new math is attend(), the causal
 * attention of one query over the cached rows, which ops.h's
 * gk_attention_fwd (all T queries of a sequence) does not offer. attend()
 * computes what gk_attention_fwd computes for its last row, in the same
 * order: scaled scores by a product, a float softmax with expf, then the
 * probabilities times V by a product.
 *
 * Everything is allocated once in gk_gen_new; a step allocates nothing
 * (the MoE keeps its own one-row state). */
#include "generate.h"

#include "moe.h"
#include "ops.h"
#include "util.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gk_gen {
    const gk_layout *l;
    const float *P;
    int T, pos, token;           /* capacity, tokens cached, the token being fed */
    int L, C, H, KV, D, R, F, FR, V;
    gk_act act;
    double cap;
    float *cos, *sin;            /* rotary tables [T, R/2] */
    float *kc, *vc;              /* [L][T][KV*D] rotated keys, values */
    float *x0, *xs, *ln, *q, *qg, *att, *ay, *my, *hpre, *hact, *xf, *p;
    float *xout;                 /* [L][C] each block's output at this position */
    float *logits;               /* [V] */
    gk_moe_f32 **moe;            /* [L] one-row mixtures; NULL when dense */
    float *mem;
};

gk_gen *gk_gen_new(const gk_layout *l, const float *params, int t_max)
{
    const gk_config *c = &l->cfg;
    if (t_max <= 0 || t_max > c->model.seq_len)
        t_max = c->model.seq_len;
    gk_gen *g = gk_calloc(1, sizeof *g);
    g->l = l, g->P = params, g->T = t_max;
    g->L = c->model.n_layer, g->C = c->model.d_model, g->H = c->model.n_head;
    g->KV = c->model.n_kv_head, g->D = gk_config_head_dim(c), g->R = gk_config_rope_dims(c);
    g->F = gk_config_expert_hidden(c), g->FR = l->fc_rows, g->V = c->model.vocab;
    g->act = gk_ffn_act(c->model.activation);
    g->cap = c->model.logit_softcap;
    size_t T = (size_t)g->T, L = (size_t)g->L, C = (size_t)g->C;
    size_t KVD = (size_t)g->KV * g->D, half = (size_t)g->R / 2;
    size_t F = l->moe ? 0 : (size_t)g->F, FR = l->moe ? 0 : (size_t)g->FR;
    size_t total = 2 * T * half + 2 * L * T * KVD + 9 * C + FR + F + T + L * C + (size_t)g->V;
    float *p = g->mem = gk_calloc(total, sizeof *p);
#define TAKE(dst, n) (dst = p, p += (n))
    TAKE(g->cos, T * half), TAKE(g->sin, T * half);
    TAKE(g->kc, L * T * KVD), TAKE(g->vc, L * T * KVD);
    TAKE(g->x0, C), TAKE(g->xs, C), TAKE(g->ln, C), TAKE(g->q, C), TAKE(g->qg, C);
    TAKE(g->att, C), TAKE(g->ay, C), TAKE(g->my, C), TAKE(g->xf, C);
    TAKE(g->hpre, FR), TAKE(g->hact, F), TAKE(g->p, T);
    TAKE(g->xout, L * C), TAKE(g->logits, (size_t)g->V);
#undef TAKE
    gk_rope_table_f32(g->cos, g->sin, g->T, g->R, c->model.rope_base);
    if (l->moe) {
        g->moe = gk_calloc(L, sizeof *g->moe);
        for (int b = 0; b < g->L; b++)
            g->moe[b] = gk_moe_new_f32(l, b, 1);
    }
    return g;
}

void gk_gen_free(gk_gen *g)
{
    if (!g)
        return;
    for (int b = 0; g->moe && b < g->L; b++)
        gk_moe_free_f32(g->moe[b]);
    free(g->moe);
    free(g->mem);
    free(g);
}

int gk_gen_pos(const gk_gen *g) { return g->pos; }
int gk_gen_room(const gk_gen *g) { return g->T - g->pos; }
void gk_gen_reset(gk_gen *g) { g->pos = 0; }

void gk_gen_softcap(float *z, int n, double cap)
{
    /* gk_softcap_ce's float expression: tanhf of the float quotient */
    const float rcap = (float)cap;
    for (int j = 0; j < n; j++)
        z[j] = rcap * tanhf(z[j] / rcap);
}

/* The tensor of kind k of block b. */
static const float *bt(const gk_gen *g, int b, int k)
{
    return g->P + gk_layout_block(g->l, b, k)->offset;
}

/* Causal GQA attention of the query g->qg at position t over the cached rows
 * 0..t of block b, into g->att: per head, p = softmax(q.k_j / sqrt(D)),
 * att = sum_j p_j v_j, query head h reading kv head h / (H / KV). */
static void attend(gk_gen *g, int b, int t)
{
    int D = g->D, KVD = g->KV * D, group = g->H / g->KV, n = t + 1;
    const float *kb = g->kc + (size_t)b * g->T * KVD, *vb = g->vc + (size_t)b * g->T * KVD;
    const float scale = (float)(1 / sqrt((double)D));
    for (int h = 0; h < g->H; h++) {
        int kh = h / group;
        float *p = g->p, mx = -INFINITY, sum = 0;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, D, scale, kb + (size_t)kh * D, KVD,
                    g->qg + (size_t)h * D, 1, 0, p, 1);
        for (int j = 0; j < n; j++)
            mx = p[j] > mx ? p[j] : mx;
        for (int j = 0; j < n; j++) {
            p[j] = expf(p[j] - mx);
            sum += p[j];
        }
        for (int j = 0; j < n; j++)
            p[j] /= sum;
        cblas_sgemv(CblasRowMajor, CblasTrans, n, D, 1, vb + (size_t)kh * D, KVD, p, 1, 0,
                    g->att + (size_t)h * D, 1);
    }
}

/* model_impl.h's block_fwd on one row: XIN at position t into the block's
 * output g->xout[b], caching the row's rotated k and v. */
static void block_step(gk_gen *g, int b, const float *xin, int t)
{
    int C = g->C, H = g->H, KV = g->KV, D = g->D, KVD = KV * D, half = g->R / 2;
    float *x = g->xout + (size_t)b * C;
    float *kt = g->kc + ((size_t)b * g->T + t) * KVD, *vt = g->vc + ((size_t)b * g->T + t) * KVD;
    const float *mix = bt(g, b, GK_BLK_RESID_MIX);
    /* x = mix[0] * x + mix[1] * x0 */
    memset(x, 0, (size_t)C * sizeof *x);
    gk_scale_add_fwd_f32(x, xin, mix, 1, C, 1);
    gk_scale_add_fwd_f32(x, g->x0, mix + C, 1, C, 1);
    /* attention: q, k, v; QK norms; rotary at t; q_gain; the cached rows */
    gk_rmsnorm_fwd_f32(g->ln, NULL, x, 1, C, GK_RMSNORM_EPS);
    gk_linear_fwd_f32(g->q, g->ln, bt(g, b, GK_BLK_C_Q), NULL, 1, C, C);
    gk_linear_fwd_f32(kt, g->ln, bt(g, b, GK_BLK_C_K), NULL, 1, C, KVD);
    gk_linear_fwd_f32(vt, g->ln, bt(g, b, GK_BLK_C_V), NULL, 1, C, KVD);
    gk_rmsnorm_fwd_f32(g->q, NULL, g->q, H, D, GK_RMSNORM_EPS);
    gk_rmsnorm_fwd_f32(kt, NULL, kt, KV, D, GK_RMSNORM_EPS);
    /* one row at "position 0" of tables that start at t is position t */
    const float *cs = g->cos + (size_t)t * half, *sn = g->sin + (size_t)t * half;
    gk_rope_fwd_f32(g->q, g->q, cs, sn, 1, 1, H, D, g->R);
    gk_rope_fwd_f32(kt, kt, cs, sn, 1, 1, KV, D, g->R);
    memset(g->qg, 0, (size_t)C * sizeof *g->qg);
    gk_scale_add_fwd_f32(g->qg, g->q, bt(g, b, GK_BLK_Q_GAIN), 1, C, D);
    attend(g, b, t);
    gk_linear_fwd_f32(g->ay, g->att, bt(g, b, GK_BLK_ATTN_PROJ), NULL, 1, C, C);
    gk_scale_add_fwd_f32(x, g->ay, bt(g, b, GK_BLK_ATTN_SCALE), 1, C, 1);
    /* x += mlp_scale * ffn(mlp_norm(x)) */
    gk_rmsnorm_fwd_f32(g->ln, NULL, x, 1, C, GK_RMSNORM_EPS);
    if (g->moe) {
        gk_moe_fwd_f32(g->moe[b], g->my, g->ln, g->P, &g->token);
    } else {
        gk_linear_fwd_f32(g->hpre, g->ln, bt(g, b, GK_BLK_FC), NULL, 1, C, g->FR);
        gk_act_fwd_f32(g->hact, g->hpre, 1, g->F, g->act);
        gk_linear_fwd_f32(g->my, g->hact, bt(g, b, GK_BLK_MLP_PROJ), NULL, 1, g->F, C);
    }
    gk_scale_add_fwd_f32(x, g->my, bt(g, b, GK_BLK_MLP_SCALE), 1, C, 1);
}

float *gk_gen_step(gk_gen *g, int token)
{
    const gk_layout *l = g->l;
    int t = g->pos, C = g->C;
    if (t >= g->T)
        gk_die("generate: the context is full (%d tokens, the model's seq_len %d)", g->T,
               l->cfg.model.seq_len);
    if (token < 0 || token >= g->V)
        gk_die("generate: expected a token id in 0..%d, found %d", g->V - 1, token);
    g->token = token;
    /* x0 = rms_norm(tok_emb[token]) */
    const float *wte = g->P + l->params[l->tok_emb].offset;
    gk_embed_fwd_f32(g->x0, wte, &g->token, 1, C);
    gk_rmsnorm_fwd_f32(g->x0, NULL, g->x0, 1, C, GK_RMSNORM_EPS);
    /* the U-Net as the forward's: decoder block n_enc + i (i < n_skip) reads
     * x + skip_weights[i] * the output of encoder block n_enc - 1 - i */
    const float *x = g->x0;
    for (int b = 0; b < g->L; b++) {
        int i = b - l->n_enc;
        if (i >= 0 && i < l->n_skip) {
            memcpy(g->xs, x, (size_t)C * sizeof *g->xs);
            gk_scale_add_fwd_f32(g->xs, g->xout + (size_t)(l->n_enc - 1 - i) * C,
                                 g->P + l->params[l->skip_weights].offset + (size_t)i * C, 1,
                                 C, 1);
            x = g->xs;
        }
        block_step(g, b, x, t);
        x = g->xout + (size_t)b * C;
    }
    /* final_norm, the head (tok_emb when tied), the softcap */
    gk_rmsnorm_fwd_f32(g->xf, NULL, x, 1, C, GK_RMSNORM_EPS);
    const float *head = l->lm_head >= 0 ? g->P + l->params[l->lm_head].offset : wte;
    gk_linear_fwd_f32(g->logits, g->xf, head, NULL, 1, C, g->V);
    gk_gen_softcap(g->logits, g->V, g->cap);
    g->pos++;
    return g->logits;
}
