/* pretok: byte-class pre-tokenizer; the rules are in pretok.h.
 *
 * The ws rule is the GPT-2 pattern restated on byte classes, evaluated without
 * a regex engine: at each position the alternatives are tried in the regex's
 * order, so the result equals leftmost-first regex matching, which is what
 * gk_pretok_regex() hands to Hugging Face. */
#include "pretok.h"

#include <string.h>

enum { C_L, C_N, C_S, C_P };

static unsigned char cls[256];

static void init_classes(void)
{
    if (cls['a'] == C_L + 1 || cls[' '] == C_S + 1)
        return;
    for (int c = 0; c < 256; c++) {
        int k = C_P;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80)
            k = C_L;
        else if (c >= '0' && c <= '9')
            k = C_N;
        else if (c == ' ' || (c >= '\t' && c <= '\r'))
            k = C_S;
        cls[c] = (unsigned char)(k + 1); /* 0 means "table not built yet" */
    }
}

static inline int cl(uint8_t c) { return cls[c] - 1; }

static size_t run_of(const uint8_t *s, size_t len, size_t i, int k)
{
    while (i < len && cl(s[i]) == k)
        i++;
    return i;
}

size_t gk_pretok_next(int mode, const uint8_t *s, size_t len, size_t i)
{
    init_classes();
    if (mode == GK_PRETOK_NONE) {
        const uint8_t *nl = memchr(s + i, '\n', len - i);
        return nl ? (size_t)(nl - s) + 1 : len;
    }
    /* " ?L+", " ?N+" (or " ?N"), " ?P+": an optional space, then a class run. */
    size_t j = i + (s[i] == ' ' && i + 1 < len && cl(s[i + 1]) != C_S);
    int k = cl(s[j]);
    if (k != C_S) {
        if (k == C_N && mode == GK_PRETOK_DIGITS)
            return j + 1;
        return run_of(s, len, j, k);
    }
    /* "\s+(?!\S)" then "\s+": a space run, less its last byte when a non-space
     * follows and the run is longer than one byte. */
    size_t e = run_of(s, len, i, C_S);
    if (e < len && e - i > 1)
        return e - 1;
    return e;
}

size_t gk_pretok_safe_cut(int mode, const uint8_t *s, size_t len, size_t from)
{
    init_classes();
    if (from == 0 || from >= len)
        return from >= len ? len : 0;
    if (mode == GK_PRETOK_NONE) {
        const uint8_t *nl = memchr(s + from - 1, '\n', len - (from - 1));
        return nl ? (size_t)(nl - s) + 1 : len;
    }
    /* A space byte other than ' ' right after a non-space always starts a new
     * piece: no class run takes it, and no space run began before it. */
    for (size_t i = from; i < len; i++)
        if (s[i] != ' ' && cl(s[i]) == C_S && cl(s[i - 1]) != C_S)
            return i;
    return len;
}

static const char *const names[GK_PRETOK_COUNT] = {"none", "ws", "digits"};

const char *gk_pretok_name(int mode)
{
    return mode >= 0 && mode < GK_PRETOK_COUNT ? names[mode] : "?";
}

int gk_pretok_parse(const char *name)
{
    for (int m = 0; m < GK_PRETOK_COUNT; m++)
        if (strcmp(name, names[m]) == 0)
            return m;
    return -1;
}

/* Classes spelled out so that Oniguruma's Unicode \s and \p{L} play no part. */
#define RX_L "A-Za-z\\x{80}-\\x{10FFFF}"
#define RX_S "\\t\\n\\x{0B}\\f\\r "
#define RX_TAIL " ?[^" RX_S RX_L "0-9]+|[" RX_S "]+(?![^" RX_S "])|[" RX_S "]+"

const char *gk_pretok_regex(int mode)
{
    switch (mode) {
    case GK_PRETOK_NONE:
        return "[^\\n]*\\n|[^\\n]+";
    case GK_PRETOK_DIGITS:
        return " ?[" RX_L "]+| ?[0-9]|" RX_TAIL;
    default:
        return " ?[" RX_L "]+| ?[0-9]+|" RX_TAIL;
    }
}
