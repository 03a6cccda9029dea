/* tap: the few Test Anything Protocol helpers the C unit tests use, so prove
 * can run them beside the shell tests. Header-only; tests only. */
#ifndef GK_TAP_H
#define GK_TAP_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                                   \
    do {                                                                                \
        int ok_ = (cond) != 0;                                                          \
        printf("%sok %d - ", ok_ ? "" : "not ", ++tap_n);                               \
        printf(__VA_ARGS__);                                                            \
        printf("\n");                                                                   \
        if (!ok_) {                                                                     \
            tap_failed++;                                                               \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);             \
        }                                                                               \
    } while (0)

/* Test randomness, the same on every machine: xorshift64* for uniforms in
 * [0, 1), Box-Muller for normals. Seed with tap_seed() to pin a test's inputs. */
static uint64_t tap_rng = 0x9E3779B97F4A7C15ull;

static inline void tap_seed(uint64_t seed) { tap_rng = seed; }

static inline double tap_uniform(void)
{
    tap_rng ^= tap_rng >> 12, tap_rng ^= tap_rng << 25, tap_rng ^= tap_rng >> 27;
    return (double)((tap_rng * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

static inline double tap_normal(void)
{
    double u = tap_uniform() + 0x1.0p-54;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * tap_uniform());
}

/* Remove a test's scratch directory, but only when every test passed: a
 * failure leaves its evidence behind. */
static inline void tap_remove_dir(const char *dir)
{
    if (tap_failed)
        return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
}

/* Run FN(ARG) in a forked child, for code that reports through gk_die and
 * exits. Its stderr lands in ERR (N bytes, NUL-terminated, one trailing
 * newline removed). Returns its exit status, or -1 when it did not exit. */
static inline int tap_child(void (*fn)(const char *), const char *arg, char *err, size_t n)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    fflush(stdout); /* else the child would print our pending TAP lines again */
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        close(fd[1]);
        fn(arg);
        _exit(0); /* it did not die */
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < n && (r = read(fd[0], err + len, n - 1 - len)) > 0)
        len += (size_t)r;
    err[len] = 0;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    if (len && err[len - 1] == '\n')
        err[--len] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed != 0;
}

#endif
