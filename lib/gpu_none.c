/* gpu_none: lib/gpu.h when the tools were built without nvcc, and in the
 * sanitizer build (the CUDA runtime and AddressSanitizer do not share an
 * address space well). Asking for the GPU fails with one clear line naming
 * the option; gk_gpu_new never returns, so the other functions cannot be
 * reached and exist for the linker, each failing the same way. */
#include "gpu.h"
#include "util.h"

_Noreturn static void no_cuda(const char *prog)
{
    gk_die("%s: expected a build with the CUDA backend, found one without it (nvcc was not "
           "found at build time, or this is the sanitizer build); rebuild with nvcc on PATH "
           "or NVCC=path/to/nvcc", prog);
}

gk_gpu *gk_gpu_new(const gk_layout *l, int B, int T, int train, const char *prog)
{
    (void)l, (void)B, (void)T, (void)train;
    no_cuda(prog);
}

#define UNREACHABLE no_cuda("gpu")
void gk_gpu_free(gk_gpu *g) { (void)g; }
const char *gk_gpu_device_name(const gk_gpu *g) { (void)g; UNREACHABLE; }
size_t gk_gpu_plan_bytes(const gk_gpu *g) { (void)g; UNREACHABLE; }
void gk_gpu_set_params(gk_gpu *g, const float *p) { (void)g, (void)p; UNREACHABLE; }
void gk_gpu_get_params(gk_gpu *g, float *p) { (void)g, (void)p; UNREACHABLE; }
void gk_gpu_set_ema(gk_gpu *g, const float *e) { (void)g, (void)e; UNREACHABLE; }
void gk_gpu_get_ema(gk_gpu *g, float *e) { (void)g, (void)e; UNREACHABLE; }
void gk_gpu_set_optim(gk_gpu *g, const gk_optim *o) { (void)g, (void)o; UNREACHABLE; }
void gk_gpu_get_optim(gk_gpu *g, gk_optim *o) { (void)g, (void)o; UNREACHABLE; }
void gk_gpu_zero_grads(gk_gpu *g) { (void)g; UNREACHABLE; }
void gk_gpu_fwd_bwd(gk_gpu *g, int B, const int *tokens, const int *targets, double dloss)
{
    (void)g, (void)B, (void)tokens, (void)targets, (void)dloss;
    UNREACHABLE;
}
double gk_gpu_step(gk_gpu *g, double lr_scale, double *norm, int64_t *load)
{
    (void)g, (void)lr_scale, (void)norm, (void)load;
    UNREACHABLE;
}
double gk_gpu_forward_rows(gk_gpu *g, int B, const int *tokens, const int *targets,
                           double *losses)
{
    (void)g, (void)B, (void)tokens, (void)targets, (void)losses;
    UNREACHABLE;
}

gk_gpu_dec *gk_gpu_dec_new(const gk_layout *l, const float *params, int streams, int t_max,
                           const char *prog)
{
    (void)l, (void)params, (void)streams, (void)t_max;
    no_cuda(prog);
}
void gk_gpu_dec_free(gk_gpu_dec *d) { (void)d; }
const char *gk_gpu_dec_device_name(const gk_gpu_dec *d) { (void)d; UNREACHABLE; }
size_t gk_gpu_dec_plan_bytes(const gk_gpu_dec *d) { (void)d; UNREACHABLE; }
float *gk_gpu_dec_step(gk_gpu_dec *d, int n, const int *streams, const int *tokens)
{
    (void)d, (void)n, (void)streams, (void)tokens;
    UNREACHABLE;
}
int gk_gpu_dec_pos(const gk_gpu_dec *d, int s) { (void)d, (void)s; UNREACHABLE; }
void gk_gpu_dec_reset(gk_gpu_dec *d, int s) { (void)d, (void)s; UNREACHABLE; }
