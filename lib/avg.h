/* avg: the arithmetic of moe-avg, apart from its flags and files: the first
 * config key on which two checkpoints differ, and a weighted average of
 * parameter vectors accumulated in double.
 *
 * Averaging only makes sense between checkpoints of one model trained one
 * way, so any differing key refuses the pair; naming the first one (in the
 * documented order of moe-config(5)) tells the user what to look at. The sum
 * is in double, in input order, so the result does not depend on threads and
 * loses nothing to float32 rounding until the one final rounding. */
#ifndef GK_AVG_H
#define GK_AVG_H

#include "config.h"
#include "model.h"

#include <stddef.h>

/* 0 when A and B agree on every key; else 1, with KEY ("section.key") and
 * the two values as compact JSON written into the buffers (each of size N). */
int gk_config_diff(const gk_config *a, const gk_config *b, char *key, char *va, char *vb,
                   size_t n);

/* A running weighted sum of parameter vectors of one layout. */
typedef struct {
    const gk_layout *l;
    double *sum; /* [l->numel] */
    double weight;
} gk_avg;

void gk_avg_init(gk_avg *a, const gk_layout *l);
/* sum += w * params over the trained tensors (buffers are not averaged). */
void gk_avg_add(gk_avg *a, const float *params, double w);
/* out = sum / total weight over the trained tensors, rounded once to float;
 * buffer tensors of OUT are left as the caller filled them. */
void gk_avg_result(const gk_avg *a, float *out);
void gk_avg_free(gk_avg *a);

#endif
