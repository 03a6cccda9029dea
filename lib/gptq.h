/* gptq: the GPTQ algorithm (Frantar et al., 2022, "GPTQ: Accurate
 * Post-Training Quantization for Generative Pre-trained Transformers") for
 * one weight matrix, with the per-row scales of lib/quant.h fixed beforehand.
 *
 * Quantizing W [rows, cols] (y = x W^T) to Q so as to keep X W^T close to
 * X Q^T over calibration inputs X is a least-squares problem per row with
 * Hessian H = 2 X^T X. GPTQ quantizes the columns one at a time and spreads
 * each column's rounding error over the columns not yet quantized, weighted
 * by the inverse Hessian; the upper Cholesky factor U of H^-1 (H^-1 = U^T U)
 * gives those weights row by row, and working in blocks of columns turns most
 * of the updates into one matrix product per block. Everything is in double:
 * the matrices are small (cols is at most a few thousand). */
#ifndef GK_GPTQ_H
#define GK_GPTQ_H

#include "quant.h"

typedef struct {
    double damp;   /* added to H's diagonal: damp x the mean diagonal (0.01) */
    int block;     /* columns per lazy-update block (128) */
    int act_order; /* quantize columns in order of decreasing H diagonal */
} gk_gptq_opts;

/* H [cols, cols] += 2 X^T X for the n rows of X [n, cols]; only the upper
 * triangle (row <= column) is updated, and gk_gptq reads only that. */
void gk_gptq_accumulate(double *h, const float *x, int n, int cols);

/* Quantize W [rows, cols] into q with the given float16 scales (from
 * gk_quant_matrix), H [cols, cols] being the accumulated Hessian. W and H are
 * overwritten (W holds the error-updated weights, H its factor). Columns whose
 * H diagonal is zero (never seen an input) are quantized as they are. Returns
 * 0, or -1 when H + damping is not positive definite. */
int gk_gptq(gk_scheme s, float *w, int rows, int cols, double *h, const uint16_t *scale,
            const gk_gptq_opts *o, int8_t *q);

#endif
