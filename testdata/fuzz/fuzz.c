/* fuzz: the die hook, the input file and the property check shared by the
 * harnesses; fuzz.h has the contract. */
#define _GNU_SOURCE
#include "fuzz.h"
#include "util.h"

#include <jv.h>
#include <sanitizer/lsan_interface.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static jmp_buf *landing;
static int status;
/* While a reader runs, stderr is a memory stream, and this is the real one. */
static FILE *real_stderr;

static _Noreturn void back(int code)
{
    status = code;
    longjmp(*landing, 1);
}

/* What a reader said on stderr (SAID [LEN]): one line "fuzz: ..." when it
 * died with exit status 1 (README: a one-line error), nothing otherwise. */
static void check_said(const char *said, size_t len, int died)
{
    if (!died && len)
        fuzz_fail("expected a reader that returned to print nothing, found \"%s\"", said);
    if (died && (status != 1 || len < 7 || strncmp(said, "fuzz: ", 6) != 0 ||
                 strcspn(said, "\r\n") != len - 1 || said[len - 1] != '\n'))
        fuzz_fail("expected exit status 1 and a one-line error, found status %d and \"%s\"",
                  status, said);
}

/* FN(ARG) under the hook: 1 when it died. */
static int run(void (*fn)(void *), void *arg)
{
    jmp_buf here;
    landing = &here;
    if (setjmp(here))
        return 1;
    fn(arg);
    return 0;
}

int fuzz_try(void (*fn)(void *), void *arg)
{
    static char *said;
    static size_t len;
    if (landing)
        fuzz_fail("fuzz_try: expected one at a time, found a nested call");
    gk_set_prog("fuzz");
    gk_set_die_hook(back);
    real_stderr = stderr;
    if (!(stderr = open_memstream(&said, &len))) {
        stderr = real_stderr;
        fuzz_fail("open_memstream: expected a stream, found an error");
    }
    int died = run(fn, arg);
    landing = NULL;
    fclose(stderr);
    stderr = real_stderr;
    real_stderr = NULL;
    fputs(said, stderr);
    check_said(said, len, died);
    free(said);
    return died;
}

const char *fuzz_file(const void *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", 0);
        if (fd < 0)
            fuzz_fail("memfd_create: expected a memory file, found an error");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        fuzz_fail("%s: expected to write %zu bytes, found an error", path, size);
    return path;
}

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    if (real_stderr)
        stderr = real_stderr;
    va_start(ap, fmt);
    fputs("fuzz: property broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* libjq 1.6 (Debian 12's) leaks one string when a JSON string follows a
 * complete value without a separator ('["a" "b"]': value() in jv_parse.c
 * returns "Expected separator between values" without freeing the new
 * string; upstream jq frees it now). The harnesses are linked with
 * --wrap=jv_parse_sized,--wrap=jv_parse (Makefile), so every JSON text the
 * readers parse comes here: it is parsed once with the leak checker off,
 * and only when that parse ends in that message is its result returned (its
 * lost string then counts as no leak); any other text is parsed again with
 * the checker on, so the readers' own handling of what they parse is still
 * checked for leaks. */
jv __real_jv_parse_sized(const char *text, int len);
jv __wrap_jv_parse_sized(const char *text, int len);
jv __wrap_jv_parse(const char *text);

jv __wrap_jv_parse_sized(const char *text, int len)
{
    __lsan_disable();
    jv v = __real_jv_parse_sized(text, len);
    __lsan_enable();
    if (!jv_is_valid(v)) {
        jv msg = jv_invalid_get_msg(jv_copy(v));
        int lost = jv_get_kind(msg) == JV_KIND_STRING &&
                   strstr(jv_string_value(msg), "Expected separator between values");
        jv_free(msg);
        if (lost)
            return v;
    }
    jv_free(v);
    return __real_jv_parse_sized(text, len);
}

jv __wrap_jv_parse(const char *text) { return __wrap_jv_parse_sized(text, (int)strlen(text)); }

void fuzz_raw_and_fixed(const uint8_t *data, size_t size, void (*fix)(uint8_t *, size_t),
                        void (*read)(void *))
{
    fuzz_input raw = {data, size};
    fuzz_try(read, &raw);
    uint8_t *fixed = malloc(size + 1);
    memcpy(fixed, data, size);
    fix(fixed, size);
    if (memcmp(fixed, data, size) != 0) {
        fuzz_input in = {fixed, size};
        fuzz_try(read, &in);
    }
    free(fixed);
}
