/* schedule: the learning-rate multiplier and Muon's momentum as functions of
 * the training step (and of the wall clock), for moe-train.
 *
 * Both are pure functions of (config, step, elapsed seconds), so a test can
 * pin their values and a resumed run recomputes exactly what an uninterrupted
 * run would have used. The trainer calls them once per optimizer step, before
 * the step, with STEP the number of steps already taken (0 for the first) and
 * ELAPSED the training seconds measured so far: the arguments train_gpt.py's
 * lr_mul(step, elapsed_ms) and its momentum warmup receive. Each group's
 * learning rate is then its base rate (matrix_lr, scalar_lr, ...) times the
 * scale, as train_gpt.py sets group["lr"] = group["base_lr"] * scale. */
#ifndef GK_SCHEDULE_H
#define GK_SCHEDULE_H

#include "config.h"

#include <stdint.h>

/* The clock a config's schedule runs on: GK_CLOCK_STEPS or GK_CLOCK_WALLCLOCK
 * (auto resolves to wallclock when max_seconds > 0, train_gpt.py's rule). */
gk_clock gk_schedule_clock(const gk_config *c);

/* The learning-rate scale before step STEP (0-based) at ELAPSED seconds of
 * training. With f = lr_final_scale, W = lr_warmup_steps, N = steps, D =
 * warmdown_steps, T = max_seconds:
 *
 *   linear_warmdown, steps clock: 1 before step N - D, then
 *       f + (1 - f) (N - STEP) / D, reaching f at step N (train_gpt.py's
 *       lr_mul without a wall-clock cap); 1 throughout when D is 0.
 *   linear_warmdown, wallclock: the warmdown window is D steps at the mean
 *       step time so far, d = D ELAPSED / max(STEP, 1); with r = max(T -
 *       ELAPSED, 0) left, the scale is f + (1 - f) r / d once r <= d, else 1
 *       (train_gpt.py's lr_mul with max_wallclock_seconds); 1 when D is 0.
 *   cosine: f + (1 - f) (1 + cos(pi p)) / 2 with progress p clamped to
 *       [0, 1]: (STEP - W) / (N - W) on the steps clock, ELAPSED / T by wall
 *       clock.
 *   constant: 1.
 *
 * Then, when W > 0 and STEP < W, the scale is multiplied by (STEP + 1) / W, so
 * the first step already moves. (train_gpt.py has no LR warmup: its
 * warmup_steps are priming steps that are undone, our train.prime_steps.) */
double gk_lr_scale(const gk_config *c, int64_t step, double elapsed);

/* Muon's momentum before step STEP: linear from muon_momentum_warmup_start at
 * step 0 to muon_momentum at step muon_momentum_warmup_steps, constant after
 * (train_gpt.py's frac / muon_momentum in its training loop). */
double gk_muon_momentum(const gk_config *c, int64_t step);

#endif
