/* progress: rate and ETA on stderr, throttled to one update a second. */
#include "progress.h"
#include "util.h"

#include <stdio.h>
#include <unistd.h>

static int forced;

void gk_progress_force(int mode) { forced = mode; }

void gk_progress_start(gk_progress *p, const char *label, const char *unit, uint64_t total)
{
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->start = p->last = gk_now();
    p->tty = isatty(2);
    p->on = forced > 0 || (forced == 0 && p->tty);
}

static void scaled(double v, char *buf, size_t n)
{
    const char *suf = " kMGT";
    int k = 0;
    while (v >= 1000 && k < 4) {
        v /= 1000;
        k++;
    }
    if (k)
        snprintf(buf, n, "%.1f%c", v, suf[k]);
    else
        snprintf(buf, n, "%.0f", v);
}

static void draw(const gk_progress *p, uint64_t done, double now, int final)
{
    double dt = now - p->start;
    double rate = dt > 0 ? (double)done / dt : 0;
    char d[16], r[16];
    scaled((double)done, d, sizeof d);
    scaled(rate, r, sizeof r);
    fprintf(stderr, "%s%s: %s %s, %s %s/s", p->tty ? "\r" : "", p->label, d, p->unit, r, p->unit);
    if (p->total && !final) {
        double pct = 100.0 * (double)done / (double)p->total;
        double eta = rate > 0 ? (double)(p->total - (done < p->total ? done : p->total)) / rate : 0;
        fprintf(stderr, ", %.1f%%, ETA %.0fs", pct, eta);
    }
    if (final)
        fprintf(stderr, ", %.1fs", dt);
    if (p->tty) /* clear what a longer previous line left; keep the last line */
        fputs(final ? "\033[K\n" : "\033[K", stderr);
    else
        fputc('\n', stderr);
    fflush(stderr);
}

void gk_progress_update(gk_progress *p, uint64_t done)
{
    if (!p->on)
        return;
    double now = gk_now();
    if (now - p->last < 1.0)
        return;
    p->last = now;
    draw(p, done, now, 0);
}

void gk_progress_end(gk_progress *p, uint64_t done)
{
    if (p->on)
        draw(p, done, gk_now(), 1);
}
