/* optim: Muon, Adam and global-norm clipping over the model's parameter
 * buffer (the contract is in optim.h). The state is kept compact per
 * optimizer: Muon's momentum buffers lie back to back in layout order, in the
 * same order as the flat update buffer train_gpt.py's Muon all-reduces, and
 * Adam's moments likewise, so a checkpoint sees one contiguous tensor per
 * parameter and no memory is spent on the other groups. */
#include "optim.h"

#include "schedule.h"
#include "util.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* train_gpt.py's zeropower_via_newtonschulz5 coefficients and epsilon. */
#define NS_A 3.4445f
#define NS_B -4.7750f
#define NS_C 2.0315f
#define NS_EPS 1e-7

/* Element-wise loops go parallel from this length (threads cost more below). */
#define PAR_MIN 32768
/* Sums run over chunks of this many elements, each summed in order and the
 * chunk sums added in order: the same result for any number of threads. */
#define SUM_CHUNK 16384

enum { ST_MUON, ST_ADAM_M, ST_ADAM_V };

struct gk_optim {
    const gk_layout *l;
    int64_t steps;
    /* Muon: matrix k is tensor muon_param[k], at muon_off[k] in the flat buffers. */
    int n_muon;
    int *muon_param;
    size_t *muon_off, muon_numel;
    float *muon_buf; /* momentum buffers */
    float *muon_upd; /* the flat update of one step */
    float *ns_work;
    /* Adam: tensor adam_param[k] at adam_off[k] in the moment buffers. */
    int n_adam;
    int *adam_param;
    size_t *adam_off, adam_numel;
    float *adam_m, *adam_v;
    /* State tensors for checkpoints: kind and index into muon_* or adam_*. */
    int n_state;
    int *state_kind, *state_idx;
};

/* Whether the optimizer trains tensors of group G: the four groups of
 * train_gpt.py's optimizers. Buffers (the router's load bias) are moved by
 * their own rule, never by a gradient, and torch's clip_grad_norm_ sees only
 * parameters, so they are neither stepped nor clipped. No default case: a new
 * group must be placed here (-Wswitch says so). */
static int is_trained(gk_param_group g)
{
    switch (g) {
    case GK_GROUP_MATRIX:
    case GK_GROUP_EMBED:
    case GK_GROUP_HEAD:
    case GK_GROUP_SCALAR:
        return 1;
    case GK_GROUP_BUFFER:
        return 0;
    }
    return 0;
}

static double sumsq(const float *x, size_t n)
{
    size_t nc = (n + SUM_CHUNK - 1) / SUM_CHUNK;
    double *part = gk_malloc((nc ? nc : 1) * sizeof *part);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t k = 0; k < nc; k++) {
        size_t end = (k + 1) * SUM_CHUNK < n ? (k + 1) * SUM_CHUNK : n;
        double s = 0;
        for (size_t i = k * SUM_CHUNK; i < end; i++)
            s += (double)x[i] * x[i];
        part[k] = s;
    }
    double s = 0;
    for (size_t k = 0; k < nc; k++)
        s += part[k];
    free(part);
    return s;
}

static size_t min_side(int rows, int cols)
{
    return (size_t)(rows < cols ? rows : cols);
}

size_t gk_newton_schulz_work(int rows, int cols)
{
    size_t m = min_side(rows, cols);
    return (size_t)rows * (size_t)cols + 2 * m * m;
}

/* In the orientation train_gpt.py uses, X is [m, n] with m <= n (it transposes
 * a tall matrix) and each iteration is A = X X^T, B = b A + c A A,
 * X = a X + B X. For a tall x [rows, cols] we keep x's own layout, which holds
 * X^T, and compute the same products transposed: A = x^T x and
 * x = a x + x B^T, so no transposed copy is made. */
void gk_newton_schulz(float *x, int rows, int cols, int steps, float *work)
{
    size_t n = (size_t)rows * (size_t)cols;
    int m = (int)min_side(rows, cols);
    int tall = rows > cols;
    float *y = work, *a = work + n, *b = a + (size_t)m * m;

    float d = (float)(sqrt(sumsq(x, n)) + NS_EPS);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] /= d;

    for (int s = 0; s < steps; s++) {
        if (tall)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, m, rows, 1.0f, x, cols, x,
                        cols, 0.0f, a, m);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, cols, 1.0f, x, cols, x,
                        cols, 0.0f, a, m);
        memcpy(b, a, (size_t)m * m * sizeof *b);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, NS_C, a, m, a, m, NS_B,
                    b, m);
        memcpy(y, x, n * sizeof *y);
        if (tall)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, cols, 1.0f, x, cols,
                        b, m, NS_A, y, cols);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, rows, 1.0f, b, m,
                        x, cols, NS_A, y, cols);
        memcpy(x, y, n * sizeof *x);
    }
}

gk_optim *gk_optim_new(const gk_layout *l)
{
    gk_optim *o = gk_calloc(1, sizeof *o);
    o->l = l;
    int np = l->n_params;
    o->muon_param = gk_malloc((size_t)(np ? np : 1) * sizeof *o->muon_param);
    o->muon_off = gk_malloc((size_t)(np ? np : 1) * sizeof *o->muon_off);
    o->adam_param = gk_malloc((size_t)(np ? np : 1) * sizeof *o->adam_param);
    o->adam_off = gk_malloc((size_t)(np ? np : 1) * sizeof *o->adam_off);
    o->state_kind = gk_malloc((size_t)(2 * np + 1) * sizeof *o->state_kind);
    o->state_idx = gk_malloc((size_t)(2 * np + 1) * sizeof *o->state_idx);
    size_t work = 0;
    for (int j = 0; j < np; j++) {
        const gk_param *p = &l->params[j];
        if (!is_trained(p->group))
            continue;
        if (p->group == GK_GROUP_MATRIX) {
            if (p->ndim != 2)
                gk_die("optim: %s is in Muon's group but has %d dimensions, not 2", p->name,
                       p->ndim);
            size_t w = gk_newton_schulz_work(p->shape[0], p->shape[1]);
            work = w > work ? w : work;
            o->state_kind[o->n_state] = ST_MUON;
            o->state_idx[o->n_state++] = o->n_muon;
            o->muon_param[o->n_muon] = j;
            o->muon_off[o->n_muon++] = o->muon_numel;
            o->muon_numel += p->numel;
        } else {
            o->state_kind[o->n_state] = ST_ADAM_M;
            o->state_idx[o->n_state++] = o->n_adam;
            o->state_kind[o->n_state] = ST_ADAM_V;
            o->state_idx[o->n_state++] = o->n_adam;
            o->adam_param[o->n_adam] = j;
            o->adam_off[o->n_adam++] = o->adam_numel;
            o->adam_numel += p->numel;
        }
    }
    o->muon_buf = gk_calloc(o->muon_numel + 1, sizeof *o->muon_buf);
    o->muon_upd = gk_calloc(o->muon_numel + 1, sizeof *o->muon_upd);
    o->ns_work = gk_calloc(work + 1, sizeof *o->ns_work);
    o->adam_m = gk_calloc(o->adam_numel + 1, sizeof *o->adam_m);
    o->adam_v = gk_calloc(o->adam_numel + 1, sizeof *o->adam_v);
    return o;
}

void gk_optim_free(gk_optim *o)
{
    if (!o)
        return;
    free(o->muon_param);
    free(o->muon_off);
    free(o->muon_buf);
    free(o->muon_upd);
    free(o->ns_work);
    free(o->adam_param);
    free(o->adam_off);
    free(o->adam_m);
    free(o->adam_v);
    free(o->state_kind);
    free(o->state_idx);
    free(o);
}

double gk_optim_clip(const gk_optim *o, float *grads)
{
    const gk_layout *l = o->l;
    double max = l->cfg.train.grad_clip_norm;
    /* torch's clip_grad_norm_ takes the norm of the per-tensor norms; the sum
     * of squares per tensor, added in layout order, is the same quantity. */
    double ss = 0;
    for (int j = 0; j < l->n_params; j++)
        if (is_trained(l->params[j].group))
            ss += sumsq(grads + l->params[j].offset, l->params[j].numel);
    double norm = sqrt(ss);
    if (max <= 0)
        return norm;
    double coef = max / (norm + 1e-6);
    if (coef < 1) {
        float f = (float)coef;
        for (int j = 0; j < l->n_params; j++) {
            const gk_param *p = &l->params[j];
            if (!is_trained(p->group))
                continue;
            float *g = grads + p->offset;
#pragma omp parallel for schedule(static) if (p->numel > PAR_MIN)
            for (size_t i = 0; i < p->numel; i++)
                g[i] *= f;
        }
    }
    return norm;
}

int gk_optim_muon_count(const gk_optim *o) { return o->n_muon; }
size_t gk_optim_muon_numel(const gk_optim *o) { return o->muon_numel; }
size_t gk_optim_muon_offset(const gk_optim *o, int k) { return o->muon_off[k]; }

/* train_gpt.py's Muon.step for one parameter: buf.mul_(momentum).add_(g),
 * g.add(buf, alpha=momentum) when nesterov, zeropower_via_newtonschulz5, and
 * the scale max(1, rows / cols) ** 0.5 of its "scale correction". */
void gk_optim_muon_update(gk_optim *o, int k, const float *grads, double momentum,
                          float *update)
{
    const gk_param *p = &o->l->params[o->muon_param[k]];
    const float *g = grads + p->offset;
    float *buf = o->muon_buf + o->muon_off[k];
    float mu = (float)momentum;
    int nesterov = o->l->cfg.train.muon_nesterov;
    size_t n = p->numel;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        buf[i] = mu * buf[i] + g[i];
        update[i] = nesterov ? g[i] + mu * buf[i] : buf[i];
    }
    int rows = p->shape[0], cols = p->shape[1];
    gk_newton_schulz(update, rows, cols, o->l->cfg.train.muon_backend_steps, o->ns_work);
    if (rows > cols) {
        float s = (float)sqrt((double)rows / cols);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            update[i] *= s;
    }
}

/* train_gpt.py's p.add_(g, alpha=-lr) after the all-reduce, with the
 * decoupled decay of the records' Muon (p.mul_(1 - lr * wd)) first. */
void gk_optim_muon_apply(const gk_optim *o, float *params, const float *updates,
                         double lr_scale)
{
    const gk_config *c = &o->l->cfg;
    double lr = c->train.matrix_lr * lr_scale;
    float neg_lr = (float)-lr, decay = (float)(1 - lr * c->train.muon_weight_decay);
    int wd = c->train.muon_weight_decay > 0;
    for (int k = 0; k < o->n_muon; k++) {
        const gk_param *p = &o->l->params[o->muon_param[k]];
        float *w = params + p->offset;
        const float *u = updates + o->muon_off[k];
#pragma omp parallel for schedule(static) if (p->numel > PAR_MIN)
        for (size_t i = 0; i < p->numel; i++) {
            float x = wd ? w[i] * decay : w[i];
            w[i] = x + neg_lr * u[i];
        }
    }
}

static double adam_lr(const gk_config *c, gk_param_group g)
{
    switch (g) {
    case GK_GROUP_EMBED:
        return c->model.tie_embeddings ? c->train.tied_embed_lr : c->train.embed_lr;
    case GK_GROUP_HEAD:
        return c->train.head_lr;
    default:
        return c->train.scalar_lr;
    }
}

void gk_adam_step(float *w, const float *g, float *m, float *v, size_t n, double lr,
                  double b1, double b2, double eps, double wd, int64_t t)
{
    double decay = 1 - lr * wd;
    double step_size = lr / (1 - pow(b1, (double)t));
    double bc2_sqrt = sqrt(1 - pow(b2, (double)t));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        double gi = g[i];
        m[i] = (float)(b1 * m[i] + (1 - b1) * gi);
        v[i] = (float)(b2 * v[i] + (1 - b2) * gi * gi);
        double x = (double)w[i] * decay;
        x -= step_size * m[i] / (sqrt((double)v[i]) / bc2_sqrt + eps);
        w[i] = (float)x;
    }
}

void gk_optim_step(gk_optim *o, float *params, const float *grads, double lr_scale)
{
    const gk_config *c = &o->l->cfg;
    double mu = gk_muon_momentum(c, o->steps);
    for (int k = 0; k < o->n_muon; k++)
        gk_optim_muon_update(o, k, grads, mu, o->muon_upd + o->muon_off[k]);
    gk_optim_muon_apply(o, params, o->muon_upd, lr_scale);

    int64_t t = o->steps + 1;
    for (int k = 0; k < o->n_adam; k++) {
        const gk_param *p = &o->l->params[o->adam_param[k]];
        size_t off = o->adam_off[k];
        gk_adam_step(params + p->offset, grads + p->offset, o->adam_m + off,
                     o->adam_v + off, p->numel, adam_lr(c, p->group) * lr_scale,
                     c->train.beta1, c->train.beta2, c->train.adam_eps,
                     c->train.adam_weight_decay, t);
    }
    o->steps++;
}

int64_t gk_optim_steps(const gk_optim *o) { return o->steps; }
void gk_optim_set_steps(gk_optim *o, int64_t steps) { o->steps = steps; }

int gk_optim_state_count(const gk_optim *o) { return o->n_state; }

gk_optim_state gk_optim_state_get(const gk_optim *o, int i)
{
    static const char *const kind_name[] = {"muon_buf", "adam_m", "adam_v"};
    gk_optim_state s;
    int k = o->state_idx[i], kind = o->state_kind[i];
    if (kind == ST_MUON) {
        s.param = &o->l->params[o->muon_param[k]];
        s.data = o->muon_buf + o->muon_off[k];
    } else {
        s.param = &o->l->params[o->adam_param[k]];
        s.data = (kind == ST_ADAM_M ? o->adam_m : o->adam_v) + o->adam_off[k];
    }
    s.numel = s.param->numel;
    snprintf(s.name, sizeof s.name, "optim.%s.%s", kind_name[kind], s.param->name);
    return s;
}
