/* optim_test: Muon, Adam, clipping, the LR schedule and the optimizer state
 * of lib/optim.c and lib/schedule.c against straightforward double-precision
 * references written here from train_gpt.py's formulas, on a small layout
 * built by hand (one tensor of each optimizer group, a wide and a tall Muon
 * matrix, and a tensor of a group the optimizer must leave alone). */
#include "optim.h"
#include "schedule.h"
#include "tap.h"

#include <omp.h>

/* The hand-made layout: tensor j has NAMES[j], SHAPES[j] and GROUPS[j]. */
enum { NP = 6 };
static const char *const names[NP] = {"tok_emb.weight", "blocks.0.attn.c_q.weight",
                                      "blocks.0.mlp.fc.weight", "blocks.0.attn_scale",
                                      "blocks.0.moe.router_bias", "lm_head.weight"};
static const int shapes[NP][2] = {{6, 4}, {8, 12}, {12, 8}, {4, 1}, {3, 1}, {6, 4}};
static const int ndims[NP] = {2, 2, 2, 1, 1, 2};
static const gk_param_group groups[NP] = {
    GK_GROUP_EMBED, GK_GROUP_MATRIX, GK_GROUP_MATRIX, GK_GROUP_SCALAR,
    GK_GROUP_BUFFER, GK_GROUP_HEAD};

static gk_param params_tab[NP];

static void make_layout(gk_layout *l)
{
    memset(l, 0, sizeof *l);
    gk_config_defaults(&l->cfg);
    l->cfg.model.tie_embeddings = false;
    l->n_params = NP;
    l->params = params_tab;
    size_t off = 0;
    for (int j = 0; j < NP; j++) {
        gk_param *p = &params_tab[j];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", names[j]);
        p->ndim = ndims[j];
        p->shape[0] = shapes[j][0];
        p->shape[1] = shapes[j][1];
        p->offset = off;
        p->numel = (size_t)shapes[j][0] * shapes[j][1];
        p->group = groups[j];
        off += p->numel;
    }
    l->numel = off;
}

static void fill_normal(float *x, size_t n, double std)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(std * tap_normal());
}

/* Eigenvalues of the symmetric n x n matrix a (destroyed) by cyclic Jacobi. */
static void jacobi_eigen(double *a, int n, double *ev)
{
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                off += a[p * n + q] * a[p * n + q];
        if (off < 1e-22)
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                if (fabs(a[p * n + q]) < 1e-300)
                    continue;
                double th = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q]);
                double t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++)
        ev[i] = a[i * n + i];
}

/* Smallest and largest singular value of x [r, c] (r <= c) from the
 * eigenvalues of x x^T. */
static void sv_range(const float *x, int r, int c, double *lo, double *hi)
{
    double *g = calloc((size_t)r * r, sizeof *g), *ev = malloc((size_t)r * sizeof *ev);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++)
            for (int k = 0; k < c; k++)
                g[i * r + j] += (double)x[i * c + k] * x[j * c + k];
    jacobi_eigen(g, r, ev);
    *lo = INFINITY, *hi = 0;
    for (int i = 0; i < r; i++) {
        double s = sqrt(fmax(ev[i], 0));
        *lo = fmin(*lo, s), *hi = fmax(*hi, s);
    }
    free(g);
    free(ev);
}

static void test_newton_schulz(void)
{
    /* The quintic maps any singular value in [0.02, 1] into [0.6818, 1.1344]
     * after 5 iterations (iterating a x + b x^3 + c x^5 on a fine grid); a
     * random 32 x 96 matrix divided by its norm has them in about [0.07, 0.3]. */
    enum { R = 32, C = 96 };
    float *x = malloc(R * C * sizeof *x), *t = malloc(R * C * sizeof *t);
    float *work = malloc(gk_newton_schulz_work(C, R) * sizeof *work);
    tap_seed(1);
    fill_normal(x, R * C, 1);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            t[j * R + i] = x[i * C + j];
    gk_newton_schulz(x, R, C, 5, work);
    double lo, hi;
    sv_range(x, R, C, &lo, &hi);
    ok(lo >= 0.681 && hi <= 1.135, "NS5 of a wide 32x96 matrix: singular values in [%.4f, %.4f]",
       lo, hi);
    gk_newton_schulz(t, C, R, 5, work); /* the tall transpose: the same result transposed */
    double err = 0;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            err = fmax(err, fabs(t[j * R + i] - x[i * C + j]));
    ok(err < 1e-5, "NS5 of the tall 96x32 transpose is the transpose (max diff %.2g)", err);

    /* More iterations stay in the band: it is the quintic's attracting cycle. */
    tap_seed(1);
    fill_normal(x, R * C, 1);
    gk_newton_schulz(x, R, C, 12, work);
    sv_range(x, R, C, &lo, &hi);
    ok(lo >= 0.681 && hi <= 1.135, "NS12: singular values still in [%.4f, %.4f]", lo, hi);
    memset(x, 0, R * C * sizeof *x);
    gk_newton_schulz(x, R, C, 5, work);
    int zero = 1;
    for (int i = 0; i < R * C; i++)
        zero &= x[i] == 0;
    ok(zero, "NS5 of a zero matrix is zero (eps keeps it finite)");
    free(x), free(t), free(work);
}

/* train_gpt.py's Muon for one matrix, all in double: momentum, nesterov,
 * Newton-Schulz with the transpose, the scale, p -= lr update. */
static void ref_ns(double *x, int r, int c, int steps)
{
    int tall = r > c, m = tall ? c : r, n = tall ? r : c;
    double *X = malloc((size_t)m * n * sizeof *X), *A = malloc((size_t)m * m * sizeof *A);
    double *B = malloc((size_t)m * m * sizeof *B), *Y = malloc((size_t)m * n * sizeof *Y);
    double norm = 0;
    for (int i = 0; i < r * c; i++)
        norm += x[i] * x[i];
    norm = sqrt(norm) + 1e-7;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            X[tall ? j * n + i : i * n + j] = x[i * c + j] / norm;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double a = 0;
                for (int k = 0; k < n; k++)
                    a += X[i * n + k] * X[j * n + k];
                A[i * m + j] = a;
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double aa = 0;
                for (int k = 0; k < m; k++)
                    aa += A[i * m + k] * A[k * m + j];
                B[i * m + j] = -4.7750 * A[i * m + j] + 2.0315 * aa;
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double bx = 0;
                for (int k = 0; k < m; k++)
                    bx += B[i * m + k] * X[k * n + j];
                Y[i * n + j] = 3.4445 * X[i * n + j] + bx;
            }
        memcpy(X, Y, (size_t)m * n * sizeof *X);
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            x[i * c + j] = X[tall ? j * n + i : i * n + j];
    free(X), free(A), free(B), free(Y);
}

static void test_muon(void)
{
    gk_layout l;
    make_layout(&l);
    l.cfg.train.muon_momentum_warmup_steps = 2; /* momentum 0.85, 0.9, 0.95 */
    gk_optim *o = gk_optim_new(&l);
    ok(gk_optim_muon_count(o) == 2 && gk_optim_muon_numel(o) == 192 &&
           gk_optim_muon_offset(o, 1) == 96,
       "two Muon matrices in a flat update buffer of 192");
    float *p = malloc(l.numel * sizeof *p), *g = malloc(l.numel * sizeof *g);
    float *p0 = malloc(l.numel * sizeof *p0);
    tap_seed(2);
    fill_normal(p, l.numel, 0.1);
    memcpy(p0, p, l.numel * sizeof *p);
    const double scales[3] = {1.0, 0.5, 0.25};
    double err = 0;
    for (int mi = 1; mi <= 2; mi++) {
        const gk_param *q = &l.params[mi];
        int r = q->shape[0], c = q->shape[1], n = r * c;
        double *w = malloc(n * sizeof *w), *buf = calloc(n, sizeof *buf);
        double *u = malloc(n * sizeof *u), *gr = malloc(n * sizeof *gr);
        for (int i = 0; i < n; i++)
            w[i] = p0[q->offset + i];
        /* Every matrix sees the same gradients as in the optimizer run below. */
        tap_seed(3);
        for (int s = 0; s < 3; s++) {
            fill_normal(g, l.numel, 1);
            double mu = s == 0 ? 0.85 : s == 1 ? 0.9 : 0.95;
            for (int i = 0; i < n; i++) {
                gr[i] = g[q->offset + i];
                buf[i] = mu * buf[i] + gr[i];
                u[i] = gr[i] + mu * buf[i];
            }
            ref_ns(u, r, c, 5);
            double sc = sqrt(fmax(1.0, (double)r / c)), lr = 0.04 * scales[s];
            for (int i = 0; i < n; i++)
                w[i] -= lr * sc * u[i];
        }
        /* the optimizer's run, from the same start */
        if (mi == 1) {
            tap_seed(3);
            for (int s = 0; s < 3; s++) {
                fill_normal(g, l.numel, 1);
                gk_optim_step(o, p, g, scales[s]);
            }
        }
        for (int i = 0; i < n; i++)
            err = fmax(err, fabs(w[i] - p[q->offset + i]));
        free(w), free(buf), free(u), free(gr);
    }
    ok(err < 1e-5, "Muon (nesterov, NS5, scale, momentum warmup) matches double over 3 steps "
                   "for a wide and a tall matrix (max diff %.2g)", err);
    ok(gk_optim_steps(o) == 3, "three steps counted");
    gk_optim_free(o);

    /* Without nesterov the direction is the buffer: at the first step the
     * gradient itself, where nesterov gives (1 + mu) g; NS5 of both is the
     * same up to rounding, since it divides by the norm first. */
    l.cfg.train.muon_nesterov = false;
    o = gk_optim_new(&l);
    float *u = malloc(96 * sizeof *u), *u2 = malloc(96 * sizeof *u2);
    float *work = malloc((96 + gk_newton_schulz_work(8, 12)) * sizeof *work);
    tap_seed(8);
    fill_normal(g, l.numel, 1);
    gk_optim_muon_update(o, 0, g, 0.9, u);
    gk_optim_muon_update(o, 0, g, 0.9, u2); /* buf = 0.9 g + g = 1.9 g */
    memcpy(work, g + l.params[1].offset, 96 * sizeof *g);
    gk_newton_schulz(work, 8, 12, 5, work + 96);
    double d = 0;
    for (int i = 0; i < 96; i++)
        d = fmax(d, fmax(fabs(u[i] - work[i]), fabs(u2[i] - work[i])));
    ok(d < 1e-6, "nesterov off: the update is NS5 of the momentum buffer (max diff %.2g)", d);
    free(u), free(u2), free(work);
    gk_optim_free(o);
    l.cfg.train.muon_nesterov = true;

    /* Decoupled weight decay: p (1 - lr wd) - lr u; a zero gradient makes u 0. */
    l.cfg.train.muon_weight_decay = 0.5;
    o = gk_optim_new(&l);
    for (size_t i = 0; i < l.numel; i++)
        p[i] = 1, g[i] = 0;
    gk_optim_step(o, p, g, 0.5);
    ok(p[l.params[1].offset] == (float)(1 - 0.04 * 0.5 * 0.5) && p[0] == 1,
       "Muon weight decay scales the matrix by 1 - lr wd (%.6f), and only the matrix",
       p[l.params[1].offset]);
    gk_optim_free(o);
    free(p), free(g), free(p0);
}

static void test_adam(void)
{
    gk_layout l;
    make_layout(&l);
    l.cfg.train.beta1 = 0.8, l.cfg.train.beta2 = 0.9, l.cfg.train.adam_eps = 1e-3;
    gk_optim *o = gk_optim_new(&l);
    float *p = malloc(l.numel * sizeof *p), *g = malloc(l.numel * sizeof *g);
    float *p0 = malloc(l.numel * sizeof *p0);
    tap_seed(4);
    fill_normal(p, l.numel, 1);
    memcpy(p0, p, l.numel * sizeof *p);
    const double lrs[3] = {0.6, 0.04, 0.008}; /* embed (untied), scalar, head */
    const int idx[3] = {0, 3, 5};
    double err = 0;
    double m[24] = {0}, v[24] = {0}, w[3][24], gs[3][3][24];
    tap_seed(5);
    for (int s = 0; s < 3; s++) {
        fill_normal(g, l.numel, 1);
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < l.params[idx[k]].numel; i++)
                gs[s][k][i] = g[l.params[idx[k]].offset + i];
        gk_optim_step(o, p, g, 1.0 - 0.25 * s);
    }
    for (int k = 0; k < 3; k++) {
        const gk_param *q = &l.params[idx[k]];
        memset(m, 0, sizeof m), memset(v, 0, sizeof v);
        for (size_t i = 0; i < q->numel; i++)
            w[k][i] = p0[q->offset + i];
        for (int t = 1; t <= 3; t++) {
            double lr = lrs[k] * (1.0 - 0.25 * (t - 1));
            for (size_t i = 0; i < q->numel; i++) {
                double gi = gs[t - 1][k][i];
                m[i] = 0.8 * m[i] + 0.2 * gi;
                v[i] = 0.9 * v[i] + 0.1 * gi * gi;
                double mh = m[i] / (1 - pow(0.8, t)), vh = v[i] / (1 - pow(0.9, t));
                w[k][i] -= lr * mh / (sqrt(vh) + 1e-3);
            }
        }
        for (size_t i = 0; i < q->numel; i++)
            err = fmax(err, fabs(w[k][i] - p[q->offset + i]) / fmax(1, fabs(w[k][i])));
    }
    ok(err < 1e-6, "Adam (embed, scalar, head lrs; bias correction) matches double over 3 "
                   "steps (max rel diff %.2g)", err);
    int same = 1;
    for (size_t i = 0; i < l.params[4].numel; i++)
        same &= p[l.params[4].offset + i] == p0[l.params[4].offset + i];
    ok(same, "the buffer tensor is left alone by the step");
    gk_optim_free(o);

    /* Tied embeddings use tied_embed_lr; AdamW decay multiplies by 1 - lr wd. */
    l.cfg.model.tie_embeddings = true;
    l.cfg.train.adam_weight_decay = 0.1;
    o = gk_optim_new(&l);
    for (size_t i = 0; i < l.numel; i++)
        p[i] = 2, g[i] = 1;
    gk_optim_step(o, p, g, 1.0);
    /* first step: m_hat = 1, v_hat = 1, so p = 2 (1 - lr wd) - lr / (1 + eps) */
    double want = 2 * (1 - 0.05 * 0.1) - 0.05 / (1 + 1e-3);
    ok(fabs(p[0] - want) < 1e-6, "tied embedding: lr tied_embed_lr with AdamW decay (%.7f vs "
                                 "%.7f)", p[0], want);
    gk_optim_free(o);
    free(p), free(g), free(p0);
}

static void test_clip(void)
{
    gk_layout l;
    make_layout(&l);
    float *g = malloc(l.numel * sizeof *g);
    for (size_t i = 0; i < l.numel; i++)
        g[i] = 0;
    g[l.params[0].offset] = 3, g[l.params[1].offset + 5] = 4; /* norm 5 */
    g[l.params[4].offset] = 100;                              /* a buffer: not counted */
    gk_optim *o = gk_optim_new(&l);
    double n = gk_optim_clip(o, g);
    ok(n == 5 && g[l.params[0].offset] == 3, "clip off (0): norm %g returned, grads kept", n);
    gk_optim_free(o);
    l.cfg.train.grad_clip_norm = 1;
    o = gk_optim_new(&l);
    n = gk_optim_clip(o, g);
    float f = (float)(1 / (5 + 1e-6));
    ok(n == 5 && g[l.params[0].offset] == 3 * f && g[l.params[1].offset + 5] == 4 * f &&
           g[l.params[4].offset] == 100,
       "clip to 1: grads times 1/(5 + 1e-6), the buffer untouched");
    gk_optim_free(o);
    /* (Clipping again to 1 would scale again: norm + 1e-6 exceeds 1, as in torch.) */
    l.cfg.train.grad_clip_norm = 1.5;
    o = gk_optim_new(&l);
    n = gk_optim_clip(o, g);
    ok(fabs(n - 1) < 1e-6 && g[l.params[0].offset] == 3 * f,
       "a norm under the limit (%.8f < 1.5) is left alone", n);
    gk_optim_free(o);
    free(g);
}

static void test_schedule(void)
{
    gk_config c;
    gk_config_defaults(&c);
    ok(gk_muon_momentum(&c, 0) == 0.85 && fabs(gk_muon_momentum(&c, 250) - 0.9) < 1e-12 &&
           gk_muon_momentum(&c, 500) == 0.95 && gk_muon_momentum(&c, 9000) == 0.95,
       "momentum warmup 0.85 -> 0.95 over 500 steps");
    c.train.muon_momentum_warmup_steps = 0;
    ok(gk_muon_momentum(&c, 0) == 0.95, "no momentum warmup: 0.95 from step 0");

    /* By steps: N = 20000, D = 1200. */
    c.train.max_seconds = 0;
    ok(gk_schedule_clock(&c) == GK_CLOCK_STEPS, "auto clock without a cap: steps");
    ok(gk_lr_scale(&c, 0, 0) == 1 && gk_lr_scale(&c, 18799, 0) == 1 &&
           gk_lr_scale(&c, 18800, 0) == 1 && gk_lr_scale(&c, 19400, 0) == 0.5 &&
           gk_lr_scale(&c, 19999, 0) == 1.0 / 1200 && gk_lr_scale(&c, 20000, 0) == 0,
       "linear warmdown by steps: 1, 1 at 18800, 0.5 at 19400, 1/1200 at 19999, 0 at the end");
    c.train.lr_final_scale = 0.1;
    ok(fabs(gk_lr_scale(&c, 19400, 0) - 0.55) < 1e-15, "with lr_final_scale 0.1: 0.55 halfway");
    c.train.lr_final_scale = 0;
    c.train.warmdown_steps = 0;
    ok(gk_lr_scale(&c, 19999, 0) == 1, "warmdown_steps 0: constant 1");

    /* By wall clock: T = 600 s, D = 1200 steps. At step 1000 after 300 s the
     * window is 1200 * 0.3 = 360 s > 300 left: scale 300/360. */
    gk_config_defaults(&c);
    ok(gk_schedule_clock(&c) == GK_CLOCK_WALLCLOCK, "auto clock with max_seconds 600: wallclock");
    ok(gk_lr_scale(&c, 0, 0) == 1 && gk_lr_scale(&c, 4000, 240) == 1,
       "wallclock: 1 while the time left exceeds the window (4000 steps in 240 s: 72 s < 360)");
    ok(fabs(gk_lr_scale(&c, 1000, 300) - 300.0 / 360) < 1e-15 &&
           gk_lr_scale(&c, 1000, 600) == 0 && gk_lr_scale(&c, 1000, 700) == 0,
       "wallclock: remaining / window = %.6f at step 1000 and 300 s, 0 at and past the cap",
       gk_lr_scale(&c, 1000, 300));
    c.train.schedule_clock = GK_CLOCK_STEPS;
    ok(gk_lr_scale(&c, 1000, 300) == 1, "schedule_clock steps overrides the cap");

    /* Cosine with warmup: N = 1100, W = 100. */
    gk_config_defaults(&c);
    c.train.lr_schedule = GK_SCHED_COSINE, c.train.schedule_clock = GK_CLOCK_STEPS;
    c.train.steps = 1100, c.train.lr_warmup_steps = 100, c.train.lr_final_scale = 0.1;
    ok(gk_lr_scale(&c, 0, 0) == 0.01 && gk_lr_scale(&c, 49, 0) == 0.5 &&
           gk_lr_scale(&c, 99, 0) == 1,
       "warmup: (step + 1) / 100 times the schedule: 0.01, 0.5, 1");
    ok(gk_lr_scale(&c, 100, 0) == 1 && fabs(gk_lr_scale(&c, 600, 0) - 0.55) < 1e-15 &&
           fabs(gk_lr_scale(&c, 1100, 0) - 0.1) < 1e-15,
       "cosine by steps: 1 after warmup, 0.55 halfway, 0.1 at the end");
    c.train.schedule_clock = GK_CLOCK_WALLCLOCK, c.train.max_seconds = 100;
    c.train.lr_warmup_steps = 0;
    ok(fabs(gk_lr_scale(&c, 7, 25) - (0.1 + 0.9 * 0.5 * (1 + cos(M_PI / 4)))) < 1e-15,
       "cosine by wall clock: progress elapsed / max_seconds");
    c.train.lr_schedule = GK_SCHED_CONSTANT, c.train.lr_warmup_steps = 4;
    ok(gk_lr_scale(&c, 1, 99) == 0.5 && gk_lr_scale(&c, 4, 99) == 1,
       "constant with warmup: 0.5 at step 1 of 4, then 1");
}

static void run_steps(gk_optim *o, float *p, float *g, size_t n, int from, int to)
{
    for (int s = from; s < to; s++) {
        tap_seed(100 + (uint64_t)s);
        fill_normal(g, n, 1);
        gk_optim_clip(o, g);
        gk_optim_step(o, p, g, 1.0 - 0.1 * s);
    }
}

static void test_state(void)
{
    gk_layout l;
    make_layout(&l);
    l.cfg.train.grad_clip_norm = 3;
    l.cfg.train.muon_momentum_warmup_steps = 3;
    float *p1 = malloc(l.numel * sizeof *p1), *p2 = malloc(l.numel * sizeof *p2);
    float *g = malloc(l.numel * sizeof *g);
    tap_seed(6);
    fill_normal(p1, l.numel, 0.1);
    memcpy(p2, p1, l.numel * sizeof *p1);

    gk_optim *a = gk_optim_new(&l);
    run_steps(a, p1, g, l.numel, 0, 4);

    gk_optim *b = gk_optim_new(&l), *c = gk_optim_new(&l);
    run_steps(b, p2, g, l.numel, 0, 2);
    int n = gk_optim_state_count(b);
    ok(n == 2 + 2 * 3, "state tensors: 2 Muon buffers + m, v of 3 Adam tensors (%d)", n);
    gk_optim_state s0 = gk_optim_state_get(b, 0), s1 = gk_optim_state_get(b, 1),
                   s2 = gk_optim_state_get(b, 2), s7 = gk_optim_state_get(b, 7);
    ok(!strcmp(s0.name, "optim.adam_m.tok_emb.weight") &&
           !strcmp(s1.name, "optim.adam_v.tok_emb.weight") &&
           !strcmp(s2.name, "optim.muon_buf.blocks.0.attn.c_q.weight") &&
           !strcmp(s7.name, "optim.adam_v.lm_head.weight") && s2.numel == 96 &&
           s2.param == &l.params[1],
       "state names and sizes: %s, %s, %s, %s", s0.name, s1.name, s2.name, s7.name);
    for (int i = 0; i < n; i++) {
        gk_optim_state from = gk_optim_state_get(b, i), to = gk_optim_state_get(c, i);
        memcpy(to.data, from.data, from.numel * sizeof *from.data);
    }
    gk_optim_set_steps(c, gk_optim_steps(b));
    gk_optim_free(b);
    run_steps(c, p2, g, l.numel, 2, 4);
    ok(!memcmp(p1, p2, l.numel * sizeof *p1),
       "4 steps equal 2 steps + state copied into a fresh optimizer + 2 steps, bitwise");
    int same = 1;
    for (int i = 0; i < n; i++) {
        gk_optim_state x = gk_optim_state_get(a, i), y = gk_optim_state_get(c, i);
        same &= !memcmp(x.data, y.data, x.numel * sizeof *x.data);
    }
    ok(same && gk_optim_steps(a) == 4 && gk_optim_steps(c) == 4, "and so is the state");
    gk_optim_free(a), gk_optim_free(c);
    free(p1), free(p2), free(g);
}

/* Tensors large enough for the parallel loops and chunked sums (PAR_MIN),
 * stepped on 1 OpenMP thread, on 4, and on 4 again. Our loops sum in fixed
 * chunks, so the Adam tensor (our loops alone) and the clip come out the
 * same bytes on 1 and 4 threads. The Muon tensor's Newton-Schulz runs
 * through OpenBLAS, which follows OpenMP's thread count, and some of its
 * sgemm kernels (Haswell's and Zen's, not SkylakeX's) sum in another order
 * on another thread count: that tensor agrees within float rounding of its
 * update, and bit for bit between two runs on the same count. */
static void test_threads(void)
{
    static gk_param big[2];
    gk_layout l;
    memset(&l, 0, sizeof l);
    gk_config_defaults(&l.cfg);
    l.cfg.train.grad_clip_norm = 1;
    l.n_params = 2;
    l.params = big;
    const int sh[2][2] = {{256, 512}, {1024, 96}};
    for (int j = 0; j < 2; j++) {
        memset(&big[j], 0, sizeof big[j]);
        snprintf(big[j].name, sizeof big[j].name, "t%d", j);
        big[j].ndim = 2, big[j].shape[0] = sh[j][0], big[j].shape[1] = sh[j][1];
        big[j].offset = l.numel, big[j].numel = (size_t)sh[j][0] * sh[j][1];
        big[j].group = j ? GK_GROUP_EMBED : GK_GROUP_MATRIX;
        l.numel += big[j].numel;
    }
    const int threads[3] = {1, 4, 4};
    float *p[3], *p0 = malloc(l.numel * sizeof *p0), *g = malloc(l.numel * sizeof *g);
    tap_seed(7);
    fill_normal(p0, l.numel, 0.1);
    for (int r = 0; r < 3; r++) {
        omp_set_num_threads(threads[r]);
        p[r] = malloc(l.numel * sizeof *p[r]);
        memcpy(p[r], p0, l.numel * sizeof *p0);
        gk_optim *o = gk_optim_new(&l);
        run_steps(o, p[r], g, l.numel, 0, 2);
        gk_optim_free(o);
    }
    size_t m = big[1].offset; /* the Muon tensor, then the Adam one */
    ok(!memcmp(p[1], p[2], l.numel * sizeof *g), "two runs on 4 OpenMP threads give the same bytes");
    ok(!memcmp(p[0] + m, p[1] + m, (l.numel - m) * sizeof *g),
       "the Adam tensor: the same bytes on 1 and 4 threads");
    double diff = 0, step = 0;
    for (size_t i = 0; i < m; i++) {
        diff = fmax(diff, fabs((double)p[0][i] - p[1][i]));
        step = fmax(step, fabs((double)p[1][i] - p0[i]));
    }
    ok(step > 0 && diff <= 1e-4 * step,
       "the Muon tensor on 1 and 4 threads: max difference %.3g, %.3g of the largest update "
       "(bound 1e-4)", diff, diff / step);
    free(p[0]), free(p[1]), free(p[2]), free(p0), free(g);
}

int main(void)
{
    test_newton_schulz();
    test_muon();
    test_adam();
    test_clip();
    test_schedule();
    test_state();
    test_threads();
    return tap_done();
}
