/* ckpt: writing and reading moe-train checkpoints through lib/safetensors;
 * the contents are in ckpt.h. Parameters and optimizer state are referenced
 * in place by the writer, so saving costs no copy of the model. */
#include "ckpt.h"
#include "safetensors.h"
#include "schedule.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "moe-train checkpoint 1"

static void add_f32(gk_st_writer *w, const char *name, const gk_param *p, const float *data)
{
    uint64_t shape[2] = {(uint64_t)p->shape[0], (uint64_t)p->shape[1]};
    gk_st_add(w, name, GK_ST_F32, p->ndim, shape, data);
}

/* "ema.NAME" into BUF of size N. */
static const char *ema_name(char *buf, size_t n, const gk_param *p)
{
    snprintf(buf, n, "ema.%s", p->name);
    return buf;
}

void gk_ckpt_save(const char *path, const gk_layout *l, const float *params,
                  const gk_optim *o, const gk_train_state *s, const char *version)
{
    gk_ckpt_save_ex(path, l, params, NULL, o, s, version, NULL);
}

void gk_ckpt_save_ex(const char *path, const gk_layout *l, const float *params,
                     const float *ema, const gk_optim *o, const gk_train_state *s,
                     const char *version, const char *avg)
{
    gk_st_writer *w = gk_st_writer_new();
    for (int i = 0; i < l->n_params; i++)
        add_f32(w, l->params[i].name, &l->params[i], params + l->params[i].offset);
    char name[64];
    for (int i = 0; ema && i < l->n_params; i++)
        if (l->params[i].group != GK_GROUP_BUFFER)
            add_f32(w, ema_name(name, sizeof name, &l->params[i]), &l->params[i],
                    ema + l->params[i].offset);
    for (int i = 0; o && i < gk_optim_state_count(o); i++) {
        gk_optim_state st = gk_optim_state_get(o, i);
        add_f32(w, st.name, st.param, st.data);
    }
    char buf[64];
    jv cfg = gk_config_to_jv(&l->cfg);
    jv cfg_text = jv_dump_string(cfg, 0);
    gk_st_set_meta(w, "golfkit.format", FORMAT);
    gk_st_set_meta(w, "golfkit.config", jv_string_value(cfg_text));
    gk_st_set_meta(w, "golfkit.version", version);
    snprintf(buf, sizeof buf, "%" PRIu64, s->seed);
    gk_st_set_meta(w, "golfkit.seed", buf);
    snprintf(buf, sizeof buf, "%" PRId64, s->step);
    gk_st_set_meta(w, "golfkit.step", buf);
    snprintf(buf, sizeof buf, "%" PRId64 " %" PRId64, s->pos.shard, s->pos.offset);
    gk_st_set_meta(w, "golfkit.loader", buf);
    if (gk_schedule_clock(&l->cfg) == GK_CLOCK_WALLCLOCK) {
        snprintf(buf, sizeof buf, "%.17g", s->elapsed);
        gk_st_set_meta(w, "golfkit.elapsed", buf);
    }
    if (avg)
        gk_st_set_meta(w, "golfkit.avg", avg);
    gk_st_write(w, path);
    gk_st_writer_free(w);
    jv_free(cfg_text);
}

struct gk_ckpt {
    gk_st *st;
    gk_config cfg;
    gk_train_state s;
};

static const char *meta(const gk_st *st, const char *key)
{
    const char *v = gk_st_meta(st, key);
    if (!v)
        gk_die("%s: field __metadata__ \"%s\": expected it in a moe-train checkpoint, found "
               "none", gk_st_path(st), key);
    return v;
}

/* A whole decimal integer in [0, INT64_MAX], or die naming KEY. */
static int64_t meta_int(const gk_st *st, const char *key, const char *text)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 0)
        gk_die("%s: field __metadata__ \"%s\": expected a whole number >= 0, found \"%s\"",
               gk_st_path(st), key, text);
    return v;
}

static void ckpt_close(void *c) { gk_ckpt_close(c); }

gk_ckpt *gk_ckpt_open(const char *path)
{
    gk_ckpt *c = gk_calloc(1, sizeof *c);
    gk_cleanup_push(ckpt_close, c);
    c->st = gk_st_load(path);
    const char *fmt = meta(c->st, "golfkit.format");
    if (strcmp(fmt, FORMAT) != 0)
        gk_die("%s: field __metadata__ \"golfkit.format\": expected \"%s\", found \"%s\"", path,
               FORMAT, fmt);
    const char *cfg = meta(c->st, "golfkit.config");
    char where[4200];
    snprintf(where, sizeof where, "%s: __metadata__ golfkit.config", path);
    gk_config_defaults(&c->cfg);
    gk_config_apply_text(&c->cfg, cfg, strlen(cfg), where);
    gk_config_check(&c->cfg, where);
    c->s.seed = (uint64_t)meta_int(c->st, "golfkit.seed", meta(c->st, "golfkit.seed"));
    c->s.step = meta_int(c->st, "golfkit.step", meta(c->st, "golfkit.step"));
    const char *pos = meta(c->st, "golfkit.loader");
    long long shard, offset;
    int used = 0;
    if (sscanf(pos, "%lld %lld%n", &shard, &offset, &used) != 2 || pos[used] || shard < 0 ||
        offset < 0)
        gk_die("%s: field __metadata__ \"golfkit.loader\": expected \"SHARD OFFSET\", found "
               "\"%s\"", path, pos);
    c->s.pos = (gk_loader_pos){shard, offset};
    const char *el = gk_st_meta(c->st, "golfkit.elapsed");
    if (el) {
        char *end;
        c->s.elapsed = strtod(el, &end);
        if (end == el || *end || !(c->s.elapsed >= 0))
            gk_die("%s: field __metadata__ \"golfkit.elapsed\": expected seconds >= 0, found "
                   "\"%s\"", path, el);
    }
    gk_cleanup_pop(c);
    return c;
}

const gk_config *gk_ckpt_config(const gk_ckpt *c) { return &c->cfg; }
gk_train_state gk_ckpt_state(const gk_ckpt *c) { return c->s; }

static void read_tensor(const gk_st *st, const char *name, const gk_param *p, float *dst)
{
    uint64_t shape[2] = {(uint64_t)p->shape[0], (uint64_t)p->shape[1]};
    gk_st_read_f32(st, name, p->ndim, shape, dst);
}

void gk_ckpt_read_params(const gk_ckpt *c, const gk_layout *l, float *params)
{
    memset(params, 0, l->numel * sizeof *params); /* the padding between tensors (model.h) */
    for (int i = 0; i < l->n_params; i++)
        read_tensor(c->st, l->params[i].name, &l->params[i], params + l->params[i].offset);
}

void gk_ckpt_read_optim(const gk_ckpt *c, gk_optim *o)
{
    for (int i = 0; i < gk_optim_state_count(o); i++) {
        gk_optim_state st = gk_optim_state_get(o, i);
        if (c->s.step == 0 && !gk_st_find(c->st, st.name))
            continue; /* the initial weights: a fresh optimizer is the right state */
        read_tensor(c->st, st.name, st.param, st.data);
    }
    gk_optim_set_steps(o, c->s.step);
}

int gk_ckpt_has_ema(const gk_ckpt *c, const gk_layout *l)
{
    char name[64];
    for (int i = 0; i < l->n_params; i++)
        if (l->params[i].group != GK_GROUP_BUFFER)
            return gk_st_find(c->st, ema_name(name, sizeof name, &l->params[i])) != NULL;
    return 0;
}

void gk_ckpt_read_ema(const gk_ckpt *c, const gk_layout *l, float *ema)
{
    gk_ckpt_read_params(c, l, ema);
    if (c->s.step == 0 && !gk_ckpt_has_ema(c, l))
        return; /* the initial weights: the average starts as them */
    char name[64];
    for (int i = 0; i < l->n_params; i++)
        if (l->params[i].group != GK_GROUP_BUFFER)
            read_tensor(c->st, ema_name(name, sizeof name, &l->params[i]), &l->params[i],
                        ema + l->params[i].offset);
}

void gk_ckpt_close(gk_ckpt *c)
{
    gk_st_free(c->st);
    free(c);
}
