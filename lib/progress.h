/* progress: a one-line meter on stderr with rate and ETA.
 *
 * It redraws at most once a second. It is shown when stderr is a terminal, or
 * always after gk_progress_force(1) (the tools' --progress), and never after
 * gk_progress_force(-1) (the tools' -q). When stderr is not a terminal the meter
 * prints whole lines instead of redrawing one, so logs stay readable. */
#ifndef GK_PROGRESS_H
#define GK_PROGRESS_H

#include <stdint.h>

typedef struct {
    const char *label, *unit;
    uint64_t total;  /* 0 when unknown: no ETA then */
    double start, last;
    int on, tty;
} gk_progress;

/* -1: never show; 0: show when stderr is a terminal; 1: always show. */
void gk_progress_force(int mode);
void gk_progress_start(gk_progress *p, const char *label, const char *unit, uint64_t total);
void gk_progress_update(gk_progress *p, uint64_t done);
void gk_progress_end(gk_progress *p, uint64_t done);

#endif
