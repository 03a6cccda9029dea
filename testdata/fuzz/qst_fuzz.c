/* qst_fuzz: the quantized model reader, gk_qst_load (moe-eval, moe-pack and
 * moe-rollout read .qst files with it), then gk_qst_dequantize into the
 * layout of the config it carries, as moe-eval does. Each input is written
 * to a file and loaded; the safetensors checksum is optional, so mutations
 * reach the metadata (format, config JSON, the per-tensor golfkit.quant
 * table) and the integer codes and scales. The reader checks every tensor
 * against the config before it allocates for it, so the float buffer here is
 * bounded by the file (at most 8 values a byte, the binary scheme). A model
 * that loads must dequantize, into a buffer filled with NaN, to finite
 * numbers only, padding between tensors included (zeros): the reader
 * refuses non-finite scales and passthrough values, and codes are in
 * range. */
#include "fuzz.h"
#include "qst.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>

static void qst_free(void *q) { gk_qst_free(q); }
static void layout_free(void *l) { gk_layout_free(l); }

static void load(void *arg)
{
    const fuzz_input *in = arg;
    gk_qst *q = gk_qst_load(fuzz_file(in->data, in->size));
    gk_cleanup_push(qst_free, q);
    gk_layout l;
    gk_layout_init(&l, gk_qst_config(q));
    gk_cleanup_push(layout_free, &l);
    if (l.n_weights > 8 * in->size)
        fuzz_fail("expected at most 8 values a byte of the file, found %zu values in %zu bytes",
                  l.n_weights, in->size);
    float *w = malloc(l.numel * sizeof *w + 1);
    gk_cleanup_push(free, w);
    for (size_t i = 0; i < l.numel; i++)
        w[i] = NAN;
    gk_qst_dequantize(q, &l, w);
    for (size_t i = 0; i < l.numel; i++)
        if (!isfinite(w[i]))
            fuzz_fail("weight %zu of %zu: expected a finite number, found %g", i, l.numel, w[i]);
    gk_cleanup_pop(w);
    free(w);
    gk_cleanup_pop(&l);
    gk_layout_free(&l);
    gk_cleanup_pop(q);
    gk_qst_free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    fuzz_try(load, &in);
    return 0;
}
