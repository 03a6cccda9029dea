/* jsonl: one compact JSON object per line; see jsonl.h. */
#include "jsonl.h"
#include "util.h"

#include <errno.h>
#include <string.h>

void gk_emit(FILE *fp, jv obj)
{
    jv s = jv_dump_string(obj, 0);
    fputs(jv_string_value(s), fp);
    fputc('\n', fp);
    jv_free(s);
    if (fflush(fp) != 0)
        gk_die("cannot write results: %s", strerror(errno));
}
