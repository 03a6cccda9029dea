/* safetensors: a verifying reader and a deterministic, atomic writer of the
 * safetensors format (checkpoints and quantized models). The layout and the
 * contract are in safetensors.h; man5/safetensors.5 is the description for
 * readers in other languages.
 *
 * The JSON header is parsed and built with libjq's jv. jv values are reference
 * counted, and the reader dies on the first defect: so that a failing load
 * frees everything (the sanitizer build checks for leaks even on exit 1), every
 * jv the reader holds while it may fail lives in the gk_st itself (the header
 * and the tmp slots), and fail() frees the whole gk_st before gk_die. */
#include "safetensors.h"
#include "io.h"
#include "util.h"

#include <jv.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[GK_ST_NDTYPE] = {
    [GK_ST_BOOL] = {"BOOL", 1}, [GK_ST_U8] = {"U8", 1},   [GK_ST_I8] = {"I8", 1},
    [GK_ST_F8_E5M2] = {"F8_E5M2", 1}, [GK_ST_F8_E4M3] = {"F8_E4M3", 1},
    [GK_ST_I16] = {"I16", 2},   [GK_ST_U16] = {"U16", 2}, [GK_ST_F16] = {"F16", 2},
    [GK_ST_BF16] = {"BF16", 2}, [GK_ST_I32] = {"I32", 4}, [GK_ST_U32] = {"U32", 4},
    [GK_ST_F32] = {"F32", 4},   [GK_ST_I64] = {"I64", 8}, [GK_ST_U64] = {"U64", 8},
    [GK_ST_F64] = {"F64", 8},
};
/* The same names, for "expected one of ..." (the unit tests check they agree). */
#define DTYPE_LIST "BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64"

/* Integers in a JSON header are doubles to jv (and to many other readers):
 * dimensions and offsets are exact only up to 2^53. */
#define MAX_INT (UINT64_C(1) << 53)

const char *gk_st_dtype_name(gk_st_dtype d) { return dtypes[d].name; }
size_t gk_st_dtype_size(gk_st_dtype d) { return dtypes[d].size; }

int gk_st_dtype_parse(const char *name)
{
    for (int d = 0; d < GK_ST_NDTYPE; d++)
        if (strcmp(dtypes[d].name, name) == 0)
            return d;
    return -1;
}

/* ---- helpers for both directions ---- */

/* Length of the longest prefix of S[0..n) that is strict UTF-8 (no overlong
 * forms, no surrogates, nothing above U+10FFFF): n when all of it is. jv would
 * silently replace bad bytes with U+FFFD, changing names, so both directions
 * check first. */
static size_t utf8_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], len, min;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, min = 0x80, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, min = 0x800, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, min = 0x10000, cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i < len)
            return i;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

/* Messages quote names and show found values, cut to this many bytes so that
 * a hostile header cannot make an error line of megabytes. */
#define SHOW 96
typedef struct {
    char s[SHOW * 6 + 16];
} shown;

/* Append at most SHOW bytes of S[0..n) to OUT, cut at a character boundary. */
static void cut(char *out, size_t cap, const char *s, size_t n)
{
    size_t len = strlen(out), k = n;
    if (k > SHOW) {
        k = SHOW;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
    }
    snprintf(out + len, cap - len, "%.*s%s", (int)k, s, k < n ? "..." : "");
}

/* S as a JSON string: quoted, control bytes escaped, so a message stays one line. */
static shown quote(const char *s)
{
    shown r;
    char body[SHOW * 6 + 8];
    size_t n = 0, len = strlen(s);
    for (size_t i = 0; i < len && n < SHOW * 6; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            n += (size_t)sprintf(body + n, "\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            n += (size_t)sprintf(body + n, "\\u%04x", c);
        else
            body[n++] = (char)c;
    }
    r.s[0] = '"';
    r.s[1] = 0;
    cut(r.s, sizeof r.s, body, n);
    strcat(r.s, "\"");
    return r;
}

/* A found JSON value, compact (jv escapes newlines, so it is one line). */
static shown show(jv v)
{
    shown r;
    r.s[0] = 0;
    if (!jv_is_valid(v)) {
        strcpy(r.s, "nothing (field missing)");
        return r;
    }
    jv d = jv_dump_string(jv_copy(v), 0);
    cut(r.s, sizeof r.s, jv_string_value(d), (size_t)jv_string_length_bytes(jv_copy(d)));
    jv_free(d);
    return r;
}

/* "[2, 3]" */
static shown show_shape(int ndim, const uint64_t *shape)
{
    shown r;
    size_t n = 0;
    n += (size_t)snprintf(r.s, sizeof r.s, "[");
    for (int i = 0; i < ndim && n < SHOW; i++)
        n += (size_t)snprintf(r.s + n, sizeof r.s - n, "%s%llu", i ? ", " : "",
                              (unsigned long long)shape[i]);
    snprintf(r.s + n, sizeof r.s - n, n < SHOW ? "]" : "...]");
    return r;
}

/* The C string of jv string S, or NULL when it holds a NUL (a C caller could
 * not see past it). S is borrowed. */
static const char *cstr(jv s)
{
    const char *p = jv_string_value(s);
    return strlen(p) == (size_t)jv_string_length_bytes(jv_copy(s)) ? p : NULL;
}

/* A JSON number that is an integer in 0..2^53, into *out. V is borrowed. */
static int get_int(jv v, uint64_t *out)
{
    if (jv_get_kind(v) != JV_KIND_NUMBER)
        return 0;
    double x = jv_number_value(v);
    if (!(x >= 0 && x <= (double)MAX_INT) || x != (double)(uint64_t)x)
        return 0;
    *out = (uint64_t)x;
    return 1;
}

/* Element count of SHAPE times SIZE into *bytes, as the reference computes it
 * (checked multiplication from the left); 0 on overflow. */
static int byte_size(int ndim, const uint64_t *shape, size_t size, uint64_t *nelem,
                     uint64_t *bytes)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] && n > UINT64_MAX / shape[i])
            return 0;
        n *= shape[i];
    }
    if (n > UINT64_MAX / size)
        return 0;
    *nelem = n;
    *bytes = n * size;
    return 1;
}

typedef struct {
    char *key, *val;
} kv;

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const kv *)a)->key, ((const kv *)b)->key);
}

/* ---- the reader ---- */

enum { CUR, FLD, KEY, NTMP }; /* jv slots: an entry, one of its fields, a key */

struct gk_st {
    char *path;
    unsigned char *file;
    size_t size;
    uint64_t data_off, data_len;
    jv header, tmp[NTMP];
    gk_st_tensor *t; /* name order; names and shapes owned */
    size_t n;
    kv *meta; /* key order */
    size_t nmeta;
    int checksummed;
};

void gk_st_free(gk_st *st)
{
    if (!st)
        return;
    jv_free(st->header);
    for (int i = 0; i < NTMP; i++)
        jv_free(st->tmp[i]);
    for (size_t i = 0; i < st->n; i++) {
        free((char *)st->t[i].name);
        free((uint64_t *)st->t[i].shape);
    }
    for (size_t i = 0; i < st->nmeta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].val);
    }
    free(st->t);
    free(st->meta);
    free(st->file);
    free(st->path);
    free(st);
}

/* Replace the jv in slot I with V (owned from now on by ST). */
static jv hold(gk_st *st, int i, jv v)
{
    jv_free(st->tmp[i]);
    return st->tmp[i] = v;
}

static _Noreturn void fail(gk_st *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(gk_st *st, const char *fmt, ...)
{
    char msg[2048], line[3072];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(line, sizeof line, "%s: %s", st->path, msg);
    gk_st_free(st);
    gk_die("%s", line);
}

/* Parse the entry in slot CUR, the tensor called T->name, into T. */
static void parse_tensor(gk_st *st, gk_st_tensor *t)
{
    shown qn = quote(t->name); /* a copy: fail() frees t->name */
    const char *q = qn.s;
    if (jv_get_kind(st->tmp[CUR]) != JV_KIND_OBJECT)
        fail(st, "tensor %s: expected an object with dtype, shape and data_offsets, found %s",
             q, show(st->tmp[CUR]).s);

    jv f = hold(st, FLD, jv_object_get(jv_copy(st->tmp[CUR]), jv_string("dtype")));
    int d = -1;
    if (jv_get_kind(f) == JV_KIND_STRING && cstr(f))
        d = gk_st_dtype_parse(cstr(f));
    if (d < 0)
        fail(st, "tensor %s: field dtype: expected one of " DTYPE_LIST ", found %s", q,
             show(f).s);
    t->dtype = (gk_st_dtype)d;

    f = hold(st, FLD, jv_object_get(jv_copy(st->tmp[CUR]), jv_string("shape")));
    if (jv_get_kind(f) != JV_KIND_ARRAY)
        fail(st, "tensor %s: field shape: expected an array of integers in 0..2^53, found %s",
             q, show(f).s);
    int nd = jv_array_length(jv_copy(f));
    uint64_t *shape = gk_malloc((size_t)nd * sizeof *shape);
    t->shape = shape;
    t->ndim = nd;
    for (int i = 0; i < nd; i++) {
        jv e = jv_array_get(jv_copy(f), i);
        int good = get_int(e, &shape[i]);
        jv_free(e);
        if (!good)
            fail(st, "tensor %s: field shape: expected an array of integers in 0..2^53, "
                 "found %s", q, show(f).s);
    }
    if (!byte_size(nd, shape, dtypes[d].size, &t->nelem, &t->nbytes))
        fail(st, "tensor %s: field shape: expected at most 2^64 bytes of %s, found %s", q,
             dtypes[d].name, show(f).s);

    f = hold(st, FLD, jv_object_get(jv_copy(st->tmp[CUR]), jv_string("data_offsets")));
    uint64_t off[2] = {0, 0};
    int good = jv_get_kind(f) == JV_KIND_ARRAY && jv_array_length(jv_copy(f)) == 2;
    for (int i = 0; good && i < 2; i++) {
        jv e = jv_array_get(jv_copy(f), i);
        good = get_int(e, &off[i]);
        jv_free(e);
    }
    if (!good || off[0] > off[1])
        fail(st, "tensor %s: field data_offsets: expected [begin, end], integers with "
             "0 <= begin <= end, found %s", q, show(f).s);
    if (off[1] - off[0] != t->nbytes)
        fail(st, "tensor %s: field data_offsets: expected end - begin = %llu bytes (shape %s "
             "of %s), found %s: %llu bytes", q, (unsigned long long)t->nbytes,
             show_shape(nd, shape).s, dtypes[d].name, show(f).s,
             (unsigned long long)(off[1] - off[0]));
    if (off[1] > st->data_len)
        fail(st, "tensor %s: field data_offsets: expected offsets within the %llu-byte data "
             "buffer (truncated file?), found %s", q, (unsigned long long)st->data_len,
             show(f).s);
    t->offset = off[0];
    t->data = st->file + st->data_off + off[0];
}

/* The metadata object in slot CUR (null: none) into st->meta. */
static void parse_meta(gk_st *st)
{
    jv m = st->tmp[CUR];
    if (jv_get_kind(m) == JV_KIND_NULL)
        return;
    if (jv_get_kind(m) != JV_KIND_OBJECT)
        fail(st, "field __metadata__: expected an object of strings, found %s", show(m).s);
    st->meta = gk_calloc((size_t)jv_object_length(jv_copy(m)), sizeof *st->meta);
    for (int it = jv_object_iter(m); jv_object_iter_valid(m, it); it = jv_object_iter_next(m, it)) {
        jv k = hold(st, KEY, jv_object_iter_key(m, it));
        jv v = hold(st, FLD, jv_object_iter_value(m, it));
        if (!cstr(k))
            fail(st, "field __metadata__: expected keys without NUL, found %s", show(k).s);
        if (jv_get_kind(v) != JV_KIND_STRING || !cstr(v))
            fail(st, "field __metadata__ %s: expected a string without NUL, found %s",
                 quote(cstr(k)).s, show(v).s);
        st->meta[st->nmeta].key = gk_strdup(cstr(k));
        st->meta[st->nmeta++].val = gk_strdup(cstr(v));
    }
    qsort(st->meta, st->nmeta, sizeof *st->meta, kv_cmp);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const gk_st_tensor *)a)->name, ((const gk_st_tensor *)b)->name);
}

static int offset_cmp(const void *a, const void *b)
{
    const gk_st_tensor *x = *(const gk_st_tensor *const *)a, *y = *(const gk_st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return (x->offset + x->nbytes > y->offset + y->nbytes) - (x->offset + x->nbytes < y->offset + y->nbytes);
}

/* The tensors in offset order must tile the data buffer, as the reference
 * reader requires: a byte no tensor claims, or one two tensors claim, is
 * refused. */
static void check_cover(gk_st *st)
{
    const gk_st_tensor **by = gk_malloc(st->n * sizeof *by);
    for (size_t i = 0; i < st->n; i++)
        by[i] = &st->t[i];
    qsort(by, st->n, sizeof *by, offset_cmp);
    uint64_t pos = 0;
    const gk_st_tensor *last = NULL; /* the tensor that ends at pos */
    for (size_t i = 0; i < st->n; i++) {
        const gk_st_tensor *t = by[i];
        if (t->offset != pos) {
            /* Copy what the message needs: fail() frees the tensors. */
            shown a = quote(t->name), b = quote(last ? last->name : "");
            unsigned long long at = st->data_off + t->offset, o = t->offset, p = pos;
            free(by);
            if (o < p)
                fail(st, "offset %llu: expected tensor %s to start at data offset %llu, where "
                     "tensor %s ends, found it at %llu (overlap)", at, a.s, p, b.s, o);
            fail(st, "offset %llu: expected a tensor at data offset %llu (tensors must cover "
                 "the data buffer), found a gap of %llu bytes before tensor %s", at - (o - p),
                 p, o - p, a.s);
        }
        if (t->nbytes) {
            pos += t->nbytes;
            last = t;
        }
    }
    free(by);
    if (pos != st->data_len)
        fail(st, "offset %llu: expected the end of the file after the last tensor (tensors "
             "must cover the data buffer), found %llu more bytes",
             (unsigned long long)(st->data_off + pos), (unsigned long long)(st->data_len - pos));
}

/* A reader with nothing loaded yet, named NAME in messages. */
static gk_st *st_new(const char *name)
{
    gk_st *st = gk_calloc(1, sizeof *st);
    st->header = jv_null();
    for (int i = 0; i < NTMP; i++)
        st->tmp[i] = jv_null();
    st->path = gk_strdup(name);
    return st;
}

static gk_st *st_parse(gk_st *st);

gk_st *gk_st_load(const char *path)
{
    gk_st *st = st_new(strcmp(path, "-") == 0 ? "stdin" : path);
    st->file = gk_read_file(path, &st->size);
    return st_parse(st);
}

gk_st *gk_st_load_mem(const unsigned char *p, size_t n, const char *name)
{
    gk_st *st = st_new(name);
    st->file = gk_malloc(n ? n : 1);
    if (n)
        memcpy(st->file, p, n);
    st->size = n;
    return st_parse(st);
}

/* Verify and index the bytes in st->file (gk_st_load's checks). */
static gk_st *st_parse(gk_st *st)
{
    if (st->size < 8)
        fail(st, "offset 0: expected an 8-byte header length, found a file of %zu bytes",
             st->size);
    uint64_t n = gk_get64(st->file);
    if (n > GK_ST_MAX_HEADER)
        fail(st, "offset 0: expected a header length of at most %u bytes, found %llu",
             GK_ST_MAX_HEADER, (unsigned long long)n);
    if (n > st->size - 8)
        fail(st, "offset 0: expected a header length of at most %zu bytes (file size %zu), "
             "found %llu", st->size - 8, st->size, (unsigned long long)n);
    st->data_off = 8 + n;
    st->data_len = st->size - st->data_off;
    const unsigned char *h = st->file + 8;
    if (n == 0)
        fail(st, "offset 8: expected '{' opening the JSON header, found an empty header");
    if (h[0] != '{')
        fail(st, "offset 8: expected '{' opening the JSON header, found byte 0x%02x", h[0]);
    size_t bad = utf8_prefix(h, n);
    if (bad < n)
        fail(st, "offset %llu: expected UTF-8 in the JSON header, found byte 0x%02x",
             (unsigned long long)(8 + bad), h[bad]);

    jv hdr = jv_parse_sized((const char *)h, (int)n);
    if (!jv_is_valid(hdr)) {
        /* jq's message ends with the whole text it parsed: keep what comes before. */
        char why[512] = "no message";
        jv m = jv_invalid_get_msg(hdr);
        if (jv_get_kind(m) == JV_KIND_STRING) {
            const char *s = jv_string_value(m), *tail = strstr(s, " (while parsing");
            snprintf(why, sizeof why, "%.*s", tail ? (int)(tail - s) : (int)strlen(s), s);
        }
        jv_free(m);
        fail(st, "offset 8: expected a JSON object of %llu bytes, found invalid JSON: %s",
             (unsigned long long)n, why);
    }
    st->header = hdr; /* an object: it parsed, alone, and starts with '{' */

    st->t = gk_calloc((size_t)jv_object_length(jv_copy(hdr)), sizeof *st->t);
    for (int it = jv_object_iter(hdr); jv_object_iter_valid(hdr, it);
         it = jv_object_iter_next(hdr, it)) {
        jv k = hold(st, KEY, jv_object_iter_key(hdr, it));
        hold(st, CUR, jv_object_iter_value(hdr, it));
        if (!cstr(k))
            fail(st, "offset 8: expected tensor names without NUL, found %s", show(k).s);
        if (strcmp(cstr(k), "__metadata__") == 0) {
            parse_meta(st);
            continue;
        }
        gk_st_tensor *t = &st->t[st->n++];
        t->name = gk_strdup(cstr(k));
        parse_tensor(st, t);
    }
    for (int i = 0; i < NTMP; i++)
        hold(st, i, jv_null());
    qsort(st->t, st->n, sizeof *st->t, name_cmp);
    check_cover(st);

    const char *want = gk_st_meta(st, GK_ST_XXH64_KEY);
    if (want) {
        char got[17];
        snprintf(got, sizeof got, "%016llx",
                 (unsigned long long)XXH64(st->file + st->data_off, st->data_len, 0));
        if (strcmp(got, want) != 0)
            fail(st, "field __metadata__ \"" GK_ST_XXH64_KEY "\": expected %s (xxh64 of the "
                 "%llu data bytes at offset %llu), found %s", got,
                 (unsigned long long)st->data_len, (unsigned long long)st->data_off,
                 quote(want).s);
        st->checksummed = 1;
    }
    /* Nothing needs the parsed header any more: the tensors hold copies. */
    jv_free(st->header);
    st->header = jv_null();
    return st;
}

const char *gk_st_path(const gk_st *st) { return st->path; }
int gk_st_checksummed(const gk_st *st) { return st->checksummed; }
uint64_t gk_st_data_size(const gk_st *st) { return st->data_len; }
uint64_t gk_st_data_offset(const gk_st *st) { return st->data_off; }
size_t gk_st_count(const gk_st *st) { return st->n; }
const gk_st_tensor *gk_st_at(const gk_st *st, size_t i) { return &st->t[i]; }
size_t gk_st_meta_count(const gk_st *st) { return st->nmeta; }

const gk_st_tensor *gk_st_find(const gk_st *st, const char *name)
{
    gk_st_tensor key = {.name = name};
    return st->n ? bsearch(&key, st->t, st->n, sizeof *st->t, name_cmp) : NULL;
}

void gk_st_meta_at(const gk_st *st, size_t i, const char **key, const char **value)
{
    *key = st->meta[i].key;
    *value = st->meta[i].val;
}

const char *gk_st_meta(const gk_st *st, const char *key)
{
    kv k = {.key = (char *)key};
    kv *hit = st->nmeta ? bsearch(&k, st->meta, st->nmeta, sizeof *st->meta, kv_cmp) : NULL;
    return hit ? hit->val : NULL;
}

const gk_st_tensor *gk_st_expect(const gk_st *st, const char *name, gk_st_dtype dtype,
                                 int ndim, const uint64_t *shape)
{
    const gk_st_tensor *t = gk_st_find(st, name);
    if (!t)
        gk_die("%s: tensor %s: expected a tensor of that name, found none", st->path,
               quote(name).s);
    // cppcheck-suppress nullPointerRedundantCheck ; gk_die does not return
    if (t->dtype != dtype)
        gk_die("%s: tensor %s: field dtype: expected %s, found %s", st->path, quote(name).s,
               dtypes[dtype].name, dtypes[t->dtype].name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same)
        gk_die("%s: tensor %s: field shape: expected %s, found %s", st->path, quote(name).s,
               show_shape(ndim, shape).s, show_shape(t->ndim, t->shape).s);
    return t;
}

void gk_st_read_f32(const gk_st *st, const char *name, int ndim, const uint64_t *shape,
                    float *dst)
{
    const gk_st_tensor *t = gk_st_expect(st, name, GK_ST_F32, ndim, shape);
    for (uint64_t i = 0; i < t->nelem; i++) {
        uint32_t u = gk_get32(t->data + 4 * i);
        memcpy(&dst[i], &u, sizeof u);
        if (!isfinite(dst[i]))
            gk_die("%s: offset %llu: tensor %s element %llu: expected a finite number, found %s",
                   st->path, (unsigned long long)(st->data_off + t->offset + 4 * i),
                   quote(name).s, (unsigned long long)i, isnan(dst[i]) ? "NaN" : "infinity");
    }
}

/* ---- the writer ---- */

typedef struct {
    char *name;
    gk_st_dtype dtype;
    int ndim;
    uint64_t *shape;
    const void *data;
    uint64_t nbytes;
} wtensor;

struct gk_st_writer {
    wtensor *t;
    size_t n, cap;
    kv *meta;
    size_t nmeta, metacap;
};

gk_st_writer *gk_st_writer_new(void) { return gk_calloc(1, sizeof(gk_st_writer)); }

void gk_st_writer_free(gk_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].shape);
    }
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].val);
    }
    free(w->t);
    free(w->meta);
    free(w);
}

/* Writer errors are the caller's bugs, not bad input: no file to name. */
static void check_utf8(const char *what, const char *s)
{
    size_t n = strlen(s);
    if (utf8_prefix((const unsigned char *)s, n) != n)
        gk_die("safetensors writer: %s %s: expected UTF-8, found byte 0x%02x", what,
               quote(s).s, (unsigned char)s[utf8_prefix((const unsigned char *)s, n)]);
}

void gk_st_add(gk_st_writer *w, const char *name, gk_st_dtype dtype, int ndim,
               const uint64_t *shape, const void *data)
{
    check_utf8("tensor", name);
    if (strcmp(name, "__metadata__") == 0)
        gk_die("safetensors writer: tensor \"__metadata__\": expected another name, found "
               "the metadata key");
    if ((unsigned)dtype >= GK_ST_NDTYPE || ndim < 0)
        gk_die("safetensors writer: tensor %s: expected a dtype and ndim >= 0, found %d and %d",
               quote(name).s, (int)dtype, ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] > MAX_INT)
            gk_die("safetensors writer: tensor %s: expected dimensions up to 2^53, found %s",
                   quote(name).s, show_shape(ndim, shape).s);
    uint64_t nelem, nbytes;
    if (!byte_size(ndim, shape, dtypes[dtype].size, &nelem, &nbytes) || nbytes > MAX_INT)
        gk_die("safetensors writer: tensor %s: expected at most 2^53 bytes, found shape %s of %s",
               quote(name).s, show_shape(ndim, shape).s, dtypes[dtype].name);
    if (nbytes && !data)
        gk_die("safetensors writer: tensor %s: expected %llu bytes of data, found NULL",
               quote(name).s, (unsigned long long)nbytes);
    wtensor t = {.name = gk_strdup(name), .dtype = dtype, .ndim = ndim, .data = data,
                 .nbytes = nbytes, .shape = gk_malloc((size_t)ndim * sizeof *shape)};
    if (ndim)
        memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    if (w->n == w->cap)
        w->t = gk_realloc(w->t, (w->cap = w->cap ? 2 * w->cap : 16) * sizeof *w->t);
    w->t[w->n++] = t;
}

void gk_st_set_meta(gk_st_writer *w, const char *key, const char *value)
{
    check_utf8("metadata key", key);
    check_utf8("metadata value", value);
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].val);
            w->meta[i].val = gk_strdup(value);
            return;
        }
    if (w->nmeta == w->metacap)
        w->meta = gk_realloc(w->meta, (w->metacap = w->metacap ? 2 * w->metacap : 8) *
                                          sizeof *w->meta);
    w->meta[w->nmeta].key = gk_strdup(key);
    w->meta[w->nmeta++].val = gk_strdup(value);
}

static int wname_cmp(const void *a, const void *b)
{
    return strcmp(((const wtensor *)a)->name, ((const wtensor *)b)->name);
}

/* Data order: larger elements first, so that every tensor starts at a
 * multiple of its element size (all sizes are powers of two), then by name. */
static int wdata_cmp(const void *a, const void *b)
{
    const wtensor *x = *(const wtensor *const *)a, *y = *(const wtensor *const *)b;
    size_t sx = dtypes[x->dtype].size, sy = dtypes[y->dtype].size;
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

void gk_st_write(gk_st_writer *w, const char *path)
{
    if (w->n) /* qsort wants a pointer even for nothing */
        qsort(w->t, w->n, sizeof *w->t, wname_cmp);
    for (size_t i = 1; i < w->n; i++)
        if (strcmp(w->t[i - 1].name, w->t[i].name) == 0)
            gk_die("safetensors writer: tensor %s: expected one tensor of that name, found two",
                   quote(w->t[i].name).s);

    const wtensor **by = gk_malloc(w->n * sizeof *by);
    uint64_t *off = gk_malloc(w->n * sizeof *off); /* begin, in name order */
    for (size_t i = 0; i < w->n; i++)
        by[i] = &w->t[i];
    qsort(by, w->n, sizeof *by, wdata_cmp);
    XXH64_state_t *xs = XXH64_createState();
    if (!xs)
        gk_die("out of memory: expected an xxh64 state, found none");
    XXH64_reset(xs, 0);
    uint64_t pos = 0;
    for (size_t i = 0; i < w->n; i++) {
        off[by[i] - w->t] = pos;
        if (by[i]->nbytes)
            XXH64_update(xs, by[i]->data, by[i]->nbytes);
        pos += by[i]->nbytes;
        if (pos > MAX_INT)
            gk_die("safetensors writer: %s: expected at most 2^53 data bytes, found more",
                   path);
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH64_digest(xs));
    XXH64_freeState(xs);
    gk_st_set_meta(w, GK_ST_XXH64_KEY, hex);
    qsort(w->meta, w->nmeta, sizeof *w->meta, kv_cmp);

    /* The header as the reference writes it: compact, metadata first. jv keeps
     * insertion order, so the keys come out sorted. */
    jv meta = jv_object();
    for (size_t i = 0; i < w->nmeta; i++)
        meta = jv_object_set(meta, jv_string(w->meta[i].key), jv_string(w->meta[i].val));
    jv hdr = jv_object_set(jv_object(), jv_string("__metadata__"), meta);
    for (size_t i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        jv shape = jv_array();
        for (int d = 0; d < t->ndim; d++)
            shape = jv_array_append(shape, jv_number((double)t->shape[d]));
        jv e = jv_object_set(jv_object(), jv_string("dtype"), jv_string(dtypes[t->dtype].name));
        e = jv_object_set(e, jv_string("shape"), shape);
        e = jv_object_set(e, jv_string("data_offsets"),
                          JV_ARRAY(jv_number((double)off[i]),
                                   jv_number((double)(off[i] + t->nbytes))));
        hdr = jv_object_set(hdr, jv_string(t->name), e);
    }
    jv text = jv_dump_string(hdr, 0);
    size_t len = (size_t)jv_string_length_bytes(jv_copy(text));
    /* Spaces up to a multiple of 8, so that the data buffer starts 8-aligned. */
    size_t pad = (8 - len % 8) % 8;
    unsigned char lenb[8];
    gk_put64(lenb, len + pad);

    gk_out *o = gk_out_open(path);
    gk_out_write(o, lenb, sizeof lenb);
    gk_out_write(o, jv_string_value(text), len);
    gk_out_write(o, "       ", pad);
    jv_free(text);
    for (size_t i = 0; i < w->n; i++)
        gk_out_write(o, by[i]->data, by[i]->nbytes);
    gk_out_commit(o);
    free(by);
    free(off);
}
