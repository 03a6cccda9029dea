/* pretok: the pre-tokenizer, which cuts text into pieces that BPE merges never
 * cross. Trainer and encoder share it, and tok-train --hf-json writes the same
 * rule as a regular expression, so Hugging Face tokenizers cuts identically.
 *
 * It works on bytes, with four byte classes: L letters (A-Z, a-z, and every byte
 * >= 0x80, so a multi-byte UTF-8 character counts as a letter), N digits (0-9),
 * S space (space, \t \n \v \f \r) and P the other ASCII bytes. Modes:
 *
 *   none    a piece is a whole line, its newline included (no splitting inside
 *           a line; lines still bound pieces so training stays tractable)
 *   ws      GPT-2-style: " ?L+", " ?N+", " ?P+", then runs of S, where a run
 *           followed by a non-space leaves its last byte to the next piece
 *   digits  as ws, but every digit is a piece of its own: " ?N"
 *
 * none is the default: it gave the most held-out bytes per token on GCIDE
 * (4.26 at vocab 8192 against 3.29 for ws and 3.12 for digits; `make
 * bench-tok` prints the table). ws encodes about 5x faster and bounds a piece
 * by a word, which suits text with very long lines. */
#ifndef GK_PRETOK_H
#define GK_PRETOK_H

#include <stddef.h>
#include <stdint.h>

enum { GK_PRETOK_NONE = 0, GK_PRETOK_WS = 1, GK_PRETOK_DIGITS = 2, GK_PRETOK_COUNT };
#define GK_PRETOK_DEFAULT GK_PRETOK_NONE

/* End (exclusive) of the piece that starts at i < len. */
size_t gk_pretok_next(int mode, const uint8_t *s, size_t len, size_t i);
/* The smallest piece boundary >= from (len if none): a place where text can be
 * cut and both halves pre-tokenized alone with the same pieces as the whole. */
size_t gk_pretok_safe_cut(int mode, const uint8_t *s, size_t len, size_t from);
/* Name <-> mode; gk_pretok_parse returns -1 for an unknown name. */
const char *gk_pretok_name(int mode);
int gk_pretok_parse(const char *name);
/* The same rule as an Oniguruma regex for a Hugging Face Split pre-tokenizer
 * (behavior "isolated"); equal on valid UTF-8 input. */
const char *gk_pretok_regex(int mode);

#endif
