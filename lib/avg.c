/* avg: config comparison and the double-precision weighted sum of moe-avg
 * (contract in avg.h). */
#include "avg.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

int gk_config_diff(const gk_config *a, const gk_config *b, char *key, char *va, char *vb,
                   size_t n)
{
    /* Through the printed form, so every key is compared exactly as the
     * checkpoint stores it, in the documented order, with no second list of
     * keys to keep in step with config.c. */
    jv ja = gk_config_to_jv(a), jb = gk_config_to_jv(b);
    int found = 0;
    jv_object_foreach(ja, sec, secv) {
        jv other = jv_object_get(jv_copy(jb), jv_copy(sec));
        jv_object_foreach(secv, k, x) {
            jv y = jv_object_get(jv_copy(other), jv_copy(k));
            if (!found && !jv_equal(jv_copy(x), jv_copy(y))) {
                found = 1;
                jv dx = jv_dump_string(jv_copy(x), 0), dy = jv_dump_string(y, 0);
                snprintf(key, n, "%s.%s", jv_string_value(sec), jv_string_value(k));
                snprintf(va, n, "%s", jv_string_value(dx));
                snprintf(vb, n, "%s", jv_string_value(dy));
                jv_free(dx);
                jv_free(dy);
            } else {
                jv_free(y);
            }
            jv_free(k);
            jv_free(x);
        }
        jv_free(secv);
        jv_free(other);
        jv_free(sec);
    }
    jv_free(ja);
    jv_free(jb);
    return found;
}

void gk_avg_init(gk_avg *a, const gk_layout *l)
{
    a->l = l;
    a->sum = gk_calloc(l->numel, sizeof *a->sum);
    a->weight = 0;
}

void gk_avg_add(gk_avg *a, const float *params, double w)
{
    for (int i = 0; i < a->l->n_params; i++) {
        const gk_param *p = &a->l->params[i];
        if (p->group == GK_GROUP_BUFFER)
            continue;
        for (size_t j = p->offset; j < p->offset + p->numel; j++)
            a->sum[j] += w * (double)params[j];
    }
    a->weight += w;
}

void gk_avg_result(const gk_avg *a, float *out)
{
    for (int i = 0; i < a->l->n_params; i++) {
        const gk_param *p = &a->l->params[i];
        if (p->group == GK_GROUP_BUFFER)
            continue;
        for (size_t j = p->offset; j < p->offset + p->numel; j++)
            out[j] = (float)(a->sum[j] / a->weight);
    }
}

void gk_avg_free(gk_avg *a)
{
    free(a->sum);
    a->sum = NULL;
}
