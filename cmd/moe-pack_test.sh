#!/bin/sh
# moe-pack_test: the moe-pack tool end to end, as TAP. A made-up model (the
# .qst is opaque bytes to moe-pack), the golden tokenizer and a config are
# packed with each codec, verified (JSON read with jq), unpacked and compared
# byte for byte. A flipped byte, a truncated file and an artifact over --limit
# must each give exit 1, one line on stderr, and no output file; bad usage
# exits 2.
#
# Needs $GK_BIN (the tools), jq, cmp, od; run by `make test` under prove.
set -u
: "${GK_BIN:?set GK_BIN to the directory of the tools}"
PACK=$GK_BIN/moe-pack
HERE=$(cd "$(dirname "$0")/.." && pwd)
TOK=$HERE/testdata/golden/golden.tok
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

n=0
failed=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
# fails CODE PATTERN CMD...: exit CODE and a stderr matching PATTERN, in one line
# for exit 1 (usage errors add a line pointing to --help).
fails() {
    code=$1 pat=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    lines=$(wc -l <"$T/err")
    if [ "$rc" -eq "$code" ] && { [ "$code" -eq 2 ] || [ "$lines" -eq 1 ]; } && grep -q -- "$pat" "$T/err"; then return 0; fi
    echo "# rc=$rc, $lines stderr lines:"
    sed 's/^/# /' "$T/err"
    return 1
}

# A model of 64 KiB: half random, half repeating, like packed weights and scales.
head -c 32768 /dev/urandom >"$T/m.qst"
yes 'scale 0.0125 row' | head -c 32768 >>"$T/m.qst"
printf '{"model": {"vocab": 1024, "dim": 64}}\n' >"$T/c.json"

for codec in zstd xz; do
    "$PACK" -o "$T/$codec.pack" --codec "$codec" --model "$T/m.qst" --tokenizer "$TOK" \
        --config "$T/c.json" >"$T/$codec.json"
    ok $? "$codec: pack"
    jq -e --argjson b "$(wc -c <"$T/$codec.pack")" --arg c "$codec" \
        '.bytes == $b and .codec == $c and (.parts | map(.name)) ==
         ["config.json", "tokenizer.tok", "model.qst"] and .parts[2].bytes == 65536
         and .seconds >= 0' "$T/$codec.json" >/dev/null
    ok $? "$codec: pack JSON names the parts, sizes and codec"
    "$PACK" --verify "$T/$codec.pack" >"$T/v.json"
    ok $? "$codec: --verify accepts it"
    jq -e '.ok == true and .limit == 16000000 and (.parts | length) == 3' "$T/v.json" >/dev/null
    ok $? "$codec: --verify JSON"
    "$PACK" --unpack "$T/$codec.pack" -o "$T/u_$codec" >/dev/null &&
        cmp "$T/u_$codec/model.qst" "$T/m.qst" && cmp "$T/u_$codec/tokenizer.tok" "$TOK" &&
        cmp "$T/u_$codec/config.json" "$T/c.json"
    ok $? "$codec: --unpack restores every part byte for byte"
done

"$PACK" -o "$T/nc.pack" --model "$T/m.qst" --tokenizer "$TOK" --level 3 >/dev/null &&
    "$PACK" --verify "$T/nc.pack" | jq -e '.level == 3 and (.parts | length) == 2' >/dev/null &&
    "$PACK" --unpack "$T/nc.pack" -o "$T/nc" >/dev/null && [ ! -e "$T/nc/config.json" ]
ok $? "without --config: two parts, no config.json unpacked"

# --- damage -----------------------------------------------------------------
size=$(wc -c <"$T/zstd.pack")
for pos in 3 20 60 64 $((size / 2)) $((size - 1)); do
    cp "$T/zstd.pack" "$T/bad.pack"
    byte=$(od -An -tu1 -j "$pos" -N1 "$T/bad.pack" | tr -d ' ')
    printf "$(printf '\\%03o' $(((byte + 1) % 256)))" |
        dd of="$T/bad.pack" bs=1 seek="$pos" conv=notrunc 2>/dev/null
    fails 1 "bad.pack: offset [0-9]*: expected" "$PACK" --verify "$T/bad.pack"
    ok $? "a byte changed at offset $pos is refused with one line"
done
mkdir "$T/ud"
fails 1 "expected" "$PACK" --unpack "$T/bad.pack" -o "$T/ud" && [ -z "$(ls -A "$T/ud")" ]
ok $? "--unpack of a damaged pack writes nothing"
head -c $((size - 7)) "$T/zstd.pack" >"$T/cut.pack"
fails 1 "cut.pack: offset 24: expected a compressed size" "$PACK" --verify "$T/cut.pack"
ok $? "a truncated pack is refused"
fails 1 "zstd.pack: expected at most 1000 bytes, found $size (over by $((size - 1000)))" \
    "$PACK" --verify "$T/zstd.pack" --limit 1000
ok $? "over --limit: refused, saying by how much"
"$PACK" --verify "$T/zstd.pack" --limit "$size" >/dev/null
ok $? "exactly at --limit: accepted"
printf 'not json' >"$T/bad.json"
fails 1 "bad.json: expected JSON" "$PACK" -o "$T/o.pack" --model "$T/m.qst" --tokenizer "$TOK" \
    --config "$T/bad.json" && [ ! -e "$T/o.pack" ] && [ ! -e "$T/o.pack.tmp" ]
ok $? "a config that is not JSON: refused, no output left"
fails 1 "missing" "$PACK" -o "$T/o.pack" --model "$T/missing" --tokenizer "$TOK" &&
    [ ! -e "$T/o.pack" ]
ok $? "a missing model: refused, no output left"

# --- usage ------------------------------------------------------------------
fails 2 "" "$PACK" -o "$T/o.pack" --model "$T/m.qst"
ok $? "no --tokenizer: exit 2"
fails 2 "" "$PACK" -o "$T/o.pack" --model "$T/m.qst" --tokenizer "$TOK" --codec lz4
ok $? "unknown codec: exit 2"
fails 2 "" "$PACK" -o "$T/o.pack" --model "$T/m.qst" --tokenizer "$TOK" --codec xz --level 10
ok $? "xz level 10: exit 2"
fails 2 "" "$PACK" --verify "$T/zstd.pack" --unpack "$T/zstd.pack"
ok $? "--verify with --unpack: exit 2"

echo "1..$n"
[ "$failed" -eq 0 ]
