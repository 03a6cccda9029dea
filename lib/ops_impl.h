/* ops_impl: the bodies of the layer functions declared in ops.h, written once
 * over a real type. lib/ops.c includes this file twice, defining before each
 * inclusion
 *   REAL      the element type (float, double),
 *   OP(name)  the name with its type suffix (name_f32, name_f64),
 *   GEMM      the matching CBLAS product (cblas_sgemm, cblas_dgemm),
 * so the double functions that the tests check by finite differences are the
 * very code the trainer runs in float. Math calls go through <tgmath.h> and
 * follow the type of their argument. No include guard, on purpose.
 *
 * Reductions that feed a parameter gradient or the loss (sums over many rows)
 * accumulate in double even in the float build; each parallel loop gives every
 * output element to exactly one thread and sums in a fixed order, so results
 * do not depend on the number of threads. */

/* Offset of row (b, t) and head h in a [B,T,H,D] tensor. */
static inline size_t OP(head_at)(int b, int t, int h, int T, int H, int D)
{
    return (((size_t)b * T + t) * H + h) * D;
}

static inline REAL OP(dot)(const REAL *a, const REAL *b, int n)
{
    REAL s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* y += a x over n elements. */
static inline void OP(axpy)(REAL *y, REAL a, const REAL *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* ---- linear ---------------------------------------------------------------- */

void OP(gk_linear_fwd)(REAL *y, const REAL *x, const REAL *w, const REAL *bias,
                       int N, int in, int out)
{
    if (bias) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            memcpy(y + (size_t)n * out, bias, (size_t)out * sizeof *y);
    }
    /* y[N,out] = x[N,in] W[out,in]^T (+ the bias already in y). */
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1, x, in, w, in,
         bias ? 1 : 0, y, out);
}

void OP(gk_linear_bwd)(REAL *dx, REAL *dw, REAL *dbias, const REAL *dy,
                       const REAL *x, const REAL *w, int N, int in, int out)
{
    if (dx) /* dx[N,in] += dy[N,out] W[out,in] */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1, dy, out, w, in,
             1, dx, in);
    /* dW[out,in] += dy^T[out,N] x[N,in] */
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1, dy, out, x, in, 1, dw,
         in);
    if (dbias) {
#pragma omp parallel for
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int n = 0; n < N; n++)
                acc += dy[(size_t)n * out + o];
            dbias[o] += (REAL)acc;
        }
    }
}

/* ---- rmsnorm --------------------------------------------------------------- */

void OP(gk_rmsnorm_fwd)(REAL *y, REAL *rstd, const REAL *x, int N, int C, double eps)
{
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const REAL *xr = x + (size_t)n * C;
        REAL *yr = y + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++)
            ss += (double)xr[c] * xr[c];
        REAL r = (REAL)(1 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++)
            yr[c] = xr[c] * r;
        if (rstd)
            rstd[n] = r;
    }
}

/* With y = x r and r = (mean(x^2) + eps)^(-1/2): dr/dx_c = -r^3 x_c / C, so
 * dx_c = r dy_c - r^3 x_c sum(dy x) / C = r (dy_c - y_c mean(dy y)). */
void OP(gk_rmsnorm_bwd)(REAL *dx, const REAL *dy, const REAL *y, const REAL *rstd,
                        int N, int C)
{
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const REAL *dyr = dy + (size_t)n * C, *yr = y + (size_t)n * C;
        REAL *dxr = dx + (size_t)n * C;
        double acc = 0;
        for (int c = 0; c < C; c++)
            acc += (double)dyr[c] * yr[c];
        REAL m = (REAL)(acc / C), r = rstd[n];
        for (int c = 0; c < C; c++)
            dxr[c] += r * (dyr[c] - yr[c] * m);
    }
}

/* ---- rotary ---------------------------------------------------------------- */

void OP(gk_rope_table)(REAL *cos_tab, REAL *sin_tab, int T, int rope_dims, double base)
{
    int half = rope_dims / 2;
    for (int i = 0; i < half; i++) {
        /* train_gpt.py: 1 / base ** (arange(0, r, 2, float32) / r), every step
         * a float32 operation; then outer(arange(T, float32), inv_freq). */
        float inv = 1.0f / powf((float)base, (float)(2 * i) / (float)rope_dims);
        for (int t = 0; t < T; t++) {
            float ang = (float)t * inv;
            /* cos and sin of the float32 angle, rounded to float32: torch's
             * float32 cos/sin, up to its last-bit rounding. */
            cos_tab[(size_t)t * half + i] = (REAL)(float)cos((double)ang);
            sin_tab[(size_t)t * half + i] = (REAL)(float)sin((double)ang);
        }
    }
}

void OP(gk_rope_fwd)(REAL *y, const REAL *x, const REAL *cos_tab, const REAL *sin_tab,
                     int B, int T, int H, int D, int rope_dims)
{
    int half = rope_dims / 2;
    long rows = (long)B * T * H; /* one row per (b, t, h) */
#pragma omp parallel for
    for (long row = 0; row < rows; row++) {
        int t = (int)(row / H % T);
        const REAL *xr = x + row * D, *c = cos_tab + (size_t)t * half,
                   *s = sin_tab + (size_t)t * half;
        REAL *yr = y + row * D;
        for (int i = 0; i < half; i++) {
            REAL x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * c[i] + x2 * s[i];
            yr[i + half] = -x1 * s[i] + x2 * c[i];
        }
        if (yr != xr)
            memcpy(yr + rope_dims, xr + rope_dims, (size_t)(D - rope_dims) * sizeof *yr);
    }
}

/* The rotation is orthogonal, so its backward is the transposed rotation. */
void OP(gk_rope_bwd)(REAL *dx, const REAL *dy, const REAL *cos_tab, const REAL *sin_tab,
                     int B, int T, int H, int D, int rope_dims)
{
    int half = rope_dims / 2;
    long rows = (long)B * T * H;
#pragma omp parallel for
    for (long row = 0; row < rows; row++) {
        int t = (int)(row / H % T);
        const REAL *dyr = dy + row * D, *c = cos_tab + (size_t)t * half,
                   *s = sin_tab + (size_t)t * half;
        REAL *dxr = dx + row * D;
        for (int i = 0; i < half; i++) {
            REAL d1 = dyr[i], d2 = dyr[i + half];
            dxr[i] += d1 * c[i] - d2 * s[i];
            dxr[i + half] += d1 * s[i] + d2 * c[i];
        }
        for (int d = rope_dims; d < D; d++)
            dxr[d] += dyr[d];
    }
}

/* ---- attention ------------------------------------------------------------- */

/* Attention as matrix products, one (b, head) at a time: S = scale Q K^T for
 * all T x T pairs through GEMM (the masked upper triangle is computed and
 * dropped: half the products are wasted, but a GEMM runs some twenty times
 * faster than the dot-product loops it replaces), a causal softmax row by row,
 * then O = P V. Threads split the (b, h) pairs; inside a parallel region the
 * OpenMP build of OpenBLAS runs each product on the calling thread. Each thread
 * keeps one T x T scratch matrix. */
void OP(gk_attention_fwd)(REAL *out, REAL *lse, const REAL *q, const REAL *k,
                          const REAL *v, int B, int T, int H, int KV, int D)
{
    int group = H / KV;
    REAL scale = (REAL)(1 / sqrt((double)D));
#pragma omp parallel
    {
        REAL *p = gk_malloc((size_t)T * T * sizeof *p);
#pragma omp for
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H, kh = h / group;
            const REAL *qh = q + OP(head_at)(b, 0, h, T, H, D);
            const REAL *kk = k + OP(head_at)(b, 0, kh, T, KV, D);
            const REAL *vv = v + OP(head_at)(b, 0, kh, T, KV, D);
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, qh, H * D, kk,
                 KV * D, 0, p, T);
            for (int t = 0; t < T; t++) {
                REAL *row = p + (size_t)t * T, mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++)
                    mx = row[j] > mx ? row[j] : mx;
                for (int j = 0; j <= t; j++) {
                    row[j] = exp(row[j] - mx);
                    sum += row[j];
                }
                for (int j = 0; j <= t; j++)
                    row[j] /= sum;
                memset(row + t + 1, 0, (size_t)(T - t - 1) * sizeof *row);
                if (lse)
                    lse[((size_t)b * T + t) * H + h] = mx + log(sum);
            }
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1, p, T, vv, KV * D, 0,
                 out + OP(head_at)(b, 0, h, T, H, D), H * D);
        }
        free(p);
    }
}

/* With P rebuilt from the saved log-sum-exp (p_tj = exp(s_tj - lse_t), zero
 * above the diagonal):
 *   dV += P^T dO,  dP = dO V^T,  dS = P o (dP - delta) with delta_t = dO_t . O_t,
 *   dQ += scale dS K,  dK += scale dS^T Q,
 * each a GEMM. One thread per (b, kv head), which loops over the query heads
 * sharing that kv head: dk and dv of a kv head then have a single writer, in
 * a fixed order, with no atomics. */
void OP(gk_attention_bwd)(REAL *dq, REAL *dk, REAL *dv, const REAL *dout,
                          const REAL *out, const REAL *lse, const REAL *q,
                          const REAL *k, const REAL *v, int B, int T, int H, int KV, int D)
{
    int group = H / KV;
    REAL scale = (REAL)(1 / sqrt((double)D));
#pragma omp parallel
    {
        REAL *p = gk_malloc((size_t)T * T * sizeof *p);
        REAL *dp = gk_malloc((size_t)T * T * sizeof *dp);
#pragma omp for
        for (int bk = 0; bk < B * KV; bk++) {
            int b = bk / KV, kh = bk % KV;
            size_t ko = OP(head_at)(b, 0, kh, T, KV, D);
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                size_t qo = OP(head_at)(b, 0, h, T, H, D);
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, q + qo, H * D,
                     k + ko, KV * D, 0, p, T);
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1, dout + qo, H * D,
                     v + ko, KV * D, 0, dp, T);
                for (int t = 0; t < T; t++) {
                    REAL *pr = p + (size_t)t * T, *dpr = dp + (size_t)t * T;
                    size_t ot = qo + (size_t)t * H * D;
                    REAL l = lse[((size_t)b * T + t) * H + h];
                    REAL delta = OP(dot)(dout + ot, out + ot, D);
                    for (int j = 0; j <= t; j++) {
                        pr[j] = exp(pr[j] - l);
                        dpr[j] = pr[j] * (dpr[j] - delta);
                    }
                    memset(pr + t + 1, 0, (size_t)(T - t - 1) * sizeof *pr);
                    memset(dpr + t + 1, 0, (size_t)(T - t - 1) * sizeof *dpr);
                }
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1, p, T, dout + qo,
                     H * D, 1, dv + ko, KV * D);
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, scale, dp, T, k + ko,
                     KV * D, 1, dq + qo, H * D);
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, scale, dp, T, q + qo,
                     H * D, 1, dk + ko, KV * D);
            }
        }
        free(p);
        free(dp);
    }
}

/* ---- scale by a vector ----------------------------------------------------- */

void OP(gk_scale_add_fwd)(REAL *y, const REAL *x, const REAL *s, int N, int C, int group)
{
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            y[(size_t)n * C + c] += s[c / group] * x[(size_t)n * C + c];
}

void OP(gk_scale_add_bwd)(REAL *dx, REAL *ds, const REAL *dy, const REAL *x,
                          const REAL *s, int N, int C, int group)
{
    if (dx) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                dx[(size_t)n * C + c] += s[c / group] * dy[(size_t)n * C + c];
    }
    if (ds) {
        /* Blocks of whole entries of s (64 channels or one entry), one thread
         * a block: rows are read contiguously, and each entry is still summed
         * by a single thread in row order, whatever the thread count. */
        int per = group >= 64 ? 1 : 64 / group, nblk = (C / group + per - 1) / per;
#pragma omp parallel for
        for (int blk = 0; blk < nblk; blk++) {
            int j0 = blk * per, j1 = j0 + per < C / group ? j0 + per : C / group;
            int c0 = j0 * group, c1 = j1 * group;
            double *acc = gk_calloc((size_t)(c1 - c0), sizeof *acc);
            for (int n = 0; n < N; n++) {
                const REAL *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
                for (int c = c0; c < c1; c++)
                    acc[c - c0] += (double)xr[c] * dyr[c];
            }
            for (int j = j0; j < j1; j++) {
                double sum = 0;
                for (int c = j * group; c < (j + 1) * group; c++)
                    sum += acc[c - c0];
                ds[j] += (REAL)sum;
            }
            free(acc);
        }
    }
}

/* ---- activations ----------------------------------------------------------- */

void OP(gk_act_fwd)(REAL *y, const REAL *x, int N, int F, gk_act act)
{
    const REAL slope = (REAL)GK_LEAKY_SLOPE;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        REAL *yr = y + (size_t)n * F;
        if (act == GK_OP_SWIGLU) {
            const REAL *gate = x + (size_t)n * 2 * F, *up = gate + F;
            for (int f = 0; f < F; f++)
                yr[f] = gate[f] / (1 + exp(-gate[f])) * up[f];
        } else {
            const REAL *xr = x + (size_t)n * F;
            for (int f = 0; f < F; f++) {
                REAL a = xr[f] > 0 ? xr[f] : act == GK_OP_LEAKY2 ? slope * xr[f] : 0;
                yr[f] = a * a;
            }
        }
    }
}

/* relu2: 2 relu(x); leaky2: 2 a(x) a'(x); swiglu, with sig = sigmoid(gate):
 * d/dgate = up sig (1 + gate (1 - sig)), d/dup = gate sig. At x = 0 the
 * derivative is 0, as torch's relu backward (its mask is x > 0). */
void OP(gk_act_bwd)(REAL *dx, const REAL *dy, const REAL *x, int N, int F, gk_act act)
{
    const REAL slope = (REAL)GK_LEAKY_SLOPE;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const REAL *dyr = dy + (size_t)n * F;
        if (act == GK_OP_SWIGLU) {
            const REAL *gate = x + (size_t)n * 2 * F, *up = gate + F;
            REAL *dgate = dx + (size_t)n * 2 * F, *dup = dgate + F;
            for (int f = 0; f < F; f++) {
                REAL sig = 1 / (1 + exp(-gate[f]));
                dgate[f] += dyr[f] * up[f] * sig * (1 + gate[f] * (1 - sig));
                dup[f] += dyr[f] * gate[f] * sig;
            }
        } else {
            const REAL *xr = x + (size_t)n * F;
            REAL *dxr = dx + (size_t)n * F;
            for (int f = 0; f < F; f++) {
                if (xr[f] > 0)
                    dxr[f] += 2 * xr[f] * dyr[f];
                else if (act == GK_OP_LEAKY2)
                    dxr[f] += 2 * slope * slope * xr[f] * dyr[f];
            }
        }
    }
}

/* ---- softcapped head and cross-entropy ------------------------------------- */

/* Per row, three passes over V: the maximum of l (tanh is increasing, so it is
 * the softcap of the maximum of z), the sum of exp(l - max) in double (l goes
 * into dz on the way when dz is wanted, which is why dz may alias z), and the
 * gradient (softmax(l) - onehot) dloss / N, times dl/dz = 1 - (l / cap)^2. */
double OP(gk_softcap_ce)(REAL *dz, double *losses, const REAL *z, const int *targets,
                         int N, int V, double cap, double dloss)
{
    double *rowloss = losses ? losses : gk_malloc((size_t)N * sizeof *rowloss);
    const REAL rcap = (REAL)cap, gscale = (REAL)(dloss / N);
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const REAL *zr = z + (size_t)n * V;
        REAL *dr = dz ? dz + (size_t)n * V : NULL;
        REAL zmax = zr[0];
        for (int j = 1; j < V; j++)
            if (zr[j] > zmax)
                zmax = zr[j];
        REAL lmax = rcap * tanh(zmax / rcap);
        REAL lt = rcap * tanh(zr[targets[n]] / rcap);
        double sum = 0;
        for (int j = 0; j < V; j++) {
            REAL l = rcap * tanh(zr[j] / rcap);
            sum += exp(l - lmax);
            if (dr)
                dr[j] = l;
        }
        /* sum >= 1: the maximum's own term is exp(0) */
        // cppcheck-suppress invalidFunctionArg
        double lse = lmax + log(sum);
        rowloss[n] = lse - lt;
        if (dr) {
            REAL rlse = (REAL)lse;
            for (int j = 0; j < V; j++) {
                REAL th = dr[j] / rcap;
                REAL g = exp(dr[j] - rlse) - (j == targets[n]);
                dr[j] = g * gscale * (1 - th * th);
            }
        }
    }
    double total = 0; /* in row order, whatever the threads */
    for (int n = 0; n < N; n++)
        total += rowloss[n];
    if (!losses)
        free(rowloss);
    return total / N;
}

/* ---- embedding ------------------------------------------------------------- */

void OP(gk_embed_fwd)(REAL *y, const REAL *wte, const int *tokens, int N, int C)
{
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        memcpy(y + (size_t)n * C, wte + (size_t)tokens[n] * C, (size_t)C * sizeof *y);
}

/* Serial in row order: rows with the same token add into the same place, and
 * a fixed order keeps the sum deterministic. */
void OP(gk_embed_bwd)(REAL *dwte, const REAL *dy, const int *tokens, int N, int C)
{
    for (int n = 0; n < N; n++)
        OP(axpy)(dwte + (size_t)tokens[n] * C, 1, dy + (size_t)n * C, C);
}
