/* quant: per-row symmetric quantization of weight matrices for moe-quant and
 * the .qst reader: the schemes, the float16 scales, clip search, and the
 * bit packing of sub-byte integers.
 *
 * A row w[0..n) of a 2-D tensor becomes integers q[j] in [-qmax, qmax] and one
 * scale s, stored as float16; the weight it stands for is q[j] * s, and
 * quantizing is q[j] = clamp(round(w[j] / s)) with the float16-rounded s, so
 * the writer's error is the reader's. Symmetric, no zero point: the weights
 * of a trained transformer are centred on zero, and one scale per row is all
 * the overhead (16 bits a row).
 *
 * The scale a row starts from: max|w| / qmax for the integer schemes (no
 * weight is clipped); for ternary the mean |w| over the weights above
 * 0.7 mean|w| (the threshold and scale of ternary weight networks, Li et al.
 * 2016, which round-to-nearest with that s reproduces closely); for binary
 * mean|w|, the exact least-squares scale of sign(w). Clip search multiplies
 * that start by each ratio of a fixed list (1 included, so it is never worse)
 * and keeps the one with the least squared error of the row. */
#ifndef GK_QUANT_H
#define GK_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GK_Q_INT8, GK_Q_INT6, GK_Q_INT5, GK_Q_INT4, GK_Q_TERNARY, GK_Q_BINARY, /* integers */
    GK_Q_F16, GK_Q_F32,                                                   /* passthrough */
    GK_Q_NSCHEME
} gk_scheme;

/* "int8", "int6", "int5", "int4", "ternary", "binary", "f16", "f32". */
const char *gk_scheme_name(gk_scheme s);
/* The scheme called NAME, or -1. */
int gk_scheme_parse(const char *name);
/* 1 for the integer schemes, 0 for passthrough. */
static inline int gk_scheme_is_int(gk_scheme s) { return s <= GK_Q_BINARY; }
/* Largest |q|: 127, 31, 15, 7, 1, 1. */
int gk_scheme_qmax(gk_scheme s);
/* Bits of one packed code: 8, 6, 5, 4, 2, 1 (16, 32 for passthrough). */
int gk_scheme_bits(gk_scheme s);

/* How integer tensors are stored in a .qst: one int8 byte per weight, or the
 * codes packed densely (gk_pack_bits). */
typedef enum { GK_LAYOUT_I8, GK_LAYOUT_BITS, GK_NLAYOUT } gk_qlayout;
const char *gk_layout_name(gk_qlayout l); /* "i8", "bits" */
int gk_layout_parse(const char *name);    /* or -1 */

/* IEEE binary16 <-> float, round to nearest even. */
uint16_t gk_f16_from_float(float f);
float gk_f16_to_float(uint16_t h);

/* The starting scale of a row (above), before float16 rounding. */
float gk_quant_base_scale(gk_scheme s, const float *w, int n);
/* The integer for weight W at scale S (S > 0): clamp(round(W/S)), and for
 * binary the sign, +1 at zero. */
int gk_quant_value(gk_scheme s, float w, float scale);
/* Quantize row w[0..n) with scale base * ratio rounded to float16 (a zero
 * scale gives q = 0, or +1 for binary, standing for zeros). Writes q[0..n)
 * and the scale's float16 bits; returns the squared reconstruction error. */
double gk_quant_row(gk_scheme s, const float *w, int n, float ratio, int8_t *q,
                    uint16_t *scale);
/* The ratios clip search tries, and how many. */
extern const float gk_clip_ratios[];
extern const int gk_n_clip_ratios;
/* Quantize a rows x cols matrix row by row; CLIP_SEARCH picks each row's ratio
 * by least squared error, else ratio 1. Returns the total squared error. */
double gk_quant_matrix(gk_scheme s, const float *w, int rows, int cols, int clip_search,
                       int8_t *q, uint16_t *scale);

/* Packing. A code is q + qmax (0..2 qmax), for binary (q + 1) / 2; codes go
 * LSB first into a little-endian bit stream, each row starting on a byte:
 * code j of a row occupies bits [j*bits, (j+1)*bits) of the row's bytes. */
size_t gk_pack_row_bytes(gk_scheme s, int cols);
void gk_pack_bits(gk_scheme s, const int8_t *q, int rows, int cols, uint8_t *out);
/* The inverse; dies through gk_die naming WHERE when a code is out of range
 * (a corrupt file: 63 in int6). */
void gk_unpack_bits(gk_scheme s, const uint8_t *in, int rows, int cols, int8_t *q,
                    const char *where);

/* A whole tensor as moe-quant made it, and as the .qst reader holds it. */
typedef struct {
    gk_scheme scheme;
    gk_qlayout layout; /* integer schemes only */
    int rows, cols;    /* a vector is 1 x numel */
    int8_t *q;         /* [rows*cols] integers (integer schemes) */
    uint16_t *scale;   /* [rows] float16 scales (integer schemes) */
    uint16_t *f16;     /* [rows*cols] (GK_Q_F16) */
    float *f32;        /* [rows*cols] (GK_Q_F32) */
} gk_qtensor;

/* Dequantize into dst[rows*cols]. */
void gk_qtensor_dequantize(const gk_qtensor *t, float *dst);
void gk_qtensor_free(gk_qtensor *t);

#endif
