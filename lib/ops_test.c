/* ops_test: TAP proof that the CPU layers of ops.h are right.
 *
 * For every layer: the analytic backward in double against central finite
 * differences in double of the scalar L = sum(out * R), R random, on small
 * random inputs (max error relative to the largest gradient entry of each
 * tensor, printed in the TAP line); then the float build against the double
 * build on the same inputs. Hand-computed values pin the conventions that a
 * gradient check cannot see (the eps of RMSNorm, the RoPE half-split, the
 * softcap), and the parallel loops are checked to give the same bits on one
 * thread and on several.
 *
 * Each layer is a case: its input tensors and two small functions, one per
 * type, that run the forward and, when given gradient buffers, the backward
 * with dout = R. The harness does the perturbing, the conversions to float and
 * the comparisons. */
#include "ops.h"
#include "tap.h"
#include "util.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MAXIN 3

/* One layer under test: shapes for every kind of layer (each reads its own)
 * and the tensors it differentiates with respect to. */
typedef struct op_case op_case;
struct op_case {
    const char *name;
    int nin;
    const char *in_name[MAXIN];
    size_t in_n[MAXIN], out_n;
    /* shapes and constants */
    int N, C, in, out, B, T, H, KV, D, rope_dims, group, V;
    gk_act act;
    double cap;
    const int *ids; /* tokens of the embedding, targets of the loss */
    const double *y0; /* scale_add: what y holds before the call */
    /* x: the inputs; g: their gradients (NULL: forward only); out; R = dout */
    void (*run64)(const op_case *c, double **x, double **g, double *out, const double *R);
    void (*run32)(const op_case *c, float **x, float **g, float *out, const float *R);
};

static double *randn(size_t n, double scale)
{
    double *x = gk_malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * tap_normal();
    return x;
}

static float *to_f32(const double *x, size_t n)
{
    float *y = gk_malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (float)x[i];
    return y;
}

/* max |a - b| / max |b| (absolute when b is all zero) */
static double rel_err(const double *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num;
}

/* ---- the harness ------------------------------------------------------------ */

static double loss64(const op_case *c, double **x, double *out, const double *R)
{
    c->run64(c, x, NULL, out, R);
    double L = 0;
    for (size_t i = 0; i < c->out_n; i++)
        L += out[i] * R[i];
    return L;
}

/* Gradient check in double, then float against double; inputs are scaled
 * normals (xscale), R standard normal. */
static void check(const op_case *c, double xscale)
{
    double *x[MAXIN], *g[MAXIN], *fd[MAXIN];
    double *R = randn(c->out_n, 1), *out = gk_malloc(c->out_n * sizeof *out);
    for (int i = 0; i < c->nin; i++) {
        x[i] = randn(c->in_n[i], xscale);
        g[i] = gk_calloc(c->in_n[i], sizeof *g[i]);
        fd[i] = gk_malloc(c->in_n[i] * sizeof *fd[i]);
    }
    c->run64(c, x, g, out, R);

    const double h = 1e-6;
    double fd_err = 0;
    const char *worst = c->in_name[0];
    for (int i = 0; i < c->nin; i++) {
        for (size_t e = 0; e < c->in_n[i]; e++) {
            double save = x[i][e];
            x[i][e] = save + h;
            double lp = loss64(c, x, out, R);
            x[i][e] = save - h;
            double lm = loss64(c, x, out, R);
            x[i][e] = save;
            fd[i][e] = (lp - lm) / (2 * h);
        }
        double e = rel_err(g[i], fd[i], c->in_n[i]);
        if (e > fd_err)
            fd_err = e, worst = c->in_name[i];
    }
    ok(fd_err < 1e-6, "%s: backward vs finite differences, max rel err %.1e (d%s)", c->name,
       fd_err, worst);

    /* float on the same inputs: outputs and every gradient */
    c->run64(c, x, NULL, out, R);
    float *xf[MAXIN], *gf[MAXIN], *Rf = to_f32(R, c->out_n),
          *outf = gk_malloc(c->out_n * sizeof *outf);
    for (int i = 0; i < c->nin; i++) {
        xf[i] = to_f32(x[i], c->in_n[i]);
        gf[i] = gk_calloc(c->in_n[i], sizeof *gf[i]);
    }
    c->run32(c, xf, gf, outf, Rf);
    double *back = gk_malloc(c->out_n * sizeof *back);
    for (size_t e = 0; e < c->out_n; e++)
        back[e] = outf[e];
    double f_err = rel_err(back, out, c->out_n);
    free(back);
    for (int i = 0; i < c->nin; i++) {
        back = gk_malloc(c->in_n[i] * sizeof *back);
        for (size_t e = 0; e < c->in_n[i]; e++)
            back[e] = gf[i][e];
        f_err = fmax(f_err, rel_err(back, g[i], c->in_n[i]));
        free(back);
    }
    ok(f_err < 1e-5, "%s: float agrees with double, max rel err %.1e", c->name, f_err);

    for (int i = 0; i < c->nin; i++) {
        free(x[i]), free(g[i]), free(fd[i]);
        free(xf[i]), free(gf[i]);
    }
    free(R), free(out), free(Rf), free(outf);
}

/* ---- the layers, one pair of runners each ----------------------------------- */

static void linear64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    const double *b = c->nin == 3 ? x[2] : NULL;
    gk_linear_fwd_f64(out, x[0], x[1], b, c->N, c->in, c->out);
    if (g)
        gk_linear_bwd_f64(g[0], g[1], b ? g[2] : NULL, R, x[0], x[1], c->N, c->in, c->out);
}
static void linear32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    const float *b = c->nin == 3 ? x[2] : NULL;
    gk_linear_fwd_f32(out, x[0], x[1], b, c->N, c->in, c->out);
    gk_linear_bwd_f32(g[0], g[1], b ? g[2] : NULL, R, x[0], x[1], c->N, c->in, c->out);
}

static void rmsnorm64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    double *rstd = gk_malloc((size_t)c->N * sizeof *rstd);
    gk_rmsnorm_fwd_f64(out, rstd, x[0], c->N, c->C, GK_RMSNORM_EPS);
    if (g)
        gk_rmsnorm_bwd_f64(g[0], R, out, rstd, c->N, c->C);
    free(rstd);
}
static void rmsnorm32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    float *rstd = gk_malloc((size_t)c->N * sizeof *rstd);
    gk_rmsnorm_fwd_f32(out, rstd, x[0], c->N, c->C, GK_RMSNORM_EPS);
    gk_rmsnorm_bwd_f32(g[0], R, out, rstd, c->N, c->C);
    free(rstd);
}

static void rope64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    size_t nt = (size_t)c->T * c->rope_dims / 2;
    double *ct = gk_malloc(nt * sizeof *ct), *st = gk_malloc(nt * sizeof *st);
    gk_rope_table_f64(ct, st, c->T, c->rope_dims, 10000);
    gk_rope_fwd_f64(out, x[0], ct, st, c->B, c->T, c->H, c->D, c->rope_dims);
    if (g)
        gk_rope_bwd_f64(g[0], R, ct, st, c->B, c->T, c->H, c->D, c->rope_dims);
    free(ct), free(st);
}
static void rope32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    size_t nt = (size_t)c->T * c->rope_dims / 2;
    float *ct = gk_malloc(nt * sizeof *ct), *st = gk_malloc(nt * sizeof *st);
    gk_rope_table_f32(ct, st, c->T, c->rope_dims, 10000);
    gk_rope_fwd_f32(out, x[0], ct, st, c->B, c->T, c->H, c->D, c->rope_dims);
    gk_rope_bwd_f32(g[0], R, ct, st, c->B, c->T, c->H, c->D, c->rope_dims);
    free(ct), free(st);
}

static void attn64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    double *lse = gk_malloc((size_t)c->B * c->T * c->H * sizeof *lse);
    gk_attention_fwd_f64(out, lse, x[0], x[1], x[2], c->B, c->T, c->H, c->KV, c->D);
    if (g)
        gk_attention_bwd_f64(g[0], g[1], g[2], R, out, lse, x[0], x[1], x[2], c->B, c->T,
                             c->H, c->KV, c->D);
    free(lse);
}
static void attn32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    float *lse = gk_malloc((size_t)c->B * c->T * c->H * sizeof *lse);
    gk_attention_fwd_f32(out, lse, x[0], x[1], x[2], c->B, c->T, c->H, c->KV, c->D);
    gk_attention_bwd_f32(g[0], g[1], g[2], R, out, lse, x[0], x[1], x[2], c->B, c->T,
                         c->H, c->KV, c->D);
    free(lse);
}

/* out = y0 + s * x, y0 a fixed random tensor (the residual stream). */
static void scale64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    memcpy(out, c->y0, c->out_n * sizeof *out);
    gk_scale_add_fwd_f64(out, x[0], x[1], c->N, c->C, c->group);
    if (g)
        gk_scale_add_bwd_f64(g[0], g[1], R, x[0], x[1], c->N, c->C, c->group);
}
static void scale32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    for (size_t i = 0; i < c->out_n; i++)
        out[i] = (float)c->y0[i];
    gk_scale_add_fwd_f32(out, x[0], x[1], c->N, c->C, c->group);
    gk_scale_add_bwd_f32(g[0], g[1], R, x[0], x[1], c->N, c->C, c->group);
}

static void act64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    gk_act_fwd_f64(out, x[0], c->N, c->C, c->act);
    if (g)
        gk_act_bwd_f64(g[0], R, x[0], c->N, c->C, c->act);
}
static void act32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    gk_act_fwd_f32(out, x[0], c->N, c->C, c->act);
    gk_act_bwd_f32(g[0], R, x[0], c->N, c->C, c->act);
}

/* out is the one-element mean loss; R[0] is the upstream dloss. The gradient
 * buffers start at zero, so dz overwriting them is the same as adding. */
static void ce64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    out[0] = gk_softcap_ce_f64(g ? g[0] : NULL, NULL, x[0], c->ids, c->N, c->V, c->cap, R[0]);
}
static void ce32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    out[0] = (float)gk_softcap_ce_f32(g[0], NULL, x[0], c->ids, c->N, c->V, c->cap, R[0]);
}

static void embed64(const op_case *c, double **x, double **g, double *out, const double *R)
{
    gk_embed_fwd_f64(out, x[0], c->ids, c->N, c->C);
    if (g)
        gk_embed_bwd_f64(g[0], R, c->ids, c->N, c->C);
}
static void embed32(const op_case *c, float **x, float **g, float *out, const float *R)
{
    gk_embed_fwd_f32(out, x[0], c->ids, c->N, c->C);
    gk_embed_bwd_f32(g[0], R, c->ids, c->N, c->C);
}

/* ---- gradient checks: B=2, T=5 (N=10 rows) throughout ----------------------- */

enum { B = 2, T = 5, N = B * T };

static void test_gradients(void)
{
    int ids[N] = {3, 0, 6, 3, 1, 6, 6, 2, 0, 3}; /* with repeats, for the scatter-add */

    op_case lin = {.name = "linear with bias", .nin = 3, .in_name = {"x", "W", "b"},
                   .N = N, .in = 8, .out = 6, .run64 = linear64, .run32 = linear32};
    lin.in_n[0] = N * 8, lin.in_n[1] = 6 * 8, lin.in_n[2] = 6, lin.out_n = N * 6;
    check(&lin, 1);
    lin.name = "linear without bias", lin.nin = 2;
    check(&lin, 1);

    op_case rms = {.name = "rmsnorm [N,C]", .nin = 1, .in_name = {"x"}, .N = N, .C = 8,
                   .run64 = rmsnorm64, .run32 = rmsnorm32};
    rms.in_n[0] = rms.out_n = N * 8;
    check(&rms, 1);
    rms.name = "rmsnorm per head [N*H,D]", rms.N = N * 4, rms.C = 4;
    rms.in_n[0] = rms.out_n = N * 4 * 4;
    check(&rms, 1);

    op_case rope = {.name = "rope full (D=8, rope_dims=8)", .nin = 1, .in_name = {"x"}, .B = B,
                    .T = T, .H = 3, .D = 8, .rope_dims = 8, .run64 = rope64, .run32 = rope32};
    rope.in_n[0] = rope.out_n = N * 3 * 8;
    check(&rope, 1);
    rope.name = "rope partial (D=8, rope_dims=4)", rope.rope_dims = 4;
    check(&rope, 1);

    op_case att = {.name = "attention GQA (H=4, KV=2, D=4)", .nin = 3, .in_name = {"q", "k", "v"},
                   .B = B, .T = T, .H = 4, .KV = 2, .D = 4, .run64 = attn64, .run32 = attn32};
    att.in_n[0] = att.out_n = N * 4 * 4, att.in_n[1] = att.in_n[2] = N * 2 * 4;
    check(&att, 1);
    att.name = "attention MHA (H=KV=2, D=4)", att.H = 2;
    att.in_n[0] = att.out_n = N * 2 * 4;
    check(&att, 1);

    double *y0 = randn(N * 12, 1);
    op_case sc = {.name = "scale_add per channel [N,8]", .nin = 2, .in_name = {"x", "s"},
                  .N = N, .C = 8, .group = 1, .y0 = y0, .run64 = scale64, .run32 = scale32};
    sc.in_n[0] = sc.out_n = N * 8, sc.in_n[1] = 8;
    check(&sc, 1);
    sc.name = "scale_add per head (q gain) [N,3*4]", sc.C = 12, sc.group = 4;
    sc.in_n[0] = sc.out_n = N * 12, sc.in_n[1] = 3;
    check(&sc, 1);
    free(y0);

    op_case act = {.name = "relu^2", .nin = 1, .in_name = {"x"}, .N = N, .C = 6, .act = GK_OP_RELU2,
                   .run64 = act64, .run32 = act32};
    act.in_n[0] = act.out_n = N * 6;
    check(&act, 1);
    act.name = "leaky_relu(0.5)^2", act.act = GK_OP_LEAKY2;
    check(&act, 1);
    act.name = "swiglu [N,2F] -> [N,F]", act.act = GK_OP_SWIGLU, act.in_n[0] = N * 12;
    check(&act, 2);

    /* cap 2 on logits of scale 3, so the tanh is far from linear */
    op_case ce = {.name = "softcap cross-entropy (cap 2, V=7)", .nin = 1, .N = N, .V = 7,
                  .cap = 2, .ids = ids, .in_name = {"z"}, .run64 = ce64, .run32 = ce32};
    ce.in_n[0] = N * 7, ce.out_n = 1;
    check(&ce, 3);

    op_case emb = {.name = "embedding (vocab 7, C=8)", .nin = 1, .in_name = {"wte"}, .N = N, .C = 8,
                   .ids = ids,                    .run64 = embed64, .run32 = embed32};
    emb.in_n[0] = 7 * 8, emb.out_n = N * 8;
    check(&emb, 1);
}

/* ---- values computed by hand ------------------------------------------------ */

static void test_hand_values(void)
{
    /* rmsnorm of (1,2,3,4): mean square 7.5, eps = float32's machine epsilon */
    const double want_rms[4] = {0.3651483687681722, 0.7302967375363444, 1.0954451063045165,
                                1.4605934750726888};
    double xd[4] = {1, 2, 3, 4}, yd[4], rd;
    float xf[4] = {1, 2, 3, 4}, yf[4], rf;
    gk_rmsnorm_fwd_f64(yd, &rd, xd, 1, 4, GK_RMSNORM_EPS);
    gk_rmsnorm_fwd_f32(yf, &rf, xf, 1, 4, GK_RMSNORM_EPS);
    double e64 = 0, e32 = 0;
    for (int i = 0; i < 4; i++)
        e64 = fmax(e64, fabs(yd[i] - want_rms[i])), e32 = fmax(e32, fabs(yf[i] - want_rms[i]));
    ok(e64 < 1e-15 && e32 < 1e-6, "rmsnorm(1,2,3,4) = (1,2,3,4)/sqrt(7.5+eps) (err %.1e, %.1e)",
       e64, e32);

    /* softcap cross-entropy: z = (0, ln 3) under cap 2 gives logits 2 tanh(z/2)
     * = (0, 1); target 0: loss ln(1 + e); dz = (p - onehot)(1 - tanh^2) with
     * p = (1, e)/(1 + e) and tanh = (0, 1/2). dz aliases z here. */
    const double want_loss = 1.3132616875182228,
                 want_dz[2] = {-0.7310585786300049, 0.5482939339725037};
    int target = 0;
    double zd[2] = {0, log(3.0)}, lrow;
    float zf[2] = {0, logf(3.0f)};
    double ld = gk_softcap_ce_f64(zd, &lrow, zd, &target, 1, 2, 2, 1);
    double lf = gk_softcap_ce_f32(zf, NULL, zf, &target, 1, 2, 2, 1);
    ok(fabs(ld - want_loss) < 1e-14 && fabs(lrow - want_loss) < 1e-14 &&
       fabs(lf - want_loss) < 1e-6, "softcap CE of (0, ln 3), cap 2, target 0 = ln(1+e) "
       "(err %.1e, %.1e)", fabs(ld - want_loss), fabs(lf - want_loss));
    ok(fabs(zd[0] - want_dz[0]) < 1e-14 && fabs(zd[1] - want_dz[1]) < 1e-14 &&
       fabs(zf[0] - want_dz[0]) < 1e-6 && fabs(zf[1] - want_dz[1]) < 1e-6,
       "softcap CE gradient in place: (-e/(1+e), 3/4 e/(1+e))");

    /* rotary at position 1 with base 10000 on a head of 6 channels, rope_dims 4:
     * inv_freq = (1, 1/100), pairs (x0, x2) and (x1, x3), x4 and x5 unrotated:
     * (cos 1 + 3 sin 1, 2 cos .01 + 4 sin .01, -sin 1 + 3 cos 1,
     *  -2 sin .01 + 4 cos .01, 5, 6). */
    const double want_rope[6] = {3.064715260291829, 2.039899334169997, 0.7794359327965228,
                                 3.9798003349983277, 5, 6};
    double ct[4], st[4], xr[12] = {0}, yr[12];
    float ctf[4], stf[4], xrf[12] = {0}, yrf[12];
    for (int i = 0; i < 6; i++)
        xr[6 + i] = xrf[6 + i] = (float)(i + 1); /* position 1 of a sequence of 2 */
    gk_rope_table_f64(ct, st, 2, 4, 10000);
    gk_rope_table_f32(ctf, stf, 2, 4, 10000);
    gk_rope_fwd_f64(yr, xr, ct, st, 1, 2, 1, 6, 4);
    gk_rope_fwd_f32(yrf, xrf, ctf, stf, 1, 2, 1, 6, 4);
    e64 = e32 = 0;
    for (int i = 0; i < 6; i++)
        e64 = fmax(e64, fabs(yr[6 + i] - want_rope[i])),
        e32 = fmax(e32, fabs(yrf[6 + i] - want_rope[i]));
    /* 1e-6, not tighter: the table is float32, as train_gpt.py's */
    ok(e64 < 1e-6 && e32 < 2e-6, "rope of (1..6) at position 1, rope_dims 4 (err %.1e, %.1e)",
       e64, e32);

    /* attention with T = 1: each query sees only its own key, so its output is
     * exactly the value of its kv head (query heads 0,1 -> kv 0; 2,3 -> kv 1) */
    enum { H = 4, KV = 2, D = 3 };
    double *q = randn(2 * H * D, 1), *k = randn(2 * KV * D, 1), *v = randn(2 * KV * D, 1);
    double out[2 * H * D];
    gk_attention_fwd_f64(out, NULL, q, k, v, 2, 1, H, KV, D);
    int same = 1;
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < H; h++)
            same &= memcmp(out + (b * H + h) * D, v + (b * KV + h / 2) * D,
                           D * sizeof *out) == 0;
    ok(same, "attention with T=1 returns the matching kv head's v exactly");
    free(q), free(k), free(v);

    /* T = 2, one head of D = 4: position 0 sees only itself (out = v0); at
     * position 1 the scores are q1.k0 / sqrt(4) = 2/2 = 1 and q1.k1 = 0, so
     * out = (e v0 + v1) / (1 + e) with v0 = e_0, v1 = e_1. */
    double q2[8] = {5, 5, 5, 5, 2, 0, 0, 0}, k2[8] = {1, 0, 0, 0, 0, 0, 0, 0},
           v2[8] = {1, 0, 0, 0, 0, 1, 0, 0}, o2[8];
    const double want_o2[8] = {1, 0, 0, 0, 0.7310585786300049, 0.2689414213699951, 0, 0};
    gk_attention_fwd_f64(o2, NULL, q2, k2, v2, 1, 2, 1, 1, 4);
    e64 = 0;
    for (int i = 0; i < 8; i++)
        e64 = fmax(e64, fabs(o2[i] - want_o2[i]));
    ok(e64 < 1e-15, "attention T=2: causal mask and 1/sqrt(D) scale (err %.1e)", e64);
}

/* ---- same bits on one thread and on several --------------------------------- */

static void test_determinism(void)
{
    enum { Bd = 2, Td = 33, H = 4, KV = 2, D = 8, V = 50 };
    size_t nq = (size_t)Bd * Td * H * D, nk = (size_t)Bd * Td * KV * D,
           nz = (size_t)Bd * Td * V;
    double *src = randn(nq + 2 * nk + nq + nz, 1);
    float *q = to_f32(src, nq), *k = to_f32(src + nq, nk), *v = to_f32(src + nq + nk, nk),
          *dout = to_f32(src + nq + 2 * nk, nq), *z = to_f32(src + 2 * nq + 2 * nk, nz);
    int targets[Bd * Td];
    for (int i = 0; i < Bd * Td; i++)
        targets[i] = (i * 7) % V;
    size_t nres = 2 * nq + 2 * nk + nz + 1;
    float *res[2];
    int threads = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run == 0 ? 1 : 3);
        float *r = res[run] = gk_calloc(nres, sizeof *r);
        float *out = r, *dq = r + nq, *dk = dq + nq, *dv = dk + nk, *dz = dv + nk;
        float lse[Bd * Td * H];
        gk_attention_fwd_f32(out, lse, q, k, v, Bd, Td, H, KV, D);
        gk_attention_bwd_f32(dq, dk, dv, dout, out, lse, q, k, v, Bd, Td, H, KV, D);
        dz[nz] = (float)gk_softcap_ce_f32(dz, NULL, z, targets, Bd * Td, V, 30, 1);
    }
    omp_set_num_threads(threads);
    ok(memcmp(res[0], res[1], nres * sizeof(float)) == 0,
       "attention forward/backward and softcap CE: same bits on 1 and 3 threads");
    free(res[0]), free(res[1]), free(src);
    free(q), free(k), free(v), free(dout), free(z);
}

int main(void)
{
    tap_seed(0x9E3779B97F4A7C15ull);
    double t0 = gk_now();
    test_gradients();
    test_hand_values();
    test_determinism();
    printf("# %.2f s\n", gk_now() - t0);
    return tap_done();
}
