/* check_decode: the GPU decoder of decode.cu (gk_gpu_dec, lib/gpu.h) against
 * the CPU's, lib/generate.h's gk_gen, step for step; registered in check.h's
 * GK_CHECKS, run by bin/check-cuda.
 *
 * Cases: a dense model (relu2, 4 layers, so two U-Net skips; GQA 4/2, head
 * dim 16, partial rotary) and a MoE one (token router, 4 routed + 1 shared
 * SwiGLU experts: its routing is a function of the token, so both sides
 * route alike whatever the rounding; the learned routers' agreement is
 * check_moe's business), vocab 128, seq_len 64. Three streams: prompts of
 * 6, 11 and 1 random tokens, then each stream continues with random tokens
 * until it holds 64, 23 and 31; a step feeds the streams that still have
 * tokens, in an order that alternates (so a row's stream is not its index),
 * and stream 1 is reset and refed halfway (a reused cache slot). Every row's
 * logits are compared with its stream's gk_gen_step on the same token.
 *
 * Same weights on both sides: the parameters are rounded to bf16 first, so
 * the GPU's bf16 copy holds what the CPU multiplies by. The GPU then differs
 * by rounding to bf16 each product's input activation (attn_norm's and
 * mlp_norm's outputs, the attention output, the activation), about 2^-9
 * relative each, and by summation orders; random weights of N(0, 1/in)
 * make the blocks amplify it. Each row's error is relative per element,
 * floored by the row's RMS (gk_check_rel_err). Over the first runs on an
 * H100 the worst row of a case measured 1.4e-2 to 4.8e-2 (the MoE's SwiGLU
 * rounds two more inputs), the mean over rows 0.9e-2 to 1.1e-2: the bounds
 * are 1e-1 for the worst row and 2e-2 for the mean. A wrong position, stream
 * or cache slot gives an O(1) error on most rows, which the mean catches. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
extern "C" {
#include "generate.h"
#include "gpu.h"
}

enum { STREAMS = 3, SEQ = 64 };

static void check_case(int moe, const char *name)
{
    gk_config c;
    gk_config_defaults(&c);
    c.model.vocab = 128, c.model.n_layer = 4, c.model.d_model = 64, c.model.seq_len = SEQ;
    c.model.n_head = 4, c.model.n_kv_head = 2, c.model.rope_dims = 8;
    c.model.activation = moe ? GK_ACT_SWIGLU : GK_ACT_RELU2;
    if (moe) {
        c.moe.n_experts = 4, c.moe.n_shared = 1, c.moe.expert_hidden = 32, c.moe.top_k = 1;
        c.moe.router = GK_ROUTER_TOKEN;
    }
    gk_config_check(&c, "check_decode");
    gk_layout l;
    gk_layout_init(&l, &c);
    float *params = gk_check_random_params(&l);
    gk_check_round_bf16(params, l.numel);

    const int prompt[STREAMS] = {6, 11, 1}, total[STREAMS] = {SEQ, 23, 31};
    int *seq = (int *)gk_check_xalloc((size_t)STREAMS * SEQ * sizeof(int));
    for (int i = 0; i < STREAMS * SEQ; i++)
        seq[i] = gk_check_rand_int(c.model.vocab);
    gk_gen *cpu[STREAMS];
    for (int s = 0; s < STREAMS; s++)
        cpu[s] = gk_gen_new(&l, params, SEQ);
    gk_gpu_dec *gpu = gk_gpu_dec_new(&l, params, STREAMS, SEQ, "check_decode");

    int fed[STREAMS] = {0}, streams[STREAMS], tokens[STREAMS], reset_done = 0;
    double worst = 0, sum = 0;
    long rows = 0;
    for (int step = 0;; step++) {
        int n = 0;
        for (int k = 0; k < STREAMS; k++) {
            int s = step % 2 ? STREAMS - 1 - k : k;
            /* prompts go in first: a stream waits until every prompt is in */
            int limit = step < 11 ? prompt[s] : total[s];
            if (fed[s] < limit)
                streams[n] = s, tokens[n++] = seq[s * SEQ + fed[s]++];
        }
        if (!n && step >= 11)
            break;
        if (!n)
            continue;
        const float *got = gk_gpu_dec_step(gpu, n, streams, tokens);
        for (int i = 0; i < n; i++) {
            const float *want = gk_gen_step(cpu[streams[i]], tokens[i]);
            double e = gk_check_rel_err(got + (size_t)i * c.model.vocab, want, c.model.vocab);
            worst = e > worst || isnan(e) ? e : worst;
            sum += e;
            rows++;
        }
        if (!reset_done && fed[1] == 17) { /* stream 1 again from its start */
            gk_gpu_dec_reset(gpu, 1);
            gk_gen_reset(cpu[1]);
            fed[1] = 0, reset_done = 1;
        }
    }
    int full = gk_gpu_dec_pos(gpu, 0) == SEQ && gk_gen_room(cpu[0]) == 0;
    double mean = sum / (double)rows;
    GK_OK(worst <= 1e-1 && mean <= 2e-2 && full && rows == SEQ + 23 + 31 + 17,
          "decode %s: %ld rows of 3 streams (one reset) against gk_gen, rel err max %.2e <= "
          "1e-1, mean %.2e <= 2e-2, stream 0 full at %d", name, rows, worst, mean, SEQ);

    gk_gpu_dec_free(gpu);
    for (int s = 0; s < STREAMS; s++)
        gk_gen_free(cpu[s]);
    free(seq);
    free(params);
    gk_layout_free(&l);
}

void gk_check_decode(gk_cu_arena *arena)
{
    (void)arena; /* the decoder plans and owns its memory */
    check_case(0, "dense relu2");
    check_case(1, "moe token-routed swiglu");
}
