/* optim (CUDA): clipping, Muon and Adam over the model's device buffers; the
 * contract is in optim.h, the reference lib/optim.c.
 *
 * The optimizer walks tables built once by gk_cu_optim_new from the layout,
 * never the layout itself, so a step is a fixed handful of launches:
 * - Muon matrices are cut into 32 x 32 tiles (tile_t) of their own row-major
 *   layout. Three tile kernels do the element-wise work: the momentum update
 *   with each tile's sum of squares of the update (for the Frobenius norm),
 *   then, after one block per matrix has added its tiles' sums, the
 *   normalised update rounded to bf16 into the matrix's Newton-Schulz slot,
 *   and at the end the update applied to the parameters. Tiles make the
 *   transposes cheap: a tall matrix (rows > cols) is orthogonalised on its
 *   shorter side, as lib/optim.c does, so its slot holds its transpose, and
 *   the tile goes through shared memory so that both the read and the write
 *   are coalesced.
 * - Slots are grouped by shape [m, n] (m <= n, after the transpose): one
 *   stack per shape, where each Newton-Schulz product is one strided-batched
 *   cuBLASLt call (bf16 in and out, fp32 accumulation). The quintic's sums
 *   go into the products' epilogues, computed in fp32 and rounded to bf16
 *   once:
 *       A  = X X^T                 (alpha 1, beta 0)
 *       B  = c A A^T + b A         (alpha c, beta b, C = A; A is symmetric)
 *       X' = B X + a X             (alpha 1, beta a, C = X), X' in a second
 *                                  stack (a product cannot overwrite an
 *                                  operand), the two stacks alternating.
 *   This is train_gpt.py's zeropower_via_newtonschulz5 with its bf16
 *   intermediates, each rounded once instead of after every operation.
 * - Adam and clipping walk chunks (chunk_t) of at most CHUNK elements, each
 *   within one tensor: one block per chunk, so one launch covers every
 *   tensor, and the partition, hence every sum's order, is fixed by the
 *   layout.
 * Where lib/optim.c's float arithmetic is cheap to mirror (the momentum, the
 * normalisation, the parameter update, Adam, the clip factor), the kernels
 * spell its operations with round-to-nearest intrinsics so that nvcc cannot
 * fuse a*b+c into an FMA the CPU build does not do; those results then match
 * the CPU's bit for bit. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "optim.h"

extern "C" {
#include "schedule.h"
}

/* train_gpt.py's zeropower_via_newtonschulz5 coefficients and epsilon, as in
 * lib/optim.c. */
#define NS_A 3.4445f
#define NS_B -4.7750f
#define NS_C 2.0315f
#define NS_EPS 1e-7

/* Muon tiles: TILE x TILE elements, blocks of TILE x TILE_ROWS threads, each
 * thread TILE / TILE_ROWS rows of its column. */
#define TILE 32
#define TILE_ROWS 8

/* Elements per chunk of the Adam and clipping kernels, and their threads. */
#define CHUNK 4096
#define THREADS 256

/* One Muon matrix. */
typedef struct {
    size_t p;      /* offset in params and grads */
    size_t buf;    /* offset in the momentum buffers */
    size_t slot;   /* offset in the Newton-Schulz stacks x[0], x[1] */
    int rows, cols;
    int tall;      /* rows > cols: the slot holds the transpose */
    float scale;   /* sqrt(max(1, rows / cols)) */
    int t0, t1;    /* its tiles */
} mat_t;

typedef struct {
    int mat, r0, c0;
} tile_t;

/* CHUNK elements or fewer of one tensor: params/grads at p, Adam's moments
 * at s, the Adam group grp (index into adam_args). */
typedef struct {
    size_t p, s;
    int len, grp;
} chunk_t;

enum { GRP_EMBED, GRP_HEAD, GRP_SCALAR, N_GRP };

/* One strided-batched product, described once. */
typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc; /* lc describes C and D alike */
    cublasLtMatmulAlgo_t algo;
} lt_plan;

/* The matrices of one shape [m, n] (m <= n) after the transpose. */
typedef struct {
    int m, n, count;
    size_t x_off, a_off; /* the stack's offsets in x[] and in a, b */
    lt_plan xxt, aat, bx;
} ns_class;

struct gk_cu_optim {
    const gk_layout *l;
    gk_gemm *g;
    long long steps;

    /* Host tables, and their device copies (d_*). */
    int n_mat, n_tile, n_adam_chunk, n_clip_chunk, n_class;
    mat_t *mats;
    tile_t *tiles;
    chunk_t *adam_chunks, *clip_chunks;
    ns_class *classes;
    size_t muon_numel, adam_numel, ns_numel /* sum of count m^2 */;
    /* The CPU optimizer's state tensors, in gk_optim_state_get's order. */
    int n_state;
    float **state;
    size_t *state_numel;

    mat_t *d_mats;
    tile_t *d_tiles;
    chunk_t *d_adam_chunks, *d_clip_chunks;
    float *muon_buf, *adam_m, *adam_v;
    gk_bf16 *x[2], *a, *b;
    double *tile_ss, *clip_ss, *norm;
    float *rnorm; /* per matrix: its Frobenius norm + 1e-7, rounded to float */
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
    return p;
}

/* As lib/optim.c's is_trained: buffers are moved by their own rule. */
static int is_trained(gk_param_group g) { return g != GK_GROUP_BUFFER; }

static int adam_group(gk_param_group g)
{
    return g == GK_GROUP_EMBED ? GRP_EMBED : g == GK_GROUP_HEAD ? GRP_HEAD : GRP_SCALAR;
}

/* Append the chunks of n elements at params offset p (and state offset s). */
static void add_chunks(chunk_t *tab, int *count, size_t p, size_t s, size_t n, int grp)
{
    for (size_t k = 0; k < n; k += CHUNK) {
        chunk_t c = {p + k, s + k, (int)(n - k < CHUNK ? n - k : CHUNK), grp};
        tab[(*count)++] = c;
    }
}

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* The host tables of layout L: which tensor goes where. No device work. */
static void build(gk_cu_optim *o, const gk_layout *l)
{
    o->l = l;
    int np = l->n_params;
    size_t n_tile = 0, n_adam_chunk = 0, n_clip_chunk = 0;
    for (int j = 0; j < np; j++) {
        const gk_param *p = &l->params[j];
        if (!is_trained(p->group))
            continue;
        n_clip_chunk += ceil_div(p->numel, CHUNK);
        if (p->group == GK_GROUP_MATRIX) {
            if (p->ndim != 2 || p->shape[0] % 8 || p->shape[1] % 8) {
                char why[160];
                snprintf(why, sizeof why,
                         "Muon matrix %s is [%d, %d]: it must be 2-D with both sides "
                         "multiples of 8 (bf16 tensor-core products)",
                         p->name, p->shape[0], p->ndim == 2 ? p->shape[1] : 0);
                gk_cu_fail("gk_cu_optim_new", __FILE__, __LINE__, why);
            }
            n_tile += ceil_div((size_t)p->shape[0], TILE) * ceil_div((size_t)p->shape[1], TILE);
        } else {
            n_adam_chunk += ceil_div(p->numel, CHUNK);
        }
    }
    o->mats = (mat_t *)xcalloc((size_t)np, sizeof *o->mats);
    o->tiles = (tile_t *)xcalloc(n_tile, sizeof *o->tiles);
    o->adam_chunks = (chunk_t *)xcalloc(n_adam_chunk, sizeof *o->adam_chunks);
    o->clip_chunks = (chunk_t *)xcalloc(n_clip_chunk, sizeof *o->clip_chunks);
    o->classes = (ns_class *)xcalloc((size_t)np, sizeof *o->classes);
    o->state = (float **)xcalloc(2 * (size_t)np, sizeof *o->state);
    o->state_numel = (size_t *)xcalloc(2 * (size_t)np, sizeof *o->state_numel);
    /* Class of each matrix and its index in the class's stack. */
    int *cls = (int *)xcalloc((size_t)np, sizeof *cls);
    int *idx = (int *)xcalloc((size_t)np, sizeof *idx);

    for (int j = 0; j < np; j++) {
        const gk_param *p = &l->params[j];
        if (!is_trained(p->group))
            continue;
        add_chunks(o->clip_chunks, &o->n_clip_chunk, p->offset, 0, p->numel, 0);
        if (p->group != GK_GROUP_MATRIX) {
            add_chunks(o->adam_chunks, &o->n_adam_chunk, p->offset, o->adam_numel, p->numel,
                       adam_group(p->group));
            o->adam_numel += p->numel;
            continue;
        }
        int rows = p->shape[0], cols = p->shape[1], k = o->n_mat++;
        int m = rows < cols ? rows : cols, n = rows < cols ? cols : rows, c;
        for (c = 0; c < o->n_class; c++)
            if (o->classes[c].m == m && o->classes[c].n == n)
                break;
        if (c == o->n_class) {
            o->classes[c].m = m, o->classes[c].n = n;
            o->n_class++;
        }
        cls[k] = c, idx[k] = o->classes[c].count++;
        mat_t *mt = &o->mats[k];
        mt->p = p->offset, mt->buf = o->muon_numel, mt->rows = rows, mt->cols = cols;
        mt->tall = rows > cols;
        mt->scale = mt->tall ? (float)sqrt((double)rows / cols) : 1.0f;
        mt->t0 = o->n_tile;
        for (int r0 = 0; r0 < rows; r0 += TILE)
            for (int c0 = 0; c0 < cols; c0 += TILE) {
                tile_t t = {k, r0, c0};
                o->tiles[o->n_tile++] = t;
            }
        mt->t1 = o->n_tile;
        o->muon_numel += p->numel;
    }
    /* The stacks, class after class, each in layout order. */
    size_t xo = 0, ao = 0;
    for (int c = 0; c < o->n_class; c++) {
        ns_class *nc = &o->classes[c];
        nc->x_off = xo, nc->a_off = ao;
        xo += (size_t)nc->count * nc->m * nc->n;
        ao += (size_t)nc->count * nc->m * nc->m;
    }
    o->ns_numel = ao;
    for (int k = 0; k < o->n_mat; k++) {
        const ns_class *nc = &o->classes[cls[k]];
        o->mats[k].slot = nc->x_off + (size_t)idx[k] * nc->m * nc->n;
    }
    free(cls);
    free(idx);
}

/* Carve N bytes from A, or (A NULL) only count them, with the arena's
 * alignment, into *total. */
static void *take(gk_cu_arena *a, size_t *total, size_t n)
{
    *total += ceil_div(n ? n : 1, GK_CU_ALIGN) * GK_CU_ALIGN;
    return a ? gk_cu_arena_alloc(a, n ? n : 1) : NULL;
}

/* The device memory of O's tables from A; returns the bytes (with the
 * padding of one misaligned start). */
static size_t carve(gk_cu_optim *o, gk_cu_arena *a)
{
    size_t t = GK_CU_ALIGN;
    o->d_mats = (mat_t *)take(a, &t, (size_t)o->n_mat * sizeof(mat_t));
    o->d_tiles = (tile_t *)take(a, &t, (size_t)o->n_tile * sizeof(tile_t));
    o->d_adam_chunks = (chunk_t *)take(a, &t, (size_t)o->n_adam_chunk * sizeof(chunk_t));
    o->d_clip_chunks = (chunk_t *)take(a, &t, (size_t)o->n_clip_chunk * sizeof(chunk_t));
    o->muon_buf = (float *)take(a, &t, o->muon_numel * sizeof(float));
    o->adam_m = (float *)take(a, &t, o->adam_numel * sizeof(float));
    o->adam_v = (float *)take(a, &t, o->adam_numel * sizeof(float));
    o->x[0] = (gk_bf16 *)take(a, &t, o->muon_numel * sizeof(gk_bf16));
    o->x[1] = (gk_bf16 *)take(a, &t, o->muon_numel * sizeof(gk_bf16));
    o->a = (gk_bf16 *)take(a, &t, o->ns_numel * sizeof(gk_bf16));
    o->b = (gk_bf16 *)take(a, &t, o->ns_numel * sizeof(gk_bf16));
    o->tile_ss = (double *)take(a, &t, (size_t)o->n_tile * sizeof(double));
    o->clip_ss = (double *)take(a, &t, (size_t)o->n_clip_chunk * sizeof(double));
    o->norm = (double *)take(a, &t, sizeof(double));
    o->rnorm = (float *)take(a, &t, (size_t)o->n_mat * sizeof(float));
    return t;
}

static void free_tables(gk_cu_optim *o)
{
    free(o->mats);
    free(o->tiles);
    free(o->adam_chunks);
    free(o->clip_chunks);
    free(o->classes);
    free(o->state);
    free(o->state_numel);
}

size_t gk_cu_optim_bytes(const gk_layout *l)
{
    gk_cu_optim o;
    memset(&o, 0, sizeof o);
    build(&o, l);
    size_t bytes = carve(&o, NULL);
    free_tables(&o);
    return bytes;
}

/* ---- cuBLASLt plans --------------------------------------------------------- */

static void bf16_layout(cublasLtMatrixLayout_t *l, int rows, int cols, int ld, int batch,
                        long long stride)
{
    GK_CUBLAS(cublasLtMatrixLayoutCreate(l, CUDA_R_16BF, rows, cols, ld));
    GK_CUBLAS(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                               sizeof batch));
    GK_CUBLAS(cublasLtMatrixLayoutSetAttribute(
        *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
}

/* Column-major D [m,n] = alpha op(A) op(B) + beta C, op(A) [m,k], op(B)
 * [k,n], every operand bf16 and tightly packed (ld = its stored rows), BATCH
 * of them at the strides of their sizes; the algorithm is cuBLASLt's first
 * heuristic choice, fixed from here on (gemm.cu explains the row-major to
 * column-major mapping, which the callers below spell out). */
static void plan_init(gk_gemm *g, lt_plan *p, cublasOperation_t ta, cublasOperation_t tb,
                      int m, int n, int k, int batch)
{
    p->op = gk_gemm_desc(ta, tb);
    int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
    int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
    bf16_layout(&p->la, a_rows, a_cols, a_rows, batch, (long long)a_rows * a_cols);
    bf16_layout(&p->lb, b_rows, b_cols, b_rows, batch, (long long)b_rows * b_cols);
    bf16_layout(&p->lc, m, n, m, batch, (long long)m * n);

    p->algo = gk_gemm_algo(g, p->op, p->la, p->lb, p->lc, m, n, k);
}

static void plan_destroy(lt_plan *p)
{
    GK_CUBLAS(cublasLtMatrixLayoutDestroy(p->lc));
    GK_CUBLAS(cublasLtMatrixLayoutDestroy(p->lb));
    GK_CUBLAS(cublasLtMatrixLayoutDestroy(p->la));
    GK_CUBLAS(cublasLtMatmulDescDestroy(p->op));
}

static void plan_run(gk_gemm *g, const lt_plan *p, float alpha, float beta, const gk_bf16 *A,
                     const gk_bf16 *B, const gk_bf16 *C, gk_bf16 *D)
{
    GK_CUBLAS(cublasLtMatmul(g->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, D,
                             p->lc, &p->algo, g->workspace, GK_GEMM_WORKSPACE, g->stream));
}

/* The three products of a class [m, n] with its stack of X [m, n] row-major,
 * which column-major reads as X^T [n, m]:
 *   xxt: A = X X^T     column-major A [m,m] = (X^T)^T X^T: op(A) T, op(B) N, k n
 *   aat: B = A A^T     the same with n = m (A symmetric: row- and column-major agree)
 *   bx:  X' = B X      column-major X'^T [n,m] = X^T B^T, both as stored, k m */
static void class_plans(gk_gemm *g, ns_class *c)
{
    plan_init(g, &c->xxt, CUBLAS_OP_T, CUBLAS_OP_N, c->m, c->m, c->n, c->count);
    plan_init(g, &c->aat, CUBLAS_OP_T, CUBLAS_OP_N, c->m, c->m, c->m, c->count);
    plan_init(g, &c->bx, CUBLAS_OP_N, CUBLAS_OP_N, c->n, c->m, c->m, c->count);
}

/* ---- kernels ------------------------------------------------------------------ */

/* The sum of v over the block (any shape, a multiple of 32 threads, at most
 * 1024): a shuffle tree per warp, then warp 0 over the warps' sums. Thread 0
 * gets the result. sh holds 32 doubles. */
static __device__ double block_sum(double v, double *sh)
{
    int tid = threadIdx.y * blockDim.x + threadIdx.x, nw = blockDim.x * blockDim.y / 32;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    if ((tid & 31) == 0)
        sh[tid >> 5] = v;
    __syncthreads();
    if (tid < 32) {
        v = tid < nw ? sh[tid] : 0.0;
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, o);
    }
    return v;
}

/* buf = mu buf + g; the update u = g + mu buf (buf without Nesterov), as
 * gk_optim_muon_update, unfused; ss[tile] = the tile's sum of u^2. */
static __global__ void muon_momentum_k(float *buf, double *ss, const float *grads,
                                       const mat_t *mats, const tile_t *tiles, float mu,
                                       int nesterov)
{
    __shared__ double sh[32];
    tile_t t = tiles[blockIdx.x];
    const mat_t m = mats[t.mat];
    int c = t.c0 + threadIdx.x;
    double acc = 0;
    for (int r = t.r0 + threadIdx.y; r < t.r0 + TILE; r += TILE_ROWS)
        if (r < m.rows && c < m.cols) {
            size_t i = (size_t)r * m.cols + c;
            float g = grads[m.p + i], b = __fadd_rn(__fmul_rn(mu, buf[m.buf + i]), g);
            buf[m.buf + i] = b;
            float u = nesterov ? __fadd_rn(g, __fmul_rn(mu, b)) : b;
            acc += (double)u * u;
        }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0 && threadIdx.y == 0)
        ss[blockIdx.x] = acc;
}

/* One block per matrix: its tiles' sums, in a fixed tree, to the divisor
 * (float)(sqrt(sum) + 1e-7) of gk_newton_schulz. */
static __global__ void muon_norm_k(float *rnorm, const double *ss, const mat_t *mats)
{
    __shared__ double sh[32];
    const mat_t m = mats[blockIdx.x];
    double acc = 0;
    for (int t = m.t0 + threadIdx.x; t < m.t1; t += blockDim.x)
        acc += ss[t];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0)
        rnorm[blockIdx.x] = (float)(sqrt(acc) + NS_EPS);
}

/* The update again (from the stored buf, the same bits as in
 * muon_momentum_k), divided by the norm and rounded to bf16 into the slot:
 * row-major [rows, cols] as it is, or its transpose through shared memory
 * when the matrix is tall. */
static __global__ void muon_load_k(gk_bf16 *x, const float *buf, const float *grads,
                                   const float *rnorm, const mat_t *mats, const tile_t *tiles,
                                   float mu, int nesterov)
{
    __shared__ float sh[TILE][TILE + 1];
    tile_t t = tiles[blockIdx.x];
    const mat_t m = mats[t.mat];
    float d = rnorm[t.mat];
    int c = t.c0 + threadIdx.x;
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
        int r = t.r0 + k;
        if (r < m.rows && c < m.cols) {
            size_t i = (size_t)r * m.cols + c;
            float b = buf[m.buf + i];
            float u = nesterov ? __fadd_rn(grads[m.p + i], __fmul_rn(mu, b)) : b;
            float v = __fdiv_rn(u, d);
            if (m.tall)
                sh[k][threadIdx.x] = v;
            else
                x[m.slot + i] = __float2bfloat16_rn(v);
        }
    }
    if (!m.tall) /* uniform over the block */
        return;
    __syncthreads();
    /* Row c of the transpose [cols, rows]: thread x takes source row r0 + x. */
    int r = t.r0 + threadIdx.x;
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
        int cc = t.c0 + k;
        if (r < m.rows && cc < m.cols)
            x[m.slot + (size_t)cc * m.rows + r] = __float2bfloat16_rn(sh[threadIdx.x][k]);
    }
}

/* gk_optim_muon_apply with the orthogonalised update from the slot (read
 * transposed for a tall matrix, times its scale, as gk_optim_muon_update):
 * w = (wd ? w decay : w) + neg_lr u, unfused. */
static __global__ void muon_apply_k(float *params, const gk_bf16 *x, const mat_t *mats,
                                    const tile_t *tiles, float neg_lr, float decay, int wd)
{
    __shared__ float sh[TILE][TILE + 1];
    tile_t t = tiles[blockIdx.x];
    const mat_t m = mats[t.mat];
    if (m.tall) { /* uniform over the block */
        int r = t.r0 + threadIdx.x;
        for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
            int cc = t.c0 + k;
            if (r < m.rows && cc < m.cols)
                sh[k][threadIdx.x] = __bfloat162float(x[m.slot + (size_t)cc * m.rows + r]);
        }
        __syncthreads();
    }
    int c = t.c0 + threadIdx.x;
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
        int r = t.r0 + k;
        if (r < m.rows && c < m.cols) {
            size_t i = (size_t)r * m.cols + c;
            float u = m.tall ? __fmul_rn(sh[threadIdx.x][k], m.scale)
                             : __bfloat162float(x[m.slot + i]);
            float w = params[m.p + i];
            if (wd)
                w = __fmul_rn(w, decay);
            params[m.p + i] = __fadd_rn(w, __fmul_rn(neg_lr, u));
        }
    }
}

/* The scalars of one Adam step: per group its step size lr / (1 - b1^t) and
 * decay 1 - lr wd, computed on the host as gk_adam_step does. */
typedef struct {
    double b1, b2, eps, bc2_sqrt;
    double step_size[N_GRP], decay[N_GRP];
} adam_args;

/* gk_adam_step's double arithmetic, operation for operation, unfused (the
 * arithmetic of elementwise.cu's adam_k), over one chunk per block. */
static __global__ void adam_chunks_k(float *params, const float *grads, float *m, float *v,
                                     const chunk_t *chunks, adam_args a)
{
    chunk_t ch = chunks[blockIdx.x];
    double step_size = a.step_size[ch.grp], decay = a.decay[ch.grp];
    for (int j = threadIdx.x; j < ch.len; j += blockDim.x) {
        size_t ip = ch.p + j, is = ch.s + j;
        double gi = grads[ip];
        float mi = (float)__dadd_rn(__dmul_rn(a.b1, m[is]), __dmul_rn(1 - a.b1, gi));
        float vi =
            (float)__dadd_rn(__dmul_rn(a.b2, v[is]), __dmul_rn(__dmul_rn(1 - a.b2, gi), gi));
        double denom = __dadd_rn(sqrt((double)vi) / a.bc2_sqrt, a.eps);
        double w = __dmul_rn((double)params[ip], decay);
        w = __dsub_rn(w, __dmul_rn(step_size, (double)mi) / denom);
        m[is] = mi;
        v[is] = vi;
        params[ip] = (float)w;
    }
}

/* ss[chunk] = the chunk's sum of squares in double. */
static __global__ void sumsq_chunks_k(double *ss, const float *x, const chunk_t *chunks)
{
    __shared__ double sh[32];
    chunk_t ch = chunks[blockIdx.x];
    double acc = 0;
    for (int j = threadIdx.x; j < ch.len; j += blockDim.x)
        acc += (double)x[ch.p + j] * x[ch.p + j];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0)
        ss[blockIdx.x] = acc;
}

/* One block: the chunks' sums in a fixed tree, *norm = sqrt of the total. */
static __global__ void norm_k(double *norm, const double *ss, int n)
{
    __shared__ double sh[32];
    double acc = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        acc += ss[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0)
        *norm = sqrt(acc);
}

static __global__ void scale_chunks_k(float *x, const chunk_t *chunks, float f)
{
    chunk_t ch = chunks[blockIdx.x];
    for (int j = threadIdx.x; j < ch.len; j += blockDim.x)
        x[ch.p + j] = __fmul_rn(x[ch.p + j], f);
}

/* ---- the optimizer ------------------------------------------------------------ */

/* Copies go on the optimizer's stream: a copy on the legacy default stream
 * would not be ordered with a non-blocking stream's kernels. */
static void upload(void *dev, const void *host, size_t bytes, cudaStream_t st)
{
    if (bytes)
        GK_CU(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, st));
}

gk_cu_optim *gk_cu_optim_new(const gk_layout *l, gk_cu_arena *arena, gk_gemm *g)
{
    gk_cu_optim *o = (gk_cu_optim *)xcalloc(1, sizeof *o);
    o->g = g;
    build(o, l);
    carve(o, arena);
    upload(o->d_mats, o->mats, (size_t)o->n_mat * sizeof(mat_t), g->stream);
    upload(o->d_tiles, o->tiles, (size_t)o->n_tile * sizeof(tile_t), g->stream);
    upload(o->d_adam_chunks, o->adam_chunks, (size_t)o->n_adam_chunk * sizeof(chunk_t), g->stream);
    upload(o->d_clip_chunks, o->clip_chunks, (size_t)o->n_clip_chunk * sizeof(chunk_t), g->stream);
    /* torch's lazily created zero state. */
    GK_CU(cudaMemsetAsync(o->muon_buf, 0, o->muon_numel * sizeof(float), g->stream));
    GK_CU(cudaMemsetAsync(o->adam_m, 0, o->adam_numel * sizeof(float), g->stream));
    GK_CU(cudaMemsetAsync(o->adam_v, 0, o->adam_numel * sizeof(float), g->stream));
    for (int c = 0; c < o->n_class; c++)
        class_plans(g, &o->classes[c]);
    /* The state tensors in lib/optim.c's order: per trained tensor in layout
     * order, Muon's buffer or Adam's m then v. */
    size_t mo = 0, ao = 0;
    for (int j = 0; j < l->n_params; j++) {
        const gk_param *p = &l->params[j];
        if (!is_trained(p->group))
            continue;
        if (p->group == GK_GROUP_MATRIX) {
            o->state_numel[o->n_state] = p->numel;
            o->state[o->n_state++] = o->muon_buf + mo;
            mo += p->numel;
        } else {
            o->state_numel[o->n_state] = p->numel;
            o->state[o->n_state++] = o->adam_m + ao;
            o->state_numel[o->n_state] = p->numel;
            o->state[o->n_state++] = o->adam_v + ao;
            ao += p->numel;
        }
    }
    return o;
}

void gk_cu_optim_free(gk_cu_optim *o)
{
    if (!o)
        return;
    for (int c = 0; c < o->n_class; c++) {
        plan_destroy(&o->classes[c].xxt);
        plan_destroy(&o->classes[c].aat);
        plan_destroy(&o->classes[c].bx);
    }
    free_tables(o);
    free(o);
}

long long gk_cu_optim_steps(const gk_cu_optim *o) { return o->steps; }

double gk_cu_optim_clip(gk_cu_optim *o, float *grads)
{
    cudaStream_t st = o->g->stream;
    double norm = 0;
    if (o->n_clip_chunk) {
        sumsq_chunks_k<<<o->n_clip_chunk, THREADS, 0, st>>>(o->clip_ss, grads, o->d_clip_chunks);
        norm_k<<<1, 1024, 0, st>>>(o->norm, o->clip_ss, o->n_clip_chunk);
        GK_CU(cudaGetLastError());
        GK_CU(cudaMemcpyAsync(&norm, o->norm, sizeof norm, cudaMemcpyDeviceToHost, st));
        GK_CU(cudaStreamSynchronize(st));
    }
    /* gk_optim_clip's decision and factor, on the host from the same norm. */
    double max = o->l->cfg.train.grad_clip_norm;
    if (max <= 0)
        return norm;
    double coef = max / (norm + 1e-6);
    if (coef < 1) {
        scale_chunks_k<<<o->n_clip_chunk, THREADS, 0, st>>>(grads, o->d_clip_chunks,
                                                             (float)coef);
        GK_CU(cudaGetLastError());
    }
    return norm;
}

/* Muon on every matrix: the momentum, the normalised updates into the
 * stacks, Newton-Schulz over each stack, the updates applied. */
static void muon_step(gk_cu_optim *o, float *params, const float *grads, double lr_scale)
{
    const gk_config *c = &o->l->cfg;
    gk_gemm *g = o->g;
    cudaStream_t st = g->stream;
    dim3 tb(TILE, TILE_ROWS);
    float mu = (float)gk_muon_momentum(c, o->steps);
    int nest = c->train.muon_nesterov;
    muon_momentum_k<<<o->n_tile, tb, 0, st>>>(o->muon_buf, o->tile_ss, grads, o->d_mats,
                                              o->d_tiles, mu, nest);
    muon_norm_k<<<o->n_mat, THREADS, 0, st>>>(o->rnorm, o->tile_ss, o->d_mats);
    muon_load_k<<<o->n_tile, tb, 0, st>>>(o->x[0], o->muon_buf, grads, o->rnorm, o->d_mats,
                                          o->d_tiles, mu, nest);
    GK_CU(cudaGetLastError());

    int steps = c->train.muon_backend_steps;
    for (int s = 0; s < steps; s++) {
        gk_bf16 *xi = o->x[s & 1], *xo = o->x[(s + 1) & 1];
        for (int k = 0; k < o->n_class; k++) {
            const ns_class *nc = &o->classes[k];
            gk_bf16 *X = xi + nc->x_off, *Y = xo + nc->x_off;
            gk_bf16 *A = o->a + nc->a_off, *B = o->b + nc->a_off;
            plan_run(g, &nc->xxt, 1.0f, 0.0f, X, X, A, A);
            plan_run(g, &nc->aat, NS_C, NS_B, A, A, A, B);
            plan_run(g, &nc->bx, 1.0f, NS_A, X, B, X, Y);
        }
    }

    double lr = c->train.matrix_lr * lr_scale, wd = c->train.muon_weight_decay;
    muon_apply_k<<<o->n_tile, tb, 0, st>>>(params, o->x[steps & 1], o->d_mats, o->d_tiles,
                                           (float)-lr, (float)(1 - lr * wd), wd > 0);
    GK_CU(cudaGetLastError());
}

void gk_cu_optim_step(gk_cu_optim *o, float *params, const float *grads, double lr_scale)
{
    const gk_config *c = &o->l->cfg;
    if (o->n_mat)
        muon_step(o, params, grads, lr_scale);
    if (o->n_adam_chunk) {
        /* As lib/optim.c's adam_lr and gk_adam_step. */
        double t = (double)(o->steps + 1), lr[N_GRP];
        lr[GRP_EMBED] = c->model.tie_embeddings ? c->train.tied_embed_lr : c->train.embed_lr;
        lr[GRP_HEAD] = c->train.head_lr;
        lr[GRP_SCALAR] = c->train.scalar_lr;
        adam_args a;
        a.b1 = c->train.beta1, a.b2 = c->train.beta2, a.eps = c->train.adam_eps;
        a.bc2_sqrt = sqrt(1 - pow(a.b2, t));
        for (int k = 0; k < N_GRP; k++) {
            double r = lr[k] * lr_scale;
            a.step_size[k] = r / (1 - pow(a.b1, t));
            a.decay[k] = 1 - r * c->train.adam_weight_decay;
        }
        adam_chunks_k<<<o->n_adam_chunk, THREADS, 0, o->g->stream>>>(
            params, grads, o->adam_m, o->adam_v, o->d_adam_chunks, a);
        GK_CU(cudaGetLastError());
    }
    o->steps++;
}

/* The CPU optimizer's state tensors must be ours, one for one. */
static void match_state(const gk_cu_optim *o, const gk_optim *cpu, const char *fn)
{
    int n = gk_optim_state_count(cpu);
    int ok = n == o->n_state;
    for (int i = 0; ok && i < n; i++)
        ok = gk_optim_state_get(cpu, i).numel == o->state_numel[i];
    if (!ok)
        gk_cu_fail(fn, __FILE__, __LINE__,
                   "the CPU optimizer's state tensors differ from ours: not the same layout");
}

void gk_cu_optim_download(const gk_cu_optim *o, gk_optim *cpu)
{
    match_state(o, cpu, "gk_cu_optim_download");
    for (int i = 0; i < o->n_state; i++)
        GK_CU(cudaMemcpyAsync(gk_optim_state_get(cpu, i).data, o->state[i],
                              o->state_numel[i] * sizeof(float), cudaMemcpyDeviceToHost,
                              o->g->stream));
    GK_CU(cudaStreamSynchronize(o->g->stream));
    gk_optim_set_steps(cpu, o->steps);
}

void gk_cu_optim_upload(gk_cu_optim *o, const gk_optim *cpu)
{
    match_state(o, cpu, "gk_cu_optim_upload");
    for (int i = 0; i < o->n_state; i++)
        upload(o->state[i], gk_optim_state_get(cpu, i).data, o->state_numel[i] * sizeof(float),
               o->g->stream);
    GK_CU(cudaStreamSynchronize(o->g->stream)); /* the caller may free cpu on return */
    o->steps = gk_optim_steps(cpu);
}
