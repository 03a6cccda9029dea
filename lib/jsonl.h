/* jsonl: results as JSON lines, built with libjq's jv.
 *
 * Every tool reports results as one JSON object per line on stdout (or a --log
 * file) so that jq can read them. gk_emit() prints OBJ compactly with a newline,
 * flushes, and frees OBJ. Keys keep their insertion order. */
#ifndef GK_JSONL_H
#define GK_JSONL_H

#include <jv.h>
#include <stdio.h>

void gk_emit(FILE *fp, jv obj);

#endif
