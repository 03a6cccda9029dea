/* safetensors_test: TAP unit tests of the safetensors reader and writer, and
 * the C half of the interop test (testdata/safetensors_test.sh).
 *
 * Without arguments it runs the unit tests in a temporary directory: a round
 * trip of every dtype (a scalar and an empty tensor among them) with metadata;
 * the layout (padding, alignment, header order, our checksum); deterministic
 * bytes whatever the order of adding; and each malformed file refused with its
 * one-line message. The loader dies on a bad file, so refusals run it in a
 * forked child whose stderr comes back through a pipe: exit status 1, one
 * line, the expected words (the sanitizer build also checks the child frees
 * everything before dying).
 *
 * Modes for the interop test:
 *   --write FILE      the fixture, dtypes numpy has (Python's load_file reads it)
 *   --write-all FILE  the fixture with BF16 and F8 too
 *   --read FILE       load FILE, print {"checksum", "metadata", "tensors": [{name,
 *                     dtype, shape, hex}]} as one JSON line (hex: the data bytes)
 *
 * The fixture arrays are host-order values: this assumes a little-endian host,
 * as every machine golfkit targets is. */
#define _GNU_SOURCE /* memmem */
#include "safetensors.h"
#include "io.h"
#include "jsonl.h"
#include "tap.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- the fixture ---- */

static const float a_f32[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1e-30f, 3.4e38f};
static const uint16_t b_f16[4] = {0x3C00, 0xC000, 0x3800, 0x7C00}; /* 1, -2, 0.5, inf */
static const uint16_t c_bf16[4] = {0x3F80, 0xC000, 0x4040, 0x0000}; /* 1, -2, 3, 0 */
static const double d_f64[3] = {1.5, -2.25, 1e300};
static const int8_t e_i8[5] = {-128, -1, 0, 1, 127};
static const uint8_t f_u8[3] = {0, 128, 255};
static const int16_t g_i16[2] = {-32768, 32767};
static const uint16_t h_u16[2] = {0, 65535};
static const int32_t i_i32[4] = {INT32_MIN, -1, 1, INT32_MAX};
static const uint32_t j_u32[1] = {4000000000u};
static const int64_t k_i64[2] = {INT64_MIN, INT64_MAX};
static const uint64_t l_u64[2] = {0, UINT64_MAX};
static const uint8_t m_bool[3] = {1, 0, 1};
static const uint8_t n_f8[2] = {0x38, 0xB8}; /* 1, -1 in E4M3 */
static const float scalar = 3.25f;

static const struct fx {
    const char *name;
    gk_st_dtype dtype;
    int ndim;
    uint64_t shape[3];
    const void *data;
    int numpy; /* numpy has this dtype */
} fix[] = {
    {"a.f32", GK_ST_F32, 2, {2, 3}, a_f32, 1},
    {"b.f16", GK_ST_F16, 1, {4}, b_f16, 1},
    {"c.bf16", GK_ST_BF16, 2, {2, 2}, c_bf16, 0},
    {"d.f64", GK_ST_F64, 1, {3}, d_f64, 1},
    {"e.i8", GK_ST_I8, 1, {5}, e_i8, 1},
    {"empty", GK_ST_F32, 2, {0, 4}, NULL, 1},
    {"f.u8", GK_ST_U8, 1, {3}, f_u8, 1},
    {"g.i16", GK_ST_I16, 1, {2}, g_i16, 1},
    {"h.u16", GK_ST_U16, 1, {2}, h_u16, 1},
    {"i.i32", GK_ST_I32, 3, {2, 1, 2}, i_i32, 1},
    {"j.u32", GK_ST_U32, 1, {1}, j_u32, 1},
    {"k.i64", GK_ST_I64, 1, {2}, k_i64, 1},
    {"l.u64", GK_ST_U64, 1, {2}, l_u64, 1},
    {"m.bool", GK_ST_BOOL, 1, {3}, m_bool, 1},
    {"n.f8", GK_ST_F8_E4M3, 1, {2}, n_f8, 0},
    {"scalar", GK_ST_F32, 0, {0}, &scalar, 1},
};
enum { NFIX = sizeof fix / sizeof *fix };

static const char *const meta[][2] = {
    {"config", "{\"d_model\": 8, \"vocab\": 1024}"},
    {"step", "100"},
    {"note", "h\xc3\xa9llo \xe2\x9c\x93 \"quoted\"\nsecond line"},
};
enum { NMETA = sizeof meta / sizeof *meta };

static int included(const struct fx *f, int all) { return all || f->numpy; }

static uint64_t fx_bytes(const struct fx *f)
{
    uint64_t n = gk_st_dtype_size(f->dtype);
    for (int d = 0; d < f->ndim; d++)
        n *= f->shape[d];
    return n;
}

/* Write the fixture to PATH, adding tensors and metadata backwards when REV. */
static void write_fixture(const char *path, int all, int rev)
{
    gk_st_writer *w = gk_st_writer_new();
    for (int k = 0; k < NFIX; k++) {
        const struct fx *f = &fix[rev ? NFIX - 1 - k : k];
        if (included(f, all))
            gk_st_add(w, f->name, f->dtype, f->ndim, f->shape, f->data);
    }
    for (int k = 0; k < NMETA; k++) {
        int i = rev ? NMETA - 1 - k : k;
        gk_st_set_meta(w, meta[i][0], meta[i][1]);
    }
    gk_st_write(w, path);
    gk_st_writer_free(w);
}

static void print_summary(const char *path)
{
    gk_st *st = gk_st_load(path);
    jv m = jv_object(), ts = jv_array();
    for (size_t i = 0; i < gk_st_meta_count(st); i++) {
        const char *k, *v;
        gk_st_meta_at(st, i, &k, &v);
        m = jv_object_set(m, jv_string(k), jv_string(v));
    }
    for (size_t i = 0; i < gk_st_count(st); i++) {
        const gk_st_tensor *t = gk_st_at(st, i);
        jv shape = jv_array();
        for (int d = 0; d < t->ndim; d++)
            shape = jv_array_append(shape, jv_number((double)t->shape[d]));
        char *hex = gk_malloc(2 * t->nbytes + 1);
        for (uint64_t b = 0; b < t->nbytes; b++)
            sprintf(hex + 2 * b, "%02x", t->data[b]);
        hex[2 * t->nbytes] = 0;
        jv e = jv_object_set(jv_object(), jv_string("name"), jv_string(t->name));
        e = jv_object_set(e, jv_string("dtype"), jv_string(gk_st_dtype_name(t->dtype)));
        e = jv_object_set(e, jv_string("shape"), shape);
        e = jv_object_set(e, jv_string("hex"), jv_string(hex));
        free(hex);
        ts = jv_array_append(ts, e);
    }
    jv o = jv_object_set(jv_object(), jv_string("checksum"),
                         jv_string(gk_st_checksummed(st) ? "ok" : "absent"));
    o = jv_object_set(o, jv_string("metadata"), m);
    o = jv_object_set(o, jv_string("tensors"), ts);
    gk_emit(stdout, o);
    gk_st_free(st);
}

/* ---- files in the temporary directory ---- */

static char dir[] = "/tmp/safetensors_test.XXXXXX";

static const char *path(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static unsigned char *slurp(const char *name, size_t *n)
{
    return gk_read_file(path(name), n);
}

static void spill(const char *name, const void *p, size_t n)
{
    FILE *fp = fopen(path(name), "wb");
    if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0)
        gk_die("%s: cannot write the test file", path(name));
}

/* A file with header length HLEN, header JSON, then N data bytes (0xAB). */
static void raw_len(const char *name, uint64_t hlen, const char *json, size_t n)
{
    size_t jn = strlen(json);
    unsigned char *b = gk_calloc(1, 8 + jn + n);
    gk_put64(b, hlen);
    memcpy(b + 8, json, jn);
    memset(b + 8 + jn, 0xAB, n);
    spill(name, b, 8 + jn + n);
    free(b);
}

static void raw(const char *name, const char *json, size_t n)
{
    raw_len(name, strlen(json), json, n);
}

/* ---- running what must die ---- */

/* Run FN(ARG) in a child with stderr into a pipe. Ok when the child exits 1
 * after one stderr line holding WANT. */
static void dies(void (*fn)(const char *), const char *arg, const char *want, const char *what)
{
    char buf[8192];
    int status = tap_child(fn, arg, buf, sizeof buf);
    int one_line = buf[0] && !strchr(buf, '\n');
    ok(status == 1 && one_line && strstr(buf, want), "%s: %s", what, buf);
    if (!one_line || !strstr(buf, want))
        printf("#   wanted \"%s\" in one line, status %d, got: %s\n", want, status, buf);
}

static void load_and_free(const char *p) { gk_st_free(gk_st_load(p)); }

static void refused(const char *name, const char *want)
{
    char what[300];
    snprintf(what, sizeof what, "refused %s", name);
    dies(load_and_free, path(name), want, what);
}

/* ---- tests ---- */

static void test_dtypes(void)
{
    int same = 1;
    char list[256] = "";
    for (int d = 0; d < GK_ST_NDTYPE; d++) {
        same &= gk_st_dtype_parse(gk_st_dtype_name(d)) == d;
        size_t s = gk_st_dtype_size(d);
        same &= s == 1 || s == 2 || s == 4 || s == 8;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", d ? ", " : "",
                 gk_st_dtype_name(d));
    }
    ok(same && gk_st_dtype_parse("F65") == -1 && gk_st_dtype_parse("f32") == -1,
       "dtype names parse back, sizes are powers of two, case matters");
    ok(gk_st_dtype_size(GK_ST_BF16) == 2 && gk_st_dtype_size(GK_ST_F64) == 8 &&
       gk_st_dtype_size(GK_ST_BOOL) == 1, "dtype sizes");
    /* The reader's "expected one of" list must name the same dtypes. */
    raw("list.st", "{\"a\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", 0);
    char want[300];
    snprintf(want, sizeof want, "expected one of %s, found \"X\"", list);
    refused("list.st", want);
}

static void test_roundtrip(void)
{
    write_fixture(path("all.st"), 1, 0);
    gk_st *st = gk_st_load(path("all.st"));
    ok(gk_st_count(st) == NFIX, "all %d tensors read back", NFIX);
    int good = 1;
    for (int i = 0; i < NFIX; i++) {
        const struct fx *f = &fix[i];
        const gk_st_tensor *t = gk_st_find(st, f->name);
        int g = t && t->dtype == f->dtype && t->ndim == f->ndim && t->nbytes == fx_bytes(f);
        for (int d = 0; g && d < f->ndim; d++)
            g = t->shape[d] == f->shape[d];
        g = g && (t->nbytes == 0 || memcmp(t->data, f->data, t->nbytes) == 0);
        if (!g)
            printf("# tensor %s differs\n", f->name);
        good &= g;
    }
    ok(good, "every tensor: dtype, shape, bytes");
    const gk_st_tensor *s = gk_st_find(st, "scalar"), *e = gk_st_find(st, "empty");
    ok(s && s->ndim == 0 && s->nelem == 1 && s->nbytes == 4, "0-dim scalar: one element");
    ok(e && e->nelem == 0 && e->nbytes == 0 && e->ndim == 2 && e->shape[1] == 4,
       "empty tensor [0, 4]: no bytes, shape kept");
    int order = 1;
    for (size_t i = 1; i < gk_st_count(st); i++)
        order &= strcmp(gk_st_at(st, i - 1)->name, gk_st_at(st, i)->name) < 0;
    ok(order && strcmp(gk_st_at(st, 0)->name, "a.f32") == 0, "gk_st_at iterates in name order");
    ok(gk_st_find(st, "nope") == NULL && gk_st_find(st, "") == NULL, "unknown name: NULL");

    good = gk_st_meta_count(st) == NMETA + 1;
    for (int i = 0; i < NMETA; i++)
        good &= gk_st_meta(st, meta[i][0]) && strcmp(gk_st_meta(st, meta[i][0]), meta[i][1]) == 0;
    ok(good && gk_st_meta(st, "absent") == NULL, "metadata read back (UTF-8, quotes, newline)");
    const char *k0, *v0, *k1, *v1;
    gk_st_meta_at(st, 0, &k0, &v0);
    gk_st_meta_at(st, 1, &k1, &v1);
    ok(strcmp(k0, "config") == 0 && strcmp(k1, GK_ST_XXH64_KEY) == 0,
       "metadata iterates in key order");
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx",
             (unsigned long long)XXH64(gk_st_at(st, 0)->data - gk_st_at(st, 0)->offset,
                                       gk_st_data_size(st), 0));
    ok(gk_st_checksummed(st) && strcmp(gk_st_meta(st, GK_ST_XXH64_KEY), hex) == 0,
       "golfkit.xxh64 is the xxh64 of the data buffer, and was verified");

    float a[6], sc, none[1];
    gk_st_read_f32(st, "a.f32", 2, (const uint64_t[]){2, 3}, a);
    gk_st_read_f32(st, "scalar", 0, NULL, &sc);
    gk_st_read_f32(st, "empty", 2, (const uint64_t[]){0, 4}, none);
    ok(memcmp(a, a_f32, sizeof a) == 0 && sc == 3.25f, "gk_st_read_f32: matrix and scalar");
    gk_st_free(st);

    /* The numpy subset is the same minus two tensors. */
    write_fixture(path("np.st"), 0, 0);
    st = gk_st_load(path("np.st"));
    ok(gk_st_count(st) == NFIX - 2 && !gk_st_find(st, "c.bf16") && gk_st_find(st, "b.f16"),
       "--write subset: no BF16, no F8");
    gk_st_free(st);
}

static void test_layout(void)
{
    size_t n;
    unsigned char *b = slurp("all.st", &n);
    uint64_t hlen = gk_get64(b);
    const char *h = (const char *)b + 8;
    ok(hlen % 8 == 0 && hlen < n, "header length %llu: a multiple of 8",
       (unsigned long long)hlen);
    ok(strncmp(h, "{\"__metadata__\":{\"config\":", 26) == 0,
       "compact header, metadata first, keys sorted");
    const char *end = memchr(h, '\n', hlen) ? NULL : h + hlen;
    size_t json = hlen;
    while (json > 0 && h[json - 1] == ' ')
        json--;
    ok(end && json > 0 && h[json - 1] == '}' && hlen - json < 8, "padded with %llu spaces",
       (unsigned long long)(hlen - json));
    int order = 1;
    const char *prev = h;
    for (int i = 0; i < NFIX; i++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\":{\"dtype\"", fix[i].name);
        const char *at = strstr(h, key);
        order &= at && at > prev;
        prev = at ? at : prev;
    }
    ok(order, "header entries in name order");
    gk_st *st = gk_st_load(path("all.st"));
    int aligned = gk_st_data_offset(st) % 8 == 0;
    for (size_t i = 0; i < gk_st_count(st); i++)
        aligned &= gk_st_at(st, i)->offset % gk_st_dtype_size(gk_st_at(st, i)->dtype) == 0;
    ok(aligned, "data buffer 8-aligned; every tensor at a multiple of its element size");
    ok(gk_st_find(st, "d.f64")->offset == 0 && gk_st_find(st, "n.f8")->offset + 2 ==
       gk_st_data_size(st), "data order: 8-byte elements first, 1-byte last");
    gk_st_free(st);
    free(b);
}

static int same_file(const char *x, const char *y)
{
    size_t nx, ny;
    unsigned char *a = slurp(x, &nx), *b = slurp(y, &ny);
    int same = nx == ny && memcmp(a, b, nx) == 0;
    free(a);
    free(b);
    return same;
}

static void test_determinism(void)
{
    write_fixture(path("again.st"), 1, 0);
    ok(same_file("all.st", "again.st"), "same inputs, same bytes");
    write_fixture(path("rev.st"), 1, 1);
    ok(same_file("all.st", "rev.st"), "tensors and metadata added backwards: same bytes");

    /* One writer written twice; a user's golfkit.xxh64 is replaced. */
    gk_st_writer *w = gk_st_writer_new();
    gk_st_set_meta(w, GK_ST_XXH64_KEY, "0000000000000000");
    gk_st_set_meta(w, "k", "old");
    gk_st_set_meta(w, "k", "new");
    gk_st_add(w, "x", GK_ST_F32, 1, (const uint64_t[]){2}, a_f32);
    gk_st_write(w, path("w1.st"));
    gk_st_write(w, path("w2.st"));
    gk_st_writer_free(w);
    gk_st *st = gk_st_load(path("w1.st"));
    ok(same_file("w1.st", "w2.st") && gk_st_checksummed(st) &&
       strcmp(gk_st_meta(st, "k"), "new") == 0 && gk_st_meta_count(st) == 2,
       "a writer writes twice alike; set_meta replaces; the checksum is always ours");
    gk_st_free(st);
    ok(access(path("w1.st.tmp"), F_OK) != 0, "no temporary left behind");

    w = gk_st_writer_new();
    gk_st_write(w, path("none.st"));
    gk_st_writer_free(w);
    st = gk_st_load(path("none.st"));
    ok(gk_st_count(st) == 0 && gk_st_data_size(st) == 0 && gk_st_checksummed(st),
       "no tensors: a valid file with only the checksum");
    gk_st_free(st);
}

/* Files other writers may make, which the reference reader takes. */
static void test_accepted(void)
{
    /* No metadata, an extra field, empty tensors at the start and the end,
     * a header length that is not a multiple of 8, trailing header spaces. */
    raw("py.st", "{\"e0\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                 "\"w\":{\"dtype\":\"I16\",\"shape\":[3],\"data_offsets\":[0,6],\"x\":1},"
                 "\"e1\":{\"dtype\":\"F64\",\"shape\":[2,0],\"data_offsets\":[6,6]}}  ", 6);
    gk_st *st = gk_st_load(path("py.st"));
    const gk_st_tensor *t = gk_st_find(st, "w");
    ok(gk_st_count(st) == 3 && !gk_st_checksummed(st) && gk_st_meta_count(st) == 0 && t &&
       t->nbytes == 6 && t->data[0] == 0xAB && gk_st_data_offset(st) % 8 != 0,
       "no checksum, no metadata, an unknown field, empty tensors at the ends: accepted");
    gk_st_free(st);
    raw("null.st", "{\"__metadata__\":null}", 0);
    st = gk_st_load(path("null.st"));
    ok(gk_st_count(st) == 0 && gk_st_meta_count(st) == 0, "\"__metadata__\": null is none");
    gk_st_free(st);
    raw("min.st", "{}", 0);
    st = gk_st_load(path("min.st"));
    ok(gk_st_count(st) == 0, "{} with no data: an empty file, accepted");
    gk_st_free(st);
}

static const char T4[] = "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%s]}";

static void two(const char *name, const char *a, const char *b, size_t n)
{
    char json[300], ea[100], eb[100];
    snprintf(ea, sizeof ea, T4, a);
    snprintf(eb, sizeof eb, T4, b);
    eb[1] = 'b'; /* the second tensor is "b" */
    snprintf(json, sizeof json, "{%s,%s}", ea, eb);
    raw(name, json, n);
}

static void test_refused(void)
{
    spill("short.st", "\x05\0\0\0\0", 5);
    refused("short.st", "short.st: offset 0: expected an 8-byte header length, found a file "
                        "of 5 bytes");
    raw_len("beyond.st", 1000, "{}", 4);
    refused("beyond.st", "offset 0: expected a header length of at most 6 bytes (file size "
                         "14), found 1000");
    raw_len("huge.st", UINT64_C(1) << 63, "{}", 0);
    refused("huge.st", "offset 0: expected a header length of at most 100000000 bytes");
    raw("zero.st", "", 0);
    refused("zero.st", "offset 8: expected '{' opening the JSON header, found an empty header");
    raw("array.st", "[1, 2]", 0);
    refused("array.st", "offset 8: expected '{' opening the JSON header, found byte 0x5b");
    raw("badjson.st", "{\"a\": {\"dtype\": \"F32\",", 0);
    refused("badjson.st", "offset 8: expected a JSON object of 22 bytes, found invalid JSON: ");
    raw("twojson.st", "{} {}", 0);
    refused("twojson.st", "found invalid JSON: Unexpected extra JSON values");
    raw("utf8.st", "{\"\xc3\x28\": 1}", 0);
    refused("utf8.st", "offset 10: expected UTF-8 in the JSON header, found byte 0xc3");
    raw("nul.st", "{\"a\\u0000b\":{}}", 0);
    refused("nul.st", "offset 8: expected tensor names without NUL, found \"a\\u0000b\"");

    raw("entry.st", "{\"a\":3}", 0);
    refused("entry.st", "tensor \"a\": expected an object with dtype, shape and data_offsets, "
                        "found 3");
    raw("nodtype.st", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    refused("nodtype.st", "tensor \"a\": field dtype: expected one of BOOL, U8, ");
    refused("nodtype.st", "found nothing (field missing)");
    raw("dtype.st", "{\"a\":{\"dtype\":\"F65\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    refused("dtype.st", "tensor \"a\": field dtype: expected one of BOOL, U8, I8, F8_E5M2, "
                        "F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64, found \"F65\"");
    raw("negshape.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4);
    refused("negshape.st", "tensor \"a\": field shape: expected an array of integers in "
                           "0..2^53, found [2,-1]");
    raw("fracshape.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    refused("fracshape.st", "field shape: expected an array of integers in 0..2^53, found [1.5]");
    raw("shape4.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4);
    refused("shape4.st", "field shape: expected an array of integers in 0..2^53, found 4");
    raw("bigshape.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e16],"
                       "\"data_offsets\":[0,4]}}", 4);
    refused("bigshape.st", "field shape: expected an array of integers in 0..2^53");
    raw("overflow.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                       "\"data_offsets\":[0,4]}}", 4);
    refused("overflow.st", "tensor \"a\": field shape: expected at most 2^64 bytes of F32, "
                           "found [4294967296,4294967296,16]");
    raw("size.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    refused("size.st", "size.st: tensor \"a\": field data_offsets: expected end - begin = 24 "
                       "bytes (shape [2, 3] of F32), found [0,20]: 20 bytes");
    raw("reversed.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8);
    refused("reversed.st", "field data_offsets: expected [begin, end], integers with "
                           "0 <= begin <= end, found [8,4]");
    raw("three.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8);
    refused("three.st", "field data_offsets: expected [begin, end]");
    raw("range.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    refused("range.st", "tensor \"a\": field data_offsets: expected offsets within the 4-byte "
                        "data buffer (truncated file?), found [0,8]");

    two("overlap.st", "0,4", "2,6", 6);
    refused("overlap.st", "expected tensor \"b\" to start at data offset 4, where tensor \"a\" "
                          "ends, found it at 2 (overlap)");
    two("same.st", "0,4", "0,4", 4);
    refused("same.st", "(overlap)");
    two("gap.st", "0,4", "8,12", 12);
    refused("gap.st", "expected a tensor at data offset 4 (tensors must cover the "
                      "data buffer), found a gap of 4 bytes before tensor \"b\"");
    two("lead.st", "4,8", "8,12", 12);
    refused("lead.st", "expected a tensor at data offset 0");
    raw("tail.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8);
    refused("tail.st", "expected the end of the file after the last tensor (tensors must "
                       "cover the data buffer), found 4 more bytes");
    raw("inside.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8);
    refused("inside.st", "expected tensor \"e\" to start at data offset 8");

    raw("meta.st", "{\"__metadata__\":[1]}", 0);
    refused("meta.st", "meta.st: field __metadata__: expected an object of strings, found [1]");
    raw("metaval.st", "{\"__metadata__\":{\"k\":1}}", 0);
    refused("metaval.st", "field __metadata__ \"k\": expected a string without NUL, found 1");

    /* Our own files, damaged. */
    size_t n;
    unsigned char *b = slurp("all.st", &n);
    spill("cut.st", b, n - 1);
    refused("cut.st", "cut.st: tensor \"n.f8\": field data_offsets: expected offsets within "
                      "the");
    gk_st *st = gk_st_load(path("all.st"));
    char want[200];
    snprintf(want, sizeof want, "field __metadata__ \"golfkit.xxh64\": expected ");
    size_t at = gk_st_data_offset(st) + 5;
    char found[40];
    snprintf(found, sizeof found, "found \"%s\"", gk_st_meta(st, GK_ST_XXH64_KEY));
    gk_st_free(st);
    b[at] ^= 1;
    spill("flip.st", b, n);
    refused("flip.st", want);
    refused("flip.st", found);
    b[at] ^= 1;
    /* A checksum of the wrong form is a mismatch too. */
    char *key = memmem(b, n, GK_ST_XXH64_KEY "\":\"", strlen(GK_ST_XXH64_KEY) + 3);
    memcpy(key + strlen(GK_ST_XXH64_KEY) + 3, "XYZ", 3);
    spill("badsum.st", b, n);
    refused("badsum.st", "found \"XYZ");
    free(b);
}

static void expect_missing(const char *p)
{
    gk_st *st = gk_st_load(p);
    gk_st_expect(st, "nope", GK_ST_F32, 0, NULL);
}
static void expect_dtype(const char *p)
{
    gk_st *st = gk_st_load(p);
    gk_st_read_f32(st, "b.f16", 1, (const uint64_t[]){4}, NULL);
}
static void expect_shape(const char *p)
{
    gk_st *st = gk_st_load(p);
    float x[6];
    gk_st_read_f32(st, "a.f32", 2, (const uint64_t[]){3, 2}, x);
}
static void expect_rank(const char *p)
{
    gk_st *st = gk_st_load(p);
    float x[6];
    gk_st_read_f32(st, "a.f32", 1, (const uint64_t[]){6}, x);
}

static void test_expect(void)
{
    const char *p = path("all.st");
    dies(expect_missing, p, "all.st: tensor \"nope\": expected a tensor of that name, found none",
         "gk_st_expect: missing tensor");
    dies(expect_dtype, p, "tensor \"b.f16\": field dtype: expected F32, found F16",
         "gk_st_read_f32: wrong dtype");
    dies(expect_shape, p, "tensor \"a.f32\": field shape: expected [3, 2], found [2, 3]",
         "gk_st_read_f32: wrong shape");
    dies(expect_rank, p, "field shape: expected [6], found [2, 3]", "gk_st_read_f32: wrong rank");
}

static void add_twice(const char *p)
{
    gk_st_writer *w = gk_st_writer_new();
    gk_st_add(w, "x", GK_ST_U8, 1, (const uint64_t[]){1}, "a");
    gk_st_add(w, "y", GK_ST_U8, 1, (const uint64_t[]){1}, "b");
    gk_st_add(w, "x", GK_ST_F32, 0, NULL, &scalar);
    gk_st_write(w, p);
}
static void add_metadata_name(const char *p)
{
    (void)p;
    gk_st_add(gk_st_writer_new(), "__metadata__", GK_ST_U8, 0, NULL, "a");
}
static void add_bad_utf8(const char *p)
{
    (void)p;
    gk_st_set_meta(gk_st_writer_new(), "k", "\xff");
}

static void test_writer_refuses(void)
{
    dies(add_twice, path("twice.st"), "tensor \"x\": expected one tensor of that name, found two",
         "writer: a name added twice");
    ok(access(path("twice.st"), F_OK) != 0 && access(path("twice.st.tmp"), F_OK) != 0,
       "writer: nothing written when it dies");
    dies(add_metadata_name, NULL, "tensor \"__metadata__\": expected another name",
         "writer: a tensor called __metadata__");
    dies(add_bad_utf8, NULL, "metadata value \"\xff\": expected UTF-8, found byte 0xff",
         "writer: metadata not UTF-8");
}

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        write_fixture(argv[2], 0, 0);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--write-all") == 0) {
        write_fixture(argv[2], 1, 0);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--read") == 0) {
        print_summary(argv[2]);
        return 0;
    }
    if (argc != 1)
        gk_usage("expected no arguments, --write FILE, --write-all FILE or --read FILE");
    if (!mkdtemp(dir))
        gk_die("%s: cannot create: expected a temporary directory", dir);
    test_dtypes();
    test_roundtrip();
    test_layout();
    test_determinism();
    test_accepted();
    test_refused();
    test_expect();
    test_writer_refuses();
    tap_remove_dir(dir);
    return tap_done();
}
