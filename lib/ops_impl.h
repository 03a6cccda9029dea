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

/* One thread per (b, h); for each query the scores of the visible keys go into
 * a per-thread row p[0..t], softmax with the maximum subtracted. */
void OP(gk_attention_fwd)(REAL *out, REAL *lse, const REAL *q, const REAL *k,
                          const REAL *v, int B, int T, int H, int KV, int D)
{
    int group = H / KV;
    REAL scale = (REAL)(1 / sqrt((double)D));
#pragma omp parallel
    {
        REAL *p = gk_malloc((size_t)T * sizeof *p);
#pragma omp for
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H, kh = h / group;
            for (int t = 0; t < T; t++) {
                const REAL *qt = q + OP(head_at)(b, t, h, T, H, D);
                REAL mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    p[j] = scale * OP(dot)(qt, k + OP(head_at)(b, j, kh, T, KV, D), D);
                    if (p[j] > mx)
                        mx = p[j];
                }
                REAL sum = 0;
                for (int j = 0; j <= t; j++) {
                    p[j] = exp(p[j] - mx);
                    sum += p[j];
                }
                REAL *ot = out + OP(head_at)(b, t, h, T, H, D);
                memset(ot, 0, (size_t)D * sizeof *ot);
                for (int j = 0; j <= t; j++)
                    OP(axpy)(ot, p[j] / sum, v + OP(head_at)(b, j, kh, T, KV, D), D);
                if (lse)
                    lse[((size_t)b * T + t) * H + h] = mx + log(sum);
            }
        }
        free(p);
    }
}

/* With p_tj = exp(s_tj - lse_t) rebuilt from the saved log-sum-exp:
 *   dv_j += p_tj dout_t,  dp_tj = dout_t . v_j,
 *   ds_tj = p_tj (dp_tj - sum_j' p_tj' dp_tj') = p_tj (dp_tj - dout_t . out_t),
 *   dq_t += scale ds_tj k_j,  dk_j += scale ds_tj q_t.
 * One thread per (b, kv head), which loops over the query heads sharing that
 * kv head: dk and dv of a kv head then have a single writer, in a fixed order,
 * with no atomics. */
void OP(gk_attention_bwd)(REAL *dq, REAL *dk, REAL *dv, const REAL *dout,
                          const REAL *out, const REAL *lse, const REAL *q,
                          const REAL *k, const REAL *v, int B, int T, int H, int KV, int D)
{
    int group = H / KV;
    REAL scale = (REAL)(1 / sqrt((double)D));
#pragma omp parallel for
    for (int bk = 0; bk < B * KV; bk++) {
        int b = bk / KV, kh = bk % KV;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            for (int t = 0; t < T; t++) {
                size_t qo = OP(head_at)(b, t, h, T, H, D);
                const REAL *qt = q + qo, *dout_t = dout + qo;
                REAL *dqt = dq + qo;
                REAL l = lse[((size_t)b * T + t) * H + h];
                REAL delta = OP(dot)(dout_t, out + qo, D);
                for (int j = 0; j <= t; j++) {
                    size_t ko = OP(head_at)(b, j, kh, T, KV, D);
                    REAL p = exp(scale * OP(dot)(qt, k + ko, D) - l);
                    REAL ds = p * (OP(dot)(dout_t, v + ko, D) - delta);
                    OP(axpy)(dv + ko, p, dout_t, D);
                    OP(axpy)(dqt, scale * ds, k + ko, D);
                    OP(axpy)(dk + ko, scale * ds, qt, D);
                }
            }
        }
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
        /* One thread per entry of s, summing its channels over every row. */
#pragma omp parallel for
        for (int j = 0; j < C / group; j++) {
            double acc = 0;
            for (int n = 0; n < N; n++)
                for (int c = j * group; c < (j + 1) * group; c++)
                    acc += (double)x[(size_t)n * C + c] * dy[(size_t)n * C + c];
            ds[j] += (REAL)acc;
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
