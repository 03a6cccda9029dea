/* evalwin: the sliding-window evaluation (see evalwin.h for which targets each
 * window scores). Windows are independent, so they are batched B at a time
 * into one forward of [B, T] with per-position losses; only each window's
 * scored positions are summed. The sums are float64 in window order, so the
 * result does not depend on the batch size. */
#include "evalwin.h"

#include "util.h"

#include <stdlib.h>

static void check(int64_t n, int context, int stride)
{
    if (context < 1 || (int64_t)context > n)
        gk_die("evalwin: context: expected 1..%lld (the targets), found %d", (long long)n,
               context);
    if (stride < 1 || stride > context)
        gk_die("evalwin: stride: expected 1..context %d, found %d", context, stride);
}

int64_t gk_evalwin_count(int64_t n, int context, int stride)
{
    check(n, context, stride);
    return 1 + (n - context + stride - 1) / stride;
}

void gk_evalwin_window(int64_t n, int context, int stride, int64_t k, int64_t *start,
                       int *first)
{
    int64_t w = gk_evalwin_count(n, context, stride);
    if (k < 0 || k >= w)
        gk_die("evalwin: window: expected 0..%lld, found %lld", (long long)w - 1, (long long)k);
    int64_t end = k == 0 ? context : context + k * stride;
    int64_t prev = k == 0 ? 0 : context + (k - 1) * stride;
    if (end > n)
        end = n;
    *start = end - context;
    *first = (int)(context - (end - prev));
}

int gk_evalwin_per_batch(const gk_val *v, int context, int stride, int64_t batch_tokens)
{
    int64_t w = gk_evalwin_count(v->n - 1, context, stride);
    int64_t per = batch_tokens / context;
    if (per < 1)
        per = 1;
    if (per > w)
        per = w;
    if (per * context > INT32_MAX)
        gk_die("evalwin: expected a batch of at most %d tokens, found %lld", INT32_MAX,
               (long long)(per * context));
    return (int)per;
}

gk_val_sums gk_evalwin_run(const gk_val *v, const gk_layout *l, gk_evalwin_forward fwd,
                           void *fctx, const gk_tok *tok, int context, int stride,
                           int64_t batch_tokens, gk_evalwin_progress progress, void *ctx)
{
    int64_t n = v->n - 1;
    int T = context;
    if ((uint32_t)l->cfg.model.vocab != v->vocab)
        gk_die("evalwin: model.vocab: expected %u (the vocab the val tokens were checked "
               "against), found %d", v->vocab, l->cfg.model.vocab);
    if (tok && tok->vocab != v->vocab)
        gk_die("evalwin: tokenizer vocab: expected %u (the model's), found %u", v->vocab,
               tok->vocab);
    if (T > l->cfg.model.seq_len)
        gk_die("evalwin: context: expected at most model.seq_len %d, found %d",
               l->cfg.model.seq_len, T);
    int64_t w = gk_evalwin_count(n, T, stride);
    int per = gk_evalwin_per_batch(v, T, stride, batch_tokens);
    int *x = gk_malloc((size_t)per * T * sizeof *x);
    int *y = gk_malloc((size_t)per * T * sizeof *y);
    double *loss = gk_malloc((size_t)per * T * sizeof *loss);
    int *first = gk_malloc((size_t)per * sizeof *first);
    gk_val_sums s = {0, 0, 0};
    for (int64_t k0 = 0; k0 < w; k0 += per) {
        int B = (int)(w - k0 < per ? w - k0 : per);
        for (int b = 0; b < B; b++) {
            int64_t start;
            gk_evalwin_window(n, T, stride, k0 + b, &start, &first[b]);
            for (int j = 0; j < T; j++) {
                x[b * T + j] = v->tokens[start + j];
                y[b * T + j] = v->tokens[start + j + 1];
            }
        }
        fwd(fctx, B, T, x, y, loss);
        for (int b = 0; b < B; b++) {
            double sum = 0;
            int64_t bytes = 0;
            for (int j = first[b]; j < T; j++) {
                sum += loss[b * T + j];
                if (tok)
                    bytes += tok->len[y[b * T + j]];
            }
            s.loss_sum += sum;
            s.tokens += T - first[b];
            s.bytes += (double)bytes;
        }
        if (progress)
            progress(ctx, (int64_t)s.tokens);
    }
    free(x);
    free(y);
    free(loss);
    free(first);
    return s;
}

/* The CPU forward: one model per batch shape (gk_model_cache). */
typedef struct {
    gk_model_cache cache;
    const float *params;
} cpu_ctx;

static double cpu_forward(void *ctx, int B, int T, const int *tokens, const int *targets,
                          double *losses)
{
    cpu_ctx *c = ctx;
    return gk_model_forward_rows_f32(gk_model_cache_get(&c->cache, B, T), c->params, tokens,
                                     targets, losses);
}

gk_val_sums gk_evalwin_run_cpu(const gk_val *v, const gk_layout *l, const float *params,
                               const gk_tok *tok, int context, int stride,
                               int64_t batch_tokens, gk_evalwin_progress progress,
                               void *ctx)
{
    cpu_ctx c = {{.l = l}, params};
    gk_val_sums s = gk_evalwin_run(v, l, cpu_forward, &c, tok, context, stride, batch_tokens,
                                   progress, ctx);
    gk_model_cache_free(&c.cache);
    return s;
}
