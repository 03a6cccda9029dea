/* ops: the CPU layer functions of ops.h, instantiated twice from one body
 * (lib/ops_impl.h): in float for training, in double for the finite-difference
 * checks, with the matrix products on OpenBLAS's sgemm and dgemm. Writing the
 * layers once keeps the checked code and the trained code the same code. */
#include "ops.h"
#include "util.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#define REAL float
#define OP(name) name##_f32
#define GEMM cblas_sgemm
#include "ops_impl.h"
#undef REAL
#undef OP
#undef GEMM

#define REAL double
#define OP(name) name##_f64
#define GEMM cblas_dgemm
#include "ops_impl.h"
#undef REAL
#undef OP
#undef GEMM
