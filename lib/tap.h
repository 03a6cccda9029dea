/* tap: the few Test Anything Protocol helpers the C unit tests use, so prove
 * can run them beside the shell tests. Header-only; tests only. */
#ifndef GK_TAP_H
#define GK_TAP_H

#include <stdio.h>

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

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed != 0;
}

#endif
