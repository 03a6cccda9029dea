/* safetensors_fuzz: the safetensors reader, gk_st_load, under every
 * checkpoint and .qst reader. Each input is written to a file and loaded;
 * the golfkit.xxh64 checksum is optional in the format (files written by
 * Python have none), so mutations reach the JSON header and the tensor table
 * without help. A file that loads must keep the reader's promises: tensors
 * in strict name order, each findable by its name, its bytes within the data
 * buffer and its byte size its shape times its dtype; metadata in strict key
 * order, each key found again; and every F32 tensor read back through
 * gk_st_read_f32 (which refuses NaN and infinity). */
#include "fuzz.h"
#include "safetensors.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static void st_free(void *st) { gk_st_free(st); }

static void check(const gk_st *st)
{
    const gk_st_tensor *prev = NULL;
    for (size_t i = 0; i < gk_st_count(st); i++) {
        const gk_st_tensor *t = gk_st_at(st, i);
        if (prev && strcmp(prev->name, t->name) >= 0)
            fuzz_fail("tensor %zu: expected names in strict order, found \"%s\" after \"%s\"", i,
                      t->name, prev->name);
        if (gk_st_find(st, t->name) != t)
            fuzz_fail("tensor \"%s\": expected gk_st_find to give it back", t->name);
        uint64_t nelem = 1;
        for (int d = 0; d < t->ndim; d++)
            nelem *= t->shape[d];
        if (nelem != t->nelem || t->nbytes != nelem * gk_st_dtype_size(t->dtype) ||
            t->offset > gk_st_data_size(st) || t->nbytes > gk_st_data_size(st) - t->offset)
            fuzz_fail("tensor \"%s\": expected its bytes within the data buffer, found "
                      "offset %llu, %llu bytes", t->name, (unsigned long long)t->offset,
                      (unsigned long long)t->nbytes);
        prev = t;
    }
    const char *last = NULL;
    for (size_t i = 0; i < gk_st_meta_count(st); i++) {
        const char *k, *v;
        gk_st_meta_at(st, i, &k, &v);
        if ((last && strcmp(last, k) >= 0) || gk_st_meta(st, k) != v)
            fuzz_fail("metadata %zu: expected key \"%s\" in strict order and found again", i, k);
        last = k;
    }
}

static void read_f32(const gk_st *st)
{
    for (size_t i = 0; i < gk_st_count(st); i++) {
        const gk_st_tensor *t = gk_st_at(st, i);
        if (t->dtype != GK_ST_F32)
            continue;
        float *dst = malloc(t->nbytes + 1);
        gk_cleanup_push(free, dst);
        gk_st_read_f32(st, t->name, t->ndim, t->shape, dst);
        gk_cleanup_pop(dst);
        free(dst);
    }
}

static void load(void *arg)
{
    const fuzz_input *in = arg;
    gk_st *st = gk_st_load(fuzz_file(in->data, in->size));
    gk_cleanup_push(st_free, st);
    check(st);
    read_f32(st);
    gk_cleanup_pop(st);
    gk_st_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    fuzz_try(load, &in);
    return 0;
}
