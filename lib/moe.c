/* moe: the mixture-of-experts feed-forward of moe.h. The passes of
 * lib/moe_impl.h are instantiated in float and double; the load bookkeeping
 * and DeepSeek-V3's bias step, which act on float parameters and integer
 * counts only, are written once here. */
#include "moe.h"
#include "ops.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#define REAL float
#define OP(name) name##_f32
#define MOE gk_moe_f32
#include "moe_impl.h"
#undef REAL
#undef OP
#undef MOE

#define REAL double
#define OP(name) name##_f64
#define MOE gk_moe_f64
#include "moe_impl.h"
#undef REAL
#undef OP
#undef MOE

void gk_moe_load_fractions(const gk_layout *l, const int64_t *load, double *frac)
{
    int E = l->cfg.moe.n_experts;
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        const int64_t *c = load + (size_t)b * E;
        int64_t sum = 0;
        for (int e = 0; e < E; e++)
            sum += c[e];
        for (int e = 0; e < E; e++)
            frac[(size_t)b * E + e] = sum ? (double)c[e] / (double)sum : 0;
    }
}

void gk_moe_router_update(const gk_layout *l, float *params, const int64_t *load,
                          double rate)
{
    if (!l->moe || l->cfg.moe.router != GK_ROUTER_SIGMOID_BIAS)
        return;
    int E = l->cfg.moe.n_experts;
    for (int b = 0; b < l->cfg.model.n_layer; b++) {
        if (l->moe[b].router_bias < 0)
            continue;
        float *bias = params + l->params[l->moe[b].router_bias].offset;
        const int64_t *c = load + (size_t)b * E;
        /* compare E load_e with the total rather than load_e with the mean:
         * the same sign, in integers, so an exactly balanced expert stays put */
        int64_t sum = 0;
        for (int e = 0; e < E; e++)
            sum += c[e];
        for (int e = 0; e < E; e++) {
            int64_t d = sum - (int64_t)E * c[e];
            bias[e] += (float)(rate * (double)((d > 0) - (d < 0)));
        }
    }
}
