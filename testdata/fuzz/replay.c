/* replay: a main for the harnesses without libFuzzer. It runs
 * LLVMFuzzerTestOneInput once on the bytes of every file named on the command
 * line, as libFuzzer does when given files, so that `make test` can replay the
 * seed corpora (and any crashing input found since) through the gcc sanitizer
 * build of each harness. A sanitizer report or a broken property ends the
 * process with an error status; a file that cannot be read is exit 2. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        if (!fp) {
            perror(argv[i]);
            return 2;
        }
        size_t cap = 1 << 16, n = 0, k;
        unsigned char *buf = malloc(cap);
        while (buf && (k = fread(buf + n, 1, cap - n, fp)) > 0)
            if ((n += k) == cap)
                buf = realloc(buf, cap *= 2);
        if (!buf || ferror(fp)) {
            fprintf(stderr, "%s: cannot read\n", argv[i]);
            return 2;
        }
        fclose(fp);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
    }
    return 0;
}
