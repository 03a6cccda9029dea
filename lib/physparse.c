/* physparse: phys-gen's frame grammar read back strictly, and the position
 * error of moe-rollout --physics (physparse.h says why strictly).
 *
 * Numbers are read by the grammar's pattern -?[0-9]+\.[0-9]+ checked byte by
 * byte before strtod sees them, so strtod's own leniency (leading spaces,
 * "+", exponents, "inf") never admits text that phys-gen would not write. */
#include "physparse.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gk_phys_header(const char *text, size_t len, size_t *header_len)
{
    int nobj = 0;
    for (size_t p = 0; p < len;) {
        const char *nl = memchr(text + p, '\n', len - p);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        if (end - p >= 6 && !memcmp(text + p, "Frame ", 6)) {
            *header_len = p;
            return nobj;
        }
        if (end - p >= 2 && text[p] == 'o' && text[p + 1] >= '0' && text[p + 1] <= '9')
            nobj++;
        p = end;
    }
    return -1;
}

/* A number of the grammar at T [LEN] ending at the byte STOP: its length
 * (its value in *V), or 0. Bounded so strtod's buffer copy stays small. */
static size_t number(const char *t, size_t len, char stop, double *v)
{
    size_t i = 0, d = 0, f = 0;
    if (i < len && t[i] == '-')
        i++;
    while (i < len && t[i] >= '0' && t[i] <= '9')
        i++, d++;
    if (!d || i >= len || t[i] != '.')
        return 0;
    i++;
    while (i < len && t[i] >= '0' && t[i] <= '9')
        i++, f++;
    if (!f || i >= len || t[i] != stop || i > 40)
        return 0;
    char b[48];
    memcpy(b, t, i);
    b[i] = 0;
    *v = strtod(b, NULL);
    return i;
}

/* "X,Y" then STOP at T: its length (the pair in XY), or 0. */
static size_t point(const char *t, size_t len, char stop, double xy[2])
{
    size_t a = number(t, len, ',', &xy[0]);
    if (!a)
        return 0;
    size_t b = number(t + a + 1, len - a - 1, stop, &xy[1]);
    return b ? a + 1 + b : 0;
}

/* The literal S at T [LEN]: its length, or 0. */
static size_t lit(const char *t, size_t len, const char *s)
{
    size_t n = strlen(s);
    return len >= n && !memcmp(t, s, n) ? n : 0;
}

size_t gk_phys_parse_frame(const char *text, size_t len, int n, int nobj, double *pos,
                           double *vel, int *state)
{
    static const char *const words[] = {"moving\n", "settling\n", "resting\n"};
    char head[32];
    int hl = snprintf(head, sizeof head, "Frame %d: ", n);
    size_t p = lit(text, len, head), k;
    if (!p || hl <= 0)
        return 0;
    int w = 0;
    while (w < 3 && !(k = lit(text + p, len - p, words[w])))
        w++;
    if (w == 3)
        return 0;
    p += k;
    for (int i = 0; i < nobj; i++) {
        char tag[16];
        double xy[2], v[2];
        snprintf(tag, sizeof tag, "o%d ", i);
        if (!(k = lit(text + p, len - p, tag)))
            return 0;
        p += k;
        if (!(k = point(text + p, len - p, ' ', xy)))
            return 0;
        p += k + 1;
        if (!(k = point(text + p, len - p, '\n', v)))
            return 0;
        p += k + 1;
        if (pos)
            pos[2 * i] = xy[0], pos[2 * i + 1] = xy[1];
        if (vel)
            vel[2 * i] = v[0], vel[2 * i + 1] = v[1];
    }
    if (state)
        *state = w;
    return p;
}

double gk_phys_err_pct(const double *pred, const double *truth, int nobj, const double world[2])
{
    double sum = 0;
    for (int i = 0; i < nobj; i++)
        sum += hypot(pred[2 * i] - truth[2 * i], pred[2 * i + 1] - truth[2 * i + 1]);
    return sum / nobj / hypot(world[0], world[1]) * 100;
}

int gk_phys_score(const char *gen, size_t len, int first, int nframes, int nobj,
                  const double *truth, const double world[2], double *err)
{
    double *pos = gk_malloc((size_t)(nobj > 0 ? nobj : 1) * 2 * sizeof *pos);
    int good = 0;
    size_t p = 0, k = 1;
    for (int j = 0; j < nframes; j++) {
        /* once a frame is malformed, k stays 0: so is every later one */
        if (k)
            k = gk_phys_parse_frame(gen + p, len - p, first + j, nobj, pos, NULL, NULL);
        p += k;
        err[j] = k ? gk_phys_err_pct(pos, truth + (size_t)j * nobj * 2, nobj, world) : NAN;
        good += k != 0;
    }
    free(pos);
    return good;
}
