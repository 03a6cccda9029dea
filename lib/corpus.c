/* corpus: input files -> chunks of whole documents (or of pre-tokenizer-safe
 * pieces of a long document). The document rules are in corpus.h.
 *
 * Plain text is read into a buffer of about one chunk; the chunk handed out ends
 * at the last document end the buffer holds, and the rest waits for the next
 * call. A rule can only decide an end once it has seen the byte after it (a run
 * of newlines might go on), so an undecided run at the end of the buffer waits
 * too. JSONL is read line by line and only the field's text goes into chunks. */
#include "corpus.h"
#include "io.h"
#include "pretok.h"
#include "util.h"

#include <jv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct gk_corpus {
    gk_corpus_opts o;
    char **paths;
    int npaths, next_path;
    gk_in *in;
    int in_eof;
    uint8_t *buf;            /* pending raw bytes of the current input */
    size_t len, cap;
    uint64_t consumed, total, line; /* line: JSONL line number of buf[0] */
    int at_doc_start;
    uint8_t *out;            /* JSONL: the chunk's document texts */
    size_t out_len, out_cap;
    size_t *starts, nstarts, starts_cap;
};

static char *stdin_path = "-";

gk_corpus *gk_corpus_open(char **paths, int npaths, const gk_corpus_opts *opts)
{
    gk_corpus *cp = gk_calloc(1, sizeof *cp);
    cp->o = *opts;
    if (cp->o.chunk < 4096)
        cp->o.chunk = 4096;
    cp->paths = npaths ? paths : &stdin_path;
    cp->npaths = npaths ? npaths : 1;
    for (int i = 0; i < cp->npaths; i++) {
        struct stat st;
        if (strcmp(cp->paths[i], "-") == 0 || stat(cp->paths[i], &st) != 0 ||
            !S_ISREG(st.st_mode)) {
            cp->total = 0;
            break;
        }
        cp->total += (uint64_t)st.st_size;
    }
    cp->cap = cp->o.chunk;
    cp->buf = gk_malloc(cp->cap + 1);
    return cp;
}

uint64_t gk_corpus_consumed(const gk_corpus *cp) { return cp->consumed; }
uint64_t gk_corpus_total(const gk_corpus *cp) { return cp->total; }

/* Make sure an input is open; returns 0 when every input was read. */
static int open_input(gk_corpus *cp)
{
    if (cp->in)
        return 1;
    if (cp->next_path == cp->npaths)
        return 0;
    cp->in = gk_in_open(cp->paths[cp->next_path++]);
    cp->in_eof = 0;
    cp->at_doc_start = 1;
    cp->line = 1;
    return 1;
}

/* Read until the buffer holds WANT bytes or the input ends. */
static void fill(gk_corpus *cp, size_t want)
{
    if (want > cp->cap) {
        cp->cap = want;
        cp->buf = gk_realloc(cp->buf, cp->cap + 1);
    }
    while (!cp->in_eof && cp->len < want) {
        size_t k = gk_in_read(cp->in, cp->buf + cp->len, want - cp->len);
        if (k == 0)
            cp->in_eof = 1;
        cp->len += k;
        cp->consumed += k;
    }
}

static void drop_front(gk_corpus *cp, size_t n)
{
    memmove(cp->buf, cp->buf + n, cp->len - n);
    cp->len -= n;
}

static void add_start(gk_corpus *cp, size_t off)
{
    if (cp->nstarts == cp->starts_cap) {
        cp->starts_cap = cp->starts_cap ? 2 * cp->starts_cap : 1024;
        cp->starts = gk_realloc(cp->starts, cp->starts_cap * sizeof *cp->starts);
    }
    cp->starts[cp->nstarts++] = off;
}

/* End of the document that starts at POS, or 0 when the buffer does not decide
 * it yet. EOF: the buffer holds the rest of the input. */
static size_t doc_end(int rule, const uint8_t *s, size_t len, size_t pos, int eof)
{
    const uint8_t *p;
    switch (rule) {
    case GK_DOC_LINE:
        p = memchr(s + pos, '\n', len - pos);
        return p ? (size_t)(p - s) + 1 : 0;
    case GK_DOC_NUL:
        p = memchr(s + pos, 0, len - pos);
        return p ? (size_t)(p - s) + 1 : 0;
    case GK_DOC_BLANK:
        for (size_t i = pos; (p = memchr(s + i, '\n', len - i)); i = (size_t)(p - s) + 1) {
            size_t j = (size_t)(p - s) + 1;
            if (j < len && s[j] == '\n') {
                while (j < len && s[j] == '\n')
                    j++;
                return j < len || eof ? j : 0;
            }
            if (j == len)
                return 0;
        }
        return 0;
    default:
        return 0;
    }
}

static int next_plain(gk_corpus *cp, gk_chunk *c)
{
    for (;;) {
        if (!open_input(cp))
            return 0;
        fill(cp, cp->o.chunk > cp->len ? cp->o.chunk : cp->len + cp->o.chunk);
        if (cp->len == 0 && cp->in_eof) {
            gk_in_close(cp->in);
            cp->in = NULL;
            continue;
        }
        cp->nstarts = 0;
        if (cp->at_doc_start)
            add_start(cp, 0);
        size_t pos = 0, e;
        while (pos < cp->len && (e = doc_end(cp->o.doc_end, cp->buf, cp->len, pos, cp->in_eof))) {
            pos = e;
            if (pos < cp->len)
                add_start(cp, pos);
        }
        size_t emit;
        if (cp->in_eof) {
            emit = cp->len; /* the end of an input ends its last document */
        } else if (pos > 0) {
            emit = pos;
            if (cp->nstarts && cp->starts[cp->nstarts - 1] == pos)
                cp->nstarts--;
        } else {
            emit = gk_pretok_safe_cut(cp->o.pretok, cp->buf, cp->len, cp->len / 2);
            if (emit == 0 || emit >= cp->len)
                continue; /* no cut yet: read more of this long document */
        }
        /* The caller owns a view of buf until the next call; move the rest
         * behind it then. Keep it simple: copy the emitted part out. */
        if (cp->out_cap < emit) {
            cp->out_cap = emit;
            cp->out = gk_realloc(cp->out, cp->out_cap);
        }
        memcpy(cp->out, cp->buf, emit);
        int ends_doc = cp->in_eof || pos == emit;
        drop_front(cp, emit);
        cp->at_doc_start = ends_doc;
        c->bytes = cp->out;
        c->len = emit;
        c->starts = cp->starts;
        c->nstarts = cp->nstarts;
        return 1;
    }
}

static void out_append(gk_corpus *cp, const void *p, size_t n)
{
    if (!n) /* an empty text field: nothing to copy, and out may still be NULL */
        return;
    if (cp->out_len + n > cp->out_cap) {
        cp->out_cap = 2 * (cp->out_len + n);
        cp->out = gk_realloc(cp->out, cp->out_cap);
    }
    memcpy(cp->out + cp->out_len, p, n);
    cp->out_len += n;
}

static void jsonl_line(gk_corpus *cp, const uint8_t *s, size_t n)
{
    const char *name = gk_in_path(cp->in);
    jv v = jv_parse_sized((const char *)s, (int)n);
    if (!jv_is_valid(v)) {
        jv msg = jv_invalid_get_msg(v);
        const char *m = jv_get_kind(msg) == JV_KIND_STRING ? jv_string_value(msg) : "?";
        /* libjq appends the line itself as "(while parsing '...')": drop it,
         * since it may hold a carriage return and the message is one line. */
        const char *cut = strstr(m, " (while parsing '");
        char why[200];
        snprintf(why, sizeof why, "%.*s", cut ? (int)(cut - m) : (int)strlen(m), m);
        jv_free(msg);
        gk_die("%s: line %llu: expected a JSON object, found invalid JSON (%s)", name,
               (unsigned long long)cp->line, why);
    }
    if (jv_get_kind(v) != JV_KIND_OBJECT) {
        const char *kind = jv_kind_name(jv_get_kind(v)); /* a static string */
        jv_free(v);
        gk_die("%s: line %llu: expected a JSON object, found a value of type %s", name,
               (unsigned long long)cp->line, kind);
    }
    jv f = jv_object_get(v, jv_string(cp->o.jsonl));
    if (jv_get_kind(f) != JV_KIND_STRING) {
        const char *found = jv_is_valid(f) ? jv_kind_name(jv_get_kind(f)) : "no such field";
        jv_free(f);
        gk_die("%s: line %llu: field \"%s\": expected a string, found %s", name,
               (unsigned long long)cp->line, cp->o.jsonl, found);
    }
    add_start(cp, cp->out_len);
    out_append(cp, jv_string_value(f), (size_t)jv_string_length_bytes(jv_copy(f)));
    jv_free(f);
}

static int next_jsonl(gk_corpus *cp, gk_chunk *c)
{
    cp->out_len = 0;
    cp->nstarts = 0;
    while (cp->out_len < cp->o.chunk) {
        if (!open_input(cp))
            break;
        fill(cp, cp->len + cp->o.chunk);
        size_t pos = 0;
        const uint8_t *nl;
        while (cp->out_len < cp->o.chunk && (nl = memchr(cp->buf + pos, '\n', cp->len - pos))) {
            size_t e = (size_t)(nl - cp->buf);
            if (e > pos)
                jsonl_line(cp, cp->buf + pos, e - pos);
            pos = e + 1;
            cp->line++;
        }
        if (cp->in_eof && pos < cp->len && !memchr(cp->buf + pos, '\n', cp->len - pos)) {
            jsonl_line(cp, cp->buf + pos, cp->len - pos); /* last line, no newline */
            pos = cp->len;
        }
        drop_front(cp, pos);
        if (cp->in_eof && cp->len == 0) {
            gk_in_close(cp->in);
            cp->in = NULL;
        }
    }
    c->bytes = cp->out;
    c->len = cp->out_len;
    c->starts = cp->starts;
    c->nstarts = cp->nstarts;
    return cp->nstarts > 0;
}

int gk_corpus_next(gk_corpus *cp, gk_chunk *c)
{
    return cp->o.jsonl ? next_jsonl(cp, c) : next_plain(cp, c);
}

void gk_corpus_close(gk_corpus *cp)
{
    if (cp->in)
        gk_in_close(cp->in);
    free(cp->buf);
    free(cp->out);
    free(cp->starts);
    free(cp);
}

static const char *const rules[GK_DOC_COUNT] = {"blank", "line", "nul", "file"};

const char *gk_doc_end_name(int rule) { return rule >= 0 && rule < GK_DOC_COUNT ? rules[rule] : "?"; }

int gk_doc_end_parse(const char *name)
{
    for (int r = 0; r < GK_DOC_COUNT; r++)
        if (strcmp(name, rules[r]) == 0)
            return r;
    return -1;
}

void gk_chunk_split(const gk_chunk *c, int pretok, int n, size_t *bounds)
{
    bounds[0] = 0;
    size_t d = 0; /* index into starts */
    for (int k = 1; k < n; k++) {
        size_t target = c->len / (size_t)n * (size_t)k;
        if (target < bounds[k - 1])
            target = bounds[k - 1];
        while (d < c->nstarts && c->starts[d] < target)
            d++;
        size_t at_doc = d < c->nstarts ? c->starts[d] : c->len;
        size_t at_cut = gk_pretok_safe_cut(pretok, c->bytes, at_doc, target);
        bounds[k] = at_cut < at_doc ? at_cut : at_doc;
    }
    bounds[n] = c->len;
}

typedef struct {
    gk_part part;
    void (*fn)(const gk_part *);
    pthread_t th;
} runner;

static void *run_part(void *arg)
{
    runner *r = arg;
    r->fn(&r->part);
    return NULL;
}

void gk_chunk_run(const gk_chunk *c, int pretok, int n, void (*fn)(const gk_part *),
                  void *args, size_t stride)
{
    size_t *bounds = gk_malloc(((size_t)n + 1) * sizeof *bounds);
    runner *r = gk_calloc((size_t)n, sizeof *r);
    gk_chunk_split(c, pretok, n, bounds);
    for (int k = 0; k < n; k++) {
        r[k].part = (gk_part){c, k, n, bounds[k], bounds[k + 1], (char *)args + (size_t)k * stride};
        r[k].fn = fn;
        if (k && pthread_create(&r[k].th, NULL, run_part, &r[k]) != 0)
            gk_die("cannot start worker thread %d of %d (try --threads 1)", k + 1, n);
    }
    run_part(&r[0]);
    for (int k = 1; k < n; k++)
        pthread_join(r[k].th, NULL);
    free(r);
    free(bounds);
}
