/* hfjson: building tokenizer.json with libjq's jv; the mapping is in hfjson.h.
 *
 * The byte alphabet is GPT-2's bytes_to_unicode(): the printable bytes '!'..'~',
 * 0xA1..0xAC and 0xAE..0xFF stand for themselves, and the other 68 bytes, in
 * increasing order, become U+0100, U+0101, ... That is the table Hugging Face's
 * ByteLevel pre-tokenizer and decoder use, so a token's text is its bytes
 * through this table. */
#include "hfjson.h"
#include "io.h"
#include "pretok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* UTF-8 of each byte's character: at most 2 bytes, NUL-terminated. */
static void byte_alphabet(char map[256][3])
{
    unsigned next = 256;
    for (unsigned b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = printable ? b : next++;
        if (cp < 0x80) {
            map[b][0] = (char)cp;
            map[b][1] = 0;
        } else {
            map[b][0] = (char)(0xC0 | cp >> 6);
            map[b][1] = (char)(0x80 | (cp & 0x3F));
            map[b][2] = 0;
        }
    }
}

/* The text of token ID: its bytes through the alphabet. */
static jv token_text(const gk_tok *t, uint32_t id, char map[256][3])
{
    char *s = gk_malloc(2 * (size_t)t->len[id] + 1);
    size_t n = 0;
    for (uint32_t i = 0; i < t->len[id]; i++) {
        const char *c = map[t->bytes[id][i]];
        size_t k = strlen(c);
        memcpy(s + n, c, k);
        n += k;
    }
    jv v = jv_string_sized(s, (int)n);
    free(s);
    return v;
}

static jv obj_type(const char *type)
{
    return jv_object_set(jv_object(), jv_string("type"), jv_string(type));
}

static jv set(jv o, const char *key, jv v) { return jv_object_set(o, jv_string(key), v); }

jv gk_hfjson(const gk_tok *t)
{
    char map[256][3];
    byte_alphabet(map);
    uint32_t nbpe = 256 + t->n_merges;
    jv *text = gk_malloc(nbpe * sizeof *text);
    jv vocab = jv_object();
    for (uint32_t id = 0; id < nbpe; id++) {
        text[id] = token_text(t, id, map);
        jv old = jv_object_get(jv_copy(vocab), jv_copy(text[id]));
        if (jv_is_valid(old))
            gk_die("tokenizer: token %u: expected bytes no other token has (Hugging Face "
                   "looks tokens up by text), found the bytes of token %d", id,
                   (int)jv_number_value(old));
        jv_free(old);
        vocab = jv_object_set(vocab, jv_copy(text[id]), jv_number(id));
    }
    jv merges = jv_array();
    for (uint32_t i = 0; i < t->n_merges; i++) {
        /* "left right": byte-level text never holds a space (it is U+0120). */
        jv m = jv_string_fmt("%s %s", jv_string_value(text[t->merges[i][0]]),
                             jv_string_value(text[t->merges[i][1]]));
        merges = jv_array_append(merges, m);
    }
    for (uint32_t id = 0; id < nbpe; id++)
        jv_free(text[id]);
    free(text);

    jv added = jv_array();
    for (uint32_t i = 0; i < t->n_special; i++) {
        uint32_t id = nbpe + i;
        if (jv_object_has(jv_copy(vocab), jv_string(t->special[i])))
            gk_die("tokenizer: special %u \"%s\": expected a name that is no learned token's "
                   "text, found it among the merges (Hugging Face would confuse the two)",
                   i, t->special[i]);
        jv a = set(jv_object(), "id", jv_number(id));
        a = set(a, "content", jv_string(t->special[i]));
        a = set(a, "single_word", jv_false());
        a = set(a, "lstrip", jv_false());
        a = set(a, "rstrip", jv_false());
        a = set(a, "normalized", jv_false());
        a = set(a, "special", jv_true());
        added = jv_array_append(added, a);
    }

    jv split = obj_type("Split");
    split = set(split, "pattern", set(jv_object(), "Regex", jv_string(gk_pretok_regex(t->pretok))));
    split = set(split, "behavior", jv_string("Isolated"));
    split = set(split, "invert", jv_false());
    jv bl = obj_type("ByteLevel");
    bl = set(bl, "add_prefix_space", jv_false());
    bl = set(bl, "trim_offsets", jv_false());
    bl = set(bl, "use_regex", jv_false());
    jv pre = set(obj_type("Sequence"), "pretokenizers",
                 jv_array_append(jv_array_append(jv_array(), split), jv_copy(bl)));

    /* Specials are not in the model's vocab: Hugging Face gives added tokens
     * the ids after the model's, in order, which are exactly the .tok ids. */
    jv model = obj_type("BPE");
    model = set(model, "dropout", jv_null());
    model = set(model, "unk_token", jv_null());
    model = set(model, "continuing_subword_prefix", jv_null());
    model = set(model, "end_of_word_suffix", jv_null());
    model = set(model, "fuse_unk", jv_false());
    model = set(model, "byte_fallback", jv_false());
    model = set(model, "ignore_merges", jv_false());
    model = set(model, "vocab", vocab);
    model = set(model, "merges", merges);

    jv doc = set(jv_object(), "version", jv_string("1.0"));
    doc = set(doc, "truncation", jv_null());
    doc = set(doc, "padding", jv_null());
    doc = set(doc, "added_tokens", added);
    doc = set(doc, "normalizer", jv_null());
    doc = set(doc, "pre_tokenizer", pre);
    doc = set(doc, "post_processor", jv_null());
    doc = set(doc, "decoder", bl);
    doc = set(doc, "model", model);
    return doc;
}

gk_out *gk_hfjson_write(jv j, const char *path)
{
    jv s = jv_dump_string(j, JV_PRINT_INDENT_FLAGS(2));
    gk_out *o = gk_out_open(path);
    gk_out_write(o, jv_string_value(s), (size_t)jv_string_length_bytes(jv_copy(s)));
    gk_out_write(o, "\n", 1);
    gk_out_close(o);
    jv_free(s);
    return o;
}
