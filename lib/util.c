/* util: fatal errors in the project's one style, checked allocation, flag
 * parsing, clocks and resource readings. See util.h for the contract. */
#include "util.h"
#include "io.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "golfkit";

void gk_set_prog(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    prog = slash ? slash + 1 : argv0;
}

const char *gk_prog(void) { return prog; }

static void vsay(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static gk_die_hook die_hook;

#define MAX_CLEANUPS 16
static _Thread_local struct {
    void (*fn)(void *);
    void *p;
} cleanups[MAX_CLEANUPS];
static _Thread_local int ncleanups;

void gk_set_die_hook(gk_die_hook hook) { die_hook = hook; }

void gk_cleanup_push(void (*free_fn)(void *), void *p)
{
    if (ncleanups == MAX_CLEANUPS)
        gk_die("gk_cleanup_push: expected at most %d cleanups pushed, found one more "
               "(internal error)", MAX_CLEANUPS);
    cleanups[ncleanups].fn = free_fn;
    cleanups[ncleanups++].p = p;
}

void gk_cleanup_pop(const void *p)
{
    if (ncleanups == 0 || cleanups[ncleanups - 1].p != p)
        gk_die("gk_cleanup_pop: expected the innermost cleanup, found %s (internal error)",
               ncleanups ? "another one" : "none");
    ncleanups--;
}

/* A fatal exit flushes stdio and ends at once: it frees nothing on purpose,
 * and _exit keeps the sanitizers' leak check (an exit handler) for the normal
 * exits, where a leak is a bug, rather than reporting what a dying tool still
 * held. Under a die hook (a fuzzing harness) the process goes on, so what the
 * readers held is freed first. */
static _Noreturn void end(int code)
{
    gk_out_abort_all();
    fflush(NULL);
    if (die_hook) {
        while (ncleanups > 0) {
            ncleanups--;
            cleanups[ncleanups].fn(cleanups[ncleanups].p);
        }
        die_hook(code);
    }
    _exit(code);
}

void gk_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    end(1);
}

void gk_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information.\n", prog);
    end(2);
}

void gk_bad_option(int ch, char *const *argv)
{
    /* An unknown letter before the end of a cluster (-zq) leaves optind on
     * the cluster; every other refusal has moved it past the refused word. */
    const char *cur = argv[optind];
    if (ch == '?' && optopt > 0 && optopt < 128 && cur && cur[0] == '-' && cur[1] != '-' &&
        strchr(cur + 1, optopt))
        gk_usage("expected an option of --help, found '-%c' in '%s'", optopt, cur);
    const char *arg = argv[optind - 1];
    if (ch == ':')
        gk_usage("%s: expected a value after it, found none", arg);
    gk_usage("expected an option of --help, found '%s'", arg);
}

void gk_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

void *gk_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        gk_die("out of memory: expected %zu more bytes, found none", n);
    return p;
}

void *gk_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        gk_die("out of memory: expected %zu x %zu more bytes, found none", count, size);
    return p;
}

void *gk_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        gk_die("out of memory: expected %zu bytes, found none", n);
    return q;
}

char *gk_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(gk_malloc(n), s, n);
}

long long gk_parse_int(const char *flag, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        gk_usage("%s: expected an integer in %lld..%lld, found '%s'", flag, lo, hi, s);
    return v;
}

double gk_parse_double(const char *flag, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        gk_usage("%s: expected a number in %g..%g, found '%s'", flag, lo, hi, s);
    return v;
}

int gk_parse_device(const char *s)
{
    if (strcmp(s, "cpu") != 0 && strcmp(s, "cuda") != 0)
        gk_usage("--device: expected cpu or cuda, found '%s'", s);
    return strcmp(s, "cuda") == 0;
}

double gk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t gk_peak_rss(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; /* Linux reports KiB */
}

int gk_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
