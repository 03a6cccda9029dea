/* io: checked input and atomic output.
 *
 * Output: gk_out_open(PATH) writes to PATH.tmp; gk_out_commit() flushes, fsyncs,
 * renames it over PATH and fsyncs the directory, so PATH is either the old file
 * or the whole new one. Until then the temporary is on a list that gk_die()
 * unlinks, so a failed run leaves nothing behind. Several outputs that must
 * appear together (a set of shards) are committed one after the other only once
 * all were written. PATH "-" means standard output, and an existing PATH that
 * is not a regular file (/dev/null, a FIFO) is written in place; neither can be
 * atomic. A write that fails (a full disk, a file size limit) dies naming PATH,
 * the offset and the error, and saying that PATH is left as it was: the
 * temporary is removed and PATH was never touched.
 *
 * Input: gk_in reads a file or standard input ("-") sequentially and keeps the
 * byte offset, so format readers can name the offset in their errors. Every
 * read is checked; a short read is reported as "expected N bytes of WHAT". */
#ifndef GK_IO_H
#define GK_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct gk_out gk_out;

gk_out *gk_out_open(const char *path);
void gk_out_write(gk_out *o, const void *p, size_t n);
/* Bytes written so far. */
uint64_t gk_out_size(const gk_out *o);
const char *gk_out_path(const gk_out *o);
/* Flush, fsync and close the temporary now, keeping it pending: for callers
 * that write many outputs before committing any (no descriptor stays open). */
void gk_out_close(gk_out *o);
/* Make the output visible under its final name and free it. */
void gk_out_commit(gk_out *o);
/* Remove the temporary and free it (for a caller that decides to drop it). */
void gk_out_abort(gk_out *o);
/* Remove every temporary not yet committed, and every directory made by
 * gk_out_mkdir that is still empty; gk_die() calls this. */
void gk_out_abort_all(void);
/* Make DIR, a directory for outputs (FOR says for what, in messages), unless
 * it is one already; dies when it cannot be made or is another kind of file.
 * A directory this call created is removed again by gk_die() if it is still
 * empty, so a run that fails leaves no empty directory behind either. */
void gk_out_mkdir(const char *dir, const char *what);

typedef struct gk_in gk_in;

gk_in *gk_in_open(const char *path);
const char *gk_in_path(const gk_in *in);
uint64_t gk_in_offset(const gk_in *in);
/* Size of the file, or -1 for a pipe or terminal. */
int64_t gk_in_size(const gk_in *in);
/* Read up to n bytes; returns the count, 0 only at end of input. */
size_t gk_in_read(gk_in *in, void *p, size_t n);
/* Read exactly n bytes or die naming WHAT and the offset. */
void gk_in_read_exact(gk_in *in, void *p, size_t n, const char *what);
void gk_in_close(gk_in *in);

/* Read a whole file ("-" for stdin) into memory; *len gets its size. The
 * buffer has one extra NUL byte after the data. */
unsigned char *gk_read_file(const char *path, size_t *len);

#endif
