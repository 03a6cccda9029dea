/* evalwin: the sliding-window evaluation of moe-eval, where every validation
 * target is scored exactly once but with more context than the non-overlapping
 * sequences of train_gpt.py's eval_val give it (the parameter-golf records'
 * "sliding window eval").
 *
 * The targets are those of eval_val (lib/loader.h): the val tokens cut to
 * whole sequences of the model's seq_len, N = v->n - 1 of them; target i is
 * token i + 1, predicted from tokens 0..i. With context T (the window length,
 * 1 <= T <= seq_len, since the rope tables are built for seq_len positions) and
 * stride S (1 <= S <= T), window k = 0, 1, ... is the forward over the T
 * input tokens [start_k, start_k + T) with their T targets, where
 *
 *   end_k   = min(T + k S, N)        (one past the last target it scores)
 *   start_k = end_k - T
 *
 * Window 0 scores all its T targets (0..T-1: the first ones have no earlier
 * token to see). Window k >= 1 scores the targets [end_{k-1}, end_k), the last
 * end_k - end_{k-1} positions of the window: S of them, fewer in the last
 * window, which is moved back to end exactly at N so that its targets too see
 * T - (end_k - end_{k-1}) >= T - S earlier tokens. So each target is scored
 * once, and target i >= T sees at least T - S and at most T - 1 tokens before
 * its input token. There are 1 + ceil((N - T) / S) windows, about N / S
 * forwards of T tokens: the cost grows as T / S.
 *
 * With S = T every window is one of eval_val's sequences, scored whole: the
 * same loss (up to the order of float64 sums) as gk_val_run_cpu. */
#ifndef GK_EVALWIN_H
#define GK_EVALWIN_H

#include "loader.h"
#include "model.h"
#include "tok.h"

#include <stdint.h>

/* Windows over N targets with context T and stride S (dies unless
 * 1 <= T <= N and 1 <= S <= T). */
int64_t gk_evalwin_count(int64_t n, int context, int stride);
/* Window K of those: its first input position, and the first window position
 * it scores (it scores positions first..T-1). */
void gk_evalwin_window(int64_t n, int context, int stride, int64_t k, int64_t *start,
                       int *first);

/* Called after each forward with the targets scored so far (out of N). */
typedef void (*gk_evalwin_progress)(void *ctx, int64_t done);

/* The forward of some backend over B windows of T tokens: each position's
 * loss (nats) into losses [B*T]; returns anything (the mean is not used). */
typedef double (*gk_evalwin_forward)(void *ctx, int B, int T, const int *tokens,
                                     const int *targets, double *losses);

/* Windows per forward for BATCH_TOKENS (at least one, at most all of them). */
int gk_evalwin_per_batch(const gk_val *v, int context, int stride, int64_t batch_tokens);

/* Evaluate every target of V with FWD, gk_evalwin_per_batch windows per
 * forward (the last forward may hold fewer). TOK may be NULL: bytes stay 0;
 * bytes of a target are tok->len[id] as in gk_val_run. PROGRESS may be NULL.
 * Dies when T or S are out of range, or the vocabs of V, L and TOK disagree.
 * The sums feed gk_val_result. */
gk_val_sums gk_evalwin_run(const gk_val *v, const gk_layout *l, gk_evalwin_forward fwd,
                           void *fctx, const gk_tok *tok, int context, int stride,
                           int64_t batch_tokens, gk_evalwin_progress progress, void *ctx);

/* gk_evalwin_run with the CPU model and PARAMS. */
gk_val_sums gk_evalwin_run_cpu(const gk_val *v, const gk_layout *l, const float *params,
                               const gk_tok *tok, int context, int stride,
                               int64_t batch_tokens, gk_evalwin_progress progress,
                               void *ctx);

#endif
