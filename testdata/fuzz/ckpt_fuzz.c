/* ckpt_fuzz: the checkpoint reader, gk_ckpt_open and then what moe-train
 * --resume, moe-avg and moe-eval read from it: the parameters of the layout
 * its config builds (gk_ckpt_read_params), the EMA weights when present and
 * the optimizer state (gk_ckpt_read_optim). Each input is written to a file
 * and opened; the safetensors checksum is optional, so mutations reach the
 * metadata (format, config JSON, seed, step, loader position, elapsed time)
 * and the tensor table. The parameter buffers are only allocated when the
 * file is large enough to hold them in float32 (else the tensors cannot all
 * be there): a config naming a huge model must not make the harness ask for
 * gigabytes before the reader refuses the file. The buffers are filled with
 * NaN before each read, which must leave finite numbers in every tensor
 * (gk_st_read_f32 refuses the others) and zeros in the padding between
 * tensors (model.h). */
#include "fuzz.h"
#include "ckpt.h"
#include "optim.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>

static void ckpt_close(void *c) { gk_ckpt_close(c); }
static void layout_free(void *l) { gk_layout_free(l); }
static void optim_free(void *o) { gk_optim_free(o); }

/* Every element of W [L->numel], filled with NaN before the read: every
 * tensor finite, and the padding between tensors written with zeros
 * (model.h). */
static void check_read(const gk_layout *l, const float *w, const char *what)
{
    for (size_t i = 0; i < l->numel; i++)
        if (!isfinite(w[i]))
            fuzz_fail("%s element %zu of %zu: expected a finite number, found %g", what, i,
                      l->numel, w[i]);
    for (int i = 0; i < l->n_params; i++)
        for (size_t k = l->params[i].offset + l->params[i].numel;
             k < (i + 1 < l->n_params ? l->params[i + 1].offset : l->numel); k++)
            if (w[k] != 0)
                fuzz_fail("%s element %zu: expected 0 in the padding after %s, found %g", what, k,
                          l->params[i].name, w[k]);
}

static void load(void *arg)
{
    const fuzz_input *in = arg;
    gk_ckpt *c = gk_ckpt_open(fuzz_file(in->data, in->size));
    gk_cleanup_push(ckpt_close, c);
    gk_layout l;
    gk_layout_init(&l, gk_ckpt_config(c));
    gk_cleanup_push(layout_free, &l);
    if (l.numel <= in->size / sizeof(float)) {
        float *w = malloc(l.numel * sizeof *w + 1);
        gk_cleanup_push(free, w);
        for (size_t i = 0; i < l.numel; i++)
            w[i] = NAN;
        gk_ckpt_read_params(c, &l, w);
        check_read(&l, w, "parameter");
        if (gk_ckpt_has_ema(c, &l)) {
            for (size_t i = 0; i < l.numel; i++)
                w[i] = NAN;
            gk_ckpt_read_ema(c, &l, w);
            check_read(&l, w, "EMA weight");
        }
        gk_optim *o = gk_optim_new(&l);
        gk_cleanup_push(optim_free, o);
        gk_ckpt_read_optim(c, o);
        gk_cleanup_pop(o);
        gk_optim_free(o);
        gk_cleanup_pop(w);
        free(w);
    }
    gk_cleanup_pop(&l);
    gk_layout_free(&l);
    gk_cleanup_pop(c);
    gk_ckpt_close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    fuzz_try(load, &in);
    return 0;
}
