/* fuzz: what the libFuzzer harnesses in testdata/fuzz/ share.
 *
 * Each NAME_fuzz.c holds one harness: LLVMFuzzerTestOneInput, feeding one
 * input to one reader of lib/. The Makefile links each twice: with clang's
 * libFuzzer (-fsanitize=fuzzer,address,undefined) as build/fuzz/bin/NAME,
 * which `make fuzz` runs on mutations of the seed corpus testdata/fuzz/NAME/,
 * and with replay.c under gcc's sanitizers as build/asan/fuzz/NAME, which
 * `make test` runs once on every corpus file (testdata/fuzz_replay_test.sh).
 *
 * Readers refuse bad input with gk_die, which exits. fuzz_try runs a reader
 * under gk_set_die_hook instead: a die prints its line, frees what the
 * readers and the harness pushed with gk_cleanup_push, and comes back to
 * fuzz_try by longjmp, so the process goes on to the next input with nothing
 * leaked. A refused input is the expected outcome for most mutations; what
 * counts as a finding is a sanitizer report, a timeout, an out-of-memory, an
 * error message of more than one line, or a broken property that a harness
 * checks with fuzz_fail. */
#ifndef GK_FUZZ_H
#define GK_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry point, defined by each harness. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Call FN(ARG): 0 when it returned, 1 when it died (gk_die or gk_usage).
 * What it prints on stderr is held back and checked, then shown: a die must
 * have exit status 1 and one line, "fuzz: " and the message (README: every
 * tool fails with a one-line error); a return, nothing. */
int fuzz_try(void (*fn)(void *), void *arg);

/* A path naming a regular file that holds DATA [SIZE], for the readers that
 * take a path: one memory file a process (memfd), rewritten by every call. */
const char *fuzz_file(const void *data, size_t size);

/* A property the harness checks does not hold: say which and abort, which
 * both libFuzzer and the replay report as a crash. */
_Noreturn void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* An input and its size, the argument most harnesses pass through fuzz_try. */
typedef struct {
    const uint8_t *data;
    size_t size;
} fuzz_input;

/* Read the input (through fuzz_try(READ, &fuzz_input)) as it is, then, when
 * FIX changes a copy of it (checksums recomputed over the mutated bytes), the
 * fixed copy too: so mutations reach the checks behind the checksums. */
void fuzz_raw_and_fixed(const uint8_t *data, size_t size, void (*fix)(uint8_t *, size_t),
                        void (*read)(void *));

#endif
