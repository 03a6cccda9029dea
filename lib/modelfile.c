/* modelfile: the content sniff and the three readers behind modelfile.h.
 *
 * The sniff reads only the first bytes (the .pack magic, or the safetensors
 * header's golfkit.format) to choose a reader; the chosen reader then
 * verifies the whole file, so a file the sniff misjudges still fails with
 * that reader's precise message (any safetensors file that is not a .qst
 * goes to the checkpoint reader, which names what is missing). */
#include "modelfile.h"

#include "ckpt.h"
#include "io.h"
#include "pack.h"
#include "qst.h"
#include "safetensors.h"
#include "util.h"

#include <jv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* golfkit.format of a .qst (qst.h). */
#define QST_FORMAT "qst 1"

enum { OTHER, SAFETENSORS, PACK };

/* What PATH holds: PACK (its magic), SAFETENSORS with its golfkit.format in FMT
 * as far as the header tells ("" without one), or OTHER. A plausible header
 * length is enough for SAFETENSORS: a checkpoint cut short, or with a broken
 * header, then gets the safetensors reader's message, which says what is
 * wrong, instead of "other bytes". */
static int sniff(const char *path, char *fmt, size_t cap)
{
    fmt[0] = 0;
    gk_in *in = gk_in_open(path);
    unsigned char h[8];
    int64_t size = gk_in_size(in);
    int st = OTHER;
    size_t got = gk_in_read(in, h, 8);
    if (got == 8 && memcmp(h, GK_PACK_MAGIC, 8) == 0) {
        st = PACK;
    } else if (got == 8) {
        uint64_t n = gk_get64(h);
        if (n >= 2 && n <= GK_ST_MAX_HEADER)
            st = SAFETENSORS;
        if (st == SAFETENSORS && (size < 0 || n <= (uint64_t)size - 8)) {
            char *json = gk_malloc(n);
            if (gk_in_read(in, json, n) == n && json[0] == '{') {
                jv hdr = jv_parse_sized(json, (int)n);
                if (jv_get_kind(hdr) == JV_KIND_OBJECT) {
                    jv meta = jv_object_get(hdr, jv_string("__metadata__"));
                    if (jv_get_kind(meta) == JV_KIND_OBJECT) {
                        jv f = jv_object_get(meta, jv_string("golfkit.format"));
                        if (jv_get_kind(f) == JV_KIND_STRING)
                            snprintf(fmt, cap, "%s", jv_string_value(f));
                        jv_free(f);
                    } else {
                        jv_free(meta);
                    }
                } else {
                    jv_free(hdr);
                }
            }
            free(json);
        }
    }
    gk_in_close(in);
    return st;
}

/* The config, layout and dequantized parameters of Q, which is freed. */
static void from_qst(gk_modelfile *m, gk_qst *q)
{
    m->cfg = *gk_qst_config(q);
    gk_layout_init(&m->l, &m->cfg);
    m->params = gk_malloc(m->l.numel * sizeof *m->params);
    gk_qst_dequantize(q, &m->l, m->params);
    gk_qst_free(q);
}

void gk_modelfile_load(gk_modelfile *m, const char *path, const char *tok_path)
{
    memset(m, 0, sizeof *m);
    char fmt[64], name[4200];
    int st = sniff(path, fmt, sizeof fmt);
    if (st == OTHER)
        gk_die("%s: offset 0: expected a moe-train checkpoint, a .qst (safetensors) or a "
               ".pack (magic \"GKPACK\\r\\n\"), found other bytes", path);
    m->kind = st == PACK ? "pack" : strcmp(fmt, QST_FORMAT) == 0 ? "qst" : "checkpoint";
    if (st == PACK) {
        /* gk_pack_open has checked that both parts are there. The parts are
         * named "PACK:PART" in messages. */
        gk_pack *pk = gk_pack_open(path);
        size_t n;
        const unsigned char *part = gk_pack_part(pk, GK_PACK_MODEL, &n);
        snprintf(name, sizeof name, "%s:%s", path, GK_PACK_MODEL);
        from_qst(m, gk_qst_load_mem(part, n, name));
        if (!tok_path) {
            part = gk_pack_part(pk, GK_PACK_TOKENIZER, &n);
            snprintf(m->tok_name, sizeof m->tok_name, "%s:%s", path, GK_PACK_TOKENIZER);
            m->tok = gk_tok_load_mem(part, n, m->tok_name);
        }
        gk_pack_free(pk);
    } else if (strcmp(m->kind, "qst") == 0) {
        from_qst(m, gk_qst_load(path));
    } else {
        /* Any other safetensors file: the checkpoint reader names what is wrong. */
        gk_ckpt *ck = gk_ckpt_open(path);
        m->cfg = *gk_ckpt_config(ck);
        gk_layout_init(&m->l, &m->cfg);
        m->params = gk_malloc(m->l.numel * sizeof *m->params);
        gk_ckpt_read_params(ck, &m->l, m->params);
        gk_ckpt_close(ck);
    }
    if (tok_path) {
        m->tok = gk_tok_load(tok_path);
        snprintf(m->tok_name, sizeof m->tok_name, "%s", tok_path);
    }
    if (m->tok && m->tok->vocab != (uint32_t)m->cfg.model.vocab)
        gk_die("%s: expected vocab %d (the model's model.vocab), found %u", m->tok_name,
               m->cfg.model.vocab, m->tok->vocab);
}

void gk_modelfile_free(gk_modelfile *m)
{
    gk_tok_free(m->tok);
    gk_layout_free(&m->l);
    free(m->params);
    memset(m, 0, sizeof *m);
}
