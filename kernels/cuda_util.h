/* cuda_util: the CUDA backend's error checking, device report and device
 * memory arena. Header-only, for the .cu files of kernels/.
 *
 * Errors: every CUDA runtime and cuBLAS call goes through GK_CU or GK_CUBLAS.
 * A failure is fatal and one line on stderr, in the toolkit's style (lib/util.h):
 *   PROG: CALL failed at FILE:LINE: REASON
 * where CALL is the call's source text, so the message names what failed
 * without a debugger. Kernel launches return nothing: GK_CU(cudaGetLastError())
 * after them, or a launcher that returns cudaGetLastError() wrapped in GK_CU.
 * Errors are not recoverable here (a failed allocation or a sticky launch
 * failure leaves the context unusable), so exit(1) is the whole handling.
 *
 * Memory: the issue asks for no allocation inside the step loop and one memory
 * plan sized at start. gk_cu_arena is that plan: one cudaMalloc of the whole
 * size (reserve), then bump-pointer carving (alloc), nothing freed singly.
 * Running out is a bug in the plan, so it dies naming the request and the
 * capacity rather than falling back to cudaMalloc. The peak is what the log
 * reports, and what tells whether the reservation can shrink. */
#ifndef GK_CUDA_UTIL_H
#define GK_CUDA_UTIL_H

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <errno.h> /* program_invocation_short_name (glibc) */
#include <stdio.h>
#include <stdlib.h>

/* Self-contained, so that a kernel file needs nothing of lib/ to report an
 * error; the name glibc keeps is the one the tools print (gk_prog()). */
static inline void gk_cu_fail(const char *call, const char *file, int line, const char *why)
{
    fprintf(stderr, "%s: %s failed at %s:%d: %s\n", program_invocation_short_name, call, file,
            line, why);
    exit(1);
}

static inline void gk_cu_check(cudaError_t e, const char *call, const char *file, int line)
{
    if (e != cudaSuccess)
        gk_cu_fail(call, file, line, cudaGetErrorString(e));
}

static inline void gk_cublas_check(cublasStatus_t s, const char *call, const char *file,
                                   int line)
{
    if (s != CUBLAS_STATUS_SUCCESS)
        gk_cu_fail(call, file, line, cublasLtGetStatusString(s));
}

#define GK_CU(call) gk_cu_check((call), #call, __FILE__, __LINE__)
#define GK_CUBLAS(call) gk_cublas_check((call), #call, __FILE__, __LINE__)

/* Number of usable CUDA devices; 0 when there is none or no driver, with the
 * runtime's reason in *why (not an error: a machine without a GPU is normal,
 * and the caller says so clearly). */
static inline int gk_cu_device_count(const char **why)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    *why = e == cudaSuccess ? (n ? "" : "no device") : cudaGetErrorString(e);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear it: it is not sticky, and not ours to keep */
        return 0;
    }
    return n;
}

/* One line on F describing the current device, after PREFIX ("# " in TAP):
 * name, compute capability, SMs, memory. */
static inline void gk_cu_device_print(FILE *f, const char *prefix)
{
    int dev;
    cudaDeviceProp p;
    GK_CU(cudaGetDevice(&dev));
    GK_CU(cudaGetDeviceProperties(&p, dev));
    fprintf(f, "%sdevice %d: %s, sm_%d%d, %d SMs, %.1f GiB\n", prefix, dev, p.name, p.major,
            p.minor, p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024 * 1024));
}

/* Blocks of THREADS for a grid-stride loop (GK_GRID_STRIDE) over N items:
 * one item a thread, at least one block, at most 2^20 (the count stays an
 * int; the loop covers the rest). */
static inline unsigned gk_cu_grid(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < (1u << 20) ? (b ? b : 1) : (1u << 20));
}

#define GK_GRID_STRIDE(i, n)                                                           \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);           \
         i += (size_t)gridDim.x * blockDim.x)

/* 256 bytes: what cudaMalloc guarantees, and more than the 16 that the
 * vectorized loads and cuBLASLt's tensor-core kernels need. */
#define GK_CU_ALIGN 256

typedef struct {
    char *base;  /* the one cudaMalloc; NULL before reserve */
    size_t cap;  /* bytes reserved */
    size_t used; /* bytes carved since reserve or the last reset */
    size_t peak; /* the most ever used: the memory plan's true size */
} gk_cu_arena;

/* Reserve BYTES of device memory in one allocation. */
static inline void gk_cu_arena_reserve(gk_cu_arena *a, size_t bytes)
{
    a->cap = bytes, a->used = a->peak = 0;
    GK_CU(cudaMalloc((void **)&a->base, bytes));
}

/* Carve BYTES, aligned to GK_CU_ALIGN. The memory is not cleared. */
static inline void *gk_cu_arena_alloc(gk_cu_arena *a, size_t bytes)
{
    size_t at = (a->used + GK_CU_ALIGN - 1) / GK_CU_ALIGN * GK_CU_ALIGN;
    if (at > a->cap || bytes > a->cap - at) {
        char why[160];
        snprintf(why, sizeof why, "needs %zu bytes at offset %zu of a %zu-byte reservation",
                 bytes, at, a->cap);
        gk_cu_fail("gk_cu_arena_alloc", __FILE__, __LINE__, why);
    }
    a->used = at + bytes;
    if (a->used > a->peak)
        a->peak = a->used;
    return a->base + at;
}

/* Forget every allocation (the peak stays). The caller makes sure no queued
 * work still uses them (a stream synchronize, or the next work on the same
 * stream). */
static inline void gk_cu_arena_reset(gk_cu_arena *a) { a->used = 0; }

static inline size_t gk_cu_arena_peak(const gk_cu_arena *a) { return a->peak; }

/* A memory plan is carved twice by the same code: against a counting carver
 * (arena NULL), which only adds up the aligned sizes, to reserve the arena
 * once; then against the reserved arena. So the plan and the layout cannot
 * drift apart. A buffer of 0 bytes (one a path does not keep) is NULL in
 * both passes and takes no space, so it can neither be written into its
 * neighbour by mistake nor pass as a kernel's optional output. */
typedef struct {
    gk_cu_arena *arena; /* NULL: counting */
    size_t bytes;
} gk_cu_carver;

static inline void *gk_cu_carve(gk_cu_carver *c, size_t bytes)
{
    if (!bytes)
        return NULL;
    c->bytes = (c->bytes + GK_CU_ALIGN - 1) / GK_CU_ALIGN * GK_CU_ALIGN + bytes;
    return c->arena ? gk_cu_arena_alloc(c->arena, bytes) : NULL;
}

/* Give the reservation back. */
static inline void gk_cu_arena_release(gk_cu_arena *a)
{
    GK_CU(cudaFree(a->base));
    a->base = NULL, a->cap = a->used = 0;
}

#endif
