/* moe: the mixture-of-experts feed-forward of kernels/moe.h on the GPU, the
 * steps of lib/moe_impl.h one for one: route, sort, gather, two GEMMs per
 * expert around the activation, combine; and the backward in reverse.
 *
 * Rows. As on the CPU, the forward lays out R = N top_k + S N rows, one per
 * (token, expert) pair: routed expert e's rows are start[e] .. start[e+1]-1
 * (its tokens in token order), then shared expert s's N rows at N top_k +
 * s N, in token order (so a shared row's token is its index, and the sort
 * never touches them). Every per-row buffer (xg, hpre, hact, out and their
 * gradients) has this order, so an expert's rows are one matrix for the GEMM.
 *
 * The sort is a counting sort whose result is a function of the choices only:
 * the N top_k slots are cut into chunks of SORT_CHUNK; one thread per chunk
 * counts its experts, one block turns the counts into each (chunk, expert)'s
 * first row (experts in order, chunks in order within an expert), and one
 * thread per chunk walks its slots in order placing them. So expert e's rows
 * hold its tokens in ascending token order, as the CPU's sequential fill.
 *
 * Kernels here are small and memory-bound except the router's (E dot
 * products per token, summed in double so its choice sits on the exact
 * logit, a few float ulp from the CPU's); the time goes to the GEMMs. Every
 * launch is followed by GK_CU(cudaGetLastError()). */
#include <stdint.h>
#include <string.h>

#include "moe.h"
extern "C" {
#include "ops.h" /* GK_LEAKY_SLOPE; no extern "C" of its own */
}

/* Threads of a block for the element-wise and per-token kernels; a multiple
 * of 32 (the per-token kernels run one warp per token). */
#define THREADS 256
/* Slots per thread of the counting sort: the scan's serial walk over chunks
 * is N top_k / SORT_CHUNK long, the placing walk SORT_CHUNK long. */
#define SORT_CHUNK 256
/* Tokens per partial sum of the router weight gradient (one double per
 * chunk, expert and channel, then summed over chunks in order). */
#define ROUTER_CHUNK 256

struct gk_cu_moe {
    const gk_layout *l;
    const gk_moe_block *t;
    int N, C, E, S, K, F, FR; /* tokens, width, routed, shared, top_k, hidden, fc rows */
    int cap;                  /* the N the buffers were carved for */
    int NK, R;                /* routed slots N K; rows N K + S N */
    int act;                  /* gk_activation */
    int learned, sigmoid, token; /* a router weight; its bias; the token router */
    int n_sort, n_rchunk;     /* chunks of the sort, of the router gradient */
    size_t span0, span;       /* the experts' tensors: first element, elements */
    int staged;               /* expert tensors not 16-byte aligned: copy the span */
    /* device */
    int *sel, *slot_row, *row_tok, *start, *cnt; /* [NK] x3, [E+1], [n_sort, E] */
    float *gate, *dgate, *score, *dz;            /* [NK] x2; [N,E] logits (sigmoid
                                                  * scores for sigmoid_bias), their grad */
    double *rpart;                               /* [n_rchunk, E, C] */
    gk_bf16 *xg, *hact, *dout, *dhpre;           /* [R,C], [R,F], [R,C], [R,FR] */
    float *hpre, *out, *dhact;                   /* [R,FR], [R,C] (dxg in the bwd), [R,F] */
    gk_bf16 *wstage;                             /* [span] when staged */
    float *gstage;                               /* [span] when staged */
    /* host */
    int *hstart;                                 /* [E+1] the forward's row offsets */
    const float *x, *params;                     /* of the last forward */
    const gk_bf16 *wbf;
};

/* Blocks for one warp per item. */
static unsigned warps_grid(int n) { return (unsigned)(((size_t)n * 32 + THREADS - 1) / THREADS); }

/* The warp's sum of v, every lane getting it: a butterfly of fixed shape. */
__device__ double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- routing ------------------------------------------------------------------ */

/* One routed expert, or the token router: expert token mod E, weight 1 (K 1). */
__global__ void route_fixed_k(int *sel, float *gate, const int *tokens, int N, int E,
                              int token)
{
    GK_GRID_STRIDE(n, (size_t)N)
    {
        sel[n] = token ? tokens[n] % E : 0;
        gate[n] = 1;
    }
}

/* The learned routers, one warp per token: the E logits x Wr^T (lanes split
 * the channels, sums in double), then lane 0 does moe_impl.h's route() on
 * them: sigmoid_bias keeps s = sigmoid(z) in score, picks the top_k of s +
 * bias and weighs by s normalised; softmax picks the top_k of z and weighs
 * by the softmax of the chosen. Ties go to the lower index (the strict >). */
__global__ void route_k(int *sel, float *gate, float *score, const float *x, const float *wr,
                        const float *bias, int N, int C, int E, int K)
{
    int n = (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (n >= N)
        return; /* whole warps: N's warps are complete or absent */
    const float *xr = x + (size_t)n * C;
    float *z = score + (size_t)n * E;
    for (int e = 0; e < E; e++) {
        const float *w = wr + (size_t)e * C;
        double acc = 0;
        for (int c = lane; c < C; c += 32)
            acc += (double)xr[c] * w[c];
        acc = warp_sum(acc);
        if (lane == 0)
            z[e] = (float)acc;
    }
    if (lane != 0)
        return;
    int *s = sel + (size_t)n * K;
    float *g = gate + (size_t)n * K;
    if (bias)
        for (int e = 0; e < E; e++)
            z[e] = 1 / (1 + expf(-z[e]));
    for (int k = 0; k < K; k++) {
        int best = -1;
        float bkey = 0;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < k; i++)
                taken |= s[i] == e;
            float key = bias ? __fadd_rn(z[e], bias[e]) : z[e];
            if (!taken && (best < 0 || key > bkey))
                best = e, bkey = key;
        }
        s[k] = best;
    }
    float sum = 0;
    if (bias) {
        for (int k = 0; k < K; k++)
            sum += z[s[k]];
        for (int k = 0; k < K; k++)
            g[k] = z[s[k]] / sum;
    } else {
        float max = z[s[0]];
        for (int k = 0; k < K; k++)
            sum += g[k] = expf(z[s[k]] - max);
        for (int k = 0; k < K; k++)
            g[k] /= sum;
    }
}

/* ---- the counting sort ---------------------------------------------------------- */

/* cnt[ch, e] = the slots of chunk ch that chose expert e. */
__global__ void sort_count_k(int *cnt, const int *sel, int NK, int E, int n_sort)
{
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= n_sort)
        return;
    int *c = cnt + (size_t)ch * E;
    for (int e = 0; e < E; e++)
        c[e] = 0;
    int end = min(NK, (ch + 1) * SORT_CHUNK);
    for (int i = ch * SORT_CHUNK; i < end; i++)
        c[sel[i]]++;
}

/* One block: start[e] = the first row of expert e (start[E] = N K), and
 * cnt[ch, e] = the first row of chunk ch's slots of expert e. */
__global__ void sort_scan_k(int *cnt, int *start, int E, int n_sort)
{
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int tot = 0;
        for (int ch = 0; ch < n_sort; ch++)
            tot += cnt[(size_t)ch * E + e];
        start[e + 1] = tot;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        start[0] = 0;
        for (int e = 0; e < E; e++)
            start[e + 1] += start[e];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int run = start[e];
        for (int ch = 0; ch < n_sort; ch++) {
            int v = cnt[(size_t)ch * E + e];
            cnt[(size_t)ch * E + e] = run;
            run += v;
        }
    }
}

/* Each chunk places its slots in order, advancing its cursors in cnt. */
__global__ void sort_place_k(int *row_tok, int *slot_row, int *cnt, const int *sel, int NK,
                             int E, int K, int n_sort)
{
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= n_sort)
        return;
    int *cur = cnt + (size_t)ch * E;
    int end = min(NK, (ch + 1) * SORT_CHUNK);
    for (int i = ch * SORT_CHUNK; i < end; i++) {
        int r = cur[sel[i]]++;
        row_tok[r] = i / K;
        slot_row[i] = r;
    }
}

/* ---- gather, activation, combine ------------------------------------------------ */

/* xg [R,C] = bf16 of each row's token's x. */
__global__ void gather_k(gk_bf16 *xg, const float *x, const int *row_tok, int N, int NK, int C,
                         size_t R)
{
    GK_GRID_STRIDE(i, R * C)
    {
        size_t r = i / C, c = i % C;
        size_t tok = r < (size_t)NK ? (size_t)row_tok[r] : (r - NK) % N;
        xg[i] = __float2bfloat16_rn(x[tok * C + c]);
    }
}

/* hact [R,F] (bf16, the proj GEMM's input) = act(hpre [R,FR]), the
 * expressions of gk_act_fwd (elementwise.cu's act_fwd_k, rounded once). */
__global__ void act_fwd_k(gk_bf16 *y, const float *x, size_t R, int F, int act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    GK_GRID_STRIDE(i, R * F)
    {
        float v;
        if (act == GK_ACT_SWIGLU) {
            size_t n = i / F, f = i % F;
            float g = x[n * 2 * F + f], up = x[n * 2 * F + F + f];
            v = g / (1 + expf(-g)) * up;
        } else {
            float u = x[i], a = u > 0 ? u : act == GK_ACT_LEAKY_RELU2 ? slope * u : 0;
            v = a * a;
        }
        y[i] = __float2bfloat16_rn(v);
    }
}

/* dx [R,FR] (bf16, the fc GEMMs' input) = the activation's gradient at x
 * [R,FR] times dy [R,F], overwriting (the CPU adds into zeros). */
__global__ void act_bwd_k(gk_bf16 *dx, const float *dy, const float *x, size_t R, int F,
                          int act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    GK_GRID_STRIDE(i, R * F)
    {
        float d = dy[i];
        if (act == GK_ACT_SWIGLU) {
            size_t n = i / F, f = i % F, ig = n * 2 * F + f, iu = ig + F;
            float g = x[ig], up = x[iu], sig = 1 / (1 + expf(-g));
            dx[ig] = __float2bfloat16_rn(d * up * sig * (1 + g * (1 - sig)));
            dx[iu] = __float2bfloat16_rn(d * g * sig);
        } else {
            float u = x[i];
            float v = u > 0 ? 2 * u * d : act == GK_ACT_LEAKY_RELU2 ? 2 * slope * slope * u * d : 0;
            dx[i] = __float2bfloat16_rn(v);
        }
    }
}

/* y [N,C] = each token's shared rows, then its routed rows times their
 * weights, in the CPU's order and roundings (unfused). */
__global__ void combine_k(float *y, const float *out, const float *gate, const int *slot_row,
                          int N, int C, int S, int K)
{
    size_t NK = (size_t)N * K;
    GK_GRID_STRIDE(i, (size_t)N * C)
    {
        size_t n = i / C, c = i % C;
        float v = 0;
        for (int s = 0; s < S; s++)
            v = __fadd_rn(v, out[(NK + (size_t)s * N + n) * C + c]);
        for (int k = 0; k < K; k++)
            v = __fadd_rn(v, __fmul_rn(gate[n * K + k], out[(size_t)slot_row[n * K + k] * C + c]));
        y[i] = v;
    }
}

/* ---- backward kernels --------------------------------------------------------- */

/* One warp per token: for each choice k, dgate = dy . out (double) and the
 * routed row's output gradient dout = gate dy (bf16); the shared rows' dout =
 * dy; then, for a learned router, lane 0 turns the dgates into the logits'
 * gradient dz [N,E] (moe_impl.h's router_bwd: zero for the experts not
 * chosen; sigmoid_bias through s / sum s and the sigmoid, softmax through
 * the softmax of the chosen). */
__global__ void combine_bwd_k(gk_bf16 *dout, float *dgate, float *dz, const float *dy,
                              const float *out, const float *gate, const float *score,
                              const int *sel, const int *slot_row, int N, int C, int E, int S,
                              int K, int learned, int sigmoid)
{
    int n = (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (n >= N)
        return;
    size_t NK = (size_t)N * K;
    const float *dyn = dy + (size_t)n * C;
    for (int k = 0; k < K; k++) {
        size_t r = (size_t)slot_row[(size_t)n * K + k];
        float g = gate[(size_t)n * K + k];
        double acc = 0;
        for (int c = lane; c < C; c += 32) {
            acc += (double)dyn[c] * out[r * C + c];
            dout[r * C + c] = __float2bfloat16_rn(g * dyn[c]);
        }
        acc = warp_sum(acc);
        if (lane == 0)
            dgate[(size_t)n * K + k] = (float)acc;
    }
    for (int s = 0; s < S; s++)
        for (int c = lane; c < C; c += 32)
            dout[(NK + (size_t)s * N + n) * C + c] = __float2bfloat16_rn(dyn[c]);
    if (!learned || lane != 0)
        return;
    const float *gn = gate + (size_t)n * K, *dg = dgate + (size_t)n * K;
    const float *sn = score + (size_t)n * E;
    const int *seln = sel + (size_t)n * K;
    float *dzn = dz + (size_t)n * E, gdg = 0, sum = 0;
    for (int e = 0; e < E; e++)
        dzn[e] = 0;
    for (int k = 0; k < K; k++)
        gdg += gn[k] * dg[k], sum += sn[seln[k]];
    for (int k = 0; k < K; k++) {
        float sk = sn[seln[k]];
        dzn[seln[k]] = sigmoid ? (dg[k] - gdg) / sum * sk * (1 - sk) : gn[k] * (dg[k] - gdg);
    }
}

/* dx [N,C] += each token's rows' input gradients (shared, then routed, the
 * CPU's order), then the router's dz Wr. */
__global__ void ungather_k(float *dx, const float *dxg, const int *slot_row, const float *dz,
                           const float *wr, int N, int C, int E, int S, int K)
{
    size_t NK = (size_t)N * K;
    GK_GRID_STRIDE(i, (size_t)N * C)
    {
        size_t n = i / C, c = i % C;
        float v = dx[i];
        for (int s = 0; s < S; s++)
            v = __fadd_rn(v, dxg[(NK + (size_t)s * N + n) * C + c]);
        for (int k = 0; k < K; k++)
            v = __fadd_rn(v, dxg[(size_t)slot_row[n * K + k] * C + c]);
        if (dz) {
            float t = 0;
            for (int e = 0; e < E; e++)
                t += dz[n * E + e] * wr[(size_t)e * C + c];
            v = __fadd_rn(v, t);
        }
        dx[i] = v;
    }
}

/* part [ch, e, c] = the sum over chunk ch's tokens of dz[n,e] x[n,c], in
 * token order, in double. Grid (chunks, E). */
__global__ void router_dw_part_k(double *part, const float *dz, const float *x, int N, int C,
                                 int E)
{
    int ch = blockIdx.x, e = blockIdx.y;
    int n0 = ch * ROUTER_CHUNK, n1 = min(N, n0 + ROUTER_CHUNK);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        double acc = 0;
        for (int n = n0; n < n1; n++)
            acc += (double)dz[(size_t)n * E + e] * x[(size_t)n * C + c];
        part[((size_t)ch * E + e) * C + c] = acc;
    }
}

/* dw [E,C] += the chunks' partial sums, chunks in order. */
__global__ void router_dw_sum_k(float *dw, const double *part, int n_chunk, size_t EC)
{
    GK_GRID_STRIDE(i, EC)
    {
        double s = 0;
        for (int ch = 0; ch < n_chunk; ch++)
            s += part[ch * EC + i];
        dw[i] = __fadd_rn(dw[i], (float)s);
    }
}

/* load [E] += each routed expert's rows. */
__global__ void load_k(long long *load, const int *start, int E)
{
    GK_GRID_STRIDE(e, (size_t)E)
    {
        load[e] += start[e + 1] - start[e];
    }
}

/* lib/moe.c's gk_moe_router_update for one layer, in the same integer and
 * double arithmetic: the bias moves by rate sign(sum - E load[e]). */
__global__ void router_update_k(float *bias, const long long *load, int E, double rate)
{
    GK_GRID_STRIDE(e, (size_t)E)
    {
        long long sum = 0;
        for (int i = 0; i < E; i++)
            sum += load[i];
        long long d = sum - (long long)E * load[e];
        bias[e] = __fadd_rn(bias[e], (float)(rate * (double)((d > 0) - (d < 0))));
    }
}

/* ---- the plan ----------------------------------------------------------------- */

/* The shape of block b for N tokens, from the layout. */
static void setup(gk_cu_moe *m, const gk_layout *l, int b, int N)
{
    const gk_config *c = &l->cfg;
    m->l = l, m->t = &l->moe[b];
    m->N = N, m->C = c->model.d_model, m->E = c->moe.n_experts, m->S = c->moe.n_shared;
    m->K = c->moe.top_k, m->F = gk_config_expert_hidden(c), m->FR = l->fc_rows;
    m->NK = N * m->K, m->R = m->NK + m->S * N;
    m->act = (int)c->model.activation;
    m->learned = m->t->router >= 0, m->sigmoid = m->t->router_bias >= 0;
    m->token = c->moe.router == GK_ROUTER_TOKEN;
    m->n_sort = (m->NK + SORT_CHUNK - 1) / SORT_CHUNK;
    m->n_rchunk = (N + ROUTER_CHUNK - 1) / ROUTER_CHUNK;
    /* The experts' tensors, one span (add_moe puts them one after another);
     * staged when any of them starts off a multiple of 8 elements. */
    size_t lo = (size_t)-1, hi = 0;
    m->staged = 0;
    for (int j = 0; j < m->E + m->S; j++) {
        const gk_param *p[2] = {&l->params[m->t->fc[j]], &l->params[m->t->proj[j]]};
        for (int i = 0; i < 2; i++) {
            lo = p[i]->offset < lo ? p[i]->offset : lo;
            hi = p[i]->offset + p[i]->numel > hi ? p[i]->offset + p[i]->numel : hi;
            m->staged |= p[i]->offset % 8 != 0;
        }
    }
    m->span0 = lo, m->span = hi - lo;
}

/* *ptr = N elements carved from A, or NULL when A is NULL (counting only);
 * *total += the bytes, rounded up to the arena's alignment. */
template <typename T> static void take(T **ptr, size_t n, gk_cu_arena *a, size_t *total)
{
    size_t bytes = n * sizeof **ptr;
    *total += (bytes + GK_CU_ALIGN - 1) / GK_CU_ALIGN * GK_CU_ALIGN;
    *ptr = a ? (T *)gk_cu_arena_alloc(a, bytes) : NULL;
}

/* Carve the device buffers from A, or only count their bytes when A is NULL;
 * returns the bytes. */
static size_t plan(gk_cu_moe *m, gk_cu_arena *a)
{
    size_t t = 0, NK = (size_t)m->NK, NE = (size_t)m->N * m->E, R = (size_t)m->R;
    size_t C = (size_t)m->C, F = (size_t)m->F, FR = (size_t)m->FR;
    take(&m->sel, NK, a, &t), take(&m->slot_row, NK, a, &t), take(&m->row_tok, NK, a, &t);
    take(&m->start, (size_t)m->E + 1, a, &t);
    take(&m->cnt, (size_t)m->n_sort * m->E, a, &t);
    take(&m->gate, NK, a, &t), take(&m->dgate, NK, a, &t);
    take(&m->score, m->learned ? NE : 0, a, &t), take(&m->dz, m->learned ? NE : 0, a, &t);
    take(&m->rpart, m->learned ? (size_t)m->n_rchunk * m->E * C : 0, a, &t);
    take(&m->xg, R * C, a, &t), take(&m->hact, R * F, a, &t);
    take(&m->dout, R * C, a, &t), take(&m->dhpre, R * FR, a, &t);
    take(&m->hpre, R * FR, a, &t), take(&m->out, R * C, a, &t), take(&m->dhact, R * F, a, &t);
    take(&m->wstage, m->staged ? m->span : 0, a, &t);
    take(&m->gstage, m->staged ? m->span : 0, a, &t);
    return t;
}

extern "C" size_t gk_cu_moe_bytes(const gk_layout *l, int N)
{
    size_t most = 0;
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        gk_cu_moe m;
        memset(&m, 0, sizeof m);
        setup(&m, l, b, N);
        size_t bytes = plan(&m, NULL);
        most = bytes > most ? bytes : most;
    }
    /* the arena may start unaligned: the first piece's padding */
    return most + GK_CU_ALIGN;
}

extern "C" gk_cu_moe *gk_cu_moe_new(const gk_layout *l, int b, int N, gk_cu_arena *arena)
{
    gk_cu_moe *m = (gk_cu_moe *)calloc(1, sizeof *m);
    if (!m)
        gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
    setup(m, l, b, N);
    plan(m, arena);
    m->cap = N;
    m->hstart = (int *)calloc((size_t)m->E + 1, sizeof *m->hstart);
    if (!m->hstart)
        gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
    return m;
}

extern "C" void gk_cu_moe_rows(gk_cu_moe *m, int N)
{
    if (N < 0 || N > m->cap) {
        char why[96];
        snprintf(why, sizeof why, "expected 0..%d rows, found %d", m->cap, N);
        gk_cu_fail("gk_cu_moe_rows", __FILE__, __LINE__, why);
    }
    setup(m, m->l, (int)(m->t - m->l->moe), N); /* the shapes only; buffers stay */
}

extern "C" void gk_cu_moe_free(gk_cu_moe *m)
{
    if (!m)
        return;
    free(m->hstart);
    free(m);
}

/* The bf16 weight, the fp32 gradient of tensor IDX (an expert's), in the
 * caller's buffer or in the aligned copy of the span. */
static const gk_bf16 *expert_w(const gk_cu_moe *m, int idx)
{
    size_t off = m->l->params[idx].offset;
    return m->staged ? m->wstage + (off - m->span0) : m->wbf + off;
}

static float *expert_g(const gk_cu_moe *m, float *grads, int idx)
{
    size_t off = m->l->params[idx].offset;
    return m->staged ? m->gstage + (off - m->span0) : grads + off;
}

/* ---- the passes ----------------------------------------------------------------- */

extern "C" void gk_cu_moe_fwd(gk_cu_moe *m, gk_gemm *g, float *y, const float *x,
                              const float *params, const gk_bf16 *wbf, const int *tokens)
{
    int N = m->N, C = m->C, E = m->E, S = m->S, K = m->K, F = m->F, FR = m->FR, NK = m->NK;
    cudaStream_t st = g->stream;
    m->x = x, m->params = params, m->wbf = wbf;
    if (N == 0)
        return;
    if (m->learned) {
        const float *wr = params + m->l->params[m->t->router].offset;
        const float *bias = m->sigmoid ? params + m->l->params[m->t->router_bias].offset : NULL;
        route_k<<<warps_grid(N), THREADS, 0, st>>>(m->sel, m->gate, m->score, x, wr, bias, N,
                                                   C, E, K);
    } else {
        route_fixed_k<<<gk_cu_grid((size_t)N, THREADS), THREADS, 0, st>>>(m->sel, m->gate, tokens,
                                                                          N, E, m->token);
    }
    GK_CU(cudaGetLastError());
    unsigned sort_grid = (unsigned)((m->n_sort + THREADS - 1) / THREADS);
    sort_count_k<<<sort_grid, THREADS, 0, st>>>(m->cnt, m->sel, NK, E, m->n_sort);
    GK_CU(cudaGetLastError());
    sort_scan_k<<<1, THREADS, 0, st>>>(m->cnt, m->start, E, m->n_sort);
    GK_CU(cudaGetLastError());
    sort_place_k<<<sort_grid, THREADS, 0, st>>>(m->row_tok, m->slot_row, m->cnt, m->sel, NK, E,
                                                K, m->n_sort);
    GK_CU(cudaGetLastError());
    GK_CU(cudaMemcpyAsync(m->hstart, m->start, (size_t)(E + 1) * sizeof *m->hstart,
                          cudaMemcpyDeviceToHost, st));
    size_t R = (size_t)m->R;
    gather_k<<<gk_cu_grid(R * C, THREADS), THREADS, 0, st>>>(m->xg, x, m->row_tok, N, NK, C, R);
    GK_CU(cudaGetLastError());
    if (m->staged)
        GK_CU(cudaMemcpyAsync(m->wstage, wbf + m->span0, m->span * sizeof *wbf,
                              cudaMemcpyDeviceToDevice, st));
    /* the counts size the GEMMs: the one wait of the pass */
    GK_CU(cudaStreamSynchronize(st));
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows > 0)
            gk_gemm_linear_fwd(g, m->hpre + r0 * FR, GK_OUT_F32, m->xg + r0 * C,
                               expert_w(m, m->t->fc[j]), rows, C, FR, 0);
    }
    act_fwd_k<<<gk_cu_grid(R * F, THREADS), THREADS, 0, st>>>(m->hact, m->hpre, R, F, m->act);
    GK_CU(cudaGetLastError());
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows > 0)
            gk_gemm_linear_fwd(g, m->out + r0 * C, GK_OUT_F32, m->hact + r0 * F,
                               expert_w(m, m->t->proj[j]), rows, F, C, 0);
    }
    combine_k<<<gk_cu_grid((size_t)N * C, THREADS), THREADS, 0, st>>>(y, m->out, m->gate,
                                                                      m->slot_row, N, C, S, K);
    GK_CU(cudaGetLastError());
}

extern "C" void gk_cu_moe_bwd(gk_cu_moe *m, gk_gemm *g, float *dx, float *grads,
                              const float *dy, long long *load)
{
    int N = m->N, C = m->C, E = m->E, S = m->S, K = m->K, F = m->F, FR = m->FR, NK = m->NK;
    cudaStream_t st = g->stream;
    if (N == 0)
        return;
    size_t R = (size_t)m->R;
    combine_bwd_k<<<warps_grid(N), THREADS, 0, st>>>(m->dout, m->dgate, m->dz, dy, m->out,
                                                     m->gate, m->score, m->sel, m->slot_row,
                                                     N, C, E, S, K, m->learned, m->sigmoid);
    GK_CU(cudaGetLastError());
    if (m->staged)
        GK_CU(cudaMemcpyAsync(m->gstage, grads + m->span0, m->span * sizeof *grads,
                              cudaMemcpyDeviceToDevice, st));
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows == 0)
            continue;
        gk_gemm_linear_bwd_dx(g, m->dhact + r0 * F, GK_OUT_F32, m->dout + r0 * C,
                              expert_w(m, m->t->proj[j]), rows, F, C, 0);
        gk_gemm_linear_bwd_dw(g, expert_g(m, grads, m->t->proj[j]), GK_OUT_F32,
                              m->dout + r0 * C, m->hact + r0 * F, rows, F, C, 1);
    }
    act_bwd_k<<<gk_cu_grid(R * F, THREADS), THREADS, 0, st>>>(m->dhpre, m->dhact, m->hpre, R, F,
                                                              m->act);
    GK_CU(cudaGetLastError());
    /* out is dead after combine_bwd_k: the input gradients of the rows
     * (dxg [R,C]) take its place */
    float *dxg = m->out;
    for (int j = 0; j < E + S; j++) {
        size_t r0 = j < E ? (size_t)m->hstart[j] : (size_t)NK + (size_t)(j - E) * N;
        int rows = j < E ? m->hstart[j + 1] - m->hstart[j] : N;
        if (rows == 0)
            continue;
        gk_gemm_linear_bwd_dx(g, dxg + r0 * C, GK_OUT_F32, m->dhpre + r0 * FR,
                              expert_w(m, m->t->fc[j]), rows, C, FR, 0);
        gk_gemm_linear_bwd_dw(g, expert_g(m, grads, m->t->fc[j]), GK_OUT_F32,
                              m->dhpre + r0 * FR, m->xg + r0 * C, rows, C, FR, 1);
    }
    if (m->staged)
        GK_CU(cudaMemcpyAsync(grads + m->span0, m->gstage, m->span * sizeof *grads,
                              cudaMemcpyDeviceToDevice, st));
    const float *wr = m->learned ? m->params + m->l->params[m->t->router].offset : NULL;
    ungather_k<<<gk_cu_grid((size_t)N * C, THREADS), THREADS, 0, st>>>(
        dx, dxg, m->slot_row, m->learned ? m->dz : NULL, wr, N, C, E, S, K);
    GK_CU(cudaGetLastError());
    if (m->learned) {
        dim3 grid((unsigned)m->n_rchunk, (unsigned)E);
        router_dw_part_k<<<grid, THREADS, 0, st>>>(m->rpart, m->dz, m->x, N, C, E);
        GK_CU(cudaGetLastError());
        size_t EC = (size_t)E * C;
        router_dw_sum_k<<<gk_cu_grid(EC, THREADS), THREADS, 0, st>>>(
            grads + m->l->params[m->t->router].offset, m->rpart, m->n_rchunk, EC);
        GK_CU(cudaGetLastError());
    }
    load_k<<<gk_cu_grid((size_t)E, THREADS), THREADS, 0, st>>>(load, m->start, E);
    GK_CU(cudaGetLastError());
}

extern "C" void gk_cu_moe_router_update(const gk_layout *l, float *params,
                                        const long long *load, double rate,
                                        cudaStream_t stream)
{
    if (!l->moe || l->cfg.moe.router != GK_ROUTER_SIGMOID_BIAS)
        return;
    int E = l->cfg.moe.n_experts;
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        if (l->moe[b].router_bias < 0)
            continue;
        router_update_k<<<gk_cu_grid((size_t)E, THREADS), THREADS, 0, stream>>>(
            params + l->params[l->moe[b].router_bias].offset, load + (size_t)b * E, E, rate);
        GK_CU(cudaGetLastError());
    }
}
