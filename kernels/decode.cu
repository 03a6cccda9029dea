/* decode: lib/generate.h's KV-cache decoder on the GPU, for many streams at
 * once (gk_gpu_dec of lib/gpu.h), what moe-rollout --device cuda runs.
 *
 * A step is lib/generate.c's gk_gen_step on n rows, one per stream fed: the
 * same passes in the same order (embedding and norm, per block resid_mix,
 * attn_norm, the q/k/v products, the QK norms, rotary at each row's own
 * position, q_gain, the attention over the stream's cache, attn.proj and its
 * scale, mlp_norm, the dense MLP or the mixture of experts, mlp_scale; the
 * U-Net skips; final_norm, the head, the softcap), with model.cu's kernels
 * where they exist. Two kernels are the decoder's own:
 * - rope_cache_k: rotary and q_gain for each row's queries, and the rotated
 *   keys and the values written into the stream's cache slot, in one pass;
 * - attend_k: one query over the cached rows 0..t of its stream, per (row,
 *   head), in fp32: scores, softmax with expf, p / sum, then p times V, the
 *   order of generate.c's attend().
 * Rows of one step belong to distinct streams, so no two rows write the same
 * cache slot, and a row attends only over its own stream's rows.
 *
 * Why many streams: a decoding step of a small model is a few hundred
 * microseconds of kernel launches and weight reads whatever the row count,
 * so rollouts of many scenes fed together cost about what one costs.
 *
 * Memory: one arena, planned by counting then carving (gk_cu_carver). The
 * caches are [L][S][T][KV*D] fp32, keys rotated. The host waits once a step,
 * for the logits. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_util.h"
#include "elementwise.h"
#include "gemm.h"
#include "modeldev.h"
#include "moe.h"

extern "C" {
#include "../lib/moe.h" /* gk_ffn_act; plain "moe.h" is kernels/moe.h from here */
#include "gpu.h"
#include "util.h"
}

#define ATTEND_THREADS 128

struct gk_gpu_dec {
    const gk_layout *l;
    int S, T, C, H, KV, D, R, F, FR, V, L;
    gk_act act;
    double cap;
    char name[320];
    cudaStream_t stream;
    gk_cu_arena arena;
    gk_gemm gemm;
    float *params;
    gk_bf16 *wbf;
    float *cos, *sin;
    float *kc, *vc;      /* [L][S][T][KV*D] */
    int *rows, *rows_h;  /* [3][S]: each row's token, stream, position (device, pinned host) */
    int *pos;            /* [S] host: tokens in each stream's cache */
    unsigned char *seen; /* [S] host: streams named in the current step */
    float *x0, *xs, *xout; /* xout [L][S*C]: each block's output rows */
    float *ln, *q, *k, *v, *qg, *ay, *my, *hpre, *xf, *logits;
    gk_bf16 *ln_b, *att_b, *hact_b, *xf_b;
    float *logits_h;     /* [S][V] pinned host */
    gk_cu_moe **moe;     /* [L] or NULL */
};

/* ---- the decoder's kernels ------------------------------------------------------ */

/* One block per row i of stream s at position t (rows [S + i], [2S + i]):
 * rotary of the row's H query heads and KV key heads at t, as gk_rope_fwd_f32
 * (half-split, the dims past rope_dims copied), the queries times q_gain
 * into qg, the keys and values into cache slot (s, t). The products are
 * spelled with round-to-nearest intrinsics so nvcc does not fuse them into
 * FMAs that the CPU reference does not do. */
__global__ void rope_cache_k(float *qg, float *kc, float *vc, const float *q, const float *k,
                             const float *v, const float *gain, const float *cos_t,
                             const float *sin_t, const int *rows, int S, int T, int H, int KV,
                             int D, int R)
{
    int i = blockIdx.x, s = rows[S + i], t = rows[2 * S + i], half = R / 2, KVD = KV * D;
    const float *c = cos_t + (size_t)t * half, *sn = sin_t + (size_t)t * half;
    size_t slot = ((size_t)s * T + t) * KVD;
    for (int e = threadIdx.x; e < (H + KV) * D; e += blockDim.x) {
        int h = e / D, j = e % D, isq = h < H;
        const float *x = isq ? q + ((size_t)i * H + h) * D : k + ((size_t)i * KV + h - H) * D;
        float y = x[j];
        if (j < half)
            y = __fadd_rn(__fmul_rn(x[j], c[j]), __fmul_rn(x[j + half], sn[j]));
        else if (j < R)
            y = __fadd_rn(__fmul_rn(-x[j - half], sn[j - half]), __fmul_rn(x[j], c[j - half]));
        if (isq)
            qg[(size_t)i * H * D + e] = __fmul_rn(gain[h], y);
        else
            kc[slot + e - H * D] = y;
    }
    for (int e = threadIdx.x; e < KVD; e += blockDim.x)
        vc[slot + e] = v[(size_t)i * KVD + e];
}

/* The block's reduction of v by OP over ATTEND_THREADS threads: a shuffle
 * tree per warp, then the warps' values in order by thread 0; every thread
 * gets the result. RED holds a value per warp. */
template <typename Op> __device__ float attend_reduce(float v, float *red, Op op)
{
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < ATTEND_THREADS / 32; w++)
        r = op(r, red[w]);
    __syncthreads();
    return r;
}

/* Block (row i, head h), ATTEND_THREADS threads: the query qg [i, h] over
 * its stream's cached rows 0..t (kv head h / (H / KV)): p_j = scale q.k_j,
 * softmax, out [i, h] = sum_j p_j v_j, written as the bf16 attn.proj reads.
 * Shared memory: T scores and the D query values. */
__global__ void attend_k(gk_bf16 *out, const float *qg, const float *kc, const float *vc,
                         const int *rows, int S, int T, int H, int KV, int D, float scale)
{
    extern __shared__ float sh[];
    __shared__ float red[ATTEND_THREADS / 32];
    float *p = sh, *q = sh + T;
    int i = blockIdx.x, h = blockIdx.y, s = rows[S + i], n = rows[2 * S + i] + 1;
    int KVD = KV * D, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *kb = kc + (size_t)s * T * KVD + (size_t)(h / (H / KV)) * D;
    const float *vb = vc + (size_t)s * T * KVD + (size_t)(h / (H / KV)) * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x)
        q[j] = qg[((size_t)i * H + h) * D + j];
    __syncthreads();
    for (int j = warp; j < n; j += ATTEND_THREADS / 32) {
        float acc = 0;
        for (int e = lane; e < D; e += 32)
            acc += q[e] * kb[(size_t)j * KVD + e];
        for (int o = 16; o > 0; o >>= 1)
            acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0)
            p[j] = scale * acc;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        mx = fmaxf(mx, p[j]);
    mx = attend_reduce(mx, red, [](float a, float b) { return fmaxf(a, b); });
    float sum = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        sum += p[j] = expf(p[j] - mx);
    sum = attend_reduce(sum, red, [](float a, float b) { return a + b; });
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        p[j] /= sum;
    __syncthreads();
    for (int e = threadIdx.x; e < D; e += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < n; j++)
            acc += p[j] * vb[(size_t)j * KVD + e];
        out[((size_t)i * H + h) * D + e] = __float2bfloat16_rn(acc);
    }
}

/* l = cap tanh(z / cap) in float, gk_gen_softcap's expression. */
__global__ void softcap_k(float *z, size_t n, float cap)
{
    GK_GRID_STRIDE(i, n)
        z[i] = __fmul_rn(cap, tanhf(__fdiv_rn(z[i], cap)));
}

/* ---- the decoder ---------------------------------------------------------------- */

static float *carve_f(gk_cu_carver *c, size_t n) { return (float *)gk_cu_carve(c, n * 4); }
static gk_bf16 *carve_b(gk_cu_carver *c, size_t n) { return (gk_bf16 *)gk_cu_carve(c, n * 2); }

static void carve_all(gk_gpu_dec *d, gk_cu_carver *c)
{
    size_t S = d->S, C = d->C, KVD = (size_t)d->KV * d->D, half = (size_t)d->R / 2;
    size_t F = d->l->moe ? 0 : d->F, FR = d->l->moe ? 0 : d->FR;
    d->params = carve_f(c, d->l->numel);
    d->wbf = carve_b(c, d->l->numel);
    d->cos = carve_f(c, d->T * half), d->sin = carve_f(c, d->T * half);
    d->kc = carve_f(c, (size_t)d->L * S * d->T * KVD);
    d->vc = carve_f(c, (size_t)d->L * S * d->T * KVD);
    d->rows = (int *)gk_cu_carve(c, 3 * S * sizeof(int));
    d->x0 = carve_f(c, S * C), d->xs = carve_f(c, S * C);
    d->xout = carve_f(c, (size_t)d->L * S * C);
    d->ln = carve_f(c, S * C), d->ln_b = carve_b(c, S * C);
    d->q = carve_f(c, S * C), d->k = carve_f(c, S * KVD), d->v = carve_f(c, S * KVD);
    d->qg = carve_f(c, S * C), d->att_b = carve_b(c, S * C), d->ay = carve_f(c, S * C);
    d->hpre = carve_f(c, S * FR), d->hact_b = carve_b(c, S * F), d->my = carve_f(c, S * C);
    d->xf = carve_f(c, S * C), d->xf_b = carve_b(c, S * C);
    d->logits = carve_f(c, S * d->V);
}

gk_gpu_dec *gk_gpu_dec_new(const gk_layout *l, const float *params, int streams, int t_max,
                           const char *prog)
{
    const gk_config *c = &l->cfg;
    if (streams < 1)
        gk_die("%s: expected at least 1 decoding stream, found %d", prog, streams);
    gk_gpu_dec *d = (gk_gpu_dec *)gk_calloc(1, sizeof *d);
    d->l = l, d->S = streams;
    d->T = t_max <= 0 || t_max > c->model.seq_len ? c->model.seq_len : t_max;
    d->C = c->model.d_model, d->H = c->model.n_head, d->KV = c->model.n_kv_head;
    d->D = gk_config_head_dim(c), d->R = gk_config_rope_dims(c);
    d->F = gk_config_expert_hidden(c), d->FR = l->fc_rows, d->V = c->model.vocab;
    d->L = c->model.n_layer, d->act = gk_ffn_act(c->model.activation);
    d->cap = c->model.logit_softcap;
    gk_cu_model_open(l, prog, d->name, sizeof d->name);
    GK_CU(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));

    gk_cu_carver count = {NULL, 0};
    carve_all(d, &count);
    size_t bytes = count.bytes + GK_GEMM_WORKSPACE + 2 * GK_CU_ALIGN;
    if (l->moe)
        bytes += (size_t)d->L * (gk_cu_moe_bytes(l, streams) + GK_CU_ALIGN);
    gk_cu_arena_reserve(&d->arena, bytes);
    gk_cu_carver real = {&d->arena, 0};
    carve_all(d, &real);
    gk_gemm_init(&d->gemm, &d->arena, d->stream);
    if (l->moe) {
        d->moe = (gk_cu_moe **)gk_calloc((size_t)d->L, sizeof *d->moe);
        for (int b = 0; b < d->L; b++)
            d->moe[b] = gk_cu_moe_new(l, b, streams, &d->arena);
    }
    GK_CU(cudaMallocHost((void **)&d->rows_h, 3 * (size_t)streams * sizeof(int)));
    GK_CU(cudaMallocHost((void **)&d->logits_h, (size_t)streams * d->V * sizeof(float)));
    d->pos = (int *)gk_calloc((size_t)streams, sizeof *d->pos);
    d->seen = (unsigned char *)gk_calloc((size_t)streams, 1);

    /* attend_k's scores: past the default 48 KiB of shared memory from
     * seq_len 12,000 on */
    GK_CU(cudaFuncSetAttribute(attend_k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)((d->T + d->D) * sizeof(float))));
    gk_cu_rope_upload(d->cos, d->sin, d->T, c, d->stream);
    GK_CU(cudaMemcpyAsync(d->params, params, l->numel * sizeof(float), cudaMemcpyHostToDevice,
                          d->stream));
    gk_f32_to_bf16(d->wbf, d->params, l->numel, d->stream);
    GK_CU(cudaStreamSynchronize(d->stream));
    return d;
}

void gk_gpu_dec_free(gk_gpu_dec *d)
{
    if (!d)
        return;
    GK_CU(cudaStreamSynchronize(d->stream));
    for (int b = 0; d->moe && b < d->L; b++)
        gk_cu_moe_free(d->moe[b]);
    gk_gemm_destroy(&d->gemm);
    gk_cu_arena_release(&d->arena);
    GK_CU(cudaFreeHost(d->rows_h));
    GK_CU(cudaFreeHost(d->logits_h));
    GK_CU(cudaStreamDestroy(d->stream));
    free(d->moe);
    free(d->pos);
    free(d->seen);
    free(d);
}

const char *gk_gpu_dec_device_name(const gk_gpu_dec *d) { return d->name; }
size_t gk_gpu_dec_plan_bytes(const gk_gpu_dec *d) { return d->arena.cap; }
int gk_gpu_dec_pos(const gk_gpu_dec *d, int s) { return d->pos[s]; }
void gk_gpu_dec_reset(gk_gpu_dec *d, int s) { d->pos[s] = 0; }

/* ---- a step --------------------------------------------------------------------- */

static const float *P(const gk_gpu_dec *d, int b, int k)
{
    return d->params + gk_layout_block(d->l, b, k)->offset;
}
static const gk_bf16 *W(const gk_gpu_dec *d, int b, int k)
{
    return d->wbf + gk_layout_block(d->l, b, k)->offset;
}

/* Block b on the step's n rows: XIN into the block's output rows. */
static void block_step(gk_gpu_dec *d, int b, const float *xin, int n)
{
    int C = d->C, H = d->H, KV = d->KV, D = d->D, KVD = KV * D;
    size_t cache = (size_t)b * d->S * d->T * KVD;
    cudaStream_t s = d->stream;
    gk_gemm *g = &d->gemm;
    float *x = d->xout + (size_t)b * d->S * C;
    GK_CU(gk_cu_resid_mix(x, xin, d->x0, P(d, b, GK_BLK_RESID_MIX), n, C, s));
    GK_CU(gk_cu_rmsnorm_fwd(d->ln, d->ln_b, NULL, x, n, C, GK_RMSNORM_EPS, s));
    gk_gemm_linear_fwd(g, d->q, GK_OUT_F32, d->ln_b, W(d, b, GK_BLK_C_Q), n, C, C, 0);
    gk_gemm_linear_fwd(g, d->k, GK_OUT_F32, d->ln_b, W(d, b, GK_BLK_C_K), n, C, KVD, 0);
    gk_gemm_linear_fwd(g, d->v, GK_OUT_F32, d->ln_b, W(d, b, GK_BLK_C_V), n, C, KVD, 0);
    GK_CU(gk_cu_rmsnorm_fwd(d->q, NULL, NULL, d->q, n * H, D, GK_RMSNORM_EPS, s));
    GK_CU(gk_cu_rmsnorm_fwd(d->k, NULL, NULL, d->k, n * KV, D, GK_RMSNORM_EPS, s));
    rope_cache_k<<<n, 128, 0, s>>>(d->qg, d->kc + cache, d->vc + cache, d->q, d->k, d->v,
                                   P(d, b, GK_BLK_Q_GAIN), d->cos, d->sin, d->rows, d->S, d->T,
                                   H, KV, D, d->R);
    GK_CU(cudaGetLastError());
    attend_k<<<dim3(n, H), ATTEND_THREADS, (size_t)(d->T + D) * sizeof(float), s>>>(
        d->att_b, d->qg, d->kc + cache, d->vc + cache, d->rows, d->S, d->T, H, KV, D,
        (float)(1 / sqrt((double)D)));
    GK_CU(cudaGetLastError());
    gk_gemm_linear_fwd(g, d->ay, GK_OUT_F32, d->att_b, W(d, b, GK_BLK_ATTN_PROJ), n, C, C, 0);
    GK_CU(gk_cu_scale_add_fwd(x, d->ay, P(d, b, GK_BLK_ATTN_SCALE), n, C, 1, s));
    GK_CU(gk_cu_rmsnorm_fwd(d->ln, d->ln_b, NULL, x, n, C, GK_RMSNORM_EPS, s));
    if (d->moe) {
        gk_cu_moe_rows(d->moe[b], n);
        gk_cu_moe_fwd(d->moe[b], g, d->my, d->ln, d->params, d->wbf, d->rows);
    } else {
        gk_gemm_linear_fwd(g, d->hpre, GK_OUT_F32, d->ln_b, W(d, b, GK_BLK_FC), n, C, d->FR, 0);
        GK_CU(gk_cu_act_fwd(NULL, d->hact_b, d->hpre, n, d->F, d->act, s));
        gk_gemm_linear_fwd(g, d->my, GK_OUT_F32, d->hact_b, W(d, b, GK_BLK_MLP_PROJ), n, d->F,
                           C, 0);
    }
    GK_CU(gk_cu_scale_add_fwd(x, d->my, P(d, b, GK_BLK_MLP_SCALE), n, C, 1, s));
}

/* The step's rows: range checks, then [token | stream | position] to the
 * device. */
static void stage_rows(gk_gpu_dec *d, int n, const int *streams, const int *tokens)
{
    if (n < 1 || n > d->S)
        gk_die("gpu decode: expected 1..%d rows a step, found %d", d->S, n);
    for (int i = 0; i < n; i++) {
        int s = streams[i];
        if (s < 0 || s >= d->S || d->seen[s])
            gk_die("gpu decode: row %d: expected a distinct stream in 0..%d, found %d", i,
                   d->S - 1, s);
        if (d->pos[s] >= d->T)
            gk_die("gpu decode: stream %d: the context is full (%d tokens)", s, d->T);
        if (tokens[i] < 0 || tokens[i] >= d->V)
            gk_die("gpu decode: row %d: expected a token id in 0..%d, found %d", i, d->V - 1,
                   tokens[i]);
        d->seen[s] = 1;
        d->rows_h[i] = tokens[i], d->rows_h[d->S + i] = s, d->rows_h[2 * d->S + i] = d->pos[s];
    }
    for (int i = 0; i < n; i++)
        d->seen[streams[i]] = 0;
    GK_CU(cudaMemcpyAsync(d->rows, d->rows_h, 3 * (size_t)d->S * sizeof(int),
                          cudaMemcpyHostToDevice, d->stream));
}

float *gk_gpu_dec_step(gk_gpu_dec *d, int n, const int *streams, const int *tokens)
{
    const gk_layout *l = d->l;
    int C = d->C;
    cudaStream_t s = d->stream;
    stage_rows(d, n, streams, tokens);
    const float *wte = d->params + l->params[l->tok_emb].offset;
    GK_CU(gk_cu_embed_fwd(d->x0, wte, d->rows, n, C, s));
    GK_CU(gk_cu_rmsnorm_fwd(d->x0, NULL, NULL, d->x0, n, C, GK_RMSNORM_EPS, s));
    const float *x = d->x0;
    for (int b = 0; b < d->L; b++) {
        int i = b - l->n_enc;
        if (i >= 0 && i < l->n_skip) {
            GK_CU(cudaMemcpyAsync(d->xs, x, (size_t)n * C * sizeof(float),
                                  cudaMemcpyDeviceToDevice, s));
            GK_CU(gk_cu_scale_add_fwd(d->xs, d->xout + (size_t)(l->n_enc - 1 - i) * d->S * C,
                                      d->params + l->params[l->skip_weights].offset +
                                          (size_t)i * C, n, C, 1, s));
            x = d->xs;
        }
        block_step(d, b, x, n);
        x = d->xout + (size_t)b * d->S * C;
    }
    GK_CU(gk_cu_rmsnorm_fwd(d->xf, d->xf_b, NULL, x, n, C, GK_RMSNORM_EPS, s));
    const gk_param *hp = &l->params[l->lm_head >= 0 ? l->lm_head : l->tok_emb];
    gk_gemm_linear_fwd(&d->gemm, d->logits, GK_OUT_F32, d->xf_b, d->wbf + hp->offset, n, C,
                       d->V, 0);
    size_t nv = (size_t)n * d->V;
    softcap_k<<<gk_cu_grid(nv, 256), 256, 0, s>>>(d->logits, nv, (float)d->cap);
    GK_CU(cudaGetLastError());
    GK_CU(cudaMemcpyAsync(d->logits_h, d->logits, nv * sizeof(float), cudaMemcpyDeviceToHost,
                          s));
    GK_CU(cudaStreamSynchronize(s));
    for (int i = 0; i < n; i++)
        d->pos[streams[i]]++;
    return d->logits_h;
}
