/* quant: schemes, float16 scales, clip search and bit packing (see quant.h).
 * The float16 conversions use GCC's _Float16, which rounds to nearest even
 * as IEEE 754 asks and is exact in the other direction. */
#include "quant.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const scheme_names[GK_Q_NSCHEME] = {
    "int8", "int6", "int5", "int4", "ternary", "binary", "f16", "f32"};
static const int scheme_qmax[GK_Q_NSCHEME] = {127, 31, 15, 7, 1, 1, 0, 0};
static const int scheme_bits[GK_Q_NSCHEME] = {8, 6, 5, 4, 2, 1, 16, 32};
static const char *const layout_names[GK_NLAYOUT] = {"i8", "bits"};

const char *gk_scheme_name(gk_scheme s) { return scheme_names[s]; }
int gk_scheme_qmax(gk_scheme s) { return scheme_qmax[s]; }
int gk_scheme_bits(gk_scheme s) { return scheme_bits[s]; }
const char *gk_layout_name(gk_qlayout l) { return layout_names[l]; }

int gk_scheme_parse(const char *name)
{
    for (int i = 0; i < GK_Q_NSCHEME; i++)
        if (strcmp(name, scheme_names[i]) == 0)
            return i;
    return -1;
}

int gk_layout_parse(const char *name)
{
    for (int i = 0; i < GK_NLAYOUT; i++)
        if (strcmp(name, layout_names[i]) == 0)
            return i;
    return -1;
}

/* clang before 15 has no _Float16 on x86-64, and the fuzzing build (make
 * fuzz) is clang's: there, __fp16, a storage-only type converted by
 * compiler-rt, rounds the same way (checked on all 2^32 floats against gcc's
 * _Float16; only the quieting of signalling NaNs read back differs). */
#if defined(__clang__) && __clang_major__ < 15
typedef __fp16 half;
#else
typedef _Float16 half;
#endif

uint16_t gk_f16_from_float(float f)
{
    half h = (half)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

float gk_f16_to_float(uint16_t u)
{
    half h;
    memcpy(&h, &u, 2);
    return (float)h;
}

float gk_quant_base_scale(gk_scheme s, const float *w, int n)
{
    double amax = 0, asum = 0;
    for (int j = 0; j < n; j++) {
        double a = fabs(w[j]);
        amax = a > amax ? a : amax;
        asum += a;
    }
    if (n == 0 || amax == 0)
        return 0;
    if (s == GK_Q_BINARY)
        return (float)(asum / n);
    if (s == GK_Q_TERNARY) {
        double thr = 0.7 * asum / n, sum = 0;
        int k = 0;
        for (int j = 0; j < n; j++)
            if (fabs(w[j]) > thr) {
                sum += fabs(w[j]);
                k++;
            }
        return (float)(sum / k); /* k >= 1: the largest |w| exceeds 0.7 of the mean */
    }
    return (float)(amax / scheme_qmax[s]);
}

int gk_quant_value(gk_scheme s, float w, float scale)
{
    if (s == GK_Q_BINARY)
        return w < 0 ? -1 : 1;
    int qmax = scheme_qmax[s];
    float r = rintf(w / scale);
    return r > qmax ? qmax : r < -qmax ? -qmax : (int)r;
}

/* The float16 scale nearest to X, kept finite and, for a nonzero X, nonzero. */
static uint16_t scale_f16(float x)
{
    if (x > 65504.0f)
        x = 65504.0f;
    uint16_t h = gk_f16_from_float(x);
    return h == 0 && x > 0 ? 1 : h; /* the smallest subnormal */
}

double gk_quant_row(gk_scheme s, const float *w, int n, float ratio, int8_t *q,
                    uint16_t *scale)
{
    float base = gk_quant_base_scale(s, w, n);
    *scale = base > 0 ? scale_f16(base * ratio) : 0;
    float sc = gk_f16_to_float(*scale);
    double err = 0;
    for (int j = 0; j < n; j++) {
        q[j] = (int8_t)(sc > 0 ? gk_quant_value(s, w[j], sc) : s == GK_Q_BINARY ? 1 : 0);
        double d = (double)w[j] - (double)q[j] * sc;
        err += d * d;
    }
    return err;
}

/* Down from 1 for the integer schemes, whose start clips nothing; around 1
 * for ternary and binary, whose start is a mean and may be too small. Fine
 * steps near 1, where the optimum of a Gaussian-like row with outliers lies. */
const float gk_clip_ratios[] = {1.0f, 0.97f, 0.94f, 0.91f, 0.88f, 0.85f, 0.82f, 0.79f,
                                0.76f, 0.73f, 0.7f, 0.65f, 0.6f, 0.55f, 0.5f,
                                1.1f, 1.2f, 1.3f};
const int gk_n_clip_ratios = (int)(sizeof gk_clip_ratios / sizeof gk_clip_ratios[0]);

double gk_quant_matrix(gk_scheme s, const float *w, int rows, int cols, int clip_search,
                       int8_t *q, uint16_t *scale)
{
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int i = 0; i < rows; i++) {
        const float *wr = w + (size_t)i * cols;
        int8_t *qr = q + (size_t)i * cols;
        double best = gk_quant_row(s, wr, cols, 1.0f, qr, &scale[i]);
        /* Ratios above 1 only help the mean-based starts of ternary and binary. */
        int nr = clip_search ? (s >= GK_Q_TERNARY ? gk_n_clip_ratios : gk_n_clip_ratios - 3) : 1;
        if (nr > 1) {
            int8_t *tq = gk_malloc((size_t)cols);
            for (int k = 1; k < nr; k++) {
                uint16_t ts;
                double e = gk_quant_row(s, wr, cols, gk_clip_ratios[k], tq, &ts);
                if (e < best) {
                    best = e;
                    scale[i] = ts;
                    memcpy(qr, tq, (size_t)cols);
                }
            }
            free(tq);
        }
        total += best;
    }
    return total;
}

static unsigned code_of(gk_scheme s, int q)
{
    return s == GK_Q_BINARY ? (unsigned)(q + 1) / 2 : (unsigned)(q + scheme_qmax[s]);
}

size_t gk_pack_row_bytes(gk_scheme s, int cols)
{
    return ((size_t)cols * (size_t)scheme_bits[s] + 7) / 8;
}

void gk_pack_bits(gk_scheme s, const int8_t *q, int rows, int cols, uint8_t *out)
{
    int bits = scheme_bits[s];
    size_t rb = gk_pack_row_bytes(s, cols);
    memset(out, 0, rb * (size_t)rows);
    for (int i = 0; i < rows; i++) {
        uint8_t *o = out + rb * (size_t)i;
        for (int j = 0; j < cols; j++) {
            unsigned c = code_of(s, q[(size_t)i * cols + j]);
            size_t bit = (size_t)j * bits;
            /* A code spans at most two bytes (bits <= 8). */
            uint32_t v = (uint32_t)c << (bit % 8);
            o[bit / 8] |= (uint8_t)v;
            if ((bit % 8) + bits > 8)
                o[bit / 8 + 1] |= (uint8_t)(v >> 8);
        }
    }
}

void gk_unpack_bits(gk_scheme s, const uint8_t *in, int rows, int cols, int8_t *q,
                    const char *where)
{
    int bits = scheme_bits[s], qmax = scheme_qmax[s];
    unsigned top = s == GK_Q_BINARY ? 1u : 2u * (unsigned)qmax, mask = (1u << bits) - 1;
    size_t rb = gk_pack_row_bytes(s, cols);
    for (int i = 0; i < rows; i++) {
        const uint8_t *p = in + rb * (size_t)i;
        for (int j = 0; j < cols; j++) {
            size_t bit = (size_t)j * bits;
            uint32_t v = p[bit / 8];
            if ((bit % 8) + bits > 8)
                v |= (uint32_t)p[bit / 8 + 1] << 8;
            unsigned c = (v >> (bit % 8)) & mask;
            if (c > top)
                gk_die("%s: row %d, column %d: expected a %s code in 0..%u, found %u", where, i,
                       j, scheme_names[s], top, c);
            q[(size_t)i * cols + j] =
                (int8_t)(s == GK_Q_BINARY ? 2 * (int)c - 1 : (int)c - qmax);
        }
    }
}

void gk_qtensor_dequantize(const gk_qtensor *t, float *dst)
{
    size_t n = (size_t)t->rows * t->cols;
    if (t->scheme == GK_Q_F32) {
        memcpy(dst, t->f32, n * sizeof *dst);
        return;
    }
    if (t->scheme == GK_Q_F16) {
        for (size_t k = 0; k < n; k++)
            dst[k] = gk_f16_to_float(t->f16[k]);
        return;
    }
    for (int i = 0; i < t->rows; i++) {
        float sc = gk_f16_to_float(t->scale[i]);
        for (int j = 0; j < t->cols; j++) {
            size_t k = (size_t)i * t->cols + j;
            dst[k] = (float)t->q[k] * sc;
        }
    }
}

void gk_qtensor_free(gk_qtensor *t)
{
    free(t->q);
    free(t->scale);
    free(t->f16);
    free(t->f32);
    memset(t, 0, sizeof *t);
}
