/* check_attention: the flash-style attention kernels of attention.cu against
 * gk_attention_fwd_f32 / gk_attention_bwd_f32 of lib/ops.h, registered in
 * check.h's GK_CHECKS and run by bin/check-cuda.
 *
 * Shapes: a single token (T 1, the whole sequence one partial tile), T 37 (one
 * partial tile, every head pair), T 256 (whole tiles), T 1024 (many tiles:
 * the online softmax's rescaling and the dk/dv pass's long query loop), T 129
 * with D 128 (one row past a tile edge, the largest head dim); every head
 * dim the kernels support and groups of 1 and 2 query heads per kv head.
 * out and lse start poisoned (NaN), so an unwritten element fails; dq, dk, dv
 * start from the same random values on both sides, which checks that the
 * backward adds into them. The backward of both sides runs from the CPU's out
 * and lse, so it is compared on identical inputs.
 *
 * Bounds (max relative error per element, floored by the output's RMS, as
 * gk_check_rel_err measures it): both sides compute in float with different
 * summation orders (the CPU's GEMM blocking against the kernels' per-quad
 * partial sums and the online softmax's rescaling), and expf/logf here against
 * exp/log in double rounded to float there: a few ulp per term, growing with
 * the length of the sums.
 * - 1e-5 for out and lse.
 * - 1e-4 for dq, dk, dv: ds = p (dp - delta) cancels where dp is near delta,
 *   and dk sums over every query of the group (up to 2 x 1024 terms). */
#include <math.h>
#include <string.h>

#include "attention.h" /* first: it includes ops.h inside extern "C" */
#include "check.h"

/* Compare device floats with the host's, free the download, return the error. */
static double err_of(const float *dev, const float *want, size_t n)
{
    float *got = gk_check_download(dev, n, GK_OUT_F32);
    double e = gk_check_rel_err(got, want, n);
    free(got);
    return e;
}

void gk_check_attention(gk_cu_arena *arena)
{
    static const struct {
        int B, T, H, KV, D;
    } shapes[] = {{2, 1, 2, 1, 16},
                  {1, 37, 4, 2, 32},
                  {2, 256, 8, 4, 64},
                  {1, 1024, 8, 4, 64},
                  {1, 129, 2, 2, 128}};
    const double fwd_bound = 1e-5, bwd_bound = 1e-4;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s].B, T = shapes[s].T, H = shapes[s].H, KV = shapes[s].KV,
            D = shapes[s].D;
        size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D, nl = (size_t)B * T * H;
        float *q = gk_check_randn(nq, 1.0), *k = gk_check_randn(nk, 1.0);
        float *v = gk_check_randn(nk, 1.0), *dout = gk_check_randn(nq, 1.0);
        float *dq = gk_check_randn(nq, 1.0), *dk = gk_check_randn(nk, 1.0);
        float *dv = gk_check_randn(nk, 1.0);
        float *out = gk_check_randn(nq, 1.0), *lse = gk_check_randn(nl, 1.0);
        gk_attention_fwd_f32(out, lse, q, k, v, B, T, H, KV, D);

        float *d_q = gk_check_up(arena, q, nq), *d_k = gk_check_up(arena, k, nk), *d_v = gk_check_up(arena, v, nk);
        float *d_out = (float *)gk_check_poisoned(arena, nq * 4);
        float *d_lse = (float *)gk_check_poisoned(arena, nl * 4);
        GK_CU(gk_cu_attention_fwd(d_out, d_lse, d_q, d_k, d_v, B, T, H, KV, D, 0));
        double eo = err_of(d_out, out, nq), el = err_of(d_lse, lse, nl);
        GK_OK(eo <= fwd_bound && el <= fwd_bound,
              "attention fwd, B %d T %d H %d KV %d D %d: max rel err out %.3g lse %.3g "
              "(bound %g)", B, T, H, KV, D, eo, el, fwd_bound);

        /* The backward from the CPU's out and lse, into random dq, dk, dv. */
        float *d_dq = gk_check_up(arena, dq, nq), *d_dk = gk_check_up(arena, dk, nk), *d_dv = gk_check_up(arena, dv, nk);
        float *d_dout = gk_check_up(arena, dout, nq), *d_outc = gk_check_up(arena, out, nq);
        float *d_lsec = gk_check_up(arena, lse, nl);
        void *work = gk_cu_arena_alloc(arena, gk_cu_attention_bwd_workspace(B, T, H));
        gk_attention_bwd_f32(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KV, D);
        GK_CU(gk_cu_attention_bwd(d_dq, d_dk, d_dv, d_dout, d_outc, d_lsec, d_q, d_k, d_v, B, T,
                                  H, KV, D, work, 0));
        double eq = err_of(d_dq, dq, nq), ek = err_of(d_dk, dk, nk), ev = err_of(d_dv, dv, nk);
        GK_OK(eq <= bwd_bound && ek <= bwd_bound && ev <= bwd_bound,
              "attention bwd (+=), B %d T %d H %d KV %d D %d: max rel err dq %.3g dk %.3g "
              "dv %.3g (bound %g)", B, T, H, KV, D, eq, ek, ev, bwd_bound);
        free(q), free(k), free(v), free(dout), free(dq), free(dk), free(dv), free(out),
            free(lse);
    }
}
