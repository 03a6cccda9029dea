/* evalwin_test: TAP proof that the sliding-window evaluation of evalwin.h
 * scores the targets it promises, with the context it promises.
 *
 * A tiny model (vocab 260 so that a real tokenizer fits it: 256 bytes, 3
 * merges, BOS; 2 layers, width 16, seq_len 8), its initial weights perturbed
 * so that attention sees the context (the zero-init projections would make
 * every position's loss independent of it), on 65 random tokens (64 targets,
 * 8 sequences). Checks: stride = context = seq_len against gk_val_run_cpu
 * (eval_val's non-overlapping sequences); for strides and contexts that divide
 * and that do not, every target scored exactly once and the loss equal to the
 * mean of each target's loss recomputed alone, by one forward over exactly the
 * context the window definition gives it (different shapes round differently
 * in float: a relative 1e-5); the result independent of the batch size; and
 * with all-zero weights (uniform logits, loss ln V), bpb computed by hand. */
#include "evalwin.h"
#include "tap.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { V = 260, SEQ = 8, NTOK = 65 };

static gk_config tiny(void)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = V, c.model.n_layer = 2, c.model.d_model = 16;
    c.model.n_head = 4, c.model.n_kv_head = 2, c.model.seq_len = SEQ;
    c.train.grad_accum = 1, c.train.batch_tokens = 2 * SEQ, c.train.val_batch_tokens = 2 * SEQ;
    gk_config_check(&c, "tiny");
    return c;
}

/* Bytes 97 'a', 98 'b', 99 'c'; merge 256 = "ab", 257 = "abc", 258 = "bc";
 * special 259 = BOS (0 bytes). */
static gk_tok *tiny_tok(void)
{
    static const uint32_t merges[3][2] = {{97, 98}, {256, 99}, {98, 99}};
    char *special[1] = {"<bos>"};
    return gk_tok_new(merges, 3, special, 1, 0);
}

/* The loss of target I alone: one forward (B = 1) over the inputs that the
 * window definition gives it, written here from the definition (target i < T
 * is in window 0, which starts at 0; a later one is in the window k >= 1 with
 * T + (k-1) S <= i < T + k S, which ends at min(T + k S, N)), and its last
 * position's loss. */
static double alone(const gk_layout *l, const float *p, const uint16_t *tok, int64_t n, int T,
                    int S, int64_t i, int *ctx_len)
{
    int64_t start = 0;
    if (i >= T) {
        int64_t k = (i - T) / S + 1, end = T + k * S < n ? T + k * S : n;
        start = end - T;
    }
    int len = (int)(i - start + 1);
    *ctx_len = len - 1;
    int *x = gk_malloc((size_t)len * sizeof *x), *y = gk_malloc((size_t)len * sizeof *y);
    double *loss = gk_malloc((size_t)len * sizeof *loss);
    for (int j = 0; j < len; j++)
        x[j] = tok[start + j], y[j] = tok[start + j + 1];
    gk_model_f32 *m = gk_model_new_f32(l, 1, len);
    gk_model_forward_rows_f32(m, p, x, y, loss);
    double r = loss[len - 1];
    gk_model_free_f32(m);
    free(x), free(y), free(loss);
    return r;
}

static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fabs(b); }

static void windows_cover(int64_t n, int T, int S)
{
    int64_t w = gk_evalwin_count(n, T, S);
    int *seen = gk_calloc((size_t)n, sizeof *seen);
    int ctx_ok = 1;
    for (int64_t k = 0; k < w; k++) {
        int64_t start;
        int first;
        gk_evalwin_window(n, T, S, k, &start, &first);
        for (int j = first; j < T; j++) {
            seen[start + j]++;
            if (k > 0 && j < T - S)
                ctx_ok = 0;
        }
    }
    int once = 1;
    for (int64_t i = 0; i < n; i++)
        once &= seen[i] == 1;
    ok(once, "N %lld, context %d, stride %d: %lld windows score every target exactly once",
       (long long)n, T, S, (long long)w);
    ok(ctx_ok, "N %lld, context %d, stride %d: every later target sees >= T - S = %d tokens",
       (long long)n, T, S, T - S);
    free(seen);
}

int main(void)
{
    gk_config c = tiny();
    gk_layout l;
    gk_layout_init(&l, &c);
    float *p = gk_malloc(l.numel * sizeof *p);
    gk_model_init_params(&l, p, 1);
    tap_seed(7);
    for (size_t i = 0; i < l.numel; i++)
        p[i] = (float)(p[i] + 0.3 * tap_normal());
    gk_tok *tok = tiny_tok();

    uint16_t tokens[NTOK];
    for (int i = 0; i < NTOK; i++)
        tokens[i] = (uint16_t)(tap_uniform() * V);
    gk_val v = {tokens, NTOK, (NTOK - 1) / SEQ, SEQ, V};
    int64_t n = NTOK - 1;

    /* stride = context = seq_len: eval_val's sequences */
    gk_val_sums a = gk_val_run_cpu(&v, &l, p, tok, 3 * SEQ, 1, 0, 1);
    gk_val_sums b = gk_evalwin_run_cpu(&v, &l, p, tok, SEQ, SEQ, 3 * SEQ, NULL, NULL);
    double la, ba, lb, bb;
    gk_val_result(&a, &la, &ba);
    gk_val_result(&b, &lb, &bb);
    ok(a.tokens == b.tokens && a.bytes == b.bytes && a.bytes > 0,
       "stride = context = seq_len: same targets and bytes as eval_val (%g, %g)", b.tokens,
       b.bytes);
    ok(close_rel(lb, la, 1e-12) && close_rel(bb, ba, 1e-12),
       "stride = context = seq_len: loss %.15g, bpb %.15g as eval_val's %.15g, %.15g", lb, bb,
       la, ba);

    static const int cases[][2] = {{8, 2}, {8, 3}, {6, 4}, {5, 5}, {8, 1}, {3, 2}};
    for (size_t q = 0; q < sizeof cases / sizeof *cases; q++) {
        int T = cases[q][0], S = cases[q][1];
        windows_cover(n, T, S);
        gk_val_sums s = gk_evalwin_run_cpu(&v, &l, p, tok, T, S, 2 * T, NULL, NULL);
        double sum = 0;
        int64_t bytes = 0;
        int ctx_min = T, ctx_max = 0;
        for (int64_t i = 0; i < n; i++) {
            int cl;
            sum += alone(&l, p, tokens, n, T, S, i, &cl);
            bytes += tok->len[tokens[i + 1]];
            if (i >= T)
                ctx_min = cl < ctx_min ? cl : ctx_min, ctx_max = cl > ctx_max ? cl : ctx_max;
        }
        ok(s.tokens == (double)n && s.bytes == (double)bytes,
           "context %d, stride %d: %g targets (of %lld), %g bytes", T, S, s.tokens,
           (long long)n, s.bytes);
        ok(close_rel(s.loss_sum, sum, 1e-5),
           "context %d, stride %d: loss sum %.9g equals each target alone with its context "
           "(%.9g; later targets see %d..%d tokens)", T, S, s.loss_sum, sum, ctx_min, ctx_max);
        gk_val_sums s1 = gk_evalwin_run_cpu(&v, &l, p, tok, T, S, 1, NULL, NULL);
        gk_val_sums s9 = gk_evalwin_run_cpu(&v, &l, p, tok, T, S, 1000, NULL, NULL);
        ok(close_rel(s1.loss_sum, s.loss_sum, 1e-6) && close_rel(s9.loss_sum, s.loss_sum, 1e-6),
           "context %d, stride %d: one window per forward, or all, give the same loss", T, S);
    }
    /* All-zero weights: every logit 0, so each target costs ln V. The tokens
     * repeat BOS, 'a', "ab", "abc": the 64 targets are 16 x ('a', "ab", "abc",
     * BOS) = 16 x 6 = 96 bytes. */
    memset(p, 0, l.numel * sizeof *p);
    static const uint16_t pat[4] = {259, 97, 256, 257};
    for (int i = 0; i < NTOK; i++)
        tokens[i] = pat[i % 4];
    double want_bpb = log(260.0) / log(2.0) * 64.0 / 96.0;
    gk_val_sums z = gk_evalwin_run_cpu(&v, &l, p, tok, 8, 3, 16, NULL, NULL);
    gk_val_sums zf = gk_val_run_cpu(&v, &l, p, tok, 16, 1, 0, 1);
    double lz, bz, lzf, bzf;
    gk_val_result(&z, &lz, &bz);
    gk_val_result(&zf, &lzf, &bzf);
    ok(z.tokens == 64 && z.bytes == 96, "uniform model: 64 targets, 96 bytes (%g, %g)", z.tokens,
       z.bytes);
    ok(close_rel(lz, log(260.0), 1e-6) && close_rel(lzf, log(260.0), 1e-6),
       "uniform model: loss ln 260 = %.9f (sliding %.9f, non-overlapping %.9f)", log(260.0), lz,
       lzf);
    ok(close_rel(bz, want_bpb, 1e-6) && close_rel(bzf, want_bpb, 1e-6),
       "uniform model: bpb ln 260 / ln 2 x 64 / 96 = %.9f (sliding %.9f, non-overlapping %.9f)",
       want_bpb, bz, bzf);
    gk_val_sums zn = gk_evalwin_run_cpu(&v, &l, p, NULL, 8, 3, 16, NULL, NULL);
    double lzn, bzn;
    gk_val_result(&zn, &lzn, &bzn);
    ok(zn.bytes == 0 && isnan(bzn), "no tokenizer: no bytes, bpb NaN");

    gk_tok_free(tok);
    gk_layout_free(&l);
    free(p);
    printf("1..%d\n", tap_n);
    return tap_failed != 0;
}
