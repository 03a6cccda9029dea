/* schedule: learning-rate scale and Muon momentum by step and wall clock.
 * The formulas and the reasons for them are in schedule.h; this file keeps
 * train_gpt.py's arithmetic (lr_mul) in the same order so the values agree
 * with it to the last bit where both define them. */
#include "schedule.h"

#include <math.h>

gk_clock gk_schedule_clock(const gk_config *c)
{
    if (c->train.schedule_clock == GK_CLOCK_AUTO)
        return c->train.max_seconds > 0 ? GK_CLOCK_WALLCLOCK : GK_CLOCK_STEPS;
    return c->train.schedule_clock;
}

/* train_gpt.py's lr_mul: the fraction of the full rate, 1 outside the
 * warmdown, falling linearly to 0 at its end. */
static double warmdown_frac(const gk_config *c, int64_t step, double elapsed)
{
    int64_t n = c->train.steps, d = c->train.warmdown_steps;
    if (d <= 0)
        return 1.0;
    if (gk_schedule_clock(c) == GK_CLOCK_STEPS) {
        int64_t start = n - d > 0 ? n - d : 0;
        if (step < start)
            return 1.0;
        /* train_gpt.py returns 1 again at step >= iterations, a step it never
         * takes; we stay at the end of the ramp. */
        if (step >= n)
            return 0.0;
        return fmax((double)(n - step) / (double)d, 0.0);
    }
    /* Work in seconds where train_gpt.py works in ms: the ratio is the same. */
    double step_s = elapsed / (double)(step > 1 ? step : 1);
    double window = (double)d * step_s;
    double left = fmax(c->train.max_seconds - elapsed, 0.0);
    return left <= window ? left / fmax(window, 1e-12) : 1.0;
}

static double cosine_progress(const gk_config *c, int64_t step, double elapsed)
{
    double p;
    if (gk_schedule_clock(c) == GK_CLOCK_WALLCLOCK) {
        p = elapsed / c->train.max_seconds;
    } else {
        int64_t w = c->train.lr_warmup_steps, span = c->train.steps - w;
        p = span > 0 ? (double)(step - w) / (double)span : 1.0;
    }
    return fmin(fmax(p, 0.0), 1.0);
}

double gk_lr_scale(const gk_config *c, int64_t step, double elapsed)
{
    double f = c->train.lr_final_scale, s = 1.0;
    switch (c->train.lr_schedule) {
    case GK_SCHED_LINEAR_WARMDOWN:
        s = f + (1.0 - f) * warmdown_frac(c, step, elapsed);
        break;
    case GK_SCHED_COSINE:
        s = f + (1.0 - f) * 0.5 * (1.0 + cos(M_PI * cosine_progress(c, step, elapsed)));
        break;
    case GK_SCHED_CONSTANT:
        break;
    }
    int64_t w = c->train.lr_warmup_steps;
    if (w > 0 && step < w)
        s *= (double)(step + 1) / (double)w;
    return s;
}

double gk_muon_momentum(const gk_config *c, int64_t step)
{
    int64_t w = c->train.muon_momentum_warmup_steps;
    double frac = w > 0 ? fmin((double)step / (double)w, 1.0) : 1.0;
    return (1 - frac) * c->train.muon_momentum_warmup_start + frac * c->train.muon_momentum;
}
