/* sample: the sampler of sample.h.
 *
 * Filters need the ids in order of likelihood; a full sort of V ids each step
 * is O(V log V), which at V <= 65536 is small next to a model step, and is
 * done only when top-k or top-p is on. Without them a draw walks the ids in
 * id order instead (no sort): the same distribution, another mapping from u
 * to the id, still fixed by the seed. */
#include "sample.h"

#include "util.h"

#include <math.h>
#include <stdlib.h>

struct gk_sampler {
    int V;
    gk_sample_opts o;
    gk_rng rng;
    int *order;       /* [V] the ids, by decreasing logit when a filter is on */
    double *prob;     /* [V] unnormalised probabilities */
    unsigned char *seen; /* [V] the repetition penalty's marks, all 0 between calls */
};

gk_sample_opts gk_sample_defaults(void)
{
    return (gk_sample_opts){.temperature = 1, .top_k = 0, .top_p = 1, .repetition_penalty = 1};
}

int gk_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Step 1 of sample.h: each id of the context penalised once, however often
 * it occurs; a mark per id, cleared again on the way out. */
static void repetition_penalty(gk_sampler *s, float *logits, const int *context, int n)
{
    double r = s->o.repetition_penalty;
    if (r == 1)
        return;
    for (int i = 0; i < n; i++) {
        int id = context[i];
        if (id < 0 || id >= s->V || s->seen[id])
            continue;
        s->seen[id] = 1;
        logits[id] = logits[id] > 0 ? (float)(logits[id] / r) : (float)(logits[id] * r);
    }
    for (int i = 0; i < n; i++)
        if (context[i] >= 0 && context[i] < s->V)
            s->seen[context[i]] = 0;
}

gk_sampler *gk_sampler_new(int V, const gk_sample_opts *o, uint64_t seed)
{
    gk_sampler *s = gk_calloc(1, sizeof *s);
    s->V = V, s->o = *o, s->rng.s = seed;
    s->order = gk_malloc((size_t)V * sizeof *s->order);
    s->prob = gk_malloc((size_t)V * sizeof *s->prob);
    s->seen = gk_calloc((size_t)V, 1);
    return s;
}

void gk_sampler_free(gk_sampler *s)
{
    if (!s)
        return;
    free(s->order);
    free(s->prob);
    free(s->seen);
    free(s);
}

/* qsort has no context argument; the sampler sorts one array at a time. */
static _Thread_local const float *sort_key;

/* By decreasing logit, ties to the lower id: a total order, so the sort's
 * result does not depend on qsort's algorithm. */
static int order_cmp(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    float x = sort_key[i], y = sort_key[j];
    if (x != y)
        return x > y ? -1 : 1;
    return (i > j) - (i < j);
}

int gk_sample(gk_sampler *s, float *logits, const int *context, int n)
{
    const gk_sample_opts *o = &s->o;
    int V = s->V;
    repetition_penalty(s, logits, context, n);
    if (o->temperature == 0)
        return gk_argmax(logits, V);
    int filtered = (o->top_k > 0 && o->top_k < V) || o->top_p < 1;
    int kept = V;
    for (int i = 0; i < V; i++)
        s->order[i] = i;
    if (filtered) {
        sort_key = logits;
        qsort(s->order, (size_t)V, sizeof *s->order, order_cmp);
        if (o->top_k > 0 && o->top_k < kept)
            kept = o->top_k;
    }
    double mx = logits[gk_argmax(logits, V)], total = 0;
    for (int r = 0; r < kept; r++) {
        int id = s->order[r];
        s->prob[r] = exp((logits[id] - mx) / o->temperature);
        total += s->prob[r];
    }
    if (o->top_p < 1) {
        /* the fewest leading ids whose share of the top-k mass reaches top_p */
        double need = o->top_p * total, cum = 0;
        int r = 0;
        while (r < kept - 1 && (cum += s->prob[r]) < need)
            r++;
        kept = r + 1;
        total = 0;
        for (r = 0; r < kept; r++)
            total += s->prob[r];
    }
    double u = gk_rng_uniform(&s->rng) * total, cum = 0;
    for (int r = 0; r < kept - 1; r++)
        if ((cum += s->prob[r]) > u)
            return s->order[r];
    return s->order[kept - 1];
}
