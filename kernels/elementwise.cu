/* elementwise: the CUDA kernels of kernels/elementwise.h, the layers between
 * the matrix products, each a plain __global__ and a host launcher with the
 * contract of its CPU twin in lib/ops.h (Adam: lib/optim.c's adam_tensor).
 *
 * Two rules shape every kernel here.
 * - Deterministic results: no floating-point atomics anywhere. A value that
 *   sums many terms is summed either by one thread in a fixed order (the
 *   embedding backward, the row chunks of ds) or by a block-wide tree
 *   (block_sum) whose shape depends only on the block size, a constant of
 *   this file. The result is the same bits on every run and every GPU model.
 * - Close to the reference: the sums that the CPU does in double (RMSNorm's,
 *   the cross-entropy's sum of exponentials and losses, ds) are in double here
 *   too; where the CPU's float expression cancels (rotary, the RMSNorm and
 *   activation backwards, softcap's 1 - th^2, Adam), the same operations are
 *   spelled with round-to-nearest intrinsics so nvcc cannot fuse a*b+c into an
 *   FMA the CPU build does not do. The remaining differences are the CUDA
 *   math library's expf/tanhf/logf (within 2 ulp of glibc's) and the order of
 *   the double sums. */
#include "elementwise.h"

#include <cub/device/device_radix_sort.cuh>

/* Threads of a block, for the element-wise kernels and for the one-block-per-
 * row kernels. It is also the shape of every reduction tree (block_sum), so
 * changing it changes the last bits of the results (never their run-to-run
 * reproducibility). A multiple of 32. */
#define THREADS 256

/* Grid of a grid-stride loop over n elements; the cap keeps the count an int
 * and the loop covers the rest. */
static unsigned grid_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < (1u << 20) ? (b ? b : 1) : (1u << 20));
}

#define GRID_STRIDE(i, n)                                                              \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);           \
         i += (size_t)gridDim.x * blockDim.x)

struct op_sum {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct op_max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

/* Reduce v over the block: a shuffle tree within each warp, then warp 0
 * reduces the warps' results in the same tree, lanes past the last warp
 * padded with the identity ID. Every thread gets the result. sh holds 33
 * values (a warp's each, then the result); the final barrier lets the caller
 * reuse it. */
template <typename T, typename Op> __device__ T block_reduce(T v, T *sh, Op op, T id)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? sh[lane] : id;
        for (int o = 16; o > 0; o >>= 1)
            v = op(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0)
            sh[32] = v;
    }
    __syncthreads();
    v = sh[32];
    __syncthreads();
    return v;
}

/* ---- embedding ------------------------------------------------------------- */

__global__ void embed_fwd_k(float *y, const float *wte, const int *tokens, int N, int C)
{
    GRID_STRIDE(i, (size_t)N * C)
    {
        size_t n = i / C, c = i % C;
        y[i] = wte[(size_t)tokens[n] * C + c];
    }
}

cudaError_t gk_cu_embed_fwd(float *y, const float *wte, const int *tokens, int N, int C,
                            cudaStream_t stream)
{
    embed_fwd_k<<<grid_for((size_t)N * C), THREADS, 0, stream>>>(y, wte, tokens, N, C);
    return cudaGetLastError();
}

__global__ void iota_k(unsigned *v, int N)
{
    GRID_STRIDE(i, (size_t)N)
    {
        v[i] = (unsigned)i;
    }
}

/* One block per sorted position; only the first position of each token's run
 * works. Its threads split the channels, and each thread adds the run's rows
 * in ascending row order (the sort is stable), the CPU's order: dwte comes
 * out bit-identical to gk_embed_bwd_f32's. A very frequent token makes one
 * long serial run; its block still reads dy coalesced across channels. */
__global__ void embed_bwd_k(float *dwte, const float *dy, const unsigned *keys,
                            const unsigned *rows, int N, int C)
{
    int i = blockIdx.x;
    unsigned tok = keys[i];
    if (i > 0 && keys[i - 1] == tok)
        return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = dwte[(size_t)tok * C + c];
        for (int k = i; k < N && keys[k] == tok; k++)
            acc += dy[(size_t)rows[k] * C + c];
        dwte[(size_t)tok * C + c] = acc;
    }
}

/* Bits the radix sort looks at: enough for vocab - 1. */
static int vocab_bits(int vocab)
{
    int b = 1;
    while (b < 31 && (1u << b) < (unsigned)vocab)
        b++;
    return b;
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* The workspace: sorted keys, row numbers before and after the sort, then
 * cub's own temporary storage. */
static size_t cub_sort_bytes(int N, int vocab)
{
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairs(NULL, bytes, (const unsigned *)NULL, (unsigned *)NULL,
                                    (const unsigned *)NULL, (unsigned *)NULL, N, 0,
                                    vocab_bits(vocab));
    return bytes;
}

size_t gk_cu_embed_bwd_workspace(int N, int vocab)
{
    return 3 * align256((size_t)N * sizeof(unsigned)) + cub_sort_bytes(N, vocab);
}

cudaError_t gk_cu_embed_bwd(float *dwte, const float *dy, const int *tokens, int N, int C,
                            int vocab, void *work, cudaStream_t stream)
{
    if (N <= 0)
        return cudaSuccess;
    size_t part = align256((size_t)N * sizeof(unsigned));
    char *w = (char *)work;
    unsigned *keys = (unsigned *)w, *rows_in = (unsigned *)(w + part),
             *rows = (unsigned *)(w + 2 * part);
    size_t tmp_bytes = cub_sort_bytes(N, vocab);
    iota_k<<<grid_for((size_t)N), THREADS, 0, stream>>>(rows_in, N);
    /* Tokens are in 0..vocab-1, so reading them as unsigned sorts the same. */
    cudaError_t e = cub::DeviceRadixSort::SortPairs(
        w + 3 * part, tmp_bytes, (const unsigned *)tokens, keys, rows_in, rows, N, 0,
        vocab_bits(vocab), stream);
    if (e != cudaSuccess)
        return e;
    embed_bwd_k<<<N, THREADS, 0, stream>>>(dwte, dy, keys, rows, N, C);
    return cudaGetLastError();
}

/* ---- rmsnorm --------------------------------------------------------------- */

/* No __restrict__: y may alias x. Each thread reads and writes only its own
 * channels, and reads them again after the reduction, so aliasing is safe. */
__global__ void rmsnorm_fwd_k(float *y, float *rstd, const float *x, int C, double eps)
{
    __shared__ double sh[33];
    const float *xr = x + (size_t)blockIdx.x * C;
    float *yr = y + (size_t)blockIdx.x * C;
    double ss = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        ss += (double)xr[c] * xr[c];
    ss = block_reduce(ss, sh, op_sum(), 0.0);
    float r = (float)(1 / sqrt(ss / C + eps));
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        yr[c] = xr[c] * r;
    if (rstd && threadIdx.x == 0)
        rstd[blockIdx.x] = r;
}

cudaError_t gk_cu_rmsnorm_fwd(float *y, float *rstd, const float *x, int N, int C,
                              double eps, cudaStream_t stream)
{
    if (N > 0)
        rmsnorm_fwd_k<<<N, THREADS, 0, stream>>>(y, rstd, x, C, eps);
    return cudaGetLastError();
}

__global__ void rmsnorm_bwd_k(float *dx, const float *dy, const float *y, const float *rstd,
                              int C)
{
    __shared__ double sh[33];
    size_t off = (size_t)blockIdx.x * C;
    double acc = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        acc += (double)dy[off + c] * y[off + c];
    acc = block_reduce(acc, sh, op_sum(), 0.0);
    float m = (float)(acc / C), r = rstd[blockIdx.x];
    /* dy - y m cancels where dy is nearly parallel to y: no FMA. */
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dx[off + c] = __fadd_rn(
            dx[off + c], __fmul_rn(r, __fsub_rn(dy[off + c], __fmul_rn(y[off + c], m))));
}

cudaError_t gk_cu_rmsnorm_bwd(float *dx, const float *dy, const float *y, const float *rstd,
                              int N, int C, cudaStream_t stream)
{
    if (N > 0)
        rmsnorm_bwd_k<<<N, THREADS, 0, stream>>>(dx, dy, y, rstd, C);
    return cudaGetLastError();
}

/* ---- rotary ---------------------------------------------------------------- */

/* Work items per head: one per rotated pair (i, i + half), then one per
 * pass-through channel. A thread owns both channels of its pair, so y may
 * alias x with no thread reading another's output. */
__global__ void rope_fwd_k(float *y, const float *x, const float *cos_t, const float *sin_t,
                           size_t rows, int T, int H, int D, int rope_dims)
{
    int half = rope_dims / 2, per = half + (D - rope_dims);
    GRID_STRIDE(i, rows * per)
    {
        size_t row = i / per;
        int j = (int)(i % per);
        const float *xr = x + row * D;
        float *yr = y + row * D;
        if (j < half) {
            int t = (int)(row / H % T);
            float c = cos_t[(size_t)t * half + j], s = sin_t[(size_t)t * half + j];
            float x1 = xr[j], x2 = xr[j + half];
            yr[j] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
            yr[j + half] = __fadd_rn(__fmul_rn(-x1, s), __fmul_rn(x2, c));
        } else {
            int d = rope_dims + (j - half);
            yr[d] = xr[d];
        }
    }
}

__global__ void rope_bwd_k(float *dx, const float *dy, const float *cos_t, const float *sin_t,
                           size_t rows, int T, int H, int D, int rope_dims)
{
    int half = rope_dims / 2, per = half + (D - rope_dims);
    GRID_STRIDE(i, rows * per)
    {
        size_t row = i / per;
        int j = (int)(i % per);
        const float *dyr = dy + row * D;
        float *dxr = dx + row * D;
        if (j < half) {
            int t = (int)(row / H % T);
            float c = cos_t[(size_t)t * half + j], s = sin_t[(size_t)t * half + j];
            float d1 = dyr[j], d2 = dyr[j + half];
            dxr[j] = __fadd_rn(dxr[j], __fsub_rn(__fmul_rn(d1, c), __fmul_rn(d2, s)));
            dxr[j + half] =
                __fadd_rn(dxr[j + half], __fadd_rn(__fmul_rn(d1, s), __fmul_rn(d2, c)));
        } else {
            int d = rope_dims + (j - half);
            dxr[d] += dyr[d];
        }
    }
}

cudaError_t gk_cu_rope_fwd(float *y, const float *x, const float *cos, const float *sin,
                           int B, int T, int H, int D, int rope_dims, cudaStream_t stream)
{
    size_t rows = (size_t)B * T * H, n = rows * (rope_dims / 2 + D - rope_dims);
    rope_fwd_k<<<grid_for(n), THREADS, 0, stream>>>(y, x, cos, sin, rows, T, H, D,
                                                    rope_dims);
    return cudaGetLastError();
}

cudaError_t gk_cu_rope_bwd(float *dx, const float *dy, const float *cos, const float *sin,
                           int B, int T, int H, int D, int rope_dims, cudaStream_t stream)
{
    size_t rows = (size_t)B * T * H, n = rows * (rope_dims / 2 + D - rope_dims);
    rope_bwd_k<<<grid_for(n), THREADS, 0, stream>>>(dx, dy, cos, sin, rows, T, H, D,
                                                    rope_dims);
    return cudaGetLastError();
}

/* ---- activations ----------------------------------------------------------- */

__global__ void act_fwd_k(float *y, const float *x, size_t N, int F, gk_act act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    GRID_STRIDE(i, N * F)
    {
        if (act == GK_OP_SWIGLU) {
            size_t n = i / F, f = i % F;
            float g = x[n * 2 * F + f], up = x[n * 2 * F + F + f];
            y[i] = g / (1 + expf(-g)) * up;
        } else {
            float v = x[i], a = v > 0 ? v : act == GK_OP_LEAKY2 ? slope * v : 0;
            y[i] = a * a;
        }
    }
}

/* The products in the reference's left-to-right order, unfused: the SwiGLU
 * gate derivative 1 + g (1 - sig) crosses zero near g = -1.28, where a fused
 * rounding would be a large relative error. */
__global__ void act_bwd_k(float *dx, const float *dy, const float *x, size_t N, int F,
                          gk_act act)
{
    const float slope = (float)GK_LEAKY_SLOPE;
    GRID_STRIDE(i, N * F)
    {
        float d = dy[i];
        if (act == GK_OP_SWIGLU) {
            size_t n = i / F, f = i % F, ig = n * 2 * F + f, iu = ig + F;
            float g = x[ig], up = x[iu], sig = 1 / (1 + expf(-g));
            float dgate = __fmul_rn(
                __fmul_rn(__fmul_rn(d, up), sig),
                __fadd_rn(1.0f, __fmul_rn(g, __fsub_rn(1.0f, sig))));
            dx[ig] = __fadd_rn(dx[ig], dgate);
            dx[iu] = __fadd_rn(dx[iu], __fmul_rn(__fmul_rn(d, g), sig));
        } else {
            float v = x[i];
            if (v > 0)
                dx[i] = __fadd_rn(dx[i], __fmul_rn(2 * v, d));
            else if (act == GK_OP_LEAKY2)
                dx[i] = __fadd_rn(dx[i], __fmul_rn(2 * slope * slope * v, d));
        }
    }
}

cudaError_t gk_cu_act_fwd(float *y, const float *x, int N, int F, gk_act act,
                          cudaStream_t stream)
{
    act_fwd_k<<<grid_for((size_t)N * F), THREADS, 0, stream>>>(y, x, (size_t)N, F, act);
    return cudaGetLastError();
}

cudaError_t gk_cu_act_bwd(float *dx, const float *dy, const float *x, int N, int F,
                          gk_act act, cudaStream_t stream)
{
    act_bwd_k<<<grid_for((size_t)N * F), THREADS, 0, stream>>>(dx, dy, x, (size_t)N, F,
                                                               act);
    return cudaGetLastError();
}

/* ---- softcapped cross-entropy ---------------------------------------------- */

/* One block per row, the reference's three passes: the maximum of z, the sum
 * of exp(l - lmax) in double (l stored into dz on the way), the gradient.
 * dz may alias z: the target's logit is read before the first barrier, and
 * in passes 2 and 3 each thread reads and writes only its own channels. */
__global__ void softcap_ce_k(float *dz, double *losses, const float *z, const int *targets,
                             int V, float rcap, float gscale)
{
    __shared__ float shf[33];
    __shared__ double shd[33];
    size_t n = blockIdx.x;
    const float *zr = z + n * V;
    float *dr = dz ? dz + n * V : NULL;
    int tgt = targets[n];
    float zt = zr[tgt], zmax = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        zmax = fmaxf(zmax, zr[j]);
    zmax = block_reduce(zmax, shf, op_max(), -INFINITY);
    /* l = cap tanh(z / cap) rounded on its own, as the CPU's float l is: a
     * product fused into the subtraction l - lmax would shift every exponent. */
    float lmax = __fmul_rn(rcap, tanhf(zmax / rcap)), lt = __fmul_rn(rcap, tanhf(zt / rcap));
    double sum = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float l = __fmul_rn(rcap, tanhf(zr[j] / rcap));
        sum += expf(l - lmax);
        if (dr)
            dr[j] = l;
    }
    sum = block_reduce(sum, shd, op_sum(), 0.0);
    double lse = lmax + log(sum); /* sum >= 1: the maximum's own term is 1 */
    if (threadIdx.x == 0)
        losses[n] = lse - lt;
    if (!dr)
        return;
    float rlse = (float)lse;
    /* 1 - th^2 cancels for large logits (th near +-1): unfused. */
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float th = dr[j] / rcap, g = expf(dr[j] - rlse) - (j == tgt);
        dr[j] = __fmul_rn(__fmul_rn(g, gscale), __fsub_rn(1.0f, __fmul_rn(th, th)));
    }
}

/* The mean of the row losses: each thread sums a fixed stride of rows in
 * order, then one fixed tree; a single block, so the order never varies. */
__global__ void mean_k(double *mean, const double *losses, int N)
{
    __shared__ double sh[33];
    double s = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x)
        s += losses[n];
    s = block_reduce(s, sh, op_sum(), 0.0);
    if (threadIdx.x == 0)
        *mean = s / N;
}

cudaError_t gk_cu_softcap_ce(float *dz, double *losses, double *mean, const float *z,
                             const int *targets, int N, int V, double cap, double dloss,
                             cudaStream_t stream)
{
    if (N > 0)
        softcap_ce_k<<<N, THREADS, 0, stream>>>(dz, losses, z, targets, V, (float)cap,
                                                 (float)(dloss / N));
    if (mean)
        mean_k<<<1, 1024, 0, stream>>>(mean, losses, N);
    return cudaGetLastError();
}

/* ---- scale by a vector ----------------------------------------------------- */

/* Rows per partial sum of ds: a constant, so the partition (and the bits of
 * ds) depend on N alone. */
#define DS_CHUNK 256

__global__ void scale_add_k(float *y, const float *x, const float *s, size_t N, int C,
                            int group)
{
    GRID_STRIDE(i, N * C)
    {
        y[i] = __fadd_rn(y[i], __fmul_rn(s[i % C / group], x[i]));
    }
}

cudaError_t gk_cu_scale_add_fwd(float *y, const float *x, const float *s, int N, int C,
                                int group, cudaStream_t stream)
{
    scale_add_k<<<grid_for((size_t)N * C), THREADS, 0, stream>>>(y, x, s, (size_t)N, C,
                                                                  group);
    return cudaGetLastError();
}

/* Pass 1: part[k][c] = sum of x dy over rows k*DS_CHUNK.. of channel c, one
 * thread per (chunk, channel), rows in order, in double. */
__global__ void ds_part_k(double *part, const float *dy, const float *x, int N, int C)
{
    int c = blockIdx.y * blockDim.x + threadIdx.x, k = blockIdx.x;
    if (c >= C)
        return;
    int n0 = k * DS_CHUNK, n1 = n0 + DS_CHUNK < N ? n0 + DS_CHUNK : N;
    double acc = 0;
    for (int n = n0; n < n1; n++)
        acc += (double)x[(size_t)n * C + c] * dy[(size_t)n * C + c];
    part[(size_t)k * C + c] = acc;
}

/* Pass 2: one block per entry j of s sums its chunks x channels by block_reduce. */
__global__ void ds_sum_k(float *ds, const double *part, int nchunk, int C, int group)
{
    __shared__ double sh[33];
    int j = blockIdx.x;
    double acc = 0;
    for (int e = threadIdx.x; e < nchunk * group; e += blockDim.x)
        acc += part[(size_t)(e / group) * C + (size_t)j * group + e % group];
    acc = block_reduce(acc, sh, op_sum(), 0.0);
    if (threadIdx.x == 0)
        ds[j] += (float)acc;
}

size_t gk_cu_scale_add_bwd_workspace(int N, int C)
{
    return (size_t)((N + DS_CHUNK - 1) / DS_CHUNK) * C * sizeof(double);
}

cudaError_t gk_cu_scale_add_bwd(float *dx, float *ds, const float *dy, const float *x,
                                const float *s, int N, int C, int group, void *work,
                                cudaStream_t stream)
{
    if (dx) /* dx += s dy is the forward with dy in place of x */
        scale_add_k<<<grid_for((size_t)N * C), THREADS, 0, stream>>>(dx, dy, s, (size_t)N,
                                                                      C, group);
    if (ds && N > 0) {
        int nchunk = (N + DS_CHUNK - 1) / DS_CHUNK;
        /* Chunks along x, whose limit is 2^31 - 1 blocks (y's is 65535). */
        dim3 grid((unsigned)nchunk, (unsigned)((C + THREADS - 1) / THREADS));
        ds_part_k<<<grid, THREADS, 0, stream>>>((double *)work, dy, x, N, C);
        ds_sum_k<<<C / group, THREADS, 0, stream>>>(ds, (const double *)work, nchunk, C,
                                                    group);
    }
    return cudaGetLastError();
}

/* ---- Adam ------------------------------------------------------------------ */

/* adam_tensor's double arithmetic, operation for operation, unfused, so the
 * stored moments and parameters round as the CPU's do. */
__global__ void adam_k(float *w, const float *g, float *m, float *v, size_t n, double b1,
                       double b2, double eps, double decay, double step_size,
                       double bc2_sqrt)
{
    GRID_STRIDE(i, n)
    {
        double gi = g[i];
        float mi = (float)__dadd_rn(__dmul_rn(b1, m[i]), __dmul_rn(1 - b1, gi));
        float vi = (float)__dadd_rn(__dmul_rn(b2, v[i]), __dmul_rn(__dmul_rn(1 - b2, gi), gi));
        double denom = __dadd_rn(sqrt((double)vi) / bc2_sqrt, eps);
        double x = __dmul_rn((double)w[i], decay);
        x = __dsub_rn(x, __dmul_rn(step_size, (double)mi) / denom);
        m[i] = mi;
        v[i] = vi;
        w[i] = (float)x;
    }
}

cudaError_t gk_cu_adam(float *w, const float *g, float *m, float *v, size_t n, double lr,
                       double beta1, double beta2, double eps, double wd, long long t,
                       cudaStream_t stream)
{
    /* The step's scalars on the host, in double, as adam_tensor computes them. */
    double step_size = lr / (1 - pow(beta1, (double)t));
    double bc2_sqrt = sqrt(1 - pow(beta2, (double)t));
    adam_k<<<grid_for(n), THREADS, 0, stream>>>(w, g, m, v, n, beta1, beta2, eps,
                                                1 - lr * wd, step_size, bc2_sqrt);
    return cudaGetLastError();
}
