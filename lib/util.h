/* util: the one error-reporting style, checked allocation, and small helpers
 * every tool shares.
 *
 * Errors are fatal and one line: "PROG: WHERE: expected X, found Y", where WHERE
 * names a file and an offset or a field. gk_die() first removes every temporary
 * output still open (see io.h), so a failing tool never leaves a half-written
 * file behind, then exits 1. gk_usage() is for bad flags and exits 2. */
#ifndef GK_UTIL_H
#define GK_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* _Noreturn is C11's; C++ (nvcc's host compiler, for kernels/) has the
 * noreturn attribute alone, which both get below. */
#ifdef __cplusplus
#define GK_NORETURN
#else
#define GK_NORETURN _Noreturn
#endif

/* Name printed before every message; set once from argv[0] by each main. */
void gk_set_prog(const char *argv0);
const char *gk_prog(void);

/* Print "PROG: MESSAGE" on stderr, remove open temporaries, exit 1. */
GK_NORETURN void gk_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Print "PROG: MESSAGE" and a hint to --help on stderr, exit 2. */
GK_NORETURN void gk_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* For the default case of a getopt_long loop run with opterr = 0 and an
 * optstring starting with ':': the option just refused, as one gk_usage line
 * of ours instead of getopt's and ours. CH is what getopt_long returned: ':'
 * for an option missing its value, '?' for one that is unknown, ambiguous or
 * given a value it does not take. */
GK_NORETURN void gk_bad_option(int ch, char *const *argv) __attribute__((noreturn));
/* Print "PROG: MESSAGE" on stderr and go on (for warnings). */
void gk_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Surviving gk_die, for the fuzzing harnesses (testdata/fuzz/). A tool ends at
 * its first error and frees nothing first; a harness feeds millions of inputs
 * to a reader in one process, so it sets a hook. With one set, gk_die and
 * gk_usage print and remove temporaries as always, then call every cleanup
 * still pushed (below), innermost first, and then HOOK(exit status) in place
 * of the exit; HOOK must not return (the harnesses longjmp back to their
 * loop). NULL, the default, is the plain exit, and the cleanups are never
 * called: the exit frees everything anyway. */
typedef void (*gk_die_hook)(int status);
void gk_set_die_hook(gk_die_hook hook);

/* A reader that holds memory or a file across calls that may die pushes
 * FREE(P) before them and pops it (by P, innermost first) once it returns
 * normally, so that a die under the hook leaves nothing behind. Each thread
 * has its own stack, at most 16 deep. */
void gk_cleanup_push(void (*free_fn)(void *), void *p);
void gk_cleanup_pop(const void *p);

/* Allocation that dies with a message instead of returning NULL. */
void *gk_malloc(size_t n);
void *gk_calloc(size_t count, size_t size);
void *gk_realloc(void *p, size_t n);
char *gk_strdup(const char *s);

/* Parse a whole decimal number in [lo, hi] for flag FLAG, or die with exit 2. */
long long gk_parse_int(const char *flag, const char *s, long long lo, long long hi);
double gk_parse_double(const char *flag, const char *s, double lo, double hi);
/* --device: 1 for "cuda", 0 for "cpu", else die with exit 2. */
int gk_parse_device(const char *s);

/* Little-endian loads and stores, independent of the host's byte order. */
static inline uint32_t gk_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t gk_get64(const unsigned char *p)
{
    return (uint64_t)gk_get32(p) | (uint64_t)gk_get32(p + 4) << 32;
}
static inline void gk_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static inline void gk_put64(unsigned char *p, uint64_t v)
{
    gk_put32(p, (uint32_t)v);
    gk_put32(p + 4, (uint32_t)(v >> 32));
}

/* Seconds on a monotonic clock. */
double gk_now(void);
/* Peak resident set size of this process, in bytes (0 when unknown). */
uint64_t gk_peak_rss(void);
/* Number of online CPUs, at least 1. */
int gk_ncpu(void);

#endif
