/* model_impl: the forward and backward passes of model.h, written once over a
 * real type. lib/model.c includes this file twice, defining before each
 *   REAL      the element type (float, double),
 *   OP(name)  the name with its type suffix (name_f32, name_f64),
 *   MODEL     the model struct (gk_model_f32, gk_model_f64),
 *   MOE       the MoE feed-forward of moe.h (gk_moe_f32, gk_moe_f64),
 * so the double passes that the tests check by finite differences are the
 * very code the trainer runs in float, as ops_impl.h does for the layers.
 * Every step calls the layer of the same type from ops.h; the comments name
 * the line of train_gpt.py each step mirrors. No include guard, on purpose. */

/* What one block keeps for its backward. Names follow the forward below. */
typedef struct {
    const REAL *xin;           /* block input (x0, the previous output, or xskip) */
    REAL *ln1, *rstd1;         /* attn_norm(resid_mix(x, x0)) and its 1/rms */
    REAL *qn, *rstdq, *kn, *rstdk; /* per-head RMSNormed q [N,H,D], k [N,KV,D] */
    REAL *qr, *kr, *v;         /* q, k after rotary; v */
    REAL *qg;                  /* q after q_gain: what attention reads */
    REAL *att, *lse;           /* attention output [N,H,D], log-sum-exp [N,H] */
    REAL *ay;                  /* attn.proj output */
    REAL *ln2, *rstd2;         /* mlp_norm(x) */
    REAL *hpre, *hact;         /* mlp.fc output [N,fc_rows], activation [N,F] (dense only) */
    REAL *my;                  /* mlp.proj output */
    REAL *xout;                /* block output: the residual stream after the block */
} OP(block_acts);

struct MODEL {
    const gk_layout *l;
    int B, T, N;                /* N = B*T rows */
    int C, H, KV, D, R, F, FR, V; /* width, heads, kv heads, head dim, rope dims, hidden, fc rows, vocab */
    gk_act act;
    double cap;
    const REAL *params;         /* of the last forward */
    const int *tokens, *targets;
    REAL *cos, *sin;            /* rotary tables [T, R/2] */
    REAL *x0, *rstd0;           /* RMSNormed embedding (x0 of every block) */
    OP(block_acts) *blk;        /* [n_layer] */
    MOE **moe;                  /* [n_layer] each block's feed-forward; NULL when dense */
    int64_t *load;              /* [n_layer][n_experts] routed tokens (model.h) */
    REAL **xskip;               /* [n_skip]: decoder block i's input, x + skip_weights[i] * skip */
    REAL *xf, *rstdf;           /* final_norm output */
    REAL *logits;               /* [N,V] x W^T before the softcap; the backward turns it into dz */
    /* backward scratch: [N,C] residual gradients, one per pending encoder
     * output (dskip), and per-layer temporaries */
    REAL *dres, *dres2, *dx0, **dskip;
    REAL *dA, *dln, *datt, *dq1, *dq2, *dk1, *dk2, *dv, *dhact, *dhpre; /* dh*: dense only */
    void *mem;                  /* the one allocation all of the above live in */
};

static REAL *OP(take)(REAL **cursor, size_t n)
{
    REAL *p = *cursor;
    *cursor += n;
    return p;
}

static void OP(zero)(REAL *x, size_t n) { memset(x, 0, n * sizeof *x); }

MODEL *OP(gk_model_new)(const gk_layout *l, int B, int T)
{
    const gk_config *c = &l->cfg;
    MODEL *m = gk_calloc(1, sizeof *m);
    m->l = l, m->B = B, m->T = T, m->N = B * T;
    m->C = c->model.d_model, m->H = c->model.n_head, m->KV = c->model.n_kv_head;
    m->D = gk_config_head_dim(c), m->R = gk_config_rope_dims(c);
    m->F = gk_config_expert_hidden(c), m->FR = l->fc_rows, m->V = c->model.vocab;
    m->act = gk_ffn_act(c->model.activation);
    m->cap = c->model.logit_softcap;
    int L = c->model.n_layer;
    size_t N = (size_t)m->N, C = (size_t)m->C, KVD = (size_t)m->KV * m->D;
    /* the MoE keeps its own activations; the dense MLP's are not allocated */
    size_t F = l->moe ? 0 : (size_t)m->F, FR = l->moe ? 0 : (size_t)m->FR;
    size_t H = (size_t)m->H, KV = (size_t)m->KV;
    size_t per_block = N * (C * 9 + KVD * 3 + FR + F + 2 + H * 2 + KV);
    size_t scratch = N * (C * 8 + KVD * 3 + F + FR);
    size_t total = (size_t)T * m->R + N * (C * 2 + 2) + (size_t)L * per_block +
                   2 * (size_t)l->n_skip * N * C + N * (size_t)m->V + scratch;
    REAL *p = m->mem = gk_calloc(total, sizeof(REAL));
    m->cos = OP(take)(&p, (size_t)T * m->R / 2);
    m->sin = OP(take)(&p, (size_t)T * m->R / 2);
    OP(gk_rope_table)(m->cos, m->sin, T, m->R, c->model.rope_base);
    m->x0 = OP(take)(&p, N * C), m->rstd0 = OP(take)(&p, N);
    m->blk = gk_calloc((size_t)L, sizeof *m->blk);
    for (int i = 0; i < L; i++) {
        OP(block_acts) *a = &m->blk[i];
        a->ln1 = OP(take)(&p, N * C), a->rstd1 = OP(take)(&p, N);
        a->qn = OP(take)(&p, N * C), a->rstdq = OP(take)(&p, N * H);
        a->kn = OP(take)(&p, N * KVD), a->rstdk = OP(take)(&p, N * KV);
        a->qr = OP(take)(&p, N * C), a->kr = OP(take)(&p, N * KVD);
        a->v = OP(take)(&p, N * KVD), a->qg = OP(take)(&p, N * C);
        a->att = OP(take)(&p, N * C), a->lse = OP(take)(&p, N * H);
        a->ay = OP(take)(&p, N * C);
        a->ln2 = OP(take)(&p, N * C), a->rstd2 = OP(take)(&p, N);
        a->hpre = OP(take)(&p, N * FR), a->hact = OP(take)(&p, N * F);
        a->my = OP(take)(&p, N * C), a->xout = OP(take)(&p, N * C);
    }
    m->xskip = gk_calloc((size_t)l->n_skip + 1, sizeof *m->xskip);
    m->dskip = gk_calloc((size_t)l->n_skip + 1, sizeof *m->dskip);
    for (int i = 0; i < l->n_skip; i++)
        m->xskip[i] = OP(take)(&p, N * C), m->dskip[i] = OP(take)(&p, N * C);
    m->xf = OP(take)(&p, N * C), m->rstdf = OP(take)(&p, N);
    m->logits = OP(take)(&p, N * (size_t)m->V);
    m->dres = OP(take)(&p, N * C), m->dres2 = OP(take)(&p, N * C);
    m->dx0 = OP(take)(&p, N * C), m->dA = OP(take)(&p, N * C);
    m->dln = OP(take)(&p, N * C), m->datt = OP(take)(&p, N * C);
    m->dq1 = OP(take)(&p, N * C), m->dq2 = OP(take)(&p, N * C);
    m->dk1 = OP(take)(&p, N * KVD), m->dk2 = OP(take)(&p, N * KVD);
    m->dv = OP(take)(&p, N * KVD);
    m->dhact = OP(take)(&p, N * F), m->dhpre = OP(take)(&p, N * FR);
    if (l->moe) {
        m->moe = gk_calloc((size_t)L, sizeof *m->moe);
        for (int b = 0; b < L; b++)
            m->moe[b] = OP(gk_moe_new)(l, b, m->N);
        m->load = gk_calloc((size_t)L * c->moe.n_experts, sizeof *m->load);
    }
    return m;
}

void OP(gk_model_free)(MODEL *m)
{
    if (!m)
        return;
    for (int b = 0; m->moe && b < m->l->cfg.model.n_layer; b++)
        OP(gk_moe_free)(m->moe[b]);
    free(m->moe);
    free(m->load);
    free(m->mem);
    free(m->blk);
    free(m->xskip);
    free(m->dskip);
    free(m);
}

/* The tensor of kind k of block b, in a parameter or gradient buffer. */
static inline REAL *OP(bt)(const MODEL *m, const REAL *buf, int b, int k)
{
    return (REAL *)buf + gk_layout_block(m->l, b, k)->offset;
}

/* ---- forward ----------------------------------------------------------------- */

/* The feed-forward of a block on h = mlp_norm(x): train_gpt.py's MLP,
 * proj(act(fc(h))), or the mixture of experts of moe.h. */
static void OP(ffn_fwd)(MODEL *m, OP(block_acts) *a, int b)
{
    const REAL *P = m->params;
    if (m->moe) {
        OP(gk_moe_fwd)(m->moe[b], a->my, a->ln2, P, m->tokens);
        return;
    }
    OP(gk_linear_fwd)(a->hpre, a->ln2, OP(bt)(m, P, b, GK_BLK_FC), NULL, m->N, m->C, m->FR);
    OP(gk_act_fwd)(a->hact, a->hpre, m->N, m->F, m->act);
    OP(gk_linear_fwd)(a->my, a->hact, OP(bt)(m, P, b, GK_BLK_MLP_PROJ), NULL, m->N, m->F, m->C);
}

/* train_gpt.py's Block.forward on a->xin, into a->xout. */
static void OP(block_fwd)(MODEL *m, OP(block_acts) *a, int b)
{
    const REAL *P = m->params;
    int N = m->N, C = m->C, H = m->H, KV = m->KV, D = m->D, KVD = KV * D;
    REAL *x = a->xout, *mix = OP(bt)(m, P, b, GK_BLK_RESID_MIX);
    /* x = mix[0] * x + mix[1] * x0 */
    OP(zero)(x, (size_t)N * C);
    OP(gk_scale_add_fwd)(x, a->xin, mix, N, C, 1);
    OP(gk_scale_add_fwd)(x, m->x0, mix + C, N, C, 1);
    /* attn(attn_norm(x)): separate q, k, v projections; F.rms_norm of each
     * head of q and k; rotary on both; q times q_gain per head; SDPA. */
    OP(gk_rmsnorm_fwd)(a->ln1, a->rstd1, x, N, C, GK_RMSNORM_EPS);
    OP(gk_linear_fwd)(a->qn, a->ln1, OP(bt)(m, P, b, GK_BLK_C_Q), NULL, N, C, C);
    OP(gk_linear_fwd)(a->kn, a->ln1, OP(bt)(m, P, b, GK_BLK_C_K), NULL, N, C, KVD);
    OP(gk_linear_fwd)(a->v, a->ln1, OP(bt)(m, P, b, GK_BLK_C_V), NULL, N, C, KVD);
    OP(gk_rmsnorm_fwd)(a->qn, a->rstdq, a->qn, N * H, D, GK_RMSNORM_EPS);
    OP(gk_rmsnorm_fwd)(a->kn, a->rstdk, a->kn, N * KV, D, GK_RMSNORM_EPS);
    OP(gk_rope_fwd)(a->qr, a->qn, m->cos, m->sin, m->B, m->T, H, D, m->R);
    OP(gk_rope_fwd)(a->kr, a->kn, m->cos, m->sin, m->B, m->T, KV, D, m->R);
    OP(zero)(a->qg, (size_t)N * C);
    OP(gk_scale_add_fwd)(a->qg, a->qr, OP(bt)(m, P, b, GK_BLK_Q_GAIN), N, C, D);
    OP(gk_attention_fwd)(a->att, a->lse, a->qg, a->kr, a->v, m->B, m->T, H, KV, D);
    OP(gk_linear_fwd)(a->ay, a->att, OP(bt)(m, P, b, GK_BLK_ATTN_PROJ), NULL, N, C, C);
    /* x = x + attn_scale * attn_out */
    OP(gk_scale_add_fwd)(x, a->ay, OP(bt)(m, P, b, GK_BLK_ATTN_SCALE), N, C, 1);
    /* x = x + mlp_scale * mlp(mlp_norm(x)) */
    OP(gk_rmsnorm_fwd)(a->ln2, a->rstd2, x, N, C, GK_RMSNORM_EPS);
    OP(ffn_fwd)(m, a, b);
    OP(gk_scale_add_fwd)(x, a->my, OP(bt)(m, P, b, GK_BLK_MLP_SCALE), N, C, 1);
}

/* The encoder block whose output decoder block b pops, or -1. */
static int OP(skip_source)(const MODEL *m, int b)
{
    int i = b - m->l->n_enc;
    return i >= 0 && i < m->l->n_skip ? m->l->n_enc - 1 - i : -1;
}

double OP(gk_model_forward_rows)(MODEL *m, const REAL *params, const int *tokens,
                                 const int *targets, double *losses)
{
    const gk_layout *l = m->l;
    int N = m->N, C = m->C, L = l->cfg.model.n_layer;
    m->params = params, m->tokens = tokens, m->targets = targets;
    /* x = F.rms_norm(tok_emb(input_ids)); x0 = x */
    const REAL *wte = params + l->params[l->tok_emb].offset;
    OP(gk_embed_fwd)(m->x0, wte, tokens, N, C);
    OP(gk_rmsnorm_fwd)(m->x0, m->rstd0, m->x0, N, C, GK_RMSNORM_EPS);
    /* Encoder blocks push their outputs; decoder block i first adds
     * skip_weights[i] * skips.pop() (the latest pushed) while any remain. */
    const REAL *x = m->x0;
    for (int b = 0; b < L; b++) {
        int j = OP(skip_source)(m, b);
        if (j >= 0) {
            int i = b - l->n_enc;
            REAL *xs = m->xskip[i];
            memcpy(xs, x, (size_t)N * C * sizeof *xs);
            OP(gk_scale_add_fwd)(xs, m->blk[j].xout, params + l->params[l->skip_weights].offset +
                                 (size_t)i * C, N, C, 1);
            x = xs;
        }
        m->blk[b].xin = x;
        OP(block_fwd)(m, &m->blk[b], b);
        x = m->blk[b].xout;
    }
    /* final_norm, then the head (tok_emb when tied, else lm_head), softcap, CE */
    OP(gk_rmsnorm_fwd)(m->xf, m->rstdf, x, N, C, GK_RMSNORM_EPS);
    const REAL *head = l->lm_head >= 0 ? params + l->params[l->lm_head].offset : wte;
    OP(gk_linear_fwd)(m->logits, m->xf, head, NULL, N, C, m->V);
    return OP(gk_softcap_ce)(NULL, losses, m->logits, targets, N, m->V, m->cap, 1);
}

double OP(gk_model_forward)(MODEL *m, const REAL *params, const int *tokens,
                            const int *targets)
{
    return OP(gk_model_forward_rows)(m, params, tokens, targets, NULL);
}

const REAL *OP(gk_model_logits)(const MODEL *m) { return m->logits; }

const REAL *OP(gk_model_matrix_input)(const MODEL *m, const gk_layout *l, int j, int *cols)
{
    const gk_param *p = &l->params[j];
    if (p->ndim != 2 || p->group == GK_GROUP_BUFFER)
        return NULL;
    if (j == l->lm_head || (j == l->tok_emb && l->lm_head < 0)) {
        *cols = m->C;
        return m->xf; /* the head multiplies the final norm's output */
    }
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        const int *k = &l->blocks[b * GK_BLK_COUNT];
        const OP(block_acts) *a = &m->blk[b];
        *cols = p->shape[1];
        if (j == k[GK_BLK_C_Q] || j == k[GK_BLK_C_K] || j == k[GK_BLK_C_V])
            return a->ln1;
        if (j == k[GK_BLK_ATTN_PROJ])
            return a->att;
        if (j >= 0 && j == k[GK_BLK_FC])
            return a->ln2;
        if (j >= 0 && j == k[GK_BLK_MLP_PROJ])
            return a->hact;
    }
    return NULL; /* experts see gathered rows inside the mixture */
}

/* ---- backward ------------------------------------------------------------------ */

/* Gradient of ffn_fwd: m->dA holds d(my); adds d(ln2) into m->dln (zeroed). */
static void OP(ffn_bwd)(MODEL *m, OP(block_acts) *a, REAL *G, int b)
{
    const REAL *P = m->params;
    size_t N = (size_t)m->N;
    if (m->moe) {
        OP(zero)(m->dln, N * m->C);
        OP(gk_moe_bwd)(m->moe[b], m->dln, G, m->dA,
                       m->load + (size_t)b * m->l->cfg.moe.n_experts);
        return;
    }
    OP(zero)(m->dhact, N * m->F);
    OP(gk_linear_bwd)(m->dhact, OP(bt)(m, G, b, GK_BLK_MLP_PROJ), NULL, m->dA, a->hact,
                      OP(bt)(m, P, b, GK_BLK_MLP_PROJ), m->N, m->F, m->C);
    OP(zero)(m->dhpre, N * m->FR);
    OP(gk_act_bwd)(m->dhpre, m->dhact, a->hpre, m->N, m->F, m->act);
    OP(zero)(m->dln, N * m->C);
    OP(gk_linear_bwd)(m->dln, OP(bt)(m, G, b, GK_BLK_FC), NULL, m->dhpre, a->ln2,
                      OP(bt)(m, P, b, GK_BLK_FC), m->N, m->C, m->FR);
}

/* Gradient of block_fwd: m->dres holds d(xout) on entry and d(xin) on exit;
 * adds the parameter gradients into G and d(x0) into m->dx0. */
static void OP(block_bwd)(MODEL *m, OP(block_acts) *a, REAL *G, int b)
{
    const REAL *P = m->params;
    int N = m->N, C = m->C, H = m->H, KV = m->KV, D = m->D, KVD = KV * D;
    size_t NC = (size_t)N * C, NKVD = (size_t)N * KVD;
    /* x += mlp_scale * mlp(mlp_norm(x)) */
    OP(zero)(m->dA, NC);
    OP(gk_scale_add_bwd)(m->dA, OP(bt)(m, G, b, GK_BLK_MLP_SCALE), m->dres, a->my,
                         OP(bt)(m, P, b, GK_BLK_MLP_SCALE), N, C, 1);
    OP(ffn_bwd)(m, a, G, b);
    OP(gk_rmsnorm_bwd)(m->dres, m->dln, a->ln2, a->rstd2, N, C);
    /* x += attn_scale * attn(attn_norm(x)) */
    OP(zero)(m->dA, NC);
    OP(gk_scale_add_bwd)(m->dA, OP(bt)(m, G, b, GK_BLK_ATTN_SCALE), m->dres, a->ay,
                         OP(bt)(m, P, b, GK_BLK_ATTN_SCALE), N, C, 1);
    OP(zero)(m->datt, NC);
    OP(gk_linear_bwd)(m->datt, OP(bt)(m, G, b, GK_BLK_ATTN_PROJ), NULL, m->dA, a->att,
                      OP(bt)(m, P, b, GK_BLK_ATTN_PROJ), N, C, C);
    /* Back through SDPA, q_gain, rotary and the QK norms; dq1/dq2 and
     * dk1/dk2 take turns as the gradient moves down each chain. */
    OP(zero)(m->dq1, NC), OP(zero)(m->dk1, NKVD), OP(zero)(m->dv, NKVD);
    OP(gk_attention_bwd)(m->dq1, m->dk1, m->dv, m->datt, a->att, a->lse, a->qg, a->kr, a->v,
                         m->B, m->T, H, KV, D);
    OP(zero)(m->dq2, NC);
    OP(gk_scale_add_bwd)(m->dq2, OP(bt)(m, G, b, GK_BLK_Q_GAIN), m->dq1, a->qr,
                         OP(bt)(m, P, b, GK_BLK_Q_GAIN), N, C, D);
    OP(zero)(m->dq1, NC);
    OP(gk_rope_bwd)(m->dq1, m->dq2, m->cos, m->sin, m->B, m->T, H, D, m->R);
    OP(zero)(m->dq2, NC);
    OP(gk_rmsnorm_bwd)(m->dq2, m->dq1, a->qn, a->rstdq, N * H, D);
    OP(zero)(m->dk2, NKVD);
    OP(gk_rope_bwd)(m->dk2, m->dk1, m->cos, m->sin, m->B, m->T, KV, D, m->R);
    OP(zero)(m->dk1, NKVD);
    OP(gk_rmsnorm_bwd)(m->dk1, m->dk2, a->kn, a->rstdk, N * KV, D);
    OP(zero)(m->dln, NC);
    OP(gk_linear_bwd)(m->dln, OP(bt)(m, G, b, GK_BLK_C_Q), NULL, m->dq2, a->ln1,
                      OP(bt)(m, P, b, GK_BLK_C_Q), N, C, C);
    OP(gk_linear_bwd)(m->dln, OP(bt)(m, G, b, GK_BLK_C_K), NULL, m->dk1, a->ln1,
                      OP(bt)(m, P, b, GK_BLK_C_K), N, C, KVD);
    OP(gk_linear_bwd)(m->dln, OP(bt)(m, G, b, GK_BLK_C_V), NULL, m->dv, a->ln1,
                      OP(bt)(m, P, b, GK_BLK_C_V), N, C, KVD);
    OP(gk_rmsnorm_bwd)(m->dres, m->dln, a->ln1, a->rstd1, N, C);
    /* x = mix[0] * x + mix[1] * x0: d(xin) into dres2, then swap */
    const REAL *mix = OP(bt)(m, P, b, GK_BLK_RESID_MIX);
    REAL *gmix = OP(bt)(m, G, b, GK_BLK_RESID_MIX);
    OP(zero)(m->dres2, NC);
    OP(gk_scale_add_bwd)(m->dres2, gmix, m->dres, a->xin, mix, N, C, 1);
    OP(gk_scale_add_bwd)(m->dx0, gmix + C, m->dres, m->x0, mix + C, N, C, 1);
    REAL *t = m->dres;
    m->dres = m->dres2, m->dres2 = t;
}

void OP(gk_model_backward)(MODEL *m, REAL *grads, double dloss)
{
    const gk_layout *l = m->l;
    const REAL *P = m->params;
    int N = m->N, C = m->C, L = l->cfg.model.n_layer;
    size_t NC = (size_t)N * C;
    /* the head: logits become d(loss)/d(logits) in place */
    OP(gk_softcap_ce)(m->logits, NULL, m->logits, m->targets, N, m->V, m->cap, dloss);
    const gk_param *hp = &l->params[l->lm_head >= 0 ? l->lm_head : l->tok_emb];
    OP(zero)(m->dln, NC);
    OP(gk_linear_bwd)(m->dln, grads + hp->offset, NULL, m->logits, m->xf, P + hp->offset, N,
                      C, m->V);
    OP(zero)(m->dres, NC);
    OP(gk_rmsnorm_bwd)(m->dres, m->dln, m->xf, m->rstdf, N, C);
    OP(zero)(m->dx0, NC);
    for (int i = 0; i < l->n_skip; i++)
        OP(zero)(m->dskip[i], NC);
    for (int b = L - 1; b >= 0; b--) {
        /* an encoder output also went into a decoder's skip */
        if (b < l->n_enc && b >= l->n_enc - l->n_skip)
            for (size_t k = 0; k < NC; k++)
                m->dres[k] += m->dskip[l->n_enc - 1 - b][k];
        OP(block_bwd)(m, &m->blk[b], grads, b);
        int j = OP(skip_source)(m, b);
        if (j >= 0) { /* xin = x + skip_weights[i] * xout[j] */
            int i = b - l->n_enc;
            size_t sw = l->params[l->skip_weights].offset + (size_t)i * C;
            OP(gk_scale_add_bwd)(m->dskip[i], grads + sw, m->dres, m->blk[j].xout, P + sw, N,
                                 C, 1);
        }
        if (b == 0)
            for (size_t k = 0; k < NC; k++)
                m->dx0[k] += m->dres[k];
    }
    /* x0 = rms_norm(tok_emb[tokens]) */
    OP(zero)(m->dln, NC);
    OP(gk_rmsnorm_bwd)(m->dln, m->dx0, m->x0, m->rstd0, N, C);
    OP(gk_embed_bwd)(grads + l->params[l->tok_emb].offset, m->dln, m->tokens, N, C);
}

int64_t *OP(gk_model_expert_load)(MODEL *m) { return m->load; }
