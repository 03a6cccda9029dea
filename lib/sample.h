/* sample: choosing the next token from a model's logits, as generation
 * tools do it: greedy, temperature, top-k, top-p (nucleus) and a CTRL-style
 * repetition penalty, with a seeded generator so a run is repeatable.
 *
 * The steps, in this order (the order of Hugging Face's and llama.cpp's
 * samplers):
 *   1. repetition penalty R (Keskar et al. 2019, CTRL): for every id already
 *      in the context, a positive logit is divided by R and a negative one
 *      multiplied by R (R > 1 makes repeats less likely); R = 1 is off;
 *   2. temperature 0: greedy, the argmax (ties to the lower id); no random
 *      number is drawn;
 *   3. otherwise p_i proportional to exp((l_i - max l) / temperature) (in
 *      double);
 *   4. top-k K > 0 keeps the K most likely ids;
 *   5. top-p P < 1 keeps the fewest most likely ids whose probabilities sum
 *      to at least P (at least one id);
 *   6. one uniform u in [0,1) picks from what is kept, walking the kept ids
 *      from the most likely down (ties of probability: the lower id first).
 * "Most likely" is by logit, ties to the lower id, so top-k 1 and any top-p
 * small enough to keep one id are the greedy choice, whatever u is.
 *
 * The generator is splitmix64 (Steele, Lea and Flood 2014): a 64-bit state
 * advanced by a constant, mixed by two multiply-xorshifts; u is the top 53
 * bits times 2^-53. Same seed, same logits: same tokens, on every machine. */
#ifndef GK_SAMPLE_H
#define GK_SAMPLE_H

#include <stdint.h>

typedef struct {
    double temperature; /* 0: greedy; > 0 divides the logits */
    int top_k;          /* 0: off */
    double top_p;       /* 1: off; in (0, 1] */
    double repetition_penalty; /* 1: off; > 0 */
} gk_sample_opts;

/* The defaults: temperature 1, every filter off (plain sampling). */
gk_sample_opts gk_sample_defaults(void);

/* splitmix64 */
typedef struct {
    uint64_t s;
} gk_rng;

static inline uint64_t gk_rng_next(gk_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A uniform in [0, 1). */
static inline double gk_rng_uniform(gk_rng *r)
{
    return (double)(gk_rng_next(r) >> 11) * 0x1.0p-53;
}

/* The index of the largest of x [n] (n >= 1), the lowest index on ties. */
int gk_argmax(const float *x, int n);

/* A sampler over a vocabulary of V ids with options O and a generator seeded
 * with SEED; it owns its scratch, so a step allocates nothing. */
typedef struct gk_sampler gk_sampler;
gk_sampler *gk_sampler_new(int V, const gk_sample_opts *o, uint64_t seed);
void gk_sampler_free(gk_sampler *s);

/* The next token from LOGITS [V] (modified in place by the penalty), given
 * the ids of the context so far, CONTEXT [n] (prompt and generated tokens). */
int gk_sample(gk_sampler *s, float *logits, const int *context, int n);

#endif
