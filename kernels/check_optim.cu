/* check_optim: the GPU optimizer of optim.cu against the CPU optimizer of
 * lib/optim.c, registered in check.h's GK_CHECKS and run by bin/check-cuda.
 *
 * - Newton-Schulz alone: a layout of Muon matrices only (wide 64x128, tall
 *   192x64, square 512x512, and a tall 128x64 and a second 512x512 that share
 *   a stack with the first of their shape), parameters 0, learning rate 1,
 *   momentum 0 and no decay, so one step leaves p = -sqrt(max(1, rows/cols))
 *   NS(g), compared with gk_newton_schulz on the same g.
 * - Three steps of a small dense layout (untied head: every Adam group) and a
 *   small MoE layout (SwiGLU experts, shared expert, learned sigmoid router
 *   with its bias buffer), both with clipping, Muon and Adam weight decay and
 *   a momentum warmup, from gk_model_init_params and random gradients (one
 *   step below the clip norm), against gk_optim_clip / gk_optim_step: the
 *   norm, the clipped gradients, the parameters after each step, the state
 *   after the third; then the state exchange (download into a fresh CPU
 *   optimizer; upload of the CPU's state and a download back, bit for bit;
 *   a fourth step from the uploaded state and the CPU's parameters).
 * - The cost of a step of the baseline (9 layers, 512 wide), as a comment.
 * The optimizer's memory starts poisoned (every bit set), so the zero state
 * of gk_cu_optim_new and every scratch element it reads must be written; the
 * CPU optimizers that downloads fill start as NaN.
 *
 * Bounds (gk_check_rel_err: max over elements of |got - want| / (|want| +
 * rms(want)), per tensor, the worst tensor reported):
 * - 1e-6 for the norm, the clipped gradients, Adam's parameters and moments
 *   and Muon's momentum buffers: the kernels do the CPU's float and double
 *   operations one for one, unfused, so they should agree bit for bit (the
 *   lines print the error: 0 confirms it); only the norm's double sum runs in
 *   another order, and a last-bit difference there can move the float clip
 *   factor by an ulp (1.2e-7).
 * - Newton-Schulz and Muon's parameter changes (p - p0, the change and not
 *   the parameter, so the error is measured against the update's size): the
 *   GPU rounds its input and every product to bf16 (a relative rounding of at
 *   most 2^-9 = 2e-3) over 5 iterations of 3 products, where the CPU is float
 *   throughout. B = b A + c A A with b = -4.775, c = 2.0315 cancels, so its
 *   rounding weighs most, and the quintic keeps the errors (it oscillates the
 *   singular values within [0.68, 1.13], it does not contract them). The
 *   same roundings emulated on the host (fp32 sums, bf16 after each product)
 *   against gk_newton_schulz give an rms error of 1.1e-2 to 1.4e-2 of the
 *   reference's rms and a worst element of 3.6e-2 to 4.1e-2 on 64x128,
 *   64x192, 512x512 and 512x1024 (B alone in float: 6e-3 to 8e-3 rms), the
 *   precision of train_gpt.py's bf16 Newton-Schulz. Bounds: 3e-2 on the rms
 *   error, 1e-1 on the worst element. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "optim.h"

/* The bounds of the bf16 Newton-Schulz, worst element and rms (above). */
#define NS_MAX 1e-1
#define NS_RMS 3e-2

/* The rms of got - want relative to the rms of want. */
static double rms_err(const float *got, const float *want, size_t n)
{
    double se = 0, sw = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        se += d * d, sw += (double)want[i] * want[i];
    }
    return sw > 0 ? sqrt(se / sw) : (se > 0 ? INFINITY : 0);
}

/* A new optimizer whose memory starts poisoned: the arena's next
 * gk_cu_optim_bytes(l) bytes are set to all ones and handed back, so that
 * gk_cu_optim_new carves the same poisoned bytes. Checks the plan's size. */
static gk_cu_optim *new_poisoned(const gk_layout *l, gk_cu_arena *arena, gk_gemm *g)
{
    size_t bytes = gk_cu_optim_bytes(l), mark = arena->used;
    gk_check_poisoned(arena, bytes);
    arena->used = mark;
    gk_cu_optim *o = gk_cu_optim_new(l, arena, g);
    size_t used = arena->used - mark;
    GK_OK(used <= bytes, "gk_cu_optim_bytes %zu covers the %zu bytes gk_cu_optim_new took",
          bytes, used);
    return o;
}

/* ---- Newton-Schulz ------------------------------------------------------------ */

static void check_ns(gk_cu_arena *arena)
{
    static const int shapes[][2] = {{64, 128}, {192, 64}, {512, 512}, {128, 64}, {512, 512}};
    enum { NM = sizeof shapes / sizeof shapes[0] };
    gk_param params[NM];
    gk_layout l;
    memset(&l, 0, sizeof l);
    memset(params, 0, sizeof params);
    gk_config_defaults(&l.cfg);
    l.cfg.train.matrix_lr = 1;
    l.cfg.train.muon_momentum_warmup_start = 0; /* momentum 0 at step 0: the update is g */
    l.n_params = NM;
    l.params = params;
    for (int j = 0; j < NM; j++) {
        gk_param *p = &params[j];
        snprintf(p->name, sizeof p->name, "m%d", j);
        p->ndim = 2, p->shape[0] = shapes[j][0], p->shape[1] = shapes[j][1];
        p->offset = l.numel, p->numel = (size_t)shapes[j][0] * shapes[j][1];
        p->group = GK_GROUP_MATRIX;
        l.numel += p->numel;
    }
    float *g = gk_check_randn(l.numel, 1.0), *p0 = (float *)gk_check_xalloc(l.numel * 4);
    gk_gemm gm;
    gk_gemm_init(&gm, arena, 0);
    gk_cu_optim *o = new_poisoned(&l, arena, &gm);
    float *d_p = gk_check_up(arena, p0, l.numel), *d_g = gk_check_up(arena, g, l.numel);
    gk_cu_optim_step(o, d_p, d_g, 1.0);
    float *got = gk_check_down(d_p, l.numel);
    int steps = l.cfg.train.muon_backend_steps;
    for (int j = 0; j < NM; j++) {
        const gk_param *p = &params[j];
        int r = p->shape[0], c = p->shape[1];
        float *want = g + p->offset, *mine = got + p->offset;
        float *work = (float *)gk_check_xalloc(gk_newton_schulz_work(r, c) * 4);
        gk_newton_schulz(want, r, c, steps, work);
        float s = r > c ? (float)sqrt((double)r / c) : 1.0f;
        for (size_t i = 0; i < p->numel; i++) { /* p = 0 - 1 * s NS(g) */
            want[i] *= s;
            mine[i] = -mine[i];
        }
        double e = gk_check_rel_err(mine, want, p->numel), er = rms_err(mine, want, p->numel);
        GK_OK(e <= NS_MAX && er <= NS_RMS,
              "newton-schulz (bf16) vs gk_newton_schulz, %dx%d: max rel err %.3g (bound %g), "
              "rms %.3g (bound %g)", r, c, e, NS_MAX, er, NS_RMS);
        free(work);
    }
    gk_cu_optim_free(o);
    gk_gemm_destroy(&gm);
    free(g), free(p0), free(got);
}

/* ---- steps of a model layout ------------------------------------------------ */

/* The worst per-tensor error over the tensors of layout L that pass WHICH:
 * of got against want, or of the changes got - base against want - base. */
typedef int (*tensor_pred)(const gk_param *p);
static int is_muon(const gk_param *p) { return p->group == GK_GROUP_MATRIX; }
static int is_adam(const gk_param *p)
{
    return p->group != GK_GROUP_MATRIX && p->group != GK_GROUP_BUFFER;
}
static int is_buffer(const gk_param *p) { return p->group == GK_GROUP_BUFFER; }

static void worst(const gk_layout *l, tensor_pred which, const float *got, const float *want,
                  const float *base, double *max_err, double *rms)
{
    *max_err = 0, *rms = 0;
    for (int j = 0; j < l->n_params; j++) {
        const gk_param *p = &l->params[j];
        if (!which(p))
            continue;
        float *a = (float *)gk_check_xalloc(p->numel * 4), *b = (float *)gk_check_xalloc(p->numel * 4);
        for (size_t i = 0; i < p->numel; i++) {
            a[i] = got[p->offset + i] - (base ? base[p->offset + i] : 0);
            b[i] = want[p->offset + i] - (base ? base[p->offset + i] : 0);
        }
        double e = gk_check_rel_err(a, b, p->numel), r = rms_err(a, b, p->numel);
        *max_err = e > *max_err || isnan(e) ? e : *max_err;
        *rms = r > *rms || isnan(r) ? r : *rms;
        free(a), free(b);
    }
}

/* A fresh CPU optimizer whose state tensors hold NaN. */
static gk_optim *nan_optim(const gk_layout *l)
{
    gk_optim *c = gk_optim_new(l);
    for (int i = 0; i < gk_optim_state_count(c); i++) {
        gk_optim_state s = gk_optim_state_get(c, i);
        for (size_t k = 0; k < s.numel; k++)
            s.data[k] = NAN;
    }
    gk_optim_set_steps(c, -1);
    return c;
}

/* Worst rel err over state tensors; *bits_equal whether all are identical. */
static double state_err(const gk_optim *a, const gk_optim *b, int *bits_equal)
{
    double w = 0;
    *bits_equal = gk_optim_steps(a) == gk_optim_steps(b);
    for (int i = 0; i < gk_optim_state_count(a); i++) {
        gk_optim_state x = gk_optim_state_get(a, i), y = gk_optim_state_get(b, i);
        double e = gk_check_rel_err(x.data, y.data, x.numel);
        w = e > w || isnan(e) ? e : w;
        *bits_equal = *bits_equal && !memcmp(x.data, y.data, x.numel * sizeof(float));
    }
    return w;
}

/* Compare the device parameters with the CPU's after a step from BASE. */
static void compare_params(const gk_layout *l, const char *name, const char *when,
                           const float *d_p, const float *cpu, const float *base)
{
    float *got = gk_check_down(d_p, l->numel);
    double ea, ra, em, rm, eb, rb;
    worst(l, is_adam, got, cpu, NULL, &ea, &ra);
    worst(l, is_muon, got, cpu, base, &em, &rm);
    worst(l, is_buffer, got, base, NULL, &eb, &rb);
    GK_OK(ea <= 1e-6 && em <= NS_MAX && rm <= NS_RMS && eb == 0,
          "optim %s, %s: Adam params max rel err %.3g (bound 1e-6); Muon changes max rel err "
          "%.3g (bound %g) rms %.3g (bound %g); buffers untouched (err %.3g)",
          name, when, ea, em, NS_MAX, rm, NS_RMS, eb);
    free(got);
}

static void check_steps(gk_cu_arena *arena, const char *name, const gk_config *cfg)
{
    gk_layout l;
    gk_layout_init(&l, cfg);
    size_t n = l.numel, n_trained = n - l.n_buffer;
    l.cfg.train.grad_clip_norm = 0.8 * sqrt((double)n_trained); /* below the norm of N(0,1) */
    float *p = (float *)gk_check_xalloc(n * 4), *p0 = (float *)gk_check_xalloc(n * 4);
    gk_model_init_params(&l, p, 7);
    memcpy(p0, p, n * 4);

    gk_gemm gm;
    gk_gemm_init(&gm, arena, 0);
    gk_cu_optim *o = new_poisoned(&l, arena, &gm);
    gk_optim *cpu = gk_optim_new(&l);
    float *d_p = gk_check_up(arena, p, n), *d_g = (float *)gk_cu_arena_alloc(arena, n * 4);

    static const double gscale[] = {1.0, 0.5, 1.0, 1.0}, lr_scale[] = {1.0, 0.8, 0.6, 0.4};
    for (int s = 0; s < 4; s++) {
        if (s == 3) {
            /* The exchange: the GPU's state into a NaN-filled CPU optimizer,
             * then the CPU's state up and back down, and the fourth step from
             * the CPU's state and parameters. */
            gk_optim *back = nan_optim(&l);
            gk_cu_optim_download(o, back);
            int same;
            double e = state_err(back, cpu, &same);
            GK_OK(e <= 1e-6 && gk_optim_steps(back) == 3 && gk_cu_optim_steps(o) == 3,
                  "optim %s, state after 3 steps (Muon buffers, Adam m and v): max rel err "
                  "%.3g (bound 1e-6), %s, steps %lld (downloaded) %lld (GPU)", name, e,
                  same ? "bit for bit" : "not bit for bit", (long long)gk_optim_steps(back),
                  gk_cu_optim_steps(o));
            gk_optim_free(back);
            gk_cu_optim_upload(o, cpu);
            back = nan_optim(&l);
            gk_cu_optim_download(o, back);
            state_err(back, cpu, &same);
            GK_OK(same, "optim %s, upload of the CPU state then download: bit for bit", name);
            gk_optim_free(back);
            GK_CU(cudaMemcpy(d_p, p, n * 4, cudaMemcpyHostToDevice));
            memcpy(p0, p, n * 4);
        }
        float *g = gk_check_randn(n, gscale[s]);
        GK_CU(cudaMemcpy(d_g, g, n * 4, cudaMemcpyHostToDevice));
        double want = gk_optim_clip(cpu, g), got = gk_cu_optim_clip(o, d_g);
        float *gg = gk_check_down(d_g, n);
        double eg = gk_check_rel_err(gg, g, n), en = fabs(got - want) / want;
        GK_OK(en <= 1e-6 && eg <= 1e-6,
              "optim %s, clip at step %d (norm %.4g, max %.4g): norm rel err %.3g, clipped "
              "grads max rel err %.3g (bound 1e-6)", name, s, want,
              l.cfg.train.grad_clip_norm, en, eg);
        gk_optim_step(cpu, p, g, lr_scale[s]);
        gk_cu_optim_step(o, d_p, d_g, lr_scale[s]);
        char when[64];
        snprintf(when, sizeof when, "after step %d%s", s + 1, s == 3 ? " (from the upload)" : "");
        compare_params(&l, name, when, d_p, p, p0);
        free(g), free(gg);
    }
    gk_optim_free(cpu);
    gk_cu_optim_free(o);
    gk_gemm_destroy(&gm);
    gk_layout_free(&l);
    free(p), free(p0);
}

/* The config of the small layouts: every size a multiple of 8, decay on,
 * the momentum warming up over the steps. */
static void small_config(gk_config *c, int moe)
{
    gk_config_defaults(c);
    c->model.vocab = 96, c->model.n_layer = 3, c->model.d_model = 64;
    c->model.n_head = 4, c->model.n_kv_head = 2, c->model.mlp_mult = 2;
    c->model.tie_embeddings = moe; /* untied, the dense one has every Adam group */
    c->train.muon_weight_decay = 0.1, c->train.adam_weight_decay = 0.05;
    c->train.muon_momentum_warmup_steps = 2;
    if (moe) {
        c->model.activation = GK_ACT_SWIGLU;
        c->moe.n_experts = 4, c->moe.n_shared = 1, c->moe.top_k = 2, c->moe.expert_hidden = 48;
    }
    gk_config_check(c, "check_optim");
}

/* ---- the cost on the baseline ------------------------------------------------ */

static void time_baseline(gk_cu_arena *arena)
{
    gk_config c;
    gk_config_defaults(&c);
    c.train.grad_clip_norm = 1;
    gk_config_check(&c, "check_optim");
    gk_layout l;
    gk_layout_init(&l, &c);
    float *p = (float *)gk_check_xalloc(l.numel * 4);
    gk_model_init_params(&l, p, 1);
    float *g = gk_check_randn(l.numel, 1e-3);
    gk_gemm gm;
    gk_gemm_init(&gm, arena, 0);
    gk_cu_optim *o = gk_cu_optim_new(&l, arena, &gm);
    float *d_p = gk_check_up(arena, p, l.numel), *d_g = gk_check_up(arena, g, l.numel);
    cudaEvent_t e0, e1, e2, e3;
    GK_CU(cudaEventCreate(&e0));
    GK_CU(cudaEventCreate(&e1));
    GK_CU(cudaEventCreate(&e2));
    GK_CU(cudaEventCreate(&e3));
    for (int s = 0; s < 3; s++) /* warm-up */
        gk_cu_optim_step(o, d_p, d_g, 1.0);
    enum { REPS = 20 };
    GK_CU(cudaEventRecord(e0, 0));
    for (int s = 0; s < REPS; s++)
        gk_cu_optim_clip(o, d_g);
    GK_CU(cudaEventRecord(e1, 0));
    for (int s = 0; s < REPS; s++)
        gk_cu_optim_step(o, d_p, d_g, 1.0);
    /* Again with one Newton-Schulz iteration (the optimizer reads the
     * layout's config at each step): the difference is 4 iterations. */
    GK_CU(cudaEventRecord(e2, 0));
    l.cfg.train.muon_backend_steps = 1;
    for (int s = 0; s < REPS; s++)
        gk_cu_optim_step(o, d_p, d_g, 1.0);
    GK_CU(cudaEventRecord(e3, 0));
    GK_CU(cudaEventSynchronize(e3));
    float t_clip, t_step, t_one;
    GK_CU(cudaEventElapsedTime(&t_clip, e0, e1));
    GK_CU(cudaEventElapsedTime(&t_step, e1, e2));
    GK_CU(cudaEventElapsedTime(&t_one, e2, e3));
    int mats = 0;
    for (int j = 0; j < l.n_params; j++)
        mats += l.params[j].group == GK_GROUP_MATRIX;
    printf("# optim baseline (%zu parameters, %d Muon matrices): clip %.3f ms, step %.3f ms, "
           "of which one Newton-Schulz iteration %.3f ms (mean of %d)\n", l.numel, mats,
           t_clip / REPS, t_step / REPS, (t_step - t_one) / 4 / REPS, REPS);
    GK_CU(cudaEventDestroy(e0));
    GK_CU(cudaEventDestroy(e1));
    GK_CU(cudaEventDestroy(e2));
    GK_CU(cudaEventDestroy(e3));
    gk_cu_optim_free(o);
    gk_gemm_destroy(&gm);
    gk_layout_free(&l);
    free(p), free(g);
}

void gk_check_optim(gk_cu_arena *arena)
{
    /* Each part synchronizes and gives its memory back, so the baseline's
     * buffers fit beside nothing else. */
    check_ns(arena);
    GK_CU(cudaDeviceSynchronize());
    gk_cu_arena_reset(arena);
    gk_config c;
    small_config(&c, 0);
    check_steps(arena, "dense", &c);
    GK_CU(cudaDeviceSynchronize());
    gk_cu_arena_reset(arena);
    small_config(&c, 1);
    check_steps(arena, "moe", &c);
    GK_CU(cudaDeviceSynchronize());
    gk_cu_arena_reset(arena);
    time_baseline(arena);
}
