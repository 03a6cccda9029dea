/* physparse: the strict reader of phys-gen's frame text, and the position
 * error that moe-rollout --physics scores a model's frames with.
 *
 * A model's continuation of a scene is text; to score it we read it back by
 * the grammar of phys-gen(1) and nothing looser: a frame is a "Frame N: WORD"
 * line with the expected N and one of the three state words, then one
 * "oI X,Y VX,VY" line per object, in order. A reader that skipped junk or
 * accepted objects out of order would credit a model for text the scene's own
 * format never has, so any deviation makes the frame malformed, and (since
 * the model conditions on what it wrote) every frame after it too. This file
 * is pure C (no Chipmunk): the scorer needs only the text and the truth. */
#ifndef GK_PHYSPARSE_H
#define GK_PHYSPARSE_H

#include <stddef.h>

/* The state words, in the order of phys-gen's thresholds. */
enum { GK_PHYS_STATE_MOVING, GK_PHYS_STATE_SETTLING, GK_PHYS_STATE_RESTING };

/* The header of the scene text TEXT [LEN]: the bytes before the first line
 * that starts "Frame " (stored in *HEADER_LEN). Returns the number of objects
 * (lines that start "o" and a digit), or -1 when there is no frame line. */
int gk_phys_header(const char *text, size_t len, size_t *header_len);

/* Read the frame block at TEXT [LEN]: frame number N, NOBJ objects. On
 * success returns the bytes it spans (its last newline included) and fills
 * POS and VEL [NOBJ][2] (either may be NULL) and *STATE (may be NULL);
 * returns 0 when the block is malformed or incomplete. */
size_t gk_phys_parse_frame(const char *text, size_t len, int n, int nobj, double *pos,
                           double *vel, int *state);

/* The mean over NOBJ objects of the distance between PRED and TRUTH
 * [NOBJ][2], as a percentage of the diagonal of WORLD (width, height). */
double gk_phys_err_pct(const double *pred, const double *truth, int nobj, const double world[2]);

/* Score generated text GEN [LEN] that should hold frames FIRST, FIRST+1, ...
 * (NFRAMES of them) of a scene of NOBJ objects, against TRUTH
 * [NFRAMES][NOBJ][2] and WORLD. ERR [NFRAMES] gets each frame's error
 * (gk_phys_err_pct), NAN from the first malformed frame on. Returns the
 * number of well-formed frames before it (NFRAMES when all are). Text after
 * the last frame is ignored: generation stops at a frame's end. */
int gk_phys_score(const char *gen, size_t len, int first, int nframes, int nobj,
                  const double *truth, const double world[2], double *err);

#endif
