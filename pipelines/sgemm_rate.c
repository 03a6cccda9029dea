/* sgemm_rate: the ceilings that the benchmarks compare against, OpenBLAS's
 * single-precision product rates on this machine: the matrix product that
 * bench-train-cpu measures moe-train by, and, with M = 1, the matrix-vector
 * product (cblas_sgemv) that bounds one-token-at-a-time fp32 inference, the
 * llama2.c way, which bench-rollout measures moe-rollout by.
 *
 * usage: sgemm_rate THREADS M N K [REPEATS]
 * Times REPEATS products C[M,N] = A[M,K] B[K,N]^T (M = 1: y[N] = B[N,K] x)
 * after one warm-up and prints one JSON line: {"m","n","k","threads","gflops"}
 * (2MNK flops each). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: sgemm_rate THREADS M N K [REPEATS]\n");
        return 2;
    }
    int threads = atoi(argv[1]), m = atoi(argv[2]), n = atoi(argv[3]), k = atoi(argv[4]);
    int reps = argc > 5 ? atoi(argv[5]) : 10;
    if (threads < 1 || m < 1 || n < 1 || k < 1 || reps < 1) {
        fprintf(stderr, "sgemm_rate: expected positive numbers\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    if (!a || !b || !c)
        return 1;
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)n * k; i++)
        b[i] = (float)(i % 7) * 0.01f;
    double t0 = 0;
    for (int r = -1; r < reps; r++) { /* r = -1: the warm-up */
        if (r == 0)
            t0 = now();
        if (m == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1, b, k, a, 1, 0, c, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c,
                        n);
    }
    double dt = now() - t0;
    printf("{\"m\":%d,\"n\":%d,\"k\":%d,\"threads\":%d,\"gflops\":%.2f}\n", m, n, k, threads,
           2.0 * m * n * k * reps / dt / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
