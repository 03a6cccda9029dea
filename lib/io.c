/* io: atomic outputs through NAME.tmp + fsync + rename, and checked sequential
 * inputs that remember their offset. See io.h for the contract. */
#define _GNU_SOURCE
#include "io.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct gk_out {
    char *path, *tmp;
    FILE *fp;
    uint64_t size;
    gk_out *next; /* list of uncommitted temporaries */
};

static gk_out *open_outs;

/* Directories gk_out_mkdir created, newest first. */
typedef struct made_dir {
    char *path;
    struct made_dir *next;
} made_dir;
static made_dir *made_dirs;

static void unlink_from_list(gk_out *o)
{
    for (gk_out **pp = &open_outs; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            return;
        }
}

static void free_out(gk_out *o)
{
    free(o->path);
    free(o->tmp);
    free(o);
}

gk_out *gk_out_open(const char *path)
{
    gk_out *o = gk_calloc(1, sizeof *o);
    o->path = gk_strdup(path);
    if (strcmp(path, "-") == 0) {
        o->fp = stdout;
        return o;
    }
    /* A device or a FIFO (/dev/null, a named pipe) is written in place: renaming
     * a temporary over it would replace the device with a regular file. */
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (!(o->fp = fopen(path, "wb")))
            gk_die("%s: cannot open for writing: %s", path, strerror(errno));
        return o;
    }
    size_t n = strlen(path) + 5;
    o->tmp = gk_malloc(n);
    snprintf(o->tmp, n, "%s.tmp", path);
    o->fp = fopen(o->tmp, "wb");
    if (!o->fp) {
        int e = errno;
        free_out(o);
        gk_die("%s: cannot create %s.tmp: %s", path, path, strerror(e));
    }
    o->next = open_outs;
    open_outs = o;
    return o;
}

/* Die for a failed write of O: "PATH: WHAT: ERROR", and for an atomic output
 * that PATH is left as it was (gk_die removes the temporary). */
static _Noreturn void write_failed(const gk_out *o, const char *what, int err)
{
    const char *name = strcmp(o->path, "-") == 0 ? "standard output" : o->path;
    gk_die("%s: %s: %s%s%s%s", name, what, strerror(err), o->tmp ? "; " : "",
           o->tmp ? o->path : "", o->tmp ? " is left as it was" : "");
}

void gk_out_write(gk_out *o, const void *p, size_t n)
{
    size_t k = n ? fwrite(p, 1, n, o->fp) : 0;
    if (k != n) {
        char what[64];
        snprintf(what, sizeof what, "write failed at offset %llu",
                 (unsigned long long)(o->size + k));
        write_failed(o, what, errno);
    }
    o->size += n;
}

uint64_t gk_out_size(const gk_out *o) { return o->size; }
const char *gk_out_path(const gk_out *o) { return o->path; }

static void fsync_dir_of(const char *path)
{
    char *copy = gk_strdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd); /* best effort: some filesystems refuse directory fsync */
        close(fd);
    }
    free(copy);
}

void gk_out_close(gk_out *o)
{
    if (!o->tmp || !o->fp)
        return;
    if (fflush(o->fp) != 0 || fsync(fileno(o->fp)) != 0) {
        /* stdio held the last bytes back: the failure lies before the end */
        char what[64];
        snprintf(what, sizeof what, "write failed before offset %llu", (unsigned long long)o->size);
        write_failed(o, what, errno);
    }
    int rc = fclose(o->fp);
    o->fp = NULL;
    if (rc != 0)
        write_failed(o, "close failed", errno);
}

void gk_out_commit(gk_out *o)
{
    if (!o->tmp) {
        if (fflush(o->fp) != 0)
            write_failed(o, "write failed", errno);
        if (o->fp != stdout)
            fclose(o->fp);
        free_out(o);
        return;
    }
    gk_out_close(o);
    if (rename(o->tmp, o->path) != 0)
        gk_die("%s: cannot rename to %s: %s", o->tmp, o->path, strerror(errno));
    fsync_dir_of(o->path);
    unlink_from_list(o);
    free_out(o);
}

void gk_out_abort(gk_out *o)
{
    if (!o->tmp && o->fp && o->fp != stdout)
        fclose(o->fp);
    if (o->tmp) {
        if (o->fp)
            fclose(o->fp);
        unlink(o->tmp);
        unlink_from_list(o);
    }
    free_out(o);
}

void gk_out_abort_all(void)
{
    while (open_outs)
        gk_out_abort(open_outs);
    while (made_dirs) {
        made_dir *d = made_dirs;
        rmdir(d->path); /* fails, as it should, unless empty */
        made_dirs = d->next;
        free(d->path);
        free(d);
    }
}

void gk_out_mkdir(const char *dir, const char *what)
{
    struct stat st;
    if (mkdir(dir, 0777) == 0) {
        made_dir *d = gk_malloc(sizeof *d);
        d->path = gk_strdup(dir);
        d->next = made_dirs;
        made_dirs = d;
        return;
    }
    int e = errno;
    if (stat(dir, &st) != 0)
        gk_die("%s: cannot create a directory for %s: %s", dir, what, strerror(e));
    if (!S_ISDIR(st.st_mode))
        gk_die("%s: expected a directory for %s, found another kind of file", dir, what);
}

struct gk_in {
    char *path;
    FILE *fp;
    uint64_t off;
    int64_t size;
};

gk_in *gk_in_open(const char *path)
{
    gk_in *in = gk_calloc(1, sizeof *in);
    in->path = gk_strdup(path);
    in->size = -1;
    if (strcmp(path, "-") == 0) {
        in->fp = stdin;
        free(in->path);
        in->path = gk_strdup("stdin");
    } else {
        in->fp = fopen(path, "rb");
        if (!in->fp) {
            int e = errno;
            gk_die("%s: cannot open: %s", path, strerror(e));
        }
    }
    struct stat st;
    if (fstat(fileno(in->fp), &st) == 0 && S_ISREG(st.st_mode))
        in->size = st.st_size;
    return in;
}

const char *gk_in_path(const gk_in *in) { return in->path; }
uint64_t gk_in_offset(const gk_in *in) { return in->off; }
int64_t gk_in_size(const gk_in *in) { return in->size; }

size_t gk_in_read(gk_in *in, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t k = fread((char *)p + got, 1, n - got, in->fp);
        if (k == 0) {
            if (ferror(in->fp))
                gk_die("%s: read failed at offset %llu: %s", in->path,
                       (unsigned long long)(in->off + got), strerror(errno));
            break;
        }
        got += k;
    }
    in->off += got;
    return got;
}

void gk_in_read_exact(gk_in *in, void *p, size_t n, const char *what)
{
    uint64_t at = in->off;
    size_t got = gk_in_read(in, p, n);
    if (got != n)
        gk_die("%s: offset %llu: expected %zu bytes of %s, found end of input after %zu "
               "(truncated?)", in->path, (unsigned long long)at, n, what, got);
}

void gk_in_close(gk_in *in)
{
    if (in->fp && in->fp != stdin)
        fclose(in->fp);
    free(in->path);
    free(in);
}

unsigned char *gk_read_file(const char *path, size_t *len)
{
    gk_in *in = gk_in_open(path);
    size_t cap = in->size >= 0 ? (size_t)in->size + 1 : 1 << 20, n = 0;
    unsigned char *buf = gk_malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = gk_realloc(buf, cap + 1);
        }
        size_t k = gk_in_read(in, buf + n, cap - n);
        if (k == 0)
            break;
        n += k;
    }
    gk_in_close(in);
    buf[n] = 0;
    *len = n;
    return buf;
}
