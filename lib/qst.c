/* qst: writer and reader of the quantized model file (see qst.h and
 * man5/qst.5). The reader decodes every tensor at load time (unpacking bits,
 * checking codes), so a defect is reported before anything is evaluated and
 * dequantizing is a plain loop. */
#include "qst.h"
#include "safetensors.h"
#include "util.h"

#include <jv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "qst 1"

/* The rows and columns a tensor is quantized as: a matrix as it is, a vector
 * as one row. */
static void dims(const gk_param *p, int *rows, int *cols)
{
    *rows = p->ndim == 2 ? p->shape[0] : 1;
    *cols = p->ndim == 2 ? p->shape[1] : (int)p->numel;
}

void gk_qst_write(const char *path, const gk_layout *l, const gk_qtensor *qt,
                  const char *version)
{
    gk_st_writer *w = gk_st_writer_new();
    uint8_t **packed = gk_calloc((size_t)l->n_params, sizeof *packed);
    jv quant = jv_object();
    char name[64];
    for (int i = 0; i < l->n_params; i++) {
        const gk_param *p = &l->params[i];
        const gk_qtensor *t = &qt[i];
        uint64_t shape[2] = {(uint64_t)p->shape[0], (uint64_t)p->shape[1]};
        jv e = jv_object_set(jv_object(), jv_string("scheme"),
                             jv_string(gk_scheme_name(t->scheme)));
        if (t->scheme == GK_Q_F32) {
            gk_st_add(w, p->name, GK_ST_F32, p->ndim, shape, t->f32);
        } else if (t->scheme == GK_Q_F16) {
            gk_st_add(w, p->name, GK_ST_F16, p->ndim, shape, t->f16);
        } else {
            e = jv_object_set(e, jv_string("layout"), jv_string(gk_layout_name(t->layout)));
            uint64_t qs[2] = {(uint64_t)t->rows, (uint64_t)t->cols};
            if (t->layout == GK_LAYOUT_BITS) {
                qs[1] = gk_pack_row_bytes(t->scheme, t->cols);
                packed[i] = gk_malloc(qs[0] * qs[1] + 1);
                gk_pack_bits(t->scheme, t->q, t->rows, t->cols, packed[i]);
                gk_st_add(w, p->name, GK_ST_U8, 2, qs, packed[i]);
            } else {
                gk_st_add(w, p->name, GK_ST_I8, 2, qs, t->q);
            }
            snprintf(name, sizeof name, "%s.scale", p->name);
            gk_st_add(w, name, GK_ST_F16, 1, qs, t->scale);
        }
        quant = jv_object_set(quant, jv_string(p->name), e);
    }
    jv qtext = jv_dump_string(quant, JV_PRINT_SORTED);
    jv ctext = jv_dump_string(gk_config_to_jv(&l->cfg), 0);
    gk_st_set_meta(w, "golfkit.format", FORMAT);
    gk_st_set_meta(w, "golfkit.config", jv_string_value(ctext));
    gk_st_set_meta(w, "golfkit.quant", jv_string_value(qtext));
    gk_st_set_meta(w, "golfkit.version", version);
    gk_st_write(w, path);
    gk_st_writer_free(w);
    jv_free(qtext);
    jv_free(ctext);
    for (int i = 0; i < l->n_params; i++)
        free(packed[i]);
    free(packed);
}

struct gk_qst {
    gk_config cfg;
    gk_layout l;
    gk_qtensor *t; /* [l.n_params] */
};

static const char *meta(const gk_st *st, const char *key)
{
    const char *v = gk_st_meta(st, key);
    if (!v)
        gk_die("%s: field __metadata__ \"%s\": expected it in a .qst file, found none",
               gk_st_path(st), key);
    return v;
}

/* A string field of a golfkit.quant entry, copied into BUF [N] (cut there),
 * or NULL when absent. */
static const char *entry_str(jv e, const char *key, char *buf, size_t n)
{
    jv v = jv_object_get(jv_copy(e), jv_string(key));
    const char *s = NULL;
    if (jv_get_kind(v) == JV_KIND_STRING)
        s = buf, snprintf(buf, n, "%s", jv_string_value(v));
    jv_free(v);
    return s;
}

/* The N float16 values of tensor X (called NAME) into DST; a NaN or an
 * infinity (exponent bits all ones) dies, as gk_st_read_f32 does for F32:
 * a scale or weight that is not finite would poison every result. */
static void read_f16(const gk_st *st, const char *name, const gk_st_tensor *x, uint16_t *dst,
                     size_t n)
{
    for (size_t k = 0; k < n; k++) {
        dst[k] = (uint16_t)(x->data[2 * k] | x->data[2 * k + 1] << 8);
        if ((dst[k] & 0x7c00) == 0x7c00)
            gk_die("%s: offset %llu: tensor \"%s\" element %zu: expected a finite number, "
                   "found %s", gk_st_path(st),
                   (unsigned long long)(gk_st_data_offset(st) + x->offset + 2 * k), name, k,
                   dst[k] & 0x3ff ? "NaN" : "infinity");
    }
}

static void read_tensor(const gk_st *st, const gk_param *p, jv e, gk_qtensor *t)
{
    const char *path = gk_st_path(st);
    char sbuf[64], lbuf[64];
    const char *sname = entry_str(e, "scheme", sbuf, sizeof sbuf);
    int s = sname ? gk_scheme_parse(sname) : -1;
    if (s < 0)
        gk_die("%s: field __metadata__ \"golfkit.quant\": tensor \"%s\": expected a scheme "
               "(int8, int6, int5, int4, ternary, binary, f16, f32), found %s", path, p->name,
               sname ? sname : "none");
    t->scheme = (gk_scheme)s;
    dims(p, &t->rows, &t->cols);
    size_t n = (size_t)t->rows * t->cols;
    uint64_t shape[2] = {(uint64_t)p->shape[0], (uint64_t)p->shape[1]};
    if (s == GK_Q_F32) {
        gk_st_expect(st, p->name, GK_ST_F32, p->ndim, shape); /* before the allocation */
        t->f32 = gk_malloc(n * sizeof *t->f32 + 1);
        gk_st_read_f32(st, p->name, p->ndim, shape, t->f32);
    } else if (s == GK_Q_F16) {
        const gk_st_tensor *x = gk_st_expect(st, p->name, GK_ST_F16, p->ndim, shape);
        t->f16 = gk_malloc(n * 2 + 1);
        read_f16(st, p->name, x, t->f16, n);
    } else {
        const char *lname = entry_str(e, "layout", lbuf, sizeof lbuf);
        int lay = lname ? gk_layout_parse(lname) : -1;
        if (lay < 0)
            gk_die("%s: field __metadata__ \"golfkit.quant\": tensor \"%s\": expected a "
                   "layout (i8, bits), found %s", path, p->name, lname ? lname : "none");
        t->layout = (gk_qlayout)lay;
        uint64_t qs[2] = {(uint64_t)t->rows, (uint64_t)t->cols};
        char where[160];
        snprintf(where, sizeof where, "%s: tensor \"%s\"", path, p->name);
        if (lay == GK_LAYOUT_BITS) {
            qs[1] = gk_pack_row_bytes(t->scheme, t->cols);
            const gk_st_tensor *x = gk_st_expect(st, p->name, GK_ST_U8, 2, qs);
            t->q = gk_malloc(n + 1);
            gk_unpack_bits(t->scheme, x->data, t->rows, t->cols, t->q, where);
        } else {
            const gk_st_tensor *x = gk_st_expect(st, p->name, GK_ST_I8, 2, qs);
            t->q = gk_malloc(n + 1);
            int qmax = gk_scheme_qmax(t->scheme);
            for (size_t k = 0; k < n; k++) {
                int v = (int8_t)x->data[k];
                if (v < -qmax || v > qmax || (s == GK_Q_BINARY && v == 0))
                    gk_die("%s: row %zu, column %zu: expected a %s value in -%d..%d, found %d",
                           where, k / (size_t)t->cols, k % (size_t)t->cols, sname, qmax, qmax,
                           v);
                t->q[k] = (int8_t)v;
            }
        }
        char sn[64];
        snprintf(sn, sizeof sn, "%s.scale", p->name);
        const gk_st_tensor *x = gk_st_expect(st, sn, GK_ST_F16, 1, qs);
        t->scale = gk_malloc((size_t)t->rows * 2 + 1);
        read_f16(st, sn, x, t->scale, (size_t)t->rows);
    }
}

static void st_free(void *st) { gk_st_free(st); }
static void qst_free(void *q) { gk_qst_free(q); }

/* The parsed golfkit.quant and the entry being read, for a die on the way. */
typedef struct {
    jv quant, entry;
} held_jv;

static void held_free(void *arg)
{
    held_jv *h = arg;
    jv_free(h->quant);
    jv_free(h->entry);
}

static gk_qst *parse(gk_st *st)
{
    gk_cleanup_push(st_free, st);
    const char *path = gk_st_path(st);
    const char *fmt = meta(st, "golfkit.format");
    if (strcmp(fmt, FORMAT) != 0)
        gk_die("%s: field __metadata__ \"golfkit.format\": expected \"" FORMAT "\", found "
               "\"%s\"", path, fmt);
    gk_qst *q = gk_calloc(1, sizeof *q);
    gk_cleanup_push(qst_free, q);
    const char *cfg = meta(st, "golfkit.config");
    char where[300];
    snprintf(where, sizeof where, "%s: __metadata__ golfkit.config", path);
    gk_config_defaults(&q->cfg);
    gk_config_apply_text(&q->cfg, cfg, strlen(cfg), where);
    gk_config_check(&q->cfg, where);
    gk_layout_init(&q->l, &q->cfg);

    const char *qtext = meta(st, "golfkit.quant");
    jv quant = jv_parse(qtext);
    held_jv held = {quant, jv_null()};
    gk_cleanup_push(held_free, &held);
    if (jv_get_kind(quant) != JV_KIND_OBJECT)
        gk_die("%s: field __metadata__ \"golfkit.quant\": expected a JSON object, found "
               "\"%.40s\"", path, qtext);
    if (jv_object_length(jv_copy(quant)) != q->l.n_params)
        gk_die("%s: field __metadata__ \"golfkit.quant\": expected %d entries (the model's "
               "tensors), found %d", path, q->l.n_params, jv_object_length(jv_copy(quant)));
    q->t = gk_calloc((size_t)q->l.n_params, sizeof *q->t);
    size_t expect = 0;
    for (int i = 0; i < q->l.n_params; i++) {
        const gk_param *p = &q->l.params[i];
        jv e = held.entry = jv_object_get(jv_copy(quant), jv_string(p->name));
        if (jv_get_kind(e) != JV_KIND_OBJECT)
            gk_die("%s: field __metadata__ \"golfkit.quant\": expected an object for tensor "
                   "\"%s\", found none", path, p->name);
        read_tensor(st, p, e, &q->t[i]);
        expect += gk_scheme_is_int(q->t[i].scheme) ? 2 : 1;
        jv_free(e);
        held.entry = jv_null();
    }
    gk_cleanup_pop(&held);
    jv_free(quant);
    if (gk_st_count(st) != expect)
        gk_die("%s: expected %zu tensors (the model's, with their scales), found %zu", path,
               expect, gk_st_count(st));
    gk_cleanup_pop(q);
    gk_cleanup_pop(st);
    gk_st_free(st);
    return q;
}

gk_qst *gk_qst_load(const char *path) { return parse(gk_st_load(path)); }

gk_qst *gk_qst_load_mem(const unsigned char *p, size_t n, const char *name)
{
    return parse(gk_st_load_mem(p, n, name));
}

const gk_config *gk_qst_config(const gk_qst *q) { return &q->cfg; }

void gk_qst_dequantize(const gk_qst *q, const gk_layout *l, float *params)
{
    if (l->n_params != q->l.n_params || l->numel != q->l.numel)
        gk_die("gk_qst_dequantize: expected the layout of the file's config (%d tensors), "
               "found one of %d", q->l.n_params, l->n_params);
    memset(params, 0, l->numel * sizeof *params); /* the padding between tensors (model.h) */
    for (int i = 0; i < l->n_params; i++)
        gk_qtensor_dequantize(&q->t[i], params + l->params[i].offset);
}

void gk_qst_free(gk_qst *q)
{
    if (!q)
        return;
    for (int i = 0; q->t && i < q->l.n_params; i++)
        gk_qtensor_free(&q->t[i]);
    free(q->t);
    gk_layout_free(&q->l);
    free(q);
}
