#!/bin/sh
# timed: run a command and write its wall time in seconds to a file.
# usage: timed.sh SECS_FILE COMMAND...   (exits with the command's status)
out=$1; shift
t0=$(date +%s.%N)
"$@" || exit $?
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' > "$out"
