/* config_test: TAP unit tests of moe-train's config: the defaults are the
 * parameter-golf baseline, a file overrides a subset, every kind of error dies
 * with exit 1 and its exact one-line message, printing and parsing back give
 * the same config, --set assignments, the example configs in testdata/config,
 * and the parameter counts.
 *
 * Failing loads run in a forked child whose stderr goes to a pipe, so the test
 * sees gk_die()'s real exit status and text. Configs are written to a
 * temporary directory named config.json, as a user's file would be. */
#include "config.h"
#include "tap.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXAMPLES "testdata/config/"

static char dir[] = "/tmp/config_test.XXXXXX";
static char path[64]; /* dir/config.json */

static void write_config(const char *json)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(json, f) < 0 || fclose(f) != 0)
        gk_die("%s: cannot write", path);
}

/* The config's full text, for comparing two configs key by key. */
static int same(const gk_config *a, const gk_config *b)
{
    char *x = gk_config_to_json(a), *y = gk_config_to_json(b);
    int eq = strcmp(x, y) == 0;
    free(x);
    free(y);
    return eq;
}

typedef void (*action)(const char *arg);

static void act_load(const char *arg)
{
    gk_config c;
    gk_config_load(&c, arg);
}

static void act_set(const char *arg)
{
    gk_config c;
    gk_config_defaults(&c);
    gk_config_set(&c, arg, "--set");
    gk_config_check(&c, "--set");
}

/* Run ACT(ARG) in a child. True when it exits with status 1 and its stderr is
 * exactly the one line WANT; GOT receives what it printed. */
static int dies_with(action act, const char *arg, const char *want, char *got, size_t n)
{
    return tap_child(act, arg, got, n) == 1 && strcmp(got, want) == 0;
}

/* The config JSON must fail to load with "config: PATH: MSG". */
static void file_error(const char *json, const char *msg)
{
    char want[1024], got[1024];
    write_config(json);
    snprintf(want, sizeof want, "%s: %s: %s", gk_prog(), path, msg);
    ok(dies_with(act_load, path, want, got, sizeof got), "%s -> %s", json, got);
}

static void set_error(const char *assignment, const char *msg)
{
    char want[1024], got[1024];
    snprintf(want, sizeof want, "%s: --set: %s", gk_prog(), msg);
    ok(dies_with(act_set, assignment, want, got, sizeof got), "--set %s -> %s", assignment, got);
}

static void test_defaults(void)
{
    gk_config c;
    gk_config_defaults(&c);
    /* Model: train_gpt.py's Hyperparameters and the model it builds. */
    ok(c.model.vocab == 1024 && c.model.n_layer == 9 && c.model.d_model == 512 &&
       c.model.n_head == 8 && c.model.n_kv_head == 4 && c.model.mlp_mult == 2,
       "shape: vocab 1024, 9 layers, width 512, 8 heads, 4 KV heads, MLP 2x");
    ok(c.model.activation == GK_ACT_RELU2 && c.model.tie_embeddings &&
       c.model.tied_embed_init_std == 0.005 && c.model.logit_softcap == 30 &&
       c.model.rope_base == 10000 && c.model.qk_gain_init == 1.5 && c.model.seq_len == 1024,
       "relu2, tied (std 0.005), softcap 30, RoPE base 10000, q gain 1.5, seq 1024");
    ok(gk_config_head_dim(&c) == 64 && gk_config_rope_dims(&c) == 64 &&
       gk_config_mlp_hidden(&c) == 1024 && gk_config_expert_hidden(&c) == 1024,
       "derived: head 64, RoPE on all 64 dims, MLP hidden 1024");
    ok(c.moe.n_experts == 1 && c.moe.n_shared == 0 && c.moe.top_k == 1,
       "moe: one routed expert, no shared, top-1 (dense)");
    ok(c.train.steps == 20000 && c.train.max_seconds == 600 && c.train.batch_tokens == 524288 &&
       c.train.grad_accum == 8 && c.train.prime_steps == 20 && c.train.warmdown_steps == 1200 &&
       c.train.lr_warmup_steps == 0 && c.train.lr_schedule == GK_SCHED_LINEAR_WARMDOWN &&
       c.train.schedule_clock == GK_CLOCK_AUTO && c.train.lr_final_scale == 0,
       "length: 20000 steps, 600 s cap, 524288 tokens, 8 micro-batches, 20 priming, "
       "linear warmdown 1200");
    ok(c.train.embed_lr == 0.6 && c.train.head_lr == 0.008 && c.train.tied_embed_lr == 0.05 &&
       c.train.matrix_lr == 0.04 && c.train.scalar_lr == 0.04,
       "learning rates 0.6 / 0.008 / 0.05 / 0.04 / 0.04");
    ok(c.train.muon_momentum == 0.95 && c.train.muon_momentum_warmup_start == 0.85 &&
       c.train.muon_momentum_warmup_steps == 500 && c.train.muon_backend_steps == 5 &&
       c.train.muon_nesterov && c.train.muon_weight_decay == 0,
       "Muon: momentum 0.95 from 0.85 over 500 steps, 5 Newton-Schulz steps, Nesterov");
    ok(c.train.beta1 == 0.9 && c.train.beta2 == 0.95 && c.train.adam_eps == 1e-8 &&
       c.train.adam_weight_decay == 0 && c.train.grad_clip_norm == 0,
       "Adam: betas 0.9, 0.95, eps 1e-8, no decay; no clipping");
    ok(c.train.seed == 1337 && c.train.val_every == 1000 && c.train.val_batch_tokens == 524288 &&
       c.train.val_tokens == 0 && c.train.log_every == 200 && c.train.ckpt_every == 0 &&
       c.train.ema_decay == 0,
       "seed 1337, val every 1000 (524288-token batches, whole split), log every 200, no EMA");

    gk_config e;
    gk_config_defaults(&e);
    gk_config_apply_text(&e, "{}", 2, "empty");
    gk_config_check(&e, "empty");
    ok(same(&c, &e), "an empty object is the baseline");
    gk_config_load(&e, EXAMPLES "golf.json");
    ok(same(&c, &e), "testdata/config/golf.json is the baseline, every key spelt out");
}

static void test_override(void)
{
    gk_config c, d;
    gk_config_defaults(&d);
    write_config("{\"train\": {\"matrix_lr\": 0.02, \"lr_schedule\": \"cosine\"},\n"
                 " \"model\": {\"n_layer\": 4, \"tie_embeddings\": false}}");
    gk_config_load(&c, path);
    ok(c.model.n_layer == 4 && !c.model.tie_embeddings && c.train.matrix_lr == 0.02 &&
       c.train.lr_schedule == GK_SCHED_COSINE, "the four keys given are set");
    d.model.n_layer = 4;
    d.model.tie_embeddings = false;
    d.train.matrix_lr = 0.02;
    d.train.lr_schedule = GK_SCHED_COSINE;
    ok(same(&c, &d), "every other key keeps its default");
}

static void test_errors(void)
{
    /* Keys. */
    file_error("{\"model\": {\"n_heads\": 8}}",
               "field model.n_heads: unknown key; did you mean model.n_head?");
    file_error("{\"model\": {\"top_k\": 2}}",
               "field model.top_k: unknown key; did you mean moe.top_k?");
    file_error("{\"modle\": {}}", "field modle: unknown key; did you mean model?");
    file_error("{\"model\": 3}", "field model: expected an object, found 3");
    file_error("[1]", "expected a JSON object with sections model, moe, train, found an array");
    file_error("{\"model\": {", "expected JSON, found an error: "
               "Unfinished JSON term at EOF at line 1, column 11");
    file_error("", "expected JSON, found an error: Expected JSON value");
    /* Types. */
    file_error("{\"train\": {\"matrix_lr\": \"0.04\"}}",
               "field train.matrix_lr: expected a number, found a string \"0.04\"");
    file_error("{\"model\": {\"n_layer\": 4.5}}",
               "field model.n_layer: expected an integer, found 4.5");
    file_error("{\"model\": {\"n_layer\": null}}",
               "field model.n_layer: expected an integer, found null");
    file_error("{\"model\": {\"rope_base\": nan}}",
               "field model.rope_base: expected a finite number, found nan");
    file_error("{\"model\": {\"tie_embeddings\": 1}}",
               "field model.tie_embeddings: expected true or false, found 1");
    file_error("{\"model\": {\"activation\": \"gelu\"}}",
               "field model.activation: expected one of relu2, leaky_relu2, swiglu, "
               "found a string \"gelu\"");
    /* Ranges. */
    file_error("{\"model\": {\"n_layer\": 0}}",
               "field model.n_layer: expected an integer in 1..1024, found 0");
    file_error("{\"train\": {\"beta2\": 1}}",
               "field train.beta2: expected a number in [0, 1), found 1");
    file_error("{\"train\": {\"adam_eps\": 0}}",
               "field train.adam_eps: expected a number in (0, 1], found 0");
    file_error("{\"train\": {\"matrix_lr\": -0.1}}",
               "field train.matrix_lr: expected a number >= 0, found -0.1");
    /* Shapes. */
    file_error("{\"model\": {\"n_kv_head\": 3}}",
               "model.n_head 8 is not a multiple of model.n_kv_head 3: grouped-query attention "
               "needs each KV head to serve the same number of query heads");
    file_error("{\"model\": {\"d_model\": 500}}",
               "model.d_model 500 is not a multiple of model.n_head 8: every head needs the "
               "same width d_model / n_head");
    file_error("{\"model\": {\"rope_dims\": 66}}",
               "model.rope_dims 66 exceeds the head width 64 (model.d_model 512 / model.n_head "
               "8): rotary acts within one head");
    file_error("{\"model\": {\"rope_dims\": 15}}",
               "model.rope_dims 15 is odd: rotary embedding turns pairs of dimensions");
    file_error("{\"model\": {\"d_model\": 520}}",
               "the head width 65 (model.d_model 520 / model.n_head 8) is odd: rotary embedding "
               "turns pairs of dimensions; set model.rope_dims to an even number below it");
    file_error("{\"moe\": {\"n_experts\": 2, \"top_k\": 3}}",
               "moe.top_k 3 exceeds moe.n_experts 2: each token picks top_k different routed "
               "experts");
    file_error("{\"moe\": {\"n_experts\": 4, \"top_k\": 2, \"router\": \"token\"}}",
               "moe.top_k is 2 but moe.router token sends each token to the one expert "
               "token_id mod moe.n_experts: top_k must be 1");
    file_error("{\"train\": {\"batch_tokens\": 500000}}",
               "train.batch_tokens 500000 is not a multiple of train.grad_accum 8 x "
               "model.seq_len 1024: every micro-batch must hold whole sequences");
    file_error("{\"train\": {\"val_batch_tokens\": 4096}}",
               "train.val_batch_tokens 4096 is less than train.grad_accum 8 x model.seq_len "
               "1024: every validation micro-batch needs at least one sequence");
    file_error("{\"train\": {\"schedule_clock\": \"wallclock\", \"max_seconds\": 0}}",
               "train.schedule_clock wallclock needs train.max_seconds > 0: the schedule is "
               "measured against the wall-clock cap");
    file_error("{\"train\": {\"steps\": 100, \"lr_warmup_steps\": 500}}",
               "train.lr_warmup_steps 500 exceeds train.steps 100: the warmup would never "
               "finish");

    char want[512], got[512];
    snprintf(want, sizeof want, "%s: %s/absent.json: cannot open: No such file or directory",
             gk_prog(), dir);
    snprintf(path, sizeof path, "%s/absent.json", dir);
    ok(dies_with(act_load, path, want, got, sizeof got), "a missing file dies naming it: %s", got);
    snprintf(path, sizeof path, "%s/config.json", dir);
}

static void test_set(void)
{
    gk_config c;
    gk_config_defaults(&c);
    gk_config_set(&c, "model.n_layer=4", "--set");
    gk_config_set(&c, "model.activation=swiglu", "--set");
    gk_config_set(&c, "model.tie_embeddings=false", "--set");
    gk_config_set(&c, "train.matrix_lr=0.02", "--set");
    gk_config_set(&c, "train.seed=42", "--set");
    gk_config_set(&c, "moe.router=\"softmax\"", "--set");
    gk_config_check(&c, "--set");
    ok(c.model.n_layer == 4 && c.model.activation == GK_ACT_SWIGLU && !c.model.tie_embeddings &&
       c.train.matrix_lr == 0.02 && c.train.seed == 42 && c.moe.router == GK_ROUTER_SOFTMAX,
       "numbers, bools, bare and quoted strings are assigned");

    /* A file may be invalid on its own and fixed by a later --set. */
    gk_config_defaults(&c);
    gk_config_apply_text(&c, "{\"model\": {\"d_model\": 384}}", 27, "f.json");
    gk_config_set(&c, "model.n_head=6", "--set");
    gk_config_set(&c, "model.n_kv_head=3", "--set");
    gk_config_check(&c, "f.json");
    ok(gk_config_head_dim(&c) == 64, "d_model 384 with 6 heads: checked after all sources");

    set_error("model.n_heads=4", "field model.n_heads: unknown key; did you mean model.n_head?");
    set_error("model.n_layer", "expected SECTION.KEY=VALUE (e.g. model.n_layer=4), found "
              "\"model.n_layer\"");
    set_error("model.n_layer=abc", "field model.n_layer: expected an integer, found a string "
              "\"abc\"");
    set_error("model.n_kv_head=3", "model.n_head 8 is not a multiple of model.n_kv_head 3: "
              "grouped-query attention needs each KV head to serve the same number of query heads");
}

static int count_keys(jv o)
{
    int n = 0;
    jv_object_foreach(o, k, v) {
        n += jv_get_kind(v) == JV_KIND_OBJECT ? count_keys(jv_copy(v)) : 1;
        jv_free(k);
        jv_free(v);
    }
    jv_free(o);
    return n;
}

static void test_round_trip(void)
{
    const char *examples[] = {"golf.json", "small-cpu.json", "moe.json"};
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, EXAMPLES "%s", examples[i]);
        gk_config a, b;
        gk_config_load(&a, p);
        char *text = gk_config_to_json(&a);
        /* Parse back over a config that differs from a's in several keys. */
        gk_config_defaults(&b);
        gk_config_set(&b, "model.n_layer=1", "t");
        gk_config_set(&b, "moe.router=token", "t");
        gk_config_set(&b, "train.adam_eps=0.5", "t");
        gk_config_apply_text(&b, text, strlen(text), "printed");
        gk_config_check(&b, "printed");
        char *again = gk_config_to_json(&b);
        ok(same(&a, &b), "%s: parsing the printed config gives the same config", examples[i]);
        ok(strcmp(text, again) == 0, "%s: print, parse, print gives the same bytes", examples[i]);
        free(text);
        free(again);
    }

    gk_config c;
    gk_config_defaults(&c);
    jv o = gk_config_to_jv(&c);
    ok(jv_equal(jv_keys_unsorted(jv_copy(o)), jv_parse("[\"model\", \"moe\", \"train\"]")),
       "sections in the order model, moe, train");
    ok(count_keys(o) == 54, "54 keys in all (15 model, 6 moe, 33 train)");
    char *text = gk_config_to_json(&c);
    ok(strncmp(text, "{\n  \"model\": {\n    \"vocab\": 1024,\n", 34) == 0 &&
       text[strlen(text) - 1] == '\n' && strstr(text, "\"adam_eps\": 1e-08,"),
       "indented by two, numbers in their shortest form");
    free(text);
}

static void test_params(void)
{
    gk_config c;
    int64_t total, active;
    gk_config_defaults(&c);
    gk_config_params(&c, &total, &active);
    /* train_gpt.py's baseline, by hand (its log line model_params:17059912):
     *   tok_emb 1024 x 512                                       =    524,288
     *   per block: c_q 512x512 + c_k 512x256 + c_v 512x256
     *              + proj 512x512 = 786,432; q_gain 8;
     *              fc 512x1024 + proj 1024x512 = 1,048,576;
     *              attn_scale 512 + mlp_scale 512 + resid_mix 2x512 = 2,048
     *              = 1,837,064, times 9 blocks                   = 16,533,576
     *   skip_weights min(4, 5) x 512                             =      2,048
     *   total                                                    = 17,059,912 */
    ok(total == 17059912 && active == total, "baseline: %lld parameters (train_gpt.py: 17059912)",
       (long long)total);

    gk_config_set(&c, "model.tie_embeddings=false", "t");
    gk_config_params(&c, &total, &active);
    ok(total == 17059912 + 524288, "untied: plus a 1024 x 512 head");

    gk_config_load(&c, EXAMPLES "small-cpu.json");
    gk_config_params(&c, &total, &active);
    /* 1024x256 embedding 262,144; per block 2x256x256 + 2x256x128 + 4 (attention)
     * + 4x256 (scales) + 2x256x512 (MLP) = 459,780, x4 = 1,839,120; skips 2x256. */
    ok(total == 2101776 && active == total, "small-cpu.json: %lld parameters (2101776)",
       (long long)total);

    gk_config_load(&c, EXAMPLES "moe.json");
    gk_config_params(&c, &total, &active);
    /* As small-cpu but SwiGLU experts of hidden 256 (3x256x256 = 196,608 each),
     * 8 routed + 1 shared, router 256x8: block 196,612 + 1,024 + 9x196,608 + 2,048
     * = 1,969,156, x4 = 7,876,624; + 262,144 + 512 = 8,139,280. A token skips
     * 6 routed experts per block: active = total - 4x6x196,608 = 3,420,688. */
    ok(total == 8139280 && active == 3420688, "moe.json: %lld total, %lld active",
       (long long)total, (long long)active);
    gk_config_set(&c, "moe.router=token", "t");
    gk_config_set(&c, "moe.top_k=1", "t");
    gk_config_params(&c, &total, &active);
    ok(total == 8139280 - 4 * 2048 && active == total - 4 * 7 * 196608,
       "token routing has no router weights");
}

int main(int argc, char **argv)
{
    (void)argc;
    gk_set_prog(argv[0]);
    if (!mkdtemp(dir))
        gk_die("%s: cannot create a temporary directory", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    test_defaults();
    test_override();
    test_errors();
    test_set();
    test_round_trip();
    test_params();
    unlink(path);
    rmdir(dir);
    return tap_done();
}
