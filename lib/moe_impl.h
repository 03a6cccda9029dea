/* moe_impl: the forward and backward of moe.h, written once over a real type.
 * lib/moe.c includes this file twice, defining before each
 *   REAL      the element type (float, double),
 *   OP(name)  the name with its type suffix (name_f32, name_f64),
 *   MOE       the state struct (gk_moe_f32, gk_moe_f64),
 * as lib/model_impl.h does. No include guard, on purpose.
 *
 * Rows: the forward lays out R = N top_k + S N rows, one per (token, expert)
 * pair: expert j's rows are start[j] .. start[j+1]-1, the routed experts
 * first (their tokens in token order), then each shared expert's N rows in
 * token order. Every per-row buffer below (xg, hpre, hact, out and their
 * gradients) uses this order, so an expert's rows are one matrix. */

struct MOE {
    const gk_layout *l;
    const gk_moe_block *t;      /* this block's tensors */
    int N, C, E, S, K, F, FR;   /* tokens, width, routed, shared, top_k, hidden, fc rows */
    int R;                      /* rows: N K + S N */
    gk_act act;
    int learned;                /* a router weight exists (softmax or sigmoid_bias, E > 1) */
    const REAL *params, *x;     /* of the last forward */
    const int *tokens;
    REAL *z;                    /* [N,E] router logits; sigmoid scores for sigmoid_bias */
    int *sel;                   /* [N,K] the expert of each slot (token n, choice k) */
    REAL *gate;                 /* [N,K] its weight */
    int *start;                 /* [E+S+1] first row of each expert */
    int *row_tok;               /* [R] the token of each row */
    int *slot_row;              /* [N,K] the row of each slot */
    REAL *xg, *hpre, *hact, *out; /* [R,C] gathered x, [R,FR] fc, [R,F] act, [R,C] proj */
    REAL *dout, *dhact, *dhpre, *dxg; /* their gradients, for the backward */
    REAL *dgate, *dz;           /* [N,K], [N,E] */
    void *mem;                  /* the one allocation the REAL buffers live in */
};

static REAL *OP(moe_take)(REAL **cursor, size_t n)
{
    REAL *p = *cursor;
    *cursor += n;
    return p;
}

MOE *OP(gk_moe_new)(const gk_layout *l, int b, int N)
{
    const gk_config *c = &l->cfg;
    MOE *m = gk_calloc(1, sizeof *m);
    m->l = l, m->t = &l->moe[b];
    m->N = N, m->C = c->model.d_model, m->E = c->moe.n_experts, m->S = c->moe.n_shared;
    m->K = c->moe.top_k, m->F = gk_config_expert_hidden(c), m->FR = l->fc_rows;
    m->R = N * m->K + m->S * N;
    m->act = gk_ffn_act(c->model.activation);
    m->learned = m->t->router >= 0;
    size_t NK = (size_t)N * m->K, NE = (size_t)N * m->E, R = (size_t)m->R;
    size_t C = (size_t)m->C, F = (size_t)m->F, FR = (size_t)m->FR;
    REAL *p = m->mem = gk_calloc(2 * NE + 2 * NK + 2 * R * (2 * C + F + FR), sizeof(REAL));
    m->z = OP(moe_take)(&p, NE), m->dz = OP(moe_take)(&p, NE);
    m->gate = OP(moe_take)(&p, NK), m->dgate = OP(moe_take)(&p, NK);
    m->xg = OP(moe_take)(&p, R * C), m->hpre = OP(moe_take)(&p, R * FR);
    m->hact = OP(moe_take)(&p, R * F), m->out = OP(moe_take)(&p, R * C);
    m->dout = OP(moe_take)(&p, R * C), m->dhpre = OP(moe_take)(&p, R * FR);
    m->dhact = OP(moe_take)(&p, R * F), m->dxg = OP(moe_take)(&p, R * C);
    m->sel = gk_malloc(NK * sizeof *m->sel);
    m->slot_row = gk_malloc(NK * sizeof *m->slot_row);
    m->row_tok = gk_malloc(R * sizeof *m->row_tok);
    m->start = gk_malloc((size_t)(m->E + m->S + 1) * sizeof *m->start);
    return m;
}

void OP(gk_moe_free)(MOE *m)
{
    if (!m)
        return;
    free(m->mem);
    free(m->sel), free(m->slot_row), free(m->row_tok), free(m->start);
    free(m);
}

/* y [n] += a x [n] */
static void OP(moe_axpy)(REAL *y, REAL a, const REAL *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static REAL OP(sigmoid)(REAL v) { return 1 / (1 + exp(-v)); }

/* The top_k experts of one token by key [E] into sel [K], the best first;
 * a tie goes to the lower index, so the choice is a function of the keys. */
static void OP(top_k)(int *sel, const REAL *key, int E, int K)
{
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < k; i++)
                taken |= sel[i] == e;
            if (!taken && (best < 0 || key[e] > key[best]))
                best = e;
        }
        sel[k] = best;
    }
}

/* Choose the experts and weights of every token: m->sel, m->gate (and m->z). */
static void OP(route)(MOE *m)
{
    int N = m->N, E = m->E, K = m->K;
    gk_router router = m->l->cfg.moe.router;
    if (!m->learned) { /* one routed expert, or the token router */
        for (int n = 0; n < N; n++)
            m->sel[n] = router == GK_ROUTER_TOKEN ? m->tokens[n] % E : 0, m->gate[n] = 1;
        return;
    }
    OP(gk_linear_fwd)(m->z, m->x, m->params + m->l->params[m->t->router].offset, NULL, N,
                      m->C, E);
    const REAL *bias = router == GK_ROUTER_SIGMOID_BIAS
                           ? m->params + m->l->params[m->t->router_bias].offset
                           : NULL;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        REAL *z = m->z + (size_t)n * E, *g = m->gate + (size_t)n * K;
        int *sel = m->sel + (size_t)n * K;
        if (bias) {
            /* s = sigmoid(z) (kept in z); choose by s + bias, weigh by s alone */
            REAL key[E];
            for (int e = 0; e < E; e++)
                z[e] = OP(sigmoid)(z[e]), key[e] = z[e] + bias[e];
            OP(top_k)(sel, key, E, K);
            REAL sum = GK_MOE_GATE_EPS;
            for (int k = 0; k < K; k++)
                sum += z[sel[k]];
            for (int k = 0; k < K; k++)
                g[k] = z[sel[k]] / sum;
        } else {
            /* softmax(z) renormalised over the chosen = softmax of the chosen z;
             * the top_k of the probabilities are the top_k of the logits */
            OP(top_k)(sel, z, E, K);
            REAL max = z[sel[0]], sum = 0;
            for (int k = 0; k < K; k++)
                sum += g[k] = exp(z[sel[k]] - max);
            for (int k = 0; k < K; k++)
                g[k] /= sum;
        }
    }
}

/* The rows of the sort: start, row_tok, slot_row from m->sel. */
static void OP(sort_rows)(MOE *m)
{
    int N = m->N, E = m->E, S = m->S, K = m->K;
    int *fill = m->start; /* counts, then the next free row of each expert */
    memset(m->start, 0, (size_t)(E + S + 1) * sizeof *m->start);
    for (int i = 0; i < N * K; i++)
        fill[m->sel[i] + 1]++;
    for (int s = 0; s < S; s++)
        fill[E + s + 1] = N;
    for (int j = 0; j < E + S; j++)
        fill[j + 1] += fill[j];
    /* start[j] is now expert j's first row; fill rows in token order,
     * advancing start[e] as a cursor, then shift the cursors back */
    for (int i = 0; i < N * K; i++) {
        int r = m->start[m->sel[i]]++;
        m->row_tok[r] = i / K, m->slot_row[i] = r;
    }
    for (int j = E - 1; j > 0; j--)
        m->start[j] = m->start[j - 1];
    m->start[0] = 0;
    for (int s = 0; s < S; s++)
        for (int n = 0; n < N; n++)
            m->row_tok[m->start[E + s] + n] = n;
}

/* The tensor of expert j (routed j < E, else shared j - E) in buffer buf. */
static REAL *OP(expert_w)(const MOE *m, const REAL *buf, const int *idx, int j)
{
    return (REAL *)buf + m->l->params[idx[j]].offset;
}

void OP(gk_moe_fwd)(MOE *m, REAL *y, const REAL *x, const REAL *params, const int *tokens)
{
    int N = m->N, C = m->C, E = m->E, S = m->S, K = m->K, F = m->F, FR = m->FR;
    m->x = x, m->params = params, m->tokens = tokens;
    OP(route)(m);
    OP(sort_rows)(m);
#pragma omp parallel for
    for (int r = 0; r < m->R; r++)
        memcpy(m->xg + (size_t)r * C, x + (size_t)m->row_tok[r] * C, (size_t)C * sizeof *x);
    for (int j = 0; j < E + S; j++) {
        int r0 = m->start[j], rows = m->start[j + 1] - r0;
        if (rows == 0)
            continue;
        OP(gk_linear_fwd)(m->hpre + (size_t)r0 * FR, m->xg + (size_t)r0 * C,
                          OP(expert_w)(m, params, m->t->fc, j), NULL, rows, C, FR);
        OP(gk_act_fwd)(m->hact + (size_t)r0 * F, m->hpre + (size_t)r0 * FR, rows, F, m->act);
        OP(gk_linear_fwd)(m->out + (size_t)r0 * C, m->hact + (size_t)r0 * F,
                          OP(expert_w)(m, params, m->t->proj, j), NULL, rows, F, C);
    }
    /* combine: each token sums its shared rows, then its routed rows weighted */
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        REAL *yn = y + (size_t)n * C;
        memset(yn, 0, (size_t)C * sizeof *yn);
        for (int s = 0; s < S; s++)
            OP(moe_axpy)(yn, 1, m->out + (size_t)(m->start[E + s] + n) * C, C);
        for (int k = 0; k < K; k++)
            OP(moe_axpy)(yn, m->gate[n * K + k], m->out + (size_t)m->slot_row[n * K + k] * C, C);
    }
}

/* d(loss)/d(router logits) [N,E] from d(loss)/d(weights) [N,K]; zero for the
 * experts a token did not choose (the choice is held constant). */
static void OP(router_bwd)(MOE *m)
{
    int N = m->N, E = m->E, K = m->K;
    int sigmoid = m->l->cfg.moe.router == GK_ROUTER_SIGMOID_BIAS;
    memset(m->dz, 0, (size_t)N * E * sizeof *m->dz);
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const REAL *g = m->gate + (size_t)n * K, *dg = m->dgate + (size_t)n * K;
        const REAL *s = m->z + (size_t)n * E;
        const int *sel = m->sel + (size_t)n * K;
        REAL *dz = m->dz + (size_t)n * E, gdg = 0, sum = GK_MOE_GATE_EPS;
        for (int k = 0; k < K; k++)
            gdg += g[k] * dg[k], sum += s[sel[k]];
        for (int k = 0; k < K; k++) {
            if (sigmoid) {
                /* g_k = s_k / sum s: ds_k = (dg_k - sum_i g_i dg_i) / sum s,
                 * then through the sigmoid, ds/dz = s (1 - s) */
                REAL sk = s[sel[k]];
                dz[sel[k]] = (dg[k] - gdg) / sum * sk * (1 - sk);
            } else {
                /* g = softmax of the chosen logits */
                dz[sel[k]] = g[k] * (dg[k] - gdg);
            }
        }
    }
}

void OP(gk_moe_bwd)(MOE *m, REAL *dx, REAL *grads, const REAL *dy, int64_t *load)
{
    int N = m->N, C = m->C, E = m->E, S = m->S, K = m->K, F = m->F, FR = m->FR;
    size_t R = (size_t)m->R;
    /* y[n] = sum_s out[shared row] + sum_k gate[n,k] out[slot row]: the
     * gradient of each weight is dy . out, that of each row gate * dy */
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const REAL *dyn = dy + (size_t)n * C;
        for (int k = 0; k < K; k++) {
            size_t r = (size_t)m->slot_row[n * K + k];
            REAL g = m->gate[n * K + k], dg = 0;
            for (int c = 0; c < C; c++)
                dg += dyn[c] * m->out[r * C + c], m->dout[r * C + c] = g * dyn[c];
            m->dgate[n * K + k] = dg;
        }
        for (int s = 0; s < S; s++)
            memcpy(m->dout + (size_t)(m->start[E + s] + n) * C, dyn, (size_t)C * sizeof *dyn);
    }
    memset(m->dhact, 0, R * F * sizeof *m->dhact);
    memset(m->dhpre, 0, R * FR * sizeof *m->dhpre);
    memset(m->dxg, 0, R * C * sizeof *m->dxg);
    for (int j = 0; j < E + S; j++) {
        size_t r0 = (size_t)m->start[j];
        int rows = m->start[j + 1] - (int)r0;
        if (rows == 0)
            continue;
        OP(gk_linear_bwd)(m->dhact + r0 * F, OP(expert_w)(m, grads, m->t->proj, j), NULL,
                          m->dout + r0 * C, m->hact + r0 * F,
                          OP(expert_w)(m, m->params, m->t->proj, j), rows, F, C);
        OP(gk_act_bwd)(m->dhpre + r0 * FR, m->dhact + r0 * F, m->hpre + r0 * FR, rows, F,
                       m->act);
        OP(gk_linear_bwd)(m->dxg + r0 * C, OP(expert_w)(m, grads, m->t->fc, j), NULL,
                          m->dhpre + r0 * FR, m->xg + r0 * C,
                          OP(expert_w)(m, m->params, m->t->fc, j), rows, C, FR);
    }
    /* un-gather: each token adds its rows' input gradients, in a fixed order */
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        REAL *dxn = dx + (size_t)n * C;
        for (int s = 0; s < S; s++)
            OP(moe_axpy)(dxn, 1, m->dxg + (size_t)(m->start[E + s] + n) * C, C);
        for (int k = 0; k < K; k++)
            OP(moe_axpy)(dxn, 1, m->dxg + (size_t)m->slot_row[n * K + k] * C, C);
    }
    if (m->learned) {
        OP(router_bwd)(m);
        size_t w = m->l->params[m->t->router].offset;
        OP(gk_linear_bwd)(dx, grads + w, NULL, m->dz, m->x, m->params + w, N, C, E);
    }
    for (int i = 0; i < N * K; i++)
        load[m->sel[i]]++;
}
