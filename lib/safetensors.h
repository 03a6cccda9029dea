/* safetensors: reader and writer of the safetensors format, which golfkit uses
 * for training checkpoints (moe-train, moe-avg) and for quantized models
 * (.qst), so that the Python `safetensors` library loads what we write and we
 * load what it writes. man5/safetensors.5 is the full description.
 *
 *   bytes 0..7    N, the header length, uint64 little endian
 *   bytes 8..8+N  a UTF-8 JSON object, padded with spaces:
 *                 {"__metadata__": {"key": "value", ...},
 *                  "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...}
 *   then          the data buffer; a tensor's bytes are [b, e) within it
 *
 * The format is not ours, so it has no magic or version of its own; our
 * integrity check rides in the metadata: the writer always sets
 * "golfkit.xxh64" to the xxh64 (seed 0, 16 lowercase hex digits) of the whole
 * data buffer, and the reader verifies it whenever it is present. Files without
 * it (written by Python) are accepted, after every structural check below.
 *
 * Writing is deterministic: the same tensors and metadata give the same bytes
 * whatever order they were added in. Header entries are sorted by name
 * (metadata keys too, "__metadata__" first); the data buffer holds the tensors
 * by element size, largest first, then by name, with no gaps (the format
 * forbids them). With the header padded to a multiple of 8, as the reference
 * writer does, the buffer starts 8-aligned in the file and every tensor starts
 * at a multiple of its element size.
 *
 * Every defect in a file dies through gk_die with one line naming the file and
 * the offset or the field: "FILE: offset N: expected X, found Y" or
 * "FILE: tensor "NAME": field shape: expected X, found Y". */
#ifndef GK_SAFETENSORS_H
#define GK_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* The element types we read and write (the reference's, but for the sub-byte
 * and complex ones). In order of the enum: name, size in bytes. */
typedef enum {
    GK_ST_BOOL, GK_ST_U8, GK_ST_I8, GK_ST_F8_E5M2, GK_ST_F8_E4M3, /* 1 byte */
    GK_ST_I16, GK_ST_U16, GK_ST_F16, GK_ST_BF16,                    /* 2 bytes */
    GK_ST_I32, GK_ST_U32, GK_ST_F32,                                /* 4 bytes */
    GK_ST_I64, GK_ST_U64, GK_ST_F64,                                /* 8 bytes */
    GK_ST_NDTYPE
} gk_st_dtype;

/* "F32" for GK_ST_F32 and so on; the element size in bytes. */
const char *gk_st_dtype_name(gk_st_dtype d);
size_t gk_st_dtype_size(gk_st_dtype d);
/* The dtype called NAME, or -1 when there is none. */
int gk_st_dtype_parse(const char *name);

/* Largest header a reader accepts, as the reference reader's limit. */
#define GK_ST_MAX_HEADER 100000000u
/* Metadata key of our checksum of the data buffer. */
#define GK_ST_XXH64_KEY "golfkit.xxh64"

/* ---- reading ---- */

typedef struct {
    const char *name;           /* UTF-8, no NUL inside */
    gk_st_dtype dtype;
    int ndim;                   /* 0 for a scalar */
    const uint64_t *shape;      /* ndim dimensions, each at most 2^53 */
    uint64_t nelem;             /* product of shape; 1 for a scalar */
    uint64_t nbytes;            /* nelem * element size */
    uint64_t offset;            /* begin, within the data buffer */
    /* The little-endian element bytes as stored, inside the loaded file. Not
     * necessarily aligned for the element type (files from other writers):
     * copy, or use gk_st_read_f32. */
    const unsigned char *data;
} gk_st_tensor;

typedef struct gk_st gk_st;

/* Read the whole file PATH ("-": stdin) into memory and verify it: header
 * length within the file and GK_ST_MAX_HEADER; a UTF-8 JSON object starting
 * with '{'; each tensor with a known dtype, a shape of integers in 0..2^53
 * whose byte size (overflow-checked) is end - begin, offsets within the data
 * buffer; the tensors, in offset order, cover the buffer exactly, without
 * overlap or gap (an empty tensor takes no bytes but must sit where one tensor
 * ends and the next begins); "__metadata__", when present (null counts as
 * absent), an object of strings; golfkit.xxh64, when present, equal to the
 * data's xxh64; no NUL inside names, keys or values. Unknown
 * fields in a tensor entry are ignored, as the reference reader does. Dies on
 * the first defect; frees everything it allocated before dying. */
gk_st *gk_st_load(const char *path);
/* The same checks on N bytes at P (a file held in memory, e.g. inside a
 * .pack), copied; NAME stands for the path in messages and gk_st_path. */
gk_st *gk_st_load_mem(const unsigned char *p, size_t n, const char *name);
void gk_st_free(gk_st *st);

/* The path as given to gk_st_load ("stdin" for "-"). */
const char *gk_st_path(const gk_st *st);
/* 1 when golfkit.xxh64 was present (and so verified), 0 when absent. */
int gk_st_checksummed(const gk_st *st);
/* The data buffer: its size, and its offset in the file (8 + N). */
uint64_t gk_st_data_size(const gk_st *st);
uint64_t gk_st_data_offset(const gk_st *st);

/* Tensors in name order (strcmp on the UTF-8 bytes): index 0..count-1. */
size_t gk_st_count(const gk_st *st);
const gk_st_tensor *gk_st_at(const gk_st *st, size_t i);
/* The tensor called NAME, or NULL. */
const gk_st_tensor *gk_st_find(const gk_st *st, const char *name);
/* The tensor called NAME with dtype DTYPE and shape SHAPE[0..NDIM), or die:
 * "FILE: tensor "w": field shape: expected [4, 8], found [8, 4]" (likewise a
 * missing tensor or another dtype). */
const gk_st_tensor *gk_st_expect(const gk_st *st, const char *name, gk_st_dtype dtype,
                                 int ndim, const uint64_t *shape);
/* gk_st_expect(..., GK_ST_F32, ...), then copy its nelem floats to DST (any
 * alignment, any host byte order). A NaN or an infinity dies, naming the
 * offset and the element: golfkit's F32 tensors (weights, optimizer state,
 * passthrough tensors) are finite, and one that is not would poison every
 * result computed from it without a word. */
void gk_st_read_f32(const gk_st *st, const char *name, int ndim, const uint64_t *shape,
                    float *dst);

/* Metadata in key order: index 0..meta_count-1, golfkit.xxh64 included. */
size_t gk_st_meta_count(const gk_st *st);
void gk_st_meta_at(const gk_st *st, size_t i, const char **key, const char **value);
/* The value of KEY, or NULL when absent. */
const char *gk_st_meta(const gk_st *st, const char *key);

/* ---- writing ---- */

typedef struct gk_st_writer gk_st_writer;

gk_st_writer *gk_st_writer_new(void);
/* Add tensor NAME (UTF-8, not "__metadata__") of DTYPE and shape
 * SHAPE[0..NDIM) (NDIM 0: a scalar; each dimension at most 2^53). DATA holds
 * its nelem * element size bytes, little endian, and is referenced, not
 * copied: it must stay valid and unchanged until the last gk_st_write of this
 * writer returns (a checkpoint then needs no second copy of the weights). DATA
 * may be NULL for an empty tensor. Name and shape are copied. A name added
 * twice dies at gk_st_write. */
void gk_st_add(gk_st_writer *w, const char *name, gk_st_dtype dtype, int ndim,
               const uint64_t *shape, const void *data);
/* Set metadata KEY to VALUE (both UTF-8, copied); setting a key again replaces
 * its value. golfkit.xxh64 is always computed by gk_st_write, whatever was set. */
void gk_st_set_meta(gk_st_writer *w, const char *key, const char *value);
/* Write the file atomically (PATH.tmp, fsync, rename; "-": stdout). The
 * writer stays usable: writing again gives the same bytes. */
void gk_st_write(gk_st_writer *w, const char *path);
void gk_st_writer_free(gk_st_writer *w);

#endif
