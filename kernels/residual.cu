/* residual: the kernels of kernels/residual.h, the residual stream's RMSNorm
 * backward with the scale backwards around it in one pass.
 *
 * One kernel template, norm_bwd_k, with the scale's part as a policy EP
 * (ep_scale: attn_scale after mlp_norm; ep_mix: resid_mix after attn_norm).
 * The row layout is vec.h's (a group of G lanes per row, PER slots of 4
 * floats a lane, the row's sum of dy y in double by the group's shuffle
 * tree), so the norm's arithmetic is gk_cu_rmsnorm_bwd's, element for
 * element. A block of RB_THREADS lanes takes RB_ROWS consecutive rows, its
 * groups in turn; each lane keeps the scale gradients' sums of its own
 * channels in double registers over its rows, and at the end the block adds
 * its groups' sums in group order through shared memory and writes one
 * partial row per block, which gk_cu_column_sums adds up. The tree's shape
 * depends on N and C alone: the same bits on every run and every GPU.
 *
 * Every load of a row (dy, y, dres and the scale's inputs) is issued before
 * the shuffle sum, so a group has its whole row in flight at once; the
 * register budget of that (three to six fvecs a slot, with the sums) is what
 * limits the rows to PER 4, 512 values. */
#include "cuda_util.h"
#include "elementwise.h" /* gk_cu_column_sums */
#include "residual.h"
#include "vec.h"

#define RB_THREADS 128
/* Rows a block: 64 gives 1024 blocks at the golf micro-batch (65,536 rows),
 * several waves over 132 SMs, and partial sums of 8 MB (resid_mix's two
 * scales at width 512). */
#define RB_ROWS 64

/* attn_scale's part: dres stored, da = s dres in bf16, sum a dres. */
struct ep_scale {
    static constexpr int NS = 1;
    float *dres;
    gk_bf16 *da;
    const gk_bf16 *a;
    const float *s;
    template <int VEC> struct in {
        fvec<VEC> a;
    };
    template <int VEC> __device__ in<VEC> load(size_t o) const { return {vload<VEC>(a + o)}; }
    template <int VEC, int PER>
    __device__ void apply(const fvec<VEC> &d, const in<VEC> &x, size_t o, int c,
                          double (&acc)[NS][PER][VEC], int k) const
    {
        fvec<VEC> t;
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            t.v[e] = __fmul_rn(s[c + e], d.v[e]);
            acc[0][k][e] += (double)x.a.v[e] * d.v[e];
        }
        vstore<VEC>(dres + o, d);
        bstore<VEC>(da + o, t);
    }
};

/* resid_mix's part: dxin = m0 d written, dx0 += m1 d, sums xin d and x0 d. */
struct ep_mix {
    static constexpr int NS = 2;
    float *dxin, *dx0;
    const float *xin, *x0, *m0, *m1;
    template <int VEC> struct in {
        fvec<VEC> xin, x0, dx0;
    };
    template <int VEC> __device__ in<VEC> load(size_t o) const
    {
        return {vload<VEC>(xin + o), vload<VEC>(x0 + o), vload<VEC>(dx0 + o)};
    }
    template <int VEC, int PER>
    __device__ void apply(const fvec<VEC> &d, const in<VEC> &x, size_t o, int c,
                          double (&acc)[NS][PER][VEC], int k) const
    {
        fvec<VEC> a, b;
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            a.v[e] = __fmul_rn(m0[c + e], d.v[e]);
            b.v[e] = __fadd_rn(x.dx0.v[e], __fmul_rn(m1[c + e], d.v[e]));
            acc[0][k][e] += (double)x.xin.v[e] * d.v[e];
            acc[1][k][e] += (double)x.x0.v[e] * d.v[e];
        }
        vstore<VEC>(dxin + o, a);
        vstore<VEC>(dx0 + o, b);
    }
};

/* No __restrict__ on dres: ep_mix's dxin may alias it (each lane reads its
 * slots of a row before it writes them). Groups past the last row run with
 * zeros, so every lane reaches the shuffles. */
template <int VEC, int G, int PER, typename DY, typename EP>
__global__ void __launch_bounds__(RB_THREADS)
    norm_bwd_k(const float *dres, const DY *dy, const gk_bf16 *y, const float *rstd, size_t N,
               int C, EP ep, double *part)
{
    constexpr int GROUPS = RB_THREADS / G, NS = EP::NS;
    extern __shared__ double sh[]; /* [GROUPS][NS C] */
    int lane = threadIdx.x & (G - 1), grp = threadIdx.x / G;
    double acc[NS][PER][VEC] = {};
    for (int i = grp; i < RB_ROWS; i += GROUPS) {
        size_t row = (size_t)blockIdx.x * RB_ROWS + i;
        bool live = row < N;
        size_t off = (live ? row : 0) * C;
        fvec<VEC> d[PER];
        typename EP::template in<VEC> in[PER];
        float r = live ? rstd[row] : 0;
        rms_bwd_row<VEC, G, PER>(d, dy, y, dres, r, live, off, C, lane, true,
                                 [&](int k, bool on, int c) {
                                     in[k] = on ? ep.template load<VEC>(off + c)
                                                : typename EP::template in<VEC>{};
                                 });
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int c = (k * G + lane) * VEC;
            if (live && c < C)
                ep.template apply<VEC, PER>(d[k], in[k], off + c, c, acc, k);
        }
    }
#pragma unroll
    for (int j = 0; j < NS; j++)
#pragma unroll
        for (int k = 0; k < PER; k++)
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                int c = (k * G + lane) * VEC + e;
                if (c < C)
                    sh[((size_t)grp * NS + j) * C + c] = acc[j][k][e];
            }
    __syncthreads();
    for (int t = threadIdx.x; t < NS * C; t += RB_THREADS) {
        double s = 0;
        for (int q = 0; q < GROUPS; q++)
            s += sh[(size_t)q * NS * C + t];
        part[(size_t)blockIdx.x * NS * C + t] = s;
    }
}

/* The instances pick_rows chooses among: VEC 4 and PER 1 to 4 only (what
 * gk_cu_resid_bwd_ok admits); the others are never launched. */
template <typename DY, typename EP> struct norm_bwd {
    template <int VEC, int G, int PER> struct k {
        static constexpr auto fn =
            VEC == 4 && PER >= 1 && PER <= 4
                ? &norm_bwd_k<4, G, (PER < 1 ? 1 : PER > 4 ? 4 : PER), DY, EP>
                : nullptr;
    };
};

int gk_cu_resid_bwd_ok(int C)
{
    if (C < 4 || C % 4)
        return 0;
    row_shape rs = row_shape_of(C);
    return rs.per >= 1 && rs.per <= 4;
}

static size_t n_blocks(int N) { return ((size_t)N + RB_ROWS - 1) / RB_ROWS; }

size_t gk_cu_resid_bwd_workspace(int N, int C)
{
    return n_blocks(N) * 2 * (size_t)C * sizeof(double);
}

template <typename DY, typename EP>
static cudaError_t launch(float *ds, const float *dres, const DY *dy, const gk_bf16 *y,
                          const float *rstd, int N, int C, EP ep, void *work,
                          cudaStream_t stream)
{
    if (!gk_cu_resid_bwd_ok(C) || !al16(dres) || !al4(dy) || !al4(y))
        return cudaErrorInvalidValue;
    if (N <= 0)
        return cudaGetLastError();
    row_shape rs = row_shape_of(C);
    size_t shmem = (size_t)(RB_THREADS / rs.g) * EP::NS * C * sizeof(double);
    pick_rows<norm_bwd<DY, EP>::template k>(rs)<<<(unsigned)n_blocks(N), RB_THREADS, shmem,
                                                   stream>>>(dres, dy, y, rstd, (size_t)N, C,
                                                             ep, (double *)work);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    return gk_cu_column_sums(ds, (const double *)work, (int)n_blocks(N), EP::NS * C, stream);
}

template <typename DY>
static cudaError_t scale_launch(float *dres, gk_bf16 *da, float *ds, const DY *dy,
                                const gk_bf16 *y, const float *rstd, const gk_bf16 *a,
                                const float *s, int N, int C, void *work, cudaStream_t stream)
{
    if (!al4(da) || !al4(a))
        return cudaErrorInvalidValue;
    return launch(ds, dres, dy, y, rstd, N, C, ep_scale{dres, da, a, s}, work, stream);
}

cudaError_t gk_cu_norm_bwd_scale(float *dres, gk_bf16 *da, float *ds, const float *dy,
                                 const gk_bf16 *y, const float *rstd, const gk_bf16 *a,
                                 const float *s, int N, int C, void *work, cudaStream_t stream)
{
    return scale_launch(dres, da, ds, dy, y, rstd, a, s, N, C, work, stream);
}

cudaError_t gk_cu_norm_bwd_scale_bdy(float *dres, gk_bf16 *da, float *ds, const gk_bf16 *dy,
                                     const gk_bf16 *y, const float *rstd, const gk_bf16 *a,
                                     const float *s, int N, int C, void *work,
                                     cudaStream_t stream)
{
    return scale_launch(dres, da, ds, dy, y, rstd, a, s, N, C, work, stream);
}

cudaError_t gk_cu_norm_bwd_mix(float *dxin, float *dx0, float *dmix, const float *dres,
                               const gk_bf16 *dy, const gk_bf16 *y, const float *rstd,
                               const float *xin, const float *x0, const float *mix, int N, int C,
                               void *work, cudaStream_t stream)
{
    if (!al16(dxin) || !al16(dx0) || !al16(xin) || !al16(x0))
        return cudaErrorInvalidValue;
    return launch(dmix, dres, dy, y, rstd, N, C, ep_mix{dxin, dx0, xin, x0, mix, mix + C}, work,
                  stream);
}
