/* encode: text -> token ids with a gk_tok, and the growable id vector.
 *
 * Encoding pre-tokenizes the text (the tokenizer's own mode), then applies the
 * merges inside each piece in rank order, leftmost first, which is exactly how
 * the trainer applied them. An encoder keeps a cache from piece bytes to ids;
 * natural text repeats its pieces so often that most pieces are a cache hit.
 * One encoder per thread: it is not shared. */
#ifndef GK_ENCODE_H
#define GK_ENCODE_H

#include "tok.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint16_t *v;
    size_t n, cap;
} gk_ids;

void gk_ids_push(gk_ids *ids, uint16_t id);
void gk_ids_free(gk_ids *ids);

typedef struct gk_encoder gk_encoder;

gk_encoder *gk_encoder_new(const gk_tok *t);
void gk_encoder_free(gk_encoder *e);
/* Append the ids of TEXT (no BOS: the caller places document boundaries). */
void gk_encode_text(gk_encoder *e, const uint8_t *text, size_t n, gk_ids *out);

#endif
