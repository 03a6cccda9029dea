#!/bin/sh
# bench-pack (size part): how small moe-pack makes an artifact next to the
# command-line compressors at their strongest settings, run on the same raw
# bytes (the parts concatenated in stored order: config, tokenizer, model).
# DESIGN §7 aims at an artifact within 1% of the best of `zstd -22 --ultra`
# and `xz -9e`. Our bytes include the 64-byte header and the parts table.
#
# Usage: pipelines/bench-pack.sh MODEL.qst [TOKENIZER.tok [CONFIG.json]]
# (tokenizer default: testdata/golden/golden.tok). Tools from $GK_BIN or bin/.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 MODEL.qst [TOKENIZER.tok [CONFIG.json]]" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${GK_BIN:-$HERE/bin}
MODEL=$1
TOK=${2:-$HERE/testdata/golden/golden.tok}
CONFIG=${3:-}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

cfg=
[ -n "$CONFIG" ] && cfg="--config $CONFIG"
# shellcheck disable=SC2086
cat $CONFIG "$TOK" "$MODEL" >"$T/raw"
raw=$(wc -c <"$T/raw")

# row NAME COMMAND...: run COMMAND (it writes $T/out), record bytes and seconds.
row() {
    name=$1
    shift
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$name $(wc -c <"$T/out") $t0 $t1" | awk '{print $1, $2, $4 - $3}' >>"$T/rows"
}
# shellcheck disable=SC2086
row "moe-pack(zstd-22)" "$BIN/moe-pack" -o "$T/out" --model "$MODEL" --tokenizer "$TOK" $cfg
# shellcheck disable=SC2086
row "moe-pack(xz-9e)" "$BIN/moe-pack" -o "$T/out" --codec xz --model "$MODEL" --tokenizer "$TOK" $cfg
row "zstd-22-ultra" sh -c "zstd -q -22 --ultra -c '$T/raw' >'$T/out'"
row "zstd-22-ultra-long" sh -c "zstd -q -22 --ultra --long=30 -c '$T/raw' >'$T/out'"
row "xz-9e" sh -c "xz -9e -c '$T/raw' >'$T/out'"

best=$(grep -v '^moe-pack' "$T/rows" | sort -k2,2n | head -1 | cut -d' ' -f2)
echo "raw payload: $raw bytes ($(basename "$MODEL") + $(basename "$TOK")${CONFIG:+ + $(basename "$CONFIG")})"
printf '%-20s %12s %8s %10s %9s\n' tool bytes ratio vs_best seconds
awk -v raw="$raw" -v best="$best" \
    '{ printf "%-20s %12d %8.4f %10.4f %9.1f\n", $1, $2, $2 / raw, $2 / best, $3 }' "$T/rows"
