/* bench-gemm: the GPU's bf16 matrix product rate through kernels/gemm.h, the
 * ceiling that bench-train-cuda divides moe-train's and PyTorch's model FLOP
 * rates by (model FLOPs utilisation).
 *
 * usage: bench-gemm [REPS]
 *
 * Times gk_gemm_linear_fwd, _bwd_dx and _bwd_dw (bf16 inputs, fp32
 * accumulation, cuBLASLt) at 8192 x 8192 x 8192, the usual "peak" shape, and
 * at the shapes of the golf models' products on one 64 x 1024-token
 * micro-batch (N = 65536 tokens; the MoE's experts at 344 hidden, the routed
 * ones at their mean load of N * top_k / n_experts = 16384 tokens). Each
 * product is timed REPS times (default 50, at least 20) after 10 warm-up
 * calls, one cudaEvent pair per call, and the median is reported. Before the
 * timed calls the stream is held by a spin kernel while the host enqueues
 * them all, so the GPU runs them back to back and the events time the GPU
 * alone: otherwise a small product (~30 us) would also time the host's
 * per-call cuBLASLt heuristic query (gemm.cu asks on every call).
 *
 * Output types are those of training: forward and dx write bf16 (the next
 * product's input), dW adds into fp32 (the master gradient, accumulated over
 * micro-batches). Inputs are uniform in [-1, 1): zeros would draw less power
 * and clock higher than real data.
 *
 * Prints JSON lines: first {"device","sm","sms"}, then per product
 * {"op","shape","n","in","out","out_type","reps","ms","tflops"} with ms the
 * median time and tflops = 2 n in out / ms. Exits 1 with a message when there
 * is no CUDA device. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "gemm.h"

#define WARMUP 10
#define MIN_REPS 20
/* The spin kernel's hold: longer than the host needs to enqueue the timed
 * calls (a few microseconds each), short against the run. */
#define HOLD_NS 50000000ull

typedef enum { OP_FWD, OP_DX, OP_DW } gemm_op;
static const char *const op_names[] = {"fwd", "dx", "dw"};

typedef struct {
    const char *name;
    int n, in, out;
} shape;

/* d_model 512, 8 heads of 64 with 4 kv heads, mlp 2 x 512 (the tied head is
 * also 512 -> 1024, vocab 1024); testdata/config/golf-moe.json's experts are
 * 344 wide. */
static const shape shapes[] = {
    {"square", 8192, 8192, 8192},
    {"c_q/proj", 65536, 512, 512},
    {"c_k/c_v", 65536, 512, 256},
    {"mlp_fc/head", 65536, 512, 1024},
    {"mlp_proj", 65536, 1024, 512},
    {"expert_fc/shared", 65536, 512, 344},
    {"expert_proj/shared", 65536, 344, 512},
    {"expert_fc/routed", 16384, 512, 344},
    {"expert_proj/routed", 16384, 344, 512},
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static __global__ void fill_kernel(gk_bf16 *p, size_t n, uint32_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = ((uint32_t)i * 2654435761u) ^ seed; /* Knuth's hash, then xorshift */
        h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15;
        p[i] = __float2bfloat16_rn((float)h * (2.0f / 4294967296.0f) - 1.0f);
    }
}

static __global__ void hold_kernel(unsigned long long ns)
{
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    while (t - t0 < ns);
}

static void run_op(gk_gemm *g, gemm_op op, const shape *s, gk_bf16 *a, gk_bf16 *b, void *c)
{
    switch (op) {
    case OP_FWD: gk_gemm_linear_fwd(g, c, GK_OUT_BF16, a, b, s->n, s->in, s->out, 0); break;
    case OP_DX: gk_gemm_linear_bwd_dx(g, c, GK_OUT_BF16, a, b, s->n, s->in, s->out, 0); break;
    case OP_DW: gk_gemm_linear_bwd_dw(g, c, GK_OUT_F32, a, b, s->n, s->in, s->out, 1); break;
    }
}

static int cmp_float(const void *x, const void *y)
{
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 50;
    if (argc > 2 || reps < MIN_REPS) {
        fprintf(stderr, "usage: bench-gemm [REPS]  (REPS >= %d, default 50)\n", MIN_REPS);
        return 2;
    }
    const char *why;
    if (!gk_cu_device_count(&why)) {
        fprintf(stderr, "bench-gemm: no CUDA device: %s\n", why);
        return 1;
    }
    int dev;
    cudaDeviceProp p;
    GK_CU(cudaGetDevice(&dev));
    GK_CU(cudaGetDeviceProperties(&p, dev));
    printf("{\"device\":\"%s\",\"sm\":\"%d%d\",\"sms\":%d}\n", p.name, p.major, p.minor,
           p.multiProcessorCount);

    /* Three operands, each as large as the largest of any product (x, W or dy
     * in bf16; y, dx or dW up to fp32), carved once. */
    size_t most = 0;
    for (size_t i = 0; i < NSHAPES; i++) {
        size_t n = (size_t)shapes[i].n, in = (size_t)shapes[i].in, out = (size_t)shapes[i].out;
        size_t m = n * (in > out ? in : out);
        most = m > most ? m : most;
        most = in * out > most ? in * out : most;
    }
    gk_cu_arena arena;
    gk_cu_arena_reserve(&arena, GK_GEMM_WORKSPACE + most * 8 + 4 * GK_CU_ALIGN);
    cudaStream_t stream;
    GK_CU(cudaStreamCreate(&stream));
    gk_gemm g;
    gk_gemm_init(&g, &arena, stream);
    gk_bf16 *a = (gk_bf16 *)gk_cu_arena_alloc(&arena, most * 2);
    gk_bf16 *b = (gk_bf16 *)gk_cu_arena_alloc(&arena, most * 2);
    void *c = gk_cu_arena_alloc(&arena, most * 4);
    fill_kernel<<<1056, 256, 0, stream>>>(a, most, 1u);
    fill_kernel<<<1056, 256, 0, stream>>>(b, most, 2u);
    GK_CU(cudaGetLastError());
    GK_CU(cudaMemsetAsync(c, 0, most * 4, stream));

    cudaEvent_t *ev = (cudaEvent_t *)malloc((size_t)(reps + 1) * sizeof *ev);
    float *ms = (float *)malloc((size_t)reps * sizeof *ms);
    if (!ev || !ms) {
        fprintf(stderr, "bench-gemm: out of memory\n");
        return 1;
    }
    for (int i = 0; i <= reps; i++)
        GK_CU(cudaEventCreate(&ev[i]));
    for (size_t i = 0; i < NSHAPES; i++) {
        const shape *s = &shapes[i];
        for (int op = OP_FWD; op <= OP_DW; op++) {
            for (int r = 0; r < WARMUP; r++)
                run_op(&g, (gemm_op)op, s, a, b, c);
            hold_kernel<<<1, 1, 0, stream>>>(HOLD_NS);
            GK_CU(cudaGetLastError());
            GK_CU(cudaEventRecord(ev[0], stream));
            for (int r = 0; r < reps; r++) {
                run_op(&g, (gemm_op)op, s, a, b, c);
                GK_CU(cudaEventRecord(ev[r + 1], stream));
            }
            GK_CU(cudaStreamSynchronize(stream));
            for (int r = 0; r < reps; r++)
                GK_CU(cudaEventElapsedTime(&ms[r], ev[r], ev[r + 1]));
            qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
            double med = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
            double flops = 2.0 * s->n * s->in * s->out;
            printf("{\"op\":\"%s\",\"shape\":\"%s\",\"n\":%d,\"in\":%d,\"out\":%d,"
                   "\"out_type\":\"%s\",\"reps\":%d,\"ms\":%.4f,\"tflops\":%.1f}\n",
                   op_names[op], s->name, s->n, s->in, s->out, op == OP_DW ? "f32" : "bf16",
                   reps, med, flops / (med * 1e-3) / 1e12);
            fflush(stdout);
        }
    }
    for (int i = 0; i <= reps; i++)
        GK_CU(cudaEventDestroy(ev[i]));
    free(ev);
    free(ms);
    gk_gemm_destroy(&g);
    GK_CU(cudaStreamDestroy(stream));
    gk_cu_arena_release(&arena);
    return 0;
}
