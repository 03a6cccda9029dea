/* model: the whole transformer on the GPU, the backend behind lib/gpu.h.
 *
 * The forward and backward are lib/model_impl.h's, step for step and in the
 * same order, with each layer's CPU call replaced by its kernel: the matrix
 * products through cuBLASLt in bf16 with fp32 accumulation (kernels/gemm.h),
 * the rest in kernels/elementwise.h, headnorm.h, attention_tc.h, moe.h. The
 * precision is autocast's: the residual stream and its gradient, the norms'
 * statistics, the loss and every parameter gradient in fp32; what a product
 * reads, and what a product writes (q and k raw, v, attn.proj, mlp.fc, the
 * dense mlp.proj; the gradients it passes on: d(act), d(att), the d(ln) the
 * norms' backward reads), in bf16. The residual norms' backward reads their
 * output in the bf16 the product read (residual.h). So a difference between
 * the two backends is rounding, never structure, and the whole-model check
 * (pipelines/check-cuda-model.sh) holds them to a bf16 tolerance. The
 * backward's weight gradients read the very bf16 operands the forward
 * multiplied. Where the arithmetic allows, several of the reference's layers
 * run as one kernel (the per-head QK norm, rotary, q_gain and cast;
 * resid_mix or a residual add with the RMSNorm after it; each residual
 * RMSNorm's backward with the scale backward after it), and layers that
 * share an input share a product (c_q with c_k forward; c_q, c_k and c_v
 * backward, over one packed [dq dk dv] matrix).
 *
 * Memory: one arena (kernels/cuda_util.h) sized at gk_gpu_new. The sizes are
 * measured by running the carving code once against a counting arena, so the
 * plan and the layout cannot drift apart; the MoE blocks and the optimizer
 * report their own sizes. Activations are per block (the backward needs them
 * all); gradient temporaries are shared by the blocks.
 *
 * Streams: one. The host waits in gk_gpu_step (loss and norm), in the
 * evaluation forward (the row losses) and, in a mixture, once a block for
 * the experts' row counts (kernels/moe.h); a dense step's micro-batches
 * queue up without a wait. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "attention_tc.h"
#include "cuda_util.h"
#include "elementwise.h"
#include "gemm.h"
#include "headnorm.h"
#include "moe.h"
#include "modeldev.h"
#include "optim.h"
#include "residual.h"

extern "C" {
#include "../lib/moe.h" /* gk_ffn_act; plain "moe.h" is kernels/moe.h from here */
#include "gpu.h"
#include "util.h"
}

/* What one block keeps for its backward: model_impl.h's block_acts, with the
 * bf16 operands of the products beside their fp32 values. */
typedef struct {
    const float *xin;
    float *ln1, *rstd1, *qn, *rstdq, *kn, *rstdk, *qr, *kr, *v, *qg, *att, *lse;
    float *ln2, *rstd2, *my, *xout; /* my: the mixture's output (fp32) */
    gk_bf16 *ln1_b, *att_b, *ln2_b, *hact_b;
    gk_bf16 *ay_b, *hpre_b, *my_b; /* attn.proj, mlp.fc and the dense mlp.proj outputs */
    gk_bf16 *qg_b, *kr_b, *v_b; /* what the tensor-core attention reads */
    gk_bf16 *qk_b;              /* [N, C + KVD]: c_q's and c_k's raw products, one product's */
} block_acts;

struct gk_gpu {
    const gk_layout *l;
    int B, T, C, H, KV, D, R, F, FR, V, L;
    gk_act act;
    double cap;
    /* the bf16 tensor-core attention, fed by headnorm.h's fused norm, rotary
     * and gain (head dims 32, 64, 128, rope_dims a multiple of 8); else the
     * fp32 attention after model_impl.h's chain of kernels */
    int tc;
    /* the residual stream's backward fused (residual.h: each RMSNorm's
     * backward with the scale backward after it, reading the normalized row
     * and its gradient in bf16), on the tc path at widths it takes; the
     * forward then keeps no fp32 copy of the normalized rows */
    int rb;
    char name[320];
    cudaStream_t stream;
    gk_cu_arena arena;
    gk_gemm gemm;
    float *params, *grads, *ema;
    gk_bf16 *wbf;                 /* bf16 copy of params, refreshed after each change */
    int *tokens, *targets;        /* [B*T] of the current micro-batch */
    float *cos, *sin;
    float *x0, *rstd0;
    block_acts *blk;
    float **xskip, **dskip;
    float *xf, *rstdf, *logits;   /* logits [N,V], fp32 for the loss */
    gk_bf16 *xf_b, *dz_b;
    double *losses, *mean, *step_loss;
    /* backward scratch, shared by the blocks */
    float *dres, *dres2, *dx0, *dA, *dln, *datt, *dq1, *dq2, *dk1, *dk2, *dv;
    gk_bf16 *dA_b, *dq_b, *dk_b, *dv_b, *dh_b, *datt_b, *dhact_b, *dln_b;
    void *work;                   /* the largest of the kernels' workspaces */
    size_t work_bytes;
    gk_cu_moe **moe;              /* [L] or NULL */
    long long *load;              /* [L][E] device */
    gk_cu_optim *opt;
    int ema_on;
    int n_ema_runs, *ema_run;     /* [2 n]: offset, length of each run of trained tensors */
};

/* ---- the memory plan ---------------------------------------------------------- */

/* The plan is carved twice (cuda_util.h's gk_cu_carver): counting, then real;
 * a buffer of 0 bytes is NULL. */
typedef gk_cu_carver carver;
static void *carve(carver *c, size_t bytes) { return gk_cu_carve(c, bytes); }
static float *carve_f(carver *c, size_t n) { return (float *)carve(c, n * sizeof(float)); }
static gk_bf16 *carve_b(carver *c, size_t n) { return (gk_bf16 *)carve(c, n * sizeof(gk_bf16)); }

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

/* Every buffer of the model except the MoE blocks and the optimizer, which
 * carve their own. */
static void carve_all(gk_gpu *g, carver *c, int train)
{
    const gk_layout *l = g->l;
    size_t N = (size_t)g->B * g->T, C = g->C, KVD = (size_t)g->KV * g->D;
    size_t H = g->H, KV = g->KV, numel = l->numel;
    size_t F = l->moe ? 0 : g->F, FR = l->moe ? 0 : g->FR;
    g->params = carve_f(c, numel);
    g->wbf = carve_b(c, numel);
    g->tokens = (int *)carve(c, N * sizeof(int));
    g->targets = (int *)carve(c, N * sizeof(int));
    g->cos = carve_f(c, (size_t)g->T * g->R / 2);
    g->sin = carve_f(c, (size_t)g->T * g->R / 2);
    g->x0 = carve_f(c, N * C), g->rstd0 = carve_f(c, N);
    for (int i = 0; i < g->L; i++) {
        block_acts *a = &g->blk[i];
        a->ln1 = carve_f(c, g->rb ? 0 : N * C), a->rstd1 = carve_f(c, N);
        a->ln1_b = carve_b(c, N * C);
        a->qn = carve_f(c, g->tc ? 0 : N * C), a->rstdq = carve_f(c, N * H);
        a->kn = carve_f(c, g->tc ? 0 : N * KVD), a->rstdk = carve_f(c, N * KV);
        a->qk_b = carve_b(c, g->tc ? N * (C + KVD) : 0);
        a->qr = carve_f(c, g->tc ? 0 : N * C), a->kr = carve_f(c, g->tc ? 0 : N * KVD);
        a->v = carve_f(c, g->tc ? 0 : N * KVD), a->qg = carve_f(c, g->tc ? 0 : N * C);
        a->att = carve_f(c, g->tc ? 0 : N * C), a->lse = carve_f(c, N * H);
        a->att_b = carve_b(c, N * C);
        a->qg_b = carve_b(c, g->tc ? N * C : 0), a->kr_b = carve_b(c, g->tc ? N * KVD : 0);
        a->v_b = carve_b(c, g->tc ? N * KVD : 0);
        a->ay_b = carve_b(c, N * C);
        /* the mixture's router reads mlp_norm's output in fp32 */
        a->ln2 = carve_f(c, g->rb && !l->moe ? 0 : N * C), a->rstd2 = carve_f(c, N);
        a->ln2_b = carve_b(c, N * C);
        a->hpre_b = carve_b(c, N * FR), a->hact_b = carve_b(c, N * F);
        a->my = carve_f(c, l->moe ? N * C : 0), a->my_b = carve_b(c, l->moe ? 0 : N * C);
        a->xout = carve_f(c, N * C);
    }
    for (int i = 0; i < l->n_skip; i++)
        g->xskip[i] = carve_f(c, N * C);
    g->xf = carve_f(c, N * C), g->rstdf = carve_f(c, N), g->xf_b = carve_b(c, N * C);
    g->logits = carve_f(c, N * g->V);
    g->losses = (double *)carve(c, N * sizeof(double));
    g->mean = (double *)carve(c, 2 * sizeof(double));
    g->step_loss = g->mean + 1;
    g->work_bytes = max_z(g->tc ? max_z(gk_cu_attention_tc_bwd_workspace(g->B, g->T, g->H),
                                        gk_cu_head_prep_bwd_workspace(g->B, g->T, g->H))
                                : gk_cu_attention_bwd_workspace(g->B, g->T, g->H),
                          max_z(gk_cu_scale_add_bwd_workspace((int)N, (int)C),
                                g->rb ? gk_cu_resid_bwd_workspace((int)N, (int)C) : 0));
    if (!train) {
        g->work = carve(c, g->work_bytes);
        return;
    }
    g->work_bytes = max_z(g->work_bytes, gk_cu_embed_bwd_workspace((int)N, g->V));
    g->work = carve(c, g->work_bytes);
    g->grads = carve_f(c, numel);
    if (g->ema_on)
        g->ema = carve_f(c, numel);
    for (int i = 0; i < l->n_skip; i++)
        g->dskip[i] = carve_f(c, N * C);
    g->dz_b = carve_b(c, N * g->V);
    g->dres = carve_f(c, N * C), g->dres2 = carve_f(c, N * C), g->dx0 = carve_f(c, N * C);
    g->dA = carve_f(c, l->moe ? N * C : 0), g->dln = carve_f(c, N * C);
    g->datt = carve_f(c, g->tc ? 0 : N * C);
    g->dq1 = carve_f(c, N * C), g->dq2 = carve_f(c, N * C);
    g->dk1 = carve_f(c, N * KVD), g->dk2 = carve_f(c, g->tc ? 0 : N * KVD);
    g->dv = carve_f(c, g->tc ? 0 : N * KVD);
    g->dhact_b = carve_b(c, N * F);
    g->dA_b = carve_b(c, N * C), g->dln_b = carve_b(c, g->rb ? N * C : 0);
    if (g->tc) { /* one [N, C + 2 KVD] matrix: c_q, c_k and c_v's products run as one */
        g->dq_b = carve_b(c, N * (C + 2 * KVD));
        g->dk_b = g->dq_b ? g->dq_b + C : NULL, g->dv_b = g->dq_b ? g->dq_b + C + KVD : NULL;
    } else {
        g->dq_b = carve_b(c, N * C), g->dk_b = carve_b(c, N * KVD), g->dv_b = carve_b(c, N * KVD);
    }
    g->dh_b = carve_b(c, N * FR), g->datt_b = carve_b(c, g->tc ? N * C : 0);
    if (l->moe)
        g->load = (long long *)carve(c, (size_t)g->L * l->cfg.moe.n_experts * sizeof(long long));
}

/* The runs of consecutive trained tensors (not buffers), which the EMA walks
 * with one launch each. */
static void ema_runs(gk_gpu *g)
{
    const gk_layout *l = g->l;
    g->ema_run = (int *)gk_calloc((size_t)l->n_params * 2, sizeof(int));
    for (int i = 0; i < l->n_params; i++) {
        const gk_param *p = &l->params[i];
        if (p->group == GK_GROUP_BUFFER)
            continue;
        int k = g->n_ema_runs;
        if (k && (size_t)g->ema_run[2 * k - 2] + g->ema_run[2 * k - 1] == p->offset)
            g->ema_run[2 * k - 1] += (int)p->numel;
        else
            g->ema_run[2 * k] = (int)p->offset, g->ema_run[2 * k + 1] = (int)p->numel,
            g->n_ema_runs++;
    }
}

void gk_cu_model_open(const gk_layout *l, const char *prog, char *name, size_t len)
{
    const char *why;
    if (!gk_cu_device_count(&why))
        gk_die("%s: expected a usable CUDA device, found none (%s)", prog, why);
    const gk_config *c = &l->cfg;
    int C = c->model.d_model, KVD = c->model.n_kv_head * gk_config_head_dim(c);
    int F = gk_config_expert_hidden(c), V = c->model.vocab;
    if (!gk_gemm_dims_ok(C, C) || !gk_gemm_dims_ok(C, KVD) || !gk_gemm_dims_ok(C, V) ||
        !gk_gemm_dims_ok(F, l->fc_rows))
        gk_die("%s: expected d_model, kv width, vocab and hidden widths that are multiples "
               "of 8 (bf16 tensor cores), found %d, %d, %d, %d", prog, C, KVD, V, F);
    int dev;
    cudaDeviceProp p;
    GK_CU(cudaGetDevice(&dev));
    GK_CU(cudaGetDeviceProperties(&p, dev));
    snprintf(name, len, "%s, sm_%d%d", p.name, p.major, p.minor);
}

void gk_cu_rope_upload(float *cos, float *sin, int T, const gk_config *c, cudaStream_t stream)
{
    size_t half = (size_t)T * gk_config_rope_dims(c) / 2;
    float *cs = (float *)gk_malloc(2 * half * sizeof(float));
    gk_rope_table_f32(cs, cs + half, T, gk_config_rope_dims(c), c->model.rope_base);
    GK_CU(cudaMemcpyAsync(cos, cs, half * sizeof(float), cudaMemcpyHostToDevice, stream));
    GK_CU(cudaMemcpyAsync(sin, cs + half, half * sizeof(float), cudaMemcpyHostToDevice, stream));
    GK_CU(cudaStreamSynchronize(stream));
    free(cs);
}

gk_gpu *gk_gpu_new(const gk_layout *l, int B, int T, int train, const char *prog)
{
    const gk_config *c = &l->cfg;
    gk_gpu *g = (gk_gpu *)gk_calloc(1, sizeof *g);
    g->l = l, g->B = B, g->T = T;
    g->C = c->model.d_model, g->H = c->model.n_head, g->KV = c->model.n_kv_head;
    g->D = gk_config_head_dim(c), g->R = gk_config_rope_dims(c);
    g->F = gk_config_expert_hidden(c), g->FR = l->fc_rows, g->V = c->model.vocab;
    g->L = c->model.n_layer, g->act = gk_ffn_act(c->model.activation);
    g->cap = c->model.logit_softcap;
    g->tc = gk_cu_head_prep_ok(g->D, g->R);
    g->rb = g->tc && gk_cu_resid_bwd_ok(g->C);
    for (int b = 0; b < g->L; b++) {
        size_t q = gk_layout_block(l, b, GK_BLK_C_Q)->offset;
        size_t kvd = (size_t)g->KV * g->D * g->C;
        if (gk_layout_block(l, b, GK_BLK_C_K)->offset != q + (size_t)g->C * g->C ||
            gk_layout_block(l, b, GK_BLK_C_V)->offset != q + (size_t)g->C * g->C + kvd)
            gk_die("%s: internal error: block %d's c_q, c_k, c_v are not consecutive tensors",
                   prog, b);
    }
    g->ema_on = train && c->train.ema_decay > 0;
    gk_cu_model_open(l, prog, g->name, sizeof g->name);
    GK_CU(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    g->blk = (block_acts *)gk_calloc((size_t)g->L, sizeof *g->blk);
    g->xskip = (float **)gk_calloc((size_t)l->n_skip + 1, sizeof *g->xskip);
    g->dskip = (float **)gk_calloc((size_t)l->n_skip + 1, sizeof *g->dskip);

    carver count = {NULL, 0};
    carve_all(g, &count, train);
    size_t bytes = count.bytes + GK_GEMM_WORKSPACE + 4 * GK_CU_ALIGN;
    if (l->moe)
        bytes += (size_t)g->L * (gk_cu_moe_bytes(l, B * T) + GK_CU_ALIGN);
    if (train)
        bytes += gk_cu_optim_bytes(l) + GK_CU_ALIGN;
    gk_cu_arena_reserve(&g->arena, bytes);
    carver real = {&g->arena, 0};
    carve_all(g, &real, train);
    gk_gemm_init(&g->gemm, &g->arena, g->stream);
    if (l->moe) {
        g->moe = (gk_cu_moe **)gk_calloc((size_t)g->L, sizeof *g->moe);
        for (int b = 0; b < g->L; b++)
            g->moe[b] = gk_cu_moe_new(l, b, B * T, &g->arena);
    }
    if (train)
        g->opt = gk_cu_optim_new(l, &g->arena, &g->gemm);
    ema_runs(g);

    gk_cu_rope_upload(g->cos, g->sin, T, c, g->stream);
    return g;
}

void gk_gpu_free(gk_gpu *g)
{
    if (!g)
        return;
    GK_CU(cudaStreamSynchronize(g->stream));
    for (int b = 0; g->moe && b < g->L; b++)
        gk_cu_moe_free(g->moe[b]);
    if (g->opt)
        gk_cu_optim_free(g->opt);
    gk_gemm_destroy(&g->gemm);
    gk_cu_arena_release(&g->arena);
    GK_CU(cudaStreamDestroy(g->stream));
    free(g->moe);
    free(g->blk);
    free(g->xskip);
    free(g->dskip);
    free(g->ema_run);
    free(g);
}

const char *gk_gpu_device_name(const gk_gpu *g) { return g->name; }
size_t gk_gpu_plan_bytes(const gk_gpu *g) { return g->arena.cap; }

/* ---- host <-> device ---------------------------------------------------------- */

static void upload(gk_gpu *g, float *dev, const float *host)
{
    GK_CU(cudaMemcpyAsync(dev, host, g->l->numel * sizeof(float), cudaMemcpyHostToDevice,
                          g->stream));
    GK_CU(cudaStreamSynchronize(g->stream));
}

static void download(gk_gpu *g, float *host, const float *dev)
{
    GK_CU(cudaMemcpyAsync(host, dev, g->l->numel * sizeof(float), cudaMemcpyDeviceToHost,
                          g->stream));
    GK_CU(cudaStreamSynchronize(g->stream));
}

void gk_gpu_set_params(gk_gpu *g, const float *params)
{
    upload(g, g->params, params);
    gk_f32_to_bf16(g->wbf, g->params, g->l->numel, g->stream);
}
void gk_gpu_get_params(gk_gpu *g, float *params) { download(g, params, g->params); }
void gk_gpu_set_ema(gk_gpu *g, const float *ema) { upload(g, g->ema, ema); }
void gk_gpu_get_ema(gk_gpu *g, float *ema) { download(g, ema, g->ema); }
void gk_gpu_set_optim(gk_gpu *g, const gk_optim *o) { gk_cu_optim_upload(g->opt, o); }
void gk_gpu_get_optim(gk_gpu *g, gk_optim *o) { gk_cu_optim_download(g->opt, o); }

/* ---- small kernels of the model's own ------------------------------------------ */

__global__ void add_kernel(float *y, const float *x, size_t n)
{
    GK_GRID_STRIDE(i, n)
        y[i] += x[i];
}

/* *acc += *mean * scale: a micro-batch's loss into the step's, on the device. */
__global__ void loss_acc_kernel(double *acc, const double *mean, double scale)
{
    *acc += *mean * scale;
}

/* ema = d ema + (1 - d) p, in fp32 as moe-train's CPU ema_update. */
__global__ void ema_kernel(float *ema, const float *p, size_t n, float d, float e)
{
    GK_GRID_STRIDE(i, n)
        ema[i] = __fadd_rn(__fmul_rn(d, ema[i]), __fmul_rn(e, p[i]));
}

/* y = s[c / group] x written: q_gain on the fp32 attention's path, a
 * scale-add into zeros with the same rounding. */
__global__ void scale_kernel(float *y, const float *x, const float *sc, size_t n, int C, int group)
{
    GK_GRID_STRIDE(i, n)
        y[i] = __fmul_rn(sc[(int)(i % (size_t)C) / group], x[i]);
}

static void add(gk_gpu *g, float *y, const float *x, size_t n)
{
    add_kernel<<<gk_cu_grid(n, 256), 256, 0, g->stream>>>(y, x, n);
    GK_CU(cudaGetLastError());
}

static void scale(gk_gpu *g, float *y, const float *x, const float *sc, size_t n, int C,
                  int group)
{
    scale_kernel<<<gk_cu_grid(n, 256), 256, 0, g->stream>>>(y, x, sc, n, C, group);
    GK_CU(cudaGetLastError());
}

static void zero(gk_gpu *g, void *p, size_t bytes)
{
    GK_CU(cudaMemsetAsync(p, 0, bytes, g->stream));
}

/* ---- forward ------------------------------------------------------------------ */

static const float *P(const gk_gpu *g, int b, int k)
{
    return g->params + gk_layout_block(g->l, b, k)->offset;
}
static const gk_bf16 *W(const gk_gpu *g, int b, int k)
{
    return g->wbf + gk_layout_block(g->l, b, k)->offset;
}
static float *G(const gk_gpu *g, int b, int k)
{
    return g->grads + gk_layout_block(g->l, b, k)->offset;
}

static void to_bf16(gk_gpu *g, gk_bf16 *dst, const float *src, size_t n)
{
    gk_f32_to_bf16(dst, src, n, g->stream);
}

static void ffn_fwd(gk_gpu *g, block_acts *a, int b, int N)
{
    if (g->moe) {
        gk_cu_moe_rows(g->moe[b], N);
        gk_cu_moe_fwd(g->moe[b], &g->gemm, a->my, a->ln2, g->params, g->wbf, g->tokens);
        return;
    }
    gk_gemm_linear_fwd(&g->gemm, a->hpre_b, GK_OUT_BF16, a->ln2_b, W(g, b, GK_BLK_FC), N, g->C,
                       g->FR, 0);
    GK_CU(gk_cu_act_fwd_bx(a->hact_b, a->hpre_b, N, g->F, g->act, g->stream));
    gk_gemm_linear_fwd(&g->gemm, a->my_b, GK_OUT_BF16, a->hact_b, W(g, b, GK_BLK_MLP_PROJ), N,
                       g->F, g->C, 0);
}

static void block_fwd(gk_gpu *g, block_acts *a, int b, int B)
{
    int T = g->T, N = B * T, C = g->C, H = g->H, KV = g->KV, D = g->D, KVD = KV * D;
    size_t NC = (size_t)N * C;
    cudaStream_t s = g->stream;
    float *x = a->xout;
    const float *mix = P(g, b, GK_BLK_RESID_MIX);
    /* resid_mix and attn_norm in one pass */
    GK_CU(gk_cu_mix_rmsnorm(x, a->ln1, a->ln1_b, a->rstd1, a->xin, mix, g->x0, mix + C, N, C,
                            GK_RMSNORM_EPS, s));
    if (g->tc) {
        /* c_q and c_k (consecutive tensors) as one product, in bf16, kept
         * raw: head_prep recomputes the norm in the backward; v feeds the
         * attention alone, in bf16 */
        int QK = C + KVD;
        const float *gain = P(g, b, GK_BLK_Q_GAIN);
        gk_gemm_linear_fwd(&g->gemm, a->qk_b, GK_OUT_BF16, a->ln1_b, W(g, b, GK_BLK_C_Q), N, C,
                           QK, 0);
        gk_gemm_linear_fwd(&g->gemm, a->v_b, GK_OUT_BF16, a->ln1_b, W(g, b, GK_BLK_C_V), N, C,
                           KVD, 0);
        GK_CU(gk_cu_head_prep_fwd_bx(a->qg_b, a->rstdq, a->qk_b, QK, g->cos, g->sin, gain, B, T,
                                     H, D, g->R, GK_RMSNORM_EPS, s));
        GK_CU(gk_cu_head_prep_fwd_bx(a->kr_b, a->rstdk, a->qk_b + C, QK, g->cos, g->sin, NULL, B,
                                     T, KV, D, g->R, GK_RMSNORM_EPS, s));
        GK_CU(gk_cu_attention_tc_fwd(a->att_b, a->lse, a->qg_b, a->kr_b, a->v_b, B, T, H, KV,
                                     D, s));
    } else {
        gk_gemm_linear_fwd(&g->gemm, a->qn, GK_OUT_F32, a->ln1_b, W(g, b, GK_BLK_C_Q), N, C, C,
                           0);
        gk_gemm_linear_fwd(&g->gemm, a->kn, GK_OUT_F32, a->ln1_b, W(g, b, GK_BLK_C_K), N, C,
                           KVD, 0);
        gk_gemm_linear_fwd(&g->gemm, a->v, GK_OUT_F32, a->ln1_b, W(g, b, GK_BLK_C_V), N, C,
                           KVD, 0);
        GK_CU(gk_cu_rmsnorm_fwd(a->qn, NULL, a->rstdq, a->qn, N * H, D, GK_RMSNORM_EPS, s));
        GK_CU(gk_cu_rmsnorm_fwd(a->kn, NULL, a->rstdk, a->kn, N * KV, D, GK_RMSNORM_EPS, s));
        GK_CU(gk_cu_rope_fwd(a->qr, a->qn, g->cos, g->sin, B, T, H, D, g->R, s));
        GK_CU(gk_cu_rope_fwd(a->kr, a->kn, g->cos, g->sin, B, T, KV, D, g->R, s));
        scale(g, a->qg, a->qr, P(g, b, GK_BLK_Q_GAIN), NC, C, D);
        GK_CU(gk_cu_attention_fwd(a->att, a->lse, a->qg, a->kr, a->v, B, T, H, KV, D, s));
        to_bf16(g, a->att_b, a->att, NC);
    }
    /* the branch outputs in bf16 (as autocast's); the residual stream stays fp32.
     * x += attn_scale * ay and mlp_norm in one pass */
    gk_gemm_linear_fwd(&g->gemm, a->ay_b, GK_OUT_BF16, a->att_b, W(g, b, GK_BLK_ATTN_PROJ), N,
                       C, C, 0);
    GK_CU(gk_cu_mix_rmsnorm_bx(x, a->ln2, a->ln2_b, a->rstd2, x, NULL, a->ay_b,
                               P(g, b, GK_BLK_ATTN_SCALE), N, C, GK_RMSNORM_EPS, s));
    ffn_fwd(g, a, b, N);
    if (g->moe)
        GK_CU(gk_cu_scale_add_fwd(x, a->my, P(g, b, GK_BLK_MLP_SCALE), N, C, 1, s));
    else
        GK_CU(gk_cu_scale_add_fwd_bx(x, a->my_b, P(g, b, GK_BLK_MLP_SCALE), N, C, 1, s));
}

static int skip_source(const gk_gpu *g, int b)
{
    int i = b - g->l->n_enc;
    return i >= 0 && i < g->l->n_skip ? g->l->n_enc - 1 - i : -1;
}

/* Up to the logits [N,V] (before the softcap). */
static void forward(gk_gpu *g, int B, const int *tokens, const int *targets)
{
    const gk_layout *l = g->l;
    int N = B * g->T, C = g->C;
    size_t NC = (size_t)N * C;
    cudaStream_t s = g->stream;
    if (B < 1 || B > g->B)
        gk_die("gpu: expected 1..%d sequences per micro-batch, found %d", g->B, B);
    GK_CU(cudaMemcpyAsync(g->tokens, tokens, (size_t)N * sizeof(int), cudaMemcpyHostToDevice, s));
    GK_CU(cudaMemcpyAsync(g->targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice,
                          s));
    const float *wte = g->params + l->params[l->tok_emb].offset;
    GK_CU(gk_cu_embed_fwd(g->x0, wte, g->tokens, N, C, s));
    GK_CU(gk_cu_rmsnorm_fwd(g->x0, NULL, g->rstd0, g->x0, N, C, GK_RMSNORM_EPS, s));
    const float *x = g->x0;
    for (int b = 0; b < g->L; b++) {
        int j = skip_source(g, b);
        if (j >= 0) {
            int i = b - l->n_enc;
            float *xs = g->xskip[i];
            GK_CU(cudaMemcpyAsync(xs, x, NC * sizeof(float), cudaMemcpyDeviceToDevice, s));
            GK_CU(gk_cu_scale_add_fwd(xs, g->blk[j].xout,
                                      g->params + l->params[l->skip_weights].offset +
                                          (size_t)i * C, N, C, 1, s));
            x = xs;
        }
        g->blk[b].xin = x;
        block_fwd(g, &g->blk[b], b, B);
        x = g->blk[b].xout;
    }
    GK_CU(gk_cu_rmsnorm_fwd(g->xf, g->xf_b, g->rstdf, x, N, C, GK_RMSNORM_EPS, s));
    const gk_param *hp = &l->params[l->lm_head >= 0 ? l->lm_head : l->tok_emb];
    gk_gemm_linear_fwd(&g->gemm, g->logits, GK_OUT_F32, g->xf_b, g->wbf + hp->offset, N, C,
                       g->V, 0);
}

double gk_gpu_forward_rows(gk_gpu *g, int B, const int *tokens, const int *targets,
                           double *losses)
{
    int N = B * g->T;
    forward(g, B, tokens, targets);
    GK_CU(gk_cu_softcap_ce(NULL, g->losses, g->mean, g->logits, g->targets, N, g->V, g->cap,
                           1.0, g->stream));
    double mean;
    GK_CU(cudaMemcpyAsync(&mean, g->mean, sizeof mean, cudaMemcpyDeviceToHost, g->stream));
    if (losses)
        GK_CU(cudaMemcpyAsync(losses, g->losses, (size_t)N * sizeof(double),
                              cudaMemcpyDeviceToHost, g->stream));
    GK_CU(cudaStreamSynchronize(g->stream));
    return mean;
}

/* ---- backward ------------------------------------------------------------------ */

/* dx (=|+=) dy W, of type DXT, and dW += dy^T x, dy fp32 converted to bf16
 * in DYB first when CONVERT (else DYB already holds it). */
static void linear_bwd(gk_gpu *g, void *dx, gk_out_type dxt, int acc, float *dw, gk_bf16 *dyb,
                       const float *dy, const gk_bf16 *x, const gk_bf16 *w, int N, int in,
                       int out, int convert)
{
    if (convert)
        to_bf16(g, dyb, dy, (size_t)N * out);
    gk_gemm_linear_bwd_dx(&g->gemm, dx, dxt, dyb, w, N, in, out, acc);
    gk_gemm_linear_bwd_dw(&g->gemm, dw, GK_OUT_F32, dyb, x, N, in, out, 1);
}

/* Gradient of ffn_fwd: d(my) is in g->dA (fp32, the mixture) or g->dA_b (bf16,
 * the dense MLP); writes d(ln2) into g->dln, or for the dense MLP under rb in
 * bf16 into g->dln_b (the fused norm backward reads it). d(act) leaves its
 * product in bf16, as autocast's does. */
static void ffn_bwd(gk_gpu *g, block_acts *a, int b, int N)
{
    size_t NC = (size_t)N * g->C;
    if (g->moe) {
        zero(g, g->dln, NC * sizeof(float));
        gk_cu_moe_bwd(g->moe[b], &g->gemm, g->dln, g->grads, g->dA,
                      g->load + (size_t)b * g->l->cfg.moe.n_experts);
        return;
    }
    linear_bwd(g, g->dhact_b, GK_OUT_BF16, 0, G(g, b, GK_BLK_MLP_PROJ), g->dA_b, NULL,
               a->hact_b, W(g, b, GK_BLK_MLP_PROJ), N, g->F, g->C, 0);
    GK_CU(gk_cu_act_bwd_bb(g->dh_b, g->dhact_b, a->hpre_b, N, g->F, g->act, g->stream));
    linear_bwd(g, g->rb ? (void *)g->dln_b : g->dln, g->rb ? GK_OUT_BF16 : GK_OUT_F32, 0,
               G(g, b, GK_BLK_FC), g->dh_b, NULL, a->ln2_b, W(g, b, GK_BLK_FC), N, g->C, g->FR, 0);
}

/* Gradient of block_fwd: g->dres holds d(xout) on entry and d(xin) on exit;
 * adds the parameter gradients and d(x0) into g->dx0. */
static void block_bwd(gk_gpu *g, block_acts *a, int b, int B)
{
    int T = g->T, N = B * T, C = g->C, H = g->H, KV = g->KV, D = g->D, KVD = KV * D;
    int QKV = C + 2 * KVD;
    size_t NC = (size_t)N * C, NKVD = (size_t)N * KVD;
    cudaStream_t s = g->stream;
    void *w = g->work;
    /* x += mlp_scale * my: d(my) = mlp_scale d(x), in bf16 for the dense
     * MLP's products (fp32 for the mixture's own kernels), and d(mlp_scale) */
    if (g->moe)
        GK_CU(gk_cu_scale_bwd_set(g->dA, NULL, G(g, b, GK_BLK_MLP_SCALE), g->dres, a->my,
                                  P(g, b, GK_BLK_MLP_SCALE), N, C, 1, w, s));
    else
        GK_CU(gk_cu_scale_bwd_set_bx(NULL, g->dA_b, G(g, b, GK_BLK_MLP_SCALE), g->dres, a->my_b,
                                     P(g, b, GK_BLK_MLP_SCALE), N, C, 1, w, s));
    ffn_bwd(g, a, b, N);
    /* mlp_norm back, then x += attn_scale * ay: d(ay) in bf16, d(attn_scale) */
    float *gas = G(g, b, GK_BLK_ATTN_SCALE);
    const float *as = P(g, b, GK_BLK_ATTN_SCALE);
    if (g->rb && g->moe)
        GK_CU(gk_cu_norm_bwd_scale(g->dres, g->dA_b, gas, g->dln, a->ln2_b, a->rstd2, a->ay_b, as,
                                   N, C, w, s));
    else if (g->rb)
        GK_CU(gk_cu_norm_bwd_scale_bdy(g->dres, g->dA_b, gas, g->dln_b, a->ln2_b, a->rstd2,
                                       a->ay_b, as, N, C, w, s));
    else {
        GK_CU(gk_cu_rmsnorm_bwd(g->dres, NULL, g->dln, a->ln2, a->rstd2, N, C, s));
        GK_CU(gk_cu_scale_bwd_set_bx(NULL, g->dA_b, gas, g->dres, a->ay_b, as, N, C, 1, w, s));
    }
    if (g->tc) { /* d(att) in the bf16 the attention reads; it overwrites dq, dk, dv */
        gk_gemm_linear_bwd_dx(&g->gemm, g->datt_b, GK_OUT_BF16, g->dA_b,
                              W(g, b, GK_BLK_ATTN_PROJ), N, C, C, 0);
        gk_gemm_linear_bwd_dw(&g->gemm, G(g, b, GK_BLK_ATTN_PROJ), GK_OUT_F32, g->dA_b, a->att_b,
                              N, C, C, 1);
        GK_CU(gk_cu_attention_tc_bwd(g->dq1, g->dk1, g->dv_b, QKV, g->datt_b, a->att_b, a->lse,
                                     a->qg_b, a->kr_b, a->v_b, B, T, H, KV, D, w, s));
        /* gain, rotary and the QK norms back in one pass each, into the bf16
         * columns of [dq dk dv] that c_q's and c_k's products read */
        GK_CU(gk_cu_head_prep_bwd_bx(g->dq_b, QKV, G(g, b, GK_BLK_Q_GAIN), g->dq1, a->qk_b,
                                     C + KVD,
                                  a->rstdq, g->cos, g->sin, P(g, b, GK_BLK_Q_GAIN), B, T, H, D,
                                  g->R, w, s));
        GK_CU(gk_cu_head_prep_bwd_bx(g->dk_b, QKV, NULL, g->dk1, a->qk_b + C, C + KVD,
                                     a->rstdk, g->cos,
                                  g->sin, NULL, B, T, KV, D, g->R, w, s));
        /* c_q, c_k, c_v are consecutive tensors (gk_gpu_new checks it): one
         * product with [dq dk dv] for d(ln1), one for their weights' gradients */
        gk_gemm_linear_bwd_dx(&g->gemm, g->rb ? (void *)g->dln_b : g->dln,
                              g->rb ? GK_OUT_BF16 : GK_OUT_F32, g->dq_b, W(g, b, GK_BLK_C_Q), N,
                              C, QKV, 0);
        gk_gemm_linear_bwd_dw(&g->gemm, G(g, b, GK_BLK_C_Q), GK_OUT_F32, g->dq_b, a->ln1_b, N, C,
                              QKV, 1);
    } else {
        linear_bwd(g, g->datt, GK_OUT_F32, 0, G(g, b, GK_BLK_ATTN_PROJ), g->dA_b, NULL, a->att_b,
                   W(g, b, GK_BLK_ATTN_PROJ), N, C, C, 0);
        zero(g, g->dq1, NC * sizeof(float));
        zero(g, g->dk1, NKVD * sizeof(float));
        zero(g, g->dv, NKVD * sizeof(float));
        GK_CU(gk_cu_attention_bwd(g->dq1, g->dk1, g->dv, g->datt, a->att, a->lse, a->qg, a->kr,
                                  a->v, B, T, H, KV, D, w, s));
        GK_CU(gk_cu_scale_bwd_set(g->dq2, NULL, G(g, b, GK_BLK_Q_GAIN), g->dq1, a->qr,
                                  P(g, b, GK_BLK_Q_GAIN), N, C, D, w, s));
        /* rotary and the QK norms back, each written (not added) by its
         * kernel; the norms write the bf16 that c_q's and c_k's products read */
        GK_CU(gk_cu_rope_bwd(g->dq1, g->dq2, g->cos, g->sin, B, T, H, D, g->R, 1, s));
        GK_CU(gk_cu_rmsnorm_bwd(NULL, g->dq_b, g->dq1, a->qn, a->rstdq, N * H, D, s));
        GK_CU(gk_cu_rope_bwd(g->dk2, g->dk1, g->cos, g->sin, B, T, KV, D, g->R, 1, s));
        GK_CU(gk_cu_rmsnorm_bwd(NULL, g->dk_b, g->dk2, a->kn, a->rstdk, N * KV, D, s));
        linear_bwd(g, g->dln, GK_OUT_F32, 0, G(g, b, GK_BLK_C_Q), g->dq_b, NULL, a->ln1_b,
                   W(g, b, GK_BLK_C_Q), N, C, C, 0);
        linear_bwd(g, g->dln, GK_OUT_F32, 1, G(g, b, GK_BLK_C_K), g->dk_b, NULL, a->ln1_b,
                   W(g, b, GK_BLK_C_K), N, C, KVD, 0);
        linear_bwd(g, g->dln, GK_OUT_F32, 1, G(g, b, GK_BLK_C_V), g->dv_b, g->dv, a->ln1_b,
                   W(g, b, GK_BLK_C_V), N, C, KVD, 1);
    }
    /* attn_norm back, then resid_mix: d(xin) into dres2, d(x0) added */
    const float *mix = P(g, b, GK_BLK_RESID_MIX);
    float *gmix = G(g, b, GK_BLK_RESID_MIX);
    if (g->rb) {
        GK_CU(gk_cu_norm_bwd_mix(g->dres2, g->dx0, gmix, g->dres, g->dln_b, a->ln1_b, a->rstd1,
                                 a->xin, g->x0, mix, N, C, w, s));
    } else {
        GK_CU(gk_cu_rmsnorm_bwd(g->dres, NULL, g->dln, a->ln1, a->rstd1, N, C, s));
        GK_CU(gk_cu_scale_bwd_set(g->dres2, NULL, gmix, g->dres, a->xin, mix, N, C, 1, w, s));
        GK_CU(gk_cu_scale_add_bwd(g->dx0, gmix + C, g->dres, g->x0, mix + C, N, C, 1, w, s));
    }
    float *t = g->dres;
    g->dres = g->dres2, g->dres2 = t;
}

void gk_gpu_zero_grads(gk_gpu *g)
{
    zero(g, g->grads, g->l->numel * sizeof(float));
    zero(g, g->step_loss, sizeof(double));
    if (g->load)
        zero(g, g->load, (size_t)g->L * g->l->cfg.moe.n_experts * sizeof(long long));
}

void gk_gpu_fwd_bwd(gk_gpu *g, int B, const int *tokens, const int *targets, double dloss)
{
    const gk_layout *l = g->l;
    int N = B * g->T, C = g->C;
    size_t NC = (size_t)N * C;
    cudaStream_t s = g->stream;
    forward(g, B, tokens, targets);
    /* The loss and d(loss)/d(logits) in one pass over the logits, the
     * gradient written in the bf16 the head's products read. */
    GK_CU(gk_cu_softcap_ce_bf16(g->dz_b, g->losses, g->mean, g->logits, g->targets, N, g->V,
                                g->cap, dloss, s));
    loss_acc_kernel<<<1, 1, 0, s>>>(g->step_loss, g->mean, dloss);
    GK_CU(cudaGetLastError());
    const gk_param *hp = &l->params[l->lm_head >= 0 ? l->lm_head : l->tok_emb];
    linear_bwd(g, g->dln, GK_OUT_F32, 0, g->grads + hp->offset, g->dz_b, NULL, g->xf_b,
               g->wbf + hp->offset, N, C, g->V, 0);
    zero(g, g->dres, NC * sizeof(float));
    GK_CU(gk_cu_rmsnorm_bwd(g->dres, NULL, g->dln, g->xf, g->rstdf, N, C, s));
    zero(g, g->dx0, NC * sizeof(float));
    for (int i = 0; i < l->n_skip; i++)
        zero(g, g->dskip[i], NC * sizeof(float));
    for (int b = g->L - 1; b >= 0; b--) {
        if (b < l->n_enc && b >= l->n_enc - l->n_skip)
            add(g, g->dres, g->dskip[l->n_enc - 1 - b], NC);
        block_bwd(g, &g->blk[b], b, B);
        int j = skip_source(g, b);
        if (j >= 0) {
            int i = b - l->n_enc;
            size_t sw = l->params[l->skip_weights].offset + (size_t)i * C;
            GK_CU(gk_cu_scale_add_bwd(g->dskip[i], g->grads + sw, g->dres, g->blk[j].xout,
                                      g->params + sw, N, C, 1, g->work, s));
        }
        if (b == 0)
            add(g, g->dx0, g->dres, NC);
    }
    zero(g, g->dln, NC * sizeof(float));
    GK_CU(gk_cu_rmsnorm_bwd(g->dln, NULL, g->dx0, g->x0, g->rstd0, N, C, s));
    GK_CU(gk_cu_embed_bwd(g->grads + l->params[l->tok_emb].offset, g->dln, g->tokens, N, C,
                          g->V, g->work, s));
}

double gk_gpu_step(gk_gpu *g, double lr_scale, double *norm, int64_t *load)
{
    const gk_config *c = &g->l->cfg;
    cudaStream_t s = g->stream;
    *norm = gk_cu_optim_clip(g->opt, g->grads);
    gk_cu_optim_step(g->opt, g->params, g->grads, lr_scale);
    if (g->load)
        gk_cu_moe_router_update(g->l, g->params, g->load, c->moe.bias_update_rate, s);
    if (g->ema_on)
        for (int k = 0; k < g->n_ema_runs; k++) {
            size_t off = (size_t)g->ema_run[2 * k], n = (size_t)g->ema_run[2 * k + 1];
            float d = (float)c->train.ema_decay;
            ema_kernel<<<gk_cu_grid(n, 256), 256, 0, s>>>(g->ema + off, g->params + off, n, d,
                                                   1.0f - d);
            GK_CU(cudaGetLastError());
        }
    gk_f32_to_bf16(g->wbf, g->params, g->l->numel, s);
    double loss;
    GK_CU(cudaMemcpyAsync(&loss, g->step_loss, sizeof loss, cudaMemcpyDeviceToHost, s));
    if (load && g->load)
        GK_CU(cudaMemcpyAsync(load, g->load,
                              (size_t)g->L * c->moe.n_experts * sizeof(long long),
                              cudaMemcpyDeviceToHost, s));
    GK_CU(cudaStreamSynchronize(s));
    return loss;
}
