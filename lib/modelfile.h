/* modelfile: a trained model read from whatever file holds it, told by its
 * content: a moe-train or moe-avg checkpoint (safetensors, moe-ckpt(5)), a
 * moe-quant .qst (safetensors with golfkit.format "qst 1", qst(5)) or a
 * moe-pack artifact (.pack, its magic first, pack(5)). moe-eval and
 * moe-rollout both run from any of the three, so the detection and the
 * loading live here once.
 *
 * A .qst is dequantized to the float parameters, so every consumer runs the
 * one float model. A .pack is decoded in memory (nothing is unpacked to disk)
 * and read as its .qst and its tokenizer. The name is never consulted: a .qst
 * renamed .bin is still a .qst. */
#ifndef GK_MODELFILE_H
#define GK_MODELFILE_H

#include "config.h"
#include "model.h"
#include "tok.h"

typedef struct {
    const char *kind;  /* "checkpoint", "qst" or "pack" */
    gk_config cfg;     /* the config stored with the model (checked) */
    gk_layout l;       /* its layout */
    float *params;     /* [l.numel] the float weights (dequantized for qst and pack) */
    gk_tok *tok;       /* the tokenizer TOK_PATH named, else the pack's, else NULL */
    char tok_name[4200]; /* what errors call the tokenizer: TOK_PATH or "PACK:tokenizer.tok" */
} gk_modelfile;

/* Load the model in PATH and its tokenizer: TOK_PATH when not NULL (it takes
 * the place of a packed one, which is then not decoded), else the .pack's
 * own. A tokenizer whose vocab is not the model's model.vocab is refused.
 * Every defect dies (exit 1) in one line naming the file and what it
 * expected; a file of another kind: "PATH: offset 0: expected a moe-train
 * checkpoint, a .qst ... or a .pack ..., found other bytes". */
void gk_modelfile_load(gk_modelfile *m, const char *path, const char *tok_path);
void gk_modelfile_free(gk_modelfile *m);

#endif
