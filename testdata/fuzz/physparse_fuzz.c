/* physparse_fuzz: the strict reader of phys-gen's frame text (lib/physparse),
 * which moe-rollout --physics runs over the scene text it is given and over
 * whatever a model generates. The input is taken as scene text: its header
 * (gk_phys_header gives the object count), then frames 1, 2, ... read with
 * gk_phys_parse_frame until one is malformed, then gk_phys_score on the
 * rest as if a model had written it, against a truth of zeros. Each frame
 * read must lie within the text; the score must count the well-formed frames
 * before the first malformed one, with a finite error for each and NaN from
 * there on. Scenes without objects are skipped, as moe-rollout refuses
 * them, and so are those of more than 256 (phys-gen writes 1 to 4). */
#include "fuzz.h"
#include "physparse.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>

#define FRAMES 16

static void parse(void *arg)
{
    const fuzz_input *in = arg;
    const char *text = (const char *)in->data;
    size_t len = in->size, p;
    int nobj = gk_phys_header(text, len, &p);
    if (nobj < 1 || nobj > 256)
        return;
    if (p > len)
        fuzz_fail("expected a header within the %zu bytes, found %zu", len, p);
    double *pos = malloc((size_t)nobj * 2 * sizeof *pos);
    double *vel = malloc((size_t)nobj * 2 * sizeof *vel);
    double *truth = calloc((size_t)FRAMES * nobj * 2, sizeof *truth);
    int state, n = 1;
    size_t k;
    while ((k = gk_phys_parse_frame(text + p, len - p, n, nobj, pos, vel, &state))) {
        if (k > len - p || state < GK_PHYS_STATE_MOVING || state > GK_PHYS_STATE_RESTING)
            fuzz_fail("frame %d: expected a frame within the text and a state word, found %zu "
                      "bytes of %zu, state %d", n, k, len - p, state);
        p += k;
        n++;
    }
    const double world[2] = {100, 50};
    double err[FRAMES];
    int good = gk_phys_score(text + p, len - p, n, FRAMES, nobj, truth, world, err);
    for (int j = 0; j < FRAMES; j++)
        if (j < good ? !isfinite(err[j]) || err[j] < 0 : !isnan(err[j]))
            fuzz_fail("frame %d of %d well-formed: expected %s, found %g", j, good,
                      j < good ? "a finite error >= 0" : "NaN", err[j]);
    free(truth);
    free(vel);
    free(pos);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    fuzz_try(parse, &in);
    return 0;
}
