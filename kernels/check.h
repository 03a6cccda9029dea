/* check: how a CUDA kernel is checked against its CPU reference in lib/ops.h,
 * by bin/check-cuda (`make check-cuda`, on the GPU machine).
 *
 * A check is a function void gk_check_NAME(gk_cu_arena *arena), in any
 * kernels/check_*.cu or in check_main.cu, registered by one line in
 * GK_CHECKS below; check_main.cu runs them in that order. A check draws fresh
 * random inputs (gk_check_randn: the seed changes every run and is printed,
 * GK_CHECK_SEED=N repeats a run), runs the CPU reference and the kernel on the
 * same values, and reports each comparison with GK_OK, one TAP line naming the
 * shape, the max error and its bound. Kernel outputs that the kernel
 * overwrites start poisoned (gk_check_poisoned: all bits set, a NaN in fp32 and
 * in bf16), so an element the kernel never writes fails the comparison.
 * Device memory comes from ARENA, which main resets after each check; a check
 * frees only its host memory. A check may use the default stream; main
 * synchronizes after each one and reports any CUDA error as fatal (GK_CU).
 *
 * Adding a check, e.g. RMSNorm in kernels/check_elementwise.cu:
 *   void gk_check_rmsnorm(gk_cu_arena *arena) { ... GK_OK(err < 1e-5, "..."); }
 * and the line X(rmsnorm) in GK_CHECKS. */
#ifndef GK_CHECK_H
#define GK_CHECK_H

#include <stddef.h>

#include "cuda_util.h"
#include "gemm.h"
extern "C" {
#include "model.h" /* lib/model.h: gk_layout */
}

/* The registry: one X(name) per check, run in this order. */
#define GK_CHECKS(X) \
    X(convert)       \
    X(gemm_dims)     \
    X(gemm)          \
    X(embed)         \
    X(rmsnorm)       \
    X(rope)          \
    X(headnorm)      \
    X(residual)      \
    X(act)           \
    X(softcap_ce)    \
    X(scale_add)     \
    X(adam)          \
    X(attention)     \
    X(attention_tc)  \
    X(moe)           \
    X(optim)         \
    X(decode)

typedef void (*gk_check_fn)(gk_cu_arena *arena);
#define GK_CHECK_DECLARE(name) void gk_check_##name(gk_cu_arena *arena);
GK_CHECKS(GK_CHECK_DECLARE)

/* One TAP line, "ok N - DESCRIPTION" or "not ok N - ...", and on failure a
 * comment naming the file and line. Returns whether COND held. */
#define GK_OK(cond, ...) gk_check_report((cond) != 0, __FILE__, __LINE__, __VA_ARGS__)
int gk_check_report(int pass, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* N normals of standard deviation SCALE from this run's generator, in a new
 * host array (free() it). Never all zeros; exact zeros have probability 0. */
float *gk_check_randn(size_t n, double scale);
/* A uniform-ish integer in 0..n-1 from the same generator. */
int gk_check_rand_int(int n);
/* The parameters of layout L: the initial ones of a random seed moved by
 * N(0, 1/in) so that no path is dead (the projections start at zero), the
 * buffers (router biases) N(0, 0.1^2). A new host array (free() it). */
float *gk_check_random_params(const gk_layout *l);
/* Round each of the N values to the nearest bf16 (ties to even), in place, so
 * the CPU reference sees exactly what a bf16 kernel input holds. */
void gk_check_round_bf16(float *h, size_t n);
/* Host bf16 conversion, bit for bit what the device's round-to-nearest does. */
unsigned short gk_check_f32_to_bf16_bits(float f);
float gk_check_bf16_bits_to_f32(unsigned short b);

/* A device copy of the N host floats HOST, stored as TYPE (bf16 rounds). */
void *gk_check_upload(gk_cu_arena *arena, const float *host, size_t n, gk_out_type type);
/* A device array of BYTES, every bit set (NaN as fp32 and as bf16). */
void *gk_check_poisoned(gk_cu_arena *arena, size_t bytes);
/* A new host float array with the N device values of type TYPE (free() it). */
float *gk_check_download(const void *dev, size_t n, gk_out_type type);

/* Host memory of BYTES, zeroed (never NULL, even for 0 bytes; dies when out
 * of memory). */
void *gk_check_xalloc(size_t bytes);
/* Device copies from ARENA: N floats as fp32, or BYTES as they are. */
float *gk_check_up(gk_cu_arena *arena, const float *host, size_t n);
void *gk_check_up_bytes(gk_cu_arena *arena, const void *host, size_t bytes);
/* A new host array with the N device fp32 values (free() it). */
float *gk_check_down(const float *dev, size_t n);

/* The median of 9 timed runs of RUN (a callable that enqueues work on the
 * default stream), after one untimed warm-up, in ms: what the checks print
 * as "# timing" comments (informational, never asserted). */
float gk_check_median9(float *ms);
template <typename F> float gk_check_median_ms(F run)
{
    cudaEvent_t e0, e1;
    float t[9];
    GK_CU(cudaEventCreate(&e0));
    GK_CU(cudaEventCreate(&e1));
    run();
    for (int i = 0; i < 9; i++) {
        GK_CU(cudaEventRecord(e0, 0));
        run();
        GK_CU(cudaEventRecord(e1, 0));
        GK_CU(cudaEventSynchronize(e1));
        GK_CU(cudaEventElapsedTime(&t[i], e0, e1));
    }
    GK_CU(cudaEventDestroy(e0));
    GK_CU(cudaEventDestroy(e1));
    return gk_check_median9(t);
}

/* The max over i of |got - want| / (|want| + rms(want)): relative error,
 * floored by the output's scale so that outputs near zero (cancellation) do
 * not divide by nearly nothing. Infinity when any got is NaN or infinite where
 * want is finite (an unwritten, poisoned element). */
double gk_check_rel_err(const float *got, const float *want, size_t n);

#endif
