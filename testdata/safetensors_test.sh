#!/bin/sh
# safetensors_test: golfkit's safetensors reader and writer against the Python
# safetensors library, both ways, as TAP. The C side is the unit test binary in
# its interop modes (build/asan/test/safetensors --write, --write-all, --read;
# see lib/safetensors_test.c); the Python side is testdata/st_interop.py, which
# loads our files with safetensors.numpy.load_file, safe_open(...).metadata()
# and deserialize, checks golfkit.xxh64 with the xxhash module, and writes
# files with save_file and serialize_file for our reader. Without $GK_VENV only
# the C half runs and the Python checks are reported as skipped.
#
# Needs $GK_BIN (build/asan/bin: the unit tests sit in ../test), jq; run by
# `make test` under prove.
set -u
: "${GK_BIN:?set GK_BIN to the directory of the tools}"
ST=$GK_BIN/../test/safetensors
HERE=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

n=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi
}
skip() { n=$((n + 1)); echo "ok $n # skip $1"; }
# diag FILE: show FILE as TAP comments.
diag() { sed 's/^/# /' "$1"; }

if [ ! -x "$ST" ]; then
    echo "Bail out! $ST is missing: make build/asan/test/safetensors"
    exit 1
fi

# --- the C half ----------------------------------------------------------------
"$ST" --write "$T/c.st" && "$ST" --write-all "$T/c-all.st"
ok $? "C writes the fixture (numpy dtypes; all dtypes)"
"$ST" --read "$T/c-all.st" >"$T/c.json" &&
    jq -e '.checksum == "ok" and (.tensors | length) == 16 and
           (.tensors | map(.name) | . == sort) and .metadata.step == "100"' "$T/c.json" >/dev/null
ok $? "C reads its own file: 16 tensors in name order, metadata, checksum verified"

if [ -x "${GK_VENV:-}/bin/python" ]; then
    PY=$GK_VENV/bin/python
    # --- C -> Python -----------------------------------------------------------
    "$PY" "$HERE/testdata/st_interop.py" check-c "$T/c.st" "$T/c-all.st" >"$T/out" 2>&1
    s=$?
    ok $s "Python safetensors loads ours: names, dtypes, shapes, values, metadata, xxh64"
    [ $s -eq 0 ] || diag "$T/out"

    # --- Python -> C -----------------------------------------------------------
    "$PY" "$HERE/testdata/st_interop.py" write "$T" >"$T/out" 2>&1
    s=$?
    ok $s "Python writes with save_file and serialize_file"
    [ $s -eq 0 ] || diag "$T/out"
    "$ST" --read "$T/py.safetensors" >"$T/py.json" 2>"$T/err" &&
        "$ST" --read "$T/py-raw.safetensors" >"$T/raw.json" 2>>"$T/err"
    s=$?
    ok $s "C reads Python's files (no golfkit checksum: accepted)"
    [ $s -eq 0 ] || diag "$T/err"
    "$PY" "$HERE/testdata/st_interop.py" check-summary "$T/py.json" "$T/raw.json" >"$T/out" 2>&1
    s=$?
    ok $s "C read Python's names, dtypes (BF16, F8 too), shapes, bytes and metadata"
    [ $s -eq 0 ] || diag "$T/out"

    # A damaged Python file: refused in one line, exit 1.
    size=$(wc -c <"$T/py.safetensors")
    head -c $((size - 1)) "$T/py.safetensors" >"$T/cut.safetensors"
    "$ST" --read "$T/cut.safetensors" >/dev/null 2>"$T/err"
    s=$?
    [ $s -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
        grep -q 'cut.safetensors: tensor ".*": field data_offsets: expected offsets within the' "$T/err"
    ok $? "a truncated Python file is refused: exit 1, one line naming the tensor"
    [ $s -eq 1 ] || diag "$T/err"
else
    for what in "C -> Python" "Python writes" "Python -> C" "Python -> C values" "truncated"; do
        skip "GK_VENV not set: $what not checked"
    done
fi

echo "1..$n"
