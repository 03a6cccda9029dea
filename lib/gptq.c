/* gptq: GPTQ for one matrix (see gptq.h), following the algorithm of the
 * paper: damp H, optionally permute the columns by decreasing diagonal, take
 * the upper Cholesky factor U of H^-1, then quantize column by column,
 * feeding each column's scaled error forward within a block of columns and
 * applying the block's accumulated error to the later columns with one
 * matrix product. The factorizations are LAPACK's (OpenBLAS bundles it). */
#include "gptq.h"
#include "util.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK, column-major: Cholesky factor, and inverse from that factor. */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);

void gk_gptq_accumulate(double *h, const float *x, int n, int cols)
{
    /* In chunks of rows, widened to double, so the sums keep their precision
     * over many calibration tokens. */
    enum { CHUNK = 256 };
    double *xd = gk_malloc((size_t)CHUNK * cols * sizeof *xd);
    for (int r0 = 0; r0 < n; r0 += CHUNK) {
        int m = n - r0 < CHUNK ? n - r0 : CHUNK;
        for (size_t k = 0; k < (size_t)m * cols; k++)
            xd[k] = x[(size_t)r0 * cols + k];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, cols, m, 2.0, xd, cols, 1.0, h,
                    cols);
    }
    free(xd);
}

/* Sort helper for the activation order: columns by decreasing diagonal,
 * ties by index, so the order is deterministic. */
static const double *sort_diag;
static int by_diag(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    double di = sort_diag[i], dj = sort_diag[j];
    return di > dj ? -1 : di < dj ? 1 : (i > j) - (i < j);
}

int gk_gptq(gk_scheme s, float *w, int rows, int cols, double *h, const uint16_t *scale,
            const gk_gptq_opts *o, int8_t *q)
{
    size_t n = (size_t)cols;
    /* The full symmetric H from its upper triangle; dead columns (no input
     * ever reached them) get a unit diagonal, so they are rounded as they are
     * and pass no error on. */
    double *diag = gk_malloc(n * sizeof *diag), mean = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++)
            h[i * n + j] = h[j * n + i];
        if (h[i * n + i] <= 0)
            h[i * n + i] = 1;
        diag[i] = h[i * n + i];
        mean += diag[i] / (double)n;
    }
    int *perm = gk_malloc(n * sizeof *perm);
    for (int i = 0; i < cols; i++)
        perm[i] = i;
    if (o->act_order) {
        sort_diag = diag;
        qsort(perm, n, sizeof *perm, by_diag);
    }
    /* Permuted, damped H in a (the columns of W follow the same order). */
    double *a = gk_malloc(n * n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            a[i * n + j] = h[(size_t)perm[i] * n + perm[j]] + (i == j ? o->damp * mean : 0);
    int info, ni = cols;
    /* H is symmetric, so row- and column-major agree; "L" in column-major is
     * the upper triangle in our row-major indexing. */
    dpotrf_("L", &ni, a, &ni, &info);
    if (info == 0)
        dpotri_("L", &ni, a, &ni, &info);
    if (info == 0) {
        for (size_t i = 0; i < n; i++) /* mirror H^-1 from its upper triangle */
            for (size_t j = 0; j < i; j++)
                a[i * n + j] = a[j * n + i];
        /* H^-1 = L L^T with L lower in column-major, so row-major a[i][j],
         * j >= i, holds U = L^T with H^-1 = U^T U. */
        dpotrf_("L", &ni, a, &ni, &info);
    }
    if (info != 0) {
        free(diag);
        free(perm);
        free(a);
        return -1;
    }

    double *wd = gk_malloc((size_t)rows * n * sizeof *wd);
    for (int r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++)
            wd[r * n + j] = w[(size_t)r * n + perm[j]];
    int bs = o->block > 0 ? o->block : cols;
    double *err = gk_malloc((size_t)rows * bs * sizeof *err);
    for (int i1 = 0; i1 < cols; i1 += bs) {
        int i2 = i1 + bs < cols ? i1 + bs : cols, nb = i2 - i1;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            double sc = gk_f16_to_float(scale[r]);
            double *wr = wd + (size_t)r * n;
            for (int i = i1; i < i2; i++) {
                int qi = sc > 0 ? gk_quant_value(s, (float)wr[i], (float)sc)
                                : s == GK_Q_BINARY ? 1 : 0;
                q[(size_t)r * n + perm[i]] = (int8_t)qi;
                double e = (wr[i] - qi * sc) / a[(size_t)i * n + i];
                err[(size_t)r * nb + (i - i1)] = e;
                const double *u = a + (size_t)i * n;
                for (int j = i + 1; j < i2; j++)
                    wr[j] -= e * u[j];
            }
        }
        if (i2 < cols) /* W[:, i2:] -= Err U[i1:i2, i2:] */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols - i2, nb, -1.0,
                        err, nb, a + (size_t)i1 * n + i2, (int)n, 1.0, wd + i2, (int)n);
    }
    for (int r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++)
            w[(size_t)r * n + perm[j]] = (float)wd[r * n + j];
    free(err);
    free(wd);
    free(diag);
    free(perm);
    free(a);
    return 0;
}
