#!/bin/sh
# fuzz-all: run every libFuzzer harness (build/fuzz/bin/NAME, from `make
# fuzz-build`; one per testdata/fuzz/NAME_fuzz.c) for SECONDS, JOBS at a time
# (default: all at once), each on a writable copy of its seed corpus, then
# print one line a harness. `make fuzz FUZZ_SECONDS=N` calls it.
#
#   sh pipelines/fuzz-all.sh SECONDS [JOBS]
#
# Each harness works in build/fuzz/run/NAME/: corpus/ (the seeds, then the
# inputs libFuzzer added; kept, so a second run goes on where the first
# stopped), crashes/ (libFuzzer's crash-, leak-, timeout- and oom- files),
# log, and runs (one line a run: seconds, inputs run). The table gives this
# run's seconds, inputs run and rate, the coverage of the last status line
# (cov: edges, ft: features), the corpus size, the seconds of all runs so far,
# and "ok" or FOUND with the file to replay (build/asan/fuzz/NAME FILE, or
# the libFuzzer binary on it). A harness stops at its first finding. Exit 1
# when any harness found something or failed to run.
#
# The binaries are built here (clang 14, libFuzzer, ASan, UBSan) and can be
# run elsewhere; they need only shared libraries (no RUNPATH but the system's
# openblas-openmp directory): libc, libm, libgcc_s and libstdc++ everywhere;
# libjq and libonig (all but physparse, tok, tstream), libxxhash (all but
# config, jsonl, physparse), libzstd and liblzma (pack), and libopenblas with
# libgfortran, libgomp and libquadmath (ckpt, qst, pack), found through
# LD_LIBRARY_PATH where the system lacks them. llvm-symbolizer on PATH names
# the source lines in a report; without it the crash file still replays here.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = --one ]; then
    name=$2 secs=$3
    dir=$top/build/fuzz/run/$name
    mkdir -p "$dir/corpus" "$dir/crashes"
    cp "$top/testdata/fuzz/$name"/* "$dir/corpus/"
    touch "$dir/started"
    start=$(date +%s)
    "$top/build/fuzz/bin/$name" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
        -close_fd_mask=3 -print_final_stats=1 -artifact_prefix="$dir/crashes/" \
        "$dir/corpus" > "$dir/log" 2>&1
    echo $? > "$dir/status"
    runs=$(grep -a '^stat::number_of_executed_units:' "$dir/log" | sed 's/.*: *//')
    echo "$(($(date +%s) - start)) ${runs:-0}" >> "$dir/runs"
    exit 0
fi

secs=${1:?usage: fuzz-all.sh SECONDS [JOBS]}
names=$(cd "$top/testdata/fuzz" && ls *_fuzz.c | sed 's/_fuzz\.c$//')
for n in $names; do
    if [ ! -x "$top/build/fuzz/bin/$n" ]; then
        echo "fuzz-all: build/fuzz/bin/$n: expected a harness binary, found none (make fuzz-build)" >&2
        exit 1
    fi
    rm -f "$top/build/fuzz/run/$n/status"
done
jobs=${2:-$(echo "$names" | wc -w)}
echo "fuzz-all: $(echo "$names" | wc -w) harnesses, $secs s each, $jobs at a time" >&2
echo "$names" | xargs -P "$jobs" -I{} sh "$0" --one {} "$secs"

# field NAME LINE: the number after "NAME: " in a libFuzzer status line.
field() { echo "$2" | sed -n "s/.* $1: *\([0-9]*\).*/\1/p"; }

printf '%-12s %7s %10s %8s %6s %7s %7s %8s  %s\n' harness seconds runs execs/s cov ft corpus total_s result
found=0
for n in $names; do
    dir=$top/build/fuzz/run/$n
    last=$(grep -a 'cov: ' "$dir/log" 2>/dev/null | tail -n 1)
    rate=$(grep -a '^stat::average_exec_per_sec:' "$dir/log" 2>/dev/null | sed 's/.*: *//')
    set -- $(tail -n 1 "$dir/runs" 2>/dev/null) '?' '?'
    total=$(awk '{s += $1} END {print s + 0}' "$dir/runs" 2>/dev/null)
    crash=$(find "$dir/crashes" -type f -newer "$dir/started" | head -n 1)
    status=$(cat "$dir/status" 2>/dev/null || echo none)
    if [ -n "$crash" ]; then
        result="FOUND ${crash#"$top"/}"
        found=1
    elif [ "$status" != 0 ]; then
        result="FAILED (exit $status; see build/fuzz/run/$n/log)"
        found=1
    else
        result=ok
    fi
    printf '%-12s %7s %10s %8s %6s %7s %7s %8s  %s\n' "$n" "$1" "$2" "${rate:-?}" \
        "$(field cov "$last")" "$(field ft "$last")" "$(ls "$dir/corpus" | wc -l)" "$total" "$result"
done
exit $found
