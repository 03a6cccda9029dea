/* hfjson: a .tok tokenizer as a Hugging Face tokenizer.json.
 *
 * The export encodes identically to tok-encode (checked by testdata/hf_check.py
 * in `make test`): a BPE model over GPT-2's byte-to-unicode alphabet (each byte
 * is one printable character, so token text is the bytes, mapped), the vocab
 * as text -> id for ids 0..255+n_merges, the merges in rank order, and the
 * pre-tokenizer as a Sequence of a Split on gk_pretok_regex() (behavior
 * Isolated) and a ByteLevel without its own regex or prefix space. Specials are
 * added tokens (special: true) with their .tok ids. No normalizer, no
 * post-processor: BOS is placed by the caller, as tok-encode does.
 *
 * Hugging Face looks tokens up by text, so two ids with the same bytes, or a
 * special whose name is also a learned token's text, cannot be exported:
 * gk_hfjson() dies naming them. tok-train never learns two ids with one text. */
#ifndef GK_HFJSON_H
#define GK_HFJSON_H

#include "io.h"
#include "tok.h"

#include <jv.h>

/* The tokenizer.json document for T. */
jv gk_hfjson(const gk_tok *t);
/* Write J (consumed) to PATH's temporary, pretty-printed as Hugging Face
 * does, and close it still pending (io.h): the caller commits it with
 * gk_out_commit once the .tok that goes with it is written too, so that a
 * failure leaves the old pair of files, never a new one beside an old one. */
gk_out *gk_hfjson_write(jv j, const char *path);

#endif
