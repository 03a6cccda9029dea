/* check-cuda: every CUDA kernel against its CPU reference (lib/ops.h), as TAP
 * for prove. `make check-cuda` builds and runs it on the GPU machine.
 *
 * With no usable device (no GPU, no driver: the CI machine) it prints
 * "1..0 # SKIP no CUDA device" and exits 0, so the harness is built and run
 * everywhere and only the GPU machine does the comparisons. Otherwise it runs
 * the checks registered in check.h's GK_CHECKS, each on fresh random inputs
 * (the seed is printed; GK_CHECK_SEED=N repeats it), and exits 1 if any
 * failed; `bin/check-cuda NAME...` runs only the checks named. This file holds the runner, the helpers check.h declares, and the
 * checks of gemm.cu: the conversions and the three linear-layer products.
 *
 * Error bounds of the GEMM checks. Inputs are bf16 values (rounded on the
 * host, so the CPU reference in fp32 sees the same numbers), products are
 * exact in fp32 and both sides sum in fp32, in different orders: the
 * difference grows like sqrt(K) fp32 roundings of the terms, about 1e-5 of
 * the output's scale at K = 2048. fp32 outputs are held to 1e-3, leaving room
 * for the worst-case (linear in K) growth. A bf16 output adds one rounding,
 * at most 2^-9 of the value (half a unit of bf16's 8-bit significand): bf16
 * outputs are held to 1e-2. Errors are relative per element, floored by the
 * output's RMS (gk_check_rel_err). */
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include "check.h"
extern "C" {
#include "ops.h" /* no extern "C" of its own: it declares lib/ops.c's C functions */
}
#include "tap.h"

/* ---- the runner --------------------------------------------------------- */

static const struct {
    const char *name;
    gk_check_fn fn;
} checks[] = {
#define GK_CHECK_ENTRY(name) {#name, gk_check_##name},
    GK_CHECKS(GK_CHECK_ENTRY)
};

/* Device memory for any one check; the headnorm check's timing, the largest,
 * needs about 900 MiB (the baseline's query tensor, its gradient and the
 * scratch of the kernel chain it is timed against). */
#define ARENA_BYTES ((size_t)2 << 30)

/* Whether check NAME runs: every check with no arguments, else only those
 * named on the command line (bin/check-cuda moe optim). */
static int wanted(const char *name, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return argc < 2;
}

int main(int argc, char **argv)
{
    const char *why;
    if (!gk_cu_device_count(&why)) {
        printf("# %s\n1..0 # SKIP no CUDA device\n", why);
        return 0;
    }
    gk_cu_device_print(stdout, "# ");

    /* Fresh inputs each run: time and pid, unless GK_CHECK_SEED pins them. */
    const char *env = getenv("GK_CHECK_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0)
                        : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    seed |= 1; /* xorshift's one fixed point is 0 */
    printf("# seed %llu (GK_CHECK_SEED=%llu repeats this run)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    tap_seed(seed);

    gk_cu_arena arena;
    gk_cu_arena_reserve(&arena, ARENA_BYTES);
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        if (!wanted(checks[i].name, argc, argv))
            continue;
        printf("# %s\n", checks[i].name);
        checks[i].fn(&arena);
        GK_CU(cudaDeviceSynchronize());
        gk_cu_arena_reset(&arena);
    }
    printf("# arena peak %zu of %zu bytes\n", gk_cu_arena_peak(&arena), arena.cap);
    gk_cu_arena_release(&arena);
    return tap_done();
}

/* ---- the helpers of check.h ----------------------------------------------- */

int gk_check_report(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    printf("%sok %d - ", pass ? "" : "not ", ++tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!pass) {
        tap_failed++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout); /* a later fatal CUDA error must not swallow the lines before it */
    return pass;
}

float *gk_check_randn(size_t n, double scale)
{
    float *h = (float *)malloc(n * sizeof *h);
    if (!h)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    for (size_t i = 0; i < n; i++)
        h[i] = (float)(scale * tap_normal());
    return h;
}

int gk_check_rand_int(int n)
{
    float *r = gk_check_randn(1, 1.0);
    int v = (int)(fabsf(r[0]) * 7919.0f) % n;
    free(r);
    return v;
}

float *gk_check_random_params(const gk_layout *l)
{
    float *params = (float *)gk_check_xalloc(l->numel * sizeof *params);
    gk_model_init_params(l, params, (uint64_t)gk_check_rand_int(1 << 30) + 1);
    for (int j = 0; j < l->n_params; j++) {
        const gk_param *p = &l->params[j];
        float *r = gk_check_randn(p->numel, p->group == GK_GROUP_BUFFER
                                                ? 0.1
                                                : 1 / sqrt((double)p->shape[1]));
        for (size_t i = 0; i < p->numel; i++)
            params[p->offset + i] += r[i];
        free(r);
    }
    return params;
}

unsigned short gk_check_f32_to_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFF) > 0x7F800000)
        return (unsigned short)(u >> 16 | 0x40); /* NaN: keep the sign, stay a NaN */
    u += 0x7FFF + (u >> 16 & 1);                 /* round to nearest, ties to even */
    return (unsigned short)(u >> 16);
}

float gk_check_bf16_bits_to_f32(unsigned short b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void gk_check_round_bf16(float *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h[i] = gk_check_bf16_bits_to_f32(gk_check_f32_to_bf16_bits(h[i]));
}

static size_t type_size(gk_out_type t) { return t == GK_OUT_F32 ? 4 : 2; }

void *gk_check_upload(gk_cu_arena *arena, const float *host, size_t n, gk_out_type type)
{
    void *dev = gk_cu_arena_alloc(arena, n * type_size(type));
    if (type == GK_OUT_F32) {
        GK_CU(cudaMemcpy(dev, host, n * 4, cudaMemcpyHostToDevice));
        return dev;
    }
    /* Converted on the host, so these checks never depend on gemm.cu's kernels. */
    unsigned short *b = (unsigned short *)malloc(n * 2);
    if (!b)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    for (size_t i = 0; i < n; i++)
        b[i] = gk_check_f32_to_bf16_bits(host[i]);
    GK_CU(cudaMemcpy(dev, b, n * 2, cudaMemcpyHostToDevice));
    free(b);
    return dev;
}

void *gk_check_xalloc(size_t bytes)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p)
        gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
    return p;
}

float *gk_check_up(gk_cu_arena *arena, const float *host, size_t n)
{
    return (float *)gk_check_upload(arena, host, n, GK_OUT_F32);
}

void *gk_check_up_bytes(gk_cu_arena *arena, const void *host, size_t bytes)
{
    void *d = gk_cu_arena_alloc(arena, bytes);
    GK_CU(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

float *gk_check_down(const float *dev, size_t n) { return gk_check_download(dev, n, GK_OUT_F32); }

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

float gk_check_median9(float *ms)
{
    qsort(ms, 9, sizeof ms[0], cmp_float);
    return ms[4];
}

void *gk_check_poisoned(gk_cu_arena *arena, size_t bytes)
{
    void *dev = gk_cu_arena_alloc(arena, bytes);
    GK_CU(cudaMemset(dev, 0xFF, bytes));
    return dev;
}

float *gk_check_download(const void *dev, size_t n, gk_out_type type)
{
    float *h = (float *)malloc(n * sizeof *h);
    if (!h)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    if (type == GK_OUT_F32) {
        GK_CU(cudaMemcpy(h, dev, n * 4, cudaMemcpyDeviceToHost));
        return h;
    }
    unsigned short *b = (unsigned short *)malloc(n * 2);
    if (!b)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    GK_CU(cudaMemcpy(b, dev, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++)
        h[i] = gk_check_bf16_bits_to_f32(b[i]);
    free(b);
    return h;
}

double gk_check_rel_err(const float *got, const float *want, size_t n)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        /* Equal values are no error, even where want and its RMS are both 0
         * (a relu of negative inputs); a NaN difference stays NaN. */
        double d = fabs((double)got[i] - want[i]);
        double e = d == 0 ? 0 : d / (fabs((double)want[i]) + rms);
        if (!(e <= worst)) /* NaN too */
            worst = isfinite(e) ? e : INFINITY;
    }
    return worst;
}

/* ---- the checks of gemm.cu ------------------------------------------------ */

/* fp32 -> bf16 on the device against the host's rounding, bit for bit, on
 * random values and the cases rounding gets wrong: ties (to even, both ways),
 * overflow to infinity, zeros, subnormals, infinities, NaN. Then bf16 -> fp32,
 * which is exact. n is odd and above one block's worth, so the grid-stride
 * loop's tail runs. */
void gk_check_convert(gk_cu_arena *arena)
{
    const size_t n = 1000003;
    float *h = gk_check_randn(n, 1.0);
    const float special[] = {1.00390625f /* 1 + 2^-8: a tie, down to 1 */,
                             1.01171875f /* 1 + 3 2^-8: a tie, up to 1 + 2^-6 */,
                             -1.00390625f,
                             3.4028235e38f /* FLT_MAX rounds to infinity */,
                             0.0f,
                             -0.0f,
                             1e-40f /* subnormal */,
                             INFINITY,
                             -INFINITY,
                             NAN};
    memcpy(h, special, sizeof special);

    float *src = (float *)gk_check_upload(arena, h, n, GK_OUT_F32);
    gk_bf16 *b = (gk_bf16 *)gk_check_poisoned(arena, n * 2);
    float *back = (float *)gk_check_poisoned(arena, n * 4);
    gk_f32_to_bf16(b, src, n, 0);
    gk_bf16_to_f32(back, b, n, 0);

    unsigned short *got = (unsigned short *)malloc(n * 2);
    float *gotf = gk_check_download(back, n, GK_OUT_F32);
    if (!got)
        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
    GK_CU(cudaMemcpy(got, b, n * 2, cudaMemcpyDeviceToHost));
    size_t bad_b = 0, bad_f = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned short want = gk_check_f32_to_bf16_bits(h[i]);
        int nan = isnan(h[i]);
        if (nan ? !isnan(gk_check_bf16_bits_to_f32(got[i])) : got[i] != want)
            bad_b++;
        float wantf = gk_check_bf16_bits_to_f32(got[i]);
        if (nan ? !isnan(gotf[i]) : memcmp(&gotf[i], &wantf, 4) != 0)
            bad_f++;
    }
    GK_OK(bad_b == 0, "gk_f32_to_bf16, n %zu: %zu of them differ from round-to-nearest-even", n,
          bad_b);
    GK_OK(bad_f == 0, "gk_bf16_to_f32, n %zu: %zu of them not exact", n, bad_f);
    free(got);
    free(gotf);
    free(h);
}

/* The requirement of gemm.h, which the products die on when unmet. */
void gk_check_gemm_dims(gk_cu_arena *arena)
{
    (void)arena;
    GK_OK(gk_gemm_dims_ok(512, 1024) && gk_gemm_dims_ok(8, 200) && !gk_gemm_dims_ok(36, 8) &&
              !gk_gemm_dims_ok(8, 1001) && !gk_gemm_dims_ok(0, 8),
          "gk_gemm_dims_ok: in and out multiples of 8 pass, others do not");
}

/* Each product, fp32 and bf16 output, overwriting (output poisoned first) and
 * adding into random values, on shapes from one token to the baseline's
 * widths; N is deliberately not a multiple of 8 in some. */
void gk_check_gemm(gk_cu_arena *arena)
{
    static const struct {
        int N, in, out;
    } shapes[] = {{1, 8, 8}, {37, 64, 200}, {100, 72, 24}, {256, 512, 1024}, {2047, 512, 1536}};
    static const char *const product[] = {"fwd y = x W^T", "bwd dx = dy W", "bwd dW = dy^T x"};

    gk_gemm g;
    gk_gemm_init(&g, arena, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, in = shapes[s].in, out = shapes[s].out;
        float *x = gk_check_randn((size_t)N * in, 1.0);
        float *w = gk_check_randn((size_t)out * in, 1.0 / sqrt(in));
        float *dy = gk_check_randn((size_t)N * out, 1.0);
        gk_check_round_bf16(x, (size_t)N * in);
        gk_check_round_bf16(w, (size_t)out * in);
        gk_check_round_bf16(dy, (size_t)N * out);
        gk_bf16 *dx_ = (gk_bf16 *)gk_check_upload(arena, x, (size_t)N * in, GK_OUT_BF16);
        gk_bf16 *dw_ = (gk_bf16 *)gk_check_upload(arena, w, (size_t)out * in, GK_OUT_BF16);
        gk_bf16 *ddy = (gk_bf16 *)gk_check_upload(arena, dy, (size_t)N * out, GK_OUT_BF16);

        /* The CPU products, each added into zeros. */
        size_t len[3] = {(size_t)N * out, (size_t)N * in, (size_t)out * in};
        float *ref[3];
        for (int p = 0; p < 3; p++) {
            ref[p] = (float *)calloc(len[p], sizeof(float));
            if (!ref[p])
                gk_cu_fail("calloc", __FILE__, __LINE__, "out of host memory");
        }
        gk_linear_fwd_f32(ref[0], x, w, NULL, N, in, out);
        gk_linear_bwd_f32(ref[1], ref[2], NULL, dy, x, w, N, in, out);

        for (int p = 0; p < 3; p++)
            for (int t = 0; t < 2; t++)
                for (int acc = 0; acc < 2; acc++) {
                    gk_out_type type = t ? GK_OUT_BF16 : GK_OUT_F32;
                    /* Accumulating starts from values the output type holds
                     * exactly, so both sides add the same numbers. */
                    float *init = NULL;
                    void *d;
                    if (acc) {
                        init = gk_check_randn(len[p], 1.0);
                        gk_check_round_bf16(init, len[p]);
                        d = gk_check_upload(arena, init, len[p], type);
                    } else {
                        d = gk_check_poisoned(arena, len[p] * type_size(type));
                    }
                    if (p == 0)
                        gk_gemm_linear_fwd(&g, d, type, dx_, dw_, N, in, out, acc);
                    else if (p == 1)
                        gk_gemm_linear_bwd_dx(&g, d, type, ddy, dw_, N, in, out, acc);
                    else
                        gk_gemm_linear_bwd_dw(&g, d, type, ddy, dx_, N, in, out, acc);
                    float *got = gk_check_download(d, len[p], type);
                    float *want = (float *)malloc(len[p] * sizeof(float));
                    if (!want)
                        gk_cu_fail("malloc", __FILE__, __LINE__, "out of host memory");
                    for (size_t i = 0; i < len[p]; i++)
                        want[i] = ref[p][i] + (acc ? init[i] : 0);
                    double bound = t ? 1e-2 : 1e-3;
                    double err = gk_check_rel_err(got, want, len[p]);
                    GK_OK(err <= bound, "%s, N %d in %d out %d, %s %s: max rel err %.3g (bound %g)",
                          product[p], N, in, out, t ? "bf16" : "fp32",
                          acc ? "+=" : "=", err, bound);
                    free(want);
                    free(got);
                    free(init);
                }
        for (int p = 0; p < 3; p++)
            free(ref[p]);
        free(dy);
        free(w);
        free(x);
    }
    gk_gemm_destroy(&g);
}
