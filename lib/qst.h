/* qst: the quantized model file (.qst) that moe-quant writes and that
 * moe-eval and moe-pack read: a safetensors file (lib/safetensors.h) holding
 * every tensor of a model layout either as integers with one float16 scale
 * per row, or as float16/float32 passthrough, and enough metadata to rebuild
 * the model from the file alone. man5/qst.5 is the full description; in short:
 *
 *   NAME          I8 [rows, cols] integers q (layout "i8": one byte each), or
 *                 U8 [rows, ceil(cols*bits/8)] (layout "bits": q + offset packed
 *                 LSB-first per row, see lib/quant.h), or F16/F32 passthrough
 *   NAME.scale    F16 [rows]: dequantized w = q * scale
 *   __metadata__  golfkit.format "qst 1", golfkit.config (the model config as
 *                 JSON), golfkit.quant (JSON object: name -> {"scheme": S,
 *                 "layout": L}), golfkit.xxh64
 *
 * A reader is given a layout (from the config) and fills the float parameter
 * buffer, so a .qst is evaluated exactly like a checkpoint. Every defect dies
 * through gk_die with one line naming the file and the tensor or field. */
#ifndef GK_QST_H
#define GK_QST_H

#include "config.h"
#include "model.h"
#include "quant.h"

#include <stddef.h>

typedef struct gk_qst gk_qst;

/* Load and verify PATH ("-": stdin): the safetensors checks, golfkit.format,
 * golfkit.config (applied over the defaults and checked), golfkit.quant (one
 * known scheme and layout per model tensor), and every tensor of the model's
 * layout present with the dtype and shape its scheme implies. */
gk_qst *gk_qst_load(const char *path);
/* The same from N bytes at P (a .qst inside a .pack); NAME is used in error
 * messages. The bytes are copied: P may be freed after the call. */
gk_qst *gk_qst_load_mem(const unsigned char *p, size_t n, const char *name);
/* The model config stored in the file (checked). */
const gk_config *gk_qst_config(const gk_qst *q);
/* Fill params [l->numel] with the dequantized weights (q * scale in float,
 * passthrough tensors widened to float). L must be the layout of
 * gk_qst_config(q) (gk_layout_init on it); buffers (router biases) included. */
void gk_qst_dequantize(const gk_qst *q, const gk_layout *l, float *params);
void gk_qst_free(gk_qst *q);

/* Writing (moe-quant): QT[l->n_params] are the quantized tensors of layout L,
 * in layout order (lib/quant.h). Writes PATH atomically. */
void gk_qst_write(const char *path, const gk_layout *l, const gk_qtensor *qt,
                  const char *version);

#endif
