/* ckpt: moe-train's checkpoints, one safetensors file holding everything a
 * run needs to go on exactly where it stopped.
 *
 * Tensors: every parameter under its state_dict name (router biases of MoE
 * layers included: they are state too), and every optimizer state tensor
 * ("optim.muon_buf.NAME", "optim.adam_m.NAME", "optim.adam_v.NAME"), all F32.
 * With train.ema_decay > 0 also the moving average of every trained tensor
 * ("ema.NAME"; buffers have none: they are state, not weights to average).
 * Metadata (strings, man5/moe-ckpt.5):
 *
 *   golfkit.format   "moe-train checkpoint 1"
 *   golfkit.config   the effective config as compact JSON
 *   golfkit.version  the moe-train build that wrote it
 *   golfkit.seed     the seed of the initial weights
 *   golfkit.step     optimizer steps taken
 *   golfkit.loader   the data position: "SHARD OFFSET"
 *   golfkit.elapsed  training seconds so far; present only when the schedule
 *                    runs on the wall clock (a step schedule never reads it,
 *                    and leaving it out keeps resumed runs byte-identical)
 *   golfkit.avg      only in moe-avg's output: what was averaged, as JSON
 *   golfkit.xxh64    the data checksum (lib/safetensors.h)
 *
 * safetensors.torch.load_file reads the weights as they are. */
#ifndef GK_CKPT_H
#define GK_CKPT_H

#include "config.h"
#include "loader.h"
#include "model.h"
#include "optim.h"

#include <stdint.h>

typedef struct {
    uint64_t seed;
    int64_t step;
    double elapsed;      /* used only by wall-clock schedules */
    gk_loader_pos pos;
} gk_train_state;

/* Write a checkpoint atomically (PATH.tmp, fsync, rename). O may be NULL (the
 * initial weights, before any step: no optimizer state). */
void gk_ckpt_save(const char *path, const gk_layout *l, const float *params,
                  const gk_optim *o, const gk_train_state *s, const char *version);
/* The same with the optional parts: EMA [l->numel] (NULL: none; its buffer
 * tensors are not written) and AVG, the golfkit.avg metadata (NULL: none). */
void gk_ckpt_save_ex(const char *path, const gk_layout *l, const float *params,
                     const float *ema, const gk_optim *o, const gk_train_state *s,
                     const char *version, const char *avg);

typedef struct gk_ckpt gk_ckpt;

/* Load and verify PATH (checksum, format, config, every number in the
 * metadata); dies naming the file and the field. */
gk_ckpt *gk_ckpt_open(const char *path);
/* The config it was written with (checked). */
const gk_config *gk_ckpt_config(const gk_ckpt *c);
gk_train_state gk_ckpt_state(const gk_ckpt *c);
/* Fill params [l->numel] from the checkpoint; every tensor of L must be there
 * with its shape. */
void gk_ckpt_read_params(const gk_ckpt *c, const gk_layout *l, float *params);
/* Restore the optimizer's state tensors and step count; dies when the
 * checkpoint holds none (the initial weights) unless its step is 0. */
void gk_ckpt_read_optim(const gk_ckpt *c, gk_optim *o);
/* Whether it holds ema.NAME tensors (train.ema_decay > 0). */
int gk_ckpt_has_ema(const gk_ckpt *c, const gk_layout *l);
/* Fill ema [l->numel]: trained tensors from ema.NAME, buffers from the
 * parameters (as moe-train keeps them), so the result is a whole set of
 * weights. The initial weights (step 0) need no ema tensors: the average
 * starts as the weights. Otherwise dies naming the first missing tensor. */
void gk_ckpt_read_ema(const gk_ckpt *c, const gk_layout *l, float *ema);
void gk_ckpt_close(gk_ckpt *c);

#endif
