/* quant_test: the schemes' round trips and error bounds on Gaussian rows,
 * zero and outlier rows, clip search, bit packing, GPTQ against
 * round-to-nearest on correlated inputs, and the .qst writer and reader
 * (file and memory, and a corrupted byte). */
#include "gptq.h"
#include "qst.h"
#include "quant.h"
#include "tap.h"
#include "io.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double rel_err(const float *w, const int8_t *q, const uint16_t *scale, int rows,
                      int cols)
{
    double e = 0, n = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double x = w[i * cols + j], d = x - q[i * cols + j] * gk_f16_to_float(scale[i]);
            e += d * d;
            n += x * x;
        }
    return sqrt(e / n);
}

static void test_schemes(void)
{
    enum { R = 32, C = 256 };
    /* Known bounds for N(0,1) rows of 256: uniform rounding error at step
     * max/qmax (max about 3 sigma) for the integers; about 0.6 for binary
     * (sqrt(1 - 2/pi)) and 0.5 for ternary at the TWN scale. */
    static const double bound[] = {0.01, 0.04, 0.08, 0.15, 0.55, 0.62};
    float *w = malloc(R * C * sizeof *w);
    int8_t *q = malloc(R * C);
    uint16_t s[R];
    tap_seed(1);
    for (int k = 0; k < R * C; k++)
        w[k] = (float)tap_normal() * 0.02f;
    for (int sc = GK_Q_INT8; sc <= GK_Q_BINARY; sc++) {
        gk_quant_matrix((gk_scheme)sc, w, R, C, 0, q, s);
        double e = rel_err(w, q, s, R, C);
        int inrange = 1, qmax = gk_scheme_qmax((gk_scheme)sc);
        for (int k = 0; k < R * C; k++)
            inrange &= q[k] >= -qmax && q[k] <= qmax && (sc != GK_Q_BINARY || q[k] != 0);
        ok(e < bound[sc] && inrange, "%s: Gaussian rows, rel err %.4f < %.2f, values in range",
           gk_scheme_name((gk_scheme)sc), e, bound[sc]);
        gk_quant_matrix((gk_scheme)sc, w, R, C, 1, q, s);
        double ec = rel_err(w, q, s, R, C);
        ok(ec <= e, "%s: clip search %.4f <= %.4f", gk_scheme_name((gk_scheme)sc), ec, e);
    }
    free(w);
    free(q);
}

static void test_edge_rows(void)
{
    enum { C = 128 };
    float w[C] = {0}, d[C];
    int8_t q[C];
    uint16_t s;
    int zero = 1;
    for (int sc = GK_Q_INT8; sc <= GK_Q_BINARY; sc++) {
        double e = gk_quant_row((gk_scheme)sc, w, C, 1, q, &s);
        gk_qtensor t = {.scheme = (gk_scheme)sc, .rows = 1, .cols = C, .q = q, .scale = &s};
        gk_qtensor_dequantize(&t, d);
        for (int j = 0; j < C; j++)
            zero &= d[j] == 0;
        zero &= e == 0 && s == 0;
    }
    ok(zero, "a row of zeros: scale 0, dequantizes to exact zeros in every scheme");

    tap_seed(2);
    for (int j = 0; j < C; j++)
        w[j] = (float)tap_normal();
    w[17] = 8; /* one outlier, 8 sigma */
    for (int sc = GK_Q_INT8; sc <= GK_Q_INT4; sc++) {
        int8_t qc[C];
        uint16_t sc2;
        gk_quant_row((gk_scheme)sc, w, C, 1, q, &s);
        gk_quant_matrix((gk_scheme)sc, w, 1, C, 1, qc, &sc2);
        double rtn = rel_err(w, q, &s, 1, C), clip = rel_err(w, qc, &sc2, 1, C);
        /* At 4 bits the outlier's step zeroes much of the row: clipping wins. */
        ok(clip <= rtn && (sc != GK_Q_INT4 || clip < rtn),
           "%s: outlier row: clip search %.4f not worse than the row max %.4f",
           gk_scheme_name((gk_scheme)sc), clip, rtn);
    }
}

static void test_packing(void)
{
    enum { R = 5, C = 37 }; /* odd sizes: rows end mid-byte */
    int8_t q[R * C], back[R * C];
    uint8_t buf[R * C];
    for (int sc = GK_Q_INT8; sc <= GK_Q_BINARY; sc++) {
        int qmax = gk_scheme_qmax((gk_scheme)sc);
        for (int k = 0; k < R * C; k++) {
            int v = k % (2 * qmax + 1) - qmax; /* every value, extremes included */
            q[k] = (int8_t)(sc == GK_Q_BINARY ? (k % 3 ? 1 : -1) : v);
        }
        gk_pack_bits((gk_scheme)sc, q, R, C, buf);
        gk_unpack_bits((gk_scheme)sc, buf, R, C, back, "test");
        size_t rb = gk_pack_row_bytes((gk_scheme)sc, C);
        ok(memcmp(q, back, sizeof q) == 0 && rb == (size_t)(C * gk_scheme_bits((gk_scheme)sc) + 7) / 8,
           "%s: pack/unpack round trip, %zu bytes a row of %d", gk_scheme_name((gk_scheme)sc),
           rb, C);
    }
    int same = 1;
    for (unsigned h = 0; h < 0x7C00; h += 7) /* finite positive halves */
        same &= gk_f16_from_float(gk_f16_to_float((uint16_t)h)) == h;
    ok(same && gk_f16_from_float(1.0f) == 0x3C00 && gk_f16_from_float(-2.0f) == 0xC000,
       "float16: 1 and -2 encode as IEEE; finite halves round-trip");
}

/* Output error ||X W^T - X Q^T|| of a quantized W. */
static double out_err(const float *x, const float *w, const int8_t *q, const uint16_t *s,
                      int n, int rows, int cols)
{
    double e = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double a = 0, b = 0;
            for (int j = 0; j < cols; j++) {
                a += (double)x[t * cols + j] * w[r * cols + j];
                b += (double)x[t * cols + j] * q[r * cols + j] * gk_f16_to_float(s[r]);
            }
            e += (a - b) * (a - b);
        }
    return sqrt(e);
}

static void test_gptq(void)
{
    enum { N = 512, R = 24, C = 64, K = 8 };
    float *x = calloc(N * C, sizeof *x), *w = malloc(R * C * sizeof *w),
          *mix = malloc(K * C * sizeof *mix), *wc = malloc(R * C * sizeof *w);
    int8_t *q = malloc(R * C), *qg = malloc(R * C);
    uint16_t s[R];
    double *h = calloc(C * C, sizeof *h);
    tap_seed(3);
    /* Correlated inputs: K latent factors mixed into C columns, plus noise. */
    for (int k = 0; k < K * C; k++)
        mix[k] = (float)tap_normal();
    for (int t = 0; t < N; t++) {
        double z[K];
        for (int k = 0; k < K; k++)
            z[k] = tap_normal();
        for (int j = 0; j < C; j++) {
            double v = 0.1 * tap_normal();
            for (int k = 0; k < K; k++)
                v += z[k] * mix[k * C + j];
            x[t * C + j] = (float)v;
        }
    }
    for (int k = 0; k < R * C; k++)
        w[k] = (float)tap_normal();
    gk_gptq_accumulate(h, x, N, C);
    for (int sc = GK_Q_INT6; sc <= GK_Q_TERNARY; sc += 2) { /* int6, int4 */
        double *hc = malloc(C * C * sizeof *hc);
        memcpy(hc, h, C * C * sizeof *hc);
        memcpy(wc, w, R * C * sizeof *w);
        gk_quant_matrix((gk_scheme)sc, w, R, C, 0, q, s);
        gk_gptq_opts o = {.damp = 0.01, .block = 16, .act_order = sc == GK_Q_INT4};
        int rc = gk_gptq((gk_scheme)sc, wc, R, C, hc, s, &o, qg);
        double rtn = out_err(x, w, q, s, N, R, C), g = out_err(x, w, qg, s, N, R, C);
        ok(rc == 0 && g < 0.8 * rtn, "GPTQ %s%s: output error %.3g < 0.8 x round-to-nearest %.3g",
           gk_scheme_name((gk_scheme)sc), o.act_order ? " (act order)" : "", g, rtn);
        free(hc);
    }
    free(x); free(w); free(mix); free(wc); free(q); free(qg); free(h);
}

static char qst_path[256];
static void load_corrupt(const char *path)
{
    gk_qst_free(gk_qst_load(path));
}

static void test_qst(const char *dir)
{
    gk_config c;
    gk_config_defaults(&c);
    const char *j = "{\"model\": {\"vocab\": 64, \"n_layer\": 2, \"d_model\": 16, \"n_head\": 2, "
                    "\"n_kv_head\": 1, \"seq_len\": 8}}";
    gk_config_apply_text(&c, j, strlen(j), "test");
    gk_config_check(&c, "test");
    gk_layout l;
    gk_layout_init(&l, &c);
    float *p = malloc(l.numel * sizeof *p), *want = malloc(l.numel * sizeof *p),
          *got = malloc(l.numel * sizeof *p);
    gk_model_init_params(&l, p, 7);
    gk_qtensor *qt = calloc((size_t)l.n_params, sizeof *qt);
    for (int i = 0; i < l.n_params; i++) {
        const gk_param *pr = &l.params[i];
        gk_qtensor *t = &qt[i];
        /* Every scheme and both layouts somewhere in the model. */
        t->scheme = pr->ndim == 2 ? (gk_scheme)(i % GK_Q_NSCHEME) : GK_Q_F32;
        t->layout = (gk_qlayout)(i / GK_Q_NSCHEME % 2);
        t->rows = pr->ndim == 2 ? pr->shape[0] : 1;
        t->cols = pr->ndim == 2 ? pr->shape[1] : (int)pr->numel;
        const float *w = p + pr->offset;
        if (t->scheme == GK_Q_F32) {
            t->f32 = malloc(pr->numel * sizeof *t->f32);
            memcpy(t->f32, w, pr->numel * sizeof *w);
        } else if (t->scheme == GK_Q_F16) {
            t->f16 = malloc(pr->numel * 2);
            for (size_t k = 0; k < pr->numel; k++)
                t->f16[k] = gk_f16_from_float(w[k]);
        } else {
            t->q = malloc(pr->numel);
            t->scale = malloc((size_t)t->rows * 2);
            gk_quant_matrix(t->scheme, w, t->rows, t->cols, 1, t->q, t->scale);
        }
        gk_qtensor_dequantize(t, want + pr->offset);
    }
    snprintf(qst_path, sizeof qst_path, "%s/m.qst", dir);
    gk_qst_write(qst_path, &l, qt, "test");
    gk_qst *q = gk_qst_load(qst_path);
    gk_qst_dequantize(q, &l, got);
    ok(gk_qst_config(q)->model.d_model == 16 && memcmp(got, want, l.numel * sizeof *got) == 0,
       "qst: write then gk_qst_load gives the config and the same dequantized weights");
    gk_qst_free(q);

    size_t n;
    unsigned char *bytes = gk_read_file(qst_path, &n);
    memset(got, 0, l.numel * sizeof *got);
    q = gk_qst_load_mem(bytes, n, "mem.qst");
    gk_qst_dequantize(q, &l, got);
    ok(memcmp(got, want, l.numel * sizeof *got) == 0, "qst: gk_qst_load_mem agrees");
    gk_qst_free(q);

    bytes[n - 3] ^= 0x10;
    FILE *fp = fopen(qst_path, "wb");
    fwrite(bytes, 1, n, fp);
    fclose(fp);
    char err[512];
    int rc = tap_child(load_corrupt, qst_path, err, sizeof err);
    /* The first line only: LeakSanitizer may add its own lines in the child. */
    char *nl = strchr(err, '\n');
    if (nl)
        *nl = 0;
    ok(rc == 1 && strstr(err, "golfkit.xxh64"),
       "qst: a flipped data byte dies naming the checksum (%s)", err);
    free(bytes);
    for (int i = 0; i < l.n_params; i++)
        gk_qtensor_free(&qt[i]);
    free(qt); free(p); free(want); free(got);
    gk_layout_free(&l);
}

int main(void)
{
    gk_set_prog("quant_test");
    test_schemes();
    test_edge_rows();
    test_packing();
    test_gptq();
    char dir[] = "/tmp/quant_test.XXXXXX";
    if (mkdtemp(dir)) {
        test_qst(dir);
        tap_remove_dir(dir);
    }
    return tap_done();
}
