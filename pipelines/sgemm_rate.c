/* sgemm_rate: the ceiling that bench-train-cpu compares moe-train against,
 * OpenBLAS's single-precision matrix product rate on this machine.
 *
 * usage: sgemm_rate THREADS M N K [REPEATS]
 * Times REPEATS products C[M,N] = A[M,K] B[K,N]^T after one warm-up and
 * prints one JSON line: {"m","n","k","threads","gflops"} (2MNK flops each). */
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    double t0 = now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    double dt = now() - t0;
    printf("{\"m\":%d,\"n\":%d,\"k\":%d,\"threads\":%d,\"gflops\":%.2f}\n", m, n, k, threads,
           2.0 * m * n * k * reps / dt / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
