#!/bin/sh
# fuzz_replay_test: every file of every fuzzing corpus, testdata/fuzz/NAME/
# (the seeds, and any input a campaign found, kept as a regression), through
# the gcc sanitizer build of its harness, build/asan/fuzz/NAME
# (testdata/fuzz/replay.c around testdata/fuzz/NAME_fuzz.c), as TAP: one test
# a harness. Most files are refused by the reader (the truncations); that is
# the expected outcome. What fails a test: a sanitizer report (ASan, UBSan,
# and a leak: make test sets detect_leaks=1), a property the harness checks
# (an abort), or a file the driver cannot read; the report's last lines are
# shown as TAP comments.
#
# Needs $GK_BIN (build/asan/bin; the harnesses sit in ../fuzz); run by `make
# test` under prove.
set -u
. "$(dirname "$0")/tap.sh"
fuzz=$bin/../fuzz

# replay DESC EXPECT HARNESS FILE...: ok when HARNESS on the FILEs exits 0
# (EXPECT ok) or not (EXPECT fail).
replay() {
    desc=$1 expect=$2 h=$3
    shift 3
    n=$((n + 1))
    "$fuzz/$h" "$@" > "$tmp/log" 2>&1
    s=$?
    if { [ "$expect" = ok ] && [ $s = 0 ]; } || { [ "$expect" = fail ] && [ $s != 0 ]; }; then
        echo "ok $n - $desc"
    else
        echo "not ok $n - $desc (exit $s)"
        tail -n 20 "$tmp/log" | sed 's/^/#   /'
        failed=$((failed + 1))
    fi
}

for src in "$top"/testdata/fuzz/*_fuzz.c; do
    h=$(basename "$src" _fuzz.c)
    set -- "$top/testdata/fuzz/$h"/*
    replay "$h: the $# files of testdata/fuzz/$h/ replay clean" ok "$h" "$@"
done
replay "the replay driver fails on a file it cannot read" fail tok "$tmp/no-such-file"
tap_end
