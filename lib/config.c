/* config: moe-train's JSON config; see config.h for the contract and
 * man5/moe-config.5 for every key.
 *
 * One table (keys[] below) lists each key once with its C field, default and
 * range. Applying, printing, the unknown-key suggestion and the defaults all
 * walk that table, so a new key is one line here plus its paragraph in the man
 * page, and the printed order is the table's order. The C type of each field
 * is read from the struct with _Generic, so a row cannot store a double into
 * an int field by mistake.
 *
 * Errors are built into a buffer first and reported by gk_die() only after
 * every jv value and buffer is freed: a failed parse leaves nothing for the
 * leak checker, so the unit tests can check exit status 1 exactly. */
#include "config.h"
#include "io.h"
#include "util.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_INT, K_I64, K_NUM, K_BOOL, K_ENUM } kind;

enum { LO_OPEN = 1, HI_OPEN = 2 }; /* a number range that excludes its bound */

typedef struct {
    const char *name; /* "section.key" */
    kind kind;
    size_t off;
    double def;
    double lo, hi; /* inclusive unless flagged open; hi = INFINITY for none */
    int open;
    const char *const *names; /* K_ENUM: value i is names[i]; NULL-terminated */
} key;

static const char *const activations[] = {"relu2", "leaky_relu2", "swiglu", NULL};
static const char *const routers[] = {"sigmoid_bias", "softmax", "token", NULL};
static const char *const schedules[] = {"linear_warmdown", "cosine", "constant", NULL};
static const char *const clocks[] = {"auto", "steps", "wallclock", NULL};

#define FIELD(s, f) ((gk_config *)0)->s.f
#define KIND(s, f)                                                                          \
    _Generic(FIELD(s, f), int: K_INT, int64_t: K_I64, double: K_NUM, bool: K_BOOL,          \
             default: K_ENUM)
/* A number (int, int64 or double) key with range [lo, hi]. */
#define NUM(s, f, def, lo, hi, open) {#s "." #f, KIND(s, f), offsetof(gk_config, s.f), def, lo, hi, open, NULL}
#define BOOL(s, f, def) {#s "." #f, KIND(s, f), offsetof(gk_config, s.f), def, 0, 1, 0, NULL}
#define ENUM(s, f, def, names) {#s "." #f, KIND(s, f), offsetof(gk_config, s.f), def, 0, 0, 0, names}

#define INF INFINITY
#define TOKENS_MAX 1e15 /* a bound on token and step counts that doubles hold exactly */

/* Defaults: the name after "train_gpt.py" is the Hyperparameters attribute (or
 * the line of the model code) that each default mirrors. */
static const key keys[] = {
    /* model */
    NUM(model, vocab, 1024, 2, 65536, 0),          /* train_gpt.py vocab_size */
    NUM(model, n_layer, 9, 1, 1024, 0),            /* train_gpt.py num_layers */
    NUM(model, d_model, 512, 2, 65536, 0),         /* train_gpt.py model_dim */
    NUM(model, n_head, 8, 1, 4096, 0),             /* train_gpt.py num_heads */
    NUM(model, n_kv_head, 4, 1, 4096, 0),          /* train_gpt.py num_kv_heads */
    NUM(model, mlp_mult, 2, 1, 64, 0),             /* train_gpt.py mlp_mult */
    NUM(model, mlp_hidden, 0, 0, 1 << 20, 0),      /* train_gpt.py: hidden = mlp_mult * dim */
    ENUM(model, activation, GK_ACT_RELU2, activations), /* train_gpt.py MLP: relu, then square */
    BOOL(model, tie_embeddings, 1),                /* train_gpt.py tie_embeddings */
    NUM(model, tied_embed_init_std, 0.005, 0, 1e3, LO_OPEN), /* train_gpt.py tied_embed_init_std */
    NUM(model, logit_softcap, 30, 0, 1e6, 0),      /* train_gpt.py logit_softcap; 0: off */
    NUM(model, rope_base, 10000, 0, INF, LO_OPEN), /* train_gpt.py rope_base */
    NUM(model, rope_dims, 0, 0, 65536, 0),         /* train_gpt.py: Rotary over the whole head_dim */
    NUM(model, qk_gain_init, 1.5, 0, 1e6, LO_OPEN), /* train_gpt.py qk_gain_init */
    NUM(model, seq_len, 1024, 1, 1 << 24, 0),      /* train_gpt.py train_seq_len */
    /* moe: not in train_gpt.py; the defaults make the dense baseline (one
     * routed expert that every token takes). The router and its bias rate
     * follow DeepSeek-V3's aux-loss-free balancing (bias speed 0.001). */
    NUM(moe, n_experts, 1, 1, 4096, 0),
    NUM(moe, n_shared, 0, 0, 64, 0),
    NUM(moe, top_k, 1, 1, 4096, 0),
    NUM(moe, expert_hidden, 0, 0, 1 << 20, 0),
    ENUM(moe, router, GK_ROUTER_SIGMOID_BIAS, routers),
    NUM(moe, bias_update_rate, 0.001, 0, 1, 0),
    /* train */
    NUM(train, steps, 20000, 0, TOKENS_MAX, 0),          /* train_gpt.py iterations */
    NUM(train, max_seconds, 600, 0, INF, 0),             /* train_gpt.py max_wallclock_seconds */
    NUM(train, batch_tokens, 524288, 1, TOKENS_MAX, 0),  /* train_gpt.py train_batch_tokens */
    NUM(train, grad_accum, 8, 1, 1 << 20, 0),            /* train_gpt.py grad_accum_steps = 8 // WORLD_SIZE */
    NUM(train, prime_steps, 20, 0, 1 << 20, 0),          /* train_gpt.py warmup_steps (undone afterwards) */
    ENUM(train, lr_schedule, GK_SCHED_LINEAR_WARMDOWN, schedules), /* train_gpt.py lr_mul */
    ENUM(train, schedule_clock, GK_CLOCK_AUTO, clocks),  /* train_gpt.py lr_mul: by time iff a cap is set */
    NUM(train, lr_warmup_steps, 0, 0, TOKENS_MAX, 0),    /* train_gpt.py lr_mul has no LR warmup */
    NUM(train, warmdown_steps, 1200, 0, TOKENS_MAX, 0),  /* train_gpt.py warmdown_iters */
    NUM(train, lr_final_scale, 0, 0, 1, 0),              /* train_gpt.py lr_mul ends at 0 */
    NUM(train, embed_lr, 0.6, 0, INF, 0),                /* train_gpt.py embed_lr (untied) */
    NUM(train, head_lr, 0.008, 0, INF, 0),               /* train_gpt.py head_lr (untied) */
    NUM(train, tied_embed_lr, 0.05, 0, INF, 0),          /* train_gpt.py tied_embed_lr */
    NUM(train, matrix_lr, 0.04, 0, INF, 0),              /* train_gpt.py matrix_lr */
    NUM(train, scalar_lr, 0.04, 0, INF, 0),              /* train_gpt.py scalar_lr */
    NUM(train, muon_momentum, 0.95, 0, 1, HI_OPEN),      /* train_gpt.py muon_momentum */
    NUM(train, muon_momentum_warmup_start, 0.85, 0, 1, HI_OPEN), /* train_gpt.py muon_momentum_warmup_start */
    NUM(train, muon_momentum_warmup_steps, 500, 0, TOKENS_MAX, 0), /* train_gpt.py muon_momentum_warmup_steps */
    NUM(train, muon_backend_steps, 5, 1, 100, 0),        /* train_gpt.py muon_backend_steps */
    BOOL(train, muon_nesterov, 1),                       /* train_gpt.py Muon(nesterov=True) */
    NUM(train, muon_weight_decay, 0, 0, INF, 0),         /* train_gpt.py Muon: no weight decay */
    NUM(train, beta1, 0.9, 0, 1, HI_OPEN),               /* train_gpt.py beta1 */
    NUM(train, beta2, 0.95, 0, 1, HI_OPEN),              /* train_gpt.py beta2 */
    NUM(train, adam_eps, 1e-8, 0, 1, LO_OPEN),           /* train_gpt.py adam_eps */
    NUM(train, adam_weight_decay, 0, 0, INF, 0),         /* train_gpt.py: torch.optim.Adam, no decay */
    NUM(train, grad_clip_norm, 0, 0, INF, 0),            /* train_gpt.py grad_clip_norm; 0: off */
    NUM(train, seed, 1337, 0, 4294967295.0, 0),          /* train_gpt.py seed */
    NUM(train, val_every, 1000, 0, TOKENS_MAX, 0),       /* train_gpt.py val_loss_every */
    NUM(train, val_batch_tokens, 524288, 1, TOKENS_MAX, 0), /* train_gpt.py val_batch_size */
    NUM(train, val_tokens, 0, 0, TOKENS_MAX, 0),         /* train_gpt.py: always the whole val split */
    NUM(train, log_every, 200, 0, TOKENS_MAX, 0),        /* train_gpt.py train_log_every */
    NUM(train, ckpt_every, 0, 0, TOKENS_MAX, 0),         /* train_gpt.py saves only at the end */
    NUM(train, ema_decay, 0, 0, 1, HI_OPEN),             /* not in train_gpt.py; 0: no EMA (moe-avg --ema) */
};
#define NKEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"model", "moe", "train"};
#define NSECTIONS (sizeof sections / sizeof sections[0])

typedef struct {
    char msg[512];
} err_t;

/* Write the message into *e; returns -1 so callers can "return fail(...)". */
__attribute__((format(printf, 2, 3))) static int fail(err_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void *field(gk_config *c, const key *k) { return (char *)c + k->off; }
static const void *cfield(const gk_config *c, const key *k) { return (const char *)c + k->off; }

void gk_config_defaults(gk_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        const key *k = &keys[i];
        void *p = field(c, k);
        switch (k->kind) {
        case K_INT: case K_ENUM: *(int *)p = (int)k->def; break;
        case K_I64: *(int64_t *)p = (int64_t)k->def; break;
        case K_NUM: *(double *)p = k->def; break;
        case K_BOOL: *(bool *)p = k->def != 0; break;
        }
    }
}

/* Levenshtein distance, for "did you mean". Names are short (< 64 bytes). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63) la = 63;
    if (lb > 63) lb = 63;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The nearest section name (top level) or full key name; ties go to the
 * earlier name in the documented order. */
static const char *nearest(const char *name, bool top)
{
    const char *best = NULL;
    size_t bd = SIZE_MAX, n = top ? NSECTIONS : NKEYS;
    for (size_t i = 0; i < n; i++) {
        const char *cand = top ? sections[i] : keys[i].name;
        size_t d = edit_distance(name, cand);
        if (d < bd) {
            bd = d;
            best = cand;
        }
    }
    return best;
}

static const key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* What was found, for messages: 'a string "x"', '4.5', 'true', 'an object'. */
static void describe(jv v, char *out, size_t n)
{
    switch (jv_get_kind(v)) {
    case JV_KIND_OBJECT: snprintf(out, n, "an object"); return;
    case JV_KIND_ARRAY: snprintf(out, n, "an array"); return;
    case JV_KIND_NULL: snprintf(out, n, "null"); return;
    case JV_KIND_NUMBER: /* libjq reads "nan" and would print it as null */
        if (isnan(jv_number_value(v))) {
            snprintf(out, n, "nan");
            return;
        }
        break;
    default: break;
    }
    jv s = jv_dump_string(jv_copy(v), 0);
    snprintf(out, n, "%s%.60s%s", jv_get_kind(v) == JV_KIND_STRING ? "a string " : "",
             jv_string_value(s), jv_string_length_bytes(jv_copy(s)) > 60 ? "..." : "");
    jv_free(s);
}

/* "an integer in 1..1024", "a number in [0, 1)", "a number >= 0". */
static void expected_range(const key *k, char *out, size_t n)
{
    const char *what = k->kind == K_NUM ? "a number" : "an integer";
    if (k->kind != K_NUM)
        snprintf(out, n, "%s in %.0f..%.0f", what, k->lo, k->hi);
    else if (isinf(k->hi))
        snprintf(out, n, "%s %s %g", what, k->open & LO_OPEN ? ">" : ">=", k->lo);
    else
        snprintf(out, n, "%s in %c%g, %g%c", what, k->open & LO_OPEN ? '(' : '[', k->lo, k->hi,
                 k->open & HI_OPEN ? ')' : ']');
}

/* Store V into key K of *c, or explain in *e why not. V stays the caller's. */
static int store(gk_config *c, const key *k, jv v, err_t *e)
{
    char found[128], want[96];
    describe(v, found, sizeof found);
    void *p = field(c, k);
    jv_kind kd = jv_get_kind(v);
    if (k->kind == K_BOOL) {
        if (kd != JV_KIND_TRUE && kd != JV_KIND_FALSE)
            return fail(e, "field %s: expected true or false, found %s", k->name, found);
        *(bool *)p = kd == JV_KIND_TRUE;
        return 0;
    }
    if (k->kind == K_ENUM) {
        for (int i = 0; kd == JV_KIND_STRING && k->names[i]; i++)
            if (strcmp(k->names[i], jv_string_value(v)) == 0) {
                *(int *)p = i;
                return 0;
            }
        size_t off = 0;
        for (int j = 0; k->names[j]; j++)
            off += (size_t)snprintf(want + off, sizeof want - off, "%s%s", j ? ", " : "",
                                    k->names[j]);
        return fail(e, "field %s: expected one of %s, found %s", k->name, want, found);
    }
    bool whole = k->kind != K_NUM;
    if (kd != JV_KIND_NUMBER)
        return fail(e, "field %s: expected %s, found %s", k->name,
                    whole ? "an integer" : "a number", found);
    double x = jv_number_value(v);
    if (!isfinite(x) || (whole && x != floor(x)))
        return fail(e, "field %s: expected %s, found %s", k->name,
                    whole ? "an integer" : "a finite number", found);
    if (x < k->lo || x > k->hi || (x == k->lo && (k->open & LO_OPEN)) ||
        (x == k->hi && (k->open & HI_OPEN))) {
        expected_range(k, want, sizeof want);
        return fail(e, "field %s: expected %s, found %s", k->name, want, found);
    }
    if (k->kind == K_INT)
        *(int *)p = (int)x;
    else if (k->kind == K_I64)
        *(int64_t *)p = (int64_t)x;
    else
        *(double *)p = x;
    return 0;
}

/* store(), consuming V. */
static int apply_value(gk_config *c, const key *k, jv v, err_t *e)
{
    int rc = store(c, k, v, e);
    jv_free(v);
    return rc;
}

/* S as it can appear in a one-line message: control bytes as \xNN (a key
 * in a file may hold "\n"); cut to fit OUT [N]. */
static const char *shown(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (; *s && o + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = 0;
    return out;
}

static int unknown(const char *name, bool top, err_t *e)
{
    char s[256];
    return fail(e, "field %s: unknown key; did you mean %s?", shown(name, s, sizeof s),
                nearest(name, top));
}

/* Apply every key of ROOT (consumed), a {"model":{..},"moe":{..},"train":{..}}
 * object, in the file's order; stop at the first error. */
static int apply_object(gk_config *c, jv root, err_t *e)
{
    char found[128];
    int rc = 0;
    if (jv_get_kind(root) != JV_KIND_OBJECT) {
        describe(root, found, sizeof found);
        jv_free(root);
        return fail(e, "expected a JSON object with sections model, moe, train, found %s",
                    found);
    }
    for (int i = jv_object_iter(root); rc == 0 && jv_object_iter_valid(root, i);
         i = jv_object_iter_next(root, i)) {
        jv sk = jv_object_iter_key(root, i), sv = jv_object_iter_value(root, i);
        const char *sname = jv_string_value(sk);
        bool known = false;
        for (size_t s = 0; s < NSECTIONS; s++)
            known |= strcmp(sname, sections[s]) == 0;
        if (!known) {
            rc = unknown(sname, true, e);
        } else if (jv_get_kind(sv) != JV_KIND_OBJECT) {
            describe(sv, found, sizeof found);
            char s[256];
            rc = fail(e, "field %s: expected an object, found %s", shown(sname, s, sizeof s),
                      found);
        } else {
            for (int j = jv_object_iter(sv); rc == 0 && jv_object_iter_valid(sv, j);
                 j = jv_object_iter_next(sv, j)) {
                jv kk = jv_object_iter_key(sv, j);
                char full[160];
                snprintf(full, sizeof full, "%s.%s", sname, jv_string_value(kk));
                jv_free(kk);
                const key *k = find_key(full);
                rc = k ? apply_value(c, k, jv_object_iter_value(sv, j), e) : unknown(full, false, e);
            }
        }
        jv_free(sk);
        jv_free(sv);
    }
    jv_free(root);
    return rc;
}

static int apply_text(gk_config *c, const char *text, size_t len, err_t *e)
{
    if (len > INT_MAX) /* jv_parse_sized takes an int length */
        return fail(e, "expected a config under 2 GiB, found %zu bytes", len);
    jv root = jv_parse_sized(text, (int)len);
    if (jv_is_valid(root))
        return apply_object(c, root, e);
    jv msg = jv_invalid_get_msg(root);
    const char *m = jv_get_kind(msg) == JV_KIND_STRING ? jv_string_value(msg) : "no JSON value";
    /* libjq appends the whole input as "(while parsing '...')": drop it. */
    const char *cut = strstr(m, " (while parsing '");
    fail(e, "expected JSON, found an error: %.*s", cut ? (int)(cut - m) : 300, m);
    jv_free(msg);
    return -1;
}

void gk_config_apply_text(gk_config *c, const char *text, size_t len, const char *where)
{
    err_t e = {""};
    if (apply_text(c, text, len, &e) != 0)
        gk_die("%s: %s", where, e.msg);
}

void gk_config_apply_file(gk_config *c, const char *path)
{
    size_t len;
    unsigned char *buf = gk_read_file(path, &len);
    err_t e = {""};
    int rc = apply_text(c, (const char *)buf, len, &e);
    free(buf);
    if (rc != 0)
        gk_die("%s: %s", path, e.msg);
}

void gk_config_set(gk_config *c, const char *assignment, const char *where)
{
    const char *eq = strchr(assignment, '=');
    size_t klen = eq ? (size_t)(eq - assignment) : 0;
    char name[128], s[256];
    if (!eq || klen == 0 || klen >= sizeof name)
        gk_die("%s: expected SECTION.KEY=VALUE (e.g. model.n_layer=4), found \"%s\"", where,
               shown(assignment, s, sizeof s));
    snprintf(name, sizeof name, "%.*s", (int)klen, assignment);
    err_t e = {""};
    const key *k = find_key(name);
    if (!k) {
        unknown(name, false, &e);
        gk_die("%s: %s", where, e.msg);
    }
    jv v = jv_parse(eq + 1);
    if (!jv_is_valid(v)) { /* a bare word such as swiglu: take it as a string */
        jv_free(v);
        v = jv_string(eq + 1);
    }
    if (apply_value(c, k, v, &e) != 0)
        gk_die("%s: %s", where, e.msg);
}

/* The rules across keys, in the order a reader of the config meets them. */
static int check(const gk_config *c, err_t *e)
{
    int d = c->model.d_model, h = c->model.n_head, kv = c->model.n_kv_head;
    if (d % h)
        return fail(e, "model.d_model %d is not a multiple of model.n_head %d: "
                        "every head needs the same width d_model / n_head", d, h);
    if (h % kv)
        return fail(e, "model.n_head %d is not a multiple of model.n_kv_head %d: "
                        "grouped-query attention needs each KV head to serve the same "
                        "number of query heads", h, kv);
    int hd = d / h, rd = c->model.rope_dims;
    if (rd > hd)
        return fail(e, "model.rope_dims %d exceeds the head width %d "
                        "(model.d_model %d / model.n_head %d): rotary acts within one head",
                        rd, hd, d, h);
    if (rd % 2)
        return fail(e, "model.rope_dims %d is odd: rotary embedding turns pairs "
                        "of dimensions", rd);
    if (rd == 0 && hd % 2)
        return fail(e, "the head width %d (model.d_model %d / model.n_head %d) is "
                        "odd: rotary embedding turns pairs of dimensions; set model.rope_dims "
                        "to an even number below it", hd, d, h);
    if (c->moe.top_k > c->moe.n_experts)
        return fail(e, "moe.top_k %d exceeds moe.n_experts %d: each token picks "
                        "top_k different routed experts", c->moe.top_k, c->moe.n_experts);
    if (c->moe.router == GK_ROUTER_TOKEN && c->moe.top_k != 1)
        return fail(e, "moe.top_k is %d but moe.router token sends each token to "
                        "the one expert token_id mod moe.n_experts: top_k must be 1",
                        c->moe.top_k);
    int64_t micro = (int64_t)c->train.grad_accum * c->model.seq_len;
    if (c->train.batch_tokens % micro)
        return fail(e, "train.batch_tokens %lld is not a multiple of "
                        "train.grad_accum %d x model.seq_len %d: every micro-batch must hold "
                        "whole sequences", (long long)c->train.batch_tokens,
                        c->train.grad_accum, c->model.seq_len);
    if (c->train.val_batch_tokens < micro)
        return fail(e, "train.val_batch_tokens %lld is less than train.grad_accum "
                        "%d x model.seq_len %d: every validation micro-batch needs at least "
                        "one sequence", (long long)c->train.val_batch_tokens,
                        c->train.grad_accum, c->model.seq_len);
    if (c->train.schedule_clock == GK_CLOCK_WALLCLOCK && c->train.max_seconds <= 0)
        return fail(e, "train.schedule_clock wallclock needs train.max_seconds > 0: "
                        "the schedule is measured against the wall-clock cap");
    if (c->train.lr_warmup_steps > c->train.steps)
        return fail(e, "train.lr_warmup_steps %lld exceeds train.steps %lld: the "
                        "warmup would never finish", (long long)c->train.lr_warmup_steps,
                        (long long)c->train.steps);
    return 0;
}

void gk_config_check(const gk_config *c, const char *where)
{
    err_t e = {""};
    if (check(c, &e) != 0)
        gk_die("%s: %s", where, e.msg);
}

void gk_config_load(gk_config *c, const char *path)
{
    gk_config_defaults(c);
    gk_config_apply_file(c, path);
    gk_config_check(c, path);
}

jv gk_config_to_jv(const gk_config *c)
{
    jv root = jv_object();
    for (size_t s = 0; s < NSECTIONS; s++) {
        jv sec = jv_object();
        size_t sl = strlen(sections[s]);
        for (size_t i = 0; i < NKEYS; i++) {
            const key *k = &keys[i];
            if (strncmp(k->name, sections[s], sl) != 0 || k->name[sl] != '.')
                continue;
            const void *p = cfield(c, k);
            jv v;
            switch (k->kind) {
            case K_INT: v = jv_number(*(const int *)p); break;
            case K_I64: v = jv_number((double)*(const int64_t *)p); break;
            case K_NUM: v = jv_number(*(const double *)p); break;
            case K_BOOL: v = jv_bool(*(const bool *)p); break;
            default: v = jv_string(k->names[*(const int *)p]); break;
            }
            sec = jv_object_set(sec, jv_string(k->name + sl + 1), v);
        }
        root = jv_object_set(root, jv_string(sections[s]), sec);
    }
    return root;
}

char *gk_config_to_json(const gk_config *c)
{
    jv s = jv_dump_string(gk_config_to_jv(c), JV_PRINT_INDENT_FLAGS(2));
    size_t n = (size_t)jv_string_length_bytes(jv_copy(s));
    char *out = gk_malloc(n + 2);
    memcpy(out, jv_string_value(s), n);
    out[n] = '\n';
    out[n + 1] = 0;
    jv_free(s);
    return out;
}

void gk_config_params(const gk_config *c, int64_t *total, int64_t *active)
{
    int64_t d = c->model.d_model, v = c->model.vocab, l = c->model.n_layer;
    int64_t kvdim = (int64_t)c->model.n_kv_head * gk_config_head_dim(c);
    int64_t e = c->moe.n_experts, s = c->moe.n_shared, k = c->moe.top_k;
    int64_t embed = v * d * (c->model.tie_embeddings ? 1 : 2);
    int64_t attn = 2 * d * d + 2 * d * kvdim + c->model.n_head; /* c_q, proj; c_k, c_v; q_gain */
    int64_t scalars = 4 * d;                                     /* attn_scale, mlp_scale, resid_mix */
    int64_t expert = (c->model.activation == GK_ACT_SWIGLU ? 3 : 2) * d * gk_config_expert_hidden(c);
    int64_t router = e > 1 && c->moe.router != GK_ROUTER_TOKEN ? d * e : 0;
    int64_t block = attn + scalars + (e + s) * expert + router;
    *total = embed + l * block + (l / 2) * d; /* skip_weights: min(l/2, l - l/2) = l/2 rows */
    *active = *total - l * (e - k) * expert;
}
